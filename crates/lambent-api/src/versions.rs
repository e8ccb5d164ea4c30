//! Versions and aliases: PublishVersion, ListVersionsByFunction, and the alias operations
//! (Create, Get, Update, Delete, List).

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use lambent_store::{StoreError, kinds};
use lambent_types::{FunctionRef, Qualifier};

use crate::functions::{check_home, function_ref, resolve};
use crate::shapes::function_configuration;
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Routes the version and alias operations; `None` when the request is not one of them.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    Some(match (&req.method, segments) {
        (&Method::POST, ["2015-03-31", "functions", f, "versions"]) => publish(req, state, f),
        (&Method::GET, ["2015-03-31", "functions", f, "versions"]) => list_versions(req, state, f),
        (&Method::POST, ["2015-03-31", "functions", f, "aliases"]) => create_alias(req, state, f),
        (&Method::GET, ["2015-03-31", "functions", f, "aliases"]) => list_aliases(req, state, f),
        (&Method::GET, ["2015-03-31", "functions", f, "aliases", a]) => get_alias(state, f, a),
        (&Method::PUT, ["2015-03-31", "functions", f, "aliases", a]) => {
            update_alias(req, state, f, a)
        }
        (&Method::DELETE, ["2015-03-31", "functions", f, "aliases", a]) => {
            delete_alias(state, f, a)
        }
        _ => return None,
    })
}

/// Reads `MaxItems` (1–10000, capped at `cap`) with AWS's validation message.
pub(crate) fn max_items(req: &ApiRequest, cap: usize) -> Result<usize, ApiError> {
    match req.query("MaxItems") {
        None => Ok(cap),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n @ 1..=10000) => Ok(n.min(cap)),
            _ => Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{raw}' at 'maxItems' failed to satisfy constraint: \
                 Member must have value between 1 and 10000"
            ))),
        },
    }
}

/// The function named by a label that must not carry a qualifier.
fn unqualified(req: &ApiRequest, label: &str) -> Result<FunctionRef, ApiError> {
    let function = function_ref(req, label)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid(
            "This operation does not accept a qualified function name",
        ));
    }
    Ok(function)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PublishInput {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

/// PublishVersion: POST /2015-03-31/functions/{Fn}/versions → 201.
fn publish(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let input: PublishInput = req.json()?;
    let function = unqualified(req, label)?;
    resolve(state, &function)?;
    if let Some(description) = &input.description
        && description.chars().count() > lambent_types::limits::DESCRIPTION_CHARS
    {
        return Err(ApiError::invalid(
            "1 validation error detected: Value at 'description' failed to satisfy constraint: \
             Member must have length less than or equal to 256",
        ));
    }
    let version = state.store.publish_version(
        &function.name,
        input.revision_id.as_deref(),
        input.code_sha256.as_deref(),
        input.description.as_deref(),
    )?;
    tracing::info!(function = %version.name, version = %version.version, "version published");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &function_configuration(&version, &state.arns),
    ))
}

/// ListVersionsByFunction: GET /2015-03-31/functions/{Fn}/versions.
fn list_versions(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let function = unqualified(req, label)?;
    resolve(state, &function)?;
    let page = state.store.list_versions(
        &function.name,
        req.query("Marker").filter(|m| !m.is_empty()),
        max_items(req, 50)?,
    )?;
    let versions: Vec<Value> = page
        .items
        .iter()
        .map(|c| function_configuration(c, &state.arns))
        .collect();
    let mut body = json!({ "Versions": versions });
    if let Some(marker) = page.next_marker {
        body["NextMarker"] = json!(marker);
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasInput {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingInput>,
    revision_id: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct RoutingInput {
    #[serde(default)]
    additional_version_weights: std::collections::BTreeMap<String, f64>,
}

fn validate_alias_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

/// Checks that a version an alias would use exists (`$LATEST` or a published number).
fn check_version(state: &ApiState, function: &str, version: &str) -> Result<(), ApiError> {
    let qualifier = match Qualifier::parse(version)? {
        q @ (Qualifier::Latest | Qualifier::Version(_)) => q,
        Qualifier::Alias(_) => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{version}' at 'functionVersion' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)"
            )));
        }
    };
    resolve(
        state,
        &FunctionRef {
            name: function.to_string(),
            qualifier: Some(qualifier),
        },
    )
    .map(|_| ())
}

