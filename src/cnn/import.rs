//! ONNX → [`Graph`]: decode the protobuf with prost, fold constant subgraphs (the shape arithmetic some exporters
//! emit), map each operator onto the IR and pack weights. Errors name the file, node, operator and attribute.

use super::ir::*;
use super::onnx_proto::{self as pb, attr_type, data_type};
use crate::error::{Error, Result};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// A constant tensor (initializer, `Constant`, or folded), values kept in f64 so int64 shape data stays exact.
#[derive(Debug, Clone, PartialEq)]
struct ConstT {
    dims: Vec<usize>,
    data: Vec<f64>,
}

impl ConstT {
    fn f32s(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
    fn numel(&self) -> usize {
        self.data.len()
    }
}

/// What an ONNX value name stands for while importing.
#[derive(Debug, Clone)]
enum Val {
    /// A time tensor; `shape` is its ONNX shape with `None` at the time axis.
    Time {
        id: NodeId,
        shape: Vec<Option<usize>>,
    },
    /// A vector; `shape` is its ONNX shape (`None` where the size depends on the window).
    Vector {
        id: NodeId,
        shape: Vec<Option<usize>>,
    },
    Const(ConstT),
}

/// Load and import an ONNX file.
pub fn load(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read ONNX model: {e}")))?;
    import_bytes(&bytes).map_err(|m| Error::file(path, m))
}

/// Import an ONNX model from memory; the error is a message without the file name.
pub fn import_bytes(bytes: &[u8]) -> Result<Graph, String> {
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| format!("not a valid ONNX model (protobuf: {e})"))?;
    let graph = model.graph.as_ref().ok_or("ONNX model has no graph")?;
    for os in &model.opset_import {
        if (os.domain.is_empty() || os.domain == "ai.onnx") && os.version < 11 {
            return Err(format!(
                "opset {} is too old: export with opset 11 or newer (13–18 are tested)",
                os.version
            ));
        }
    }
    Importer::new(graph)?.run(graph)
}

fn tensor_to_const(t: &pb::TensorProto) -> Result<ConstT, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| format!("tensor `{}` has a negative dimension {d}", t.name))
        })
        .collect::<Result<_, _>>()?;
    let numel: usize = dims.iter().product();
    if t.data_location == 1 {
        return Err(format!("tensor `{}` uses external data, which is not supported: save the model with its weights inside", t.name));
    }
    let raw = &t.raw_data;
    let data: Vec<f64> = match t.data_type {
        data_type::FLOAT => {
            if !raw.is_empty() {
                if raw.len() != numel * 4 {
                    return Err(format!("tensor `{}`: raw_data has {} bytes, shape {:?} needs {}", t.name, raw.len(), dims, numel * 4));
                }
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
            } else {
                t.float_data.iter().map(|&v| v as f64).collect()
            }
        }
        data_type::DOUBLE => {
            if !raw.is_empty() {
                if raw.len() != numel * 8 {
                    return Err(format!("tensor `{}`: raw_data has {} bytes, shape {:?} needs {}", t.name, raw.len(), dims, numel * 8));
                }
                raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
            } else {
                t.double_data.clone()
            }
        }
        data_type::INT64 => {
            if !raw.is_empty() {
                if raw.len() != numel * 8 {
                    return Err(format!("tensor `{}`: raw_data has {} bytes, shape {:?} needs {}", t.name, raw.len(), dims, numel * 8));
                }
                raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64).collect()
            } else {
                t.int64_data.iter().map(|&v| v as f64).collect()
            }
        }
        data_type::INT32 => {
            if !raw.is_empty() {
                if raw.len() != numel * 4 {
                    return Err(format!("tensor `{}`: raw_data has {} bytes, shape {:?} needs {}", t.name, raw.len(), dims, numel * 4));
                }
                raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()
            } else {
                t.int32_data.iter().map(|&v| v as f64).collect()
            }
        }
        // bool / int8 / uint8 … are stored in int32_data when not raw.
        9 | 2 | 3 => {
            if !raw.is_empty() {
                raw.iter().map(|&b| if t.data_type == 3 { b as i8 as f64 } else { b as f64 }).collect()
            } else {
                t.int32_data.iter().map(|&v| v as f64).collect()
            }
        }
        other => return Err(format!("tensor `{}` has data type {other}, which is not supported (float, double, int32, int64)", t.name)),
    };
    if data.len() != numel {
        return Err(format!(
            "tensor `{}` holds {} values but its shape {:?} needs {numel}",
            t.name,
            data.len(),
            dims
        ));
    }
    Ok(ConstT { dims, data })
}

struct Importer {
    vals: HashMap<String, Val>,
    nodes: Vec<Node>,
    fixed_window: Option<usize>,
    input_name: String,
    in_channels: usize,
}

/// One ONNX node being translated, for attribute access and messages.
struct Ctx<'a> {
    node: &'a pb::NodeProto,
    name: String,
}

impl Ctx<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("node `{}` (op {}): {msg}", self.name, self.node.op_type)
    }
    fn attr(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    /// Refuse attributes outside `known`.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        for a in &self.node.attribute {
            if !known.contains(&a.name.as_str()) {
                return Err(self.err(format!("attribute `{}` is not supported", a.name)));
            }
        }
        Ok(())
    }
    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) if a.r#type == attr_type::INT || a.r#type == 0 => Ok(a.i),
            Some(_) => Err(self.err(format!("attribute `{name}` must be an int"))),
        }
    }
    fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) if a.r#type == attr_type::FLOAT || a.r#type == 0 => Ok(a.f),
            Some(_) => Err(self.err(format!("attribute `{name}` must be a float"))),
        }
    }
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == attr_type::INTS || a.r#type == 0 => Ok(Some(a.ints.clone())),
            Some(_) => Err(self.err(format!("attribute `{name}` must be a list of ints"))),
        }
    }
    fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == attr_type::STRING || a.r#type == 0 => {
                Ok(Some(String::from_utf8_lossy(&a.s).into_owned()))
            }
            Some(_) => Err(self.err(format!("attribute `{name}` must be a string"))),
        }
    }
    /// A 1-element ints attribute (1-D kernels, strides …).
    fn one(&self, name: &str, default: i64) -> Result<usize, String> {
        let v = match self.ints(name)? {
            None => default,
            Some(v) if v.len() == 1 => v[0],
            Some(v) => {
                return Err(self.err(format!(
                    "attribute `{name}` = {v:?}: only 1-D (one value) is supported"
                )))
            }
        };
        usize::try_from(v)
            .map_err(|_| self.err(format!("attribute `{name}` = {v} must not be negative")))
    }
    fn pads(&self) -> Result<(usize, usize), String> {
        match self.ints("pads")? {
            None => Ok((0, 0)),
            Some(v) if v.len() == 2 && v[0] >= 0 && v[1] >= 0 => Ok((v[0] as usize, v[1] as usize)),
            Some(v) => Err(self.err(format!(
                "attribute `pads` = {v:?}: expected two non-negative values (1-D)"
            ))),
        }
    }
}

fn time_axis(shape: &[Option<usize>]) -> usize {
    shape
        .iter()
        .position(|d| d.is_none())
        .unwrap_or(shape.len())
}

