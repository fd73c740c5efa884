//! Inverse short-time Fourier transform with "same" padding, batch and streaming.
//!
//! Frame `t` of `T` one-sided spectra (`n_fft / 2 + 1` bins) becomes `irfft(spectrum, n_fft) / n_fft · w` with the
//! periodic Hann window `w`, overlap-added at `t · hop`. The sum is divided by the window envelope `Σ_t w²(u − t·hop)`
//! and `pad = (n_fft − hop) / 2` samples are cut from both ends, so `T` frames give exactly `T · hop` samples
//! (the convention of a vocoder head that pads "same" like a convolution, rather than `center=True`).
//! The imaginary parts of the DC and Nyquist bins are ignored, as in any real inverse FFT.
//!
//! [`IstftStream`] takes the spectra one frame at a time and hands out each sample as soon as no later frame can
//! change it (after frame `t`, the samples before `(t + 1) · hop − pad`); [`Istft::batch`] is its batch twin.

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner};
use std::sync::Arc;

/// The transform's parameters and its inverse-FFT plan.
pub struct Istft {
    n_fft: usize,
    hop: usize,
    pad: usize,
    window: Vec<f32>,
    inverse: Arc<dyn ComplexToReal<f32>>,
}

/// Buffers of one inverse FFT.
struct FrameBuffers {
    spectrum: Vec<Complex<f32>>,
    signal: Vec<f32>,
    scratch: Vec<Complex<f32>>,
}

