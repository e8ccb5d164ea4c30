"""Metering: Prometheus metrics on /metrics and `lambent usage` match the invocations made."""

import json
import re
import time
import urllib.error
import urllib.request

import helpers as h
from test_lambent_cli import as_json, lambent

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(server):
    """GET /metrics (unsigned) -> (content type, {(name, frozenset(labels)): value})."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as resp:
        assert resp.status == 200
        ctype = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not an exposition line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return ctype, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_and_usage_match_invocations(server, lam):
    name = h.uniq("meter")
    h.create_function(lam, name, h.py_probe_zip("m1"), "python3.12", "app.handler", MemorySize=256, Timeout=10)
    n_ok, n_err, n_throttle = 5, 3, 4

    for i in range(n_ok):
        h.invoke_ok(lam, name, {"i": i})
    for i in range(n_err):
        resp, _ = h.invoke(lam, name, {"raise": f"boom {i}"})
        assert resp.get("FunctionError") == "Unhandled", resp
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(n_throttle):
        h.expect_error(lam.invoke, FunctionName=name, Payload=b"{}", status=429, codes="TooManyRequestsException")
    lam.delete_function_concurrency(FunctionName=name)
    version = lam.publish_version(FunctionName=name)["Version"]
    h.invoke_ok(lam, name, {"v": 1}, Qualifier=version)

    ctype, samples = scrape(server)
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    latest = {"function": name, "version": "$LATEST"}
    published = {"function": name, "version": version}
    assert value(samples, "lambent_invocations_total", **latest) == n_ok + n_err
    assert value(samples, "lambent_errors_total", **latest) == n_err
    assert value(samples, "lambent_throttles_total", function=name) == n_throttle
    assert value(samples, "lambent_invocation_duration_seconds_count", **latest) == n_ok + n_err
    assert value(samples, "lambent_invocation_duration_seconds_bucket", le="+Inf", **latest) == n_ok + n_err
    assert value(samples, "lambent_invocation_duration_seconds_sum", **latest) > 0
    assert value(samples, "lambent_cold_starts_total", **latest) >= 1
    assert value(samples, "lambent_billed_gb_seconds_total", **latest) > 0
    assert value(samples, "lambent_invocations_total", **published) == 1
    assert value(samples, "lambent_errors_total", **published) == 0
    assert value(samples, "lambent_cold_starts_total", **published) == 1
    # labels never go beyond function and version (plus le on buckets)
    for (metric, labels), _ in samples.items():
        keys = {k for k, _ in labels}
        assert keys <= {"function", "version", "le"}, (metric, keys)
    assert ("lambent_concurrent_executions", frozenset()) in samples
    assert value(samples, "lambent_concurrent_executions") >= 0

    # the CLI: exact at once (unflushed counts are merged in), in JSON and as a table
    out = as_json(lambent(server, "usage", name, "--since", "1h", "--output", "json"))
    [entry] = out["Functions"]
    assert entry["FunctionName"] == name
    totals = entry["Totals"]
    assert totals["Invocations"] == n_ok + n_err + 1, totals
    assert totals["Errors"] == n_err
    assert totals["Throttles"] == n_throttle
    assert totals["ColdStarts"] == value(samples, "lambent_cold_starts_total", **latest) + 1
    gb = value(samples, "lambent_billed_gb_seconds_total", **latest) + value(
        samples, "lambent_billed_gb_seconds_total", **published
    )
    assert abs(totals["GbSeconds"] - gb) < 1e-9
    assert abs(totals["GbSeconds"] - totals["BilledMs"] / 1000 * 256 / 1024) < 1e-9
    assert sum(m["Invocations"] for m in entry["Minutes"]) == totals["Invocations"]
    assert all(m["Minute"] % 60 == 0 for m in entry["Minutes"])

    text = lambent(server, "usage", name).stdout
    header, row = text.splitlines()
    assert header.split() == ["FUNCTION", "INVOCATIONS", "ERRORS", "THROTTLES", "COLD", "STARTS", "GB-SECONDS"]
    assert row.split()[:4] == [name, str(n_ok + n_err + 1), str(n_err), str(n_throttle)]

    # nothing since a time in the future; all functions without a name
    future = str(int(time.time()) + 3600)
    assert as_json(lambent(server, "usage", name, "--since", future, "--output", "json"))["Functions"] == []
    everyone = as_json(lambent(server, "usage", "--output", "json"))
    assert name in [f["FunctionName"] for f in everyone["Functions"]]


def test_usage_api_requires_a_signature(server):
    req = urllib.request.Request(f"{server.endpoint}/lambent/usage")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("unsigned usage request was accepted")
    except urllib.error.HTTPError as err:
        assert err.code == 403
        assert "Signature" in json.loads(err.read()).get("message", "") or err.code == 403


def test_usage_is_flushed_periodically_and_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    srv = h.start_server(data, tmp_path / "server.log", extra_args=("--usage-flush-secs", "1"))
    try:
        lam = srv.client()
        name = h.uniq("meter-persist")
        h.create_function(lam, name, h.py_probe_zip("p1"), "python3.12", "app.handler", MemorySize=128)
        for _ in range(2):
            h.invoke_ok(lam, name, {})
        # the background flush writes the per-minute documents within a few seconds
        deadline = time.monotonic() + 10
        stored = 0
        while time.monotonic() < deadline:
            stored = stored_invocations(data, name)
            if stored == 2:
                break
            time.sleep(0.2)
        assert stored == 2
        # these are still in memory at shutdown: the last flush writes them
        h.invoke(lam, name, {"raise": "x"})
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        h.expect_error(lam.invoke, FunctionName=name, Payload=b"{}", status=429)
        assert srv.terminate() == 0
    finally:
        srv.terminate()

    srv = h.start_server(data, tmp_path / "server2.log")
    try:
        out = as_json(lambent(srv, "usage", name, "--since", "1h", "--output", "json"))
        [entry] = out["Functions"]
        assert entry["Totals"]["Invocations"] == 3
        assert entry["Totals"]["Errors"] == 1
        assert entry["Totals"]["Throttles"] == 1
        assert entry["Totals"]["ColdStarts"] >= 1
        # Prometheus counters start again from zero in a new process
        _, samples = scrape(srv)
        assert value(samples, "lambent_invocations_total", function=name, version="$LATEST") == 0
        lam = srv.client()
        lam.delete_function(FunctionName=name)
    finally:
        assert srv.terminate() == 0


def stored_invocations(data_dir, name):
    import sqlite3

    db = sqlite3.connect(f"file:{data_dir / 'lambent.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT doc FROM documents WHERE kind = 'usage' AND scope = ?", (name,)).fetchall()
    finally:
        db.close()
    return sum(json.loads(doc)["Invocations"] for (doc,) in rows)
