//! The `s2s` assistant stage: turns from VAD (and wake-word) events, stream-paced release of the reply, barge-in,
//! never waiting for the model when pacing is free, and the playback sink dropping an interrupted reply.
//!
//! The model here is a test double with deterministic audio (the stage logic does not depend on what the model
//! says); the detectors are scripted stages, except in the pipeline test, which runs the bundled Silero VAD
//! (needs ONNX Runtime: ORT_DYLIB_PATH must point at libonnxruntime.so.1.31.1).

use sigflow::config::ConfigFile;
use sigflow::event::BargeInSignal;
use sigflow::io::playback::{PlaybackSink, PlaybackStats, RingReader};
use sigflow::io::Sink;
use sigflow::kernels::quant::DType;
use sigflow::pipeline::router::{Filter, SinkSpec};
use sigflow::pipeline::Pipeline;
use sigflow::s2s::session::{Responder, ResponseChunk, WakeWord};
use sigflow::s2s::stage::{ResponseMode, S2sSettings, S2sStage, STEP};
use sigflow::{Event, EventKind, Result, Stage};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn settings(stream_paced: bool, wake: Option<WakeWord>) -> S2sSettings {
    S2sSettings {
        name: "assistant".into(),
        checkpoint: PathBuf::from("unused"),
        dtype: DType::F32,
        threads: 1,
        mode: ResponseMode::Interleaved,
        max_new_tokens: 64,
        system_prompt: "test".into(),
        barge_in: true,
        stream_paced,
        max_turn: 30 * 16_000,
        wake,
    }
}

/// Samples of one reply chunk (80 ms at 24 kHz, one LFM2-Audio frame).
const CHUNK: usize = 1920;

/// Audio sample `i` of the reply to a turn of `len` samples (the model's audio depends on what it heard).
fn reply_sample(len: usize, i: usize) -> f32 {
    ((i % 97) as f32 / 97.0 - 0.5) * 0.5 + (len % 41) as f32 * 0.01
}

/// What the test model saw and did.
#[derive(Default)]
struct ModelLog {
    /// Per turn: the turn's audio.
    turns: Vec<Vec<f32>>,
    /// Per turn: chunks handed over, and whether the caller stopped it.
    emitted: Vec<(usize, bool)>,
}

/// A deterministic model: a text piece naming the turn and its length, `chunks` audio chunks, a final piece.
struct ToneResponder {
    chunks: usize,
    delay: std::time::Duration,
    gate: Option<crossbeam_channel::Receiver<()>>,
    log: Arc<Mutex<ModelLog>>,
}

impl ToneResponder {
    fn new(chunks: usize, log: &Arc<Mutex<ModelLog>>) -> Self {
        ToneResponder {
            chunks,
            delay: std::time::Duration::ZERO,
            gate: None,
            log: Arc::clone(log),
        }
    }
}

impl Responder for ToneResponder {
    fn respond(
        &mut self,
        turn: &[f32],
        emit: &mut dyn FnMut(ResponseChunk) -> ControlFlow<()>,
    ) -> Result<()> {
        let k = {
            let mut log = self.log.lock().expect("log");
            log.turns.push(turn.to_vec());
            log.emitted.push((0, false));
            log.turns.len() as u64 - 1
        };
        if let Some(g) = &self.gate {
            let _ = g.recv();
        }
        let record = |n: usize, stopped: bool| {
            self.log.lock().expect("log").emitted[k as usize] = (n, stopped);
        };
        let first = ResponseChunk::Text {
            id: 1,
            piece: format!("turn {k}: {} samples", turn.len()),
        };
        if emit(first).is_break() {
            record(0, true);
            return Ok(());
        }
        for c in 0..self.chunks {
            std::thread::sleep(self.delay);
            let audio = (0..CHUNK)
                .map(|i| reply_sample(turn.len(), c * CHUNK + i))
                .collect();
            if emit(ResponseChunk::Audio(audio)).is_break() {
                record(c + 1, true);
                return Ok(());
            }
        }
        let _ = emit(ResponseChunk::Text {
            id: 2,
            piece: ".".into(),
        });
        record(self.chunks, false);
        Ok(())
    }

