//! The LFM2-Audio-1.5B FastConformer encoder (17 × 512, random weights) on 3 s of audio, against the bare matrix
//! products of the same shapes in the same process: the ratio `encoder / matmul_floor` is the share of the time
//! that is not matrix products (subsampling convs, attention scores, depthwise conv, norms, activations).
//! `cargo bench --bench s2s_encoder`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sigflow::kernels::matmul::matmul;
use sigflow::kernels::pool::ThreadPool;
use sigflow::kernels::quant::{DType, QuantActs, Weights};
use sigflow::s2s::conformer::{Encoder, EncoderConfig};

const THREADS: usize = 2;
/// 3 s at the 10 ms mel hop.
const FRAMES: usize = 300;

/// `(rows, cols, tokens)` of every matrix product the encoder does for `frames` mel frames.
fn linear_shapes(cfg: &EncoderConfig, frames: usize) -> Vec<(usize, usize, usize)> {
    let (d, c) = (cfg.d_model, cfg.subsampling_conv_channels as usize);
    let stages = cfg.subsampling_factor.trailing_zeros() as usize;
    let (mut t, mut f) = (frames.div_ceil(2), cfg.feat_in.div_ceil(2));
    let mut shapes = Vec::new();
    for _ in 1..stages {
        t = t.div_ceil(2);
        f = f.div_ceil(2);
        shapes.push((c, c, t * f));
    }
    shapes.push((d, c * f, t));
    let ff = d * cfg.ff_expansion_factor;
    for _ in 0..cfg.n_layers {
        shapes.extend([(ff, d, t), (d, ff, t)]);
        shapes.extend([
            (d, d, t),
            (d, d, t),
            (d, d, t),
            (d, d, 2 * t - 1),
            (d, d, t),
        ]);
        shapes.extend([(2 * d, d, t), (d, d, t)]);
        shapes.extend([(ff, d, t), (d, ff, t)]);
    }
    shapes
}

fn encoder(c: &mut Criterion) {
    let cfg = EncoderConfig::lfm2_audio();
    let mel: Vec<f32> = (0..FRAMES * cfg.feat_in)
        .map(|i| ((i * 7919 % 1013) as f32 / 506.0) - 1.0)
        .collect();
    let pool = ThreadPool::new(THREADS);
    let mut group = c.benchmark_group(format!(
        "s2s_encoder_17x512_{FRAMES}frames_{THREADS}threads"
    ));
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.warm_up_time(std::time::Duration::from_millis(500));
    for dtype in [DType::F32, DType::Q8] {
        let enc = Encoder::random(&cfg, dtype, THREADS, 1).expect("the published shape is valid");
        group.bench_function(BenchmarkId::new("encoder", dtype.name()), |b| {
            b.iter(|| enc.forward(&mel, FRAMES).expect("valid input"))
        });
        drop(enc);
        let mats: Vec<(Weights, usize)> = linear_shapes(&cfg, FRAMES)
            .into_iter()
            .map(|(rows, cols, n)| {
                let v: Vec<f32> = (0..rows * cols)
                    .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                    .collect();
                let dt = if cols % 32 == 0 { dtype } else { DType::F32 };
                (
                    Weights::from_f32(rows, cols, &v, dt).expect("whole blocks"),
                    n,
                )
            })
            .collect();
        let xmax = mats.iter().map(|(w, n)| w.cols * n).max().unwrap_or(0);
        let ymax = mats.iter().map(|(w, n)| w.rows * n).max().unwrap_or(0);
        let x: Vec<f32> = (0..xmax).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0f32; ymax];
        let mut qa = QuantActs::default();
        group.bench_function(BenchmarkId::new("matmul_floor", dtype.name()), |b| {
            b.iter(|| {
                for (w, n) in &mats {
                    matmul(
                        w,
                        &x[..w.cols * n],
                        *n,
                        &mut y[..w.rows * n],
                        &mut qa,
                        &pool,
                    );
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
