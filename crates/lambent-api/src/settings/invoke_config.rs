//! Asynchronous invocation settings: Put/Update/Get/Delete/ListFunctionEventInvokeConfig[s].
//!
//! Stored per qualifier (`$LATEST` when none) as AWS's shape without `FunctionArn`; the
//! async invoker reads `MaximumRetryAttempts` (default 2), `MaximumEventAgeInSeconds`
//! (default 21600) and `DestinationConfig`.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use lambent_store::kinds;
use lambent_types::{FunctionRef, Qualifier};

use super::{
    check_range, delete_existing, epoch_now, list_reply, listed_function, modify, paginate, require,
};
use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InvokeConfigInput {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: Option<DestinationsInput>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DestinationsInput {
    pub on_success: Option<DestinationInput>,
    pub on_failure: Option<DestinationInput>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DestinationInput {
    pub destination: Option<String>,
}

/// Checks a destination: a Lambent function, webhook, RabbitMQ or NATS target that exists
/// (see docs/async.md for the syntax).
pub(crate) fn validate_destination(
    state: &ApiState,
    arn: &str,
    on_failure: bool,
) -> Result<(), ApiError> {
    if arn.is_empty() {
        return Ok(());
    }
    if arn.len() > 350 {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value at 'destinationConfig.{}.destination' failed to satisfy \
             constraint: Member must have length less than or equal to 350",
            if on_failure { "onFailure" } else { "onSuccess" }
        )));
    }
    state.invoker.check_destination(arn).map_err(|e| {
        ApiError::invalid(format!(
            "The provided destination config DestinationConfig(onSuccess=..., onFailure=...) is invalid: {e}"
        ))
    })
}

/// Applies (merge) or replaces settings on a stored document, validating ranges.
pub(crate) fn apply(
    current: Option<&Value>,
    input: &InvokeConfigInput,
    merge: bool,
) -> Result<Value, ApiError> {
    let mut doc = match (merge, current) {
        (true, Some(current)) => current.clone(),
        _ => json!({}),
    };
    if let Some(retries) = input.maximum_retry_attempts {
        check_range(retries, "maximumRetryAttempts", 0, 2)?;
        doc["MaximumRetryAttempts"] = json!(retries);
    }
    if let Some(age) = input.maximum_event_age_in_seconds {
        check_range(age, "maximumEventAgeInSeconds", 60, 21600)?;
        doc["MaximumEventAgeInSeconds"] = json!(age);
    }
    let mut destinations = doc
        .get("DestinationConfig")
        .cloned()
        .unwrap_or_else(|| json!({ "OnSuccess": {}, "OnFailure": {} }));
    if let Some(config) = &input.destination_config {
        for (key, given) in [
            ("OnSuccess", &config.on_success),
            ("OnFailure", &config.on_failure),
        ] {
            let destination = given.as_ref().and_then(|d| d.destination.clone());
            if given.is_some() || !merge {
                destinations[key] = match destination.filter(|d| !d.is_empty()) {
                    Some(arn) => json!({ "Destination": arn }),
                    None => json!({}),
                };
            }
        }
    }
    doc["DestinationConfig"] = destinations;
    doc["LastModified"] = json!(epoch_now());
    Ok(doc)
}

fn qualified(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<(FunctionRef, String), ApiError> {
    let function = function_ref(req, label)?;
    require(state, &function)?;
    let qualifier = function.qualifier_or_latest().to_string();
    Ok((function, qualifier))
}

fn output(state: &ApiState, function: &str, qualifier: &str, doc: &Value) -> Value {
    let mut out = doc.clone();
    out["FunctionArn"] = json!(format!("{}:{qualifier}", state.arns.function_arn(function)));
    out
}

fn not_found(state: &ApiState, function: &str, qualifier: &str) -> ApiError {
    ApiError::not_found(format!(
        "The function {}:{qualifier} doesn't have an EventInvokeConfig",
        state.arns.function_arn(function)
    ))
}

/// PutFunctionEventInvokeConfig (PUT, replaces) and UpdateFunctionEventInvokeConfig (POST,
/// merges into an existing config) on /2019-09-25/functions/{Fn}/event-invoke-config → 200.
pub(crate) fn put(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    merge: bool,
) -> Result<ApiReply, ApiError> {
    let input: InvokeConfigInput = req.json()?;
    let (function, qualifier) = qualified(req, state, label)?;
    // Checked before the store's transaction, which the check itself reads from.
    if let Some(config) = &input.destination_config {
        for (given, on_failure) in [(&config.on_success, false), (&config.on_failure, true)] {
            if let Some(arn) = given.as_ref().and_then(|d| d.destination.as_deref()) {
                validate_destination(state, arn, on_failure)?;
            }
        }
    }
    let missing = not_found(state, &function.name, &qualifier);
    let doc = modify(
        state,
        kinds::EVENT_INVOKE_CONFIG,
        &function.name,
        &qualifier,
        &mut |current| {
            if merge && current.is_none() {
                return Err(missing.clone());
            }
            apply(current.as_ref(), &input, merge).map(Some)
        },
    )?
    .unwrap_or_default();
    Ok(ApiReply::json(
        StatusCode::OK,
        &output(state, &function.name, &qualifier, &doc),
    ))
}

/// GetFunctionEventInvokeConfig → 200.
pub(crate) fn get(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let (function, qualifier) = qualified(req, state, label)?;
    let doc = state
        .store
        .get_document(kinds::EVENT_INVOKE_CONFIG, &function.name, &qualifier)?
        .ok_or_else(|| not_found(state, &function.name, &qualifier))?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &output(state, &function.name, &qualifier, &doc),
    ))
}

