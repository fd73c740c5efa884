//! The TOML configuration: schema (serde, kebab-case, `deny_unknown_fields`) and the error locator that turns
//! a serde or semantic error into `file:line:column: key: reason`.
//!
//! Parsing happens in two passes over the same text: serde builds the typed [`Config`], and a spanned parse of the
//! document ([`ConfigFile::locate`]) finds the line and column of any key path for the messages of the semantic
//! check (`pipeline::check`).

use crate::error::{Error, Result};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A whole configuration file.
///
/// Sections selected by a `kind` key (`[source]`, `[[stage]]`, `[[sink]]`) are dispatched by hand rather than by
/// serde's internally tagged enums, which buffer their content and so lose the position of a bad key.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings (`[daemon]`).
    pub daemon: DaemonConfig,
    /// Where the signal comes from (`[source]`).
    pub source: SourceConfig,
    /// Processing stages, in order (`[[stage]]`).
    pub stages: Vec<StageConfig>,
    /// Event and audio consumers (`[[sink]]`).
    pub sinks: Vec<SinkConfig>,
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter string). `--log-level` and
    /// `RUST_LOG` override it.
    pub log_level: String,
    /// Capacity of the capture ring, in seconds of source audio.
    pub ring_seconds: f64,
    /// How much the stream worker pulls from the ring at most per step, in milliseconds of source audio.
    pub block_ms: f64,
    /// Send systemd watchdog keep-alives (only when `WATCHDOG_USEC` is set by systemd).
    pub watchdog: bool,
    /// Capacity of the event queue in front of each sink (events).
    pub sink_queue: usize,
    /// Emit an `overrun` event at most this often, in milliseconds (lost samples are summed meanwhile).
    pub overrun_report_ms: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            log_level: "info".into(),
            ring_seconds: 2.0,
            block_ms: 10.0,
            watchdog: true,
            sink_queue: 1024,
            overrun_report_ms: 1000,
        }
    }
}

/// `[source]`, selected by `kind`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Live input from an audio device through cpal.
    Capture(CaptureSource),
    /// A WAV file through hound.
    Wav(WavSource),
    /// Raw PCM on standard input.
    Stdin(RawSource),
    /// Raw PCM from one TCP client at a time.
    Tcp(TcpSource),
    /// A generated test signal.
    Synth(SynthSource),
}

/// `kind = "capture"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaptureSource {
    /// Device id (as `sigflow devices` prints it) or name; the default input device when absent.
    pub device: Option<String>,
    /// Preferred rate; the device's default rate when absent. Refused if the device cannot do it.
    pub rate: Option<u32>,
    /// Channel to keep (0-based); all channels are mixed down when absent.
    pub channel: Option<u16>,
}

/// `kind = "wav"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WavSource {
    /// The file (relative paths are relative to the config file).
    pub path: PathBuf,
    /// Pace the file like a live device (true) or process it as fast as possible (false).
    #[serde(default)]
    pub realtime: bool,
    /// Channel to keep (0-based); all channels are mixed down when absent.
    pub channel: Option<u16>,
}

/// Sample encoding of raw PCM sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawFormat {
    /// Signed 16-bit little endian.
    S16le,
    /// 32-bit float little endian.
    F32le,
}

/// `kind = "stdin"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSource {
    pub format: RawFormat,
    pub rate: u32,
    #[serde(default = "one_channel")]
    pub channels: u16,
    /// Channel to keep (0-based); all channels are mixed down when absent.
    pub channel: Option<u16>,
}

/// `kind = "tcp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpSource {
    /// Address to listen on, e.g. `127.0.0.1:7000`.
    pub listen: String,
    pub format: RawFormat,
    pub rate: u32,
    #[serde(default = "one_channel")]
    pub channels: u16,
    /// Channel to keep (0-based); all channels are mixed down when absent.
    pub channel: Option<u16>,
}

fn one_channel() -> u16 {
    1
}

/// Test signal shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthSignal {
    Sine,
    Chirp,
    Noise,
}

/// `kind = "synth"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SynthSource {
    pub signal: SynthSignal,
    #[serde(default = "default_synth_rate")]
    pub rate: u32,
    /// Sine frequency, or chirp start frequency (Hz).
    #[serde(default = "default_frequency")]
    pub frequency: f64,
    /// Chirp end frequency (Hz); the chirp sweeps linearly over `duration`.
    pub to_frequency: Option<f64>,
    /// Peak amplitude, 0..=1.
    #[serde(default = "default_amplitude")]
    pub amplitude: f64,
    /// Length in seconds; endless when absent.
    pub duration: Option<f64>,
    /// Pace like a live device (default) or generate as fast as possible.
    #[serde(default = "yes")]
    pub realtime: bool,
    /// Seed of the noise generator.
    #[serde(default)]
    pub seed: u64,
}

