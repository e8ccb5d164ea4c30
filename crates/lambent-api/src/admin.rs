//! Lambent's administration API for principals, keys, policies and the audit log, used by
//! `lambent admin …`. Paths and IAM actions:
//!
//! | Request | Action |
//! |---|---|
//! | `POST /lambent/admin/users` `{"UserName"}` → 201 `{User}` | `iam:CreateUser` |
//! | `GET /lambent/admin/users` → `{Users}` | `iam:ListUsers` |
//! | `DELETE /lambent/admin/users/<name>` → 204 | `iam:DeleteUser` |
//! | `POST /lambent/admin/users/<name>/keys` → 201 `{AccessKey}` (the only answer with a secret) | `iam:CreateAccessKey` |
//! | `GET /lambent/admin/keys[?user=<name>]` → `{AccessKeys}` | `iam:ListAccessKeys` |
//! | `POST /lambent/admin/keys/<id>/rotate` → 201 `{AccessKey}` (the old key is deleted) | `iam:CreateAccessKey` |
//! | `DELETE /lambent/admin/keys/<id>` → 204 | `iam:DeleteAccessKey` |
//! | `PUT /lambent/admin/{users,roles}/<name>/policies/<policy>` (body: the document) → 200 | `iam:PutUserPolicy` / `iam:PutRolePolicy` |
//! | `DELETE …/policies/<policy>` → 204 | `iam:DeleteUserPolicy` / `iam:DeleteRolePolicy` |
//! | `GET /lambent/admin/{users,roles}/<name>/policies` → `{Policies}` | `iam:ListUserPolicies` / `iam:ListRolePolicies` |
//! | `POST /lambent/admin/roles` `{"RoleName", "Description"}` → 201 `{Role}` | `iam:CreateRole` |
//! | `GET /lambent/admin/roles` → `{Roles}` | `iam:ListRoles` |
//! | `DELETE /lambent/admin/roles/<name>` → 204 | `iam:DeleteRole` |
//! | `GET /lambent/admin/audit[?since=&principal=&decision=&limit=]` → `{Events}` | `lambent:GetAuditLog` |

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use lambent_store::iam::{AuditFilter, PrincipalKind, ROOT_USER};
use lambent_types::names::ArnContext;
use lambent_types::policy::{Policy, PolicyKind};
use lambent_types::time::iso8601_epoch_millis;

use crate::authz::Target;
use crate::{ApiError, ApiReply, ApiRequest, ApiState, Routed};

/// The ARN of a user (the account root's for `root`) or role of this account.
pub(crate) fn principal_arn(arns: &ArnContext, kind: PrincipalKind, name: &str) -> String {
    match kind {
        PrincipalKind::User if name == ROOT_USER => {
            format!("arn:aws:iam::{}:root", arns.account_id)
        }
        PrincipalKind::User => format!("arn:aws:iam::{}:user/{name}", arns.account_id),
        PrincipalKind::Role => format!("arn:aws:iam::{}:role/{name}", arns.account_id),
    }
}

fn kind_of(segment: &str) -> Option<PrincipalKind> {
    match segment {
        "users" => Some(PrincipalKind::User),
        "roles" => Some(PrincipalKind::Role),
        _ => None,
    }
}

