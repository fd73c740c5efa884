//! Event routing: one bounded crossbeam channel and one thread per sink, a filter deciding which events each sink
//! takes, and the per-sink full-queue policy (`block` or `drop-oldest` with a drop counter).

use crate::config::SinkPolicy;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::io::Sink;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Name of the pseudo stage whose `audio` events carry the resampled source signal (for `from = "input"`).
pub const INPUT_STAGE: &str = "input";

/// Which events a sink takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events of these stages (pipeline and source events always pass); all when `None`.
    pub stages: Option<Vec<String>>,
    /// Only these event tags; all when `None`.
    pub events: Option<Vec<String>>,
    /// Audio sinks: only `audio` events of this stage (and, for the input, of this rate), plus its reply bounds
    /// (`response_start`, `response_end`, `barge_in`).
    pub audio_from: Option<(String, Option<u32>)>,
}

impl Filter {
    /// Whether the sink takes `ev`.
    pub fn accepts(&self, ev: &Event) -> bool {
        if let Some((from, rate)) = &self.audio_from {
            return match &ev.kind {
                EventKind::Audio { rate: r, .. } => {
                    &*ev.stage == from && rate.is_none_or(|want| want == *r)
                }
                // A reply's bounds, so that playback can drop the rest of an interrupted reply.
                EventKind::ResponseStart { .. }
                | EventKind::ResponseEnd { .. }
                | EventKind::BargeIn { .. } => &*ev.stage == from,
                _ => false,
            };
        }
        // The input tap's audio exists only for audio sinks.
        if matches!(ev.kind, EventKind::Audio { .. }) && &*ev.stage == INPUT_STAGE {
            return false;
        }
        if let Some(stages) = &self.stages {
            let own = matches!(&*ev.stage, "pipeline" | "source");
            if !own && !stages.iter().any(|s| s == &*ev.stage) {
                return false;
            }
        }
        if let Some(events) = &self.events {
            if !events.iter().any(|t| t == ev.tag()) {
                return false;
            }
        }
        true
    }
}

/// A sink to be started: its name (for messages), filter, policy and the sink itself.
pub struct SinkSpec {
    pub name: String,
    pub filter: Filter,
    pub policy: SinkPolicy,
    pub sink: Box<dyn Sink>,
}

struct Route {
    name: String,
    filter: Filter,
    policy: SinkPolicy,
    tx: Sender<Event>,
    /// A receiver kept by the sender side, to discard the oldest event under `drop-oldest`.
    rx: Receiver<Event>,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    thread: Option<JoinHandle<Result<u64>>>,
}

/// Counts per sink after the router has shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub written: u64,
    pub dropped: u64,
}

