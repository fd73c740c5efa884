//! The full-window executor equals ONNX Runtime (outputs stored in the fixtures) within 1e-5 relative, on every
//! fixture model and every ISA level of the kernels.

#[path = "cnn_common.rs"]
mod common;

use common::*;
use sigflow::cnn::{import, Engine, Mode, Plan};
use sigflow::kernels::conv::ConvKernels;
use std::sync::Arc;

fn kernel_levels() -> Vec<ConvKernels> {
    ConvKernels::available()
}

#[test]
fn full_window_matches_onnx_runtime() {
    let all = load_all();
    assert!(
        all.len() >= 8,
        "expected at least 8 fixture models, found {}",
        all.len()
    );
    for f in &all {
        let g = Arc::new(import::load(&f.model).unwrap_or_else(|e| panic!("{}: {e}", f.name)));
        for case in &f.cases {
            let (_, stride) = Plan::time_map(&g, case.window).unwrap();
            let plan =
                Plan::new(&g, case.window, stride).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            for k in kernel_levels() {
                let mut e = Engine::with_kernels(g.clone(), plan.clone(), Mode::Full, k);
                let y = e.run_window(&time_major(&case.input));
                assert_eq!(
                    e.output_dims(),
                    case.output.shape,
                    "{} output shape",
                    f.name
                );
                let tol = 1e-5 * max_abs(&case.output.data);
                let d = max_diff(&y, &case.output.data);
                assert!(
                    d <= tol,
                    "{} window {} ({}): max|diff| {d:e} > {tol:e}",
                    f.name,
                    case.window,
                    k.name
                );
            }
        }
    }
}
