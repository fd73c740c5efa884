//! The `onnx` stage with the Silero VAD preset on the bundled pyannote sample: parity with the reference Python
//! package (fixture from tests/fixtures/gen_vad.py) and frame accuracy against the sample's RTTM ground truth.
//!
//! Needs ONNX Runtime: ORT_DYLIB_PATH must point at libonnxruntime.so.1.31.1 from the `onnxruntime==1.31.1` wheel.

use serde_json::Value;
use sigflow::config::{ConfigFile, StageConfig};
use sigflow::onnx::stage;
use sigflow::{Event, EventKind, Stage};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_ort() {
    if let Err(e) = sigflow::onnx::runtime::ensure_loaded() {
        panic!("these tests need ONNX Runtime: {e}");
    }
}

fn read_pcm16(path: &Path) -> (u32, Vec<f32>) {
    let mut r = hound::WavReader::open(path).expect("bundled wav opens");
    let spec = r.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (1, 16));
    let x = r
        .samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect();
    (spec.sample_rate, x)
}

fn vad_config(extra: &str) -> ConfigFile {
    let text = format!(
        "[source]\nkind = \"wav\"\npath = \"audio/pyannote_sample.wav\"\n\n[[stage]]\nkind = \"onnx\"\nname = \"vad\"\n\
         preset = \"vad\"\nmodel = \"models/silero_vad.onnx\"\n{extra}"
    );
    ConfigFile::parse(&root().join("test.toml"), text).expect("config parses")
}

fn onnx_cfg(cf: &ConfigFile) -> &stage::OnnxStageConfig {
    match &cf.config.stages[0] {
        StageConfig::Onnx(c) => c,
        _ => panic!("first stage is not onnx"),
    }
}

/// Run the stage over `x` in uneven blocks, as the stream worker would.
fn run(stage: &mut dyn Stage, x: &[f32]) -> Vec<Event> {
    let mut out = Vec::new();
    let blocks = [160usize, 1000, 37, 512, 4096, 3];
    let mut i = 0;
    let mut k = 0;
    while i < x.len() {
        let n = blocks[k % blocks.len()].min(x.len() - i);
        stage.push(&x[i..i + n], &mut out);
        i += n;
        k += 1;
    }
    stage.finish(&mut out);
    out
}

fn segments(events: &[Event]) -> Vec<(u64, u64)> {
    let mut segs = Vec::new();
    let mut open = None;
    for e in events {
        match e.kind {
            EventKind::SpeechStart { .. } => {
                assert!(open.is_none(), "two starts in a row");
                open = Some(e.sample);
            }
            EventKind::SpeechEnd { duration } => {
                let s = open.take().expect("end without start");
                assert!((duration - (e.sample - s) as f64 / 16000.0).abs() < 1e-9);
                segs.push((s, e.sample));
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "segment left open after finish");
    segs
}

fn fixture() -> Value {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/vad/pyannote_sample_silero.json"))
            .expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn probabilities_and_segments_match_reference_package() {
    require_ort();
    let cf = vad_config("emit-scores = true\n");
    stage::check(onnx_cfg(&cf), &cf, 0).expect("config checks");
    let mut st = stage::build(onnx_cfg(&cf), &cf).expect("stage builds");
    let (rate, x) = read_pcm16(&root().join("audio/pyannote_sample.wav"));
    assert_eq!(rate, 16_000);
    let events = run(st.as_mut(), &x);

    let fx = fixture();
    let want: Vec<f64> = fx["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got: Vec<(u64, f32)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Scores { scores, labels } => {
                assert_eq!(&labels[..], &["speech".to_string()]);
                Some((e.sample, scores[0]))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "one probability per 512-sample chunk"
    );
    let mut worst = 0.0f64;
    for (i, ((at, p), w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(*at, i as u64 * 512);
        worst = worst.max((*p as f64 - w).abs());
    }
    assert!(worst < 1e-4, "largest probability difference {worst}");
    assert!(want.iter().any(|&p| p > 0.9) && want.iter().any(|&p| p < 0.1));

    let want_segs: Vec<(u64, u64)> = fx["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_u64().unwrap(), s[1].as_u64().unwrap()))
        .collect();
    assert!(!want_segs.is_empty());
    assert_eq!(segments(&events), want_segs);

    // reset() starts over: the same input gives the same events.
    st.reset();
    let again = run(st.as_mut(), &x);
    assert_eq!(segments(&again), want_segs);
}

/// Speech/non-speech per 10 ms frame from the RTTM (union of all speakers).
fn rttm_frames(path: &Path, frames: usize) -> Vec<bool> {
    let text = std::fs::read_to_string(path).expect("rttm");
    let mut truth = vec![false; frames];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&"SPEAKER") {
            continue;
        }
        let start: f64 = f[3].parse().unwrap();
        let dur: f64 = f[4].parse().unwrap();
        let a = (start * 100.0).round() as usize;
        let b = (((start + dur) * 100.0).round() as usize).min(frames);
        truth[a..b].iter_mut().for_each(|t| *t = true);
    }
    truth
}

#[test]
fn segments_agree_with_rttm_ground_truth() {
    require_ort();
    let cf = vad_config("");
    let mut st = stage::build(onnx_cfg(&cf), &cf).expect("stage builds");
    let (_, x) = read_pcm16(&root().join("audio/pyannote_sample.wav"));
    let events = run(st.as_mut(), &x);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Scores { .. })),
        "vad emits no scores unless asked"
    );
    let frames = x.len() / 160;
    let truth = rttm_frames(&root().join("audio/pyannote_sample.rttm"), frames);
    let mut hyp = vec![false; frames];
    for (s, e) in segments(&events) {
        let a = (s / 160) as usize;
        let b = ((e / 160) as usize).min(frames);
        hyp[a..b].iter_mut().for_each(|h| *h = true);
    }
    let agree = truth.iter().zip(&hyp).filter(|(t, h)| t == h).count();
    let acc = agree as f64 / frames as f64;
    eprintln!(
        "VAD frame accuracy vs RTTM: {:.2} % over {frames} frames",
        acc * 100.0
    );
    assert!(acc >= 0.95, "frame accuracy {acc:.4} < 0.95");
}

