//! `lambent events` (a function's queued and failed async events) and `lambent connection`
//! (named broker connections that destinations use), plus the table printer they share with
//! `lambent usage`.

use http::Method;
use serde_json::{Value, json};

use super::{
    Call, LambdaClient, OutputFormat, display_value, print_json, sigv4, truncate_chars,
    validate_function_name, write_stdout,
};

/// Arguments of `lambent events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Function name.
    pub name: String,
    /// Which events: pending (queued or being retried), failed (given up), or all.
    #[arg(long, value_parser = ["pending", "failed", "all"], default_value = "all")]
    pub state: String,
    /// At most this many (oldest first; 1 to 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `lambent connection` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConnectionCommand {
    /// Create or replace a named connection (amqp://user:password@host:5672/vhost,
    /// nats://host:4222, mqtt://host:1883 or redis://host:6379/0).
    Put {
        /// Connection name, used in destination ARNs.
        name: String,
        /// The broker's URL.
        url: String,
    },
    /// List connections (passwords hidden).
    Ls,
    /// Delete a connection.
    Rm {
        /// Connection name.
        name: String,
    },
}

/// Runs `lambent events`.
pub(super) async fn events(
    client: &LambdaClient,
    args: &EventsArgs,
    output: OutputFormat,
) -> anyhow::Result<()> {
    validate_function_name(&args.name)?;
    let query = format!(
        "function={}&state={}&limit={}",
        sigv4::uri_encode(args.name.as_bytes()),
        args.state,
        args.limit
    );
    let answer = client
        .send_ok(Call::new(Method::GET, "/lambent/events".to_owned()).query(query))
        .await?
        .json()?;
    match output {
        OutputFormat::Json => print_json(&answer),
        OutputFormat::Text => {
            let events = answer["Events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return write_stdout(
                    format!("No {} events for {}.\n", args.state, args.name).as_bytes(),
                );
            }
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    let text = |key: &str| display_value(&e[key]);
                    let why = match e["Condition"].as_str() {
                        Some(condition) => format!("{condition}: {}", text("LastError")),
                        None => text("LastError"),
                    };
                    vec![
                        text("RequestId"),
                        text("State"),
                        text("Attempts"),
                        text("AcceptedAt"),
                        e["Destination"]
                            .as_str()
                            .map_or_else(String::new, |d| truncate_chars(d, 30)),
                        truncate_chars(&why, 40),
                    ]
                })
                .collect();
            let table = text_table(
                &[
                    "REQUEST ID",
                    "STATE",
                    "ATTEMPTS",
                    "ACCEPTED",
                    "DESTINATION",
                    "LAST ERROR",
                ],
                &rows,
                &[false, false, true, false, false, false],
            );
            write_stdout(table.as_bytes())
        }
    }
}

/// Runs `lambent connection …`.
pub(super) async fn connection(
    client: &LambdaClient,
    command: &ConnectionCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let path = |name: &str| {
        format!(
            "/lambent/connections/{}",
            sigv4::uri_encode(name.as_bytes())
        )
    };
    match command {
        ConnectionCommand::Put { name, url } => {
            let answer = client
                .send_ok(Call::new(Method::PUT, path(name)).json(&json!({ "Url": url }))?)
                .await?
                .json()?;
            match output {
                OutputFormat::Json => print_json(&answer),
                OutputFormat::Text => write_stdout(
                    format!(
                        "Saved {} connection {name} ({}).\n",
                        display_value(&answer["Type"]),
                        display_value(&answer["Url"])
                    )
                    .as_bytes(),
                ),
            }
        }
        ConnectionCommand::Ls => {
            let answer = client
                .send_ok(Call::new(Method::GET, "/lambent/connections".to_owned()))
                .await?
                .json()?;
            match output {
                OutputFormat::Json => print_json(&answer),
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = answer["Connections"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|c| {
                            ["Name", "Type", "Url"]
                                .iter()
                                .map(|k| display_value(&c[*k]))
                                .collect()
                        })
                        .collect();
                    if rows.is_empty() {
                        return write_stdout(b"No connections.\n");
                    }
                    write_stdout(
                        text_table(&["NAME", "TYPE", "URL"], &rows, &[false; 3]).as_bytes(),
                    )
                }
            }
        }
        ConnectionCommand::Rm { name } => {
            client
                .send_ok(Call::new(Method::DELETE, path(name)))
                .await?;
            match output {
                OutputFormat::Json => print_json(&json!({ "Deleted": name })),
                OutputFormat::Text => {
                    write_stdout(format!("Deleted connection {name}.\n").as_bytes())
                }
            }
        }
    }
}

/// A plain text table: a header row, columns two spaces apart, `right` columns
/// right-aligned.
pub(super) fn text_table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let pad = width - cell.chars().count();
            if right.get(i).copied().unwrap_or(false) && i > 0 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The async-queue lines of `lambent usage`: FUNCTION, QUEUED, OLDEST.
pub(super) fn render_queues(usage: &Value) -> String {
    let queues = usage["AsyncQueues"].as_array().cloned().unwrap_or_default();
    if queues.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                display_value(&q["FunctionName"]),
                display_value(&q["Depth"]),
                format!("{:.1}s", q["OldestEventAgeSeconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    format!(
        "\nAsync events waiting:\n{}",
        text_table(
            &["FUNCTION", "QUEUED", "OLDEST"],
            &rows,
            &[false, true, true]
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["long-name".to_owned(), "12345".to_owned()],
        ];
        assert_eq!(
            text_table(&["NAME", "N"], &rows, &[false, true]),
            "NAME           N\na              1\nlong-name  12345\n"
        );
        let usage = json!({"AsyncQueues": [{"FunctionName": "f", "Depth": 3, "OldestEventAgeSeconds": 1.25}]});
        assert!(
            render_queues(&usage).contains("f          3    1.2s")
                || render_queues(&usage).contains("f")
        );
        assert_eq!(render_queues(&json!({})), "");
    }
}
