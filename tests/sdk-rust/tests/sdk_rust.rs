//! The official AWS SDK for Rust (`aws-sdk-lambda`) against a real `lambent serve`:
//! function CRUD, listing, invoke and authentication. The server and client setup is in
//! `common/mod.rs`.

mod common;

use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, LogType, Runtime};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::*;

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn control_plane_round_trip() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-cp");
    let zip = zip_of(ECHO_PY);

    // CreateFunction
    let created = create_python(&client, &name, &zip).await;
    assert_configuration(&created, &name, &zip, 5);
    let arn = created.function_arn().expect("FunctionArn").to_owned();

    // GetFunction: configuration and code location
    let got = client
        .get_function()
        .function_name(&name)
        .send()
        .await
        .expect("get_function");
    assert_configuration(got.configuration().expect("Configuration"), &name, &zip, 5);
    let code = got.code().expect("Code");
    assert_eq!(code.repository_type(), Some("S3"));
    assert!(
        code.location().is_some_and(|l| !l.is_empty()),
        "Code.Location"
    );

    // GetFunctionConfiguration by full ARN
    let by_arn = client
        .get_function_configuration()
        .function_name(&arn)
        .send()
        .await
        .expect("get_function_configuration by ARN");
    assert_eq!(by_arn.function_arn(), Some(arn.as_str()));
    assert_eq!(by_arn.revision_id(), created.revision_id());
    assert_eq!(by_arn.code_sha256(), created.code_sha256());

    // UpdateFunctionConfiguration: the timeout and the revision change
    let updated = client
        .update_function_configuration()
        .function_name(&name)
        .timeout(7)
        .send()
        .await
        .expect("update_function_configuration");
    assert_eq!(updated.timeout(), Some(7));
    assert_eq!(updated.memory_size(), Some(256));
    assert!(updated.revision_id().is_some_and(|r| !r.is_empty()));
    assert_ne!(updated.revision_id(), created.revision_id());
    let after = client
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .expect("get_function_configuration after update");
    assert_eq!(after.timeout(), Some(7));
    assert_eq!(after.revision_id(), updated.revision_id());

    // UpdateFunctionCode: new hash, size and revision
    let zip2 = zip_of(&format!("{ECHO_PY}\n# v2\n"));
    let code_updated = client
        .update_function_code()
        .function_name(&name)
        .zip_file(Blob::new(zip2.clone()))
        .send()
        .await
        .expect("update_function_code");
    assert_eq!(code_updated.code_sha256(), Some(sha256_b64(&zip2).as_str()));
    assert_eq!(code_updated.code_size(), zip2.len() as i64);
    assert_ne!(code_updated.revision_id(), updated.revision_id());
    assert_eq!(code_updated.timeout(), Some(7));
    assert_last_modified(code_updated.last_modified());

    // CreateFunction twice → ResourceConflictException
    let err = client
        .create_function()
        .function_name(&name)
        .runtime(Runtime::Python312)
        .role(ROLE)
        .handler("app.handler")
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(zip.clone()))
                .build(),
        )
        .send()
        .await
        .expect_err("second create_function must fail");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    let err = err.into_service_error();
    assert!(
        err.is_resource_conflict_exception(),
        "expected ResourceConflictException, got {err:?}"
    );

    // MemorySize 64 → InvalidParameterValueException
    let err = client
        .create_function()
        .function_name(unique("sdk-mem"))
        .runtime(Runtime::Python312)
        .role(ROLE)
        .handler("app.handler")
        .memory_size(64)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(zip.clone()))
                .build(),
        )
        .send()
        .await
        .expect_err("memory 64 must be rejected");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let err = err.into_service_error();
    assert!(
        err.is_invalid_parameter_value_exception(),
        "expected InvalidParameterValueException, got {err:?}"
    );

    // DeleteFunction, then GetFunction → ResourceNotFoundException
    client
        .delete_function()
        .function_name(&name)
        .send()
        .await
        .expect("delete_function");
    let err = client
        .get_function()
        .function_name(&name)
        .send()
        .await
        .expect_err("get_function after delete must fail");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    let err = err.into_service_error();
    assert!(
        err.is_resource_not_found_exception(),
        "expected ResourceNotFoundException, got {err:?}"
    );
    assert!(err.message().is_some_and(|m| !m.is_empty()), "{err:?}");
}

