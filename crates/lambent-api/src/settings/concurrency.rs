//! Reserved concurrency (Put/Get/DeleteFunctionConcurrency) and provisioned concurrency
//! (Put/Get/Delete/ListProvisionedConcurrencyConfig[s]).

use std::sync::Mutex;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use lambent_store::kinds;
use lambent_types::{FunctionRef, Qualifier};

use super::{
    check_range, delete_existing, iso_now, list_reply, listed_function, paginate, require,
};
use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Unreserved concurrency AWS keeps for functions without a reservation.
pub(crate) const UNRESERVED_MINIMUM: usize = 100;

/// Serializes changes that check account-wide sums (reservations of every function), which one
/// document transaction cannot see.
static ACCOUNT_LOCK: Mutex<()> = Mutex::new(());

/// Sum of every function's reserved concurrency, skipping `except`.
pub(crate) fn reserved_total(state: &ApiState, except: Option<&str>) -> Result<usize, ApiError> {
    Ok(state
        .store
        .list_documents(kinds::CONCURRENCY, None)?
        .iter()
        .filter(|(scope, _, _)| Some(scope.as_str()) != except)
        .filter_map(|(_, _, doc)| doc["ReservedConcurrentExecutions"].as_u64())
        .sum::<u64>() as usize)
}

/// The account's unreserved concurrency (GetAccountSettings).
pub(crate) fn unreserved(state: &ApiState) -> Result<usize, ApiError> {
    Ok(state
        .concurrency_limit
        .saturating_sub(reserved_total(state, None)?))
}

/// Whether reserving `requested` for one function, with `others` reserved elsewhere, keeps
/// the account's unreserved pool at its minimum (100, or the whole limit when it is smaller).
pub(crate) fn reservation_fits(limit: usize, others: usize, requested: usize) -> bool {
    let floor = UNRESERVED_MINIMUM.min(limit);
    limit
        .checked_sub(others + requested)
        .is_some_and(|left| left >= floor)
        || requested == 0
}

fn unqualified(req: &ApiRequest, state: &ApiState, label: &str) -> Result<FunctionRef, ApiError> {
    let function = function_ref(req, label)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid(
            "Reserved concurrency applies to a function, not to one of its versions or aliases: remove the qualifier",
        ));
    }
    require(state, &function)?;
    Ok(function)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReservedInput {
    reserved_concurrent_executions: Option<i64>,
}

/// PutFunctionConcurrency: PUT /2017-10-31/functions/{Fn}/concurrency → 200.
pub(crate) fn put_reserved(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: ReservedInput = req.json()?;
    let function = unqualified(req, state, label)?;
    let requested = input
        .reserved_concurrent_executions
        .ok_or_else(|| ApiError::invalid("ReservedConcurrentExecutions is required"))?;
    check_range(
        requested,
        "reservedConcurrentExecutions",
        0,
        i64::from(i32::MAX),
    )?;
    let requested = requested as usize;
    let _guard = ACCOUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let others = reserved_total(state, Some(&function.name))?;
    if !reservation_fits(state.concurrency_limit, others, requested) {
        return Err(ApiError::invalid(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution \
             below its minimum value of [{}].",
            UNRESERVED_MINIMUM.min(state.concurrency_limit)
        )));
    }
    let provisioned = provisioned_total(state, &function.name)?;
    if requested < provisioned {
        return Err(ApiError::invalid(format!(
            "ReservedConcurrentExecutions ({requested}) must not be less than the function's provisioned concurrency \
             ({provisioned})"
        )));
    }
    let doc = json!({ "ReservedConcurrentExecutions": requested });
    state
        .store
        .modify_document(kinds::CONCURRENCY, &function.name, "", &mut |_| {
            Ok(Some(doc.clone()))
        })?;
    tracing::info!(function = %function.name, reserved = requested, "reserved concurrency set");
    Ok(ApiReply::json(StatusCode::OK, &doc))
}

/// GetFunctionConcurrency: GET /2019-09-30/functions/{Fn}/concurrency → 200 (`{}` when unset).
pub(crate) fn get_reserved(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let function = unqualified(req, state, label)?;
    let doc = state
        .store
        .get_document(kinds::CONCURRENCY, &function.name, "")?
        .unwrap_or_else(|| json!({}));
    Ok(ApiReply::json(StatusCode::OK, &doc))
}

