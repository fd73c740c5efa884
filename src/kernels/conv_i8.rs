//! Convolution kernels of the CNN engine with int8 weights and f32 activations.
//!
//! Weights are quantised symmetrically per output channel ([`Int8Weights::quantize`]): `w[r][o] ≈ scale[o] · q[r][o]`
//! with `q` in −127..=127 and `scale[o] = max_r |w[r][o]| / 127`. The kernels accumulate `Σ q · x` in f32 (each
//! `q` is exact in f32) and finish with `y = bias + scale · acc`, so only the weights lose precision; activations
//! stay f32. Rows of `q` are padded to a multiple of 16 columns with zeros so the SIMD paths read whole vectors.
//!
//! Shapes and the input layout are those of [`super::conv`]: dense `q` is `[k][cin][cpad]`, depthwise `[k][cpad]`.
//! Each kernel has a scalar reference (`*_ref`); AVX2+FMA and AVX-512 paths are picked at run time through
//! [`super::conv::ConvKernels`] and property-tested against the reference.

use super::conv::ConvShape;

/// Column padding of the quantised rows.
pub const COL_PAD: usize = 16;

/// A weight matrix of `rows × cols` (row-major, one column per output channel) quantised per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Weights {
    pub rows: usize,
    pub cols: usize,
    /// Row stride of `q`: `cols` rounded up to [`COL_PAD`].
    pub cpad: usize,
    /// `rows × cpad` values; the padding columns are 0.
    pub q: Vec<i8>,
    /// One scale per column.
    pub scale: Vec<f32>,
}

impl Int8Weights {
    /// Quantise `w` (`rows × cols`, row-major) with one symmetric scale per column.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Int8Weights {
        assert_eq!(w.len(), rows * cols, "weights are rows × cols");
        let cpad = cols.div_ceil(COL_PAD) * COL_PAD;
        let mut scale = vec![0.0f32; cols];
        for row in w.chunks_exact(cols.max(1)) {
            for (s, &v) in scale.iter_mut().zip(row) {
                *s = s.max(v.abs());
            }
        }
        for s in scale.iter_mut() {
            *s /= 127.0;
        }
        let mut q = vec![0i8; rows * cpad];
        for (qr, row) in q.chunks_exact_mut(cpad).zip(w.chunks_exact(cols.max(1))) {
            for ((qv, &v), &s) in qr.iter_mut().zip(row).zip(&scale) {
                *qv = if s > 0.0 {
                    (v / s).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
            }
        }
        Int8Weights {
            rows,
            cols,
            cpad,
            q,
            scale,
        }
    }

    /// The f32 weights these values stand for (`rows × cols`).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = Vec::with_capacity(self.rows * self.cols);
        for qr in self.q.chunks_exact(self.cpad) {
            w.extend(qr.iter().zip(&self.scale).map(|(&q, &s)| q as f32 * s));
        }
        w
    }

    /// Bytes of storage: the values (without padding) and the scales.
    pub fn bytes(&self) -> usize {
        self.rows * self.cols + 4 * self.cols
    }
}

/// Signature of an int8 dense convolution kernel: `(shape, x, w [k][cin][cpad], bias [cout], y, n_out)`.
pub type DenseI8Fn = fn(&ConvShape, &[f32], &Int8Weights, &[f32], &mut [f32], usize);
/// Signature of an int8 depthwise convolution kernel: `(shape, x, w [k][cpad], bias [c], y, n_out)`.
pub type DepthwiseI8Fn = fn(&ConvShape, &[f32], &Int8Weights, &[f32], &mut [f32], usize);

fn check(
    sh: &ConvShape,
    x: &[f32],
    w: &Int8Weights,
    bias: &[f32],
    y: &[f32],
    n: usize,
    rows: usize,
) {
    assert!(sh.k >= 1 && sh.stride >= 1 && sh.dilation >= 1);
    assert!(
        x.len() >= sh.rows_needed(n) * sh.cin,
        "conv input too short"
    );
    assert_eq!((w.rows, w.cols), (rows, sh.cout), "int8 conv weights");
    assert_eq!(w.q.len(), w.rows * w.cpad, "int8 conv weights");
    assert!(
        w.cpad.is_multiple_of(COL_PAD) && w.cpad >= w.cols,
        "int8 padding"
    );
    assert_eq!(bias.len(), sh.cout, "conv bias");
    assert!(y.len() >= n * sh.cout, "conv output too short");
}

