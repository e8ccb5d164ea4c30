//! Function URL configs: Create/Get/Update/Delete/ListFunctionUrlConfig[s].
//!
//! Stored per alias (`""` when unqualified) as AWS's shape plus `UrlId`, the 32-character
//! host label the URL gateway routes on.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use lambent_store::kinds;
use lambent_types::names::ArnContext;
use lambent_types::{FunctionRef, Qualifier};

use super::{
    check_enum, check_range, delete_existing, iso_now, list_reply, listed_function, modify,
    paginate, require,
};
use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Port the URL gateway listens on by default (`lambent serve --http-listen`).
pub const URL_PORT: u16 = 9080;

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UrlInput {
    pub auth_type: Option<String>,
    pub cors: Option<Value>,
    pub invoke_mode: Option<String>,
}

/// The stable 32-character lowercase id of a function's (or alias's) URL.
pub(crate) fn url_id(arns: &ArnContext, function: &str, qualifier: &str) -> String {
    let digest = Sha256::digest(format!(
        "{}:{}:{function}:{qualifier}",
        arns.account_id, arns.region
    ));
    hex::encode(digest)[..32].to_string()
}

/// The URL clients call, on the gateway's port.
pub(crate) fn function_url(arns: &ArnContext, id: &str, port: u16) -> String {
    format!("http://{id}.lambda-url.{}.localhost:{port}/", arns.region)
}

fn list_of_strings(
    cors: &Value,
    key: &str,
    max_items: usize,
    max_len: usize,
) -> Result<(), ApiError> {
    let Some(value) = cors.get(key).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let field = format!("cors.{}{}", key[..1].to_ascii_lowercase(), &key[1..]);
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::bad_content(format!("{key} must be a list of strings")))?;
    if items.len() > max_items {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: Member must have length \
             less than or equal to {max_items}"
        )));
    }
    for item in items {
        let s = item
            .as_str()
            .ok_or_else(|| ApiError::bad_content(format!("{key} must be a list of strings")))?;
        if s.is_empty() || s.len() > max_len {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{s}' at '{field}' failed to satisfy constraint: Member must have \
                 length less than or equal to {max_len} and at least 1"
            )));
        }
    }
    Ok(())
}

/// Validates a `Cors` object against the model's limits.
pub(crate) fn validate_cors(cors: &Value) -> Result<(), ApiError> {
    if cors.is_null() {
        return Ok(());
    }
    let object = cors
        .as_object()
        .ok_or_else(|| ApiError::bad_content("Cors must be an object"))?;
    for key in object.keys() {
        if ![
            "AllowCredentials",
            "AllowHeaders",
            "AllowMethods",
            "AllowOrigins",
            "ExposeHeaders",
            "MaxAge",
        ]
        .contains(&key.as_str())
        {
            return Err(ApiError::bad_content(format!("Unknown Cors member {key}")));
        }
    }
    if let Some(v) = cors.get("AllowCredentials").filter(|v| !v.is_null())
        && !v.is_boolean()
    {
        return Err(ApiError::bad_content("AllowCredentials must be a boolean"));
    }
    list_of_strings(cors, "AllowHeaders", 100, 1024)?;
    list_of_strings(cors, "AllowMethods", 6, 6)?;
    list_of_strings(cors, "AllowOrigins", 100, 253)?;
    list_of_strings(cors, "ExposeHeaders", 100, 1024)?;
    if let Some(methods) = cors.get("AllowMethods").and_then(Value::as_array) {
        for method in methods.iter().filter_map(Value::as_str) {
            let ok = method == "*" || method.bytes().all(|b| b.is_ascii_uppercase());
            if !ok {
                return Err(ApiError::invalid(format!(
                    "1 validation error detected: Value '{method}' at 'cors.allowMethods' failed to satisfy constraint: \
                     Member must satisfy regular expression pattern: .*"
                )));
            }
        }
    }
    if let Some(age) = cors.get("MaxAge").filter(|v| !v.is_null()) {
        let age = age
            .as_i64()
            .ok_or_else(|| ApiError::bad_content("MaxAge must be an integer"))?;
        check_range(age, "cors.maxAge", 0, 86400)?;
    }
    Ok(())
}

