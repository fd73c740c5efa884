//! The `cnn` stage: a 1-D CNN from ONNX run by the streaming engine on overlapping windows of the signal (raw
//! samples or the streaming log-mel front end). Emits `scores` per hop (vector outputs), `detection` with
//! threshold, hysteresis and refractory time, and `series` for fully convolutional per-frame outputs. With
//! `events = "beats"` a per-sample probability output (e.g. `models/ecg_beats.onnx`) becomes `beat` events with RR
//! interval and heart rate plus brady-/tachycardia `alarm` events (src/dsp/beats.rs, shared with the `onnx` stage).

use super::{import, int8, Engine, Graph, Mode, Plan, WeightFormat};
use crate::config::{ConfigFile, Key, Length};
use crate::dsp::beats::{BeatEvents, BeatsKeys, BeatsSettings};
use crate::dsp::logmel::{LogMel, LogMelConfig};
use crate::error::Result;
use crate::event::{Event, EventKind};
use crate::stage::Stage;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontEnd {
    /// Samples, one channel.
    #[default]
    Raw,
    /// Log-mel frames (`n-mels` channels), as defined by training/common/logmel.py.
    LogMel,
}

/// Post-processing of the model output into events (`events = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CnnEvents {
    /// A fully convolutional model with one probability per input sample (raw front end, all strides 1, output
    /// `[1, 1, T]` as long as its input): peak picking into `beat` events, heart rate and alarms. Uses
    /// `threshold` (default 0.5), `refractory` (default 200 ms), `refractory-rr` (0.3), `refractory-max` (300 ms),
    /// `delay`, `brady-bpm`, `tachy-bpm`, `alarm-beats`.
    Beats,
}

/// `wake-word = { label = "hey_sigflow", listen = "10s" }`: the other detected labels (the commands) are reported
/// only while the stage listens, that is within `listen` of the latest wake word or reported command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CnnWakeWord {
    /// The label that opens listening; its own detections are always reported.
    pub label: String,
    /// How long the stage listens after the wake word or a reported command (default 10 s).
    pub listen: Option<Length>,
}

/// `kind = "cnn"`.
///
/// Beat detector example (`models/ecg_beats.onnx`): `rate = 360`, `window = 1080` (≥ the model's 1023-sample
/// receptive field + hop − 1, so every hop's outputs see their whole receptive field), `hop = 36`,
/// `events = "beats"`, `threshold = 0.5`, `delay = 72`, `refractory = "200ms"`, `refractory-rr = 0.3`,
/// `refractory-max = "300ms"`, `brady-bpm = 40`, `tachy-bpm = 180`, `alarm-beats = 8`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CnnStageConfig {
    pub name: String,
    /// The ONNX file (relative to the config file): one `[1, channels, time]` input.
    pub model: PathBuf,
    /// Rate the stage runs at (default 16000).
    pub rate: Option<u32>,
    /// Window the model sees, in samples or as a duration (at the stage rate).
    pub window: Length,
    /// Hop between windows (a multiple of the model's total stride, times `mel-hop` for log-mel).
    pub hop: Length,
    /// `exact` (default): equal to running every window whole; `approximate`: no edge recomputation; `full`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// `f32` (default) or `int8`: weights quantised per output channel at load time (activations stay f32).
    #[serde(default)]
    pub weights: WeightFormat,
    /// `raw` (default) or `log-mel`.
    #[serde(default)]
    pub front_end: FrontEnd,
    /// log-mel: bands (default 40).
    pub n_mels: Option<usize>,
    /// log-mel: FFT length (default 25 ms).
    pub n_fft: Option<Length>,
    /// log-mel: hop between frames (default 10 ms).
    pub mel_hop: Option<Length>,
    /// log-mel: lowest filter edge in Hz (default 0).
    pub f_min: Option<f64>,
    /// log-mel: highest filter edge in Hz (default rate / 2).
    pub f_max: Option<f64>,
    /// Names of the output values (default `out0`, `out1` …).
    pub labels: Option<Vec<String>>,
    /// Labels that raise `detection` events (default: all; needs `threshold`).
    pub detect: Option<Vec<String>>,
    /// Detection threshold on a score; no detections when absent. With `events = "beats"`: the probability a beat
    /// must reach (default 0.5).
    pub threshold: Option<f32>,
    /// Thresholds of single labels, overriding `threshold` for them (which stays the one of the other labels), e.g.
    /// `thresholds = { hey_sigflow = 0.9 }` for a label that ordinary talk sets off more often than the rest.
    pub thresholds: Option<BTreeMap<String, f32>>,
    /// Detect on each label's mean score over this span of the latest hops (a duration or samples, at least one
    /// hop; default: the latest hop alone). A real keyword holds its score while it stays in the window, where a
    /// chance match in ordinary talk often lasts a few hops; the mean waits for it.
    pub smooth: Option<Length>,
    /// Report the other detected labels only after this wake word (see [`CnnWakeWord`]). A command said on its own
    /// is then ignored, and so is a chance match in ordinary talk unless the wake word was heard just before.
    pub wake_word: Option<CnnWakeWord>,
    /// A detected label re-arms when its score falls below `threshold - hysteresis` (default 0.1).
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f32,
    /// Minimum time between two detections of the same label (default 0.5 s; beats: between two beats, default
    /// 200 ms).
    pub refractory: Option<Length>,
    /// Emit `scores` / `series` events every hop (default true; false with `events = "beats"`).
    pub emit_scores: Option<bool>,
    /// Turn the output into events: `"beats"` (see [`CnnEvents::Beats`]).
    pub events: Option<CnnEvents>,
    /// beats: the model reports a beat this long after the R peak (default 72 samples, `models/ecg_beats.onnx`'s).
    pub delay: Option<Length>,
    /// beats: the refractory period grows to this share of the mean of the last 8 RR intervals (default 0.3; 0
    /// keeps it fixed at `refractory`) ...
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

