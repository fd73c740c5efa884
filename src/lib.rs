//! sigflow — a real-time streaming signal and speech processing daemon.
//!
//! A signal flows from a [`io::Source`] through a lock-free ring into the stream worker, which resamples and frames
//! it for each [`stage::Stage`]; stages emit [`event::Event`]s that [`io::Sink`]s consume on their own threads.
//! See `DESIGN.md`-level overview in the README.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cnn;
pub mod config;
pub mod daemon;
pub mod dsp;
pub mod error;
pub mod event;
pub mod io;
pub mod kernels;
pub mod onnx;
pub mod pipeline;
pub mod s2s;
pub mod stage;
pub mod streaming;

pub use error::{Error, Result};
pub use event::{Event, EventKind};
pub use stage::Stage;
pub use streaming::StreamingModule;
