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
