//! Function control-plane operations: Create, Get, GetConfiguration, List, UpdateCode,
//! UpdateConfiguration, Delete, and GetAccountSettings.

use std::time::SystemTime;

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::json;

use lambent_store::{StoreError, StoredCode};
use lambent_types::{FunctionConfig, FunctionRef, Qualifier, limits};

use crate::shapes::{
    self, CodeInput, CreateFunctionInput, UpdateCodeInput, UpdateConfigInput,
    function_configuration,
};
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed, invoke};

const LATEST: &str = "$LATEST";

/// Routes the function operations (and Invoke) of the 2015-03-31 API.
pub(crate) async fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    Some(match (&req.method, segments) {
        (&Method::POST, ["2015-03-31", "functions"]) => create(req, state).await,
        (&Method::GET, ["2015-03-31", "functions"]) => list(req, state),
        (&Method::GET, ["2015-03-31", "functions", f]) => get(req, state, f),
        (&Method::DELETE, ["2015-03-31", "functions", f]) => delete(req, state, f),
        (&Method::GET, ["2015-03-31", "functions", f, "configuration"]) => {
            get_configuration(req, state, f)
        }
        (&Method::PUT, ["2015-03-31", "functions", f, "configuration"]) => {
            update_configuration(req, state, f)
        }
        (&Method::PUT, ["2015-03-31", "functions", f, "code"]) => update_code(req, state, f).await,
        (&Method::POST, ["2015-03-31", "functions", f, "invocations"]) => {
            invoke::invoke(req, state, f).await
        }
        (
            &Method::POST,
            [
                "2021-11-15",
                "functions",
                f,
                "response-streaming-invocations",
            ],
        ) => crate::streaming::invoke_with_response_stream(req, state, f).await,
        (&Method::POST, ["2014-11-13", "functions", f, "invoke-async"]) => {
            invoke::invoke_async(req, state, f).await
        }
        (&Method::GET, ["2016-08-19", "account-settings"]) => account_settings(state),
        _ => return None,
    })
}

/// Parses the `{FunctionName}` label with the request's `?Qualifier=`; an ARN must name this
/// server's region and account.
pub(crate) fn function_ref(req: &ApiRequest, label: &str) -> Result<FunctionRef, ApiError> {
    let function = FunctionRef::parse(label, req.query("Qualifier"))?;
    check_home(&req.arns, label)?;
    Ok(function)
}

/// Refuses function ARNs of another region (404, as AWS) or account (403).
pub(crate) fn check_home(
    arns: &lambent_types::names::ArnContext,
    label: &str,
) -> Result<(), ApiError> {
    let Some((region, account)) = lambent_types::names::referenced_home(label) else {
        return Ok(());
    };
    if let Some(region) = region
        && region != arns.region
    {
        return Err(ApiError::not_found(format!(
            "Functions from '{region}' are not reachable in this region ('{}')",
            arns.region
        )));
    }
    if account != arns.account_id {
        return Err(ApiError::access_denied(format!(
            "Cross-account access is not allowed: the function belongs to account {account}, this server is account {}",
            arns.account_id
        )));
    }
    Ok(())
}

