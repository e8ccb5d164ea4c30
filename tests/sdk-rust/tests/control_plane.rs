//! The official AWS SDK for Rust (`aws-sdk-lambda`) against a real `lambent serve`:
//! versions, aliases, event-source mappings, and the smaller control-plane resources
//! (event invoke configs, reserved concurrency, layers, permissions, tags, function URLs,
//! account settings). The server and client setup is in `common/mod.rs`.

mod common;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::{Blob, DateTime};
use aws_sdk_lambda::types::{
    AliasRoutingConfiguration, FunctionCode, FunctionUrlAuthType, LayerVersionContentInput,
    Runtime, ThrottleReason,
};

use common::*;

/// A handler that answers with a fixed version tag, so each published version is told
/// apart by its payload.
fn versioned_py(v: u32) -> String {
    format!("def handler(event, context):\n    return {{\"v\": {v}}}\n")
}

/// Creates a python3.12 function, optionally publishing version 1.
async fn create_versioned(
    client: &Client,
    name: &str,
    zip: &[u8],
    publish: bool,
) -> aws_sdk_lambda::operation::create_function::CreateFunctionOutput {
    client
        .create_function()
        .function_name(name)
        .runtime(Runtime::Python312)
        .role(ROLE)
        .handler("app.handler")
        .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
        .timeout(5)
        .publish(publish)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create_function {name}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        })
}

/// Invokes `function_name` (which may carry a `:qualifier`) with `{}` and returns the
/// executed version and the JSON payload.
async fn invoke_json(
    client: &Client,
    function_name: &str,
    qualifier: Option<&str>,
) -> (Option<String>, serde_json::Value) {
    let out = client
        .invoke()
        .function_name(function_name)
        .set_qualifier(qualifier.map(str::to_owned))
        .payload(Blob::new("{}"))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "invoke {function_name} (qualifier {qualifier:?}): {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        });
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), None, "{out:?}");
    (
        out.executed_version().map(str::to_owned),
        payload_json(out.payload()),
    )
}

/// A `DateTime` that is plausibly "now" (after 2020, before 2100).
fn assert_recent(value: Option<&DateTime>, what: &str) {
    let value = value.unwrap_or_else(|| panic!("{what} is missing"));
    let secs = value.secs();
    assert!(
        (1_577_836_800..4_102_444_800).contains(&secs),
        "{what} {value:?} is not a current epoch timestamp"
    );
}

#[tokio::test]
async fn versions_publish_and_list() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-ver");
    let zip1 = zip_of(&versioned_py(1));

    // CreateFunction with Publish → version 1
    let created = create_versioned(&client, &name, &zip1, true).await;
    assert_eq!(created.version(), Some("1"), "{created:?}");
    let arn = created.function_arn().expect("FunctionArn");
    assert!(
        arn.ends_with(&format!(":function:{name}:1")),
        "FunctionArn {arn}"
    );
    let stale_revision = client
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .expect("get_function_configuration $LATEST")
        .revision_id()
        .expect("RevisionId")
        .to_owned();

    // UpdateFunctionCode with Publish → version 2
    let zip2 = zip_of(&versioned_py(2));
    let updated = client
        .update_function_code()
        .function_name(&name)
        .zip_file(Blob::new(zip2.clone()))
        .publish(true)
        .send()
        .await
        .expect("update_function_code with publish");
    assert_eq!(updated.version(), Some("2"), "{updated:?}");
    assert!(
        updated
            .function_arn()
            .is_some_and(|a| a.ends_with(&format!(":function:{name}:2"))),
        "{updated:?}"
    );
    assert_eq!(updated.code_sha256(), Some(sha256_b64(&zip2).as_str()));

    // PublishVersion with a CodeSha256 that is not $LATEST's → InvalidParameterValueException
    let err = client
        .publish_version()
        .function_name(&name)
        .code_sha256(sha256_b64(b"not the code"))
        .send()
        .await
        .expect_err("publish_version with a wrong CodeSha256 must fail");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let err = err.into_service_error();
    assert!(
        err.is_invalid_parameter_value_exception(),
        "expected InvalidParameterValueException (status {status:?}), got {err:?}"
    );

    // PublishVersion with a stale RevisionId → PreconditionFailedException
    let err = client
        .publish_version()
        .function_name(&name)
        .revision_id(&stale_revision)
        .send()
        .await
        .expect_err("publish_version with a stale RevisionId must fail");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let err = err.into_service_error();
    assert!(
        err.is_precondition_failed_exception(),
        "expected PreconditionFailedException (status {status:?}), got {err:?}"
    );

    // ListVersionsByFunction, one per page: $LATEST, 1, 2
    let versions = client
        .list_versions_by_function()
        .function_name(&name)
        .max_items(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("list_versions_by_function items");
    let listed: Vec<&str> = versions
        .iter()
        .map(|v| v.version().expect("Version"))
        .collect();
    assert_eq!(listed, ["$LATEST", "1", "2"], "{versions:?}");
    assert_eq!(versions[1].code_sha256(), Some(sha256_b64(&zip1).as_str()));
    assert_eq!(versions[2].code_sha256(), Some(sha256_b64(&zip2).as_str()));
    for v in &versions {
        assert_last_modified(v.last_modified());
    }
}

