//! WebSocket APIs on the gateway listener, and the `@connections` management API.
//!
//! A client opens a WebSocket to a stage of an API whose `ProtocolType` is `WEBSOCKET`
//! (`ws://<api-id>.execute-api.<region>.localhost:<port>/<stage>`, or
//! `ws://<host>:<port>/<api-id>/<stage>`). As API Gateway does, the `$connect` route's
//! function decides whether the connection is accepted (before the handshake completes);
//! each message is routed by the API's `RouteSelectionExpression` (`$request.body.action`)
//! to a route, or to `$default`; a route with `RouteResponseSelectionExpression: $default`
//! sends its function's answer back; `$disconnect` is invoked after the socket closed.
//!
//! Backends talk to connected clients through `@connections`: `POST` (send), `GET`
//! (describe) and `DELETE` (close) on `/<stage>/@connections/<id>`, signed with SigV4 for
//! service `execute-api` and authorized by `execute-api:ManageConnections`. It is served on
//! the gateway listener and on the main API listener (`/<api-id>/<stage>/@connections/<id>`,
//! which functions reach as `AWS_ENDPOINT_URL`). Connections live in this node's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use crate::apigw::{self, ApiAddress, GatewayError};
use crate::apis::{self, Api, Route, Stage};
use crate::authz::Target;
use crate::{ApiError, ApiReply, ApiState, AuthMode, Signed, access};

/// Largest message a client may send, and largest `@connections` POST body: API Gateway's
/// 128 KB message payload limit. A bigger message closes the connection with 1009.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Largest single frame accepted. API Gateway splits its 128 KB messages into 32 KB frames;
/// clients here may send a whole message in one frame.
pub const MAX_FRAME_BYTES: usize = MAX_MESSAGE_BYTES;

/// A connection without any frame from the client or message to it for this long is closed
/// (code 1001), as API Gateway's idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A connection is closed (code 1001) after this long, as API Gateway's maximum connection
/// duration.
pub const MAX_CONNECTION_DURATION: Duration = Duration::from_secs(2 * 60 * 60);

/// Messages waiting to be written to one client; beyond this `@connections` POSTs get 429.
const OUTBOX_MESSAGES: usize = 256;

/// How long a closing socket gets to send its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why an upgrade to a WebSocket was refused.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// No deployed stage at this address.
    #[error("Forbidden")]
    NoStage,
    /// The `$connect` function rejected the connection (a non-2xx statusCode) or the caller
    /// may not connect.
    #[error("Forbidden")]
    Rejected,
    /// The `$connect` route's Lambda authorizer found no identity in the request.
    #[error("Unauthorized")]
    Unauthorized,
    /// The request is not a WebSocket upgrade.
    #[error("Upgrade Required")]
    NotUpgrade,
    /// The `$connect` function failed, or the platform did.
    #[error("Internal server error")]
    Failed,
}

impl ConnectError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoStage | Self::Rejected => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotUpgrade => StatusCode::UPGRADE_REQUIRED,
            Self::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A close the socket task is asked to make: its code and reason.
type CloseRequest = (CloseCode, &'static str);

/// One open connection, as `@connections` sees it.
#[derive(Debug)]
struct Entry {
    api_id: String,
    stage: String,
    connected_at: SystemTime,
    last_active_at: SystemTime,
    source_ip: String,
    user_agent: String,
    /// Messages to write to the client (text when they are UTF-8).
    outbox: mpsc::Sender<Bytes>,
    /// Asks the socket task to close the connection.
    closer: mpsc::Sender<CloseRequest>,
    /// A DELETE closed it: it is gone for `@connections` even before the socket ends.
    closing: bool,
}

/// The WebSocket connections open on this node, shared by the gateway and the API listener.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Why a message could not be handed to a connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum SendError {
    /// No such connection (or it is closed).
    #[error("gone")]
    Gone,
    /// Its outbox is full.
    #[error("full")]
    Full,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Asks every connection to close (code 1001, server going away).
    pub fn close_all(&self) {
        for entry in self.lock().values() {
            let _ = entry.closer.try_send((CloseCode::Away, "Going away"));
        }
    }

    fn insert(&self, id: String, entry: Entry) {
        self.lock().insert(id, entry);
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Marks a connection closing and asks its socket to close; `false` when it is gone.
    fn close(&self, api_id: &str, stage: &str, id: &str) -> bool {
        self.find(api_id, stage, id, |entry| {
            entry.closing = true;
            let _ = entry.closer.try_send((CloseCode::Normal, ""));
        })
        .is_some()
    }

    fn touch(&self, id: &str) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.last_active_at = SystemTime::now();
        }
    }

    fn find<T>(
        &self,
        api_id: &str,
        stage: &str,
        id: &str,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Option<T> {
        let mut table = self.lock();
        table
            .get_mut(id)
            .filter(|e| {
                e.api_id == api_id && e.stage == stage && !e.closing && !e.outbox.is_closed()
            })
            .map(f)
    }

    fn send(&self, api_id: &str, stage: &str, id: &str, message: Bytes) -> Result<(), SendError> {
        let sent = self.find(api_id, stage, id, |entry| {
            entry.last_active_at = SystemTime::now();
            entry.outbox.try_send(message)
        });
        match sent {
            None | Some(Err(mpsc::error::TrySendError::Closed(_))) => Err(SendError::Gone),
            Some(Err(mpsc::error::TrySendError::Full(_))) => Err(SendError::Full),
            Some(Ok(())) => Ok(()),
        }
    }
}

