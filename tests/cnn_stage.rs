//! The `cnn` stage from a config: scores equal the full-window engine on every window (raw and log-mel front
//! ends), per-frame models emit series, detections respect threshold / hysteresis / refractory, bad hops are
//! refused with the valid ones at the config line, and `sigflow run` runs a cnn stage on a WAV file.

#[path = "cnn_common.rs"]
mod common;

use common::*;
use sigflow::cnn::{import, Engine, Mode, Plan};
use sigflow::config::ConfigFile;
use sigflow::dsp::logmel::{LogMel, LogMelConfig};
use sigflow::event::{Event, EventKind};
use std::path::Path;
use std::sync::Arc;

fn config(stage: &str) -> ConfigFile {
    let text = format!(
        "[source]\nkind = \"synth\"\nsignal = \"noise\"\n\n[[stage]]\nkind = \"cnn\"\n{stage}\n"
    );
    ConfigFile::parse(Path::new("cnn-test.toml"), text).expect("config parses")
}

fn model(name: &str) -> String {
    fixtures()
        .join(format!("{name}.onnx"))
        .display()
        .to_string()
}

fn build(cf: &ConfigFile) -> Box<dyn sigflow::Stage> {
    match &cf.config.stages[0] {
        sigflow::config::StageConfig::Cnn(c) => {
            sigflow::cnn::stage::check(c, cf, 0).expect("check passes");
            sigflow::cnn::stage::build(c, cf).expect("stage builds")
        }
        _ => panic!("not a cnn stage"),
    }
}

