//! `lambent serve`: opens the data directory, prepares credentials and runtimes, serves the
//! API, and shuts down cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use lambent_api::sessions::Sessions;
use lambent_api::{ApiState, AuthMode};
use lambent_invoke::{AsyncSettings, Invoker};
use lambent_sandbox::{NetworkMode, Sandbox, SandboxConfig, SandboxMode};
use lambent_store::{CodeStore, SqliteStore, Store};
use lambent_types::names::ArnContext;
use lambent_worker::RoleCredentials;
use lambent_worker::{RuntimeHosts, Worker, WorkerConfig};

use crate::credentials::{self, CredentialsFile};

/// Options of `lambent serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the Lambda API.
    #[arg(long, env = "LAMBENT_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Address of the public function URL gateway.
    #[arg(long, env = "LAMBENT_HTTP_LISTEN", default_value = "127.0.0.1:9080")]
    http_listen: SocketAddr,
    /// Region reported in ARNs and to functions.
    #[arg(long, env = "LAMBENT_REGION", default_value = "us-east-1")]
    region: String,
    /// 12-digit account id used in ARNs.
    #[arg(long, env = "LAMBENT_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Development only: accept unsigned requests and any credentials.
    #[arg(long)]
    no_auth: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(
        long,
        env = "LAMBENT_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "LAMBENT_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    tls_key: Option<PathBuf>,
    /// Print `export` lines for the AWS CLI/SDKs and exit.
    #[arg(long)]
    print_credentials: bool,
    /// Seconds an idle environment is kept warm before it is stopped.
    #[arg(long, env = "LAMBENT_IDLE_TIMEOUT", default_value_t = 600)]
    idle_timeout: u64,
    /// Most invocations running at once (the account concurrency limit).
    #[arg(long, env = "LAMBENT_MAX_CONCURRENCY", default_value_t = 1000)]
    max_concurrency: usize,
    /// Most environments initializing at once for on-demand cold starts; other cold starts
    /// wait for a slot or take the first environment of their function that frees up
    /// (0: four per core).
    #[arg(long, env = "LAMBENT_MAX_CONCURRENT_INITS", default_value_t = 0)]
    max_concurrent_inits: usize,
    /// Seconds before the first retry of a failed async invocation (doubles for the second;
    /// fractions allowed).
    #[arg(long, env = "LAMBENT_ASYNC_RETRY_DELAY", default_value_t = 60.0, value_parser = parse_seconds)]
    async_retry_delay: f64,
    /// Most async events of one function running at once (reserved concurrency wins when set).
    #[arg(long, env = "LAMBENT_ASYNC_CONCURRENCY", default_value_t = 32)]
    async_concurrency: usize,
    /// Seconds an execution role's temporary credentials last (environments are replaced
    /// before then).
    #[arg(long, env = "LAMBENT_SESSION_DURATION", default_value_t = 43_200)]
    session_duration: u64,
    /// Largest async (Event) payload accepted, bytes.
    #[arg(long, env = "LAMBENT_ASYNC_MAX_PAYLOAD", default_value_t = 262_144)]
    async_max_payload: usize,
    /// Most processes and threads one execution environment may run (fork bombs stop here).
    #[arg(long, env = "LAMBENT_PIDS_LIMIT", default_value_t = 1024)]
    pids_limit: u32,
    /// Run environments without cgroup memory and process limits (only with --sandbox=none).
    #[arg(long)]
    no_cgroups: bool,
    /// How execution environments are isolated: `namespaces` (the default; needs root) or
    /// `none` (development only: functions run as host processes with the server's rights).
    #[arg(
        long,
        env = "LAMBENT_SANDBOX",
        value_enum,
        default_value = "namespaces"
    )]
    sandbox: SandboxArg,
    /// Default outbound network of functions without a `lambent:network` tag: `bridge`,
    /// `none` or `host` (default: bridge when the host supports it, else none).
    #[arg(long, env = "LAMBENT_DEFAULT_NETWORK")]
    default_network: Option<String>,
    /// Allow functions tagged `lambent:network=host` to share the host's network
    /// (development only).
    #[arg(long)]
    allow_host_network: bool,
    /// Bridge device for `bridge` networking (at most 15 characters).
    #[arg(long, env = "LAMBENT_BRIDGE", default_value = "lambent0")]
    bridge_name: String,
    /// IPv4 subnet of the bridge, CIDR.
    #[arg(long, env = "LAMBENT_BRIDGE_SUBNET", default_value = "10.213.0.0/16")]
    bridge_subnet: String,
    /// The uid sandboxed functions run as.
    #[arg(long, default_value_t = 993)]
    sandbox_uid: u32,
    /// The gid sandboxed functions run as.
    #[arg(long, default_value_t = 990)]
    sandbox_gid: u32,
    /// Seconds running invocations get to finish at shutdown before they are failed.
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
    /// Most megabytes of function logs kept on disk; the oldest log streams go first.
    #[arg(long, env = "LAMBENT_LOG_RETENTION_MB", default_value_t = 512)]
    log_retention_mb: u64,
    /// Hours function log streams are kept after their last line.
    #[arg(long, env = "LAMBENT_LOG_RETENTION_HOURS", default_value_t = 168)]
    log_retention_hours: u64,
    /// Kilobytes per second of output one environment may log (bursts of as much); output
    /// beyond it is dropped with a note. 0 disables the limit.
    #[arg(long, env = "LAMBENT_LOG_RATE_LIMIT_KB", default_value_t = 1024)]
    log_rate_limit_kb: u64,
    /// Seconds between writes of the per-minute usage counters to the store.
    #[arg(long, env = "LAMBENT_USAGE_FLUSH_SECS", default_value_t = 10)]
    usage_flush_secs: u64,
    /// Seconds an HTTP client of the function URL gateway gets to send its request headers;
    /// slower clients (slowloris) are disconnected.
    #[arg(
        long,
        env = "LAMBENT_HTTP_HEADER_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    http_header_timeout: u64,
}