fn validate_input(input: &UrlInput, require_auth: bool) -> Result<(), ApiError> {
    match &input.auth_type {
        Some(auth) => check_enum(auth, "authType", &["NONE", "AWS_IAM"])?,
        None if require_auth => {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'authType' failed to satisfy constraint: Member must not be null",
            ));
        }
        None => {}
    }
    if let Some(mode) = &input.invoke_mode {
        check_enum(mode, "invokeMode", &["BUFFERED", "RESPONSE_STREAM"])?;
    }
    if let Some(cors) = &input.cors {
        validate_cors(cors)?;
    }
    Ok(())
}

/// The function and the stored key: the alias, or `""` (none or `$LATEST`).
fn url_target(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<(FunctionRef, String), ApiError> {
    let function = function_ref(req, label)?;
    let key = match &function.qualifier {
        None | Some(Qualifier::Latest) => String::new(),
        Some(Qualifier::Alias(a)) => a.clone(),
        Some(Qualifier::Version(n)) => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{n}' at 'qualifier' failed to satisfy constraint: Member must \
                 satisfy regular expression pattern: ((?!^[0-9]+$)([a-zA-Z0-9-_]+))"
            )));
        }
    };
    require(state, &function)?;
    Ok((function, key))
}

fn function_arn(state: &ApiState, function: &str, key: &str) -> String {
    if key.is_empty() {
        state.arns.function_arn(function)
    } else {
        state
            .arns
            .arn_as_named(function, Some(&Qualifier::Alias(key.to_string())))
    }
}

/// The stored config as AWS returns it; the URL is the gateway's current address.
fn output(state: &ApiState, doc: &Value, with_last_modified: bool) -> Value {
    let mut out = doc.clone();
    if let Some(object) = out.as_object_mut() {
        if let Some(id) = object.remove("UrlId").as_ref().and_then(Value::as_str) {
            object.insert(
                "FunctionUrl".into(),
                json!(function_url(&state.arns, id, state.url_port)),
            );
        }
        if !with_last_modified {
            object.remove("LastModifiedTime");
        }
    }
    out
}

fn not_found(state: &ApiState, function: &str, key: &str) -> ApiError {
    ApiError::not_found(format!(
        "The resource you requested does not exist. (no function URL config for {})",
        function_arn(state, function, key)
    ))
}

/// CreateFunctionUrlConfig: POST /2021-10-31/functions/{Fn}/url?Qualifier → 201.
pub(crate) fn create(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: UrlInput = req.json()?;
    validate_input(&input, true)?;
    let (function, key) = url_target(req, state, label)?;
    let arn = function_arn(state, &function.name, &key);
    let id = url_id(&state.arns, &function.name, &key);
    let now = iso_now();
    let mut doc = json!({
        "FunctionUrl": function_url(&state.arns, &id, state.url_port),
        "FunctionArn": arn,
        "AuthType": input.auth_type,
        "CreationTime": now,
        "LastModifiedTime": now,
        "InvokeMode": input.invoke_mode.clone().unwrap_or_else(|| "BUFFERED".into()),
        "UrlId": id,
    });
    if let Some(cors) = input.cors.as_ref().filter(|c| !c.is_null()) {
        doc["Cors"] = cors.clone();
    }
    modify(
        state,
        kinds::URL_CONFIG,
        &function.name,
        &key,
        &mut |current| match current {
            Some(_) => Err(ApiError::conflict(format!(
                "Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig exists for this Lambda function"
            ))),
            None => Ok(Some(doc.clone())),
        },
    )?;
    crate::urls_gateway::remember_url(&id, &function.name, &key);
    tracing::info!(function = %function.name, url = %doc["FunctionUrl"], "function URL created");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &output(state, &doc, false),
    ))
}

