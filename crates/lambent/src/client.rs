//! The everyday CLI client: `lambent deploy`, `invoke`, `ls`, `rm` and `usage`.
//!
//! It talks to a running `lambent serve` through the Lambda REST API, signing every request with
//! SigV4 (service `lambda`) over plain HTTP. The endpoint and credentials are discovered as
//! follows:
//!
//! - endpoint: `LAMBENT_ENDPOINT`, else the `endpoint` field of `<data dir>/credentials.json`,
//!   else `http://127.0.0.1:9000`;
//! - credentials: `<data dir>/credentials.json` (written by `lambent serve`), else
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (region from `AWS_REGION`,
//!   `AWS_DEFAULT_REGION`, default `us-east-1`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lambent_api::sigv4;
use serde::Deserialize;
use serde_json::{Map, Value, json};

mod admin;
mod apis;
mod queue;
mod sources;

/// Where the CLI looks for the server when nothing says otherwise.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
/// Region used when neither the credentials file nor the environment names one.
const DEFAULT_REGION: &str = "us-east-1";
/// Execution role given to functions created without `--role`.
const DEFAULT_ROLE: &str = "arn:aws:iam::000000000000:role/lambent-default";
/// The file `lambent serve` writes into its data directory.
const CREDENTIALS_FILE: &str = "credentials.json";
/// SigV4 signing name of the Lambda API.
const SIGNING_SERVICE: &str = "lambda";
/// Path prefix of the function operations.
const FUNCTIONS_PATH: &str = "/2015-03-31/functions";
/// Zips at least this big get progress lines on stderr.
const BIG_ZIP_BYTES: usize = 1024 * 1024;
/// Lambda's limit on a directly uploaded zip.
const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;
/// Width the `ls` table must fit in.
const TABLE_WIDTH: usize = 100;
/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times to retry a configuration update that found another update running (409).
const CONFLICT_RETRIES: u32 = 10;
/// Pause between those retries.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(500);

/// How command results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// JSON on stdout, shaped like the Lambda API's responses.
    Json,
}

/// Commands that deploy, invoke, list and delete functions on a running `lambent serve`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Create or update a function from a directory or a .zip file.
    Deploy(DeployArgs),
    /// Invoke a function and print its response.
    Invoke(InvokeArgs),
    /// List functions.
    Ls(LsArgs),
    /// Delete functions.
    Rm(RmArgs),
    /// Show invocations, errors, throttles, cold starts and GB-seconds per function.
    Usage(UsageArgs),
    /// Print a function's log (all its log streams, by time), or follow it live.
    Logs(LogsArgs),
    /// List a function's queued and failed asynchronous events.
    Events(queue::EventsArgs),
    /// Manage named broker connections (destinations and event sources use them).
    #[command(subcommand)]
    Connection(queue::ConnectionCommand),
    /// Manage schedules that fire functions on rate, cron and at expressions.
    #[command(subcommand)]
    Schedule(sources::ScheduleCommand),
    /// Manage webhook endpoints for S3-style bucket notifications.
    #[command(subcommand, name = "s3-source")]
    S3Source(sources::S3SourceCommand),
    /// Administer users, access keys, policies, roles; read the audit log.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Manage HTTP and WebSocket APIs: routes to functions, authorizers, stages, deployments.
    #[command(subcommand)]
    Api(apis::ApiCommand),
}

/// Arguments of `lambent logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Function name.
    pub name: String,
    /// Keep printing lines as the function writes them, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines since then: a time ago (90s, 30m, 1h, 7d) or epoch seconds.
    #[arg(long, value_name = "10m|EPOCH", value_parser = parse_since, default_value = "10m")]
    pub since: u64,
    /// Only lines matching this filter pattern (terms and "quoted phrases", all required).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
}

/// Arguments of `lambent deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// A directory to zip (everything but .git, keeping permissions) or a .zip file.
    pub path: PathBuf,
    /// Function name ([A-Za-z0-9-_], at most 64 characters).
    #[arg(long)]
    pub name: String,
    /// Runtime, e.g. python3.12, nodejs20.x, provided.al2023 (required to create).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Handler, e.g. app.handler, index.handler, bootstrap (required to create).
    #[arg(long)]
    pub handler: Option<String>,
    /// Timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// Memory size in MB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u32>,
    /// Environment variable (repeatable); replaces the function's whole environment.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Execution role ARN (default: arn:aws:iam::000000000000:role/lambent-default).
    #[arg(long, value_name = "ARN")]
    pub role: Option<String>,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
}

/// Arguments of `lambent invoke`.
#[derive(Debug, Clone, clap::Args)]
pub struct InvokeArgs {
    /// Function name, NAME:QUALIFIER or ARN.
    pub name: String,
    /// Event JSON, or @FILE to read it from a file (@- reads stdin); default {}.
    #[arg(long, value_name = "JSON|@FILE")]
    pub payload: Option<String>,
    /// Queue the event and return at once (invocation type Event).
    #[arg(long = "async", conflicts_with = "log")]
    pub asynchronous: bool,
    /// Print the tail of the invocation's log to stderr.
    #[arg(long)]
    pub log: bool,
}

/// Arguments of `lambent ls`.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {}

/// Arguments of `lambent rm`.
#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// Names or ARNs of the functions to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Arguments of `lambent usage`.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// Function name (default: every function with usage).
    pub name: Option<String>,
    /// Only usage since then: a time ago (90s, 30m, 1h, 7d) or epoch seconds (default: all).
    #[arg(long, value_name = "1h|30m|EPOCH", value_parser = parse_since)]
    pub since: Option<u64>,
}

