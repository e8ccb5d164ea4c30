//! The Invoker: the one way every caller (API, async queue, later gateways and event
//! sources) runs a function. It resolves the function and qualifier in the store, checks
//! the payload, and hands the invocation to the worker; `Event` invocations are committed to
//! the store's durable queue and run by the dispatcher, retried and routed to
//! their destinations as Lambda does.

mod dispatch;
pub mod metering;
pub mod targets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lambent_store::queue::{ItemKind, ItemSummary, NewItem, QueueDepth};
use lambent_store::{CodeStore, Store, StoreError, kinds};
use lambent_types::names::ArnContext;
use lambent_types::{FunctionRef, Qualifier, limits};
use lambent_worker::{ChunkSender, Invocation, InvocationResult, Worker, WorkerError};

pub use dispatch::AsyncSettings;
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

/// How many chunks of a streamed response may wait for the caller to take them.
const STREAM_CHANNEL_CHUNKS: usize = 16;

/// A streaming invocation under way (InvokeWithResponseStream).
#[derive(Debug)]
pub struct StreamingInvocation {
    /// The version that runs.
    pub executed_version: String,
    /// The response's chunks as the function streams them. A function that answers
    /// buffered sends none: its body is in the outcome.
    pub chunks: tokio::sync::mpsc::Receiver<Bytes>,
    /// How the invocation ended (a streamed response's result has an empty body), or why it
    /// did not run (a throttle).
    pub outcome: tokio::sync::oneshot::Receiver<Result<InvocationResult, InvokeError>>,
    /// The Content-Type the runtime gave its response: set before the first chunk arrives
    /// (and before the outcome of a buffered answer); unset if the function never answered.
    pub content_type: Arc<std::sync::OnceLock<String>>,
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

/// Runs functions for every caller.
pub struct Invoker {
    store: Arc<dyn Store>,
    code: CodeStore,
    worker: Arc<Worker>,
    arns: ArnContext,
    dispatcher: Arc<dispatch::Dispatcher>,
    senders: targets::Senders,
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
        let invoker = Arc::new(Self {
            dispatcher: Arc::new(dispatch::Dispatcher::new(store.clone(), async_settings)),
            store,
            code,
            worker,
            arns,
            senders: targets::Senders::new(),
            reserved_in_flight: Mutex::new(HashMap::new()),
            metering: Metering::new(),
        });
        tokio::spawn(dispatch::run(Arc::downgrade(&invoker)));
        invoker
    }

    /// The server's region and account, as ARNs and events carry them.
    pub fn arns(&self) -> &ArnContext {
        &self.arns
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
        let mut out = self.metering.render_prometheus(metering::Gauges {
            concurrent_executions: self.worker.in_flight(),
            environments: self.worker.environment_count(),
        });
        self.dispatcher.render_metrics(&mut out);
        out
    }

    /// Pending async events and destination records per function.
    pub fn queue_depths(&self) -> Result<Vec<QueueDepth>, InvokeError> {
        self.store
            .queue_depths()
            .map_err(|e| InvokeError::Internal(e.to_string()))
    }

