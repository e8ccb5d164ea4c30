//! Lambent's own operations on the asynchronous queue and its broker connections:
//!
//! - `GET /lambent/events?function=<name>[&state=pending|failed][&limit=N]` →
//!   `{"Events": [{RequestId, Kind, FunctionName, Qualifier, Destination?, State, Attempts,
//!   AcceptedAt, NextAttemptAt?, LastError?, Condition?, FailedAt?}]}`, oldest first.
//! - `PUT /lambent/connections/<name>` with `{"Url": "amqp://…" | "nats://…"}` → 200
//!   `{Name, Type, Url}`; `GET` one or all (`/lambent/connections` → `{"Connections": […]}`);
//!   `DELETE` → 204. Passwords in URLs are never returned.

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use lambent_invoke::targets::{ConnectionKind, check_connection_name, mask_passwords};
use lambent_store::kinds;
use lambent_store::queue::{ItemKind, ItemSummary};
use lambent_types::FunctionRef;
use lambent_types::time::iso8601_epoch_millis;

use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Most events one listing returns.
const MAX_LISTED: usize = 1000;

/// Routes the queue and connection operations; `None` when the request is not one of them.
pub(crate) fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    match (&req.method, segments) {
        (&Method::GET, ["lambent", "events"]) => Some(list_events(req, state)),
        (&Method::GET, ["lambent", "connections"]) => Some(list_connections(state)),
        (&Method::PUT, ["lambent", "connections", name]) => Some(put_connection(req, state, name)),
        (&Method::GET, ["lambent", "connections", name]) => Some(get_connection(state, name)),
        (&Method::DELETE, ["lambent", "connections", name]) => Some(delete_connection(state, name)),
        _ => None,
    }
}

fn event_json(item: &ItemSummary) -> Value {
    let mut out = json!({
        "RequestId": item.request_id,
        "Kind": match item.kind {
            ItemKind::Invoke => "event",
            ItemKind::Deliver => "record",
        },
        "FunctionName": item.function,
        "Qualifier": item.qualifier.as_deref().unwrap_or("$LATEST"),
        "State": item.state,
        "Attempts": item.attempts,
        "AcceptedAt": iso8601_epoch_millis(item.accepted_ms),
    });
    if item.kind == ItemKind::Deliver {
        out["Destination"] = json!(mask_passwords(&item.lane));
    }
    if item.state == "pending" {
        out["NextAttemptAt"] = json!(iso8601_epoch_millis(item.not_before_ms));
    }
    if let Some(error) = &item.last_error {
        out["LastError"] = json!(mask_passwords(error));
    }
    if let Some(condition) = &item.condition {
        out["Condition"] = json!(condition);
    }
    if let Some(at) = item.finished_ms {
        out["FailedAt"] = json!(iso8601_epoch_millis(at));
    }
    out
}

fn list_events(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let function = req
        .query("function")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            ApiError::invalid("function is required: /lambent/events?function=<name>")
        })?;
    let function = FunctionRef::parse_unqualified(function)?;
    let wanted = match req.query("state").filter(|s| !s.is_empty()) {
        None | Some("all") => None,
        Some(s @ ("pending" | "failed")) => Some(s),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "state must be pending, failed or all, got {other:?}"
            )));
        }
    };
    let limit = match req.query("limit").filter(|s| !s.is_empty()) {
        None => MAX_LISTED,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LISTED).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!("limit must be 1 to {MAX_LISTED}, got {text:?}"))
            })?,
    };
    let items = state
        .invoker
        .queued_events(&function.name, wanted, limit)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let events: Vec<Value> = items.iter().map(event_json).collect();
    Ok(ApiReply::json(StatusCode::OK, &json!({ "Events": events })))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    check_connection_name(name).map_err(ApiError::invalid)
}

fn connection_json(name: &str, doc: &Value) -> Value {
    let url = doc["Url"].as_str().unwrap_or_default();
    json!({
        "Name": name,
        "Type": ConnectionKind::of_url(url).map_or("unknown", |k| k.as_str()),
        "Url": mask_passwords(url),
    })
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!("Connection not found: {name}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectionInput {
    url: String,
}

fn put_connection(req: &ApiRequest, state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    check_name(name)?;
    let input: ConnectionInput = req.json()?;
    if ConnectionKind::of_url(&input.url).is_none() {
        return Err(ApiError::invalid(format!(
            "Url must be a RabbitMQ (amqp://user:password@host:5672/vhost), NATS (nats://host:4222), \
             MQTT (mqtt://user:password@host:1883) or Redis (redis://:password@host:6379/0) address, got {}",
            mask_passwords(&input.url)
        )));
    }
    let doc = json!({ "Url": input.url });
    state
        .store
        .modify_document(kinds::CONNECTION, "", name, &mut |_| Ok(Some(doc.clone())))?;
    tracing::info!(connection = %name, url = %mask_passwords(&input.url), "connection saved");
    Ok(ApiReply::json(StatusCode::OK, &connection_json(name, &doc)))
}

fn get_connection(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    let doc = state
        .store
        .get_document(kinds::CONNECTION, "", name)?
        .ok_or_else(|| missing(name))?;
    Ok(ApiReply::json(StatusCode::OK, &connection_json(name, &doc)))
}

fn list_connections(state: &ApiState) -> Result<ApiReply, ApiError> {
    let connections: Vec<Value> = state
        .store
        .list_documents(kinds::CONNECTION, Some(""))?
        .iter()
        .map(|(_, name, doc)| connection_json(name, doc))
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "Connections": connections }),
    ))
}

fn delete_connection(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    delete_named(state, kinds::CONNECTION, name, missing)
}

/// Deletes one of Lambent's named documents (scope `""`): 204, or `missing(name)` when there
/// was none.
pub(crate) fn delete_named(
    state: &ApiState,
    kind: &str,
    name: &str,
    missing: fn(&str) -> ApiError,
) -> Result<ApiReply, ApiError> {
    let mut existed = false;
    state
        .store
        .modify_document(kind, "", name, &mut |current| {
            existed = current.is_some();
            Ok(None)
        })?;
    if !existed {
        return Err(missing(name));
    }
    tracing::info!(kind, name, "deleted");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}
