//! Layer operations (2018-10-31): publish, get, list, delete layer versions and their permissions.
//!
//! All versions of one layer live in ONE store document (kind `layer`, scope `""`, key = layer
//! name), so publishing is one transaction and version numbers are never reused:
//! `{"LayerName", "LastVersion": N, "Versions": {"1": {…}, …}}`. A version's entry keeps the
//! fields of Lambda's LayerVersion plus `CodeSha256Hex` (the code store key), `UnzippedSize`
//! and an optional `Policy` (`{"RevisionId", "Statements": [...]}`).

use std::time::SystemTime;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use lambent_store::{StoreError, kinds};
use lambent_types::names::ArnContext;
use lambent_types::{LayerRef, limits};

use crate::shapes::CodeInput;
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// Lambda's pattern for a layer name (or unversioned layer ARN).
const LAYER_NAME_PATTERN: &str =
    "(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+";
/// Lambda's pattern for a layer version ARN.
const LAYER_VERSION_ARN_PATTERN: &str = "(arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)";
/// Longest layer name or layer ARN.
const LAYER_NAME_MAX: usize = 140;
/// Largest MaxItems of the layer listings.
const MAX_ITEMS: usize = 50;

/// Routes the layer operations; `None` when the request is not one of them.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    Some(match (&req.method, segments) {
        (&Method::GET, ["2018-10-31", "layers"]) => {
            if req.query("find") == Some("LayerVersion") {
                get_by_arn(req, state)
            } else {
                list_layers(req, state)
            }
        }
        (&Method::POST, ["2018-10-31", "layers", l, "versions"]) => publish(req, state, l).await,
        (&Method::GET, ["2018-10-31", "layers", l, "versions"]) => list_versions(req, state, l),
        (&Method::GET, ["2018-10-31", "layers", l, "versions", n]) => get(req, state, l, n),
        (&Method::DELETE, ["2018-10-31", "layers", l, "versions", n]) => delete(state, l, n),
        (&Method::POST, ["2018-10-31", "layers", l, "versions", n, "policy"]) => {
            add_permission(req, state, l, n)
        }
        (&Method::GET, ["2018-10-31", "layers", l, "versions", n, "policy"]) => {
            get_policy(state, l, n)
        }
        (&Method::DELETE, ["2018-10-31", "layers", l, "versions", n, "policy", sid]) => {
            remove_permission(req, state, l, n, sid)
        }
        _ => return None,
    })
}

/// The parts of a layer ARN: `arn:<partition>:lambda:<region>:<account>:layer:<name>[:<version>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerArn {
    region: String,
    account: String,
    name: String,
    version: Option<u64>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= LAYER_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_layer_arn(arn: &str) -> Option<LayerArn> {
    let parts: Vec<&str> = arn.split(':').collect();
    let (head, version) = match parts.len() {
        7 => (&parts[..7], None),
        8 => (&parts[..7], Some(parts[7].parse::<u64>().ok()?)),
        _ => return None,
    };
    let valid_token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok = head[0] == "arn"
        && valid_token(head[1])
        && head[2] == "lambda"
        && valid_token(head[3])
        && head[4].len() == 12
        && head[4].bytes().all(|b| b.is_ascii_digit())
        && head[5] == "layer"
        && valid_name(head[6])
        && arn.len() <= LAYER_NAME_MAX;
    ok.then(|| LayerArn {
        region: head[3].to_string(),
        account: head[4].to_string(),
        name: head[6].to_string(),
        version,
    })
}

fn layer_arn(arns: &ArnContext, name: &str) -> String {
    format!(
        "arn:aws:lambda:{}:{}:layer:{name}",
        arns.region, arns.account_id
    )
}

fn layer_version_arn(arns: &ArnContext, name: &str, version: u64) -> String {
    format!("{}:{version}", layer_arn(arns, name))
}

/// Parses the `{LayerName}` label (a name or an unversioned layer ARN of this region and account).
fn layer_name(state: &ApiState, label: &str) -> Result<String, ApiError> {
    if label.starts_with("arn:") {
        let parsed = parse_layer_arn(label)
            .filter(|a| a.version.is_none())
            .ok_or_else(|| name_constraint(label))?;
        if parsed.region != state.arns.region || parsed.account != state.arns.account_id {
            return Err(ApiError::not_found(format!(
                "Layer {label} does not exist in this Lambent (region {}, account {})",
                state.arns.region, state.arns.account_id
            )));
        }
        return Ok(parsed.name);
    }
    if !valid_name(label) {
        return Err(name_constraint(label));
    }
    Ok(label.to_string())
}

