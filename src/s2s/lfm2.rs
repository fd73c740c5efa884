//! The LFM2 backbone: a hybrid of gated short-convolution blocks and grouped-query attention blocks.
//!
//! Each layer is `x += mixer(rms_norm(x)); x += swiglu(rms_norm(x))`, where the mixer is either
//! - a short convolution: `in_proj` gives B, C and x̂ (3 × hidden), `y = C ⊙ conv(B ⊙ x̂)` with a depthwise causal
//!   conv of length `conv_L_cache`, then `out_proj`; its state is the last `L − 1` values of `B ⊙ x̂`;
//! - attention: q/k/v projections, per-head RMSNorm of q and k, rotate-half RoPE, causal softmax attention with
//!   `num_key_value_heads` shared key/value heads, `out_proj`; its state is the KV cache.
//!
//! The final RMSNorm (`embedding_norm`) gives the last hidden state, and the (possibly tied) `lm_head` the logits.
//! [`Lfm2::forward`] runs any number of new tokens against a [`Lfm2State`]: a prefill of a prompt is one call (the
//! matrix-matrix path), decode is one call per token, and both give the same numbers.

use crate::kernels::matmul::{matmul_input, Input, Path as KernelPath};
use crate::kernels::ops;
use crate::kernels::pool::ThreadPool;
use crate::kernels::quant::{DType, QuantActs, Weights};
use crate::s2s::weights::Checkpoint;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// `config.json` of an LFM2 checkpoint (the keys sigflow reads; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Lfm2ConfigFile {
    pub vocab_size: usize,
    pub hidden_size: usize,
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    #[serde(default)]
    pub block_ff_dim: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub norm_eps: Option<f64>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub conv_bias: Option<bool>,
    #[serde(default, rename = "conv_L_cache")]
    pub conv_l_cache: Option<usize>,
    #[serde(default)]
    pub block_multiple_of: Option<usize>,
    #[serde(default)]
    pub block_ffn_dim_multiplier: Option<f64>,
    #[serde(default)]
    pub block_auto_adjust_ff_dim: Option<bool>,
    #[serde(default)]
    pub full_attn_idxs: Option<Vec<usize>>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub tie_embedding: Option<bool>,
    /// Attention window in positions (the query's own included); absent: unbounded.
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

/// Kind of a layer's token mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Conv,
    Attention,
}

/// The runtime configuration derived from [`Lfm2ConfigFile`].
#[derive(Debug, Clone)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden: usize,
    /// Width of the SwiGLU feed-forward after the auto-adjust rounding.
    pub ff_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub norm_eps: f32,
    pub rope_theta: f64,
    pub conv_bias: bool,
    pub conv_l: usize,
    pub layers: Vec<LayerKind>,
    pub tied_embeddings: bool,
    /// Every attention layer sees only its last `sliding_window` positions (the current one included), and the
    /// KV cache keeps no more than that.
    pub sliding_window: Option<usize>,
}

