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

/// The exporters spell GELU as `x · (1 + erf(x/√2)) · 0.5` and SiLU as `x · sigmoid(x)`: the importer fuses both
/// into single activations, which then fold into the convolutions before them (legacy and dynamo exports alike),
/// so no Erf, Sigmoid or Mul is left to run; the parity test above checks the values.
#[test]
fn gelu_and_silu_decompositions_are_fused_into_the_convolutions() {
    use sigflow::cnn::ir::{Op, Unary};
    for name in ["gelu", "gelu_dynamo"] {
        let g = import::load(&fixtures().join(format!("{name}.onnx"))).expect("fixture loads");
        let live = g.live();
        let ops: Vec<&str> = g
            .nodes
            .iter()
            .zip(&live)
            .filter(|(_, &l)| l)
            .map(|(n, _)| n.op_type.as_str())
            .collect();
        for gone in ["Erf", "Sigmoid", "Mul", "Div", "Add"] {
            assert!(!ops.contains(&gone), "{name}: {gone} still runs: {ops:?}");
        }
        let acts: Vec<Option<Unary>> = g
            .nodes
            .iter()
            .zip(&live)
            .filter_map(|(n, &l)| match &n.op {
                Op::Conv(c) if l => Some(c.act),
                _ => None,
            })
            .collect();
        assert_eq!(
            acts,
            vec![
                Some(Unary::Gelu { tanh: false }),
                Some(Unary::Silu),
                Some(Unary::Gelu { tanh: false })
            ],
            "{name}"
        );
    }
}
