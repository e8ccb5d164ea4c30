//! Lambent's Lambda REST API (2015-03-31 and friends): the HTTP server, SigV4
//! authentication, routing on raw path segments, and AWS error mapping.
//!
//! Routing splits the raw path on `/`, drops empty segments (older SDKs add trailing
//! slashes) and percent-decodes each segment, so ARNs arrive as `arn:aws:lambda:…`.
//! Signatures are verified on the raw path bytes, before any decoding.

mod access;
mod admin;
mod apigw;
mod apis;
mod authz;
mod error;
mod functions;
mod invoke;
mod jwt;
mod layers;
mod logs;
mod openapi;
mod queue;
mod s3_sources;
mod schedules;
pub mod sessions;
mod settings;
mod shapes;
pub mod sigv4;
mod streaming;
pub mod tls;
mod urls_gateway;
mod urls_streaming;
mod usage;
mod versions;
mod ws_gateway;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use lambent_invoke::Invoker;
use lambent_store::{CodeStore, Store};
use lambent_types::names::ArnContext;

pub use error::ApiError;
pub use settings::urls::URL_PORT;
pub use urls_gateway::serve_urls;
pub use ws_gateway::Connections;

/// Largest request body accepted by any operation (a 50 MB zip, base64-encoded, plus JSON).
const MAX_BODY_BYTES: usize = 70 * 1024 * 1024;

/// Whether requests must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request must carry a valid SigV4 signature from a known key.
    SigV4,
    /// Development mode: anything is accepted.
    Disabled,
}

/// Everything the API needs to answer requests.
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Code zips and trees.
    pub code: CodeStore,
    /// Runs functions.
    pub invoker: Arc<Invoker>,
    /// Region and account for ARNs.
    pub arns: ArnContext,
    /// Authentication mode.
    pub auth: AuthMode,
    /// The account's concurrency limit, reported by GetAccountSettings.
    pub concurrency_limit: usize,
    /// Function logs, for the CloudWatch Logs operations and `lambent logs`.
    pub logs: Arc<lambent_store::logs::LogStore>,
    /// Temporary credentials of execution roles.
    pub sessions: sessions::Sessions,
    /// Port of the function URL gateway, for the FunctionUrl of URL configs.
    pub url_port: u16,
    /// Time an HTTP client of the gateway gets to send a request's headers (slow clients
    /// are cut off).
    pub http_header_timeout: std::time::Duration,
    /// The WebSocket connections open on this node (`@connections`).
    pub connections: ws_gateway::Connections,
}

/// A parsed request handed to an operation.
pub(crate) struct ApiRequest {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub request_id: String,
    pub host: String,
    /// Region and account of this server, for checking ARNs in the request.
    pub arns: ArnContext,
}

impl ApiRequest {
    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Parses the body as JSON of type `T`, with AWS's error for bad JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.is_empty() {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_content(format!("Could not parse request body into json: {e}"))
        })
    }
}

/// An operation's successful answer.
pub(crate) struct ApiReply {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, String)>,
    /// A body sent as it is produced (InvokeWithResponseStream) instead of `body`.
    pub stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl ApiReply {
    /// A JSON answer.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            body: Bytes::from(value.to_string()),
            headers: Vec::new(),
            stream: None,
        }
    }

    /// An empty answer (204 and friends).
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: Bytes::new(),
            headers: Vec::new(),
            stream: None,
        }
    }
}

/// A response body: whole, or streamed as produced.
pub(crate) type ApiBody = Either<Full<Bytes>, streaming::ChannelBody>;

/// What the API knows of the connection a request came on.
#[derive(Debug, Clone, Copy)]
struct Connection {
    peer: SocketAddr,
    /// Over TLS (`aws:SecureTransport`).
    secure: bool,
    /// To the address execution environments reach the API at: the sandbox bridge's gateway.
    from_environments: bool,
}