    fn reset(&mut self) {}
}

/// A detector double: emits each scripted event once its input has reached the event's trigger position.
struct Scripted {
    name: Arc<str>,
    script: Vec<(u64, u64, EventKind)>,
    pushed: u64,
    next: usize,
}

impl Scripted {
    /// `(trigger, sample, kind)`, in trigger order.
    fn new(name: &str, script: Vec<(u64, u64, EventKind)>) -> Self {
        Scripted {
            name: Arc::from(name),
            script,
            pushed: 0,
            next: 0,
        }
    }

    fn vad(segments: &[(u64, u64)], start_delay: u64, end_delay: u64) -> Self {
        let mut script = Vec::new();
        for &(s, e) in segments {
            script.push((
                s + start_delay,
                s,
                EventKind::SpeechStart { probability: 0.9 },
            ));
            script.push((
                e + end_delay,
                e,
                EventKind::SpeechEnd {
                    duration: (e - s) as f64 / 16_000.0,
                },
            ));
        }
        Scripted::new("vad", script)
    }
}

impl Stage for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn rate(&self) -> u32 {
        16_000
    }
    fn push(&mut self, samples: &[f32], out: &mut Vec<Event>) {
        self.pushed += samples.len() as u64;
        while let Some((trigger, sample, kind)) = self.script.get(self.next) {
            if *trigger > self.pushed {
                break;
            }
            out.push(Event::new(&self.name, *sample, kind.clone()));
            self.next += 1;
        }
    }
    fn reset(&mut self) {
        self.pushed = 0;
        self.next = 0;
    }
}

/// The input signal: a slow ramp, so a turn's audio tells where it was cut from.
fn input(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i as f32 * 1e-4).sin() * 0.3).collect()
}

/// Push `x` in blocks of `block`, then finish; all events in order.
fn run(stage: &mut dyn Stage, x: &[f32], block: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for b in x.chunks(block) {
        stage.push(b, &mut out);
    }
    stage.finish(&mut out);
    out
}

fn of(events: &[Event], tag: &str) -> Vec<Event> {
    events.iter().filter(|e| e.tag() == tag).cloned().collect()
}

