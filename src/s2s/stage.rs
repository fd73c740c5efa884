//! The `s2s` stage: an always-on assistant. Voice activity (and optionally a wake word) cuts the 16 kHz stream
//! into user turns; the end of a turn hands its audio to a speech-to-speech [`Responder`] running on a thread of
//! its own; the reply comes back as `audio` events (24 kHz) and `text` events, framed by `turn_start`,
//! `response_start` and `response_end`. User speech during a reply stops it (`barge_in`).
//!
//! The VAD and the keyword spotter are ordinary stages of the same config (`onnx` with `preset = "vad"`, `cnn`),
//! named by the `vad` and `wake-word` keys. The stage adopts them: the pipeline does not run them on their own,
//! the s2s stage feeds them its input and passes their events on unchanged (so sinks see `speech_start`,
//! `detection` … under their own names), reacting to them as it does. Stages see samples, not each other's
//! events, so owning the detectors is what lets the assistant react to them at an exact stream position.
//!
//! The detectors are fed in pieces cut at multiples of [`STEP`] samples of stream time, and the stage reacts to
//! their events at the end of the piece in which they appear: what happens, and at which sample, does not depend
//! on how the stream worker happens to block the input.
//!
//! Pacing (`pace`): with `stream` (the default for a WAV file read faster than real time), the reply is released
//! as if played from the moment the turn ended: by stream position `now`, exactly `(now − start) · 24000 / 16000`
//! samples of reply audio are out, text as soon as the audio before it is (the stage looks one chunk ahead, so
//! a reply's closing text and its end come with its last audio). When the model is behind, the stage
//! waits for it — only a file source can afford that, and it loses nothing (the reader waits for room in the
//! ring). Runs are then deterministic whatever the machine's speed: the sample at which barge-in cuts a reply is a
//! function of the recording. With `free` (live sources), chunks are released as soon as the model produces them
//! and the stage never waits; playback plays them and drops the rest of a reply on barge-in.

use crate::config::{ConfigFile, Key, Length, SourceConfig, StageConfig, WavSource};
use crate::error::{Error, Result};
use crate::event::{BargeInSignal, Event, EventKind};
use crate::kernels::quant::DType;
use crate::s2s::session::{
    ReplyMessage, Responder, ResponderThread, ResponseChunk, Turn, TurnDetector, WakeWord,
    DEFAULT_SYSTEM_PROMPT,
};
use crate::stage::Stage;
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

/// Rate of user turns (and of the stage's input).
pub const TURN_RATE: u32 = 16_000;
/// Detectors are fed in pieces ending at multiples of this many samples (16 ms); the stage reacts at those ends.
pub const STEP: u64 = 256;
/// Reply chunks queued between the model thread and the stage.
const REPLY_QUEUE: usize = 64;

/// How the model's output is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResponseMode {
    /// Text and audio interleaved (6 text tokens, 12 audio frames, …): audio starts early.
    #[default]
    Interleaved,
    /// All the text first, then all the audio.
    Sequential,
}

/// When reply chunks are released (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// `stream` for a WAV or synth source that does not run in real time, `free` otherwise.
    #[default]
    Auto,
    /// Release the reply at the pace of stream time, waiting for the model when it is behind.
    Stream,
    /// Release chunks as they come; never wait.
    Free,
}

/// `wake-word = { stage = "kws", label = "marvin", window = "3s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WakeWordConfig {
    /// A `cnn` stage of this config whose `detection` events spot the wake word (at 16 kHz).
    pub stage: String,
    /// The label that wakes the assistant.
    pub label: String,
    /// How long before the turn began the wake word may have been heard (default 3 s); it may also be heard
    /// during the turn.
    pub window: Option<Length>,
}