/// Fans events out to the sinks' threads.
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Start one thread per sink, each behind a queue of `queue` events.
    pub fn start(specs: Vec<SinkSpec>, queue: usize) -> Result<Self> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let (tx, rx) = bounded::<Event>(queue.max(1));
            let thread_rx = rx.clone();
            let name = spec.name.clone();
            let mut sink = spec.sink;
            let thread = std::thread::Builder::new()
                .name(format!("sink {}", spec.name))
                .spawn(move || -> Result<u64> {
                    let mut written = 0u64;
                    let mut first_error = None;
                    for ev in thread_rx.iter() {
                        if first_error.is_some() {
                            continue; // keep draining so the worker never blocks on a failed sink
                        }
                        match sink.write(&ev) {
                            Ok(()) => written += 1,
                            Err(e) => {
                                tracing::error!("sink {name}: {e}; it takes no more events");
                                first_error = Some(e);
                            }
                        }
                    }
                    let finished = sink.finish();
                    match (first_error, finished) {
                        (Some(e), _) | (None, Err(e)) => Err(e),
                        (None, Ok(())) => Ok(written),
                    }
                })
                .map_err(|e| Error::io("starting a sink thread", e))?;
            routes.push(Route {
                name: spec.name,
                filter: spec.filter,
                policy: spec.policy,
                tx,
                rx,
                dropped: Arc::new(AtomicU64::new(0)),
                reported_dropped: 0,
                thread: Some(thread),
            });
        }
        Ok(Router { routes })
    }

    /// Route one event to every sink that takes it.
    pub fn send(&self, ev: &Event) {
        for r in &self.routes {
            if !r.filter.accepts(ev) {
                continue;
            }
            match r.policy {
                SinkPolicy::Block => {
                    // Fails only if the sink thread is gone; it logged why.
                    let _ = r.tx.send(ev.clone());
                }
                SinkPolicy::DropOldest => {
                    let mut item = ev.clone();
                    loop {
                        match r.tx.try_send(item) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                if r.rx.try_recv().is_ok() {
                                    r.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                item = back;
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
            }
        }
    }

    /// `sink_dropped` events for sinks that dropped events since the last call.
    pub fn drop_reports(&mut self, stage: &Arc<str>, sample: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for r in &mut self.routes {
            let now = r.dropped.load(Ordering::Relaxed);
            if now > r.reported_dropped {
                out.push(Event::new(
                    stage,
                    sample,
                    EventKind::SinkDropped {
                        sink: r.name.clone(),
                        dropped: now - r.reported_dropped,
                    },
                ));
                r.reported_dropped = now;
            }
        }
        out
    }

    /// Close the queues, let every sink drain and finish, and join their threads. Returns per-sink counts, or the
    /// first sink error.
    pub fn finish(self) -> Result<Vec<SinkReport>> {
        let mut reports = Vec::new();
        let mut first_error = None;
        let mut threads = Vec::new();
        for mut r in self.routes {
            drop(r.tx);
            drop(r.rx);
            threads.push((r.name, r.dropped, r.thread.take()));
        }
        for (name, dropped, thread) in threads {
            let written = match thread.map(|t| t.join()) {
                Some(Ok(Ok(n))) => n,
                Some(Ok(Err(e))) => {
                    first_error.get_or_insert(Error::Other(format!("sink {name}: {e}")));
                    0
                }
                Some(Err(_)) => {
                    first_error
                        .get_or_insert(Error::Other(format!("sink {name}: thread panicked")));
                    0
                }
                None => 0,
            };
            reports.push(SinkReport {
                name,
                written,
                dropped: dropped.load(Ordering::Relaxed),
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that records what it receives, optionally slowly.
    struct Collect {
        got: Arc<Mutex<Vec<String>>>,
        delay: std::time::Duration,
    }

    impl Sink for Collect {
        fn write(&mut self, ev: &Event) -> Result<()> {
            std::thread::sleep(self.delay);
            self.got
                .lock()
                .map_err(|_| Error::Other("poisoned".into()))?
                .push(ev.tag().to_string());
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    fn ev(stage: &str, kind: EventKind) -> Event {
        Event::new(&Arc::from(stage), 0, kind)
    }

    #[test]
    fn filters_select_by_stage_tag_and_audio_source() {
        let f = Filter {
            stages: Some(vec!["kws".into()]),
            events: Some(vec!["detection".into(), "overrun".into()]),
            audio_from: None,
        };
        let det = EventKind::Detection {
            label: "yes".into(),
            score: 0.9,
        };
        assert!(f.accepts(&ev("kws", det.clone())));
        assert!(!f.accepts(&ev("other", det)));
        assert!(!f.accepts(&ev("kws", EventKind::Activity { active: true })));
        assert!(f.accepts(&ev(
            "source",
            EventKind::Overrun {
                lost: 1,
                total_lost: 1
            }
        )));
        let audio = |rate| EventKind::Audio {
            rate,
            samples: Arc::from(vec![0.0f32; 4]),
            frames: 4,
        };
        assert!(!Filter::default().accepts(&ev(INPUT_STAGE, audio(16_000))));
        let wav = Filter {
            audio_from: Some((INPUT_STAGE.into(), Some(16_000))),
            ..Filter::default()
        };
        assert!(wav.accepts(&ev(INPUT_STAGE, audio(16_000))));
        assert!(!wav.accepts(&ev(INPUT_STAGE, audio(48_000))));
        assert!(!wav.accepts(&ev(INPUT_STAGE, EventKind::Text { text: "x".into() })));
    }

    #[test]
    fn block_policy_loses_nothing_and_drop_oldest_counts() {
        let slow = Arc::new(Mutex::new(Vec::new()));
        let fast = Arc::new(Mutex::new(Vec::new()));
        let specs = vec![
            SinkSpec {
                name: "blocking".into(),
                filter: Filter::default(),
                policy: SinkPolicy::Block,
                sink: Box::new(Collect {
                    got: Arc::clone(&fast),
                    delay: std::time::Duration::from_micros(200),
                }),
            },
            SinkSpec {
                name: "lossy".into(),
                filter: Filter::default(),
                policy: SinkPolicy::DropOldest,
                sink: Box::new(Collect {
                    got: Arc::clone(&slow),
                    delay: std::time::Duration::from_millis(5),
                }),
            },
        ];
        let mut router = Router::start(specs, 4).expect("start");
        for _ in 0..200 {
            router.send(&ev("s", EventKind::Text { text: "t".into() }));
        }
        let reports = router.drop_reports(&Arc::from("pipeline"), 0);
        let reports_dropped: u64 = reports
            .iter()
            .map(|e| match &e.kind {
                EventKind::SinkDropped { sink, dropped } => {
                    assert_eq!(sink, "lossy");
                    *dropped
                }
                _ => 0,
            })
            .sum();
        let done = router.finish().expect("finish");
        assert_eq!(done[0].written, 200);
        assert_eq!(done[0].dropped, 0);
        assert!(
            done[1].dropped > 0,
            "the slow drop-oldest sink must have dropped events"
        );
        assert_eq!(done[1].written + done[1].dropped, 200);
        assert!(reports_dropped <= done[1].dropped);
        assert_eq!(fast.lock().map(|v| v.len()).unwrap_or(0), 200);
    }
}
