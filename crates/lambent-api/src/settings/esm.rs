//! Event-source mappings: Create/Get/Update/Delete/ListEventSourceMappings.
//!
//! Documents live in `kinds::EVENT_SOURCE_MAPPING` (scope `""`, key UUID) in AWS's shape with
//! the settled `State` (`Enabled` or `Disabled`); the transitional states AWS reports
//! (`Creating`, `Updating`, `Deleting`) are only in the answers to the changing calls. Internal
//! members: `FunctionName` (bare), `Qualifier` (or null) and `Tags`, stripped from answers.
//! Sources in Lambent's ARN syntax are polled by `lambent_events::EventSources`, which writes
//! `StateTransitionReason` and `LastProcessingResult` into the documents.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use lambent_store::kinds;
use lambent_types::FunctionRef;

use super::invoke_config::validate_destination;
use super::tags::validate_tags;
use super::{
    check_enum, check_owner, check_range, epoch_now, list_reply, modify, paginate, require,
};
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Serializes creates so the duplicate-mapping check (across documents) is reliable.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// Members a mapping keeps as given (after validation) on create.
const CREATE_MEMBERS: &[&str] = &[
    "EventSourceArn",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "StartingPosition",
    "StartingPositionTimestamp",
    "DestinationConfig",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "Topics",
    "Queues",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "FunctionResponseTypes",
    "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig",
    "ScalingConfig",
    "DocumentDBEventSourceConfig",
    "FilterCriteria",
    "KMSKeyArn",
    "MetricsConfig",
    "ProvisionedPollerConfig",
];

/// Members UpdateEventSourceMapping may change.
const UPDATE_MEMBERS: &[&str] = &[
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "DestinationConfig",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "SourceAccessConfigurations",
    "FunctionResponseTypes",
    "ScalingConfig",
    "DocumentDBEventSourceConfig",
    "FilterCriteria",
    "KMSKeyArn",
    "MetricsConfig",
    "ProvisionedPollerConfig",
];

/// The source's kind, from its ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Sqs,
    Stream,
    Other,
}

pub(crate) fn source_kind(arn: Option<&str>) -> Source {
    if arn.is_some_and(lambent_events::source::is_stream_arn) {
        return Source::Stream;
    }
    let service = arn.and_then(|a| a.split(':').nth(2));
    match service {
        Some("sqs") => Source::Sqs,
        Some("kinesis" | "dynamodb") => Source::Stream,
        _ => Source::Other,
    }
}

fn int(doc: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_content(format!("{key} must be an integer"))),
    }
}

