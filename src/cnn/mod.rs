//! Streaming CNN engine: IR, ONNX import, full-window and streaming executors, the `cnn` stage.
//!
//! A model is imported from ONNX ([`import`]) into a small IR ([`ir`]), planned for a window and hop ([`plan`]),
//! and run by [`exec::Engine`], either on whole windows or streaming: each hop computes only the new frames of every
//! layer plus the frames near the window edges that zero padding makes different, so the result equals the
//! full-window run.

pub mod exec;
pub mod import;
pub mod int8;
pub mod ir;
pub mod npy;
pub mod onnx_proto;
pub mod plan;

pub use exec::{Engine, Mode};
pub use int8::WeightFormat;
pub use ir::Graph;
pub use plan::Plan;
pub mod cli;
pub mod stage;
