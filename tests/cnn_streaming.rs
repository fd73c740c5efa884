//! Streaming equals batch: on a long random stream, every window the exact streaming executor produces equals the
//! full-window run of that window (max|diff| ≤ 1e-5·max|output|), for every fixture model, several valid hops
//! and random push sizes. The approximate mode is checked to deviate measurably but boundedly.

#[path = "cnn_common.rs"]
mod common;

use common::*;
use proptest::prelude::*;
use sigflow::cnn::exec::nrmse;
use sigflow::cnn::{import, Engine, Graph, Mode, Plan};
use std::sync::Arc;

fn graphs() -> Vec<(String, Arc<Graph>, usize)> {
    load_all()
        .into_iter()
        .map(|f| {
            let g = Arc::new(import::load(&f.model).unwrap());
            let w = f.cases[0].window;
            (f.name, g, w)
        })
        .collect()
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Stream `x` through an engine in pushes of the given sizes; compare every window with the full-window run.
fn check_stream(
    name: &str,
    g: &Arc<Graph>,
    w: usize,
    hop: usize,
    x: &[f32],
    pushes: &[usize],
) -> Result<usize, TestCaseError> {
    let c = g.in_channels;
    let plan = Plan::new(g, w, hop).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    let mut stream = Engine::new(g.clone(), plan.clone(), Mode::Exact);
    let mut full = Engine::new(g.clone(), plan, Mode::Full);
    let mut outs = vec![];
    let mut at = 0;
    let frames = x.len() / c;
    let mut pi = 0;
    while at < frames {
        let n = pushes[pi % pushes.len()].min(frames - at);
        pi += 1;
        stream.push(&x[at * c..(at + n) * c], &mut outs);
        at += n;
    }
    let expected_windows = if frames >= w {
        (frames - w) / hop + 1
    } else {
        0
    };
    prop_assert_eq!(outs.len(), expected_windows, "{}: window count", name);
    for (i, y) in outs.iter().enumerate() {
        let s = i * hop;
        let want = full.run_window(&x[s * c..(s + w) * c]);
        let tol = 1e-5 * max_abs(&want).max(1e-6);
        let d = max_diff(y, &want);
        prop_assert!(
            d <= tol,
            "{} hop {} window {}: max|diff| {:e} > {:e}",
            name,
            hop,
            i,
            d,
            tol
        );
    }
    Ok(outs.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn exact_streaming_equals_full_window(seed in any::<u64>(), pushes in proptest::collection::vec(1usize..700, 1..6),
                                          hop_pick in proptest::collection::vec(0usize..1000, 3)) {
        for (name, g, w) in graphs() {
            let (_, stride) = Plan::time_map(&g, w).unwrap();
            let n_hops = w / stride;
            // Several valid hops: a random pick each, plus the smallest.
            let mut hops: Vec<usize> = hop_pick.iter().map(|p| (1 + p % n_hops) * stride).collect();
            hops.push(stride);
            hops.sort();
            hops.dedup();
            for hop in hops {
                let len = w + hop * 12 + (seed % 37) as usize;
                let x = noise(len * g.in_channels, seed ^ hop as u64);
                let windows = check_stream(&name, &g, w, hop, &x, &pushes)?;
                prop_assert!(windows >= 13);
            }
        }
    }
}

#[test]
fn approximate_mode_reports_a_deviation() {
    // 'same'-padded models lose exactness without the edge work; the error stays small but is not zero.
    for (name, g, w) in graphs() {
        if name != "same" && name != "gated" {
            continue;
        }
        let (_, stride) = Plan::time_map(&g, w).unwrap();
        let hop = (w / 4 / stride).max(1) * stride;
        let plan = Plan::new(&g, w, hop).unwrap();
        let mut approx = Engine::new(g.clone(), plan.clone(), Mode::Approximate);
        let mut full = Engine::new(g.clone(), plan, Mode::Full);
        let x = noise((w + 8 * hop) * g.in_channels, 7);
        let mut outs = vec![];
        approx.push(&x, &mut outs);
        let (mut got, mut want) = (vec![], vec![]);
        for (i, y) in outs.iter().enumerate().skip(1) {
            got.extend_from_slice(y);
            want.extend(
                full.run_window(&x[i * hop * g.in_channels..(i * hop + w) * g.in_channels]),
            );
        }
        let e = nrmse(&got, &want);
        assert!(e > 1e-6 && e < 0.5, "{name}: approximate NRMSE {e}");
    }
}

#[test]
fn invalid_hop_lists_valid_ones() {
    for (name, g, w) in graphs() {
        if name != "dsconv" {
            continue;
        }
        let err = Plan::new(&g, w, 12).unwrap_err();
        assert!(err.contains("hop 12 cannot be exact"), "{err}");
        assert!(err.contains("valid hops: multiples of 8"), "{err}");
        assert!(Plan::new(&g, w, 16).is_ok());
    }
}