#[tokio::test]
async fn aliases_route_invokes() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-alias");
    create_versioned(&client, &name, &zip_of(&versioned_py(1)), true).await;
    client
        .update_function_code()
        .function_name(&name)
        .zip_file(Blob::new(zip_of(&versioned_py(2))))
        .publish(true)
        .send()
        .await
        .expect("update_function_code with publish");

    // CreateAlias live → 1, with half the traffic on 2
    let created = client
        .create_alias()
        .function_name(&name)
        .name("live")
        .function_version("1")
        .description("sdk alias")
        .routing_config(
            AliasRoutingConfiguration::builder()
                .additional_version_weights("2", 0.5)
                .build(),
        )
        .send()
        .await
        .expect("create_alias");
    assert_eq!(created.name(), Some("live"));
    assert_eq!(created.function_version(), Some("1"));
    assert!(
        created
            .alias_arn()
            .is_some_and(|a| a.ends_with(&format!(":function:{name}:live"))),
        "{created:?}"
    );
    let weights = created
        .routing_config()
        .and_then(|r| r.additional_version_weights())
        .expect("RoutingConfig.AdditionalVersionWeights");
    assert_eq!(weights.get("2"), Some(&0.5), "{weights:?}");
    assert!(created.revision_id().is_some_and(|r| !r.is_empty()));

    // GetAlias
    let got = client
        .get_alias()
        .function_name(&name)
        .name("live")
        .send()
        .await
        .expect("get_alias");
    assert_eq!(got.alias_arn(), created.alias_arn());
    assert_eq!(got.function_version(), Some("1"));
    assert_eq!(got.description(), Some("sdk alias"));
    assert_eq!(
        got.routing_config()
            .and_then(|r| r.additional_version_weights())
            .and_then(|w| w.get("2")),
        Some(&0.5)
    );

    // UpdateAlias → 2, routing cleared
    let updated = client
        .update_alias()
        .function_name(&name)
        .name("live")
        .function_version("2")
        .routing_config(AliasRoutingConfiguration::builder().build())
        .send()
        .await
        .expect("update_alias");
    assert_eq!(updated.function_version(), Some("2"));
    assert!(
        updated
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .is_none_or(|w| w.is_empty()),
        "{updated:?}"
    );
    assert_ne!(updated.revision_id(), created.revision_id());

    // ListAliases
    let aliases = client
        .list_aliases()
        .function_name(&name)
        .send()
        .await
        .expect("list_aliases");
    let aliases = aliases.aliases();
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert_eq!(aliases[0].name(), Some("live"));
    assert_eq!(aliases[0].function_version(), Some("2"));

    // Invoke through the alias, and a version by `name:1`
    let (executed, payload) = invoke_json(&client, &name, Some("live")).await;
    assert_eq!(executed.as_deref(), Some("2"));
    assert_eq!(payload, serde_json::json!({"v": 2}));
    let (executed, payload) = invoke_json(&client, &format!("{name}:1"), None).await;
    assert_eq!(executed.as_deref(), Some("1"));
    assert_eq!(payload, serde_json::json!({"v": 1}));

    // Deleting version 2 while live points at it → ResourceConflictException
    let err = client
        .delete_function()
        .function_name(&name)
        .qualifier("2")
        .send()
        .await
        .expect_err("deleting a version an alias points at must fail");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let err = err.into_service_error();
    assert!(
        err.is_resource_conflict_exception(),
        "expected ResourceConflictException (status {status:?}), got {err:?}"
    );

    // DeleteAlias, then GetAlias → ResourceNotFoundException
    client
        .delete_alias()
        .function_name(&name)
        .name("live")
        .send()
        .await
        .expect("delete_alias");
    let err = client
        .get_alias()
        .function_name(&name)
        .name("live")
        .send()
        .await
        .expect_err("get_alias after delete must fail");
    let err = err.into_service_error();
    assert!(
        err.is_resource_not_found_exception(),
        "expected ResourceNotFoundException, got {err:?}"
    );
}