impl Config {
    /// Read and check `config.json`.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let f: Lfm2ConfigFile = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("{}:{}: {e}", e.line(), e.column())))?;
        Config::from_config_file(&f).map_err(|m| Error::file(path, m))
    }

    /// Derive the runtime config; the error says which key is wrong.
    pub fn from_config_file(f: &Lfm2ConfigFile) -> std::result::Result<Config, String> {
        let layers: Vec<LayerKind> = if let Some(types) = &f.layer_types {
            if types.len() != f.num_hidden_layers {
                return Err(format!(
                    "layer_types has {} entries but num_hidden_layers is {}",
                    types.len(),
                    f.num_hidden_layers
                ));
            }
            types
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    "conv" => Ok(LayerKind::Conv),
                    // The window, when configured, applies to every attention layer.
                    "full_attention" | "sliding_attention" => Ok(LayerKind::Attention),
                    other => Err(format!(
                        "layer_types[{i}]: unknown layer type `{other}` (expected `conv`, `full_attention` or `sliding_attention`)"
                    )),
                })
                .collect::<std::result::Result<_, _>>()?
        } else {
            // transformers' default without either key: every layer is attention.
            let idx = f
                .full_attn_idxs
                .clone()
                .unwrap_or_else(|| (0..f.num_hidden_layers).collect());
            if let Some(&bad) = idx.iter().find(|&&i| i >= f.num_hidden_layers) {
                return Err(format!(
                    "full_attn_idxs: layer {bad} does not exist (num_hidden_layers is {})",
                    f.num_hidden_layers
                ));
            }
            (0..f.num_hidden_layers)
                .map(|i| {
                    if idx.contains(&i) {
                        LayerKind::Attention
                    } else {
                        LayerKind::Conv
                    }
                })
                .collect()
        };
        if f.num_attention_heads == 0 || f.num_key_value_heads == 0 {
            return Err("num_attention_heads and num_key_value_heads must be positive".into());
        }
        if !f.num_attention_heads.is_multiple_of(f.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                f.num_attention_heads, f.num_key_value_heads
            ));
        }
        let head_dim = f.head_dim.unwrap_or(f.hidden_size / f.num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {head_dim} must be even for RoPE"));
        }
        let mut ff = f
            .block_ff_dim
            .or(f.intermediate_size)
            .ok_or("neither intermediate_size nor block_ff_dim is given")?;
        if f.block_auto_adjust_ff_dim.unwrap_or(true) {
            ff = 2 * ff / 3;
            if let Some(m) = f.block_ffn_dim_multiplier {
                ff = (m * ff as f64) as usize;
                let mult = f.block_multiple_of.unwrap_or(256).max(1);
                ff = mult * ff.div_ceil(mult);
            }
        }
        if f.sliding_window == Some(0) {
            return Err("sliding_window must be at least 1".into());
        }
        let conv_l = f.conv_l_cache.unwrap_or(3);
        if conv_l < 1 {
            return Err("conv_L_cache must be at least 1".into());
        }
        Ok(Config {
            vocab_size: f.vocab_size,
            hidden: f.hidden_size,
            ff_dim: ff,
            n_heads: f.num_attention_heads,
            n_kv_heads: f.num_key_value_heads,
            head_dim,
            norm_eps: f.norm_eps.unwrap_or(1e-5) as f32,
            rope_theta: f.rope_theta.unwrap_or(1_000_000.0),
            conv_bias: f.conv_bias.unwrap_or(false),
            conv_l,
            layers,
            tied_embeddings: f.tie_embedding.or(f.tie_word_embeddings).unwrap_or(true),
            sliding_window: f.sliding_window,
        })
    }

    /// The published shapes of LFM2-350M and LFM2-1.2B (`350m`, `1.2b`), for benchmarks with random weights.
    pub fn preset(name: &str) -> Option<Config> {
        let attn = [2usize, 5, 8, 10, 12, 14];
        let (hidden, heads, ff) = match name {
            "350m" => (1024, 16, 6656),
            "1.2b" => (2048, 32, 12288),
            _ => return None,
        };
        let f = Lfm2ConfigFile {
            vocab_size: 65536,
            hidden_size: hidden,
            intermediate_size: None,
            block_ff_dim: Some(ff),
            num_hidden_layers: 16,
            num_attention_heads: heads,
            num_key_value_heads: 8,
            head_dim: None,
            norm_eps: Some(1e-5),
            rope_theta: Some(1_000_000.0),
            conv_bias: Some(false),
            conv_l_cache: Some(3),
            block_multiple_of: Some(256),
            block_ffn_dim_multiplier: Some(1.0),
            block_auto_adjust_ff_dim: Some(true),
            full_attn_idxs: Some(attn.to_vec()),
            layer_types: None,
            tie_word_embeddings: Some(true),
            tie_embedding: None,
            sliding_window: None,
        };
        Config::from_config_file(&f).ok()
    }

    fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

