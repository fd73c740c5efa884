//! f32 kernels of the CNN engine over time-major activations (`x[t * channels + c]`):
//! dense 1-D convolution (a GEMM over shifted rows; pointwise convolutions and dense layers are its `k = 1` case)
//! and depthwise 1-D convolution.
//!
//! Each kernel has a scalar reference (`*_ref`) and AVX2+FMA / AVX-512 paths picked at run time from
//! [`Isa::get`](super::isa::Isa::get) through a table of function pointers ([`ConvKernels`]).
//!
//! Shapes: a dense convolution with `cin` inputs, `cout` outputs, kernel `k`, stride `s`, dilation `d` computes
//! `n_out` output rows `y[t][o] = bias[o] + Σ_kk Σ_ci w[kk][ci][o] · x[t·s + kk·d][ci]`; `x` starts at the first
//! input row output 0 reads (padding is the caller's business) and must hold `(n_out-1)·s + (k-1)·d + 1` rows.

use super::conv_i8::{self, DenseI8Fn, DepthwiseI8Fn, Int8Weights};
use super::isa::Isa;
use std::sync::OnceLock;

/// Geometry of one convolution call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels (for depthwise: the channels).
    pub cin: usize,
    /// Output channels (for depthwise: equal to `cin`).
    pub cout: usize,
    /// Kernel taps.
    pub k: usize,
    /// Stride in input rows.
    pub stride: usize,
    /// Dilation in input rows.
    pub dilation: usize,
}

impl ConvShape {
    /// Input rows needed for `n_out` output rows.
    pub fn rows_needed(&self, n_out: usize) -> usize {
        if n_out == 0 {
            0
        } else {
            (n_out - 1) * self.stride + (self.k - 1) * self.dilation + 1
        }
    }

    fn check_dense(&self, x: &[f32], w: &[f32], bias: &[f32], y: &[f32], n_out: usize) {
        assert!(self.k >= 1 && self.stride >= 1 && self.dilation >= 1);
        assert!(
            x.len() >= self.rows_needed(n_out) * self.cin,
            "conv input too short"
        );
        assert_eq!(w.len(), self.k * self.cin * self.cout, "conv weights");
        assert_eq!(bias.len(), self.cout, "conv bias");
        assert!(y.len() >= n_out * self.cout, "conv output too short");
    }

    fn check_depthwise(&self, x: &[f32], w: &[f32], bias: &[f32], y: &[f32], n_out: usize) {
        assert!(self.k >= 1 && self.stride >= 1 && self.dilation >= 1);
        assert_eq!(self.cin, self.cout, "depthwise channels");
        assert!(
            x.len() >= self.rows_needed(n_out) * self.cin,
            "conv input too short"
        );
        assert_eq!(w.len(), self.k * self.cin, "depthwise weights");
        assert_eq!(bias.len(), self.cout, "depthwise bias");
        assert!(y.len() >= n_out * self.cout, "conv output too short");
    }
}

/// Signature of a dense convolution kernel: `(shape, x, w [k][cin][cout], bias [cout], y, n_out)`.
pub type DenseFn = fn(&ConvShape, &[f32], &[f32], &[f32], &mut [f32], usize);
/// Signature of a depthwise convolution kernel: `(shape, x, w [k][c], bias [c], y, n_out)`.
pub type DepthwiseFn = fn(&ConvShape, &[f32], &[f32], &[f32], &mut [f32], usize);

/// The kernels chosen for one ISA level.
#[derive(Clone, Copy)]
pub struct ConvKernels {
    pub name: &'static str,
    /// The instruction sets these kernels use; the engine's elementwise loops and activations follow it, so a
    /// test that runs every level runs every build of those too.
    pub isa: Isa,
    pub dense: DenseFn,
    pub depthwise: DepthwiseFn,
    /// The same convolutions with int8 weights ([`super::conv_i8`]).
    pub dense_i8: DenseI8Fn,
    pub depthwise_i8: DepthwiseI8Fn,
}

impl ConvKernels {
    /// Every kernel level this machine can run, scalar reference first (for tests and benchmarks that compare
    /// each level against the reference).
    pub fn available() -> Vec<ConvKernels> {
        let det = Isa::detect();
        let mut v = vec![ConvKernels::for_isa(Isa::scalar())];
        if det.avx2_fma {
            v.push(ConvKernels::for_isa(Isa {
                avx2_fma: true,
                ..Isa::default()
            }));
        }
        if det.avx512f {
            v.push(ConvKernels::for_isa(det));
        }
        v
    }

