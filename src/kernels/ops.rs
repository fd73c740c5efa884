//! Vector kernels of a transformer / short-convolution block: RMSNorm, RoPE (rotate-half and interleaved pairs),
//! softmax, SiLU / GELU, depthwise causal conv1d with state, attention over a KV cache with grouped-query heads,
//! embedding lookup.
//!
//! The inner loops that matter for speed (dot products and `y += a·x` of attention, the RMSNorm reduction) have an
//! AVX2+FMA path chosen at run time next to the scalar reference; the rest is scalar (they touch each value once).

use super::isa::Isa;
use super::quant::Weights;

/// `out = w ⊙ x / sqrt(mean(x²) + eps)` (the RMSNorm of LFM2 / Llama: weight multiplies the normalised value).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = sum_squares(x);
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

/// In-place RMSNorm.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let ss = sum_squares(x);
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = g * (*v * inv);
    }
}

/// Σ x², on the fastest path available.
pub fn sum_squares(x: &[f32]) -> f32 {
    dot(x, x)
}

/// Σ a·b on the fastest path available.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx2_fma {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::dot(a, b) };
    }
    dot_scalar(a, b)
}

/// Scalar reference of [`dot`].
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha · x` on the fastest path available.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx2_fma {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::axpy(y, alpha, x) };
    }
    axpy_scalar(y, alpha, x)
}

/// Scalar reference of [`axpy`].
pub fn axpy_scalar(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{EXP_POLY, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// 8 lanes of [`super::exp_poly`], the same operations in the same order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(
            _mm256_min_ps(x, _mm256_set1_ps(88.0)),
            _mm256_set1_ps(-87.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len().min(g.len()).min(u.len());
        let main = n / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for j in (0..main).step_by(8) {
            // SAFETY: j + 8 <= n, within all three slices.
            unsafe {
                let x = _mm256_loadu_ps(g.as_ptr().add(j));
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
                let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
                let y = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(j)));
                _mm256_storeu_ps(out.as_mut_ptr().add(j), y);
            }
        }
        super::swiglu_scalar(&g[main..n], &u[main..n], &mut out[main..n]);
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let main = n / 16 * 16;
        let mut s0 = _mm256_setzero_ps();
        let mut s1 = _mm256_setzero_ps();
        for j in (0..main).step_by(16) {
            // SAFETY: j + 16 <= n, within both slices.
            unsafe {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(j)),
                    _mm256_loadu_ps(b.as_ptr().add(j)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(j + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(j + 8)),
                    s1,
                );
            }
        }
        let s = _mm256_add_ps(s0, s1);
        let lo = _mm256_castps256_ps128(s);
        let hi = _mm256_extractf128_ps(s, 1);
        let q = _mm_add_ps(lo, hi);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut total = _mm_cvtss_f32(q);
        for j in main..n {
            total += a[j] * b[j];
        }
        total
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let main = n / 8 * 8;
        let a = _mm256_set1_ps(alpha);
        for j in (0..main).step_by(8) {
            // SAFETY: j + 8 <= n, within both slices.
            unsafe {
                let p = y.as_mut_ptr().add(j);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(a, _mm256_loadu_ps(x.as_ptr().add(j)), _mm256_loadu_ps(p)),
                );
            }
        }
        for j in main..n {
            y[j] += alpha * x[j];
        }
    }

    /// Lane `j` of the result is the sum of the 8 lanes of `a[j]`, added as ((0+1)+(2+3)) + ((4+5)+(6+7)).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum8x8(a: &[__m256; 8]) -> __m256 {
        let h01 = _mm256_hadd_ps(a[0], a[1]);
        let h23 = _mm256_hadd_ps(a[2], a[3]);
        let h45 = _mm256_hadd_ps(a[4], a[5]);
        let h67 = _mm256_hadd_ps(a[6], a[7]);
        let l = _mm256_hadd_ps(h01, h23);
        let r = _mm256_hadd_ps(h45, h67);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(l, r),
            _mm256_permute2f128_ps::<0x31>(l, r),
        )
    }

    /// `s ← exp(s − max s) / Σ` with [`exp8`] (the lanes of [`super::exp_poly`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn softmax(s: &mut [f32]) {
        let n = s.len();
        let main = n / 8 * 8;
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in s[..main].chunks_exact(8) {
            // SAFETY: `c` holds 8 floats.
            mv = _mm256_max_ps(mv, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
        let m = lanes
            .iter()
            .chain(&s[main..])
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mb = _mm256_set1_ps(m);
        let mut sum = _mm256_setzero_ps();
        for c in s[..main].chunks_exact_mut(8) {
            // SAFETY: `c` holds 8 floats.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mb));
                sum = _mm256_add_ps(sum, e);
                _mm256_storeu_ps(c.as_mut_ptr(), e);
            }
        }
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let mut total = lanes.iter().sum::<f32>();
        for v in &mut s[main..] {
            *v = super::exp_poly(*v - m);
            total += *v;
        }
        let inv = _mm256_set1_ps(1.0 / total);
        for c in s[..main].chunks_exact_mut(8) {
            // SAFETY: `c` holds 8 floats.
            unsafe {
                _mm256_storeu_ps(
                    c.as_mut_ptr(),
                    _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), inv),
                )
            };
        }
        for v in &mut s[main..] {
            *v *= 1.0 / total;
        }
    }

    /// [`super::attend_kv_head`] with `hd` a multiple of 8.
    ///
    /// Scores: 8 positions at a time for every head of the group (their 8 key rows stay in L1), one accumulator
    /// per position over the `hd / 8` chunks, then [`hsum8x8`]. A last partial block repeats the last position, so
    /// every score is computed the same way wherever it falls. Outputs: 32 (then 8) dimensions of two heads at a
    /// time in registers, one fused multiply-add per position in position order.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `hd` a multiple of 8 and the buffer sizes checked by [`super::attend_kv_head`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attend_kv_head(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        len: usize,
        kvh: usize,
        group: usize,
        n_kv: usize,
        hd: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        // SAFETY: same contract as this function.
        unsafe { scores_only(q, k, len, kvh, group, n_kv, hd, scale, scores) };
        let row = |p: usize| (p * n_kv + kvh) * hd;
        for g in 0..group {
            softmax(&mut scores[g * len..(g + 1) * len]);
        }
        let mut g0 = 0;
        while g0 < group {
            let two = group - g0 >= 2;
            let mut c0 = 0;
            while c0 < hd {
                let wide = hd - c0 >= 32;
                // SAFETY: heads g0 (and g0 + 1 when `two`) < group, dimensions c0 .. c0 + 32 (or 8) ≤ hd.
                unsafe {
                    match (two, wide) {
                        (true, true) => values::<2, 4>(v, len, &row, scores, g0, c0, hd, out),
                        (true, false) => values::<2, 1>(v, len, &row, scores, g0, c0, hd, out),
                        (false, true) => values::<1, 4>(v, len, &row, scores, g0, c0, hd, out),
                        (false, false) => values::<1, 1>(v, len, &row, scores, g0, c0, hd, out),
                    }
                }
                c0 += if wide { 32 } else { 8 };
            }
            g0 += if two { 2 } else { 1 };
        }
    }

    /// The scaled scores `q_h · k_p · scale` of [`attend_kv_head`] into `scores[g · len + p]` (before the softmax).
    ///
    /// # Safety
    /// As [`attend_kv_head`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores_only(
        q: &[f32],
        k: &[f32],
        len: usize,
        kvh: usize,
        group: usize,
        n_kv: usize,
        hd: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let row = |p: usize| (p * n_kv + kvh) * hd;
        let sc = scores.as_mut_ptr();
        let scale_v = _mm256_set1_ps(scale);
        for p0 in (0..len).step_by(8) {
            let rows: [usize; 8] = std::array::from_fn(|j| row((p0 + j).min(len - 1)));
            let m = (len - p0).min(8);
            for g in 0..group {
                let qh = (kvh * group + g) * hd;
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in (0..hd).step_by(8) {
                    // SAFETY: head h's query and the key rows of positions < len have hd floats (sizes checked).
                    unsafe {
                        let qc = _mm256_loadu_ps(q.as_ptr().add(qh + c));
                        for j in 0..8 {
                            let kc = _mm256_loadu_ps(k.as_ptr().add(rows[j] + c));
                            acc[j] = _mm256_fmadd_ps(qc, kc, acc[j]);
                        }
                    }
                }
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 floats; scores g·len + p0 + j < group·len for j < m.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_mul_ps(hsum8x8(&acc), scale_v));
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), sc.add(g * len + p0), m);
                }
            }
        }
    }

    /// `out[g0 + i][c0 .. c0 + 8·D] = Σ_p scores[g0 + i][p] · v[p][c0 ..]` for `i < G`, in registers.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; heads `g0 .. g0 + G` inside the group, dimensions `c0 .. c0 + 8·D ≤ hd`, sizes as
    /// checked by [`super::attend_kv_head`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values<const G: usize, const D: usize>(
        v: &[f32],
        len: usize,
        row: &impl Fn(usize) -> usize,
        scores: &[f32],
        g0: usize,
        c0: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); D]; G];
        for p in 0..len {
            let r = row(p) + c0;
            // SAFETY: position p < len, dimensions c0 .. c0 + 8·D of its value row (caller's contract).
            let vv: [__m256; D] =
                std::array::from_fn(|d| unsafe { _mm256_loadu_ps(v.as_ptr().add(r + 8 * d)) });
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: (g0 + i) · len + p < group · len.
                let s = _mm256_set1_ps(unsafe { *scores.get_unchecked((g0 + i) * len + p) });
                for d in 0..D {
                    a[d] = _mm256_fmadd_ps(s, vv[d], a[d]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (d, &x) in a.iter().enumerate() {
                // SAFETY: output of head g0 + i, dimensions c0 + 8d .. c0 + 8d + 8 ≤ hd (caller's contract).
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add((g0 + i) * hd + c0 + 8 * d), x) };
            }
        }
    }
}

/// The RoPE inverse frequencies `θ^(-2i/d)` for `i < d/2`.
pub fn rope_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect()
}

/// cos / sin of `pos · inv_freq` (f32 products, as the reference computes them).
pub fn rope_cos_sin(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let a = pos as f32 * f;
        *c = a.cos();
        *s = a.sin();
    }
}

/// RoPE, rotate-half convention: element `i` pairs with `i + d/2` (Llama / LFM2 backbone).
pub fn rope_rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

/// RoPE, interleaved-pairs convention: element `2i` pairs with `2i + 1` (GPT-J style).
pub fn rope_interleaved(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (i, p) in x.chunks_exact_mut(2).enumerate() {
        let (x1, x2) = (p[0], p[1]);
        p[0] = x1 * cos[i] - x2 * sin[i];
        p[1] = x2 * cos[i] + x1 * sin[i];
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    let inv = 1.0 / s;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `a = silu(a) ⊙ b` (the SwiGLU gate).
pub fn silu_mul(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x = silu(*x) * y;
    }
}

/// `out = silu(g) ⊙ u` (the SwiGLU gate) on the fastest path available, with the exponential of
/// [`exp_poly`] (relative error ≈ 1e-7 against libm); every path gives the bits of [`swiglu_scalar`].
pub fn swiglu(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx2_fma {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::swiglu(g, u, out) };
    }
    swiglu_scalar(g, u, out)
}

/// Scalar reference of [`swiglu`]: `g / (1 + exp(−g)) · u` with [`exp_poly`].
pub fn swiglu_scalar(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
        *o = x / (1.0 + exp_poly(-x)) * y;
    }
}

/// Coefficients of the exponential's polynomial on `[−ln2/2, ln2/2]` (Cephes `expf`).
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `exp(x)` for `x` clamped to `[−87, 88]`: `2ⁿ · p(r)` with `n = round(x / ln 2)`, `r = x − n ln 2` (two-part
/// constant) and a degree-7 polynomial, written as the exact sequence of f32 operations (fused multiply-adds,
/// ties-to-even rounding) that the SIMD paths execute.
#[allow(clippy::manual_clamp)] // min/max, not clamp: a NaN maps to 88 as with the SIMD min/max
pub fn exp_poly(x: f32) -> f32 {
    let x = x.min(88.0).max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// GELU with the tanh approximation.
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

/// Exact GELU `x·Φ(x)` (erf evaluated to ~1e-7).
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2) as f32)
}

/// erf via its continued-fraction-free Taylor / asymptotic forms, accurate to ~1e-12 in f64.
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series.
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), converges quickly for x ≥ 2.5.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * (ax + f))
    };
    r.copysign(x)
}

/// Depthwise causal conv1d over time with kernel length `k`, carrying the last `k - 1` inputs as state.
///
/// `x` is `n × ch` (time-major), `w` is `ch × k` (PyTorch's `Conv1d(groups=ch)` weight without the middle axis),
/// `state` is `ch × (k - 1)` (oldest first, zeros at stream start). `out[t][c] = bias[c] + Σ_j w[c][j] ·
/// x̃[t - (k - 1) + j][c]` where `x̃` is the state followed by `x`. The state is updated to the last `k - 1` inputs.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d(
    x: &[f32],
    n: usize,
    ch: usize,
    w: &[f32],
    k: usize,
    bias: Option<&[f32]>,
    state: &mut [f32],
    out: &mut [f32],
) {
    let m = k - 1;
    for c in 0..ch {
        let wc = &w[c * k..(c + 1) * k];
        let st = &mut state[c * m..(c + 1) * m];
        let b = bias.map_or(0.0, |b| b[c]);
        for t in 0..n {
            let mut acc = b;
            for (j, &wj) in wc.iter().enumerate() {
                // Input index t - m + j: from the state when negative.
                let idx = t + j;
                let v = if idx < m {
                    st[idx]
                } else {
                    x[(idx - m) * ch + c]
                };
                acc += wj * v;
            }
            out[t * ch + c] = acc;
        }
        // New state: the last m values of (state ++ x).
        if n >= m {
            for j in 0..m {
                st[j] = x[(n - m + j) * ch + c];
            }
        } else {
            st.copy_within(n.., 0);
            for t in 0..n {
                st[m - n + t] = x[t * ch + c];
            }
        }
    }
}

