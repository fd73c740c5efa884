//! The semantic check of a config (`sigflow check`, and before every start or reload): names, references, rates,
//! window/hop lengths, and each source, stage and sink's own check (files readable, devices present, models valid).
//! Errors point at the key: `file:line:column: stage[1].hop: …`.

use crate::config::{ConfigFile, Key, SinkConfig, StageConfig};
use crate::error::Result;
use crate::pipeline::router::INPUT_STAGE;

/// Highest sample rate sigflow accepts anywhere.
pub const MAX_RATE: u32 = 768_000;

/// Event tags a `jsonl` sink may select.
pub const EVENT_TAGS: &[&str] = &[
    "level",
    "activity",
    "scores",
    "series",
    "detection",
    "speech_start",
    "speech_end",
    "beat",
    "alarm",
    "text",
    "audio",
    "overrun",
    "sink_dropped",
    "status",
    "turn_start",
    "response_start",
    "response_end",
    "barge_in",
];

fn k(s: &str) -> Key {
    Key::Name(s.to_string())
}

fn rate_ok(cf: &ConfigFile, at: &[Key], rate: u32) -> Result<()> {
    if rate == 0 || rate > MAX_RATE {
        return Err(cf.error_at(
            at,
            format!("sample rate {rate} Hz is impossible (1..={MAX_RATE})"),
        ));
    }
    Ok(())
}

/// Check everything that can be checked without running.
pub fn check(cf: &ConfigFile) -> Result<()> {
    let c = &cf.config;
    let d = &c.daemon;
    if !(d.ring_seconds.is_finite() && d.ring_seconds > 0.0 && d.ring_seconds <= 600.0) {
        return Err(cf.error_at(
            &[k("daemon"), k("ring-seconds")],
            "must be > 0 and at most 600",
        ));
    }
    if !(d.block_ms.is_finite() && d.block_ms >= 0.1 && d.block_ms <= 1000.0) {
        return Err(cf.error_at(
            &[k("daemon"), k("block-ms")],
            "must be between 0.1 and 1000",
        ));
    }
    if d.sink_queue == 0 {
        return Err(cf.error_at(&[k("daemon"), k("sink-queue")], "must be at least 1"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&d.log_level) {
        return Err(cf.error_at(
            &[k("daemon"), k("log-level")],
            format!("invalid log filter: {e}"),
        ));
    }
    crate::io::check_source(cf)?;

    let mut names: Vec<&str> = Vec::new();
    for (i, st) in c.stages.iter().enumerate() {
        let at = |key: &str| vec![k("stage"), Key::Index(i), k(key)];
        let name = st.name();
        if name.is_empty() || matches!(name, INPUT_STAGE | "source" | "pipeline") {
            return Err(cf.error_at(
                &at("name"),
                format!(
                    "`{name}` cannot name a stage (empty, or reserved: input, source, pipeline)"
                ),
            ));
        }
        if names.contains(&name) {
            return Err(cf.error_at(
                &at("name"),
                format!("a stage named `{name}` already exists"),
            ));
        }
        names.push(name);
        match st {
            StageConfig::Level(l) => {
                if let Some(r) = l.rate {
                    rate_ok(cf, &at("rate"), r)?;
                }
                // Lengths in seconds are checked at the slowest plausible rate they could meet (1 kHz); in samples
                // they are exact.
                let rate = l.rate.unwrap_or(1_000);
                if l.window.samples(rate) == 0 {
                    return Err(cf.error_at(&at("window"), "the window is shorter than one sample"));
                }
                if l.hop.is_some_and(|h| h.samples(rate) == 0) {
                    return Err(cf.error_at(&at("hop"), "the hop is shorter than one sample"));
                }
                if !(l.hysteresis_db.is_finite() && l.hysteresis_db >= 0.0) {
                    return Err(cf.error_at(&at("hysteresis-db"), "must be ≥ 0"));
                }
            }
            StageConfig::Onnx(o) => crate::onnx::stage::check(o, cf, i)?,
            StageConfig::Cnn(c) => crate::cnn::stage::check(c, cf, i)?,
            StageConfig::S2s(c) => crate::s2s::stage::check(c, cf, i)?,
        }
    }

    for (i, sink) in c.sinks.iter().enumerate() {
        let at = |key: &str| vec![k("sink"), Key::Index(i), k(key)];
        let from_ok = |from: &str| from == INPUT_STAGE || names.contains(&from);
        match sink {
            SinkConfig::Jsonl(j) => {
                for s in j.stages.iter().flatten() {
                    if !names.contains(&s.as_str()) {
                        return Err(cf.error_at(
                            &at("stages"),
                            format!("no stage named `{s}` (stages: {})", names.join(", ")),
                        ));
                    }
                }
                for e in j.events.iter().flatten() {
                    if !EVENT_TAGS.contains(&e.as_str()) {
                        return Err(cf.error_at(
                            &at("events"),
                            format!(
                                "unknown event type `{e}` (known: {})",
                                EVENT_TAGS.join(", ")
                            ),
                        ));
                    }
                }
            }
            SinkConfig::Wav(w) => {
                if !from_ok(&w.from) {
                    return Err(cf.error_at(
                        &at("from"),
                        format!("`{}` is neither `input` nor a stage name", w.from),
                    ));
                }
                if let Some(r) = w.rate {
                    rate_ok(cf, &at("rate"), r)?;
                    if w.from != INPUT_STAGE {
                        return Err(cf.error_at(
                            &at("rate"),
                            "`rate` applies only to `from = \"input\"`; stage audio is written at its own rate",
                        ));
                    }
                }
            }
            SinkConfig::Playback(p) => {
                if !from_ok(&p.from) {
                    return Err(cf.error_at(
                        &at("from"),
                        format!("`{}` is neither `input` nor a stage name", p.from),
                    ));
                }
                if !(p.buffer_seconds.is_finite()
                    && p.buffer_seconds > 0.0
                    && p.buffer_seconds <= 60.0)
                {
                    return Err(cf.error_at(&at("buffer-seconds"), "must be > 0 and at most 60"));
                }
            }
        }
        crate::io::check_sink(cf, i)?;
    }
    Ok(())
}