/// Isolation levels of `--sandbox`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SandboxArg {
    /// Namespaces, read-only root, unprivileged uid, seccomp, cgroups.
    Namespaces,
    /// No isolation (development only).
    None,
}

fn parse_subnet(text: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/').ok_or_else(|| {
        anyhow::anyhow!("--bridge-subnet must be CIDR like 10.213.0.0/16, got {text:?}")
    })?;
    let addr = addr
        .parse()
        .with_context(|| format!("--bridge-subnet {text:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .ok_or_else(|| {
            anyhow::anyhow!("--bridge-subnet {text:?}: prefix length must be 8 to 30")
        })?;
    Ok((addr, len))
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs, data_dir: &Path) -> anyhow::Result<()> {
    init_tracing();
    if args.account_id.len() != 12 || !args.account_id.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!("--account-id must be 12 digits, got {:?}", args.account_id);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let sqlite = SqliteStore::open(&data_dir.join("lambent.db"))
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let sessions = Sessions::new(
        sqlite.secrets().clone(),
        Duration::from_secs(args.session_duration.max(1)),
    );
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(lambent_api::tls::acceptor(cert, key).map_err(|e| {
            anyhow::anyhow!(
                "{e}; --tls-cert and --tls-key take PEM files (e.g. from openssl req -x509)"
            )
        })?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", args.listen);
    let (key, created) = credentials::bootstrap_key(store.as_ref())?;
    // The bootstrap key belongs to the account root, the administrator.
    store.ensure_user(
        lambent_store::iam::ROOT_USER,
        &format!("arn:aws:iam::{}:root", args.account_id),
    )?;
    // A built-in execution role without rights, the CLI's default for new functions.
    if store.get_role(DEFAULT_ROLE)?.is_none() {
        store.create_role(
            DEFAULT_ROLE,
            &format!("arn:aws:iam::{}:role/{DEFAULT_ROLE}", args.account_id),
            "Lambent's default execution role: no rights until a policy is attached",
        )?;
    }
    let contents = CredentialsFile {
        access_key_id: key.access_key_id.clone(),
        secret_access_key: key.secret_access_key.clone(),
        region: args.region.clone(),
        endpoint: endpoint.clone(),
    };
    if args.print_credentials {
        // A running server may listen elsewhere: keep the endpoint it recorded.
        let recorded = std::fs::read(credentials::file_path(data_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CredentialsFile>(&bytes).ok());
        let contents = match recorded {
            Some(recorded) if recorded.access_key_id == contents.access_key_id => recorded,
            _ => {
                credentials::write_file(data_dir, &contents)?;
                contents
            }
        };
        print!("{}", credentials::export_lines(&contents));
        return Ok(());
    }
    let credentials_path = credentials::write_file(data_dir, &contents)?;

    let code = CodeStore::open(&data_dir.join("code"))?;
    let hosts = RuntimeHosts::prepare(&data_dir.join("runtimes"))?;
    match &hosts.python {
        Some((path, version)) => tracing::info!(
            "python runtimes run on {} (Python {version})",
            path.display()
        ),
        None => {
            tracing::warn!("no python3 found: python3.x functions will fail (set LAMBENT_PYTHON)")
        }
    }
    match &hosts.node {
        Some((path, version)) => {
            tracing::info!("nodejs runtimes run on {} (Node {version})", path.display())
        }
        None => tracing::warn!("no node found: nodejs functions will fail (set LAMBENT_NODE)"),
    }

    let logs = Arc::new(
        lambent_store::logs::LogStore::open(
            &data_dir.join("logs"),
            lambent_store::logs::LogLimits {
                max_bytes: args.log_retention_mb.saturating_mul(1024 * 1024),
                max_age: Duration::from_secs(args.log_retention_hours.saturating_mul(3600)),
                rate_bytes_per_sec: args.log_rate_limit_kb.saturating_mul(1024),
                burst_bytes: args.log_rate_limit_kb.saturating_mul(1024),
            },
        )
        .with_context(|| format!("cannot open the logs in {}", data_dir.display()))?,
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running? use --listen)",
                args.listen
            )
        })?;
    let url_listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for function URLs on {} (is another server running? use --http-listen)",
                args.http_listen
            )
        })?;
    let url_address = url_listener
        .local_addr()
        .context("cannot read the function URL listener's address")?;
    let default_network = args
        .default_network
        .as_deref()
        .map(str::parse::<NetworkMode>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--default-network: {e}"))?;
    if default_network == Some(NetworkMode::Host) && !args.allow_host_network {
        anyhow::bail!("--default-network host needs --allow-host-network");
    }
    let sandbox = Sandbox::new(SandboxConfig {
        mode: match args.sandbox {
            SandboxArg::Namespaces => SandboxMode::Namespaces,
            SandboxArg::None => SandboxMode::None,
        },
        init_program: "/proc/self/exe".into(),
        state_dir: data_dir.join("sandbox"),
        cgroup_mount: (!args.no_cgroups).then(|| "/sys/fs/cgroup".into()),
        pids_max: args.pids_limit,
        uid: args.sandbox_uid,
        gid: args.sandbox_gid,
        default_network,
        allow_host_network: args.allow_host_network,
        bridge_name: args.bridge_name.clone(),
        bridge_subnet: parse_subnet(&args.bridge_subnet)?,
        extra_read_only: hosts.interpreter_roots.clone(),
    })?;
    let mut sandbox_notes = sandbox.notes().to_vec();
    let port = listener
        .local_addr()
        .context("cannot read the API listener's address")?
        .port();
    let mut listeners = vec![listener];
    let bridge_endpoint = match sandbox.bridge_gateway() {
        Some(gateway) => {
            // Environments on the bridge reach the API at the gateway, and nothing else of
            // the host: a second listener there unless the first already covers it.
            if !args.listen.ip().is_unspecified() {
                let address = std::net::SocketAddr::from((gateway, port));
                listeners.push(tokio::net::TcpListener::bind(address).await.with_context(
                    || format!("cannot listen on the bridge gateway {address} for functions"),
                )?);
            }
            sandbox
                .allow_api_port(port)
                .context("cannot open the API port to environments")?;
            let endpoint = format!("{scheme}://{gateway}:{port}");
            sandbox_notes.push(format!(
                "functions on the bridge reach the API at {endpoint}{}",
                if tls.is_some() {
                    format!(" (the certificate must name {gateway})")
                } else {
                    String::new()
                }
            ));
            Some(endpoint)
        }
        None => None,
    };
    for note in &sandbox_notes {
        tracing::info!("{note}");
    }
    let environments_address = sandbox.bridge_gateway().map(std::net::IpAddr::V4);
    let worker = Worker::new(
        WorkerConfig {
            region: args.region.clone(),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            max_concurrency: args.max_concurrency,
            opt_root: data_dir.join("opt"),
            sandbox: Arc::new(sandbox),
            log_store: Some(logs.clone()),
            credentials: Some(Arc::new(ExecutionRoles {
                store: store.clone(),
                sessions: sessions.clone(),
                endpoint: function_endpoint(scheme, &args.listen, port),
                bridge_endpoint,
                ca_bundle: args.tls_cert.clone(),
            })),
            // Retired with a margin before their credentials expire.
            max_environment_age: Some(sessions.duration().mul_f64(0.9)),
            max_concurrent_inits: args.max_concurrent_inits,
        },
        hosts,
    );
    let arns = ArnContext {
        region: args.region.clone(),
        account_id: args.account_id.clone(),
    };
    let invoker = Invoker::new(
        store.clone(),
        code.clone(),
        worker.clone(),
        arns.clone(),
        AsyncSettings {
            retry_delay: Duration::from_secs_f64(args.async_retry_delay),
            concurrency_per_function: args.async_concurrency.max(1),
            max_payload: args.async_max_payload,
            ..AsyncSettings::default()
        },
    );
    let flusher = invoker
        .metering()
        .spawn_flusher(store.clone(), Duration::from_secs(args.usage_flush_secs));
    let metering = invoker.metering().clone();
    let event_sources = lambent_events::EventSources::start(store.clone(), invoker.clone());
    let scheduler = lambent_events::Scheduler::start(store.clone(), invoker.clone());
    let usage_store = store.clone();
    let followed_logs = logs.clone();
    let state = Arc::new(ApiState {
        store,
        code,
        invoker,
        arns,
        auth: if args.no_auth {
            AuthMode::Disabled
        } else {
            AuthMode::SigV4
        },
        concurrency_limit: args.max_concurrency,
        logs,
        sessions,
        url_port: url_address.port(),
        http_header_timeout: Duration::from_secs(args.http_header_timeout),
        connections: lambent_api::Connections::default(),
    });

    println!("Lambent listening on {endpoint}");
    if tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "serving plain HTTP on a non-loopback address");
        println!(
            "  WARNING: plain HTTP on {} — keys and payloads cross the network unencrypted. \
             Use --tls-cert/--tls-key, or listen on 127.0.0.1.",
            args.listen
        );
    }
    println!("  data directory: {}", data_dir.display());
    for note in &sandbox_notes {
        println!("  {note}");
    }
    if args.no_auth {
        println!(
            "  WARNING: --no-auth is on: requests are NOT authenticated. Development use only."
        );
    } else if created {
        println!(
            "  created credentials (shown once; also in {}):",
            credentials_path.display()
        );
        print!("{}", indent(&credentials::export_lines(&contents)));
    } else {
        println!(
            "  access key {} (secret in {}; `lambent serve --print-credentials` prints export lines)",
            contents.access_key_id,
            credentials_path.display()
        );
    }
    println!("  try: aws lambda list-functions --endpoint-url {endpoint}");

    println!(
        "  function URLs on http://{url_address}/<url-id>/ (or Host <url-id>.lambda-url.{}.localhost)",
        args.region
    );
    let (stop_urls, mut urls_stopped) = tokio::sync::watch::channel(false);
    let url_gateway = tokio::spawn(lambent_api::serve_urls(
        vec![url_listener],
        state.clone(),
        async move {
            let _ = urls_stopped.changed().await;
        },
        Duration::from_secs(args.shutdown_grace),
    ));
    lambent_api::serve(
        listeners,
        environments_address,
        state,
        tls,
        async move {
            shutdown_signal().await;
            followed_logs.close_followers();
            let _ = stop_urls.send(true);
        },
        Duration::from_secs(args.shutdown_grace),
    )
    .await;
    if let Err(e) = url_gateway.await {
        tracing::warn!("the function URL gateway ended abnormally: {e}");
    }
    tracing::info!("shutting down: stopping schedules and event-source pollers");
    scheduler.shutdown().await;
    event_sources
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    tracing::info!("shutting down: stopping execution environments");
    worker
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    flusher.abort();
    if let Err(e) = tokio::task::spawn_blocking(move || metering.flush(usage_store.as_ref()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|flushed| flushed.map_err(|e| e.to_string()))
    {
        tracing::warn!("cannot write the last usage counters to the store: {e}");
    }
    println!("Lambent stopped");
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMBENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The execution role every server has from its first start.
const DEFAULT_ROLE: &str = "lambent-default";

/// Gives environments temporary credentials for their function's execution role.
struct ExecutionRoles {
    store: Arc<dyn Store>,
    sessions: Sessions,
    /// The API as unisolated (`--sandbox none`) and `host`-network functions reach it.
    endpoint: String,
    /// The API as `bridge` functions reach it: the bridge gateway.
    bridge_endpoint: Option<String>,
    /// The server's certificate, for SDKs inside functions to trust (`AWS_CA_BUNDLE`).
    ca_bundle: Option<PathBuf>,
}

impl std::fmt::Debug for ExecutionRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionRoles")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RoleCredentials for ExecutionRoles {
    fn variables(
        &self,
        config: &lambent_types::FunctionConfig,
        network: NetworkMode,
    ) -> Vec<(String, String)> {
        // `none` functions cannot reach the API at all; they get the host address anyway.
        let endpoint = match (network, &self.bridge_endpoint) {
            (NetworkMode::Bridge, Some(bridge)) => bridge,
            _ => &self.endpoint,
        };
        let mut vars = vec![("AWS_ENDPOINT_URL".to_string(), endpoint.clone())];
        if let Some(ca) = &self.ca_bundle {
            vars.push(("AWS_CA_BUNDLE".to_string(), ca.display().to_string()));
        }
        match self.store.get_role_by_arn(&config.role) {
            Ok(Some(role)) => {
                let creds = self.sessions.issue(&role.arn, &config.name);
                vars.extend([
                    ("AWS_ACCESS_KEY_ID".to_string(), creds.access_key_id),
                    ("AWS_SECRET_ACCESS_KEY".to_string(), creds.secret_access_key),
                    ("AWS_SESSION_TOKEN".to_string(), creds.session_token),
                ]);
            }
            Ok(None) => tracing::warn!(
                function = %config.name, role = %config.role,
                "the execution role does not exist: the environment gets no credentials"
            ),
            Err(e) => {
                tracing::error!(function = %config.name, "cannot read the execution role: {e}")
            }
        }
        vars
    }
}

/// The API address as a host process reaches it (a wildcard listen address means loopback;
/// `port` is the bound one, for `--listen …:0`).
fn function_endpoint(scheme: &str, listen: &std::net::SocketAddr, port: u16) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{port}")
}

/// A non-negative number of seconds, at most a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "expected seconds between 0 and 86400, got {text:?}"
        )),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutdown requested");
}
