//! LFM2-Audio's detokenizer: audio codes (8 per 80 ms frame) → 24 kHz waveform.
//!
//! 1. fused embedding: the *mean* over the 8 codebooks of the rows `code + codebook · 2048` of `emb.emb` (the
//!    backbone's feedback embedding sums instead, with offsets of 2049);
//! 2. ×6 nearest upsampling: each frame's vector is repeated for 6 positions (a 13.33 ms position);
//! 3. a small LFM2 (`lfm.*`) over the positions, its attention layers limited to the last `sliding_window`
//!    positions (30 unless `config.json` says otherwise);
//! 4. `lin`: 1282 values per position, the log-magnitudes and then the phases of 641 bins;
//! 5. ISTFT (n_fft 1280, hop 320, Hann, "same" padding): 320 samples per position, 1920 per frame.
//!
//! Every step up to the ISTFT is causal, so [`DetokenizerStream`] runs the LFM2 position by position with its
//! cache and hands out the samples no later frame changes; only the last 480 samples wait for [`finish`].
//!
//! [`finish`]: DetokenizerStream::finish

use crate::dsp::istft::{Istft, IstftStream};
use crate::kernels::matmul::matmul;
use crate::kernels::pool::ThreadPool;
use crate::kernels::quant::{DType, QuantActs, Weights};
use crate::s2s::lfm2::{Config, Lfm2, Lfm2ConfigFile, Lfm2State};
use crate::s2s::random_weights::WeightRng;
use crate::s2s::weights::Checkpoint;
use crate::{Error, Result};
use realfft::num_complex::Complex;
use std::path::Path;
use std::sync::Arc;

/// Codebooks per frame.
pub const CODEBOOKS: usize = 8;
/// Codes per codebook (end-of-audio is not a detokenizer input).
pub const CODES: usize = 2048;
/// LFM2 positions per frame.
pub const UPSAMPLE: usize = 6;
pub const N_FFT: usize = 1280;
pub const HOP: usize = 320;
/// Output samples per frame.
pub const SAMPLES_PER_FRAME: usize = UPSAMPLE * HOP;
pub const SAMPLE_RATE: u32 = 24_000;
/// The attention window when `config.json` gives none.
pub const DEFAULT_SLIDING_WINDOW: usize = 30;
const BINS: usize = N_FFT / 2 + 1;

/// The detokenizer's weights and transforms.
pub struct Detokenizer {
    lfm: Lfm2,
    /// `CODEBOOKS · CODES` rows of the LFM2 width.
    emb: Weights,
    /// `2 · BINS × hidden`, kept in f32: its log-magnitudes are exponentiated.
    lin: Weights,
    lin_bias: Vec<f32>,
    istft: Istft,
}

impl Detokenizer {
    /// Load `dir/config.json` (an LFM2 config; `sliding_attention` layers are attention layers) and
    /// `dir/model.safetensors` (`emb.emb.weight`, `lfm.*`, `lin.weight`, `lin.bias`).
    pub fn load(dir: &Path, dtype: DType, threads: usize) -> Result<Detokenizer> {
        let mut cfg = Config::from_file(&dir.join("config.json"))?;
        cfg.sliding_window.get_or_insert(DEFAULT_SLIDING_WINDOW);
        let ck = Checkpoint::open(dir)?;
        let h = cfg.hidden;
        let lfm = Lfm2::load_prefixed(&ck, "lfm", cfg, dtype, threads)?;
        let emb_name = "emb.emb.weight";
        let emb_dtype = match ck.raw(emb_name)?.dtype {
            safetensors::Dtype::BF16 => DType::Bf16,
            _ => DType::F32,
        };
        Detokenizer::from_parts(
            lfm,
            ck.matrix(emb_name, CODEBOOKS * CODES, h, emb_dtype)?,
            ck.matrix("lin.weight", 2 * BINS, h, DType::F32)?,
            ck.f32("lin.bias", &[2 * BINS])?,
        )
    }