fn field(key: &str) -> String {
    let mut chars = key.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn check_int(
    doc: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    let value = int(doc, key)?;
    if let Some(v) = value {
        check_range(v, &field(key), min, max)?;
    }
    Ok(value)
}

/// Validates a mapping's members (the merged result of create/update) and fills defaults.
pub(crate) fn validate(doc: &mut Map<String, Value>) -> Result<(), ApiError> {
    let source_arn = doc
        .get("EventSourceArn")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(v) = doc.get("EventSourceArn")
        && !v.is_string()
        && !v.is_null()
    {
        return Err(ApiError::bad_content("EventSourceArn must be a string"));
    }
    let kind = source_kind(source_arn.as_deref());
    let fifo = kind == Source::Sqs && source_arn.as_deref().is_some_and(|a| a.ends_with(".fifo"));
    let batch = check_int(doc, "BatchSize", 1, 10000)?.unwrap_or(if kind == Source::Sqs {
        10
    } else {
        100
    });
    if fifo && batch > 10 {
        return Err(ApiError::invalid(format!(
            "BatchSize must be less than or equal to 10 for FIFO queues; got {batch}"
        )));
    }
    doc.insert("BatchSize".into(), json!(batch));
    let window = check_int(doc, "MaximumBatchingWindowInSeconds", 0, 300)?;
    if kind == Source::Sqs && !fifo && batch > 10 && window.unwrap_or(0) < 1 {
        return Err(ApiError::invalid(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
        ));
    }
    if kind != Source::Other || window.is_some() {
        doc.insert(
            "MaximumBatchingWindowInSeconds".into(),
            json!(window.unwrap_or(0)),
        );
    }
    check_int(doc, "ParallelizationFactor", 1, 10)?;
    check_int(doc, "MaximumRetryAttempts", -1, 10000)?;
    check_int(doc, "TumblingWindowInSeconds", 0, 900)?;
    if let Some(age) = check_int(doc, "MaximumRecordAgeInSeconds", -1, 604800)?
        && (0..60).contains(&age)
    {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{age}' at 'maximumRecordAgeInSeconds' failed to satisfy constraint: \
             Member must be -1 or between 60 and 604800"
        )));
    }
    match doc.get("StartingPosition").filter(|v| !v.is_null()) {
        Some(Value::String(p)) => {
            check_enum(
                p,
                "startingPosition",
                &["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"],
            )?;
            if p == "AT_TIMESTAMP"
                && !doc
                    .get("StartingPositionTimestamp")
                    .is_some_and(Value::is_number)
            {
                return Err(ApiError::invalid(
                    "StartingPositionTimestamp is required when StartingPosition is AT_TIMESTAMP",
                ));
            }
        }
        Some(_) => return Err(ApiError::bad_content("StartingPosition must be a string")),
        None if kind == Source::Stream => {
            return Err(ApiError::invalid(
                "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: Member must not be null (required for Kinesis and DynamoDB streams)",
            ));
        }
        None => {}
    }
    if kind == Source::Stream {
        for (key, default) in [
            ("ParallelizationFactor", json!(1)),
            ("MaximumRetryAttempts", json!(-1)),
            ("MaximumRecordAgeInSeconds", json!(-1)),
            ("BisectBatchOnFunctionError", json!(false)),
            ("TumblingWindowInSeconds", json!(0)),
        ] {
            doc.entry(key).or_insert(default);
        }
    }
    if let Some(v) = doc.get("BisectBatchOnFunctionError")
        && !v.is_boolean()
        && !v.is_null()
    {
        return Err(ApiError::bad_content(
            "BisectBatchOnFunctionError must be a boolean",
        ));
    }
    if let Some(types) = doc.get("FunctionResponseTypes").filter(|v| !v.is_null()) {
        let types = types
            .as_array()
            .ok_or_else(|| ApiError::bad_content("FunctionResponseTypes must be a list"))?;
        for t in types {
            check_enum(
                t.as_str().unwrap_or_default(),
                "functionResponseTypes",
                &["ReportBatchItemFailures"],
            )?;
        }
    }
    if let Some(scaling) = doc.get("ScalingConfig").filter(|v| !v.is_null()) {
        let scaling = scaling
            .as_object()
            .ok_or_else(|| ApiError::bad_content("ScalingConfig must be an object"))?;
        if let Some(max) = int(scaling, "MaximumConcurrency")? {
            check_range(max, "scalingConfig.maximumConcurrency", 2, 1000)?;
        }
        if kind != Source::Sqs {
            return Err(ApiError::invalid(
                "ScalingConfig is supported for Amazon SQS event sources only",
            ));
        }
    }
    if let Some(filters) = doc.get("FilterCriteria").filter(|v| !v.is_null()) {
        let list = filters
            .get("Filters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for filter in &list {
            let pattern = filter
                .get("Pattern")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if pattern.len() > 4096 || serde_json::from_str::<Map<String, Value>>(pattern).is_err()
            {
                return Err(ApiError::invalid(format!(
                    "Invalid filter pattern definition: {pattern}"
                )));
            }
        }
    }
    for key in ["Queues", "Topics"] {
        if let Some(items) = doc.get(key).filter(|v| !v.is_null()) {
            let items = items
                .as_array()
                .ok_or_else(|| ApiError::bad_content(format!("{key} must be a list")))?;
            if items.len() != 1 || items[0].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(format!(
                    "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must have length \
                     less than or equal to 1 and at least 1",
                    field(key)
                )));
            }
        }
    }
    if let Some(configs) = doc
        .get("SourceAccessConfigurations")
        .filter(|v| !v.is_null())
    {
        let configs = configs
            .as_array()
            .ok_or_else(|| ApiError::bad_content("SourceAccessConfigurations must be a list"))?;
        for c in configs {
            check_enum(
                c.get("Type").and_then(Value::as_str).unwrap_or_default(),
                "sourceAccessConfigurations.type",
                &[
                    "BASIC_AUTH",
                    "VPC_SUBNET",
                    "VPC_SECURITY_GROUP",
                    "SASL_SCRAM_512_AUTH",
                    "SASL_SCRAM_256_AUTH",
                    "VIRTUAL_HOST",
                    "CLIENT_CERTIFICATE_TLS_AUTH",
                    "SERVER_ROOT_CA_CERTIFICATE",
                ],
            )?;
        }
    }
    if source_arn.is_none()
        && !doc
            .get("SelfManagedEventSource")
            .is_some_and(Value::is_object)
    {
        return Err(ApiError::invalid(
            "Unrecognized event source, must be an ARN or a SelfManagedEventSource",
        ));
    }
    Ok(())
}

