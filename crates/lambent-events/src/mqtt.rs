//! The MQTT poller, with the semantics of an AWS IoT rule whose action is a Lambda function:
//! the mapping's topic filter selects the messages and each message's payload is the event.
//!
//! The poller subscribes with QoS 1 in a persistent session (`clean_session = false`, client id
//! `lambent-<mapping uuid>`), so the broker keeps what is published while Lambent is away. Each
//! message is one synchronous invocation; its `PUBACK` is sent only after the function
//! succeeded (or the message was given up on), so a message is never lost to a failing
//! function, a broker outage or a Lambent restart: the broker sends it again. A function error
//! is retried up to `MaximumRetryAttempts` times (default [`DEFAULT_RETRIES`], `-1` for ever)
//! with backoff; then the message is acknowledged, logged, and, when the mapping has a
//! `DestinationConfig.OnFailure`, sent there in a failure record.
//!
//! A JSON payload is the event as published; any other payload (binary, text that is not JSON,
//! empty) becomes `{"data": "<base64>", "topic": "<topic>", "timestamp": <epoch ms>}`, as the
//! IoT rule `SELECT encode(*, 'base64') AS data, topic() AS topic, timestamp() AS timestamp`
//! would make it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use lambent_invoke::Invoker;
use lambent_invoke::targets::mask_passwords;
use lambent_store::{Store, kinds};
use lambent_types::limits::SYNC_PAYLOAD_BYTES;

use crate::mappings::{
    Answer, Ended, Session, Status, Target, invoke, keep_connected, wait_or_stop,
};

/// The function retries of a message when the mapping sets no `MaximumRetryAttempts`.
pub(crate) const DEFAULT_RETRIES: u32 = 2;
/// The port of `mqtt://` URLs that name none.
const DEFAULT_PORT: u16 = 1883;
/// How long connecting (up to the broker's CONNACK) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The keep-alive interval announced to the broker.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The largest packet accepted: MQTT's own limit, so that an oversized message is read (and
/// given up on) rather than breaking the connection again at every redelivery.
const MAX_INCOMING_PACKET: usize = 268_435_455 + 5;
/// The largest packet sent (subscriptions and acknowledgements only).
const MAX_OUTGOING_PACKET: usize = 64 * 1024;
/// How long a graceful disconnect or the clean-up of a deleted mapping's session may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);
/// Failure records larger than this leave the message out (asynchronous payload limit).
const MAX_RECORD_PAYLOAD: usize = 256 * 1024;

/// Where the broker is, read from an `mqtt://[user[:password]@]host[:port]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Broker {
    /// Host name or IP address.
    host: String,
    /// TCP port.
    port: u16,
    /// User name and password, percent-decoded.
    login: Option<(String, String)>,
}

/// What an MQTT poller needs from its mapping.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the broker is.
    broker: Broker,
    /// The URL with its password masked, for messages.
    shown_url: String,
    /// The topic filter subscribed to.
    topic_filter: String,
    /// `None`: retry until the function succeeds (`MaximumRetryAttempts` -1).
    max_retries: Option<u32>,
    /// `DestinationConfig.OnFailure.Destination`, when set.
    on_failure: Option<String>,
    /// The mapping's `FunctionArn`, for failure records.
    function_arn: String,
}