/// A new connection id in API Gateway's shape: 11 random bytes in base64 (16 characters
/// ending in `=`), with `+` and `/` replaced so the id needs no escaping but `=`.
fn connection_id() -> String {
    let mut bytes = [0u8; 11];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> (i * 7)) as u8;
        }
    }
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .replace('+', "P")
        .replace('/', "S")
}

/// Answers a gateway request to a WebSocket API: an upgrade to a stage, or `@connections`;
/// the response carries the request id in `x-amzn-RequestId`.
pub(crate) async fn serve(
    req: Request<Incoming>,
    state: Arc<ApiState>,
    peer: SocketAddr,
    api: Api,
    address: ApiAddress,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut response = answer(req, state, peer, api, address, request_id).await;
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<ApiState>,
    peer: SocketAddr,
    api: Api,
    address: ApiAddress,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let stage = apigw::stage_of(&api, &address.path).map(|(s, rest)| (s.stage_name.clone(), rest));
    if let Some((stage, rest)) = &stage
        && let Some(raw_id) = rest.strip_prefix("/@connections/")
    {
        let (parts, body) = req.into_parts();
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(error) => return reply_response(Err(error)),
        };
        let reply = manage(
            &state,
            &Manage {
                parts: &parts,
                body: &body,
                api_id: &api.api_id,
                stage,
                raw_id,
                peer,
                request_id,
            },
        );
        return reply_response(reply);
    }
    match connect(req, state, peer, &api, &address, stage, request_id).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(api = %api.api_id, %peer, "WebSocket connect refused: {error}");
            let body = json!({ "message": error.to_string() }).to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = error.status();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_MESSAGE_BYTES + 1).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "The request body could not be read",
        )),
    }
}

fn reply_response(reply: Result<ApiReply, ApiError>) -> Response<Full<Bytes>> {
    match reply {
        Ok(reply) => {
            let mut response = Response::new(Full::new(reply.body));
            *response.status_mut() = reply.status;
            if reply.status != StatusCode::NO_CONTENT {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            response
        }
        Err(error) => crate::error_response(&error),
    }
}

/// An `@connections` request.
pub(crate) struct Manage<'a> {
    /// Method and headers.
    pub parts: &'a http::request::Parts,
    /// The whole body.
    pub body: &'a [u8],
    /// The API the path names.
    pub api_id: &'a str,
    /// The stage the path names.
    pub stage: &'a str,
    /// The connection id as sent (percent-encoded).
    pub raw_id: &'a str,
    /// The caller's address.
    pub peer: SocketAddr,
    /// This request's id.
    pub request_id: &'a str,
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLargeException",
        format!("Message payload must be at most {MAX_MESSAGE_BYTES} bytes"),
    )
}

fn gone(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "GoneException",
        format!("Connection {id} is not connected"),
    )
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "ForbiddenException", message)
}

/// Whether a main-listener request is an `@connections` one: `/<api-id>/<stage>/@connections/<id>`.
pub(crate) fn is_manage_path(segments: &[String]) -> bool {
    matches!(segments, [api, _, at, _] if at == "@connections" && apis::is_api_id(api))
}

/// Serves `@connections` on the main API listener (`/<api-id>/<stage>/@connections/<id>`).
pub(crate) fn manage_on_api(
    state: &ApiState,
    parts: &http::request::Parts,
    body: &[u8],
    peer: SocketAddr,
    request_id: &str,
) -> Result<ApiReply, ApiError> {
    let raw: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let [api_id, stage, _, raw_id] = raw.as_slice() else {
        return Err(ApiError::not_found("Not Found"));
    };
    let api = apis::load(state, api_id)?
        .filter(Api::is_websocket)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NotFoundException", "Not Found"))?;
    if api.stage(stage).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            format!("Invalid stage identifier specified {stage}"),
        ));
    }
    manage(
        state,
        &Manage {
            parts,
            body,
            api_id,
            stage,
            raw_id,
            peer,
            request_id,
        },
    )
}