    /// The best kernels `isa` allows.
    pub fn for_isa(isa: Isa) -> ConvKernels {
        #[cfg(target_arch = "x86_64")]
        {
            if isa.avx512f {
                return ConvKernels {
                    name: "avx512",
                    isa,
                    dense: x86::dense_avx512,
                    depthwise: x86::depthwise_avx512,
                    dense_i8: conv_i8::x86::dense_i8_avx512,
                    depthwise_i8: conv_i8::x86::depthwise_i8_avx512,
                };
            }
            if isa.avx2_fma {
                return ConvKernels {
                    name: "avx2",
                    isa: Isa {
                        avx2_fma: true,
                        ..Isa::default()
                    },
                    dense: x86::dense_avx2,
                    depthwise: x86::depthwise_avx2,
                    dense_i8: conv_i8::x86::dense_i8_avx2,
                    depthwise_i8: conv_i8::x86::depthwise_i8_avx2,
                };
            }
        }
        let _ = isa;
        ConvKernels {
            name: "scalar",
            isa: Isa::scalar(),
            dense: dense_ref,
            depthwise: depthwise_ref,
            dense_i8: conv_i8::dense_i8_ref,
            depthwise_i8: conv_i8::depthwise_i8_ref,
        }
    }

    /// The kernels for this machine (detected once; `SIGFLOW_ISA` caps it).
    pub fn get() -> &'static ConvKernels {
        static K: OnceLock<ConvKernels> = OnceLock::new();
        K.get_or_init(|| ConvKernels::for_isa(Isa::get()))
    }
}

/// Scalar reference of the dense convolution.
pub fn dense_ref(sh: &ConvShape, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], n_out: usize) {
    sh.check_dense(x, w, bias, y, n_out);
    let (cin, cout) = (sh.cin, sh.cout);
    for t in 0..n_out {
        let yr = &mut y[t * cout..(t + 1) * cout];
        yr.copy_from_slice(bias);
        for kk in 0..sh.k {
            let row = t * sh.stride + kk * sh.dilation;
            let xr = &x[row * cin..(row + 1) * cin];
            for (ci, &xv) in xr.iter().enumerate() {
                let wr = &w[(kk * cin + ci) * cout..(kk * cin + ci + 1) * cout];
                for (yo, &wv) in yr.iter_mut().zip(wr) {
                    *yo += wv * xv;
                }
            }
        }
    }
}

/// Scalar reference of the depthwise convolution.
pub fn depthwise_ref(
    sh: &ConvShape,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
    n_out: usize,
) {
    sh.check_depthwise(x, w, bias, y, n_out);
    let c = sh.cin;
    for t in 0..n_out {
        let yr = &mut y[t * c..(t + 1) * c];
        yr.copy_from_slice(bias);
        for kk in 0..sh.k {
            let row = t * sh.stride + kk * sh.dilation;
            let xr = &x[row * c..(row + 1) * c];
            let wr = &w[kk * c..(kk + 1) * c];
            for ((yo, &xv), &wv) in yr.iter_mut().zip(xr).zip(wr) {
                *yo += wv * xv;
            }
        }
    }
}

/// A dense layer `y[o] = bias[o] + Σ_i w[i][o] · x[i]` (weights `[n_in][n_out]`): the dense convolution with one
/// row and one tap.
pub fn dense_layer(kernels: &ConvKernels, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    let sh = ConvShape {
        cin: x.len(),
        cout: bias.len(),
        k: 1,
        stride: 1,
        dilation: 1,
    };
    (kernels.dense)(&sh, x, w, bias, y, 1);
}

