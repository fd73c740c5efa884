//! The `onnx` stage: a stateful ONNX model run through ONNX Runtime chunk by chunk. With `preset = "vad"` it runs
//! Silero VAD and emits `speech_start` / `speech_end`; otherwise it emits the model's output as `scores` per chunk.

use crate::config::{ConfigFile, Key, Length};
use crate::dsp::beats::{BeatEvents, BeatsKeys, BeatsSettings};
use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::onnx::stateful::{StateSpec, StatefulModel, StatefulSpec};
use crate::onnx::vad::{VadEvent, VadParams, VadSegmenter};
use crate::stage::Stage;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Built-in call conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnnxPreset {
    /// Silero VAD (v5/v6 ONNX export): 512 (16 kHz) or 256 (8 kHz) new samples plus 64/32 of context, state
    /// `state` → `stateN` [2, 1, 128], `sr` int64, speech probability `output`; emits speech segments.
    Vad,
    /// A causal per-sample beat detector such as `models/ecg_beats.onnx` (input `ecg` [1, 1, context + chunk],
    /// output `beat` of the same length, no state): emits `beat` events with RR interval and heart rate, and
    /// `alarm` events for brady-/tachycardia. `context` must be the model's receptive field − 1 (default 1022,
    /// the bundled model's) so chunked output equals the whole-signal output.
    Beats,
}

/// A state tensor in the config: `{ input = "state", output = "stateN", shape = [2, 1, 128] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateTensorConfig {
    pub input: String,
    pub output: String,
    pub shape: Vec<usize>,
}

/// `kind = "onnx"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OnnxStageConfig {
    pub name: String,
    /// The ONNX file (relative to the config file).
    pub model: PathBuf,
    /// A built-in convention that fills in the call keys below and adds its own behaviour.
    pub preset: Option<OnnxPreset>,
    /// Rate the model runs at (vad: 16000 or 8000, default 16000).
    pub rate: Option<u32>,
    /// New samples per call.
    pub chunk: Option<usize>,
    /// Samples of the previous call prepended to each call (default 0).
    pub context: Option<usize>,
    /// Signal input name; the input is fed as `[1, context + chunk]` f32.
    pub input: Option<String>,
    /// Output read after each call.
    pub output: Option<String>,
    /// State tensors carried from one call to the next (f32, zero at start).
    pub state: Option<Vec<StateTensorConfig>>,
    /// Constant int64 scalar inputs, e.g. `{ sr = 16000 }`.
    pub int_inputs: Option<BTreeMap<String, i64>>,
    /// Labels of the output values in `scores` events (default `out0`, `out1` …; vad: `speech`).
    pub labels: Option<Vec<String>>,
    /// Emit a `scores` event per call (default: true, vad: false).
    pub emit_scores: Option<bool>,
    /// vad: speech starts when the probability reaches this (default 0.5).
    pub threshold: Option<f32>,
    /// vad: silence is counted while the probability is below this (default threshold − 0.15).
    pub neg_threshold: Option<f32>,
    /// vad: segments not longer than this are dropped (default 250 ms).
    pub min_speech: Option<Length>,
    /// vad: silence that ends a segment (default 100 ms; at least twice `speech-pad`).
    pub min_silence: Option<Length>,
    /// vad: padding added on both sides of a segment (default 30 ms).
    pub speech_pad: Option<Length>,
    /// beats: the model reports a beat this long after the R peak (default 72 samples, the bundled model's).
    pub delay: Option<Length>,
    /// beats: no two beats closer than this (default 200 ms).
    pub refractory: Option<Length>,
    /// beats: the refractory period grows to this share of the mean of the last 8 RR intervals (default 0.3; 0
    /// keeps it fixed) ...
    pub refractory_rr: Option<f64>,
    /// beats: ... up to this (default 300 ms, or `refractory` if that is longer).
    pub refractory_max: Option<Length>,
    /// beats: raise a `bradycardia` alarm when the mean rate over `alarm-beats` intervals falls below this.
    pub brady_bpm: Option<f64>,
    /// beats: raise a `tachycardia` alarm when the mean rate over `alarm-beats` intervals rises above this.
    pub tachy_bpm: Option<f64>,
    /// beats: number of RR intervals averaged for the alarms (default 8).
    pub alarm_beats: Option<usize>,
}

