//! int8 weights on the bundled models, through the `cnn` stage (`weights = "int8"` vs `"f32"`): the keyword
//! spotter's top-1 label on every window of audio/speech_with_keywords.wav, and the ECG beat detector's beats on
//! the MIT-BIH 208 excerpt matched within 50 ms. Prints the numbers the README quotes.

use sigflow::config::{ConfigFile, StageConfig};
use sigflow::{Event, EventKind};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_stage(wav: &str, stage: &str, x: &[f32]) -> Vec<Event> {
    let text =
        format!("[source]\nkind = \"wav\"\npath = \"{wav}\"\n\n[[stage]]\nkind = \"cnn\"\n{stage}");
    let cf = ConfigFile::parse(&root().join("test.toml"), text).expect("parses");
    let StageConfig::Cnn(c) = &cf.config.stages[0] else {
        panic!("not a cnn stage")
    };
    sigflow::cnn::stage::check(c, &cf, 0).expect("checks");
    let mut st = sigflow::cnn::stage::build(c, &cf).expect("builds");
    let mut out = Vec::new();
    for b in x.chunks(4000) {
        st.push(b, &mut out);
    }
    st.finish(&mut out);
    out
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn kws_int8_top1_agrees_with_f32_on_the_recording() {
    let mut r = hound::WavReader::open(root().join("audio/speech_with_keywords.wav"))
        .expect("bundled speech opens");
    let x: Vec<f32> = r
        .samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect();
    let scores = |weights: &str| -> Vec<Vec<f32>> {
        let stage = format!(
            "name = \"kws\"\nmodel = \"models/kws.onnx\"\nrate = 16000\nfront-end = \"log-mel\"\nn-mels = 40\n\
             n-fft = 400\nmel-hop = 160\nwindow = 16000\nhop = 160\nweights = \"{weights}\"\n"
        );
        run_stage("audio/speech_with_keywords.wav", &stage, &x)
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Scores { scores, .. } => Some(scores),
                _ => None,
            })
            .collect()
    };
    let (f32s, int8s) = (scores("f32"), scores("int8"));
    assert!(f32s.len() > 4000, "{} windows", f32s.len());
    assert_eq!(f32s.len(), int8s.len());
    let agree = f32s
        .iter()
        .zip(&int8s)
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    let worst = f32s
        .iter()
        .zip(&int8s)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(p, q)| (p - q).abs()))
        .fold(0.0f32, f32::max);
    let share = agree as f64 / f32s.len() as f64;
    println!(
        "kws int8 vs f32: top-1 agreement {agree}/{} = {:.2} %, max |score diff| {worst:.4}",
        f32s.len(),
        100.0 * share
    );
    assert!(share >= 0.99, "top-1 agreement {share}");
    assert!(worst > 0.0, "the int8 run used f32 weights");
}

#[test]
fn ecg_int8_beats_match_f32_within_50_ms() {
    let mut r = hound::WavReader::open(root().join("audio/mitbih208_excerpt.wav"))
        .expect("bundled ECG opens");
    let x: Vec<f32> = r.samples::<f32>().map(|s| s.expect("sample")).collect();
    let beats = |weights: &str| -> Vec<u64> {
        let stage = format!(
            "name = \"ecg\"\nmodel = \"models/ecg_beats.onnx\"\nrate = 360\nevents = \"beats\"\nwindow = 1080\n\
             hop = 36\nthreshold = 0.5\ndelay = 72\nrefractory = \"200ms\"\nweights = \"{weights}\"\n"
        );
        run_stage("audio/mitbih208_excerpt.wav", &stage, &x)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Beat { .. }))
            .map(|e| e.sample)
            .collect()
    };
    let (f32b, int8b) = (beats("f32"), beats("int8"));
    assert!(f32b.len() > 400, "{} beats", f32b.len());
    // Greedy one-to-one matching in time order, tolerance 50 ms = 18 samples at 360 Hz.
    let tol = 18u64;
    let (mut i, mut j, mut matched) = (0, 0, 0);
    while i < f32b.len() && j < int8b.len() {
        if f32b[i].abs_diff(int8b[j]) <= tol {
            matched += 1;
            i += 1;
            j += 1;
        } else if f32b[i] < int8b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    let (recall, precision) = (
        matched as f64 / f32b.len() as f64,
        matched as f64 / int8b.len() as f64,
    );
    println!(
        "ecg int8 vs f32: {} / {} beats, {matched} matched within 50 ms ({:.2} % of f32, {:.2} % of int8)",
        f32b.len(),
        int8b.len(),
        100.0 * recall,
        100.0 * precision
    );
    assert!(recall >= 0.99 && precision >= 0.99, "{recall} {precision}");
}
