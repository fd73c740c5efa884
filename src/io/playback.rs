//! `kind = "playback"`: audio events to an output device through cpal.
//!
//! Audio is resampled to the device's rate ([`StreamResampler`]) and goes through a lock-free ring to the device
//! callback, which copies it to every output channel in the device's sample format. When the ring runs dry the
//! callback plays silence and counts the missing frames (underruns). The cpal stream lives on a thread of its own.
//!
//! Barge-in: when the assistant stage raises the [`BargeInSignal`] of the reply being played, the sink drops the
//! rest of that reply — the audio still queued for it and what is in the ring but not played yet. The sink only
//! publishes a ring position ([`PlaybackStats::flush_until`], an atomic); the device callback skips the ring up to
//! it (a read chunk committed unread), so the callback still neither locks nor allocates.

use super::devices::{self, Way};
use super::Sink;
use crate::dsp::resample::StreamResampler;
use crate::error::{Error, Result};
use crate::event::{BargeInSignal, Event, EventKind};
use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters shared with the device callback.
#[derive(Debug, Default)]
pub struct PlaybackStats {
    /// Set at the first audio written; underruns count from then on.
    pub active: AtomicBool,
    /// Frames the callback had to fill with silence because the ring was empty.
    pub underrun_frames: AtomicU64,
    /// Frames played from the ring.
    pub played_frames: AtomicU64,
    /// Set when the stream failed.
    pub failed: AtomicBool,
    /// Ask the stream thread to stop.
    pub stop: AtomicBool,
    /// Ring position (samples ever pushed) up to which the callback discards instead of playing: set on barge-in.
    pub flush_until: AtomicU64,
    /// Samples discarded by barge-in, unplayed.
    pub flushed_frames: AtomicU64,
}

/// The device callback's side of the ring: plays what is queued, skips what barge-in dropped.
pub struct RingReader {
    ring: rtrb::Consumer<f32>,
    /// Samples taken out of the ring so far (played or skipped).
    consumed: u64,
    stats: Arc<PlaybackStats>,
}

impl RingReader {
    pub fn new(ring: rtrb::Consumer<f32>, stats: Arc<PlaybackStats>) -> Self {
        RingReader {
            ring,
            consumed: 0,
            stats,
        }
    }

    /// Fill interleaved `data` of `channels` channels: the same sample on every channel, silence when the ring
    /// is dry. No allocation, no lock.
    pub fn fill<T: SizedSample + FromSample<f32>>(&mut self, data: &mut [T], channels: usize) {
        let st = &self.stats;
        let flush_to = st.flush_until.load(Ordering::Acquire);
        if self.consumed < flush_to {
            let n = ((flush_to - self.consumed) as usize).min(self.ring.slots());
            if let Ok(chunk) = self.ring.read_chunk(n) {
                chunk.commit_all();
                self.consumed += n as u64;
                st.flushed_frames.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let frames = data.len() / channels.max(1);
        let avail = self.ring.slots().min(frames);
        let silence = T::from_sample(0.0f32);
        match self.ring.read_chunk(avail) {
            Ok(chunk) => {
                let (a, b) = chunk.as_slices();
                let mut src = a.iter().chain(b.iter());
                for frame in data.chunks_exact_mut(channels.max(1)) {
                    let v = src.next().map_or(silence, |&s| T::from_sample(s));
                    frame.fill(v);
                }
                chunk.commit_all();
                self.consumed += avail as u64;
            }
            Err(_) => data.fill(silence),
        }
        st.played_frames.fetch_add(avail as u64, Ordering::Relaxed);
        if avail < frames && st.active.load(Ordering::Relaxed) {
            st.underrun_frames
                .fetch_add((frames - avail) as u64, Ordering::Relaxed);
        }
    }
}

/// Plays one stage's audio events on an output device.
pub struct PlaybackSink {
    from: String,
    device_id: String,
    rate: u32,
    ring: rtrb::Producer<f32>,
    resampler: Option<StreamResampler>,
    scratch: Vec<f32>,
    stats: Arc<PlaybackStats>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    finished: bool,
    /// Samples ever pushed into the ring.
    pushed: u64,
    /// The assistant reply being played, if any.
    reply: Option<Arc<BargeInSignal>>,
    /// The current reply was interrupted and its remaining audio is being dropped.
    dropping: bool,
}

/// Why an output device could not be opened, by config key.
#[derive(Debug, Clone)]
pub enum PlaybackError {
    /// `device`: not found or without a usable configuration.
    Device(String),
    /// Starting the stream failed.
    Start(String),
}

fn build<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    ring: rtrb::Consumer<f32>,
    stats: Arc<PlaybackStats>,
    failure: Arc<Mutex<Option<String>>>,
) -> std::result::Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels as usize;
    let mut reader = RingReader::new(ring, Arc::clone(&stats));
    device.build_output_stream::<T, _, _>(
        *config,
        move |data: &mut [T], _info: &cpal::OutputCallbackInfo| reader.fill(data, channels),
        move |e: cpal::Error| {
            // cpal's worker thread, not the audio callback: it may log and lock.
            if !devices::is_fatal(&e) {
                tracing::warn!("playback stream: {e}");
                return;
            }
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
            stats.failed.store(true, Ordering::Release);
        },
        None,
    )
}

