//! Heart beats from a per-sample R-peak probability (the output of `models/ecg_beats.onnx`), with RR interval,
//! heart rate and brady-/tachycardia alarms.
//!
//! Peak picking: every run of samples with probability ≥ `threshold` gives one candidate at its maximum; a
//! candidate closer than the refractory period to the previous beat replaces it when it is more probable, and is
//! dropped otherwise. The refractory period follows the heart rate: `refractory_rr` times the mean of the last (up
//! to 8) intervals between beats, but at least `refractory` and at most `refractory_max` (`refractory` alone while
//! there is no interval yet, or with `refractory_rr` = 0). In a slow rhythm this lets an R wave replace a tall P
//! wave marked before it, without merging the beats of a fast one. The model reports a beat `delay` samples after
//! the R peak, so beats are stamped `delay` earlier; a candidate in the first `delay` outputs would put its R peak
//! before the stream's first sample (a start-up response of the model, not a beat in the signal) and is not
//! reported, though it still holds its refractory period.
//! [`pick_beats`] is the batch form (training/ecg/evaluate.py does the same in Python); [`BeatPicker`] the
//! streaming form, which emits a beat as soon as no later run can replace it (at most one refractory period after
//! the run).
//! [`BeatEvents`] turns a stream of probabilities into `beat` / `alarm` events; the `onnx` stage's `beats` preset and
//! the `cnn` stage's `events = "beats"` share it and its settings ([`BeatsSettings`]).

use crate::config::Length;
use crate::event::{Event, EventKind};
use std::sync::Arc;

/// Peak-picking parameters, in samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeatParams {
    pub threshold: f32,
    /// The shortest refractory period.
    pub refractory: u64,
    /// Share of the recent mean RR interval the refractory period grows to (0: fixed at `refractory`).
    pub refractory_rr: f64,
    /// The longest refractory period (not below `refractory`).
    pub refractory_max: u64,
    pub delay: u64,
}

/// Intervals the refractory period's mean RR is taken over.
const RR_INTERVALS: usize = 8;

/// One detected beat: the R peak's sample index (already moved back by `delay`) and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beat {
    pub sample: u64,
    pub probability: f32,
}

/// Batch peak picking over a whole probability series.
pub fn pick_beats(p: &[f32], params: &BeatParams) -> Vec<Beat> {
    let mut picker = BeatPicker::new(*params);
    let mut out = Vec::new();
    picker.push(p, &mut out);
    picker.finish(&mut out);
    out
}

/// Candidate peak: (position in model-output samples, probability).
type Peak = (u64, f32);

/// Streaming peak picking.
#[derive(Debug, Clone)]
pub struct BeatPicker {
    params: BeatParams,
    /// Index of the next probability.
    t: u64,
    /// The run above threshold in progress: its best peak so far.
    run: Option<Peak>,
    /// The last beat, not yet final (a later run within the refractory period may replace it).
    pending: Option<Peak>,
    /// The refractory period after the pending beat, in samples.
    pending_window: f64,
    /// Positions of the last `RR_INTERVALS` final beats (emitted or not), oldest first.
    recent: std::collections::VecDeque<u64>,
}

impl BeatPicker {
    pub fn new(params: BeatParams) -> Self {
        BeatPicker {
            params,
            t: 0,
            run: None,
            pending: None,
            pending_window: 0.0,
            recent: std::collections::VecDeque::with_capacity(RR_INTERVALS),
        }
    }

    /// The refractory period after a pending beat at `c`, in samples (as training/ecg/evaluate.py's
    /// refractory_window computes it, in the same floating-point steps).
    fn refractory_after(&self, c: u64) -> f64 {
        let base = self.params.refractory as f64;
        match self.recent.front() {
            Some(&first) if self.params.refractory_rr > 0.0 => {
                let mean_rr = (c - first) as f64 / self.recent.len() as f64;
                (self.params.refractory_rr * mean_rr)
                    .max(base)
                    .min((self.params.refractory_max as f64).max(base))
            }
            _ => base,
        }
    }

