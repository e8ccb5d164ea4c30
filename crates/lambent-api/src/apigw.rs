//! The HTTP API gateway: requests to an API's address on the gateway listener are matched
//! to a stage and a route, authorized (JWT, Lambda or IAM authorizers), turned into a
//! payload-format 1.0 or 2.0 event and answered with what the function returns, as API
//! Gateway's HTTP APIs do.
//!
//! An API is addressed by its Host (`<api-id>.execute-api.<region>.localhost[:port]`) or by
//! path (`/<api-id>/…`); then the first path segment names a stage, or the `$default` stage
//! serves the whole path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use lambent_invoke::{InvocationType, InvokeError, InvokeOutput, InvokeRequest};
use lambent_types::FunctionRef;

use crate::access::{self, Caller};
use crate::apis::{self, Api, Authorizer, Deployment, Route, Stage};
use crate::authz::Target;
use crate::urls_gateway::{self, Address, EventInput};
use crate::{ApiState, AuthMode, Signed};

/// Largest request body an HTTP API accepts (API Gateway's 10 MB payload quota).
const MAX_API_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Most REQUEST-authorizer answers kept in the cache.
const MAX_CACHED_AUTHORIZATIONS: usize = 10_000;

/// Why a request got no answer from its route's function, with HTTP APIs' status and
/// `message`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// No API, stage or route for this request.
    #[error("Not Found")]
    NotFound,
    /// No valid identity (JWT or Lambda authorizer identity source).
    #[error("Unauthorized")]
    Unauthorized(Option<String>),
    /// The identity may not call this route.
    #[error("Forbidden")]
    Forbidden,
    /// The request body is over the limit.
    #[error("Request Entity Too Large")]
    TooLarge,
    /// The function failed or answered something that is no HTTP response.
    #[error("Internal Server Error")]
    BadGateway,
    /// The function did not answer within the integration timeout.
    #[error("Service Unavailable")]
    Timeout,
    /// The invocation was refused (throttled, the function is gone) or the platform failed.
    #[error("Internal Server Error")]
    Internal,
}

impl GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer the client gets: `{"message": …}` with the status.
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let mut response =
            urls_gateway::error_response(self.status(), "message", &self.to_string());
        if let Self::Unauthorized(Some(why)) = self {
            let value = format!(
                "Bearer error=\"invalid_token\" error_description=\"{}\"",
                why.replace('"', "'")
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// Where a request to an API is going.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ApiAddress {
    /// The API's id.
    pub api_id: String,
    /// The path after the API's prefix (with the stage segment, if any).
    pub path: String,
    /// The domain name functions see in `requestContext.domainName`.
    pub domain_name: String,
}

/// The API a request is addressed to, from its Host header and path: Host-based first,
/// then path-based (`/<api-id>/…`).
pub(crate) fn address(host: Option<&str>, path: &str, region: &str) -> Option<ApiAddress> {
    let path = if path.is_empty() { "/" } else { path };
    if let Some(host) = host {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_ascii_lowercase();
        if let Some((label, rest)) = name.split_once('.')
            && rest.starts_with("execute-api.")
            && apis::is_api_id(label)
        {
            return Some(ApiAddress {
                api_id: label.to_string(),
                path: path.to_string(),
                domain_name: name.clone(),
            });
        }
        // A function URL's host names its URL: its path is the function's, never an API's.
        if name.contains(".lambda-url.") {
            return None;
        }
    }
    let rest = path.strip_prefix('/')?;
    let (label, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !apis::is_api_id(label) {
        return None;
    }
    Some(ApiAddress {
        api_id: label.to_string(),
        path: format!("/{tail}"),
        domain_name: format!("{label}.execute-api.{region}.localhost"),
    })
}

/// The stage serving `path` and the path within it: a stage named by the first segment, else
/// the `$default` stage with the whole path.
pub(crate) fn stage_of<'a>(api: &'a Api, path: &str) -> Option<(&'a Stage, String)> {
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if !first.is_empty()
        && first != "$default"
        && let Some(stage) = api.stage(first)
    {
        return Some((stage, format!("/{rest}")));
    }
    api.stage("$default").map(|stage| (stage, path.to_string()))
}

/// Who the route's authorization found the caller to be.
enum Authorized {
    /// The route needs no authorization.
    Anyone,
    /// A SigV4-signed IAM caller.
    Iam(Caller),
    /// A validated JWT.
    Jwt(crate::jwt::Verified),
    /// A Lambda authorizer's answer: its context and principal.
    Lambda {
        context: Map<String, Value>,
        principal_id: Option<String>,
    },
}

/// A request as the route and its authorizer see it.
struct Incoming2<'a> {
    parts: &'a http::request::Parts,
    body: &'a [u8],
    peer: SocketAddr,
    request_id: &'a str,
    api: &'a Api,
    stage: &'a Stage,
    route: &'a Route,
    path_parameters: &'a BTreeMap<String, String>,
    /// The path as the client sent it below the API (with the stage segment of a named stage).
    raw_path: String,
    /// The path within the stage.
    stage_path: String,
    domain_name: &'a str,
    now: SystemTime,
}

