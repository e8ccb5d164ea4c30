"""Layers: PublishLayerVersion, Get*/List*/Delete, layer version permissions,
and functions that use layers (Python imports, a custom runtime whose
bootstrap comes from a layer).

Functions run as host processes, so /opt is emulated through the runtimes'
search paths: these tests observe layers through imports and the bootstrap,
never by reading /opt."""

import json
import re

import pytest

import helpers as h

LAYER_ARN_RE = re.compile(r"^arn:aws:lambda:us-east-1:000000000000:layer:[A-Za-z0-9_-]+:\d+$")


def py_layer_zip(modules: dict) -> bytes:
    return h.make_zip(modules)


def publish(lam, name: str, content: bytes, **kw):
    resp = lam.publish_layer_version(LayerName=name, Content={"ZipFile": content}, **kw)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201, resp["ResponseMetadata"]
    return resp


@pytest.fixture(scope="module")
def helper_layer(lam):
    """A Python layer, two versions: module `greet` in python/, module
    `deep` in python/lib/python3.12/site-packages/."""
    name = h.uniq("ly-helper")
    v1 = h.make_zip(
        {
            "python/greet.py": "WHO = 'layer-v1'\n",
            "python/lib/python3.12/site-packages/deep.py": "DEEP = 'site-packages-v1'\n",
        }
    )
    r1 = publish(lam, name, v1, Description="first", CompatibleRuntimes=["python3.12", "python3.11"], LicenseInfo="MIT")
    v2 = h.make_zip({"python/greet.py": "WHO = 'layer-v2'\n"})
    r2 = publish(lam, name, v2, Description="second", CompatibleRuntimes=["python3.12"])
    return name, (v1, r1), (v2, r2)


def test_publish_layer_version_shape(helper_layer):
    name, (v1, r1), (v2, r2) = helper_layer
    assert r1["Version"] == 1 and r2["Version"] == 2
    assert r1["LayerArn"] == h.layer_arn(name)
    assert r1["LayerVersionArn"] == h.layer_arn(name, 1)
    assert r2["LayerVersionArn"] == h.layer_arn(name, 2)
    assert r1["Description"] == "first"
    assert r1["CompatibleRuntimes"] == ["python3.12", "python3.11"]
    assert r1["LicenseInfo"] == "MIT"
    assert r1["Content"]["CodeSha256"] == h.sha256_b64(v1)
    assert r1["Content"]["CodeSize"] == len(v1)
    assert r1["Content"]["Location"]
    assert h.LAST_MODIFIED_RE.match(r1["CreatedDate"]) or re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+0000$", r1["CreatedDate"]
    ), r1["CreatedDate"]


def test_get_layer_version_and_by_arn(lam, helper_layer):
    name, (v1, r1), _ = helper_layer
    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["LayerVersionArn"] == h.layer_arn(name, 1)
    assert got["Version"] == 1
    assert got["Content"]["CodeSha256"] == h.sha256_b64(v1)
    assert got["CompatibleRuntimes"] == ["python3.12", "python3.11"]
    # LayerName may be the layer ARN
    assert lam.get_layer_version(LayerName=h.layer_arn(name), VersionNumber=1)["Version"] == 1
    by_arn = lam.get_layer_version_by_arn(Arn=h.layer_arn(name, 2))
    assert by_arn["Version"] == 2
    assert by_arn["LayerVersionArn"] == h.layer_arn(name, 2)
    assert by_arn["Description"] == "second"
    h.expect_error(lam.get_layer_version, LayerName=name, VersionNumber=9, status=404, codes="ResourceNotFoundException")
    h.expect_error(
        lam.get_layer_version_by_arn, Arn=h.layer_arn(name, 9), status=404, codes="ResourceNotFoundException"
    )


def test_list_layer_versions_newest_first(lam, helper_layer):
    name, _, _ = helper_layer
    resp = lam.list_layer_versions(LayerName=name)
    assert [v["Version"] for v in resp["LayerVersions"]] == [2, 1]
    assert resp["LayerVersions"][0]["LayerVersionArn"] == h.layer_arn(name, 2)
    assert not resp.get("NextMarker")
    items, pages = h.paginate_all(lam.list_layer_versions, "LayerVersions", 1, LayerName=name)
    assert [v["Version"] for v in items] == [2, 1] and pages == 2
    # filter by runtime: only version 1 declares python3.11
    only = lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.11")["LayerVersions"]
    assert [v["Version"] for v in only] == [1]


