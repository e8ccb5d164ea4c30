"""tests/deploy/deploy-app.sh: a scripted deployment with the AWS CLI alone,
run against the session server, then checked with boto3."""

import json
import os
import subprocess
import sys
import uuid

import pytest

import helpers as h

SCRIPT = h.REPO / "tests" / "deploy" / "deploy-app.sh"
FUNCTIONS = ("greeter", "calculator", "reporter")


def aws_cli_for_script() -> str:
    override = os.environ.get("LAMBENT_TEST_AWS_CLI")
    if override:
        return override
    return f"{sys.executable} -m awscli"


def run_script(server, *args, endpoint_in_env=True, timeout=240):
    env = h.aws_cli_env(server)
    env["AWS_CLI"] = aws_cli_for_script()
    if endpoint_in_env:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def deployed(server):
    prefix = f"dep{uuid.uuid4().hex[:8]}"
    proc = run_script(server, "--prefix", prefix)
    return prefix, proc


def test_script_exits_0(deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "deploy-app: OK" in proc.stdout
    for f in FUNCTIONS:
        assert f"{prefix}-{f}" in proc.stdout  # the summary


def test_layer_and_functions(lam, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    layers = lam.list_layer_versions(LayerName=f"{prefix}-shared")["LayerVersions"]
    assert layers, "the shared layer was not published"
    latest = layers[0]["LayerVersionArn"]
    for f in FUNCTIONS:
        cfg = lam.get_function_configuration(FunctionName=f"{prefix}-{f}")
        assert cfg["Runtime"] == "python3.12"
        assert [l["Arn"] for l in cfg["Layers"]] == [latest]


def test_versions_and_aliases(lam, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    for f in FUNCTIONS:
        name = f"{prefix}-{f}"
        versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
        assert versions == ["$LATEST", "1"], versions
        aliases = {a["Name"]: a for a in lam.list_aliases(FunctionName=name)["Aliases"]}
        assert set(aliases) == {"dev", "prod"}
        for a in aliases.values():
            assert a["FunctionVersion"] == "1"
            assert a["AliasArn"] == h.function_arn(name, a["Name"])


def test_tags(lam, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    for f in FUNCTIONS:
        name = f"{prefix}-{f}"
        tags = lam.list_tags(Resource=h.function_arn(name))["Tags"]
        assert tags.get("app") == prefix and tags.get("managed-by") == "deploy-app.sh", tags
        assert lam.get_function(FunctionName=name)["Tags"] == tags


def test_policy(lam, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(lam.get_policy(FunctionName=f"{prefix}-greeter")["Policy"])
    stmts = {s["Sid"]: s for s in doc["Statement"]}
    assert set(stmts) == {"allow-eventbridge"}
    s = stmts["allow-eventbridge"]
    assert s["Principal"] == {"Service": "events.amazonaws.com"}
    assert s["Action"] == "lambda:InvokeFunction"
    assert s["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:events:{h.REGION}:{h.ACCOUNT}:rule/{prefix}-schedule"
    for f in ("calculator", "reporter"):
        h.expect_error(lam.get_policy, FunctionName=f"{prefix}-{f}", status=404, codes="ResourceNotFoundException")


def test_invoke_prod(lam, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    expected = {
        "greeter": ({"name": "pytest"}, "Hello, pytest!"),
        "calculator": ({"numbers": [5, 6]}, 11),
    }
    for f in FUNCTIONS:
        name = f"{prefix}-{f}"
        event, want = expected.get(f, ({}, None))
        resp, body = h.invoke_ok(lam, name, event, Qualifier="prod")
        assert resp["ExecutedVersion"] == "1"
        assert body["function"] == f and body["version"] == "1" and body["helper"] == "1.0", body
        assert body["invoked_arn"] == h.function_arn(name, "prod")
        if want is not None:
            assert body["result"] == want
        else:
            assert body["result"]["stage"] == "prod" and body["result"]["function_name"] == name


def test_rerun_is_idempotent_and_endpoint_arg(lam, server, deployed):
    prefix, proc = deployed
    assert proc.returncode == 0, proc.stderr
    # the endpoint given as an argument instead of AWS_ENDPOINT_URL
    again = run_script(server, "--prefix", prefix, "--endpoint-url", server.endpoint, endpoint_in_env=False)
    assert again.returncode == 0, f"stdout:\n{again.stdout}\nstderr:\n{again.stderr}"
    for f in FUNCTIONS:
        name = f"{prefix}-{f}"
        aliases = {a["Name"]: a["FunctionVersion"] for a in lam.list_aliases(FunctionName=name)["Aliases"]}
        # nothing changed: same layer version, no new function version
        assert aliases == {"dev": "1", "prod": "1"}, aliases
        versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
        assert versions == ["$LATEST", "1"], versions
        resp, body = h.invoke_ok(lam, name, {}, Qualifier="prod")
        assert resp["ExecutedVersion"] == aliases["prod"]
    doc = json.loads(lam.get_policy(FunctionName=f"{prefix}-greeter")["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["allow-eventbridge"]
    assert len(lam.list_layer_versions(LayerName=f"{prefix}-shared")["LayerVersions"]) == 1


def test_fails_clearly_on_bad_endpoint(server):
    env = h.aws_cli_env(server)
    env["AWS_CLI"] = aws_cli_for_script()
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{h.free_port()}"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--prefix", "unreachable"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "deploy-app: error" in proc.stderr, proc.stderr
