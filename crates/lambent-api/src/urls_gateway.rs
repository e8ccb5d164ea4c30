//! The function URL gateway: a public HTTP listener (`lambent serve --http-listen`) that
//! turns requests to a function URL into payload-format-2.0 events, invokes the function
//! synchronously and maps its answer back to HTTP, as Lambda does. URLs in the
//! `RESPONSE_STREAM` invoke mode stream the answer instead (`urls_streaming`).
//!
//! A URL is addressed by its Host (`<url-id>.lambda-url.<region>.localhost[:port]`) or, for
//! clients that cannot resolve such names, by its path (`/<url-id>/rest/of/path`, the
//! function seeing `/rest/of/path` as its rawPath). Access follows the URL's AuthType:
//! NONE needs a resource-policy statement allowing `lambda:InvokeFunctionUrl` to `*`;
//! AWS_IAM needs a SigV4 signature (service `lambda`) from a caller whom IAM evaluation
//! allows `lambda:InvokeFunctionUrl`. CORS preflights are answered here, never invoked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use lambent_invoke::{InvocationType, InvokeError, InvokeOutput, InvokeRequest};
use lambent_store::kinds;
use lambent_types::{FunctionRef, Qualifier};

use crate::access::{self, Caller};
use crate::authz::Target;
use crate::{ApiBody, ApiState, AuthMode, Signed};

/// Largest request body a URL accepts: Lambda's 6 MB synchronous payload.
const MAX_URL_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Why a URL request got no answer from the function, with the status and `Message` Lambda
/// uses for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    /// No function URL at this address.
    #[error("Not Found")]
    NotFound,
    /// The caller may not invoke the URL (or its signature is wrong).
    #[error("Forbidden")]
    Forbidden,
    /// The request body is over the 6 MB limit.
    #[error("Request Entity Too Large")]
    TooLarge,
    /// A concurrency limit is reached.
    #[error("Rate Exceeded.")]
    Throttled,
    /// The function failed or answered something that is no HTTP response.
    #[error("Internal Server Error")]
    FunctionError,
    /// The function ran out of time.
    #[error("Endpoint request timed out")]
    Timeout,
    /// The server is shutting down.
    #[error("Service Unavailable")]
    Unavailable,
    /// The platform failed.
    #[error("Internal Server Error")]
    Internal,
}

impl UrlError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Self::FunctionError => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        error_response(self.status(), "Message", &self.to_string())
    }
}

/// A JSON error answer `{"<key>": message}` with `status` (function URLs write `Message`,
/// API Gateway `message`).
pub(crate) fn error_response(
    status: StatusCode,
    key: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = json!({ key: message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves function URLs on `listeners` until `shutdown` resolves, then waits up to `drain`
/// for open requests to finish.
pub async fn serve_urls(
    listeners: Vec<TcpListener>,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let accepted_tx = accepted_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            if accepted_tx.send((stream, peer)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("function URL accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    drop(accepted_tx);
    // Connections that may upgrade to WebSockets cannot be watched by `graceful`; they are
    // told to stop through `stopping` and hold a watcher until they end.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            next = accepted.recv() => {
                let Some((stream, peer)) = next else { break };
                let state = state.clone();
                let header_timeout = state.http_header_timeout;
                let watcher = graceful.watcher();
                let mut stopping = stopping.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), peer)
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    let connection = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stopping.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                    drop(watcher);
                });
            }
            () = &mut shutdown => break,
        }
    }
    for acceptor in acceptors {
        acceptor.abort();
    }
    let _ = stop.send(true);
    state.connections.close_all();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some function URL requests were still open after {drain:?}; closing them");
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<ApiState>,
    peer: SocketAddr,
) -> Result<Response<ApiBody>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let api_address = crate::apigw::address(host, &path, &state.arns.region);
    let mut response = match api_address {
        // An API's definition is read once, here, for both kinds of API.
        Some(address) => match crate::apigw::lookup(&state, &address) {
            Ok(api) if api.is_websocket() => {
                return Ok(
                    crate::ws_gateway::serve(req, state, peer, api, address, &request_id)
                        .await
                        .map(Either::Left),
                );
            }
            Ok(api) => crate::apigw::serve(req, &state, peer, &request_id, api, address).await,
            Err(error) => error.response(),
        }
        .map(Either::Left),
        None => match serve_one(req, &state, peer, &request_id).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%peer, %method, %path, status = %error.status(), "function URL: {error}");
                error.response().map(Either::Left)
            }
        },
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    Ok(response)
}

