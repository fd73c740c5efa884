//! The audio output head of LFM2-Audio: from the backbone's last hidden state to the 8 codes of one audio frame,
//! and the embedding of a frame's codes fed back into the backbone.
//!
//! [`Depthformer::frame`]: `depth_linear` (hidden → codebooks × dim, with bias) gives one input vector per codebook.
//! Codebook `i` runs one position (position `i`) of a small transformer (`depthformer`: pre-norm blocks of
//! grouped-query attention with 32 query and 8 key/value heads, per-head RMSNorm of q and k, RoPE θ = 10⁶ on
//! *interleaved pairs* (2j, 2j + 1) — the backbone's RoPE rotates halves instead — and a SwiGLU feed-forward; no
//! final norm) over a KV cache that starts empty for every frame. Its output goes through codebook `i`'s
//! `depth_embeddings[i]`: RMSNorm and `to_logits` (2049 = 2048 codes + end-of-audio; tied to its embedding table
//! when `tie`). The chosen code's embedding (the raw table row) is added to the next codebook's input.
//!
//! [`AudioEmbedding`] is the backbone's `audio_embedding` table (codebooks × 2049 rows): a frame's input to the
//! backbone is the *sum* over codebooks of the rows `code + codebook · 2049`.

use crate::kernels::matmul::matmul;
use crate::kernels::ops;
use crate::kernels::pool::ThreadPool;
use crate::kernels::quant::{DType, QuantActs, WeightData, Weights};
use crate::s2s::random_weights::WeightRng;
use crate::s2s::weights::Checkpoint;
use crate::{Error, Result};
use serde::Deserialize;
use std::sync::Arc;

/// Codes per codebook plus the end-of-audio code.
pub const AUDIO_VOCAB: usize = 2049;
/// The end-of-audio code.
pub const END_OF_AUDIO: u32 = 2048;
/// Query heads of the depthformer's attention (fixed by the architecture, not in the config).
pub const HEADS: usize = 32;
/// Key/value heads.
pub const KV_HEADS: usize = 8;
const ROPE_THETA: f64 = 1_000_000.0;
const NORM_EPS: f32 = 1e-5;

/// The `depthformer` section of LFM2-Audio's `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DepthformerConfig {
    pub layers: usize,
    pub dim: usize,
    /// Whether each codebook's output projection is tied to its embedding table.
    pub tie: bool,
}

impl DepthformerConfig {
    /// The depthformer of LFM2-Audio-1.5B: 6 layers of width 1024, untied.
    pub fn lfm2_audio_1_5b() -> DepthformerConfig {
        DepthformerConfig {
            layers: 6,
            dim: 1024,
            tie: false,
        }
    }

    /// The SwiGLU width: 4 · dim, times 2/3, rounded up to a multiple of 256.
    pub fn ff_dim(&self) -> usize {
        let ff = 2 * (4 * self.dim) / 3;
        ff.div_ceil(256) * 256
    }

    fn check(&self) -> Result<()> {
        if self.layers == 0 || self.dim == 0 || !self.dim.is_multiple_of(HEADS) {
            return Err(Error::Model(format!(
                "depthformer: need layers > 0 and dim a positive multiple of {HEADS}, got layers {}, dim {}",
                self.layers, self.dim
            )));
        }
        if !(self.dim / HEADS).is_multiple_of(2) {
            return Err(Error::Model(format!(
                "depthformer: head dim {} must be even for RoPE",
                self.dim / HEADS
            )));
        }
        Ok(())
    }
}

/// One pre-norm transformer block.
struct Block {
    operator_norm: Vec<f32>,
    /// (dim + 2 · kv_dim) × dim: rows [q; k; v].
    qkv: Weights,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    out_proj: Weights,
    ffn_norm: Vec<f32>,
    /// 2 · ff × dim: rows [w1; w3].
    w13: Weights,
    w2: Weights,
}

/// A codebook's `SharedEmbedding`: embedding table, output norm and (untied) output projection.
struct CodebookHead {
    embedding: Weights,
    norm: Vec<f32>,
    to_logits: Option<Weights>,
}

impl CodebookHead {
    fn logits_weights(&self) -> &Weights {
        self.to_logits.as_ref().unwrap_or(&self.embedding)
    }
}

