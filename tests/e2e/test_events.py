"""Event-source mappings against the real brokers (issue 9).

RabbitMQ (LAMBENT_TEST_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/%2f)
must be running. Mappings are made with boto3's CreateEventSourceMapping on
`arn:lambent:rabbitmq:::<connection>` with `Queues`, as Amazon MQ mappings are.
The function records every event it gets in a file (the session server runs
functions unsandboxed, so they can write host paths), which the tests read.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

import helpers as h
from test_lambent_cli import lambent

AMQP_URL = os.environ.get("LAMBENT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")

# Appends each event to event["…"]'s record file (taken from the first message's
# JSON body), fails when any message body holds "poison", sleeps on "sleep".
APP = r'''
import base64, json, os, time


def handler(event, context):
    bodies = []
    for queue, messages in event.get("rmqMessagesByQueue", {}).items():
        for m in messages:
            bodies.append(base64.b64decode(m["data"]))
    record = os.environ["RECORD_FILE"]
    with open(record, "a") as f:
        f.write(json.dumps({"rid": context.aws_request_id, "event": event}) + "\n")
    text = b" ".join(bodies)
    if b"sleep" in text:
        time.sleep(3)
    if b"poison" in text:
        raise ValueError("poison message")
    return {"ok": True, "count": len(bodies)}
'''


def amqp_connect():
    import pika

    try:
        return pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} (set LAMBENT_TEST_AMQP_URL): {exc!r}")


class Rabbit:
    """A pika connection with queues that are removed afterwards."""

    def __init__(self):
        self.conn = amqp_connect()
        self.ch = self.conn.channel()
        self.queues: list[str] = []

    def queue(self, prefix: str, **arguments) -> str:
        name = h.uniq(prefix)
        self.ch.queue_declare(name, durable=True, arguments={"x-expires": 600_000, **arguments})
        self.queues.append(name)
        return name

    def publish(self, queue: str, body: bytes, **props):
        import pika

        self.ch.basic_publish("", queue, body, pika.BasicProperties(**props))

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue."""
        ok = self.ch.queue_declare(queue, passive=True)
        return ok.method.message_count, ok.method.consumer_count

    def get(self, queue: str):
        method, props, body = self.ch.basic_get(queue, auto_ack=True)
        return None if method is None else (props, body)

    def close(self):
        for q in self.queues:
            try:
                self.ch.queue_delete(q)
            except Exception:
                pass
        try:
            self.conn.close()
        except Exception:
            pass


@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    delete_created_mappings()
    r.close()


def read_records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def bodies_of(record: dict) -> list[bytes]:
    out = []
    for messages in record["event"]["rmqMessagesByQueue"].values():
        out.extend(base64.b64decode(m["data"]) for m in messages)
    return out


def new_function(lam, prefix: str, record: Path, timeout: int = 30) -> str:
    name = h.uniq(prefix)
    h.create_function(
        lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler",
        env={"RECORD_FILE": str(record)}, Timeout=timeout,
    )
    return name


def connection(server, url: str = AMQP_URL) -> str:
    name = h.uniq("mq")
    lambent(server, "connection", "put", name, url)
    return name


CREATED: list[tuple[object, str]] = []


def delete_created_mappings():
    """Deletes the mappings a test made (before its queues go)."""
    while CREATED:
        lam, uuid_ = CREATED.pop()
        try:
            lam.delete_event_source_mapping(UUID=uuid_)
        except Exception:
            pass


