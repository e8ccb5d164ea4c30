//! The IAM policy language: parsing, validating and evaluating identity and resource
//! policies the way AWS does. Pure; no I/O.
//!
//! Semantics, following AWS's "Policy evaluation logic", "IAM JSON policy elements" and
//! "Condition operators" documentation:
//!
//! - Size is counted in characters with all whitespace removed: at most
//!   [`IDENTITY_POLICY_SIZE_LIMIT`] for identity policies and
//!   [`RESOURCE_POLICY_SIZE_LIMIT`] for resource policies. There is no separate limit on the
//!   number of statements; the size limit bounds it.
//! - Actions match case-insensitively, resources case-sensitively; both support `*` (any run
//!   of characters, including none, `:` and `/`) and `?` (exactly one character).
//! - Policy variables such as `${aws:username}` are not substituted: they are matched
//!   literally, like any other characters.
//! - `NotAction` / `NotResource` / `NotPrincipal` make a statement apply to everything the
//!   list does *not* match.
//! - Principals (resource policies only): `"*"` and `{"AWS": "*"}` match every caller. A
//!   12-digit account id or `arn:<partition>:iam::<account>:root` matches every IAM identity
//!   (any principal whose ARN starts with `arn:`) of that account. A user, role or session ARN
//!   matches that exact ARN; a role ARN also matches the role's assumed-role sessions
//!   (`arn:<partition>:sts::<account>:assumed-role/<role-name>/<session>`). A
//!   `{"Service": "<name>"}` entry matches a principal whose ARN is that service name (compared
//!   case-insensitively), e.g. `s3.amazonaws.com`. Wildcards inside principal ARNs are rejected,
//!   as IAM does. `NotPrincipal` is the plain inverse of the same matching.
//! - Conditions: operators AND together, keys within one operator AND together, the values
//!   listed for one key OR together; a negated operator (`StringNotEquals`, `NotIpAddress`, ...)
//!   holds when the request value matches *none* of the listed values.
//! - A key missing from the request context (or present with no values) makes a plain
//!   operator false, and a negated operator true, exactly as AWS documents ("If the policy
//!   condition requires that the key is not matched, such as StringNotLike or ArnNotLike, and
//!   the right key is not present, the condition is true"). With the `IfExists` suffix a
//!   missing key makes the condition true. `Null` tests presence itself. With
//!   `ForAllValues:` a missing key is true (vacuously, as AWS documents); with `ForAnyValue:`
//!   it is false.
//! - Set qualifiers: `ForAnyValue:` holds if at least one request value satisfies the
//!   operator, `ForAllValues:` if every request value does; for a negated operator "satisfies"
//!   means "matches none of the policy values". Without a qualifier a multi-valued key behaves
//!   like `ForAnyValue:` for plain operators and as "no request value matches" for negated ones.
//! - `ArnEquals` and `ArnLike` are the same operator (AWS lets both take wildcards): when both
//!   sides have six `:`-separated parts they are matched part by part, otherwise as one
//!   wildcard string.
//! - `Bool` compares `true`/`false` case-insensitively; `Numeric*` compare as decimal numbers;
//!   `Date*` accept RFC 3339 timestamps, `YYYY-MM-DD` dates and epoch seconds; `IpAddress`
//!   takes IPv4 or IPv6 addresses or CIDR blocks (host bits are ignored); `BinaryEquals`
//!   compares the base64 text exactly. A request value that does not parse (e.g. `abc` for
//!   `NumericEquals`) matches no policy value, so the negated operator holds for it. `Null`
//!   takes neither `IfExists` nor a set qualifier. Policy values that do not parse (bad CIDR,
//!   number or date) are rejected when the policy is parsed.
//! - `Sid` is optional; identity-policy Sids must be alphanumeric (as IAM requires), resource
//!   policy Sids may be any string (Lambda's are `[a-zA-Z0-9-_.]+`); given Sids must be unique.
//!   Condition keys need a vendor prefix (`aws:`, `lambda:`, ...). A key repeated inside one
//!   JSON object keeps its last value.
//! - [`evaluate`] is AWS's single-account logic: an explicit `Deny` anywhere wins, then an
//!   `Allow` from any identity policy or from the resource policy, else an implicit deny.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::{Map, Value};

/// Largest identity policy, in characters excluding whitespace.
pub const IDENTITY_POLICY_SIZE_LIMIT: usize = 6144;
/// Largest resource policy, in characters excluding whitespace.
pub const RESOURCE_POLICY_SIZE_LIMIT: usize = 20480;

const SYNTAX: &str = "Syntax errors in policy.";
const NEED_VENDOR: &str =
    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";

/// Which kind of policy a document is (limits and the Principal element differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Attached to a user or role; must not name a principal.
    Identity,
    /// Attached to a resource (e.g. a function); every statement names a principal.
    Resource,
}

impl PolicyKind {
    /// The size limit for this kind of policy, in characters excluding whitespace.
    pub fn size_limit(self) -> usize {
        match self {
            Self::Identity => IDENTITY_POLICY_SIZE_LIMIT,
            Self::Resource => RESOURCE_POLICY_SIZE_LIMIT,
        }
    }
}

/// The policy language version named by the `Version` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyVersion {
    /// `2008-10-17`, the default when `Version` is absent.
    V2008_10_17,
    /// `2012-10-17`, the current version.
    V2012_10_17,
}

/// What a statement does when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The statement grants the request.
    Allow,
    /// The statement refuses the request, overriding any grant.
    Deny,
}

/// The outcome of evaluating every policy that applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Some policy allows the request and none denies it.
    Allow,
    /// A statement explicitly denies the request.
    ExplicitDeny,
    /// No statement allows the request.
    ImplicitDeny,
}

/// A policy document that breaks IAM's rules; `Display` is the message AWS would return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document breaks the grammar (AWS's `MalformedPolicyDocument`).
    #[error("{0}")]
    Malformed(String),
    /// The document is longer than its kind allows (whitespace excluded).
    #[error("Policy document length breaks size limit")]
    TooLarge {
        /// The document's length in characters, whitespace excluded.
        size: usize,
        /// The limit for the policy's kind.
        limit: usize,
    },
    /// A `Condition` block names an operator IAM does not know.
    #[error("Unknown condition operator: {0}")]
    UnknownConditionOperator(String),
}

impl PolicyError {
    fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed(message.into())
    }

    fn syntax() -> Self {
        Self::Malformed(SYNTAX.to_string())
    }
}

/// The caller: its ARN (user, role, or assumed-role session ARN) and account.
///
/// A service principal is represented by its service name as the ARN, e.g.
/// `s3.amazonaws.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The caller's ARN, or a service principal's name.
    pub arn: String,
    /// The caller's 12-digit account id.
    pub account: String,
}

impl Principal {
    /// Builds a principal from its ARN and account.
    pub fn new(arn: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            arn: arn.into(),
            account: account.into(),
        }
    }
}

/// Condition keys and their values (key names compared case-insensitively, as in IAM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    values: HashMap<String, Vec<String>>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key's values, replacing any it had. An empty list counts as a missing key.
    pub fn insert(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(key.to_lowercase(), values);
    }

    /// Sets a single-valued key.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.insert(key, vec![value.into()]);
    }

    /// Sets a boolean key to `"true"` or `"false"`.
    pub fn set_bool(&mut self, key: &str, value: bool) {
        self.set(key, if value { "true" } else { "false" });
    }

    /// A key's values, if it is present.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(&key.to_lowercase()).map(Vec::as_slice)
    }

    fn present(&self, lowered_key: &str) -> Option<&[String]> {
        self.values
            .get(lowered_key)
            .map(Vec::as_slice)
            .filter(|values| !values.is_empty())
    }
}

/// The request being authorized.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who is asking.
    pub principal: &'a Principal,
    /// The action, e.g. `lambda:InvokeFunction`.
    pub action: &'a str,
    /// The resource ARN, e.g. `arn:aws:lambda:us-east-1:000000000000:function:f:live`.
    pub resource: &'a str,
    /// The condition keys of the request.
    pub context: &'a Context,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    kind: PolicyKind,
    version: PolicyVersion,
    id: Option<String>,
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    actions: Listed<String>,
    resources: Listed<String>,
    principals: Option<Listed<PrincipalPattern>>,
    conditions: Vec<Clause>,
}

/// A list from an element or its `Not` form.
#[derive(Debug, Clone, PartialEq)]
struct Listed<T> {
    negated: bool,
    items: Vec<T>,
}

impl<T> Listed<T> {
    fn applies(&self, matches: impl Fn(&T) -> bool) -> bool {
        self.items.iter().any(matches) != self.negated
    }
}

