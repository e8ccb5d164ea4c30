//! Who is calling and whether they may: the caller behind a verified access key, IAM-style
//! evaluation of their identity policies with the function's resource policy, the audit
//! log, and a brake on bursts of failed authentication per source address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use lambent_store::iam::{AuditRecord, PrincipalKind, ROOT_USER};
use lambent_store::kinds;
use lambent_types::policy::{self, Context, Decision, Policy, PolicyKind, Principal};

use crate::authz::Target;
use crate::{ApiError, ApiState};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The access key that signed the request.
    pub access_key_id: String,
    /// A user (long-term key) or a role (temporary credentials of a function).
    pub kind: PrincipalKind,
    /// The user's or role's name.
    pub name: String,
    /// The caller's ARN: the user's (`arn:aws:iam::<account>:root` for the account root), or
    /// the role session's (`arn:aws:sts::<account>:assumed-role/<role>/<function>`).
    pub arn: String,
    /// The ARN policies name the caller by: the user's, or the role's for a session.
    pub principal_arn: String,
}

impl Caller {
    /// The account root may do everything, as on AWS.
    pub fn is_root(&self) -> bool {
        self.kind == PrincipalKind::User && self.name == ROOT_USER
    }
}

/// AWS's answer to credentials it does not know.
fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

/// The caller owning a verified access key of `user`.
pub(crate) fn user_caller(state: &ApiState, access_key_id: &str, user: String) -> Caller {
    let arn = crate::admin::principal_arn(&state.arns, PrincipalKind::User, &user);
    Caller {
        access_key_id: access_key_id.to_string(),
        kind: PrincipalKind::User,
        name: user,
        principal_arn: arn.clone(),
        arn,
    }
}

/// The caller behind an execution role's temporary credentials; the role must still exist.
pub(crate) fn session_caller(
    state: &ApiState,
    access_key_id: &str,
    session: &crate::sessions::Session,
) -> Result<Caller, ApiError> {
    let role = state
        .store
        .get_role_by_arn(&session.role_arn)?
        .ok_or_else(invalid_token)?;
    Ok(Caller {
        access_key_id: access_key_id.to_string(),
        kind: PrincipalKind::Role,
        arn: format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            state.arns.account_id, role.name, session.name
        ),
        name: role.name,
        principal_arn: role.arn,
    })
}

/// The condition keys of a request.
fn context(caller: &Caller, peer: SocketAddr, secure: bool, state: &ApiState) -> Context {
    let mut context = Context::new();
    context.set("aws:SourceIp", peer.ip().to_string());
    context.set_bool("aws:SecureTransport", secure);
    context.set("aws:PrincipalArn", caller.principal_arn.clone());
    context.set("aws:PrincipalAccount", state.arns.account_id.clone());
    let kind = match caller.kind {
        PrincipalKind::User if caller.is_root() => "Account",
        PrincipalKind::User => "User",
        PrincipalKind::Role => "AssumedRole",
    };
    context.set("aws:PrincipalType", kind);
    if caller.kind == PrincipalKind::User {
        context.set("aws:username", caller.name.clone());
    }
    context.set("aws:userid", caller.access_key_id.clone());
    context.set("aws:RequestedRegion", state.arns.region.clone());
    context.set(
        "aws:CurrentTime",
        lambent_types::time::iso8601_millis(std::time::SystemTime::now()),
    );
    context
}

/// The resource policy of the function a target names (its qualifier's own policy), as an
/// IAM policy; `None` when the target is not a function or it has none.
fn resource_policy(state: &ApiState, target: &Target) -> Option<Policy> {
    let rest = target.resource.strip_prefix(&state.arns.function_arn(""))?;
    let (name, qualifier) = rest.split_once(':').unwrap_or((rest, ""));
    let doc = state
        .store
        .get_document(kinds::POLICY, name, qualifier)
        .ok()
        .flatten()?;
    let statements = doc.get("Statement").cloned().unwrap_or(Value::Null);
    if statements.as_array().is_none_or(|s| s.is_empty()) {
        return None;
    }
    let document = json!({"Version": "2012-10-17", "Id": "default", "Statement": statements});
    match Policy::parse(&document.to_string(), PolicyKind::Resource) {
        Ok(policy) => Some(policy),
        Err(e) => {
            tracing::warn!(function = %name, "the function's resource policy does not parse: {e}");
            None
        }
    }
}

/// The identity policies attached to a user or role.
fn identity_policies(state: &ApiState, kind: PrincipalKind, name: &str) -> Vec<Policy> {
    let user = name;
    let attached = state.store.list_policies(kind, name).unwrap_or_default();
    attached
        .iter()
        .filter_map(|(name, document)| {
            Policy::parse(document, PolicyKind::Identity)
                .map_err(
                    |e| tracing::warn!(%user, policy = %name, "stored policy does not parse: {e}"),
                )
                .ok()
        })
        .collect()
}

/// Decides whether the caller may do what the target says; a refusal is AWS's 403
/// `AccessDeniedException`.
pub(crate) fn authorize(
    state: &ApiState,
    caller: &Caller,
    target: &Target,
    peer: SocketAddr,
    secure: bool,
) -> Result<(), ApiError> {
    authorize_with(state, caller, target, peer, secure, &[])
}

