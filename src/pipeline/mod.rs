//! Assembles source → ring → stream worker → stages → sinks from a config; threads and lifecycle.
//!
//! ```text
//! Source (own thread / audio callback) ──rtrb──► Worker thread ──crossbeam──► one thread per Sink
//! ```
//! [`Pipeline::from_config`] builds everything (after [`check::check`]); [`Pipeline::start`] starts the threads;
//! [`Running::stop`] stops the source, lets the worker drain the ring through the stages, and closes the sinks.
//! [`serve`] is the daemon's main loop: signals, systemd notifications, watchdog and reload.

pub mod bench;
pub mod check;
pub mod router;
pub mod worker;

use crate::config::{ConfigFile, SinkConfig, SinkPolicy, StageConfig};
use crate::daemon::{Notifier, Signals};
use crate::dsp::level::LevelStage;
use crate::error::{Error, Result};
use crate::io::{Source, SourceControl, SourceHandle};
use crate::stage::Stage;
use router::{Filter, Router, SinkSpec, INPUT_STAGE};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
pub use worker::{WorkerProgress, WorkerReport};

/// A pipeline built from a config, not yet running.
pub struct Pipeline {
    source: Box<dyn Source>,
    stages: Vec<Box<dyn Stage>>,
    sinks: Vec<SinkSpec>,
    tap_rates: Vec<u32>,
    ring_samples: usize,
    block_samples: usize,
    sink_queue: usize,
    overrun_every: Duration,
}

/// Build the stage described by `cfg` (index `index` in the file), running at its own rate or `source_rate`.
pub fn build_stage(cf: &ConfigFile, index: usize, source_rate: u32) -> Result<Box<dyn Stage>> {
    match &cf.config.stages[index] {
        StageConfig::Level(c) => Ok(Box::new(LevelStage::new(c, c.rate.unwrap_or(source_rate)))),
        StageConfig::Onnx(c) => crate::onnx::stage::build(c, cf),
        StageConfig::Cnn(c) => crate::cnn::stage::build(c, cf),
        StageConfig::S2s(c) => crate::s2s::stage::build(c, cf, source_rate),
    }
}

/// Filter and default policy of sink `index`, from its config; also the input-tap rate it needs, if any.
fn sink_route(
    cf: &ConfigFile,
    index: usize,
    source_rate: u32,
) -> (String, Filter, SinkPolicy, Option<u32>) {
    match &cf.config.sinks[index] {
        SinkConfig::Jsonl(c) => (
            format!("jsonl[{index}]"),
            Filter {
                stages: c.stages.clone(),
                events: c.events.clone(),
                audio_from: None,
            },
            c.policy.unwrap_or(SinkPolicy::Block),
            None,
        ),
        SinkConfig::Wav(c) => {
            let tap = (c.from == INPUT_STAGE).then(|| c.rate.unwrap_or(source_rate));
            (
                format!("wav[{index}]"),
                Filter {
                    audio_from: Some((c.from.clone(), tap)),
                    ..Filter::default()
                },
                c.policy.unwrap_or(SinkPolicy::Block),
                tap,
            )
        }
        SinkConfig::Playback(c) => {
            let tap = (c.from == INPUT_STAGE).then_some(source_rate);
            (
                format!("playback[{index}]"),
                Filter {
                    audio_from: Some((c.from.clone(), tap)),
                    ..Filter::default()
                },
                c.policy.unwrap_or(SinkPolicy::DropOldest),
                tap,
            )
        }
    }
}

impl Pipeline {
    /// Check the config, open the source, build the stages and open the sinks.
    pub fn from_config(cf: &ConfigFile) -> Result<Self> {
        check::check(cf)?;
        let source = crate::io::open_source(cf)?;
        let rate = source.rate();
        // Stages an `s2s` stage adopts (its VAD, its wake-word spotter) are built and fed by that stage.
        let adopted = crate::s2s::stage::adopted_stages(cf);
        let stages = (0..cf.config.stages.len())
            .filter(|i| !adopted.contains(i))
            .map(|i| build_stage(cf, i, rate))
            .collect::<Result<Vec<_>>>()?;
        let mut sinks = Vec::new();
        let mut tap_rates = Vec::new();
        for i in 0..cf.config.sinks.len() {
            let (name, filter, policy, tap) = sink_route(cf, i, rate);
            if let Some(t) = tap {
                if !tap_rates.contains(&t) {
                    tap_rates.push(t);
                }
            }
            sinks.push(SinkSpec {
                name,
                filter,
                policy,
                sink: crate::io::open_sink(cf, i, rate)?,
            });
        }
        let mut p = Pipeline::with_daemon(&cf.config.daemon, source, stages, sinks);
        p.tap_rates = tap_rates;
        Ok(p)
    }