/// `kind = "s2s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S2sStageConfig {
    pub name: String,
    /// An LFM2-Audio checkpoint directory in the published layout (`config.json`, `model.safetensors`,
    /// `audio_detokenizer/`, `tokenizer.json`), relative to the config file.
    pub checkpoint: PathBuf,
    /// Weight type the model runs in: `f32`, `bf16`, `q8` or `q4` (default `q8`).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Threads of the model (default 2).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// `interleaved` (default) or `sequential`.
    #[serde(default)]
    pub mode: ResponseMode,
    /// Most tokens (text tokens and audio frames) in one reply (default 512).
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// System prompt (default "Respond with interleaved text and audio.").
    pub system_prompt: Option<String>,
    /// The `onnx` stage (`preset = "vad"`, 16 kHz) whose speech segments are the user's turns.
    pub vad: String,
    /// A wake word the user says before (or in) a turn; every turn is answered when absent.
    pub wake_word: Option<WakeWordConfig>,
    /// Stop the reply when the user speaks during it (default true).
    #[serde(default = "yes")]
    pub barge_in: bool,
    /// `auto` (default), `stream` or `free`.
    #[serde(default)]
    pub pace: Pace,
    /// Longest user turn kept; a longer one keeps its end (default 30 s).
    pub max_turn: Option<Length>,
}

fn default_dtype() -> String {
    "q8".into()
}
fn default_threads() -> usize {
    2
}
fn default_max_new_tokens() -> usize {
    512
}
fn yes() -> bool {
    true
}

/// The resolved settings of an `s2s` stage.
#[derive(Debug, Clone)]
pub struct S2sSettings {
    pub name: String,
    pub checkpoint: PathBuf,
    pub dtype: DType,
    pub threads: usize,
    pub mode: ResponseMode,
    pub max_new_tokens: usize,
    pub system_prompt: String,
    pub barge_in: bool,
    /// True: release at stream pace (resolved from [`Pace`]).
    pub stream_paced: bool,
    /// Samples at 16 kHz.
    pub max_turn: u64,
    pub wake: Option<WakeWord>,
}

fn key_path(index: usize) -> impl Fn(&[&str]) -> Vec<Key> {
    move |k: &[&str]| {
        let mut v = vec![Key::from("stage"), Key::Index(index)];
        v.extend(k.iter().map(|s| Key::from(*s)));
        v
    }
}

/// Indices of the stages that `s2s` stages adopt (their VAD and wake-word spotter); the pipeline does not run
/// them itself.
pub fn adopted_stages(cf: &ConfigFile) -> Vec<usize> {
    let stages = &cf.config.stages;
    let index_of = |name: &str| stages.iter().position(|s| s.name() == name);
    let mut out = Vec::new();
    for st in stages {
        if let StageConfig::S2s(c) = st {
            out.extend(index_of(&c.vad));
            if let Some(w) = &c.wake_word {
                out.extend(index_of(&w.stage));
            }
        }
    }
    out
}