#[tokio::test]
async fn event_source_mapping_round_trip() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-esm");
    create_versioned(&client, &name, &zip_of(ECHO_PY), false).await;
    let queue = "arn:aws:sqs:us-east-1:000000000000:q";

    // Create (disabled): state Creating, LastModified an epoch timestamp
    let created = client
        .create_event_source_mapping()
        .function_name(&name)
        .event_source_arn(queue)
        .batch_size(5)
        .enabled(false)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create_event_source_mapping: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        });
    let uuid = created.uuid().expect("UUID").to_owned();
    assert!(!uuid.is_empty());
    assert_eq!(created.state(), Some("Creating"), "{created:?}");
    assert_eq!(created.batch_size(), Some(5));
    assert_eq!(created.event_source_arn(), Some(queue));
    assert!(
        created
            .function_arn()
            .is_some_and(|a| a.ends_with(&format!(":function:{name}"))),
        "{created:?}"
    );
    assert_recent(
        created.last_modified(),
        "CreateEventSourceMapping LastModified",
    );

    // Get → Disabled
    let got = client
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect("get_event_source_mapping");
    assert_eq!(got.uuid(), Some(uuid.as_str()));
    assert_eq!(got.state(), Some("Disabled"), "{got:?}");
    assert_eq!(got.batch_size(), Some(5));
    assert_recent(got.last_modified(), "GetEventSourceMapping LastModified");

    // Update (batch 7, enabled) → Updating, then Enabled
    let updated = client
        .update_event_source_mapping()
        .uuid(&uuid)
        .batch_size(7)
        .enabled(true)
        .send()
        .await
        .expect("update_event_source_mapping");
    assert_eq!(updated.state(), Some("Updating"), "{updated:?}");
    assert_recent(
        updated.last_modified(),
        "UpdateEventSourceMapping LastModified",
    );
    let got = client
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect("get_event_source_mapping after update");
    assert_eq!(got.state(), Some("Enabled"), "{got:?}");
    assert_eq!(got.batch_size(), Some(7));

    // List by function
    let listed = client
        .list_event_source_mappings()
        .function_name(&name)
        .send()
        .await
        .expect("list_event_source_mappings");
    let mappings = listed.event_source_mappings();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    assert_eq!(mappings[0].uuid(), Some(uuid.as_str()));
    assert_eq!(mappings[0].batch_size(), Some(7));
    assert_recent(
        mappings[0].last_modified(),
        "ListEventSourceMappings LastModified",
    );

    // Delete → Deleting, then Get → ResourceNotFoundException
    let deleted = client
        .delete_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect("delete_event_source_mapping");
    assert_eq!(deleted.state(), Some("Deleting"), "{deleted:?}");
    let err = client
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect_err("get_event_source_mapping after delete must fail");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let err = err.into_service_error();
    assert!(
        err.is_resource_not_found_exception(),
        "expected ResourceNotFoundException (status {status:?}), got {err:?}"
    );
}