impl Settings {
    /// Reads the mapping's retry and destination members, the broker URL and the topic filter.
    pub(crate) fn of(
        doc: &Map<String, Value>,
        url: &str,
        topic_filter: String,
    ) -> Result<Self, String> {
        let broker = parse_url(url)?;
        if !rumqttc::valid_filter(&topic_filter) || topic_filter.contains('\0') {
            return Err(format!(
                "{topic_filter:?} is not a valid MQTT topic filter (`+` and `#` must fill a whole \
                 level, `#` only the last one)"
            ));
        }
        let max_retries = match doc.get("MaximumRetryAttempts").and_then(Value::as_i64) {
            Some(n) if n < 0 => None,
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => Some(DEFAULT_RETRIES),
        };
        Ok(Self {
            broker,
            shown_url: mask_passwords(url),
            topic_filter,
            max_retries,
            on_failure: on_failure_of(doc),
            function_arn: doc
                .get("FunctionArn")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// The mapping's `DestinationConfig.OnFailure.Destination`.
pub(crate) fn on_failure_of(doc: &Map<String, Value>) -> Option<String> {
    doc.get("DestinationConfig")
        .and_then(|d| d.get("OnFailure"))
        .and_then(|d| d.get("Destination"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

/// Reads `mqtt://[user[:password]@]host[:port][/…]`; user and password are percent-decoded.
fn parse_url(url: &str) -> Result<Broker, String> {
    let bad = |why: &str| format!("the connection URL {} {why}", mask_passwords(url));
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mqtt") => rest,
        _ => return Err(bad("is not an mqtt:// URL")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("names no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("has a bad port"))?,
        None => DEFAULT_PORT,
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("has a user or password that is not UTF-8 once decoded"))
    };
    let login = match userinfo {
        Some(userinfo) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            Some((decode(user)?, decode(password)?))
        }
        None => None,
    };
    Ok(Broker {
        host: host.to_string(),
        port,
        login,
    })
}

/// Reads the topic filter until `stop` is set, reconnecting with backoff; when the mapping
/// was deleted, the broker's session for it is discarded on the way out.
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
        status,
        resubscribe: false,
    };
    keep_connected(&mut poller, &mut stop).await;
    let deleted = matches!(
        store.get_document(kinds::EVENT_SOURCE_MAPPING, "", &poller.target.uuid),
        Ok(None)
    );
    if deleted {
        poller.forget_session().await;
    }
}

/// Aborts the task driving a connection when a session ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the task driving a connection reports.
enum Incoming {
    /// A message to process.
    Message(Publish),
    /// The broker confirmed the subscription.
    Subscribed,
    /// The broker refused the subscription.
    Refused,
    /// The connection or the subscription failed.
    Failed(String),
}

/// A mapping's reader of its topic filter.
struct Poller {
    /// What the mapping asks for.
    settings: Settings,
    /// The function invoked.
    target: Target,
    /// Invokes it.
    invoker: Arc<Invoker>,
    /// Reports the mapping's health.
    status: Status,
    /// The broker refused the subscription once: subscribe again even in a kept session.
    resubscribe: bool,
}

impl Poller {
    /// The client id, which names the broker's persistent session for this mapping.
    fn client_id(&self) -> String {
        format!("lambent-{}", self.target.uuid)
    }

    /// The client options: this mapping's client id, manual acknowledgements.
    fn options(&self, clean_session: bool) -> MqttOptions {
        let broker = &self.settings.broker;
        let mut options = MqttOptions::new(self.client_id(), broker.host.clone(), broker.port);
        options
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if let Some((user, password)) = &broker.login {
            options.set_credentials(user.clone(), password.clone());
        }
        options
    }

    /// One connection's life: connect, subscribe when the broker kept no session, process
    /// messages until stopped or the link fails.
    async fn connect_and_consume(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        let lost = |error: String| Ended::Lost {
            error,
            connected: false,
        };
        let (client, mut eventloop) = AsyncClient::new(self.options(false), 64);
        let connack = loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => break connack,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    return lost(format!(
                        "cannot connect to {}: {}",
                        self.settings.shown_url,
                        mask_passwords(&e.to_string())
                    ));
                }
                Err(_) => {
                    return lost(format!(
                        "no answer from {} within {}s",
                        self.settings.shown_url,
                        CONNECT_TIMEOUT.as_secs()
                    ));
                }
            }
        };
        let subscribing = !connack.session_present || self.resubscribe;
        if subscribing
            && let Err(e) = client
                .subscribe(self.settings.topic_filter.clone(), QoS::AtLeastOnce)
                .await
        {
            return lost(format!("cannot subscribe: {e}"));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(drive(eventloop, tx));
        let _abort = AbortOnDrop(pump.abort_handle());
        tracing::info!(
            uuid = %self.target.uuid, topic_filter = %self.settings.topic_filter,
            session_present = connack.session_present, "MQTT source connected"
        );
        if !subscribing {
            self.status.ok(false);
        }
        loop {
            let next = tokio::select! {
                next = rx.recv() => Some(next),
                _ = stop.wait_for(|stopped| *stopped) => None,
            };
            let Some(next) = next else {
                goodbye(&client, pump).await;
                return Ended::Stopped;
            };
            match next {
                Some(Incoming::Message(publish)) => {
                    match self.process(&client, publish, stop).await {
                        Ok(()) => {}
                        Err(Ended::Stopped) => {
                            goodbye(&client, pump).await;
                            return Ended::Stopped;
                        }
                        Err(Ended::Lost {
                            mut error,
                            connected,
                        }) => {
                            // The connection's own failure says more than the lost ack.
                            while let Ok(incoming) = rx.try_recv() {
                                if let Incoming::Failed(failure) = incoming {
                                    error = format!(
                                        "{failure} (the message being acknowledged will be \
                                         delivered again)"
                                    );
                                }
                            }
                            return Ended::Lost { error, connected };
                        }
                    }
                }
                Some(Incoming::Subscribed) => {
                    self.resubscribe = false;
                    tracing::info!(
                        uuid = %self.target.uuid, topic_filter = %self.settings.topic_filter,
                        "MQTT source subscribed"
                    );
                    self.status.ok(false);
                }
                Some(Incoming::Refused) => {
                    self.resubscribe = true;
                    return lost(format!(
                        "the broker refused the subscription to {:?} (check its access control)",
                        self.settings.topic_filter
                    ));
                }
                Some(Incoming::Failed(error)) => {
                    return Ended::Lost {
                        error,
                        connected: true,
                    };
                }
                None => {
                    return Ended::Lost {
                        error: "the connection ended".to_string(),
                        connected: true,
                    };
                }
            }
        }
    }

    /// Invokes the function with one message until it succeeds or its retries run out, then
    /// acknowledges it.
    async fn process(
        &mut self,
        client: &AsyncClient,
        publish: Publish,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let payload = event_of(&publish, i64::try_from(now_ms).unwrap_or_default());
        if payload.len() > SYNC_PAYLOAD_BYTES {
            tracing::error!(
                uuid = %self.target.uuid, topic = %publish.topic, bytes = publish.payload.len(),
                "MQTT source: a message is too large for one event (6 MB); dropped"
            );
            self.status
                .failed("a message was larger than the 6 MB payload limit and was dropped");
            self.give_up(&publish, None, "PayloadTooLarge", 0);
            return self.ack(client, &publish).await;
        }
        let mut failures: u32 = 0;
        loop {
            match invoke(
                &self.invoker,
                &self.target,
                payload.clone(),
                &self.status,
                stop,
            )
            .await
            {
                Answer::Succeeded(_) => {
                    self.status.ok(true);
                    return self.ack(client, &publish).await;
                }
                Answer::Failed(_) => {
                    failures += 1;
                    if self.settings.max_retries.is_some_and(|max| failures > max) {
                        tracing::error!(
                            uuid = %self.target.uuid, topic = %publish.topic, attempts = failures,
                            on_failure = self.settings.on_failure.as_deref().unwrap_or("none"),
                            "MQTT source: the function failed on a message {failures} times; message dropped"
                        );
                        self.status.failed(&format!(
                            "Function call failed; a message of {} was dropped after {failures} attempts",
                            publish.topic
                        ));
                        self.give_up(&publish, Some(&payload), "RetryAttemptsExhausted", failures);
                        return self.ack(client, &publish).await;
                    }
                    let pause = retry_pause(failures);
                    tracing::warn!(
                        uuid = %self.target.uuid, topic = %publish.topic, attempts = failures,
                        "MQTT source: the function failed; retrying in {}ms", pause.as_millis()
                    );
                    self.status.failed("Function call failed");
                    if wait_or_stop(stop, pause).await {
                        return Err(Ended::Stopped);
                    }
                }
                Answer::Stopped => return Err(Ended::Stopped),
            }
        }
    }

    /// Sends the PUBACK of a QoS 1 message (nothing for QoS 0).
    async fn ack(&self, client: &AsyncClient, publish: &Publish) -> Result<(), Ended> {
        client.ack(publish).await.map_err(|e| Ended::Lost {
            error: format!("cannot acknowledge a message: {e}"),
            connected: true,
        })
    }

    /// Sends the failure record of a message given up on to the mapping's OnFailure
    /// destination, if it has one.
    fn give_up(&self, publish: &Publish, event: Option<&Bytes>, condition: &str, attempts: u32) {
        let Some(destination) = &self.settings.on_failure else {
            return;
        };
        let mut record = json!({
            "version": "1.0",
            "timestamp": now_iso(),
            "requestContext": {
                "functionArn": self.settings.function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "MQTTMessageInfo": {
                "topic": publish.topic,
                "qos": publish.qos as u8,
                "retain": publish.retain,
                "payloadSize": publish.payload.len(),
                "eventSourceARN": self.target.source_arn,
            },
        });
        if attempts > 0 {
            record["responseContext"] = json!({"functionError": "Unhandled"});
        }
        if let Some(event) = event.filter(|e| e.len() <= MAX_RECORD_PAYLOAD)
            && let Ok(event) = serde_json::from_slice::<Value>(event)
        {
            record["payload"] = event;
        }
        let sent = self.invoker.send_record(
            &self.target.function.name,
            destination,
            record.to_string().into_bytes(),
            vec![("Condition".to_string(), condition.to_string())],
        );
        match sent {
            Ok(()) => tracing::info!(
                uuid = %self.target.uuid, destination = %destination,
                "MQTT source: failure record sent to the OnFailure destination"
            ),
            Err(e) => tracing::error!(
                uuid = %self.target.uuid, destination = %destination,
                "MQTT source: cannot send the failure record: {e}"
            ),
        }
    }

    /// Discards the broker's session of a deleted mapping (a clean-session connect with its
    /// client id), so the broker stops keeping messages for it. Best effort.
    async fn forget_session(&self) {
        let (client, mut eventloop) = AsyncClient::new(self.options(true), 4);
        let forgotten = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.disconnect().await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if forgotten == Ok(true) {
            tracing::info!(uuid = %self.target.uuid, "MQTT source: the deleted mapping's broker session was discarded");
        } else {
            tracing::warn!(
                uuid = %self.target.uuid, broker = %self.settings.shown_url,
                "MQTT source: could not discard the deleted mapping's broker session (client id {})",
                self.client_id()
            );
        }
    }
}

/// Drives the connection (keep-alives, acknowledgements) and hands messages over until it
/// fails or nobody listens.
async fn drive(mut eventloop: rumqttc::EventLoop, tx: mpsc::UnboundedSender<Incoming>) {
    loop {
        let incoming = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => Incoming::Message(publish),
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                if suback
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    Incoming::Refused
                } else {
                    Incoming::Subscribed
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(e) => Incoming::Failed(format!("the connection failed: {e}")),
        };
        let failed = matches!(incoming, Incoming::Failed(_) | Incoming::Refused);
        if tx.send(incoming).is_err() || failed {
            return;
        }
    }
}

/// Leaves the broker politely (the session stays), waiting a little for the DISCONNECT to go.
async fn goodbye(client: &AsyncClient, pump: tokio::task::JoinHandle<()>) {
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, pump).await;
    }
}

