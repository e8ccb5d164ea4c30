//! The Lambda Runtime API (2018-06-01) served to one environment on its own listener.
//!
//! `/next` hands out the next [`Delivery`]; `/response` and `/error` answer the one in
//! flight; `/init/error` marks the environment as failed. Every `/next` response carries
//! `Content-Type` and `Lambda-Runtime-Deadline-Ms`, which awslambdaric and the Rust runtime
//! depend on.
//!
//! The same listener serves the Extensions API (2020-01-01) and the Telemetry API
//! (2022-07-01, and the Logs API 2020-08-15): see [`crate::extensions`] and
//! [`crate::telemetry`]. Init ends when the runtime and every registered extension have
//! asked for work; the environment is parked (free) only while the runtime waits in `/next`
//! and every INVOKE subscriber waits in `/event/next`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use lambent_types::limits::SYNC_PAYLOAD_BYTES;

use crate::extensions::{Extensions, NextEvent, RegisterError, parse_events};
use crate::telemetry::{Telemetry, parse_subscription};
use crate::{ChunkSender, Invocation, MAX_STREAMED_RESPONSE_BYTES};

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
    /// Where a streamed response's chunks go, when the caller streams.
    stream: Option<ChunkSender>,
}

/// State shared between the Runtime API server and the environment.
pub struct RuntimeApiState {
    deliveries: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    in_flight: Mutex<Option<InFlight>>,
    /// The request id answered last, to tell a second answer from an unknown id.
    answered: Mutex<Option<String>>,
    status: watch::Sender<EnvStatus>,
    /// True while the runtime waits in `/next` and every INVOKE subscriber in
    /// `/event/next` (the environment is free for work).
    parked: watch::Sender<bool>,
    /// True while the runtime waits in `/next`.
    runtime_parked: AtomicBool,
    /// True once the runtime has called `/next`.
    runtime_ready: AtomicBool,
    /// The registered extensions.
    pub extensions: Extensions,
    /// The telemetry subscribers.
    pub telemetry: Arc<Telemetry>,
    info: FunctionInfo,
}

/// What `/extension/register` tells an extension about its function.
#[derive(Debug, Clone, Default)]
pub struct FunctionInfo {
    /// `functionName`.
    pub name: String,
    /// `functionVersion`.
    pub version: String,
    /// `handler`.
    pub handler: String,
}

impl RuntimeApiState {
    /// Creates the state; the environment keeps the sender of deliveries and a status receiver.
    pub fn new(
        deliveries: mpsc::Receiver<Delivery>,
        status: watch::Sender<EnvStatus>,
        parked: watch::Sender<bool>,
        info: FunctionInfo,
    ) -> Arc<Self> {
        Arc::new(Self {
            deliveries: tokio::sync::Mutex::new(deliveries),
            in_flight: Mutex::new(None),
            answered: Mutex::new(None),
            status,
            parked,
            runtime_parked: AtomicBool::new(false),
            runtime_ready: AtomicBool::new(false),
            extensions: Extensions::default(),
            telemetry: Arc::new(Telemetry::default()),
            info,
        })
    }

    /// Recomputes whether init is complete and whether the environment is parked.
    fn refresh(&self) {
        if self.runtime_ready.load(Ordering::Acquire) && self.extensions.all_initialized() {
            self.status.send_if_modified(|status| {
                if *status == EnvStatus::Initializing {
                    *status = EnvStatus::Ready;
                    true
                } else {
                    false
                }
            });
        }
        let parked = self.runtime_parked.load(Ordering::Acquire) && self.extensions.all_idle();
        self.parked.send_if_modified(|p| {
            let changed = *p != parked;
            *p = parked;
            changed
        });
    }

    /// Marks an extension as gone (its process exited) so it holds nothing up.
    pub fn extension_gone(&self, name: &str) {
        self.extensions.mark_gone(name);
        self.refresh();
    }