/// Channels of a time-tensor shape: product of the fixed dims other than the batch.
fn channels_of(shape: &[Option<usize>]) -> usize {
    shape.iter().skip(1).map(|d| d.unwrap_or(1)).product()
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

impl Importer {
    fn new(graph: &pb::GraphProto) -> Result<Self, String> {
        let mut vals = HashMap::new();
        for t in &graph.initializer {
            vals.insert(t.name.clone(), Val::Const(tensor_to_const(t)?));
        }
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !vals.contains_key(&i.name))
            .collect();
        if inputs.len() != 1 {
            return Err(format!(
                "the model has {} inputs ({}); the CNN engine takes exactly one [1, channels, time] input",
                inputs.len(),
                inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let input = inputs[0];
        let tt = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| format!("input `{}` is not a tensor", input.name))?;
        if tt.elem_type != data_type::FLOAT {
            return Err(format!(
                "input `{}` has element type {}; only float32 is supported",
                input.name, tt.elem_type
            ));
        }
        let dims: Vec<Option<i64>> = tt
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.filter(|&v| v > 0))
                    .collect()
            })
            .unwrap_or_default();
        if dims.len() != 3 {
            return Err(format!(
                "input `{}` has rank {}; expected [1, channels, time]",
                input.name,
                dims.len()
            ));
        }
        if dims[0].is_some_and(|b| b != 1) {
            return Err(format!(
                "input `{}` has batch {:?}; only batch 1 is supported",
                input.name, dims[0]
            ));
        }
        let in_channels = dims[1].ok_or_else(|| {
            format!(
                "input `{}`: the channel dimension must be fixed",
                input.name
            )
        })? as usize;
        let fixed_window = dims[2].map(|t| t as usize);
        let mut me = Importer {
            vals,
            nodes: vec![Node {
                name: input.name.clone(),
                op_type: "Input".into(),
                op: Op::Input,
                inputs: vec![],
                kind: Kind::Time {
                    channels: in_channels,
                },
            }],
            fixed_window,
            input_name: input.name.clone(),
            in_channels,
        };
        me.vals.insert(
            input.name.clone(),
            Val::Time {
                id: 0,
                shape: vec![Some(1), Some(in_channels), None],
            },
        );
        Ok(me)
    }

    fn run(mut self, graph: &pb::GraphProto) -> Result<Graph, String> {
        for (i, node) in graph.node.iter().enumerate() {
            let name = if node.name.is_empty() {
                format!("#{i}")
            } else {
                node.name.clone()
            };
            let cx = Ctx { node, name };
            if !(node.domain.is_empty() || node.domain == "ai.onnx") {
                return Err(cx.err(format!(
                    "operator domain `{}` is not supported",
                    node.domain
                )));
            }
            let outs = self.translate(&cx)?;
            for (name, v) in node.output.iter().zip(outs) {
                if !name.is_empty() {
                    self.vals.insert(name.clone(), v);
                }
            }
        }
        if graph.output.len() != 1 {
            return Err(format!(
                "the model has {} outputs; the CNN engine supports exactly one",
                graph.output.len()
            ));
        }
        let out_name = &graph.output[0].name;
        let (output, output_shape) = match self.vals.get(out_name) {
            Some(Val::Time { id, shape }) => (*id, shape.clone()),
            Some(Val::Vector { id, shape }) => (*id, shape.clone()),
            Some(Val::Const(_)) => return Err(format!("output `{out_name}` is a constant")),
            None => return Err(format!("output `{out_name}` is not produced by any node")),
        };
        let mut g = Graph {
            nodes: self.nodes,
            output,
            in_channels: self.in_channels,
            fixed_window: self.fixed_window,
            input_name: self.input_name,
            output_name: out_name.clone(),
            output_shape,
        };
        fold_affine(&mut g);
        fold_pad(&mut g);
        fuse_silu(&mut g);
        fuse_gelu(&mut g);
        fold_activation(&mut g);
        Ok(g)
    }

    fn get(&self, cx: &Ctx, idx: usize) -> Result<Option<Val>, String> {
        match cx.node.input.get(idx) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self
                .vals
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| cx.err(format!("input `{n}` is not defined before this node"))),
        }
    }
    fn need(&self, cx: &Ctx, idx: usize) -> Result<Val, String> {
        self.get(cx, idx)?
            .ok_or_else(|| cx.err(format!("input {idx} is missing")))
    }
    fn konst(&self, cx: &Ctx, idx: usize, what: &str) -> Result<Option<ConstT>, String> {
        match self.get(cx, idx)? {
            None => Ok(None),
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(_) => Err(cx.err(format!("{what} (input {idx}) must be a constant"))),
        }
    }

    fn push(&mut self, cx: &Ctx, op: Op, inputs: Vec<NodeId>, kind: Kind) -> NodeId {
        self.nodes.push(Node {
            name: cx.name.clone(),
            op_type: cx.node.op_type.clone(),
            op,
            inputs,
            kind,
        });
        self.nodes.len() - 1
    }

    fn translate(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        let op = cx.node.op_type.as_str();
        // Operators whose inputs are all constants are evaluated here (shape arithmetic of the exporters).
        let all_const = !cx.node.input.is_empty()
            && cx
                .node
                .input
                .iter()
                .all(|n| n.is_empty() || matches!(self.vals.get(n), Some(Val::Const(_))));
        if op == "Constant" {
            return Ok(vec![Val::Const(self.constant(cx)?)]);
        }
        if all_const && op != "Conv" {
            return self.fold(cx).map(|c| vec![Val::Const(c)]);
        }
        match op {
            "Conv" => self.conv(cx),
            "BatchNormalization" => self.batchnorm(cx),
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" | "Softplus" | "Erf" | "Neg" | "Abs"
            | "Exp" | "Sqrt" | "Identity" => {
                cx.only(&[])?;
                let u = match op {
                    "Relu" => Unary::Relu,
                    "Sigmoid" => Unary::Sigmoid,
                    "Tanh" => Unary::Tanh,
                    "HardSwish" => Unary::HardSwish,
                    "Softplus" => Unary::Softplus,
                    "Erf" => Unary::Erf,
                    "Neg" => Unary::Neg,
                    "Abs" => Unary::Abs,
                    "Exp" => Unary::Exp,
                    "Sqrt" => Unary::Sqrt,
                    _ => return Ok(vec![self.need(cx, 0)?]),
                };
                self.unary(cx, u)
            }
            "Dropout" => {
                cx.only(&["seed", "ratio"])?;
                Ok(vec![self.need(cx, 0)?])
            }
            "LeakyRelu" => {
                cx.only(&["alpha"])?;
                let a = cx.float("alpha", 0.01)?;
                self.unary(cx, Unary::LeakyRelu(a))
            }
            "Elu" => {
                cx.only(&["alpha"])?;
                let a = cx.float("alpha", 1.0)?;
                self.unary(cx, Unary::Elu(a))
            }
            "Selu" => {
                cx.only(&["alpha", "gamma"])?;
                let a = cx.float("alpha", 1.673_263_2)?;
                let g = cx.float("gamma", 1.050_701)?;
                self.unary(cx, Unary::Selu(a, g))
            }
            "HardSigmoid" => {
                cx.only(&["alpha", "beta"])?;
                let a = cx.float("alpha", 0.2)?;
                let b = cx.float("beta", 0.5)?;
                self.unary(cx, Unary::HardSigmoid(a, b))
            }
            "Gelu" => {
                cx.only(&["approximate"])?;
                let tanh = match cx.string("approximate")?.as_deref() {
                    None | Some("none") => false,
                    Some("tanh") => true,
                    Some(o) => {
                        return Err(
                            cx.err(format!("attribute `approximate` = {o:?} is not supported"))
                        )
                    }
                };
                self.unary(cx, Unary::Gelu { tanh })
            }
            "Clip" => {
                cx.only(&["min", "max"])?;
                let mut lo = cx.float("min", f32::NEG_INFINITY)?;
                let mut hi = cx.float("max", f32::INFINITY)?;
                if let Some(c) = self.konst(cx, 1, "min")? {
                    lo = c.data.first().copied().unwrap_or(f64::NEG_INFINITY) as f32;
                }
                if let Some(c) = self.konst(cx, 2, "max")? {
                    hi = c.data.first().copied().unwrap_or(f64::INFINITY) as f32;
                }
                self.unary(cx, Unary::Clip(lo, hi))
            }
            "PRelu" => {
                cx.only(&[])?;
                let slope = self
                    .konst(cx, 1, "slope")?
                    .ok_or_else(|| cx.err("slope is missing"))?;
                let x = self.need(cx, 0)?;
                let per = self.per_channel(cx, &x, &slope)?;
                self.same_kind(cx, x, Op::PRelu(per))
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                cx.only(&[])?;
                let bop = match op {
                    "Add" => BinOp::Add,
                    "Sub" => BinOp::Sub,
                    "Mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                self.binary(cx, bop)
            }
            "MaxPool" | "AveragePool" => self.pool(cx),
            "GlobalAveragePool" | "GlobalMaxPool" => {
                cx.only(&[])?;
                let r = if op == "GlobalMaxPool" {
                    Reduce::Max
                } else {
                    Reduce::Mean
                };
                let (id, shape) = self.time_in(cx, 0)?;
                if shape.len() != 3 {
                    return Err(cx.err("expects a [1, channels, time] input"));
                }
                let c = channels_of(&shape);
                let nid = self.push(
                    cx,
                    Op::GlobalPool(r),
                    vec![id],
                    Kind::Vector { len: Some(c) },
                );
                Ok(vec![Val::Vector {
                    id: nid,
                    shape: vec![Some(1), Some(c), Some(1)],
                }])
            }
            "ReduceMean" | "ReduceMax" => self.reduce(cx),
            "Pad" => self.pad(cx),
            "Slice" => self.slice(cx),
            "Concat" => self.concat(cx),
            "Softmax" => self.softmax(cx),
            "Flatten" => self.flatten(cx),
            "Reshape" | "Squeeze" | "Unsqueeze" => self.reshape(cx),
            "Transpose" => self.transpose(cx),
            "Gemm" => self.gemm(cx),
            "MatMul" => self.matmul(cx),
            other => Err(cx.err(format!(
                "operator `{other}` is not supported by the CNN engine"
            ))),
        }
    }

    fn constant(&self, cx: &Ctx) -> Result<ConstT, String> {
        let a = cx
            .node
            .attribute
            .first()
            .ok_or_else(|| cx.err("Constant without a value"))?;
        match a.name.as_str() {
            "value" => tensor_to_const(
                a.t.as_ref()
                    .ok_or_else(|| cx.err("attribute `value` has no tensor"))?,
            )
            .map_err(|e| cx.err(e)),
            "value_float" => Ok(ConstT {
                dims: vec![],
                data: vec![a.f as f64],
            }),
            "value_int" => Ok(ConstT {
                dims: vec![],
                data: vec![a.i as f64],
            }),
            "value_floats" => Ok(ConstT {
                dims: vec![a.floats.len()],
                data: a.floats.iter().map(|&v| v as f64).collect(),
            }),
            "value_ints" => Ok(ConstT {
                dims: vec![a.ints.len()],
                data: a.ints.iter().map(|&v| v as f64).collect(),
            }),
            other => Err(cx.err(format!("attribute `{other}` is not supported"))),
        }
    }

    /// Evaluate an operator whose inputs are all constants.
    fn fold(&self, cx: &Ctx) -> Result<ConstT, String> {
        let c = |i: usize| -> Result<ConstT, String> {
            match self.get(cx, i)? {
                Some(Val::Const(c)) => Ok(c),
                _ => Err(cx.err(format!("input {i} is missing"))),
            }
        };
        let op = cx.node.op_type.as_str();
        match op {
            "Identity" | "Cast" | "Dropout" => c(0),
            "ConstantOfShape" => {
                let shape = c(0)?;
                let dims: Vec<usize> = shape.ints().iter().map(|&d| d.max(0) as usize).collect();
                let v = match cx.attr("value").and_then(|a| a.t.as_ref()) {
                    Some(t) => tensor_to_const(t)
                        .map_err(|e| cx.err(e))?
                        .data
                        .first()
                        .copied()
                        .unwrap_or(0.0),
                    None => 0.0,
                };
                let n: usize = dims.iter().product();
                if n > 1 << 24 {
                    return Err(cx.err("constant too large"));
                }
                Ok(ConstT {
                    dims,
                    data: vec![v; n],
                })
            }
            "Concat" => {
                let axis = cx.int("axis", 0)?;
                let parts: Vec<ConstT> =
                    (0..cx.node.input.len()).map(c).collect::<Result<_, _>>()?;
                let rank = parts.first().map(|p| p.dims.len()).unwrap_or(1);
                if rank != 1 || norm_axis(axis, 1) != Some(0) {
                    return Err(cx.err("constant Concat is supported for 1-D tensors only"));
                }
                let data: Vec<f64> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
                Ok(ConstT {
                    dims: vec![data.len()],
                    data,
                })
            }
            "Reshape" => {
                let x = c(0)?;
                let shape = c(1)?.ints();
                let dims = resolve_shape(&x.dims, &shape, cx.int("allowzero", 0)? != 0)
                    .map_err(|e| cx.err(e))?;
                Ok(ConstT { dims, data: x.data })
            }
            "Squeeze" | "Unsqueeze" => {
                let x = c(0)?;
                let axes = match self.konst(cx, 1, "axes")? {
                    Some(a) => a.ints(),
                    None => cx.ints("axes")?.unwrap_or_default(),
                };
                let dims = if op == "Squeeze" {
                    if axes.is_empty() {
                        x.dims.iter().copied().filter(|&d| d != 1).collect()
                    } else {
                        let ax: Vec<usize> = axes
                            .iter()
                            .filter_map(|&a| norm_axis(a, x.dims.len()))
                            .collect();
                        x.dims
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !ax.contains(i))
                            .map(|(_, &d)| d)
                            .collect()
                    }
                } else {
                    let r = x.dims.len() + axes.len();
                    let ax: Vec<usize> = axes.iter().filter_map(|&a| norm_axis(a, r)).collect();
                    let mut it = x.dims.iter();
                    (0..r)
                        .map(|i| {
                            if ax.contains(&i) {
                                1
                            } else {
                                *it.next().unwrap_or(&1)
                            }
                        })
                        .collect()
                };
                Ok(ConstT { dims, data: x.data })
            }
            "Transpose" => {
                let x = c(0)?;
                let r = x.dims.len();
                let perm: Vec<usize> = match cx.ints("perm")? {
                    Some(p) => p
                        .iter()
                        .map(|&a| norm_axis(a, r).ok_or_else(|| cx.err("bad perm")))
                        .collect::<Result<_, _>>()?,
                    None => (0..r).rev().collect(),
                };
                if perm.len() != r {
                    return Err(cx.err("perm does not match the rank"));
                }
                let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
                let mut strides = vec![1usize; r];
                for i in (0..r.saturating_sub(1)).rev() {
                    strides[i] = strides[i + 1] * x.dims[i + 1];
                }
                let n = x.numel();
                let mut data = vec![0.0; n];
                let mut idx = vec![0usize; r];
                for v in data.iter_mut() {
                    let src: usize = (0..r).map(|i| idx[i] * strides[perm[i]]).sum();
                    *v = x.data[src];
                    for i in (0..r).rev() {
                        idx[i] += 1;
                        if idx[i] < dims[i] {
                            break;
                        }
                        idx[i] = 0;
                    }
                }
                Ok(ConstT { dims, data })
            }
            "Slice" => {
                let x = c(0)?;
                let r = x.dims.len();
                let starts = c(1)?.ints();
                let ends = c(2)?.ints();
                let axes: Vec<usize> = match self.konst(cx, 3, "axes")? {
                    Some(a) => a
                        .ints()
                        .iter()
                        .map(|&a| norm_axis(a, r).ok_or_else(|| cx.err("axis out of range")))
                        .collect::<Result<_, _>>()?,
                    None => (0..starts.len()).collect(),
                };
                let steps = self
                    .konst(cx, 4, "steps")?
                    .map(|s| s.ints())
                    .unwrap_or_else(|| vec![1; axes.len()]);
                if starts.len() != axes.len()
                    || ends.len() != axes.len()
                    || steps.len() != axes.len()
                {
                    return Err(cx.err("starts, ends, axes and steps differ in length"));
                }
                // Indices kept along each axis.
                let mut keep: Vec<Vec<usize>> = x.dims.iter().map(|&d| (0..d).collect()).collect();
                for (i, &a) in axes.iter().enumerate() {
                    let n = x.dims[a] as i64;
                    let (s, e, st) = (starts[i], ends[i], steps[i]);
                    if st == 0 {
                        return Err(cx.err("slice step 0"));
                    }
                    let fix = |v: i64, lo: i64, hi: i64| {
                        if v < 0 {
                            (v + n).clamp(lo, hi)
                        } else {
                            v.clamp(lo, hi)
                        }
                    };
                    let mut idx = vec![];
                    if st > 0 {
                        let (mut i, e) = (fix(s, 0, n), fix(e, 0, n));
                        while i < e {
                            idx.push(i as usize);
                            i += st;
                        }
                    } else {
                        let (mut i, e) = (fix(s, -1, n - 1), fix(e, -1, n - 1));
                        while i > e {
                            idx.push(i as usize);
                            i += st;
                        }
                    }
                    keep[a] = idx;
                }
                let dims: Vec<usize> = keep.iter().map(|k| k.len()).collect();
                let mut strides = vec![1usize; r];
                for i in (0..r.saturating_sub(1)).rev() {
                    strides[i] = strides[i + 1] * x.dims[i + 1];
                }
                let n: usize = dims.iter().product();
                let mut data = Vec::with_capacity(n);
                let mut pos = vec![0usize; r];
                for _ in 0..n {
                    data.push(x.data[(0..r).map(|i| keep[i][pos[i]] * strides[i]).sum::<usize>()]);
                    for i in (0..r).rev() {
                        pos[i] += 1;
                        if pos[i] < dims[i] {
                            break;
                        }
                        pos[i] = 0;
                    }
                }
                Ok(ConstT { dims, data })
            }
            "Gather" => {
                let x = c(0)?;
                let idx = c(1)?;
                if x.dims.len() != 1 {
                    return Err(cx.err("constant Gather is supported for 1-D tensors only"));
                }
                let n = x.dims[0] as i64;
                let data = idx
                    .ints()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + n } else { i };
                        x.data
                            .get(j as usize)
                            .copied()
                            .ok_or_else(|| cx.err("index out of range"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ConstT {
                    dims: idx.dims.clone(),
                    data,
                })
            }
            "Add" | "Sub" | "Mul" | "Div" | "Neg" | "Sqrt" => {
                let a = c(0)?;
                if op == "Neg" || op == "Sqrt" {
                    let f = if op == "Neg" { |v: f64| -v } else { f64::sqrt };
                    return Ok(ConstT {
                        dims: a.dims.clone(),
                        data: a.data.iter().map(|&v| f(v)).collect(),
                    });
                }
                let b = c(1)?;
                let (big, small, swap) = if a.numel() >= b.numel() {
                    (&a, &b, false)
                } else {
                    (&b, &a, true)
                };
                if small.numel() != 1 && small.numel() != big.numel() {
                    return Err(cx.err("constant broadcasting beyond scalars is not supported"));
                }
                let data = big
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let y = small.data[if small.numel() == 1 { 0 } else { i }];
                        let (l, r) = if swap { (y, x) } else { (x, y) };
                        match op {
                            "Add" => l + r,
                            "Sub" => l - r,
                            "Mul" => l * r,
                            _ => l / r,
                        }
                    })
                    .collect();
                Ok(ConstT {
                    dims: big.dims.clone(),
                    data,
                })
            }
            other => Err(cx.err(format!("operator `{other}` on constants is not supported"))),
        }
    }

    fn time_in(&self, cx: &Ctx, i: usize) -> Result<(NodeId, Vec<Option<usize>>), String> {
        match self.need(cx, i)? {
            Val::Time { id, shape } => Ok((id, shape)),
            Val::Vector { .. } => Err(cx.err(format!("input {i} must be a time tensor [1, channels, time], found a vector (the time axis was already reduced)"))),
            Val::Const(_) => Err(cx.err(format!("input {i} must be a time tensor, found a constant"))),
        }
    }

    fn unary(&mut self, cx: &Ctx, u: Unary) -> Result<Vec<Val>, String> {
        let x = self.need(cx, 0)?;
        self.same_kind(cx, x, Op::Unary(u))
    }

    /// A node with one input whose output has the input's kind and shape.
    fn same_kind(&mut self, cx: &Ctx, x: Val, op: Op) -> Result<Vec<Val>, String> {
        Ok(vec![match x {
            Val::Time { id, shape } => {
                let k = self.nodes[id].kind;
                Val::Time {
                    id: self.push(cx, op, vec![id], k),
                    shape,
                }
            }
            Val::Vector { id, shape } => {
                let k = self.nodes[id].kind;
                Val::Vector {
                    id: self.push(cx, op, vec![id], k),
                    shape,
                }
            }
            Val::Const(_) => return Err(cx.err("constant input")),
        }])
    }

    /// Constant `c` as one value per channel (time) / per element (vector), or a single value.
    fn per_channel(&self, cx: &Ctx, x: &Val, c: &ConstT) -> Result<Vec<f32>, String> {
        if c.numel() == 1 {
            // Over a time tensor a single value is stored once per channel, so the engine's per-frame loops
            // read one row of parameters and never build one per hop.
            let v = c.f32s();
            return Ok(match x {
                Val::Time { shape, .. } => vec![v[0]; channels_of(shape)],
                _ => v,
            });
        }
        match x {
            Val::Time { shape, .. } => {
                let ch = channels_of(shape);
                let ta = time_axis(shape);
                // The constant must not vary along time: its dims aligned to the time axis (from the right) are 1.
                let r = shape.len();
                let off = r as isize - c.dims.len() as isize;
                let t_dim = ta as isize - off;
                let varies_in_time =
                    t_dim >= 0 && (t_dim as usize) < c.dims.len() && c.dims[t_dim as usize] != 1;
                if c.numel() == ch && !varies_in_time {
                    Ok(c.f32s())
                } else {
                    Err(cx.err(format!("constant of shape {:?} does not broadcast per channel over a time tensor with {ch} channels", c.dims)))
                }
            }
            Val::Vector { id, .. } => match self.nodes[*id].kind {
                Kind::Vector { len: Some(n) } if n == c.numel() => Ok(c.f32s()),
                _ => Err(cx.err(format!(
                    "constant of shape {:?} does not match the vector",
                    c.dims
                ))),
            },
            Val::Const(_) => Err(cx.err("constant input")),
        }
    }

    fn binary(&mut self, cx: &Ctx, bop: BinOp) -> Result<Vec<Val>, String> {
        let a = self.need(cx, 0)?;
        let b = self.need(cx, 1)?;
        let (main, other, main_is_lhs) = match (&a, &b) {
            (Val::Time { .. }, _) => (a.clone(), b.clone(), true),
            (_, Val::Time { .. }) => (b.clone(), a.clone(), false),
            (Val::Vector { .. }, _) => (a.clone(), b.clone(), true),
            _ => (b.clone(), a.clone(), false),
        };
        let (mid, mshape, is_time) = match &main {
            Val::Time { id, shape } => (*id, shape.clone(), true),
            Val::Vector { id, shape } => (*id, shape.clone(), false),
            Val::Const(_) => return Err(cx.err("both inputs constant")),
        };
        let mut inputs = vec![mid];
        let other_op = match &other {
            Val::Const(c) => Operand::Const(self.per_channel(cx, &main, c)?),
            Val::Time { id, shape } => {
                if channels_of(shape) != channels_of(&mshape) {
                    return Err(cx.err(format!(
                        "inputs have {} and {} channels",
                        channels_of(&mshape),
                        channels_of(shape)
                    )));
                }
                inputs.push(*id);
                Operand::Node(*id)
            }
            Val::Vector { id, shape } => {
                let n = shape.iter().map(|d| d.unwrap_or(0)).product::<usize>();
                if is_time {
                    let ch = channels_of(&mshape);
                    if n != ch && n != 1 {
                        return Err(cx.err(format!(
                            "a vector of {n} values does not broadcast over {ch} channels"
                        )));
                    }
                    inputs.push(*id);
                    Operand::Broadcast(*id)
                } else {
                    let m = self.nodes[mid].kind;
                    if m != self.nodes[*id].kind {
                        return Err(cx.err("vector inputs of different sizes"));
                    }
                    inputs.push(*id);
                    Operand::Node(*id)
                }
            }
        };
        let (l, r) = if main_is_lhs {
            (Operand::Node(mid), other_op)
        } else {
            (other_op, Operand::Node(mid))
        };
        let kind = self.nodes[mid].kind;
        let id = self.push(cx, Op::Binary(bop, l, r), inputs, kind);
        Ok(vec![if is_time {
            Val::Time { id, shape: mshape }
        } else {
            Val::Vector { id, shape: mshape }
        }])
    }

    fn conv(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&[
            "kernel_shape",
            "strides",
            "dilations",
            "pads",
            "group",
            "auto_pad",
        ])?;
        let (xid, shape) = self.time_in(cx, 0)?;
        if shape.len() != 3 {
            return Err(cx.err(format!(
                "only 1-D convolution over [1, channels, time] is supported (input rank {})",
                shape.len()
            )));
        }
        let w = self
            .konst(cx, 1, "weight")?
            .ok_or_else(|| cx.err("weight is missing"))?;
        if w.dims.len() != 3 {
            return Err(cx.err(format!(
                "weight has shape {:?}; only 1-D convolutions ([out, in/group, k]) are supported",
                w.dims
            )));
        }
        let (cout, cin_g, k) = (w.dims[0], w.dims[1], w.dims[2]);
        let groups = cx.int("group", 1)?;
        let groups = usize::try_from(groups)
            .ok()
            .filter(|&g| g >= 1)
            .ok_or_else(|| cx.err(format!("attribute `group` = {groups} is invalid")))?;
        let cin = channels_of(&shape);
        if cin_g * groups != cin || cout % groups != 0 {
            return Err(cx.err(format!(
                "weight {:?} with group {groups} does not fit {cin} input channels",
                w.dims
            )));
        }
        if let Some(ks) = cx.ints("kernel_shape")? {
            if ks != [k as i64] {
                return Err(cx.err(format!(
                    "attribute `kernel_shape` = {ks:?} does not match the weight (k = {k})"
                )));
            }
        }
        let stride = cx.one("strides", 1)?;
        let dilation = cx.one("dilations", 1)?;
        if stride == 0 || dilation == 0 || k == 0 {
            return Err(cx.err("stride, dilation and kernel must be positive"));
        }
        let (pad_left, pad_right) = match cx.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") => cx.pads()?,
            Some("VALID") => (0, 0),
            Some(m @ ("SAME_UPPER" | "SAME_LOWER")) => {
                if stride != 1 {
                    return Err(cx.err(format!("attribute `auto_pad` = {m} with stride {stride} is not supported (use explicit pads)")));
                }
                let total = (k - 1) * dilation;
                let small = total / 2;
                if m == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
            Some(o) => return Err(cx.err(format!("attribute `auto_pad` = {o:?} is not supported"))),
        };
        let bias = match self.konst(cx, 2, "bias")? {
            Some(b) if b.numel() == cout => b.f32s(),
            Some(b) => {
                return Err(cx.err(format!("bias has {} values, expected {cout}", b.numel())))
            }
            None => vec![0.0; cout],
        };
        let wf = w.f32s();
        let depthwise = groups == cin && cout == cin && cin_g == 1 && cin > 1;
        let weight = if depthwise {
            let mut p = vec![0.0; k * cin];
            for c in 0..cin {
                for kk in 0..k {
                    p[kk * cin + c] = wf[c * k + kk];
                }
            }
            p
        } else {
            // Dense [k][cin][cout]; grouped convolutions become block-diagonal.
            let cout_g = cout / groups;
            let mut p = vec![0.0; k * cin * cout];
            for o in 0..cout {
                let g = o / cout_g;
                for i in 0..cin_g {
                    let ci = g * cin_g + i;
                    for kk in 0..k {
                        p[(kk * cin + ci) * cout + o] = wf[(o * cin_g + i) * k + kk];
                    }
                }
            }
            p
        };
        let conv = Conv {
            cin,
            cout,
            k,
            stride,
            dilation,
            pad_left,
            pad_right,
            weight,
            bias,
            depthwise,
            act: None,
            int8: None,
        };
        let id = self.push(cx, Op::Conv(conv), vec![xid], Kind::Time { channels: cout });
        Ok(vec![Val::Time {
            id,
            shape: vec![Some(1), Some(cout), None],
        }])
    }

    fn batchnorm(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["epsilon", "momentum", "training_mode", "spatial"])?;
        if cx.int("training_mode", 0)? != 0 {
            return Err(cx.err(
                "attribute `training_mode` = 1 is not supported (export the model in eval mode)",
            ));
        }
        let eps = cx.float("epsilon", 1e-5)? as f64;
        let x = self.need(cx, 0)?;
        let get = |i, w| {
            self.konst(cx, i, w)
                .and_then(|c| c.ok_or_else(|| cx.err(format!("{w} is missing"))))
        };
        let (s, b, m, v) = (
            get(1, "scale")?,
            get(2, "bias")?,
            get(3, "mean")?,
            get(4, "var")?,
        );
        let n = s.numel();
        if [b.numel(), m.numel(), v.numel()].iter().any(|&k| k != n) {
            return Err(cx.err("scale, bias, mean and var differ in size"));
        }
        let scale: Vec<f64> = (0..n)
            .map(|i| s.data[i] / (v.data[i] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..n)
            .map(|i| (b.data[i] - m.data[i] * scale[i]) as f32)
            .collect();
        let scale: Vec<f32> = scale.iter().map(|&v| v as f32).collect();
        if let Val::Time { shape, .. } = &x {
            if channels_of(shape) != n {
                return Err(cx.err(format!(
                    "{n} statistics for {} channels",
                    channels_of(shape)
                )));
            }
        }
        self.same_kind(cx, x, Op::Affine { scale, shift })
    }

    fn pool(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        let max = cx.node.op_type == "MaxPool";
        cx.only(&[
            "kernel_shape",
            "strides",
            "dilations",
            "pads",
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "storage_order",
        ])?;
        if cx.node.output.len() > 1 && !cx.node.output[1].is_empty() {
            return Err(cx.err("the Indices output is not supported"));
        }
        if cx.int("ceil_mode", 0)? != 0 {
            return Err(cx.err("attribute `ceil_mode` = 1 is not supported"));
        }
        match cx.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("VALID") => {}
            Some(o) => return Err(cx.err(format!("attribute `auto_pad` = {o:?} is not supported"))),
        }
        let (id, shape) = self.time_in(cx, 0)?;
        if shape.len() != 3 {
            return Err(cx.err("only 1-D pooling over [1, channels, time] is supported"));
        }
        let k = cx.one("kernel_shape", 0)?;
        let stride = cx.one("strides", 1)?;
        let dilation = cx.one("dilations", 1)?;
        if k == 0 || stride == 0 || dilation == 0 {
            return Err(cx.err("kernel, stride and dilation must be positive"));
        }
        let (pad_left, pad_right) = cx.pads()?;
        let kind = if max {
            PoolKind::Max
        } else {
            PoolKind::Avg {
                count_include_pad: cx.int("count_include_pad", 0)? != 0,
            }
        };
        let c = channels_of(&shape);
        let nid = self.push(
            cx,
            Op::Pool(Pool {
                kind,
                k,
                stride,
                dilation,
                pad_left,
                pad_right,
            }),
            vec![id],
            Kind::Time { channels: c },
        );
        Ok(vec![Val::Time { id: nid, shape }])
    }

    fn reduce(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["axes", "keepdims", "noop_with_empty_axes"])?;
        let r = if cx.node.op_type == "ReduceMax" {
            Reduce::Max
        } else {
            Reduce::Mean
        };
        let keep = cx.int("keepdims", 1)? != 0;
        let axes = match self.konst(cx, 1, "axes")? {
            Some(a) => a.ints(),
            None => cx.ints("axes")?.unwrap_or_default(),
        };
        let x = self.need(cx, 0)?;
        let (id, shape, is_time) = match x {
            Val::Time { id, shape } => (id, shape, true),
            Val::Vector { id, shape } => (id, shape, false),
            Val::Const(_) => unreachable!("constants are folded"),
        };
        let rank = shape.len();
        let axes: Vec<usize> = if axes.is_empty() {
            (0..rank).collect()
        } else {
            axes.iter()
                .map(|&a| {
                    norm_axis(a, rank).ok_or_else(|| cx.err(format!("axis {a} out of range")))
                })
                .collect::<Result<_, _>>()?
        };
        // Every reduced axis other than time must have size 1.
        let ta = if is_time {
            time_axis(&shape)
        } else {
            usize::MAX
        };
        for &a in &axes {
            if a != ta && shape[a] != Some(1) {
                return Err(cx.err(format!("reducing axis {a} (size {:?}) is not supported: only the time axis and size-1 axes", shape[a])));
            }
        }
        let out_shape: Vec<Option<usize>> = shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| {
                if axes.contains(&i) {
                    keep.then_some(Some(1))
                } else {
                    Some(d)
                }
            })
            .collect();
        if is_time && axes.contains(&ta) {
            let c = channels_of(&shape);
            let nid = self.push(
                cx,
                Op::GlobalPool(r),
                vec![id],
                Kind::Vector { len: Some(c) },
            );
            Ok(vec![Val::Vector {
                id: nid,
                shape: out_shape,
            }])
        } else if is_time {
            Ok(vec![Val::Time {
                id,
                shape: out_shape,
            }])
        } else {
            Ok(vec![Val::Vector {
                id,
                shape: out_shape,
            }])
        }
    }

    fn pad(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["mode", "pads", "value"])?;
        match cx.string("mode")?.as_deref() {
            None | Some("constant") => {}
            Some(m) => {
                return Err(cx.err(format!(
                    "attribute `mode` = {m:?} is not supported (only constant padding)"
                )))
            }
        }
        let (id, shape) = self.time_in(cx, 0)?;
        let rank = shape.len();
        let pads = match self.konst(cx, 1, "pads")? {
            Some(p) => p.ints(),
            None => cx.ints("pads")?.ok_or_else(|| cx.err("pads are missing"))?,
        };
        let value = match self.konst(cx, 2, "constant_value")? {
            Some(v) => v.data.first().copied().unwrap_or(0.0) as f32,
            None => cx.float("value", 0.0)?,
        };
        let axes: Vec<usize> = match self.konst(cx, 3, "axes")? {
            Some(a) => a
                .ints()
                .iter()
                .map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err("axis out of range")))
                .collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(cx.err(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let ta = time_axis(&shape);
        let (mut left, mut right) = (0usize, 0usize);
        for (i, &a) in axes.iter().enumerate() {
            let (b, e) = (pads[i], pads[i + axes.len()]);
            if a == ta {
                if b < 0 || e < 0 {
                    return Err(cx.err("negative pads are not supported"));
                }
                left = b as usize;
                right = e as usize;
            } else if b != 0 || e != 0 {
                return Err(cx.err(format!(
                    "padding axis {a} is not supported: only the time axis"
                )));
            }
        }
        let c = channels_of(&shape);
        let nid = self.push(
            cx,
            Op::Pad { left, right, value },
            vec![id],
            Kind::Time { channels: c },
        );
        Ok(vec![Val::Time { id: nid, shape }])
    }

    fn slice(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&[])?;
        let (id, shape) = self.time_in(cx, 0)?;
        let rank = shape.len();
        let c = |i, w| {
            self.konst(cx, i, w)
                .and_then(|c| c.ok_or_else(|| cx.err(format!("{w} is missing"))))
        };
        let starts = c(1, "starts")?.ints();
        let ends = c(2, "ends")?.ints();
        let axes: Vec<usize> = match self.konst(cx, 3, "axes")? {
            Some(a) => a
                .ints()
                .iter()
                .map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err("axis out of range")))
                .collect::<Result<_, _>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps = self
            .konst(cx, 4, "steps")?
            .map(|s| s.ints())
            .unwrap_or_else(|| vec![1; axes.len()]);
        let ta = time_axis(&shape);
        let (mut left, mut right) = (0usize, 0usize);
        for (i, &a) in axes.iter().enumerate() {
            let (s, e, st) = (starts[i], ends[i], steps.get(i).copied().unwrap_or(1));
            if a == ta {
                if st != 1 {
                    return Err(cx.err("slicing time with a step other than 1 is not supported"));
                }
                if s < 0 {
                    return Err(cx.err("slicing time from a negative start is not supported"));
                }
                left = s as usize;
                right = if e < 0 {
                    (-e) as usize
                } else if e >= i64::MAX / 4 {
                    0
                } else {
                    return Err(cx.err("slicing time to a fixed end is not supported (use an end relative to the end)"));
                };
            } else {
                let full = shape[a].unwrap_or(1) as i64;
                if !(s == 0 && (e >= full || e == i64::MAX) && st == 1) {
                    return Err(cx.err(format!(
                        "slicing axis {a} is not supported: only the time axis"
                    )));
                }
            }
        }
        let ch = channels_of(&shape);
        let nid = self.push(
            cx,
            Op::Crop { left, right },
            vec![id],
            Kind::Time { channels: ch },
        );
        Ok(vec![Val::Time { id: nid, shape }])
    }

    fn concat(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["axis"])?;
        let axis = cx.int("axis", 1)?;
        let mut ids = vec![];
        let mut total = 0;
        let mut shape0 = None;
        for i in 0..cx.node.input.len() {
            let (id, shape) = self.time_in(cx, i)?;
            if shape.len() != 3 || norm_axis(axis, 3) != Some(1) {
                return Err(cx.err(format!("only concatenation over channels (axis 1 of [1, C, T]) is supported, not axis {axis}")));
            }
            total += channels_of(&shape);
            ids.push(id);
            shape0.get_or_insert(shape);
        }
        let nid = self.push(cx, Op::Concat, ids, Kind::Time { channels: total });
        Ok(vec![Val::Time {
            id: nid,
            shape: vec![Some(1), Some(total), None],
        }])
    }

    fn softmax(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["axis"])?;
        let x = self.need(cx, 0)?;
        match &x {
            Val::Time { shape, .. } => {
                let axis = cx.int("axis", -1)?;
                let a = norm_axis(axis, shape.len()).ok_or_else(|| cx.err("axis out of range"))?;
                if a == time_axis(shape)
                    || shape
                        .iter()
                        .enumerate()
                        .any(|(i, &d)| i != a && i != time_axis(shape) && d != Some(1))
                {
                    return Err(cx.err(format!(
                        "softmax over axis {axis} is not supported: only over channels"
                    )));
                }
            }
            Val::Vector { shape, .. } => {
                let axis = cx.int("axis", -1)?;
                let a = norm_axis(axis, shape.len()).ok_or_else(|| cx.err("axis out of range"))?;
                if shape
                    .iter()
                    .enumerate()
                    .any(|(i, &d)| i != a && d != Some(1))
                {
                    return Err(cx.err(format!("softmax over axis {axis} of shape {shape:?} is not supported: only over all values")));
                }
            }
            Val::Const(_) => unreachable!("constants are folded"),
        }
        self.same_kind(cx, x, Op::Softmax)
    }

    fn flatten(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["axis"])?;
        let axis = cx.int("axis", 1)?;
        match self.need(cx, 0)? {
            Val::Time { id, shape } => {
                if norm_axis(axis, shape.len()) != Some(1) {
                    return Err(cx.err(format!(
                        "attribute `axis` = {axis} is not supported (only 1)"
                    )));
                }
                let nid = self.push(cx, Op::Flatten, vec![id], Kind::Vector { len: None });
                Ok(vec![Val::Vector {
                    id: nid,
                    shape: vec![Some(1), None],
                }])
            }
            Val::Vector { id, shape } => {
                let a = norm_axis(axis, shape.len()).unwrap_or(1);
                let lead: usize = shape[..a].iter().map(|d| d.unwrap_or(1)).product();
                if lead != 1 {
                    return Err(
                        cx.err("flattening with a leading size other than 1 is not supported")
                    );
                }
                let len = match self.nodes[id].kind {
                    Kind::Vector { len } => len,
                    _ => None,
                };
                Ok(vec![Val::Vector {
                    id,
                    shape: vec![Some(1), len],
                }])
            }
            Val::Const(_) => unreachable!("constants are folded"),
        }
    }

    fn reshape(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        let op = cx.node.op_type.as_str();
        cx.only(&["axes", "allowzero"])?;
        let x = self.need(cx, 0)?;
        let (id, shape, is_time) = match x {
            Val::Time { id, shape } => (id, shape, true),
            Val::Vector { id, shape } => (id, shape, false),
            Val::Const(_) => unreachable!("constants are folded"),
        };
        let rank = shape.len();
        let new: Vec<Option<usize>> = if op == "Reshape" {
            let target = self
                .konst(cx, 1, "shape")?
                .ok_or_else(|| cx.err("shape is missing"))?
                .ints();
            let allowzero = cx.int("allowzero", 0)? != 0;
            let mut out = vec![];
            let mut infer = None;
            for (i, &t) in target.iter().enumerate() {
                match t {
                    0 if !allowzero => out.push(
                        *shape
                            .get(i)
                            .ok_or_else(|| cx.err("0 in shape beyond the input rank"))?,
                    ),
                    -1 => {
                        infer = Some(i);
                        out.push(None)
                    }
                    t if t > 0 => out.push(Some(t as usize)),
                    t => return Err(cx.err(format!("shape value {t} is invalid"))),
                }
            }
            if let Some(i) = infer {
                let known_in: Option<usize> =
                    shape.iter().try_fold(1usize, |a, d| d.map(|d| a * d));
                let known_out: usize = out.iter().map(|d| d.unwrap_or(1)).product();
                if let Some(n) = known_in {
                    if known_out == 0 || n % known_out != 0 {
                        return Err(cx.err(format!("cannot reshape {shape:?} to {target:?}")));
                    }
                    out[i] = Some(n / known_out);
                } else if is_time && i + 1 != out.len() {
                    return Err(cx.err(format!("reshape {target:?} would move the time axis")));
                }
            }
            out
        } else {
            let axes = match self.konst(cx, 1, "axes")? {
                Some(a) => a.ints(),
                None => cx.ints("axes")?.unwrap_or_default(),
            };
            if op == "Squeeze" {
                let ax: Vec<usize> = if axes.is_empty() {
                    (0..rank).filter(|&i| shape[i] == Some(1)).collect()
                } else {
                    axes.iter()
                        .map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err("axis out of range")))
                        .collect::<Result<_, _>>()?
                };
                for &a in &ax {
                    if shape[a] != Some(1) {
                        return Err(
                            cx.err(format!("cannot squeeze axis {a} of size {:?}", shape[a]))
                        );
                    }
                }
                shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            } else {
                let r = rank + axes.len();
                let ax: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(a, r).ok_or_else(|| cx.err("axis out of range")))
                    .collect::<Result<_, _>>()?;
                let mut it = shape.iter();
                (0..r)
                    .map(|i| {
                        if ax.contains(&i) {
                            Some(1)
                        } else {
                            it.next().copied().flatten()
                        }
                    })
                    .collect()
            }
        };
        if is_time {
            // The layout stays [channels..., time, 1...]: the time axis keeps its place after all channel dims.
            let ta = time_axis(&new);
            if ta == new.len()
                || new[ta + 1..].iter().any(|&d| d != Some(1))
                || new.first() != Some(&Some(1))
            {
                return Err(cx.err(format!(
                    "{shape:?} → {new:?} moves the time axis or the batch, which is not supported"
                )));
            }
            if channels_of(&new) != channels_of(&shape) {
                return Err(cx.err(format!("{shape:?} → {new:?} changes the channel count")));
            }
            Ok(vec![Val::Time { id, shape: new }])
        } else {
            Ok(vec![Val::Vector { id, shape: new }])
        }
    }

    fn transpose(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["perm"])?;
        let x = self.need(cx, 0)?;
        let (id, shape, is_time) = match x {
            Val::Time { id, shape } => (id, shape, true),
            Val::Vector { id, shape } => (id, shape, false),
            Val::Const(_) => unreachable!("constants are folded"),
        };
        let perm: Vec<usize> = match cx.ints("perm")? {
            Some(p) => p
                .iter()
                .map(|&a| norm_axis(a, shape.len()).ok_or_else(|| cx.err("bad perm")))
                .collect::<Result<_, _>>()?,
            None => (0..shape.len()).rev().collect(),
        };
        let new: Vec<Option<usize>> = perm.iter().map(|&p| shape[p]).collect();
        // Only permutations that keep the order of the axes larger than 1 (and time) are layout-free.
        let big = |s: &[Option<usize>], p: &[usize]| -> Vec<usize> {
            p.iter().copied().filter(|&i| s[i] != Some(1)).collect()
        };
        let order = big(&shape, &perm);
        if order.windows(2).any(|w| w[0] > w[1]) {
            return Err(cx.err(format!("attribute `perm` = {perm:?} moves data (only transposes that move size-1 axes are supported)")));
        }
        Ok(vec![if is_time {
            Val::Time { id, shape: new }
        } else {
            Val::Vector { id, shape: new }
        }])
    }

    fn dense_in(&self, cx: &Ctx) -> Result<(NodeId, Option<usize>), String> {
        match self.need(cx, 0)? {
            Val::Vector { id, shape } => {
                let lead: usize = shape[..shape.len().saturating_sub(1)].iter().map(|d| d.unwrap_or(1)).product();
                if lead != 1 {
                    return Err(cx.err(format!("input shape {shape:?}: only one row (batch 1) is supported")));
                }
                let len = match self.nodes[id].kind {
                    Kind::Vector { len } => len,
                    _ => None,
                };
                Ok((id, len))
            }
            Val::Time { .. } => Err(cx.err("a matrix product over a time tensor is not supported (flatten or pool the time axis first, or use a 1×1 Conv)")),
            Val::Const(_) => Err(cx.err("constant input")),
        }
    }

    fn gemm(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&["alpha", "beta", "transA", "transB"])?;
        if cx.int("transA", 0)? != 0 {
            return Err(cx.err("attribute `transA` = 1 is not supported"));
        }
        let tb = cx.int("transB", 0)? != 0;
        let alpha = cx.float("alpha", 1.0)?;
        let beta = cx.float("beta", 1.0)?;
        let (id, len) = self.dense_in(cx)?;
        let b = self
            .konst(cx, 1, "B")?
            .ok_or_else(|| cx.err("B is missing"))?;
        if b.dims.len() != 2 {
            return Err(cx.err("B must be a matrix"));
        }
        let (k, n) = if tb {
            (b.dims[1], b.dims[0])
        } else {
            (b.dims[0], b.dims[1])
        };
        if let Some(l) = len {
            if l != k {
                return Err(cx.err(format!("input has {l} values, B expects {k}")));
            }
        }
        let mut weight = vec![0.0f32; k * n];
        for i in 0..k {
            for o in 0..n {
                let v = if tb {
                    b.data[o * k + i]
                } else {
                    b.data[i * n + o]
                };
                weight[i * n + o] = (v * alpha as f64) as f32;
            }
        }
        let bias = match self.konst(cx, 2, "C")? {
            Some(c) if c.numel() == n => c.data.iter().map(|&v| (v * beta as f64) as f32).collect(),
            Some(c) if c.numel() == 1 => vec![(c.data[0] * beta as f64) as f32; n],
            Some(c) => {
                return Err(cx.err(format!("C of shape {:?} does not broadcast to {n}", c.dims)))
            }
            None => vec![0.0; n],
        };
        self.dense(cx, id, k, n, weight, bias)
    }

    fn matmul(&mut self, cx: &Ctx) -> Result<Vec<Val>, String> {
        cx.only(&[])?;
        let (id, len) = self.dense_in(cx)?;
        let b = self
            .konst(cx, 1, "B")?
            .ok_or_else(|| cx.err("the second input must be a constant matrix"))?;
        if b.dims.len() != 2 {
            return Err(cx.err("B must be a matrix"));
        }
        let (k, n) = (b.dims[0], b.dims[1]);
        if let Some(l) = len {
            if l != k {
                return Err(cx.err(format!("input has {l} values, B expects {k}")));
            }
        }
        self.dense(cx, id, k, n, b.f32s(), vec![0.0; n])
    }

    fn dense(
        &mut self,
        cx: &Ctx,
        id: NodeId,
        k: usize,
        n: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Vec<Val>, String> {
        let nid = self.push(
            cx,
            Op::Dense {
                n_in: k,
                n_out: n,
                weight,
                bias,
                int8: None,
            },
            vec![id],
            Kind::Vector { len: Some(n) },
        );
        Ok(vec![Val::Vector {
            id: nid,
            shape: vec![Some(1), Some(n)],
        }])
    }
}