/// The action and resource of an admin request; `None` when the path is none of them.
pub(crate) fn target(arns: &ArnContext, method: &Method, segments: &[&str]) -> Option<Target> {
    let user = |name: &str| principal_arn(arns, PrincipalKind::User, name);
    let key = |id: &str| format!("arn:aws:iam::{}:access-key/{id}", arns.account_id);
    let (action, resource) = match (method.clone(), segments) {
        (Method::POST, ["lambent", "admin", "users"]) => ("iam:CreateUser", "*".to_string()),
        (Method::GET, ["lambent", "admin", "users"]) => ("iam:ListUsers", "*".to_string()),
        (Method::DELETE, ["lambent", "admin", "users", name]) => ("iam:DeleteUser", user(name)),
        (Method::POST, ["lambent", "admin", "users", name, "keys"]) => {
            ("iam:CreateAccessKey", user(name))
        }
        (Method::GET, ["lambent", "admin", "keys"]) => ("iam:ListAccessKeys", "*".to_string()),
        (Method::POST, ["lambent", "admin", "keys", id, "rotate"]) => {
            ("iam:CreateAccessKey", key(id))
        }
        (Method::DELETE, ["lambent", "admin", "keys", id]) => ("iam:DeleteAccessKey", key(id)),
        (m, ["lambent", "admin", kind, name, "policies", ..]) => {
            let kind = kind_of(kind)?;
            let noun = match kind {
                PrincipalKind::User => "User",
                PrincipalKind::Role => "Role",
            };
            let verb = match (m, segments.len()) {
                (Method::PUT, 6) => "Put",
                (Method::DELETE, 6) => "Delete",
                (Method::GET, 5) => "List",
                _ => return None,
            };
            let action = match (verb, noun) {
                ("Put", "User") => "iam:PutUserPolicy",
                ("Delete", "User") => "iam:DeleteUserPolicy",
                ("List", "User") => "iam:ListUserPolicies",
                ("Put", _) => "iam:PutRolePolicy",
                ("Delete", _) => "iam:DeleteRolePolicy",
                _ => "iam:ListRolePolicies",
            };
            (action, principal_arn(arns, kind, name))
        }
        (Method::POST, ["lambent", "admin", "roles"]) => ("iam:CreateRole", "*".to_string()),
        (Method::GET, ["lambent", "admin", "roles"]) => ("iam:ListRoles", "*".to_string()),
        (Method::DELETE, ["lambent", "admin", "roles", name]) => (
            "iam:DeleteRole",
            principal_arn(arns, PrincipalKind::Role, name),
        ),
        (Method::GET, ["lambent", "admin", "audit"]) => ("lambent:GetAuditLog", "*".to_string()),
        _ => return None,
    };
    Some(Target {
        action: action.to_string(),
        resource,
    })
}

/// Routes the admin operations; `None` when the request is not one of them.
pub(crate) fn route(req: &ApiRequest, state: &ApiState, segments: &[&str]) -> Routed {
    let answer = match (&req.method, segments) {
        (&Method::POST, ["lambent", "admin", "users"]) => create_user(req, state),
        (&Method::GET, ["lambent", "admin", "users"]) => list_users(state),
        (&Method::DELETE, ["lambent", "admin", "users", name]) => delete_user(state, name),
        (&Method::POST, ["lambent", "admin", "users", name, "keys"]) => create_key(state, name),
        (&Method::GET, ["lambent", "admin", "keys"]) => list_keys(req, state),
        (&Method::POST, ["lambent", "admin", "keys", id, "rotate"]) => rotate_key(state, id),
        (&Method::DELETE, ["lambent", "admin", "keys", id]) => delete_key(state, id),
        (&Method::PUT, ["lambent", "admin", kind, name, "policies", policy]) => {
            put_policy(req, state, kind, name, policy)
        }
        (&Method::DELETE, ["lambent", "admin", kind, name, "policies", policy]) => {
            delete_policy(state, kind, name, policy)
        }
        (&Method::GET, ["lambent", "admin", kind, name, "policies"]) => {
            list_policies(state, kind, name)
        }
        (&Method::POST, ["lambent", "admin", "roles"]) => create_role(req, state),
        (&Method::GET, ["lambent", "admin", "roles"]) => list_roles(state),
        (&Method::DELETE, ["lambent", "admin", "roles", name]) => delete_role(state, name),
        (&Method::GET, ["lambent", "admin", "audit"]) => audit(req, state),
        _ => return None,
    };
    Some(answer)
}

/// IAM's rule for user and role names: 1–64 of `[\w+=,.@-]`.
fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member \
             must satisfy regular expression pattern: [\\w+=,.@-]+ (1 to 64 characters)"
        )))
    }
}

fn user_json(user: &lambent_store::iam::User) -> Value {
    json!({"UserName": user.name, "Arn": user.arn, "CreateDate": iso8601_epoch_millis(user.created_ms)})
}

fn role_json(role: &lambent_store::iam::Role) -> Value {
    json!({"RoleName": role.name, "Arn": role.arn, "Description": role.description,
           "CreateDate": iso8601_epoch_millis(role.created_ms)})
}