/// Where a request is going: the URL id, the path the function sees and the domain name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Address {
    /// The URL (or API) id.
    pub id: String,
    /// The path the function sees.
    pub raw_path: String,
    /// `requestContext.domainName`.
    pub domain_name: String,
}

fn is_url_id(label: &str) -> bool {
    label.len() == 32
        && label
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The address of a request from its Host header and path: Host-based first, then
/// path-based.
fn address(host: Option<&str>, path: &str, region: &str) -> Option<Address> {
    let path = if path.is_empty() { "/" } else { path };
    if let Some(host) = host {
        let name = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        let name = name.to_ascii_lowercase();
        if let Some((label, rest)) = name.split_once('.')
            && rest.starts_with("lambda-url.")
            && is_url_id(label)
        {
            return Some(Address {
                id: label.to_string(),
                raw_path: path.to_string(),
                domain_name: name.clone(),
            });
        }
    }
    let rest = path.strip_prefix('/')?;
    let (label, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_url_id(label) {
        return None;
    }
    Some(Address {
        id: label.to_string(),
        raw_path: format!("/{tail}"),
        domain_name: format!("{label}.lambda-url.{region}.localhost"),
    })
}

/// Which function and alias each URL id belongs to. An id is a hash of the two, so an entry
/// never changes meaning; only whether its config exists does, and that is read each time.
struct UrlIndex {
    owners: HashMap<String, (String, String)>,
    /// When the configs were last scanned for ids not yet known.
    scanned: Option<Instant>,
}

/// Longest an unknown URL id waits for the next scan of every config (URLs made on this
/// node are known at once; ones made by another node within this).
const RESCAN_PAUSE: Duration = Duration::from_millis(250);

/// Most URL ids remembered (past it, the index is rebuilt by the next scan).
const MAX_INDEXED_URLS: usize = 100_000;

fn url_index() -> &'static Mutex<UrlIndex> {
    static INDEX: OnceLock<Mutex<UrlIndex>> = OnceLock::new();
    INDEX.get_or_init(|| {
        Mutex::new(UrlIndex {
            owners: HashMap::new(),
            scanned: None,
        })
    })
}

/// Records the function and alias of a URL id (when its config is created).
pub(crate) fn remember_url(id: &str, function: &str, alias: &str) {
    let mut index = url_index().lock().unwrap_or_else(PoisonError::into_inner);
    if index.owners.len() >= MAX_INDEXED_URLS {
        index.owners.clear();
        index.scanned = None;
    }
    index
        .owners
        .insert(id.to_string(), (function.to_string(), alias.to_string()));
}

/// The URL config with this id: its function, alias (`""` for none) and document.
fn find_config(state: &ApiState, id: &str) -> Result<(String, String, Value), UrlError> {
    let internal = |e: lambent_store::StoreError| {
        tracing::error!("cannot read function URL configs: {e}");
        UrlError::Internal
    };
    let known = url_index()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .owners
        .get(id)
        .cloned();
    if let Some((function, alias)) = known {
        let doc = state
            .store
            .get_document(kinds::URL_CONFIG, &function, &alias)
            .map_err(internal)?
            .filter(|doc| doc.get("UrlId").and_then(Value::as_str) == Some(id))
            .ok_or(UrlError::NotFound)?;
        return Ok((function, alias, doc));
    }
    {
        let mut index = url_index().lock().unwrap_or_else(PoisonError::into_inner);
        if index.scanned.is_some_and(|at| at.elapsed() < RESCAN_PAUSE) {
            return Err(UrlError::NotFound);
        }
        index.scanned = Some(Instant::now());
    }
    let configs = state
        .store
        .list_documents(kinds::URL_CONFIG, None)
        .map_err(internal)?;
    let mut found = None;
    for (function, alias, doc) in configs {
        let Some(config_id) = doc.get("UrlId").and_then(Value::as_str) else {
            continue;
        };
        remember_url(config_id, &function, &alias);
        if config_id == id {
            found = Some((function, alias, doc));
        }
    }
    found.ok_or(UrlError::NotFound)
}

async fn serve_one(
    req: Request<Incoming>,
    state: &ApiState,
    peer: SocketAddr,
    request_id: &str,
) -> Result<Response<ApiBody>, UrlError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let address =
        address(host.as_deref(), req.uri().path(), &state.arns.region).ok_or(UrlError::NotFound)?;
    let (function, alias, config) = find_config(state, &address.id)?;
    let cors = configured_cors(config.get("Cors"));
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // CORS preflights are the platform's to answer.
    if let Some(response) = preflight(&req, cors.as_ref(), StatusCode::OK) {
        return Ok(response.map(Either::Left));
    }

    let (parts, body) = req.into_parts();
    if let Some(length) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > MAX_URL_BODY_BYTES
    {
        return Err(UrlError::TooLarge);
    }
    let body = match Limited::new(body, MAX_URL_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(UrlError::TooLarge),
        Err(_) => return Err(UrlError::Internal),
    };

    let qualifier = (!alias.is_empty()).then(|| Qualifier::Alias(alias.clone()));
    let target = Target {
        action: "lambda:InvokeFunctionUrl".to_string(),
        resource: state.arns.arn_as_named(&function, qualifier.as_ref()),
    };
    let auth_type = config
        .get("AuthType")
        .and_then(Value::as_str)
        .unwrap_or("AWS_IAM");
    let mut caller = None;
    if state.auth == AuthMode::SigV4 {
        if auth_type == "NONE" {
            if !access::public_allows(
                state,
                &target,
                peer,
                &[("lambda:FunctionUrlAuthType", "NONE")],
            ) {
                tracing::debug!(%function, "public URL without a public InvokeFunctionUrl permission");
                return Err(UrlError::Forbidden);
            }
        } else {
            let signed = Signed {
                parts: &parts,
                raw_path: parts.uri.path(),
                raw_query: parts.uri.query().unwrap_or(""),
                body: &body,
            };
            let verified = crate::authenticate(state, &signed, "lambda", peer, request_id)
                .map_err(|e| {
                    tracing::debug!(%function, "function URL signature refused: {}", e.message);
                    if e.status == StatusCode::TOO_MANY_REQUESTS {
                        UrlError::Throttled
                    } else {
                        UrlError::Forbidden
                    }
                })?;
            access::authorize_with(
                state,
                &verified,
                &target,
                peer,
                false,
                &[("lambda:FunctionUrlAuthType", "AWS_IAM")],
            )
            .map_err(|e| {
                tracing::debug!(%function, "function URL access denied: {}", e.message);
                UrlError::Forbidden
            })?;
            caller = Some(verified);
        }
    }

    let event = event(&EventInput {
        parts: &parts,
        body: &body,
        address: &address,
        peer,
        request_id,
        account_id: &state.arns.account_id,
        caller: caller.as_ref(),
        now: SystemTime::now(),
    });
    let request = InvokeRequest {
        function: FunctionRef {
            name: function.clone(),
            qualifier,
        },
        invocation_type: InvocationType::RequestResponse,
        log_tail: false,
        payload: Bytes::from(event.to_string()),
        client_context: None,
        trace_id: parts
            .headers
            .get("x-amzn-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: request_id.to_string(),
    };
    if config.get("InvokeMode").and_then(Value::as_str) == Some("RESPONSE_STREAM") {
        let mut response = crate::urls_streaming::respond(state, &function, request).await?;
        if let (Some(cors), Some(origin)) = (&cors, &origin) {
            response_cors_headers(cors, origin, response.headers_mut());
        }
        return Ok(response);
    }
    let output = state
        .invoker
        .invoke(request)
        .await
        .map_err(|e| invoke_error(&function, e))?;
    let InvokeOutput::Completed { result, .. } = output else {
        return Err(UrlError::Internal);
    };
    if result.function_error {
        return Err(function_failure(&result.body));
    }
    let mut response = http_response(&result.body).map_err(|why| {
        tracing::info!(%function, "function URL response is invalid: {why}");
        UrlError::FunctionError
    })?;
    if let (Some(cors), Some(origin)) = (&cors, &origin) {
        response_cors_headers(cors, origin, response.headers_mut());
    }
    Ok(response.map(Either::Left))
}

/// The answer to an invocation the invoker refused (or could not run).
pub(crate) fn invoke_error(function: &str, error: InvokeError) -> UrlError {
    match error {
        InvokeError::Throttled(_) => UrlError::Throttled,
        InvokeError::TooLarge(_) => UrlError::TooLarge,
        InvokeError::NotFound(_) => UrlError::NotFound,
        InvokeError::Unavailable(_) => UrlError::Unavailable,
        other => {
            tracing::warn!(%function, "function URL invocation failed: {other}");
            UrlError::Internal
        }
    }
}

/// The answer to a failed function, from its error document: 504 for a timeout, else 502.
pub(crate) fn function_failure(error_document: &[u8]) -> UrlError {
    let timed_out = serde_json::from_slice::<Value>(error_document)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .is_some_and(|t| t == "Sandbox.Timedout");
    if timed_out {
        UrlError::Timeout
    } else {
        UrlError::FunctionError
    }
}

/// What goes into a payload-format-2.0 event.
pub(crate) struct EventInput<'a> {
    pub parts: &'a http::request::Parts,
    pub body: &'a [u8],
    pub address: &'a Address,
    pub peer: SocketAddr,
    pub request_id: &'a str,
    pub account_id: &'a str,
    pub caller: Option<&'a Caller>,
    pub now: SystemTime,
}

