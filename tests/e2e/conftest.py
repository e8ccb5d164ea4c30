"""Fixtures for Lambent's end-to-end suite.

One real `lambent serve` (env LAMBENT_BIN, default <repo>/target/debug/lambent)
is started per session on a free port with a temporary data directory.  Tests
talk to it with boto3, the AWS CLI and the `lambent` CLI.  The last test
(test_zz_shutdown.py) stops it with SIGTERM and checks that it exited 0 and
left no function process running.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

import helpers as h


def pytest_collection_modifyitems(session, config, items):
    # The shutdown test stops the shared server: it must run last, whatever
    # order or selection pytest was given.
    last = [i for i in items if i.get_closest_marker("shutdown")]
    rest = [i for i in items if not i.get_closest_marker("shutdown")]
    items[:] = rest + last


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("lambent")
    srv = h.start_server(base / "data", base / "server.log")
    yield srv
    # test_zz_shutdown normally stopped it already and checked the exit code;
    # if it was deselected or failed early, stop it here.
    if srv.proc.poll() is None:
        srv.terminate()
    if os.environ.get("LAMBENT_TEST_SHOW_LOG"):
        sys.stderr.write(f"\n--- lambent server log ({srv.log_path}) ---\n{srv.log_tail(400)}\n")


def pytest_sessionfinish(session, exitstatus):
    # After every server is gone (and the shutdown test has checked for
    # leftovers): make sure no function process outlives the run, and clean up.
    h.kill_leftovers()
    shutil.rmtree(h.SCRATCH, ignore_errors=True)
    if h.PID_DIR_OWNED:
        shutil.rmtree(h.PID_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def lam(server):
    """A boto3 Lambda client for the session server (no retries, 60 s read timeout)."""
    return server.client()


@pytest.fixture(scope="session")
def lam_raw(server):
    """Like `lam`, but without botocore's client-side parameter validation,
    so out-of-range values reach the server."""
    return server.client(parameter_validation=False)


@pytest.fixture(scope="session")
def aws(server):
    """Run `aws lambda ARGS... --endpoint-url URL --output json`."""

    def run(*args: str, timeout: float = 90.0):
        return h.run_aws(server, *args, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def venv_python() -> str:
    """The interpreter running pytest; it has awslambdaric installed."""
    return sys.executable


@pytest.fixture(scope="session")
def shared_fn(lam, venv_python):
    """shared_fn(kind) -> name of a session-wide function of that kind
    (see helpers.KINDS), created on first use with MemorySize 256, Timeout 10
    and helpers.SHARED_ENV in its Environment."""
    created: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in created:
            spec = h.KINDS[kind]
            name = h.uniq(f"shared-{kind}")
            env = dict(h.SHARED_ENV)
            if spec.family == "ric":
                env["LAMBENT_TEST_PYTHON"] = venv_python
            h.create_function(
                lam,
                name,
                spec.make_zip(),
                spec.runtime,
                spec.handler,
                env=env,
                MemorySize=h.SHARED_MEMORY,
                Timeout=h.SHARED_TIMEOUT,
            )
            created[kind] = name
        return created[kind]

    return get


@pytest.fixture(scope="session")
def tmp_session(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


def pytest_runtest_makereport(item, call):
    # On a failure, attach the end of the server log to the report.
    if call.when == "call" and call.excinfo is not None and "server" in getattr(item, "funcargs", {}):
        srv = item.funcargs["server"]
        item.add_report_section("call", "lambent server log (tail)", srv.log_tail(40))


@pytest.fixture(scope="session")
def web_app_functions(lam, venv_python) -> dict[str, str]:
    """Deploys the unmodified web apps of tests/e2e/apps once per session (dependencies
    fetched from npm and PyPI on first use, see web_apps.py) and returns their function
    names: {"express": Express + serverless-http on nodejs20.x, "starlette": Starlette +
    Mangum on awslambdaric}. Any HTTP front end (function URL, HTTP API) can call them."""
    import web_apps

    names = {"express": h.uniq("web-express"), "starlette": h.uniq("web-starlette")}
    h.create_function(lam, names["express"], web_apps.express_zip(), "nodejs20.x", "index.handler", Timeout=10, MemorySize=256)
    h.create_function(
        lam,
        names["starlette"],
        web_apps.starlette_zip(),
        "provided.al2023",
        "app.handler",
        env={"LAMBENT_TEST_PYTHON": venv_python},
        Timeout=10,
        MemorySize=256,
    )
    return names
