"""Function URLs (BUFFERED): the public gateway on `--http-listen`.

Plain `http.client` clients call URLs by Host (`<id>.lambda-url.<region>.localhost`) and by
path (`/<id>/...`); a Python function answers according to its rawPath: the event it got,
a plain object, a string, a shaped response, binary, an error, a timeout. Access: NONE
needs the public InvokeFunctionUrl permission; AWS_IAM needs a SigV4 signature (service
`lambda`) from a caller allowed `lambda:InvokeFunctionUrl`. CORS preflights are answered
by the gateway.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.parse
from dataclasses import dataclass

import pytest

import helpers as h
from test_access import allow, new_user

APP = r'''
import base64, json, time

def handler(event, context):
    path = event.get("rawPath", "")
    if path.startswith("/echo"):
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"event": event, "version": context.function_version})}
    if path == "/object":
        return {"hello": "world", "n": 1}
    if path == "/string":
        return "just text"
    if path == "/shaped":
        return {"statusCode": 201,
                "headers": {"content-type": "text/plain", "x-one": "1", "x-num": 7},
                "multiValueHeaders": {"x-multi": ["a", "b"]},
                "cookies": ["c1=v1; Path=/", "c2=v2; HttpOnly"],
                "body": "created"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if path == "/empty":
        return {"statusCode": 204}
    if path == "/fail":
        raise RuntimeError("boom")
    if path == "/sleep":
        time.sleep(10)
        return "late"
    if path == "/bad-status":
        return {"statusCode": "teapot"}
    return {"statusCode": 404, "body": "no route " + path}
'''


@dataclass
class Reply:
    status: int
    headers: list  # (lower-case name, value), in order
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        return json.loads(self.body)


def call(server, method: str, path: str, headers=(), body: bytes = b"", host: str | None = None) -> Reply:
    """One HTTP/1.1 request to the URL gateway with exactly `headers` (a list of pairs)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.url_port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{server.url_port}")
        for k, v in headers:
            conn.putheader(k, v)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
    finally:
        conn.close()


def url_id(url: str) -> str:
    m = re.fullmatch(r"http://([a-z0-9]{32})\.lambda-url\.us-east-1\.localhost:(\d+)/", url)
    assert m, url
    return m.group(1)


def make_public(lam, name: str, qualifier: str | None = None):
    kw = {"Qualifier": qualifier} if qualifier else {}
    lam.add_permission(
        FunctionName=name,
        StatementId="public-url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
        **kw,
    )


def new_url_fn(lam, prefix: str, timeout: int = 10) -> str:
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=timeout, MemorySize=128)
    return name


