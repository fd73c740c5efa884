//! Bad input yields one clear line naming the file (or config key) and the reason — never a panic.

use sigflow::config::ConfigFile;
use sigflow::io::{check_sink, check_source, open_sink, open_source};
use std::path::Path;

fn config_in(dir: &Path, text: &str) -> ConfigFile {
    let path = dir.join("sigflow.toml");
    std::fs::write(&path, text).unwrap();
    ConfigFile::load(&path).expect("config parses")
}

fn wav_config(dir: &Path, file: &str) -> ConfigFile {
    config_in(
        dir,
        &format!("[source]\nkind = \"wav\"\npath = \"{file}\"\n"),
    )
}

/// Both `check_source` and `open_source` fail with the same single-line message, which is returned.
fn source_error(cf: &ConfigFile) -> String {
    let checked = check_source(cf)
        .expect_err("check_source should fail")
        .to_string();
    let opened = match open_source(cf) {
        Ok(_) => panic!("open_source should fail"),
        Err(e) => e.to_string(),
    };
    assert_eq!(checked, opened);
    assert!(!opened.contains('\n'), "not one line: {opened}");
    opened
}

fn write_valid_wav(path: &Path, frames: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..frames {
        w.write_sample((i % 100) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A WAV header written by hand: format tag, channels, rate, bits, then a data chunk of `data_len` zero bytes.
fn handmade_wav(path: &Path, tag: u16, channels: u16, bits: u16, data_len: u32) {
    let block_align = channels * bits.div_ceil(8);
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&(8000 * block_align as u32).to_le_bytes());
    b.extend_from_slice(&block_align.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.resize(b.len() + data_len as usize, 0);
    std::fs::write(path, b).unwrap();
}

/// The message names the config key (`file:line:col: source.path:`) and then the WAV file and the reason.
fn expect_file_error(msg: &str, file: &Path, reason: &str) {
    assert!(
        msg.contains(":3:1: source.path: "),
        "should name the config key: {msg}"
    );
    assert!(
        msg.contains(&format!("source.path: {}: ", file.display())),
        "should name the file: {msg}"
    );
    assert!(msg.contains(reason), "should say {reason:?}: {msg}");
}

#[test]
fn missing_wav_file() {
    let dir = tempfile::tempdir().unwrap();
    let msg = source_error(&wav_config(dir.path(), "nope.wav"));
    expect_file_error(&msg, &dir.path().join("nope.wav"), "cannot open");
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn truncated_wav() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("short.wav");
    write_valid_wav(&file, 1000);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 501]).unwrap();
    let msg = source_error(&wav_config(dir.path(), "short.wav"));
    expect_file_error(&msg, &file, "truncated");
    assert!(msg.contains("declares 2000 bytes"), "{msg}");
}

#[test]
fn wav_cut_inside_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stub.wav");
    write_valid_wav(&file, 10);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..20]).unwrap();
    let msg = source_error(&wav_config(dir.path(), "stub.wav"));
    expect_file_error(&msg, &file, "truncated");
}

#[test]
fn corrupt_header() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corrupt.wav");
    std::fs::write(
        &file,
        b"this is not a RIFF file, just some text padding it out",
    )
    .unwrap();
    let msg = source_error(&wav_config(dir.path(), "corrupt.wav"));
    expect_file_error(&msg, &file, "not a valid WAV file: no RIFF tag found");
}

#[test]
fn twelve_bit_samples_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twelve.wav");
    handmade_wav(&file, 1, 1, 12, 200);
    let msg = source_error(&wav_config(dir.path(), "twelve.wav"));
    expect_file_error(&msg, &file, "bits per sample is not a multiple of 8");
}

#[test]
fn a_law_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alaw.wav");
    handmade_wav(&file, 6, 1, 8, 200);
    let msg = source_error(&wav_config(dir.path(), "alaw.wav"));
    expect_file_error(&msg, &file, "unsupported WAV encoding");
    assert!(msg.contains("A-law"), "{msg}");
}

#[test]
fn missing_channel_names_file() {
    let dir = tempfile::tempdir().unwrap();
    write_valid_wav(&dir.path().join("mono.wav"), 10);
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"wav\"\npath = \"mono.wav\"\nchannel = 1\n",
    );
    let msg = source_error(&cf);
    expect_file_error(
        &msg,
        &dir.path().join("mono.wav"),
        "channel 1 does not exist",
    );
}

#[test]
fn missing_device() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"capture\"\ndevice = \"alsa:no-such-device\"\n",
    );
    let msg = source_error(&cf);
    let want = format!(
        "{}:3:1: source.device: no input device \"alsa:no-such-device\"; available: ",
        cf.path.display()
    );
    assert!(msg.starts_with(&want), "{msg}");
}

#[test]
fn impossible_rate() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"capture\"\ndevice = \"alsa:null\"\nrate = 0\n",
    );
    let msg = source_error(&cf);
    let want = format!(
        "{}:4:1: source.rate: device alsa:null: 0 Hz is not supported; the device supports ",
        cf.path.display()
    );
    assert!(msg.starts_with(&want), "{msg}");
    assert!(msg.contains(" Hz: "), "lists the supported ranges: {msg}");
}

#[test]
fn bad_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"tcp\"\nlisten = \"not an address\"\nformat = \"s16le\"\nrate = 16000\n",
    );
    let msg = source_error(&cf);
    assert!(
        msg.starts_with(&format!(
            "{}:3:1: source.listen: invalid listen address",
            cf.path.display()
        )),
        "{msg}"
    );
}

#[test]
fn synth_frequency_above_nyquist() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\nrate = 8000\nfrequency = 5000.0\n",
    );
    let msg = source_error(&cf);
    assert!(
        msg.contains(":5:1: source.frequency: must be between 0 and the Nyquist"),
        "{msg}"
    );
}

#[test]
fn sink_into_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[sink]]\nkind = \"wav\"\npath = \"no/such/dir/out.wav\"\nfrom = \"input\"\n",
    );
    let msg = check_sink(&cf, 0).unwrap_err().to_string();
    assert!(msg.contains(":7:1: sink[0].path: directory "), "{msg}");
    assert!(msg.ends_with("no/such/dir does not exist"), "{msg}");
    let missing = check_sink(&cf, 3).unwrap_err().to_string();
    assert!(missing.contains("no sink number 3"), "{missing}");
}

#[test]
fn missing_playback_device() {
    let dir = tempfile::tempdir().unwrap();
    let cf = config_in(
        dir.path(),
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[sink]]\nkind = \"playback\"\ndevice = \"alsa:nowhere\"\nfrom = \"input\"\n",
    );
    let msg = check_sink(&cf, 0).unwrap_err().to_string();
    assert!(
        msg.contains(":7:1: sink[0].device: no output device \"alsa:nowhere\""),
        "{msg}"
    );
    let opened = match open_sink(&cf, 0, 16_000) {
        Ok(_) => panic!("open_sink should fail"),
        Err(e) => e.to_string(),
    };
    assert_eq!(opened, msg);
}
