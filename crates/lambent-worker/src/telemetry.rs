//! The Telemetry API (2022-07-01) and the legacy Logs API (2020-08-15): extensions subscribe
//! an HTTP endpoint, and the environment POSTs JSON arrays of `{"time","type","record"}` to
//! it: function output lines and platform events (`platform.start`, `platform.runtimeDone`,
//! `platform.report`).
//!
//! Each subscriber has a bounded queue drained by its own task, which batches by the
//! subscription's buffering settings. Nothing on the invocation path waits for a subscriber:
//! when a queue is full the event is dropped and counted, and the next batch carries a
//! `platform.logsDropped` event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Most events waiting for one subscriber before new ones are dropped.
const QUEUE_EVENTS: usize = 1000;
/// How long one POST to a subscriber may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a subscriber asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// `platform` events.
    pub platform: bool,
    /// `function` log lines.
    pub function: bool,
    /// `extension` log lines (not told apart from function output yet).
    pub extension: bool,
    /// Longest an event waits in a batch.
    pub timeout: Duration,
    /// Most events in one batch.
    pub max_items: usize,
    /// Most bytes in one batch (approximately).
    pub max_bytes: usize,
    /// Where batches are POSTed (with `sandbox.localdomain` resolved).
    pub uri: Uri,
}

fn invalid(message: impl Into<String>) -> String {
    message.into()
}

/// Validates a subscription body; the error is the ValidationError message.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON body: {e}")))?;
    let schema = value
        .get("schemaVersion")
        .and_then(Value::as_str)
        .unwrap_or("2022-07-01");
    if !["2022-07-01", "2022-12-13", "2021-03-18", "2025-01-29"].contains(&schema) {
        return Err(invalid(format!("unsupported schemaVersion {schema}")));
    }
    let types = value
        .get("types")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("types must be a non-empty array"))?;
    if types.is_empty() {
        return Err(invalid("types must be a non-empty array"));
    }
    let (mut platform, mut function, mut extension) = (false, false, false);
    for kind in types {
        match kind.as_str() {
            Some("platform") => platform = true,
            Some("function") => function = true,
            Some("extension") => extension = true,
            _ => return Err(invalid(format!("unknown type {kind}"))),
        }
    }
    let buffering = value.get("buffering").cloned().unwrap_or(json!({}));
    let number = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, String> {
        match buffering.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| invalid(format!("buffering.{key} must be between {min} and {max}"))),
        }
    };
    let timeout_ms = number("timeoutMs", 1000, 25, 30_000)?;
    let max_bytes = number("maxBytes", 262_144, 262_144, 1_048_576)?;
    let max_items = number("maxItems", 10_000, 1000, 10_000)?;
    let destination = value
        .get("destination")
        .ok_or_else(|| invalid("destination is required"))?;
    match destination.get("protocol").and_then(Value::as_str) {
        Some("HTTP") => {}
        Some("TCP") => {
            return Err(invalid(
                "protocol TCP is not supported by Lambent; use HTTP",
            ));
        }
        _ => return Err(invalid("destination.protocol must be HTTP")),
    }
    let uri = destination
        .get("URI")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("destination.URI is required"))?;
    Ok(Subscription {
        platform,
        function,
        extension,
        timeout: Duration::from_millis(timeout_ms),
        max_items: max_items as usize,
        max_bytes: max_bytes as usize,
        uri: target_uri(uri)?,
    })
}

/// Parses a destination URI, resolving `sandbox.localdomain` (and `sandbox`) to 127.0.0.1 since
/// environments share the host's network.
pub fn target_uri(uri: &str) -> Result<Uri, String> {
    let parsed: Uri = uri
        .parse()
        .map_err(|e| invalid(format!("invalid destination.URI {uri}: {e}")))?;
    if parsed.scheme_str() != Some("http") {
        return Err(invalid("destination.URI must be an http:// URI"));
    }
    let host = parsed
        .host()
        .ok_or_else(|| invalid("destination.URI has no host"))?;
    if !host.eq_ignore_ascii_case("sandbox.localdomain") && !host.eq_ignore_ascii_case("sandbox") {
        return Ok(parsed);
    }
    let port = parsed
        .port_u16()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    format!("http://127.0.0.1{port}{path}")
        .parse()
        .map_err(|e| invalid(format!("invalid destination.URI {uri}: {e}")))
}

struct Subscriber {
    extension_id: String,
    subscription: Subscription,
    queue: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
}

