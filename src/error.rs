//! The crate-wide error type: every variant names the file and the place where it can.

use std::path::PathBuf;

/// Errors sigflow reports to the user. Each one renders as a single line naming the file and place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file could not be parsed or failed its semantic check.
    #[error("{file}:{line}:{column}: {message}")]
    Config {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An input file (WAV, ONNX, safetensors, npy …) is unreadable, truncated, corrupt or unsupported.
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    /// An audio device could not be found or opened.
    #[error("audio device: {0}")]
    Device(String),
    /// A model is malformed or uses something sigflow does not support (names node/tensor and reason).
    #[error("{0}")]
    Model(String),
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An error about a file, with a message saying what is wrong with it.
    pub fn file(file: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            file: file.into(),
            message: message.to_string(),
        }
    }

    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