    /// Random weights with the shape of LFM2-Audio-1.5B's detokenizer (for benchmarks): width 512, 8 layers
    /// `conv conv attn conv attn conv attn conv` (16 heads, 8 key/value heads, window 30), SwiGLU 2304.
    pub fn random(dtype: DType, threads: usize, seed: u64) -> Result<Detokenizer> {
        let f = Lfm2ConfigFile {
            // The LFM2's token embedding is never used: keep it one row.
            vocab_size: 1,
            hidden_size: 512,
            intermediate_size: None,
            block_ff_dim: Some(2304),
            num_hidden_layers: 8,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            head_dim: None,
            norm_eps: Some(1e-5),
            rope_theta: Some(1_000_000.0),
            conv_bias: Some(false),
            conv_l_cache: Some(3),
            block_multiple_of: Some(256),
            block_ffn_dim_multiplier: Some(1.0),
            block_auto_adjust_ff_dim: Some(false),
            full_attn_idxs: None,
            layer_types: Some(
                [
                    "conv",
                    "conv",
                    "sliding_attention",
                    "conv",
                    "sliding_attention",
                    "conv",
                    "sliding_attention",
                    "conv",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            tie_word_embeddings: Some(true),
            tie_embedding: None,
            sliding_window: Some(DEFAULT_SLIDING_WINDOW),
        };
        let cfg = Config::from_config_file(&f).map_err(Error::Model)?;
        let h = cfg.hidden;
        let lfm = Lfm2::random(cfg, dtype, threads, seed)?;
        let mut rng = WeightRng::new(seed ^ 0xDE70_4E11);
        Detokenizer::from_parts(
            lfm,
            rng.matrix(CODEBOOKS * CODES, h, DType::Bf16)?,
            rng.matrix(2 * BINS, h, DType::F32)?,
            rng.vector(2 * BINS, 0.01),
        )
    }

    fn from_parts(
        lfm: Lfm2,
        emb: Weights,
        lin: Weights,
        lin_bias: Vec<f32>,
    ) -> Result<Detokenizer> {
        Ok(Detokenizer {
            lfm,
            emb,
            lin,
            lin_bias,
            istft: Istft::new(N_FFT, HOP).map_err(Error::Model)?,
        })
    }

    /// Run every kernel of the detokenizer on `pool` (shared with the other parts of a speech model, so one set of
    /// worker threads serves them all).
    pub fn use_pool(&mut self, pool: Arc<ThreadPool>) {
        self.lfm.use_pool(pool);
    }

    /// The LFM2's configuration (width, layers, window).
    pub fn lfm_config(&self) -> &Config {
        &self.lfm.cfg
    }

    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    /// `frames` frames of 8 codes (`frames × 8`, frame-major, each code below 2048) → `frames · 1920` samples.
    pub fn decode(&self, codes: &[u32], frames: usize) -> Result<Vec<f32>> {
        if codes.len() != frames * CODEBOOKS {
            return Err(Error::Model(format!(
                "detokenizer: {} codes given for {frames} frames of {CODEBOOKS}",
                codes.len()
            )));
        }
        let mut x = Vec::new();
        for (t, frame) in codes.chunks_exact(CODEBOOKS).enumerate() {
            self.embed_frame(frame, t, &mut x)?;
        }
        let n = frames * UPSAMPLE;
        let mut st = self.lfm.new_state(n);
        let mut hidden = Vec::new();
        self.lfm
            .forward_embeds(&x, &mut st, &mut hidden, None, false)?;
        let mut spectra = Vec::new();
        self.spectra(&hidden, n, &mut spectra);
        Ok(self.istft.batch(&spectra, n))
    }

    /// A streaming decoder: push frames as they are generated.
    pub fn stream(&self) -> DetokenizerStream<'_> {
        DetokenizerStream {
            det: self,
            state: self.new_state(),
            istft: self.istft.stream(),
            x: Vec::new(),
            hidden: Vec::new(),
            spectra: Vec::new(),
        }
    }

    fn new_state(&self) -> Lfm2State {
        let window = self
            .lfm
            .cfg
            .sliding_window
            .unwrap_or(DEFAULT_SLIDING_WINDOW);
        self.lfm.new_state(window + UPSAMPLE)
    }

    /// Append the 6 upsampled positions of frame `t` (its fused embedding repeated) to `x`.
    fn embed_frame(&self, frame: &[u32], t: usize, x: &mut Vec<f32>) -> Result<()> {
        if frame.len() != CODEBOOKS {
            return Err(Error::Model(format!(
                "detokenizer: frame {t} has {} codes, expected {CODEBOOKS}",
                frame.len()
            )));
        }
        let h = self.emb.cols;
        let mut fused = vec![0f32; h];
        let mut row = vec![0f32; h];
        for (i, &c) in frame.iter().enumerate() {
            if c as usize >= CODES {
                return Err(Error::Model(format!(
                    "detokenizer: code {c} (frame {t}, codebook {i}) is outside 0..{CODES}"
                )));
            }
            self.emb.row_to_f32(c as usize + i * CODES, &mut row);
            for (f, r) in fused.iter_mut().zip(&row) {
                *f += r;
            }
        }
        for f in fused.iter_mut() {
            *f /= CODEBOOKS as f32;
        }
        for _ in 0..UPSAMPLE {
            x.extend_from_slice(&fused);
        }
        Ok(())
    }

    /// The complex spectra (`n × 641`) of `n` final LFM2 states: `exp(log-magnitude) · e^{i·phase}`.
    fn spectra(&self, hidden: &[f32], n: usize, out: &mut Vec<Complex<f32>>) {
        let mut y = vec![0f32; n * 2 * BINS];
        let mut qa = QuantActs::default();
        matmul(
            &self.lin,
            &hidden[..n * self.lin.cols],
            n,
            &mut y,
            &mut qa,
            self.lfm.pool(),
        );
        out.clear();
        for row in y.chunks_exact(2 * BINS) {
            let (log_abs, phase) = row.split_at(BINS);
            for j in 0..BINS {
                let mag = (log_abs[j] + self.lin_bias[j]).exp();
                let a = phase[j] + self.lin_bias[BINS + j];
                out.push(Complex::new(mag * a.cos(), mag * a.sin()));
            }
        }
    }
}

/// Incremental decoding: the LFM2 cache (bounded by the sliding window) and the ISTFT's overlap.
pub struct DetokenizerStream<'a> {
    det: &'a Detokenizer,
    state: Lfm2State,
    istft: IstftStream<'a>,
    x: Vec<f32>,
    hidden: Vec<f32>,
    spectra: Vec<Complex<f32>>,
}