    /// The queued and failed async events (and records) of a function, oldest first.
    pub fn queued_events(
        &self,
        function: &str,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemSummary>, InvokeError> {
        self.store
            .list_items(function, state, limit)
            .map_err(|e| InvokeError::Internal(e.to_string()))
    }

    /// Checks a destination or dead-letter target when it is configured: its syntax, that a
    /// target function exists, that a named connection exists and is of the right kind.
    /// The error is the message for the caller.
    pub fn check_destination(&self, target: &str) -> Result<(), String> {
        match targets::parse_target(target).map_err(|e| e.to_string())? {
            targets::Target::Function { name, qualifier } => {
                let function = FunctionRef {
                    name,
                    qualifier: match qualifier {
                        Some(q) => Some(Qualifier::parse(&q).map_err(|e| e.to_string())?),
                        None => None,
                    },
                };
                self.resolve(&function)
                    .map(|_| ())
                    .map_err(|_| format!("The destination function {target} does not exist"))
            }
            other => match (other.connection(), other.connection_kind()) {
                (Some(name), Some(kind)) => self.connection_url(name, kind, target).map(|_| ()),
                _ => Ok(()),
            },
        }
    }

    /// The URL of named connection `name`, which must exist and be of `kind`; `user` (the
    /// ARN that names it) goes into the error message.
    pub fn connection_url(
        &self,
        name: &str,
        kind: targets::ConnectionKind,
        user: &str,
    ) -> Result<String, String> {
        let doc = self
            .store
            .get_document(kinds::CONNECTION, "", name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "The connection {name:?} named by {user} does not exist; create it with \
                     `lambent connection put {name} <url>`"
                )
            })?;
        let url = doc["Url"].as_str().unwrap_or_default();
        if targets::ConnectionKind::of_url(url) != Some(kind) {
            return Err(format!(
                "The connection {name:?} is not a {} connection",
                kind.as_str()
            ));
        }
        Ok(url.to_string())
    }

    /// Queues `record` (a JSON document) for durable delivery to destination `target` (any
    /// target [`Invoker::check_destination`] accepts) on behalf of `function`, as the async
    /// queue delivers its own destination records: retried with backoff for up to six hours.
    /// Event-source mappings send the records of discarded batches this way.
    pub fn send_record(
        &self,
        function: &str,
        target: &str,
        record: Vec<u8>,
        attributes: Vec<(String, String)>,
    ) -> Result<(), InvokeError> {
        let now = dispatch::now_ms();
        let item = match targets::parse_target(target)
            .map_err(|e| InvokeError::InvalidParameter(e.to_string()))?
        {
            targets::Target::Function { name, qualifier } => NewItem {
                kind: ItemKind::Invoke,
                lane: name.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                function: name,
                qualifier,
                payload: record,
                meta: serde_json::json!({"purpose": "OnFailure", "source_function": function}),
                accepted_ms: now,
                not_before_ms: now,
            },
            _ => NewItem {
                kind: ItemKind::Deliver,
                lane: target.to_string(),
                request_id: uuid::Uuid::new_v4().to_string(),
                function: function.to_string(),
                qualifier: None,
                payload: record,
                meta: serde_json::json!({
                    "attributes": attributes,
                    "purpose": "OnFailure",
                    "expires_ms": now.saturating_add(6 * 3600 * 1000),
                }),
                accepted_ms: now,
                not_before_ms: now,
            },
        };
        self.dispatcher
            .enqueue(&item)
            .map_err(|e| InvokeError::Internal(e.to_string()))
    }

    /// Validates and runs (or queues) an invocation.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeOutput, InvokeError> {
        self.check_payload(&request)?;
        let config = self.resolve(&request.function)?;
        match request.invocation_type {
            InvocationType::DryRun => Ok(InvokeOutput::DryRunOk),
            InvocationType::Event => self.enqueue_invocation(&config, &request),
            InvocationType::RequestResponse => {
                let executed_version = config.version.clone();
                let result = self.run(&config, &request, None).await?;
                Ok(InvokeOutput::Completed {
                    result,
                    executed_version,
                })
            }
        }
    }

    /// Validates a synchronous invocation and starts it with its response streamed
    /// (InvokeWithResponseStream): chunks arrive as the function sends them, then the outcome.
    /// A refusal found before the function runs (bad payload, unknown function) is returned
    /// at once; one found later (a throttle) is the outcome.
    pub fn invoke_streaming(
        self: &Arc<Self>,
        request: InvokeRequest,
    ) -> Result<StreamingInvocation, InvokeError> {
        self.check_payload(&request)?;
        let config = self.resolve(&request.function)?;
        let (chunk_tx, chunks) = tokio::sync::mpsc::channel(STREAM_CHANNEL_CHUNKS);
        let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
        let content_type = Arc::new(std::sync::OnceLock::new());
        let sender = ChunkSender {
            chunks: chunk_tx,
            content_type: content_type.clone(),
        };
        let executed_version = config.version.clone();
        let invoker = self.clone();
        tokio::spawn(async move {
            let result = invoker.run(&config, &request, Some(sender)).await;
            let _ = outcome_tx.send(result);
        });
        Ok(StreamingInvocation {
            executed_version,
            chunks,
            outcome,
            content_type,
        })
    }

    /// Checks an invocation's payload: its size for the invocation type, and that it is JSON.
    fn check_payload(&self, request: &InvokeRequest) -> Result<(), InvokeError> {
        let limit = match request.invocation_type {
            InvocationType::Event => self.dispatcher.settings().max_payload,
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
        Ok(())
    }

    /// Commits an asynchronous invocation to the durable queue.
    fn enqueue_invocation(
        &self,
        config: &lambent_types::FunctionConfig,
        request: &InvokeRequest,
    ) -> Result<InvokeOutput, InvokeError> {
        if self.dispatcher.stopped() {
            return Err(InvokeError::Unavailable("Lambent is shutting down".into()));
        }
        let now = dispatch::now_ms();
        let payload = if request.payload.is_empty() {
            b"{}".to_vec()
        } else {
            request.payload.to_vec()
        };
        let item = NewItem {
            kind: ItemKind::Invoke,
            lane: config.name.clone(),
            request_id: request.request_id.clone(),
            function: config.name.clone(),
            qualifier: request.function.qualifier.as_ref().map(ToString::to_string),
            payload,
            meta: serde_json::json!({
                "trace_id": request.trace_id.clone().unwrap_or_else(new_trace_id),
            }),
            accepted_ms: now,
            not_before_ms: now,
        };
        self.dispatcher
            .enqueue(&item)
            .map_err(|e| InvokeError::Internal(e.to_string()))?;
        Ok(InvokeOutput::Queued)
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
        stream: Option<ChunkSender>,
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
            stream,
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
