//! Function names, qualifiers and ARNs, in every form Lambda accepts them.

use crate::ValidationError;

/// The version or alias part of a function reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// The unpublished, mutable version.
    Latest,
    /// A published version number.
    Version(u64),
    /// An alias name.
    Alias(String),
}

impl Qualifier {
    /// Parses a qualifier as it appears after `:` or in `?Qualifier=`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw == "$LATEST" {
            return Ok(Self::Latest);
        }
        if !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_digit()) {
            return raw
                .parse()
                .map(Self::Version)
                .map_err(|_| ValidationError::new(format!("Invalid version number: {raw}")));
        }
        let valid = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self::Alias(raw.to_string()))
        } else {
            Err(ValidationError::new(format!(
                "1 validation error detected: Value '{raw}' at 'qualifier' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
            )))
        }
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A function as a caller named it: a bare name, `name:qualifier`, a partial ARN
/// (`account:function:name[:qualifier]`) or a full ARN, plus an optional `?Qualifier=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The bare function name.
    pub name: String,
    /// The qualifier, if one was given in the name or the query.
    pub qualifier: Option<Qualifier>,
}

/// Longest function name Lambda accepts (the bare-name form).
pub const MAX_FUNCTION_NAME_LEN: usize = 64;

impl FunctionRef {
    /// Parses a `FunctionName` path label (already percent-decoded) and an optional
    /// `Qualifier` query value. A qualifier given both ways must agree.
    pub fn parse(raw: &str, query_qualifier: Option<&str>) -> Result<Self, ValidationError> {
        let (name, inline) = split_reference(raw)?;
        validate_function_name(name)?;
        let inline = inline.map(Qualifier::parse).transpose()?;
        let query = query_qualifier
            .filter(|q| !q.is_empty())
            .map(Qualifier::parse)
            .transpose()?;
        let qualifier = match (inline, query) {
            (Some(a), Some(b)) if a != b => {
                return Err(ValidationError::new(format!(
                    "The derived qualifier from the function name does not match the specified qualifier. \
                     Derived qualifier: {a}, specified qualifier: {b}"
                )));
            }
            (a, b) => a.or(b),
        };
        Ok(Self {
            name: name.to_string(),
            qualifier,
        })
    }

    /// Parses a reference that must not carry a qualifier (e.g. CreateFunction's FunctionName).
    pub fn parse_unqualified(raw: &str) -> Result<Self, ValidationError> {
        let parsed = Self::parse(raw, None)?;
        if parsed.qualifier.is_some() {
            return Err(ValidationError::new(format!(
                "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: \
                 Member must not include a qualifier"
            )));
        }
        Ok(parsed)
    }

    /// The qualifier in effect: the given one or `$LATEST`.
    pub fn qualifier_or_latest(&self) -> Qualifier {
        self.qualifier.clone().unwrap_or(Qualifier::Latest)
    }
}

/// Splits any accepted reference form into the bare name and an inline qualifier.
fn split_reference(raw: &str) -> Result<(&str, Option<&str>), ValidationError> {
    let invalid = || {
        ValidationError::new(format!(
            "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: \
             (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
        ))
    };
    if raw.is_empty() || raw.len() > 170 {
        return Err(invalid());
    }
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [name] => Ok((name, None)),
        [name, qualifier] => Ok((name, Some(qualifier))),
        [account, "function", name] if is_account(account) => Ok((name, None)),
        [account, "function", name, qualifier] if is_account(account) => {
            Ok((name, Some(qualifier)))
        }
        [
            "arn",
            partition,
            "lambda",
            _region,
            account,
            "function",
            name,
        ] if partition.starts_with("aws") && is_account(account) => Ok((name, None)),
        [
            "arn",
            partition,
            "lambda",
            _region,
            account,
            "function",
            name,
            qualifier,
        ] if partition.starts_with("aws") && is_account(account) => Ok((name, Some(qualifier))),
        _ => Err(invalid()),
    }
}

