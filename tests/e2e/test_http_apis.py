"""HTTP APIs on the gateway listener (`--http-listen`): APIs, routes, stages and
deployments made with the `lambent api` CLI or imported from OpenAPI 3; payload format 1.0
and 2.0 events checked field by field; route matching; error statuses; CORS; JWT
authorizers (RS256 and ES256 tokens signed here with `cryptography`, keys served over HTTP,
from a file, or found by OpenID discovery); Lambda authorizers (simple responses, IAM
policies, caching); AWS_IAM routes signed for `execute-api`. Clients: `requests` and
`http.client` for a custom Host.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import helpers as h
from test_access import allow, new_user, policy
from test_function_urls import call
from test_lambent_cli import as_json, lambent

APP = r'''
import base64, json, time

def handler(event, context):
    path = event.get("rawPath") or event.get("path") or ""
    if path.endswith("/fail"):
        raise RuntimeError("boom")
    if path.endswith("/sleep"):
        time.sleep(3)
        return "late"
    if path.endswith("/plain"):
        return {"plain": True}
    if path.endswith("/shaped"):
        return {"statusCode": 201, "headers": {"x-one": "1", "content-type": "text/plain"},
                "multiValueHeaders": {"x-multi": ["a", "b"]}, "body": "created"}
    if path.endswith("/binary"):
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event})}
'''

AUTHORIZER = r'''
import json, os

def handler(event, context):
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps(event) + "\n")
    headers = event.get("headers") or {}
    token = headers.get("authorization", "")
    if "methodArn" in event:
        effect = "Allow" if token == "letmein" else "Deny"
        return {"principalId": "user-1",
                "policyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}]},
                "context": {"user": "u1", "n": 7}}
    if token == "explode":
        raise RuntimeError("authorizer broke")
    return {"isAuthorized": token == "letmein", "context": {"user": "u1", "n": 7}}
'''


def api(server, *args, check=True):
    proc = lambent(server, "api", *args, "--output", "json", check=check)
    return as_json(proc) if check else proc


def new_app(lam, prefix="api-fn", timeout=10) -> str:
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=timeout, MemorySize=128)
    return name


def base(server, api_id: str) -> str:
    return f"http://127.0.0.1:{server.url_port}/{api_id}"


def event_of(resp) -> dict:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()["event"]


@pytest.fixture(scope="module")
def app_fn(lam):
    return new_app(lam)


def test_cli_create_route_deploy_and_the_2_0_event(server, lam, app_fn):
    created = api(server, "create", "shop")
    api_id = created["ApiId"]
    assert created["ProtocolType"] == "HTTP" and len(api_id) == 10
    route = api(server, "route", "add", api_id, "GET /items/{id}", "--target", app_fn)
    assert route["RouteKey"] == "GET /items/{id}" and route["PayloadFormatVersion"] == "2.0"
    api(server, "stage", "add", api_id, "prod", "--var", "color=blue")
    # A stage serves nothing before its first deployment.
    assert requests.get(f"{base(server, api_id)}/prod/items/1", timeout=30).status_code == 404
    deployed = api(server, "deploy", api_id, "--stage", "prod")
    assert deployed["StageName"] == "prod" and deployed["Routes"] == 1

    resp = requests.get(
        f"{base(server, api_id)}/prod/items/42?a=1&a=2&b=x%20y",
        headers={"X-Dup": "one", "Cookie": "c1=v1; c2=v2", "User-Agent": "lambent-test/1"},
        timeout=30,
    )
    event = event_of(resp)
    assert resp.headers["apigw-requestid"] == event["requestContext"]["requestId"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/prod/items/42"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["stageVariables"] == {"color": "blue"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-dup"] == "one"
    assert "cookie" not in event["headers"]
    assert event["isBase64Encoded"] is False and "body" not in event
    ctx = event["requestContext"]
    assert ctx["apiId"] == api_id and ctx["domainPrefix"] == api_id
    assert ctx["domainName"] == f"{api_id}.execute-api.{h.REGION}.localhost"
    assert ctx["accountId"] == h.ACCOUNT
    assert ctx["stage"] == "prod" and ctx["routeKey"] == "GET /items/{id}"
    assert ctx["http"] == {
        "method": "GET",
        "path": "/prod/items/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "lambent-test/1",
    }
    assert abs(ctx["timeEpoch"] / 1000 - time.time()) < 60
    assert "authorizer" not in ctx

    # Host-based addressing reaches the same route.
    r = call(server, "GET", "/prod/items/7", host=f"{api_id}.execute-api.{h.REGION}.localhost:{server.url_port}")
    assert r.status == 200, r
    assert r.json()["event"]["pathParameters"] == {"id": "7"}

    # A route added later is served only after the next deployment.
    api(server, "route", "add", api_id, "POST /items", "--target", app_fn)
    assert requests.post(f"{base(server, api_id)}/prod/items", data="x", timeout=30).status_code == 404
    api(server, "deploy", api_id, "--stage", "prod")
    resp = requests.post(
        f"{base(server, api_id)}/prod/items",
        data=bytes(range(256)),
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    event = event_of(resp)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == bytes(range(256))
    assert "pathParameters" not in event

    # Text output fits a terminal and names the route.
    text = lambent(server, "api", "get", api_id).stdout
    assert "GET /items/{id}" in text and "stage prod" in text
    listed = api(server, "ls")
    assert any(a["ApiId"] == api_id for a in listed["Items"])


def test_quick_create_serves_everything_on_the_default_stage(server, app_fn):
    created = api(server, "create", "quick", "--target", app_fn)
    api_id = created["ApiId"]
    assert [s["StageName"] for s in created["Stages"]] == ["$default"]
    event = event_of(requests.get(f"{base(server, api_id)}/any/path/here?x=1", timeout=30))
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/any/path/here"
    assert event["requestContext"]["stage"] == "$default"
    assert "pathParameters" not in event and "stageVariables" not in event
    # Auto-deploy: a new route is served at once.
    api(server, "route", "add", api_id, "GET /only/{thing}", "--target", app_fn)
    event = event_of(requests.get(f"{base(server, api_id)}/only/this", timeout=30))
    assert event["routeKey"] == "GET /only/{thing}"


def test_the_most_specific_route_wins(server, app_fn):
    api_id = api(server, "create", "routing")["ApiId"]
    for key in ["GET /items/special", "GET /items/{id}", "ANY /items/{id}", "ANY /{proxy+}", "GET /", "$default"]:
        api(server, "route", "add", api_id, key, "--target", app_fn)
    api(server, "deploy", api_id)
    b = base(server, api_id)

    def key(method, path):
        resp = requests.request(method, f"{b}{path}", timeout=30)
        return event_of(resp)["routeKey"], event_of(resp).get("pathParameters")

    assert key("GET", "/items/special") == ("GET /items/special", None)
    assert key("GET", "/items/9") == ("GET /items/{id}", {"id": "9"})
    assert key("DELETE", "/items/9") == ("ANY /items/{id}", {"id": "9"})
    assert key("PUT", "/a/b/c") == ("ANY /{proxy+}", {"proxy": "a/b/c"})
    assert key("GET", "/") == ("GET /", None)
    assert key("POST", "/")[0] == "$default"


def test_payload_1_0_event_and_response(server, app_fn):
    api_id = api(server, "create", "v1")["ApiId"]
    api(server, "route", "add", api_id, "POST /orders/{id}", "--target", app_fn, "--payload-format", "1.0")
    api(server, "route", "add", api_id, "GET /orders/{id}/{what}", "--target", app_fn, "--payload-format", "1.0")
    api(server, "stage", "add", api_id, "live", "--var", "tier=gold")
    api(server, "deploy", api_id, "--stage", "live")
    b = base(server, api_id)
    resp = requests.post(
        f"{b}/live/orders/5?k=1&k=2&solo=s",
        data='{"n": 1}',
        headers={"Content-Type": "application/json", "X-Multi": "a", "Cookie": "c=1"},
        timeout=30,
    )
    event = event_of(resp)
    assert event["version"] == "1.0"
    assert event["resource"] == "/orders/{id}"
    assert event["path"] == "/live/orders/5"
    assert event["httpMethod"] == "POST"
    assert event["headers"]["x-multi"] == "a" and event["headers"]["cookie"] == "c=1"
    assert event["multiValueHeaders"]["x-multi"] == ["a"]
    assert event["queryStringParameters"] == {"k": "2", "solo": "s"}
    assert event["multiValueQueryStringParameters"] == {"k": ["1", "2"], "solo": ["s"]}
    assert event["pathParameters"] == {"id": "5"}
    assert event["stageVariables"] == {"tier": "gold"}
    assert event["body"] == '{"n": 1}' and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["resourcePath"] == "/orders/{id}" and ctx["httpMethod"] == "POST"
    assert ctx["path"] == "/live/orders/5" and ctx["stage"] == "live"
    assert ctx["apiId"] == api_id and ctx["accountId"] == h.ACCOUNT
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userArn"] is None
    assert isinstance(ctx["requestTimeEpoch"], int) and ctx["protocol"] == "HTTP/1.1"

    # No query string: nulls, as API Gateway sends.
    event = event_of(requests.get(f"{b}/live/orders/5/echo", timeout=30))
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["body"] is None
    # A shaped 1.0 response with multiValueHeaders.
    resp = requests.get(f"{b}/live/orders/5/shaped", timeout=30)
    assert resp.status_code == 201 and resp.text == "created"
    assert resp.headers["x-one"] == "1" and resp.headers["x-multi"] == "a, b"
    # 1.0 needs a statusCode: anything else is a bad gateway.
    resp = requests.get(f"{b}/live/orders/5/plain", timeout=30)
    assert resp.status_code == 502 and resp.json() == {"message": "Internal Server Error"}


def test_error_statuses(server, lam):
    fn = new_app(lam, "api-err")
    api_id = api(server, "create", "errors")["ApiId"]
    api(server, "route", "add", api_id, "ANY /{proxy+}", "--target", fn, "--timeout-ms", "1000")
    api(server, "deploy", api_id)
    b = base(server, api_id)
    resp = requests.get(f"{b}/x/fail", timeout=30)
    assert resp.status_code == 502 and resp.json() == {"message": "Internal Server Error"}
    started = time.monotonic()
    resp = requests.get(f"{b}/x/sleep", timeout=30)
    assert resp.status_code == 503 and resp.json() == {"message": "Service Unavailable"}
    assert time.monotonic() - started < 2.5
    # Plain JSON and binary answers under 2.0.
    assert requests.get(f"{b}/x/plain", timeout=30).json() == {"plain": True}
    resp = requests.get(f"{b}/x/binary", timeout=30)
    assert resp.content == bytes(range(256))
    # Unknown API, stage-less API, route-less path.
    assert requests.get(f"http://127.0.0.1:{server.url_port}/zzzzzzzzzz/x", timeout=30).status_code == 404
    bare = api(server, "create", "bare")["ApiId"]
    resp = requests.get(f"{base(server, bare)}/x", timeout=30)
    assert resp.status_code == 404 and resp.json() == {"message": "Not Found"}
    # Over 10 MB: refused at the edge without invoking.
    resp = requests.post(f"{b}/x/echo", data=b"x" * (10 * 1024 * 1024 + 1), timeout=60)
    assert resp.status_code == 413
    # The function behind an API is gone: 500.
    lam.delete_function(FunctionName=fn)
    resp = requests.get(f"{b}/x/echo", timeout=30)
    assert resp.status_code == 500 and resp.json() == {"message": "Internal Server Error"}


def test_cors_preflight_and_response_headers(server, app_fn):
    api_id = api(
        server, "create", "cors", "--cors-origin", "https://app.example", "--cors-method", "GET",
        "--cors-method", "POST", "--cors-header", "x-token",
    )["ApiId"]
    api(server, "route", "add", api_id, "ANY /{proxy+}", "--target", app_fn)
    api(server, "deploy", api_id)
    b = base(server, api_id)
    resp = requests.options(
        f"{b}/thing",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    assert resp.headers["access-control-allow-methods"] == "GET,POST"
    assert resp.headers["access-control-allow-headers"] == "x-token"
    resp = requests.get(f"{b}/thing", headers={"Origin": "https://app.example"}, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    resp = requests.get(f"{b}/thing", headers={"Origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in resp.headers


# ---------------------------------------------------------------------------------------
# JWT authorizers


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Issuer:
    """An OpenID issuer served over HTTP: discovery document and key set."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        pub = self.rsa.public_key().public_numbers()
        ecpub = self.ec.public_key().public_numbers()
        self.jwks = {
            "keys": [
                {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": int_b64(pub.n), "e": int_b64(pub.e)},
                {
                    "kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256",
                    "x": b64u(ecpub.x.to_bytes(32, "big")), "y": b64u(ecpub.y.to_bytes(32, "big")),
                },
            ]
        }
        self.fetches = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps({"issuer": issuer.url, "jwks_uri": issuer.url + "/keys"}).encode()
                elif self.path == "/keys":
                    issuer.fetches += 1
                    body = json.dumps(issuer.jwks).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, alg="RS256", kid=None, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": "shop-app", "sub": "alice", "exp": now + 600, "iat": now, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        header = {"alg": alg, "typ": "JWT", "kid": kid or ("rsa1" if alg == "RS256" else "ec1")}
        signing = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}".encode()
        if alg == "RS256":
            sig = self.rsa.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.ec.sign(signing, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing.decode() + "." + b64u(sig)


@pytest.fixture(scope="module")
def issuer():
    iss = Issuer()
    yield iss
    iss.httpd.shutdown()


def test_jwt_authorizer(server, app_fn, issuer, tmp_path):
    api_id = api(server, "create", "jwt")["ApiId"]
    authorizer = api(
        server, "authorizer", "add", api_id, "tokens", "--issuer", issuer.url, "--audience", "shop-app",
        "--jwks", issuer.url + "/keys",
    )
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    aid = authorizer["AuthorizerId"]
    api(server, "route", "add", api_id, "GET /me", "--target", app_fn, "--auth", "JWT", "--authorizer", aid)
    api(server, "route", "add", api_id, "GET /admin", "--target", app_fn, "--auth", "JWT", "--authorizer", aid,
        "--scope", "admin", "--scope", "root")
    api(server, "route", "add", api_id, "GET /open", "--target", app_fn)
    api(server, "deploy", api_id)
    b = base(server, api_id)

    def get(path, token=None, prefix="Bearer "):
        headers = {"Authorization": prefix + token} if token else {}
        return requests.get(f"{b}{path}", headers=headers, timeout=30)

    event = event_of(get("/me", issuer.token(scope="read write", groups=["a", "b"], n=5)))
    jwt = event["requestContext"]["authorizer"]["jwt"]
    assert jwt["claims"]["sub"] == "alice" and jwt["claims"]["iss"] == issuer.url
    assert jwt["claims"]["n"] == "5" and jwt["claims"]["groups"] == "[a b]"
    assert jwt["scopes"] == ["read", "write"]
    # ES256, and a token without the Bearer prefix.
    assert get("/me", issuer.token(alg="ES256"), prefix="").status_code == 200
    assert get("/open").status_code == 200
    # Refusals: 401 with the reason in www-authenticate.
    for token in [
        None,
        "not.a.jwt",
        issuer.token(exp=int(time.time()) - 10),
        issuer.token(aud="someone-else"),
        issuer.token(iss="https://other.example"),
        issuer.token(nbf=int(time.time()) + 600),
        issuer.token(kid="unknown"),
        issuer.token()[:-6] + "AAAAAA",
    ]:
        resp = get("/me", token)
        assert resp.status_code == 401, (token, resp.text)
        assert resp.json() == {"message": "Unauthorized"}
    assert "expired" in get("/me", issuer.token(exp=int(time.time()) - 10)).headers["www-authenticate"]
    # Scopes: any one of the route's.
    assert get("/admin", issuer.token(scope="read")).status_code == 403
    assert get("/admin", issuer.token(scope="read root")).status_code == 200
    assert get("/admin", issuer.token(scp=["admin"])).status_code == 200

    # Keys from a file on the server, and by OpenID discovery from the issuer.
    keys_file = tmp_path / "jwks.json"
    keys_file.write_text(json.dumps(issuer.jwks))
    for extra in (["--jwks", str(keys_file)], []):
        other = api(server, "create", "jwt-keys")["ApiId"]
        aid = api(server, "authorizer", "add", other, "t", "--issuer", issuer.url, "--audience", "shop-app", *extra)[
            "AuthorizerId"
        ]
        api(server, "route", "add", other, "GET /me", "--target", app_fn, "--auth", "JWT", "--authorizer", aid)
        api(server, "deploy", other)
        ok = requests.get(f"{base(server, other)}/me", headers={"Authorization": "Bearer " + issuer.token()}, timeout=30)
        assert ok.status_code == 200, (extra, ok.text)


# ---------------------------------------------------------------------------------------
# Lambda authorizers


@pytest.fixture(scope="module")
def authorizer_fn(lam, tmp_path_factory):
    record = tmp_path_factory.mktemp("authz") / "calls.jsonl"
    name = h.uniq("api-authz")
    h.create_function(
        lam, name, h.py_zip({"app.py": AUTHORIZER}), "python3.12", "app.handler", env={"RECORD_FILE": str(record)}
    )
    return name, record


def calls(record: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_lambda_authorizer_simple_responses_and_cache(server, app_fn, authorizer_fn):
    fn, record = authorizer_fn
    api_id = api(server, "create", "lambda-authz")["ApiId"]
    aid = api(server, "authorizer", "add", api_id, "simple", "--function", fn, "--simple",
              "--identity-source", "$request.header.Authorization", "--ttl", "300")["AuthorizerId"]
    api(server, "route", "add", api_id, "GET /secret/{id}", "--target", app_fn, "--auth", "CUSTOM", "--authorizer", aid)
    api(server, "stage", "add", api_id, "dev", "--var", "v=1")
    api(server, "deploy", api_id, "--stage", "dev")
    b = base(server, api_id)
    before = len(calls(record))
    resp = requests.get(f"{b}/dev/secret/3?q=1", headers={"Authorization": "letmein"}, timeout=30)
    event = event_of(resp)
    assert event["requestContext"]["authorizer"]["lambda"] == {"user": "u1", "n": 7}
    seen = calls(record)[before:]
    assert len(seen) == 1
    authz_event = seen[0]
    assert authz_event["version"] == "2.0" and authz_event["type"] == "REQUEST"
    assert authz_event["routeArn"] == f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api_id}/dev/GET/secret/3"
    assert authz_event["identitySource"] == ["letmein"]
    assert authz_event["routeKey"] == "GET /secret/{id}"
    assert authz_event["pathParameters"] == {"id": "3"}
    assert authz_event["stageVariables"] == {"v": "1"}
    assert authz_event["queryStringParameters"] == {"q": "1"}
    # Cached for the same identity: the authorizer is not invoked again.
    assert requests.get(f"{b}/dev/secret/4", headers={"Authorization": "letmein"}, timeout=30).status_code == 200
    assert len(calls(record)) == before + 1
    # Denied: 403; no identity source: 401 without invoking; a failing authorizer: 500.
    resp = requests.get(f"{b}/dev/secret/3", headers={"Authorization": "nope"}, timeout=30)
    assert resp.status_code == 403 and resp.json() == {"message": "Forbidden"}
    n = len(calls(record))
    resp = requests.get(f"{b}/dev/secret/3", timeout=30)
    assert resp.status_code == 401 and resp.json() == {"message": "Unauthorized"}
    assert len(calls(record)) == n
    assert requests.get(f"{b}/dev/secret/3", headers={"Authorization": "explode"}, timeout=30).status_code == 500


def test_lambda_authorizer_iam_policy_responses(server, app_fn, authorizer_fn):
    fn, record = authorizer_fn
    api_id = api(server, "create", "policy-authz")["ApiId"]
    aid = api(server, "authorizer", "add", api_id, "policy", "--function", fn, "--payload-format", "1.0",
              "--identity-source", "$request.header.Authorization")["AuthorizerId"]
    api(server, "route", "add", api_id, "GET /p", "--target", app_fn, "--auth", "CUSTOM", "--authorizer", aid,
        "--payload-format", "1.0")
    api(server, "deploy", api_id)
    b = base(server, api_id)
    before = len(calls(record))
    event = event_of(requests.get(f"{b}/p", headers={"Authorization": "letmein"}, timeout=30))
    assert event["requestContext"]["authorizer"] == {"user": "u1", "n": 7, "principalId": "user-1"}
    authz_event = calls(record)[before]
    assert authz_event["type"] == "REQUEST" and authz_event["version"] == "1.0"
    assert authz_event["methodArn"] == f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api_id}/$default/GET/p"
    assert authz_event["identitySource"] == "letmein"
    assert authz_event["authorizationToken"] == "letmein"
    # Not cached (TTL 0): a Deny policy is applied on the next call.
    assert requests.get(f"{b}/p", headers={"Authorization": "other"}, timeout=30).status_code == 403


