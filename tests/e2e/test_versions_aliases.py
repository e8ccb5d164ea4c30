"""Versions and aliases: PublishVersion, ListVersionsByFunction, qualified
invokes, CreateAlias/GetAlias/UpdateAlias/DeleteAlias/ListAliases and
weighted alias routing, all through boto3 against the real server."""

import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import helpers as h

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_fn(lam, prefix: str, tag: str = "v1", **kw) -> str:
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_tagged_zip(tag), "python3.12", "app.handler", **kw)
    return name


def run(lam, function_name: str, **kw):
    """Invoke; return (ExecutedVersion, handler result)."""
    resp, body = h.invoke_ok(lam, function_name, {}, **kw)
    return resp.get("ExecutedVersion"), body


@pytest.fixture(scope="module")
def fn3(lam):
    """A function with versions 1 (tag v1), 2 (tag v2) and $LATEST (tag v3)."""
    name = new_fn(lam, "va-three", "v1")
    p1 = lam.publish_version(FunctionName=name, Description="first")
    assert p1["Version"] == "1", p1
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"))
    p2 = lam.publish_version(FunctionName=name)
    assert p2["Version"] == "2", p2
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v3"))
    return name


# --------------------------------------------------------------------------
# PublishVersion


def test_publish_version_201_and_shape(lam):
    name = new_fn(lam, "va-pub")
    code = h.py_tagged_zip("v1")
    resp = lam.publish_version(FunctionName=name, Description="release one")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["Version"] == "1"
    assert resp["FunctionArn"] == h.function_arn(name, "1")
    assert resp["FunctionName"] == name
    assert resp["Description"] == "release one"
    assert resp["CodeSha256"] == h.sha256_b64(code)
    assert resp["Runtime"] == "python3.12"
    assert resp["State"] == "Active"
    assert UUID_RE.match(resp["RevisionId"]), resp["RevisionId"]
    assert h.LAST_MODIFIED_RE.match(resp["LastModified"]), resp["LastModified"]


def test_publish_without_changes_returns_same_version(lam):
    name = new_fn(lam, "va-same")
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"))
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    # a configuration change alone is a change too
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    v3 = lam.publish_version(FunctionName=name)
    assert v3["Version"] == "3" and v3["Timeout"] == 5


def test_publish_codesha256_mismatch_is_400(lam):
    name = new_fn(lam, "va-sha")
    h.expect_error(
        lam.publish_version,
        FunctionName=name,
        CodeSha256=h.sha256_b64(b"something else"),
        status=400,
        codes="InvalidParameterValueException",
    )
    # the right hash publishes
    resp = lam.publish_version(FunctionName=name, CodeSha256=h.sha256_b64(h.py_tagged_zip("v1")))
    assert resp["Version"] == "1"


def test_publish_revision_id_mismatch_is_412(lam):
    name = new_fn(lam, "va-rev")
    h.expect_error(
        lam.publish_version,
        FunctionName=name,
        RevisionId="00000000-0000-0000-0000-000000000000",
        status=412,
        codes="PreconditionFailedException",
    )
    rev = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert lam.publish_version(FunctionName=name, RevisionId=rev)["Version"] == "1"


def test_publish_unknown_function_is_404(lam):
    h.expect_error(
        lam.publish_version, FunctionName=h.uniq("va-nope"), status=404, codes="ResourceNotFoundException"
    )


def test_create_with_publish_returns_version_1(lam):
    name = h.uniq("va-cpub")
    resp = h.create_function(lam, name, h.py_tagged_zip("v1"), "python3.12", "app.handler", Publish=True)
    assert resp["Version"] == "1"
    assert resp["FunctionArn"] == h.function_arn(name, "1")
    up = lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"), Publish=True)
    assert up["Version"] == "2"
    assert up["FunctionArn"] == h.function_arn(name, "2")
    # $LATEST has the newest code and stays unqualified
    latest = lam.get_function_configuration(FunctionName=name)
    assert latest["Version"] == "$LATEST"
    assert latest["FunctionArn"] == h.function_arn(name)
    assert latest["CodeSha256"] == h.sha256_b64(h.py_tagged_zip("v2"))
    assert run(lam, name, Qualifier="1")[1]["tag"] == "v1"
    assert run(lam, name, Qualifier="2")[1]["tag"] == "v2"


# --------------------------------------------------------------------------
# ListVersionsByFunction


