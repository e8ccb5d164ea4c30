//! Lambent's API definitions API: HTTP APIs and WebSocket APIs in API Gateway's model
//! (API → routes → function targets, authorizers, stages and deployments), served by the
//! gateway listener (`lambent serve --http-listen`).
//!
//! - `POST /lambent/apis` `{Name, ProtocolType?: HTTP|WEBSOCKET, RouteSelectionExpression?,
//!   Description?, CorsConfiguration?, Target?}` → 201, the API. `Target` is API Gateway's
//!   quick create: a `$default` route to that function and an auto-deployed `$default` stage.
//! - `POST /lambent/apis/import` with an OpenAPI 3 document (JSON) → 201 (see `openapi.rs`);
//!   `PUT /lambent/apis/<id>/import` replaces an API's routes and authorizers from one.
//! - `GET /lambent/apis` → `{"Items": […]}`; `GET|PUT|DELETE /lambent/apis/<id>`.
//! - `POST /lambent/apis/<id>/routes` `{RouteKey, Target, PayloadFormatVersion?,
//!   TimeoutInMillis?, AuthorizationType?, AuthorizerId?, AuthorizationScopes?,
//!   RouteResponseSelectionExpression?}` → 201; `GET …/routes`; `PUT|DELETE …/routes/<id>`.
//! - `POST /lambent/apis/<id>/authorizers` `{Name, AuthorizerType: JWT|REQUEST,
//!   IdentitySource?, JwtConfiguration?: {Issuer, Audience}, JwksUri?, AuthorizerUri?,
//!   AuthorizerPayloadFormatVersion?, EnableSimpleResponses?, AuthorizerResultTtlInSeconds?}`
//!   → 201; `GET …/authorizers`; `DELETE …/authorizers/<id>`.
//! - `POST /lambent/apis/<id>/stages` `{StageName, AutoDeploy?, StageVariables?}` → 201;
//!   `PUT|DELETE …/stages/<name>`.
//! - `POST /lambent/apis/<id>/deployments` `{StageName, Description?}` → 201: the API's
//!   current routes and authorizers become what the stage serves (the stage is created
//!   when missing).
//!
//! Errors use API Gateway's names: BadRequestException (400), NotFoundException (404),
//! ConflictException (409).

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use lambent_store::kinds;
use lambent_types::FunctionRef;

use crate::settings::{check_owner, require};
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Methods a route key may name (`ANY` matches every method).
const ROUTE_METHODS: &[&str] = &[
    "ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
];

/// API Gateway's integration timeout bounds for HTTP APIs, in milliseconds.
const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 50..=30_000;

/// An HTTP or WebSocket API as stored (document kind `api`, name = its id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Api {
    /// Ten lower-case letters and digits, as API Gateway's ids.
    pub api_id: String,
    /// The name given at creation.
    pub name: String,
    /// `HTTP` or `WEBSOCKET`.
    pub protocol_type: String,
    /// WebSocket: where a message's route key comes from (`$request.body.action`).
    pub route_selection_expression: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// HTTP APIs: CORS answered by the gateway (same members as a function URL's `Cors`).
    #[serde(default)]
    pub cors_configuration: Option<Value>,
    /// Creation time, Unix seconds.
    pub created_date: i64,
    /// The routes being edited (served once deployed, or at once on auto-deploy stages).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The authorizers being edited.
    #[serde(default)]
    pub authorizers: Vec<Authorizer>,
    /// The stages, each serving its last deployment.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// A route: a route key and the function its integration invokes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Route {
    /// Seven lower-case letters and digits.
    pub route_id: String,
    /// `GET /items/{id}`, `ANY /{proxy+}`, `$default`; WebSocket: `$connect`, `sendmessage`, …
    pub route_key: String,
    /// The function invoked: its name and qualifier (`name`, `name:alias`, `name:3`).
    pub target: String,
    /// `1.0` or `2.0` (HTTP APIs).
    pub payload_format_version: String,
    /// How long the gateway waits for the function.
    pub timeout_in_millis: u64,
    /// `NONE`, `JWT`, `CUSTOM` or `AWS_IAM`.
    pub authorization_type: String,
    /// The authorizer of a `JWT` or `CUSTOM` route.
    #[serde(default)]
    pub authorizer_id: Option<String>,
    /// Scopes a JWT must carry (any one of them).
    #[serde(default)]
    pub authorization_scopes: Vec<String>,
    /// WebSocket: `$default` sends the function's answer back to the client.
    #[serde(default)]
    pub route_response_selection_expression: Option<String>,
}

/// A JWT or Lambda (`REQUEST`) authorizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Authorizer {
    /// Six lower-case letters and digits.
    pub authorizer_id: String,
    /// The name given.
    pub name: String,
    /// `JWT` or `REQUEST`.
    pub authorizer_type: String,
    /// Where the identity comes from, e.g. `$request.header.Authorization`.
    pub identity_source: Vec<String>,
    /// JWT: issuer and audiences.
    #[serde(default)]
    pub jwt_configuration: Option<JwtConfiguration>,
    /// JWT: where the signing keys are (`https://…`, `http://…`, `file:///…`); without it,
    /// the issuer's OpenID discovery document names them.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// REQUEST: the authorizer function (name, `name:qualifier` or ARN).
    #[serde(default)]
    pub authorizer_uri: Option<String>,
    /// REQUEST: `1.0` or `2.0`.
    #[serde(default)]
    pub authorizer_payload_format_version: Option<String>,
    /// REQUEST 2.0: the function answers `{isAuthorized, context}` instead of a policy.
    #[serde(default)]
    pub enable_simple_responses: bool,
    /// REQUEST: how long an answer is reused for the same identity (0 = not cached).
    #[serde(default)]
    pub authorizer_result_ttl_in_seconds: u64,
}