def test_list_layers_latest_matching(lam, helper_layer):
    name, _, _ = helper_layer

    def find(**kw):
        out = []
        for page in lam.get_paginator("list_layers").paginate(**kw):
            out += [l for l in page["Layers"] if l["LayerName"] == name]
        return out

    mine = find()
    assert len(mine) == 1, mine
    assert mine[0]["LayerArn"] == h.layer_arn(name)
    latest = mine[0]["LatestMatchingVersion"]
    assert latest["Version"] == 2
    assert latest["LayerVersionArn"] == h.layer_arn(name, 2)
    assert latest["Description"] == "second"
    older = find(CompatibleRuntime="python3.11")
    assert len(older) == 1 and older[0]["LatestMatchingVersion"]["Version"] == 1
    assert find(CompatibleRuntime="nodejs20.x") == []


def test_delete_layer_version(lam):
    name = h.uniq("ly-del")
    publish(lam, name, h.make_zip({"python/x.py": "X = 1\n"}))
    publish(lam, name, h.make_zip({"python/x.py": "X = 2\n"}))
    resp = lam.delete_layer_version(LayerName=name, VersionNumber=1)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(lam.get_layer_version, LayerName=name, VersionNumber=1, status=404, codes="ResourceNotFoundException")
    assert [v["Version"] for v in lam.list_layer_versions(LayerName=name)["LayerVersions"]] == [2]
    # numbers are never reused
    assert publish(lam, name, h.make_zip({"python/x.py": "X = 3\n"}))["Version"] == 3


