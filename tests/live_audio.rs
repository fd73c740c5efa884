//! Live capture and playback through real ALSA devices backed by a private PulseAudio (no sound card needed):
//! what the capture source pushes into the ring equals the replayed recording (at the device rate, and after
//! StreamResampler to 16 kHz), arrives in real time, and what the playback sink is given reaches the device.

mod common;

use common::pulse::PrivateAudio;
use common::signal::{best_lag, error_db, overlap, test_recording};
use sigflow::config::ConfigFile;
use sigflow::dsp::resample::StreamResampler;
use sigflow::event::{Event, EventKind};
use sigflow::io::playback::PlaybackSink;
use sigflow::io::{open_source, Sink, SourceControl};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rate of the capture device's file, requested from the device (see `common::pulse` for why not 48 kHz).
const DEVICE_RATE: u32 = 32_000;
/// Rate of the playback device's file: the device's default rate through `plug`, so ALSA converts nothing.
const PLAYBACK_RATE: u32 = 48_000;

fn config(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("live.toml"), text.to_string()).expect("test config parses")
}

fn resample_all(from: u32, to: u32, x: &[f32]) -> Vec<f32> {
    let mut r = StreamResampler::new(from, to).unwrap();
    let mut out = Vec::new();
    r.process(x, &mut out);
    r.finish(&mut out);
    out
}

#[test]
fn live_capture_and_playback() {
    let input = test_recording(DEVICE_RATE, 5.0);
    // Before any cpal call: ALSA reads its configuration once per process.
    let audio = PrivateAudio::start(DEVICE_RATE, &input, PLAYBACK_RATE);
    default_rate_is_the_devices();
    capture_matches_the_recording_in_real_time(&input);
    playback_reaches_the_device_and_counts_underruns(&audio);
}

/// Without `rate`, capture opens at the rate the device reports as its default (never an assumed 16 kHz).
fn default_rate_is_the_devices() {
    let devices = sigflow::io::devices::list().expect("device list");
    let testcap = devices
        .iter()
        .find(|d| d.id == "alsa:testcap")
        .unwrap_or_else(|| {
            let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
            panic!("alsa:testcap not listed; devices: {ids:?}")
        });
    let default = testcap
        .input
        .as_ref()
        .and_then(|i| i.default.clone())
        .expect("alsa:testcap has a default input configuration");
    eprintln!("alsa:testcap default input: {default:?}");
    let cf = config("[source]\nkind = \"capture\"\ndevice = \"alsa:testcap\"\n");
    let source = open_source(&cf).unwrap_or_else(|e| panic!("opening alsa:testcap: {e}"));
    assert_eq!(source.rate(), default.rate);
}

fn capture_matches_the_recording_in_real_time(input: &[f32]) {
    let cf = config(&format!(
        "[source]\nkind = \"capture\"\ndevice = \"alsa:testcap\"\nrate = {DEVICE_RATE}\n"
    ));
    let source = open_source(&cf).unwrap_or_else(|e| panic!("opening alsa:testcap: {e}"));
    assert!(source.is_live());
    assert_eq!(
        source.rate(),
        DEVICE_RATE,
        "capture opens at the requested rate"
    );
    let (producer, mut consumer) = rtrb::RingBuffer::new(DEVICE_RATE as usize * 4);
    let ctl = Arc::new(SourceControl::default());
    let handle = source
        .start(producer, Arc::clone(&ctl))
        .expect("capture starts");

    let mut captured: Vec<f32> = Vec::new();
    let mut arrivals: Vec<usize> = Vec::new();
    let mut timeline: Vec<(f64, usize)> = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(5_500) {
        let n = consumer.slots();
        if n > 0 {
            let chunk = consumer.read_chunk(n).unwrap();
            let (a, b) = chunk.as_slices();
            captured.extend_from_slice(a);
            captured.extend_from_slice(b);
            chunk.commit_all();
            arrivals.push(n);
        }
        timeline.push((t0.elapsed().as_secs_f64(), captured.len()));
        std::thread::sleep(Duration::from_millis(10));
    }
    ctl.stop.store(true, Ordering::Release);
    handle.join().expect("capture ends without error");
    assert_eq!(ctl.lost.load(Ordering::Relaxed), 0, "samples lost");
    assert_eq!(
        ctl.pushed.load(Ordering::Relaxed) as usize,
        captured.len() + consumer.slots()
    );

    // Pacing: samples received against wall time, from 0.5 s after the first samples to the end.
    let first = timeline
        .iter()
        .find(|(_, n)| *n > 0)
        .expect("no samples captured at all")
        .0;
    let start = timeline
        .iter()
        .find(|(t, _)| *t >= first + 0.5)
        .expect("capture started too late to measure pacing");
    let end = timeline.last().unwrap();
    let span = end.0 - start.0;
    assert!(span >= 2.0, "only {span:.2} s to measure pacing over");
    let measured = (end.1 - start.1) as f64 / span;
    let trace: Vec<String> = timeline
        .iter()
        .step_by(25)
        .map(|(t, n)| format!("{t:.2}s:{n}"))
        .collect();
    eprintln!("capture timeline: {}", trace.join(" "));
    let ratio = measured / DEVICE_RATE as f64;
    eprintln!(
        "capture: first samples after {first:.2} s; {measured:.0} samples/s over {span:.2} s = {:.3} x real time",
        ratio
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "capture pacing {ratio:.3} x real time (measured {measured:.0}/s)"
    );

    // Content at the device rate, aligned by cross-correlation.
    let lag = best_lag(&captured, input);
    let (got, want) = overlap(&captured, input, lag);
    eprintln!(
        "capture: recording found at lag {lag} samples; {} samples overlap",
        got.len()
    );
    assert!(
        got.len() >= DEVICE_RATE as usize * 2,
        "only {} samples of the recording were captured",
        got.len()
    );
    let e = error_db(got, want);
    eprintln!("capture: error vs recording {e:.1} dB");
    assert!(
        e < -60.0,
        "captured signal differs from the recording: {e:.1} dB"
    );

    // After StreamResampler to 16 kHz (fed in the chunk sizes that arrived) vs one-shot resampling of the file.
    let mut r = StreamResampler::new(DEVICE_RATE, 16_000).unwrap();
    let mut streamed = Vec::new();
    let mut pos = 0;
    for n in arrivals.iter().copied().cycle().take(arrivals.len() * 4) {
        if pos >= got.len() {
            break;
        }
        let n = n.min(got.len() - pos);
        r.process(&got[pos..pos + n], &mut streamed);
        pos += n;
    }
    r.process(&got[pos..], &mut streamed);
    r.finish(&mut streamed);
    let reference = resample_all(DEVICE_RATE, 16_000, want);
    assert_eq!(streamed.len(), reference.len());
    let edge = 200;
    let inner = edge..streamed.len() - edge;
    let e16 = error_db(&streamed[inner.clone()], &reference[inner]);
    eprintln!("capture: at 16 kHz, error vs one-shot resampling of the recording {e16:.1} dB");
    assert!(e16 < -60.0, "resampled capture differs: {e16:.1} dB");
}

