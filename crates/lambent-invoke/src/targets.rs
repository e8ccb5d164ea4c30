//! Destinations outside Lambent that asynchronous-invocation records are delivered to:
//! webhooks, RabbitMQ and NATS. Another Lambent function can be a destination too, but the
//! async queue delivers those itself; [`Senders`] only handles the external kinds.
//!
//! # Destination syntax
//!
//! [`parse_target`] accepts these forms. The `<region>` and `<account>` fields may be empty
//! or hold anything; they are ignored.
//!
//! | Form | Target |
//! |------|--------|
//! | `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` | [`Target::Function`] |
//! | `arn:lambent:webhook:<region>:<account>:<url>` | [`Target::Webhook`] |
//! | a bare `http://…` or `https://…` URL | [`Target::Webhook`] |
//! | `arn:lambent:rabbitmq:<region>:<account>:<connection>/exchange/<exchange>[/<routing-key>]` | [`Target::RabbitMq`] |
//! | `arn:lambent:rabbitmq:<region>:<account>:<connection>/queue/<queue>` | [`Target::RabbitMq`] through the default exchange |
//! | `arn:lambent:nats:<region>:<account>:<connection>/subject/<subject>` | [`Target::Nats`], core NATS |
//! | `arn:lambent:nats:<region>:<account>:<connection>/jetstream/<subject>` | [`Target::Nats`], JetStream |
//!
//! Rules:
//! - function names match `[A-Za-z0-9_-]{1,64}`; a qualifier is `$LATEST`, a version number
//!   or an alias name `[A-Za-z0-9_-]{1,128}`;
//! - a webhook URL uses the `http` or `https` scheme and names a host; `user:password@` in
//!   it is sent as HTTP Basic authentication;
//! - connection names (the broker connections configured in Lambent) match
//!   `[A-Za-z0-9_-]{1,64}`;
//! - RabbitMQ exchange, queue and routing-key names hold at most 255 bytes and no whitespace
//!   or control characters; the exchange may be empty (the default exchange), the routing key
//!   may be empty (the default) and may contain `/` and `.`; `…/queue/<q>` is shorthand for the
//!   default exchange with routing key `<q>`;
//! - NATS subjects are non-empty, hold no whitespace, no wildcard (`*`, `>`) and no empty
//!   token (`a..b`, a leading or trailing `.`).
//!
//! # Delivery
//!
//! [`Senders::send`] returns `Ok` only once the destination has taken the record as durably
//! as its protocol allows:
//! - webhook: an HTTP `POST` of the body (`Content-Type: application/json`, each attribute as
//!   an `X-Lambent-<Name>` header) answered with a 2xx status within 10 s;
//! - RabbitMQ: a persistent, `mandatory` publish on a channel in confirm mode, acknowledged by
//!   the broker within 10 s and not returned as unroutable; attributes become AMQP headers and
//!   the `RequestID` attribute the message id;
//! - NATS: a publish with the attributes as headers, followed by a flush (core NATS) or the
//!   stream's PubAck (JetStream), within 10 s.
//!
//! TLS to the brokers (`amqps://`, `tls://`) is not supported yet. No error message ever
//! shows a password: `user:password@` in a URL is printed as `user:***@`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, ConnectionProperties};
use tokio::sync::Mutex as AsyncMutex;

/// How long each delivery step (connecting, publishing and waiting for the confirmation,
/// or the whole webhook request) may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Longest destination string quoted back in a [`TargetError`].
const MAX_ECHO_CHARS: usize = 200;

/// How much of a webhook's response body is read (and discarded) so the connection can be
/// reused.
const MAX_WEBHOOK_RESPONSE_BYTES: usize = 64 * 1024;

/// The attribute whose value becomes the AMQP `message_id`.
const REQUEST_ID_ATTRIBUTE: &str = "RequestID";

const FUNCTION_FORM: &str = "arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]";
const WEBHOOK_FORM: &str =
    "an http:// or https:// URL, or arn:lambent:webhook:<region>:<account>:<url>";
const RABBITMQ_FORM: &str = "arn:lambent:rabbitmq:<region>:<account>:<connection>/exchange/<exchange>[/<routing-key>] \
     or arn:lambent:rabbitmq:<region>:<account>:<connection>/queue/<queue>";
const NATS_FORM: &str = "arn:lambent:nats:<region>:<account>:<connection>/subject/<subject> \
     or arn:lambent:nats:<region>:<account>:<connection>/jetstream/<subject>";
const ACCEPTED_FORMS: &str = "arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]; \
     an http(s) URL or arn:lambent:webhook:<region>:<account>:<url>; \
     arn:lambent:rabbitmq:<region>:<account>:<connection>/exchange/<exchange>[/<routing-key>] \
     or …:<connection>/queue/<queue>; \
     arn:lambent:nats:<region>:<account>:<connection>/subject/<subject> \
     or …:<connection>/jetstream/<subject>";

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Another Lambent function, invoked asynchronously (delivered by the queue, not by
    /// [`Senders`]).
    Function {
        /// The function name.
        name: String,
        /// `$LATEST`, a version number or an alias; `None` means the unqualified function.
        qualifier: Option<String>,
    },
    /// HTTP POST to an `http://` or `https://` URL.
    Webhook {
        /// The URL, as given (it may carry `user:password@` for Basic authentication).
        url: String,
    },
    /// RabbitMQ: publish to `exchange` (empty = default exchange) with `routing_key`, over
    /// the named connection.
    RabbitMq {
        /// The name of the configured broker connection.
        connection: String,
        /// The exchange; empty for the default exchange.
        exchange: String,
        /// The routing key (possibly empty).
        routing_key: String,
    },
    /// NATS: publish to `subject` over the named connection; with `jetstream`, wait for the
    /// stream's PubAck.
    Nats {
        /// The name of the configured broker connection.
        connection: String,
        /// The subject to publish to.
        subject: String,
        /// Whether to publish through JetStream and wait for the stream's acknowledgement.
        jetstream: bool,
    },
}

