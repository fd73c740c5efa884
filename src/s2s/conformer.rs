//! The LFM2-Audio audio encoder (NeMo FastConformer) and the MLP adapter into the backbone width.
//!
//! Encoder, for a log-mel sequence `frames × feat_in`:
//! 1. `dw_striding` subsampling by `2^k` (k = log2 of `subsampling_factor`): the features are a one-channel image
//!    `time × freq`; a 3×3 stride-2 conv to `C` channels + ReLU, then `k − 1` times a depthwise 3×3 stride-2 conv,
//!    a pointwise 1×1 conv and ReLU (all padded by 1); the `C × freq'` values of each output step are flattened
//!    channel-major and projected to `d_model` (`pre_encode.out`). Each stage maps a length `L` to `⌈L / 2⌉`.
//! 2. `(optional √d_model scaling)`; relative positions `T'−1 … −(T'−1)` as sinusoids (`pe[2i] = sin`,
//!    `pe[2i+1] = cos`, wavelengths 10000^(2i/d)).
//! 3. `n_layers` Conformer blocks, each
//!    `x += ½·FF₁(LN x)`; `x += RelMHSA(LN x)`; `x += Conv(LN x)`; `x += ½·FF₂(LN x)`; `x = LN x`, where
//!    - FF is Linear → SiLU → Linear (width `ff_expansion_factor · d`);
//!    - RelMHSA is Transformer-XL attention: `score(i, j) = ((q_i + u)·k_j + (q_i + v)·p_{i−j}) / √d_head` with the
//!      per-head biases `pos_bias_u` / `pos_bias_v` and `p = linear_pos(pe)` (no bias), softmax over all `j`;
//!    - Conv is pointwise conv to `2d` → GLU → depthwise conv (kernel `conv_kernel_size`, centred) → BatchNorm
//!      (running statistics, folded into the depthwise conv at load) → SiLU → pointwise conv.
//! 4. `out_proj` when `feat_out` differs from `d_model`.
//!
//! Adapter (`audio_adapter`): LayerNorm → Linear → GELU (erf) → Linear.

use crate::kernels::matmul::{matmul_input, Input, Path as KernelPath};
use crate::kernels::ops;
use crate::kernels::pool::ThreadPool;
use crate::kernels::quant::{DType, QuantActs, Weights, QK};
use crate::s2s::weights::Checkpoint;
use crate::{Error, Result};
use serde::Deserialize;
use std::sync::{Arc, Mutex};

/// LayerNorm and BatchNorm epsilon (PyTorch's defaults, which NeMo keeps).
const NORM_EPS: f32 = 1e-5;
/// Base of the sinusoidal position wavelengths.
const POS_BASE: f32 = 10_000.0;

/// The `encoder` section of an LFM2-Audio `config.json` (NeMo `ConformerEncoder` arguments; training-only keys
/// such as dropouts are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EncoderConfig {
    pub feat_in: usize,
    #[serde(default = "minus_one")]
    pub feat_out: i64,
    pub n_layers: usize,
    pub d_model: usize,
    #[serde(default = "default_subsampling")]
    pub subsampling: String,
    #[serde(default = "default_factor")]
    pub subsampling_factor: usize,
    #[serde(default = "minus_one")]
    pub subsampling_conv_channels: i64,
    #[serde(default)]
    pub causal_downsampling: bool,
    #[serde(default)]
    pub reduction: Option<String>,
    #[serde(default = "default_four")]
    pub ff_expansion_factor: usize,
    #[serde(default = "default_attention")]
    pub self_attention_model: String,
    pub n_heads: usize,
    #[serde(default)]
    pub att_context_size: Option<serde_json::Value>,
    #[serde(default = "default_true")]
    pub xscaling: bool,
    #[serde(default = "default_true")]
    pub untie_biases: bool,
    #[serde(default = "default_kernel")]
    pub conv_kernel_size: usize,
    #[serde(default = "default_norm")]
    pub conv_norm_type: String,
    #[serde(default)]
    pub conv_context_size: Option<serde_json::Value>,
}

fn minus_one() -> i64 {
    -1
}
fn default_subsampling() -> String {
    "dw_striding".into()
}
fn default_factor() -> usize {
    8
}
fn default_four() -> usize {
    4
}
fn default_attention() -> String {
    "rel_pos".into()
}
fn default_true() -> bool {
    true
}
fn default_kernel() -> usize {
    31
}
fn default_norm() -> String {
    "batch_norm".into()
}