enum Mixer {
    Conv {
        /// 3·hidden × hidden: rows [B; C; x̂].
        in_proj: Weights,
        in_bias: Option<Vec<f32>>,
        /// hidden × L.
        conv_w: Vec<f32>,
        conv_b: Option<Vec<f32>>,
        out_proj: Weights,
        out_bias: Option<Vec<f32>>,
    },
    Attention {
        /// (q_dim + 2·kv_dim) × hidden: rows [q; k; v].
        qkv: Weights,
        q_norm: Vec<f32>,
        k_norm: Vec<f32>,
        out_proj: Weights,
    },
}

struct Layer {
    op_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    mixer: Mixer,
    /// 2·ff × hidden: rows [w1; w3].
    w13: Weights,
    w2: Weights,
}

/// An LFM2 model with its weights in one of the kernel formats and a thread pool for its kernels.
pub struct Lfm2 {
    pub cfg: Config,
    embed: Weights,
    lm_head: Option<Weights>,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    pool: Arc<ThreadPool>,
    path: KernelPath,
}

/// The streaming state of one sequence: position, per-layer conv state and KV cache, and reusable scratch.
pub struct Lfm2State {
    pub pos: usize,
    /// Position of the oldest key in the KV caches (above 0 once a sliding window has dropped older ones).
    kv_start: usize,
    conv: Vec<Vec<f32>>,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    s: Scratch,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    big: Vec<f32>,
    mid: Vec<f32>,
    out: Vec<f32>,
    attn: Vec<f32>,
    scores: Vec<f32>,
    qa: QuantActs,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// A shared raw pointer for attention heads written by different tasks.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: tasks write disjoint ranges (distinct heads) and `ThreadPool::run` returns only after all tasks end.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl Lfm2 {
    /// Load `dir/config.json` and the safetensors weights, converting matrices to `dtype`.
    pub fn load(dir: &Path, dtype: DType, threads: usize) -> Result<Lfm2> {
        let cfg = Config::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        Lfm2::load_prefixed(&ck, "model", cfg, dtype, threads)
    }