/// depth_linear + depthformer + depth_embeddings.
pub struct Depthformer {
    cfg: DepthformerConfig,
    hidden: usize,
    codebooks: usize,
    head_dim: usize,
    ff_dim: usize,
    depth_linear: Weights,
    depth_bias: Vec<f32>,
    blocks: Vec<Block>,
    heads: Vec<CodebookHead>,
    inv_freq: Vec<f32>,
    pool: Arc<ThreadPool>,
}

/// Working buffers of one frame.
struct FrameScratch {
    inputs: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    out: Vec<f32>,
    gate: Vec<f32>,
    mid: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    qa: QuantActs,
    /// Per block: keys and values of the positions so far (position-major, KV_HEADS × head_dim each).
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl Depthformer {
    /// Load `depth_linear.*`, `depthformer.layers.*` and `depth_embeddings.*` from an LFM2-Audio checkpoint.
    pub fn load(
        ck: &Checkpoint,
        cfg: &DepthformerConfig,
        hidden: usize,
        codebooks: usize,
        dtype: DType,
        threads: usize,
    ) -> Result<Depthformer> {
        cfg.check()?;
        let d = cfg.dim;
        let hd = d / HEADS;
        let ff = cfg.ff_dim();
        let kv = KV_HEADS * hd;
        let vecf = |name: &str, n: usize| ck.f32(name, &[n]);
        let mat = |name: &str, rows: usize, cols: usize| ck.matrix(name, rows, cols, dtype);
        // Row-fused matrices: each part checked for its shape, then converted once.
        let fused = |parts: &[(String, usize)], cols: usize| -> Result<Weights> {
            let mut all = Vec::new();
            for (name, rows) in parts {
                all.extend(ck.f32(name, &[*rows, cols])?);
            }
            let rows = parts.iter().map(|(_, r)| r).sum();
            Weights::from_f32(rows, cols, &all, dtype).map_err(|e| {
                let file = ck.raw(&parts[0].0).map(|r| r.file.to_path_buf());
                Error::file(
                    file.unwrap_or_else(|_| ck.dir().to_path_buf()),
                    format!("tensor `{}`: {e}", parts[0].0),
                )
            })
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("depthformer.layers.{i}");
            blocks.push(Block {
                operator_norm: vecf(&format!("{p}.operator_norm.weight"), d)?,
                qkv: mat(&format!("{p}.operator.qkv_proj.weight"), d + 2 * kv, d)?,
                q_norm: vecf(
                    &format!("{p}.operator.bounded_attention.q_layernorm.weight"),
                    hd,
                )?,
                k_norm: vecf(
                    &format!("{p}.operator.bounded_attention.k_layernorm.weight"),
                    hd,
                )?,
                out_proj: mat(&format!("{p}.operator.out_proj.weight"), d, d)?,
                ffn_norm: vecf(&format!("{p}.ffn_norm.weight"), d)?,
                w13: fused(
                    &[
                        (format!("{p}.feed_forward.w1.weight"), ff),
                        (format!("{p}.feed_forward.w3.weight"), ff),
                    ],
                    d,
                )?,
                w2: mat(&format!("{p}.feed_forward.w2.weight"), d, ff)?,
            });
        }
        let mut heads = Vec::with_capacity(codebooks);
        for i in 0..codebooks {
            let p = format!("depth_embeddings.{i}");
            let emb_name = format!("{p}.embedding.weight");
            let out_name = format!("{p}.to_logits.weight");
            // A tied checkpoint may store the shared matrix under either name.
            let (embedding, to_logits) = if cfg.tie {
                let name = if ck.contains(&emb_name) {
                    &emb_name
                } else {
                    &out_name
                };
                (mat(name, AUDIO_VOCAB, d)?, None)
            } else {
                (
                    mat(&emb_name, AUDIO_VOCAB, d)?,
                    Some(mat(&out_name, AUDIO_VOCAB, d)?),
                )
            };
            heads.push(CodebookHead {
                embedding,
                norm: vecf(&format!("{p}.embedding_norm.weight"), d)?,
                to_logits,
            });
        }
        Ok(Depthformer {
            cfg: cfg.clone(),
            hidden,
            codebooks,
            head_dim: hd,
            ff_dim: ff,
            depth_linear: mat("depth_linear.weight", codebooks * d, hidden)?,
            depth_bias: vecf("depth_linear.bias", codebooks * d)?,
            blocks,
            heads,
            inv_freq: ops::rope_inv_freq(hd, ROPE_THETA),
            pool: Arc::new(ThreadPool::new(threads)),
        })
    }

    /// Random weights of the given shape (for benchmarks), built directly in `dtype`.
    pub fn random(
        cfg: &DepthformerConfig,
        hidden: usize,
        codebooks: usize,
        dtype: DType,
        threads: usize,
        seed: u64,
    ) -> Result<Depthformer> {
        cfg.check()?;
        let mut rng = WeightRng::new(seed);
        let d = cfg.dim;
        let hd = d / HEADS;
        let ff = cfg.ff_dim();
        let kv = KV_HEADS * hd;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            blocks.push(Block {
                operator_norm: vec![1.0; d],
                qkv: rng.matrix(d + 2 * kv, d, dtype)?,
                q_norm: vec![1.0; hd],
                k_norm: vec![1.0; hd],
                out_proj: rng.matrix(d, d, dtype)?,
                ffn_norm: vec![1.0; d],
                w13: rng.matrix(2 * ff, d, dtype)?,
                w2: rng.matrix(d, ff, dtype)?,
            });
        }
        let mut heads = Vec::with_capacity(codebooks);
        for _ in 0..codebooks {
            heads.push(CodebookHead {
                embedding: rng.matrix(AUDIO_VOCAB, d, dtype)?,
                norm: vec![1.0; d],
                to_logits: if cfg.tie {
                    None
                } else {
                    Some(rng.matrix(AUDIO_VOCAB, d, dtype)?)
                },
            });
        }
        Ok(Depthformer {
            cfg: cfg.clone(),
            hidden,
            codebooks,
            head_dim: hd,
            ff_dim: ff,
            depth_linear: rng.matrix(codebooks * d, hidden, dtype)?,
            depth_bias: rng.vector(codebooks * d, 0.02),
            blocks,
            heads,
            inv_freq: ops::rope_inv_freq(hd, ROPE_THETA),
            pool: Arc::new(ThreadPool::new(threads)),
        })
    }

