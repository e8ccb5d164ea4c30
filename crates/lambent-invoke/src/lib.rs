//! The Invoker: the one way every caller (API, async queue, later gateways and event
//! sources) runs a function. It resolves the function and qualifier in the store, checks
//! the payload, and hands the invocation to the worker; `Event` invocations are queued and
//! retried as Lambda does.
//!
//! The async queue of this version lives in memory: events accepted but not yet run are
//! lost if the server stops. A durable queue replaces it later.

pub mod metering;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use lambent_store::{CodeStore, Store, StoreError, kinds};
use lambent_types::names::ArnContext;
use lambent_types::{FunctionRef, Qualifier, limits};
use lambent_worker::{Invocation, InvocationResult, Worker, WorkerError};

pub use metering::Metering;

/// How the caller wants the function run (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    /// Synchronous: wait for the result.
    RequestResponse,
    /// Asynchronous: queue and answer 202.
    Event,
    /// Check that the call would be allowed; run nothing.
    DryRun,
}

/// A request to invoke a function.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The function and qualifier as the caller named them.
    pub function: FunctionRef,
    /// Sync, async or dry run.
    pub invocation_type: InvocationType,
    /// Whether to return the tail of the log.
    pub log_tail: bool,
    /// The event.
    pub payload: Bytes,
    /// Decoded client context JSON.
    pub client_context: Option<String>,
    /// Incoming `X-Amzn-Trace-Id`, if any.
    pub trace_id: Option<String>,
    /// The request id (also the API's `x-amzn-RequestId`).
    pub request_id: String,
}

/// The result of an accepted invocation.
#[derive(Debug)]
pub enum InvokeOutput {
    /// A synchronous invocation ran.
    Completed {
        /// What the function returned or how it failed.
        result: InvocationResult,
        /// The version that ran.
        executed_version: String,
    },
    /// An asynchronous invocation was queued.
    Queued,
    /// A dry run found the call valid.
    DryRunOk,
}

/// Why an invocation was refused before it ran.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No such function or qualifier.
    #[error("{0}")]
    NotFound(String),
    /// A parameter broke a rule.
    #[error("{0}")]
    InvalidParameter(String),
    /// The payload is not JSON.
    #[error("{0}")]
    InvalidRequestContent(String),
    /// The payload is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A concurrency limit is reached; carries Lambda's `Reason`.
    #[error("Rate Exceeded.")]
    Throttled(&'static str),
    /// The server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The store or the platform failed.
    #[error("{0}")]
    Internal(String),
}

/// Retry timing of asynchronous invocations.
#[derive(Debug, Clone)]
pub struct AsyncSettings {
    /// Retries after a function error (Lambda's default is 2).
    pub max_retries: u32,
    /// Delay before the first retry; each further retry waits twice as long (Lambda: ~1 min, ~2 min).
    pub retry_delay: Duration,
    /// How long an event may wait through throttles before it is dropped (Lambda: 6 h).
    pub max_event_age: Duration,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            max_retries: 2,
            retry_delay: Duration::from_secs(60),
            max_event_age: Duration::from_secs(6 * 3600),
        }
    }
}

struct QueuedEvent {
    request: InvokeRequest,
    accepted: Instant,
}

/// Runs functions for every caller.
pub struct Invoker {
    store: Arc<dyn Store>,
    code: CodeStore,
    worker: Arc<Worker>,
    arns: ArnContext,
    queue: mpsc::UnboundedSender<QueuedEvent>,
    reserved_in_flight: Mutex<HashMap<String, usize>>,
    metering: Arc<Metering>,
}

impl Invoker {
    /// Creates the invoker and starts its async dispatcher.
    pub fn new(
        store: Arc<dyn Store>,
        code: CodeStore,
        worker: Arc<Worker>,
        arns: ArnContext,
        async_settings: AsyncSettings,
    ) -> Arc<Self> {
        let (queue, events) = mpsc::unbounded_channel();
        let invoker = Arc::new(Self {
            store,
            code,
            worker,
            arns,
            queue,
            reserved_in_flight: Mutex::new(HashMap::new()),
            metering: Metering::new(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&invoker), events, async_settings));
        invoker
    }

