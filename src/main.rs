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
    /// List audio input and output devices: ids for `device = …`, default and supported configurations.
    Devices(sigflow::io::devices::DevicesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = cli.log_level;
    let result = match cli.command {
        Command::Devices(args) => sigflow::io::devices::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
