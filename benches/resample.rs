//! StreamResampler throughput: one second of audio fed in 10 ms blocks, against rubato's own one-shot
//! `process_all` with the same filter as the baseline (the cost of streaming and delay compensation).
//! Run: `cargo bench --bench resample`; compare the two lines of each group.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use sigflow::dsp::resample::StreamResampler;
use std::hint::black_box;

fn signal(rate: u32) -> Vec<f32> {
    (0..rate as usize)
        .map(|i| ((i as f32) * 0.013).sin() * 0.5 + ((i * 7919 % 1000) as f32 / 4000.0))
        .collect()
}

fn bench(c: &mut Criterion) {
    for (from, to) in [(48_000u32, 16_000u32), (44_100, 16_000), (16_000, 48_000)] {
        let input = signal(from);
        let mut group = c.benchmark_group(format!("resample_{from}_to_{to}"));
        group.throughput(Throughput::Elements(input.len() as u64));
        group.sample_size(20);

        group.bench_function("rubato_process_all (baseline)", |b| {
            let params = SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2)
                .oversampling_factor(256)
                .interpolation(SincInterpolationType::Cubic);
            let chunk = (from as usize / 100).max(64);
            let mut rs = Async::<f32>::new_sinc(
                to as f64 / from as f64,
                1.0,
                &params,
                chunk,
                1,
                FixedAsync::Input,
            )
            .unwrap();
            let adapter = InterleavedSlice::new(&input[..], 1, input.len()).unwrap();
            b.iter(|| black_box(rs.process_all(&adapter, input.len(), None).unwrap()));
        });

        group.bench_function("StreamResampler 10 ms blocks", |b| {
            let mut r = StreamResampler::new(from, to).unwrap();
            let mut out = Vec::with_capacity(to as usize * 2);
            let block = from as usize / 100;
            b.iter(|| {
                out.clear();
                for chunk in input.chunks(block) {
                    r.process(chunk, &mut out);
                }
                r.finish(&mut out);
                black_box(out.len())
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
