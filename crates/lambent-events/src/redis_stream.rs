//! The Redis Streams poller: a stream read through a consumer group, with stream semantics
//! close to Kinesis' and a record shape close to SQS'.
//!
//! - The consumer group is `lambent-<mapping uuid>`, created (with `MKSTREAM`) where
//!   `StartingPosition` says: `TRIM_HORIZON` (the default) from the stream's first entry,
//!   `LATEST` after its last one, `AT_TIMESTAMP` from `StartingPositionTimestamp`. The group
//!   then remembers where the mapping is, so entries added while Lambent is away are read when
//!   it is back. The consumer is named after the server ([`consumer_name`]).
//! - Batches: `XREADGROUP COUNT <BatchSize>`, then, for up to
//!   `MaximumBatchingWindowInSeconds` (default 0), more until the batch is full; invoked
//!   synchronously with `{"Records": [...]}` (see [`record`]); an event never exceeds 6 MB
//!   (a larger batch is split).
//! - Entries are acknowledged (`XACK`) only after the function succeeded on them. With
//!   `FunctionResponseTypes: ["ReportBatchItemFailures"]`, the entries named in
//!   `batchItemFailures[].itemIdentifier` (entry ids) stay pending and the others are
//!   acknowledged; an answer that is not a valid report fails the whole batch.
//! - Pending entries of this consumer are read again first (`XREADGROUP … 0`), after a
//!   failure (with backoff) and after a restart, so nothing is lost; entries left pending by
//!   consumers that went away are claimed (`XAUTOCLAIM`) once idle for
//!   [`ORPHAN_IDLE`]. An entry delivered more than `MaximumRetryAttempts` + 1 times
//!   (`XPENDING`'s delivery count; default [`DEFAULT_RETRIES`] retries, `-1` for ever) is
//!   discarded: acknowledged (it stays in the stream), logged, and sent in a failure record to
//!   `DestinationConfig.OnFailure` when the mapping has one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use redis::Value as Reply;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use lambent_invoke::Invoker;
use lambent_invoke::targets::mask_passwords;
use lambent_store::{Store, kinds};
use lambent_types::limits::SYNC_PAYLOAD_BYTES;

use crate::mappings::{
    Answer, Ended, Session, Status, Target, invoke, keep_connected, wait_or_stop,
};
use crate::mqtt::{now_iso, on_failure_of, retry_pause};

/// The function retries of an entry when the mapping sets no `MaximumRetryAttempts`.
pub(crate) const DEFAULT_RETRIES: u32 = 2;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take (reads block for at most [`POLL_BLOCK`]).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a read blocks waiting for new entries.
const POLL_BLOCK: Duration = Duration::from_secs(1);
/// Entries another consumer of the group left pending this long are claimed: longer than a
/// function may run (15 minutes) plus its retries' pauses.
pub(crate) const ORPHAN_IDLE: Duration = Duration::from_secs(20 * 60);
/// How often orphaned entries are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(60);
/// Room kept for the event's envelope around the records.
const ENVELOPE_BYTES: usize = 1024;
/// Failure records larger than this leave the records out (asynchronous payload limit).
const MAX_RECORD_PAYLOAD: usize = 256 * 1024;

/// What a Redis stream poller needs from its mapping.
pub(crate) struct Settings {
    /// The server to connect to.
    client: redis::Client,
    /// The URL with its password masked, for messages.
    shown_url: String,
    /// The stream's key.
    key: String,
    /// Most entries per batch (`BatchSize`).
    batch_size: usize,
    /// How long a batch is gathered (`MaximumBatchingWindowInSeconds`).
    window: Duration,
    /// `None`: retry until the function succeeds (`MaximumRetryAttempts` -1).
    max_retries: Option<u32>,
    /// `FunctionResponseTypes` holds `ReportBatchItemFailures`.
    report_failures: bool,
    /// Where a new consumer group starts: `0`, `$` or an entry id.
    start: String,
    /// `DestinationConfig.OnFailure.Destination`, when set.
    on_failure: Option<String>,
    /// The mapping's `FunctionArn`, for failure records.
    function_arn: String,
}