fn resolve(
    cfg: &S2sStageConfig,
    cf: &ConfigFile,
    index: usize,
) -> Result<(S2sSettings, usize, Option<usize>)> {
    let at = key_path(index);
    let stages = &cf.config.stages;
    let dtype = DType::parse(&cfg.dtype).ok_or_else(|| {
        cf.error_at(
            &at(&["dtype"]),
            format!(
                "unknown dtype `{}` (expected f32, bf16, q8 or q4)",
                cfg.dtype
            ),
        )
    })?;
    if cfg.threads == 0 || cfg.threads > 256 {
        return Err(cf.error_at(&at(&["threads"]), "must be between 1 and 256"));
    }
    if cfg.max_new_tokens == 0 {
        return Err(cf.error_at(&at(&["max-new-tokens"]), "must be at least 1"));
    }
    let checkpoint = cf.resolve(&cfg.checkpoint);
    if !checkpoint.join("config.json").is_file() {
        return Err(cf.error_at(
            &at(&["checkpoint"]),
            format!(
                "{} is not an LFM2-Audio checkpoint directory (no config.json)",
                checkpoint.display()
            ),
        ));
    }
    // Another s2s stage adopting the same detector would starve one of the two.
    let taken_before = |name: &str| {
        stages[..index].iter().any(|s| match s {
            StageConfig::S2s(o) => {
                o.vad == name || o.wake_word.as_ref().is_some_and(|w| w.stage == name)
            }
            _ => false,
        })
    };
    let vad_index = stages
        .iter()
        .position(|s| s.name() == cfg.vad)
        .ok_or_else(|| {
            cf.error_at(
                &at(&["vad"]),
                format!(
                    "no stage named `{}` (it must be an `onnx` stage with preset = \"vad\")",
                    cfg.vad
                ),
            )
        })?;
    match &stages[vad_index] {
        StageConfig::Onnx(o) if o.preset == Some(crate::onnx::stage::OnnxPreset::Vad) => {
            if o.rate.is_some_and(|r| r != TURN_RATE) {
                return Err(cf.error_at(
                    &at(&["vad"]),
                    format!(
                        "stage `{}` must run at {TURN_RATE} Hz, the rate of user turns",
                        cfg.vad
                    ),
                ));
            }
        }
        _ => {
            return Err(cf.error_at(
                &at(&["vad"]),
                format!(
                    "stage `{}` is not an `onnx` stage with preset = \"vad\"",
                    cfg.vad
                ),
            ))
        }
    }
    if taken_before(&cfg.vad) {
        return Err(cf.error_at(
            &at(&["vad"]),
            format!("stage `{}` already serves another s2s stage", cfg.vad),
        ));
    }
    let (wake, wake_index) = match &cfg.wake_word {
        None => (None, None),
        Some(w) => {
            let wi = stages
                .iter()
                .position(|s| s.name() == w.stage)
                .ok_or_else(|| {
                    cf.error_at(
                        &at(&["wake-word", "stage"]),
                        format!("no stage named `{}` (it must be a `cnn` stage)", w.stage),
                    )
                })?;
            let StageConfig::Cnn(c) = &stages[wi] else {
                return Err(cf.error_at(
                    &at(&["wake-word", "stage"]),
                    format!("stage `{}` is not a `cnn` stage", w.stage),
                ));
            };
            if c.rate.unwrap_or(16_000) != TURN_RATE {
                return Err(cf.error_at(
                    &at(&["wake-word", "stage"]),
                    format!(
                        "stage `{}` must run at {TURN_RATE} Hz, the rate of user turns",
                        w.stage
                    ),
                ));
            }
            let labels = c.detect.as_ref().or(c.labels.as_ref());
            if labels.is_some_and(|l| !l.iter().any(|x| x == &w.label)) {
                return Err(cf.error_at(
                    &at(&["wake-word", "label"]),
                    format!("stage `{}` does not detect `{}`", w.stage, w.label),
                ));
            }
            if c.threshold.is_none() {
                return Err(cf.error_at(
                    &at(&["wake-word", "stage"]),
                    format!(
                        "stage `{}` has no `threshold`, so it detects nothing",
                        w.stage
                    ),
                ));
            }
            if taken_before(&w.stage) || w.stage == cfg.vad {
                return Err(cf.error_at(
                    &at(&["wake-word", "stage"]),
                    format!("stage `{}` already serves another purpose", w.stage),
                ));
            }
            let window = w.window.unwrap_or(Length::Seconds(3.0)).samples(TURN_RATE);
            (
                Some(WakeWord {
                    label: w.label.clone(),
                    window,
                }),
                Some(wi),
            )
        }
    };
    let max_turn = cfg
        .max_turn
        .unwrap_or(Length::Seconds(30.0))
        .samples(TURN_RATE);
    if max_turn < STEP {
        return Err(cf.error_at(&at(&["max-turn"]), "must be at least 16 ms"));
    }
    let stream_paced = match cfg.pace {
        Pace::Stream => true,
        Pace::Free => false,
        Pace::Auto => {
            matches!(
                &cf.config.source,
                SourceConfig::Wav(WavSource {
                    realtime: false,
                    ..
                })
            ) || matches!(&cf.config.source, SourceConfig::Synth(s) if !s.realtime)
        }
    };
    Ok((
        S2sSettings {
            name: cfg.name.clone(),
            checkpoint,
            dtype,
            threads: cfg.threads,
            mode: cfg.mode,
            max_new_tokens: cfg.max_new_tokens,
            system_prompt: cfg
                .system_prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()),
            barge_in: cfg.barge_in,
            stream_paced,
            max_turn,
            wake,
        },
        vad_index,
        wake_index,
    ))
}

/// Semantic check of the `index`-th stage (the model is not loaded).
pub fn check(cfg: &S2sStageConfig, cf: &ConfigFile, index: usize) -> Result<()> {
    resolve(cfg, cf, index).map(|_| ())
}

