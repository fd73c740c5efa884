//! int8 weights for an imported model: symmetric per-output-channel quantisation of every convolution and dense
//! layer, done once at load time ([`quantize`]). Activations stay f32, so the streaming executor reuses frames
//! exactly as with f32 weights and int8 streaming equals the int8 full-window run.

use super::ir::{Graph, Int8Weights, Op};

/// How the weights of convolutions and dense layers are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// As in the ONNX file (after folding BatchNorm).
    #[default]
    F32,
    /// int8 per output channel with one f32 scale each.
    Int8,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(WeightFormat::F32),
            "int8" => Ok(WeightFormat::Int8),
            o => Err(format!("unknown weight format `{o}`: expected f32 or int8")),
        }
    }
}

impl clap::ValueEnum for WeightFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[WeightFormat::F32, WeightFormat::Int8]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Int8 => "int8",
        }))
    }
}

/// Quantise the weights of every convolution and dense layer of `g` (no-op for [`WeightFormat::F32`]).
/// The f32 weights are dropped: the int8 ones are all the engine keeps.
pub fn apply(g: &mut Graph, format: WeightFormat) {
    if format == WeightFormat::Int8 {
        quantize(g);
    }
}

/// Quantise the weights of every convolution and dense layer of `g`.
pub fn quantize(g: &mut Graph) {
    for n in &mut g.nodes {
        match &mut n.op {
            Op::Conv(c) if c.int8.is_none() => {
                let rows = if c.depthwise { c.k } else { c.k * c.cin };
                c.int8 = Some(Int8Weights::quantize(&c.weight, rows, c.cout));
                c.weight = vec![];
            }
            Op::Dense {
                n_in,
                n_out,
                weight,
                int8,
                ..
            } if int8.is_none() => {
                *int8 = Some(Int8Weights::quantize(weight, *n_in, *n_out));
                *weight = vec![];
            }
            _ => {}
        }
    }
}

/// Bytes of the weights of convolutions and dense layers as stored (f32: 4 per weight; int8: 1 per weight plus
/// one f32 scale per output channel). Biases are not counted (they stay f32 in both formats).
pub fn weight_bytes(g: &Graph) -> usize {
    g.nodes
        .iter()
        .map(|n| match &n.op {
            Op::Conv(c) => c
                .int8
                .as_ref()
                .map_or(4 * c.weight.len(), Int8Weights::bytes),
            Op::Dense { weight, int8, .. } => {
                int8.as_ref().map_or(4 * weight.len(), Int8Weights::bytes)
            }
            _ => 0,
        })
        .sum()
}
