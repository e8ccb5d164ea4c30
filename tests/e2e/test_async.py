"""Durable asynchronous invocation (InvocationType=Event): the queue behind the 202.

Retries with backoff, MaximumEventAgeInSeconds, throttled events that wait,
destinations (webhooks, other functions, RabbitMQ, NATS core and JetStream),
dead-letter targets, `lambent connection`, visibility (`lambent events`,
/metrics, `lambent usage`), graceful shutdown and `kill -9` of the server.

This module runs its own servers. The module-scoped `server` fixture below
replaces the session server for these tests, started with
`--async-retry-delay 0.5` so that retries take seconds, not minutes; the
EventAgeExceeded, graceful-shutdown and crash tests start servers of their own.

RabbitMQ (LAMBENT_TEST_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/%2f)
and NATS with JetStream (LAMBENT_TEST_NATS_URL, default nats://127.0.0.1:4222)
must be running for the broker tests. LAMBENT_TEST_CRASH_EVENTS changes how
many events the crash test enqueues (default 10000).
"""

import asyncio
import collections
import datetime
import json
import os
import random
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config

import helpers as h
from test_lambent_cli import as_json, lambent
from test_metering import scrape, value

RETRY_DELAY = 0.5
ASYNC_MAX_PAYLOAD = 262144
AMQP_URL = os.environ.get("LAMBENT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
NATS_URL = os.environ.get("LAMBENT_TEST_NATS_URL", "nats://127.0.0.1:4222")
CRASH_EVENTS = int(os.environ.get("LAMBENT_TEST_CRASH_EVENTS", "10000"))
ISO_Z_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z$")
RECORD_KEYS = {"version", "timestamp", "requestContext", "requestPayload", "responseContext", "responsePayload"}

# The function most tests use. Per event: prints one "async-attempt <tag> <request id>"
# line (counted from the function's log), appends {rid, t, event} to event["record"],
# sleeps event["sleep"] seconds, raises event["raise"], else returns a small object.
APP = r'''
import json, time


def handler(event, context):
    ev = event if isinstance(event, dict) else {}
    rid = context.aws_request_id
    started = time.time()
    if ev.get("tag"):
        print("async-attempt %s %s" % (ev["tag"], rid), flush=True)
    if ev.get("record"):
        with open(ev["record"], "a") as f:
            f.write(json.dumps({"rid": rid, "t": started, "event": event}) + "\n")
    if ev.get("sleep"):
        time.sleep(ev["sleep"])
    if ev.get("raise"):
        raise ValueError(ev["raise"])
    return {"ok": True, "tag": ev.get("tag"), "n": ev.get("n"), "request_id": rid}
'''

# A destination function: stores the record it was invoked with (and its own
# request id) at requestPayload.dest_out.
DEST_APP = r'''
import json, os


def handler(event, context):
    out = event["requestPayload"]["dest_out"]
    with open(out + ".tmp", "w") as f:
        json.dump({"event": event, "request_id": context.aws_request_id}, f)
    os.rename(out + ".tmp", out)
    return {"stored": out}
'''


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's server (named `server` so conftest attaches its log to failures)."""
    base = tmp_path_factory.mktemp("async")
    srv = h.start_server(base / "data", base / "server.log", ["--async-retry-delay", str(RETRY_DELAY)])
    yield srv
    srv.terminate()
    if os.environ.get("LAMBENT_TEST_SHOW_LOG"):
        print(f"\n--- async server log ({srv.log_path}) ---\n{srv.log_tail(400)}")


@pytest.fixture(scope="module")
def lam(server):
    return server.client()


@pytest.fixture(scope="module")
def logs(server):
    return h.logs_client(server)


@pytest.fixture(scope="module")
def hook():
    wh = h.Webhook()
    yield wh
    wh.stop()


def new_fn(lam, prefix, timeout=10, code=APP, **kw):
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_zip({"app.py": code}), "python3.12", "app.handler", Timeout=timeout, MemorySize=128, **kw)
    return name


def configure(lam, name, retries=None, age=None, on_success=None, on_failure=None, qualifier=None):
    kw = {}
    if retries is not None:
        kw["MaximumRetryAttempts"] = retries
    if age is not None:
        kw["MaximumEventAgeInSeconds"] = age
    dest = {}
    if on_success:
        dest["OnSuccess"] = {"Destination": on_success}
    if on_failure:
        dest["OnFailure"] = {"Destination": on_failure}
    if dest:
        kw["DestinationConfig"] = dest
    if qualifier:
        kw["Qualifier"] = qualifier
    return lam.put_function_event_invoke_config(FunctionName=name, **kw)


def send(lam, name, event, **kw) -> str:
    """InvocationType=Event; checks the 202 and returns its request id."""
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=raw, **kw)
    assert resp["StatusCode"] == 202, resp
    assert resp["Payload"].read() == b"", "an async invoke answers with an empty body"
    rid = h.request_id(resp)
    assert rid, resp["ResponseMetadata"]
    return rid


def read_runs(path):
    """The {rid, t, event} lines APP appended to `path` (one per attempt)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    runs = []
    for line in text.splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:
            pass  # a line still being written
    return runs


def attempt_lines(logs, name, tag):
    """The function's own "async-attempt <tag> <rid>" log lines."""
    msgs = h.log_messages(logs, name, f'"{tag}"')
    return [m.strip() for m in msgs if m.strip().startswith(f"async-attempt {tag} ")]


def parse_z(ts):
    m = ISO_Z_RE.match(ts)
    assert m, f"timestamp {ts!r} is not ISO 8601 UTC with a Z"
    return datetime.datetime(*map(int, m.groups()[:6]), tzinfo=datetime.timezone.utc)