#[test]
fn wrong_tensor_names_are_reported_with_the_file() {
    require_ort();
    let cf = vad_config("state = [{ input = \"h\", output = \"hn\", shape = [2, 1, 128] }]\n");
    let err = stage::build(onnx_cfg(&cf), &cf)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("silero_vad.onnx"), "{err}");
    assert!(err.contains("`h` is not an input"), "{err}");
    assert!(err.contains("state"), "{err}");

    let cf = vad_config("output = \"prob\"\n");
    let err = stage::build(onnx_cfg(&cf), &cf)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("`prob` is not an output") && err.contains("stateN"),
        "{err}"
    );

    let cf =
        vad_config("state = [{ input = \"state\", output = \"stateN\", shape = [2, 1, 64] }]\n");
    let err = stage::build(onnx_cfg(&cf), &cf)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn config_errors_point_at_the_key() {
    let cf = vad_config("min-silence = \"40ms\"\n");
    let err = stage::check(onnx_cfg(&cf), &cf, 0).unwrap_err().to_string();
    assert!(
        err.contains("test.toml:10:1: stage[0].min-silence"),
        "{err}"
    );

    let cf = vad_config("rate = 44100\n");
    let err = stage::check(onnx_cfg(&cf), &cf, 0).unwrap_err().to_string();
    assert!(
        err.contains("stage[0].rate") && err.contains("16000"),
        "{err}"
    );

    let text = "[source]\nkind = \"wav\"\npath = \"a.wav\"\n\n[[stage]]\nkind = \"onnx\"\nname = \"m\"\n\
                model = \"models/nope.onnx\"\nrate = 16000\nchunk = 100\ninput = \"x\"\noutput = \"y\"\n";
    let cf = ConfigFile::parse(&root().join("t.toml"), text.into()).unwrap();
    let err = stage::check(onnx_cfg(&cf), &cf, 0).unwrap_err().to_string();
    assert!(
        err.contains("t.toml:8:1: stage[0].model") && err.contains("nope.onnx"),
        "{err}"
    );

    let text =
        "[source]\nkind = \"wav\"\npath = \"a.wav\"\n\n[[stage]]\nkind = \"onnx\"\nname = \"m\"\n\
                model = \"models/silero_vad.onnx\"\nrate = 16000\nchunk = 100\ninput = \"x\"\n\
                output = \"y\"\nthreshold = 0.3\n";
    let cf = ConfigFile::parse(&root().join("t.toml"), text.into()).unwrap();
    let err = stage::check(onnx_cfg(&cf), &cf, 0).unwrap_err().to_string();
    assert!(
        err.contains("stage[0].threshold") && err.contains("preset"),
        "{err}"
    );

    let err = ConfigFile::parse(
        &root().join("t.toml"),
        "[source]\nkind = \"wav\"\npath = \"a.wav\"\n[[stage]]\nkind = \"onnx\"\nname = \"m\"\nmodel = \"x\"\nbogus = 1\n"
            .into(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("t.toml:8:1") && err.contains("bogus"), "{err}");
}