def test_list_versions_order_and_pagination(lam):
    name = new_fn(lam, "va-list", "t0")
    for i in range(1, 5):
        lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip(f"t{i}"))
        assert lam.publish_version(FunctionName=name)["Version"] == str(i)
    full = lam.list_versions_by_function(FunctionName=name)
    assert [v["Version"] for v in full["Versions"]] == ["$LATEST", "1", "2", "3", "4"]
    assert not full.get("NextMarker")
    assert full["Versions"][0]["FunctionArn"] == h.function_arn(name, "$LATEST") or full["Versions"][0][
        "FunctionArn"
    ] == h.function_arn(name)
    assert full["Versions"][2]["FunctionArn"] == h.function_arn(name, "2")
    items, pages = h.paginate_all(lam.list_versions_by_function, "Versions", 2, FunctionName=name)
    assert [v["Version"] for v in items] == ["$LATEST", "1", "2", "3", "4"]
    assert pages == 3
    # botocore's paginator too
    pager = lam.get_paginator("list_versions_by_function")
    got = [v["Version"] for p in pager.paginate(FunctionName=name, PaginationConfig={"PageSize": 3}) for v in p["Versions"]]
    assert got == ["$LATEST", "1", "2", "3", "4"]


def test_list_versions_unknown_function_404(lam):
    h.expect_error(
        lam.list_versions_by_function, FunctionName=h.uniq("va-nope"), status=404, codes="ResourceNotFoundException"
    )


# --------------------------------------------------------------------------
# qualified invokes and immutability


def test_invoke_by_version_runs_that_versions_code(lam, fn3):
    name = fn3
    ver, body = run(lam, name)
    assert ver == "$LATEST" and body["tag"] == "v3" and body["function_version"] == "$LATEST"
    ver, body = run(lam, name, Qualifier="1")
    assert ver == "1" and body["tag"] == "v1" and body["function_version"] == "1"
    assert body["invoked_function_arn"] == h.function_arn(name, "1")
    ver, body = run(lam, f"{name}:2")
    assert ver == "2" and body["tag"] == "v2" and body["function_version"] == "2"
    ver, body = run(lam, h.function_arn(name, "1"))
    assert ver == "1" and body["tag"] == "v1"
    ver, body = run(lam, name, Qualifier="$LATEST")
    assert ver == "$LATEST" and body["tag"] == "v3"


def test_version_config_is_immutable(lam, fn3):
    name = fn3
    lam.update_function_configuration(FunctionName=name, Description="changed later", Timeout=9)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    v1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == h.function_arn(name, "1")
    assert v1["Description"] == "first"
    assert v1["Timeout"] == 3
    assert v1["CodeSha256"] == h.sha256_b64(h.py_tagged_zip("v1"))
    via_name = lam.get_function_configuration(FunctionName=f"{name}:1")
    assert via_name["Version"] == "1"
    fn = lam.get_function(FunctionName=name, Qualifier="2")
    assert fn["Configuration"]["Version"] == "2"
    assert fn["Configuration"]["CodeSha256"] == h.sha256_b64(h.py_tagged_zip("v2"))
    assert run(lam, name, Qualifier="1")[1]["tag"] == "v1"


def test_updating_a_version_is_refused(lam, fn3):
    # code and configuration updates apply to $LATEST only
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=f"{fn3}:1",
        Description="nope",
        status=range(400, 410),
    )
    assert lam.get_function_configuration(FunctionName=fn3, Qualifier="1")["Description"] == "first"


def test_unknown_version_404(lam, fn3):
    h.expect_error(
        lam.get_function_configuration, FunctionName=fn3, Qualifier="99", status=404, codes="ResourceNotFoundException"
    )
    h.expect_error(lam.get_function, FunctionName=fn3, Qualifier="99", status=404, codes="ResourceNotFoundException")
    h.expect_error(lam.invoke, FunctionName=fn3, Qualifier="99", Payload=b"{}", status=404, codes="ResourceNotFoundException")
    h.expect_error(lam.invoke, FunctionName=f"{fn3}:99", Payload=b"{}", status=404, codes="ResourceNotFoundException")


def test_conflicting_qualifiers_400(lam, fn3):
    h.expect_error(
        lam.get_function_configuration,
        FunctionName=f"{fn3}:1",
        Qualifier="2",
        status=400,
        codes="InvalidParameterValueException",
    )


