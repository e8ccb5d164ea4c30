//! What each request asks to do, in IAM's terms: the action name (`lambda:GetFunction`, …)
//! and the resource ARN it acts on (a function ARN with its qualifier, a layer version, an
//! event-source mapping, …), as AWS's Service Authorization Reference lists them.

use hyper::Method;

use lambent_types::FunctionRef;
use lambent_types::names::ArnContext;

/// The action and resource of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// IAM action name, e.g. `lambda:InvokeFunction`.
    pub action: String,
    /// The resource ARN (or `*` for operations on no single resource).
    pub resource: String,
}

/// The ARN of one of Lambent's own resources: `arn:lambent:<kind>:<region>:<account>:<name>`.
fn lambent_arn(arns: &ArnContext, kind: &str, name: &str) -> String {
    format!(
        "arn:lambent:{kind}:{}:{}:{name}",
        arns.region, arns.account_id
    )
}

fn target(action: &str, resource: String) -> Option<Target> {
    Some(Target {
        action: action.to_string(),
        resource,
    })
}

/// The function ARN a path's `{FunctionName}` and `?Qualifier` stand for; `*` when the name
/// does not parse (the operation itself then answers with the precise error).
fn function_arn(arns: &ArnContext, label: &str, qualifier: Option<&str>) -> String {
    match FunctionRef::parse(label, qualifier) {
        Ok(function) => arns.arn_as_named(&function.name, function.qualifier.as_ref()),
        Err(_) => "*".to_string(),
    }
}

fn layer_arn(arns: &ArnContext, layer: &str, version: Option<&str>) -> String {
    // `{LayerName}` may itself be a layer ARN.
    let name = layer.rsplit(':').next().unwrap_or(layer);
    let base = format!(
        "arn:aws:lambda:{}:{}:layer:{name}",
        arns.region, arns.account_id
    );
    match version {
        Some(version) => format!("{base}:{version}"),
        None => base,
    }
}

