//! The RabbitMQ poller, with Amazon MQ for RabbitMQ's semantics: batches of up to
//! `BatchSize` messages (or 6 MB of event), gathered for up to
//! `MaximumBatchingWindowInSeconds` (500 ms when unset), invoked synchronously with the
//! `rmqMessagesByQueue` event; acknowledged only after the function succeeded, otherwise
//! nacked and requeued. A message that failed more than `MaximumRetryAttempts` times is
//! nacked without requeue, which sends it to the queue's dead-letter exchange.
//!
//! The same poller reads `arn:lambent:sqs:::<connection>/<queue>` sources with SQS's event
//! shape and semantics instead: `Records` with `messageId`, `receiptHandle`, `body`,
//! `attributes`, `messageAttributes` and `md5OfBody`; messages of a failed batch become
//! visible again after the visibility timeout (tag `lambent:visibility-timeout`, 30 s by
//! default); with `ReportBatchItemFailures` only the reported messages are returned.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use lambent_invoke::Invoker;
use lambent_invoke::targets::mask_passwords;

use crate::mappings::{
    Answer, Ended, Session, Status, Target, invoke, keep_connected, wait_or_stop,
};

/// The largest event a batch may make: the synchronous invoke payload limit.
const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;
/// Room kept for the event's envelope around the messages.
const ENVELOPE_BYTES: usize = 1024;
/// The batching window when the mapping sets none (Amazon MQ's default).
const DEFAULT_WINDOW: Duration = Duration::from_millis(500);
/// How long connecting and opening the consumer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most message retry counts remembered (messages without a broker delivery count).
const MAX_TRACKED: usize = 100_000;

/// What a RabbitMQ poller needs from its mapping.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    uri: AMQPUri,
    /// The URL with its password masked, for messages.
    shown_url: String,
    queue: String,
    vhost: String,
    batch_size: usize,
    window: Duration,
    /// `None`: retry until the function succeeds (MaximumRetryAttempts -1 or unset).
    max_retries: Option<u32>,
    /// The event shape and failure handling.
    mode: Mode,
    /// The region events name (`awsRegion`).
    region: String,
}

/// Which of Lambda's event sources the queue is read as.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mode {
    /// Amazon MQ for RabbitMQ: `rmqMessagesByQueue`, failed batches requeued at once.
    AmazonMq,
    /// SQS: `Records`, failed messages visible again after the visibility timeout.
    Sqs {
        /// How long a failed message stays invisible.
        visibility_timeout: Duration,
        /// Whether the function reports partial failures (`ReportBatchItemFailures`).
        report_failures: bool,
    },
}

/// The SQS visibility timeout when the mapping's tag sets none (SQS's default).
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// The mapping tag that sets the SQS-style visibility timeout, in seconds.
const VISIBILITY_TAG: &str = "lambent:visibility-timeout";

impl Settings {
    /// Reads the mapping's batching and retry members and the broker URL (the vhost replaced
    /// by `vhost` when given).
    pub(crate) fn of(
        doc: &Map<String, Value>,
        url: String,
        queue: String,
        vhost: Option<String>,
        sqs: bool,
        region: &str,
    ) -> Result<Self, String> {
        let mode = if sqs {
            let visibility_timeout = match doc
                .get("Tags")
                .and_then(|tags| tags.get(VISIBILITY_TAG))
                .and_then(Value::as_str)
            {
                Some(text) => match text.parse::<u64>() {
                    Ok(seconds) if seconds <= 43_200 => Duration::from_secs(seconds),
                    _ => {
                        return Err(format!(
                            "tag {VISIBILITY_TAG} must be a number of seconds from 0 to 43200, got {text:?}"
                        ));
                    }
                },
                None => DEFAULT_VISIBILITY_TIMEOUT,
            };
            let report_failures = doc
                .get("FunctionResponseTypes")
                .and_then(Value::as_array)
                .is_some_and(|types| types.iter().any(|t| t == "ReportBatchItemFailures"));
            Mode::Sqs {
                visibility_timeout,
                report_failures,
            }
        } else {
            Mode::AmazonMq
        };
        let mut uri: AMQPUri = url.parse().map_err(|e| {
            format!(
                "the connection URL {} is not an AMQP URL: {e}",
                mask_passwords(&url)
            )
        })?;
        if let Some(vhost) = vhost {
            uri.vhost = vhost;
        }
        let int = |key: &str| doc.get(key).and_then(Value::as_i64);
        let default_batch = if sqs { 10 } else { 100 };
        let batch_size = int("BatchSize").unwrap_or(default_batch).clamp(1, 10_000) as usize;
        let window = match int("MaximumBatchingWindowInSeconds") {
            Some(seconds) => Duration::from_secs(seconds.clamp(0, 300) as u64),
            None if sqs => Duration::ZERO,
            None => DEFAULT_WINDOW,
        };
        let max_retries = match int("MaximumRetryAttempts") {
            Some(n) if n >= 0 => Some(n as u32),
            _ => None,
        };
        Ok(Self {
            shown_url: mask_passwords(&url),
            vhost: uri.vhost.clone(),
            uri,
            queue,
            batch_size,
            window,
            max_retries,
            mode,
            region: region.to_string(),
        })
    }
}

