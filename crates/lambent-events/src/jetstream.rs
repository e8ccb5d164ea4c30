//! The NATS JetStream poller, with Kinesis (and DynamoDB streams) event-source semantics.
//!
//! - **Consumer and checkpoint.** Each mapping reads its stream through one durable pull
//!   consumer, `lambent-<mapping UUID>` (created when missing with the mapping's subject
//!   filter, explicit acks and the `DeliverPolicy` of its `StartingPosition`). A record is
//!   acknowledged only once it is processed (or discarded after its OnFailure record was
//!   queued): the consumer's acknowledgements are the checkpoint, so a restarted server
//!   resumes where it left off. Deleting the mapping deletes the consumer.
//! - **Shards.** A record's subject is its shard (`partitionKey`, `shardId-<subject>`): the
//!   records of one subject are processed in stream order, one batch at a time, and a failing
//!   batch blocks its subject until it succeeds or is discarded. Different subjects run
//!   concurrently, at most `ParallelizationFactor` invocations at once for the mapping; a
//!   batch waiting to be retried does not hold one of those slots.
//! - **Batches** hold up to `BatchSize` records of one subject (and at most 6 MB of event),
//!   gathered for up to `MaximumBatchingWindowInSeconds` after the oldest one arrived (0: what
//!   has arrived).
//! - **Errors.** A failed batch is retried (with a short backoff) until it succeeds, fails
//!   `MaximumRetryAttempts` + 1 times, or its oldest record is older than
//!   `MaximumRecordAgeInSeconds`; `BisectBatchOnFunctionError` splits a failed batch in halves
//!   without counting a retry; with `ReportBatchItemFailures`, the records before the lowest
//!   reported sequence number are checkpointed and the rest retried.
//! - **Crash safety.** Records held or being processed get in-progress acknowledgements, so
//!   the server does not redeliver them; a record is never acknowledged before it is done.
//!   After a crash, the records an earlier session held come back once their `AckWait`
//!   (15 s) ran out; until they are all back, the new session processes nothing, so a
//!   subject's order survives the crash.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, FromConsumer, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind};
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use lambent_invoke::Invoker;
use lambent_invoke::targets::mask_passwords;
use lambent_store::{Store, kinds};
use lambent_types::{FunctionRef, Qualifier, limits};

use crate::mappings::{Answer, Ended, Session, Status, Target, invoke, keep_connected};

/// The largest event a batch may make: the synchronous invoke payload limit.
const MAX_EVENT_BYTES: usize = limits::SYNC_PAYLOAD_BYTES;
/// Room for the event's envelope (`{"Records":[…]}`).
const ENVELOPE_BYTES: usize = 64;
/// An upper bound on what one record's entry adds to the event besides its data, subject,
/// source ARN and role ARN (the fixed keys, sequence number, timestamp and region).
const RECORD_OVERHEAD: usize = 480;
/// How long the server waits for an acknowledgement before redelivering a record.
const ACK_WAIT: Duration = Duration::from_secs(15);
/// How often records held or in process get an in-progress acknowledgement.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long connecting and each JetStream API request may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long queueing one acknowledgement may take before the link counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a session that waits for an earlier session's records checks the consumer.
const RECOVERY_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a session waits for an earlier session's records before it processes what it
/// has anyway (a record removed from the stream meanwhile never comes back).
const RECOVERY_GIVE_UP: Duration = Duration::from_secs(60);
/// The pause before the first retry of a failed batch (doubling up to [`RETRY_DELAY_MAX`]).
const RETRY_DELAY_MIN: Duration = Duration::from_millis(200);
/// The longest pause between retries of a failed batch.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// The pause before queueing an OnFailure record is tried again after the store failed.
const DISCARD_RETRY: Duration = Duration::from_secs(1);
/// Most record data held in memory; pulling pauses beyond it.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// Most records one pull request asks for.
const PULL_BATCH: usize = 256;
/// How long a pull request stays open on the server. Short, because a request still open when
/// a session ends would take the first record the session returns (the server does not notice
/// that nobody listens any more) and hold it until its AckWait runs out.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Most records taken from the client's buffer at once before batches are formed.
const DRAIN_LIMIT: usize = 4096;
/// The `condition` of records discarded after their retries.
const RETRIES_EXHAUSTED: &str = "RetryAttemptsExhausted";
/// The `condition` of records discarded for their age.
const AGE_EXCEEDED: &str = "RecordAgeExceeded";
/// The `condition` of a record whose event alone exceeds 6 MB (a Lambent extension: Kinesis
/// records cannot be that large).
const SIZE_EXCEEDED: &str = "RecordSizeExceeded";

/// Where a new consumer starts (`StartingPosition`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// `TRIM_HORIZON`: the oldest record in the stream.
    TrimHorizon,
    /// `LATEST`: records published after the consumer is created.
    Latest,
    /// `AT_TIMESTAMP`: records published at or after this time.
    AtTimestamp(OffsetDateTime),
}

