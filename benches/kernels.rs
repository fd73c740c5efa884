//! Matrix-vector / matrix-matrix kernels: every path (scalar reference, AVX2, AVX-512) on the same weights, so the
//! SIMD speed-up is read as a ratio against the scalar baseline measured in the same process.
//! `cargo bench --bench kernels`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sigflow::kernels::matmul::{matmul_path, Path};
use sigflow::kernels::pool::ThreadPool;
use sigflow::kernels::quant::{DType, QuantActs, Weights};

fn matrices(c: &mut Criterion) {
    let (rows, cols) = (2048usize, 1024usize);
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1013) as f32 / 506.0) - 1.0)
        .collect();
    let pool = ThreadPool::new(1);
    for n in [1usize, 16] {
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut group = c.benchmark_group(format!("matmul_{rows}x{cols}_n{n}"));
        group.throughput(Throughput::Elements((rows * cols * n) as u64));
        group.sample_size(10);
        for dtype in [DType::F32, DType::Bf16, DType::Q8, DType::Q4] {
            let w = Weights::from_f32(rows, cols, &v, dtype).expect("whole blocks");
            let mut y = vec![0f32; n * rows];
            let mut qa = QuantActs::default();
            for path in Path::available() {
                group.bench_with_input(
                    BenchmarkId::new(dtype.name(), format!("{path:?}")),
                    &path,
                    |b, &p| b.iter(|| matmul_path(p, &w, &x, n, &mut y, &mut qa, &pool)),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, matrices);
criterion_main!(benches);