/// Content types whose bodies pass as text; any other body is base64-encoded.
pub(crate) fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("/json")
        || essence.ends_with("+json")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || essence == "application/javascript"
        || essence == "application/x-www-form-urlencoded"
        || essence == "application/yaml"
        || essence == "application/graphql"
}

/// Percent-decodes a query component (`+` is a space, as in forms).
pub(crate) fn decode_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// `12/Mar/2020:19:03:58 +0000`.
pub(crate) fn request_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The payload-format-2.0 event Lambda sends a function behind a URL.
pub(crate) fn event(input: &EventInput<'_>) -> Value {
    let parts = input.parts;
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if *name == header::COOKIE {
            cookies.extend(
                values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        headers.insert(name.as_str().to_string(), json!(values.join(",")));
    }
    let forwarded = [
        ("x-forwarded-for", input.peer.ip().to_string()),
        ("x-forwarded-proto", "http".to_string()),
        (
            "x-forwarded-port",
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(|h| h.rsplit_once(':'))
                .map_or_else(|| "80".to_string(), |(_, port)| port.to_string()),
        ),
    ];
    for (name, value) in forwarded {
        headers.entry(name).or_insert_with(|| json!(value));
    }

    let raw_query = parts.uri.query().unwrap_or("");
    let mut query: Map<String, Value> = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode_component(key), decode_component(value));
        match query.get_mut(&key) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                query.insert(key, json!(value));
            }
        }
    }

    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let protocol = match parts.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let domain_prefix = input.address.id.clone();
    // AWS writes `anonymous` for calls to NONE URLs.
    let account_id = if input.caller.is_some() {
        input.account_id
    } else {
        "anonymous"
    };
    let mut context = json!({
        "accountId": account_id,
        "apiId": input.address.id,
        "domainName": input.address.domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": parts.method.as_str(),
            "path": input.address.raw_path,
            "protocol": protocol,
            "sourceIp": input.peer.ip().to_string(),
            "userAgent": user_agent,
        },
        "requestId": input.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": request_time(input.now),
        "timeEpoch": lambent_types::time::epoch_millis(input.now),
    });
    if let Some(caller) = input.caller {
        context["authorizer"] = json!({
            "iam": {
                "accessKey": caller.access_key_id,
                "accountId": input.account_id,
                "callerId": caller.access_key_id,
                "cognitoIdentity": null,
                "principalOrgId": null,
                "userArn": caller.arn,
                "userId": caller.name,
            }
        });
    }

    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": input.address.raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !input.body.is_empty() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(input.body) {
            Ok(text) if is_text(content_type) => event["body"] = json!(text),
            _ => {
                event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(input.body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

/// A header value of a response object as text (numbers and booleans are written out).
pub(crate) fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Appends a header given by a function, refusing names and values that are not HTTP.
pub(crate) fn append_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
    let value = HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
    headers.append(name, value);
    Ok(())
}

/// Maps a function's result to the HTTP response: an object with `statusCode` is a
/// response; anything else is a 200 `application/json` body.
pub(crate) fn http_response(payload: &[u8]) -> Result<Response<Full<Bytes>>, String> {
    let parsed: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(Value::Object(object)) = parsed
        .as_ref()
        .filter(|v| v.as_object().is_some_and(|o| o.contains_key("statusCode")))
    else {
        // A JSON string is its text; any other JSON (or non-JSON) is the body as returned.
        let body = match &parsed {
            Some(Value::String(text)) => Bytes::from(text.clone()),
            _ => Bytes::copy_from_slice(payload),
        };
        let mut response = Response::new(Full::new(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    };
    let status = match &object["statusCode"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|code| u16::try_from(code).ok())
    .and_then(|code| StatusCode::from_u16(code).ok())
    .ok_or("statusCode is not an HTTP status")?;
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(given)) = object.get("headers") {
        for (name, value) in given {
            if let Some(text) = header_text(value) {
                append_header(&mut headers, name, &text)?;
            }
        }
    }
    if let Some(Value::Object(given)) = object.get("multiValueHeaders") {
        for (name, values) in given {
            for value in values.as_array().into_iter().flatten() {
                if let Some(text) = header_text(value) {
                    append_header(&mut headers, name, &text)?;
                }
            }
        }
    }
    if let Some(Value::Array(cookies)) = object.get("cookies") {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            append_header(&mut headers, "set-cookie", cookie)?;
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let body = match object.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) => {
            if object.get("isBase64Encoded") == Some(&Value::Bool(true)) {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| "body is not valid base64")?,
                )
            } else {
                Bytes::from(text.clone())
            }
        }
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn cors_list(cors: &Value, key: &str) -> Vec<String> {
    cors.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The `Access-Control-Allow-Origin` value for an origin, if the config allows it.
fn allowed_origin(cors: &Value, origin: &str) -> Option<String> {
    let origins = cors_list(cors, "AllowOrigins");
    if origins.iter().any(|o| o == "*") {
        let credentials = cors.get("AllowCredentials") == Some(&Value::Bool(true));
        // With credentials, browsers refuse `*`: echo the origin instead.
        let allowed = if credentials { origin } else { "*" };
        return Some(allowed.to_string());
    }
    origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then(|| origin.to_string())
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// A CORS configuration that configures something (an empty `{}`, as an update may leave
/// it, is none).
pub(crate) fn configured_cors(cors: Option<&Value>) -> Option<Value> {
    cors.filter(|c| {
        c.as_object()
            .is_some_and(|o| o.values().any(|v| !v.is_null()))
    })
    .cloned()
}

/// The gateway's answer (with `status`) to a CORS preflight: an `OPTIONS` request with
/// `Origin` and `Access-Control-Request-Method`, when CORS is configured; `None` for any
/// other request, which goes on to the function.
pub(crate) fn preflight<B>(
    req: &Request<B>,
    cors: Option<&Value>,
    status: StatusCode,
) -> Option<Response<Full<Bytes>>> {
    let cors = cors?;
    let origin = req.headers().get(header::ORIGIN)?.to_str().ok()?;
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    preflight_headers(cors, origin, response.headers_mut());
    Some(response)
}

/// The answer to a preflight: what the config allows, nothing when the origin is not allowed.
fn preflight_headers(cors: &Value, origin: &str, headers: &mut HeaderMap) {
    let Some(allow_origin) = allowed_origin(cors, origin) else {
        return;
    };
    set(headers, "access-control-allow-origin", &allow_origin);
    let methods = cors_list(cors, "AllowMethods");
    if !methods.is_empty() {
        set(headers, "access-control-allow-methods", &methods.join(","));
    }
    let allow_headers = cors_list(cors, "AllowHeaders");
    if !allow_headers.is_empty() {
        set(
            headers,
            "access-control-allow-headers",
            &allow_headers.join(","),
        );
    }
    if let Some(age) = cors.get("MaxAge").and_then(Value::as_i64) {
        set(headers, "access-control-max-age", &age.to_string());
    }
    if cors.get("AllowCredentials") == Some(&Value::Bool(true)) {
        set(headers, "access-control-allow-credentials", "true");
    }
    set(headers, "vary", "Origin");
}

/// The CORS headers of an ordinary response (they replace any the function set).
pub(crate) fn response_cors_headers(cors: &Value, origin: &str, headers: &mut HeaderMap) {
    let Some(allow_origin) = allowed_origin(cors, origin) else {
        return;
    };
    set(headers, "access-control-allow-origin", &allow_origin);
    let expose = cors_list(cors, "ExposeHeaders");
    if !expose.is_empty() {
        set(headers, "access-control-expose-headers", &expose.join(","));
    }
    if cors.get("AllowCredentials") == Some(&Value::Bool(true)) {
        set(headers, "access-control-allow-credentials", "true");
    }
    set(headers, "vary", "Origin");
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn addresses_by_host_and_by_path() {
        let host = format!("{ID}.lambda-url.us-east-1.localhost:9080");
        let a = address(Some(&host), "/a/b", "us-east-1").unwrap();
        assert_eq!(a.id, ID);
        assert_eq!(a.raw_path, "/a/b");
        assert_eq!(
            a.domain_name,
            format!("{ID}.lambda-url.us-east-1.localhost")
        );
        let b = address(Some("127.0.0.1:9080"), &format!("/{ID}/x/y"), "us-east-1").unwrap();
        assert_eq!(b.id, ID);
        assert_eq!(b.raw_path, "/x/y");
        let c = address(Some("127.0.0.1:9080"), &format!("/{ID}"), "us-east-1").unwrap();
        assert_eq!(c.raw_path, "/");
        assert!(address(Some("127.0.0.1"), "/short/x", "us-east-1").is_none());
    }

    #[test]
    fn request_time_format() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_583_348_638_390);
        assert_eq!(request_time(at), "04/Mar/2020:19:03:58 +0000");
    }

    #[test]
    fn maps_responses() {
        let r = http_response(
            br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["a=1","b=2"],"body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = http_response(br#"{"a":1}"#).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = http_response(br#"{"statusCode":"nope"}"#);
        assert!(r.is_err());
        let r = http_response(br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#);
        assert!(r.is_err());
    }

    #[test]
    fn text_types() {
        assert!(is_text(Some("application/json; charset=utf-8")));
        assert!(is_text(Some("text/plain")));
        assert!(is_text(None));
        assert!(!is_text(Some("application/octet-stream")));
        assert!(!is_text(Some("image/png")));
    }

    #[test]
    fn cors_origins() {
        let cors = json!({"AllowOrigins": ["https://a.example"], "AllowCredentials": true});
        assert_eq!(
            allowed_origin(&cors, "https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert!(allowed_origin(&cors, "https://b.example").is_none());
        let any = json!({"AllowOrigins": ["*"]});
        assert_eq!(
            allowed_origin(&any, "https://b.example").as_deref(),
            Some("*")
        );
    }
}
