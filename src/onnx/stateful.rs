//! A stateful ONNX model run chunk by chunk: each call feeds `context` samples of the previous chunk plus `chunk`
//! new samples, and the model's state outputs are fed back as its state inputs on the next call.

use crate::error::{Error, Result};
use crate::onnx::runtime;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// One state tensor carried between calls: fed as `input`, read back from `output`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    pub input: String,
    pub output: String,
    pub shape: Vec<usize>,
}

/// How a stateful model is called.
#[derive(Debug, Clone, PartialEq)]
pub struct StatefulSpec {
    /// Name of the signal input, shaped `[1, context + chunk]`.
    pub input: String,
    /// Name of the output read after each call (flattened).
    pub output: String,
    /// New samples per call.
    pub chunk: usize,
    /// Samples of the previous call prepended to each chunk (zeros before the first).
    pub context: usize,
    /// State tensors (f32, zero at start).
    pub state: Vec<StateSpec>,
    /// Constant int64 scalar inputs (e.g. the sample rate).
    pub int_inputs: Vec<(String, i64)>,
}

/// An ONNX Runtime session with its carried state.
pub struct StatefulModel {
    path: PathBuf,
    session: Session,
    spec: StatefulSpec,
    /// The last `context` samples fed.
    context: Vec<f32>,
    /// Current values of each state tensor, in `spec.state` order.
    state: Vec<Vec<f32>>,
    /// Reused input buffer: context followed by the chunk.
    frame: Vec<f32>,
    /// Rank of the signal input: 2 → `[1, n]`, 3 → `[1, 1, n]` (a one-channel 1-D CNN).
    input_rank: usize,
}

fn describe(v: &ValueType) -> String {
    format!("{v}")
}

impl StatefulModel {
    /// Load `path` (ONNX Runtime, one intra-op thread, no spinning) and check that every named input and output
    /// exists with a usable type. Errors name the file and the tensor.
    pub fn load(path: &Path, spec: StatefulSpec) -> Result<Self> {
        let env = runtime::environment()?;
        let err = |e: &dyn std::fmt::Display| Error::file(path, format!("ONNX Runtime: {e}"));
        let builder = Session::builder(&env).map_err(|e| err(&e))?;
        let builder = builder.with_intra_threads(1).map_err(|e| err(&e))?;
        let builder = builder.with_inter_threads(1).map_err(|e| err(&e))?;
        let mut builder = builder
            .with_config_entry("session.intra_op.allow_spinning", "0")
            .map_err(|e| err(&e))?;
        if !path.is_file() {
            return Err(Error::file(path, "model file does not exist"));
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| Error::file(path, format!("cannot load ONNX model: {e}")))?;
        let model = StatefulModel {
            path: path.to_path_buf(),
            context: vec![0.0; spec.context],
            state: spec
                .state
                .iter()
                .map(|s| vec![0.0; s.shape.iter().product()])
                .collect(),
            frame: Vec::with_capacity(spec.context + spec.chunk),
            input_rank: 2,
            session,
            spec,
        };
        model.check_signature()?;
        let mut model = model;
        model.input_rank = model
            .session
            .inputs()
            .iter()
            .find(|o| o.name() == model.spec.input)
            .and_then(|o| o.dtype().tensor_shape())
            .map(|s| s.len())
            .unwrap_or(2);
        if !(2..=3).contains(&model.input_rank) {
            return Err(Error::file(
                path,
                format!(
                    "signal input `{}` has rank {}, expected [1, n] or [1, 1, n]",
                    model.spec.input, model.input_rank
                ),
            ));
        }
        Ok(model)
    }

