//! Lambent's schedules API (EventBridge-style schedules that fire functions asynchronously):
//!
//! - `POST /lambent/schedules` with `{Name, ScheduleExpression, Target, Timezone?, Input?,
//!   State?, GraceSeconds?}` → 201, the schedule; `Target` is a function name, `name:qualifier`
//!   or function ARN; `Input` a JSON text sent instead of the scheduled event.
//! - `GET /lambent/schedules` → `{"Schedules": […]}`; `GET /lambent/schedules/<name>`.
//! - `PUT /lambent/schedules/<name>` with any of `ScheduleExpression`, `Timezone`, `Target`,
//!   `Input` (null removes it), `State`, `GraceSeconds` → 200, the schedule.
//! - `DELETE /lambent/schedules/<name>` → 204.
//!
//! A schedule as answered: `{Name, Arn, ScheduleExpression, Timezone, Target: {Arn, Input?},
//! State, GraceSeconds, CreationDate, LastFiredAt?, NextFireAt?, LastError?}`.

use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use lambent_events::cron::Schedule;
use lambent_events::schedule::{DEFAULT_GRACE_SECONDS, next_fire, rule_arn};
use lambent_store::kinds;
use lambent_types::FunctionRef;
use lambent_types::time::iso8601_epoch_millis;

use crate::settings::{check_owner, require};
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Longest `Input` accepted (EventBridge's limit).
const MAX_INPUT: usize = 8192;

/// Routes the schedule operations; `None` when the request is not one of them.
pub(crate) fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    match (&req.method, segments) {
        (&Method::POST, ["lambent", "schedules"]) => Some(create(req, state)),
        (&Method::GET, ["lambent", "schedules"]) => Some(list(state)),
        (&Method::GET, ["lambent", "schedules", name]) => Some(get(state, name)),
        (&Method::PUT, ["lambent", "schedules", name]) => Some(update(req, state, name)),
        (&Method::DELETE, ["lambent", "schedules", name]) => Some(delete(state, name)),
        _ => None,
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "schedule name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!("Schedule not found: {name}"))
}

/// Checks the members a create or update sets, writing them into `doc`.
fn apply(
    state: &ApiState,
    input: &Map<String, Value>,
    doc: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match input.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_content(format!("{key} must be a string"))),
        }
    };
    if let Some(expression) = text("ScheduleExpression")? {
        doc.insert("ScheduleExpression".into(), json!(expression));
    }
    if input.contains_key("Timezone") {
        doc.insert(
            "Timezone".into(),
            json!(text("Timezone")?.unwrap_or_else(|| "UTC".into())),
        );
    }
    let expression = doc
        .get("ScheduleExpression")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(
                "ScheduleExpression is required, e.g. rate(5 minutes) or cron(0 12 * * ? *)",
            )
        })?;
    let zone = doc.get("Timezone").and_then(Value::as_str);
    let schedule =
        Schedule::parse(expression, zone).map_err(|e| ApiError::invalid(e.to_string()))?;
    let now = unix_now();
    if input.contains_key("ScheduleExpression") && schedule.next_after(now - 1, now).is_none() {
        return Err(ApiError::invalid(format!(
            "{} never fires after now ({}): a one-time or year-bounded schedule must lie in the future",
            schedule.expression(),
            iso8601_epoch_millis(now.saturating_mul(1000))
        )));
    }
    doc.insert("ScheduleExpression".into(), json!(schedule.expression()));
    doc.insert("Timezone".into(), json!(schedule.zone()));
    if let Some(target) = text("Target")? {
        check_owner(&state.arns, &target)?;
        let function = FunctionRef::parse(&target, None)?;
        require(state, &function)?;
        doc.insert("FunctionName".into(), json!(function.name));
        doc.insert(
            "Qualifier".into(),
            json!(function.qualifier.as_ref().map(ToString::to_string)),
        );
    }
    if !doc.contains_key("FunctionName") {
        return Err(ApiError::invalid(
            "Target is required: the function to fire (name, name:qualifier or ARN)",
        ));
    }
    if input.contains_key("Input") {
        match text("Input")? {
            Some(body) => {
                if body.len() > MAX_INPUT {
                    return Err(ApiError::invalid(format!(
                        "Input must be at most {MAX_INPUT} characters"
                    )));
                }
                if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_err() {
                    return Err(ApiError::invalid("Input must be valid JSON text"));
                }
                doc.insert("Input".into(), json!(body));
            }
            None => {
                doc.remove("Input");
            }
        }
    }
    if let Some(state_text) = text("State")? {
        if state_text != "ENABLED" && state_text != "DISABLED" {
            return Err(ApiError::invalid(format!(
                "State must be ENABLED or DISABLED, got {state_text:?}"
            )));
        }
        doc.insert("State".into(), json!(state_text));
    }
    match input.get("GraceSeconds") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(seconds) if (0..=86_400).contains(&seconds) => {
                doc.insert("GraceSeconds".into(), json!(seconds));
            }
            _ => {
                return Err(ApiError::invalid(
                    "GraceSeconds must be a whole number from 0 to 86400",
                ));
            }
        },
    }
    Ok(())
}