def test_aws_iam_routes_are_signed_for_execute_api(server, lam, app_fn):
    api_id = api(server, "create", "iam")["ApiId"]
    api(server, "route", "add", api_id, "GET /iam", "--target", app_fn, "--auth", "AWS_IAM")
    api(server, "deploy", api_id)
    path = f"/{api_id}/iam"
    url = f"http://127.0.0.1:{server.url_port}{path}"

    def signed(key, secret, service="execute-api"):
        headers = h.sigv4_sign("GET", url, key, secret, service=service)
        headers.pop("Host", None)
        return call(server, "GET", path, headers=list(headers.items()))

    assert call(server, "GET", path).status == 403
    creds = server.credentials
    r = signed(creds["access_key_id"], creds["secret_access_key"])
    assert r.status == 200, r
    event = r.json()["event"]
    assert event["requestContext"]["authorizer"]["iam"]["userArn"] == f"arn:aws:iam::{h.ACCOUNT}:root"
    assert signed(creds["access_key_id"], "wrong").status == 403
    # Signed for the wrong service.
    assert signed(creds["access_key_id"], creds["secret_access_key"], service="lambda").status == 403
    # A user without rights, then one with execute-api:Invoke on the route.
    nobody = new_user(server, "api-nobody")
    assert signed(nobody.key_id, nobody.secret).status == 403
    arn = f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api_id}/*/GET/iam"
    invoker = new_user(server, "api-invoker", doc=policy(allow("execute-api:Invoke", arn)))
    r = signed(invoker.key_id, invoker.secret)
    assert r.status == 200, r
    assert r.json()["event"]["requestContext"]["authorizer"]["iam"]["userArn"] == invoker.arn


# ---------------------------------------------------------------------------------------
# OpenAPI import and bad definitions

OPENAPI = """
openapi: 3.0.1
info:
  title: imported-shop
  version: "1.0"
x-amazon-apigateway-cors:
  allowOrigins: ["https://app.example"]
  allowMethods: ["GET"]
paths:
  /items/{id}:
    get:
      parameters:
        - name: id
          in: path
          required: true
          schema: {type: string}
      x-amazon-apigateway-integration:
        type: aws_proxy
        httpMethod: POST
        uri: arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:ACCOUNT:function:FN/invocations
        payloadFormatVersion: "2.0"
  /legacy:
    x-amazon-apigateway-any-method:
      x-amazon-apigateway-integration:
        type: AWS_PROXY
        uri: FN
        payloadFormatVersion: "1.0"
        timeoutInMillis: 5000
  /private:
    get:
      security:
        - tokens: [read]
      x-amazon-apigateway-integration:
        type: aws_proxy
        uri: FN
components:
  securitySchemes:
    tokens:
      type: oauth2
      flows: {}
      x-amazon-apigateway-authorizer:
        type: jwt
        identitySource: $request.header.Authorization
        jwtConfiguration:
          issuer: ISSUER
          audience: [shop-app]
        jwksUri: ISSUER/keys
"""


def test_openapi_import(server, app_fn, issuer, tmp_path):
    doc = tmp_path / "openapi.yaml"
    doc.write_text(OPENAPI.replace("ACCOUNT", h.ACCOUNT).replace("FN", app_fn).replace("ISSUER", issuer.url))
    imported = api(server, "import", str(doc))
    api_id = imported["ApiId"]
    assert imported["Name"] == "imported-shop"
    keys = sorted(r["RouteKey"] for r in imported["Routes"])
    assert keys == ["ANY /legacy", "GET /items/{id}", "GET /private"]
    b = base(server, api_id)
    event = event_of(requests.get(f"{b}/items/9", headers={"Origin": "https://app.example"}, timeout=30))
    assert event["pathParameters"] == {"id": "9"} and event["version"] == "2.0"
    event = event_of(requests.post(f"{b}/legacy", data="x", timeout=30))
    assert event["version"] == "1.0" and event["resource"] == "/legacy"
    assert requests.get(f"{b}/private", timeout=30).status_code == 401
    ok = requests.get(f"{b}/private", headers={"Authorization": "Bearer " + issuer.token(scope="read")}, timeout=30)
    assert ok.status_code == 200
    assert requests.get(f"{b}/private", headers={"Authorization": "Bearer " + issuer.token(scope="x")}, timeout=30).status_code == 403
    resp = requests.options(
        f"{b}/items/9", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}, timeout=30
    )
    assert resp.headers["access-control-allow-origin"] == "https://app.example"

    # Re-import into the same API replaces its routes.
    doc.write_text(json.dumps({
        "openapi": "3.0.1", "info": {"title": "v2"},
        "paths": {"/v2": {"get": {"x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": app_fn}}}},
    }))
    replaced = api(server, "import", str(doc), "--api", api_id)
    assert [r["RouteKey"] for r in replaced["Routes"]] == ["GET /v2"]
    assert requests.get(f"{b}/v2", timeout=30).status_code == 200
    assert requests.get(f"{b}/items/9", timeout=30).status_code == 404


def test_openapi_with_unsupported_features_is_refused_naming_them(server, app_fn, tmp_path):
    doc = tmp_path / "bad.json"
    doc.write_text(json.dumps({
        "openapi": "3.0.1",
        "info": {"title": "bad"},
        "x-amazon-apigateway-policy": {},
        "paths": {
            "/proxy": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://example.com"}}},
            "/mapped": {"get": {"x-amazon-apigateway-integration": {
                "type": "aws_proxy", "uri": app_fn, "requestParameters": {"append:header.x": "y"}}}},
            "/none": {"get": {}},
            "/cfn": {"get": {"x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": "${Fn.Arn}"}}},
        },
    }))
    proc = api(server, "import", str(doc), check=False)
    assert proc.returncode != 0
    err = proc.stderr
    for needle in ["BadRequestException", "x-amazon-apigateway-policy", "http_proxy", "requestParameters",
                   "GET /none: no x-amazon-apigateway-integration", "unresolved substitution"]:
        assert needle in err, (needle, err)
    before = {a["Name"] for a in api(server, "ls")["Items"]}
    assert "bad" not in before
    doc.write_text(json.dumps({"swagger": "2.0", "info": {"title": "old"}, "paths": {}}))
    proc = api(server, "import", str(doc), check=False)
    assert proc.returncode != 0 and "swagger 2.0" in proc.stderr
    doc.write_text("{ this is: [not valid")
    proc = api(server, "import", str(doc), check=False)
    assert proc.returncode != 0 and "neither JSON" in proc.stderr


def test_invalid_route_definitions_are_refused_clearly(server, app_fn):
    api_id = api(server, "create", "bad-routes")["ApiId"]
    cases = {
        "GET /a/{proxy+}/b": "greedy",
        "FETCH /x": "FETCH",
        "GET x": "must start with '/'",
        "GET /a{b}": "mixes text and a variable",
        "GET /{a}/{a}": "appears twice",
    }
    for key, needle in cases.items():
        proc = api(server, "route", "add", api_id, key, "--target", app_fn, check=False)
        assert proc.returncode != 0 and "BadRequestException" in proc.stderr and needle in proc.stderr, (key, proc.stderr)
    api(server, "route", "add", api_id, "GET /ok", "--target", app_fn)
    proc = api(server, "route", "add", api_id, "GET /ok", "--target", app_fn, check=False)
    assert proc.returncode != 0 and "ConflictException" in proc.stderr
    proc = api(server, "route", "add", api_id, "GET /missing", "--target", "no-such-function", check=False)
    assert proc.returncode != 0 and "Function not found" in proc.stderr
    proc = api(server, "route", "add", api_id, "GET /j", "--target", app_fn, "--auth", "JWT", "--authorizer", "nope00",
               check=False)
    assert proc.returncode != 0 and "Authorizer" in proc.stderr
    proc = api(server, "route", "add", api_id, "GET /t", "--target", app_fn, "--timeout-ms", "40000", check=False)
    assert proc.returncode != 0 and "TimeoutInMillis" in proc.stderr
    proc = api(server, "authorizer", "add", api_id, "j", "--issuer", "https://i", check=False)
    assert proc.returncode != 0 and "Audience" in proc.stderr
    proc = api(server, "create", "ws", "--protocol", "WEBSOCKET", "--route-selection", "$request.header.x", check=False)
    assert proc.returncode != 0 and "RouteSelectionExpression" in proc.stderr
    proc = api(server, "get", "nosuchapi0", check=False)
    assert proc.returncode != 0 and "NotFoundException" in proc.stderr
    # Deleting works and the API stops answering.
    api(server, "deploy", api_id)
    assert requests.get(f"{base(server, api_id)}/ok", timeout=30).status_code == 200
    api(server, "rm", api_id)
    assert requests.get(f"{base(server, api_id)}/ok", timeout=30).status_code == 404


def test_urls_and_apis_answer_after_a_restart(tmp_path):
    """The gateway finds URLs and APIs in the store, not only those made since it started."""
    data = tmp_path / "data"
    srv = h.start_server(data, tmp_path / "first.log")
    try:
        lam = srv.client()
        fn = new_app(lam, "restart")
        url = lam.create_function_url_config(FunctionName=fn, AuthType="NONE")["FunctionUrl"]
        lam.add_permission(FunctionName=fn, StatementId="public", Action="lambda:InvokeFunctionUrl",
                           Principal="*", FunctionUrlAuthType="NONE")
        api_id = api(srv, "create", "restart", "--target", fn)["ApiId"]
    finally:
        assert srv.terminate() == 0
    url_id = url.split("//")[1].split(".")[0]
    srv = h.start_server(data, tmp_path / "second.log")
    try:
        event = event_of(requests.get(f"http://127.0.0.1:{srv.url_port}/{url_id}/after", timeout=30))
        assert event["rawPath"] == "/after"
        event = event_of(requests.get(f"{base(srv, api_id)}/after", timeout=30))
        assert event["routeKey"] == "$default"
        # An id that was never made stays unknown.
        assert requests.get(f"http://127.0.0.1:{srv.url_port}/{'0' * 32}/x", timeout=30).status_code == 404
    finally:
        srv.terminate()


def test_concurrent_edits_of_one_api_are_all_kept(server, app_fn):
    """Each edit reads, changes and writes the API's definition in one store transaction."""
    from concurrent.futures import ThreadPoolExecutor

    from test_websocket import control

    api_id = api(server, "create", "concurrent")["ApiId"]
    keys = [f"GET /r{i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda key: control(server, "POST", f"/lambent/apis/{api_id}/routes",
                                          {"RouteKey": key, "Target": app_fn}), keys))
    routes = api(server, "route", "ls", api_id)["Items"]
    assert sorted(r["RouteKey"] for r in routes) == sorted(keys)