#[derive(Debug, Clone, PartialEq)]
enum PrincipalPattern {
    Any,
    Account(String),
    Arn(String),
    Service(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    operator: Operator,
    key: String,
    test: Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Operator {
    set: SetQualifier,
    negated: bool,
    if_exists: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

impl Compare {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Self::Equals => request == policy,
            Self::LessThan => request < policy,
            Self::LessThanEquals => request <= policy,
            Self::GreaterThan => request > policy,
            Self::GreaterThanEquals => request >= policy,
        }
    }
}

/// The positive form of an operator with its policy values, parsed ahead of time.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Exact(Vec<String>),
    IgnoreCase(Vec<String>),
    Like(Vec<String>),
    Arn(Vec<String>),
    Ip(Vec<Cidr>),
    Bool(Vec<String>),
    Numeric(Compare, Vec<f64>),
    Date(Compare, Vec<i128>),
    Null(Vec<bool>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    String,
    StringIgnoreCase,
    StringLike,
    Arn,
    Ip,
    Bool,
    Numeric(Compare),
    Date(Compare),
    Binary,
    Null,
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(raw: &str) -> Option<Self> {
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|n| *n <= max)?
            }
            Some(_) => return None,
        };
        Some(Self { network, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(document: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let size = document.chars().filter(|c| !c.is_whitespace()).count();
        let limit = kind.size_limit();
        if size > limit {
            return Err(PolicyError::TooLarge { size, limit });
        }
        let value: Value = serde_json::from_str(document).map_err(|_| PolicyError::syntax())?;
        let Value::Object(top) = value else {
            return Err(PolicyError::syntax());
        };
        let mut version = PolicyVersion::V2008_10_17;
        let mut id = None;
        let mut statements = None;
        for (name, value) in &top {
            match name.as_str() {
                "Version" => version = parse_version(value)?,
                "Id" => id = Some(string(value)?.to_string()),
                "Statement" => statements = Some(value),
                _ => return Err(PolicyError::syntax()),
            }
        }
        let statements = match statements {
            None => return Err(PolicyError::malformed("Missing required field Statement")),
            Some(Value::Object(one)) => vec![parse_statement(one, kind)?],
            Some(Value::Array(many)) if !many.is_empty() => many
                .iter()
                .map(|s| match s {
                    Value::Object(s) => parse_statement(s, kind),
                    _ => Err(PolicyError::syntax()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(PolicyError::syntax()),
        };
        let mut sids = HashSet::new();
        for sid in statements.iter().filter_map(|s| s.sid.as_deref()) {
            if !sids.insert(sid) {
                return Err(PolicyError::malformed(
                    "Statement IDs (SID) in a single policy must be unique.",
                ));
            }
        }
        Ok(Policy {
            kind,
            version,
            id,
            statements,
        })
    }

    /// Which kind of policy this is.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// The language version the document declared (or the 2008 default).
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The document's `Id`, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// How many statements the policy has.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }

    /// The statements' `Sid`s, in document order, for the statements that have one.
    pub fn sids(&self) -> impl Iterator<Item = &str> {
        self.statements.iter().filter_map(|s| s.sid.as_deref())
    }

    /// What this policy says about a request: `Some(Effect::Deny)` if any matching Deny
    /// statement, else `Some(Effect::Allow)` if any matching Allow, else `None`.
    pub fn decide(&self, request: &Request<'_>) -> Option<Effect> {
        let action = request.action.to_ascii_lowercase();
        let mut allowed = false;
        for statement in &self.statements {
            if statement.applies(&action, request) {
                match statement.effect {
                    Effect::Deny => return Some(Effect::Deny),
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed.then_some(Effect::Allow)
    }
}

/// AWS's evaluation for one account: an explicit Deny in any policy wins; else an Allow from
/// any identity policy or from the resource policy allows; else implicit deny.
pub fn evaluate(
    identity: &[&Policy],
    resource: Option<&Policy>,
    request: &Request<'_>,
) -> Decision {
    let mut allowed = false;
    for policy in identity.iter().copied().chain(resource) {
        match policy.decide(request) {
            Some(Effect::Deny) => return Decision::ExplicitDeny,
            Some(Effect::Allow) => allowed = true,
            None => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

impl Statement {
    fn applies(&self, lowered_action: &str, request: &Request<'_>) -> bool {
        self.actions
            .applies(|pattern| wildcard_match(pattern, lowered_action))
            && self
                .resources
                .applies(|pattern| wildcard_match(pattern, request.resource))
            && self.principals.as_ref().is_none_or(|principals| {
                principals.applies(|pattern| pattern.matches(request.principal))
            })
            && self
                .conditions
                .iter()
                .all(|clause| clause.holds(request.context))
    }
}

impl PrincipalPattern {
    fn matches(&self, principal: &Principal) -> bool {
        match self {
            Self::Any => true,
            Self::Account(account) => {
                principal.arn.starts_with("arn:") && principal.account == *account
            }
            Self::Arn(arn) => principal.arn == *arn || is_session_of_role(&principal.arn, arn),
            Self::Service(service) => principal.arn.eq_ignore_ascii_case(service),
        }
    }
}

/// Whether `session` is `arn:P:sts::A:assumed-role/NAME/SESSION` for `role` =
/// `arn:P:iam::A:role/[PATH/]NAME`.
fn is_session_of_role(session: &str, role: &str) -> bool {
    let (Some(s), Some(r)) = (split_arn(session), split_arn(role)) else {
        return false;
    };
    let Some(rest) = s.resource.strip_prefix("assumed-role/") else {
        return false;
    };
    let Some((session_role, session_name)) = rest.split_once('/') else {
        return false;
    };
    let Some(role_path) = r.resource.strip_prefix("role/") else {
        return false;
    };
    let role_name = role_path.rsplit('/').next().unwrap_or(role_path);
    s.service == "sts"
        && r.service == "iam"
        && s.partition == r.partition
        && s.account == r.account
        && !session_name.is_empty()
        && session_role == role_name
}

struct ArnParts<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn split_arn(arn: &str) -> Option<ArnParts<'_>> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    Some(ArnParts {
        partition: parts.next()?,
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    })
}

impl Clause {
    fn holds(&self, context: &Context) -> bool {
        let values = context.present(&self.key);
        if let Test::Null(expected) = &self.test {
            return expected.iter().any(|absent| *absent == values.is_none());
        }
        let Some(values) = values else {
            if self.operator.if_exists {
                return true;
            }
            return match self.operator.set {
                SetQualifier::Single => self.operator.negated,
                SetQualifier::ForAnyValue => false,
                SetQualifier::ForAllValues => true,
            };
        };
        let negated = self.operator.negated;
        let satisfies = |value: &String| self.test.matches(value) != negated;
        match self.operator.set {
            SetQualifier::Single => values.iter().any(|v| self.test.matches(v)) != negated,
            SetQualifier::ForAnyValue => values.iter().any(satisfies),
            SetQualifier::ForAllValues => values.iter().all(satisfies),
        }
    }
}

impl Test {
    /// Whether one request value matches any of the policy values (the positive form).
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => expected.iter().any(|e| e == value),
            Self::IgnoreCase(expected) => {
                let value = value.to_lowercase();
                expected.contains(&value)
            }
            Self::Like(patterns) => patterns.iter().any(|p| wildcard_match(p, value)),
            Self::Arn(patterns) => patterns.iter().any(|p| arn_like(p, value)),
            Self::Ip(networks) => value
                .parse::<IpAddr>()
                .is_ok_and(|address| networks.iter().any(|n| n.contains(address))),
            Self::Bool(expected) => {
                let value = value.to_ascii_lowercase();
                expected.contains(&value)
            }
            Self::Numeric(compare, expected) => {
                parse_number(value).is_some_and(|v| expected.iter().any(|e| compare.holds(v, *e)))
            }
            Self::Date(compare, expected) => {
                parse_date(value).is_some_and(|v| expected.iter().any(|e| compare.holds(v, *e)))
            }
            Self::Null(_) => false,
        }
    }
}

/// `*` matches any run of characters (including none), `?` exactly one; everything else is
/// literal. Linear-space backtracking over the last `*`, so never exponential.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                resume = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((after_star, from)) => {
                    p = after_star;
                    t = from + 1;
                    resume = Some((after_star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn arn_like(pattern: &str, value: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.splitn(6, ':').collect();
    let value_parts: Vec<&str> = value.splitn(6, ':').collect();
    if pattern_parts.len() == 6 && value_parts.len() == 6 {
        pattern_parts
            .iter()
            .zip(&value_parts)
            .all(|(p, v)| wildcard_match(p, v))
    } else {
        wildcard_match(pattern, value)
    }
}

/// A decimal number; rejects the `inf`/`NaN` spellings `f64` would otherwise accept.
fn parse_number(raw: &str) -> Option<f64> {
    let decimal = raw
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !decimal {
        return None;
    }
    raw.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_date(raw: &str) -> Option<i128> {
    use ::time::format_description::well_known::Rfc3339;
    if !raw.is_empty() && raw.len() <= 18 && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw
            .parse::<i64>()
            .ok()
            .map(|s| i128::from(s) * 1_000_000_000);
    }
    if let Ok(at) = ::time::OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(at.unix_timestamp_nanos());
    }
    let day = ::time::macros::format_description!("[year]-[month]-[day]");
    ::time::Date::parse(raw, day)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
}

fn string(value: &Value) -> Result<&str, PolicyError> {
    value.as_str().ok_or_else(PolicyError::syntax)
}

fn parse_version(value: &Value) -> Result<PolicyVersion, PolicyError> {
    match value.as_str() {
        Some("2012-10-17") => Ok(PolicyVersion::V2012_10_17),
        Some("2008-10-17") => Ok(PolicyVersion::V2008_10_17),
        _ => Err(PolicyError::malformed("The policy failed legacy parsing")),
    }
}

/// A string or a non-empty array of strings; `empty` is the message for an empty array.
fn string_list<'a>(value: &'a Value, empty: &str) -> Result<Vec<&'a str>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if items.is_empty() => Err(PolicyError::malformed(empty)),
        Value::Array(items) => items.iter().map(string).collect(),
        _ => Err(PolicyError::syntax()),
    }
}

/// Picks exactly one of an element and its `Not` form.
fn one_of<'a>(
    statement: &'a Map<String, Value>,
    name: &str,
    not_name: &str,
) -> Result<Option<(bool, &'a Value)>, PolicyError> {
    match (statement.get(name), statement.get(not_name)) {
        (Some(_), Some(_)) => Err(PolicyError::malformed(format!(
            "Statement cannot contain both {name} and {not_name}."
        ))),
        (Some(v), None) => Ok(Some((false, v))),
        (None, Some(v)) => Ok(Some((true, v))),
        (None, None) => Ok(None),
    }
}

fn parse_statement(
    statement: &Map<String, Value>,
    kind: PolicyKind,
) -> Result<Statement, PolicyError> {
    const KNOWN: [&str; 9] = [
        "Sid",
        "Effect",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Principal",
        "NotPrincipal",
        "Condition",
    ];
    if statement.keys().any(|k| !KNOWN.contains(&k.as_str())) {
        return Err(PolicyError::syntax());
    }
    let sid = statement
        .get("Sid")
        .map(|v| string(v).map(str::to_string))
        .transpose()?;
    if let Some(sid) = &sid
        && kind == PolicyKind::Identity
        && !sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(PolicyError::malformed(
            "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the \
             regular expression [0-9A-Za-z]*",
        ));
    }
    let effect = match statement.get("Effect") {
        None => return Err(PolicyError::malformed("Missing required field Effect")),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(Value::String(e)) => {
            return Err(PolicyError::malformed(format!("Invalid effect: {e}")));
        }
        Some(_) => return Err(PolicyError::syntax()),
    };

    const NO_ACTIONS: &str = "Policy statement must contain actions.";
    let (negated, value) = one_of(statement, "Action", "NotAction")?
        .ok_or_else(|| PolicyError::malformed(NO_ACTIONS))?;
    let actions = Listed {
        negated,
        items: string_list(value, NO_ACTIONS)?
            .into_iter()
            .map(parse_action)
            .collect::<Result<_, _>>()?,
    };

    const NO_RESOURCES: &str = "Policy statement must contain resources.";
    let (negated, value) = one_of(statement, "Resource", "NotResource")?
        .ok_or_else(|| PolicyError::malformed(NO_RESOURCES))?;
    let resources = Listed {
        negated,
        items: string_list(value, NO_RESOURCES)?
            .into_iter()
            .map(parse_resource)
            .collect::<Result<_, _>>()?,
    };

    let principals = match (one_of(statement, "Principal", "NotPrincipal")?, kind) {
        (Some((negated, _)), PolicyKind::Identity) => {
            let field = if negated { "NotPrincipal" } else { "Principal" };
            return Err(PolicyError::malformed(format!(
                "Has prohibited field {field}"
            )));
        }
        (None, PolicyKind::Resource) => {
            return Err(PolicyError::malformed("Missing required field Principal"));
        }
        (None, PolicyKind::Identity) => None,
        (Some((negated, value)), PolicyKind::Resource) => Some(Listed {
            negated,
            items: parse_principal(value)?,
        }),
    };

    let conditions = match statement.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(block)) => parse_conditions(block)?,
        Some(_) => return Err(PolicyError::syntax()),
    };

    Ok(Statement {
        sid,
        effect,
        actions,
        resources,
        principals,
        conditions,
    })
}

fn valid_vendor(vendor: &str) -> bool {
    !vendor.is_empty()
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Validates an action pattern and returns it lowercased for case-insensitive matching.
fn parse_action(raw: &str) -> Result<String, PolicyError> {
    if raw == "*" {
        return Ok(raw.to_string());
    }
    let Some((vendor, name)) = raw.split_once(':') else {
        return Err(PolicyError::malformed(NEED_VENDOR));
    };
    if name.contains(':') {
        return Err(PolicyError::malformed(
            "Actions/Condition can contain only one colon.",
        ));
    }
    if vendor.contains(['*', '?']) {
        return Err(PolicyError::malformed(
            "Action vendors must not contain wildcards.",
        ));
    }
    if !valid_vendor(vendor) {
        return Err(PolicyError::malformed(format!(
            "Vendor {vendor} is not valid"
        )));
    }
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PolicyError::malformed(format!("Invalid Action: {raw}")));
    }
    Ok(raw.to_ascii_lowercase())
}

/// `*`, or an ARN pattern: `arn:` followed by at least five more `:`-separated parts, or a
/// shorter pattern that uses a wildcard (such as `arn:aws:lambda:*`).
fn parse_resource(raw: &str) -> Result<String, PolicyError> {
    let arn_like = raw.starts_with("arn:")
        && (raw.matches(':').count() >= 5 || raw.contains(['*', '?']))
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
    if raw == "*" || arn_like {
        Ok(raw.to_string())
    } else {
        Err(PolicyError::malformed(format!(
            "Resource {raw} must be in ARN format or \"*\"."
        )))
    }
}

fn parse_principal(value: &Value) -> Result<Vec<PrincipalPattern>, PolicyError> {
    let map = match value {
        Value::String(s) if s == "*" => return Ok(vec![PrincipalPattern::Any]),
        Value::String(s) => {
            return Err(PolicyError::malformed(format!(
                "Invalid principal in policy: \"{s}\""
            )));
        }
        Value::Object(map) if !map.is_empty() => map,
        _ => return Err(PolicyError::syntax()),
    };
    let mut patterns = Vec::new();
    for (kind, entries) in map {
        let empty = format!("Invalid principal in policy: \"{kind}\"");
        for entry in string_list(entries, &empty)? {
            let pattern = match kind.as_str() {
                "AWS" => aws_principal(entry),
                "Service" => service_principal(entry),
                _ => None,
            };
            let invalid = || {
                let label = if kind == "Service" {
                    "SERVICE"
                } else {
                    kind.as_str()
                };
                PolicyError::malformed(format!(
                    "Invalid principal in policy: \"{label}\":\"{entry}\""
                ))
            };
            patterns.push(pattern.ok_or_else(invalid)?);
        }
    }
    Ok(patterns)
}

fn is_account_id(raw: &str) -> bool {
    raw.len() == 12 && raw.bytes().all(|b| b.is_ascii_digit())
}

fn aws_principal(raw: &str) -> Option<PrincipalPattern> {
    if raw == "*" {
        return Some(PrincipalPattern::Any);
    }
    if is_account_id(raw) {
        return Some(PrincipalPattern::Account(raw.to_string()));
    }
    let arn = split_arn(raw)?;
    let valid = valid_vendor(arn.partition)
        && matches!(arn.service, "iam" | "sts")
        && arn.region.is_empty()
        && is_account_id(arn.account)
        && !arn.resource.is_empty()
        && !arn
            .resource
            .chars()
            .any(|c| matches!(c, '*' | '?') || c.is_whitespace() || c.is_control());
    if !valid {
        None
    } else if arn.resource == "root" && arn.service == "iam" {
        Some(PrincipalPattern::Account(arn.account.to_string()))
    } else {
        Some(PrincipalPattern::Arn(raw.to_string()))
    }
}