/// A JWT authorizer's issuer and audiences.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JwtConfiguration {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// Accepted `aud` (or `client_id`) values.
    #[serde(default)]
    pub audience: Vec<String>,
}

/// A stage: a name in the URL, variables, and the deployment it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Stage {
    /// `$default` (served at the API's root) or a name (served under `/<name>`).
    pub stage_name: String,
    /// Every change to the API deploys to this stage at once.
    pub auto_deploy: bool,
    /// Passed to functions as `stageVariables`.
    #[serde(default)]
    pub stage_variables: BTreeMap<String, String>,
    /// Creation time, Unix seconds.
    pub created_date: i64,
    /// What the stage serves; `None` before the first deployment.
    #[serde(default)]
    pub deployment: Option<Deployment>,
}

/// A snapshot of an API's routes, authorizers and CORS, as a stage serves them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Deployment {
    /// Six lower-case letters and digits.
    pub deployment_id: String,
    /// Deployment time, Unix seconds.
    pub created_date: i64,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The routes served.
    pub routes: Vec<Route>,
    /// The authorizers served.
    pub authorizers: Vec<Authorizer>,
    /// The CORS configuration served.
    #[serde(default)]
    pub cors_configuration: Option<Value>,
}

impl Api {
    /// Whether this is a WebSocket API.
    pub fn is_websocket(&self) -> bool {
        self.protocol_type == "WEBSOCKET"
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.stage_name == name)
    }

    fn snapshot(&self, description: Option<String>) -> Deployment {
        Deployment {
            deployment_id: new_id(6),
            created_date: unix_now(),
            description,
            routes: self.routes.clone(),
            authorizers: self.authorizers.clone(),
            cors_configuration: self.cors_configuration.clone(),
        }
    }

    /// Redeploys every auto-deploy stage after a change.
    fn auto_deploy(&mut self) {
        let snapshot = self.snapshot(Some("automatic deployment".into()));
        for stage in self.stages.iter_mut().filter(|s| s.auto_deploy) {
            stage.deployment = Some(Deployment {
                deployment_id: new_id(6),
                ..snapshot.clone()
            });
        }
    }
}

/// One segment of a route key's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// `{name}`: any one segment.
    Variable(String),
    /// `{name+}`: the rest of the path (one segment or more).
    Greedy(String),
}

/// A parsed HTTP route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteKey {
    /// `$default`: every request no other route matches.
    Default,
    /// `METHOD /path`.
    Path {
        /// `None` for `ANY`.
        method: Option<String>,
        /// The path's segments.
        segments: Vec<Segment>,
    },
}

impl RouteKey {
    /// Parses an HTTP API route key, explaining what is wrong.
    pub fn parse(key: &str) -> Result<Self, String> {
        if key == "$default" {
            return Ok(Self::Default);
        }
        let (method, path) = key
            .split_once(' ')
            .ok_or_else(|| format!("route key {key:?} must be `$default` or `METHOD /path`"))?;
        if !ROUTE_METHODS.contains(&method) {
            return Err(format!(
                "route key {key:?}: method {method:?} is not one of {}",
                ROUTE_METHODS.join(", ")
            ));
        }
        if !path.starts_with('/') || path.contains(' ') {
            return Err(format!(
                "route key {key:?}: the path must start with '/' and hold no spaces"
            ));
        }
        let mut segments = Vec::new();
        let mut names = Vec::new();
        let parts: Vec<&str> = path[1..].split('/').collect();
        let only_root = parts == [""];
        for (i, part) in parts.iter().enumerate() {
            if only_root {
                break;
            }
            if part.is_empty() {
                return Err(format!("route key {key:?}: empty path segment"));
            }
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (name, greedy) = match inner.strip_suffix('+') {
                        Some(name) => (name, true),
                        None => (inner, false),
                    };
                    let valid = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !valid {
                        return Err(format!(
                            "route key {key:?}: bad path variable {part:?} (letters, digits, '_', '-', '.')"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!(
                            "route key {key:?}: path variable {name:?} appears twice"
                        ));
                    }
                    names.push(name);
                    if greedy {
                        if i + 1 != parts.len() {
                            return Err(format!(
                                "route key {key:?}: a greedy variable {part} must be the last segment"
                            ));
                        }
                        Segment::Greedy(name.to_string())
                    } else {
                        Segment::Variable(name.to_string())
                    }
                }
                None if part.contains('{') || part.contains('}') => {
                    return Err(format!(
                        "route key {key:?}: segment {part:?} mixes text and a variable, which HTTP APIs do not support"
                    ));
                }
                None => Segment::Literal((*part).to_string()),
            };
            segments.push(segment);
        }
        Ok(Self::Path {
            method: (method != "ANY").then(|| method.to_string()),
            segments,
        })
    }

    /// Whether this key matches `method` and the path's segments; the path parameters and a
    /// rank (higher = more specific) when it does.
    pub fn matches(
        &self,
        method: &str,
        path: &[&str],
    ) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
        let Self::Path {
            method: want,
            segments,
        } = self
        else {
            return None;
        };
        if want.as_deref().is_some_and(|m| m != method) {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut rank = Vec::with_capacity(segments.len() + 1);
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(text) => {
                    if path.get(i) != Some(&text.as_str()) {
                        return None;
                    }
                    rank.push(3);
                }
                Segment::Variable(name) => {
                    let value = path.get(i).filter(|v| !v.is_empty())?;
                    params.insert(name.clone(), (*value).to_string());
                    rank.push(2);
                }
                Segment::Greedy(name) => {
                    let rest = path.get(i..).filter(|r| !r.is_empty())?;
                    params.insert(name.clone(), rest.join("/"));
                    rank.push(1);
                    rank.push(u8::from(want.is_some()));
                    return Some((params, rank));
                }
            }
        }
        if path.len() != segments.len() {
            return None;
        }
        rank.push(4);
        rank.push(u8::from(want.is_some()));
        Some((params, rank))
    }
}

