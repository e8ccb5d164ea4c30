//! The scenarios: warm (three runtimes), cold, payload, async, burst, density, and
//! esm-rabbitmq (an event-source mapping draining a RabbitMQ queue).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Cli;
use crate::load::{self, Budget, Invoker, Measurement};
use crate::peers;
use crate::report::{Row, ScenarioResult};
use crate::server::{self, Server, ServerOptions};

/// Runs scenario `name`.
pub async fn run(name: &str, cli: &Cli) -> anyhow::Result<ScenarioResult> {
    match name {
        "warm" => warm(cli, Kind::Provided).await,
        "warm-python" => warm(cli, Kind::Python).await,
        "warm-node" => warm(cli, Kind::Node).await,
        "cold" => cold(cli).await,
        "payload" => payload(cli).await,
        "async" => asynchronous(cli).await,
        "burst" => burst(cli).await,
        "density" => density(cli).await,
        "esm-rabbitmq" => esm_rabbitmq(cli).await,
        other => bail!("unknown scenario {other:?} (see --help)"),
    }
}

/// The trivial function of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Rust echo function (`lambda_runtime`), `provided.al2023`.
    Provided,
    /// A one-line Python handler.
    Python,
    /// A one-line Node handler.
    Node,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Provided => "provided",
            Kind::Python => "python",
            Kind::Node => "node",
        }
    }
}

fn options(cli: &Cli) -> ServerOptions {
    ServerOptions {
        binary: cli.server_bin.clone(),
        sandbox: cli.sandbox.clone(),
        network: cli.network.clone(),
        extra: Vec::new(),
    }
}

/// Creates the trivial function of `kind` as `name`.
async fn create(
    server: &Server,
    cli: &Cli,
    kind: Kind,
    name: &str,
    memory: u32,
) -> anyhow::Result<()> {
    let (runtime, handler, zip) = match kind {
        Kind::Provided => (
            "provided.al2023",
            "bootstrap",
            server::bootstrap_zip(&cli.echo_bin())?,
        ),
        Kind::Python => (
            "python3.12",
            "app.handler",
            server::zip_of(&[(
                "app.py",
                b"def handler(event, context):\n    return event\n",
                0o644,
            )])?,
        ),
        Kind::Node => (
            "nodejs20.x",
            "index.handler",
            server::zip_of(&[(
                "index.js",
                b"exports.handler = async (event) => event;\n",
                0o644,
            )])?,
        ),
    };
    server
        .create_function(name, runtime, handler, &zip, memory, 30)
        .await
}

/// The environments' network mode as the table names it.
fn network_label(cli: &Cli) -> &str {
    cli.network.as_deref().unwrap_or("default (bridge)")
}

fn budget(cli: &Cli) -> Budget {
    if cli.smoke {
        Budget::Requests(200)
    } else {
        Budget::Time(Duration::from_secs_f64(cli.seconds))
    }
}

fn runs(cli: &Cli) -> usize {
    if cli.smoke { 1 } else { cli.runs.max(1) }
}

/// The run with the median p50 of several, and the spread of p50 and throughput.
fn median_run(mut measured: Vec<Measurement>) -> Value {
    measured.sort_by_key(|m| m.p50_us);
    let median = measured[measured.len() / 2].clone();
    let p50s: Vec<u64> = measured.iter().map(|m| m.p50_us).collect();
    let mut tput: Vec<f64> = measured.iter().map(|m| m.throughput).collect();
    tput.sort_by(f64::total_cmp);
    json!({
        "median": median,
        "p50_us_spread": [p50s.first(), p50s.last()],
        "throughput_spread": [tput.first(), tput.last()],
        "runs": measured,
    })
}

fn fmt_latency(m: &Value) -> String {
    let med = &m["median"];
    format!(
        "p50 {} µs, p99 {} µs, {:.0}/s (p50 {}–{} µs)",
        med["p50_us"],
        med["p99_us"],
        med["throughput"].as_f64().unwrap_or(0.0),
        m["p50_us_spread"][0],
        m["p50_us_spread"][1]
    )
}

