//! Weight formats for the matrix kernels and their conversion at load time.
//!
//! A [`Weights`] matrix is stored row-major as `rows × cols` (one row per output feature, the layout of a PyTorch
//! `nn.Linear` weight), in one of four formats:
//! - `F32`, `Bf16` (upper 16 bits of an f32),
//! - `Q8`: blocks of [`QK`] = 32 signed 8-bit values with one f32 scale per block (like ggml's Q8_0),
//! - `Q4`: blocks of 32 4-bit values (stored offset by 8, two per byte) with one f32 scale per block (like Q4_0).
//!
//! For the quantised formats the activations are quantised too ([`QuantActs`]: 8-bit per block of 32 with a scale),
//! so the inner products run on integers (AVX-512 VNNI / AVX2 `maddubs`). q8 and q4 matrices use the *lane
//! layout* of the integer kernels (see [`Weights`]): one 32-bit SIMD lane per output row.

use half::bf16;

/// Block length of the quantised formats.
pub const QK: usize = 32;

/// How a weight matrix is stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    Bf16,
    Q8,
    Q4,
}

impl DType {
    /// Parse `f32`, `bf16`, `q8` or `q4`.
    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "bf16" => Some(DType::Bf16),
            "q8" => Some(DType::Q8),
            "q4" => Some(DType::Q4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::Q8 => "q8",
            DType::Q4 => "q4",
        }
    }

    /// Whether matrices of this type use quantised activations.
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8 | DType::Q4)
    }
}

/// The storage of a weight matrix.
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    /// `qs`: padded rows × cols signed values; `d`: one scale per block of 32 (padded rows × cols/32); lane layout.
    Q8 {
        qs: Vec<i8>,
        d: Vec<f32>,
    },
    /// `qs`: padded rows × cols/2 bytes (two codes per byte); `d`: one scale per block; lane layout.
    Q4 {
        qs: Vec<u8>,
        d: Vec<f32>,
    },
}

/// A `rows × cols` matrix (row = output feature).
///
/// **q8 / q4 (lane layout).** Rows are padded with zero rows to a multiple of [`LANE_ROWS`] = 16 and taken in
/// groups of 16 (one 32-bit lane of a 512-bit register per row). For group `g` and block `b` (32 values) of its
/// rows, the storage holds *k-steps* of 64 bytes, each the 4 consecutive values `4j..4j + 4` of the block for all
/// 16 rows (row `m` at bytes `4m..4m + 4`): q8 stores the 8 k-steps `j = 0..8` one after the other (512 bytes);
/// q4 stores 4 units of 64 bytes whose low nibbles are k-step `z` and whose high nibbles are k-step `z + 4`
/// (256 bytes). The 16 scales of the group's block `b` follow each other. So one vector load gives 4 values of 16
/// rows, and a dot-product instruction against 4 broadcast activation bytes yields exact partial sums of 16 rows.
/// [`Weights::q_at`] and [`Weights::scale_at`] address single values.
///
/// **f32 / bf16.** Storage is cut into *chunks* of [`CHUNK`] = 64 consecutive values of a row (2 blocks for q8/q4). When `packed`
/// (rows a multiple of [`GROUP`] = 4 and cols a multiple of 64), the chunks of 4 consecutive rows are interleaved:
/// chunk `p` of rows `4g..4g + 4` lie next to each other, so a 4-row kernel reads one sequential stream; scales are
/// interleaved the same way (2 per chunk). Otherwise rows are stored one after the other. [`Weights::vstart`] /
/// [`Weights::vstep`] (and `dstart` / `dstep` for scales) give the addressing for either layout.
#[derive(Debug, Clone)]
pub struct Weights {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
    pub packed: bool,
}

/// Values per chunk.
pub const CHUNK: usize = 64;
/// Rows of one group of the q8/q4 lane layout (one 32-bit lane of a 512-bit register each).
pub const LANE_ROWS: usize = 16;
/// Rows interleaved in the packed layout.
pub const GROUP: usize = 4;

