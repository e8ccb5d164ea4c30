"""The `lambent` CLI against the running server (found through --data-dir)."""

import io
import json
import os
import subprocess
import zipfile

import pytest

import helpers as h


def lambent(server, *args, timeout=60, check=True, data_dir=None, env=None):
    cmd = [str(h.lambent_bin()), *args, "--data-dir", str(data_dir or server.data_dir)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBENT_"))}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env={**base_env, **(env or {})}
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def as_json(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"--output json printed something that is not JSON: {proc.stdout!r}") from exc


def write_probe(dirpath, version):
    dirpath.mkdir(parents=True, exist_ok=True)
    files = zipfile.ZipFile(io.BytesIO(h.py_probe_zip(version)))
    (dirpath / "app.py").write_bytes(files.read("app.py"))
    (dirpath / "README.txt").write_text("extra files are deployed too\n")


@pytest.fixture(scope="module")
def deployed(server, lam, tmp_path_factory):
    src = tmp_path_factory.mktemp("cli-src") / "fn"
    write_probe(src, "cli-v1")
    name = h.uniq("lcli")
    proc = lambent(
        server,
        *("deploy", str(src), "--name", name, "--runtime", "python3.12", "--handler", "app.handler"),
        *("--output", "json"),
    )
    return name, src, as_json(proc)


def test_deploy_directory_creates_function(lam, deployed):
    name, _src, out = deployed
    # --output json prints the FunctionConfiguration
    assert out["FunctionName"] == name
    assert out["FunctionArn"] == h.function_arn(name)
    conf = lam.get_function_configuration(FunctionName=name)
    assert out["CodeSha256"] == conf["CodeSha256"]
    assert conf["Runtime"] == "python3.12"
    assert conf["Handler"] == "app.handler"
    assert conf["State"] == "Active"
    code = lam.get_function(FunctionName=name)
    assert code["Configuration"]["CodeSize"] > 0
    _resp, body = h.invoke_ok(lam, name, {"via": "boto3"})
    assert body["version"] == "cli-v1"


def test_invoke_with_payload_json_output(server, deployed):
    name, _src, _ = deployed
    proc = lambent(server, "invoke", name, "--payload", json.dumps({"from": "lambent-cli", "n": 7}), "--output", "json")
    out = as_json(proc)
    # shaped like the Invoke response, with the payload decoded
    assert out["StatusCode"] == 200, out
    assert out["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in out
    assert out["Payload"]["event"] == {"from": "lambent-cli", "n": 7}
    assert out["Payload"]["version"] == "cli-v1"


def test_invoke_with_payload_file(server, deployed, tmp_path):
    name, _src, _ = deployed
    payload = tmp_path / "event.json"
    payload.write_text(json.dumps({"from": "a-file-payload"}))
    out = as_json(lambent(server, "invoke", name, "--payload", f"@{payload}", "--output", "json"))
    assert out["Payload"]["event"] == {"from": "a-file-payload"}


def test_invoke_async(server, deployed):
    name, _src, _ = deployed
    marker = h.scratch_path("lambent-cli-async")
    lambent(server, "invoke", name, "--async", "--payload", json.dumps({"marker": str(marker)}))
    h.wait_for_file(marker, timeout=20)


def test_invoke_with_log(server, deployed):
    name, _src, _ = deployed
    line = h.uniq("cli-printed")
    proc = lambent(server, "invoke", name, "--log", "--payload", json.dumps({"print": line}))
    both = proc.stdout + proc.stderr
    assert line in both
    assert "START RequestId:" in both


def test_invoke_function_error_exits_nonzero(server, deployed):
    name, _src, _ = deployed
    proc = lambent(server, "invoke", name, "--payload", json.dumps({"raise": "cli-boom"}), check=False)
    assert proc.returncode != 0, "a function error must make `lambent invoke` fail"
    err = json.loads(proc.stdout)
    assert err["errorMessage"] == "cli-boom"
    assert err["errorType"] == "ValueError"


def test_invoke_unknown_function_fails(server):
    proc = lambent(server, "invoke", h.uniq("lcli-ghost"), "--payload", "{}", check=False)
    assert proc.returncode != 0
    assert "ResourceNotFoundException" in proc.stderr


def test_ls_shows_function(server, deployed):
    name, _src, _ = deployed
    out = as_json(lambent(server, "ls", "--output", "json"))
    entries = [f for f in out if f["FunctionName"] == name]
    assert len(entries) == 1, out
    assert entries[0]["Runtime"] == "python3.12"
    plain = lambent(server, "ls")
    assert name in plain.stdout


def test_redeploy_updates(server, lam, tmp_path):
    src = tmp_path / "fn"
    write_probe(src, "re-v1")
    name = h.uniq("lcli-re")
    lambent(server, "deploy", str(src), "--name", name, "--runtime", "python3.12", "--handler", "app.handler")
    before = lam.get_function_configuration(FunctionName=name)
    _resp, body = h.invoke_ok(lam, name, {})
    assert body["version"] == "re-v1"

    write_probe(src, "re-v2")
    lambent(server, "deploy", str(src), "--name", name, "--runtime", "python3.12", "--handler", "app.handler")
    after = lam.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] != before["CodeSha256"]
    assert after["RevisionId"] != before["RevisionId"]
    _resp, body = h.invoke_ok(lam, name, {})
    assert body["version"] == "re-v2", "the redeployed code must run"
    names = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert names.count(name) == 1


def test_deploy_zip_file(server, lam, tmp_path):
    zpath = tmp_path / "fn.zip"
    code = h.py_probe_zip("from-zip")
    zpath.write_bytes(code)
    name = h.uniq("lcli-zip")
    lambent(server, "deploy", str(zpath), "--name", name, "--runtime", "python3.12", "--handler", "app.handler")
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["CodeSha256"] == h.sha256_b64(code), "a zip is deployed as is"
    _resp, body = h.invoke_ok(lam, name, {})
    assert body["version"] == "from-zip"


def test_rm_removes_function(server, lam, tmp_path):
    src = tmp_path / "fn"
    write_probe(src, "rm-me")
    name = h.uniq("lcli-rm")
    lambent(server, "deploy", str(src), "--name", name, "--runtime", "python3.12", "--handler", "app.handler")
    lam.get_function(FunctionName=name)
    lambent(server, "rm", name)
    h.assert_function_absent(lam, name)
    out = as_json(lambent(server, "ls", "--output", "json"))
    assert name not in [f["FunctionName"] for f in out]
    proc = lambent(server, "rm", name, check=False)
    assert proc.returncode != 0, "removing a missing function must fail"


def test_server_found_through_lambent_endpoint(server, deployed, tmp_path):
    # no credentials.json in this data dir: LAMBENT_ENDPOINT + AWS_* keys instead
    name, _src, _ = deployed
    env = {
        "LAMBENT_ENDPOINT": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.credentials["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": server.credentials["secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = as_json(lambent(server, "ls", "--output", "json", data_dir=tmp_path, env=env))
    assert name in [f["FunctionName"] for f in out]
    # and with a wrong secret the server refuses
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    proc = lambent(server, "ls", data_dir=tmp_path, env=env, check=False)
    assert proc.returncode != 0