    /// Load the backbone whose tensors are named `{prefix}.layers.…`, `{prefix}.embed_tokens.weight`,
    /// `{prefix}.embedding_norm.weight` (`model` in an LFM2 checkpoint, `lfm` inside LFM2-Audio).
    pub fn load_prefixed(
        ck: &Checkpoint,
        prefix: &str,
        cfg: Config,
        dtype: DType,
        threads: usize,
    ) -> Result<Lfm2> {
        let h = cfg.hidden;
        let mat = |name: &str, rows: usize, cols: usize| ck.matrix(name, rows, cols, dtype);
        let vecf = |name: &str, n: usize| ck.f32(name, &[n]);
        // Matrices fused along rows: load each part as f32 (checking its shape), then convert once.
        let fused = |names: &[(&str, usize)], cols: usize| -> Result<Weights> {
            let mut all = Vec::new();
            let mut file = ck.dir().to_path_buf();
            for (name, rows) in names {
                let raw = ck.raw(name)?;
                file = raw.file.to_path_buf();
                all.extend(ck.f32(name, &[*rows, cols])?);
            }
            let rows: usize = names.iter().map(|(_, r)| r).sum();
            let bf16_exact = names.iter().all(|(n, _)| {
                ck.raw(n)
                    .map(|r| r.dtype == safetensors::Dtype::BF16)
                    .unwrap_or(false)
            });
            let w = if dtype == DType::Bf16 && bf16_exact {
                let bits: Vec<u16> = all.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
                Weights::from_bf16_bits(rows, cols, &bits, dtype)
            } else {
                Weights::from_f32(rows, cols, &all, dtype)
            };
            w.map_err(|e| Error::file(file, format!("tensor `{}`: {e}", names[0].0)))
        };
        let mut layers = Vec::with_capacity(cfg.layers.len());
        for (i, kind) in cfg.layers.iter().enumerate() {
            let p = format!("{prefix}.layers.{i}");
            let mixer = match kind {
                LayerKind::Conv => {
                    let bias = |n: &str, len: usize| -> Result<Option<Vec<f32>>> {
                        if cfg.conv_bias {
                            Ok(Some(vecf(&format!("{p}.conv.{n}.bias"), len)?))
                        } else {
                            Ok(None)
                        }
                    };
                    Mixer::Conv {
                        in_proj: mat(&format!("{p}.conv.in_proj.weight"), 3 * h, h)?,
                        in_bias: bias("in_proj", 3 * h)?,
                        conv_w: ck.f32(&format!("{p}.conv.conv.weight"), &[h, 1, cfg.conv_l])?,
                        conv_b: bias("conv", h)?,
                        out_proj: mat(&format!("{p}.conv.out_proj.weight"), h, h)?,
                        out_bias: bias("out_proj", h)?,
                    }
                }
                LayerKind::Attention => Mixer::Attention {
                    qkv: fused(
                        &[
                            (&format!("{p}.self_attn.q_proj.weight"), cfg.q_dim()),
                            (&format!("{p}.self_attn.k_proj.weight"), cfg.kv_dim()),
                            (&format!("{p}.self_attn.v_proj.weight"), cfg.kv_dim()),
                        ],
                        h,
                    )?,
                    q_norm: vecf(&format!("{p}.self_attn.q_layernorm.weight"), cfg.head_dim)?,
                    k_norm: vecf(&format!("{p}.self_attn.k_layernorm.weight"), cfg.head_dim)?,
                    out_proj: mat(&format!("{p}.self_attn.out_proj.weight"), h, cfg.q_dim())?,
                },
            };
            layers.push(Layer {
                op_norm: vecf(&format!("{p}.operator_norm.weight"), h)?,
                ffn_norm: vecf(&format!("{p}.ffn_norm.weight"), h)?,
                mixer,
                w13: fused(
                    &[
                        (&format!("{p}.feed_forward.w1.weight"), cfg.ff_dim),
                        (&format!("{p}.feed_forward.w3.weight"), cfg.ff_dim),
                    ],
                    h,
                )?,
                w2: mat(&format!("{p}.feed_forward.w2.weight"), h, cfg.ff_dim)?,
            });
        }
        let embed = mat(&format!("{prefix}.embed_tokens.weight"), cfg.vocab_size, h)?;
        let lm_head = if cfg.tied_embeddings && !ck.contains("lm_head.weight") {
            None
        } else if ck.contains("lm_head.weight") {
            Some(mat("lm_head.weight", cfg.vocab_size, h)?)
        } else {
            None
        };
        let final_norm = vecf(&format!("{prefix}.embedding_norm.weight"), h)?;
        Ok(Lfm2::from_parts(
            cfg, embed, lm_head, final_norm, layers, threads,
        ))
    }

    fn from_parts(
        cfg: Config,
        embed: Weights,
        lm_head: Option<Weights>,
        final_norm: Vec<f32>,
        layers: Vec<Layer>,
        threads: usize,
    ) -> Lfm2 {
        let inv_freq = ops::rope_inv_freq(cfg.head_dim, cfg.rope_theta);
        Lfm2 {
            cfg,
            embed,
            lm_head,
            final_norm,
            layers,
            inv_freq,
            pool: Arc::new(ThreadPool::new(threads)),
            path: KernelPath::best(),
        }
    }