fn default_mode() -> Mode {
    Mode::Exact
}
fn default_hysteresis() -> f32 {
    0.1
}
fn default_refractory() -> Length {
    Length::Seconds(0.5)
}
fn default_listen() -> Length {
    Length::Seconds(10.0)
}

/// Everything `check` and `build` derive from the config.
struct Resolved {
    rate: u32,
    graph: Arc<Graph>,
    plan: Plan,
    logmel: Option<LogMelConfig>,
    window_samples: u64,
    hop_samples: u64,
    /// Samples per model input frame.
    frame_samples: u64,
    labels: Vec<String>,
    beats: Option<BeatsSettings>,
    /// Hops the detection score is averaged over (1: none).
    smooth_hops: usize,
    /// The wake word's label index and how long the stage listens after it (samples).
    wake: Option<(usize, u64)>,
}

fn key_path(index: usize) -> impl Fn(&str) -> Vec<Key> {
    move |k: &str| vec![Key::from("stage"), Key::Index(index), Key::from(k)]
}

fn resolve(cfg: &CnnStageConfig, cf: &ConfigFile, index: usize) -> Result<Resolved> {
    let at = key_path(index);
    let rate = cfg.rate.unwrap_or(16_000);
    if rate == 0 {
        return Err(cf.error_at(&at("rate"), "must be > 0"));
    }
    let path = cf.resolve(&cfg.model);
    if !path.is_file() {
        return Err(cf.error_at(
            &at("model"),
            format!("model file {} does not exist", path.display()),
        ));
    }
    let mut graph = import::load(&path).map_err(|e| cf.error_at(&at("model"), e))?;
    int8::apply(&mut graph, cfg.weights);
    let graph = Arc::new(graph);
    let window_samples = cfg.window.samples(rate);
    let hop_samples = cfg.hop.samples(rate);
    if hop_samples == 0 {
        return Err(cf.error_at(&at("hop"), "the hop is shorter than one sample"));
    }
    let (logmel, frames_w, frame_samples, hop_frames) = match cfg.front_end {
        FrontEnd::Raw => {
            for (k, present) in [
                ("n-mels", cfg.n_mels.is_some()),
                ("n-fft", cfg.n_fft.is_some()),
                ("mel-hop", cfg.mel_hop.is_some()),
                ("f-min", cfg.f_min.is_some()),
                ("f-max", cfg.f_max.is_some()),
            ] {
                if present {
                    return Err(cf.error_at(&at(k), "only used with front-end = \"log-mel\""));
                }
            }
            if graph.in_channels != 1 {
                return Err(cf.error_at(
                    &at("model"),
                    format!(
                        "the model takes {} input channels; the raw front end gives 1",
                        graph.in_channels
                    ),
                ));
            }
            (None, window_samples as usize, 1u64, hop_samples as usize)
        }
        FrontEnd::LogMel => {
            let lm = LogMelConfig {
                rate,
                n_fft: cfg.n_fft.unwrap_or(Length::Seconds(0.025)).samples(rate) as usize,
                hop: cfg.mel_hop.unwrap_or(Length::Seconds(0.010)).samples(rate) as usize,
                n_mels: cfg.n_mels.unwrap_or(40),
                f_min: cfg.f_min.unwrap_or(0.0),
                f_max: cfg.f_max,
            };
            lm.validate()
                .map_err(|e| cf.error_at(&at("front-end"), e))?;
            if graph.in_channels != lm.n_mels {
                return Err(cf.error_at(
                    &at(if cfg.n_mels.is_some() {
                        "n-mels"
                    } else {
                        "model"
                    }),
                    format!(
                        "the model takes {} input channels but the front end gives {} mel bands",
                        graph.in_channels, lm.n_mels
                    ),
                ));
            }
            if !hop_samples.is_multiple_of(lm.hop as u64) {
                return Err(cf.error_at(
                    &at("hop"),
                    format!(
                        "{hop_samples} samples is not a multiple of the mel hop ({} samples)",
                        lm.hop
                    ),
                ));
            }
            let frames = lm.frames(window_samples as usize);
            (
                Some(lm),
                frames,
                lm.hop as u64,
                (hop_samples / lm.hop as u64) as usize,
            )
        }
    };
    if frames_w == 0 {
        return Err(cf.error_at(&at("window"), "the window is shorter than one model frame"));
    }
    let plan = Plan::new(&graph, frames_w, hop_frames).map_err(|e| {
        let key = if e.contains("hop") && !e.contains("too short") {
            "hop"
        } else {
            "window"
        };
        let unit = if logmel.is_some() {
            format!(" (in mel frames of {frame_samples} samples)")
        } else {
            String::new()
        };
        cf.error_at(&at(key), format!("{e}{unit}"))
    })?;
    let probe = Engine::new(graph.clone(), plan.clone(), cfg.mode);
    let n_out: usize = probe.output_dims().iter().product();
    let out_node = plan.nodes[graph.output];
    let per_frame = if out_node.is_vector() {
        n_out
    } else {
        n_out / out_node.len.max(1)
    };
    let labels = match &cfg.labels {
        Some(l) if l.len() != per_frame => {
            return Err(cf.error_at(
                &at("labels"),
                format!("{} labels for {per_frame} model outputs", l.len()),
            ))
        }
        Some(l) => l.clone(),
        None => (0..per_frame).map(|i| format!("out{i}")).collect(),
    };
    if let Some(d) = &cfg.detect {
        for l in d {
            if !labels.contains(l) {
                return Err(cf.error_at(
                    &at("detect"),
                    format!("`{l}` is not one of the labels ({})", labels.join(", ")),
                ));
            }
        }
        if cfg.threshold.is_none() {
            return Err(cf.error_at(&at("detect"), "needs a `threshold`"));
        }
    }
    let beats_mode = cfg.events == Some(CnnEvents::Beats);
    for (k, present) in [
        ("delay", cfg.delay.is_some()),
        ("refractory-rr", cfg.refractory_rr.is_some()),
        ("refractory-max", cfg.refractory_max.is_some()),
        ("brady-bpm", cfg.brady_bpm.is_some()),
        ("tachy-bpm", cfg.tachy_bpm.is_some()),
        ("alarm-beats", cfg.alarm_beats.is_some()),
    ] {
        if present && !beats_mode {
            return Err(cf.error_at(&at(k), format!("`{k}` needs `events = \"beats\"`")));
        }
    }
    let beats = if beats_mode {
        if cfg.detect.is_some() {
            return Err(cf.error_at(&at("detect"), "not used with `events = \"beats\"`"));
        }
        if logmel.is_some() || out_node.is_vector() || per_frame != 1 || out_node.stride > 1 {
            return Err(cf.error_at(
                &at("events"),
                "beats need a raw-front-end model with one output value per input sample ([1, 1, T], strides 1)",
            ));
        }
        if out_node.len != frames_w {
            return Err(cf.error_at(
                &at("events"),
                format!(
                    "beats need an output as long as the input (causal padding): the model gives {} values for a \
                     {frames_w}-sample window",
                    out_node.len
                ),
            ));
        }
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
                .map_err(|(k, msg)| cf.error_at(&at(k), msg))?,
        )
    } else {
        None
    };
    if let Some(t) = cfg.threshold.filter(|_| !beats_mode) {
        if !t.is_finite() {
            return Err(cf.error_at(&at("threshold"), "must be a finite number"));
        }
        if !out_node.is_vector() {
            return Err(cf.error_at(
                &at("threshold"),
                "detections need a model with one score vector per window",
            ));
        }
    }
    // Keys that shape detections: not with beats, and only beside a `threshold`.
    let detection_key = |key: &str, why: &str| -> Result<()> {
        if beats_mode {
            return Err(cf.error_at(&at(key), "not used with `events = \"beats\"`"));
        }
        if cfg.threshold.is_none() {
            return Err(cf.error_at(&at(key), format!("needs a `threshold` ({why})")));
        }
        Ok(())
    };
    if let Some(per_label) = &cfg.thresholds {
        detection_key("thresholds", "the one of the labels not named here")?;
        for (l, t) in per_label {
            if !labels.contains(l) {
                return Err(cf.error_at(
                    &at("thresholds"),
                    format!("`{l}` is not one of the labels ({})", labels.join(", ")),
                ));
            }
            if cfg.detect.as_ref().is_some_and(|d| !d.contains(l)) {
                return Err(cf.error_at(
                    &at("thresholds"),
                    format!("`{l}` is not in `detect`, so it raises no detections"),
                ));
            }
            if !t.is_finite() {
                return Err(
                    cf.error_at(&at("thresholds"), format!("`{l}`: must be a finite number"))
                );
            }
        }
    }
    if !(cfg.hysteresis.is_finite() && cfg.hysteresis >= 0.0) {
        return Err(cf.error_at(&at("hysteresis"), "must be ≥ 0"));
    }
    let smooth_hops = match cfg.smooth {
        None => 1,
        Some(len) => {
            detection_key("smooth", "it smooths detections")?;
            let n = len.samples(rate) as f64 / hop_samples as f64;
            if !(1.0..=10_000.0).contains(&n) {
                return Err(cf.error_at(
                    &at("smooth"),
                    format!("must span 1 to 10000 hops of {hop_samples} samples (it spans {n:.2})"),
                ));
            }
            n.round() as usize
        }
    };
    let wake = match &cfg.wake_word {
        None => None,
        Some(w) => {
            let at_w = |k: &str| {
                vec![
                    Key::from("stage"),
                    Key::Index(index),
                    Key::from("wake-word"),
                    Key::from(k),
                ]
            };
            detection_key("wake-word", "it gates detections")?;
            let Some(i) = labels.iter().position(|l| l == &w.label) else {
                return Err(cf.error_at(
                    &at_w("label"),
                    format!(
                        "`{}` is not one of the labels ({})",
                        w.label,
                        labels.join(", ")
                    ),
                ));
            };
            if cfg.detect.as_ref().is_some_and(|d| !d.contains(&w.label)) {
                return Err(cf.error_at(
                    &at_w("label"),
                    format!("`{}` is not in `detect`, so it is never heard", w.label),
                ));
            }
            let listen = w.listen.unwrap_or_else(default_listen).samples(rate);
            if listen < hop_samples || listen > 3600 * rate as u64 {
                return Err(cf.error_at(
                    &at_w("listen"),
                    format!("must be one hop ({hop_samples} samples) to 1 hour"),
                ));
            }
            Some((i, listen))
        }
    };
    Ok(Resolved {
        rate,
        graph,
        plan,
        logmel,
        window_samples,
        hop_samples,
        frame_samples,
        labels,
        beats,
        smooth_hops,
        wake,
    })
}

