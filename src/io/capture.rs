//! `kind = "capture"`: live input from an audio device through cpal.
//!
//! The device is opened at a configuration it supports (the requested rate, or the device's default rate); the
//! data callback converts whatever sample format the device delivers to f32, keeps one channel or mixes them
//! down, and pushes into the ring — nothing else: no allocation, lock, log line or blocking call. Samples that do
//! not fit are counted in `SourceControl::lost`. The cpal stream lives on a thread of its own that waits for
//! `stop`; a stream error sets `finished` and is returned when the source handle is joined.

use super::devices::{self, Way};
use super::frames::ChannelPick;
use super::ring::push_live;
use super::{Source, SourceControl, SourceHandle};
use crate::error::{Error, Result};
use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A capture device, resolved and configured, not yet running.
pub struct CaptureSource {
    device: cpal::Device,
    device_id: String,
    config: cpal::SupportedStreamConfig,
    pick: ChannelPick,
}

impl CaptureSource {
    /// Resolve `device` (id, name, or the default input) and choose a configuration with `rate` (or the device's
    /// default rate). Errors are plain reasons; the caller places them in the config (`source.device`, …).
    pub fn open(
        device: Option<&str>,
        rate: Option<u32>,
        channel: Option<u16>,
    ) -> std::result::Result<Self, CaptureError> {
        let dev = devices::find(device, Way::Input).map_err(CaptureError::Device)?;
        let device_id = devices::id_of(&dev);
        let config = devices::choose_config(&dev, Way::Input, rate)
            .map_err(|m| CaptureError::Rate(format!("device {device_id}: {m}")))?;
        let pick = ChannelPick::new(channel, config.channels() as usize)
            .map_err(|m| CaptureError::Channel(format!("device {device_id}: {m}")))?;
        Ok(CaptureSource {
            device: dev,
            device_id,
            config,
            pick,
        })
    }

    /// The device's id (`host:device`).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The configuration the stream opens with.
    pub fn config(&self) -> &cpal::SupportedStreamConfig {
        &self.config
    }
}

/// Why a capture device could not be opened, by the config key it concerns.
#[derive(Debug, Clone)]
pub enum CaptureError {
    /// `device`: not found.
    Device(String),
    /// `rate`: not supported (lists what is).
    Rate(String),
    /// `channel`: out of range.
    Channel(String),
}

impl CaptureError {
    pub fn key(&self) -> &'static str {
        match self {
            CaptureError::Device(_) => "device",
            CaptureError::Rate(_) => "rate",
            CaptureError::Channel(_) => "channel",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            CaptureError::Device(m) | CaptureError::Rate(m) | CaptureError::Channel(m) => m,
        }
    }
}

/// One device sample as f32 in [-1, 1] (cpal's conversion: signed and unsigned integers of any width, floats).
#[inline]
pub fn sample_to_f32<T>(s: T) -> f32
where
    T: SizedSample,
    f32: FromSample<T>,
{
    f32::from_sample_(s)
}

/// Build the input stream for sample type `T`.
fn build<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    pick: ChannelPick,
    mut ring: rtrb::Producer<f32>,
    ctl: Arc<SourceControl>,
    failure: Arc<Mutex<Option<String>>>,
) -> std::result::Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = config.channels as usize;
    let ctl_err = Arc::clone(&ctl);
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _info: &cpal::InputCallbackInfo| {
            let frames = data.len() / channels;
            let samples = data
                .chunks_exact(channels)
                .map(|f| pick.mono(f, sample_to_f32::<T>));
            push_live(&mut ring, frames, samples, &ctl);
        },
        move |e: cpal::Error| {
            // The error callback runs on cpal's worker thread, not in the audio callback: it may log and lock.
            if !devices::is_fatal(&e) {
                tracing::warn!("capture stream: {e}");
                return;
            }
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
            ctl_err.finished.store(true, Ordering::Release);
        },
        None,
    )
}

impl Source for CaptureSource {
    fn rate(&self) -> u32 {
        self.config.sample_rate()
    }

    fn is_live(&self) -> bool {
        true
    }

