//! Per-function settings and side resources: resource policies, tags, concurrency, event invoke configs, function URL configs, event-source mappings, code signing.
//!
//! Every change is one [`lambent_store::Store::modify_document`] transaction, so a refused
//! request leaves nothing half-written. Stored document formats (other code reads them):
//!
//! - `kinds::CONCURRENCY` (scope function, key `""`): `{"ReservedConcurrentExecutions": N}`.
//! - `kinds::PROVISIONED_CONCURRENCY` (key qualifier): `{"RequestedProvisionedConcurrentExecutions",
//!   "AllocatedProvisionedConcurrentExecutions", "AvailableProvisionedConcurrentExecutions",
//!   "Status", "StatusReason", "LastModified"}`.
//! - `kinds::POLICY` (key qualifier, `""` unqualified): `{"RevisionId", "Statement": [statement…]}`.
//! - `kinds::EVENT_INVOKE_CONFIG` (key qualifier, `$LATEST` included): AWS's shape without
//!   `FunctionArn` (`LastModified` epoch seconds).
//! - `kinds::URL_CONFIG` (key alias, `""` for none): AWS's shape plus `UrlId`.
//! - `kinds::EVENT_SOURCE_MAPPING` (scope `""`, key UUID): AWS's shape with the settled
//!   `State` (`Enabled`/`Disabled`) plus `FunctionName` (bare) and `Qualifier` (or null).

mod concurrency;
mod esm;
mod invoke_config;
mod policy;
pub(crate) mod tags;
pub(crate) mod urls;

use std::time::SystemTime;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use lambent_store::{StoreError, kinds};
use lambent_types::{FunctionRef, Qualifier};

use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Routes these operations; `None` when the request is not one of them.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    let m = &req.method;
    Some(match (m, segments) {
        (&Method::PUT, ["2017-10-31", "functions", f, "concurrency"]) => {
            concurrency::put_reserved(req, state, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "concurrency"]) => {
            concurrency::get_reserved(req, state, f)
        }
        (&Method::DELETE, ["2017-10-31", "functions", f, "concurrency"]) => {
            concurrency::delete_reserved(req, state, f)
        }
        (&Method::PUT, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::put_provisioned(req, state, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "provisioned-concurrency"])
            if req.query("List").is_some() =>
        {
            concurrency::list_provisioned(req, state, f)
        }
        (&Method::GET, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::get_provisioned(req, state, f)
        }
        (&Method::DELETE, ["2019-09-30", "functions", f, "provisioned-concurrency"]) => {
            concurrency::delete_provisioned(req, state, f)
        }
        (&Method::POST, ["2015-03-31", "functions", f, "policy"]) => policy::add(req, state, f),
        (&Method::GET, ["2015-03-31", "functions", f, "policy"]) => policy::get(req, state, f),
        (&Method::DELETE, ["2015-03-31", "functions", f, "policy", sid]) => {
            policy::remove(req, state, f, sid)
        }
        (&Method::POST, ["2017-03-31", "tags", arn]) => tags::tag(req, state, arn),
        (&Method::DELETE, ["2017-03-31", "tags", arn]) => tags::untag(req, state, arn),
        (&Method::GET, ["2017-03-31", "tags", arn]) => tags::list(state, arn),
        (&Method::PUT, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            invoke_config::put(req, state, f, false)
        }
        (&Method::POST, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            invoke_config::put(req, state, f, true)
        }
        (&Method::GET, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            invoke_config::get(req, state, f)
        }
        (&Method::DELETE, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            invoke_config::delete(req, state, f)
        }
        (&Method::GET, ["2019-09-25", "functions", f, "event-invoke-config", "list"]) => {
            invoke_config::list(req, state, f)
        }
        (&Method::POST, ["2021-10-31", "functions", f, "url"]) => urls::create(req, state, f),
        (&Method::GET, ["2021-10-31", "functions", f, "url"]) => urls::get(req, state, f),
        (&Method::PUT, ["2021-10-31", "functions", f, "url"]) => urls::update(req, state, f),
        (&Method::DELETE, ["2021-10-31", "functions", f, "url"]) => urls::delete(req, state, f),
        (&Method::GET, ["2021-10-31", "functions", f, "urls"]) => urls::list(req, state, f),
        (&Method::POST, ["2015-03-31", "event-source-mappings"]) => esm::create(req, state),
        (&Method::GET, ["2015-03-31", "event-source-mappings"]) => esm::list(req, state),
        (&Method::GET, ["2015-03-31", "event-source-mappings", id]) => esm::get(state, id),
        (&Method::PUT, ["2015-03-31", "event-source-mappings", id]) => esm::update(req, state, id),
        (&Method::DELETE, ["2015-03-31", "event-source-mappings", id]) => esm::delete(state, id),
        (&Method::GET, ["2020-06-30", "functions", f, "code-signing-config"]) => {
            get_code_signing(req, state, f)
        }
        (&Method::PUT, ["2020-06-30", "functions", f, "code-signing-config"]) => {
            put_code_signing(req, state, f)
        }
        (&Method::DELETE, ["2020-06-30", "functions", f, "code-signing-config"]) => {
            delete_code_signing(req, state, f)
        }
        (&Method::GET, ["2024-08-31", "functions", f, "recursion-config"]) => {
            recursion_config(req, state, f, false)
        }
        (&Method::PUT, ["2024-08-31", "functions", f, "recursion-config"]) => {
            recursion_config(req, state, f, true)
        }
        (&Method::GET, ["2021-07-20", "functions", f, "runtime-management-config"]) => {
            runtime_management(req, state, f, false)
        }
        (&Method::PUT, ["2021-07-20", "functions", f, "runtime-management-config"]) => {
            runtime_management(req, state, f, true)
        }
        _ => return None,
    })
}