/// Attention of one query position over `len` cached positions with grouped-query heads.
///
/// `q`: `n_heads × hd`; `k_cache`, `v_cache`: `len × n_kv × hd` (position-major); `scores`: scratch of at least
/// `(n_heads / n_kv) × len`; `out`: `n_heads × hd`. Query head `h` uses key/value head `h / (n_heads / n_kv)`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    len: usize,
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let group = n_heads / n_kv;
    for kvh in 0..n_kv {
        attend_kv_head(
            q,
            k_cache,
            v_cache,
            len,
            kvh,
            group,
            n_kv,
            hd,
            scale,
            scores,
            &mut out[kvh * group * hd..(kvh + 1) * group * hd],
        );
    }
}

/// The `group` query heads that share key/value head `kvh` (heads `kvh·group ..< (kvh + 1)·group`) of [`attend`],
/// so key/value heads can be spread over threads and each cached key and value row is read once for all of them.
///
/// `q`: the whole query row (`n_heads × hd`); `scores`: scratch of at least `group × len`; `out`: the `group × hd`
/// outputs of those heads. The AVX2 path (when `hd` is a multiple of 8) computes each score with the same
/// operations whatever `len` is, so a query gives the same bits in a prefill and in a decode step.
#[allow(clippy::too_many_arguments)]
pub fn attend_kv_head(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    len: usize,
    kvh: usize,
    group: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    assert!(kvh < n_kv && group > 0 && len > 0, "attention head layout");
    assert!(q.len() >= n_kv * group * hd, "attention query row");
    assert!(
        k_cache.len() >= len * n_kv * hd && v_cache.len() >= len * n_kv * hd,
        "attention cache shorter than its length"
    );
    assert!(scores.len() >= group * len, "attention score scratch");
    assert!(out.len() >= group * hd, "attention output");
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx2_fma && hd.is_multiple_of(8) {
        // SAFETY: AVX2 and FMA were detected at run time; the buffer sizes were checked above.
        return unsafe {
            simd::attend_kv_head(
                q, k_cache, v_cache, len, kvh, group, n_kv, hd, scale, scores, out,
            )
        };
    }
    attend_kv_head_scalar(
        q, k_cache, v_cache, len, kvh, group, n_kv, hd, scale, scores, out,
    )
}