def check_record(rec, *, rid, name, condition, count, payload, qualifier="$LATEST", function_error=None, ran=True):
    """A destination record as AWS writes it (everything but responsePayload,
    which callers check)."""
    assert isinstance(rec, dict), rec
    assert rec.get("version") == "1.0", rec
    age = abs((datetime.datetime.now(datetime.timezone.utc) - parse_z(rec["timestamp"])).total_seconds())
    assert age < 600, f"record timestamp {rec['timestamp']} is {age:.0f}s away from now"
    assert rec["requestContext"] == {
        "requestId": rid,
        "functionArn": h.function_arn(name, qualifier),
        "condition": condition,
        "approximateInvokeCount": count,
    }, rec["requestContext"]
    assert rec["requestPayload"] == payload, rec["requestPayload"]
    if not ran:
        assert "responseContext" not in rec and "responsePayload" not in rec, f"the function never ran: {rec}"
        return
    expected = {"statusCode": 200, "executedVersion": qualifier}
    if function_error:
        expected["functionError"] = function_error
    assert rec["responseContext"] == expected, rec["responseContext"]
    assert set(rec) == RECORD_KEYS, sorted(rec)


def record_rid(req):
    return req.json["requestContext"]["requestId"]


def hold_slot(lam, name, seconds, hold_file):
    """Start a sync invoke that sleeps `seconds` (taking one concurrency slot);
    returns (thread, result dict, time.time() the function started) once it is running."""
    result = {}

    def run():
        try:
            result["r"] = h.invoke(lam, name, {"record": str(hold_file), "sleep": seconds})
        except Exception as exc:  # reported by the caller
            result["error"] = exc

    thread = threading.Thread(target=run, name="hold-slot", daemon=True)
    thread.start()
    h.wait_until(lambda: read_runs(hold_file) or "error" in result, 20, "the slot-holding sync invoke to start")
    assert "error" not in result, f"the slot-holding sync invoke failed: {result['error']!r}"
    return thread, result, read_runs(hold_file)[0]["t"]


def finish_hold(thread, result):
    thread.join(60)
    assert not thread.is_alive(), "the slot-holding sync invoke did not end"
    assert "error" not in result, f"the slot-holding sync invoke failed: {result.get('error')!r}"
    resp, body = result["r"]
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body


def events_cli(server, name, *args):
    out = as_json(lambent(server, "events", name, *args, "--output", "json"))
    assert isinstance(out.get("Events"), list), out
    return out["Events"]


def str_headers(headers):
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (headers or {}).items()}


# --------------------------------------------------------------------------
# the success path, request ids, InvokeAsync


def test_event_success_reaches_function_and_on_success_webhook(lam, hook):
    name = new_fn(lam, "as-ok")
    path = f"/ok/{name}"
    configure(lam, name, on_success=hook.arn(path))
    runs_file = h.scratch_path("as-ok")
    event = {"tag": h.uniq("ok"), "record": str(runs_file), "n": 7, "nested": {"list": [1, "two", None], "s": "ünïcødé"}}
    rid = send(lam, name, event)

    [req] = hook.wait_for(path, 1, timeout=30)
    runs = h.wait_until(lambda: read_runs(runs_file), 10, "the function's own record of its run")
    assert [r["rid"] for r in runs] == [rid], "the function must see the 202's request id as context.aws_request_id"
    assert runs[0]["event"] == event

    assert req.method == "POST"
    assert req.headers.get("content-type", "").startswith("application/json"), req.headers
    assert req.headers.get("x-lambent-requestid") == rid, req.headers
    assert req.headers.get("x-lambent-condition") == "Success", req.headers
    rec = req.json
    check_record(rec, rid=rid, name=name, condition="Success", count=1, payload=event)
    assert rec["responsePayload"] == {"ok": True, "tag": event["tag"], "n": 7, "request_id": rid}

    time.sleep(1)
    assert len(hook.received(path)) == 1, "one event, one success record"
    assert len(read_runs(runs_file)) == 1, "a successful event runs once"


def test_invoke_async_operation_queues_the_event(lam, hook):
    name = new_fn(lam, "as-legacy")
    path = f"/ok/{name}"
    configure(lam, name, on_success=hook.arn(path))
    runs_file = h.scratch_path("as-legacy")
    event = {"tag": h.uniq("legacy"), "record": str(runs_file)}
    resp = lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps(event).encode())
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202, resp["ResponseMetadata"]
    assert resp["Status"] == 202, resp
    rid = h.request_id(resp)

    [req] = hook.wait_for(path, 1, timeout=30)
    runs = h.wait_until(lambda: read_runs(runs_file), 10, "the InvokeAsync event to run")
    assert [r["rid"] for r in runs] == [rid]
    assert runs[0]["event"] == event
    check_record(req.json, rid=rid, name=name, condition="Success", count=1, payload=event)


# --------------------------------------------------------------------------
# retries


@pytest.mark.parametrize("configured", [0, 1, 2, None], ids=["retries0", "retries1", "retries2", "default"])
def test_failing_function_is_retried_max_retry_attempts_times(lam, logs, hook, configured):
    retries = 2 if configured is None else configured  # AWS's default is 2
    name = new_fn(lam, f"as-retry{configured}")
    path = f"/fail/{name}"
    configure(lam, name, retries=configured, on_failure=hook.arn(path), on_success=hook.arn(path + "/ok"))
    tag = h.uniq("boom")
    runs_file = h.scratch_path("as-retry")
    event = {"tag": tag, "record": str(runs_file), "raise": f"planned failure {tag}"}
    rid = send(lam, name, event)

    [req] = hook.wait_for(path, 1, timeout=30)
    assert req.headers.get("x-lambent-requestid") == rid, req.headers
    assert req.headers.get("x-lambent-condition") == "RetriesExhausted", req.headers
    rec = req.json
    check_record(
        rec, rid=rid, name=name, condition="RetriesExhausted", count=retries + 1, payload=event, function_error="Unhandled"
    )
    assert rec["responsePayload"]["errorType"] == "ValueError", rec["responsePayload"]
    assert rec["responsePayload"]["errorMessage"] == event["raise"], rec["responsePayload"]

    # Attempts, counted from the function's own log. Wait long enough for one
    # more retry to show up if there (wrongly) was one.
    h.wait_until(lambda: len(attempt_lines(logs, name, tag)) >= retries + 1, 10, "every attempt's log line")
    time.sleep(RETRY_DELAY * 2**retries + 1.5)
    lines = attempt_lines(logs, name, tag)
    assert len(lines) == retries + 1, f"expected {retries + 1} attempts, the log shows {len(lines)}: {lines}"
    assert {line.split()[-1] for line in lines} == {rid}, f"every attempt must carry the 202's request id {rid}: {lines}"
    starts = h.log_messages(logs, name, f'"START RequestId: {rid}"')
    assert len(starts) == retries + 1, starts

    assert len(hook.received(path)) == 1, "one failure record per event"
    assert hook.received(path + "/ok") == [], "a failed event has no success record"

    runs = read_runs(runs_file)
    assert [r["rid"] for r in runs] == [rid] * (retries + 1)
    if retries == 2:
        t = [r["t"] for r in runs]
        # first retry after --async-retry-delay, doubling after that
        assert t[1] - t[0] >= RETRY_DELAY * 0.9, f"first retry {t[1] - t[0]:.2f}s after the first attempt"
        assert t[2] - t[1] >= 2 * RETRY_DELAY * 0.9, f"second retry {t[2] - t[1]:.2f}s after the first retry"