/// Checks a source in Lambent's ARN syntax (`arn:lambent:…`): well formed, with what its
/// kind needs, and its named connection existing. Other ARNs are kept as given.
fn check_source(state: &ApiState, doc: &Map<String, Value>) -> Result<(), ApiError> {
    let spec = lambent_events::source::parse_source(doc).map_err(ApiError::invalid)?;
    if let Some(spec) = spec {
        let arn = doc
            .get("EventSourceArn")
            .and_then(Value::as_str)
            .unwrap_or_default();
        state
            .invoker
            .connection_url(spec.connection(), spec.connection_kind(), arn)
            .map_err(ApiError::invalid)?;
    }
    Ok(())
}

/// Checks the mapping's OnFailure destination exists.
fn check_destination(state: &ApiState, doc: &Map<String, Value>) -> Result<(), ApiError> {
    match doc
        .get("DestinationConfig")
        .and_then(|d| d.get("OnFailure"))
        .and_then(|d| d.get("Destination"))
        .and_then(Value::as_str)
    {
        Some(dest) => validate_destination(state, dest, true),
        None => Ok(()),
    }
}

/// Resolves a mapping's FunctionName (name, `name:qualifier`, partial or full ARN).
fn resolve_function(state: &ApiState, raw: &str) -> Result<FunctionRef, ApiError> {
    check_owner(&state.arns, raw)?;
    let function = FunctionRef::parse(raw, None)?;
    require(state, &function)?;
    Ok(function)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "The resource you requested does not exist. (event source mapping {id})"
    ))
}

/// The answer shape: the stored document without internal members, with `state` if given.
fn output(doc: &Value, state: Option<&str>) -> Value {
    let mut out = doc.clone();
    if let Some(object) = out.as_object_mut() {
        object.remove("FunctionName");
        object.remove("Qualifier");
        object.remove("Tags");
        if let Some(state) = state {
            object.insert("State".into(), json!(state));
        }
    }
    out
}

fn body(req: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    req.json::<Map<String, Value>>()
}

fn enabled(input: &Map<String, Value>) -> Result<Option<bool>, ApiError> {
    match input.get("Enabled") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_content("Enabled must be a boolean")),
    }
}

fn settled(enabled: bool) -> &'static str {
    if enabled { "Enabled" } else { "Disabled" }
}

/// CreateEventSourceMapping: POST /2015-03-31/event-source-mappings → 202, State `Creating`.
pub(crate) fn create(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input = body(req)?;
    let raw_function = input
        .get("FunctionName")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("1 validation error detected: Value null at 'functionName' failed to satisfy constraint: Member must not be null"))?
        .to_string();
    let is_enabled = enabled(&input)?.unwrap_or(true);
    let mut doc = Map::new();
    for key in CREATE_MEMBERS {
        if let Some(v) = input.get(*key).filter(|v| !v.is_null()) {
            doc.insert((*key).to_string(), v.clone());
        }
    }
    validate(&mut doc)?;
    check_source(state, &doc)?;
    check_destination(state, &doc)?;
    let tags: BTreeMap<String, String> = match input.get("Tags").filter(|v| !v.is_null()) {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::bad_content(format!("Tags: {e}")))?,
        None => BTreeMap::new(),
    };
    validate_tags(&tags)?;
    let function = resolve_function(state, &raw_function)?;
    let function_arn = state
        .arns
        .arn_as_named(&function.name, function.qualifier.as_ref());
    let id = uuid::Uuid::new_v4().to_string();
    doc.insert("UUID".into(), json!(id));
    doc.insert("FunctionArn".into(), json!(function_arn));
    doc.insert(
        "EventSourceMappingArn".into(),
        json!(format!(
            "arn:aws:lambda:{}:{}:event-source-mapping:{id}",
            state.arns.region, state.arns.account_id
        )),
    );
    doc.insert("LastModified".into(), json!(epoch_now()));
    doc.insert("LastProcessingResult".into(), json!("No records processed"));
    doc.insert("State".into(), json!(settled(is_enabled)));
    doc.insert("StateTransitionReason".into(), json!("USER_INITIATED"));
    doc.insert("FunctionName".into(), json!(function.name));
    doc.insert(
        "Qualifier".into(),
        json!(function.qualifier.as_ref().map(ToString::to_string)),
    );
    if !tags.is_empty() {
        doc.insert("Tags".into(), json!(tags));
    }
    let doc = Value::Object(doc);
    let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(source) = doc["EventSourceArn"].as_str()
        && let Some((_, existing, _)) = state
            .store
            .list_documents(kinds::EVENT_SOURCE_MAPPING, Some(""))?
            .into_iter()
            .find(|(_, _, d)| {
                d["EventSourceArn"].as_str() == Some(source)
                    && d["FunctionArn"] == doc["FunctionArn"]
            })
    {
        return Err(ApiError::conflict(format!(
            "An event source mapping with event source (\"{source}\") and function (\"{}\") already exists. Please \
             update or delete the existing mapping with UUID {existing}",
            function.name
        )));
    }
    modify(
        state,
        kinds::EVENT_SOURCE_MAPPING,
        "",
        &id,
        &mut |current| match current {
            Some(_) => Err(ApiError::conflict(format!(
                "Event source mapping {id} already exists"
            ))),
            None => Ok(Some(doc.clone())),
        },
    )?;
    tracing::info!(uuid = %id, function = %function.name, source = %doc["EventSourceArn"], "event source mapping created");
    Ok(ApiReply::json(
        StatusCode::ACCEPTED,
        &output(&doc, Some("Creating")),
    ))
}

