//! `kind = "synth"`: a generated test signal — sine, linear chirp or seeded white noise — endless or of a given
//! duration, paced like a live device or as fast as possible.

use super::ring::{push_live, push_wait, Pacer};
use super::{Source, SourceControl, SourceHandle};
use crate::config::{SynthSignal, SynthSource};
use crate::error::{Error, Result};
use std::f64::consts::TAU;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The signal generator, sample by sample (usable on its own, e.g. to build a reference).
#[derive(Debug, Clone)]
pub struct SynthGenerator {
    signal: SynthSignal,
    rate: f64,
    f0: f64,
    f1: f64,
    amplitude: f64,
    /// Sweep length of a chirp, in seconds.
    sweep: f64,
    phase: f64,
    n: u64,
    rng: u64,
}

impl SynthGenerator {
    pub fn new(cfg: &SynthSource) -> Self {
        SynthGenerator {
            signal: cfg.signal,
            rate: cfg.rate as f64,
            f0: cfg.frequency,
            f1: cfg.to_frequency.unwrap_or(cfg.frequency),
            amplitude: cfg.amplitude,
            sweep: cfg.duration.unwrap_or(1.0).max(1e-9),
            phase: 0.0,
            n: 0,
            rng: cfg.seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// SplitMix64: a small, fixed generator so a seed gives the same noise on every platform and version.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_sample(&mut self) -> f32 {
        let t = self.n as f64 / self.rate;
        self.n += 1;
        let v = match self.signal {
            SynthSignal::Sine => (TAU * self.f0 * t).sin(),
            SynthSignal::Chirp => {
                // Instantaneous frequency f0 + (f1 - f0)·t/T (held at f1 after T), integrated sample by sample.
                let f = self.f0 + (self.f1 - self.f0) * (t / self.sweep).min(1.0);
                let v = self.phase.sin();
                self.phase = (self.phase + TAU * f / self.rate) % TAU;
                v
            }
            SynthSignal::Noise => (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0,
        };
        (v * self.amplitude) as f32
    }
}

/// A synth source.
pub struct SynthSourceRunner {
    cfg: SynthSource,
}

impl SynthSourceRunner {
    /// Check the parameters; the error text names the bad one (the caller adds the config location).
    pub fn new(cfg: &SynthSource) -> Result<Self, (String, String)> {
        if cfg.rate == 0 {
            return Err(("rate".into(), "must be positive".into()));
        }
        let nyquist = cfg.rate as f64 / 2.0;
        if !(cfg.frequency.is_finite() && cfg.frequency >= 0.0 && cfg.frequency <= nyquist) {
            return Err((
                "frequency".into(),
                format!("must be between 0 and the Nyquist frequency ({nyquist} Hz)"),
            ));
        }
        if let Some(f) = cfg.to_frequency {
            if !(f.is_finite() && f >= 0.0 && f <= nyquist) {
                return Err((
                    "to-frequency".into(),
                    format!("must be between 0 and the Nyquist frequency ({nyquist} Hz)"),
                ));
            }
        }
        if !(cfg.amplitude.is_finite() && (0.0..=1.0).contains(&cfg.amplitude)) {
            return Err(("amplitude".into(), "must be between 0 and 1".into()));
        }
        if let Some(d) = cfg.duration {
            if !(d.is_finite() && d >= 0.0) {
                return Err((
                    "duration".into(),
                    "must be a non-negative number of seconds".into(),
                ));
            }
        }
        Ok(SynthSourceRunner { cfg: cfg.clone() })
    }
}

impl Source for SynthSourceRunner {
    fn rate(&self) -> u32 {
        self.cfg.rate
    }

    fn is_live(&self) -> bool {
        self.cfg.realtime
    }

    fn start(
        self: Box<Self>,
        mut ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle> {
        let thread = std::thread::Builder::new()
            .name("sigflow-synth".into())
            .spawn(move || {
                let cfg = &self.cfg;
                let mut generator = SynthGenerator::new(cfg);
                let total = cfg.duration.map(|d| (d * cfg.rate as f64).round() as u64);
                let block = (cfg.rate as usize / 100).max(1);
                let mut buf = vec![0.0f32; block];
                let mut pacer = Pacer::new(cfg.rate);
                let mut done: u64 = 0;
                loop {
                    let n = match total {
                        Some(t) => (t - done).min(block as u64) as usize,
                        None => block,
                    };
                    if n == 0 || ctl.stop_requested() {
                        break;
                    }
                    for s in &mut buf[..n] {
                        *s = generator.next_sample();
                    }
                    done += n as u64;
                    if cfg.realtime {
                        if !pacer.wait(n, &ctl) {
                            break;
                        }
                        push_live(&mut ring, n, buf[..n].iter().copied(), &ctl);
                    } else if !push_wait(&mut ring, &buf[..n], &ctl) {
                        break;
                    }
                }
                ctl.finished.store(true, Ordering::Release);
                Ok(())
            })
            .map_err(|e| Error::io("starting the synth source thread", e))?;
        Ok(SourceHandle {
            thread: Some(thread),
        })
    }
}