/// Serves the API on `listeners` (over TLS when `tls` is given) until `shutdown` resolves,
/// then waits up to `drain` for open requests to finish. Connections to
/// `environments_address` (the sandbox bridge's gateway, which only execution environments
/// reach) get the signed API and code downloads but not the unauthenticated `/metrics`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    environments_address: Option<std::net::IpAddr>,
    state: Arc<ApiState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                environments_address,
                accepted_tx.clone(),
            ))
        })
        .collect();
    drop(accepted_tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            next = accepted.recv() => {
                let Some((stream, connection)) = next else { break };
                let state = state.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let connection = Connection { secure: tls.is_some(), ..connection };
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), connection)
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let connection = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                            let _ = watcher.watch(connection).await;
                        }
                        Some(acceptor) => {
                            let handshake =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                            let stream = match handshake.await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %connection.peer, "TLS handshake failed: {e}");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let connection = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                            let _ = watcher.watch(connection).await;
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    for acceptor in acceptors {
        acceptor.abort();
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some API requests were still open after {drain:?}; closing them");
    }
}

/// Accepts connections on one listener and hands them to [`serve`] until it stops listening.
async fn accept_loop(
    listener: TcpListener,
    environments_address: Option<std::net::IpAddr>,
    accepted: tokio::sync::mpsc::Sender<(tokio::net::TcpStream, Connection)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            secure: false,
            from_environments: environments_address.is_some()
                && stream.local_addr().ok().map(|local| local.ip()) == environments_address,
        };
        if accepted.send((stream, connection)).await.is_err() {
            return;
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ApiState>,
    connection: Connection,
) -> Result<Response<ApiBody>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = connection.peer;
    let result = dispatch(req, &state, &request_id, connection).await;
    let response = match result {
        Ok(reply) => {
            let body = match reply.stream {
                Some(stream) => Either::Right(streaming::ChannelBody::new(stream)),
                None => Either::Left(Full::new(reply.body)),
            };
            let mut response = Response::new(body);
            *response.status_mut() = reply.status;
            let headers = response.headers_mut();
            if reply.status != StatusCode::NO_CONTENT {
                headers.insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            for (name, value) in reply.headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(error) => {
            tracing::debug!(%peer, %method, %path, code = error.code, status = %error.status, "{}", error.message);
            error_response(&error).map(Either::Left)
        }
    };
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    Ok(response)
}

fn error_response(error: &ApiError) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(error.body())));
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(error.code) {
        headers.insert("x-amzn-errortype", value);
    }
    if error.reason.is_some() {
        headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn dispatch(
    req: Request<Incoming>,
    state: &ApiState,
    request_id: &str,
    connection: Connection,
) -> Result<ApiReply, ApiError> {
    let Connection { peer, secure, .. } = connection;
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let segments = split_path(&raw_path)?;

    // Code downloads are capability URLs (like S3 presigned URLs): the sha is the secret.
    if parts.method == Method::GET
        && let [prefix, file] = segments.as_slice()
        && prefix == "lambent-code"
    {
        return functions::download_code(state, file).await;
    }

    // Prometheus scrapes are unauthenticated, as exporters usually are; but not for
    // functions, to whom the metrics would show every other function's name and traffic.
    if parts.method == Method::GET && segments.len() == 1 && segments[0] == "metrics" {
        if connection.from_environments {
            return Err(ApiError::access_denied(
                "/metrics is not served to execution environments".to_string(),
            ));
        }
        return Ok(metrics_reply(state));
    }

    if let Some(length) = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > MAX_BODY_BYTES
    {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {MAX_BODY_BYTES} bytes for the {} operation",
            operation_hint(&segments)
        )));
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::too_large(format!(
                "Request must be smaller than {MAX_BODY_BYTES} bytes for the {} operation",
                operation_hint(&segments)
            )));
        }
        Err(_) => return Err(ApiError::bad_content("The request body could not be read")),
    };

    // `@connections` calls are signed for `execute-api`; functions reach only this listener.
    if ws_gateway::is_manage_path(&segments) {
        return ws_gateway::manage_on_api(state, &parts, &body, peer, request_id);
    }

    // Bucket notifications carry their source's secret instead of a signature.
    if parts.method == Method::POST
        && let [prefix, notify, name] = segments.as_slice()
        && prefix == "lambent"
        && notify == "s3-notify"
    {
        return s3_sources::notify(state, name, &parts.headers, &raw_query, &body, request_id)
            .await
            .map_err(|error| {
                if error.status == StatusCode::FORBIDDEN {
                    access::failed_auth(peer, error)
                } else {
                    error
                }
            });
    }

    // CloudWatch Logs operations (JSON protocol) are signed for service `logs`.
    let logs_target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.starts_with(logs::TARGET_PREFIX))
        .map(str::to_owned);
    let mut caller = None;
    if state.auth == AuthMode::SigV4 {
        let service = if logs_target.is_some() {
            "logs"
        } else {
            "lambda"
        };
        let signed = Signed {
            parts: &parts,
            raw_path: &raw_path,
            raw_query: &raw_query,
            body: &body,
        };
        caller = Some(authenticate(state, &signed, service, peer, request_id)?);
    }

    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let request = ApiRequest {
        method: parts.method,
        segments,
        query: parse_query(&raw_query),
        headers: parts.headers,
        body,
        request_id: request_id.to_string(),
        host,
        arns: state.arns.clone(),
    };
    let run = async {
        match &logs_target {
            Some(target) => Ok(logs::handle(&request, state, target)),
            None => route(&request, state).await,
        }
    };
    let Some(caller) = caller else {
        return run.await;
    };
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let target = match &logs_target {
        Some(target) => Some(authz::logs_target(
            &state.arns,
            target.strip_prefix(logs::TARGET_PREFIX).unwrap_or(target),
            &request.body,
        )),
        None => admin::target(&state.arns, &request.method, &segments).or_else(|| {
            authz::lambda_target(
                &state.arns,
                &request.method,
                &segments,
                &|key| request.query(key).map(str::to_string),
                &request.body,
            )
        }),
    };
    let record = |target: Option<&authz::Target>, decision: &str, status, error_code: &str| {
        access::audit(
            state,
            &access::AuditEntry {
                caller: Some(&caller),
                access_key_id: &caller.access_key_id,
                target,
                decision,
                peer,
                status,
                error_code,
                request_id,
            },
        );
    };
    if let Some(target) = &target
        && let Err(denied) = access::authorize(state, &caller, target, peer, secure)
    {
        record(Some(target), "Deny", denied.status, denied.code);
        return Err(denied);
    }
    let result = run.await;
    // Invocations are data-plane calls: the audit log keeps control-plane calls and refusals.
    let invoke = target
        .as_ref()
        .is_some_and(|t| t.action == "lambda:InvokeFunction");
    if !invoke {
        let (status, code) = match &result {
            Ok(reply) => (reply.status, ""),
            Err(error) => (error.status, error.code),
        };
        record(target.as_ref(), "Allow", status, code);
    }
    result
}

