//! Integer lane-tile kernels of the quantised formats: `y = x · Wᵀ` for q8 / q4 weights in the lane layout (see
//! [`Weights`]) against activations quantised per block of 32 ([`QuantActs`]).
//!
//! A *tile* is one group of [`LANE_ROWS`] = 16 weight rows against up to [`MAX_TOKENS`] tokens. Each 32-bit SIMD lane
//! holds a different output (row `m` of the group, one register per token), so a k-step (4 values of 16 rows, one
//! vector load) meets 4 activation bytes broadcast to every lane: AVX-512 VNNI `vpdpbusd`, or AVX2
//! `vpmaddubsw` + `vpmaddwd`. The integer sums of a 32-value block are exact; the block scales are then applied
//! once per block and output:
//!
//! `acc ← fma(d_w[b] · d_x[b], Σ_b w·x, acc)` for `b = 0, 1, …` starting from `acc = 0`,
//!
//! which is the same sequence of f32 operations on every path and for any number of tokens. So every SIMD path is
//! bit-identical to the scalar reference, and a decode step (1 token) gives exactly the numbers of a prefill (many
//! tokens through the same tile). Weight codes that the instructions need unsigned are offset (q8: +128, q4: the
//! stored code = value + 8); the offset times the block's activation sum starts the integer accumulator.

use super::matmul::Path;
use super::pool::ThreadPool;
use super::quant::{QuantActs, WeightData, Weights, LANE_ROWS, QK};

/// Most tokens one tile covers.
pub const MAX_TOKENS: usize = 8;

/// The outputs of one tile: `[token][row of the group]`.
pub type TileOut = [[f32; LANE_ROWS]; MAX_TOKENS];

/// Tokens per tile a path uses (bounded by its register file).
pub fn tokens_per_tile(path: Path) -> usize {
    match path {
        Path::Scalar => MAX_TOKENS,
        Path::Avx2 => 4,
        Path::Avx512 => MAX_TOKENS,
    }
}

