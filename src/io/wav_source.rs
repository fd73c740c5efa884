//! `kind = "wav"`: a WAV file through hound (PCM 8/16/24/32-bit integer, 32-bit float; any rate and channels),
//! as fast as possible (waits for room, loses nothing) or paced like a live device (drops and counts).

use super::frames::ChannelPick;
use super::ring::{push_live, push_wait, Pacer};
use super::{Source, SourceControl, SourceHandle};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a WAV file holds, checked to be readable by [`WavFileSource`].
#[derive(Debug, Clone)]
pub struct WavInfo {
    pub path: PathBuf,
    pub spec: hound::WavSpec,
    /// Frames (samples per channel) in the data chunk.
    pub frames: u64,
}

/// Turn a hound error into the reason part of a one-line message.
pub(crate) fn hound_reason(e: &hound::Error) -> String {
    match e {
        // hound reports a short read as `Other` with this text.
        hound::Error::IoError(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof
                || io.to_string().contains("enough bytes") =>
        {
            "truncated: the file ends inside its header or sample data".into()
        }
        hound::Error::IoError(io) => format!("read error: {io}"),
        hound::Error::FormatError(m) => format!("not a valid WAV file: {m}"),
        hound::Error::Unsupported => {
            "unsupported WAV encoding: only PCM integer and IEEE float samples are supported \
             (not A-law, mu-law, ADPCM or other compressed formats)"
                .into()
        }
        other => format!("cannot decode: {other}"),
    }
}

impl WavInfo {
    /// Read and check the header of `path`: a WAV file hound can decode, in a supported sample format, whose data
    /// chunk is complete.
    pub fn probe(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot stat: {e}")))?
            .len();
        let reader = hound::WavReader::new(BufReader::new(file))
            .map_err(|e| Error::file(path, hound_reason(&e)))?;
        let spec = reader.spec();
        let frames = reader.duration() as u64;
        // The reader stops right after the data chunk's header, whose last four bytes are the chunk length.
        let mut r = reader.into_inner();
        let data_start = r
            .stream_position()
            .map_err(|e| Error::file(path, format!("read error: {e}")))?;
        let mut len_bytes = [0u8; 4];
        r.seek(SeekFrom::Start(data_start.saturating_sub(4)))
            .and_then(|_| r.read_exact(&mut len_bytes))
            .map_err(|e| Error::file(path, format!("read error: {e}")))?;
        let data_len = u32::from_le_bytes(len_bytes);
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 8 | 16 | 24 | 32) | (hound::SampleFormat::Float, 32) => {}
            (fmt, bits) => {
                return Err(Error::file(
                    path,
                    format!(
                        "unsupported WAV sample format: {bits}-bit {}; supported are 8/16/24/32-bit PCM and \
                         32-bit float",
                        if fmt == hound::SampleFormat::Float { "float" } else { "integer" }
                    ),
                ))
            }
        }
        if spec.sample_rate == 0 {
            return Err(Error::file(path, "not a valid WAV file: sample rate is 0"));
        }
        let available = file_len.saturating_sub(data_start);
        if (data_len as u64) > available {
            return Err(Error::file(
                path,
                format!(
                    "truncated: the data chunk declares {data_len} bytes but only {available} follow the header"
                ),
            ));
        }
        Ok(WavInfo {
            path: path.to_path_buf(),
            spec,
            frames,
        })
    }
}

/// A WAV file source.
pub struct WavFileSource {
    info: WavInfo,
    pick: ChannelPick,
    realtime: bool,
}

impl WavFileSource {
    /// Check the file and the channel choice.
    pub fn open(path: &Path, channel: Option<u16>, realtime: bool) -> Result<Self> {
        let info = WavInfo::probe(path)?;
        let pick = ChannelPick::new(channel, info.spec.channels as usize)
            .map_err(|m| Error::file(path, m))?;
        Ok(WavFileSource {
            info,
            pick,
            realtime,
        })
    }

    pub fn info(&self) -> &WavInfo {
        &self.info
    }
}

impl Source for WavFileSource {
    fn rate(&self) -> u32 {
        self.info.spec.sample_rate
    }

    fn is_live(&self) -> bool {
        self.realtime
    }

    fn start(
        self: Box<Self>,
        ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle> {
        let reader = hound::WavReader::open(&self.info.path)
            .map_err(|e| Error::file(&self.info.path, hound_reason(&e)))?;
        let thread = std::thread::Builder::new()
            .name("sigflow-wav".into())
            .spawn(move || {
                let r = run(*self, reader, ring, &ctl);
                ctl.finished.store(true, Ordering::Release);
                r
            })
            .map_err(|e| Error::io("starting the wav source thread", e))?;
        Ok(SourceHandle {
            thread: Some(thread),
        })
    }
}

fn run(
    src: WavFileSource,
    mut reader: hound::WavReader<BufReader<File>>,
    mut ring: rtrb::Producer<f32>,
    ctl: &SourceControl,
) -> Result<()> {
    let spec = src.info.spec;
    let channels = spec.channels as usize;
    let block = (spec.sample_rate as usize / 100).max(1); // 10 ms
    let mut mono: Vec<f32> = Vec::with_capacity(block);
    let mut frame: Vec<f32> = vec![0.0; channels];
    let mut pacer = Pacer::new(spec.sample_rate);
    let scale = match spec.sample_format {
        hound::SampleFormat::Int => 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32,
        hound::SampleFormat::Float => 1.0,
    };
    let path = &src.info.path;
    let mut samples: Box<dyn Iterator<Item = hound::Result<f32>> + '_> = match spec.sample_format {
        hound::SampleFormat::Int => Box::new(
            reader
                .samples::<i32>()
                .map(move |s| s.map(|v| v as f32 * scale)),
        ),
        hound::SampleFormat::Float => Box::new(reader.samples::<f32>()),
    };
    let mut frames_read: u64 = 0;
    loop {
        mono.clear();
        let mut eof = false;
        while mono.len() < block {
            for (c, slot) in frame.iter_mut().enumerate() {
                match samples.next() {
                    Some(Ok(v)) => *slot = v,
                    Some(Err(e)) => {
                        return Err(Error::file(
                            path,
                            format!("{} (at frame {})", hound_reason(&e), frames_read),
                        ))
                    }
                    None if c == 0 => {
                        eof = true;
                        break;
                    }
                    None => {
                        return Err(Error::file(
                            path,
                            format!(
                                "truncated: the last frame is incomplete (frame {frames_read})"
                            ),
                        ))
                    }
                }
            }
            if eof {
                break;
            }
            mono.push(src.pick.mono(&frame, |x| x));
            frames_read += 1;
        }
        if !mono.is_empty() {
            if src.realtime {
                if !pacer.wait(mono.len(), ctl) {
                    return Ok(());
                }
                push_live(&mut ring, mono.len(), mono.iter().copied(), ctl);
            } else if !push_wait(&mut ring, &mono, ctl) {
                return Ok(());
            }
        }
        if eof || ctl.stop_requested() {
            return Ok(());
        }
    }
}