/// Validates a routing configuration against the alias's main version.
fn check_routing(
    state: &ApiState,
    function: &str,
    main_version: &str,
    routing: &RoutingInput,
) -> Result<(), ApiError> {
    if routing.additional_version_weights.len() > 1 {
        return Err(ApiError::invalid(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (version, weight) in &routing.additional_version_weights {
        if !(0.0..=1.0).contains(weight) {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{weight}' at 'routingConfig.additionalVersionWeights' failed to \
                 satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal \
                 to 1.0, Member must have value greater than or equal to 0.0]"
            )));
        }
        if version == "$LATEST" || main_version == "$LATEST" {
            return Err(ApiError::invalid(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        if version == main_version {
            return Err(ApiError::invalid(format!(
                "Invalid function version {version}. Function version {version} is already included in routing \
                 configuration."
            )));
        }
        check_version(state, function, version)?;
    }
    Ok(())
}

fn alias_output(state: &ApiState, function: &str, doc: &Value) -> Value {
    let mut out = doc.clone();
    let name = doc["Name"].as_str().unwrap_or_default();
    out["AliasArn"] = json!(format!("{}:{name}", state.arns.function_arn(function)));
    out
}

fn alias_not_found(state: &ApiState, function: &str, alias: &str) -> StoreError {
    StoreError::NotFound(format!(
        "Alias not found: {}:{alias}",
        state.arns.function_arn(function)
    ))
}

/// CreateAlias: POST /2015-03-31/functions/{Fn}/aliases → 201.
fn create_alias(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let input: AliasInput = req.json()?;
    let function = unqualified(req, label)?;
    resolve(state, &function)?;
    let name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("Name is required"))?;
    validate_alias_name(&name)?;
    let version = input
        .function_version
        .clone()
        .ok_or_else(|| ApiError::invalid("FunctionVersion is required"))?;
    check_version(state, &function.name, &version)?;
    if let Some(routing) = &input.routing_config {
        check_routing(state, &function.name, &version, routing)?;
    }
    let mut doc = json!({
        "Name": name,
        "FunctionVersion": version,
        "Description": input.description.clone().unwrap_or_default(),
        "RevisionId": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(routing) = &input.routing_config {
        doc["RoutingConfig"] =
            json!({ "AdditionalVersionWeights": routing.additional_version_weights });
    }
    let arn = state.arns.function_arn(&function.name);
    state.store.modify_document(
        kinds::ALIAS,
        &function.name,
        &name,
        &mut |current| match current {
            Some(_) => Err(StoreError::AlreadyExists(format!(
                "Alias already exists: {arn}:{name}"
            ))),
            None => Ok(Some(doc.clone())),
        },
    )?;
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &alias_output(state, &function.name, &doc),
    ))
}

/// GetAlias: GET /2015-03-31/functions/{Fn}/aliases/{Name}.
fn get_alias(state: &ApiState, label: &str, alias: &str) -> Result<ApiReply, ApiError> {
    let function = FunctionRef::parse_unqualified(label)?;
    check_home(&state.arns, label)?;
    resolve(state, &function)?;
    let doc = state
        .store
        .get_document(kinds::ALIAS, &function.name, alias)?
        .ok_or_else(|| alias_not_found(state, &function.name, alias))?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &alias_output(state, &function.name, &doc),
    ))
}

/// UpdateAlias: PUT /2015-03-31/functions/{Fn}/aliases/{Name}.
fn update_alias(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    alias: &str,
) -> Result<ApiReply, ApiError> {
    let input: AliasInput = req.json()?;
    let function = FunctionRef::parse_unqualified(label)?;
    check_home(&state.arns, label)?;
    resolve(state, &function)?;
    if let Some(version) = &input.function_version {
        check_version(state, &function.name, version)?;
    }
    let not_found = alias_not_found(state, &function.name, alias).to_string();
    let mut checked: Result<(), ApiError> = Ok(());
    let updated =
        state
            .store
            .modify_document(kinds::ALIAS, &function.name, alias, &mut |current| {
                let mut doc = current.ok_or_else(|| StoreError::NotFound(not_found.clone()))?;
                if let Some(expected) = &input.revision_id
                    && doc["RevisionId"].as_str() != Some(expected.as_str())
                {
                    return Err(StoreError::RevisionMismatch(alias.to_string()));
                }
                if let Some(version) = &input.function_version {
                    doc["FunctionVersion"] = json!(version);
                }
                if let Some(description) = &input.description {
                    doc["Description"] = json!(description);
                }
                if let Some(routing) = &input.routing_config {
                    doc["RoutingConfig"] =
                        json!({ "AdditionalVersionWeights": routing.additional_version_weights });
                }
                let main = doc["FunctionVersion"]
                    .as_str()
                    .unwrap_or("$LATEST")
                    .to_string();
                if let Some(weights) = doc["RoutingConfig"]["AdditionalVersionWeights"].as_object()
                {
                    let routing = RoutingInput {
                        additional_version_weights: weights
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                            .collect(),
                    };
                    if let Err(e) = check_routing(state, &function.name, &main, &routing) {
                        checked = Err(e.clone());
                        return Err(StoreError::Invalid(e.message));
                    }
                }
                doc["RevisionId"] = json!(uuid::Uuid::new_v4().to_string());
                Ok(Some(doc))
            });
    checked?;
    let updated = updated?.unwrap_or_default();
    Ok(ApiReply::json(
        StatusCode::OK,
        &alias_output(state, &function.name, &updated),
    ))
}

/// DeleteAlias: DELETE /2015-03-31/functions/{Fn}/aliases/{Name} → 204.
fn delete_alias(state: &ApiState, label: &str, alias: &str) -> Result<ApiReply, ApiError> {
    let function = FunctionRef::parse_unqualified(label)?;
    check_home(&state.arns, label)?;
    resolve(state, &function)?;
    state
        .store
        .modify_document(kinds::ALIAS, &function.name, alias, &mut |_| Ok(None))?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// ListAliases: GET /2015-03-31/functions/{Fn}/aliases?FunctionVersion&Marker&MaxItems.
fn list_aliases(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let function = unqualified(req, label)?;
    resolve(state, &function)?;
    let limit = max_items(req, 50)?;
    let marker = req.query("Marker").filter(|m| !m.is_empty());
    let version = req.query("FunctionVersion");
    let mut aliases: Vec<Value> = state
        .store
        .list_documents(kinds::ALIAS, Some(&function.name))?
        .into_iter()
        .filter(|(_, key, _)| marker.is_none_or(|m| key.as_str() > m))
        .filter(|(_, _, doc)| version.is_none_or(|v| doc["FunctionVersion"].as_str() == Some(v)))
        .map(|(_, _, doc)| alias_output(state, &function.name, &doc))
        .collect();
    let next_marker = (aliases.len() > limit).then(|| {
        aliases.truncate(limit);
        aliases
            .last()
            .and_then(|a| a["Name"].as_str())
            .unwrap_or_default()
            .to_string()
    });
    let mut body = json!({ "Aliases": aliases });
    if let Some(marker) = next_marker {
        body["NextMarker"] = json!(marker);
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}
