//! Which broker a mapping reads: its `EventSourceArn` in Lambent's ARN syntax, plus `Queues`
//! and `SourceAccessConfigurations` as Amazon MQ mappings give them.
//!
//! | source | `EventSourceArn` | more |
//! |---|---|---|
//! | RabbitMQ queue | `arn:lambent:rabbitmq:::<connection>` | `Queues: ["<queue>"]`, optional `SourceAccessConfigurations: [{"Type": "VIRTUAL_HOST", "URI": "<vhost>"}]` |
//! | SQS-style queue on RabbitMQ | `arn:lambent:sqs:::<connection>/<queue>` | SQS's event shape and semantics |
//! | NATS JetStream stream | `arn:lambent:nats:::<connection>/jetstream/<stream>` | optional `Topics: ["<subject filter>"]`; stream semantics (`StartingPosition` …) |
//! | MQTT topic filter | `arn:lambent:mqtt:::<connection>` | `Topics: ["<topic filter>"]` |
//! | Redis stream | `arn:lambent:redis:::<connection>` | `Topics: ["<stream key>"]` |
//!
//! `<connection>` names a connection saved with `lambent connection put` (its URL carries the
//! broker address and credentials). ARNs of other services (`arn:aws:sqs:…`) are stored as
//! given but not polled.

use serde_json::{Map, Value};

use lambent_invoke::targets::{ConnectionKind, check_connection_name};

/// The ARN prefix of RabbitMQ sources.
const RABBITMQ_PREFIX: &str = "arn:lambent:rabbitmq:::";
/// The ARN prefix of SQS-style queues on RabbitMQ.
const SQS_PREFIX: &str = "arn:lambent:sqs:::";
/// The ARN prefix of NATS JetStream sources.
const NATS_PREFIX: &str = "arn:lambent:nats:::";
/// The ARN prefix of MQTT sources.
const MQTT_PREFIX: &str = "arn:lambent:mqtt:::";
/// The ARN prefix of Redis stream sources.
const REDIS_PREFIX: &str = "arn:lambent:redis:::";

/// A source Lambent polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A RabbitMQ (AMQP 0-9-1) queue.
    RabbitMq {
        /// The named connection holding the broker URL.
        connection: String,
        /// The queue consumed.
        queue: String,
        /// The virtual host, when `SourceAccessConfigurations` overrides the connection's.
        vhost: Option<String>,
    },
    /// A RabbitMQ queue read with SQS's event shape and semantics.
    SqsQueue {
        /// The named connection holding the broker URL.
        connection: String,
        /// The queue consumed.
        queue: String,
    },
    /// A NATS JetStream stream read as a Kinesis-style stream.
    JetStream {
        /// The named connection holding the server URL.
        connection: String,
        /// The stream.
        stream: String,
        /// Only subjects matching this filter (`Topics`), when given.
        subject_filter: Option<String>,
    },
    /// An MQTT topic filter.
    Mqtt {
        /// The named connection holding the broker URL.
        connection: String,
        /// The topic filter subscribed to (`+` and `#` wildcards).
        topic_filter: String,
    },
    /// A Redis stream read through a consumer group.
    RedisStream {
        /// The named connection holding the server URL.
        connection: String,
        /// The stream's key.
        key: String,
    },
}

impl SourceSpec {
    /// The named connection the source uses.
    pub fn connection(&self) -> &str {
        match self {
            SourceSpec::RabbitMq { connection, .. }
            | SourceSpec::SqsQueue { connection, .. }
            | SourceSpec::JetStream { connection, .. }
            | SourceSpec::Mqtt { connection, .. }
            | SourceSpec::RedisStream { connection, .. } => connection,
        }
    }

    /// The connection kind the named connection must be.
    pub fn connection_kind(&self) -> ConnectionKind {
        match self {
            SourceSpec::RabbitMq { .. } | SourceSpec::SqsQueue { .. } => ConnectionKind::RabbitMq,
            SourceSpec::JetStream { .. } => ConnectionKind::Nats,
            SourceSpec::Mqtt { .. } => ConnectionKind::Mqtt,
            SourceSpec::RedisStream { .. } => ConnectionKind::Redis,
        }
    }
}

/// True for ARNs in Lambent's own syntax (`arn:lambent:…`), which must name a source Lambent
/// can poll.
pub fn is_lambent_arn(arn: &str) -> bool {
    arn.starts_with("arn:lambent:")
}

/// True for sources read as streams (Kinesis semantics: `StartingPosition` required, retries
/// and bisection): NATS JetStream.
pub fn is_stream_arn(arn: &str) -> bool {
    arn.starts_with(NATS_PREFIX)
}