fn name_constraint(label: &str) -> ApiError {
    ApiError::invalid(format!(
        "1 validation error detected: Value '{label}' at 'layerName' failed to satisfy constraint: \
         Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}"
    ))
}

fn version_number(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{raw}' at 'versionNumber' failed to satisfy constraint: \
             Member must be a number"
        ))
    })
}

fn version_not_found(state: &ApiState, name: &str, version: u64) -> ApiError {
    ApiError::not_found(format!(
        "Layer version {} does not exist.",
        layer_version_arn(&state.arns, name, version)
    ))
}

fn max_items(req: &ApiRequest) -> Result<usize, ApiError> {
    match req.query("MaxItems") {
        None => Ok(MAX_ITEMS),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n @ 1..=MAX_ITEMS) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{raw}' at 'maxItems' failed to satisfy constraint: \
                 Member must have value between 1 and 50"
            ))),
        },
    }
}

/// Reads one layer version's stored entry.
fn stored_version(state: &ApiState, name: &str, version: u64) -> Result<Value, ApiError> {
    state
        .store
        .get_document(kinds::LAYER, "", name)?
        .and_then(|doc| doc["Versions"].get(version.to_string()).cloned())
        .ok_or_else(|| version_not_found(state, name, version))
}

fn versions_of(doc: &Value) -> Vec<(u64, &Value)> {
    let mut versions: Vec<(u64, &Value)> = doc["Versions"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v)))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions
}

/// A LayerVersionsListItem (and the body of LatestMatchingVersion).
fn list_item(arns: &ArnContext, name: &str, version: u64, entry: &Value) -> Value {
    let mut item = json!({
        "LayerVersionArn": layer_version_arn(arns, name, version),
        "Version": version,
        "Description": entry["Description"],
        "CreatedDate": entry["CreatedDate"],
    });
    for key in [
        "CompatibleRuntimes",
        "CompatibleArchitectures",
        "LicenseInfo",
    ] {
        if !entry[key].is_null() {
            item[key] = entry[key].clone();
        }
    }
    item
}

/// The full LayerVersion output of Publish/Get/GetByArn.
fn layer_version(
    req: &ApiRequest,
    arns: &ArnContext,
    name: &str,
    version: u64,
    entry: &Value,
) -> Value {
    let mut value = list_item(arns, name, version, entry);
    value["LayerArn"] = json!(layer_arn(arns, name));
    value["Content"] = json!({
        "Location": format!(
            "http://{}/lambent-code/{}.zip",
            req.host,
            entry["CodeSha256Hex"].as_str().unwrap_or_default()
        ),
        "CodeSha256": entry["CodeSha256"],
        "CodeSize": entry["CodeSize"],
    });
    value
}

/// PublishLayerVersion's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishInput {
    content: Option<CodeInput>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

fn validate_publish(input: &PublishInput) -> Result<(), ApiError> {
    let constraint = |value: &dyn std::fmt::Debug, field: &str, rule: &str| {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{value:?}' at '{field}' failed to satisfy constraint: {rule}"
        ))
    };
    if let Some(d) = &input.description
        && d.chars().count() > limits::DESCRIPTION_CHARS
    {
        return Err(constraint(
            d,
            "description",
            "Member must have length less than or equal to 256",
        ));
    }
    if let Some(l) = &input.license_info
        && l.chars().count() > 512
    {
        return Err(constraint(
            l,
            "licenseInfo",
            "Member must have length less than or equal to 512",
        ));
    }
    if let Some(runtimes) = &input.compatible_runtimes {
        if runtimes.len() > 15 {
            return Err(constraint(
                runtimes,
                "compatibleRuntimes",
                "Member must have length less than or equal to 15",
            ));
        }
        for runtime in runtimes {
            lambent_types::runtime::runtime_family(runtime)?;
        }
    }
    if let Some(architectures) = &input.compatible_architectures
        && (architectures.len() > 2 || architectures.iter().any(|a| a != "x86_64" && a != "arm64"))
    {
        return Err(constraint(
            architectures,
            "compatibleArchitectures",
            "Member must have length less than or equal to 2 and each member must be one of [x86_64, arm64]",
        ));
    }
    Ok(())
}