/// Polls the queue until `stop` is set, reconnecting with backoff.
pub(crate) async fn run(
    settings: Settings,
    target: Target,
    invoker: Arc<Invoker>,
    status: Status,
    mut stop: watch::Receiver<bool>,
) {
    let mut poller = Poller {
        settings,
        target,
        invoker,
        status,
        attempts: HashMap::new(),
    };
    keep_connected(&mut poller, &mut stop).await;
}

struct Poller {
    settings: Settings,
    target: Target,
    invoker: Arc<Invoker>,
    status: Status,
    /// What this poller saw of each message across redeliveries (for messages the broker
    /// does not count).
    attempts: HashMap<u64, Seen>,
}

/// What a poller remembers of a message between deliveries.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Failed attempts.
    failures: u32,
    /// When it was first received (epoch ms), SQS's `ApproximateFirstReceiveTimestamp`.
    first_ms: i64,
}

/// A message taken into a batch, with its event entry already built.
struct Taken {
    delivery: Delivery,
    entry: Value,
    size: usize,
    /// The SQS `messageId` (SQS mode).
    message_id: String,
}

impl Poller {
    /// One connection's life: connect, consume batches until stopped or the link fails.
    async fn consume(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        let lost = |error: String| Ended::Lost {
            error,
            connected: false,
        };
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await;
        let (connection, channel, mut consumer) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => return lost(error),
            Err(_) => {
                return lost(format!(
                    "no answer from {} within {}s",
                    self.settings.shown_url,
                    CONNECT_TIMEOUT.as_secs()
                ));
            }
        };
        tracing::info!(uuid = %self.target.uuid, queue = %self.settings.queue, vhost = %self.settings.vhost, "RabbitMQ source consuming");
        self.status.ok(false);
        let ended = self.batches(&channel, &mut consumer, stop).await;
        // Closing the channel returns every message not acknowledged to the queue.
        let _ = channel
            .close(200, ShortString::from("lambent: mapping stopped"))
            .await;
        let _ = connection
            .close(200, ShortString::from("lambent: bye"))
            .await;
        ended
    }

    async fn open(&self) -> Result<(Connection, lapin::Channel, lapin::Consumer), String> {
        let properties =
            ConnectionProperties::default().with_connection_name("lambent-event-source".into());
        let connection = Connection::connect_uri(self.settings.uri.clone(), properties)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {}: {}",
                    self.settings.shown_url,
                    mask_passwords(&e.to_string())
                )
            })?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        let prefetch = (self.settings.batch_size * 2).min(u16::MAX as usize) as u16;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("cannot set the prefetch count: {e}"))?;
        let queue = ShortString::try_new(self.settings.queue.as_str())
            .map_err(|_| "the queue name is longer than 255 bytes".to_string())?;
        let tag = ShortString::try_new(format!("lambent-{}", self.target.uuid))
            .map_err(|_| "bad consumer tag".to_string())?;
        let consumer = channel
            .basic_consume(
                queue,
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot consume queue {:?} in vhost {:?}: {e}",
                    self.settings.queue, self.settings.vhost
                )
            })?;
        Ok((connection, channel, consumer))
    }

    /// Gathers and processes batches until stopped or the consumer fails.
    async fn batches(
        &mut self,
        channel: &lapin::Channel,
        consumer: &mut lapin::Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let lost = |error: String| Ended::Lost {
            error,
            connected: true,
        };
        let mut carried: Option<Taken> = None;
        let mut failures: u32 = 0;
        loop {
            let mut batch: Vec<Taken> = Vec::new();
            let mut size = ENVELOPE_BYTES;
            let first = match carried.take() {
                Some(taken) => taken,
                None => {
                    let next = tokio::select! {
                        next = consumer.next() => next,
                        _ = stop.wait_for(|stopped| *stopped) => return Ended::Stopped,
                    };
                    match next {
                        Some(Ok(delivery)) => self.take(delivery),
                        Some(Err(e)) => return lost(format!("the consumer failed: {e}")),
                        None => return lost("the broker ended the consumer".to_string()),
                    }
                }
            };
            if first.size + ENVELOPE_BYTES > MAX_EVENT_BYTES {
                self.reject_oversized(channel, first).await;
                continue;
            }
            size += first.size;
            batch.push(first);
            let deadline = Instant::now() + self.settings.window;
            while batch.len() < self.settings.batch_size {
                let next = if self.settings.window.is_zero() {
                    match consumer.next().now_or_never() {
                        Some(next) => next,
                        None => break,
                    }
                } else {
                    match tokio::time::timeout_at(deadline, consumer.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                };
                match next {
                    Some(Ok(delivery)) => {
                        let taken = self.take(delivery);
                        if size + taken.size > MAX_EVENT_BYTES {
                            carried = Some(taken);
                            break;
                        }
                        size += taken.size;
                        batch.push(taken);
                    }
                    Some(Err(e)) => return lost(format!("the consumer failed: {e}")),
                    None => return lost("the broker ended the consumer".to_string()),
                }
            }
            match self.process(channel, batch, &mut failures, stop).await {
                Ok(()) => {}
                Err(ended) => return ended,
            }
        }
    }

    fn take(&mut self, delivery: Delivery) -> Taken {
        let id = identity(&delivery);
        let now = now_ms();
        let seen = *self.attempts.entry(id).or_insert(Seen {
            failures: 0,
            first_ms: now,
        });
        if self.attempts.len() > MAX_TRACKED {
            tracing::warn!("RabbitMQ source: forgetting what was seen of {MAX_TRACKED} messages");
            self.attempts.clear();
        }
        let message_id = sqs_message_id(&delivery, id);
        let entry = match self.settings.mode {
            Mode::AmazonMq => message_entry(&delivery),
            Mode::Sqs { .. } => {
                let receive_count = seen.failures.max(delivery_count(&delivery).unwrap_or(0)) + 1;
                sqs_record(
                    &delivery,
                    &message_id,
                    receive_count,
                    seen.first_ms,
                    &self.target.source_arn,
                    &self.settings.region,
                )
            }
        };
        let size = entry.to_string().len() + 1;
        Taken {
            delivery,
            entry,
            size,
            message_id,
        }
    }

    /// A message whose event alone would exceed the payload limit can never be delivered:
    /// it goes to the dead-letter exchange at once.
    async fn reject_oversized(&self, channel: &lapin::Channel, taken: Taken) {
        tracing::error!(
            uuid = %self.target.uuid, queue = %self.settings.queue, bytes = taken.delivery.data.len(),
            "RabbitMQ source: a message is too large for one event (6 MB); rejected to the dead-letter exchange"
        );
        self.status
            .failed("a message was larger than the 6 MB payload limit and was rejected");
        let _ = channel
            .basic_nack(
                taken.delivery.delivery_tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: false,
                },
            )
            .await;
    }

    /// Invokes the function with one batch until it succeeds (ack) or fails (nack), waiting
    /// out throttles and platform errors without counting them as attempts.
    async fn process(
        &mut self,
        channel: &lapin::Channel,
        batch: Vec<Taken>,
        failures: &mut u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let entries: Vec<Value> = batch.iter().map(|t| t.entry.clone()).collect();
        let event = match self.settings.mode {
            Mode::AmazonMq => {
                let mut by_queue = Map::new();
                by_queue.insert(
                    format!("{}::{}", self.settings.queue, self.settings.vhost),
                    Value::Array(entries),
                );
                json!({
                    "eventSource": "aws:rmq",
                    "eventSourceArn": self.target.source_arn,
                    "rmqMessagesByQueue": by_queue,
                })
            }
            Mode::Sqs { .. } => json!({ "Records": entries }),
        };
        let payload = Bytes::from(event.to_string());
        let answer = invoke(&self.invoker, &self.target, payload, &self.status, stop).await;
        let failed: Vec<bool> = match (&answer, &self.settings.mode) {
            (Answer::Stopped, _) => return Err(Ended::Stopped),
            (Answer::Failed(_), _) => vec![true; batch.len()],
            (
                Answer::Succeeded(body),
                Mode::Sqs {
                    report_failures: true,
                    ..
                },
            ) => {
                let ids: Vec<&str> = batch.iter().map(|t| t.message_id.as_str()).collect();
                match reported_failures(body, &ids) {
                    Ok(failed) => failed,
                    Err(why) => {
                        tracing::warn!(uuid = %self.target.uuid, "SQS-style source: {why}; the whole batch failed");
                        vec![true; batch.len()]
                    }
                }
            }
            (Answer::Succeeded(_), _) => vec![false; batch.len()],
        };
        let lost = |what: &str, e: lapin::Error| Ended::Lost {
            error: format!("cannot {what}: {e}"),
            connected: true,
        };
        if !failed.contains(&true) {
            *failures = 0;
            for taken in &batch {
                self.attempts.remove(&identity(&taken.delivery));
            }
            if let Some(last) = batch.iter().map(|t| t.delivery.delivery_tag).max() {
                channel
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| lost("acknowledge a batch", e))?;
            }
            self.status.ok(true);
            return Ok(());
        }
        match &answer {
            Answer::Failed(error) => {
                let shown = &error[..error.len().min(512)];
                tracing::info!(uuid = %self.target.uuid, error = %String::from_utf8_lossy(shown), "the function failed on a batch");
                self.status.failed("Function call failed");
            }
            _ => self.status.ok(true),
        }
        let visibility = match self.settings.mode {
            Mode::Sqs {
                visibility_timeout, ..
            } => Some(visibility_timeout),
            Mode::AmazonMq => {
                *failures += 1;
                // Requeued messages come straight back: pace repeated failures.
                let pause = Duration::from_millis(100 * 2u64.pow((*failures).min(6)));
                if wait_or_stop(stop, pause).await {
                    return Err(Ended::Stopped);
                }
                None
            }
        };
        let mut dead_lettered = 0;
        let mut returned = 0;
        for (taken, failed) in batch.iter().zip(failed) {
            let tag = taken.delivery.delivery_tag;
            if !failed {
                self.attempts.remove(&identity(&taken.delivery));
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: false })
                    .await
                    .map_err(|e| lost("acknowledge a message", e))?;
                continue;
            }
            let attempts = self.count_failure(&taken.delivery);
            if self.settings.max_retries.is_some_and(|max| attempts > max) {
                dead_lettered += 1;
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: false,
                        },
                    )
                    .await
                    .map_err(|e| lost("dead-letter a message", e))?;
                continue;
            }
            returned += 1;
            match visibility {
                // Invisible until the timeout, then back on the queue (a closed channel
                // returns it at once, which only makes it visible early).
                Some(timeout) => {
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        let _ = channel
                            .basic_nack(
                                tag,
                                BasicNackOptions {
                                    multiple: false,
                                    requeue: true,
                                },
                            )
                            .await;
                    });
                }
                None => {
                    channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            },
                        )
                        .await
                        .map_err(|e| lost("return a failed batch", e))?;
                }
            }
        }
        tracing::warn!(
            uuid = %self.target.uuid, queue = %self.settings.queue, messages = batch.len(), returned, dead_lettered,
            "RabbitMQ source: messages failed and go back to the queue"
        );
        Ok(())
    }

    /// Counts one more failed attempt of a message and returns how many it has had: the
    /// broker's `x-delivery-count` (quorum queues) when present, else this poller's count.
    fn count_failure(&mut self, delivery: &Delivery) -> u32 {
        let id = identity(delivery);
        let seen = self.attempts.entry(id).or_insert(Seen {
            failures: 0,
            first_ms: now_ms(),
        });
        seen.failures += 1;
        let broker = delivery_count(delivery).map(|n| n + 1).unwrap_or(0);
        let failed = seen.failures.max(broker);
        if self.settings.max_retries.is_some_and(|max| failed > max) {
            self.attempts.remove(&id);
        }
        failed
    }
}