impl EncoderConfig {
    /// The published LFM2-Audio-1.5B encoder: 17 FastConformer layers of width 512.
    pub fn lfm2_audio() -> EncoderConfig {
        EncoderConfig {
            feat_in: 128,
            feat_out: -1,
            n_layers: 17,
            d_model: 512,
            subsampling: "dw_striding".into(),
            subsampling_factor: 8,
            subsampling_conv_channels: 256,
            causal_downsampling: false,
            reduction: None,
            ff_expansion_factor: 4,
            self_attention_model: "rel_pos".into(),
            n_heads: 8,
            att_context_size: Some(serde_json::json!([-1, -1])),
            xscaling: false,
            untie_biases: true,
            conv_kernel_size: 9,
            conv_norm_type: "batch_norm".into(),
            conv_context_size: None,
        }
    }

    /// Width of the encoder output.
    pub fn out_dim(&self) -> usize {
        if self.feat_out > 0 {
            self.feat_out as usize
        } else {
            self.d_model
        }
    }
}

/// The checked, derived sizes of an encoder.
#[derive(Debug, Clone)]
struct Dims {
    feat_in: usize,
    d: usize,
    d_ff: usize,
    heads: usize,
    channels: usize,
    /// Number of stride-2 stages.
    stages: usize,
    /// Frequency bins after subsampling.
    freq_out: usize,
    kernel: usize,
    /// Left context of the depthwise conv (the right one is `kernel − 1 − left`).
    conv_left: usize,
    xscale: Option<f32>,
    out_dim: Option<usize>,
}

fn config_error(m: impl std::fmt::Display) -> Error {
    Error::Model(format!("encoder config: {m}"))
}

impl Dims {
    fn new(cfg: &EncoderConfig) -> Result<Dims> {
        if cfg.subsampling != "dw_striding" {
            return Err(config_error(format!(
                "subsampling `{}` is not supported (only dw_striding)",
                cfg.subsampling
            )));
        }
        if cfg.causal_downsampling {
            return Err(config_error("causal_downsampling is not supported"));
        }
        if cfg.reduction.is_some() {
            return Err(config_error("reduction is not supported"));
        }
        if cfg.self_attention_model != "rel_pos" {
            return Err(config_error(format!(
                "self_attention_model `{}` is not supported (only rel_pos)",
                cfg.self_attention_model
            )));
        }
        if cfg.conv_norm_type != "batch_norm" {
            return Err(config_error(format!(
                "conv_norm_type `{}` is not supported (only batch_norm)",
                cfg.conv_norm_type
            )));
        }
        if let Some(v) = &cfg.att_context_size {
            let flat: Vec<i64> = match v {
                serde_json::Value::Array(a) if a.iter().all(|x| x.is_array()) => a
                    .first()
                    .and_then(|x| x.as_array())
                    .map(|x| x.iter().filter_map(|y| y.as_i64()).collect())
                    .unwrap_or_default(),
                serde_json::Value::Array(a) => a.iter().filter_map(|y| y.as_i64()).collect(),
                _ => Vec::new(),
            };
            if flat.iter().any(|&c| c >= 0) {
                return Err(config_error(format!(
                    "att_context_size {v} (limited attention context) is not supported, only [-1, -1]"
                )));
            }
        }
        let f = cfg.subsampling_factor;
        if f < 2 || !f.is_power_of_two() {
            return Err(config_error(format!(
                "subsampling_factor {f} must be a power of two ≥ 2"
            )));
        }
        if cfg.d_model == 0 || cfg.n_heads == 0 || !cfg.d_model.is_multiple_of(cfg.n_heads) {
            return Err(config_error(format!(
                "d_model {} must be a positive multiple of n_heads {}",
                cfg.d_model, cfg.n_heads
            )));
        }
        let k = cfg.conv_kernel_size;
        if k.is_multiple_of(2) {
            return Err(config_error(format!("conv_kernel_size {k} must be odd")));
        }
        let conv_left = match &cfg.conv_context_size {
            None | Some(serde_json::Value::Null) => (k - 1) / 2,
            Some(serde_json::Value::String(s)) if s == "causal" => k - 1,
            Some(v) => {
                let a: Vec<i64> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|y| y.as_i64()).collect())
                    .unwrap_or_default();
                if a.len() != 2 || a[0] < 0 || a[1] < 0 || (a[0] + a[1] + 1) as usize != k {
                    return Err(config_error(format!(
                        "conv_context_size {v} must be [left, right] with left + right + 1 = {k}"
                    )));
                }
                a[0] as usize
            }
        };
        let stages = f.trailing_zeros() as usize;
        let mut freq_out = cfg.feat_in;
        for _ in 0..stages {
            freq_out = freq_out.div_ceil(2);
        }
        let channels = if cfg.subsampling_conv_channels > 0 {
            cfg.subsampling_conv_channels as usize
        } else {
            cfg.d_model
        };
        let out_dim = (cfg.feat_out > 0 && cfg.feat_out as usize != cfg.d_model)
            .then_some(cfg.feat_out as usize);
        Ok(Dims {
            feat_in: cfg.feat_in,
            d: cfg.d_model,
            d_ff: cfg.d_model * cfg.ff_expansion_factor,
            heads: cfg.n_heads,
            channels,
            stages,
            freq_out,
            kernel: k,
            conv_left,
            xscale: cfg.xscaling.then(|| (cfg.d_model as f32).sqrt()),
            out_dim,
        })
    }
}