/// Resolve a Reshape target (with 0 and -1) against a known input shape.
fn resolve_shape(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let n: usize = input.iter().product();
    let mut out = vec![];
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 if !allowzero => out.push(*input.get(i).ok_or("0 beyond the input rank")?),
            -1 => {
                infer = Some(i);
                out.push(1)
            }
            t if t >= 0 => out.push(t as usize),
            t => return Err(format!("shape value {t} is invalid")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = n / known;
    } else if known != n {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}

/// Fold per-channel affine nodes (BatchNormalization) into the convolution that feeds them when nothing else
/// reads the convolution's output; the affine node becomes an identity.
fn fold_affine(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Op::Affine { scale, shift } = g.nodes[i].op.clone() else {
            continue;
        };
        let src = g.nodes[i].inputs[0];
        if g.uses(src) != 1 {
            continue;
        }
        let Op::Conv(conv) = &mut g.nodes[src].op else {
            continue;
        };
        let c = conv.cout;
        if scale.len() != c && scale.len() != 1 {
            continue;
        }
        let sc = |o: usize| if scale.len() == 1 { scale[0] } else { scale[o] };
        let sh = |o: usize| if shift.len() == 1 { shift[0] } else { shift[o] };
        for (idx, w) in conv.weight.iter_mut().enumerate() {
            *w *= sc(idx % c);
        }
        for (o, b) in conv.bias.iter_mut().enumerate() {
            *b = *b * sc(o) + sh(o);
        }
        g.nodes[i].op = Op::Unary(Unary::Identity);
        redirect(g, i, src);
    }
}

