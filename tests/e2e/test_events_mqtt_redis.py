"""Event-source mappings on MQTT topic filters and Redis streams (docs/events.md).

Mosquitto (LAMBENT_TEST_MQTT_URL, default mqtt://127.0.0.1:1883) and Redis
(LAMBENT_TEST_REDIS_URL, default redis://127.0.0.1:6379/0) must be running.
Mappings are made with boto3's CreateEventSourceMapping on
`arn:lambent:mqtt:::<connection>` / `arn:lambent:redis:::<connection>` with
`Topics: [<topic filter> | <stream key>]`. The function records every event it
gets in a file (the session server runs functions unsandboxed), which the tests
read.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

import helpers as h
from test_lambent_cli import lambent

MQTT_URL = os.environ.get("LAMBENT_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
REDIS_URL = os.environ.get("LAMBENT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Records each event; failure records (from OnFailure) are only recorded.
# MQTT events (the payload): "poison" always fails, "fail_times": n fails the
# first n attempts of message "id", "sleep" sleeps.
# Redis events: per record, fields "fail": "raise" fails the batch, "fail": "item"
# reports the record in batchItemFailures, "fail_times": n fails the first n
# attempts of the entry, "sleep" sleeps.
APP = r'''
import json, os, time


def attempts(key):
    folder = os.environ["RECORD_FILE"] + ".attempts"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, key.replace("/", "_"))
    n = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


def handler(event, context):
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"rid": context.aws_request_id, "event": event}) + "\n")
    if not isinstance(event, dict) or "requestContext" in event:
        return {"ok": True}
    if "Records" in event:
        failures = []
        for r in event["Records"]:
            fields = r.get("fields", {})
            if fields.get("sleep"):
                time.sleep(float(fields["sleep"]))
            if fields.get("fail") == "raise":
                raise ValueError("poison entry")
            if fields.get("fail") == "item":
                failures.append({"itemIdentifier": r["id"]})
            if fields.get("fail_times") and attempts(r["id"]) <= int(fields["fail_times"]):
                raise ValueError("transient failure")
        return {"batchItemFailures": failures}
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("poison"):
        raise ValueError("poison message")
    if event.get("fail_times") and attempts(event["id"]) <= event["fail_times"]:
        raise ValueError("transient failure")
    return {"ok": True}
'''


# --------------------------------------------------------------------------
# clients and helpers


class Mqtt:
    """A paho publisher (clean session, QoS 1 publishes confirmed by the broker)."""

    def __init__(self):
        import paho.mqtt.client as mqtt

        url = urlparse(MQTT_URL)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=h.uniq("pytest-pub"))
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        try:
            self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        except Exception as exc:
            pytest.fail(f"Mosquitto is not reachable at {MQTT_URL} (set LAMBENT_TEST_MQTT_URL): {exc!r}")
        self.client.loop_start()

    def publish(self, topic: str, payload, qos: int = 1):
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published(), f"the broker did not confirm a publish to {topic}"

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class Redis:
    """A redis-py client with stream keys that are deleted afterwards."""

    def __init__(self):
        import redis

        self.r = redis.Redis.from_url(REDIS_URL)
        try:
            self.r.ping()
        except Exception as exc:
            pytest.fail(f"Redis is not reachable at {REDIS_URL} (set LAMBENT_TEST_REDIS_URL): {exc!r}")
        self.keys: list[str] = []

    def stream(self, prefix: str) -> str:
        key = h.uniq(prefix)
        self.keys.append(key)
        return key

    def add(self, key: str, fields: dict) -> str:
        return self.r.xadd(key, fields).decode()

    def pending(self, key: str, group: str) -> int:
        return self.r.xpending(key, group)["pending"]

    def groups(self, key: str) -> list[dict]:
        return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.items()} for g in self.r.xinfo_groups(key)]

    def close(self):
        for key in self.keys:
            try:
                # A deleted mapping destroys its group; deleting the stream under a poller
                # that still runs would have it recreate the stream (MKSTREAM).
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self.r.exists(key) and any(
                    g["name"].startswith("lambent-") for g in self.groups(key)
                ):
                    time.sleep(0.1)
                self.r.delete(key)
            except Exception:
                pass
        self.r.close()


CREATED: list[tuple[object, str]] = []


@pytest.fixture(autouse=True)
def _delete_mappings():
    """Mappings made by a test are deleted after it, before its streams go."""
    yield
    delete_created_mappings()


@pytest.fixture
def mq(_delete_mappings):
    client = Mqtt()
    yield client
    client.close()


def delete_created_mappings():
    while CREATED:
        lam, uuid_ = CREATED.pop()
        try:
            lam.delete_event_source_mapping(UUID=uuid_)
        except Exception:
            pass


@pytest.fixture
def rds(_delete_mappings):
    client = Redis()
    yield client
    delete_created_mappings()  # before the streams go
    client.close()


def read_records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def events(path: Path) -> list:
    return [r["event"] for r in read_records(path)]


def wait_events(path: Path, until, timeout: float, server=None, what="the events") -> list:
    deadline = time.monotonic() + timeout
    while True:
        got = events(path)
        if until(got):
            return got
        if time.monotonic() > deadline:
            tail = server.log_tail(40) if server else ""
            pytest.fail(f"timed out waiting for {what}; got {json.dumps(got)[:2000]}\n{tail}")
        time.sleep(0.1)


def new_function(lam, prefix: str, record: Path) -> str:
    name = h.uniq(prefix)
    h.create_function(
        lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler", env={"RECORD_FILE": str(record)}, Timeout=30
    )
    return name


def connection(server, url: str) -> str:
    name = h.uniq("conn")
    lambent(server, "connection", "put", name, url)
    return name


def create_mapping(lam, function: str, arn: str, topic: str, keep: bool = True, **kw) -> dict:
    resp = lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, Topics=[topic], **kw)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202, resp
    if keep:
        CREATED.append((lam, resp["UUID"]))
    return resp


def wait_mapping(lam, uuid_: str, check, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = lam.get_event_source_mapping(UUID=uuid_)
        if check(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"mapping {uuid_} never matched: {json.dumps(got, default=str)}")
        time.sleep(0.2)


def wait_subscribed(mq: Mqtt, record: Path, topic: str, server, timeout: float = 30.0) -> None:
    """Publishes {"warmup": n} to `topic` until one reaches the function: the mapping's
    subscription is in place (messages published before it are not kept)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        tag = h.uniq("warmup")
        mq.publish(topic, {"warmup": tag})
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            if any(isinstance(e, dict) and e.get("warmup") == tag for e in events(record)):
                return
            time.sleep(0.05)
        if time.monotonic() > deadline:
            pytest.fail(f"the mapping never received a message on {topic}\n{server.log_tail(40)}")