    fn with_daemon(
        d: &crate::config::DaemonConfig,
        source: Box<dyn Source>,
        stages: Vec<Box<dyn Stage>>,
        sinks: Vec<SinkSpec>,
    ) -> Self {
        let rate = source.rate() as f64;
        Pipeline {
            ring_samples: ((d.ring_seconds * rate).ceil() as usize).max(64),
            block_samples: ((d.block_ms * 1e-3 * rate).round() as usize).max(1),
            sink_queue: d.sink_queue,
            overrun_every: Duration::from_millis(d.overrun_report_ms),
            source,
            stages,
            sinks,
            tap_rates: Vec::new(),
        }
    }

    /// Assemble a pipeline from parts (library use: custom sources, stages and sinks).
    pub fn from_parts(
        source: Box<dyn Source>,
        stages: Vec<Box<dyn Stage>>,
        sinks: Vec<SinkSpec>,
    ) -> Self {
        Pipeline::with_daemon(
            &crate::config::DaemonConfig::default(),
            source,
            stages,
            sinks,
        )
    }

    /// Add a stage of the library user's own.
    pub fn add_stage(&mut self, stage: Box<dyn Stage>) {
        self.stages.push(stage);
    }

    /// Replace the sinks (library use: sinks of the user's own).
    pub fn set_sinks(&mut self, sinks: Vec<SinkSpec>) {
        self.sinks = sinks;
        self.tap_rates.clear();
    }

    /// Ring capacity in samples.
    pub fn set_ring_samples(&mut self, n: usize) {
        self.ring_samples = n.max(1);
    }

    /// Rate of the source.
    pub fn source_rate(&self) -> u32 {
        self.source.rate()
    }

    /// Start the sink threads, the worker and the source.
    pub fn start(self) -> Result<Running> {
        let rate = self.source.rate();
        let (producer, consumer) = rtrb::RingBuffer::<f32>::new(self.ring_samples);
        let ctl = Arc::new(SourceControl::default());
        let progress = Arc::new(WorkerProgress::default());
        let router = Router::start(self.sinks, self.sink_queue)?;
        let worker = worker::Worker::new(
            rate,
            consumer,
            Arc::clone(&ctl),
            self.stages,
            &self.tap_rates,
            router,
            self.block_samples,
            self.overrun_every,
            Arc::clone(&progress),
        )?;
        let worker = std::thread::Builder::new()
            .name("stream worker".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::io("starting the stream worker", e))?;
        let source = match self.source.start(producer, Arc::clone(&ctl)) {
            Ok(h) => h,
            Err(e) => {
                // Let the worker close the sinks cleanly before reporting.
                ctl.finished.store(true, Ordering::Release);
                let _ = worker.join();
                return Err(e);
            }
        };
        Ok(Running {
            ctl,
            progress,
            source: Some(source),
            worker: Some(worker),
            rate,
        })
    }
}

/// A running pipeline.
pub struct Running {
    ctl: Arc<SourceControl>,
    progress: Arc<WorkerProgress>,
    source: Option<SourceHandle>,
    worker: Option<JoinHandle<Result<WorkerReport>>>,
    rate: u32,
}

impl Running {
    /// Source control block (counters, flags).
    pub fn control(&self) -> &Arc<SourceControl> {
        &self.ctl
    }

    /// Worker progress counters.
    pub fn progress(&self) -> &Arc<WorkerProgress> {
        &self.progress
    }

    /// Source sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// True once the worker has ended (end of input drained, or stopped).
    pub fn is_done(&self) -> bool {
        self.worker.as_ref().is_none_or(|w| w.is_finished())
    }