    /// `peak` is the pending beat now.
    fn set_pending(&mut self, peak: Peak) {
        self.pending_window = self.refractory_after(peak.0);
        self.pending = Some(peak);
    }

    /// The pending beat `c` is final.
    fn settle(&mut self, c: Peak, out: &mut Vec<Beat>) {
        self.emit(c, out);
        if self.recent.len() == RR_INTERVALS {
            self.recent.pop_front();
        }
        self.recent.push_back(c.0);
    }

    pub fn reset(&mut self) {
        *self = BeatPicker::new(self.params);
    }

    fn emit(&self, (k, prob): Peak, out: &mut Vec<Beat>) {
        if let Some(sample) = k.checked_sub(self.params.delay) {
            out.push(Beat {
                sample,
                probability: prob,
            });
        }
    }

    fn close_run(&mut self, out: &mut Vec<Beat>) {
        let Some((k, prob)) = self.run.take() else {
            return;
        };
        match self.pending {
            Some((c, cp)) if ((k - c) as f64) < self.pending_window => {
                if prob > cp {
                    self.set_pending((k, prob));
                }
            }
            Some(c) => {
                self.settle(c, out);
                self.set_pending((k, prob));
            }
            None => self.set_pending((k, prob)),
        }
    }

    /// Feed the next probabilities; appends the beats that became final.
    pub fn push(&mut self, probs: &[f32], out: &mut Vec<Beat>) {
        for &p in probs {
            let t = self.t;
            self.t += 1;
            if p >= self.params.threshold {
                match &mut self.run {
                    Some((k, best)) => {
                        if p > *best {
                            *k = t;
                            *best = p;
                        }
                    }
                    None => self.run = Some((t, p)),
                }
            } else {
                self.close_run(out);
                // No run is open, so any later candidate lies at or after `t + 1`.
                if let Some(c) = self.pending {
                    if (t + 1 - c.0) as f64 >= self.pending_window {
                        self.settle(c, out);
                        self.pending = None;
                    }
                }
            }
        }
    }

    /// End of signal: emit what is pending.
    pub fn finish(&mut self, out: &mut Vec<Beat>) {
        self.close_run(out);
        if let Some(c) = self.pending.take() {
            self.settle(c, out);
        }
    }
}

/// Heart rate and alarms from successive beats.
#[derive(Debug, Clone)]
pub struct HeartRate {
    rate: u32,
    last: Option<u64>,
    /// Recent RR intervals in samples (the alarm averages them).
    recent: Vec<u64>,
    window: usize,
    brady_bpm: Option<f64>,
    tachy_bpm: Option<f64>,
    brady: bool,
    tachy: bool,
}

/// What [`HeartRate::beat`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatReport {
    pub rr_ms: Option<f64>,
    pub bpm: Option<f64>,
    /// Alarms raised or cleared by this beat: (name, active, mean bpm).
    pub alarms: Vec<(&'static str, bool, f64)>,
}

impl HeartRate {
    /// `window` RR intervals are averaged for the alarms; `brady_bpm` / `tachy_bpm` are the alarm thresholds.
    pub fn new(rate: u32, window: usize, brady_bpm: Option<f64>, tachy_bpm: Option<f64>) -> Self {
        HeartRate {
            rate,
            last: None,
            recent: Vec::new(),
            window: window.max(1),
            brady_bpm,
            tachy_bpm,
            brady: false,
            tachy: false,
        }
    }

    pub fn reset(&mut self) {
        *self = HeartRate::new(self.rate, self.window, self.brady_bpm, self.tachy_bpm);
    }