/// Semantic check of the `index`-th stage: the model loads, the front end fits it, the hop is valid.
pub fn check(cfg: &CnnStageConfig, cf: &ConfigFile, index: usize) -> Result<()> {
    resolve(cfg, cf, index).map(|_| ())
}

/// Build the stage.
pub fn build(cfg: &CnnStageConfig, cf: &ConfigFile) -> Result<Box<dyn Stage>> {
    let index = cf
        .config
        .stages
        .iter()
        .position(|s| s.name() == cfg.name)
        .unwrap_or(0);
    let r = resolve(cfg, cf, index)?;
    Ok(Box::new(CnnStage::new(cfg, r)?))
}

/// The running stage.
pub struct CnnStage {
    name: Arc<str>,
    rate: u32,
    engine: Engine,
    front: Option<LogMel>,
    frames: Vec<f32>,
    outs: Vec<Vec<f32>>,
    labels: Arc<[String]>,
    detect: Vec<bool>,
    /// Detection threshold of each label (none: no detections).
    thresholds: Option<Vec<f32>>,
    hysteresis: f32,
    refractory: u64,
    /// Hops averaged for detection, and the latest scores of those hops (ring, `smooth_hops` × labels).
    smooth_hops: usize,
    recent: Vec<f32>,
    /// Windows seen since the start (or reset).
    seen: u64,
    smoothed: Vec<f32>,
    armed: Vec<bool>,
    last_detection: Vec<Option<u64>>,
    /// `wake-word`: the wake word's label, how long the stage listens after it, and until when it listens now.
    wake: Option<(usize, u64)>,
    listening_until: Option<u64>,
    emit_scores: bool,
    beats: Option<BeatEvents>,
    window_samples: u64,
    hop_samples: u64,
    /// Samples per output frame of a time-series output.
    series_period: u64,
    series_frames_per_hop: usize,
}

