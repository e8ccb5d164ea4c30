"""Access control, end to end: IAM-style users, access keys, inline policies,
resource policies (AddPermission), enforcement on every call, the audit log,
and how the server treats secrets and badly signed requests.

Everything goes through real clients against a real `lambent serve`: boto3
for the Lambda and CloudWatch Logs APIs, the `lambent admin ...` CLI for
users, keys, roles, policies and the audit log (as the account root through
the data directory's credentials.json), and hand-built SigV4 requests
(botocore's SigV4Auth) where a request has to be wrong on purpose.

This module runs its own server (the module-scoped `server` fixture, with a
data directory of its own, so the secrets test can read every file in it).
Each test makes its own uniquely named users and functions.

Beyond the written specification, these tests assume:
- policy attach/detach and key rotate/rm/user rm take effect for the very next
  request (no cache that lets an old decision live on);
- the `lambent` CLI prints the AWS error code of a refused API call on stderr
  (as it does today: "<ErrorType>: <message>"), and honours LAMBENT_ENDPOINT
  and, without a credentials file, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  for the `admin` commands as for the others;
- `lambent admin role ls --output json` prints {"Roles": [...]};
- the admin API itself is not open to a user holding only `lambda:*`, and
  `lambda:*` does not cover `logs:*` nor Lambent's own /lambent/* actions;
- `key rotate` replaces the key, so it works for a user already at the limit
  of two keys;
- a server may throttle failed authentications per source address (429
  TooManyRequestsException); such answers are waited out and the request
  repeated, and the real 403 is what the tests check.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import helpers as h
from test_lambent_cli import as_json, lambent

ACCOUNT = h.ACCOUNT
REGION = h.REGION
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
VERSION = "2012-10-17"
ALLOW_ALL = {"Version": VERSION, "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]}
# what a deleted, rotated-away or unknown key gets
BAD_KEY_CODES = {"UnrecognizedClientException", "InvalidSignatureException"}
# what a request with a wrong signature or a stale date gets
BAD_SIGNATURE_CODES = {"InvalidSignatureException", "SignatureDoesNotMatch"}
AUDIT_KEYS = {
    "Time",
    "Principal",
    "AccessKeyId",
    "Action",
    "Resource",
    "Decision",
    "SourceIp",
    "Status",
    "ErrorCode",
    "RequestId",
}
CLIENT_IP = "127.0.0.1"

APP = """
def handler(event, context):
    return {"ok": True, "version": context.function_version, "arn": context.invoked_function_arn}
"""


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's server (named `server` so conftest attaches its log to failures)."""
    base = tmp_path_factory.mktemp("access")
    srv = h.start_server(base / "data", base / "server.log")
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def lam(server):
    """A Lambda client signed with the bootstrap (account root) key."""
    return server.client()


@pytest.fixture(scope="module")
def proxy(server):
    """A recording proxy in front of the server, to see what the CLI really
    sent and what the API really answered."""
    p = h.RecordingProxy(server.port)
    yield p
    p.stop()


# --------------------------------------------------------------------------
# helpers


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def fn_arn(name: str, qualifier: str | None = None) -> str:
    return h.function_arn(name, qualifier)


def policy(*statements) -> dict:
    return {"Version": VERSION, "Statement": list(statements)}


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def admin(server, *args, check=True, proxy=None, env=None, data_dir=None):
    """`lambent admin ARGS...` as root (the data directory's credentials),
    optionally through `proxy`."""
    env = dict(env or {})
    if proxy is not None:
        env["LAMBENT_ENDPOINT"] = proxy.url
    return lambent(server, "admin", *args, check=check, env=env or None, data_dir=data_dir)


def admin_json(server, *args, proxy=None):
    return as_json(admin(server, *args, "--output", "json", proxy=proxy))


def policy_text(doc) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc)


def attach(server, principal: str, name: str, doc, role=False, check=True, proxy=None):
    kind = "--role" if role else "--user"
    return admin(server, "policy", "attach", kind, principal, name, policy_text(doc), check=check, proxy=proxy)


def shown_policies(server, principal: str, role=False) -> list[dict]:
    out = admin_json(server, "policy", "show", "--role" if role else "--user", principal)
    assert isinstance(out.get("Policies"), list), out
    return out["Policies"]


@dataclass
class User:
    name: str
    arn: str
    key_id: str
    secret: str
    server: h.Server

    def client(self, **config):
        return self.server.client(self.key_id, self.secret, **config)

    def logs(self):
        return boto3.session.Session().client(
            "logs",
            endpoint_url=self.server.endpoint,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60),
        )

    def cli(self, tmp_path: Path, *args):
        """`lambent ARGS...` signed with this user's key (no credentials file,
        the key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
        empty = tmp_path / f"no-credentials-{self.name}"
        empty.mkdir(exist_ok=True)
        env = {
            "LAMBENT_ENDPOINT": self.server.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": REGION,
        }
        return lambent(self.server, *args, data_dir=empty, env=env, check=False)


def check_access_key(key: dict, user: str):
    assert key.get("UserName") == user, key
    assert key.get("Status") == "Active", key
    assert isinstance(key.get("AccessKeyId"), str) and re.fullmatch(r"[A-Z0-9]{16,128}", key["AccessKeyId"]), key
    assert isinstance(key.get("SecretAccessKey"), str) and len(key["SecretAccessKey"]) >= 16, "a usable secret"


def create_key(server, user: str, proxy=None) -> dict:
    out = admin_json(server, "key", "create", user, proxy=proxy)
    key = out["AccessKey"]
    check_access_key(key, user)
    return key


def new_user(server, prefix: str, doc=None, policy_name: str = "policy") -> User:
    """A user with one access key and, if `doc` is given, that inline policy."""
    name = h.uniq(prefix)
    out = admin_json(server, "user", "create", name)
    assert out["User"]["UserName"] == name, out
    key = create_key(server, name)
    if doc is not None:
        attach(server, name, policy_name, doc)
    return User(name, user_arn(name), key["AccessKeyId"], key["SecretAccessKey"], server)


def new_fn(lam, prefix: str = "acc", name: str | None = None) -> str:
    name = name or h.uniq(prefix)
    h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=10, MemorySize=128)
    return name


def denied(fn, *, user: User, action: str, resource: str, explicit: bool = False, **kw) -> h.AwsError:
    """Call fn(**kw), expect 403 AccessDeniedException with AWS's message."""
    err = h.expect_error(fn, status=403, codes="AccessDeniedException", **kw)
    reason = (
        "with an explicit deny in an identity-based policy"
        if explicit
        else f"because no identity-based policy allows the {action} action"
    )
    expected = f"User: {user.arn} is not authorized to perform: {action} on resource: {resource} {reason}"
    assert err.message == expected, f"\n got: {err.message!r}\nwant: {expected!r}"
    return err


def access_denied(fn, **kw) -> h.AwsError:
    return h.expect_error(fn, status=403, codes="AccessDeniedException", **kw)


def logs_denied(logs, function_name: str):
    with pytest.raises(ClientError) as info:
        logs.filter_log_events(logGroupName=f"/aws/lambda/{function_name}")
    err = h.aws_error(info.value)
    assert err.code == "AccessDeniedException", err
    assert err.status in (400, 403), err


def all_function_names(lam) -> list[str]:
    return [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]


def rid_of(err: h.AwsError) -> str:
    rid = err.headers.get("x-amzn-requestid")
    assert rid, f"error response lacks x-amzn-RequestId: {err}"
    return rid


