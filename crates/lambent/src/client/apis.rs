//! `lambent api`: HTTP and WebSocket APIs (routes to functions, authorizers, stages,
//! deployments, OpenAPI import), served on the gateway listener (`--http-listen`).

use anyhow::Context as _;
use http::Method;
use serde_json::{Map, Value, json};

use super::queue::text_table;
use super::{Call, LambdaClient, OutputFormat, display_value, print_json, sigv4, write_stdout};

/// `lambent api` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ApiCommand {
    /// Create an API; with `--target`, a `$default` route to it on an auto-deployed
    /// `$default` stage (API Gateway's quick create).
    Create {
        /// API name.
        name: String,
        /// HTTP or WEBSOCKET.
        #[arg(long, default_value = "HTTP")]
        protocol: String,
        /// WebSocket: where a message's route key is, e.g. `$request.body.action`.
        #[arg(long)]
        route_selection: Option<String>,
        /// Quick create: the function every request goes to.
        #[arg(long)]
        target: Option<String>,
        /// CORS: an allowed origin (repeatable; `*` for any).
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
        /// CORS: an allowed method (repeatable).
        #[arg(long = "cors-method")]
        cors_methods: Vec<String>,
        /// CORS: an allowed request header (repeatable).
        #[arg(long = "cors-header")]
        cors_headers: Vec<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Create an HTTP API from an OpenAPI 3 document (JSON or YAML) with
    /// x-amazon-apigateway-integration extensions, or replace an API's routes with it.
    Import {
        /// The OpenAPI document.
        file: std::path::PathBuf,
        /// Replace this API's routes and authorizers instead of creating an API.
        #[arg(long)]
        api: Option<String>,
        /// Deploy to this stage once imported (created if missing).
        #[arg(long, default_value = "$default")]
        stage: String,
    },
    /// List APIs.
    Ls,
    /// Show an API with its routes, authorizers and stages.
    Get {
        /// API id.
        api: String,
    },
    /// Delete an API.
    Rm {
        /// API id.
        api: String,
    },
    /// Manage an API's routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Manage an API's authorizers.
    #[command(subcommand)]
    Authorizer(AuthorizerCommand),
    /// Manage an API's stages.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Deploy an API's routes and authorizers to a stage (created if missing).
    Deploy {
        /// API id.
        api: String,
        /// Stage name.
        #[arg(long, default_value = "$default")]
        stage: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
}

/// `lambent api route` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RouteCommand {
    /// Add a route: `"GET /items/{id}"`, `"ANY /{proxy+}"`, `$default`; WebSocket:
    /// `$connect`, `$disconnect`, `$default` or a route key like `sendmessage`.
    Add {
        /// API id.
        api: String,
        /// Route key.
        key: String,
        /// The function: name, name:qualifier or ARN.
        #[arg(long)]
        target: String,
        /// Event format: 1.0 or 2.0 (HTTP APIs; default 2.0).
        #[arg(long)]
        payload_format: Option<String>,
        /// Integration timeout in milliseconds (50-30000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// NONE, JWT, CUSTOM (Lambda authorizer) or AWS_IAM.
        #[arg(long, default_value = "NONE")]
        auth: String,
        /// The authorizer id of a JWT or CUSTOM route.
        #[arg(long)]
        authorizer: Option<String>,
        /// A scope the JWT must carry (repeatable; any one suffices).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// WebSocket: send the function's answer back to the client.
        #[arg(long)]
        route_response: bool,
    },
    /// List an API's routes.
    Ls {
        /// API id.
        api: String,
    },
    /// Delete a route.
    Rm {
        /// API id.
        api: String,
        /// Route id.
        route: String,
    },
}