/// The access key id a request claims in its `Authorization` header (for the audit log of
/// a request whose signature did not verify).
/// The parts of a request a SigV4 signature covers.
pub(crate) struct Signed<'a> {
    /// Method and headers.
    pub parts: &'a http::request::Parts,
    /// The path as sent, before any decoding.
    pub raw_path: &'a str,
    /// The query as sent.
    pub raw_query: &'a str,
    /// The whole body.
    pub body: &'a [u8],
}

/// Verifies a request's SigV4 signature for `service` and returns its caller; refusals are
/// audited and counted against the source address.
pub(crate) fn authenticate(
    state: &ApiState,
    request: &Signed<'_>,
    service: &str,
    peer: SocketAddr,
    request_id: &str,
) -> Result<access::Caller, ApiError> {
    let parts = request.parts;
    let signable = sigv4::SignableRequest {
        method: parts.method.as_str(),
        raw_path: request.raw_path,
        raw_query: request.raw_query,
        headers: &parts.headers,
        body: request.body,
    };
    let claimed = claimed_key_id(&parts.headers);
    let refuse = |error: ApiError| {
        access::audit(
            state,
            &access::AuditEntry {
                caller: None,
                access_key_id: &claimed,
                target: None,
                decision: "AuthFailed",
                peer,
                status: error.status,
                error_code: error.code,
                request_id,
            },
        );
        access::failed_auth(peer, error)
    };
    // Temporary credentials of an execution role carry their own proof in the token.
    let session = match claimed.starts_with("ASIA") {
        false => None,
        true => {
            let token = parts
                .headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let session = state.sessions.verify(&claimed, token).map_err(|e| {
                refuse(ApiError::new(
                    StatusCode::FORBIDDEN,
                    e.aws_code(),
                    e.to_string(),
                ))
            })?;
            Some(session)
        }
    };
    let user_of_key = std::cell::RefCell::new(None);
    let verified = sigv4::verify(
        &signable,
        SystemTime::now(),
        service,
        |key| match &session {
            Some(session) => (key == claimed).then(|| session.secret_access_key.clone()),
            None => {
                // One read (and one decryption) serves the signature and the caller.
                let key = state
                    .store
                    .lookup_access_key(key)
                    .ok()
                    .flatten()
                    .filter(|k| k.status == lambent_store::iam::KEY_ACTIVE)?;
                let secret = key.secret_access_key.clone();
                *user_of_key.borrow_mut() = Some(key.user);
                Some(secret)
            }
        },
    )
    .map_err(|e| {
        refuse(ApiError::new(
            StatusCode::FORBIDDEN,
            e.aws_code(),
            e.to_string(),
        ))
    })?;
    if verified.region != state.arns.region {
        return Err(refuse(ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region, not '{}'. This server's region is \
                 {}: set AWS_REGION (or the client's region) to it.",
                verified.region, state.arns.region
            ),
        )));
    }
    Ok(match &session {
        Some(session) => {
            access::session_caller(state, &verified.access_key_id, session).map_err(refuse)?
        }
        None => {
            let user = user_of_key.borrow_mut().take().unwrap_or_default();
            access::user_caller(state, &verified.access_key_id, user)
        }
    })
}