/// `@connections`: POST sends the body to the connection, GET describes it, DELETE closes it.
pub(crate) fn manage(state: &ApiState, req: &Manage<'_>) -> Result<ApiReply, ApiError> {
    let id = percent_encoding::percent_decode_str(req.raw_id)
        .decode_utf8_lossy()
        .into_owned();
    let method = &req.parts.method;
    if state.auth == AuthMode::SigV4 {
        let signed = Signed {
            parts: req.parts,
            raw_path: req.parts.uri.path(),
            raw_query: req.parts.uri.query().unwrap_or(""),
            body: req.body,
        };
        let caller = crate::authenticate(state, &signed, "execute-api", req.peer, req.request_id)
            .map_err(|e| {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                e
            } else {
                forbidden(e.message)
            }
        })?;
        let target = Target {
            action: "execute-api:ManageConnections".to_string(),
            resource: format!(
                "arn:aws:execute-api:{}:{}:{}/{}/{}/@connections/{id}",
                state.arns.region, state.arns.account_id, req.api_id, req.stage, method
            ),
        };
        access::authorize_with(state, &caller, &target, req.peer, false, &[])
            .map_err(|e| forbidden(e.message))?;
    }
    let connections = &state.connections;
    match *method {
        Method::POST => {
            if req.body.len() > MAX_MESSAGE_BYTES {
                return Err(too_large());
            }
            let data = Bytes::copy_from_slice(req.body);
            match connections.send(req.api_id, req.stage, &id, data) {
                Ok(()) => Ok(ApiReply::empty(StatusCode::OK)),
                Err(SendError::Gone) => Err(gone(&id)),
                Err(SendError::Full) => Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "LimitExceededException",
                    format!("Connection {id} has {OUTBOX_MESSAGES} messages waiting"),
                )),
            }
        }
        Method::GET => {
            let described = connections.find(req.api_id, req.stage, &id, |entry| {
                json!({
                    "connectedAt": lambent_types::time::iso8601_millis(entry.connected_at),
                    "identity": {"sourceIp": entry.source_ip, "userAgent": entry.user_agent},
                    "lastActiveAt": lambent_types::time::iso8601_millis(entry.last_active_at),
                })
            });
            described
                .map(|body| ApiReply::json(StatusCode::OK, &body))
                .ok_or_else(|| gone(&id))
        }
        Method::DELETE => {
            if connections.close(req.api_id, req.stage, &id) {
                Ok(ApiReply::empty(StatusCode::NO_CONTENT))
            } else {
                Err(gone(&id))
            }
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequestException",
            format!("{method} is not an @connections operation (POST, GET, DELETE)"),
        )),
    }
}

/// What every event of one connection shares.
#[derive(Debug, Clone)]
struct ConnectionInfo {
    connection_id: String,
    api_id: String,
    stage: String,
    domain_name: String,
    connected_at: SystemTime,
    source_ip: String,
    user_agent: String,
    headers: Map<String, Value>,
    multi_value_headers: Map<String, Value>,
    routes: Vec<Route>,
    selection_expression: String,
    /// What the `$connect` route's Lambda authorizer allowed with (`principalId` and its
    /// context), given to every event of the connection.
    authorizer: Option<Value>,
}

impl ConnectionInfo {
    /// The `requestContext` of an event.
    fn context(
        &self,
        route_key: &str,
        event_type: &str,
        request_id: &str,
        now: SystemTime,
    ) -> Value {
        let message_id = (event_type == "MESSAGE").then(connection_id);
        let mut context = json!({
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": crate::urls_gateway::request_time(now),
            "messageDirection": "IN",
            "messageId": message_id,
            "stage": self.stage,
            "connectedAt": lambent_types::time::epoch_millis(self.connected_at),
            "requestTimeEpoch": lambent_types::time::epoch_millis(now),
            "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": self.connection_id,
            "apiId": self.api_id,
        });
        if let Some(authorizer) = &self.authorizer {
            context["authorizer"] = authorizer.clone();
        }
        context
    }

    fn route(&self, key: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.route_key == key)
    }
}

/// How one integration call ended.
enum Called {
    /// The function answered.
    Answer(Bytes),
    /// The function failed, timed out, or could not be invoked.
    Failed,
}

async fn call(state: &ApiState, route: &Route, event: &Value, request_id: &str) -> Called {
    let limit = Duration::from_millis(route.timeout_in_millis);
    match apigw::invoke(state, &route.target, event.clone(), request_id, None, limit).await {
        Ok(answer) => Called::Answer(answer),
        Err(error) => {
            tracing::info!(route = %route.route_key, target = %route.target, "WebSocket route's function failed: {error}");
            Called::Failed
        }
    }
}