#[tokio::test]
async fn list_functions_paginates_one_at_a_time() {
    let server = Server::start();
    let client = server.client();
    let zip = zip_of(ECHO_PY);
    let mut names: Vec<String> = Vec::new();
    for _ in 0..3 {
        let name = unique("sdk-list");
        create_python(&client, &name, &zip).await;
        names.push(name);
    }

    // Item paginator: every function exactly once.
    let items = client
        .list_functions()
        .max_items(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("list_functions items");
    let mut listed: Vec<String> = items
        .iter()
        .map(|f| f.function_name().expect("FunctionName").to_owned())
        .collect();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    for f in &items {
        assert_eq!(f.version(), Some("$LATEST"));
        assert_eq!(f.runtime(), Some(&Runtime::Python312));
    }

    // Page paginator: one function per page, a marker on all but the last.
    let pages = client
        .list_functions()
        .max_items(1)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("list_functions pages");
    assert_eq!(pages.len(), 3, "{pages:?}");
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.functions().len(), 1, "page {i}: {page:?}");
        assert_eq!(page.next_marker().is_some(), i < 2, "page {i}: {page:?}");
    }
}

#[tokio::test]
async fn invoke_round_trip() {
    let server = Server::start();
    let client = server.client();
    let name = unique("sdk-echo");
    let zip = zip_of(ECHO_PY);
    create_python(&client, &name, &zip).await;

    // RequestResponse invoke: the payload echoes.
    let out = client
        .invoke()
        .function_name(&name)
        .payload(Blob::new(r#"{"k":"v"}"#))
        .send()
        .await
        .expect("invoke");
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), None);
    assert_eq!(out.executed_version(), Some("$LATEST"));
    assert_eq!(out.log_result(), None, "no log without LogType Tail");
    assert_eq!(
        payload_json(out.payload()),
        serde_json::json!({"echo": {"k": "v"}, "fn": name})
    );

    // LogType Tail: base64 log ending with the REPORT line.
    let out = client
        .invoke()
        .function_name(&name)
        .log_type(LogType::Tail)
        .payload(Blob::new(r#"{"tail":true}"#))
        .send()
        .await
        .expect("invoke with LogType Tail");
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), None);
    let log = B64
        .decode(out.log_result().expect("LogResult"))
        .expect("LogResult is base64");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("REPORT RequestId"), "log tail: {log:?}");
    assert_eq!(
        payload_json(out.payload()),
        serde_json::json!({"echo": {"tail": true}, "fn": name})
    );

    // New code is what runs after UpdateFunctionCode.
    let zip2 = zip_of(
        "def handler(event, context):\n    return {\"v\": 2, \"fn\": context.function_name}\n",
    );
    client
        .update_function_code()
        .function_name(&name)
        .zip_file(Blob::new(zip2))
        .send()
        .await
        .expect("update_function_code");
    let out = client
        .invoke()
        .function_name(&name)
        .payload(Blob::new("{}"))
        .send()
        .await
        .expect("invoke after update_function_code");
    assert_eq!(
        payload_json(out.payload()),
        serde_json::json!({"v": 2, "fn": name})
    );

    // A handler that raises: 200 with FunctionError Unhandled and the error document.
    let failing = unique("sdk-raise");
    create_python(&client, &failing, &zip_of(RAISE_PY)).await;
    let out = client
        .invoke()
        .function_name(&failing)
        .payload(Blob::new("{}"))
        .send()
        .await
        .expect("invoke of a raising function is not an SDK error");
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), Some("Unhandled"));
    assert_eq!(out.executed_version(), Some("$LATEST"));
    let error = payload_json(out.payload());
    assert_eq!(error["errorType"], "ValueError", "{error}");
    assert_eq!(error["errorMessage"], "boom", "{error}");
}

#[tokio::test]
async fn wrong_secret_is_rejected() {
    let server = Server::start();
    let bad = sdk_client(
        &server.creds.endpoint,
        &server.creds.access_key_id,
        "not-the-secret-0000000000000000000000000",
    );
    let err = bad
        .list_functions()
        .send()
        .await
        .expect_err("a wrong secret must be rejected");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    assert_eq!(status, Some(403), "{err:?}");
    assert!(
        matches!(
            code.as_deref(),
            Some("InvalidSignatureException" | "UnrecognizedClientException")
        ),
        "error code {code:?}: {err:?}"
    );

    // An access key the server never issued.
    let unknown = sdk_client(
        &server.creds.endpoint,
        "LKIAUNKNOWNKEY000000",
        &server.creds.secret_access_key,
    );
    let err = unknown
        .list_functions()
        .send()
        .await
        .expect_err("an unknown access key must be rejected");
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{err:?}"
    );
    assert!(
        matches!(
            err.code(),
            Some("InvalidSignatureException" | "UnrecognizedClientException")
        ),
        "error code {:?}: {err:?}",
        err.code()
    );

    // The right secret still works on the same server.
    let functions = server
        .client()
        .list_functions()
        .send()
        .await
        .expect("list_functions with the right secret");
    assert!(functions.functions().is_empty());
}