/// The API a request is addressed to: 404 when there is none, 500 when its definition
/// cannot be read.
pub(crate) fn lookup(state: &ApiState, address: &ApiAddress) -> Result<Api, GatewayError> {
    apis::load(state, &address.api_id)
        .map_err(|e| internal(e.message))?
        .ok_or(GatewayError::NotFound)
}

/// Serves one request to an HTTP API.
pub(crate) async fn serve(
    req: Request<hyper::body::Incoming>,
    state: &ApiState,
    peer: SocketAddr,
    request_id: &str,
    api: Api,
    address: ApiAddress,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    match serve_one(req, state, peer, request_id, &api, &address).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%peer, %method, api = %address.api_id, path = %address.path, status = %error.status(), "HTTP API: {error}");
            error.response()
        }
    }
}

fn internal(error: impl std::fmt::Display) -> GatewayError {
    tracing::error!("HTTP API gateway: {error}");
    GatewayError::Internal
}

async fn serve_one(
    req: Request<Incoming>,
    state: &ApiState,
    peer: SocketAddr,
    request_id: &str,
    api: &Api,
    address: &ApiAddress,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    let (stage, stage_path) = stage_of(api, &address.path).ok_or(GatewayError::NotFound)?;
    let deployment: &Deployment = stage.deployment.as_ref().ok_or(GatewayError::NotFound)?;
    let cors = urls_gateway::configured_cors(deployment.cors_configuration.as_ref());
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // HTTP APIs answer preflights with 204.
    if let Some(response) = urls_gateway::preflight(&req, cors.as_ref(), StatusCode::NO_CONTENT) {
        return Ok(response);
    }

    let (parts, body) = req.into_parts();
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|length| length > MAX_API_BODY_BYTES)
    {
        return Err(GatewayError::TooLarge);
    }
    let body = match Limited::new(body, MAX_API_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(GatewayError::TooLarge),
        Err(_) => return Err(GatewayError::Internal),
    };
    let (route, path_parameters) =
        apis::select_route(&deployment.routes, parts.method.as_str(), &stage_path)
            .ok_or(GatewayError::NotFound)?;
    let raw_path = if stage.stage_name == "$default" {
        stage_path.clone()
    } else if stage_path == "/" {
        format!("/{}", stage.stage_name)
    } else {
        format!("/{}{stage_path}", stage.stage_name)
    };
    let request = Incoming2 {
        parts: &parts,
        body: &body,
        peer,
        request_id,
        api,
        stage,
        route,
        path_parameters: &path_parameters,
        raw_path,
        stage_path,
        domain_name: &address.domain_name,
        now: SystemTime::now(),
    };
    let authorized = authorize(state, &request, deployment).await?;
    let event = if route.payload_format_version == "1.0" {
        event_v1(state, &request, &authorized)
    } else {
        event_v2(state, &request, &authorized)
    };
    let timeout = Duration::from_millis(route.timeout_in_millis);
    let trace_id = parts
        .headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = invoke(state, &route.target, event, request_id, trace_id, timeout).await?;
    let mut response = if route.payload_format_version == "1.0" {
        let is_response = serde_json::from_slice::<Value>(&answer)
            .ok()
            .is_some_and(|v| v.get("statusCode").is_some());
        if !is_response {
            tracing::info!(api = %api.api_id, route = %route.route_key, "payload 1.0 answer has no statusCode");
            return Err(GatewayError::BadGateway);
        }
        urls_gateway::http_response(&answer)
    } else {
        urls_gateway::http_response(&answer)
    }
    .map_err(|why| {
        tracing::info!(api = %api.api_id, route = %route.route_key, "function answer is no HTTP response: {why}");
        GatewayError::BadGateway
    })?;
    if let (Some(cors), Some(origin)) = (&cors, &origin) {
        urls_gateway::response_cors_headers(cors, origin, response.headers_mut());
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("apigw-requestid", value);
    }
    Ok(response)
}