    /// Stop the source, drain the ring through the stages, flush and close the sinks.
    pub fn stop(mut self) -> Result<WorkerReport> {
        self.ctl.stop.store(true, Ordering::Release);
        self.finish()
    }

    /// Wait for the input to end by itself (file sources), then drain and close.
    pub fn wait(mut self) -> Result<WorkerReport> {
        self.finish()
    }

    fn finish(&mut self) -> Result<WorkerReport> {
        let source_result = self.source.take().map(|s| s.join()).unwrap_or(Ok(()));
        // Whatever the source did, nothing more comes: let the worker drain what is in the ring.
        self.ctl.finished.store(true, Ordering::Release);
        let report = match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Other("stream worker panicked".into())),
            None => Err(Error::Other("pipeline already stopped".into())),
        };
        source_result?;
        report
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.ctl.stop.store(true, Ordering::Release);
            let _ = self.finish();
        }
    }
}

/// Run the daemon on a config file until the input ends or SIGTERM/SIGINT; SIGHUP reloads the config (a config
/// that fails its check is refused and the running one kept). Talks to systemd when `NOTIFY_SOCKET` is set.
pub fn serve(path: &Path, log_level: Option<&str>) -> Result<()> {
    let cf = ConfigFile::load(path)?;
    crate::daemon::init_logging(log_level.unwrap_or(&cf.config.daemon.log_level));
    let signals = Signals::install()?;
    let notifier = Notifier::from_env()?;
    let watchdog = crate::daemon::watchdog_interval().filter(|_| cf.config.daemon.watchdog);
    let mut cf = cf;
    let mut running = Pipeline::from_config(&cf)?.start()?;
    tracing::info!(config = %path.display(), rate = running.rate(), "pipeline running");
    notify(&notifier, "READY=1\nSTATUS=running");
    let mut last_beat = (
        running.progress().heartbeat.load(Ordering::Relaxed),
        Instant::now(),
    );
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if signals.stop_requested() {
            tracing::info!("stop requested: draining");
            notify(&notifier, "STOPPING=1\nSTATUS=draining");
            break;
        }
        if running.is_done() {
            tracing::info!("input ended");
            notify(&notifier, "STOPPING=1\nSTATUS=input ended");
            break;
        }
        if let Some(every) = watchdog {
            let beat = running.progress().heartbeat.load(Ordering::Relaxed);
            if last_beat.1.elapsed() >= every {
                // Only a worker that made progress since the last keep-alive earns the next one.
                if beat != last_beat.0 {
                    notify(&notifier, "WATCHDOG=1");
                } else {
                    tracing::error!(
                        "stream worker made no progress for {:?}: withholding the watchdog",
                        every
                    );
                }
                last_beat = (beat, Instant::now());
            }
        }
        if signals.take_reload() {
            notify(
                &notifier,
                &format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()),
            );
            match ConfigFile::load(path).and_then(|new| check::check(&new).map(|_| new)) {
                Err(e) => {
                    tracing::error!("reload refused, keeping the running config: {e}");
                    notify(&notifier, "READY=1\nSTATUS=reload refused");
                }
                Ok(new) => {
                    let report = running.stop()?;
                    log_report(&report);
                    cf = new;
                    running = Pipeline::from_config(&cf)?.start()?;
                    tracing::info!(config = %path.display(), "config reloaded");
                    notify(&notifier, "READY=1\nSTATUS=running (reloaded)");
                    last_beat = (
                        running.progress().heartbeat.load(Ordering::Relaxed),
                        Instant::now(),
                    );
                }
            }
        }
    }
    let report = running.stop()?;
    log_report(&report);
    Ok(())
}

fn notify(n: &Notifier, state: &str) {
    if let Err(e) = n.notify(state) {
        tracing::warn!("{e}");
    }
}

fn log_report(r: &WorkerReport) {
    tracing::info!(
        samples = r.samples,
        lost = r.lost,
        events = r.events,
        "pipeline stopped"
    );
    for s in &r.sinks {
        tracing::info!(sink = %s.name, written = s.written, dropped = s.dropped, "sink closed");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
