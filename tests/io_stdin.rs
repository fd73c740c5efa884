//! The stdin source reads raw PCM from standard input until end of input: `sigflow run` with a stdin source is fed
//! through a pipe, and a float WAV sink of the input gives back exactly what was sent.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn stdin_reads_until_end_of_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("stdin.toml");
    // A ring of 80 samples, far smaller than the input: the reader waits for room and loses nothing.
    std::fs::write(
        &cfg,
        "[daemon]\nring-seconds = 0.01\n\n[source]\nkind = \"stdin\"\nformat = \"f32le\"\nrate = 8000\n\
         channels = 2\nchannel = 0\n\n[[sink]]\nkind = \"wav\"\npath = \"heard.wav\"\nfrom = \"input\"\n\
         format = \"float32\"\n",
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .args(["run", cfg.to_str().expect("utf8")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sigflow");
    let sent: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.001).sin()).collect();
    let mut bytes = Vec::new();
    for &v in &sent {
        bytes.extend_from_slice(&v.to_le_bytes());
        bytes.extend_from_slice(&(-v).to_le_bytes());
    }
    {
        let mut stdin = child.stdin.take().expect("stdin pipe");
        // Odd piece sizes split frames across reads.
        for piece in bytes.chunks(1001) {
            stdin.write_all(piece).expect("write to sigflow");
        }
    } // closing stdin ends the input
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut r = hound::WavReader::open(dir.path().join("heard.wav")).expect("valid WAV");
    assert_eq!(r.spec().sample_rate, 8000);
    let got: Vec<f32> = r.samples::<f32>().map(|s| s.expect("sample")).collect();
    assert_eq!(got, sent);
}