impl Settings {
    /// Reads the mapping's batching, retry, position and destination members and the server
    /// URL.
    pub(crate) fn of(doc: &Map<String, Value>, url: &str, key: String) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "the connection URL {} is not a Redis URL: {}",
                mask_passwords(url),
                mask_passwords(&e.to_string())
            )
        })?;
        let int = |key: &str| doc.get(key).and_then(Value::as_i64);
        let batch_size = int("BatchSize").unwrap_or(100).clamp(1, 10_000) as usize;
        let window = Duration::from_secs(
            int("MaximumBatchingWindowInSeconds")
                .unwrap_or(0)
                .clamp(0, 300) as u64,
        );
        let max_retries = match int("MaximumRetryAttempts") {
            Some(n) if n < 0 => None,
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => Some(DEFAULT_RETRIES),
        };
        let report_failures = doc
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| {
                types
                    .iter()
                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
            });
        let start = match doc.get("StartingPosition").and_then(Value::as_str) {
            Some("LATEST") => "$".to_string(),
            Some("AT_TIMESTAMP") => {
                let seconds = doc
                    .get("StartingPositionTimestamp")
                    .and_then(Value::as_f64)
                    .ok_or("StartingPosition AT_TIMESTAMP needs StartingPositionTimestamp")?;
                start_at(seconds)
            }
            _ => "0".to_string(),
        };
        Ok(Self {
            client,
            shown_url: mask_passwords(url),
            key,
            batch_size,
            window,
            max_retries,
            report_failures,
            start,
            on_failure: on_failure_of(doc),
            function_arn: doc
                .get("FunctionArn")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// The group position that delivers the entries added at or after `seconds` (Unix time).
fn start_at(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0) as u64;
    match ms {
        0 => "0".to_string(),
        ms => format!("{}-{}", ms - 1, u64::MAX),
    }
}

/// This server's consumer name in the groups: `lambent-<host name>`, stable across restarts
/// so that a restarted server reads again what it left pending.
pub(crate) fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if host.is_empty() {
        "lambent".to_string()
    } else {
        format!("lambent-{host}")
    }
}

/// A stream entry read through the group.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// The entry id (`<ms>-<seq>`).
    id: String,
    /// Field-value pairs in order; `None` when the entry was deleted from the stream while
    /// pending.
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// How many times the group delivered it (this delivery included).
    deliveries: u64,
}

/// A command failed: the session ends (it is reopened with backoff).
fn failed(what: &str) -> impl Fn(redis::RedisError) -> Ended + '_ {
    move |e| Ended::Lost {
        error: format!("{what}: {}", mask_passwords(&e.to_string())),
        connected: true,
    }
}

/// Reads the stream until `stop` is set, reconnecting with backoff; when the mapping was
/// deleted, its consumer group is destroyed on the way out.
pub(crate) async fn run(
    settings: Settings,
    target: Target,
    invoker: Arc<Invoker>,
    store: Arc<dyn Store>,
    status: Status,
    mut stop: watch::Receiver<bool>,
) {
    let mut poller = Poller {
        group: format!("lambent-{}", target.uuid),
        consumer: consumer_name(),
        settings,
        target,
        invoker,
        status,
        failures: 0,
        owed_acks: Vec::new(),
    };
    keep_connected(&mut poller, &mut stop).await;
    let deleted = matches!(
        store.get_document(kinds::EVENT_SOURCE_MAPPING, "", &poller.target.uuid),
        Ok(None)
    );
    if deleted {
        poller.destroy_group().await;
    }
}

/// A mapping's reader of its stream.
struct Poller {
    /// What the mapping asks for.
    settings: Settings,
    /// The function invoked.
    target: Target,
    /// Invokes it.
    invoker: Arc<Invoker>,
    /// Reports the mapping's health.
    status: Status,
    /// The consumer group: `lambent-<uuid>`.
    group: String,
    /// This server's consumer in the group.
    consumer: String,
    /// Failed batches in a row, for the retry pause.
    failures: u32,
    /// Entries processed whose `XACK` was lost with the connection: acknowledged first thing
    /// on the next one.
    owed_acks: Vec<String>,
}