/// The most specific route of `routes` for a request, with its path parameters; `$default`
/// when no other matches.
pub(crate) fn select_route<'r>(
    routes: &'r [Route],
    method: &str,
    path: &str,
) -> Option<(&'r Route, BTreeMap<String, String>)> {
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut best: Option<(&Route, BTreeMap<String, String>, Vec<u8>)> = None;
    for route in routes {
        let Ok(key) = RouteKey::parse(&route.route_key) else {
            continue;
        };
        if let Some((params, rank)) = key.matches(method, &segments)
            && best.as_ref().is_none_or(|(_, _, r)| rank > *r)
        {
            best = Some((route, params, rank));
        }
    }
    if let Some((route, params, _)) = best {
        return Some((route, params));
    }
    routes
        .iter()
        .find(|r| r.route_key == "$default")
        .map(|r| (r, BTreeMap::new()))
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `len` random lower-case letters and digits.
pub(crate) fn new_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    if getrandom::fill(&mut bytes).is_err() {
        // The clock is a poor but sufficient fallback: ids only need to be distinct.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> (i * 5)) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The strings of a JSON value that is a list of strings, or one string cut by `split`
/// (OpenAPI and JWTs write lists both ways).
pub(crate) fn strings(value: Option<&Value>, split: fn(&str) -> Vec<&str>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => split(text)
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `label` has the shape of an API id.
pub(crate) fn is_api_id(label: &str) -> bool {
    label.len() == 10
        && label
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NotFoundException", message)
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "ConflictException", message)
}

fn api_missing(id: &str) -> ApiError {
    not_found(format!("Invalid API identifier specified {id}"))
}

/// Reads an API; `None` when there is none with this id.
pub(crate) fn load(state: &ApiState, id: &str) -> Result<Option<Api>, ApiError> {
    if !is_api_id(id) {
        return Ok(None);
    }
    match state.store.get_document(kinds::API, "", id)? {
        Some(doc) => serde_json::from_value(doc).map(Some).map_err(|e| {
            tracing::error!(api = id, "stored API does not parse: {e}");
            ApiError::internal(format!("the stored API {id} cannot be read"))
        }),
        None => Ok(None),
    }
}

/// Applies `change` to the stored API `id` (then redeploys auto-deploy stages) and returns
/// what was written.
fn modify(
    state: &ApiState,
    id: &str,
    change: &mut dyn FnMut(&mut Api) -> Result<(), ApiError>,
) -> Result<Api, ApiError> {
    if !is_api_id(id) {
        return Err(api_missing(id));
    }
    let mut written = None;
    // Read, changed and written in one store transaction: concurrent edits are not lost.
    crate::settings::modify(state, kinds::API, "", id, &mut |current| {
        let current = current.ok_or_else(|| api_missing(id))?;
        let mut api: Api = serde_json::from_value(current)
            .map_err(|e| ApiError::internal(format!("the stored API {id} cannot be read: {e}")))?;
        change(&mut api)?;
        api.auto_deploy();
        let doc = serde_json::to_value(&api)
            .map_err(|e| ApiError::internal(format!("cannot store API {id}: {e}")))?;
        written = Some(api);
        Ok(Some(doc))
    })?;
    written.ok_or_else(|| ApiError::internal(format!("API {id} was not written")))
}

/// Routes the API-definition operations; `None` when the request is not one of them.
pub(crate) fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    let answer = match (&req.method, segments) {
        (&Method::POST, ["lambent", "apis"]) => create(req, state),
        (&Method::POST, ["lambent", "apis", "import"]) => {
            crate::openapi::import(req, state, None).map(|api| created(state, &api))
        }
        (&Method::GET, ["lambent", "apis"]) => list(state),
        (&Method::GET, ["lambent", "apis", id]) => with_api(state, id, |api| api_json(state, api)),
        (&Method::PUT, ["lambent", "apis", id]) => update(req, state, id),
        (&Method::DELETE, ["lambent", "apis", id]) => {
            if !is_api_id(id) {
                return Some(Err(api_missing(id)));
            }
            crate::queue::delete_named(state, kinds::API, id, api_missing)
        }
        (&Method::PUT, ["lambent", "apis", id, "import"]) => {
            crate::openapi::import(req, state, Some(id))
                .map(|api| ApiReply::json(StatusCode::OK, &api_json(state, &api)))
        }
        (&Method::POST, ["lambent", "apis", id, "routes"]) => create_route(req, state, id),
        (&Method::GET, ["lambent", "apis", id, "routes"]) => with_api(
            state,
            id,
            |api| json!({ "Items": api.routes.iter().map(route_json).collect::<Vec<_>>() }),
        ),
        (&Method::PUT, ["lambent", "apis", id, "routes", route_id]) => {
            update_route(req, state, id, route_id)
        }
        (&Method::DELETE, ["lambent", "apis", id, "routes", route_id]) => {
            remove(state, id, "Route", route_id, &mut |api| {
                let before = api.routes.len();
                api.routes.retain(|r| r.route_id != *route_id);
                before != api.routes.len()
            })
        }
        (&Method::POST, ["lambent", "apis", id, "authorizers"]) => {
            create_authorizer(req, state, id)
        }
        (&Method::GET, ["lambent", "apis", id, "authorizers"]) => with_api(
            state,
            id,
            |api| json!({ "Items": api.authorizers.iter().map(authorizer_json).collect::<Vec<_>>() }),
        ),
        (&Method::DELETE, ["lambent", "apis", id, "authorizers", authorizer_id]) => {
            remove(state, id, "Authorizer", authorizer_id, &mut |api| {
                let before = api.authorizers.len();
                api.authorizers
                    .retain(|a| a.authorizer_id != *authorizer_id);
                before != api.authorizers.len()
            })
        }
        (&Method::POST, ["lambent", "apis", id, "stages"]) => create_stage(req, state, id),
        (&Method::GET, ["lambent", "apis", id, "stages"]) => with_api(
            state,
            id,
            |api| json!({ "Items": api.stages.iter().map(|s| stage_json(state, api, s)).collect::<Vec<_>>() }),
        ),
        (&Method::PUT, ["lambent", "apis", id, "stages", name]) => {
            update_stage(req, state, id, name)
        }
        (&Method::DELETE, ["lambent", "apis", id, "stages", name]) => {
            remove(state, id, "Stage", name, &mut |api| {
                let before = api.stages.len();
                api.stages.retain(|s| s.stage_name != *name);
                before != api.stages.len()
            })
        }
        (&Method::POST, ["lambent", "apis", id, "deployments"]) => deploy(req, state, id),
        _ => return None,
    };
    Some(answer)
}

fn with_api(
    state: &ApiState,
    id: &str,
    render: impl FnOnce(&Api) -> Value,
) -> Result<ApiReply, ApiError> {
    let api = load(state, id)?.ok_or_else(|| api_missing(id))?;
    Ok(ApiReply::json(StatusCode::OK, &render(&api)))
}

fn remove(
    state: &ApiState,
    id: &str,
    what: &str,
    item: &str,
    change: &mut dyn FnMut(&mut Api) -> bool,
) -> Result<ApiReply, ApiError> {
    modify(state, id, &mut |api| {
        if change(api) {
            Ok(())
        } else {
            Err(not_found(format!(
                "Invalid {what} identifier specified {item}"
            )))
        }
    })?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// The address of the gateway listener as clients see it, for `ApiEndpoint`.
fn endpoint(state: &ApiState, api: &Api) -> String {
    let scheme = if api.is_websocket() { "ws" } else { "http" };
    format!(
        "{scheme}://{}.execute-api.{}.localhost:{}",
        api.api_id, state.arns.region, state.url_port
    )
}

fn api_json(state: &ApiState, api: &Api) -> Value {
    json!({
        "ApiId": api.api_id,
        "Name": api.name,
        "ProtocolType": api.protocol_type,
        "RouteSelectionExpression": api.route_selection_expression,
        "Description": api.description,
        "CorsConfiguration": api.cors_configuration,
        "ApiEndpoint": endpoint(state, api),
        "ApiEndpointByPath": format!("http://127.0.0.1:{}/{}", state.url_port, api.api_id),
        "CreatedDate": lambent_types::time::iso8601_epoch_millis(api.created_date.saturating_mul(1000)),
        "Routes": api.routes.iter().map(route_json).collect::<Vec<_>>(),
        "Authorizers": api.authorizers.iter().map(authorizer_json).collect::<Vec<_>>(),
        "Stages": api.stages.iter().map(|s| stage_json(state, api, s)).collect::<Vec<_>>(),
    })
}

fn route_json(route: &Route) -> Value {
    serde_json::to_value(route).unwrap_or(Value::Null)
}

fn authorizer_json(authorizer: &Authorizer) -> Value {
    serde_json::to_value(authorizer).unwrap_or(Value::Null)
}

fn stage_json(state: &ApiState, api: &Api, stage: &Stage) -> Value {
    let base = endpoint(state, api);
    let invoke_url = if stage.stage_name == "$default" {
        format!("{base}/")
    } else {
        format!("{base}/{}", stage.stage_name)
    };
    json!({
        "StageName": stage.stage_name,
        "AutoDeploy": stage.auto_deploy,
        "StageVariables": stage.stage_variables,
        "CreatedDate": lambent_types::time::iso8601_epoch_millis(stage.created_date.saturating_mul(1000)),
        "DeploymentId": stage.deployment.as_ref().map(|d| d.deployment_id.clone()),
        "LastDeployedDate": stage.deployment.as_ref().map(|d| lambent_types::time::iso8601_epoch_millis(d.created_date.saturating_mul(1000))),
        "InvokeUrl": invoke_url,
    })
}

fn created(state: &ApiState, api: &Api) -> ApiReply {
    ApiReply::json(StatusCode::CREATED, &api_json(state, api))
}

fn text(input: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!("{key} must be a string"))),
    }
}

