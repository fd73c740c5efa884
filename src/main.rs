//! The `sigflow` command line.

use clap::{Parser, Subcommand};
use sigflow::config::ConfigFile;
use std::path::PathBuf;
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
    /// Run a pipeline from a config file until its input ends or SIGTERM/SIGINT (SIGHUP reloads the config).
    Run {
        /// The TOML config.
        config: PathBuf,
    },
    /// Validate config files without running them: syntax, keys, files, rates, devices, models.
    Check {
        /// One or more TOML configs.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
    /// List audio input and output devices: ids for `device = …`, default and supported configurations.
    Devices(sigflow::io::devices::DevicesArgs),
    /// Measure throughput and speed (see `sigflow bench --help`).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a 1-D CNN (ONNX) over a .npy signal window by window with the streaming engine; write stacked outputs.
    Infer(sigflow::cnn::cli::InferArgs),
    /// Run an LFM2 checkpoint on token ids and print the generated ids (comma-separated).
    Generate(sigflow::s2s::cli::GenerateArgs),
    /// Answer one user turn (WAV) with an LFM2-Audio checkpoint: reply audio, text and the generated items.
    S2s(sigflow::s2s::cli::S2sArgs),
    /// Turn LFM2-Audio codes ([frames, 8] .npy) into the 24 kHz waveform (.npy).
    Detokenize(sigflow::s2s::cli::DetokenizeArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Throughput of source → ring → resample → level stage, as a multiple of real time.
    Pipeline(sigflow::pipeline::bench::PipelineBenchArgs),
    /// Streaming CNN per-hop time vs native full window vs ONNX Runtime, at overlaps 50–93.75 %.
    Cnn(sigflow::cnn::cli::BenchCnnArgs),
    /// LFM2 backbone throughput with random weights of the published shapes, against the bandwidth roofline.
    Lfm2(sigflow::s2s::cli::BenchLfm2Args),
    /// LFM2-Audio-1.5B shapes with random weights: real-time factor of interleaved generation and time to first audio.
    S2s(sigflow::s2s::cli::BenchS2sArgs),
}

fn run(cli: Cli) -> sigflow::Result<()> {
    match cli.command {
        Command::Run { config } => sigflow::pipeline::serve(&config, cli.log_level.as_deref()),
        Command::Check { configs } => {
            if let [one] = configs.as_slice() {
                let cf = ConfigFile::load(one)?;
                sigflow::pipeline::check::check(&cf)?;
                println!(
                    "{}: ok ({} stage(s), {} sink(s))",
                    one.display(),
                    cf.config.stages.len(),
                    cf.config.sinks.len()
                );
                return Ok(());
            }
            let mut failed = 0;
            for path in &configs {
                match ConfigFile::load(path)
                    .and_then(|cf| sigflow::pipeline::check::check(&cf).map(|_| cf))
                {
                    Ok(cf) => println!(
                        "{}: ok ({} stage(s), {} sink(s))",
                        path.display(),
                        cf.config.stages.len(),
                        cf.config.sinks.len()
                    ),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(sigflow::Error::Other(format!(
                    "{failed} of {} config(s) failed the check",
                    configs.len()
                )));
            }
            Ok(())
        }
        Command::Devices(args) => sigflow::io::devices::run(&args),
        Command::Bench(b) => match b {
            BenchCommand::Pipeline(args) => sigflow::pipeline::bench::run(&args),
            BenchCommand::Cnn(args) => sigflow::cnn::cli::bench(&args),
            BenchCommand::Lfm2(args) => sigflow::s2s::cli::bench_lfm2(&args),
            BenchCommand::S2s(args) => sigflow::s2s::cli::bench_s2s(&args),
        },
        Command::Infer(args) => sigflow::cnn::cli::infer(&args),
        Command::Generate(args) => sigflow::s2s::cli::generate(&args),
        Command::S2s(args) => sigflow::s2s::cli::s2s(&args),
        Command::Detokenize(args) => sigflow::s2s::cli::detokenize(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
