//! The LFM2-Audio input pathway against the reference (liquid-audio 1.3.0) on the fixtures of
//! `tests/fixtures/gen_lfm2_audio.py`: log-mel features, FastConformer encoder and MLP adapter, in f32, within
//! 1e-4 relative (max |diff| / max |ref|); and load errors that name the file and the tensor.

use sigflow::cnn::npy;
use sigflow::kernels::quant::DType;
use sigflow::s2s::conformer::{Adapter, Encoder, EncoderConfig};
use sigflow::s2s::mel::{LogMel, PreprocessorConfig};
use sigflow::s2s::weights::Checkpoint;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lfm2_audio")
}

fn checkpoint_dir() -> PathBuf {
    fixtures().join("checkpoint")
}

fn config() -> serde_json::Value {
    let text = std::fs::read_to_string(checkpoint_dir().join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn encoder_config() -> EncoderConfig {
    serde_json::from_value(config()["encoder"].clone()).unwrap()
}

fn hidden_size() -> usize {
    config()["lfm"]["hidden_size"].as_u64().unwrap() as usize
}

fn load(name: &str) -> npy::Array {
    npy::read(&fixtures().join(name)).unwrap()
}

fn input_samples() -> Vec<f32> {
    let mut r = hound::WavReader::open(fixtures().join("input.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect()
}

/// The reference mel `[n_mels, frames]` as sigflow's time-major `frames × n_mels`.
fn reference_mel() -> (Vec<f32>, usize) {
    let m = load("mel.npy");
    let (n_mels, frames) = (m.shape[0], m.shape[1]);
    let mut t = vec![0f32; n_mels * frames];
    for i in 0..n_mels {
        for j in 0..frames {
            t[j * n_mels + i] = m.data[i * frames + j];
        }
    }
    (t, frames)
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
    diff / scale
}

#[test]
fn log_mel_matches_the_reference_preprocessor() {
    let cfg: PreprocessorConfig = serde_json::from_value(config()["preprocessor"].clone()).unwrap();
    let mel = LogMel::new(&cfg).unwrap();
    let (got, frames) = mel.compute(&input_samples());
    let (want, want_frames) = reference_mel();
    assert_eq!(frames, want_frames);
    let e = rel_err(&got, &want);
    eprintln!("log-mel: {frames} frames, max|diff|/max|ref| = {e:.2e}");
    assert!(e < TOL, "log-mel relative error {e}");
}

#[test]
fn encoder_matches_the_reference_conformer() {
    let ck = Checkpoint::open(&checkpoint_dir()).unwrap();
    let enc = Encoder::load(&ck, "conformer", &encoder_config(), DType::F32, 2).unwrap();
    let (mel, frames) = reference_mel();
    let (got, n) = enc.forward(&mel, frames).unwrap();
    let want = load("encoder_out.npy");
    assert_eq!(n, want.shape[0]);
    assert_eq!(n, Encoder::output_len(frames));
    assert_eq!(enc.out_dim(), want.shape[1]);
    let e = rel_err(&got, &want.data);
    eprintln!("encoder (reference mel in): T' = {n}, max|diff|/max|ref| = {e:.2e}");
    assert!(e < TOL, "encoder relative error {e}");
}

#[test]
fn adapter_matches_the_reference_mlp() {
    let ck = Checkpoint::open(&checkpoint_dir()).unwrap();
    let enc_out = load("encoder_out.npy");
    let (n, d) = (enc_out.shape[0], enc_out.shape[1]);
    let adapter = Adapter::load(&ck, "audio_adapter", d, hidden_size(), DType::F32, 1).unwrap();
    let got = adapter.forward(&enc_out.data, n);
    let want = load("adapter_out.npy");
    let e = rel_err(&got, &want.data);
    eprintln!("adapter (reference encoder output in): max|diff|/max|ref| = {e:.2e}");
    assert!(e < TOL, "adapter relative error {e}");
}

#[test]
fn wav_to_adapter_output_matches_end_to_end() {
    let cfg: PreprocessorConfig = serde_json::from_value(config()["preprocessor"].clone()).unwrap();
    let ck = Checkpoint::open(&checkpoint_dir()).unwrap();
    let enc = Encoder::load(&ck, "conformer", &encoder_config(), DType::F32, 2).unwrap();
    let adapter = Adapter::load(
        &ck,
        "audio_adapter",
        enc.out_dim(),
        hidden_size(),
        DType::F32,
        2,
    )
    .unwrap();
    let (mel, frames) = LogMel::new(&cfg).unwrap().compute(&input_samples());
    let (x, n) = enc.forward(&mel, frames).unwrap();
    let e_enc = rel_err(&x, &load("encoder_out.npy").data);
    let got = adapter.forward(&x, n);
    let e = rel_err(&got, &load("adapter_out.npy").data);
    eprintln!("wav → encoder: {e_enc:.2e}; wav → adapter: {e:.2e}");
    assert!(e_enc < TOL && e < TOL, "end-to-end errors {e_enc}, {e}");
}

#[test]
fn quantised_encoders_stay_close_to_f32() {
    let ck = Checkpoint::open(&checkpoint_dir()).unwrap();
    let (mel, frames) = reference_mel();
    let want = load("encoder_out.npy");
    for (dt, tol) in [(DType::Bf16, 2e-2), (DType::Q8, 5e-2)] {
        let enc = Encoder::load(&ck, "conformer", &encoder_config(), dt, 2).unwrap();
        let (got, _) = enc.forward(&mel, frames).unwrap();
        let e = rel_err(&got, &want.data);
        eprintln!("encoder in {}: max|diff|/max|ref| = {e:.2e}", dt.name());
        assert!(e < tol, "{}: relative error {e}", dt.name());
    }
}

/// A copy of the checkpoint without `drop` (the config is the same).
fn checkpoint_without(drop: &str) -> tempfile::TempDir {
    let bytes = std::fs::read(checkpoint_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != drop)
        .collect();
    assert_eq!(
        kept.len() + 1,
        st.len(),
        "`{drop}` is not in the checkpoint"
    );
    let out = safetensors::serialize(kept, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    dir
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let name = "conformer.layers.1.self_attn.pos_bias_v";
    let dir = checkpoint_without(name);
    let ck = Checkpoint::open(dir.path()).unwrap();
    let err = Encoder::load(&ck, "conformer", &encoder_config(), DType::F32, 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(name), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("missing"), "{err}");

    let name = "audio_adapter.model.3.bias";
    let dir = checkpoint_without(name);
    let ck = Checkpoint::open(dir.path()).unwrap();
    let err = Adapter::load(&ck, "audio_adapter", 64, hidden_size(), DType::F32, 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(name), "{err}");
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let ck = Checkpoint::open(&checkpoint_dir()).unwrap();
    let mut cfg = encoder_config();
    cfg.subsampling_conv_channels = 16;
    let err = Encoder::load(&ck, "conformer", &cfg, DType::F32, 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("conformer.pre_encode.conv.0.weight"), "{err}");
    assert!(
        err.contains("[32, 1, 3, 3]") && err.contains("[16, 1, 3, 3]"),
        "{err}"
    );
}