fn check_api_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 128 {
        return Err(bad_request("Name must be 1-128 characters"));
    }
    Ok(())
}

/// Checks a CORS configuration's members (same rules as a function URL's `Cors`).
fn check_cors(cors: &Value) -> Result<(), ApiError> {
    let Some(object) = cors.as_object() else {
        return Err(bad_request("CorsConfiguration must be an object"));
    };
    for (key, value) in object {
        let ok = match key.as_str() {
            "AllowOrigins" | "AllowMethods" | "AllowHeaders" | "ExposeHeaders" => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            "MaxAge" => value.as_i64().is_some_and(|n| (-1..=86_400).contains(&n)),
            "AllowCredentials" => value.is_boolean(),
            _ => {
                return Err(bad_request(format!(
                    "CorsConfiguration has an unknown member {key}"
                )));
            }
        };
        if !ok {
            return Err(bad_request(format!(
                "CorsConfiguration.{key} has the wrong type"
            )));
        }
    }
    Ok(())
}

/// Checks a route's function target and returns it as `name` or `name:qualifier`.
pub(crate) fn check_target(state: &ApiState, target: &str) -> Result<String, ApiError> {
    check_owner(&state.arns, target)?;
    let function = FunctionRef::parse(target, None)?;
    require(state, &function)?;
    Ok(match &function.qualifier {
        Some(q) => format!("{}:{q}", function.name),
        None => function.name,
    })
}

