//! `lambent-bench`: Lambent's load generator and benchmark scenarios.
//!
//! ```sh
//! cargo build --release -p lambent -p lambent-testfn-echo
//! cargo run -p lambent-bench --release -- warm            # one scenario
//! cargo run -p lambent-bench --release -- all --peers     # everything, peers side by side
//! cargo run -p lambent-bench --release -- report          # refresh bench/README.md's table
//! ```
//!
//! Each scenario starts its own `lambent serve` (as root, sandboxed by default), writes
//! `bench/results/<scenario>.json` and prints a summary. `--smoke` runs a few hundred
//! invokes per scenario into a temporary directory, for CI.

mod load;
mod peers;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Lambent's benchmarks.
#[derive(Parser, Debug, Clone)]
#[command(name = "lambent-bench")]
pub struct Cli {
    /// Scenarios to run: warm, warm-python, warm-node, cold, burst, density, async, payload,
    /// esm-rabbitmq, all; or `report` to rebuild bench/README.md's table from bench/results.
    #[arg(required = true)]
    pub scenarios: Vec<String>,
    /// A few hundred invokes per scenario, results to a temporary directory (CI).
    #[arg(long)]
    pub smoke: bool,
    /// Repetitions of each measurement; the median run is reported with the spread.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds per load measurement.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The `lambent` binary under test.
    #[arg(long, default_value = "target/release/lambent")]
    pub server_bin: PathBuf,
    /// The Rust echo function (`bootstrap` of lambent-testfn-echo); default: beside the server.
    #[arg(long)]
    pub echo_bin: Option<PathBuf>,
    /// `--sandbox` of the server under test.
    #[arg(long, default_value = "namespaces")]
    pub sandbox: String,
    /// `--default-network` of the server under test (default: the server's choice).
    #[arg(long)]
    pub network: Option<String>,
    /// Where results go (default bench/results; a temporary directory with --smoke).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Concurrency levels of the warm scenarios (default 1, 8, 64; smoke 1, 8).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Invokes per second of the warm scenarios' open loop (default: half the c=8 throughput).
    #[arg(long)]
    pub open_rate: Option<f64>,
    /// Also run the peers (cargo-lambda watch, serverless-offline) side by side.
    #[arg(long)]
    pub peers: bool,
}

impl Cli {
    /// The echo function binary.
    pub fn echo_bin(&self) -> PathBuf {
        self.echo_bin.clone().unwrap_or_else(|| {
            self.server_bin
                .parent()
                .map(|dir| dir.join("bootstrap"))
                .unwrap_or_else(|| PathBuf::from("bootstrap"))
        })
    }
}

const ALL: [&str; 9] = [
    "warm",
    "warm-python",
    "warm-node",
    "cold",
    "payload",
    "async",
    "burst",
    "density",
    "esm-rabbitmq",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut names: Vec<String> = Vec::new();
    for name in &cli.scenarios {
        if name == "all" {
            names.extend(ALL.iter().map(|s| s.to_string()));
        } else {
            names.push(name.clone());
        }
    }
    let smoke_dir;
    let results = match (&cli.results, cli.smoke) {
        (Some(dir), _) => dir.clone(),
        (None, true) => {
            smoke_dir = tempfile::Builder::new()
                .prefix("lambent-bench-smoke-")
                .tempdir()?;
            smoke_dir.path().to_path_buf()
        }
        (None, false) => PathBuf::from("bench/results"),
    };
    std::fs::create_dir_all(&results)?;
    for name in names {
        if name == "report" {
            report::refresh_readme(
                &PathBuf::from("bench/results"),
                &PathBuf::from("bench/README.md"),
            )?;
            println!("bench/README.md refreshed from bench/results");
            continue;
        }
        eprintln!("==> {name}{}", if cli.smoke { " (smoke)" } else { "" });
        let started = std::time::Instant::now();
        let result = scenarios::run(&name, &cli).await?;
        let file = match &cli.network {
            Some(network) => format!("{name}-network-{network}.json"),
            None => format!("{name}.json"),
        };
        let path = results.join(file);
        report::write(&path, &name, &cli, result)?;
        eprintln!(
            "    {name} done in {:.0} s, results in {}",
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    Ok(())
}