/// Where the tensors come from: a checkpoint, or a deterministic random generator for benchmarks.
trait TensorSource {
    /// Tensor `name` (relative to the component's prefix) as f32 values of exactly `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

struct CheckpointSource<'a> {
    ck: &'a Checkpoint,
    prefix: String,
}

impl CheckpointSource<'_> {
    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

impl TensorSource for CheckpointSource<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.ck.f32(&self.full(name), shape)
    }
}

/// Uniform ±1/√fan_in weights, unit norm gains, zero biases and running means, unit running variances.
struct RandomSource {
    state: u64,
}

impl TensorSource for RandomSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let in_norm = name.contains("norm");
        let constant = match leaf {
            "running_var" => Some(1.0),
            "running_mean" | "bias" => Some(0.0),
            "weight" if in_norm => Some(1.0),
            _ => None,
        };
        if let Some(c) = constant {
            return Ok(vec![c; n]);
        }
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let scale = 1.0 / (fan_in as f32).sqrt();
        Ok((0..n)
            .map(|_| {
                self.state = self
                    .state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((self.state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect())
    }
}

/// A `rows × cols` matrix in `dtype`; kept in f32 when a quantised type cannot hold it (`cols` not a multiple of
/// the block size).
fn to_weights(rows: usize, cols: usize, v: &[f32], dtype: DType, name: &str) -> Result<Weights> {
    let dt = if dtype.is_quantized() && !cols.is_multiple_of(QK) {
        DType::F32
    } else {
        dtype
    };
    Weights::from_f32(rows, cols, v, dt).map_err(|e| Error::Model(format!("tensor `{name}`: {e}")))
}

/// A linear map `y = x·Wᵀ + b`.
struct Linear {
    w: Weights,
    b: Option<Vec<f32>>,
}

impl Linear {
    /// `{name}.weight` of shape `shape` (`[out, in]`, or a 1×1 conv's `[out, in, 1]`) and, with `bias`,
    /// `{name}.bias` (NeMo's conformer always has them; a missing one is an error).
    fn load(
        src: &mut dyn TensorSource,
        name: &str,
        shape: &[usize],
        bias: bool,
        dtype: DType,
    ) -> Result<Linear> {
        let (rows, cols) = (shape[0], shape[1..].iter().product());
        let wname = format!("{name}.weight");
        let v = src.tensor(&wname, shape)?;
        let w = to_weights(rows, cols, &v, dtype, &wname)?;
        let bname = format!("{name}.bias");
        let b = if bias {
            Some(src.tensor(&bname, &[rows])?)
        } else {
            None
        };
        Ok(Linear { w, b })
    }
}

/// LayerNorm gain and bias.
struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl LayerNorm {
    fn load(src: &mut dyn TensorSource, name: &str, dim: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: src.tensor(&format!("{name}.weight"), &[dim])?,
            b: src.tensor(&format!("{name}.bias"), &[dim])?,
        })
    }

    /// Normalise each row of `x` (`n × dim`) into `out`.
    fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        let d = self.w.len();
        out.resize(x.len(), 0.0);
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (var + NORM_EPS as f64).sqrt();
            for ((o, &v), (&g, &b)) in or.iter_mut().zip(xr).zip(self.w.iter().zip(&self.b)) {
                *o = ((v as f64 - mean) * inv) as f32 * g + b;
            }
        }
    }
}

/// Matrix products on one pool.
struct Compute {
    pool: Arc<ThreadPool>,
    path: KernelPath,
}

impl Compute {
    fn new(threads: usize) -> Compute {
        Compute {
            pool: Arc::new(ThreadPool::new(threads)),
            path: KernelPath::best(),
        }
    }

