//! Sources (capture, wav, stdin, tcp, synth) and sinks (jsonl, wav, playback).
//!
//! A [`Source`] runs on its own thread (or, for capture, in the audio callback) and pushes mono f32 samples into
//! the lock-free ring; a [`Sink`] runs on its own thread and consumes events.

use crate::event::Event;
use crate::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Shared between a running source and the pipeline: stop request, end-of-input flag and counters.
/// Everything is atomic so the audio callback may touch it.
#[derive(Debug, Default)]
pub struct SourceControl {
    /// Set by the pipeline to ask the source to stop.
    pub stop: AtomicBool,
    /// Set by the source when its input has ended (end of file, closed connection, device error).
    pub finished: AtomicBool,
    /// Samples pushed into the ring.
    pub pushed: AtomicU64,
    /// Samples lost because the ring was full (live sources only).
    pub lost: AtomicU64,
}

impl SourceControl {
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A running source; joining it waits for its thread to end (after `stop` or end of input).
pub struct SourceHandle {
    pub thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl SourceHandle {
    /// Wait for the source thread; returns the error it ended with, if any.
    pub fn join(mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| crate::Error::Other("source thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

/// Where samples come from.
pub trait Source: Send {
    /// Rate of the samples pushed into the ring (the device's actual rate for capture).
    fn rate(&self) -> u32;
    /// Live sources drop (and count) samples when the ring is full; others wait for room.
    fn is_live(&self) -> bool;
    /// Start producing mono f32 samples into `ring` until `ctl.stop` is set or the input ends
    /// (then set `ctl.finished`).
    fn start(
        self: Box<Self>,
        ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle>;
}

/// Where events go. Each sink runs on its own thread and receives only the events routed to it.
pub trait Sink: Send {
    /// Consume one event.
    fn write(&mut self, event: &Event) -> Result<()>;
    /// Flush and close (end of stream or shutdown). Called once.
    fn finish(&mut self) -> Result<()>;
}

pub mod capture;
pub mod devices;
pub mod frames;
pub mod jsonl_sink;
pub mod playback;
pub mod raw;
pub mod ring;
pub mod synth;
pub mod wav_sink;
pub mod wav_source;

use crate::config::{ConfigFile, Key, SinkConfig, SourceConfig};
use crate::Error;
use std::path::Path;

fn source_key(key: &str) -> Vec<Key> {
    vec!["source".into(), key.into()]
}

fn sink_key(index: usize, key: &str) -> Vec<Key> {
    vec!["sink".into(), index.into(), key.into()]
}

/// Check the rate/channels/channel keys shared by the raw PCM sources.
fn raw_pick(
    cf: &ConfigFile,
    rate: u32,
    channels: u16,
    channel: Option<u16>,
) -> Result<frames::ChannelPick> {
    if rate == 0 {
        return Err(cf.error_at(&source_key("rate"), "must be positive"));
    }
    if channels == 0 {
        return Err(cf.error_at(&source_key("channels"), "must be at least 1"));
    }
    frames::ChannelPick::new(channel, channels as usize)
        .map_err(|m| cf.error_at(&source_key("channel"), m))
}

/// Build the source `cf.config.source` describes (not started). Relative paths resolve against the config's
/// directory. Errors are one line naming the file and place: the WAV file and what is wrong with it, or the
/// config key (`source.device`, `source.rate`, `source.listen` …) and the reason.
pub fn open_source(cf: &ConfigFile) -> Result<Box<dyn Source>> {
    match &cf.config.source {
        SourceConfig::Capture(c) => {
            let src = capture::CaptureSource::open(c.device.as_deref(), c.rate, c.channel)
                .map_err(|e| cf.error_at(&source_key(e.key()), e.message()))?;
            Ok(Box::new(src))
        }
        SourceConfig::Wav(w) => {
            let path = cf.resolve(&w.path);
            let source = wav_source::WavFileSource::open(&path, w.channel, w.realtime)
                .map_err(|e| cf.error_at(&source_key("path"), e))?;
            Ok(Box::new(source))
        }
        SourceConfig::Stdin(r) => {
            let pick = raw_pick(cf, r.rate, r.channels, r.channel)?;
            Ok(Box::new(raw::StdinSource::new(
                r.format, r.rate, r.channels, pick,
            )))
        }
        SourceConfig::Tcp(t) => {
            let pick = raw_pick(cf, t.rate, t.channels, t.channel)?;
            let addr =
                raw::parse_listen(&t.listen).map_err(|m| cf.error_at(&source_key("listen"), m))?;
            let src =
                raw::TcpPcmSource::bind(addr, t.format, t.rate, t.channels, pick).map_err(|e| {
                    cf.error_at(
                        &source_key("listen"),
                        format!("cannot listen on {addr}: {e}"),
                    )
                })?;
            Ok(Box::new(src))
        }
        SourceConfig::Synth(s) => {
            let src = synth::SynthSourceRunner::new(s)
                .map_err(|(k, m)| cf.error_at(&source_key(&k), m))?;
            Ok(Box::new(src))
        }
    }
}

/// Validate the source without running it: the WAV file exists and is readable in a supported format, the device
/// exists and supports the requested rate, the listen address parses, the parameters are in range.
pub fn check_source(cf: &ConfigFile) -> Result<()> {
    match &cf.config.source {
        SourceConfig::Capture(c) => {
            capture::CaptureSource::open(c.device.as_deref(), c.rate, c.channel)
                .map(|_| ())
                .map_err(|e| cf.error_at(&source_key(e.key()), e.message()))
        }
        SourceConfig::Wav(w) => {
            let path = cf.resolve(&w.path);
            wav_source::WavFileSource::open(&path, w.channel, w.realtime)
                .map(|_| ())
                .map_err(|e| cf.error_at(&source_key("path"), e))
        }
        SourceConfig::Stdin(r) => raw_pick(cf, r.rate, r.channels, r.channel).map(|_| ()),
        SourceConfig::Tcp(t) => {
            raw_pick(cf, t.rate, t.channels, t.channel)?;
            raw::parse_listen(&t.listen)
                .map(|_| ())
                .map_err(|m| cf.error_at(&source_key("listen"), m))
        }
        SourceConfig::Synth(s) => synth::SynthSourceRunner::new(s)
            .map(|_| ())
            .map_err(|(k, m)| cf.error_at(&source_key(&k), m)),
    }
}

fn sink_config(cf: &ConfigFile, index: usize) -> Result<&SinkConfig> {
    cf.config.sinks.get(index).ok_or_else(|| {
        Error::Other(format!(
            "{}: no sink number {index} (the config has {})",
            cf.path.display(),
            cf.config.sinks.len()
        ))
    })
}

/// The directory a new file goes into must exist.
fn check_parent(cf: &ConfigFile, index: usize, path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    if !parent.is_dir() {
        return Err(cf.error_at(
            &sink_key(index, "path"),
            format!("directory {} does not exist", parent.display()),
        ));
    }
    Ok(())
}

/// Build sink `cf.config.sinks[index]`. `source_rate` is the rate of the source; a WAV sink of the input writes
/// at its `rate` or at that one. Output files are created now.
pub fn open_sink(cf: &ConfigFile, index: usize, source_rate: u32) -> Result<Box<dyn Sink>> {
    match sink_config(cf, index)? {
        SinkConfig::Jsonl(j) => {
            let path = j.path.as_ref().map(|p| {
                if p.as_os_str() == "-" {
                    p.clone()
                } else {
                    cf.resolve(p)
                }
            });
            Ok(Box::new(jsonl_sink::JsonlSink::create(
                path.as_deref(),
                j.flush_each,
            )?))
        }
        SinkConfig::Wav(w) => {
            check_wav_sink(cf, index, w)?;
            let path = cf.resolve(&w.path);
            let rate = if w.from == "input" {
                Some(w.rate.unwrap_or(source_rate))
            } else {
                w.rate
            };
            Ok(Box::new(wav_sink::WavFileSink::create(
                &path, &w.from, w.format, rate,
            )?))
        }
        SinkConfig::Playback(p) => {
            if !(p.buffer_seconds.is_finite() && p.buffer_seconds > 0.0) {
                return Err(cf.error_at(
                    &sink_key(index, "buffer-seconds"),
                    "must be a positive number of seconds",
                ));
            }
            let sink = playback::PlaybackSink::open(p.device.as_deref(), &p.from, p.buffer_seconds)
                .map_err(|e| match e {
                    playback::PlaybackError::Device(m) | playback::PlaybackError::Start(m) => {
                        cf.error_at(&sink_key(index, "device"), m)
                    }
                })?;
            Ok(Box::new(sink))
        }
    }
}

fn check_wav_sink(cf: &ConfigFile, index: usize, w: &crate::config::WavSink) -> Result<()> {
    if w.rate == Some(0) {
        return Err(cf.error_at(&sink_key(index, "rate"), "must be positive"));
    }
    check_parent(cf, index, &cf.resolve(&w.path))
}

/// Validate sink `cf.config.sinks[index]` without opening it: output directories exist, the playback device
/// exists and has a usable output configuration.
pub fn check_sink(cf: &ConfigFile, index: usize) -> Result<()> {
    match sink_config(cf, index)? {
        SinkConfig::Jsonl(j) => match &j.path {
            Some(p) if p.as_os_str() != "-" => check_parent(cf, index, &cf.resolve(p)),
            _ => Ok(()),
        },
        SinkConfig::Wav(w) => check_wav_sink(cf, index, w),
        SinkConfig::Playback(p) => {
            if !(p.buffer_seconds.is_finite() && p.buffer_seconds > 0.0) {
                return Err(cf.error_at(
                    &sink_key(index, "buffer-seconds"),
                    "must be a positive number of seconds",
                ));
            }
            let dev = devices::find(p.device.as_deref(), devices::Way::Output)
                .map_err(|m| cf.error_at(&sink_key(index, "device"), m))?;
            devices::choose_config(&dev, devices::Way::Output, None)
                .map(|_| ())
                .map_err(|m| {
                    cf.error_at(
                        &sink_key(index, "device"),
                        format!("device {}: {m}", devices::id_of(&dev)),
                    )
                })
        }
    }
}
