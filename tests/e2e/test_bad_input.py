"""Bad input is refused with a 4xx AWS error and leaves nothing behind."""

import io
import uuid
import zipfile
from pathlib import Path

import pytest

import helpers as h

VALIDATION = {"InvalidParameterValueException", "ValidationException"}
GOOD_PY = "def handler(event, context):\n    return event\n"


def refused_create(lam_raw, name, codes=VALIDATION, **overrides):
    params = dict(
        FunctionName=name,
        Runtime="python3.12",
        Handler="app.handler",
        Role=h.ROLE,
        Code={"ZipFile": h.make_zip({"app.py": GOOD_PY})},
    )
    params.update(overrides)
    err = h.expect_error(lam_raw.create_function, status=range(400, 500), codes=codes, **params)
    assert err.message, err
    return err


def absent(lam, name):
    if not name or len(name) > 140:
        return  # not addressable as a path label; checked through ListFunctions instead
    try:
        lam.get_function_configuration(FunctionName=name)
    except h.ClientError as exc:
        err = h.aws_error(exc)
        assert err.status in (400, 404), err
    else:
        raise AssertionError(f"function {name!r} exists after a refused create")


def listed_names(lam):
    return {f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]}


@pytest.mark.parametrize(
    "name",
    ["x" * 65, "bad name", "bad.name", "bäd", "semi;colon", ""],
    ids=["65-chars", "space", "dot", "non-ascii", "semicolon", "empty"],
)
def test_bad_function_names(lam, lam_raw, name):
    refused_create(lam_raw, name)
    absent(lam, name)
    assert name not in listed_names(lam)


def test_64_char_name_is_fine(lam):
    name = ("ok-" + uuid.uuid4().hex * 2)[:64]
    assert len(name) == 64
    h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler")
    assert lam.get_function_configuration(FunctionName=name)["FunctionName"] == name


@pytest.mark.parametrize(
    "field,value",
    [
        ("Timeout", 0),
        ("Timeout", 901),
        ("Timeout", -1),
        ("MemorySize", 64),
        ("MemorySize", 127),
        ("MemorySize", 20000),
        ("EphemeralStorage", {"Size": 511}),
        ("EphemeralStorage", {"Size": 10241}),
        ("Description", "d" * 257),
    ],
    ids=lambda v: str(v)[:20],
)
def test_out_of_range_settings(lam, lam_raw, field, value):
    name = h.uniq("bad-setting")
    codes = set(VALIDATION)
    if isinstance(value, int) and value < 0:
        # a negative number may already fail to parse as the unsigned field
        codes.add("InvalidRequestContentException")
    refused_create(lam_raw, name, codes=codes, **{field: value})
    absent(lam, name)


def test_out_of_range_update_is_refused_and_changes_nothing(lam, lam_raw):
    name = h.uniq("bad-update")
    created = h.create_function(lam, name, h.py_probe_zip(), "python3.12", "app.handler", Timeout=7)
    h.expect_error(
        lam_raw.update_function_configuration, FunctionName=name, Timeout=901, status=400, codes=VALIDATION
    )
    h.expect_error(
        lam_raw.update_function_configuration, FunctionName=name, MemorySize=64, status=400, codes=VALIDATION
    )
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Timeout"] == 7
    assert conf["MemorySize"] == 128
    assert conf["RevisionId"] == created["RevisionId"]


def test_unknown_runtime(lam, lam_raw):
    name = h.uniq("bad-runtime")
    err = refused_create(lam_raw, name, codes="InvalidParameterValueException", Runtime="cobol85")
    assert err.status == 400
    assert "cobol85" in err.message
    absent(lam, name)


@pytest.mark.parametrize("key", ["AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME"])
def test_reserved_environment_key(lam, lam_raw, key):
    name = h.uniq("reserved-env")
    err = refused_create(
        lam_raw, name, codes="InvalidParameterValueException", Environment={"Variables": {key: "eu-west-1"}}
    )
    assert err.status == 400
    assert key in err.message
    absent(lam, name)
    # the same through UpdateFunctionConfiguration
    other = h.uniq("reserved-env-upd")
    h.create_function(lam, other, h.py_probe_zip(), "python3.12", "app.handler", env={"FINE": "1"})
    h.expect_error(
        lam_raw.update_function_configuration,
        FunctionName=other,
        Environment={"Variables": {key: "x"}},
        status=400,
        codes="InvalidParameterValueException",
    )
    assert lam.get_function_configuration(FunctionName=other)["Environment"]["Variables"]["FINE"] == "1"


def test_environment_over_4kb(lam, lam_raw):
    name = h.uniq("big-env")
    err = refused_create(
        lam_raw, name, codes="InvalidParameterValueException", Environment={"Variables": {"BIG": "v" * 5000}}
    )
    assert err.status == 400
    absent(lam, name)


