//! Voice-activity segmentation of per-chunk speech probabilities (Silero VAD and alike).
//!
//! The rules are those of the reference package's `get_speech_timestamps`: speech starts at the first chunk whose
//! probability reaches `threshold`; it ends at the first chunk below `neg_threshold` once the probability has stayed
//! below `threshold` for `min_silence` samples; segments not longer than `min_speech` are dropped; kept segments are
//! widened by `speech_pad` on both sides. [`speech_segments`] is the batch form, [`VadSegmenter`] the streaming
//! form; they agree whenever `min_silence ≥ 2 · speech_pad` (the only case in which padding never has to wait for
//! the next segment), which [`VadParams::check`] requires.

/// Segmentation parameters, in samples at the model rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadParams {
    pub threshold: f32,
    pub neg_threshold: f32,
    pub min_speech: u64,
    pub min_silence: u64,
    pub speech_pad: u64,
    /// Samples per probability (the model's chunk).
    pub chunk: u64,
}

impl VadParams {
    /// The reference package's default `neg_threshold` for a given `threshold`.
    pub fn default_neg_threshold(threshold: f32) -> f32 {
        (threshold - 0.15).max(0.01)
    }

    /// Why these parameters cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!("threshold {} must be in (0, 1)", self.threshold));
        }
        if !(self.neg_threshold > 0.0 && self.neg_threshold <= self.threshold) {
            return Err(format!(
                "neg-threshold {} must be in (0, threshold]",
                self.neg_threshold
            ));
        }
        if self.min_silence < 2 * self.speech_pad {
            return Err(format!(
                "min-silence ({} samples) must be at least twice speech-pad ({} samples) so a segment's end is \
                 final when it is emitted",
                self.min_silence, self.speech_pad
            ));
        }
        if self.chunk == 0 {
            return Err("chunk must not be zero".into());
        }
        Ok(())
    }
}

/// A speech segment `[start, end)` in samples, padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
}

/// Batch segmentation of `probs` (one per chunk) for a signal of `len` samples.
pub fn speech_segments(probs: &[f32], len: u64, p: &VadParams) -> Vec<Segment> {
    let w = p.chunk;
    let mut raw: Vec<Segment> = Vec::new();
    let mut start: Option<u64> = None;
    let mut temp_end: Option<u64> = None;
    for (i, &prob) in probs.iter().enumerate() {
        let pos = w * i as u64;
        if prob >= p.threshold && temp_end.is_some() {
            temp_end = None;
        }
        let Some(s) = start else {
            if prob >= p.threshold {
                start = Some(pos);
            }
            continue;
        };
        if prob < p.neg_threshold {
            let te = *temp_end.get_or_insert(pos);
            if pos - te >= p.min_silence {
                if te - s > p.min_speech {
                    raw.push(Segment { start: s, end: te });
                }
                start = None;
                temp_end = None;
            }
        }
    }
    if let Some(s) = start {
        if len.saturating_sub(s) > p.min_speech {
            raw.push(Segment { start: s, end: len });
        }
    }
    let n = raw.len();
    let pad = p.speech_pad;
    for i in 0..n {
        if i == 0 {
            raw[i].start = raw[i].start.saturating_sub(pad);
        }
        if i + 1 < n {
            let silence = raw[i + 1].start - raw[i].end;
            if silence < 2 * pad {
                raw[i].end += silence / 2;
                raw[i + 1].start = raw[i + 1].start.saturating_sub(silence / 2);
            } else {
                raw[i].end = (raw[i].end + pad).min(len);
                raw[i + 1].start = raw[i + 1].start.saturating_sub(pad);
            }
        } else {
            raw[i].end = (raw[i].end + pad).min(len);
        }
    }
    raw
}

/// What the streaming segmenter reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VadEvent {
    /// Speech began at `sample` (padded); `probability` of the chunk that started it.
    Start { sample: u64, probability: f32 },
    /// The segment that began at `start` ended at `sample` (padded).
    End { start: u64, sample: u64 },
}

/// Streaming segmentation: feed one probability per chunk, get start/end events as soon as they are certain.
#[derive(Debug, Clone)]
pub struct VadSegmenter {
    p: VadParams,
    index: u64,
    start: Option<(u64, f32)>,
    temp_end: Option<u64>,
    /// Whether the current segment's start has been emitted (it is long enough to be kept).
    announced: bool,
}

impl VadSegmenter {
    pub fn new(p: VadParams) -> Self {
        VadSegmenter {
            p,
            index: 0,
            start: None,
            temp_end: None,
            announced: false,
        }
    }

    pub fn reset(&mut self) {
        *self = VadSegmenter::new(self.p);
    }

    /// Whether a segment is open (started and announced).
    pub fn in_speech(&self) -> bool {
        self.announced
    }

    fn announce(&mut self, out: &mut Vec<VadEvent>) {
        if let (false, Some((s, prob))) = (self.announced, self.start) {
            self.announced = true;
            out.push(VadEvent::Start {
                sample: s.saturating_sub(self.p.speech_pad),
                probability: prob,
            });
        }
    }

