//! Lambent's usage API: `GET /lambent/usage?function=<name>&since=<epoch seconds>`.
//!
//! Answers, per function, the totals and the per-minute series since `since` (default: all
//! time; the minute containing `since` is included), read from the store and merged with the
//! counts not yet flushed to it, so the answer is exact at any moment:
//!
//! ```json
//! {"Since": 0, "Functions": [{"FunctionName": "f",
//!   "Totals": {"Invocations": 3, "Errors": 1, "Throttles": 2, "ColdStarts": 1, "BilledMs": 12,
//!              "BilledMbMs": 1536, "InitMs": 90, "GbSeconds": 0.0015},
//!   "Minutes": [{"Minute": 1764221460, "Invocations": 3, …}]}],
//!  "AsyncQueues": [{"FunctionName": "f", "Depth": 12, "OldestEventAgeSeconds": 3.2}]}
//! ```

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use lambent_invoke::metering::UsageBucket;
use lambent_store::queue::ItemKind;

use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Routes the usage operation; `None` when the request is not it.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    match (&req.method, segments) {
        (&Method::GET, ["lambent", "usage"]) => Some(get_usage(req, state)),
        _ => None,
    }
}

fn get_usage(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let function = req.query("function").filter(|f| !f.is_empty());
    let since = match req.query("since").filter(|s| !s.is_empty()) {
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!(
                "since must be a number of seconds since the epoch, got {text:?}"
            ))
        })?,
        None => 0,
    };
    let usage = state
        .invoker
        .metering()
        .usage(state.store.as_ref(), function, since)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let functions: Vec<Value> = usage
        .into_iter()
        .map(|(name, minutes)| {
            let mut totals = UsageBucket::default();
            let series: Vec<Value> = minutes
                .into_iter()
                .map(|(minute, bucket)| {
                    totals.add(&bucket);
                    let mut point = bucket.to_json();
                    point["Minute"] = json!(minute);
                    point
                })
                .collect();
            json!({"FunctionName": name, "Totals": totals.to_json(), "Minutes": series})
        })
        .collect();
    let now = lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64;
    let queues: Vec<Value> = state
        .invoker
        .queue_depths()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .filter(|d| d.kind == ItemKind::Invoke && function.is_none_or(|f| f == d.function))
        .map(|d| {
            json!({
                "FunctionName": d.function,
                "Depth": d.depth,
                "OldestEventAgeSeconds": (now - d.oldest_accepted_ms).max(0) as f64 / 1000.0,
            })
        })
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({"Since": since, "Functions": functions, "AsyncQueues": queues}),
    ))
}
