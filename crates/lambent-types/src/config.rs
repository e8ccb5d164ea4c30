//! The stored configuration of one function version, and the rules its fields obey.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidationError;
use crate::runtime::runtime_family;

/// Lambda's numeric limits.
pub mod limits {
    /// Smallest and largest function timeout, seconds.
    pub const TIMEOUT_SECONDS: (u32, u32) = (1, 900);
    /// Smallest and largest MemorySize, MB.
    pub const MEMORY_MB: (u32, u32) = (128, 10240);
    /// Smallest and largest EphemeralStorage, MB.
    pub const EPHEMERAL_STORAGE_MB: (u32, u32) = (512, 10240);
    /// Largest zipped deployment package accepted inline, bytes.
    pub const ZIPPED_CODE_BYTES: u64 = 50 * 1024 * 1024;
    /// Largest unzipped code (with layers), bytes.
    pub const UNZIPPED_CODE_BYTES: u64 = 262_144_000;
    /// Largest synchronous request or response payload, bytes.
    pub const SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
    /// Largest asynchronous (Event) payload, bytes.
    pub const ASYNC_PAYLOAD_BYTES: usize = 256 * 1024;
    /// Largest total size of environment variables, bytes.
    pub const ENVIRONMENT_BYTES: usize = 4096;
    /// Longest description.
    pub const DESCRIPTION_CHARS: usize = 256;
    /// Longest handler.
    pub const HANDLER_CHARS: usize = 128;
}

/// Defaults Lambda applies when a field is not given.
pub mod defaults {
    /// Default timeout, seconds.
    pub const TIMEOUT_SECONDS: u32 = 3;
    /// Default memory, MB.
    pub const MEMORY_MB: u32 = 128;
    /// Default /tmp size, MB.
    pub const EPHEMERAL_STORAGE_MB: u32 = 512;
}

/// One function version's configuration as Lambent stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// Bare function name.
    pub name: String,
    /// `$LATEST` or a published version number.
    pub version: String,
    /// Runtime identifier, e.g. `python3.12`.
    pub runtime: String,
    /// Handler, e.g. `app.handler` (free-form for `provided`).
    pub handler: String,
    /// Execution role ARN.
    pub role: String,
    /// Free-text description.
    pub description: String,
    /// Timeout, seconds.
    pub timeout: u32,
    /// Memory, MB.
    pub memory_size: u32,
    /// /tmp size, MB.
    pub ephemeral_storage: u32,
    /// `x86_64` or `arm64`.
    pub architectures: Vec<String>,
    /// The function's own environment variables.
    pub environment: BTreeMap<String, String>,
    /// Hex SHA-256 of the code zip: the key of the stored code.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the code zip, as Lambda reports `CodeSha256`.
    pub code_sha256: String,
    /// Zip size, bytes.
    pub code_size: u64,
    /// `LastModified` in Lambda's string format.
    pub last_modified: String,
    /// Changes on every change of code or configuration.
    pub revision_id: String,
    /// `PassThrough` or `Active`.
    pub tracing_mode: String,
    /// Resource tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Layer versions, in the order they are unpacked into `/opt` (later ones override).
    #[serde(default)]
    pub layers: Vec<LayerRef>,
    /// Where events that failed every attempt go (`DeadLetterConfig.TargetArn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
}

/// One layer version a function uses, as resolved when the function was configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Full layer version ARN (`arn:aws:lambda:<region>:<account>:layer:<name>:<version>`).
    pub arn: String,
    /// Hex SHA-256 of the layer's zip: the key of its unpacked tree in the code store.
    pub code_sha256_hex: String,
    /// Zip size, bytes (Lambda's `Layers[].CodeSize`).
    pub code_size: u64,
}

/// Most layers one function may use.
pub const MAX_LAYERS: usize = 5;

/// Environment variable names Lambda reserves for itself.
const RESERVED_ENV_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

impl FunctionConfig {
    /// A `$LATEST` configuration with Lambda's defaults for every optional field and no code yet.
    pub fn with_defaults(name: &str, runtime: &str, handler: &str, role: &str) -> Self {
        Self {
            name: name.to_string(),
            version: "$LATEST".to_string(),
            runtime: runtime.to_string(),
            handler: handler.to_string(),
            role: role.to_string(),
            description: String::new(),
            timeout: defaults::TIMEOUT_SECONDS,
            memory_size: defaults::MEMORY_MB,
            ephemeral_storage: defaults::EPHEMERAL_STORAGE_MB,
            architectures: vec!["x86_64".to_string()],
            environment: BTreeMap::new(),
            code_sha256_hex: String::new(),
            code_sha256: String::new(),
            code_size: 0,
            last_modified: String::new(),
            revision_id: String::new(),
            tracing_mode: "PassThrough".to_string(),
            tags: BTreeMap::new(),
            layers: Vec::new(),
            dead_letter_target: None,
        }
    }