def create_mapping(lam, function: str, conn: str, queue: str, **kw) -> dict:
    resp = lam.create_event_source_mapping(
        FunctionName=function, EventSourceArn=f"arn:lambent:rabbitmq:::{conn}", Queues=[queue], **kw
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202, resp
    CREATED.append((lam, resp["UUID"]))
    return resp


def wait_records(path: Path, until, timeout: float, server=None, what="the records") -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if until(records):
            return records
        if time.monotonic() > deadline:
            tail = server.log_tail(40) if server else ""
            pytest.fail(f"timed out waiting for {what}; got {len(records)} records\n{tail}")
        time.sleep(0.1)


def all_bodies(records: list[dict]) -> list[bytes]:
    return [b for r in records for b in bodies_of(r)]


def wait_mapping(lam, uuid_: str, check, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = lam.get_event_source_mapping(UUID=uuid_)
        if check(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"mapping {uuid_} never matched: {json.dumps(got, default=str)}")
        time.sleep(0.2)


# --------------------------------------------------------------------------
# event shape, batching, ack after success


def test_rabbitmq_event_shape_and_ack(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-shape")
    conn = connection(server)
    fn = new_function(lam, "esm-shape", record)
    rabbit.publish(
        queue, b'{"hello": "rabbit"}', content_type="application/json", delivery_mode=2, priority=3,
        message_id="m-1", correlation_id="c-1", reply_to="r-1", expiration="600000", timestamp=2021,
        type="t-1", app_id="a-1", headers={"header1": "value1", "numberInHeader": 10},
    )
    rabbit.publish(queue, bytes(range(256)))  # binary, no properties
    resp = create_mapping(lam, fn, conn, queue, BatchSize=10, MaximumBatchingWindowInSeconds=1)
    assert resp["State"] == "Creating" and resp["EventSourceArn"] == f"arn:lambent:rabbitmq:::{conn}", resp
    assert resp["Queues"] == [queue] and resp["BatchSize"] == 10, resp
    records = wait_records(record, lambda r: len(all_bodies(r)) >= 2, 30, server)
    assert len(records) == 1, "two messages published before the mapping make one batch"
    event = records[0]["event"]
    assert set(event) == {"eventSource", "eventSourceArn", "rmqMessagesByQueue"}, event
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == f"arn:lambent:rabbitmq:::{conn}"
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"], event
    first, second = event["rmqMessagesByQueue"][f"{queue}::/"]
    assert set(first) == {"basicProperties", "redelivered", "data"}
    assert first["redelivered"] is False
    assert base64.b64decode(first["data"]) == b'{"hello": "rabbit"}'
    assert first["basicProperties"] == {
        "contentType": "application/json",
        "contentEncoding": None,
        "headers": {"header1": {"bytes": list(b"value1")}, "numberInHeader": 10},
        "deliveryMode": 2,
        "priority": 3,
        "correlationId": "c-1",
        "replyTo": "r-1",
        "expiration": "600000",
        "messageId": "m-1",
        "timestamp": "Jan 1, 1970, 12:33:41 AM",
        "type": "t-1",
        "userId": None,
        "appId": "a-1",
        "clusterId": None,
        "bodySize": len(b'{"hello": "rabbit"}'),
    }
    assert base64.b64decode(second["data"]) == bytes(range(256))
    assert second["basicProperties"]["bodySize"] == 256
    assert second["basicProperties"]["contentType"] is None and second["basicProperties"]["headers"] is None
    # Acknowledged after success: nothing is left on the queue, the consumer stays.
    deadline = time.monotonic() + 10
    while rabbit.depth(queue)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rabbit.depth(queue) == (0, 1)
    got = wait_mapping(lam, resp["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["State"] == "Enabled" and got["StateTransitionReason"] == "USER_INITIATED", got
    lam.delete_event_source_mapping(UUID=resp["UUID"])
    deadline = time.monotonic() + 10
    while rabbit.depth(queue)[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rabbit.depth(queue)[1] == 0, "the consumer outlived its mapping"


def test_rabbitmq_batch_size_and_window(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-batch")
    conn = connection(server)
    fn = new_function(lam, "esm-batch", record)
    for i in range(25):
        rabbit.publish(queue, f"m{i}".encode())
    create_mapping(lam, fn, conn, queue, BatchSize=10)
    records = wait_records(record, lambda r: len(all_bodies(r)) >= 25, 30, server)
    sizes = [len(bodies_of(r)) for r in records]
    assert max(sizes) == 10 and sum(sizes) == 25, sizes
    assert sorted(all_bodies(records)) == sorted(f"m{i}".encode() for i in range(25))
    # One message alone waits out the 500 ms default window, then goes in a batch of one.
    started = time.monotonic()
    rabbit.publish(queue, b"late")
    records = wait_records(record, lambda r: b"late" in all_bodies(r), 10, server)
    assert len(bodies_of(records[-1])) == 1
    print(f"single message delivered after {time.monotonic() - started:.2f}s (window 0.5 s)")


def test_rabbitmq_failure_requeues_then_dead_letters(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    dlq = rabbit.queue("esm-dlq")
    queue = rabbit.queue("esm-poison", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    conn = connection(server)
    fn = new_function(lam, "esm-poison", record)
    create_mapping(lam, fn, conn, queue, BatchSize=1, MaximumBatchingWindowInSeconds=0, MaximumRetryAttempts=2)
    rabbit.publish(queue, b"poison pill", message_id="poison-1")
    rabbit.publish(queue, b"good one")
    records = wait_records(
        record, lambda r: all_bodies(r).count(b"poison pill") >= 3 and b"good one" in all_bodies(r), 30, server
    )
    deadline = time.monotonic() + 10
    dead = None
    while dead is None and time.monotonic() < deadline:
        dead = rabbit.get(dlq)
        time.sleep(0.1)
    assert dead is not None, f"the poison message never reached the dead-letter queue\n{server.log_tail(30)}"
    props, body = dead
    assert body == b"poison pill" and props.message_id == "poison-1"
    assert props.headers and props.headers.get("x-death"), props.headers
    time.sleep(1.5)
    bodies = all_bodies(read_records(record))
    assert bodies.count(b"poison pill") == 3, "MaximumRetryAttempts 2 = three attempts, then the dead-letter exchange"
    assert bodies.count(b"good one") == 1
    redelivered = [
        m["redelivered"]
        for r in read_records(record)
        for ms in r["event"]["rmqMessagesByQueue"].values()
        for m in ms
        if base64.b64decode(m["data"]) == b"poison pill"
    ]
    assert redelivered == [False, True, True], redelivered
    assert rabbit.depth(queue)[0] == 0


def test_disabled_mapping_stops_consuming(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-disable")
    conn = connection(server)
    fn = new_function(lam, "esm-disable", record)
    mapping = create_mapping(lam, fn, conn, queue, MaximumBatchingWindowInSeconds=0)
    rabbit.publish(queue, b"one")
    wait_records(record, lambda r: b"one" in all_bodies(r), 20, server)
    resp = lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    assert resp["State"] == "Updating"
    deadline = time.monotonic() + 10
    while rabbit.depth(queue)[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rabbit.depth(queue)[1] == 0, "a disabled mapping still consumes"
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Disabled"
    rabbit.publish(queue, b"two")
    time.sleep(2)
    assert b"two" not in all_bodies(read_records(record))
    assert rabbit.depth(queue)[0] == 1
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    wait_records(record, lambda r: b"two" in all_bodies(r), 20, server)


# --------------------------------------------------------------------------
# a broker that goes away


Proxy = h.TcpProxy


def test_broker_outage_shows_in_state_and_is_survived(server, lam, rabbit, tmp_path):
    from urllib.parse import urlparse

    parsed = urlparse(AMQP_URL)
    proxy = Proxy((parsed.hostname or "127.0.0.1", parsed.port or 5672))
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-outage")
    conn = connection(server, AMQP_URL.replace(f"{parsed.hostname}:{parsed.port or 5672}", f"127.0.0.1:{proxy.port}"))
    fn = new_function(lam, "esm-outage", record)
    mapping = create_mapping(lam, fn, conn, queue, MaximumBatchingWindowInSeconds=0)
    rabbit.publish(queue, b"before")
    wait_records(record, lambda r: b"before" in all_bodies(r), 20, server)
    proxy.cut()
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
    assert got["State"] == "Enabled", got
    assert got["LastProcessingResult"].startswith("PROBLEM: Connection error"), got
    assert "guest:guest" not in json.dumps(got, default=str), "the broker password leaked into the mapping's state"
    print("while the broker is away:", got["StateTransitionReason"])
    rabbit.publish(queue, b"during")
    time.sleep(1)
    proxy.start()
    wait_records(record, lambda r: b"during" in all_bodies(r), 60, server, "redelivery after the outage")
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"] == "USER_INITIATED", 30)
    assert got["LastProcessingResult"] == "OK", got
    proxy.close()
    lam.delete_event_source_mapping(UUID=mapping["UUID"])


# --------------------------------------------------------------------------
# kill -9 mid-batch: nothing is lost


def test_kill_mid_batch_loses_nothing(rabbit, tmp_path):
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log")
    lam = srv.client()
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-kill")
    try:
        conn = connection(srv)
        fn = new_function(lam, "esm-kill", record)
        create_mapping(lam, fn, conn, queue, BatchSize=5, MaximumBatchingWindowInSeconds=0)
        rabbit.publish(queue, b"sleep first")
        for i in range(9):
            rabbit.publish(queue, f"k{i}".encode())
        wait_records(record, lambda r: len(r) >= 1, 20, srv)  # the first batch is running (sleeping 3 s)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    finally:
        if srv.proc.poll() is None:
            srv.terminate()
    h.kill_leftovers()
    assert rabbit.depth(queue)[0] == 10, "the unacknowledged batch went back to the queue"
    again = h.start_server(tmp_path / "data", tmp_path / "server2.log")
    try:
        wanted = {b"sleep first", *(f"k{i}".encode() for i in range(9))}
        wait_records(record, lambda r: wanted <= set(all_bodies(r)), 60, again, "every message after the restart")
        deadline = time.monotonic() + 10
        while rabbit.depth(queue)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rabbit.depth(queue)[0] == 0
    finally:
        again.terminate()


# --------------------------------------------------------------------------
# bad input


def test_bad_sources_refused_at_create(server, lam, rabbit, tmp_path):
    fn = new_function(lam, "esm-bad", tmp_path / "r.jsonl")
    conn = connection(server)
    nats = h.uniq("nats")
    lambent(server, "connection", "put", nats, "nats://127.0.0.1:4222")
    cases = [
        ({"EventSourceArn": f"arn:lambent:rabbitmq:::{conn}"}, "Queues"),
        ({"EventSourceArn": f"arn:lambent:rabbitmq:::{conn}", "Queues": ["a", "b"]}, "Queues"),
        ({"EventSourceArn": "arn:lambent:rabbitmq:::no-such-connection", "Queues": ["q"]}, "does not exist"),
        ({"EventSourceArn": f"arn:lambent:rabbitmq:::{nats}", "Queues": ["q"]}, "not a rabbitmq connection"),
        ({"EventSourceArn": "arn:lambent:kafka:::x", "Queues": ["q"]}, "not a source Lambent can poll"),
        (
            {
                "EventSourceArn": f"arn:lambent:rabbitmq:::{conn}",
                "Queues": ["q"],
                "SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": "arn:aws:secretsmanager:us-east-1:000000000000:secret:x"}],
            },
            "BASIC_AUTH",
        ),
    ]
    for kw, needle in cases:
        err = h.expect_error(
            lam.create_event_source_mapping, FunctionName=fn, status=400, codes="InvalidParameterValueException", **kw
        )
        assert needle.lower() in err.message.lower(), (kw, err.message)
    assert not lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]


def test_missing_queue_and_oversized_message(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    conn = connection(server)
    fn = new_function(lam, "esm-missing", record)
    missing = create_mapping(lam, fn, conn, h.uniq("no-such-queue"))
    got = wait_mapping(lam, missing["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM:"))
    assert "NOT_FOUND" in got["StateTransitionReason"] or "not found" in got["StateTransitionReason"].lower(), got
    lam.delete_event_source_mapping(UUID=missing["UUID"])

    dlq = rabbit.queue("esm-big-dlq")
    queue = rabbit.queue("esm-big", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    create_mapping(lam, fn, conn, queue, MaximumBatchingWindowInSeconds=0)
    rabbit.publish(queue, b"x" * (5 * 1024 * 1024))  # 6.7 MB once base64-encoded
    rabbit.publish(queue, b"small after big")
    wait_records(record, lambda r: b"small after big" in all_bodies(r), 30, server)
    deadline = time.monotonic() + 10
    while rabbit.depth(dlq)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rabbit.depth(dlq)[0] == 1, "the oversized message went to the dead-letter exchange"
    assert all(len(b) < 1024 for b in all_bodies(read_records(record)))


# --------------------------------------------------------------------------
# SQS-style queues on RabbitMQ

# Records each event; on a message's first receive, reports bodies starting with
# "fail" as batch item failures and raises for a body "raise".
SQS_APP = r'''
import json, os


def handler(event, context):
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"rid": context.aws_request_id, "event": event}) + "\n")
    first = [r for r in event["Records"] if r["attributes"]["ApproximateReceiveCount"] == "1"]
    if any(r["body"] == "raise" for r in first):
        raise RuntimeError("raise on first receive")
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in first if r["body"].startswith("fail")]}
'''


def sqs_function(lam, record: Path) -> str:
    name = h.uniq("esm-sqs")
    h.create_function(
        lam, name, h.py_zip({"app.py": SQS_APP}), "python3.12", "app.handler", env={"RECORD_FILE": str(record)}
    )
    return name


def sqs_records(path: Path) -> list[dict]:
    return [(time.time(), r) for rec in read_records(path) for r in rec["event"]["Records"]]


def sqs_mapping(lam, fn: str, conn: str, queue: str, **kw) -> dict:
    resp = lam.create_event_source_mapping(
        FunctionName=fn, EventSourceArn=f"arn:lambent:sqs:::{conn}/{queue}", **kw
    )
    CREATED.append((lam, resp["UUID"]))
    return resp


def test_sqs_style_queue_event_shape(server, lam, rabbit, tmp_path):
    import hashlib

    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-sqs-shape")
    conn = connection(server)
    fn = sqs_function(lam, record)
    rabbit.publish(queue, "héllo sqs".encode(), message_id="sqs-1", timestamp=1_700_000_000,
                   headers={"color": "blue", "size": 3})
    rabbit.publish(queue, b"\xff\xfe binary")
    resp = sqs_mapping(lam, fn, conn, queue)
    assert resp["BatchSize"] == 10 and resp["EventSourceArn"] == f"arn:lambent:sqs:::{conn}/{queue}", resp
    recs = wait_records(record, lambda r: sum(len(x["event"]["Records"]) for x in r) >= 2, 30, server)
    records = [r for rec in recs for r in rec["event"]["Records"]]
    first, second = records
    assert set(first) == {
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "eventSource", "eventSourceARN", "awsRegion",
    }, first
    assert first["messageId"] == "sqs-1" and first["body"] == "héllo sqs"
    assert first["md5OfBody"] == hashlib.md5("héllo sqs".encode()).hexdigest()
    assert first["eventSource"] == "aws:sqs" and first["eventSourceARN"] == f"arn:lambent:sqs:::{conn}/{queue}"
    assert first["awsRegion"] == h.REGION and isinstance(first["receiptHandle"], str) and first["receiptHandle"]
    attrs = first["attributes"]
    assert attrs["ApproximateReceiveCount"] == "1" and attrs["SentTimestamp"] == "1700000000000", attrs
    assert set(attrs) == {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"}
    assert abs(int(attrs["ApproximateFirstReceiveTimestamp"]) / 1000 - time.time()) < 60
    assert first["messageAttributes"] == {
        "color": {"stringValue": "blue", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "size": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
    }
    assert base64.b64decode(second["body"]) == b"\xff\xfe binary"
    assert second["messageAttributes"]["lambent.bodyEncoding"]["stringValue"] == "base64"
    uuid.UUID(second["messageId"])  # a generated id is a UUID


def test_sqs_style_partial_failures_and_visibility_timeout(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-sqs-partial")
    conn = connection(server)
    fn = sqs_function(lam, record)
    for body in ("ok-1", "fail-2", "ok-3"):
        rabbit.publish(queue, body.encode())
    started = time.monotonic()
    sqs_mapping(
        lam, fn, conn, queue, BatchSize=10, FunctionResponseTypes=["ReportBatchItemFailures"],
        Tags={"lambent:visibility-timeout": "3"},
    )
    recs = wait_records(record, lambda r: len(r) >= 2, 30, server, "the reported failure's second receive")
    elapsed = time.monotonic() - started
    first = [r["body"] for r in recs[0]["event"]["Records"]]
    again = recs[1]["event"]["Records"]
    assert sorted(first) == ["fail-2", "ok-1", "ok-3"], first
    assert [r["body"] for r in again] == ["fail-2"], "only the reported message comes back"
    assert again[0]["attributes"]["ApproximateReceiveCount"] == "2", again
    assert elapsed >= 3, f"the failed message came back after {elapsed:.1f}s, before its visibility timeout"
    time.sleep(1)
    assert len(read_records(record)) == 2 and rabbit.depth(queue)[0] == 0


def test_sqs_style_function_error_returns_the_whole_batch(server, lam, rabbit, tmp_path):
    record = tmp_path / "records.jsonl"
    queue = rabbit.queue("esm-sqs-raise")
    conn = connection(server)
    fn = sqs_function(lam, record)
    for body in ("raise", "bystander"):
        rabbit.publish(queue, body.encode())
    sqs_mapping(lam, fn, conn, queue, Tags={"lambent:visibility-timeout": "1"})
    recs = wait_records(
        record, lambda r: sum(len(x["event"]["Records"]) for x in r) >= 4, 30, server, "the batch's second receive"
    )
    bodies = sorted(r["body"] for x in recs for r in x["event"]["Records"])
    assert bodies == ["bystander", "bystander", "raise", "raise"], bodies
    second = sorted(
        r["body"] for x in recs for r in x["event"]["Records"] if r["attributes"]["ApproximateReceiveCount"] == "2"
    )
    assert second == ["bystander", "raise"], "both messages of the failed batch came back once"


def test_stuck_mapping_does_not_block_others(server, lam, rabbit, tmp_path):
    stuck_record, free_record = tmp_path / "stuck.jsonl", tmp_path / "free.jsonl"
    stuck_queue, free_queue = rabbit.queue("esm-stuck"), rabbit.queue("esm-free")
    conn = connection(server)
    stuck_fn = new_function(lam, "esm-stuck", stuck_record)
    free_fn = new_function(lam, "esm-free", free_record)
    create_mapping(lam, stuck_fn, conn, stuck_queue, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    create_mapping(lam, free_fn, conn, free_queue, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    for _ in range(3):
        rabbit.publish(stuck_queue, b"sleep")  # each takes 3 s
    wait_records(stuck_record, lambda r: len(r) >= 1, 20, server)
    started = time.monotonic()
    for i in range(5):
        rabbit.publish(free_queue, f"free-{i}".encode())
    wait_records(free_record, lambda r: len(all_bodies(r)) >= 5, 20, server)
    took = time.monotonic() - started
    assert len(read_records(stuck_record)) < 3, "the stuck mapping had already finished: the test proves nothing"
    print(f"the free mapping processed 5 messages in {took:.2f}s while the other was busy")


def test_wrong_credentials_show_in_the_state(server, lam, rabbit, tmp_path):
    queue = rabbit.queue("esm-badauth")
    conn = connection(server, AMQP_URL.replace("guest:guest@", "guest:not-the-password@"))
    fn = new_function(lam, "esm-badauth", tmp_path / "r.jsonl")
    mapping = create_mapping(lam, fn, conn, queue)
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
    assert "not-the-password" not in json.dumps(got, default=str), "the password leaked into the state"
    assert got["State"] == "Enabled"
    print(got["StateTransitionReason"])
    rabbit.publish(queue, b"waits for good credentials")
    time.sleep(1)
    assert rabbit.depth(queue) == (1, 0)
