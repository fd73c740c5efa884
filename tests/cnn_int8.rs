//! int8 weights: the accuracy delta against ONNX Runtime's f32 outputs on every fixture (NRMSE bound), the
//! storage ratio, every kernel level giving the same int8 result, and int8 streaming equal to the int8
//! full-window run (activations stay f32, so reuse stays exact).

#[path = "cnn_common.rs"]
mod common;

use common::*;
use proptest::prelude::*;
use sigflow::cnn::exec::nrmse;
use sigflow::cnn::{import, int8, Engine, Graph, Mode, Plan};
use sigflow::kernels::conv::ConvKernels;
use std::sync::Arc;

/// Bound on the NRMSE of an int8 model's output against the f32 reference, on every fixture.
const INT8_NRMSE_BOUND: f64 = 0.02;

fn quantized(path: &std::path::Path) -> Arc<Graph> {
    let mut g = import::load(path).unwrap();
    int8::quantize(&mut g);
    Arc::new(g)
}

fn kernel_levels() -> Vec<ConvKernels> {
    ConvKernels::available()
}

#[test]
fn int8_output_is_close_to_onnx_runtime_on_every_fixture() {
    let all = load_all();
    assert!(all.len() >= 8);
    for f in &all {
        let g32 = import::load(&f.model).unwrap();
        let g = quantized(&f.model);
        let (b32, b8) = (int8::weight_bytes(&g32), int8::weight_bytes(&g));
        assert!(
            b8 * 10 < b32 * 3,
            "{}: int8 weights take {b8} bytes, f32 {b32}",
            f.name
        );
        for case in &f.cases {
            let (_, stride) = Plan::time_map(&g, case.window).unwrap();
            let plan = Plan::new(&g, case.window, stride).unwrap();
            let mut first: Option<Vec<f32>> = None;
            for k in kernel_levels() {
                let mut e = Engine::with_kernels(g.clone(), plan.clone(), Mode::Full, k);
                let y = e.run_window(&time_major(&case.input));
                let err = nrmse(&y, &case.output.data);
                println!(
                    "{} window {} ({}): int8 NRMSE {err:.3e}, weights {b8} / {b32} bytes = {:.3}",
                    f.name,
                    case.window,
                    k.name,
                    b8 as f64 / b32 as f64
                );
                assert!(
                    err > 0.0 && err <= INT8_NRMSE_BOUND,
                    "{} window {} ({}): int8 NRMSE {err:e}",
                    f.name,
                    case.window,
                    k.name
                );
                // Every kernel level computes the same int8 model.
                match &first {
                    None => first = Some(y),
                    Some(want) => {
                        let tol = 1e-5 * max_abs(want).max(1e-6);
                        let d = max_diff(&y, want);
                        assert!(d <= tol, "{} ({}): {d:e} from scalar", f.name, k.name);
                    }
                }
            }
        }
    }
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]
    #[test]
    fn int8_exact_streaming_equals_int8_full_window(seed in any::<u64>(),
                                                    pushes in proptest::collection::vec(1usize..700, 1..6),
                                                    hop_pick in 0usize..1000) {
        for f in load_all() {
            let g = quantized(&f.model);
            let w = f.cases[0].window;
            let (_, stride) = Plan::time_map(&g, w).unwrap();
            let n_hops = w / stride;
            let mut hops = vec![stride, (1 + hop_pick % n_hops) * stride];
            hops.dedup();
            for hop in hops {
                let c = g.in_channels;
                let plan = Plan::new(&g, w, hop).unwrap();
                let mut stream = Engine::new(g.clone(), plan.clone(), Mode::Exact);
                let mut full = Engine::new(g.clone(), plan, Mode::Full);
                let frames = w + hop * 10 + (seed % 29) as usize;
                let x = noise(frames * c, seed ^ hop as u64);
                let mut outs = vec![];
                let (mut at, mut pi) = (0, 0);
                while at < frames {
                    let n = pushes[pi % pushes.len()].min(frames - at);
                    pi += 1;
                    stream.push(&x[at * c..(at + n) * c], &mut outs);
                    at += n;
                }
                prop_assert_eq!(outs.len(), (frames - w) / hop + 1, "{}: window count", &f.name);
                for (i, y) in outs.iter().enumerate() {
                    let want = full.run_window(&x[i * hop * c..(i * hop + w) * c]);
                    let tol = 1e-5 * max_abs(&want).max(1e-6);
                    let d = max_diff(y, &want);
                    prop_assert!(d <= tol, "{} hop {} window {}: max|diff| {:e} > {:e}", &f.name, hop, i, d, tol);
                }
            }
        }
    }
}

fn stage_config(extra: &str) -> Result<sigflow::config::ConfigFile, String> {
    let text = format!(
        "[source]\nkind = \"synth\"\nsignal = \"noise\"\n\n[[stage]]\nkind = \"cnn\"\nname = \"ds\"\nmodel = \"{}\"\n\
         window = 512\nhop = 64\n{extra}\n",
        fixtures().join("dsconv.onnx").display()
    );
    sigflow::config::ConfigFile::parse(std::path::Path::new("int8-test.toml"), text)
        .map_err(|e| e.to_string())
}

#[test]
fn cnn_stage_with_int8_weights_equals_the_int8_engine() {
    use sigflow::event::EventKind;
    let cf = stage_config("weights = \"int8\"").unwrap();
    let sigflow::config::StageConfig::Cnn(c) = &cf.config.stages[0] else {
        unreachable!()
    };
    sigflow::cnn::stage::check(c, &cf, 0).unwrap();
    let mut st = sigflow::cnn::stage::build(c, &cf).unwrap();
    let x = noise(512 + 64 * 12 + 5, 11);
    let mut ev = vec![];
    for chunk in x.chunks(97) {
        st.push(chunk, &mut ev);
    }
    let g = quantized(&fixtures().join("dsconv.onnx"));
    let g32 = Arc::new(import::load(&fixtures().join("dsconv.onnx")).unwrap());
    let mut full = Engine::new(g.clone(), Plan::new(&g, 512, 64).unwrap(), Mode::Full);
    let mut full32 = Engine::new(g32.clone(), Plan::new(&g32, 512, 64).unwrap(), Mode::Full);
    let scores: Vec<&Vec<f32>> = ev
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Scores { scores, .. } => Some(scores),
            _ => None,
        })
        .collect();
    assert_eq!(scores.len(), 13);
    for (i, s) in scores.iter().enumerate() {
        let w = &x[i * 64..i * 64 + 512];
        let want = full.run_window(w);
        assert!(max_diff(s, &want) <= 1e-5 * max_abs(&want), "window {i}");
        // … and it is the int8 model, not the f32 one.
        assert!(max_diff(s, &full32.run_window(w)) > 0.0, "window {i}");
    }
}

#[test]
fn unknown_weight_format_is_refused_at_the_key() {
    let e = stage_config("weights = \"int4\"").unwrap_err();
    assert!(
        e.contains("int4") && e.contains("f32") && e.contains("int8"),
        "{e}"
    );
    assert!(e.contains("int8-test.toml"), "{e}");
}