/// Make every reader of node `from` read node `to` instead (`from` is then dead).
fn redirect(g: &mut Graph, from: NodeId, to: NodeId) {
    for n in g.nodes.iter_mut() {
        for x in n.inputs.iter_mut() {
            if *x == from {
                *x = to;
            }
        }
        if let Op::Binary(_, a, b) = &mut n.op {
            for o in [a, b] {
                if let Operand::Node(x) | Operand::Broadcast(x) = o {
                    if *x == from {
                        *x = to;
                    }
                }
            }
        }
    }
    if g.output == from {
        g.output = to;
    }
}

/// Turn node `i` into `op` over `x` and drop the nodes of the pattern it replaces (each was read only inside it):
/// they become identities of the input, which nothing reads, so the planner skips them.
fn replace_pattern(g: &mut Graph, i: NodeId, op: Op, x: NodeId, dropped: &[NodeId]) {
    g.nodes[i].op = op;
    g.nodes[i].inputs = vec![x];
    for &d in dropped {
        g.nodes[d].op = Op::Unary(Unary::Identity);
        g.nodes[d].inputs = vec![0];
        g.nodes[d].kind = g.nodes[0].kind;
    }
}

/// The operands of a binary node as (node, constant) when one side is a graph value and the other a constant.
fn node_and_const(op: &Op, want: BinOp) -> Option<(NodeId, &[f32])> {
    match op {
        Op::Binary(b, Operand::Node(x), Operand::Const(c))
        | Op::Binary(b, Operand::Const(c), Operand::Node(x))
            if *b == want
                && !(want == BinOp::Div && matches!(op, Op::Binary(_, Operand::Const(_), _))) =>
        {
            Some((*x, c.as_slice()))
        }
        _ => None,
    }
}

