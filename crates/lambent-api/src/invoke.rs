//! Invoke (`POST …/invocations`) and the legacy InvokeAsync.

use base64::Engine;
use hyper::StatusCode;
use hyper::header::HeaderName;

use lambent_invoke::{InvocationType, InvokeOutput, InvokeRequest};

use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Longest decoded client context Lambda passes on.
const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;

fn invocation_type(req: &ApiRequest) -> Result<InvocationType, ApiError> {
    match req.header("x-amz-invocation-type") {
        None | Some("RequestResponse") => Ok(InvocationType::RequestResponse),
        Some("Event") => Ok(InvocationType::Event),
        Some("DryRun") => Ok(InvocationType::DryRun),
        Some(other) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
             Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
        ))),
    }
}

/// The decoded `X-Amz-Client-Context`, checked as Lambda checks it.
pub(crate) fn client_context(req: &ApiRequest) -> Result<Option<String>, ApiError> {
    let Some(encoded) = req.header("x-amz-client-context") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| {
            ApiError::invalid("Client context must be a valid Base64-encoded JSON object.")
        })?;
    if decoded.len() > MAX_CLIENT_CONTEXT_BYTES {
        return Err(ApiError::invalid(format!(
            "Client context must be no larger than {MAX_CLIENT_CONTEXT_BYTES} bytes when decoded."
        )));
    }
    if serde_json::from_slice::<serde_json::Value>(&decoded).is_err() {
        return Err(ApiError::invalid(
            "Client context must be a valid Base64-encoded JSON object.",
        ));
    }
    Ok(Some(String::from_utf8_lossy(&decoded).into_owned()))
}

/// The `X-Amz-Log-Type` header of an invoke: true for `Tail`.
pub(crate) fn log_tail(req: &ApiRequest) -> Result<bool, ApiError> {
    match req.header("x-amz-log-type") {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: \
             Member must satisfy enum value set: [None, Tail]"
        ))),
    }
}

/// Invoke: POST /2015-03-31/functions/{Fn}/invocations.
pub(crate) async fn invoke(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let invocation_type = invocation_type(req)?;
    let log_tail = log_tail(req)?;
    let request = InvokeRequest {
        function: function_ref(req, label)?,
        invocation_type,
        log_tail: log_tail && invocation_type == InvocationType::RequestResponse,
        payload: req.body.clone(),
        client_context: client_context(req)?,
        trace_id: req.header("x-amzn-trace-id").map(str::to_string),
        request_id: req.request_id.clone(),
    };
    match state.invoker.invoke(request).await? {
        InvokeOutput::Completed {
            result,
            executed_version,
        } => {
            let mut headers = vec![(
                HeaderName::from_static("x-amz-executed-version"),
                executed_version,
            )];
            if result.function_error {
                headers.push((
                    HeaderName::from_static("x-amz-function-error"),
                    "Unhandled".into(),
                ));
            }
            if let Some(tail) = result.log_tail {
                headers.push((
                    HeaderName::from_static("x-amz-log-result"),
                    base64::engine::general_purpose::STANDARD.encode(tail),
                ));
            }
            Ok(ApiReply {
                stream: None,
                status: StatusCode::OK,
                body: result.body,
                headers,
            })
        }
        InvokeOutput::Queued => Ok(ApiReply::empty(StatusCode::ACCEPTED)),
        InvokeOutput::DryRunOk => Ok(ApiReply::empty(StatusCode::NO_CONTENT)),
    }
}

/// InvokeAsync (deprecated): POST /2014-11-13/functions/{Fn}/invoke-async/ → 202 `{"Status":202}`.
pub(crate) async fn invoke_async(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<ApiReply, ApiError> {
    let request = InvokeRequest {
        function: function_ref(req, label)?,
        invocation_type: InvocationType::Event,
        log_tail: false,
        payload: req.body.clone(),
        client_context: None,
        trace_id: req.header("x-amzn-trace-id").map(str::to_string),
        request_id: req.request_id.clone(),
    };
    state.invoker.invoke(request).await?;
    Ok(ApiReply::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "Status": 202 }),
    ))
}
