//! Function logs: a CloudWatch Logs-compatible subset over the JSON 1.1 protocol
//! (`POST /` with `X-Amz-Target: Logs_20140328.<Operation>`): DescribeLogGroups,
//! DescribeLogStreams, GetLogEvents and FilterLogEvents; and `GET /lambent/logs/{function}`,
//! the long-poll feed behind `lambent logs --follow`.

use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HeaderName};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use lambent_store::logs::{FilterPattern, GROUP_PREFIX, LogError, LogEvent};

use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// The prefix of every CloudWatch Logs operation's `X-Amz-Target`.
pub(crate) const TARGET_PREFIX: &str = "Logs_20140328.";
/// Most events one GetLogEvents or FilterLogEvents answer holds.
const MAX_EVENTS: usize = 10_000;
/// Longest a follow request waits for a new line.
const MAX_WAIT_SECS: u64 = 25;

/// A JSON-protocol error: `{"__type": …, "message": …}`, status 400.
struct LogsError {
    code: &'static str,
    message: String,
}

impl LogsError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "InvalidParameterException",
            message: message.into(),
        }
    }

    fn not_found(what: &str) -> Self {
        Self {
            code: "ResourceNotFoundException",
            message: format!("The specified log {what} does not exist."),
        }
    }
}

impl From<LogError> for LogsError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::NotFound(what) => Self::not_found(what),
            LogError::Io(e) => Self {
                code: "ServiceUnavailableException",
                message: e.to_string(),
            },
        }
    }
}

fn amz_json(status: StatusCode, body: &Value) -> ApiReply {
    let mut reply = ApiReply::json(status, body);
    reply
        .headers
        .push((CONTENT_TYPE, "application/x-amz-json-1.1".to_owned()));
    reply
}

/// Answers one CloudWatch Logs operation named by `target`.
pub(crate) fn handle(req: &ApiRequest, state: &ApiState, target: &str) -> ApiReply {
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let result = match serde_json::from_slice::<Value>(if req.body.is_empty() {
        b"{}"
    } else {
        &req.body
    }) {
        Err(e) => Err(LogsError {
            code: "SerializationException",
            message: format!("Could not parse request body into json: {e}"),
        }),
        Ok(input) => match operation {
            "DescribeLogGroups" => describe_log_groups(state, &input),
            "DescribeLogStreams" => describe_log_streams(state, &input),
            "GetLogEvents" => get_log_events(state, &input),
            "FilterLogEvents" => filter_log_events(state, &input),
            other => Err(LogsError {
                code: "UnknownOperationException",
                message: format!("Lambent does not implement the logs operation {other}"),
            }),
        },
    };
    match result {
        Ok(body) => amz_json(StatusCode::OK, &body),
        Err(e) => {
            tracing::debug!(operation, code = e.code, "{}", e.message);
            let mut reply = amz_json(
                StatusCode::BAD_REQUEST,
                &json!({"__type": e.code, "message": e.message}),
            );
            reply.headers.push((
                HeaderName::from_static("x-amzn-errortype"),
                e.code.to_owned(),
            ));
            reply
        }
    }
}

fn group_arn(state: &ApiState, function: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{GROUP_PREFIX}{function}",
        state.arns.region, state.arns.account_id
    )
}

fn str_field<'a>(input: &'a Value, key: &str) -> Result<Option<&'a str>, LogsError> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(LogsError::invalid(format!("{key} must be a string"))),
    }
}

fn int_field(input: &Value, key: &str) -> Result<Option<i64>, LogsError> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| LogsError::invalid(format!("{key} must be an integer"))),
    }
}

fn limit(input: &Value, max: usize) -> Result<usize, LogsError> {
    match int_field(input, "limit")? {
        None => Ok(max),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: \
             Member must have value between 1 and {max}"
        ))),
    }
}

fn index_token(input: &Value) -> Result<usize, LogsError> {
    match str_field(input, "nextToken")? {
        None => Ok(0),
        Some(token) => token
            .strip_prefix("i/")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| LogsError::invalid("The specified nextToken is invalid.")),
    }
}

/// The function a request's log group names (`logGroupName` or `logGroupIdentifier`, a name
/// or an ARN).
fn function_of(input: &Value) -> Result<String, LogsError> {
    let group = match (
        str_field(input, "logGroupName")?,
        str_field(input, "logGroupIdentifier")?,
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(id)) => match id.split_once(":log-group:") {
            Some((_, rest)) => rest.trim_end_matches(":*").to_owned(),
            None => id.to_owned(),
        },
        (None, None) => {
            return Err(LogsError::invalid(
                "Either logGroupName or logGroupIdentifier must be given.",
            ));
        }
    };
    group
        .strip_prefix(GROUP_PREFIX)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| LogsError::not_found("group"))
}