impl CnnStage {
    fn new(cfg: &CnnStageConfig, r: Resolved) -> Result<Self> {
        let front = match r.logmel {
            Some(c) => Some(LogMel::new(c).map_err(crate::error::Error::Other)?),
            None => None,
        };
        let out = r.plan.nodes[r.graph.output];
        let n = r.labels.len();
        let detect = r
            .labels
            .iter()
            .map(|l| cfg.detect.as_ref().is_none_or(|d| d.contains(l)))
            .collect();
        let thresholds = cfg.threshold.filter(|_| r.beats.is_none()).map(|th| {
            r.labels
                .iter()
                .map(|l| {
                    cfg.thresholds
                        .as_ref()
                        .and_then(|m| m.get(l).copied())
                        .unwrap_or(th)
                })
                .collect()
        });
        Ok(CnnStage {
            name: Arc::from(cfg.name.as_str()),
            rate: r.rate,
            engine: Engine::new(r.graph.clone(), r.plan.clone(), cfg.mode),
            front,
            frames: vec![],
            outs: vec![],
            labels: r.labels.into(),
            detect,
            thresholds,
            hysteresis: cfg.hysteresis,
            refractory: cfg
                .refractory
                .unwrap_or_else(default_refractory)
                .samples(r.rate),
            smooth_hops: r.smooth_hops,
            recent: vec![
                0.0;
                if r.smooth_hops > 1 {
                    r.smooth_hops * n
                } else {
                    0
                }
            ],
            seen: 0,
            smoothed: vec![0.0; n],
            armed: vec![true; n],
            last_detection: vec![None; n],
            wake: r.wake,
            listening_until: None,
            emit_scores: cfg.emit_scores.unwrap_or(r.beats.is_none()),
            beats: r.beats.map(|b| BeatEvents::new(b, r.rate)),
            window_samples: r.window_samples,
            hop_samples: r.hop_samples,
            series_period: out.stride.max(1) as u64 * r.frame_samples,
            series_frames_per_hop: out.hop,
        })
    }

