"""Bad input at the HTTP edge of the function URL gateway, with raw sockets: malformed
request lines and headers, slowloris clients (cut off by `--http-header-timeout`, here
2 s, on a server of this module's own), many of them at once, oversized bodies refused
without being read, and clients that close mid-request. After each, the server still
serves ordinary requests.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

import pytest

import helpers as h
from test_function_urls import make_public, url_id

HEADER_TIMEOUT = 2

APP = r'''
import time

def handler(event, context):
    if event.get("rawPath") == "/sleep":
        time.sleep(1)
    return {"statusCode": 200, "body": "ok " + event.get("rawPath", "")}
'''


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """A server of its own with a 2 s header timeout, and a public URL; (server, path prefix)."""
    base = tmp_path_factory.mktemp("edge")
    srv = h.start_server(base / "data", base / "server.log", ["--http-header-timeout", str(HEADER_TIMEOUT)])
    try:
        lam = srv.client()
        name = h.uniq("edge")
        h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=5)
        uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
        make_public(lam, name)
        yield srv, f"/{uid}"
    finally:
        code = srv.terminate()
        assert code == 0, f"server exited with {code}:\n{srv.log_tail()}"


def connect(srv, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.url_port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def get_ok(srv, prefix: str, path: str = "/ping", timeout: float = 10) -> float:
    """An ordinary request; returns how long it took. Fails unless it is answered 200."""
    started = time.monotonic()
    with connect(srv, timeout) as sock:
        sock.sendall(f"GET {prefix}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert reply.endswith(f"ok {path}".encode()), reply[-100:]
    return time.monotonic() - started


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon in this header\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: twelve\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n",
    ],
    ids=["request-line", "header-without-colon", "space-in-name", "bad-content-length", "two-content-lengths", "tls-hello"],
)
def test_malformed_requests_get_400(edge, request_bytes):
    srv, prefix = edge
    with connect(srv) as sock:
        sock.sendall(request_bytes)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    get_ok(srv, prefix)


def test_oversized_headers_are_refused(edge):
    srv, prefix = edge
    with connect(srv) as sock:
        sock.sendall(f"GET {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        try:
            for i in range(2000):
                sock.sendall(f"X-Filler-{i}: {'v' * 500}\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_all(sock)
    # refused once the header buffer is full; nothing reaches the function
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    get_ok(srv, prefix)


def _readable(sock: socket.socket, wait: float) -> bool:
    readable, _, _ = select.select([sock], [], [], wait)
    return bool(readable)


def slow_headers(srv, prefix: str, interval: float, budget: float) -> tuple[float, bytes]:
    """Sends a request's headers one byte per `interval` until the server closes the
    connection (or answers); returns when that happened (seconds) and what it sent."""
    text = f"GET {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {'s' * 200}\r\n\r\n".encode()
    started = time.monotonic()
    with connect(srv, timeout=budget) as sock:
        for byte in text:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if _readable(sock, interval):
                break
            if time.monotonic() - started > budget:
                pytest.fail(f"a slowloris client was still connected after {budget}s")
        else:
            pytest.fail("a request sent one byte at a time was never cut off")
        reply = read_all(sock)
    return time.monotonic() - started, reply


def test_slowloris_client_is_cut_off_by_the_header_timeout(edge):
    srv, prefix = edge
    took, reply = slow_headers(srv, prefix, interval=0.2, budget=15)
    assert HEADER_TIMEOUT - 0.5 <= took <= HEADER_TIMEOUT + 3, took
    # closed, possibly after a 408; never a response from the function
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:200]
    get_ok(srv, prefix)


def test_many_slowloris_clients_do_not_stop_normal_requests(edge):
    srv, prefix = edge
    count = 200
    socks = []
    try:
        for _ in range(count):
            s = connect(srv)
            s.sendall(f"GET {prefix}/x HTTP/1.1\r\nHost: 12".encode())
            socks.append(s)
        stop = threading.Event()

        def dribble():
            while not stop.is_set():
                for s in socks:
                    try:
                        s.sendall(b"7")
                    except OSError:
                        pass
                stop.wait(0.3)

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        # while they hold their connections open, ordinary requests are served promptly
        for _ in range(5):
            assert get_ok(srv, prefix) < 2.0
            time.sleep(0.1)
        # and the header timeout closes all of them
        deadline = time.monotonic() + HEADER_TIMEOUT + 5
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                pytest.fail("a slowloris connection outlived the header timeout")
        stop.set()
        t.join(5)
    finally:
        for s in socks:
            s.close()
    get_ok(srv, prefix)


def test_oversized_body_is_413_without_reading_it(edge):
    srv, prefix = edge
    with connect(srv) as sock:
        sock.sendall(
            f"POST {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
        )
        sock.sendall(b"x" * 1024)
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            piece = sock.recv(65536)
            assert piece, reply
            reply += piece
        # answered at once, with 1 KB of the 200 MB sent
        assert time.monotonic() - started < 2
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # a chunked body is refused once it passes 6 MB, without reading the rest
    with connect(srv, timeout=20) as sock:
        sock.sendall(
            f"POST {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        block = b"y" * 65536
        chunk = b"%x\r\n%s\r\n" % (len(block), block)
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(block)
                if _readable(sock, 0):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 16 * 1024 * 1024, sent
    get_ok(srv, prefix)


def test_client_closing_mid_request(edge):
    srv, prefix = edge
    # mid-headers
    with connect(srv) as sock:
        sock.sendall(f"GET {prefix}/x HTTP/1.1\r\nHost: 127".encode())
    # mid-body
    with connect(srv) as sock:
        sock.sendall(f"POST {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc".encode())
    # with the function running: the client gives up before the answer
    with connect(srv) as sock:
        sock.sendall(f"GET {prefix}/sleep HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        time.sleep(0.2)
    # reset instead of a clean close
    sock = connect(srv)
    sock.sendall(f"POST {prefix}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc".encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    for _ in range(3):
        assert get_ok(srv, prefix) < 5
    assert get_ok(srv, prefix, "/sleep") < 5
