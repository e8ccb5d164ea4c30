//! Lambent's worker: execution environments and their pools.
//!
//! An environment is one OS process tree running a function's runtime, with its own Runtime
//! API listener (so a connection identifies its environment, as a per-environment network
//! namespace will later). The worker keeps a pool of warm environments per function
//! version and revision, starts new ones when all are busy, reaps idle ones, and enforces
//! timeouts by killing the whole process group. It knows nothing about HTTP clients, auth or
//! brokers: callers hand it a [`FunctionConfig`](lambent_types::FunctionConfig), the code
//! directory and an [`Invocation`].

mod environment;
mod extensions;
mod launch;
mod logs;
mod pool;
mod runtime_api;
mod telemetry;

pub use launch::{LaunchError, RuntimeHosts};
pub use pool::{NETWORK_TAG, RoleCredentials, Worker, WorkerConfig};

use bytes::Bytes;

/// One request to run a function, as the worker needs it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request id, shown to the function and in logs.
    pub request_id: String,
    /// The event, JSON bytes.
    pub payload: Bytes,
    /// The ARN the caller used, including any qualifier.
    pub invoked_function_arn: String,
    /// X-Ray trace header value.
    pub trace_id: String,
    /// Decoded client context JSON, if the caller sent one.
    pub client_context: Option<String>,
    /// Cognito identity JSON, if any.
    pub cognito_identity: Option<String>,
    /// Whether the caller wants the tail of the invocation's log.
    pub want_log_tail: bool,
    /// Where the chunks of a streamed response go as the runtime sends them
    /// (InvokeWithResponseStream). `None` buffers a streamed response like any other.
    pub stream: Option<ChunkSender>,
}

/// The sending half of a streamed response: its chunks, and the Content-Type the runtime
/// gave the response, set before the first chunk is sent.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    /// The response's chunks, as the runtime sends them.
    pub chunks: tokio::sync::mpsc::Sender<Bytes>,
    /// The runtime's `Content-Type` for the response (streamed or buffered), set once the
    /// runtime starts answering and before any chunk goes out.
    pub content_type: std::sync::Arc<std::sync::OnceLock<String>>,
}

/// The most a streamed response may carry (20 MiB, as AWS allows).
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 20 * 1024 * 1024;

/// What came of an invocation that reached an environment (or failed to start one).
#[derive(Debug, Clone)]
pub struct InvocationResult {
    /// The response body: the function's result, or an error document.
    pub body: Bytes,
    /// True when the function (or the platform on its behalf) failed: `X-Amz-Function-Error: Unhandled`.
    pub function_error: bool,
    /// The last 4 KB of the invocation's log, when asked for.
    pub log_tail: Option<String>,
    /// True when this invocation started a new environment.
    pub cold_start: bool,
    /// Measurements of the invocation, as its REPORT line gives them.
    pub report: InvocationReport,
}

/// What a REPORT line says about one invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationReport {
    /// The invoke phase (from hand-out to the runtime until its answer).
    pub duration: std::time::Duration,
    /// Billed duration: the duration rounded up to the next millisecond.
    pub billed_ms: u64,
    /// The init phase, on a cold start.
    pub init_duration: Option<std::time::Duration>,
    /// Configured memory, MB.
    pub memory_size_mb: u32,
    /// Peak resident memory of the runtime process, MB.
    pub max_memory_used_mb: u64,
}

/// Why the worker could not run an invocation at all.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The concurrency limit is reached.
    #[error("Rate Exceeded.")]
    Throttled,
    /// The worker is shutting down and takes no new invocations.
    #[error("Lambent is shutting down; the invocation was not started")]
    ShuttingDown,
    /// The platform itself failed (e.g. no port for the Runtime API).
    #[error("failed to start an execution environment: {0}")]
    Platform(#[from] std::io::Error),
}