/// The status code a `$connect` answer carries, if any.
fn status_code(answer: &Value) -> Option<u64> {
    match answer.get("statusCode")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_upgrade(parts: &http::request::Parts) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    parts.method == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            == Some(b"13")
        && parts.headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

/// The value of a WebSocket identity source (`route.request.header.X`,
/// `route.request.querystring.X`, `stageVariables.X`, or the same with `$`) in a `$connect`
/// request; `None` when absent or empty.
fn connect_identity(
    parts: &http::request::Parts,
    variables: &std::collections::BTreeMap<String, String>,
    source: &str,
) -> Option<String> {
    let source = source.trim_start_matches('$');
    let source = source.strip_prefix("route.").unwrap_or(source);
    let value = if let Some(name) = source.strip_prefix("request.header.") {
        parts
            .headers
            .get_all(name.to_ascii_lowercase().as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    } else if let Some(name) = source.strip_prefix("request.querystring.") {
        let (query, _) = apigw::query_maps(parts.uri.query().unwrap_or(""));
        query
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else if let Some(name) = source.strip_prefix("stageVariables.") {
        variables.get(name).cloned().unwrap_or_default()
    } else {
        String::new()
    };
    (!value.is_empty()).then_some(value)
}

/// Checks a `$connect` route's own authorization: `AWS_IAM` needs a SigV4 signature
/// (service `execute-api`) from a caller allowed `execute-api:Invoke` on the route;
/// `CUSTOM` runs its Lambda (REQUEST) authorizer, whose answer (`principalId` and context)
/// is returned for the connection's events.
async fn authorize_connect(
    state: &ApiState,
    route: &Route,
    stage: &Stage,
    parts: &http::request::Parts,
    info: &ConnectionInfo,
    peer: SocketAddr,
    request_id: &str,
) -> Result<Option<Value>, ConnectError> {
    let variables = &stage.stage_variables;
    let route_arn = format!(
        "arn:aws:execute-api:{}:{}:{}/{}/$connect",
        state.arns.region, state.arns.account_id, info.api_id, info.stage
    );
    match route.authorization_type.as_str() {
        "NONE" => Ok(None),
        "AWS_IAM" if state.auth == AuthMode::Disabled => Ok(None),
        "AWS_IAM" => {
            let signed = Signed {
                parts,
                raw_path: parts.uri.path(),
                raw_query: parts.uri.query().unwrap_or(""),
                body: &[],
            };
            let caller = crate::authenticate(state, &signed, "execute-api", peer, request_id)
                .map_err(|_| ConnectError::Rejected)?;
            let target = Target {
                action: "execute-api:Invoke".to_string(),
                resource: route_arn,
            };
            access::authorize_with(state, &caller, &target, peer, false, &[])
                .map_err(|_| ConnectError::Rejected)?;
            Ok(None)
        }
        "CUSTOM" => {
            let authorizer = route
                .authorizer_id
                .as_deref()
                .and_then(|id| {
                    let deployment = stage.deployment.as_ref()?;
                    deployment.authorizers.iter().find(|a| a.authorizer_id == id)
                })
                .ok_or_else(|| {
                    tracing::warn!(api = %info.api_id, "the $connect route names a missing authorizer");
                    ConnectError::Failed
                })?;
            let mut identity = Vec::new();
            for source in &authorizer.identity_source {
                identity.push(
                    connect_identity(parts, variables, source).ok_or(ConnectError::Unauthorized)?,
                );
            }
            let (query, multi_query) = apigw::query_maps(parts.uri.query().unwrap_or(""));
            let event = json!({
                "type": "REQUEST",
                "methodArn": route_arn,
                "headers": info.headers,
                "multiValueHeaders": info.multi_value_headers,
                "queryStringParameters": query,
                "multiValueQueryStringParameters": multi_query,
                "stageVariables": variables,
                "requestContext": info.context("$connect", "CONNECT", request_id, SystemTime::now()),
            });
            let (context, principal_id) = crate::apigw::lambda_decision(
                state,
                &info.api_id,
                authorizer,
                &identity,
                event,
                &route_arn,
                request_id,
            )
            .await
            .map_err(|e| match e {
                GatewayError::Forbidden => ConnectError::Rejected,
                GatewayError::Unauthorized(_) => ConnectError::Unauthorized,
                _ => ConnectError::Failed,
            })?;
            let mut given = context;
            if let Some(principal) = principal_id {
                given.insert("principalId".into(), json!(principal));
            }
            Ok(Some(Value::Object(given)))
        }
        other => {
            tracing::warn!(api = %info.api_id, "the $connect route's {other} authorization is not supported on WebSocket APIs; refusing the connection");
            Err(ConnectError::Failed)
        }
    }
}

async fn connect(
    mut req: Request<Incoming>,
    state: Arc<ApiState>,
    peer: SocketAddr,
    api: &Api,
    address: &ApiAddress,
    stage: Option<(String, String)>,
    request_id: &str,
) -> Result<Response<Full<Bytes>>, ConnectError> {
    let (stage_name, rest) = stage.ok_or(ConnectError::NoStage)?;
    if !rest.trim_start_matches('/').is_empty() {
        return Err(ConnectError::NoStage);
    }
    let stage = api.stage(&stage_name).ok_or(ConnectError::NoStage)?;
    let deployment = stage.deployment.as_ref().ok_or(ConnectError::NoStage)?;
    let routes = deployment.routes.clone();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    if !is_upgrade(&parts) {
        return Err(ConnectError::NotUpgrade);
    }
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let (headers, multi_value_headers) =
        apigw::header_maps(&parts.headers, |values| Some(values.join(",")));
    let now = SystemTime::now();
    let mut info = ConnectionInfo {
        connection_id: connection_id(),
        api_id: api.api_id.clone(),
        stage: stage_name,
        domain_name: address.domain_name.clone(),
        connected_at: now,
        source_ip: peer.ip().to_string(),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        headers,
        multi_value_headers,
        routes,
        selection_expression: api.route_selection_expression.clone(),
        authorizer: None,
    };

    let mut protocol = None;
    if let Some(route) = info.route("$connect").cloned() {
        info.authorizer =
            authorize_connect(&state, &route, stage, &parts, &info, peer, request_id).await?;
        let route = &route;
        let mut event = json!({
            "headers": info.headers,
            "multiValueHeaders": info.multi_value_headers,
            "requestContext": info.context("$connect", "CONNECT", request_id, now),
            "isBase64Encoded": false,
        });
        let (query, multi_query) = apigw::query_maps(parts.uri.query().unwrap_or(""));
        if !query.is_empty() {
            event["queryStringParameters"] = Value::Object(query);
            event["multiValueQueryStringParameters"] = Value::Object(multi_query);
        }
        let Called::Answer(answer) = call(&state, route, &event, request_id).await else {
            return Err(ConnectError::Failed);
        };
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if let Some(code) = status_code(&answer)
            && !(200..300).contains(&code)
        {
            tracing::debug!(api = %info.api_id, code, "$connect rejected the connection");
            return Err(ConnectError::Rejected);
        }
        protocol = answer
            .get("headers")
            .and_then(|h| h.as_object())
            .and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
            })
            .and_then(|(_, v)| v.as_str())
            .and_then(|v| HeaderValue::from_str(v).ok());
    }

    let (outbox, inbox) = mpsc::channel(OUTBOX_MESSAGES);
    let (closer, close_requests) = mpsc::channel(1);
    state.connections.insert(
        info.connection_id.clone(),
        Entry {
            api_id: info.api_id.clone(),
            stage: info.stage.clone(),
            connected_at: now,
            last_active_at: now,
            source_ip: info.source_ip.clone(),
            user_agent: info.user_agent.clone(),
            outbox: outbox.clone(),
            closer,
            closing: false,
        },
    );
    tracing::debug!(api = %info.api_id, stage = %info.stage, connection = %info.connection_id, %peer, "WebSocket connected");
    let socket_state = state.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(connection = %info.connection_id, "WebSocket upgrade failed: {e}");
                socket_state.connections.remove(&info.connection_id);
                disconnect(&socket_state, &info, 1006, "Upgrade failed").await;
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        let info = Arc::new(info);
        let channels = Channels {
            inbox,
            close_requests,
        };
        let on_message = |data, binary| spawn_message(&socket_state, &info, data, binary, &outbox);
        let (code, reason) = run_socket(
            &socket_state.connections,
            &info.connection_id,
            ws,
            channels,
            LIMITS,
            on_message,
        )
        .await;
        socket_state.connections.remove(&info.connection_id);
        tracing::debug!(connection = %info.connection_id, code, "WebSocket disconnected");
        disconnect(&socket_state, &info, code, &reason).await;
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(response)
}

/// The channels of one socket task.
struct Channels {
    /// Messages to write to the client.
    inbox: mpsc::Receiver<Bytes>,
    /// Closes asked for by DELETE or shutdown.
    close_requests: mpsc::Receiver<CloseRequest>,
}

/// How long a socket may stay idle and open.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    max_duration: Duration,
}

