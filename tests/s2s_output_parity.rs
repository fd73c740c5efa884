//! LFM2-Audio's output pathway against the reference (fixtures from tests/fixtures/gen_lfm2_audio.py, described in
//! tests/fixtures/lfm2_audio/README.md): depthformer logits and greedy codes, the audio-code feedback embedding,
//! the detokenizer waveform; and the properties behind them: the ISTFT (streaming == batch, the inverse of an
//! independently computed "same"-padded STFT), sliding-window attention in the LFM2 (only the window is seen;
//! chunked decode == prefill), the detokenizer's stream against its batch decode.

use proptest::prelude::*;
use realfft::num_complex::Complex;
use sigflow::dsp::istft::Istft;
use sigflow::kernels::quant::DType;
use sigflow::s2s::depthformer::{AudioEmbedding, Depthformer, DepthformerConfig, AUDIO_VOCAB};
use sigflow::s2s::detokenizer::{Detokenizer, CODEBOOKS, CODES, SAMPLES_PER_FRAME};
use sigflow::s2s::lfm2::{Config, Lfm2, Lfm2ConfigFile};
use sigflow::s2s::sampling::argmax;
use sigflow::s2s::weights::Checkpoint;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2_audio")
        .join(name)
}

fn read_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    let a = sigflow::cnn::npy::read(&fixture(name)).unwrap();
    (a.shape, a.data)
}

/// A little-endian int64 `.npy` file (C order): shape and values.
fn read_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}");
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<i8'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let dims = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = dims[..dims.find(')').unwrap()]
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let values: Vec<i64> = bytes[start + hlen..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
    (shape, values)
}

