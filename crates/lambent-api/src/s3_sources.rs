//! Webhook sources of S3-style bucket notifications (as MinIO, Ceph RGW and other
//! S3-compatible stores send them), delivered to a function asynchronously with S3's event
//! shape.
//!
//! - `PUT /lambent/s3-sources/<name>` with `{"Target": "<function>", "RotateSecret": bool?}`
//!   → 200 `{Name, Target: {Arn}, Path, CreationDate, Secret?}`. The secret is generated when
//!   the source is created (or rotated) and shown only then; the store keeps its SHA-256.
//! - `GET /lambent/s3-sources`, `GET`/`DELETE /lambent/s3-sources/<name>`.
//! - `POST /lambent/s3-notify/<name>`: the endpoint the object store calls, not signed with
//!   SigV4 but authenticated by the source's secret: `Authorization: Bearer <secret>` (MinIO's
//!   `auth_token`), `Authorization: <secret>`, or `?token=<secret>`. The body is a notification
//!   (`{"Records": [...]}`, MinIO's `{"EventName", "Key", "Records"}` too); its records are
//!   queued as one asynchronous invocation `{"Records": [...]}` → 200 `{"Accepted": n}`.
//!   Notifications without records (S3's `s3:TestEvent`) are answered 200 and not delivered.

use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use lambent_invoke::{InvocationType, InvokeRequest};
use lambent_store::kinds;
use lambent_types::time::iso8601_epoch_millis;
use lambent_types::{FunctionRef, Qualifier};

use crate::settings::{check_owner, require};
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Routes the source management operations; `None` when the request is not one of them.
pub(crate) fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    match (&req.method, segments) {
        (&Method::GET, ["lambent", "s3-sources"]) => Some(list(state)),
        (&Method::PUT, ["lambent", "s3-sources", name]) => Some(put(req, state, name)),
        (&Method::GET, ["lambent", "s3-sources", name]) => Some(get(state, name)),
        (&Method::DELETE, ["lambent", "s3-sources", name]) => Some(delete(state, name)),
        _ => None,
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "source name {name:?} must be 1-64 letters, digits, '-' or '_'"
        )))
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!("S3 source not found: {name}"))
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn output(state: &ApiState, name: &str, doc: &Value) -> Value {
    let qualifier = doc["Qualifier"]
        .as_str()
        .and_then(|q| Qualifier::parse(q).ok());
    let function = doc["FunctionName"].as_str().unwrap_or_default();
    json!({
        "Name": name,
        "Target": { "Arn": state.arns.arn_as_named(function, qualifier.as_ref()) },
        "Path": format!("/lambent/s3-notify/{name}"),
        "CreationDate": iso8601_epoch_millis(doc["CreatedAt"].as_i64().unwrap_or(0)),
    })
}

fn put(req: &ApiRequest, state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    check_name(name)?;
    let input: Map<String, Value> = req.json()?;
    let target = input
        .get("Target")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Target is required: the function notifications go to"))?;
    check_owner(&state.arns, target)?;
    let function = FunctionRef::parse(target, None)?;
    require(state, &function)?;
    let rotate = match input.get("RotateSecret") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_content("RotateSecret must be a boolean")),
    };
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now_ms = lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64;
    let mut shown_secret = None;
    let doc = state
        .store
        .modify_document(kinds::S3_SOURCE, "", name, &mut |current| {
            let mut doc = current.unwrap_or_else(|| json!({ "CreatedAt": now_ms }));
            if rotate || doc["SecretSha256"].as_str().is_none() {
                doc["SecretSha256"] = json!(digest(&secret));
                shown_secret = Some(secret.clone());
            }
            doc["FunctionName"] = json!(function.name);
            doc["Qualifier"] = json!(function.qualifier.as_ref().map(ToString::to_string));
            Ok(Some(doc))
        })?
        .unwrap_or_default();
    let mut out = output(state, name, &doc);
    if let Some(secret) = shown_secret {
        out["Secret"] = json!(secret);
    }
    tracing::info!(source = %name, function = %function.name, "S3 notification source saved");
    Ok(ApiReply::json(StatusCode::OK, &out))
}

fn get(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    let doc = state
        .store
        .get_document(kinds::S3_SOURCE, "", name)?
        .ok_or_else(|| missing(name))?;
    Ok(ApiReply::json(StatusCode::OK, &output(state, name, &doc)))
}

fn list(state: &ApiState) -> Result<ApiReply, ApiError> {
    let sources: Vec<Value> = state
        .store
        .list_documents(kinds::S3_SOURCE, Some(""))?
        .iter()
        .map(|(_, name, doc)| output(state, name, doc))
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "S3Sources": sources }),
    ))
}