/// GetEventSourceMapping: GET /2015-03-31/event-source-mappings/{UUID} → 200.
pub(crate) fn get(state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let doc = state
        .store
        .get_document(kinds::EVENT_SOURCE_MAPPING, "", id)?
        .ok_or_else(|| not_found(id))?;
    Ok(ApiReply::json(StatusCode::OK, &output(&doc, None)))
}

/// UpdateEventSourceMapping: PUT /2015-03-31/event-source-mappings/{UUID} → 202, State `Updating`.
pub(crate) fn update(req: &ApiRequest, state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let input = body(req)?;
    let is_enabled = enabled(&input)?;
    let function = match input.get("FunctionName").filter(|v| !v.is_null()) {
        Some(Value::String(raw)) => Some(resolve_function(state, raw)?),
        Some(_) => return Err(ApiError::bad_content("FunctionName must be a string")),
        None => None,
    };
    // Checked before the store's transaction, which the check itself reads from.
    check_destination(state, &input)?;
    let doc = modify(state, kinds::EVENT_SOURCE_MAPPING, "", id, &mut |current| {
        let Some(Value::Object(mut doc)) = current else {
            return Err(not_found(id));
        };
        for key in UPDATE_MEMBERS {
            match input.get(*key) {
                None => {}
                Some(Value::Null) => {
                    doc.remove(*key);
                }
                Some(v) => {
                    doc.insert((*key).to_string(), v.clone());
                }
            }
        }
        validate(&mut doc)?;
        // The connection was checked at create time; a pure check only inside the transaction.
        lambent_events::source::parse_source(&doc).map_err(ApiError::invalid)?;
        if let Some(function) = &function {
            doc.insert(
                "FunctionArn".into(),
                json!(
                    state
                        .arns
                        .arn_as_named(&function.name, function.qualifier.as_ref())
                ),
            );
            doc.insert("FunctionName".into(), json!(function.name));
            doc.insert(
                "Qualifier".into(),
                json!(function.qualifier.as_ref().map(ToString::to_string)),
            );
        }
        if let Some(is_enabled) = is_enabled {
            doc.insert("State".into(), json!(settled(is_enabled)));
        }
        doc.insert("StateTransitionReason".into(), json!("USER_INITIATED"));
        doc.insert("LastModified".into(), json!(epoch_now()));
        Ok(Some(Value::Object(doc)))
    })?
    .unwrap_or_default();
    tracing::info!(uuid = %id, "event source mapping updated");
    Ok(ApiReply::json(
        StatusCode::ACCEPTED,
        &output(&doc, Some("Updating")),
    ))
}

/// DeleteEventSourceMapping: DELETE /2015-03-31/event-source-mappings/{UUID} → 202, State `Deleting`.
pub(crate) fn delete(state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let mut deleted = Value::Null;
    modify(state, kinds::EVENT_SOURCE_MAPPING, "", id, &mut |current| {
        deleted = current.ok_or_else(|| not_found(id))?;
        Ok(None)
    })?;
    tracing::info!(uuid = %id, "event source mapping deleted");
    Ok(ApiReply::json(
        StatusCode::ACCEPTED,
        &output(&deleted, Some("Deleting")),
    ))
}