/// Measures `invoker` at each concurrency, `runs` times each.
async fn levels(
    invoker: &Invoker,
    payload: &Bytes,
    cli: &Cli,
    concurrency: &[usize],
) -> anyhow::Result<Vec<(usize, Value)>> {
    let mut out = Vec::new();
    for &c in concurrency {
        // Warm as many environments as the level needs.
        let measured = repeated(invoker, payload, c, c as u64 * 4, budget(cli), cli).await?;
        out.push((c, measured));
    }
    Ok(out)
}

/// `warmup` requests, then [`runs`] measurements of `budget` at `concurrency`; the median run
/// with the spread (see [`median_run`]).
async fn repeated(
    invoker: &Invoker,
    payload: &Bytes,
    concurrency: usize,
    warmup: u64,
    budget: Budget,
    cli: &Cli,
) -> anyhow::Result<Value> {
    let measure = |budget| {
        load::closed_loop(
            invoker,
            payload.clone(),
            &[],
            concurrency,
            budget,
            load::sync_ok,
        )
    };
    measure(Budget::Requests(warmup)).await?;
    let mut measured = Vec::new();
    for _ in 0..runs(cli) {
        measured.push(measure(budget).await?);
    }
    Ok(median_run(measured))
}

async fn warm(cli: &Cli, kind: Kind) -> anyhow::Result<ScenarioResult> {
    let concurrency: &[usize] = if !cli.concurrency.is_empty() {
        &cli.concurrency
    } else if cli.smoke {
        &[1, 8]
    } else {
        &[1, 8, 64]
    };
    let server = Server::start(&options(cli))?;
    let name = format!("bench-{}", kind.label());
    create(&server, cli, kind, &name, 128).await?;
    let invoker = server.invoker(&name);
    let payload = Bytes::from_static(br#"{"hello":"world"}"#);
    let first = invoker.invoke(payload.clone(), &[]).await?;
    if !load::sync_ok(&first) {
        bail!("{name} failed: {}", String::from_utf8_lossy(&first.body));
    }
    let ours = levels(&invoker, &payload, cli, concurrency).await?;
    // Open loop at half the closed-loop throughput of c=8 (or `--open-rate`): latency under a
    // steady arrival rate.
    let rate = cli.open_rate.unwrap_or_else(|| {
        ours.iter()
            .find(|(c, _)| *c == 8)
            .and_then(|(_, m)| m["median"]["throughput"].as_f64())
            .unwrap_or(100.0)
            * 0.5
    });
    let open_seconds = if cli.smoke { 1.0 } else { cli.seconds };
    let open = load::open_loop(
        &invoker,
        payload.clone(),
        &[],
        rate,
        Duration::from_secs_f64(open_seconds),
        load::sync_ok,
    )
    .await?;
    drop(server);
    let mut peer_figures = Vec::new();
    if cli.peers && !cli.smoke {
        for peer in peers::for_kind(kind) {
            match peer.start().await {
                Ok(running) => {
                    let measured = levels(&running.invoker, &payload, cli, concurrency).await;
                    peer_figures.push((peer.name.to_string(), measured.map_err(|e| e.to_string())));
                    running.stop();
                }
                Err(e) => peer_figures.push((peer.name.to_string(), Err(e.to_string()))),
            }
        }
    }
    let mut rows = Vec::new();
    let mut figures = json!({"lambent": {}, "peers": {}});
    for (c, m) in &ours {
        figures["lambent"][format!("c{c}")] = m.clone();
        let mut peers_text = Vec::new();
        for (peer, result) in &peer_figures {
            match result {
                Ok(levels) => {
                    if let Some((_, pm)) = levels.iter().find(|(pc, _)| pc == c) {
                        figures["peers"][peer][format!("c{c}")] = pm.clone();
                        let ratio = pm["median"]["p50_us"].as_f64().unwrap_or(0.0)
                            / m["median"]["p50_us"].as_f64().unwrap_or(1.0).max(1.0);
                        let tput_ratio = pm["median"]["throughput"].as_f64().unwrap_or(0.0)
                            / m["median"]["throughput"].as_f64().unwrap_or(1.0).max(1e-9);
                        peers_text.push(format!(
                            "{peer}: p50 {} µs ({ratio:.1}×), {:.0}/s ({tput_ratio:.2}×)",
                            pm["median"]["p50_us"],
                            pm["median"]["throughput"].as_f64().unwrap_or(0.0)
                        ));
                    }
                }
                Err(e) => {
                    figures["peers"][peer] = json!({"error": e});
                    peers_text.push(format!("{peer}: could not run ({e})"));
                }
            }
        }
        rows.push(Row {
            case: format!("{} c={c}", kind.label()),
            lambent: fmt_latency(m),
            peers: if peers_text.is_empty() {
                peers::not_run_note(kind, cli)
            } else {
                peers_text.join("; ")
            },
        });
    }
    rows.push(Row {
        case: format!("{} open loop {rate:.0}/s", kind.label()),
        lambent: format!(
            "p50 {} µs, p99 {} µs, max {} µs, {} errors",
            open.p50_us, open.p99_us, open.max_us, open.errors
        ),
        peers: String::new(),
    });
    figures["lambent"]["open_loop"] = json!({"rate": rate, "measurement": open});
    Ok(ScenarioResult {
        figures,
        rows,
        parameters: json!({"concurrency": concurrency, "seconds": cli.seconds, "payload": "{\"hello\":\"world\"}", "memory_mb": 128}),
    })
}

/// `name=value` fields of the server log's `environment started` lines for `function`.
fn started_lines(log: &str, function: &str) -> Vec<(f64, f64)> {
    log.lines()
        .filter(|l| l.contains("environment started"))
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{key}=")))
                    .map(|v| v.trim_matches('"').to_string())
            };
            if field("function")? != function {
                return None;
            }
            let sandbox: f64 = field("sandbox_us")?.parse().ok()?;
            let spawn: f64 = field("spawn_us")?.parse().ok()?;
            Some((sandbox / 1000.0, spawn / 1000.0))
        })
        .collect()
}