/// One tile: `out[i][m] = dot(W[16g + m], x[t0 + i])` for `i < nt ≤ MAX_TOKENS` and every row `m` of group `g`
/// (rows of the padding give 0).
pub fn tile(
    path: Path,
    w: &Weights,
    g: usize,
    a: &QuantActs,
    t0: usize,
    nt: usize,
    out: &mut TileOut,
) {
    assert!(w.dtype().is_quantized(), "lane tiles need q8 or q4 weights");
    assert!(
        (1..=MAX_TOKENS).contains(&nt) && t0 + nt <= a.n,
        "tile tokens"
    );
    assert!(
        g < w.padded_rows() / LANE_ROWS && a.cols == w.cols,
        "tile shape"
    );
    // The SIMD tiles read codes, scales and sums of tokens < a.n without further checks.
    let nb = a.cols / QK;
    assert!(
        a.cols.is_multiple_of(QK)
            && a.qs.len() >= a.n * a.cols
            && a.d.len() >= a.n * nb
            && a.sum.len() >= a.n * nb,
        "quantised activations shorter than their shape"
    );
    match path {
        Path::Scalar => scalar::tile(w, g, a, t0, nt, out),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => {
            // SAFETY: `Path::Avx2` is only selected when AVX2 and FMA were detected at run time; the asserts above
            // keep the group and tokens inside the matrix and the input.
            unsafe { avx2::tile(w, g, a, t0, nt, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => {
            // SAFETY: `Path::Avx512` is only selected when AVX-512 F/BW/VNNI were detected at run time; bounds as
            // above.
            unsafe { avx512::tile(w, g, a, t0, nt, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::tile(w, g, a, t0, nt, out),
    }
}

/// A raw output pointer shared by the tasks of one call; each task writes disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint indices (distinct row groups) and the call waits for all tasks before returning.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `y[n × rows] = x · Wᵀ` from the quantised activations `a` (`n` tokens), row groups split over `pool`.
pub fn matmul_quant(
    path: Path,
    w: &Weights,
    a: &QuantActs,
    n: usize,
    y: &mut [f32],
    pool: &ThreadPool,
) {
    assert!(
        w.dtype().is_quantized(),
        "matmul_quant needs q8 or q4 weights"
    );
    assert_eq!(y.len(), n * w.rows, "matmul output shape");
    assert!(a.n >= n && a.cols == w.cols, "matmul input shape");
    let rows = w.rows;
    let groups = w.padded_rows() / LANE_ROWS;
    let threads = pool.threads();
    // Several tasks per thread so a thread slowed by other load does not hold the others back, and the thread
    // that finishes last waits for little more than one small task.
    let tasks = if threads == 1 { 1 } else { threads * 8 };
    let per = groups.div_ceil(tasks).max(1);
    let n_tasks = groups.div_ceil(per);
    let nt_max = tokens_per_tile(path);
    let out = OutPtr(y.as_mut_ptr());
    let job = move |task: usize| {
        let out = out;
        let mut o: TileOut = [[0.0; LANE_ROWS]; MAX_TOKENS];
        for g in task * per..((task + 1) * per).min(groups) {
            let r0 = g * LANE_ROWS;
            let valid = (rows - r0).min(LANE_ROWS);
            let mut t0 = 0;
            while t0 < n {
                let nt = (n - t0).min(nt_max);
                tile(path, w, g, a, t0, nt, &mut o);
                for (i, row) in o.iter().enumerate().take(nt) {
                    // SAFETY: token t0 + i < n and rows r0..r0 + valid ≤ rows, so the range is inside `y`
                    // (n × rows); each (token, row) element is written by exactly one task.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            row.as_ptr(),
                            out.0.add((t0 + i) * rows + r0),
                            valid,
                        )
                    };
                }
                t0 += nt;
            }
        }
    };
    pool.run(n_tasks, &job);
}

/// Scalar reference: per output, exact integer block sums, then `acc = fma(d_w · d_x, sum, acc)` block by block.
pub mod scalar {
    use super::*;

    pub fn tile(w: &Weights, g: usize, a: &QuantActs, t0: usize, nt: usize, out: &mut TileOut) {
        let nb = w.cols / QK;
        for (i, o) in out.iter_mut().enumerate().take(nt) {
            let t = t0 + i;
            for (m, om) in o.iter_mut().enumerate() {
                let r = g * LANE_ROWS + m;
                let mut acc = 0f32;
                for b in 0..nb {
                    let blk = t * nb + b;
                    let xq = &a.qs[blk * QK..(blk + 1) * QK];
                    let dot: i32 = (0..QK).map(|e| w.q_at(r, b * QK + e) * xq[e] as i32).sum();
                    acc = (w.scale_at(r, b) * a.d[blk]).mul_add(dot as f32, acc);
                }
                *om = acc;
            }
        }
    }
}

/// The codes, scale and sum of block `b` of tokens `t0..t0 + N` (the SIMD tiles' view of one block of the input).
#[cfg(target_arch = "x86_64")]
struct XBlocks<const N: usize> {
    qs: [*const i8; N],
    d: [f32; N],
    sum: [i32; N],
}

#[cfg(target_arch = "x86_64")]
impl<const N: usize> XBlocks<N> {
    /// # Safety
    /// Tokens `t0..t0 + N` and block `b < nb` inside `a`, whose buffers hold `a.n` tokens (checked by [`tile`]).
    #[inline(always)]
    unsafe fn new(a: &QuantActs, t0: usize, nb: usize, b: usize) -> Self {
        let blk = |i: usize| (t0 + i) * nb + b;
        // SAFETY: blk(i) < a.n · nb by the caller's contract, and the buffers hold that many blocks.
        unsafe {
            Self {
                qs: std::array::from_fn(|i| a.qs.as_ptr().add(blk(i) * QK)),
                d: std::array::from_fn(|i| *a.d.get_unchecked(blk(i))),
                sum: std::array::from_fn(|i| *a.sum.get_unchecked(blk(i))),
            }
        }
    }

    /// The 4 bytes of k-step `j < 8` of token `i`'s block, as one little-endian i32 (for a broadcast).
    #[inline(always)]
    fn x4(&self, i: usize, j: usize) -> i32 {
        // Constant after the tiles' loops are unrolled, so the check costs nothing there; it keeps this safe fn sound.
        assert!(j < QK / 4, "k-step outside the block");
        // SAFETY: `qs[i]` points at 32 codes (see `new`) and 4·j + 4 ≤ 32; i8 has no invalid bit patterns.
        unsafe { (self.qs[i].add(4 * j) as *const i32).read_unaligned() }
    }
}

/// How far ahead of the block being read the tiles prefetch the weight stream, in bytes.
///
/// On the AVX-512 decode path (one token, weights streamed from DRAM, Zen 4, one thread) one L2 prefetch per
/// 256 bytes at 4–16 KB ahead streamed 9–25 % faster than one L1 prefetch per 64-byte line at 1–2 KB ahead, and
/// faster than none. The AVX2 one-token tile issues none: on Zen 3 the hardware prefetchers alone streamed a
/// 1-token product at the read probe's rate, and any software prefetch (2–32 KB ahead) slowed it by 15–40 %.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 8192;

/// L2 prefetch hints for the `quarters` 256-byte quarters of weight codes `PREFETCH_AHEAD` bytes past `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_ahead(p: *const u8, quarters: usize) {
    for q in 0..quarters {
        let at = p.wrapping_add(PREFETCH_AHEAD + 256 * q) as *const i8;
        // SAFETY: prefetch is a hint; it never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(at) };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// Needs AVX2 and FMA; group `g` inside the padded matrix, tokens `t0..t0 + nt` inside `a`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        w: &Weights,
        g: usize,
        a: &QuantActs,
        t0: usize,
        nt: usize,
        out: &mut TileOut,
    ) {
        // At most 4 tokens per pass (16 registers); monomorphise on the token count so the accumulators stay in
        // registers.
        let q4 = matches!(w.data, WeightData::Q4 { .. });
        let mut done = 0;
        while done < nt {
            let k = (nt - done).min(4);
            let o = &mut out[done..done + k];
            let t = t0 + done;
            // Every arm: the contract of this function, for tokens t..t + k. With q4 and 3 or more tokens, the
            // decoded weights of both halves of the group and the accumulators need more than 16 registers, so
            // each half gets a pass of its own (measured faster; with q8 one pass is faster).
            match (k, q4) {
                // SAFETY: same contract as this function.
                (1, _) => unsafe { tile_n::<1>(w, g, a, t, o) },
                // SAFETY: same contract as this function.
                (2, _) => unsafe { tile_n::<2>(w, g, a, t, o) },
                // SAFETY: same contract as this function.
                (3, false) => unsafe { tile_n::<3>(w, g, a, t, o) },
                // SAFETY: same contract as this function.
                (_, false) => unsafe { tile_n::<4>(w, g, a, t, o) },
                (3, true) => {
                    for h in 0..2 {
                        // SAFETY: same contract as this function; h < 2.
                        unsafe { tile_q4_half::<3>(w, g, a, t, h, o) }
                    }
                }
                (_, true) => {
                    for h in 0..2 {
                        // SAFETY: same contract as this function; h < 2.
                        unsafe { tile_q4_half::<4>(w, g, a, t, h, o) }
                    }
                }
            }
            done += k;
        }
    }

    /// Each register holds 8 rows (two registers per 16-row group); `N` tokens.
    ///
    /// # Safety
    /// As [`tile`], with `N ≤ 4` tokens and `out` holding at least `N` rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by token and half
    unsafe fn tile_n<const N: usize>(
        w: &Weights,
        g: usize,
        a: &QuantActs,
        t0: usize,
        out: &mut [[f32; LANE_ROWS]],
    ) {
        let nb = w.cols / QK;
        let ones = _mm256_set1_epi16(1);
        let mut facc = [[_mm256_setzero_ps(); 2]; N];
        match &w.data {
            WeightData::Q8 { qs, d } => {
                for b in 0..nb {
                    let base = (g * nb + b) * 8 * 64;
                    // SAFETY: tokens t0..t0 + N and block b are inside `a` (contract of this function).
                    let x = unsafe { XBlocks::<N>::new(a, t0, nb, b) };
                    let mut iacc = [[_mm256_setzero_si256(); 2]; N];
                    if N > 1 {
                        // No software prefetch for one token (see `PREFETCH_AHEAD`).
                        prefetch_ahead(qs.as_ptr().wrapping_add(base) as *const u8, 2);
                    }
                    for j in 0..8 {
                        let at = base + j * 64;
                        // SAFETY: k-step j of block b of group g is 64 bytes at `at` inside `qs`.
                        let (w0, w1) = unsafe {
                            (
                                _mm256_loadu_si256(qs.as_ptr().add(at) as *const __m256i),
                                _mm256_loadu_si256(qs.as_ptr().add(at + 32) as *const __m256i),
                            )
                        };
                        let (a0, a1) = (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1));
                        for i in 0..N {
                            let xb = _mm256_set1_epi32(x.x4(i, j));
                            // |w| · (x · sign(w)) = w · x; pairs stay within ±2·127² (no saturation).
                            let p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(xb, w0));
                            let p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(xb, w1));
                            iacc[i][0] = _mm256_add_epi32(iacc[i][0], _mm256_madd_epi16(p0, ones));
                            iacc[i][1] = _mm256_add_epi32(iacc[i][1], _mm256_madd_epi16(p1, ones));
                        }
                    }
                    // SAFETY: the 16 scales of block b of group g are inside `d`.
                    unsafe { scale_block::<N>(d, g, nb, b, &x, &iacc, &mut facc) };
                }
            }
            WeightData::Q4 { qs, d } => {
                let low = _mm256_set1_epi8(15);
                for b in 0..nb {
                    let base = (g * nb + b) * 4 * 64;
                    // SAFETY: tokens t0..t0 + N and block b are inside `a` (contract of this function).
                    let x = unsafe { XBlocks::<N>::new(a, t0, nb, b) };
                    // Products of codes ≤ 15 and |x| ≤ 127: 8 k-steps of pairs stay below 2^15 in 16 bits.
                    let mut hacc = [[_mm256_setzero_si256(); 2]; N];
                    if N > 1 {
                        // No software prefetch for one token (see `PREFETCH_AHEAD`).
                        prefetch_ahead(qs.as_ptr().wrapping_add(base), 1);
                    }
                    for z in 0..4 {
                        let at = base + z * 64;
                        // SAFETY: unit z of block b of group g is 64 bytes at `at` inside `qs`.
                        let (v0, v1) = unsafe {
                            (
                                _mm256_loadu_si256(qs.as_ptr().add(at) as *const __m256i),
                                _mm256_loadu_si256(qs.as_ptr().add(at + 32) as *const __m256i),
                            )
                        };
                        let lo0 = _mm256_and_si256(v0, low);
                        let lo1 = _mm256_and_si256(v1, low);
                        let hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
                        let hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
                        for i in 0..N {
                            let xl = _mm256_set1_epi32(x.x4(i, z));
                            let xh = _mm256_set1_epi32(x.x4(i, z + 4));
                            let s0 = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo0, xl),
                                _mm256_maddubs_epi16(hi0, xh),
                            );
                            let s1 = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo1, xl),
                                _mm256_maddubs_epi16(hi1, xh),
                            );
                            hacc[i][0] = _mm256_add_epi16(hacc[i][0], s0);
                            hacc[i][1] = _mm256_add_epi16(hacc[i][1], s1);
                        }
                    }
                    let mut iacc = [[_mm256_setzero_si256(); 2]; N];
                    for i in 0..N {
                        // Codes are value + 8: subtract 8 · Σx.
                        let corr = _mm256_set1_epi32(8 * x.sum[i]);
                        for h in 0..2 {
                            iacc[i][h] =
                                _mm256_sub_epi32(_mm256_madd_epi16(hacc[i][h], ones), corr);
                        }
                    }
                    // SAFETY: the 16 scales of block b of group g are inside `d`.
                    unsafe { scale_block::<N>(d, g, nb, b, &x, &iacc, &mut facc) };
                }
            }
            _ => unreachable!("checked by `tile`"),
        }
        for i in 0..N {
            for h in 0..2 {
                // SAFETY: out[i] has 16 floats; half h is 8 of them.
                unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(8 * h), facc[i][h]) };
            }
        }
    }

    /// q4 rows `8h..8h + 8` of the group (one register per token) for `N` tokens: the same operations per output
    /// as [`tile_n`], so the same bits.
    ///
    /// # Safety
    /// As [`tile`], with q4 weights, `N ≤ 4` tokens, `h < 2` and `out` holding at least `N` rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by token
    unsafe fn tile_q4_half<const N: usize>(
        w: &Weights,
        g: usize,
        a: &QuantActs,
        t0: usize,
        h: usize,
        out: &mut [[f32; LANE_ROWS]],
    ) {
        let WeightData::Q4 { qs, d } = &w.data else {
            unreachable!("called for q4 weights only")
        };
        let nb = w.cols / QK;
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(15);
        let mut facc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            // SAFETY: tokens t0..t0 + N and block b are inside `a` (contract of this function).
            let x = unsafe { XBlocks::<N>::new(a, t0, nb, b) };
            let base = (g * nb + b) * 4 * 64;
            if h == 0 {
                prefetch_ahead(qs.as_ptr().wrapping_add(base), 1);
            }
            let mut hacc = [_mm256_setzero_si256(); N];
            for z in 0..4 {
                // SAFETY: half h of unit z of block b of group g is 32 bytes inside `qs`.
                let v = unsafe {
                    _mm256_loadu_si256(qs.as_ptr().add(base + z * 64 + 32 * h) as *const __m256i)
                };
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                for i in 0..N {
                    let xl = _mm256_set1_epi32(x.x4(i, z));
                    let xh = _mm256_set1_epi32(x.x4(i, z + 4));
                    let s = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl),
                        _mm256_maddubs_epi16(hi, xh),
                    );
                    hacc[i] = _mm256_add_epi16(hacc[i], s);
                }
            }
            // SAFETY: the 16 scales of block b of group g are inside `d`; half h is 8 of them.
            let dw = unsafe { _mm256_loadu_ps(d.as_ptr().add((g * nb + b) * LANE_ROWS + 8 * h)) };
            for i in 0..N {
                // Codes are value + 8: subtract 8 · Σx.
                let corr = _mm256_set1_epi32(8 * x.sum[i]);
                let iacc = _mm256_sub_epi32(_mm256_madd_epi16(hacc[i], ones), corr);
                let s = _mm256_mul_ps(dw, _mm256_set1_ps(x.d[i]));
                facc[i] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(iacc), facc[i]);
            }
        }
        for i in 0..N {
            // SAFETY: out[i] has 16 floats; half h is 8 of them.
            unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(8 * h), facc[i]) };
        }
    }

    /// `facc = fma(d_w · d_x, float(iacc), facc)` for block `b` of every token.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; the 16 scales of block `b` of group `g` inside `d`, tokens inside `a`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scale_block<const N: usize>(
        d: &[f32],
        g: usize,
        nb: usize,
        b: usize,
        x: &XBlocks<N>,
        iacc: &[[__m256i; 2]; N],
        facc: &mut [[__m256; 2]; N],
    ) {
        let at = (g * nb + b) * LANE_ROWS;
        // SAFETY: guaranteed by the caller.
        let dw = unsafe {
            [
                _mm256_loadu_ps(d.as_ptr().add(at)),
                _mm256_loadu_ps(d.as_ptr().add(at + 8)),
            ]
        };
        for i in 0..N {
            let dx = _mm256_set1_ps(x.d[i]);
            for h in 0..2 {
                let s = _mm256_mul_ps(dw[h], dx);
                facc[i][h] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(iacc[i][h]), facc[i][h]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// Needs AVX-512 F/BW/VNNI; group `g` inside the padded matrix, tokens `t0..t0 + nt` inside `a`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub unsafe fn tile(
        w: &Weights,
        g: usize,
        a: &QuantActs,
        t0: usize,
        nt: usize,
        out: &mut TileOut,
    ) {
        // Monomorphise on the token count so the accumulators stay in registers.
        match nt {
            // SAFETY: same contract as this function.
            1 => unsafe { tile_n::<1>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            2 => unsafe { tile_n::<2>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            3 => unsafe { tile_n::<3>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            4 => unsafe { tile_n::<4>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            5 => unsafe { tile_n::<5>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            6 => unsafe { tile_n::<6>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            7 => unsafe { tile_n::<7>(w, g, a, t0, out) },
            // SAFETY: same contract as this function.
            _ => unsafe { tile_n::<8>(w, g, a, t0, out) },
        }
    }

    /// One register per token holds the 16 rows of the group.
    ///
    /// # Safety
    /// As [`tile`], with `N ≤ 8` tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    #[allow(clippy::needless_range_loop)] // fixed-size register tiles indexed by token
    unsafe fn tile_n<const N: usize>(
        w: &Weights,
        g: usize,
        a: &QuantActs,
        t0: usize,
        out: &mut TileOut,
    ) {
        let nb = w.cols / QK;
        let mut facc = [_mm512_setzero_ps(); N];
        match &w.data {
            WeightData::Q8 { qs, d } => {
                let flip = _mm512_set1_epi8(-128);
                for b in 0..nb {
                    let base = (g * nb + b) * 8 * 64;
                    // SAFETY: tokens t0..t0 + N and block b are inside `a` (contract of this function).
                    let x = unsafe { XBlocks::<N>::new(a, t0, nb, b) };
                    // Codes + 128 are unsigned: start from −128 · Σx.
                    let mut iacc: [__m512i; N] =
                        std::array::from_fn(|i| _mm512_set1_epi32(-128 * x.sum[i]));
                    prefetch_ahead(qs.as_ptr().wrapping_add(base) as *const u8, 2);
                    for j in 0..8 {
                        let at = base + j * 64;
                        // SAFETY: k-step j of block b of group g is 64 bytes at `at` inside `qs`.
                        let wv =
                            unsafe { _mm512_loadu_si512(qs.as_ptr().add(at) as *const __m512i) };
                        let u = _mm512_xor_si512(wv, flip);
                        for i in 0..N {
                            let xb = _mm512_set1_epi32(x.x4(i, j));
                            iacc[i] = _mm512_dpbusd_epi32(iacc[i], u, xb);
                        }
                    }
                    // SAFETY: the 16 scales of block b of group g are inside `d`.
                    unsafe { scale_block::<N>(d, g, nb, b, &x, &iacc, &mut facc) };
                }
            }
            WeightData::Q4 { qs, d } => {
                let low = _mm512_set1_epi8(15);
                for b in 0..nb {
                    let base = (g * nb + b) * 4 * 64;
                    // SAFETY: tokens t0..t0 + N and block b are inside `a` (contract of this function).
                    let x = unsafe { XBlocks::<N>::new(a, t0, nb, b) };
                    // Codes are value + 8: start from −8 · Σx.
                    let mut iacc: [__m512i; N] =
                        std::array::from_fn(|i| _mm512_set1_epi32(-8 * x.sum[i]));
                    prefetch_ahead(qs.as_ptr().wrapping_add(base), 1);
                    for z in 0..4 {
                        let at = base + z * 64;
                        // SAFETY: unit z of block b of group g is 64 bytes at `at` inside `qs`.
                        let v =
                            unsafe { _mm512_loadu_si512(qs.as_ptr().add(at) as *const __m512i) };
                        let lo = _mm512_and_si512(v, low);
                        let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                        for i in 0..N {
                            iacc[i] =
                                _mm512_dpbusd_epi32(iacc[i], lo, _mm512_set1_epi32(x.x4(i, z)));
                            iacc[i] =
                                _mm512_dpbusd_epi32(iacc[i], hi, _mm512_set1_epi32(x.x4(i, z + 4)));
                        }
                    }
                    // SAFETY: the 16 scales of block b of group g are inside `d`.
                    unsafe { scale_block::<N>(d, g, nb, b, &x, &iacc, &mut facc) };
                }
            }
            _ => unreachable!("checked by `tile`"),
        }
        for i in 0..N {
            // SAFETY: out[i] has 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), facc[i]) };
        }
    }

    /// `facc = fma(d_w · d_x, float(iacc), facc)` for block `b` of every token.
    ///
    /// # Safety
    /// Needs AVX-512 F; the 16 scales of block `b` of group `g` inside `d`, tokens inside `a`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scale_block<const N: usize>(
        d: &[f32],
        g: usize,
        nb: usize,
        b: usize,
        x: &XBlocks<N>,
        iacc: &[__m512i; N],
        facc: &mut [__m512; N],
    ) {
        // SAFETY: guaranteed by the caller.
        let dw = unsafe { _mm512_loadu_ps(d.as_ptr().add((g * nb + b) * LANE_ROWS)) };
        for i in 0..N {
            let s = _mm512_mul_ps(dw, _mm512_set1_ps(x.d[i]));
            facc[i] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(iacc[i]), facc[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::quant::DType;
    use super::*;
    use proptest::prelude::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every path and every tile width gives the scalar reference's bits, and `n` tokens at once equal `n` single
    /// tokens (prefill = decode).
    fn check(dtype: DType, rows: usize, cols: usize, n: usize, seed: u64) {
        let w = Weights::from_f32(rows, cols, &random(rows * cols, seed), dtype).unwrap();
        let mut x = random(n * cols, seed ^ 0x5555);
        // Some blocks of zeros and of large values (scale 0, extreme codes).
        x[..QK].fill(0.0);
        if x.len() > 2 * QK {
            x[QK..2 * QK].iter_mut().for_each(|v| *v *= 1e3);
        }
        let mut a = QuantActs::default();
        a.quantize(&x, n, cols);
        let pool = ThreadPool::new(2);
        let mut reference = vec![0f32; n * rows];
        matmul_quant(Path::Scalar, &w, &a, n, &mut reference, &pool);
        // The reference computed from the definition.
        let nb = cols / QK;
        for t in 0..n {
            for r in 0..rows {
                let mut acc = 0f32;
                for b in 0..nb {
                    let blk = t * nb + b;
                    let dot: i32 = (0..QK)
                        .map(|e| w.q_at(r, b * QK + e) * a.qs[blk * QK + e] as i32)
                        .sum();
                    acc = (w.scale_at(r, b) * a.d[blk]).mul_add(dot as f32, acc);
                }
                assert_eq!(acc.to_bits(), reference[t * rows + r].to_bits());
            }
        }
        for path in Path::available() {
            let mut y = vec![0f32; n * rows];
            matmul_quant(path, &w, &a, n, &mut y, &pool);
            assert_eq!(
                bits(&y),
                bits(&reference),
                "{dtype:?} {path:?} {rows}x{cols} n={n}"
            );
            // Token by token (decode) gives the same bits.
            for t in 0..n {
                let mut one = QuantActs::default();
                one.quantize(&x[t * cols..(t + 1) * cols], 1, cols);
                let mut y1 = vec![0f32; rows];
                matmul_quant(path, &w, &one, 1, &mut y1, &pool);
                assert_eq!(
                    bits(&y1),
                    bits(&reference[t * rows..(t + 1) * rows]),
                    "{path:?} t={t}"
                );
            }
            // Single tiles of every width.
            for nt in 1..=MAX_TOKENS.min(n) {
                let mut o: TileOut = [[0.0; LANE_ROWS]; MAX_TOKENS];
                tile(path, &w, 0, &a, n - nt, nt, &mut o);
                for i in 0..nt {
                    for m in 0..LANE_ROWS.min(rows) {
                        assert_eq!(
                            o[i][m].to_bits(),
                            reference[(n - nt + i) * rows + m].to_bits()
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn every_path_is_bit_identical_to_the_scalar_reference(
            rows in 1usize..50, blocks in 1usize..6, n in 1usize..12, seed in any::<u64>()
        ) {
            for dtype in [DType::Q8, DType::Q4] {
                check(dtype, rows, blocks * QK, n, seed);
            }
        }
    }

    #[test]
    fn model_sized_shapes() {
        for dtype in [DType::Q8, DType::Q4] {
            check(dtype, 64, 1024, 9, 7);
        }
    }
}