impl Target {
    /// The name of the broker connection the target needs, if it needs one.
    pub fn connection(&self) -> Option<&str> {
        match self {
            Target::RabbitMq { connection, .. } | Target::Nats { connection, .. } => {
                Some(connection)
            }
            Target::Function { .. } | Target::Webhook { .. } => None,
        }
    }

    /// Which connection kind it needs.
    pub fn connection_kind(&self) -> Option<ConnectionKind> {
        match self {
            Target::RabbitMq { .. } => Some(ConnectionKind::RabbitMq),
            Target::Nats { .. } => Some(ConnectionKind::Nats),
            Target::Function { .. } | Target::Webhook { .. } => None,
        }
    }
}

/// The kind of a named broker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// An AMQP 0-9-1 broker (RabbitMQ): `amqp://` or `amqps://` URLs.
    RabbitMq,
    /// A NATS server: `nats://` or `tls://` URLs.
    Nats,
    /// An MQTT broker (event sources only): `mqtt://` URLs.
    Mqtt,
    /// A Redis server (event sources only): `redis://` URLs.
    Redis,
}

impl ConnectionKind {
    /// The kind a connection URL belongs to, from its scheme: `amqp://` or `amqps://` is
    /// RabbitMQ, `nats://` or `tls://` is NATS, `mqtt://` is MQTT, `redis://` is Redis;
    /// anything else is `None`.
    pub fn of_url(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "amqp" | "amqps" => Some(ConnectionKind::RabbitMq),
            "nats" | "tls" => Some(ConnectionKind::Nats),
            "mqtt" => Some(ConnectionKind::Mqtt),
            "redis" => Some(ConnectionKind::Redis),
            _ => None,
        }
    }

    /// The kind's name: `"rabbitmq"`, `"nats"`, `"mqtt"` or `"redis"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionKind::RabbitMq => "rabbitmq",
            ConnectionKind::Nats => "nats",
            ConnectionKind::Mqtt => "mqtt",
            ConnectionKind::Redis => "redis",
        }
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record to deliver: body plus named attributes (like SQS message attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The record itself, a JSON document.
    pub body: Bytes,
    /// Named string attributes, e.g. `("RequestID", "…")`; sent as headers.
    pub attributes: Vec<(String, String)>,
}

impl Message {
    /// The value of the first attribute called `name`.
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a destination string was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The string has none of the accepted forms.
    #[error("unsupported destination {target:?}; accepted forms: {forms}", forms = ACCEPTED_FORMS)]
    Unsupported {
        /// The string (passwords masked, long strings shortened).
        target: String,
    },
    /// The string has an accepted form, but a part of it breaks a rule.
    #[error("invalid destination {target:?}: {reason}; expected {expected}")]
    Invalid {
        /// The string (passwords masked, long strings shortened).
        target: String,
        /// What is wrong.
        reason: String,
        /// The syntax of the form the string looked like.
        expected: &'static str,
    },
}

/// Why a record was not delivered. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Function targets are invoked by the async queue, not sent by [`Senders`].
    #[error("function destinations are delivered by the invocation queue, not by Senders")]
    FunctionTarget,
    /// The target needs a broker connection but no URL was given.
    #[error("connection {connection:?} is not configured")]
    MissingConnection {
        /// The connection name.
        connection: String,
    },
    /// The named connection's URL is for another kind of broker.
    #[error("connection {connection:?} ({url}) is not a {expected} connection")]
    WrongConnectionKind {
        /// The connection name.
        connection: String,
        /// The connection's URL, password masked.
        url: String,
        /// The kind the target needs.
        expected: ConnectionKind,
    },
    /// The connection URL asks for TLS, which this version cannot do.
    #[error("TLS to {broker} is not supported yet ({url})")]
    TlsUnsupported {
        /// `RabbitMQ` or `NATS`.
        broker: &'static str,
        /// The connection's URL, password masked.
        url: String,
    },
    /// Connecting to the broker failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The connection's URL, password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// A step did not finish within its time limit.
    #[error("timed out after {}s waiting for {waiting_for}", TIMEOUT.as_secs())]
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
    },
    /// An attribute cannot be sent as a header.
    #[error("attribute {name:?} cannot be sent as a header: {reason}")]
    InvalidAttribute {
        /// The attribute name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The webhook answered with a status other than 2xx.
    #[error("webhook answered {status}")]
    WebhookStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// The webhook request failed before a response arrived.
    #[error("webhook request failed: {reason}")]
    Webhook {
        /// Why (URLs in it masked).
        reason: String,
    },
    /// RabbitMQ refused the message with a negative publisher confirm.
    #[error("RabbitMQ nacked the message")]
    RabbitMqNack,
    /// RabbitMQ returned the message: no queue is bound for its routing key.
    #[error(
        "RabbitMQ returned the message as unroutable (exchange {exchange:?}, routing key {routing_key:?}): {reply}"
    )]
    RabbitMqUnroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
        /// The broker's reply code and text.
        reply: String,
    },
    /// Another RabbitMQ failure (closed channel, missing exchange, …).
    #[error("RabbitMQ error: {reason}")]
    RabbitMq {
        /// Why.
        reason: String,
    },
    /// No JetStream stream listens on the subject.
    #[error("no JetStream stream captures subject {subject}")]
    NoStream {
        /// The subject published to.
        subject: String,
    },
    /// Another NATS failure.
    #[error("NATS error: {reason}")]
    Nats {
        /// Why.
        reason: String,
    },
}

/// Parses a destination string (see the [module documentation](self) for the syntax).
pub fn parse_target(arn: &str) -> Result<Target, TargetError> {
    if has_http_scheme(arn) {
        return parse_webhook(arn, arn);
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, _region, _account, resource] = parts[..] else {
        return Err(unsupported(arn));
    };
    if prefix != "arn" {
        return Err(unsupported(arn));
    }
    match (partition, service) {
        ("aws", "lambda") => parse_function(arn, resource),
        ("lambent", "webhook") => parse_webhook(arn, resource),
        ("lambent", "rabbitmq") => parse_rabbitmq(arn, resource),
        ("lambent", "nats") => parse_nats(arn, resource),
        _ => Err(unsupported(arn)),
    }
}