/// PublishLayerVersion: POST /2018-10-31/layers/{LayerName}/versions → 201 LayerVersion.
async fn publish(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let input: PublishInput = req.json()?;
    let name = layer_name(state, label)?;
    validate_publish(&input)?;
    let content = input
        .content
        .as_ref()
        .ok_or_else(|| ApiError::invalid("Missing Content"))?;
    let code = crate::functions::store_code(state, content).await?;
    let code_store = state.code.clone();
    let hex = code.sha256_hex.clone();
    let unzipped = tokio::task::spawn_blocking(move || code_store.tree_size(&hex))
        .await
        .map_err(|e| ApiError::internal(format!("code storage task failed: {e}")))??;
    let mut entry = json!({
        "Description": input.description.clone().unwrap_or_default(),
        "CreatedDate": lambent_types::time::aws_timestamp(SystemTime::now()),
        "CodeSha256": code.sha256_base64,
        "CodeSha256Hex": code.sha256_hex,
        "CodeSize": code.size,
        "UnzippedSize": unzipped,
    });
    if let Some(runtimes) = &input.compatible_runtimes {
        entry["CompatibleRuntimes"] = json!(runtimes);
    }
    if let Some(architectures) = &input.compatible_architectures {
        entry["CompatibleArchitectures"] = json!(architectures);
    }
    if let Some(license) = &input.license_info {
        entry["LicenseInfo"] = json!(license);
    }
    let mut published = 0;
    state
        .store
        .modify_document(kinds::LAYER, "", &name, &mut |current| {
            let mut doc = current
                .unwrap_or_else(|| json!({ "LayerName": name, "LastVersion": 0, "Versions": {} }));
            let version = doc["LastVersion"].as_u64().unwrap_or(0) + 1;
            doc["LastVersion"] = json!(version);
            if !doc["Versions"].is_object() {
                doc["Versions"] = json!({});
            }
            doc["Versions"][version.to_string()] = entry.clone();
            published = version;
            Ok(Some(doc))
        })?;
    tracing::info!(layer = %name, version = published, code_size = code.size, "layer version published");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &layer_version(req, &state.arns, &name, published, &entry),
    ))
}

/// GetLayerVersion: GET /2018-10-31/layers/{LayerName}/versions/{N}.
fn get(req: &ApiRequest, state: &ApiState, label: &str, raw: &str) -> Result<ApiReply, ApiError> {
    let name = layer_name(state, label)?;
    let version = version_number(raw)?;
    let entry = stored_version(state, &name, version)?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &layer_version(req, &state.arns, &name, version, &entry),
    ))
}

/// GetLayerVersionByArn: GET /2018-10-31/layers?find=LayerVersion&Arn=….
fn get_by_arn(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let raw = req.query("Arn").unwrap_or_default();
    let (name, version) = own_layer_version(state, raw, "arn")?;
    let entry = stored_version(state, &name, version)?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &layer_version(req, &state.arns, &name, version, &entry),
    ))
}

/// Parses a layer version ARN of this region and account into name and version.
fn own_layer_version(state: &ApiState, raw: &str, field: &str) -> Result<(String, u64), ApiError> {
    let parsed = parse_layer_arn(raw).filter(|a| a.version.is_some()).ok_or_else(|| {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{raw}' at '{field}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}"
        ))
    })?;
    let version = parsed.version.unwrap_or_default();
    if parsed.region != state.arns.region || parsed.account != state.arns.account_id {
        return Err(ApiError::not_found(format!(
            "Layer version {raw} does not exist."
        )));
    }
    Ok((parsed.name, version))
}

/// ListLayerVersions: GET /2018-10-31/layers/{LayerName}/versions, newest first.
fn list_versions(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let name = layer_name(state, label)?;
    let max = max_items(req)?;
    let marker = req
        .query("Marker")
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.parse::<u64>()
                .map_err(|_| ApiError::invalid(format!("Invalid Marker: {m}")))
        })
        .transpose()?;
    let runtime = req.query("CompatibleRuntime");
    let architecture = req.query("CompatibleArchitecture");
    let doc = state
        .store
        .get_document(kinds::LAYER, "", &name)?
        .unwrap_or(Value::Null);
    let matching: Vec<(u64, &Value)> = versions_of(&doc)
        .into_iter()
        .filter(|(v, _)| marker.is_none_or(|m| *v < m))
        .filter(|(_, e)| compatible(e, runtime, architecture))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(max)
        .map(|(v, e)| list_item(&state.arns, &name, *v, e))
        .collect();
    let mut body = json!({ "LayerVersions": page });
    if matching.len() > max {
        body["NextMarker"] = json!(matching[max - 1].0.to_string());
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}

