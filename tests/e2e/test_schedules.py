"""Schedules (`lambent schedule`) and S3-style notification sources (`lambent s3-source`).

Schedules fire through the durable async queue with EventBridge's scheduled-event shape;
a `rate(...)` schedule fires when it is created and then every interval, so the tests see
firings at once. Notification sources are driven with the exact payloads MinIO and S3 send
(no MinIO server is available from the package registries to run here).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import helpers as h
from test_lambent_cli import as_json, lambent

RECORDER = r'''
import json, os


def handler(event, context):
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"rid": context.aws_request_id, "event": event}) + "\n")
    return {"ok": True}
'''


def recorder(lam, record: Path, prefix="sched") -> str:
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_zip({"app.py": RECORDER}), "python3.12", "app.handler", env={"RECORD_FILE": str(record)})
    return name


def records(path: Path) -> list[dict]:
    try:
        return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def wait_records(path: Path, n: int, timeout: float, server) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(records(path)) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(records(path))} of {n} invocations after {timeout}s\n{server.log_tail(30)}")
        time.sleep(0.1)
    return records(path)


def schedule(server, *args, check=True):
    return lambent(server, "schedule", *args, check=check)


def iso_z(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


# --------------------------------------------------------------------------
# schedules


def test_rate_schedule_fires_with_the_scheduled_event_shape(server, lam, tmp_path):
    record = tmp_path / "r.jsonl"
    fn = recorder(lam, record)
    name = h.uniq("every-minute")
    before = time.time()
    out = as_json(schedule(server, "create", name, "--expression", "rate(1 minute)", "--target", fn, "--output", "json"))
    assert out["Name"] == name and out["State"] == "ENABLED" and out["Timezone"] == "UTC", out
    assert out["Arn"] == f"arn:aws:events:{h.REGION}:{h.ACCOUNT}:rule/{name}"
    assert out["Target"]["Arn"] == h.function_arn(fn), out
    event = wait_records(record, 1, 20, server)[0]["event"]
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["version"] == "0" and event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["account"] == h.ACCOUNT and event["region"] == h.REGION and event["detail"] == {}
    assert event["resources"] == [out["Arn"]]
    uuid.UUID(event["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"]), event["time"]
    fired = datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(fired.timestamp() - before) < 5, (event["time"], before)
    listed = as_json(schedule(server, "ls", "--output", "json"))["Schedules"]
    mine = next(s for s in listed if s["Name"] == name)
    assert mine["LastFiredAt"].startswith(event["time"][:-1]), mine
    next_at = datetime.datetime.fromisoformat(mine["NextFireAt"].replace("Z", "+00:00"))
    assert abs((next_at - fired).total_seconds() - 60) < 1, mine
    text = schedule(server, "ls").stdout
    assert name in text and "rate(1 minute)" in text and "NEXT" in text, text
    time.sleep(1.5)
    assert len(records(record)) == 1, "a rate schedule fires once per interval"
    schedule(server, "rm", name)
    assert name not in schedule(server, "ls").stdout


def test_input_replaces_the_event_and_disabled_schedules_do_not_fire(server, lam, tmp_path):
    record = tmp_path / "r.jsonl"
    fn = recorder(lam, record)
    name = h.uniq("with-input")
    schedule(server, "create", name, "--expression", "rate(5 minutes)", "--target", fn,
             "--input", '{"job": "nightly", "n": 3}', "--disabled")
    time.sleep(2)
    assert records(record) == [], "a disabled schedule fired"
    out = as_json(schedule(server, "enable", name, "--output", "json"))
    assert out["State"] == "ENABLED"
    got = wait_records(record, 1, 20, server)
    assert got[0]["event"] == {"job": "nightly", "n": 3}
    schedule(server, "disable", name)
    schedule(server, "rm", name)


def test_cron_next_firing_in_a_time_zone(server, lam, tmp_path):
    fn = recorder(lam, tmp_path / "r.jsonl")
    name = h.uniq("noon-ny")
    out = as_json(schedule(server, "create", name, "--expression", "cron(0 12 ? * MON-FRI *)",
                           "--timezone", "America/New_York", "--target", fn, "--output", "json"))
    zone = ZoneInfo("America/New_York")
    now = datetime.datetime.now(zone)
    candidate = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if candidate <= now:
        candidate += datetime.timedelta(days=1)
    while candidate.weekday() >= 5:
        candidate += datetime.timedelta(days=1)
    candidate = candidate.replace(tzinfo=zone)  # the wall clock time on that day, DST applied
    expected = candidate.astimezone(datetime.timezone.utc)
    got = datetime.datetime.fromisoformat(out["NextFireAt"].replace("Z", "+00:00"))
    assert got == expected, (out["NextFireAt"], expected)
    assert out["Timezone"] == "America/New_York"
    schedule(server, "rm", name)


def test_bad_schedules_are_refused_clearly(server, lam, tmp_path):
    fn = recorder(lam, tmp_path / "r.jsonl")
    cases = [
        ("cron(0 12 * * * *)", None, "?"),
        ("cron(0 25 * * ? *)", None, "hours"),
        ("cron(0 12 * *)", None, "field"),
        ("rate(0 minutes)", None, "rate"),
        ("rate(1 minutes)", None, "singular"),
        ("every day", None, "expression"),
        ("cron(0 12 * * ? *)", "Mars/Olympus", "zone"),
    ]
    for expression, zone, needle in cases:
        args = ["create", h.uniq("bad"), "--expression", expression, "--target", fn]
        if zone:
            args += ["--timezone", zone]
        proc = schedule(server, *args, check=False)
        assert proc.returncode != 0, (expression, proc.stdout)
        assert "InvalidParameterValueException" in proc.stderr and needle.lower() in proc.stderr.lower(), (expression, proc.stderr)
    proc = schedule(server, "create", h.uniq("bad"), "--expression", "rate(1 hour)", "--target", "no-such-function", check=False)
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr, proc.stderr
    proc = schedule(server, "create", h.uniq("bad"), "--expression", "rate(1 hour)", "--target", fn, "--input", "{not json", check=False)
    assert proc.returncode != 0 and "JSON" in proc.stderr, proc.stderr
    name = h.uniq("dup")
    schedule(server, "create", name, "--expression", "rate(1 hour)", "--target", fn, "--disabled")
    proc = schedule(server, "create", name, "--expression", "rate(1 hour)", "--target", fn, check=False)
    assert proc.returncode != 0 and "ResourceConflictException" in proc.stderr, proc.stderr
    proc = schedule(server, "rm", h.uniq("missing"), check=False)
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr, proc.stderr
    schedule(server, "rm", name)


def test_schedules_in_the_past_are_refused(server, lam, tmp_path):
    fn = recorder(lam, tmp_path / "r.jsonl")
    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    for expression in (f"at({past})", "cron(0 12 * * ? 2001)"):
        proc = schedule(server, "create", h.uniq("past"), "--expression", expression, "--target", fn, check=False)
        assert proc.returncode != 0 and "never fires" in proc.stderr, (expression, proc.stderr)


def test_firing_missed_while_the_server_was_down(tmp_path):
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log")
    lam = srv.client()
    record = tmp_path / "r.jsonl"
    try:
        fn = recorder(lam, record)
        soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S")
        # Both fire while the server is down; the policy fires the one within its grace window.
        schedule(srv, "create", h.uniq("while-down"), "--expression", f"at({soon})", "--target", fn,
                 "--input", '{"late": true}', "--grace", "3600")
        schedule(srv, "create", h.uniq("too-late"), "--expression", f"at({soon})", "--target", fn,
                 "--input", '{"too_late": true}', "--grace", "1")
    finally:
        assert srv.terminate() == 0
    time.sleep(6)
    assert records(record) == []
    again = h.start_server(tmp_path / "data", tmp_path / "server2.log")
    try:
        got = wait_records(record, 1, 20, again)
        assert got[0]["event"] == {"late": True}
        time.sleep(1.5)
        assert len(records(record)) == 1
        assert "missed firings" in again.log_path.read_text()
    finally:
        again.terminate()


# --------------------------------------------------------------------------
# S3-style bucket notifications

MINIO_BODY = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "photos/Happy Face.jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-11-27T12:00:00.000Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minioadmin"},
            "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "10.0.0.5"},
            "responseElements": {"x-amz-id-2": "dd9025bab4ad", "x-amz-request-id": "16E4E7C5F1F6A6C9", "x-minio-origin-endpoint": "http://10.0.0.5:9000"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": "photos", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::photos"},
                "object": {"key": "Happy+Face.jpg", "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                           "contentType": "image/jpeg", "userMetadata": {"content-type": "image/jpeg"}, "sequencer": "17AD3F5B16F7B2B5"},
            },
            "source": {"host": "10.0.0.5", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.11"},
        }
    ],
}


def post(server, path: str, body: bytes, headers=None):
    req = urllib.request.Request(f"{server.endpoint}{path}", data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_s3_notifications_reach_the_function(server, lam, tmp_path):
    record = tmp_path / "r.jsonl"
    fn = recorder(lam, record, "s3")
    name = h.uniq("bucket")
    out = as_json(lambent(server, "s3-source", "put", name, "--target", fn, "--output", "json"))
    secret = out["Secret"]
    assert out["Path"] == f"/lambent/s3-notify/{name}" and len(secret) >= 32, out
    status, body = post(server, out["Path"], json.dumps(MINIO_BODY).encode(), {"Authorization": f"Bearer {secret}"})
    assert (status, body) == (200, {"Accepted": 1})
    event = wait_records(record, 1, 20, server)[0]["event"]
    assert list(event) == ["Records"] and len(event["Records"]) == 1
    rec = event["Records"][0]
    assert rec["eventSource"] == "aws:s3" and rec["awsRegion"] == h.REGION and rec["eventVersion"] == "2.0"
    assert rec["eventName"] == "s3:ObjectCreated:Put" and rec["eventTime"] == "2026-11-27T12:00:00.000Z"
    assert rec["s3"]["bucket"]["name"] == "photos" and rec["s3"]["object"]["key"] == "Happy+Face.jpg"
    assert rec["s3"]["object"]["size"] == 1024 and rec["userIdentity"] == {"principalId": "minioadmin"}
    # AWS's own shape (no MinIO envelope), the token in the query string
    aws_body = {"Records": [dict(MINIO_BODY["Records"][0], eventSource="aws:s3", awsRegion="eu-west-1", eventVersion="2.1")]}
    status, _ = post(server, f"{out['Path']}?token={secret}", json.dumps(aws_body).encode())
    assert status == 200
    second = wait_records(record, 2, 20, server)[1]["event"]["Records"][0]
    assert second["awsRegion"] == "eu-west-1" and second["eventVersion"] == "2.1"
    # S3's test event: accepted, not delivered
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-27T12:00:00.000Z", "Bucket": "photos"}
    assert post(server, out["Path"], json.dumps(test_event).encode(), {"Authorization": secret}) == (200, {"Accepted": 0})
    time.sleep(1)
    assert len(records(record)) == 2


def test_s3_notification_secrets(server, lam, tmp_path):
    fn = recorder(lam, tmp_path / "r.jsonl", "s3")
    name = h.uniq("bucket")
    secret = as_json(lambent(server, "s3-source", "put", name, "--target", fn, "--output", "json"))["Secret"]
    path = f"/lambent/s3-notify/{name}"
    body = json.dumps(MINIO_BODY).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {secret}x"}):
        status, err = post(server, path, body, headers)
        assert status == 403 and err.get("__type", err.get("Type", "")) in ("AccessDenied", "") , (status, err)
    assert post(server, f"/lambent/s3-notify/{h.uniq('nope')}", body, {"Authorization": f"Bearer {secret}"})[0] == 403
    assert post(server, path, b"{not json", {"Authorization": f"Bearer {secret}"})[0] == 400
    assert post(server, path, b'{"Records": [{"eventName": "x"}]}', {"Authorization": f"Bearer {secret}"})[0] == 400
    # Secrets are shown once: not by get/ls, not in the data directory.
    listed = lambent(server, "s3-source", "ls", "--output", "json").stdout
    assert secret not in listed and name in listed
    assert name in lambent(server, "s3-source", "ls").stdout
    again = as_json(lambent(server, "s3-source", "put", name, "--target", fn, "--output", "json"))
    assert "Secret" not in again
    for p in Path(server.data_dir).rglob("*"):
        if p.is_file() and p.stat().st_size < 50_000_000:
            assert secret.encode() not in p.read_bytes(), f"the secret is stored in clear in {p}"
    rotated = as_json(lambent(server, "s3-source", "put", name, "--target", fn, "--rotate-secret", "--output", "json"))["Secret"]
    assert rotated != secret
    assert post(server, path, body, {"Authorization": f"Bearer {secret}"})[0] == 403
    assert post(server, path, body, {"Authorization": f"Bearer {rotated}"})[0] == 200
    lambent(server, "s3-source", "rm", name)
    assert post(server, path, body, {"Authorization": f"Bearer {rotated}"})[0] == 403
