//! The assistant with the real LFM2-Audio implementation on the tiny fixture checkpoint (random weights,
//! tests/fixtures/lfm2_audio/checkpoint): `configs/assistant.toml` runs end to end, and a reply through the whole
//! pipeline equals a direct call of the model on the same turn.
//!
//! Needs ONNX Runtime for the VAD: ORT_DYLIB_PATH must point at libonnxruntime.so.1.31.1.

use serde_json::Value;
use sigflow::config::ConfigFile;
use sigflow::kernels::quant::DType;
use sigflow::pipeline::Pipeline;
use sigflow::s2s::session::ResponseChunk;
use sigflow::s2s::stage::{load_responder, ResponseMode, S2sSettings};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_ort() {
    if let Err(e) = sigflow::onnx::runtime::ensure_loaded() {
        panic!("these tests need ONNX Runtime: {e}");
    }
}

fn checkpoint() -> PathBuf {
    root().join("tests/fixtures/lfm2_audio/checkpoint")
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn tagged<'a>(events: &'a [Value], tag: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == tag).collect()
}

fn read_f32_wav(path: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rate = r.spec().sample_rate;
    let x = match r.spec().sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.expect("sample")).collect(),
        hound::SampleFormat::Int => r
            .samples::<i16>()
            .map(|s| s.expect("sample") as f32 / 32768.0)
            .collect(),
    };
    (rate, x)
}

