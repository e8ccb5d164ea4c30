"""WebSocket APIs and the `@connections` management API on the gateway listener.

Real clients only: the `websockets` library connects to a stage of a WebSocket API
(`/lambent/apis` with `ProtocolType: WEBSOCKET`); an awslambdaric function serves the
routes and records each event it gets in a file. The `sendmessage` route's function is the
same code on the managed Python runtime with boto3 from a layer (botocore's models cut down
to `apigatewaymanagementapi`, as users ship it); it broadcasts to every connection with
its execution role's credentials (through `AWS_ENDPOINT_URL`, the main API listener). The
test process drives `@connections` with boto3 too, on both listeners.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

import helpers as h
from test_access import admin, allow, attach, new_user
from test_sandbox import SANDBOX_ARGS, _distribution_files

UA = "lambent-e2e-ws/1.0"
REQUEST_TIME_RE = re.compile(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000$")
CONNECTION_ID_RE = re.compile(r"^[A-Za-z0-9]{15}=$")

WS_APP = r'''
import json, os
import boto3

EVENTS = os.environ["WS_EVENTS"]
IDS = os.environ["WS_IDS"]


def handler(event, context):
    ctx = event["requestContext"]
    route = ctx["routeKey"]
    with open(EVENTS, "a") as f:
        f.write(json.dumps(dict(event, _boto3=boto3.__file__)) + "\n")
    if route == "$connect":
        query = event.get("queryStringParameters") or {}
        if query.get("reject"):
            return {"statusCode": int(query["reject"]), "body": "go away"}
        if query.get("fail"):
            raise RuntimeError("connect failed")
        with open(IDS, "a") as f:
            f.write(ctx["connectionId"] + "\n")
        if query.get("proto"):
            return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": query["proto"]}}
        return {"statusCode": 200}
    if route == "$disconnect":
        return {"statusCode": 200}
    if route == "sendmessage":
        body = json.loads(event["body"])
        endpoint = os.environ["AWS_ENDPOINT_URL"] + "/" + ctx["apiId"] + "/" + ctx["stage"]
        client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)
        message = json.dumps({"from": ctx["connectionId"], "data": body["data"]}).encode()
        sent = []
        with open(IDS) as f:
            ids = f.read().split()
        for cid in ids:
            try:
                client.post_to_connection(ConnectionId=cid, Data=message)
                sent.append(cid)
            except client.exceptions.GoneException:
                pass
        return {"statusCode": 200, "body": json.dumps({"sent": sent})}
    if route == "whoami":
        return {"statusCode": 200, "body": json.dumps({"connectionId": ctx["connectionId"], "echo": json.loads(event["body"])})}
    if route == "fail":
        raise RuntimeError("message failed")
    return {"statusCode": 200, "body": "default:" + event["body"]}
'''


@dataclass
class WsApp:
    server: h.Server
    function: str
    broadcaster: str
    api: str
    bare_api: str
    events: Path
    ids: Path

    def url(self, query: str = "", api: str | None = None, stage: str = "dev") -> str:
        suffix = f"?{query}" if query else ""
        return f"ws://127.0.0.1:{self.server.url_port}/{api or self.api}/{stage}{suffix}"

    def read_events(self) -> list[dict]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def events_of(self, connection_id: str, route: str | None = None) -> list[dict]:
        return [
            e
            for e in self.read_events()
            if e["requestContext"]["connectionId"] == connection_id
            and (route is None or e["requestContext"]["routeKey"] == route)
        ]

    def wait_event(self, connection_id: str, route: str, timeout: float = 30.0) -> dict:
        found: list[dict] = []

        def check():
            found[:] = self.events_of(connection_id, route)
            return bool(found)

        h.wait_until(check, timeout, f"a {route} event for {connection_id}", server=self.server)
        return found[-1]

    def management(self, via: str = "gateway", api: str | None = None, stage: str = "dev", **keys):
        """boto3's apigatewaymanagementapi client for a stage, through the gateway listener
        (path-based) or the main API listener."""
        port = self.server.url_port if via == "gateway" else self.server.port
        return boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=f"http://127.0.0.1:{port}/{api or self.api}/{stage}",
            region_name=h.REGION,
            aws_access_key_id=keys.get("key", self.server.credentials["access_key_id"]),
            aws_secret_access_key=keys.get("secret", self.server.credentials["secret_access_key"]),
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=30),
        )


def control(server: h.Server, method: str, path: str, body: dict | None = None) -> dict | None:
    """A signed call to the control API's /lambent/apis operations."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = h.sigv4_sign(
        method,
        f"{server.endpoint}{path}",
        server.credentials["access_key_id"],
        server.credentials["secret_access_key"],
        body=data,
        headers={"Content-Type": "application/json"},
    )
    reply = h.raw_request(server.port, method, path, list(headers.items()), data)
    assert reply.status in (200, 201, 204), f"{method} {path}: {reply.status} {reply.body!r}"
    return json.loads(reply.body) if reply.body else None