fn compatible(entry: &Value, runtime: Option<&str>, architecture: Option<&str>) -> bool {
    let has = |key: &str, wanted: Option<&str>| {
        wanted.is_none_or(|w| {
            entry[key]
                .as_array()
                .is_some_and(|list| list.iter().any(|x| x.as_str() == Some(w)))
        })
    };
    has("CompatibleRuntimes", runtime) && has("CompatibleArchitectures", architecture)
}

/// ListLayers: GET /2018-10-31/layers, each layer with its newest matching version.
fn list_layers(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let max = max_items(req)?;
    let marker = req.query("Marker").filter(|m| !m.is_empty());
    let runtime = req.query("CompatibleRuntime");
    let architecture = req.query("CompatibleArchitecture");
    let docs = state.store.list_documents(kinds::LAYER, Some(""))?;
    let mut layers = Vec::new();
    for (_, name, doc) in &docs {
        if marker.is_some_and(|m| name.as_str() <= m) {
            continue;
        }
        let Some((version, entry)) = versions_of(doc)
            .into_iter()
            .find(|(_, e)| compatible(e, runtime, architecture))
        else {
            continue;
        };
        layers.push((
            name.clone(),
            json!({
                "LayerName": name,
                "LayerArn": layer_arn(&state.arns, name),
                "LatestMatchingVersion": list_item(&state.arns, name, version, entry),
            }),
        ));
    }
    let next = (layers.len() > max).then(|| layers[max - 1].0.clone());
    let page: Vec<Value> = layers.into_iter().take(max).map(|(_, v)| v).collect();
    let mut body = json!({ "Layers": page });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}

/// DeleteLayerVersion: DELETE …/versions/{N} → 204, also when it does not exist. The unpacked
/// tree stays, so functions that use the version keep working.
fn delete(state: &ApiState, label: &str, raw: &str) -> Result<ApiReply, ApiError> {
    let name = layer_name(state, label)?;
    let version = version_number(raw)?;
    state
        .store
        .modify_document(kinds::LAYER, "", &name, &mut |current| {
            let Some(mut doc) = current else {
                return Ok(None);
            };
            if let Some(versions) = doc["Versions"].as_object_mut() {
                versions.remove(&version.to_string());
            }
            // The document (and LastVersion) stays even when empty, so numbers are never reused.
            Ok(Some(doc))
        })?;
    tracing::info!(layer = %name, version, "layer version deleted");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// AddLayerVersionPermission's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    organization_id: Option<String>,
}