def by_id(evs: list, key: str = "id") -> dict:
    counts: dict = {}
    for e in evs:
        if isinstance(e, dict) and key in e:
            counts[e[key]] = counts.get(e[key], 0) + 1
    return counts


def redis_records(evs: list) -> list[dict]:
    return [r for e in evs if isinstance(e, dict) and "Records" in e and "requestContext" not in e for r in e["Records"]]


def failure_records(evs: list) -> list[dict]:
    return [e for e in evs if isinstance(e, dict) and "requestContext" in e]


# --------------------------------------------------------------------------
# MQTT


def test_mqtt_event_shape_json_and_binary(server, lam, mq, tmp_path):
    record = tmp_path / "records.jsonl"
    base = h.uniq("lambent-test")
    conn = connection(server, MQTT_URL)
    fn = new_function(lam, "mqtt-shape", record)
    arn = f"arn:lambent:mqtt:::{conn}"
    resp = create_mapping(lam, fn, arn, f"{base}/+/data")
    assert resp["State"] == "Creating" and resp["EventSourceArn"] == arn and resp["Topics"] == [f"{base}/+/data"], resp
    wait_subscribed(mq, record, f"{base}/warm/data", server)
    started_ms = int(time.time() * 1000)
    document = {"device": "d1", "temperature": 21.5, "tags": ["a", "b"], "nested": {"ok": True}}
    mq.publish(f"{base}/d1/data", document)
    mq.publish(f"{base}/d2/data", bytes([0, 1, 2, 254, 255]))
    mq.publish(f"{base}/d3/data", "plain text, not JSON")
    mq.publish(f"{base}/d4/data", b"")
    mq.publish(f"{base}/d5/other", {"device": "filtered out"})
    mq.publish(f"{base}/d6/data", "[1, 2, 3]")
    evs = wait_events(record, lambda e: e and e[-1] == [1, 2, 3], 30, server)
    evs = [e for e in evs if not (isinstance(e, dict) and "warmup" in e)]
    assert evs[0] == document, "a JSON payload is the event, as published"
    binary, text, empty = evs[1:4]
    for event, payload, topic in (
        (binary, bytes([0, 1, 2, 254, 255]), "d2"),
        (text, b"plain text, not JSON", "d3"),
        (empty, b"", "d4"),
    ):
        assert set(event) == {"data", "topic", "timestamp"}, event
        assert base64.b64decode(event["data"]) == payload
        assert event["topic"] == f"{base}/{topic}/data"
        assert started_ms - 5000 <= event["timestamp"] <= int(time.time() * 1000) + 5000, event
    assert evs[4] == [1, 2, 3]
    assert len(evs) == 5, "the topic filter selects the messages: d5/other is not delivered"
    got = wait_mapping(lam, resp["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["State"] == "Enabled" and got["StateTransitionReason"] == "USER_INITIATED", got
    assert got["Topics"] == [f"{base}/+/data"] and got["EventSourceArn"] == arn


def test_mqtt_retries_then_acks_and_gives_up_to_on_failure(server, lam, mq, tmp_path):
    record = tmp_path / "records.jsonl"
    failed_record = tmp_path / "failed.jsonl"
    topic = f"{h.uniq('lambent-test')}/retry"
    conn = connection(server, MQTT_URL)
    fn = new_function(lam, "mqtt-retry", record)
    dest = new_function(lam, "mqtt-dest", failed_record)
    mapping = create_mapping(
        lam, fn, f"arn:lambent:mqtt:::{conn}", topic, MaximumRetryAttempts=3,
        DestinationConfig={"OnFailure": {"Destination": h.function_arn(dest)}},
    )
    wait_subscribed(mq, record, topic, server)
    flaky, poison = h.uniq("flaky"), h.uniq("poison")
    mq.publish(topic, {"id": flaky, "fail_times": 2})
    mq.publish(topic, {"id": poison, "poison": True})
    mq.publish(topic, {"id": "after"})
    evs = wait_events(record, lambda e: by_id(e).get("after") == 1, 60, server)
    counts = by_id(evs)
    assert counts[flaky] == 3, "a message whose first two invocations fail is retried until it succeeds"
    assert counts[poison] == 4, "MaximumRetryAttempts 3: four attempts, then the message is given up on"
    order = [e["id"] for e in evs if isinstance(e, dict) and "id" in e]
    assert order == [flaky] * 3 + [poison] * 4 + ["after"], "messages are processed one at a time, in order"
    failures = wait_events(failed_record, lambda e: len(e) >= 1, 30, server, "the OnFailure record")
    assert len(failures) == 1, failures
    failure = failures[0]
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 4
    assert failure["requestContext"]["functionArn"] == h.function_arn(fn)
    assert failure["responseContext"] == {"functionError": "Unhandled"}
    assert failure["MQTTMessageInfo"]["topic"] == topic and failure["MQTTMessageInfo"]["qos"] == 1
    assert failure["payload"] == {"id": poison, "poison": True}
    assert failure["version"] == "1.0" and failure["timestamp"].endswith("Z")
    # Every message was acknowledged: a reconnect (disable, enable) brings none back.
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    time.sleep(2)
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    wait_subscribed(mq, record, topic, server)
    time.sleep(1.5)
    assert by_id(events(record)) == counts, "an acknowledged message came back"
    got = wait_mapping(lam, mapping["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["StateTransitionReason"] == "USER_INITIATED", got


def test_mqtt_disable_stops_and_enable_resumes_without_loss(server, lam, mq, tmp_path):
    record = tmp_path / "records.jsonl"
    topic = f"{h.uniq('lambent-test')}/onoff"
    conn = connection(server, MQTT_URL)
    fn = new_function(lam, "mqtt-onoff", record)
    mapping = create_mapping(lam, fn, f"arn:lambent:mqtt:::{conn}", topic)
    wait_subscribed(mq, record, topic, server)
    resp = lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    assert resp["State"] == "Updating"
    time.sleep(2)  # the poller stops within the supervisor's half-second round
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Disabled"
    ids = [f"off-{i}" for i in range(5)]
    for i in ids:
        mq.publish(topic, {"id": i})
    time.sleep(2)
    assert not set(ids) & set(by_id(events(record))), "a disabled mapping still consumes"
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    evs = wait_events(record, lambda e: set(ids) <= set(by_id(e)), 30, server, "the messages kept by the broker")
    assert all(by_id(evs)[i] == 1 for i in ids), by_id(evs)
    assert [e["id"] for e in evs if isinstance(e, dict) and e.get("id") in ids] == ids, "in publishing order"


def test_mqtt_unreachable_broker_and_bad_filter_show_in_state(server, lam, tmp_path):
    fn = new_function(lam, "mqtt-down", tmp_path / "r.jsonl")
    port = h.free_port()
    conn = connection(server, f"mqtt://lambent:s3cret-pw@127.0.0.1:{port}")
    mapping = create_mapping(lam, fn, f"arn:lambent:mqtt:::{conn}", "some/topic")
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
    assert got["State"] == "Enabled", got
    assert got["LastProcessingResult"].startswith("PROBLEM: Connection error"), got
    assert "s3cret-pw" not in json.dumps(got, default=str), "the broker password leaked into the mapping's state"
    print("while the broker is away:", got["StateTransitionReason"])
    good = connection(server, MQTT_URL)
    bad = create_mapping(lam, fn, f"arn:lambent:mqtt:::{good}", "a/#/b")
    got = wait_mapping(lam, bad["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM:"))
    assert "topic filter" in got["StateTransitionReason"], got


def test_mqtt_restart_loses_nothing(mq, tmp_path):
    record = tmp_path / "records.jsonl"
    topic = f"{h.uniq('lambent-test')}/restart"
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log")
    lam = srv.client()
    try:
        conn = connection(srv, MQTT_URL)
        fn = new_function(lam, "mqtt-kill", record)
        mapping = create_mapping(lam, fn, f"arn:lambent:mqtt:::{conn}", topic, keep=False)
        wait_subscribed(mq, record, topic, srv)
        mq.publish(topic, {"id": "slow", "sleep": 3})
        wait_events(record, lambda e: "slow" in by_id(e), 20, srv)  # the invocation is running
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    finally:
        if srv.proc.poll() is None:
            srv.terminate()
    h.kill_leftovers()
    ids = [f"down-{i}" for i in range(5)]
    for i in ids:
        mq.publish(topic, {"id": i})
    again = h.start_server(tmp_path / "data", tmp_path / "server2.log")
    try:
        evs = wait_events(
            record, lambda e: by_id(e).get("slow") == 2 and set(ids) <= set(by_id(e)), 60, again,
            "the unacknowledged message and those published while Lambent was down",
        )
        assert all(by_id(evs)[i] == 1 for i in ids), by_id(evs)
        again.client().delete_event_source_mapping(UUID=mapping["UUID"])
    finally:
        again.terminate()


# --------------------------------------------------------------------------
# Redis Streams


def test_redis_event_shape_ack_and_group(server, lam, rds, tmp_path):
    record = tmp_path / "records.jsonl"
    key = rds.stream("esm-redis-shape")
    first = rds.add(key, {"hello": "redis", "n": "1"})
    second = rds.add(key, {"bin": b"\x00\xff\xfe", "text": "ok"})
    conn = connection(server, REDIS_URL)
    fn = new_function(lam, "redis-shape", record)
    arn = f"arn:lambent:redis:::{conn}"
    mapping = create_mapping(lam, fn, arn, key, BatchSize=10)
    assert mapping["Topics"] == [key] and mapping["BatchSize"] == 10, mapping
    evs = wait_events(record, lambda e: len(redis_records(e)) >= 2, 30, server)
    assert len(evs) == 1, "entries added before the mapping make one batch (StartingPosition TRIM_HORIZON by default)"
    assert set(evs[0]) == {"Records"}
    one, two = evs[0]["Records"]
    assert one == {
        "eventSource": "lambent:redis",
        "eventSourceARN": arn,
        "stream": key,
        "id": first,
        "deliveryCount": 1,
        "fields": {"hello": "redis", "n": "1"},
    }
    assert two == {
        "eventSource": "lambent:redis",
        "eventSourceARN": arn,
        "stream": key,
        "id": second,
        "deliveryCount": 1,
        "fields": {"text": "ok"},
        "binaryFields": {"bin": base64.b64encode(b"\x00\xff\xfe").decode()},
    }
    group = f"lambent-{mapping['UUID']}"
    h.wait_until(lambda: rds.pending(key, group) == 0, 10, "the batch's acknowledgement")
    (info,) = rds.groups(key)
    assert info["name"] == group and info["consumers"] == 1 and info["pending"] == 0, info
    assert info["last-delivered-id"] == second, info
    got = wait_mapping(lam, mapping["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["State"] == "Enabled" and got["StateTransitionReason"] == "USER_INITIATED", got
    lam.delete_event_source_mapping(UUID=mapping["UUID"])
    h.wait_until(lambda: rds.groups(key) == [], 10, "the deleted mapping's consumer group to go")
    assert rds.r.xlen(key) == 2, "the entries stay in the stream"


def test_redis_batch_size_window_and_starting_position(server, lam, rds, tmp_path):
    record = tmp_path / "records.jsonl"
    key = rds.stream("esm-redis-batch")
    for i in range(25):
        rds.add(key, {"n": str(i)})
    conn = connection(server, REDIS_URL)
    fn = new_function(lam, "redis-batch", record)
    create_mapping(lam, fn, f"arn:lambent:redis:::{conn}", key, BatchSize=10, MaximumBatchingWindowInSeconds=2)
    evs = wait_events(record, lambda e: len(redis_records(e)) >= 25, 30, server)
    sizes = [len(e["Records"]) for e in evs]
    assert max(sizes) == 10 and sum(sizes) == 25, sizes
    assert [r["fields"]["n"] for r in redis_records(evs)] == [str(i) for i in range(25)], "in stream order"
    # Entries added one by one within the window make one batch.
    before = len(evs)
    for i in range(3):
        rds.add(key, {"late": str(i)})
        time.sleep(0.2)
    evs = wait_events(record, lambda e: sum("late" in r["fields"] for r in redis_records(e)) >= 3, 20, server)
    assert len(evs) == before + 1 and len(evs[-1]["Records"]) == 3, [len(e["Records"]) for e in evs]
    # LATEST: what the stream held before the mapping is skipped.
    latest_record = tmp_path / "latest.jsonl"
    fn2 = new_function(lam, "redis-latest", latest_record)
    mapping = create_mapping(lam, fn2, f"arn:lambent:redis:::{conn}", key, StartingPosition="LATEST")
    group = f"lambent-{mapping['UUID']}"
    h.wait_until(lambda: group in [g["name"] for g in rds.groups(key)], 20, "the LATEST group")
    rds.add(key, {"new": "yes"})
    evs = wait_events(latest_record, lambda e: len(redis_records(e)) >= 1, 20, server)
    time.sleep(0.5)
    assert [r["fields"] for r in redis_records(events(latest_record))] == [{"new": "yes"}]


def test_redis_failure_keeps_pending_then_discards(server, lam, rds, tmp_path):
    record = tmp_path / "records.jsonl"
    failed_record = tmp_path / "failed.jsonl"
    key = rds.stream("esm-redis-fail")
    conn = connection(server, REDIS_URL)
    fn = new_function(lam, "redis-fail", record)
    dest = new_function(lam, "redis-dest", failed_record)
    mapping = create_mapping(
        lam, fn, f"arn:lambent:redis:::{conn}", key, BatchSize=1, MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": h.function_arn(dest)}},
    )
    group = f"lambent-{mapping['UUID']}"
    flaky = rds.add(key, {"fail_times": "1", "what": "flaky"})
    evs = wait_events(record, lambda e: len(redis_records(e)) >= 1, 30, server)
    assert rds.pending(key, group) == 1, "a failed entry stays pending"
    evs = wait_events(record, lambda e: len(redis_records(e)) >= 2, 30, server)
    assert [r["deliveryCount"] for r in redis_records(evs)] == [1, 2]
    h.wait_until(lambda: rds.pending(key, group) == 0, 10, "the acknowledgement after the retry succeeded")
    poison = rds.add(key, {"fail": "raise"})
    after = rds.add(key, {"what": "after"})
    evs = wait_events(record, lambda e: any(r["id"] == after for r in redis_records(e)), 60, server)
    attempts = [r["deliveryCount"] for r in redis_records(evs) if r["id"] == poison]
    assert attempts == [1, 2, 3], "MaximumRetryAttempts 2: three attempts, then the entry is discarded"
    assert [r["id"] for r in redis_records(evs)] == [flaky, flaky, poison, poison, poison, after]
    h.wait_until(lambda: rds.pending(key, group) == 0, 10, "the discarded entry's acknowledgement")
    failures = wait_events(failed_record, lambda e: len(e) >= 1, 30, server, "the OnFailure record")
    (failure,) = failures
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    info = failure["RedisStreamBatchInfo"]
    assert info["stream"] == key and info["group"] == group and info["ids"] == [poison], info
    assert [r["fields"] for r in failure["Records"]] == [{"fail": "raise"}]
    got = wait_mapping(lam, mapping["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["StateTransitionReason"] == "USER_INITIATED"


def test_redis_report_batch_item_failures(server, lam, rds, tmp_path):
    record = tmp_path / "records.jsonl"
    key = rds.stream("esm-redis-partial")
    ids = [rds.add(key, {"n": "0"}), rds.add(key, {"n": "1", "fail": "item"}), rds.add(key, {"n": "2"})]
    ids.append(rds.add(key, {"n": "3", "fail_times": "1"}))  # fails the whole first batch once
    conn = connection(server, REDIS_URL)
    fn = new_function(lam, "redis-partial", record)
    mapping = create_mapping(
        lam, fn, f"arn:lambent:redis:::{conn}", key, BatchSize=10, MaximumRetryAttempts=2,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    group = f"lambent-{mapping['UUID']}"
    # batch 1: all four, raises (n=3's first attempt); batch 2: all four again, n=1 reported;
    # then n=1 alone until its retries run out.
    evs = wait_events(record, lambda e: len(e) >= 3, 60, server)
    assert [r["id"] for r in evs[0]["Records"]] == ids
    assert [r["id"] for r in evs[1]["Records"]] == ids, "a thrown error fails the whole batch"
    assert [r["id"] for r in evs[2]["Records"]] == [ids[1]], "only the reported item is retried"
    assert rds.pending(key, group) in (0, 1)
    h.wait_until(lambda: rds.pending(key, group) == 0, 30, "the reported item to be discarded")
    time.sleep(1)
    evs = events(record)
    assert [len(e["Records"]) for e in evs] == [4, 4, 1], "the reported item has three attempts (MaximumRetryAttempts 2)"
    assert [r["deliveryCount"] for r in evs[2]["Records"]] == [3]


def test_redis_disable_stops_and_enable_resumes_without_loss(server, lam, rds, tmp_path):
    record = tmp_path / "records.jsonl"
    key = rds.stream("esm-redis-onoff")
    conn = connection(server, REDIS_URL)
    fn = new_function(lam, "redis-onoff", record)
    mapping = create_mapping(lam, fn, f"arn:lambent:redis:::{conn}", key)
    group = f"lambent-{mapping['UUID']}"
    rds.add(key, {"n": "first"})
    wait_events(record, lambda e: len(redis_records(e)) >= 1, 30, server)
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    time.sleep(2)
    added = [rds.add(key, {"n": f"off-{i}"}) for i in range(5)]
    time.sleep(2)
    assert len(redis_records(events(record))) == 1, "a disabled mapping still consumes"
    (info,) = rds.groups(key)
    assert info["last-delivered-id"] != added[-1] and info["pending"] == 0, info
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    evs = wait_events(record, lambda e: len(redis_records(e)) >= 6, 30, server)
    assert [r["id"] for r in redis_records(evs)][1:] == added
    h.wait_until(lambda: rds.pending(key, group) == 0, 10, "the acknowledgements")


def test_redis_unreachable_server_shows_in_state(server, lam, tmp_path):
    fn = new_function(lam, "redis-down", tmp_path / "r.jsonl")
    port = h.free_port()
    conn = connection(server, f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    mapping = create_mapping(lam, fn, f"arn:lambent:redis:::{conn}", "some-stream")
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
    assert got["State"] == "Enabled", got
    assert got["LastProcessingResult"].startswith("PROBLEM: Connection error"), got
    assert "s3cret-pw" not in json.dumps(got, default=str), "the password leaked into the mapping's state"
    print("while Redis is away:", got["StateTransitionReason"])


def test_redis_restart_loses_nothing(rds, tmp_path):
    record = tmp_path / "records.jsonl"
    key = rds.stream("esm-redis-kill")
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log")
    lam = srv.client()
    ids = [rds.add(key, {"sleep": "3"})] + [rds.add(key, {"n": str(i)}) for i in range(4)]
    try:
        conn = connection(srv, REDIS_URL)
        fn = new_function(lam, "redis-kill", record)
        mapping = create_mapping(lam, fn, f"arn:lambent:redis:::{conn}", key, BatchSize=5, keep=False)
        wait_events(record, lambda e: len(e) >= 1, 20, srv)  # the batch is running (sleeping 3 s)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    finally:
        if srv.proc.poll() is None:
            srv.terminate()
    h.kill_leftovers()
    group = f"lambent-{mapping['UUID']}"
    assert rds.pending(key, group) == 5, "the unacknowledged batch stays pending"
    ids += [rds.add(key, {"n": f"down-{i}"}) for i in range(3)]
    again = h.start_server(tmp_path / "data", tmp_path / "server2.log")
    try:
        evs = wait_events(
            record, lambda e: set(ids) <= {r["id"] for r in redis_records(e[1:])}, 60, again,
            "every entry after the restart",
        )
        again_records = redis_records(evs[1:])
        assert [r["id"] for r in again_records] == ids, "pending entries first, then the new ones"
        assert [r["deliveryCount"] for r in again_records[:5]] == [2] * 5
        h.wait_until(lambda: rds.pending(key, group) == 0, 10, "the acknowledgements", server=again)
        again.client().delete_event_source_mapping(UUID=mapping["UUID"])
    finally:
        again.terminate()


# --------------------------------------------------------------------------
# a broker that goes away and comes back


Proxy = h.TcpProxy


@pytest.mark.parametrize("kind", ["mqtt", "redis"])
def test_outage_shows_in_state_and_is_survived(server, lam, mq, rds, tmp_path, kind):
    url = urlparse(MQTT_URL if kind == "mqtt" else REDIS_URL)
    proxy = Proxy((url.hostname or "127.0.0.1", url.port or (1883 if kind == "mqtt" else 6379)))
    try:
        record = tmp_path / "records.jsonl"
        userinfo = url.netloc.rpartition("@")[0]
        via = url._replace(netloc=(f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{proxy.port}")
        conn = connection(server, via.geturl())
        fn = new_function(lam, f"{kind}-outage", record)
        if kind == "mqtt":
            topic = f"{h.uniq('lambent-test')}/outage"
            mapping = create_mapping(lam, fn, f"arn:lambent:mqtt:::{conn}", topic)
            wait_subscribed(mq, record, topic, server)
            send = lambda n: mq.publish(topic, {"id": n})  # noqa: E731
            seen = lambda evs: set(by_id(evs))  # noqa: E731
        else:
            key = rds.stream("esm-redis-outage")
            mapping = create_mapping(lam, fn, f"arn:lambent:redis:::{conn}", key)
            send = lambda n: rds.add(key, {"id": n})  # noqa: E731
            seen = lambda evs: {r["fields"]["id"] for r in redis_records(evs)}  # noqa: E731
        send("before")
        wait_events(record, lambda e: "before" in seen(e), 20, server)
        proxy.cut()
        got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
        assert got["State"] == "Enabled" and got["LastProcessingResult"].startswith("PROBLEM: Connection error"), got
        print(f"while {kind} is away:", got["StateTransitionReason"])
        send("during")
        time.sleep(1)
        assert "during" not in seen(events(record))
        proxy.start()
        evs = wait_events(record, lambda e: "during" in seen(e), 60, server, "delivery after the outage")
        assert seen(evs) == {"before", "during"}, seen(evs)
        got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"] == "USER_INITIATED", 30)
        assert got["LastProcessingResult"] == "OK", got
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# bad input


def test_bad_mqtt_and_redis_sources_refused_at_create(server, lam, tmp_path):
    fn = new_function(lam, "esm-bad", tmp_path / "r.jsonl")
    mqtt_conn = connection(server, MQTT_URL)
    redis_conn = connection(server, REDIS_URL)
    cases = [
        ({"EventSourceArn": f"arn:lambent:mqtt:::{mqtt_conn}"}, "Topics"),
        ({"EventSourceArn": f"arn:lambent:mqtt:::{mqtt_conn}/a/b", "Topics": ["a/b"]}, "topic filter goes in Topics"),
        ({"EventSourceArn": f"arn:lambent:mqtt:::{redis_conn}", "Topics": ["a/b"]}, "not a mqtt connection"),
        ({"EventSourceArn": "arn:lambent:mqtt:::no-such-connection", "Topics": ["a/b"]}, "does not exist"),
        ({"EventSourceArn": f"arn:lambent:mqtt:::{mqtt_conn}", "Topics": ["a", "b"]}, "topics"),
        ({"EventSourceArn": f"arn:lambent:redis:::{redis_conn}"}, "Topics"),
        ({"EventSourceArn": f"arn:lambent:redis:::{redis_conn}/k", "Topics": ["k"]}, "stream key goes in Topics"),
        ({"EventSourceArn": f"arn:lambent:redis:::{mqtt_conn}", "Topics": ["k"]}, "not a redis connection"),
        ({"EventSourceArn": "arn:lambent:redis:::bad name", "Topics": ["k"]}, "arn:lambent:redis"),
    ]
    for kw, needle in cases:
        err = h.expect_error(
            lam.create_event_source_mapping, FunctionName=fn, status=400, codes="InvalidParameterValueException", **kw
        )
        assert needle.lower() in err.message.lower(), (kw, err.message)
    assert not lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]