    fn window_output(&mut self, index: u64, y: &[f32], out: &mut Vec<Event>) {
        // Stream time of the window's end, in samples at the stage rate.
        let end = self.window_samples + index * self.hop_samples;
        let dims = self.engine.output_dims();
        let out_node = self.engine.plan().nodes[self.engine.graph().output];
        if !out_node.is_vector() {
            if let Some(beats) = &mut self.beats {
                // One probability per sample: the frames this hop made new (all of them for the first window),
                // which continue the stream sample for sample.
                let t = out_node.len;
                let from = if index == 0 {
                    0
                } else {
                    t.saturating_sub(self.series_frames_per_hop)
                };
                beats.push(&self.name, &y[from..t], out);
            }
            if self.emit_scores {
                // Per-frame output [.., C, T]: emit the frames this hop made new (all of them for the first window).
                let t = out_node.len;
                let c = y.len() / t.max(1);
                let from = if index == 0 {
                    0
                } else {
                    t.saturating_sub(self.series_frames_per_hop)
                };
                let values = (from..t)
                    .map(|j| (0..c).map(|ch| y[ch * t + j]).collect())
                    .collect();
                out.push(Event::new(
                    &self.name,
                    end,
                    EventKind::Series {
                        period: self.series_period,
                        values,
                    },
                ));
            }
            let _ = dims;
            return;
        }
        if self.emit_scores {
            out.push(Event::new(
                &self.name,
                end,
                EventKind::Scores {
                    labels: self.labels.clone(),
                    scores: y.to_vec(),
                },
            ));
        }
        if let Some(thresholds) = &self.thresholds {
            let scores = smoothed_scores(
                y,
                self.smooth_hops,
                &mut self.recent,
                &mut self.seen,
                &mut self.smoothed,
            );
            for (i, &s) in scores.iter().enumerate() {
                if !self.detect[i] {
                    continue;
                }
                let th = thresholds[i];
                if self.armed[i] && s >= th {
                    let ready = self.last_detection[i].is_none_or(|t| end >= t + self.refractory);
                    if ready {
                        // The wake word gates what is reported, not the detection itself: a command heard while
                        // the stage does not listen still takes its refractory time and must re-arm.
                        let report = match self.wake {
                            None => true,
                            Some((w, listen)) => {
                                let open = i == w || self.listening_until.is_some_and(|u| end <= u);
                                if open {
                                    self.listening_until = Some(end + listen);
                                } else {
                                    tracing::debug!(
                                        stage = %self.name,
                                        label = %self.labels[i],
                                        score = s,
                                        "detection ignored: no wake word before it"
                                    );
                                }
                                open
                            }
                        };
                        if report {
                            out.push(Event::new(
                                &self.name,
                                end,
                                EventKind::Detection {
                                    label: self.labels[i].clone(),
                                    score: s,
                                },
                            ));
                        }
                        self.last_detection[i] = Some(end);
                        self.armed[i] = false;
                    }
                } else if !self.armed[i] && s < th - self.hysteresis {
                    self.armed[i] = true;
                }
            }
        }
    }
}

