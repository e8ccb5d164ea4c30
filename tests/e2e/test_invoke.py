"""Invoke: sync, async and DryRun for every runtime family, the context object,
environment variables, warm reuse and concurrency."""

import base64
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import helpers as h

ALL = list(h.KINDS)
MANAGED = ["python", "node-cjs", "node-esm", "node-callback"]


def result_event(kind, body):
    return body["echo"] if h.KINDS[kind].family == "rust" else body["event"]


@pytest.mark.parametrize("kind", ALL)
def test_sync_invoke(lam, shared_fn, kind):
    name = shared_fn(kind)
    event = {"hello": kind, "nested": [1, {"x": None, "s": "ünïcødé"}], "n": 1.5}
    resp, body = h.invoke_ok(lam, name, event)
    assert resp["ExecutedVersion"] == "$LATEST"
    assert result_event(kind, body) == event
    # AWS hands the function the same request id the caller gets back
    assert body["request_id"] == h.request_id(resp)
    arn_key = "function_arn" if h.KINDS[kind].family == "rust" else "invoked_function_arn"
    assert body[arn_key] == h.function_arn(name)


@pytest.mark.parametrize("kind", MANAGED + ["ric"])
def test_context_object(lam, shared_fn, kind):
    name = shared_fn(kind)
    resp, body = h.invoke_ok(lam, name, {"ctx": True})
    assert body["request_id"] == h.request_id(resp)
    assert body["function_name"] == name
    assert body["invoked_function_arn"] == h.function_arn(name)
    assert 0 < body["remaining_ms"] <= h.SHARED_TIMEOUT * 1000
    if kind != "ric":
        assert int(str(body["memory_limit_in_mb"])) == h.SHARED_MEMORY
        assert body["function_version"] == "$LATEST"


def test_rust_memory_from_environment(lam, shared_fn):
    _resp, body = h.invoke_ok(lam, shared_fn("rust"), {})
    assert body["memory"] == h.SHARED_MEMORY


def test_invoked_arn_keeps_the_qualifier(lam, shared_fn):
    name = shared_fn("python")
    resp, body = h.invoke_ok(lam, name, {}, Qualifier="$LATEST")
    assert resp["ExecutedVersion"] == "$LATEST"
    assert body["invoked_function_arn"] == h.function_arn(name) + ":$LATEST"
    # and invoking through the full ARN works
    _resp, body = h.invoke_ok(lam, h.function_arn(name), {"by": "arn"})
    assert body["event"] == {"by": "arn"}


@pytest.mark.parametrize("kind", ["python", "node-cjs", "node-esm"])
def test_environment_variables(lam, shared_fn, kind):
    name = shared_fn(kind)
    _resp, body = h.invoke_ok(lam, name, {})
    env = body["env"]
    for key, value in h.SHARED_ENV.items():
        assert env.get(key) == value, key
    assert env.get("AWS_LAMBDA_FUNCTION_NAME") == name
    assert env.get("AWS_REGION") == "us-east-1"
    assert env.get("AWS_LAMBDA_FUNCTION_VERSION") == "$LATEST"
    assert env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") == str(h.SHARED_MEMORY)
    task_root = env.get("LAMBDA_TASK_ROOT")
    assert task_root, "LAMBDA_TASK_ROOT is not set"
    # the handler runs from its code directory, as in /var/task
    assert os.path.realpath(body["cwd"]) == os.path.realpath(task_root)
    if kind == "python":
        assert body["handler_in_task_root"] is True


@pytest.mark.parametrize("kind", ALL)
def test_async_invoke_runs_the_function(lam, shared_fn, kind):
    name = shared_fn(kind)
    marker = h.scratch_path(f"async-{kind}")
    resp, body = h.invoke(lam, name, {"marker": str(marker)}, InvocationType="Event")
    assert resp["StatusCode"] == 202
    assert not body, f"async invoke must answer with an empty body, got {body!r}"
    ran_as = h.wait_for_file(marker, timeout=20)
    assert ran_as == h.request_id(resp), "the async invoke's request id must reach the function"