/// The resolved settings of an `onnx` stage.
#[derive(Debug, Clone)]
struct Resolved {
    rate: u32,
    spec: StatefulSpec,
    labels: Vec<String>,
    emit_scores: bool,
    vad: Option<VadParams>,
    beats: Option<BeatsSettings>,
}

fn resolve(
    cfg: &OnnxStageConfig,
    at: &dyn Fn(&str) -> Vec<Key>,
    cf: &ConfigFile,
) -> Result<Resolved> {
    let vad = cfg.preset == Some(OnnxPreset::Vad);
    let beats = cfg.preset == Some(OnnxPreset::Beats);
    let rate = match (cfg.rate.or(if beats { Some(360) } else { None }), vad) {
        (Some(r), true) if r != 16_000 && r != 8_000 => {
            return Err(cf.error_at(&at("rate"), "the vad preset runs at 16000 or 8000 Hz"))
        }
        (Some(0), _) => return Err(cf.error_at(&at("rate"), "rate must be positive")),
        (Some(r), _) => r,
        (None, true) => 16_000,
        (None, false) => {
            return Err(cf.error_at(&at("name"), "`rate` is required without a preset"));
        }
    };
    let required = |v: &Option<String>, key: &str, default: &str| -> Result<String> {
        match (v, vad || beats) {
            (Some(s), _) => Ok(s.clone()),
            (None, true) => Ok(default.to_string()),
            (None, false) => {
                Err(cf.error_at(&at("name"), format!("`{key}` is required without a preset")))
            }
        }
    };
    let (input_default, output_default) = if beats {
        ("ecg", "beat")
    } else {
        ("input", "output")
    };
    let input = required(&cfg.input, "input", input_default)?;
    let output = required(&cfg.output, "output", output_default)?;
    let chunk = match (cfg.chunk.or(if beats { Some(36) } else { None }), vad) {
        (Some(0), _) => return Err(cf.error_at(&at("chunk"), "chunk must be positive")),
        (Some(c), _) => c,
        (None, true) => {
            if rate == 8_000 {
                256
            } else {
                512
            }
        }
        (None, false) => {
            return Err(cf.error_at(&at("name"), "`chunk` is required without a preset"))
        }
    };
    let context = cfg.context.unwrap_or(if vad {
        chunk / 8
    } else if beats {
        1022
    } else {
        0
    });
    let state = match (&cfg.state, vad) {
        (Some(s), _) => s
            .iter()
            .map(|s| StateSpec {
                input: s.input.clone(),
                output: s.output.clone(),
                shape: s.shape.clone(),
            })
            .collect(),
        (None, true) => vec![StateSpec {
            input: "state".into(),
            output: "stateN".into(),
            shape: vec![2, 1, 128],
        }],
        (None, false) => Vec::new(),
    };
    for (i, s) in state.iter().enumerate() {
        if s.shape.is_empty() || s.shape.contains(&0) {
            return Err(cf.error_at(
                &[at("state"), vec![Key::Index(i), Key::from("shape")]].concat(),
                "state shape must be non-empty with positive dimensions",
            ));
        }
    }
    let int_inputs: Vec<(String, i64)> = match (&cfg.int_inputs, vad) {
        (Some(m), _) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        (None, true) => vec![("sr".into(), rate as i64)],
        (None, false) => Vec::new(),
    };
    let beats_only = [
        ("delay", cfg.delay.is_some()),
        ("refractory", cfg.refractory.is_some()),
        ("refractory-rr", cfg.refractory_rr.is_some()),
        ("refractory-max", cfg.refractory_max.is_some()),
        ("brady-bpm", cfg.brady_bpm.is_some()),
        ("tachy-bpm", cfg.tachy_bpm.is_some()),
        ("alarm-beats", cfg.alarm_beats.is_some()),
    ];
    if !beats {
        if let Some((key, _)) = beats_only.iter().find(|(_, set)| *set) {
            return Err(cf.error_at(&at(key), format!("`{key}` needs `preset = \"beats\"`")));
        }
    }
    let beats_settings = if beats {
        let keys = BeatsKeys {
            threshold: cfg.threshold,
            delay: cfg.delay,
            refractory: cfg.refractory,
            refractory_rr: cfg.refractory_rr,
            refractory_max: cfg.refractory_max,
            brady_bpm: cfg.brady_bpm,
            tachy_bpm: cfg.tachy_bpm,
            alarm_beats: cfg.alarm_beats,
        };
        Some(
            keys.resolve(rate)
                .map_err(|(key, msg)| cf.error_at(&at(key), msg))?,
        )
    } else {
        None
    };
    let vad_only = [
        ("threshold", cfg.threshold.is_some() && !beats),
        ("neg-threshold", cfg.neg_threshold.is_some()),
        ("min-speech", cfg.min_speech.is_some()),
        ("min-silence", cfg.min_silence.is_some()),
        ("speech-pad", cfg.speech_pad.is_some()),
    ];
    let vad_params = if vad {
        let threshold = cfg.threshold.unwrap_or(0.5);
        let p = VadParams {
            threshold,
            neg_threshold: cfg
                .neg_threshold
                .unwrap_or(VadParams::default_neg_threshold(threshold)),
            min_speech: cfg
                .min_speech
                .unwrap_or(Length::Seconds(0.25))
                .samples(rate),
            min_silence: cfg
                .min_silence
                .unwrap_or(Length::Seconds(0.1))
                .samples(rate),
            speech_pad: cfg
                .speech_pad
                .unwrap_or(Length::Seconds(0.03))
                .samples(rate),
            chunk: chunk as u64,
        };
        if let Err(msg) = p.check() {
            let key = if msg.starts_with("threshold") {
                "threshold"
            } else if msg.starts_with("neg-threshold") {
                "neg-threshold"
            } else {
                "min-silence"
            };
            return Err(cf.error_at(&at(key), msg));
        }
        Some(p)
    } else {
        if let Some((key, _)) = vad_only.iter().find(|(_, set)| *set) {
            return Err(cf.error_at(&at(key), format!("`{key}` needs `preset = \"vad\"`")));
        }
        None
    };
    let labels = cfg.labels.clone().unwrap_or_else(|| {
        if vad {
            vec!["speech".into()]
        } else {
            Vec::new()
        }
    });
    Ok(Resolved {
        rate,
        spec: StatefulSpec {
            input,
            output,
            chunk,
            context,
            state,
            int_inputs,
        },
        labels,
        emit_scores: cfg.emit_scores.unwrap_or(!vad && !beats),
        vad: vad_params,
        beats: beats_settings,
    })
}