/// Interleave the chunks of each group of `GROUP` rows (`unit` storage elements per chunk, `row_units` per row).
fn interleave<T: Copy + Default>(v: &[T], rows: usize, row_units: usize, unit: usize) -> Vec<T> {
    let mut out = huge_vec::<T>(v.len());
    let nch = row_units / unit;
    for r in 0..rows {
        let (g, m) = (r / GROUP, r % GROUP);
        for p in 0..nch {
            let dst = ((g * nch + p) * GROUP + m) * unit;
            out[dst..dst + unit]
                .copy_from_slice(&v[r * row_units + p * unit..r * row_units + (p + 1) * unit]);
        }
    }
    out
}

/// Round to the nearest bf16 (ties to even), as PyTorch's `.to(torch.bfloat16)` does.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

impl Weights {
    /// Convert a row-major f32 matrix to `dtype`. Quantised types need `cols` to be a multiple of 32.
    pub fn from_f32(rows: usize, cols: usize, v: &[f32], dtype: DType) -> Result<Weights, String> {
        if v.len() != rows * cols {
            return Err(format!(
                "expected {rows}×{cols} = {} values, got {}",
                rows * cols,
                v.len()
            ));
        }
        if dtype.is_quantized() && !cols.is_multiple_of(QK) {
            return Err(format!(
                "{} needs the input dimension to be a multiple of {QK}, got {cols}",
                dtype.name()
            ));
        }
        let data = match dtype {
            DType::F32 => {
                let mut o = huge_vec::<f32>(v.len());
                o.copy_from_slice(v);
                WeightData::F32(o)
            }
            DType::Bf16 => {
                let mut o = huge_vec::<u16>(v.len());
                for (d, &x) in o.iter_mut().zip(v) {
                    *d = f32_to_bf16_bits(x);
                }
                WeightData::Bf16(o)
            }
            DType::Q8 => {
                let (mut qs, mut dd) = lane_buffers::<i8>(rows, cols, cols, 0);
                let mut codes = [0i8; QK];
                for r in 0..rows {
                    for b in 0..cols / QK {
                        let src = &v[r * cols + b * QK..r * cols + (b + 1) * QK];
                        dd[scale_index(cols, r, b)] = quantize_block_q8(src, &mut codes);
                        for (e, &q) in codes.iter().enumerate() {
                            qs[q8_index(cols, r, b * QK + e)] = q;
                        }
                    }
                }
                WeightData::Q8 { qs, d: dd }
            }
            DType::Q4 => {
                // Padding rows hold code 8 (value 0) with scale 0.
                let (mut qs, mut d) = lane_buffers::<u8>(rows, cols, cols / 2, 0x88);
                for r in 0..rows {
                    for b in 0..cols / QK {
                        let src = &v[r * cols + b * QK..r * cols + (b + 1) * QK];
                        // The value of largest magnitude maps to code 0 (−8): all 16 levels are used.
                        let vmax = src
                            .iter()
                            .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
                        let scale = vmax / -8.0;
                        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
                        for (e, &x) in src.iter().enumerate() {
                            let code = ((x * inv).round().clamp(-8.0, 7.0) as i32 + 8) as u8;
                            let (byte, high) = q4_index(cols, r, b * QK + e);
                            qs[byte] = if high {
                                (qs[byte] & 0x0F) | (code << 4)
                            } else {
                                (qs[byte] & 0xF0) | code
                            };
                        }
                        d[scale_index(cols, r, b)] = scale;
                    }
                }
                WeightData::Q4 { qs, d }
            }
        };
        Ok(Weights {
            rows,
            cols,
            data,
            packed: false,
        }
        .packed_if_possible())
    }

    /// Switch f32/bf16 to the packed layout when the shape allows it (q8/q4 always use the lane layout).
    fn packed_if_possible(self) -> Weights {
        if self.dtype().is_quantized() {
            return Weights {
                packed: true,
                ..self
            };
        }
        if self.packed
            || !self.rows.is_multiple_of(GROUP)
            || !self.cols.is_multiple_of(CHUNK)
            || self.rows == 0
        {
            return self;
        }
        let (rows, cols) = (self.rows, self.cols);
        let data = match self.data {
            WeightData::F32(v) => WeightData::F32(interleave(&v, rows, cols, CHUNK)),
            WeightData::Bf16(v) => WeightData::Bf16(interleave(&v, rows, cols, CHUNK)),
            quantized => quantized,
        };
        Weights {
            rows,
            cols,
            data,
            packed: true,
        }
    }

