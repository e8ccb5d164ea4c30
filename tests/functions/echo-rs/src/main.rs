//! Test function for Lambent's end-to-end suite, built with the official
//! `lambda_runtime` crate and deployed as a `provided.al2023` `bootstrap`.
//!
//! For every event it answers
//! `{"echo": <event>, "request_id", "function_arn", "memory", "pid"}`;
//! an event with `"fail": true` makes it return an error instead, and an
//! event with `"marker": "<path>"` makes it write the request id to that
//! path first (so an asynchronous invoke can be observed from outside), and
//! `"sleep_ms": N` makes it sleep that long before answering, and `"quiet": true` makes it
//! answer `{"ok": true, "request_id"}` without echoing the event (for large payloads).
//! When `LAMBENT_TEST_PID_DIR` is set, the process records its PID (file
//! `<pid>.pid`, holding its start time) there at start-up, so the suite can
//! check that the server left no process behind.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

fn memory_from_env() -> Value {
    match std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
        Ok(raw) => raw.parse::<i64>().map_or(Value::String(raw), Value::from),
        Err(_) => Value::Null,
    }
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    if let Some(path) = payload.get("marker").and_then(Value::as_str) {
        std::fs::write(path, ctx.request_id.as_bytes())?;
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if payload.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err(format!("echo-rs failed on purpose (request {})", ctx.request_id).into());
    }
    if payload.get("quiet").and_then(Value::as_bool) == Some(true) {
        return Ok(json!({"ok": true, "request_id": ctx.request_id}));
    }
    Ok(json!({
        "echo": payload,
        "request_id": ctx.request_id,
        "function_arn": ctx.invoked_function_arn,
        "memory": memory_from_env(),
        "pid": std::process::id(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if let Ok(dir) = std::env::var("LAMBENT_TEST_PID_DIR")
        && !dir.is_empty()
    {
        // Field 22 of /proc/self/stat (the start time) tells this process
        // apart from a later one that reuses its PID.
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let start = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            .unwrap_or("0")
            .to_owned();
        let pid = std::process::id();
        std::fs::write(std::path::Path::new(&dir).join(format!("{pid}.pid")), start)?;
    }
    lambda_runtime::run(service_fn(handler)).await
}
