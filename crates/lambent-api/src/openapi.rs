//! OpenAPI 3 import for HTTP APIs, as API Gateway's ImportApi reads it: every path and
//! method with an `x-amazon-apigateway-integration` of type `aws_proxy` becomes a route to
//! the function its `uri` names; `x-amazon-apigateway-any-method` is `ANY`, the path
//! `/$default` the `$default` route; security schemes with `x-amazon-apigateway-authorizer`
//! (`jwt` or `request`) become authorizers, and `x-amazon-apigateway-authtype: awsSigv4`
//! marks AWS_IAM routes; `x-amazon-apigateway-cors` is the API's CORS configuration.
//! Anything API Gateway would act on that Lambent does not is refused, all of it named in
//! one error, rather than imported half-way.

use hyper::StatusCode;
use serde_json::{Map, Value};

use crate::apis::{self, Api, Authorizer, JwtConfiguration, Route};
use crate::{ApiError, ApiRequest, ApiState};

/// HTTP methods an OpenAPI path item may hold, and API Gateway's any-method extension.
const METHODS: &[(&str, &str)] = &[
    ("get", "GET"),
    ("post", "POST"),
    ("put", "PUT"),
    ("patch", "PATCH"),
    ("delete", "DELETE"),
    ("head", "HEAD"),
    ("options", "OPTIONS"),
    ("x-amazon-apigateway-any-method", "ANY"),
];

/// Top-level API Gateway extensions Lambent does not apply (REST-API or unsupported ones).
const UNSUPPORTED_TOP_LEVEL: &[&str] = &[
    "x-amazon-apigateway-api-key-source",
    "x-amazon-apigateway-binary-media-types",
    "x-amazon-apigateway-gateway-responses",
    "x-amazon-apigateway-minimum-compression-size",
    "x-amazon-apigateway-policy",
    "x-amazon-apigateway-request-validators",
    "x-amazon-apigateway-endpoint-configuration",
    "x-amazon-apigateway-tag-value",
];

/// Integration members that change what is sent or answered, which Lambent does not do.
const UNSUPPORTED_INTEGRATION: &[&str] = &[
    "requestParameters",
    "responseParameters",
    "requestTemplates",
    "responses",
    "tlsConfig",
    "connectionId",
    "integrationSubtype",
    "credentials",
];

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

/// The function ARN inside an API Gateway integration URI
/// (`arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<arn>/invocations`).
pub(crate) fn function_of_uri(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once(":lambda:path/")?;
    let rest = rest.split_once("/functions/")?.1;
    rest.strip_suffix("/invocations")
}

/// Parses an OpenAPI document given as JSON or YAML.
fn parse_document(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request(
            "the request body must be an OpenAPI 3 document",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(doc) => Ok(doc),
        Err(json_error) => serde_norway::from_slice::<Value>(body).map_err(|yaml_error| {
            bad_request(format!(
                "the OpenAPI document is neither JSON ({json_error}) nor YAML ({yaml_error})"
            ))
        }),
    }
}

/// What an OpenAPI document defines.
struct Definition {
    name: String,
    description: Option<String>,
    routes: Vec<Route>,
    authorizers: Vec<Authorizer>,
    cors: Option<Value>,
}

