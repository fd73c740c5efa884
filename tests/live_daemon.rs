//! The daemon on live capture: `sigflow run` as a child process capturing from a file-backed ALSA device through a
//! private PulseAudio (no sound card). What its stages received (written back by a `wav` sink of the resampled
//! input) matches the replayed recording; SIGTERM drains and closes; the shipped live configs pass `check`; and a
//! `cnn` keyword spotter on live capture detects a keyword of the bundled speech, with the same detections as the
//! same stage run on what the daemon heard.

mod common;

use common::pulse::{write_s16, PrivateAudio};
use common::signal::{best_lag, error_db, overlap, test_recording};
use sigflow::dsp::resample::StreamResampler;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEVICE_RATE: u32 = 32_000;
const PLAYBACK_RATE: u32 = 48_000;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sigflow")
}

fn resample_all(from: u32, to: u32, x: &[f32]) -> Vec<f32> {
    let mut r = StreamResampler::new(from, to).expect("resampler");
    let mut out = Vec::new();
    r.process(x, &mut out);
    r.finish(&mut out);
    out
}

#[test]
fn daemon_on_live_capture() {
    let input = test_recording(DEVICE_RATE, 6.0);
    let audio = PrivateAudio::start(DEVICE_RATE, &input, PLAYBACK_RATE);
    shipped_live_configs_pass_check();
    captures_resamples_and_drains_on_sigterm(&audio, &input);
    keyword_spotter_on_live_capture(&audio);
}

/// Run `sigflow run cfg` for `seconds`, then SIGTERM it and wait for a clean exit.
fn run_for(cfg: &Path, seconds: f64) {
    let mut child = Command::new(bin())
        .args(["run", cfg.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sigflow");
    std::thread::sleep(Duration::from_secs_f64(seconds));
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sigflow did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
        .unwrap_or_default();
    assert!(status.success(), "exit {status:?}: {stderr}");
}

const KWS_STAGE: &str = r#"
[[stage]]
kind = "cnn"
name = "kws"
model = "MODEL"
rate = 16000
front-end = "log-mel"
n-mels = 40
n-fft = 400
mel-hop = 160
window = 16000
hop = 160
mode = "exact"
labels = ["background", "unknown", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "hey_sigflow"]
detect = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "hey_sigflow"]
threshold = 0.7
refractory = "1s"
emit-scores = false
"#;

fn detections(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|e| e["event"] == "detection" && e["stage"] == "kws")
        .map(|e| e["label"].as_str().expect("label").to_string())
        .collect()
}

/// The keyword spotter of configs/default.toml on live capture of 7–13 s of audio/speech_with_keywords.wav, whose
/// "left" lies at 9.4–10.0 s (audio/speech_with_keywords.tsv).
fn keyword_spotter_on_live_capture(audio: &PrivateAudio) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut r =
        hound::WavReader::open(root.join("audio/speech_with_keywords.wav")).expect("speech");
    assert_eq!(r.spec().sample_rate, 16_000);
    let speech: Vec<f32> = r
        .samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect();
    // The capture device replays the file again from its start when the daemon opens it.
    let excerpt = resample_all(16_000, DEVICE_RATE, &speech[16_000 * 7..16_000 * 13]);
    write_s16(&audio.path("input.raw"), &excerpt);
    let model = root.join("models/kws.onnx");
    let stage = KWS_STAGE.replace("MODEL", model.to_str().expect("utf8"));
    let cfg = audio.path("kws.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[source]
kind = "capture"
device = "alsa:testcap"
rate = {DEVICE_RATE}
{stage}
[[sink]]
kind = "jsonl"
path = "kws.jsonl"

[[sink]]
kind = "wav"
path = "kws-heard.wav"
from = "input"
rate = 16000
format = "float32"
"#
        ),
    )
    .expect("write config");
    run_for(&cfg, 6.5);
    let live = detections(&std::fs::read_to_string(audio.path("kws.jsonl")).expect("events"));
    eprintln!("live detections: {live:?}");
    assert!(
        live.iter().any(|l| l == "left"),
        "no `left` detected on live capture: {live:?}"
    );
    assert!(live.len() <= 2, "detections on live capture: {live:?}");

    // The same stage on what the daemon heard (a WAV source) gives the same detections.
    let cfg = audio.path("kws-wav.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"wav\"\npath = \"kws-heard.wav\"\n{stage}\n[[sink]]\nkind = \"jsonl\"\npath = \"kws-wav.jsonl\"\n"
        ),
    )
    .expect("write config");
    let out = Command::new(bin())
        .args(["run", cfg.to_str().expect("utf8")])
        .output()
        .expect("sigflow runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline =
        detections(&std::fs::read_to_string(audio.path("kws-wav.jsonl")).expect("events"));
    assert_eq!(live, offline, "live and offline detections differ");
}

fn shipped_live_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("configs/") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(bin())
                .args(["check", p.to_str().expect("utf8")])
                .output()
                .expect("check");
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} configs");
}

fn captures_resamples_and_drains_on_sigterm(audio: &PrivateAudio, input: &[f32]) {
    let cfg = audio.path("live.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[source]
kind = "capture"
device = "alsa:testcap"
rate = {DEVICE_RATE}

[[stage]]
kind = "level"
name = "level"
rate = 16000
window = "100ms"

[[sink]]
kind = "jsonl"
path = "events.jsonl"

[[sink]]
kind = "wav"
path = "heard.wav"
from = "input"
rate = 16000
format = "float32"
"#
        ),
    )
    .expect("write config");
    // Capture starts 1–2 s late on this setup; 6 s of recording leaves ≥ 3 s of content.
    run_for(&cfg, 6.5);

    let mut r = hound::WavReader::open(audio.path("heard.wav")).expect("valid WAV after SIGTERM");
    assert_eq!(r.spec().sample_rate, 16_000);
    let heard: Vec<f32> = r.samples::<f32>().map(|s| s.expect("sample")).collect();
    let reference = resample_all(DEVICE_RATE, 16_000, input);
    // Content, not start time: find where the heard signal sits in the reference.
    let lag = best_lag(&reference, &heard);
    let (want, got) = overlap(&reference, &heard, lag);
    assert!(
        want.len() > 16_000 * 3,
        "only {} overlapping samples (lag {lag})",
        want.len()
    );
    // The capture file is 16-bit; the device path resamples nothing (device opened at the file's rate), so only
    // quantisation and the 32→16 kHz resampler separate the two.
    let err = error_db(got, want);
    assert!(
        err < -40.0,
        "heard differs from the recording by {err:.1} dB"
    );

    let events = std::fs::read_to_string(audio.path("events.jsonl")).expect("events");
    let levels: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|e: &serde_json::Value| e["event"] == "level")
        .collect();
    // One level per 100 ms of what was heard (within a window), stamped in device-rate samples.
    let expect = heard.len() / 1_600;
    assert!(
        levels.len().abs_diff(expect) <= 1,
        "{} levels for {expect} windows",
        levels.len()
    );
    for (k, e) in levels.iter().enumerate() {
        assert_eq!(e["sample"].as_u64(), Some(3_200 * (k as u64 + 1)));
    }
}