fn default_synth_rate() -> u32 {
    16_000
}
fn default_frequency() -> f64 {
    440.0
}
fn default_amplitude() -> f64 {
    0.5
}
fn yes() -> bool {
    true
}

/// A length of signal: an integer is a number of samples at the stage's rate, a string a duration
/// (`"25ms"`, `"0.5s"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Samples(u64),
    Seconds(f64),
}

impl Length {
    /// The length in samples at `rate` (rounded to the nearest sample).
    pub fn samples(self, rate: u32) -> u64 {
        match self {
            Length::Samples(n) => n,
            Length::Seconds(s) => (s * rate as f64).round().max(0.0) as u64,
        }
    }
}

impl std::str::FromStr for Length {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
            (v, 1e-3)
        } else if let Some(v) = t.strip_suffix("us") {
            (v, 1e-6)
        } else if let Some(v) = t.strip_suffix('s') {
            (v, 1.0)
        } else {
            return Err(format!(
                "invalid length {s:?}: use a sample count (integer) or a duration such as \"25ms\" or \"0.5s\""
            ));
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("invalid length {s:?}: {num:?} is not a number"))?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!(
                "invalid length {s:?}: must be finite and not negative"
            ));
        }
        Ok(Length::Seconds(v * scale))
    }
}

impl<'de> Deserialize<'de> for Length {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Length;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sample count (integer) or a duration string such as \"25ms\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Length, E> {
                Ok(Length::Samples(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Length, E> {
                u64::try_from(v)
                    .map(Length::Samples)
                    .map_err(|_| E::custom("a sample count cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Length, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[stage]]`, selected by `kind`. Every variant has a `name` (unique; sinks refer to it).
#[derive(Debug, Clone)]
pub enum StageConfig {
    /// RMS / peak meter with an activity detector.
    Level(LevelStageConfig),
    /// A stateful ONNX model through ONNX Runtime (e.g. Silero VAD).
    Onnx(Box<crate::onnx::stage::OnnxStageConfig>),
    /// A 1-D CNN (ONNX) run by the streaming CNN engine on overlapping windows.
    Cnn(Box<crate::cnn::stage::CnnStageConfig>),
    /// The always-on assistant: VAD (and wake word) cut user turns, a speech-to-speech model answers them.
    S2s(Box<crate::s2s::stage::S2sStageConfig>),
}

impl StageConfig {
    /// The stage's name.
    pub fn name(&self) -> &str {
        match self {
            StageConfig::Level(c) => &c.name,
            StageConfig::Onnx(c) => &c.name,
            StageConfig::Cnn(c) => &c.name,
            StageConfig::S2s(c) => &c.name,
        }
    }
}

/// `kind = "level"`: RMS and peak in dBFS per hop, and `activity` events from a threshold with hysteresis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LevelStageConfig {
    pub name: String,
    /// Rate the stage runs at; the source rate when absent.
    pub rate: Option<u32>,
    /// Analysis window (default 50 ms).
    #[serde(default = "default_level_window")]
    pub window: Length,
    /// Hop between analyses (default: the window).
    pub hop: Option<Length>,
    /// Activity starts when the RMS level rises above this (dBFS).
    #[serde(default = "default_threshold")]
    pub threshold_dbfs: f32,
    /// Activity stops when the RMS level falls below `threshold-dbfs - hysteresis-db`.
    #[serde(default = "default_hysteresis")]
    pub hysteresis_db: f32,
    /// Activity must stay below the lower threshold this long before it stops.
    #[serde(default = "default_hold")]
    pub hold: Length,
    /// Emit a `level` event every hop (true) or only `activity` events (false).
    #[serde(default = "yes")]
    pub emit_level: bool,
}

fn default_level_window() -> Length {
    Length::Seconds(0.05)
}
fn default_threshold() -> f32 {
    -40.0
}
fn default_hysteresis() -> f32 {
    6.0
}
fn default_hold() -> Length {
    Length::Seconds(0.2)
}

/// What a sink does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkPolicy {
    /// Wait for room (files: lose nothing). Capture is still never blocked: the stream worker waits, the ring
    /// absorbs it, and overruns are counted if it fills.
    Block,
    /// Drop the oldest queued event and count it (live outputs).
    DropOldest,
}

/// `[[sink]]`, selected by `kind`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// One JSON object per event per line.
    Jsonl(JsonlSink),
    /// A WAV file of a stage's audio, or of the resampled input.
    Wav(WavSink),
    /// Audio to an output device through cpal.
    Playback(PlaybackSink),
}

/// `kind = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JsonlSink {
    /// Output file; standard output when absent or `"-"`.
    pub path: Option<PathBuf>,
    /// Stages whose events it takes; all stages (and pipeline events) when absent.
    pub stages: Option<Vec<String>>,
    /// Event types it takes (`level`, `detection` …); all when absent.
    pub events: Option<Vec<String>>,
    /// Default `block`.
    pub policy: Option<SinkPolicy>,
    /// Flush after every line (default true for standard output, false for files, which flush on exit).
    pub flush_each: Option<bool>,
}

/// `kind = "wav"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WavSink {
    pub path: PathBuf,
    /// The stage whose `audio` events are written, or `"input"` for the source signal resampled to `rate`.
    pub from: String,
    /// Rate of the written input (with `from = "input"`); the source rate when absent.
    pub rate: Option<u32>,
    /// Sample format: 16-bit PCM (default) or 32-bit float.
    #[serde(default)]
    pub format: WavFormat,
    /// Default `block`.
    pub policy: Option<SinkPolicy>,
}

/// Sample format of written WAV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WavFormat {
    #[default]
    Pcm16,
    Float32,
}