def audit(server, *args) -> list[dict]:
    out = admin_json(server, "audit", *args)
    assert isinstance(out.get("Events"), list), out
    return out["Events"]


def wait_audit(server, rids: set, *args, timeout: float = 20.0) -> list[dict]:
    """`lambent admin audit ARGS...` once it lists every request id in `rids`."""

    def check():
        events = audit(server, *args)
        return events if rids <= {e.get("RequestId") for e in events} else None

    return h.wait_until(check, timeout, f"audit events {sorted(rids)} (audit {' '.join(args)})", 0.3, server)


def fails(proc, *patterns: str):
    """The CLI call failed and its stderr matches every pattern (case-insensitive)."""
    assert proc.returncode != 0, f"expected a failure, got exit 0:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for pattern in patterns:
        assert re.search(pattern, proc.stderr, re.I), f"stderr does not match {pattern!r}:\n{proc.stderr}"


# A server may throttle failed authentications from one address (answering 429
# TooManyRequestsException past a burst, e.g. 20 in 10 s); every test here
# comes from 127.0.0.1 and some fail on purpose, so a throttled answer is
# waited out and the request sent again, and the real answer is checked.
THROTTLED = "TooManyRequestsException"


def _retry_after(message: str) -> float:
    m = re.search(r"retry in (\d+) ?s", message or "")
    return float(m.group(1)) + 0.5 if m else 11.0


def auth_refused(fn, codes=None, **kw) -> h.AwsError:
    """fn(**kw) fails authentication: 403 with one of `codes` (any code if None)."""
    for attempt in range(3):
        with pytest.raises(ClientError) as info:
            fn(**kw)
        err = h.aws_error(info.value)
        if err.status == 429 and err.code == THROTTLED and attempt < 2:
            time.sleep(_retry_after(err.message))
            continue
        break
    assert err.status == 403, err
    if codes is not None:
        assert err.code in codes, err
    assert err.headers.get("x-amzn-errortype"), f"error response lacks x-amzn-ErrorType: {err}"
    return err


def send(port: int, method: str, path: str, headers, body: bytes = b"") -> h.RawResponse:
    """h.raw_request, sent again after a throttled (429) answer."""
    for attempt in range(3):
        r = h.raw_request(port, method, path, list(headers), body)
        if r.status == 429 and r.error_type == THROTTLED and attempt < 2:
            try:
                message = json.loads(r.body).get("Message", "")
            except ValueError:
                message = ""
            time.sleep(_retry_after(message))
            continue
        return r
    return r


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def compact_len(text: str) -> int:
    return sum(1 for c in text if not c.isspace())


def policy_of_size(size: int) -> dict:
    """An identity policy of exactly `size` characters once whitespace is
    left out (as json.dumps(..., separators=(",", ":")) writes it)."""
    prefix = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pad"
    resources: list[str] = []
    doc = policy(allow("lambda:GetFunction", resources))

    def length():
        return len(json.dumps(doc, separators=(",", ":")))

    while length() < size - 150:
        resources.append(f"{prefix}{len(resources):04d}" + "x" * 40)
    resources.append(prefix)
    short = size - length()
    assert short >= 0, (size, length())
    resources[-1] = prefix + "y" * short
    assert length() == size == compact_len(json.dumps(doc, indent=8))
    return doc


# --- the admin API seen through the proxy -----------------------------------

_UNREPRESENTABLE = object()


def swap_document(body: bytes, old: dict, new_text: str) -> bytes | None:
    """`body` (a recorded policy-attach request) with the policy document
    `old` replaced by `new_text`, in whatever form the request carried it:
    the whole body, a string or an object inside a JSON body, or a form
    field. None when the document is not found, or when `new_text` is not
    JSON and the request carries the document as a JSON object (no API
    request can then carry it)."""
    try:
        new_obj, new_is_json = json.loads(new_text), True
    except ValueError:
        new_obj, new_is_json = None, False

    def is_old(text: str) -> bool:
        try:
            return json.loads(text) == old
        except (ValueError, TypeError):
            return False

    try:
        doc = json.loads(body)
    except ValueError:
        doc = _UNREPRESENTABLE
    if doc is not _UNREPRESENTABLE:
        if doc == old:
            return new_text.encode()
        found: list[bool] = []

        def walk(v):
            if isinstance(v, str) and is_old(v):
                found.append(True)
                return new_text
            if isinstance(v, dict):
                if v == old:
                    found.append(new_is_json)
                    return new_obj
                return {k: walk(x) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x) for x in v]
            return v

        out = walk(doc)
        if not found or not all(found):
            return None
        return json.dumps(out).encode()
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        return None
    hit = False
    swapped = []
    for k, v in pairs:
        if is_old(v):
            v, hit = new_text, True
        swapped.append((k, v))
    return urllib.parse.urlencode(swapped).encode() if hit else None


def replay_with_document(server, ex: h.Exchange, old: dict, new_text: str) -> h.RawResponse | None:
    """Send the recorded request `ex` again, its policy document replaced by
    `new_text`, freshly signed with the root key and the scope the CLI used."""
    body = swap_document(ex.body, old, new_text)
    if body is None:
        return None
    auth = ex.header("authorization") or ""
    m = re.search(r"Credential=[^/,]+/\d{8}/([^/,]+)/([^/,]+)/aws4_request", auth)
    assert m, f"the CLI's request is not SigV4-signed: {auth!r}"
    region, service = m.groups()
    skip = {"authorization", "host", "content-length", "x-amz-date", "x-amz-content-sha256", "user-agent"}
    keep = {k: v for k, v in ex.headers if k.lower() not in skip and k.lower() not in h._HOP_BY_HOP}
    signed = h.sigv4_sign(
        ex.method,
        server.endpoint + ex.path,
        server.credentials["access_key_id"],
        server.credentials["secret_access_key"],
        body=body,
        headers=keep,
        region=region,
        service=service,
    )
    return send(server.port, ex.method, ex.path, list(signed.items()), body)


def writes(exchanges: list[h.Exchange]) -> list[h.Exchange]:
    return [ex for ex in exchanges if ex.method not in ("GET", "HEAD")]


def find_attach_request(server, proxy, user: str, name: str, doc: dict) -> h.Exchange:
    """Attach `doc` through the proxy; the request that carried it."""
    mark = proxy.mark()
    attach(server, user, name, doc, proxy=proxy)
    carrying = [ex for ex in writes(proxy.since(mark)) if swap_document(ex.body, doc, json.dumps(doc)) is not None]
    assert carrying, f"no request of `policy attach` carried the document: {proxy.since(mark)}"
    ex = carrying[-1]
    assert 200 <= ex.status < 300, (ex.status, ex.response_body)
    return ex


# --------------------------------------------------------------------------
# 1. users and keys; default deny; a policy opens the door