    /// Whether a function's `lambent:network` tag value is allowed on this server.
    pub fn check_network_setting(&self, setting: Option<&str>) -> Result<(), String> {
        self.worker.network_mode(setting).map(|_| ())
    }

    /// The usage counters.
    pub fn metering(&self) -> &Arc<Metering> {
        &self.metering
    }

    /// Every metric in the Prometheus text exposition format (0.0.4).
    pub fn render_metrics(&self) -> String {
        self.metering.render_prometheus(metering::Gauges {
            concurrent_executions: self.worker.in_flight(),
            environments: self.worker.environment_count(),
        })
    }

    /// Validates and runs (or queues) an invocation.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeOutput, InvokeError> {
        let limit = match request.invocation_type {
            InvocationType::Event => limits::ASYNC_PAYLOAD_BYTES,
            _ => limits::SYNC_PAYLOAD_BYTES,
        };
        if request.payload.len() > limit {
            return Err(InvokeError::TooLarge(format!(
                "Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )));
        }
        if !request.payload.is_empty()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&request.payload).is_err()
        {
            return Err(InvokeError::InvalidRequestContent(
                "Could not parse request body into json: Could not parse payload into json: \
                 Unexpected character: was expecting a valid JSON value"
                    .into(),
            ));
        }
        let config = self.resolve(&request.function)?;
        match request.invocation_type {
            InvocationType::DryRun => Ok(InvokeOutput::DryRunOk),
            InvocationType::Event => {
                self.queue
                    .send(QueuedEvent {
                        request,
                        accepted: Instant::now(),
                    })
                    .map_err(|_| InvokeError::Unavailable("Lambent is shutting down".into()))?;
                Ok(InvokeOutput::Queued)
            }
            InvocationType::RequestResponse => {
                let executed_version = config.version.clone();
                let result = self.run(&config, &request).await?;
                Ok(InvokeOutput::Completed {
                    result,
                    executed_version,
                })
            }
        }
    }

    /// The unpacked code tree of a configuration and those of its layers, in order.
    fn code_roots(
        &self,
        config: &lambent_types::FunctionConfig,
    ) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
        let layers = config
            .layers
            .iter()
            .map(|layer| self.code.task_root(&layer.code_sha256_hex))
            .collect();
        (self.code.task_root(&config.code_sha256_hex), layers)
    }

    /// The published version a provisioned-concurrency qualifier (a version or an alias's
    /// main version) stands for.
    fn provisioned_config(
        &self,
        function: &FunctionRef,
    ) -> Result<lambent_types::FunctionConfig, InvokeError> {
        let version = match function.qualifier_or_latest() {
            Qualifier::Alias(alias) => self
                .store
                .get_document(kinds::ALIAS, &function.name, &alias)
                .map_err(|e| InvokeError::Internal(e.to_string()))?
                .and_then(|doc| doc["FunctionVersion"].as_str().map(str::to_string))
                .ok_or_else(|| InvokeError::NotFound(format!("Alias not found: {alias}")))?,
            other => other.to_string(),
        };
        self.store
            .get_function(&function.name, &version)
            .map_err(|e| InvokeError::NotFound(e.to_string()))
    }

    /// Brings a version's (or an alias's version's) initialized provisioned environments up
    /// to `count`; returns how many are ready.
    pub async fn provision(
        &self,
        function: &FunctionRef,
        count: usize,
    ) -> Result<usize, InvokeError> {
        let config = self.provisioned_config(function)?;
        let (task_root, layer_roots) = self.code_roots(&config);
        Ok(self
            .worker
            .provision(&config, &task_root, &layer_roots, count)
            .await)
    }

    /// How many provisioned environments of a version (or an alias's version) are ready now.
    pub fn provisioned_ready(&self, function: &FunctionRef) -> Result<usize, InvokeError> {
        let config = self.provisioned_config(function)?;
        Ok(self.worker.provisioned_ready(&config.name, &config.version))
    }

