//! The supervisor of event-source mappings: one poller task per enabled mapping of a source
//! Lambent polls, started, restarted and stopped as the stored mappings change, each
//! reporting its health in the mapping's `StateTransitionReason` and `LastProcessingResult`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use bytes::Bytes;
use lambent_invoke::{InvocationType, InvokeError, InvokeOutput, InvokeRequest, Invoker};
use lambent_store::{Store, kinds};
use lambent_types::{FunctionRef, Qualifier};

use crate::jetstream;
use crate::rabbitmq;
use crate::source::{SourceSpec, is_lambent_arn, parse_source};

/// How often the stored mappings are compared with the running pollers.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// Members that pollers write themselves; a change to them does not restart a poller.
const STATUS_MEMBERS: [&str; 2] = ["StateTransitionReason", "LastProcessingResult"];

/// The event-source mappings being polled on this server.
pub struct EventSources {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    store: Arc<dyn Store>,
    invoker: Arc<Invoker>,
    running: Mutex<HashMap<String, Running>>,
    /// Mappings whose (unpollable) source was already reported, by fingerprint.
    reported: Mutex<HashMap<String, String>>,
    closing: watch::Sender<bool>,
}

/// A poller task and what it was started from.
struct Running {
    fingerprint: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EventSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSources").finish_non_exhaustive()
    }
}

impl EventSources {
    /// Starts supervising the stored mappings (within a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, invoker: Arc<Invoker>) -> Self {
        let (closing, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            invoker,
            running: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
            closing,
        });
        let supervisor = tokio::spawn(supervise(inner.clone()));
        Self {
            inner,
            supervisor: Mutex::new(Some(supervisor)),
        }
    }

    /// Stops every poller: each finishes (acknowledges or returns) the batch it is running,
    /// waiting at most `grace`; messages not yet acknowledged stay with their broker.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.send_replace(true);
        let supervisor = self.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        let running: Vec<Running> = self
            .inner
            .running
            .lock()
            .map(|mut running| running.drain().map(|(_, r)| r).collect())
            .unwrap_or_default();
        for poller in &running {
            poller.stop.send_replace(true);
        }
        let all = futures_util::future::join_all(running.into_iter().map(|r| r.task));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("event-source pollers did not stop within {grace:?}");
        }
    }
}

async fn supervise(inner: Arc<Inner>) {
    let mut closing = inner.closing.subscribe();
    loop {
        reconcile(&inner);
        tokio::select! {
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = closing.wait_for(|closing| *closing) => return,
        }
    }
}

/// The configuration a poller runs with, without the members pollers write.
fn fingerprint(doc: &Map<String, Value>) -> String {
    let mut config = doc.clone();
    for member in STATUS_MEMBERS {
        config.remove(member);
    }
    Value::Object(config).to_string()
}

fn reconcile(inner: &Arc<Inner>) {
    let docs = match inner
        .store
        .list_documents(kinds::EVENT_SOURCE_MAPPING, Some(""))
    {
        Ok(docs) => docs,
        Err(e) => {
            tracing::warn!("cannot read the event-source mappings: {e}");
            return;
        }
    };
    let mut wanted: HashMap<String, (String, Map<String, Value>)> = HashMap::new();
    for (_, uuid, doc) in docs {
        let Value::Object(doc) = doc else { continue };
        if doc.get("State").and_then(Value::as_str) != Some("Enabled") {
            continue;
        }
        wanted.insert(uuid, (fingerprint(&doc), doc));
    }
    let Ok(mut running) = inner.running.lock() else {
        return;
    };
    running.retain(|uuid, poller| {
        let keep = wanted
            .get(uuid)
            .is_some_and(|(fingerprint, _)| *fingerprint == poller.fingerprint)
            && !poller.task.is_finished();
        if !keep {
            poller.stop.send_replace(true);
            tracing::info!(uuid = %uuid, "event-source mapping poller stopping");
        }
        keep
    });
    let mut reported = inner.reported.lock().ok();
    for (uuid, (fingerprint, doc)) in wanted {
        if running.contains_key(&uuid) {
            continue;
        }
        let status = Status::new(inner.store.clone(), uuid.clone());
        let already = |reported: &Option<std::sync::MutexGuard<'_, HashMap<String, String>>>| {
            reported
                .as_ref()
                .and_then(|r| r.get(&uuid))
                .is_some_and(|f| *f == fingerprint)
        };
        match poller_for(inner, &uuid, &doc) {
            Ok(Some(spawn)) => {
                let (stop, stopped) = watch::channel(false);
                let task = tokio::spawn(spawn(stopped, status));
                let source = doc.get("EventSourceArn").and_then(Value::as_str);
                tracing::info!(uuid = %uuid, source = source.unwrap_or(""), "event-source mapping poller started");
                running.insert(
                    uuid,
                    Running {
                        fingerprint,
                        stop,
                        task,
                    },
                );
            }
            Ok(None) => {}
            Err(problem) => {
                if !already(&reported) {
                    tracing::warn!(uuid = %uuid, "event-source mapping not polled: {problem}");
                    status.problem(&problem, &problem);
                    if let Some(reported) = reported.as_mut() {
                        reported.insert(uuid, fingerprint);
                    }
                }
            }
        }
    }
}

