//! A `lambent serve` started for a benchmark: its own data directory and port, its log in a
//! file, its credentials for signing, and the control-plane calls scenarios need (the
//! AWS CLI would do, but a benchmark should not depend on Python).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::load::{Credentials, Invoker};

/// Options of the server under test.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The `lambent` binary.
    pub binary: PathBuf,
    /// `--sandbox` value.
    pub sandbox: String,
    /// `--default-network` value, if any.
    pub network: Option<String>,
    /// Extra arguments.
    pub extra: Vec<String>,
}

/// A running server.
pub struct Server {
    child: Child,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub authority: String,
    /// Credentials from its `credentials.json`.
    pub credentials: Credentials,
    /// Where its stderr goes.
    pub log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts the server and waits until it listens.
    pub fn start(options: &ServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lambent-bench-")
            .tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("server.log");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--http-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--sandbox".into(),
            options.sandbox.clone(),
            "--bridge-name".into(),
            format!("lbb{port}"),
            "--bridge-subnet".into(),
            "10.252.0.0/16".into(),
        ];
        if let Some(network) = &options.network {
            args.push("--default-network".into());
            args.push(network.clone());
        }
        args.extend(options.extra.iter().cloned());
        let child = Command::new(&options.binary)
            .args(&args)
            .env("LAMBENT_LOG", "lambent_worker=debug,info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let mut server = Self {
            child,
            authority: format!("127.0.0.1:{port}"),
            credentials: Credentials {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                region: "us-east-1".into(),
            },
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let stdout = server.dir.path().join("stdout.log");
        loop {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            if text.contains(&format!("listening on http://127.0.0.1:{port}")) {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "lambent serve exited ({status}):\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("lambent serve did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let creds: Value = serde_json::from_str(&std::fs::read_to_string(
            server.dir.path().join("data/credentials.json"),
        )?)?;
        let field = |name: &str| {
            creds
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("credentials.json has no {name}"))
        };
        server.credentials.access_key_id = field("access_key_id")?;
        server.credentials.secret_access_key = field("secret_access_key")?;
        Ok(server)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An Invoke client for `function`.
    pub fn invoker(&self, function: &str) -> Invoker {
        Invoker::new(
            &self.authority,
            &Invoker::invocations_path(function),
            Some(self.credentials.clone()),
        )
    }

    /// A signed control-plane call; returns the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, self.authority.parse()?);
        headers.insert(http::header::CONTENT_TYPE, "application/json".parse()?);
        let signed = lambent_api::sigv4::sign(
            &lambent_api::sigv4::SignableRequest {
                method,
                raw_path: path,
                raw_query: "",
                headers: &headers,
                body: body.as_bytes(),
            },
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            &self.credentials.region,
            "lambda",
            std::time::SystemTime::now(),
        );
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .body(Full::new(Bytes::from(body)))?;
        *request.headers_mut() = headers;
        for (name, value) in signed {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Creates a function from a zip.
    pub async fn create_function(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        zip: &[u8],
        memory: u32,
        timeout: u32,
    ) -> anyhow::Result<()> {
        use base64::Engine;
        self.call(
            "POST",
            "/2015-03-31/functions",
            Some(json!({
                "FunctionName": name,
                "Runtime": runtime,
                "Handler": handler,
                "Role": "arn:aws:iam::000000000000:role/lambent-default",
                "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
                "MemorySize": memory,
                "Timeout": timeout,
            })),
        )
        .await?;
        Ok(())
    }

    /// Changes the function's configuration (a new revision: the next invoke is cold).
    pub async fn touch_function(&self, name: &str, round: u64) -> anyhow::Result<()> {
        self.call(
            "PUT",
            &format!("/2015-03-31/functions/{name}/configuration"),
            Some(json!({"Environment": {"Variables": {"BENCH_ROUND": round.to_string()}}})),
        )
        .await?;
        Ok(())
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Memory of the server process (PSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Resident memory of every environment init (outer and PID 1) this server started, KiB
    /// — the platform's part of each environment besides the server itself.
    pub fn inits_rss_kib(&self) -> (u64, usize) {
        inits_rss_of(self.pid())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Memory (PSS) of the environment inits below `server`, KiB, and how many there are.
pub fn inits_rss_of(server: u32) -> (u64, usize) {
    let mut total = 0;
    let mut count = 0;
    for pid in descendants(server) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"__lambent-sandbox-init")
        {
            total += rss_kib(pid);
            count += 1;
        }
    }
    (total, count)
}

/// Proportional set size of a process, KiB (0 if gone): its private memory plus its share
/// of pages it shares (the `lambent` binary's text, shared by the server and every init).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Every process below `root` (by parent links in /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// `MemTotal - MemAvailable`, KiB: the host's memory in use.
pub fn host_used_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("MemTotal:").saturating_sub(field("MemAvailable:"))
}

/// A zip with one executable `bootstrap`.
pub fn bootstrap_zip(binary: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(binary).with_context(|| {
        format!(
            "the echo function {} is missing (cargo build --release -p lambent-testfn-echo)",
            binary.display()
        )
    })?;
    zip_of(&[("bootstrap", &bytes, 0o755)])
}

/// A zip of `(name, contents, mode)` entries.
pub fn zip_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        for (name, contents, mode) in files {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            zip.start_file(*name, options)?;
            zip.write_all(contents)?;
        }
        zip.finish()?;
    }
    Ok(buf.into_inner())
}