impl Poller {
    /// Opens a connection with this poller's timeouts.
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connecting = self
            .settings
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(format!(
                "cannot connect to {}: {}",
                self.settings.shown_url,
                mask_passwords(&e.to_string())
            )),
            Err(_) => Err(format!(
                "no answer from {} within {}s",
                self.settings.shown_url,
                (CONNECT_TIMEOUT * 2).as_secs()
            )),
        }
    }

    /// One connection's life: connect, make sure the group exists, read and process
    /// batches until stopped or a command fails.
    async fn connect_and_consume(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        let lost = |error: String| Ended::Lost {
            error,
            connected: false,
        };
        let mut conn = match self.connect().await {
            Ok(conn) => conn,
            Err(error) => return lost(error),
        };
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.settings.key)
            .arg(&self.group)
            .arg(&self.settings.start)
            .arg("MKSTREAM")
            .query_async::<Reply>(&mut conn)
            .await;
        match created {
            Ok(_) => tracing::info!(
                uuid = %self.target.uuid, stream = %self.settings.key, group = %self.group,
                start = %self.settings.start, "Redis stream source: consumer group created"
            ),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => {
                return lost(format!(
                    "cannot create consumer group {} on stream {:?}: {}",
                    self.group,
                    self.settings.key,
                    mask_passwords(&e.to_string())
                ));
            }
        }
        if !self.owed_acks.is_empty() {
            let owed = std::mem::take(&mut self.owed_acks);
            if let Err(ended) = self.ack(&mut conn, &owed).await {
                return ended;
            }
        }
        tracing::info!(
            uuid = %self.target.uuid, stream = %self.settings.key, group = %self.group,
            consumer = %self.consumer, "Redis stream source reading"
        );
        self.status.ok(false);
        let mut last_claim: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                return Ended::Stopped;
            }
            if last_claim.is_none_or(|at| at.elapsed() >= CLAIM_EVERY) {
                last_claim = Some(Instant::now());
                self.claim_orphans(&mut conn).await;
            }
            let batch = match self.next_batch(&mut conn, stop).await {
                Ok(batch) => batch,
                Err(ended) => return ended,
            };
            if batch.is_empty() {
                continue;
            }
            if let Err(ended) = self.process(&mut conn, batch, stop).await {
                return ended;
            }
        }
    }

    /// `XREADGROUP` of up to `count` entries after `id` (`>` for new ones, `0` for this
    /// consumer's pending ones).
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, Ended> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.settings.key).arg(id);
        let reply = cmd
            .query_async::<Reply>(conn)
            .await
            .map_err(failed("cannot read the stream"))?;
        parse_read(reply).map_err(|error| Ended::Lost {
            error: format!("unexpected XREADGROUP reply: {error}"),
            connected: true,
        })
    }

    /// The next batch: this consumer's pending entries first (retries, or what a previous run
    /// left), else new entries gathered for up to the batching window. Empty when nothing
    /// came within [`POLL_BLOCK`].
    async fn next_batch(
        &mut self,
        conn: &mut MultiplexedConnection,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<Entry>, Ended> {
        let batch_size = self.settings.batch_size;
        let mut pending = self.read(conn, "0", batch_size, None).await?;
        if !pending.is_empty() {
            let counts = self.delivery_counts(conn, &pending).await?;
            let (mut ready, mut gone, mut exhausted) = (Vec::new(), Vec::new(), Vec::new());
            for mut entry in pending.drain(..) {
                entry.deliveries = counts.get(&entry.id).copied().unwrap_or(1);
                if entry.fields.is_none() {
                    gone.push(entry.id);
                } else if self
                    .settings
                    .max_retries
                    .is_some_and(|max| entry.deliveries > u64::from(max) + 1)
                {
                    exhausted.push(entry);
                } else {
                    ready.push(entry);
                }
            }
            if !gone.is_empty() {
                tracing::warn!(
                    uuid = %self.target.uuid, stream = %self.settings.key, entries = gone.len(),
                    "Redis stream source: pending entries were deleted from the stream; acknowledged"
                );
                self.ack(conn, &gone).await?;
            }
            if !exhausted.is_empty() {
                self.discard(conn, &exhausted, "RetryAttemptsExhausted")
                    .await?;
            }
            return Ok(ready);
        }
        let first = tokio::select! {
            read = self.read(conn, ">", batch_size, Some(POLL_BLOCK)) => read?,
            _ = stop.wait_for(|stopped| *stopped) => return Err(Ended::Stopped),
        };
        let mut batch = first;
        if batch.is_empty() || self.settings.window.is_zero() {
            return Ok(batch);
        }
        let deadline = Instant::now() + self.settings.window;
        while batch.len() < batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = tokio::select! {
                read = self.read(conn, ">", batch_size - batch.len(), Some(left.min(POLL_BLOCK))) => read?,
                // What was read is pending for this consumer: read again after a restart.
                _ = stop.wait_for(|stopped| *stopped) => return Err(Ended::Stopped),
            };
            batch.extend(more);
        }
        Ok(batch)
    }

    /// The delivery counts (`XPENDING`) of this consumer's pending `entries` (in id order).
    async fn delivery_counts(
        &self,
        conn: &mut MultiplexedConnection,
        entries: &[Entry],
    ) -> Result<HashMap<String, u64>, Ended> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let reply = redis::cmd("XPENDING")
            .arg(&self.settings.key)
            .arg(&self.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&self.consumer)
            .query_async::<Reply>(conn)
            .await
            .map_err(failed("cannot read the pending entries"))?;
        Ok(parse_pending(reply))
    }

    /// `XACK`s `ids`; on a lost connection they are acknowledged on the next one.
    async fn ack(&mut self, conn: &mut MultiplexedConnection, ids: &[String]) -> Result<(), Ended> {
        if ids.is_empty() {
            return Ok(());
        }
        let acked = redis::cmd("XACK")
            .arg(&self.settings.key)
            .arg(&self.group)
            .arg(ids)
            .query_async::<Reply>(conn)
            .await;
        match acked {
            Ok(_) => Ok(()),
            Err(e) => {
                self.owed_acks.extend(ids.iter().cloned());
                Err(failed("cannot acknowledge entries")(e))
            }
        }
    }

    /// Moves entries other consumers of the group left pending for [`ORPHAN_IDLE`] to this
    /// consumer (`XAUTOCLAIM … JUSTID`), which then reads them as its own pending entries.
    async fn claim_orphans(&self, conn: &mut MultiplexedConnection) {
        let mut cursor = "0-0".to_string();
        for _ in 0..10 {
            let reply = redis::cmd("XAUTOCLAIM")
                .arg(&self.settings.key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(ORPHAN_IDLE.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.settings.batch_size)
                .arg("JUSTID")
                .query_async::<Reply>(conn)
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(uuid = %self.target.uuid, "Redis stream source: XAUTOCLAIM failed: {e}");
                    return;
                }
            };
            let (next, claimed) = parse_autoclaim(reply);
            if claimed > 0 {
                tracing::info!(
                    uuid = %self.target.uuid, stream = %self.settings.key, entries = claimed,
                    "Redis stream source: claimed entries another consumer left pending"
                );
            }
            match next {
                Some(next) if next != "0-0" => cursor = next,
                _ => return,
            }
        }
    }

    /// Invokes the function with a batch (in events of at most 6 MB) and acknowledges what
    /// succeeded; failed entries stay pending and are read again after a pause.
    async fn process(
        &mut self,
        conn: &mut MultiplexedConnection,
        batch: Vec<Entry>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let mut any_failed = false;
        let mut chunk: Vec<(Entry, Value)> = Vec::new();
        let mut size = ENVELOPE_BYTES;
        let mut chunks: Vec<Vec<(Entry, Value)>> = Vec::new();
        let mut oversized = Vec::new();
        for entry in batch {
            let record = record(&entry, &self.target.source_arn, &self.settings.key);
            let bytes = record.to_string().len() + 1;
            if bytes + ENVELOPE_BYTES > SYNC_PAYLOAD_BYTES {
                oversized.push(entry);
                continue;
            }
            if size + bytes > SYNC_PAYLOAD_BYTES {
                chunks.push(std::mem::take(&mut chunk));
                size = ENVELOPE_BYTES;
            }
            size += bytes;
            chunk.push((entry, record));
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        if !oversized.is_empty() {
            tracing::error!(
                uuid = %self.target.uuid, stream = %self.settings.key, entries = oversized.len(),
                "Redis stream source: entries too large for one event (6 MB); discarded"
            );
            self.status
                .failed("an entry was larger than the 6 MB payload limit and was discarded");
            self.discard(conn, &oversized, "PayloadTooLarge").await?;
        }
        for chunk in chunks {
            let ids: Vec<String> = chunk.iter().map(|(entry, _)| entry.id.clone()).collect();
            let records: Vec<Value> = chunk.into_iter().map(|(_, record)| record).collect();
            let payload = Bytes::from(json!({ "Records": records }).to_string());
            match invoke(&self.invoker, &self.target, payload, &self.status, stop).await {
                Answer::Succeeded(body) => {
                    let failed: HashSet<String> = if self.settings.report_failures {
                        match item_failures(&body, &ids) {
                            Ok(failed) => failed,
                            Err(why) => {
                                tracing::warn!(
                                    uuid = %self.target.uuid, stream = %self.settings.key,
                                    "Redis stream source: {why}; the whole batch failed"
                                );
                                ids.iter().cloned().collect()
                            }
                        }
                    } else {
                        HashSet::new()
                    };
                    let done: Vec<String> = ids
                        .iter()
                        .filter(|id| !failed.contains(*id))
                        .cloned()
                        .collect();
                    self.ack(conn, &done).await?;
                    if failed.is_empty() {
                        self.status.ok(true);
                    } else {
                        any_failed = true;
                        tracing::warn!(
                            uuid = %self.target.uuid, stream = %self.settings.key,
                            failed = failed.len(), records = ids.len(),
                            "Redis stream source: the function reported failed records; they stay pending"
                        );
                        self.status.failed(&format!(
                            "Function reported {} of {} records as failed",
                            failed.len(),
                            ids.len()
                        ));
                    }
                }
                Answer::Failed(_) => {
                    any_failed = true;
                    tracing::warn!(
                        uuid = %self.target.uuid, stream = %self.settings.key, records = ids.len(),
                        "Redis stream source: the function failed; the batch stays pending"
                    );
                    self.status.failed("Function call failed");
                }
                Answer::Stopped => return Err(Ended::Stopped),
            }
        }
        if any_failed {
            self.failures = self.failures.saturating_add(1);
            if wait_or_stop(stop, retry_pause(self.failures)).await {
                return Err(Ended::Stopped);
            }
        } else {
            self.failures = 0;
        }
        Ok(())
    }

    /// Gives up on `entries`: sends their failure record to the OnFailure destination (if
    /// any), logs them and acknowledges them (they stay in the stream).
    async fn discard(
        &mut self,
        conn: &mut MultiplexedConnection,
        entries: &[Entry],
        condition: &str,
    ) -> Result<(), Ended> {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let attempts = entries
            .iter()
            .map(|e| e.deliveries.saturating_sub(1))
            .max()
            .unwrap_or(0);
        tracing::error!(
            uuid = %self.target.uuid, stream = %self.settings.key, ids = ?ids, condition,
            on_failure = self.settings.on_failure.as_deref().unwrap_or("none"),
            "Redis stream source: entries discarded (acknowledged; they stay in the stream)"
        );
        if condition == "RetryAttemptsExhausted" {
            self.status.failed(&format!(
                "Function call failed; {} entries were discarded after {attempts} attempts",
                ids.len()
            ));
        }
        if let Some(destination) = &self.settings.on_failure {
            let mut failure = json!({
                "version": "1.0",
                "timestamp": now_iso(),
                "requestContext": {
                    "functionArn": self.settings.function_arn,
                    "condition": condition,
                    "approximateInvokeCount": attempts,
                },
                "RedisStreamBatchInfo": {
                    "stream": self.settings.key,
                    "group": self.group,
                    "consumer": self.consumer,
                    "startId": ids.first(),
                    "endId": ids.last(),
                    "batchSize": ids.len(),
                    "ids": ids,
                    "eventSourceARN": self.target.source_arn,
                },
            });
            if condition != "PayloadTooLarge" {
                let records: Vec<Value> = entries
                    .iter()
                    .map(|e| record(e, &self.target.source_arn, &self.settings.key))
                    .collect();
                let records = Value::Array(records);
                if records.to_string().len() <= MAX_RECORD_PAYLOAD {
                    failure["Records"] = records;
                }
            }
            let sent = self.invoker.send_record(
                &self.target.function.name,
                destination,
                failure.to_string().into_bytes(),
                vec![("Condition".to_string(), condition.to_string())],
            );
            match sent {
                Ok(()) => tracing::info!(
                    uuid = %self.target.uuid, destination = %destination,
                    "Redis stream source: failure record sent to the OnFailure destination"
                ),
                Err(e) => tracing::error!(
                    uuid = %self.target.uuid, destination = %destination,
                    "Redis stream source: cannot send the failure record: {e}"
                ),
            }
        }
        self.ack(conn, &ids).await
    }

    /// Destroys the consumer group of a deleted mapping (`XGROUP DESTROY`). Best effort.
    async fn destroy_group(&self) {
        let destroyed = async {
            let mut conn = self.connect().await?;
            let exists = redis::cmd("EXISTS")
                .arg(&self.settings.key)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if exists == 0 {
                // The stream, and its groups with it, is gone already.
                return Ok(Reply::Nil);
            }
            redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&self.settings.key)
                .arg(&self.group)
                .query_async::<Reply>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, destroyed).await {
            Ok(Ok(_)) => tracing::info!(
                uuid = %self.target.uuid, stream = %self.settings.key, group = %self.group,
                "Redis stream source: the deleted mapping's consumer group was destroyed"
            ),
            Ok(Err(e)) => tracing::warn!(
                uuid = %self.target.uuid, stream = %self.settings.key, group = %self.group,
                "Redis stream source: cannot destroy the deleted mapping's consumer group: {e}"
            ),
            Err(_) => tracing::warn!(
                uuid = %self.target.uuid, stream = %self.settings.key, group = %self.group,
                "Redis stream source: no answer while destroying the deleted mapping's consumer group"
            ),
        }
    }
}