fn noise(n: usize) -> Vec<f32> {
    let mut s = 88172645463325252u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// The error `check` gives for a cnn stage with these keys.
fn check_error(stage: &str) -> String {
    let cf = config(stage);
    let sigflow::config::StageConfig::Cnn(c) = &cf.config.stages[0] else {
        unreachable!()
    };
    sigflow::cnn::stage::check(c, &cf, 0)
        .unwrap_err()
        .to_string()
}

fn run(stage: &mut dyn sigflow::Stage, x: &[f32], block: usize) -> Vec<Event> {
    let mut ev = vec![];
    for chunk in x.chunks(block) {
        stage.push(chunk, &mut ev);
    }
    ev
}

#[test]
fn raw_scores_equal_full_window_runs() {
    let cf = config(&format!(
        "name = \"ds\"\nmodel = \"{}\"\nwindow = 512\nhop = 64\nlabels = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]",
        model("dsconv")
    ));
    let mut st = build(&cf);
    let x = noise(512 + 64 * 20 + 17);
    let ev = run(st.as_mut(), &x, 173);
    let g = Arc::new(import::load(&fixtures().join("dsconv.onnx")).unwrap());
    let mut full = Engine::new(g.clone(), Plan::new(&g, 512, 64).unwrap(), Mode::Full);
    let scores: Vec<&Event> = ev.iter().filter(|e| e.tag() == "scores").collect();
    assert_eq!(scores.len(), 21);
    for (i, e) in scores.iter().enumerate() {
        assert_eq!(e.sample, 512 + 64 * i as u64);
        let EventKind::Scores { labels, scores } = &e.kind else {
            unreachable!()
        };
        assert_eq!(labels[1], "b");
        let want = full.run_window(&x[i * 64..i * 64 + 512]);
        assert!(
            max_diff(scores, &want) <= 1e-5 * max_abs(&want),
            "window {i}"
        );
    }
}

#[test]
fn log_mel_front_end_feeds_the_model() {
    // melcnn takes 40 bands × 101 frames: 400 + 100·160 samples; a hop of 8 frames (stride 4) = 1280 samples.
    let cf = config(&format!(
        "name = \"kws\"\nmodel = \"{}\"\nfront-end = \"log-mel\"\nwindow = 16400\nhop = \"80ms\"\nn-mels = 40\nn-fft = 400\nmel-hop = \"10ms\"",
        model("melcnn")
    ));
    let mut st = build(&cf);
    let x = noise(16400 + 1280 * 5 + 99);
    let ev = run(st.as_mut(), &x, 1000);
    let scores: Vec<&Event> = ev.iter().filter(|e| e.tag() == "scores").collect();
    assert_eq!(scores.len(), 6);
    let lm = LogMelConfig {
        rate: 16_000,
        n_fft: 400,
        hop: 160,
        n_mels: 40,
        f_min: 0.0,
        f_max: None,
    };
    let g = Arc::new(import::load(&fixtures().join("melcnn.onnx")).unwrap());
    let mut full = Engine::new(g.clone(), Plan::new(&g, 101, 8).unwrap(), Mode::Full);
    for (i, e) in scores.iter().enumerate() {
        let EventKind::Scores { scores, .. } = &e.kind else {
            unreachable!()
        };
        let feats = LogMel::batch(lm, &x[i * 1280..i * 1280 + 16400]).unwrap();
        let want = full.run_window(&time_major(&sigflow::cnn::npy::Array {
            shape: vec![40, 101],
            data: feats,
        }));
        assert!(max_diff(scores, &want) <= 1e-5, "window {i}");
        assert!(
            (scores.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "softmax output"
        );
    }
}

#[test]
fn per_frame_models_emit_new_frames_as_series() {
    let cf = config(&format!(
        "name = \"fcn\"\nmodel = \"{}\"\nwindow = 256\nhop = 32",
        model("gated")
    ));
    let mut st = build(&cf);
    let x = noise(256 + 32 * 4);
    let ev = run(st.as_mut(), &x, 50);
    let series: Vec<&Event> = ev.iter().filter(|e| e.tag() == "series").collect();
    assert_eq!(series.len(), 5);
    let EventKind::Series { values, period } = &series[0].kind else {
        unreachable!()
    };
    assert_eq!((values.len(), *period), (256, 1));
    let EventKind::Series { values, .. } = &series[4].kind else {
        unreachable!()
    };
    assert_eq!(values.len(), 32);
    assert!(values
        .iter()
        .all(|v| v.len() == 1 && v[0] > 0.0 && v[0] < 1.0));
}

#[test]
fn detections_follow_threshold_hysteresis_and_refractory() {
    // gmp ends in a sigmoid: three scores in (0, 1). A threshold of 0 fires on every window unless held back.
    let base = format!(
        "name = \"det\"\nmodel = \"{}\"\nwindow = 256\nhop = 32\nlabels = [\"x\", \"y\", \"z\"]",
        model("gmp")
    );
    let x = noise(256 + 32 * 40);
    // Hysteresis larger than any score: each label fires once and never re-arms.
    let mut st = build(&config(&format!(
        "{base}\nthreshold = 0.0\nhysteresis = 2.0\ndetect = [\"y\"]"
    )));
    let ev = run(st.as_mut(), &x, 100);
    let det: Vec<&Event> = ev.iter().filter(|e| e.tag() == "detection").collect();
    assert_eq!(det.len(), 1);
    assert!(matches!(&det[0].kind, EventKind::Detection { label, .. } if label == "y"));
    // Threshold at the median score of `y`, no hysteresis: a detection on every rising edge, which the
    // refractory time then thins out.
    let mut st = build(&config(&base));
    let ys: Vec<f32> = run(st.as_mut(), &x, 100)
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Scores { scores, .. } => Some(scores[1]),
            _ => None,
        })
        .collect();
    let mut sorted = ys.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let th = sorted[sorted.len() / 2];
    let (mut armed, mut edges) = (true, vec![]);
    for (i, &s) in ys.iter().enumerate() {
        if armed && s >= th {
            edges.push(256 + 32 * i as u64);
            armed = false;
        } else if !armed && s < th {
            armed = true;
        }
    }
    assert!(edges.len() >= 3, "scores vary too little: {ys:?}");
    let detections = |refractory: u64| -> Vec<u64> {
        let cfg = format!("{base}\nthreshold = {th:?}\nhysteresis = 0.0\nrefractory = {refractory}\nemit-scores = false\ndetect = [\"y\"]");
        let mut st = build(&config(&cfg));
        let ev = run(st.as_mut(), &x, 100);
        assert!(ev.iter().all(|e| e.tag() == "detection"));
        ev.iter().map(|e| e.sample).collect()
    };
    assert_eq!(detections(0), edges);
    let thinned = detections(200);
    assert!(thinned.len() < edges.len() || edges.windows(2).all(|w| w[1] - w[0] >= 200));
    assert!(
        thinned.windows(2).all(|w| w[1] - w[0] >= 200),
        "{thinned:?}"
    );
}