fn describe_log_groups(state: &ApiState, input: &Value) -> Result<Value, LogsError> {
    let prefix = str_field(input, "logGroupNamePrefix")?.unwrap_or("");
    let pattern = str_field(input, "logGroupNamePattern")?.unwrap_or("");
    let limit = limit(input, 50)?;
    let start = index_token(input)?;
    let groups: Vec<Value> = state
        .logs
        .groups()
        .into_iter()
        .map(|g| (format!("{GROUP_PREFIX}{}", g.function), g))
        .filter(|(name, _)| name.starts_with(prefix) && name.contains(pattern))
        .map(|(name, g)| {
            let arn = group_arn(state, &g.function);
            json!({
                "logGroupName": name,
                "creationTime": g.creation_time,
                "metricFilterCount": 0,
                "arn": format!("{arn}:*"),
                "logGroupArn": arn,
                "storedBytes": g.stored_bytes,
                "logGroupClass": "STANDARD",
            })
        })
        .collect();
    Ok(page(groups, start, limit, "logGroups"))
}

/// Items `start..start + limit` under `key`, with a `nextToken` when more remain.
fn page(items: Vec<Value>, start: usize, limit: usize, key: &str) -> Value {
    let total = items.len();
    let end = (start + limit).min(total);
    let items: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let mut out = json!({ key: items });
    if end < total {
        out["nextToken"] = format!("i/{end}").into();
    }
    out
}

fn describe_log_streams(state: &ApiState, input: &Value) -> Result<Value, LogsError> {
    let function = function_of(input)?;
    let prefix = str_field(input, "logStreamNamePrefix")?.unwrap_or("");
    let order = str_field(input, "orderBy")?.unwrap_or("LogStreamName");
    let descending = input
        .get("descending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let limit = limit(input, 50)?;
    let start = index_token(input)?;
    let mut streams = state.logs.streams(&function)?;
    streams.retain(|s| s.name.starts_with(prefix));
    match order {
        "LogStreamName" => {}
        "LastEventTime" => {
            if !prefix.is_empty() {
                return Err(LogsError::invalid(
                    "Cannot order by LastEventTime with a logStreamNamePrefix.",
                ));
            }
            streams.sort_by_key(|s| s.last_event);
        }
        other => return Err(LogsError::invalid(format!("Invalid orderBy: {other}"))),
    }
    if descending {
        streams.reverse();
    }
    let arn = group_arn(state, &function);
    let streams: Vec<Value> = streams
        .into_iter()
        .map(|s| {
            json!({
                "logStreamName": s.name,
                "creationTime": s.creation_time,
                "firstEventTimestamp": s.first_event,
                "lastEventTimestamp": s.last_event,
                "lastIngestionTime": s.last_event,
                "uploadSequenceToken": "1",
                "arn": format!("{arn}:log-stream:{}", s.name),
                "storedBytes": s.stored_bytes,
            })
        })
        .collect();
    Ok(page(streams, start, limit, "logStreams"))
}

fn in_time(event: &LogEvent, start: Option<i64>, end: Option<i64>) -> bool {
    start.is_none_or(|s| event.timestamp >= s) && end.is_none_or(|e| event.timestamp < e)
}

/// CloudWatch messages of Lambda functions end with the newline the function wrote.
fn message(event: &LogEvent) -> String {
    format!("{}\n", event.message)
}

fn get_log_events(state: &ApiState, input: &Value) -> Result<Value, LogsError> {
    let function = function_of(input)?;
    let stream = str_field(input, "logStreamName")?
        .ok_or_else(|| LogsError::invalid("logStreamName is required."))?;
    let (start_time, end_time) = (int_field(input, "startTime")?, int_field(input, "endTime")?);
    let limit = limit(input, MAX_EVENTS)?;
    let from_head = input
        .get("startFromHead")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let events: Vec<LogEvent> = state
        .logs
        .stream_events(&function, stream)?
        .into_iter()
        .filter(|e| in_time(e, start_time, end_time))
        .collect();
    let total = events.len();
    let (from, to) = match str_field(input, "nextToken")? {
        Some(token) => {
            let parse = |n: &str| n.parse::<usize>().ok().map(|n| n.min(total));
            if let Some(n) = token.strip_prefix("f/").and_then(parse) {
                (n, (n + limit).min(total))
            } else if let Some(n) = token.strip_prefix("b/").and_then(parse) {
                (n.saturating_sub(limit), n)
            } else {
                return Err(LogsError::invalid("The specified nextToken is invalid."));
            }
        }
        None if from_head => (0, limit.min(total)),
        None => (total.saturating_sub(limit), total),
    };
    let events: Vec<Value> = events[from..to]
        .iter()
        .map(|e| {
            json!({
                "timestamp": e.timestamp,
                "message": message(e),
                "ingestionTime": e.timestamp,
            })
        })
        .collect();
    Ok(json!({
        "events": events,
        "nextForwardToken": format!("f/{to:019}"),
        "nextBackwardToken": format!("b/{from:019}"),
    }))
}

fn filter_log_events(state: &ApiState, input: &Value) -> Result<Value, LogsError> {
    let function = function_of(input)?;
    let names: Option<Vec<String>> = match input.get("logStreamNames") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| LogsError::invalid("logStreamNames must be strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(LogsError::invalid("logStreamNames must be a list")),
    };
    let prefix = str_field(input, "logStreamNamePrefix")?.map(str::to_owned);
    if names.is_some() && prefix.is_some() {
        return Err(LogsError::invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive",
        ));
    }
    let pattern = str_field(input, "filterPattern")?.unwrap_or("");
    let pattern = FilterPattern::parse(pattern).ok_or_else(|| {
        LogsError::invalid("Lambent supports only term and phrase filter patterns")
    })?;
    let (start_time, end_time) = (int_field(input, "startTime")?, int_field(input, "endTime")?);
    let limit = limit(input, MAX_EVENTS)?;
    let start = index_token(input)?;
    let only = |name: &str| {
        names.as_ref().is_none_or(|n| n.iter().any(|n| n == name))
            && prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str()))
    };
    let (events, _) = state.logs.events(&function, Some(&only))?;
    let mut searched: Vec<String> = events.iter().map(|e| e.stream.clone()).collect();
    searched.sort();
    searched.dedup();
    let events: Vec<Value> = events
        .iter()
        .filter(|e| in_time(e, start_time, end_time) && pattern.matches(&e.message))
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.timestamp,
                "message": message(e),
                "ingestionTime": e.timestamp,
                "eventId": e.event_id,
            })
        })
        .collect();
    let mut out = page(events, start, limit, "events");
    out["searchedLogStreams"] = searched
        .into_iter()
        .map(|s| json!({"logStreamName": s, "searchedCompletely": true}))
        .collect::<Vec<_>>()
        .into();
    Ok(out)
}

