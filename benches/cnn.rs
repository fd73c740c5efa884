//! Per-hop time of the streaming CNN engine (exact and approximate) against recomputing the full window, on the
//! fixture models at W = 4096 and W/H = 8 (87.5 % overlap). The ratio full / exact is the speedup; W/H = 8 bounds it.

use criterion::{criterion_group, criterion_main, Criterion};
use sigflow::cnn::{import, Engine, Mode, Plan};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const WINDOW: usize = 4096;
const HOP: usize = 512;

fn signal(n: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn per_hop(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cnn");
    for name in ["tcn", "gated", "same", "gelu", "dsconv"] {
        let g = Arc::new(import::load(&dir.join(format!("{name}.onnx"))).expect("fixture model"));
        let plan = Plan::new(&g, WINDOW, HOP).expect("valid hop");
        let ch = g.in_channels;
        let x = signal((WINDOW + 64 * HOP) * ch);
        let mut group = c.benchmark_group(format!("cnn/{name}/W{WINDOW}/H{HOP}"));
        for mode in [Mode::Exact, Mode::Approximate, Mode::Full] {
            let mut e = Engine::new(g.clone(), plan.clone(), mode);
            let mut out = vec![];
            e.push(&x[..WINDOW * ch], &mut out);
            let mut i = 0usize;
            group.bench_function(format!("{mode:?}").to_lowercase(), |b| {
                b.iter(|| {
                    let s = (WINDOW + (i % 64) * HOP) * ch;
                    out.clear();
                    e.push(black_box(&x[s..s + HOP * ch]), &mut out);
                    i += 1;
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = per_hop
}
criterion_main!(benches);
