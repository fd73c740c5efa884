//! Barge-in on a real output device (ALSA `testplay` backed by a private PulseAudio, played in real time): the
//! playback sink stops an interrupted reply within a device buffer of the barge-in and plays the next reply whole.

mod common;

use common::pulse::PrivateAudio;
use sigflow::event::{BargeInSignal, Event, EventKind};
use sigflow::io::playback::PlaybackSink;
use sigflow::io::Sink;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLAYBACK_RATE: u32 = 48_000;

fn tone(amplitude: f32, seconds: f64) -> Vec<f32> {
    let n = (seconds * 24_000.0) as usize;
    (0..n)
        .map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 500.0 / 24_000.0).sin())
        .collect()
}

/// RMS of consecutive 10 ms windows.
fn envelope(x: &[f32], rate: u32) -> Vec<f32> {
    x.chunks((rate / 100) as usize)
        .map(|w| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt())
        .collect()
}

#[test]
fn playback_stops_an_interrupted_reply_on_a_real_device() {
    let audio = PrivateAudio::start(16_000, &[0.0; 1600], PLAYBACK_RATE);
    let mut sink = PlaybackSink::open(Some("alsa:testplay"), "assistant", 2.0)
        .unwrap_or_else(|e| panic!("opening alsa:testplay: {e:?}"));
    assert_eq!(sink.rate(), PLAYBACK_RATE);
    let stats = sink.stats();
    let name: Arc<str> = Arc::from("assistant");
    let start = |s: &Arc<BargeInSignal>, turn| {
        Event::new(
            &name,
            0,
            EventKind::ResponseStart {
                turn,
                signal: Arc::clone(s),
            },
        )
    };
    let write_audio = |sink: &mut PlaybackSink, x: &[f32]| {
        for c in x.chunks(1920) {
            let ev = Event::new(
                &name,
                0,
                EventKind::Audio {
                    rate: 24_000,
                    samples: Arc::from(c),
                    frames: c.len(),
                },
            );
            sink.write(&ev).expect("write");
        }
    };

    // Reply 0: 4 s at amplitude 0.5, interrupted 0.5 s after it began to play. The sink blocks while the 2 s
    // ring is full, as it does behind a fast model; the stage raises the signal from its own thread.
    let first = Arc::new(BargeInSignal::default());
    sink.write(&start(&first, 0)).expect("write");
    let raiser = {
        let (signal, stats) = (Arc::clone(&first), Arc::clone(&stats));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while stats.played_frames.load(Ordering::Relaxed) < (PLAYBACK_RATE / 2) as u64
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            signal.raise();
            stats.played_frames.load(Ordering::Relaxed)
        })
    };
    let began = Instant::now();
    write_audio(&mut sink, &tone(0.5, 4.0));
    let played_at_cut = raiser.join().expect("raiser");
    sink.write(&Event::new(
        &name,
        0,
        EventKind::BargeIn { turn: 0, frames: 0 },
    ))
    .expect("write");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "writing the interrupted reply waited for it to play"
    );
    // The device callback skips the dropped audio at its next call.
    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.flushed_frames.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let flushed = stats.flushed_frames.load(Ordering::Relaxed);
    eprintln!("barge-in after {played_at_cut} frames played; {flushed} frames dropped unplayed");
    assert!(
        flushed > PLAYBACK_RATE as u64,
        "less than 1 s of the 4 s reply was dropped: {flushed}"
    );

    // Reply 1: 1 s at amplitude 0.25, played whole.
    std::thread::sleep(Duration::from_millis(300));
    let second = Arc::new(BargeInSignal::default());
    sink.write(&start(&second, 1)).expect("write");
    write_audio(&mut sink, &tone(0.25, 1.0));
    sink.write(&Event::new(
        &name,
        0,
        EventKind::ResponseEnd {
            turn: 1,
            frames: 24_000,
            rate: 24_000,
            text: String::new(),
            interrupted: false,
        },
    ))
    .expect("write");
    sink.finish().expect("playback finishes");

    let env = envelope(&audio.recorded(), PLAYBACK_RATE);
    let loud = env.iter().filter(|&&r| r > 0.25).count();
    let soft = env.iter().filter(|&&r| r > 0.12 && r < 0.22).count();
    eprintln!(
        "recorded: {} windows, {loud} of reply 0, {soft} of reply 1",
        env.len()
    );
    // Reply 0 played from its start until the cut plus what the device had buffered — far less than 4 s.
    assert!(loud >= 45, "reply 0 barely played: {loud} windows of 10 ms");
    let cut_ms = played_at_cut * 1000 / PLAYBACK_RATE as u64;
    assert!(
        (loud as u64) * 10 < cut_ms + 1_000,
        "reply 0 played {} ms, more than 1 s past the cut at {cut_ms} ms",
        loud * 10
    );
    assert!(
        (95..=104).contains(&soft),
        "reply 1 played {soft} windows of 10 ms, not 1 s"
    );
}