#[tokio::test]
async fn function_settings_layers_permissions_tags_urls() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-misc");
    let created = create_versioned(&client, &name, &zip_of(ECHO_PY), false).await;
    let arn = created.function_arn().expect("FunctionArn").to_owned();

    // Event invoke config
    let put = client
        .put_function_event_invoke_config()
        .function_name(&name)
        .maximum_retry_attempts(1)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "put_function_event_invoke_config: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        });
    assert_eq!(put.maximum_retry_attempts(), Some(1));
    assert_recent(
        put.last_modified(),
        "PutFunctionEventInvokeConfig LastModified",
    );
    let got = client
        .get_function_event_invoke_config()
        .function_name(&name)
        .send()
        .await
        .expect("get_function_event_invoke_config");
    assert_eq!(got.maximum_retry_attempts(), Some(1));
    assert!(
        got.function_arn().is_some_and(|a| a.starts_with(&arn)),
        "{got:?}"
    );
    assert_recent(
        got.last_modified(),
        "GetFunctionEventInvokeConfig LastModified",
    );

    // Reserved concurrency 0 throttles every invoke
    let put = client
        .put_function_concurrency()
        .function_name(&name)
        .reserved_concurrent_executions(0)
        .send()
        .await
        .expect("put_function_concurrency");
    assert_eq!(put.reserved_concurrent_executions(), Some(0));
    let err = client
        .invoke()
        .function_name(&name)
        .payload(Blob::new("{}"))
        .send()
        .await
        .expect_err("invoke with reserved concurrency 0 must be throttled");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(429));
    let err = err.into_service_error();
    assert!(
        err.is_too_many_requests_exception(),
        "expected TooManyRequestsException, got {err:?}"
    );
    if let aws_sdk_lambda::operation::invoke::InvokeError::TooManyRequestsException(e) = &err {
        assert_eq!(
            e.reason(),
            Some(&ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded),
            "{e:?}"
        );
    }
    client
        .delete_function_concurrency()
        .function_name(&name)
        .send()
        .await
        .expect("delete_function_concurrency");
    let (executed, payload) = invoke_json(&client, &name, None).await;
    assert_eq!(executed.as_deref(), Some("$LATEST"));
    assert_eq!(payload["fn"], name.as_str(), "{payload}");

    // A layer, and a function that imports from it
    let layer_name = unique("sdk-layer");
    let layer_zip = {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        zip.start_file("python/sdkhelper.py", options)
            .expect("start sdkhelper.py");
        zip.write_all(b"VALUE = \"from-layer\"\n")
            .expect("write sdkhelper.py");
        zip.finish().expect("finish layer zip").into_inner()
    };
    let layer = client
        .publish_layer_version()
        .layer_name(&layer_name)
        .description("sdk layer")
        .content(
            LayerVersionContentInput::builder()
                .zip_file(Blob::new(layer_zip.clone()))
                .build(),
        )
        .compatible_runtimes(Runtime::Python312)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "publish_layer_version: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        });
    assert_eq!(layer.version(), 1);
    let layer_version_arn = layer
        .layer_version_arn()
        .expect("LayerVersionArn")
        .to_owned();
    assert!(
        layer_version_arn.ends_with(&format!(":layer:{layer_name}:1")),
        "LayerVersionArn {layer_version_arn}"
    );
    assert_eq!(
        layer.content().and_then(|c| c.code_sha256()),
        Some(sha256_b64(&layer_zip).as_str())
    );
    let got = client
        .get_layer_version()
        .layer_name(&layer_name)
        .version_number(1)
        .send()
        .await
        .expect("get_layer_version");
    assert_eq!(got.layer_version_arn(), Some(layer_version_arn.as_str()));
    assert_eq!(got.description(), Some("sdk layer"));
    assert_last_modified(got.created_date());
    assert_eq!(
        got.content().map(|c| c.code_size()),
        Some(layer_zip.len() as i64)
    );

    let layered = unique("sdk-layered");
    client
        .create_function()
        .function_name(&layered)
        .runtime(Runtime::Python312)
        .role(ROLE)
        .handler("app.handler")
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(zip_of(
                    "import sdkhelper\n\ndef handler(event, context):\n    return {\"layer\": sdkhelper.VALUE}\n",
                )))
                .build(),
        )
        .layers(&layer_version_arn)
        .send()
        .await
        .expect("create_function with a layer");
    let cfg = client
        .get_function_configuration()
        .function_name(&layered)
        .send()
        .await
        .expect("get_function_configuration of the layered function");
    let layers = cfg.layers();
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert_eq!(layers[0].arn(), Some(layer_version_arn.as_str()));
    assert_eq!(layers[0].code_size(), layer_zip.len() as i64);
    let (_, payload) = invoke_json(&client, &layered, None).await;
    assert_eq!(payload, serde_json::json!({"layer": "from-layer"}));

    // AddPermission + GetPolicy
    let added = client
        .add_permission()
        .function_name(&name)
        .statement_id("sdk-allow-s3")
        .action("lambda:InvokeFunction")
        .principal("s3.amazonaws.com")
        .send()
        .await
        .expect("add_permission");
    let statement: serde_json::Value =
        serde_json::from_str(added.statement().expect("Statement")).expect("Statement is JSON");
    assert_eq!(statement["Sid"], "sdk-allow-s3", "{statement}");
    let policy = client
        .get_policy()
        .function_name(&name)
        .send()
        .await
        .expect("get_policy");
    let policy_text = policy.policy().expect("Policy");
    let policy_json: serde_json::Value = serde_json::from_str(policy_text).expect("Policy is JSON");
    let sids: Vec<&str> = policy_json["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("Policy.Statement is not an array: {policy_text}"))
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert_eq!(sids, ["sdk-allow-s3"], "{policy_text}");
    assert!(policy.revision_id().is_some_and(|r| !r.is_empty()));

    // TagResource + ListTags
    client
        .tag_resource()
        .resource(&arn)
        .tags("team", "sdk")
        .tags("env", "test")
        .send()
        .await
        .expect("tag_resource");
    let tags = client
        .list_tags()
        .resource(&arn)
        .send()
        .await
        .expect("list_tags");
    let tags = tags.tags().expect("Tags");
    assert_eq!(
        tags.get("team").map(String::as_str),
        Some("sdk"),
        "{tags:?}"
    );
    assert_eq!(
        tags.get("env").map(String::as_str),
        Some("test"),
        "{tags:?}"
    );

    // CreateFunctionUrlConfig
    let url = client
        .create_function_url_config()
        .function_name(&name)
        .auth_type(FunctionUrlAuthType::None)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create_function_url_config: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        });
    assert!(!url.function_url().is_empty(), "{url:?}");
    assert_eq!(url.auth_type(), &FunctionUrlAuthType::None);
    assert!(url.function_arn().starts_with(&arn), "{url:?}");

    // GetAccountSettings
    let settings = client
        .get_account_settings()
        .send()
        .await
        .expect("get_account_settings");
    let limit = settings.account_limit().expect("AccountLimit");
    assert!(limit.concurrent_executions() > 0, "{limit:?}");
    let usage = settings.account_usage().expect("AccountUsage");
    assert!(usage.function_count() >= 2, "{usage:?}");
}