def boto3_layer(lam) -> str:
    """boto3 and its dependencies from the test venv as a layer, with botocore's service
    models cut down to apigatewaymanagementapi's (as test_sandbox.py does for Lambda's)."""
    files = {
        rel: path
        for rel, path in _distribution_files("boto3", set()).items()
        if not re.match(r"botocore/data/(?!apigatewaymanagementapi/)[^/]+/", rel)
    }
    zipped = h.make_zip({f"python/{rel}": path.read_bytes() for rel, path in files.items()})
    return lam.publish_layer_version(LayerName=h.uniq("ws-boto3"), Content={"ZipFile": zipped})["LayerVersionArn"]


@pytest.fixture(scope="module")
def app(server, lam, venv_python, tmp_path_factory) -> WsApp:
    work = tmp_path_factory.mktemp("ws")
    work.chmod(0o777)
    events, ids = work / "events.jsonl", work / "ids.txt"
    ids.write_text("")
    ids.chmod(0o666)
    role = h.uniq("ws-role")
    admin(server, "role", "create", role)
    function = h.uniq("ws-fn")
    snippet = h.PY_PID_SNIPPET.format(pid_dir=str(h.PID_DIR))
    lam.create_function(
        FunctionName=function,
        Runtime="provided.al2023",
        Handler="app.handler",
        Role=f"arn:aws:iam::{h.ACCOUNT}:role/{role}",
        Code={"ZipFile": h.make_zip({"bootstrap": (h.RIC_BOOTSTRAP, 0o755), "app.py": snippet + WS_APP})},
        Environment={
            "Variables": {
                "LAMBENT_TEST_PYTHON": venv_python,
                "LAMBENT_TEST_PID_DIR": str(h.PID_DIR),
                "WS_EVENTS": str(events),
                "WS_IDS": str(ids),
            }
        },
        MemorySize=256,
        Timeout=30,
    )
    layer = boto3_layer(lam)
    broadcaster = h.uniq("ws-bcast")
    lam.create_function(
        FunctionName=broadcaster,
        Runtime="python3.12",
        Handler="app.handler",
        Role=f"arn:aws:iam::{h.ACCOUNT}:role/{role}",
        Code={"ZipFile": h.py_zip({"app.py": WS_APP})},
        Layers=[layer],
        Environment={"Variables": {"LAMBENT_TEST_PID_DIR": str(h.PID_DIR), "WS_EVENTS": str(events), "WS_IDS": str(ids)}},
        MemorySize=256,
        Timeout=30,
    )
    api = control(
        server,
        "POST",
        "/lambent/apis",
        {"Name": "chat", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.action"},
    )
    api_id = api["ApiId"]
    assert api["ApiEndpoint"] == f"ws://{api_id}.execute-api.{h.REGION}.localhost:{server.url_port}", api
    # The role may manage connections of this API's dev stage only.
    resource = f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api_id}/dev/POST/@connections/*"
    attach(server, role, "ws", {"Version": "2012-10-17", "Statement": [allow("execute-api:ManageConnections", resource)]}, role=True)
    for key, respond in [
        ("$connect", False),
        ("$disconnect", False),
        ("$default", True),
        ("sendmessage", False),
        ("whoami", True),
        ("fail", True),
    ]:
        route = {"RouteKey": key, "Target": broadcaster if key == "sendmessage" else function}
        if respond:
            route["RouteResponseSelectionExpression"] = "$default"
        control(server, "POST", f"/lambent/apis/{api_id}/routes", route)
    control(server, "POST", f"/lambent/apis/{api_id}/deployments", {"StageName": "dev"})

    # An API with neither $connect nor $default, on an auto-deployed stage.
    bare = control(
        server,
        "POST",
        "/lambent/apis",
        {"Name": "bare", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.kind.name"},
    )["ApiId"]
    control(
        server,
        "POST",
        f"/lambent/apis/{bare}/routes",
        {"RouteKey": "whoami", "Target": function, "RouteResponseSelectionExpression": "$default"},
    )
    control(server, "POST", f"/lambent/apis/{bare}/stages", {"StageName": "prod", "AutoDeploy": True})
    return WsApp(server, function, broadcaster, api_id, bare, events, ids)


def open_ws(app: WsApp, query: str = "", **kw):
    kw.setdefault("user_agent_header", UA)
    kw.setdefault("open_timeout", 60)
    return ws_connect(app.url(query, api=kw.pop("api", None), stage=kw.pop("stage", "dev")), **kw)


def recv_json(ws, timeout: float = 30.0):
    return json.loads(ws.recv(timeout=timeout))


def whoami(ws) -> str:
    ws.send(json.dumps({"action": "whoami", "n": 1}))
    reply = recv_json(ws)
    assert reply["echo"] == {"action": "whoami", "n": 1}, reply
    return reply["connectionId"]


def assert_context(ctx: dict, app: WsApp, connection_id: str, route: str, event_type: str):
    assert ctx["routeKey"] == route, ctx
    assert ctx["eventType"] == event_type, ctx
    assert ctx["connectionId"] == connection_id, ctx
    assert CONNECTION_ID_RE.match(connection_id), connection_id
    assert ctx["apiId"] == app.api, ctx
    assert ctx["stage"] == "dev", ctx
    assert ctx["domainName"] == f"{app.api}.execute-api.{h.REGION}.localhost", ctx
    assert ctx["messageDirection"] == "IN", ctx
    assert isinstance(ctx["requestId"], str) and ctx["requestId"], ctx
    assert ctx["extendedRequestId"], ctx
    assert REQUEST_TIME_RE.match(ctx["requestTime"]), ctx
    now = time.time() * 1000
    assert isinstance(ctx["connectedAt"], int) and now - 120_000 < ctx["connectedAt"] <= now, ctx
    assert ctx["connectedAt"] <= ctx["requestTimeEpoch"] <= now, ctx
    assert ctx["identity"] == {"sourceIp": "127.0.0.1", "userAgent": UA}, ctx
    if event_type == "MESSAGE":
        assert isinstance(ctx["messageId"], str) and ctx["messageId"], ctx
    else:
        assert ctx["messageId"] is None, ctx


# --------------------------------------------------------------------------
# connecting, events, routes


def test_chat_broadcast_reaches_every_client(app):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_ws(app)) for _ in range(3)]
        ids = [whoami(ws) for ws in clients]
        assert len(set(ids)) == 3, ids
        clients[0].send(json.dumps({"action": "sendmessage", "data": "hi"}))
        for ws in clients:
            assert recv_json(ws) == {"from": ids[0], "data": "hi"}
        # sendmessage has no route response: the sender got the broadcast and nothing else.
        with pytest.raises(TimeoutError):
            clients[0].recv(timeout=1.5)
        sent = [e for e in app.events_of(ids[0], "sendmessage")]
        assert len(sent) == 1, sent
        # The broadcaster used boto3 from its layer.
        # (Unsandboxed, /opt is the layer's directory under the data directory.)
        assert "/opt/" in sent[0]["_boto3"] and sent[0]["_boto3"].endswith("/python/boto3/__init__.py"), sent[0]
        assert "site-packages" not in sent[0]["_boto3"], sent[0]["_boto3"]


def test_connect_and_message_events_carry_every_field(app):
    with open_ws(app, "name=alice&tag=a&tag=b", additional_headers={"X-Custom": "yes"}) as ws:
        cid = whoami(ws)
        connect = app.wait_event(cid, "$connect")
        assert_context(connect["requestContext"], app, cid, "$connect", "CONNECT")
        assert connect["isBase64Encoded"] is False
        assert connect["queryStringParameters"] == {"name": "alice", "tag": "b"}, connect
        assert connect["multiValueQueryStringParameters"] == {"name": ["alice"], "tag": ["a", "b"]}, connect
        headers = connect["headers"]
        assert headers["x-custom"] == "yes" and headers["user-agent"] == UA, headers
        assert headers["host"] == f"127.0.0.1:{app.server.url_port}", headers
        assert headers["sec-websocket-key"] and headers["upgrade"].lower() == "websocket", headers
        assert connect["multiValueHeaders"]["x-custom"] == ["yes"], connect

        message = app.wait_event(cid, "whoami")
        assert_context(message["requestContext"], app, cid, "whoami", "MESSAGE")
        assert message["body"] == json.dumps({"action": "whoami", "n": 1}), message
        assert message["isBase64Encoded"] is False
        assert message["requestContext"]["connectedAt"] == connect["requestContext"]["connectedAt"]
        assert message["requestContext"]["requestId"] != connect["requestContext"]["requestId"]


def test_connect_route_chooses_the_subprotocol(app):
    with open_ws(app, "proto=chat.v2", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert whoami(ws)


def test_connect_rejected_by_the_route_gets_403_and_no_socket(app):
    before = app.ids.read_text()
    with pytest.raises(InvalidStatus) as rejected, open_ws(app, "reject=401"):
        pass
    assert rejected.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as failed, open_ws(app, "fail=1"):
        pass
    assert failed.value.response.status_code == 500
    assert app.ids.read_text() == before
    rejected_events = [
        e for e in app.read_events()
        if e["requestContext"]["routeKey"] == "$connect" and (e.get("queryStringParameters") or {}).get("reject")
    ]
    assert rejected_events, "the $connect function was not invoked"
    # The rejected connection never existed: no message or $disconnect for it.
    rejected_id = rejected_events[-1]["requestContext"]["connectionId"]
    time.sleep(1)
    assert [e["requestContext"]["routeKey"] for e in app.events_of(rejected_id)] == ["$connect"]


def test_disconnect_gets_the_close_code_and_reason(app):
    with open_ws(app) as ws:
        cid = whoami(ws)
        ws.close(code=4001, reason="bye now")
    event = app.wait_event(cid, "$disconnect")
    assert_context(event["requestContext"], app, cid, "$disconnect", "DISCONNECT")
    assert event["requestContext"]["disconnectStatusCode"] == 4001, event
    assert event["requestContext"]["disconnectReason"] == "bye now", event
    assert event["headers"]["user-agent"] == UA, event


def test_route_responses_default_route_and_error_frame(app):
    with open_ws(app) as ws:
        cid = whoami(ws)
        # Unknown action, no action, not JSON: the $default route, which responds.
        for text in [json.dumps({"action": "nope"}), json.dumps({"other": 1}), "plain text"]:
            ws.send(text)
            assert ws.recv(timeout=30) == "default:" + text
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=30) == "default:" + base64.b64encode(b"\x00\x01binary").decode()
        binary = [e for e in app.events_of(cid, "$default") if e["isBase64Encoded"]]
        assert binary and binary[-1]["body"] == base64.b64encode(b"\x00\x01binary").decode(), binary
        # A failing function: AWS's error frame.
        ws.send(json.dumps({"action": "fail"}))
        frame = recv_json(ws)
        assert frame["message"] == "Internal server error", frame
        assert frame["connectionId"] == cid and frame["requestId"], frame
        # Pings are answered.
        assert ws.ping(b"hello").wait(10)


def test_no_default_route_gets_the_forbidden_frame(app):
    # No $connect route: every connection is accepted. Host-based address this time.
    sock = socket.create_connection(("127.0.0.1", app.server.url_port))
    uri = f"ws://{app.bare_api}.execute-api.{h.REGION}.localhost:{app.server.url_port}/prod"
    with ws_connect(uri, sock=sock, user_agent_header=UA, open_timeout=60) as ws:
        # A nested selection expression ($request.body.kind.name).
        ws.send(json.dumps({"kind": {"name": "whoami"}}))
        reply = recv_json(ws)
        cid = reply["connectionId"]
        assert CONNECTION_ID_RE.match(cid), reply
        ws.send(json.dumps({"kind": {"name": "unknown"}}))
        frame = recv_json(ws)
        assert frame["message"] == "Forbidden" and frame["connectionId"] == cid and frame["requestId"], frame
        ws.send("not json")
        assert recv_json(ws)["message"] == "Forbidden"


def test_unknown_stage_and_plain_requests_are_refused(app):
    with pytest.raises(InvalidStatus) as refused, open_ws(app, stage="nostage"):
        pass
    assert refused.value.response.status_code == 403
    reply = h.raw_request(app.server.url_port, "GET", f"/{app.api}/dev", [])
    assert reply.status == 426, reply
    assert reply.headers.get("x-amzn-requestid"), reply.headers


def test_iam_connect_route_needs_an_execute_api_signature(app, server):
    api = control(
        server, "POST", "/lambent/apis",
        {"Name": "iam", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.action"},
    )["ApiId"]
    control(
        server, "POST", f"/lambent/apis/{api}/routes",
        {"RouteKey": "$connect", "Target": app.function, "AuthorizationType": "AWS_IAM"},
    )
    control(server, "POST", f"/lambent/apis/{api}/routes", {"RouteKey": "$default", "Target": app.function})
    control(server, "POST", f"/lambent/apis/{api}/deployments", {"StageName": "dev"})
    with pytest.raises(InvalidStatus) as unsigned, open_ws(app, api=api):
        pass
    assert unsigned.value.response.status_code == 403
    url = f"http://127.0.0.1:{server.url_port}/{api}/dev"
    root = (server.credentials["access_key_id"], server.credentials["secret_access_key"])
    with pytest.raises(InvalidStatus) as wrong_service, open_ws(app, api=api, additional_headers=h.sigv4_sign("GET", url, *root)):
        pass
    assert wrong_service.value.response.status_code == 403
    user = new_user(server, "ws-nobody")
    signed = h.sigv4_sign("GET", url, user.key_id, user.secret, service="execute-api")
    with pytest.raises(InvalidStatus) as denied, open_ws(app, api=api, additional_headers=signed):
        pass
    assert denied.value.response.status_code == 403
    signed = h.sigv4_sign("GET", url, *root, service="execute-api")
    with open_ws(app, api=api, additional_headers=signed) as ws:
        ws.send("hello")
        of_api = lambda: [e for e in app.read_events() if e["requestContext"]["apiId"] == api]  # noqa: E731
        h.wait_until(lambda: any(e.get("body") == "hello" for e in of_api()), 30, "the $default event", server=server)
    # Only the signed, allowed connection reached the function.
    assert [e["requestContext"]["routeKey"] for e in of_api()] == ["$connect", "$default"]


# --------------------------------------------------------------------------
# @connections


def test_connections_api_get_post_delete_and_gone(app):
    with open_ws(app) as ws:
        connections_api_round_trip(app, ws)


def connections_api_round_trip(app: WsApp, ws):
    cid = whoami(ws)
    gateway = app.management("gateway")
    api_listener = app.management("api")
    for client in (gateway, api_listener):
        info = client.get_connection(ConnectionId=cid)
        assert info["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": UA}, info
        age = time.time() - info["ConnectedAt"].timestamp()
        assert 0 <= age < 120, info
        assert info["LastActiveAt"] >= info["ConnectedAt"], info
    gateway.post_to_connection(ConnectionId=cid, Data=b"from the gateway")
    assert ws.recv(timeout=30) == "from the gateway"
    api_listener.post_to_connection(ConnectionId=cid, Data=b"\xff\x00 binary")
    assert ws.recv(timeout=30) == b"\xff\x00 binary"
    # The connection belongs to one API and stage.
    with pytest.raises(ClientError) as other_api:
        app.management("gateway", api=app.bare_api, stage="prod").get_connection(ConnectionId=cid)
    assert other_api.value.response["Error"]["Code"] == "GoneException"

    deleted = api_listener.delete_connection(ConnectionId=cid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=30)
    event = app.wait_event(cid, "$disconnect")
    assert event["requestContext"]["disconnectStatusCode"] == 1000, event
    for call in (
        lambda: gateway.get_connection(ConnectionId=cid),
        lambda: gateway.post_to_connection(ConnectionId=cid, Data=b"x"),
        lambda: api_listener.delete_connection(ConnectionId=cid),
        lambda: gateway.get_connection(ConnectionId="AAAAAAAAAAAAAAA="),
    ):
        with pytest.raises(ClientError) as gone:
            call()
        assert gone.value.response["Error"]["Code"] == "GoneException", gone.value.response
        assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_connections_api_payload_limit(app):
    with open_ws(app) as ws:
        cid = whoami(ws)
        client = app.management("gateway")
        with pytest.raises(ClientError) as big:
            client.post_to_connection(ConnectionId=cid, Data=b"x" * (128 * 1024 + 1))
        assert big.value.response["Error"]["Code"] == "PayloadTooLargeException"
        assert big.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        client.post_to_connection(ConnectionId=cid, Data=b"y" * (128 * 1024))
        assert ws.recv(timeout=30) == "y" * (128 * 1024)


def test_connections_api_refuses_unsigned_badly_signed_and_denied_calls(app, server):
    with open_ws(app) as ws:
        cid = whoami(ws)
        quoted = urllib.parse.quote(cid, safe="")
        assert "%3D" in quoted
        for port in (server.url_port, server.port):
            path = f"/{app.api}/dev/@connections/{quoted}"
            unsigned = h.raw_request(port, "GET", path, [])
            assert unsigned.status == 403 and unsigned.error_type == "ForbiddenException", unsigned
            # Signed for the wrong service.
            url = f"http://127.0.0.1:{port}{path}"
            wrong = h.sigv4_sign("GET", url, server.credentials["access_key_id"], server.credentials["secret_access_key"])
            reply = h.raw_request(port, "GET", path, list(wrong.items()))
            assert reply.status == 403 and reply.error_type == "ForbiddenException", reply
        with pytest.raises(ClientError) as bad:
            app.management("gateway", secret="not-the-secret").get_connection(ConnectionId=cid)
        assert bad.value.response["Error"]["Code"] == "ForbiddenException"
        assert bad.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # A user allowed GET but not POST on this connection.
        resource = f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{app.api}/dev/GET/@connections/*"
        user = new_user(server, "ws-user", {"Version": "2012-10-17", "Statement": [allow("execute-api:ManageConnections", resource)]})
        client = app.management("api", key=user.key_id, secret=user.secret)
        assert client.get_connection(ConnectionId=cid)["Identity"]["UserAgent"] == UA
        with pytest.raises(ClientError) as denied:
            client.post_to_connection(ConnectionId=cid, Data=b"nope")
        assert denied.value.response["Error"]["Code"] == "ForbiddenException"
        assert "execute-api:ManageConnections" in denied.value.response["Error"]["Message"]
        # Host-based address on the gateway, signed by hand.
        host = f"{app.api}.execute-api.{h.REGION}.localhost:{server.url_port}"
        path = f"/dev/@connections/{quoted}"
        signed = h.sigv4_sign(
            "POST", f"http://{host}{path}", server.credentials["access_key_id"],
            server.credentials["secret_access_key"], body=b"by host", service="execute-api",
        )
        reply = h.raw_request(server.url_port, "POST", path, [("Host", host), *signed.items()], b"by host")
        assert reply.status == 200, reply
        assert ws.recv(timeout=30) == "by host"


# --------------------------------------------------------------------------
# limits and failures


def test_oversized_frame_closes_1009_while_others_keep_working(app):
    with open_ws(app) as victim, open_ws(app) as other:
        victim_id = whoami(victim)
        whoami(other)
        victim.send("z" * (128 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            victim.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
        assert whoami(other)
        event = app.wait_event(victim_id, "$disconnect")
        assert event["requestContext"]["disconnectStatusCode"] == 1009, event


def test_vanished_client_still_gets_disconnect(app):
    port = app.server.url_port
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /{app.api}/dev HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"User-Agent: {UA}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    connects = [e for e in app.read_events() if e["requestContext"]["routeKey"] == "$connect"
                and e["headers"].get("sec-websocket-key") == key]
    assert connects, "no $connect event for the raw client"
    cid = connects[-1]["requestContext"]["connectionId"]
    assert app.management().get_connection(ConnectionId=cid)["Identity"]["UserAgent"] == UA
    sock.close()  # no close frame
    event = app.wait_event(cid, "$disconnect")
    assert event["requestContext"]["disconnectStatusCode"] == 1006, event
    with pytest.raises(ClientError) as gone:
        app.management().get_connection(ConnectionId=cid)
    assert gone.value.response["Error"]["Code"] == "GoneException"


# --------------------------------------------------------------------------
# a sandboxed function on the bridge network


BRIDGE_APP = r'''
import json, os
import boto3


def handler(event, context):
    ctx = event["requestContext"]
    endpoint = os.environ["AWS_ENDPOINT_URL"] + "/" + ctx["apiId"] + "/" + ctx["stage"]
    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)
    info = client.get_connection(ConnectionId=ctx["connectionId"])
    reply = {"endpoint": endpoint, "userAgent": info["Identity"]["UserAgent"], "body": event["body"]}
    client.post_to_connection(ConnectionId=ctx["connectionId"], Data=json.dumps(reply).encode())
    return {"statusCode": 200}
'''


def test_bridge_function_uses_connections_through_the_api_listener(tmp_path_factory):
    """A sandboxed function on the bridge network reaches only the main API port: it
    calls @connections there with its role's credentials."""
    base = tmp_path_factory.mktemp("ws-sandbox")
    srv = h.start_server(base / "data", base / "server.log", extra_args=SANDBOX_ARGS)
    try:
        lam = srv.client(read_timeout=120)
        role = h.uniq("ws-bridge-role")
        admin(srv, "role", "create", role)
        function = h.uniq("ws-bridge")
        try:
            lam.create_function(
                FunctionName=function, Runtime="python3.12", Handler="app.handler", Timeout=30, MemorySize=256,
                Role=f"arn:aws:iam::{h.ACCOUNT}:role/{role}", Code={"ZipFile": h.make_zip({"app.py": BRIDGE_APP})},
                Layers=[boto3_layer(lam)], Tags={"lambent:network": "bridge"},
            )
        except ClientError as exc:
            pytest.skip(f"the server refused a bridge function: {exc}")
        api = control(
            srv, "POST", "/lambent/apis",
            {"Name": "bridge", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.action"},
        )["ApiId"]
        resource = f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api}/dev/*/@connections/*"
        attach(srv, role, "ws", {"Version": "2012-10-17", "Statement": [allow("execute-api:ManageConnections", resource)]}, role=True)
        control(srv, "POST", f"/lambent/apis/{api}/routes", {"RouteKey": "$default", "Target": function})
        control(srv, "POST", f"/lambent/apis/{api}/deployments", {"StageName": "dev"})
        with ws_connect(f"ws://127.0.0.1:{srv.url_port}/{api}/dev", user_agent_header=UA, open_timeout=60) as ws:
            ws.send("from the bridge")
            try:
                reply = json.loads(ws.recv(timeout=120))
            except TimeoutError:
                pytest.fail(f"no message from the bridge function\n{srv.log_tail(40)}")
        assert reply["body"] == "from the bridge" and reply["userAgent"] == UA, reply
        endpoint = urllib.parse.urlsplit(reply["endpoint"])
        assert endpoint.port == srv.port and endpoint.hostname != "127.0.0.1", reply
        assert endpoint.path == f"/{api}/dev", reply
    finally:
        srv.terminate()


WS_AUTHORIZER = r'''
import json, os

def handler(event, context):
    with open(os.environ["AUTHZ_EVENTS"], "a") as f:
        f.write(json.dumps(event) + "\n")
    token = (event.get("queryStringParameters") or {}).get("token", "")
    if token == "explode":
        raise RuntimeError("authorizer broke")
    effect = "Allow" if token == "letmein" else "Deny"
    return {"principalId": "user-1",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}]},
            "context": {"user": "u1", "tier": 3}}
'''


def test_connect_lambda_authorizer(app, server, lam, tmp_path):
    """A REQUEST authorizer on $connect: identity from the query string; its policy admits
    or refuses the upgrade, and its context reaches every event of the connection."""
    record = tmp_path / "authz.jsonl"
    tmp_path.chmod(0o777)
    fn = h.uniq("ws-authz")
    h.create_function(lam, fn, h.py_zip({"app.py": WS_AUTHORIZER}), "python3.12", "app.handler",
                      env={"AUTHZ_EVENTS": str(record)})
    api_id = control(server, "POST", "/lambent/apis",
                     {"Name": "guarded", "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.action"})["ApiId"]
    authorizer = control(server, "POST", f"/lambent/apis/{api_id}/authorizers", {
        "Name": "token", "AuthorizerType": "REQUEST", "AuthorizerUri": fn,
        "AuthorizerPayloadFormatVersion": "1.0", "IdentitySource": ["route.request.querystring.token"],
    })
    control(server, "POST", f"/lambent/apis/{api_id}/routes", {
        "RouteKey": "$connect", "Target": app.function, "AuthorizationType": "CUSTOM",
        "AuthorizerId": authorizer["AuthorizerId"],
    })
    control(server, "POST", f"/lambent/apis/{api_id}/routes",
            {"RouteKey": "whoami", "Target": app.function, "RouteResponseSelectionExpression": "$default"})
    control(server, "POST", f"/lambent/apis/{api_id}/deployments", {"StageName": "dev"})

    with open_ws(app, "token=letmein", api=api_id) as ws:
        cid = whoami(ws)
    authz_event = json.loads(record.read_text().splitlines()[-1])
    assert authz_event["type"] == "REQUEST"
    assert authz_event["methodArn"] == f"arn:aws:execute-api:{h.REGION}:{h.ACCOUNT}:{api_id}/dev/$connect"
    assert authz_event["queryStringParameters"] == {"token": "letmein"}
    assert authz_event["requestContext"]["routeKey"] == "$connect"
    assert authz_event["requestContext"]["connectionId"] == cid
    expected = {"principalId": "user-1", "user": "u1", "tier": 3}
    assert app.wait_event(cid, "$connect")["requestContext"]["authorizer"] == expected
    assert app.wait_event(cid, "whoami")["requestContext"]["authorizer"] == expected

    for query, status in [("", 401), ("token=nope", 403), ("token=explode", 500)]:
        with pytest.raises(InvalidStatus) as refused, open_ws(app, query, api=api_id):
            pass
        assert refused.value.response.status_code == status, query