/// The `depthformer` section, `codebooks` and the backbone width of the fixture's `config.json`.
fn model_config() -> (DepthformerConfig, usize, usize) {
    let text = std::fs::read_to_string(fixture("checkpoint/config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let df: DepthformerConfig = serde_json::from_value(v["depthformer"].clone()).unwrap();
    let codebooks = v["codebooks"].as_u64().unwrap() as usize;
    let hidden = v["lfm"]["hidden_size"].as_u64().unwrap() as usize;
    (df, codebooks, hidden)
}

#[test]
fn depthformer_matches_reference_logits_and_greedy_codes() {
    let (cfg, codebooks, hidden) = model_config();
    let ck = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let df = Depthformer::load(&ck, &cfg, hidden, codebooks, DType::F32, 2).unwrap();
    let (hs, inputs) = read_f32("depth_hidden.npy");
    let (ls, logits) = read_f32("depthformer_logits.npy");
    let (_, codes) = read_i64("depth_codes.npy");
    assert_eq!(ls, vec![hs[0], codebooks, AUDIO_VOCAB]);
    let mut worst = 0f32;
    let mut df_first: Vec<f32> = Vec::new();
    for (f, x) in inputs.chunks_exact(hidden).enumerate() {
        let mut got = Vec::new();
        let frame = df.frame(x, &mut |i, l| {
            assert_eq!(got.len(), i);
            got.push(l.to_vec());
            argmax(l)
        });
        for (i, l) in got.iter().enumerate() {
            let at = (f * codebooks + i) * AUDIO_VOCAB;
            let err = max_rel_diff(l, &logits[at..at + AUDIO_VOCAB]);
            assert!(
                err < 1e-4,
                "frame {f}, codebook {i}: logits differ by {err}"
            );
            worst = worst.max(err);
            if at == 0 {
                df_first = l.clone();
            }
        }
        let want: Vec<u32> = codes[f * codebooks..(f + 1) * codebooks]
            .iter()
            .map(|&c| c as u32)
            .collect();
        assert_eq!(frame, want, "frame {f}");
    }
    eprintln!(
        "depthformer logits: worst max|diff| / max|ref| = {worst:.3e} (e.g. {:?} vs {:?})",
        &df_first[..3],
        &logits[..3]
    );
}

#[test]
fn depthformer_follows_the_picked_codes() {
    // A sampled pick (here: a fixed non-greedy code) changes what later codebooks see.
    let (cfg, codebooks, hidden) = model_config();
    let ck = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let df = Depthformer::load(&ck, &cfg, hidden, codebooks, DType::F32, 1).unwrap();
    let (_, inputs) = read_f32("depth_hidden.npy");
    let x = &inputs[..hidden];
    let mut greedy = Vec::new();
    df.frame(x, &mut |_, l| {
        greedy.push(l.to_vec());
        argmax(l)
    });
    let mut forced = Vec::new();
    let codes = df.frame(x, &mut |_, l| {
        forced.push(l.to_vec());
        7
    });
    assert_eq!(codes, vec![7; codebooks]);
    assert_eq!(forced[0], greedy[0]);
    assert!(max_rel_diff(&forced[1], &greedy[1]) > 1e-3);
}

#[test]
fn audio_embedding_sums_the_codebook_rows_of_the_checkpoint() {
    let (_, codebooks, hidden) = model_config();
    let ck = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let emb = AudioEmbedding::load(&ck, codebooks, hidden).unwrap();
    let table = ck
        .f32(
            "audio_embedding.embedding.weight",
            &[codebooks * AUDIO_VOCAB, hidden],
        )
        .unwrap();
    // The first generated audio frame of the interleaved run (its rows are among the non-zero ones).
    let (_, codes) = read_i64("detok_codes.npy");
    let frame: Vec<u32> = codes[..codebooks].iter().map(|&c| c as u32).collect();
    let mut out = vec![0f32; hidden];
    emb.embed(&frame, &mut out);
    let mut want = vec![0f32; hidden];
    for (i, &c) in frame.iter().enumerate() {
        let r = (c as usize + i * AUDIO_VOCAB) * hidden;
        for j in 0..hidden {
            want[j] += table[r + j];
        }
    }
    assert!(max_abs(&want) > 0.0);
    assert!(max_rel_diff(&out, &want) < 1e-6);
}

fn fixture_detokenizer(threads: usize) -> Detokenizer {
    Detokenizer::load(
        &fixture("checkpoint/audio_detokenizer"),
        DType::F32,
        threads,
    )
    .unwrap()
}

fn fixture_detok_codes() -> (usize, Vec<u32>) {
    let (shape, codes) = read_i64("detok_codes.npy");
    assert_eq!(shape[1], CODEBOOKS);
    (shape[0], codes.iter().map(|&c| c as u32).collect())
}

#[test]
fn detokenizer_matches_reference_waveform() {
    let det = fixture_detokenizer(2);
    assert_eq!(det.lfm_config().sliding_window, Some(30));
    let (frames, codes) = fixture_detok_codes();
    let (_, want) = read_f32("detok_wave.npy");
    let got = det.decode(&codes, frames).unwrap();
    assert_eq!(got.len(), want.len());
    let err = max_rel_diff(&got, &want);
    eprintln!(
        "detokenizer waveform: max|diff| / max|ref| = {err:.3e} (max|ref| {:.3e}, first {:?} vs {:?})",
        max_abs(&want),
        &got[..3],
        &want[..3]
    );
    assert!(
        err < 1e-4,
        "waveform differs by {err} (max|diff| / max|ref|)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The fixture's 10 frames pushed in random groups, then finished, give the batch waveform.
    #[test]
    fn fixture_detokenizer_stream_equals_decode(groups in prop::collection::vec(1usize..4, 1..10)) {
        let det = fixture_detokenizer(1);
        let (frames, codes) = fixture_detok_codes();
        let batch = det.decode(&codes, frames).unwrap();
        let mut left = frames;
        let mut sizes = Vec::new();
        for g in groups.into_iter().chain(std::iter::repeat(1)) {
            if left == 0 {
                break;
            }
            let g = g.min(left);
            sizes.push(g);
            left -= g;
        }
        let streamed = stream_in_groups(&det, &codes, &sizes);
        prop_assert!(max_rel_diff(&streamed, &batch) < 1e-5, "groups {:?}", sizes);
    }
}

/// A deterministic pseudo-random sequence in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / max_abs(b).max(1e-30)
}

fn random_spectra(seed: u64, frames: usize, bins: usize) -> Vec<Complex<f32>> {
    let v = noise(seed, 2 * frames * bins);
    v.chunks_exact(2)
        .map(|p| Complex::new(p[0], p[1]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pushing frames one by one and collecting the final samples gives exactly the batch output.
    #[test]
    fn istft_streaming_equals_batch(
        shape in prop::sample::select(vec![(16usize, 4usize), (64, 16), (64, 32), (1280, 320)]),
        frames in 0usize..12,
        seed in any::<u64>(),
    ) {
        let (n_fft, hop) = shape;
        let ist = Istft::new(n_fft, hop).unwrap();
        let spec = random_spectra(seed, frames, ist.bins());
        let batch = ist.batch(&spec, frames);
        prop_assert_eq!(batch.len(), frames * hop);
        let mut st = ist.stream();
        let mut out = Vec::new();
        for t in 0..frames {
            let before = out.len();
            st.push(&spec[t * ist.bins()..(t + 1) * ist.bins()], &mut out);
            // Every sample before the next frame's reach is out after each push.
            prop_assert_eq!(out.len(), ((t + 1) * hop).saturating_sub((n_fft - hop) / 2));
            prop_assert!(out.len() >= before);
        }
        st.finish(&mut out);
        prop_assert_eq!(out, batch);
    }
}

/// The "same"-padded STFT the ISTFT inverts, computed independently: zero-pad `pad = (n_fft − hop)/2` on both
/// sides, frame `t` = padded[t·hop .. t·hop + n_fft] × periodic Hann, a direct DFT in f64.
fn same_padded_stft(x: &[f32], n_fft: usize, hop: usize) -> Vec<Complex<f32>> {
    let pad = (n_fft - hop) / 2;
    let frames = x.len() / hop;
    let mut padded = vec![0f64; pad];
    padded.extend(x.iter().map(|&v| v as f64));
    padded.resize(x.len() + 2 * pad, 0.0);
    let tau = 2.0 * std::f64::consts::PI;
    let w: Vec<f64> = (0..n_fft)
        .map(|i| 0.5 - 0.5 * (tau * i as f64 / n_fft as f64).cos())
        .collect();
    let mut out = Vec::new();
    for t in 0..frames {
        let seg: Vec<f64> = (0..n_fft).map(|i| padded[t * hop + i] * w[i]).collect();
        for k in 0..=n_fft / 2 {
            let (mut re, mut im) = (0f64, 0f64);
            for (i, &s) in seg.iter().enumerate() {
                let a = tau * (k * i % n_fft) as f64 / n_fft as f64;
                re += s * a.cos();
                im -= s * a.sin();
            }
            out.push(Complex::new(re as f32, im as f32));
        }
    }
    out
}

#[test]
fn istft_inverts_the_same_padded_stft() {
    for (n_fft, hop, frames) in [(64usize, 16usize, 20usize), (1280, 320, 6)] {
        let n = frames * hop;
        // Two tones and some noise.
        let x: Vec<f32> = noise(5, n)
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = i as f32;
                0.6 * (0.031 * t).sin() + 0.3 * (0.47 * t + 1.0).cos() + 0.1 * r
            })
            .collect();
        let spec = same_padded_stft(&x, n_fft, hop);
        let ist = Istft::new(n_fft, hop).unwrap();
        let y = ist.batch(&spec, frames);
        let err = max_rel_diff(&y, &x);
        assert!(err < 1e-5, "n_fft {n_fft}: round trip error {err}");
    }
}

#[test]
fn istft_single_frame_is_the_windowed_irfft_over_the_envelope() {
    // A DC spectrum of value n_fft is the constant 1 after irfft; one frame's sum is then w and its envelope w²,
    // so the kept samples (pad .. pad + hop) are 1 / w.
    let (n_fft, hop) = (64usize, 16usize);
    let ist = Istft::new(n_fft, hop).unwrap();
    let mut spec = vec![Complex::new(0f32, 0.0); ist.bins()];
    spec[0] = Complex::new(n_fft as f32, 5.0); // the DC imaginary part is ignored
    let y = ist.batch(&spec, 1);
    assert_eq!(y.len(), hop);
    let pad = (n_fft - hop) / 2;
    for (i, v) in y.iter().enumerate() {
        let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * (pad + i) as f64 / n_fft as f64).cos();
        assert!((*v as f64 * w - 1.0).abs() < 1e-5, "sample {i}: {v}");
    }
}

fn tiny_lfm2(layer_types: &[&str], window: Option<usize>) -> Config {
    let f = Lfm2ConfigFile {
        vocab_size: 8,
        hidden_size: 64,
        intermediate_size: None,
        block_ff_dim: Some(96),
        num_hidden_layers: layer_types.len(),
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: None,
        norm_eps: Some(1e-5),
        rope_theta: Some(10_000.0),
        conv_bias: Some(false),
        conv_l_cache: Some(3),
        block_multiple_of: Some(32),
        block_ffn_dim_multiplier: Some(1.0),
        block_auto_adjust_ff_dim: Some(false),
        full_attn_idxs: None,
        layer_types: Some(layer_types.iter().map(|s| s.to_string()).collect()),
        tie_word_embeddings: Some(true),
        tie_embedding: None,
        sliding_window: window,
    };
    Config::from_config_file(&f).unwrap()
}

#[test]
fn sliding_window_config_is_read_and_checked() {
    let c = tiny_lfm2(&["conv", "sliding_attention"], Some(7));
    assert_eq!(c.sliding_window, Some(7));
    let mut f: Lfm2ConfigFile = serde_json::from_str(
        r#"{"vocab_size": 8, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "layer_types": ["sliding_attention"],
            "sliding_window": 0}"#,
    )
    .unwrap();
    let err = Config::from_config_file(&f).unwrap_err();
    assert!(err.contains("sliding_window"), "{err}");
    f.sliding_window = None;
    assert_eq!(Config::from_config_file(&f).unwrap().sliding_window, None);
}