#[test]
fn smoothed_detections_equal_the_rule_applied_to_full_window_scores() {
    // Batch twin: every window run whole, each label's mean over the latest 5 windows (fewer at the start), then
    // threshold + refractory; the exact-mode stage fed in odd blocks must give the same detections.
    let hops = 5;
    let base = format!(
        "name = \"det\"\nmodel = \"{}\"\nwindow = 256\nhop = 32\nlabels = [\"x\", \"y\", \"z\"]\nmode = \"exact\"",
        model("gmp")
    );
    let x = noise(256 + 32 * 60);
    let g = Arc::new(import::load(&fixtures().join("gmp.onnx")).unwrap());
    let mut full = Engine::new(g.clone(), Plan::new(&g, 256, 32).unwrap(), Mode::Full);
    let raw: Vec<Vec<f32>> = (0..=60)
        .map(|i| full.run_window(&x[i * 32..i * 32 + 256]))
        .collect();
    let mean: Vec<f64> = (0..raw.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(hops);
            raw[from..=i].iter().map(|r| r[1] as f64).sum::<f64>() / (i + 1 - from) as f64
        })
        .collect();
    let mut sorted = mean.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The threshold sits in the widest gap between the middle half of the means, clear of rounding.
    let n = sorted.len();
    let m = (n / 4..3 * n / 4)
        .max_by(|&a, &b| (sorted[a + 1] - sorted[a]).total_cmp(&(sorted[b + 1] - sorted[b])))
        .unwrap();
    assert!(sorted[m + 1] - sorted[m] > 1e-6, "no clear gap: {sorted:?}");
    let th = ((sorted[m] + sorted[m + 1]) / 2.0) as f32;
    let refractory = 96u64;
    let (mut armed, mut last, mut want) = (true, None::<u64>, vec![]);
    for (i, &s) in mean.iter().enumerate() {
        let end = 256 + 32 * i as u64;
        if armed && s >= th as f64 {
            if last.is_none_or(|t| end >= t + refractory) {
                want.push((end, s));
                last = Some(end);
                armed = false;
            }
        } else if !armed && s < th as f64 {
            armed = true;
        }
    }
    assert!(want.len() >= 3, "too few detections to compare: {want:?}");
    let mut st = build(&config(&format!(
        "{base}\nthreshold = {th:?}\nhysteresis = 0.0\nrefractory = {refractory}\nsmooth = {}\n\
         emit-scores = false\ndetect = [\"y\"]",
        32 * hops
    )));
    let got: Vec<(u64, f32)> = run(st.as_mut(), &x, 77)
        .iter()
        .map(|e| match &e.kind {
            EventKind::Detection { label, score } if label == "y" => (e.sample, *score),
            other => panic!("not a detection of y: {other:?}"),
        })
        .collect();
    assert_eq!(
        got.iter().map(|d| d.0).collect::<Vec<_>>(),
        want.iter().map(|d| d.0).collect::<Vec<_>>()
    );
    for ((_, a), (_, b)) in got.iter().zip(&want) {
        assert!((*a as f64 - b).abs() < 1e-5, "score {a} vs {b}");
    }
    // The first window is averaged over itself alone: threshold 0 fires at once with its own score.
    let mut first = build(&config(&format!(
        "{base}\nthreshold = 0.0\nhysteresis = 2.0\nsmooth = {}\nemit-scores = false\ndetect = [\"y\"]",
        32 * hops
    )));
    let ev = run(first.as_mut(), &x, 77);
    assert_eq!(ev.len(), 1);
    let EventKind::Detection { score, .. } = &ev[0].kind else {
        unreachable!()
    };
    assert_eq!(ev[0].sample, 256);
    assert!((score - raw[0][1]).abs() < 1e-6, "{score} vs {}", raw[0][1]);
    // Smoothing over one hop is no smoothing; the same stage after reset repeats itself.
    let plain = format!(
        "{base}\nthreshold = {th:?}\nhysteresis = 0.0\nemit-scores = false\ndetect = [\"y\"]"
    );
    let one = format!("{plain}\nsmooth = 32");
    let mut a = build(&config(&plain));
    let mut b = build(&config(&one));
    let (ea, eb) = (run(a.as_mut(), &x, 64), run(b.as_mut(), &x, 64));
    assert_eq!(
        ea.iter().map(|e| e.sample).collect::<Vec<_>>(),
        eb.iter().map(|e| e.sample).collect::<Vec<_>>()
    );
    st.reset();
    assert_eq!(run(st.as_mut(), &x, 77).len(), got.len());
    let err = |extra: &str| check_error(&format!("{base}\n{extra}"));
    let e = err("threshold = 0.5\nsmooth = 16");
    assert!(
        e.contains("stage[0].smooth: must span 1 to 10000 hops of 32 samples (it spans 0.50)"),
        "{e}"
    );
    let e = err("smooth = 64");
    assert!(e.contains("stage[0].smooth: needs a `threshold`"), "{e}");
}

