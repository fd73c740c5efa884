//! The `level` stage: RMS and peak in dBFS per hop, and `activity` start/stop events from a threshold with
//! hysteresis and a hold time.

use crate::config::LevelStageConfig;
use crate::dsp::framer::Framer;
use crate::event::{Event, EventKind};
use crate::stage::Stage;
use std::sync::Arc;

/// Levels below this are reported as this (digital silence has no finite dB value and JSON has no -inf).
pub const FLOOR_DBFS: f32 = -150.0;

/// Amplitude ratio to dBFS (full scale = 1.0), floored at [`FLOOR_DBFS`].
pub fn to_dbfs(amplitude: f64) -> f32 {
    if amplitude <= 0.0 {
        return FLOOR_DBFS;
    }
    ((20.0 * amplitude.log10()) as f32).max(FLOOR_DBFS)
}

/// RMS (as dBFS) and peak (as dBFS) of a block.
pub fn rms_peak_dbfs(x: &[f32]) -> (f32, f32) {
    if x.is_empty() {
        return (FLOOR_DBFS, FLOOR_DBFS);
    }
    let mut sum = 0.0f64;
    let mut peak = 0.0f32;
    for &v in x {
        sum += (v as f64) * (v as f64);
        peak = peak.max(v.abs());
    }
    (to_dbfs((sum / x.len() as f64).sqrt()), to_dbfs(peak as f64))
}

/// Activity detector: on when the level rises above `on_db`; off once it stays below `off_db` for `hold` hops.
#[derive(Debug, Clone)]
struct Hysteresis {
    on_db: f32,
    off_db: f32,
    hold_hops: u64,
    active: bool,
    quiet_hops: u64,
}

impl Hysteresis {
    /// Feed one level; returns `Some(new_state)` on a change.
    fn update(&mut self, db: f32) -> Option<bool> {
        if !self.active {
            if db > self.on_db {
                self.active = true;
                self.quiet_hops = 0;
                return Some(true);
            }
        } else if db < self.off_db {
            self.quiet_hops += 1;
            if self.quiet_hops >= self.hold_hops {
                self.active = false;
                return Some(false);
            }
        } else {
            self.quiet_hops = 0;
        }
        None
    }
}

/// RMS/peak meter with an activity detector.
pub struct LevelStage {
    name: Arc<str>,
    rate: u32,
    framer: Framer,
    detector: Hysteresis,
    emit_level: bool,
    events: Vec<(u64, f32, f32)>,
    /// Samples consumed so far (stream time at the stage rate).
    consumed: u64,
}

impl LevelStage {
    /// Build from its config; `rate` is the stage's input rate (the config's `rate` or the source rate).
    /// Window and hop must already have been checked to be ≥ 1 sample.
    pub fn new(cfg: &LevelStageConfig, rate: u32) -> Self {
        let window = cfg.window.samples(rate).max(1) as usize;
        let hop = cfg
            .hop
            .map(|h| h.samples(rate))
            .unwrap_or(window as u64)
            .max(1) as usize;
        let hold_hops = cfg.hold.samples(rate).div_ceil(hop as u64).max(1);
        LevelStage {
            name: Arc::from(cfg.name.as_str()),
            rate,
            framer: Framer::new(window, hop),
            detector: Hysteresis {
                on_db: cfg.threshold_dbfs,
                off_db: cfg.threshold_dbfs - cfg.hysteresis_db,
                hold_hops,
                active: false,
                quiet_hops: 0,
            },
            emit_level: cfg.emit_level,
            events: Vec::with_capacity(64),
            consumed: 0,
        }
    }
}