def test_timeout_counts_as_a_function_error(lam, logs, hook):
    name = new_fn(lam, "as-timeout", timeout=1)
    path = f"/fail/{name}"
    configure(lam, name, retries=1, on_failure=hook.arn(path))
    tag = h.uniq("slow")
    event = {"tag": tag, "sleep": 3}
    rid = send(lam, name, event)

    [req] = hook.wait_for(path, 1, timeout=40)
    rec = req.json
    check_record(rec, rid=rid, name=name, condition="RetriesExhausted", count=2, payload=event, function_error="Unhandled")
    assert rec["responsePayload"]["errorType"] == "Sandbox.Timedout", rec["responsePayload"]
    assert "Task timed out after 1.00 seconds" in rec["responsePayload"]["errorMessage"], rec["responsePayload"]
    lines = h.wait_until(lambda: (lambda ls: ls if len(ls) >= 2 else None)(attempt_lines(logs, name, tag)), 10, "2 attempts")
    assert len(lines) == 2, lines


def test_retry_config_is_per_qualifier(lam, logs, hook):
    name = new_fn(lam, "as-qual")
    version = lam.publish_version(FunctionName=name)["Version"]
    path = f"/fail/{name}"
    configure(lam, name, retries=2, on_failure=hook.arn(path + "/latest"))
    configure(lam, name, retries=0, on_failure=hook.arn(path + "/v"), qualifier=version)
    tag = h.uniq("qual")
    event = {"tag": tag, "raise": "versioned failure"}
    rid = send(lam, name, event, Qualifier=version)

    [req] = hook.wait_for(path + "/v", 1, timeout=30)
    rec = req.json
    check_record(
        rec, rid=rid, name=name, condition="RetriesExhausted", count=1, payload=event, qualifier=version, function_error="Unhandled"
    )
    time.sleep(RETRY_DELAY * 2 + 1)
    assert hook.received(path + "/latest") == [], "the $LATEST config must not apply to version " + version
    assert len(attempt_lines(logs, name, tag)) == 1


def test_event_age_exceeded_ends_retries_early(tmp_path, hook):
    # The next retry (90 s away) would come after the 60 s age limit: the event fails at once.
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log", ["--async-retry-delay", "90"])
    try:
        lam = srv.client()
        logs = h.logs_client(srv)
        name = new_fn(lam, "as-age")
        path = f"/age/{name}"
        configure(lam, name, retries=2, age=60, on_failure=hook.arn(path))
        tag = h.uniq("aged")
        event = {"tag": tag, "raise": "too old to retry"}
        start = time.monotonic()
        rid = send(lam, name, event)

        [req] = hook.wait_for(path, 1, timeout=30, server=srv)
        took = time.monotonic() - start
        rec = req.json
        check_record(
            rec, rid=rid, name=name, condition="EventAgeExceeded", count=1, payload=event, function_error="Unhandled"
        )
        assert rec["responsePayload"]["errorMessage"] == "too old to retry", rec["responsePayload"]
        assert req.headers.get("x-lambent-condition") == "EventAgeExceeded", req.headers
        assert took < 30, f"the failure came {took:.0f}s after the invoke"

        time.sleep(1.5)
        lines = attempt_lines(logs, name, tag)
        assert len(lines) == 1, f"the function must run exactly once: {lines}"

        failed = [e for e in events_cli(srv, name, "--state", "failed") if e["RequestId"] == rid]
        assert len(failed) == 1, failed
        assert failed[0]["Condition"] == "EventAgeExceeded", failed[0]
    finally:
        srv.terminate()


# --------------------------------------------------------------------------
# throttles


def test_throttled_events_wait_for_concurrency(lam, hook):
    name = new_fn(lam, "as-throttle", timeout=15)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    path = f"/throttle/{name}"
    # no retries: a throttle wrongly counted as an attempt would fail the event
    configure(lam, name, retries=0, on_success=hook.arn(path + "/ok"), on_failure=hook.arn(path + "/fail"))

    thread, result, held_at = hold_slot(lam, name, 4, h.scratch_path("as-hold"))
    runs_file = h.scratch_path("as-throttled")
    tag = h.uniq("thr")
    rids = [send(lam, name, {"tag": tag, "n": i, "record": str(runs_file)}) for i in range(5)]
    finish_hold(thread, result)

    reqs = hook.wait_for(path + "/ok", len(rids), timeout=30)
    assert sorted(record_rid(r) for r in reqs) == sorted(rids)
    for r in reqs:
        ctx = r.json["requestContext"]
        assert ctx["condition"] == "Success" and ctx["approximateInvokeCount"] == 1, ctx
    assert hook.received(path + "/fail") == [], "a throttled event must wait, not fail"
    runs = read_runs(runs_file)
    assert sorted(r["rid"] for r in runs) == sorted(rids), "each throttled event runs exactly once"
    first = min(r["t"] for r in runs)
    assert first >= held_at + 4 - 0.2, f"an event ran {held_at + 4 - first:.2f}s before the only slot was free"