#[test]
fn a_label_threshold_overrides_the_stage_threshold() {
    // Every gmp score lies in (0, 1): threshold 0 fires each label on the first window, 2.0 never.
    let base = format!(
        "name = \"det\"\nmodel = \"{}\"\nwindow = 256\nhop = 32\nlabels = [\"x\", \"y\", \"z\"]\n\
         hysteresis = 2.0\nemit-scores = false",
        model("gmp")
    );
    let x = noise(256 + 32 * 20);
    let labels = |extra: &str| -> Vec<String> {
        let mut st = build(&config(&format!("{base}\n{extra}")));
        run(st.as_mut(), &x, 100)
            .iter()
            .map(|e| match &e.kind {
                EventKind::Detection { label, .. } => label.clone(),
                other => panic!("not a detection: {other:?}"),
            })
            .collect()
    };
    assert_eq!(labels("threshold = 0.0"), ["x", "y", "z"]);
    assert_eq!(
        labels("threshold = 0.0\nthresholds = { y = 2.0 }"),
        ["x", "z"]
    );
    assert_eq!(labels("threshold = 2.0\nthresholds = { z = 0.0 }"), ["z"]);
    let err = |extra: &str| check_error(&format!("{base}\n{extra}"));
    let e = err("threshold = 0.5\nthresholds = { w = 0.9 }");
    assert!(
        e.contains("stage[0].thresholds: `w` is not one of the labels (x, y, z)"),
        "{e}"
    );
    let e = err("thresholds = { y = 0.9 }");
    assert!(
        e.contains("stage[0].thresholds: needs a `threshold`"),
        "{e}"
    );
    let e = err("threshold = 0.5\ndetect = [\"x\"]\nthresholds = { y = 0.9 }");
    assert!(e.contains("`y` is not in `detect`"), "{e}");
}

