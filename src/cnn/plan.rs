//! The time map and the plan for a window W and hop H.
//!
//! For every time tensor the plan knows its length in a window, its total stride (input samples per frame), its
//! receptive field, and its *dirty margins*: the frames at the left and right window edges whose receptive field
//! touches zero padding (of this layer or any before it). Those frames differ between overlapping windows even
//! where the windows overlap; every other frame is shift-invariant and can be reused from the previous hop, moved
//! by `hop / stride` frames. A hop is valid when it is a multiple of every layer's total stride.

use super::ir::*;

/// The time map of one node for a given window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodePlan {
    /// Frames in one window (time tensors) or vector length.
    pub len: usize,
    /// Input samples per frame (time tensors; 0 for vectors).
    pub stride: usize,
    /// Receptive field in input samples.
    pub rf: usize,
    /// Frames at the start of the window that depend on padding (left context).
    pub left: usize,
    /// Frames at the end of the window that depend on padding (right context).
    pub right: usize,
    /// New frames per hop (`hop / stride`).
    pub hop: usize,
}

impl NodePlan {
    /// True for vectors (computed from scratch every hop).
    pub fn is_vector(&self) -> bool {
        self.stride == 0
    }
}

/// A model planned for one window and hop.
#[derive(Debug, Clone)]
pub struct Plan {
    pub window: usize,
    pub hop: usize,
    pub nodes: Vec<NodePlan>,
    pub live: Vec<bool>,
    /// Least common multiple of all strides: valid hops are its multiples.
    pub stride: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// Human-readable list of valid hops (multiples of `stride` up to `window`).
pub fn describe_hops(stride: usize, window: usize) -> String {
    let hops: Vec<usize> = (1..=window / stride.max(1)).map(|i| i * stride).collect();
    if hops.is_empty() {
        return format!(
            "none (the window {window} is shorter than the model's total stride {stride})"
        );
    }
    if hops.len() <= 24 {
        hops.iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        format!(
            "multiples of {stride} up to {window}: {}, …, {}",
            hops[..8]
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            hops[hops.len() - 1]
        )
    }
}

impl Plan {
    /// The time map for a window of `window` input frames (no hop yet: `hop` fields are 0).
    pub fn time_map(g: &Graph, window: usize) -> Result<(Vec<NodePlan>, usize), String> {
        let live = g.live();
        let mut p: Vec<NodePlan> = vec![NodePlan::default(); g.nodes.len()];
        let mut lcm = 1usize;
        for (i, n) in g.nodes.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let inp = |k: usize| p[n.inputs[k]];
            let err = |m: String| format!("node `{}` (op {}): {m}", n.name, n.op_type);
            let np = match &n.op {
                Op::Input => NodePlan {
                    len: window,
                    stride: 1,
                    rf: 1,
                    left: 0,
                    right: 0,
                    hop: 0,
                },
                Op::Conv(Conv {
                    k,
                    stride,
                    dilation,
                    pad_left,
                    pad_right,
                    ..
                })
                | Op::Pool(Pool {
                    k,
                    stride,
                    dilation,
                    pad_left,
                    pad_right,
                    ..
                }) => {
                    let x = inp(0);
                    let span = (k - 1) * dilation + 1;
                    let padded = x.len + pad_left + pad_right;
                    if padded < span {
                        return Err(err(format!(
                            "the window is too short: {} frames here (+{} padding) but the kernel spans {span}",
                            x.len,
                            pad_left + pad_right
                        )));
                    }
                    let len = (padded - span) / stride + 1;
                    let left = ceil_div(x.left + pad_left, *stride).min(len);
                    // First output frame whose last input frame reaches the dirty right margin or the padding.
                    let first_right = (x.len - x.right + pad_left) as isize - (span as isize - 1);
                    let first_right = if first_right <= 0 {
                        0
                    } else {
                        ceil_div(first_right as usize, *stride)
                    };
                    let right = len - first_right.min(len);
                    NodePlan {
                        len,
                        stride: x.stride * stride,
                        rf: x.rf + (span - 1) * x.stride,
                        left,
                        right,
                        hop: 0,
                    }
                }
                Op::Pad { left, right, .. } => {
                    let x = inp(0);
                    NodePlan {
                        len: x.len + left + right,
                        left: x.left + left,
                        right: x.right + right,
                        ..x
                    }
                }
                Op::Crop { left, right } => {
                    let x = inp(0);
                    if x.len <= left + right {
                        return Err(err(format!(
                            "the window is too short: slicing {} frames off {}",
                            left + right,
                            x.len
                        )));
                    }
                    NodePlan {
                        len: x.len - left - right,
                        left: x.left.saturating_sub(*left),
                        right: x.right.saturating_sub(*right),
                        ..x
                    }
                }
                Op::Unary(_) | Op::PRelu(_) | Op::Affine { .. } | Op::Softmax => inp(0),
                Op::Binary(_, a, b) => {
                    let mut out = p[n.inputs[0]];
                    for o in [a, b] {
                        match o {
                            Operand::Node(id) => {
                                let q = p[*id];
                                if q.len != out.len || q.stride != out.stride {
                                    return Err(err(format!(
                                        "inputs have {} and {} frames (strides {} and {}): the branches do not line up",
                                        out.len, q.len, out.stride, q.stride
                                    )));
                                }
                                out.left = out.left.max(q.left);
                                out.right = out.right.max(q.right);
                                out.rf = out.rf.max(q.rf);
                            }
                            Operand::Broadcast(_) => {
                                // Every frame depends on the whole window.
                                out.left = out.len;
                                out.rf = window;
                            }
                            Operand::Const(_) => {}
                        }
                    }
                    out
                }
                Op::Concat => {
                    let mut out = inp(0);
                    for &id in &n.inputs[1..] {
                        let q = p[id];
                        if q.len != out.len || q.stride != out.stride {
                            return Err(err(format!(
                                "inputs have {} and {} frames: the branches do not line up",
                                out.len, q.len
                            )));
                        }
                        out.left = out.left.max(q.left);
                        out.right = out.right.max(q.right);
                        out.rf = out.rf.max(q.rf);
                    }
                    out
                }
                Op::GlobalPool(_) => {
                    let c = match n.kind {
                        Kind::Vector { len: Some(c) } => c,
                        _ => 0,
                    };
                    NodePlan {
                        len: c,
                        stride: 0,
                        rf: window,
                        left: 0,
                        right: 0,
                        hop: 0,
                    }
                }
                Op::Flatten => {
                    let x = inp(0);
                    let c = match g.nodes[n.inputs[0]].kind {
                        Kind::Time { channels } => channels,
                        _ => 1,
                    };
                    NodePlan {
                        len: c * x.len,
                        stride: 0,
                        rf: window,
                        left: 0,
                        right: 0,
                        hop: 0,
                    }
                }
                Op::Dense { n_in, n_out, .. } => {
                    let x = inp(0);
                    if x.len != *n_in {
                        let hint = match g.fixed_window {
                            Some(w) => {
                                format!(" (the model was exported for a window of {w} frames)")
                            }
                            None => String::new(),
                        };
                        return Err(err(format!("the layer expects {n_in} inputs but a window of {window} gives {}{hint}", x.len)));
                    }
                    NodePlan {
                        len: *n_out,
                        stride: 0,
                        rf: window,
                        left: 0,
                        right: 0,
                        hop: 0,
                    }
                }
            };
            if np.stride > 0 {
                lcm = lcm / gcd(lcm, np.stride) * np.stride;
            }
            p[i] = np;
        }
        Ok((p, lcm))
    }