/// DeleteFunctionConcurrency: DELETE /2017-10-31/functions/{Fn}/concurrency → 204.
pub(crate) fn delete_reserved(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let function = unqualified(req, state, label)?;
    let _guard = ACCOUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    state
        .store
        .modify_document(kinds::CONCURRENCY, &function.name, "", &mut |_| Ok(None))?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

fn provisioned_total(state: &ApiState, function: &str) -> Result<usize, ApiError> {
    Ok(state
        .store
        .list_documents(kinds::PROVISIONED_CONCURRENCY, Some(function))?
        .iter()
        .filter_map(|(_, _, doc)| doc["RequestedProvisionedConcurrentExecutions"].as_u64())
        .sum::<u64>() as usize)
}

fn pc_not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionedConcurrencyConfigNotFoundException",
        message,
    )
}

/// The version or alias a provisioned-concurrency request names (required; not `$LATEST`).
fn qualified(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<(FunctionRef, String), ApiError> {
    let function = function_ref(req, label)?;
    let qualifier = match &function.qualifier {
        None => {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null",
            ));
        }
        Some(Qualifier::Latest) => {
            return Err(ApiError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            ));
        }
        Some(q) => q.to_string(),
    };
    require(state, &function)?;
    Ok((function, qualifier))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProvisionedInput {
    provisioned_concurrent_executions: Option<i64>,
}

/// PutProvisionedConcurrencyConfig: PUT /2019-09-30/functions/{Fn}/provisioned-concurrency?Qualifier → 202.
pub(crate) fn put_provisioned(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: ProvisionedInput = req.json()?;
    let (function, qualifier) = qualified(req, state, label)?;
    let requested = input
        .provisioned_concurrent_executions
        .ok_or_else(|| ApiError::invalid("ProvisionedConcurrentExecutions is required"))?;
    check_range(
        requested,
        "provisionedConcurrentExecutions",
        1,
        i64::from(i32::MAX),
    )?;
    let requested = requested as usize;
    let _guard = ACCOUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let others: usize = state
        .store
        .list_documents(kinds::PROVISIONED_CONCURRENCY, Some(&function.name))?
        .iter()
        .filter(|(_, key, _)| *key != qualifier)
        .filter_map(|(_, _, doc)| doc["RequestedProvisionedConcurrentExecutions"].as_u64())
        .sum::<u64>() as usize;
    let reserved = state
        .store
        .get_document(kinds::CONCURRENCY, &function.name, "")?
        .and_then(|d| d["ReservedConcurrentExecutions"].as_u64());
    match reserved {
        Some(reserved) if others + requested > reserved as usize => {
            return Err(ApiError::invalid(format!(
                "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for \
                 function ({reserved})"
            )));
        }
        None if !reservation_fits(
            state.concurrency_limit,
            reserved_total(state, None)?,
            others + requested,
        ) =>
        {
            return Err(ApiError::invalid(format!(
                "Specified ConcurrentExecutions for function is greater than account's unreserved concurrency \
                 [{}].",
                unreserved(state)?
            )));
        }
        _ => {}
    }
    let doc = json!({
        "RequestedProvisionedConcurrentExecutions": requested,
        "AllocatedProvisionedConcurrentExecutions": 0,
        "AvailableProvisionedConcurrentExecutions": 0,
        "Status": "IN_PROGRESS",
        "LastModified": iso_now(),
    });
    state.store.modify_document(
        kinds::PROVISIONED_CONCURRENCY,
        &function.name,
        &qualifier,
        &mut |_| Ok(Some(doc.clone())),
    )?;
    tracing::info!(function = %function.name, %qualifier, requested, "provisioned concurrency configured");
    start_provisioning(state, function, qualifier, requested);
    Ok(ApiReply::json(StatusCode::ACCEPTED, &doc))
}

