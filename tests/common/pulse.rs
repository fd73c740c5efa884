//! A private PulseAudio daemon and two file-backed ALSA devices, all under one temporary directory and selected
//! by environment variables only (nothing on the machine changes):
//! - `testcap`: capture that replays `input.raw` (headerless S16_LE mono at `capture_rate`) in real time;
//! - `testplay`: playback recorded into `output.raw` (S16_LE mono at `playback_rate`) in real time.
//!
//! Seen on Debian 12 with cpal 0.18.2: through `plug:pulse`, a 32 kHz or 16 kHz capture slave is paced in real
//! time, while a 48 kHz or 24 kHz one delivers only half the samples per second; so tests capture at 32 kHz.
//! The daemon is stopped when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateAudio {
    pub dir: tempfile::TempDir,
    pub capture_rate: u32,
    pub playback_rate: u32,
    daemon: Child,
}

impl PrivateAudio {
    /// Write `input` (mono, in [-1, 1]) as the capture file, start the daemon and point ALSA at the test devices.
    /// Must run before the first cpal/ALSA call of the process, since ALSA reads its configuration once.
    pub fn start(capture_rate: u32, input: &[f32], playback_rate: u32) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let t = dir.path();
        let (run, home) = (t.join("run"), t.join("home"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        write_s16(&t.join("input.raw"), input);
        let socket = run.join("native");
        let conf = format!(
            r#"pcm.testcap {{
  type plug
  slave {{ pcm {{ type file slave.pcm "plug:pulse" file "/dev/null" infile "{input}" format "raw" }}
          format S16_LE rate {capture_rate} channels 1 }}
}}
pcm.testplay {{
  type plug
  slave {{ pcm {{ type file slave.pcm "plug:pulse" file "{output}" format "raw" }}
          format S16_LE rate {playback_rate} channels 1 }}
}}
"#,
            input = t.join("input.raw").display(),
            output = t.join("output.raw").display(),
        );
        std::fs::write(t.join("test.conf"), conf).unwrap();
        // Set for this process (cpal/ALSA read them) and for the daemon and pactl.
        std::env::set_var("HOME", &home);
        std::env::set_var("XDG_RUNTIME_DIR", &run);
        std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
        std::env::set_var(
            "ALSA_CONFIG_PATH",
            format!(
                "/usr/share/alsa/alsa.conf:{}",
                t.join("test.conf").display()
            ),
        );
        let log = std::fs::File::create(t.join("pa.log")).unwrap();
        let daemon = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "-L",
                &format!(
                    "module-native-protocol-unix auth-anonymous=1 socket={}",
                    socket.display()
                ),
                "-L",
                "module-null-sink sink_name=testsink rate=16000 channels=1 format=s16le",
                "-L",
                "module-always-sink",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `pulseaudio` ({e}); the live audio tests need it: \
                     apt-get install --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins"
                )
            });
        let mut audio = PrivateAudio {
            dir,
            capture_rate,
            playback_rate,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new("pactl")
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if let Ok(Some(status)) = audio.daemon.try_wait() {
                panic!(
                    "pulseaudio exited ({status}) before it was ready; its log:\n{}",
                    std::fs::read_to_string(audio.path("pa.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not answer `pactl info` within 10 s (is pulseaudio-utils installed?)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        audio
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the playback device recorded so far.
    pub fn recorded(&self) -> Vec<f32> {
        read_s16(&self.path("output.raw"))
    }
}

impl Drop for PrivateAudio {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub fn write_s16(path: &Path, x: &[f32]) {
    let bytes: Vec<u8> = x
        .iter()
        .flat_map(|&v| ((v.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

pub fn read_s16(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32_768.0)
        .collect()
}
