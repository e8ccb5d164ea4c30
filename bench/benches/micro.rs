//! Criterion micro-benchmarks of Lambent's hot paths.
//!
//! ```sh
//! cargo build --release -p lambent-testfn-echo     # the function `runtime_api` runs
//! cargo bench -p lambent-bench --bench micro       # all groups, about a minute and a half
//! cargo bench -p lambent-bench --bench micro -- --quick
//! ```
//!
//! Groups:
//! - `routing`: what the API does with a `FunctionName` label on every request, through the
//!   public API (`FunctionRef::parse`, `referenced_home`, `ArnContext`). The path splitting
//!   and the `(method, segments)` match of `lambent-api` are private and not measured here.
//! - `sigv4`: `lambent_api::sigv4::verify` of a signed Invoke request (1 KiB and 256 KiB
//!   bodies), with the secret from memory and, as the server does it, from the SQLite store.
//! - `store`: `SqliteStore` point reads: one function configuration from a store of 1 and
//!   1,000 functions, the JSON decoding share of that, a document miss (the reserved
//!   concurrency lookup every invoke makes) and an access key's secret.
//! - `runtime_api`: one warm invoke through `lambent_worker::Worker::invoke`, called with
//!   `block_on` on a multi-thread Tokio runtime (no Invoke API, no store): the invocation
//!   handed to the runtime waiting in `/next`, its `/response`, the REPORT and the log lines
//!   (written to a `LogStore`, as `lambent serve` does), back to back so each invoke also
//!   waits for the runtime's return to `/next`. `warm_invoke` runs the Rust test function
//!   (`provided.al2023`, `lambda_runtime`, `--sandbox=none`); `warm_invoke_minimal_runtime`
//!   runs a floor: this binary as a runtime that only does the Runtime API cycle with blocking
//!   I/O ([`minimal_runtime`]). Before criterion, 2,000 warm invokes of each are timed one by
//!   one for percentiles, with the platform process's CPU time and context switches.
//!
//! After a complete run (no filter, not `--test`/`--list`/`--profile-time`) the figures are
//! written to `bench/results/micro.json`, read back from criterion's `estimates.json` files.
//! Criterion's figure per benchmark is the median of its samples, each the mean time of a
//! batch of iterations: for the invokes it is close to the mean latency, not the p50.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue};
use lambent_api::sigv4;
use lambent_sandbox::{Sandbox, SandboxConfig, SandboxMode};
use lambent_store::logs::{LogLimits, LogStore};
use lambent_store::{AccessKey, SqliteStore, Store, kinds};
use lambent_types::FunctionConfig;
use lambent_types::names::{ArnContext, FunctionRef, Qualifier, referenced_home};
use lambent_worker::{Invocation, RuntimeHosts, Worker, WorkerConfig};

/// Every benchmark this file defines, as `group/name` (criterion's directory layout).
const BENCHMARKS: &[&str] = &[
    "routing/parse_name",
    "routing/parse_name_query_qualifier",
    "routing/parse_partial_arn_qualified",
    "routing/parse_full_arn_qualified",
    "routing/invoked_function_arn",
    "sigv4/verify_1k",
    "sigv4/verify_256k",
    "sigv4/verify_1k_store_secret",
    "store/get_function_1",
    "store/get_function_1000",
    "store/decode_config_json",
    "store/get_document_miss",
    "store/access_key_secret",
    "runtime_api/warm_invoke",
    "runtime_api/warm_invoke_minimal_runtime",
];

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn main() {
    // The sandbox starts each environment by re-executing this binary as its init; that must
    // happen before criterion (or anything else) runs.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(lambent_sandbox::INIT_ARG) {
        lambent_sandbox::init_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(MINIMAL_RUNTIME_ARG) {
        minimal_runtime();
    }

    let started = SystemTime::now();
    let output = criterion_home();
    let mut c = Criterion::default()
        .output_directory(&output)
        .configure_from_args();

    // Criterion's modes that do not measure (`--test`, `--list`, `--profile-time`).
    let measuring = !args
        .iter()
        .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"));

    routing(&mut c);
    sigv4_group(&mut c);
    store(&mut c);
    let runtime_api = runtime_api(&mut c, measuring);

    c.final_summary();
    if measuring {
        write_results(&output, started, &args, runtime_api);
    }
}

/// Defaults for the fast (sub-microsecond to microsecond) benchmarks: about 3 s each.
fn short(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
}

// ---------------------------------------------------------------------------------------------
// routing

