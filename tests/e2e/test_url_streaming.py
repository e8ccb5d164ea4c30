"""Function URLs in RESPONSE_STREAM mode: the gateway streams the function's response
to the HTTP client with chunked transfer encoding as the runtime produces it.

A Node function (`awslambda.streamifyResponse`) answers by rawPath: with an HTTP
prelude (`awslambda.HttpResponseStream.from`: status, headers, cookies), without one,
failing mid-stream or before its first byte, timing out, or streaming slowly for a
client that goes away. An awslambdaric (Python) function that answers the ordinary way
has its payload streamed as it is, as AWS does on such a URL. Clients: `requests`
(stream=True) and raw sockets.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

import helpers as h
from test_function_urls import make_public, url_id

NODE_URL_STREAMING = h.JS_PID_SNIPPET + """
const fs = require('fs');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {{
  const path = event.rawPath;
  const q = event.queryStringParameters || {{}};
  if (path === '/prelude') {{
    const stream = awslambda.HttpResponseStream.from(responseStream, {{
      statusCode: 201,
      headers: {{ 'content-type': 'text/plain; charset=utf-8', 'x-streamed': 'yes' }},
      cookies: ['a=1; Path=/', 'b=2; HttpOnly'],
    }});
    stream.write(`first ${{Date.now()}}\\n`);
    await sleep(Number(q.pause || 1500));
    stream.end(`last ${{Date.now()}}\\n`);
    return;
  }}
  if (path === '/plain') {{
    responseStream.setContentType('text/csv');
    responseStream.write('a,b\\n');
    await sleep(200);
    responseStream.end('c,d\\n');
    return;
  }}
  if (path === '/default-type') {{
    responseStream.end('bytes');
    return;
  }}
  if (path === '/fail-mid') {{
    const stream = awslambda.HttpResponseStream.from(responseStream, {{ statusCode: 200 }});
    stream.write('partial ');
    await sleep(300);
    throw new Error('broke mid-stream');
  }}
  if (path === '/fail-early') {{
    await sleep(100);
    throw new Error('nothing sent');
  }}
  if (path === '/bad-prelude') {{
    responseStream.setContentType('application/vnd.awslambda.http-integration-response');
    responseStream.write('not json');
    responseStream.end(new Uint8Array(8));
    return;
  }}
  if (path === '/big') {{
    // 21 MiB, over the 20 MiB a streamed response may carry
    responseStream.setContentType('application/octet-stream');
    const block = Buffer.alloc(1024 * 1024, 120);
    for (let i = 0; i < 21; i++) {{
      const ok = responseStream.write(block);
      if (!ok) await new Promise((r) => {{ responseStream.once('drain', r); responseStream.once('close', r); }});
      if (responseStream.destroyed) break;
    }}
    responseStream.end();
    return;
  }}
  if (path === '/sleep') {{
    await sleep(10000);
    responseStream.end('late');
    return;
  }}
  if (path === '/slow') {{
    // many small chunks over ~4 s, then a marker file: the function ran to its end
    responseStream.setContentType('text/plain');
    for (let i = 0; i < 80; i++) {{
      responseStream.write(`tick ${{i}}\\n`);
      await sleep(50);
    }}
    responseStream.end('end\\n');
    if (q.marker) fs.writeFileSync(q.marker, context.awsRequestId);
    return;
  }}
  responseStream.end('no route ' + path);
}});
"""


def _node_zip() -> bytes:
    return h.make_zip({"index.js": NODE_URL_STREAMING.format(pid_dir=json.dumps(str(h.PID_DIR)))})


def _stream_url(lam, name: str, **kw) -> str:
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM", **kw)
    assert created["InvokeMode"] == "RESPONSE_STREAM"
    make_public(lam, name)
    return url_id(created["FunctionUrl"])


@pytest.fixture(scope="module")
def node_url(lam, server):
    """A streaming Node function behind a public RESPONSE_STREAM URL with CORS; its URL
    base (`http://127.0.0.1:<port>/<id>`)."""
    name = h.uniq("urlstream-node")
    h.create_function(lam, name, _node_zip(), "nodejs20.x", "index.handler", Timeout=6, MemorySize=256)
    uid = _stream_url(lam, name, Cors={"AllowOrigins": ["https://app.example"], "ExposeHeaders": ["x-streamed"]})
    base = f"http://127.0.0.1:{server.url_port}/{uid}"
    # warm up, so the timing checks do not include the cold start
    assert requests.get(f"{base}/plain", timeout=30).status_code == 200
    return base


def _read_timed(resp) -> list[tuple[float, bytes]]:
    """The body of a streamed `requests` response as (arrival time, bytes) pieces."""
    return [(time.time(), piece) for piece in resp.iter_content(chunk_size=None) if piece]


def test_prelude_gives_status_headers_cookies_and_chunks_arrive_as_written(node_url):
    with requests.get(f"{node_url}/prelude", stream=True, timeout=30) as resp:
        assert resp.status_code == 201
        assert resp.headers["content-type"] == "text/plain; charset=utf-8"
        assert resp.headers["x-streamed"] == "yes"
        assert resp.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in resp.headers
        assert resp.raw.headers.getlist("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
        assert resp.headers["x-amzn-requestid"]
        pieces = _read_timed(resp)
    body = b"".join(p for _t, p in pieces)
    lines = body.decode().splitlines()
    assert [line.split()[0] for line in lines] == ["first", "last"], body
    # the first line reached the client long before the function wrote the last one
    finished = int(lines[1].split()[1]) / 1000
    first_arrival = pieces[0][0]
    assert b"first" in pieces[0][1] and b"last" not in pieces[0][1], pieces
    assert finished - first_arrival > 1.0, (first_arrival, finished)


def test_stream_without_prelude_is_200_with_the_function_content_type(node_url):
    with requests.get(f"{node_url}/plain", stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/csv"
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.raw.headers.getlist("set-cookie") == []
        assert resp.content == b"a,b\nc,d\n"
    # no content type set: Node's default for streams
    resp = requests.get(f"{node_url}/default-type", timeout=30)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == b"bytes"


def test_cors_headers_on_streamed_responses(node_url):
    resp = requests.get(f"{node_url}/prelude?pause=10", headers={"Origin": "https://app.example"}, timeout=30)
    assert resp.status_code == 201
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    assert resp.headers["access-control-expose-headers"] == "x-streamed"
    resp = requests.get(f"{node_url}/plain", headers={"Origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in resp.headers
    # preflights are answered by the gateway, streamed URL or not
    resp = requests.options(
        f"{node_url}/plain",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://app.example"


def test_error_mid_stream_truncates_the_body(node_url):
    got = b""
    with requests.get(f"{node_url}/fail-mid", stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["transfer-encoding"] == "chunked"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in resp.iter_content(chunk_size=None):
                got += piece
    assert got == b"partial "
    # the same with a raw socket: the connection closes without the last chunk (0\r\n\r\n)
    raw = _raw_get(node_url, "/fail-mid")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert b"partial " in body
    assert not body.endswith(b"0\r\n\r\n"), raw


def _raw_get(base: str, path: str, timeout: float = 30) -> bytes:
    """A GET on a fresh socket, read until the server closes it."""
    port = int(base.split(":")[2].split("/")[0])
    prefix = "/" + base.rsplit("/", 1)[1]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {prefix}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n".encode())
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                return data
            data += piece


def test_error_before_first_byte_is_502(node_url):
    resp = requests.get(f"{node_url}/fail-early", timeout=30)
    assert resp.status_code == 502
    assert resp.json() == {"Message": "Internal Server Error"}
    # an HTTP prelude that is not JSON is the function's fault too
    resp = requests.get(f"{node_url}/bad-prelude", timeout=30)
    assert resp.status_code == 502


def test_response_over_20_mib_is_cut(node_url):
    got = 0
    with requests.get(f"{node_url}/big", stream=True, timeout=60) as resp:
        assert resp.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in resp.iter_content(chunk_size=None):
                got += len(piece)
    assert 18 * 1024 * 1024 < got <= 20 * 1024 * 1024, got
    assert requests.get(f"{node_url}/plain", timeout=30).content == b"a,b\nc,d\n"


def test_timeout_before_first_byte_is_504(node_url):
    started = time.monotonic()
    resp = requests.get(f"{node_url}/sleep", timeout=30)
    assert resp.status_code == 504
    assert resp.json() == {"Message": "Endpoint request timed out"}
    assert time.monotonic() - started < 9
    assert requests.get(f"{node_url}/plain", timeout=30).content == b"a,b\nc,d\n"


def test_timeout_mid_stream_truncates_the_body(node_url):
    got = b""
    started = time.monotonic()
    with requests.get(f"{node_url}/prelude?pause=20000", stream=True, timeout=30) as resp:
        assert resp.status_code == 201
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in resp.iter_content(chunk_size=None):
                got += piece
    assert got.startswith(b"first ") and b"last" not in got, got
    assert 5 < time.monotonic() - started < 15


def test_client_vanishing_mid_stream(node_url):
    marker = h.scratch_path("urlstream-marker")
    port = int(node_url.split(":")[2].split("/")[0])
    prefix = "/" + node_url.rsplit("/", 1)[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {prefix}/slow?marker={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    while b"tick 0" not in first:
        first += sock.recv(65536)
    sock.close()
    started = time.monotonic()
    # other traffic is served at once, while the abandoned stream still runs
    resp = requests.get(f"{node_url}/prelude?pause=10", timeout=30)
    assert resp.status_code == 201 and resp.content.startswith(b"first")
    assert time.monotonic() - started < 3
    # the function ran to its end (its output going nowhere), and serves again
    h.wait_for_file(marker, timeout=15)
    with requests.get(f"{node_url}/slow", stream=True, timeout=30) as resp:
        body = resp.content
    assert body.startswith(b"tick 0\n") and body.endswith(b"tick 79\nend\n")


def test_buffered_python_function_behind_a_streaming_url(lam, server, venv_python):
    # awslambdaric answers the ordinary way: on a RESPONSE_STREAM URL its payload is
    # the body as it is (a statusCode object is not interpreted), as AWS does.
    name = h.uniq("urlstream-ric")
    h.create_function(
        lam, name, h.ric_zip(), "provided.al2023", "app.handler", env={"LAMBENT_TEST_PYTHON": venv_python}, Timeout=10
    )
    uid = _stream_url(lam, name)
    resp = requests.get(f"http://127.0.0.1:{server.url_port}/{uid}/some/path?x=1", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["ric"] == "awslambdaric"
    assert doc["event"]["rawPath"] == "/some/path"
    assert doc["event"]["queryStringParameters"] == {"x": "1"}
    assert doc["request_id"] == resp.headers["x-amzn-requestid"]


def test_switching_invoke_mode_takes_effect(lam, server):
    name = h.uniq("urlstream-switch")
    h.create_function(lam, name, _node_zip(), "nodejs20.x", "index.handler", Timeout=3)
    uid = _stream_url(lam, name)
    url = f"http://127.0.0.1:{server.url_port}/{uid}/plain"
    resp = requests.get(url, timeout=30)
    assert (resp.status_code, resp.content) == (200, b"a,b\nc,d\n")
    # BUFFERED: the streamed body is collected, then mapped as a buffered result (text
    # that is not JSON is the body as returned), and sent with a Content-Length
    lam.update_function_url_config(FunctionName=name, InvokeMode="BUFFERED")
    resp = requests.get(url, timeout=30)
    assert (resp.status_code, resp.content) == (200, b"a,b\nc,d\n")
    assert "transfer-encoding" not in resp.headers
    assert resp.headers["content-length"] == str(len(resp.content))
    lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")
    resp = requests.get(url, timeout=30)
    assert resp.headers["transfer-encoding"] == "chunked"
    assert resp.headers["content-type"] == "text/csv"