/// Build the stage: its detectors, the model, and the model's thread.
pub fn build(cfg: &S2sStageConfig, cf: &ConfigFile, source_rate: u32) -> Result<Box<dyn Stage>> {
    let index = cf
        .config
        .stages
        .iter()
        .position(|s| s.name() == cfg.name)
        .unwrap_or(0);
    let (settings, vad_index, wake_index) = resolve(cfg, cf, index)?;
    let vad = crate::pipeline::build_stage(cf, vad_index, source_rate)?;
    let wake = wake_index
        .map(|i| crate::pipeline::build_stage(cf, i, source_rate))
        .transpose()?;
    let responder =
        load_responder(&settings).map_err(|e| cf.error_at(&key_path(index)(&["checkpoint"]), e))?;
    Ok(Box::new(S2sStage::new(settings, vad, wake, responder)?))
}

/// The speech-to-speech model of a checkpoint, as a [`Responder`] (greedy decoding, so replies are reproducible).
/// A checkpoint without `tokenizer.json` (the test fixture) gets the stand-in chat layout and empty text pieces.
pub fn load_responder(s: &S2sSettings) -> Result<Box<dyn Responder>> {
    use crate::s2s::chat::{ChatLayout, STAND_IN_SYSTEM};
    use crate::s2s::generate::{GenerationParams, Mode};
    use crate::s2s::lfm2_audio::Lfm2Audio;
    use crate::s2s::lfm2_audio_responder::Lfm2AudioResponder;
    let model = Arc::new(Lfm2Audio::load(&s.checkpoint, s.dtype, s.threads)?);
    let mode = match s.mode {
        ResponseMode::Interleaved => Mode::Interleaved,
        ResponseMode::Sequential => Mode::Sequential,
    };
    let params = GenerationParams::greedy(mode, s.max_new_tokens);
    let responder = if s.checkpoint.join("tokenizer.json").is_file() {
        Lfm2AudioResponder::from_checkpoint(model, &s.checkpoint, Some(&s.system_prompt), params)?
    } else {
        Lfm2AudioResponder::new(
            model,
            ChatLayout::stand_in(),
            Some(STAND_IN_SYSTEM.to_vec()),
            None,
            params,
        )?
    };
    Ok(Box::new(responder))
}

/// The reply being released.
struct Reply {
    turn: u64,
    /// Stream position at which the reply's audio clock starts.
    start: u64,
    /// Reply audio samples released so far.
    released: u64,
    text: String,
    /// Received, not yet released; `offset` samples of the front audio chunk are already out.
    queue: VecDeque<ResponseChunk>,
    offset: usize,
    /// Free pacing: stream position at which the first audio went out (playback plays from about then).
    audible_from: Option<u64>,
    /// The model has finished this reply.
    done: bool,
    error: Option<String>,
    signal: Arc<BargeInSignal>,
}

/// The assistant stage (see the module documentation).
pub struct S2sStage {
    name: Arc<str>,
    settings: S2sSettings,
    vad: Box<dyn Stage>,
    wake: Option<Box<dyn Stage>>,
    turns: TurnDetector,
    model: ResponderThread,
    out_rate: u32,
    next_turn: u64,
    reply: Option<Reply>,
    child_events: Vec<Event>,
}

impl S2sStage {
    /// A stage around detectors and a model already built. `vad` must emit `speech_start` / `speech_end`, `wake`
    /// `detection` events, both at 16 kHz.
    pub fn new(
        settings: S2sSettings,
        vad: Box<dyn Stage>,
        wake: Option<Box<dyn Stage>>,
        responder: Box<dyn Responder>,
    ) -> Result<Self> {
        for st in std::iter::once(&vad).chain(wake.iter()) {
            if st.rate() != TURN_RATE {
                return Err(Error::Other(format!(
                    "stage {}: detector `{}` runs at {} Hz, not {TURN_RATE}",
                    settings.name,
                    st.name(),
                    st.rate()
                )));
            }
        }
        let model = ResponderThread::spawn(responder, REPLY_QUEUE)?;
        let keep = TURN_RATE as u64; // one second of pre-roll for the VAD's late, padded start
        Ok(S2sStage {
            name: Arc::from(settings.name.as_str()),
            turns: TurnDetector::new(keep, settings.max_turn, settings.wake.clone()),
            out_rate: model.output_rate(),
            model,
            vad,
            wake,
            settings,
            next_turn: 0,
            reply: None,
            child_events: Vec::new(),
        })
    }

