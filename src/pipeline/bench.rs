//! `sigflow bench pipeline`: throughput of source → ring → resample → level stage, as a multiple of real time.
//!
//! A synthetic 48 kHz (by default) noise source runs unpaced, so the whole chain goes as fast as it can: the source
//! thread converts and pushes into the ring as a capture callback would, the worker resamples to the stage rate and
//! runs the level stage. The baseline is real time: `x_realtime` = seconds of audio processed per second of wall time.

use crate::config::ConfigFile;
use crate::error::Result;
use crate::pipeline::Pipeline;
use std::path::Path;
use std::time::Instant;

/// Arguments of `sigflow bench pipeline`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineBenchArgs {
    /// Source rate (Hz).
    #[arg(long, default_value_t = 48_000)]
    pub source_rate: u32,
    /// Stage rate (Hz); equal to the source rate means no resampling.
    #[arg(long, default_value_t = 16_000)]
    pub stage_rate: u32,
    /// Seconds of audio to push through.
    #[arg(long, default_value_t = 120.0)]
    pub seconds: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Result of one pipeline throughput run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineBench {
    pub source_rate: u32,
    pub stage_rate: u32,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    pub x_realtime: f64,
    pub samples: u64,
    pub lost: u64,
}

/// Push `seconds` of noise through ring → resampler → level and time it.
pub fn measure(source_rate: u32, stage_rate: u32, seconds: f64) -> Result<PipelineBench> {
    let text = format!(
        "[daemon]\nring-seconds = 2.0\n\n[source]\nkind = \"synth\"\nsignal = \"noise\"\nrate = {source_rate}\n\
         duration = {seconds}\nrealtime = false\n\n[[stage]]\nkind = \"level\"\nname = \"level\"\nrate = {stage_rate}\n\
         window = \"20ms\"\nhop = \"10ms\"\n"
    );
    let cf = ConfigFile::parse(Path::new("<bench pipeline>"), text)?;
    let pipeline = Pipeline::from_config(&cf)?;
    let t0 = Instant::now();
    let report = pipeline.start()?.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    let audio = report.samples as f64 / source_rate as f64;
    Ok(PipelineBench {
        source_rate,
        stage_rate,
        audio_seconds: audio,
        wall_seconds: wall,
        x_realtime: audio / wall,
        samples: report.samples,
        lost: report.lost,
    })
}

/// Run the benchmark and print it.
pub fn run(args: &PipelineBenchArgs) -> Result<()> {
    let r = measure(args.source_rate, args.stage_rate, args.seconds)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| crate::Error::Other(e.to_string()))?
        );
    } else {
        println!(
            "source {} Hz → ring → resample → level @ {} Hz: {:.1} s of audio in {:.3} s = {:.0}× real time \
             ({} samples, {} lost)",
            r.source_rate, r.stage_rate, r.audio_seconds, r.wall_seconds, r.x_realtime, r.samples, r.lost
        );
    }
    Ok(())
}
