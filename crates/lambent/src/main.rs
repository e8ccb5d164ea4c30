//! `lambent`: the Lambent server (`lambent serve`) and the everyday CLI (`deploy`, `invoke`,
//! `ls`, `rm`) in one binary.

mod client;
mod credentials;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the server allocates and frees small buffers on every request from several
/// threads, where glibc's allocator showed up at ~10 % of the server's CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lambent: run AWS Lambda functions on your own machine, with the AWS tools you already use.
#[derive(Parser)]
#[command(name = "lambent", version, about)]
struct Cli {
    /// Where Lambent keeps its database, code and credentials.
    #[arg(
        long,
        env = "LAMBENT_DATA_DIR",
        default_value = ".lambent",
        global = true
    )]
    data_dir: PathBuf,
    /// Output format of client commands.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: client::OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (Lambda API, Invoke, execution environments).
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    // An execution environment's init is this binary re-executed by the server; it must run
    // before anything starts a thread.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(lambent_sandbox::INIT_ARG) {
        lambent_sandbox::init_main(&args[2..]);
    }
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // LAMBENT_WORKER_THREADS sets the async runtime's threads (default: one per core).
    if let Some(threads) = std::env::var("LAMBENT_WORKER_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|t| *t > 0)
    {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, &cli.data_dir).await,
            Command::Client(command) => client::run(command, &cli.data_dir, cli.output).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