/// A DNS-style service name such as `s3.amazonaws.com` or `alexa-appkit.amazon.com`.
fn service_principal(raw: &str) -> Option<PrincipalPattern> {
    let labels_ok = raw.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    (raw.contains('.') && labels_ok).then(|| PrincipalPattern::Service(raw.to_string()))
}

fn parse_conditions(block: &Map<String, Value>) -> Result<Vec<Clause>, PolicyError> {
    let mut clauses = Vec::new();
    for (name, keys) in block {
        let (operator, family) = parse_operator(name)?;
        let Value::Object(keys) = keys else {
            return Err(PolicyError::syntax());
        };
        for (key, values) in keys {
            match key.split_once(':') {
                Some((vendor, rest)) if valid_vendor(vendor) && !rest.is_empty() => {}
                _ => return Err(PolicyError::malformed(NEED_VENDOR)),
            }
            let values = condition_values(values)?;
            let test = build_test(family, name, values)?;
            clauses.push(Clause {
                operator,
                key: key.to_lowercase(),
                test,
            });
        }
    }
    Ok(clauses)
}

fn parse_operator(name: &str) -> Result<(Operator, Family), PolicyError> {
    let unknown = || PolicyError::UnknownConditionOperator(name.to_string());
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::Single, name)
    };
    let (if_exists, base) = match rest.strip_suffix("IfExists") {
        Some(base) => (true, base),
        None => (false, rest),
    };
    let (family, negated) = match base {
        "StringEquals" => (Family::String, false),
        "StringNotEquals" => (Family::String, true),
        "StringEqualsIgnoreCase" => (Family::StringIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Family::StringIgnoreCase, true),
        "StringLike" => (Family::StringLike, false),
        "StringNotLike" => (Family::StringLike, true),
        "ArnEquals" | "ArnLike" => (Family::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (Family::Arn, true),
        "IpAddress" => (Family::Ip, false),
        "NotIpAddress" => (Family::Ip, true),
        "Bool" => (Family::Bool, false),
        "NumericEquals" => (Family::Numeric(Compare::Equals), false),
        "NumericNotEquals" => (Family::Numeric(Compare::Equals), true),
        "NumericLessThan" => (Family::Numeric(Compare::LessThan), false),
        "NumericLessThanEquals" => (Family::Numeric(Compare::LessThanEquals), false),
        "NumericGreaterThan" => (Family::Numeric(Compare::GreaterThan), false),
        "NumericGreaterThanEquals" => (Family::Numeric(Compare::GreaterThanEquals), false),
        "DateEquals" => (Family::Date(Compare::Equals), false),
        "DateNotEquals" => (Family::Date(Compare::Equals), true),
        "DateLessThan" => (Family::Date(Compare::LessThan), false),
        "DateLessThanEquals" => (Family::Date(Compare::LessThanEquals), false),
        "DateGreaterThan" => (Family::Date(Compare::GreaterThan), false),
        "DateGreaterThanEquals" => (Family::Date(Compare::GreaterThanEquals), false),
        "BinaryEquals" => (Family::Binary, false),
        "Null" if !if_exists && set == SetQualifier::Single => (Family::Null, false),
        _ => return Err(unknown()),
    };
    Ok((
        Operator {
            set,
            negated,
            if_exists,
        },
        family,
    ))
}