fn parse_function(arn: &str, resource: &str) -> Result<Target, TargetError> {
    let invalid = |reason: String| invalid(arn, reason, FUNCTION_FORM);
    let mut fields = resource.split(':');
    if fields.next() != Some("function") {
        return Err(invalid("the resource must start with \"function:\"".into()));
    }
    let name = fields.next().unwrap_or_default();
    if !is_identifier(name, 64) {
        return Err(invalid(format!(
            "function name {name:?} must be 1-64 letters, digits, '-' or '_'"
        )));
    }
    let qualifier = fields.next();
    if fields.next().is_some() {
        return Err(invalid("too many ':'-separated fields".into()));
    }
    if let Some(q) = qualifier
        && !(q == "$LATEST" || is_identifier(q, 128))
    {
        return Err(invalid(format!(
            "qualifier {q:?} must be $LATEST, a version number or an alias (1-128 letters, digits, '-' or '_')"
        )));
    }
    Ok(Target::Function {
        name: name.to_owned(),
        qualifier: qualifier.map(str::to_owned),
    })
}

fn parse_webhook(arn: &str, url: &str) -> Result<Target, TargetError> {
    let invalid = |reason: &str| invalid(arn, reason.to_owned(), WEBHOOK_FORM);
    let uri: Uri = url
        .parse()
        .map_err(|_| invalid("the URL cannot be parsed"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the URL scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    Ok(Target::Webhook {
        url: url.to_owned(),
    })
}

fn parse_rabbitmq(arn: &str, resource: &str) -> Result<Target, TargetError> {
    let invalid = |reason: String| invalid(arn, reason, RABBITMQ_FORM);
    let mut fields = resource.splitn(3, '/');
    let (Some(connection), Some(kind), Some(rest)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid(
            "expected <connection>/exchange/… or <connection>/queue/…".into(),
        ));
    };
    check_connection_name(connection).map_err(invalid)?;
    let (exchange, routing_key) = match kind {
        "exchange" => {
            let (exchange, routing_key) = rest.split_once('/').unwrap_or((rest, ""));
            check_amqp_name(exchange, "exchange name", true).map_err(invalid)?;
            check_amqp_name(routing_key, "routing key", true).map_err(invalid)?;
            (exchange, routing_key)
        }
        "queue" => {
            check_amqp_name(rest, "queue name", false).map_err(invalid)?;
            ("", rest)
        }
        other => {
            return Err(invalid(format!(
                "{other:?} after the connection name must be \"exchange\" or \"queue\""
            )));
        }
    };
    Ok(Target::RabbitMq {
        connection: connection.to_owned(),
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    })
}

fn parse_nats(arn: &str, resource: &str) -> Result<Target, TargetError> {
    let invalid = |reason: String| invalid(arn, reason, NATS_FORM);
    let mut fields = resource.splitn(3, '/');
    let (Some(connection), Some(kind), Some(subject)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid(
            "expected <connection>/subject/<subject> or <connection>/jetstream/<subject>".into(),
        ));
    };
    check_connection_name(connection).map_err(invalid)?;
    let jetstream = match kind {
        "subject" => false,
        "jetstream" => true,
        other => {
            return Err(invalid(format!(
                "{other:?} after the connection name must be \"subject\" or \"jetstream\""
            )));
        }
    };
    check_subject(subject).map_err(invalid)?;
    Ok(Target::Nats {
        connection: connection.to_owned(),
        subject: subject.to_owned(),
        jetstream,
    })
}