#[test]
fn the_assistant_config_runs_end_to_end_with_the_tiny_model() {
    require_ort();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(root().join("configs/assistant.toml")).expect("config");
    let reply = dir.path().join("reply.wav");
    let events = dir.path().join("events.jsonl");
    let text = text
        .replace(
            "/tmp/sigflow-assistant-reply.wav",
            reply.to_str().expect("utf8"),
        )
        .replace(
            "/tmp/sigflow-assistant.jsonl",
            events.to_str().expect("utf8"),
        );
    let config = root().join("configs/assistant-test.toml.tmp");
    // Kept next to the original so that its relative paths resolve the same way.
    std::fs::write(&config, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .arg("run")
        .arg(&config)
        .output()
        .expect("sigflow runs");
    let _ = std::fs::remove_file(&config);
    assert!(
        out.status.success(),
        "sigflow run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = read_jsonl(&events);
    let turns = tagged(&ev, "turn_start");
    let ends = tagged(&ev, "response_end");
    assert!(
        turns.len() >= 2,
        "{} turns in a 30 s conversation",
        turns.len()
    );
    assert_eq!(ends.len(), turns.len());
    let frames: u64 = ends
        .iter()
        .map(|e| e["frames"].as_u64().expect("frames"))
        .sum();
    assert!(frames > 0, "no reply audio");
    let (rate, audio) = read_f32_wav(&reply);
    assert_eq!(rate, 24_000);
    assert_eq!(
        audio.len() as u64,
        frames,
        "the reply WAV holds exactly the audio released"
    );
    assert!(audio.iter().any(|&s| s.abs() > 1e-3), "the reply is silent");
    let texts = tagged(&ev, "text");
    assert!(!texts.is_empty(), "no text events");
    // Each reply's text is the concatenation of its text events.
    for (i, e) in ev.iter().enumerate() {
        if e["event"] == "response_start" {
            let turn = e["turn"].as_u64().expect("turn");
            let mut joined = String::new();
            for f in &ev[i + 1..] {
                if f["event"] == "text" && f["stage"] == "assistant" {
                    joined.push_str(f["text"].as_str().expect("text"));
                }
                if f["event"] == "response_end" && f["turn"].as_u64() == Some(turn) {
                    assert_eq!(f["text"].as_str(), Some(joined.as_str()), "turn {turn}");
                    break;
                }
            }
        }
    }
}

fn settings() -> S2sSettings {
    S2sSettings {
        name: "assistant".into(),
        checkpoint: checkpoint(),
        dtype: DType::F32,
        threads: 1,
        mode: ResponseMode::Interleaved,
        max_new_tokens: 40,
        system_prompt: sigflow::s2s::session::DEFAULT_SYSTEM_PROMPT.into(),
        barge_in: false,
        stream_paced: true,
        max_turn: 30 * 16_000,
        wake: None,
    }
}

#[test]
fn a_reply_through_the_pipeline_equals_a_direct_call_of_the_model() {
    require_ort();
    let dir = tempfile::tempdir().expect("temp dir");
    // One user turn: the fixture's 1.5 s of speech between silences.
    let (rate, speech) = read_f32_wav(&checkpoint().join("../input.wav"));
    assert_eq!(rate, 16_000);
    let mut x = vec![0.0f32; 16_000];
    x.extend_from_slice(&speech);
    x.extend(std::iter::repeat_n(0.0f32, 4 * 16_000));
    let input = dir.path().join("turn.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&input, spec).expect("wav");
    for &s in &x {
        w.write_sample((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .expect("write");
    }
    w.finalize().expect("wav");
    let reply = dir.path().join("reply.wav");
    let events = dir.path().join("events.jsonl");
    let text = format!(
        "[source]\nkind = \"wav\"\npath = \"{input}\"\n\n\
         [[stage]]\nkind = \"onnx\"\nname = \"vad\"\npreset = \"vad\"\nmodel = \"models/silero_vad.onnx\"\nmin-silence = \"300ms\"\n\n\
         [[stage]]\nkind = \"s2s\"\nname = \"assistant\"\ncheckpoint = \"{ck}\"\ndtype = \"f32\"\nthreads = 1\n\
         max-new-tokens = 40\nvad = \"vad\"\nbarge-in = false\n\n\
         [[sink]]\nkind = \"wav\"\npath = \"{reply}\"\nfrom = \"assistant\"\nformat = \"float32\"\n\n\
         [[sink]]\nkind = \"jsonl\"\npath = \"{events}\"\n",
        input = input.display(),
        ck = checkpoint().display(),
        reply = reply.display(),
        events = events.display(),
    );
    let cf = ConfigFile::parse(&root().join("test.toml"), text).expect("config");
    Pipeline::from_config(&cf)
        .expect("pipeline")
        .start()
        .expect("start")
        .wait()
        .expect("run");

    let ev = read_jsonl(&events);
    let turns = tagged(&ev, "turn_start");
    assert_eq!(turns.len(), 1, "one user turn expected");
    let start = tagged(&ev, "speech_start")[0]["sample"]
        .as_u64()
        .expect("sample") as usize;
    let end = tagged(&ev, "speech_end")[0]["sample"]
        .as_u64()
        .expect("sample") as usize;
    assert!(
        start < 16_000 + 4_000 && end > 16_000 + 20_000,
        "VAD segment {start}..{end}"
    );

    let mut model = load_responder(&settings()).expect("model loads");
    let (mut audio, mut pieces) = (Vec::new(), Vec::new());
    model
        .respond(&x[start..end], &mut |c| {
            match c {
                ResponseChunk::Audio(a) => audio.extend(a),
                ResponseChunk::Text { piece, .. } => pieces.push(piece),
            }
            ControlFlow::Continue(())
        })
        .expect("direct reply");
    assert!(!audio.is_empty(), "the model said nothing");

    let (rate, got) = read_f32_wav(&reply);
    assert_eq!(rate, 24_000);
    assert_eq!(got, audio, "pipeline reply differs from the direct call");
    let texts: Vec<&str> = tagged(&ev, "text")
        .iter()
        .map(|e| e["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, pieces);
    let end_ev = tagged(&ev, "response_end")[0];
    assert_eq!(end_ev["frames"].as_u64(), Some(audio.len() as u64));
    assert_eq!(end_ev["interrupted"], false);
    assert_eq!(end_ev["text"].as_str(), Some(pieces.concat().as_str()));
}