fn routing(c: &mut Criterion) {
    let arns = ArnContext {
        region: REGION.into(),
        account_id: ACCOUNT.into(),
    };
    let mut group = c.benchmark_group("routing");
    short(&mut group);

    // What `lambent-api`'s `function_ref` does with the (already percent-decoded) label:
    // parse it with the `?Qualifier=` value, then check the ARN's region and account.
    let function_ref = |label: &str, query: Option<&str>| {
        let parsed = FunctionRef::parse(label, query).expect("valid function reference");
        let home = referenced_home(label);
        (parsed, home.map(|(r, a)| (r.map(str::len), a.len())))
    };

    group.bench_function("parse_name", |b| {
        b.iter(|| function_ref(black_box("my-function"), black_box(None)))
    });
    group.bench_function("parse_name_query_qualifier", |b| {
        b.iter(|| function_ref(black_box("my-function"), black_box(Some("$LATEST"))))
    });
    group.bench_function("parse_partial_arn_qualified", |b| {
        b.iter(|| function_ref(black_box("123456789012:function:my-function:live"), None))
    });
    group.bench_function("parse_full_arn_qualified", |b| {
        b.iter(|| {
            function_ref(
                black_box("arn:aws:lambda:us-east-1:123456789012:function:my-function:7"),
                None,
            )
        })
    });
    // The ARN the invoker builds for every invocation (`invoked_function_arn`).
    let alias = Qualifier::Alias("live".into());
    group.bench_function("invoked_function_arn", |b| {
        b.iter(|| arns.arn_as_named(black_box("my-function"), Some(black_box(&alias))))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// sigv4

/// A JSON document of about `size` bytes.
fn json_body(size: usize) -> Vec<u8> {
    let filler = "x".repeat(size.saturating_sub(16));
    let body = serde_json::json!({ "data": filler }).to_string();
    body.into_bytes()
}

/// The headers of an Invoke request as an AWS SDK sends it, signed at `now`.
fn signed_invoke(raw_path: &str, body: &[u8], now: SystemTime) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:9000"),
        ("content-type", "application/json"),
        ("x-amz-invocation-type", "RequestResponse"),
        ("x-amz-log-type", "None"),
        (
            "x-amz-user-agent",
            "aws-sdk-rust/1.3.0 api/lambda/1.50.0 os/linux lang/rust/1.89.0",
        ),
        (
            "amz-sdk-invocation-id",
            "6a0b1d5e-1f2c-4e2b-9a7e-0c1d2e3f4a5b",
        ),
        ("amz-sdk-request", "attempt=1; max=3"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(body.len() as u64),
    );
    let signed = sigv4::sign(
        &sigv4::SignableRequest {
            method: "POST",
            raw_path,
            raw_query: "",
            headers: &headers,
            body,
        },
        ACCESS_KEY_ID,
        SECRET_KEY,
        REGION,
        "lambda",
        now,
    );
    for (name, value) in signed {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("signature header name"),
            HeaderValue::from_str(&value).expect("signature header value"),
        );
    }
    headers
}

fn sigv4_group(c: &mut Criterion) {
    let now = SystemTime::now();
    let raw_path = "/2015-03-31/functions/my-function/invocations";
    let mut group = c.benchmark_group("sigv4");
    short(&mut group);

    for (name, size) in [("verify_1k", 1024), ("verify_256k", 256 * 1024)] {
        let body = json_body(size);
        let headers = signed_invoke(raw_path, &body, now);
        let request = sigv4::SignableRequest {
            method: "POST",
            raw_path,
            raw_query: "",
            headers: &headers,
            body: &body,
        };
        sigv4::verify(&request, now, "lambda", |_| Some(SECRET_KEY.to_owned()))
            .expect("the request verifies");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                sigv4::verify(black_box(&request), now, "lambda", |key| {
                    (key == ACCESS_KEY_ID).then(|| SECRET_KEY.to_owned())
                })
            })
        });
    }

    // As `lambent-api` does it: the secret looked up in the store on every request.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteStore::open(&dir.path().join("lambent.db")).expect("open the store");
    db.put_access_key(&AccessKey {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_KEY.into(),
    })
    .expect("put the access key");
    let body = json_body(1024);
    let headers = signed_invoke(raw_path, &body, now);
    let request = sigv4::SignableRequest {
        method: "POST",
        raw_path,
        raw_query: "",
        headers: &headers,
        body: &body,
    };
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify_1k_store_secret", |b| {
        b.iter(|| {
            sigv4::verify(black_box(&request), now, "lambda", |key| {
                db.access_key_secret(key).ok().flatten()
            })
            .expect("verifies")
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// store

/// A configuration as `CreateFunction` would leave it (a few variables, tags, code hashes).
fn function_config(name: &str) -> FunctionConfig {
    let arns = ArnContext {
        region: REGION.into(),
        account_id: ACCOUNT.into(),
    };
    let mut config =
        FunctionConfig::with_defaults(name, "provided.al2023", "bootstrap", &arns.default_role());
    config.description = "A function for the micro-benchmarks".into();
    config.code_sha256_hex =
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into();
    config.code_sha256 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into();
    config.code_size = 1_234_567;
    config.last_modified = "2025-01-01T00:00:00.000+0000".into();
    config.revision_id = "0f4b1e0e-7b8f-4a8e-9d2c-3c9a1b2c3d4e".into();
    for (k, v) in [
        ("LOG_LEVEL", "info"),
        ("TABLE_NAME", "orders"),
        ("FEATURE_FLAGS", "a,b,c"),
    ] {
        config.environment.insert(k.into(), v.into());
    }
    config.tags.insert("team".into(), "payments".into());
    config
}

/// A file-backed store in `dir` holding `count` functions `fn-0000`, `fn-0001`, ….
fn store_with(dir: &Path, count: usize) -> SqliteStore {
    let db = SqliteStore::open(&dir.join("lambent.db")).expect("open the store");
    for i in 0..count {
        db.create_function(&function_config(&format!("fn-{i:04}")))
            .expect("create a function");
    }
    db
}

fn store(c: &mut Criterion) {
    let one_dir = tempfile::tempdir().expect("tempdir");
    let one = store_with(one_dir.path(), 1);
    let many_dir = tempfile::tempdir().expect("tempdir");
    let many = store_with(many_dir.path(), 1000);
    one.put_access_key(&AccessKey {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_KEY.into(),
    })
    .expect("put the access key");

    let mut group = c.benchmark_group("store");
    short(&mut group);
    group.bench_function("get_function_1", |b| {
        b.iter(|| {
            one.get_function(black_box("fn-0000"), "$LATEST")
                .expect("found")
        })
    });
    group.bench_function("get_function_1000", |b| {
        b.iter(|| {
            many.get_function(black_box("fn-0500"), "$LATEST")
                .expect("found")
        })
    });
    // The share of a read that is decoding the stored JSON.
    let json = serde_json::to_string(&function_config("fn-0000")).expect("encode");
    group.bench_function("decode_config_json", |b| {
        b.iter(|| serde_json::from_str::<FunctionConfig>(black_box(&json)).expect("decode"))
    });
    // `Invoker::reserve` looks for a reserved concurrency on every invocation; usually none.
    group.bench_function("get_document_miss", |b| {
        b.iter(|| {
            many.get_document(kinds::CONCURRENCY, black_box("fn-0500"), "")
                .expect("read")
        })
    });
    group.bench_function("access_key_secret", |b| {
        b.iter(|| {
            one.access_key_secret(black_box(ACCESS_KEY_ID))
                .expect("read")
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// runtime_api

/// The Rust test function's binary: `$LAMBENT_TEST_RUST_BOOTSTRAP`, else
/// `target/{release,debug}/bootstrap` (`cargo build [--release] -p lambent-testfn-echo`).
fn find_bootstrap() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LAMBENT_TEST_RUST_BOOTSTRAP") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let target = target_dir()?;
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("bootstrap"))
        .find(|p| p.is_file())
}

/// Warm invokes timed one by one for the latency distribution (criterion reports the mean
/// of batches, which a heavy tail pulls up).
const LATENCY_INVOKES: usize = 2000;

/// The `q` quantile (0–1) of sorted figures.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

/// A function deployed for the benchmark: its configuration and code directory.
struct Deployed {
    label: &'static str,
    config: FunctionConfig,
    task_root: PathBuf,
}

/// A worker on its own Tokio runtime, invoked from the benchmark thread with `block_on`.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    worker: Arc<Worker>,
    arns: ArnContext,
    payload: Bytes,
    invocations: std::cell::Cell<u64>,
}

impl InProcess {
    /// One invocation of `function`, as the invoker would hand it over.
    fn invoke(&self, function: &Deployed) -> lambent_worker::InvocationResult {
        let n = self.invocations.get() + 1;
        self.invocations.set(n);
        let invocation = Invocation {
            request_id: format!("00000000-0000-4000-8000-{n:012x}"),
            payload: self.payload.clone(),
            invoked_function_arn: self.arns.function_arn(&function.config.name),
            trace_id: "Root=1-5e1b4151-5ac6c58f5c6b4a3f2e1d0c9b;Parent=53995c3f42cd8ad8;Sampled=0"
                .into(),
            client_context: None,
            cognito_identity: None,
            want_log_tail: false,
            stream: None,
        };
        let result = self
            .runtime
            .block_on(
                self.worker
                    .invoke(&function.config, &function.task_root, &[], &invocation),
            )
            .expect("the worker ran the invocation");
        assert!(
            !result.function_error,
            "{}: the invocation failed: {}",
            function.label,
            String::from_utf8_lossy(&result.body)
        );
        result
    }

    /// The first (cold) invoke, checked; then [`LATENCY_INVOKES`] warm ones timed one by one.
    fn latency(&self, function: &Deployed, measuring: bool) -> serde_json::Value {
        let began = std::time::Instant::now();
        let first = self.invoke(function);
        let cold = began.elapsed();
        assert!(
            first.cold_start && first.body.starts_with(b"{"),
            "{}: the first invoke was not a cold one that answered JSON",
            function.label
        );
        eprintln!(
            "runtime_api: {}: cold invoke {:.2} ms (init {:.2} ms)",
            function.label,
            cold.as_secs_f64() * 1e3,
            first.report.init_duration.unwrap_or_default().as_secs_f64() * 1e3,
        );
        if !measuring {
            return serde_json::Value::Null;
        }
        let mut total_us = Vec::with_capacity(LATENCY_INVOKES);
        let mut phase_us = Vec::with_capacity(LATENCY_INVOKES);
        let cpu_before = process_cpu_secs();
        let switches_before = context_switches();
        for _ in 0..LATENCY_INVOKES {
            let began = std::time::Instant::now();
            let result = self.invoke(function);
            total_us.push(began.elapsed().as_secs_f64() * 1e6);
            phase_us.push(result.report.duration.as_secs_f64() * 1e6);
            assert!(
                !result.cold_start,
                "{}: a warm invoke was cold",
                function.label
            );
        }
        // CPU time of this process (the worker, its Runtime API server and log writing;
        // not the runtime's processes) per invoke.
        let platform_cpu_us = process_cpu_secs()
            .zip(cpu_before)
            .map(|(after, before)| (after - before) * 1e6 / LATENCY_INVOKES as f64);
        let switches = context_switches()
            .zip(switches_before)
            .map(|(after, before)| after.saturating_sub(before) as f64 / LATENCY_INVOKES as f64);
        total_us.sort_by(f64::total_cmp);
        phase_us.sort_by(f64::total_cmp);
        let summary = |sorted: &[f64]| {
            serde_json::json!({
                "p50": quantile(sorted, 0.5),
                "p90": quantile(sorted, 0.9),
                "p99": quantile(sorted, 0.99),
                "mean": sorted.iter().sum::<f64>() / sorted.len() as f64,
            })
        };
        eprintln!(
            "runtime_api: {}: {LATENCY_INVOKES} warm invokes one by one: p50 {:.0} µs, \
             p90 {:.0} µs, p99 {:.0} µs (REPORT Duration p50 {:.0} µs); platform CPU \
             {:.0} µs and {:.1} context switches per invoke",
            function.label,
            quantile(&total_us, 0.5),
            quantile(&total_us, 0.9),
            quantile(&total_us, 0.99),
            quantile(&phase_us, 0.5),
            platform_cpu_us.unwrap_or(f64::NAN),
            switches.unwrap_or(f64::NAN),
        );
        serde_json::json!({
            "invokes": LATENCY_INVOKES,
            "warm_invoke_us": summary(&total_us),
            "report_duration_us": summary(&phase_us),
            "platform_cpu_us_per_invoke": platform_cpu_us,
            "platform_context_switches_per_invoke": switches,
            "first_cold_invoke_ms": cold.as_secs_f64() * 1e3,
        })
    }
}

/// User plus system CPU time of this process (all its threads) so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // After the command: state is field 3, utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Context switches (voluntary and not) of this process's threads so far, from
/// `/proc/self/task/*/status` (threads that exited in between are not counted).
fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// The argument that makes this binary [`minimal_runtime`].
const MINIMAL_RUNTIME_ARG: &str = "__micro-minimal-runtime";

/// A floor to compare the Rust test function with: a runtime that does nothing but the
/// Runtime API cycle on one keep-alive connection (`/next`, then `/response` with the event
/// as the answer), with blocking I/O on one thread. Exits when the connection closes.
fn minimal_runtime() -> ! {
    use std::io::Write;
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API is set");
    let stream = std::net::TcpStream::connect(&api).expect("connect to the Runtime API");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = std::io::BufReader::new(stream);
    let next = format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: {api}\r\n\r\n");
    loop {
        if writer.write_all(next.as_bytes()).is_err() {
            std::process::exit(0);
        }
        let Some((Some(request_id), event)) = read_response(&mut reader) else {
            std::process::exit(0);
        };
        let mut message = format!(
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
             host: {api}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            event.len()
        )
        .into_bytes();
        message.extend_from_slice(&event);
        if writer.write_all(&message).is_err() || read_response(&mut reader).is_none() {
            std::process::exit(0);
        }
    }
}

/// Reads one HTTP/1.1 response that has a `content-length`: its
/// `lambda-runtime-aws-request-id` and its body. `None` when the connection ends.
fn read_response(
    reader: &mut std::io::BufReader<std::net::TcpStream>,
) -> Option<(Option<String>, Vec<u8>)> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    let mut length = 0;
    let mut request_id = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                request_id = Some(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((request_id, body))
}

/// What the `runtime_api` group reports besides criterion's figures.
enum RuntimeApiRun {
    /// The Rust test function is missing.
    Skipped,
    /// The latency distributions (`None` when criterion was not measuring).
    Ran(Option<serde_json::Value>),
}

/// Runs the `runtime_api` group; when `measuring`, also returns the latency distribution of
/// warm invokes timed one by one (and the first, cold, invoke) of each function.
fn runtime_api(c: &mut Criterion, measuring: bool) -> RuntimeApiRun {
    let Some(bootstrap) = find_bootstrap() else {
        eprintln!(
            "runtime_api: SKIPPED: the Rust test function is missing; build it with \
             `cargo build --release -p lambent-testfn-echo` or set LAMBENT_TEST_RUST_BOOTSTRAP"
        );
        return RuntimeApiRun::Skipped;
    };
    eprintln!("runtime_api: Rust test function {}", bootstrap.display());
    let this = std::env::current_exe().expect("this benchmark's path");
    let dir = tempfile::tempdir().expect("tempdir");

    let deploy = |label: &'static str, name: &str| {
        let task_root = dir.path().join(name);
        std::fs::create_dir_all(&task_root).expect("task root");
        let mut config = function_config(name);
        config.timeout = 10;
        Deployed {
            label,
            config,
            task_root,
        }
    };
    let echo = deploy("echo-rs", "bench-echo");
    std::fs::copy(&bootstrap, echo.task_root.join("bootstrap")).expect("copy the bootstrap");
    let minimal = deploy("minimal", "bench-minimal");
    let script = minimal.task_root.join("bootstrap");
    let quoted = this.display().to_string().replace('\'', r"'\''");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec '{quoted}' {MINIMAL_RUNTIME_ARG}\n"),
    )
    .expect("write the minimal bootstrap");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make the minimal bootstrap executable");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Sandbox::new and Worker::new start background tasks: they need the runtime's context.
    let worker = runtime.block_on(async {
        let uid = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(dir.path()).expect("tempdir metadata"),
        );
        let sandbox = Sandbox::new(SandboxConfig {
            mode: SandboxMode::None,
            init_program: this.clone(),
            state_dir: dir.path().join("sandbox"),
            cgroup_mount: None,
            pids_max: 1024,
            uid,
            gid: uid,
            default_network: None,
            allow_host_network: false,
            bridge_name: "lambentbench0".into(),
            bridge_subnet: (std::net::Ipv4Addr::new(10, 213, 0, 0), 16),
            extra_read_only: Vec::new(),
        })
        .expect("sandbox (mode none)");
        let hosts = RuntimeHosts::prepare(&dir.path().join("runtimes")).expect("runtime hosts");
        Worker::new(
            WorkerConfig {
                region: REGION.into(),
                idle_timeout: Duration::from_secs(600),
                max_concurrency: 8,
                opt_root: dir.path().join("opt"),
                sandbox: Arc::new(sandbox),
                // As `lambent serve` has it: START/END/REPORT lines go to a stream file.
                log_store: Some(Arc::new(
                    LogStore::open(&dir.path().join("logs"), LogLimits::default())
                        .expect("log store"),
                )),
                credentials: None,
                max_environment_age: None,
                max_concurrent_inits: 0,
            },
            hosts,
        )
    });
    let bench = InProcess {
        runtime,
        worker,
        arns: ArnContext {
            region: REGION.into(),
            account_id: ACCOUNT.into(),
        },
        payload: Bytes::from_static(br#"{"hello":"world","n":42}"#),
        invocations: std::cell::Cell::new(0),
    };

    let finish = |bench: InProcess| {
        bench
            .runtime
            .block_on(bench.worker.shutdown(Duration::from_secs(2)));
        drop(bench.worker);
        bench.runtime.shutdown_timeout(Duration::from_secs(2));
    };
    // A panic below would leave environments running: shut down first, then fail.
    let latency = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let latency = serde_json::json!({
            "echo_rs": bench.latency(&echo, measuring),
            "minimal": bench.latency(&minimal, measuring),
        });
        let mut group = c.benchmark_group("runtime_api");
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(50);
        for (name, function) in [
            ("warm_invoke", &echo),
            ("warm_invoke_minimal_runtime", &minimal),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let result = bench.invoke(function);
                    assert!(
                        !result.cold_start,
                        "{}: a warm invoke was cold",
                        function.label
                    );
                    result
                })
            });
        }
        group.finish();
        latency
    }));
    finish(bench);
    match latency {
        Ok(latency) => RuntimeApiRun::Ran(measuring.then_some(latency)),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---------------------------------------------------------------------------------------------
// results

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else three levels above this binary
/// (`target/<profile>/deps/micro-<hash>`).
fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_path_buf())
}