fn create(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let name = text(&input, "Name")?.ok_or_else(|| bad_request("Name is required"))?;
    check_api_name(&name)?;
    let protocol = text(&input, "ProtocolType")?.unwrap_or_else(|| "HTTP".into());
    let selection = match protocol.as_str() {
        "HTTP" => {
            let given = text(&input, "RouteSelectionExpression")?;
            if given
                .as_deref()
                .is_some_and(|e| e != "${request.method} ${request.path}")
            {
                return Err(bad_request(
                    "an HTTP API's RouteSelectionExpression can only be ${request.method} ${request.path}",
                ));
            }
            "${request.method} ${request.path}".to_string()
        }
        "WEBSOCKET" => {
            let expression = text(&input, "RouteSelectionExpression")?.ok_or_else(|| {
                bad_request(
                    "a WebSocket API needs a RouteSelectionExpression, e.g. $request.body.action",
                )
            })?;
            check_selection_expression(&expression)?;
            expression
        }
        other => {
            return Err(bad_request(format!(
                "ProtocolType must be HTTP or WEBSOCKET, not {other:?}"
            )));
        }
    };
    let cors = match input.get("CorsConfiguration") {
        None | Some(Value::Null) => None,
        Some(cors) if protocol == "HTTP" => {
            check_cors(cors)?;
            Some(cors.clone())
        }
        Some(_) => return Err(bad_request("CORS applies to HTTP APIs only")),
    };
    let mut api = Api {
        api_id: new_id(10),
        name,
        protocol_type: protocol,
        route_selection_expression: selection,
        description: text(&input, "Description")?,
        cors_configuration: cors,
        created_date: unix_now(),
        routes: Vec::new(),
        authorizers: Vec::new(),
        stages: Vec::new(),
    };
    if let Some(target) = text(&input, "Target")? {
        if api.is_websocket() {
            return Err(bad_request(
                "Target (quick create) applies to HTTP APIs only",
            ));
        }
        api.routes.push(Route {
            route_id: new_id(7),
            route_key: "$default".into(),
            target: check_target(state, &target)?,
            payload_format_version: "2.0".into(),
            timeout_in_millis: *TIMEOUT_RANGE_MS.end(),
            authorization_type: "NONE".into(),
            authorizer_id: None,
            authorization_scopes: Vec::new(),
            route_response_selection_expression: None,
        });
        api.stages.push(Stage {
            stage_name: "$default".into(),
            auto_deploy: true,
            stage_variables: BTreeMap::new(),
            created_date: unix_now(),
            deployment: None,
        });
        api.auto_deploy();
    }
    store_new(state, &api)?;
    tracing::info!(api = %api.api_id, name = %api.name, protocol = %api.protocol_type, "API created");
    Ok(created(state, &api))
}

/// Stores a new API.
pub(crate) fn store_new(state: &ApiState, api: &Api) -> Result<(), ApiError> {
    let doc = serde_json::to_value(api)
        .map_err(|e| ApiError::internal(format!("cannot store API: {e}")))?;
    state
        .store
        .modify_document(kinds::API, "", &api.api_id, &mut |current| match current {
            Some(_) => Err(lambent_store::StoreError::Conflict(
                "API id collision; try again".into(),
            )),
            None => Ok(Some(doc.clone())),
        })?;
    Ok(())
}

/// Replaces an API's routes, authorizers and CORS (an OpenAPI re-import).
pub(crate) fn replace_definition(
    state: &ApiState,
    id: &str,
    routes: Vec<Route>,
    authorizers: Vec<Authorizer>,
    cors: Option<Value>,
) -> Result<Api, ApiError> {
    modify(state, id, &mut |api| {
        if api.is_websocket() {
            return Err(bad_request("OpenAPI import applies to HTTP APIs only"));
        }
        api.routes = routes.clone();
        api.authorizers = authorizers.clone();
        api.cors_configuration = cors.clone();
        Ok(())
    })
}

fn check_selection_expression(expression: &str) -> Result<(), ApiError> {
    let ok = expression == "$request.method $request.path"
        || expression
            .strip_prefix("$request.body.")
            .is_some_and(|path| {
                !path.is_empty()
                    && path.split('.').all(|p| {
                        !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                    })
            });
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "RouteSelectionExpression {expression:?} is not supported: use $request.body.<field>[.<field>…]"
        )))
    }
}

fn update(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let api = modify(state, id, &mut |api| {
        if let Some(name) = text(&input, "Name")? {
            check_api_name(&name)?;
            api.name = name;
        }
        if input.get("Description").is_some() {
            api.description = text(&input, "Description")?;
        }
        if let Some(expression) = text(&input, "RouteSelectionExpression")? {
            if !api.is_websocket() {
                return Err(bad_request(
                    "an HTTP API's RouteSelectionExpression cannot be changed",
                ));
            }
            check_selection_expression(&expression)?;
            api.route_selection_expression = expression;
        }
        if let Some(cors) = input.get("CorsConfiguration") {
            if api.is_websocket() {
                return Err(bad_request("CORS applies to HTTP APIs only"));
            }
            if cors.is_null() {
                api.cors_configuration = None;
            } else {
                check_cors(cors)?;
                api.cors_configuration = Some(cors.clone());
            }
        }
        Ok(())
    })?;
    Ok(ApiReply::json(StatusCode::OK, &api_json(state, &api)))
}