/// What identifies a message across redeliveries: its `message_id` if it has one, else its
/// body, headers and timestamp.
fn identity(delivery: &Delivery) -> u64 {
    let mut hasher = DefaultHasher::new();
    let properties = &delivery.properties;
    match properties.message_id() {
        Some(id) => id.as_str().hash(&mut hasher),
        None => {
            delivery.data.hash(&mut hasher);
            format!("{:?}", properties.headers()).hash(&mut hasher);
            properties.timestamp().hash(&mut hasher);
            delivery.routing_key.as_str().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The broker's count of earlier deliveries (`x-delivery-count`, set by quorum queues).
fn delivery_count(delivery: &Delivery) -> Option<u32> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

/// One message as `rmqMessagesByQueue` lists it.
fn message_entry(delivery: &Delivery) -> Value {
    let p = &delivery.properties;
    let short = |value: &Option<ShortString>| {
        value
            .as_ref()
            .map_or(Value::Null, |s| Value::from(s.as_str()))
    };
    json!({
        "basicProperties": {
            "contentType": short(p.content_type()),
            "contentEncoding": short(p.content_encoding()),
            "headers": p.headers().as_ref().map_or(Value::Null, table_json),
            "deliveryMode": p.delivery_mode().map_or(Value::Null, Value::from),
            "priority": p.priority().map_or(Value::Null, Value::from),
            "correlationId": short(p.correlation_id()),
            "replyTo": short(p.reply_to()),
            "expiration": short(p.expiration()),
            "messageId": short(p.message_id()),
            "timestamp": p.timestamp().map_or(Value::Null, |t| Value::from(java_date(t))),
            "type": short(p.kind()),
            "userId": short(p.user_id()),
            "appId": short(p.app_id()),
            "clusterId": short(p.cluster_id()),
            "bodySize": delivery.data.len(),
        },
        "redelivered": delivery.redelivered,
        "data": base64::engine::general_purpose::STANDARD.encode(&delivery.data),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The SQS `messageId` of a message: its AMQP `message_id` when it has one, else a UUID made
/// from what identifies it (stable across redeliveries).
fn sqs_message_id(delivery: &Delivery, identity: u64) -> String {
    match delivery.properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_string(),
        _ => {
            let mut hasher = DefaultHasher::new();
            (identity, "sqs-message-id").hash(&mut hasher);
            uuid::Uuid::from_u64_pair(identity, hasher.finish()).to_string()
        }
    }
}

/// One message as an SQS record.
fn sqs_record(
    delivery: &Delivery,
    message_id: &str,
    receive_count: u32,
    first_receive_ms: i64,
    source_arn: &str,
    region: &str,
) -> Value {
    use md5::Digest;
    let properties = &delivery.properties;
    let mut message_attributes = Map::new();
    let body = match std::str::from_utf8(&delivery.data) {
        Ok(text) => text.to_string(),
        Err(_) => {
            // SQS bodies are text: a binary body arrives base64-encoded, and says so.
            message_attributes.insert(
                "lambent.bodyEncoding".into(),
                sqs_attribute("String", "stringValue", Value::from("base64")),
            );
            base64::engine::general_purpose::STANDARD.encode(&delivery.data)
        }
    };
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            if name.as_str().starts_with("x-") {
                continue;
            }
            let attribute = match value {
                AMQPValue::LongString(s) => sqs_attribute(
                    "String",
                    "stringValue",
                    Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                ),
                AMQPValue::ShortString(s) => {
                    sqs_attribute("String", "stringValue", Value::from(s.as_str()))
                }
                AMQPValue::Boolean(b) => {
                    sqs_attribute("String", "stringValue", Value::from(b.to_string()))
                }
                AMQPValue::ByteArray(b) => sqs_attribute(
                    "Binary",
                    "binaryValue",
                    Value::from(base64::engine::general_purpose::STANDARD.encode(b.as_slice())),
                ),
                other => match amqp_json(other) {
                    Value::Number(n) => {
                        sqs_attribute("Number", "stringValue", Value::from(n.to_string()))
                    }
                    _ => continue,
                },
            };
            message_attributes.insert(name.as_str().to_string(), attribute);
        }
    }
    let sent_ms = properties
        .timestamp()
        .map_or(first_receive_ms, |seconds| seconds as i64 * 1000);
    let md5 = hex_lower(&md5::Md5::digest(body.as_bytes()));
    json!({
        "messageId": message_id,
        "receiptHandle": base64::engine::general_purpose::STANDARD
            .encode(format!("{message_id}:{}", delivery.delivery_tag)),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": receive_count.to_string(),
            "SentTimestamp": sent_ms.to_string(),
            "SenderId": properties.user_id().as_ref().map_or("lambent", |u| u.as_str()),
            "ApproximateFirstReceiveTimestamp": first_receive_ms.to_string(),
        },
        "messageAttributes": message_attributes,
        "md5OfBody": md5,
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": region,
    })
}

fn sqs_attribute(data_type: &str, key: &str, value: Value) -> Value {
    let mut attribute = json!({
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": data_type,
    });
    attribute[key] = value;
    attribute
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which messages a `ReportBatchItemFailures` response reports as failed, by position in
/// `ids`; an error for a response that cannot be trusted (the whole batch then fails):
/// not JSON, a failure without a known `itemIdentifier`. An empty or null list, or no
/// `batchItemFailures` at all, is full success, as on AWS.
fn reported_failures(body: &[u8], ids: &[&str]) -> Result<Vec<bool>, String> {
    let mut failed = vec![false; ids.len()];
    if body.is_empty() {
        return Ok(failed);
    }
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| "the function's response is not JSON".to_string())?;
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(failed),
        Some(Value::Array(failures)) => failures,
        Some(_) => return Err("batchItemFailures is not a list".to_string()),
    };
    for failure in failures {
        let id = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or("a batchItemFailures entry has no itemIdentifier")?;
        let position = ids
            .iter()
            .position(|known| *known == id)
            .ok_or_else(|| format!("itemIdentifier {id:?} is not in the batch"))?;
        failed[position] = true;
    }
    Ok(failed)
}

/// AMQP headers as Lambda shows them: strings as `{"bytes": [...]}`, numbers as numbers.
fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.as_str().to_string(), amqp_json(value)))
            .collect(),
    )
}