impl PlaybackSink {
    /// Open `device` (id, name, or the default output) at its default configuration and start the stream.
    /// `buffer_seconds` sizes the ring.
    pub fn open(
        device: Option<&str>,
        from: &str,
        buffer_seconds: f64,
    ) -> std::result::Result<Self, PlaybackError> {
        let dev = devices::find(device, Way::Output).map_err(PlaybackError::Device)?;
        let device_id = devices::id_of(&dev);
        let supported = devices::choose_config(&dev, Way::Output, None)
            .map_err(|m| PlaybackError::Device(format!("device {device_id}: {m}")))?;
        let rate = supported.sample_rate();
        let capacity = ((buffer_seconds.max(0.05) * rate as f64) as usize).max(1024);
        let (producer, consumer) = rtrb::RingBuffer::new(capacity);
        let stats = Arc::new(PlaybackStats::default());
        let failure = Arc::new(Mutex::new(None));
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let (st, fl, id) = (Arc::clone(&stats), Arc::clone(&failure), device_id.clone());
        let thread = std::thread::Builder::new()
            .name("sigflow-playback".into())
            .spawn(move || {
                let config = supported.config();
                use cpal::SampleFormat as F;
                let (s2, f2) = (Arc::clone(&st), Arc::clone(&fl));
                let stream = match supported.sample_format() {
                    F::I8 => build::<i8>(&dev, &config, consumer, s2, f2),
                    F::I16 => build::<i16>(&dev, &config, consumer, s2, f2),
                    F::I24 => build::<cpal::I24>(&dev, &config, consumer, s2, f2),
                    F::I32 => build::<i32>(&dev, &config, consumer, s2, f2),
                    F::I64 => build::<i64>(&dev, &config, consumer, s2, f2),
                    F::U8 => build::<u8>(&dev, &config, consumer, s2, f2),
                    F::U16 => build::<u16>(&dev, &config, consumer, s2, f2),
                    F::U24 => build::<cpal::U24>(&dev, &config, consumer, s2, f2),
                    F::U32 => build::<u32>(&dev, &config, consumer, s2, f2),
                    F::U64 => build::<u64>(&dev, &config, consumer, s2, f2),
                    F::F32 => build::<f32>(&dev, &config, consumer, s2, f2),
                    F::F64 => build::<f64>(&dev, &config, consumer, s2, f2),
                    other => {
                        let _ = ready_tx.send(Err(format!("unsupported sample format {other}")));
                        return;
                    }
                };
                let stream = match stream.and_then(|s| s.play().map(|_| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!(
                            "cannot start playback at {} Hz {} x{}: {e}",
                            config.sample_rate,
                            supported.sample_format(),
                            config.channels
                        )));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while !st.stop.load(Ordering::Acquire) && !st.failed.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(stream);
            })
            .map_err(|e| PlaybackError::Start(format!("cannot start the playback thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(m)) => {
                let _ = thread.join();
                return Err(PlaybackError::Start(format!("device {id}: {m}")));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(PlaybackError::Start(format!(
                    "device {id}: playback thread ended before starting"
                )));
            }
        }
        Ok(PlaybackSink {
            from: from.to_string(),
            device_id,
            rate,
            ring: producer,
            resampler: None,
            scratch: Vec::new(),
            stats,
            failure,
            thread: Some(thread),
            finished: false,
            pushed: 0,
            reply: None,
            dropping: false,
        })
    }

    /// A sink writing into `ring` at `rate` with no device behind it (the reader side is the caller's).
    pub fn on_ring(
        from: &str,
        rate: u32,
        ring: rtrb::Producer<f32>,
        stats: Arc<PlaybackStats>,
    ) -> Self {
        PlaybackSink {
            from: from.to_string(),
            device_id: "ring".into(),
            rate,
            ring,
            resampler: None,
            scratch: Vec::new(),
            stats,
            failure: Arc::new(Mutex::new(None)),
            thread: None,
            finished: false,
            pushed: 0,
            reply: None,
            dropping: false,
        }
    }

    /// Whether the reply being played was interrupted; drops the rest of it the first time.
    fn interrupted(&mut self) -> bool {
        if !self.reply.as_ref().is_some_and(|s| s.is_raised()) {
            return false;
        }
        if !self.dropping {
            self.dropping = true;
            // Everything pushed so far belongs to the interrupted reply (or is older): the callback skips it.
            self.stats.flush_until.store(self.pushed, Ordering::Release);
            self.resampler = None;
        }
        true
    }

    /// The device's rate (audio is resampled to it).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Counters (underruns, frames played).
    pub fn stats(&self) -> Arc<PlaybackStats> {
        Arc::clone(&self.stats)
    }

    fn check_failed(&self) -> Result<()> {
        if self.stats.failed.load(Ordering::Acquire) {
            let m = self
                .failure
                .lock()
                .ok()
                .and_then(|s| s.clone())
                .unwrap_or_else(|| "stream failed".into());
            return Err(Error::Device(format!(
                "{}: playback failed: {m}",
                self.device_id
            )));
        }
        Ok(())
    }

    /// Push into the ring, waiting for room while the device plays.
    fn push(&mut self, mut samples: &[f32]) -> Result<()> {
        self.stats.active.store(true, Ordering::Relaxed);
        loop {
            let (done, rest) = self.ring.push_partial_slice(samples);
            self.pushed += done.len() as u64;
            samples = rest;
            if samples.is_empty() || self.interrupted() {
                return Ok(());
            }
            self.check_failed()?;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Write mono samples at `rate` Hz (resampled to the device rate).
    pub fn play(&mut self, rate: u32, samples: &[f32]) -> Result<()> {
        self.check_failed()?;
        let needs_new = self
            .resampler
            .as_ref()
            .is_none_or(|r| r.from_rate() != rate);
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if needs_new {
            if let Some(r) = self.resampler.as_mut() {
                r.finish(&mut out);
            }
            self.resampler = Some(StreamResampler::new(rate, self.rate)?);
        }
        if let Some(r) = self.resampler.as_mut() {
            r.process(samples, &mut out);
        }
        let res = self.push(&out);
        self.scratch = out;
        res
    }

    fn stop_thread(&mut self) {
        self.stats.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Sink for PlaybackSink {
    fn write(&mut self, event: &Event) -> Result<()> {
        if &*event.stage != self.from.as_str() {
            return Ok(());
        }
        match &event.kind {
            EventKind::Audio { rate, samples, .. } => {
                if self.interrupted() {
                    return Ok(());
                }
                self.play(*rate, samples)
            }
            EventKind::ResponseStart { signal, .. } => {
                self.reply = Some(Arc::clone(signal));
                self.dropping = false;
                Ok(())
            }
            EventKind::ResponseEnd { .. } | EventKind::BargeIn { .. } => {
                self.interrupted();
                self.reply = None;
                self.dropping = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Play out what is queued (the resampler's tail, the ring, then one device buffer's worth), then stop.
    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let mut tail = Vec::new();
        if let Some(r) = self.resampler.as_mut() {
            r.finish(&mut tail);
        }
        let pushed = self.push(&tail);
        let queued = self.ring.buffer().capacity() - self.ring.slots();
        let deadline =
            Instant::now() + Duration::from_secs_f64(queued as f64 / self.rate as f64 + 2.0);
        while self.ring.slots() < self.ring.buffer().capacity()
            && Instant::now() < deadline
            && !self.stats.failed.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The last callback's data is still in the device's buffer: give it time to play.
        self.stats.active.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let failed = self.check_failed();
        self.stop_thread();
        let underruns = self.stats.underrun_frames.load(Ordering::Relaxed);
        if underruns > 0 {
            tracing::warn!(
                device = %self.device_id,
                "playback: {underruns} frames of silence played because audio came late (underruns)"
            );
        }
        pushed.and(failed)
    }
}

impl Drop for PlaybackSink {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