/// Runs one client subcommand against the server found from `data_dir` and the environment.
pub async fn run(
    command: ClientCommand,
    data_dir: &Path,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let config = ClientConfig::discover(data_dir, |key| std::env::var(key).ok())?;
    let client = LambdaClient::new(config);
    match command {
        ClientCommand::Deploy(args) => {
            let outcome = deploy(&client, &args).await?;
            print_deploy(&outcome, output)
        }
        ClientCommand::Invoke(args) => {
            let payload = read_payload(&PayloadArg::parse(args.payload.as_deref()))?;
            let result = invoke(&client, &args, payload).await?;
            print_invoke(&result, output)?;
            match result.function_error {
                Some(kind) => Err(FunctionFailed {
                    function: args.name,
                    kind,
                }
                .into()),
                None => Ok(()),
            }
        }
        ClientCommand::Ls(LsArgs {}) => {
            let functions = list_functions(&client).await?;
            match output {
                OutputFormat::Json => print_json(&Value::Array(functions)),
                OutputFormat::Text => write_stdout(render_table(&functions).as_bytes()),
            }
        }
        ClientCommand::Rm(args) => remove(&client, &args.names, output).await,
        ClientCommand::Logs(args) => logs(&client, &args, output).await,
        ClientCommand::Usage(args) => {
            let usage = get_usage(&client, &args).await?;
            match output {
                OutputFormat::Json => print_json(&usage),
                OutputFormat::Text => {
                    let text = render_usage(&usage) + &queue::render_queues(&usage);
                    write_stdout(text.as_bytes())
                }
            }
        }
        ClientCommand::Events(args) => queue::events(&client, &args, output).await,
        ClientCommand::Connection(command) => queue::connection(&client, &command, output).await,
        ClientCommand::Schedule(command) => sources::schedule(&client, &command, output).await,
        ClientCommand::S3Source(command) => sources::s3_source(&client, &command, output).await,
        ClientCommand::Admin(command) => admin::run(&client, &command, output).await,
        ClientCommand::Api(command) => apis::run(&client, &command, output).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration discovery

/// Keys used to sign requests.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Where the credentials came from, for error hints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CredentialSource {
    File(PathBuf),
    Environment,
}

/// A plain-HTTP server address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `http://host[:port]`.
    origin: String,
    /// The `Host` header value: `host[:port]` as written.
    host: String,
    /// A path prefix without trailing slash, usually empty.
    base_path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]`.
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid endpoint URL '{url}'"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                bail!("endpoint '{url}': the lambent CLI speaks plain HTTP only; use http://")
            }
            _ => bail!("endpoint '{url}' must look like http://host:port"),
        }
        let authority = uri
            .authority()
            .map(http::uri::Authority::as_str)
            .filter(|authority| !authority.is_empty() && !authority.contains('@'))
            .ok_or_else(|| anyhow!("endpoint '{url}' must look like http://host:port"))?;
        if uri.query().is_some() {
            bail!("endpoint '{url}' must not have a query string");
        }
        Ok(Self {
            origin: format!("http://{authority}"),
            host: authority.to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.base_path)
    }
}

/// `<data dir>/credentials.json` as `lambent serve` writes it.
#[derive(Deserialize)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
}

/// Everything needed to reach and authenticate to the server.
#[derive(Debug, Clone)]
struct ClientConfig {
    endpoint: Endpoint,
    credentials: Credentials,
    source: CredentialSource,
}

impl ClientConfig {
    /// Finds the endpoint and credentials; `env` reads an environment variable.
    fn discover(data_dir: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = |key: &str| env(key).filter(|value| !value.trim().is_empty());
        let path = data_dir.join(CREDENTIALS_FILE);
        let file = read_credentials_file(&path)?;

        let endpoint_url = env("LAMBENT_ENDPOINT")
            .or_else(|| file.as_ref().and_then(|f| f.endpoint.clone()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = Endpoint::parse(&endpoint_url)?;
        let env_region = || {
            env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| DEFAULT_REGION.to_owned())
        };

        if let Some(file) = file {
            let region = file
                .region
                .filter(|r| !r.is_empty())
                .unwrap_or_else(env_region);
            return Ok(Self {
                endpoint,
                credentials: Credentials {
                    access_key_id: file.access_key_id,
                    secret_access_key: file.secret_access_key,
                    region,
                },
                source: CredentialSource::File(path),
            });
        }
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self {
                endpoint,
                credentials: Credentials {
                    access_key_id,
                    secret_access_key,
                    region: env_region(),
                },
                source: CredentialSource::Environment,
            }),
            (Some(_), None) | (None, Some(_)) => bail!(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together ({} does not \
                 exist)",
                path.display()
            ),
            (None, None) => bail!(
                "no credentials: {} does not exist and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY \
                 are not set\nhint: start the server with `lambent serve` (it writes that file), \
                 or point --data-dir / LAMBENT_DATA_DIR at the server's data directory",
                path.display()
            ),
        }
    }
}

/// Reads the credentials file; `None` when it does not exist.
fn read_credentials_file(path: &Path) -> anyhow::Result<Option<CredentialsFile>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: CredentialsFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid credentials file (expected access_key_id and secret_access_key)",
            path.display()
        )
    })?;
    Ok(Some(file))
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One API request before signing.
struct Call {
    method: Method,
    /// Percent-encoded path below the endpoint's base path.
    path: String,
    /// Encoded query string without `?`.
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn new(method: Method, path: String) -> Self {
        Self {
            method,
            path,
            query: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    fn query(mut self, query: String) -> Self {
        self.query = query;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> anyhow::Result<Self> {
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("invalid value for header {name}"))?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    fn json(mut self, body: &Value) -> anyhow::Result<Self> {
        self.body = Bytes::from(serde_json::to_vec(body)?);
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(self)
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Bytes::from(body);
        self
    }
}

/// A response, fully read.
#[derive(Debug)]
struct ApiResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl ApiResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the server answered {} with a body that is not JSON",
                self.status
            )
        })
    }
}

/// An error answered by the server, AWS-shaped.
#[derive(Debug)]
struct ApiError {
    error_type: String,
    message: String,
    hint: Option<String>,
}

impl ApiError {
    /// Reads the error type (header `x-amzn-ErrorType`, else the body) and message.
    fn from_response(response: &ApiResponse, source: &CredentialSource) -> Self {
        let body: Option<Map<String, Value>> = serde_json::from_slice(&response.body).ok();
        let body_str = |keys: &[&str]| {
            keys.iter().find_map(|key| {
                body.as_ref()
                    .and_then(|b| b.get(*key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
        };
        let error_type = response
            .header("x-amzn-errortype")
            .map(str::to_owned)
            .or_else(|| body_str(&["__type", "code", "Code"]))
            .map(|raw| clean_error_type(&raw))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("HTTP {}", response.status.as_u16()));
        let message = body_str(&["Message", "message", "errorMessage"])
            .or_else(|| {
                let text = String::from_utf8_lossy(&response.body).trim().to_owned();
                (!text.is_empty()).then(|| truncate_chars(&text, 500))
            })
            .unwrap_or_else(|| {
                response
                    .status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_owned()
            });
        let hint = hint_for(response.status, source);
        Self {
            error_type,
            message,
            hint,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// `Type:http://…` and `aws.protocol#Type` both mean `Type`.
fn clean_error_type(raw: &str) -> String {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim().to_owned()
}

/// A hint worth printing under an error with this status.
fn hint_for(status: StatusCode, source: &CredentialSource) -> Option<String> {
    match status.as_u16() {
        401 | 403 => Some(match source {
            CredentialSource::File(path) => format!(
                "the server rejected the credentials in {}; check that --data-dir / \
                 LAMBENT_DATA_DIR is the directory `lambent serve` uses and that the clock is \
                 right",
                path.display()
            ),
            CredentialSource::Environment => "the server rejected AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY; use the keys `lambent serve` printed, or point \
                 LAMBENT_DATA_DIR at its data directory"
                .to_owned(),
        }),
        413 => Some("the request is larger than the server accepts".to_owned()),
        429 => Some("the function is throttled; retry later".to_owned()),
        500..=599 => Some("see the `lambent serve` log for details".to_owned()),
        _ => None,
    }
}

/// A function that ran and reported an error.
#[derive(Debug)]
struct FunctionFailed {
    function: String,
    kind: String,
}

impl fmt::Display for FunctionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "function {} failed (X-Amz-Function-Error: {})",
            self.function, self.kind
        )
    }
}

impl std::error::Error for FunctionFailed {}

/// A SigV4-signing Lambda API client over plain HTTP.
struct LambdaClient {
    http: Client<HttpConnector, Full<Bytes>>,
    config: ClientConfig,
}

impl LambdaClient {
    fn new(config: ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Self { http, config }
    }

    /// Signs and sends a request; any HTTP status is returned as a response.
    async fn send(&self, call: Call) -> anyhow::Result<ApiResponse> {
        let endpoint = &self.config.endpoint;
        let path = format!("{}{}", endpoint.base_path, call.path);
        let mut headers = call.headers;
        headers.insert(HOST, HeaderValue::from_str(&endpoint.host)?);
        let signable = sigv4::SignableRequest {
            method: call.method.as_str(),
            raw_path: &path,
            raw_query: &call.query,
            headers: &headers,
            body: &call.body,
        };
        let credentials = &self.config.credentials;
        let signature = sigv4::sign(
            &signable,
            &credentials.access_key_id,
            &credentials.secret_access_key,
            &credentials.region,
            SIGNING_SERVICE,
            SystemTime::now(),
        );
        for (name, value) in signature {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(&value)?,
            );
        }
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("lambent-cli/", env!("CARGO_PKG_VERSION"))),
        );

        let query = if call.query.is_empty() {
            String::new()
        } else {
            format!("?{}", call.query)
        };
        let mut request = Request::builder()
            .method(call.method)
            .uri(format!("{}{path}{query}", endpoint.origin))
            .body(Full::new(call.body))?;
        *request.headers_mut() = headers;

        let response = self.http.request(request).await.map_err(|err| {
            let detail = error_chain(&err);
            if err.is_connect() {
                anyhow!(
                    "cannot connect to lambent at {endpoint}: {detail}\nhint: start it with \
                     `lambent serve`, or set LAMBENT_ENDPOINT to where it listens"
                )
            } else {
                anyhow!("request to {endpoint} failed: {detail}")
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("reading the response from {endpoint}"))?
            .to_bytes();
        Ok(ApiResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and turns any non-2xx answer into an [`ApiError`].
    async fn send_ok(&self, call: Call) -> anyhow::Result<ApiResponse> {
        let response = self.send(call).await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(ApiError::from_response(&response, &self.config.source).into())
        }
    }
}

/// An error and its sources, joined with `: ` (hyper's top-level messages say little).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(next) = source {
        parts.push(next.to_string());
        source = next.source();
    }
    parts.join(": ")
}