/// API Gateway's limits.
const LIMITS: Limits = Limits {
    idle: IDLE_TIMEOUT,
    max_duration: MAX_CONNECTION_DURATION,
};

/// Serves one open socket until it closes, handing each message (and whether it is binary)
/// to `on_message`; returns the close code and reason for `$disconnect`.
async fn run_socket<S>(
    connections: &Connections,
    connection_id: &str,
    mut ws: WebSocketStream<S>,
    channels: Channels,
    limits: Limits,
    on_message: impl Fn(Bytes, bool),
) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Channels {
        mut inbox,
        mut close_requests,
    } = channels;
    let deadline = tokio::time::Instant::now() + limits.max_duration;
    let mut idle = tokio::time::Instant::now() + limits.idle;
    loop {
        tokio::select! {
            frame = ws.next() => {
                idle = tokio::time::Instant::now() + limits.idle;
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        connections.touch(connection_id);
                        on_message(Bytes::from(text), false);
                    }
                    Some(Ok(Message::Binary(data))) => {
                        connections.touch(connection_id);
                        on_message(data, true);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        // The close reply is queued; flushing sends it.
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                        return match frame {
                            Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                            None => (1005, String::new()),
                        };
                    }
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        close(&mut ws, CloseCode::Size, "Message too big").await;
                        return (1009, "Message too big".into());
                    }
                    Some(Err(e)) => {
                        tracing::debug!(connection = %connection_id, "WebSocket ended without a close: {e}");
                        return (1006, "Connection closed abnormally".into());
                    }
                    None => return (1006, "Connection closed abnormally".into()),
                }
            }
            Some(data) = inbox.recv() => {
                idle = tokio::time::Instant::now() + limits.idle;
                connections.touch(connection_id);
                let message = match String::from_utf8(data.to_vec()) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(data),
                };
                if ws.send(message).await.is_err() {
                    return (1006, "Connection closed abnormally".into());
                }
            }
            Some((code, reason)) = close_requests.recv() => {
                close(&mut ws, code, reason).await;
                return (u16::from(code), reason.to_string());
            }
            () = tokio::time::sleep_until(idle) => {
                close(&mut ws, CloseCode::Away, "Going away").await;
                return (1001, "Going away".into());
            }
            () = tokio::time::sleep_until(deadline) => {
                close(&mut ws, CloseCode::Away, "Going away").await;
                return (1001, "Going away".into());
            }
        }
    }
}

