//! `Event`: what stages emit and sinks consume. One event serialises to one JSON object.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One thing that happened in the stream, stamped with stream time and wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Name of the stage (or `source`, `pipeline`) that produced it.
    pub stage: Arc<str>,
    /// Stream time as a sample index. Stages set it at their own rate; the stream worker maps it to the source
    /// rate before the event leaves the worker.
    pub sample: u64,
    /// Stream time in seconds (sample / source rate), filled in by the stream worker.
    pub time: f64,
    /// Wall-clock time, seconds since the Unix epoch.
    pub wall: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The payload of an [`Event`]; serialised with an `"event"` tag in snake case.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// RMS and peak level of one hop, in dBFS.
    Level { rms_dbfs: f32, peak_dbfs: f32 },
    /// Signal activity crossed the threshold (with hysteresis).
    Activity { active: bool },
    /// Per-class scores of a classifier for one hop.
    Scores {
        labels: Arc<[String]>,
        scores: Vec<f32>,
    },
    /// A per-frame time series (fully convolutional models): `values[frame][channel]`, frames `period` samples apart.
    Series { period: u64, values: Vec<Vec<f32>> },
    /// A class crossed its detection threshold.
    Detection { label: String, score: f32 },
    /// Voice activity: speech began.
    SpeechStart { probability: f32 },
    /// Voice activity: speech ended; `duration` in seconds.
    SpeechEnd { duration: f64 },
    /// A heart beat; `rr_ms`/`bpm` once a previous beat is known.
    Beat {
        probability: f32,
        rr_ms: Option<f64>,
        bpm: Option<f64>,
    },
    /// A configured alarm (e.g. bradycardia, tachycardia) raised or cleared.
    Alarm {
        name: String,
        active: bool,
        value: f64,
    },
    /// Text produced by a model.
    Text { text: String },
    /// Audio produced by a stage (e.g. speech). Samples are not written to JSON; `frames` tells how many.
    Audio {
        rate: u32,
        #[serde(skip)]
        samples: Arc<[f32]>,
        frames: usize,
    },
    /// Samples lost because the capture ring was full.
    Overrun { lost: u64, total_lost: u64 },
    /// Events a sink dropped under its `drop-oldest` policy.
    SinkDropped { sink: String, dropped: u64 },
    /// Lifecycle and diagnostic messages (started, reloaded, stopped …).
    Status { message: String },
    /// Assistant (`s2s` stage): a user turn ended and was handed to the model; `duration` of its speech in seconds.
    TurnStart { turn: u64, duration: f64 },
    /// Assistant: the reply to `turn` begins; its `audio` and `text` events follow. `signal` is raised at once on
    /// barge-in, ahead of the event queues, so that audio sinks stop playing the reply without delay.
    ResponseStart {
        turn: u64,
        #[serde(skip)]
        signal: Arc<BargeInSignal>,
    },
    /// Assistant: the reply to `turn` ended after `frames` samples of audio at `rate`; `text` is its whole text;
    /// `interrupted` when barge-in cut it.
    ResponseEnd {
        turn: u64,
        frames: u64,
        rate: u32,
        text: String,
        interrupted: bool,
    },
    /// Assistant: user speech during the reply to `turn` stopped it after `frames` samples of its audio.
    BargeIn { turn: u64, frames: u64 },
}

/// Raised by the assistant stage when the user interrupts a reply; read lock-free by audio sinks.
#[derive(Debug, Default)]
pub struct BargeInSignal {
    raised: AtomicBool,
}

impl BargeInSignal {
    /// Interrupt the reply.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    /// Whether the reply was interrupted.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}

/// Seconds since the Unix epoch, now.
pub fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Event {
    /// A new event at `sample` (stage rate; see [`Event::sample`]) stamped with the current wall-clock time.
    pub fn new(stage: &Arc<str>, sample: u64, kind: EventKind) -> Self {
        Event {
            stage: Arc::clone(stage),
            sample,
            time: 0.0,
            wall: wall_now(),
            kind,
        }
    }

    /// The event's JSON tag (`"level"`, `"detection"` …).
    pub fn tag(&self) -> &'static str {
        match self.kind {
            EventKind::Level { .. } => "level",
            EventKind::Activity { .. } => "activity",
            EventKind::Scores { .. } => "scores",
            EventKind::Series { .. } => "series",
            EventKind::Detection { .. } => "detection",
            EventKind::SpeechStart { .. } => "speech_start",
            EventKind::SpeechEnd { .. } => "speech_end",
            EventKind::Beat { .. } => "beat",
            EventKind::Alarm { .. } => "alarm",
            EventKind::Text { .. } => "text",
            EventKind::Audio { .. } => "audio",
            EventKind::Overrun { .. } => "overrun",
            EventKind::SinkDropped { .. } => "sink_dropped",
            EventKind::Status { .. } => "status",
            EventKind::TurnStart { .. } => "turn_start",
            EventKind::ResponseStart { .. } => "response_start",
            EventKind::ResponseEnd { .. } => "response_end",
            EventKind::BargeIn { .. } => "barge_in",
        }
    }
}