@pytest.mark.parametrize("key", ["1STARTS_WITH_DIGIT", "HAS-DASH"])
def test_invalid_environment_key(lam, lam_raw, key):
    name = h.uniq("bad-env-key")
    refused_create(lam_raw, name, Environment={"Variables": {key: "v"}})
    absent(lam, name)


def _truncated_zip() -> bytes:
    good = h.make_zip({"app.py": GOOD_PY * 50})
    return good[: len(good) // 2]


def _crc_corrupt_zip() -> bytes:
    data = bytearray(h.make_zip({"app.py": GOOD_PY * 20}, compression=zipfile.ZIP_STORED))
    off = data.find(b"def handler")
    data[off] ^= 0x20  # stored data no longer matches its CRC-32
    return bytes(data)


@pytest.mark.parametrize(
    "make",
    [lambda: b"this is not a zip file at all", lambda: b"", _truncated_zip, _crc_corrupt_zip],
    ids=["not-a-zip", "empty", "truncated", "bad-crc"],
)
def test_corrupt_zip(lam, lam_raw, make):
    name = h.uniq("bad-zip")
    err = refused_create(lam_raw, name, codes="InvalidParameterValueException", Code={"ZipFile": make()})
    assert err.status == 400
    absent(lam, name)


def test_bad_zip_in_update_keeps_old_code(lam, lam_raw):
    name = h.uniq("bad-zip-update")
    created = h.create_function(lam, name, h.py_probe_zip("keep-me"), "python3.12", "app.handler")
    h.expect_error(
        lam_raw.update_function_code,
        FunctionName=name,
        ZipFile=b"not a zip",
        status=400,
        codes="InvalidParameterValueException",
    )
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["CodeSha256"] == created["CodeSha256"]
    _resp, body = h.invoke_ok(lam, name, {})
    assert body["version"] == "keep-me"


def _escape_target(tag: str) -> Path:
    # an absolute path outside any data dir (the session's scratch dir)
    return h.SCRATCH / f"escape-{tag}-{uuid.uuid4().hex}"


def _hostile(kind: str):
    """A zip that would write `target` outside the code dir if unpacked naively."""
    if kind == "dotdot":
        target = _escape_target("dotdot")
        entry = "../" * 30 + str(target).lstrip("/")
        return h.make_zip({"app.py": GOOD_PY, entry: "pwned"}), target
    if kind == "nested-dotdot":
        target = _escape_target("nested")
        entry = "sub/" + "../" * 31 + str(target).lstrip("/")
        return h.make_zip({"app.py": GOOD_PY, entry: "pwned"}), target
    if kind == "absolute":
        target = _escape_target("abs")
        return h.make_zip({"app.py": GOOD_PY, str(target): "pwned"}), target
    if kind == "symlink-out":
        target = _escape_target("link-target")
        target.write_text("outside")
        return h.make_zip({"app.py": GOOD_PY, "outside": (str(target), 0o120777)}), None
    if kind == "symlink-dotdot":
        return h.make_zip({"app.py": GOOD_PY, "up": ("../../../../../../../../etc/passwd", 0o120777)}), None
    if kind == "symlink-write-through":
        target = _escape_target("through")
        return (
            h.make_zip(
                {"app.py": GOOD_PY, "scratch": (str(h.SCRATCH), 0o120777), f"scratch/{target.name}": "pwned"}
            ),
            target,
        )
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind", ["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-dotdot", "symlink-write-through"]
)
def test_hostile_zip_paths(lam, lam_raw, kind):
    code, target = _hostile(kind)
    # make sure the zip really says what we think
    names = zipfile.ZipFile(io.BytesIO(code)).namelist()
    assert len(names) >= 2
    name = h.uniq(f"hostile-{kind}")
    refused_create(lam_raw, name, Code={"ZipFile": code})
    absent(lam, name)
    if target is not None:
        assert not target.exists(), f"the zip escaped its directory and wrote {target}"
    # UpdateFunctionCode refuses it as well
    victim = h.uniq(f"hostile-upd-{kind}")
    created = h.create_function(lam, victim, h.py_probe_zip(), "python3.12", "app.handler")
    h.expect_error(lam_raw.update_function_code, FunctionName=victim, ZipFile=code, status=range(400, 500))
    assert lam.get_function_configuration(FunctionName=victim)["CodeSha256"] == created["CodeSha256"]
    if target is not None:
        assert not target.exists(), f"the zip escaped its directory and wrote {target}"


@pytest.fixture(scope="module")
def bombs():
    return {"honest": h.zip_bomb(300), "lying": h.zip_bomb(300, lie_about_size=True)}


@pytest.mark.parametrize("variant", ["honest", "lying"])
def test_zip_bomb(lam, lam_raw, bombs, variant):
    code = bombs[variant]
    assert len(code) < 1024 * 1024  # tiny on the wire, 300 MiB unpacked
    name = h.uniq(f"bomb-{variant}")
    refused_create(lam_raw, name, Code={"ZipFile": code})
    absent(lam, name)