/// The pause before retrying a failed message: 200 ms, doubling, at most 12.8 s.
pub(crate) fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(200 << failures.saturating_sub(1).min(6))
}

/// Now as an ISO 8601 UTC timestamp with milliseconds.
pub(crate) fn now_iso() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// The event of a message: its payload when that is JSON, else the payload in base64 with
/// its topic and the time it was received.
fn event_of(publish: &Publish, now_ms: i64) -> Bytes {
    let payload = &publish.payload;
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        return payload.clone();
    }
    let event = json!({
        "data": base64::engine::general_purpose::STANDARD.encode(payload),
        "topic": publish.topic,
        "timestamp": now_ms,
    });
    Bytes::from(event.to_string())
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
            "MQTT source (topic filter {:?} at {})",
            self.settings.topic_filter, self.settings.shown_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            Broker {
                host: "127.0.0.1".into(),
                port: 1883,
                login: None
            }
        );
        assert_eq!(
            parse_url("MQTT://user:p%40ss@broker.local/").unwrap(),
            Broker {
                host: "broker.local".into(),
                port: 1883,
                login: Some(("user".into(), "p@ss".into()))
            }
        );
        assert_eq!(
            parse_url("mqtt://u@[::1]:1884").unwrap(),
            Broker {
                host: "::1".into(),
                port: 1884,
                login: Some(("u".into(), String::new()))
            }
        );
        for bad in [
            "redis://127.0.0.1",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let err = parse_url("mqtt://u:secret@h:99999").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn settings_from_a_mapping() {
        let doc = json!({"FunctionArn": "arn:f", "DestinationConfig": {"OnFailure": {"Destination": "http://x"}}});
        let settings =
            Settings::of(doc.as_object().unwrap(), "mqtt://h", "a/+/b/#".into()).unwrap();
        assert_eq!(settings.max_retries, Some(DEFAULT_RETRIES));
        assert_eq!(settings.on_failure.as_deref(), Some("http://x"));
        let doc = json!({"MaximumRetryAttempts": -1});
        let settings = Settings::of(doc.as_object().unwrap(), "mqtt://h", "#".into()).unwrap();
        assert_eq!(settings.max_retries, None);
        assert_eq!(settings.on_failure, None);
        for bad in ["a/#/b", "a+", "", "a/b#"] {
            assert!(
                Settings::of(&Map::new(), "mqtt://h", bad.into()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn events() {
        let json_message = Publish::new("t/1", QoS::AtLeastOnce, br#"{"a": [1, 2]}"#.to_vec());
        assert_eq!(
            event_of(&json_message, 5),
            Bytes::from_static(br#"{"a": [1, 2]}"#)
        );
        let number = Publish::new("t/1", QoS::AtLeastOnce, b"42".to_vec());
        assert_eq!(event_of(&number, 5), Bytes::from_static(b"42"));
        for (payload, data) in [
            (&b"\x00\xffhi"[..], "AP9oaQ=="),
            (b"not json", "bm90IGpzb24="),
            (b"", ""),
        ] {
            let message = Publish::new("t/2", QoS::AtLeastOnce, payload.to_vec());
            let event: Value = serde_json::from_slice(&event_of(&message, 7)).unwrap();
            assert_eq!(event, json!({"data": data, "topic": "t/2", "timestamp": 7}));
        }
    }

    #[test]
    fn pauses() {
        assert_eq!(retry_pause(1), Duration::from_millis(200));
        assert_eq!(retry_pause(2), Duration::from_millis(400));
        assert_eq!(retry_pause(100), Duration::from_millis(12_800));
    }
}
