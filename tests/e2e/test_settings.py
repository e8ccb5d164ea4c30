"""Function settings: reserved and provisioned concurrency, account settings,
resource policies, tags, async invoke config, function URL config, event
source mappings, code signing config and the botocore waiters."""

import base64
import datetime
import json
import re
import time

import boto3
import pytest

import helpers as h

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SQS_ARN = "arn:aws:sqs:us-east-1:000000000000:lambent-e2e-queue"


def new_fn(lam, prefix: str, tag: str = "v1", **kw) -> str:
    name = h.uniq(prefix)
    h.create_function(lam, name, h.py_tagged_zip(tag), "python3.12", "app.handler", **kw)
    return name


@pytest.fixture(scope="module")
def versioned(lam):
    """A function with version 1 and alias `live` → 1."""
    name = new_fn(lam, "st-ver")
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


# --------------------------------------------------------------------------
# reserved concurrency and account settings


def test_reserved_concurrency_put_get_delete(lam):
    name = new_fn(lam, "st-conc")
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    before = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["ReservedConcurrentExecutions"] == 7
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 7}
    after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert after == before - 7, (before, after)
    h.invoke_ok(lam, name, {})
    d = lam.delete_function_concurrency(FunctionName=name)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == before


def test_account_settings_shape(lam):
    s = lam.get_account_settings()
    lim = s["AccountLimit"]
    assert lim["ConcurrentExecutions"] >= 1
    assert lim["UnreservedConcurrentExecutions"] <= lim["ConcurrentExecutions"]
    assert lim["CodeSizeZipped"] > 0 and lim["CodeSizeUnzipped"] > 0 and lim["TotalCodeSize"] > 0
    assert s["AccountUsage"]["FunctionCount"] >= 1
    assert s["AccountUsage"]["TotalCodeSize"] > 0


def test_reserved_concurrency_zero_throttles(lam):
    name = new_fn(lam, "st-zero")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(3):
        h.expect_error(lam.invoke, FunctionName=name, Payload=b"{}", status=429, codes="TooManyRequestsException")
    # botocore puts the modelled Reason member at the top of the response
    with pytest.raises(h.ClientError) as info:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert info.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", info.value.response
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    lam.delete_function_concurrency(FunctionName=name)
    _, body = h.invoke_ok(lam, name, {})
    assert body["tag"] == "v1"


def test_reserved_concurrency_above_unreserved_minimum_400(lam):
    # AWS keeps at least 100 unreserved: reserving all of it is refused
    name = new_fn(lam, "st-toomuch")
    total = lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"]
    h.expect_error(
        lam.put_function_concurrency,
        FunctionName=name,
        ReservedConcurrentExecutions=total,
        status=400,
        codes="InvalidParameterValueException",
    )
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None


def test_reserved_concurrency_negative_400(lam_raw):
    name = new_fn(lam_raw, "st-neg")
    h.expect_error(
        lam_raw.put_function_concurrency,
        FunctionName=name,
        ReservedConcurrentExecutions=-1,
        status=400,
        codes="InvalidParameterValueException",
    )


def test_reserved_concurrency_unknown_function_404(lam):
    h.expect_error(
        lam.put_function_concurrency,
        FunctionName=h.uniq("st-nope"),
        ReservedConcurrentExecutions=1,
        status=404,
        codes="ResourceNotFoundException",
    )


# --------------------------------------------------------------------------
# provisioned concurrency


def test_provisioned_concurrency_on_version_and_alias(lam, versioned):
    name = versioned
    h.expect_error(
        lam.get_provisioned_concurrency_config,
        FunctionName=name,
        Qualifier="1",
        status=404,
        codes="ProvisionedConcurrencyConfigNotFoundException",
    )
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert got["RequestedProvisionedConcurrentExecutions"] == 2
    assert got["Status"] in ("IN_PROGRESS", "READY")
    assert got["LastModified"]

    put2 = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    assert put2["ResponseMetadata"]["HTTPStatusCode"] == 202
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    arns = sorted(c["FunctionArn"] for c in listed)
    assert arns == sorted([h.function_arn(name, "1"), h.function_arn(name, "live")]), listed
    items, pages = h.paginate_all(lam.list_provisioned_concurrency_configs, "ProvisionedConcurrencyConfigs", 1, FunctionName=name)
    assert len(items) == 2 and pages == 2

    # invokes still work
    _, body = h.invoke_ok(lam, name, {}, Qualifier="live")
    assert body["function_version"] == "1"

    d = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(
        lam.get_provisioned_concurrency_config,
        FunctionName=name,
        Qualifier="1",
        status=404,
        codes="ProvisionedConcurrencyConfigNotFoundException",
    )
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_provisioned_concurrency_latest_refused(lam, versioned):
    h.expect_error(
        lam.put_provisioned_concurrency_config,
        FunctionName=versioned,
        Qualifier="$LATEST",
        ProvisionedConcurrentExecutions=1,
        status=400,
        codes="InvalidParameterValueException",
    )
    h.expect_error(
        lam.put_provisioned_concurrency_config,
        FunctionName=versioned,
        Qualifier="77",
        ProvisionedConcurrentExecutions=1,
        status=404,
        codes="ResourceNotFoundException",
    )