/// A constant whose values (one, or one per channel) are all within `rel` of `want`.
fn is_scalar(c: &[f32], want: f32, rel: f32) -> bool {
    !c.is_empty() && c.iter().all(|&v| (v - want).abs() <= rel * want.abs())
}

/// `Mul(x, Sigmoid(x))` (either order, the sigmoid read by nothing else) → one SiLU node.
fn fuse_silu(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Op::Binary(BinOp::Mul, Operand::Node(a), Operand::Node(b)) = g.nodes[i].op else {
            continue;
        };
        for (x, s) in [(a, b), (b, a)] {
            let is_sigmoid_of_x =
                g.nodes[s].op == Op::Unary(Unary::Sigmoid) && g.nodes[s].inputs.first() == Some(&x);
            if is_sigmoid_of_x && g.uses(s) == 1 && g.nodes[i].kind == g.nodes[x].kind {
                replace_pattern(g, i, Op::Unary(Unary::Silu), x, &[s]);
                break;
            }
        }
    }
}

/// The exact GELU as exporters decompose it, `x · (1 + erf(x / √2)) · 0.5` with the two products in either
/// association and order (and `x · (1/√2)` for the division), → one GELU node.
fn fuse_gelu(g: &mut Graph) {
    const REL: f32 = 1e-5;
    for i in 0..g.nodes.len() {
        let Op::Binary(BinOp::Mul, ..) = g.nodes[i].op else {
            continue;
        };
        // The factors of the product: this Mul and at most one Mul under it read only here.
        let mut factors: Vec<Operand> = Vec::new();
        let mut inner = Vec::new();
        if let Op::Binary(BinOp::Mul, a, b) = &g.nodes[i].op {
            for o in [a, b] {
                match o {
                    Operand::Node(n)
                        if matches!(g.nodes[*n].op, Op::Binary(BinOp::Mul, ..))
                            && g.uses(*n) == 1 =>
                    {
                        if let Op::Binary(BinOp::Mul, c, d) = &g.nodes[*n].op {
                            factors.push(c.clone());
                            factors.push(d.clone());
                            inner.push(*n);
                        }
                    }
                    o => factors.push(o.clone()),
                }
            }
        }
        if factors.len() != 3 || inner.len() != 1 {
            continue;
        }
        let half = factors
            .iter()
            .position(|f| matches!(f, Operand::Const(c) if is_scalar(c, 0.5, REL)));
        let Some(half) = half else { continue };
        factors.remove(half);
        let nodes: Vec<NodeId> = factors
            .iter()
            .filter_map(|f| match f {
                Operand::Node(n) => Some(*n),
                _ => None,
            })
            .collect();
        if nodes.len() != 2 {
            continue;
        }
        let found = [(nodes[0], nodes[1]), (nodes[1], nodes[0])]
            .into_iter()
            .find_map(|(x, add)| {
                let (e, one) = node_and_const(&g.nodes[add].op, BinOp::Add)?;
                if !is_scalar(one, 1.0, REL) || g.nodes[e].op != Op::Unary(Unary::Erf) {
                    return None;
                }
                let d = g.nodes[e].inputs[0];
                let scaled = match node_and_const(&g.nodes[d].op, BinOp::Div) {
                    Some((dx, c)) => dx == x && is_scalar(c, std::f32::consts::SQRT_2, REL),
                    None => matches!(node_and_const(&g.nodes[d].op, BinOp::Mul),
                        Some((dx, c)) if dx == x && is_scalar(c, std::f32::consts::FRAC_1_SQRT_2, REL)),
                };
                let single = [add, e, d].iter().all(|&n| g.uses(n) == 1);
                (scaled && single && g.nodes[x].kind == g.nodes[i].kind).then_some((x, [add, e, d]))
            });
        if let Some((x, [add, e, d])) = found {
            replace_pattern(
                g,
                i,
                Op::Unary(Unary::Gelu { tanh: false }),
                x,
                &[inner[0], add, e, d],
            );
        }
    }
}

