//! Elementwise activations of the CNN engine over slices, written branch-free so the compiler vectorises them;
//! [`apply`] runs an AVX2+FMA build of the same code when the CPU has it. The scalar reference of every function
//! is its f64 formula ([`crate::cnn::ir::Unary::reference`]); tests bound the difference.

use super::isa::Isa;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// eˣ for f32 (relative error about 2e-7), no table, no branches.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x·log2(e) to the nearest integer with the 1.5·2²³ trick (vectorises without SSE4.1).
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// erf with absolute error below 3e-7: Maclaurin series below 0.5, Abramowitz & Stegun 7.1.26 above.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let series = std::f32::consts::FRAC_2_SQRT_PI
        * x
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (0.1 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - t * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))))
            * exp(-a * a);
    if a < 0.5 {
        series
    } else {
        y.copysign(x)
    }
}

/// The activation functions with a fast slice path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Sigmoid,
    Tanh,
    /// x·sigmoid(x)
    Silu,
    /// exact GELU through erf
    Gelu,
    Erf,
    Elu(f32),
    Selu(f32, f32),
    Softplus,
}

/// `y[i] = f(x[i])` as a plain indexed loop: always inlined, so it is compiled with the caller's target features
/// (an iterator adapter's `fold` may be left out of line and built for the baseline ISA).
#[inline(always)]
fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    for i in 0..n {
        y[i] = f(x[i]);
    }
}

#[inline(always)]
fn body(act: Act, x: &[f32], y: &mut [f32]) {
    match act {
        Act::Sigmoid => map(x, y, sigmoid),
        Act::Tanh => map(x, y, tanh),
        Act::Silu => map(x, y, |v| v * sigmoid(v)),
        Act::Gelu => map(x, y, |v| {
            0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
        }),
        Act::Erf => map(x, y, erf),
        Act::Elu(a) => map(x, y, |v| if v >= 0.0 { v } else { a * (exp(v) - 1.0) }),
        Act::Selu(a, g) => map(x, y, |v| g * if v > 0.0 { v } else { a * (exp(v) - 1.0) }),
        Act::Softplus => map(x, y, |v| v.max(0.0) + (1.0 + exp(-v.abs())).ln()),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(act: Act, x: &[f32], y: &mut [f32]) {
    body(act, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn body_avx512(act: Act, x: &[f32], y: &mut [f32]) {
    match act {
        // SAFETY: AVX-512F is enabled for this function.
        Act::Sigmoid | Act::Tanh | Act::Silu | Act::Gelu => unsafe { avx512::apply(act, x, y) },
        _ => body(act, x, y),
    }
}

/// AVX-512 versions of the activations that need a division: the reciprocal is `rcp14` refined by one Newton
/// step (relative error about 2⁻²⁸, below f32's own rounding), instead of a full-precision division, which this
/// CPU class executes at a fraction of the multiply rate. The formulas are those of the portable code above.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Act, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    /// `1 / d` for positive normal `d`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, splat(2.0)))
    }

    /// As the portable `exp`: clamp, round x·log2(e), reduce by two parts of ln 2, degree-7 polynomial, scale.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.0)), splat(88.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, splat(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, splat(LN2_LO), _mm512_fnmadd_ps(n, splat(LN2_HI), x));
        let mut p = splat(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, splat(c));
        }
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(e))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn sigmoid(x: __m512) -> __m512 {
        recip(_mm512_add_ps(
            splat(1.0),
            exp(_mm512_sub_ps(_mm512_setzero_ps(), x)),
        ))
    }

    /// As the portable `erf`: Maclaurin series below |x| = 0.5, Abramowitz & Stegun 7.1.26 above.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn erf(x: __m512) -> __m512 {
        let a = _mm512_abs_ps(x);
        let x2 = _mm512_mul_ps(x, x);
        let mut s = splat(-1.0 / 1320.0);
        for c in [1.0 / 216.0, -1.0 / 42.0, 0.1, -1.0 / 3.0, 1.0] {
            s = _mm512_fmadd_ps(s, x2, splat(c));
        }
        let series = _mm512_mul_ps(_mm512_mul_ps(splat(std::f32::consts::FRAC_2_SQRT_PI), x), s);
        let t = recip(_mm512_fmadd_ps(splat(0.327_591_1), a, splat(1.0)));
        let mut q = splat(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            q = _mm512_fmadd_ps(q, t, splat(c));
        }
        let tail = _mm512_fnmadd_ps(
            _mm512_mul_ps(t, q),
            exp(_mm512_sub_ps(_mm512_setzero_ps(), x2)),
            splat(1.0),
        );
        // copysign(tail, x)
        let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        let tail = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(tail), sign));
        let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, splat(0.5));
        _mm512_mask_blend_ps(small, tail, series)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn one(act: Act, v: __m512) -> __m512 {
        match act {
            Act::Sigmoid => sigmoid(v),
            // 1 − 2 / (e^{2x} + 1)
            Act::Tanh => _mm512_fnmadd_ps(
                splat(2.0),
                recip(_mm512_add_ps(exp(_mm512_add_ps(v, v)), splat(1.0))),
                splat(1.0),
            ),
            Act::Silu => _mm512_mul_ps(v, sigmoid(v)),
            Act::Gelu => {
                let e = erf(_mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2)));
                _mm512_mul_ps(_mm512_mul_ps(splat(0.5), v), _mm512_add_ps(splat(1.0), e))
            }
            other => {
                unreachable!("no AVX-512 path for {other:?}: `body_avx512` routes only these four")
            }
        }
    }

    /// `y[i] = act(x[i])` for Sigmoid, Tanh, Silu and Gelu, 16 values at a time, the tail with a mask.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn apply(act: Act, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let mut i = 0;
        while i < n {
            let k = (n - i).min(16);
            let m: __mmask16 = if k == 16 { !0 } else { (1u16 << k) - 1 };
            // SAFETY: lanes at or beyond `k` are masked off, so only x[i..i + k] is read and y[i..i + k]
            // written, both inside the slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, one(act, v));
            }
            i += 16;
        }
    }
}