/// Reads the configuration a reference names (an alias reads its main version), with AWS's
/// not-found message.
pub(crate) fn resolve(
    state: &ApiState,
    function: &FunctionRef,
) -> Result<FunctionConfig, ApiError> {
    let not_found = || {
        let arn = state
            .arns
            .arn_as_named(&function.name, function.qualifier.as_ref());
        ApiError::not_found(format!("Function not found: {arn}"))
    };
    let version = match function.qualifier_or_latest() {
        Qualifier::Alias(alias) => {
            let doc = state
                .store
                .get_document(lambent_store::kinds::ALIAS, &function.name, &alias)?
                .ok_or_else(not_found)?;
            doc["FunctionVersion"]
                .as_str()
                .unwrap_or(LATEST)
                .to_string()
        }
        other => other.to_string(),
    };
    state
        .store
        .get_function(&function.name, &version)
        .map_err(|e| match e {
            StoreError::NotFound(_) => not_found(),
            other => other.into(),
        })
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn now() -> String {
    lambent_types::time::aws_timestamp(SystemTime::now())
}

/// Decodes an inline zip and stores it; S3 and image code are refused with a clear message.
pub(crate) async fn store_code(state: &ApiState, code: &CodeInput) -> Result<StoredCode, ApiError> {
    if code.image_uri.is_some() {
        return Err(ApiError::invalid(
            "Lambent runs Zip packages only; container images (ImageUri) are not supported",
        ));
    }
    if code.s3_bucket.is_some() || code.s3_key.is_some() {
        return Err(ApiError::invalid(
            "Lambent has no S3: send the deployment package inline as ZipFile (e.g. --zip-file fileb://function.zip)",
        ));
    }
    let encoded = code.zip_file.as_deref().ok_or_else(|| {
        ApiError::invalid("Please provide a source for function code: ZipFile is required")
    })?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| ApiError::invalid(format!("Could not decode ZipFile as base64: {e}")))?;
    if zip.len() as u64 > limits::ZIPPED_CODE_BYTES {
        return Err(ApiError::too_large(format!(
            "Zipped size must be smaller than {} bytes",
            limits::ZIPPED_CODE_BYTES
        )));
    }
    let code_store = state.code.clone();
    tokio::task::spawn_blocking(move || code_store.put_zip(&zip))
        .await
        .map_err(|e| ApiError::internal(format!("code storage task failed: {e}")))?
        .map_err(ApiError::from)
}

fn apply_code(config: &mut FunctionConfig, code: &StoredCode) {
    config.code_sha256_hex = code.sha256_hex.clone();
    config.code_sha256 = code.sha256_base64.clone();
    config.code_size = code.size;
}

/// Resolves `Layers` (layer version ARNs) to the layer versions they name; see [`crate::layers`].
fn resolve_layers(
    state: &ApiState,
    arns: &[String],
) -> Result<Vec<lambent_types::LayerRef>, ApiError> {
    crate::layers::resolve_layers(state, arns)
}

/// Refuses an execution role that does not exist, as AWS does.
fn check_role(state: &ApiState, role: &str) -> Result<(), ApiError> {
    match state.store.get_role_by_arn(role)? {
        Some(_) => Ok(()),
        None => Err(ApiError::invalid(format!(
            "The role defined for the function cannot be assumed by Lambda. ({role} does not exist; \
             create it with `lambent admin role create`)"
        ))),
    }
}

/// The dead-letter target a request sets: `None` when it says nothing, `Some(None)` to
/// remove it; a target that does not exist is refused.
fn dead_letter_target(
    state: &ApiState,
    input: Option<&shapes::DeadLetterInput>,
) -> Result<Option<Option<String>>, ApiError> {
    let Some(input) = input else {
        return Ok(None);
    };
    match input.target_arn.as_deref().filter(|t| !t.is_empty()) {
        None => Ok(Some(None)),
        Some(target) => {
            state
                .invoker
                .check_destination(target)
                .map_err(|e| ApiError::invalid(format!("DeadLetterConfig: {e}")))?;
            Ok(Some(Some(target.to_string())))
        }
    }
}

fn tracing_mode(input: Option<&shapes::TracingInput>) -> Result<Option<String>, ApiError> {
    match input.and_then(|t| t.mode.as_deref()) {
        None => Ok(None),
        Some(mode @ ("Active" | "PassThrough")) => Ok(Some(mode.to_string())),
        Some(other) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{other}' at 'tracingConfig.mode' failed to satisfy constraint: \
             Member must satisfy enum value set: [Active, PassThrough]"
        ))),
    }
}

