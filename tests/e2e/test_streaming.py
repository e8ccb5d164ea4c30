"""Response streaming: InvokeWithResponseStream through boto3, with Node's
`awslambda.streamifyResponse`, buffered functions, mid-stream errors, the
20 MiB limit, and a custom runtime speaking the Runtime API's streaming mode
(a chunked POST with `Lambda-Runtime-Function-Response-Mode: streaming` and
the error trailers) directly."""

import base64
import json
import time

import pytest

import helpers as h

NODE_STREAMING = h.JS_PID_SNIPPET + """
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {{
  responseStream.setContentType('text/plain');
  const n = event.chunks ?? 3;
  for (let i = 0; i < n; i++) {{
    responseStream.write(`chunk${{i}} ${{Date.now()}}\\n`);
    if (event.delay) await sleep(event.delay);
  }}
  if (event.fail) throw new Error(event.fail);
  if (event.crash) {{
    setTimeout(() => {{ throw new Error('crashed mid-stream'); }}, 10);
    await sleep(5000);
  }}
  if (event.big) {{
    const block = Buffer.alloc(1024 * 1024, 120);
    for (let i = 0; i < event.big; i++) {{
      const ok = responseStream.write(block);
      if (!ok) await new Promise((r) => {{ responseStream.once('drain', r); responseStream.once('close', r); }});
      if (responseStream.destroyed) break;
    }}
  }}
  responseStream.write(`done ${{Date.now()}}\\n`);
  responseStream.end();
}});

exports.http = awslambda.streamifyResponse(async (event, responseStream) => {{
  const stream = awslambda.HttpResponseStream.from(responseStream, {{
    statusCode: 201, headers: {{ 'x-test': 'yes' }},
  }});
  stream.write('hello ');
  stream.end('http');
}});
"""

NODE_BUFFERED = h.JS_PID_SNIPPET + """
exports.handler = async (event) => {{
  if (event.raise) throw new Error(event.raise);
  return {{ buffered: true, event }};
}};
"""

# A custom runtime that streams through the Runtime API by hand: a chunked POST
# with the streaming mode header, each chunk written when it is ready, and a
# mid-stream error in the trailers (base64 error document), as AWS's runtime
# interface clients send it.
PY_STREAMING_RUNTIME = '''
import base64, http.client, json, os, time
{pid_snippet}
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")


def serve():
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    res = conn.getresponse()
    event = json.loads(res.read())
    rid = res.getheader("Lambda-Runtime-Aws-Request-Id")
    out = http.client.HTTPConnection(host, int(port))
    out.putrequest("POST", "/2018-06-01/runtime/invocation/%s/response" % rid)
    out.putheader("Lambda-Runtime-Function-Response-Mode", event.get("mode", "streaming"))
    out.putheader("Transfer-Encoding", "chunked")
    out.putheader("Content-Type", "application/octet-stream")
    out.putheader("Trailer", "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body")
    out.endheaders()
    try:
        chunks = [c.encode() for c in event.get("chunks", [])]
        chunks += [b"y" * (1024 * 1024)] * event.get("big_mib", 0)
        for chunk in chunks:
            out.send(b"%x\\r\\n%s\\r\\n" % (len(chunk), chunk))
            time.sleep(event.get("delay", 0))
        if event.get("error_in_body"):
            # what Rust's lambda_runtime sends: the error lines as the last body chunk
            lines = (
                b"Lambda-Runtime-Function-Error-Type: Runtime.StreamError\\r\\n"
                b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(event["error_in_body"].encode()) + b"\\r\\n"
            )
            out.send(b"%x\\r\\n%s\\r\\n0\\r\\n\\r\\n" % (len(lines), lines))
        elif event.get("error"):
            doc = json.dumps({{"errorType": "Custom.StreamError", "errorMessage": event["error"]}})
            out.send(
                b"0\\r\\nLambda-Runtime-Function-Error-Type: Custom.StreamError\\r\\n"
                b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(doc.encode()) + b"\\r\\n\\r\\n"
            )
        else:
            out.send(b"0\\r\\n\\r\\n")
        status = out.getresponse().status
    except (BrokenPipeError, ConnectionResetError, http.client.HTTPException) as e:
        status = repr(e)
    print("streamed response answered:", status, flush=True)
    out.close()
    conn.close()


while True:
    serve()
'''

PY_BOOTSTRAP = """#!/bin/sh
exec "$LAMBENT_TEST_PYTHON" runtime.py
"""


def _node_zip(src: str) -> bytes:
    return h.make_zip({"index.js": src.format(pid_dir=json.dumps(str(h.PID_DIR)))})


@pytest.fixture(scope="module")
def streaming_fn(lam):
    name = h.uniq("stream-node")
    h.create_function(lam, name, _node_zip(NODE_STREAMING), "nodejs20.x", "index.handler", Timeout=10)
    return name


@pytest.fixture(scope="module")
def buffered_fn(lam):
    name = h.uniq("stream-buffered")
    h.create_function(lam, name, _node_zip(NODE_BUFFERED), "nodejs20.x", "index.handler", Timeout=10)
    return name