/// A condition's values: a string, number or boolean, or a non-empty array of them.
fn condition_values(value: &Value) -> Result<Vec<String>, PolicyError> {
    fn scalar(value: &Value) -> Result<String, PolicyError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(PolicyError::syntax()),
        }
    }
    match value {
        Value::Array(items) if items.is_empty() => Err(PolicyError::syntax()),
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn build_test(family: Family, operator: &str, values: Vec<String>) -> Result<Test, PolicyError> {
    fn each<T>(
        values: Vec<String>,
        operator: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, PolicyError> {
        values
            .into_iter()
            .map(|v| {
                parse(&v).ok_or_else(|| {
                    PolicyError::malformed(format!("Invalid Condition value for {operator}: {v}"))
                })
            })
            .collect()
    }
    Ok(match family {
        Family::String | Family::Binary => Test::Exact(values),
        Family::StringIgnoreCase => {
            Test::IgnoreCase(values.iter().map(|v| v.to_lowercase()).collect())
        }
        Family::StringLike => Test::Like(values),
        Family::Arn => Test::Arn(values),
        Family::Ip => Test::Ip(each(values, operator, Cidr::parse)?),
        Family::Bool => Test::Bool(values.iter().map(|v| v.to_ascii_lowercase()).collect()),
        Family::Numeric(compare) => Test::Numeric(compare, each(values, operator, parse_number)?),
        Family::Date(compare) => Test::Date(compare, each(values, operator, parse_date)?),
        Family::Null => Test::Null(each(values, operator, |v| {
            if v.eq_ignore_ascii_case("true") {
                Some(true)
            } else if v.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "000000000000";
    const FUNCTION: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";
    const ALIAS: &str = "arn:aws:lambda:us-east-1:000000000000:function:f:live";

    fn alice() -> Principal {
        Principal::new("arn:aws:iam::000000000000:user/alice", ACCOUNT)
    }

    fn identity(document: &str) -> Policy {
        Policy::parse(document, PolicyKind::Identity).expect("identity policy parses")
    }

    fn resource(document: &str) -> Policy {
        Policy::parse(document, PolicyKind::Resource).expect("resource policy parses")
    }

    fn identity_error(document: &str) -> String {
        Policy::parse(document, PolicyKind::Identity)
            .expect_err("identity policy is rejected")
            .to_string()
    }

    fn resource_error(document: &str) -> String {
        Policy::parse(document, PolicyKind::Resource)
            .expect_err("resource policy is rejected")
            .to_string()
    }

    /// A 2012 policy whose statements are the given JSON text.
    fn doc(statements: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
    }

    fn request<'a>(
        principal: &'a Principal,
        action: &'a str,
        resource: &'a str,
        context: &'a Context,
    ) -> Request<'a> {
        Request {
            principal,
            action,
            resource,
            context,
        }
    }

    fn decide(policy: &Policy, action: &str, resource: &str) -> Option<Effect> {
        let principal = alice();
        let context = Context::new();
        policy.decide(&request(&principal, action, resource, &context))
    }

    fn decide_as(policy: &Policy, principal: &Principal) -> Option<Effect> {
        let context = Context::new();
        policy.decide(&request(
            principal,
            "lambda:InvokeFunction",
            FUNCTION,
            &context,
        ))
    }

    /// Whether an Allow statement with this Condition block applies under `context`.
    fn holds(condition: &str, context: &Context) -> bool {
        let policy = identity(&doc(&format!(
            r#"{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}"#
        )));
        let principal = alice();
        policy.decide(&request(
            &principal,
            "lambda:InvokeFunction",
            FUNCTION,
            context,
        )) == Some(Effect::Allow)
    }

    fn ctx(pairs: &[(&str, &[&str])]) -> Context {
        let mut context = Context::new();
        for (key, values) in pairs {
            context.insert(key, values.iter().map(|v| v.to_string()).collect());
        }
        context
    }

    fn condition_error(condition: &str) -> String {
        identity_error(&doc(&format!(
            r#"{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}"#
        )))
    }

    const ALLOW_ALL: &str = r#"{"Effect":"Allow","Action":"*","Resource":"*"}"#;

    // ---- document structure ----------------------------------------------------------

    #[test]
    fn version_is_optional_and_limited_to_two_values() {
        assert_eq!(
            identity(&doc(ALLOW_ALL)).version(),
            PolicyVersion::V2012_10_17
        );
        let old = format!(r#"{{"Version":"2008-10-17","Statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity(&old).version(), PolicyVersion::V2008_10_17);
        let absent = format!(r#"{{"Statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity(&absent).version(), PolicyVersion::V2008_10_17);
        for bad in [r#""2013-01-01""#, "20121017", "null", r#""2012-10-17 ""#] {
            let document = format!(r#"{{"Version":{bad},"Statement":{ALLOW_ALL}}}"#);
            assert_eq!(
                identity_error(&document),
                "The policy failed legacy parsing"
            );
        }
    }

    #[test]
    fn id_is_an_optional_string() {
        let with_id = format!(r#"{{"Id":"my-policy","Statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity(&with_id).id(), Some("my-policy"));
        assert_eq!(identity(&doc(ALLOW_ALL)).id(), None);
        let numeric = format!(r#"{{"Id":5,"Statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity_error(&numeric), "Syntax errors in policy.");
    }

    #[test]
    fn statement_is_an_object_or_a_non_empty_array_of_objects() {
        let single = format!(r#"{{"Statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity(&single).statement_count(), 1);
        let two = doc(&format!("{ALLOW_ALL},{ALLOW_ALL}"));
        assert_eq!(identity(&two).statement_count(), 2);
        assert_eq!(
            identity_error(r#"{"Version":"2012-10-17"}"#),
            "Missing required field Statement"
        );
        for bad in [
            r#"{"Statement":[]}"#,
            r#"{"Statement":"Allow"}"#,
            r#"{"Statement":[5]}"#,
            r#"{"Statement":null}"#,
        ] {
            assert_eq!(identity_error(bad), "Syntax errors in policy.", "{bad}");
        }
    }

    #[test]
    fn documents_must_be_json_objects_with_known_keys() {
        for bad in [
            "",
            "not json",
            "[]",
            "\"policy\"",
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}"#,
        ] {
            assert_eq!(identity_error(bad), "Syntax errors in policy.", "{bad}");
        }
        let unknown_top = format!(r#"{{"Statement":{ALLOW_ALL},"Extra":1}}"#);
        assert_eq!(identity_error(&unknown_top), "Syntax errors in policy.");
        let lowercase = format!(r#"{{"statement":{ALLOW_ALL}}}"#);
        assert_eq!(identity_error(&lowercase), "Syntax errors in policy.");
        let unknown_statement = doc(r#"{"Effect":"Allow","Action":"*","Resource":"*","Id":"x"}"#);
        assert_eq!(
            identity_error(&unknown_statement),
            "Syntax errors in policy."
        );
    }

    #[test]
    fn sids_are_strings_unique_and_alphanumeric_in_identity_policies() {
        let policy = identity(&doc(
            r#"{"Sid":"One","Effect":"Allow","Action":"*","Resource":"*"},
               {"Effect":"Allow","Action":"*","Resource":"*"},
               {"Sid":"Two","Effect":"Deny","Action":"*","Resource":"*"}"#,
        ));
        assert_eq!(policy.sids().collect::<Vec<_>>(), ["One", "Two"]);
        assert_eq!(
            identity_error(&doc(
                r#"{"Sid":7,"Effect":"Allow","Action":"*","Resource":"*"}"#
            )),
            "Syntax errors in policy."
        );
        assert!(
            identity_error(&doc(
                r#"{"Sid":"a-b","Effect":"Allow","Action":"*","Resource":"*"}"#
            ))
            .starts_with("Statement IDs (SID) must be alpha-numeric.")
        );
        let dashed = resource(&doc(
            r#"{"Sid":"lambda-invoke.1","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#,
        ));
        assert_eq!(dashed.sids().collect::<Vec<_>>(), ["lambda-invoke.1"]);
        assert_eq!(
            identity_error(&doc(
                r#"{"Sid":"A","Effect":"Allow","Action":"*","Resource":"*"},
                   {"Sid":"A","Effect":"Deny","Action":"*","Resource":"*"}"#
            )),
            "Statement IDs (SID) in a single policy must be unique."
        );
    }

    #[test]
    fn effect_is_required_and_exactly_allow_or_deny() {
        assert_eq!(
            identity_error(&doc(r#"{"Action":"*","Resource":"*"}"#)),
            "Missing required field Effect"
        );
        assert_eq!(
            identity_error(&doc(r#"{"Effect":"allow","Action":"*","Resource":"*"}"#)),
            "Invalid effect: allow"
        );
        assert_eq!(
            identity_error(&doc(r#"{"Effect":true,"Action":"*","Resource":"*"}"#)),
            "Syntax errors in policy."
        );
    }

    #[test]
    fn exactly_one_of_action_and_not_action() {
        assert_eq!(
            identity_error(&doc(r#"{"Effect":"Allow","Resource":"*"}"#)),
            "Policy statement must contain actions."
        );
        assert_eq!(
            identity_error(&doc(r#"{"Effect":"Allow","Action":[],"Resource":"*"}"#)),
            "Policy statement must contain actions."
        );
        assert_eq!(
            identity_error(&doc(
                r#"{"Effect":"Allow","Action":"*","NotAction":"s3:*","Resource":"*"}"#
            )),
            "Statement cannot contain both Action and NotAction."
        );
        for bad in [r#"5"#, r#"[5]"#, r#"{"a":"b"}"#, "null"] {
            let document = doc(&format!(
                r#"{{"Effect":"Allow","Action":{bad},"Resource":"*"}}"#
            ));
            assert_eq!(
                identity_error(&document),
                "Syntax errors in policy.",
                "{bad}"
            );
        }
    }

    #[test]
    fn action_patterns_are_validated() {
        let cases = [
            ("lambda", NEED_VENDOR.to_string()),
            (
                "*:*",
                "Action vendors must not contain wildcards.".to_string(),
            ),
            (
                "lamb?a:Get",
                "Action vendors must not contain wildcards.".to_string(),
            ),
            (
                "lambda:a:b",
                "Actions/Condition can contain only one colon.".to_string(),
            ),
            (":Invoke", "Vendor  is not valid".to_string()),
            ("lam bda:Invoke", "Vendor lam bda is not valid".to_string()),
            ("lambda:", "Invalid Action: lambda:".to_string()),
            (
                "lambda:Get Function",
                "Invalid Action: lambda:Get Function".to_string(),
            ),
        ];
        for (action, message) in cases {
            let document = doc(&format!(
                r#"{{"Effect":"Allow","Action":"{action}","Resource":"*"}}"#
            ));
            assert_eq!(identity_error(&document), message, "{action}");
        }
        for action in [
            "*",
            "lambda:*",
            "Lambda:Invoke*",
            "iam:Get?ser",
            "execute-api:Invoke",
        ] {
            identity(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"{action}","Resource":"*"}}"#
            )));
        }
    }

    #[test]
    fn exactly_one_of_resource_and_not_resource() {
        assert_eq!(
            identity_error(&doc(r#"{"Effect":"Allow","Action":"*"}"#)),
            "Policy statement must contain resources."
        );
        assert_eq!(
            identity_error(&doc(r#"{"Effect":"Allow","Action":"*","Resource":[]}"#)),
            "Policy statement must contain resources."
        );
        assert_eq!(
            identity_error(&doc(
                r#"{"Effect":"Allow","Action":"*","Resource":"*","NotResource":"*"}"#
            )),
            "Statement cannot contain both Resource and NotResource."
        );
        assert_eq!(
            resource_error(&doc(r#"{"Effect":"Allow","Principal":"*","Action":"*"}"#)),
            "Policy statement must contain resources."
        );
    }

    #[test]
    fn resources_must_be_arns_or_star() {
        for good in [
            "*",
            FUNCTION,
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:*",
            "arn:aws:iam::000000000000:user/${aws:username}",
        ] {
            identity(&doc(&format!(
                r#"{{"Effect":"Allow","Action":"*","Resource":"{good}"}}"#
            )));
        }
        for bad in [
            "function",
            "arn:aws:s3",
            "arn:aws:s3:::bad bucket",
            "ARN:aws:s3:::b",
            "",
        ] {
            let document = doc(&format!(
                r#"{{"Effect":"Allow","Action":"*","Resource":"{bad}"}}"#
            ));
            assert_eq!(
                identity_error(&document),
                format!("Resource {bad} must be in ARN format or \"*\"."),
            );
        }
    }

    #[test]
    fn principal_is_forbidden_in_identity_and_required_in_resource_policies() {
        assert_eq!(
            identity_error(&doc(
                r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#
            )),
            "Has prohibited field Principal"
        );
        assert_eq!(
            identity_error(&doc(
                r#"{"Effect":"Deny","NotPrincipal":"*","Action":"*","Resource":"*"}"#
            )),
            "Has prohibited field NotPrincipal"
        );
        assert_eq!(
            resource_error(&doc(ALLOW_ALL)),
            "Missing required field Principal"
        );
        assert_eq!(
            resource_error(&doc(
                r#"{"Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"*","Resource":"*"}"#
            )),
            "Statement cannot contain both Principal and NotPrincipal."
        );
    }

    fn principal_policy(principal: &str) -> Result<Policy, PolicyError> {
        Policy::parse(
            &doc(&format!(
                r#"{{"Effect":"Allow","Principal":{principal},"Action":"lambda:InvokeFunction","Resource":"{FUNCTION}"}}"#
            )),
            PolicyKind::Resource,
        )
    }

    #[test]
    fn principal_forms_are_validated() {
        for good in [
            r#""*""#,
            r#"{"AWS":"*"}"#,
            r#"{"AWS":"123456789012"}"#,
            r#"{"AWS":"arn:aws:iam::123456789012:root"}"#,
            r#"{"AWS":"arn:aws:iam::123456789012:user/alice"}"#,
            r#"{"AWS":"arn:aws:iam::123456789012:role/path/deployer"}"#,
            r#"{"AWS":"arn:aws:sts::123456789012:assumed-role/deployer/session"}"#,
            r#"{"AWS":["123456789012","arn:aws-cn:iam::123456789012:user/bob"]}"#,
            r#"{"Service":"s3.amazonaws.com"}"#,
            r#"{"Service":["events.amazonaws.com","alexa-appkit.amazon.com"]}"#,
            r#"{"AWS":"111111111111","Service":"sns.amazonaws.com"}"#,
        ] {
            assert!(principal_policy(good).is_ok(), "{good}");
        }
        let cases = [
            (
                r#""123456789012""#,
                r#"Invalid principal in policy: "123456789012""#,
            ),
            (
                r#"{"AWS":"12345"}"#,
                r#"Invalid principal in policy: "AWS":"12345""#,
            ),
            (
                r#"{"AWS":"arn:aws:iam::123456789012:user/*"}"#,
                r#"Invalid principal in policy: "AWS":"arn:aws:iam::123456789012:user/*""#,
            ),
            (
                r#"{"AWS":"arn:aws:s3:::bucket"}"#,
                r#"Invalid principal in policy: "AWS":"arn:aws:s3:::bucket""#,
            ),
            (
                r#"{"AWS":"arn:aws:iam:us-east-1:123456789012:user/a"}"#,
                r#"Invalid principal in policy: "AWS":"arn:aws:iam:us-east-1:123456789012:user/a""#,
            ),
            (
                r#"{"Service":"s3"}"#,
                r#"Invalid principal in policy: "SERVICE":"s3""#,
            ),
            (
                r#"{"Service":"bad service.com"}"#,
                r#"Invalid principal in policy: "SERVICE":"bad service.com""#,
            ),
            (
                r#"{"Federated":"cognito-identity.amazonaws.com"}"#,
                r#"Invalid principal in policy: "Federated":"cognito-identity.amazonaws.com""#,
            ),
            (r#"{"AWS":[]}"#, r#"Invalid principal in policy: "AWS""#),
            (r#"{}"#, "Syntax errors in policy."),
            (r#"5"#, "Syntax errors in policy."),
            (r#"{"AWS":5}"#, "Syntax errors in policy."),
        ];
        for (principal, message) in cases {
            let error = principal_policy(principal)
                .expect_err(principal)
                .to_string();
            assert_eq!(error, message, "{principal}");
        }
    }

    #[test]
    fn size_counts_characters_without_whitespace() {
        fn padded(limit: usize) -> String {
            let base = format!(r#"{{"Id":"","Statement":{ALLOW_ALL}}}"#).len();
            let pad = "é".repeat(limit - base);
            format!("{{\n  \"Id\": \"{pad}\",\n  \"Statement\": {ALLOW_ALL}\n}}")
        }
        let exact = padded(IDENTITY_POLICY_SIZE_LIMIT);
        assert!(
            exact.len() > IDENTITY_POLICY_SIZE_LIMIT,
            "bytes and whitespace exceed it"
        );
        identity(&exact);
        let over = padded(IDENTITY_POLICY_SIZE_LIMIT + 1);
        assert_eq!(
            Policy::parse(&over, PolicyKind::Identity),
            Err(PolicyError::TooLarge {
                size: IDENTITY_POLICY_SIZE_LIMIT + 1,
                limit: IDENTITY_POLICY_SIZE_LIMIT,
            })
        );
        assert_eq!(
            identity_error(&over),
            "Policy document length breaks size limit"
        );

        let resource_statement =
            r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#;
        let base = format!(r#"{{"Id":"","Statement":{resource_statement}}}"#).len();
        let at = |limit: usize| {
            format!(
                r#"{{"Id":"{}","Statement":{resource_statement}}}"#,
                "x".repeat(limit - base)
            )
        };
        resource(&at(RESOURCE_POLICY_SIZE_LIMIT));
        assert!(matches!(
            Policy::parse(&at(RESOURCE_POLICY_SIZE_LIMIT + 1), PolicyKind::Resource),
            Err(PolicyError::TooLarge {
                size: 20481,
                limit: 20480
            })
        ));
        assert!(Policy::parse(&at(RESOURCE_POLICY_SIZE_LIMIT), PolicyKind::Identity).is_err());
    }

    #[test]
    fn accessors_report_the_document() {
        let policy = resource(
            r#"{"Version":"2012-10-17","Id":"p","Statement":{"Sid":"s","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
        );
        assert_eq!(policy.kind(), PolicyKind::Resource);
        assert_eq!(policy.id(), Some("p"));
        assert_eq!(policy.statement_count(), 1);
        assert_eq!(PolicyKind::Identity.size_limit(), 6144);
        assert_eq!(PolicyKind::Resource.size_limit(), 20480);
    }

    // ---- actions, resources and their Not forms -----------------------------------------

    fn allow(action: &str, resource: &str) -> Policy {
        identity(&doc(&format!(
            r#"{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}"#
        )))
    }

    #[test]
    fn actions_match_case_insensitively_with_wildcards() {
        let exact = allow("LAMBDA:invokefunction", "*");
        assert_eq!(
            decide(&exact, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&exact, "lambda:InvokeFunctionUrl", FUNCTION), None);

        let get = allow("lambda:Get*", "*");
        assert_eq!(
            decide(&get, "lambda:GetFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&get, "lambda:Get", FUNCTION), Some(Effect::Allow));
        assert_eq!(decide(&get, "lambda:InvokeFunction", FUNCTION), None);

        let one = allow("lambda:?etFunction", "*");
        assert_eq!(
            decide(&one, "lambda:GetFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide(&one, "lambda:setfunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&one, "lambda:etFunction", FUNCTION), None);

        let service = allow("lambda:*", "*");
        assert_eq!(
            decide(&service, "lambda:ListFunctions", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&service, "lambdax:ListFunctions", FUNCTION), None);
        assert_eq!(decide(&service, "s3:GetObject", FUNCTION), None);

        let all = allow("*", "*");
        assert_eq!(
            decide(&all, "s3:GetObject", "arn:aws:s3:::b/k"),
            Some(Effect::Allow)
        );
    }

    #[test]
    fn resources_match_case_sensitively_with_wildcards() {
        let any_region = allow("*", "arn:aws:lambda:*:000000000000:function:f*");
        assert_eq!(
            decide(&any_region, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide(&any_region, "lambda:InvokeFunction", ALIAS),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide(
                &any_region,
                "lambda:InvokeFunction",
                "arn:aws:lambda:us-east-1:000000000000:function:F"
            ),
            None
        );
        let single = allow("*", "arn:aws:lambda:us-east-1:000000000000:function:?");
        assert_eq!(
            decide(&single, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&single, "lambda:InvokeFunction", ALIAS), None);
        let exact = allow("*", FUNCTION);
        assert_eq!(decide(&exact, "lambda:InvokeFunction", ALIAS), None);
        assert_eq!(
            decide(&exact, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Allow)
        );
    }

    #[test]
    fn policy_variables_are_matched_literally() {
        let policy = allow("iam:*", "arn:aws:iam::000000000000:user/${aws:username}");
        assert_eq!(
            decide(
                &policy,
                "iam:GetUser",
                "arn:aws:iam::000000000000:user/alice"
            ),
            None
        );
        assert_eq!(
            decide(
                &policy,
                "iam:GetUser",
                "arn:aws:iam::000000000000:user/${aws:username}"
            ),
            Some(Effect::Allow)
        );
    }

    #[test]
    fn not_action_matches_actions_outside_the_list() {
        let policy = identity(&doc(
            r#"{"Effect":"Allow","NotAction":["lambda:Delete*","iam:*"],"Resource":"*"}"#,
        ));
        assert_eq!(
            decide(&policy, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide(&policy, "s3:GetObject", FUNCTION),
            Some(Effect::Allow)
        );
        assert_eq!(decide(&policy, "lambda:DeleteFunction", FUNCTION), None);
        assert_eq!(decide(&policy, "IAM:PassRole", FUNCTION), None);
    }

    #[test]
    fn not_resource_matches_resources_outside_the_list() {
        let policy = identity(&doc(&format!(
            r#"{{"Effect":"Deny","Action":"lambda:*","NotResource":"{FUNCTION}:*"}}"#
        )));
        assert_eq!(
            decide(&policy, "lambda:InvokeFunction", FUNCTION),
            Some(Effect::Deny)
        );
        assert_eq!(decide(&policy, "lambda:InvokeFunction", ALIAS), None);
        assert_eq!(decide(&policy, "s3:GetObject", FUNCTION), None);
    }

    #[test]
    fn wildcard_matcher_edge_cases() {
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("", "a"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("**", "abc"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a*b*c", "abc"));
        assert!(!wildcard_match("a*b*c", "acb"));
        assert!(wildcard_match("?", "é"));
        assert!(!wildcard_match("?", ""));
        assert!(!wildcard_match("??", "é"));
        assert!(wildcard_match("*a", "aaaa"));
        assert!(!wildcard_match("a*", "ba"));
        let long = "a".repeat(5000);
        assert!(!wildcard_match("a*a*a*a*a*a*a*b", &long));
        assert!(wildcard_match("a*a*a*a*a*a*a*", &long));
    }

    // ---- principals ---------------------------------------------------------------------

    fn invoke_policy(principal: &str) -> Policy {
        principal_policy(principal).expect("principal parses")
    }

    fn bob() -> Principal {
        Principal::new("arn:aws:iam::111111111111:user/bob", "111111111111")
    }

    fn session(role: &str, account: &str) -> Principal {
        Principal::new(
            format!("arn:aws:sts::{account}:assumed-role/{role}/session-1"),
            account,
        )
    }

    fn s3() -> Principal {
        Principal::new("s3.amazonaws.com", ACCOUNT)
    }

    #[test]
    fn star_principal_matches_everyone() {
        for policy in [invoke_policy(r#""*""#), invoke_policy(r#"{"AWS":"*"}"#)] {
            for who in [alice(), bob(), session("deployer", ACCOUNT), s3()] {
                assert_eq!(decide_as(&policy, &who), Some(Effect::Allow), "{who:?}");
            }
        }
    }

    #[test]
    fn account_principal_matches_identities_of_that_account() {
        for form in [
            r#"{"AWS":"000000000000"}"#,
            r#"{"AWS":"arn:aws:iam::000000000000:root"}"#,
        ] {
            let policy = invoke_policy(form);
            assert_eq!(decide_as(&policy, &alice()), Some(Effect::Allow));
            assert_eq!(
                decide_as(&policy, &session("deployer", ACCOUNT)),
                Some(Effect::Allow)
            );
            assert_eq!(decide_as(&policy, &bob()), None);
            assert_eq!(
                decide_as(&policy, &s3()),
                None,
                "service principals are not IAM identities"
            );
        }
    }

    #[test]
    fn arn_principals_match_exactly_and_roles_match_their_sessions() {
        let user = invoke_policy(r#"{"AWS":"arn:aws:iam::000000000000:user/alice"}"#);
        assert_eq!(decide_as(&user, &alice()), Some(Effect::Allow));
        assert_eq!(
            decide_as(
                &user,
                &Principal::new("arn:aws:iam::000000000000:user/alice2", ACCOUNT)
            ),
            None
        );
        assert_eq!(decide_as(&user, &bob()), None);

        let role = invoke_policy(r#"{"AWS":"arn:aws:iam::000000000000:role/team/deployer"}"#);
        assert_eq!(
            decide_as(
                &role,
                &Principal::new("arn:aws:iam::000000000000:role/team/deployer", ACCOUNT)
            ),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide_as(&role, &session("deployer", ACCOUNT)),
            Some(Effect::Allow)
        );
        assert_eq!(decide_as(&role, &session("other", ACCOUNT)), None);
        assert_eq!(decide_as(&role, &session("deployer", "111111111111")), None);
        assert_eq!(decide_as(&role, &alice()), None);

        let one_session =
            invoke_policy(r#"{"AWS":"arn:aws:sts::000000000000:assumed-role/deployer/session-1"}"#);
        assert_eq!(
            decide_as(&one_session, &session("deployer", ACCOUNT)),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide_as(
                &one_session,
                &Principal::new(
                    "arn:aws:sts::000000000000:assumed-role/deployer/session-2",
                    ACCOUNT
                )
            ),
            None
        );
    }

    #[test]
    fn service_principals_match_by_name() {
        let policy = invoke_policy(r#"{"Service":["s3.amazonaws.com","sns.amazonaws.com"]}"#);
        assert_eq!(decide_as(&policy, &s3()), Some(Effect::Allow));
        assert_eq!(
            decide_as(&policy, &Principal::new("S3.AmazonAWS.com", "")),
            Some(Effect::Allow)
        );
        assert_eq!(
            decide_as(&policy, &Principal::new("sqs.amazonaws.com", "")),
            None
        );
        assert_eq!(decide_as(&policy, &alice()), None);
        let mixed = invoke_policy(r#"{"AWS":"111111111111","Service":"s3.amazonaws.com"}"#);
        assert_eq!(decide_as(&mixed, &s3()), Some(Effect::Allow));
        assert_eq!(decide_as(&mixed, &bob()), Some(Effect::Allow));
        assert_eq!(decide_as(&mixed, &alice()), None);
    }

    #[test]
    fn not_principal_is_the_inverse() {
        let policy = resource(&doc(
            r#"{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::000000000000:user/alice","111111111111"]},"Action":"*","Resource":"*"}"#,
        ));
        assert_eq!(decide_as(&policy, &alice()), None);
        assert_eq!(decide_as(&policy, &bob()), None);
        assert_eq!(decide_as(&policy, &s3()), Some(Effect::Deny));
        assert_eq!(
            decide_as(
                &policy,
                &Principal::new("arn:aws:iam::000000000000:user/mallory", ACCOUNT)
            ),
            Some(Effect::Deny)
        );
    }

    // ---- conditions ---------------------------------------------------------------------

    #[test]
    fn context_keys_are_case_insensitive() {
        let mut context = Context::new();
        context.insert("AWS:SourceIp", vec!["10.0.0.1".into()]);
        context.set_bool("aws:SecureTransport", true);
        context.set("lambda:FunctionUrlAuthType", "NONE");
        assert_eq!(
            context.get("aws:sourceip"),
            Some(&["10.0.0.1".to_string()][..])
        );
        assert_eq!(
            context.get("AWS:SECURETRANSPORT"),
            Some(&["true".to_string()][..])
        );
        assert_eq!(
            context.get("lambda:functionurlauthtype"),
            Some(&["NONE".to_string()][..])
        );
        assert_eq!(context.get("aws:missing"), None);
        assert!(holds(
            r#"{"IpAddress":{"aws:SOURCEIP":"10.0.0.0/8"}}"#,
            &context
        ));
        assert!(holds(
            r#"{"Bool":{"Aws:SecureTransport":"true"}}"#,
            &context
        ));
    }

    #[test]
    fn condition_grammar_errors() {
        assert_eq!(
            condition_error(r#"{"StringFoo":{"aws:k":"v"}}"#),
            "Unknown condition operator: StringFoo"
        );
        for unknown in [
            "NullIfExists",
            "ForAnyValue:Null",
            "ForSomeValues:StringEquals",
            "stringequals",
            "ForAnyValue:",
            "StringEqualsIfExistsIfExists",
            "",
        ] {
            assert_eq!(
                condition_error(&format!(r#"{{"{unknown}":{{"aws:k":"v"}}}}"#)),
                format!("Unknown condition operator: {unknown}")
            );
        }
        for syntax in [
            r#""StringEquals""#,
            r#"[]"#,
            r#"{"StringEquals":"aws:k"}"#,
            r#"{"StringEquals":{"aws:k":null}}"#,
            r#"{"StringEquals":{"aws:k":[]}}"#,
            r#"{"StringEquals":{"aws:k":{"a":"b"}}}"#,
            r#"{"StringEquals":{"aws:k":["a",["b"]]}}"#,
        ] {
            assert_eq!(
                condition_error(syntax),
                "Syntax errors in policy.",
                "{syntax}"
            );
        }
        for no_vendor in [
            r#"{"StringEquals":{"k":"v"}}"#,
            r#"{"StringEquals":{":k":"v"}}"#,
            r#"{"StringEquals":{"aws:":"v"}}"#,
        ] {
            assert_eq!(condition_error(no_vendor), NEED_VENDOR, "{no_vendor}");
        }
        for (condition, message) in [
            (
                r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}"#,
                "Invalid Condition value for IpAddress: 10.0.0.0/33",
            ),
            (
                r#"{"NotIpAddress":{"aws:SourceIp":"example.com"}}"#,
                "Invalid Condition value for NotIpAddress: example.com",
            ),
            (
                r#"{"IpAddress":{"aws:SourceIp":"::1/129"}}"#,
                "Invalid Condition value for IpAddress: ::1/129",
            ),
            (
                r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/+8"}}"#,
                "Invalid Condition value for IpAddress: 10.0.0.0/+8",
            ),
            (
                r#"{"NumericLessThan":{"s3:max-keys":"ten"}}"#,
                "Invalid Condition value for NumericLessThan: ten",
            ),
            (
                r#"{"NumericEquals":{"s3:max-keys":"NaN"}}"#,
                "Invalid Condition value for NumericEquals: NaN",
            ),
            (
                r#"{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}"#,
                "Invalid Condition value for DateLessThan: tomorrow",
            ),
            (
                r#"{"Null":{"aws:TokenIssueTime":"maybe"}}"#,
                "Invalid Condition value for Null: maybe",
            ),
        ] {
            assert_eq!(condition_error(condition), message);
        }
        assert!(
            holds("{}", &Context::new()),
            "an empty Condition block holds"
        );
    }

    #[test]
    fn string_equals_and_not_equals() {
        let prod = ctx(&[("aws:ResourceTag/env", &["prod"])]);
        let dev = ctx(&[("aws:ResourceTag/env", &["dev"])]);
        let upper = ctx(&[("aws:ResourceTag/env", &["PROD"])]);
        let none = Context::new();
        let equals = r#"{"StringEquals":{"aws:ResourceTag/env":["prod","staging"]}}"#;
        assert!(holds(equals, &prod));
        assert!(!holds(equals, &dev));
        assert!(!holds(equals, &upper), "case-sensitive");
        assert!(!holds(equals, &none), "missing key is false");
        let not_equals = r#"{"StringNotEquals":{"aws:ResourceTag/env":["prod","staging"]}}"#;
        assert!(!holds(not_equals, &prod));
        assert!(holds(not_equals, &dev));
        assert!(holds(not_equals, &upper));
        assert!(
            holds(not_equals, &none),
            "negated operator with a missing key is true"
        );
        let empty = ctx(&[("aws:ResourceTag/env", &[])]);
        assert!(
            !holds(equals, &empty),
            "an empty value list is a missing key"
        );
        assert!(holds(not_equals, &empty));
    }

    #[test]
    fn string_ignore_case_operators() {
        let upper = ctx(&[("aws:PrincipalTag/team", &["PLATFORM"])]);
        let other = ctx(&[("aws:PrincipalTag/team", &["data"])]);
        let equals = r#"{"StringEqualsIgnoreCase":{"aws:PrincipalTag/team":"Platform"}}"#;
        assert!(holds(equals, &upper));
        assert!(!holds(equals, &other));
        assert!(!holds(equals, &Context::new()));
        let not_equals = r#"{"StringNotEqualsIgnoreCase":{"aws:PrincipalTag/team":"Platform"}}"#;
        assert!(!holds(not_equals, &upper));
        assert!(holds(not_equals, &other));
        assert!(holds(not_equals, &Context::new()));
    }

    #[test]
    fn string_like_operators() {
        let like = r#"{"StringLike":{"s3:prefix":["home/*","public/?.txt"]}}"#;
        assert!(holds(like, &ctx(&[("s3:prefix", &["home/alice/x"])])));
        assert!(holds(like, &ctx(&[("s3:prefix", &["public/a.txt"])])));
        assert!(!holds(like, &ctx(&[("s3:prefix", &["public/ab.txt"])])));
        assert!(!holds(like, &ctx(&[("s3:prefix", &["Home/alice"])])));
        assert!(!holds(like, &Context::new()));
        let not_like = r#"{"StringNotLike":{"s3:prefix":["home/*","public/?.txt"]}}"#;
        assert!(!holds(not_like, &ctx(&[("s3:prefix", &["home/alice/x"])])));
        assert!(holds(not_like, &ctx(&[("s3:prefix", &["public/ab.txt"])])));
        assert!(holds(not_like, &Context::new()));
        let equals = r#"{"StringEquals":{"s3:prefix":"home/*"}}"#;
        assert!(
            !holds(equals, &ctx(&[("s3:prefix", &["home/x"])])),
            "no wildcards in StringEquals"
        );
        assert!(holds(equals, &ctx(&[("s3:prefix", &["home/*"])])));
    }

    #[test]
    fn arn_operators() {
        let source = |arn: &str| ctx(&[("aws:SourceArn", &[arn])]);
        let topic = source("arn:aws:sns:us-east-1:000000000000:topic:sub");
        for operator in ["ArnLike", "ArnEquals"] {
            let condition = format!(
                r#"{{"{operator}":{{"aws:SourceArn":"arn:aws:sns:*:000000000000:topic*"}}}}"#
            );
            assert!(holds(&condition, &topic), "{operator}");
            assert!(!holds(
                &condition,
                &source("arn:aws:sns:us-east-1:111111111111:topic")
            ));
            assert!(!holds(&condition, &Context::new()));
        }
        let segmentwise = r#"{"ArnLike":{"aws:SourceArn":"arn:aws:*:000000000000:function:f"}}"#;
        assert!(
            !holds(
                segmentwise,
                &source("arn:aws:lambda:us-east-1:000000000000:function:f")
            ),
            "a wildcard does not cross ARN segments"
        );
        let exact = r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:s3:::bucket"}}"#;
        assert!(holds(exact, &source("arn:aws:s3:::bucket")));
        assert!(!holds(exact, &source("arn:aws:s3:::bucket2")));
        assert!(!holds(exact, &source("not-an-arn")));
        for operator in ["ArnNotLike", "ArnNotEquals"] {
            let condition =
                format!(r#"{{"{operator}":{{"aws:SourceArn":"arn:aws:s3:::bucket*"}}}}"#);
            assert!(
                !holds(&condition, &source("arn:aws:s3:::bucket-1")),
                "{operator}"
            );
            assert!(holds(&condition, &source("arn:aws:s3:::other")));
            assert!(holds(&condition, &Context::new()));
        }
        let short = r#"{"ArnLike":{"aws:SourceArn":"arn:aws:s3:*"}}"#;
        assert!(holds(short, &source("arn:aws:s3:::bucket")));
    }

    #[test]
    fn ip_address_operators() {
        let from = |ip: &str| ctx(&[("aws:SourceIp", &[ip])]);
        let v4 = r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.1.7"]}}"#;
        assert!(holds(v4, &from("10.200.3.4")));
        assert!(holds(v4, &from("192.168.1.7")));
        assert!(!holds(v4, &from("192.168.1.8")));
        assert!(!holds(v4, &from("11.0.0.1")));
        assert!(!holds(v4, &from("::ffff:10.0.0.1")), "families do not mix");
        assert!(!holds(v4, &from("garbage")));
        assert!(!holds(v4, &Context::new()));
        let host_bits = r#"{"IpAddress":{"aws:SourceIp":"10.1.2.3/16"}}"#;
        assert!(holds(host_bits, &from("10.1.200.1")));
        assert!(!holds(host_bits, &from("10.2.0.1")));
        let everything = r#"{"IpAddress":{"aws:SourceIp":["0.0.0.0/0","::/0"]}}"#;
        assert!(holds(everything, &from("1.2.3.4")));
        assert!(holds(everything, &from("2001:db8::1")));
        let v6 = r#"{"IpAddress":{"aws:SourceIp":"2001:DB8::/32"}}"#;
        assert!(holds(v6, &from("2001:db8:ffff::1")));
        assert!(!holds(v6, &from("2001:db9::1")));
        assert!(!holds(v6, &from("10.0.0.1")));
        let single_v6 = r#"{"IpAddress":{"aws:SourceIp":"2001:db8::1"}}"#;
        assert!(holds(single_v6, &from("2001:db8::1")));
        assert!(!holds(single_v6, &from("2001:db8::2")));
        let not = r#"{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}"#;
        assert!(!holds(not, &from("10.9.9.9")));
        assert!(holds(not, &from("8.8.8.8")));
        assert!(!holds(not, &from("2001:db8::5")));
        assert!(holds(not, &Context::new()));
    }

    #[test]
    fn bool_operator() {
        let secure = |v: &str| ctx(&[("aws:SecureTransport", &[v])]);
        for condition in [
            r#"{"Bool":{"aws:SecureTransport":"true"}}"#,
            r#"{"Bool":{"aws:SecureTransport":true}}"#,
            r#"{"Bool":{"aws:SecureTransport":"TRUE"}}"#,
        ] {
            assert!(holds(condition, &secure("true")), "{condition}");
            assert!(holds(condition, &secure("True")), "{condition}");
            assert!(!holds(condition, &secure("false")), "{condition}");
            assert!(!holds(condition, &Context::new()), "{condition}");
        }
        let insecure = r#"{"Bool":{"aws:SecureTransport":false}}"#;
        assert!(holds(insecure, &secure("FALSE")));
        assert!(!holds(insecure, &secure("true")));
        let mut context = Context::new();
        context.set_bool("aws:SecureTransport", false);
        assert!(holds(insecure, &context));
    }

    #[test]
    fn numeric_operators() {
        let keys = |v: &str| ctx(&[("s3:max-keys", &[v])]);
        let cases: [(&str, &str, bool); 16] = [
            ("NumericEquals", "10", true),
            ("NumericEquals", "10.0", true),
            ("NumericEquals", "11", false),
            ("NumericNotEquals", "11", true),
            ("NumericNotEquals", "10", false),
            ("NumericLessThan", "9.5", true),
            ("NumericLessThan", "10", false),
            ("NumericLessThanEquals", "10", true),
            ("NumericLessThanEquals", "10.01", false),
            ("NumericGreaterThan", "11", true),
            ("NumericGreaterThan", "10", false),
            ("NumericGreaterThanEquals", "10", true),
            ("NumericGreaterThanEquals", "-3", false),
            ("NumericEquals", "ten", false),
            ("NumericLessThan", "inf", false),
            ("NumericNotEquals", "ten", true),
        ];
        for (operator, value, expected) in cases {
            for policy_value in ["10", "\"10\"", "10.0"] {
                let condition = format!(r#"{{"{operator}":{{"s3:max-keys":{policy_value}}}}}"#);
                assert_eq!(
                    holds(&condition, &keys(value)),
                    expected,
                    "{operator} {value}"
                );
            }
        }
        assert!(!holds(
            r#"{"NumericEquals":{"s3:max-keys":10}}"#,
            &Context::new()
        ));
        assert!(holds(
            r#"{"NumericNotEquals":{"s3:max-keys":10}}"#,
            &Context::new()
        ));
        assert!(holds(
            r#"{"NumericLessThan":{"s3:max-keys":[5,20]}}"#,
            &keys("10")
        ));
    }

    #[test]
    fn date_operators() {
        let now = |v: &str| ctx(&[("aws:CurrentTime", &[v])]);
        let before = r#"{"DateLessThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}"#;
        assert!(holds(before, &now("2025-12-31T23:59:59Z")));
        assert!(holds(before, &now("2025-12-31")));
        assert!(holds(before, &now("1767225599")));
        assert!(!holds(before, &now("2026-01-01T00:00:00Z")));
        assert!(
            holds(before, &now("2026-01-01T01:00:00+02:00")),
            "offsets are honoured"
        );
        assert!(!holds(before, &now("yesterday")));
        let equals = r#"{"DateEquals":{"aws:CurrentTime":"2026-01-01"}}"#;
        assert!(holds(equals, &now("2026-01-01T00:00:00Z")));
        assert!(holds(equals, &now("1767225600")));
        let not_equals = r#"{"DateNotEquals":{"aws:CurrentTime":"2026-01-01"}}"#;
        assert!(holds(not_equals, &now("2026-01-02")));
        assert!(!holds(not_equals, &now("2026-01-01")));
        assert!(holds(not_equals, &Context::new()));
        let after = r#"{"DateGreaterThanEquals":{"aws:CurrentTime":1767225600}}"#;
        assert!(holds(after, &now("2026-01-01T00:00:00Z")));
        assert!(!holds(after, &now("2025-06-01T00:00:00Z")));
        assert!(holds(
            r#"{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01"}}"#,
            &now("2021-01-01")
        ));
        assert!(holds(
            r#"{"DateLessThanEquals":{"aws:CurrentTime":"2020-01-01"}}"#,
            &now("2020-01-01")
        ));
    }

    #[test]
    fn binary_equals_compares_base64_text() {
        let condition = r#"{"BinaryEquals":{"aws:Key":"QmluYXJ5"}}"#;
        assert!(holds(condition, &ctx(&[("aws:Key", &["QmluYXJ5"])])));
        assert!(!holds(condition, &ctx(&[("aws:Key", &["QmluYXJz"])])));
    }

    #[test]
    fn null_operator_tests_presence() {
        let present = ctx(&[("aws:TokenIssueTime", &["2026-01-01T00:00:00Z"])]);
        let empty = ctx(&[("aws:TokenIssueTime", &[])]);
        let absent_required = r#"{"Null":{"aws:TokenIssueTime":"true"}}"#;
        assert!(holds(absent_required, &Context::new()));
        assert!(holds(absent_required, &empty));
        assert!(!holds(absent_required, &present));
        let present_required = r#"{"Null":{"aws:TokenIssueTime":false}}"#;
        assert!(!holds(present_required, &Context::new()));
        assert!(holds(present_required, &present));
        assert!(holds(
            r#"{"Null":{"aws:TokenIssueTime":["true","false"]}}"#,
            &present
        ));
    }

    #[test]
    fn if_exists_makes_a_missing_key_true() {
        let none = Context::new();
        let ip = |v: &str| ctx(&[("aws:SourceIp", &[v])]);
        let cases = [
            r#"{"StringEqualsIfExists":{"aws:k":"v"}}"#,
            r#"{"StringNotEqualsIfExists":{"aws:k":"v"}}"#,
            r#"{"StringLikeIfExists":{"aws:k":"v*"}}"#,
            r#"{"ArnLikeIfExists":{"aws:k":"arn:aws:s3:::b"}}"#,
            r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            r#"{"NotIpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            r#"{"BoolIfExists":{"aws:k":"true"}}"#,
            r#"{"NumericLessThanIfExists":{"aws:k":1}}"#,
            r#"{"DateLessThanIfExists":{"aws:k":"2020-01-01"}}"#,
            r#"{"ForAnyValue:StringEqualsIfExists":{"aws:k":"v"}}"#,
        ];
        for condition in cases {
            assert!(holds(condition, &none), "{condition}");
        }
        let within = r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        assert!(holds(within, &ip("10.1.1.1")));
        assert!(
            !holds(within, &ip("8.8.8.8")),
            "a present key is still checked"
        );
        let not_within = r#"{"NotIpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        assert!(!holds(not_within, &ip("10.1.1.1")));
        assert!(holds(not_within, &ip("8.8.8.8")));
        let without = r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        assert!(!holds(without, &none));
    }

    #[test]
    fn for_any_value_and_for_all_values() {
        let tags = |values: &[&str]| ctx(&[("aws:TagKeys", values)]);
        let any = r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["env","team"]}}"#;
        assert!(holds(any, &tags(&["env", "other"])));
        assert!(!holds(any, &tags(&["cost", "other"])));
        assert!(
            !holds(any, &Context::new()),
            "ForAnyValue with no values is false"
        );
        let all = r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["env","team"]}}"#;
        assert!(holds(all, &tags(&["env", "team"])));
        assert!(holds(all, &tags(&["team"])));
        assert!(!holds(all, &tags(&["env", "other"])));
        assert!(
            holds(all, &Context::new()),
            "ForAllValues with no values is true"
        );
        assert!(holds(all, &tags(&[])));

        // AWS's documented example: ForAllValues:StringNotLike "key1*".
        let not_like = r#"{"ForAllValues:StringNotLike":{"aws:TagKeys":"key1*"}}"#;
        assert!(!holds(not_like, &tags(&["key1:legal"])));
        assert!(!holds(not_like, &tags(&["key1:hr", "key1:personnel"])));
        assert!(holds(not_like, &tags(&["key2:audit"])));
        assert!(holds(not_like, &Context::new()));
        assert!(!holds(not_like, &tags(&["key2:audit", "key1:hr"])));

        let any_not = r#"{"ForAnyValue:StringNotEquals":{"aws:TagKeys":["env","team"]}}"#;
        assert!(holds(any_not, &tags(&["env", "cost"])));
        assert!(!holds(any_not, &tags(&["env", "team"])));
        assert!(!holds(any_not, &Context::new()));

        let any_like = r#"{"ForAnyValue:StringLike":{"aws:TagKeys":"cost*"}}"#;
        assert!(holds(any_like, &tags(&["env", "costcenter"])));
        let all_ip = r#"{"ForAllValues:IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        let ips = |values: &[&str]| ctx(&[("aws:SourceIp", values)]);
        assert!(holds(all_ip, &ips(&["10.0.0.1", "10.2.2.2"])));
        assert!(!holds(all_ip, &ips(&["10.0.0.1", "8.8.8.8"])));
    }

    #[test]
    fn unqualified_operators_with_many_request_values() {
        let tags = |values: &[&str]| ctx(&[("aws:TagKeys", values)]);
        let equals = r#"{"StringEquals":{"aws:TagKeys":"env"}}"#;
        assert!(holds(equals, &tags(&["cost", "env"])));
        assert!(!holds(equals, &tags(&["cost", "team"])));
        let not_equals = r#"{"StringNotEquals":{"aws:TagKeys":"env"}}"#;
        assert!(!holds(not_equals, &tags(&["cost", "env"])));
        assert!(holds(not_equals, &tags(&["cost", "team"])));
    }

    #[test]
    fn operators_and_keys_and_together_values_or_together() {
        let condition = r#"{
            "StringEquals": {"aws:PrincipalTag/team": ["a", "b"], "aws:RequestedRegion": "us-east-1"},
            "Bool": {"aws:SecureTransport": "true"}
        }"#;
        let full = |team: &str, region: &str, secure: &str| {
            ctx(&[
                ("aws:PrincipalTag/team", &[team]),
                ("aws:RequestedRegion", &[region]),
                ("aws:SecureTransport", &[secure]),
            ])
        };
        assert!(holds(condition, &full("a", "us-east-1", "true")));
        assert!(holds(condition, &full("b", "us-east-1", "true")));
        assert!(!holds(condition, &full("c", "us-east-1", "true")));
        assert!(!holds(condition, &full("a", "eu-west-1", "true")));
        assert!(!holds(condition, &full("a", "us-east-1", "false")));
        let partial = ctx(&[
            ("aws:PrincipalTag/team", &["a"]),
            ("aws:SecureTransport", &["true"]),
        ]);
        assert!(!holds(condition, &partial));
    }

    // ---- evaluation ---------------------------------------------------------------------

    #[test]
    fn deny_overrides_allow_within_a_policy() {
        let policy = identity(&doc(&format!(
            r#"{ALLOW_ALL},{{"Effect":"Deny","Action":"lambda:Delete*","Resource":"*"}}"#
        )));
        assert_eq!(
            decide(&policy, "lambda:DeleteFunction", FUNCTION),
            Some(Effect::Deny)
        );
        assert_eq!(
            decide(&policy, "lambda:GetFunction", FUNCTION),
            Some(Effect::Allow)
        );
    }

    #[test]
    fn evaluate_combines_identity_and_resource_policies() {
        let principal = alice();
        let context = Context::new();
        let invoke = request(&principal, "lambda:InvokeFunction", FUNCTION, &context);
        let get = request(&principal, "lambda:GetFunction", FUNCTION, &context);

        assert_eq!(evaluate(&[], None, &invoke), Decision::ImplicitDeny);
        let allow_get = allow("lambda:GetFunction", FUNCTION);
        assert_eq!(
            evaluate(&[&allow_get], None, &invoke),
            Decision::ImplicitDeny
        );
        assert_eq!(evaluate(&[&allow_get], None, &get), Decision::Allow);

        let allow_invoke = allow("lambda:InvokeFunction", "*");
        assert_eq!(
            evaluate(&[&allow_get, &allow_invoke], None, &invoke),
            Decision::Allow
        );

        let function_policy = invoke_policy(r#"{"AWS":"000000000000"}"#);
        assert_eq!(
            evaluate(&[], Some(&function_policy), &invoke),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[&allow_get], Some(&function_policy), &invoke),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&[], Some(&function_policy), &get),
            Decision::ImplicitDeny
        );

        let deny_invoke = identity(&doc(
            r#"{"Effect":"Deny","Action":"lambda:InvokeFunction","Resource":"*"}"#,
        ));
        assert_eq!(
            evaluate(
                &[&allow_invoke, &deny_invoke],
                Some(&function_policy),
                &invoke
            ),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&[&deny_invoke], None, &get),
            Decision::ImplicitDeny
        );

        let resource_deny = resource(&doc(
            r#"{"Effect":"Deny","Principal":"*","Action":"lambda:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#,
        ));
        let mut insecure = Context::new();
        insecure.set_bool("aws:SecureTransport", false);
        let insecure_invoke = request(&principal, "lambda:InvokeFunction", FUNCTION, &insecure);
        assert_eq!(
            evaluate(&[&allow_invoke], Some(&resource_deny), &insecure_invoke),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&[&allow_invoke], Some(&resource_deny), &invoke),
            Decision::Allow
        );
    }

    #[test]
    fn lambda_style_function_policy() {
        let policy = resource(
            r#"{
              "Version": "2012-10-17",
              "Id": "default",
              "Statement": [{
                "Sid": "s3-invoke",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": "arn:aws:lambda:us-east-1:000000000000:function:f",
                "Condition": {
                  "StringEquals": {"AWS:SourceAccount": "000000000000"},
                  "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::uploads"}
                }
              }]
            }"#,
        );
        let service = s3();
        let mut context = Context::new();
        context.set("aws:SourceAccount", ACCOUNT);
        context.set("aws:SourceArn", "arn:aws:s3:::uploads");
        let invoke = request(&service, "lambda:InvokeFunction", FUNCTION, &context);
        assert_eq!(evaluate(&[], Some(&policy), &invoke), Decision::Allow);
        let on_alias = request(&service, "lambda:InvokeFunction", ALIAS, &context);
        assert_eq!(
            evaluate(&[], Some(&policy), &on_alias),
            Decision::ImplicitDeny
        );
        let mut other = Context::new();
        other.set("aws:SourceAccount", "111111111111");
        other.set("aws:SourceArn", "arn:aws:s3:::uploads");
        let confused_deputy = request(&service, "lambda:InvokeFunction", FUNCTION, &other);
        assert_eq!(
            evaluate(&[], Some(&policy), &confused_deputy),
            Decision::ImplicitDeny
        );
    }
}

/// Property tests: the evaluator against a naive reference model, and parser robustness.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ACTION_PATTERNS: &[&str] = &[
        "lambda:*",
        "lambda:Get*",
        "lambda:InvokeFunction",
        "*",
        "s3:*",
        "LAMBDA:invoke*",
        "lambda:?etFunction",
        "lambda:List*s",
        "iam:PassRole",
    ];
    const ACTIONS: &[&str] = &[
        "lambda:InvokeFunction",
        "lambda:GetFunction",
        "lambda:getpolicy",
        "lambda:SetFunction",
        "lambda:ListFunctions",
        "lambda:ListTags",
        "s3:GetObject",
        "iam:PassRole",
        "Lambda:InvokeFunctionUrl",
    ];
    const RESOURCE_PATTERNS: &[&str] = &[
        "*",
        "arn:aws:lambda:us-east-1:000000000000:function:f",
        "arn:aws:lambda:us-east-1:000000000000:function:f:*",
        "arn:aws:lambda:*:000000000000:function:*",
        "arn:aws:lambda:us-east-1:000000000000:function:?",
        "arn:aws:s3:::bucket/*",
        "arn:aws:lambda:us-east-1:*",
        "arn:aws:lambda:us-east-1:000000000000:function:F",
    ];
    const RESOURCES: &[&str] = &[
        "arn:aws:lambda:us-east-1:000000000000:function:f",
        "arn:aws:lambda:us-east-1:000000000000:function:f:live",
        "arn:aws:lambda:us-east-1:000000000000:function:g",
        "arn:aws:lambda:us-east-1:000000000000:function:F",
        "arn:aws:lambda:eu-west-1:000000000000:function:f",
        "arn:aws:lambda:us-east-1:111111111111:function:f",
        "arn:aws:s3:::bucket/key",
        "arn:aws:s3:::other/key",
    ];
    const TAGS: &[&str] = &["prod", "dev", "Prod", "test"];
    const SECURE: &[&str] = &["true", "false", "TRUE", "False", "yes"];
    const IPS: &[&str] = &[
        "10.0.0.5",
        "10.1.2.3",
        "192.168.1.1",
        "192.168.1.2",
        "8.8.8.8",
        "2001:db8::1",
        "2001:db9::1",
        "not-an-ip",
    ];
    const CIDRS: &[&str] = &[
        "10.0.0.0/8",
        "10.0.0.0/24",
        "192.168.1.1",
        "0.0.0.0/0",
        "2001:db8::/32",
        "10.1.0.0/16",
        "192.168.0.0/31",
    ];
    const TAG_KEY: &str = "aws:ResourceTag/env";
    const SECURE_KEY: &str = "aws:SecureTransport";
    const IP_KEY: &str = "aws:SourceIp";

    #[derive(Debug, Clone)]
    enum Cond {
        Tag {
            negated: bool,
            if_exists: bool,
            values: Vec<&'static str>,
        },
        Secure {
            if_exists: bool,
            value: bool,
            as_json_bool: bool,
        },
        Ip {
            negated: bool,
            cidrs: Vec<&'static str>,
        },
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Star,
        AwsStar,
        Account(&'static str),
        Root(&'static str),
        User(&'static str),
        Role(&'static str),
        Service(&'static str),
    }

    #[derive(Debug, Clone)]
    struct Stmt {
        deny: bool,
        not_action: bool,
        actions: Vec<&'static str>,
        not_resource: bool,
        resources: Vec<&'static str>,
        principal: Option<(bool, Vec<Who>)>,
        conditions: Vec<Cond>,
        upper_keys: bool,
    }

    #[derive(Debug, Clone)]
    struct Caller {
        arn: &'static str,
        account: &'static str,
    }

    const CALLERS: &[Caller] = &[
        Caller {
            arn: "arn:aws:iam::000000000000:user/alice",
            account: "000000000000",
        },
        Caller {
            arn: "arn:aws:iam::111111111111:user/bob",
            account: "111111111111",
        },
        Caller {
            arn: "arn:aws:sts::000000000000:assumed-role/deployer/s1",
            account: "000000000000",
        },
        Caller {
            arn: "arn:aws:iam::000000000000:role/deployer",
            account: "000000000000",
        },
        Caller {
            arn: "s3.amazonaws.com",
            account: "000000000000",
        },
    ];
    const WHO: &[Who] = &[
        Who::Star,
        Who::AwsStar,
        Who::Account("000000000000"),
        Who::Account("111111111111"),
        Who::Root("000000000000"),
        Who::User("arn:aws:iam::000000000000:user/alice"),
        Who::User("arn:aws:iam::111111111111:user/bob"),
        Who::Role("arn:aws:iam::000000000000:role/deployer"),
        Who::Role("arn:aws:iam::000000000000:role/ops/deployer"),
        Who::Role("arn:aws:iam::111111111111:role/deployer"),
        Who::Service("s3.amazonaws.com"),
        Who::Service("sns.amazonaws.com"),
    ];

    #[derive(Debug, Clone)]
    struct Req {
        caller: usize,
        action: &'static str,
        resource: &'static str,
        tag: Option<Vec<&'static str>>,
        secure: Option<&'static str>,
        ip: Option<&'static str>,
    }

    fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
        prop::sample::select(items)
    }

    fn cond() -> impl Strategy<Value = Cond> {
        prop_oneof![
            (
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec(pick(TAGS), 1..3)
            )
                .prop_map(|(negated, if_exists, values)| Cond::Tag {
                    negated,
                    if_exists,
                    values
                }),
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(if_exists, value, as_json_bool)| Cond::Secure {
                    if_exists,
                    value,
                    as_json_bool
                }
            ),
            (any::<bool>(), prop::collection::vec(pick(CIDRS), 1..3))
                .prop_map(|(negated, cidrs)| Cond::Ip { negated, cidrs }),
        ]
    }

    fn stmt(resource_policy: bool) -> impl Strategy<Value = Stmt> {
        let principal = if resource_policy {
            (any::<bool>(), prop::collection::vec(pick(WHO), 1..3))
                .prop_map(Some)
                .boxed()
        } else {
            Just(None).boxed()
        };
        (
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(pick(ACTION_PATTERNS), 1..3),
            any::<bool>(),
            prop::collection::vec(pick(RESOURCE_PATTERNS), 1..3),
            principal,
            prop::collection::vec(cond(), 0..3),
            any::<bool>(),
        )
            .prop_map(
                |(
                    deny,
                    not_action,
                    actions,
                    not_resource,
                    resources,
                    principal,
                    conditions,
                    upper_keys,
                )| Stmt {
                    deny,
                    not_action,
                    actions,
                    not_resource,
                    resources,
                    principal,
                    conditions,
                    upper_keys,
                },
            )
    }

    fn request_spec() -> impl Strategy<Value = Req> {
        (
            0..CALLERS.len(),
            pick(ACTIONS),
            pick(RESOURCES),
            prop::option::of(prop::collection::vec(pick(TAGS), 0..3)),
            prop::option::of(pick(SECURE)),
            prop::option::of(pick(IPS)),
        )
            .prop_map(|(caller, action, resource, tag, secure, ip)| Req {
                caller,
                action,
                resource,
                tag,
                secure,
                ip,
            })
    }

    // ---- rendering the generated policy as JSON text ------------------------------------

    fn one_or_many(items: &[&str]) -> Value {
        match items {
            [one] => json!(one),
            many => json!(many),
        }
    }

    fn render_who(who: &[Who]) -> Value {
        let mut aws = Vec::new();
        let mut services = Vec::new();
        for w in who {
            match *w {
                Who::Star => return json!("*"),
                Who::AwsStar => aws.push("*".to_string()),
                Who::Account(a) => aws.push(a.to_string()),
                Who::Root(a) => aws.push(format!("arn:aws:iam::{a}:root")),
                Who::User(arn) | Who::Role(arn) => aws.push(arn.to_string()),
                Who::Service(s) => services.push(s.to_string()),
            }
        }
        let mut map = Map::new();
        if !aws.is_empty() {
            map.insert("AWS".into(), json!(aws));
        }
        if !services.is_empty() {
            map.insert("Service".into(), json!(services));
        }
        Value::Object(map)
    }

    fn render_conditions(conditions: &[Cond], upper: bool) -> Value {
        let key = |k: &str| {
            if upper {
                k.to_uppercase()
            } else {
                k.to_string()
            }
        };
        let mut block = Map::new();
        for (n, c) in conditions.iter().enumerate() {
            let (operator, k, value) = match c {
                Cond::Tag {
                    negated,
                    if_exists,
                    values,
                } => (
                    format!(
                        "String{}Equals{}",
                        if *negated { "Not" } else { "" },
                        if *if_exists { "IfExists" } else { "" }
                    ),
                    key(TAG_KEY),
                    one_or_many(values),
                ),
                Cond::Secure {
                    if_exists,
                    value,
                    as_json_bool,
                } => (
                    format!("Bool{}", if *if_exists { "IfExists" } else { "" }),
                    key(SECURE_KEY),
                    if *as_json_bool {
                        json!(value)
                    } else {
                        json!(value.to_string())
                    },
                ),
                Cond::Ip { negated, cidrs } => (
                    if *negated {
                        "NotIpAddress"
                    } else {
                        "IpAddress"
                    }
                    .to_string(),
                    key(IP_KEY),
                    one_or_many(cidrs),
                ),
            };
            let entry = block
                .entry(operator)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(keys) = entry {
                // The same operator and key twice: vary the key's case so both survive
                // as separate JSON keys (IAM compares key names case-insensitively).
                let mut k = k;
                let mut flip = n;
                while keys.contains_key(&k) {
                    k = vary_case(&k, flip);
                    flip += 1;
                }
                keys.insert(k, value);
            }
        }
        Value::Object(block)
    }

    /// Flips the case of one letter, chosen by `n`.
    fn vary_case(key: &str, n: usize) -> String {
        let letters: Vec<usize> = key
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphabetic())
            .map(|(i, _)| i)
            .collect();
        let at = letters[n % letters.len()];
        key.char_indices()
            .map(|(i, c)| {
                if i != at {
                    c
                } else if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    }

    fn render(statements: &[Stmt]) -> String {
        let rendered: Vec<Value> = statements
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert(
                    "Effect".into(),
                    json!(if s.deny { "Deny" } else { "Allow" }),
                );
                let action_key = if s.not_action { "NotAction" } else { "Action" };
                m.insert(action_key.into(), one_or_many(&s.actions));
                let resource_key = if s.not_resource {
                    "NotResource"
                } else {
                    "Resource"
                };
                m.insert(resource_key.into(), one_or_many(&s.resources));
                if let Some((not, who)) = &s.principal {
                    let key = if *not { "NotPrincipal" } else { "Principal" };
                    m.insert(key.into(), render_who(who));
                }
                if !s.conditions.is_empty() {
                    m.insert(
                        "Condition".into(),
                        render_conditions(&s.conditions, s.upper_keys),
                    );
                }
                Value::Object(m)
            })
            .collect();
        json!({"Version": "2012-10-17", "Statement": rendered}).to_string()
    }

    // ---- the reference model: a direct transcription of IAM's rules ---------------------

    fn glob(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
            Some(('?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
        }
    }

    fn like(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob(&p, &t)
    }

    fn bits(address: IpAddr) -> Vec<bool> {
        let octets = match address {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        octets
            .iter()
            .flat_map(|o| (0..8).rev().map(move |i| o >> i & 1 == 1))
            .collect()
    }

    fn in_cidr(cidr: &str, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        let (net, len) = match cidr.split_once('/') {
            Some((net, len)) => (net, len.parse::<usize>().ok()),
            None => (cidr, None),
        };
        let Ok(net) = net.parse::<IpAddr>() else {
            return false;
        };
        let (net_bits, ip_bits) = (bits(net), bits(ip));
        if net_bits.len() != ip_bits.len() {
            return false;
        }
        let len = len.unwrap_or(net_bits.len());
        net_bits[..len] == ip_bits[..len]
    }

    fn cond_holds(c: &Cond, r: &Req) -> bool {
        match c {
            Cond::Tag {
                negated,
                if_exists,
                values,
            } => match r.tag.as_ref().filter(|t| !t.is_empty()) {
                None => *if_exists || *negated,
                Some(tags) => {
                    let any_match = tags.iter().any(|t| values.contains(t));
                    any_match != *negated
                }
            },
            Cond::Secure {
                if_exists, value, ..
            } => match r.secure {
                None => *if_exists,
                Some(s) => s.to_lowercase() == value.to_string(),
            },
            Cond::Ip { negated, cidrs } => match r.ip {
                None => *negated,
                Some(ip) => cidrs.iter().any(|c| in_cidr(c, ip)) != *negated,
            },
        }
    }

    fn who_matches(who: Who, caller: &Caller) -> bool {
        let iam_identity = caller.arn.starts_with("arn:");
        match who {
            Who::Star | Who::AwsStar => true,
            Who::Account(a) | Who::Root(a) => iam_identity && caller.account == a,
            Who::User(arn) => caller.arn == arn,
            Who::Role(arn) => {
                // arn:aws:iam::ACCT:role/[path/]NAME also covers
                // arn:aws:sts::ACCT:assumed-role/NAME/<session>.
                let account = &arn[13..25];
                let name = arn.rsplit('/').next().unwrap_or_default();
                let session_prefix = format!("arn:aws:sts::{account}:assumed-role/{name}/");
                caller.arn == arn
                    || (caller.arn.starts_with(&session_prefix)
                        && caller.arn.len() > session_prefix.len())
            }
            Who::Service(s) => caller.arn == s,
        }
    }

    fn stmt_applies(s: &Stmt, r: &Req) -> bool {
        let action_listed = s
            .actions
            .iter()
            .any(|p| like(&p.to_lowercase(), &r.action.to_lowercase()));
        let resource_listed = s.resources.iter().any(|p| like(p, r.resource));
        let principal_ok = match &s.principal {
            None => true,
            Some((not, who)) => who.iter().any(|w| who_matches(*w, &CALLERS[r.caller])) != *not,
        };
        action_listed != s.not_action
            && resource_listed != s.not_resource
            && principal_ok
            && s.conditions.iter().all(|c| cond_holds(c, r))
    }

    fn reference(identity: &[Vec<Stmt>], resource: Option<&Vec<Stmt>>, r: &Req) -> Decision {
        let all: Vec<&Stmt> = identity
            .iter()
            .flatten()
            .chain(resource.into_iter().flatten())
            .collect();
        if all.iter().any(|s| s.deny && stmt_applies(s, r)) {
            Decision::ExplicitDeny
        } else if all.iter().any(|s| !s.deny && stmt_applies(s, r)) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    fn context_of(r: &Req) -> Context {
        let mut context = Context::new();
        if let Some(tags) = &r.tag {
            context.insert(TAG_KEY, tags.iter().map(|t| t.to_string()).collect());
        }
        if let Some(secure) = r.secure {
            context.set(SECURE_KEY, secure);
        }
        if let Some(ip) = r.ip {
            context.set(IP_KEY, ip);
        }
        context
    }

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(3000))]

        #[test]
        fn evaluate_agrees_with_the_reference_model(
            identity in prop::collection::vec(prop::collection::vec(stmt(false), 1..5), 0..3),
            resource in prop::option::of(prop::collection::vec(stmt(true), 1..5)),
            requests in prop::collection::vec(request_spec(), 1..6),
        ) {
            let identity_policies: Vec<Policy> = identity
                .iter()
                .map(|s| Policy::parse(&render(s), PolicyKind::Identity).expect("identity parses"))
                .collect();
            let resource_policy = resource
                .as_ref()
                .map(|s| Policy::parse(&render(s), PolicyKind::Resource).expect("resource parses"));
            let refs: Vec<&Policy> = identity_policies.iter().collect();
            for r in &requests {
                let caller = &CALLERS[r.caller];
                let principal = Principal::new(caller.arn, caller.account);
                let context = context_of(r);
                let request = Request {
                    principal: &principal,
                    action: r.action,
                    resource: r.resource,
                    context: &context,
                };
                let actual = evaluate(&refs, resource_policy.as_ref(), &request);
                let expected = reference(&identity, resource.as_ref(), r);
                prop_assert_eq!(actual, expected, "request {:?}", r);
            }
        }
    }

    // ---- robustness ---------------------------------------------------------------------

    const VOCABULARY: &[&str] = &[
        "Version",
        "2012-10-17",
        "2008-10-17",
        "Id",
        "Statement",
        "Sid",
        "Effect",
        "Allow",
        "Deny",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Principal",
        "NotPrincipal",
        "Condition",
        "AWS",
        "Service",
        "*",
        "lambda:*",
        "lambda:Invoke?",
        "arn:aws:lambda:*",
        "arn:aws:iam::000000000000:root",
        "000000000000",
        "s3.amazonaws.com",
        "StringEquals",
        "StringNotLikeIfExists",
        "ForAllValues:StringLike",
        "ForAnyValue:IpAddress",
        "IpAddress",
        "10.0.0.0/8",
        "::/0",
        "Bool",
        "Null",
        "true",
        "NumericLessThan",
        "1e400",
        "DateLessThan",
        "2020-01-01",
        "ArnLike",
        "aws:SourceIp",
        "aws:k",
        "",
    ];

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => pick(VOCABULARY).prop_map(str::to_string),
            1 => any::<String>(),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            word().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((word(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// A structurally plausible policy with arbitrary values in its slots.
    fn policy_shaped() -> impl Strategy<Value = Value> {
        let statement = (
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
        )
            .prop_map(|(effect, action, resource, principal, condition)| {
                let mut m = Map::new();
                let slots = [
                    ("Effect", effect),
                    ("Action", action),
                    ("Resource", resource),
                    ("Principal", principal),
                    ("Condition", condition),
                ];
                for (name, value) in slots {
                    if let Some(value) = value {
                        m.insert(name.into(), value);
                    }
                }
                Value::Object(m)
            });
        (
            prop::option::of(json_value()),
            prop::collection::vec(statement, 0..3),
        )
            .prop_map(|(version, statements)| {
                let mut m = Map::new();
                if let Some(version) = version {
                    m.insert("Version".into(), version);
                }
                m.insert("Statement".into(), Value::Array(statements));
                Value::Object(m)
            })
    }

    fn exercise(document: &str) {
        let principal = Principal::new("arn:aws:iam::000000000000:user/alice", "000000000000");
        let mut context = Context::new();
        context.set("aws:SourceIp", "10.0.0.1");
        context.insert("aws:k", vec!["v".into(), "w".into()]);
        for kind in [PolicyKind::Identity, PolicyKind::Resource] {
            match Policy::parse(document, kind) {
                Ok(policy) => {
                    let request = Request {
                        principal: &principal,
                        action: "lambda:InvokeFunction",
                        resource: "arn:aws:lambda:us-east-1:000000000000:function:f",
                        context: &context,
                    };
                    let _ = policy.decide(&request);
                    let _ = evaluate(&[&policy], Some(&policy), &request);
                }
                Err(error) => assert!(!error.to_string().is_empty()),
            }
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn parse_never_panics_on_arbitrary_json(value in json_value()) {
            exercise(&value.to_string());
        }

        #[test]
        fn parse_never_panics_on_policy_shaped_json(value in policy_shaped()) {
            exercise(&value.to_string());
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
            exercise(&text);
        }

        #[test]
        fn parse_never_panics_on_mangled_policies(
            cut in 0usize..400,
            insert in any::<String>(),
        ) {
            let valid = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":["lambda:*"],"Resource":"*","Condition":{"ForAnyValue:IpAddressIfExists":{"aws:SourceIp":["10.0.0.0/8"]}}}]}"#;
            let chars: Vec<char> = valid.chars().collect();
            let at = cut % (chars.len() + 1);
            let mangled: String = chars[..at].iter().copied().chain(insert.chars()).chain(chars[at..].iter().copied()).collect();
            exercise(&mangled);
            let truncated: String = chars[..at].iter().collect();
            exercise(&truncated);
        }
    }
}