/// The telemetry subscribers of one environment.
#[derive(Default)]
pub struct Telemetry {
    subscribers: Mutex<Vec<Subscriber>>,
    active: AtomicBool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl Telemetry {
    /// Subscribes (or re-subscribes) an extension and starts delivering to it.
    pub fn subscribe(&self, extension_id: &str, subscription: Subscription) {
        let (queue, receiver) = mpsc::channel(QUEUE_EVENTS);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(deliver(subscription.clone(), receiver, dropped.clone()));
        if let Ok(mut subscribers) = self.subscribers.lock() {
            // Dropping an old subscription's sender ends its task after a last batch.
            subscribers.retain(|s| s.extension_id != extension_id);
            subscribers.push(Subscriber {
                extension_id: extension_id.to_string(),
                subscription,
                queue,
                dropped,
            });
        }
        self.active.store(true, Ordering::Release);
    }

    /// A line of the function's output.
    pub fn function_line(&self, line: &[u8]) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        self.publish(
            |s| s.function,
            "function",
            Value::String(text.trim_end_matches('\r').to_string()),
        );
    }

    /// A platform event such as `platform.start`.
    pub fn platform(&self, kind: &str, record: Value) {
        if self.active.load(Ordering::Acquire) {
            self.publish(|s| s.platform, kind, record);
        }
    }

    fn publish(&self, wanted: impl Fn(&Subscription) -> bool, kind: &str, record: Value) {
        let Ok(subscribers) = self.subscribers.lock() else {
            return;
        };
        let event = json!({ "time": iso_time(), "type": kind, "record": record });
        for subscriber in subscribers.iter().filter(|s| wanted(&s.subscription)) {
            if subscriber.queue.try_send(event.clone()).is_err() {
                subscriber.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The current time as the Telemetry API writes it: `2022-10-12T00:03:50.000Z`.
fn iso_time() -> String {
    let stamp = lambent_types::time::aws_timestamp(std::time::SystemTime::now());
    stamp.trim_end_matches("+0000").to_string() + "Z"
}

/// Drains one subscriber's queue into batches POSTed to its URI until the queue closes.
async fn deliver(
    subscription: Subscription,
    mut queue: mpsc::Receiver<Value>,
    dropped: Arc<AtomicU64>,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut open = true;
    while open {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut size = first.to_string().len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + subscription.timeout;
        while batch.len() < subscription.max_items && size < subscription.max_bytes {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(event)) => {
                    size += event.to_string().len() + 1;
                    batch.push(event);
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(json!({
                "time": iso_time(),
                "type": "platform.logsDropped",
                "record": {
                    "reason": "Some logs were dropped because the subscriber could not keep up",
                    "droppedRecords": lost,
                    "droppedBytes": 0,
                },
            }));
        }
        let body = Value::Array(batch).to_string();
        let request = hyper::Request::post(subscription.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else {
            continue;
        };
        let sent = tokio::time::timeout(POST_TIMEOUT, async {
            let response = client.request(request).await?;
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(())
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(uri = %subscription.uri, "telemetry batch not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_validated() {
        let good = br#"{"schemaVersion":"2022-07-01","types":["platform","function"],
            "buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":100},
            "destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080/t"}}"#;
        let sub = parse_subscription(good).unwrap();
        assert!(sub.platform && sub.function && !sub.extension);
        assert_eq!(sub.timeout, Duration::from_millis(100));
        assert_eq!(sub.uri.to_string(), "http://127.0.0.1:8080/t");
        let defaults = parse_subscription(
            br#"{"types":["function"],"destination":{"protocol":"HTTP","URI":"http://localhost:9"}}"#,
        )
        .unwrap();
        assert_eq!(defaults.timeout, Duration::from_millis(1000));
        assert_eq!(defaults.uri.to_string(), "http://localhost:9/");
        for bad in [
            &br#"{"types":[],"destination":{"protocol":"HTTP","URI":"http://a"}}"#[..],
            br#"{"types":["nope"],"destination":{"protocol":"HTTP","URI":"http://a"}}"#,
            br#"{"types":["function"],"destination":{"protocol":"TCP","URI":"http://a"}}"#,
            br#"{"types":["function"],"destination":{"protocol":"HTTP","URI":"https://a"}}"#,
            br#"{"types":["function"],"buffering":{"timeoutMs":5},"destination":{"protocol":"HTTP","URI":"http://a"}}"#,
            br#"{"types":["function"]}"#,
            b"not json",
        ] {
            assert!(parse_subscription(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sandbox_host_is_rewritten() {
        assert_eq!(
            target_uri("http://sandbox:1234").unwrap().to_string(),
            "http://127.0.0.1:1234/"
        );
        assert_eq!(
            target_uri("http://example.com:1/x?y=1")
                .unwrap()
                .to_string(),
            "http://example.com:1/x?y=1"
        );
        assert!(iso_time().ends_with('Z'));
    }
}