def test_user_key_lifecycle_and_default_deny(server, lam, tmp_path):
    fn = new_fn(lam, "acc-life")
    name = h.uniq("alice")
    arn = user_arn(name)

    created = admin_json(server, "user", "create", name)["User"]
    assert created["UserName"] == name, created
    assert created["Arn"] == arn, created
    assert created.get("CreateDate"), created
    fails(admin(server, "user", "create", name, check=False), r"exist|taken|already")
    listed = [u for u in admin_json(server, "user", "ls")["Users"] if u["UserName"] == name]
    assert len(listed) == 1 and listed[0]["Arn"] == arn, listed

    key = create_key(server, name)
    assert key["AccessKeyId"] != server.credentials["access_key_id"]
    keys = admin_json(server, "key", "ls", name)["AccessKeys"]
    assert [k["AccessKeyId"] for k in keys] == [key["AccessKeyId"]], keys
    for k in keys:
        assert {"UserName", "AccessKeyId", "Status", "CreateDate"} <= set(k), k
        assert k["UserName"] == name and k["Status"] == "Active", k
        assert "SecretAccessKey" not in k, "key ls never shows secrets"
    every_key = admin_json(server, "key", "ls")["AccessKeys"]
    assert key["AccessKeyId"] in {k["AccessKeyId"] for k in every_key}, every_key
    assert key["SecretAccessKey"] not in json.dumps(every_key)

    user = User(name, arn, key["AccessKeyId"], key["SecretAccessKey"], server)
    ul = user.client()

    # a user with no policy may do nothing at all
    denied(ul.list_functions, user=user, action="lambda:ListFunctions", resource="*")
    denied(ul.get_function, user=user, action="lambda:GetFunction", resource=fn_arn(fn), FunctionName=fn)
    denied(
        ul.invoke, user=user, action="lambda:InvokeFunction", resource=fn_arn(fn), FunctionName=fn, Payload=b"{}"
    )
    denied(
        ul.delete_function, user=user, action="lambda:DeleteFunction", resource=fn_arn(fn), FunctionName=fn
    )
    logs_denied(user.logs(), fn)
    fails(user.cli(tmp_path, "usage"), r"AccessDenied")
    lam.get_function(FunctionName=fn)  # the denied delete changed nothing

    # lambda:* on everything
    attach(server, name, "everything", ALLOW_ALL)
    shown = shown_policies(server, name)
    assert [(p["PolicyName"], p["PolicyDocument"]) for p in shown] == [("everything", ALLOW_ALL)], shown
    assert fn in all_function_names(ul)
    assert ul.get_function(FunctionName=fn)["Configuration"]["FunctionArn"] == fn_arn(fn)
    _resp, body = h.invoke_ok(ul, fn, {"from": "alice"})
    assert body["ok"] is True
    # ... which is not logs:* (nor lambent's own actions)
    logs_denied(user.logs(), fn)
    fails(user.cli(tmp_path, "usage"), r"AccessDenied")

    # detached: denied again
    admin(server, "policy", "detach", "--user", name, "everything")
    assert shown_policies(server, name) == []
    denied(ul.get_function, user=user, action="lambda:GetFunction", resource=fn_arn(fn), FunctionName=fn)
    fails(admin(server, "policy", "detach", "--user", name, "everything", check=False), r"NoSuchEntity|NotFound|not found|no such|does not exist")

    # the key goes, then the user
    admin(server, "key", "rm", key["AccessKeyId"])
    assert admin_json(server, "key", "ls", name)["AccessKeys"] == []
    auth_refused(ul.list_functions, codes=BAD_KEY_CODES)
    admin(server, "user", "rm", name)
    assert name not in {u["UserName"] for u in admin_json(server, "user", "ls")["Users"]}
    fails(admin(server, "user", "rm", name, check=False), r"NoSuchEntity|NotFound|not found|no such|does not exist")