    /// Storage elements per chunk (f32/bf16).
    pub fn chunk_units(&self) -> usize {
        CHUNK
    }

    /// Storage offset of the first chunk of row `r`.
    #[inline]
    pub fn vstart(&self, r: usize) -> usize {
        let u = self.chunk_units();
        if self.packed {
            let per_row = self.cols / CHUNK * u;
            (r / GROUP) * GROUP * per_row + (r % GROUP) * u
        } else {
            r * (self.cols * u).div_ceil(CHUNK)
        }
    }

    /// Storage distance between consecutive chunks of one row.
    #[inline]
    pub fn vstep(&self) -> usize {
        if self.packed {
            GROUP * self.chunk_units()
        } else {
            self.chunk_units()
        }
    }

    /// Storage offset of value `j` of row `r` (f32/bf16).
    #[inline]
    pub fn voff(&self, r: usize, j: usize) -> usize {
        self.vstart(r) + (j / CHUNK) * self.vstep() + j % CHUNK
    }

    /// The signed quantised value `j` of row `r` of a q8 or q4 matrix (before scaling); 0 for f32/bf16.
    #[inline]
    pub fn q_at(&self, r: usize, j: usize) -> i32 {
        match &self.data {
            WeightData::Q8 { qs, .. } => qs[q8_index(self.cols, r, j)] as i32,
            WeightData::Q4 { qs, .. } => {
                let (byte, high) = q4_index(self.cols, r, j);
                let q = if high { qs[byte] >> 4 } else { qs[byte] & 15 };
                q as i32 - 8
            }
            _ => 0,
        }
    }

    /// The scale of block `b` of row `r` of a q8 or q4 matrix; 0 for f32/bf16.
    #[inline]
    pub fn scale_at(&self, r: usize, b: usize) -> f32 {
        match &self.data {
            WeightData::Q8 { d, .. } | WeightData::Q4 { d, .. } => d[scale_index(self.cols, r, b)],
            _ => 0.0,
        }
    }

    /// Rows including the padding of the lane layout (q8/q4); `rows` for f32/bf16.
    pub fn padded_rows(&self) -> usize {
        if self.dtype().is_quantized() {
            self.rows.div_ceil(LANE_ROWS) * LANE_ROWS
        } else {
            self.rows
        }
    }

    /// Convert bf16 bits (as stored in a checkpoint) to `dtype`; `Bf16` keeps the bits unchanged.
    pub fn from_bf16_bits(
        rows: usize,
        cols: usize,
        v: &[u16],
        dtype: DType,
    ) -> Result<Weights, String> {
        if dtype == DType::Bf16 {
            if v.len() != rows * cols {
                return Err(format!(
                    "expected {rows}×{cols} = {} values, got {}",
                    rows * cols,
                    v.len()
                ));
            }
            let mut o = huge_vec::<u16>(v.len());
            o.copy_from_slice(v);
            return Ok(Weights {
                rows,
                cols,
                data: WeightData::Bf16(o),
                packed: false,
            }
            .packed_if_possible());
        }
        let f: Vec<f32> = v.iter().map(|&b| bf16_bits_to_f32(b)).collect();
        Weights::from_f32(rows, cols, &f, dtype)
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            WeightData::F32(_) => DType::F32,
            WeightData::Bf16(_) => DType::Bf16,
            WeightData::Q8 { .. } => DType::Q8,
            WeightData::Q4 { .. } => DType::Q4,
        }
    }

    /// Bytes a full pass over the matrix reads (values + scales).
    pub fn bytes(&self) -> usize {
        match &self.data {
            WeightData::F32(v) => v.len() * 4,
            WeightData::Bf16(v) => v.len() * 2,
            WeightData::Q8 { qs, d } => qs.len() + d.len() * 4,
            WeightData::Q4 { qs, d } => qs.len() + d.len() * 4,
        }
    }

    /// Row `r` as f32 (dequantised); used for embedding lookup and tests.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match &self.data {
            WeightData::F32(v) => {
                for (j, o) in out.iter_mut().enumerate().take(c) {
                    *o = v[self.voff(r, j)];
                }
            }
            WeightData::Bf16(v) => {
                for (j, o) in out.iter_mut().enumerate().take(c) {
                    *o = bf16_bits_to_f32(v[self.voff(r, j)]);
                }
            }
            WeightData::Q8 { .. } | WeightData::Q4 { .. } => {
                for (j, o) in out.iter_mut().enumerate().take(c) {
                    *o = self.q_at(r, j) as f32 * self.scale_at(r, j / QK);
                }
            }
        }
    }
}