def test_delete_version_only(lam):
    name = new_fn(lam, "va-delv", "v1")
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"))
    lam.publish_version(FunctionName=name)
    resp = lam.delete_function(FunctionName=name, Qualifier="1")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    h.expect_error(
        lam.get_function_configuration, FunctionName=name, Qualifier="1", status=404, codes="ResourceNotFoundException"
    )
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "2"]
    assert run(lam, name, Qualifier="2")[1]["tag"] == "v2"
    assert run(lam, name)[1]["tag"] == "v2"
    # numbers are never reused
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v3"))
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_delete_version_used_by_alias_409(lam):
    name = new_fn(lam, "va-delalias")
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    h.expect_error(
        lam.delete_function, FunctionName=name, Qualifier="1", status=409, codes="ResourceConflictException"
    )
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Version"] == "1"
    lam.delete_alias(FunctionName=name, Name="live")
    lam.delete_function(FunctionName=name, Qualifier="1")
    h.expect_error(lam.get_function_configuration, FunctionName=name, Qualifier="1", status=404)


def test_delete_function_deletes_versions_and_aliases(lam):
    name = new_fn(lam, "va-delall")
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.delete_function(FunctionName=name)
    h.expect_error(
        lam.get_function_configuration, FunctionName=name, Qualifier="1", status=404, codes="ResourceNotFoundException"
    )
    h.expect_error(lam.get_alias, FunctionName=name, Name="live", status=404, codes="ResourceNotFoundException")
    # a new function of the same name starts again at version 1 with no aliases
    h.create_function(lam, name, h.py_tagged_zip("again"), "python3.12", "app.handler")
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    assert run(lam, name, Qualifier="1")[1]["tag"] == "again"


def test_list_functions_all_versions(lam, fn3):
    names = set()
    for page in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL"):
        for f in page["Functions"]:
            if f["FunctionName"] == fn3:
                names.add(f["Version"])
    assert names == {"$LATEST", "1", "2"}
    plain = set()
    for page in lam.get_paginator("list_functions").paginate():
        for f in page["Functions"]:
            if f["FunctionName"] == fn3:
                plain.add(f["Version"])
    assert plain == {"$LATEST"}


# --------------------------------------------------------------------------
# aliases


def test_alias_crud(lam, fn3):
    name = fn3
    resp = lam.create_alias(FunctionName=name, Name="crud", FunctionVersion="1", Description="the first")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["AliasArn"] == h.function_arn(name, "crud")
    assert resp["Name"] == "crud"
    assert resp["FunctionVersion"] == "1"
    assert resp["Description"] == "the first"
    assert UUID_RE.match(resp["RevisionId"]), resp
    got = lam.get_alias(FunctionName=name, Name="crud")
    assert got["AliasArn"] == resp["AliasArn"] and got["FunctionVersion"] == "1"
    assert got["RevisionId"] == resp["RevisionId"]

    h.expect_error(
        lam.update_alias,
        FunctionName=name,
        Name="crud",
        FunctionVersion="2",
        RevisionId="00000000-0000-0000-0000-000000000000",
        status=412,
        codes="PreconditionFailedException",
    )
    up = lam.update_alias(FunctionName=name, Name="crud", FunctionVersion="2", RevisionId=resp["RevisionId"])
    assert up["FunctionVersion"] == "2"
    assert up["Description"] == "the first"  # untouched fields stay
    assert up["RevisionId"] != resp["RevisionId"]
    assert lam.get_alias(FunctionName=name, Name="crud")["FunctionVersion"] == "2"

    d = lam.delete_alias(FunctionName=name, Name="crud")
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(lam.get_alias, FunctionName=name, Name="crud", status=404, codes="ResourceNotFoundException")


def test_alias_duplicate_409(lam, fn3):
    lam.create_alias(FunctionName=fn3, Name="dup", FunctionVersion="1")
    h.expect_error(
        lam.create_alias, FunctionName=fn3, Name="dup", FunctionVersion="2", status=409, codes="ResourceConflictException"
    )


def test_alias_numeric_name_400(lam, fn3):
    h.expect_error(
        lam.create_alias, FunctionName=fn3, Name="123", FunctionVersion="1", status=400, codes="InvalidParameterValueException"
    )
    h.expect_error(
        lam.create_alias,
        FunctionName=fn3,
        Name="bad name!",
        FunctionVersion="1",
        status=400,
        codes="InvalidParameterValueException",
    )


def test_alias_to_missing_version_404(lam, fn3):
    h.expect_error(
        lam.create_alias, FunctionName=fn3, Name="ghost", FunctionVersion="42", status=404, codes="ResourceNotFoundException"
    )
    h.expect_error(
        lam.create_alias, FunctionName=h.uniq("va-nope"), Name="x", FunctionVersion="1", status=404, codes="ResourceNotFoundException"
    )


