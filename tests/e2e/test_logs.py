"""Function logs: CloudWatch Logs queries through boto3, `lambent logs --follow`, flood control."""

import os
import queue
import re
import subprocess
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import helpers as h

APP = r'''
import json, sys, time

def handler(event, context):
    mode = event.get("mode", "marker")
    if mode == "marker":
        print(event["marker"])
    elif mode == "sleep":
        print(f"{event['marker']} at {time.time():.3f}")
        time.sleep(event.get("seconds", 3))
        print(f"{event['marker']} done")
    elif mode == "flood":
        line = "x" * 1023 + "\n"
        chunk = line * 1024
        for _ in range(event.get("mb", 50)):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        print(event["marker"])
    return {"ok": True}
'''

STREAM_RE = re.compile(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}")


@pytest.fixture(scope="module")
def logs(server):
    return boto3.client(
        "logs",
        endpoint_url=server.endpoint,
        region_name=h.REGION,
        aws_access_key_id=server.credentials["access_key_id"],
        aws_secret_access_key=server.credentials["secret_access_key"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60),
    )


@pytest.fixture(scope="module")
def fn(lam):
    name = h.uniq("logs")
    h.create_function(lam, name, h.make_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=60, MemorySize=256)
    return name


def wait_for(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def all_events(logs, group, **kw):
    return logs.filter_log_events(logGroupName=group, **kw)["events"]


def test_cloudwatch_queries(lam, logs, fn):
    marker = f"marker-{uuid.uuid4().hex}"
    resp, _ = h.invoke_ok(lam, fn, {"mode": "marker", "marker": marker})
    rid = h.request_id(resp)
    group = f"/aws/lambda/{fn}"

    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["arn"].startswith("arn:aws:logs:")
    assert groups[0]["storedBytes"] > 0
    # Every group, page by page (a page holds 50; the session server has more functions).
    pages = logs.get_paginator("describe_log_groups").paginate()
    assert group in [g["logGroupName"] for page in pages for g in page["logGroups"]]

    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) >= 1
    stream = streams[0]
    assert STREAM_RE.fullmatch(stream["logStreamName"]), stream["logStreamName"]
    assert stream["firstEventTimestamp"] <= stream["lastEventTimestamp"]

    # END/REPORT are written as the invocation ends; allow the writer a moment.
    def events():
        got = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
        messages = [e["message"] for e in got["events"]]
        return messages if any(m.startswith(f"REPORT RequestId: {rid}") for m in messages) else None

    messages = wait_for(events)
    assert messages, "no REPORT line"
    mine = [m for m in messages if rid in m or marker in m]
    kinds = [m.split()[0] if not m.startswith(marker) else "MARKER" for m in mine]
    assert kinds == ["START", "MARKER", "END", "REPORT"], mine
    assert mine[0].startswith(f"START RequestId: {rid} Version: $LATEST")
    assert "Billed Duration" in mine[3]

    found = all_events(logs, group, filterPattern=marker)
    assert [e["message"].strip() for e in found] == [marker]
    assert found[0]["logStreamName"] == stream["logStreamName"]
    assert {"timestamp", "ingestionTime", "eventId"} <= set(found[0])
    assert all_events(logs, group, filterPattern=f'"{marker} no-such-thing"') == []
    assert all_events(logs, group, filterPattern="nothing-matches-this-" + uuid.uuid4().hex) == []
    assert len(all_events(logs, group, filterPattern=f"START {rid}")) == 1

    # Paging with limit and nextToken walks every event exactly once.
    everything = all_events(logs, group)
    seen, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        page = logs.filter_log_events(logGroupName=group, limit=2, **kw)
        seen += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    assert [e["eventId"] for e in seen] == [e["eventId"] for e in everything]

    with pytest.raises(ClientError) as err:
        logs.get_log_events(logGroupName="/aws/lambda/no-such-fn-" + uuid.uuid4().hex, logStreamName="x")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        logs.describe_log_streams(logGroupName="/aws/lambda/no-such-fn-" + uuid.uuid4().hex)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        logs.get_log_events(logGroupName=group, logStreamName="2020/01/01/[$LATEST]" + "0" * 32)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_follow_shows_lines_as_they_are_written(server, lam, fn):
    # A warm-up invocation so the follow below measures log latency, not a cold start.
    h.invoke_ok(lam, fn, {"mode": "marker", "marker": "warm-up"})
    cmd = [str(h.lambent_bin()), "logs", fn, "--follow", "--since", "1s", "--data-dir", str(server.data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBENT_"))}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put((time.time(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        time.sleep(0.5)  # let the follower reach its long poll
        assert proc.poll() is None, proc.stderr.read()
        marker = f"slow-{uuid.uuid4().hex}"
        result = {}
        invoker = threading.Thread(target=lambda: result.update(r=h.invoke_ok(lam, fn, {"mode": "sleep", "marker": marker, "seconds": 3})))
        invoker.start()
        seen_at, line = None, None
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                at, text = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if f"{marker} at " in text:
                seen_at, line = at, text
                break
        assert line is not None, f"--follow never showed the line; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        printed_at = float(line.split(f"{marker} at ")[1].split()[0])
        assert seen_at - printed_at < 1.0, f"line shown {seen_at - printed_at:.2f}s after it was printed"
        assert invoker.is_alive(), "the line was only shown after the invocation ended"
        invoker.join(30)
        done = None
        deadline = time.time() + 5
        while time.time() < deadline and done is None:
            try:
                _, text = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if f"{marker} done" in text:
                done = text
        assert done, "the line after the sleep never showed"
    finally:
        proc.terminate()
        proc.wait(10)


def test_flood_is_rate_limited_and_platform_stays_responsive(lam, logs, fn):
    marker = f"flood-{uuid.uuid4().hex}"
    result = {}

    def flood():
        start = time.monotonic()
        result["resp"] = h.invoke(lam, fn, {"mode": "flood", "marker": marker, "mb": 50})
        result["seconds"] = time.monotonic() - start

    flooder = threading.Thread(target=flood)
    flooder.start()
    time.sleep(0.3)
    other = h.uniq("logs-other")
    h.create_function(lam, other, h.make_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=30)
    start = time.monotonic()
    h.invoke_ok(lam, other, {"mode": "marker", "marker": "still-responsive"})
    assert time.monotonic() - start < 10, "another function was slow while one flooded its log"
    flooder.join(60)
    assert not flooder.is_alive(), "the flooding invocation did not finish"
    resp, body = result["resp"]
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
    assert result["seconds"] < 30, result

    group = f"/aws/lambda/{fn}"
    notes = wait_for(lambda: all_events(logs, group, filterPattern='"log rate limit exceeded"'))
    assert notes, "no rate-limit note in the log"
    assert re.search(r"\[lambent\] \d+ bytes of output dropped", notes[0]["message"])
    stored = sum(g["storedBytes"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"])
    assert stored < 20 * 1024 * 1024, f"{stored} bytes stored for a 50 MB flood"
    rid = h.request_id(resp)
    assert wait_for(lambda: all_events(logs, group, filterPattern=f"REPORT {rid}")), "no REPORT after the flood"