    /// Takes the answer channel of the invocation in flight if `request_id` names it; else
    /// tells why not.
    fn take_in_flight(&self, request_id: &str) -> Result<InFlight, Refusal> {
        let taken = self.in_flight.lock().ok().and_then(|mut slot| {
            if slot.as_ref().is_some_and(|f| f.request_id == request_id) {
                slot.take()
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
        (&Method::POST, ["2020-01-01", "extension", "register"]) => register(req, &state).await,
        (&Method::GET, ["2020-01-01", "extension", "event", "next"]) => {
            extension_next(&req, &state).await
        }
        (&Method::POST, ["2020-01-01", "extension", kind @ ("init" | "exit"), "error"]) => {
            let init = *kind == "init";
            extension_error(req, &state, init).await
        }
        (&Method::PUT, ["2022-07-01", "telemetry"] | ["2020-08-15", "logs"]) => {
            subscribe(req, &state).await
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "Unknown Runtime API path",
        ),
    };
    Ok(response)
}

async fn next(state: &RuntimeApiState) -> ApiResponse {
    state.runtime_ready.store(true, Ordering::Release);
    state.refresh();
    // Init ends when every registered extension has asked for its first event too.
    let mut status = state.status.subscribe();
    let _ = status.wait_for(|s| *s != EnvStatus::Initializing).await;
    let delivery = {
        let mut deliveries = state.deliveries.lock().await;
        state.runtime_parked.store(true, Ordering::Release);
        state.refresh();
        let delivery = deliveries.recv().await;
        state.runtime_parked.store(false, Ordering::Release);
        state.refresh();
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
            stream: invocation.stream.clone(),
        });
    }
    // The invoke phase starts (init, including extensions' subscriptions, is over).
    state.telemetry.platform(
        "platform.start",
        serde_json::json!({ "requestId": invocation.request_id, "version": state.info.version }),
    );
    state.extensions.broadcast(
        true,
        &serde_json::json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": invocation.invoked_function_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_id},
        }),
    );
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