/// `kind = "playback"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlaybackSink {
    /// Output device id or name; the default output device when absent.
    pub device: Option<String>,
    /// The stage whose `audio` events are played, or `"input"` for the source signal.
    pub from: String,
    /// Output buffer (ring) length in seconds.
    #[serde(default = "default_playback_buffer")]
    pub buffer_seconds: f64,
    /// Default `drop-oldest`.
    pub policy: Option<SinkPolicy>,
}

fn default_playback_buffer() -> f64 {
    2.0
}

type DeValue<'i> = toml::Spanned<toml::de::DeValue<'i>>;

/// A parse error with the byte range it concerns.
struct TomlError {
    message: String,
    span: Option<Range<usize>>,
}

impl From<toml::de::Error> for TomlError {
    fn from(e: toml::de::Error) -> Self {
        TomlError {
            message: e.message().to_string(),
            span: e.span(),
        }
    }
}

fn toml_err(message: impl std::fmt::Display, span: Range<usize>) -> TomlError {
    TomlError {
        message: message.to_string(),
        span: Some(span),
    }
}

/// Deserialize one value with the toml deserializer itself, so errors keep the position of the offending key.
fn value<'de, T: Deserialize<'de>>(v: &DeValue<'de>) -> Result<T, TomlError> {
    Ok(T::deserialize(toml::de::ValueDeserializer::from(
        v.clone(),
    ))?)
}

/// Split a table that has a `kind` key into the kind and the remaining table.
fn tagged<'i>(v: &DeValue<'i>, section: &str) -> Result<(String, DeValue<'i>), TomlError> {
    let toml::de::DeValue::Table(t) = v.get_ref() else {
        return Err(toml_err(format!("`{section}` must be a table"), v.span()));
    };
    let mut rest = t.clone();
    let kind_key = t.keys().find(|k| k.get_ref().as_ref() == "kind").cloned();
    let Some(kind_key) = kind_key else {
        return Err(toml_err(
            format!("`{section}` needs a `kind` key"),
            v.span(),
        ));
    };
    let kind_value = rest.remove(&kind_key).expect("key was just found");
    let toml::de::DeValue::String(kind) = kind_value.get_ref() else {
        return Err(toml_err("`kind` must be a string", kind_value.span()));
    };
    Ok((
        kind.to_string(),
        toml::Spanned::new(v.span(), toml::de::DeValue::Table(rest)),
    ))
}

fn unknown_kind(section: &str, kind: &str, known: &[&str], v: &DeValue<'_>) -> TomlError {
    let span = match v.get_ref() {
        toml::de::DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "kind")
            .map(|(_, v)| v.span())
            .unwrap_or(v.span()),
        _ => v.span(),
    };
    toml_err(
        format!(
            "unknown {section} kind `{kind}`, expected one of {}",
            known.join(", ")
        ),
        span,
    )
}