fn key_json(key: &lambent_store::iam::NewAccessKey) -> Value {
    json!({"AccessKey": {"UserName": key.user, "AccessKeyId": key.access_key_id,
                         "SecretAccessKey": key.secret_access_key, "Status": "Active"}})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserInput {
    user_name: String,
}

fn create_user(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input: UserInput = req.json()?;
    check_name(&input.user_name, "userName")?;
    if input.user_name == ROOT_USER {
        return Err(ApiError::conflict("User with name root already exists."));
    }
    let arn = principal_arn(&state.arns, PrincipalKind::User, &input.user_name);
    let user = state.store.create_user(&input.user_name, &arn)?;
    tracing::info!(user = %user.name, "user created");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &json!({"User": user_json(&user)}),
    ))
}

fn list_users(state: &ApiState) -> Result<ApiReply, ApiError> {
    let users: Vec<Value> = state.store.list_users()?.iter().map(user_json).collect();
    Ok(ApiReply::json(StatusCode::OK, &json!({"Users": users})))
}

fn delete_user(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    if name == ROOT_USER {
        return Err(ApiError::invalid(
            "The account root cannot be deleted; rotate its key instead",
        ));
    }
    state.store.delete_user(name)?;
    tracing::info!(user = %name, "user deleted");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

fn create_key(state: &ApiState, user: &str) -> Result<ApiReply, ApiError> {
    let key = state.store.create_access_key(user)?;
    tracing::info!(%user, access_key_id = %key.access_key_id, "access key created");
    Ok(ApiReply::json(StatusCode::CREATED, &key_json(&key)))
}

fn list_keys(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let user = req.query("user").filter(|u| !u.is_empty());
    let keys: Vec<Value> = state
        .store
        .list_access_keys_of(user)?
        .iter()
        .map(|k| {
            json!({"UserName": k.user, "AccessKeyId": k.access_key_id, "Status": k.status,
                   "CreateDate": iso8601_epoch_millis(k.created_ms)})
        })
        .collect();
    Ok(ApiReply::json(StatusCode::OK, &json!({"AccessKeys": keys})))
}

fn key_owner(state: &ApiState, id: &str) -> Result<String, ApiError> {
    state
        .store
        .lookup_access_key(id)?
        .map(|k| k.user)
        .ok_or_else(|| ApiError::not_found(format!("The Access Key with id {id} cannot be found.")))
}

fn rotate_key(state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    let user = key_owner(state, id)?;
    // The old key goes first, so a user at the two-key limit can rotate too.
    state.store.delete_access_key(id)?;
    let key = state.store.create_access_key(&user)?;
    tracing::info!(%user, old = %id, new = %key.access_key_id, "access key rotated");
    Ok(ApiReply::json(StatusCode::CREATED, &key_json(&key)))
}

fn delete_key(state: &ApiState, id: &str) -> Result<ApiReply, ApiError> {
    key_owner(state, id)?;
    state.store.delete_access_key(id)?;
    tracing::info!(access_key_id = %id, "access key deleted");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

fn principal_kind(kind: &str) -> Result<PrincipalKind, ApiError> {
    kind_of(kind).ok_or_else(|| ApiError::not_found(format!("no such principal kind: {kind}")))
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "MalformedPolicyDocumentException",
        message,
    )
}

fn put_policy(
    req: &ApiRequest,
    state: &ApiState,
    kind: &str,
    name: &str,
    policy: &str,
) -> Result<ApiReply, ApiError> {
    let kind = principal_kind(kind)?;
    check_name(policy, "policyName")?;
    let document = std::str::from_utf8(&req.body)
        .map_err(|_| malformed("The policy document is not UTF-8 text"))?;
    Policy::parse(document, PolicyKind::Identity).map_err(|e| malformed(e.to_string()))?;
    state.store.put_policy(kind, name, policy, document)?;
    tracing::info!(principal = %name, %policy, "policy attached");
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({"PolicyName": policy, "PrincipalName": name}),
    ))
}