fn has_http_scheme(s: &str) -> bool {
    let lower = |n: usize| s.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// `[A-Za-z0-9_-]{1,max}`.
fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a broker connection's name (`[A-Za-z0-9_-]{1,64}`); the error says the rule.
pub fn check_connection_name(name: &str) -> Result<(), String> {
    if is_identifier(name, 64) {
        Ok(())
    } else {
        Err(format!(
            "connection name {name:?} must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

fn check_amqp_name(name: &str, what: &str, may_be_empty: bool) -> Result<(), String> {
    if name.is_empty() && !may_be_empty {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > 255 {
        return Err(format!("the {what} is longer than 255 bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the {what} {name:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "subject {subject:?} contains whitespace or control characters"
        ));
    }
    if subject.contains(['*', '>']) {
        return Err(format!(
            "subject {subject:?} contains a wildcard ('*' or '>')"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!("subject {subject:?} has an empty token"));
    }
    Ok(())
}

fn unsupported(target: &str) -> TargetError {
    TargetError::Unsupported {
        target: echo(target),
    }
}

fn invalid(target: &str, reason: String, expected: &'static str) -> TargetError {
    TargetError::Invalid {
        target: echo(target),
        reason: mask_passwords(&reason),
        expected,
    }
}

/// A destination string fit to quote in an error: passwords masked, at most
/// [`MAX_ECHO_CHARS`] characters.
fn echo(target: &str) -> String {
    let masked = mask_passwords(target);
    match masked.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &masked[..cut]),
        None => masked,
    }
}

/// Replaces the password of every `scheme://user:password@host` URL in `text` by `***`.
pub fn mask_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let authority_start = pos + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            out.push_str(&authority[..=colon]);
            out.push_str("***");
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[authority_end..];
    }
    out.push_str(rest);
    out
}

/// `text` (typically a library's error message about `url`) with URL passwords masked and
/// any literal occurrence of `url`'s password, raw or percent-decoded, replaced by `***`.
fn scrub(text: &str, url: &str) -> String {
    let mut text = mask_passwords(text);
    if let Some(password) = url_password(url) {
        let decoded = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        for secret in [password, decoded.as_str()] {
            if !secret.is_empty() {
                text = text.replace(secret, "***");
            }
        }
    }
    text
}

/// The raw password in `scheme://user:password@host…`, if any.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// An error and its sources, joined with `": "`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A RabbitMQ connection with a channel in confirm mode (fields drop in order: the channel
/// closes before its connection).
struct RabbitLink {
    channel: lapin::Channel,
    connection: lapin::Connection,
}

impl RabbitLink {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// A NATS client and its JetStream context; `id` tells cached links apart.
#[derive(Clone)]
struct NatsLink {
    id: u64,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
}

/// One cache slot per connection URL; the async lock serialises connecting (and, for
/// RabbitMQ, publishing, so that a returned message is matched with its own confirm).
type Slots<T> = Mutex<HashMap<String, Arc<AsyncMutex<Option<T>>>>>;

/// Delivers messages, keeping one connection per named broker connection and reconnecting
/// after failures.
pub struct Senders {
    http: Result<HttpsClient, String>,
    rabbitmq: Slots<RabbitLink>,
    nats: Slots<NatsLink>,
    next_nats_id: AtomicU64,
}

impl fmt::Debug for Senders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Senders").finish_non_exhaustive()
    }
}

impl Default for Senders {
    fn default() -> Self {
        Self::new()
    }
}

impl Senders {
    /// Creates the senders: an HTTP(S) client with the system's root certificates, and no
    /// broker connection yet (they are opened on first use).
    pub fn new() -> Self {
        let http = webhook_client();
        if let Err(reason) = &http {
            tracing::error!(%reason, "webhook client unavailable");
        }
        Senders {
            http,
            rabbitmq: Mutex::default(),
            nats: Mutex::default(),
            next_nats_id: AtomicU64::new(0),
        }
    }

    /// Delivers `message` to `target`. `connection_url` is the URL of the target's named
    /// connection (None for webhooks). Returns `Ok` once the destination has taken the
    /// message as durably as its protocol allows.
    pub async fn send(
        &self,
        target: &Target,
        connection_url: Option<&str>,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let result = match target {
            Target::Function { .. } => Err(DeliveryError::FunctionTarget),
            Target::Webhook { url } => self.send_webhook(url, message).await,
            Target::RabbitMq {
                connection,
                exchange,
                routing_key,
            } => {
                let url = broker_url(connection, ConnectionKind::RabbitMq, connection_url)?;
                self.send_rabbitmq(url, exchange, routing_key, message)
                    .await
            }
            Target::Nats {
                connection,
                subject,
                jetstream,
            } => {
                let url = broker_url(connection, ConnectionKind::Nats, connection_url)?;
                self.send_nats(url, subject, *jetstream, message).await
            }
        };
        match &result {
            Ok(()) => tracing::debug!(target_kind = target_kind(target), "record delivered"),
            Err(error) => {
                tracing::debug!(target_kind = target_kind(target), %error, "delivery failed");
            }
        }
        result
    }

    async fn send_webhook(&self, url: &str, message: &Message) -> Result<(), DeliveryError> {
        let client = self
            .http
            .as_ref()
            .map_err(|reason| DeliveryError::Webhook {
                reason: reason.clone(),
            })?;
        let request = webhook_request(url, message)?;
        let exchange = async {
            let response =
                client
                    .request(request)
                    .await
                    .map_err(|error| DeliveryError::Webhook {
                        reason: scrub(&error_chain(&error), url),
                    })?;
            let status = response.status();
            // Read a bounded part of the body so the pooled connection can be reused; its
            // content does not matter.
            let _discarded = Limited::new(response.into_body(), MAX_WEBHOOK_RESPONSE_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::WebhookStatus {
                    status: status.as_u16(),
                })
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| DeliveryError::Timeout {
                waiting_for: "the webhook's response",
            })?
    }

    async fn send_rabbitmq(
        &self,
        url: &str,
        exchange: &str,
        routing_key: &str,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let slot = slot(&self.rabbitmq, url);
        let mut cached = slot.lock().await;
        let link = match cached.take() {
            Some(link) if link.usable() => link,
            Some(_) => {
                tracing::info!(url = %mask_passwords(url), "RabbitMQ connection lost; reconnecting");
                connect_rabbitmq(url).await?
            }
            None => connect_rabbitmq(url).await?,
        };
        let result = publish_rabbitmq(&link.channel, exchange, routing_key, message).await;
        if result.is_ok() {
            *cached = Some(link);
        }
        result
    }

    async fn send_nats(
        &self,
        url: &str,
        subject: &str,
        jetstream: bool,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let headers = nats_headers(message)?;
        let slot = slot(&self.nats, url);
        let link = {
            let mut cached = slot.lock().await;
            match cached.as_ref() {
                Some(link) => link.clone(),
                None => {
                    let id = self.next_nats_id.fetch_add(1, Ordering::Relaxed);
                    let link = connect_nats(url, id).await?;
                    *cached = Some(link.clone());
                    link
                }
            }
        };
        let result = if jetstream {
            publish_jetstream(&link, subject, headers, message.body.clone()).await
        } else {
            publish_core(&link, subject, headers, message.body.clone(), url).await
        };
        if result.is_err() {
            let mut cached = slot.lock().await;
            if cached.as_ref().is_some_and(|cached| cached.id == link.id) {
                *cached = None;
            }
        }
        result
    }
}

fn target_kind(target: &Target) -> &'static str {
    match target {
        Target::Function { .. } => "function",
        Target::Webhook { .. } => "webhook",
        Target::RabbitMq { .. } => "rabbitmq",
        Target::Nats { .. } => "nats",
    }
}

fn slot<T>(slots: &Slots<T>, url: &str) -> Arc<AsyncMutex<Option<T>>> {
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(slots.entry(url.to_owned()).or_default())
}

/// Checks that `url` is present and belongs to a broker of the `expected` kind that this
/// version can reach.
fn broker_url<'a>(
    connection: &str,
    expected: ConnectionKind,
    url: Option<&'a str>,
) -> Result<&'a str, DeliveryError> {
    let url = url.ok_or_else(|| DeliveryError::MissingConnection {
        connection: connection.to_owned(),
    })?;
    if ConnectionKind::of_url(url) != Some(expected) {
        return Err(DeliveryError::WrongConnectionKind {
            connection: connection.to_owned(),
            url: mask_passwords(url),
            expected,
        });
    }
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    match (expected, scheme.as_str()) {
        (ConnectionKind::RabbitMq, "amqps") => Err(DeliveryError::TlsUnsupported {
            broker: "RabbitMQ",
            url: mask_passwords(url),
        }),
        (ConnectionKind::Nats, "tls") => Err(DeliveryError::TlsUnsupported {
            broker: "NATS",
            url: mask_passwords(url),
        }),
        _ => Ok(url),
    }
}