/// The Content-Type a runtime gave its response (`application/octet-stream` without one).
fn response_content_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string()
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
    if let Some(mode) = req.headers().get(RESPONSE_MODE)
        && !mode.as_bytes().eq_ignore_ascii_case(b"buffered")
    {
        if mode.as_bytes().eq_ignore_ascii_case(b"streaming") {
            return streamed_response(req, state, request_id).await;
        }
        return invalid_response_mode(state, request_id, mode);
    }
    let declared = content_length(&req);
    let content_type = response_content_type(&req);
    let body = read_body(req, MAX_RESPONSE_BYTES).await;
    let reply = match state.take_in_flight(request_id) {
        Ok(flight) => {
            if let Some(stream) = &flight.stream {
                let _ = stream.content_type.set(content_type);
            }
            flight.reply
        }
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

/// The header with which a runtime streams its response (`streaming`).
const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";
/// The trailer (or header) naming a streamed response's mid-stream error.
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
/// The trailer carrying a streamed response's error document, base64.
const ERROR_BODY: &str = "lambda-runtime-function-error-body";

/// A `/response` with a Response-Mode other than `streaming`: 400, and the invocation fails
/// with `Runtime.InvalidResponseModeHeader`, as on AWS.
fn invalid_response_mode(
    state: &RuntimeApiState,
    request_id: &str,
    mode: &hyper::header::HeaderValue,
) -> ApiResponse {
    let mode = String::from_utf8_lossy(mode.as_bytes()).into_owned();
    let flight = match state.take_in_flight(request_id) {
        Ok(flight) => flight,
        Err(refusal) => return refusal.response(request_id),
    };
    let message = format!("Invalid Lambda-Runtime-Function-Response-Mode header value: {mode}");
    let document = serde_json::json!({
        "errorType": "Runtime.InvalidResponseModeHeader",
        "errorMessage": message,
    });
    let _ = flight
        .reply
        .send(Reply::Error(Bytes::from(document.to_string()), None));
    error_response(StatusCode::BAD_REQUEST, "InvalidRequest", &message)
}

/// How long a broken streamed body waits to see whether the runtime exited.
const EXIT_AFTER_BROKEN_STREAM: Duration = Duration::from_millis(250);

/// Where the chunks of a streamed response go.
enum Sink {
    /// To the streaming caller, as they arrive.
    Caller(tokio::sync::mpsc::Sender<Bytes>),
    /// Collected for a buffered caller (Invoke of a streaming function).
    Buffer(Vec<u8>),
    /// Nowhere: the streaming caller went away; the rest is read and dropped.
    Gone,
}

/// How reading a streamed response ended, short of its trailers.
enum StreamEnd {
    Complete,
    TooLarge,
    Broken,
}

/// `/response` in streaming mode: a chunked body whose chunks are forwarded to the caller as
/// they arrive, then optional trailers with a mid-stream error. Limited to 20 MiB for a
/// streaming caller; a buffered caller gets the whole body within Invoke's limit.
async fn streamed_response(
    req: Request<Incoming>,
    state: &RuntimeApiState,
    request_id: &str,
) -> ApiResponse {
    let flight = match state.take_in_flight(request_id) {
        Ok(flight) => flight,
        Err(refusal) => return refusal.response(request_id),
    };
    let (limit, mut sink) = match flight.stream {
        Some(sender) => {
            let _ = sender.content_type.set(response_content_type(&req));
            (MAX_STREAMED_RESPONSE_BYTES, Sink::Caller(sender.chunks))
        }
        None => (MAX_RESPONSE_BYTES, Sink::Buffer(Vec::new())),
    };
    tracing::debug!(request_id, "runtime streams its response");
    let mut body = req.into_body();
    let mut total = 0usize;
    let mut trailers = None;
    let mut body_error = None;
    let end = loop {
        let frame = match body.frame().await {
            None => break StreamEnd::Complete,
            Some(Err(e)) => {
                tracing::debug!(request_id, "streamed response broken: {e}");
                break StreamEnd::Broken;
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(fields) = frame.into_trailers() {
                    trailers = Some(fields);
                }
                continue;
            }
        };
        if let Some(found) = error_lines_in_body(&data) {
            body_error = Some(found);
            continue;
        }
        total += data.len();
        if total > limit {
            break StreamEnd::TooLarge;
        }
        if data.is_empty() {
            continue;
        }
        match &mut sink {
            Sink::Caller(sender) => {
                if sender.send(data).await.is_err() {
                    tracing::debug!(request_id, "streaming caller went away");
                    sink = Sink::Gone;
                }
            }
            Sink::Buffer(buffer) => buffer.extend_from_slice(&data),
            Sink::Gone => {}
        }
    };
    match end {
        StreamEnd::TooLarge if matches!(sink, Sink::Buffer(_)) => {
            let _ = flight.reply.send(Reply::TooLarge(total));
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
            )
        }
        StreamEnd::TooLarge => {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_STREAMED_RESPONSE_BYTES} bytes)."
            );
            let document = serde_json::json!({
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": message,
            });
            let _ = flight
                .reply
                .send(Reply::Error(Bytes::from(document.to_string()), None));
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &message,
            )
        }
        StreamEnd::Broken => {
            // A runtime that crashed mid-stream cuts its body: let the invocation end with
            // the exit (Runtime.ExitError) rather than the broken body, as AWS reports it.
            let mut status = state.status.subscribe();
            let exited = tokio::time::timeout(
                EXIT_AFTER_BROKEN_STREAM,
                status.wait_for(EnvStatus::is_terminal),
            )
            .await;
            if matches!(exited, Ok(Ok(_))) {
                drop(flight.reply);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "Response body could not be read",
                );
            }
            let _ = flight.reply.send(Reply::Error(
                Bytes::from_static(
                    br#"{"errorType":"Runtime.ResponseBodyError","errorMessage":"The runtime's streamed response body could not be read"}"#,
                ),
                None,
            ));
            error_response(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Response body could not be read",
            )
        }
        StreamEnd::Complete => {
            let error_type = trailers.as_ref().and_then(|fields| {
                fields
                    .get(ERROR_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            });
            let found = match error_type {
                Some(error_type) => {
                    let encoded = trailers
                        .as_ref()
                        .and_then(|fields| fields.get(ERROR_BODY))
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    Some((error_type, encoded))
                }
                None => body_error,
            };
            let reply = match found {
                Some((error_type, encoded)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim_ascii())
                        .unwrap_or(encoded);
                    tracing::debug!(request_id, %error_type, "streamed response ended with an error");
                    let document = error_document(&decoded, Some(&error_type), &error_type);
                    Reply::Error(document, Some(error_type))
                }
                None => match sink {
                    Sink::Buffer(buffer) => Reply::Response(Bytes::from(buffer)),
                    Sink::Caller(_) | Sink::Gone => Reply::Response(Bytes::new()),
                },
            };
            let _ = flight.reply.send(reply);
            accepted()
        }
    }
}