def test_root_may_do_everything(server, lam):
    # the bootstrap key is the account root: no policy needed, logs and lambent calls included
    fn = new_fn(lam, "acc-root")
    h.invoke_ok(lam, fn, {})
    logs = h.logs_client(server)
    h.log_messages(logs, fn)  # no AccessDeniedException
    proc = lambent(server, "usage", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    lam.delete_function(FunctionName=fn)


def test_roles_and_role_policies(server):
    name = h.uniq("role")
    role = admin_json(server, "role", "create", name, "--description", "an e2e role")["Role"]
    assert role["RoleName"] == name, role
    assert role["Arn"] == role_arn(name), role
    fails(admin(server, "role", "create", name, check=False), r"exist|taken|already")
    listed = admin_json(server, "role", "ls")
    assert name in {r["RoleName"] for r in listed["Roles"]}, listed

    attach(server, name, "p", ALLOW_ALL, role=True)
    shown = shown_policies(server, name, role=True)
    assert [(p["PolicyName"], p["PolicyDocument"]) for p in shown] == [("p", ALLOW_ALL)], shown
    fails(
        attach(server, name, "bad", {"Statement": [{"Action": "lambda:*", "Resource": "*"}]}, role=True, check=False),
        r"Effect",
    )
    admin(server, "policy", "detach", "--role", name, "p")
    assert shown_policies(server, name, role=True) == []

    admin(server, "role", "rm", name)
    assert name not in {r["RoleName"] for r in admin_json(server, "role", "ls")["Roles"]}
    fails(attach(server, name, "p", ALLOW_ALL, role=True, check=False))
    fails(attach(server, h.uniq("ghost-user"), "p", ALLOW_ALL, check=False))


def test_user_cannot_use_admin_api(server, tmp_path):
    """lambda:* is no way to create users, mint keys, grant oneself more, or
    read the audit log."""
    user = new_user(server, "escalate", ALLOW_ALL, "lambda-only")
    other = new_user(server, "victim")
    evil = h.uniq("evil")
    attempts = [
        ("admin", "user", "create", evil),
        ("admin", "key", "create", other.name),
        ("admin", "key", "create", user.name),
        ("admin", "policy", "attach", "--user", user.name, "root-please", json.dumps(policy(allow("*")))),
        ("admin", "policy", "detach", "--user", user.name, "lambda-only"),
        ("admin", "key", "rm", other.key_id),
        ("admin", "user", "rm", other.name),
        ("admin", "user", "ls"),
        ("admin", "audit"),
    ]
    for args in attempts:
        fails(user.cli(tmp_path, *args, "--output", "json"), r"AccessDenied")
    assert evil not in {u["UserName"] for u in admin_json(server, "user", "ls")["Users"]}
    assert [p["PolicyName"] for p in shown_policies(server, user.name)] == ["lambda-only"]
    assert [k["AccessKeyId"] for k in admin_json(server, "key", "ls", user.name)["AccessKeys"]] == [user.key_id]
    assert [k["AccessKeyId"] for k in admin_json(server, "key", "ls", other.name)["AccessKeys"]] == [other.key_id]


# --------------------------------------------------------------------------
# 2. wildcards in Action and Resource; qualifiers


def test_action_wildcard(server, lam):
    fn = new_fn(lam, "acc-getstar")
    user = new_user(server, "getter", policy(allow("lambda:Get*")))
    c = user.client()
    assert c.get_function(FunctionName=fn)["Configuration"]["FunctionName"] == fn
    assert c.get_function_configuration(FunctionName=fn)["FunctionName"] == fn
    denied(c.delete_function, user=user, action="lambda:DeleteFunction", resource=fn_arn(fn), FunctionName=fn)
    denied(c.list_functions, user=user, action="lambda:ListFunctions", resource="*")
    denied(c.invoke, user=user, action="lambda:InvokeFunction", resource=fn_arn(fn), FunctionName=fn, Payload=b"{}")
    lam.get_function(FunctionName=fn)


def test_resource_wildcard(server, lam):
    tag = uuid.uuid4().hex[:8]
    team_a = new_fn(lam, name=f"team-a-{tag}-x")
    team_b = new_fn(lam, name=f"team-b-{tag}-x")
    pattern = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:team-a-{tag}-*"
    user = new_user(server, "team-a", policy(allow("lambda:*", pattern)))
    c = user.client()
    assert c.get_function(FunctionName=team_a)["Configuration"]["FunctionName"] == team_a
    h.invoke_ok(c, team_a, {})
    denied(c.get_function, user=user, action="lambda:GetFunction", resource=fn_arn(team_b), FunctionName=team_b)
    denied(
        c.invoke, user=user, action="lambda:InvokeFunction", resource=fn_arn(team_b), FunctionName=team_b, Payload=b"{}"
    )
    # ListFunctions is on "*", which the pattern does not cover
    denied(c.list_functions, user=user, action="lambda:ListFunctions", resource="*")


def test_qualifier_in_resource(server, lam):
    fn = new_fn(lam, "acc-qual")
    version = lam.publish_version(FunctionName=fn)["Version"]
    lam.create_alias(FunctionName=fn, Name="live", FunctionVersion=version)
    user = new_user(server, "live-only", policy(allow("lambda:InvokeFunction", fn_arn(fn, "live"))))
    c = user.client()

    _resp, body = h.invoke_ok(c, fn, {}, Qualifier="live")
    assert body["version"] == version, body
    h.invoke_ok(c, f"{fn}:live", {})
    h.invoke_ok(c, fn_arn(fn), {}, Qualifier="live")

    def no(resource, **kw):
        denied(c.invoke, user=user, action="lambda:InvokeFunction", resource=resource, Payload=b"{}", **kw)

    no(fn_arn(fn, "$LATEST"), FunctionName=fn, Qualifier="$LATEST")
    no(fn_arn(fn), FunctionName=fn)
    no(fn_arn(fn, version), FunctionName=fn, Qualifier=version)
    no(fn_arn(fn, version), FunctionName=f"{fn}:{version}")


# --------------------------------------------------------------------------
# 3. explicit Deny; NotAction; NotResource


def test_explicit_deny_overrides_allow(server, lam):
    keep, gone = new_fn(lam, "acc-keep"), new_fn(lam, "acc-gone")
    # Allow and Deny in two policies of the user
    user = new_user(server, "denied", ALLOW_ALL, "allow-all")
    attach(
        server,
        user.name,
        "no-delete",
        policy({"Effect": "Deny", "Action": "lambda:DeleteFunction", "Resource": fn_arn(keep)}),
    )
    c = user.client()
    assert c.get_function(FunctionName=keep)["Configuration"]["FunctionName"] == keep
    denied(
        c.delete_function,
        user=user,
        action="lambda:DeleteFunction",
        resource=fn_arn(keep),
        explicit=True,
        FunctionName=keep,
    )
    lam.get_function(FunctionName=keep)
    resp = c.delete_function(FunctionName=gone)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.assert_function_absent(lam, gone)

    # Allow and Deny in one document, the Deny with a wildcard action
    other = new_fn(lam, "acc-other")
    user2 = new_user(
        server,
        "denied2",
        policy(allow("lambda:*"), {"Effect": "Deny", "Action": "lambda:*", "Resource": fn_arn(keep)}),
    )
    c2 = user2.client()
    denied(
        c2.get_function,
        user=user2,
        action="lambda:GetFunction",
        resource=fn_arn(keep),
        explicit=True,
        FunctionName=keep,
    )
    denied(
        c2.invoke,
        user=user2,
        action="lambda:InvokeFunction",
        resource=fn_arn(keep),
        explicit=True,
        FunctionName=keep,
        Payload=b"{}",
    )
    h.invoke_ok(c2, other, {})


def test_not_action(server, lam):
    fn = new_fn(lam, "acc-notaction")
    user = new_user(server, "notaction", policy({"Effect": "Allow", "NotAction": "lambda:Delete*", "Resource": "*"}))
    c = user.client()
    assert c.get_function(FunctionName=fn)["Configuration"]["FunctionName"] == fn
    assert fn in all_function_names(c)
    h.invoke_ok(c, fn, {})
    denied(c.delete_function, user=user, action="lambda:DeleteFunction", resource=fn_arn(fn), FunctionName=fn)
    lam.get_function(FunctionName=fn)


def test_not_resource(server, lam):
    protected, open_fn = new_fn(lam, "acc-protected"), new_fn(lam, "acc-open")
    user = new_user(
        server, "notresource", policy({"Effect": "Allow", "Action": "lambda:*", "NotResource": fn_arn(protected)})
    )
    c = user.client()
    assert c.get_function(FunctionName=open_fn)["Configuration"]["FunctionName"] == open_fn
    h.invoke_ok(c, open_fn, {})
    denied(
        c.get_function, user=user, action="lambda:GetFunction", resource=fn_arn(protected), FunctionName=protected
    )
    denied(
        c.invoke,
        user=user,
        action="lambda:InvokeFunction",
        resource=fn_arn(protected),
        FunctionName=protected,
        Payload=b"{}",
    )


# --------------------------------------------------------------------------
# 4. conditions


@pytest.fixture(scope="module")
def cond_fn(lam):
    return new_fn(lam, "acc-cond")


CONDITION_CASES = [
    ("ip-loopback", {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}, True),
    ("ip-ten", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, False),
    ("ip-list", {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "127.0.0.1/32"]}}, True),
    ("not-ip-ten", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, True),
    ("not-ip-loopback", {"NotIpAddress": {"aws:SourceIp": "127.0.0.1/32"}}, False),
    ("secure-transport", {"Bool": {"aws:SecureTransport": "true"}}, False),
    ("plain-http", {"Bool": {"aws:SecureTransport": "false"}}, True),
    ("ip-ifexists", {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, False),
    # a user's direct call carries no aws:SourceArn: IfExists holds, the plain operator does not
    ("sourcearn-ifexists", {"ArnLikeIfExists": {"aws:SourceArn": "arn:aws:s3:::nothing"}}, True),
    ("sourcearn", {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::*"}}, False),
]


@pytest.mark.parametrize("case,condition,allowed", CONDITION_CASES, ids=[c[0] for c in CONDITION_CASES])
def test_condition(server, cond_fn, case, condition, allowed):
    user = new_user(server, f"cond-{case}", policy(allow("lambda:GetFunction", Condition=condition)))
    c = user.client()
    if allowed:
        assert c.get_function(FunctionName=cond_fn)["Configuration"]["FunctionName"] == cond_fn
    else:
        denied(c.get_function, user=user, action="lambda:GetFunction", resource=fn_arn(cond_fn), FunctionName=cond_fn)


def test_condition_on_username_and_principal_arn(server, cond_fn):
    prefix = f"named-{uuid.uuid4().hex[:8]}"
    by_name = policy(allow("lambda:GetFunction", Condition={"StringLike": {"aws:username": f"{prefix}-*"}}))
    matching = new_user(server, prefix, by_name)
    other = new_user(server, "unnamed", by_name)
    assert matching.client().get_function(FunctionName=cond_fn)
    denied(
        other.client().get_function,
        user=other,
        action="lambda:GetFunction",
        resource=fn_arn(cond_fn),
        FunctionName=cond_fn,
    )

    exact = new_user(server, "exact")
    attach(
        server,
        exact.name,
        "by-arn",
        policy(allow("lambda:GetFunction", Condition={"StringEquals": {"aws:PrincipalArn": exact.arn}})),
    )
    assert exact.client().get_function(FunctionName=cond_fn)

    elsewhere = new_user(
        server,
        "elsewhere",
        policy(
            allow(
                "lambda:GetFunction",
                Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/nobody-*"}},
            )
        ),
    )
    denied(
        elsewhere.client().get_function,
        user=elsewhere,
        action="lambda:GetFunction",
        resource=fn_arn(cond_fn),
        FunctionName=cond_fn,
    )


def test_unknown_condition_operator_refused(server, cond_fn):
    user = new_user(server, "strfoo")
    doc = policy(allow("lambda:GetFunction", Condition={"StringFoo": {"aws:username": user.name}}))
    fails(attach(server, user.name, "foo", doc, check=False), r"StringFoo", r"MalformedPolicyDocument")
    assert shown_policies(server, user.name) == []
    denied(
        user.client().get_function,
        user=user,
        action="lambda:GetFunction",
        resource=fn_arn(cond_fn),
        FunctionName=cond_fn,
    )


# --------------------------------------------------------------------------
# 5. resource policies (AddPermission)


def test_resource_policy_grants_invoke(server, lam):
    fn = new_fn(lam, "acc-respol")
    bob = new_user(server, "bob")
    carol = new_user(server, "carol")
    c = bob.client()
    denied(c.invoke, user=bob, action="lambda:InvokeFunction", resource=fn_arn(fn), FunctionName=fn, Payload=b"{}")

    resp = lam.add_permission(
        FunctionName=fn, StatementId="bob-invoke", Action="lambda:InvokeFunction", Principal=bob.arn
    )
    stmt = json.loads(resp["Statement"])
    assert stmt["Principal"] == {"AWS": bob.arn}, stmt
    _resp, body = h.invoke_ok(c, fn, {"from": "bob"})
    assert body["ok"] is True
    # only invoke, only bob
    access_denied(c.get_function, FunctionName=fn)
    access_denied(c.delete_function, FunctionName=fn)
    access_denied(carol.client().invoke, FunctionName=fn, Payload=b"{}")

    lam.remove_permission(FunctionName=fn, StatementId="bob-invoke")
    access_denied(c.invoke, FunctionName=fn, Payload=b"{}")

    # conditions on the caller's source hold only for requests that carry them:
    # a user's direct call carries neither aws:SourceArn nor aws:SourceAccount
    resp = lam.add_permission(
        FunctionName=fn,
        StatementId="bob-via-bucket",
        Action="lambda:InvokeFunction",
        Principal=bob.arn,
        SourceArn="arn:aws:s3:::lambent-bucket",
    )
    assert json.loads(resp["Statement"])["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::lambent-bucket"
    access_denied(c.invoke, FunctionName=fn, Payload=b"{}")
    lam.add_permission(
        FunctionName=fn,
        StatementId="bob-via-account",
        Action="lambda:InvokeFunction",
        Principal=bob.arn,
        SourceAccount=ACCOUNT,
    )
    access_denied(c.invoke, FunctionName=fn, Payload=b"{}")


def test_resource_policy_account_principal_and_explicit_deny(server, lam):
    fn = new_fn(lam, "acc-respol-acct")
    bob = new_user(server, "bob-acct")
    dave = new_user(
        server, "dave", policy({"Effect": "Deny", "Action": "lambda:InvokeFunction", "Resource": fn_arn(fn)})
    )
    access_denied(bob.client().invoke, FunctionName=fn, Payload=b"{}")
    resp = lam.add_permission(FunctionName=fn, StatementId="account", Action="lambda:InvokeFunction", Principal=ACCOUNT)
    assert json.loads(resp["Statement"])["Principal"] == {"AWS": ROOT_ARN}
    h.invoke_ok(bob.client(), fn, {})
    # an explicit Deny in the identity policy beats the resource policy's Allow
    denied(
        dave.client().invoke,
        user=dave,
        action="lambda:InvokeFunction",
        resource=fn_arn(fn),
        explicit=True,
        FunctionName=fn,
        Payload=b"{}",
    )


# --------------------------------------------------------------------------
# 6. keys that stop working


def test_rotated_key_stops_working(server, lam):
    fn = new_fn(lam, "acc-rotate")
    user = new_user(server, "rotate", ALLOW_ALL)
    old = user.client()
    old.get_function(FunctionName=fn)

    new = admin_json(server, "key", "rotate", user.key_id)["AccessKey"]
    check_access_key(new, user.name)
    assert new["AccessKeyId"] != user.key_id
    assert new["SecretAccessKey"] != user.secret
    auth_refused(old.get_function, FunctionName=fn, codes=BAD_KEY_CODES)
    fresh = server.client(new["AccessKeyId"], new["SecretAccessKey"])
    assert fresh.get_function(FunctionName=fn)["Configuration"]["FunctionName"] == fn
    h.invoke_ok(fresh, fn, {})

    keys = {k["AccessKeyId"]: k for k in admin_json(server, "key", "ls", user.name)["AccessKeys"]}
    assert keys[new["AccessKeyId"]]["Status"] == "Active", keys
    assert user.key_id not in keys or keys[user.key_id]["Status"] != "Active", keys

    admin(server, "key", "rm", new["AccessKeyId"])
    auth_refused(fresh.get_function, FunctionName=fn, codes=BAD_KEY_CODES)
    auth_refused(fresh.invoke, FunctionName=fn, Payload=b"{}", codes=BAD_KEY_CODES)
    fails(admin(server, "key", "rm", new["AccessKeyId"], check=False))
    fails(admin(server, "key", "rotate", new["AccessKeyId"], check=False))


def test_at_most_two_keys(server):
    user = new_user(server, "twokeys")
    second = create_key(server, user.name)
    third = admin(server, "key", "create", user.name, "--output", "json", check=False)
    fails(third, r"LimitExceeded|limit|quota|at most|maximum|two|only")
    keys = admin_json(server, "key", "ls", user.name)["AccessKeys"]
    assert sorted(k["AccessKeyId"] for k in keys) == sorted([user.key_id, second["AccessKeyId"]]), keys
    # a user at the limit can still rotate: the new key replaces the old one
    rotated = admin_json(server, "key", "rotate", second["AccessKeyId"])["AccessKey"]
    check_access_key(rotated, user.name)
    keys = admin_json(server, "key", "ls", user.name)["AccessKeys"]
    active = sorted(k["AccessKeyId"] for k in keys if k["Status"] == "Active")
    assert active == sorted([user.key_id, rotated["AccessKeyId"]]), keys
    # after removing one, a new one may be made
    admin(server, "key", "rm", rotated["AccessKeyId"])
    create_key(server, user.name)


def test_deleted_user_keys_stop_working(server, lam):
    fn = new_fn(lam, "acc-deluser")
    user = new_user(server, "deleted", ALLOW_ALL)
    second = create_key(server, user.name)
    clients = [user.client(), server.client(second["AccessKeyId"], second["SecretAccessKey"])]
    for c in clients:
        c.get_function(FunctionName=fn)

    admin(server, "user", "rm", user.name)
    assert user.name not in {u["UserName"] for u in admin_json(server, "user", "ls")["Users"]}
    for c in clients:
        auth_refused(c.get_function, FunctionName=fn, codes=BAD_KEY_CODES)
        auth_refused(c.invoke, FunctionName=fn, Payload=b"{}", codes=BAD_KEY_CODES)

    # a new user of the same name inherits neither the keys nor the policies
    admin_json(server, "user", "create", user.name)
    for c in clients:
        auth_refused(c.get_function, FunctionName=fn, codes=BAD_KEY_CODES)
    assert shown_policies(server, user.name) == []
    assert admin_json(server, "key", "ls", user.name)["AccessKeys"] == []


# --------------------------------------------------------------------------
# 7. the audit log


def test_audit_log(server, lam):
    fn = h.uniq("acc-audit")
    created = h.create_function(lam, fn, h.py_zip({"app.py": APP}), "python3.12", "app.handler", Timeout=10)
    root_rid = h.request_id(created)
    user = new_user(server, "audited", policy(allow(["lambda:Get*", "lambda:ListFunctions"])))
    c = user.client()

    calls = []  # (request id, action, resource, decision, status), oldest first
    resp = c.list_functions()
    calls.append((h.request_id(resp), "lambda:ListFunctions", "*", "Allow", 200))
    resp = c.get_function(FunctionName=fn)
    calls.append((h.request_id(resp), "lambda:GetFunction", fn_arn(fn), "Allow", 200))
    err = denied(c.delete_function, user=user, action="lambda:DeleteFunction", resource=fn_arn(fn), FunctionName=fn)
    calls.append((rid_of(err), "lambda:DeleteFunction", fn_arn(fn), "Deny", 403))
    err = denied(
        c.invoke, user=user, action="lambda:InvokeFunction", resource=fn_arn(fn), FunctionName=fn, Payload=b"{}"
    )
    calls.append((rid_of(err), "lambda:InvokeFunction", fn_arn(fn), "Deny", 403))
    rids = {rid for rid, *_ in calls}
    assert len(rids) == len(calls), calls

    events = wait_audit(server, rids, "--principal", user.arn, "--since", "10m")
    assert all(e["Principal"] == user.arn for e in events), events
    by_rid = {e["RequestId"]: e for e in events}
    for rid, action, resource, decision, status in calls:
        e = by_rid[rid]
        assert AUDIT_KEYS <= set(e), e
        assert e["Time"], e
        assert e["AccessKeyId"] == user.key_id, e
        assert (e["Action"], e["Resource"], e["Decision"]) == (action, resource, decision), e
        assert e["SourceIp"] == CLIENT_IP, e
        assert e["Status"] == status, e
        if decision == "Deny":
            assert e["ErrorCode"] == "AccessDeniedException", e
        else:
            assert not e["ErrorCode"], e
    # newest first
    order = [next(i for i, e in enumerate(events) if e["RequestId"] == rid) for rid, *_ in calls]
    assert order == sorted(order, reverse=True), [(e["RequestId"], e["Action"]) for e in events]

    only_denied = audit(server, "--principal", user.arn, "--decision", "Deny")
    assert all(e["Decision"] == "Deny" for e in only_denied), only_denied
    denied_rids = {rid for rid, _a, _r, decision, _s in calls if decision == "Deny"}
    allowed_rids = rids - denied_rids
    assert denied_rids <= {e["RequestId"] for e in only_denied}, only_denied
    assert not allowed_rids & {e["RequestId"] for e in only_denied}, only_denied
    newest = audit(server, "--principal", user.arn, "--limit", "1")
    assert [e["RequestId"] for e in newest] == [calls[-1][0]], newest
    assert len(audit(server, "--limit", "2")) == 2

    # the root's own control-plane calls are recorded too
    root_events = wait_audit(server, {root_rid}, "--principal", ROOT_ARN, "--limit", "1000")
    e = next(e for e in root_events if e["RequestId"] == root_rid)
    assert (e["Action"], e["Resource"], e["Decision"], e["Status"]) == (
        "lambda:CreateFunction",
        fn_arn(fn),
        "Allow",
        201,
    ), e

    # failed signature checks: a wrong secret for a real key, and a key nobody has
    wrong_secret = "W" * 40
    err = auth_refused(
        server.client(user.key_id, wrong_secret).get_function, FunctionName=fn, codes=BAD_SIGNATURE_CODES
    )
    bad_rid = rid_of(err)
    ghost_key = "LKIA" + uuid.uuid4().hex[:16].upper()
    err2 = auth_refused(
        server.client(ghost_key, wrong_secret).get_function, FunctionName=fn, codes=BAD_KEY_CODES
    )
    ghost_rid = rid_of(err2)
    failed = wait_audit(server, {bad_rid, ghost_rid}, "--decision", "AuthFailed")
    assert all(e["Decision"] == "AuthFailed" for e in failed), failed
    by_rid = {e["RequestId"]: e for e in failed}
    e = by_rid[bad_rid]
    assert e["AccessKeyId"] == user.key_id, e
    assert e["Principal"] in ("", None, user.arn), e
    assert e["Status"] == 403 and e["ErrorCode"] == err.code, e
    assert e["SourceIp"] == CLIENT_IP, e
    e = by_rid[ghost_rid]
    assert e["AccessKeyId"] == ghost_key, e
    assert e["Status"] == 403 and e["ErrorCode"] == err2.code, e
    assert wrong_secret not in json.dumps(failed)


# --------------------------------------------------------------------------
# 8. secrets


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


def test_secrets_are_never_exposed(server, lam, proxy):
    fn = new_fn(lam, "acc-secret")
    name = h.uniq("secretive")
    admin_json(server, "user", "create", name, proxy=proxy)
    before = proxy.mark()
    first = create_key(server, name, proxy=proxy)
    revealing = set(range(before, proxy.mark()))
    attach(server, name, "all", ALLOW_ALL, proxy=proxy)
    c = server.client(first["AccessKeyId"], first["SecretAccessKey"])
    c.get_function(FunctionName=fn)
    h.invoke_ok(c, fn, {})
    auth_refused(
        server.client(first["AccessKeyId"], first["SecretAccessKey"][::-1]).get_function,
        FunctionName=fn,
        codes=BAD_SIGNATURE_CODES,
    )
    before = proxy.mark()
    second = admin_json(server, "key", "rotate", first["AccessKeyId"], proxy=proxy)["AccessKey"]
    check_access_key(second, name)
    revealing |= set(range(before, proxy.mark()))
    server.client(second["AccessKeyId"], second["SecretAccessKey"]).get_function(FunctionName=fn)
    secrets = [first["SecretAccessKey"], second["SecretAccessKey"]]
    seen = proxy.exchanges()
    for secret, hint in zip(secrets, ("create", "rotate")):
        # the proxy really saw the CLI's calls (else the wire checks below prove nothing)
        assert any(secret.encode() in seen[i].response_body for i in revealing), f"{hint} did not go through the proxy"

    outputs = [
        admin(server, "key", "ls", name, "--output", "json", proxy=proxy),
        admin(server, "key", "ls", name, proxy=proxy),
        admin(server, "key", "ls", "--output", "json", proxy=proxy),
        admin(server, "user", "ls", "--output", "json", proxy=proxy),
        admin(server, "user", "ls", proxy=proxy),
        admin(server, "policy", "show", "--user", name, "--output", "json", proxy=proxy),
        admin(server, "audit", "--output", "json", proxy=proxy),
        admin(server, "audit", "--principal", user_arn(name), proxy=proxy),
    ]
    for secret in secrets:
        for proc in outputs:
            assert secret not in proc.stdout + proc.stderr, f"secret shown by {proc.args}"
        # on the wire: only in the answers to create and rotate, never in a request
        for i, ex in enumerate(proxy.exchanges()):
            for blob in (ex.body, json.dumps(ex.headers).encode(), ex.path.encode()):
                assert secret.encode() not in blob, f"a request carried a secret: {ex.method} {ex.path}"
            if i not in revealing:
                assert secret.encode() not in ex.response_body, f"{ex.method} {ex.path} answered with a secret"
        # not in the server's log
        log = server.log_path.read_bytes()
        for form in _encodings(secret):
            assert form not in log, "the server log holds a user's secret"
        # not in any file of the data directory (database, WAL, code, anything)
        files = [p for p in server.data_dir.rglob("*") if p.is_file() and not p.is_symlink()]
        assert files, f"nothing in {server.data_dir}?"
        for path in files:
            try:
                data = path.read_bytes()
            except (FileNotFoundError, PermissionError):
                continue
            for form in _encodings(secret):
                assert form not in data, f"{path} holds a user's secret in plain text"


# --------------------------------------------------------------------------
# 9. bad input: malformed policies, bad signatures


def test_malformed_policies_refused(server, proxy, tmp_path):
    user = new_user(server, "malformed")
    good = policy(allow("lambda:GetFunction"))
    carrier = find_attach_request(server, proxy, user.name, "good", good)

    too_big = policy_of_size(6145)
    big_file = tmp_path / "too-big.json"
    big_file.write_text(json.dumps(too_big, separators=(",", ":")))
    cases = [
        (
            "badjson",
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}',
            r"syntax|json|pars",
        ),
        ("toobig", json.dumps(too_big, separators=(",", ":")), r"size|6144|too (large|long|big)|length"),
        ("toobigfile", f"@{big_file}", r"size|6144|too (large|long|big)|length"),
        ("noeffect", json.dumps(policy({"Action": "lambda:*", "Resource": "*"})), r"Effect"),
        ("principal", json.dumps(policy(allow("lambda:*", Principal={"AWS": "*"}))), r"Principal"),
        (
            "unknownop",
            json.dumps(policy(allow("lambda:*", Condition={"StringFoo": {"aws:username": "x"}}))),
            r"StringFoo",
        ),
    ]
    for case, text, problem in cases:
        mark = proxy.mark()
        proc = attach(server, user.name, case, text, check=False, proxy=proxy)
        fails(proc, problem)
        sent = [ex for ex in writes(proxy.since(mark)) if ex.status >= 400]
        if sent:
            # the CLI passed it on: the API refused it
            assert any(ex.status == 400 and ex.error_type == "MalformedPolicyDocumentException" for ex in sent), [
                (ex.status, ex.error_type, ex.response_body) for ex in sent
            ]
            assert "MalformedPolicyDocument" in proc.stderr, proc.stderr
        else:
            assert case == "badjson", f"{case}: the CLI refused a well-formed JSON document without asking the API"
        # straight to the API, whatever the CLI checks itself
        doc_text = big_file.read_text() if text.startswith("@") else text
        resp = replay_with_document(server, carrier, good, doc_text)
        if resp is None:
            # the API takes the document as a JSON object: bad JSON cannot even be sent
            assert case == "badjson", f"{case}: cannot place the document in {carrier.body!r}"
        else:
            assert resp.status == 400, (case, resp.status, resp.body)
            assert resp.error_type == "MalformedPolicyDocumentException", (case, resp.headers, resp.body)
            assert re.search(problem, resp.body.decode(errors="replace"), re.I), (case, resp.body)
    assert [p["PolicyName"] for p in shown_policies(server, user.name)] == ["good"]

    # the limit counts characters that are not whitespace
    at_limit = policy_of_size(6144)
    attach(server, user.name, "atlimit", json.dumps(at_limit, indent=8))
    at_limit_file = tmp_path / "at-limit.json"
    at_limit_file.write_text(json.dumps(at_limit, separators=(",", ":")))
    admin(server, "policy", "attach", "--user", user.name, "atlimitfile", f"@{at_limit_file}")
    shown = {p["PolicyName"]: p["PolicyDocument"] for p in shown_policies(server, user.name)}
    assert shown == {"good": good, "atlimit": at_limit, "atlimitfile": at_limit}, sorted(shown)


def test_signature_scope_must_match(server, lam):
    path = "/2015-03-31/functions"
    url = server.endpoint + path
    key, secret = server.credentials["access_key_id"], server.credentials["secret_access_key"]

    ok = send(server.port, "GET", path, list(h.sigv4_sign("GET", url, key, secret).items()))
    assert ok.status == 200, (ok.status, ok.body)

    for service in ("s3", "iam", "execute-api"):
        r = send(server.port, "GET", path, list(h.sigv4_sign("GET", url, key, secret, service=service).items()))
        assert r.status == 403, (service, r.status, r.body)
        assert r.error_type, (service, r.headers, r.body)

    # the server is in us-east-1: a signature scoped to another region is refused
    r = send(server.port, "GET", path, list(h.sigv4_sign("GET", url, key, secret, region="eu-west-1").items()))
    assert r.status == 403, (r.status, r.body)
    assert r.error_type, (r.headers, r.body)
    other_region = boto3.client(
        "lambda",
        endpoint_url=server.endpoint,
        region_name="eu-west-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    auth_refused(other_region.list_functions)


def test_clock_skew_window(server, lam):
    path = "/2015-03-31/functions"
    url = server.endpoint + path
    key, secret = server.credentials["access_key_id"], server.credentials["secret_access_key"]
    for minutes, allowed in [(-20, False), (20, False), (-10, True), (10, True)]:
        headers = h.sigv4_sign("GET", url, key, secret, when=utcnow() + datetime.timedelta(minutes=minutes))
        r = send(server.port, "GET", path, list(headers.items()))
        if allowed:
            assert r.status == 200, (minutes, r.status, r.body)
        else:
            assert r.status == 403, (minutes, r.status, r.body)
            assert r.error_type in BAD_SIGNATURE_CODES, (minutes, r.headers, r.body)

    # the same through boto3 with its clock set back
    stale = (utcnow() - datetime.timedelta(minutes=20)).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: stale):
        auth_refused(lam.list_functions, codes=BAD_SIGNATURE_CODES)
    lam.list_functions()


def test_two_authorization_headers_refused(server, lam):
    path = "/2015-03-31/functions"
    url = server.endpoint + path
    nobody = new_user(server, "twoauth")  # no policy
    when = utcnow()
    as_root = h.sigv4_sign(
        "GET", url, server.credentials["access_key_id"], server.credentials["secret_access_key"], when=when
    )
    as_user = h.sigv4_sign("GET", url, nobody.key_id, nobody.secret, when=when)
    assert as_root["X-Amz-Date"] == as_user["X-Amz-Date"]
    date = [("X-Amz-Date", as_root["X-Amz-Date"])]

    single = send(server.port, "GET", path, date + [("Authorization", as_root["Authorization"])])
    assert single.status == 200, (single.status, single.body)

    garbage = "AWS4-HMAC-SHA256 Credential=garbage"
    for first, second in [
        (as_user["Authorization"], as_root["Authorization"]),
        (as_root["Authorization"], as_user["Authorization"]),
        (as_root["Authorization"], as_root["Authorization"]),
        (as_root["Authorization"], garbage),
        (garbage, as_root["Authorization"]),
    ]:
        r = send(server.port, "GET", path, date + [("Authorization", first), ("Authorization", second)])
        assert r.status in (400, 403), (r.status, r.body[:300])


# --------------------------------------------------------------------------
# execution roles: a function calls the platform with its role's rights


def _site_packages() -> str:
    return next(p for p in sys.path if p.endswith("site-packages"))


CALLER_APP = """
import json, os, sys
sys.path.insert(0, {site!r})
import boto3

def handler(event, context):
    out = {{"endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "key": os.environ.get("AWS_ACCESS_KEY_ID", ""),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "token": os.environ.get("AWS_SESSION_TOKEN", "")}}
    client = boto3.client("lambda")
    for name in event.get("call", []):
        try:
            reply = client.invoke(FunctionName=name, Payload=b"{{}}")
            out[name] = json.loads(reply["Payload"].read())
        except Exception as exc:
            out[name] = "error: " + str(exc)
    return out
"""


def _role_caller(server, lam, role: str, prefix: str) -> str:
    name = h.uniq(prefix)
    lam.create_function(
        FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=role_arn(role), Timeout=30,
        Code={"ZipFile": h.py_zip({"app.py": CALLER_APP.format(site=_site_packages())})},
        Environment={"Variables": {"LAMBENT_TEST_PID_DIR": str(h.PID_DIR)}},
    )
    return name


def test_function_calls_another_with_its_roles_rights(server, lam):
    role = h.uniq("exec-role")
    admin(server, "role", "create", role)
    allowed = h.uniq("callee-ok")
    refused = h.uniq("callee-no")
    for name in (allowed, refused):
        h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler")
    attach(server, role, "invoke-one", policy(allow("lambda:InvokeFunction", fn_arn(allowed))), role=True)
    caller = _role_caller(server, lam, role, "caller")
    _, out = h.invoke_ok(lam, caller, {"call": [allowed, refused]})
    assert out["endpoint"] == server.endpoint, out
    assert out["key"].startswith("ASIA") and out["token"], out
    assert out[allowed]["ok"] is True, out
    assert "AccessDeniedException" in out[refused], out
    assert f"assumed-role/{role}/{caller}" in out[refused], out
    # The audit log names the role session.
    events = admin_json(server, "audit", "--decision", "Deny", "--limit", "20")["Events"]
    assert any(e["Resource"] == fn_arn(refused) and f"assumed-role/{role}/" in e["Principal"] for e in events), events


def test_function_role_must_exist(lam):
    missing = role_arn(h.uniq("missing"))
    err = h.expect_error(
        lam.create_function, FunctionName=h.uniq("no-role"), Runtime="python3.12", Handler="app.handler",
        Role=missing, Code={"ZipFile": h.py_zip({"app.py": APP})}, status=400, codes="InvalidParameterValueException",
    )
    assert "cannot be assumed" in str(err), err
    name = h.uniq("role-change")
    h.create_function(lam, name, h.py_zip({"app.py": APP}), "python3.12", "app.handler")
    h.expect_error(
        lam.update_function_configuration, FunctionName=name, Role=missing,
        status=400, codes="InvalidParameterValueException",
    )


def test_session_tokens_expire_and_cannot_be_forged(tmp_path):
    srv = h.start_server(tmp_path / "data", tmp_path / "server.log", ["--session-duration", "2"])
    try:
        lam = srv.client()
        role = "short-lived"
        admin(srv, "role", "create", role, data_dir=tmp_path / "data")
        attach_as = lambda *a: lambent(srv, "admin", *a, data_dir=tmp_path / "data")  # noqa: E731
        attach_as("policy", "attach", "--role", role, "all", json.dumps(policy(allow("lambda:*"))))
        caller = _role_caller(srv, lam, role, "expiring")
        _, out = h.invoke_ok(lam, caller, {})

        def as_session(token):
            return boto3.client(
                "lambda", endpoint_url=srv.endpoint, region_name=h.REGION,
                aws_access_key_id=out["key"], aws_secret_access_key=out["secret"], aws_session_token=token,
                config=Config(retries={"total_max_attempts": 1}),
            )

        assert isinstance(as_session(out["token"]).list_functions()["Functions"], list)
        forged = out["token"][:-2] + ("AA" if not out["token"].endswith("AA") else "BB")
        h.expect_error(as_session(forged).list_functions, status=403, codes="UnrecognizedClientException")
        time.sleep(2.5)
        h.expect_error(as_session(out["token"]).list_functions, status=403, codes="ExpiredTokenException")
    finally:
        srv.terminate()


# --------------------------------------------------------------------------
# transport: HTTPS, and the warning for plain HTTP off loopback


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str, dict]:
    """A server with its own data dir; returns the process, its first stdout lines and credentials."""
    data = tmp_path / "data"
    if "--http-listen" not in args:
        args = (*args, "--http-listen", f"127.0.0.1:{h.free_port()}")
    proc = subprocess.Popen(
        [str(h.lambent_bin()), "serve", "--data-dir", str(data), "--sandbox", "none", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "try: aws lambda" in line:
            break
    creds = json.loads((data / "credentials.json").read_text())
    return proc, "".join(lines), creds


def _stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_https_with_secure_transport_condition(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = h.free_port()
    proc, out, creds = _serve(tmp_path, "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert f"listening on https://127.0.0.1:{port}" in out, out
        assert "WARNING: plain HTTP" not in out, out
        endpoint = f"https://127.0.0.1:{port}"

        def client(key_id, secret, **kw):
            return boto3.client(
                "lambda", endpoint_url=endpoint, region_name=h.REGION, verify=str(cert),
                aws_access_key_id=key_id, aws_secret_access_key=secret,
                config=Config(retries={"total_max_attempts": 1}), **kw,
            )

        root = client(creds["access_key_id"], creds["secret_access_key"])
        assert isinstance(root.list_functions()["Functions"], list)
        # A plain-HTTP client cannot talk to it.
        plain = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=h.REGION,
            aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=3, read_timeout=3),
        )
        with pytest.raises(Exception):
            plain.list_functions()
        # aws:SecureTransport is true over HTTPS: a policy that needs it allows.
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(cert))

        def admin_call(method: str, path: str, body: bytes = b"") -> dict:
            url = endpoint + path
            headers = h.sigv4_sign(method, url, creds["access_key_id"], creds["secret_access_key"], body=body)
            req = urllib.request.Request(url, data=body or None, method=method, headers=headers)
            with urllib.request.urlopen(req, context=context, timeout=10) as reply:
                text = reply.read()
            return json.loads(text) if text else {}

        user = h.uniq("tls-user")
        admin_call("POST", "/lambent/admin/users", json.dumps({"UserName": user}).encode())
        key = admin_call("POST", f"/lambent/admin/users/{user}/keys")["AccessKey"]
        only_tls = policy(allow("lambda:ListFunctions", Condition={"Bool": {"aws:SecureTransport": "true"}}))
        admin_call("PUT", f"/lambent/admin/users/{user}/policies/tls-only", json.dumps(only_tls).encode())
        assert isinstance(client(key["AccessKeyId"], key["SecretAccessKey"]).list_functions()["Functions"], list)
        plain_only = policy(allow("lambda:ListFunctions", Condition={"Bool": {"aws:SecureTransport": "false"}}))
        admin_call("PUT", f"/lambent/admin/users/{user}/policies/tls-only", json.dumps(plain_only).encode())
        h.expect_error(
            client(key["AccessKeyId"], key["SecretAccessKey"]).list_functions,
            status=403, codes="AccessDeniedException",
        )
    finally:
        _stop(proc)


def test_plain_http_off_loopback_warns(tmp_path):
    port = h.free_port()
    proc, out, _ = _serve(tmp_path, "--listen", f"0.0.0.0:{port}")
    try:
        assert "WARNING: plain HTTP on 0.0.0.0" in out, out
    finally:
        _stop(proc)