/// The pooled HTTP(S) client for webhooks. Without system root certificates it still
/// serves `http://`; `https://` then fails certificate verification.
fn webhook_client() -> Result<HttpsClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system root certificates; https webhooks will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| format!("cannot configure TLS: {error}"))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
    // Without TCP_NODELAY a request written in two segments waits for the receiver's
    // delayed ACK: 40 ms per delivery.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// GETs `url` (`http://` or `https://`) and returns its body, at most `limit` bytes, within
/// `timeout`; used for documents such as a JWT issuer's signing keys.
pub async fn fetch_url(url: &str, limit: usize, timeout: Duration) -> Result<Bytes, String> {
    let client = webhook_client()?;
    let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let request = Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let fetch = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url} answered {}", response.status()));
        }
        Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("GET {url}: {e}"))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("GET {url} took longer than {timeout:?}"))?
}

/// The webhook `POST`: body, JSON content type, `X-Lambent-<Name>` attribute headers, and
/// Basic authentication from the URL's user info (which is taken out of the URL).
fn webhook_request(url: &str, message: &Message) -> Result<Request<Full<Bytes>>, DeliveryError> {
    let bad_url = |reason: &str| DeliveryError::Webhook {
        reason: format!("{reason}: {}", mask_passwords(url)),
    };
    let uri: Uri = url.parse().map_err(|_| bad_url("invalid URL"))?;
    let mut parts = uri.into_parts();
    let mut authorization = None;
    if let Some(authority) = &parts.authority
        && let Some((userinfo, host)) = authority.as_str().rsplit_once('@')
    {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = format!("{}:{}", decode(user), decode(password));
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| bad_url("invalid user info in URL"))?;
        value.set_sensitive(true);
        authorization = Some(value);
        parts.authority =
            Some(Authority::from_str(host).map_err(|_| bad_url("invalid host in URL"))?);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    let uri = Uri::from_parts(parts).map_err(|_| bad_url("invalid URL"))?;

    let mut request = Request::post(uri)
        .body(Full::new(message.body.clone()))
        .map_err(|_| bad_url("invalid URL"))?;
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = authorization {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    for (name, value) in &message.attributes {
        let header =
            HeaderName::from_bytes(format!("X-Lambent-{name}").as_bytes()).map_err(|_| {
                DeliveryError::InvalidAttribute {
                    name: name.clone(),
                    reason: "invalid HTTP header name",
                }
            })?;
        let value = HeaderValue::from_str(value).map_err(|_| DeliveryError::InvalidAttribute {
            name: name.clone(),
            reason: "invalid HTTP header value",
        })?;
        headers.append(header, value);
    }
    Ok(request)
}

async fn connect_rabbitmq(url: &str) -> Result<RabbitLink, DeliveryError> {
    let connect_error = |reason: String| DeliveryError::Connect {
        url: mask_passwords(url),
        reason: scrub(&reason, url),
    };
    let connect = async {
        let properties = ConnectionProperties::default().with_connection_name("lambent".into());
        let connection = lapin::Connection::connect(url, properties)
            .await
            .map_err(|error| connect_error(error_chain(&error)))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| connect_error(format!("cannot open a channel: {error}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| connect_error(format!("cannot enable publisher confirms: {error}")))?;
        Ok(RabbitLink {
            connection,
            channel,
        })
    };
    let link = tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| connect_error(format!("no answer within {}s", TIMEOUT.as_secs())))??;
    tracing::debug!(url = %mask_passwords(url), "connected to RabbitMQ");
    Ok(link)
}

fn short_string(value: &str, what: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(value).map_err(|_| DeliveryError::RabbitMq {
        reason: format!("the {what} is longer than 255 bytes"),
    })
}

async fn publish_rabbitmq(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    message: &Message,
) -> Result<(), DeliveryError> {
    let mut headers = FieldTable::default();
    for (name, value) in &message.attributes {
        let key =
            ShortString::try_new(name.as_str()).map_err(|_| DeliveryError::InvalidAttribute {
                name: name.clone(),
                reason: "AMQP header names hold at most 255 bytes",
            })?;
        headers.insert(key, AMQPValue::LongString(value.as_str().into()));
    }
    let mut properties = BasicProperties::default()
        .with_content_type(short_string("application/json", "content type")?)
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(request_id) = message.attribute(REQUEST_ID_ATTRIBUTE) {
        properties = properties.with_message_id(short_string(request_id, "message id")?);
    }
    let exchange_name = short_string(exchange, "exchange name")?;
    let key = short_string(routing_key, "routing key")?;
    let rabbitmq_error = |error: lapin::Error| DeliveryError::RabbitMq {
        reason: mask_passwords(&error.to_string()),
    };
    let publish = async {
        let confirm = channel
            .basic_publish(
                exchange_name,
                key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &message.body,
                properties,
            )
            .await
            .map_err(rabbitmq_error)?;
        confirm.await.map_err(rabbitmq_error)
    };
    let confirmation =
        tokio::time::timeout(TIMEOUT, publish)
            .await
            .map_err(|_| DeliveryError::Timeout {
                waiting_for: "RabbitMQ's publisher confirm",
            })??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(DeliveryError::RabbitMqUnroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
        }),
        Confirmation::Nack(_) => Err(DeliveryError::RabbitMqNack),
        Confirmation::NotRequested => Err(DeliveryError::RabbitMq {
            reason: "publisher confirms are not enabled on the channel".into(),
        }),
    }
}

fn nats_headers(message: &Message) -> Result<async_nats::HeaderMap, DeliveryError> {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &message.attributes {
        let header = async_nats::HeaderName::from_str(name).map_err(|_| {
            DeliveryError::InvalidAttribute {
                name: name.clone(),
                reason: "invalid NATS header name",
            }
        })?;
        let value = async_nats::HeaderValue::from_str(value).map_err(|_| {
            DeliveryError::InvalidAttribute {
                name: name.clone(),
                reason: "invalid NATS header value",
            }
        })?;
        headers.append(header, value);
    }
    Ok(headers)
}

