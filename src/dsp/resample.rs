//! Streaming sample-rate conversion of a mono f32 signal (rubato's windowed-sinc resampler) with its delay removed.
//!
//! [`StreamResampler`] accepts blocks of any size and appends the converted samples to the caller's vector. Its
//! output is aligned with its input: output sample `k` is the input signal evaluated at input time
//! `k · from / to`, and after [`StreamResampler::finish`] the whole stream has `round(total_in · to / from)`
//! samples. Feeding a signal in one block or in many blocks of any sizes gives bit-identical output.
//!
//! # Filter
//! rubato's asynchronous sinc interpolator, used at a fixed ratio:
//! - sinc length 256 taps (at the input rate; 128 samples of look-ahead), Blackman-Harris² window;
//! - cut-off chosen by rubato for that length and window (0.947 of the lower Nyquist frequency), scaled down to
//!   the output Nyquist frequency when downsampling;
//! - 256 pre-computed sub-sample phases with cubic interpolation between them.
//!
//! A 1 kHz tone converted from 44.1, 48 or 22.05 kHz to 16 kHz keeps spurious content below −60 dB (see
//! `tests/resample.rs`); the stop-band of this filter is well below that.
//!
//! # Delay compensation
//! The interpolator places output `j` (counting every output it ever produced) at input position
//! `(j + 1) · from/to − L/2`, with `L` the sinc length. Prepending `z` zero samples and dropping the first `D`
//! outputs moves output `k = j − D` to input time `k · from/to` exactly when `z = (D + 1) · from/to − L/2` is a
//! whole number; the smallest such `D + 1` is a multiple of `to / gcd(from, to)`. Both happen at start-up only:
//! the zeros are fed at once and the dropped outputs never leave the resampler, so no latency is added beyond the
//! filter's own look-ahead plus the fill of one internal chunk. What remains is the interpolator's own sub-phase
//! offset of 1/256 of an input sample (a click lands within 0.004 input samples of its time).

use crate::error::{Error, Result};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Indexing, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// Length of the windowed-sinc filter, in input samples.
const SINC_LEN: usize = 256;
/// Number of pre-computed sub-sample phases of the sinc.
const OVERSAMPLING: usize = 256;

/// Streaming resampler for one mono signal; see the [module documentation](self).
pub struct StreamResampler {
    from: u32,
    to: u32,
    engine: Option<Engine>,
}

/// The converting state (absent for a passthrough).
struct Engine {
    rs: Async<f32>,
    /// Input frames per rubato call (fixed).
    chunk: usize,
    /// Partial chunk waiting for more input (capacity `chunk`).
    pending: Vec<f32>,
    /// rubato writes each call's output here (capacity `output_frames_max`).
    scratch: Vec<f32>,
    /// Zero samples fed before the first input sample (delay compensation).
    lead_zeros: usize,
    /// Outputs dropped at start-up (delay compensation).
    drop_outputs: usize,
    /// Outputs still to drop.
    to_drop: usize,
    /// Whether the lead zeros have been fed.
    primed: bool,
    /// Real input samples consumed since the start of the stream.
    total_in: u64,
    /// Samples appended to the caller's output since the start of the stream.
    total_out: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz. Equal rates make a passthrough. Errors if a rate is zero.
    pub fn new(from: u32, to: u32) -> Result<Self> {
        if from == 0 || to == 0 {
            return Err(Error::Other(format!(
                "resampler: sample rates must be positive (from {from} Hz to {to} Hz)"
            )));
        }
        if from == to {
            return Ok(StreamResampler {
                from,
                to,
                engine: None,
            });
        }
        let ratio = to as f64 / from as f64;
        let params = SincInterpolationParameters::new(SINC_LEN, WindowFunction::BlackmanHarris2)
            .oversampling_factor(OVERSAMPLING)
            .interpolation(SincInterpolationType::Cubic);
        // About 10 ms of input per call, at least 64 frames.
        let chunk = ((from as usize) / 100).max(64);
        let rs = Async::<f32>::new_sinc(ratio, 1.0, &params, chunk, 1, FixedAsync::Input)
            .map_err(|e| Error::Other(format!("resampler {from} Hz -> {to} Hz: {e}")))?;
        let g = gcd(from as u64, to as u64);
        let (from_r, to_r) = (from as u64 / g, to as u64 / g);
        let half = (SINC_LEN / 2) as u64;
        let m = half.div_ceil(from_r).max(1);
        let lead_zeros = (m * from_r - half) as usize;
        let drop_outputs = (m * to_r - 1) as usize;
        let scratch = vec![0.0; rs.output_frames_max()];
        Ok(StreamResampler {
            from,
            to,
            engine: Some(Engine {
                rs,
                chunk,
                pending: Vec::with_capacity(chunk),
                scratch,
                lead_zeros,
                drop_outputs,
                to_drop: drop_outputs,
                primed: false,
                total_in: 0,
                total_out: 0,
            }),
        })
    }

    /// Output rate divided by input rate.
    pub fn ratio(&self) -> f64 {
        self.to as f64 / self.from as f64
    }

    /// Input rate (Hz).
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate (Hz).
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Whether this resampler only copies (equal rates).
    pub fn is_passthrough(&self) -> bool {
        self.engine.is_none()
    }