    /// `y = x·Wᵀ + b` for `n` rows of `x`.
    fn linear(&self, l: &Linear, x: &[f32], n: usize, y: &mut Vec<f32>, qa: &mut QuantActs) {
        y.resize(n * l.w.rows, 0.0);
        let inp = if l.w.dtype().is_quantized() {
            qa.quantize_on(x, n, l.w.cols, Some(&self.pool));
            Input::Quant(qa)
        } else {
            Input::F32 { x, cols: l.w.cols }
        };
        matmul_input(self.path, &l.w, inp, n, y, &self.pool);
        if let Some(b) = &l.b {
            for row in y.chunks_exact_mut(l.w.rows) {
                for (v, &bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
    }
}

/// One depthwise stride-2 stage of the subsampling: depthwise 3×3 conv, pointwise conv, ReLU.
struct DwStage {
    /// Tap-major `9 × C` (tap = 3·row + column).
    dw_w: Vec<f32>,
    dw_b: Vec<f32>,
    pw: Linear,
}

struct Subsampling {
    /// First conv, one input channel, tap-major: `9 × C`.
    conv0_w: Vec<f32>,
    conv0_b: Vec<f32>,
    stages: Vec<DwStage>,
    out: Linear,
}

/// A per-channel kernel `channels × taps` rearranged tap-major (`taps × channels`), so that the inner loops over
/// channels read contiguous weights.
fn taps_major(w: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let mut t = vec![0f32; channels * taps];
    for c in 0..channels {
        for j in 0..taps {
            t[j * channels + c] = w[c * taps + j];
        }
    }
    t
}

/// Output length of a 3-tap, stride-2 conv padded by 1 on both sides.
fn halve(n: usize) -> usize {
    n.div_ceil(2)
}

impl Subsampling {
    fn load(src: &mut dyn TensorSource, dims: &Dims, dtype: DType) -> Result<Subsampling> {
        let c = dims.channels;
        let conv0_w = taps_major(
            &src.tensor("pre_encode.conv.0.weight", &[c, 1, 3, 3])?,
            c,
            9,
        );
        let conv0_b = src.tensor("pre_encode.conv.0.bias", &[c])?;
        let mut stages = Vec::new();
        for i in 0..dims.stages - 1 {
            let dw = 3 * i + 2;
            let pw = 3 * i + 3;
            stages.push(DwStage {
                dw_w: taps_major(
                    &src.tensor(&format!("pre_encode.conv.{dw}.weight"), &[c, 1, 3, 3])?,
                    c,
                    9,
                ),
                dw_b: src.tensor(&format!("pre_encode.conv.{dw}.bias"), &[c])?,
                pw: Linear::load(
                    src,
                    &format!("pre_encode.conv.{pw}"),
                    &[c, c, 1, 1],
                    true,
                    dtype,
                )?,
            });
        }
        let out = Linear::load(
            src,
            "pre_encode.out",
            &[dims.d, c * dims.freq_out],
            true,
            dtype,
        )?;
        Ok(Subsampling {
            conv0_w,
            conv0_b,
            stages,
            out,
        })
    }

    /// `frames × feat_in` → (`T' × d`, T').
    fn forward(
        &self,
        cx: &Compute,
        dims: &Dims,
        mel: &[f32],
        frames: usize,
        qa: &mut QuantActs,
    ) -> (Vec<f32>, usize) {
        let c = dims.channels;
        let (mut t, mut f) = (halve(frames), halve(dims.feat_in));
        // Activations are channel-last: [time][freq][channel].
        let mut x = vec![0f32; t * f * c];
        {
            let (fi, w, b) = (dims.feat_in, &self.conv0_w, &self.conv0_b);
            let rows: Vec<Mutex<&mut [f32]>> = x.chunks_mut(f * c).map(Mutex::new).collect();
            cx.pool.run(t, &|to| {
                let Ok(mut row) = rows[to].lock() else { return };
                for fo in 0..f {
                    let out = &mut row[fo * c..(fo + 1) * c];
                    out.copy_from_slice(b);
                    for i in 0..3 {
                        let ti = (2 * to + i) as isize - 1;
                        if ti < 0 || ti as usize >= frames {
                            continue;
                        }
                        for j in 0..3 {
                            let fj = (2 * fo + j) as isize - 1;
                            if fj < 0 || fj as usize >= fi {
                                continue;
                            }
                            let v = mel[ti as usize * fi + fj as usize];
                            let wt = &w[(i * 3 + j) * c..][..c];
                            for (o, &wv) in out.iter_mut().zip(wt) {
                                *o += wv * v;
                            }
                        }
                    }
                    for o in out.iter_mut() {
                        *o = o.max(0.0);
                    }
                }
            });
        }
        let mut y = Vec::new();
        for st in &self.stages {
            let (t2, f2) = (halve(t), halve(f));
            let mut dw = vec![0f32; t2 * f2 * c];
            {
                let src = &x;
                let rows: Vec<Mutex<&mut [f32]>> = dw.chunks_mut(f2 * c).map(Mutex::new).collect();
                cx.pool.run(t2, &|to| {
                    let Ok(mut row) = rows[to].lock() else { return };
                    for fo in 0..f2 {
                        let out = &mut row[fo * c..(fo + 1) * c];
                        out.copy_from_slice(&st.dw_b);
                        for i in 0..3 {
                            let ti = (2 * to + i) as isize - 1;
                            if ti < 0 || ti as usize >= t {
                                continue;
                            }
                            for j in 0..3 {
                                let fj = (2 * fo + j) as isize - 1;
                                if fj < 0 || fj as usize >= f {
                                    continue;
                                }
                                let inp = &src[(ti as usize * f + fj as usize) * c..][..c];
                                let wt = &st.dw_w[(i * 3 + j) * c..][..c];
                                for ((o, &v), &wv) in out.iter_mut().zip(inp).zip(wt) {
                                    *o += wv * v;
                                }
                            }
                        }
                    }
                });
            }
            cx.linear(&st.pw, &dw, t2 * f2, &mut y, qa);
            for v in y.iter_mut() {
                *v = v.max(0.0);
            }
            std::mem::swap(&mut x, &mut y);
            t = t2;
            f = f2;
        }
        // Flatten each step channel-major (c · F' + f), as the reference's transpose + reshape does.
        let mut flat = vec![0f32; t * c * f];
        for ti in 0..t {
            for fi in 0..f {
                for ch in 0..c {
                    flat[ti * c * f + ch * f + fi] = x[(ti * f + fi) * c + ch];
                }
            }
        }
        let mut out = Vec::new();
        cx.linear(&self.out, &flat, t, &mut out, qa);
        (out, t)
    }
}

struct FeedForward {
    l1: Linear,
    l2: Linear,
}

impl FeedForward {
    fn load(src: &mut dyn TensorSource, name: &str, dims: &Dims, dtype: DType) -> Result<Self> {
        Ok(FeedForward {
            l1: Linear::load(
                src,
                &format!("{name}.linear1"),
                &[dims.d_ff, dims.d],
                true,
                dtype,
            )?,
            l2: Linear::load(
                src,
                &format!("{name}.linear2"),
                &[dims.d, dims.d_ff],
                true,
                dtype,
            )?,
        })
    }

    fn forward(&self, cx: &Compute, x: &[f32], n: usize, out: &mut Vec<f32>, qa: &mut QuantActs) {
        let mut h = Vec::new();
        cx.linear(&self.l1, x, n, &mut h, qa);
        for v in h.iter_mut() {
            *v = ops::silu(*v);
        }
        cx.linear(&self.l2, &h, n, out, qa);
    }
}

struct RelAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    pos: Linear,
    /// `heads × d_head` each.
    bias_u: Vec<f32>,
    bias_v: Vec<f32>,
}

impl RelAttention {
    fn load(src: &mut dyn TensorSource, name: &str, dims: &Dims, dtype: DType) -> Result<Self> {
        let d = dims.d;
        let lin = |src: &mut dyn TensorSource, l: &str, bias: bool| {
            Linear::load(src, &format!("{name}.{l}"), &[d, d], bias, dtype)
        };
        Ok(RelAttention {
            q: lin(src, "linear_q", true)?,
            k: lin(src, "linear_k", true)?,
            v: lin(src, "linear_v", true)?,
            out: lin(src, "linear_out", true)?,
            pos: lin(src, "linear_pos", false)?,
            bias_u: src.tensor(&format!("{name}.pos_bias_u"), &[dims.heads, d / dims.heads])?,
            bias_v: src.tensor(&format!("{name}.pos_bias_v"), &[dims.heads, d / dims.heads])?,
        })
    }

    /// `x`: `n × d`; `pos`: the `(2n − 1) × d` sinusoids of relative positions `n−1 … −(n−1)`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        cx: &Compute,
        dims: &Dims,
        x: &[f32],
        n: usize,
        pos: &[f32],
        out: &mut Vec<f32>,
        qa: &mut QuantActs,
    ) {
        let (d, heads) = (dims.d, dims.heads);
        let dh = d / heads;
        let (mut q, mut k, mut v, mut p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        cx.linear(&self.q, x, n, &mut q, qa);
        cx.linear(&self.k, x, n, &mut k, qa);
        cx.linear(&self.v, x, n, &mut v, qa);
        cx.linear(&self.pos, pos, 2 * n - 1, &mut p, qa);
        let scale = 1.0 / (dh as f32).sqrt();
        let mut ctx = vec![0f32; n * d];
        {
            let rows: Vec<Mutex<&mut [f32]>> = ctx.chunks_mut(d).map(Mutex::new).collect();
            let (q, k, v, p) = (&q, &k, &v, &p);
            cx.pool.run(n, &|i| {
                let Ok(mut row) = rows[i].lock() else { return };
                let mut scores = vec![0f32; n];
                let mut qu = vec![0f32; dh];
                let mut qv = vec![0f32; dh];
                for h in 0..heads {
                    let qi = &q[i * d + h * dh..][..dh];
                    for e in 0..dh {
                        qu[e] = qi[e] + self.bias_u[h * dh + e];
                        qv[e] = qi[e] + self.bias_v[h * dh + e];
                    }
                    for (j, s) in scores.iter_mut().enumerate() {
                        // Relative position i − j sits at row (n − 1) − (i − j) of `p`.
                        let m = n - 1 - i + j;
                        let content = ops::dot(&qu, &k[j * d + h * dh..][..dh]);
                        let position = ops::dot(&qv, &p[m * d + h * dh..][..dh]);
                        *s = (content + position) * scale;
                    }
                    ops::softmax(&mut scores);
                    let o = &mut row[h * dh..(h + 1) * dh];
                    o.fill(0.0);
                    for (j, &s) in scores.iter().enumerate() {
                        ops::axpy(o, s, &v[j * d + h * dh..][..dh]);
                    }
                }
            });
        }
        cx.linear(&self.out, &ctx, n, out, qa);
    }
}

struct ConvModule {
    pw1: Linear,
    /// Depthwise kernel with the BatchNorm folded in, tap-major: `kernel × d`.
    dw_w: Vec<f32>,
    dw_b: Vec<f32>,
    pw2: Linear,
}

impl ConvModule {
    fn load(src: &mut dyn TensorSource, name: &str, dims: &Dims, dtype: DType) -> Result<Self> {
        let (d, k) = (dims.d, dims.kernel);
        let pw1 = Linear::load(
            src,
            &format!("{name}.pointwise_conv1"),
            &[2 * d, d, 1],
            true,
            dtype,
        )?;
        let mut dw_w = src.tensor(&format!("{name}.depthwise_conv.weight"), &[d, 1, k])?;
        let mut dw_b = src.tensor(&format!("{name}.depthwise_conv.bias"), &[d])?;
        let bn = format!("{name}.batch_norm");
        let gamma = src.tensor(&format!("{bn}.weight"), &[d])?;
        let beta = src.tensor(&format!("{bn}.bias"), &[d])?;
        let mean = src.tensor(&format!("{bn}.running_mean"), &[d])?;
        let var = src.tensor(&format!("{bn}.running_var"), &[d])?;
        for c in 0..d {
            let s = gamma[c] / (var[c] + NORM_EPS).sqrt();
            for w in &mut dw_w[c * k..(c + 1) * k] {
                *w *= s;
            }
            dw_b[c] = (dw_b[c] - mean[c]) * s + beta[c];
        }
        let dw_w = taps_major(&dw_w, d, k);
        let pw2 = Linear::load(
            src,
            &format!("{name}.pointwise_conv2"),
            &[d, d, 1],
            true,
            dtype,
        )?;
        Ok(ConvModule {
            pw1,
            dw_w,
            dw_b,
            pw2,
        })
    }

    fn forward(
        &self,
        cx: &Compute,
        dims: &Dims,
        x: &[f32],
        n: usize,
        out: &mut Vec<f32>,
        qa: &mut QuantActs,
    ) {
        let (d, k, left) = (dims.d, dims.kernel, dims.conv_left);
        let mut h = Vec::new();
        cx.linear(&self.pw1, x, n, &mut h, qa);
        // GLU over channels: first half gated by the sigmoid of the second.
        let mut g = vec![0f32; n * d];
        for (gr, hr) in g.chunks_exact_mut(d).zip(h.chunks_exact(2 * d)) {
            for c in 0..d {
                gr[c] = hr[c] / (1.0 + (-hr[d + c]).exp());
            }
        }
        let mut y = vec![0f32; n * d];
        for t in 0..n {
            let yr = &mut y[t * d..(t + 1) * d];
            yr.copy_from_slice(&self.dw_b);
            for j in 0..k {
                let ti = (t + j) as isize - left as isize;
                if ti < 0 || ti as usize >= n {
                    continue;
                }
                let gr = &g[ti as usize * d..(ti as usize + 1) * d];
                let wt = &self.dw_w[j * d..(j + 1) * d];
                for ((y, &gv), &wv) in yr.iter_mut().zip(gr).zip(wt) {
                    *y += wv * gv;
                }
            }
            for v in yr.iter_mut() {
                *v = ops::silu(*v);
            }
        }
        cx.linear(&self.pw2, &y, n, out, qa);
    }
}

struct ConformerLayer {
    norm_ff1: LayerNorm,
    ff1: FeedForward,
    norm_att: LayerNorm,
    att: RelAttention,
    norm_conv: LayerNorm,
    conv: ConvModule,
    norm_ff2: LayerNorm,
    ff2: FeedForward,
    norm_out: LayerNorm,
}

impl ConformerLayer {
    fn load(src: &mut dyn TensorSource, i: usize, dims: &Dims, dtype: DType) -> Result<Self> {
        let p = format!("layers.{i}");
        let d = dims.d;
        Ok(ConformerLayer {
            norm_ff1: LayerNorm::load(src, &format!("{p}.norm_feed_forward1"), d)?,
            ff1: FeedForward::load(src, &format!("{p}.feed_forward1"), dims, dtype)?,
            norm_att: LayerNorm::load(src, &format!("{p}.norm_self_att"), d)?,
            att: RelAttention::load(src, &format!("{p}.self_attn"), dims, dtype)?,
            norm_conv: LayerNorm::load(src, &format!("{p}.norm_conv"), d)?,
            conv: ConvModule::load(src, &format!("{p}.conv"), dims, dtype)?,
            norm_ff2: LayerNorm::load(src, &format!("{p}.norm_feed_forward2"), d)?,
            ff2: FeedForward::load(src, &format!("{p}.feed_forward2"), dims, dtype)?,
            norm_out: LayerNorm::load(src, &format!("{p}.norm_out"), d)?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        cx: &Compute,
        dims: &Dims,
        x: &mut Vec<f32>,
        n: usize,
        pos: &[f32],
        qa: &mut QuantActs,
    ) {
        let (mut h, mut o) = (Vec::new(), Vec::new());
        self.norm_ff1.apply(x, &mut h);
        self.ff1.forward(cx, &h, n, &mut o, qa);
        add_scaled(x, &o, 0.5);
        self.norm_att.apply(x, &mut h);
        self.att.forward(cx, dims, &h, n, pos, &mut o, qa);
        add_scaled(x, &o, 1.0);
        self.norm_conv.apply(x, &mut h);
        self.conv.forward(cx, dims, &h, n, &mut o, qa);
        add_scaled(x, &o, 1.0);
        self.norm_ff2.apply(x, &mut h);
        self.ff2.forward(cx, &h, n, &mut o, qa);
        add_scaled(x, &o, 0.5);
        self.norm_out.apply(x, &mut h);
        std::mem::swap(x, &mut h);
    }
}

fn add_scaled(x: &mut [f32], y: &[f32], a: f32) {
    for (v, &w) in x.iter_mut().zip(y) {
        *v += a * w;
    }
}

/// Sinusoids of the relative positions `n−1, n−2, …, −(n−1)`: `(2n − 1) × d`.
fn relative_positions(n: usize, d: usize) -> Vec<f32> {
    let mut pe = vec![0f32; (2 * n - 1) * d];
    let step = -(POS_BASE.ln() / d as f32);
    for m in 0..2 * n - 1 {
        let p = (n - 1) as f32 - m as f32;
        for i in 0..d / 2 {
            let div = ((2 * i) as f32 * step).exp();
            let a = (p * div) as f64;
            pe[m * d + 2 * i] = a.sin() as f32;
            pe[m * d + 2 * i + 1] = a.cos() as f32;
        }
    }
    pe
}

/// The FastConformer audio encoder.
pub struct Encoder {
    dims: Dims,
    sub: Subsampling,
    layers: Vec<ConformerLayer>,
    out_proj: Option<Linear>,
    cx: Compute,
}

impl Encoder {
    /// Run the encoder's kernels on `pool` (shared with the other parts of a speech model).
    pub fn use_pool(&mut self, pool: Arc<ThreadPool>) {
        self.cx.pool = pool;
    }

    /// Load the tensors under `prefix` (the published checkpoint uses `conformer`).
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        cfg: &EncoderConfig,
        dtype: DType,
        threads: usize,
    ) -> Result<Encoder> {
        let mut src = CheckpointSource {
            ck,
            prefix: prefix.to_string(),
        };
        Encoder::build(&mut src, cfg, dtype, threads)
    }

    /// Random weights of the shape `cfg` describes (for benchmarks).
    pub fn random(cfg: &EncoderConfig, dtype: DType, threads: usize, seed: u64) -> Result<Encoder> {
        let mut src = RandomSource {
            state: seed ^ 0x5851_F42D_4C95_7F2D,
        };
        Encoder::build(&mut src, cfg, dtype, threads)
    }

    fn build(
        src: &mut dyn TensorSource,
        cfg: &EncoderConfig,
        dtype: DType,
        threads: usize,
    ) -> Result<Encoder> {
        let dims = Dims::new(cfg)?;
        let sub = Subsampling::load(src, &dims, dtype)?;
        let layers = (0..cfg.n_layers)
            .map(|i| ConformerLayer::load(src, i, &dims, dtype))
            .collect::<Result<Vec<_>>>()?;
        let out_proj = match dims.out_dim {
            Some(o) => Some(Linear::load(src, "out_proj", &[o, dims.d], true, dtype)?),
            None => None,
        };
        Ok(Encoder {
            dims,
            sub,
            layers,
            out_proj,
            cx: Compute::new(threads),
        })
    }

    /// Width of the output vectors.
    pub fn out_dim(&self) -> usize {
        self.dims.out_dim.unwrap_or(self.dims.d)
    }

    /// Length of the encoder output for `frames` mel frames with the published ×8 subsampling (`⌈frames / 8⌉`).
    pub fn output_len(frames: usize) -> usize {
        frames.div_ceil(8)
    }

    /// mel `frames × feat_in` (time-major) → (`T' × out_dim`, T').
    pub fn forward(&self, mel: &[f32], frames: usize) -> Result<(Vec<f32>, usize)> {
        let dims = &self.dims;
        if frames == 0 || mel.len() != frames * dims.feat_in {
            return Err(Error::Model(format!(
                "encoder input: expected frames ≥ 1 and {} × {} = {} values, got {frames} frames and {} values",
                frames,
                dims.feat_in,
                frames * dims.feat_in,
                mel.len()
            )));
        }
        let mut qa = QuantActs::default();
        let (mut x, n) = self.sub.forward(&self.cx, dims, mel, frames, &mut qa);
        if let Some(s) = dims.xscale {
            for v in x.iter_mut() {
                *v *= s;
            }
        }
        let pos = relative_positions(n, dims.d);
        for layer in &self.layers {
            layer.forward(&self.cx, dims, &mut x, n, &pos, &mut qa);
        }
        if let Some(p) = &self.out_proj {
            let mut y = Vec::new();
            self.cx.linear(p, &x, n, &mut y, &mut qa);
            x = y;
        }
        Ok((x, n))
    }
}

/// The MLP from the encoder width into the backbone width (`audio_adapter`): LayerNorm → Linear → GELU → Linear.
pub struct Adapter {
    norm: LayerNorm,
    l1: Linear,
    l2: Linear,
    cx: Compute,
}

impl Adapter {
    /// Run the adapter's kernels on `pool` (shared with the other parts of a speech model).
    pub fn use_pool(&mut self, pool: Arc<ThreadPool>) {
        self.cx.pool = pool;
    }

    /// Load `{prefix}.model.{0,1,3}` (LayerNorm, Linear in → out, Linear out → out).
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        dtype: DType,
        threads: usize,
    ) -> Result<Adapter> {
        let mut src = CheckpointSource {
            ck,
            prefix: prefix.to_string(),
        };
        Adapter::build(&mut src, in_dim, out_dim, dtype, threads)
    }

    /// Random weights (for benchmarks).
    pub fn random(
        in_dim: usize,
        out_dim: usize,
        dtype: DType,
        threads: usize,
        seed: u64,
    ) -> Result<Adapter> {
        let mut src = RandomSource {
            state: seed ^ 0x2545_F491_4F6C_DD1D,
        };
        Adapter::build(&mut src, in_dim, out_dim, dtype, threads)
    }

    fn build(
        src: &mut dyn TensorSource,
        in_dim: usize,
        out_dim: usize,
        dtype: DType,
        threads: usize,
    ) -> Result<Adapter> {
        Ok(Adapter {
            norm: LayerNorm::load(src, "model.0", in_dim)?,
            l1: Linear::load(src, "model.1", &[out_dim, in_dim], true, dtype)?,
            l2: Linear::load(src, "model.3", &[out_dim, out_dim], true, dtype)?,
            cx: Compute::new(threads),
        })
    }

    /// `n × in_dim` → `n × out_dim`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut qa = QuantActs::default();
        let (mut h, mut y, mut out) = (Vec::new(), Vec::new(), Vec::new());
        self.norm.apply(x, &mut h);
        self.cx.linear(&self.l1, &h, n, &mut y, &mut qa);
        for v in y.iter_mut() {
            *v = ops::gelu_erf(*v);
        }
        self.cx.linear(&self.l2, &y, n, &mut out, &mut qa);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_len_is_the_subsampling_length_rule() {
        for frames in 1..200 {
            let mut l = frames;
            for _ in 0..3 {
                l = halve(l);
            }
            assert_eq!(Encoder::output_len(frames), l, "frames {frames}");
        }
    }

    #[test]
    fn random_encoder_runs_with_the_published_shape_rules() {
        let mut cfg = EncoderConfig::lfm2_audio();
        cfg.n_layers = 1;
        cfg.d_model = 64;
        cfg.n_heads = 4;
        cfg.subsampling_conv_channels = 16;
        let enc = Encoder::random(&cfg, DType::F32, 1, 7).unwrap();
        let mel: Vec<f32> = (0..37 * 128)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
            .collect();
        let (y, n) = enc.forward(&mel, 37).unwrap();
        assert_eq!(n, Encoder::output_len(37));
        assert_eq!(y.len(), n * 64);
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn unsupported_config_is_refused_with_its_key() {
        let mut cfg = EncoderConfig::lfm2_audio();
        cfg.self_attention_model = "abs_pos".into();
        let e = Encoder::random(&cfg, DType::F32, 1, 0)
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("abs_pos"));
    }

    #[test]
    fn relative_positions_run_from_plus_to_minus() {
        let pe = relative_positions(3, 4);
        // Row 2 is relative position 0: sin 0 = 0, cos 0 = 1.
        assert_eq!(&pe[2 * 4..3 * 4], &[0.0, 1.0, 0.0, 1.0]);
        // Row 0 is +2, row 4 is −2: sin is odd, cos even.
        assert!((pe[0] + pe[4 * 4]).abs() < 1e-7);
        assert!((pe[1] - pe[4 * 4 + 1]).abs() < 1e-7);
    }
}
