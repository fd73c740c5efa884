//! `Framer`: cuts a stream pushed in blocks of any size into windows of `window` samples every `hop` samples.

/// Window/hop framing over a stream. Frame `n` covers stream samples `[n·hop, n·hop + window)`; a frame is
/// complete once its last sample has been pushed. Storage is preallocated; pushing never allocates.
#[derive(Debug, Clone)]
pub struct Framer {
    window: usize,
    hop: usize,
    buf: Vec<f32>,
    /// Valid samples in `buf` (the newest `filled` samples of the stream).
    filled: usize,
    /// Samples still to skip before the next frame starts (when hop > window).
    skip: usize,
    /// Index of the next frame.
    next_frame: u64,
}

impl Framer {
    /// A framer for `window`-sample frames every `hop` samples (both ≥ 1).
    pub fn new(window: usize, hop: usize) -> Self {
        assert!(window > 0 && hop > 0, "window and hop must be positive");
        Framer {
            window,
            hop,
            buf: vec![0.0; window],
            filled: 0,
            skip: 0,
            next_frame: 0,
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Push samples; `on_frame(index, frame)` is called for each frame completed, in order.
    pub fn push(&mut self, mut samples: &[f32], mut on_frame: impl FnMut(u64, &[f32])) {
        while !samples.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(samples.len());
                self.skip -= n;
                samples = &samples[n..];
                continue;
            }
            let n = (self.window - self.filled).min(samples.len());
            self.buf[self.filled..self.filled + n].copy_from_slice(&samples[..n]);
            self.filled += n;
            samples = &samples[n..];
            if self.filled == self.window {
                on_frame(self.next_frame, &self.buf);
                self.next_frame += 1;
                if self.hop < self.window {
                    self.buf.copy_within(self.hop.., 0);
                    self.filled = self.window - self.hop;
                } else {
                    self.filled = 0;
                    self.skip = self.hop - self.window;
                }
            }
        }
    }

    /// Forget all buffered samples and restart frame numbering.
    pub fn reset(&mut self) {
        self.filled = 0;
        self.skip = 0;
        self.next_frame = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch_frames(x: &[f32], window: usize, hop: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start + window <= x.len() {
            out.push(x[start..start + window].to_vec());
            start += hop;
        }
        out
    }

    proptest! {
        #[test]
        fn streaming_framing_equals_batch(
            window in 1usize..40, hop in 1usize..50, len in 0usize..400,
            chunks in proptest::collection::vec(1usize..37, 1..60),
        ) {
            let x: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let mut f = Framer::new(window, hop);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut ci = 0;
            while pos < len {
                let n = chunks[ci % chunks.len()].min(len - pos);
                f.push(&x[pos..pos + n], |i, fr| got.push((i, fr.to_vec())));
                pos += n;
                ci += 1;
            }
            let want = batch_frames(&x, window, hop);
            prop_assert_eq!(got.len(), want.len());
            for (k, (i, fr)) in got.iter().enumerate() {
                prop_assert_eq!(*i, k as u64);
                prop_assert_eq!(fr, &want[k]);
            }
        }
    }
}
