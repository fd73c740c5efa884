//! Overload: a stage slower than real time must never block the (live) source. Lost samples are counted and
//! reported as `overrun` events, memory stays bounded by the ring and the queues, and a stop request is honoured
//! promptly.

use sigflow::config::ConfigFile;
use sigflow::event::{Event, EventKind};
use sigflow::io::Sink;
use sigflow::pipeline::router::{Filter, SinkSpec};
use sigflow::pipeline::Pipeline;
use sigflow::stage::Stage;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Takes twice as long as real time to process what it is given.
struct SlowStage {
    rate: u32,
    seen: Arc<Mutex<u64>>,
}

impl Stage for SlowStage {
    fn name(&self) -> &str {
        "slow"
    }
    fn rate(&self) -> u32 {
        self.rate
    }
    fn push(&mut self, samples: &[f32], _out: &mut Vec<Event>) {
        std::thread::sleep(Duration::from_secs_f64(
            2.0 * samples.len() as f64 / self.rate as f64,
        ));
        if let Ok(mut s) = self.seen.lock() {
            *s += samples.len() as u64;
        }
    }
    fn reset(&mut self) {}
}

struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn write(&mut self, ev: &Event) -> sigflow::Result<()> {
        self.0
            .lock()
            .map_err(|_| sigflow::Error::Other("poisoned".into()))?
            .push(ev.clone());
        Ok(())
    }
    fn finish(&mut self) -> sigflow::Result<()> {
        Ok(())
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_stage_causes_counted_overruns_without_blocking_the_source() {
    let rate = 16_000u32;
    let text =
        "[daemon]\nring-seconds = 0.25\noverrun-report-ms = 200\n\n[source]\nkind = \"synth\"\n\
                signal = \"noise\"\nrealtime = true\n";
    let cf = ConfigFile::parse(Path::new("overload.toml"), text.to_string()).expect("config");
    let mut p = Pipeline::from_config(&cf).expect("pipeline");
    let seen = Arc::new(Mutex::new(0u64));
    p.add_stage(Box::new(SlowStage {
        rate,
        seen: Arc::clone(&seen),
    }));
    let events = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&events);
    let sinks = vec![SinkSpec {
        name: "collect".into(),
        filter: Filter::default(),
        policy: sigflow::config::SinkPolicy::Block,
        sink: Box::new(Collect(collected)),
    }];
    p.set_sinks(sinks);
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let running = p.start().expect("start");
    let ctl = Arc::clone(running.control());
    let mut rss_peak = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        rss_peak = rss_peak.max(rss_kib());
    }
    let stop_at = Instant::now();
    let report = running.stop().expect("stop");
    let stop_took = stop_at.elapsed();
    let ran = stop_at.duration_since(t0).as_secs_f64();

    let pushed = ctl.pushed.load(std::sync::atomic::Ordering::Relaxed);
    let lost = ctl.lost.load(std::sync::atomic::Ordering::Relaxed);
    // The live source kept real time: everything it generated was either pushed or counted as lost.
    let generated = (pushed + lost) as f64 / rate as f64;
    assert!(
        (generated - ran).abs() / ran < 0.1,
        "source produced {generated:.2} s in {ran:.2} s"
    );
    // Half of it could not be processed in time.
    assert!(lost as f64 > 0.3 * rate as f64 * ran, "lost only {lost}");
    assert_eq!(report.lost, lost, "every lost sample is reported");
    let evs = events.lock().expect("events");
    let reported: u64 = evs
        .iter()
        .map(|e| match e.kind {
            EventKind::Overrun { lost, .. } => lost,
            _ => 0,
        })
        .sum();
    assert_eq!(reported, lost, "overrun events add up to the counter");
    assert!(
        evs.iter()
            .filter(|e| matches!(e.kind, EventKind::Overrun { .. }))
            .count()
            >= 3
    );
    // Responsive: the stop drains at most a quarter-second ring at half speed, plus a block.
    assert!(
        stop_took < Duration::from_secs(2),
        "stop took {stop_took:?}"
    );
    // Bounded memory: nothing grows with the backlog (the ring holds 0.25 s).
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB"
    );
    assert_eq!(*seen.lock().expect("seen"), report.samples);
}