/// The account's concurrency limit minus every function's reservation (GetAccountSettings).
pub(crate) fn unreserved_concurrency(state: &ApiState) -> Result<usize, ApiError> {
    concurrency::unreserved(state)
}

/// Refuses ARNs (full or partial) that name another region or account.
pub(crate) use crate::functions::check_home as check_owner;

/// Checks that the function exists and that its qualifier (if any) names a published
/// version or an existing alias, with AWS's not-found messages.
pub(crate) fn require(state: &ApiState, function: &FunctionRef) -> Result<(), ApiError> {
    let missing = |q: Option<&Qualifier>| {
        ApiError::not_found(format!(
            "Function not found: {}",
            state.arns.arn_as_named(&function.name, q)
        ))
    };
    match state.store.get_function(&function.name, "$LATEST") {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Err(missing(None)),
        Err(e) => return Err(e.into()),
    }
    match &function.qualifier {
        None | Some(Qualifier::Latest) => Ok(()),
        Some(q @ Qualifier::Version(n)) => {
            match state.store.get_function(&function.name, &n.to_string()) {
                Ok(_) => Ok(()),
                Err(StoreError::NotFound(_)) => Err(missing(Some(q))),
                Err(e) => Err(e.into()),
            }
        }
        Some(q @ Qualifier::Alias(a)) => {
            match state.store.get_document(kinds::ALIAS, &function.name, a)? {
                Some(_) => Ok(()),
                None => Err(missing(Some(q))),
            }
        }
    }
}

/// Now as an epoch-seconds number with millisecond precision (ESM/EventInvokeConfig `LastModified`).
pub(crate) fn epoch_now() -> f64 {
    lambent_types::time::epoch_millis(SystemTime::now()) as f64 / 1000.0
}

/// Now as AWS's ISO timestamp string.
pub(crate) fn iso_now() -> String {
    lambent_types::time::aws_timestamp(SystemTime::now())
}

/// 400 with AWS's "1 validation error detected" wording for a number out of range.
pub(crate) fn check_range(value: i64, field: &str, min: i64, max: i64) -> Result<(), ApiError> {
    if value < min {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
             Member must have value greater than or equal to {min}"
        )));
    }
    if value > max {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
             Member must have value less than or equal to {max}"
        )));
    }
    Ok(())
}

/// 400 for a value outside an enum.
pub(crate) fn check_enum(value: &str, field: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
             Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )))
    }
}

/// Cuts one page out of `items` using `Marker` (an offset this API handed out) and `MaxItems`
/// (1–`cap`, as the operation's model says); returns the page and the next marker.
pub(crate) fn paginate(
    req: &ApiRequest,
    items: Vec<Value>,
    cap: usize,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let max = match req.query("MaxItems") {
        None => cap,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) => {
                check_range(n, "maxItems", 1, cap as i64)?;
                n as usize
            }
            Err(_) => return Err(ApiError::invalid(format!("Invalid MaxItems: {raw}"))),
        },
    };
    let start = match req.query("Marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| ApiError::invalid(format!("Invalid pagination token: {raw}")))?,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
}

/// A list answer: `{key: items, NextMarker?}`.
pub(crate) fn list_reply(key: &str, items: Vec<Value>, next: Option<String>) -> ApiReply {
    let mut body = json!({ key: items });
    if let Some(marker) = next {
        body["NextMarker"] = json!(marker);
    }
    ApiReply::json(StatusCode::OK, &body)
}

/// Runs a document change whose closure may refuse with an [`ApiError`] (kept intact,
/// unlike the [`StoreError`] mapping).
pub(crate) fn modify(
    state: &ApiState,
    kind: &str,
    scope: &str,
    key: &str,
    change: &mut dyn FnMut(Option<Value>) -> Result<Option<Value>, ApiError>,
) -> Result<Option<Value>, ApiError> {
    let mut refusal: Option<ApiError> = None;
    let result = state
        .store
        .modify_document(kind, scope, key, &mut |current| {
            change(current).map_err(|e| {
                let message = e.message.clone();
                refusal = Some(e);
                StoreError::Invalid(message)
            })
        });
    match (result, refusal) {
        (Err(_), Some(refusal)) => Err(refusal),
        (result, _) => result.map_err(ApiError::from),
    }
}