    /// Feed one piece (which never crosses a multiple of [`STEP`]) to the detectors; at a multiple of [`STEP`],
    /// `now`, release the reply up to it, then react to what the detectors reported since the last one.
    fn piece(&mut self, samples: &[f32], out: &mut Vec<Event>) {
        self.turns.push_audio(samples);
        self.vad.push(samples, &mut self.child_events);
        if let Some(w) = &mut self.wake {
            w.push(samples, &mut self.child_events);
        }
        let now = self.turns.position();
        if now.is_multiple_of(STEP) {
            self.release(now, out);
            self.react(now, out);
        }
    }

    /// Pass the detectors' events on and act on them.
    fn react(&mut self, now: u64, out: &mut Vec<Event>) {
        // Wake-word detections first: a detection and the end of its turn may come in the same piece.
        for ev in &self.child_events {
            if let EventKind::Detection { label, .. } = &ev.kind {
                self.turns.detected(label, ev.sample);
            }
        }
        let events = std::mem::take(&mut self.child_events);
        for ev in &events {
            if &*ev.stage != self.vad.name() {
                continue;
            }
            match &ev.kind {
                EventKind::SpeechStart { .. } => {
                    self.turns.speech_started(ev.sample);
                    if self.settings.barge_in {
                        self.barge_in(now, out);
                    }
                }
                EventKind::SpeechEnd { .. } => {
                    if let Some(audio) = self.turns.speech_ended(ev.sample) {
                        self.start_turn(audio, now, out);
                    }
                }
                _ => {}
            }
        }
        let mut events = events;
        out.append(&mut events);
        self.child_events = events;
    }

    fn start_turn(&mut self, audio: Vec<f32>, now: u64, out: &mut Vec<Event>) {
        if self.reply.is_some() {
            // Without barge-in the user spoke over the reply: that turn is not answered.
            out.push(Event::new(
                &self.name,
                now,
                EventKind::Status {
                    message: "user turn ignored: a reply is still playing".into(),
                },
            ));
            return;
        }
        let turn = self.next_turn;
        let duration = audio.len() as f64 / TURN_RATE as f64;
        if self.model.submit(Turn { id: turn, audio }).is_err() {
            out.push(Event::new(
                &self.name,
                now,
                EventKind::Status {
                    message: "user turn dropped: the model is still busy".into(),
                },
            ));
            return;
        }
        self.next_turn += 1;
        let signal = Arc::new(BargeInSignal::default());
        out.push(Event::new(
            &self.name,
            now,
            EventKind::TurnStart { turn, duration },
        ));
        out.push(Event::new(
            &self.name,
            now,
            EventKind::ResponseStart {
                turn,
                signal: Arc::clone(&signal),
            },
        ));
        self.reply = Some(Reply {
            turn,
            start: now,
            released: 0,
            text: String::new(),
            queue: VecDeque::new(),
            offset: 0,
            audible_from: None,
            done: false,
            error: None,
            signal,
        });
        self.release(now, out);
    }

    fn barge_in(&mut self, now: u64, out: &mut Vec<Event>) {
        let Some(r) = self.reply.take() else { return };
        r.signal.raise();
        self.model.cancel(r.turn);
        // Let a model waiting for room in the queue see the cancellation.
        while self.model.try_next().is_some() {}
        out.push(Event::new(
            &self.name,
            now,
            EventKind::BargeIn {
                turn: r.turn,
                frames: r.released,
            },
        ));
        self.end_reply(r, now, true, out);
    }

    fn end_reply(&self, r: Reply, now: u64, interrupted: bool, out: &mut Vec<Event>) {
        if let Some(e) = &r.error {
            out.push(Event::new(
                &self.name,
                now,
                EventKind::Status {
                    message: format!("model failed on turn {}: {e}", r.turn),
                },
            ));
        }
        out.push(Event::new(
            &self.name,
            now,
            EventKind::ResponseEnd {
                turn: r.turn,
                frames: r.released,
                rate: self.out_rate,
                text: r.text,
                interrupted,
            },
        ));
    }

