//! Peers run side by side with Lambent: started by the scripts in bench/peers (which install
//! them into a cache directory outside the repository), driven by the same load generator.

use std::process::Command;

use anyhow::{Context, bail};

use crate::Cli;
use crate::load::Invoker;
use crate::scenarios::Kind;

/// A peer that can serve one of the trivial functions.
pub struct Peer {
    /// Its name in reports.
    pub name: &'static str,
    script: &'static str,
    args: &'static [&'static str],
}

/// A started peer.
pub struct RunningPeer {
    /// An (unsigned) Invoke client for its function.
    pub invoker: Invoker,
    script: &'static str,
    args: Vec<String>,
}

impl RunningPeer {
    /// Stops it (the script kills its whole process group).
    pub fn stop(self) {
        let _ = Command::new("bash")
            .arg(self.script)
            .arg("stop")
            .args(&self.args)
            .status();
    }
}

/// The peers that can run the trivial function of `kind`.
pub fn for_kind(kind: Kind) -> Vec<Peer> {
    match kind {
        Kind::Provided => vec![Peer {
            name: "cargo-lambda watch",
            script: "bench/peers/cargo-lambda.sh",
            args: &[],
        }],
        Kind::Node => vec![Peer {
            name: "serverless-offline",
            script: "bench/peers/serverless-offline.sh",
            args: &["node"],
        }],
        Kind::Python => vec![Peer {
            name: "serverless-offline",
            script: "bench/peers/serverless-offline.sh",
            args: &["python"],
        }],
    }
}

/// What the table says when peers were not run.
pub fn not_run_note(_kind: Kind, cli: &Cli) -> String {
    if cli.smoke {
        "smoke run: peers not run".into()
    } else {
        "peers not run (use --peers)".into()
    }
}

impl Peer {
    /// Starts the peer on a free port; its script prints the invoke URL.
    pub async fn start(&self) -> anyhow::Result<RunningPeer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut args = vec![port.to_string()];
        args.extend(self.args.iter().map(|a| a.to_string()));
        let script = self.script;
        let start_args = args.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script)
                .arg("start")
                .args(&start_args)
                .output()
        })
        .await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "{} start failed: {}{}",
                self.script,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let url = stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix("PEER_INVOKE_URL="))
            .with_context(|| format!("{} printed no PEER_INVOKE_URL: {stdout}", self.script))?;
        let rest = url.trim_start_matches("http://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        Ok(RunningPeer {
            invoker: Invoker::new(authority, path, None),
            script: self.script,
            args,
        })
    }
}