/// DeleteFunctionEventInvokeConfig → 204.
pub(crate) fn delete(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let (function, qualifier) = qualified(req, state, label)?;
    let missing = not_found(state, &function.name, &qualifier);
    delete_existing(
        state,
        kinds::EVENT_INVOKE_CONFIG,
        &function.name,
        &qualifier,
        missing,
    )?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// ListFunctionEventInvokeConfigs: GET …/event-invoke-config/list → 200.
pub(crate) fn list(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let function = listed_function(req, state, label, "ListFunctionEventInvokeConfigs")?;
    let mut items: Vec<(String, Value)> = state
        .store
        .list_documents(kinds::EVENT_INVOKE_CONFIG, Some(&function.name))?
        .into_iter()
        .map(|(_, key, doc)| (key, doc))
        .collect();
    // $LATEST first, then versions by number, then aliases.
    items.sort_by_key(|(key, _)| match Qualifier::parse(key) {
        Ok(Qualifier::Latest) => (0, 0, String::new()),
        Ok(Qualifier::Version(n)) => (1, n, String::new()),
        _ => (2, 0, key.clone()),
    });
    let items = items
        .into_iter()
        .map(|(key, doc)| output(state, &function.name, &key, &doc))
        .collect();
    let (page, next) = paginate(req, items, 50)?;
    Ok(list_reply("FunctionEventInvokeConfigs", page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(retries: Option<i64>, age: Option<i64>) -> InvokeConfigInput {
        InvokeConfigInput {
            maximum_retry_attempts: retries,
            maximum_event_age_in_seconds: age,
            destination_config: None,
        }
    }

    #[test]
    fn ranges() {
        assert!(apply(None, &input(Some(0), Some(60)), false).is_ok());
        assert!(apply(None, &input(Some(2), Some(21600)), false).is_ok());
        assert!(apply(None, &input(Some(3), None), false).is_err());
        assert!(apply(None, &input(Some(-1), None), false).is_err());
        assert!(apply(None, &input(None, Some(59)), false).is_err());
        assert!(apply(None, &input(None, Some(21601)), false).is_err());
    }

    #[test]
    fn put_replaces_update_merges() {
        let mut first = input(Some(1), Some(120));
        first.destination_config = Some(DestinationsInput {
            on_success: None,
            on_failure: Some(DestinationInput {
                destination: Some("arn:aws:sqs:us-east-1:000000000000:dlq".into()),
            }),
        });
        let doc = apply(None, &first, false).unwrap();
        assert_eq!(
            doc["DestinationConfig"]["OnFailure"]["Destination"],
            "arn:aws:sqs:us-east-1:000000000000:dlq"
        );
        assert!(doc["LastModified"].is_f64());
        let merged = apply(Some(&doc), &input(Some(0), None), true).unwrap();
        assert_eq!(merged["MaximumRetryAttempts"], 0);
        assert_eq!(merged["MaximumEventAgeInSeconds"], 120);
        assert_eq!(
            merged["DestinationConfig"]["OnFailure"]["Destination"],
            "arn:aws:sqs:us-east-1:000000000000:dlq"
        );
        let replaced = apply(Some(&doc), &input(Some(0), None), false).unwrap();
        assert!(replaced.get("MaximumEventAgeInSeconds").is_none());
        assert_eq!(
            replaced["DestinationConfig"],
            json!({"OnSuccess": {}, "OnFailure": {}})
        );
    }
}
