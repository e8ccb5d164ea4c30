"""Invoke failures: function errors, timeouts, crashes, init errors and
rejected requests."""

import json
import time

import pytest

import helpers as h


def function_error(resp, body):
    assert resp["StatusCode"] == 200, "a function error is still HTTP 200"
    assert resp.get("FunctionError") == "Unhandled", (resp.get("FunctionError"), body)
    assert isinstance(body, dict), body
    return body


def test_python_exception(lam, shared_fn):
    name = shared_fn("python")
    resp, body = h.invoke(lam, name, {"raise": "python says no"})
    err = function_error(resp, body)
    assert err["errorMessage"] == "python says no"
    assert err["errorType"] == "ValueError"
    assert isinstance(err["stackTrace"], list) and err["stackTrace"], err
    assert any("app.py" in frame for frame in err["stackTrace"]), err["stackTrace"]
    assert resp["ExecutedVersion"] == "$LATEST"
    # the environment survives a handled-by-runtime exception
    h.invoke_ok(lam, name, {})


@pytest.mark.parametrize("kind", ["node-cjs", "node-esm", "node-callback"])
def test_node_thrown_error(lam, shared_fn, kind):
    name = shared_fn(kind)
    resp, body = h.invoke(lam, name, {"raise": f"node says no ({kind})"})
    err = function_error(resp, body)
    assert err["errorMessage"] == f"node says no ({kind})"
    assert err["errorType"] == "Error"
    assert isinstance(err.get("trace"), list) and err["trace"], f"Node errors carry a 'trace' list: {err}"
    h.invoke_ok(lam, name, {})


def test_rust_error(lam, shared_fn):
    name = shared_fn("rust")
    resp, body = h.invoke(lam, name, {"fail": True})
    err = function_error(resp, body)
    assert "failed on purpose" in err["errorMessage"]
    assert h.request_id(resp) in err["errorMessage"]
    assert err["errorType"]
    # and it keeps answering
    _resp, ok = h.invoke_ok(lam, name, {"after": "error"})
    assert ok["echo"] == {"after": "error"}


def test_awslambdaric_exception(lam, shared_fn):
    name = shared_fn("ric")
    resp, body = h.invoke(lam, name, {"raise": "ric says no"})
    err = function_error(resp, body)
    assert err["errorMessage"] == "ric says no"
    assert err["errorType"] == "ValueError"
    assert isinstance(err["stackTrace"], list)
    _resp, ok = h.invoke_ok(lam, name, {"after": "error"})
    assert ok["ric"] == "awslambdaric"


@pytest.mark.parametrize("problem", ["missing-handler", "import-error"])
def test_awslambdaric_init_error(lam, venv_python, problem):
    # awslambdaric reports these through /init/error (with no Content-Type)
    if problem == "missing-handler":
        bootstrap = h.RIC_BOOTSTRAP.replace("app.handler", "app.nope")
        app, want = "def handler(event, context):\n    return 1\n", "Runtime.HandlerNotFound"
    else:
        bootstrap = h.RIC_BOOTSTRAP
        app, want = "import lambent_missing_module_q\n", "Runtime.ImportModuleError"
    name = h.uniq(f"ric-{problem}")
    code = h.make_zip({"bootstrap": (bootstrap, 0o755), "app.py": app})
    h.create_function(lam, name, code, "provided.al2023", "app.handler", env={"LAMBENT_TEST_PYTHON": venv_python})
    start = time.monotonic()
    resp, body = h.invoke(lam, name, {})
    err = function_error(resp, body)
    assert err["errorType"] == want, err
    assert time.monotonic() - start < 5, "an init error must be answered at once"


@pytest.fixture(scope="module")
def timeout_fn(lam):
    name = h.uniq("timeout")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler", Timeout=1)
    return name