/// Sends a close frame and waits briefly for the client's reply.
async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The route key a message selects with a `$request.body.<path>` expression.
fn select_route_key(expression: &str, body: &[u8]) -> Option<String> {
    let path = expression.strip_prefix("$request.body.")?;
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let mut at = &parsed;
    for part in path.split('.') {
        at = at.get(part)?;
    }
    at.as_str().map(str::to_owned)
}

/// The route a message goes to: the selected route key's route, else `$default`.
fn route_for<'a>(info: &'a ConnectionInfo, body: &[u8], binary: bool) -> Option<&'a Route> {
    let selected = (!binary)
        .then(|| select_route_key(&info.selection_expression, body))
        .flatten()
        .filter(|key| !matches!(key.as_str(), "$connect" | "$disconnect"));
    selected
        .and_then(|key| info.route(&key))
        .or_else(|| info.route("$default"))
}

/// Invokes the route of one message in its own task (messages are processed concurrently,
/// as on API Gateway), sending the route response or an error frame back.
fn spawn_message(
    state: &Arc<ApiState>,
    info: &Arc<ConnectionInfo>,
    data: Bytes,
    binary: bool,
    outbox: &mpsc::Sender<Bytes>,
) {
    let state = state.clone();
    let info = info.clone();
    let outbox = outbox.clone();
    tokio::spawn(async move {
        let request_id = uuid::Uuid::new_v4().to_string();
        let error_frame = |message: &str| {
            let frame = json!({
                "message": message,
                "connectionId": info.connection_id,
                "requestId": request_id,
            });
            Bytes::from(frame.to_string())
        };
        let Some(route) = route_for(&info, &data, binary) else {
            let _ = outbox.send(error_frame("Forbidden")).await;
            return;
        };
        let (body, encoded) = if binary {
            (
                base64::engine::general_purpose::STANDARD.encode(&data),
                true,
            )
        } else {
            (String::from_utf8_lossy(&data).into_owned(), false)
        };
        let now = SystemTime::now();
        let event = json!({
            "requestContext": info.context(&route.route_key, "MESSAGE", &request_id, now),
            "body": body,
            "isBase64Encoded": encoded,
        });
        match call(&state, route, &event, &request_id).await {
            Called::Answer(answer) => {
                if route.route_response_selection_expression.as_deref() == Some("$default")
                    && let Some(reply) = route_response(&answer)
                {
                    let _ = outbox.send(reply).await;
                }
            }
            Called::Failed => {
                let _ = outbox.send(error_frame("Internal server error")).await;
            }
        }
    });
}