/// ListEventSourceMappings: GET /2015-03-31/event-source-mappings?EventSourceArn&FunctionName&Marker&MaxItems.
pub(crate) fn list(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let source = req.query("EventSourceArn").filter(|s| !s.is_empty());
    let function = match req.query("FunctionName").filter(|s| !s.is_empty()) {
        Some(raw) => {
            check_owner(&state.arns, raw)?;
            Some(FunctionRef::parse(raw, None)?)
        }
        None => None,
    };
    let items: Vec<Value> = state
        .store
        .list_documents(kinds::EVENT_SOURCE_MAPPING, Some(""))?
        .into_iter()
        .map(|(_, _, doc)| doc)
        .filter(|doc| source.is_none_or(|s| doc["EventSourceArn"].as_str() == Some(s)))
        .filter(|doc| {
            function.as_ref().is_none_or(|f| {
                doc["FunctionName"].as_str() == Some(f.name.as_str())
                    && f.qualifier
                        .as_ref()
                        .is_none_or(|q| doc["Qualifier"].as_str() == Some(q.to_string().as_str()))
            })
        })
        .map(|doc| output(&doc, None))
        .collect();
    let (page, next) = paginate(req, items, 10000)?;
    Ok(list_reply("EventSourceMappings", page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sqs_defaults_and_limits() {
        let mut d = doc(json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q"}));
        validate(&mut d).unwrap();
        assert_eq!(d["BatchSize"], 10);
        assert_eq!(d["MaximumBatchingWindowInSeconds"], 0);
        let mut big = doc(
            json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q", "BatchSize": 100}),
        );
        assert!(validate(&mut big).is_err());
        let mut windowed = doc(
            json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q", "BatchSize": 100, "MaximumBatchingWindowInSeconds": 1}),
        );
        assert!(validate(&mut windowed).is_ok());
        let mut fifo = doc(
            json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q.fifo", "BatchSize": 11, "MaximumBatchingWindowInSeconds": 1}),
        );
        assert!(validate(&mut fifo).is_err());
        let mut zero =
            doc(json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q", "BatchSize": 0}));
        assert!(validate(&mut zero).is_err());
        let mut scaling = doc(
            json!({"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q", "ScalingConfig": {"MaximumConcurrency": 1}}),
        );
        assert!(validate(&mut scaling).is_err());
    }

    #[test]
    fn streams_need_a_starting_position() {
        let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
        assert!(validate(&mut doc(json!({"EventSourceArn": arn}))).is_err());
        let mut d = doc(json!({"EventSourceArn": arn, "StartingPosition": "LATEST"}));
        validate(&mut d).unwrap();
        assert_eq!(d["BatchSize"], 100);
        assert_eq!(d["MaximumRetryAttempts"], -1);
        assert!(
            validate(&mut doc(
                json!({"EventSourceArn": arn, "StartingPosition": "NOW"})
            ))
            .is_err()
        );
        assert!(
            validate(&mut doc(
                json!({"EventSourceArn": arn, "StartingPosition": "AT_TIMESTAMP"})
            ))
            .is_err()
        );
        assert!(validate(&mut doc(json!({"EventSourceArn": arn, "StartingPosition": "LATEST", "MaximumRecordAgeInSeconds": 30}))).is_err());
        assert!(validate(&mut doc(json!({"EventSourceArn": arn, "StartingPosition": "LATEST", "ParallelizationFactor": 11}))).is_err());
    }

    #[test]
    fn other_checks() {
        let arn = "arn:lambent:broker:local:000000000000:queue/x";
        assert!(validate(&mut doc(json!({"EventSourceArn": arn}))).is_ok());
        assert!(validate(&mut doc(json!({}))).is_err());
        assert!(validate(&mut doc(json!({"EventSourceArn": arn, "FilterCriteria": {"Filters": [{"Pattern": "not json"}]}}))).is_err());
        assert!(
            validate(&mut doc(
                json!({"EventSourceArn": arn, "FunctionResponseTypes": ["Nope"]})
            ))
            .is_err()
        );
        assert!(
            validate(&mut doc(
                json!({"EventSourceArn": arn, "Queues": ["a", "b"]})
            ))
            .is_err()
        );
    }
}