fn reply_audio(events: &[Event]) -> Vec<f32> {
    events
        .iter()
        .filter(|e| &*e.stage == "assistant")
        .filter_map(|e| match &e.kind {
            EventKind::Audio { samples, .. } => Some(samples.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The first piece end (multiple of STEP) at which a detector fed up to it has seen `trigger`.
fn reaction(trigger: u64) -> u64 {
    trigger.div_ceil(STEP) * STEP
}

/// A compact, comparable account of the stage's own events.
fn signature(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Audio { frames, .. } => format!("{} {} audio {frames}", e.stage, e.sample),
            EventKind::Text { text } => format!("{} {} text {text}", e.stage, e.sample),
            EventKind::BargeIn { turn, frames } => format!("{} barge_in {turn} {frames}", e.sample),
            EventKind::ResponseEnd {
                turn,
                frames,
                text,
                interrupted,
                ..
            } => format!(
                "{} response_end {turn} {frames} {text} {interrupted}",
                e.sample
            ),
            _ => format!("{} {} {}", e.stage, e.sample, e.tag()),
        })
        .collect()
}

#[test]
fn a_turn_is_answered_with_its_audio_and_text_at_stream_pace() {
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let x = input(6 * 16_000);
    let (speech, end_trigger) = ((16_000u64, 32_000u64), 33_600u64);
    let vad = Scripted::vad(&[speech], 300, end_trigger - speech.1);
    let mut stage = S2sStage::new(
        settings(true, None),
        Box::new(vad),
        None,
        Box::new(ToneResponder::new(10, &log)),
    )
    .expect("stage");
    let events = run(&mut stage, &x, 160);

    let start = reaction(end_trigger);
    let turn_start = of(&events, "turn_start");
    assert_eq!(turn_start.len(), 1);
    assert_eq!(turn_start[0].sample, start);
    assert!(
        matches!(turn_start[0].kind, EventKind::TurnStart { turn: 0, duration } if duration == 1.0)
    );
    assert_eq!(of(&events, "response_start")[0].sample, start);

    // The model got exactly the user's speech.
    let log_turns = log.lock().expect("log").turns.clone();
    assert_eq!(log_turns.len(), 1);
    assert_eq!(log_turns[0], x[16_000..32_000]);

    // All the reply audio, unchanged, and never ahead of stream time.
    let audio = reply_audio(&events);
    let expected: Vec<f32> = (0..10 * CHUNK).map(|i| reply_sample(16_000, i)).collect();
    assert_eq!(audio, expected);
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| &*e.stage == "assistant" && e.tag() == "audio")
        .collect();
    let mut released = 0u64;
    for (i, e) in mine.iter().enumerate() {
        let EventKind::Audio { frames, rate, .. } = &e.kind else {
            unreachable!()
        };
        assert_eq!(*rate, 24_000);
        released += *frames as u64;
        // After the last release at a stream position, the reply is out exactly as far as stream time allows.
        if mine.get(i + 1).is_none_or(|n| n.sample != e.sample) {
            assert_eq!(
                released,
                ((e.sample - start) * 3 / 2).min(expected.len() as u64),
                "at sample {}",
                e.sample
            );
        }
    }
    let texts: Vec<String> = of(&events, "text")
        .iter()
        .map(|e| match &e.kind {
            EventKind::Text { text } => text.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(texts, ["turn 0: 16000 samples", "."]);
    let end = of(&events, "response_end");
    assert_eq!(end.len(), 1);
    // 19200 samples at 24 kHz last 12800 samples at 16 kHz: the reply is out 12800 samples after it started.
    assert_eq!(end[0].sample, start + 12_800);
    match &end[0].kind {
        EventKind::ResponseEnd {
            turn: 0,
            frames,
            rate: 24_000,
            text,
            interrupted: false,
        } => {
            assert_eq!(*frames, 19_200);
            assert_eq!(text, "turn 0: 16000 samples.");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The VAD's own events pass through under its name.
    assert_eq!(of(&events, "speech_start").len(), 1);
    assert_eq!(&*of(&events, "speech_end")[0].stage, "vad");
    assert!(of(&events, "barge_in").is_empty());
}

/// Two user turns; the second begins while the 8 s reply to the first is playing.
fn barge_in_run(block: usize, delay_ms: u64) -> (Vec<Event>, Arc<Mutex<ModelLog>>) {
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let x = input(10 * 16_000);
    let vad = Scripted::vad(&[(16_000, 32_000), (48_000, 60_000)], 512, 1_600);
    let mut model = ToneResponder::new(100, &log);
    model.delay = std::time::Duration::from_millis(delay_ms);
    let mut stage =
        S2sStage::new(settings(true, None), Box::new(vad), None, Box::new(model)).expect("stage");
    let events = run(&mut stage, &x, block);
    drop(stage); // joins the model thread
    (events, log)
}

#[test]
fn speech_during_the_reply_cuts_it_at_the_barge_in_sample() {
    let (events, log) = barge_in_run(160, 0);
    let start = reaction(32_000 + 1_600);
    let cut_at = reaction(48_000 + 512);
    let cut = (cut_at - start) * 3 / 2;
    let barge = of(&events, "barge_in");
    assert_eq!(barge.len(), 1);
    assert_eq!(barge[0].sample, cut_at);
    assert!(matches!(barge[0].kind, EventKind::BargeIn { turn: 0, frames } if frames == cut));
    let ends = of(&events, "response_end");
    assert_eq!(ends.len(), 2);
    assert!(
        matches!(ends[0].kind, EventKind::ResponseEnd { turn: 0, frames, interrupted: true, .. } if frames == cut)
    );
    assert!(
        matches!(ends[1].kind, EventKind::ResponseEnd { turn: 1, frames, interrupted: false, .. } if frames == 100 * CHUNK as u64)
    );

    // The first reply's audio stops exactly at the cut; the second follows whole.
    let audio = reply_audio(&events);
    let first: Vec<f32> = (0..cut as usize).map(|i| reply_sample(16_000, i)).collect();
    let second: Vec<f32> = (0..100 * CHUNK).map(|i| reply_sample(12_000, i)).collect();
    assert_eq!(audio.len(), first.len() + second.len());
    assert_eq!(audio[..first.len()], first[..]);
    assert_eq!(audio[first.len()..], second[..]);

    // The interrupting speech became the next turn; the model was told to stop the first reply.
    let log = log.lock().expect("log");
    assert_eq!(log.turns.len(), 2);
    assert_eq!(log.turns[1], input(10 * 16_000)[48_000..60_000]);
    let (emitted, stopped) = log.emitted[0];
    assert!(stopped, "the model was not stopped");
    assert!(emitted < 100, "the model produced the whole reply");
    assert_eq!(log.emitted[1], (100, false));
}

#[test]
fn stream_paced_release_does_not_depend_on_block_size_or_model_speed() {
    let (reference, _) = barge_in_run(160, 0);
    let reference = signature(&reference);
    for (block, delay) in [(37, 0), (4096, 0), (1000, 3)] {
        let (events, _) = barge_in_run(block, delay);
        assert_eq!(
            signature(&events),
            reference,
            "block {block}, model delay {delay} ms"
        );
    }
}

#[test]
fn a_wake_word_gates_turns() {
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let x = input(12 * 16_000);
    // Turn 1 (1–2 s) without the wake word; turn 2 (6–7 s) with it heard at 5.5 s.
    let vad = Scripted::vad(&[(16_000, 32_000), (96_000, 112_000)], 512, 1_600);
    let wake = Scripted::new(
        "kws",
        vec![
            (
                8_000,
                8_000,
                EventKind::Detection {
                    label: "go".into(),
                    score: 0.95,
                },
            ),
            (
                88_500,
                88_000,
                EventKind::Detection {
                    label: "hey_sigflow".into(),
                    score: 0.95,
                },
            ),
        ],
    );
    let wake_word = WakeWord {
        label: "hey_sigflow".into(),
        window: 16_000,
    };
    let mut stage = S2sStage::new(
        settings(true, Some(wake_word)),
        Box::new(vad),
        Some(Box::new(wake)),
        Box::new(ToneResponder::new(5, &log)),
    )
    .expect("stage");
    let events = run(&mut stage, &x, 320);
    let turns = of(&events, "turn_start");
    assert_eq!(turns.len(), 1, "{:?}", signature(&events));
    assert_eq!(turns[0].sample, reaction(112_000 + 1_600));
    assert_eq!(log.lock().expect("log").turns[0], x[96_000..112_000]);
    assert_eq!(of(&events, "detection").len(), 2, "detections pass through");
}

#[test]
fn free_pacing_never_waits_for_the_model() {
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let (go, gate) = crossbeam_channel::bounded::<()>(1);
    let mut model = ToneResponder::new(4, &log);
    model.gate = Some(gate);
    let vad = Scripted::vad(&[(16_000, 32_000)], 512, 1_600);
    let mut stage =
        S2sStage::new(settings(false, None), Box::new(vad), None, Box::new(model)).expect("stage");
    let x = input(4 * 16_000);
    let mut out = Vec::new();
    // The model is held back: the stream goes on regardless.
    for b in x.chunks(160) {
        stage.push(b, &mut out);
    }
    assert_eq!(of(&out, "turn_start").len(), 1);
    assert!(reply_audio(&out).is_empty());
    go.send(()).expect("model waits at the gate");
    let silence = vec![0.0f32; 160];
    let mut rounds = 0;
    while of(&out, "response_end").is_empty() {
        rounds += 1;
        assert!(rounds < 5_000, "the reply never ended");
        stage.push(&silence, &mut out);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let expected: Vec<f32> = (0..4 * CHUNK).map(|i| reply_sample(16_000, i)).collect();
    assert_eq!(reply_audio(&out), expected);
    // The reply lasts until it has been played: 7680 samples at 24 kHz = 5120 at 16 kHz after its first audio.
    let first_audio = out
        .iter()
        .find(|e| &*e.stage == "assistant" && e.tag() == "audio")
        .map(|e| e.sample)
        .expect("audio");
    assert!(of(&out, "response_end")[0].sample >= first_audio + 5_120);
}

#[test]
fn playback_drops_the_unplayed_rest_of_an_interrupted_reply() {
    let (producer, consumer) = rtrb::RingBuffer::<f32>::new(48_000);
    let stats = Arc::new(PlaybackStats::default());
    let mut sink = PlaybackSink::on_ring("assistant", 24_000, producer, Arc::clone(&stats));
    let mut device = RingReader::new(consumer, Arc::clone(&stats));
    let name: Arc<str> = Arc::from("assistant");
    let audio = |v: f32, n: usize| {
        Event::new(
            &name,
            0,
            EventKind::Audio {
                rate: 24_000,
                samples: Arc::from(vec![v; n]),
                frames: n,
            },
        )
    };
    let signal = Arc::new(BargeInSignal::default());
    let start = |s: &Arc<BargeInSignal>, turn| {
        Event::new(
            &name,
            0,
            EventKind::ResponseStart {
                turn,
                signal: Arc::clone(s),
            },
        )
    };
    sink.write(&start(&signal, 0)).expect("write");
    sink.write(&audio(0.5, 4_800)).expect("write");
    let mut out = vec![9.0f32; 2 * 1_000]; // a stereo device
    device.fill(&mut out, 2);
    assert!(out.iter().all(|&v| v == 0.5));
    // Barge-in: the stage raises the signal; later audio of that reply is still queued for the sink.
    signal.raise();
    sink.write(&audio(0.5, 4_800)).expect("write");
    device.fill(&mut out, 2);
    assert!(
        out.iter().all(|&v| v == 0.0),
        "interrupted audio was played"
    );
    assert_eq!(
        stats
            .flushed_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        3_800
    );
    sink.write(&Event::new(
        &name,
        0,
        EventKind::BargeIn {
            turn: 0,
            frames: 1_000,
        },
    ))
    .expect("write");
    // The next reply plays normally.
    let next = Arc::new(BargeInSignal::default());
    sink.write(&start(&next, 1)).expect("write");
    sink.write(&audio(0.25, 500)).expect("write");
    device.fill(&mut out, 2);
    assert!(out[..1_000].iter().all(|&v| v == 0.25));
    assert!(out[1_000..].iter().all(|&v| v == 0.0));
    assert_eq!(
        stats
            .played_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        1_500
    );
}

fn checkpoint_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sigflow-s2s-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("config.json"), "{}").expect("config.json");
    dir
}

fn parse(text: &str) -> Result<ConfigFile> {
    ConfigFile::parse(&root().join("test.toml"), text.to_string())
}

fn assistant_config(stage_extra: &str) -> String {
    format!(
        "[source]\nkind = \"synth\"\nsignal = \"noise\"\nduration = 1.0\n\n\
         [[stage]]\nkind = \"onnx\"\nname = \"vad\"\npreset = \"vad\"\nmodel = \"models/silero_vad.onnx\"\n\n\
         [[stage]]\nkind = \"level\"\nname = \"lvl\"\n\n\
         [[stage]]\nkind = \"s2s\"\nname = \"assistant\"\ncheckpoint = \"{}\"\n{stage_extra}\n",
        checkpoint_dir().display()
    )
}

#[test]
fn config_errors_name_the_key_and_its_line() {
    let cf = parse(&assistant_config("vad = \"vad\"")).expect("parses");
    sigflow::pipeline::check::check(&cf).expect("a valid assistant config");
    assert_eq!(sigflow::s2s::stage::adopted_stages(&cf), vec![0]);

    let cf = parse(&assistant_config("vad = \"lvl\"")).expect("parses");
    let e = sigflow::pipeline::check::check(&cf)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test.toml:20:1: stage[2].vad: stage `lvl` is not an `onnx` stage"),
        "{e}"
    );

    let cf = parse(&assistant_config("vad = \"vad\"\ndtype = \"f16\"")).expect("parses");
    let e = sigflow::pipeline::check::check(&cf)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test.toml:21:1: stage[2].dtype: unknown dtype `f16`"),
        "{e}"
    );

    let cf = parse(&assistant_config(
        "vad = \"vad\"\nwake-word = { stage = \"lvl\", label = \"x\" }",
    ))
    .expect("parses");
    let e = sigflow::pipeline::check::check(&cf)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage[2].wake-word.stage: stage `lvl` is not a `cnn` stage"),
        "{e}"
    );

    let e = parse(&assistant_config("vad = \"vad\"\nbarge = true"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test.toml:21:1:") && e.contains("unknown field `barge`"),
        "{e}"
    );

    let text = assistant_config("vad = \"vad\"").replace(
        &checkpoint_dir().display().to_string(),
        "/nonexistent/checkpoint",
    );
    let e = sigflow::pipeline::check::check(&parse(&text).expect("parses"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage[2].checkpoint: /nonexistent/checkpoint is not an LFM2-Audio checkpoint"),
        "{e}"
    );
}

/// Records every event it is given.
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn write(&mut self, ev: &Event) -> Result<()> {
        self.0.lock().expect("events").push(ev.clone());
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The bundled conversation through the real Silero VAD: every pause is a turn, every reply (3 s) is longer than
/// the pauses, so the other speaker barges in; the WAV sink holds exactly the reply audio released.
#[test]
fn conversation_through_silero_vad_with_barge_in_and_a_reply_wav() {
    if let Err(e) = sigflow::onnx::runtime::ensure_loaded() {
        panic!("this test needs ONNX Runtime: {e}");
    }
    let text = format!(
        "[source]\nkind = \"wav\"\npath = \"{}\"\n\n[[stage]]\nkind = \"onnx\"\nname = \"vad\"\npreset = \"vad\"\n\
         model = \"models/silero_vad.onnx\"\n",
        root().join("audio/pyannote_sample.wav").display()
    );
    let cf = parse(&text).expect("parses");
    let source = sigflow::io::open_source(&cf).expect("source");
    let vad = sigflow::pipeline::build_stage(&cf, 0, 16_000).expect("vad");
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let stage = S2sStage::new(
        settings(true, None),
        vad,
        None,
        Box::new(ToneResponder::new(37, &log)),
    )
    .expect("stage");
    let wav = std::env::temp_dir().join(format!("sigflow-s2s-reply-{}.wav", std::process::id()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sinks = vec![
        SinkSpec {
            name: "wav".into(),
            filter: Filter {
                audio_from: Some(("assistant".into(), None)),
                ..Filter::default()
            },
            policy: sigflow::config::SinkPolicy::Block,
            sink: Box::new(
                sigflow::io::wav_sink::WavFileSink::create(
                    &wav,
                    "assistant",
                    sigflow::config::WavFormat::Float32,
                    None,
                )
                .expect("wav sink"),
            ),
        },
        SinkSpec {
            name: "events".into(),
            filter: Filter::default(),
            policy: sigflow::config::SinkPolicy::Block,
            sink: Box::new(Collect(Arc::clone(&events))),
        },
    ];
    let report = Pipeline::from_parts(source, vec![Box::new(stage)], sinks)
        .start()
        .expect("start")
        .wait()
        .expect("run");
    assert_eq!(report.lost, 0);
    let events = events.lock().expect("events").clone();

    let ends: Vec<(u64, bool)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ResponseEnd {
                frames,
                interrupted,
                ..
            } => Some((frames, interrupted)),
            _ => None,
        })
        .collect();
    let lens: Vec<usize> = of(&events, "turn_start")
        .iter()
        .map(|e| match e.kind {
            EventKind::TurnStart { duration, .. } => (duration * 16_000.0).round() as usize,
            _ => unreachable!(),
        })
        .collect();
    let turns = of(&events, "turn_start").len();
    let story: Vec<String> = signature(&events)
        .into_iter()
        .filter(|s| !s.contains(" audio ") && !s.contains(" text "))
        .collect();
    assert!(
        turns >= 4,
        "only {turns} turns in a 30 s conversation: {story:?}"
    );
    assert_eq!(ends.len(), turns);
    let barge = of(&events, "barge_in");
    assert!(
        !barge.is_empty(),
        "nobody interrupted a 3 s reply in a lively conversation"
    );
    assert_eq!(barge.len(), ends.iter().filter(|e| e.1).count());

    // Each cut is where the reply had got to by then, and it coincides with a VAD speech start.
    let starts = of(&events, "response_start");
    for b in &barge {
        let EventKind::BargeIn { turn, frames } = b.kind else {
            unreachable!()
        };
        let started = starts
            .iter()
            .find(|s| matches!(s.kind, EventKind::ResponseStart { turn: t, .. } if t == turn))
            .expect("its response_start");
        assert_eq!(frames, (b.sample - started.sample) * 3 / 2);
        let speech = events
            .iter()
            .filter(|e| e.tag() == "speech_start" && e.sample <= b.sample)
            .map(|e| e.sample)
            .max()
            .expect("a speech start before the barge-in");
        assert!(
            b.sample - speech < 16_000,
            "barge-in {} long after speech began at {speech}",
            b.sample
        );
    }

    // The reply WAV: 24 kHz, exactly the audio released, reply by reply.
    let mut r = hound::WavReader::open(&wav).expect("reply wav");
    assert_eq!(r.spec().sample_rate, 24_000);
    let written: Vec<f32> = r.samples::<f32>().map(|s| s.expect("sample")).collect();
    let total: u64 = ends.iter().map(|e| e.0).sum();
    assert_eq!(written.len() as u64, total);
    let mut expected = Vec::new();
    for (len, (frames, _)) in lens.iter().zip(&ends) {
        expected.extend((0..*frames as usize).map(|i| reply_sample(*len, i)));
    }
    assert_eq!(written, expected);
    let _ = std::fs::remove_file(&wav);
}

/// The bundled recording with keywords through the real VAD and keyword spotter (the default config's stages):
/// only turns near a spoken "hey sigflow" are answered.
#[test]
fn only_turns_after_the_wake_word_are_answered_on_the_keyword_recording() {
    if let Err(e) = sigflow::onnx::runtime::ensure_loaded() {
        panic!("this test needs ONNX Runtime: {e}");
    }
    let cf = ConfigFile::load(&root().join("configs/default.toml")).expect("default config");
    let index = |name: &str| {
        cf.config
            .stages
            .iter()
            .position(|s| s.name() == name)
            .expect("stage")
    };
    let vad = sigflow::pipeline::build_stage(&cf, index("vad"), 16_000).expect("vad");
    let kws = sigflow::pipeline::build_stage(&cf, index("kws"), 16_000).expect("kws");
    let (_, x) = {
        let mut r =
            hound::WavReader::open(root().join("audio/speech_with_keywords.wav")).expect("wav");
        let rate = r.spec().sample_rate;
        let x: Vec<f32> = r
            .samples::<i16>()
            .map(|s| s.expect("sample") as f32 / 32768.0)
            .collect();
        (rate, x)
    };
    let log = Arc::new(Mutex::new(ModelLog::default()));
    let window = 3 * 16_000;
    let wake = WakeWord {
        label: "hey_sigflow".into(),
        window,
    };
    let mut stage = S2sStage::new(
        settings(true, Some(wake)),
        vad,
        Some(kws),
        Box::new(ToneResponder::new(5, &log)),
    )
    .expect("stage");
    let events = run(&mut stage, &x, 160);
    let wakes: Vec<u64> = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Detection { label, .. } if label == "hey_sigflow"))
        .map(|e| e.sample)
        .collect();
    let segments = of(&events, "speech_end").len();
    let turns = of(&events, "turn_start");
    eprintln!(
        "{} wake words at {wakes:?}, {segments} speech segments, {} turns",
        wakes.len(),
        turns.len()
    );
    assert!(
        !wakes.is_empty(),
        "the keyword spotter missed both \"hey sigflow\"s"
    );
    assert!(!turns.is_empty(), "no turn answered");
    assert!(turns.len() <= wakes.len(), "more turns than wake words");
    assert!(
        segments > 2 * turns.len(),
        "most speech is not for the assistant"
    );
    // Each answered turn began at most `window` after a wake word and ended after it.
    for t in &turns {
        let began = events
            .iter()
            .filter(|e| e.tag() == "speech_start" && e.sample <= t.sample)
            .map(|e| e.sample)
            .max()
            .expect("the turn's speech start");
        assert!(
            wakes.iter().any(|&w| w + window >= began && w <= t.sample),
            "turn began at {began} with no wake word before it ({wakes:?})"
        );
    }
}