fn delete(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    crate::queue::delete_named(state, kinds::S3_SOURCE, name, missing)
}

/// The secret a notification presents: `Authorization: Bearer <secret>`, `Authorization:
/// <secret>`, or `?token=<secret>`.
fn presented_secret(headers: &HeaderMap, query: &str) -> Option<String> {
    if let Some(value) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value);
        return Some(secret.trim().to_string());
    }
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Compares two equal-length hex digests without an early exit.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `POST /lambent/s3-notify/<name>`: authenticates the notification by the source's secret
/// and queues its records for the source's function.
pub(crate) async fn notify(
    state: &ApiState,
    name: &str,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    request_id: &str,
) -> Result<ApiReply, ApiError> {
    let denied = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "The notification's secret is missing or wrong for this source",
        )
    };
    let doc = state.store.get_document(kinds::S3_SOURCE, "", name)?;
    let (Some(doc), Some(secret)) = (doc, presented_secret(headers, query)) else {
        return Err(denied());
    };
    if !same_digest(
        &digest(&secret),
        doc["SecretSha256"].as_str().unwrap_or_default(),
    ) {
        return Err(denied());
    }
    let notification: Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "The notification body is not JSON",
        )
    })?;
    let records = match notification.get("Records") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(records)) => records.clone(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MalformedJSON",
                "Records must be a list",
            ));
        }
    };
    if records.is_empty() {
        return Ok(ApiReply::json(StatusCode::OK, &json!({ "Accepted": 0 })));
    }
    let records: Vec<Value> = records
        .into_iter()
        .map(|record| s3_record(record, &state.arns.region))
        .collect::<Result<_, _>>()?;
    let count = records.len();
    let qualifier = match doc["Qualifier"].as_str() {
        Some(q) => Some(Qualifier::parse(q)?),
        None => None,
    };
    let request = InvokeRequest {
        function: FunctionRef {
            name: doc["FunctionName"].as_str().unwrap_or_default().to_string(),
            qualifier,
        },
        invocation_type: InvocationType::Event,
        log_tail: false,
        payload: bytes::Bytes::from(json!({ "Records": records }).to_string()),
        client_context: None,
        trace_id: None,
        request_id: request_id.to_string(),
    };
    state.invoker.invoke(request).await?;
    tracing::info!(source = %name, records = count, %request_id, "S3 notification queued");
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "Accepted": count }),
    ))
}

/// One notification record in S3's event shape: what the store sent, with `eventSource`
/// `aws:s3` (MinIO says `minio:s3`), and `eventVersion` and `awsRegion` filled in when absent.
fn s3_record(record: Value, region: &str) -> Result<Value, ApiError> {
    let Value::Object(mut record) = record else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "each record must be an object",
        ));
    };
    if !record.get("s3").is_some_and(Value::is_object)
        || !record.get("eventName").is_some_and(Value::is_string)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "each record needs eventName and s3 (an S3 event notification record)",
        ));
    }
    record.insert("eventSource".into(), json!("aws:s3"));
    if !record.get("eventVersion").is_some_and(Value::is_string) {
        record.insert("eventVersion".into(), json!("2.1"));
    }
    if record
        .get("awsRegion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        record.insert("awsRegion".into(), json!(region));
    }
    Ok(Value::Object(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_headers_or_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            presented_secret(&headers, "token=abc%2Bd"),
            Some("abc+d".into())
        );
        assert_eq!(presented_secret(&headers, "x=1"), None);
        headers.insert(
            hyper::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        assert_eq!(presented_secret(&headers, ""), Some("s3cret".into()));
        headers.insert(hyper::header::AUTHORIZATION, "plain".parse().unwrap());
        assert_eq!(
            presented_secret(&headers, "token=other"),
            Some("plain".into())
        );
        assert!(same_digest(&digest("a"), &digest("a")));
        assert!(!same_digest(&digest("a"), &digest("b")));
        assert!(!same_digest(&digest("a"), ""));
    }

    #[test]
    fn records_are_normalized() {
        let minio = json!({"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}});
        let out = s3_record(minio, "us-east-1").unwrap();
        assert_eq!(out["eventSource"], "aws:s3");
        assert_eq!(out["eventVersion"], "2.0");
        assert_eq!(out["awsRegion"], "us-east-1");
        assert!(s3_record(json!({"eventName": "x"}), "r").is_err());
        assert!(s3_record(json!("text"), "r").is_err());
    }
}
