//! The Lambda Runtime API (2018-06-01) served to one environment on its own listener.
//!
//! `/next` hands out the next [`Delivery`]; `/response` and `/error` answer the one in
//! flight; `/init/error` marks the environment as failed. Every `/next` response carries
//! `Content-Type` and `Lambda-Runtime-Deadline-Ms`, which awslambdaric and the Rust runtime
//! depend on.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use lambent_types::limits::SYNC_PAYLOAD_BYTES;

use crate::Invocation;

/// The largest response a runtime may post (AWS allows a little over 6 MiB).
pub const MAX_RESPONSE_BYTES: usize = SYNC_PAYLOAD_BYTES + 100;

/// An invocation on its way to the runtime.
pub struct Delivery {
    /// The invocation itself.
    pub invocation: Invocation,
    /// The function timeout; the deadline is counted from hand-out.
    pub timeout: Duration,
    /// Told when the runtime has taken the invocation.
    pub delivered: oneshot::Sender<Instant>,
    /// Receives the runtime's answer.
    pub reply: oneshot::Sender<Reply>,
}

/// What a runtime answered for an invocation.
#[derive(Debug)]
pub enum Reply {
    /// `/response`: the result body.
    Response(Bytes),
    /// `/error`: the error document and the optional error-type header.
    Error(Bytes, Option<String>),
    /// `/response` with a body over the limit; carries the size seen.
    TooLarge(usize),
}

/// Where an environment is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvStatus {
    /// Started; the runtime has not yet asked for work.
    Initializing,
    /// The runtime has called `/next` at least once.
    Ready,
    /// The runtime reported `/init/error` with this body.
    InitFailed(Bytes),
    /// The process exited (`exit status 1`, `signal: killed`).
    Exited(String),
    /// The kernel killed the environment for exceeding its memory limit.
    OutOfMemory,
}

impl EnvStatus {
    /// True once the environment can never serve again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::InitFailed(_) | Self::Exited(_) | Self::OutOfMemory
        )
    }
}

struct InFlight {
    request_id: String,
    reply: oneshot::Sender<Reply>,
}

/// State shared between the Runtime API server and the environment.
pub struct RuntimeApiState {
    deliveries: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    in_flight: Mutex<Option<InFlight>>,
    /// The request id answered last, to tell a second answer from an unknown id.
    answered: Mutex<Option<String>>,
    status: watch::Sender<EnvStatus>,
    /// True while the runtime waits in `/next` (the environment is free for work).
    parked: watch::Sender<bool>,
}

impl RuntimeApiState {
    /// Creates the state; the environment keeps the sender of deliveries and a status receiver.
    pub fn new(
        deliveries: mpsc::Receiver<Delivery>,
        status: watch::Sender<EnvStatus>,
        parked: watch::Sender<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            deliveries: tokio::sync::Mutex::new(deliveries),
            in_flight: Mutex::new(None),
            answered: Mutex::new(None),
            status,
            parked,
        })
    }

    /// Takes the answer channel of the invocation in flight if `request_id` names it; else
    /// tells why not.
    fn take_in_flight(&self, request_id: &str) -> Result<oneshot::Sender<Reply>, Refusal> {
        let taken = self.in_flight.lock().ok().and_then(|mut slot| {
            if slot.as_ref().is_some_and(|f| f.request_id == request_id) {
                slot.take().map(|f| f.reply)
            } else {
                None
            }
        });
        if let Some(reply) = taken {
            if let Ok(mut answered) = self.answered.lock() {
                *answered = Some(request_id.to_string());
            }
            return Ok(reply);
        }
        let already = self
            .answered
            .lock()
            .is_ok_and(|answered| answered.as_deref() == Some(request_id));
        Err(if already {
            Refusal::AlreadyAnswered
        } else {
            Refusal::UnknownRequest
        })
    }
}

/// Why a runtime's answer was not accepted.
enum Refusal {
    /// The invocation was answered before (403 InvalidStateTransition).
    AlreadyAnswered,
    /// No such invocation is in flight (400 InvalidRequestID).
    UnknownRequest,
}

impl Refusal {
    fn response(&self, request_id: &str) -> ApiResponse {
        match self {
            Self::AlreadyAnswered => error_response(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                &format!(
                    "Invocation {request_id} was already answered; an invocation takes one response"
                ),
            ),
            Self::UnknownRequest => error_response(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                &format!("Invalid request ID: {request_id} is not the invocation in progress"),
            ),
        }
    }
}

/// Serves the Runtime API on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, state: Arc<RuntimeApiState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("runtime API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

type ApiResponse = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> ApiResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> ApiResponse {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    json_response(status, body.to_string())
}

fn accepted() -> ApiResponse {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<RuntimeApiState>,
) -> Result<ApiResponse, Infallible> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let response = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["2018-06-01", "runtime", "invocation", "next"]) => next(&state).await,
        (&Method::POST, ["2018-06-01", "runtime", "invocation", id, "response"]) => {
            let id = id.to_string();
            response(req, &state, &id).await
        }
        (&Method::POST, ["2018-06-01", "runtime", "invocation", id, "error"]) => {
            let id = id.to_string();
            error(req, &state, &id).await
        }
        (&Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            init_error(req, &state).await
        }
        (&Method::GET, ["2018-06-01", "ping"]) => json_response(StatusCode::OK, "pong"),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "Unknown Runtime API path",
        ),
    };
    Ok(response)
}

