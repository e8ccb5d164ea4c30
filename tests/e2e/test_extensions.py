"""Extensions API (2020-01-01) and Telemetry API (2022-07-01): an external extension from a
layer's `extensions/` directory sees INVOKE and SHUTDOWN events and receives telemetry; an
internal extension registered by the function's own process sees INVOKE events."""

import json
import sys
import time

import helpers as h

# An external extension using only the standard library: registers for INVOKE and SHUTDOWN,
# optionally subscribes to telemetry with a tiny HTTP server, and appends everything it sees
# as JSON lines to $RECORD_FILE.
RECORDER = r"""#!/usr/bin/env python3
import http.server, json, os, sys, threading, urllib.request
base = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"]
api = base + "/2020-01-01/extension"
out = os.environ["RECORD_FILE"]
lock = threading.Lock()

def record(obj):
    with lock, open(out, "a") as f:
        f.write(json.dumps(obj) + "\n")

req = urllib.request.Request(api + "/register", method="POST",
    data=json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
    headers={"Lambda-Extension-Name": os.path.basename(sys.argv[0])})
with urllib.request.urlopen(req) as r:
    ext_id = r.headers["Lambda-Extension-Identifier"]
    record({"registered": json.loads(r.read())})

if os.environ.get("TELEMETRY"):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            for event in json.loads(body):
                record({"telemetry": event})
            self.send_response(200)
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    subscription = {
        "schemaVersion": "2022-07-01",
        "types": ["platform", "function"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:%d" % server.server_address[1]},
    }
    req = urllib.request.Request(base + "/2022-07-01/telemetry", method="PUT",
        data=json.dumps(subscription).encode(), headers={"Lambda-Extension-Identifier": ext_id})
    with urllib.request.urlopen(req) as r:
        record({"subscribed": r.status})

while True:
    req = urllib.request.Request(api + "/event/next", headers={"Lambda-Extension-Identifier": ext_id})
    with urllib.request.urlopen(req) as r:
        event = json.loads(r.read())
    record({"event": event})
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

APP = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    print(event.get("marker", "no marker"))
    return {"requestId": context.aws_request_id}
"""

# An internal extension: the function's own process registers during init and follows INVOKE
# events in a thread.
INTERNAL_APP = """
import json, os, threading, urllib.request
API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2020-01-01/extension"

def register(name):
    req = urllib.request.Request(API + "/register", data=b'{"events":["INVOKE"]}', method="POST",
                                 headers={"Lambda-Extension-Name": name})
    with urllib.request.urlopen(req) as r:
        return r.headers["Lambda-Extension-Identifier"], json.loads(r.read())

EXT, INFO = register("internal")
SEEN = []

def follow():
    while True:
        req = urllib.request.Request(API + "/event/next", headers={"Lambda-Extension-Identifier": EXT})
        with urllib.request.urlopen(req) as r:
            SEEN.append(json.loads(r.read())["requestId"])

threading.Thread(target=follow, daemon=True).start()

def handler(event, context):
    late = None
    if event.get("late"):
        try:
            register("late")
            late = "accepted"
        except urllib.error.HTTPError as e:
            late = "%d %s" % (e.code, json.loads(e.read())["errorType"])
    return {"seen": list(SEEN), "me": context.aws_request_id, "info": INFO, "late": late}
"""


def recorder_layer(lam) -> str:
    script = RECORDER.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1)
    resp = lam.publish_layer_version(
        LayerName=h.uniq("ext-recorder"),
        Content={"ZipFile": h.make_zip({"extensions/recorder": (script, 0o755)})},
    )
    return resp["LayerVersionArn"]