    /// Run the depthformer's kernels on `pool` (shared with the backbone).
    pub fn use_pool(&mut self, pool: Arc<ThreadPool>) {
        self.pool = pool;
    }

    pub fn config(&self) -> &DepthformerConfig {
        &self.cfg
    }

    pub fn codebooks(&self) -> usize {
        self.codebooks
    }

    /// Width of the backbone hidden state [`Depthformer::frame`] takes.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Bytes of weights one frame reads (each matrix once per codebook step; depth_linear once).
    pub fn weight_bytes_per_frame(&self) -> usize {
        let per_step: usize = self
            .blocks
            .iter()
            .map(|b| b.qkv.bytes() + b.out_proj.bytes() + b.w13.bytes() + b.w2.bytes())
            .sum();
        let heads: usize = self.heads.iter().map(|h| h.logits_weights().bytes()).sum();
        self.depth_linear.bytes() + self.codebooks * per_step + heads
    }

    fn scratch(&self) -> FrameScratch {
        let d = self.cfg.dim;
        let kv = KV_HEADS * self.head_dim;
        FrameScratch {
            inputs: vec![0.0; self.codebooks * d],
            x: vec![0.0; d],
            h: vec![0.0; d],
            qkv: vec![0.0; d + 2 * kv],
            attn: vec![0.0; d],
            out: vec![0.0; d],
            gate: vec![0.0; 2 * self.ff_dim],
            mid: vec![0.0; self.ff_dim],
            scores: vec![0.0; (HEADS / KV_HEADS) * self.codebooks],
            logits: vec![0.0; AUDIO_VOCAB],
            cos: vec![0.0; self.head_dim / 2],
            sin: vec![0.0; self.head_dim / 2],
            qa: QuantActs::default(),
            keys: (0..self.blocks.len())
                .map(|_| Vec::with_capacity(self.codebooks * kv))
                .collect(),
            values: (0..self.blocks.len())
                .map(|_| Vec::with_capacity(self.codebooks * kv))
                .collect(),
        }
    }

