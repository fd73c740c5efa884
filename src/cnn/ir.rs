//! The engine's intermediate representation: a 1-D CNN over `[channels, time]` tensors, batch 1.
//!
//! Every value is either a *time* tensor (`channels` × frames; the frame count follows from the window) or a
//! *vector* (the time axis has collapsed: global pooling, flatten). Nodes are in topological order; node 0 is the
//! input. Weights are stored in the layout the kernels want (see [`crate::kernels::conv`]).

pub use crate::kernels::conv_i8::Int8Weights;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// Elementwise functions of one argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Clip(f32, f32),
    Elu(f32),
    /// `gamma · (x > 0 ? x : alpha · (eˣ − 1))`: (alpha, gamma).
    Selu(f32, f32),
    /// `max(0, min(1, alpha·x + beta))`: (alpha, beta).
    HardSigmoid(f32, f32),
    HardSwish,
    Softplus,
    Erf,
    /// Exact GELU (`tanh` = false) or its tanh approximation.
    Gelu {
        tanh: bool,
    },
    Neg,
    Abs,
    Exp,
    Sqrt,
    Identity,
    /// `x · sigmoid(x)` (SiLU / swish): ONNX has no such op; the importer fuses `Mul(x, Sigmoid(x))` into it.
    Silu,
}

impl Unary {
    /// Apply to one value (computed in f64 where the f32 formula would lose accuracy near ONNX Runtime's).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => x.tanh(),
            Unary::Clip(lo, hi) => x.max(lo).min(hi),
            Unary::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x.exp_m1()
                }
            }
            Unary::Selu(a, g) => {
                if x > 0.0 {
                    g * x
                } else {
                    g * a * x.exp_m1()
                }
            }
            Unary::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Softplus => {
                let xd = x as f64;
                (if xd > 30.0 { xd } else { xd.exp().ln_1p() }) as f32
            }
            Unary::Erf => erf(x as f64) as f32,
            Unary::Gelu { tanh: false } => {
                let xd = x as f64;
                (0.5 * xd * (1.0 + erf(xd / std::f64::consts::SQRT_2))) as f32
            }
            Unary::Gelu { tanh: true } => {
                let xd = x as f64;
                let c = (2.0 / std::f64::consts::PI).sqrt();
                (0.5 * xd * (1.0 + (c * (xd + 0.044715 * xd * xd * xd)).tanh())) as f32
            }
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Exp => x.exp(),
            Unary::Sqrt => x.sqrt(),
            Unary::Identity => x,
            Unary::Silu => x * sigmoid(x),
        }
    }
}

/// The logistic function, stable for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function in f64: Maclaurin series for |x| < 3, continued fraction of erfc beyond
/// (absolute error below 1e-14 everywhere).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a < 10.0 {
        // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + …))))), evaluated from the tail.
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// Elementwise binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

/// One side of a binary operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A graph value of the same kind and size as the output.
    Node(NodeId),
    /// A constant: one value, or one per channel (time tensors) / per element (vectors).
    Const(Vec<f32>),
    /// A vector broadcast over the time axis of a time tensor (one value per channel, or one).
    Broadcast(NodeId),
}

/// A 1-D convolution with its weights packed for the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_left: usize,
    pub pad_right: usize,
    /// `[k][cin][cout]` for dense; `[k][c]` for depthwise.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub depthwise: bool,
    /// An elementwise activation applied to the output rows as they are computed (fused at import).
    pub act: Option<Unary>,
    /// int8 weights (per output channel) used instead of `weight` when present ([`super::int8`]).
    pub int8: Option<Int8Weights>,
}

/// Max or average pooling over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

/// Pooling window over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_left: usize,
    pub pad_right: usize,
}

/// Reduction over the whole time axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Mean,
    Max,
}

/// What a node computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The model input (node 0), a time tensor.
    Input,
    Conv(Conv),
    Unary(Unary),
    /// `x ≥ 0 ? x : slope·x`, slope per channel (or one).
    PRelu(Vec<f32>),
    /// `scale·x + shift` per channel (an unfolded BatchNormalization).
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Binary(BinOp, Operand, Operand),
    Pool(Pool),
    /// Constant padding of the time axis.
    Pad {
        left: usize,
        right: usize,
        value: f32,
    },
    /// Dropping frames at the start and end of the time axis (a `Slice` on time).
    Crop {
        left: usize,
        right: usize,
    },
    /// Concatenation over channels.
    Concat,
    /// Softmax over channels (time tensors: per frame) or over the vector.
    Softmax,
    /// Time tensor → vector of one value per channel.
    GlobalPool(Reduce),
    /// Time tensor → vector `[c][t]` (row-major over channels, as ONNX's Flatten of `[1, C, T]`).
    Flatten,
    /// Vector → vector: `y = bias + x·W`, `weight` stored `[n_in][n_out]`.
    Dense {
        n_in: usize,
        n_out: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        /// int8 weights (per output) used instead of `weight` when present.
        int8: Option<Int8Weights>,
    },
}

/// The kind and size of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `channels` × frames.
    Time { channels: usize },
    /// A vector; its size is known after planning when it comes from a `Flatten` (then `None` here).
    Vector { len: Option<usize> },
}

/// One node: an operator applied to earlier nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Name of the ONNX node it came from (for messages).
    pub name: String,
    /// ONNX operator type it came from.
    pub op_type: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub kind: Kind,
}

/// A whole model.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: NodeId,
    /// Input channels.
    pub in_channels: usize,
    /// The input's time length when the ONNX file fixes it.
    pub fixed_window: Option<usize>,
    /// Name of the ONNX input and output (for messages and the ONNX Runtime comparison).
    pub input_name: String,
    pub output_name: String,
    /// ONNX shape of the output with the time axis marked `None`.
    pub output_shape: Vec<Option<usize>>,
}

impl Graph {
    /// Nodes the output depends on.
    pub fn live(&self) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        live[self.output] = true;
        for i in (0..self.nodes.len()).rev() {
            if live[i] {
                for &j in &self.nodes[i].inputs {
                    live[j] = true;
                }
            }
        }
        live[0] = true;
        live
    }

    /// Number of live nodes that read node `id`, plus one if it is the output.
    pub fn uses(&self, id: NodeId) -> usize {
        let live = self.live();
        self.nodes
            .iter()
            .zip(&live)
            .filter(|(n, &l)| l && n.inputs.contains(&id))
            .count()
            + usize::from(self.output == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (-1.0, -0.842_700_792_949_714_9),
        ];
        for (x, want) in cases {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }
}
