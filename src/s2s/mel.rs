//! The LFM2-Audio input features: NeMo's `AudioToMelSpectrogramPreprocessor` as the checkpoint's `preprocessor`
//! section configures it, in inference mode (no dither, no augmentation).
//!
//! For `n` samples at `sample_rate`:
//! 1. pre-emphasis `y[0] = x[0]`, `y[i] = x[i] − 0.97·x[i−1]`;
//! 2. a centred STFT: `n_fft / 2` zeros on both sides, frames every `hop = window_stride · rate` samples,
//!    `1 + n / hop` frames; the window (symmetric Hann of `win = window_size · rate` samples) sits in the middle of
//!    the `n_fft` frame;
//! 3. power spectrum `|X|²` → Slaney-scale, Slaney-normalised mel filters (librosa's `filters.mel`, 0 … rate/2);
//! 4. `ln(mel + 2⁻²⁴)`;
//! 5. per-feature normalisation over the `n / hop` *valid* frames: `(v − mean) / (std + 1e-5)`, with the unbiased
//!    standard deviation;
//! 6. frames from `n / hop` on (the last, centred frame that reaches past the end) are set to `pad_value`, and the
//!    frame count is padded to a multiple of `pad_to` when that is > 0.
//!
//! Computed in f64, returned as f32, time-major (`frames × features`).

use crate::{Error, Result};
use realfft::{RealFftPlanner, RealToComplex};
use serde::Deserialize;
use std::sync::Arc;

/// Added before the logarithm (NeMo's default `log_zero_guard_value`).
pub const LOG_GUARD: f64 = 1.0 / (1u64 << 24) as f64;
/// Added to the standard deviation in the normalisation.
pub const STD_GUARD: f64 = 1e-5;

/// The `preprocessor` section of an LFM2-Audio `config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PreprocessorConfig {
    pub sample_rate: u32,
    /// `per_feature`, `all_features`, or anything else for none.
    #[serde(default = "default_normalize")]
    pub normalize: String,
    /// Window length in seconds.
    pub window_size: f64,
    /// Hop in seconds.
    pub window_stride: f64,
    #[serde(default = "default_window")]
    pub window: String,
    /// Number of mel bands.
    pub features: usize,
    /// FFT size; the next power of two ≥ the window when absent.
    #[serde(default)]
    pub n_fft: Option<usize>,
    #[serde(default = "default_true")]
    pub log: bool,
    #[serde(default = "default_one")]
    pub frame_splicing: usize,
    /// Training-time dither amplitude; inference (and sigflow) never dithers.
    #[serde(default)]
    pub dither: f64,
    #[serde(default)]
    pub pad_to: usize,
    #[serde(default)]
    pub pad_value: f64,
    /// Pre-emphasis coefficient (NeMo's default 0.97; the published configs leave it out).
    #[serde(default = "default_preemph")]
    pub preemph: Option<f64>,
}