def test_layer_version_permissions(lam, helper_layer):
    name, _, _ = helper_layer
    resp = lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="share-all",
        Action="lambda:GetLayerVersion",
        Principal="*",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    stmt = json.loads(resp["Statement"])
    assert stmt["Sid"] == "share-all"
    assert stmt["Action"] == "lambda:GetLayerVersion"
    assert stmt["Resource"] == h.layer_arn(name, 1)
    assert resp["RevisionId"]
    h.expect_error(
        lam.add_layer_version_permission,
        LayerName=name,
        VersionNumber=1,
        StatementId="share-all",
        Action="lambda:GetLayerVersion",
        Principal="*",
        status=409,
        codes="ResourceConflictException",
    )
    pol = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    doc = json.loads(pol["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["share-all"]
    rm = lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="share-all")
    assert rm["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(
        lam.remove_layer_version_permission,
        LayerName=name,
        VersionNumber=1,
        StatementId="share-all",
        status=404,
        codes="ResourceNotFoundException",
    )
    h.expect_error(
        lam.get_layer_version_policy, LayerName=name, VersionNumber=1, status=404, codes="ResourceNotFoundException"
    )


# --------------------------------------------------------------------------
# functions using layers

LAYERED_APP = """
import importlib


def handler(event, context):
    out = {}
    for mod, attr in (event or {}).get("imports", []):
        try:
            out[mod] = getattr(importlib.import_module(mod), attr)
        except Exception as e:
            out[mod] = "ERROR %s: %s" % (type(e).__name__, e)
    return out
"""


def test_python_function_with_layers_override_order(lam):
    base = h.uniq("ly-base")
    over = h.uniq("ly-over")
    a = publish(
        lam,
        base,
        h.make_zip(
            {
                "python/shared_mod.py": "WHO = 'first-layer'\n",
                "python/only_first.py": "VALUE = 'only-in-first'\n",
            }
        ),
        CompatibleRuntimes=["python3.12"],
    )
    b = publish(
        lam,
        over,
        h.make_zip({"python/shared_mod.py": "WHO = 'second-layer'\n"}),
        CompatibleRuntimes=["python3.12"],
    )
    name = h.uniq("ly-fn")
    resp = h.create_function(
        lam,
        name,
        h.py_zip({"app.py": LAYERED_APP}),
        "python3.12",
        "app.handler",
        Layers=[a["LayerVersionArn"], b["LayerVersionArn"]],
    )
    assert [l["Arn"] for l in resp["Layers"]] == [a["LayerVersionArn"], b["LayerVersionArn"]]
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["Layers"] == [
        {"Arn": a["LayerVersionArn"], "CodeSize": a["Content"]["CodeSize"]},
        {"Arn": b["LayerVersionArn"], "CodeSize": b["Content"]["CodeSize"]},
    ] or [{k: l[k] for k in ("Arn", "CodeSize")} for l in cfg["Layers"]] == [
        {"Arn": a["LayerVersionArn"], "CodeSize": a["Content"]["CodeSize"]},
        {"Arn": b["LayerVersionArn"], "CodeSize": b["Content"]["CodeSize"]},
    ]
    ev = {"imports": [["shared_mod", "WHO"], ["only_first", "VALUE"]]}
    _, body = h.invoke_ok(lam, name, ev)
    assert body == {"shared_mod": "second-layer", "only_first": "only-in-first"}

    # Layers=[] removes them (a fresh environment no longer sees the modules)
    up = lam.update_function_configuration(FunctionName=name, Layers=[])
    assert not up.get("Layers")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    assert not lam.get_function_configuration(FunctionName=name).get("Layers")
    _, body = h.invoke_ok(lam, name, ev)
    assert all(str(v).startswith("ERROR ModuleNotFoundError") for v in body.values()), body

    # and a single layer back again
    lam.update_function_configuration(FunctionName=name, Layers=[b["LayerVersionArn"]])
    _, body = h.invoke_ok(lam, name, {"imports": [["shared_mod", "WHO"], ["only_first", "VALUE"]]})
    assert body["shared_mod"] == "second-layer"
    assert body["only_first"].startswith("ERROR ModuleNotFoundError"), body


def test_python_layer_site_packages_of_the_runtime(lam):
    # AWS puts /opt/python and /opt/python/lib/python3.X/site-packages (X of
    # the function's runtime) on sys.path
    lay = publish(
        lam,
        h.uniq("ly-site"),
        h.make_zip(
            {
                "python/lib/python3.12/site-packages/deep_mod.py": "VALUE = 'deep-312'\n",
                "python/lib/python3.12/site-packages/deeppkg/__init__.py": "VALUE = 'pkg-312'\n",
            }
        ),
        CompatibleRuntimes=["python3.12"],
    )
    name = h.uniq("ly-sitefn")
    h.create_function(
        lam, name, h.py_zip({"app.py": LAYERED_APP}), "python3.12", "app.handler", Layers=[lay["LayerVersionArn"]]
    )
    _, body = h.invoke_ok(lam, name, {"imports": [["deep_mod", "VALUE"], ["deeppkg", "VALUE"]]})
    assert body == {"deep_mod": "deep-312", "deeppkg": "pkg-312"}


def test_function_code_wins_over_layer(lam):
    # /var/task comes before /opt/python on sys.path
    lay = publish(lam, h.uniq("ly-shadow"), h.make_zip({"python/shadow.py": "WHO = 'layer'\n"}))
    name = h.uniq("ly-shadowfn")
    h.create_function(
        lam,
        name,
        h.py_zip({"app.py": LAYERED_APP, "shadow.py": "WHO = 'function'\n"}),
        "python3.12",
        "app.handler",
        Layers=[lay["LayerVersionArn"]],
    )
    _, body = h.invoke_ok(lam, name, {"imports": [["shadow", "WHO"]]})
    assert body == {"shadow": "function"}


LAYER_BOOTSTRAP = r"""#!/bin/sh
# A custom runtime in a layer: the AWS tutorial's shell runtime.
set -eu
if [ -n "${LAMBENT_TEST_PID_DIR:-}" ]; then
    cut -d' ' -f22 /proc/$$/stat > "$LAMBENT_TEST_PID_DIR/$$.pid"
fi
. "$LAMBDA_TASK_ROOT/$(echo "$_HANDLER" | cut -d. -f1).sh"
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
    headers="$(mktemp)"
    event="$(curl -sS -LD "$headers" "$api/next")"
    request_id="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$headers" | tr -d '[:space:]' | cut -d: -f2)"
    rm -f "$headers"
    response="$($(echo "$_HANDLER" | cut -d. -f2) "$event")"
    curl -sS -X POST "$api/$request_id/response" -d "$response" >/dev/null
done
"""

FUNCTION_SH = r"""
handler () {
    printf '{"from":"shell-layer-runtime","event":%s,"handler":"%s"}' "$1" "$_HANDLER"
}
"""


def test_provided_runtime_bootstrap_from_layer(lam):
    lay = publish(
        lam,
        h.uniq("ly-runtime"),
        h.make_zip({"bootstrap": (LAYER_BOOTSTRAP, 0o755)}),
        CompatibleRuntimes=["provided.al2023"],
    )
    name = h.uniq("ly-shellfn")
    code = h.make_zip({"function.sh": (FUNCTION_SH, 0o644)})
    h.create_function(
        lam, name, code, "provided.al2023", "function.handler", Layers=[lay["LayerVersionArn"]]
    )
    _, body = h.invoke_ok(lam, name, {"n": 7})
    assert body == {"from": "shell-layer-runtime", "event": {"n": 7}, "handler": "function.handler"}
    _, body = h.invoke_ok(lam, name, {"n": 8})
    assert body["event"] == {"n": 8}


def test_more_than_five_layers_400(lam):
    arns = [
        publish(lam, h.uniq("ly-many"), h.make_zip({f"python/m{i}.py": f"I = {i}\n"}))["LayerVersionArn"]
        for i in range(6)
    ]
    h.expect_error(
        h.create_function,
        lam,
        h.uniq("ly-six"),
        h.py_zip({"app.py": LAYERED_APP}),
        "python3.12",
        "app.handler",
        Layers=arns,
        status=400,
        codes="InvalidParameterValueException",
    )
    name = h.uniq("ly-five")
    h.create_function(lam, name, h.py_zip({"app.py": LAYERED_APP}), "python3.12", "app.handler", Layers=arns[:5])
    _, body = h.invoke_ok(lam, name, {"imports": [[f"m{i}", "I"] for i in range(5)]})
    assert body == {f"m{i}": i for i in range(5)}
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=name,
        Layers=arns,
        status=400,
        codes="InvalidParameterValueException",
    )
    assert len(lam.get_function_configuration(FunctionName=name)["Layers"]) == 5


