//! TagResource, UntagResource, ListTags on function and event-source-mapping ARNs.
//!
//! Function tags live in `$LATEST`'s `FunctionConfig.tags` (tagging changes neither
//! `RevisionId` nor `LastModified`); mapping tags in the mapping's document (`Tags`).

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use lambent_store::{StoreError, kinds};

use super::{check_owner, modify};
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Most tags one resource may carry.
pub(crate) const MAX_TAGS: usize = 50;

/// What a tagging ARN names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tagged {
    /// A function (bare name).
    Function(String),
    /// An event-source mapping (UUID).
    Mapping(String),
}

/// Parses a resource ARN for the tagging operations.
pub(crate) fn parse_resource(
    arns: &lambent_types::names::ArnContext,
    arn: &str,
) -> Result<Tagged, ApiError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let invalid = || {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{arn}' at 'resource' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{{2}}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{{1}}:\\d{{12}}:(function:[a-zA-Z0-9-_]+|event-source-mapping:[0-9a-f-]{{36}})"
        ))
    };
    match parts.as_slice() {
        ["arn", partition, "lambda", _, _, "function", name] if partition.starts_with("aws") => {
            check_owner(arns, arn)?;
            lambent_types::names::validate_function_name(name)?;
            Ok(Tagged::Function((*name).to_string()))
        }
        ["arn", partition, "lambda", _, _, "function", _, _] if partition.starts_with("aws") => {
            Err(ApiError::invalid(
                "Tags are supported on functions only, not on versions or aliases: use the unqualified function ARN",
            ))
        }
        ["arn", partition, "lambda", _, _, "event-source-mapping", id]
            if partition.starts_with("aws") =>
        {
            check_owner(arns, arn)?;
            Ok(Tagged::Mapping((*id).to_string()))
        }
        _ => Err(invalid()),
    }
}

/// Checks tags to add against AWS's rules.
pub(crate) fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(ApiError::invalid(format!(
                "Tag key '{key}' must be 1 to 128 characters long"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "Tag key '{key}' uses the reserved prefix aws:"
            )));
        }
        if value.chars().count() > 256 {
            return Err(ApiError::invalid(format!(
                "The value of tag '{key}' must be at most 256 characters long"
            )));
        }
    }
    Ok(())
}

/// Refuses a `lambent:network` tag this server does not allow (an unknown mode, `host`
/// without `--allow-host-network`, `bridge` where the host cannot bridge).
pub(crate) fn check_network_tag(
    state: &ApiState,
    tags: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    match tags.get(lambent_worker::NETWORK_TAG) {
        Some(value) => state
            .invoker
            .check_network_setting(Some(value))
            .map_err(|e| ApiError::invalid(format!("Tag {}: {e}", lambent_worker::NETWORK_TAG))),
        None => Ok(()),
    }
}

fn too_many() -> ApiError {
    ApiError::invalid(format!("A resource can have at most {MAX_TAGS} tags"))
}

fn function_not_found(state: &ApiState, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Function not found: {}",
        state.arns.function_arn(name)
    ))
}

fn mapping_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "The resource you requested does not exist. (Service: Lambda, mapping {id})"
    ))
}

/// A change to a resource's tags.
type TagChange<'a> = &'a dyn Fn(&mut BTreeMap<String, String>) -> Result<(), ApiError>;