/// The one entry of `Topics`, which `kind` sources need.
fn topic(doc: &Map<String, Value>, what: &str) -> Result<Option<String>, String> {
    match doc.get("Topics") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(topics)) if topics.len() == 1 => match &topics[0] {
            Value::String(topic)
                if !topic.is_empty()
                    && topic.len() <= 1024
                    && !topic.chars().any(char::is_control) =>
            {
                Ok(Some(topic.clone()))
            }
            other => Err(format!(
                "Topics must hold one {what} of 1-1024 characters, got {other}"
            )),
        },
        Some(_) => Err(format!("Topics must be a list of one {what}")),
    }
}

fn connection_of<'a>(arn: &str, rest: &'a str) -> Result<&'a str, String> {
    let connection = rest.split('/').next().unwrap_or_default();
    check_connection_name(connection).map_err(|e| format!("EventSourceArn {arn:?}: {e}"))?;
    Ok(connection)
}

/// Reads the source of a mapping document: `Ok(None)` for ARNs Lambent does not poll (other
/// services' ARNs, or none), an error message fit for an API user for a Lambent ARN that is
/// malformed or lacks what its kind needs.
pub fn parse_source(doc: &Map<String, Value>) -> Result<Option<SourceSpec>, String> {
    let Some(arn) = doc.get("EventSourceArn").and_then(Value::as_str) else {
        return Ok(None);
    };
    if !is_lambent_arn(arn) {
        return Ok(None);
    }
    if let Some(rest) = arn.strip_prefix(SQS_PREFIX) {
        let connection = connection_of(arn, rest)?;
        let queue = rest[connection.len()..]
            .strip_prefix('/')
            .unwrap_or_default();
        if !valid_queue_name(queue) {
            return Err(format!(
                "EventSourceArn {arn:?} must be {SQS_PREFIX}<connection>/<queue> with a queue name of 1-255 bytes"
            ));
        }
        return Ok(Some(SourceSpec::SqsQueue {
            connection: connection.to_string(),
            queue: queue.to_string(),
        }));
    }
    if let Some(rest) = arn.strip_prefix(NATS_PREFIX) {
        let connection = connection_of(arn, rest)?;
        let stream = rest[connection.len()..]
            .strip_prefix("/jetstream/")
            .filter(|s| !s.is_empty() && s.len() <= 255 && !s.contains(['/', '.', '*', '>', ' ']))
            .ok_or_else(|| {
                format!(
                    "EventSourceArn {arn:?} must be {NATS_PREFIX}<connection>/jetstream/<stream>"
                )
            })?;
        return Ok(Some(SourceSpec::JetStream {
            connection: connection.to_string(),
            stream: stream.to_string(),
            subject_filter: topic(doc, "subject filter")?,
        }));
    }
    if let Some(rest) = arn.strip_prefix(MQTT_PREFIX) {
        let connection = connection_of(arn, rest)?;
        if connection.len() != rest.len() {
            return Err(format!(
                "EventSourceArn {arn:?} must be {MQTT_PREFIX}<connection> (the topic filter goes in Topics)"
            ));
        }
        let topic_filter = topic(doc, "topic filter")?.ok_or(
            "an MQTT mapping needs Topics with one topic filter, e.g. [\"sensors/+/temperature\"]",
        )?;
        return Ok(Some(SourceSpec::Mqtt {
            connection: connection.to_string(),
            topic_filter,
        }));
    }
    if let Some(rest) = arn.strip_prefix(REDIS_PREFIX) {
        let connection = connection_of(arn, rest)?;
        if connection.len() != rest.len() {
            return Err(format!(
                "EventSourceArn {arn:?} must be {REDIS_PREFIX}<connection> (the stream key goes in Topics)"
            ));
        }
        let key = topic(doc, "stream key")?
            .ok_or("a Redis mapping needs Topics with one stream key, e.g. [\"orders\"]")?;
        return Ok(Some(SourceSpec::RedisStream {
            connection: connection.to_string(),
            key,
        }));
    }
    let Some(connection) = arn.strip_prefix(RABBITMQ_PREFIX) else {
        return Err(format!(
            "EventSourceArn {arn:?} is not a source Lambent can poll: expected one of \
             {RABBITMQ_PREFIX}<connection>, {SQS_PREFIX}<connection>/<queue>, \
             {NATS_PREFIX}<connection>/jetstream/<stream>, {MQTT_PREFIX}<connection>, {REDIS_PREFIX}<connection>"
        ));
    };
    check_connection_name(connection).map_err(|e| format!("EventSourceArn {arn:?}: {e}"))?;
    let queue = match doc.get("Queues") {
        Some(Value::Array(queues)) if queues.len() == 1 => match &queues[0] {
            Value::String(queue) if valid_queue_name(queue) => queue.clone(),
            other => {
                return Err(format!(
                    "Queues must hold one queue name of 1-255 bytes without control characters, got {other}"
                ));
            }
        },
        _ => {
            return Err(
                "a RabbitMQ mapping needs Queues with exactly one queue name, e.g. [\"orders\"]"
                    .to_string(),
            );
        }
    };
    let mut vhost = None;
    if let Some(configs) = doc.get("SourceAccessConfigurations") {
        let Some(configs) = configs.as_array() else {
            return Err("SourceAccessConfigurations must be a list".to_string());
        };
        for config in configs {
            let kind = config.get("Type").and_then(Value::as_str).unwrap_or("");
            let uri = config.get("URI").and_then(Value::as_str).unwrap_or("");
            match kind {
                "VIRTUAL_HOST" if !uri.is_empty() && uri.len() <= 255 => {
                    vhost = Some(uri.to_string());
                }
                "VIRTUAL_HOST" => {
                    return Err(
                        "VIRTUAL_HOST needs a URI of 1-255 bytes: the vhost name, e.g. \"/\""
                            .into(),
                    );
                }
                "BASIC_AUTH" => {
                    return Err(format!(
                        "BASIC_AUTH secrets are not supported: put the user and password in the URL of \
                         connection {connection:?} (lambent connection put {connection} amqp://user:password@host:5672/vhost)"
                    ));
                }
                other => {
                    return Err(format!(
                        "SourceAccessConfigurations Type {other:?} is not supported for RabbitMQ (only VIRTUAL_HOST)"
                    ));
                }
            }
        }
    }
    Ok(Some(SourceSpec::RabbitMq {
        connection: connection.to_string(),
        queue,
        vhost,
    }))
}