fn delete_policy(
    state: &ApiState,
    kind: &str,
    name: &str,
    policy: &str,
) -> Result<ApiReply, ApiError> {
    let kind = principal_kind(kind)?;
    state.store.delete_policy(kind, name, policy)?;
    tracing::info!(principal = %name, %policy, "policy detached");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

fn list_policies(state: &ApiState, kind: &str, name: &str) -> Result<ApiReply, ApiError> {
    let kind = principal_kind(kind)?;
    let exists = match kind {
        PrincipalKind::User => state.store.get_user(name)?.is_some(),
        PrincipalKind::Role => state.store.get_role(name)?.is_some(),
    };
    if !exists {
        return Err(ApiError::not_found(format!(
            "The {} with name {name} cannot be found.",
            kind.as_str()
        )));
    }
    let policies: Vec<Value> = state
        .store
        .list_policies(kind, name)?
        .into_iter()
        .map(|(policy, document)| {
            let document: Value =
                serde_json::from_str(&document).unwrap_or(Value::String(document));
            json!({"PolicyName": policy, "PolicyDocument": document})
        })
        .collect();
    Ok(ApiReply::json(
        StatusCode::OK,
        &json!({"Policies": policies}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleInput {
    role_name: String,
    #[serde(default)]
    description: String,
}

fn create_role(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let input: RoleInput = req.json()?;
    check_name(&input.role_name, "roleName")?;
    let arn = principal_arn(&state.arns, PrincipalKind::Role, &input.role_name);
    let role = state
        .store
        .create_role(&input.role_name, &arn, &input.description)?;
    tracing::info!(role = %role.name, "role created");
    Ok(ApiReply::json(
        StatusCode::CREATED,
        &json!({"Role": role_json(&role)}),
    ))
}

fn list_roles(state: &ApiState) -> Result<ApiReply, ApiError> {
    let roles: Vec<Value> = state.store.list_roles()?.iter().map(role_json).collect();
    Ok(ApiReply::json(StatusCode::OK, &json!({"Roles": roles})))
}

fn delete_role(state: &ApiState, name: &str) -> Result<ApiReply, ApiError> {
    state.store.delete_role(name)?;
    tracing::info!(role = %name, "role deleted");
    Ok(ApiReply::empty(StatusCode::NO_CONTENT))
}

fn audit(req: &ApiRequest, state: &ApiState) -> Result<ApiReply, ApiError> {
    let number = |key: &str| -> Result<Option<i64>, ApiError> {
        req.query(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("{key} must be a number, got {v:?}")))
            })
            .transpose()
    };
    let filter = AuditFilter {
        since_ms: number("since")?.map(|s| s.saturating_mul(1000)),
        principal: req
            .query("principal")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        decision: req
            .query("decision")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        limit: number("limit")?.map_or(100, |n| n.clamp(1, 10_000) as usize),
    };
    let events: Vec<Value> = state
        .store
        .list_audit(&filter)?
        .iter()
        .map(|r| {
            json!({"Time": iso8601_epoch_millis(r.at_ms), "Principal": r.principal, "AccessKeyId": r.access_key_id,
                   "Action": r.action, "Resource": r.resource, "Decision": r.decision,
                   "SourceIp": r.source_ip, "Status": r.status, "ErrorCode": r.error_code,
                   "RequestId": r.request_id})
        })
        .collect();
    Ok(ApiReply::json(StatusCode::OK, &json!({"Events": events})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_path_has_an_action() {
        let arns = ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        let cases = [
            (Method::POST, "lambent/admin/users", "iam:CreateUser"),
            (Method::DELETE, "lambent/admin/users/a", "iam:DeleteUser"),
            (
                Method::POST,
                "lambent/admin/users/a/keys",
                "iam:CreateAccessKey",
            ),
            (
                Method::POST,
                "lambent/admin/keys/K/rotate",
                "iam:CreateAccessKey",
            ),
            (
                Method::PUT,
                "lambent/admin/users/a/policies/p",
                "iam:PutUserPolicy",
            ),
            (
                Method::DELETE,
                "lambent/admin/roles/r/policies/p",
                "iam:DeleteRolePolicy",
            ),
            (
                Method::GET,
                "lambent/admin/users/a/policies",
                "iam:ListUserPolicies",
            ),
            (Method::GET, "lambent/admin/audit", "lambent:GetAuditLog"),
        ];
        for (method, path, action) in cases {
            let segments: Vec<&str> = path.split('/').collect();
            let got = target(&arns, &method, &segments).map(|t| t.action);
            assert_eq!(got.as_deref(), Some(action), "{method} {path}");
        }
        let segments: Vec<&str> = "lambent/admin/users/a/policies/p".split('/').collect();
        assert_eq!(
            target(&arns, &Method::PUT, &segments).map(|t| t.resource),
            Some("arn:aws:iam::000000000000:user/a".to_string())
        );
        assert!(target(&arns, &Method::PATCH, &["lambent", "admin", "users"]).is_none());
    }
}