fn check_dense(sh: &ConvShape, x: &[f32], w: &Int8Weights, bias: &[f32], y: &[f32], n: usize) {
    check(sh, x, w, bias, y, n, sh.k * sh.cin);
}

fn check_depthwise(sh: &ConvShape, x: &[f32], w: &Int8Weights, bias: &[f32], y: &[f32], n: usize) {
    assert_eq!(sh.cin, sh.cout, "depthwise channels");
    check(sh, x, w, bias, y, n, sh.k);
}

/// Scalar reference of the int8 dense convolution.
pub fn dense_i8_ref(
    sh: &ConvShape,
    x: &[f32],
    w: &Int8Weights,
    bias: &[f32],
    y: &mut [f32],
    n_out: usize,
) {
    check_dense(sh, x, w, bias, y, n_out);
    let (cin, cout, cp) = (sh.cin, sh.cout, w.cpad);
    let mut acc = vec![0.0f32; cout];
    for t in 0..n_out {
        acc.fill(0.0);
        for kk in 0..sh.k {
            let row = t * sh.stride + kk * sh.dilation;
            for (ci, &xv) in x[row * cin..(row + 1) * cin].iter().enumerate() {
                let qr = &w.q[(kk * cin + ci) * cp..(kk * cin + ci) * cp + cout];
                for (a, &q) in acc.iter_mut().zip(qr) {
                    *a += q as f32 * xv;
                }
            }
        }
        let yr = &mut y[t * cout..(t + 1) * cout];
        for (((yo, &a), &s), &b) in yr.iter_mut().zip(&acc).zip(&w.scale).zip(bias) {
            *yo = b + s * a;
        }
    }
}

