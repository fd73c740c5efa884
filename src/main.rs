//! The `sigflow` command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sigflow",
    version,
    about = "Real-time streaming signal and speech processing daemon"
)]
struct Cli {
    /// Log filter (overrides the config's `log-level`; `RUST_LOG` overrides both).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an LFM2 checkpoint on token ids and print the generated ids (comma-separated).
    Generate(sigflow::s2s::cli::GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// LFM2 backbone throughput with random weights of the published shapes, against the bandwidth roofline.
    Lfm2(sigflow::s2s::cli::BenchLfm2Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = cli.log_level;
    let result = match cli.command {
        Command::Generate(args) => sigflow::s2s::cli::generate(&args),
        Command::Bench(BenchCommand::Lfm2(args)) => sigflow::s2s::cli::bench_lfm2(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
