//! The runtime identifiers Lambda lists today and the family each belongs to.

use crate::ValidationError;

/// How an environment for a runtime is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFamily {
    /// Lambent's own Python bootstrap on the host's CPython.
    Python,
    /// Lambent's own Node bootstrap on the host's Node.js.
    Node,
    /// An executable `bootstrap` shipped in the code (or a layer).
    Provided,
}

/// Runtime identifiers accepted by CreateFunction and UpdateFunctionConfiguration.
pub const SUPPORTED_RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "provided.al2",
    "provided.al2023",
];

/// Returns the family of a supported runtime identifier, or AWS's error for an unknown one.
pub fn runtime_family(runtime: &str) -> Result<RuntimeFamily, ValidationError> {
    if !SUPPORTED_RUNTIMES.contains(&runtime) {
        return Err(ValidationError::new(format!(
            "Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}] \
             or be a valid ARN",
            SUPPORTED_RUNTIMES.join(", ")
        )));
    }
    Ok(if runtime.starts_with("python") {
        RuntimeFamily::Python
    } else if runtime.starts_with("nodejs") {
        RuntimeFamily::Node
    } else {
        RuntimeFamily::Provided
    })
}

/// The language version a runtime identifier names (`python3.12` → `3.12`, `nodejs20.x` → `20`).
pub fn language_version(runtime: &str) -> Option<&str> {
    runtime.strip_prefix("python").or_else(|| {
        runtime
            .strip_prefix("nodejs")
            .and_then(|v| v.strip_suffix(".x"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_runtimes() {
        assert_eq!(runtime_family("python3.12").unwrap(), RuntimeFamily::Python);
        assert_eq!(runtime_family("nodejs20.x").unwrap(), RuntimeFamily::Node);
        assert_eq!(
            runtime_family("provided.al2023").unwrap(),
            RuntimeFamily::Provided
        );
        let err = runtime_family("cobol1.0").unwrap_err();
        assert!(err.0.contains("cobol1.0"));
        assert_eq!(language_version("python3.12"), Some("3.12"));
        assert_eq!(language_version("nodejs22.x"), Some("22"));
        assert_eq!(language_version("provided.al2"), None);
    }
}