/// The action and resource of a Lambda REST request, from its method, percent-decoded path
/// segments, a query lookup and (for CreateFunction) its body; `None` for paths that are
/// no operation (the router then answers 404).
pub(crate) fn lambda_target(
    arns: &ArnContext,
    method: &Method,
    segments: &[&str],
    query: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Option<Target> {
    let q = query("Qualifier");
    let q = q.as_deref().filter(|q| !q.is_empty());
    let f = |label: &str| function_arn(arns, label, q);
    let unqualified = |label: &str| function_arn(arns, label, None);
    let star = || "*".to_string();
    let m = method.clone();
    match (m, segments) {
        (Method::POST, ["2015-03-31", "functions"]) => {
            let name = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|doc| doc["FunctionName"].as_str().map(str::to_string));
            target(
                "lambda:CreateFunction",
                name.map_or_else(star, |n| unqualified(&n)),
            )
        }
        (Method::GET, ["2015-03-31", "functions"]) => target("lambda:ListFunctions", star()),
        (Method::GET, ["2015-03-31", "functions", fname]) => target("lambda:GetFunction", f(fname)),
        (Method::DELETE, ["2015-03-31", "functions", fname]) => {
            target("lambda:DeleteFunction", f(fname))
        }
        (Method::GET, ["2015-03-31", "functions", fname, "configuration"]) => {
            target("lambda:GetFunctionConfiguration", f(fname))
        }
        (Method::PUT, ["2015-03-31", "functions", fname, "configuration"]) => {
            target("lambda:UpdateFunctionConfiguration", unqualified(fname))
        }
        (Method::PUT, ["2015-03-31", "functions", fname, "code"]) => {
            target("lambda:UpdateFunctionCode", unqualified(fname))
        }
        (Method::POST, ["2015-03-31", "functions", fname, "invocations"])
        | (
            Method::POST,
            [
                "2021-11-15",
                "functions",
                fname,
                "response-streaming-invocations",
            ],
        ) => target("lambda:InvokeFunction", f(fname)),
        (Method::POST, ["2014-11-13", "functions", fname, "invoke-async"]) => {
            target("lambda:InvokeFunction", unqualified(fname))
        }
        (Method::GET, ["2016-08-19", "account-settings"]) => {
            target("lambda:GetAccountSettings", star())
        }
        (Method::POST, ["2015-03-31", "functions", fname, "versions"]) => {
            target("lambda:PublishVersion", unqualified(fname))
        }
        (Method::GET, ["2015-03-31", "functions", fname, "versions"]) => {
            target("lambda:ListVersionsByFunction", unqualified(fname))
        }
        (Method::POST, ["2015-03-31", "functions", fname, "aliases"]) => {
            target("lambda:CreateAlias", unqualified(fname))
        }
        (Method::GET, ["2015-03-31", "functions", fname, "aliases"]) => {
            target("lambda:ListAliases", unqualified(fname))
        }
        (m, ["2015-03-31", "functions", fname, "aliases", alias]) => {
            let action = match m {
                Method::GET => "lambda:GetAlias",
                Method::PUT => "lambda:UpdateAlias",
                Method::DELETE => "lambda:DeleteAlias",
                _ => return None,
            };
            target(
                action,
                function_arn(arns, &format!("{fname}:{alias}"), None),
            )
        }
        (Method::GET, ["2018-10-31", "layers"]) => match (query("find").as_deref(), query("Arn")) {
            (Some("LayerVersion"), Some(arn)) => target("lambda:GetLayerVersion", arn),
            _ => target("lambda:ListLayers", star()),
        },
        (Method::POST, ["2018-10-31", "layers", layer, "versions"]) => {
            target("lambda:PublishLayerVersion", layer_arn(arns, layer, None))
        }
        (Method::GET, ["2018-10-31", "layers", layer, "versions"]) => {
            target("lambda:ListLayerVersions", layer_arn(arns, layer, None))
        }
        (m, ["2018-10-31", "layers", layer, "versions", n]) => {
            let action = match m {
                Method::GET => "lambda:GetLayerVersion",
                Method::DELETE => "lambda:DeleteLayerVersion",
                _ => return None,
            };
            target(action, layer_arn(arns, layer, Some(n)))
        }
        (Method::POST, ["2018-10-31", "layers", layer, "versions", n, "policy"]) => target(
            "lambda:AddLayerVersionPermission",
            layer_arn(arns, layer, Some(n)),
        ),
        (Method::GET, ["2018-10-31", "layers", layer, "versions", n, "policy"]) => target(
            "lambda:GetLayerVersionPolicy",
            layer_arn(arns, layer, Some(n)),
        ),
        (Method::DELETE, ["2018-10-31", "layers", layer, "versions", n, "policy", _]) => target(
            "lambda:RemoveLayerVersionPermission",
            layer_arn(arns, layer, Some(n)),
        ),
        (m, [_, "functions", fname, "concurrency"]) => {
            let action = match m {
                Method::PUT => "lambda:PutFunctionConcurrency",
                Method::GET => "lambda:GetFunctionConcurrency",
                Method::DELETE => "lambda:DeleteFunctionConcurrency",
                _ => return None,
            };
            target(action, unqualified(fname))
        }
        (m, [_, "functions", fname, "provisioned-concurrency"]) => {
            let action = match (m, q) {
                (Method::PUT, _) => "lambda:PutProvisionedConcurrencyConfig",
                (Method::GET, None) if query("List").is_some() => {
                    "lambda:ListProvisionedConcurrencyConfigs"
                }
                (Method::GET, _) => "lambda:GetProvisionedConcurrencyConfig",
                (Method::DELETE, _) => "lambda:DeleteProvisionedConcurrencyConfig",
                _ => return None,
            };
            target(action, f(fname))
        }
        (Method::POST, ["2015-03-31", "functions", fname, "policy"]) => {
            target("lambda:AddPermission", f(fname))
        }
        (Method::GET, ["2015-03-31", "functions", fname, "policy"]) => {
            target("lambda:GetPolicy", f(fname))
        }
        (Method::DELETE, ["2015-03-31", "functions", fname, "policy", _]) => {
            target("lambda:RemovePermission", f(fname))
        }
        (m, ["2017-03-31", "tags", arn]) => {
            let action = match m {
                Method::POST => "lambda:TagResource",
                Method::DELETE => "lambda:UntagResource",
                Method::GET => "lambda:ListTags",
                _ => return None,
            };
            target(action, (*arn).to_string())
        }
        (m, ["2019-09-25", "functions", fname, "event-invoke-config"]) => {
            let action = match m {
                Method::PUT => "lambda:PutFunctionEventInvokeConfig",
                Method::POST => "lambda:UpdateFunctionEventInvokeConfig",
                Method::GET => "lambda:GetFunctionEventInvokeConfig",
                Method::DELETE => "lambda:DeleteFunctionEventInvokeConfig",
                _ => return None,
            };
            target(action, f(fname))
        }
        (
            Method::GET,
            [
                "2019-09-25",
                "functions",
                fname,
                "event-invoke-config",
                "list",
            ],
        ) => target("lambda:ListFunctionEventInvokeConfigs", unqualified(fname)),
        (m, ["2021-10-31", "functions", fname, "url"]) => {
            let action = match m {
                Method::POST => "lambda:CreateFunctionUrlConfig",
                Method::GET => "lambda:GetFunctionUrlConfig",
                Method::PUT => "lambda:UpdateFunctionUrlConfig",
                Method::DELETE => "lambda:DeleteFunctionUrlConfig",
                _ => return None,
            };
            target(action, f(fname))
        }
        (Method::GET, ["2021-10-31", "functions", fname, "urls"]) => {
            target("lambda:ListFunctionUrlConfigs", unqualified(fname))
        }
        (Method::POST, ["2015-03-31", "event-source-mappings"]) => {
            target("lambda:CreateEventSourceMapping", star())
        }
        (Method::GET, ["2015-03-31", "event-source-mappings"]) => {
            target("lambda:ListEventSourceMappings", star())
        }
        (m, ["2015-03-31", "event-source-mappings", id]) => {
            let action = match m {
                Method::GET => "lambda:GetEventSourceMapping",
                Method::PUT => "lambda:UpdateEventSourceMapping",
                Method::DELETE => "lambda:DeleteEventSourceMapping",
                _ => return None,
            };
            target(
                action,
                format!(
                    "arn:aws:lambda:{}:{}:event-source-mapping:{id}",
                    arns.region, arns.account_id
                ),
            )
        }
        (m, ["2020-06-30", "functions", fname, "code-signing-config"]) => {
            let action = match m {
                Method::GET => "lambda:GetFunctionCodeSigningConfig",
                Method::PUT => "lambda:PutFunctionCodeSigningConfig",
                Method::DELETE => "lambda:DeleteFunctionCodeSigningConfig",
                _ => return None,
            };
            target(action, unqualified(fname))
        }
        (m, ["2024-08-31", "functions", fname, "recursion-config"]) => {
            let action = match m {
                Method::GET => "lambda:GetFunctionRecursionConfig",
                Method::PUT => "lambda:PutFunctionRecursionConfig",
                _ => return None,
            };
            target(action, unqualified(fname))
        }
        (
            m,
            [
                "2021-07-20",
                "functions",
                fname,
                "runtime-management-config",
            ],
        ) => {
            let action = match m {
                Method::GET => "lambda:GetRuntimeManagementConfig",
                Method::PUT => "lambda:PutRuntimeManagementConfig",
                _ => return None,
            };
            target(action, f(fname))
        }
        (Method::GET, ["lambent", "usage"]) => {
            let function = query("function").filter(|f| !f.is_empty());
            target(
                "lambent:GetUsage",
                function.map_or_else(star, |name| unqualified(&name)),
            )
        }
        (Method::GET, ["lambent", "events"]) => {
            let function = query("function").unwrap_or_default();
            target("lambent:ListEvents", unqualified(&function))
        }
        (Method::GET, ["lambent", "connections"]) => target("lambent:ListConnections", star()),
        (Method::POST, ["lambent", "schedules"]) => {
            let name = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|doc| doc["Name"].as_str().map(str::to_string))
                .unwrap_or_default();
            target(
                "lambent:CreateSchedule",
                lambent_arn(arns, "schedule", &name),
            )
        }
        (Method::GET, ["lambent", "schedules"]) => target("lambent:ListSchedules", star()),
        (m, ["lambent", "schedules", name]) => {
            let action = match m {
                Method::PUT => "lambent:UpdateSchedule",
                Method::GET => "lambent:GetSchedule",
                Method::DELETE => "lambent:DeleteSchedule",
                _ => return None,
            };
            target(action, lambent_arn(arns, "schedule", name))
        }
        (Method::POST, ["lambent", "apis"]) => target("lambent:CreateApi", star()),
        (Method::POST, ["lambent", "apis", "import"]) => target("lambent:ImportApi", star()),
        (Method::GET, ["lambent", "apis"]) => target("lambent:GetApis", star()),
        (m, ["lambent", "apis", id, rest @ ..]) => {
            let action = match (m, rest) {
                (Method::GET, _) => "lambent:GetApi",
                (Method::DELETE, []) => "lambent:DeleteApi",
                (Method::PUT, ["import"]) => "lambent:ImportApi",
                _ => "lambent:UpdateApi",
            };
            target(action, lambent_arn(arns, "api", id))
        }
        (Method::GET, ["lambent", "s3-sources"]) => target("lambent:ListS3Sources", star()),
        (m, ["lambent", "s3-sources", name]) => {
            let action = match m {
                Method::PUT => "lambent:PutS3Source",
                Method::GET => "lambent:GetS3Source",
                Method::DELETE => "lambent:DeleteS3Source",
                _ => return None,
            };
            target(action, lambent_arn(arns, "s3-source", name))
        }
        (m, ["lambent", "connections", name]) => {
            let action = match m {
                Method::PUT => "lambent:PutConnection",
                Method::GET => "lambent:GetConnection",
                Method::DELETE => "lambent:DeleteConnection",
                _ => return None,
            };
            target(action, lambent_arn(arns, "connection", name))
        }
        _ => None,
    }
}