    /// Plan `g` for `window` input frames advancing by `hop`. An invalid hop is refused with the valid ones.
    pub fn new(g: &Graph, window: usize, hop: usize) -> Result<Plan, String> {
        if window == 0 {
            return Err("the window must not be empty".into());
        }
        let (mut nodes, stride) = Self::time_map(g, window)?;
        if hop == 0 || hop > window || !hop.is_multiple_of(stride) {
            return Err(format!(
                "hop {hop} cannot be exact for this model (total stride {stride}, window {window}); valid hops: {}",
                describe_hops(stride, window)
            ));
        }
        for n in nodes.iter_mut() {
            n.hop = hop.checked_div(n.stride).unwrap_or(0);
        }
        Ok(Plan {
            window,
            hop,
            nodes,
            live: g.live(),
            stride,
        })
    }

    /// One line per live node: its time map.
    pub fn describe(&self, g: &Graph) -> String {
        let mut s = String::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if !self.live[i] {
                continue;
            }
            let p = self.nodes[i];
            if p.is_vector() {
                s.push_str(&format!(
                    "{:>3} {:<18} {:<28} vector {}\n",
                    i, n.op_type, n.name, p.len
                ));
            } else {
                s.push_str(&format!(
                    "{:>3} {:<18} {:<28} frames {:>6} stride {:>4} rf {:>5} context L{} R{} new/hop {}\n",
                    i, n.op_type, n.name, p.len, p.stride, p.rf, p.left, p.right, p.hop
                ));
            }
        }
        s
    }
}