def test_reserved_concurrency_zero_goes_straight_to_failure(lam, logs, hook):
    name = new_fn(lam, "as-zero")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    path = f"/zero/{name}"
    configure(lam, name, on_failure=hook.arn(path))
    runs_file = h.scratch_path("as-zero")
    tag = h.uniq("zero")
    event = {"tag": tag, "record": str(runs_file)}
    rid = send(lam, name, event)  # queued even though the function may not run

    [req] = hook.wait_for(path, 1, timeout=20)
    rec = req.json
    assert rec["requestContext"]["requestId"] == rid, rec
    assert rec["requestContext"]["functionArn"] == h.function_arn(name, "$LATEST"), rec
    assert rec["requestContext"]["condition"] in ("RetriesExhausted", "EventAgeExceeded"), rec
    assert rec["requestPayload"] == event
    assert "responseContext" not in rec and "responsePayload" not in rec, f"the function never ran: {rec}"
    assert not runs_file.exists(), "a function with reserved concurrency 0 must not run"
    assert attempt_lines(logs, name, tag) == []


# --------------------------------------------------------------------------
# destinations: functions, dead letters, webhooks


def test_function_destination(lam):
    dest = new_fn(lam, "as-dest", code=DEST_APP)
    src = new_fn(lam, "as-src")
    configure(lam, src, retries=0, on_success=h.function_arn(dest), on_failure=h.function_arn(dest, "$LATEST"))
    ok_out, fail_out = h.scratch_path("as-dest-ok"), h.scratch_path("as-dest-fail")
    ok_event = {"tag": h.uniq("fd"), "n": 1, "dest_out": str(ok_out)}
    fail_event = {"tag": h.uniq("fd"), "dest_out": str(fail_out), "raise": "for the destination function"}
    rid_ok = send(lam, src, ok_event)
    rid_fail = send(lam, src, fail_event)

    got = json.loads(h.wait_for_file(ok_out, timeout=30))
    rec = got["event"]
    check_record(rec, rid=rid_ok, name=src, condition="Success", count=1, payload=ok_event)
    assert rec["responsePayload"] == {"ok": True, "tag": ok_event["tag"], "n": 1, "request_id": rid_ok}
    assert got["request_id"] != rid_ok, "the destination runs as an invocation of its own"

    got = json.loads(h.wait_for_file(fail_out, timeout=30))
    rec = got["event"]
    check_record(rec, rid=rid_fail, name=src, condition="RetriesExhausted", count=1, payload=fail_event, function_error="Unhandled")
    assert rec["responsePayload"]["errorMessage"] == "for the destination function", rec["responsePayload"]


def test_dead_letter_webhook_gets_the_original_event(lam, hook):
    path = f"/dlq/{uuid.uuid4().hex}"
    target = hook.arn(path)
    name = new_fn(lam, "as-dlq", DeadLetterConfig={"TargetArn": target})
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf.get("DeadLetterConfig") == {"TargetArn": target}, "the configuration must show the DeadLetterConfig"
    configure(lam, name, retries=0)
    event = {"tag": h.uniq("dl"), "raise": "dead letter please", "data": [1, 2, {"three": 3}]}
    raw = json.dumps(event, separators=(",", ":")).encode()
    rid = send(lam, name, raw)

    [req] = hook.wait_for(path, 1, timeout=30)
    assert req.method == "POST"
    assert json.loads(req.body) == event, "the dead-letter target gets the original event, not a record"
    assert req.headers.get("content-type", "").startswith("application/json"), req.headers
    assert req.headers.get("x-lambent-requestid") == rid, req.headers
    assert req.headers.get("x-lambent-errorcode"), req.headers
    assert "dead letter please" in req.headers.get("x-lambent-errormessage", ""), req.headers

    # UpdateFunctionConfiguration moves it; a bare http:// URL is a webhook too
    path2 = f"/dlq2/{uuid.uuid4().hex}"
    up = lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": hook.url(path2)})
    assert up.get("DeadLetterConfig") == {"TargetArn": hook.url(path2)}
    assert lam.get_function_configuration(FunctionName=name).get("DeadLetterConfig") == {"TargetArn": hook.url(path2)}
    event2 = {"tag": h.uniq("dl"), "raise": "second dead letter"}
    rid2 = send(lam, name, event2)
    [req2] = hook.wait_for(path2, 1, timeout=30)
    assert req2.json == event2
    assert req2.headers.get("x-lambent-requestid") == rid2
    assert len(hook.received(path)) == 1, "the old dead-letter target got another event"


def test_webhook_non_2xx_is_retried(lam, hook):
    name = new_fn(lam, "as-flaky")
    path = f"/flaky/{name}"
    hook.fail_next(path, 2, status=503)
    configure(lam, name, on_success=hook.arn(path))
    event = {"tag": h.uniq("flaky")}
    rid = send(lam, name, event)
    [req] = hook.wait_for(path, 1, timeout=60)
    tries = hook.received(path, include_failed=True)
    assert [t.status for t in tries][:3] == [503, 503, 200], [t.status for t in tries]
    assert len({t.body for t in tries}) == 1, "every delivery attempt carries the same record"
    check_record(req.json, rid=rid, name=name, condition="Success", count=1, payload=event)


def test_down_webhook_keeps_records_and_blocks_nobody(lam, hook):
    port = h.free_port()  # nothing listens here yet
    late_path = "/late"
    slow = new_fn(lam, "as-down")
    configure(lam, slow, on_success=f"http://127.0.0.1:{port}{late_path}")
    other = new_fn(lam, "as-up")
    configure(lam, other, on_success=hook.arn(f"/up/{other}"))

    runs_file = h.scratch_path("as-down")
    event = {"tag": h.uniq("late"), "record": str(runs_file)}
    rid_late = send(lam, slow, event)
    h.wait_until(lambda: read_runs(runs_file), 20, "the function whose destination is down to run")

    # meanwhile other functions' events complete promptly
    start = time.monotonic()
    rids = [send(lam, other, {"n": i}) for i in range(5)]
    reqs = hook.wait_for(f"/up/{other}", len(rids), timeout=15)
    assert sorted(record_rid(r) for r in reqs) == sorted(rids)
    assert time.monotonic() - start < 15

    time.sleep(2)
    late = h.Webhook(port=port)
    try:
        [req] = late.wait_for(late_path, 1, timeout=60)
        check_record(req.json, rid=rid_late, name=slow, condition="Success", count=1, payload=event)
        assert req.headers.get("x-lambent-requestid") == rid_late
    finally:
        late.stop()
    assert len(read_runs(runs_file)) == 1, "delivering a kept record must not run the function again"