    /// A beat at `sample`.
    pub fn beat(&mut self, sample: u64) -> BeatReport {
        let rr = self.last.map(|l| sample.saturating_sub(l));
        self.last = Some(sample);
        let mut alarms = Vec::new();
        let (rr_ms, bpm) = match rr {
            Some(rr) if rr > 0 => {
                let ms = rr as f64 * 1000.0 / self.rate as f64;
                (Some(ms), Some(60_000.0 / ms))
            }
            _ => (None, None),
        };
        if let Some(rr) = rr.filter(|&r| r > 0) {
            self.recent.push(rr);
            if self.recent.len() > self.window {
                self.recent.remove(0);
            }
            if self.recent.len() == self.window {
                let mean = self.recent.iter().sum::<u64>() as f64 / self.window as f64;
                let mean_bpm = 60.0 * self.rate as f64 / mean;
                if let Some(lo) = self.brady_bpm {
                    let now = mean_bpm < lo;
                    if now != self.brady {
                        self.brady = now;
                        alarms.push(("bradycardia", now, mean_bpm));
                    }
                }
                if let Some(hi) = self.tachy_bpm {
                    let now = mean_bpm > hi;
                    if now != self.tachy {
                        self.tachy = now;
                        alarms.push(("tachycardia", now, mean_bpm));
                    }
                }
            }
        }
        BeatReport { rr_ms, bpm, alarms }
    }
}

/// Default share of the recent mean RR interval the refractory period grows to.
pub const DEFAULT_REFRACTORY_RR: f64 = 0.3;
/// Default longest refractory period, in seconds.
pub const DEFAULT_REFRACTORY_MAX_S: f64 = 0.3;

/// Everything a beat detector stage needs besides the model: peak picking and heart-rate alarms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeatsSettings {
    pub params: BeatParams,
    pub brady_bpm: Option<f64>,
    pub tachy_bpm: Option<f64>,
    pub alarm_beats: usize,
}

/// The config keys of the beat settings, as a stage section gives them (all optional).
#[derive(Debug, Clone, Copy, Default)]
pub struct BeatsKeys {
    /// Probability a beat must reach (default 0.5).
    pub threshold: Option<f32>,
    /// The model reports a beat this long after the R peak (default 72 samples, `models/ecg_beats.onnx`'s).
    pub delay: Option<Length>,
    /// No two beats closer than this (default 200 ms).
    pub refractory: Option<Length>,
    /// The refractory period grows to this share of the mean of the last 8 RR intervals (default 0.3; 0: fixed).
    pub refractory_rr: Option<f64>,
    /// ... but no longer than this (default 300 ms, or `refractory` if that is longer).
    pub refractory_max: Option<Length>,
    /// `bradycardia` alarm below this mean rate (bpm).
    pub brady_bpm: Option<f64>,
    /// `tachycardia` alarm above this mean rate (bpm).
    pub tachy_bpm: Option<f64>,
    /// RR intervals averaged for the alarms (default 8).
    pub alarm_beats: Option<usize>,
}

impl BeatsKeys {
    /// Validate at stage rate `rate`; an error names the offending key (kebab-case) and says what is wrong.
    pub fn resolve(&self, rate: u32) -> std::result::Result<BeatsSettings, (&'static str, String)> {
        let threshold = self.threshold.unwrap_or(0.5);
        if !(threshold > 0.0 && threshold < 1.0) {
            return Err(("threshold", "threshold must be in (0, 1)".into()));
        }
        let refractory = self
            .refractory
            .unwrap_or(Length::Seconds(0.2))
            .samples(rate);
        if refractory == 0 {
            return Err(("refractory", "refractory must be positive".into()));
        }
        let refractory_rr = self.refractory_rr.unwrap_or(DEFAULT_REFRACTORY_RR);
        if !(0.0..1.0).contains(&refractory_rr) {
            return Err((
                "refractory-rr",
                "refractory-rr must be in [0, 1) (a share of the RR interval; 0 keeps the refractory period fixed)"
                    .into(),
            ));
        }
        // an explicit refractory-max must not undercut refractory; the default yields to a longer refractory
        let refractory_max = match self.refractory_max {
            Some(l) => l.samples(rate),
            None => Length::Seconds(DEFAULT_REFRACTORY_MAX_S)
                .samples(rate)
                .max(refractory),
        };
        if refractory_max < refractory {
            return Err((
                "refractory-max",
                format!(
                    "refractory-max ({refractory_max} samples) must not be shorter than refractory ({refractory} \
                     samples)"
                ),
            ));
        }
        for (key, v) in [("brady-bpm", self.brady_bpm), ("tachy-bpm", self.tachy_bpm)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err((key, "must be a positive number of beats per minute".into()));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.brady_bpm, self.tachy_bpm) {
            if lo >= hi {
                return Err(("brady-bpm", "brady-bpm must be below tachy-bpm".into()));
            }
        }
        if self.alarm_beats == Some(0) {
            return Err(("alarm-beats", "alarm-beats must be at least 1".into()));
        }
        Ok(BeatsSettings {
            params: BeatParams {
                threshold,
                refractory,
                refractory_rr,
                refractory_max,
                delay: self.delay.unwrap_or(Length::Samples(72)).samples(rate),
            },
            brady_bpm: self.brady_bpm,
            tachy_bpm: self.tachy_bpm,
            alarm_beats: self.alarm_beats.unwrap_or(8),
        })
    }
}

