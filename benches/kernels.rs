//! Matrix-vector / matrix-matrix kernels: every path (scalar reference, AVX2, AVX-512) on the same weights, so the
//! SIMD speed-up is read as a ratio against the scalar baseline measured in the same process.
//! Attention over a KV cache (one decode step of LFM2-350M's heads: 16 query heads, 8 key/value heads, 64 wide) is
//! measured the same way, its AVX2 path against its scalar reference.
//! `cargo bench --bench kernels`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sigflow::kernels::matmul::{matmul_path, Path};
use sigflow::kernels::ops;
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

fn attention(c: &mut Criterion) {
    let (n_heads, n_kv, hd) = (16usize, 8usize, 64usize);
    let group = n_heads / n_kv;
    for len in [128usize, 1024] {
        let f = |i: usize| ((i * 7919 % 1013) as f32 / 506.0) - 1.0;
        let q: Vec<f32> = (0..n_heads * hd).map(f).collect();
        let k: Vec<f32> = (0..len * n_kv * hd).map(|i| f(i + 31)).collect();
        let v: Vec<f32> = (0..len * n_kv * hd).map(|i| f(i + 77)).collect();
        let mut scores = vec![0f32; group * len];
        let mut out = vec![0f32; n_heads * hd];
        let mut group_b = c.benchmark_group(format!("attention_16x64_gqa8_len{len}"));
        group_b.throughput(Throughput::Elements((n_heads * len * hd) as u64));
        group_b.sample_size(20);
        group_b.bench_function("Scalar", |b| {
            b.iter(|| {
                for kvh in 0..n_kv {
                    let o = &mut out[kvh * group * hd..(kvh + 1) * group * hd];
                    ops::attend_kv_head_scalar(
                        &q,
                        &k,
                        &v,
                        len,
                        kvh,
                        group,
                        n_kv,
                        hd,
                        0.125,
                        &mut scores,
                        o,
                    );
                }
            })
        });
        group_b.bench_function("Best", |b| {
            b.iter(|| {
                ops::attend(
                    &q,
                    &k,
                    &v,
                    len,
                    n_heads,
                    n_kv,
                    hd,
                    0.125,
                    &mut scores,
                    &mut out,
                )
            })
        });
        group_b.finish();
    }
}

criterion_group!(benches, matrices, attention);
criterion_main!(benches);
