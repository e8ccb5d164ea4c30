//! Resource policies: AddPermission, RemovePermission, GetPolicy.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use lambent_store::kinds;
use lambent_types::{FunctionRef, Qualifier};

use super::{check_enum, modify, require};
use crate::functions::function_ref;
use crate::{ApiError, ApiReply, ApiRequest, ApiState};

/// Largest policy document AWS accepts, in bytes.
pub(crate) const MAX_POLICY_BYTES: usize = 20 * 1024;

/// The body of AddPermission.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PermissionInput {
    pub statement_id: Option<String>,
    pub action: Option<String>,
    pub principal: Option<String>,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    pub event_source_token: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    pub principal_org_i_d: Option<String>,
    pub function_url_auth_type: Option<String>,
    pub revision_id: Option<String>,
}

fn pattern_error(value: &str, field: &str, pattern: &str) -> ApiError {
    ApiError::invalid(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         Member must satisfy regular expression pattern: {pattern}"
    ))
}

fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| {
        ApiError::invalid(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// Checks a statement id: 1–100 characters of `[a-zA-Z0-9-_]`.
pub(crate) fn validate_sid(sid: &str) -> Result<(), ApiError> {
    if sid.is_empty() || sid.len() > 100 {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{sid}' at 'statementId' failed to satisfy constraint: \
             Member must have length less than or equal to 100 and at least 1"
        )));
    }
    if !sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(pattern_error(sid, "statementId", "([a-zA-Z0-9-_]+)"));
    }
    Ok(())
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6 && parts[0] == "arn" && parts[1].starts_with("aws") && !parts[2].is_empty()
}

/// The statement's `Principal` for AddPermission's `Principal` string.
pub(crate) fn principal(raw: &str) -> Result<Value, ApiError> {
    if raw == "*" {
        Ok(json!("*"))
    } else if is_account(raw) {
        Ok(json!({ "AWS": format!("arn:aws:iam::{raw}:root") }))
    } else if raw.starts_with("arn:") {
        if valid_arn(raw) {
            Ok(json!({ "AWS": raw }))
        } else {
            Err(ApiError::invalid(
                "The provided principal was invalid. Please check the principal and try again.",
            ))
        }
    } else if raw.contains('.') && !raw.chars().any(char::is_whitespace) {
        Ok(json!({ "Service": raw }))
    } else {
        Err(ApiError::invalid(
            "The provided principal was invalid. Please check the principal and try again.",
        ))
    }
}

/// Validates AddPermission's input and builds the statement AWS would store.
pub(crate) fn build_statement(input: &PermissionInput, resource: &str) -> Result<Value, ApiError> {
    let sid = required(&input.statement_id, "statementId")?;
    validate_sid(sid)?;
    let action = required(&input.action, "action")?;
    let action_ok = action == "*"
        || action.strip_prefix("lambda:").is_some_and(|a| {
            a == "*" || (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic()))
        });
    if !action_ok {
        return Err(pattern_error(
            action,
            "action",
            "(lambda:[*]|lambda:[a-zA-Z]+|[*])",
        ));
    }
    let principal = principal(required(&input.principal, "principal")?)?;
    let mut arn_like = Map::new();
    let mut string_equals = Map::new();
    if let Some(arn) = &input.source_arn {
        if !valid_arn(arn) {
            return Err(pattern_error(
                arn,
                "sourceArn",
                "arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:([a-z]{2}(-gov)?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)",
            ));
        }
        arn_like.insert("AWS:SourceArn".into(), json!(arn));
    }
    if let Some(account) = &input.source_account {
        if !is_account(account) {
            return Err(pattern_error(account, "sourceAccount", "\\d{12}"));
        }
        string_equals.insert("AWS:SourceAccount".into(), json!(account));
    }
    if let Some(token) = &input.event_source_token {
        let ok = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(pattern_error(
                token,
                "eventSourceToken",
                "[a-zA-Z0-9._\\-]+",
            ));
        }
        string_equals.insert("lambda:EventSourceToken".into(), json!(token));
    }
    if let Some(org) = &input.principal_org_i_d {
        let ok = org.strip_prefix("o-").is_some_and(|rest| {
            (10..=32).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !ok {
            return Err(pattern_error(org, "principalOrgID", "^o-[a-z0-9]{10,32}$"));
        }
        string_equals.insert("aws:PrincipalOrgID".into(), json!(org));
    }
    if let Some(auth) = &input.function_url_auth_type {
        check_enum(auth, "functionUrlAuthType", &["NONE", "AWS_IAM"])?;
        string_equals.insert("lambda:FunctionUrlAuthType".into(), json!(auth));
    }
    let mut statement = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": action,
        "Resource": resource,
    });
    let mut condition = Map::new();
    if !string_equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(string_equals));
    }
    if !arn_like.is_empty() {
        condition.insert("ArnLike".into(), Value::Object(arn_like));
    }
    if !condition.is_empty() {
        statement["Condition"] = Value::Object(condition);
    }
    Ok(statement)
}

