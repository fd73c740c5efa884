//! The daemon as a user meets it: `sigflow run` / `sigflow check` as a child process — end-to-end on a WAV,
//! SIGTERM drain, SIGHUP reload, systemd notify/watchdog, and one-line errors for bad input.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sigflow")
}

fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .expect("write sample");
    }
    w.finalize().expect("finalize wav");
}

/// 1 s silence, 1 s tone at -6 dBFS, 1 s silence … `seconds` long, at `rate`.
fn bursts(rate: u32, seconds: usize) -> Vec<f32> {
    (0..rate as usize * seconds)
        .map(|i| {
            let on = (i / rate as usize) % 2 == 1;
            if on {
                0.5 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / rate as f32).sin()
            } else {
                0.0
            }
        })
        .collect()
}

fn sigflow(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run sigflow")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write file");
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("read jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn events_of<'a>(evs: &'a [serde_json::Value], tag: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["event"] == tag).collect()
}

#[test]
fn runs_a_wav_end_to_end_and_prints_level_and_activity() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_wav(&dir.path().join("in.wav"), 16_000, &bursts(16_000, 4));
    let cfg = dir.path().join("c.toml");
    write(
        &cfg,
        r#"
[source]
kind = "wav"
path = "in.wav"

[[stage]]
kind = "level"
name = "level"
window = "100ms"
threshold-dbfs = -30.0

[[sink]]
kind = "jsonl"
"#,
    );
    let out = sigflow(&["run", cfg.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let evs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let levels = events_of(&evs, "level");
    assert_eq!(levels.len(), 40, "4 s in 100 ms windows");
    // Tone windows: RMS of a 0.5 sine = -9.03 dBFS (16-bit quantised); silence at the floor.
    let loud = levels
        .iter()
        .filter(|e| (e["rms_dbfs"].as_f64().unwrap_or(0.0) + 9.03).abs() < 0.05)
        .count();
    assert_eq!(loud, 20);
    let acts: Vec<(f64, bool)> = events_of(&evs, "activity")
        .iter()
        .map(|e| {
            (
                e["time"].as_f64().unwrap_or(-1.0),
                e["active"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // On at the end of the first loud window (1.1 s); off after 200 ms hold below -36 dBFS (2.2 s); again.
    assert_eq!(acts.len(), 4, "{acts:?}");
    assert!((acts[0].0 - 1.1).abs() < 1e-9 && acts[0].1);
    assert!((acts[1].0 - 2.2).abs() < 1e-9 && !acts[1].1);
    assert!((acts[2].0 - 3.1).abs() < 1e-9 && acts[2].1);
    // The last burst runs to the end of the file: closed at end of stream.
    assert!((acts[3].0 - 4.0).abs() < 1e-9 && !acts[3].1);
    let status: Vec<&str> = events_of(&evs, "status")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(status, vec!["started", "stopped"]);
}

#[test]
fn resamples_for_a_stage_at_another_rate_and_maps_time_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_wav(&dir.path().join("in.wav"), 48_000, &bursts(48_000, 2));
    let cfg = dir.path().join("c.toml");
    write(
        &cfg,
        r#"
[source]
kind = "wav"
path = "in.wav"

[[stage]]
kind = "level"
name = "lvl16"
rate = 16000
window = 1600

[[stage]]
kind = "level"
name = "lvl48"
window = 4800

[[sink]]
kind = "jsonl"
path = "out.jsonl"
events = ["level"]
"#,
    );
    let out = sigflow(&["run", cfg.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = json_lines(&dir.path().join("out.jsonl"));
    let at = |stage: &str| -> Vec<(u64, f64)> {
        evs.iter()
            .filter(|e| e["stage"] == stage)
            .map(|e| {
                (
                    e["sample"].as_u64().unwrap_or(0),
                    e["rms_dbfs"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let (a, b) = (at("lvl16"), at("lvl48"));
    assert_eq!(a.len(), 20);
    assert_eq!(b.len(), 20);
    for (x, y) in a.iter().zip(&b) {
        // Same windows in source-rate samples, same level within resampling error (the loud/silent boundary
        // windows differ slightly because of the resampler's filter).
        assert_eq!(x.0, y.0);
        if x.1 > -60.0 || y.1 > -60.0 {
            assert!((x.1 - y.1).abs() < 0.2, "{x:?} vs {y:?}");
        }
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("sigflow did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on the pid of a child we own and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn sigterm_mid_run_loses_no_event_and_leaves_valid_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_wav(&dir.path().join("in.wav"), 16_000, &bursts(16_000, 30));
    let cfg = dir.path().join("c.toml");
    write(
        &cfg,
        r#"
[source]
kind = "wav"
path = "in.wav"
realtime = true

[[stage]]
kind = "level"
name = "level"
window = "50ms"

[[sink]]
kind = "jsonl"
path = "events.jsonl"

[[sink]]
kind = "wav"
path = "input.wav"
from = "input"
"#,
    );
    let mut child = Command::new(bin())
        .args(["run", cfg.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, libc::SIGTERM);
    let status = wait_for(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "exit {status:?}; stderr: {err}");
    let evs = json_lines(&dir.path().join("events.jsonl"));
    let levels = events_of(&evs, "level");
    assert!(
        levels.len() >= 10,
        "ran about 1.5 s of 50 ms windows, got {}",
        levels.len()
    );
    // Complete and in order: window k ends at sample 800·(k+1); the last line is the closing status.
    for (k, e) in levels.iter().enumerate() {
        assert_eq!(e["sample"].as_u64(), Some(800 * (k as u64 + 1)));
    }
    assert_eq!(
        evs.last().map(|e| e["message"].clone()),
        Some(serde_json::json!("stopped"))
    );
    // The WAV of the input is valid and holds at least every sample the level stage measured.
    let r = hound::WavReader::open(dir.path().join("input.wav")).expect("valid wav after SIGTERM");
    assert_eq!(r.spec().sample_rate, 16_000);
    let n = r.len() as u64;
    assert!(n >= 800 * levels.len() as u64, "{n} samples");
    assert!(
        n < 16_000 * 10,
        "stopped well before the end of the 30 s file: {n}"
    );
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let cfg = dir.path().join("c.toml");
    write(
        &cfg,
        r#"
[source]
kind = "synth"
signal = "sine"
frequency = 1000.0

[[stage]]
kind = "level"
name = "level"
"#,
    );
    let mut child = Command::new(bin())
        .args(["run", cfg.to_str().expect("utf8")])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut got: Vec<(Instant, String)> = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    while t0.elapsed() < Duration::from_millis(1600) {
        match sock.recv(&mut buf) {
            Ok(n) => got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).to_string(),
            )),
            Err(e) => panic!("no notification: {e}"),
        }
    }
    signal(&child, libc::SIGTERM);
    let status = wait_for(&mut child, Duration::from_secs(10));
    assert!(status.success());
    while let Ok(n) = sock.recv(&mut buf) {
        got.push((
            Instant::now(),
            String::from_utf8_lossy(&buf[..n]).to_string(),
        ));
        if got.last().is_some_and(|g| g.1.contains("STOPPING=1")) {
            break;
        }
    }
    assert!(got[0].1.starts_with("READY=1"), "{:?}", got[0].1);
    let dogs: Vec<Instant> = got
        .iter()
        .filter(|g| g.1 == "WATCHDOG=1")
        .map(|g| g.0)
        .collect();
    // Half of 400 ms → one every ~200 ms over ~1.6 s.
    assert!(dogs.len() >= 5, "only {} watchdog pings", dogs.len());
    for w in dogs.windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap < Duration::from_millis(400),
            "watchdog gap {gap:?} exceeds WATCHDOG_USEC"
        );
    }
    assert!(got.iter().any(|g| g.1.contains("STOPPING=1")));
}

#[test]
fn sighup_reloads_a_good_config_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    let conf = |name: &str| {
        format!(
            "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[stage]]\nkind = \"level\"\nname = \"{name}\"\n\
             window = \"100ms\"\n\n[[sink]]\nkind = \"jsonl\"\npath = \"{name}.jsonl\"\n"
        )
    };
    write(&cfg, &conf("first"));
    let mut child = Command::new(bin())
        .args(["run", cfg.to_str().expect("utf8")])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(600));
    write(
        &cfg,
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\nbogus = 1\n",
    );
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "a refused reload must not stop the daemon"
    );
    write(&cfg, &conf("second"));
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGTERM);
    let status = wait_for(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{err}");
    assert!(
        err.contains("reload refused") && err.contains("bogus"),
        "stderr: {err}"
    );
    let first = json_lines(&dir.path().join("first.jsonl"));
    let second = json_lines(&dir.path().join("second.jsonl"));
    // The first pipeline ran through the refused reload (≈1.1 s of 100 ms windows) and was closed cleanly.
    assert!(events_of(&first, "level").len() >= 8, "{}", first.len());
    assert_eq!(
        first.last().map(|e| e["message"].clone()),
        Some(serde_json::json!("stopped"))
    );
    assert!(events_of(&second, "level").len() >= 4);
    assert_eq!(
        second.last().map(|e| e["message"].clone()),
        Some(serde_json::json!("stopped"))
    );
}

/// Runs `sigflow check` on a config and returns (exit ok, stderr).
fn check(dir: &Path, text: &str) -> (bool, String) {
    let cfg = dir.join("bad.toml");
    write(&cfg, text);
    let out = sigflow(&["check", cfg.to_str().expect("utf8")]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn assert_one_line_error(dir: &Path, text: &str, expect: &[&str]) {
    let (ok, err) = check(dir, text);
    assert!(!ok, "check accepted a bad config");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for e in expect {
        assert!(err.contains(e), "{err:?} lacks {e:?}");
    }
}

#[test]
fn bad_configs_get_one_line_errors_naming_file_and_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    assert_one_line_error(
        d,
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\nfrequncy = 3.0\n",
        &["bad.toml:4:1", "frequncy"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\nrate = \"fast\"\n",
        &["bad.toml:4:"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"wav\"\npath = \"nope.wav\"\n",
        &["bad.toml:3:", "nope.wav"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[stage]]\nkind = \"level\"\nname = \"a\"\nrate = 0\n",
        &["bad.toml:8:1", "stage[0].rate", "impossible"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"synth\"\nsignal = \"sine\"\n\n[[sink]]\nkind = \"wav\"\npath = \"o.wav\"\nfrom = \"nobody\"\n",
        &["bad.toml:8:1", "sink[0].from", "nobody"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"capture\"\ndevice = \"no-such-device-xyz\"\n",
        &["bad.toml:3:", "no-such-device-xyz"],
    );
    assert_one_line_error(
        d,
        "[source]\nkind = \"microphone\"\n",
        &["bad.toml:2:", "microphone"],
    );
    let missing = PathBuf::from(d).join("absent.toml");
    let out = sigflow(&["check", missing.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

#[test]
fn bad_wav_files_get_one_line_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_wav(&d.join("good.wav"), 16_000, &bursts(16_000, 1));
    let bytes = std::fs::read(d.join("good.wav")).expect("read");
    std::fs::write(d.join("truncated.wav"), &bytes[..30]).expect("write");
    let mut corrupt = bytes.clone();
    corrupt[0..4].copy_from_slice(b"JUNK");
    std::fs::write(d.join("corrupt.wav"), &corrupt).expect("write");
    for name in ["truncated.wav", "corrupt.wav"] {
        assert_one_line_error(
            d,
            &format!("[source]\nkind = \"wav\"\npath = \"{name}\"\n"),
            &[name],
        );
    }
    // A config that passes the check but whose WAV turns out unreadable at run time also fails cleanly.
    let cfg = d.join("run.toml");
    write(&cfg, "[source]\nkind = \"wav\"\npath = \"corrupt.wav\"\n");
    let out = sigflow(&["run", cfg.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt.wav") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn every_shipped_file_config_passes_check() {
    // Configs that capture from a device are checked in tests/live_daemon.rs, where a (private) device exists.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&root).expect("configs/") {
        let p = entry.expect("entry").path();
        if p.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cf = sigflow::config::ConfigFile::load(&p).unwrap_or_else(|e| panic!("{e}"));
        if matches!(cf.config.source, sigflow::config::SourceConfig::Capture(_)) {
            continue;
        }
        let out = sigflow(&["check", p.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 2, "only {n} file-based configs");
}

#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/sigflow.service");
    let text = std::fs::read_to_string(&unit).expect("unit file");
    // verify wants the ExecStart binary to exist: point it at the one under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("sigflow.service");
    write(&copy, &text.replace("/usr/local/bin/sigflow", bin()));
    let out = Command::new("systemd-analyze")
        .args(["verify", copy.to_str().expect("utf8")])
        .output()
        .expect("systemd-analyze must be installed (Debian package systemd)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "verify printed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