impl Istft {
    /// An ISTFT of window length `n_fft` (the FFT size) and hop `hop`. Needs `0 < hop < n_fft` and `n_fft − hop`
    /// even (so the trimmed output is exactly `hop` samples per frame). With these, the Hann envelope is positive
    /// at every kept sample: each lies strictly inside at least one frame.
    pub fn new(n_fft: usize, hop: usize) -> Result<Istft, String> {
        if hop == 0 || hop >= n_fft {
            return Err(format!(
                "ISTFT needs 0 < hop < n_fft, got hop {hop}, n_fft {n_fft}"
            ));
        }
        if !(n_fft - hop).is_multiple_of(2) {
            return Err(format!(
                "ISTFT 'same' padding needs n_fft − hop even, got n_fft {n_fft}, hop {hop}"
            ));
        }
        let window = (0..n_fft)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos()) as f32
            })
            .collect();
        Ok(Istft {
            n_fft,
            hop,
            pad: (n_fft - hop) / 2,
            window,
            inverse: RealFftPlanner::<f32>::new().plan_fft_inverse(n_fft),
        })
    }

    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Bins of one spectrum: `n_fft / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// The periodic Hann window.
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    fn buffers(&self) -> FrameBuffers {
        FrameBuffers {
            spectrum: self.inverse.make_input_vec(),
            signal: self.inverse.make_output_vec(),
            scratch: self.inverse.make_scratch_vec(),
        }
    }

    /// The windowed frame `irfft(spectrum) / n_fft · w` into `b.signal`.
    fn windowed_frame(&self, spectrum: &[Complex<f32>], b: &mut FrameBuffers) {
        b.spectrum.copy_from_slice(spectrum);
        let last = b.spectrum.len() - 1;
        b.spectrum[0].im = 0.0;
        if self.n_fft.is_multiple_of(2) {
            b.spectrum[last].im = 0.0;
        }
        // The buffers come from the plan and the DC / Nyquist imaginary parts are zero: processing cannot fail.
        let _ = self
            .inverse
            .process_with_scratch(&mut b.spectrum, &mut b.signal, &mut b.scratch);
        let scale = 1.0 / self.n_fft as f32;
        for (s, &w) in b.signal.iter_mut().zip(&self.window) {
            *s *= scale * w;
        }
    }

    /// `frames` spectra (`frames × bins`, frame-major) → `frames · hop` samples.
    ///
    /// Panics if `spectra` does not hold `frames × bins` values.
    pub fn batch(&self, spectra: &[Complex<f32>], frames: usize) -> Vec<f32> {
        let bins = self.bins();
        assert_eq!(spectra.len(), frames * bins, "ISTFT input shape");
        if frames == 0 {
            return Vec::new();
        }
        let total = (frames - 1) * self.hop + self.n_fft;
        let mut sum = vec![0f32; total];
        let mut envelope = vec![0f32; total];
        let mut b = self.buffers();
        for t in 0..frames {
            self.windowed_frame(&spectra[t * bins..(t + 1) * bins], &mut b);
            let at = t * self.hop;
            for (i, (&s, &w)) in b.signal.iter().zip(&self.window).enumerate() {
                sum[at + i] += s;
                envelope[at + i] += w * w;
            }
        }
        (self.pad..total - self.pad)
            .map(|u| sum[u] / envelope[u])
            .collect()
    }

    /// A streaming twin of [`Istft::batch`].
    pub fn stream(&self) -> IstftStream<'_> {
        IstftStream {
            istft: self,
            buffers: self.buffers(),
            sum: Vec::new(),
            envelope: Vec::new(),
            base: 0,
            frames: 0,
        }
    }
}

/// The overlap-add state of a stream: the samples that later frames still add to.
pub struct IstftStream<'a> {
    istft: &'a Istft,
    buffers: FrameBuffers,
    /// Overlap-added samples and window envelope from untrimmed index `base` on.
    sum: Vec<f32>,
    envelope: Vec<f32>,
    base: usize,
    frames: usize,
}

impl IstftStream<'_> {
    /// Frames pushed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Add the next frame's spectrum (`bins` values) and append the samples that became final to `out`.
    ///
    /// Panics if `spectrum` does not hold `bins` values.
    pub fn push(&mut self, spectrum: &[Complex<f32>], out: &mut Vec<f32>) {
        let ist = self.istft;
        assert_eq!(spectrum.len(), ist.bins(), "ISTFT frame size");
        ist.windowed_frame(spectrum, &mut self.buffers);
        let at = self.frames * ist.hop - self.base;
        let end = at + ist.n_fft;
        if self.sum.len() < end {
            self.sum.resize(end, 0.0);
            self.envelope.resize(end, 0.0);
        }
        for (i, (&s, &w)) in self.buffers.signal.iter().zip(&ist.window).enumerate() {
            self.sum[at + i] += s;
            self.envelope[at + i] += w * w;
        }
        self.frames += 1;
        // No later frame reaches below untrimmed index frames · hop.
        self.emit(self.frames * ist.hop, out);
    }

    /// Append the remaining samples (up to `frames · hop` in all) to `out` and start a new stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let ist = self.istft;
        if self.frames > 0 {
            self.emit(self.frames * ist.hop + ist.pad, out);
        }
        self.sum.clear();
        self.envelope.clear();
        self.base = 0;
        self.frames = 0;
    }

    /// Emit the kept samples of untrimmed indices `[base, upto)` and drop them from the buffers.
    fn emit(&mut self, upto: usize, out: &mut Vec<f32>) {
        let pad = self.istft.pad;
        let start = self.base.max(pad);
        if upto <= start {
            return;
        }
        for u in start..upto {
            out.push(self.sum[u - self.base] / self.envelope[u - self.base]);
        }
        let drop = upto - self.base;
        self.sum.drain(..drop);
        self.envelope.drain(..drop);
        self.base = upto;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_parameters() {
        assert!(Istft::new(64, 0).is_err());
        assert!(Istft::new(64, 64).is_err());
        assert!(Istft::new(64, 15).is_err());
        assert!(Istft::new(64, 16).is_ok());
    }

    #[test]
    fn output_length_is_frames_times_hop() {
        let ist = Istft::new(1280, 320).unwrap();
        for frames in [1usize, 2, 5] {
            let spec = vec![Complex::new(1.0f32, 0.0); frames * ist.bins()];
            assert_eq!(ist.batch(&spec, frames).len(), frames * 320);
        }
    }
}