/// CreateFunction: POST /2015-03-31/functions → 201 FunctionConfiguration.
pub(crate) async fn create(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input: CreateFunctionInput = req.json()?;
    let function = FunctionRef::parse_unqualified(&input.function_name)?;
    check_home(&state.arns, &input.function_name)?;
    if input.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(ApiError::invalid(
            "Lambent runs Zip packages only; PackageType must be Zip",
        ));
    }
    let layers = resolve_layers(state, &input.layers)?;
    let (Some(runtime), Some(handler)) = (input.runtime.clone(), input.handler.clone()) else {
        return Err(ApiError::invalid(
            "Runtime and Handler are mandatory parameters for functions created with deployment packages.",
        ));
    };
    let base = FunctionConfig::with_defaults(&function.name, &runtime, &handler, &input.role);
    let mut config = FunctionConfig {
        description: input.description.clone().unwrap_or_default(),
        timeout: input.timeout.unwrap_or(base.timeout),
        memory_size: input.memory_size.unwrap_or(base.memory_size),
        ephemeral_storage: input
            .ephemeral_storage
            .as_ref()
            .map_or(base.ephemeral_storage, |e| e.size),
        architectures: input
            .architectures
            .clone()
            .unwrap_or_else(|| base.architectures.clone()),
        environment: input
            .environment
            .as_ref()
            .and_then(|e| e.variables.clone())
            .unwrap_or_default(),
        last_modified: now(),
        revision_id: new_revision(),
        tracing_mode: tracing_mode(input.tracing_config.as_ref())?
            .unwrap_or_else(|| base.tracing_mode.clone()),
        tags: input.tags.clone(),
        layers,
        dead_letter_target: dead_letter_target(state, input.dead_letter_config.as_ref())?.flatten(),
        ..base.clone()
    };
    config.validate()?;
    check_role(state, &config.role)?;
    crate::settings::tags::check_network_tag(state, &config.tags)?;
    if state.store.get_function(&config.name, LATEST).is_ok() {
        return Err(ApiError::conflict(format!(
            "Function already exist: {}",
            config.name
        )));
    }
    let code = store_code(state, &input.code).await?;
    apply_code(&mut config, &code);
    crate::layers::check_unzipped_size(state, &config.code_sha256_hex, &config.layers)?;
    state.store.create_function(&config)?;
    if input.publish {
        let version = state
            .store
            .publish_version(&config.name, None, None, None)?;
        return Ok(ApiReply::json(
            StatusCode::CREATED,
            &function_configuration(&version, &state.arns),
        ));
    }
    tracing::info!(function = %config.name, runtime = %config.runtime, code_size = config.code_size, "function created");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &function_configuration(&config, &state.arns),
    ))
}

/// GetFunction: GET /2015-03-31/functions/{Fn}.
pub(crate) fn get(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let config = resolve(state, &function_ref(req, label)?)?;
    let mut body = json!({
        "Configuration": function_configuration(&config, &state.arns),
        "Code": {
            "RepositoryType": "S3",
            "Location": format!("http://{}/lambent-code/{}.zip", req.host, config.code_sha256_hex),
        },
    });
    if !config.tags.is_empty() {
        body["Tags"] = json!(config.tags);
    }
    if let Some(reserved) =
        state
            .store
            .get_document(lambent_store::kinds::CONCURRENCY, &config.name, "")?
    {
        body["Concurrency"] = reserved;
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}

/// GetFunctionConfiguration: GET /2015-03-31/functions/{Fn}/configuration.
pub(crate) fn get_configuration(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let config = resolve(state, &function_ref(req, label)?)?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &function_configuration(&config, &state.arns),
    ))
}

