//! Shared setup for the aws-sdk-rust contract tests: a real `lambent serve` per test and
//! a stock `aws_sdk_lambda` client pointed at it.
//!
//! Each test starts its own server (`LAMBENT_BIN`, else `<target dir>/debug/lambent`;
//! run `cargo build -p lambent` first) on a free loopback port with a temporary data
//! directory, reads the credentials it writes, and talks to it with an unmodified SDK
//! client pointed at it with `endpoint_url`. The client is wired with a plain-HTTP
//! connector and a tokio sleep (the server speaks HTTP on loopback and this crate builds
//! no TLS stack; see `Cargo.toml`) and has retries off, so every answer is seen as sent.
//!
//! Each test file is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::io::{Cursor, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::http::{HttpRequest, HttpResponse};
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::{
    AsyncSleep, BehaviorVersion, Credentials, Region, SharedAsyncSleep, SharedHttpClient, Sleep,
};
use aws_sdk_lambda::error::ConnectorError;
use aws_sdk_lambda::primitives::{Blob, SdkBody};
use aws_sdk_lambda::types::{
    Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime, State,
};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector as HyperHttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

pub const ROLE: &str = "arn:aws:iam::000000000000:role/lambent-sdk-tests";
pub const ECHO_PY: &str =
    "def handler(event, context):\n    return {\"echo\": event, \"fn\": context.function_name}\n";
pub const RAISE_PY: &str = "def handler(event, context):\n    raise ValueError(\"boom\")\n";
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one HTTP exchange, so a hung server fails the test instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The server under test

/// What `lambent serve` writes to `<data dir>/credentials.json`.
pub struct ServerCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub endpoint: String,
}

/// A running `lambent serve`; stopped with SIGTERM (then waited for) on drop.
pub struct Server {
    pub child: Child,
    pub data_dir: tempfile::TempDir,
    pub log_path: PathBuf,
    pub creds: ServerCredentials,
}

/// The workspace's target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root) if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        }
        _ => workspace.join("target"),
    }
}