/// `lambent api authorizer` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuthorizerCommand {
    /// Add a JWT authorizer (`--issuer`, `--audience`, `--jwks`) or a Lambda authorizer
    /// (`--function`).
    Add {
        /// API id.
        api: String,
        /// Authorizer name.
        name: String,
        /// JWT: the issuer (`iss`) tokens must carry.
        #[arg(long)]
        issuer: Option<String>,
        /// JWT: an accepted audience (repeatable).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// JWT: the key set's URL, or a file on the server (default: the issuer's discovery).
        #[arg(long)]
        jwks: Option<String>,
        /// Lambda authorizer: its function.
        #[arg(long)]
        function: Option<String>,
        /// Where the identity is (repeatable), e.g. `$request.header.Authorization`.
        #[arg(long = "identity-source")]
        identity_sources: Vec<String>,
        /// Lambda authorizer: it answers `{isAuthorized, context}` (else an IAM policy).
        #[arg(long)]
        simple: bool,
        /// Lambda authorizer: event format 1.0 or 2.0.
        #[arg(long)]
        payload_format: Option<String>,
        /// Lambda authorizer: seconds an answer is reused for the same identity.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List an API's authorizers.
    Ls {
        /// API id.
        api: String,
    },
    /// Delete an authorizer.
    Rm {
        /// API id.
        api: String,
        /// Authorizer id.
        authorizer: String,
    },
}

/// `lambent api stage` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StageCommand {
    /// Add a stage.
    Add {
        /// API id.
        api: String,
        /// Stage name (`$default` is served at the API's root).
        name: String,
        /// Deploy every change at once.
        #[arg(long)]
        auto_deploy: bool,
        /// A stage variable `name=value` (repeatable).
        #[arg(long = "var")]
        variables: Vec<String>,
    },
    /// List an API's stages.
    Ls {
        /// API id.
        api: String,
    },
    /// Delete a stage.
    Rm {
        /// API id.
        api: String,
        /// Stage name.
        name: String,
    },
}

fn api_path(api: &str, rest: &str) -> String {
    format!("/lambent/apis/{}{rest}", sigv4::uri_encode(api.as_bytes()))
}

fn seg(text: &str) -> String {
    sigv4::uri_encode(text.as_bytes())
}

/// A `--jwks` value as the server reads it: URLs as given, a local path as `file://`.
fn jwks_uri(given: &str) -> anyhow::Result<String> {
    if given.starts_with("http://") || given.starts_with("https://") || given.starts_with("file://")
    {
        return Ok(given.to_string());
    }
    let path = std::fs::canonicalize(given)
        .with_context(|| format!("--jwks {given}: no such file (give a URL or a file path)"))?;
    Ok(format!("file://{}", path.display()))
}

async fn post(client: &LambdaClient, path: String, body: &Value) -> anyhow::Result<Value> {
    client
        .send_ok(Call::new(Method::POST, path).json(body)?)
        .await?
        .json()
}

async fn get(client: &LambdaClient, path: String) -> anyhow::Result<Value> {
    client.send_ok(Call::new(Method::GET, path)).await?.json()
}

async fn delete(client: &LambdaClient, path: String) -> anyhow::Result<()> {
    client.send_ok(Call::new(Method::DELETE, path)).await?;
    Ok(())
}

fn items(answer: &Value) -> Vec<Value> {
    answer["Items"].as_array().cloned().unwrap_or_default()
}

fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) -> anyhow::Result<()> {
    if rows.is_empty() {
        return write_stdout(format!("{empty}\n").as_bytes());
    }
    write_stdout(text_table(headers, &rows, &vec![false; headers.len()]).as_bytes())
}