/// Checks a route definition against its API, filling in defaults.
pub(crate) fn check_route(api: &Api, route: &mut Route) -> Result<(), ApiError> {
    if api.is_websocket() {
        let key = &route.route_key;
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_whitespace) {
            return Err(bad_request(format!(
                "WebSocket route key {key:?} must be 1-128 characters without spaces"
            )));
        }
        if route.authorization_type != "NONE" && key != "$connect" {
            return Err(bad_request(
                "on WebSocket APIs only the $connect route can have an authorizer",
            ));
        }
        if let Some(expression) = &route.route_response_selection_expression
            && expression != "$default"
        {
            return Err(bad_request(
                "RouteResponseSelectionExpression can only be $default",
            ));
        }
    } else {
        RouteKey::parse(&route.route_key).map_err(bad_request)?;
        if route.route_response_selection_expression.is_some() {
            return Err(bad_request(
                "RouteResponseSelectionExpression applies to WebSocket APIs only",
            ));
        }
    }
    if !["1.0", "2.0"].contains(&route.payload_format_version.as_str()) {
        return Err(bad_request(format!(
            "PayloadFormatVersion must be 1.0 or 2.0, not {:?}",
            route.payload_format_version
        )));
    }
    if !TIMEOUT_RANGE_MS.contains(&route.timeout_in_millis) {
        return Err(bad_request(format!(
            "TimeoutInMillis must be from {} to {}",
            TIMEOUT_RANGE_MS.start(),
            TIMEOUT_RANGE_MS.end()
        )));
    }
    match route.authorization_type.as_str() {
        "NONE" | "AWS_IAM" => {
            if route.authorizer_id.is_some() {
                return Err(bad_request(format!(
                    "AuthorizationType {} takes no AuthorizerId",
                    route.authorization_type
                )));
            }
        }
        kind @ ("JWT" | "CUSTOM") => {
            let wanted = if kind == "JWT" { "JWT" } else { "REQUEST" };
            let id = route.authorizer_id.as_deref().ok_or_else(|| {
                bad_request(format!("AuthorizationType {kind} needs an AuthorizerId"))
            })?;
            let authorizer = api
                .authorizers
                .iter()
                .find(|a| a.authorizer_id == id)
                .ok_or_else(|| {
                    not_found(format!("Invalid Authorizer identifier specified {id}"))
                })?;
            if authorizer.authorizer_type != wanted {
                return Err(bad_request(format!(
                    "AuthorizationType {kind} needs a {wanted} authorizer; {id} is {}",
                    authorizer.authorizer_type
                )));
            }
        }
        other => {
            return Err(bad_request(format!(
                "AuthorizationType must be NONE, JWT, CUSTOM or AWS_IAM, not {other:?}"
            )));
        }
    }
    if !route.authorization_scopes.is_empty() && route.authorization_type != "JWT" {
        return Err(bad_request("AuthorizationScopes apply to JWT routes only"));
    }
    if api
        .routes
        .iter()
        .any(|r| r.route_key == route.route_key && r.route_id != route.route_id)
    {
        return Err(conflict(format!(
            "Route with key {} already exists for this API",
            route.route_key
        )));
    }
    Ok(())
}

/// The route's target from a request, checked (this reads the store, so it is done before
/// the API's document is changed).
fn requested_target(state: &ApiState, input: &Value) -> Result<Option<String>, ApiError> {
    text(input, "Target")?
        .map(|target| check_target(state, &target))
        .transpose()
}

/// The members of a route request, applied over `route`; `target` is the checked `Target`.
fn apply_route(input: &Value, target: Option<&str>, route: &mut Route) -> Result<(), ApiError> {
    if let Some(key) = text(input, "RouteKey")? {
        route.route_key = key;
    }
    if let Some(target) = target {
        route.target = target.to_string();
    }
    if let Some(version) = text(input, "PayloadFormatVersion")? {
        route.payload_format_version = version;
    }
    match input.get("TimeoutInMillis") {
        None | Some(Value::Null) => {}
        Some(v) => {
            route.timeout_in_millis = v
                .as_u64()
                .ok_or_else(|| bad_request("TimeoutInMillis must be a whole number"))?;
        }
    }
    if let Some(kind) = text(input, "AuthorizationType")? {
        route.authorization_type = kind;
    }
    if input.get("AuthorizerId").is_some() {
        route.authorizer_id = text(input, "AuthorizerId")?;
    }
    if let Some(scopes) = input.get("AuthorizationScopes") {
        route.authorization_scopes = serde_json::from_value(scopes.clone())
            .map_err(|_| bad_request("AuthorizationScopes must be a list of strings"))?;
    }
    if input.get("RouteResponseSelectionExpression").is_some() {
        route.route_response_selection_expression =
            text(input, "RouteResponseSelectionExpression")?;
    }
    Ok(())
}

fn create_route(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let mut route = Route {
        route_id: new_id(7),
        route_key: String::new(),
        target: String::new(),
        payload_format_version: "2.0".into(),
        timeout_in_millis: *TIMEOUT_RANGE_MS.end(),
        authorization_type: "NONE".into(),
        authorizer_id: None,
        authorization_scopes: Vec::new(),
        route_response_selection_expression: None,
    };
    if text(&input, "RouteKey")?.is_none() {
        return Err(bad_request(
            "RouteKey is required, e.g. \"GET /items/{id}\"",
        ));
    }
    if text(&input, "Target")?.is_none() {
        return Err(bad_request(
            "Target is required: the function to invoke (name, name:qualifier or ARN)",
        ));
    }
    let target = requested_target(state, &input)?;
    apply_route(&input, target.as_deref(), &mut route)?;
    let mut added = None;
    modify(state, id, &mut |api| {
        let mut route = route.clone();
        if api.is_websocket() && input.get("PayloadFormatVersion").is_none() {
            route.payload_format_version = "1.0".into();
        }
        check_route(api, &mut route)?;
        api.routes.push(route.clone());
        added = Some(route);
        Ok(())
    })?;
    let route = added.ok_or_else(|| ApiError::internal("route was not added"))?;
    tracing::info!(api = id, route = %route.route_key, target = %route.target, "route created");
    Ok(ApiReply::json(StatusCode::CREATED, &route_json(&route)))
}