fn field_error(value: &str, field: &str, rule: &str) -> ApiError {
    ApiError::invalid(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

fn statement(
    state: &ApiState,
    name: &str,
    version: u64,
    input: &PermissionInput,
) -> Result<(String, Value), ApiError> {
    let sid = input.statement_id.clone().unwrap_or_default();
    if sid.is_empty()
        || sid.len() > 100
        || !sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(field_error(
            &sid,
            "statementId",
            "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
        ));
    }
    let action = input.action.clone().unwrap_or_default();
    if action != "lambda:GetLayerVersion" {
        return Err(field_error(
            &action,
            "action",
            "Member must satisfy regular expression pattern: lambda:GetLayerVersion",
        ));
    }
    let principal = input.principal.clone().unwrap_or_default();
    let principal_value = if principal == "*" {
        json!("*")
    } else if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        json!({ "AWS": format!("arn:aws:iam::{principal}:root") })
    } else if principal.starts_with("arn:aws")
        && principal.ends_with(":root")
        && principal.contains(":iam::")
    {
        json!({ "AWS": principal })
    } else {
        return Err(field_error(
            &principal,
            "principal",
            "Member must satisfy regular expression pattern: \\d{12}|\\*|arn:(aws[a-zA-Z-]*):iam::\\d{12}:root",
        ));
    };
    let mut statement = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal_value,
        "Action": action,
        "Resource": layer_version_arn(&state.arns, name, version),
    });
    if let Some(org) = &input.organization_id {
        let valid = org.strip_prefix("o-").is_some_and(|rest| {
            (10..=32).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !valid {
            return Err(field_error(
                org,
                "organizationId",
                "Member must satisfy regular expression pattern: o-[a-z0-9]{10,32}",
            ));
        }
        statement["Condition"] = json!({ "StringEquals": { "aws:PrincipalOrgID": org } });
    }
    Ok((sid, statement))
}

/// AddLayerVersionPermission: POST …/versions/{N}/policy → 201 `{Statement, RevisionId}`.
fn add_permission(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    raw: &str,
) -> Result<ApiReply, ApiError> {
    let input: PermissionInput = req.json()?;
    let name = layer_name(state, label)?;
    let version = version_number(raw)?;
    let (sid, statement) = statement(state, &name, version, &input)?;
    let expected = req.query("RevisionId").map(str::to_string);
    let revision = uuid::Uuid::new_v4().to_string();
    let not_found = version_not_found(state, &name, version).message;
    state
        .store
        .modify_document(kinds::LAYER, "", &name, &mut |current| {
            let mut doc = current.ok_or_else(|| StoreError::NotFound(not_found.clone()))?;
            let entry = doc["Versions"]
                .get_mut(version.to_string())
                .ok_or_else(|| StoreError::NotFound(not_found.clone()))?;
            let policy = entry
                .as_object_mut()
                .ok_or_else(|| StoreError::NotFound(not_found.clone()))?
                .entry("Policy")
                .or_insert_with(|| json!({ "RevisionId": "", "Statements": [] }));
            if let Some(expected) = &expected
                && policy["RevisionId"].as_str() != Some(expected.as_str())
            {
                return Err(StoreError::RevisionMismatch(name.clone()));
            }
            let statements = policy["Statements"].as_array().cloned().unwrap_or_default();
            if statements.iter().any(|s| s["Sid"].as_str() == Some(sid.as_str())) {
                return Err(StoreError::Conflict(format!(
                    "The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the existing statement."
                )));
            }
            let mut statements = statements;
            statements.push(statement.clone());
            *policy = json!({ "RevisionId": revision, "Statements": statements });
            Ok(Some(doc))
        })?;
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &json!({ "Statement": statement.to_string(), "RevisionId": revision }),
    ))
}

fn no_policy() -> ApiError {
    ApiError::not_found("No policy is associated with the given resource.")
}

/// GetLayerVersionPolicy: GET …/versions/{N}/policy → `{Policy, RevisionId}`.
fn get_policy(state: &ApiState, label: &str, raw: &str) -> Result<ApiReply, ApiError> {
    let name = layer_name(state, label)?;
    let version = version_number(raw)?;
    let entry = stored_version(state, &name, version)?;
    let policy = &entry["Policy"];
    let statements = policy["Statements"].as_array().cloned().unwrap_or_default();
    if statements.is_empty() {
        return Err(no_policy());
    }
    let document = json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements });
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "Policy": document.to_string(), "RevisionId": policy["RevisionId"] }),
    ))
}

/// RemoveLayerVersionPermission: DELETE …/versions/{N}/policy/{StatementId} → 204.
fn remove_permission(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    raw: &str,
    sid: &str,
) -> Result<ApiReply, ApiError> {
    let name = layer_name(state, label)?;
    let version = version_number(raw)?;
    let expected = req.query("RevisionId").map(str::to_string);
    let not_found = version_not_found(state, &name, version).message;
    let missing = format!("Statement {sid} is not found in resource policy.");
    state
        .store
        .modify_document(kinds::LAYER, "", &name, &mut |current| {
            let mut doc = current.ok_or_else(|| StoreError::NotFound(not_found.clone()))?;
            let entry = doc["Versions"]
                .get_mut(version.to_string())
                .and_then(Value::as_object_mut)
                .ok_or_else(|| StoreError::NotFound(not_found.clone()))?;
            let policy = entry
                .get_mut("Policy")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| StoreError::NotFound(missing.clone()))?;
            if let Some(expected) = &expected
                && policy.get("RevisionId").and_then(Value::as_str) != Some(expected.as_str())
            {
                return Err(StoreError::RevisionMismatch(name.clone()));
            }
            let mut statements = policy
                .get("Statements")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let before = statements.len();
            statements.retain(|s| s["Sid"].as_str() != Some(sid));
            if statements.len() == before {
                return Err(StoreError::NotFound(missing.clone()));
            }
            let mut updated = Map::new();
            updated.insert("RevisionId".into(), json!(uuid::Uuid::new_v4().to_string()));
            updated.insert("Statements".into(), json!(statements));
            *policy = updated;
            Ok(Some(doc))
        })?;
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