def test_alias_to_latest_allowed(lam, fn3):
    resp = lam.create_alias(FunctionName=fn3, Name="edge", FunctionVersion="$LATEST")
    assert resp["FunctionVersion"] == "$LATEST"
    ver, body = run(lam, fn3, Qualifier="edge")
    assert ver == "$LATEST" and body["tag"] == "v3"


def test_invoke_through_alias(lam, fn3):
    name = fn3
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
    ver, body = run(lam, name, Qualifier="prod")
    assert ver == "1" and body["tag"] == "v1"
    assert body["function_version"] == "1"
    assert body["invoked_function_arn"] == h.function_arn(name, "prod")
    ver, body = run(lam, f"{name}:prod")
    assert ver == "1" and body["tag"] == "v1"
    ver, body = run(lam, h.function_arn(name, "prod"))
    assert ver == "1" and body["tag"] == "v1"
    # moving the alias moves invokes
    lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="2")
    ver, body = run(lam, name, Qualifier="prod")
    assert ver == "2" and body["tag"] == "v2"
    cfg = lam.get_function_configuration(FunctionName=name, Qualifier="prod")
    assert cfg["Version"] == "2"


def test_list_aliases_filter_and_pagination(lam):
    name = new_fn(lam, "va-lalias", "v1")
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"))
    lam.publish_version(FunctionName=name)
    for i, ver in enumerate(["1", "2", "1", "2", "1"]):
        lam.create_alias(FunctionName=name, Name=f"a{i}", FunctionVersion=ver)
    full = lam.list_aliases(FunctionName=name)
    assert sorted(a["Name"] for a in full["Aliases"]) == ["a0", "a1", "a2", "a3", "a4"]
    assert not full.get("NextMarker")
    for a in full["Aliases"]:
        assert a["AliasArn"] == h.function_arn(name, a["Name"])
    only1 = lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]
    assert sorted(a["Name"] for a in only1) == ["a0", "a2", "a4"]
    items, pages = h.paginate_all(lam.list_aliases, "Aliases", 2, FunctionName=name)
    assert sorted(a["Name"] for a in items) == ["a0", "a1", "a2", "a3", "a4"]
    assert pages == 3
    items, pages = h.paginate_all(lam.list_aliases, "Aliases", 2, FunctionName=name, FunctionVersion="2")
    assert sorted(a["Name"] for a in items) == ["a1", "a3"]


def test_routing_config_weights_out_of_range_400(lam_raw, fn3):
    for bad in (1.5, -0.1):
        h.expect_error(
            lam_raw.create_alias,
            FunctionName=fn3,
            Name=h.uniq("w")[:20],
            FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": bad}},
            status=400,
            codes="InvalidParameterValueException",
        )


def test_routing_config_weighted_invokes(lam, fn3):
    name = fn3
    resp = lam.create_alias(
        FunctionName=name,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    assert resp["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    assert lam.get_alias(FunctionName=name, Name="canary")["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}

    def one(_):
        r = lam.invoke(FunctionName=name, Qualifier="canary", Payload=b"{}")
        body = json.loads(r["Payload"].read())
        assert r["StatusCode"] == 200 and "FunctionError" not in r, body
        # the header must agree with the code that actually ran
        assert body["tag"] == {"1": "v1", "2": "v2"}[r["ExecutedVersion"]], (r["ExecutedVersion"], body)
        return r["ExecutedVersion"]

    with ThreadPoolExecutor(8) as pool:
        counts = Counter(pool.map(one, range(1000)))
    assert set(counts) <= {"1", "2"}, counts
    share = counts["2"] / 1000
    assert 0.25 <= share <= 0.35, counts

    # removing the routing config sends everything to the main version
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {}})
    assert {run(lam, name, Qualifier="canary")[0] for _ in range(20)} == {"1"}


def test_unknown_alias_404(lam, fn3):
    h.expect_error(lam.get_alias, FunctionName=fn3, Name="nosuch", status=404, codes="ResourceNotFoundException")
    h.expect_error(
        lam.invoke, FunctionName=fn3, Qualifier="nosuch", Payload=b"{}", status=404, codes="ResourceNotFoundException"
    )
    h.expect_error(
        lam.invoke, FunctionName=h.function_arn(fn3, "nosuch"), Payload=b"{}", status=404, codes="ResourceNotFoundException"
    )
    h.expect_error(
        lam.update_alias, FunctionName=fn3, Name="nosuch", FunctionVersion="1", status=404, codes="ResourceNotFoundException"
    )
