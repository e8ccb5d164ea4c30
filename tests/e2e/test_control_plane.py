"""Control plane through boto3: CreateFunction, Get*, List, Update*, Delete."""

import hashlib
import re
import urllib.request

import pytest

import helpers as h

FULL_ENV = {"ALPHA": "1", "BRAVO": "two", "WITH_SPACE": "x y"}


@pytest.fixture(scope="module")
def full_fn(lam):
    """A function created with every field the issue lists."""
    name = h.uniq("cp-full")
    code = h.py_probe_zip("full-v1")
    resp = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Handler="app.handler",
        Role=h.ROLE,
        Code={"ZipFile": code},
        Timeout=17,
        MemorySize=256,
        Environment={"Variables": FULL_ENV},
        Description="all the fields",
        Architectures=["x86_64"],
        EphemeralStorage={"Size": 1024},
    )
    return name, code, resp


def test_create_returns_201_and_full_configuration(full_fn):
    name, code, resp = full_fn
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["FunctionName"] == name
    assert resp["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert resp["Runtime"] == "python3.12"
    assert resp["Handler"] == "app.handler"
    assert resp["Role"] == h.ROLE
    assert resp["Timeout"] == 17
    assert resp["MemorySize"] == 256
    assert resp["Environment"]["Variables"] == FULL_ENV
    assert resp["Description"] == "all the fields"
    assert resp["Architectures"] == ["x86_64"]
    assert resp["EphemeralStorage"] == {"Size": 1024}
    assert resp["CodeSha256"] == h.sha256_b64(code)
    assert resp["CodeSize"] == len(code)
    assert h.LAST_MODIFIED_RE.match(resp["LastModified"]), resp["LastModified"]
    assert resp["Version"] == "$LATEST"
    assert resp["State"] == "Active"
    assert resp["LastUpdateStatus"] == "Successful"
    assert resp["PackageType"] == "Zip"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", resp["RevisionId"]), resp[
        "RevisionId"
    ]
    assert resp["ResponseMetadata"]["RequestId"]


def test_defaults(lam):
    name = h.uniq("cp-defaults")
    code = h.py_probe_zip()
    resp = lam.create_function(
        FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=h.ROLE, Code={"ZipFile": code}
    )
    for conf in (resp, lam.get_function_configuration(FunctionName=name)):
        assert conf["Timeout"] == 3
        assert conf["MemorySize"] == 128
        assert conf["EphemeralStorage"] == {"Size": 512}
        assert conf["Architectures"] == ["x86_64"]
        assert conf["PackageType"] == "Zip"
        assert conf.get("Description", "") == ""
        assert conf["Version"] == "$LATEST"
        assert conf["State"] == "Active"
        assert not conf.get("Environment", {}).get("Variables")


def test_get_function_configuration_matches_create(lam, full_fn):
    name, _code, created = full_fn
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["ResponseMetadata"]["HTTPStatusCode"] == 200
    for key in (
        "FunctionName",
        "FunctionArn",
        "Runtime",
        "Handler",
        "Role",
        "Timeout",
        "MemorySize",
        "Environment",
        "Description",
        "Architectures",
        "EphemeralStorage",
        "CodeSha256",
        "CodeSize",
        "LastModified",
        "Version",
        "RevisionId",
        "PackageType",
        "State",
    ):
        assert conf[key] == created[key], key


def test_get_function_has_configuration_and_code(lam, full_fn):
    name, code, created = full_fn
    resp = lam.get_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["Configuration"]["FunctionArn"] == created["FunctionArn"]
    assert resp["Configuration"]["CodeSha256"] == h.sha256_b64(code)
    assert resp["Code"]["RepositoryType"] == "S3"
    assert isinstance(resp["Code"]["Location"], str) and resp["Code"]["Location"].startswith("http")