/// NATS client options carrying the credentials of `url` (`user:password@` or `token@`),
/// which the client itself ignores in URLs; the error names the URL with its password masked.
pub fn nats_connect_options(url: &str) -> Result<async_nats::ConnectOptions, String> {
    let address: async_nats::ServerAddr = url
        .parse()
        .map_err(|e| format!("{} is not a NATS URL: {e}", mask_passwords(url)))?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let options = async_nats::ConnectOptions::new();
    Ok(match (address.username(), address.password()) {
        (Some(user), Some(password)) => options.user_and_password(decode(user), decode(password)),
        (Some(token), None) => options.token(decode(token)),
        _ => options,
    })
}

async fn connect_nats(url: &str, id: u64) -> Result<NatsLink, DeliveryError> {
    let connect_error = |reason: String| DeliveryError::Connect {
        url: mask_passwords(url),
        reason: scrub(&reason, url),
    };
    let connect = nats_connect_options(url)
        .map_err(connect_error)?
        .name("lambent")
        .connection_timeout(TIMEOUT)
        .connect(url);
    let client = tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| connect_error(format!("no answer within {}s", TIMEOUT.as_secs())))?
        .map_err(|error| connect_error(error_chain(&error)))?;
    let mut jetstream = async_nats::jetstream::new(client.clone());
    jetstream.set_timeout(TIMEOUT);
    tracing::debug!(url = %mask_passwords(url), "connected to NATS");
    Ok(NatsLink {
        id,
        client,
        jetstream,
    })
}

async fn publish_core(
    link: &NatsLink,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
    url: &str,
) -> Result<(), DeliveryError> {
    let nats_error = |error: &dyn std::error::Error| DeliveryError::Nats {
        reason: scrub(&error_chain(error), url),
    };
    let publish = async {
        link.client
            .publish_with_headers(subject.to_owned(), headers, body)
            .await
            .map_err(|error| nats_error(&error))?;
        link.client
            .flush()
            .await
            .map_err(|error| nats_error(&error))
    };
    tokio::time::timeout(TIMEOUT, publish)
        .await
        .map_err(|_| DeliveryError::Timeout {
            waiting_for: "the NATS server to take the message",
        })?
}

