//! `kind = "wav"`: writes the `audio` events of one stage (or of the pseudo stage `input`, the source signal) to a
//! WAV file, 16-bit PCM or 32-bit float, mono.
//!
//! The file is a valid WAV after [`Sink::finish`] whatever happened: it is created up front when the rate is
//! known (`input`), otherwise at the first audio event, and as an empty file at finish if no audio came.

use super::Sink;
use crate::config::WavFormat;
use crate::dsp::resample::StreamResampler;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Writes one stage's audio to a WAV file.
pub struct WavFileSink {
    path: PathBuf,
    from: String,
    format: WavFormat,
    rate: Option<u32>,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    /// Converts audio arriving at another rate than the file's.
    resampler: Option<StreamResampler>,
    scratch: Vec<f32>,
    finished: bool,
}

impl WavFileSink {
    /// A sink for the audio events of stage `from`; `rate` known now creates the file at once.
    pub fn create(path: &Path, from: &str, format: WavFormat, rate: Option<u32>) -> Result<Self> {
        let mut s = WavFileSink {
            path: path.to_path_buf(),
            from: from.to_string(),
            format,
            rate,
            writer: None,
            resampler: None,
            scratch: Vec::new(),
            finished: false,
        };
        if let Some(r) = rate {
            s.open(r)?;
        }
        Ok(s)
    }

    fn open(&mut self, rate: u32) -> Result<()> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: match self.format {
                WavFormat::Pcm16 => 16,
                WavFormat::Float32 => 32,
            },
            sample_format: match self.format {
                WavFormat::Pcm16 => hound::SampleFormat::Int,
                WavFormat::Float32 => hound::SampleFormat::Float,
            },
        };
        let w = hound::WavWriter::create(&self.path, spec)
            .map_err(|e| Error::file(&self.path, format!("cannot create: {e}")))?;
        self.writer = Some(w);
        self.rate = Some(rate);
        Ok(())
    }

    fn write_samples(&mut self, samples: &[f32]) -> Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let r = match self.format {
            WavFormat::Pcm16 => samples
                .iter()
                .try_for_each(|&s| w.write_sample((s.clamp(-1.0, 1.0) * 32_767.0).round() as i16)),
            WavFormat::Float32 => samples.iter().try_for_each(|&s| w.write_sample(s)),
        };
        r.map_err(|e| Error::file(&self.path, format!("cannot write: {e}")))
    }
}

impl Sink for WavFileSink {
    fn write(&mut self, event: &Event) -> Result<()> {
        let EventKind::Audio { rate, samples, .. } = &event.kind else {
            return Ok(());
        };
        if &*event.stage != self.from.as_str() {
            return Ok(());
        }
        if self.writer.is_none() {
            self.open(*rate)?;
        }
        let file_rate = self.rate.unwrap_or(*rate);
        if *rate == file_rate {
            return self.write_samples(samples);
        }
        let needs_new = self
            .resampler
            .as_ref()
            .is_none_or(|r| r.from_rate() != *rate);
        if needs_new {
            let mut tail = Vec::new();
            if let Some(r) = self.resampler.as_mut() {
                r.finish(&mut tail);
            }
            self.write_samples(&tail)?;
            self.resampler = Some(StreamResampler::new(*rate, file_rate)?);
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.process(samples, &mut out);
        }
        let res = self.write_samples(&out);
        self.scratch = out;
        res
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if let Some(mut r) = self.resampler.take() {
            let mut tail = Vec::new();
            r.finish(&mut tail);
            self.write_samples(&tail)?;
        }
        if self.writer.is_none() {
            // No audio came and the rate was never known: an empty file at the rate sigflow stages use most.
            self.open(16_000)?;
        }
        if let Some(w) = self.writer.take() {
            w.finalize()
                .map_err(|e| Error::file(&self.path, format!("cannot finish: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for WavFileSink {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.finalize();
        }
    }
}