@pytest.fixture(scope="module")
def public(lam, server):
    """A function with a public (NONE) URL and CORS; returns (name, url id)."""
    name = new_url_fn(lam, "url-pub", timeout=2)
    created = lam.create_function_url_config(
        FunctionName=name,
        AuthType="NONE",
        Cors={
            "AllowOrigins": ["https://app.example"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-custom", "content-type"],
            "ExposeHeaders": ["x-one"],
            "MaxAge": 600,
            "AllowCredentials": True,
        },
    )
    assert created["FunctionUrl"].endswith(f".localhost:{server.url_port}/"), created
    make_public(lam, name)
    return name, url_id(created["FunctionUrl"])


# --------------------------------------------------------------------------
# addressing and the event


def test_function_url_uses_the_gateway_port(lam, server, public):
    name, uid = public
    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == f"http://{uid}.lambda-url.us-east-1.localhost:{server.url_port}/"
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [got["FunctionUrl"]]


def test_host_based_and_path_based_addressing(server, public):
    name, uid = public
    by_host = call(server, "GET", "/echo/a/b?x=1", host=f"{uid}.lambda-url.us-east-1.localhost:{server.url_port}")
    assert by_host.status == 200, by_host
    event = by_host.json()["event"]
    assert event["rawPath"] == "/echo/a/b"
    assert event["requestContext"]["domainName"] == f"{uid}.lambda-url.us-east-1.localhost"
    by_path = call(server, "GET", f"/{uid}/echo/a/b?x=1")
    assert by_path.status == 200, by_path
    event = by_path.json()["event"]
    assert event["rawPath"] == "/echo/a/b"
    assert event["requestContext"]["http"]["path"] == "/echo/a/b"
    assert by_host.header("x-amzn-requestid")


def test_unknown_url_is_404(server):
    r = call(server, "GET", "/" + "0" * 32 + "/echo")
    assert r.status == 404
    assert r.json() == {"Message": "Not Found"}
    assert call(server, "GET", "/not-a-url").status == 404


def test_event_fields_match_payload_format_2(server, public):
    name, uid = public
    before = int(time.time() * 1000)
    r = call(
        server,
        "POST",
        f"/{uid}/echo/items?b=3&a=1&a=2&sp=a%20b&plus=c+d&empty=",
        headers=[
            ("User-Agent", "e2e-client/1.0"),
            ("Content-Type", "application/json"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("X-Mixed-Case", "Value"),
            ("Cookie", "c1=v1; c2=v2"),
            ("Cookie", "c3=v3"),
        ],
        body=b'{"k": "v"}',
    )
    assert r.status == 200, r
    event = r.json()["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo/items"
    assert event["rawQueryString"] == "b=3&a=1&a=2&sp=a%20b&plus=c+d&empty="
    assert event["queryStringParameters"] == {"b": "3", "a": "1,2", "sp": "a b", "plus": "c d", "empty": ""}
    assert event["cookies"] == ["c1=v1", "c2=v2", "c3=v3"]
    headers = event["headers"]
    assert all(k == k.lower() for k in headers), headers
    assert "cookie" not in headers
    assert headers["x-multi"] == "one,two"
    assert headers["x-mixed-case"] == "Value"
    assert headers["user-agent"] == "e2e-client/1.0"
    assert headers["content-type"] == "application/json"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert event["body"] == '{"k": "v"}'
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event and "stageVariables" not in event
    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous"
    assert ctx["apiId"] == uid
    assert ctx["domainPrefix"] == uid
    assert ctx["domainName"] == f"{uid}.lambda-url.us-east-1.localhost"
    assert ctx["http"] == {
        "method": "POST",
        "path": "/echo/items",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "e2e-client/1.0",
    }
    assert ctx["routeKey"] == "$default" and ctx["stage"] == "$default"
    assert ctx["requestId"] == r.header("x-amzn-requestid")
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["time"]), ctx["time"]
    assert before - 1000 <= ctx["timeEpoch"] <= int(time.time() * 1000) + 1000
    assert "authorizer" not in ctx


def test_get_without_query_or_body(server, public):
    _, uid = public
    event = call(server, "GET", f"/{uid}/echo").json()["event"]
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event
    assert "cookies" not in event
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    # The bare id is the root path (the function answers 404 for it itself).
    root = call(server, "GET", f"/{uid}")
    assert (root.status, root.body) == (404, b"no route /")


def test_binary_request_body_is_base64(server, public):
    _, uid = public
    blob = bytes(range(256)) * 4
    r = call(server, "POST", f"/{uid}/echo", headers=[("Content-Type", "application/octet-stream")], body=blob)
    event = r.json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == blob
    # Text that is not UTF-8 is binary too.
    r = call(server, "POST", f"/{uid}/echo", headers=[("Content-Type", "text/plain")], body=b"\xff\xfe")
    event = r.json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


# --------------------------------------------------------------------------
# response mapping


def test_plain_object_becomes_200_json(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/object")
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert r.json() == {"hello": "world", "n": 1}


def test_string_becomes_200_body(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/string")
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert r.body == b"just text"


def test_shaped_response_status_headers_cookies(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/shaped")
    assert r.status == 201
    assert r.body == b"created"
    assert r.header("content-type") == "text/plain"
    assert r.header("x-one") == "1"
    assert r.header("x-num") == "7"
    assert r.all("x-multi") == ["a", "b"]
    assert r.all("set-cookie") == ["c1=v1; Path=/", "c2=v2; HttpOnly"]


def test_binary_response_is_decoded(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/binary")
    assert r.status == 200
    assert r.body == bytes(range(256))
    assert r.header("content-type") == "application/octet-stream"


def test_status_only_response(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/empty")
    assert r.status == 204
    assert r.body == b""


def test_function_error_is_502(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/fail")
    assert r.status == 502
    assert r.json() == {"Message": "Internal Server Error"}
    r = call(server, "GET", f"/{uid}/bad-status")
    assert r.status == 502


def test_timeout_is_504(server, public):
    _, uid = public
    started = time.monotonic()
    r = call(server, "GET", f"/{uid}/sleep")
    assert r.status == 504, r
    assert time.monotonic() - started < 9
    # The function still answers afterwards.
    assert call(server, "GET", f"/{uid}/object").status == 200


def test_oversized_body_is_413_at_the_edge(server, public):
    _, uid = public
    # Refused on its Content-Length, before the body is read or the function runs.
    conn = http.client.HTTPConnection("127.0.0.1", server.url_port, timeout=30)
    try:
        conn.putrequest("POST", f"/{uid}/echo")
        conn.putheader("Content-Length", str(6 * 1024 * 1024 + 1))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read()) == {"Message": "Request Entity Too Large"}
    finally:
        conn.close()
    # A body just under the limit passes the edge (the event, base64 or not, then has to
    # fit the 6 MB invoke payload: a 5 MB body does).
    r = call(server, "POST", f"/{uid}/object", headers=[("Content-Type", "text/plain")], body=b"x" * (5 * 1024 * 1024))
    assert r.status == 200, r.status


# --------------------------------------------------------------------------
# CORS


def test_cors_preflight_answered_by_the_gateway(server, public):
    _, uid = public
    r = call(
        server,
        "OPTIONS",
        f"/{uid}/echo",
        headers=[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "x-custom"),
        ],
    )
    assert r.status == 200
    assert r.body == b""
    assert r.header("access-control-allow-origin") == "https://app.example"
    assert r.header("access-control-allow-methods") == "GET,POST"
    assert r.header("access-control-allow-headers") == "x-custom,content-type"
    assert r.header("access-control-max-age") == "600"
    assert r.header("access-control-allow-credentials") == "true"
    # An origin not in AllowOrigins gets no CORS headers.
    r = call(
        server,
        "OPTIONS",
        f"/{uid}/echo",
        headers=[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
    )
    assert r.header("access-control-allow-origin") is None


def test_cors_headers_on_responses(server, public):
    _, uid = public
    r = call(server, "GET", f"/{uid}/shaped", headers=[("Origin", "https://app.example")])
    assert r.status == 201
    assert r.header("access-control-allow-origin") == "https://app.example"
    assert r.header("access-control-expose-headers") == "x-one"
    assert r.header("access-control-allow-credentials") == "true"
    r = call(server, "GET", f"/{uid}/shaped")
    assert r.header("access-control-allow-origin") is None


# --------------------------------------------------------------------------
# access


def test_none_without_public_permission_is_403(lam, server):
    name = new_url_fn(lam, "url-priv")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    r = call(server, "GET", f"/{uid}/object")
    assert r.status == 403
    assert r.json() == {"Message": "Forbidden"}
    # A permission for another auth type does not open a NONE URL.
    lam.add_permission(
        FunctionName=name, StatementId="iam-only", Action="lambda:InvokeFunctionUrl",
        Principal="*", FunctionUrlAuthType="AWS_IAM",
    )
    assert call(server, "GET", f"/{uid}/object").status == 403
    make_public(lam, name)
    assert call(server, "GET", f"/{uid}/object").status == 200
    lam.remove_permission(FunctionName=name, StatementId="public-url")
    assert call(server, "GET", f"/{uid}/object").status == 403


def signed_call(server, uid: str, path: str, key: str, secret: str, method: str = "GET", body: bytes = b"") -> Reply:
    url = f"http://127.0.0.1:{server.url_port}/{uid}{path}"
    headers = h.sigv4_sign(method, url, key, secret, body=body, service="lambda")
    headers.pop("Host", None)
    return call(server, method, f"/{uid}{path}", headers=list(headers.items()), body=body)


def test_aws_iam_signed_unsigned_and_unauthorized(lam, server):
    name = new_url_fn(lam, "url-iam")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"])
    # Unsigned: refused, even with the public permission for NONE.
    make_public(lam, name)
    assert call(server, "GET", f"/{uid}/echo").status == 403
    # Signed by the account root.
    creds = server.credentials
    r = signed_call(server, uid, "/echo/x?q=1", creds["access_key_id"], creds["secret_access_key"])
    assert r.status == 200, r
    event = r.json()["event"]
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == creds["access_key_id"]
    assert iam["accountId"] == h.ACCOUNT
    assert iam["userArn"] == f"arn:aws:iam::{h.ACCOUNT}:root"
    assert iam["cognitoIdentity"] is None
    assert event["requestContext"]["accountId"] == h.ACCOUNT
    assert event["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")
    # A signed POST with a body.
    r = signed_call(server, uid, "/echo", creds["access_key_id"], creds["secret_access_key"], "POST", b"payload")
    assert r.status == 200 and r.json()["event"]["body"] == "payload"
    # A bad signature.
    r = signed_call(server, uid, "/echo", creds["access_key_id"], "wrong-secret")
    assert r.status == 403
    # A user without rights, then with lambda:InvokeFunctionUrl on the function.
    nobody = new_user(server, "url-nobody", {"Version": "2012-10-17", "Statement": [allow("lambda:InvokeFunction")]})
    assert signed_call(server, uid, "/echo", nobody.key_id, nobody.secret).status == 403
    arn = h.function_arn(name)
    user = new_user(server, "url-user", {"Version": "2012-10-17", "Statement": [allow("lambda:InvokeFunctionUrl", arn)]})
    r = signed_call(server, uid, "/echo", user.key_id, user.secret)
    assert r.status == 200, r
    assert r.json()["event"]["requestContext"]["authorizer"]["iam"]["userArn"] == user.arn
    # Or through the function's resource policy naming the user.
    other = new_user(server, "url-other")
    assert signed_call(server, uid, "/echo", other.key_id, other.secret).status == 403
    lam.add_permission(
        FunctionName=name, StatementId="other-user", Action="lambda:InvokeFunctionUrl",
        Principal=other.arn, FunctionUrlAuthType="AWS_IAM",
    )
    assert signed_call(server, uid, "/echo", other.key_id, other.secret).status == 200


# --------------------------------------------------------------------------
# aliases and lifecycle


def test_alias_qualified_url(lam, server):
    name = new_url_fn(lam, "url-alias")
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    latest = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    live = url_id(lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")["FunctionUrl"])
    assert live != latest
    # The alias has its own resource policy.
    make_public(lam, name)
    assert call(server, "GET", f"/{live}/echo").status == 403
    make_public(lam, name, "live")
    assert call(server, "GET", f"/{live}/echo").json()["version"] == version
    assert call(server, "GET", f"/{latest}/echo").json()["version"] == "$LATEST"


def test_deleted_url_config_is_404(lam, server):
    name = new_url_fn(lam, "url-del")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    assert call(server, "GET", f"/{uid}/object").status == 200
    lam.delete_function_url_config(FunctionName=name)
    assert call(server, "GET", f"/{uid}/object").status == 404
    # Updating the auth type takes effect at once.
    lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert call(server, "GET", f"/{uid}/object").status == 200
    lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert call(server, "GET", f"/{uid}/object").status == 403


def test_query_string_keys_are_decoded(server, public):
    _, uid = public
    q = urllib.parse.urlencode([("k y", "v&1"), ("k y", "v2")])
    event = call(server, "GET", f"/{uid}/echo?{q}").json()["event"]
    assert event["queryStringParameters"] == {"k y": "v&1,v2"}
    assert event["rawQueryString"] == q


def test_throttled_is_429(lam, server):
    name = new_url_fn(lam, "url-throttle")
    uid = url_id(lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"])
    make_public(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    r = call(server, "GET", f"/{uid}/object")
    assert r.status == 429
    assert r.json() == {"Message": "Rate Exceeded."}
    lam.delete_function_concurrency(FunctionName=name)
    assert call(server, "GET", f"/{uid}/object").status == 200


def test_aws_iam_signed_for_the_host_style_address(lam, server):
    name = new_url_fn(lam, "url-iam-host")
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    host = url.split("//", 1)[1].rstrip("/")
    creds = server.credentials
    headers = h.sigv4_sign("GET", url + "echo?a=1", creds["access_key_id"], creds["secret_access_key"])
    headers.pop("Host", None)
    r = call(server, "GET", "/echo?a=1", headers=list(headers.items()), host=host)
    assert r.status == 200, r
    assert r.json()["event"]["queryStringParameters"] == {"a": "1"}
    # The signature covers the Host: the same headers sent to another name fail.
    r = call(server, "GET", f"/{url_id(url)}/echo?a=1", headers=list(headers.items()))
    assert r.status == 403


def test_cors_wildcard_origin(lam, server):
    name = new_url_fn(lam, "url-cors")
    uid = url_id(
        lam.create_function_url_config(
            FunctionName=name, AuthType="NONE", Cors={"AllowOrigins": ["*"], "AllowMethods": ["*"]}
        )["FunctionUrl"]
    )
    make_public(lam, name)
    r = call(server, "OPTIONS", f"/{uid}/x", headers=[("Origin", "https://any.example"), ("Access-Control-Request-Method", "PUT")])
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "*"
    assert r.header("access-control-allow-methods") == "*"
    assert r.header("access-control-allow-credentials") is None
    r = call(server, "GET", f"/{uid}/object", headers=[("Origin", "https://any.example")])
    assert r.status == 200 and r.header("access-control-allow-origin") == "*"
    # Without Cors, OPTIONS goes to the function.
    lam.update_function_url_config(FunctionName=name, Cors={})
    r = call(server, "OPTIONS", f"/{uid}/object", headers=[("Origin", "https://any.example"), ("Access-Control-Request-Method", "PUT")])
    assert r.status == 200 and r.json() == {"hello": "world", "n": 1}