fn claimed_key_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .map(|id| id.chars().take(128).collect())
        .unwrap_or_default()
}

/// `GET /metrics`: every metric in the Prometheus text format, version 0.0.4.
fn metrics_reply(state: &ApiState) -> ApiReply {
    ApiReply {
        stream: None,
        status: StatusCode::OK,
        body: Bytes::from(state.invoker.render_metrics()),
        headers: vec![(
            hyper::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8".to_string(),
        )],
    }
}

fn operation_hint(segments: &[String]) -> &'static str {
    if segments
        .last()
        .is_some_and(|s| s == "invocations" || s == "response-streaming-invocations")
    {
        "InvokeFunction"
    } else {
        "CreateFunction"
    }
}

/// What an operation module's `route` returns: `None` when the request is not one of its
/// operations, else the operation's answer.
pub(crate) type Routed = Option<Result<ApiReply, ApiError>>;

async fn route(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if let Some(answer) = functions::route(req, state, &segments).await {
        return answer;
    }
    if let Some(answer) = versions::route(req, state, &segments).await {
        return answer;
    }
    if let Some(answer) = layers::route(req, state, &segments).await {
        return answer;
    }
    if let Some(answer) = settings::route(req, state, &segments).await {
        return answer;
    }
    if let Some(answer) = usage::route(req, state, &segments).await {
        return answer;
    }
    if let Some(answer) = queue::route(req, state, &segments) {
        return answer;
    }
    if let Some(answer) = schedules::route(req, state, &segments) {
        return answer;
    }
    if let Some(answer) = s3_sources::route(req, state, &segments) {
        return answer;
    }
    if let Some(answer) = apis::route(req, state, &segments) {
        return answer;
    }
    if let Some(answer) = admin::route(req, state, &segments) {
        return answer;
    }
    let routed = logs::route(req, state, &segments).await;
    routed.unwrap_or_else(|| {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!(
                "Lambent does not implement {} /{}",
                req.method,
                req.segments.join("/")
            ),
        ))
    })
}

/// Splits a raw path into percent-decoded segments, dropping empty ones.
fn split_path(raw: &str) -> Result<Vec<String>, ApiError> {
    raw.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| ApiError::invalid("The request path is not valid UTF-8"))
        })
        .collect()
}

/// Parses a raw query string into decoded pairs (`+` is a space, as form encoding has it).
fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_decodes_paths() {
        let segments = split_path(
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/",
        )
        .unwrap();
        assert_eq!(
            segments,
            vec![
                "2015-03-31",
                "functions",
                "arn:aws:lambda:us-east-1:000000000000:function:f"
            ]
        );
        assert_eq!(split_path("//a//b").unwrap(), vec!["a", "b"]);
        assert!(split_path("/%ff").is_err());
    }

    #[test]
    fn parses_queries() {
        let q = parse_query("Qualifier=%24LATEST&MaxItems=5&flag&a=b+c");
        assert_eq!(q[0], ("Qualifier".into(), "$LATEST".into()));
        assert_eq!(q[1], ("MaxItems".into(), "5".into()));
        assert_eq!(q[2], ("flag".into(), String::new()));
        assert_eq!(q[3], ("a".into(), "b c".into()));
    }
}