    /// A model with random weights of the given shape (for benchmarks), built directly in `dtype`.
    pub fn random(cfg: Config, dtype: DType, threads: usize, seed: u64) -> Result<Lfm2> {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut rand_matrix = |rows: usize, cols: usize| -> Result<Weights> {
            let scale = 1.0 / (cols as f32).sqrt();
            let mut v = vec![0f32; rows * cols];
            for x in v.iter_mut() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *x = (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale;
            }
            Weights::from_f32(rows, cols, &v, dtype).map_err(Error::Model)
        };
        let h = cfg.hidden;
        let mut layers = Vec::new();
        for kind in &cfg.layers {
            let mixer = match kind {
                LayerKind::Conv => Mixer::Conv {
                    in_proj: rand_matrix(3 * h, h)?,
                    in_bias: None,
                    conv_w: (0..h * cfg.conv_l)
                        .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
                        .collect(),
                    conv_b: None,
                    out_proj: rand_matrix(h, h)?,
                    out_bias: None,
                },
                LayerKind::Attention => Mixer::Attention {
                    qkv: rand_matrix(cfg.q_dim() + 2 * cfg.kv_dim(), h)?,
                    q_norm: vec![1.0; cfg.head_dim],
                    k_norm: vec![1.0; cfg.head_dim],
                    out_proj: rand_matrix(h, cfg.q_dim())?,
                },
            };
            layers.push(Layer {
                op_norm: vec![1.0; h],
                ffn_norm: vec![1.0; h],
                mixer,
                w13: rand_matrix(2 * cfg.ff_dim, h)?,
                w2: rand_matrix(h, cfg.ff_dim)?,
            });
        }
        let embed = rand_matrix(cfg.vocab_size, h)?;
        Ok(Lfm2::from_parts(
            cfg,
            embed,
            None,
            vec![1.0; h],
            layers,
            threads,
        ))
    }

    /// Use a specific kernel path (tests compare paths; the default is the fastest).
    pub fn set_kernel_path(&mut self, path: KernelPath) {
        self.path = path;
    }

    /// Bytes of weights one decode step reads (every matrix once, incl. the output head; not the embedding row).
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut b = 0;
        for l in &self.layers {
            b += l.w13.bytes() + l.w2.bytes() + 4 * (l.op_norm.len() + l.ffn_norm.len());
            b += match &l.mixer {
                Mixer::Conv {
                    in_proj,
                    out_proj,
                    conv_w,
                    ..
                } => in_proj.bytes() + out_proj.bytes() + 4 * conv_w.len(),
                Mixer::Attention { qkv, out_proj, .. } => qkv.bytes() + out_proj.bytes(),
            };
        }
        b + self.lm_head.as_ref().unwrap_or(&self.embed).bytes()
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The pool the model's kernels run on.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// A handle to the pool, to run other models' kernels on the same workers.
    pub fn shared_pool(&self) -> Arc<ThreadPool> {
        Arc::clone(&self.pool)
    }

    /// Run the model's kernels on `pool` instead of its own: the parts of a speech model share one pool, so no
    /// idle worker of one part spins on a core another part needs.
    pub fn use_pool(&mut self, pool: Arc<ThreadPool>) {
        self.pool = pool;
    }

