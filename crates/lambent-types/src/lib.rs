//! Lambent's domain types: function names and ARNs, qualifiers, the stored function
//! configuration, AWS's limits and the validation rules that go with them.
//!
//! This crate does no I/O; everything here is pure and unit-tested.

pub mod config;
pub mod names;
pub mod policy;
pub mod runtime;
pub mod time;

pub use config::{FunctionConfig, LayerRef, limits};
pub use names::{FunctionRef, Qualifier};

/// Input that breaks one of Lambda's rules; surfaces as `InvalidParameterValueException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    /// Builds a validation error from anything printable.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