/// Per-sample R-peak probabilities in, `beat` events (with RR interval and heart rate) and `alarm` events out.
#[derive(Debug, Clone)]
pub struct BeatEvents {
    picker: BeatPicker,
    heart: HeartRate,
    buf: Vec<Beat>,
}

impl BeatEvents {
    pub fn new(settings: BeatsSettings, rate: u32) -> Self {
        BeatEvents {
            picker: BeatPicker::new(settings.params),
            heart: HeartRate::new(
                rate,
                settings.alarm_beats,
                settings.brady_bpm,
                settings.tachy_bpm,
            ),
            buf: Vec::new(),
        }
    }

    /// The next probabilities (one per sample, continuing the stream); appends the events that became final.
    pub fn push(&mut self, name: &Arc<str>, probs: &[f32], out: &mut Vec<Event>) {
        self.picker.push(probs, &mut self.buf);
        self.emit(name, out);
    }

    /// End of stream: the pending beat.
    pub fn finish(&mut self, name: &Arc<str>, out: &mut Vec<Event>) {
        self.picker.finish(&mut self.buf);
        self.emit(name, out);
    }

    pub fn reset(&mut self) {
        self.picker.reset();
        self.heart.reset();
        self.buf.clear();
    }

    fn emit(&mut self, name: &Arc<str>, out: &mut Vec<Event>) {
        for b in self.buf.drain(..) {
            let report = self.heart.beat(b.sample);
            out.push(Event::new(
                name,
                b.sample,
                EventKind::Beat {
                    probability: b.probability,
                    rr_ms: report.rr_ms,
                    bpm: report.bpm,
                },
            ));
            for (alarm, active, value) in report.alarms {
                out.push(Event::new(
                    name,
                    b.sample,
                    EventKind::Alarm {
                        name: alarm.to_string(),
                        active,
                        value,
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: BeatParams = BeatParams {
        threshold: 0.5,
        refractory: 72,
        refractory_rr: 0.0,
        refractory_max: 72,
        delay: 36,
    };

    /// The rule written as plainly as possible (same as training/ecg/evaluate.py's pick_beats).
    fn reference(p: &[f32], params: &BeatParams) -> Vec<Beat> {
        let mut beats: Vec<(usize, f32)> = Vec::new();
        let mut i = 0;
        while i < p.len() {
            if p[i] < params.threshold {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < p.len() && p[j] >= params.threshold {
                j += 1;
            }
            let mut k = i;
            for m in i..j {
                if p[m] > p[k] {
                    k = m;
                }
            }
            // the refractory period after the last beat: a share of the mean of the (up to 8) intervals
            // between the last (up to 9) beats, within [refractory, refractory_max]
            let window = if params.refractory_rr > 0.0 && beats.len() >= 2 {
                let recent = &beats[beats.len().saturating_sub(9)..];
                let mean =
                    (recent[recent.len() - 1].0 - recent[0].0) as f64 / (recent.len() - 1) as f64;
                let lo = params.refractory as f64;
                (params.refractory_rr * mean)
                    .max(lo)
                    .min((params.refractory_max as f64).max(lo))
            } else {
                params.refractory as f64
            };
            match beats.last_mut() {
                Some(last) if ((k - last.0) as f64) < window => {
                    if p[k] > last.1 {
                        *last = (k, p[k]);
                    }
                }
                _ => beats.push((k, p[k])),
            }
            i = j;
        }
        beats
            .into_iter()
            .filter(|&(k, _)| k as u64 >= params.delay)
            .map(|(k, pr)| Beat {
                sample: k as u64 - params.delay,
                probability: pr,
            })
            .collect()
    }

    #[test]
    fn two_clear_beats() {
        let mut p = vec![0.0f32; 600];
        p[100..106].copy_from_slice(&[0.6, 0.8, 0.95, 0.9, 0.7, 0.55]);
        p[400..403].copy_from_slice(&[0.7, 0.9, 0.6]);
        let beats = pick_beats(&p, &P);
        assert_eq!(beats.len(), 2);
        assert_eq!(beats[0].sample, 102 - 36);
        assert_eq!(beats[1].sample, 401 - 36);
        assert_eq!(beats[1].probability, 0.9);
    }

    #[test]
    fn a_peak_before_the_delay_is_not_a_beat_but_holds_its_refractory_period() {
        let mut p = vec![0.0f32; 300];
        p[20] = 0.9; // R peak would be at -16
        p[60] = 0.8; // within the refractory period (72) of the first and weaker: dropped
        p[200] = 0.7;
        let beats = pick_beats(&p, &P);
        assert_eq!(
            beats.iter().map(|b| b.sample).collect::<Vec<_>>(),
            [200 - 36]
        );
        let mut picker = BeatPicker::new(P);
        let mut got = Vec::new();
        picker.push(&p, &mut got);
        picker.finish(&mut got);
        assert_eq!(got, beats);
    }

    #[test]
    fn in_a_slow_rhythm_an_r_wave_replaces_the_p_wave_marked_before_it() {
        // R peaks every 400 samples (54 bpm at 360 Hz); from the fourth on, a weaker mark 97 samples (269 ms)
        // before each, as a tall P wave gives
        let r: Vec<usize> = (0..10).map(|i| 200 + 400 * i).collect();
        let mut p = vec![0.0f32; 4400];
        for (i, &k) in r.iter().enumerate() {
            p[k] = 0.9;
            if i >= 3 {
                p[k - 97] = 0.7;
            }
        }
        let fixed = BeatParams {
            refractory: 72,
            ..P
        };
        assert_eq!(pick_beats(&p, &fixed).len(), 17);
        let adaptive = BeatParams {
            refractory_rr: 0.3,
            refractory_max: 108,
            ..fixed
        };
        let got: Vec<u64> = pick_beats(&p, &adaptive).iter().map(|b| b.sample).collect();
        let want: Vec<u64> = r.iter().map(|&k| k as u64 - 36).collect();
        assert_eq!(got, want);
        assert_eq!(pick_beats(&p, &adaptive), reference(&p, &adaptive));
        // at most refractory_max: with a cap below the 97-sample gap both marks are beats again
        let capped = BeatParams {
            refractory_max: 96,
            ..adaptive
        };
        assert_eq!(pick_beats(&p, &capped).len(), 17);
    }

    #[test]
    fn refractory_max_defaults_to_300_ms_or_the_refractory_period() {
        let keys = BeatsKeys::default();
        let p = keys.resolve(360).expect("defaults resolve").params;
        assert_eq!(
            (p.refractory, p.refractory_rr, p.refractory_max),
            (72, 0.3, 108)
        );
        let long = BeatsKeys {
            refractory: Some(Length::Seconds(0.4)),
            ..keys
        };
        assert_eq!(
            long.resolve(360).expect("resolves").params.refractory_max,
            144
        );
        let short_max = BeatsKeys {
            refractory_max: Some(Length::Seconds(0.3)),
            ..long
        };
        let (key, msg) = short_max.resolve(360).expect_err("refused");
        assert_eq!(key, "refractory-max");
        assert!(msg.contains("108") && msg.contains("144"), "{msg}");
    }

    #[test]
    fn heart_rate_and_alarms() {
        let mut hr = HeartRate::new(360, 3, Some(50.0), Some(120.0));
        assert_eq!(hr.beat(0).bpm, None);
        let r = hr.beat(360);
        assert!((r.bpm.unwrap() - 60.0).abs() < 1e-9 && (r.rr_ms.unwrap() - 1000.0).abs() < 1e-9);
        hr.beat(720);
        assert!(hr.beat(1080).alarms.is_empty());
        // three slow beats (30 bpm) raise bradycardia once
        let mut raised = Vec::new();
        for k in 1..=3 {
            raised.extend(hr.beat(1080 + k * 720).alarms);
        }
        assert_eq!(raised.len(), 1);
        assert_eq!((raised[0].0, raised[0].1), ("bradycardia", true));
        // back to 150 bpm: bradycardia clears, tachycardia raises
        let mut changes = Vec::new();
        let mut t = 1080 + 3 * 720;
        for _ in 0..4 {
            t += 144;
            changes.extend(hr.beat(t).alarms);
        }
        assert!(changes.iter().any(|a| a.0 == "bradycardia" && !a.1));
        assert!(changes.iter().any(|a| a.0 == "tachycardia" && a.1));
    }

    /// `p` through a [`BeatPicker`] in blocks of the given sizes (cycled).
    fn streamed(p: &[f32], params: BeatParams, blocks: &[usize]) -> Vec<Beat> {
        let mut picker = BeatPicker::new(params);
        let mut got = Vec::new();
        let mut i = 0;
        for &n in blocks.iter().cycle() {
            if i >= p.len() {
                break;
            }
            let n = n.min(p.len() - i);
            picker.push(&p[i..i + n], &mut got);
            i += n;
        }
        picker.finish(&mut got);
        got
    }

    proptest! {
        /// Streaming equals batch equals the plain reference rule on sparse runs, whose intervals make the refractory
        /// period follow the rhythm.
        #[test]
        fn streaming_equals_batch_with_a_rhythm(
            runs in proptest::collection::vec((1usize..400, 1usize..8, 0.5f32..1.0), 0..40),
            blocks in proptest::collection::vec(1usize..300, 1..20),
            refractory in 1u64..150,
            refractory_rr in 0.05f64..0.9,
            extra in 0u64..200,
        ) {
            let mut p = Vec::new();
            for &(gap, len, top) in &runs {
                p.extend(std::iter::repeat_n(0.1f32, gap));
                p.extend((0..len).map(|j| top - 0.01 * j as f32));
            }
            let params = BeatParams {
                threshold: 0.5,
                refractory,
                refractory_rr,
                refractory_max: refractory + extra,
                delay: 36,
            };
            let want = reference(&p, &params);
            prop_assert_eq!(&pick_beats(&p, &params), &want);
            prop_assert_eq!(streamed(&p, params, &blocks), want);
        }

        /// Streaming (random block sizes) equals batch equals the plain reference rule.
        #[test]
        fn streaming_equals_batch(
            p in proptest::collection::vec(prop_oneof![3 => 0.0f32..0.45, 1 => 0.45f32..1.0], 0..2000),
            blocks in proptest::collection::vec(1usize..300, 1..20),
            refractory in 1u64..150,
            adaptive in proptest::bool::ANY,
            refractory_rr in 0.05f64..0.9,
            extra in 0u64..200,
        ) {
            let params = BeatParams {
                threshold: 0.5,
                refractory,
                refractory_rr: if adaptive { refractory_rr } else { 0.0 },
                refractory_max: refractory + extra,
                delay: 36,
            };
            let want = reference(&p, &params);
            prop_assert_eq!(&pick_beats(&p, &params), &want);
            prop_assert_eq!(streamed(&p, params, &blocks), want);
        }
    }
}