/// With one attention layer and no convolution, position `p` under a window `W` must equal the last position of
/// the unwindowed model run on the `W` inputs ending at `p` (RoPE scores depend on relative positions only).
#[test]
fn sliding_window_attention_sees_only_the_window() {
    let window = 5;
    let windowed = Lfm2::random(
        tiny_lfm2(&["full_attention"], Some(window)),
        DType::F32,
        1,
        11,
    )
    .unwrap();
    let full = Lfm2::random(tiny_lfm2(&["full_attention"], None), DType::F32, 1, 11).unwrap();
    let h = 64;
    let n = 17;
    let x = noise(3, n * h);
    let mut st = windowed.new_state(n);
    let mut hw = Vec::new();
    windowed
        .forward_embeds(&x, &mut st, &mut hw, None, false)
        .unwrap();
    let mut unbounded = Vec::new();
    let mut st_full = full.new_state(n);
    full.forward_embeds(&x, &mut st_full, &mut unbounded, None, false)
        .unwrap();
    for p in 0..n {
        let lo = (p + 1).saturating_sub(window);
        let mut st = full.new_state(window);
        let mut hf = Vec::new();
        full.forward_embeds(&x[lo * h..(p + 1) * h], &mut st, &mut hf, None, false)
            .unwrap();
        let last = &hf[(p - lo) * h..(p - lo + 1) * h];
        let got = &hw[p * h..(p + 1) * h];
        let err = max_rel_diff(got, last);
        assert!(err < 1e-4, "position {p}: {err}");
        if p >= window {
            // Beyond the window the two models differ, so the test can tell them apart.
            assert!(max_rel_diff(got, &unbounded[p * h..(p + 1) * h]) > 1e-3);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A windowed conv + attention model fed in random chunks (the KV cache trimmed to the window) gives the
    /// hidden states of one prefill.
    #[test]
    fn sliding_window_chunked_decode_equals_prefill(
        cuts in prop::collection::vec(1usize..6, 1..12),
        window in 1usize..9,
    ) {
        let m = Lfm2::random(
            tiny_lfm2(&["conv", "sliding_attention", "conv", "full_attention"], Some(window)),
            DType::F32,
            1,
            5,
        )
        .unwrap();
        let h = 64;
        let n: usize = cuts.iter().sum();
        let x = noise(9, n * h);
        let mut st = m.new_state(n);
        let mut whole = Vec::new();
        m.forward_embeds(&x, &mut st, &mut whole, None, false).unwrap();
        let mut st = m.new_state(window);
        let mut parts = Vec::new();
        let mut at = 0;
        for c in cuts {
            let mut hs = Vec::new();
            m.forward_embeds(&x[at * h..(at + c) * h], &mut st, &mut hs, None, false).unwrap();
            parts.extend(hs);
            at += c;
        }
        prop_assert!(max_rel_diff(&parts, &whole) < 1e-5);
    }
}

fn random_codes(seed: u64, frames: usize) -> Vec<u32> {
    noise(seed, frames * CODEBOOKS)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * CODES as f32) as u32 % CODES as u32)
        .collect()
}

