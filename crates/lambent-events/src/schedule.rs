//! Schedules: functions fired on EventBridge-style `rate(…)`, `cron(…)` and `at(…)`
//! expressions, each firing an asynchronous invocation (through the durable queue) with
//! EventBridge's `Scheduled Event` shape, or the schedule's own `Input`.
//!
//! Schedules are documents of kind `schedule` (scope `""`, key: name) in the store:
//! `{Name, ScheduleExpression, Timezone, FunctionName, Qualifier, Input, State, CreatedAt,
//! GraceSeconds, LastFiredAt, LastError}` (times in Unix seconds). Firings missed while no
//! server ran are handled by one policy: the most recent missed firing fires once if it is
//! at most `GraceSeconds` old, every older one is skipped (and logged).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use lambent_invoke::{InvocationType, InvokeRequest, Invoker};
use lambent_store::{Store, kinds};
use lambent_types::{FunctionRef, Qualifier};

use crate::cron::Schedule;

/// How often due schedules are looked for.
const TICK: Duration = Duration::from_millis(500);
/// Most missed firings counted when catching up (older ones are skipped uncounted).
const MAX_CATCH_UP: u64 = 100_000;
/// The grace window when a schedule sets none.
pub const DEFAULT_GRACE_SECONDS: i64 = 300;