# --------------------------------------------------------------------------
# RabbitMQ and NATS


def amqp_connect():
    import pika

    try:
        return pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} (set LAMBENT_TEST_AMQP_URL): {exc!r}")


def amqp_get(conn, channel, queue, timeout):
    """basic_get until a message arrives: (properties, body) or None."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return props, body
        if time.monotonic() > deadline:
            return None
        conn.sleep(0.1)


async def nats_connect():
    import nats

    try:
        return await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    except Exception as exc:
        pytest.fail(f"NATS is not reachable at {NATS_URL} (set LAMBENT_TEST_NATS_URL): {exc!r}")


def test_connection_cli_put_ls_rm(server, lam):
    conn = h.uniq("conn")
    lambent(server, "connection", "put", conn, NATS_URL)
    assert conn in lambent(server, "connection", "ls").stdout
    listed = as_json(lambent(server, "connection", "ls", "--output", "json"))
    assert conn in json.dumps(listed), listed
    lambent(server, "connection", "put", conn, NATS_URL)  # put again replaces

    name = new_fn(lam, "as-conn")
    target = f"arn:lambent:nats:::{conn}/subject/lambent.e2e.{uuid.uuid4().hex}"
    got = configure(lam, name, on_success=target)
    assert got["DestinationConfig"]["OnSuccess"]["Destination"] == target
    lam.delete_function_event_invoke_config(FunctionName=name)

    lambent(server, "connection", "rm", conn)
    assert conn not in lambent(server, "connection", "ls").stdout
    assert conn not in json.dumps(as_json(lambent(server, "connection", "ls", "--output", "json")))
    h.expect_error(
        configure, lam, name, on_success=target, status=400, codes="InvalidParameterValueException"
    )


def test_rabbitmq_destinations_and_dead_letters(server, lam):
    import pika

    conn_name = h.uniq("amqp")
    lambent(server, "connection", "put", conn_name, AMQP_URL)
    amqp = amqp_connect()
    ch = amqp.channel()
    q_ok, q_fail, q_dlq = h.uniq("lambent-e2e-ok"), h.uniq("lambent-e2e-fail"), h.uniq("lambent-e2e-dlq")
    routing_key = h.uniq("rk")
    for q in (q_ok, q_fail, q_dlq):
        ch.queue_declare(q, durable=True, arguments={"x-expires": 600_000})  # gone in 10 min if left behind
    ch.queue_bind(q_fail, "amq.direct", routing_key=routing_key)
    try:
        name = new_fn(lam, "as-amqp")
        configure(
            lam,
            name,
            retries=0,
            on_success=f"arn:lambent:rabbitmq:::{conn_name}/queue/{q_ok}",
            on_failure=f"arn:lambent:rabbitmq:::{conn_name}/exchange/amq.direct/{routing_key}",
        )
        ok_event = {"tag": h.uniq("mq"), "n": 3}
        fail_event = {"tag": h.uniq("mq"), "raise": "to the exchange"}
        rid_ok = send(lam, name, ok_event)
        rid_fail = send(lam, name, fail_event)

        got = amqp_get(amqp, ch, q_ok, 30)
        assert got, f"nothing arrived on queue {q_ok}\n{server.log_tail()}"
        props, body = got
        check_record(json.loads(body), rid=rid_ok, name=name, condition="Success", count=1, payload=ok_event)
        assert props.message_id == rid_ok, props
        assert props.delivery_mode == 2, "records are published persistent"
        headers = str_headers(props.headers)
        assert headers.get("RequestID") == rid_ok and headers.get("Condition") == "Success", headers

        got = amqp_get(amqp, ch, q_fail, 30)
        assert got, f"nothing arrived through amq.direct/{routing_key}\n{server.log_tail()}"
        props, body = got
        rec = json.loads(body)
        check_record(rec, rid=rid_fail, name=name, condition="RetriesExhausted", count=1, payload=fail_event, function_error="Unhandled")
        assert props.message_id == rid_fail and props.delivery_mode == 2, props
        headers = str_headers(props.headers)
        assert headers.get("RequestID") == rid_fail and headers.get("Condition") == "RetriesExhausted", headers

        # a dead-letter queue on RabbitMQ: the original event, attributes in headers
        dl_name = new_fn(lam, "as-amqp-dlq", DeadLetterConfig={"TargetArn": f"arn:lambent:rabbitmq:::{conn_name}/queue/{q_dlq}"})
        configure(lam, dl_name, retries=0)
        dl_event = {"tag": h.uniq("mqdl"), "raise": "dead letter on rabbit"}
        rid_dl = send(lam, dl_name, dl_event)
        got = amqp_get(amqp, ch, q_dlq, 30)
        assert got, f"nothing arrived on dead-letter queue {q_dlq}\n{server.log_tail()}"
        props, body = got
        assert json.loads(body) == dl_event
        assert props.message_id == rid_dl and props.delivery_mode == 2, props
        headers = str_headers(props.headers)
        assert headers.get("RequestID") == rid_dl, headers
        assert str(headers.get("ErrorCode", "")), headers
        assert "dead letter on rabbit" in str(headers.get("ErrorMessage", "")), headers

        time.sleep(0.5)
        for q in (q_ok, q_fail, q_dlq):
            assert amqp_get(amqp, ch, q, 0.5) is None, f"more than one message on {q}"
    finally:
        for q in (q_ok, q_fail, q_dlq):
            try:
                ch.queue_delete(q)
            except pika.exceptions.AMQPError:
                pass
        amqp.close()


def test_nats_subject_destination(server, lam):
    import nats.errors

    conn_name = h.uniq("nats")
    lambent(server, "connection", "put", conn_name, NATS_URL)
    subject = f"lambent.e2e.{uuid.uuid4().hex}"
    target = f"arn:lambent:nats:::{conn_name}/subject/{subject}"
    name = new_fn(lam, "as-nats")
    configure(lam, name, retries=0, on_success=target, on_failure=target)
    ok_event = {"tag": h.uniq("nats"), "n": 5}
    fail_event = {"tag": h.uniq("nats"), "raise": "over nats"}

    async def run():
        nc = await nats_connect()
        try:
            sub = await nc.subscribe(subject)
            await nc.flush()
            rids = (send(lam, name, ok_event), send(lam, name, fail_event))
            msgs = []
            deadline = time.monotonic() + 30
            while len(msgs) < 2:
                try:
                    msgs.append(await sub.next_msg(timeout=max(0.1, deadline - time.monotonic())))
                except nats.errors.TimeoutError:
                    break
            return rids, msgs
        finally:
            await nc.close()

    (rid_ok, rid_fail), msgs = asyncio.run(run())
    assert len(msgs) == 2, f"{len(msgs)} of 2 records arrived on {subject}\n{server.log_tail()}"
    by_rid = {json.loads(m.data)["requestContext"]["requestId"]: m for m in msgs}
    assert set(by_rid) == {rid_ok, rid_fail}, by_rid
    m = by_rid[rid_ok]
    check_record(json.loads(m.data), rid=rid_ok, name=name, condition="Success", count=1, payload=ok_event)
    assert (m.headers or {}).get("RequestID") == rid_ok and m.headers.get("Condition") == "Success", m.headers
    m = by_rid[rid_fail]
    check_record(json.loads(m.data), rid=rid_fail, name=name, condition="RetriesExhausted", count=1, payload=fail_event, function_error="Unhandled")
    assert (m.headers or {}).get("RequestID") == rid_fail and m.headers.get("Condition") == "RetriesExhausted", m.headers


def test_nats_jetstream_destination(server, lam):
    conn_name = h.uniq("js")
    lambent(server, "connection", "put", conn_name, NATS_URL)
    hexid = uuid.uuid4().hex
    stream, subject = f"LAMBENT_E2E_{hexid}", f"lambent-js.{hexid}"
    name = new_fn(lam, "as-js")
    event = {"tag": h.uniq("js"), "n": 9}

    async def run():
        nc = await nats_connect()
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        try:
            configure(lam, name, on_success=f"arn:lambent:nats:::{conn_name}/jetstream/{subject}")
            rid = send(lam, name, event)
            deadline = time.monotonic() + 30
            while (await js.stream_info(stream)).state.messages < 1:
                if time.monotonic() > deadline:
                    return rid, None, 0
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            count = (await js.stream_info(stream)).state.messages
            return rid, await js.get_msg(stream, 1), count
        finally:
            try:
                await js.delete_stream(stream)
            finally:
                await nc.close()

    rid, msg, count = asyncio.run(run())
    assert msg is not None, f"nothing was stored in JetStream stream {stream}\n{server.log_tail()}"
    assert count == 1, f"{count} messages for one event"
    assert msg.subject == subject
    check_record(json.loads(msg.data), rid=rid, name=name, condition="Success", count=1, payload=event)
    assert (msg.headers or {}).get("RequestID") == rid and msg.headers.get("Condition") == "Success", msg.headers


# --------------------------------------------------------------------------
# bad input


def padded(size):
    head, tail = b'{"pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_async_payload_limit(lam):
    name = new_fn(lam, "as-big")
    for size in (ASYNC_MAX_PAYLOAD - 1, ASYNC_MAX_PAYLOAD):
        send(lam, name, padded(size))
    for size in (ASYNC_MAX_PAYLOAD + 1, 1024 * 1024 + 1):
        h.expect_error(
            lam.invoke,
            FunctionName=name,
            InvocationType="Event",
            Payload=padded(size),
            status=413,
            codes="RequestTooLargeException",
        )
    # the async limit is not the sync one
    h.invoke_ok(lam, name, raw=padded(ASYNC_MAX_PAYLOAD + 1))


BAD_TARGETS = {
    "missing-function": lambda: h.function_arn(h.uniq("as-nobody")),
    "missing-function-qualified": lambda: h.function_arn(h.uniq("as-nobody"), "$LATEST"),
    "unknown-rabbitmq-connection": lambda: f"arn:lambent:rabbitmq:::{h.uniq('noconn')}/queue/q",
    "unknown-nats-connection": lambda: f"arn:lambent:nats:::{h.uniq('noconn')}/subject/s",
    "sqs": lambda: f"arn:aws:sqs:{h.REGION}:{h.ACCOUNT}:some-queue",
    "sns": lambda: f"arn:aws:sns:{h.REGION}:{h.ACCOUNT}:some-topic",
    "garbage": lambda: "definitely not a destination",
    "webhook-not-http": lambda: "arn:lambent:webhook:::ftp://127.0.0.1/x",
}


@pytest.mark.parametrize("kind", list(BAD_TARGETS))
def test_bad_targets_are_refused(lam, kind):
    target = BAD_TARGETS[kind]()
    name = new_fn(lam, "as-bad")
    for which in ("OnSuccess", "OnFailure"):
        h.expect_error(
            lam.put_function_event_invoke_config,
            FunctionName=name,
            DestinationConfig={which: {"Destination": target}},
            status=400,
            codes="InvalidParameterValueException",
        )
    h.expect_error(
        lam.get_function_event_invoke_config, FunctionName=name, status=404, codes="ResourceNotFoundException"
    )
    # as a dead-letter target: on CreateFunction (nothing is created) and UpdateFunctionConfiguration
    other = h.uniq("as-bad-dlq")
    h.expect_error(
        h.create_function,
        lam,
        other,
        h.py_zip({"app.py": APP}),
        "python3.12",
        "app.handler",
        DeadLetterConfig={"TargetArn": target},
        status=400,
        codes="InvalidParameterValueException",
    )
    h.assert_function_absent(lam, other)
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=name,
        DeadLetterConfig={"TargetArn": target},
        status=400,
        codes="InvalidParameterValueException",
    )
    assert not lam.get_function_configuration(FunctionName=name).get("DeadLetterConfig", {}).get("TargetArn")


# --------------------------------------------------------------------------
# visibility: lambent events, /metrics, lambent usage


def test_events_cli_lists_failed_events(server, lam):
    name = new_fn(lam, "as-failed")
    configure(lam, name, retries=0)
    message = f"kept for inspection {uuid.uuid4().hex}"
    rid = send(lam, name, {"raise": message})

    def failed():
        return [e for e in events_cli(server, name, "--state", "failed") if e["RequestId"] == rid]

    [entry] = h.wait_until(failed, 20, f"event {rid} to be listed as failed", interval=0.3, server=server)
    assert entry["FunctionName"] == name, entry
    assert entry["Qualifier"] == "$LATEST", entry
    assert entry["State"] == "failed", entry
    assert entry["Attempts"] == 1, entry
    assert entry["Condition"] == "RetriesExhausted", entry
    assert message in json.dumps(entry["LastError"]), entry
    assert entry["AcceptedAt"], entry
    assert entry["FailedAt"] >= entry["AcceptedAt"], entry
    assert "NextAttemptAt" not in entry, entry
    everything = events_cli(server, name, "--state", "failed")
    assert all(e["State"] == "failed" and e["FunctionName"] == name for e in everything), everything
    assert rid not in [e["RequestId"] for e in events_cli(server, name, "--state", "pending")]
    assert rid in lambent(server, "events", name, "--state", "failed").stdout


def test_pending_events_visible_in_cli_metrics_and_usage(server, lam, hook):
    name = new_fn(lam, "as-pending", timeout=20)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    path = f"/pending/{name}"
    configure(lam, name, retries=0, on_success=hook.arn(path))
    thread, result, _ = hold_slot(lam, name, 8, h.scratch_path("as-hold"))
    try:
        rids = [send(lam, name, {"n": i}) for i in range(3)]

        def pending():
            got = {e["RequestId"]: e for e in events_cli(server, name, "--state", "pending")}
            return got if set(rids) <= set(got) else None

        listed = h.wait_until(pending, 5, "the throttled events to be listed as pending", interval=0.2, server=server)
        for rid in rids:
            e = listed[rid]
            assert e["State"] == "pending" and e["FunctionName"] == name and e["Qualifier"] == "$LATEST", e
            assert e["Attempts"] == 0, f"a throttle is not an attempt: {e}"
            assert e["AcceptedAt"], e
            assert "NextAttemptAt" in e, e
        assert all(e["State"] == "pending" for e in listed.values()), listed
        text = lambent(server, "events", name).stdout
        assert all(rid in text for rid in rids), text

        _, samples = scrape(server)
        depth = value(samples, "lambent_async_queue_depth", function=name)
        assert depth > 0, f"lambent_async_queue_depth{{function={name!r}}} is {depth}"
        assert ("lambent_async_oldest_event_age_seconds", frozenset({("function", name)})) in samples
        assert value(samples, "lambent_async_oldest_event_age_seconds", function=name) >= 0

        usage = as_json(lambent(server, "usage", "--output", "json"))
        queues = {q["FunctionName"]: q for q in usage.get("AsyncQueues", [])}
        assert name in queues, usage.get("AsyncQueues")
        assert queues[name]["Depth"] > 0 and queues[name]["OldestEventAgeSeconds"] >= 0, queues[name]
        assert thread.is_alive(), "the checks took longer than the slot was held"
    finally:
        finish_hold(thread, result)

    reqs = hook.wait_for(path, len(rids), timeout=30)
    assert sorted(record_rid(r) for r in reqs) == sorted(rids)

    def drained():
        _, samples = scrape(server)
        left = [e for e in events_cli(server, name, "--state", "pending") if e["RequestId"] in rids]
        return not left and value(samples, "lambent_async_queue_depth", function=name) == 0

    h.wait_until(drained, 10, "the queue to drain", interval=0.3)
    usage = as_json(lambent(server, "usage", "--output", "json"))
    queues = {q["FunctionName"]: q for q in usage.get("AsyncQueues", [])}
    assert queues.get(name, {"Depth": 0})["Depth"] == 0, queues[name]


# --------------------------------------------------------------------------
# shutdown and crashes


def test_graceful_shutdown_keeps_queued_events(tmp_path, hook):
    data = tmp_path / "data"
    args = ["--async-retry-delay", str(RETRY_DELAY)]
    srv = h.start_server(data, tmp_path / "server.log", args)
    srv2 = None
    try:
        lam = srv.client()
        name = new_fn(lam, "as-term")
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
        path = f"/term/{name}"
        configure(lam, name, on_success=hook.arn(path))
        runs_file = h.scratch_path("as-term")
        rids = [send(lam, name, {"n": i, "sleep": 1.5, "record": str(runs_file)}) for i in range(4)]
        h.wait_until(lambda: read_runs(runs_file), 20, "the first queued event to start", server=srv)

        code = srv.terminate()
        assert code == 0, f"lambent serve exited with {code} on SIGTERM:\n{srv.log_tail()}"
        before = {record_rid(r) for r in hook.received(path)}
        assert len(before) < len(rids), "the server ran its whole queue before exiting: nothing was left to keep"

        srv2 = h.start_server(data, tmp_path / "server2.log", args)
        h.wait_until(
            lambda: set(rids) <= {record_rid(r) for r in hook.received(path)},
            40,
            "every queued event to complete after the restart",
            server=srv2,
        )
        for r in hook.received(path):
            assert r.json["requestContext"]["condition"] == "Success", r.json
    finally:
        srv.terminate()
        if srv2 is not None:
            srv2.terminate()


def test_kill9_loses_no_accepted_event(tmp_path, capsys):
    """=== CRASH TEST === enqueue CRASH_EVENTS events while `kill -9`-ing the
    server three times; every event that got a 202 must complete."""

    def say(msg):
        with capsys.disabled():
            print(f"\n[crash test] {msg}", end="", flush=True)

    data, log = tmp_path / "data", tmp_path / "server.log"
    args = ["--async-retry-delay", str(RETRY_DELAY)]
    pid_dir = tmp_path / "pids"  # this test's function processes, apart from the suite's
    pid_dir.mkdir()
    sink = h.Webhook()
    seed = int(os.environ.get("LAMBENT_TEST_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    srv = h.start_server(data, log, args)
    servers = [srv]
    stop = threading.Event()
    lock = threading.Lock()
    current = {"gen": 0, "endpoint": srv.endpoint, "creds": srv.credentials}
    accepted: set[str] = set()
    counters = collections.Counter()
    index = iter(range(1 << 40))
    try:
        lam = srv.client()
        name = h.uniq("as-crash")
        h.create_function(
            lam, name, h.rust_zip(), "provided.al2023", "bootstrap", env={"LAMBENT_TEST_PID_DIR": str(pid_dir)}, Timeout=10
        )
        configure(lam, name, on_success=sink.arn("/ok"), on_failure=sink.arn("/failed"))

        def producer():
            gen, client = -1, None
            while not stop.is_set():
                with lock:
                    if len(accepted) >= CRASH_EVENTS:
                        return
                    if current["gen"] != gen:
                        gen, endpoint, creds = current["gen"], current["endpoint"], current["creds"]
                        client = None
                    i = next(index)
                if client is None:
                    client = boto3.session.Session().client(
                        "lambda",
                        endpoint_url=endpoint,
                        region_name=h.REGION,
                        aws_access_key_id=creds["access_key_id"],
                        aws_secret_access_key=creds["secret_access_key"],
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10),
                    )
                try:
                    resp = client.invoke(
                        FunctionName=name, InvocationType="Event", Payload=json.dumps({"i": i, "quiet": True}).encode()
                    )
                except Exception:
                    with lock:
                        counters["errors"] += 1
                    time.sleep(0.02)
                    continue
                with lock:
                    if resp["StatusCode"] == 202:
                        accepted.add(h.request_id(resp))
                    else:
                        counters[f"status {resp['StatusCode']}"] += 1

        say(f"seed {seed}; enqueuing {CRASH_EVENTS} events with 16 clients")
        started = time.monotonic()
        pool = ThreadPoolExecutor(16, thread_name_prefix="crash-producer")
        futures = [pool.submit(producer) for _ in range(16)]
        enqueue_deadline = time.monotonic() + 150
        enqueued = None

        def finish_enqueuing():
            while not all(f.done() for f in futures) and time.monotonic() < enqueue_deadline:
                time.sleep(0.2)
            stop.set()  # enough: check what was accepted
            pool.shutdown(wait=True)
            for f in futures:
                f.result()  # a producer's own bug shows here
            with lock:
                snapshot = set(accepted)
            say(
                f"{len(snapshot)} accepted in {time.monotonic() - started:.1f}s; "
                f"calls refused or failed (server down): {dict(counters)}"
            )
            return snapshot

        # two crashes while events pour in, the last one while the queue drains
        # Each kill waits for a random point of progress, so it lands mid-stream: the first
        # two at 10-30 % and 40-70 % of the events accepted, the last once 20-60 % of them
        # completed; a random extra delay keeps the moment unaligned.
        for k in range(3):
            if k == 2:
                enqueued = finish_enqueuing()
                goal = int(rng.uniform(0.2, 0.6) * len(enqueued))
                progress = lambda: len({record_rid(r) for r in sink.received("/ok")})  # noqa: E731
            else:
                goal = int(rng.uniform(*[(0.1, 0.3), (0.4, 0.7)][k]) * CRASH_EVENTS)
                progress = lambda: len(accepted)  # noqa: E731
            wait_for_progress = time.monotonic() + 90
            while progress() < goal and time.monotonic() < wait_for_progress:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            with lock:
                n = len(accepted)
            srv.proc.kill()
            srv.proc.wait()
            say(f"kill -9 #{k + 1} at {time.monotonic() - started:.1f}s, {n} accepted so far, {len(sink.received('/ok'))} completed")
            srv = h.start_server(data, log, args)
            servers.append(srv)
            with lock:
                current.update(gen=k + 1, endpoint=srv.endpoint, creds=srv.credentials)
            say(f"restarted on port {srv.port} ({time.monotonic() - started:.1f}s)")
        accepted = enqueued

        deadline = time.monotonic() + 180
        last_report = 0.0
        while True:
            seen = {record_rid(r) for r in sink.received("/ok")}
            missing = accepted - seen
            if not missing or time.monotonic() > deadline:
                break
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                say(f"{len(seen)} completed, {len(missing)} accepted events still missing")
            time.sleep(0.5)

        ok = sink.received("/ok")
        per_rid = collections.Counter(record_rid(r) for r in ok)
        duplicates = sum(c - 1 for c in per_rid.values())
        failed = sink.received("/failed")
        say(
            f"RESULT: accepted {len(accepted)}, completed {len(set(per_rid) & accepted)}, missing {len(missing)}, "
            f"duplicate success records {duplicates}, completed but never acknowledged {len(set(per_rid) - accepted)}, "
            f"failure records {len(failed)}, total {time.monotonic() - started:.1f}s\n"
        )
        assert not missing, (
            f"{len(missing)} of {len(accepted)} accepted events never completed (e.g. {sorted(missing)[:5]}); "
            f"{len(failed)} failure records, e.g. {[r.json['requestContext'] for r in failed[:3]]}\n{srv.log_tail()}"
        )
        assert len(accepted) >= CRASH_EVENTS, f"only {len(accepted)} of {CRASH_EVENTS} events were accepted in 150 s"
    finally:
        stop.set()
        for s in servers:
            if s.proc.poll() is None:
                s.terminate()
        sink.stop()
        # processes of the killed servers' environments, if any outlived them
        for p in pid_dir.glob("*.pid"):
            try:
                pid, start = int(p.stem), p.read_text().strip()
            except (ValueError, OSError):
                continue
            if start and h.is_alive(pid, start):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
