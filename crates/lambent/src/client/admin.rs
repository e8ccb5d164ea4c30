//! `lambent admin …`: users, access keys, inline policies, roles and the audit log, over
//! the signed administration API (`/lambent/admin/…`).

use http::Method;
use serde_json::{Value, json};

use super::queue::text_table;
use super::{
    Call, LambdaClient, OutputFormat, display_value, parse_since, print_json, sigv4, write_stdout,
};

/// `lambent admin` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Create, list and delete users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, rotate, list and delete access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Attach, detach and show the inline policies of users and roles.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create, list and delete roles (execution roles of functions).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Show the audit log: control-plane calls, refusals and failed authentications.
    Audit(AuditArgs),
}

/// `lambent admin user …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user (no rights until a policy is attached).
    Create {
        /// User name.
        name: String,
    },
    /// List users.
    Ls,
    /// Delete a user with its keys and policies.
    Rm {
        /// User name.
        name: String,
    },
}

/// `lambent admin key …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyCommand {
    /// Create an access key for a user; the secret is shown this once.
    Create {
        /// User name.
        user: String,
    },
    /// Replace a key with a new one for the same user; the old key stops working at once.
    Rotate {
        /// Access key id to replace.
        access_key_id: String,
    },
    /// List access keys (never their secrets).
    Ls {
        /// Only this user's keys.
        user: Option<String>,
    },
    /// Delete an access key.
    Rm {
        /// Access key id.
        access_key_id: String,
    },
}

/// Whose policies: a user or a role.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PolicyOwner {
    /// A user.
    #[arg(long)]
    user: Option<String>,
    /// A role.
    #[arg(long)]
    role: Option<String>,
}

impl PolicyOwner {
    fn path(&self) -> String {
        let (kind, name) = match (&self.user, &self.role) {
            (Some(user), _) => ("users", user),
            (None, Some(role)) => ("roles", role),
            (None, None) => ("users", &String::new()),
        };
        format!(
            "/lambent/admin/{kind}/{}/policies",
            sigv4::uri_encode(name.as_bytes())
        )
    }
}

/// `lambent admin policy …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Attach (or replace) an inline policy.
    Attach {
        #[command(flatten)]
        owner: PolicyOwner,
        /// Policy name.
        name: String,
        /// The policy document as JSON, or @FILE.
        document: String,
    },
    /// Detach an inline policy.
    Detach {
        #[command(flatten)]
        owner: PolicyOwner,
        /// Policy name.
        name: String,
    },
    /// Show the inline policies.
    Show {
        #[command(flatten)]
        owner: PolicyOwner,
    },
}

/// `lambent admin role …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RoleCommand {
    /// Create a role.
    Create {
        /// Role name.
        name: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List roles.
    Ls,
    /// Delete a role and its policies.
    Rm {
        /// Role name.
        name: String,
    },
}

/// Arguments of `lambent admin audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Only entries since then: a time ago (90s, 30m, 1h, 7d) or epoch seconds.
    #[arg(long, value_name = "10m|EPOCH", value_parser = parse_since)]
    since: Option<u64>,
    /// Only this principal's entries (an ARN).
    #[arg(long)]
    principal: Option<String>,
    /// Only this decision.
    #[arg(long, value_parser = ["Allow", "Deny", "AuthFailed"])]
    decision: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

fn encode(text: &str) -> String {
    sigv4::uri_encode(text.as_bytes())
}

