//! Audio devices through cpal: listing (`sigflow devices [--json]`), finding a device by id or name, and choosing a
//! stream configuration the device supports.

use crate::error::{Error, Result};
use cpal::traits::{DeviceTrait, HostTrait};
use serde::Serialize;

/// Which way audio flows through a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Input,
    Output,
    Duplex,
    Unknown,
}

/// One stream configuration: rate, sample format and channel count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigInfo {
    pub rate: u32,
    pub format: String,
    pub channels: u16,
}

/// A range of configurations a device supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeInfo {
    pub channels: u16,
    pub format: String,
    pub min_rate: u32,
    pub max_rate: u32,
}

impl std::fmt::Display for RangeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_rate == self.max_rate {
            write!(f, "{} Hz {} x{}", self.min_rate, self.format, self.channels)
        } else {
            write!(
                f,
                "{}-{} Hz {} x{}",
                self.min_rate, self.max_rate, self.format, self.channels
            )
        }
    }
}

/// A compact description of supported ranges: those with the same rate range are merged, listing their sample
/// formats and channel counts (`8000-48000 Hz: i16/f32, 1-2 ch`).
pub fn summarize(ranges: &[RangeInfo]) -> String {
    /// (rate range, formats, fewest channels, most channels)
    type Group = ((u32, u32), Vec<String>, u16, u16);
    let mut groups: Vec<Group> = Vec::new();
    for r in ranges {
        let key = (r.min_rate, r.max_rate);
        let g = match groups.iter_mut().position(|g| g.0 == key) {
            Some(i) => &mut groups[i],
            None => {
                groups.push((key, Vec::new(), u16::MAX, 0));
                groups.last_mut().expect("just pushed")
            }
        };
        if !g.1.contains(&r.format) {
            g.1.push(r.format.clone());
        }
        g.2 = g.2.min(r.channels);
        g.3 = g.3.max(r.channels);
    }
    if groups.is_empty() {
        return "nothing".into();
    }
    groups
        .iter()
        .map(|((lo, hi), formats, cmin, cmax)| {
            let rates = if lo == hi {
                format!("{lo} Hz")
            } else {
                format!("{lo}-{hi} Hz")
            };
            let ch = if cmin == cmax {
                format!("{cmin} ch")
            } else {
                format!("{cmin}-{cmax} ch")
            };
            format!("{rates}: {}, {ch}", formats.join("/"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a device offers in one direction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirectionInfo {
    /// The device's default configuration, if it reports one.
    pub default: Option<ConfigInfo>,
    /// Supported ranges (empty if the device could not be queried).
    pub supported: Vec<RangeInfo>,
    /// Why the device could not be queried, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One audio device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Stable id, `host:device` (what `device = …` in a config takes).
    pub id: String,
    /// Human-readable name (also accepted by `device = …`).
    pub name: String,
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<DirectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<DirectionInfo>,
}

fn range_info(r: &cpal::SupportedStreamConfigRange) -> RangeInfo {
    RangeInfo {
        channels: r.channels(),
        format: r.sample_format().to_string(),
        min_rate: r.min_sample_rate(),
        max_rate: r.max_sample_rate(),
    }
}

fn config_info(c: &cpal::SupportedStreamConfig) -> ConfigInfo {
    ConfigInfo {
        rate: c.sample_rate(),
        format: c.sample_format().to_string(),
        channels: c.channels(),
    }
}

fn input_info(d: &cpal::Device) -> DirectionInfo {
    let mut info = DirectionInfo::default();
    match d.supported_input_configs() {
        Ok(it) => info.supported = it.map(|r| range_info(&r)).collect(),
        Err(e) => info.error = Some(e.to_string()),
    }
    info.default = d.default_input_config().ok().map(|c| config_info(&c));
    info
}

fn output_info(d: &cpal::Device) -> DirectionInfo {
    let mut info = DirectionInfo::default();
    match d.supported_output_configs() {
        Ok(it) => info.supported = it.map(|r| range_info(&r)).collect(),
        Err(e) => info.error = Some(e.to_string()),
    }
    info.default = d.default_output_config().ok().map(|c| config_info(&c));
    info
}

fn direction(d: &cpal::Device) -> Direction {
    match d.description().map(|x| x.direction()) {
        Ok(cpal::DeviceDirection::Input) => Direction::Input,
        Ok(cpal::DeviceDirection::Output) => Direction::Output,
        Ok(cpal::DeviceDirection::Duplex) => Direction::Duplex,
        _ => match (d.supports_input(), d.supports_output()) {
            (true, true) => Direction::Duplex,
            (true, false) => Direction::Input,
            (false, true) => Direction::Output,
            (false, false) => Direction::Unknown,
        },
    }
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|x| x.name().to_string())
        .unwrap_or_else(|_| "(unnamed)".into())
}

fn device_id(d: &cpal::Device) -> String {
    d.id().map(|i| i.to_string()).unwrap_or_default()
}

/// Every input and output device of the default host, with its default and supported configurations.
pub fn list() -> Result<Vec<DeviceInfo>> {
    let host = cpal::default_host();
    let devices = host
        .devices()
        .map_err(|e| Error::Device(format!("cannot list devices: {e}")))?;
    let mut out = Vec::new();
    for d in devices {
        let dir = direction(&d);
        let wants_in = matches!(
            dir,
            Direction::Input | Direction::Duplex | Direction::Unknown
        );
        let wants_out = matches!(
            dir,
            Direction::Output | Direction::Duplex | Direction::Unknown
        );
        out.push(DeviceInfo {
            id: device_id(&d),
            name: device_name(&d),
            direction: dir,
            input: wants_in.then(|| input_info(&d)),
            output: wants_out.then(|| output_info(&d)),
        });
    }
    Ok(out)
}

/// Print the device list: a table, or one JSON array with `json`.
pub fn print(json: bool) -> Result<()> {
    let devices = list()?;
    if json {
        let text = serde_json::to_string_pretty(&devices)
            .map_err(|e| Error::Other(format!("cannot serialise the device list: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if devices.is_empty() {
        println!("no audio devices found");
    }
    for d in &devices {
        println!("{}  ({:?}) {}", d.id, d.direction, d.name);
        for (label, info) in [("input", &d.input), ("output", &d.output)] {
            let Some(info) = info else { continue };
            if let Some(e) = &info.error {
                println!("    {label}: unavailable ({e})");
                continue;
            }
            if info.supported.is_empty() {
                continue;
            }
            let default = info
                .default
                .as_ref()
                .map(|c| format!("{} Hz {} x{}", c.rate, c.format, c.channels))
                .unwrap_or_else(|| "none".into());
            println!(
                "    {label}: default {default}; supports {}",
                summarize(&info.supported)
            );
        }
    }
    Ok(())
}

/// Input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Input,
    Output,
}

impl Way {
    fn word(self) -> &'static str {
        match self {
            Way::Input => "input",
            Way::Output => "output",
        }
    }
}

/// Find a device by id (`alsa:default`), or by name, or the default device when `wanted` is `None`.
/// The error text lists the available devices of that direction (the caller adds the config location).
pub fn find(wanted: Option<&str>, way: Way) -> std::result::Result<cpal::Device, String> {
    let host = cpal::default_host();
    let Some(wanted) = wanted else {
        let d = match way {
            Way::Input => host.default_input_device(),
            Way::Output => host.default_output_device(),
        };
        return d.ok_or_else(|| format!("no default {} device", way.word()));
    };
    if let Ok(id) = wanted.parse::<cpal::DeviceId>() {
        if let Some(d) = host.device_by_id(&id) {
            return Ok(d);
        }
    }
    let all: Vec<cpal::Device> = match host.devices() {
        Ok(it) => it
            .filter(|d| match way {
                Way::Input => d.supports_input(),
                Way::Output => d.supports_output(),
            })
            .collect(),
        Err(e) => return Err(format!("cannot list devices: {e}")),
    };
    if let Some(d) = all.iter().find(|d| device_name(d) == wanted) {
        return Ok(d.clone());
    }
    let names: Vec<String> = all.iter().map(device_id).collect();
    Err(format!(
        "no {} device {wanted:?}; available: {}",
        way.word(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// Sample formats sigflow converts, best first.
const FORMAT_PREFERENCE: [cpal::SampleFormat; 12] = [
    cpal::SampleFormat::F32,
    cpal::SampleFormat::I16,
    cpal::SampleFormat::I32,
    cpal::SampleFormat::I24,
    cpal::SampleFormat::F64,
    cpal::SampleFormat::U16,
    cpal::SampleFormat::I8,
    cpal::SampleFormat::U8,
    cpal::SampleFormat::U24,
    cpal::SampleFormat::U32,
    cpal::SampleFormat::I64,
    cpal::SampleFormat::U64,
];

fn format_rank(f: cpal::SampleFormat) -> usize {
    FORMAT_PREFERENCE
        .iter()
        .position(|&x| x == f)
        .unwrap_or(usize::MAX)
}

/// Choose a configuration: the device's default when no rate is requested (or when the default already has it),
/// else a supported range containing `rate` (preferring the default's channel count, then f32, i16 …).
/// The error text says what the device supports.
pub fn choose_config(
    device: &cpal::Device,
    way: Way,
    rate: Option<u32>,
) -> std::result::Result<cpal::SupportedStreamConfig, String> {
    let default = match way {
        Way::Input => device.default_input_config(),
        Way::Output => device.default_output_config(),
    };
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match way {
        Way::Input => device.supported_input_configs().map(|i| i.collect()),
        Way::Output => device.supported_output_configs().map(|i| i.collect()),
    }
    .map_err(|e| {
        format!(
            "cannot query the device's {} configurations: {e}",
            way.word()
        )
    })?;
    let usable = |f: cpal::SampleFormat| format_rank(f) != usize::MAX;
    if let Ok(d) = &default {
        if usable(d.sample_format()) && rate.is_none_or(|r| r == d.sample_rate()) {
            return Ok(*d);
        }
    }
    let default_channels = default.as_ref().map(|d| d.channels()).ok();
    let best = ranges
        .iter()
        .filter(|r| usable(r.sample_format()))
        .filter(|r| rate.is_none_or(|x| r.contains_rate(x)))
        .min_by_key(|r| {
            (
                Some(r.channels()) != default_channels,
                format_rank(r.sample_format()),
                r.channels(),
            )
        });
    match (best, rate) {
        (Some(r), Some(x)) => Ok(r.with_sample_rate(x)),
        (Some(r), None) => Ok(r.with_max_sample_rate()),
        (None, _) => {
            let list: Vec<RangeInfo> = ranges.iter().map(range_info).collect();
            let supported = summarize(&list);
            Err(match rate {
                Some(x) => format!("{x} Hz is not supported; the device supports {supported}"),
                None => format!(
                    "no usable {} configuration; the device supports {supported}",
                    way.word()
                ),
            })
        }
    }
}

/// Id of a device as `sigflow devices` prints it.
pub fn id_of(device: &cpal::Device) -> String {
    device_id(device)
}

/// Arguments of `sigflow devices`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevicesArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sigflow devices [--json]`.
pub fn run(args: &DevicesArgs) -> Result<()> {
    print(args.json)
}

/// Whether a stream error ends the stream. Over-runs, a refused real-time priority and transient backend errors
/// (the ALSA backend keeps running after them) are glitches; a vanished or invalidated device is the end.
pub fn is_fatal(e: &cpal::Error) -> bool {
    matches!(
        e.kind(),
        cpal::ErrorKind::DeviceNotAvailable
            | cpal::ErrorKind::DeviceChanged
            | cpal::ErrorKind::StreamInvalidated
            | cpal::ErrorKind::HostUnavailable
    )
}