    /// Release what the reply may have out by stream position `now` (everything, at the end of the stream).
    fn release(&mut self, now: u64, out: &mut Vec<Event>) {
        self.release_until(now, false, out);
    }

    fn release_until(&mut self, now: u64, all: bool, out: &mut Vec<Event>) {
        let paced = self.settings.stream_paced;
        let Some(mut r) = self.reply.take() else {
            return;
        };
        let target = if paced && !all {
            now.saturating_sub(r.start) * self.out_rate as u64 / TURN_RATE as u64
        } else {
            u64::MAX
        };
        loop {
            while let Some(front) = r.queue.front() {
                match front {
                    ResponseChunk::Text { piece, .. } => {
                        r.text.push_str(piece);
                        out.push(Event::new(
                            &self.name,
                            now,
                            EventKind::Text {
                                text: piece.clone(),
                            },
                        ));
                        r.queue.pop_front();
                    }
                    ResponseChunk::Audio(a) => {
                        let room = target.saturating_sub(r.released);
                        let take = ((a.len() - r.offset) as u64).min(room) as usize;
                        if take > 0 {
                            r.audible_from.get_or_insert(now);
                            let samples: Arc<[f32]> = Arc::from(&a[r.offset..r.offset + take]);
                            out.push(Event::new(
                                &self.name,
                                now,
                                EventKind::Audio {
                                    rate: self.out_rate,
                                    samples,
                                    frames: take,
                                },
                            ));
                            r.released += take as u64;
                            r.offset += take;
                        }
                        if r.offset == a.len() {
                            r.queue.pop_front();
                            r.offset = 0;
                        } else {
                            break;
                        }
                    }
                }
            }
            if r.done && r.queue.is_empty() {
                // Free pacing releases audio ahead of playback: the reply lasts until it has been played.
                let played_at = r.audible_from.unwrap_or(now)
                    + r.released * TURN_RATE as u64 / self.out_rate as u64;
                if paced || all || now >= played_at {
                    self.end_reply(r, now, false, out);
                    return;
                }
                break;
            }
            if !r.queue.is_empty() {
                break; // what may be out is out
            }
            let msg = if paced || all {
                self.model.next()
            } else {
                self.model.try_next()
            };
            match msg {
                None if paced || all => {
                    r.done = true;
                    r.error
                        .get_or_insert_with(|| "the model thread ended".into());
                }
                None => break,
                Some(ReplyMessage::Chunk { turn, chunk }) if turn == r.turn => {
                    r.queue.push_back(chunk)
                }
                Some(ReplyMessage::Done { turn, error }) if turn == r.turn => {
                    r.done = true;
                    r.error = error;
                }
                Some(_) => {} // the rest of a reply that barge-in stopped
            }
        }
        self.reply = Some(r);
    }
}

impl Stage for S2sStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn rate(&self) -> u32 {
        TURN_RATE
    }

    fn push(&mut self, mut samples: &[f32], out: &mut Vec<Event>) {
        while !samples.is_empty() {
            let pos = self.turns.position();
            let to_boundary = (STEP - pos % STEP) as usize;
            let n = to_boundary.min(samples.len());
            let (piece, rest) = samples.split_at(n);
            self.piece(piece, out);
            samples = rest;
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        let now = self.turns.position();
        self.vad.finish(&mut self.child_events);
        if let Some(w) = &mut self.wake {
            w.finish(&mut self.child_events);
        }
        self.react(now, out);
        // The stream has ended: a file run lets the last reply complete, a live one stops it.
        if self.settings.stream_paced {
            self.release_until(now, true, out);
        } else if let Some(r) = self.reply.take() {
            self.model.cancel(r.turn);
            self.end_reply(r, now, true, out);
        }
    }

    fn reset(&mut self) {
        if let Some(r) = self.reply.take() {
            r.signal.raise();
            self.model.cancel(r.turn);
        }
        while self.model.try_next().is_some() {}
        self.model.reset();
        self.vad.reset();
        if let Some(w) = &mut self.wake {
            w.reset();
        }
        self.child_events.clear();
        self.turns.reset();
    }
}