/// `arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path>`, the resource of
/// `execute-api:Invoke` and of a Lambda authorizer's policy.
fn route_arn(state: &ApiState, request: &Incoming2<'_>) -> String {
    format!(
        "arn:aws:execute-api:{}:{}:{}/{}/{}{}",
        state.arns.region,
        state.arns.account_id,
        request.api.api_id,
        request.stage.stage_name,
        request.parts.method,
        request.stage_path
    )
}

/// Runs the route's authorization.
async fn authorize(
    state: &ApiState,
    request: &Incoming2<'_>,
    deployment: &Deployment,
) -> Result<Authorized, GatewayError> {
    let route = request.route;
    let authorizer = || {
        route
            .authorizer_id
            .as_deref()
            .and_then(|id| {
                deployment
                    .authorizers
                    .iter()
                    .find(|a| a.authorizer_id == id)
            })
            .ok_or_else(|| {
                internal(format!(
                    "route {} names a missing authorizer",
                    route.route_key
                ))
            })
    };
    match route.authorization_type.as_str() {
        "AWS_IAM" => {
            if state.auth != AuthMode::SigV4 {
                return Ok(Authorized::Anyone);
            }
            let parts = request.parts;
            let signed = Signed {
                parts,
                raw_path: parts.uri.path(),
                raw_query: parts.uri.query().unwrap_or(""),
                body: request.body,
            };
            let caller = crate::authenticate(
                state,
                &signed,
                "execute-api",
                request.peer,
                request.request_id,
            )
            .map_err(|e| {
                tracing::debug!("HTTP API signature refused: {}", e.message);
                GatewayError::Forbidden
            })?;
            let target = Target {
                action: "execute-api:Invoke".into(),
                resource: route_arn(state, request),
            };
            access::authorize_with(state, &caller, &target, request.peer, false, &[]).map_err(
                |e| {
                    tracing::debug!("HTTP API access denied: {}", e.message);
                    GatewayError::Forbidden
                },
            )?;
            Ok(Authorized::Iam(caller))
        }
        "JWT" => {
            let authorizer = authorizer()?;
            let token = authorizer
                .identity_source
                .first()
                .and_then(|source| identity_value(request, source))
                .ok_or(GatewayError::Unauthorized(None))?;
            let verified = crate::jwt::verify(authorizer, &token).await.map_err(|e| match e {
                crate::jwt::JwtError::Keys(why) => {
                    tracing::warn!(authorizer = %authorizer.name, "JWT keys unavailable: {why}");
                    GatewayError::Unauthorized(Some("signing keys unavailable".into()))
                }
                other => GatewayError::Unauthorized(Some(other.to_string())),
            })?;
            if !route.authorization_scopes.is_empty()
                && !route
                    .authorization_scopes
                    .iter()
                    .any(|want| verified.scopes.iter().any(|s| s == want))
            {
                return Err(GatewayError::Forbidden);
            }
            Ok(Authorized::Jwt(verified))
        }
        "CUSTOM" => lambda_authorize(state, request, authorizer()?).await,
        _ => Ok(Authorized::Anyone),
    }
}