fn key_path(index: usize) -> impl Fn(&str) -> Vec<Key> {
    move |k: &str| vec![Key::from("stage"), Key::Index(index), Key::from(k)]
}

/// Semantic check of the `index`-th stage (no model loading, so it runs without ONNX Runtime).
pub fn check(cfg: &OnnxStageConfig, cf: &ConfigFile, index: usize) -> Result<()> {
    let at = key_path(index);
    resolve(cfg, &at, cf)?;
    let path = cf.resolve(&cfg.model);
    if !path.is_file() {
        return Err(cf.error_at(
            &at("model"),
            format!("model file {} does not exist", path.display()),
        ));
    }
    Ok(())
}

/// Build the stage: loads ONNX Runtime (clear error when it is not installed) and the model.
pub fn build(cfg: &OnnxStageConfig, cf: &ConfigFile) -> Result<Box<dyn Stage>> {
    let index = cf
        .config
        .stages
        .iter()
        .position(|s| s.name() == cfg.name)
        .unwrap_or(0);
    let at = key_path(index);
    let r = resolve(cfg, &at, cf)?;
    let model = StatefulModel::load(&cf.resolve(&cfg.model), r.spec.clone())?;
    let mut stage = OnnxStage::new(&cfg.name, r.rate, model, r.labels, r.emit_scores, r.vad);
    if let Some(b) = r.beats {
        stage = stage.with_beats(b);
    }
    Ok(Box::new(stage))
}

/// A stateful ONNX model as a [`Stage`].
pub struct OnnxStage {
    name: Arc<str>,
    rate: u32,
    model: StatefulModel,
    labels: Arc<[String]>,
    emit_scores: bool,
    vad: Option<VadSegmenter>,
    pending: Vec<f32>,
    /// Samples pushed so far.
    pushed: u64,
    /// Start sample of the next chunk.
    next: u64,
    output: Vec<f32>,
    vad_events: Vec<VadEvent>,
    beats: Option<BeatEvents>,
    /// Set after a failed call so a broken model reports once instead of every chunk.
    failed: bool,
}