/// Scalar reference of the int8 depthwise convolution.
pub fn depthwise_i8_ref(
    sh: &ConvShape,
    x: &[f32],
    w: &Int8Weights,
    bias: &[f32],
    y: &mut [f32],
    n_out: usize,
) {
    check_depthwise(sh, x, w, bias, y, n_out);
    let (c, cp) = (sh.cin, w.cpad);
    for t in 0..n_out {
        for o in 0..c {
            let mut a = 0.0f32;
            for kk in 0..sh.k {
                let row = t * sh.stride + kk * sh.dilation;
                a += w.q[kk * cp + o] as f32 * x[row * c + o];
            }
            y[t * c + o] = bias[o] + w.scale[o] * a;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{check_dense, check_depthwise, ConvShape, Int8Weights};
    use std::arch::x86_64::*;

    /// Lane mask of the first `n` (≤ 8) of 8 lanes, for `maskload` / `maskstore`.
    #[target_feature(enable = "avx2")]
    fn lanes8(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
    }

    fn lanes16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    pub fn dense_i8_avx2(
        sh: &ConvShape,
        x: &[f32],
        w: &Int8Weights,
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        check_dense(sh, x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        let mut t = 0;
        // SAFETY: AVX2 and FMA are present (checked above); `check_dense` checked every length the tiles read:
        // input rows below rows_needed(n_out), weight rows below k·cin of `cpad` (a multiple of 16) columns,
        // output rows below n_out; columns at or past `cout` are only read from the zero padding of `q`.
        unsafe {
            while t + 6 <= n_out {
                dense_i8_rows_avx2::<6>(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), t);
                t += 6;
            }
            while t < n_out {
                dense_i8_rows_avx2::<1>(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), t);
                t += 1;
            }
        }
    }

    /// Output rows `t0..t0+R`, all columns, 16 at a time.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dense_i8_rows_avx2<const R: usize>(
        sh: &ConvShape,
        x: *const f32,
        w: &Int8Weights,
        b: *const f32,
        y: *mut f32,
        t0: usize,
    ) {
        let (cin, cout, k, s, d, cp) = (sh.cin, sh.cout, sh.k, sh.stride, sh.dilation, w.cpad);
        let q = w.q.as_ptr();
        let sc = w.scale.as_ptr();
        let mut o = 0;
        // SAFETY: (whole block) weight reads stay inside rows of `cp` columns (o + 16 ≤ cp); input reads inside
        // rows_needed(n); bias, scale and output accesses are masked to columns below `cout`.
        unsafe {
            while o < cout {
                let m0 = lanes8(cout - o);
                let m1 = lanes8(cout.saturating_sub(o + 8));
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for kk in 0..k {
                    for ci in 0..cin {
                        let qp = q.add((kk * cin + ci) * cp + o);
                        let w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            qp as *const __m128i,
                        )));
                        let w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            qp.add(8) as *const __m128i,
                        )));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv =
                                _mm256_broadcast_ss(&*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                        }
                    }
                }
                let (b0, b1) = (
                    _mm256_maskload_ps(b.add(o), m0),
                    _mm256_maskload_ps(b.add(o + 8), m1),
                );
                let (s0, s1) = (
                    _mm256_maskload_ps(sc.add(o), m0),
                    _mm256_maskload_ps(sc.add(o + 8), m1),
                );
                for (r, a) in acc.iter().enumerate() {
                    let yp = y.add((t0 + r) * cout + o);
                    _mm256_maskstore_ps(yp, m0, _mm256_fmadd_ps(a[0], s0, b0));
                    _mm256_maskstore_ps(yp.add(8), m1, _mm256_fmadd_ps(a[1], s1, b1));
                }
                o += 16;
            }
        }
    }

    pub fn dense_i8_avx512(
        sh: &ConvShape,
        x: &[f32],
        w: &Int8Weights,
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        check_dense(sh, x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx512f"));
        let mut t = 0;
        // SAFETY: AVX-512F is present (checked above); lengths as in `dense_i8_avx2`.
        unsafe {
            while t + 8 <= n_out {
                dense_i8_rows_avx512::<8>(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), t);
                t += 8;
            }
            while t + 4 <= n_out {
                dense_i8_rows_avx512::<4>(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), t);
                t += 4;
            }
            while t < n_out {
                dense_i8_rows_avx512::<1>(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), t);
                t += 1;
            }
        }
    }

    /// Output rows `t0..t0+R`, all columns, 32 at a time (the last pair masked).
    #[target_feature(enable = "avx512f")]
    unsafe fn dense_i8_rows_avx512<const R: usize>(
        sh: &ConvShape,
        x: *const f32,
        w: &Int8Weights,
        b: *const f32,
        y: *mut f32,
        t0: usize,
    ) {
        let (cin, cout, k, s, d, cp) = (sh.cin, sh.cout, sh.k, sh.stride, sh.dilation, w.cpad);
        let q = w.q.as_ptr();
        let sc = w.scale.as_ptr();
        let mut o = 0;
        // SAFETY: (whole block) as in `dense_i8_rows_avx2`: the second register of a pair is only used when
        // more than 16 columns remain, so o + 32 ≤ cp; bias, scale and output accesses are masked.
        unsafe {
            while o < cout {
                let m0 = lanes16(cout - o);
                let pair = cout - o > 16;
                let m1 = lanes16(cout.saturating_sub(o + 16));
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for kk in 0..k {
                    for ci in 0..cin {
                        let qp = q.add((kk * cin + ci) * cp + o);
                        let w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                            qp as *const __m128i,
                        )));
                        if pair {
                            let w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                                qp.add(16) as *const __m128i,
                            )));
                            for (r, a) in acc.iter_mut().enumerate() {
                                let xv = _mm512_set1_ps(*x.add(((t0 + r) * s + kk * d) * cin + ci));
                                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
                            }
                        } else {
                            for (r, a) in acc.iter_mut().enumerate() {
                                let xv = _mm512_set1_ps(*x.add(((t0 + r) * s + kk * d) * cin + ci));
                                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                            }
                        }
                    }
                }
                let b0 = _mm512_maskz_loadu_ps(m0, b.add(o));
                let s0 = _mm512_maskz_loadu_ps(m0, sc.add(o));
                for (r, a) in acc.iter().enumerate() {
                    let yp = y.add((t0 + r) * cout + o);
                    _mm512_mask_storeu_ps(yp, m0, _mm512_fmadd_ps(a[0], s0, b0));
                }
                if pair {
                    let b1 = _mm512_maskz_loadu_ps(m1, b.add(o + 16));
                    let s1 = _mm512_maskz_loadu_ps(m1, sc.add(o + 16));
                    for (r, a) in acc.iter().enumerate() {
                        let yp = y.add((t0 + r) * cout + o + 16);
                        _mm512_mask_storeu_ps(yp, m1, _mm512_fmadd_ps(a[1], s1, b1));
                    }
                    o += 32;
                } else {
                    o += 16;
                }
            }
        }
    }

    pub fn depthwise_i8_avx2(
        sh: &ConvShape,
        x: &[f32],
        w: &Int8Weights,
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        check_depthwise(sh, x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (checked above); lengths checked by `check_depthwise`.
        unsafe { depthwise_i8_avx2_impl(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), n_out) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn depthwise_i8_avx2_impl(
        sh: &ConvShape,
        x: *const f32,
        w: &Int8Weights,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let (c, cp) = (sh.cin, w.cpad);
        let (q, sc) = (w.q.as_ptr(), w.scale.as_ptr());
        // SAFETY: (whole block) activation, bias, scale and output accesses are masked to channels below c;
        // weight reads stay inside rows of `cp` ≥ o + 8 columns; rows below rows_needed(n) / n.
        unsafe {
            for t in 0..n {
                let mut o = 0;
                while o < c {
                    let m = lanes8(c - o);
                    let mut acc = _mm256_setzero_ps();
                    for kk in 0..sh.k {
                        let xv = _mm256_maskload_ps(
                            x.add((t * sh.stride + kk * sh.dilation) * c + o),
                            m,
                        );
                        let wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                            q.add(kk * cp + o) as *const __m128i,
                        )));
                        acc = _mm256_fmadd_ps(wv, xv, acc);
                    }
                    let r = _mm256_fmadd_ps(
                        acc,
                        _mm256_maskload_ps(sc.add(o), m),
                        _mm256_maskload_ps(b.add(o), m),
                    );
                    _mm256_maskstore_ps(y.add(t * c + o), m, r);
                    o += 8;
                }
            }
        }
    }

    pub fn depthwise_i8_avx512(
        sh: &ConvShape,
        x: &[f32],
        w: &Int8Weights,
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        check_depthwise(sh, x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (checked above); lengths checked by `check_depthwise`.
        unsafe { depthwise_i8_avx512_impl(sh, x.as_ptr(), w, bias.as_ptr(), y.as_mut_ptr(), n_out) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn depthwise_i8_avx512_impl(
        sh: &ConvShape,
        x: *const f32,
        w: &Int8Weights,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let (c, cp) = (sh.cin, w.cpad);
        let (q, sc) = (w.q.as_ptr(), w.scale.as_ptr());
        // SAFETY: (whole block) as in `depthwise_i8_avx2_impl`, with 16-lane masks (o + 16 ≤ cp).
        unsafe {
            for t in 0..n {
                let mut o = 0;
                while o < c {
                    let m = lanes16(c - o);
                    let mut acc = _mm512_setzero_ps();
                    for kk in 0..sh.k {
                        let xv = _mm512_maskz_loadu_ps(
                            m,
                            x.add((t * sh.stride + kk * sh.dilation) * c + o),
                        );
                        let wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                            q.add(kk * cp + o) as *const __m128i,
                        )));
                        acc = _mm512_fmadd_ps(wv, xv, acc);
                    }
                    let r = _mm512_fmadd_ps(
                        acc,
                        _mm512_maskz_loadu_ps(m, sc.add(o)),
                        _mm512_maskz_loadu_ps(m, b.add(o)),
                    );
                    _mm512_mask_storeu_ps(y.add(t * c + o), m, r);
                    o += 16;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::ConvKernels;
    use proptest::prelude::*;

    fn all_kernels() -> Vec<ConvKernels> {
        ConvKernels::available()
    }

    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let w = vals(7 * 19, 3);
        let q = Int8Weights::quantize(&w, 7, 19);
        assert_eq!(q.cpad, 32);
        let back = q.dequantize();
        for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
            let s = q.scale[i % 19];
            assert!((a - b).abs() <= 0.5 * s * 1.0001, "{a} vs {b} (scale {s})");
        }
        // The largest magnitude of every column maps to ±127 exactly.
        for o in 0..19 {
            let col: Vec<i8> = (0..7).map(|r| q.q[r * 32 + o]).collect();
            assert_eq!(col.iter().map(|v| v.unsigned_abs()).max(), Some(127));
        }
        assert!(q.q.chunks(32).all(|r| r[19..].iter().all(|&v| v == 0)));
        // An all-zero column quantises to zeros with scale 0.
        let z = Int8Weights::quantize(&[0.0, 1.0, 0.0, -2.0], 2, 2);
        assert_eq!(z.scale[0], 0.0);
        assert_eq!((z.q[0], z.q[16], z.q[1], z.q[17]), (0, 0, 64, -127));
    }

    #[test]
    fn reference_equals_f32_conv_of_dequantized_weights() {
        let sh = ConvShape {
            cin: 5,
            cout: 9,
            k: 3,
            stride: 2,
            dilation: 2,
        };
        let n = 7;
        let x = vals(sh.rows_needed(n) * 5, 1);
        let q = Int8Weights::quantize(&vals(3 * 5 * 9, 2), 15, 9);
        let b = vals(9, 4);
        let mut want = vec![0.0; n * 9];
        crate::kernels::conv::dense_ref(&sh, &x, &q.dequantize(), &b, &mut want, n);
        let mut got = vec![0.0; n * 9];
        dense_i8_ref(&sh, &x, &q, &b, &mut got, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn dense_i8_matches_reference(cin in 1usize..40, cout in 1usize..70, k in 1usize..6, s in 1usize..4,
                                      d in 1usize..4, n in 0usize..23, seed in any::<u64>()) {
            let sh = ConvShape { cin, cout, k, stride: s, dilation: d };
            let x = vals(sh.rows_needed(n) * cin + 3, seed);
            let q = Int8Weights::quantize(&vals(k * cin * cout, seed ^ 1), k * cin, cout);
            let b = vals(cout, seed ^ 2);
            let mut want = vec![0.0; n * cout];
            dense_i8_ref(&sh, &x, &q, &b, &mut want, n);
            let tol = 1e-5 * (k * cin) as f32;
            for kern in all_kernels() {
                let mut got = vec![7.0; n * cout + 5];
                (kern.dense_i8)(&sh, &x, &q, &b, &mut got, n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((g - w).abs() <= tol, "{} differs at {}: {} vs {}", kern.name, i, g, w);
                }
                prop_assert!(got[n * cout..].iter().all(|&v| v == 7.0), "{} wrote past the end", kern.name);
            }
        }

        #[test]
        fn depthwise_i8_matches_reference(c in 1usize..70, k in 1usize..8, s in 1usize..4, d in 1usize..4,
                                          n in 0usize..23, seed in any::<u64>()) {
            let sh = ConvShape { cin: c, cout: c, k, stride: s, dilation: d };
            let x = vals(sh.rows_needed(n) * c, seed);
            let q = Int8Weights::quantize(&vals(k * c, seed ^ 1), k, c);
            let b = vals(c, seed ^ 2);
            let mut want = vec![0.0; n * c];
            depthwise_i8_ref(&sh, &x, &q, &b, &mut want, n);
            let tol = 1e-5 * k as f32;
            for kern in all_kernels() {
                let mut got = vec![7.0; n * c + 5];
                (kern.depthwise_i8)(&sh, &x, &q, &b, &mut got, n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((g - w).abs() <= tol, "{} differs at {}: {} vs {}", kern.name, i, g, w);
                }
                prop_assert!(got[n * c..].iter().all(|&v| v == 7.0), "{} wrote past the end", kern.name);
            }
        }
    }
}
