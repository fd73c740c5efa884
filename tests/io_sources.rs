//! Sources push what they read: WAV in every supported sample format (lossless when not real-time), channel
//! choice and mix-down, synth determinism, TCP clients one after another, and exact overrun accounting.

use sigflow::config::{RawFormat, SynthSignal, SynthSource};
use sigflow::io::frames::ChannelPick;
use sigflow::io::raw::TcpPcmSource;
use sigflow::io::synth::{SynthGenerator, SynthSourceRunner};
use sigflow::io::wav_source::WavFileSource;
use sigflow::io::{Source, SourceControl};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run a source to its end (or `limit`), draining the ring; returns what arrived and the control block.
fn drain(
    source: Box<dyn Source>,
    capacity: usize,
    limit: Duration,
) -> (Vec<f32>, Arc<SourceControl>) {
    let (producer, mut consumer) = rtrb::RingBuffer::new(capacity);
    let ctl = Arc::new(SourceControl::default());
    let handle = source.start(producer, Arc::clone(&ctl)).unwrap();
    let mut got = Vec::new();
    let t0 = Instant::now();
    loop {
        let finished = ctl.finished.load(Ordering::Acquire);
        while let Ok(v) = consumer.pop() {
            got.push(v);
        }
        if finished || t0.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ctl.stop.store(true, Ordering::Release);
    handle.join().unwrap();
    while let Ok(v) = consumer.pop() {
        got.push(v);
    }
    (got, ctl)
}

fn synth(signal: SynthSignal, duration: f64, realtime: bool, seed: u64) -> SynthSource {
    SynthSource {
        signal,
        rate: 16_000,
        frequency: 440.0,
        to_frequency: Some(2000.0),
        amplitude: 0.5,
        duration: Some(duration),
        realtime,
        seed,
    }
}

/// Write a stereo test file; returns the per-channel values as f32 the way sigflow scales them.
fn write_stereo(
    path: &Path,
    format: hound::SampleFormat,
    bits: u16,
    frames: usize,
) -> Vec<[f32; 2]> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 22_050,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let full = ((1i64 << (bits - 1)) - 1) as f64;
    let mut expected = Vec::new();
    for i in 0..frames {
        let l = (i as f64 * 0.01).sin() * 0.8;
        let r = ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
        match format {
            hound::SampleFormat::Float => {
                w.write_sample(l as f32).unwrap();
                w.write_sample(r as f32).unwrap();
                expected.push([l as f32, r as f32]);
            }
            hound::SampleFormat::Int => {
                let (li, ri) = ((l * full).round() as i32, (r * full).round() as i32);
                w.write_sample(li).unwrap();
                w.write_sample(ri).unwrap();
                let scale = (1i64 << (bits - 1)) as f32;
                expected.push([li as f32 / scale, ri as f32 / scale]);
            }
        }
    }
    w.finalize().unwrap();
    expected
}

