"""The server process itself: start-up output, credentials file and SigV4 auth."""

import json
import stat
import urllib.error
import urllib.request

import pytest

import helpers as h


def test_credentials_file(server):
    path = server.data_dir / "credentials.json"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, f"credentials.json has mode {oct(mode)}, want 0o600"
    creds = json.loads(path.read_text())
    for key in ("access_key_id", "secret_access_key", "region", "endpoint"):
        assert isinstance(creds.get(key), str) and creds[key], f"credentials.json lacks {key}: {creds}"
    assert creds["region"] == "us-east-1"
    assert creds["endpoint"].rstrip("/") == server.endpoint
    assert creds["access_key_id"] != creds["secret_access_key"]


def test_signed_request_is_accepted(lam):
    resp = lam.list_functions(MaxItems=1)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ResponseMetadata"]["RequestId"]
    assert isinstance(resp["Functions"], list)


def test_wrong_secret_is_rejected(server):
    bad = server.client(secret_key=server.credentials["secret_access_key"] + "x")
    h.expect_error(
        bad.list_functions,
        status=403,
        codes={"InvalidSignatureException", "UnrecognizedClientException"},
    )


def test_unknown_access_key_is_rejected(server):
    bad = server.client(access_key="AKIDLAMBENTUNKNOWN00", secret_key="nope")
    h.expect_error(
        bad.list_functions,
        status=403,
        codes={"UnrecognizedClientException", "InvalidSignatureException"},
    )


def test_wrong_secret_cannot_invoke(server, lam):
    # the data plane is authenticated too: a real function, a bad signature
    name = h.uniq("auth-inv")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler")
    bad = server.client(secret_key="definitely-not-the-secret")
    h.expect_error(
        bad.invoke,
        FunctionName=name,
        Payload=b"{}",
        status=403,
        codes={"InvalidSignatureException", "UnrecognizedClientException"},
    )


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/2015-03-31/functions", None),
        ("POST", "/2015-03-31/functions/anything/invocations", b"{}"),
    ],
)
def test_unsigned_request_is_rejected(server, method, path, body):
    req = urllib.request.Request(server.endpoint + path, data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    err = info.value
    assert err.code == 403, (err.code, err.read())
    assert err.headers.get("x-amzn-ErrorType"), dict(err.headers)
    assert err.headers.get("x-amzn-RequestId"), dict(err.headers)