/// Reads an OpenAPI document into routes and authorizers, collecting every problem.
fn read(state: &ApiState, doc: &Value) -> Result<Definition, ApiError> {
    let mut problems: Vec<String> = Vec::new();
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with("3.") {
        let found = doc.get("swagger").and_then(Value::as_str).map_or_else(
            || format!("openapi {version:?}"),
            |v| format!("swagger {v}"),
        );
        return Err(bad_request(format!(
            "only OpenAPI 3.x documents can be imported (found {found}); convert Swagger 2.0 first"
        )));
    }
    let name = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("imported")
        .to_string();
    let description = doc
        .pointer("/info/description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    for key in UNSUPPORTED_TOP_LEVEL {
        if doc.get(*key).is_some() {
            problems.push(format!("{key} is not supported"));
        }
    }
    let cors = doc.get("x-amazon-apigateway-cors").map(|cors| {
        let mut out = Map::new();
        for (from, to) in [
            ("allowOrigins", "AllowOrigins"),
            ("allowMethods", "AllowMethods"),
            ("allowHeaders", "AllowHeaders"),
            ("exposeHeaders", "ExposeHeaders"),
            ("maxAge", "MaxAge"),
            ("allowCredentials", "AllowCredentials"),
        ] {
            if let Some(v) = cors.get(from) {
                out.insert(to.to_string(), v.clone());
            }
        }
        Value::Object(out)
    });

    // Security schemes → authorizers (or AWS_IAM).
    let mut authorizers = Vec::new();
    let mut iam_schemes = Vec::new();
    if let Some(Value::Object(schemes)) = doc.pointer("/components/securitySchemes") {
        for (scheme_name, scheme) in schemes {
            if scheme
                .get("x-amazon-apigateway-authtype")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("awsSigv4"))
            {
                iam_schemes.push(scheme_name.clone());
                continue;
            }
            let Some(spec) = scheme.get("x-amazon-apigateway-authorizer") else {
                problems.push(format!(
                    "security scheme {scheme_name} has no x-amazon-apigateway-authorizer (only jwt, request and awsSigv4 schemes are supported)"
                ));
                continue;
            };
            match authorizer_of(scheme_name, spec) {
                Ok(mut authorizer) => match apis::check_authorizer(state, &mut authorizer) {
                    Ok(()) => authorizers.push(authorizer),
                    Err(e) => {
                        problems.push(format!("security scheme {scheme_name}: {}", e.message))
                    }
                },
                Err(why) => problems.push(format!("security scheme {scheme_name}: {why}")),
            }
        }
    }
    let top_security = doc.get("security");

    let mut routes = Vec::new();
    let empty = Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if paths.is_empty() {
        problems.push("the document has no paths".into());
    }
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            problems.push(format!("path {path} is not an object"));
            continue;
        };
        if item.contains_key("$ref") {
            problems.push(format!("path {path}: $ref path items are not supported"));
        }
        for (field, method) in METHODS {
            let Some(operation) = item.get(*field) else {
                continue;
            };
            let key = if path == "/$default" {
                "$default".to_string()
            } else {
                format!("{method} {path}")
            };
            match route_of(
                state,
                &key,
                operation,
                top_security,
                &authorizers,
                &iam_schemes,
            ) {
                Ok(route) => routes.push(route),
                Err(why) => problems.push(format!("{key}: {why}")),
            }
        }
        for field in item.keys() {
            let known = METHODS.iter().any(|(f, _)| f == field)
                || matches!(
                    field.as_str(),
                    "summary" | "description" | "parameters" | "servers" | "$ref" | "trace"
                );
            if !known && field.starts_with("x-amazon-apigateway") {
                problems.push(format!("path {path}: {field} is not supported"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(bad_request(format!(
            "the OpenAPI document uses what Lambent cannot import: {}",
            problems.join("; ")
        )));
    }
    Ok(Definition {
        name,
        description,
        routes,
        authorizers,
        cors,
    })
}

fn authorizer_of(name: &str, spec: &Value) -> Result<Authorizer, String> {
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let identity_source =
        apis::strings(spec.get("identitySource"), |text| text.split(',').collect());
    let mut authorizer = Authorizer {
        authorizer_id: apis::new_id(6),
        name: name.to_string(),
        authorizer_type: String::new(),
        identity_source,
        jwt_configuration: None,
        jwks_uri: spec
            .get("jwksUri")
            .and_then(Value::as_str)
            .map(str::to_owned),
        authorizer_uri: None,
        authorizer_payload_format_version: spec
            .get("authorizerPayloadFormatVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        enable_simple_responses: spec
            .get("enableSimpleResponses")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        authorizer_result_ttl_in_seconds: spec
            .get("authorizerResultTtlInSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    match kind.as_str() {
        "jwt" => {
            let config = spec
                .get("jwtConfiguration")
                .ok_or("a jwt authorizer needs jwtConfiguration")?;
            let audience = apis::strings(config.get("audience"), |text| vec![text]);
            authorizer.authorizer_type = "JWT".into();
            authorizer.jwt_configuration = Some(JwtConfiguration {
                issuer: config
                    .get("issuer")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                audience,
            });
        }
        "request" => {
            let uri = spec
                .get("authorizerUri")
                .and_then(Value::as_str)
                .ok_or("a request authorizer needs authorizerUri")?;
            authorizer.authorizer_type = "REQUEST".into();
            authorizer.authorizer_uri = Some(uri.to_string());
        }
        other => {
            return Err(format!(
                "authorizer type {other:?} is not supported (jwt or request)"
            ));
        }
    }
    Ok(authorizer)
}

fn route_of(
    state: &ApiState,
    key: &str,
    operation: &Value,
    top_security: Option<&Value>,
    authorizers: &[Authorizer],
    iam_schemes: &[String],
) -> Result<Route, String> {
    let integration = operation
        .get("x-amazon-apigateway-integration")
        .ok_or("no x-amazon-apigateway-integration")?;
    if integration.get("$ref").is_some() {
        return Err("integrations by $ref are not supported".into());
    }
    let kind = integration
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    if kind != "aws_proxy" {
        return Err(format!(
            "integration type {kind:?} is not supported (only aws_proxy, a Lambda proxy integration)"
        ));
    }
    let unsupported: Vec<&str> = UNSUPPORTED_INTEGRATION
        .iter()
        .copied()
        .filter(|k| integration.get(*k).is_some())
        .collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "integration members not supported: {}",
            unsupported.join(", ")
        ));
    }
    if integration
        .get("connectionType")
        .and_then(Value::as_str)
        .is_some_and(|c| c != "INTERNET")
    {
        return Err("VPC_LINK connections are not supported".into());
    }
    let uri = integration
        .get("uri")
        .and_then(Value::as_str)
        .ok_or("the integration has no uri")?;
    if uri.contains("${") {
        return Err(format!(
            "uri {uri:?} holds an unresolved substitution; give the function's ARN or name"
        ));
    }
    let function = function_of_uri(uri).unwrap_or(uri);
    let target = apis::check_target(state, function).map_err(|e| e.message)?;
    let payload_format_version = integration
        .get("payloadFormatVersion")
        .and_then(Value::as_str)
        .unwrap_or("2.0")
        .to_string();
    let timeout_in_millis = integration
        .get("timeoutInMillis")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(30_000);

    let security = operation.get("security").or(top_security);
    let mut authorization_type = "NONE".to_string();
    let mut authorizer_id = None;
    let mut authorization_scopes = Vec::new();
    if let Some(Value::Array(requirements)) = security {
        let mut names: Vec<(String, Vec<String>)> = Vec::new();
        for requirement in requirements {
            for (name, scopes) in requirement.as_object().into_iter().flatten() {
                let scopes = apis::strings(Some(scopes), |_| Vec::new());
                names.push((name.clone(), scopes));
            }
        }
        if names.len() > 1 {
            return Err("more than one security requirement; API Gateway applies one".into());
        }
        if let Some((name, scopes)) = names.into_iter().next() {
            if iam_schemes.contains(&name) {
                authorization_type = "AWS_IAM".into();
            } else {
                let authorizer = authorizers.iter().find(|a| a.name == name).ok_or_else(|| {
                    format!("security scheme {name} is not defined or not usable")
                })?;
                authorization_type = if authorizer.authorizer_type == "JWT" {
                    "JWT".into()
                } else {
                    "CUSTOM".into()
                };
                authorizer_id = Some(authorizer.authorizer_id.clone());
                if authorizer.authorizer_type == "JWT" {
                    authorization_scopes = scopes;
                }
            }
        }
    }
    Ok(Route {
        route_id: apis::new_id(7),
        route_key: key.to_string(),
        target,
        payload_format_version,
        timeout_in_millis,
        authorization_type,
        authorizer_id,
        authorization_scopes,
        route_response_selection_expression: None,
    })
}

/// Imports an OpenAPI document: a new API (`id` = `None`) or a replacement of an existing
/// API's routes, authorizers and CORS. `?stage=<name>` deploys it to that stage.
pub(crate) fn import(
    req: &ApiRequest,
    state: &ApiState,
    id: Option<&str>,
) -> Result<Api, ApiError> {
    let doc = parse_document(&req.body)?;
    let definition = read(state, &doc)?;
    let stage = req.query("stage").map(str::to_owned);
    let api = match id {
        None => {
            let mut api = Api {
                api_id: apis::new_id(10),
                name: definition.name,
                protocol_type: "HTTP".into(),
                route_selection_expression: "${request.method} ${request.path}".into(),
                description: definition.description,
                cors_configuration: definition.cors,
                created_date: apis::unix_now(),
                routes: Vec::new(),
                authorizers: definition.authorizers,
                stages: Vec::new(),
            };
            for mut route in definition.routes {
                apis::check_route(&api, &mut route)?;
                api.routes.push(route);
            }
            apis::store_new(state, &api)?;
            api
        }
        Some(id) => {
            let mut api = apis::load(state, id)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFoundException",
                    format!("Invalid API identifier specified {id}"),
                )
            })?;
            api.routes.clear();
            api.authorizers = definition.authorizers.clone();
            let mut routes = Vec::new();
            for mut route in definition.routes {
                apis::check_route(&api, &mut route)?;
                api.routes.push(route.clone());
                routes.push(route);
            }
            apis::replace_definition(state, id, routes, definition.authorizers, definition.cors)?
        }
    };
    let api = match stage {
        Some(stage) => apis::deploy_to(state, &api.api_id, &stage, Some("OpenAPI import".into()))?,
        None => api,
    };
    tracing::info!(api = %api.api_id, routes = api.routes.len(), "OpenAPI document imported");
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn function_arns_inside_integration_uris() {
        let uri = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f:live/invocations";
        assert_eq!(
            function_of_uri(uri),
            Some("arn:aws:lambda:us-east-1:123456789012:function:f:live")
        );
        assert_eq!(
            function_of_uri("arn:aws:lambda:us-east-1:1:function:f"),
            None
        );
    }

    #[test]
    fn reads_yaml_and_json() {
        let yaml = b"openapi: 3.0.1\ninfo:\n  title: t\npaths: {}\n";
        assert_eq!(parse_document(yaml).unwrap()["info"]["title"], json!("t"));
        assert!(parse_document(b"{\"openapi\":\"3.0.1\"}").is_ok());
        assert!(parse_document(b"  ").is_err());
        assert!(parse_document(b"{ nope: [").is_err());
    }
}