/// Applies `change` to the resource's tags, atomically.
fn change_tags(state: &ApiState, resource: &Tagged, change: TagChange<'_>) -> Result<(), ApiError> {
    match resource {
        Tagged::Function(name) => {
            let mut refusal = None;
            let result = state.store.update_function(name, None, &mut |config| {
                change(&mut config.tags).map_err(|e| {
                    let message = e.message.clone();
                    refusal = Some(e);
                    StoreError::Invalid(message)
                })
            });
            match (result, refusal) {
                (Ok(_), _) => Ok(()),
                (Err(_), Some(e)) => Err(e),
                (Err(StoreError::NotFound(_)), None) => Err(function_not_found(state, name)),
                (Err(e), None) => Err(e.into()),
            }
        }
        Tagged::Mapping(id) => {
            modify(state, kinds::EVENT_SOURCE_MAPPING, "", id, &mut |current| {
                let mut doc = current.ok_or_else(|| mapping_not_found(id))?;
                let mut tags: BTreeMap<String, String> =
                    serde_json::from_value(doc["Tags"].clone()).unwrap_or_default();
                change(&mut tags)?;
                doc["Tags"] = json!(tags);
                Ok(Some(doc))
            })?;
            Ok(())
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInput {
    tags: Option<BTreeMap<String, String>>,
}

/// TagResource: POST /2017-03-31/tags/{ARN} → 204.
pub(crate) fn tag(req: &ApiRequest, state: &ApiState, arn: &str) -> Result<ApiReply, ApiError> {
    let input: TagInput = req.json()?;
    let resource = parse_resource(&state.arns, arn)?;
    let new = input.tags.ok_or_else(|| {
        ApiError::invalid("1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
    })?;
    validate_tags(&new)?;
    if matches!(resource, Tagged::Function(_)) {
        check_network_tag(state, &new)?;
    }
    change_tags(state, &resource, &|tags| {
        tags.extend(new.clone());
        if tags.len() > MAX_TAGS {
            Err(too_many())
        } else {
            Ok(())
        }
    })?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// UntagResource: DELETE /2017-03-31/tags/{ARN}?tagKeys=a&tagKeys=b → 204.
pub(crate) fn untag(req: &ApiRequest, state: &ApiState, arn: &str) -> Result<ApiReply, ApiError> {
    let resource = parse_resource(&state.arns, arn)?;
    let keys: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "tagKeys")
        .map(|(_, v)| v.clone())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::invalid(
            "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
        ));
    }
    change_tags(state, &resource, &|tags| {
        for key in &keys {
            tags.remove(key);
        }
        Ok(())
    })?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// ListTags: GET /2017-03-31/tags/{ARN} → 200 `{Tags}`.
pub(crate) fn list(state: &ApiState, arn: &str) -> Result<ApiReply, ApiError> {
    let tags = match parse_resource(&state.arns, arn)? {
        Tagged::Function(name) => match state.store.get_function(&name, "$LATEST") {
            Ok(config) => json!(config.tags),
            Err(StoreError::NotFound(_)) => return Err(function_not_found(state, &name)),
            Err(e) => return Err(e.into()),
        },
        Tagged::Mapping(id) => {
            let doc = state
                .store
                .get_document(kinds::EVENT_SOURCE_MAPPING, "", &id)?
                .ok_or_else(|| mapping_not_found(&id))?;
            if doc["Tags"].is_object() {
                doc["Tags"].clone()
            } else {
                json!({})
            }
        }
    };
    Ok(ApiReply::json(StatusCode::OK, &json!({ "Tags": tags })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_types::names::ArnContext;

    #[test]
    fn parses_tagging_arns() {
        let arns = ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        assert_eq!(
            parse_resource(&arns, "arn:aws:lambda:us-east-1:000000000000:function:f").unwrap(),
            Tagged::Function("f".into())
        );
        assert_eq!(
            parse_resource(
                &arns,
                "arn:aws:lambda:us-east-1:000000000000:event-source-mapping:abc"
            )
            .unwrap(),
            Tagged::Mapping("abc".into())
        );
        assert!(
            parse_resource(&arns, "arn:aws:lambda:us-east-1:000000000000:function:f:1").is_err()
        );
        assert!(parse_resource(&arns, "arn:aws:lambda:eu-west-1:000000000000:function:f").is_err());
        assert!(parse_resource(&arns, "arn:aws:lambda:us-east-1:111111111111:function:f").is_err());
        assert!(parse_resource(&arns, "f").is_err());
    }

    #[test]
    fn validates_tags() {
        let ok: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        assert!(validate_tags(&ok).is_ok());
        let reserved: BTreeMap<String, String> = [("aws:x".to_string(), "a".to_string())].into();
        assert!(validate_tags(&reserved).is_err());
        let long: BTreeMap<String, String> = [("k".to_string(), "v".repeat(257))].into();
        assert!(validate_tags(&long).is_err());
    }
}