fn output(state: &ApiState, name: &str, doc: &Value) -> Value {
    let function = doc["FunctionName"].as_str().unwrap_or_default();
    let qualifier = doc["Qualifier"]
        .as_str()
        .and_then(|q| lambent_types::Qualifier::parse(q).ok());
    let mut target = json!({ "Arn": state.arns.arn_as_named(function, qualifier.as_ref()) });
    if let Some(input) = doc["Input"].as_str() {
        target["Input"] = json!(input);
    }
    let seconds = |key: &str| {
        doc[key]
            .as_i64()
            .map(|s| iso8601_epoch_millis(s.saturating_mul(1000)))
    };
    let mut out = json!({
        "Name": name,
        "Arn": rule_arn(&state.arns.region, &state.arns.account_id, name),
        "ScheduleExpression": doc["ScheduleExpression"],
        "Timezone": doc["Timezone"],
        "Target": target,
        "State": doc["State"],
        "GraceSeconds": doc["GraceSeconds"],
        "CreationDate": seconds("CreatedAt"),
    });
    if let Some(at) = seconds("LastFiredAt") {
        out["LastFiredAt"] = json!(at);
    }
    if doc["State"] == "ENABLED"
        && let Some(next) = next_fire(doc)
    {
        out["NextFireAt"] = json!(iso8601_epoch_millis(next.saturating_mul(1000)));
    }
    if let Some(error) = doc["LastError"].as_str() {
        out["LastError"] = json!(error);
    }
    out
}

fn create(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input: Map<String, Value> = req.json()?;
    let name = input
        .get("Name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Name is required"))?
        .to_string();
    check_name(&name)?;
    let now = unix_now();
    let mut doc = Map::new();
    doc.insert("Name".into(), json!(name));
    doc.insert("Timezone".into(), json!("UTC"));
    doc.insert("State".into(), json!("ENABLED"));
    doc.insert("GraceSeconds".into(), json!(DEFAULT_GRACE_SECONDS));
    doc.insert("CreatedAt".into(), json!(now));
    apply(state, &input, &mut doc)?;
    let doc = Value::Object(doc);
    state
        .store
        .modify_document(kinds::SCHEDULE, "", &name, &mut |current| match current {
            Some(_) => Err(lambent_store::StoreError::Conflict(format!(
                "Schedule {name} already exists"
            ))),
            None => Ok(Some(doc.clone())),
        })?;
    tracing::info!(schedule = %name, expression = %doc["ScheduleExpression"], function = %doc["FunctionName"], "schedule created");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &output(state, &name, &doc),
    ))
}

fn get(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    let doc = state
        .store
        .get_document(kinds::SCHEDULE, "", name)?
        .ok_or_else(|| missing(name))?;
    Ok(ApiReply::json(StatusCode::OK, &output(state, name, &doc)))
}

fn list(state: &ApiState) -> Result<ApiReply, ApiError> {
    let schedules: Vec<Value> = state
        .store
        .list_documents(kinds::SCHEDULE, Some(""))?
        .iter()
        .map(|(_, name, doc)| output(state, name, doc))
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "Schedules": schedules }),
    ))
}

fn update(req: &ApiRequest, state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    let input: Map<String, Value> = req.json()?;
    let Some(Value::Object(mut doc)) = state.store.get_document(kinds::SCHEDULE, "", name)? else {
        return Err(missing(name));
    };
    // Checked outside the store's transaction: the target check reads the store.
    apply(state, &input, &mut doc)?;
    let changed_timing = input.contains_key("ScheduleExpression") || input.contains_key("Timezone");
    let updated = Value::Object(doc);
    let written = state
        .store
        .modify_document(kinds::SCHEDULE, "", name, &mut |current| {
            let Some(current) = current else {
                return Err(lambent_store::StoreError::NotFound(format!(
                    "Schedule not found: {name}"
                )));
            };
            let mut next = updated.clone();
            // The runner's record of firings stays the runner's.
            next["LastFiredAt"] = current["LastFiredAt"].clone();
            next["LastError"] = current["LastError"].clone();
            if changed_timing {
                // A new expression counts from now, like a new schedule.
                next["CreatedAt"] = json!(unix_now());
                next["LastFiredAt"] = Value::Null;
            }
            Ok(Some(next))
        })?
        .unwrap_or_default();
    tracing::info!(schedule = %name, "schedule updated");
    Ok(ApiReply::json(
        StatusCode::OK,
        &output(state, name, &written),
    ))
}

fn delete(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    crate::queue::delete_named(state, kinds::SCHEDULE, name, missing)
}