@pytest.fixture(scope="module")
def custom_fn(lam, venv_python):
    name = h.uniq("stream-custom")
    snippet = h.PY_PID_SNIPPET.format(pid_dir=str(h.PID_DIR))
    zip_bytes = h.make_zip(
        {
            "bootstrap": (PY_BOOTSTRAP, 0o755),
            "runtime.py": PY_STREAMING_RUNTIME.format(pid_snippet=snippet),
        }
    )
    h.create_function(
        lam, name, zip_bytes, "provided.al2023", "unused", env={"LAMBENT_TEST_PYTHON": venv_python}, Timeout=10
    )
    return name


def stream(lam, name, event, **kw):
    """InvokeWithResponseStream; returns (response, [(arrival, payload)], InvokeComplete)."""
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(event).encode(), **kw)
    assert resp["StatusCode"] == 200
    chunks, complete = [], None
    for ev in resp["EventStream"]:
        if "PayloadChunk" in ev:
            assert complete is None, "a chunk after InvokeComplete"
            chunks.append((time.time(), ev["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in ev:
            complete = ev["InvokeComplete"]
    assert complete is not None, "no InvokeComplete event"
    return resp, chunks, complete


def test_node_streamify_chunks_arrive_as_written(lam, streaming_fn):
    stream(lam, streaming_fn, {"chunks": 1})  # warm up, so init time does not blur the timing
    resp, chunks, complete = stream(lam, streaming_fn, {"chunks": 4, "delay": 400})
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert "ErrorCode" not in complete
    texts = [c.decode() for _t, c in chunks]
    assert [t.split()[0] for t in texts] == ["chunk0", "chunk1", "chunk2", "chunk3", "done"]
    # every chunk is its own event, received about when the function wrote it:
    # the first arrives more than a second before the function finished
    finished_ms = int(texts[-1].split()[1])
    first_arrival = chunks[0][0]
    assert finished_ms / 1000 - first_arrival > 1.0, (finished_ms, first_arrival)
    arrivals = [t for t, _c in chunks]
    for earlier, later in zip(arrivals[:4], arrivals[1:5]):
        assert later - earlier > 0.25, arrivals
    for (arrival, text) in chunks:
        written = int(text.decode().split()[1]) / 1000
        assert arrival - written < 0.3, (arrival, written)


def test_http_response_stream_prelude_passes_through(lam, streaming_fn):
    # the `http` export of the same code, as its own function
    http_name = streaming_fn + "-http"
    h.create_function(lam, http_name, _node_zip(NODE_STREAMING), "nodejs20.x", "index.http", Timeout=10)
    _resp, chunks, complete = stream(lam, http_name, {})
    body = b"".join(c for _t, c in chunks)
    prelude, sep, rest = body.partition(b"\0" * 8)
    assert sep, body
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"x-test": "yes"}}
    assert rest == b"hello http"
    assert "ErrorCode" not in complete


def test_buffered_function_streams_one_chunk(lam, buffered_fn):
    resp, chunks, complete = stream(lam, buffered_fn, {"x": 1}, LogType="Tail")
    assert resp["ExecutedVersion"] == "$LATEST"
    assert len(chunks) == 1
    assert json.loads(chunks[0][1]) == {"buffered": True, "event": {"x": 1}}
    assert "ErrorCode" not in complete
    assert "START RequestId:" in base64.b64decode(complete["LogResult"]).decode()


def test_buffered_function_error(lam, buffered_fn):
    _resp, chunks, complete = stream(lam, buffered_fn, {"raise": "kaboom"})
    assert chunks == []
    assert complete["ErrorCode"] == "Error"
    assert complete["ErrorDetails"] == "kaboom"


def test_node_mid_stream_error(lam, streaming_fn):
    _resp, chunks, complete = stream(lam, streaming_fn, {"chunks": 2, "fail": "broke mid-stream"})
    assert [c.decode().split()[0] for _t, c in chunks] == ["chunk0", "chunk1"]
    assert complete["ErrorCode"] == "Error"
    assert complete["ErrorDetails"] == "broke mid-stream"
    # the environment is fine afterwards
    _resp, chunks, complete = stream(lam, streaming_fn, {"chunks": 1})
    assert "ErrorCode" not in complete


def test_node_crash_mid_stream(lam, streaming_fn):
    _resp, chunks, complete = stream(lam, streaming_fn, {"chunks": 1, "crash": True})
    assert [c.decode().split()[0] for _t, c in chunks] == ["chunk0"]
    assert complete["ErrorCode"] == "Runtime.ExitError", complete
    assert "exit status 129" in complete["ErrorDetails"], complete
    # a new environment serves the next call
    _resp, chunks, complete = stream(lam, streaming_fn, {"chunks": 1})
    assert "ErrorCode" not in complete


def test_plain_invoke_of_streaming_function_gets_whole_body(lam, streaming_fn):
    resp = lam.invoke(FunctionName=streaming_fn, Payload=json.dumps({"chunks": 3, "delay": 50}).encode())
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    lines = resp["Payload"].read().decode().splitlines()
    assert [line.split()[0] for line in lines] == ["chunk0", "chunk1", "chunk2", "done"]
    # a mid-stream error through Invoke is a function error
    resp = lam.invoke(FunctionName=streaming_fn, Payload=json.dumps({"chunks": 1, "fail": "nope"}).encode())
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorMessage"] == "nope"


def test_custom_runtime_streams_via_runtime_api(lam, custom_fn):
    stream(lam, custom_fn, {"chunks": ["warm"]})
    started = time.time()
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["a", "bb", "ccc"], "delay": 0.4})
    assert [c for _t, c in chunks] == [b"a", b"bb", b"ccc"]
    assert "ErrorCode" not in complete
    # the first chunk arrived long before the function finished (it sleeps 1.2 s in all)
    assert chunks[0][0] - started < 0.5
    assert chunks[2][0] - chunks[0][0] > 0.6