/// One entry as the event lists it: `fields` holds the values that are UTF-8, `binaryFields`
/// (only when there are some) the others in base64; a field repeated keeps its last value.
fn record(entry: &Entry, source_arn: &str, key: &str) -> Value {
    let mut fields = Map::new();
    let mut binary = Map::new();
    for (name, value) in entry.fields.iter().flatten() {
        let name = String::from_utf8_lossy(name).into_owned();
        match std::str::from_utf8(value) {
            Ok(text) => {
                binary.remove(&name);
                fields.insert(name, Value::from(text));
            }
            Err(_) => {
                fields.remove(&name);
                binary.insert(
                    name,
                    Value::from(base64::engine::general_purpose::STANDARD.encode(value)),
                );
            }
        }
    }
    let mut record = json!({
        "eventSource": "lambent:redis",
        "eventSourceARN": source_arn,
        "stream": key,
        "id": entry.id,
        "deliveryCount": entry.deliveries,
        "fields": fields,
    });
    if !binary.is_empty() {
        record["binaryFields"] = Value::Object(binary);
    }
    record
}

/// The ids a function reported failed in `batchItemFailures`, following SQS' rules: an empty
/// or `null` answer or list means all succeeded; an answer that is not a JSON object (or
/// `null`), a list that is not a list, or an item without a known `itemIdentifier` is not a
/// valid report (`Err`, why).
fn item_failures(body: &[u8], ids: &[String]) -> Result<HashSet<String>, String> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Ok(HashSet::new());
    }
    let answer: Value = serde_json::from_slice(body)
        .map_err(|_| "the function's answer is not JSON".to_string())?;
    let list = match &answer {
        Value::Null => return Ok(HashSet::new()),
        Value::Object(answer) => match answer.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(HashSet::new()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err("batchItemFailures is not a list".to_string()),
        },
        _ => return Err("the function's answer is not a JSON object".to_string()),
    };
    let mut failed = HashSet::new();
    for item in list {
        let id = item
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or("a batchItemFailures item has no itemIdentifier")?;
        if !ids.iter().any(|known| known == id) {
            return Err(format!(
                "itemIdentifier {id:?} is not an entry of the batch"
            ));
        }
        failed.insert(id.to_string());
    }
    Ok(failed)
}