fn source_config(v: &DeValue<'_>) -> Result<SourceConfig, TomlError> {
    let (kind, rest) = tagged(v, "source")?;
    Ok(match kind.as_str() {
        "capture" => SourceConfig::Capture(value(&rest)?),
        "wav" => SourceConfig::Wav(value(&rest)?),
        "stdin" => SourceConfig::Stdin(value(&rest)?),
        "tcp" => SourceConfig::Tcp(value(&rest)?),
        "synth" => SourceConfig::Synth(value(&rest)?),
        other => {
            return Err(unknown_kind(
                "source",
                other,
                &["capture", "wav", "stdin", "tcp", "synth"],
                v,
            ))
        }
    })
}

fn stage_config(v: &DeValue<'_>) -> Result<StageConfig, TomlError> {
    let (kind, rest) = tagged(v, "stage")?;
    Ok(match kind.as_str() {
        "level" => StageConfig::Level(value(&rest)?),
        "onnx" => StageConfig::Onnx(Box::new(value(&rest)?)),
        "cnn" => StageConfig::Cnn(Box::new(value(&rest)?)),
        "s2s" => StageConfig::S2s(Box::new(value(&rest)?)),
        other => {
            return Err(unknown_kind(
                "stage",
                other,
                &["level", "onnx", "cnn", "s2s"],
                v,
            ))
        }
    })
}

fn sink_config(v: &DeValue<'_>) -> Result<SinkConfig, TomlError> {
    let (kind, rest) = tagged(v, "sink")?;
    Ok(match kind.as_str() {
        "jsonl" => SinkConfig::Jsonl(value(&rest)?),
        "wav" => SinkConfig::Wav(value(&rest)?),
        "playback" => SinkConfig::Playback(value(&rest)?),
        other => {
            return Err(unknown_kind(
                "sink",
                other,
                &["jsonl", "wav", "playback"],
                v,
            ))
        }
    })
}

fn array_of<'i, T>(
    v: &DeValue<'i>,
    section: &str,
    f: impl Fn(&DeValue<'i>) -> Result<T, TomlError>,
) -> Result<Vec<T>, TomlError> {
    match v.get_ref() {
        toml::de::DeValue::Array(items) => items.iter().map(f).collect(),
        _ => Err(toml_err(
            format!("`{section}` must be an array of tables (write `[[{section}]]`)"),
            v.span(),
        )),
    }
}

/// Parse the whole document into a [`Config`].
fn parse_config(text: &str) -> Result<Config, TomlError> {
    let doc = toml::de::DeTable::parse(text)?;
    let mut daemon = None;
    let mut source = None;
    let mut stages = Vec::new();
    let mut sinks = Vec::new();
    for (k, v) in doc.get_ref().iter() {
        match k.get_ref().as_ref() {
            "daemon" => daemon = Some(value::<DaemonConfig>(v)?),
            "source" => source = Some(source_config(v)?),
            "stage" => stages = array_of(v, "stage", stage_config)?,
            "sink" => sinks = array_of(v, "sink", sink_config)?,
            other => {
                return Err(toml_err(
                    format!("unknown section `{other}`, expected one of `daemon`, `source`, `stage`, `sink`"),
                    k.span(),
                ))
            }
        }
    }
    let source = source.ok_or_else(|| toml_err("missing `[source]` section", 0..0))?;
    Ok(Config {
        daemon: daemon.unwrap_or_default(),
        source,
        stages,
        sinks,
    })
}

/// One step of a key path inside the document: a table key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Name(String),
    Index(usize),
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::Name(s.to_string())
    }
}
impl From<usize> for Key {
    fn from(i: usize) -> Self {
        Key::Index(i)
    }
}

/// A loaded configuration with its file name and text, able to point at any key in errors.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
    pub config: Config,
}

impl ConfigFile {
    /// Read and parse `path`. Errors name `file:line:column` and the offending key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read config: {e}")))?;
        Self::parse(path, text)
    }

    /// Parse configuration text that came from `path` (used for messages and to resolve relative paths).
    pub fn parse(path: &Path, text: String) -> Result<Self> {
        match parse_config(&text) {
            Ok(config) => Ok(ConfigFile {
                path: path.to_path_buf(),
                text,
                config,
            }),
            Err(e) => Err(toml_error(path, &text, &e)),
        }
    }

    /// The directory relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// A semantic error at key path `at` (e.g. `["stage", 1, "hop"]`), rendered as `file:line:column: key: message`.
    pub fn error_at(&self, at: &[Key], message: impl std::fmt::Display) -> Error {
        let (line, column) = self
            .locate(at)
            .map(|r| line_col(&self.text, r.start))
            .unwrap_or((1, 1));
        Error::Config {
            file: self.path.clone(),
            line,
            column,
            message: format!("{}: {message}", render_key(at)),
        }
    }

    /// Byte range of the key (or, for an array element, the element) at `at`, if the document has it.
    pub fn locate(&self, at: &[Key]) -> Option<Range<usize>> {
        let doc = toml::de::DeTable::parse(&self.text).ok()?;
        locate_in_table(doc.get_ref(), at)
    }
}