/// The action and resource of a CloudWatch Logs request (`X-Amz-Target:
/// Logs_20140328.<Operation>`): `logs:<Operation>` on the log group named in the body.
pub(crate) fn logs_target(arns: &ArnContext, operation: &str, body: &[u8]) -> Target {
    let group = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|doc| doc["logGroupName"].as_str().map(str::to_string));
    Target {
        action: format!("logs:{operation}"),
        resource: group.map_or_else(
            || "*".to_string(),
            |group| {
                format!(
                    "arn:aws:logs:{}:{}:log-group:{group}",
                    arns.region, arns.account_id
                )
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> ArnContext {
        ArnContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }

    fn of(
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: &str,
    ) -> Option<(String, String)> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let lookup = |key: &str| {
            query
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_string())
        };
        lambda_target(&arns(), &method, &segments, &lookup, body.as_bytes())
            .map(|t| (t.action, t.resource))
    }

    const F: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    #[test]
    fn functions_and_invocations() {
        assert_eq!(
            of(
                Method::POST,
                "/2015-03-31/functions",
                &[],
                r#"{"FunctionName":"f"}"#
            ),
            Some(("lambda:CreateFunction".into(), F.into()))
        );
        assert_eq!(
            of(
                Method::POST,
                "/2015-03-31/functions/f/invocations",
                &[("Qualifier", "live")],
                ""
            ),
            Some(("lambda:InvokeFunction".into(), format!("{F}:live")))
        );
        assert_eq!(
            of(
                Method::POST,
                "/2015-03-31/functions/f:3/invocations",
                &[],
                ""
            ),
            Some(("lambda:InvokeFunction".into(), format!("{F}:3")))
        );
        assert_eq!(
            of(
                Method::POST,
                &format!("/2015-03-31/functions/{F}/invocations"),
                &[],
                ""
            ),
            Some(("lambda:InvokeFunction".into(), F.into()))
        );
        assert_eq!(
            of(Method::GET, "/2015-03-31/functions", &[], ""),
            Some(("lambda:ListFunctions".into(), "*".into()))
        );
        assert_eq!(
            of(
                Method::DELETE,
                "/2015-03-31/functions/f/aliases/live",
                &[],
                ""
            ),
            Some(("lambda:DeleteAlias".into(), format!("{F}:live")))
        );
        assert_eq!(
            of(Method::PUT, "/2017-10-31/functions/f/concurrency", &[], ""),
            Some(("lambda:PutFunctionConcurrency".into(), F.into()))
        );
        assert_eq!(
            of(Method::PATCH, "/2015-03-31/functions/f/aliases/a", &[], ""),
            None
        );
        assert_eq!(of(Method::GET, "/nothing/here", &[], ""), None);
    }

    #[test]
    fn other_resources() {
        assert_eq!(
            of(Method::GET, "/2018-10-31/layers/l/versions/2", &[], ""),
            Some((
                "lambda:GetLayerVersion".into(),
                "arn:aws:lambda:us-east-1:000000000000:layer:l:2".into()
            ))
        );
        assert_eq!(
            of(
                Method::DELETE,
                "/2015-03-31/event-source-mappings/abc",
                &[],
                ""
            ),
            Some((
                "lambda:DeleteEventSourceMapping".into(),
                "arn:aws:lambda:us-east-1:000000000000:event-source-mapping:abc".into()
            ))
        );
        assert_eq!(
            of(Method::GET, "/lambent/events", &[("function", "f")], ""),
            Some(("lambent:ListEvents".into(), F.into()))
        );
        let logs = logs_target(
            &arns(),
            "FilterLogEvents",
            br#"{"logGroupName":"/aws/lambda/f"}"#,
        );
        assert_eq!(logs.action, "logs:FilterLogEvents");
        assert_eq!(
            logs.resource,
            "arn:aws:logs:us-east-1:000000000000:log-group:/aws/lambda/f"
        );
    }
}
