//! LFM2-Audio assembled: prefill of mixed segments, interleaved and sequential generation, multi-turn state and
//! the Responder, against the reference outputs in tests/fixtures/lfm2_audio/ (see its README).

use sigflow::cnn::npy;
use sigflow::kernels::quant::DType;
use sigflow::s2s::chat::{ChatLayout, STAND_IN_SYSTEM};
use sigflow::s2s::generate::{Conversation, GenerationParams, Mode, Token};
use sigflow::s2s::lfm2_audio::{Lfm2Audio, Segment, INPUT_RATE};
use sigflow::s2s::lfm2_audio_responder::Lfm2AudioResponder;
use sigflow::s2s::sampling::SamplingParams;
use sigflow::s2s::session::{Responder, ResponseChunk};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2_audio")
        .join(name)
}

fn model() -> Arc<Lfm2Audio> {
    Arc::new(Lfm2Audio::load(&fixture("checkpoint"), DType::F32, 2).unwrap())
}

fn f32s(name: &str) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(&fixture(name)).unwrap();
    (a.shape, a.data)
}

fn input_audio() -> Vec<f32> {
    sigflow::s2s::cli::read_wav_mono(&fixture("input.wav"), INPUT_RATE).unwrap()
}

/// The fixture's prompt: its text ids around the audio-in segment.
fn prompt(audio: Vec<f32>) -> Vec<Segment> {
    let (_, ids) = npy::read_integers(&fixture("prompt_ids.npy")).unwrap();
    let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
    let (_, modality) = npy::read_integers(&fixture("prompt_modality.npy")).unwrap();
    let before = modality.iter().take_while(|&&m| m == 1).count();
    vec![
        Segment::Text(ids[..before].to_vec()),
        Segment::AudioIn(audio),
        Segment::Text(ids[before..].to_vec()),
    ]
}

fn tokens(name: &str) -> Vec<Token> {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// max |a − b| ÷ max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let s = b.iter().fold(0f32, |m, y| m.max(y.abs()));
    d / s.max(1e-30)
}

