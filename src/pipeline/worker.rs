//! The stream worker: pulls blocks from the capture ring, resamples them once per distinct stage rate, feeds the
//! stages, stamps events with source-rate stream time and routes them to the sinks.

use crate::dsp::resample::StreamResampler;
use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::io::SourceControl;
use crate::pipeline::router::{Router, SinkReport, INPUT_STAGE};
use crate::stage::Stage;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stages that share one input rate, fed from one resampler.
struct RateGroup {
    rate: u32,
    resampler: Option<StreamResampler>,
    buf: Vec<f32>,
    stages: Vec<Box<dyn Stage>>,
    /// Input taps (`from = "input"` audio sinks) at this rate emit the resampled signal as `audio` events.
    tap: bool,
    /// Samples delivered at this rate so far (stream time of the input tap's next block).
    delivered: u64,
}

/// What the worker reports when it ends.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    /// Source samples taken out of the ring.
    pub samples: u64,
    /// Source samples lost to a full ring.
    pub lost: u64,
    /// Events emitted by stages and the pipeline.
    pub events: u64,
    pub sinks: Vec<SinkReport>,
}

/// Progress counters shared with the supervisor (watchdog) and metrics.
#[derive(Debug, Default)]
pub struct WorkerProgress {
    /// Incremented on every loop iteration, idle or not: a stuck worker stops it.
    pub heartbeat: AtomicU64,
    /// Source samples processed.
    pub samples: AtomicU64,
}

pub struct Worker {
    source_rate: u32,
    ring: rtrb::Consumer<f32>,
    ctl: Arc<SourceControl>,
    groups: Vec<RateGroup>,
    router: Router,
    block: Vec<f32>,
    events: Vec<Event>,
    progress: Arc<WorkerProgress>,
    overrun_every: Duration,
    pipeline_name: Arc<str>,
    source_name: Arc<str>,
    input_name: Arc<str>,
    emitted: u64,
}