/// [`authorize`] with more condition keys (e.g. `lambda:FunctionUrlAuthType`).
pub(crate) fn authorize_with(
    state: &ApiState,
    caller: &Caller,
    target: &Target,
    peer: SocketAddr,
    secure: bool,
    extra: &[(&str, &str)],
) -> Result<(), ApiError> {
    if caller.is_root() {
        return Ok(());
    }
    let identity = identity_policies(state, caller.kind, &caller.name);
    let resource = resource_policy(state, target);
    let principal = Principal::new(caller.arn.clone(), state.arns.account_id.clone());
    let mut context = context(caller, peer, secure, state);
    for (key, value) in extra {
        context.set(key, *value);
    }
    let request = policy::Request {
        principal: &principal,
        action: &target.action,
        resource: &target.resource,
        context: &context,
    };
    let identity_refs: Vec<&Policy> = identity.iter().collect();
    match policy::evaluate(&identity_refs, resource.as_ref(), &request) {
        Decision::Allow => Ok(()),
        decision => {
            let why = if decision == Decision::ExplicitDeny {
                let in_identity = identity
                    .iter()
                    .any(|p| p.decide(&request) == Some(policy::Effect::Deny));
                if in_identity {
                    "with an explicit deny in an identity-based policy".to_string()
                } else {
                    "with an explicit deny in a resource-based policy".to_string()
                }
            } else {
                format!(
                    "because no identity-based policy allows the {} action",
                    target.action
                )
            };
            Err(ApiError::access_denied(format!(
                "User: {} is not authorized to perform: {} on resource: {} {why}",
                caller.arn, target.action, target.resource
            )))
        }
    }
}

/// Whether the target's resource policy allows an anonymous caller (a statement for
/// principal `*`), with the given extra condition keys: public function URLs.
pub(crate) fn public_allows(
    state: &ApiState,
    target: &Target,
    peer: SocketAddr,
    extra: &[(&str, &str)],
) -> bool {
    let Some(resource) = resource_policy(state, target) else {
        return false;
    };
    let principal = Principal::new("anonymous", "");
    let mut context = Context::new();
    context.set("aws:SourceIp", peer.ip().to_string());
    context.set_bool("aws:SecureTransport", false);
    context.set("aws:RequestedRegion", state.arns.region.clone());
    for (key, value) in extra {
        context.set(key, *value);
    }
    let request = policy::Request {
        principal: &principal,
        action: &target.action,
        resource: &target.resource,
        context: &context,
    };
    policy::evaluate(&[], Some(&resource), &request) == Decision::Allow
}

/// Audit entries kept; older ones are pruned now and then.
const AUDIT_KEPT: usize = 100_000;
static AUDIT_WRITES: AtomicU64 = AtomicU64::new(0);

/// One audit entry to record.
pub(crate) struct AuditEntry<'a> {
    pub caller: Option<&'a Caller>,
    pub access_key_id: &'a str,
    pub target: Option<&'a Target>,
    pub decision: &'a str,
    pub peer: SocketAddr,
    pub status: StatusCode,
    pub error_code: &'a str,
    pub request_id: &'a str,
}

/// Records one entry (failures to write are logged, never fail the request).
pub(crate) fn audit(state: &ApiState, entry: &AuditEntry<'_>) {
    let record = AuditRecord {
        id: 0,
        at_ms: lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64,
        principal: entry.caller.map(|c| c.arn.clone()).unwrap_or_default(),
        access_key_id: entry.access_key_id.to_string(),
        action: entry.target.map(|t| t.action.clone()).unwrap_or_default(),
        resource: entry.target.map(|t| t.resource.clone()).unwrap_or_default(),
        decision: entry.decision.to_string(),
        source_ip: entry.peer.ip().to_string(),
        status: entry.status.as_u16(),
        error_code: entry.error_code.to_string(),
        request_id: entry.request_id.to_string(),
    };
    if let Err(e) = state.store.append_audit(&record) {
        tracing::error!("cannot write the audit log: {e}");
    }
    if AUDIT_WRITES.fetch_add(1, Ordering::Relaxed) % 1000 == 999
        && let Err(e) = state.store.prune_audit(AUDIT_KEPT)
    {
        tracing::warn!("cannot prune the audit log: {e}");
    }
}

/// Failed authentications allowed per source address in one window.
const FAILED_AUTH_BURST: u32 = 20;
/// The window of [`FAILED_AUTH_BURST`].
const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(10);

static FAILED_AUTH: Mutex<Option<HashMap<IpAddr, (Instant, u32)>>> = Mutex::new(None);

/// Counts a failed authentication from a source; past the burst, the answer becomes 429
/// instead of 403 so a client hammering with bad credentials is told to slow down. Valid
/// requests from the same address are never refused by this.
pub(crate) fn failed_auth(peer: SocketAddr, error: ApiError) -> ApiError {
    let mut table = FAILED_AUTH.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(HashMap::new);
    if table.len() > 10_000 {
        table.retain(|_, (since, _)| since.elapsed() < FAILED_AUTH_WINDOW);
    }
    let entry = table.entry(peer.ip()).or_insert((Instant::now(), 0));
    if entry.0.elapsed() >= FAILED_AUTH_WINDOW {
        *entry = (Instant::now(), 0);
    }
    entry.1 += 1;
    if entry.1 <= FAILED_AUTH_BURST {
        return error;
    }
    let wait = FAILED_AUTH_WINDOW
        .saturating_sub(entry.0.elapsed())
        .as_secs()
        + 1;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequestsException",
        format!(
            "Too many failed authentication attempts from {}; retry in {wait} s ({})",
            peer.ip(),
            error.message
        ),
    )
}
