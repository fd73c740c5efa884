//! ONNX Runtime (ort) stage for stateful models we do not compile ourselves (e.g. Silero VAD).
