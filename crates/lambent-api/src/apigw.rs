//! The HTTP API gateway: requests to an API's address on the gateway listener are matched
//! to a stage and a route, authorized (JWT, Lambda or IAM authorizers), turned into a
//! payload-format 1.0 or 2.0 event and answered with what the function returns, as API
//! Gateway's HTTP APIs do.
//!
//! An API is addressed by its Host (`<api-id>.execute-api.<region>.localhost[:port]`) or by
//! path (`/<api-id>/…`); then the first path segment names a stage, or the `$default` stage
//! serves the whole path.

use crate::apis::{self, Api, Stage};

/// Where a request to an API is going.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ApiAddress {
    /// The API's id.
    pub api_id: String,
    /// The path after the API's prefix (with the stage segment, if any).
    pub path: String,
    /// The domain name functions see in `requestContext.domainName`.
    pub domain_name: String,
}

/// The API a request is addressed to, from its Host header and path: Host-based first,
/// then path-based (`/<api-id>/…`).
pub(crate) fn address(host: Option<&str>, path: &str, region: &str) -> Option<ApiAddress> {
    let path = if path.is_empty() { "/" } else { path };
    if let Some(host) = host {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_ascii_lowercase();
        if let Some((label, rest)) = name.split_once('.')
            && rest.starts_with("execute-api.")
            && apis::is_api_id(label)
        {
            return Some(ApiAddress {
                api_id: label.to_string(),
                path: path.to_string(),
                domain_name: name.clone(),
            });
        }
    }
    let rest = path.strip_prefix('/')?;
    let (label, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !apis::is_api_id(label) {
        return None;
    }
    Some(ApiAddress {
        api_id: label.to_string(),
        path: format!("/{tail}"),
        domain_name: format!("{label}.execute-api.{region}.localhost"),
    })
}

/// The stage serving `path` and the path within it: a stage named by the first segment, else
/// the `$default` stage with the whole path.
pub(crate) fn stage_of<'a>(api: &'a Api, path: &str) -> Option<(&'a Stage, String)> {
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if !first.is_empty()
        && first != "$default"
        && let Some(stage) = api.stage(first)
    {
        return Some((stage, format!("/{rest}")));
    }
    api.stage("$default").map(|stage| (stage, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_host_and_by_path() {
        let a = address(
            Some("abcde12345.execute-api.us-east-1.localhost:9080"),
            "/prod/x",
            "us-east-1",
        )
        .unwrap();
        assert_eq!(a.api_id, "abcde12345");
        assert_eq!(a.path, "/prod/x");
        let b = address(Some("127.0.0.1:9080"), "/abcde12345/prod/x", "us-east-1").unwrap();
        assert_eq!(b.api_id, "abcde12345");
        assert_eq!(b.path, "/prod/x");
        assert_eq!(b.domain_name, "abcde12345.execute-api.us-east-1.localhost");
        assert!(address(Some("127.0.0.1"), "/short/x", "us-east-1").is_none());
        assert!(address(None, "/", "us-east-1").is_none());
    }
}