/// ListFunctions: GET /2015-03-31/functions?Marker&MaxItems — at most 50 per page.
pub(crate) fn list(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let max_items = match req.query("MaxItems") {
        None => 50,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n @ 1..=10000) => n.min(50),
            _ => {
                return Err(ApiError::invalid(format!(
                    "1 validation error detected: Value '{raw}' at 'maxItems' failed to satisfy constraint: \
                     Member must have value between 1 and 10000"
                )));
            }
        },
    };
    if let Some(version) = req.query("FunctionVersion")
        && version != "ALL"
    {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{version}' at 'functionVersion' failed to satisfy constraint: \
             Member must satisfy enum value set: [ALL]"
        )));
    }
    let page = state.store.list_functions(
        req.query("Marker").filter(|m| !m.is_empty()),
        max_items,
        req.query("FunctionVersion") == Some("ALL"),
    )?;
    let functions: Vec<_> = page
        .items
        .iter()
        .map(|c| function_configuration(c, &state.arns))
        .collect();
    let mut body = json!({ "Functions": functions });
    if let Some(marker) = page.next_marker {
        body["NextMarker"] = json!(marker);
    }
    Ok(ApiReply::json(StatusCode::OK, &body))
}

fn unqualified_latest(req: &ApiRequest, label: &str) -> Result<FunctionRef, ApiError> {
    let function = function_ref(req, label)?;
    match function.qualifier {
        None | Some(Qualifier::Latest) => Ok(function),
        Some(other) => Err(ApiError::invalid(format!(
            "Only the $LATEST version can be updated; got qualifier {other}"
        ))),
    }
}

/// UpdateFunctionCode: PUT /2015-03-31/functions/{Fn}/code.
pub(crate) async fn update_code(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: UpdateCodeInput = req.json()?;
    let function = unqualified_latest(req, label)?;
    let current = resolve(state, &function)?;
    if input
        .revision_id
        .as_deref()
        .is_some_and(|r| r != current.revision_id)
    {
        return Err(ApiError::stale_revision());
    }
    let code = store_code(state, &input.code).await?;
    crate::layers::check_unzipped_size(state, &code.sha256_hex, &current.layers)?;
    let mut change = |config: &mut FunctionConfig| -> Result<(), StoreError> {
        apply_code(config, &code);
        if let Some(architectures) = &input.architectures {
            config.architectures = architectures.clone();
        }
        config.last_modified = now();
        config.revision_id = new_revision();
        Ok(config.validate()?)
    };
    let updated = if input.dry_run {
        let mut preview = current;
        change(&mut preview)?;
        preview
    } else {
        state
            .store
            .update_function(&function.name, input.revision_id.as_deref(), &mut change)?
    };
    if !input.dry_run {
        tracing::info!(function = %updated.name, code_size = updated.code_size, "function code updated");
        state.invoker.retire(&updated.name, Some(LATEST));
        if input.publish {
            let version = state
                .store
                .publish_version(&updated.name, None, None, None)?;
            return Ok(ApiReply::json(
                StatusCode::OK,
                &function_configuration(&version, &state.arns),
            ));
        }
    }
    Ok(ApiReply::json(
        StatusCode::OK,
        &function_configuration(&updated, &state.arns),
    ))
}