/// What the sink is given reaches the device; when audio stops coming the device plays silence and the sink
/// counts the missing frames. (The device is opened once: `open_sink`'s playback arm is this same constructor.)
fn playback_reaches_the_device_and_counts_underruns(audio: &PrivateAudio) {
    let mut sink = PlaybackSink::open(Some("alsa:testplay"), "speech", 2.0)
        .unwrap_or_else(|e| panic!("opening alsa:testplay: {e:?}"));
    assert_eq!(sink.rate(), PLAYBACK_RATE);
    let stats = sink.stats();
    let given = test_recording(16_000, 3.0);
    let stage: Arc<str> = Arc::from("speech");
    let other: Arc<str> = Arc::from("other");
    for (i, chunk) in given.chunks(320).enumerate() {
        let audio_event = |s: &Arc<str>| {
            Event::new(
                s,
                (i * 320) as u64,
                EventKind::Audio {
                    rate: 16_000,
                    samples: Arc::from(chunk),
                    frames: chunk.len(),
                },
            )
        };
        sink.write(&audio_event(&stage)).unwrap();
        // Audio of other stages is not played.
        sink.write(&audio_event(&other)).unwrap();
    }
    // All but the resampler's look-ahead (flushed by `finish`) is taken by the device; then the ring runs dry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.underrun_frames.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let underruns = stats.underrun_frames.load(Ordering::Relaxed);
    sink.finish().expect("playback finishes");
    let played = stats.played_frames.load(Ordering::Relaxed);
    eprintln!("playback: {played} frames played, {underruns} frames of underrun counted after the audio ended");
    assert_eq!(
        played,
        (3 * PLAYBACK_RATE) as u64,
        "all audio given is played by the end"
    );
    assert!(underruns > 0, "a dry ring must be counted as underrun");
    let recorded = audio.recorded();
    let expected = resample_all(16_000, PLAYBACK_RATE, &given);
    assert!(
        recorded.len() >= expected.len(),
        "the device recorded {} samples, fewer than the {} given",
        recorded.len(),
        expected.len()
    );
    let lag = best_lag(&recorded, &expected);
    let (got, want) = overlap(&recorded, &expected, lag);
    eprintln!(
        "playback: {} samples recorded, signal at lag {lag}, {} overlap",
        recorded.len(),
        got.len()
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "part of the signal was not played"
    );
    // The resampler's look-ahead (the last ~400 samples) is flushed by `finish`, after the gap of silence that
    // the underrun check waited for: compare everything before it.
    let body = got.len() - 1000;
    let e = error_db(&got[..body], &want[..body]);
    eprintln!("playback: error vs given signal {e:.1} dB");
    assert!(
        e < -60.0,
        "played signal differs from the given one: {e:.1} dB"
    );
}