def records(path, want, timeout=5.0):
    """The JSON lines of `path` once `want(lines)` holds (or the last seen, at the timeout)."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            if want(lines):
                return lines
        time.sleep(0.05)
    return lines


def events(lines, kind):
    return [l["event"] for l in lines if "event" in l and l["event"]["eventType"] == kind]


def test_extension_sees_invoke_and_shutdown(lam):
    record = h.scratch_path("ext-record")
    name = h.uniq("ext-fn")
    h.create_function(
        lam,
        name,
        h.py_zip({"app.py": APP}),
        "python3.12",
        "app.handler",
        env={"RECORD_FILE": str(record)},
        Layers=[recorder_layer(lam)],
    )
    ids = []
    for _ in range(2):
        _, body = h.invoke_ok(lam, name, {})
        ids.append(body["requestId"])
        time.sleep(0.3)
    lines = records(record, lambda ls: len(events(ls, "INVOKE")) >= 2)
    registered = [l["registered"] for l in lines if "registered" in l]
    assert registered == [{"functionName": name, "functionVersion": "$LATEST", "handler": "app.handler"}]
    invokes = events(lines, "INVOKE")
    assert [e["requestId"] for e in invokes] == ids
    for e in invokes:
        assert e["invokedFunctionArn"].endswith(f":function:{name}")
        assert e["tracing"]["type"] == "X-Amzn-Trace-Id"
        assert e["deadlineMs"] > time.time() * 1000
    assert not events(lines, "SHUTDOWN")

    # A configuration change retires the environment: the extension gets SHUTDOWN.
    lam.update_function_configuration(FunctionName=name, Description="retire it")
    lines = records(record, lambda ls: events(ls, "SHUTDOWN"), timeout=3.5)
    shutdowns = events(lines, "SHUTDOWN")
    assert len(shutdowns) == 1, lines
    assert shutdowns[0]["shutdownReason"] == "spindown"
    assert isinstance(shutdowns[0]["deadlineMs"], int)


def test_extension_gets_shutdown_timeout_when_the_function_times_out(lam):
    record = h.scratch_path("ext-timeout")
    name = h.uniq("ext-to")
    h.create_function(
        lam,
        name,
        h.py_zip({"app.py": APP}),
        "python3.12",
        "app.handler",
        env={"RECORD_FILE": str(record)},
        Layers=[recorder_layer(lam)],
        Timeout=1,
    )
    resp, body = h.invoke(lam, name, {"sleep": 5})
    assert resp.get("FunctionError") == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    lines = records(record, lambda ls: events(ls, "SHUTDOWN"), timeout=3.5)
    assert len(events(lines, "INVOKE")) == 1
    shutdowns = events(lines, "SHUTDOWN")
    assert [s["shutdownReason"] for s in shutdowns] == ["timeout"], lines
    # the next invocation gets a fresh environment (and a fresh extension)
    h.invoke_ok(lam, name, {})
    lines = records(record, lambda ls: len(events(ls, "INVOKE")) >= 2)
    assert len([l for l in lines if "registered" in l]) == 2
    lam.delete_function(FunctionName=name)


def test_telemetry_subscriber_gets_function_and_platform_events(lam):
    record = h.scratch_path("ext-telemetry")
    name = h.uniq("ext-tel")
    h.create_function(
        lam,
        name,
        h.py_zip({"app.py": APP}),
        "python3.12",
        "app.handler",
        env={"RECORD_FILE": str(record), "TELEMETRY": "1"},
        Layers=[recorder_layer(lam)],
    )
    marker = h.uniq("telemetry-marker")
    _, body = h.invoke_ok(lam, name, {"marker": marker})
    request_id = body["requestId"]

    def telemetry(lines):
        return [l["telemetry"] for l in lines if "telemetry" in l]

    def complete(lines):
        got = telemetry(lines)
        return any(t["type"] == "function" and marker in t["record"] for t in got) and any(
            t["type"] == "platform.report" and t["record"]["requestId"] == request_id for t in got
        )

    lines = records(record, complete)
    assert {"subscribed": 200} in lines
    got = telemetry(lines)
    assert complete(lines), got
    start = [t for t in got if t["type"] == "platform.start"]
    assert start and start[0]["record"] == {"requestId": request_id, "version": "$LATEST"}
    report = next(t for t in got if t["type"] == "platform.report")
    assert report["record"]["status"] == "success"
    metrics = report["record"]["metrics"]
    assert metrics["memorySizeMB"] == 128
    assert {"durationMs", "billedDurationMs", "maxMemoryUsedMB", "initDurationMs"} <= metrics.keys()
    assert all(t["time"].endswith("Z") for t in got)
    lam.delete_function(FunctionName=name)


def test_internal_extension_sees_invokes(lam):
    name = h.uniq("ext-internal")
    h.create_function(lam, name, h.py_zip({"app.py": INTERNAL_APP}), "python3.12", "app.handler")
    _, first = h.invoke_ok(lam, name, {})
    assert first["info"]["functionName"] == name
    time.sleep(0.3)
    _, second = h.invoke_ok(lam, name, {"late": True})
    assert first["me"] in second["seen"]
    assert second["late"] == "403 Extension.RegistrationClosed"
    lam.delete_function(FunctionName=name)
