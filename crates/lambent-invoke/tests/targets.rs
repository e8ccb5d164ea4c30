//! Delivery to real destinations: a webhook served by the test itself, RabbitMQ on
//! 127.0.0.1:5672 (guest/guest) and NATS with JetStream on 127.0.0.1:4222. The broker URLs
//! can be overridden with `LAMBENT_TEST_RABBITMQ_URL` and `LAMBENT_TEST_NATS_URL`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{ConnectionProperties, ExchangeKind};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use lambent_invoke::targets::{DeliveryError, Message, Senders, Target, parse_target};

fn rabbitmq_url() -> String {
    std::env::var("LAMBENT_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn nats_url() -> String {
    std::env::var("LAMBENT_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn target(arn: &str) -> Target {
    parse_target(arn).unwrap_or_else(|error| panic!("{arn}: {error}"))
}

fn message(request_id: &str) -> Message {
    Message {
        body: Bytes::from(format!(r#"{{"requestId":"{request_id}","ok":true}}"#)),
        attributes: vec![
            ("RequestID".into(), request_id.into()),
            ("Condition".into(), "Success".into()),
        ],
    }
}

/// What the test webhook received.
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// Serves a webhook on 127.0.0.1 answering every request with `status`; returns its URL
/// and the requests it receives.
async fn webhook_server(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send(Received {
                            path: parts
                                .uri
                                .path_and_query()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_body_and_attribute_headers() {
    let (url, mut received) = webhook_server(StatusCode::OK).await;
    let senders = Senders::new();
    let msg = message("req-webhook-1");

    let hook = target(&format!("{url}/hooks/lambent?x=1"));
    senders.send(&hook, None, &msg).await.expect("delivered");
    let request = received.recv().await.expect("request");
    assert_eq!(request.path, "/hooks/lambent?x=1");
    assert_eq!(request.body, msg.body);
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["X-Lambent-RequestID"], "req-webhook-1");
    assert_eq!(request.headers["X-Lambent-Condition"], "Success");
    assert!(!request.headers.contains_key("authorization"));

    // The ARN form with user info: sent as Basic authentication, and the pooled client is
    // reused for a second delivery.
    let hook = target(&format!(
        "arn:lambent:webhook:::{}",
        url.replace("http://", "http://hook:s3cret@")
    ));
    senders.send(&hook, None, &msg).await.expect("delivered");
    let request = received.recv().await.expect("request");
    assert_eq!(request.path, "/");
    assert_eq!(request.headers["authorization"], "Basic aG9vazpzM2NyZXQ=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_error_status_is_a_failure() {
    let (url, mut received) = webhook_server(StatusCode::INTERNAL_SERVER_ERROR).await;
    let senders = Senders::new();
    let result = senders
        .send(&target(&url), None, &message("req-webhook-500"))
        .await;
    match &result {
        Err(DeliveryError::WebhookStatus { status: 500 }) => {}
        other => panic!("expected a 500 failure, got {other:?}"),
    }
    assert_eq!(
        result.err().map(|e| e.to_string()).as_deref(),
        Some("webhook answered 500")
    );
    assert!(received.recv().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_webhook_is_a_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    let senders = Senders::new();
    let started = Instant::now();
    let result = senders
        .send(
            &target(&format!("http://user:s3cret@{address}/hook")),
            None,
            &message("req-webhook-down"),
        )
        .await;
    let error = result.expect_err("nothing listens on the port");
    assert!(matches!(error, DeliveryError::Webhook { .. }), "{error:?}");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn rabbitmq_channel() -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(&rabbitmq_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (guest/guest)");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

fn expiring_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongUInt(120_000));
    arguments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_queue_target_delivers_persistent_message_with_headers() {
    let (_connection, channel) = rabbitmq_channel().await;
    let queue = unique("lambent-test-q");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            expiring_queue_arguments(),
        )
        .await
        .expect("declare queue");

    let senders = Senders::new();
    let msg = message("req-rabbit-1");
    let url = rabbitmq_url();
    let destination = target(&format!("arn:lambent:rabbitmq:::main/queue/{queue}"));
    senders
        .send(&destination, Some(&url), &msg)
        .await
        .expect("delivered");
    // A second send reuses the cached connection.
    senders
        .send(&destination, Some(&url), &message("req-rabbit-2"))
        .await
        .expect("delivered again");

    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a message is in the queue");
    let delivery = got.delivery;
    assert_eq!(delivery.data, msg.body.to_vec());
    let properties = &delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("req-rabbit-1")
    );
    assert_eq!(
        properties.content_type().as_ref().map(|t| t.as_str()),
        Some("application/json")
    );
    let headers = properties.headers().as_ref().expect("headers").inner();
    let header = |name: &str| match headers.get(name) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("header {name}: {other:?}"),
    };
    assert_eq!(header("RequestID"), "req-rabbit-1");
    assert_eq!(header("Condition"), "Success");

    let second = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the second message is in the queue");
    assert_eq!(
        second
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some("req-rabbit-2")
    );

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unroutable_message_is_a_failure_and_the_sender_recovers() {
    let (_connection, channel) = rabbitmq_channel().await;
    let exchange = unique("lambent-test-x");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");

    let senders = Senders::new();
    let url = rabbitmq_url();
    let unbound = target(&format!(
        "arn:lambent:rabbitmq:::main/exchange/{exchange}/no.such/key"
    ));
    let error = senders
        .send(&unbound, Some(&url), &message("req-rabbit-unroutable"))
        .await
        .expect_err("no queue is bound");
    assert!(
        matches!(error, DeliveryError::RabbitMqUnroutable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("NO_ROUTE"), "{error}");

    // An exchange that does not exist closes the channel; the next send reconnects.
    let missing = target(&format!(
        "arn:lambent:rabbitmq:::main/exchange/{}/k",
        unique("lambent-test-missing")
    ));
    let error = senders
        .send(&missing, Some(&url), &message("req-rabbit-missing"))
        .await
        .expect_err("the exchange does not exist");
    assert!(matches!(error, DeliveryError::RabbitMq { .. }), "{error:?}");

    let queue = unique("lambent-test-q");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            expiring_queue_arguments(),
        )
        .await
        .expect("declare queue");
    senders
        .send(
            &target(&format!("arn:lambent:rabbitmq:::main/exchange//{queue}")),
            Some(&url),
            &message("req-rabbit-after"),
        )
        .await
        .expect("delivered after the failures");
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get");
    assert!(got.is_some());

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_rabbitmq_fails_quickly_without_showing_the_password() {
    let senders = Senders::new();
    let started = Instant::now();
    let error = senders
        .send(
            &target("arn:lambent:rabbitmq:::main/queue/q"),
            Some("amqp://guest:s3cret@127.0.0.1:1/%2f"),
            &message("req-rabbit-down"),
        )
        .await
        .expect_err("nothing listens on port 1");
    let text = error.to_string();
    assert!(matches!(error, DeliveryError::Connect { .. }), "{error:?}");
    assert!(
        text.starts_with("cannot connect to amqp://guest:***@127.0.0.1:1/%2f: "),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn nats_client() -> async_nats::Client {
    async_nats::connect(nats_url())
        .await
        .expect("NATS must run on 127.0.0.1:4222")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_subject_receives_message_with_headers() {
    let client = nats_client().await;
    let subject = unique("lambent.test.core");
    let mut subscriber = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("flush");

    let senders = Senders::new();
    let msg = message("req-nats-1");
    let url = nats_url();
    senders
        .send(
            &target(&format!("arn:lambent:nats:::main/subject/{subject}")),
            Some(&url),
            &msg,
        )
        .await
        .expect("delivered");

    let got = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .expect("message within 5s")
        .expect("subscription open");
    assert_eq!(got.payload, msg.body);
    let headers = got.headers.expect("headers");
    assert_eq!(
        headers.get("RequestID").map(|v| v.as_str()),
        Some("req-nats-1")
    );
    assert_eq!(
        headers.get("Condition").map(|v| v.as_str()),
        Some("Success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_subject_is_stored() {
    use async_nats::jetstream::stream::{Config, StorageType};

    let client = nats_client().await;
    let jetstream = async_nats::jetstream::new(client);
    let subject = unique("lambent.test.js");
    let stream_name = unique("LAMBENT_TEST");
    let stream = jetstream
        .create_stream(Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create stream");

    let senders = Senders::new();
    let msg = message("req-js-1");
    let url = nats_url();
    senders
        .send(
            &target(&format!("arn:lambent:nats:::main/jetstream/{subject}")),
            Some(&url),
            &msg,
        )
        .await
        .expect("delivered");

    let stored = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("stored message");
    assert_eq!(stored.payload, msg.body);
    assert_eq!(
        stored.headers.get("RequestID").map(|v| v.as_str()),
        Some("req-js-1")
    );

    jetstream
        .delete_stream(&stream_name)
        .await
        .expect("delete stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_subject_without_stream_is_a_failure() {
    let senders = Senders::new();
    let subject = unique("lambent.test.nostream");
    let url = nats_url();
    let error = senders
        .send(
            &target(&format!("arn:lambent:nats:::main/jetstream/{subject}")),
            Some(&url),
            &message("req-js-none"),
        )
        .await
        .expect_err("no stream captures the subject");
    assert!(matches!(error, DeliveryError::NoStream { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("no JetStream stream captures subject {subject}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_is_a_failure() {
    let senders = Senders::new();
    let error = senders
        .send(
            &target("arn:lambent:nats:::main/subject/a.b"),
            Some("nats://user:s3cret@127.0.0.1:1"),
            &message("req-nats-down"),
        )
        .await
        .expect_err("nothing listens on port 1");
    let text = error.to_string();
    assert!(matches!(error, DeliveryError::Connect { .. }), "{error:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("nats://user:***@127.0.0.1:1"), "{text}");
}
