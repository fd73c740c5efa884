//! Matrix-vector and matrix-matrix products `y = x · Wᵀ` for weights in f32, bf16, q8 and q4.
//!
//! `x` is `n × cols` (one row per token), `W` is `rows × cols`, `y` is `n × rows`. q8 / q4 weights go to the integer
//! lane-tile kernels of [`super::qmatmul`]. For f32 / bf16 the unit of work is a *tile*: one
//! weight row against up to [`NT`] tokens, so each weight row is loaded (and for q4 unpacked) once per group of
//! tokens — the matrix-matrix path of prefill; decode is the same with `n = 1`. Rows are split across the
//! [`ThreadPool`]. Each tile has a scalar reference ([`Path::Scalar`]) and AVX2+FMA / AVX-512 (+VNNI for the
//! integer formats) versions chosen at run time.

use super::isa::Isa;
use super::pool::ThreadPool;
use super::qmatmul::matmul_quant;
use super::quant::{bf16_bits_to_f32, QuantActs, WeightData, Weights, CHUNK};

/// Tokens per tile.
pub const NT: usize = 4;

/// Which implementation of the tile kernels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Scalar,
    Avx2,
    Avx512,
}

impl Path {
    /// The fastest path this CPU (capped by `SIGFLOW_ISA`) supports.
    pub fn best() -> Path {
        Path::from_isa(Isa::get())
    }

    pub fn from_isa(isa: Isa) -> Path {
        if isa.avx512f && isa.avx512bw && isa.avx512vnni {
            Path::Avx512
        } else if isa.avx2_fma {
            Path::Avx2
        } else {
            Path::Scalar
        }
    }

    /// Every path runnable here, the scalar reference first.
    pub fn available() -> Vec<Path> {
        let best = Path::from_isa(Isa::detect());
        match best {
            Path::Scalar => vec![Path::Scalar],
            Path::Avx2 => vec![Path::Scalar, Path::Avx2],
            Path::Avx512 => vec![Path::Scalar, Path::Avx2, Path::Avx512],
        }
    }
}

/// The activations a tile reads: plain f32 for f32/bf16 weights, quantised for q8/q4.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    F32 { x: &'a [f32], cols: usize },
    Quant(&'a QuantActs),
}