fn default_normalize() -> String {
    "per_feature".into()
}
fn default_window() -> String {
    "hann".into()
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_preemph() -> Option<f64> {
    Some(0.97)
}

impl PreprocessorConfig {
    /// The published LFM2-Audio-1.5B values.
    pub fn lfm2_audio() -> PreprocessorConfig {
        PreprocessorConfig {
            sample_rate: 16_000,
            normalize: default_normalize(),
            window_size: 0.025,
            window_stride: 0.01,
            window: default_window(),
            features: 128,
            n_fft: Some(512),
            log: true,
            frame_splicing: 1,
            dither: 1e-5,
            pad_to: 0,
            pad_value: 0.0,
            preemph: default_preemph(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Normalize {
    PerFeature,
    AllFeatures,
    None,
}

/// The log-mel front end of one configuration (filters, window and FFT plan built once).
pub struct LogMel {
    n_fft: usize,
    hop: usize,
    n_mels: usize,
    n_bins: usize,
    /// `n_fft` values: the window centred in the frame, zeros around it.
    window: Vec<f64>,
    /// `n_mels × n_bins`, f32 values as librosa returns them.
    filters: Vec<f32>,
    preemph: Option<f32>,
    log: bool,
    normalize: Normalize,
    pad_to: usize,
    pad_value: f32,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl LogMel {
    pub fn new(cfg: &PreprocessorConfig) -> Result<LogMel> {
        let bad = |m: String| Error::Model(format!("preprocessor config: {m}"));
        let rate = cfg.sample_rate as f64;
        let win = (cfg.window_size * rate) as usize;
        let hop = (cfg.window_stride * rate) as usize;
        if cfg.sample_rate == 0 || win == 0 || hop == 0 {
            return Err(bad(format!(
                "sample_rate {}, window_size {} s and window_stride {} s must give a window and hop of at least one sample",
                cfg.sample_rate, cfg.window_size, cfg.window_stride
            )));
        }
        let n_fft = cfg.n_fft.unwrap_or_else(|| win.next_power_of_two());
        if n_fft < win {
            return Err(bad(format!(
                "n_fft {n_fft} is shorter than the window ({win} samples)"
            )));
        }
        if cfg.features == 0 {
            return Err(bad("features must be > 0".into()));
        }
        if cfg.frame_splicing != 1 {
            return Err(bad(format!(
                "frame_splicing {} is not supported (only 1)",
                cfg.frame_splicing
            )));
        }
        let normalize = match cfg.normalize.as_str() {
            "per_feature" => Normalize::PerFeature,
            "all_features" => Normalize::AllFeatures,
            _ => Normalize::None,
        };
        let shape = window_shape(&cfg.window, win).ok_or_else(|| {
            bad(format!(
                "window `{}` is not one of hann, hamming, blackman, bartlett",
                cfg.window
            ))
        })?;
        let mut window = vec![0f64; n_fft];
        let left = (n_fft - win) / 2;
        window[left..left + win].copy_from_slice(&shape);
        let n_bins = n_fft / 2 + 1;
        let filters = slaney_mel_filters(rate, n_fft, cfg.features, 0.0, rate / 2.0);
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n_fft);
        Ok(LogMel {
            n_fft,
            hop,
            n_mels: cfg.features,
            n_bins,
            window,
            filters,
            preemph: cfg.preemph.map(|p| p as f32),
            log: cfg.log,
            normalize,
            pad_to: cfg.pad_to,
            pad_value: cfg.pad_value as f32,
            fft,
        })
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames the features of `n` samples have (before `pad_to`), and how many of them are valid.
    pub fn frames(&self, n: usize) -> (usize, usize) {
        if n == 0 {
            return (0, 0);
        }
        let pad = self.n_fft / 2;
        (1 + (n + 2 * pad - self.n_fft) / self.hop, n / self.hop)
    }

    /// 16 kHz mono samples → (features `frames × n_mels`, time-major; frames).
    pub fn compute(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let n = samples.len();
        let (frames, valid) = self.frames(n);
        if frames == 0 {
            return (Vec::new(), 0);
        }
        // Pre-emphasis in f32, as the reference computes it.
        let x: Vec<f32> = match self.preemph {
            Some(a) => (0..n)
                .map(|i| {
                    if i == 0 {
                        samples[0]
                    } else {
                        samples[i] - a * samples[i - 1]
                    }
                })
                .collect(),
            None => samples.to_vec(),
        };
        let pad = self.n_fft / 2;
        let mut buf = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; self.n_bins];
        let mut feats = vec![0f64; frames * self.n_mels];
        for t in 0..frames {
            for (j, b) in buf.iter_mut().enumerate() {
                let i = (t * self.hop + j) as isize - pad as isize;
                let v = if i >= 0 && (i as usize) < n {
                    x[i as usize] as f64
                } else {
                    0.0
                };
                *b = v * self.window[j];
            }
            // The buffers have the plan's lengths, so the transform cannot fail.
            let _ = self
                .fft
                .process_with_scratch(&mut buf, &mut spec, &mut scratch);
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.re * c.re + c.im * c.im;
            }
            let row = &mut feats[t * self.n_mels..(t + 1) * self.n_mels];
            for (m, out) in row.iter_mut().enumerate() {
                let f = &self.filters[m * self.n_bins..(m + 1) * self.n_bins];
                let e: f64 = f.iter().zip(&power).map(|(&w, &p)| w as f64 * p).sum();
                *out = if self.log { (e + LOG_GUARD).ln() } else { e };
            }
        }
        self.normalize_in_place(&mut feats, frames, valid);
        let padded = if self.pad_to > 0 {
            frames.div_ceil(self.pad_to) * self.pad_to
        } else {
            frames
        };
        let mut out = vec![self.pad_value; padded * self.n_mels];
        for (o, &v) in out
            .iter_mut()
            .zip(&feats[..valid.min(frames) * self.n_mels])
        {
            *o = v as f32;
        }
        (out, padded)
    }

    fn normalize_in_place(&self, feats: &mut [f64], frames: usize, valid: usize) {
        let nm = self.n_mels;
        match self.normalize {
            Normalize::None => {}
            Normalize::PerFeature => {
                for m in 0..nm {
                    let mean = (0..valid).map(|t| feats[t * nm + m]).sum::<f64>() / valid as f64;
                    let var = (0..valid)
                        .map(|t| (feats[t * nm + m] - mean).powi(2))
                        .sum::<f64>()
                        / (valid as f64 - 1.0);
                    let std = if var.is_finite() { var.sqrt() } else { 0.0 } + STD_GUARD;
                    for t in 0..frames {
                        feats[t * nm + m] = (feats[t * nm + m] - mean) / std;
                    }
                }
            }
            Normalize::AllFeatures => {
                let count = (valid * nm) as f64;
                let mean = feats[..valid * nm].iter().sum::<f64>() / count;
                let var = feats[..valid * nm]
                    .iter()
                    .map(|v| (v - mean).powi(2))
                    .sum::<f64>()
                    / (count - 1.0);
                let std = if var.is_finite() { var.sqrt() } else { 0.0 } + STD_GUARD;
                for v in feats[..frames * nm].iter_mut() {
                    *v = (*v - mean) / std;
                }
            }
        }
    }
}

/// The symmetric ("periodic = False") window of `n` samples.
fn window_shape(name: &str, n: usize) -> Option<Vec<f64>> {
    let d = (n.max(2) - 1) as f64;
    let tau = 2.0 * std::f64::consts::PI;
    let f: fn(f64, f64, f64) -> f64 = match name {
        "hann" => |i, d, tau| 0.5 - 0.5 * (tau * i / d).cos(),
        "hamming" => |i, d, tau| 0.54 - 0.46 * (tau * i / d).cos(),
        "blackman" => {
            |i, d, tau| 0.42 - 0.5 * (tau * i / d).cos() + 0.08 * (2.0 * tau * i / d).cos()
        }
        "bartlett" => |i, d, _| 1.0 - (2.0 * i / d - 1.0).abs(),
        _ => return None,
    };
    if n == 1 {
        return Some(vec![1.0]);
    }
    Some((0..n).map(|i| f(i as f64, d, tau)).collect())
}

/// Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa defines it.
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// Triangular filters on the Slaney mel scale with area ("slaney") normalisation: `n_mels × (n_fft/2 + 1)`,
/// rounded to f32 as librosa returns them.
fn slaney_mel_filters(rate: f64, n_fft: usize, n_mels: usize, f_min: f64, f_max: f64) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let (lo, hi) = (hz_to_mel(f_min), hz_to_mel(f_max));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
        let norm = 2.0 / (r - l);
        for k in 0..n_bins {
            let f = k as f64 * rate / n_fft as f64;
            let rise = (f - l) / (c - l);
            let fall = (r - f) / (r - c);
            let tri = rise.min(fall).max(0.0) as f32;
            w[m * n_bins + k] = (tri as f64 * norm) as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_follows_the_centred_stft() {
        let mel = LogMel::new(&PreprocessorConfig::lfm2_audio()).unwrap();
        assert_eq!(mel.frames(24_000), (151, 150));
        assert_eq!(mel.frames(159), (1, 0));
        let (f, n) = mel.compute(&vec![0.1; 1600]);
        assert_eq!(n, 11);
        assert_eq!(f.len(), 11 * 128);
        // The frame past the valid ones is the pad value.
        assert!(f[10 * 128..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn filters_match_librosa_slaney_values() {
        // librosa.filters.mel(sr=16000, n_fft=512, n_mels=128, norm="slaney"): first filter peaks at bin 1.
        let w = slaney_mel_filters(16_000.0, 512, 128, 0.0, 8_000.0);
        let row0 = &w[..257];
        let peak = row0
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(peak, Some(1));
        // Area normalisation: every filter integrates (over Hz) to about 1 … check the sum × bin width.
        for m in [10usize, 64, 120] {
            let s: f64 = w[m * 257..(m + 1) * 257].iter().map(|&v| v as f64).sum();
            assert!((s * 16_000.0 / 512.0 - 1.0).abs() < 0.2, "filter {m}: {s}");
        }
    }

    #[test]
    fn unknown_window_is_refused() {
        let mut cfg = PreprocessorConfig::lfm2_audio();
        cfg.window = "kaiser".into();
        let e = LogMel::new(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("kaiser"), "{e}");
    }
}