/// UpdateFunctionConfiguration: PUT /2015-03-31/functions/{Fn}/configuration.
pub(crate) fn update_configuration(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let input: UpdateConfigInput = req.json()?;
    let function = unqualified_latest(req, label)?;
    let layers = input
        .layers
        .as_deref()
        .map(|arns| resolve_layers(state, arns))
        .transpose()?;
    let tracing = tracing_mode(input.tracing_config.as_ref())?;
    let dead_letter = dead_letter_target(state, input.dead_letter_config.as_ref())?;
    if let Some(role) = &input.role {
        check_role(state, role)?;
    }
    let current = resolve(state, &function)?;
    if let Some(layers) = &layers {
        crate::layers::check_unzipped_size(state, &current.code_sha256_hex, layers)?;
    }
    let updated = state.store.update_function(
        &function.name,
        input.revision_id.as_deref(),
        &mut |config| {
            if let Some(role) = &input.role {
                config.role = role.clone();
            }
            if let Some(handler) = &input.handler {
                config.handler = handler.clone();
            }
            if let Some(description) = &input.description {
                config.description = description.clone();
            }
            if let Some(timeout) = input.timeout {
                config.timeout = timeout;
            }
            if let Some(memory) = input.memory_size {
                config.memory_size = memory;
            }
            if let Some(runtime) = &input.runtime {
                config.runtime = runtime.clone();
            }
            if let Some(environment) = &input.environment {
                config.environment = environment.variables.clone().unwrap_or_default();
            }
            if let Some(storage) = &input.ephemeral_storage {
                config.ephemeral_storage = storage.size;
            }
            if let Some(mode) = &tracing {
                config.tracing_mode = mode.clone();
            }
            if let Some(layers) = &layers {
                config.layers = layers.clone();
            }
            if let Some(target) = &dead_letter {
                config.dead_letter_target = target.clone();
            }
            config.last_modified = now();
            config.revision_id = new_revision();
            Ok(config.validate()?)
        },
    )?;
    tracing::info!(function = %updated.name, "function configuration updated");
    state.invoker.retire(&updated.name, Some(LATEST));
    Ok(ApiReply::json(
        StatusCode::OK,
        &function_configuration(&updated, &state.arns),
    ))
}

/// DeleteFunction: DELETE /2015-03-31/functions/{Fn} → 204.
pub(crate) fn delete(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let function = function_ref(req, label)?;
    match &function.qualifier {
        None => {}
        Some(Qualifier::Latest) => {
            return Err(ApiError::invalid(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        Some(Qualifier::Version(number)) => {
            resolve(state, &function)?;
            state.store.delete_version(&function.name, *number)?;
            tracing::info!(function = %function.name, version = number, "version deleted");
            state
                .invoker
                .retire(&function.name, Some(&number.to_string()));
            return Ok(ApiReply::empty(StatusCode::NO_CONTENT));
        }
        Some(Qualifier::Alias(alias)) => {
            return Err(ApiError::invalid(format!(
                "Deletion of aliases is not supported through DeleteFunction; use DeleteAlias for {alias}"
            )));
        }
    }
    match state.store.delete_function(&function.name) {
        Ok(()) => {
            tracing::info!(function = %function.name, "function deleted");
            state.invoker.retire(&function.name, None);
            Ok(ApiReply::empty(StatusCode::NO_CONTENT))
        }
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!(
            "Function not found: {}",
            state.arns.function_arn(&function.name)
        ))),
        Err(other) => Err(other.into()),
    }
}

/// GetAccountSettings: GET /2016-08-19/account-settings.
pub(crate) fn account_settings(state: &ApiState) -> Result<ApiReply, ApiError> {
    let (function_count, total_code_size) = state.store.usage()?;
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800u64,
                "CodeSizeUnzipped": limits::UNZIPPED_CODE_BYTES,
                "CodeSizeZipped": limits::ZIPPED_CODE_BYTES,
                "ConcurrentExecutions": state.concurrency_limit,
                "UnreservedConcurrentExecutions": crate::settings::unreserved_concurrency(state)?,
            },
            "AccountUsage": { "TotalCodeSize": total_code_size, "FunctionCount": function_count },
        }),
    ))
}

/// Serves a stored zip at the `Code.Location` URL GetFunction returned.
pub(crate) async fn download_code(state: &ApiState, file: &str) -> Result<ApiReply, ApiError> {
    let not_found = || ApiError::not_found("No such code package");
    let sha = file.strip_suffix(".zip").ok_or_else(not_found)?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let bytes = tokio::fs::read(state.code.zip_path(sha))
        .await
        .map_err(|_| not_found())?;
    Ok(ApiReply {
        stream: None,
        status: StatusCode::OK,
        body: bytes.into(),
        headers: vec![(hyper::header::CONTENT_TYPE, "application/zip".into())],
    })
}