def test_timeout(lam, timeout_fn):
    pidfile = h.scratch_path("timeout-pid")
    start = time.monotonic()
    resp, body = h.invoke(lam, timeout_fn, {"sleep": 5, "pidfile": str(pidfile)})
    elapsed = time.monotonic() - start
    err = function_error(resp, body)
    assert err["errorType"] == "Sandbox.Timedout", err
    assert err["errorMessage"].endswith("Task timed out after 1.00 seconds"), err["errorMessage"]
    assert err["errorMessage"] == f"RequestId: {h.request_id(resp)} Error: Task timed out after 1.00 seconds"
    assert elapsed < 4.0, f"a 1-second timeout took {elapsed:.2f}s to answer"
    # the runtime that was still running the old invoke is killed
    pid, start_time = pidfile.read_text().split()
    deadline = time.monotonic() + 3
    while h.is_alive(int(pid), start_time) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not h.is_alive(int(pid), start_time), "the timed-out runtime process is still running"
    # and the function works again
    _resp, ok = h.invoke_ok(lam, timeout_fn, {"after": "timeout"})
    assert ok["event"] == {"after": "timeout"}
    assert ok["pid"] != int(pid)


def test_timeout_async_then_sync_still_works(lam, timeout_fn):
    resp, _ = h.invoke(lam, timeout_fn, {"sleep": 3}, InvocationType="Event")
    assert resp["StatusCode"] == 202
    _resp, ok = h.invoke_ok(lam, timeout_fn, {"quick": True})
    assert ok["event"] == {"quick": True}


@pytest.mark.parametrize("kind", ["python", "node-cjs", "node-esm"])
def test_crash_mid_invoke(lam, kind):
    spec = h.KINDS[kind]
    name = h.uniq(f"crash-{kind}")
    h.create_function(lam, name, spec.make_zip(), spec.runtime, spec.handler, Timeout=5)
    start = time.monotonic()
    resp, body = h.invoke(lam, name, {"exit": 3})
    assert time.monotonic() - start < 4.0, "a crash must be reported at once, not at the timeout"
    err = function_error(resp, body)
    assert err["errorType"] == "Runtime.ExitError", err
    assert "exit status 3" in err["errorMessage"], err["errorMessage"]
    assert err["errorMessage"] == f"RequestId: {h.request_id(resp)} Error: Runtime exited with error: exit status 3"
    _resp, ok = h.invoke_ok(lam, name, {"after": "crash"})
    assert ok["count"] == 1, "after a crash the next invoke gets a fresh environment"


def test_python_import_error(lam):
    name = h.uniq("import-error")
    code = h.make_zip({"app.py": "import lambent_no_such_module_xyz\n\ndef handler(e, c):\n    return 1\n"})
    h.create_function(lam, name, code, "python3.12", "app.handler")
    resp, body = h.invoke(lam, name, {})
    err = function_error(resp, body)
    assert err["errorType"] == "Runtime.ImportModuleError", err
    assert "Unable to import module 'app'" in err["errorMessage"], err
    assert "lambent_no_such_module_xyz" in err["errorMessage"], err
    # a second invoke retries init and fails the same way (no hang, no crash)
    resp, body = h.invoke(lam, name, {})
    assert function_error(resp, body)["errorType"] == "Runtime.ImportModuleError"


def test_python_missing_handler(lam):
    name = h.uniq("no-handler")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.nope")
    resp, body = h.invoke(lam, name, {})
    err = function_error(resp, body)
    assert err["errorType"] == "Runtime.HandlerNotFound", err
    assert "nope" in err["errorMessage"]


def test_node_missing_handler(lam):
    name = h.uniq("node-no-handler")
    h.create_function(lam, name, h.node_cjs_zip(), "nodejs20.x", "index.nope")
    resp, body = h.invoke(lam, name, {})
    err = function_error(resp, body)
    assert err["errorType"] == "Runtime.HandlerNotFound", err


def test_fixing_the_handler_fixes_the_function(lam):
    name = h.uniq("fix-handler")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.nope")
    resp, body = h.invoke(lam, name, {})
    function_error(resp, body)
    lam.update_function_configuration(FunctionName=name, Handler="app.handler")
    _resp, ok = h.invoke_ok(lam, name, {"fixed": True})
    assert ok["event"] == {"fixed": True}