/// `y[i] = act(x[i])` with the best ISA available.
pub fn apply(isa: Isa, act: Act, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if isa.avx512f && isa.avx2_fma {
        // SAFETY: AVX-512F, AVX2 and FMA are present (`isa` comes from detection); the body is safe code.
        unsafe { body_avx512(act, x, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.avx2_fma {
        // SAFETY: AVX2 and FMA are present (`isa` comes from detection); the body is safe code.
        unsafe { body_avx2(act, x, y) };
        return;
    }
    let _ = isa;
    body(act, x, y)
}

/// The scalar reference of [`apply`]: each function in f64 through the standard library.
pub fn reference(act: Act, v: f32) -> f32 {
    let x = v as f64;
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    (match act {
        Act::Sigmoid => sig(x),
        Act::Tanh => x.tanh(),
        Act::Silu => x * sig(x),
        Act::Gelu => 0.5 * x * (1.0 + crate::cnn::ir::erf(x / std::f64::consts::SQRT_2)),
        Act::Erf => crate::cnn::ir::erf(x),
        Act::Elu(a) => {
            if x >= 0.0 {
                x
            } else {
                a as f64 * x.exp_m1()
            }
        }
        Act::Selu(a, g) => g as f64 * if x > 0.0 { x } else { a as f64 * x.exp_m1() },
        Act::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
    }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ACTS: [Act; 8] = [
        Act::Sigmoid,
        Act::Tanh,
        Act::Silu,
        Act::Gelu,
        Act::Erf,
        Act::Elu(1.0),
        Act::Selu(1.673_263_2, 1.050_701),
        Act::Softplus,
    ];

    proptest! {
        #[test]
        fn fast_activations_match_reference(xs in proptest::collection::vec(-30.0f32..30.0, 1..67)) {
            for act in ACTS {
                let det = Isa::detect();
                for isa in [Isa::scalar(), Isa { avx512f: false, ..det }, det] {
                    let mut y = vec![0.0; xs.len()];
                    apply(isa, act, &xs, &mut y);
                    for (&x, &got) in xs.iter().zip(&y) {
                        let want = reference(act, x);
                        prop_assert!((got - want).abs() <= 5e-7 * want.abs().max(1.0), "{act:?}({x}) = {got}, want {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        for i in -870..880 {
            let x = i as f32 / 10.0;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            assert!(rel < 4e-7, "exp({x}) relative error {rel}");
        }
    }
}
