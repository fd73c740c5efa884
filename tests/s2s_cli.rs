//! `sigflow s2s`, `sigflow detokenize` and `sigflow bench s2s` argument handling, on the test checkpoint in
//! tests/fixtures/lfm2_audio/.

use sigflow::cnn::npy;
use sigflow::kernels::quant::DType;
use sigflow::s2s::generate::{Conversation, GenerationParams, Mode, Token};
use sigflow::s2s::lfm2_audio::{Lfm2Audio, INPUT_RATE};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2_audio")
        .join(name)
}

fn sigflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fixture's prompt as a segments file next to a copy of input.wav.
fn write_prompt(dir: &Path) -> PathBuf {
    std::fs::copy(fixture("input.wav"), dir.join("turn.wav")).unwrap();
    let prompt = dir.join("segments.json");
    std::fs::write(
        &prompt,
        r#"[{"text_ids": [1, 6, 40, 10, 50, 51, 52, 7, 10, 6, 41, 10]}, {"audio": "turn.wav"},
            {"text_ids": [7, 10, 6, 42, 10]}]"#,
    )
    .unwrap();
    prompt
}

fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    (rate, r.into_samples::<f32>().map(|v| v.unwrap()).collect())
}

#[test]
fn s2s_writes_the_reference_tokens_and_the_library_reply() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = write_prompt(dir.path());
    let (wav, tok) = (dir.path().join("reply.wav"), dir.path().join("tokens.json"));
    let ck = fixture("checkpoint");
    let out = sigflow(&[
        "s2s",
        "--checkpoint",
        s(&ck),
        "--prompt",
        s(&prompt),
        "--mode",
        "interleaved",
        "--greedy",
        "--max-new-tokens",
        "30",
        "--out",
        s(&wav),
        "--tokens-out",
        s(&tok),
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Token> = serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    let want: Vec<Token> =
        serde_json::from_str(&std::fs::read_to_string(fixture("interleaved_tokens.json")).unwrap())
            .unwrap();
    assert_eq!(got, want);
    // The library run: same prompt, same generation, batch detokenization of the sounding frames.
    let model = Arc::new(Lfm2Audio::load(&ck, DType::F32, 2).unwrap());
    let segments = sigflow::s2s::cli::read_prompt_segments(&prompt).unwrap();
    let mut conv = Conversation::new(model.clone());
    conv.push(&segments).unwrap();
    let lib = conv
        .generate(GenerationParams::greedy(Mode::Interleaved, 30), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(lib, got);
    let frames: Vec<u32> = lib
        .iter()
        .filter(|t| !t.is_end_of_audio())
        .filter_map(|t| match t {
            Token::Audio(c) => Some(c.clone()),
            Token::Text(_) => None,
        })
        .flatten()
        .collect();
    let detok = model.detokenizer.as_ref().unwrap();
    let batch = detok.decode(&frames, frames.len() / 8).unwrap();
    let (rate, audio) = read_wav(&wav);
    assert_eq!(rate, 24_000);
    assert_eq!(audio.len(), batch.len());
    let peak = batch.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = audio
        .iter()
        .zip(&batch)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        peak > 0.0 && err <= 1e-4 * peak,
        "max error {err}, peak {peak}"
    );
    // The sequential mode through the CLI.
    let out = sigflow(&[
        "s2s",
        "--checkpoint",
        s(&ck),
        "--prompt",
        s(&prompt),
        "--mode",
        "sequential",
        "--greedy",
        "--max-new-tokens",
        "30",
        "--tokens-out",
        s(&tok),
    ]);
    assert!(out.status.success());
    let got: Vec<Token> = serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    let want: Vec<Token> =
        serde_json::from_str(&std::fs::read_to_string(fixture("sequential_tokens.json")).unwrap())
            .unwrap();
    assert_eq!(got, want);
}

#[test]
fn detokenize_matches_the_reference_waveform() {
    let dir = tempfile::tempdir().unwrap();
    let wave = dir.path().join("wave.npy");
    let out = sigflow(&[
        "detokenize",
        "--detokenizer",
        s(&fixture("checkpoint/audio_detokenizer")),
        "--codes",
        s(&fixture("detok_codes.npy")),
        "--output",
        s(&wave),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = npy::read(&wave).unwrap();
    let want = npy::read(&fixture("detok_wave.npy")).unwrap();
    assert_eq!(got.shape, want.shape);
    let peak = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * peak, "max error {err}, peak {peak}");
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = sigflow(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_arguments_and_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = fixture("checkpoint");
    let wav = fixture("input.wav");
    // No tokenizer.json: the chat template cannot be used.
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--input", s(&wav)],
        &["tokenizer.json", "--prompt"],
    );
    fails_with(&["s2s", "--checkpoint", s(&ck)], &["--input"]);
    fails_with(
        &[
            "s2s",
            "--checkpoint",
            s(&ck),
            "--input",
            s(&wav),
            "--mode",
            "chatty",
        ],
        &["unknown mode `chatty`"],
    );
    fails_with(
        &[
            "s2s",
            "--checkpoint",
            s(&ck),
            "--prompt",
            s(&wav),
            "--dtype",
            "q3",
        ],
        &["unknown dtype `q3`"],
    );
    // A malformed segments file, an unknown key, a missing audio file, an out-of-vocabulary id.
    let p = d.join("p.json");
    std::fs::write(&p, "[{\"text_ids\": [1, 2]},").unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--prompt", s(&p)],
        &["p.json"],
    );
    std::fs::write(&p, r#"[{"text_ids": [1], "audio": "x.wav"}]"#).unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--prompt", s(&p)],
        &["p.json", "segment 0"],
    );
    std::fs::write(&p, r#"[{"audio": "missing.wav"}]"#).unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--prompt", s(&p)],
        &["missing.wav"],
    );
    std::fs::write(&p, r#"[{"text_ids": [1, 99999]}]"#).unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--prompt", s(&p)],
        &["99999", "vocabulary"],
    );
    // Not a checkpoint.
    std::fs::write(&p, r#"[{"text_ids": [1]}]"#).unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(d), "--prompt", s(&p)],
        &["config.json"],
    );
    // A truncated WAV as the user turn.
    let bytes = std::fs::read(&wav).unwrap();
    std::fs::write(d.join("short.wav"), &bytes[..30]).unwrap();
    std::fs::write(&p, r#"[{"audio": "short.wav"}]"#).unwrap();
    fails_with(
        &["s2s", "--checkpoint", s(&ck), "--prompt", s(&p)],
        &["short.wav"],
    );
    // detokenize: wrong shape, out-of-range code, not an npy.
    let codes = d.join("codes.npy");
    npy::write(
        &codes,
        &npy::Array {
            shape: vec![2, 4],
            data: vec![1.0; 8],
        },
    )
    .unwrap();
    let det = fixture("checkpoint/audio_detokenizer");
    let out = d.join("w.npy");
    fails_with(
        &[
            "detokenize",
            "--detokenizer",
            s(&det),
            "--codes",
            s(&codes),
            "--output",
            s(&out),
        ],
        &["codes.npy", "[frames, 8]"],
    );
    npy::write(
        &codes,
        &npy::Array {
            shape: vec![1, 8],
            data: vec![0.0, 1.0, 2.0, 2048.0, 0.0, 0.0, 0.0, 0.0],
        },
    )
    .unwrap();
    fails_with(
        &[
            "detokenize",
            "--detokenizer",
            s(&det),
            "--codes",
            s(&codes),
            "--output",
            s(&out),
        ],
        &["codes.npy", "2048", "codebook 3"],
    );
    fails_with(
        &[
            "detokenize",
            "--detokenizer",
            s(&det),
            "--codes",
            s(&wav),
            "--output",
            s(&out),
        ],
        &["input.wav", ".npy"],
    );
    fails_with(
        &[
            "detokenize",
            "--detokenizer",
            s(d),
            "--codes",
            s(&fixture("detok_codes.npy")),
            "--output",
            s(&out),
        ],
        &["config.json"],
    );
    // bench s2s: bad lists.
    fails_with(&["bench", "s2s", "--dtype", "q5"], &["--dtype", "q5"]);
    fails_with(&["bench", "s2s", "--threads", "0"], &["--threads"]);
}

#[test]
fn read_wav_mono_resamples_to_16k() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("48k_stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..48_000 {
        let v = ((i as f32 * 440.0 * 2.0 * std::f32::consts::PI / 48_000.0).sin() * 8000.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let x = sigflow::s2s::cli::read_wav_mono(&path, INPUT_RATE).unwrap();
    assert!((x.len() as i64 - 16_000).abs() <= 16, "{} samples", x.len());
    let rms = (x[1000..15000].iter().map(|v| v * v).sum::<f32>() / 14000.0).sqrt();
    let want = 8000.0 / 32768.0 / 2f32.sqrt();
    assert!((rms - want).abs() < 0.01 * want, "rms {rms} vs {want}");
}