def test_custom_runtime_error_trailers(lam, custom_fn):
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["part"], "error": "trailer says no"})
    assert [c for _t, c in chunks] == [b"part"]
    assert complete["ErrorCode"] == "Custom.StreamError"
    assert complete["ErrorDetails"] == "trailer says no"
    # through Invoke: the whole body is replaced by the error, as a function error
    resp = lam.invoke(FunctionName=custom_fn, Payload=json.dumps({"chunks": ["x"], "error": "again"}).encode())
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorType"] == "Custom.StreamError"


def test_error_lines_in_the_body_as_rust_lambda_runtime_sends_them(lam, custom_fn):
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["part"], "error_in_body": "handler failed"})
    assert [c for _t, c in chunks] == [b"part"]
    assert complete["ErrorCode"] == "Runtime.StreamError"
    assert complete["ErrorDetails"] == "handler failed"


def test_unknown_response_mode_fails_the_invocation(lam, custom_fn):
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["x"], "mode": "sideways"})
    assert chunks == []
    assert complete["ErrorCode"] == "Runtime.InvalidResponseModeHeader"
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["fine"]})
    assert [c for _t, c in chunks] == [b"fine"]


def test_response_over_20_mib_is_cut_with_an_error(lam, custom_fn):
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["start"], "big_mib": 21})
    received = sum(len(c) for _t, c in chunks)
    assert 20 * 1024 * 1024 - 2 * 1024 * 1024 < received <= 20 * 1024 * 1024, received
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"
    # and the function still serves the next invocation
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["ok"]})
    assert [c for _t, c in chunks] == [b"ok"]


def test_streaming_timeout(lam):
    name = h.uniq("stream-timeout")
    h.create_function(lam, name, _node_zip(NODE_STREAMING), "nodejs20.x", "index.handler", Timeout=2)
    _resp, chunks, complete = stream(lam, name, {"chunks": 10, "delay": 400})
    assert 1 <= len(chunks) < 10
    assert complete["ErrorCode"] == "Sandbox.Timedout"


def test_errors_before_streaming_are_aws_errors(lam):
    err = h.expect_error(
        lam.invoke_with_response_stream, FunctionName=h.uniq("nope"), Payload=b"{}", status=404
    )
    assert err.code == "ResourceNotFoundException"


def test_dry_run(lam, buffered_fn):
    resp = lam.invoke_with_response_stream(FunctionName=buffered_fn, Payload=b"{}", InvocationType="DryRun")
    assert resp["StatusCode"] == 204


def test_client_vanishing_mid_stream_leaves_the_function_usable(lam, custom_fn):
    resp = lam.invoke_with_response_stream(
        FunctionName=custom_fn,
        Payload=json.dumps({"chunks": ["one"] + ["more"] * 20, "delay": 0.05}).encode(),
    )
    events = iter(resp["EventStream"])
    first = next(events)
    assert first["PayloadChunk"]["Payload"] == b"one"
    resp["EventStream"].close()
    # the runtime finishes its response (dropped) and the environment serves the next call
    _resp, chunks, complete = stream(lam, custom_fn, {"chunks": ["after"]})
    assert [c for _t, c in chunks] == [b"after"]
    assert "ErrorCode" not in complete


def test_needs_invoke_permission(server, lam, buffered_fn):
    from test_access import denied, fn_arn, new_user

    bob = new_user(server, "stream-bob")
    denied(
        bob.client().invoke_with_response_stream,
        user=bob,
        action="lambda:InvokeFunction",
        resource=fn_arn(buffered_fn),
        FunctionName=buffered_fn,
        Payload=b"{}",
    )
    lam.add_permission(
        FunctionName=buffered_fn, StatementId="bob-stream", Action="lambda:InvokeFunction", Principal=bob.arn
    )
    _resp, chunks, complete = stream(bob.client(), buffered_fn, {"who": "bob"})
    assert json.loads(chunks[0][1])["event"] == {"who": "bob"}
