"""NATS JetStream event-source mappings with Kinesis semantics, against the real server.

NATS with JetStream (LAMBENT_TEST_NATS_URL, default nats://127.0.0.1:4222) must be
running. Mappings are made with boto3's CreateEventSourceMapping on
`arn:lambent:nats:::<connection>/jetstream/<stream>`; each test makes its own stream
(a unique name, deleted afterwards) and publishes with nats-py. The function records every
event it gets in a file (the session server runs functions unsandboxed, so they can write
host paths), which the tests read.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import helpers as h
from test_lambent_cli import lambent

NATS_URL = os.environ.get("LAMBENT_TEST_NATS_URL", "nats://127.0.0.1:4222")
ACK_WAIT = 15  # the poller's AckWait: an earlier session's records come back after it

# Appends each event to RECORD_FILE (with the time). Raises when a record's data holds
# "poison" (until RECORD_FILE.heal exists), sleeps 3 s on "sleep", 20 s on "slow". With MODE=report, reports records whose data starts with "fail" as batch item
# failures the first time it sees them (remembered in RECORD_FILE.seen).
APP = r'''
import base64, json, os, time


def handler(event, context):
    records = event.get("Records", [])
    record = os.environ["RECORD_FILE"]
    with open(record, "a") as f:
        f.write(json.dumps({"rid": context.aws_request_id, "t": time.time(), "event": event}) + "\n")
    datas = [base64.b64decode(r["kinesis"]["data"]) for r in records]
    text = b" ".join(datas)
    if b"sleep" in text:
        time.sleep(3)
    if b"slow" in text:
        time.sleep(20)
    if os.environ.get("MODE") == "report":
        seen_path = record + ".seen"
        try:
            seen = set(open(seen_path).read().split())
        except FileNotFoundError:
            seen = set()
        failed = []
        for r, d in zip(records, datas):
            seq = r["kinesis"]["sequenceNumber"]
            if d.startswith(b"fail") and seq not in seen:
                failed.append({"itemIdentifier": seq})
            seen.add(seq)
        with open(seen_path, "w") as f:
            f.write(" ".join(sorted(seen)))
        return {"batchItemFailures": failed}
    if b"poison" in text and not os.path.exists(record + ".heal"):
        raise ValueError("poison record")
    return {"ok": True, "count": len(records)}
'''


# --------------------------------------------------------------------------
# a small synchronous face on nats-py


class Nats:
    """A nats-py connection driven from a background event loop, with streams that are
    deleted afterwards."""

    def __init__(self, url: str = NATS_URL, **auth):
        import nats

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats-py", daemon=True)
        self.thread.start()
        try:
            self.nc = self.run(nats.connect(url, connect_timeout=5, max_reconnect_attempts=1, **auth))
        except Exception as exc:
            self.loop.call_soon_threadsafe(self.loop.stop)
            pytest.fail(f"NATS is not reachable at {url} (set LAMBENT_TEST_NATS_URL): {exc!r}")
        self.js = self.nc.jetstream()
        self.streams: list[str] = []

    def run(self, coro, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stream(self, prefix: str, subjects: list[str] | None = None) -> tuple[str, str]:
        """A new stream (file storage) on `<name>.>` or the given subjects: (name, subject prefix)."""
        name = h.uniq(prefix).replace("-", "_").upper()
        base = name.lower()
        self.run(self.js.add_stream(name=name, subjects=subjects or [f"{base}.>"]))
        self.streams.append(name)
        return name, base

    def publish(self, subject: str, data: bytes) -> int:
        """Publishes and returns the record's stream sequence number."""
        return self.run(self.js.publish(subject, data)).seq

    def consumer(self, stream: str, name: str):
        """The consumer's info, or None."""
        from nats.js.errors import NotFoundError

        try:
            return self.run(self.js.consumer_info(stream, name))
        except NotFoundError:
            return None

    def close(self):
        for name in self.streams:
            try:
                self.run(self.js.delete_stream(name))
            except Exception:
                pass
        try:
            self.run(self.nc.close())
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def nats(_delete_mappings):
    n = Nats()
    yield n
    delete_mappings()  # before their streams go
    n.close()


# --------------------------------------------------------------------------
# helpers


CREATED: list[tuple[object, str]] = []


@pytest.fixture(autouse=True)
def _delete_mappings():
    """Mappings made by a test are deleted after it."""
    yield
    delete_mappings()


def delete_mappings():
    while CREATED:
        lam, uuid_ = CREATED.pop()
        try:
            lam.delete_event_source_mapping(UUID=uuid_)
        except Exception:
            pass