/// What a JetStream poller needs from its mapping.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The server URL (may hold credentials).
    url: String,
    /// The URL with its password masked, for messages.
    shown_url: String,
    /// The stream read.
    stream: String,
    /// The consumer's subject filter (`Topics`), empty for the whole stream.
    subject_filter: String,
    /// `StartingPosition`, for a consumer that does not exist yet.
    start: Start,
    /// `BatchSize`.
    batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`.
    window: Duration,
    /// Most invocations at once (`ParallelizationFactor`).
    parallelization: usize,
    /// `None`: retry until success or age (MaximumRetryAttempts -1).
    max_retries: Option<u32>,
    /// `None`: records never expire (MaximumRecordAgeInSeconds -1).
    max_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    bisect: bool,
    /// `FunctionResponseTypes` holds `ReportBatchItemFailures`.
    report_failures: bool,
    /// `DestinationConfig.OnFailure.Destination`.
    on_failure: Option<String>,
    /// The mapping's `FunctionArn`, for OnFailure records.
    function_arn: String,
    /// The region of the function's ARN, for events.
    region: String,
}

impl Settings {
    /// Reads the mapping's stream members, the server URL, stream and subject filter.
    pub(crate) fn of(
        doc: &Map<String, Value>,
        url: String,
        stream: String,
        subject_filter: Option<String>,
    ) -> Result<Self, String> {
        let int = |key: &str| doc.get(key).and_then(Value::as_i64);
        let start = match doc.get("StartingPosition").and_then(Value::as_str) {
            Some("TRIM_HORIZON") => Start::TrimHorizon,
            Some("LATEST") => Start::Latest,
            Some("AT_TIMESTAMP") => {
                let seconds = doc
                    .get("StartingPositionTimestamp")
                    .and_then(Value::as_f64)
                    .ok_or("StartingPosition AT_TIMESTAMP needs StartingPositionTimestamp")?;
                let nanos = (seconds * 1e9).round() as i128;
                Start::AtTimestamp(OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(
                    |e| format!("StartingPositionTimestamp {seconds} is out of range: {e}"),
                )?)
            }
            Some(other) => return Err(format!("StartingPosition {other:?} is not supported")),
            None => {
                return Err(
                    "a NATS JetStream mapping needs a StartingPosition (TRIM_HORIZON, LATEST or AT_TIMESTAMP)"
                        .into(),
                );
            }
        };
        if int("TumblingWindowInSeconds").unwrap_or(0) > 0 {
            return Err(
                "TumblingWindowInSeconds is not supported for NATS JetStream sources".into(),
            );
        }
        let filters = doc
            .get("FilterCriteria")
            .and_then(|f| f.get("Filters"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if filters {
            return Err("FilterCriteria is not supported for NATS JetStream sources".into());
        }
        let function_arn = doc
            .get("FunctionArn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            shown_url: mask_passwords(&url),
            url,
            stream,
            subject_filter: subject_filter.unwrap_or_default(),
            start,
            batch_size: int("BatchSize").unwrap_or(100).clamp(1, 10_000) as usize,
            window: Duration::from_secs(
                int("MaximumBatchingWindowInSeconds")
                    .unwrap_or(0)
                    .clamp(0, 300) as u64,
            ),
            parallelization: int("ParallelizationFactor").unwrap_or(1).clamp(1, 10) as usize,
            max_retries: int("MaximumRetryAttempts")
                .filter(|n| *n >= 0)
                .map(|n| n.min(i64::from(u32::MAX)) as u32),
            max_age: int("MaximumRecordAgeInSeconds")
                .filter(|n| *n >= 0)
                .map(|n| Duration::from_secs(n as u64)),
            bisect: doc
                .get("BisectBatchOnFunctionError")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            report_failures: doc
                .get("FunctionResponseTypes")
                .and_then(Value::as_array)
                .is_some_and(|types| {
                    types
                        .iter()
                        .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
                }),
            on_failure: doc
                .get("DestinationConfig")
                .and_then(|d| d.get("OnFailure"))
                .and_then(|d| d.get("Destination"))
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            region: function_arn
                .split(':')
                .nth(3)
                .unwrap_or_default()
                .to_string(),
            function_arn,
        })
    }

    /// The consumer's `max_ack_pending`, which also bounds the records held in memory.
    fn max_ack_pending(&self) -> usize {
        (2 * self.batch_size * self.parallelization).clamp(1_000, 20_000)
    }

    /// The `DeliverPolicy` of a new consumer.
    fn deliver_policy(&self) -> DeliverPolicy {
        match &self.start {
            Start::TrimHorizon => DeliverPolicy::All,
            Start::Latest => DeliverPolicy::New,
            Start::AtTimestamp(at) => DeliverPolicy::ByStartTime { start_time: *at },
        }
    }
}

/// A lost session, after consuming started.
fn lost(error: String) -> Ended {
    Ended::Lost {
        error,
        connected: true,
    }
}

/// The consumer name of a mapping.
fn consumer_name(uuid: &str) -> String {
    format!("lambent-{uuid}")
}

/// Polls the stream until `stop` is set, reconnecting with backoff; deletes the mapping's
/// consumer when the mapping itself is gone.
pub(crate) async fn run(
    settings: Settings,
    target: Target,
    invoker: Arc<Invoker>,
    store: Arc<dyn Store>,
    status: Status,
    mut stop: watch::Receiver<bool>,
) {
    let mut poller = Poller {
        settings,
        target,
        invoker,
        store,
        status: Arc::new(status),
        discarded: 0,
    };
    keep_connected(&mut poller, &mut stop).await;
    poller.forget_consumer_if_deleted().await;
}

/// One mapping's poller.
struct Poller {
    /// What the mapping asks for.
    settings: Settings,
    /// The function invoked.
    target: Target,
    /// Invokes it, and queues OnFailure records.
    invoker: Arc<Invoker>,
    /// For the function's role and version, and to tell whether the mapping was deleted.
    store: Arc<dyn Store>,
    /// Writes the mapping's state.
    status: Arc<Status>,
    /// Records discarded without an OnFailure destination, for the log.
    discarded: u64,
}

/// A record held until it is acknowledged.
struct Record {
    /// What the event and OnFailure records are made of.
    meta: Meta,
    /// Acknowledges this delivery.
    acker: Acker,
    /// When this poller received it.
    arrived: Instant,
}

/// A record's content and position.
#[derive(Debug, Clone)]
struct Meta {
    /// The stream sequence number.
    seq: u64,
    /// The subject it was published to (its shard).
    subject: String,
    /// The message body.
    payload: Bytes,
    /// When the server stored it.
    published: OffsetDateTime,
    /// An upper bound on its event entry's size, without the role ARN.
    size: usize,
}

/// The last failed invocation of a batch, for its OnFailure record.
#[derive(Debug, Clone)]
struct Failure {
    /// The function raised an error (as opposed to reporting item failures).
    function_error: bool,
    /// The version that ran.
    executed_version: String,
}

/// Records of one subject that are processed (and retried) together.
struct Batch {
    /// In sequence order.
    records: Vec<Record>,
    /// Failed invocations counted against `MaximumRetryAttempts`.
    retries: u32,
    /// Invocations of these records so far (with those of a batch they were split from).
    invocations: u32,
    /// How the last invocation failed.
    failure: Option<Failure>,
    /// Set when the batch is to be discarded under this condition (its OnFailure record could
    /// not be queued yet).
    discard: Option<&'static str>,
}

impl Batch {
    /// A batch that was never invoked.
    fn new(records: Vec<Record>) -> Self {
        Self {
            records,
            retries: 0,
            invocations: 0,
            failure: None,
            discard: None,
        }
    }

    /// A batch of some of this batch's records, keeping its counts.
    fn part(&self, records: Vec<Record>) -> Self {
        Self {
            records,
            retries: self.retries,
            invocations: self.invocations,
            failure: self.failure.clone(),
            discard: None,
        }
    }
}

/// A subject's records: Lambent's shard.
#[derive(Default)]
struct Shard {
    /// Records not yet in a batch, in sequence order.
    held: VecDeque<Record>,
    /// The size bound of `held`'s entries.
    held_size: usize,
    /// Batches to run (or discard) before `held`, in order.
    retry: VecDeque<Batch>,
    /// The batch being invoked.
    in_flight: Option<Batch>,
    /// No batch starts before this (retry backoff).
    not_before: Option<Instant>,
}

impl Shard {
    /// Nothing held, queued or running.
    fn is_idle(&self) -> bool {
        self.held.is_empty() && self.retry.is_empty() && self.in_flight.is_none()
    }

    /// The sequence number of its first waiting record.
    fn first_waiting(&self) -> Option<u64> {
        self.retry
            .front()
            .and_then(|b| b.records.first())
            .or(self.held.front())
            .map(|r| r.meta.seq)
    }

    /// When its next batch may start: now when ready, a later instant when waiting for the
    /// retry backoff or the batching window, `None` when it has nothing to run.
    fn ready_at(&self, settings: &Settings, now: Instant) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        let gathered = if !self.retry.is_empty() {
            None
        } else {
            let first = self.held.front()?;
            let full = self.held.len() >= settings.batch_size || self.held_size >= MAX_EVENT_BYTES;
            (!full).then_some(first.arrived + settings.window)
        };
        match (self.not_before, gathered) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (None, None) => Some(now),
        }
    }
}

/// What a session holds: every record received and not yet acknowledged, by subject.
#[derive(Default)]
struct Held {
    shards: HashMap<String, Shard>,
    /// Sequence numbers of every record held (to ignore redeliveries of them).
    known: HashSet<u64>,
    /// Bytes of record data held.
    bytes: usize,
}

impl Held {
    /// Takes a record in, unless it is already held.
    fn insert(&mut self, record: Record) {
        if !self.known.insert(record.meta.seq) {
            return;
        }
        self.bytes += record.meta.payload.len();
        let shard = self.shards.entry(record.meta.subject.clone()).or_default();
        shard.held_size += record.meta.size;
        let at = shard.held.partition_point(|r| r.meta.seq < record.meta.seq);
        shard.held.insert(at, record);
    }

    /// Forgets records that left (acknowledged, discarded or returned).
    fn forget(&mut self, records: &[Record]) {
        for record in records {
            if self.known.remove(&record.meta.seq) {
                self.bytes = self.bytes.saturating_sub(record.meta.payload.len());
            }
        }
    }

    /// Drops the shard of `subject` if it has nothing left.
    fn tidy(&mut self, subject: &str) {
        if self.shards.get(subject).is_some_and(Shard::is_idle) {
            self.shards.remove(subject);
        }
    }

    /// The subject whose batch should start next (the oldest waiting record first), or else
    /// the instant one will be ready (`None`: nothing is waiting).
    fn next_ready(&self, settings: &Settings) -> Result<String, Option<Instant>> {
        let now = Instant::now();
        let mut best: Option<(u64, &String)> = None;
        let mut wake: Option<Instant> = None;
        for (subject, shard) in &self.shards {
            let Some(at) = shard.ready_at(settings, now) else {
                continue;
            };
            if at <= now {
                let first = shard.first_waiting().unwrap_or(u64::MAX);
                if best.is_none_or(|(seq, _)| first < seq) {
                    best = Some((first, subject));
                }
            } else {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        match best {
            Some((_, subject)) => Ok(subject.clone()),
            None => Err(wake),
        }
    }

    /// Takes the next batch of `subject`: a queued one, or up to `BatchSize` held records
    /// within the event size limit (`role_len` is added to each record's size).
    fn take_batch(&mut self, subject: &str, settings: &Settings, role_len: usize) -> Option<Batch> {
        let shard = self.shards.get_mut(subject)?;
        if let Some(batch) = shard.retry.pop_front() {
            return Some(batch);
        }
        let mut records = Vec::new();
        let mut size = ENVELOPE_BYTES;
        while records.len() < settings.batch_size {
            let Some(next) = shard.held.front() else {
                break;
            };
            let grown = size + next.meta.size + role_len;
            if grown > MAX_EVENT_BYTES && !records.is_empty() {
                break;
            }
            size = grown;
            let Some(record) = shard.held.pop_front() else {
                break;
            };
            shard.held_size = shard.held_size.saturating_sub(record.meta.size);
            records.push(record);
            if size > MAX_EVENT_BYTES {
                // One record too large for any event.
                let mut batch = Batch::new(records);
                batch.discard = Some(SIZE_EXCEEDED);
                return Some(batch);
            }
        }
        (!records.is_empty()).then(|| Batch::new(records))
    }

    /// Every record held, in sequence order, except those being invoked.
    fn waiting(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        for shard in self.shards.values_mut() {
            for batch in shard.retry.drain(..) {
                out.extend(batch.records);
            }
            out.extend(shard.held.drain(..));
            shard.held_size = 0;
        }
        out.sort_by_key(|r| r.meta.seq);
        out
    }
}

/// An invocation in progress: resolves to its subject and the function's answer.
type Running = FuturesUnordered<Pin<Box<dyn Future<Output = (String, Answer)> + Send>>>;

/// What a session is connected to.
struct Link {
    /// The connection.
    client: async_nats::Client,
    /// The mapping's durable consumer.
    consumer: PullConsumer,
}

impl Poller {
    /// One connection's life: connect, make sure of the consumer, consume until stopped or
    /// the link fails, then hand back what is not processed.
    async fn connect_and_consume(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let opened = tokio::select! {
            opened = tokio::time::timeout(3 * CONNECT_TIMEOUT, self.open(events_tx)) => opened,
            () = stop.wait_for(|stopped| *stopped).map(|_| ()) => return Ended::Stopped,
        };
        let link = match opened {
            Ok(Ok(link)) => link,
            Ok(Err(error)) => {
                return Ended::Lost {
                    error,
                    connected: false,
                };
            }
            Err(_) => {
                return Ended::Lost {
                    error: format!("no answer from {} in time", self.settings.shown_url),
                    connected: false,
                };
            }
        };
        let pending = link.consumer.cached_info().num_ack_pending;
        let mut messages = match link
            .consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH.min(self.settings.max_ack_pending()))
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(e) => {
                return Ended::Lost {
                    error: format!("cannot pull from the consumer: {e}"),
                    connected: false,
                };
            }
        };
        tracing::info!(
            uuid = %self.target.uuid, stream = %self.settings.stream,
            filter = %self.settings.subject_filter, consumer = %consumer_name(&self.target.uuid),
            unacknowledged = pending, "NATS JetStream source consuming"
        );
        self.status.ok(false);
        let mut held = Held::default();
        let mut running: Running = FuturesUnordered::new();
        let ended = self
            .consume(
                &link,
                &mut messages,
                &mut events,
                &mut held,
                &mut running,
                pending,
                stop,
            )
            .await;
        drop(messages);
        // A margin for the last request to reach the server and its expiry to be handled.
        let pulls_end = Instant::now() + PULL_EXPIRES + Duration::from_millis(300);
        self.wind_down(&mut held, &mut running, &ended, pulls_end)
            .await;
        let _ = tokio::time::timeout(ACK_TIMEOUT, link.client.flush()).await;
        ended
    }

    /// Connects and opens (or creates) the mapping's consumer.
    async fn open(&self, events: mpsc::UnboundedSender<async_nats::Event>) -> Result<Link, String> {
        let scrub = |e: &dyn std::fmt::Display| mask_passwords(&e.to_string());
        let client = connect_options(&self.settings.url)?
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    let _ = events.send(event);
                }
            })
            .connect(self.settings.url.as_str())
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {}: {}",
                    self.settings.shown_url,
                    scrub(&e)
                )
            })?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(CONNECT_TIMEOUT);
        let stream = context
            .get_stream(self.settings.stream.as_str())
            .await
            .map_err(|e| {
                format!(
                    "cannot open JetStream stream {:?}: {}",
                    self.settings.stream,
                    scrub(&e)
                )
            })?;
        let name = consumer_name(&self.target.uuid);
        let wanted = self.settings.max_ack_pending() as i64;
        let consumer: PullConsumer = match stream.consumer_info(&name).await {
            Ok(info) => {
                if info.config.filter_subject != self.settings.subject_filter {
                    return Err(format!(
                        "consumer {name} exists with subject filter {:?}, not {:?}; remove it \
                         (nats consumer rm {} {name}) to start over",
                        info.config.filter_subject,
                        self.settings.subject_filter,
                        self.settings.stream
                    ));
                }
                if info.config.ack_policy != AckPolicy::Explicit
                    || info.config.deliver_subject.is_some()
                {
                    return Err(format!(
                        "consumer {name} exists but is not a pull consumer with explicit acks; remove it \
                         (nats consumer rm {} {name})",
                        self.settings.stream
                    ));
                }
                if info.config.ack_wait != ACK_WAIT || info.config.max_ack_pending != wanted {
                    let mut config = pull::Config::try_from_consumer_config(info.config.clone())
                        .map_err(|e| format!("cannot read consumer {name}: {e}"))?;
                    config.ack_wait = ACK_WAIT;
                    config.max_ack_pending = wanted;
                    stream
                        .create_consumer(config)
                        .await
                        .map_err(|e| format!("cannot update consumer {name}: {}", scrub(&e)))?
                } else {
                    stream
                        .get_consumer(&name)
                        .await
                        .map_err(|e| format!("cannot open consumer {name}: {}", scrub(&e)))?
                }
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let config = pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("Lambent event-source mapping {}", self.target.uuid)),
                    deliver_policy: self.settings.deliver_policy(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    filter_subject: self.settings.subject_filter.clone(),
                    max_ack_pending: wanted,
                    ..Default::default()
                };
                let consumer = stream
                    .create_consumer(config)
                    .await
                    .map_err(|e| format!("cannot create consumer {name}: {}", scrub(&e)))?;
                tracing::info!(
                    uuid = %self.target.uuid, stream = %self.settings.stream, consumer = %name,
                    start = ?self.settings.start, "NATS JetStream source created its durable consumer"
                );
                consumer
            }
            Err(e) => return Err(format!("cannot read consumer {name}: {}", scrub(&e))),
        };
        Ok(Link { client, consumer })
    }

    /// Receives records and runs batches until stopped or the link fails.
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &mut self,
        link: &Link,
        messages: &mut pull::Stream,
        events: &mut mpsc::UnboundedReceiver<async_nats::Event>,
        held: &mut Held,
        running: &mut Running,
        pending: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let uuid = self.target.uuid.clone();
        // Records an earlier session received and did not acknowledge come back only after
        // their AckWait: until they are all here, nothing is processed (a subject's order).
        let mut recovering = pending > 0;
        if recovering {
            tracing::info!(
                uuid = %uuid, unacknowledged = pending,
                "NATS JetStream source: waiting for the records of an earlier session to be redelivered"
            );
        }
        let mut connected = true;
        let mut progress =
            tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(RECOVERY_CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let give_up = Instant::now() + RECOVERY_GIVE_UP;
        loop {
            let wake = if recovering {
                None
            } else {
                match self.schedule(held, running, stop).await {
                    Ok(wake) => wake,
                    Err(ended) => return ended,
                }
            };
            let can_pull = recovering
                || (held.known.len() < self.settings.max_ack_pending()
                    && held.bytes < MAX_HELD_BYTES);
            tokio::select! {
                biased;
                () = stop.wait_for(|stopped| *stopped).map(|_| ()) => return Ended::Stopped,
                Some((subject, answer)) = running.next(), if !running.is_empty() => {
                    if let Err(ended) = self.finished(held, subject, answer, false).await {
                        return ended;
                    }
                }
                _ = progress.tick() => {
                    if connected && let Err(ended) = progress_all(held).await {
                        return ended;
                    }
                }
                _ = check.tick(), if recovering => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, link.consumer.get_info()).await {
                        Ok(Ok(info)) if info.num_ack_pending <= held.known.len() => {
                            recovering = false;
                            tracing::info!(uuid = %uuid, records = held.known.len(), "NATS JetStream source: every unacknowledged record is back; processing");
                        }
                        Ok(Ok(info)) if Instant::now() >= give_up => {
                            recovering = false;
                            tracing::warn!(
                                uuid = %uuid, records = held.known.len(), unacknowledged = info.num_ack_pending,
                                "NATS JetStream source: some unacknowledged records did not come back within {}s; processing without them",
                                RECOVERY_GIVE_UP.as_secs()
                            );
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(e)) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                            return lost("the consumer was deleted".into());
                        }
                        Ok(Err(e)) => tracing::debug!(uuid = %uuid, "NATS JetStream source: consumer info: {e}"),
                    }
                }
                event = events.recv() => match event {
                    Some(async_nats::Event::Disconnected) => {
                        connected = false;
                        tracing::warn!(uuid = %uuid, server = %self.settings.shown_url, "NATS JetStream source: disconnected; reconnecting");
                        let error = format!("lost the connection to {}", self.settings.shown_url);
                        self.status.problem(&format!("Connection error. {error}; reconnecting"), &format!("Connection error. {error}"));
                    }
                    Some(async_nats::Event::Connected) => {
                        if !connected {
                            tracing::info!(uuid = %uuid, "NATS JetStream source: reconnected");
                            self.status.ok(false);
                        }
                        connected = true;
                    }
                    Some(async_nats::Event::Closed) | None => return lost("the connection was closed".into()),
                    Some(other) => tracing::debug!(uuid = %uuid, "NATS JetStream source: {other}"),
                },
                next = messages.next(), if can_pull => {
                    let mut next = next;
                    let mut taken = 0;
                    loop {
                        match next {
                            Some(Ok(message)) => self.take(held, message),
                            Some(Err(e)) => {
                                use pull::MessagesErrorKind as Kind;
                                match e.kind() {
                                    Kind::Pull | Kind::MissingHeartbeat => {
                                        tracing::debug!(uuid = %uuid, "NATS JetStream source: {e}");
                                    }
                                    Kind::ConsumerDeleted | Kind::NoResponders => {
                                        return lost(format!("the consumer is gone ({e})"));
                                    }
                                    _ => return lost(format!("the consumer failed: {e}")),
                                }
                                break;
                            }
                            None => return lost("the server ended the pull subscription".into()),
                        }
                        taken += 1;
                        if taken >= DRAIN_LIMIT {
                            break;
                        }
                        match messages.next().now_or_never() {
                            Some(more) => next = more,
                            None => break,
                        }
                    }
                }
                () = sleep_until_opt(wake) => {}
            }
        }
    }

    /// Takes a received message in.
    fn take(&self, held: &mut Held, message: jetstream::Message) {
        let (seq, published) = match message.info() {
            Ok(info) => (info.stream_sequence, info.published),
            Err(e) => {
                tracing::warn!(uuid = %self.target.uuid, "NATS JetStream source: a message without JetStream metadata: {e}");
                return;
            }
        };
        let (message, acker) = message.split();
        let subject = message.subject.to_string();
        let payload = message.payload;
        let size = entry_size(&subject, payload.len(), self.target.source_arn.len());
        held.insert(Record {
            meta: Meta {
                seq,
                subject,
                payload,
                published,
                size,
            },
            acker,
            arrived: Instant::now(),
        });
    }

    /// Starts every batch that is ready, up to `ParallelizationFactor` invocations; returns
    /// when the next one will be ready.
    async fn schedule(
        &mut self,
        held: &mut Held,
        running: &mut Running,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Instant>, Ended> {
        let mut identity: Option<(String, String)> = None;
        while running.len() < self.settings.parallelization {
            let subject = match held.next_ready(&self.settings) {
                Ok(subject) => subject,
                Err(wake) => return Ok(wake),
            };
            let (role, version) = identity
                .get_or_insert_with(|| {
                    function_identity(self.store.as_ref(), &self.target.function)
                })
                .clone();
            let Some(mut batch) = held.take_batch(&subject, &self.settings, role.len()) else {
                held.tidy(&subject);
                continue;
            };
            if let Some(condition) = batch.discard {
                self.discard(held, &subject, batch, condition, &version)
                    .await?;
                continue;
            }
            if let Some(max_age) = self.settings.max_age {
                let now = OffsetDateTime::now_utc();
                let published: Vec<OffsetDateTime> =
                    batch.records.iter().map(|r| r.meta.published).collect();
                let expired = expired_prefix(&published, now, max_age);
                if expired > 0 {
                    let whole = batch.invocations > 0 || expired == batch.records.len();
                    let rest = if whole {
                        Vec::new()
                    } else {
                        batch.records.split_off(expired)
                    };
                    let rest = batch.part(rest);
                    self.discard(held, &subject, batch, AGE_EXCEEDED, &version)
                        .await?;
                    if rest.records.is_empty() {
                        continue;
                    }
                    batch = rest;
                }
            }
            let payload = kinesis_event(
                batch.records.iter().map(|r| &r.meta),
                &EventContext {
                    role: &role,
                    region: &self.settings.region,
                    source_arn: &self.target.source_arn,
                },
            );
            if payload.len() > MAX_EVENT_BYTES {
                // The size bound was wrong: never hand the invoker an event it refuses.
                tracing::error!(uuid = %self.target.uuid, bytes = payload.len(), "NATS JetStream source: a batch's event exceeds 6 MB");
                if batch.records.len() > 1 {
                    let (first, second) = halves(std::mem::take(&mut batch.records));
                    if let Some(shard) = held.shards.get_mut(&subject) {
                        shard.retry.push_front(batch.part(second));
                        shard.retry.push_front(batch.part(first));
                    }
                } else {
                    self.discard(held, &subject, batch, SIZE_EXCEEDED, &version)
                        .await?;
                }
                continue;
            }
            tracing::debug!(uuid = %self.target.uuid, subject = %subject, records = batch.records.len(), retries = batch.retries, "NATS JetStream source: invoking");
            let Some(shard) = held.shards.get_mut(&subject) else {
                continue;
            };
            shard.in_flight = Some(batch);
            let invoker = self.invoker.clone();
            let target = self.target.clone();
            let status = self.status.clone();
            let mut stop = stop.clone();
            running.push(Box::pin(async move {
                let answer =
                    invoke(&invoker, &target, Bytes::from(payload), &status, &mut stop).await;
                (subject, answer)
            }));
        }
        Ok(None)
    }

    /// Handles the answer to a batch's invocation: checkpoint, retry, split or discard.
    /// While `stopping`, whatever is not done is returned to the server instead.
    async fn finished(
        &mut self,
        held: &mut Held,
        subject: String,
        answer: Answer,
        stopping: bool,
    ) -> Result<(), Ended> {
        let Some(mut batch) = held
            .shards
            .get_mut(&subject)
            .and_then(|shard| shard.in_flight.take())
        else {
            return Ok(());
        };
        let (returned, verdict) = match answer {
            Answer::Stopped => {
                if let Some(shard) = held.shards.get_mut(&subject) {
                    shard.retry.push_front(batch);
                }
                return Ok(());
            }
            Answer::Succeeded(body) => {
                let seqs: Vec<u64> = batch.records.iter().map(|r| r.meta.seq).collect();
                (true, verdict(&body, &seqs, self.settings.report_failures))
            }
            Answer::Failed(_) => (false, Verdict::Failed),
        };
        batch.invocations += 1;
        let uuid = self.target.uuid.clone();
        let partial = matches!(verdict, Verdict::FailedFrom(_));
        let (done, failed) = match verdict {
            Verdict::Done => (std::mem::take(&mut batch.records), Vec::new()),
            Verdict::FailedFrom(index) => {
                let failed = batch.records.split_off(index);
                (std::mem::take(&mut batch.records), failed)
            }
            Verdict::Invalid(reason) => {
                tracing::warn!(uuid = %uuid, subject = %subject, "NATS JetStream source: invalid batchItemFailures ({reason}); the whole batch failed");
                (Vec::new(), std::mem::take(&mut batch.records))
            }
            Verdict::Failed => (Vec::new(), std::mem::take(&mut batch.records)),
        };
        if !done.is_empty() {
            ack_all(&done, AckKind::Ack).await?;
            held.forget(&done);
        }
        if failed.is_empty() {
            self.status.ok(true);
            if let Some(shard) = held.shards.get_mut(&subject) {
                shard.not_before = None;
            }
            held.tidy(&subject);
            return Ok(());
        }
        self.status.failed("Function call failed");
        let (_, executed_version) = function_identity(self.store.as_ref(), &self.target.function);
        let mut batch = batch.part(failed);
        batch.failure = Some(Failure {
            function_error: !returned,
            executed_version,
        });
        let Some(shard) = held.shards.get_mut(&subject) else {
            return Ok(());
        };
        if stopping {
            shard.retry.push_front(batch);
            return Ok(());
        }
        // A reported item failure retries from that record; other failures may be halved.
        if self.settings.bisect && !partial && batch.records.len() > 1 {
            let (first, second) = halves(std::mem::take(&mut batch.records));
            tracing::info!(uuid = %uuid, subject = %subject, first = first.len(), second = second.len(), "NATS JetStream source: the function failed; bisecting the batch");
            shard.retry.push_front(batch.part(second));
            shard.retry.push_front(batch.part(first));
            return Ok(());
        }
        batch.retries += 1;
        if self
            .settings
            .max_retries
            .is_some_and(|max| batch.retries > max)
        {
            let version = batch
                .failure
                .as_ref()
                .map(|f| f.executed_version.clone())
                .unwrap_or_default();
            return self
                .discard(held, &subject, batch, RETRIES_EXHAUSTED, &version)
                .await;
        }
        let delay = retry_delay(batch.retries);
        tracing::info!(
            uuid = %uuid, subject = %subject, records = batch.records.len(), retries = batch.retries,
            "NATS JetStream source: the function failed; retrying the batch in {delay:?} (its subject waits)"
        );
        shard.not_before = Some(Instant::now() + delay);
        shard.retry.push_front(batch);
        Ok(())
    }

    /// Discards a batch: queues its OnFailure record (when the mapping has a destination),
    /// then acknowledges its records so the stream moves on.
    async fn discard(
        &mut self,
        held: &mut Held,
        subject: &str,
        mut batch: Batch,
        condition: &'static str,
        version: &str,
    ) -> Result<(), Ended> {
        let uuid = self.target.uuid.clone();
        let first = batch
            .records
            .first()
            .map(|r| r.meta.seq)
            .unwrap_or_default();
        let last = batch.records.last().map(|r| r.meta.seq).unwrap_or_default();
        if let Some(destination) = &self.settings.on_failure {
            let request_id = uuid::Uuid::new_v4().to_string();
            let metas: Vec<&Meta> = batch.records.iter().map(|r| &r.meta).collect();
            let record = failure_record(&FailureContext {
                request_id: &request_id,
                function_arn: &self.settings.function_arn,
                condition,
                invocations: batch.invocations,
                failure: batch.failure.as_ref(),
                version,
                stream_arn: &self.target.source_arn,
                records: &metas,
                now: OffsetDateTime::now_utc(),
            });
            let sent = self.invoker.send_record(
                &self.target.function.name,
                destination,
                record.to_string().into_bytes(),
                vec![
                    ("RequestID".to_string(), request_id),
                    ("Condition".to_string(), condition.to_string()),
                ],
            );
            if let Err(e) = sent {
                tracing::error!(uuid = %uuid, subject = %subject, "NATS JetStream source: cannot queue the OnFailure record of a discarded batch: {e}; trying again");
                self.status
                    .failed(&format!("cannot queue an OnFailure record: {e}"));
                batch.discard = Some(condition);
                if let Some(shard) = held.shards.get_mut(subject) {
                    shard.not_before = Some(Instant::now() + DISCARD_RETRY);
                    shard.retry.push_front(batch);
                }
                return Ok(());
            }
            tracing::warn!(
                uuid = %uuid, subject = %subject, condition, records = batch.records.len(),
                first_sequence = first, last_sequence = last, destination = %destination,
                "NATS JetStream source: batch discarded; its OnFailure record is queued"
            );
        } else {
            self.discarded += batch.records.len() as u64;
            tracing::warn!(
                uuid = %uuid, subject = %subject, condition, records = batch.records.len(),
                first_sequence = first, last_sequence = last, discarded_total = self.discarded,
                "NATS JetStream source: batch discarded (the mapping has no OnFailure destination)"
            );
        }
        ack_all(&batch.records, AckKind::Ack).await?;
        held.forget(&batch.records);
        if let Some(shard) = held.shards.get_mut(subject) {
            shard.not_before = None;
        }
        held.tidy(subject);
        Ok(())
    }

    /// Ends a session: waits for the invocations in progress and settles their records, then
    /// (when the mapping stopped) returns the records not processed to the server, at once
    /// redeliverable, once the last pull request expired (`pulls_end`). After a lost link they
    /// come back when their AckWait runs out.
    async fn wind_down(
        &mut self,
        held: &mut Held,
        running: &mut Running,
        ended: &Ended,
        pulls_end: Instant,
    ) {
        let uuid = self.target.uuid.clone();
        let stopped = matches!(ended, Ended::Stopped);
        if !running.is_empty() {
            tracing::info!(uuid = %uuid, batches = running.len(), "NATS JetStream source: waiting for the invocations in progress");
        }
        let mut progress =
            tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        while !running.is_empty() {
            tokio::select! {
                Some((subject, answer)) = running.next() => {
                    let _ = self.finished(held, subject, answer, true).await;
                }
                _ = progress.tick() => {
                    if stopped {
                        let _ = progress_all(held).await;
                    }
                }
            }
        }
        let waiting = held.waiting();
        if waiting.is_empty() {
            return;
        }
        if stopped {
            tokio::time::sleep_until(pulls_end).await;
            tracing::info!(uuid = %uuid, records = waiting.len(), "NATS JetStream source: returning unprocessed records to the server");
            let _ = ack_all(&waiting, AckKind::Nak(None)).await;
        }
        held.forget(&waiting);
    }

    /// After the mapping stopped: deletes its consumer if the mapping itself was deleted.
    async fn forget_consumer_if_deleted(&self) {
        let uuid = &self.target.uuid;
        match self
            .store
            .get_document(kinds::EVENT_SOURCE_MAPPING, "", uuid)
        {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(uuid = %uuid, "cannot tell whether the mapping was deleted: {e}");
                return;
            }
        }
        let name = consumer_name(uuid);
        let deleted = async {
            let client = connect_options(&self.settings.url)?
                .connect(self.settings.url.as_str())
                .await
                .map_err(|e| mask_passwords(&e.to_string()))?;
            let mut context = jetstream::new(client.clone());
            context.set_timeout(CONNECT_TIMEOUT);
            let stream = context
                .get_stream(self.settings.stream.as_str())
                .await
                .map_err(|e| e.to_string())?;
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| e.to_string())?;
            let _ = client.flush().await;
            Ok::<(), String>(())
        };
        match tokio::time::timeout(3 * CONNECT_TIMEOUT, deleted).await {
            Ok(Ok(())) => {
                tracing::info!(uuid = %uuid, consumer = %name, stream = %self.settings.stream, "NATS JetStream source: mapping deleted; consumer deleted");
            }
            Ok(Err(e)) => {
                tracing::warn!(uuid = %uuid, consumer = %name, stream = %self.settings.stream, "NATS JetStream source: mapping deleted but its consumer could not be deleted: {e}");
            }
            Err(_) => {
                tracing::warn!(uuid = %uuid, consumer = %name, stream = %self.settings.stream, "NATS JetStream source: mapping deleted but the server did not answer; its consumer is left");
            }
        }
    }
}

/// The client options for `url`, with the credentials it carries.
fn connect_options(url: &str) -> Result<async_nats::ConnectOptions, String> {
    Ok(lambent_invoke::targets::nats_connect_options(url)?
        .name("lambent-event-source")
        .connection_timeout(CONNECT_TIMEOUT))
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `kind` for each record's delivery.
async fn ack_all(records: &[Record], kind: AckKind) -> Result<(), Ended> {
    for record in records {
        match tokio::time::timeout(ACK_TIMEOUT, record.acker.ack_with(kind)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(lost(format!("cannot acknowledge a record: {e}"))),
            Err(_) => return Err(lost("acknowledgements are not going out".into())),
        }
    }
    Ok(())
}

/// Tells the server every held record is still being worked on.
async fn progress_all(held: &Held) -> Result<(), Ended> {
    for shard in held.shards.values() {
        let batches = shard.retry.iter().chain(shard.in_flight.iter());
        for record in batches
            .flat_map(|b| b.records.iter())
            .chain(shard.held.iter())
        {
            match tokio::time::timeout(ACK_TIMEOUT, record.acker.ack_with(AckKind::Progress)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(lost(format!("cannot extend a record's AckWait: {e}"))),
                Err(_) => return Err(lost("acknowledgements are not going out".into())),
            }
        }
    }
    Ok(())
}

/// The role and version a batch runs with: the function version (an alias's main version)
/// the mapping's qualifier names, and its execution role.
fn function_identity(store: &dyn Store, function: &FunctionRef) -> (String, String) {
    let version = match function.qualifier_or_latest() {
        Qualifier::Alias(alias) => store
            .get_document(kinds::ALIAS, &function.name, &alias)
            .ok()
            .flatten()
            .and_then(|doc| doc["FunctionVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| Qualifier::Latest.to_string()),
        other => other.to_string(),
    };
    match store.get_function(&function.name, &version) {
        Ok(config) => (config.role, config.version),
        Err(_) => (String::new(), version),
    }
}

/// The pause before a failed batch's `retries`-th retry.
fn retry_delay(retries: u32) -> Duration {
    let doubled =
        RETRY_DELAY_MIN.saturating_mul(2u32.saturating_pow(retries.saturating_sub(1).min(16)));
    doubled.min(RETRY_DELAY_MAX)
}

/// Splits a failed batch for bisection: the first half gets the extra record of an odd count.
fn halves<T>(mut records: Vec<T>) -> (Vec<T>, Vec<T>) {
    let second = records.split_off(records.len().div_ceil(2));
    (records, second)
}

/// How many records at the front are older than `max_age` at `now`.
fn expired_prefix(published: &[OffsetDateTime], now: OffsetDateTime, max_age: Duration) -> usize {
    published
        .iter()
        .take_while(|at| now - **at > max_age)
        .count()
}

/// The length of `text` as a JSON string.
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len() * 6 + 2, |s| s.len())
}

/// An upper bound on one record's event entry, without the role ARN.
fn entry_size(subject: &str, payload_len: usize, source_arn_len: usize) -> usize {
    payload_len.div_ceil(3) * 4 + 2 * json_len(subject) + 2 * source_arn_len + RECORD_OVERHEAD
}

/// What every record of an event shares.
struct EventContext<'a> {
    /// The function's execution role (`invokeIdentityArn`).
    role: &'a str,
    /// `awsRegion`.
    region: &'a str,
    /// The mapping's `EventSourceArn`.
    source_arn: &'a str,
}

/// A record's entry in a Kinesis event.
fn kinesis_entry(meta: &Meta, ctx: &EventContext<'_>) -> Value {
    let seq = meta.seq.to_string();
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": meta.subject,
            "sequenceNumber": seq,
            "data": base64::engine::general_purpose::STANDARD.encode(&meta.payload),
            "approximateArrivalTimestamp": epoch_seconds(meta.published),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{}:{seq}", shard_id(&meta.subject)),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": ctx.role,
        "awsRegion": ctx.region,
        "eventSourceARN": ctx.source_arn,
    })
}

/// The Kinesis event of a batch: `{"Records": [...]}`.
fn kinesis_event<'a>(records: impl Iterator<Item = &'a Meta>, ctx: &EventContext<'_>) -> Vec<u8> {
    let records: Vec<Value> = records.map(|meta| kinesis_entry(meta, ctx)).collect();
    json!({ "Records": records }).to_string().into_bytes()
}

/// A subject's shard id.
fn shard_id(subject: &str) -> String {
    format!("shardId-{subject}")
}

/// Epoch seconds with millisecond precision, as Kinesis events give arrival times.
fn epoch_seconds(at: OffsetDateTime) -> f64 {
    let millis = at.unix_timestamp_nanos().div_euclid(1_000_000);
    millis as f64 / 1000.0
}

/// An ISO 8601 UTC time with milliseconds (`2019-11-14T00:38:06.021Z`).
fn iso_millis(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// What the function's answer means for a batch.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every record is processed.
    Done,
    /// Records before this index are processed; the rest failed (a batch item failure report).
    FailedFrom(usize),
    /// The report was invalid: the whole batch failed.
    Invalid(String),
    /// The function raised an error: the whole batch failed.
    Failed,
}

/// Reads a successful answer: with `ReportBatchItemFailures`, `{"batchItemFailures":
/// [{"itemIdentifier": "<sequenceNumber>"}]}` checkpoints before the lowest failed record; an
/// empty or null list, or an answer without the member, is a full success; an item without a
/// non-empty string `itemIdentifier` naming a record of the batch fails the whole batch.
fn verdict(body: &[u8], seqs: &[u64], report: bool) -> Verdict {
    if !report || body.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Done;
    }
    let answer: Value = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return Verdict::Invalid(format!("the answer is not JSON: {e}")),
    };
    let failures = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Verdict::Done,
        Some(Value::Array(failures)) => failures,
        Some(other) => {
            return Verdict::Invalid(format!("batchItemFailures is not a list: {other}"));
        }
    };
    let mut lowest: Option<usize> = None;
    for item in failures {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Verdict::Invalid(format!("bad item {item}")),
        };
        let index = id
            .parse::<u64>()
            .ok()
            .and_then(|seq| seqs.iter().position(|s| *s == seq));
        let Some(index) = index else {
            return Verdict::Invalid(format!(
                "itemIdentifier {id:?} is not a sequence number of the batch"
            ));
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    match lowest {
        Some(index) => Verdict::FailedFrom(index),
        None => Verdict::Done,
    }
}