/// The mid-stream error some runtime clients (Rust's `lambda_runtime`, Kotlin's) write as a
/// last body chunk instead of trailers: `Lambda-Runtime-Function-Error-Type: <type>\r\n
/// Lambda-Runtime-Function-Error-Body: <base64>\r\n`. Returns the type and the encoded body.
fn error_lines_in_body(data: &[u8]) -> Option<(String, Vec<u8>)> {
    const TYPE_PREFIX: &[u8] = b"Lambda-Runtime-Function-Error-Type: ";
    const BODY_PREFIX: &[u8] = b"Lambda-Runtime-Function-Error-Body: ";
    if !data.starts_with(TYPE_PREFIX) || data.len() > 64 * 1024 {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut error_type = None;
    let mut body = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some(value) = line.strip_prefix("Lambda-Runtime-Function-Error-Type: ") {
            error_type = Some(value.trim().to_string());
        } else if let Some(value) = line.as_bytes().strip_prefix(BODY_PREFIX) {
            body = value.trim_ascii().to_vec();
        } else {
            return None;
        }
    }
    error_type.filter(|t| !t.is_empty()).map(|t| (t, body))
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
        Ok(flight) => flight.reply,
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

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The registered extension a request names, or the 403 to answer.
fn extension_id(
    req: &Request<Incoming>,
    state: &RuntimeApiState,
) -> Result<String, Box<ApiResponse>> {
    let Some(id) = header(req, "lambda-extension-identifier") else {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "Extension.MissingExtensionIdentifier",
            "Missing Lambda-Extension-Identifier header",
        )));
    };
    if state.extensions.name_of(id).is_none() {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "Extension.UnknownExtensionIdentifier",
            &format!("Unknown extension identifier {id}"),
        )));
    }
    Ok(id.to_string())
}

async fn register(req: Request<Incoming>, state: &RuntimeApiState) -> ApiResponse {
    let Some(name) = header(&req, "lambda-extension-name").map(str::to_string) else {
        return error_response(
            StatusCode::FORBIDDEN,
            "Extension.InvalidExtensionName",
            "Missing Lambda-Extension-Name header",
        );
    };
    let body = read_body(req, 64 * 1024).await.unwrap_or_default();
    if *state.status.borrow() != EnvStatus::Initializing {
        return error_response(
            StatusCode::FORBIDDEN,
            "Extension.RegistrationClosed",
            "Extensions can register only during the environment's init",
        );
    }
    let (invoke, shutdown) = match parse_events(&body) {
        Ok(events) => events,
        Err(refusal) => return register_refusal(refusal),
    };
    match state.extensions.register(&name, invoke, shutdown) {
        Ok(id) => {
            let body = serde_json::json!({
                "functionName": state.info.name,
                "functionVersion": state.info.version,
                "handler": state.info.handler,
            });
            let mut response = json_response(StatusCode::OK, body.to_string());
            if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
                response
                    .headers_mut()
                    .insert("lambda-extension-identifier", value);
            }
            response
        }
        Err(refusal) => register_refusal(refusal),
    }
}