/// Fuse an elementwise activation into the convolution before it when nothing else reads the convolution.
fn fold_activation(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Op::Unary(u) = g.nodes[i].op else {
            continue;
        };
        if u == Unary::Identity || g.uses(i) == 0 {
            continue;
        }
        let src = g.nodes[i].inputs[0];
        if g.uses(src) != 1 {
            continue;
        }
        let Op::Conv(conv) = &mut g.nodes[src].op else {
            continue;
        };
        if conv.act.is_some() {
            continue;
        }
        conv.act = Some(u);
        g.nodes[i].op = Op::Unary(Unary::Identity);
        redirect(g, i, src);
    }
}

/// Merge constant zero `Pad` nodes into the convolution that reads them (when nothing else does): the
/// convolution's own zero padding is the same thing and saves a copy of the tensor.
fn fold_pad(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Op::Conv(_) = &g.nodes[i].op else {
            continue;
        };
        let src = g.nodes[i].inputs[0];
        let Op::Pad { left, right, value } = g.nodes[src].op else {
            continue;
        };
        if value != 0.0 || g.uses(src) != 1 {
            continue;
        }
        let pad_in = g.nodes[src].inputs[0];
        if let Op::Conv(conv) = &mut g.nodes[i].op {
            conv.pad_left += left;
            conv.pad_right += right;
        }
        g.nodes[i].inputs[0] = pad_in;
        // The Pad node is now unused; leave it as a harmless identity the planner skips (not live).
        g.nodes[src].op = Op::Unary(Unary::Identity);
        g.nodes[src].inputs = vec![pad_in];
    }
}