/// What an OnFailure record is made of.
struct FailureContext<'a> {
    /// `requestContext.requestId`.
    request_id: &'a str,
    /// The mapping's `FunctionArn`.
    function_arn: &'a str,
    /// Why the records were discarded.
    condition: &'a str,
    /// How many invocations the records were part of.
    invocations: u32,
    /// How the last invocation failed, if there was one.
    failure: Option<&'a Failure>,
    /// The version the mapping runs, when the batch never ran.
    version: &'a str,
    /// The mapping's `EventSourceArn`.
    stream_arn: &'a str,
    /// The discarded records, in order.
    records: &'a [&'a Meta],
    /// The record's `timestamp`.
    now: OffsetDateTime,
}

/// The OnFailure record of a discarded batch, in the shape of Lambda's Kinesis records.
fn failure_record(ctx: &FailureContext<'_>) -> Value {
    let first = ctx.records.first();
    let last = ctx.records.last();
    let mut response = Map::new();
    response.insert(
        "statusCode".into(),
        json!(if ctx.failure.is_some() { 200 } else { 0 }),
    );
    response.insert(
        "executedVersion".into(),
        json!(
            ctx.failure
                .map_or(ctx.version, |f| f.executed_version.as_str())
        ),
    );
    if ctx.failure.is_some_and(|f| f.function_error) {
        response.insert("functionError".into(), json!("Unhandled"));
    }
    json!({
        "requestContext": {
            "requestId": ctx.request_id,
            "functionArn": ctx.function_arn,
            "condition": ctx.condition,
            "approximateInvokeCount": ctx.invocations,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso_millis(ctx.now),
        "KinesisBatchInfo": {
            "shardId": first.map(|m| shard_id(&m.subject)).unwrap_or_default(),
            "startSequenceNumber": first.map(|m| m.seq.to_string()).unwrap_or_default(),
            "endSequenceNumber": last.map(|m| m.seq.to_string()).unwrap_or_default(),
            "approximateArrivalOfFirstRecord": first.map(|m| iso_millis(m.published)).unwrap_or_default(),
            "approximateArrivalOfLastRecord": last.map(|m| iso_millis(m.published)).unwrap_or_default(),
            "batchSize": ctx.records.len(),
            "streamArn": ctx.stream_arn,
        },
    })
}

impl Session for Poller {
    fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Ended> + Send {
        self.connect_and_consume(stop)
    }

    fn status(&self) -> &Status {
        &self.status
    }

    fn uuid(&self) -> &str {
        &self.target.uuid
    }

    fn describe(&self) -> String {
        format!(
            "NATS JetStream source (stream {:?} at {})",
            self.settings.stream, self.settings.shown_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64, subject: &str, payload: &[u8], published: i64) -> Meta {
        Meta {
            seq,
            subject: subject.into(),
            payload: Bytes::copy_from_slice(payload),
            published: OffsetDateTime::from_unix_timestamp_nanos(i128::from(published) * 1_000_000)
                .unwrap(),
            size: entry_size(subject, payload.len(), 40),
        }
    }

    #[test]
    fn kinesis_entries() {
        let ctx = EventContext {
            role: "arn:aws:iam::000000000000:role/r",
            region: "us-east-1",
            source_arn: "arn:lambent:nats:::local/jetstream/ORDERS",
        };
        let m = meta(
            42,
            "orders.eu",
            b"Hello, this is a test.",
            1_545_084_650_987,
        );
        let entry = kinesis_entry(&m, &ctx);
        assert_eq!(
            entry,
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "orders.eu",
                    "sequenceNumber": "42",
                    "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                    "approximateArrivalTimestamp": 1_545_084_650.987,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": "shardId-orders.eu:42",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/r",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:lambent:nats:::local/jetstream/ORDERS",
            })
        );
        let event = kinesis_event([&m, &m].into_iter(), &ctx);
        let parsed: Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(parsed["Records"].as_array().unwrap().len(), 2);
        // The size bound holds, with the role added.
        let entry_len = entry.to_string().len() + 1;
        let bound = entry_size("orders.eu", m.payload.len(), ctx.source_arn.len()) + ctx.role.len();
        assert!(entry_len <= bound, "{entry_len} > {bound}");
        let big = vec![0xffu8; 1_000_001];
        let m = meta(u64::MAX, "a.\"quoted\".subject", &big, 4_102_444_800_000);
        let ctx = EventContext {
            region: "ap-southeast-3-very-long-region-name",
            ..ctx
        };
        let entry_len = kinesis_entry(&m, &ctx).to_string().len() + 1;
        let bound = entry_size(&m.subject, big.len(), ctx.source_arn.len()) + ctx.role.len();
        assert!(entry_len <= bound, "{entry_len} > {bound}");
    }

    #[test]
    fn verdicts() {
        let seqs = [10, 11, 12];
        assert_eq!(
            verdict(b"{\"batchItemFailures\":[]}", &seqs, false),
            Verdict::Done
        );
        assert_eq!(verdict(b"not json", &seqs, false), Verdict::Done);
        assert_eq!(verdict(b"", &seqs, true), Verdict::Done);
        assert_eq!(verdict(b"null", &seqs, true), Verdict::Done);
        assert_eq!(verdict(b"{}", &seqs, true), Verdict::Done);
        assert_eq!(verdict(b"\"ok\"", &seqs, true), Verdict::Done);
        assert_eq!(
            verdict(b"{\"batchItemFailures\":null}", &seqs, true),
            Verdict::Done
        );
        assert_eq!(
            verdict(b"{\"batchItemFailures\":[]}", &seqs, true),
            Verdict::Done
        );
        assert_eq!(
            verdict(
                br#"{"batchItemFailures":[{"itemIdentifier":"12"},{"itemIdentifier":"11"}]}"#,
                &seqs,
                true
            ),
            Verdict::FailedFrom(1)
        );
        assert_eq!(
            verdict(
                br#"{"batchItemFailures":[{"itemIdentifier":"10"}]}"#,
                &seqs,
                true
            ),
            Verdict::FailedFrom(0)
        );
        for bad in [
            &br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#[..],
            br#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            br#"{"batchItemFailures":[{"itemidentifier":"11"}]}"#,
            br#"{"batchItemFailures":[{"itemIdentifier":"99"}]}"#,
            br#"{"batchItemFailures":[{"itemIdentifier":11}]}"#,
            br#"{"batchItemFailures":"11"}"#,
            b"{not json",
        ] {
            assert!(
                matches!(verdict(bad, &seqs, true), Verdict::Invalid(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn failure_records() {
        let a = meta(7, "orders.eu", b"a", 1_573_691_884_835);
        let b = meta(9, "orders.eu", b"b", 1_573_691_885_580);
        let failure = Failure {
            function_error: true,
            executed_version: "$LATEST".into(),
        };
        let record = failure_record(&FailureContext {
            request_id: "rid",
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f",
            condition: RETRIES_EXHAUSTED,
            invocations: 3,
            failure: Some(&failure),
            version: "$LATEST",
            stream_arn: "arn:lambent:nats:::c/jetstream/S",
            records: &[&a, &b],
            now: OffsetDateTime::from_unix_timestamp_nanos(1_573_691_886_021_000_000).unwrap(),
        });
        assert_eq!(
            record,
            json!({
                "requestContext": {
                    "requestId": "rid",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "version": "1.0",
                "timestamp": "2019-11-14T00:38:06.021Z",
                "KinesisBatchInfo": {
                    "shardId": "shardId-orders.eu",
                    "startSequenceNumber": "7",
                    "endSequenceNumber": "9",
                    "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
                    "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
                    "batchSize": 2,
                    "streamArn": "arn:lambent:nats:::c/jetstream/S",
                },
            })
        );
        let never = failure_record(&FailureContext {
            request_id: "rid",
            function_arn: "f",
            condition: AGE_EXCEEDED,
            invocations: 0,
            failure: None,
            version: "3",
            stream_arn: "s",
            records: &[&a],
            now: OffsetDateTime::UNIX_EPOCH,
        });
        assert_eq!(
            never["responseContext"],
            json!({"statusCode": 0, "executedVersion": "3"})
        );
        assert_eq!(never["KinesisBatchInfo"]["batchSize"], 1);
    }

    #[test]
    fn retries_bisection_and_age() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(30), RETRY_DELAY_MAX);
        assert_eq!(halves(vec![1, 2, 3, 4]), (vec![1, 2], vec![3, 4]));
        assert_eq!(halves(vec![1, 2, 3]), (vec![1, 2], vec![3]));
        assert_eq!(halves(vec![1, 2]), (vec![1], vec![2]));
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let published = [at(100), at(150), at(200)];
        let age = Duration::from_secs(60);
        assert_eq!(expired_prefix(&published, at(159), age), 0);
        assert_eq!(expired_prefix(&published, at(161), age), 1);
        assert_eq!(expired_prefix(&published, at(300), age), 3);
    }

    #[test]
    fn settings_from_a_mapping() {
        let doc = json!({
            "FunctionArn": "arn:aws:lambda:eu-west-1:000000000000:function:f",
            "StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": 1_700_000_000.5,
            "BatchSize": 10, "MaximumBatchingWindowInSeconds": 2, "ParallelizationFactor": 3,
            "MaximumRetryAttempts": 2, "MaximumRecordAgeInSeconds": 60,
            "BisectBatchOnFunctionError": true, "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": "http://127.0.0.1:1/x"}},
        });
        let s = Settings::of(
            doc.as_object().unwrap(),
            "nats://u:secret@127.0.0.1:4222".into(),
            "S".into(),
            Some("orders.>".into()),
        )
        .unwrap();
        assert_eq!(s.region, "eu-west-1");
        assert!(!s.shown_url.contains("secret"));
        assert_eq!(
            (s.batch_size, s.window, s.parallelization),
            (10, Duration::from_secs(2), 3)
        );
        assert_eq!(
            (s.max_retries, s.max_age),
            (Some(2), Some(Duration::from_secs(60)))
        );
        assert!(s.bisect && s.report_failures);
        assert_eq!(s.on_failure.as_deref(), Some("http://127.0.0.1:1/x"));
        assert_eq!(s.subject_filter, "orders.>");
        assert_eq!(
            s.deliver_policy(),
            DeliverPolicy::ByStartTime {
                start_time: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_500_000_000)
                    .unwrap()
            }
        );
        assert_eq!(s.max_ack_pending(), 1_000);
        let doc = json!({"StartingPosition": "LATEST", "MaximumRetryAttempts": -1, "MaximumRecordAgeInSeconds": -1});
        let s = Settings::of(
            doc.as_object().unwrap(),
            "nats://h".into(),
            "S".into(),
            None,
        )
        .unwrap();
        assert_eq!(
            (s.max_retries, s.max_age, s.batch_size, s.parallelization),
            (None, None, 100, 1)
        );
        assert_eq!(s.deliver_policy(), DeliverPolicy::New);
        assert_eq!(s.subject_filter, "");
        for bad in [
            json!({}),
            json!({"StartingPosition": "AT_TIMESTAMP"}),
            json!({"StartingPosition": "LATEST", "TumblingWindowInSeconds": 30}),
            json!({"StartingPosition": "LATEST", "FilterCriteria": {"Filters": [{"Pattern": "{}"}]}}),
        ] {
            assert!(
                Settings::of(
                    bad.as_object().unwrap(),
                    "nats://h".into(),
                    "S".into(),
                    None
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    /// A held record of `subject` that arrived `ago` before now.
    fn held(context: &jetstream::Context, seq: u64, subject: &str, ago: Duration) -> Record {
        Record {
            meta: meta(seq, subject, b"x", 0),
            acker: Acker::new(context.clone(), None),
            arrived: Instant::now() - ago,
        }
    }

    #[tokio::test]
    async fn held_records_make_batches_per_subject() {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        let context = jetstream::new(client);
        let doc = json!({"StartingPosition": "LATEST", "BatchSize": 3, "MaximumBatchingWindowInSeconds": 1});
        let settings = Settings::of(
            doc.as_object().unwrap(),
            "nats://h".into(),
            "S".into(),
            None,
        )
        .unwrap();
        let mut h = Held::default();
        for seq in [3, 1, 2, 5, 4, 1, 6, 7] {
            h.insert(held(&context, seq, "a", Duration::ZERO));
        }
        h.insert(held(&context, 8, "b", Duration::ZERO));
        assert_eq!(h.known.len(), 8, "a redelivery of a held record is ignored");
        let seqs = |b: &Batch| b.records.iter().map(|r| r.meta.seq).collect::<Vec<_>>();
        // Full batches are ready at once, in sequence order; a partial one waits for its window.
        assert_eq!(h.next_ready(&settings), Ok("a".to_string()));
        let first = h.take_batch("a", &settings, 10).unwrap();
        assert_eq!(seqs(&first), [1, 2, 3]);
        let second = h.take_batch("a", &settings, 10).unwrap();
        assert_eq!(seqs(&second), [4, 5, 6]);
        let Err(Some(wake)) = h.next_ready(&settings) else {
            panic!("nothing should be ready before the window ends");
        };
        assert!(wake > Instant::now() && wake <= Instant::now() + Duration::from_secs(1));
        // A subject with a batch in flight is not ready; a record older than the window is.
        h.shards.get_mut("a").unwrap().in_flight = Some(first);
        h.insert(held(&context, 9, "c", Duration::from_secs(2)));
        assert_eq!(h.next_ready(&settings), Ok("c".to_string()));
        // A retried batch goes before held records, after its backoff.
        let shard = h.shards.get_mut("a").unwrap();
        shard.in_flight = None;
        shard.retry.push_front(second);
        shard.not_before = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(h.next_ready(&settings), Ok("c".to_string()));
        h.shards.get_mut("a").unwrap().not_before = None;
        assert_eq!(h.next_ready(&settings), Ok("a".to_string()));
        assert_eq!(seqs(&h.take_batch("a", &settings, 10).unwrap()), [4, 5, 6]);
        // What a stopping session returns, in sequence order (without what is in flight).
        let back: Vec<u64> = h.waiting().iter().map(|r| r.meta.seq).collect();
        assert_eq!(back, [7, 8, 9]);
    }

    #[tokio::test]
    async fn a_record_too_large_for_an_event_is_discarded_alone() {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        let context = jetstream::new(client);
        let doc = json!({"StartingPosition": "LATEST", "BatchSize": 10});
        let settings = Settings::of(
            doc.as_object().unwrap(),
            "nats://h".into(),
            "S".into(),
            None,
        )
        .unwrap();
        let mut h = Held::default();
        for (seq, len) in [(1, 10), (2, 5 * 1024 * 1024), (3, 10)] {
            let mut record = held(&context, seq, "a", Duration::ZERO);
            record.meta.payload = Bytes::from(vec![b'x'; len]);
            record.meta.size = entry_size("a", len, 40);
            h.insert(record);
        }
        let seqs = |b: &Batch| b.records.iter().map(|r| r.meta.seq).collect::<Vec<_>>();
        let batch = h.take_batch("a", &settings, 10).unwrap();
        assert_eq!((seqs(&batch), batch.discard), (vec![1], None));
        let batch = h.take_batch("a", &settings, 10).unwrap();
        assert_eq!(
            (seqs(&batch), batch.discard),
            (vec![2], Some(SIZE_EXCEEDED))
        );
        let batch = h.take_batch("a", &settings, 10).unwrap();
        assert_eq!((seqs(&batch), batch.discard), (vec![3], None));
    }

    #[test]
    fn url_credentials() {
        assert!(connect_options("nats://127.0.0.1").is_ok());
        let err = connect_options("http://u:secret@h").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn iso_times() {
        assert_eq!(
            iso_millis(OffsetDateTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            epoch_seconds(OffsetDateTime::from_unix_timestamp_nanos(1_999_999_999).unwrap()),
            1.999
        );
    }
}