    /// Convert the next block (any length, including 0) and append the output samples that are now complete.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        match &mut self.engine {
            None => out.extend_from_slice(input),
            Some(e) => e.process(input, out),
        }
    }

    /// End of stream: flush the tail so that the stream's total output is `round(total_in · to / from)`, then
    /// start over as if newly built.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let (from, to) = (self.from as u128, self.to as u128);
        if let Some(e) = &mut self.engine {
            let total = (e.total_in as u128 * to * 2 + from) / (2 * from);
            e.finish(total as u64, out);
            e.reset();
        }
    }

    /// Forget all state, as if newly built.
    pub fn reset(&mut self) {
        if let Some(e) = &mut self.engine {
            e.reset();
        }
    }
}

impl Engine {
    fn reset(&mut self) {
        self.rs.reset();
        self.pending.clear();
        self.to_drop = self.drop_outputs;
        self.primed = false;
        self.total_in = 0;
        self.total_out = 0;
    }

    /// Feed the start-up zeros once, before the first real sample.
    fn prime(&mut self, out: &mut Vec<f32>) {
        if self.primed {
            return;
        }
        self.primed = true;
        let mut left = self.lead_zeros;
        while left > 0 {
            let n = left.min(self.chunk - self.pending.len());
            self.pending.resize(self.pending.len() + n, 0.0);
            left -= n;
            if self.pending.len() == self.chunk {
                self.run_pending(None, out);
            }
        }
    }

    fn process(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        if input.is_empty() {
            return;
        }
        self.prime(out);
        self.total_in += input.len() as u64;
        // Complete a partial chunk first.
        if !self.pending.is_empty() {
            let n = input.len().min(self.chunk - self.pending.len());
            self.pending.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.pending.len() == self.chunk {
                self.run_pending(None, out);
            }
        }
        // Whole chunks straight from the caller's slice.
        while input.len() >= self.chunk {
            let (head, rest) = input.split_at(self.chunk);
            self.run(head, None, out);
            input = rest;
        }
        self.pending.extend_from_slice(input);
    }

    /// Run rubato on the pending chunk (`partial` = number of real frames when padding with zeros).
    fn run_pending(&mut self, partial: Option<usize>, out: &mut Vec<f32>) {
        let pending = std::mem::take(&mut self.pending);
        self.run(&pending, partial, out);
        self.pending = pending;
        self.pending.clear();
    }

    /// Run rubato on one chunk and append what survives the start-up drop.
    fn run(&mut self, chunk: &[f32], partial: Option<usize>, out: &mut Vec<f32>) {
        let frames = chunk.len();
        // Sizes are fixed at construction, so these cannot fail; an error would be a bug in this wrapper.
        let input = InterleavedSlice::new(chunk, 1, frames)
            .expect("mono slice adapter over its own length");
        let out_frames = self.scratch.len();
        let mut output = InterleavedSlice::new_mut(&mut self.scratch[..], 1, out_frames)
            .expect("mono slice adapter over its own length");
        let indexing = partial.map(|n| Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len: Some(n),
            active_channels_mask: None,
        });
        let (_, produced) = self
            .rs
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .expect("chunk and output sizes match the resampler's configuration");
        let skip = self.to_drop.min(produced);
        self.to_drop -= skip;
        out.extend_from_slice(&self.scratch[skip..produced]);
        self.total_out += (produced - skip) as u64;
    }

    fn finish(&mut self, total: u64, out: &mut Vec<f32>) {
        if self.total_in == 0 {
            return;
        }
        let start = out.len();
        let start_total = self.total_out;
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.pending.resize(self.chunk, 0.0);
            self.run_pending(Some(n), out);
        }
        let empty: [f32; 0] = [];
        while self.total_out < total {
            self.run(&empty, Some(0), out);
        }
        out.truncate(start + (total - start_total) as usize);
        self.total_out = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_near_nyquist() {
        // The value the module documentation states.
        let c = rubato::calculate_cutoff::<f32>(SINC_LEN, WindowFunction::BlackmanHarris2);
        assert!((c - 0.947).abs() < 0.001, "{c}");
    }

    #[test]
    fn passthrough_copies() {
        let mut r = StreamResampler::new(16_000, 16_000).unwrap();
        let mut out = Vec::new();
        r.process(&[1.0, 2.0], &mut out);
        r.finish(&mut out);
        assert_eq!(out, vec![1.0, 2.0]);
        assert!(r.is_passthrough());
    }

    #[test]
    fn zero_rate_is_refused() {
        let e = StreamResampler::new(0, 16_000).err().unwrap().to_string();
        assert!(e.contains("positive"), "{e}");
    }

    #[test]
    fn lead_and_drop_make_whole_numbers() {
        for (from, to) in [(44_100u32, 16_000u32), (48_000, 16_000), (16_000, 48_000)] {
            let r = StreamResampler::new(from, to).unwrap();
            let e = r.engine.as_ref().unwrap();
            let lhs = (e.lead_zeros + SINC_LEN / 2) as u64 * to as u64;
            assert_eq!(lhs, (e.drop_outputs as u64 + 1) * from as u64);
        }
    }
}