/// Compute one tile: `out[i] = dot(W[r], x[t0 + i])` for `i < nt` (`nt ≤ NT`).
pub fn tile(
    path: Path,
    w: &Weights,
    r: usize,
    inp: Input<'_>,
    t0: usize,
    nt: usize,
    out: &mut [f32; NT],
) {
    debug_assert!((1..=NT).contains(&nt));
    match path {
        Path::Scalar => scalar::tile(w, r, inp, t0, nt, out),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => {
            // SAFETY: `Path::Avx2` is only selected when AVX2 and FMA were detected at run time.
            unsafe { avx2::tile(w, r, inp, t0, nt, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => {
            // SAFETY: `Path::Avx512` is only selected when AVX-512 F/BW/VNNI were detected at run time.
            unsafe { avx512::tile(w, r, inp, t0, nt, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::tile(w, r, inp, t0, nt, out),
    }
}

/// A raw output pointer shared by the tasks of one call; each task writes disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint indices (distinct rows) and the call waits for all tasks before returning.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `y[n × rows] = x[n × cols] · Wᵀ` on `pool`, quantising `x` into `scratch` first if `W` is q8/q4.
pub fn matmul(
    w: &Weights,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut QuantActs,
    pool: &ThreadPool,
) {
    matmul_path(Path::best(), w, x, n, y, scratch, pool)
}

/// [`matmul`] with an explicit kernel path.
pub fn matmul_path(
    path: Path,
    w: &Weights,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut QuantActs,
    pool: &ThreadPool,
) {
    assert_eq!(x.len(), n * w.cols, "matmul input shape");
    assert_eq!(y.len(), n * w.rows, "matmul output shape");
    let inp = if w.dtype().is_quantized() {
        scratch.quantize(x, n, w.cols);
        Input::Quant(scratch)
    } else {
        Input::F32 { x, cols: w.cols }
    };
    matmul_input(path, w, inp, n, y, pool);
}

/// The product from already prepared input (lets several matrices share one quantised input).
pub fn matmul_input(
    path: Path,
    w: &Weights,
    inp: Input<'_>,
    n: usize,
    y: &mut [f32],
    pool: &ThreadPool,
) {
    assert_eq!(y.len(), n * w.rows, "matmul output shape");
    if let Input::Quant(a) = inp {
        return matmul_quant(path, w, a, n, y, pool);
    }
    let rows = w.rows;
    let threads = pool.threads();
    // Several tasks per thread so a thread slowed by other load does not hold the others back.
    let tasks = if threads == 1 { 1 } else { threads * 4 };
    let per = rows.div_ceil(tasks).div_ceil(4).max(1) * 4;
    let n_tasks = rows.div_ceil(per);
    let out = OutPtr(y.as_mut_ptr());
    let job = move |task: usize| {
        let out = out;
        let r0 = task * per;
        let r1 = (r0 + per).min(rows);
        let mut acc = [0f32; NT];
        let mut r = r0;
        #[cfg(target_arch = "x86_64")]
        if path == Path::Avx512 {
            // Several rows per tile: fewer reductions and loop overheads per weight byte (decode) and shared
            // activation loads (prefill).
            const MR: usize = 4;
            let mut acc4 = [[0f32; NT]; MR];
            while r + MR <= r1 {
                let mut t0 = 0;
                while t0 < n {
                    let nt = (n - t0).min(NT);
                    // SAFETY: `Path::Avx512` is only selected when AVX-512 F/BW/VNNI were detected; rows
                    // r..r + MR < rows and tokens t0..t0 + nt < n.
                    unsafe { avx512::tile_rows::<MR>(w, r, inp, t0, nt, &mut acc4) };
                    for (m, accm) in acc4.iter().enumerate() {
                        for (i, &v) in accm.iter().enumerate().take(nt) {
                            // SAFETY: inside `y` (n × rows); each element is written by exactly one task.
                            unsafe { *out.0.add((t0 + i) * rows + r + m) = v };
                        }
                    }
                    t0 += nt;
                }
                r += MR;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let (Path::Avx2, true, Input::F32 { x, .. }) = (path, w.packed, inp) {
            // Several rows of one packed group per tile: each loaded activation vector feeds several FMAs and
            // each weight vector up to four, and fewer horizontal sums. One token (decode): all 4 rows of the
            // group, so 4 independent FMA chains hide the FMA latency; more tokens: 2 rows × up to 4 tokens.
            // Both calls: `Path::Avx2` is only selected when AVX2 and FMA were detected; the layout is packed
            // (rows a multiple of 4, tasks start at multiples of 4, so the rows of a tile share a group) and
            // tokens t0..t0 + nt < n.
            if n == 1 {
                let mut acc4 = [[0f32; NT]; 4];
                while r + 4 <= r1 {
                    // SAFETY: see above; rows r..r + 4 form one group, token 0 < n.
                    unsafe { avx2::tile_rows_packed::<4>(w, r, x, 0, 1, &mut acc4) };
                    for (m, accm) in acc4.iter().enumerate() {
                        // SAFETY: inside `y` (1 × rows); each element is written by exactly one task.
                        unsafe { *out.0.add(r + m) = accm[0] };
                    }
                    r += 4;
                }
            }
            const MR: usize = 2;
            let mut acc2 = [[0f32; NT]; MR];
            while r + MR <= r1 {
                let mut t0 = 0;
                while t0 < n {
                    let nt = (n - t0).min(NT);
                    // SAFETY: see above; rows r, r + 1 share a group, tokens t0..t0 + nt < n.
                    unsafe { avx2::tile_rows_packed::<MR>(w, r, x, t0, nt, &mut acc2) };
                    for (m, accm) in acc2.iter().enumerate() {
                        for (i, &val) in accm.iter().enumerate().take(nt) {
                            // SAFETY: inside `y` (n × rows); each element is written by exactly one task.
                            unsafe { *out.0.add((t0 + i) * rows + r + m) = val };
                        }
                    }
                    t0 += nt;
                }
                r += MR;
            }
        }
        for r in r..r1 {
            let mut t0 = 0;
            while t0 < n {
                let nt = (n - t0).min(NT);
                tile(path, w, r, inp, t0, nt, &mut acc);
                for (i, &v) in acc.iter().enumerate().take(nt) {
                    // SAFETY: (t0 + i) < n and r < rows, so the index is inside `y` (n × rows); each (row, token)
                    // element is written by exactly one task.
                    unsafe { *out.0.add((t0 + i) * rows + r) = v };
                }
                t0 += nt;
            }
        }
    };
    pool.run(n_tasks, &job);
}

/// Scalar reference kernels.
pub mod scalar {
    use super::*;

    pub fn tile(w: &Weights, r: usize, inp: Input<'_>, t0: usize, nt: usize, out: &mut [f32; NT]) {
        let c = w.cols;
        for (i, o) in out.iter_mut().enumerate().take(nt) {
            let t = t0 + i;
            *o = match (&w.data, inp) {
                (WeightData::F32(v), Input::F32 { x, .. }) => {
                    (0..c).map(|j| v[w.voff(r, j)] * x[t * c + j]).sum()
                }
                (WeightData::Bf16(v), Input::F32 { x, .. }) => (0..c)
                    .map(|j| bf16_bits_to_f32(v[w.voff(r, j)]) * x[t * c + j])
                    .sum(),
                _ => panic!("weight format and input kind do not match"),
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `MR` rows `r0..r0 + MR` of packed f32 or bf16 weights (inside one 4-row group) against tokens
    /// `t0..t0 + nt` (`nt ≤ NT`): `out[m][i] = dot(W[r0 + m], x[t0 + i])`. Each output is one 8-lane
    /// accumulator over the columns in order and then [`hsum`], whatever `MR` and `nt` are, so decode and prefill
    /// give the same bits.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `w` packed f32 or bf16, rows `r0..r0 + MR` in one group, tokens `t0 + nt` within `x`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_rows_packed<const MR: usize>(
        w: &Weights,
        r0: usize,
        x: &[f32],
        t0: usize,
        nt: usize,
        out: &mut [[f32; NT]; MR],
    ) {
        let (base, bf16) = match &w.data {
            WeightData::F32(v) => (v.as_ptr() as *const u8, false),
            WeightData::Bf16(v) => (v.as_ptr() as *const u8, true),
            _ => panic!("packed f32/bf16 tile on a quantised matrix"),
        };
        // Monomorphise on the token count and the format so the accumulators stay in registers.
        // SAFETY: every arm has the contract of this function; `base` is the storage of `w` in that format.
        unsafe {
            match (nt, bf16) {
                (1, false) => tile_rows_packed_n::<MR, 1, false>(w, base, r0, x, t0, out),
                (2, false) => tile_rows_packed_n::<MR, 2, false>(w, base, r0, x, t0, out),
                (3, false) => tile_rows_packed_n::<MR, 3, false>(w, base, r0, x, t0, out),
                (_, false) => tile_rows_packed_n::<MR, NT, false>(w, base, r0, x, t0, out),
                (1, true) => tile_rows_packed_n::<MR, 1, true>(w, base, r0, x, t0, out),
                (2, true) => tile_rows_packed_n::<MR, 2, true>(w, base, r0, x, t0, out),
                (3, true) => tile_rows_packed_n::<MR, 3, true>(w, base, r0, x, t0, out),
                (_, true) => tile_rows_packed_n::<MR, NT, true>(w, base, r0, x, t0, out),
            }
        }
    }

    /// 8 weights at storage index `idx` as f32: plain f32, or bf16 widened (the upper 16 bits of an f32).
    ///
    /// # Safety
    /// Needs AVX2; 8 elements of the format at `idx` inside the storage that `base` points to.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_w<const BF16: bool>(base: *const u8, idx: usize) -> __m256 {
        // SAFETY: guaranteed by the caller.
        unsafe {
            if BF16 {
                let h = _mm_loadu_si128(base.add(2 * idx) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            } else {
                _mm256_loadu_ps(base.add(4 * idx) as *const f32)
            }
        }
    }

    /// [`tile_rows_packed`] for exactly `N` tokens and one format.
    ///
    /// # Safety
    /// As [`tile_rows_packed`], with `base` the storage of `w` (bf16 when `BF16`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by row and token
    unsafe fn tile_rows_packed_n<const MR: usize, const N: usize, const BF16: bool>(
        w: &Weights,
        base: *const u8,
        r0: usize,
        x: &[f32],
        t0: usize,
        out: &mut [[f32; NT]; MR],
    ) {
        let c = w.cols;
        let vstep = w.vstep();
        let vs: [usize; MR] = std::array::from_fn(|m| w.vstart(r0 + m));
        let mut acc = [[_mm256_setzero_ps(); N]; MR];
        for p in 0..c / CHUNK {
            for q in 0..CHUNK / 8 {
                let col = p * CHUNK + q * 8;
                let mut xv = [_mm256_setzero_ps(); N];
                for i in 0..N {
                    // SAFETY: token row t0 + i of `x` has c values; col + 8 ≤ c.
                    xv[i] = unsafe { _mm256_loadu_ps(x.as_ptr().add((t0 + i) * c + col)) };
                }
                for m in 0..MR {
                    // SAFETY: values 8q..8q + 8 of chunk p of row r0 + m are contiguous in the storage.
                    let wv = unsafe { load_w::<BF16>(base, vs[m] + p * vstep + q * 8) };
                    for i in 0..N {
                        acc[m][i] = _mm256_fmadd_ps(wv, xv[i], acc[m][i]);
                    }
                }
            }
        }
        for m in 0..MR {
            for i in 0..N {
                // SAFETY: AVX2 is enabled for this function.
                out[m][i] = unsafe { hsum(acc[m][i]) };
            }
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA; `r`, `t0 + nt` within the matrix and input.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by token
    pub unsafe fn tile(
        w: &Weights,
        r: usize,
        inp: Input<'_>,
        t0: usize,
        nt: usize,
        out: &mut [f32; NT],
    ) {
        let c = w.cols;
        let mut acc = [_mm256_setzero_ps(); NT];
        let mut tail = [0f32; NT];
        // Groups of 8 values never straddle a chunk (64 values), so `voff` of the first one addresses all 8.
        let main = c / 8 * 8;
        match (&w.data, inp) {
            (WeightData::F32(v), Input::F32 { x, .. }) => {
                for j in (0..main).step_by(8) {
                    // SAFETY: values j..j + 8 of row r are contiguous in storage at `voff(r, j)`.
                    let wv = unsafe { _mm256_loadu_ps(v.as_ptr().add(w.voff(r, j))) };
                    for (i, a) in acc.iter_mut().enumerate().take(nt) {
                        // SAFETY: token t0 + i < n, so its row of `x` has c values.
                        let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((t0 + i) * c + j)) };
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                for (i, tl) in tail.iter_mut().enumerate().take(nt) {
                    for j in main..c {
                        *tl += v[w.voff(r, j)] * x[(t0 + i) * c + j];
                    }
                }
            }
            (WeightData::Bf16(v), Input::F32 { x, .. }) => {
                for j in (0..main).step_by(8) {
                    // SAFETY: values j..j + 8 of row r are contiguous in storage at `voff(r, j)`.
                    let h =
                        unsafe { _mm_loadu_si128(v.as_ptr().add(w.voff(r, j)) as *const __m128i) };
                    let wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
                    for (i, a) in acc.iter_mut().enumerate().take(nt) {
                        // SAFETY: token row inside `x`.
                        let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((t0 + i) * c + j)) };
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                for (i, tl) in tail.iter_mut().enumerate().take(nt) {
                    for j in main..c {
                        *tl += bf16_bits_to_f32(v[w.voff(r, j)]) * x[(t0 + i) * c + j];
                    }
                }
            }
            _ => panic!("weight format and input kind do not match"),
        }
        for i in 0..nt {
            // SAFETY: AVX2 is enabled for this function.
            out[i] = unsafe { hsum(acc[i]) } + tail[i];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bytes ahead of the current position that weights are prefetched (packed layout: one sequential stream).
    const PREFETCH_BYTES: usize = 2048;

    #[inline(always)]
    fn prefetch(p: *const u8) {
        // SAFETY: prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }

    /// One tile of `MR` consecutive weight rows `r0..r0 + MR` against tokens `t0..t0 + nt`:
    /// `out[m][i] = dot(W[r0 + m], x[t0 + i])`. Needs `cols` to be a multiple of 64 when `MR > 1`... any `cols`
    /// works: a partial last chunk is done in scalar code.
    ///
    /// # Safety
    /// Needs AVX-512 F/BW/VNNI; rows and tokens within the matrix and input.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn tile_rows<const MR: usize>(
        w: &Weights,
        r0: usize,
        inp: Input<'_>,
        t0: usize,
        nt: usize,
        out: &mut [[f32; NT]; MR],
    ) {
        // Monomorphise on the token count so the accumulators stay in registers (fully unrolled loops).
        match nt {
            // SAFETY: same contract as this function.
            1 => unsafe { tile_rows_n::<MR, 1>(w, r0, inp, t0, out) },
            // SAFETY: same contract as this function.
            2 => unsafe { tile_rows_n::<MR, 2>(w, r0, inp, t0, out) },
            // SAFETY: same contract as this function.
            3 => unsafe { tile_rows_n::<MR, 3>(w, r0, inp, t0, out) },
            // SAFETY: same contract as this function.
            _ => unsafe { tile_rows_n::<MR, NT>(w, r0, inp, t0, out) },
        }
    }

    /// [`tile_rows`] for exactly `N` tokens.
    ///
    /// # Safety
    /// As [`tile_rows`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by row and token
    unsafe fn tile_rows_n<const MR: usize, const N: usize>(
        w: &Weights,
        r0: usize,
        inp: Input<'_>,
        t0: usize,
        out: &mut [[f32; NT]; MR],
    ) {
        let c = w.cols;
        let nch = c / CHUNK;
        let vstep = w.vstep();
        let vs: [usize; MR] = std::array::from_fn(|m| w.vstart(r0 + m));
        let mut acc = [[_mm512_setzero_ps(); N]; MR];
        let mut tail = [[0f32; N]; MR];
        match (&w.data, inp) {
            (WeightData::F32(v), Input::F32 { x, .. }) => {
                for p in 0..nch {
                    for q in 0..4 {
                        let mut wv = [_mm512_setzero_ps(); MR];
                        for m in 0..MR {
                            let at = vs[m] + p * vstep + q * 16;
                            // SAFETY: values 16q..16q + 16 of chunk p of row r0 + m are inside `v`.
                            wv[m] = unsafe { _mm512_loadu_ps(v.as_ptr().add(at)) };
                            if q == 0 {
                                prefetch(
                                    v.as_ptr().wrapping_add(at + PREFETCH_BYTES / 4) as *const u8
                                );
                            }
                        }
                        for i in 0..N {
                            // SAFETY: token row t0 + i of `x` has c values.
                            let xv = unsafe {
                                _mm512_loadu_ps(x.as_ptr().add((t0 + i) * c + p * CHUNK + q * 16))
                            };
                            for m in 0..MR {
                                acc[m][i] = _mm512_fmadd_ps(wv[m], xv, acc[m][i]);
                            }
                        }
                    }
                }
                for m in 0..MR {
                    for i in 0..N {
                        for j in nch * CHUNK..c {
                            tail[m][i] += v[w.voff(r0 + m, j)] * x[(t0 + i) * c + j];
                        }
                    }
                }
            }
            (WeightData::Bf16(v), Input::F32 { x, .. }) => {
                for p in 0..nch {
                    for q in 0..4 {
                        let mut wv = [_mm512_setzero_ps(); MR];
                        for m in 0..MR {
                            let at = vs[m] + p * vstep + q * 16;
                            // SAFETY: values 16q..16q + 16 of chunk p of row r0 + m are inside `v`.
                            let h =
                                unsafe { _mm256_loadu_si256(v.as_ptr().add(at) as *const __m256i) };
                            if q == 0 {
                                prefetch(
                                    v.as_ptr().wrapping_add(at + PREFETCH_BYTES / 2) as *const u8
                                );
                            }
                            wv[m] = _mm512_castsi512_ps(_mm512_slli_epi32(
                                _mm512_cvtepu16_epi32(h),
                                16,
                            ));
                        }
                        for i in 0..N {
                            // SAFETY: token row t0 + i of `x` has c values.
                            let xv = unsafe {
                                _mm512_loadu_ps(x.as_ptr().add((t0 + i) * c + p * CHUNK + q * 16))
                            };
                            for m in 0..MR {
                                acc[m][i] = _mm512_fmadd_ps(wv[m], xv, acc[m][i]);
                            }
                        }
                    }
                }
                for m in 0..MR {
                    for i in 0..N {
                        for j in nch * CHUNK..c {
                            tail[m][i] +=
                                bf16_bits_to_f32(v[w.voff(r0 + m, j)]) * x[(t0 + i) * c + j];
                        }
                    }
                }
            }
            _ => panic!("weight format and input kind do not match"),
        }
        for m in 0..MR {
            for i in 0..N {
                out[m][i] = _mm512_reduce_add_ps(acc[m][i]) + tail[m][i];
            }
        }
    }

    /// # Safety
    /// Needs AVX-512 F/BW/VNNI; `r`, `t0 + nt` within the matrix and input.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn tile(
        w: &Weights,
        r: usize,
        inp: Input<'_>,
        t0: usize,
        nt: usize,
        out: &mut [f32; NT],
    ) {
        let mut o = [[0f32; NT]; 1];
        // SAFETY: same contract as this function.
        unsafe { tile_rows::<1>(w, r, inp, t0, nt, &mut o) };
        *out = o[0];
    }
}

#[cfg(test)]
mod tests {
    use super::super::quant::{DType, QK};
    use super::*;
    use proptest::prelude::*;

    fn check(dtype: DType, rows: usize, cols: usize, n: usize, seed: u64) {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let wv: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        let x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
        let w = Weights::from_f32(rows, cols, &wv, dtype).unwrap();
        let mut scratch = QuantActs::default();
        let pool = ThreadPool::new(2);
        let mut reference = vec![0f32; n * rows];
        matmul_path(Path::Scalar, &w, &x, n, &mut reference, &mut scratch, &pool);
        for path in Path::available() {
            let mut y = vec![0f32; n * rows];
            matmul_path(path, &w, &x, n, &mut y, &mut scratch, &pool);
            for (i, (a, b)) in y.iter().zip(&reference).enumerate() {
                let tol = 1e-4 * (cols as f32).sqrt() * 2.0;
                assert!((a - b).abs() <= tol, "{dtype:?} {path:?} [{i}] {a} vs {b}");
            }
        }
        // The quantised product approximates the exact one.
        let mut exact = vec![0f32; n * rows];
        let wf = Weights::from_f32(rows, cols, &wv, DType::F32).unwrap();
        matmul_path(Path::Scalar, &wf, &x, n, &mut exact, &mut scratch, &pool);
        let tol = match dtype {
            DType::F32 => 1e-5,
            DType::Bf16 => 0.01,
            DType::Q8 => 0.03,
            DType::Q4 => 0.25,
        } * (cols as f32).sqrt();
        for (a, b) in reference.iter().zip(&exact) {
            assert!((a - b).abs() <= tol, "{dtype:?} approximation {a} vs {b}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn every_path_matches_the_scalar_reference(
            rows in 1usize..40, blocks in 1usize..9, n in 1usize..7, seed in any::<u64>(), odd in 0usize..5
        ) {
            for dtype in [DType::Q8, DType::Q4] {
                check(dtype, rows, blocks * QK, n, seed);
            }
            for dtype in [DType::F32, DType::Bf16] {
                check(dtype, rows, blocks * QK + odd, n, seed);
            }
        }

        #[test]
        fn packed_many_token_products_match_the_scalar_reference(
            groups in 1usize..12, chunks in 1usize..5, n in 1usize..14, seed in any::<u64>()
        ) {
            // Packed layouts (rows a multiple of 4, cols of 64) take the multi-row tiles.
            for dtype in [DType::F32, DType::Bf16, DType::Q8, DType::Q4] {
                check(dtype, groups * 4, chunks * 64, n, seed);
            }
        }
    }
}