/// Value and scale buffers of a q8/q4 matrix in the lane layout: `units_per_row` storage elements per (padded) row,
/// all set to `fill`, and zeroed scales.
fn lane_buffers<T: Copy + Default + PartialEq>(
    rows: usize,
    cols: usize,
    units_per_row: usize,
    fill: T,
) -> (Vec<T>, Vec<f32>) {
    let prow = rows.div_ceil(LANE_ROWS) * LANE_ROWS;
    let mut qs = huge_vec::<T>(prow * units_per_row);
    if fill != T::default() {
        qs.fill(fill);
    }
    (qs, vec![0f32; prow * (cols / QK)])
}

/// Index of the scale of block `b` of row `r` in the lane layout.
#[inline]
pub fn scale_index(cols: usize, r: usize, b: usize) -> usize {
    let nb = cols / QK;
    ((r / LANE_ROWS) * nb + b) * LANE_ROWS + r % LANE_ROWS
}

/// Index of value `j` of row `r` of a q8 matrix in the lane layout.
#[inline]
pub fn q8_index(cols: usize, r: usize, j: usize) -> usize {
    let nb = cols / QK;
    let (b, within) = (j / QK, j % QK);
    (((r / LANE_ROWS) * nb + b) * 8 + within / 4) * 64 + (r % LANE_ROWS) * 4 + within % 4
}

/// Byte and nibble (`true` = high) of value `j` of row `r` of a q4 matrix in the lane layout.
#[inline]
pub fn q4_index(cols: usize, r: usize, j: usize) -> (usize, bool) {
    let nb = cols / QK;
    let (b, within) = (j / QK, j % QK);
    let step = within / 4;
    let byte = (((r / LANE_ROWS) * nb + b) * 4 + step % 4) * 64 + (r % LANE_ROWS) * 4 + within % 4;
    (byte, step >= 4)
}

/// A zeroed vector whose pages the kernel is asked to back with transparent huge pages (fewer TLB misses when
/// a decode step streams hundreds of MB of weights). The request is advisory: it is ignored where unsupported.
pub fn huge_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    advise_huge_pages(v.as_ptr() as *const u8, std::mem::size_of_val(v.as_slice()));
    v
}

/// Ask for transparent huge pages on the whole 2 MB pages inside `[ptr, ptr + len)` (Linux; no-op elsewhere).
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).div_ceil(HUGE) * HUGE;
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE only changes how the kernel backs
            // it and never its contents. A failure is harmless and ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Quantise 32 values to signed 8 bits; returns the scale.
pub fn quantize_block_q8(src: &[f32], dst: &mut [i8]) -> f32 {
    let amax = src.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Activations quantised per block of 32 for the integer kernels: `n` rows (tokens) of `cols` values.
/// A reusable buffer: [`QuantActs::quantize`] only allocates when it grows.
#[derive(Debug, Default, Clone)]
pub struct QuantActs {
    pub n: usize,
    pub cols: usize,
    /// n × cols signed values.
    pub qs: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
    /// Sum of the quantised values of each block (for the offset correction of unsigned weight codes).
    pub sum: Vec<i32>,
}

impl QuantActs {
    /// Quantise `x` (n × cols, row-major). `cols` must be a multiple of 32.
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        self.quantize_on(x, n, cols, None);
    }

    /// [`QuantActs::quantize`], split over `pool` when there is enough work (prefill).
    pub fn quantize_on(
        &mut self,
        x: &[f32],
        n: usize,
        cols: usize,
        pool: Option<&super::pool::ThreadPool>,
    ) {
        debug_assert_eq!(x.len(), n * cols);
        debug_assert_eq!(cols % QK, 0);
        self.n = n;
        self.cols = cols;
        let nb = n * cols / QK;
        self.qs.resize(n * cols, 0);
        self.d.resize(nb, 0.0);
        self.sum.resize(nb, 0);
        let bufs = ActPtrs {
            qs: self.qs.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            sum: self.sum.as_mut_ptr(),
        };
        const PER_TASK: usize = 256;
        let job = move |task: usize| {
            let bufs = bufs;
            for b in task * PER_TASK..((task + 1) * PER_TASK).min(nb) {
                // SAFETY: block b's slots in every buffer (sized for nb blocks above) belong to this task only.
                unsafe { bufs.block(b, &x[b * QK..(b + 1) * QK]) };
            }
        };
        let tasks = nb.div_ceil(PER_TASK);
        match pool {
            Some(p) if tasks > 1 => p.run(tasks, &job),
            _ => (0..tasks).for_each(job),
        }
    }
}

