//! Weight formats for the matrix kernels and their conversion at load time.
//!
//! A [`Weights`] matrix is stored row-major as `rows × cols` (one row per output feature, the layout of a PyTorch
//! `nn.Linear` weight), in one of four formats:
//! - `F32`, `Bf16` (upper 16 bits of an f32),
//! - `Q8`: blocks of [`QK`] = 32 signed 8-bit values with one f32 scale per block (like ggml's Q8_0),
//! - `Q4`: blocks of 32 4-bit values (stored offset by 8, two per byte: byte `j` of a block holds element `j` in its
//!   low nibble and element `j + 16` in its high nibble) with one f32 scale per block (like Q4_0).
//!
//! For the quantised formats the activations are quantised too ([`QuantActs`]: 8-bit per block of 32 with a scale),
//! so the inner products run on integers (AVX-512 VNNI / AVX2 `maddubs`).

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
    /// `qs`: rows × cols signed values; `d`: one scale per block of 32 (rows × cols/32).
    Q8 {
        qs: Vec<i8>,
        d: Vec<f32>,
    },
    /// `qs`: rows × cols/2 bytes (two values per byte); `d`: one scale per block.
    Q4 {
        qs: Vec<u8>,
        d: Vec<f32>,
    },
}

/// A `rows × cols` matrix (row = output feature).
///
/// Storage is cut into *chunks* of [`CHUNK`] = 64 consecutive values of a row (2 blocks for q8/q4). When `packed`
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
                let mut qs = huge_vec::<i8>(v.len());
                let mut d = vec![0f32; v.len() / QK];
                for (b, (src, dst)) in v.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
                    d[b] = quantize_block_q8(src, dst);
                }
                WeightData::Q8 { qs, d }
            }
            DType::Q4 => {
                let mut qs = huge_vec::<u8>(v.len() / 2);
                let mut d = vec![0f32; v.len() / QK];
                // Codes 0..15 of every value, block by block.
                let mut codes = vec![0u8; cols];
                let full = cols / CHUNK;
                for r in 0..rows {
                    for b in 0..cols / QK {
                        let src = &v[r * cols + b * QK..r * cols + (b + 1) * QK];
                        // The value of largest magnitude maps to code 0 (−8): all 16 levels are used.
                        let vmax = src
                            .iter()
                            .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
                        let scale = vmax / -8.0;
                        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
                        for (c, &x) in codes[b * QK..(b + 1) * QK].iter_mut().zip(src) {
                            *c = ((x * inv).round().clamp(-8.0, 7.0) as i32 + 8) as u8;
                        }
                        d[r * (cols / QK) + b] = scale;
                    }
                    // Full chunks: byte k holds values k (low nibble) and k + 32 (high nibble), i.e. the low
                    // nibbles are the chunk's first block and the high nibbles its second. A trailing half chunk
                    // (cols ≡ 32 mod 64): byte k holds values k and k + 16.
                    let dst = &mut qs[r * cols / 2..(r + 1) * cols / 2];
                    for p in 0..full {
                        for k in 0..QK {
                            dst[p * QK + k] =
                                codes[p * CHUNK + k] | (codes[p * CHUNK + QK + k] << 4);
                        }
                    }
                    if !cols.is_multiple_of(CHUNK) {
                        let base = full * CHUNK;
                        for k in 0..QK / 2 {
                            dst[full * QK + k] = codes[base + k] | (codes[base + QK / 2 + k] << 4);
                        }
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

    /// Switch to the packed layout when the shape allows it.
    fn packed_if_possible(self) -> Weights {
        if self.packed
            || !self.rows.is_multiple_of(GROUP)
            || !self.cols.is_multiple_of(CHUNK)
            || self.rows == 0
        {
            return self;
        }
        let (rows, cols) = (self.rows, self.cols);
        let nb = cols / QK;
        let data = match self.data {
            WeightData::F32(v) => WeightData::F32(interleave(&v, rows, cols, CHUNK)),
            WeightData::Bf16(v) => WeightData::Bf16(interleave(&v, rows, cols, CHUNK)),
            WeightData::Q8 { qs, d } => WeightData::Q8 {
                qs: interleave(&qs, rows, cols, CHUNK),
                d: interleave(&d, rows, nb, 2),
            },
            WeightData::Q4 { qs, d } => WeightData::Q4 {
                qs: interleave(&qs, rows, cols / 2, CHUNK / 2),
                d: interleave(&d, rows, nb, 2),
            },
        };
        Weights {
            rows,
            cols,
            data,
            packed: true,
        }
    }

    /// Storage elements per chunk (bytes for q8/q4, values for f32/bf16).
    pub fn chunk_units(&self) -> usize {
        match self.data {
            WeightData::Q4 { .. } => CHUNK / 2,
            _ => CHUNK,
        }
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

    /// Index of the first block scale of row `r` (q8/q4).
    #[inline]
    pub fn dstart(&self, r: usize) -> usize {
        let nb = self.cols / QK;
        if self.packed {
            (r / GROUP) * GROUP * nb + (r % GROUP) * 2
        } else {
            r * nb
        }
    }

    /// Distance between the scale pairs of consecutive chunks of one row.
    #[inline]
    pub fn dstep(&self) -> usize {
        if self.packed {
            2 * GROUP
        } else {
            2
        }
    }

    /// Storage offset of value `j` of row `r` for f32/bf16/q8 (for q4: of the byte holding it, see
    /// [`Weights::q4_at`]).
    #[inline]
    pub fn voff(&self, r: usize, j: usize) -> usize {
        self.vstart(r) + (j / CHUNK) * self.vstep() + (j % CHUNK) * self.chunk_units() / CHUNK
    }

    /// Index of the scale of block `b` of row `r`.
    #[inline]
    pub fn doff(&self, r: usize, b: usize) -> usize {
        self.dstart(r) + (b / 2) * self.dstep() + b % 2
    }

    /// The signed 4-bit value `j` of row `r` of a q4 matrix (before scaling).
    #[inline]
    pub fn q4_at(qs: &[u8], w: &Weights, r: usize, j: usize) -> i32 {
        let (p, within) = (j / CHUNK, j % CHUNK);
        let chunk = w.vstart(r) + p * w.vstep();
        let (byte, high) = if p < w.cols / CHUNK {
            (chunk + within % QK, within >= QK)
        } else {
            (chunk + within % (QK / 2), within >= QK / 2)
        };
        let q = if high { qs[byte] >> 4 } else { qs[byte] & 15 };
        q as i32 - 8
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
            WeightData::Q8 { qs, d } => {
                for (j, o) in out.iter_mut().enumerate().take(c) {
                    *o = qs[self.voff(r, j)] as f32 * d[self.doff(r, j / QK)];
                }
            }
            WeightData::Q4 { qs, d } => {
                for (j, o) in out.iter_mut().enumerate().take(c) {
                    *o = Weights::q4_at(qs, self, r, j) as f32 * d[self.doff(r, j / QK)];
                }
            }
        }
    }
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
    /// Per-block scale repeated 8 times (one per 32-bit lane of the block's partial sums).
    pub d_lanes: Vec<f32>,
    /// Per-block `scale × sum / 8` repeated 8 times.
    pub ds_lanes: Vec<f32>,
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
        self.d_lanes.resize(nb * 8, 0.0);
        self.ds_lanes.resize(nb * 8, 0.0);
        let bufs = ActPtrs {
            qs: self.qs.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            sum: self.sum.as_mut_ptr(),
            dl: self.d_lanes.as_mut_ptr(),
            dsl: self.ds_lanes.as_mut_ptr(),
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
    dl: *mut f32,
    dsl: *mut f32,
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
            for k in 0..8 {
                *self.dl.add(b * 8 + k) = scale;
                *self.dsl.add(b * 8 + k) = scale * s as f32 / 8.0;
            }
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
                assert_eq!(w.packed, rows % 4 == 0 && cols % 64 == 0);
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