/// The value of an identity source (`$request.header.X`, `$request.querystring.X`,
/// `$stageVariables.X`, `$context.X`) in a request; `None` when absent or empty.
fn identity_value(request: &Incoming2<'_>, source: &str) -> Option<String> {
    let value = if let Some(name) = source.strip_prefix("$request.header.") {
        let values: Vec<&str> = request
            .parts
            .headers
            .get_all(name.to_ascii_lowercase().as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        values.join(",")
    } else if let Some(name) = source.strip_prefix("$request.querystring.") {
        let values: Vec<String> = crate::parse_query(request.parts.uri.query().unwrap_or(""))
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect();
        values.join(",")
    } else if let Some(name) = source.strip_prefix("$stageVariables.") {
        request
            .stage
            .stage_variables
            .get(name)
            .cloned()
            .unwrap_or_default()
    } else if let Some(name) = source.strip_prefix("$context.") {
        match name {
            "requestId" => request.request_id.to_string(),
            "stage" => request.stage.stage_name.clone(),
            "routeKey" => request.route.route_key.clone(),
            "identity.sourceIp" => request.peer.ip().to_string(),
            _ => String::new(),
        }
    } else {
        String::new()
    };
    (!value.is_empty()).then_some(value)
}

/// A cached Lambda authorizer answer.
struct CachedAnswer {
    authorized: Option<(Map<String, Value>, Option<String>)>,
    until: Instant,
}

fn answers() -> &'static Mutex<BTreeMap<String, CachedAnswer>> {
    static ANSWERS: OnceLock<Mutex<BTreeMap<String, CachedAnswer>>> = OnceLock::new();
    ANSWERS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Runs a REQUEST (Lambda) authorizer for an HTTP API route: its identity sources must be
/// present, then [`lambda_decision`] decides.
async fn lambda_authorize(
    state: &ApiState,
    request: &Incoming2<'_>,
    authorizer: &Authorizer,
) -> Result<Authorized, GatewayError> {
    let mut identity = Vec::new();
    for source in &authorizer.identity_source {
        identity.push(identity_value(request, source).ok_or(GatewayError::Unauthorized(None))?);
    }
    let version = authorizer
        .authorizer_payload_format_version
        .as_deref()
        .unwrap_or("2.0");
    let route_arn = route_arn(state, request);
    let mut event = if version == "1.0" {
        event_v1(state, request, &Authorized::Anyone)
    } else {
        event_v2(state, request, &Authorized::Anyone)
    };
    if let Some(object) = event.as_object_mut() {
        object.insert("type".into(), json!("REQUEST"));
        if version == "1.0" {
            object.insert("methodArn".into(), json!(route_arn));
            object.insert("identitySource".into(), json!(identity.join(",")));
            if let Some(token) = identity_value(request, "$request.header.Authorization") {
                object.insert("authorizationToken".into(), json!(token));
            }
        } else {
            object.insert("routeArn".into(), json!(route_arn));
            object.insert("identitySource".into(), json!(identity));
        }
        object.remove("body");
        object.remove("isBase64Encoded");
    }
    let (context, principal_id) = lambda_decision(
        state,
        &request.api.api_id,
        authorizer,
        &identity,
        event,
        &route_arn,
        request.request_id,
    )
    .await?;
    Ok(Authorized::Lambda {
        context,
        principal_id,
    })
}

/// A Lambda authorizer's decision on `event` for the route `route_arn`: the context and
/// principal it allowed with, 403 for a denial, 500 when it failed. Answers are cached per
/// identity for the authorizer's TTL.
pub(crate) async fn lambda_decision(
    state: &ApiState,
    api_id: &str,
    authorizer: &Authorizer,
    identity: &[String],
    event: Value,
    route_arn: &str,
    request_id: &str,
) -> Result<(Map<String, Value>, Option<String>), GatewayError> {
    let ttl = Duration::from_secs(authorizer.authorizer_result_ttl_in_seconds);
    let cache_key = format!(
        "{api_id}/{}/{}",
        authorizer.authorizer_id,
        identity.join("\u{0}")
    );
    if !ttl.is_zero() {
        let cached = answers().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = cached.get(&cache_key).filter(|e| e.until > Instant::now()) {
            return entry.authorized.clone().ok_or(GatewayError::Forbidden);
        }
    }
    let target = authorizer
        .authorizer_uri
        .as_deref()
        .ok_or_else(|| internal("a REQUEST authorizer without a function"))?;
    let answer = invoke(
        state,
        target,
        event,
        request_id,
        None,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| {
        tracing::info!(authorizer = %authorizer.name, "Lambda authorizer failed: {e}");
        GatewayError::Internal
    })?;
    let answer: Value = serde_json::from_slice(&answer).map_err(|_| {
        tracing::info!(authorizer = %authorizer.name, "Lambda authorizer answered no JSON");
        GatewayError::Internal
    })?;
    let context = answer
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let principal_id = answer
        .get("principalId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let allowed = if authorizer.enable_simple_responses {
        answer.get("isAuthorized").and_then(Value::as_bool).ok_or_else(|| {
            tracing::info!(authorizer = %authorizer.name, "simple response without a boolean isAuthorized");
            GatewayError::Internal
        })?
    } else {
        policy_allows(state, &answer, route_arn).map_err(|why| {
            tracing::info!(authorizer = %authorizer.name, "authorizer policy unusable: {why}");
            GatewayError::Internal
        })?
    };
    let authorized = allowed.then_some((context, principal_id));
    if !ttl.is_zero() {
        let mut cached = answers().lock().unwrap_or_else(PoisonError::into_inner);
        if cached.len() >= MAX_CACHED_AUTHORIZATIONS {
            let now = Instant::now();
            cached.retain(|_, e| e.until > now);
            if cached.len() >= MAX_CACHED_AUTHORIZATIONS {
                cached.clear();
            }
        }
        cached.insert(
            cache_key,
            CachedAnswer {
                authorized: authorized.clone(),
                until: Instant::now() + ttl,
            },
        );
    }
    authorized.ok_or(GatewayError::Forbidden)
}

/// Whether an authorizer's `policyDocument` allows `execute-api:Invoke` on the route.
fn policy_allows(state: &ApiState, answer: &Value, route_arn: &str) -> Result<bool, String> {
    use lambent_types::policy::{Context, Effect, Policy, PolicyKind, Principal};
    let document = answer
        .get("policyDocument")
        .ok_or("the answer has no policyDocument")?;
    let policy =
        Policy::parse(&document.to_string(), PolicyKind::Identity).map_err(|e| e.to_string())?;
    let principal = Principal::new("authorizer", state.arns.account_id.clone());
    let context = Context::new();
    let decision = policy.decide(&lambent_types::policy::Request {
        principal: &principal,
        action: "execute-api:Invoke",
        resource: route_arn,
        context: &context,
    });
    Ok(decision == Some(Effect::Allow))
}

/// Invokes `target` synchronously with `event`, waiting at most `timeout` (the invocation
/// itself runs on to its end, as behind API Gateway).
pub(crate) async fn invoke(
    state: &ApiState,
    target: &str,
    event: Value,
    request_id: &str,
    trace_id: Option<String>,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let function = FunctionRef::parse(target, None).map_err(internal)?;
    let name = function.name.clone();
    let request = InvokeRequest {
        function,
        invocation_type: InvocationType::RequestResponse,
        log_tail: false,
        payload: Bytes::from(event.to_string()),
        client_context: None,
        trace_id,
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let invoker = state.invoker.clone();
    let running = tokio::spawn(async move { invoker.invoke(request).await });
    let output = match tokio::time::timeout(timeout, running).await {
        Err(_) => {
            tracing::info!(function = %name, gateway_request = request_id, "integration timed out after {timeout:?}");
            return Err(GatewayError::Timeout);
        }
        Ok(Err(joined)) => return Err(internal(joined)),
        Ok(Ok(output)) => output.map_err(|e| match e {
            InvokeError::TooLarge(_) => GatewayError::TooLarge,
            other => {
                tracing::info!(function = %name, "HTTP API invocation refused: {other}");
                GatewayError::Internal
            }
        })?,
    };
    let InvokeOutput::Completed { result, .. } = output else {
        return Err(GatewayError::Internal);
    };
    if result.function_error {
        return Err(GatewayError::BadGateway);
    }
    Ok(result.body)
}

/// A request's headers as `(single, multi)` maps of lower-case names: `single` holds what
/// `pick` makes of each header's values (API Gateway's 1.0 events keep the last value,
/// WebSocket events join them), `multi` every value.
pub(crate) fn header_maps(
    headers: &http::HeaderMap,
    pick: impl Fn(&[&str]) -> Option<String>,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut single = Map::new();
    let mut multi = Map::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Some(value) = pick(&values) {
            single.insert(name.as_str().to_string(), json!(value));
        }
        multi.insert(name.as_str().to_string(), json!(values));
    }
    (single, multi)
}

/// A query string as `(single, multi)` maps: the last value of each key, and all of them.
pub(crate) fn query_maps(raw: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (key, value) in crate::parse_query(raw) {
        if let Some(Value::Array(list)) = multi.get_mut(&key) {
            list.push(json!(value));
        } else {
            multi.insert(key.clone(), json!([value]));
        }
        single.insert(key, json!(value));
    }
    (single, multi)
}

/// The payload-format-2.0 event: the function URL event with the route, stage, path
/// parameters, stage variables and authorizer of an HTTP API.
fn event_v2(state: &ApiState, request: &Incoming2<'_>, authorized: &Authorized) -> Value {
    let address = Address {
        id: request.api.api_id.clone(),
        raw_path: request.raw_path.clone(),
        domain_name: request.domain_name.to_string(),
    };
    let caller = match authorized {
        Authorized::Iam(caller) => Some(caller),
        _ => None,
    };
    let mut event = urls_gateway::event(&EventInput {
        parts: request.parts,
        body: request.body,
        address: &address,
        peer: request.peer,
        request_id: request.request_id,
        account_id: &state.arns.account_id,
        caller,
        now: request.now,
    });
    event["routeKey"] = json!(request.route.route_key);
    let context = &mut event["requestContext"];
    context["accountId"] = json!(state.arns.account_id);
    context["routeKey"] = json!(request.route.route_key);
    context["stage"] = json!(request.stage.stage_name);
    match authorized {
        Authorized::Jwt(verified) => {
            let claims: Map<String, Value> = verified
                .claims
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(items) => format!(
                            "[{}]",
                            items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        other => other.to_string(),
                    };
                    (k.clone(), json!(text))
                })
                .collect();
            let scopes = (!verified.scopes.is_empty()).then(|| verified.scopes.clone());
            context["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": scopes } });
        }
        Authorized::Lambda { context: given, .. } => {
            context["authorizer"] = json!({ "lambda": given });
        }
        Authorized::Iam(_) | Authorized::Anyone => {}
    }
    if !request.path_parameters.is_empty() {
        event["pathParameters"] = json!(request.path_parameters);
    }
    if !request.stage.stage_variables.is_empty() {
        event["stageVariables"] = json!(request.stage.stage_variables);
    }
    event
}