# --------------------------------------------------------------------------
# resource policy


def test_add_get_remove_permission(lam):
    name = new_fn(lam, "st-perm")
    arn = h.function_arn(name)
    h.expect_error(lam.get_policy, FunctionName=name, status=404, codes="ResourceNotFoundException")
    resp = lam.add_permission(
        FunctionName=name,
        StatementId="s3-invoke",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::lambent-bucket",
        SourceAccount="123456789012",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    stmt = json.loads(resp["Statement"])
    assert stmt["Sid"] == "s3-invoke"
    assert stmt["Effect"] == "Allow"
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Action"] == "lambda:InvokeFunction"
    assert stmt["Resource"] == arn
    assert stmt["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::lambent-bucket"
    assert stmt["Condition"]["StringEquals"]["AWS:SourceAccount"] == "123456789012"

    h.expect_error(
        lam.add_permission,
        FunctionName=name,
        StatementId="s3-invoke",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        status=409,
        codes="ResourceConflictException",
    )
    lam.add_permission(
        FunctionName=name,
        StatementId="url-public",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    pol = lam.get_policy(FunctionName=name)
    assert pol["RevisionId"]
    doc = json.loads(pol["Policy"])
    assert doc["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid) == {"s3-invoke", "url-public"}
    assert by_sid["s3-invoke"]["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::lambent-bucket"
    url = by_sid["url-public"]
    assert url["Action"] == "lambda:InvokeFunctionUrl"
    assert url["Principal"] in ("*", {"AWS": "*"})
    assert url["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"] == "NONE"

    rm = lam.remove_permission(FunctionName=name, StatementId="s3-invoke")
    assert rm["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(
        lam.remove_permission, FunctionName=name, StatementId="s3-invoke", status=404, codes="ResourceNotFoundException"
    )
    doc = json.loads(lam.get_policy(FunctionName=name)["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["url-public"]
    lam.remove_permission(FunctionName=name, StatementId="url-public")
    h.expect_error(lam.get_policy, FunctionName=name, status=404, codes="ResourceNotFoundException")


def test_permission_account_principal(lam):
    name = new_fn(lam, "st-permacct")
    resp = lam.add_permission(
        FunctionName=name, StatementId="other-account", Action="lambda:InvokeFunction", Principal="123456789012"
    )
    stmt = json.loads(resp["Statement"])
    assert stmt["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}, stmt
    h.expect_error(
        lam.add_permission,
        FunctionName=h.uniq("st-nope"),
        StatementId="x",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        status=404,
        codes="ResourceNotFoundException",
    )


def test_permission_on_alias_qualifier(lam, versioned):
    resp = lam.add_permission(
        FunctionName=versioned,
        Qualifier="live",
        StatementId="alias-only",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
    )
    stmt = json.loads(resp["Statement"])
    assert stmt["Resource"] == h.function_arn(versioned, "live")
    doc = json.loads(lam.get_policy(FunctionName=versioned, Qualifier="live")["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["alias-only"]
    # the unqualified function has its own (empty) policy
    h.expect_error(lam.get_policy, FunctionName=versioned, status=404, codes="ResourceNotFoundException")


def test_permission_revision_id_mismatch_412(lam):
    name = new_fn(lam, "st-permrev")
    h.expect_error(
        lam.add_permission,
        FunctionName=name,
        StatementId="x",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        RevisionId="00000000-0000-0000-0000-000000000000",
        status=412,
        codes="PreconditionFailedException",
    )


# --------------------------------------------------------------------------
# tags


def test_tags(lam):
    name = new_fn(lam, "st-tags", Tags={"team": "core"})
    arn = h.function_arn(name)
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core"}
    r = lam.tag_resource(Resource=arn, Tags={"env": "dev", "cost": "42"})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "dev", "cost": "42"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "dev", "cost": "42"}
    lam.tag_resource(Resource=arn, Tags={"env": "prod"})
    assert lam.list_tags(Resource=arn)["Tags"]["env"] == "prod"
    r = lam.untag_resource(Resource=arn, TagKeys=["team", "cost"])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"env": "prod"}
    h.expect_error(
        lam.list_tags, Resource=h.function_arn(h.uniq("st-nope")), status=404, codes="ResourceNotFoundException"
    )


# --------------------------------------------------------------------------
# async invoke config


def test_event_invoke_config_lifecycle(lam):
    name = new_fn(lam, "st-eic")
    h.expect_error(
        lam.get_function_event_invoke_config, FunctionName=name, status=404, codes="ResourceNotFoundException"
    )
    dest = h.function_arn(new_fn(lam, "st-eic-dest"))
    put = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": dest}},
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["FunctionArn"] == h.function_arn(name, "$LATEST")
    assert put["MaximumRetryAttempts"] == 1
    assert put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == dest
    assert isinstance(put["LastModified"], datetime.datetime), put["LastModified"]
    age = abs((datetime.datetime.now(datetime.timezone.utc) - put["LastModified"]).total_seconds())
    assert age < 600, put["LastModified"]

    # Update merges
    up = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=300)
    assert up["MaximumRetryAttempts"] == 1
    assert up["MaximumEventAgeInSeconds"] == 300
    assert up["DestinationConfig"]["OnFailure"]["Destination"] == dest
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumEventAgeInSeconds"] == 300 and got["MaximumRetryAttempts"] == 1
    assert isinstance(got["LastModified"], datetime.datetime)

    # Put replaces
    put2 = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert put2["MaximumRetryAttempts"] == 0
    assert put2.get("MaximumEventAgeInSeconds") in (None, 21600)
    assert not (put2.get("DestinationConfig") or {}).get("OnFailure")

    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [h.function_arn(name, "$LATEST")]

    d = lam.delete_function_event_invoke_config(FunctionName=name)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(
        lam.get_function_event_invoke_config, FunctionName=name, status=404, codes="ResourceNotFoundException"
    )
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []


def test_event_invoke_config_per_qualifier(lam, versioned):
    lam.put_function_event_invoke_config(FunctionName=versioned, Qualifier="live", MaximumRetryAttempts=2)
    lam.put_function_event_invoke_config(FunctionName=versioned, Qualifier="1", MaximumRetryAttempts=0)
    got = lam.get_function_event_invoke_config(FunctionName=versioned, Qualifier="live")
    assert got["FunctionArn"] == h.function_arn(versioned, "live")
    listed = lam.list_function_event_invoke_configs(FunctionName=versioned)["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted(
        [h.function_arn(versioned, "live"), h.function_arn(versioned, "1")]
    )
    items, pages = h.paginate_all(
        lam.list_function_event_invoke_configs, "FunctionEventInvokeConfigs", 1, FunctionName=versioned
    )
    assert len(items) == 2 and pages == 2
    lam.delete_function_event_invoke_config(FunctionName=versioned, Qualifier="live")
    lam.delete_function_event_invoke_config(FunctionName=versioned, Qualifier="1")


@pytest.mark.parametrize(
    "kw",
    [{"MaximumRetryAttempts": 3}, {"MaximumRetryAttempts": -1}, {"MaximumEventAgeInSeconds": 59}, {"MaximumEventAgeInSeconds": 21601}],
    ids=["retries3", "retries-1", "age59", "age21601"],
)
def test_event_invoke_config_ranges_400(lam_raw, kw):
    name = new_fn(lam_raw, "st-eicr")
    h.expect_error(
        lam_raw.put_function_event_invoke_config,
        FunctionName=name,
        **kw,
        status=400,
        codes="InvalidParameterValueException",
    )


# --------------------------------------------------------------------------
# function URL config


def test_function_url_config_lifecycle(lam):
    name = new_fn(lam, "st-url")
    h.expect_error(lam.get_function_url_config, FunctionName=name, status=404, codes="ResourceNotFoundException")
    resp = lam.create_function_url_config(
        FunctionName=name,
        AuthType="NONE",
        Cors={"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET"], "MaxAge": 60},
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["FunctionUrl"].startswith("http")
    assert resp["FunctionArn"] == h.function_arn(name)
    assert resp["AuthType"] == "NONE"
    assert resp["Cors"]["AllowOrigins"] == ["https://example.com"]
    assert resp["CreationTime"]
    h.expect_error(
        lam.create_function_url_config, FunctionName=name, AuthType="NONE", status=409, codes="ResourceConflictException"
    )
    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == resp["FunctionUrl"]
    assert got["AuthType"] == "NONE"
    assert got["LastModifiedTime"] and got["CreationTime"]
    assert got.get("InvokeMode", "BUFFERED") == "BUFFERED"

    up = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert up["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert up["AuthType"] == "AWS_IAM"
    assert up["FunctionUrl"] == resp["FunctionUrl"]
    assert lam.get_function_url_config(FunctionName=name)["AuthType"] == "AWS_IAM"

    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [resp["FunctionUrl"]]

    d = lam.delete_function_url_config(FunctionName=name)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error(lam.get_function_url_config, FunctionName=name, status=404, codes="ResourceNotFoundException")
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


def test_function_url_config_qualifier_must_be_alias(lam, versioned):
    resp = lam.create_function_url_config(FunctionName=versioned, Qualifier="live", AuthType="NONE")
    assert resp["FunctionArn"] == h.function_arn(versioned, "live")
    got = lam.get_function_url_config(FunctionName=versioned, Qualifier="live")
    assert got["FunctionUrl"] == resp["FunctionUrl"]
    h.expect_error(
        lam.create_function_url_config,
        FunctionName=versioned,
        Qualifier="1",
        AuthType="NONE",
        status=400,
        codes="InvalidParameterValueException",
    )
    lam.delete_function_url_config(FunctionName=versioned, Qualifier="live")


# --------------------------------------------------------------------------
# event source mappings


def wait_state(lam, uuid: str, states: set, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        cfg = lam.get_event_source_mapping(UUID=uuid)
        if cfg["State"] in states:
            return cfg
        assert time.monotonic() < deadline, f"mapping {uuid} stuck in {cfg['State']} (want {states})"
        time.sleep(0.2)


def test_event_source_mapping_lifecycle(lam):
    name = new_fn(lam, "st-esm")
    resp = lam.create_event_source_mapping(FunctionName=name, EventSourceArn=SQS_ARN, BatchSize=5)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    uuid = resp["UUID"]
    assert UUID_RE.match(uuid), uuid
    assert resp["State"] in ("Creating", "Enabled"), resp["State"]
    assert resp["FunctionArn"] == h.function_arn(name)
    assert resp["EventSourceArn"] == SQS_ARN
    assert resp["BatchSize"] == 5
    assert isinstance(resp["LastModified"], datetime.datetime), resp["LastModified"]
    if "EventSourceMappingArn" in resp:
        assert resp["EventSourceMappingArn"] == f"arn:aws:lambda:us-east-1:000000000000:event-source-mapping:{uuid}"

    cfg = wait_state(lam, uuid, {"Enabled"})
    assert cfg["UUID"] == uuid and cfg["BatchSize"] == 5
    assert isinstance(cfg["LastModified"], datetime.datetime)

    up = lam.update_event_source_mapping(UUID=uuid, Enabled=False, BatchSize=8)
    assert up["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert up["State"] in ("Disabling", "Disabled", "Updating"), up["State"]
    assert up["BatchSize"] == 8
    cfg = wait_state(lam, uuid, {"Disabled"})
    assert cfg["BatchSize"] == 8

    up = lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    assert up["State"] in ("Enabling", "Enabled", "Updating"), up["State"]
    wait_state(lam, uuid, {"Enabled"})

    d = lam.delete_event_source_mapping(UUID=uuid)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert d["State"] == "Deleting"
    deadline = time.monotonic() + 15
    while True:
        try:
            lam.get_event_source_mapping(UUID=uuid)
        except h.ClientError as e:
            err = h.aws_error(e)
            assert err.status == 404 and err.code == "ResourceNotFoundException", err
            break
        assert time.monotonic() < deadline, "mapping was not deleted"
        time.sleep(0.2)


def test_event_source_mapping_list_and_pagination(lam):
    name = new_fn(lam, "st-esml")
    uuids = set()
    for i in range(3):
        r = lam.create_event_source_mapping(
            FunctionName=name, EventSourceArn=f"{SQS_ARN}-{i}", Enabled=False, BatchSize=1
        )
        uuids.add(r["UUID"])
    listed = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    assert {m["UUID"] for m in listed} == uuids
    items, pages = h.paginate_all(lam.list_event_source_mappings, "EventSourceMappings", 2, FunctionName=name)
    assert {m["UUID"] for m in items} == uuids and pages == 2
    by_source = lam.list_event_source_mappings(EventSourceArn=f"{SQS_ARN}-1")["EventSourceMappings"]
    assert [m["EventSourceArn"] for m in by_source] == [f"{SQS_ARN}-1"]
    for u in uuids:
        lam.delete_event_source_mapping(UUID=u)


def test_event_source_mapping_errors(lam, lam_raw):
    h.expect_error(
        lam.create_event_source_mapping,
        FunctionName=h.uniq("st-nope"),
        EventSourceArn=SQS_ARN,
        status=404,
        codes="ResourceNotFoundException",
    )
    name = new_fn(lam, "st-esme")
    for bad in (0, 10001):
        h.expect_error(
            lam_raw.create_event_source_mapping,
            FunctionName=name,
            EventSourceArn=SQS_ARN,
            BatchSize=bad,
            status=400,
            codes="InvalidParameterValueException",
        )
    h.expect_error(
        lam.get_event_source_mapping,
        UUID="00000000-0000-0000-0000-000000000000",
        status=404,
        codes="ResourceNotFoundException",
    )


# --------------------------------------------------------------------------
# code signing and waiters


def test_code_signing_config_empty(lam):
    name = new_fn(lam, "st-csc")
    resp = lam.get_function_code_signing_config(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["FunctionName"] == name
    assert resp.get("CodeSigningConfigArn", "") == ""


def test_waiters_succeed_immediately(lam):
    name = new_fn(lam, "st-wait")
    cfg = {"Delay": 1, "MaxAttempts": 2}
    start = time.monotonic()
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=cfg)
    lam.get_waiter("function_active").wait(FunctionName=name, WaiterConfig=cfg)
    lam.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=cfg)
    lam.update_function_code(FunctionName=name, ZipFile=h.py_tagged_zip("v2"))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=cfg)
    lam.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=cfg)
    ver = lam.publish_version(FunctionName=name)["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=ver, WaiterConfig=cfg)
    assert time.monotonic() - start < 5


def test_recursion_and_runtime_management_configs(lam):
    name = h.uniq("rec")
    h.create_function(lam, name, h.py_zip({"app.py": "def handler(e, c):\n    return 1\n"}), "python3.12", "app.handler")
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    assert lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Terminate")["RecursiveLoop"] == "Terminate"
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    got = lam.get_runtime_management_config(FunctionName=name)
    assert got["UpdateRuntimeOn"] == "Auto"
    assert got["FunctionArn"].endswith(f":function:{name}")
    lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Auto")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_runtime_management_config(FunctionName=name, UpdateRuntimeOn="Manual",
                                          RuntimeVersionArn="arn:aws:lambda:us-east-1::runtime:abc")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_recursion_config(FunctionName=h.uniq("missing"))


PROVISIONED_APP = """
import os
STARTED = __import__("time").time()
def handler(event, context):
    return {"init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"), "pid": os.getpid(), "started": STARTED}
"""


def logs_client(lam):
    """A CloudWatch Logs client for the same server and keys as `lam`."""
    creds = lam._request_signer._credentials
    return boto3.client(
        "logs",
        endpoint_url=lam.meta.endpoint_url,
        region_name=lam.meta.region_name,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
    )


def wait_for_status(lam, name, qualifier, wanted, timeout=20.0):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if got["Status"] == wanted:
            return got
        time.sleep(0.2)
    raise AssertionError(f"status never became {wanted}: {got}")


def test_provisioned_concurrency_initializes_environments_before_invokes(lam):
    name = h.uniq("pc-warm")
    h.create_function(lam, name, h.py_zip({"app.py": PROVISIONED_APP}), "python3.12", "app.handler")
    lam.publish_version(FunctionName=name)
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2)
    assert put["Status"] == "IN_PROGRESS"
    ready = wait_for_status(lam, name, "1", "READY")
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    before = time.time()
    resp, body = h.invoke_ok(lam, name, {}, Qualifier="1", LogType="Tail")
    assert body["init_type"] == "provisioned-concurrency"
    assert body["started"] < before, "the environment was initialized before the invoke arrived"
    log = base64.b64decode(resp["LogResult"]).decode()
    assert "Init Duration" not in log, log
    # $LATEST still starts on demand
    _, latest = h.invoke_ok(lam, name, {})
    assert latest["init_type"] == "on-demand"
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["Status"] for c in listed] == ["READY"]
    logs = logs_client(lam).filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="INIT_REPORT")
    assert len(logs["events"]) == 2, "each provisioned environment reports its init once"
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioned_concurrency_reports_failed_init(lam):
    name = h.uniq("pc-fail")
    h.create_function(lam, name, h.py_zip({"app.py": "import not_a_module\n"}), "python3.12", "app.handler")
    lam.publish_version(FunctionName=name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    failed = wait_for_status(lam, name, "1", "FAILED")
    assert failed["AvailableProvisionedConcurrentExecutions"] == 0
    assert "StatusReason" in failed