    /// Checks every field against Lambda's rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::names::validate_function_name(&self.name)?;
        runtime_family(&self.runtime)?;
        validate_range("timeout", self.timeout, limits::TIMEOUT_SECONDS)?;
        validate_range("memorySize", self.memory_size, limits::MEMORY_MB)?;
        validate_range(
            "ephemeralStorage.size",
            self.ephemeral_storage,
            limits::EPHEMERAL_STORAGE_MB,
        )?;
        validate_handler(&self.handler)?;
        if self.description.chars().count() > limits::DESCRIPTION_CHARS {
            return Err(constraint(
                "description",
                &self.description,
                "Member must have length less than or equal to 256",
            ));
        }
        if self.role.is_empty() {
            return Err(ValidationError::new(
                "The role defined for the function cannot be empty.",
            ));
        }
        match self.architectures.as_slice() {
            [a] if a == "x86_64" || a == "arm64" => {}
            _ => {
                return Err(ValidationError::new(format!(
                    "1 validation error detected: Value '{:?}' at 'architectures' failed to satisfy constraint: \
                     Member must have length 1 and each member must be one of [x86_64, arm64]",
                    self.architectures
                )));
            }
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(ValidationError::new("Cannot reference more than 5 layers."));
        }
        validate_environment(&self.environment)
    }
}

fn constraint(field: &str, value: &str, rule: &str) -> ValidationError {
    ValidationError::new(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

fn validate_range(field: &str, value: u32, (min, max): (u32, u32)) -> Result<(), ValidationError> {
    if value < min {
        return Err(constraint(
            field,
            &value.to_string(),
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(constraint(
            field,
            &value.to_string(),
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(())
}

fn validate_handler(handler: &str) -> Result<(), ValidationError> {
    if handler.is_empty() || handler.chars().count() > limits::HANDLER_CHARS {
        return Err(constraint(
            "handler",
            handler,
            "Member must have length less than or equal to 128 and at least 1",
        ));
    }
    if handler.chars().any(char::is_whitespace) {
        return Err(constraint(
            "handler",
            handler,
            "Member must satisfy regular expression pattern: [^\\s]+",
        ));
    }
    Ok(())
}

/// Checks environment variable names, reserved keys and the 4 KB total.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut total = 0;
    for (key, value) in vars {
        let mut chars = key.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && key.len() >= 2
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ValidationError::new(format!(
                "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: \
                 Map keys must satisfy constraint: [Member must satisfy regular expression pattern: \
                 [a-zA-Z]([a-zA-Z0-9_])+] (key: {key:?})"
            )));
        }
        if RESERVED_ENV_KEYS.contains(&key.as_str()) {
            return Err(ValidationError::new(format!(
                "Lambda was unable to configure your environment variables because the environment variables \
                 you have provided contains reserved keys that are currently not supported for modification. \
                 Reserved keys used in this request: {key}"
            )));
        }
        total += key.len() + value.len();
    }
    if total > limits::ENVIRONMENT_BYTES {
        return Err(ValidationError::new(format!(
            "Lambda was unable to configure your environment variables because the environment variables \
             you have provided exceeded the 4KB limit. String measured: {total} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FunctionConfig {
        FunctionConfig::with_defaults(
            "fff",
            "python3.12",
            "app.handler",
            "arn:aws:iam::000000000000:role/r",
        )
    }

    #[test]
    fn accepts_a_valid_configuration() {
        sample().validate().unwrap();
    }

    #[test]
    fn enforces_ranges_and_rules() {
        type Mutation = Box<dyn Fn(&mut FunctionConfig)>;
        let bad: Vec<Mutation> = vec![
            Box::new(|c| c.timeout = 0),
            Box::new(|c| c.timeout = 901),
            Box::new(|c| c.memory_size = 64),
            Box::new(|c| c.memory_size = 20000),
            Box::new(|c| c.ephemeral_storage = 100),
            Box::new(|c| c.runtime = "java1".into()),
            Box::new(|c| c.handler = "has space".into()),
            Box::new(|c| c.handler = String::new()),
            Box::new(|c| c.description = "d".repeat(257)),
            Box::new(|c| c.architectures = vec!["mips".into()]),
            Box::new(|c| c.name = "bad name".into()),
            Box::new(|c| {
                c.environment.insert("AWS_REGION".into(), "x".into());
            }),
            Box::new(|c| {
                c.environment.insert("1BAD".into(), "x".into());
            }),
            Box::new(|c| {
                c.environment.insert("BIG".into(), "x".repeat(5000));
            }),
            Box::new(|c| {
                c.layers = vec![
                    LayerRef {
                        arn: "arn:aws:lambda:r:000000000000:layer:l:1".into(),
                        code_sha256_hex: "00".into(),
                        code_size: 1,
                    };
                    6
                ]
            }),
        ];
        for (i, mutate) in bad.iter().enumerate() {
            let mut config = sample();
            mutate(&mut config);
            assert!(config.validate().is_err(), "case {i} accepted");
        }
    }
}
