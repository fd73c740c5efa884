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
    body(act, x, y)
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