@pytest.mark.parametrize("problem", ["not-executable", "missing"])
def test_provided_without_runnable_bootstrap(lam, problem):
    name = h.uniq(f"bootstrap-{problem}")
    if problem == "not-executable":
        code = h.make_zip({"bootstrap": ("#!/bin/sh\necho never\n", 0o644)})
    else:
        code = h.make_zip({"handler.sh": ("#!/bin/sh\necho never\n", 0o755)})
    try:
        h.create_function(lam, name, code, "provided.al2023", "bootstrap")
    except h.ClientError as exc:
        # refusing at create time is acceptable if it says why
        err = h.aws_error(exc)
        assert 400 <= err.status < 500, err
        assert "bootstrap" in err.message.lower(), err
        return
    start = time.monotonic()
    try:
        resp, body = h.invoke(lam, name, {})
    except h.ClientError as exc:
        err = h.aws_error(exc)
        assert err.status >= 400, err
        assert "bootstrap" in err.message.lower(), err
    else:
        err = function_error(resp, body)
        assert "bootstrap" in json.dumps(err).lower(), err
    assert time.monotonic() - start < 10, "a bootstrap that cannot start must fail fast"


def test_sync_payload_over_6mb(lam, shared_fn):
    name = shared_fn("python")
    payload = b'"' + b"a" * (6 * 1024 * 1024 - 1) + b'"'  # 6291457 bytes
    assert len(payload) == 6291457
    h.expect_error(lam.invoke, FunctionName=name, Payload=payload, status=413, codes="RequestTooLargeException")


def exact_payload(size: int, **extra) -> bytes:
    """A JSON object of exactly `size` bytes (json.dumps default separators)."""
    base = dict(extra, pad="")
    pad = size - len(json.dumps(base).encode())
    out = json.dumps(dict(extra, pad="a" * pad)).encode()
    assert len(out) == size
    return out


def test_sync_payload_of_exactly_6mb_is_accepted(lam, shared_fn):
    name = shared_fn("python")
    payload = exact_payload(6291456, quiet=True)
    resp, body = h.invoke(lam, name, raw=payload)
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, body
    assert body == {"event_bytes": 6291456}


def test_response_over_6mb(lam, shared_fn):
    name = shared_fn("python")
    resp, body = h.invoke(lam, name, {"big": 7_000_000})
    err = function_error(resp, body)
    assert err["errorType"] == "Function.ResponseSizeTooLarge", err
    # and the environment keeps working
    h.invoke_ok(lam, name, {})


def test_async_payload_of_exactly_256kb_is_accepted(lam, shared_fn):
    name = shared_fn("python")
    marker = h.scratch_path("async-256k")
    resp, _ = h.invoke(lam, name, raw=exact_payload(262144, marker=str(marker), quiet=True), InvocationType="Event")
    assert resp["StatusCode"] == 202
    h.wait_for_file(marker, timeout=20)


def test_async_payload_over_256kb(lam, shared_fn):
    name = shared_fn("python")
    marker = h.scratch_path("too-big-async")
    payload = json.dumps({"marker": str(marker), "pad": "a" * (256 * 1024)}).encode()
    h.expect_error(
        lam.invoke,
        FunctionName=name,
        Payload=payload,
        InvocationType="Event",
        status=413,
        codes="RequestTooLargeException",
    )
    time.sleep(0.5)
    assert not marker.exists(), "a rejected async invoke must not run"


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1', b"\xff\xfe"], ids=["garbage", "truncated", "binary"])
def test_invalid_json_payload(lam, shared_fn, raw):
    name = shared_fn("python")
    err = h.expect_error(
        lam.invoke, FunctionName=name, Payload=raw, status=400, codes="InvalidRequestContentException"
    )
    assert err.message


@pytest.mark.parametrize("invocation_type", ["RequestResponse", "Event", "DryRun"])
def test_unknown_function(lam, invocation_type):
    h.expect_error(
        lam.invoke,
        FunctionName=h.uniq("ghost"),
        Payload=b"{}",
        InvocationType=invocation_type,
        status=404,
        codes="ResourceNotFoundException",
    )


def test_conflicting_qualifiers(lam, shared_fn):
    name = shared_fn("python")
    h.expect_error(
        lam.invoke,
        FunctionName=f"{name}:$LATEST",
        Qualifier="1",
        Payload=b"{}",
        status=400,
        codes="InvalidParameterValueException",
    )


def test_unknown_qualifier(lam, shared_fn):
    h.expect_error(
        lam.invoke,
        FunctionName=shared_fn("python"),
        Payload=b"{}",
        Qualifier="987",
        status=404,
        codes="ResourceNotFoundException",
    )