    /// One audio frame from the backbone's last hidden state (`hidden` values). `pick(codebook, logits)` chooses
    /// each code from its 2049 logits (greedy or sampled; it may modify the logits); a pick outside the vocabulary
    /// is clamped to end-of-audio. Returns the codebooks' codes in order.
    ///
    /// Panics if `hidden` does not hold [`Depthformer::hidden`] values.
    pub fn frame(
        &self,
        hidden: &[f32],
        pick: &mut dyn FnMut(usize, &mut [f32]) -> u32,
    ) -> Vec<u32> {
        assert_eq!(hidden.len(), self.hidden, "depthformer input width");
        let d = self.cfg.dim;
        let mut s = self.scratch();
        matmul(
            &self.depth_linear,
            hidden,
            1,
            &mut s.inputs,
            &mut s.qa,
            &self.pool,
        );
        for (v, b) in s.inputs.iter_mut().zip(&self.depth_bias) {
            *v += b;
        }
        let mut codes = Vec::with_capacity(self.codebooks);
        for (i, head) in self.heads.iter().enumerate() {
            // Input of step i: its slice of depth_linear plus the previous code's embedding (in `x` already).
            for (x, v) in s.x.iter_mut().zip(&s.inputs[i * d..(i + 1) * d]) {
                *x = if i == 0 { *v } else { *x + v };
            }
            self.step(i, &mut s);
            ops::rms_norm(&s.x, &head.norm, NORM_EPS, &mut s.h);
            matmul(
                head.logits_weights(),
                &s.h,
                1,
                &mut s.logits,
                &mut s.qa,
                &self.pool,
            );
            let code = pick(i, &mut s.logits).min(END_OF_AUDIO);
            codes.push(code);
            head.embedding.row_to_f32(code as usize, &mut s.x);
        }
        codes
    }

    /// Run position `pos` through every block, `s.x` in and out, appending to the KV caches.
    fn step(&self, pos: usize, s: &mut FrameScratch) {
        let d = self.cfg.dim;
        let hd = self.head_dim;
        let kv = KV_HEADS * hd;
        ops::rope_cos_sin(pos, &self.inv_freq, &mut s.cos, &mut s.sin);
        for (li, b) in self.blocks.iter().enumerate() {
            ops::rms_norm(&s.x, &b.operator_norm, NORM_EPS, &mut s.h);
            matmul(&b.qkv, &s.h, 1, &mut s.qkv, &mut s.qa, &self.pool);
            for (j, head) in s.qkv[..d + kv].chunks_exact_mut(hd).enumerate() {
                let w = if j < HEADS { &b.q_norm } else { &b.k_norm };
                ops::rms_norm_inplace(head, w, NORM_EPS);
                ops::rope_interleaved(head, &s.cos, &s.sin);
            }
            s.keys[li].extend_from_slice(&s.qkv[d..d + kv]);
            s.values[li].extend_from_slice(&s.qkv[d + kv..]);
            ops::attend(
                &s.qkv[..d],
                &s.keys[li],
                &s.values[li],
                pos + 1,
                HEADS,
                KV_HEADS,
                hd,
                1.0 / (hd as f32).sqrt(),
                &mut s.scores,
                &mut s.attn,
            );
            matmul(&b.out_proj, &s.attn, 1, &mut s.out, &mut s.qa, &self.pool);
            for (x, o) in s.x.iter_mut().zip(&s.out) {
                *x += o;
            }
            ops::rms_norm(&s.x, &b.ffn_norm, NORM_EPS, &mut s.h);
            matmul(&b.w13, &s.h, 1, &mut s.gate, &mut s.qa, &self.pool);
            let (g, u) = s.gate.split_at(self.ff_dim);
            for ((m, &g), &u) in s.mid.iter_mut().zip(g).zip(u) {
                *m = ops::silu(g) * u;
            }
            matmul(&b.w2, &s.mid, 1, &mut s.out, &mut s.qa, &self.pool);
            for (x, o) in s.x.iter_mut().zip(&s.out) {
                *x += o;
            }
        }
    }
}