/// The task that fires schedules on this server.
pub struct Scheduler {
    closing: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts firing the stored schedules (within a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, invoker: Arc<Invoker>) -> Self {
        let (closing, closed) = watch::channel(false);
        let task = tokio::spawn(run(store, invoker, closed));
        Self {
            closing,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops firing (a firing under way completes).
    pub async fn shutdown(&self) {
        self.closing.send_replace(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(store: Arc<dyn Store>, invoker: Arc<Invoker>, mut closed: watch::Receiver<bool>) {
    let mut parsed: HashMap<String, (String, Option<Schedule>)> = HashMap::new();
    loop {
        tick(store.as_ref(), &invoker, &mut parsed, unix_now()).await;
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = closed.wait_for(|closed| *closed) => return,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The parsed expression of a schedule document (`None` if it no longer parses).
fn schedule_of(doc: &Value) -> Option<Schedule> {
    let expression = doc["ScheduleExpression"].as_str()?;
    Schedule::parse(expression, doc["Timezone"].as_str()).ok()
}

/// When a schedule document fires next after `now`'s last firing, if ever.
pub fn next_fire(doc: &Value) -> Option<i64> {
    let schedule = schedule_of(doc)?;
    let anchor = doc["CreatedAt"].as_i64()?;
    let after = doc["LastFiredAt"].as_i64().unwrap_or(anchor - 1);
    schedule.next_after(after, anchor)
}

/// EventBridge's scheduled event for a firing at `at` (Unix seconds).
pub fn scheduled_event(rule_arn: &str, account: &str, region: &str, at: i64) -> Value {
    let time = time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default();
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time,
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    })
}

/// The ARN a schedule's events name in `resources` (an EventBridge rule ARN).
pub fn rule_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:events:{region}:{account}:rule/{name}")
}

async fn tick(
    store: &dyn Store,
    invoker: &Invoker,
    parsed: &mut HashMap<String, (String, Option<Schedule>)>,
    now: i64,
) {
    let docs = match store.list_documents(kinds::SCHEDULE, Some("")) {
        Ok(docs) => docs,
        Err(e) => {
            tracing::warn!("cannot read the schedules: {e}");
            return;
        }
    };
    parsed.retain(|name, _| docs.iter().any(|(_, n, _)| n == name));
    for (_, name, doc) in docs {
        if doc["State"].as_str() != Some("ENABLED") {
            continue;
        }
        let key = format!("{}\u{0}{}", doc["ScheduleExpression"], doc["Timezone"]);
        let schedule = match parsed.get(&name) {
            Some((k, schedule)) if *k == key => schedule.clone(),
            _ => {
                let schedule = schedule_of(&doc);
                if schedule.is_none() {
                    tracing::warn!(schedule = %name, "the schedule's expression no longer parses; it does not fire");
                }
                parsed.insert(name.clone(), (key, schedule.clone()));
                schedule
            }
        };
        let Some(schedule) = schedule else { continue };
        let Some(anchor) = doc["CreatedAt"].as_i64() else {
            continue;
        };
        let last = doc["LastFiredAt"].as_i64();
        let Some(due) = schedule.next_after(last.unwrap_or(anchor - 1), anchor) else {
            continue;
        };
        if due > now {
            continue;
        }
        // Catch up: only the most recent due firing may fire.
        let mut latest = due;
        let mut missed: u64 = 0;
        while missed < MAX_CATCH_UP {
            match schedule.next_after(latest, anchor) {
                Some(next) if next <= now => {
                    latest = next;
                    missed += 1;
                }
                _ => break,
            }
        }
        let grace = doc["GraceSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let fire = now - latest <= grace;
        // Firings are normally at most a tick late; later ones were missed while no server ran.
        let late = now - latest > 5;
        if missed > 0 || !fire || late {
            tracing::warn!(
                schedule = %name, missed = missed + u64::from(!fire), latest,
                "missed firings (the server was not running): {}",
                if fire { "firing the latest once" } else { "all outside the grace window, skipped" }
            );
        }
        let error = if fire {
            fire_once(invoker, &name, &doc, latest).await.err()
        } else {
            None
        };
        let written = store.modify_document(kinds::SCHEDULE, "", &name, &mut |current| {
            let Some(mut current) = current else {
                return Ok(None);
            };
            // Another writer (an update, another node) moved it on: leave it.
            if current["LastFiredAt"].as_i64() != last {
                return Ok(Some(current));
            }
            current["LastFiredAt"] = json!(latest);
            current["LastError"] = error.as_ref().map_or(Value::Null, |e| json!(e));
            Ok(Some(current))
        });
        if let Err(e) = written {
            tracing::warn!(schedule = %name, "cannot record the firing: {e}");
        }
    }
}

/// Queues one asynchronous invocation for a firing at `at`.
async fn fire_once(invoker: &Invoker, name: &str, doc: &Value, at: i64) -> Result<(), String> {
    let function = doc["FunctionName"].as_str().unwrap_or_default().to_string();
    let qualifier = match doc["Qualifier"].as_str() {
        Some(q) => Some(Qualifier::parse(q).map_err(|e| e.to_string())?),
        None => None,
    };
    let arns = invoker.arns();
    let payload = match doc["Input"].as_str() {
        Some(input) => input.to_string(),
        None => scheduled_event(
            &rule_arn(&arns.region, &arns.account_id, name),
            &arns.account_id,
            &arns.region,
            at,
        )
        .to_string(),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = InvokeRequest {
        function: FunctionRef {
            name: function.clone(),
            qualifier,
        },
        invocation_type: InvocationType::Event,
        log_tail: false,
        payload: Bytes::from(payload),
        client_context: None,
        trace_id: None,
        request_id: request_id.clone(),
    };
    match invoker.invoke(request).await {
        Ok(_) => {
            tracing::info!(schedule = %name, %function, %request_id, at, "schedule fired");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(schedule = %name, %function, "schedule could not fire: {e}");
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_event_shape() {
        let event = scheduled_event(
            "arn:aws:events:us-east-1:123456789012:rule/my-rule",
            "123456789012",
            "us-east-1",
            1_444_323_186,
        );
        assert_eq!(event["time"], "2015-10-08T16:53:06Z");
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert_eq!(event["version"], "0");
        assert_eq!(event["detail"], json!({}));
        assert_eq!(
            event["resources"],
            json!(["arn:aws:events:us-east-1:123456789012:rule/my-rule"])
        );
        assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn next_fire_from_documents() {
        let doc = json!({"ScheduleExpression": "rate(5 minutes)", "CreatedAt": 1000});
        assert_eq!(next_fire(&doc), Some(1000));
        let doc = json!({"ScheduleExpression": "rate(5 minutes)", "CreatedAt": 1000, "LastFiredAt": 1000});
        assert_eq!(next_fire(&doc), Some(1300));
        let doc =
            json!({"ScheduleExpression": "cron(0 12 * * ? *)", "Timezone": "UTC", "CreatedAt": 0});
        assert_eq!(next_fire(&doc), Some(12 * 3600));
        assert_eq!(
            next_fire(&json!({"ScheduleExpression": "nonsense", "CreatedAt": 0})),
            None
        );
    }
}
