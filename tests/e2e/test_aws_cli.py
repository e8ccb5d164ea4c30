"""The same basics through the real AWS CLI (`aws lambda ... --endpoint-url`).

The pinned CLI is awscli v1 from PyPI (v2 is not published there); set
LAMBENT_TEST_AWS_CLI=/path/to/aws to run these with a v2 binary, which then
gets `--cli-binary-format raw-in-base64-out` for invoke payloads.
"""

import base64
import json

import pytest

import helpers as h


def ok(proc):
    assert proc.returncode == 0, f"aws exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture(scope="module")
def cli_fn(aws, tmp_session):
    name = h.uniq("cli")
    code = h.py_probe_zip("cli-v1")
    zpath = tmp_session / f"{name}.zip"
    zpath.write_bytes(code)
    out = ok(
        aws(
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "python3.12",
            "--handler",
            "app.handler",
            "--role",
            h.ROLE,
            "--zip-file",
            f"fileb://{zpath}",
            "--timeout",
            "10",
            "--memory-size",
            "192",
            "--environment",
            json.dumps({"Variables": {"LAMBENT_TEST_PID_DIR": str(h.PID_DIR), "FROM_CLI": "yes"}}),
        )
    )
    return name, code, out


def test_create_function(cli_fn):
    name, code, out = cli_fn
    assert out["FunctionName"] == name
    assert out["FunctionArn"] == h.function_arn(name)
    assert out["CodeSha256"] == h.sha256_b64(code)
    assert out["CodeSize"] == len(code)
    assert out["Timeout"] == 10
    assert out["MemorySize"] == 192
    assert out["State"] == "Active"


def test_get_function(aws, cli_fn):
    name, code, _ = cli_fn
    out = ok(aws("get-function", "--function-name", name))
    assert out["Configuration"]["FunctionName"] == name
    assert out["Configuration"]["CodeSha256"] == h.sha256_b64(code)
    assert out["Configuration"]["Environment"]["Variables"]["FROM_CLI"] == "yes"
    assert out["Code"]["RepositoryType"] == "S3"
    conf = ok(aws("get-function-configuration", "--function-name", h.function_arn(name)))
    assert conf["Handler"] == "app.handler"


def test_list_functions(aws, cli_fn):
    name, _code, _ = cli_fn
    out = ok(aws("list-functions"))
    assert name in [f["FunctionName"] for f in out["Functions"]]
    # the CLI's own pagination (MaxItems per request) must reach it too
    out = ok(aws("list-functions", "--page-size", "2"))
    assert name in [f["FunctionName"] for f in out["Functions"]]


def test_invoke(aws, cli_fn, tmp_session):
    name, _code, _ = cli_fn
    outfile = tmp_session / f"{name}.out.json"
    out = ok(
        aws(
            "invoke",
            "--function-name",
            name,
            *h.aws_payload_args(json.dumps({"hello": "cli", "n": 3})),
            str(outfile),
        )
    )
    assert out["StatusCode"] == 200
    assert out["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in out
    result = json.loads(outfile.read_text())
    assert result["event"] == {"hello": "cli", "n": 3}
    assert result["function_name"] == name
    assert result["env"]["FROM_CLI"] == "yes"


def test_invoke_tail_log(aws, cli_fn, tmp_session):
    name, _code, _ = cli_fn
    outfile = tmp_session / f"{name}.tail.json"
    text = h.uniq("cli-log-line")
    out = ok(
        aws(
            "invoke",
            "--function-name",
            name,
            "--log-type",
            "Tail",
            *h.aws_payload_args(json.dumps({"print": text})),
            str(outfile),
        )
    )
    log = base64.b64decode(out["LogResult"]).decode(errors="replace")
    assert text in log
    assert "START RequestId:" in log


def test_invoke_unknown_function_fails(aws, tmp_session):
    proc = aws(
        "invoke",
        "--function-name",
        h.uniq("cli-nope"),
        *h.aws_payload_args("{}"),
        str(tmp_session / "nope.json"),
    )
    assert proc.returncode != 0
    assert "ResourceNotFoundException" in proc.stderr


def test_delete_function(aws, lam):
    name = h.uniq("cli-del")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler")
    proc = aws("delete-function", "--function-name", name)
    assert proc.returncode == 0, proc.stderr
    proc = aws("get-function", "--function-name", name)
    assert proc.returncode != 0
    assert "ResourceNotFoundException" in proc.stderr
    h.assert_function_absent(lam, name)