fn report_field(tail: &str, key: &str) -> Option<f64> {
    tail.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn cold(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    use base64::Engine;
    let iterations = if cli.smoke { 5 } else { 30 };
    let server = Server::start(&options(cli))?;
    let mut figures = json!({});
    let mut rows = Vec::new();
    for kind in [Kind::Provided, Kind::Python, Kind::Node] {
        let name = format!("cold-{}", kind.label());
        create(&server, cli, kind, &name, 128).await?;
        let invoker = server.invoker(&name);
        let (mut client, mut init, mut first) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=iterations {
            server.touch_function(&name, round).await?;
            let begun = Instant::now();
            let answer = invoker
                .invoke(Bytes::from_static(b"{}"), &[("x-amz-log-type", "Tail")])
                .await?;
            let elapsed = begun.elapsed().as_secs_f64() * 1000.0;
            if !load::sync_ok(&answer) {
                bail!("{name} failed: {}", String::from_utf8_lossy(&answer.body));
            }
            if round == 0 {
                continue; // the first start also fills the page cache
            }
            client.push(elapsed);
            let tail = answer
                .log_result
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if let Some(ms) = report_field(&tail, "Init Duration:") {
                init.push(ms);
            }
            if let Some(ms) = report_field(&tail, "\tDuration:") {
                first.push(ms);
            }
        }
        let phases = started_lines(&server.log_text(), &name);
        let phases = &phases[phases.len().saturating_sub(iterations as usize)..];
        let sandbox: Vec<f64> = phases.iter().map(|p| p.0).collect();
        let spawn: Vec<f64> = phases.iter().map(|p| p.1).collect();
        let platform: Vec<f64> = phases.iter().map(|p| p.0 + p.1).collect();
        let summary = json!({
            "client_ms": load::summarize(&client),
            "sandbox_ms": load::summarize(&sandbox),
            "process_start_ms": load::summarize(&spawn),
            "platform_ms": load::summarize(&platform),
            "runtime_init_ms": load::summarize(&init),
            "first_invoke_ms": load::summarize(&first),
        });
        let p50 = |k: &str| summary[k]["p50"].as_f64().unwrap_or(0.0);
        rows.push(Row {
            case: format!("{} cold", kind.label()),
            lambent: format!(
                "total p50 {:.1} ms = platform {:.2} (sandbox {:.2} + process {:.2}) + init {:.1} + invoke {:.2}",
                p50("client_ms"),
                p50("platform_ms"),
                p50("sandbox_ms"),
                p50("process_start_ms"),
                p50("runtime_init_ms"),
                p50("first_invoke_ms")
            ),
            peers: "cargo-lambda: not measured (it rebuilds and restarts the function process on change; no per-invoke cold start)".into(),
        });
        figures[kind.label()] = summary;
    }
    Ok(ScenarioResult {
        figures,
        rows,
        parameters: json!({"iterations": iterations, "memory_mb": 128, "network": cli.network}),
    })
}

async fn payload(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    let server = Server::start(&options(cli))?;
    create(&server, cli, Kind::Provided, "bench-payload", 512).await?;
    let invoker = server.invoker("bench-payload");
    let mut figures = json!({});
    let mut rows = Vec::new();
    for (label, size) in [
        ("1KB", 1024usize),
        ("256KB", 256 * 1024),
        ("6MB", 6 * 1024 * 1024 - 4096),
    ] {
        let prefix = br#"{"quiet":true,"data":""#;
        let filler = size.saturating_sub(prefix.len() + 2);
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(prefix);
        body.resize(prefix.len() + filler, b'x');
        body.extend_from_slice(b"\"}");
        let payload = Bytes::from(body);
        let requests = match (cli.smoke, size) {
            (true, _) => 20,
            (false, s) if s > 1024 * 1024 => 100,
            _ => 2000,
        };
        let m = repeated(&invoker, &payload, 1, 5, Budget::Requests(requests), cli).await?;
        let mbps = m["median"]["throughput"].as_f64().unwrap_or(0.0) * payload.len() as f64 / 1e6;
        rows.push(Row {
            case: format!("{label} sync c=1"),
            lambent: format!("{} ({mbps:.0} MB/s in)", fmt_latency(&m)),
            peers: "not run".into(),
        });
        figures[label] = m;
    }
    Ok(ScenarioResult {
        figures,
        rows,
        parameters: json!({"sizes": ["1KB", "256KB", "6MB - 4KB"], "concurrency": 1, "response": "small"}),
    })
}

/// The `lambent_invocations_total` of `function` on the server's /metrics.
async fn invocations_total(server: &Server, function: &str) -> anyhow::Result<u64> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let response = client
        .get(format!("http://{}/metrics", server.authority).parse()?)
        .await?;
    let text =
        String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
    let needle = format!("lambent_invocations_total{{function=\"{function}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

async fn asynchronous(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    let server = Server::start(&options(cli))?;
    create(&server, cli, Kind::Provided, "bench-async", 128).await?;
    let invoker = server.invoker("bench-async");
    let payload = Bytes::from_static(br#"{"quiet":true}"#);
    load::closed_loop(
        &invoker,
        payload.clone(),
        &[],
        1,
        Budget::Requests(5),
        load::sync_ok,
    )
    .await?;
    let before = invocations_total(&server, "bench-async").await?;
    let budget = if cli.smoke {
        Budget::Requests(300)
    } else {
        Budget::Time(Duration::from_secs_f64(cli.seconds))
    };
    let begun = Instant::now();
    let accepted = load::closed_loop(
        &invoker,
        payload,
        &[("x-amz-invocation-type", "Event")],
        16,
        budget,
        load::event_accepted,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut delivered = 0;
    while Instant::now() < deadline {
        delivered = invocations_total(&server, "bench-async")
            .await?
            .saturating_sub(before);
        if delivered >= accepted.ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivery_seconds = begun.elapsed().as_secs_f64();
    let rate = delivered as f64 / delivery_seconds;
    let rows = vec![Row {
        case: "Event invokes, c=16".into(),
        lambent: format!(
            "{:.0} accepted/s (p50 {} µs); {delivered} of {} delivered at {rate:.0}/s end to end",
            accepted.throughput, accepted.p50_us, accepted.ok
        ),
        peers: "cargo-lambda, serverless-offline: no durable async queue".into(),
    }];
    Ok(ScenarioResult {
        figures: json!({"accepted": accepted, "delivered": delivered, "delivery_seconds": delivery_seconds, "delivery_rate": rate,
            "note": "the queue is in memory until issue 7 makes it durable"}),
        rows,
        parameters: json!({"concurrency": 16, "seconds": cli.seconds}),
    })
}

/// Samples the server's and the inits' memory every 20 ms until `stop`; their peaks.
fn sample_memory(server: &Server, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    let pid = server.pid();
    tokio::task::spawn_blocking(move || {
        let (mut peak_server, mut peak_inits) = (0, 0);
        while !stop.load(Ordering::Acquire) {
            peak_server = peak_server.max(server::rss_kib(pid));
            peak_inits = peak_inits.max(server::inits_rss_of(pid).0);
            std::thread::sleep(Duration::from_millis(20));
        }
        (peak_server, peak_inits)
    })
}

async fn fire(invoker: &Invoker, n: usize, sleep_ms: u64) -> Vec<anyhow::Result<f64>> {
    let payload = Bytes::from(format!(r#"{{"sleep_ms":{sleep_ms},"quiet":true}}"#));
    let mut tasks = Vec::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    for _ in 0..n {
        let (invoker, payload, barrier) = (invoker.clone(), payload.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let begun = Instant::now();
            let answer = invoker.invoke(payload, &[]).await?;
            if !load::sync_ok(&answer) {
                bail!("{}", String::from_utf8_lossy(&answer.body));
            }
            Ok(begun.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.context("invoke task").and_then(|r| r));
    }
    out
}

async fn burst(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    let n = if cli.smoke { 20 } else { 500 };
    let server = Server::start(&options(cli))?;
    create(&server, cli, Kind::Provided, "bench-burst", 128).await?;
    let invoker = server.invoker("bench-burst");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_server = server.rss_kib();
    let (base_inits, base_count) = server.inits_rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(&server, stop.clone());
    let begun = Instant::now();
    let results = fire(&invoker, n, 1000).await;
    let all_done = begun.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Release);
    let (peak_server, peak_inits) = sampler.await?;
    let latencies: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let errors = results.iter().filter(|r| r.is_err()).count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
    let overhead: Vec<f64> = latencies.iter().map(|l| l - 1000.0).collect();
    let up = load::summarize(&overhead);
    let per_env_kib = (peak_server.saturating_sub(base_server)
        + peak_inits.saturating_sub(base_inits)) as f64
        / n as f64;
    let rows = vec![Row {
        case: format!(
            "0 → {n} concurrent, 1 s function, network {}",
            network_label(cli)
        ),
        lambent: format!(
            "all {n} environments up within {:.0} ms (median {:.0} ms); platform memory {:.0} KiB per environment (server + init); {errors} errors",
            up.max, up.p50, per_env_kib
        ),
        peers: "cargo-lambda: serializes invocations (one process)".into(),
    }];
    Ok(ScenarioResult {
        figures: json!({
            "environments_up_ms": up, "all_answers_ms": all_done, "errors": errors, "first_error": first_error,
            "server_rss_kib": {"before": base_server, "peak": peak_server},
            "inits_rss_kib": {"before": base_inits, "before_count": base_count, "peak": peak_inits},
            "platform_kib_per_environment": per_env_kib,
        }),
        rows,
        parameters: json!({"concurrency": n, "function_ms": 1000, "network": cli.network}),
    })
}

async fn density(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    let n = if cli.smoke { 20 } else { 1000 };
    let mut opts = options(cli);
    opts.extra = vec!["--max-concurrency".into(), (n + 10).to_string()];
    let server = Server::start(&opts)?;
    create(&server, cli, Kind::Provided, "bench-density", 128).await?;
    let invoker = server.invoker("bench-density");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let host_before = server::host_used_kib();
    let base_server = server.rss_kib();
    let (base_inits, base_count) = server.inits_rss_kib();
    let results = fire(&invoker, n, 3000).await;
    let errors = results.iter().filter(|r| r.is_err()).count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
    tokio::time::sleep(Duration::from_secs(2)).await; // idle now
    let host_after = server::host_used_kib();
    let server_rss = server.rss_kib();
    let (inits, count) = server.inits_rss_kib();
    let warm = n - errors;
    let server_per = server_rss.saturating_sub(base_server) as f64 / warm.max(1) as f64;
    let inits_per = inits.saturating_sub(base_inits) as f64 / warm.max(1) as f64;
    let host_per = host_after.saturating_sub(host_before) as f64 / warm.max(1) as f64;
    let rows = vec![Row {
        case: format!(
            "{warm} warm idle environments, network {}",
            network_label(cli)
        ),
        lambent: format!(
            "server {server_per:.0} KiB + init {inits_per:.0} KiB per environment; host memory {host_per:.0} KiB per environment (function included); {errors} errors"
        ),
        peers: "not run".into(),
    }];
    Ok(ScenarioResult {
        figures: json!({
            "environments": warm, "errors": errors, "first_error": first_error,
            "server_rss_kib": {"before": base_server, "after": server_rss, "per_environment": server_per},
            "inits_rss_kib": {"before": base_inits, "before_count": base_count, "after": inits, "count": count, "per_environment": inits_per},
            "host_used_kib": {"before": host_before, "after": host_after, "per_environment": host_per},
        }),
        rows,
        parameters: json!({"environments": n, "memory_mb": 128, "network": cli.network}),
    })
}

/// The broker the esm-rabbitmq scenario uses.
fn amqp_url() -> String {
    std::env::var("LAMBENT_BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// An event-source mapping (BatchSize 100) draining a RabbitMQ queue that holds a backlog:
/// messages processed per second, from the mapping's creation until the queue is empty.
async fn esm_rabbitmq(cli: &Cli) -> anyhow::Result<ScenarioResult> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let messages: usize = if cli.smoke { 2_000 } else { 200_000 };
    let batch_size = 100;
    let server = Server::start(&options(cli))?;
    create(&server, cli, Kind::Provided, "bench-esm", 256).await?;
    let url = amqp_url();
    server
        .call(
            "PUT",
            "/lambent/connections/bench-rabbitmq",
            Some(json!({ "Url": url })),
        )
        .await?;
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .with_context(|| {
            format!("RabbitMQ is not reachable at {url} (set LAMBENT_BENCH_AMQP_URL)")
        })?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("lambent-bench-esm-{}", std::process::id());
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments.clone(),
        )
        .await?;
    let body = br#"{"order":"A-1001","amount":42.5,"currency":"EUR","note":"benchmark message"}"#;
    eprintln!("    publishing {messages} messages to {queue}");
    for chunk in 0..messages.div_ceil(1000) {
        let mut confirms = Vec::new();
        for _ in 0..1000.min(messages - chunk * 1000) {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        lapin::BasicProperties::default(),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            confirm.await?;
        }
    }
    let ready = |channel: lapin::Channel, queue: String, arguments: FieldTable| async move {
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        anyhow::Ok(declared.message_count() as usize)
    };
    let begun = Instant::now();
    server
        .call(
            "POST",
            "/2015-03-31/event-source-mappings",
            Some(json!({
                "FunctionName": "bench-esm",
                "EventSourceArn": "arn:lambent:rabbitmq:::bench-rabbitmq",
                "Queues": [queue],
                "BatchSize": batch_size,
            })),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut samples = Vec::new();
    loop {
        let left = ready(channel.clone(), queue.clone(), arguments.clone()).await?;
        samples.push((begun.elapsed().as_secs_f64(), left));
        if left == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = begun.elapsed().as_secs_f64();
    // The last batches (at most the prefetch) finish after the queue reads empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let invocations = invocations_total(&server, "bench-esm").await?;
    let left = ready(channel.clone(), queue.clone(), arguments.clone()).await?;
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    if left > 0 {
        bail!("{left} of {messages} messages were still on the queue after 600 s");
    }
    let rate = messages as f64 / seconds;
    let rows = vec![Row {
        case: format!("RabbitMQ backlog of {messages}, BatchSize {batch_size}, Rust echo function"),
        lambent: format!(
            "{rate:.0} messages/s ({messages} in {seconds:.1} s, {invocations} invocations, {:.0} messages each)",
            messages as f64 / invocations.max(1) as f64
        ),
        peers: "cargo-lambda, serverless-offline: no RabbitMQ event sources".into(),
    }];
    Ok(ScenarioResult {
        figures: json!({"messages": messages, "seconds": seconds, "messages_per_second": rate,
            "invocations": invocations, "queue_depth_samples": samples}),
        rows,
        parameters: json!({"batch_size": batch_size, "messages": messages, "message_bytes": body.len()}),
    })
}