/// Deletes a document that must exist; `missing` is the error when it does not.
pub(crate) fn delete_existing(
    state: &ApiState,
    kind: &str,
    scope: &str,
    key: &str,
    missing: ApiError,
) -> Result<(), ApiError> {
    modify(state, kind, scope, key, &mut |current| match current {
        Some(_) => Ok(None),
        None => Err(missing.clone()),
    })
    .map(|_| ())
}

/// The existing, unqualified function a List operation names.
pub(crate) fn listed_function(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    operation: &str,
) -> Result<FunctionRef, ApiError> {
    let function = function_ref(req, label)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid(format!(
            "{operation} takes an unqualified function name"
        )));
    }
    require(state, &function)?;
    Ok(function)
}

fn unqualified_function(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<FunctionRef, ApiError> {
    let function = function_ref(req, label)?;
    require(
        state,
        &FunctionRef {
            name: function.name.clone(),
            qualifier: None,
        },
    )?;
    Ok(function)
}

/// GetFunctionCodeSigningConfig: AWS's answer for a function without one.
fn get_code_signing(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let function = unqualified_function(req, state, label)?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "CodeSigningConfigArn": "", "FunctionName": function.name }),
    ))
}

/// PutFunctionCodeSigningConfig: refused, Lambent has no code signing.
fn put_code_signing(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    unqualified_function(req, state, label)?;
    Err(ApiError::invalid(
        "Lambent does not support code signing; functions run without a CodeSigningConfig",
    ))
}

/// Get/PutFunctionRecursionConfig: Lambent has no recursion detection, so the only setting it
/// honours is AWS's default `Terminate`; `Allow` is refused rather than silently ignored.
fn recursion_config(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    put: bool,
) -> Result<ApiReply, ApiError> {
    unqualified_function(req, state, label)?;
    if put {
        let body: Value = req.json()?;
        match body["RecursiveLoop"].as_str() {
            Some("Terminate") => {}
            Some("Allow") => {
                return Err(ApiError::invalid(
                    "Lambent has no recursive-loop detection; only RecursiveLoop=Terminate (the default) is accepted",
                ));
            }
            other => check_enum(
                other.unwrap_or(""),
                "recursiveLoop",
                &["Allow", "Terminate"],
            )?,
        }
    }
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "RecursiveLoop": "Terminate" }),
    ))
}

/// Get/PutRuntimeManagementConfig: runtimes always follow the host's interpreter, which is
/// AWS's `Auto` mode; other modes are refused.
fn runtime_management(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    put: bool,
) -> Result<ApiReply, ApiError> {
    let function = function_ref(req, label)?;
    crate::functions::resolve(state, &function)?;
    if put {
        let body: Value = req.json()?;
        let mode = body["UpdateRuntimeOn"].as_str().unwrap_or("");
        check_enum(
            mode,
            "updateRuntimeOn",
            &["Auto", "FunctionUpdate", "Manual"],
        )?;
        if mode != "Auto" {
            return Err(ApiError::invalid(
                "Lambent runs managed runtimes on the host's interpreter; only UpdateRuntimeOn=Auto is supported",
            ));
        }
    }
    let arn = state
        .arns
        .arn_as_named(&function.name, function.qualifier.as_ref());
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "UpdateRuntimeOn": "Auto", "FunctionArn": arn }),
    ))
}

/// DeleteFunctionCodeSigningConfig: nothing to delete, 204 as AWS answers for a function without one.
fn delete_code_signing(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    unqualified_function(req, state, label)?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_types::names::ArnContext;

    #[test]
    fn ranges_and_enums() {
        assert!(check_range(5, "x", 0, 10).is_ok());
        let low = check_range(-1, "x", 0, 10).unwrap_err();
        assert!(low.message.contains("greater than or equal to 0"));
        let high = check_range(11, "x", 0, 10).unwrap_err();
        assert!(high.message.contains("less than or equal to 10"));
        assert!(check_enum("NONE", "authType", &["NONE", "AWS_IAM"]).is_ok());
        assert!(check_enum("none", "authType", &["NONE", "AWS_IAM"]).is_err());
    }

    #[test]
    fn refuses_foreign_arns() {
        let arns = ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        assert!(check_owner(&arns, "f").is_ok());
        assert!(check_owner(&arns, "f:1").is_ok());
        assert!(check_owner(&arns, "arn:aws:lambda:us-east-1:000000000000:function:f").is_ok());
        assert!(check_owner(&arns, "000000000000:function:f").is_ok());
        let region =
            check_owner(&arns, "arn:aws:lambda:eu-west-1:000000000000:function:f").unwrap_err();
        assert_eq!(region.code, "ResourceNotFoundException");
        let account =
            check_owner(&arns, "arn:aws:lambda:us-east-1:123456789012:function:f").unwrap_err();
        assert_eq!(account.code, "AccessDeniedException");
        assert!(check_owner(&arns, "123456789012:function:f").is_err());
    }
}