/// The policy document GetPolicy returns (as a JSON string).
pub(crate) fn policy_document(statements: &[Value]) -> Value {
    json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements })
}

/// The function and the policy key (`""` unqualified, else the version or alias).
fn policy_target(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
) -> Result<(FunctionRef, String), ApiError> {
    let function = function_ref(req, label)?;
    if function.qualifier == Some(Qualifier::Latest) {
        return Err(ApiError::invalid(
            "We currently do not support adding policies for $LATEST.",
        ));
    }
    require(state, &function)?;
    let key = function
        .qualifier
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok((function, key))
}

fn no_policy() -> ApiError {
    ApiError::not_found("The resource you requested does not exist.")
}

/// AddPermission: POST /2015-03-31/functions/{Fn}/policy?Qualifier → 201 `{Statement}`.
pub(crate) fn add(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let input: PermissionInput = req.json()?;
    let (function, key) = policy_target(req, state, label)?;
    let resource = state
        .arns
        .arn_as_named(&function.name, function.qualifier.as_ref());
    let statement = build_statement(&input, &resource)?;
    let sid = statement["Sid"].as_str().unwrap_or_default().to_string();
    modify(state, kinds::POLICY, &function.name, &key, &mut |current| {
        let current = current.unwrap_or_else(|| json!({ "Statement": [], "RevisionId": "" }));
        if let Some(expected) = &input.revision_id
            && current["RevisionId"].as_str() != Some(expected.as_str())
        {
            return Err(ApiError::stale_revision());
        }
        let mut statements = current["Statement"].as_array().cloned().unwrap_or_default();
        if statements
            .iter()
            .any(|s| s["Sid"].as_str() == Some(sid.as_str()))
        {
            return Err(ApiError::conflict(format!(
                "The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the \
                 existing statement."
            )));
        }
        statements.push(statement.clone());
        let size = policy_document(&statements).to_string().len();
        if size > MAX_POLICY_BYTES {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "PolicyLengthExceededException",
                format!(
                    "The final policy size ({size}) is bigger than the limit ({MAX_POLICY_BYTES})."
                ),
            ));
        }
        Ok(Some(
            json!({ "Statement": statements, "RevisionId": uuid::Uuid::new_v4().to_string() }),
        ))
    })?;
    tracing::info!(function = %function.name, %sid, "permission added");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &json!({ "Statement": statement.to_string() }),
    ))
}

/// GetPolicy: GET /2015-03-31/functions/{Fn}/policy?Qualifier → 200 `{Policy, RevisionId}`.
pub(crate) fn get(req: &ApiRequest, state: &ApiState, label: &str) -> Result<ApiReply, ApiError> {
    let (function, key) = policy_target(req, state, label)?;
    let doc = state
        .store
        .get_document(kinds::POLICY, &function.name, &key)?
        .ok_or_else(no_policy)?;
    let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({ "Policy": policy_document(&statements).to_string(), "RevisionId": doc["RevisionId"] }),
    ))
}