/// Scalar reference of [`attend_kv_head`]: each head on its own, a dot product per key, softmax, `out += p·v`.
#[allow(clippy::too_many_arguments)]
pub fn attend_kv_head_scalar(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    len: usize,
    kvh: usize,
    group: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let row = |p: usize| (p * n_kv + kvh) * hd..(p * n_kv + kvh + 1) * hd;
    for g in 0..group {
        let h = kvh * group + g;
        let qh = &q[h * hd..(h + 1) * hd];
        let sc = &mut scores[..len];
        for (p, s) in sc.iter_mut().enumerate() {
            *s = dot_scalar(qh, &k_cache[row(p)]) * scale;
        }
        softmax(sc);
        let o = &mut out[g * hd..(g + 1) * hd];
        o.fill(0.0);
        for (p, &s) in sc.iter().enumerate() {
            axpy_scalar(o, s, &v_cache[row(p)]);
        }
    }
}

/// Scalar reference of [`attend`] written from the definition (explicit GQA head mapping, f64-free, no helpers).
#[allow(clippy::too_many_arguments)]
pub fn attend_reference(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    len: usize,
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; n_heads * hd];
    for h in 0..n_heads {
        let kvh = h * n_kv / n_heads;
        let mut s: Vec<f32> = (0..len)
            .map(|p| {
                (0..hd)
                    .map(|i| q[h * hd + i] * k_cache[(p * n_kv + kvh) * hd + i])
                    .sum::<f32>()
                    * scale
            })
            .collect();
        softmax(&mut s);
        for i in 0..hd {
            out[h * hd + i] = (0..len)
                .map(|p| s[p] * v_cache[(p * n_kv + kvh) * hd + i])
                .sum();
        }
    }
    out
}