async fn publish_jetstream(
    link: &NatsLink,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> Result<(), DeliveryError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let publish = async {
        link.jetstream
            .publish_with_headers(subject.to_owned(), headers, body)
            .await?
            .await
    };
    let timed_out = || DeliveryError::Timeout {
        waiting_for: "the JetStream PubAck",
    };
    match tokio::time::timeout(TIMEOUT, publish).await {
        Err(_) => Err(timed_out()),
        Ok(Ok(_ack)) => Ok(()),
        Ok(Err(error)) => Err(match error.kind() {
            PublishErrorKind::StreamNotFound => DeliveryError::NoStream {
                subject: subject.to_owned(),
            },
            PublishErrorKind::TimedOut => timed_out(),
            _ => DeliveryError::Nats {
                reason: mask_passwords(&error_chain(&error)),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str, qualifier: Option<&str>) -> Target {
        Target::Function {
            name: name.into(),
            qualifier: qualifier.map(Into::into),
        }
    }

    fn rabbitmq(connection: &str, exchange: &str, routing_key: &str) -> Target {
        Target::RabbitMq {
            connection: connection.into(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        }
    }

    fn nats(connection: &str, subject: &str, jetstream: bool) -> Target {
        Target::Nats {
            connection: connection.into(),
            subject: subject.into(),
            jetstream,
        }
    }

    fn webhook(url: &str) -> Target {
        Target::Webhook { url: url.into() }
    }

    fn parsed(arn: &str) -> Target {
        match parse_target(arn) {
            Ok(target) => target,
            Err(error) => panic!("{arn} should parse: {error}"),
        }
    }

    fn rejected(arn: &str) -> String {
        match parse_target(arn) {
            Ok(target) => panic!("{arn} should be rejected, got {target:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_function_arns() {
        assert_eq!(
            parsed("arn:aws:lambda:us-east-1:123456789012:function:my-fn"),
            function("my-fn", None)
        );
        assert_eq!(
            parsed("arn:aws:lambda:::function:my_fn:$LATEST"),
            function("my_fn", Some("$LATEST"))
        );
        assert_eq!(
            parsed("arn:aws:lambda:anything:goes:function:f:42"),
            function("f", Some("42"))
        );
        assert_eq!(
            parsed("arn:aws:lambda:eu-west-1:000000000000:function:f:live-2"),
            function("f", Some("live-2"))
        );
        let name64 = "a".repeat(64);
        assert_eq!(
            parsed(&format!("arn:aws:lambda:r:a:function:{name64}")),
            function(&name64, None)
        );
        let alias128 = "b".repeat(128);
        assert_eq!(
            parsed(&format!("arn:aws:lambda:r:a:function:f:{alias128}")),
            function("f", Some(&alias128))
        );
    }

    #[test]
    fn rejects_bad_function_arns() {
        for arn in [
            "arn:aws:lambda:r:a:function:",
            "arn:aws:lambda:r:a:function:bad.name",
            "arn:aws:lambda:r:a:function:f:",
            "arn:aws:lambda:r:a:function:f:$latest",
            "arn:aws:lambda:r:a:function:f:1:2",
            "arn:aws:lambda:r:a:layer:f",
            "arn:aws:lambda:r:a:function",
            &format!("arn:aws:lambda:r:a:function:{}", "a".repeat(65)),
            &format!("arn:aws:lambda:r:a:function:f:{}", "b".repeat(129)),
        ] {
            let message = rejected(arn);
            assert!(message.contains(FUNCTION_FORM), "{message}");
        }
    }

    #[test]
    fn parses_webhooks() {
        assert_eq!(
            parsed("https://example.com/hook?x=1"),
            webhook("https://example.com/hook?x=1")
        );
        assert_eq!(
            parsed("http://127.0.0.1:8080"),
            webhook("http://127.0.0.1:8080")
        );
        assert_eq!(
            parsed("HTTPS://example.com/"),
            webhook("HTTPS://example.com/")
        );
        assert_eq!(
            parsed("arn:lambent:webhook:::https://user:pw@example.com:8443/a/b"),
            webhook("https://user:pw@example.com:8443/a/b")
        );
        assert_eq!(
            parsed("arn:lambent:webhook:us-east-1:123:http://h/x"),
            webhook("http://h/x")
        );
    }

    #[test]
    fn rejects_bad_webhooks() {
        for arn in [
            "arn:lambent:webhook:::ftp://example.com/x",
            "arn:lambent:webhook:::example.com/x",
            "arn:lambent:webhook:::",
            "arn:lambent:webhook:::http://",
            "arn:lambent:webhook:::http:///path",
            "http://",
            "http:///only-a-path",
            "https://exa mple.com/",
        ] {
            let message = rejected(arn);
            assert!(message.contains("http:// or https://"), "{message}");
        }
    }

    #[test]
    fn parses_rabbitmq_arns() {
        assert_eq!(
            parsed("arn:lambent:rabbitmq:::main/exchange/events/orders.created"),
            rabbitmq("main", "events", "orders.created")
        );
        assert_eq!(
            parsed("arn:lambent:rabbitmq:r:a:main/exchange/events"),
            rabbitmq("main", "events", "")
        );
        assert_eq!(
            parsed("arn:lambent:rabbitmq:::main/exchange/amq.topic/a/b.c/d"),
            rabbitmq("main", "amq.topic", "a/b.c/d")
        );
        assert_eq!(
            parsed("arn:lambent:rabbitmq:::main/exchange//direct-key"),
            rabbitmq("main", "", "direct-key")
        );
        assert_eq!(
            parsed("arn:lambent:rabbitmq:::rabbit_1/queue/results"),
            rabbitmq("rabbit_1", "", "results")
        );
    }

    #[test]
    fn rejects_bad_rabbitmq_arns() {
        for arn in [
            "arn:lambent:rabbitmq:::main",
            "arn:lambent:rabbitmq:::main/queue",
            "arn:lambent:rabbitmq:::main/queue/",
            "arn:lambent:rabbitmq:::main/topic/x",
            "arn:lambent:rabbitmq:::/queue/q",
            "arn:lambent:rabbitmq:::bad.name/queue/q",
            "arn:lambent:rabbitmq:::main/queue/has space",
            "arn:lambent:rabbitmq:::main/exchange/e/key\twith-tab",
            &format!("arn:lambent:rabbitmq:::main/queue/{}", "q".repeat(256)),
            &format!("arn:lambent:rabbitmq:::main/exchange/e/{}", "k".repeat(256)),
            &format!("arn:lambent:rabbitmq:::{}/queue/q", "c".repeat(65)),
        ] {
            let message = rejected(arn);
            assert!(message.contains("/exchange/<exchange>"), "{message}");
        }
    }

    #[test]
    fn parses_nats_arns() {
        assert_eq!(
            parsed("arn:lambent:nats:::main/subject/orders.created"),
            nats("main", "orders.created", false)
        );
        assert_eq!(
            parsed("arn:lambent:nats:r:a:main/jetstream/ORDERS.new"),
            nats("main", "ORDERS.new", true)
        );
        assert_eq!(
            parsed("arn:lambent:nats:::n/subject/a/b:c"),
            nats("n", "a/b:c", false)
        );
    }

    #[test]
    fn rejects_bad_nats_arns() {
        for arn in [
            "arn:lambent:nats:::main",
            "arn:lambent:nats:::main/subject",
            "arn:lambent:nats:::main/subject/",
            "arn:lambent:nats:::main/stream/x",
            "arn:lambent:nats:::main/subject/orders.*",
            "arn:lambent:nats:::main/jetstream/orders.>",
            "arn:lambent:nats:::main/subject/has space",
            "arn:lambent:nats:::main/subject/a..b",
            "arn:lambent:nats:::main/subject/.a",
            "arn:lambent:nats:::main/subject/a.",
            "arn:lambent:nats:::bad!/subject/a",
        ] {
            let message = rejected(arn);
            assert!(message.contains("/subject/<subject>"), "{message}");
        }
    }

    #[test]
    fn rejects_other_services_listing_the_accepted_forms() {
        for arn in [
            "arn:aws:sqs:us-east-1:123456789012:queue",
            "arn:aws:sns:us-east-1:123456789012:topic",
            "arn:aws:lambda:us-east-1:123456789012",
            "arn:lambent:kafka:::main/topic/x",
            "arn:aws:webhook:::http://x",
            "ARN:aws:lambda:::function:f",
            "garbage",
            "",
        ] {
            let message = rejected(arn);
            assert!(message.contains(ACCEPTED_FORMS), "{message}");
            assert!(message.starts_with("unsupported destination"), "{message}");
        }
    }

    #[test]
    fn long_targets_are_shortened_in_errors() {
        let arn = format!("arn:aws:sqs:::{}", "x".repeat(1000));
        let message = rejected(&arn);
        assert!(message.len() < 1000, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn connections_and_kinds() {
        assert_eq!(rabbitmq("main", "", "q").connection(), Some("main"));
        assert_eq!(
            rabbitmq("main", "", "q").connection_kind(),
            Some(ConnectionKind::RabbitMq)
        );
        assert_eq!(nats("n", "s", true).connection(), Some("n"));
        assert_eq!(
            nats("n", "s", false).connection_kind(),
            Some(ConnectionKind::Nats)
        );
        assert_eq!(webhook("http://h").connection(), None);
        assert_eq!(webhook("http://h").connection_kind(), None);
        assert_eq!(function("f", None).connection(), None);
        assert_eq!(function("f", None).connection_kind(), None);

        assert_eq!(
            ConnectionKind::of_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            Some(ConnectionKind::RabbitMq)
        );
        assert_eq!(
            ConnectionKind::of_url("AMQPS://h"),
            Some(ConnectionKind::RabbitMq)
        );
        assert_eq!(
            ConnectionKind::of_url("nats://127.0.0.1:4222"),
            Some(ConnectionKind::Nats)
        );
        assert_eq!(
            ConnectionKind::of_url("tls://h:4222"),
            Some(ConnectionKind::Nats)
        );
        assert_eq!(
            ConnectionKind::of_url("mqtt://127.0.0.1:1883"),
            Some(ConnectionKind::Mqtt)
        );
        assert_eq!(
            ConnectionKind::of_url("redis://127.0.0.1:6379/0"),
            Some(ConnectionKind::Redis)
        );
        assert_eq!(ConnectionKind::of_url("http://h"), None);
        assert_eq!(ConnectionKind::of_url("127.0.0.1:4222"), None);
        assert_eq!(ConnectionKind::RabbitMq.as_str(), "rabbitmq");
        assert_eq!(ConnectionKind::Nats.as_str(), "nats");
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_passwords("amqp://guest:guest@127.0.0.1:5672"),
            "amqp://guest:***@127.0.0.1:5672"
        );
        assert_eq!(
            mask_passwords("cannot reach nats://u:p%40ss@h:4222/x and https://a:b@c/d?e=f#g."),
            "cannot reach nats://u:***@h:4222/x and https://a:***@c/d?e=f#g."
        );
        assert_eq!(
            mask_passwords("http://user@h/ http://h:80/a@b plain text"),
            "http://user@h/ http://h:80/a@b plain text"
        );
        assert_eq!(mask_passwords("amqp://u:p:q@h"), "amqp://u:***@h");
        assert_eq!(mask_passwords("no url"), "no url");
        assert_eq!(mask_passwords("trailing ://"), "trailing ://");
    }

    #[test]
    fn errors_never_show_passwords() {
        let message = rejected("arn:lambent:webhook:::ftp://user:s3cret@example.com/");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("ftp://user:***@example.com/"), "{message}");

        let message = rejected("https://user:s3cret@exa mple.com/");
        assert!(!message.contains("s3cret"), "{message}");

        let error = broker_url(
            "main",
            ConnectionKind::Nats,
            Some("amqp://guest:s3cret@127.0.0.1:5672"),
        )
        .map(str::to_owned);
        let message = error.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(
            message.contains("amqp://guest:***@127.0.0.1:5672"),
            "{message}"
        );

        assert_eq!(
            scrub(
                "auth failed for s3cret and p@ss",
                "amqp://u:p%40ss@h:1?x=s3cret"
            ),
            "auth failed for s3cret and ***"
        );
        assert_eq!(
            scrub("password s3cret rejected", "nats://u:s3cret@h:4222"),
            "password *** rejected"
        );
    }

    #[test]
    fn broker_urls_are_checked() {
        assert!(matches!(
            broker_url("main", ConnectionKind::RabbitMq, None),
            Err(DeliveryError::MissingConnection { .. })
        ));
        assert!(matches!(
            broker_url("main", ConnectionKind::RabbitMq, Some("nats://h:4222")),
            Err(DeliveryError::WrongConnectionKind { .. })
        ));
        let tls = broker_url("main", ConnectionKind::RabbitMq, Some("amqps://u:pw@h"));
        let message = tls.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message,
            "TLS to RabbitMQ is not supported yet (amqps://u:***@h)"
        );
        let tls = broker_url("main", ConnectionKind::Nats, Some("tls://h:4222"));
        assert!(matches!(
            tls,
            Err(DeliveryError::TlsUnsupported { broker: "NATS", .. })
        ));
        assert_eq!(
            broker_url("main", ConnectionKind::Nats, Some("nats://h:4222")).ok(),
            Some("nats://h:4222")
        );
    }

    #[test]
    fn webhook_requests_carry_headers_and_basic_auth() {
        let message = Message {
            body: Bytes::from_static(b"{}"),
            attributes: vec![("RequestID".into(), "abc".into())],
        };
        let request = match webhook_request("http://u:p%40ss@127.0.0.1:9/hook?a=1", &message) {
            Ok(request) => request,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(request.uri().to_string(), "http://127.0.0.1:9/hook?a=1");
        assert_eq!(request.method(), http::Method::POST);
        let headers = request.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-lambent-requestid"], "abc");
        assert_eq!(headers["authorization"], "Basic dTpwQHNz");

        let bad = Message {
            body: Bytes::new(),
            attributes: vec![("Bad Name".into(), "v".into())],
        };
        assert!(matches!(
            webhook_request("http://h/", &bad),
            Err(DeliveryError::InvalidAttribute { .. })
        ));
        let request = webhook_request("http://h", &Message::default());
        assert_eq!(
            request.map(|r| r.uri().to_string()).ok().as_deref(),
            Some("http://h/")
        );
    }

    #[test]
    fn delivery_errors_read_well() {
        assert_eq!(
            DeliveryError::WebhookStatus { status: 503 }.to_string(),
            "webhook answered 503"
        );
        assert_eq!(
            DeliveryError::RabbitMqNack.to_string(),
            "RabbitMQ nacked the message"
        );
        assert_eq!(
            DeliveryError::NoStream {
                subject: "a.b".into()
            }
            .to_string(),
            "no JetStream stream captures subject a.b"
        );
        assert_eq!(
            DeliveryError::Timeout {
                waiting_for: "the JetStream PubAck"
            }
            .to_string(),
            "timed out after 10s waiting for the JetStream PubAck"
        );
    }

    #[tokio::test]
    async fn function_targets_are_refused() {
        let senders = Senders::new();
        let result = senders
            .send(&function("f", None), None, &Message::default())
            .await;
        assert!(matches!(result, Err(DeliveryError::FunctionTarget)));
    }

    #[test]
    fn send_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let senders = Senders::new();
        let target = webhook("http://h");
        let message = Message::default();
        let future = senders.send(&target, None, &message);
        assert_send(&future);
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Senders>();
    }

    #[test]
    fn nats_url_credentials() {
        assert!(nats_connect_options("nats://u:p%40ss@127.0.0.1:4222").is_ok());
        assert!(nats_connect_options("nats://token@127.0.0.1:4222").is_ok());
        assert!(nats_connect_options("nats://127.0.0.1").is_ok());
        let err = nats_connect_options("http://u:secret@h").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