/// RemovePermission: DELETE /2015-03-31/functions/{Fn}/policy/{Sid}?Qualifier&RevisionId → 204.
pub(crate) fn remove(
    req: &ApiRequest,
    state: &ApiState,
    label: &str,
    sid: &str,
) -> Result<ApiReply, ApiError> {
    let (function, key) = policy_target(req, state, label)?;
    validate_sid(sid)?;
    let expected = req.query("RevisionId").filter(|r| !r.is_empty());
    modify(state, kinds::POLICY, &function.name, &key, &mut |current| {
        let current = current.ok_or_else(no_policy)?;
        if let Some(expected) = expected
            && current["RevisionId"].as_str() != Some(expected)
        {
            return Err(ApiError::stale_revision());
        }
        let mut statements = current["Statement"].as_array().cloned().unwrap_or_default();
        let before = statements.len();
        statements.retain(|s| s["Sid"].as_str() != Some(sid));
        if statements.len() == before {
            return Err(ApiError::not_found(format!(
                "Statement {sid} is not found in resource policy."
            )));
        }
        if statements.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            json!({ "Statement": statements, "RevisionId": uuid::Uuid::new_v4().to_string() }),
        ))
    })?;
    tracing::info!(function = %function.name, %sid, "permission removed");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    fn input(sid: &str, principal: &str) -> PermissionInput {
        PermissionInput {
            statement_id: Some(sid.into()),
            action: Some("lambda:InvokeFunction".into()),
            principal: Some(principal.into()),
            ..Default::default()
        }
    }

    #[test]
    fn builds_service_statement_with_conditions() {
        let mut i = input("s3-invoke", "s3.amazonaws.com");
        i.source_arn = Some("arn:aws:s3:::my-bucket".into());
        i.source_account = Some("123456789012".into());
        let s = build_statement(&i, RESOURCE).unwrap();
        assert_eq!(
            s,
            json!({
                "Sid": "s3-invoke", "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "lambda:InvokeFunction", "Resource": RESOURCE,
                "Condition": {
                    "StringEquals": {"AWS:SourceAccount": "123456789012"},
                    "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"}
                }
            })
        );
    }

    #[test]
    fn principals_like_aws() {
        assert_eq!(principal("*").unwrap(), json!("*"));
        assert_eq!(
            principal("123456789012").unwrap(),
            json!({"AWS": "arn:aws:iam::123456789012:root"})
        );
        assert_eq!(
            principal("arn:aws:iam::123456789012:role/r").unwrap(),
            json!({"AWS": "arn:aws:iam::123456789012:role/r"})
        );
        assert_eq!(
            principal("events.amazonaws.com").unwrap(),
            json!({"Service": "events.amazonaws.com"})
        );
        assert!(principal("nobody").is_err());
        assert!(principal("arn:bad").is_err());
    }

    #[test]
    fn url_auth_and_org_conditions() {
        let mut i = input("url", "*");
        i.action = Some("lambda:InvokeFunctionUrl".into());
        i.function_url_auth_type = Some("NONE".into());
        i.principal_org_i_d = Some("o-abcdefghij".into());
        let s = build_statement(&i, RESOURCE).unwrap();
        assert_eq!(
            s["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"],
            "NONE"
        );
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
            "o-abcdefghij"
        );
        assert_eq!(s["Principal"], "*");
        i.function_url_auth_type = Some("OPEN".into());
        assert!(build_statement(&i, RESOURCE).is_err());
    }

    #[test]
    fn validates_input() {
        assert!(build_statement(&input("ok_id-1", "*"), RESOURCE).is_ok());
        assert!(build_statement(&input("bad id", "*"), RESOURCE).is_err());
        assert!(build_statement(&input("", "*"), RESOURCE).is_err());
        assert!(build_statement(&input(&"x".repeat(101), "*"), RESOURCE).is_err());
        let mut i = input("a", "*");
        i.action = Some("s3:GetObject".into());
        assert!(build_statement(&i, RESOURCE).is_err());
        i.action = Some("lambda:*".into());
        assert!(build_statement(&i, RESOURCE).is_ok());
        i.source_account = Some("123".into());
        assert!(build_statement(&i, RESOURCE).is_err());
        let mut missing = input("a", "*");
        missing.principal = None;
        assert!(build_statement(&missing, RESOURCE).is_err());
    }

    #[test]
    fn policy_document_shape() {
        let doc = policy_document(&[json!({"Sid": "a"})]);
        assert_eq!(doc["Version"], "2012-10-17");
        assert_eq!(doc["Id"], "default");
        assert_eq!(doc["Statement"][0]["Sid"], "a");
    }
}