/// `GET /lambent/logs/{function}`: with `since` (ms), the function's events since then and a
/// cursor; with `after` (a cursor), waits up to `wait` seconds for newer events.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    let ["lambent", "logs", function] = segments else {
        return None;
    };
    if req.method != Method::GET {
        return None;
    }
    Some(follow(req, state, function).await)
}

async fn follow(req: &ApiRequest, state: &ApiState, function: &str) -> Result<ApiReply, ApiError> {
    let number = |key: &str| -> Result<Option<i64>, ApiError> {
        req.query(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("{key} must be an integer")))
            })
            .transpose()
    };
    let pattern = FilterPattern::parse(req.query("filter").unwrap_or(""))
        .ok_or_else(|| ApiError::invalid("only term and phrase filter patterns are supported"))?;
    let (events, cursor) = match number("after")? {
        Some(after) => {
            let wait = number("wait")?.unwrap_or(20).clamp(0, MAX_WAIT_SECS as i64) as u64;
            state
                .logs
                .follow(function, after.max(0) as u64, Duration::from_secs(wait))
                .await
        }
        None => {
            let since = number("since")?.unwrap_or(0);
            match state.logs.events(function, None) {
                Ok((events, seq)) => {
                    let events: Vec<LogEvent> = events
                        .into_iter()
                        .filter(|e| e.timestamp >= since)
                        .collect();
                    let skip = events.len().saturating_sub(MAX_EVENTS);
                    (events.into_iter().skip(skip).collect(), seq)
                }
                Err(LogError::NotFound(_)) => (Vec::new(), state.logs.last_seq()),
                Err(LogError::Io(e)) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ServiceException",
                        e.to_string(),
                    ));
                }
            }
        }
    };
    let events: Vec<Value> = events
        .into_iter()
        .filter(|e| pattern.matches(&e.message))
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.timestamp,
                "message": e.message,
            })
        })
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({"events": events, "cursor": cursor}),
    ))
}