    /// Ends provisioned concurrency for a version (or an alias's version).
    pub fn unprovision(&self, function: &FunctionRef) -> Result<(), InvokeError> {
        let config = self.provisioned_config(function)?;
        self.worker.unprovision(&config.name, &config.version);
        Ok(())
    }

    /// Retires the environments of a function version (all versions with `None`) after its
    /// code or configuration changed or it was deleted.
    pub fn retire(&self, function: &str, version: Option<&str>) {
        self.worker.retire(function, version);
    }

    /// Finds the configuration to run: `$LATEST`, a version, or an alias's version (picked by
    /// the alias's routing weights).
    fn resolve(
        &self,
        function: &FunctionRef,
    ) -> Result<lambent_types::FunctionConfig, InvokeError> {
        let not_found = || {
            let arn = self
                .arns
                .arn_as_named(&function.name, function.qualifier.as_ref());
            InvokeError::NotFound(format!("Function not found: {arn}"))
        };
        let internal = |e: StoreError| InvokeError::Internal(e.to_string());
        let version = match function.qualifier_or_latest() {
            Qualifier::Alias(alias) => {
                let doc = self
                    .store
                    .get_document(kinds::ALIAS, &function.name, &alias)
                    .map_err(internal)?
                    .ok_or_else(not_found)?;
                route_alias(&doc, random_unit())
            }
            other => other.to_string(),
        };
        match self.store.get_function(&function.name, &version) {
            Ok(config) => Ok(config),
            Err(StoreError::NotFound(_)) => Err(not_found()),
            Err(other) => Err(internal(other)),
        }
    }

    /// Refuses an invocation when the function's reserved concurrency is used up; the
    /// returned guard holds one unit of it until dropped.
    fn reserve(&self, function: &str) -> Result<Option<ReservationGuard<'_>>, InvokeError> {
        let reserved = self
            .store
            .get_document(kinds::CONCURRENCY, function, "")
            .map_err(|e| InvokeError::Internal(e.to_string()))?
            .and_then(|doc| doc["ReservedConcurrentExecutions"].as_u64());
        let Some(limit) = reserved else {
            return Ok(None);
        };
        let mut running = self
            .reserved_in_flight
            .lock()
            .map_err(|_| InvokeError::Internal("concurrency table poisoned".into()))?;
        let count = running.entry(function.to_string()).or_default();
        if *count as u64 >= limit {
            return Err(InvokeError::Throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
            ));
        }
        *count += 1;
        Ok(Some(ReservationGuard {
            table: &self.reserved_in_flight,
            function: function.to_string(),
        }))
    }

    async fn run(
        &self,
        config: &lambent_types::FunctionConfig,
        request: &InvokeRequest,
    ) -> Result<InvocationResult, InvokeError> {
        let invoked_function_arn = self
            .arns
            .arn_as_named(&config.name, request.function.qualifier.as_ref());
        let invocation = Invocation {
            request_id: request.request_id.clone(),
            payload: if request.payload.is_empty() {
                Bytes::from_static(b"{}")
            } else {
                request.payload.clone()
            },
            invoked_function_arn,
            trace_id: request.trace_id.clone().unwrap_or_else(new_trace_id),
            client_context: request.client_context.clone(),
            cognito_identity: None,
            want_log_tail: request.log_tail,
        };
        let _reservation = match self.reserve(&config.name) {
            Err(e @ InvokeError::Throttled(_)) => {
                self.metering.record_throttle(&config.name);
                return Err(e);
            }
            other => other?,
        };
        let (task_root, layer_roots) = self.code_roots(config);
        match self
            .worker
            .invoke(config, &task_root, &layer_roots, &invocation)
            .await
        {
            Ok(result) => {
                self.metering
                    .record_invocation(&config.name, &config.version, &result);
                Ok(result)
            }
            Err(WorkerError::Throttled) => {
                self.metering.record_throttle(&config.name);
                Err(InvokeError::Throttled("ConcurrentInvocationLimitExceeded"))
            }
            Err(e @ WorkerError::ShuttingDown) => Err(InvokeError::Unavailable(e.to_string())),
            Err(e @ WorkerError::Platform(_)) => Err(InvokeError::Internal(e.to_string())),
        }
    }
}