/// Runs `lambent admin …`.
pub(super) async fn run(
    client: &LambdaClient,
    command: &AdminCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let (answer, text) = match command {
        AdminCommand::User(UserCommand::Create { name }) => {
            let call = Call::new(Method::POST, "/lambent/admin/users".into())
                .json(&json!({ "UserName": name }))?;
            let answer = client.send_ok(call).await?.json()?;
            let text = format!(
                "Created user {name} ({}).\n",
                display_value(&answer["User"]["Arn"])
            );
            (answer, text)
        }
        AdminCommand::User(UserCommand::Ls) => {
            let answer = client
                .send_ok(Call::new(Method::GET, "/lambent/admin/users".into()))
                .await?
                .json()?;
            let text = table(
                &answer["Users"],
                &["UserName", "Arn", "CreateDate"],
                "No users.",
            );
            (answer, text)
        }
        AdminCommand::User(UserCommand::Rm { name }) => {
            client
                .send_ok(Call::new(
                    Method::DELETE,
                    format!("/lambent/admin/users/{}", encode(name)),
                ))
                .await?;
            (
                json!({ "Deleted": name }),
                format!("Deleted user {name}.\n"),
            )
        }
        AdminCommand::Key(KeyCommand::Create { user }) => {
            let path = format!("/lambent/admin/users/{}/keys", encode(user));
            let answer = client
                .send_ok(Call::new(Method::POST, path))
                .await?
                .json()?;
            let text = new_key_text(&answer);
            (answer, text)
        }
        AdminCommand::Key(KeyCommand::Rotate { access_key_id }) => {
            let path = format!("/lambent/admin/keys/{}/rotate", encode(access_key_id));
            let answer = client
                .send_ok(Call::new(Method::POST, path))
                .await?
                .json()?;
            let text = format!("{access_key_id} deleted.\n{}", new_key_text(&answer));
            (answer, text)
        }
        AdminCommand::Key(KeyCommand::Ls { user }) => {
            let query = user
                .as_ref()
                .map(|u| format!("user={}", encode(u)))
                .unwrap_or_default();
            let call = Call::new(Method::GET, "/lambent/admin/keys".into()).query(query);
            let answer = client.send_ok(call).await?.json()?;
            let text = table(
                &answer["AccessKeys"],
                &["UserName", "AccessKeyId", "Status", "CreateDate"],
                "No access keys.",
            );
            (answer, text)
        }
        AdminCommand::Key(KeyCommand::Rm { access_key_id }) => {
            let path = format!("/lambent/admin/keys/{}", encode(access_key_id));
            client.send_ok(Call::new(Method::DELETE, path)).await?;
            (
                json!({ "Deleted": access_key_id }),
                format!("Deleted access key {access_key_id}.\n"),
            )
        }
        AdminCommand::Policy(PolicyCommand::Attach {
            owner,
            name,
            document,
        }) => {
            let document = match document.strip_prefix('@') {
                Some(path) => std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read the policy file {path}: {e}"))?,
                None => document.clone().into_bytes(),
            };
            let path = format!("{}/{}", owner.path(), encode(name));
            let answer = client
                .send_ok(Call::new(Method::PUT, path).body(document))
                .await?
                .json()?;
            (answer, format!("Attached policy {name}.\n"))
        }
        AdminCommand::Policy(PolicyCommand::Detach { owner, name }) => {
            let path = format!("{}/{}", owner.path(), encode(name));
            client.send_ok(Call::new(Method::DELETE, path)).await?;
            (
                json!({ "Detached": name }),
                format!("Detached policy {name}.\n"),
            )
        }
        AdminCommand::Policy(PolicyCommand::Show { owner }) => {
            let answer = client
                .send_ok(Call::new(Method::GET, owner.path()))
                .await?
                .json()?;
            let mut text = String::new();
            for policy in answer["Policies"].as_array().cloned().unwrap_or_default() {
                text.push_str(&format!(
                    "{}:\n{}\n",
                    display_value(&policy["PolicyName"]),
                    serde_json::to_string_pretty(&policy["PolicyDocument"])?
                ));
            }
            if text.is_empty() {
                text = "No policies.\n".into();
            }
            (answer, text)
        }
        AdminCommand::Role(RoleCommand::Create { name, description }) => {
            let call = Call::new(Method::POST, "/lambent/admin/roles".into())
                .json(&json!({ "RoleName": name, "Description": description }))?;
            let answer = client.send_ok(call).await?.json()?;
            let text = format!(
                "Created role {name} ({}).\n",
                display_value(&answer["Role"]["Arn"])
            );
            (answer, text)
        }
        AdminCommand::Role(RoleCommand::Ls) => {
            let answer = client
                .send_ok(Call::new(Method::GET, "/lambent/admin/roles".into()))
                .await?
                .json()?;
            let text = table(
                &answer["Roles"],
                &["RoleName", "Arn", "Description"],
                "No roles.",
            );
            (answer, text)
        }
        AdminCommand::Role(RoleCommand::Rm { name }) => {
            client
                .send_ok(Call::new(
                    Method::DELETE,
                    format!("/lambent/admin/roles/{}", encode(name)),
                ))
                .await?;
            (
                json!({ "Deleted": name }),
                format!("Deleted role {name}.\n"),
            )
        }
        AdminCommand::Audit(args) => {
            let mut query = vec![format!("limit={}", args.limit)];
            if let Some(since) = args.since {
                query.push(format!("since={since}"));
            }
            if let Some(principal) = &args.principal {
                query.push(format!("principal={}", encode(principal)));
            }
            if let Some(decision) = &args.decision {
                query.push(format!("decision={decision}"));
            }
            let call = Call::new(Method::GET, "/lambent/admin/audit".into()).query(query.join("&"));
            let answer = client.send_ok(call).await?.json()?;
            let text = table(
                &answer["Events"],
                &[
                    "Time",
                    "Principal",
                    "Action",
                    "Resource",
                    "Decision",
                    "Status",
                ],
                "No audit entries.",
            );
            (answer, text)
        }
    };
    match output {
        OutputFormat::Json => print_json(&answer),
        OutputFormat::Text => write_stdout(text.as_bytes()),
    }
}

fn new_key_text(answer: &Value) -> String {
    let key = &answer["AccessKey"];
    format!(
        "Access key for {}:\n  AccessKeyId:     {}\n  SecretAccessKey: {}\nThe secret is shown only now; store it safely.\n",
        display_value(&key["UserName"]),
        display_value(&key["AccessKeyId"]),
        display_value(&key["SecretAccessKey"]),
    )
}

/// A table of the given fields of a JSON array (headers in upper case).
fn table(items: &Value, fields: &[&str], empty: &str) -> String {
    let items = items.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("{empty}\n");
    }
    let headers: Vec<String> = fields.iter().map(|f| f.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| fields.iter().map(|f| display_value(&item[*f])).collect())
        .collect();
    text_table(&headers, &rows, &[])
}