fn valid_queue_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rabbitmq_sources() {
        let parsed = parse_source(&doc(json!({
            "EventSourceArn": "arn:lambent:rabbitmq:::local",
            "Queues": ["orders"],
            "SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST", "URI": "/"}],
        })))
        .unwrap();
        assert_eq!(
            parsed,
            Some(SourceSpec::RabbitMq {
                connection: "local".into(),
                queue: "orders".into(),
                vhost: Some("/".into()),
            })
        );
        assert_eq!(
            parse_source(&doc(json!({"EventSourceArn": "arn:aws:sqs:us-east-1:1:q"}))).unwrap(),
            None
        );
        assert_eq!(
            parse_source(&doc(json!({"EventSourceArn": "arn:lambent:sqs:::c/jobs"}))).unwrap(),
            Some(SourceSpec::SqsQueue {
                connection: "c".into(),
                queue: "jobs".into()
            })
        );
        assert_eq!(
            parse_source(&doc(json!({"EventSourceArn": "arn:lambent:nats:::c/jetstream/ORDERS", "Topics": ["orders.>"]}))).unwrap(),
            Some(SourceSpec::JetStream { connection: "c".into(), stream: "ORDERS".into(), subject_filter: Some("orders.>".into()) })
        );
        assert_eq!(
            parse_source(&doc(
                json!({"EventSourceArn": "arn:lambent:mqtt:::c", "Topics": ["a/+/b"]})
            ))
            .unwrap(),
            Some(SourceSpec::Mqtt {
                connection: "c".into(),
                topic_filter: "a/+/b".into()
            })
        );
        assert_eq!(
            parse_source(&doc(
                json!({"EventSourceArn": "arn:lambent:redis:::c", "Topics": ["events"]})
            ))
            .unwrap(),
            Some(SourceSpec::RedisStream {
                connection: "c".into(),
                key: "events".into()
            })
        );
        assert_eq!(parse_source(&doc(json!({}))).unwrap(), None);
    }

    #[test]
    fn bad_sources() {
        for bad in [
            json!({"EventSourceArn": "arn:lambent:kafka:::x", "Queues": ["q"]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::", "Queues": ["q"]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::bad name", "Queues": ["q"]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c"}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": []}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": ["a", "b"]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": [""]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": [7]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": ["q"],
                   "SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": "arn:aws:secretsmanager:x"}]}),
            json!({"EventSourceArn": "arn:lambent:rabbitmq:::c", "Queues": ["q"],
                   "SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST"}]}),
            json!({"EventSourceArn": "arn:lambent:sqs:::c"}),
            json!({"EventSourceArn": "arn:lambent:sqs:::c/"}),
            json!({"EventSourceArn": "arn:lambent:nats:::c/ORDERS"}),
            json!({"EventSourceArn": "arn:lambent:nats:::c/jetstream/a.b"}),
            json!({"EventSourceArn": "arn:lambent:mqtt:::c"}),
            json!({"EventSourceArn": "arn:lambent:mqtt:::c/topic", "Topics": ["t"]}),
            json!({"EventSourceArn": "arn:lambent:redis:::c"}),
        ] {
            assert!(parse_source(&doc(bad.clone())).is_err(), "{bad}");
        }
    }
}