/// The region and account a function reference names, when it is an ARN (`None` region for
/// the partial `account:function:name` form).
pub fn referenced_home(raw: &str) -> Option<(Option<&str>, &str)> {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [account, "function", ..] if is_account(account) => Some((None, account)),
        ["arn", _, "lambda", region, account, ..] => Some((Some(region), account)),
        _ => None,
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a bare function name: 1–64 characters of `[a-zA-Z0-9-_]`.
pub fn validate_function_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > MAX_FUNCTION_NAME_LEN {
        return Err(ValidationError::new(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: \
             Member must have length less than or equal to {MAX_FUNCTION_NAME_LEN} and at least 1"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ValidationError::new(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+"
        )));
    }
    Ok(())
}

/// Where functions live: the region and account that every ARN carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnContext {
    /// Region name, e.g. `us-east-1`.
    pub region: String,
    /// 12-digit account id.
    pub account_id: String,
}

impl ArnContext {
    /// `arn:aws:lambda:<region>:<account>:function:<name>`.
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account_id
        )
    }

    /// The function ARN with `:<qualifier>` appended.
    pub fn qualified_function_arn(&self, name: &str, qualifier: &Qualifier) -> String {
        format!("{}:{qualifier}", self.function_arn(name))
    }

    /// The ARN a caller named: qualified when a qualifier was given, else unqualified.
    pub fn arn_as_named(&self, name: &str, qualifier: Option<&Qualifier>) -> String {
        match qualifier {
            Some(q) => self.qualified_function_arn(name, q),
            None => self.function_arn(name),
        }
    }

    /// The execution role used when none is meaningful.
    pub fn default_role(&self) -> String {
        format!("arn:aws:iam::{}:role/lambent-default", self.account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reference_form() {
        let cases = [
            ("foo", None, "foo", None),
            ("foo:$LATEST", None, "foo", Some(Qualifier::Latest)),
            ("foo:7", None, "foo", Some(Qualifier::Version(7))),
            (
                "foo:live",
                None,
                "foo",
                Some(Qualifier::Alias("live".into())),
            ),
            ("123456789012:function:foo", None, "foo", None),
            (
                "123456789012:function:foo:3",
                None,
                "foo",
                Some(Qualifier::Version(3)),
            ),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:foo",
                None,
                "foo",
                None,
            ),
            (
                "arn:aws:lambda:eu-west-1:123456789012:function:foo:prod",
                None,
                "foo",
                Some(Qualifier::Alias("prod".into())),
            ),
            ("foo", Some("$LATEST"), "foo", Some(Qualifier::Latest)),
            ("foo:2", Some("2"), "foo", Some(Qualifier::Version(2))),
        ];
        for (raw, query, name, qualifier) in cases {
            let parsed = FunctionRef::parse(raw, query).unwrap();
            assert_eq!(parsed.name, name, "{raw}");
            assert_eq!(parsed.qualifier, qualifier, "{raw}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        for raw in [
            "",
            "has space",
            "bad/char",
            "a:b:c",
            "12345:function:foo",
            "arn:aws:s3:us-east-1:123456789012:function:foo",
            &"x".repeat(65),
            "foo:bad qualifier",
        ] {
            assert!(FunctionRef::parse(raw, None).is_err(), "accepted {raw:?}");
        }
        assert!(FunctionRef::parse("foo:1", Some("2")).is_err());
        assert!(FunctionRef::parse_unqualified("foo:1").is_err());
        assert!(FunctionRef::parse_unqualified(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn finds_the_home_of_arns() {
        assert_eq!(referenced_home("foo"), None);
        assert_eq!(referenced_home("foo:1"), None);
        assert_eq!(
            referenced_home("123456789012:function:foo"),
            Some((None, "123456789012"))
        );
        assert_eq!(
            referenced_home("arn:aws:lambda:eu-west-1:123456789012:function:foo:2"),
            Some((Some("eu-west-1"), "123456789012"))
        );
    }

    #[test]
    fn builds_arns() {
        let ctx = ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        assert_eq!(
            ctx.function_arn("f"),
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(
            ctx.qualified_function_arn("f", &Qualifier::Latest),
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST"
        );
        assert_eq!(
            ctx.arn_as_named("f", Some(&Qualifier::Version(2))),
            "arn:aws:lambda:us-east-1:000000000000:function:f:2"
        );
        assert_eq!(ctx.arn_as_named("f", None), ctx.function_arn("f"));
    }
}
