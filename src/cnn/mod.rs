//! Streaming CNN engine: IR, ONNX import, full-window and streaming executors, the `cnn` stage.
