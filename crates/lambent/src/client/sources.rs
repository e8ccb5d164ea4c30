//! `lambent schedule` (EventBridge-style schedules that fire functions) and `lambent
//! s3-source` (webhook endpoints for S3-style bucket notifications).

use http::Method;
use serde_json::{Map, Value, json};

use super::queue::text_table;
use super::{Call, LambdaClient, OutputFormat, display_value, print_json, sigv4, write_stdout};

/// `lambent schedule` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule that fires a function asynchronously.
    Create {
        /// Schedule name (letters, digits, '-', '_', '.').
        name: String,
        /// `rate(5 minutes)`, `cron(0 12 * * ? *)` or `at(2030-01-01T09:00:00)`.
        #[arg(long)]
        expression: String,
        /// The function to fire: name, name:qualifier or ARN.
        #[arg(long)]
        target: String,
        /// JSON sent instead of the scheduled event.
        #[arg(long)]
        input: Option<String>,
        /// IANA time zone for cron and at expressions (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Seconds within which a firing missed while the server was down still fires once.
        #[arg(long)]
        grace: Option<i64>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List schedules with their next firing.
    Ls,
    /// Delete a schedule.
    Rm {
        /// Schedule name.
        name: String,
    },
    /// Let a schedule fire again.
    Enable {
        /// Schedule name.
        name: String,
    },
    /// Stop a schedule from firing (it is kept).
    Disable {
        /// Schedule name.
        name: String,
    },
}

/// `lambent s3-source` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum S3SourceCommand {
    /// Create (or re-point) a notification endpoint for a function; prints its secret once.
    Put {
        /// Source name, part of the endpoint's path.
        name: String,
        /// The function notifications go to: name, name:qualifier or ARN.
        #[arg(long)]
        target: String,
        /// Replace the secret with a new one (printed once).
        #[arg(long)]
        rotate_secret: bool,
    },
    /// List notification sources.
    Ls,
    /// Delete a notification source.
    Rm {
        /// Source name.
        name: String,
    },
}

fn path(kind: &str, name: &str) -> String {
    format!("/lambent/{kind}/{}", sigv4::uri_encode(name.as_bytes()))
}

/// Runs `lambent schedule …`.
pub(super) async fn schedule(
    client: &LambdaClient,
    command: &ScheduleCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let answer = match command {
        ScheduleCommand::Create {
            name,
            expression,
            target,
            input,
            timezone,
            grace,
            disabled,
        } => {
            let mut body = Map::new();
            body.insert("Name".into(), json!(name));
            body.insert("ScheduleExpression".into(), json!(expression));
            body.insert("Target".into(), json!(target));
            if let Some(input) = input {
                body.insert("Input".into(), json!(input));
            }
            if let Some(zone) = timezone {
                body.insert("Timezone".into(), json!(zone));
            }
            if let Some(grace) = grace {
                body.insert("GraceSeconds".into(), json!(grace));
            }
            if *disabled {
                body.insert("State".into(), json!("DISABLED"));
            }
            client
                .send_ok(
                    Call::new(Method::POST, "/lambent/schedules".to_owned())
                        .json(&Value::Object(body))?,
                )
                .await?
                .json()?
        }
        ScheduleCommand::Ls => {
            let answer = client
                .send_ok(Call::new(Method::GET, "/lambent/schedules".to_owned()))
                .await?
                .json()?;
            if output == OutputFormat::Text {
                let rows: Vec<Vec<String>> = answer["Schedules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|s| {
                        vec![
                            display_value(&s["Name"]),
                            display_value(&s["State"]),
                            display_value(&s["ScheduleExpression"]),
                            display_value(&s["Timezone"]),
                            display_value(&s["Target"]["Arn"])
                                .rsplit(":function:")
                                .next()
                                .unwrap_or_default()
                                .to_string(),
                            display_value(&s["NextFireAt"]),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    return write_stdout(b"No schedules.\n");
                }
                let table = text_table(
                    &["NAME", "STATE", "EXPRESSION", "ZONE", "FUNCTION", "NEXT"],
                    &rows,
                    &[false; 6],
                );
                return write_stdout(table.as_bytes());
            }
            answer
        }
        ScheduleCommand::Rm { name } => {
            client
                .send_ok(Call::new(Method::DELETE, path("schedules", name)))
                .await?;
            json!({ "Deleted": name })
        }
        ScheduleCommand::Enable { name } | ScheduleCommand::Disable { name } => {
            let state = if matches!(command, ScheduleCommand::Enable { .. }) {
                "ENABLED"
            } else {
                "DISABLED"
            };
            client
                .send_ok(
                    Call::new(Method::PUT, path("schedules", name))
                        .json(&json!({ "State": state }))?,
                )
                .await?
                .json()?
        }
    };
    match output {
        OutputFormat::Json => print_json(&answer),
        OutputFormat::Text => {
            let text = match command {
                ScheduleCommand::Rm { name } => format!("Deleted schedule {name}.\n"),
                _ => format!(
                    "Schedule {} {}: {} ({}) → {}; next firing {}.\n",
                    display_value(&answer["Name"]),
                    display_value(&answer["State"]).to_lowercase(),
                    display_value(&answer["ScheduleExpression"]),
                    display_value(&answer["Timezone"]),
                    display_value(&answer["Target"]["Arn"]),
                    answer["NextFireAt"].as_str().unwrap_or("none"),
                ),
            };
            write_stdout(text.as_bytes())
        }
    }
}

/// Runs `lambent s3-source …`.
pub(super) async fn s3_source(
    client: &LambdaClient,
    command: &S3SourceCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        S3SourceCommand::Put {
            name,
            target,
            rotate_secret,
        } => {
            let answer = client
                .send_ok(
                    Call::new(Method::PUT, path("s3-sources", name)).json(&json!({
                        "Target": target,
                        "RotateSecret": rotate_secret,
                    }))?,
                )
                .await?
                .json()?;
            match output {
                OutputFormat::Json => print_json(&answer),
                OutputFormat::Text => {
                    let mut text = format!(
                        "S3 notification source {name} → {}\n  endpoint: POST {}{}\n",
                        display_value(&answer["Target"]["Arn"]),
                        client.config.endpoint,
                        display_value(&answer["Path"]),
                    );
                    match answer["Secret"].as_str() {
                        Some(secret) => text.push_str(&format!(
                            "  secret (shown once; send it as `Authorization: Bearer <secret>`): {secret}\n"
                        )),
                        None => text.push_str("  secret unchanged (--rotate-secret makes a new one)\n"),
                    }
                    write_stdout(text.as_bytes())
                }
            }
        }
        S3SourceCommand::Ls => {
            let answer = client
                .send_ok(Call::new(Method::GET, "/lambent/s3-sources".to_owned()))
                .await?
                .json()?;
            match output {
                OutputFormat::Json => print_json(&answer),
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = answer["S3Sources"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|s| {
                            vec![
                                display_value(&s["Name"]),
                                display_value(&s["Path"]),
                                display_value(&s["Target"]["Arn"]),
                            ]
                        })
                        .collect();
                    if rows.is_empty() {
                        return write_stdout(b"No S3 notification sources.\n");
                    }
                    write_stdout(
                        text_table(&["NAME", "PATH", "FUNCTION"], &rows, &[false; 3]).as_bytes(),
                    )
                }
            }
        }
        S3SourceCommand::Rm { name } => {
            client
                .send_ok(Call::new(Method::DELETE, path("s3-sources", name)))
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({ "Deleted": name })),
                OutputFormat::Text => {
                    write_stdout(format!("Deleted S3 notification source {name}.\n").as_bytes())
                }
            }
        }
    }
}