impl DetokenizerStream<'_> {
    /// Decode the next frame (8 codes; or several, `k × 8` frame-major); returns the samples that became final
    /// (1920 per frame, less 480 for the stream's first frame).
    pub fn push(&mut self, frame: &[u32]) -> Result<Vec<f32>> {
        let det = self.det;
        if frame.is_empty() || !frame.len().is_multiple_of(CODEBOOKS) {
            return Err(Error::Model(format!(
                "detokenizer: {} codes pushed, expected a multiple of {CODEBOOKS}",
                frame.len()
            )));
        }
        let first = self.istft.frames() / UPSAMPLE;
        self.x.clear();
        for (k, f) in frame.chunks_exact(CODEBOOKS).enumerate() {
            det.embed_frame(f, first + k, &mut self.x)?;
        }
        let n = frame.len() / CODEBOOKS * UPSAMPLE;
        det.lfm
            .forward_embeds(&self.x, &mut self.state, &mut self.hidden, None, false)?;
        det.spectra(&self.hidden, n, &mut self.spectra);
        let mut out = Vec::with_capacity(n * HOP);
        for s in self.spectra.chunks_exact(BINS) {
            self.istft.push(s, &mut out);
        }
        Ok(out)
    }

    /// The remaining samples; the stream then starts over (a new utterance).
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.istft.finish(&mut out);
        self.state = self.det.new_state();
        Ok(out)
    }
}