    fn check_signature(&self) -> Result<()> {
        let inputs = self.session.inputs();
        let outputs = self.session.outputs();
        let input_names: Vec<&str> = inputs.iter().map(|o| o.name()).collect();
        let output_names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
        let find_in = |name: &str, what: &str, float: bool| -> Result<()> {
            let Some(o) = inputs.iter().find(|o| o.name() == name) else {
                return Err(Error::file(
                    &self.path,
                    format!(
                        "{what} `{name}` is not an input of the model (inputs: {})",
                        input_names.join(", ")
                    ),
                ));
            };
            let want = if float {
                TensorElementType::Float32
            } else {
                TensorElementType::Int64
            };
            if o.dtype().tensor_type() != Some(want) {
                return Err(Error::file(
                    &self.path,
                    format!(
                        "input `{name}` is {}, expected a {want} tensor",
                        describe(o.dtype())
                    ),
                ));
            }
            Ok(())
        };
        let find_out = |name: &str, what: &str| -> Result<()> {
            let Some(o) = outputs.iter().find(|o| o.name() == name) else {
                return Err(Error::file(
                    &self.path,
                    format!(
                        "{what} `{name}` is not an output of the model (outputs: {})",
                        output_names.join(", ")
                    ),
                ));
            };
            if o.dtype().tensor_type() != Some(TensorElementType::Float32) {
                return Err(Error::file(
                    &self.path,
                    format!(
                        "output `{name}` is {}, expected a f32 tensor",
                        describe(o.dtype())
                    ),
                ));
            }
            Ok(())
        };
        find_in(&self.spec.input, "signal input", true)?;
        find_out(&self.spec.output, "output")?;
        for s in &self.spec.state {
            find_in(&s.input, "state input", true)?;
            find_out(&s.output, "state output")?;
            let declared = inputs
                .iter()
                .find(|o| o.name() == s.input)
                .and_then(|o| o.dtype().tensor_shape());
            if let Some(shape) = declared {
                let ok = shape.len() == s.shape.len()
                    && shape
                        .iter()
                        .zip(&s.shape)
                        .all(|(&d, &w)| d < 0 || d as usize == w);
                if !ok {
                    return Err(Error::file(
                        &self.path,
                        format!(
                            "state input `{}` has shape {:?} in the model, the config says {:?}",
                            s.input,
                            shape.iter().collect::<Vec<_>>(),
                            s.shape
                        ),
                    ));
                }
            }
        }
        for (name, _) in &self.spec.int_inputs {
            find_in(name, "constant input", false)?;
        }
        let fed: Vec<&str> = std::iter::once(self.spec.input.as_str())
            .chain(self.spec.state.iter().map(|s| s.input.as_str()))
            .chain(self.spec.int_inputs.iter().map(|(n, _)| n.as_str()))
            .collect();
        if let Some(missing) = input_names.iter().find(|n| !fed.contains(n)) {
            return Err(Error::file(
                &self.path,
                format!(
                    "model input `{missing}` is neither the signal input, a state nor a constant input"
                ),
            ));
        }
        Ok(())
    }

    /// The call specification.
    pub fn spec(&self) -> &StatefulSpec {
        &self.spec
    }

    /// Forget context and state, as if newly loaded.
    pub fn reset(&mut self) {
        self.context.iter_mut().for_each(|x| *x = 0.0);
        for s in &mut self.state {
            s.iter_mut().for_each(|x| *x = 0.0);
        }
    }

    /// Run one chunk of exactly `spec.chunk` new samples; returns the output tensor flattened into `out`.
    pub fn run(&mut self, chunk: &[f32], out: &mut Vec<f32>) -> Result<()> {
        if chunk.len() != self.spec.chunk {
            return Err(Error::Model(format!(
                "{}: a chunk must have {} samples, got {}",
                self.path.display(),
                self.spec.chunk,
                chunk.len()
            )));
        }
        let path = &self.path;
        let err = |e: ort::Error| Error::Model(format!("{}: {e}", path.display()));
        self.frame.clear();
        self.frame.extend_from_slice(&self.context);
        self.frame.extend_from_slice(chunk);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        let signal =
            Tensor::from_array(([1usize, self.frame.len()], self.frame.clone())).map_err(err)?;
        inputs.push((Cow::Borrowed(self.spec.input.as_str()), signal.into()));
        for (spec, value) in self.spec.state.iter().zip(&self.state) {
            let t = Tensor::from_array((spec.shape.clone(), value.clone())).map_err(err)?;
            inputs.push((Cow::Borrowed(spec.input.as_str()), t.into()));
        }
        for (name, v) in &self.spec.int_inputs {
            let t = Tensor::from_array(((), vec![*v])).map_err(err)?;
            inputs.push((Cow::Borrowed(name.as_str()), t.into()));
        }
        let outputs = self.session.run(inputs).map_err(err)?;
        let read = |name: &str| -> Result<&[f32]> {
            let v = outputs.get(name).ok_or_else(|| {
                Error::Model(format!("{}: output `{name}` missing", path.display()))
            })?;
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Model(format!("{}: output `{name}`: {e}", path.display())))?;
            Ok(data)
        };
        out.clear();
        out.extend_from_slice(read(&self.spec.output)?);
        for (spec, value) in self.spec.state.iter().zip(self.state.iter_mut()) {
            let data = read(&spec.output)?;
            if data.len() != value.len() {
                return Err(Error::Model(format!(
                    "{}: state output `{}` has {} values, expected {} (shape {:?})",
                    path.display(),
                    spec.output,
                    data.len(),
                    value.len(),
                    spec.shape
                )));
            }
            value.copy_from_slice(data);
        }
        let n = self.frame.len();
        let c = self.spec.context;
        self.context.copy_from_slice(&self.frame[n - c..]);
        Ok(())
    }
}