/// Bytes of a bulk or simple string reply.
fn bytes_of(reply: &Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::BulkString(bytes) => Some(bytes.clone()),
        Reply::SimpleString(text) => Some(text.clone().into_bytes()),
        Reply::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        _ => None,
    }
}

/// A string reply as UTF-8 text.
fn text_of(reply: &Reply) -> Option<String> {
    bytes_of(reply).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The entries of an `XREADGROUP` reply for one stream (RESP2 arrays or RESP3 maps); no
/// entries on a timeout (`nil`).
fn parse_read(reply: Reply) -> Result<Vec<Entry>, String> {
    let streams: Vec<Reply> = match reply {
        Reply::Nil => return Ok(Vec::new()),
        Reply::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Reply::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Reply::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("{other:?}")),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Reply::Array(entries) = entries else {
            return Err("the stream's entries are not a list".to_string());
        };
        for entry in entries {
            let Reply::Array(parts) = entry else {
                return Err("an entry is not a list".to_string());
            };
            let mut parts = parts.into_iter();
            let id = parts
                .next()
                .as_ref()
                .and_then(text_of)
                .ok_or("an entry has no id")?;
            let fields = match parts.next() {
                Some(Reply::Array(flat)) => {
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    for pair in flat.chunks(2) {
                        if let [name, value] = pair {
                            pairs.push((
                                bytes_of(name).unwrap_or_default(),
                                bytes_of(value).unwrap_or_default(),
                            ));
                        }
                    }
                    Some(pairs)
                }
                Some(Reply::Map(map)) => Some(
                    map.iter()
                        .map(|(name, value)| {
                            (
                                bytes_of(name).unwrap_or_default(),
                                bytes_of(value).unwrap_or_default(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            };
            out.push(Entry {
                id,
                fields,
                deliveries: 1,
            });
        }
    }
    Ok(out)
}

/// Delivery counts by id from an extended `XPENDING` reply (`[[id, consumer, idle, count]]`).
fn parse_pending(reply: Reply) -> HashMap<String, u64> {
    let Reply::Array(rows) = reply else {
        return HashMap::new();
    };
    rows.iter()
        .filter_map(|row| match row {
            Reply::Array(cells) if cells.len() >= 4 => {
                let id = text_of(&cells[0])?;
                let count = match &cells[3] {
                    Reply::Int(n) => u64::try_from(*n).ok()?,
                    other => text_of(other)?.parse().ok()?,
                };
                Some((id, count))
            }
            _ => None,
        })
        .collect()
}

/// The next cursor and the number of entries claimed, from an `XAUTOCLAIM … JUSTID` reply.
fn parse_autoclaim(reply: Reply) -> (Option<String>, usize) {
    let Reply::Array(parts) = reply else {
        return (None, 0);
    };
    let next = parts.first().and_then(text_of);
    let claimed = match parts.get(1) {
        Some(Reply::Array(ids)) => ids.len(),
        _ => 0,
    };
    (next, claimed)
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
            "Redis stream source (stream {:?} at {})",
            self.settings.key, self.settings.shown_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Reply {
        Reply::BulkString(s.to_vec())
    }

    #[test]
    fn settings_from_a_mapping() {
        let doc = json!({"BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"], "StartingPosition": "LATEST"});
        let s = Settings::of(
            doc.as_object().unwrap(),
            "redis://:secret@127.0.0.1:6379/0",
            "k".into(),
        )
        .unwrap();
        assert_eq!(s.batch_size, 10);
        assert_eq!(s.window, Duration::ZERO);
        assert_eq!(s.max_retries, Some(DEFAULT_RETRIES));
        assert!(s.report_failures);
        assert_eq!(s.start, "$");
        assert!(!s.shown_url.contains("secret"));
        let doc = json!({"MaximumRetryAttempts": -1, "MaximumBatchingWindowInSeconds": 2, "StartingPosition": "AT_TIMESTAMP", "StartingPositionTimestamp": 1.5});
        let s = Settings::of(doc.as_object().unwrap(), "redis://h", "k".into()).unwrap();
        assert_eq!(s.max_retries, None);
        assert_eq!(s.window, Duration::from_secs(2));
        assert!(!s.report_failures);
        assert_eq!(s.start, format!("1499-{}", u64::MAX));
        let s = Settings::of(&Map::new(), "redis://h", "k".into()).unwrap();
        assert_eq!((s.start.as_str(), s.batch_size), ("0", 100));
        assert!(Settings::of(&Map::new(), "mqtt://h", "k".into()).is_err());
        assert_eq!(start_at(0.0), "0");
    }

    #[test]
    fn read_replies() {
        assert_eq!(parse_read(Reply::Nil).unwrap(), vec![]);
        let reply = Reply::Array(vec![Reply::Array(vec![
            bulk(b"k"),
            Reply::Array(vec![
                Reply::Array(vec![
                    bulk(b"1-0"),
                    Reply::Array(vec![bulk(b"a"), bulk(b"1"), bulk(b"b"), bulk(b"\xff")]),
                ]),
                Reply::Array(vec![bulk(b"2-0"), Reply::Nil]),
            ]),
        ])]);
        let entries = parse_read(reply).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    id: "1-0".into(),
                    fields: Some(vec![
                        (b"a".to_vec(), b"1".to_vec()),
                        (b"b".to_vec(), b"\xff".to_vec())
                    ]),
                    deliveries: 1
                },
                Entry {
                    id: "2-0".into(),
                    fields: None,
                    deliveries: 1
                },
            ]
        );
        let resp3 = Reply::Map(vec![(
            bulk(b"k"),
            Reply::Array(vec![Reply::Array(vec![
                bulk(b"3-1"),
                Reply::Array(vec![bulk(b"x"), bulk(b"y")]),
            ])]),
        )]);
        assert_eq!(parse_read(resp3).unwrap()[0].id, "3-1");
        assert!(parse_read(Reply::Int(3)).is_err());
    }

    #[test]
    fn records() {
        let entry = Entry {
            id: "5-0".into(),
            fields: Some(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"bin".to_vec(), b"\x00\xff".to_vec()),
                (b"a".to_vec(), b"2".to_vec()),
            ]),
            deliveries: 2,
        };
        assert_eq!(
            record(&entry, "arn:lambent:redis:::c", "k"),
            json!({
                "eventSource": "lambent:redis",
                "eventSourceARN": "arn:lambent:redis:::c",
                "stream": "k",
                "id": "5-0",
                "deliveryCount": 2,
                "fields": {"a": "2"},
                "binaryFields": {"bin": "AP8="},
            })
        );
    }

    #[test]
    fn batch_item_failures() {
        let ids = vec!["1-0".to_string(), "2-0".to_string()];
        let none = HashSet::new();
        assert_eq!(item_failures(b"", &ids).unwrap(), none);
        assert_eq!(item_failures(b"null", &ids).unwrap(), none);
        assert_eq!(item_failures(b"{}", &ids).unwrap(), none);
        assert_eq!(
            item_failures(br#"{"batchItemFailures": []}"#, &ids).unwrap(),
            none
        );
        assert_eq!(
            item_failures(br#"{"batchItemFailures": null}"#, &ids).unwrap(),
            none
        );
        assert_eq!(
            item_failures(
                br#"{"batchItemFailures": [{"itemIdentifier": "2-0"}]}"#,
                &ids
            )
            .unwrap(),
            HashSet::from(["2-0".to_string()])
        );
        for bad in [
            &br#"{"batchItemFailures": [{"itemIdentifier": "9-0"}]}"#[..],
            br#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            br#"{"batchItemFailures": [{"id": "1-0"}]}"#,
            br#"{"batchItemFailures": "1-0"}"#,
            b"\"ok\"",
            b"not json",
        ] {
            assert!(
                item_failures(bad, &ids).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pending_and_autoclaim_replies() {
        let reply = Reply::Array(vec![Reply::Array(vec![
            bulk(b"1-0"),
            bulk(b"c"),
            Reply::Int(10),
            Reply::Int(3),
        ])]);
        assert_eq!(
            parse_pending(reply),
            HashMap::from([("1-0".to_string(), 3)])
        );
        let reply = Reply::Array(vec![
            bulk(b"0-0"),
            Reply::Array(vec![bulk(b"1-0"), bulk(b"2-0")]),
            Reply::Array(vec![]),
        ]);
        assert_eq!(parse_autoclaim(reply), (Some("0-0".to_string()), 2));
    }

    #[test]
    fn consumer_names() {
        let name = consumer_name();
        assert!(name.starts_with("lambent"));
        assert!(name.len() <= 72);
    }
}