def test_missing_layer_version_rejected(lam):
    # AWS: 400 InvalidParameterValueException "Layer version ... does not exist."
    lay = publish(lam, h.uniq("ly-gone"), h.make_zip({"python/g.py": "G = 1\n"}))
    missing = lay["LayerVersionArn"].rsplit(":", 1)[0] + ":7"
    h.expect_error(
        h.create_function,
        lam,
        h.uniq("ly-missing"),
        h.py_zip({"app.py": LAYERED_APP}),
        "python3.12",
        "app.handler",
        Layers=[missing],
        status=400,
        codes="InvalidParameterValueException",
    )
    name = h.uniq("ly-missing2")
    h.create_function(lam, name, h.py_zip({"app.py": LAYERED_APP}), "python3.12", "app.handler")
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=name,
        Layers=[h.layer_arn(h.uniq("never"), 1)],
        status=400,
        codes="InvalidParameterValueException",
    )


def test_deleted_layer_version_keeps_working_for_existing_function(lam):
    lay = publish(lam, h.uniq("ly-keep"), h.make_zip({"python/kept.py": "K = 'still here'\n"}))
    name = h.uniq("ly-keepfn")
    h.create_function(
        lam, name, h.py_zip({"app.py": LAYERED_APP}), "python3.12", "app.handler", Layers=[lay["LayerVersionArn"]]
    )
    lam.delete_layer_version(LayerName=lay["LayerArn"], VersionNumber=lay["Version"])
    # a new configuration forces a fresh environment
    lam.update_function_configuration(FunctionName=name, Description="after layer delete")
    _, body = h.invoke_ok(lam, name, {"imports": [["kept", "K"]]})
    assert body == {"kept": "still here"}
