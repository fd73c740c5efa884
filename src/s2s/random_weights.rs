//! Seeded random weights for benchmarks with the published shapes but no checkpoint: uniform values scaled by
//! `1 / sqrt(fan_in)`, so activations keep their size through deep stacks.

use crate::kernels::quant::{DType, Weights};
use crate::{Error, Result};

/// A small linear-congruential generator (deterministic per seed; quality is irrelevant for benchmarks).
pub struct WeightRng(u64);

impl WeightRng {
    pub fn new(seed: u64) -> WeightRng {
        WeightRng(seed ^ 0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[-1, 1)`.
    pub fn next_unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vector(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_unit() * scale).collect()
    }

    /// A `rows × cols` matrix in `dtype`, values uniform in `±1/sqrt(cols)`.
    pub fn matrix(&mut self, rows: usize, cols: usize, dtype: DType) -> Result<Weights> {
        let v = self.vector(rows * cols, 1.0 / (cols as f32).sqrt());
        Weights::from_f32(rows, cols, &v, dtype)
            .map_err(|e| Error::Model(format!("random {rows}×{cols} matrix: {e}")))
    }
}