/// Push the frames in the given group sizes, then finish; returns all samples.
fn stream_in_groups(det: &Detokenizer, codes: &[u32], groups: &[usize]) -> Vec<f32> {
    let mut st = det.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for &g in groups {
        let chunk = st
            .push(&codes[at * CODEBOOKS..(at + g) * CODEBOOKS])
            .unwrap();
        out.extend(chunk);
        // Everything but the ISTFT's last 480 samples is out.
        assert_eq!(out.len(), (at + g) * SAMPLES_PER_FRAME - 480);
        at += g;
    }
    out.extend(st.finish().unwrap());
    out
}

#[test]
fn random_detokenizer_stream_equals_decode() {
    // The LFM2-Audio-1.5B detokenizer shape with random weights; 8 frames = 48 positions > the window of 30.
    let det = Detokenizer::random(DType::F32, 2, 21).unwrap();
    let frames = 8;
    let codes = random_codes(4, frames);
    let batch = det.decode(&codes, frames).unwrap();
    assert_eq!(batch.len(), frames * SAMPLES_PER_FRAME);
    assert!(batch.iter().all(|v| v.is_finite()) && max_abs(&batch) > 0.0);
    for groups in [vec![1; 8], vec![3, 1, 4], vec![8]] {
        let streamed = stream_in_groups(&det, &codes, &groups);
        let err = max_rel_diff(&streamed, &batch);
        eprintln!("random detokenizer, groups {groups:?}: stream vs batch {err:.3e}");
        assert!(err < 1e-5, "groups {groups:?}: {err}");
    }
}