def test_code_location_downloads_the_zip(lam, full_fn):
    # AWS hands out a pre-signed URL: a plain GET returns the uploaded zip.
    name, code, _ = full_fn
    location = lam.get_function(FunctionName=name)["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=10) as r:
        got = r.read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(code).digest()


@pytest.mark.parametrize(
    "ref",
    [
        "{name}",
        "arn:aws:lambda:us-east-1:000000000000:function:{name}",
        "000000000000:function:{name}",
        "{name}:$LATEST",
        "arn:aws:lambda:us-east-1:000000000000:function:{name}:$LATEST",
    ],
    ids=["name", "full-arn", "partial-arn", "name-latest", "arn-latest"],
)
def test_get_by_any_function_reference(lam, full_fn, ref):
    name, _code, created = full_fn
    resp = lam.get_function(FunctionName=ref.format(name=name))
    assert resp["Configuration"]["FunctionName"] == name
    assert resp["Configuration"]["CodeSha256"] == created["CodeSha256"]
    conf = lam.get_function_configuration(FunctionName=ref.format(name=name))
    assert conf["FunctionName"] == name


def test_get_with_latest_qualifier(lam, full_fn):
    name, _code, _ = full_fn
    conf = lam.get_function_configuration(FunctionName=name, Qualifier="$LATEST")
    assert conf["Version"] == "$LATEST"


def test_get_unknown_function_is_404(lam):
    name = h.uniq("nope")
    err = h.expect_error(lam.get_function, FunctionName=name, status=404, codes="ResourceNotFoundException")
    assert err.message == f"Function not found: {h.function_arn(name)}"


def test_list_functions_contains_created(lam, full_fn):
    name, _code, _ = full_fn
    names = set()
    for page in lam.get_paginator("list_functions").paginate():
        names.update(f["FunctionName"] for f in page["Functions"])
    assert name in names


def test_update_code_and_configuration(lam):
    name = h.uniq("cp-update")
    code1 = h.py_probe_zip("u1")
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Handler="app.handler",
        Role=h.ROLE,
        Code={"ZipFile": code1},
        Environment={"Variables": {"KEEP": "no", "OLD": "1"}},
        Timeout=5,
    )
    revisions = [created["RevisionId"]]

    code2 = h.py_probe_zip("u2")
    assert h.sha256_b64(code2) != h.sha256_b64(code1)
    upd = lam.update_function_code(FunctionName=name, ZipFile=code2)
    assert upd["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert upd["CodeSha256"] == h.sha256_b64(code2)
    assert upd["CodeSize"] == len(code2)
    assert upd["LastUpdateStatus"] == "Successful"
    assert upd["RevisionId"] not in revisions
    revisions.append(upd["RevisionId"])
    assert h.LAST_MODIFIED_RE.match(upd["LastModified"])

    cfg = lam.update_function_configuration(
        FunctionName=name,
        Environment={"Variables": {"NEW": "2"}},
        Timeout=9,
        MemorySize=192,
        Description="updated",
    )
    assert cfg["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert cfg["Environment"]["Variables"] == {"NEW": "2"}, "Environment must be replaced wholesale"
    assert cfg["Timeout"] == 9
    assert cfg["MemorySize"] == 192
    assert cfg["Description"] == "updated"
    assert cfg["CodeSha256"] == h.sha256_b64(code2), "a configuration update must keep the code"
    assert cfg["RevisionId"] not in revisions
    revisions.append(cfg["RevisionId"])

    got = lam.get_function_configuration(FunctionName=name)
    assert got["Environment"]["Variables"] == {"NEW": "2"}
    assert got["Timeout"] == 9
    assert got["MemorySize"] == 192
    assert got["Handler"] == "app.handler"
    assert got["Runtime"] == "python3.12"
    assert got["CodeSha256"] == h.sha256_b64(code2)
    assert got["RevisionId"] == revisions[-1]

    # an update through the full ARN works the same
    cfg2 = lam.update_function_configuration(FunctionName=h.function_arn(name), Timeout=11)
    assert cfg2["Timeout"] == 11
    assert cfg2["Environment"]["Variables"] == {"NEW": "2"}
    assert cfg2["RevisionId"] not in revisions


def test_update_with_stale_revision_id_is_412(lam):
    name = h.uniq("cp-rev")
    created = lam.create_function(
        FunctionName=name, Runtime="python3.12", Handler="app.handler", Role=h.ROLE, Code={"ZipFile": h.py_probe_zip()}
    )
    lam.update_function_configuration(FunctionName=name, Timeout=4, RevisionId=created["RevisionId"])
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=name,
        Timeout=5,
        RevisionId=created["RevisionId"],
        status=412,
        codes="PreconditionFailedException",
    )
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 4


def test_update_unknown_function_is_404(lam):
    h.expect_error(
        lam.update_function_code,
        FunctionName=h.uniq("nope"),
        ZipFile=h.py_probe_zip(),
        status=404,
        codes="ResourceNotFoundException",
    )
    h.expect_error(
        lam.update_function_configuration,
        FunctionName=h.uniq("nope"),
        Timeout=5,
        status=404,
        codes="ResourceNotFoundException",
    )


def test_delete_then_404(lam):
    name = h.uniq("cp-delete")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler")
    resp = lam.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    h.assert_function_absent(lam, name)
    h.expect_error(lam.get_function_configuration, FunctionName=name, status=404, codes="ResourceNotFoundException")
    h.expect_error(lam.invoke, FunctionName=name, Payload=b"{}", status=404, codes="ResourceNotFoundException")
    h.expect_error(lam.delete_function, FunctionName=name, status=404, codes="ResourceNotFoundException")
    names = {f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]}
    assert name not in names
    # the name is free again
    again = h.create_function(lam, name, h.py_probe_zip("again"), "python3.12", "app.handler")
    assert again["FunctionName"] == name


def test_delete_by_arn(lam):
    name = h.uniq("cp-delete-arn")
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler")
    lam.delete_function(FunctionName=h.function_arn(name))
    h.assert_function_absent(lam, name)


def test_create_twice_is_409(lam):
    name = h.uniq("cp-twice")
    first = h.create_function(lam, name, h.py_probe_zip("first"), "python3.12", "app.handler")
    err = h.expect_error(
        lam.create_function,
        FunctionName=name,
        Runtime="nodejs20.x",
        Handler="index.handler",
        Role=h.ROLE,
        Code={"ZipFile": h.node_cjs_zip()},
        status=409,
        codes="ResourceConflictException",
    )
    assert name in err.message
    # the original is untouched
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Runtime"] == "python3.12"
    assert conf["CodeSha256"] == first["CodeSha256"]