/// Initializes the environments in the background; a shortfall marks the config FAILED.
fn start_provisioning(
    state: &ApiState,
    function: FunctionRef,
    qualifier: String,
    requested: usize,
) {
    let invoker = state.invoker.clone();
    let store = state.store.clone();
    tokio::spawn(async move {
        let ready = match invoker.provision(&function, requested).await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!(function = %function.name, "provisioning failed: {e}");
                0
            }
        };
        if ready >= requested {
            tracing::info!(function = %function.name, %qualifier, ready, "provisioned concurrency ready");
            return;
        }
        let reason = format!(
            "Only {ready} of {requested} environments initialized; see the server log for the function's init errors"
        );
        let marked = store.modify_document(
            kinds::PROVISIONED_CONCURRENCY,
            &function.name,
            &qualifier,
            &mut |current| {
                Ok(current.map(|mut doc| {
                    if doc["RequestedProvisionedConcurrentExecutions"].as_u64()
                        == Some(requested as u64)
                    {
                        doc["Status"] = json!("FAILED");
                        doc["StatusReason"] = json!(reason);
                    }
                    doc
                }))
            },
        );
        if let Err(e) = marked {
            tracing::warn!(function = %function.name, "could not record the provisioning failure: {e}");
        }
    });
}

/// The stored config with the live count of initialized environments: READY only when that
/// many are actually up.
fn with_live_status(state: &ApiState, function: &FunctionRef, mut doc: Value) -> Value {
    let requested = doc["RequestedProvisionedConcurrentExecutions"]
        .as_u64()
        .unwrap_or(0) as usize;
    let ready = state
        .invoker
        .provisioned_ready(function)
        .unwrap_or(0)
        .min(requested);
    doc["AllocatedProvisionedConcurrentExecutions"] = json!(ready);
    doc["AvailableProvisionedConcurrentExecutions"] = json!(ready);
    if ready >= requested {
        doc["Status"] = json!("READY");
        if let Some(map) = doc.as_object_mut() {
            map.remove("StatusReason");
        }
    } else if doc["Status"] != "FAILED" {
        doc["Status"] = json!("IN_PROGRESS");
    }
    doc
}

fn not_configured(state: &ApiState, function: &FunctionRef) -> ApiError {
    pc_not_found(format!(
        "No Provisioned Concurrency Config found for this function: {}",
        state
            .arns
            .arn_as_named(&function.name, function.qualifier.as_ref())
    ))
}

/// GetProvisionedConcurrencyConfig: GET …/provisioned-concurrency?Qualifier → 200.
pub(crate) fn get_provisioned(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let (function, qualifier) = qualified(req, state, label)?;
    let doc = state
        .store
        .get_document(kinds::PROVISIONED_CONCURRENCY, &function.name, &qualifier)?
        .ok_or_else(|| not_configured(state, &function))?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &with_live_status(state, &function, doc),
    ))
}

/// DeleteProvisionedConcurrencyConfig: DELETE …/provisioned-concurrency?Qualifier → 204.
pub(crate) fn delete_provisioned(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let (function, qualifier) = qualified(req, state, label)?;
    let missing = not_configured(state, &function);
    delete_existing(
        state,
        kinds::PROVISIONED_CONCURRENCY,
        &function.name,
        &qualifier,
        missing,
    )?;
    if let Err(e) = state.invoker.unprovision(&function) {
        tracing::debug!(function = %function.name, "nothing to unprovision: {e}");
    }
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// ListProvisionedConcurrencyConfigs: GET …/provisioned-concurrency?List=ALL → 200.
pub(crate) fn list_provisioned(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    if req.query("List") != Some("ALL") {
        return Err(ApiError::invalid("List must be ALL"));
    }
    let function = listed_function(req, state, label, "ListProvisionedConcurrencyConfigs")?;
    let items: Vec<Value> = state
        .store
        .list_documents(kinds::PROVISIONED_CONCURRENCY, Some(&function.name))?
        .into_iter()
        .map(|(_, key, doc)| {
            let target = FunctionRef {
                name: function.name.clone(),
                qualifier: Qualifier::parse(&key).ok(),
            };
            let mut doc = with_live_status(state, &target, doc);
            let arn = format!("{}:{key}", state.arns.function_arn(&function.name));
            doc["FunctionArn"] = json!(arn);
            doc
        })
        .collect();
    let (page, next) = paginate(req, items, 50)?;
    Ok(list_reply("ProvisionedConcurrencyConfigs", page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_keep_the_unreserved_floor() {
        assert!(reservation_fits(1000, 0, 900));
        assert!(!reservation_fits(1000, 0, 901));
        assert!(reservation_fits(1000, 400, 500));
        assert!(!reservation_fits(1000, 400, 501));
        assert!(reservation_fits(1000, 1000, 0));
        assert!(reservation_fits(50, 0, 0));
        assert!(!reservation_fits(50, 0, 1));
    }
}