    /// The probability of the next chunk. `available` is how many samples of the signal exist after this chunk
    /// started (the chunk length, or less for a zero-padded final chunk).
    pub fn push(&mut self, prob: f32, available: u64, out: &mut Vec<VadEvent>) {
        let p = self.p;
        let pos = p.chunk * self.index;
        self.index += 1;
        if prob >= p.threshold && self.temp_end.is_some() {
            self.temp_end = None;
        }
        let Some((s, _)) = self.start else {
            if prob >= p.threshold {
                self.start = Some((pos, prob));
                self.announced = false;
                // A segment that cannot end before `pos + available` is kept once that is long enough.
                if available > p.min_speech {
                    self.announce(out);
                }
            }
            return;
        };
        if prob < p.neg_threshold {
            let te = *self.temp_end.get_or_insert(pos);
            if pos - te >= p.min_silence {
                if te - s > p.min_speech {
                    self.announce(out);
                    out.push(VadEvent::End {
                        start: s.saturating_sub(p.speech_pad),
                        sample: te + p.speech_pad,
                    });
                }
                self.start = None;
                self.temp_end = None;
                self.announced = false;
                return;
            }
        }
        // While no silence is pending, the segment will end no earlier than the end of this chunk.
        if self.temp_end.is_none() && pos + available - s > p.min_speech {
            self.announce(out);
        }
    }

    /// End of a signal of `len` samples: close an open segment.
    pub fn finish(&mut self, len: u64, out: &mut Vec<VadEvent>) {
        if let Some((s, _)) = self.start {
            if len.saturating_sub(s) > self.p.min_speech {
                self.announce(out);
                out.push(VadEvent::End {
                    start: s.saturating_sub(self.p.speech_pad),
                    sample: len,
                });
            }
        }
        self.start = None;
        self.temp_end = None;
        self.announced = false;
    }
}

/// Run the streaming segmenter over all of `probs` and collect its segments (used by tests and evaluation).
pub fn stream_segments(probs: &[f32], len: u64, p: &VadParams) -> (Vec<Segment>, Vec<VadEvent>) {
    let mut seg = VadSegmenter::new(*p);
    let mut events = Vec::new();
    for (i, &prob) in probs.iter().enumerate() {
        let pos = p.chunk * i as u64;
        let available = len.saturating_sub(pos).min(p.chunk);
        seg.push(prob, available, &mut events);
    }
    seg.finish(len, &mut events);
    let segments = events
        .iter()
        .filter_map(|e| match *e {
            VadEvent::End { start, sample } => Some(Segment { start, end: sample }),
            VadEvent::Start { .. } => None,
        })
        .collect();
    (segments, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(min_speech: u64, min_silence: u64, pad: u64) -> VadParams {
        VadParams {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech,
            min_silence,
            speech_pad: pad,
            chunk: 512,
        }
    }

    #[test]
    fn one_clear_segment() {
        let mut probs = vec![0.0f32; 40];
        for p in &mut probs[10..25] {
            *p = 0.9;
        }
        let len = 40 * 512;
        let p = params(4000, 1600, 480);
        let segs = speech_segments(&probs, len, &p);
        assert_eq!(
            segs,
            vec![Segment {
                start: 10 * 512 - 480,
                end: 25 * 512 + 480
            }]
        );
        let (stream, events) = stream_segments(&probs, len, &p);
        assert_eq!(stream, segs);
        assert!(matches!(events[0], VadEvent::Start { sample, .. } if sample == 10 * 512 - 480));
    }

    #[test]
    fn short_bursts_are_dropped() {
        let mut probs = vec![0.0f32; 40];
        probs[10] = 0.9;
        probs[11] = 0.9;
        let p = params(4000, 1600, 480);
        assert!(speech_segments(&probs, 40 * 512, &p).is_empty());
        let (segs, events) = stream_segments(&probs, 40 * 512, &p);
        assert!(segs.is_empty() && events.is_empty(), "{events:?}");
    }

    #[test]
    fn open_segment_closes_at_end_of_signal() {
        let mut probs = vec![0.0f32; 20];
        for p in &mut probs[5..] {
            *p = 0.8;
        }
        let len = 20 * 512 - 100;
        let p = params(4000, 1600, 480);
        let segs = speech_segments(&probs, len, &p);
        assert_eq!(
            segs,
            vec![Segment {
                start: 5 * 512 - 480,
                end: len
            }]
        );
        assert_eq!(stream_segments(&probs, len, &p).0, segs);
    }

    #[test]
    fn min_silence_below_twice_pad_is_refused() {
        assert!(params(4000, 900, 480).check().is_err());
        assert!(params(4000, 1600, 480).check().is_ok());
    }

    proptest! {
        /// Streaming equals batch: same segments, starts announced before their ends, in order.
        #[test]
        fn streaming_equals_batch(
            probs in proptest::collection::vec(prop_oneof![0.0f32..0.3, 0.3f32..0.6, 0.6f32..1.0], 0..200),
            tail in 0u64..512,
            min_speech in 0u64..6000,
            pad in 0u64..1000,
            extra_silence in 0u64..3000,
        ) {
            let p = params(min_speech, 2 * pad + extra_silence, pad);
            let len = (probs.len() as u64 * 512).saturating_sub(tail);
            let batch = speech_segments(&probs, len, &p);
            let (stream, events) = stream_segments(&probs, len, &p);
            prop_assert_eq!(&stream, &batch);
            let mut open = None;
            for e in events {
                match e {
                    VadEvent::Start { sample, .. } => { prop_assert!(open.is_none()); open = Some(sample); }
                    VadEvent::End { start, .. } => { prop_assert_eq!(open.take(), Some(start)); }
                }
            }
            prop_assert!(open.is_none());
        }
    }
}
