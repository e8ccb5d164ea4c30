//! The JSON shapes of the Lambda API: request bodies in, FunctionConfiguration out.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use lambent_types::FunctionConfig;
use lambent_types::names::ArnContext;

/// `Environment` in requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentInput {
    /// The variables; absent means none.
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
}

/// `EphemeralStorage` in requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageInput {
    /// Size in MB.
    pub size: u32,
}

/// `TracingConfig` in requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingInput {
    /// `Active` or `PassThrough`.
    pub mode: Option<String>,
}

/// `DeadLetterConfig` in requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterInput {
    /// Where failed events go; empty removes the setting.
    pub target_arn: Option<String>,
}

/// `Code` of CreateFunction, and the body of UpdateFunctionCode.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeInput {
    /// Base64 zip.
    pub zip_file: Option<String>,
    /// S3 location (not available in Lambent).
    pub s3_bucket: Option<String>,
    /// S3 key.
    pub s3_key: Option<String>,
    /// Container image (not available yet).
    pub image_uri: Option<String>,
}

/// CreateFunction's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionInput {
    /// Name or ARN.
    pub function_name: String,
    /// Runtime identifier.
    pub runtime: Option<String>,
    /// Execution role.
    pub role: String,
    /// Handler.
    pub handler: Option<String>,
    /// The code.
    pub code: CodeInput,
    /// Description.
    pub description: Option<String>,
    /// Timeout, s.
    pub timeout: Option<u32>,
    /// Memory, MB.
    pub memory_size: Option<u32>,
    /// Publish a version too.
    #[serde(default)]
    pub publish: bool,
    /// `Zip` or `Image`.
    pub package_type: Option<String>,
    /// Environment variables.
    pub environment: Option<EnvironmentInput>,
    /// Layer version ARNs.
    #[serde(default)]
    pub layers: Vec<String>,
    /// `[x86_64]` or `[arm64]`.
    pub architectures: Option<Vec<String>>,
    /// /tmp size.
    pub ephemeral_storage: Option<EphemeralStorageInput>,
    /// Tracing mode.
    pub tracing_config: Option<TracingInput>,
    /// Dead-letter target.
    pub dead_letter_config: Option<DeadLetterInput>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// UpdateFunctionCode's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCodeInput {
    /// Base64 zip.
    #[serde(flatten)]
    pub code: CodeInput,
    /// Publish a version too.
    #[serde(default)]
    pub publish: bool,
    /// Validate only.
    #[serde(default)]
    pub dry_run: bool,
    /// Precondition.
    pub revision_id: Option<String>,
    /// New architecture.
    pub architectures: Option<Vec<String>>,
}

/// UpdateFunctionConfiguration's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigInput {
    /// Execution role.
    pub role: Option<String>,
    /// Handler.
    pub handler: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Timeout, s.
    pub timeout: Option<u32>,
    /// Memory, MB.
    pub memory_size: Option<u32>,
    /// Runtime identifier.
    pub runtime: Option<String>,
    /// Environment (replaces the whole map).
    pub environment: Option<EnvironmentInput>,
    /// Layers (replace the list).
    pub layers: Option<Vec<String>>,
    /// /tmp size.
    pub ephemeral_storage: Option<EphemeralStorageInput>,
    /// Tracing mode.
    pub tracing_config: Option<TracingInput>,
    /// Dead-letter target.
    pub dead_letter_config: Option<DeadLetterInput>,
    /// Precondition.
    pub revision_id: Option<String>,
}

/// Renders a stored configuration as Lambda's FunctionConfiguration.
pub fn function_configuration(config: &FunctionConfig, arns: &ArnContext) -> Value {
    let arn = if config.version == "$LATEST" {
        arns.function_arn(&config.name)
    } else {
        format!("{}:{}", arns.function_arn(&config.name), config.version)
    };
    let mut value = json!({
        "FunctionName": config.name,
        "FunctionArn": arn,
        "Runtime": config.runtime,
        "Role": config.role,
        "Handler": config.handler,
        "CodeSize": config.code_size,
        "Description": config.description,
        "Timeout": config.timeout,
        "MemorySize": config.memory_size,
        "LastModified": config.last_modified,
        "CodeSha256": config.code_sha256,
        "Version": config.version,
        "TracingConfig": { "Mode": config.tracing_mode },
        "RevisionId": config.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": config.architectures,
        "EphemeralStorage": { "Size": config.ephemeral_storage },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": { "LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", config.name) },
    });
    if !config.environment.is_empty() {
        value["Environment"] = json!({ "Variables": config.environment });
    }
    if !config.layers.is_empty() {
        value["Layers"] = config
            .layers
            .iter()
            .map(|l| json!({ "Arn": l.arn, "CodeSize": l.code_size }))
            .collect();
    }
    if let Some(target) = &config.dead_letter_target {
        value["DeadLetterConfig"] = json!({ "TargetArn": target });
    }
    value
}