#[test]
fn config_errors_point_at_the_key() {
    let cf = config(&format!(
        "name = \"ds\"\nmodel = \"{}\"\nwindow = 512\nhop = 60",
        model("dsconv")
    ));
    let sigflow::config::StageConfig::Cnn(c) = &cf.config.stages[0] else {
        unreachable!()
    };
    let e = sigflow::cnn::stage::check(c, &cf, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cnn-test.toml:10:1: stage[0].hop: hop 60 cannot be exact"),
        "{e}"
    );
    assert!(
        e.contains("valid hops: multiples of 8 up to 512: 8, 16"),
        "{e}"
    );
    let cf = config(&format!(
        "name = \"ds\"\nmodel = \"{}\"\nwindow = 512\nhop = 64\nlabels = [\"a\"]",
        model("dsconv")
    ));
    let sigflow::config::StageConfig::Cnn(c) = &cf.config.stages[0] else {
        unreachable!()
    };
    let e = sigflow::cnn::stage::check(c, &cf, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage[0].labels: 1 labels for 6 model outputs"),
        "{e}"
    );
    let cf = config("name = \"ds\"\nmodel = \"missing.onnx\"\nwindow = 512\nhop = 64");
    let sigflow::config::StageConfig::Cnn(c) = &cf.config.stages[0] else {
        unreachable!()
    };
    let e = sigflow::cnn::stage::check(c, &cf, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage[0].model: model file") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn daemon_runs_a_cnn_stage_on_a_wav_file() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("in.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for v in noise(16_000) {
        w.write_sample((v * 20000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = dir.path().join("cnn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"wav\"\npath = \"in.wav\"\n\n[[stage]]\nkind = \"cnn\"\nname = \"ds\"\nmodel = \"{}\"\nrate = 16000\nwindow = \"32ms\"\nhop = \"4ms\"\n\n[[sink]]\nkind = \"jsonl\"\npath = \"{}\"\n",
            model("dsconv"),
            out.display()
        ),
    )
    .unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .arg("run")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "sigflow run failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let scores = text
        .lines()
        .filter(|l| l.contains("\"event\":\"scores\"") && l.contains("\"stage\":\"ds\""))
        .count();
    // 16000 samples, window 512, hop 64: 243 windows.
    assert_eq!(scores, 243, "{text:.400}");
}

#[test]
fn a_wake_word_gates_the_other_detections() {
    // Every label's threshold at the median of its scores, no hysteresis or refractory time: many detections of
    // each. With `wake-word`, a detection of x or y is reported only within `listen` of the latest z or reported
    // command, as a plain filter over the ungated detections (in the order the stage reports them) gives it.
    let base = format!(
        "name = \"det\"\nmodel = \"{}\"\nwindow = 256\nhop = 32\nlabels = [\"x\", \"y\", \"z\"]",
        model("gmp")
    );
    let x = noise(256 + 32 * 200);
    let mut st = build(&config(&base));
    let scores: Vec<Vec<f32>> = run(st.as_mut(), &x, 100)
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Scores { scores, .. } => Some(scores.clone()),
            _ => None,
        })
        .collect();
    let median = |k: usize| {
        let mut v: Vec<f32> = scores.iter().map(|s| s[k]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let detect = format!(
        "{base}\nthreshold = {:?}\nthresholds = {{ y = {:?}, z = {:?} }}\nhysteresis = 0.0\nrefractory = 0\n\
         emit-scores = false",
        median(0),
        median(1),
        median(2)
    );
    let detections = |extra: &str| -> Vec<(u64, String)> {
        let mut st = build(&config(&format!("{detect}\n{extra}")));
        let got: Vec<(u64, String)> = run(st.as_mut(), &x, 77)
            .iter()
            .map(|e| match &e.kind {
                EventKind::Detection { label, .. } => (e.sample, label.clone()),
                other => panic!("not a detection: {other:?}"),
            })
            .collect();
        // The same stage after reset listens for the wake word again from the start.
        st.reset();
        let again: Vec<u64> = run(st.as_mut(), &x, 64).iter().map(|e| e.sample).collect();
        assert_eq!(again, got.iter().map(|d| d.0).collect::<Vec<_>>());
        got
    };
    let all = detections("");
    let listen = 32 * 4;
    let mut until = None::<u64>;
    let want: Vec<(u64, String)> = all
        .iter()
        .filter(|(t, label)| {
            let open = label == "z" || until.is_some_and(|u| *t <= u);
            if open {
                until = Some(t + listen);
            }
            open
        })
        .cloned()
        .collect();
    let commands = |d: &[(u64, String)]| d.iter().filter(|(_, l)| l != "z").count();
    assert!(
        commands(&want) >= 3 && commands(&want) + 3 <= commands(&all),
        "the gate should keep some commands and drop others: {} of {}",
        commands(&want),
        commands(&all)
    );
    let gated = detections(&format!(
        "wake-word = {{ label = \"z\", listen = {listen} }}"
    ));
    assert_eq!(gated, want);
    // The wake word's own detections are all reported.
    let wakes = |d: &[(u64, String)]| d.iter().filter(|(_, l)| l == "z").count();
    assert_eq!(wakes(&gated), wakes(&all));

    let err = |extra: &str| check_error(&format!("{detect}\n{extra}"));
    let e = err("wake-word = { label = \"w\" }");
    assert!(
        e.contains("stage[0].wake-word.label: `w` is not one of the labels (x, y, z)"),
        "{e}"
    );
    let e = check_error(&format!(
        "{base}\nthreshold = 0.5\ndetect = [\"x\"]\nwake-word = {{ label = \"z\" }}"
    ));
    assert!(
        e.contains("stage[0].wake-word.label: `z` is not in `detect`"),
        "{e}"
    );
    let e = err("wake-word = { label = \"z\", listen = 16 }");
    assert!(
        e.contains("stage[0].wake-word.listen: must be one hop (32 samples) to 1 hour"),
        "{e}"
    );
    let e = check_error(&format!("{base}\nwake-word = {{ label = \"z\" }}"));
    assert!(e.contains("stage[0].wake-word: needs a `threshold`"), "{e}");
    let text = format!(
        "[source]\nkind = \"synth\"\nsignal = \"noise\"\n\n[[stage]]\nkind = \"cnn\"\n{detect}\nwake-word = {{ label = \"z\", after = 1 }}\n"
    );
    let e = ConfigFile::parse(Path::new("cnn-test.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `after`, expected `label` or `listen`"),
        "{e}"
    );
}