/// Raw pointers into the buffers of a [`QuantActs`], for filling disjoint blocks from several threads.
#[derive(Clone, Copy)]
struct ActPtrs {
    qs: *mut i8,
    d: *mut f32,
    sum: *mut i32,
}

// SAFETY: every task writes only the slots of its own blocks, and `ThreadPool::run` returns after all tasks.
unsafe impl Send for ActPtrs {}
// SAFETY: as above.
unsafe impl Sync for ActPtrs {}

impl ActPtrs {
    /// Quantise one block of 32 values into block slot `b`.
    ///
    /// # Safety
    /// `b` must be inside the buffers and no other thread may write block `b` concurrently.
    unsafe fn block(&self, b: usize, src: &[f32]) {
        let amax = src.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        // SAFETY: the caller guarantees exclusive access to block b's 32 codes.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.qs.add(b * QK), QK) };
        let mut s = 0i32;
        for (o, &x) in dst.iter_mut().zip(src) {
            // Round half away from zero (as `f32::round`) without a libm call; |x·inv| ≤ 127.
            let q = (x * inv + 0.5f32.copysign(x)) as i32;
            *o = q as i8;
            s += q;
        }
        // SAFETY: slots of block b, exclusive to the caller.
        unsafe {
            *self.d.add(b) = scale;
            *self.sum.add(b) = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_and_q4_roundtrip_is_close() {
        let cols = 64;
        let v: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for (dt, tol) in [(DType::Q8, 0.02), (DType::Q4, 0.3), (DType::Bf16, 0.01)] {
            let w = Weights::from_f32(2, cols, &v, dt).unwrap();
            let mut row = vec![0f32; cols];
            for r in 0..2 {
                w.row_to_f32(r, &mut row);
                for j in 0..cols {
                    assert!((row[j] - v[r * cols + j]).abs() <= tol, "{dt:?} {r} {j}");
                }
            }
        }
    }

    #[test]
    fn packed_layout_keeps_every_value_in_place() {
        for (rows, cols) in [(8usize, 128usize), (3, 128), (8, 96), (4, 64)] {
            let v: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0)
                .collect();
            for dt in [DType::F32, DType::Bf16, DType::Q8, DType::Q4] {
                let w = Weights::from_f32(rows, cols, &v, dt).unwrap();
                assert_eq!(
                    w.packed,
                    dt.is_quantized() || (rows % 4 == 0 && cols % 64 == 0)
                );
                let tol = match dt {
                    DType::F32 => 0.0,
                    DType::Bf16 => 0.01,
                    DType::Q8 => 0.02,
                    DType::Q4 => 0.3,
                };
                let mut a = vec![0f32; cols];
                for r in 0..rows {
                    w.row_to_f32(r, &mut a);
                    // Each row equals the same row quantised on its own (plain layout, 1 row).
                    let alone =
                        Weights::from_f32(1, cols, &v[r * cols..(r + 1) * cols], dt).unwrap();
                    let mut b = vec![0f32; cols];
                    alone.row_to_f32(0, &mut b);
                    assert_eq!(a, b, "{dt:?} {rows}x{cols} row {r}");
                    for j in 0..cols {
                        assert!((a[j] - v[r * cols + j]).abs() <= tol, "{dt:?} {r} {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn quantised_types_need_whole_blocks() {
        assert!(Weights::from_f32(1, 40, &[0.0; 40], DType::Q8).is_err());
        assert!(Weights::from_f32(1, 40, &[0.0; 40], DType::F32).is_ok());
    }
}