#[test]
fn forward_embeds_equals_forward_on_ids() {
    let m = model();
    let ids = [1u32, 6, 40, 10, 50, 51, 52, 7];
    let h = m.hidden();
    let (mut ha, mut hb, mut la, mut lb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sa = m.lfm.new_state(16);
    m.lfm
        .forward(&ids, &mut sa, &mut ha, Some(&mut la), true)
        .unwrap();
    let mut emb = vec![0.0; ids.len() * h];
    m.lfm.embed_tokens(&ids, &mut emb).unwrap();
    let mut sb = m.lfm.new_state(16);
    m.lfm
        .forward_embeds(&emb, &mut sb, &mut hb, Some(&mut lb), true)
        .unwrap();
    assert_eq!(ha, hb);
    assert_eq!(la, lb);
    assert!(m.lfm.embed_tokens(&[256], &mut emb).is_err());
    assert!(m
        .lfm
        .forward_embeds(&emb[..h + 1], &mut sb, &mut hb, None, false)
        .is_err());
}

#[test]
fn prefill_matches_reference() {
    let m = model();
    let (shape, want_emb) = f32s("prompt_embeds.npy");
    let positions = shape[0];
    let mut emb = Vec::new();
    m.embed_segments(&prompt(input_audio()), &mut emb).unwrap();
    assert_eq!(emb.len(), want_emb.len(), "prompt positions");
    let e = rel_err(&emb, &want_emb);
    assert!(e < 1e-4, "prompt embeddings: relative error {e}");
    let (_, want_hidden) = f32s("prompt_hidden.npy");
    let (_, want_logits) = f32s("prompt_logits.npy");
    // From the reference's own embeddings (the backbone alone) and from ours (the whole input path).
    for (what, input) in [
        ("reference embeddings", &want_emb),
        ("our embeddings", &emb),
    ] {
        let mut st = m.lfm.new_state(positions);
        let (mut hidden, mut logits) = (Vec::new(), Vec::new());
        m.lfm
            .forward_embeds(input, &mut st, &mut hidden, Some(&mut logits), true)
            .unwrap();
        let eh = rel_err(&hidden, &want_hidden);
        let el = rel_err(&logits, &want_logits);
        assert!(eh < 1e-4, "{what}: hidden relative error {eh}");
        assert!(el < 1e-4, "{what}: logits relative error {el}");
    }
}

fn greedy(mode: Mode, steps: usize) -> GenerationParams {
    GenerationParams::greedy(mode, steps)
}

#[test]
fn interleaved_greedy_matches_reference_step_by_step() {
    let m = model();
    let want = tokens("interleaved_tokens.json");
    let (_, want_hidden) = f32s("interleaved_hidden.npy");
    let h = m.hidden();
    let mut conv = Conversation::new(m.clone());
    conv.push(&prompt(input_audio())).unwrap();
    let mut g = conv.reply(greedy(Mode::Interleaved, want.len()));
    let mut got = Vec::new();
    while let Some(t) = g.next_token().unwrap() {
        let step = got.len();
        let e = rel_err(
            g.conversation().last_hidden(),
            &want_hidden[step * h..(step + 1) * h],
        );
        assert!(e < 1e-4, "step {step}: hidden relative error {e}");
        got.push(t);
    }
    assert_eq!(got, want);
}

#[test]
fn sequential_greedy_matches_reference() {
    let m = model();
    let want = tokens("sequential_tokens.json");
    let mut conv = Conversation::new(m);
    conv.push(&prompt(input_audio())).unwrap();
    let got = conv
        .generate(greedy(Mode::Sequential, want.len()), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn streaming_callback_sees_every_item_and_can_stop() {
    let m = model();
    let mut conv = Conversation::new(m);
    conv.push(&prompt(input_audio())).unwrap();
    let mut seen = Vec::new();
    let got = conv
        .generate(greedy(Mode::Interleaved, 30), &mut |t| {
            seen.push(t.clone());
            if matches!(t, Token::Audio(_)) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    let want = tokens("interleaved_tokens.json");
    assert_eq!(got, seen);
    assert_eq!(got, want[..7].to_vec(), "stops after the first audio frame");
}

/// Two turns on the kept backbone state give the same as one prefill of the whole history.
#[test]
fn second_turn_on_kept_state_equals_one_shot_prefill() {
    let m = model();
    let audio = input_audio();
    let layout = ChatLayout::stand_in();
    let turn2_audio: Vec<f32> = audio[4000..20000].to_vec();
    for mode in [Mode::Interleaved, Mode::Sequential] {
        let params = greedy(mode, 14);
        let mut kept = Conversation::new(m.clone());
        kept.push(&layout.first_turn(Some(&STAND_IN_SYSTEM), audio.clone()))
            .unwrap();
        let first = kept
            .generate(params, &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(first.len(), 14);
        kept.push(&layout.next_turn(turn2_audio.clone())).unwrap();
        let history: Vec<Segment> = kept.history().to_vec();
        let mut g = kept.reply(params);
        let (mut second, mut hidden) = (Vec::new(), Vec::new());
        while let Some(t) = g.next_token().unwrap() {
            hidden.extend_from_slice(g.conversation().last_hidden());
            second.push(t);
        }
        let mut fresh = Conversation::new(m.clone());
        fresh.push(&history).unwrap();
        let mut g = fresh.reply(params);
        let (mut again, mut hidden_again) = (Vec::new(), Vec::new());
        while let Some(t) = g.next_token().unwrap() {
            hidden_again.extend_from_slice(g.conversation().last_hidden());
            again.push(t);
        }
        assert!(!second.is_empty());
        assert_eq!(second, again, "{mode:?}: second turn tokens");
        let e = rel_err(&hidden, &hidden_again);
        assert!(e < 1e-4, "{mode:?}: hidden relative error {e}");
    }
}

#[test]
fn sampling_is_seeded_and_differs_from_greedy() {
    let m = model();
    let sampled = |seed: u64| {
        let p = SamplingParams {
            temperature: 1.5,
            top_k: 50,
            greedy: false,
        };
        let params = GenerationParams {
            mode: Mode::Interleaved,
            max_new_tokens: 30,
            text: p,
            audio: p,
            seed,
        };
        let mut conv = Conversation::new(m.clone());
        conv.push(&prompt(input_audio())).unwrap();
        conv.generate(params, &mut |_| ControlFlow::Continue(()))
            .unwrap()
    };
    let a = sampled(7);
    assert_eq!(a, sampled(7));
    assert_ne!(a, sampled(8));
    assert_ne!(a, tokens("interleaved_tokens.json"));
    for t in &a {
        match t {
            Token::Text(id) => assert!(*id < 256),
            Token::Audio(c) => {
                assert_eq!(c.len(), 8);
                assert!(c.iter().all(|&v| v <= 2048));
            }
        }
    }
}

/// The Responder on the test checkpoint lays the turn out as the fixture's prompt, so its first reply is the
/// reference's greedy interleaved generation; its audio is the detokenized non-end frames.
#[test]
fn responder_streams_the_reference_reply_and_keeps_the_conversation() {
    let m = model();
    let mut r = Lfm2AudioResponder::from_checkpoint(
        m.clone(),
        &fixture("checkpoint"),
        None,
        greedy(Mode::Interleaved, 30),
    )
    .unwrap();
    let audio = input_audio();
    let mut text = Vec::new();
    let mut wave = Vec::new();
    r.respond(&audio, &mut |c| {
        match c {
            ResponseChunk::Text { id, .. } => text.push(id),
            ResponseChunk::Audio(s) => wave.extend(s),
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let want = tokens("interleaved_tokens.json");
    let want_text: Vec<u32> = want
        .iter()
        .filter_map(|t| match t {
            Token::Text(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(text, want_text);
    let frames: Vec<u32> = want
        .iter()
        .filter(|t| !t.is_end_of_audio())
        .filter_map(|t| match t {
            Token::Audio(c) => Some(c.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let detok = m.detokenizer.as_ref().unwrap();
    let batch = detok.decode(&frames, frames.len() / 8).unwrap();
    assert_eq!(wave.len(), batch.len());
    let e = rel_err(&wave, &batch);
    assert!(e < 1e-4, "streamed reply audio vs batch decode: {e}");
    // The history now holds the prompt and the reply; a second turn continues it.
    let before = r.conversation().history().len();
    let mut n = 0;
    r.respond(&audio[..8000], &mut |_| {
        n += 1;
        if n == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(n, 3, "barge-in stops the reply");
    assert!(r.conversation().history().len() > before);
    r.reset();
    assert!(r.conversation().history().is_empty());
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = |d: &std::path::Path| Lfm2Audio::load(d, DType::F32, 1).err().unwrap().to_string();
    let e = err(dir.path());
    assert!(e.contains("config.json"), "{e}");
    let cfg = std::fs::read_to_string(fixture("checkpoint/config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), &cfg[..cfg.len() / 2]).unwrap();
    let e = err(dir.path());
    assert!(e.contains("config.json") && e.contains(':'), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["lfm"]["layer_types"] = serde_json::json!(["conv"]);
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("section `lfm`") && e.contains("layer_types"),
        "{e}"
    );
    std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
    let e = err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}