fn update_route(
    req: &ApiRequest,
    state: &ApiState,
    id: &str,
    route_id: &str,
) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let target = requested_target(state, &input)?;
    let mut updated = None;
    modify(state, id, &mut |api| {
        let index = api
            .routes
            .iter()
            .position(|r| r.route_id == route_id)
            .ok_or_else(|| not_found(format!("Invalid Route identifier specified {route_id}")))?;
        let mut route = api.routes[index].clone();
        apply_route(&input, target.as_deref(), &mut route)?;
        check_route(api, &mut route)?;
        api.routes[index] = route.clone();
        updated = Some(route);
        Ok(())
    })?;
    let route = updated.ok_or_else(|| ApiError::internal("route was not updated"))?;
    Ok(ApiReply::json(StatusCode::OK, &route_json(&route)))
}

/// Checks an authorizer definition.
pub(crate) fn check_authorizer(
    state: &ApiState,
    authorizer: &mut Authorizer,
) -> Result<(), ApiError> {
    if authorizer.name.is_empty() || authorizer.name.len() > 128 {
        return Err(bad_request("Authorizer Name must be 1-128 characters"));
    }
    for source in &authorizer.identity_source {
        let ok = [
            "$request.header.",
            "$request.querystring.",
            "$context.",
            "$stageVariables.",
            "route.request.header.",
            "route.request.querystring.",
            "stageVariables.",
        ]
        .iter()
        .any(|prefix| {
            source
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty())
        });
        if !ok {
            return Err(bad_request(format!(
                "IdentitySource {source:?} must be $request.header.<name>, $request.querystring.<name>, $context.<name> or $stageVariables.<name> (on WebSocket APIs also route.request.header.<name>, route.request.querystring.<name>, stageVariables.<name>)"
            )));
        }
    }
    match authorizer.authorizer_type.as_str() {
        "JWT" => {
            let config = authorizer.jwt_configuration.as_ref().ok_or_else(|| {
                bad_request("a JWT authorizer needs JwtConfiguration {Issuer, Audience}")
            })?;
            if config.issuer.is_empty() {
                return Err(bad_request("JwtConfiguration.Issuer is required"));
            }
            if config.audience.is_empty() {
                return Err(bad_request(
                    "JwtConfiguration.Audience needs at least one value",
                ));
            }
            if let Some(uri) = &authorizer.jwks_uri
                && !["http://", "https://", "file:///"]
                    .iter()
                    .any(|s| uri.starts_with(s))
            {
                return Err(bad_request(format!(
                    "JwksUri {uri:?} must be an http://, https:// or file:/// URL"
                )));
            }
            if authorizer.identity_source.is_empty() {
                authorizer.identity_source = vec!["$request.header.Authorization".into()];
            }
            if authorizer.identity_source.len() != 1 {
                return Err(bad_request("a JWT authorizer takes one IdentitySource"));
            }
        }
        "REQUEST" => {
            let uri = authorizer.authorizer_uri.as_deref().ok_or_else(|| {
                bad_request("a REQUEST authorizer needs AuthorizerUri (its function)")
            })?;
            let function = crate::openapi::function_of_uri(uri).unwrap_or(uri);
            authorizer.authorizer_uri = Some(check_target(state, function)?);
            let version = authorizer
                .authorizer_payload_format_version
                .get_or_insert_with(|| "2.0".into());
            if !["1.0", "2.0"].contains(&version.as_str()) {
                return Err(bad_request(
                    "AuthorizerPayloadFormatVersion must be 1.0 or 2.0",
                ));
            }
            if authorizer.enable_simple_responses && version != "2.0" {
                return Err(bad_request(
                    "EnableSimpleResponses needs AuthorizerPayloadFormatVersion 2.0",
                ));
            }
            if authorizer.authorizer_result_ttl_in_seconds > 3600 {
                return Err(bad_request(
                    "AuthorizerResultTtlInSeconds must be from 0 to 3600",
                ));
            }
            if authorizer.authorizer_result_ttl_in_seconds > 0
                && authorizer.identity_source.is_empty()
            {
                return Err(bad_request(
                    "a cached REQUEST authorizer needs an IdentitySource to key its cache",
                ));
            }
        }
        other => {
            return Err(bad_request(format!(
                "AuthorizerType must be JWT or REQUEST, not {other:?}"
            )));
        }
    }
    Ok(())
}

fn create_authorizer(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let mut input: Value = req.json()?;
    if let Some(object) = input.as_object_mut() {
        object.insert("AuthorizerId".into(), json!(new_id(6)));
        object.entry("IdentitySource").or_insert_with(|| json!([]));
    }
    let mut authorizer: Authorizer = serde_json::from_value(input)
        .map_err(|e| bad_request(format!("invalid authorizer: {e}")))?;
    check_authorizer(state, &mut authorizer)?;
    modify(state, id, &mut |api| {
        if api.authorizers.iter().any(|a| a.name == authorizer.name) {
            return Err(conflict(format!(
                "Authorizer {} already exists for this API",
                authorizer.name
            )));
        }
        if api.is_websocket() && authorizer.authorizer_type != "REQUEST" {
            return Err(bad_request("WebSocket APIs take REQUEST authorizers only"));
        }
        api.authorizers.push(authorizer.clone());
        Ok(())
    })?;
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &authorizer_json(&authorizer),
    ))
}

fn check_stage_name(name: &str) -> Result<(), ApiError> {
    let ok = name == "$default"
        || (!name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')));
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "StageName {name:?} must be $default or 1-128 letters, digits, '-' or '_'"
        )))
    }
}

fn stage_variables(input: &Value) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    match input.get("StageVariables") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|_| bad_request("StageVariables must map names to strings")),
    }
}

fn create_stage(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let name = text(&input, "StageName")?.ok_or_else(|| bad_request("StageName is required"))?;
    check_stage_name(&name)?;
    let auto_deploy = input
        .get("AutoDeploy")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let variables = stage_variables(&input)?.unwrap_or_default();
    let api = modify(state, id, &mut |api| {
        if api.stage(&name).is_some() {
            return Err(conflict(format!("Stage {name} already exists")));
        }
        api.stages.push(Stage {
            stage_name: name.clone(),
            auto_deploy,
            stage_variables: variables.clone(),
            created_date: unix_now(),
            deployment: None,
        });
        Ok(())
    })?;
    let stage = api
        .stage(&name)
        .ok_or_else(|| ApiError::internal("stage was not added"))?;
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &stage_json(state, &api, stage),
    ))
}