/// `/2015-03-31/functions/<encoded name>` plus `suffix`.
fn function_path(name: &str, suffix: &str) -> String {
    format!(
        "{FUNCTIONS_PATH}/{}{suffix}",
        sigv4::uri_encode(name.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// deploy

/// What `deploy` did.
#[derive(Debug)]
struct DeployOutcome {
    created: bool,
    configuration: Value,
}

/// Creates the function, or updates its code (and configuration when flags ask for it).
async fn deploy(client: &LambdaClient, args: &DeployArgs) -> anyhow::Result<DeployOutcome> {
    validate_function_name(&args.name)?;
    let zip = load_code(&args.path).await?;
    if zip.len() >= BIG_ZIP_BYTES {
        eprintln!(
            "uploading {} to {}",
            human_size(zip.len() as u64),
            client.config.endpoint
        );
    }
    if zip.len() > MAX_UPLOAD_BYTES {
        eprintln!(
            "warning: the zip is larger than Lambda's {} upload limit; the server may refuse it",
            human_size(MAX_UPLOAD_BYTES as u64)
        );
    }
    match get_function(client, &args.name).await? {
        None => Ok(DeployOutcome {
            created: true,
            configuration: create_function(client, args, &zip).await?,
        }),
        Some(current) => Ok(DeployOutcome {
            created: false,
            configuration: update_function(client, args, &zip, &current).await?,
        }),
    }
}

/// Checks a bare function name: `[A-Za-z0-9-_]{1,64}`.
fn validate_function_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        bail!("invalid function name '{name}': use 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

/// The zip to upload: a directory zipped in memory, or a .zip file's bytes.
async fn load_code(path: &Path) -> anyhow::Result<Vec<u8>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || load_code_blocking(&path))
        .await
        .context("the zipping task failed")?
}

fn load_code_blocking(path: &Path) -> anyhow::Result<Vec<u8>> {
    let metadata = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_dir() {
        let zip = zip_directory(path)?;
        if zip.len() >= BIG_ZIP_BYTES {
            eprintln!(
                "zipped {}: {}",
                path.display(),
                human_size(zip.len() as u64)
            );
        }
        return Ok(zip);
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !(bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")) {
        bail!("{} is neither a directory nor a .zip file", path.display());
    }
    Ok(bytes)
}

/// A file or directory to put in the zip.
struct ZipEntry {
    /// Path inside the zip, `/`-separated, without a leading slash.
    name: String,
    source: PathBuf,
    is_dir: bool,
    mode: u32,
}

/// Zips a directory: paths relative to it, unix permission bits kept, `.git` left out.
/// Entries are sorted and timestamps fixed, so the same tree gives the same bytes (and the
/// same CodeSha256).
fn zip_directory(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut entries = Vec::new();
    let mut visited = HashSet::new();
    collect_entries(dir, "", &mut entries, &mut visited)?;

    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for entry in entries {
        let options = options.unix_permissions(entry.mode);
        if entry.is_dir {
            writer
                .add_directory(entry.name.as_str(), options)
                .with_context(|| format!("zipping {}", entry.source.display()))?;
        } else {
            writer
                .start_file(entry.name.as_str(), options)
                .with_context(|| format!("zipping {}", entry.source.display()))?;
            let mut file = File::open(&entry.source)
                .with_context(|| format!("cannot read {}", entry.source.display()))?;
            io::copy(&mut file, &mut writer)
                .with_context(|| format!("zipping {}", entry.source.display()))?;
        }
    }
    Ok(writer.finish().context("finishing the zip")?.into_inner())
}

/// Walks `dir` depth-first in name order, following symbolic links (each real directory once).
fn collect_entries(
    dir: &Path,
    prefix: &str,
    entries: &mut Vec<ZipEntry>,
    visited: &mut HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let real = fs::canonicalize(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !visited.insert(real) {
        return Ok(());
    }
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    children.sort_by_key(fs::DirEntry::file_name);

    for child in children {
        let file_name = child.file_name();
        if file_name == ".git" {
            continue;
        }
        let source = child.path();
        let file_name = file_name
            .to_str()
            .ok_or_else(|| anyhow!("{} is not a UTF-8 file name", source.display()))?;
        let name = format!("{prefix}{file_name}");
        let metadata =
            fs::metadata(&source).with_context(|| format!("cannot read {}", source.display()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.is_dir() {
            entries.push(ZipEntry {
                name: format!("{name}/"),
                source: source.clone(),
                is_dir: true,
                mode,
            });
            collect_entries(&source, &format!("{name}/"), entries, visited)?;
        } else if metadata.is_file() {
            entries.push(ZipEntry {
                name,
                source,
                is_dir: false,
                mode,
            });
        }
    }
    Ok(())
}

/// GetFunction: `Some(Configuration)`, or `None` when the function does not exist.
async fn get_function(client: &LambdaClient, name: &str) -> anyhow::Result<Option<Value>> {
    let response = client
        .send(Call::new(Method::GET, function_path(name, "")))
        .await?;
    if response.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status.is_success() {
        return Err(ApiError::from_response(&response, &client.config.source).into());
    }
    let body = response.json()?;
    Ok(Some(body.get("Configuration").cloned().unwrap_or(body)))
}

/// CreateFunction with the zip inline.
async fn create_function(
    client: &LambdaClient,
    args: &DeployArgs,
    zip: &[u8],
) -> anyhow::Result<Value> {
    let (Some(runtime), Some(handler)) = (&args.runtime, &args.handler) else {
        bail!(
            "function {} does not exist yet: --runtime and --handler are required to create it \
             (e.g. --runtime python3.12 --handler app.handler, or --runtime provided.al2023 \
             --handler bootstrap)",
            args.name
        );
    };
    let mut body = Map::new();
    body.insert("FunctionName".into(), json!(args.name));
    body.insert("Runtime".into(), json!(runtime));
    body.insert("Handler".into(), json!(handler));
    body.insert(
        "Role".into(),
        json!(args.role.as_deref().unwrap_or(DEFAULT_ROLE)),
    );
    body.insert("Code".into(), json!({ "ZipFile": BASE64.encode(zip) }));
    insert_optional_config(&mut body, args);
    client
        .send_ok(Call::new(Method::POST, FUNCTIONS_PATH.to_owned()).json(&Value::Object(body))?)
        .await?
        .json()
}

/// UpdateFunctionCode, then UpdateFunctionConfiguration if any configuration flag was given.
async fn update_function(
    client: &LambdaClient,
    args: &DeployArgs,
    zip: &[u8],
    current: &Value,
) -> anyhow::Result<Value> {
    let code = json!({ "ZipFile": BASE64.encode(zip) });
    let mut configuration = client
        .send_ok(Call::new(Method::PUT, function_path(&args.name, "/code")).json(&code)?)
        .await?
        .json()?;

    let updates = configuration_updates(args);
    if updates.is_empty() {
        return Ok(configuration);
    }
    let dropped = dropped_env_vars(current, &args.env);
    if !args.env.is_empty() && !dropped.is_empty() {
        eprintln!(
            "note: --env replaces the whole environment; removing {}",
            dropped.join(", ")
        );
    }
    let body = Value::Object(updates);
    for attempt in 0..=CONFLICT_RETRIES {
        let call =
            Call::new(Method::PUT, function_path(&args.name, "/configuration")).json(&body)?;
        let response = client.send(call).await?;
        if response.status == StatusCode::CONFLICT && attempt < CONFLICT_RETRIES {
            tokio::time::sleep(CONFLICT_BACKOFF).await;
            continue;
        }
        if !response.status.is_success() {
            return Err(ApiError::from_response(&response, &client.config.source).into());
        }
        configuration = response.json()?;
        break;
    }
    Ok(configuration)
}

/// The UpdateFunctionConfiguration body for the flags given (empty: nothing to update).
fn configuration_updates(args: &DeployArgs) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(runtime) = &args.runtime {
        body.insert("Runtime".into(), json!(runtime));
    }
    if let Some(handler) = &args.handler {
        body.insert("Handler".into(), json!(handler));
    }
    if let Some(role) = &args.role {
        body.insert("Role".into(), json!(role));
    }
    insert_optional_config(&mut body, args);
    body
}

/// Adds Timeout, MemorySize, Description and Environment when given.
fn insert_optional_config(body: &mut Map<String, Value>, args: &DeployArgs) {
    if let Some(timeout) = args.timeout {
        body.insert("Timeout".into(), json!(timeout));
    }
    if let Some(memory) = args.memory {
        body.insert("MemorySize".into(), json!(memory));
    }
    if let Some(description) = &args.description {
        body.insert("Description".into(), json!(description));
    }
    if !args.env.is_empty() {
        let variables: BTreeMap<&str, &str> = args
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        body.insert("Environment".into(), json!({ "Variables": variables }));
    }
}

/// Variables the function has now that `--env` does not set again.
fn dropped_env_vars(current: &Value, env: &[(String, String)]) -> Vec<String> {
    let Some(existing) = current
        .pointer("/Environment/Variables")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    existing
        .keys()
        .filter(|key| !env.iter().any(|(k, _)| k == *key))
        .cloned()
        .collect()
}

/// Parses `--env KEY=VALUE`.
fn parse_env_var(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{arg}'")),
    }
}

fn print_deploy(outcome: &DeployOutcome, output: OutputFormat) -> anyhow::Result<()> {
    let config = &outcome.configuration;
    if output == OutputFormat::Json {
        return print_json(config);
    }
    let field = |key: &str| config.get(key).map(display_value).unwrap_or_default();
    let verb = if outcome.created {
        "created"
    } else {
        "updated"
    };
    let code_size = config
        .get("CodeSize")
        .and_then(Value::as_u64)
        .map(human_size)
        .unwrap_or_else(|| "?".to_owned());
    let summary = format!(
        "{verb} function {}\n  runtime  {}, handler {}, {} MB, {} s timeout\n  code     \
         {code_size}, sha256 {}\n  arn      {}\n",
        field("FunctionName"),
        field("Runtime"),
        field("Handler"),
        field("MemorySize"),
        field("Timeout"),
        field("CodeSha256"),
        field("FunctionArn"),
    );
    write_stdout(summary.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// invoke

/// Where `--payload` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PayloadArg {
    /// No `--payload`: `{}`.
    Default,
    /// Inline JSON.
    Inline(String),
    /// `@FILE`.
    File(PathBuf),
    /// `@-`.
    Stdin,
}

impl PayloadArg {
    fn parse(arg: Option<&str>) -> Self {
        match arg {
            None => Self::Default,
            Some("@-") => Self::Stdin,
            Some(arg) => match arg.strip_prefix('@') {
                Some(path) => Self::File(PathBuf::from(path)),
                None => Self::Inline(arg.to_owned()),
            },
        }
    }
}

/// Reads the payload and checks that it is JSON (an empty one becomes `{}`).
fn read_payload(arg: &PayloadArg) -> anyhow::Result<Vec<u8>> {
    let bytes = match arg {
        PayloadArg::Default => return Ok(b"{}".to_vec()),
        PayloadArg::Inline(text) => text.clone().into_bytes(),
        PayloadArg::File(path) => fs::read(path)
            .with_context(|| format!("cannot read payload file {}", path.display()))?,
        PayloadArg::Stdin => {
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the payload from stdin")?;
            bytes
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(b"{}".to_vec());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .context("the payload is not valid JSON")?;
    Ok(bytes)
}

/// What an Invoke answered.
#[derive(Debug)]
struct InvokeResult {
    status: StatusCode,
    function_error: Option<String>,
    executed_version: Option<String>,
    payload: Bytes,
    log: Option<String>,
}

/// Invoke: sync (RequestResponse) or async (Event), optionally with the log tail.
async fn invoke(
    client: &LambdaClient,
    args: &InvokeArgs,
    payload: Vec<u8>,
) -> anyhow::Result<InvokeResult> {
    let invocation_type = if args.asynchronous {
        "Event"
    } else {
        "RequestResponse"
    };
    let mut call = Call::new(Method::POST, function_path(&args.name, "/invocations"))
        .header("x-amz-invocation-type", invocation_type)?
        .body(payload);
    if args.log {
        call = call.header("x-amz-log-type", "Tail")?;
    }
    let response = client.send_ok(call).await?;
    let log = response.header("x-amz-log-result").map(decode_log);
    Ok(InvokeResult {
        status: response.status,
        function_error: response.header("x-amz-function-error").map(str::to_owned),
        executed_version: response.header("x-amz-executed-version").map(str::to_owned),
        log,
        payload: response.body,
    })
}

/// Decodes `X-Amz-Log-Result` (base64 of the log tail).
fn decode_log(encoded: &str) -> String {
    match BASE64.decode(encoded.trim()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => format!("(undecodable log result: {encoded})"),
    }
}

fn print_invoke(result: &InvokeResult, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&invoke_json(result)),
        OutputFormat::Text => {
            if let Some(log) = &result.log {
                let mut err = io::stderr().lock();
                err.write_all(log.as_bytes())?;
                if !log.ends_with('\n') {
                    err.write_all(b"\n")?;
                }
            }
            if result.status == StatusCode::ACCEPTED && result.payload.is_empty() {
                eprintln!("accepted: the event is queued ({})", result.status);
                return Ok(());
            }
            let mut text = result.payload.to_vec();
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            write_stdout(&text)
        }
    }
}

/// `{"StatusCode", "FunctionError"?, "ExecutedVersion", "Payload", "LogResult"?}`.
fn invoke_json(result: &InvokeResult) -> Value {
    let payload = if result.payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&result.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&result.payload).into()))
    };
    let mut out = Map::new();
    out.insert("StatusCode".into(), json!(result.status.as_u16()));
    if let Some(kind) = &result.function_error {
        out.insert("FunctionError".into(), json!(kind));
    }
    out.insert("ExecutedVersion".into(), json!(result.executed_version));
    out.insert("Payload".into(), payload);
    if let Some(log) = &result.log {
        out.insert("LogResult".into(), json!(log));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// ls

/// ListFunctions, following NextMarker to the end.
async fn list_functions(client: &LambdaClient) -> anyhow::Result<Vec<Value>> {
    let mut functions = Vec::new();
    let mut marker: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        let query = marker
            .as_deref()
            .map(|m| format!("Marker={}", sigv4::uri_encode(m.as_bytes())))
            .unwrap_or_default();
        let page = client
            .send_ok(Call::new(Method::GET, FUNCTIONS_PATH.to_owned()).query(query))
            .await?
            .json()?;
        if let Some(items) = page.get("Functions").and_then(Value::as_array) {
            functions.extend(items.iter().cloned());
        }
        match page.get("NextMarker").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => {
                if !seen.insert(next.to_owned()) {
                    bail!("the server repeated the pagination marker '{next}'");
                }
                marker = Some(next.to_owned());
            }
            _ => return Ok(functions),
        }
    }
}

/// The `ls` table: NAME, RUNTIME, MEMORY, TIMEOUT, LAST MODIFIED, at most 100 columns wide.
fn render_table(functions: &[Value]) -> String {
    if functions.is_empty() {
        return "No functions.\n".to_owned();
    }
    const HEADERS: [&str; 5] = ["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "LAST MODIFIED"];
    const GAP: usize = 2;
    let rows: Vec<[String; 5]> = functions.iter().map(table_row).collect();

    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let others: usize = widths[1..].iter().sum::<usize>() + GAP * (HEADERS.len() - 1);
    widths[0] = widths[0].min(TABLE_WIDTH.saturating_sub(others).max(HEADERS[0].len()));

    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let cell = truncate_chars(cell, width);
            if i + 1 == HEADERS.len() {
                line.push_str(&cell);
            } else {
                let pad = width - cell.chars().count() + GAP;
                line.push_str(&cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One function's cells for the `ls` table.
fn table_row(config: &Value) -> [String; 5] {
    let text = |key: &str| config.get(key).map(display_value).unwrap_or_default();
    let runtime = match config.get("Runtime").and_then(Value::as_str) {
        Some(runtime) if !runtime.is_empty() => runtime.to_owned(),
        _ if config.get("PackageType").and_then(Value::as_str) == Some("Image") => {
            "(image)".to_owned()
        }
        _ => "-".to_owned(),
    };
    let memory = config
        .get("MemorySize")
        .and_then(Value::as_u64)
        .map(|mb| format!("{mb} MB"))
        .unwrap_or_else(|| "-".to_owned());
    let timeout = config
        .get("Timeout")
        .and_then(Value::as_u64)
        .map(|secs| format!("{secs} s"))
        .unwrap_or_else(|| "-".to_owned());
    let last_modified = short_timestamp(&text("LastModified"));
    [
        text("FunctionName"),
        runtime,
        memory,
        timeout,
        last_modified,
    ]
}

/// `2020-04-10T19:06:32.563+0000` → `2020-04-10 19:06:32`.
fn short_timestamp(timestamp: &str) -> String {
    match timestamp.get(..19) {
        Some(head) if head.as_bytes().get(10) == Some(&b'T') => head.replacen('T', " ", 1),
        _ => timestamp.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// rm

/// DeleteFunction for each name; every name is tried even when one fails.
async fn remove(
    client: &LambdaClient,
    names: &[String],
    output: OutputFormat,
) -> anyhow::Result<()> {
    if let [name] = names {
        delete_function(client, name).await?;
        return match output {
            OutputFormat::Json => print_json(&json!([{ "FunctionName": name, "Deleted": true }])),
            OutputFormat::Text => write_stdout(format!("deleted {name}\n").as_bytes()),
        };
    }
    let mut results = Vec::new();
    let mut failures = 0;
    for name in names {
        match delete_function(client, name).await {
            Ok(()) => {
                if output == OutputFormat::Text {
                    write_stdout(format!("deleted {name}\n").as_bytes())?;
                }
                results.push(json!({ "FunctionName": name, "Deleted": true }));
            }
            Err(err) if err.is::<ApiError>() => {
                failures += 1;
                if output == OutputFormat::Text {
                    eprintln!("error: {name}: {err}");
                }
                results.push(
                    json!({ "FunctionName": name, "Deleted": false, "Error": err.to_string() }),
                );
            }
            Err(err) => return Err(err),
        }
    }
    if output == OutputFormat::Json {
        print_json(&Value::Array(results))?;
    }
    if failures > 0 {
        bail!(
            "{failures} of {} functions could not be deleted",
            names.len()
        );
    }
    Ok(())
}

async fn delete_function(client: &LambdaClient, name: &str) -> anyhow::Result<()> {
    client
        .send_ok(Call::new(Method::DELETE, function_path(name, "")))
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// usage

/// Path of Lambent's usage API.
const USAGE_PATH: &str = "/lambent/usage";

/// `lambent logs`: `GET /lambent/logs/{name}?since=MS`, then (with --follow) long polls with
/// `after=CURSOR` so lines show as they are written.
async fn logs(client: &LambdaClient, args: &LogsArgs, output: OutputFormat) -> anyhow::Result<()> {
    validate_function_name(&args.name)?;
    let path = format!("/lambent/logs/{}", sigv4::uri_encode(args.name.as_bytes()));
    let filter = args
        .filter
        .as_ref()
        .map(|f| format!("&filter={}", sigv4::uri_encode(f.as_bytes())))
        .unwrap_or_default();
    let mut query = format!("since={}{filter}", args.since.saturating_mul(1000));
    let mut printed_json = Vec::new();
    loop {
        let page = client
            .send_ok(Call::new(Method::GET, path.clone()).query(query.clone()))
            .await?
            .json()?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if !args.follow && output == OutputFormat::Json {
            printed_json.extend(events);
        } else {
            let mut text = String::new();
            for event in &events {
                match output {
                    OutputFormat::Json => {
                        text.push_str(&event.to_string());
                        text.push('\n');
                    }
                    OutputFormat::Text => text.push_str(&log_line(event)),
                }
            }
            if !text.is_empty() {
                let mut out = io::stdout().lock();
                if out
                    .write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // Nobody reads any more (e.g. `| head`).
                    return Ok(());
                }
            }
        }
        if !args.follow {
            break;
        }
        let cursor = page["cursor"].as_u64().unwrap_or(0);
        query = format!("after={cursor}&wait=20{filter}");
    }
    if !args.follow && output == OutputFormat::Json {
        print_json(&Value::Array(printed_json))?;
    }
    Ok(())
}

/// One event as text: its time and its message.
fn log_line(event: &Value) -> String {
    let millis = event["timestamp"].as_u64().unwrap_or(0);
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
    format!(
        "{} {}\n",
        lambent_types::time::aws_timestamp(time),
        event["message"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('\n')
    )
}

/// `--since`: `<n>s|m|h|d` ago, or epoch seconds.
fn parse_since(arg: &str) -> Result<u64, String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    parse_since_at(arg, now)
}

fn parse_since_at(arg: &str, now: u64) -> Result<u64, String> {
    let bad = || format!("expected a time ago like 30m, 1h, 7d or epoch seconds, got {arg:?}");
    let arg = arg.trim();
    let unit = match arg.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some(c) if c.is_ascii_digit() => return arg.parse().map_err(|_| bad()),
        _ => return Err(bad()),
    };
    let count: u64 = arg[..arg.len() - 1].parse().map_err(|_| bad())?;
    Ok(now.saturating_sub(count.saturating_mul(unit)))
}

/// GET /lambent/usage for one function or all.
async fn get_usage(client: &LambdaClient, args: &UsageArgs) -> anyhow::Result<Value> {
    let mut query = Vec::new();
    if let Some(name) = &args.name {
        validate_function_name(name)?;
        query.push(format!("function={}", sigv4::uri_encode(name.as_bytes())));
    }
    if let Some(since) = args.since {
        query.push(format!("since={since}"));
    }
    client
        .send_ok(Call::new(Method::GET, USAGE_PATH.to_owned()).query(query.join("&")))
        .await?
        .json()
}

/// The `usage` table: FUNCTION, INVOCATIONS, ERRORS, THROTTLES, COLD STARTS, GB-SECONDS.
fn render_usage(usage: &Value) -> String {
    const HEADERS: [&str; 6] = [
        "FUNCTION",
        "INVOCATIONS",
        "ERRORS",
        "THROTTLES",
        "COLD STARTS",
        "GB-SECONDS",
    ];
    let functions = usage
        .get("Functions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if functions.is_empty() {
        return "No usage.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            let totals = &f["Totals"];
            let n = |key: &str| totals[key].as_u64().unwrap_or(0).to_string();
            vec![
                display_value(&f["FunctionName"]),
                n("Invocations"),
                n("Errors"),
                n("Throttles"),
                n("ColdStarts"),
                format!("{:.6}", totals["GbSeconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    queue::text_table(&HEADERS, &rows, &[false, true, true, true, true, true])
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Prints pretty JSON and a newline on stdout.
fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_stdout(&text)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// A JSON value as plain text (strings without quotes).
fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `1536` → `1.5 KiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// At most `max` characters, the last one `…` when cut.
fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn write_credentials(dir: &Path, json: &str) {
        fs::write(dir.join(CREDENTIALS_FILE), json).unwrap();
    }

    const FILE_WITH_ENDPOINT: &str = r#"{"access_key_id": "LKFILE", "secret_access_key": "file-secret",
        "region": "eu-west-1", "endpoint": "http://127.0.0.1:9100"}"#;

    #[test]
    fn credentials_file_wins_over_environment_keys() {
        let dir = tempfile::tempdir().unwrap();
        write_credentials(dir.path(), FILE_WITH_ENDPOINT);
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "LKENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_REGION", "ap-south-1"),
        ]);
        let config = ClientConfig::discover(dir.path(), env).unwrap();
        assert_eq!(config.credentials.access_key_id, "LKFILE");
        assert_eq!(config.credentials.secret_access_key, "file-secret");
        assert_eq!(config.credentials.region, "eu-west-1");
        assert_eq!(config.endpoint.origin, "http://127.0.0.1:9100");
        assert_eq!(config.endpoint.host, "127.0.0.1:9100");
        assert_eq!(
            config.source,
            CredentialSource::File(dir.path().join(CREDENTIALS_FILE))
        );
        assert!(!format!("{config:?}").contains("file-secret"));
    }

    #[test]
    fn lambent_endpoint_env_wins_over_file_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        write_credentials(dir.path(), FILE_WITH_ENDPOINT);
        let env = env_of(&[("LAMBENT_ENDPOINT", "http://localhost:7000/")]);
        let config = ClientConfig::discover(dir.path(), env).unwrap();
        assert_eq!(config.endpoint.origin, "http://localhost:7000");
        assert_eq!(config.endpoint.base_path, "");
        assert_eq!(config.credentials.access_key_id, "LKFILE");
    }

    #[test]
    fn file_without_endpoint_or_region_uses_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write_credentials(
            dir.path(),
            r#"{"access_key_id": "LK", "secret_access_key": "s"}"#,
        );
        let config = ClientConfig::discover(dir.path(), env_of(&[])).unwrap();
        assert_eq!(config.endpoint.origin, DEFAULT_ENDPOINT);
        assert_eq!(config.credentials.region, DEFAULT_REGION);
    }

    #[test]
    fn environment_keys_are_used_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "LKENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ]);
        let config = ClientConfig::discover(dir.path(), env).unwrap();
        assert_eq!(config.credentials.access_key_id, "LKENV");
        assert_eq!(config.credentials.region, "us-west-2");
        assert_eq!(config.source, CredentialSource::Environment);
        assert_eq!(config.endpoint.origin, DEFAULT_ENDPOINT);

        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "LKENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_REGION", "eu-north-1"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ]);
        let config = ClientConfig::discover(dir.path(), env).unwrap();
        assert_eq!(config.credentials.region, "eu-north-1");
    }

    #[test]
    fn no_credentials_anywhere_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClientConfig::discover(dir.path(), env_of(&[])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("lambent serve"), "{text}");
        assert!(text.contains("LAMBENT_DATA_DIR"), "{text}");

        let half = env_of(&[("AWS_ACCESS_KEY_ID", "LK")]);
        let err = ClientConfig::discover(dir.path(), half).unwrap_err();
        assert!(format!("{err:#}").contains("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn malformed_credentials_file_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_credentials(dir.path(), "{not json");
        let env = env_of(&[("AWS_ACCESS_KEY_ID", "LK"), ("AWS_SECRET_ACCESS_KEY", "s")]);
        let err = ClientConfig::discover(dir.path(), env).unwrap_err();
        assert!(format!("{err:#}").contains(CREDENTIALS_FILE));
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        let endpoint = Endpoint::parse("http://example.test:8080/prefix/").unwrap();
        assert_eq!(endpoint.host, "example.test:8080");
        assert_eq!(endpoint.base_path, "/prefix");
        assert_eq!(Endpoint::parse("http://h").unwrap().host, "h");
        assert!(format!("{:#}", Endpoint::parse("https://h").unwrap_err()).contains("http://"));
        assert!(Endpoint::parse("h:9000").is_err());
        assert!(Endpoint::parse("http://u:p@h").is_err());
    }

    #[test]
    fn zipping_a_directory_keeps_exec_bits_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("bootstrap"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bootstrap"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(root.join("lib/sub")).unwrap();
        fs::write(root.join("lib/sub/data.txt"), "data").unwrap();
        fs::set_permissions(
            root.join("lib/sub/data.txt"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::write(root.join(".git/config"), "[core]").unwrap();
        fs::write(root.join(".gitignore"), "target\n").unwrap();

        let bytes = zip_directory(root).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes.clone())).unwrap();
        let mut names: Vec<String> = archive
            .file_names()
            .map(|name| name.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".gitignore",
                "bootstrap",
                "lib/",
                "lib/sub/",
                "lib/sub/data.txt"
            ]
        );

        let bootstrap = archive.by_name("bootstrap").unwrap();
        assert_eq!(bootstrap.unix_mode().unwrap() & 0o777, 0o755);
        drop(bootstrap);
        let mut data = archive.by_name("lib/sub/data.txt").unwrap();
        assert_eq!(data.unix_mode().unwrap() & 0o777, 0o640);
        let mut text = String::new();
        data.read_to_string(&mut text).unwrap();
        assert_eq!(text, "data");
        drop(data);

        assert_eq!(
            zip_directory(root).unwrap(),
            bytes,
            "zipping is deterministic"
        );
    }

    #[test]
    fn a_zip_file_is_read_as_is_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(
            src.join("index.mjs"),
            "export const handler = async () => 1;",
        )
        .unwrap();
        let zip = zip_directory(&src).unwrap();
        let zip_path = dir.path().join("fn.zip");
        fs::write(&zip_path, &zip).unwrap();
        assert_eq!(load_code_blocking(&zip_path).unwrap(), zip);

        let text_path = dir.path().join("notes.txt");
        fs::write(&text_path, "hello").unwrap();
        let err = load_code_blocking(&text_path).unwrap_err();
        assert!(format!("{err:#}").contains("neither a directory nor a .zip"));
        assert!(load_code_blocking(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn payload_arguments_are_parsed() {
        assert_eq!(PayloadArg::parse(None), PayloadArg::Default);
        assert_eq!(
            PayloadArg::parse(Some(r#"{"a":1}"#)),
            PayloadArg::Inline(r#"{"a":1}"#.to_owned())
        );
        assert_eq!(
            PayloadArg::parse(Some("@event.json")),
            PayloadArg::File(PathBuf::from("event.json"))
        );
        assert_eq!(PayloadArg::parse(Some("@-")), PayloadArg::Stdin);

        assert_eq!(read_payload(&PayloadArg::Default).unwrap(), b"{}");
        assert_eq!(
            read_payload(&PayloadArg::Inline("[1, 2]".into())).unwrap(),
            b"[1, 2]"
        );
        assert_eq!(
            read_payload(&PayloadArg::Inline("  ".into())).unwrap(),
            b"{}"
        );
        let err = read_payload(&PayloadArg::Inline("{oops".into())).unwrap_err();
        assert!(format!("{err:#}").contains("not valid JSON"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("event.json");
        fs::write(&file, "{\"k\": \"v\"}\n").unwrap();
        assert_eq!(
            read_payload(&PayloadArg::File(file)).unwrap(),
            b"{\"k\": \"v\"}\n"
        );
        let err = read_payload(&PayloadArg::File(dir.path().join("nope.json"))).unwrap_err();
        assert!(format!("{err:#}").contains("nope.json"));
    }

    #[test]
    fn env_flags_parse_as_key_value() {
        assert_eq!(
            parse_env_var("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert_eq!(
            parse_env_var("EMPTY=").unwrap(),
            ("EMPTY".to_owned(), String::new())
        );
        assert!(parse_env_var("=x").is_err());
        assert!(parse_env_var("novalue").is_err());
    }

    #[test]
    fn function_names_and_arns_are_encoded_in_paths() {
        assert_eq!(
            function_path("foo", "/code"),
            "/2015-03-31/functions/foo/code"
        );
        assert_eq!(
            function_path("arn:aws:lambda:us-east-1:000000000000:function:foo", ""),
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Afoo"
        );
        assert_eq!(
            function_path("foo:$LATEST", "/invocations"),
            "/2015-03-31/functions/foo%3A%24LATEST/invocations"
        );
        assert!(validate_function_name("my-fn_2").is_ok());
        assert!(validate_function_name("bad name").is_err());
        assert!(validate_function_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn api_errors_read_header_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("ResourceNotFoundException:http://internal.amazon.com/"),
        );
        let response = ApiResponse {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(br#"{"Type":"User","Message":"Function not found: foo"}"#),
        };
        let err = ApiError::from_response(&response, &CredentialSource::Environment);
        assert_eq!(
            err.to_string(),
            "ResourceNotFoundException: Function not found: foo"
        );

        let response = ApiResponse {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: Bytes::from_static(
                br#"{"__type":"com.amazon#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
            ),
        };
        let source = CredentialSource::File(PathBuf::from("/data/credentials.json"));
        let text = ApiError::from_response(&response, &source).to_string();
        assert!(text.starts_with(
            "UnrecognizedClientException: The security token included in the request is invalid.\nhint: "
        ));
        assert!(text.contains("/data/credentials.json"), "{text}");

        let response = ApiResponse {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let err = ApiError::from_response(&response, &CredentialSource::Environment);
        assert_eq!(err.error_type, "HTTP 502");
        assert_eq!(err.message, "Bad Gateway");
    }

    #[test]
    fn since_parses_durations_and_epochs() {
        assert_eq!(parse_since_at("1h", 10_000), Ok(6_400));
        assert_eq!(parse_since_at("30m", 10_000), Ok(8_200));
        assert_eq!(parse_since_at("90s", 100), Ok(10));
        assert_eq!(parse_since_at("2d", 100), Ok(0));
        assert_eq!(parse_since_at("1764000000", 5), Ok(1_764_000_000));
        assert!(parse_since_at("1w", 5).is_err());
        assert!(parse_since_at("h", 5).is_err());
        assert!(parse_since_at("", 5).is_err());
    }

    #[test]
    fn usage_table_lists_totals() {
        let usage = json!({"Since": 0, "Functions": [
            {"FunctionName": "hello", "Totals": {"Invocations": 12, "Errors": 1, "Throttles": 3,
              "ColdStarts": 2, "GbSeconds": 0.0125}, "Minutes": []},
        ]});
        assert_eq!(
            render_usage(&usage),
            "FUNCTION  INVOCATIONS  ERRORS  THROTTLES  COLD STARTS  GB-SECONDS\n\
             hello              12       1          3            2    0.012500\n"
        );
        assert_eq!(render_usage(&json!({"Functions": []})), "No usage.\n");
    }

    #[test]
    fn table_fits_in_100_columns() {
        let functions = vec![
            json!({"FunctionName": "x".repeat(64), "Runtime": "provided.al2023", "MemorySize": 10240,
                   "Timeout": 900, "LastModified": "2020-04-10T19:06:32.563+0000"}),
            json!({"FunctionName": "short", "PackageType": "Image", "MemorySize": 128, "Timeout": 3,
                   "LastModified": "2024-01-15T10:15:30.000+0000"}),
        ];
        let table = render_table(&functions);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            assert!(line.chars().count() <= TABLE_WIDTH, "{line:?}");
        }
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains('…'));
        assert!(lines[1].ends_with("2020-04-10 19:06:32"));
        assert!(lines[2].starts_with("short "));
        assert!(lines[2].contains("(image)"));
        let char_column =
            |line: &str, needle: &str| line[..line.find(needle).unwrap()].chars().count();
        assert_eq!(
            char_column(lines[1], "provided.al2023"),
            char_column(lines[0], "RUNTIME")
        );
        assert_eq!(render_table(&[]), "No functions.\n");
    }

    #[test]
    fn invoke_json_shape() {
        let result = InvokeResult {
            status: StatusCode::OK,
            function_error: Some("Unhandled".into()),
            executed_version: Some("$LATEST".into()),
            payload: Bytes::from_static(br#"{"errorMessage":"boom"}"#),
            log: Some("START RequestId: 1\n".into()),
        };
        assert_eq!(
            invoke_json(&result),
            json!({"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST",
                   "Payload": {"errorMessage": "boom"}, "LogResult": "START RequestId: 1\n"})
        );
        let result = InvokeResult {
            status: StatusCode::OK,
            function_error: None,
            executed_version: Some("1".into()),
            payload: Bytes::from_static(b"not json"),
            log: None,
        };
        assert_eq!(
            invoke_json(&result),
            json!({"StatusCode": 200, "ExecutedVersion": "1", "Payload": "not json"})
        );
        assert_eq!(
            decode_log(&BASE64.encode("END RequestId: 1\n")),
            "END RequestId: 1\n"
        );
    }

    // ---- the whole client against a fake server that verifies SigV4 ----

    const KEY: &str = "LKTESTKEY";
    const SECRET: &str = "test/secret+key";

    /// A request the fake server received, after its signature was checked.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        query: String,
        headers: HeaderMap,
        body: Bytes,
        signature_ok: bool,
    }

    /// In-memory functions keyed by name.
    #[derive(Default)]
    struct FakeState {
        functions: BTreeMap<String, Value>,
        seen: Vec<Seen>,
    }

    fn fake_response(
        status: u16,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> http::Response<Full<Bytes>> {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    fn not_found(name: &str) -> http::Response<Full<Bytes>> {
        fake_response(
            404,
            &[("x-amzn-ErrorType", "ResourceNotFoundException")],
            json!({"Type": "User", "Message": format!("Function not found: {name}")})
                .to_string()
                .into_bytes(),
        )
    }

    fn handle(state: &mut FakeState, seen: &Seen) -> http::Response<Full<Bytes>> {
        if !seen.signature_ok {
            return fake_response(
                403,
                &[("x-amzn-ErrorType", "InvalidSignatureException")],
                br#"{"message":"bad signature"}"#.to_vec(),
            );
        }
        let ok = |status, value: &Value| fake_response(status, &[], value.to_string().into_bytes());
        let rest = seen.path.strip_prefix(FUNCTIONS_PATH).unwrap_or("");
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        match (seen.method.as_str(), segments.as_slice()) {
            ("POST", []) => {
                let body: Value = serde_json::from_slice(&seen.body).unwrap();
                let zip = BASE64
                    .decode(body["Code"]["ZipFile"].as_str().unwrap())
                    .unwrap();
                let name = body["FunctionName"].as_str().unwrap().to_owned();
                let mut config = body.clone();
                let config_map = config.as_object_mut().unwrap();
                config_map.remove("Code");
                config_map.insert("CodeSize".into(), json!(zip.len()));
                config_map.insert("CodeSha256".into(), json!("c2hh"));
                config_map.insert(
                    "MemorySize".into(),
                    json!(body.get("MemorySize").cloned().unwrap_or(json!(128))),
                );
                config_map.insert(
                    "Timeout".into(),
                    json!(body.get("Timeout").cloned().unwrap_or(json!(3))),
                );
                config_map.insert("LastModified".into(), json!("2024-01-15T10:15:30.000+0000"));
                state.functions.insert(name, config.clone());
                ok(201, &config)
            }
            ("GET", []) => {
                let all: Vec<Value> = state.functions.values().cloned().collect();
                if seen.query.is_empty() {
                    ok(
                        200,
                        &json!({"Functions": all[..1].to_vec(), "NextMarker": "page 2/+"}),
                    )
                } else {
                    assert_eq!(seen.query, "Marker=page%202%2F%2B");
                    ok(200, &json!({"Functions": all[1..].to_vec()}))
                }
            }
            (method, [name, tail @ ..]) => {
                let decoded = String::from_utf8(percent_encoding_decode(name)).unwrap();
                let name = decoded.rsplit(':').next().unwrap().to_owned();
                let Some(config) = state.functions.get_mut(&name) else {
                    return not_found(&name);
                };
                match (method, tail) {
                    ("GET", []) => ok(200, &json!({"Configuration": config})),
                    ("PUT", ["code"]) => {
                        let body: Value = serde_json::from_slice(&seen.body).unwrap();
                        let zip = BASE64.decode(body["ZipFile"].as_str().unwrap()).unwrap();
                        config["CodeSize"] = json!(zip.len());
                        ok(200, config)
                    }
                    ("PUT", ["configuration"]) => {
                        let body: Value = serde_json::from_slice(&seen.body).unwrap();
                        for (key, value) in body.as_object().unwrap() {
                            config[key] = value.clone();
                        }
                        ok(200, config)
                    }
                    ("POST", ["invocations"]) => {
                        let fails = seen.body.windows(4).any(|w| w == b"fail");
                        let tail = BASE64.encode("START RequestId: r1\nEND RequestId: r1\n");
                        let mut headers = vec![("X-Amz-Executed-Version", "$LATEST")];
                        if fails {
                            headers.push(("X-Amz-Function-Error", "Unhandled"));
                        }
                        if seen.headers.get("x-amz-log-type").is_some() {
                            headers.push(("X-Amz-Log-Result", &tail));
                        }
                        let asynchronous = seen
                            .headers
                            .get("x-amz-invocation-type")
                            .is_some_and(|v| v == "Event");
                        if asynchronous {
                            return fake_response(202, &[], Vec::new());
                        }
                        fake_response(200, &headers, seen.body.to_vec())
                    }
                    ("DELETE", []) => {
                        state.functions.remove(&name);
                        fake_response(204, &[], Vec::new())
                    }
                    _ => fake_response(400, &[], b"{}".to_vec()),
                }
            }
            _ => fake_response(400, &[], b"{}".to_vec()),
        }
    }

    fn percent_encoding_decode(segment: &str) -> Vec<u8> {
        let bytes = segment.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }

    /// Starts the fake server; returns its client and shared state.
    async fn start_fake_server() -> (LambdaClient, Arc<Mutex<FakeState>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let server_state = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&server_state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let state = Arc::clone(&state);
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let signable = sigv4::SignableRequest {
                                    method: parts.method.as_str(),
                                    raw_path: parts.uri.path(),
                                    raw_query: parts.uri.query().unwrap_or(""),
                                    headers: &parts.headers,
                                    body: &body,
                                };
                                let verified =
                                    sigv4::verify(&signable, SystemTime::now(), "lambda", |key| {
                                        (key == KEY).then(|| SECRET.to_owned())
                                    });
                                let seen = Seen {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_owned(),
                                    query: parts.uri.query().unwrap_or("").to_owned(),
                                    headers: parts.headers.clone(),
                                    body,
                                    signature_ok: verified.is_ok(),
                                };
                                let mut state = state.lock().unwrap();
                                let response = handle(&mut state, &seen);
                                state.seen.push(seen);
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        let config = ClientConfig {
            endpoint: Endpoint::parse(&format!("http://{addr}")).unwrap(),
            credentials: Credentials {
                access_key_id: KEY.to_owned(),
                secret_access_key: SECRET.to_owned(),
                region: "us-east-1".to_owned(),
            },
            source: CredentialSource::Environment,
        };
        (LambdaClient::new(config), state)
    }

    fn deploy_args(path: &Path, name: &str) -> DeployArgs {
        DeployArgs {
            path: path.to_owned(),
            name: name.to_owned(),
            runtime: None,
            handler: None,
            timeout: None,
            memory: None,
            env: Vec::new(),
            role: None,
            description: None,
        }
    }

    #[tokio::test]
    async fn deploy_invoke_ls_rm_against_a_signature_checking_server() {
        let (client, state) = start_fake_server().await;
        let code = tempfile::tempdir().unwrap();
        fs::write(code.path().join("bootstrap"), "#!/bin/sh\n").unwrap();

        // Create needs a runtime and a handler.
        let err = deploy(&client, &deploy_args(code.path(), "echo"))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("--runtime and --handler are required"));

        let mut args = deploy_args(code.path(), "echo");
        args.runtime = Some("provided.al2023".into());
        args.handler = Some("bootstrap".into());
        args.env = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        let outcome = deploy(&client, &args).await.unwrap();
        assert!(outcome.created);
        assert_eq!(outcome.configuration["Role"], DEFAULT_ROLE);
        assert_eq!(
            outcome.configuration["Environment"],
            json!({"Variables": {"A": "1", "B": "2"}})
        );

        // Update: code only, then code and configuration.
        let outcome = deploy(&client, &deploy_args(code.path(), "echo"))
            .await
            .unwrap();
        assert!(!outcome.created);
        let mut args = deploy_args(code.path(), "echo");
        args.timeout = Some(30);
        args.env = vec![("A".into(), "3".into())];
        let outcome = deploy(&client, &args).await.unwrap();
        assert_eq!(outcome.configuration["Timeout"], 30);
        assert_eq!(
            outcome.configuration["Environment"],
            json!({"Variables": {"A": "3"}})
        );
        assert_eq!(
            dropped_env_vars(
                &json!({"Environment": {"Variables": {"A": "1", "B": "2"}}}),
                &args.env
            ),
            ["B"]
        );

        let mut args = deploy_args(code.path(), "other");
        args.runtime = Some("python3.12".into());
        args.handler = Some("app.handler".into());
        deploy(&client, &args).await.unwrap();

        // Invoke by ARN (encoded in the path), with the log tail.
        let invoke_args = InvokeArgs {
            name: "arn:aws:lambda:us-east-1:000000000000:function:echo".into(),
            payload: None,
            asynchronous: false,
            log: true,
        };
        let result = invoke(&client, &invoke_args, br#"{"n": 1}"#.to_vec())
            .await
            .unwrap();
        assert_eq!(result.status, StatusCode::OK);
        assert_eq!(&result.payload[..], br#"{"n": 1}"#);
        assert_eq!(result.function_error, None);
        assert_eq!(
            result.log.as_deref(),
            Some("START RequestId: r1\nEND RequestId: r1\n")
        );
        let failing = invoke(&client, &invoke_args, br#""fail""#.to_vec())
            .await
            .unwrap();
        assert_eq!(failing.function_error.as_deref(), Some("Unhandled"));
        let queued = InvokeArgs {
            asynchronous: true,
            log: false,
            ..invoke_args.clone()
        };
        let result = invoke(&client, &queued, b"{}".to_vec()).await.unwrap();
        assert_eq!(result.status, StatusCode::ACCEPTED);

        // ls follows NextMarker.
        let names: Vec<String> = list_functions(&client)
            .await
            .unwrap()
            .iter()
            .map(|f| f["FunctionName"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["echo", "other"]);

        // rm, then the function is gone (404 → ApiError).
        delete_function(&client, "other").await.unwrap();
        let err = delete_function(&client, "other").await.unwrap_err();
        let api = err.downcast_ref::<ApiError>().unwrap();
        assert_eq!(api.error_type, "ResourceNotFoundException");

        let state = state.lock().unwrap();
        assert!(
            state.seen.iter().all(|s| s.signature_ok),
            "a request failed SigV4"
        );
        let invoke_seen = state
            .seen
            .iter()
            .find(|s| s.path.ends_with("/invocations"))
            .unwrap();
        assert_eq!(
            invoke_seen.path,
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho/invocations"
        );
        assert_eq!(
            invoke_seen.headers["x-amz-invocation-type"],
            "RequestResponse"
        );
        assert!(invoke_seen.headers.get(CONTENT_TYPE).is_none());
    }

    #[tokio::test]
    async fn wrong_secret_gets_a_403_with_a_hint() {
        let (client, _state) = start_fake_server().await;
        let mut config = client.config.clone();
        config.credentials.secret_access_key = "wrong".into();
        let client = LambdaClient::new(config);
        let err = list_functions(&client).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("InvalidSignatureException: bad signature\nhint: "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn unreachable_server_says_how_to_start_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let config = ClientConfig {
            endpoint: Endpoint::parse(&format!("http://{addr}")).unwrap(),
            credentials: Credentials {
                access_key_id: KEY.into(),
                secret_access_key: SECRET.into(),
                region: "us-east-1".into(),
            },
            source: CredentialSource::Environment,
        };
        let err = list_functions(&LambdaClient::new(config))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("cannot connect to lambent"), "{text}");
        assert!(text.contains("lambent serve"), "{text}");
    }
}