impl Worker {
    /// `tap_rates`: rates at which the resampled input is published as `audio` events of the `input` stage.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source_rate: u32,
        ring: rtrb::Consumer<f32>,
        ctl: Arc<SourceControl>,
        stages: Vec<Box<dyn Stage>>,
        tap_rates: &[u32],
        router: Router,
        block_samples: usize,
        overrun_every: Duration,
        progress: Arc<WorkerProgress>,
    ) -> Result<Self> {
        let mut groups: Vec<RateGroup> = Vec::new();
        let group_for = |groups: &mut Vec<RateGroup>, rate: u32| -> Result<usize> {
            if let Some(i) = groups.iter().position(|g| g.rate == rate) {
                return Ok(i);
            }
            let resampler = if rate == source_rate {
                None
            } else {
                Some(StreamResampler::new(source_rate, rate)?)
            };
            groups.push(RateGroup {
                rate,
                resampler,
                buf: Vec::with_capacity(block_samples * 4 + 1024),
                stages: Vec::new(),
                tap: false,
                delivered: 0,
            });
            Ok(groups.len() - 1)
        };
        for st in stages {
            let i = group_for(&mut groups, st.rate())?;
            groups[i].stages.push(st);
        }
        for &r in tap_rates {
            let i = group_for(&mut groups, r)?;
            groups[i].tap = true;
        }
        Ok(Worker {
            source_rate,
            ring,
            ctl,
            groups,
            router,
            block: vec![0.0; block_samples.max(1)],
            events: Vec::with_capacity(256),
            progress,
            overrun_every,
            pipeline_name: Arc::from("pipeline"),
            source_name: Arc::from("source"),
            input_name: Arc::from(INPUT_STAGE),
            emitted: 0,
        })
    }

    /// Run until the source has finished and the ring is drained; then flush resamplers and stages and close the
    /// sinks. Stopping early is done by stopping the source (which then sets `finished`).
    pub fn run(mut self) -> Result<WorkerReport> {
        let mut consumed = 0u64;
        let mut reported_lost = 0u64;
        let mut last_overrun_report: Option<Instant> = None;
        let idle = Duration::from_micros(
            (self.block.len() as u64 * 1_000_000 / self.source_rate.max(1) as u64 / 4)
                .clamp(500, 20_000),
        );
        self.emit_status(0, "started");
        loop {
            self.progress.heartbeat.fetch_add(1, Ordering::Relaxed);
            // Read `finished` before looking at the ring: once it is set, everything the source pushed is visible.
            let finished = self.ctl.finished.load(Ordering::Acquire);
            let n = self.ring.slots().min(self.block.len());
            if n == 0 {
                if finished {
                    break;
                }
                self.report_overruns(
                    consumed,
                    &mut reported_lost,
                    &mut last_overrun_report,
                    false,
                );
                std::thread::sleep(idle);
                continue;
            }
            let (head, tail) = match self.ring.read_chunk(n) {
                Ok(chunk) => {
                    let (a, b) = chunk.as_slices();
                    self.block[..a.len()].copy_from_slice(a);
                    self.block[a.len()..a.len() + b.len()].copy_from_slice(b);
                    let lens = (a.len(), b.len());
                    chunk.commit_all();
                    lens
                }
                Err(_) => continue,
            };
            let n = head + tail;
            consumed += n as u64;
            self.process_block(n, false);
            self.progress.samples.store(consumed, Ordering::Relaxed);
            self.report_overruns(
                consumed,
                &mut reported_lost,
                &mut last_overrun_report,
                false,
            );
        }
        // End of stream: flush resampler tails and stages.
        self.process_block(0, true);
        self.report_overruns(consumed, &mut reported_lost, &mut last_overrun_report, true);
        self.emit_status(consumed, "stopped");
        let events = self.emitted;
        let sinks = self.router.finish()?;
        Ok(WorkerReport {
            samples: consumed,
            lost: reported_lost,
            events,
            sinks,
        })
    }

    fn process_block(&mut self, n: usize, end: bool) {
        let block = &self.block[..n];
        for g in &mut self.groups {
            let input: &[f32] = match &mut g.resampler {
                Some(rs) => {
                    g.buf.clear();
                    rs.process(block, &mut g.buf);
                    if end {
                        rs.finish(&mut g.buf);
                    }
                    &g.buf
                }
                None => block,
            };
            if g.tap && !input.is_empty() {
                self.events.push(Event::new(
                    &self.input_name,
                    rescale(g.delivered, g.rate, self.source_rate),
                    EventKind::Audio {
                        rate: g.rate,
                        samples: Arc::from(input),
                        frames: input.len(),
                    },
                ));
            }
            g.delivered += input.len() as u64;
            for st in &mut g.stages {
                let first = self.events.len();
                if !input.is_empty() {
                    st.push(input, &mut self.events);
                }
                if end {
                    st.finish(&mut self.events);
                }
                // Map stage-rate stream time to the source rate.
                for ev in &mut self.events[first..] {
                    ev.sample = rescale(ev.sample, g.rate, self.source_rate);
                }
            }
        }
        self.flush_events();
    }

    fn flush_events(&mut self) {
        for mut ev in self.events.drain(..) {
            ev.time = ev.sample as f64 / self.source_rate as f64;
            self.router.send(&ev);
            self.emitted += 1;
        }
    }

    fn report_overruns(
        &mut self,
        consumed: u64,
        reported: &mut u64,
        last: &mut Option<Instant>,
        force: bool,
    ) {
        let lost = self.ctl.lost.load(Ordering::Relaxed);
        let due = last.is_none_or(|t| t.elapsed() >= self.overrun_every);
        if lost > *reported && (due || force) {
            tracing::warn!(
                lost = lost - *reported,
                total_lost = lost,
                "capture ring overrun: samples lost"
            );
            self.events.push(Event::new(
                &self.source_name,
                consumed,
                EventKind::Overrun {
                    lost: lost - *reported,
                    total_lost: lost,
                },
            ));
            *reported = lost;
            *last = Some(Instant::now());
        }
        let drops = self.router.drop_reports(&self.pipeline_name, consumed);
        self.events.extend(drops);
        self.flush_events();
    }

    fn emit_status(&mut self, sample: u64, message: &str) {
        self.events.push(Event::new(
            &self.pipeline_name,
            sample,
            EventKind::Status {
                message: message.to_string(),
            },
        ));
        self.flush_events();
    }
}

/// `sample` at rate `from` expressed at rate `to`, rounded to the nearest sample.
pub fn rescale(sample: u64, from: u32, to: u32) -> u64 {
    if from == to {
        return sample;
    }
    ((sample as u128 * to as u128 + from as u128 / 2) / from as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest() {
        assert_eq!(rescale(16_000, 16_000, 48_000), 48_000);
        assert_eq!(rescale(1, 48_000, 16_000), 0);
        assert_eq!(rescale(2, 48_000, 16_000), 1);
        assert_eq!(rescale(441, 44_100, 16_000), 160);
    }
}