/// Runs queued events, retrying as Lambda does, until the queue closes.
async fn dispatch(
    invoker: std::sync::Weak<Invoker>,
    mut events: mpsc::UnboundedReceiver<QueuedEvent>,
    settings: AsyncSettings,
) {
    while let Some(event) = events.recv().await {
        let Some(invoker) = invoker.upgrade() else {
            break;
        };
        let settings = settings.clone();
        tokio::spawn(async move { run_event(&invoker, event, &settings).await });
    }
}

async fn run_event(invoker: &Invoker, event: QueuedEvent, settings: &AsyncSettings) {
    let id = event.request.request_id.clone();
    let function = event.request.function.name.clone();
    let mut failures = 0u32;
    let mut throttle_backoff = Duration::from_secs(1);
    loop {
        let config = match invoker.resolve(&event.request.function) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(request_id = %id, %function, "async event dropped: {e}");
                return;
            }
        };
        match invoker.run(&config, &event.request).await {
            Ok(result) if !result.function_error => {
                tracing::debug!(request_id = %id, %function, "async invocation succeeded");
                return;
            }
            Ok(_) => {
                if failures >= settings.max_retries {
                    tracing::warn!(request_id = %id, %function, attempts = failures + 1, "async invocation failed; retries exhausted");
                    return;
                }
                let delay = settings.retry_delay * 2u32.pow(failures);
                failures += 1;
                tokio::time::sleep(delay).await;
            }
            Err(InvokeError::Unavailable(_)) => return,
            Err(e) => {
                if event.accepted.elapsed() + throttle_backoff > settings.max_event_age {
                    tracing::warn!(request_id = %id, %function, "async event dropped: maximum event age exceeded ({e})");
                    return;
                }
                tokio::time::sleep(throttle_backoff).await;
                throttle_backoff = (throttle_backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// Releases one unit of a function's reserved concurrency.
struct ReservationGuard<'a> {
    table: &'a Mutex<HashMap<String, usize>>,
    function: String,
}

impl Drop for ReservationGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.table.lock()
            && let Some(count) = running.get_mut(&self.function)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.function);
            }
        }
    }
}

/// Picks the version an alias routes to: its additional version with that version's weight
/// (`draw` is uniform in [0, 1)), else its main version.
fn route_alias(alias: &serde_json::Value, draw: f64) -> String {
    let main = alias["FunctionVersion"]
        .as_str()
        .unwrap_or("$LATEST")
        .to_string();
    let Some(weights) = alias["RoutingConfig"]["AdditionalVersionWeights"].as_object() else {
        return main;
    };
    let mut threshold = 0.0;
    for (version, weight) in weights {
        threshold += weight.as_f64().unwrap_or(0.0);
        if draw < threshold {
            return version.clone();
        }
    }
    main
}

/// A uniform random number in [0, 1), from the 48 leading random bits of a v4 UUID (the
/// bytes after them carry the fixed version and variant bits).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 80) as u64;
    bits as f64 / (1u64 << 48) as f64
}

/// A new X-Ray style trace header: `Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=0`.
pub fn new_trace_id() -> String {
    let epoch = lambent_types::time::epoch_millis(std::time::SystemTime::now()) / 1000;
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{epoch:08x}-{};Parent={};Sampled=0",
        &root[..24],
        &parent[..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_route_by_weight() {
        let alias = serde_json::json!({
            "FunctionVersion": "1",
            "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.3}},
        });
        assert_eq!(route_alias(&alias, 0.0), "2");
        assert_eq!(route_alias(&alias, 0.29), "2");
        assert_eq!(route_alias(&alias, 0.3), "1");
        assert_eq!(route_alias(&alias, 0.99), "1");
        assert_eq!(
            route_alias(&serde_json::json!({"FunctionVersion": "4"}), 0.1),
            "4"
        );
        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.3).count();
        assert!(
            (200..400).contains(&low),
            "uniform draws, got {low} below 0.3"
        );
    }
}