/// Embedding lookup: row `id` of the table for each id, into `out` (`ids.len() × cols`).
pub fn embed(table: &Weights, ids: &[u32], out: &mut [f32]) {
    let c = table.cols;
    for (t, &id) in ids.iter().enumerate() {
        table.row_to_f32(id as usize, &mut out[t * c..(t + 1) * c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn dot_and_axpy_match_reference(v in prop::collection::vec(-4f32..4.0, 0..100), alpha in -2f32..2.0) {
            let w: Vec<f32> = v.iter().rev().cloned().collect();
            let d = dot(&v, &w);
            prop_assert!(close(d, dot_scalar(&v, &w), 1e-5 * (v.len() as f32 + 1.0)));
            #[cfg(target_arch = "x86_64")]
            if Isa::detect().avx2_fma {
                // SAFETY: AVX2 and FMA were detected.
                let s = unsafe { simd::dot(&v, &w) };
                prop_assert!(close(s, dot_scalar(&v, &w), 1e-5 * (v.len() as f32 + 1.0)));
                let mut y1 = w.clone();
                let mut y2 = w.clone();
                // SAFETY: AVX2 and FMA were detected.
                unsafe { simd::axpy(&mut y1, alpha, &v) };
                axpy_scalar(&mut y2, alpha, &v);
                for (a, b) in y1.iter().zip(&y2) {
                    prop_assert!(close(*a, *b, 1e-6));
                }
            }
        }

        #[test]
        fn swiglu_paths_are_bit_identical_and_close_to_libm(v in prop::collection::vec(-100f32..100.0, 0..70)) {
            let u: Vec<f32> = v.iter().map(|x| (x * 0.37).sin()).collect();
            let mut a = vec![0f32; v.len()];
            let mut b = vec![0f32; v.len()];
            swiglu_scalar(&v, &u, &mut a);
            swiglu(&v, &u, &mut b);
            prop_assert_eq!(
                a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            for ((&x, &y), &o) in v.iter().zip(&u).zip(&a) {
                let e = silu(x) * y;
                prop_assert!((o - e).abs() <= 1e-6 * (1.0 + e.abs()), "{} {} {}", x, o, e);
            }
            for &x in &v {
                let e = (x.clamp(-87.0, 88.0) as f64).exp();
                prop_assert!(((exp_poly(x) as f64 - e) / e).abs() < 3e-7, "exp({})", x);
            }
        }

        #[test]
        fn rms_norm_matches_definition(v in prop::collection::vec(-4f32..4.0, 1..64)) {
            let w: Vec<f32> = (0..v.len()).map(|i| 0.5 + i as f32 * 0.01).collect();
            let mut out = vec![0f32; v.len()];
            rms_norm(&v, &w, 1e-5, &mut out);
            let ms: f64 = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len() as f64;
            for i in 0..v.len() {
                let e = w[i] as f64 * v[i] as f64 / (ms + 1e-5).sqrt();
                prop_assert!(close(out[i], e as f32, 1e-5));
            }
            let mut inplace = v.clone();
            rms_norm_inplace(&mut inplace, &w, 1e-5);
            prop_assert_eq!(inplace, out);
        }

        #[test]
        fn attention_matches_reference(len in 1usize..20, kv in 1usize..3, group in 1usize..4, seed in any::<u32>()) {
            let hd = 8;
            let nh = kv * group;
            let f = |i: usize| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) % 1000) as f32 / 500.0 - 1.0;
            let q: Vec<f32> = (0..nh * hd).map(f).collect();
            let k: Vec<f32> = (0..len * kv * hd).map(|i| f(i + 7777)).collect();
            let v: Vec<f32> = (0..len * kv * hd).map(|i| f(i + 99991)).collect();
            let mut scores = vec![0f32; group * len];
            let mut out = vec![0f32; nh * hd];
            attend(&q, &k, &v, len, nh, kv, hd, 0.3, &mut scores, &mut out);
            let r = attend_reference(&q, &k, &v, len, nh, kv, hd, 0.3);
            for (a, b) in out.iter().zip(&r) {
                prop_assert!(close(*a, *b, 1e-5));
            }
        }

        /// The AVX2 path of one key/value head's query heads against its scalar reference, over head widths that
        /// exercise the 32- and 8-wide output chunks, odd groups and partial blocks of 8 positions.
        #[test]
        fn attention_kv_head_simd_matches_scalar(
            len in 1usize..70,
            kv in 1usize..3,
            group in 1usize..6,
            hd8 in 1usize..10,
            big in any::<bool>(),
            seed in any::<u32>(),
        ) {
            let hd = 8 * hd8;
            let nh = kv * group;
            // Large values make the softmax peaked, small ones flat.
            let amp = if big { 4.0 } else { 1.0 };
            let f = |i: usize| amp * ((((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) % 1000) as f32 / 500.0 - 1.0);
            let q: Vec<f32> = (0..nh * hd).map(f).collect();
            let k: Vec<f32> = (0..len * kv * hd).map(|i| f(i + 7777)).collect();
            let v: Vec<f32> = (0..len * kv * hd).map(|i| f(i + 99991)).collect();
            for kvh in 0..kv {
                let mut s1 = vec![0f32; group * len];
                let mut s2 = vec![0f32; group * len];
                let mut o1 = vec![f32::NAN; group * hd];
                let mut o2 = vec![f32::NAN; group * hd];
                attend_kv_head_scalar(&q, &k, &v, len, kvh, group, kv, hd, 0.2, &mut s1, &mut o1);
                attend_kv_head(&q, &k, &v, len, kvh, group, kv, hd, 0.2, &mut s2, &mut o2);
                for (a, b) in o1.iter().zip(&o2) {
                    prop_assert!(close(*a, *b, 2e-5 * amp), "{a} vs {b}");
                }
                #[cfg(target_arch = "x86_64")]
                if Isa::detect().avx2_fma {
                    let mut o3 = vec![f32::NAN; group * hd];
                    // SAFETY: AVX2 and FMA were detected; hd is a multiple of 8 and the sizes are as checked by
                    // `attend_kv_head`.
                    unsafe { simd::attend_kv_head(&q, &k, &v, len, kvh, group, kv, hd, 0.2, &mut s2, &mut o3) };
                    for (a, b) in o1.iter().zip(&o3) {
                        prop_assert!(close(*a, *b, 2e-5 * amp), "{a} vs {b}");
                    }
                    // A score does not depend on how many positions follow it: the first `len − 1` positions
                    // alone give the same bits for them.
                    if len > 1 {
                        let mut s4 = vec![0f32; group * len];
                        let mut o4 = vec![0f32; group * hd];
                        let mut raw_long = vec![0f32; group * len];
                        let mut raw_short = vec![0f32; group * len];
                        // SAFETY: as above.
                        unsafe {
                            simd::scores_only(&q, &k, len, kvh, group, kv, hd, 0.2, &mut raw_long);
                            simd::scores_only(&q, &k, len - 1, kvh, group, kv, hd, 0.2, &mut raw_short);
                            simd::attend_kv_head(&q, &k, &v, len, kvh, group, kv, hd, 0.2, &mut s4, &mut o4);
                        }
                        for g in 0..group {
                            prop_assert_eq!(
                                &raw_long[g * len..g * len + len - 1],
                                &raw_short[g * (len - 1)..(g + 1) * (len - 1)]
                            );
                        }
                        prop_assert_eq!(o4, o3);
                    }
                }
            }
        }

        /// Streaming equals batch: the conv over a sequence fed in random chunks equals one call on all of it.
        #[test]
        fn causal_conv_chunked_equals_whole(n in 1usize..30, k in 2usize..5, cuts in prop::collection::vec(1usize..6, 1..10)) {
            let ch = 3;
            let x: Vec<f32> = (0..n * ch).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
            let w: Vec<f32> = (0..ch * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let bias = [0.1f32, -0.2, 0.3];
            let mut st = vec![0f32; ch * (k - 1)];
            let mut whole = vec![0f32; n * ch];
            causal_conv1d(&x, n, ch, &w, k, Some(&bias), &mut st, &mut whole);
            // Definition with zero history.
            for t in 0..n {
                for c in 0..ch {
                    let mut e = bias[c];
                    for j in 0..k {
                        let ti = t as isize - (k as isize - 1) + j as isize;
                        if ti >= 0 {
                            e += w[c * k + j] * x[ti as usize * ch + c];
                        }
                    }
                    prop_assert!(close(whole[t * ch + c], e, 1e-5));
                }
            }
            let mut st2 = vec![0f32; ch * (k - 1)];
            let mut chunked = vec![0f32; n * ch];
            let mut t = 0;
            let mut ci = 0;
            while t < n {
                let len = cuts[ci % cuts.len()].min(n - t);
                ci += 1;
                causal_conv1d(&x[t * ch..(t + len) * ch], len, ch, &w, k, Some(&bias), &mut st2, &mut chunked[t * ch..(t + len) * ch]);
                t += len;
            }
            prop_assert_eq!(&chunked, &whole);
            prop_assert_eq!(st2, st);
        }
    }

    #[test]
    fn rope_conventions_rotate_the_right_pairs() {
        let inv = rope_inv_freq(4, 10000.0);
        let (mut c, mut s) = (vec![0f32; 2], vec![0f32; 2]);
        rope_cos_sin(3, &inv, &mut c, &mut s);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut a = x;
        rope_rotate_half(&mut a, &c, &s);
        // Pair (0, 2) rotated by angle 3·inv[0], pair (1, 3) by 3·inv[1].
        assert!(close(a[0], 1.0 * c[0] - 3.0 * s[0], 1e-6));
        assert!(close(a[2], 3.0 * c[0] + 1.0 * s[0], 1e-6));
        assert!(close(a[1], 2.0 * c[1] - 4.0 * s[1], 1e-6));
        let mut b = x;
        rope_interleaved(&mut b, &c, &s);
        assert!(close(b[0], 1.0 * c[0] - 2.0 * s[0], 1e-6));
        assert!(close(b[1], 2.0 * c[0] + 1.0 * s[0], 1e-6));
        assert!(close(b[3], 4.0 * c[1] + 3.0 * s[1], 1e-6));
        // Rotations keep the norm.
        let n0: f32 = x.iter().map(|v| v * v).sum();
        assert!(close(a.iter().map(|v| v * v).sum(), n0, 1e-5));
        assert!(close(b.iter().map(|v| v * v).sum(), n0, 1e-5));
    }

    #[test]
    fn activations_and_softmax() {
        assert!(close(silu(1.0), 0.731_058_6, 1e-6));
        assert!(close(gelu_erf(1.0), 0.841_344_7, 1e-6));
        assert!(close(gelu_erf(-3.0), -0.004_049_63, 1e-4));
        assert!(close(gelu_tanh(1.0), 0.841_192, 1e-5));
        let mut v = [1.0f32, 2.0, 3.0];
        softmax(&mut v);
        assert!(close(v.iter().sum(), 1.0, 1e-6));
        assert!(close(v[2] / v[1], std::f32::consts::E, 1e-5));
    }
}