/// Where criterion writes: `$CRITERION_HOME`, else `<target>/criterion` (set explicitly so
/// the results step reads the same place).
fn criterion_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(dir);
    }
    target_dir()
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// One figure of `estimates.json`: the point estimate and its confidence interval, in ns.
fn estimate(estimates: &serde_json::Value, statistic: &str) -> Option<serde_json::Value> {
    let stat = &estimates[statistic];
    let interval = &stat["confidence_interval"];
    Some(serde_json::json!({
        "point_ns": stat["point_estimate"].as_f64()?,
        "lower_ns": interval["lower_bound"].as_f64()?,
        "upper_ns": interval["upper_bound"].as_f64()?,
        "confidence_level": interval["confidence_level"].as_f64()?,
    }))
}

/// Writes `bench/results/micro.json` when every benchmark measured in this run.
fn write_results(
    criterion_home: &Path,
    started: SystemTime,
    args: &[String],
    runtime_api: RuntimeApiRun,
) {
    let (skipped, latency): (Vec<&str>, _) = match runtime_api {
        RuntimeApiRun::Skipped => (
            BENCHMARKS
                .iter()
                .copied()
                .filter(|id| id.starts_with("runtime_api/"))
                .collect(),
            None,
        ),
        RuntimeApiRun::Ran(latency) => (Vec::new(), latency),
    };
    let mut benchmarks = BTreeMap::new();
    let mut missing = Vec::new();
    for id in BENCHMARKS.iter().filter(|id| !skipped.contains(id)) {
        let path = criterion_home.join(id).join("new").join("estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= started);
        let estimates: Option<serde_json::Value> = fresh
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match estimates.and_then(|e| Some((estimate(&e, "median")?, estimate(&e, "mean")?))) {
            Some((median, mean)) => {
                benchmarks.insert(
                    id.to_string(),
                    serde_json::json!({ "median": median, "mean": mean }),
                );
            }
            None => missing.push(*id),
        }
    }
    if benchmarks.is_empty() {
        return;
    }
    if !missing.is_empty() {
        eprintln!(
            "not writing bench/results/micro.json: {} of {} benchmarks did not run ({})",
            missing.len(),
            BENCHMARKS.len(),
            missing.join(", ")
        );
        return;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let results = serde_json::json!({
        "scenario": "micro",
        "machine": {
            "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default(),
        },
        "commit": git(&["rev-parse", "--short", "HEAD"]),
        "worktree_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "quick": args.iter().any(|a| a == "--quick"),
        "unit": "ns per iteration; point estimate and 95% confidence interval from criterion",
        "benchmarks": benchmarks,
        "skipped": skipped,
        "runtime_api_latency": latency,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join("micro.json");
    let text = serde_json::to_string_pretty(&results).expect("results encode") + "\n";
    match std::fs::write(&path, text) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