/// GetFunctionUrlConfig → 200.
pub(crate) fn get(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let (function, key) = url_target(req, state, label)?;
    let doc = state
        .store
        .get_document(kinds::URL_CONFIG, &function.name, &key)?
        .ok_or_else(|| not_found(state, &function.name, &key))?;
    Ok(ApiReply::json(StatusCode::OK, &output(state, &doc, true)))
}

/// UpdateFunctionUrlConfig: PUT → 200 (given members replace the stored ones).
pub(crate) fn update(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: UrlInput = req.json()?;
    validate_input(&input, false)?;
    let (function, key) = url_target(req, state, label)?;
    let missing = not_found(state, &function.name, &key);
    let doc = modify(
        state,
        kinds::URL_CONFIG,
        &function.name,
        &key,
        &mut |current| {
            let mut doc = current.ok_or_else(|| missing.clone())?;
            if let Some(auth) = &input.auth_type {
                doc["AuthType"] = json!(auth);
            }
            if let Some(mode) = &input.invoke_mode {
                doc["InvokeMode"] = json!(mode);
            }
            if let Some(cors) = &input.cors {
                doc["Cors"] = cors.clone();
            }
            doc["LastModifiedTime"] = json!(iso_now());
            Ok(Some(doc))
        },
    )?
    .unwrap_or_default();
    Ok(ApiReply::json(StatusCode::OK, &output(state, &doc, true)))
}

/// DeleteFunctionUrlConfig → 204.
pub(crate) fn delete(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let (function, key) = url_target(req, state, label)?;
    let missing = not_found(state, &function.name, &key);
    delete_existing(state, kinds::URL_CONFIG, &function.name, &key, missing)?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// ListFunctionUrlConfigs: GET /2021-10-31/functions/{Fn}/urls → 200.
pub(crate) fn list(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let function = listed_function(req, state, label, "ListFunctionUrlConfigs")?;
    let items = state
        .store
        .list_documents(kinds::URL_CONFIG, Some(&function.name))?
        .iter()
        .map(|(_, _, doc)| output(state, doc, true))
        .collect();
    let (page, next) = paginate(req, items, 50)?;
    Ok(list_reply("FunctionUrlConfigs", page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_are_stable_and_distinct() {
        let arns = ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        let a = url_id(&arns, "f", "");
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(a, url_id(&arns, "f", ""));
        assert_ne!(a, url_id(&arns, "f", "live"));
        assert_eq!(
            function_url(&arns, &a, URL_PORT),
            format!("http://{a}.lambda-url.us-east-1.localhost:9080/")
        );
    }

    #[test]
    fn cors_limits() {
        assert!(
            validate_cors(
                &json!({"AllowOrigins": ["*"], "AllowMethods": ["GET", "*"], "MaxAge": 86400})
            )
            .is_ok()
        );
        assert!(validate_cors(&json!({"MaxAge": 86401})).is_err());
        assert!(validate_cors(&json!({"MaxAge": -1})).is_err());
        assert!(validate_cors(&json!({"AllowMethods": ["TOOLONGX"]})).is_err());
        assert!(validate_cors(&json!({"AllowOrigins": [""]})).is_err());
        assert!(validate_cors(&json!({"Bogus": 1})).is_err());
    }

    #[test]
    fn auth_type_required_on_create() {
        assert!(validate_input(&UrlInput::default(), true).is_err());
        assert!(validate_input(&UrlInput::default(), false).is_ok());
        let bad = UrlInput {
            auth_type: Some("OPEN".into()),
            ..Default::default()
        };
        assert!(validate_input(&bad, true).is_err());
        let stream = UrlInput {
            auth_type: Some("NONE".into()),
            invoke_mode: Some("STREAM".into()),
            cors: None,
        };
        assert!(validate_input(&stream, true).is_err());
    }
}
