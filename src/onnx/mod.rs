//! ONNX Runtime (ort) for stateful models we do not compile ourselves (e.g. Silero VAD), and as the reference
//! peer in benchmarks.

pub mod runtime;
pub mod stage;
pub mod stateful;
pub mod vad;