#[test]
fn wav_every_format_lossless_with_channel_choice() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (hound::SampleFormat::Int, 8),
        (hound::SampleFormat::Int, 16),
        (hound::SampleFormat::Int, 24),
        (hound::SampleFormat::Int, 32),
        (hound::SampleFormat::Float, 32),
    ];
    for (format, bits) in cases {
        let path = dir.path().join(format!("{format:?}{bits}.wav"));
        let frames = 5000;
        let expected = write_stereo(&path, format, bits, frames);
        for channel in [None, Some(0), Some(1)] {
            let src = WavFileSource::open(&path, channel, false).unwrap();
            assert_eq!(src.rate(), 22_050);
            assert!(!src.is_live());
            // A ring much smaller than the file: the source must wait for room, not drop.
            let (got, ctl) = drain(Box::new(src), 300, Duration::from_secs(20));
            assert_eq!(got.len(), frames, "{format:?} {bits} {channel:?}");
            assert_eq!(ctl.lost.load(Ordering::Relaxed), 0);
            assert_eq!(ctl.pushed.load(Ordering::Relaxed), frames as u64);
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let want = match channel {
                    None => (e[0] + e[1]) / 2.0,
                    Some(c) => e[c as usize],
                };
                assert!(
                    (g - want).abs() <= 1e-6,
                    "{format:?} {bits} {channel:?} frame {i}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn realtime_wav_is_paced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paced.wav");
    write_stereo(&path, hound::SampleFormat::Int, 16, 11_025); // 0.5 s
    let src = WavFileSource::open(&path, None, true).unwrap();
    assert!(src.is_live());
    let t0 = Instant::now();
    let (got, ctl) = drain(Box::new(src), 22_050, Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(got.len(), 11_025);
    assert_eq!(ctl.lost.load(Ordering::Relaxed), 0);
    // Paced on a clock: it cannot finish before the last block is due (0.5 s of audio).
    assert!(
        took >= Duration::from_millis(490),
        "finished after {took:?}"
    );
}

#[test]
fn live_source_with_full_ring_counts_lost_samples_exactly() {
    // 0.3 s at 16 kHz = 4800 samples into a ring of 1000 that nobody drains.
    let src = SynthSourceRunner::new(&synth(SynthSignal::Sine, 0.3, true, 0)).unwrap();
    let (producer, consumer) = rtrb::RingBuffer::new(1000);
    let ctl = Arc::new(SourceControl::default());
    let handle = Box::new(src).start(producer, Arc::clone(&ctl)).unwrap();
    handle.join().unwrap();
    assert!(ctl.finished.load(Ordering::Acquire));
    assert_eq!(ctl.pushed.load(Ordering::Relaxed), 1000);
    assert_eq!(ctl.lost.load(Ordering::Relaxed), 3800);
    assert_eq!(consumer.slots(), 1000);

    // The same through a real-time WAV file: 11025 frames into a ring of 2000.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrun.wav");
    write_stereo(&path, hound::SampleFormat::Int, 16, 11_025);
    let src = WavFileSource::open(&path, Some(0), true).unwrap();
    let (producer, _consumer) = rtrb::RingBuffer::new(2000);
    let ctl = Arc::new(SourceControl::default());
    Box::new(src)
        .start(producer, Arc::clone(&ctl))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(ctl.pushed.load(Ordering::Relaxed), 2000);
    assert_eq!(ctl.lost.load(Ordering::Relaxed), 9025);
}

#[test]
fn synth_matches_its_generator_and_seed() {
    for signal in [SynthSignal::Sine, SynthSignal::Chirp, SynthSignal::Noise] {
        let cfg = synth(signal, 0.25, false, 42);
        let src = SynthSourceRunner::new(&cfg).unwrap();
        let (got, ctl) = drain(Box::new(src), 512, Duration::from_secs(10));
        assert_eq!(got.len(), 4000, "{signal:?}");
        assert_eq!(ctl.lost.load(Ordering::Relaxed), 0);
        let mut g = SynthGenerator::new(&cfg);
        let reference: Vec<f32> = (0..4000).map(|_| g.next_sample()).collect();
        assert_eq!(got, reference, "{signal:?}");
        assert!(got.iter().all(|v| v.abs() <= 0.5 + 1e-6));
        assert!(got.iter().map(|v| v.abs()).fold(0.0, f32::max) > 0.3);
    }
    let a: Vec<f32> = {
        let mut g = SynthGenerator::new(&synth(SynthSignal::Noise, 1.0, false, 1));
        (0..100).map(|_| g.next_sample()).collect()
    };
    let b: Vec<f32> = {
        let mut g = SynthGenerator::new(&synth(SynthSignal::Noise, 1.0, false, 2));
        (0..100).map(|_| g.next_sample()).collect()
    };
    assert_ne!(a, b);
    // A sine is a sine: sample 40 of 440 Hz at 16 kHz.
    let mut g = SynthGenerator::new(&synth(SynthSignal::Sine, 1.0, false, 0));
    let s: Vec<f32> = (0..41).map(|_| g.next_sample()).collect();
    let want = 0.5 * (std::f64::consts::TAU * 440.0 * 40.0 / 16_000.0).sin();
    assert!((s[40] as f64 - want).abs() < 1e-6);
}

#[test]
fn tcp_takes_clients_one_after_another() {
    let src = TcpPcmSource::bind(
        "127.0.0.1:0".parse().unwrap(),
        RawFormat::S16le,
        16_000,
        2,
        ChannelPick::Channel(1),
    )
    .unwrap();
    let addr = src.local_addr().unwrap();
    let (producer, mut consumer) = rtrb::RingBuffer::new(4096);
    let ctl = Arc::new(SourceControl::default());
    let handle = Box::new(src).start(producer, Arc::clone(&ctl)).unwrap();
    let mut sent = Vec::new();
    for client in 0..2 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut bytes = Vec::new();
        for i in 0..1000i16 {
            let right = i * 3 + client * 5000;
            bytes.extend_from_slice(&(-i).to_le_bytes());
            bytes.extend_from_slice(&right.to_le_bytes());
            sent.push(right as f32 / 32_768.0);
        }
        // Written in odd pieces so frames are split across reads.
        for piece in bytes.chunks(333) {
            s.write_all(piece).unwrap();
        }
    }
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < sent.len() && t0.elapsed() < Duration::from_secs(10) {
        while let Ok(v) = consumer.pop() {
            got.push(v);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    ctl.stop.store(true, Ordering::Release);
    handle.join().unwrap();
    assert_eq!(got, sent);
}