def read_records(path: Path) -> list[dict]:
    """The complete lines of a record file: a function killed (or still writing) mid-line
    leaves a last line without its newline, which is not a record yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def datas(record: dict) -> list[bytes]:
    return [base64.b64decode(r["kinesis"]["data"]) for r in record["event"]["Records"]]


def all_datas(records: list[dict]) -> list[bytes]:
    return [d for r in records for d in datas(r)]


def new_function(lam, prefix: str, record: Path, mode: str = "", timeout: int = 30) -> str:
    name = h.uniq(prefix)
    h.create_function(
        lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler",
        env={"RECORD_FILE": str(record), "MODE": mode or "-"}, Timeout=timeout,
    )
    return name


def connection(server, url: str = NATS_URL) -> str:
    name = h.uniq("js")
    lambent(server, "connection", "put", name, url)
    return name


def arn(conn: str, stream: str) -> str:
    return f"arn:lambent:nats:::{conn}/jetstream/{stream}"


def create_mapping(lam, function: str, conn: str, stream: str, **kw) -> dict:
    kw.setdefault("StartingPosition", "TRIM_HORIZON")
    resp = lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn(conn, stream), **kw)
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
            pytest.fail(f"timed out waiting for {what}; got {len(records)} invocations: "
                        f"{[datas(r) for r in records][:20]}\n{tail}")
        time.sleep(0.1)


def wait_mapping(lam, uuid_: str, check, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = lam.get_event_source_mapping(UUID=uuid_)
        if check(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"mapping {uuid_} never matched: {json.dumps(got, default=str)}")
        time.sleep(0.2)


def wait_consumer(nats: Nats, stream: str, uuid_: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while (info := nats.consumer(stream, f"lambent-{uuid_}")) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"the mapping's consumer lambent-{uuid_} never appeared on {stream}")
        time.sleep(0.1)
    return info


def wait_acked(nats: Nats, stream: str, uuid_: str, count: int, timeout: float = 20.0):
    """Waits until the consumer has nothing pending or unacknowledged and `count` delivered."""
    deadline = time.monotonic() + timeout
    while True:
        info = nats.consumer(stream, f"lambent-{uuid_}")
        if info is not None and info.num_ack_pending == 0 and info.num_pending == 0 and info.ack_floor.stream_seq >= count:
            return info
        if time.monotonic() > deadline:
            pytest.fail(f"consumer of {stream} never acknowledged {count} records: {info}")
        time.sleep(0.1)


ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --------------------------------------------------------------------------
# event shape, checkpoint, consumer life


def test_kinesis_event_shape_and_consumer(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-shape")
    conn = connection(server)
    fn = new_function(lam, "esm-js-shape", record)
    before = time.time()
    seq1 = nats.publish(f"{base}.orders.eu", b'{"hello": "jetstream"}')
    seq2 = nats.publish(f"{base}.orders.eu", bytes(range(256)))
    after = time.time()
    resp = create_mapping(lam, fn, conn, stream, BatchSize=10, MaximumBatchingWindowInSeconds=1)
    assert resp["State"] == "Creating" and resp["EventSourceArn"] == arn(conn, stream), resp
    assert resp["StartingPosition"] == "TRIM_HORIZON" and resp["ParallelizationFactor"] == 1, resp
    records = wait_records(record, lambda r: len(all_datas(r)) >= 2, 30, server)
    assert len(records) == 1, "two records of one subject published before the mapping make one batch"
    event = records[0]["event"]
    assert set(event) == {"Records"}, event
    first, second = event["Records"]
    assert set(first) == {
        "kinesis", "eventSource", "eventVersion", "eventID", "eventName", "invokeIdentityArn", "awsRegion",
        "eventSourceARN",
    }, first
    assert set(first["kinesis"]) == {
        "kinesisSchemaVersion", "partitionKey", "sequenceNumber", "data", "approximateArrivalTimestamp",
    }, first
    k = first["kinesis"]
    assert k["kinesisSchemaVersion"] == "1.0"
    assert k["partitionKey"] == f"{base}.orders.eu"
    assert k["sequenceNumber"] == str(seq1) and second["kinesis"]["sequenceNumber"] == str(seq2)
    assert base64.b64decode(k["data"]) == b'{"hello": "jetstream"}'
    assert base64.b64decode(second["kinesis"]["data"]) == bytes(range(256))
    assert isinstance(k["approximateArrivalTimestamp"], float)
    assert before - 1 <= k["approximateArrivalTimestamp"] <= after + 1, (before, k, after)
    assert first["eventSource"] == "aws:kinesis" and first["eventVersion"] == "1.0"
    assert first["eventName"] == "aws:kinesis:record"
    assert first["eventID"] == f"shardId-{base}.orders.eu:{seq1}"
    assert first["invokeIdentityArn"] == h.ROLE
    assert first["awsRegion"] == h.REGION
    assert first["eventSourceARN"] == arn(conn, stream)
    # Checkpointed after success: the durable consumer acknowledged both.
    info = wait_acked(nats, stream, resp["UUID"], seq2)
    assert info.config.durable_name == f"lambent-{resp['UUID']}"
    assert str(getattr(info.config.ack_policy, "value", info.config.ack_policy)) == "explicit", info.config
    assert info.config.ack_wait == ACK_WAIT, info.config
    got = wait_mapping(lam, resp["UUID"], lambda m: m.get("LastProcessingResult") == "OK")
    assert got["State"] == "Enabled" and got["StateTransitionReason"] == "USER_INITIATED", got
    # Deleting the mapping deletes its consumer.
    lam.delete_event_source_mapping(UUID=resp["UUID"])
    deadline = time.monotonic() + 15
    while nats.consumer(stream, f"lambent-{resp['UUID']}") is not None:
        assert time.monotonic() < deadline, "the consumer outlived its mapping"
        time.sleep(0.1)


def test_subject_filter_topics(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-filter")
    conn = connection(server)
    fn = new_function(lam, "esm-js-filter", record)
    nats.publish(f"{base}.orders.1", b"order")
    nats.publish(f"{base}.audit.1", b"audit")
    nats.publish(f"{base}.orders.2", b"order 2")
    resp = create_mapping(lam, fn, conn, stream, Topics=[f"{base}.orders.>"], MaximumBatchingWindowInSeconds=1)
    assert resp["Topics"] == [f"{base}.orders.>"], resp
    records = wait_records(record, lambda r: len(all_datas(r)) >= 2, 30, server)
    time.sleep(1)
    assert sorted(all_datas(read_records(record))) == [b"order", b"order 2"]
    info = wait_consumer(nats, stream, resp["UUID"])
    assert info.config.filter_subject == f"{base}.orders.>"
    assert {r["event"]["Records"][0]["kinesis"]["partitionKey"] for r in records} == {f"{base}.orders.1", f"{base}.orders.2"}


# --------------------------------------------------------------------------
# starting positions


def test_starting_positions(server, lam, nats, tmp_path):
    conn = connection(server)
    stream, base = nats.stream("esm-js-start")
    subject = f"{base}.s"
    nats.publish(subject, b"old-1")
    nats.publish(subject, b"old-2")
    time.sleep(1.2)
    boundary = time.time()
    time.sleep(1.2)
    nats.publish(subject, b"mid-3")
    nats.publish(subject, b"mid-4")

    files = {pos: tmp_path / f"{pos}.jsonl" for pos in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")}
    uuids = {}
    for pos, path in files.items():
        fn = new_function(lam, f"esm-js-{pos.lower().replace('_', '-')}", path)
        kw = {"StartingPositionTimestamp": boundary} if pos == "AT_TIMESTAMP" else {}
        resp = create_mapping(lam, fn, conn, stream, StartingPosition=pos, MaximumBatchingWindowInSeconds=0, **kw)
        assert resp["StartingPosition"] == pos, resp
        uuids[pos] = resp["UUID"]
    for u in uuids.values():
        wait_consumer(nats, stream, u)
    nats.publish(subject, b"new-5")
    everything = [b"old-1", b"old-2", b"mid-3", b"mid-4", b"new-5"]
    wanted = {
        "TRIM_HORIZON": everything,
        "AT_TIMESTAMP": everything[2:],
        "LATEST": everything[4:],
    }
    for pos, path in files.items():
        got = wait_records(path, lambda r, n=len(wanted[pos]): len(all_datas(r)) >= n, 30, server, pos)
        assert all_datas(got) == wanted[pos], (pos, all_datas(got))
    time.sleep(1)
    for pos, path in files.items():
        assert all_datas(read_records(path)) == wanted[pos], pos


# --------------------------------------------------------------------------
# batching and order


def test_batch_size_and_window(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-batch")
    conn = connection(server)
    fn = new_function(lam, "esm-js-batch", record)
    for i in range(7):
        nats.publish(f"{base}.s", f"m{i}".encode())
    create_mapping(lam, fn, conn, stream, BatchSize=3, MaximumBatchingWindowInSeconds=1)
    records = wait_records(record, lambda r: len(all_datas(r)) >= 7, 30, server)
    assert [datas(r) for r in records] == [
        [b"m0", b"m1", b"m2"], [b"m3", b"m4", b"m5"], [b"m6"],
    ], "full batches go at once, the rest after the window"
    # A record alone waits out the 1 s window, then goes in a batch of one.
    started = time.monotonic()
    nats.publish(f"{base}.s", b"late")
    records = wait_records(record, lambda r: b"late" in all_datas(r), 10, server)
    waited = time.monotonic() - started
    assert datas(records[-1]) == [b"late"]
    assert 0.8 <= waited < 5, f"a lone record was delivered after {waited:.2f}s with a 1 s window"


def test_order_per_subject_with_two_subjects(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-order")
    conn = connection(server)
    fn = new_function(lam, "esm-js-order", record)
    a, b = f"{base}.a", f"{base}.b"
    for i in range(15):
        nats.publish(a, f"a{i}".encode())
        nats.publish(b, f"b{i}".encode())
    create_mapping(lam, fn, conn, stream, BatchSize=4, ParallelizationFactor=2, MaximumBatchingWindowInSeconds=0)
    records = wait_records(record, lambda r: len(all_datas(r)) >= 30, 30, server)
    per = {a: [], b: []}
    for r in records:
        keys = {x["kinesis"]["partitionKey"] for x in r["event"]["Records"]}
        assert len(keys) == 1, f"a batch mixes subjects: {keys}"
        assert len(r["event"]["Records"]) <= 4
        seqs = [int(x["kinesis"]["sequenceNumber"]) for x in r["event"]["Records"]]
        assert seqs == sorted(seqs)
        per[keys.pop()].extend(datas(r))
    assert per[a] == [f"a{i}".encode() for i in range(15)], per[a]
    assert per[b] == [f"b{i}".encode() for i in range(15)], per[b]
    time.sleep(1)
    assert len(all_datas(read_records(record))) == 30, "no record twice"


# --------------------------------------------------------------------------
# errors: retries, blocking, OnFailure, bisection, partial batch responses, age


def test_function_error_blocks_its_subject_only(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-block")
    conn = connection(server)
    fn = new_function(lam, "esm-js-block", record)
    bad, good = f"{base}.bad", f"{base}.good"
    nats.publish(bad, b"poison")
    nats.publish(bad, b"after poison")
    for i in range(3):
        nats.publish(good, f"good {i}".encode())
    mapping = create_mapping(lam, fn, conn, stream, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    records = wait_records(
        record, lambda r: all_datas(r).count(b"poison") >= 3 and b"good 2" in all_datas(r), 30, server,
    )
    got = all_datas(records)
    assert [d for d in got if d.startswith(b"good")] == [b"good 0", b"good 1", b"good 2"]
    assert b"after poison" not in got, "a failing batch must block the records after it on its subject"
    assert wait_mapping(lam, mapping["UUID"], lambda m: m["LastProcessingResult"] == "PROBLEM: Function call failed")
    time.sleep(2)
    got = all_datas(read_records(record))
    assert b"after poison" not in got
    assert got.count(b"poison") >= 4, "infinite retries (MaximumRetryAttempts -1) keep retrying"
    info = nats.consumer(stream, f"lambent-{mapping['UUID']}")
    assert info.num_ack_pending == 2, "the blocked records stay unacknowledged"


def test_retries_exhausted_go_to_on_failure_destination(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    hook = h.Webhook()
    try:
        stream, base = nats.stream("esm-js-onfail")
        conn = connection(server)
        fn = new_function(lam, "esm-js-onfail", record)
        subject = f"{base}.s1"
        before = time.time()
        seq = nats.publish(subject, b"poison")
        nats.publish(subject, b"after")
        mapping = create_mapping(
            lam, fn, conn, stream, BatchSize=1, MaximumBatchingWindowInSeconds=0, MaximumRetryAttempts=2,
            DestinationConfig={"OnFailure": {"Destination": hook.arn("/failed")}},
        )
        assert mapping["MaximumRetryAttempts"] == 2, mapping
        records = wait_records(record, lambda r: b"after" in all_datas(r), 30, server)
        assert all_datas(records) == [b"poison"] * 3 + [b"after"], "MaximumRetryAttempts 2 = three attempts, in order"
        (req,) = hook.wait_for("/failed", 1, 30, server)
        body = req.json
        assert set(body) == {"requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"}, body
        ctx = body["requestContext"]
        assert ctx["condition"] == "RetryAttemptsExhausted" and ctx["approximateInvokeCount"] == 3, ctx
        assert ctx["functionArn"] == h.function_arn(fn) and ctx["requestId"], ctx
        assert body["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
        assert body["version"] == "1.0" and ISO_MS.match(body["timestamp"]), body
        info = body["KinesisBatchInfo"]
        assert info["shardId"] == f"shardId-{subject}"
        assert info["startSequenceNumber"] == info["endSequenceNumber"] == str(seq)
        assert info["batchSize"] == 1 and info["streamArn"] == arn(conn, stream)
        for key in ("approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord"):
            assert ISO_MS.match(info[key]), info
        arrived = datetime.datetime.fromisoformat(info["approximateArrivalOfFirstRecord"].replace("Z", "+00:00"))
        assert abs(arrived.timestamp() - before) < 5, info
        assert req.headers.get("content-type", "").startswith("application/json")
        wait_acked(nats, stream, mapping["UUID"], seq + 1)
        time.sleep(1)
        assert len(hook.received("/failed")) == 1
    finally:
        hook.stop()


def test_bisect_isolates_a_poison_record(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    hook = h.Webhook()
    try:
        stream, base = nats.stream("esm-js-bisect")
        conn = connection(server)
        fn = new_function(lam, "esm-js-bisect", record)
        subject = f"{base}.s"
        seqs = [nats.publish(subject, d) for d in (b"r1", b"r2", b"poison", b"r4")]
        create_mapping(
            lam, fn, conn, stream, BatchSize=4, MaximumBatchingWindowInSeconds=1, BisectBatchOnFunctionError=True,
            MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": hook.arn("/bisect")}},
        )
        records = wait_records(record, lambda r: len(r) >= 6, 30, server, "six invocations")
        time.sleep(1.5)
        got = [datas(r) for r in read_records(record)]
        assert got == [
            [b"r1", b"r2", b"poison", b"r4"],  # fails: split in halves (no retry counted)
            [b"r1", b"r2"],  # succeeds
            [b"poison", b"r4"],  # fails: split
            [b"poison"],  # fails: one record cannot be split, retry 1 of 1
            [b"poison"],  # fails again: discarded
            [b"r4"],
        ], got
        (req,) = hook.wait_for("/bisect", 1, 30, server)
        body = req.json
        assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert body["requestContext"]["approximateInvokeCount"] == 4, "every invocation the record was part of"
        assert body["KinesisBatchInfo"]["batchSize"] == 1
        assert body["KinesisBatchInfo"]["startSequenceNumber"] == str(seqs[2])
    finally:
        hook.stop()


def test_report_batch_item_failures_checkpoint(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-report")
    conn = connection(server)
    fn = new_function(lam, "esm-js-report", record, mode="report")
    subject = f"{base}.s"
    seqs = [nats.publish(subject, d) for d in (b"ok-1", b"ok-2", b"fail-3", b"ok-4", b"fail-5")]
    mapping = create_mapping(
        lam, fn, conn, stream, BatchSize=10, MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"], BisectBatchOnFunctionError=True,
    )
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    records = wait_records(record, lambda r: len(r) >= 2, 30, server, "the retry from the lowest reported failure")
    time.sleep(1.5)
    got = [datas(r) for r in read_records(record)]
    assert got == [
        [b"ok-1", b"ok-2", b"fail-3", b"ok-4", b"fail-5"],
        [b"fail-3", b"ok-4", b"fail-5"],  # checkpointed before the lowest failed sequence number
    ], got
    wait_acked(nats, stream, mapping["UUID"], seqs[-1])


def test_invalid_batch_item_failures_fail_the_whole_batch(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-invalid")
    conn = connection(server)
    # A function that names a sequence number not in the batch the first time.
    app = r'''
import json, os

def handler(event, context):
    path = os.environ["RECORD_FILE"]
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(json.dumps({"event": event}) + "\n")
    return {"batchItemFailures": [{"itemIdentifier": "999999999"}]} if first else {"batchItemFailures": []}
'''
    fn = h.uniq("esm-js-invalid")
    h.create_function(lam, fn, h.py_zip({"app.py": app}), "python3.12", "app.handler", env={"RECORD_FILE": str(record)})
    for d in (b"x1", b"x2"):
        nats.publish(f"{base}.s", d)
    create_mapping(lam, fn, conn, stream, BatchSize=10, MaximumBatchingWindowInSeconds=1,
                   FunctionResponseTypes=["ReportBatchItemFailures"])
    wait_records(record, lambda r: len(r) >= 2, 30, server)
    time.sleep(1)
    assert [datas(r) for r in read_records(record)] == [[b"x1", b"x2"], [b"x1", b"x2"]]


def test_maximum_record_age(server, lam, nats, tmp_path):
    """60 s is the smallest MaximumRecordAgeInSeconds AWS accepts, so this takes about a minute:
    a record that keeps failing (infinite retries) is discarded once it is 60 s old."""
    record = tmp_path / "records.jsonl"
    hook = h.Webhook()
    try:
        stream, base = nats.stream("esm-js-age")
        conn = connection(server)
        fn = new_function(lam, "esm-js-age", record)
        subject = f"{base}.s"
        published = time.monotonic()
        seq = nats.publish(subject, b"poison")
        mapping = create_mapping(
            lam, fn, conn, stream, BatchSize=1, MaximumBatchingWindowInSeconds=0, MaximumRecordAgeInSeconds=60,
            DestinationConfig={"OnFailure": {"Destination": hook.arn("/age")}},
        )
        assert mapping["MaximumRecordAgeInSeconds"] == 60 and mapping["MaximumRetryAttempts"] == -1, mapping
        # A record published later on the same subject waits behind the failing one; it is
        # young enough to be processed once the poison record is discarded.
        time.sleep(45)
        nats.publish(subject, b"after")
        (req,) = hook.wait_for("/age", 1, 45, server)
        waited = time.monotonic() - published
        assert 60 <= waited < 70, f"the record was discarded {waited:.1f}s after it was published"
        body = req.json
        assert body["requestContext"]["condition"] == "RecordAgeExceeded", body
        assert body["requestContext"]["approximateInvokeCount"] >= 5, body
        assert body["KinesisBatchInfo"]["startSequenceNumber"] == str(seq), body
        records = wait_records(record, lambda r: b"after" in all_datas(r), 20, server)
        assert all_datas(records)[-1] == b"after" and all_datas(records).count(b"after") == 1
        assert set(all_datas(records)) == {b"poison", b"after"}
        time.sleep(1)
        assert len(hook.received("/age")) == 1, "only the expired record was discarded"
    finally:
        hook.stop()


# --------------------------------------------------------------------------
# disable / enable, restart, connection loss


def test_disable_and_enable_resume_without_loss_or_duplicates(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-disable")
    conn = connection(server)
    fn = new_function(lam, "esm-js-disable", record)
    mapping = create_mapping(lam, fn, conn, stream, BatchSize=2, MaximumBatchingWindowInSeconds=0)
    for i in range(5):
        nats.publish(f"{base}.s", f"one-{i}".encode())
    wait_records(record, lambda r: len(all_datas(r)) >= 5, 20, server)
    resp = lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    assert resp["State"] == "Updating"
    wait_mapping(lam, mapping["UUID"], lambda m: m["State"] == "Disabled")
    time.sleep(1)  # the poller stops within about half a second
    for i in range(5):
        nats.publish(f"{base}.s", f"two-{i}".encode())
    time.sleep(2)
    assert not any(d.startswith(b"two") for d in all_datas(read_records(record))), "a disabled mapping still consumes"
    info = nats.consumer(stream, f"lambent-{mapping['UUID']}")
    assert info is not None and info.num_pending == 5, "the consumer (the checkpoint) stays while disabled"
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    records = wait_records(record, lambda r: len(all_datas(r)) >= 10, 20, server)
    time.sleep(1.5)
    got = all_datas(read_records(record))
    assert got == [f"one-{i}".encode() for i in range(5)] + [f"two-{i}".encode() for i in range(5)], got
    wait_acked(nats, stream, mapping["UUID"], 10)


def test_disable_while_records_wait_keeps_their_order(server, lam, nats, tmp_path):
    """Records held behind a failing one go back to the server when the mapping stops; the next
    session takes them back in order before processing anything."""
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-held")
    conn = connection(server)
    fn = new_function(lam, "esm-js-held", record)
    subject = f"{base}.s"
    for d in (b"poison", b"w1", b"w2", b"w3"):
        nats.publish(subject, d)
    mapping = create_mapping(lam, fn, conn, stream, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    wait_records(record, lambda r: all_datas(r).count(b"poison") >= 2, 20, server)
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_mapping(lam, mapping["UUID"], lambda m: m["State"] == "Disabled")
    time.sleep(1.5)
    before = len(read_records(record))
    Path(str(record) + ".heal").write_text("")
    nats.publish(subject, b"w4")
    time.sleep(1)
    assert len(read_records(record)) == before, "a disabled mapping still invokes"
    started = time.monotonic()
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    records = wait_records(record, lambda r: b"w4" in all_datas(r), 30, server)
    resumed = time.monotonic() - started
    print(f"resumed {resumed:.2f}s after re-enabling")
    assert resumed < ACK_WAIT / 2, "returned records come back at once, not after their AckWait"
    time.sleep(1)
    after = all_datas(read_records(record))[before:]
    assert after == [b"poison", b"w1", b"w2", b"w3", b"w4"], after
    wait_acked(nats, stream, mapping["UUID"], 5)


def test_update_keeps_the_checkpoint(server, lam, nats, tmp_path):
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-update")
    conn = connection(server)
    fn = new_function(lam, "esm-js-update", record)
    mapping = create_mapping(lam, fn, conn, stream, BatchSize=2, MaximumBatchingWindowInSeconds=0)
    for i in range(4):
        nats.publish(f"{base}.s", f"u{i}".encode())
    wait_records(record, lambda r: len(all_datas(r)) >= 4, 20, server)
    resp = lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=600, MaximumBatchingWindowInSeconds=1)
    assert resp["BatchSize"] == 600
    deadline = time.monotonic() + 15
    while nats.consumer(stream, f"lambent-{mapping['UUID']}").config.max_ack_pending != 1200:
        assert time.monotonic() < deadline, "the consumer's max_ack_pending follows BatchSize"
        time.sleep(0.2)
    for i in range(4, 8):
        nats.publish(f"{base}.s", f"u{i}".encode())
    records = wait_records(record, lambda r: len(all_datas(r)) >= 8, 20, server)
    time.sleep(1)
    assert all_datas(read_records(record)) == [f"u{i}".encode() for i in range(8)]
    assert datas(read_records(record)[-1]) == [b"u4", b"u5", b"u6", b"u7"], "the new BatchSize and window apply"


def test_parallelization_factor(server, lam, nats, tmp_path):
    stream, base = nats.stream("esm-js-parallel")
    conn = connection(server)
    files = {pf: tmp_path / f"pf{pf}.jsonl" for pf in (1, 2)}
    for pf, path in files.items():
        fn = new_function(lam, f"esm-js-pf{pf}", path)
        create_mapping(lam, fn, conn, stream, ParallelizationFactor=pf, MaximumBatchingWindowInSeconds=0)
    nats.publish(f"{base}.a", b"sleep a")
    nats.publish(f"{base}.b", b"sleep b")
    for pf, path in files.items():
        records = wait_records(path, lambda r: len(r) >= 2, 30, server, f"both subjects (ParallelizationFactor {pf})")
        gap = abs(records[1]["t"] - records[0]["t"])
        if pf == 1:
            assert gap >= 2.5, f"ParallelizationFactor 1 ran two batches at once ({gap:.2f}s apart)"
        else:
            assert gap < 2, f"ParallelizationFactor 2 did not run the subjects at once ({gap:.2f}s apart)"


def test_long_invocation_is_not_redelivered(server, lam, nats, tmp_path):
    """A batch that runs longer than the consumer's AckWait keeps its records with in-progress
    acknowledgements: no redelivery, no second invocation."""
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-long")
    conn = connection(server)
    fn = new_function(lam, "esm-js-long", record, timeout=40)
    mapping = create_mapping(lam, fn, conn, stream, BatchSize=1, MaximumBatchingWindowInSeconds=0)
    nats.publish(f"{base}.s", b"slow one")
    nats.publish(f"{base}.s", b"next")
    records = wait_records(record, lambda r: b"next" in all_datas(r), 40, server)
    assert all_datas(records) == [b"slow one", b"next"]
    info = wait_acked(nats, stream, mapping["UUID"], 2)
    assert info.num_redelivered == 0, info


def test_kill_mid_batch_resumes_from_the_durable_consumer(nats, tmp_path):
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log")
    lam = srv.client()
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-kill")
    try:
        conn = connection(srv)
        fn = new_function(lam, "esm-js-kill", record)
        mapping = create_mapping(lam, fn, conn, stream, BatchSize=5, MaximumBatchingWindowInSeconds=1)
        wait_consumer(nats, stream, mapping["UUID"])
        for i in range(5):
            nats.publish(f"{base}.a", f"a{i}".encode())
        wait_records(record, lambda r: len(all_datas(r)) >= 5, 20, srv)
        nats.publish(f"{base}.a", b"sleep a5")
        for i in range(6, 10):
            nats.publish(f"{base}.a", f"a{i}".encode())
        for i in range(3):
            nats.publish(f"{base}.b", f"b{i}".encode())
        # The batch with "sleep" is running (3 s): kill the server in the middle of it.
        wait_records(record, lambda r: b"sleep a5" in all_datas(r), 20, srv)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    finally:
        if srv.proc.poll() is None:
            srv.terminate()
    h.kill_leftovers()
    info = nats.consumer(stream, f"lambent-{mapping['UUID']}")
    assert info.ack_floor.stream_seq >= 5, "the first batch was checkpointed"
    assert info.num_ack_pending >= 5, "the batch being processed was not acknowledged"
    again = h.start_server(tmp_path / "data", tmp_path / "server2.log")
    try:
        wanted = [b"sleep a5"] + [f"a{i}".encode() for i in range(6, 10)]
        records = wait_records(
            record, lambda r: all_datas(r).count(b"sleep a5") >= 2 and b"b2" in all_datas(r), 60, again,
            "every record after the restart",
        )
        time.sleep(1)
        # The unacknowledged batch ran again, each subject in order, nothing lost; the
        # checkpointed batch did not run again.
        per: dict[str, list[bytes]] = {}
        for r in read_records(record):
            for x in r["event"]["Records"]:
                key = x["kinesis"]["partitionKey"].rsplit(".", 1)[1]
                per.setdefault(key, []).append(base64.b64decode(x["kinesis"]["data"]))
        assert per["a"] == [f"a{i}".encode() for i in range(5)] + wanted + wanted, per["a"]
        assert per["b"] == [b"b0", b"b1", b"b2"], per["b"]
        wait_acked(nats, stream, mapping["UUID"], 13, timeout=30)
    finally:
        again.terminate()


Proxy = h.TcpProxy


def test_connection_loss_is_reported_and_survived(server, lam, nats, tmp_path):
    host, port = NATS_URL.split("://", 1)[1].rsplit("@", 1)[-1].split(":")
    proxy = Proxy((host, int(port)))
    record = tmp_path / "records.jsonl"
    stream, base = nats.stream("esm-js-outage")
    conn = connection(server, f"nats://127.0.0.1:{proxy.port}")
    fn = new_function(lam, "esm-js-outage", record)
    try:
        mapping = create_mapping(lam, fn, conn, stream, MaximumBatchingWindowInSeconds=0)
        nats.publish(f"{base}.s", b"before")
        wait_records(record, lambda r: b"before" in all_datas(r), 20, server)
        proxy.cut()
        got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
        assert got["State"] == "Enabled" and got["LastProcessingResult"].startswith("PROBLEM: Connection error"), got
        nats.publish(f"{base}.s", b"during")
        time.sleep(1)
        proxy.start()
        wait_records(record, lambda r: b"during" in all_datas(r), 60, server, "the record published during the outage")
        got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"] == "USER_INITIATED", 30)
        assert all_datas(read_records(record)) == [b"before", b"during"]
    finally:
        proxy.close()


def test_credentials_in_the_connection_url(server, lam, tmp_path):
    """A NATS server that requires a user and password (its own nats-server process)."""
    import shutil
    import subprocess

    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        pytest.skip("no nats-server binary to start an authenticated server")
    port = h.free_port()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js"), "--user", "lambent", "--pass", "p@ss:w/rd"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.1)
        secured = Nats(f"nats://127.0.0.1:{port}", user="lambent", password="p@ss:w/rd")
        try:
            record = tmp_path / "records.jsonl"
            stream, base = secured.stream("esm-js-auth")
            good = connection(server, f"nats://lambent:p%40ss%3Aw%2Frd@127.0.0.1:{port}")
            bad = connection(server, f"nats://lambent:wrong-secret@127.0.0.1:{port}")
            fn = new_function(lam, "esm-js-auth", record)
            fn_bad = new_function(lam, "esm-js-auth-bad", tmp_path / "bad.jsonl")
            secured.publish(f"{base}.s", b"authenticated")
            create_mapping(lam, fn, good, stream, MaximumBatchingWindowInSeconds=0)
            refused = create_mapping(lam, fn_bad, bad, stream, MaximumBatchingWindowInSeconds=0)
            wait_records(record, lambda r: b"authenticated" in all_datas(r), 20, server)
            got = wait_mapping(lam, refused["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
            assert "wrong-secret" not in json.dumps(got, default=str), "the password leaked into the mapping's state"
            assert "wrong-secret" not in server.log_tail(400)
            delete_mappings()
        finally:
            secured.close()
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------
# bad input


def test_bad_jetstream_mappings_refused_at_create(server, lam, lam_raw, nats, tmp_path):
    fn = new_function(lam, "esm-js-bad", tmp_path / "r.jsonl")
    conn = connection(server)
    mq = h.uniq("mq")
    lambent(server, "connection", "put", mq, "amqp://guest:guest@127.0.0.1:5672/%2f")
    good = arn(conn, "ORDERS")
    cases = [
        ({"EventSourceArn": good}, "startingPosition"),
        ({"EventSourceArn": f"arn:lambent:nats:::{conn}/ORDERS", "StartingPosition": "LATEST"}, "jetstream"),
        ({"EventSourceArn": f"arn:lambent:nats:::{conn}/jetstream/a.b", "StartingPosition": "LATEST"}, "jetstream"),
        ({"EventSourceArn": f"arn:lambent:nats:::{conn}/jetstream/", "StartingPosition": "LATEST"}, "jetstream"),
        ({"EventSourceArn": "arn:lambent:nats:::no-such-connection/jetstream/S", "StartingPosition": "LATEST"}, "does not exist"),
        ({"EventSourceArn": arn(mq, "S"), "StartingPosition": "LATEST"}, "not a nats connection"),
        ({"EventSourceArn": good, "StartingPosition": "AT_TIMESTAMP"}, "StartingPositionTimestamp"),
        ({"EventSourceArn": good, "StartingPosition": "LATEST", "Topics": ["a", "b"]}, "topics"),
        ({"EventSourceArn": good, "StartingPosition": "LATEST", "ParallelizationFactor": 11}, "parallelizationFactor"),
        ({"EventSourceArn": good, "StartingPosition": "LATEST", "MaximumRecordAgeInSeconds": 30}, "maximumRecordAgeInSeconds"),
    ]
    for kw, needle in cases:
        err = h.expect_error(
            lam_raw.create_event_source_mapping, FunctionName=fn, status=400, codes="InvalidParameterValueException", **kw
        )
        assert needle.lower() in err.message.lower(), (kw, err.message)
    assert not lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]


def test_missing_stream_is_reported(server, lam, nats, tmp_path):
    conn = connection(server)
    fn = new_function(lam, "esm-js-missing", tmp_path / "r.jsonl")
    mapping = create_mapping(lam, fn, conn, h.uniq("NO_SUCH_STREAM").replace("-", "_"))
    got = wait_mapping(lam, mapping["UUID"], lambda m: m["StateTransitionReason"].startswith("PROBLEM: Connection error"))
    assert "stream" in got["StateTransitionReason"].lower(), got