@pytest.mark.parametrize("kind", ALL)
def test_dry_run(lam, shared_fn, kind):
    name = shared_fn(kind)
    marker = h.scratch_path(f"dryrun-{kind}")
    resp, body = h.invoke(lam, name, {"marker": str(marker)}, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert not body
    time.sleep(0.5)
    assert not marker.exists(), "DryRun must not run the function"


@pytest.mark.parametrize("kind", ["python", "node-cjs", "node-callback"])
def test_tail_logs(lam, shared_fn, kind):
    name = shared_fn(kind)
    line = h.uniq(f"log-line-{kind}")
    resp, body = h.invoke_ok(lam, name, {"print": line}, LogType="Tail")
    assert "LogResult" in resp, "LogType=Tail must return X-Amz-Log-Result"
    log = base64.b64decode(resp["LogResult"]).decode(errors="replace")
    rid = h.request_id(resp)
    assert line in log, log
    assert f"START RequestId: {rid}" in log, log
    assert f"END RequestId: {rid}" in log, log
    assert f"REPORT RequestId: {rid}" in log, log
    # without Tail there is no log
    resp2, _ = h.invoke_ok(lam, name, {"print": line})
    assert "LogResult" not in resp2


def test_tail_log_is_the_last_4kb(lam, shared_fn):
    name = shared_fn("python")
    marker = h.uniq("first-line")
    noise = "n" * 300
    resp, _ = h.invoke_ok(lam, name, {"print": marker + "\n" + "\n".join([noise] * 60)}, LogType="Tail")
    log = base64.b64decode(resp["LogResult"])
    assert 0 < len(log) <= 4096, len(log)
    text = log.decode(errors="replace")
    assert marker not in text, "the head of a long log must be cut"
    assert f"REPORT RequestId: {h.request_id(resp)}" in text, "the tail (REPORT line) must be kept"


def report_line(resp) -> str:
    log = base64.b64decode(resp["LogResult"]).decode(errors="replace")
    lines = [line for line in log.splitlines() if line.startswith(f"REPORT RequestId: {h.request_id(resp)}")]
    assert len(lines) == 1, log
    return lines[0]


def report_ms(line: str, field: str) -> float | None:
    m = re.search(rf"\t{field}: ([0-9.]+) ms", line)
    return float(m.group(1)) if m else None


def test_report_line_splits_init_from_invoke(lam):
    # AWS: a cold start's REPORT carries "Init Duration" = the init phase
    # (module import up to the first /next); "Duration" is the handler alone.
    name = h.uniq("slow-init")
    code = h.make_zip({"app.py": "import time\ntime.sleep(0.5)\n\ndef handler(event, context):\n    return 1\n"})
    h.create_function(lam, name, code, "python3.12", "app.handler")
    cold = report_line(lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail"))
    warm = report_line(lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail"))
    assert report_ms(cold, "Duration") is not None and report_ms(cold, "Billed Duration") is not None, cold
    assert "\tMemory Size: 128 MB" in cold, cold
    assert report_ms(warm, "Init Duration") is None, f"a warm invoke has no Init Duration: {warm}"
    init = report_ms(cold, "Init Duration")
    assert init is not None, f"a cold start reports Init Duration: {cold}"
    assert init >= 400, f"the 0.5 s module import belongs to Init Duration: {cold}"
    assert report_ms(cold, "Duration") < 400, f"Duration must not include the init phase: {cold}"


@pytest.mark.parametrize("kind", ["python", "node-cjs"])
def test_warm_reuse_and_fresh_environment_after_update(lam, kind):
    spec = h.KINDS[kind]
    name = h.uniq(f"warm-{kind}")
    h.create_function(lam, name, spec.make_zip("w1"), spec.runtime, spec.handler, env={"PHASE": "one"})
    _, first = h.invoke_ok(lam, name, {})
    _, second = h.invoke_ok(lam, name, {})
    assert (first["version"], first["count"]) == ("w1", 1)
    assert (second["version"], second["count"]) == ("w1", 2), "sequential invokes must reuse the warm environment"
    assert second["pid"] == first["pid"]

    lam.update_function_code(FunctionName=name, ZipFile=spec.make_zip("w2"))
    _, third = h.invoke_ok(lam, name, {})
    assert third["version"] == "w2", "the new code must run after UpdateFunctionCode"
    assert third["count"] == 1, "a code update must give a fresh environment"

    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"PHASE": "two", "LAMBENT_TEST_PID_DIR": str(h.PID_DIR)}}
    )
    _, fourth = h.invoke_ok(lam, name, {})
    assert fourth["env"].get("PHASE") == "two", "a configuration update must reach the next invoke"
    assert fourth["count"] == 1


def test_concurrent_invokes_run_in_parallel(lam):
    name = h.uniq("concurrency")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler", Timeout=10)
    h.invoke_ok(lam, name, {})  # one warm environment; the others start cold
    n = 4
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: h.invoke_ok(lam, name, {"sleep": 1, "i": i}), range(n)))
    elapsed = time.monotonic() - start
    pids = {body["pid"] for _resp, body in results}
    assert sorted(body["event"]["i"] for _resp, body in results) == list(range(n))
    assert len(pids) == n, f"{n} concurrent invokes must run in {n} environments, got pids {pids}"
    assert elapsed < 3.0, f"{n} parallel 1-second invokes took {elapsed:.2f}s"
    assert len({h.request_id(r) for r, _ in results}) == n


def test_payload_and_result_round_trip_large(lam, shared_fn):
    # a 1 MiB event and result pass through unchanged
    name = shared_fn("python")
    blob = "x" * (1 << 20)
    _resp, body = h.invoke_ok(lam, name, {"blob": blob})
    assert body["event"]["blob"] == blob


def test_non_object_payloads(lam, shared_fn):
    name = shared_fn("python")
    for payload in ([1, 2, 3], "just a string", 42, None):
        resp, body = h.invoke(lam, name, raw=json.dumps(payload).encode())
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
        assert body["event"] == payload
