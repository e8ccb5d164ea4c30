//! API errors in AWS's shape: status, `x-amzn-ErrorType` and a `{Type, Message}` body.

use hyper::StatusCode;

use lambent_invoke::InvokeError;
use lambent_store::{CodeError, StoreError};
use lambent_types::ValidationError;

/// An error answer of the Lambda API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// AWS error name, e.g. `ResourceNotFoundException`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// `Reason` of a throttle.
    pub reason: Option<&'static str>,
}

impl ApiError {
    /// An error with status, name and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
        }
    }

    /// 400 InvalidParameterValueException.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 400 InvalidRequestContentException (body is not the JSON the operation needs).
    pub fn bad_content(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// 404 ResourceNotFoundException.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 403 AccessDeniedException.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// 409 ResourceConflictException.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// 412 PreconditionFailedException for a stale `RevisionId`.
    pub fn stale_revision() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to \
             retrieve the latest Revision Id",
        )
    }

    /// 413 RequestTooLargeException.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }

    /// 500 ServiceException.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            message,
        )
    }

    /// The JSON body AWS sends (both `Message` and `message`, which different SDKs read).
    pub fn body(&self) -> String {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = serde_json::json!({ "Type": kind, "Message": self.message, "message": self.message, "__type": self.code });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        body.to_string()
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.0)
    }
}

impl From<CodeError> for ApiError {
    fn from(e: CodeError) -> Self {
        match e {
            CodeError::Io(io) => {
                tracing::error!("code storage failed: {io}");
                Self::internal("Lambent could not store the code package")
            }
            CodeError::ZipTooLarge => Self::too_large(e.to_string()),
            other => Self::invalid(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(message) => Self::not_found(message),
            StoreError::AlreadyExists(message) | StoreError::Conflict(message) => {
                Self::conflict(message)
            }
            StoreError::RevisionMismatch(_) => Self::stale_revision(),
            StoreError::Invalid(message) => Self::invalid(message),
            other => {
                tracing::error!("store failed: {other}");
                Self::internal("Lambent's store failed; see the server log")
            }
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::NotFound(m) => Self::not_found(m),
            InvokeError::InvalidParameter(m) => Self::invalid(m),
            InvokeError::InvalidRequestContent(m) => Self::bad_content(m),
            InvokeError::TooLarge(m) => Self::too_large(m),
            InvokeError::Throttled(reason) => Self {
                reason: Some(reason),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                )
            },
            InvokeError::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", m)
            }
            InvokeError::Internal(m) => {
                tracing::error!("invocation failed: {m}");
                Self::internal(m)
            }
        }
    }
}