fn locate_in_table(table: &toml::de::DeTable<'_>, at: &[Key]) -> Option<Range<usize>> {
    let (first, rest) = at.split_first()?;
    let Key::Name(name) = first else { return None };
    let (k, v) = table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == name.as_str())?;
    if rest.is_empty() {
        return Some(k.span());
    }
    locate_in_value(v, rest).or(Some(k.span()))
}

fn locate_in_value(v: &toml::Spanned<toml::de::DeValue<'_>>, at: &[Key]) -> Option<Range<usize>> {
    match (v.get_ref(), at.first()?) {
        (toml::de::DeValue::Table(t), Key::Name(_)) => locate_in_table(t, at),
        (toml::de::DeValue::Array(a), Key::Index(i)) => {
            let item = a.get(*i)?;
            if at.len() == 1 {
                Some(item.span())
            } else {
                locate_in_value(item, &at[1..]).or(Some(item.span()))
            }
        }
        _ => None,
    }
}

fn render_key(at: &[Key]) -> String {
    let mut s = String::new();
    for k in at {
        match k {
            Key::Name(n) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(n);
            }
            Key::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Turn a toml/serde error into a one-line `file:line:column: reason`, pointing at the offending key itself when
/// the message names one (serde reports unknown and duplicate fields against the enclosing table).
fn toml_error(path: &Path, text: &str, e: &TomlError) -> Error {
    let message = e.message.trim().replace('\n', " ");
    let mut start = e.span.as_ref().map(|r| r.start).unwrap_or(0);
    if let (Some(span), Some(field)) = (e.span.clone(), quoted_field(&message)) {
        if let Some(off) = find_key(&text[span.clone()], field) {
            start = span.start + off;
        }
    }
    let (line, column) = line_col(text, start);
    Error::Config {
        file: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// The field name serde quotes in "unknown field `x`" / "duplicate field `x`".
fn quoted_field(message: &str) -> Option<&str> {
    for prefix in ["unknown field `", "duplicate field `"] {
        if let Some(rest) = message.find(prefix).map(|i| &message[i + prefix.len()..]) {
            return rest.split('`').next();
        }
    }
    None
}

/// Offset of a line in `region` that assigns `key` (`key =` at the start of a line, possibly indented or quoted).
fn find_key(region: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in region.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let bare = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| trimmed.strip_prefix(&format!("'{key}'")));
        if let Some(after) = bare {
            if after.trim_start().starts_with('=') {
                return Some(offset + indent);
            }
        }
        offset += line.len();
    }
    // Inline tables: `{ a = 1, key = 2 }`.
    let pat = format!("{key} =");
    region.find(&pat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("test.toml"), text.to_string())
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let text = "[source]\nkind = \"wav\"\npath = \"a.wav\"\nbogus = 3\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml:4:1:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let text = "[source]\nkind = \"wav\"\npath = \"a.wav\"\nrealtime = \"yes\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml:4:"), "{err}");
        assert!(err.contains("bool") || err.contains("boolean"), "{err}");
    }

    #[test]
    fn lengths_parse_as_samples_or_durations() {
        assert_eq!("25ms".parse::<Length>().unwrap().samples(16_000), 400);
        assert_eq!("0.5s".parse::<Length>().unwrap().samples(8_000), 4_000);
        assert!("25".parse::<Length>().is_err());
        assert!("-1s".parse::<Length>().is_err());
    }

    #[test]
    fn semantic_error_locates_array_element_key() {
        let text = "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[stage]]\nkind = \"level\"\nname = \"a\"\n\n[[stage]]\nkind = \"level\"\nname = \"b\"\nhop = 7\n";
        let cf = parse(text).unwrap();
        let err = cf
            .error_at(&["stage".into(), 1.into(), "hop".into()], "bad hop")
            .to_string();
        assert_eq!(err, "test.toml:12:1: stage[1].hop: bad hop");
    }

    #[test]
    fn defaults_fill_in() {
        let cf = parse("[source]\nkind = \"synth\"\nsignal = \"noise\"\n").unwrap();
        assert_eq!(cf.config.daemon.ring_seconds, 2.0);
        match cf.config.source {
            SourceConfig::Synth(s) => {
                assert_eq!(s.rate, 16_000);
                assert!(s.realtime);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