    /// A fresh state (empty caches). `capacity` reserves KV-cache room for that many positions.
    pub fn new_state(&self, capacity: usize) -> Lfm2State {
        let c = &self.cfg;
        let kv = c.kv_dim();
        Lfm2State {
            pos: 0,
            kv_start: 0,
            conv: c
                .layers
                .iter()
                .map(|k| {
                    if *k == LayerKind::Conv {
                        vec![0.0; c.hidden * (c.conv_l - 1)]
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
            keys: c
                .layers
                .iter()
                .map(|_| Vec::with_capacity(capacity * kv))
                .collect(),
            values: c
                .layers
                .iter()
                .map(|_| Vec::with_capacity(capacity * kv))
                .collect(),
            s: Scratch::default(),
        }
    }

    fn matmul(&self, w: &Weights, x: &[f32], n: usize, y: &mut [f32], qa: &mut QuantActs) {
        let inp = if w.dtype().is_quantized() {
            qa.quantize_on(x, n, w.cols, Some(&self.pool));
            Input::Quant(qa)
        } else {
            Input::F32 { x, cols: w.cols }
        };
        matmul_input(self.path, w, inp, n, &mut y[..n * w.rows], &self.pool);
    }

    /// Run `ids` (the next tokens of the sequence) through the model, advancing `st`.
    /// Returns the last hidden states (`ids.len() × hidden`, after the final norm) in `hidden` and, if `logits` is
    /// given, the logits of every token (`all_logits`) or of the last one only.
    pub fn forward(
        &self,
        ids: &[u32],
        st: &mut Lfm2State,
        hidden: &mut Vec<f32>,
        logits: Option<&mut Vec<f32>>,
        all_logits: bool,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut embeds = vec![0.0; ids.len() * self.cfg.hidden];
        self.embed_tokens(ids, &mut embeds)?;
        self.forward_embeds(&embeds, st, hidden, logits, all_logits)
    }

    /// The input embeddings of `ids` (`ids.len() × hidden`) into `out`.
    pub fn embed_tokens(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        let c = &self.cfg;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Model(format!(
                "token id {bad} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        ops::embed(&self.embed, ids, &mut out[..ids.len() * c.hidden]);
        Ok(())
    }

    /// The text logits (tied to the input embedding, or `lm_head` when the checkpoint has one) of `n` final
    /// hidden states.
    pub fn logits_of(&self, hidden: &[f32], n: usize, logits: &mut Vec<f32>, st: &mut Lfm2State) {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        logits.resize(n * self.cfg.vocab_size, 0.0);
        self.matmul(
            head,
            &hidden[..n * self.cfg.hidden],
            n,
            logits,
            &mut st.s.qa,
        );
    }

    /// [`Lfm2::forward`] from input embeddings (`n × hidden`, time-major) instead of token ids.
    pub fn forward_embeds(
        &self,
        embeds: &[f32],
        st: &mut Lfm2State,
        hidden: &mut Vec<f32>,
        logits: Option<&mut Vec<f32>>,
        all_logits: bool,
    ) -> Result<()> {
        let c = &self.cfg;
        let h = c.hidden;
        if !embeds.len().is_multiple_of(h) {
            return Err(Error::Model(format!(
                "input embeddings: {} values is not a multiple of the hidden width {h}",
                embeds.len()
            )));
        }
        let n = embeds.len() / h;
        if n == 0 {
            return Ok(());
        }
        let s = &mut st.s;
        grow(&mut s.x, n * h);
        grow(&mut s.h, n * h);
        grow(&mut s.out, n * h);
        grow(
            &mut s.big,
            n * (3 * h).max(2 * c.ff_dim).max(c.q_dim() + 2 * c.kv_dim()),
        );
        grow(&mut s.mid, n * h.max(c.ff_dim).max(c.q_dim()));
        grow(&mut s.attn, n * c.q_dim());
        grow(&mut s.cos, c.head_dim / 2);
        grow(&mut s.sin, c.head_dim / 2);
        s.x[..n * h].copy_from_slice(embeds);
        let pos0 = st.pos;
        if let Some(window) = c.sliding_window {
            // The new tokens need at most the last `window − 1` cached positions.
            let drop = (pos0 - st.kv_start).saturating_sub(window - 1);
            for (k, v) in st.keys.iter_mut().zip(st.values.iter_mut()) {
                let cut = (drop * c.kv_dim()).min(k.len());
                k.drain(..cut);
                v.drain(..cut);
            }
            st.kv_start += drop;
        }
        let kv_start = st.kv_start;
        for (li, layer) in self.layers.iter().enumerate() {
            for t in 0..n {
                ops::rms_norm(
                    &s.x[t * h..(t + 1) * h],
                    &layer.op_norm,
                    c.norm_eps,
                    &mut s.h[t * h..(t + 1) * h],
                );
            }
            match &layer.mixer {
                Mixer::Conv {
                    in_proj,
                    in_bias,
                    conv_w,
                    conv_b,
                    out_proj,
                    out_bias,
                } => {
                    self.matmul(in_proj, &s.h[..n * h], n, &mut s.big, &mut s.qa);
                    let bcx = &mut s.big[..n * 3 * h];
                    if let Some(b) = in_bias {
                        for row in bcx.chunks_exact_mut(3 * h) {
                            row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
                        }
                    }
                    // B ⊙ x̂ into `mid` (time-major).
                    for t in 0..n {
                        let row = &bcx[t * 3 * h..(t + 1) * 3 * h];
                        for j in 0..h {
                            s.mid[t * h + j] = row[j] * row[2 * h + j];
                        }
                    }
                    ops::causal_conv1d(
                        &s.mid[..n * h],
                        n,
                        h,
                        conv_w,
                        c.conv_l,
                        conv_b.as_deref(),
                        &mut st.conv[li],
                        &mut s.h[..n * h],
                    );
                    for t in 0..n {
                        for j in 0..h {
                            s.h[t * h + j] *= bcx[t * 3 * h + h + j];
                        }
                    }
                    self.matmul(out_proj, &s.h[..n * h], n, &mut s.out, &mut s.qa);
                    if let Some(b) = out_bias {
                        for row in s.out[..n * h].chunks_exact_mut(h) {
                            row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
                        }
                    }
                }
                Mixer::Attention {
                    qkv,
                    q_norm,
                    k_norm,
                    out_proj,
                } => {
                    let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
                    let width = qd + 2 * kvd;
                    self.matmul(qkv, &s.h[..n * h], n, &mut s.big, &mut s.qa);
                    for t in 0..n {
                        ops::rope_cos_sin(
                            pos0 + t,
                            &self.inv_freq,
                            &mut s.cos[..hd / 2],
                            &mut s.sin[..hd / 2],
                        );
                        let row = &mut s.big[t * width..(t + 1) * width];
                        for head in row[..qd + kvd].chunks_exact_mut(hd).enumerate() {
                            let (i, v) = head;
                            let w = if i < c.n_heads { q_norm } else { k_norm };
                            ops::rms_norm_inplace(v, w, c.norm_eps);
                            ops::rope_rotate_half(v, &s.cos[..hd / 2], &s.sin[..hd / 2]);
                        }
                        st.keys[li].extend_from_slice(&row[qd..qd + kvd]);
                        st.values[li].extend_from_slice(&row[qd + kvd..]);
                    }
                    let total = pos0 + n;
                    grow(&mut s.scores, c.n_heads * total);
                    let keys = &st.keys[li];
                    let values = &st.values[li];
                    let big = &s.big;
                    let out = SharedMut(s.attn.as_mut_ptr());
                    let scores = SharedMut(s.scores.as_mut_ptr());
                    let group = c.n_heads / c.n_kv_heads;
                    let scale = 1.0 / (hd as f32).sqrt();
                    let job = move |kvh: usize| {
                        let (out, scores) = (out, scores);
                        // SAFETY: each task owns key/value head `kvh`: the `group × total` scores and the
                        // `group × hd` outputs of every token of its query heads; the buffers hold
                        // n_heads × total and n × q_dim values.
                        let sc = unsafe {
                            std::slice::from_raw_parts_mut(
                                scores.0.add(kvh * group * total),
                                group * total,
                            )
                        };
                        for t in 0..n {
                            let q = &big[t * width..t * width + qd];
                            // SAFETY: as above; the outputs of distinct key/value heads do not overlap.
                            let o = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.0.add(t * qd + kvh * group * hd),
                                    group * hd,
                                )
                            };
                            // Keys from `first` (absolute position) to the query's own.
                            let first = c
                                .sliding_window
                                .map_or(0, |w| (pos0 + t + 1).saturating_sub(w))
                                .max(kv_start);
                            let from = (first - kv_start) * kvd;
                            ops::attend_kv_head(
                                q,
                                &keys[from..],
                                &values[from..],
                                pos0 + t + 1 - first,
                                kvh,
                                group,
                                c.n_kv_heads,
                                hd,
                                scale,
                                sc,
                                o,
                            );
                        }
                    };
                    if n * total * hd < 1 << 12 {
                        // Short context: a thread hand-off would cost more than the work.
                        (0..c.n_kv_heads).for_each(job);
                    } else {
                        self.pool.run(c.n_kv_heads, &job);
                    }
                    self.matmul(out_proj, &s.attn[..n * qd], n, &mut s.out, &mut s.qa);
                }
            }
            for (x, o) in s.x[..n * h].iter_mut().zip(&s.out[..n * h]) {
                *x += o;
            }
            // SwiGLU feed-forward.
            let ff = c.ff_dim;
            for t in 0..n {
                ops::rms_norm(
                    &s.x[t * h..(t + 1) * h],
                    &layer.ffn_norm,
                    c.norm_eps,
                    &mut s.h[t * h..(t + 1) * h],
                );
            }
            self.matmul(&layer.w13, &s.h[..n * h], n, &mut s.big, &mut s.qa);
            {
                let big = &s.big;
                let mid = SharedMut(s.mid.as_mut_ptr());
                let gate = move |t: usize| {
                    let mid = mid;
                    let row = &big[t * 2 * ff..(t + 1) * 2 * ff];
                    let (g, u) = row.split_at(ff);
                    // SAFETY: row t of `mid` (n × ff values) is written by this task only.
                    let o = unsafe { std::slice::from_raw_parts_mut(mid.0.add(t * ff), ff) };
                    ops::swiglu(g, u, o);
                };
                if n >= 8 {
                    self.pool.run(n, &gate);
                } else {
                    (0..n).for_each(gate);
                }
            }
            self.matmul(&layer.w2, &s.mid[..n * ff], n, &mut s.out, &mut s.qa);
            for (x, o) in s.x[..n * h].iter_mut().zip(&s.out[..n * h]) {
                *x += o;
            }
        }
        st.pos += n;
        hidden.resize(n * h, 0.0);
        for t in 0..n {
            ops::rms_norm(
                &s.x[t * h..(t + 1) * h],
                &self.final_norm,
                c.norm_eps,
                &mut hidden[t * h..(t + 1) * h],
            );
        }
        if let Some(logits) = logits {
            let head = self.lm_head.as_ref().unwrap_or(&self.embed);
            let (src, m) = if all_logits {
                (&hidden[..], n)
            } else {
                (&hidden[(n - 1) * h..], 1)
            };
            logits.resize(m * c.vocab_size, 0.0);
            self.matmul(head, src, m, logits, &mut s.qa);
        }
        Ok(())
    }
}

/// A model with its sequence state, stepped token by token (or chunk by chunk) — the decode loop's view.
pub struct Lfm2Stream<'m> {
    pub model: &'m Lfm2,
    pub state: Lfm2State,
    hidden: Vec<f32>,
}

impl<'m> Lfm2Stream<'m> {
    pub fn new(model: &'m Lfm2, capacity: usize) -> Self {
        Lfm2Stream {
            model,
            state: model.new_state(capacity),
            hidden: Vec::new(),
        }
    }
}

impl crate::StreamingModule for Lfm2Stream<'_> {
    type Input = [u32];
    /// Logits of the last new token.
    type Output = Vec<f32>;

    fn step(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.model.forward(
            ids,
            &mut self.state,
            &mut self.hidden,
            Some(&mut logits),
            false,
        )?;
        Ok(logits)
    }

    fn reset_state(&mut self) {
        self.state = self.model.new_state(
            self.state
                .keys
                .first()
                .map_or(0, |k| k.capacity() / self.model.cfg.kv_dim().max(1)),
        );
    }
}
