//! `kind = "jsonl"`: one JSON object per event per line, to standard output or a file.

use super::Sink;
use crate::error::{Error, Result};
use crate::event::Event;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes events as JSON lines.
pub struct JsonlSink {
    out: Box<dyn Write + Send>,
    /// File name for messages (`-` for standard output).
    name: PathBuf,
    flush_each: bool,
}

impl JsonlSink {
    /// Standard output when `path` is `None` or `-`, else a new file (truncated). `flush_each` defaults to true
    /// for standard output and false for files.
    pub fn create(path: Option<&Path>, flush_each: Option<bool>) -> Result<Self> {
        match path {
            None => Ok(Self::stdout(flush_each)),
            Some(p) if p.as_os_str() == "-" => Ok(Self::stdout(flush_each)),
            Some(p) => {
                let f = std::fs::File::create(p)
                    .map_err(|e| Error::file(p, format!("cannot create: {e}")))?;
                Ok(JsonlSink {
                    out: Box::new(BufWriter::new(f)),
                    name: p.to_path_buf(),
                    flush_each: flush_each.unwrap_or(false),
                })
            }
        }
    }

    fn stdout(flush_each: Option<bool>) -> Self {
        JsonlSink {
            out: Box::new(BufWriter::new(std::io::stdout())),
            name: PathBuf::from("-"),
            flush_each: flush_each.unwrap_or(true),
        }
    }

    /// A sink writing into any writer (e.g. a buffer in tests).
    pub fn to_writer(out: Box<dyn Write + Send>, flush_each: bool) -> Self {
        JsonlSink {
            out,
            name: PathBuf::from("(writer)"),
            flush_each,
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> Error {
        Error::file(&self.name, format!("cannot write: {e}"))
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, event).map_err(|e| self.fail(e))?;
        self.out.write_all(b"\n").map_err(|e| self.fail(e))?;
        if self.flush_each {
            self.out.flush().map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.fail(e))
    }
}