fn register_refusal(refusal: RegisterError) -> ApiResponse {
    match refusal {
        RegisterError::TooMany => error_response(
            StatusCode::FORBIDDEN,
            "Extension.TooManyExtensions",
            &format!(
                "Too many extensions: at most {} may register",
                crate::extensions::MAX_EXTENSIONS
            ),
        ),
        RegisterError::BadEvents(message) => {
            error_response(StatusCode::BAD_REQUEST, "InvalidRequest", &message)
        }
    }
}

/// Clears an extension's waiting mark when its `/event/next` ends, however it ends.
struct LeaveNext<'a>(&'a RuntimeApiState, &'a str);

impl Drop for LeaveNext<'_> {
    fn drop(&mut self) {
        self.0.extensions.left_next(self.1);
        self.0.refresh();
    }
}

async fn extension_next(req: &Request<Incoming>, state: &RuntimeApiState) -> ApiResponse {
    let id = match extension_id(req, state) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let _leave = LeaveNext(state, &id);
    loop {
        let notify = match state.extensions.next(&id) {
            NextEvent::Event(event) => {
                let mut response = json_response(StatusCode::OK, event.to_string());
                if let Ok(value) =
                    hyper::header::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                {
                    response
                        .headers_mut()
                        .insert("lambda-extension-event-identifier", value);
                }
                return response;
            }
            NextEvent::Wait(notify) => notify,
            NextEvent::Unknown => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "Extension.UnknownExtensionIdentifier",
                    &format!("Unknown extension identifier {id}"),
                );
            }
        };
        state.refresh();
        notify.notified().await;
    }
}

async fn extension_error(
    req: Request<Incoming>,
    state: &RuntimeApiState,
    init: bool,
) -> ApiResponse {
    let id = match extension_id(&req, state) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let error_type = header(&req, "lambda-extension-function-error-type").map(str::to_string);
    let body = read_body(req, MAX_RESPONSE_BYTES).await.unwrap_or_default();
    let name = state.extensions.name_of(&id).unwrap_or_default();
    let kind = error_type.as_deref().unwrap_or("Extension.Unknown");
    if init {
        let document = error_document(&body, error_type.as_deref(), "Extension.Unknown");
        state.status.send_if_modified(|status| {
            if status.is_terminal() {
                false
            } else {
                *status = EnvStatus::InitFailed(document);
                true
            }
        });
    } else {
        let how = format!("extension {name} exited with error {kind}");
        state.status.send_if_modified(|status| {
            if status.is_terminal() {
                false
            } else {
                *status = EnvStatus::Exited(how);
                true
            }
        });
    }
    state.extension_gone(&id);
    accepted()
}

async fn subscribe(req: Request<Incoming>, state: &RuntimeApiState) -> ApiResponse {
    let id = match extension_id(&req, state) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let body = read_body(req, 64 * 1024).await.unwrap_or_default();
    match parse_subscription(&body) {
        Ok(subscription) => {
            state.telemetry.subscribe(&id, subscription);
            json_response(StatusCode::OK, "OK")
        }
        Err(message) => error_response(StatusCode::BAD_REQUEST, "ValidationError", &message),
    }
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
    fn error_lines_written_as_body_data_are_recognised() {
        let chunk = b"Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: Ym9vbQ==\r\n";
        let (error_type, body) = error_lines_in_body(chunk).unwrap();
        assert_eq!(error_type, "Runtime.StreamError");
        assert_eq!(body, b"Ym9vbQ==");
        assert!(
            error_lines_in_body(b"Lambda-Runtime-Function-Error-Type: X\r\nother text").is_none()
        );
        assert!(error_lines_in_body(b"ordinary data").is_none());
    }

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
