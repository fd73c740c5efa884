//! Sinks: JSON lines per event; WAV files valid after finish whatever arrived, at the right rate and content.

use sigflow::config::ConfigFile;
use sigflow::event::{Event, EventKind};
use sigflow::io::open_sink;
use std::path::Path;
use std::sync::Arc;

fn config_in(dir: &Path, sinks: &str) -> ConfigFile {
    let path = dir.join("sigflow.toml");
    std::fs::write(
        &path,
        format!("[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n{sinks}"),
    )
    .unwrap();
    ConfigFile::load(&path).unwrap()
}

fn audio(stage: &str, rate: u32, samples: &[f32]) -> Event {
    Event::new(
        &Arc::from(stage),
        0,
        EventKind::Audio {
            rate,
            samples: Arc::from(samples),
            frames: samples.len(),
        },
    )
}

#[test]
fn jsonl_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[[sink]]\nkind = \"jsonl\"\npath = \"events.jsonl\"\n",
    );
    let mut sink = open_sink(&cf, 0, 16_000).unwrap();
    let stage: Arc<str> = Arc::from("meter");
    sink.write(&Event::new(
        &stage,
        160,
        EventKind::Level {
            rms_dbfs: -20.0,
            peak_dbfs: -6.0,
        },
    ))
    .unwrap();
    sink.write(&Event::new(
        &stage,
        320,
        EventKind::Activity { active: true },
    ))
    .unwrap();
    sink.write(&audio("tts", 16_000, &[0.0; 10])).unwrap();
    sink.finish().unwrap();
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["event"], "level");
    assert_eq!(lines[0]["stage"], "meter");
    assert_eq!(lines[0]["sample"], 160);
    assert_eq!(lines[0]["rms_dbfs"], -20.0);
    assert_eq!(lines[1]["active"], true);
    assert_eq!(lines[2]["event"], "audio");
    assert_eq!(lines[2]["frames"], 10);
}

#[test]
fn wav_of_input_exists_and_is_valid_even_without_audio() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[[sink]]\nkind = \"wav\"\npath = \"in.wav\"\nfrom = \"input\"\n\n[[sink]]\nkind = \"wav\"\npath = \"tts.wav\"\nfrom = \"tts\"\nformat = \"float32\"\n",
    );
    let mut input = open_sink(&cf, 0, 44_100).unwrap();
    // Created up front at the source rate.
    assert!(dir.path().join("in.wav").exists());
    let mut tts = open_sink(&cf, 1, 44_100).unwrap();
    input.finish().unwrap();
    tts.finish().unwrap();
    let r = hound::WavReader::open(dir.path().join("in.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 44_100);
    assert_eq!(r.len(), 0);
    let r = hound::WavReader::open(dir.path().join("tts.wav")).unwrap();
    assert_eq!(r.len(), 0);
    assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
}

#[test]
fn wav_writes_its_stage_audio_only() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[[sink]]\nkind = \"wav\"\npath = \"tts.wav\"\nfrom = \"tts\"\n\n[[sink]]\nkind = \"wav\"\npath = \"f.wav\"\nfrom = \"tts\"\nformat = \"float32\"\n",
    );
    let mut pcm = open_sink(&cf, 0, 16_000).unwrap();
    let mut float = open_sink(&cf, 1, 16_000).unwrap();
    // Not created before the first audio (the rate is the stage's).
    assert!(!dir.path().join("tts.wav").exists());
    let a: Vec<f32> = (0..500).map(|i| (i as f32 * 0.05).sin() * 0.7).collect();
    for sink in [&mut pcm, &mut float] {
        sink.write(&audio("tts", 24_000, &a[..200])).unwrap();
        sink.write(&audio("other", 24_000, &[0.9; 50])).unwrap();
        sink.write(&Event::new(
            &Arc::from("tts"),
            0,
            EventKind::Text { text: "hi".into() },
        ))
        .unwrap();
        sink.write(&audio("tts", 24_000, &a[200..])).unwrap();
        sink.finish().unwrap();
    }
    let mut r = hound::WavReader::open(dir.path().join("tts.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 24_000);
    assert_eq!(r.spec().bits_per_sample, 16);
    let got: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let want: Vec<i16> = a.iter().map(|v| (v * 32_767.0).round() as i16).collect();
    assert_eq!(got, want);
    let mut r = hound::WavReader::open(dir.path().join("f.wav")).unwrap();
    let got: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
    assert_eq!(got, a);
}

#[test]
fn wav_of_input_at_its_own_rate_is_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[[sink]]\nkind = \"wav\"\npath = \"in8k.wav\"\nfrom = \"input\"\nrate = 8000\nformat = \"float32\"\n",
    );
    let mut sink = open_sink(&cf, 0, 16_000).unwrap();
    let tone: Vec<f32> = (0..16_000)
        .map(|i| (std::f64::consts::TAU * 500.0 * i as f64 / 16_000.0).sin() as f32 * 0.5)
        .collect();
    for chunk in tone.chunks(160) {
        sink.write(&audio("input", 16_000, chunk)).unwrap();
    }
    sink.finish().unwrap();
    let mut r = hound::WavReader::open(dir.path().join("in8k.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 8000);
    let got: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
    assert_eq!(got.len(), 8000);
    for (k, v) in got.iter().enumerate().skip(200).take(7600) {
        let want = (std::f64::consts::TAU * 500.0 * k as f64 / 8000.0).sin() * 0.5;
        assert!((*v as f64 - want).abs() < 2e-3, "sample {k}: {v} vs {want}");
    }
}