impl OnnxStage {
    /// A stage around a loaded model; `vad` turns the first output value into speech segments.
    pub fn new(
        name: &str,
        rate: u32,
        model: StatefulModel,
        labels: Vec<String>,
        emit_scores: bool,
        vad: Option<VadParams>,
    ) -> Self {
        OnnxStage {
            name: Arc::from(name),
            rate,
            model,
            labels: labels.into(),
            emit_scores,
            vad: vad.map(VadSegmenter::new),
            pending: Vec::new(),
            pushed: 0,
            next: 0,
            output: Vec::new(),
            vad_events: Vec::new(),
            beats: None,
            failed: false,
        }
    }

    /// Turn the stage into a beat detector: the last `chunk` values of each output (one per new sample) are
    /// peak-picked into `beat` events with heart rate and alarms.
    pub fn with_beats(mut self, b: BeatsSettings) -> Self {
        self.beats = Some(BeatEvents::new(b, self.rate));
        self
    }

    fn run_chunk(&mut self, chunk_start: usize, available: u64, out: &mut Vec<Event>) {
        let n = self.model.spec().chunk;
        let result = self.model.run(
            &self.pending[chunk_start..chunk_start + n],
            &mut self.output,
        );
        let at = self.next;
        self.next += n as u64;
        if let Err(e) = result {
            if !self.failed {
                self.failed = true;
                out.push(Event::new(
                    &self.name,
                    at,
                    EventKind::Status {
                        message: format!("model call failed: {e}"),
                    },
                ));
            }
            return;
        }
        if self.emit_scores {
            let labels: Arc<[String]> = if self.labels.len() == self.output.len() {
                Arc::clone(&self.labels)
            } else {
                (0..self.output.len()).map(|i| format!("out{i}")).collect()
            };
            out.push(Event::new(
                &self.name,
                at,
                EventKind::Scores {
                    labels,
                    scores: self.output.clone(),
                },
            ));
        }
        if let Some(beats) = &mut self.beats {
            // one output per input sample: the new chunk's values are the last `n`, of which `available` are real
            if self.output.len() >= n {
                let tail = &self.output[self.output.len() - n..];
                beats.push(&self.name, &tail[..available as usize], out);
            }
        }
        if let Some(seg) = &mut self.vad {
            let prob = self.output.first().copied().unwrap_or(0.0);
            self.vad_events.clear();
            seg.push(prob, available, &mut self.vad_events);
            Self::emit_vad(&self.name, self.rate, &self.vad_events, out);
        }
    }

    fn emit_vad(name: &Arc<str>, rate: u32, events: &[VadEvent], out: &mut Vec<Event>) {
        for e in events {
            out.push(match *e {
                VadEvent::Start {
                    sample,
                    probability,
                } => Event::new(name, sample, EventKind::SpeechStart { probability }),
                VadEvent::End { start, sample } => Event::new(
                    name,
                    sample,
                    EventKind::SpeechEnd {
                        duration: (sample - start) as f64 / rate as f64,
                    },
                ),
            });
        }
    }
}

impl Stage for OnnxStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn rate(&self) -> u32 {
        self.rate
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<Event>) {
        self.pending.extend_from_slice(samples);
        self.pushed += samples.len() as u64;
        let n = self.model.spec().chunk;
        let mut offset = 0;
        while self.pending.len() - offset >= n {
            self.run_chunk(offset, n as u64, out);
            offset += n;
        }
        self.pending.drain(..offset);
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        let n = self.model.spec().chunk;
        if !self.pending.is_empty() {
            let available = self.pending.len() as u64;
            self.pending.resize(n, 0.0);
            self.run_chunk(0, available, out);
            self.pending.clear();
        }
        if let Some(seg) = &mut self.vad {
            self.vad_events.clear();
            seg.finish(self.pushed, &mut self.vad_events);
            Self::emit_vad(&self.name, self.rate, &self.vad_events, out);
        }
        if let Some(beats) = &mut self.beats {
            beats.finish(&self.name, out);
        }
    }

    fn reset(&mut self) {
        self.model.reset();
        if let Some(seg) = &mut self.vad {
            seg.reset();
        }
        if let Some(beats) = &mut self.beats {
            beats.reset();
        }
        self.pending.clear();
        self.pushed = 0;
        self.next = 0;
        self.failed = false;
    }
}