/// What a route response sends back: the `body` of a `{statusCode, body}` answer (decoded
/// when `isBase64Encoded`), else the answer's JSON; nothing for an empty answer.
fn route_response(answer: &[u8]) -> Option<Bytes> {
    let parsed: Value = serde_json::from_slice(answer).ok()?;
    match &parsed {
        Value::Null => None,
        Value::Object(object) if object.contains_key("statusCode") => match object.get("body") {
            Some(Value::String(text)) => {
                if object.get("isBase64Encoded") == Some(&Value::Bool(true)) {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()
                        .map(Bytes::from)
                } else {
                    Some(Bytes::from(text.clone()))
                }
            }
            None | Some(Value::Null) => None,
            Some(other) => Some(Bytes::from(other.to_string())),
        },
        Value::String(text) => Some(Bytes::from(text.clone())),
        other => Some(Bytes::from(other.to_string())),
    }
}

/// Invokes `$disconnect`, best effort.
async fn disconnect(state: &ApiState, info: &ConnectionInfo, code: u16, reason: &str) {
    let Some(route) = info.route("$disconnect") else {
        return;
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut context = info.context("$disconnect", "DISCONNECT", &request_id, SystemTime::now());
    context["disconnectStatusCode"] = json!(code);
    context["disconnectReason"] = json!(reason);
    let event = json!({
        "headers": info.headers,
        "multiValueHeaders": info.multi_value_headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if let Called::Failed = call(state, route, &event, &request_id).await {
        tracing::debug!(connection = %info.connection_id, "$disconnect failed (best effort)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_look_like_api_gateways() {
        let id = connection_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
        assert!(!id.contains('/') && !id.contains('+'));
        assert_ne!(id, connection_id());
    }

    #[test]
    fn selects_route_keys() {
        let e = "$request.body.action";
        assert_eq!(
            select_route_key(e, br#"{"action":"send","x":1}"#).as_deref(),
            Some("send")
        );
        assert_eq!(select_route_key(e, br#"{"action":3}"#), None);
        assert_eq!(select_route_key(e, b"not json"), None);
        assert_eq!(
            select_route_key("$request.body.a.b", br#"{"a":{"b":"deep"}}"#).as_deref(),
            Some("deep")
        );
        assert_eq!(select_route_key("$request.body.a.b", br#"{"a":"b"}"#), None);
    }

    #[test]
    fn route_responses() {
        assert_eq!(
            route_response(br#"{"statusCode":200,"body":"hi"}"#).as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(
            route_response(br#"{"statusCode":200,"body":"aGk=","isBase64Encoded":true}"#)
                .as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(route_response(br#"{"statusCode":200}"#), None);
        assert_eq!(
            route_response(br#"{"a":1}"#).as_deref(),
            Some(&br#"{"a":1}"#[..])
        );
        assert_eq!(route_response(b"null"), None);
    }

    #[test]
    fn registry_sends_only_to_its_api_and_stage() {
        let connections = Connections::default();
        let (outbox, mut inbox) = mpsc::channel(1);
        let (closer, _close_requests) = mpsc::channel(1);
        let now = SystemTime::now();
        connections.insert(
            "c1".into(),
            Entry {
                api_id: "a".into(),
                stage: "dev".into(),
                connected_at: now,
                last_active_at: now,
                source_ip: "127.0.0.1".into(),
                user_agent: "t".into(),
                outbox,
                closer,
                closing: false,
            },
        );
        assert_eq!(
            connections.send("a", "prod", "c1", Bytes::new()),
            Err(SendError::Gone)
        );
        assert_eq!(connections.send("a", "dev", "c1", Bytes::from("x")), Ok(()));
        assert_eq!(
            connections.send("a", "dev", "c1", Bytes::from("y")),
            Err(SendError::Full)
        );
        assert!(matches!(inbox.try_recv(), Ok(d) if d == "x"));
        assert!(connections.close("a", "dev", "c1"));
        assert!(!connections.close("a", "dev", "c1"));
        drop(inbox);
        assert_eq!(
            connections.send("a", "dev", "c1", Bytes::new()),
            Err(SendError::Gone)
        );
        connections.remove("c1");
        assert!(connections.is_empty());
    }

    /// A client socket talking to a server socket that `run_socket` serves.
    struct Pair {
        client: WebSocketStream<tokio::io::DuplexStream>,
        seen: mpsc::UnboundedReceiver<(Bytes, bool)>,
        task: tokio::task::JoinHandle<(u16, String)>,
        outbox: mpsc::Sender<Bytes>,
        closer: mpsc::Sender<CloseRequest>,
    }

    async fn pair(limits: Limits) -> Pair {
        let (a, b) = tokio::io::duplex(1 << 20);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let server = WebSocketStream::from_raw_socket(a, Role::Server, Some(config)).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (outbox, inbox) = mpsc::channel(4);
        let (closer, close_requests) = mpsc::channel(1);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let channels = Channels {
                inbox,
                close_requests,
            };
            let on_message = move |data, binary| {
                let _ = seen_tx.send((data, binary));
            };
            run_socket(
                &Connections::default(),
                "c",
                server,
                channels,
                limits,
                on_message,
            )
            .await
        });
        Pair {
            client,
            seen,
            task,
            outbox,
            closer,
        }
    }

    async fn close_code(client: &mut WebSocketStream<tokio::io::DuplexStream>) -> CloseCode {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn socket_messages_pings_and_client_close() {
        let mut p = pair(LIMITS).await;
        p.client.send(Message::text("hi")).await.unwrap();
        p.client.send(Message::binary(vec![1u8, 2])).await.unwrap();
        assert_eq!(p.seen.recv().await.unwrap(), (Bytes::from("hi"), false));
        assert_eq!(
            p.seen.recv().await.unwrap(),
            (Bytes::from(vec![1u8, 2]), true)
        );
        p.client.send(Message::Ping("p".into())).await.unwrap();
        assert_eq!(
            p.client.next().await.unwrap().unwrap(),
            Message::Pong("p".into())
        );
        p.outbox.send(Bytes::from("to you")).await.unwrap();
        assert_eq!(
            p.client.next().await.unwrap().unwrap(),
            Message::text("to you")
        );
        p.outbox.send(Bytes::from(vec![0xffu8])).await.unwrap();
        assert_eq!(
            p.client.next().await.unwrap().unwrap(),
            Message::binary(vec![0xffu8])
        );
        let frame = CloseFrame {
            code: CloseCode::from(4000),
            reason: "bye".into(),
        };
        p.client.close(Some(frame)).await.unwrap();
        assert_eq!(p.task.await.unwrap(), (4000, "bye".to_string()));
    }

    #[tokio::test]
    async fn oversized_message_closes_with_1009() {
        let mut p = pair(LIMITS).await;
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        p.client.send(Message::text(big)).await.unwrap();
        assert_eq!(close_code(&mut p.client).await, CloseCode::Size);
        assert_eq!(p.task.await.unwrap().0, 1009);
        assert!(p.seen.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_whole_message_at_the_limit_passes() {
        let mut p = pair(LIMITS).await;
        let full = "x".repeat(MAX_MESSAGE_BYTES);
        p.client.send(Message::text(full)).await.unwrap();
        assert_eq!(p.seen.recv().await.unwrap().0.len(), MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn idle_connections_close_with_1001() {
        let limits = Limits {
            idle: Duration::from_millis(100),
            max_duration: Duration::from_secs(60),
        };
        let mut p = pair(limits).await;
        assert_eq!(close_code(&mut p.client).await, CloseCode::Away);
        assert_eq!(p.task.await.unwrap(), (1001, "Going away".to_string()));
    }

    #[tokio::test]
    async fn busy_connections_close_at_the_maximum_duration() {
        let limits = Limits {
            idle: Duration::from_secs(60),
            max_duration: Duration::from_millis(300),
        };
        let mut p = pair(limits).await;
        let started = std::time::Instant::now();
        while !p.task.is_finished() && started.elapsed() < Duration::from_secs(10) {
            if p.client.send(Message::text("still here")).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(p.task.await.unwrap().0, 1001);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(p.seen.recv().await.is_some());
    }

    #[tokio::test]
    async fn vanished_clients_and_close_requests() {
        let p = pair(LIMITS).await;
        drop(p.client);
        assert_eq!(p.task.await.unwrap().0, 1006);
        let mut p = pair(LIMITS).await;
        p.closer.send((CloseCode::Normal, "")).await.unwrap();
        assert_eq!(close_code(&mut p.client).await, CloseCode::Normal);
        assert_eq!(p.task.await.unwrap(), (1000, String::new()));
    }

    #[test]
    fn manage_paths() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_manage_path(&s(&[
            "abcde12345",
            "dev",
            "@connections",
            "x="
        ])));
        assert!(!is_manage_path(&s(&[
            "abcde12345",
            "dev",
            "connections",
            "x"
        ])));
        assert!(!is_manage_path(&s(&[
            "2015-03-31",
            "dev",
            "@connections",
            "x"
        ])));
    }
}