async fn next(state: &RuntimeApiState) -> ApiResponse {
    state.status.send_if_modified(|status| {
        if *status == EnvStatus::Initializing {
            *status = EnvStatus::Ready;
            true
        } else {
            false
        }
    });
    let delivery = {
        let mut deliveries = state.deliveries.lock().await;
        state.parked.send_replace(true);
        let delivery = deliveries.recv().await;
        state.parked.send_replace(false);
        delivery
    };
    let Some(delivery) = delivery else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ContainerError",
            "The environment is shutting down; the runtime should exit",
        );
    };
    let now = Instant::now();
    let deadline_ms = lambent_types::time::epoch_millis(SystemTime::now() + delivery.timeout);
    let invocation = delivery.invocation;
    if let Ok(mut slot) = state.in_flight.lock() {
        *slot = Some(InFlight {
            request_id: invocation.request_id.clone(),
            reply: delivery.reply,
        });
    }
    let _ = delivery.delivered.send(now);
    let mut response = json_response(StatusCode::OK, invocation.payload);
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = hyper::header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &invocation.request_id);
    set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        &invocation.invoked_function_arn,
    );
    set("lambda-runtime-trace-id", &invocation.trace_id);
    if let Some(context) = &invocation.client_context {
        set("lambda-runtime-client-context", context);
    }
    if let Some(identity) = &invocation.cognito_identity {
        set("lambda-runtime-cognito-identity", identity);
    }
    response
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn content_length(req: &Request<Incoming>) -> Option<usize> {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn response(
    req: Request<Incoming>,
    state: &RuntimeApiState,
    request_id: &str,
) -> ApiResponse {
    let declared = content_length(&req);
    let body = read_body(req, MAX_RESPONSE_BYTES).await;
    let reply = match state.take_in_flight(request_id) {
        Ok(reply) => reply,
        Err(refusal) => return refusal.response(request_id),
    };
    match body {
        Ok(body) => {
            let _ = reply.send(Reply::Response(body));
            accepted()
        }
        Err(BodyError::TooLarge) => {
            let _ = reply.send(Reply::TooLarge(declared.unwrap_or(MAX_RESPONSE_BYTES + 1)));
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
            )
        }
        Err(BodyError::Broken) => {
            let _ = reply.send(Reply::Error(
                Bytes::from_static(
                    br#"{"errorType":"Runtime.ResponseBodyError","errorMessage":"The runtime's response body could not be read"}"#,
                ),
                None,
            ));
            error_response(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Response body could not be read",
            )
        }
    }
}

fn error_type_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn error(req: Request<Incoming>, state: &RuntimeApiState, request_id: &str) -> ApiResponse {
    let error_type = error_type_header(&req);
    let body = read_body(req, MAX_RESPONSE_BYTES).await.unwrap_or_default();
    let reply = match state.take_in_flight(request_id) {
        Ok(reply) => reply,
        Err(refusal) => return refusal.response(request_id),
    };
    let _ = reply.send(Reply::Error(body, error_type));
    accepted()
}

async fn init_error(req: Request<Incoming>, state: &RuntimeApiState) -> ApiResponse {
    let error_type = error_type_header(&req);
    let body = read_body(req, MAX_RESPONSE_BYTES).await.unwrap_or_default();
    let document = error_document(&body, error_type.as_deref(), "Runtime.Unknown");
    state.status.send_replace(EnvStatus::InitFailed(document));
    accepted()
}

/// Returns a runtime's error body if it is a JSON error document, else builds one from the
/// error-type header and whatever text the runtime sent.
pub fn error_document(body: &[u8], error_type: Option<&str>, fallback_type: &str) -> Bytes {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
        && (map.contains_key("errorType") || map.contains_key("errorMessage"))
    {
        return Bytes::copy_from_slice(body);
    }
    let error_type = error_type
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("unhandled"))
        .unwrap_or(fallback_type);
    let document = serde_json::json!({
        "errorType": error_type,
        "errorMessage": String::from_utf8_lossy(body),
    });
    Bytes::from(document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_pass_through_or_are_built() {
        let doc = br#"{"errorMessage":"boom","errorType":"ValueError"}"#;
        assert_eq!(&error_document(doc, None, "X")[..], &doc[..]);
        let built: serde_json::Value =
            serde_json::from_slice(&error_document(b"plain text", Some("Runtime.Custom"), "X"))
                .unwrap();
        assert_eq!(built["errorType"], "Runtime.Custom");
        assert_eq!(built["errorMessage"], "plain text");
        let fallback: serde_json::Value =
            serde_json::from_slice(&error_document(b"", Some("unhandled"), "Runtime.Unknown"))
                .unwrap();
        assert_eq!(fallback["errorType"], "Runtime.Unknown");
    }
}
