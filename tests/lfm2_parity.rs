//! LFM2 against transformers: fixtures from tests/fixtures/gen_lfm2.py (two tiny random checkpoints, one bf16 and
//! sharded), compared on last hidden state, logits and greedy continuation; step decode against prefill; q8/q4
//! top-1 agreement with f32.

use sigflow::kernels::matmul::Path as KernelPath;
use sigflow::kernels::quant::DType;
use sigflow::s2s::lfm2::Lfm2;
use sigflow::s2s::sampling::argmax;
use sigflow::s2s::weights::Checkpoint;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2")
        .join(name)
}

struct Expected {
    prompts: Vec<Vec<u32>>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    greedy: Vec<Vec<u32>>,
}

fn expected(name: &str) -> Expected {
    let ck = Checkpoint::open(&dir(name).join("expected")).unwrap_or_else(|_| {
        // expected.safetensors is not named model.safetensors: open it through a temporary directory link.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir(name).join("expected.safetensors"),
            tmp.path().join("model.safetensors"),
        )
        .unwrap();
        let ck = Checkpoint::open(tmp.path()).unwrap();
        std::mem::forget(tmp);
        ck
    });
    let (p, ps) = ck.i64_any("prompts").unwrap();
    let (g, gs) = ck.i64_any("greedy").unwrap();
    let rows = |v: &[i64], s: &[usize]| -> Vec<Vec<u32>> {
        v.chunks(s[1])
            .map(|r| r.iter().map(|&x| x as u32).collect())
            .collect()
    };
    Expected {
        prompts: rows(&p, &ps),
        hidden: ck.f32_any("last_hidden").unwrap().0,
        logits: ck.f32_any("logits").unwrap().0,
        greedy: rows(&g, &gs),
    }
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let num = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let den = b.iter().fold(0f32, |m, y| m.max(y.abs()));
    num / den.max(1e-12)
}

fn prefill(model: &Lfm2, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut st = model.new_state(64);
    let (mut h, mut l) = (Vec::new(), Vec::new());
    model
        .forward(ids, &mut st, &mut h, Some(&mut l), true)
        .unwrap();
    (h, l)
}

fn check_against_transformers(name: &str) {
    let e = expected(name);
    for path in KernelPath::available() {
        let mut model = Lfm2::load(&dir(name), DType::F32, 2).unwrap();
        model.set_kernel_path(path);
        let (hd, v) = (model.cfg.hidden, model.cfg.vocab_size);
        for (i, p) in e.prompts.iter().enumerate() {
            let n = p.len();
            let (h, l) = prefill(&model, p);
            let eh = rel_err(&h, &e.hidden[i * n * hd..(i + 1) * n * hd]);
            let el = rel_err(&l, &e.logits[i * n * v..(i + 1) * n * v]);
            assert!(
                eh <= 1e-4,
                "{name} {path:?} prompt {i}: hidden state relative error {eh}"
            );
            assert!(
                el <= 1e-4,
                "{name} {path:?} prompt {i}: logits relative error {el}"
            );
            // Greedy continuation by step decode.
            let mut st = model.new_state(64);
            let (mut hb, mut lb) = (Vec::new(), Vec::new());
            model
                .forward(p, &mut st, &mut hb, Some(&mut lb), false)
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..e.greedy[i].len() {
                let t = argmax(&lb);
                got.push(t);
                model
                    .forward(&[t], &mut st, &mut hb, Some(&mut lb), false)
                    .unwrap();
            }
            assert_eq!(
                got, e.greedy[i],
                "{name} {path:?} prompt {i}: greedy continuation"
            );
        }
    }
}

#[test]
fn tiny_a_f32_matches_transformers() {
    check_against_transformers("tiny_a");
}

#[test]
fn tiny_b_bf16_sharded_matches_transformers() {
    check_against_transformers("tiny_b");
}

/// Streaming equals batch: N single-token steps (and uneven chunks) give the prefill's hidden states and logits.
#[test]
fn step_decode_equals_prefill() {
    for name in ["tiny_a", "tiny_b"] {
        for dtype in [DType::F32, DType::Q8, DType::Q4] {
            let model = Lfm2::load(&dir(name), dtype, 2).unwrap();
            let e = expected(name);
            let ids: Vec<u32> = e.prompts[0].iter().chain(&e.greedy[0]).copied().collect();
            let (h_all, l_all) = prefill(&model, &ids);
            for chunks in [vec![1usize; ids.len()], vec![5, 1, 7, 3, 2, 10]] {
                let mut st = model.new_state(8);
                let (mut h, mut l) = (Vec::new(), Vec::new());
                let (mut hs, mut ls) = (Vec::new(), Vec::new());
                let mut t = 0;
                for c in chunks {
                    model
                        .forward(&ids[t..t + c], &mut st, &mut h, Some(&mut l), true)
                        .unwrap();
                    hs.extend_from_slice(&h);
                    ls.extend_from_slice(&l);
                    t += c;
                }
                assert_eq!(t, ids.len());
                let eh = rel_err(&hs, &h_all);
                let el = rel_err(&ls, &l_all);
                assert!(
                    eh <= 1e-5 && el <= 1e-5,
                    "{name} {dtype:?}: step vs prefill {eh} {el}"
                );
            }
        }
    }
}

/// q8 and q4 pick the same top-1 token as f32 at (nearly) every position of the fixture prompts and continuations.
#[test]
fn quantised_top1_agreement() {
    for name in ["tiny_a", "tiny_b"] {
        let e = expected(name);
        let f = Lfm2::load(&dir(name), DType::F32, 2).unwrap();
        for (dtype, min) in [(DType::Q8, 0.99), (DType::Q4, 0.5), (DType::Bf16, 0.99)] {
            let q = Lfm2::load(&dir(name), dtype, 2).unwrap();
            let v = f.cfg.vocab_size;
            let (mut agree, mut total) = (0usize, 0usize);
            for (p, g) in e.prompts.iter().zip(&e.greedy) {
                let ids: Vec<u32> = p.iter().chain(g).copied().collect();
                let (_, lf) = prefill(&f, &ids);
                let (_, lq) = prefill(&q, &ids);
                for t in 0..ids.len() {
                    total += 1;
                    agree += (argmax(&lf[t * v..(t + 1) * v]) == argmax(&lq[t * v..(t + 1) * v]))
                        as usize;
                }
            }
            let frac = agree as f64 / total as f64;
            println!(
                "{name} {}: top-1 agreement with f32 {agree}/{total} = {:.1} %",
                dtype.name(),
                100.0 * frac
            );
            assert!(frac >= min, "{name} {dtype:?}: top-1 agreement {frac}");
        }
    }
}

/// The `StreamingModule` view: stepping token by token, then `reset_state`, reproduces the same logits.
#[test]
fn streaming_module_steps_and_resets() {
    use sigflow::s2s::lfm2::Lfm2Stream;
    use sigflow::StreamingModule;
    let model = Lfm2::load(&dir("tiny_a"), DType::F32, 1).unwrap();
    let e = expected("tiny_a");
    let p = &e.prompts[1];
    let v = model.cfg.vocab_size;
    let mut s = Lfm2Stream::new(&model, 32);
    let mut last = Vec::new();
    for &t in p {
        last = s.step(&[t]).unwrap();
    }
    let want = &e.logits[(2 * p.len() - 1) * v..2 * p.len() * v];
    assert!(rel_err(&last, want) <= 1e-4);
    s.reset_state();
    assert_eq!(s.state.pos, 0);
    let again = s.step(p).unwrap();
    assert!(rel_err(&again, want) <= 1e-4);
}
