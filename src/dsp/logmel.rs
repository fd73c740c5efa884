//! sigflow's log-mel front end, streaming: exactly the definition in `training/common/logmel.py` (the models are
//! trained on it). Frames start at sample 0 and are never padded:
//! frame `t` = `x[t·hop .. t·hop + n_fft]` × periodic Hann → |rfft|² → triangular HTK-mel filters (peak 1, edges
//! equally spaced in mel between `f_min` and `f_max`) → `ln(mel + 1e-6)`. Computed in f64, returned as f32.
//!
//! [`LogMel::push`] takes samples in any block sizes and computes only the frames they complete; [`LogMel::batch`]
//! is its batch twin.

use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// Guard added before the logarithm.
pub const LOG_GUARD: f64 = 1e-6;

/// Parameters of the front end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogMelConfig {
    pub rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub f_min: f64,
    /// Upper edge; `rate / 2` when `None`.
    pub f_max: Option<f64>,
}

impl LogMelConfig {
    /// Frames of `n_samples` samples (complete frames only).
    pub fn frames(&self, n_samples: usize) -> usize {
        if n_samples < self.n_fft {
            0
        } else {
            1 + (n_samples - self.n_fft) / self.hop
        }
    }

    /// Refuse impossible parameters (a message without location).
    pub fn validate(&self) -> Result<(), String> {
        if self.n_fft < 2 || self.hop == 0 || self.n_mels == 0 || self.rate == 0 {
            return Err("n-fft must be ≥ 2, hop, n-mels and rate > 0".into());
        }
        let f_max = self.f_max.unwrap_or(self.rate as f64 / 2.0);
        if !(self.f_min >= 0.0 && f_max > self.f_min && f_max <= self.rate as f64 / 2.0) {
            return Err(format!(
                "need 0 ≤ f-min < f-max ≤ rate/2, got {} .. {f_max}",
                self.f_min
            ));
        }
        Ok(())
    }
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// Triangular filters `[n_mels][n_fft/2 + 1]` as (first bin, weights) pairs.
fn filterbank(c: &LogMelConfig) -> Vec<(usize, Vec<f64>)> {
    let f_max = c.f_max.unwrap_or(c.rate as f64 / 2.0);
    let (m0, m1) = (hz_to_mel(c.f_min), hz_to_mel(f_max));
    let n = c.n_mels + 2;
    let edges: Vec<f64> = (0..n)
        .map(|i| mel_to_hz(m0 + (m1 - m0) * i as f64 / (n - 1) as f64))
        .collect();
    let bins = c.n_fft / 2 + 1;
    (0..c.n_mels)
        .map(|m| {
            let (lo, mid, hi) = (edges[m], edges[m + 1], edges[m + 2]);
            let w: Vec<f64> = (0..bins)
                .map(|k| {
                    let f = k as f64 * c.rate as f64 / c.n_fft as f64;
                    let up = (f - lo) / (mid - lo);
                    let down = (hi - f) / (hi - mid);
                    up.min(down).max(0.0)
                })
                .collect();
            let first = w.iter().position(|&v| v > 0.0).unwrap_or(0);
            let last = w
                .iter()
                .rposition(|&v| v > 0.0)
                .map(|i| i + 1)
                .unwrap_or(first);
            (first, w[first..last].to_vec())
        })
        .collect()
}

/// The streaming log-mel front end.
pub struct LogMel {
    cfg: LogMelConfig,
    window: Vec<f64>,
    filters: Vec<(usize, Vec<f64>)>,
    fft: Arc<dyn RealToComplex<f64>>,
    input: Vec<f64>,
    spectrum: Vec<realfft::num_complex::Complex<f64>>,
    power: Vec<f64>,
    pending: Vec<f32>,
}

impl LogMel {
    pub fn new(cfg: LogMelConfig) -> Result<Self, String> {
        cfg.validate()?;
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        let n = cfg.n_fft;
        Ok(LogMel {
            window: (0..n)
                .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
                .collect(),
            filters: filterbank(&cfg),
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            power: vec![0.0; n / 2 + 1],
            fft,
            cfg,
            pending: vec![],
        })
    }

    pub fn config(&self) -> &LogMelConfig {
        &self.cfg
    }

    /// Forget buffered samples.
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    fn frame(&mut self, x: &[f32], out: &mut Vec<f32>) {
        for ((d, &s), &w) in self.input.iter_mut().zip(x).zip(&self.window) {
            *d = s as f64 * w;
        }
        // The buffers have the sizes the plan made them with, so processing cannot fail.
        let _ = self.fft.process(&mut self.input, &mut self.spectrum);
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        for (first, w) in &self.filters {
            let e: f64 = w
                .iter()
                .zip(&self.power[*first..])
                .map(|(a, b)| a * b)
                .sum();
            out.push((e + LOG_GUARD).ln() as f32);
        }
    }

    /// Feed samples; append every completed frame (time-major: `n_mels` values per frame) to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        self.pending.extend_from_slice(samples);
        let (n, h) = (self.cfg.n_fft, self.cfg.hop);
        let mut start = 0;
        while start + n <= self.pending.len() {
            let frame: Vec<f32> = self.pending[start..start + n].to_vec();
            self.frame(&frame, out);
            start += h;
        }
        self.pending.drain(..start.min(self.pending.len()));
    }

    /// Batch twin: log-mel of a whole signal as `[n_mels][frames]` (channel-major, like the Python definition).
    pub fn batch(cfg: LogMelConfig, x: &[f32]) -> Result<Vec<f32>, String> {
        let mut lm = LogMel::new(cfg)?;
        let t = cfg.frames(x.len());
        let mut rows = Vec::with_capacity(t * cfg.n_mels);
        for i in 0..t {
            lm.frame(&x[i * cfg.hop..i * cfg.hop + cfg.n_fft], &mut rows);
        }
        let mut out = vec![0.0; rows.len()];
        for f in 0..t {
            for m in 0..cfg.n_mels {
                out[m * t + f] = rows[f * cfg.n_mels + m];
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_batch_for_any_blocks() {
        let cfg = LogMelConfig {
            rate: 16_000,
            n_fft: 400,
            hop: 160,
            n_mels: 40,
            f_min: 0.0,
            f_max: None,
        };
        let x: Vec<f32> = (0..8000)
            .map(|i| ((i as f32) * 0.05).sin() * 0.3 + ((i * 7919) % 113) as f32 * 1e-3)
            .collect();
        let batch = LogMel::batch(cfg, &x).unwrap();
        let t = cfg.frames(x.len());
        for block in [1usize, 7, 160, 401, 3000] {
            let mut lm = LogMel::new(cfg).unwrap();
            let mut rows = vec![];
            for chunk in x.chunks(block) {
                lm.push(chunk, &mut rows);
            }
            assert_eq!(rows.len(), t * cfg.n_mels, "block {block}");
            for f in 0..t {
                for m in 0..cfg.n_mels {
                    assert_eq!(
                        rows[f * cfg.n_mels + m],
                        batch[m * t + f],
                        "block {block} frame {f} mel {m}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let c = LogMelConfig {
            rate: 16_000,
            n_fft: 400,
            hop: 160,
            n_mels: 40,
            f_min: 0.0,
            f_max: Some(9000.0),
        };
        assert!(LogMel::new(c).is_err());
        assert!(LogMel::new(LogMelConfig {
            hop: 0,
            f_max: None,
            ..c
        })
        .is_err());
    }
}
