//! The Rust log-mel front end equals THE definition (training/common/logmel.py) within 1e-4 absolute, on fixtures
//! from tests/fixtures/gen_logmel.py, both batch and streaming in odd block sizes.

use sigflow::cnn::npy;
use sigflow::dsp::logmel::{LogMel, LogMelConfig};
use std::path::Path;

#[test]
fn logmel_matches_python_definition() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logmel");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let cases = m["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let cfg = LogMelConfig {
            rate: c["rate"].as_u64().unwrap() as u32,
            n_fft: c["n_fft"].as_u64().unwrap() as usize,
            hop: c["hop"].as_u64().unwrap() as usize,
            n_mels: c["n_mels"].as_u64().unwrap() as usize,
            f_min: c["f_min"].as_f64().unwrap(),
            f_max: c["f_max"].as_f64(),
        };
        let x = npy::read(&dir.join(format!("{name}_x.npy"))).unwrap();
        let y = npy::read(&dir.join(format!("{name}_y.npy"))).unwrap();
        let t = y.shape[1];
        assert_eq!(y.shape[0], cfg.n_mels);
        let got = LogMel::batch(cfg, &x.data).unwrap();
        assert_eq!(got.len(), y.data.len(), "{name}: frame count");
        let d = got
            .iter()
            .zip(&y.data)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d <= 1e-4, "{name}: batch max|diff| {d}");
        let mut lm = LogMel::new(cfg).unwrap();
        let mut rows = vec![];
        for chunk in x.data.chunks(333) {
            lm.push(chunk, &mut rows);
        }
        for f in 0..t {
            for mel in 0..cfg.n_mels {
                let (a, b) = (rows[f * cfg.n_mels + mel], y.data[mel * t + f]);
                assert!(
                    (a - b).abs() <= 1e-4,
                    "{name}: streaming frame {f} mel {mel}: {a} vs {b}"
                );
            }
        }
    }
}