/// A poller ready to run: given its stop signal and its status reporter.
type Spawn = Box<
    dyn FnOnce(
            watch::Receiver<bool>,
            Status,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// The poller of a mapping, `None` when its source is not one Lambent polls, or why it
/// cannot run.
fn poller_for(
    inner: &Arc<Inner>,
    uuid: &str,
    doc: &Map<String, Value>,
) -> Result<Option<Spawn>, String> {
    let arn = doc
        .get("EventSourceArn")
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = match parse_source(doc)? {
        Some(spec) => spec,
        None if is_lambent_arn(arn) || arn.is_empty() => return Ok(None),
        None => {
            return Err(format!(
                "Lambent does not poll {} sources; use a Lambent source ARN (docs/events.md)",
                arn.split(':').nth(2).unwrap_or("these")
            ));
        }
    };
    let url = inner
        .invoker
        .connection_url(spec.connection(), spec.connection_kind(), arn)?;
    let target = Target::of(uuid, doc)?;
    let invoker = inner.invoker.clone();
    match spec {
        SourceSpec::RabbitMq { queue, vhost, .. } => {
            let region = &invoker.arns().region;
            let settings = rabbitmq::Settings::of(doc, url, queue, vhost, false, region)?;
            Ok(Some(Box::new(move |stop, status| {
                Box::pin(rabbitmq::run(settings, target, invoker, status, stop))
            })))
        }
        SourceSpec::SqsQueue { queue, .. } => {
            let region = &invoker.arns().region;
            let settings = rabbitmq::Settings::of(doc, url, queue, None, true, region)?;
            Ok(Some(Box::new(move |stop, status| {
                Box::pin(rabbitmq::run(settings, target, invoker, status, stop))
            })))
        }
        SourceSpec::JetStream {
            stream,
            subject_filter,
            ..
        } => {
            let settings = jetstream::Settings::of(doc, url, stream, subject_filter)?;
            let store = inner.store.clone();
            Ok(Some(Box::new(move |stop, status| {
                Box::pin(jetstream::run(
                    settings, target, invoker, store, status, stop,
                ))
            })))
        }
        SourceSpec::Mqtt { topic_filter, .. } => {
            let settings = crate::mqtt::Settings::of(doc, &url, topic_filter)?;
            let store = inner.store.clone();
            Ok(Some(Box::new(move |stop, status| {
                Box::pin(crate::mqtt::run(
                    settings, target, invoker, store, status, stop,
                ))
            })))
        }
        SourceSpec::RedisStream { key, .. } => {
            let settings = crate::redis_stream::Settings::of(doc, &url, key)?;
            let store = inner.store.clone();
            Ok(Some(Box::new(move |stop, status| {
                Box::pin(crate::redis_stream::run(
                    settings, target, invoker, store, status, stop,
                ))
            })))
        }
    }
}

/// The function a mapping invokes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The mapping's UUID.
    pub uuid: String,
    /// The function and qualifier.
    pub function: FunctionRef,
    /// The mapping's `EventSourceArn`, as events carry it.
    pub source_arn: String,
}