fn update_stage(
    req: &ApiRequest,
    state: &ApiState,
    id: &str,
    name: &str,
) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let variables = stage_variables(&input)?;
    let api = modify(state, id, &mut |api| {
        let stage = api
            .stages
            .iter_mut()
            .find(|s| s.stage_name == name)
            .ok_or_else(|| not_found(format!("Invalid stage identifier specified {name}")))?;
        if let Some(auto) = input.get("AutoDeploy").and_then(Value::as_bool) {
            stage.auto_deploy = auto;
        }
        if let Some(variables) = &variables {
            stage.stage_variables = variables.clone();
        }
        Ok(())
    })?;
    let stage = api
        .stage(name)
        .ok_or_else(|| ApiError::internal("stage vanished"))?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &stage_json(state, &api, stage),
    ))
}

fn deploy(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let input: Value = req.json()?;
    let name = text(&input, "StageName")?.ok_or_else(|| bad_request("StageName is required"))?;
    let api = deploy_to(state, id, &name, text(&input, "Description")?)?;
    let deployment = api
        .stage(&name)
        .and_then(|s| s.deployment.as_ref())
        .ok_or_else(|| ApiError::internal("nothing was deployed"))?;
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &json!({
            "DeploymentId": deployment.deployment_id,
            "StageName": name,
            "Description": deployment.description,
            "DeploymentStatus": "DEPLOYED",
            "CreatedDate": lambent_types::time::iso8601_epoch_millis(deployment.created_date.saturating_mul(1000)),
            "Routes": deployment.routes.len(),
        }),
    ))
}

/// Deploys an API's current routes and authorizers to a stage, creating the stage when
/// missing.
pub(crate) fn deploy_to(
    state: &ApiState,
    id: &str,
    name: &str,
    description: Option<String>,
) -> Result<Api, ApiError> {
    check_stage_name(name)?;
    let api = modify(state, id, &mut |api| {
        if api.routes.is_empty() {
            return Err(bad_request(
                "the API has no routes to deploy; add one with `lambent api route add`",
            ));
        }
        let snapshot = api.snapshot(description.clone());
        if api.stage(name).is_none() {
            api.stages.push(Stage {
                stage_name: name.to_string(),
                auto_deploy: false,
                stage_variables: BTreeMap::new(),
                created_date: unix_now(),
                deployment: None,
            });
        }
        if let Some(stage) = api.stages.iter_mut().find(|s| s.stage_name == name) {
            stage.deployment = Some(snapshot);
        }
        Ok(())
    })?;
    tracing::info!(api = id, stage = %name, "API deployed");
    Ok(api)
}

fn list(state: &ApiState) -> Result<ApiReply, ApiError> {
    let mut items = Vec::new();
    for (_, id, doc) in state.store.list_documents(kinds::API, Some(""))? {
        match serde_json::from_value::<Api>(doc) {
            Ok(api) => items.push(api_json(state, &api)),
            Err(e) => tracing::error!(api = %id, "stored API does not parse: {e}"),
        }
    }
    Ok(ApiReply::json(StatusCode::OK, &json!({ "Items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: &str) -> Route {
        Route {
            route_id: key.to_string(),
            route_key: key.to_string(),
            target: "f".into(),
            payload_format_version: "2.0".into(),
            timeout_in_millis: 30_000,
            authorization_type: "NONE".into(),
            authorizer_id: None,
            authorization_scopes: Vec::new(),
            route_response_selection_expression: None,
        }
    }

    #[test]
    fn parses_route_keys() {
        assert_eq!(RouteKey::parse("$default"), Ok(RouteKey::Default));
        assert!(RouteKey::parse("GET /items/{id}").is_ok());
        assert!(RouteKey::parse("ANY /{proxy+}").is_ok());
        assert!(RouteKey::parse("GET /").is_ok());
        for bad in [
            "GET",
            "FETCH /x",
            "GET x",
            "GET /a//b",
            "GET /{proxy+}/x",
            "GET /a{b}",
            "GET /{a}/{a}",
            "GET /{}",
        ] {
            assert!(RouteKey::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn selects_the_most_specific_route() {
        let routes = vec![
            route("$default"),
            route("ANY /{proxy+}"),
            route("GET /items/{id}"),
            route("GET /items/special"),
            route("ANY /items/{id}"),
            route("GET /"),
        ];
        let pick = |m: &str, p: &str| {
            select_route(&routes, m, p).map(|(r, params)| (r.route_key.clone(), params))
        };
        assert_eq!(
            pick("GET", "/items/special").unwrap().0,
            "GET /items/special"
        );
        let (key, params) = pick("GET", "/items/7").unwrap();
        assert_eq!(key, "GET /items/{id}");
        assert_eq!(params["id"], "7");
        assert_eq!(pick("POST", "/items/7").unwrap().0, "ANY /items/{id}");
        let (key, params) = pick("DELETE", "/a/b/c").unwrap();
        assert_eq!(key, "ANY /{proxy+}");
        assert_eq!(params["proxy"], "a/b/c");
        assert_eq!(pick("GET", "/").unwrap().0, "GET /");
        assert_eq!(pick("POST", "/").unwrap().0, "$default");
    }

    #[test]
    fn selection_expressions() {
        assert!(check_selection_expression("$request.body.action").is_ok());
        assert!(check_selection_expression("$request.body.a.b").is_ok());
        assert!(check_selection_expression("$request.header.x").is_err());
        assert!(check_selection_expression("$request.body.").is_err());
    }
}