    fn start(
        self: Box<Self>,
        ring: rtrb::Producer<f32>,
        ctl: Arc<SourceControl>,
    ) -> Result<SourceHandle> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let thread = std::thread::Builder::new()
            .name("sigflow-capture".into())
            .spawn(move || -> Result<()> {
                let failure = Arc::new(Mutex::new(None));
                let config: cpal::StreamConfig = self.config.config();
                let id = self.device_id.clone();
                let d = &self.device;
                let (p, c, f) = (self.pick, Arc::clone(&ctl), Arc::clone(&failure));
                use cpal::SampleFormat as F;
                let stream = match self.config.sample_format() {
                    F::I8 => build::<i8>(d, &config, p, ring, c, f),
                    F::I16 => build::<i16>(d, &config, p, ring, c, f),
                    F::I24 => build::<cpal::I24>(d, &config, p, ring, c, f),
                    F::I32 => build::<i32>(d, &config, p, ring, c, f),
                    F::I64 => build::<i64>(d, &config, p, ring, c, f),
                    F::U8 => build::<u8>(d, &config, p, ring, c, f),
                    F::U16 => build::<u16>(d, &config, p, ring, c, f),
                    F::U24 => build::<cpal::U24>(d, &config, p, ring, c, f),
                    F::U32 => build::<u32>(d, &config, p, ring, c, f),
                    F::U64 => build::<u64>(d, &config, p, ring, c, f),
                    F::F32 => build::<f32>(d, &config, p, ring, c, f),
                    F::F64 => build::<f64>(d, &config, p, ring, c, f),
                    other => {
                        let e = Error::Device(format!("{id}: unsupported sample format {other}"));
                        let _ = ready_tx.send(Err(Error::Device(e.to_string())));
                        return Err(e);
                    }
                };
                let stream = match stream.and_then(|s| s.play().map(|_| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = format!(
                            "{id}: cannot start capture at {} Hz {} x{}: {e}",
                            config.sample_rate,
                            self.config.sample_format(),
                            config.channels
                        );
                        let _ = ready_tx.send(Err(Error::Device(msg.clone())));
                        ctl.finished.store(true, Ordering::Release);
                        return Err(Error::Device(msg));
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while !ctl.stop_requested() && !ctl.finished.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(stream);
                ctl.finished.store(true, Ordering::Release);
                let failed = failure.lock().ok().and_then(|mut s| s.take());
                match failed {
                    Some(m) if !ctl.stop_requested() => {
                        Err(Error::Device(format!("{id}: capture stream failed: {m}")))
                    }
                    _ => Ok(()),
                }
            })
            .map_err(|e| Error::io("starting the capture thread", e))?;
        // Report a device that cannot be opened now rather than at join.
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SourceHandle {
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(Error::Device("capture thread ended before starting".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_format_converts_to_unit_range() {
        assert_eq!(sample_to_f32(i16::MIN), -1.0);
        assert_eq!(sample_to_f32(0i16), 0.0);
        assert_eq!(sample_to_f32(16_384i16), 0.5);
        assert_eq!(sample_to_f32(i8::MIN), -1.0);
        assert_eq!(sample_to_f32(i32::MIN), -1.0);
        assert_eq!(sample_to_f32(1i32 << 30), 0.5);
        assert_eq!(sample_to_f32(128u8), 0.0);
        assert_eq!(sample_to_f32(0u8), -1.0);
        assert_eq!(sample_to_f32(32_768u16), 0.0);
        assert_eq!(sample_to_f32(0u16), -1.0);
        assert_eq!(sample_to_f32(0.25f32), 0.25);
        assert_eq!(sample_to_f32(-0.5f64), -0.5);
        assert_eq!(sample_to_f32(cpal::I24::new(1 << 22).unwrap()), 0.5);
        // Mixing a stereo frame of another type.
        let frame = [i16::MAX, i16::MIN];
        let m = ChannelPick::Mix.mono(&frame, sample_to_f32::<i16>);
        assert!(m.abs() < 1e-4, "{m}");
    }
}