/// [`dense_layer`] with int8 weights (`[n_in][n_out]` quantised per output).
pub fn dense_layer_i8(
    kernels: &ConvKernels,
    x: &[f32],
    w: &Int8Weights,
    bias: &[f32],
    y: &mut [f32],
) {
    let sh = ConvShape {
        cin: x.len(),
        cout: bias.len(),
        k: 1,
        stride: 1,
        dilation: 1,
    };
    (kernels.dense_i8)(&sh, x, w, bias, y, 1);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ConvShape;
    use std::arch::x86_64::*;

    pub fn dense_avx2(
        sh: &ConvShape,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        sh.check_dense(x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (checked above); slice lengths were checked by `check_dense`, and the
        // kernel reads only rows below `rows_needed(n_out)` and writes only the first `n_out` output rows.
        unsafe {
            dense_avx2_impl(
                sh,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                n_out,
            )
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dense_avx2_impl(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        // 24, 40, 56 … columns: the first 24 in one pass of three registers (4-row tiles), so no 8-column pass
        // re-reads the input.
        let split = if sh.cout >= 24 && sh.cout % 16 == 8 {
            24
        } else {
            0
        };
        let mut t = 0;
        if split > 0 {
            while t + 4 <= n {
                // SAFETY: rows t..t+4 are below n; columns 0..24 are below cout.
                unsafe { rows24_avx2::<4>(sh, x, w, b, y, t) };
                t += 4;
            }
            while t < n {
                // SAFETY: row t is below n.
                unsafe { rows24_avx2::<1>(sh, x, w, b, y, t) };
                t += 1;
            }
            t = 0;
        }
        while t + 6 <= n {
            // SAFETY: rows t..t+6 are below n (caller's bounds).
            unsafe { rows_avx2::<6>(sh, x, w, b, y, t, split) };
            t += 6;
        }
        while t < n {
            // SAFETY: row t is below n.
            unsafe { rows_avx2::<1>(sh, x, w, b, y, t, split) };
            t += 1;
        }
    }

    /// Lane mask of the first `n` (≤ 8) of 8 lanes, for `maskload` / `maskstore`.
    #[target_feature(enable = "avx2")]
    fn lanes8(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
    }

    /// Output rows `t0..t0+R`, columns 0..24 in three registers.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows24_avx2<const R: usize>(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        t0: usize,
    ) {
        let (cin, cout, k, s, d) = (sh.cin, sh.cout, sh.k, sh.stride, sh.dilation);
        // SAFETY: (whole block) cout ≥ 24, so columns 0..24 of every weight, bias and output row exist; input
        // rows stay below rows_needed(n), output rows below n (caller's bounds).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 3]; R];
            for a in acc.iter_mut() {
                for (j, v) in a.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(b.add(8 * j));
                }
            }
            for kk in 0..k {
                for ci in 0..cin {
                    let wp = w.add((kk * cin + ci) * cout);
                    let w0 = _mm256_loadu_ps(wp);
                    let w1 = _mm256_loadu_ps(wp.add(8));
                    let w2 = _mm256_loadu_ps(wp.add(16));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm256_broadcast_ss(&*x.add(((t0 + r) * s + kk * d) * cin + ci));
                        a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                        a[2] = _mm256_fmadd_ps(xv, w2, a[2]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (j, v) in a.iter().enumerate() {
                    _mm256_storeu_ps(y.add((t0 + r) * cout + 8 * j), *v);
                }
            }
        }
    }

    /// Output rows `t0..t0+R`, columns `o0..cout`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2<const R: usize>(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        t0: usize,
        o0: usize,
    ) {
        let (cin, cout, k, s, d) = (sh.cin, sh.cout, sh.k, sh.stride, sh.dilation);
        let mut o = o0;
        // SAFETY: (whole block) every pointer offset stays inside the slices checked by the caller: weights
        // `(kk*cin+ci)*cout + o + 16 <= k*cin*cout`, input rows `(t*s + kk*d) < rows_needed(n)`, output rows < n.
        unsafe {
            while o + 16 <= cout {
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for a in acc.iter_mut() {
                    a[0] = _mm256_loadu_ps(b.add(o));
                    a[1] = _mm256_loadu_ps(b.add(o + 8));
                }
                for kk in 0..k {
                    for ci in 0..cin {
                        let wp = w.add((kk * cin + ci) * cout + o);
                        let w0 = _mm256_loadu_ps(wp);
                        let w1 = _mm256_loadu_ps(wp.add(8));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv =
                                _mm256_broadcast_ss(&*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(y.add((t0 + r) * cout + o), a[0]);
                    _mm256_storeu_ps(y.add((t0 + r) * cout + o + 8), a[1]);
                }
                o += 16;
            }
            while o + 8 <= cout {
                let mut acc = [_mm256_loadu_ps(b.add(o)); R];
                for kk in 0..k {
                    for ci in 0..cin {
                        let w0 = _mm256_loadu_ps(w.add((kk * cin + ci) * cout + o));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv =
                                _mm256_broadcast_ss(&*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            *a = _mm256_fmadd_ps(xv, w0, *a);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(y.add((t0 + r) * cout + o), *a);
                }
                o += 8;
            }
            // The last 1–7 columns in one masked pass (masked-off lanes are neither read nor written).
            if o < cout {
                let m = lanes8(cout - o);
                let mut acc = [_mm256_maskload_ps(b.add(o), m); R];
                for kk in 0..k {
                    for ci in 0..cin {
                        let w0 = _mm256_maskload_ps(w.add((kk * cin + ci) * cout + o), m);
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv =
                                _mm256_broadcast_ss(&*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            *a = _mm256_fmadd_ps(xv, w0, *a);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm256_maskstore_ps(y.add((t0 + r) * cout + o), m, *a);
                }
            }
        }
    }

    pub fn dense_avx512(
        sh: &ConvShape,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        sh.check_dense(x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (checked above); slice lengths were checked by `check_dense`.
        unsafe {
            dense_avx512_impl(
                sh,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                n_out,
            )
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dense_avx512_impl(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let mut t = 0;
        while t + 8 <= n {
            // SAFETY: rows t..t+8 are below n.
            unsafe { rows_avx512::<8>(sh, x, w, b, y, t) };
            t += 8;
        }
        while t + 4 <= n {
            // SAFETY: rows t..t+4 are below n.
            unsafe { rows_avx512::<4>(sh, x, w, b, y, t) };
            t += 4;
        }
        while t < n {
            // SAFETY: row t is below n.
            unsafe { rows_avx512::<1>(sh, x, w, b, y, t) };
            t += 1;
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512<const R: usize>(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        t0: usize,
    ) {
        let (cin, cout, k, s, d) = (sh.cin, sh.cout, sh.k, sh.stride, sh.dilation);
        let mut o = 0;
        // SAFETY: (whole block) as in `rows_avx2`; the masked loads and stores touch only columns below `cout`.
        unsafe {
            // Pairs of 16-column registers; the second one masked when fewer than 32 columns remain.
            while cout - o > 16 {
                let left = (cout - o - 16).min(16);
                let m1: __mmask16 = if left == 16 {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for a in acc.iter_mut() {
                    a[0] = _mm512_loadu_ps(b.add(o));
                    a[1] = _mm512_maskz_loadu_ps(m1, b.add(o + 16));
                }
                for kk in 0..k {
                    for ci in 0..cin {
                        let wp = w.add((kk * cin + ci) * cout + o);
                        let w0 = _mm512_loadu_ps(wp);
                        let w1 = _mm512_maskz_loadu_ps(m1, wp.add(16));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                            a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(y.add((t0 + r) * cout + o), a[0]);
                    _mm512_mask_storeu_ps(y.add((t0 + r) * cout + o + 16), m1, a[1]);
                }
                o += 16 + left;
            }
            while o < cout {
                let left = (cout - o).min(16);
                let m: __mmask16 = if left == 16 {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                let mut acc = [_mm512_maskz_loadu_ps(m, b.add(o)); R];
                for kk in 0..k {
                    for ci in 0..cin {
                        let w0 = _mm512_maskz_loadu_ps(m, w.add((kk * cin + ci) * cout + o));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*x.add(((t0 + r) * s + kk * d) * cin + ci));
                            *a = _mm512_fmadd_ps(xv, w0, *a);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(y.add((t0 + r) * cout + o), m, *a);
                }
                o += left;
            }
        }
    }

    pub fn depthwise_avx2(
        sh: &ConvShape,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        sh.check_depthwise(x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA are present (checked above); lengths checked by `check_depthwise`.
        unsafe {
            depthwise_avx2_impl(
                sh,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                n_out,
            )
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn depthwise_avx2_impl(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let c = sh.cin;
        // SAFETY: (whole block) channel offsets stay below c, rows below rows_needed(n) / n.
        unsafe {
            for t in 0..n {
                let mut o = 0;
                while o + 8 <= c {
                    let mut acc = _mm256_loadu_ps(b.add(o));
                    for kk in 0..sh.k {
                        let xv = _mm256_loadu_ps(x.add((t * sh.stride + kk * sh.dilation) * c + o));
                        acc = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w.add(kk * c + o)), acc);
                    }
                    _mm256_storeu_ps(y.add(t * c + o), acc);
                    o += 8;
                }
                while o < c {
                    let mut acc = *b.add(o);
                    for kk in 0..sh.k {
                        acc = (*w.add(kk * c + o))
                            .mul_add(*x.add((t * sh.stride + kk * sh.dilation) * c + o), acc);
                    }
                    *y.add(t * c + o) = acc;
                    o += 1;
                }
            }
        }
    }

    pub fn depthwise_avx512(
        sh: &ConvShape,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
        n_out: usize,
    ) {
        sh.check_depthwise(x, w, bias, y, n_out);
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F is present (checked above); lengths checked by `check_depthwise`.
        unsafe {
            depthwise_avx512_impl(
                sh,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                n_out,
            )
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn depthwise_avx512_impl(
        sh: &ConvShape,
        x: *const f32,
        w: *const f32,
        b: *const f32,
        y: *mut f32,
        n: usize,
    ) {
        let c = sh.cin;
        // SAFETY: (whole block) masked accesses touch only channels below c; rows below rows_needed(n) / n.
        unsafe {
            for t in 0..n {
                let mut o = 0;
                while o < c {
                    let left = (c - o).min(16);
                    let m: __mmask16 = if left == 16 {
                        0xffff
                    } else {
                        (1u16 << left) - 1
                    };
                    let mut acc = _mm512_maskz_loadu_ps(m, b.add(o));
                    for kk in 0..sh.k {
                        let xv = _mm512_maskz_loadu_ps(
                            m,
                            x.add((t * sh.stride + kk * sh.dilation) * c + o),
                        );
                        acc = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w.add(kk * c + o)), acc);
                    }
                    _mm512_mask_storeu_ps(y.add(t * c + o), m, acc);
                    o += left;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_kernels() -> Vec<ConvKernels> {
        ConvKernels::available()
    }

    fn close(a: &[f32], b: &[f32], scale: f32) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * scale.max(1.0))
    }

    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn dense_matches_reference(cin in 1usize..40, cout in 1usize..70, k in 1usize..6, s in 1usize..4,
                                   d in 1usize..4, n in 0usize..23, seed in any::<u64>()) {
            let sh = ConvShape { cin, cout, k, stride: s, dilation: d };
            let x = vals(sh.rows_needed(n) * cin + 3, seed);
            let w = vals(k * cin * cout, seed ^ 1);
            let b = vals(cout, seed ^ 2);
            let mut want = vec![0.0; n * cout];
            dense_ref(&sh, &x, &w, &b, &mut want, n);
            let scale = (k * cin) as f32;
            for kern in all_kernels() {
                let mut got = vec![7.0; n * cout];
                (kern.dense)(&sh, &x, &w, &b, &mut got, n);
                prop_assert!(close(&got, &want, scale), "{} differs", kern.name);
            }
        }

        #[test]
        fn depthwise_matches_reference(c in 1usize..70, k in 1usize..8, s in 1usize..4, d in 1usize..4,
                                       n in 0usize..23, seed in any::<u64>()) {
            let sh = ConvShape { cin: c, cout: c, k, stride: s, dilation: d };
            let x = vals(sh.rows_needed(n) * c, seed);
            let w = vals(k * c, seed ^ 1);
            let b = vals(c, seed ^ 2);
            let mut want = vec![0.0; n * c];
            depthwise_ref(&sh, &x, &w, &b, &mut want, n);
            for kern in all_kernels() {
                let mut got = vec![7.0; n * c];
                (kern.depthwise)(&sh, &x, &w, &b, &mut got, n);
                prop_assert!(close(&got, &want, k as f32), "{} differs", kern.name);
            }
        }
    }

    #[test]
    fn dense_layer_is_a_matrix_vector_product() {
        let x = [1.0, 2.0];
        let w = [1.0, 10.0, 100.0, 3.0, 30.0, 300.0]; // [2][3]
        let b = [0.5, 0.0, -1.0];
        for kern in all_kernels() {
            let mut y = [0.0; 3];
            dense_layer(&kern, &x, &w, &b, &mut y);
            assert_eq!(y, [7.5, 70.0, 699.0], "{}", kern.name);
        }
    }
}