/// The server binary: `LAMBENT_BIN`, else `<target dir>/debug/lambent`.
pub fn lambent_bin() -> PathBuf {
    match std::env::var_os("LAMBENT_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => target_dir().join("debug").join("lambent"),
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts `lambent serve` on a free port and waits until it accepts connections
    /// and has written its credentials.
    pub fn start() -> Server {
        let bin = lambent_bin();
        assert!(
            bin.is_file(),
            "lambent binary not found at {}: run `cargo build -p lambent` first \
             (tests/run.sh builds before testing), or set LAMBENT_BIN",
            bin.display()
        );
        let data_dir = tempfile::Builder::new()
            .prefix("lambent-sdk-rust-")
            .tempdir()
            .expect("create a temporary data dir");
        let log_path = data_dir.path().join("server.log");
        let log = fs::File::create(&log_path).expect("create the server log");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            // A function URL port of its own too: tests run servers in parallel.
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            // Sandboxed (the default), with a bridge of its own: tests run servers in parallel.
            .arg("--bridge-name")
            .arg(format!("lbs{port}"))
            .arg("--bridge-subnet")
            .arg(format!("10.{}.{}.0/24", 100 + port % 100, port / 100 % 250))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut server = Server {
            child,
            data_dir,
            log_path,
            creds: ServerCredentials {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                region: String::new(),
                endpoint: String::new(),
            },
        };

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().expect("poll the server") {
                panic!(
                    "lambent serve exited with {status} before listening:\n{}",
                    server.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lambent serve did not accept connections on {addr} within {STARTUP_TIMEOUT:?}:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let creds_path = server.data_dir.path().join("data").join("credentials.json");
        let text = loop {
            // Written before the listener opens; allow for a writer that is not atomic.
            if let Ok(text) = fs::read_to_string(&creds_path)
                && serde_json::from_str::<serde_json::Value>(&text).is_ok()
            {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not written:\n{}",
                creds_path.display(),
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let json: serde_json::Value = serde_json::from_str(&text).expect("credentials.json");
        let field = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("credentials.json has no string {name:?}: {text}"))
                .to_owned()
        };
        server.creds = ServerCredentials {
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            region: field("region"),
            endpoint: field("endpoint"),
        };
        assert_eq!(server.creds.region, "us-east-1");
        assert_eq!(
            server.creds.endpoint.trim_end_matches('/'),
            format!("http://{addr}"),
            "endpoint in credentials.json"
        );
        // Functions need an execution role that exists; the CLI creates it as the root.
        let role = ROLE.rsplit('/').next().unwrap_or(ROLE);
        let created = Command::new(&bin)
            .arg("--data-dir")
            .arg(server.data_dir.path().join("data"))
            .args(["admin", "role", "create", role])
            .output()
            .unwrap_or_else(|e| panic!("run {} admin role create: {e}", bin.display()));
        assert!(
            created.status.success(),
            "lambent admin role create {role}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        server
    }

    /// An SDK client for this server with its credentials.
    pub fn client(&self) -> Client {
        sdk_client(
            &self.creds.endpoint,
            &self.creds.access_key_id,
            &self.creds.secret_access_key,
        )
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("lambent serve ignored SIGTERM for 20 s; killing it");
                let _ = self.child.kill();
            }
        }
        let status = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- lambent serve ({status:?}), log tail ---\n{}\n---",
                self.log_tail()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The SDK client

/// A plain-HTTP/1 connector for the SDK over hyper-util's pooled client.
///
/// The SDK's own `aws-smithy-http-client` would also work (`Builder::new().build_http()`),
/// but it always compiles h2, tower and rustls' certificate crates and turns on hyper's
/// `http2` feature for the whole workspace; this keeps the dev-dependency graph small.
#[derive(Clone)]
pub struct PlainHttp {
    client: HyperClient<HyperHttpConnector, SdkBody>,
}

impl fmt::Debug for PlainHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainHttp")
    }
}

impl HttpConnector for PlainHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
                .await
                .map_err(|e| ConnectorError::timeout(e.into()))?
                .map_err(|e| {
                    if e.is_connect() {
                        ConnectorError::io(e.into())
                    } else {
                        ConnectorError::other(e.into(), None)
                    }
                })?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

pub fn plain_http_client() -> SharedHttpClient {
    let connector = SharedHttpConnector::new(PlainHttp {
        client: HyperClient::builder(TokioExecutor::new()).build_http(),
    });
    http_client_fn(move |_settings, _components| connector.clone())
}

/// The SDK's sleep on tokio's timer. (The SDK's `rt-tokio` feature would provide one, but
/// it also enables `aws-smithy-types/rt-tokio`, whose tokio-util dependency changes the
/// features of futures-sink for the whole workspace and forces a rebuild of every crate
/// that uses hyper-util when the workspace's tests are built together.)
#[derive(Debug)]
pub struct TokioSleep;

impl AsyncSleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(tokio::time::sleep(duration))
    }
}

/// A stock `aws_sdk_lambda` client: static credentials, us-east-1, latest behavior
/// version, `endpoint_url`; retries off so that every server answer is seen as sent.
pub fn sdk_client(endpoint: &str, access_key_id: &str, secret_access_key: &str) -> Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "lambent-sdk-tests",
        ))
        .endpoint_url(endpoint)
        .http_client(plain_http_client())
        .sleep_impl(SharedAsyncSleep::new(TokioSleep))
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

// ---------------------------------------------------------------------------
// Helpers

/// A deflated zip holding `app.py` (mode 0644).
pub fn zip_of(app_py: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    zip.start_file("app.py", options).expect("start app.py");
    zip.write_all(app_py.as_bytes()).expect("write app.py");
    zip.finish().expect("finish zip").into_inner()
}

pub fn sha256_b64(data: &[u8]) -> String {
    B64.encode(Sha256::digest(data))
}

pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub async fn create_python(client: &Client, name: &str, zip: &[u8]) -> FunctionConfiguration {
    let out = client
        .create_function()
        .function_name(name)
        .runtime(Runtime::Python312)
        .role(ROLE)
        .handler("app.handler")
        .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
        .timeout(5)
        .memory_size(256)
        .environment(
            Environment::builder()
                .variables("GREETING", "hello")
                .variables("MODE", "sdk-rust")
                .build(),
        )
        .send()
        .await;
    match out {
        Ok(out) => function_configuration_of_create(out),
        Err(e) => panic!(
            "create_function {name}: {}",
            aws_sdk_lambda::error::DisplayErrorContext(&e)
        ),
    }
}

/// `CreateFunctionOutput` has the same fields as `FunctionConfiguration`; rebuild one
/// so the same assertions serve create, get and get-configuration.
pub fn function_configuration_of_create(
    out: aws_sdk_lambda::operation::create_function::CreateFunctionOutput,
) -> FunctionConfiguration {
    FunctionConfiguration::builder()
        .set_function_name(out.function_name)
        .set_function_arn(out.function_arn)
        .set_runtime(out.runtime)
        .set_role(out.role)
        .set_handler(out.handler)
        .set_code_size(Some(out.code_size))
        .set_code_sha256(out.code_sha256)
        .set_timeout(out.timeout)
        .set_memory_size(out.memory_size)
        .set_last_modified(out.last_modified)
        .set_version(out.version)
        .set_environment(out.environment)
        .set_revision_id(out.revision_id)
        .set_state(out.state)
        .set_last_update_status(out.last_update_status)
        .build()
}

/// Checks every field of a configuration created by `create_python`.
pub fn assert_configuration(cfg: &FunctionConfiguration, name: &str, zip: &[u8], timeout: i32) {
    assert_eq!(cfg.function_name(), Some(name));
    let arn = cfg.function_arn().expect("FunctionArn");
    let (prefix, account_and_rest) = arn.split_at("arn:aws:lambda:us-east-1:".len());
    assert_eq!(prefix, "arn:aws:lambda:us-east-1:", "FunctionArn {arn}");
    assert_eq!(
        account_and_rest.get(12..),
        Some(format!(":function:{name}").as_str()),
        "FunctionArn {arn}"
    );
    assert!(
        account_and_rest[..12].bytes().all(|b| b.is_ascii_digit()),
        "account id in {arn}"
    );
    assert_eq!(cfg.code_sha256(), Some(sha256_b64(zip).as_str()));
    assert_eq!(cfg.code_size(), zip.len() as i64);
    assert_eq!(cfg.state(), Some(&State::Active));
    assert_eq!(
        cfg.last_update_status(),
        Some(&LastUpdateStatus::Successful)
    );
    assert_eq!(cfg.version(), Some("$LATEST"));
    assert_eq!(cfg.runtime(), Some(&Runtime::Python312));
    assert_eq!(cfg.handler(), Some("app.handler"));
    assert_eq!(cfg.role(), Some(ROLE));
    assert_eq!(cfg.timeout(), Some(timeout));
    assert_eq!(cfg.memory_size(), Some(256));
    let vars = cfg
        .environment()
        .and_then(|e| e.variables())
        .expect("Environment.Variables");
    assert_eq!(vars.len(), 2, "{vars:?}");
    assert_eq!(vars.get("GREETING").map(String::as_str), Some("hello"));
    assert_eq!(vars.get("MODE").map(String::as_str), Some("sdk-rust"));
    assert_last_modified(cfg.last_modified());
    assert!(
        cfg.revision_id().is_some_and(|r| !r.is_empty()),
        "RevisionId is empty"
    );
}

/// Lambda's `LastModified` format: `2024-01-01T00:00:00.000+0000`.
pub fn assert_last_modified(last_modified: Option<&str>) {
    let value = last_modified.expect("LastModified");
    assert!(!value.is_empty(), "LastModified is empty");
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
    );
    if let Err(e) = time::OffsetDateTime::parse(value, &format) {
        panic!("LastModified {value:?} does not parse: {e}");
    }
}

pub fn payload_json(payload: Option<&Blob>) -> serde_json::Value {
    let bytes = payload.expect("Payload").as_ref();
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("payload {:?}: {e}", String::from_utf8_lossy(bytes)))
}