fn amqp_json(value: &AMQPValue) -> Value {
    let bytes = |b: &[u8]| json!({ "bytes": b });
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => bytes(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(b) => bytes(b.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

/// An AMQP timestamp (Unix seconds) as Lambda writes it: `Jan 1, 1970, 12:33:41 AM` (UTC).
fn java_date(seconds: u64) -> String {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:none], [year], [hour repr:12 padding:none]:[minute]:[second] [period]"
    );
    i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

impl Session for Poller {
    fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Ended> + Send {
        self.consume(stop)
    }

    fn status(&self) -> &Status {
        &self.status
    }

    fn uuid(&self) -> &str {
        &self.target.uuid
    }

    fn describe(&self) -> String {
        format!(
            "RabbitMQ source (queue {:?} in vhost {:?} at {})",
            self.settings.queue, self.settings.vhost, self.settings.shown_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_item_failures() {
        let ids = ["a", "b", "c"];
        assert_eq!(reported_failures(b"", &ids).unwrap(), [false; 3]);
        assert_eq!(reported_failures(b"null", &ids).unwrap(), [false; 3]);
        assert_eq!(
            reported_failures(br#"{"batchItemFailures": []}"#, &ids).unwrap(),
            [false; 3]
        );
        assert_eq!(
            reported_failures(br#"{"batchItemFailures": null}"#, &ids).unwrap(),
            [false; 3]
        );
        assert_eq!(
            reported_failures(br#"{"batchItemFailures": [{"itemIdentifier": "b"}]}"#, &ids)
                .unwrap(),
            [false, true, false]
        );
        for bad in [
            &b"not json"[..],
            br#"{"batchItemFailures": [{"itemIdentifier": "zz"}]}"#,
            br#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            br#"{"batchItemFailures": [{}]}"#,
            br#"{"batchItemFailures": "b"}"#,
        ] {
            assert!(
                reported_failures(bad, &ids).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sqs_settings() {
        let doc = json!({"Tags": {"lambent:visibility-timeout": "5"}, "FunctionResponseTypes": ["ReportBatchItemFailures"]});
        let settings = Settings::of(
            doc.as_object().unwrap(),
            "amqp://h".into(),
            "q".into(),
            None,
            true,
            "eu-west-1",
        )
        .unwrap();
        assert_eq!(settings.batch_size, 10);
        assert_eq!(settings.window, Duration::ZERO);
        assert_eq!(
            settings.mode,
            Mode::Sqs {
                visibility_timeout: Duration::from_secs(5),
                report_failures: true
            }
        );
        let doc = json!({"Tags": {"lambent:visibility-timeout": "soon"}});
        assert!(
            Settings::of(
                doc.as_object().unwrap(),
                "amqp://h".into(),
                "q".into(),
                None,
                true,
                "r"
            )
            .is_err()
        );
    }

    #[test]
    fn java_dates() {
        assert_eq!(java_date(2021), "Jan 1, 1970, 12:33:41 AM");
        assert_eq!(java_date(1_700_000_000), "Nov 14, 2023, 10:13:20 PM");
    }

    #[test]
    fn header_values() {
        let mut table = FieldTable::default();
        table.insert("header1".into(), AMQPValue::LongString("value1".into()));
        table.insert("numberInHeader".into(), AMQPValue::LongInt(10));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        assert_eq!(
            table_json(&table),
            json!({"header1": {"bytes": [118, 97, 108, 117, 101, 49]}, "numberInHeader": 10, "flag": true})
        );
    }

    #[test]
    fn settings_from_a_mapping() {
        let doc = json!({"BatchSize": 10, "MaximumRetryAttempts": 2});
        let settings = Settings::of(
            doc.as_object().unwrap(),
            "amqp://guest:secret@127.0.0.1:5672/%2f".into(),
            "orders".into(),
            None,
            false,
            "us-east-1",
        )
        .unwrap();
        assert_eq!(settings.vhost, "/");
        assert_eq!(settings.batch_size, 10);
        assert_eq!(settings.window, DEFAULT_WINDOW);
        assert_eq!(settings.max_retries, Some(2));
        assert!(!settings.shown_url.contains("secret"));
        let doc = json!({"MaximumBatchingWindowInSeconds": 0, "MaximumRetryAttempts": -1});
        let settings = Settings::of(
            doc.as_object().unwrap(),
            "amqp://127.0.0.1".into(),
            "q".into(),
            Some("tenant".into()),
            false,
            "us-east-1",
        )
        .unwrap();
        assert_eq!(settings.vhost, "tenant");
        assert_eq!(settings.window, Duration::ZERO);
        assert_eq!(settings.max_retries, None);
    }
}