/// The backbone's `audio_embedding`: one table of `codebooks × 2049` rows of the backbone width.
pub struct AudioEmbedding {
    table: Weights,
    codebooks: usize,
    hidden: usize,
}

impl AudioEmbedding {
    /// Load `audio_embedding.embedding.weight`, kept in the checkpoint's precision (bf16 or f32).
    pub fn load(ck: &Checkpoint, codebooks: usize, hidden: usize) -> Result<AudioEmbedding> {
        let name = "audio_embedding.embedding.weight";
        let raw = ck.raw(name)?;
        let dtype = if raw.dtype == safetensors::Dtype::BF16 {
            DType::Bf16
        } else {
            DType::F32
        };
        Ok(AudioEmbedding {
            table: ck.matrix(name, codebooks * AUDIO_VOCAB, hidden, dtype)?,
            codebooks,
            hidden,
        })
    }

    /// A random bf16 table (for benchmarks).
    pub fn random(codebooks: usize, hidden: usize, seed: u64) -> AudioEmbedding {
        let mut rng = WeightRng::new(seed);
        let rows = codebooks * AUDIO_VOCAB;
        let scale = 1.0 / (hidden as f32).sqrt();
        let bits = (0..rows * hidden)
            .map(|_| crate::kernels::quant::f32_to_bf16_bits(rng.next_unit() * scale))
            .collect();
        AudioEmbedding {
            table: Weights {
                rows,
                cols: hidden,
                data: WeightData::Bf16(bits),
                packed: false,
            },
            codebooks,
            hidden,
        }
    }

    pub fn codebooks(&self) -> usize {
        self.codebooks
    }

    /// `out = Σ_i table[codes[i] + i · 2049]` over the frame's codes (a code above 2048 counts as end-of-audio).
    ///
    /// Panics if `codes` does not hold one code per codebook or `out` is not the backbone width.
    pub fn embed(&self, codes: &[u32], out: &mut [f32]) {
        assert_eq!(codes.len(), self.codebooks, "one code per codebook");
        assert_eq!(out.len(), self.hidden, "backbone width");
        out.fill(0.0);
        let mut row = vec![0f32; self.hidden];
        for (i, &c) in codes.iter().enumerate() {
            let c = c.min(END_OF_AUDIO) as usize;
            self.table.row_to_f32(c + i * AUDIO_VOCAB, &mut row);
            for (o, r) in out.iter_mut().zip(&row) {
                *o += r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ff_dim_follows_the_swiglu_rounding() {
        assert_eq!(DepthformerConfig::lfm2_audio_1_5b().ff_dim(), 2816);
        let tiny = DepthformerConfig {
            layers: 1,
            dim: 64,
            tie: true,
        };
        assert_eq!(tiny.ff_dim(), 256);
    }

    #[test]
    fn random_frame_gives_one_code_per_codebook() {
        let cfg = DepthformerConfig {
            layers: 2,
            dim: 64,
            tie: true,
        };
        let df = Depthformer::random(&cfg, 32, 8, DType::F32, 1, 7).unwrap();
        let hidden: Vec<f32> = (0..32).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut seen = Vec::new();
        let codes = df.frame(&hidden, &mut |i, logits| {
            assert_eq!(logits.len(), AUDIO_VOCAB);
            seen.push(i);
            crate::s2s::sampling::argmax(logits)
        });
        assert_eq!(codes.len(), 8);
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        // Deterministic: the same input gives the same frame.
        let again = df.frame(&hidden, &mut |_, l| crate::s2s::sampling::argmax(l));
        assert_eq!(codes, again);
    }

    #[test]
    fn audio_embedding_sums_offset_rows() {
        let e = AudioEmbedding::random(2, 4, 3);
        let mut out = vec![0f32; 4];
        e.embed(&[5, 7], &mut out);
        let (mut a, mut b) = (vec![0f32; 4], vec![0f32; 4]);
        e.table.row_to_f32(5, &mut a);
        e.table.row_to_f32(7 + AUDIO_VOCAB, &mut b);
        for j in 0..4 {
            assert_eq!(out[j], a[j] + b[j]);
        }
    }
}