impl Target {
    fn of(uuid: &str, doc: &Map<String, Value>) -> Result<Self, String> {
        let name = doc
            .get("FunctionName")
            .and_then(Value::as_str)
            .ok_or("the mapping names no function")?;
        let qualifier = match doc.get("Qualifier").and_then(Value::as_str) {
            Some(q) => Some(Qualifier::parse(q).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            uuid: uuid.to_string(),
            function: FunctionRef {
                name: name.to_string(),
                qualifier,
            },
            source_arn: doc
                .get("EventSourceArn")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// Writes a poller's health into its mapping: `StateTransitionReason` and
/// `LastProcessingResult`, only when they change.
pub(crate) struct Status {
    store: Arc<dyn Store>,
    uuid: String,
    last: Mutex<(String, String)>,
}

impl Status {
    fn new(store: Arc<dyn Store>, uuid: String) -> Self {
        Self {
            store,
            uuid,
            last: Mutex::new((String::new(), String::new())),
        }
    }

    /// The source is reachable and the last batch (if any) went well.
    pub fn ok(&self, processed: bool) {
        self.write("USER_INITIATED", if processed { "OK" } else { "" });
    }

    /// The source is reachable but processing went wrong: `LastProcessingResult` gets
    /// `PROBLEM: <result>`.
    pub fn failed(&self, result: &str) {
        self.write("USER_INITIATED", &format!("PROBLEM: {result}"));
    }

    /// The source cannot be read: `reason` for `StateTransitionReason`, `result` for
    /// `LastProcessingResult` (both get a `PROBLEM: ` prefix).
    pub fn problem(&self, reason: &str, result: &str) {
        self.write(&format!("PROBLEM: {reason}"), &format!("PROBLEM: {result}"));
    }

    /// Writes what changed; an empty `result` keeps the stored one.
    fn write(&self, reason: &str, result: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.0 == reason && (result.is_empty() || last.1 == result) {
            return;
        }
        let written = self.store.modify_document(
            kinds::EVENT_SOURCE_MAPPING,
            "",
            &self.uuid,
            &mut |current| {
                let Some(Value::Object(mut doc)) = current else {
                    return Ok(None);
                };
                doc.insert("StateTransitionReason".into(), Value::from(reason));
                if !result.is_empty() {
                    doc.insert("LastProcessingResult".into(), Value::from(result));
                }
                Ok(Some(Value::Object(doc)))
            },
        );
        match written {
            Ok(_) => {
                last.0 = reason.to_string();
                if !result.is_empty() {
                    last.1 = result.to_string();
                }
            }
            Err(e) => tracing::warn!(uuid = %self.uuid, "cannot record the mapping's state: {e}"),
        }
    }
}

/// How a batch's synchronous invocation ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The function returned this body.
    Succeeded(Bytes),
    /// The function failed (an error document, a timeout, a crash); the body says how.
    Failed(Bytes),
    /// The mapping or the server stopped before an answer.
    Stopped,
}

/// Invokes the mapping's function synchronously with `payload` until it answers: throttles
/// and platform errors are waited out (with backoff, reported in the mapping's status) and
/// never count as attempts.
pub(crate) async fn invoke(
    invoker: &Invoker,
    target: &Target,
    payload: Bytes,
    status: &Status,
    stop: &mut watch::Receiver<bool>,
) -> Answer {
    let mut wait = Duration::from_millis(50);
    loop {
        let request = InvokeRequest {
            function: target.function.clone(),
            invocation_type: InvocationType::RequestResponse,
            log_tail: false,
            payload: payload.clone(),
            client_context: None,
            trace_id: None,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let problem = match invoker.invoke(request).await {
            Ok(InvokeOutput::Completed { result, .. }) if result.function_error => {
                return Answer::Failed(result.body);
            }
            Ok(InvokeOutput::Completed { result, .. }) => return Answer::Succeeded(result.body),
            Ok(_) => return Answer::Succeeded(Bytes::new()),
            Err(InvokeError::Throttled(_)) => None,
            Err(InvokeError::Unavailable(_)) => return Answer::Stopped,
            Err(InvokeError::NotFound(message)) => Some(format!("Function not found. {message}")),
            Err(e) => Some(format!("Lambent could not invoke the function: {e}")),
        };
        if let Some(problem) = problem {
            status.failed(&problem);
            tracing::warn!(uuid = %target.uuid, "event source: {problem}; retrying");
            wait = wait.max(Duration::from_secs(1));
        }
        if wait_or_stop(stop, wait).await {
            return Answer::Stopped;
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Sleeps for `delay`; true when `stop` was set meanwhile.
pub(crate) async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|stopped| *stopped) => true,
    };
    stopped || *stop.borrow()
}

/// How one connection to a source ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The mapping was stopped (disabled, changed, deleted, or the server stops).
    Stopped,
    /// The connection failed.
    Lost {
        /// What failed (without passwords).
        error: String,
        /// Whether it had got as far as consuming (the backoff then starts over).
        connected: bool,
    },
}

/// A source's poller as [`keep_connected`] drives it.
pub(crate) trait Session {
    /// One connection's life: connect, then consume until stopped or the link fails.
    fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Ended> + Send;
    /// Where the mapping's health is written.
    fn status(&self) -> &Status;
    /// The mapping's UUID, for log lines.
    fn uuid(&self) -> &str;
    /// The source, for log lines: its kind and address (passwords masked).
    fn describe(&self) -> String;
}

/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs `source`'s sessions until `stop` is set, reconnecting after each loss with backoff
/// (1 s doubling to 30 s, back to 1 s after a session that got going) and reporting every
/// loss in the log and in the mapping's state.
pub(crate) async fn keep_connected(source: &mut impl Session, stop: &mut watch::Receiver<bool>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let (error, connected) = match source.session(stop).await {
            Ended::Stopped => return,
            Ended::Lost { error, connected } => (error, connected),
        };
        if connected {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(
            uuid = %source.uuid(),
            "{}: {error}; reconnecting in {}s",
            source.describe(),
            backoff.as_secs()
        );
        source.status().problem(
            &format!(
                "Connection error. {error}; reconnecting in {}s",
                backoff.as_secs()
            ),
            &format!("Connection error. {error}"),
        );
        if wait_or_stop(stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
