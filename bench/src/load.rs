//! The load generator: a keep-alive HTTP/1.1 client that signs every Invoke with SigV4 the
//! way an AWS SDK does, closed-loop (N workers, each waits for its answer) and open-loop (a
//! fixed arrival rate, latency measured from each request's intended start, so a stalled
//! server cannot hide behind coordinated omission) drivers, and HDR histograms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// Credentials for SigV4 (`None` sends unsigned requests, for peers without auth).
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Region in the signing scope.
    pub region: String,
}

/// An Invoke client for one endpoint and function.
#[derive(Clone)]
pub struct Invoker {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: String,
    path: String,
    credentials: Option<Credentials>,
}

/// What one Invoke returned.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `X-Amz-Function-Error` was set.
    pub function_error: bool,
    /// The response body.
    pub body: Bytes,
    /// The `X-Amz-Log-Result` header (base64 log tail), if any.
    pub log_result: Option<String>,
}

impl Invoker {
    /// A client for `POST http://<authority><path>`; `path` is the invocations path, e.g.
    /// `/2015-03-31/functions/NAME/invocations`.
    pub fn new(authority: &str, path: &str, credentials: Option<Credentials>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            client,
            authority: authority.to_string(),
            path: path.to_string(),
            credentials,
        }
    }

    /// The Invoke API path of a function.
    pub fn invocations_path(function: &str) -> String {
        format!("/2015-03-31/functions/{function}/invocations")
    }

    /// Sends one Invoke with `payload` and extra headers (`X-Amz-Invocation-Type`, …).
    pub async fn invoke(&self, payload: Bytes, extra: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_str(&self.authority)?);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in extra {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        if let Some(credentials) = &self.credentials {
            let signed = lambent_api::sigv4::sign(
                &lambent_api::sigv4::SignableRequest {
                    method: "POST",
                    raw_path: &self.path,
                    raw_query: "",
                    headers: &headers,
                    body: &payload,
                },
                &credentials.access_key_id,
                &credentials.secret_access_key,
                &credentials.region,
                "lambda",
                SystemTime::now(),
            );
            for (name, value) in signed {
                headers.insert(
                    http::HeaderName::from_bytes(name.as_bytes())?,
                    HeaderValue::from_str(&value)?,
                );
            }
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}{}", self.authority, self.path))
            .body(Full::new(payload))?;
        *request.headers_mut() = headers;
        let response = self.client.request(request).await.context("invoke")?;
        let status = response.status().as_u16();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let log_result = response
            .headers()
            .get("x-amz-log-result")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            function_error,
            body,
            log_result,
        })
    }
}

/// Latency and throughput of one load run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Requests answered with success.
    pub ok: u64,
    /// Requests that failed (transport, non-2xx, function error).
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Maximum, µs.
    pub max_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
}

/// A latency histogram: 1 µs to 10 min, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn measure(hist: &Histogram<u64>, ok: u64, errors: u64, seconds: f64) -> Measurement {
    Measurement {
        ok,
        errors,
        seconds,
        throughput: ok as f64 / seconds.max(1e-9),
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        mean_us: hist.mean(),
    }
}

/// How long, or how much, a run lasts.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Until this many requests have been sent.
    Requests(u64),
    /// For this long.
    Time(Duration),
}

/// Closed loop: `concurrency` workers each send, wait for the answer, and send again.
pub async fn closed_loop(
    invoker: &Invoker,
    payload: Bytes,
    extra: &'static [(&'static str, &'static str)],
    concurrency: usize,
    budget: Budget,
    accept: fn(&Answer) -> bool,
) -> anyhow::Result<Measurement> {
    let sent = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (invoker, payload, sent) = (invoker.clone(), payload.clone(), sent.clone());
        let mut hist = histogram()?;
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let more = match budget {
                    Budget::Requests(n) => sent.fetch_add(1, Ordering::Relaxed) < n,
                    Budget::Time(d) => begun.elapsed() < d,
                };
                if !more {
                    break;
                }
                let start = Instant::now();
                let result = invoker.invoke(payload.clone(), extra).await;
                let micros = start.elapsed().as_micros() as u64;
                match result {
                    Ok(answer) if accept(&answer) => {
                        ok += 1;
                        let _ = hist.record(micros.max(1));
                    }
                    _ => errors += 1,
                }
            }
            (hist, ok, errors)
        }));
    }
    let mut total = histogram()?;
    let (mut ok, mut errors) = (0, 0);
    for worker in workers {
        let (hist, o, e) = worker.await?;
        total.add(&hist)?;
        ok += o;
        errors += e;
    }
    Ok(measure(&total, ok, errors, begun.elapsed().as_secs_f64()))
}

/// Open loop: requests start at `rate` per second for `duration`, whatever the answers do;
/// each latency counts from the request's scheduled start.
pub async fn open_loop(
    invoker: &Invoker,
    payload: Bytes,
    extra: &'static [(&'static str, &'static str)],
    rate: f64,
    duration: Duration,
    accept: fn(&Answer) -> bool,
) -> anyhow::Result<Measurement> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let begun = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u32;
    loop {
        let scheduled = begun + interval * n;
        if scheduled.duration_since(begun) >= duration {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let (invoker, payload) = (invoker.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let result = invoker.invoke(payload, extra).await;
            let micros = scheduled.elapsed().as_micros() as u64;
            (result.map(|a| accept(&a)).unwrap_or(false), micros)
        }));
        n += 1;
    }
    let mut hist = histogram()?;
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        match task.await {
            Ok((true, micros)) => {
                ok += 1;
                let _ = hist.record(micros.max(1));
            }
            _ => errors += 1,
        }
    }
    Ok(measure(&hist, ok, errors, begun.elapsed().as_secs_f64()))
}

/// Accepts a 200 without a function error.
pub fn sync_ok(answer: &Answer) -> bool {
    answer.status == 200 && !answer.function_error
}

/// Accepts a 202 (an accepted `Event` invoke).
pub fn event_accepted(answer: &Answer) -> bool {
    answer.status == 202
}

/// Percentiles of plain samples (milliseconds in, milliseconds out).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub n: usize,
}

/// Summarizes samples.
pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at =
        |q: f64| sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
    Summary {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: sorted[sorted.len() - 1],
        n: sorted.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_pick_nearest_ranks() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.p50, s.max, s.n), (3.0, 5.0, 5));
        assert_eq!(summarize(&[]).n, 0);
    }

    #[test]
    fn measurements_come_from_the_histogram() {
        let mut h = histogram().unwrap();
        for v in 1..=100u64 {
            h.record(v).unwrap();
        }
        let m = measure(&h, 100, 2, 2.0);
        assert_eq!(m.p50_us, 50);
        assert_eq!(m.max_us, 100);
        assert_eq!(m.throughput, 50.0);
        assert_eq!(m.errors, 2);
    }
}
