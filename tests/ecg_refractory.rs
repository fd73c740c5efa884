//! The beat stages' peak picking against training/ecg/evaluate.py's on a slow simulated record whose P waves are
//! nearly as tall as its R waves (fixture from tests/fixtures/gen_ecg_refractory.py: the bundled model's
//! probabilities and the beats Python picks from them). With the default RR-dependent refractory period sigflow's
//! picker gives exactly Python's beats, batch and streamed; with a fixed 200 ms, exactly Python's fixed-rule beats,
//! which add a false beat on most P waves.

use serde_json::Value;
use sigflow::dsp::beats::{pick_beats, BeatParams, BeatPicker, BeatsKeys};
use std::path::PathBuf;

fn fixture() -> (Vec<f32>, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecg");
    let bytes = std::fs::read(dir.join("slow_record_probabilities.f32")).expect("fixture exists");
    assert_eq!(bytes.len() % 4, 0);
    let probs = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let text = std::fs::read_to_string(dir.join("slow_record_beats.json")).expect("fixture exists");
    (probs, serde_json::from_str(&text).expect("JSON"))
}

fn samples(v: &Value, key: &str) -> Vec<u64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is a list"))
        .iter()
        .map(|x| x.as_u64().expect("sample index"))
        .collect()
}

fn picked(probs: &[f32], params: &BeatParams) -> Vec<u64> {
    pick_beats(probs, params).iter().map(|b| b.sample).collect()
}

/// Beats within 50 ms (18 samples) of no label.
fn false_beats(beats: &[u64], labels: &[u64]) -> usize {
    beats
        .iter()
        .filter(|&&b| labels.iter().all(|&l| b.abs_diff(l) > 18))
        .count()
}

#[test]
fn the_stage_defaults_pick_the_beats_python_picks() {
    let (probs, fx) = fixture();
    assert_eq!(probs.len(), 60 * 360);
    let params = BeatsKeys::default()
        .resolve(360)
        .expect("defaults are valid")
        .params;
    assert_eq!(params.threshold as f64, fx["threshold"].as_f64().unwrap());
    assert_eq!(params.delay, fx["delay"].as_u64().unwrap());
    assert_eq!(params.refractory, fx["refractory"].as_u64().unwrap());
    assert_eq!(params.refractory_rr, fx["refractory_rr"].as_f64().unwrap());
    assert_eq!(
        params.refractory_max,
        fx["refractory_max"].as_u64().unwrap()
    );

    let want = samples(&fx, "beats_rr");
    assert_eq!(picked(&probs, &params), want);
    // streamed in uneven blocks
    let mut picker = BeatPicker::new(params);
    let mut got = Vec::new();
    for block in probs.chunks(97) {
        picker.push(block, &mut got);
    }
    picker.finish(&mut got);
    assert_eq!(got.iter().map(|b| b.sample).collect::<Vec<_>>(), want);

    let fixed = BeatParams {
        refractory_rr: 0.0,
        ..params
    };
    let want_fixed = samples(&fx, "beats_fixed_200ms");
    assert_eq!(picked(&probs, &fixed), want_fixed);

    let labels = samples(&fx, "labels");
    let (f_rr, f_fixed) = (
        false_beats(&want, &labels),
        false_beats(&want_fixed, &labels),
    );
    assert!(
        f_fixed >= 30 && f_rr <= 5,
        "false beats: {f_rr} with the RR-dependent refractory period, {f_fixed} with a fixed 200 ms"
    );
}