/// The payload-format-1.0 event (REST API proxy shape) of an HTTP API.
fn event_v1(state: &ApiState, request: &Incoming2<'_>, authorized: &Authorized) -> Value {
    let parts = request.parts;
    let (headers, multi_headers) = header_maps(&parts.headers, |values| {
        values.last().map(|v| (*v).to_string())
    });
    let (query, multi_query) = query_maps(parts.uri.query().unwrap_or(""));
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let resource = match apis::RouteKey::parse(&request.route.route_key) {
        Ok(apis::RouteKey::Path { .. }) => request
            .route
            .route_key
            .split_once(' ')
            .map_or("", |(_, path)| path)
            .to_string(),
        _ => request.route.route_key.clone(),
    };
    let caller = match authorized {
        Authorized::Iam(caller) => Some(caller),
        _ => None,
    };
    let identity = json!({
        "accessKey": caller.map(|c| c.access_key_id.clone()),
        "accountId": caller.map(|_| state.arns.account_id.clone()),
        "caller": caller.map(|c| c.access_key_id.clone()),
        "cognitoAmr": null,
        "cognitoAuthenticationProvider": null,
        "cognitoAuthenticationType": null,
        "cognitoIdentityId": null,
        "cognitoIdentityPoolId": null,
        "principalOrgId": null,
        "sourceIp": request.peer.ip().to_string(),
        "user": caller.map(|c| c.name.clone()),
        "userAgent": user_agent,
        "userArn": caller.map(|c| c.arn.clone()),
    });
    let protocol = match parts.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let mut context = json!({
        "accountId": state.arns.account_id,
        "apiId": request.api.api_id,
        "domainName": request.domain_name,
        "domainPrefix": request.api.api_id,
        "extendedRequestId": request.request_id,
        "httpMethod": parts.method.as_str(),
        "identity": identity,
        "path": request.raw_path,
        "protocol": protocol,
        "requestId": request.request_id,
        "requestTime": urls_gateway::request_time(request.now),
        "requestTimeEpoch": lambent_types::time::epoch_millis(request.now),
        "resourceId": request.route.route_key,
        "resourcePath": resource,
        "stage": request.stage.stage_name,
    });
    match authorized {
        Authorized::Jwt(verified) => {
            context["authorizer"] = json!({ "claims": verified.claims, "scopes": verified.scopes });
        }
        Authorized::Lambda {
            context: given,
            principal_id,
        } => {
            let mut authorizer = given.clone();
            if let Some(principal) = principal_id {
                authorizer.insert("principalId".into(), json!(principal));
            }
            context["authorizer"] = Value::Object(authorizer);
        }
        Authorized::Iam(_) | Authorized::Anyone => {}
    }
    let (body, base64) = if request.body.is_empty() {
        (Value::Null, false)
    } else {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match std::str::from_utf8(request.body) {
            Ok(text) if urls_gateway::is_text(content_type) => (json!(text), false),
            _ => (
                json!(base64::engine::general_purpose::STANDARD.encode(request.body)),
                true,
            ),
        }
    };
    json!({
        "version": "1.0",
        "resource": resource,
        "path": request.raw_path,
        "httpMethod": parts.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "multiValueQueryStringParameters": if multi_query.is_empty() { Value::Null } else { Value::Object(multi_query) },
        "requestContext": context,
        "pathParameters": if request.path_parameters.is_empty() { Value::Null } else { json!(request.path_parameters) },
        "stageVariables": if request.stage.stage_variables.is_empty() { Value::Null } else { json!(request.stage.stage_variables) },
        "body": body,
        "isBase64Encoded": base64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_host_and_by_path() {
        let a = address(
            Some("abcde12345.execute-api.us-east-1.localhost:9080"),
            "/prod/x",
            "us-east-1",
        )
        .unwrap();
        assert_eq!(a.api_id, "abcde12345");
        assert_eq!(a.path, "/prod/x");
        let b = address(Some("127.0.0.1:9080"), "/abcde12345/prod/x", "us-east-1").unwrap();
        assert_eq!(b.api_id, "abcde12345");
        assert_eq!(b.path, "/prod/x");
        assert_eq!(b.domain_name, "abcde12345.execute-api.us-east-1.localhost");
        assert!(address(Some("127.0.0.1"), "/short/x", "us-east-1").is_none());
        assert!(address(None, "/", "us-east-1").is_none());
        let url_host = "0123456789abcdef0123456789abcdef.lambda-url.us-east-1.localhost";
        assert!(address(Some(url_host), "/abcde12345/x", "us-east-1").is_none());
    }
}