#[test]
fn detokenizer_refuses_bad_codes() {
    let det = Detokenizer::random(DType::F32, 1, 1).unwrap();
    let mut codes = random_codes(2, 2);
    codes[11] = CODES as u32;
    let e = det.decode(&codes, 2).unwrap_err().to_string();
    assert!(e.contains("frame 1, codebook 3"), "{e}");
    assert!(det.decode(&codes[..15], 2).is_err());
    let mut st = det.stream();
    assert!(st.push(&codes[..5]).is_err());
}

#[test]
fn load_errors_name_the_file_and_the_tensor() {
    // The detokenizer's checkpoint has no depthformer: the error names the missing tensor and the file.
    let (cfg, codebooks, hidden) = model_config();
    let ck = Checkpoint::open(&fixture("checkpoint/audio_detokenizer")).unwrap();
    let e = Depthformer::load(&ck, &cfg, hidden, codebooks, DType::F32, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("depthformer.layers.0.operator_norm.weight") && e.contains("model.safetensors"),
        "{e}"
    );
    let e = AudioEmbedding::load(&ck, codebooks, hidden)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("audio_embedding.embedding.weight"), "{e}");
    // A width that does not match the checkpoint: the tensor and both shapes are named.
    let ck = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let e = Depthformer::load(&ck, &cfg, hidden + 32, codebooks, DType::F32, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("depth_linear.weight") && e.contains("expected"),
        "{e}"
    );
    // A detokenizer directory without weights, and one without a config.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("checkpoint/audio_detokenizer/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let e = Detokenizer::load(tmp.path(), DType::F32, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Detokenizer::load(empty.path(), DType::F32, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
}

/// Weights quantised at load (bf16, q8, q4) stay near the f32 results: codebook 0's logits (no feedback from an
/// earlier pick) and the detokenizer waveform.
#[test]
fn quantised_output_pathway_stays_close_to_f32() {
    let (cfg, codebooks, hidden) = model_config();
    let ck = Checkpoint::open(&fixture("checkpoint")).unwrap();
    let (_, inputs) = read_f32("depth_hidden.npy");
    let first_logits = |dt: DType| {
        let df = Depthformer::load(&ck, &cfg, hidden, codebooks, dt, 1).unwrap();
        let mut l0 = Vec::new();
        for x in inputs.chunks_exact(hidden) {
            df.frame(x, &mut |i, l| {
                if i == 0 {
                    l0.extend_from_slice(l);
                }
                argmax(l)
            });
        }
        l0
    };
    let (frames, codes) = fixture_detok_codes();
    let wave = |dt: DType| {
        Detokenizer::load(&fixture("checkpoint/audio_detokenizer"), dt, 1)
            .unwrap()
            .decode(&codes, frames)
            .unwrap()
    };
    let (l32, w32) = (first_logits(DType::F32), wave(DType::F32));
    for (dt, tol_logits, tol_wave) in [
        // The detokenizer's matrices are stored in bf16, so bf16 is exact for it.
        (DType::Bf16, 0.01, 1e-6),
        (DType::Q8, 0.05, 0.1),
        // 4-bit blocks of 32 are coarse on these tiny random matrices (measured: 0.28 and 0.29).
        (DType::Q4, 0.5, 0.5),
    ] {
        let el = max_rel_diff(&first_logits(dt), &l32);
        let ew = max_rel_diff(&wave(dt), &w32);
        eprintln!(
            "{}: codebook-0 logits {el:.3e}, waveform {ew:.3e}",
            dt.name()
        );
        assert!(el < tol_logits && ew < tol_wave, "{}: {el} {ew}", dt.name());
    }
}
