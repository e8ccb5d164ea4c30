"""SIGTERM stops the server cleanly and takes every function process with it.

Marked `shutdown`: conftest.py moves it after every other test.
"""

import time

import pytest

import helpers as h


@pytest.mark.shutdown
def test_sigterm_exits_0_and_leaves_no_function_process(server, lam, shared_fn):
    # Make sure warm environments exist right now, of several kinds, and one
    # invoke is still in flight when the signal arrives.
    warm = {}
    for kind in ("python", "node-cjs", "rust"):
        _resp, body = h.invoke_ok(lam, shared_fn(kind), {})
        warm[kind] = body["pid"]
    # a process the function itself started in the background counts too
    _resp, body = h.invoke_ok(lam, shared_fn("python"), {"spawn": True})
    warm["python's background child"] = body["child"]
    sleeper = h.uniq("shutdown-sleeper")
    h.create_function(lam, sleeper, h.py_probe_zip(), "python3.12", "app.handler", Timeout=30)
    pidfile = h.scratch_path("shutdown-sleeper-pid")
    resp, _ = h.invoke(lam, sleeper, {"sleep": 20, "pidfile": str(pidfile)}, InvocationType="Event")
    assert resp["StatusCode"] == 202
    busy_pid, busy_start = h.wait_for_file(pidfile, timeout=20).split()
    assert h.is_alive(int(busy_pid), busy_start)

    live = h.live_recorded_pids()
    for kind, pid in warm.items():
        assert pid in live, f"the warm {kind} environment (pid {pid}) should be alive before shutdown"
    assert int(busy_pid) in live, "the in-flight async invoke's process should be tracked"

    start = time.monotonic()
    code = server.terminate(timeout=20)
    took = time.monotonic() - start
    assert code is not None, f"lambent serve ignored SIGTERM for 20 s:\n{server.log_tail()}"
    assert code == 0, f"lambent serve exited with {code} on SIGTERM:\n{server.log_tail()}"

    deadline = time.monotonic() + 3
    leaked = h.live_recorded_pids()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = h.live_recorded_pids()
    assert not leaked, f"function processes still running after the server exited: {sorted(leaked)}"
    assert took < 15, f"shutdown took {took:.1f}s"