/// Resolves the `Layers` of CreateFunction / UpdateFunctionConfiguration: at most 5 layer
/// version ARNs of this region and account that exist, in order.
pub(crate) fn resolve_layers(state: &ApiState, arns: &[String]) -> Result<Vec<LayerRef>, ApiError> {
    if arns.len() > lambent_types::config::MAX_LAYERS {
        return Err(ApiError::invalid("Cannot reference more than 5 layers."));
    }
    let mut resolved: Vec<LayerRef> = Vec::with_capacity(arns.len());
    let mut names = Vec::new();
    for raw in arns {
        let parsed = parse_layer_arn(raw).filter(|a| a.version.is_some()).ok_or_else(|| {
            ApiError::invalid(format!(
                "1 validation error detected: Value '[{}]' at 'layers' failed to satisfy constraint: \
                 Member must satisfy constraint: [Member must have length less than or equal to 140, \
                 Member must have length greater than or equal to 1, Member must satisfy regular expression \
                 pattern: {LAYER_VERSION_ARN_PATTERN}, Member must not be null]",
                arns.join(", ")
            ))
        })?;
        let does_not_exist = || ApiError::invalid(format!("Layer version {raw} does not exist."));
        if parsed.region != state.arns.region || parsed.account != state.arns.account_id {
            return Err(does_not_exist());
        }
        if names.contains(&parsed.name) {
            return Err(ApiError::invalid(
                "Two different versions of the same layer are not allowed.",
            ));
        }
        let version = parsed.version.unwrap_or_default();
        let entry = stored_version(state, &parsed.name, version).map_err(|_| does_not_exist())?;
        resolved.push(LayerRef {
            arn: layer_version_arn(&state.arns, &parsed.name, version),
            code_sha256_hex: entry["CodeSha256Hex"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            code_size: entry["CodeSize"].as_u64().unwrap_or_default(),
        });
        names.push(parsed.name);
    }
    Ok(resolved)
}

/// Refuses code plus layers whose unpacked trees exceed Lambda's unzipped limit.
pub(crate) fn check_unzipped_size(
    state: &ApiState,
    code_sha256_hex: &str,
    layers: &[LayerRef],
) -> Result<(), ApiError> {
    let mut total = state.code.tree_size(code_sha256_hex)?;
    for layer in layers {
        total += state.code.tree_size(&layer.code_sha256_hex)?;
    }
    if total > limits::UNZIPPED_CODE_BYTES {
        return Err(ApiError::invalid(format!(
            "Function code combined with layers exceeds the maximum allowed size of {} bytes. \
             The actual size is {total} bytes.",
            limits::UNZIPPED_CODE_BYTES
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layer_arns() {
        let arn =
            parse_layer_arn("arn:aws:lambda:us-east-1:123456789012:layer:my-layer_1:7").unwrap();
        assert_eq!(arn.name, "my-layer_1");
        assert_eq!(arn.version, Some(7));
        assert_eq!(arn.region, "us-east-1");
        let unversioned = parse_layer_arn("arn:aws:lambda:us-east-1:123456789012:layer:l").unwrap();
        assert_eq!(unversioned.version, None);
        for bad in [
            "arn:aws:lambda:us-east-1:123456789012:function:f:1",
            "arn:aws:lambda:us-east-1:1234:layer:l:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:l:x",
            "arn:aws:lambda:us-east-1:123456789012:layer:bad name:1",
            "arn:aws:lambda:us-east-1:123456789012:layer::1",
            "layer:l:1",
        ] {
            assert!(parse_layer_arn(bad).is_none(), "{bad}");
        }
        assert!(valid_name(&"a".repeat(140)));
        assert!(!valid_name(&"a".repeat(141)));
        assert!(!valid_name("a.b"));
    }

    #[test]
    fn compatibility_filter() {
        let entry =
            json!({"CompatibleRuntimes": ["python3.12"], "CompatibleArchitectures": ["arm64"]});
        assert!(compatible(&entry, None, None));
        assert!(compatible(&entry, Some("python3.12"), Some("arm64")));
        assert!(!compatible(&entry, Some("nodejs20.x"), None));
        assert!(!compatible(&json!({}), None, Some("x86_64")));
    }
}