impl Stage for LevelStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn rate(&self) -> u32 {
        self.rate
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<Event>) {
        self.consumed += samples.len() as u64;
        let (window, hop) = (self.framer.window() as u64, self.framer.hop() as u64);
        let events = &mut self.events;
        self.framer.push(samples, |index, frame| {
            let (rms, peak) = rms_peak_dbfs(frame);
            // Stamped at the end of the window: the moment the measurement is known.
            events.push((index * hop + window, rms, peak));
        });
        for (sample, rms, peak) in self.events.drain(..) {
            if self.emit_level {
                out.push(Event::new(
                    &self.name,
                    sample,
                    EventKind::Level {
                        rms_dbfs: rms,
                        peak_dbfs: peak,
                    },
                ));
            }
            if let Some(active) = self.detector.update(rms) {
                out.push(Event::new(
                    &self.name,
                    sample,
                    EventKind::Activity { active },
                ));
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        // An activity still open at the end of the stream is closed so consumers see balanced start/stop pairs.
        if self.detector.active {
            self.detector.active = false;
            out.push(Event::new(
                &self.name,
                self.consumed,
                EventKind::Activity { active: false },
            ));
        }
    }

    fn reset(&mut self) {
        self.framer.reset();
        self.detector.active = false;
        self.detector.quiet_hops = 0;
        self.events.clear();
        self.consumed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Length;

    fn cfg() -> LevelStageConfig {
        LevelStageConfig {
            name: "lvl".into(),
            rate: None,
            window: Length::Samples(100),
            hop: None,
            threshold_dbfs: -30.0,
            hysteresis_db: 6.0,
            hold: Length::Samples(200),
            emit_level: true,
        }
    }

    #[test]
    fn dbfs_of_known_signals() {
        // Full-scale square wave: RMS 0 dBFS, peak 0 dBFS.
        let sq: Vec<f32> = (0..100)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let (r, p) = rms_peak_dbfs(&sq);
        assert!(r.abs() < 1e-4 && p.abs() < 1e-4);
        // Sine of amplitude 0.5 over whole periods: RMS = 0.5/sqrt(2) → -9.03 dBFS, peak -6.02 dBFS.
        let s: Vec<f32> = (0..1600)
            .map(|i| 0.5 * (i as f32 * std::f32::consts::TAU / 16.0).sin())
            .collect();
        let (r, p) = rms_peak_dbfs(&s);
        assert!((r + 9.0309).abs() < 1e-3, "{r}");
        assert!((p + 6.0206).abs() < 1e-3, "{p}");
        assert_eq!(rms_peak_dbfs(&[0.0; 10]).0, FLOOR_DBFS);
    }

    #[test]
    fn activity_has_hysteresis_and_hold() {
        let mut st = LevelStage::new(&cfg(), 1000);
        let mut out = Vec::new();
        // 300 samples loud (-6 dBFS), then 150 at -33 dBFS (between off and on: stays active), then 300 silent.
        let mut x = vec![0.5f32; 300];
        x.extend(std::iter::repeat_n(0.0224, 150));
        x.extend(std::iter::repeat_n(0.0, 300));
        st.push(&x, &mut out);
        let acts: Vec<(u64, bool)> = out
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Activity { active } => Some((e.sample, active)),
                _ => None,
            })
            .collect();
        // On at the first window (ends at 100); the -33 dB stretch does not switch it off (off threshold -36);
        // silence starts at 450: windows ending at 500 (mixed, about -39 dB), 600 and so on are quiet; hold = 2 hops.
        assert_eq!(acts, vec![(100, true), (600, false)]);
        let levels = out
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Level { .. }))
            .count();
        assert_eq!(levels, 7);
    }

    #[test]
    fn split_pushes_equal_one_push() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut a = LevelStage::new(&cfg(), 1000);
        let mut b = LevelStage::new(&cfg(), 1000);
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.push(&x, &mut ea);
        for c in x.chunks(37) {
            b.push(c, &mut eb);
        }
        let key = |e: &Event| (e.sample, serde_json::to_string(&e.kind).unwrap_or_default());
        assert_eq!(
            ea.iter().map(key).collect::<Vec<_>>(),
            eb.iter().map(key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn open_activity_is_closed_at_finish() {
        let mut st = LevelStage::new(&cfg(), 1000);
        let mut out = Vec::new();
        st.push(&[0.5; 250], &mut out);
        out.clear();
        st.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].kind, EventKind::Activity { active: false }));
        assert_eq!(out[0].sample, 250);
    }
}