fn render_api(api: &Value) -> String {
    let mut out = format!(
        "API {} ({}, {}): {}\n",
        display_value(&api["ApiId"]),
        display_value(&api["Name"]),
        display_value(&api["ProtocolType"]),
        display_value(&api["ApiEndpoint"]),
    );
    for route in api["Routes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  route {} {} → {} (payload {}, auth {})\n",
            display_value(&route["RouteId"]),
            display_value(&route["RouteKey"]),
            display_value(&route["Target"]),
            display_value(&route["PayloadFormatVersion"]),
            display_value(&route["AuthorizationType"]),
        ));
    }
    for authorizer in api["Authorizers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  authorizer {} {} ({})\n",
            display_value(&authorizer["AuthorizerId"]),
            display_value(&authorizer["Name"]),
            display_value(&authorizer["AuthorizerType"]),
        ));
    }
    for stage in api["Stages"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  stage {}{}: {} (deployment {})\n",
            display_value(&stage["StageName"]),
            if stage["AutoDeploy"] == json!(true) {
                " (auto-deploy)"
            } else {
                ""
            },
            display_value(&stage["InvokeUrl"]),
            display_value(&stage["DeploymentId"]),
        ));
    }
    out
}

/// Runs `lambent api …`.
pub(super) async fn run(
    client: &LambdaClient,
    command: &ApiCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let text_out = output == OutputFormat::Text;
    let answer = match command {
        ApiCommand::Create {
            name,
            protocol,
            route_selection,
            target,
            cors_origins,
            cors_methods,
            cors_headers,
            description,
        } => {
            let mut body = Map::new();
            body.insert("Name".into(), json!(name));
            body.insert("ProtocolType".into(), json!(protocol.to_ascii_uppercase()));
            if let Some(expression) = route_selection {
                body.insert("RouteSelectionExpression".into(), json!(expression));
            }
            if let Some(target) = target {
                body.insert("Target".into(), json!(target));
            }
            if let Some(description) = description {
                body.insert("Description".into(), json!(description));
            }
            if !cors_origins.is_empty() || !cors_methods.is_empty() || !cors_headers.is_empty() {
                body.insert(
                    "CorsConfiguration".into(),
                    json!({"AllowOrigins": cors_origins, "AllowMethods": cors_methods, "AllowHeaders": cors_headers}),
                );
            }
            let answer = post(client, "/lambent/apis".into(), &Value::Object(body)).await?;
            if text_out {
                return write_stdout(render_api(&answer).as_bytes());
            }
            answer
        }
        ApiCommand::Import { file, api, stage } => {
            let document = std::fs::read(file)
                .with_context(|| format!("cannot read OpenAPI document {}", file.display()))?;
            let (method, path) = match api {
                Some(api) => (Method::PUT, api_path(api, "/import")),
                None => (Method::POST, "/lambent/apis/import".to_string()),
            };
            let answer = client
                .send_ok(
                    Call::new(method, path)
                        .query(format!("stage={}", seg(stage)))
                        .body(document),
                )
                .await?
                .json()?;
            if text_out {
                return write_stdout(render_api(&answer).as_bytes());
            }
            answer
        }
        ApiCommand::Ls => {
            let answer = get(client, "/lambent/apis".into()).await?;
            if text_out {
                let rows = items(&answer)
                    .iter()
                    .map(|a| {
                        vec![
                            display_value(&a["ApiId"]),
                            display_value(&a["Name"]),
                            display_value(&a["ProtocolType"]),
                            a["Routes"].as_array().map_or(0, Vec::len).to_string(),
                            a["Stages"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|s| display_value(&s["StageName"]))
                                .collect::<Vec<_>>()
                                .join(","),
                            display_value(&a["ApiEndpoint"]),
                        ]
                    })
                    .collect();
                return table(
                    &["ID", "NAME", "PROTOCOL", "ROUTES", "STAGES", "ENDPOINT"],
                    rows,
                    "No APIs.",
                );
            }
            answer
        }
        ApiCommand::Get { api } => {
            let answer = get(client, api_path(api, "")).await?;
            if text_out {
                return write_stdout(render_api(&answer).as_bytes());
            }
            answer
        }
        ApiCommand::Rm { api } => {
            delete(client, api_path(api, "")).await?;
            json!({ "Deleted": api })
        }
        ApiCommand::Route(RouteCommand::Add {
            api,
            key,
            target,
            payload_format,
            timeout_ms,
            auth,
            authorizer,
            scopes,
            route_response,
        }) => {
            let mut body = Map::new();
            body.insert("RouteKey".into(), json!(key));
            body.insert("Target".into(), json!(target));
            body.insert("AuthorizationType".into(), json!(auth.to_ascii_uppercase()));
            if let Some(version) = payload_format {
                body.insert("PayloadFormatVersion".into(), json!(version));
            }
            if let Some(ms) = timeout_ms {
                body.insert("TimeoutInMillis".into(), json!(ms));
            }
            if let Some(id) = authorizer {
                body.insert("AuthorizerId".into(), json!(id));
            }
            if !scopes.is_empty() {
                body.insert("AuthorizationScopes".into(), json!(scopes));
            }
            if *route_response {
                body.insert("RouteResponseSelectionExpression".into(), json!("$default"));
            }
            post(client, api_path(api, "/routes"), &Value::Object(body)).await?
        }
        ApiCommand::Route(RouteCommand::Ls { api }) => {
            let answer = get(client, api_path(api, "/routes")).await?;
            if text_out {
                let rows = items(&answer)
                    .iter()
                    .map(|r| {
                        vec![
                            display_value(&r["RouteId"]),
                            display_value(&r["RouteKey"]),
                            display_value(&r["Target"]),
                            display_value(&r["PayloadFormatVersion"]),
                            display_value(&r["AuthorizationType"]),
                        ]
                    })
                    .collect();
                return table(
                    &["ID", "KEY", "TARGET", "PAYLOAD", "AUTH"],
                    rows,
                    "No routes.",
                );
            }
            answer
        }
        ApiCommand::Route(RouteCommand::Rm { api, route }) => {
            delete(client, api_path(api, &format!("/routes/{}", seg(route)))).await?;
            json!({ "Deleted": route })
        }
        ApiCommand::Authorizer(AuthorizerCommand::Add {
            api,
            name,
            issuer,
            audiences,
            jwks,
            function,
            identity_sources,
            simple,
            payload_format,
            ttl,
        }) => {
            let mut body = Map::new();
            body.insert("Name".into(), json!(name));
            body.insert("IdentitySource".into(), json!(identity_sources));
            match (issuer, function) {
                (Some(issuer), None) => {
                    body.insert("AuthorizerType".into(), json!("JWT"));
                    body.insert(
                        "JwtConfiguration".into(),
                        json!({ "Issuer": issuer, "Audience": audiences }),
                    );
                    if let Some(jwks) = jwks {
                        body.insert("JwksUri".into(), json!(jwks_uri(jwks)?));
                    }
                }
                (None, Some(function)) => {
                    body.insert("AuthorizerType".into(), json!("REQUEST"));
                    body.insert("AuthorizerUri".into(), json!(function));
                    body.insert("EnableSimpleResponses".into(), json!(simple));
                    if let Some(version) = payload_format {
                        body.insert("AuthorizerPayloadFormatVersion".into(), json!(version));
                    }
                    if let Some(ttl) = ttl {
                        body.insert("AuthorizerResultTtlInSeconds".into(), json!(ttl));
                    }
                }
                _ => anyhow::bail!(
                    "give --issuer (a JWT authorizer) or --function (a Lambda authorizer), not both"
                ),
            }
            post(client, api_path(api, "/authorizers"), &Value::Object(body)).await?
        }
        ApiCommand::Authorizer(AuthorizerCommand::Ls { api }) => {
            let answer = get(client, api_path(api, "/authorizers")).await?;
            if text_out {
                let rows = items(&answer)
                    .iter()
                    .map(|a| {
                        vec![
                            display_value(&a["AuthorizerId"]),
                            display_value(&a["Name"]),
                            display_value(&a["AuthorizerType"]),
                            a["JwtConfiguration"]["Issuer"]
                                .as_str()
                                .or(a["AuthorizerUri"].as_str())
                                .unwrap_or("")
                                .to_string(),
                        ]
                    })
                    .collect();
                return table(
                    &["ID", "NAME", "TYPE", "ISSUER/FUNCTION"],
                    rows,
                    "No authorizers.",
                );
            }
            answer
        }
        ApiCommand::Authorizer(AuthorizerCommand::Rm { api, authorizer }) => {
            delete(
                client,
                api_path(api, &format!("/authorizers/{}", seg(authorizer))),
            )
            .await?;
            json!({ "Deleted": authorizer })
        }
        ApiCommand::Stage(StageCommand::Add {
            api,
            name,
            auto_deploy,
            variables,
        }) => {
            let mut vars = Map::new();
            for pair in variables {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--var {pair}: write name=value"))?;
                vars.insert(k.to_string(), json!(v));
            }
            post(
                client,
                api_path(api, "/stages"),
                &json!({ "StageName": name, "AutoDeploy": auto_deploy, "StageVariables": vars }),
            )
            .await?
        }
        ApiCommand::Stage(StageCommand::Ls { api }) => {
            let answer = get(client, api_path(api, "/stages")).await?;
            if text_out {
                let rows = items(&answer)
                    .iter()
                    .map(|s| {
                        vec![
                            display_value(&s["StageName"]),
                            display_value(&s["AutoDeploy"]),
                            display_value(&s["DeploymentId"]),
                            display_value(&s["InvokeUrl"]),
                        ]
                    })
                    .collect();
                return table(&["STAGE", "AUTO", "DEPLOYMENT", "URL"], rows, "No stages.");
            }
            answer
        }
        ApiCommand::Stage(StageCommand::Rm { api, name }) => {
            delete(client, api_path(api, &format!("/stages/{}", seg(name)))).await?;
            json!({ "Deleted": name })
        }
        ApiCommand::Deploy {
            api,
            stage,
            description,
        } => {
            let mut body = json!({ "StageName": stage });
            if let Some(description) = description {
                body["Description"] = json!(description);
            }
            let answer = post(client, api_path(api, "/deployments"), &body).await?;
            if text_out {
                let stage_url = get(client, api_path(api, "/stages"))
                    .await
                    .ok()
                    .and_then(|stages| {
                        items(&stages)
                            .into_iter()
                            .find(|s| s["StageName"] == json!(stage))
                            .map(|s| display_value(&s["InvokeUrl"]))
                    })
                    .unwrap_or_default();
                return write_stdout(
                    format!(
                        "Deployed {} route(s) of {api} to stage {stage} (deployment {}): {stage_url}\n",
                        display_value(&answer["Routes"]),
                        display_value(&answer["DeploymentId"]),
                    )
                    .as_bytes(),
                );
            }
            answer
        }
    };
    match output {
        OutputFormat::Json => print_json(&answer),
        OutputFormat::Text => {
            let text = if let Some(deleted) = answer.get("Deleted") {
                format!("Deleted {}.\n", display_value(deleted))
            } else if answer.get("RouteKey").is_some() {
                format!(
                    "Route {} {} → {}.\n",
                    display_value(&answer["RouteId"]),
                    display_value(&answer["RouteKey"]),
                    display_value(&answer["Target"]),
                )
            } else if answer.get("AuthorizerId").is_some() {
                format!(
                    "Authorizer {} {} ({}).\n",
                    display_value(&answer["AuthorizerId"]),
                    display_value(&answer["Name"]),
                    display_value(&answer["AuthorizerType"]),
                )
            } else if answer.get("StageName").is_some() {
                format!(
                    "Stage {}: {}.\n",
                    display_value(&answer["StageName"]),
                    display_value(&answer["InvokeUrl"]),
                )
            } else {
                format!("{answer}\n")
            };
            write_stdout(text.as_bytes())
        }
    }
}
