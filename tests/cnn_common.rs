//! Shared helpers of the CNN engine tests: the fixture manifest written by tests/fixtures/gen_cnn.py.
#![allow(dead_code)]

use sigflow::cnn::npy;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cnn")
}

pub struct Case {
    pub window: usize,
    pub input: npy::Array,
    pub output: npy::Array,
}

pub struct Fixture {
    pub name: String,
    pub model: PathBuf,
    pub cases: Vec<Case>,
}

pub fn load_all() -> Vec<Fixture> {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("fixture manifest");
    let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let models = m["models"].as_array().expect("models");
    models
        .iter()
        .map(|e| Fixture {
            name: e["name"].as_str().unwrap().to_string(),
            model: dir.join(e["model"].as_str().unwrap()),
            cases: e["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| Case {
                    window: c["window"].as_u64().unwrap() as usize,
                    input: npy::read(&dir.join(c["input"].as_str().unwrap())).unwrap(),
                    output: npy::read(&dir.join(c["output"].as_str().unwrap())).unwrap(),
                })
                .collect(),
        })
        .collect()
}

/// `[C, T]` channel-major → time-major rows.
pub fn time_major(a: &npy::Array) -> Vec<f32> {
    let (c, t) = (a.shape[0], a.shape[1]);
    let mut o = vec![0.0; c * t];
    for ch in 0..c {
        for j in 0..t {
            o[j * c + ch] = a.data[ch * t + j];
        }
    }
    o
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}