impl Stage for CnnStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn rate(&self) -> u32 {
        self.rate
    }
    fn push(&mut self, samples: &[f32], out: &mut Vec<Event>) {
        let mut outs = std::mem::take(&mut self.outs);
        outs.clear();
        let first = self.engine.windows();
        match &mut self.front {
            Some(lm) => {
                self.frames.clear();
                lm.push(samples, &mut self.frames);
                self.engine.push(&self.frames, &mut outs);
            }
            None => self.engine.push(samples, &mut outs),
        }
        for (k, y) in outs.iter().enumerate() {
            self.window_output(first + k as u64, y, out);
        }
        self.outs = outs;
    }
    fn finish(&mut self, out: &mut Vec<Event>) {
        // Samples after the last full hop are not seen by any window; the beat still pending is final now.
        if let Some(beats) = &mut self.beats {
            beats.finish(&self.name, out);
        }
    }
    fn reset(&mut self) {
        if let Some(beats) = &mut self.beats {
            beats.reset();
        }
        self.engine.reset();
        if let Some(lm) = &mut self.front {
            lm.reset();
        }
        self.armed.iter_mut().for_each(|a| *a = true);
        self.last_detection.iter_mut().for_each(|t| *t = None);
        self.listening_until = None;
        self.seen = 0;
    }
}

/// The scores detection looks at: `y` itself for `hops` = 1, else each label's mean over the latest `hops` windows
/// (over all windows so far while there are fewer), summed oldest first. `recent` is the ring of the latest scores
/// (`hops` × labels) and `seen` the number of windows so far; both are updated.
fn smoothed_scores<'a>(
    y: &'a [f32],
    hops: usize,
    recent: &mut [f32],
    seen: &mut u64,
    smoothed: &'a mut [f32],
) -> &'a [f32] {
    if hops <= 1 {
        return y;
    }
    let n = y.len();
    let slot = (*seen % hops as u64) as usize;
    recent[slot * n..(slot + 1) * n].copy_from_slice(y);
    *seen += 1;
    let count = (*seen).min(hops as u64) as usize;
    let first = (slot + hops + 1 - count) % hops;
    smoothed.iter_mut().for_each(|v| *v = 0.0);
    for k in 0..count {
        let row = &recent[((first + k) % hops) * n..][..n];
        for (v, &r) in smoothed.iter_mut().zip(row) {
            *v += r;
        }
    }
    smoothed.iter_mut().for_each(|v| *v /= count as f32);
    smoothed
}
