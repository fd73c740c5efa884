//! The stdin source reads raw PCM from standard input until end of input. The test runs itself as a child process
//! whose standard input is a pipe it writes to.

use sigflow::config::RawFormat;
use sigflow::io::frames::ChannelPick;
use sigflow::io::raw::StdinSource;
use sigflow::io::{Source, SourceControl};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const CHILD_ENV: &str = "SIGFLOW_TEST_STDIN_CHILD";

/// In the child: read f32le stereo from stdin, keep channel 0, print every sample received, one per line.
#[test]
fn stdin_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // only meaningful as the child of `stdin_reads_until_end_of_input`
    }
    let src = StdinSource::new(RawFormat::F32le, 8000, 2, ChannelPick::Channel(0));
    let (producer, mut consumer) = rtrb::RingBuffer::new(64);
    let ctl = Arc::new(SourceControl::default());
    let handle = Box::new(src).start(producer, Arc::clone(&ctl)).unwrap();
    let mut out = String::new();
    loop {
        let finished = ctl.finished.load(Ordering::Acquire);
        while let Ok(v) = consumer.pop() {
            out.push_str(&format!("{v}\n"));
        }
        if finished && consumer.slots() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    handle.join().unwrap();
    println!("BEGIN\n{out}END");
}

#[test]
fn stdin_reads_until_end_of_input() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdin_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sent: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.001).sin()).collect();
    let mut bytes = Vec::new();
    for &v in &sent {
        bytes.extend_from_slice(&v.to_le_bytes());
        bytes.extend_from_slice(&(-v).to_le_bytes());
    }
    {
        let mut stdin = child.stdin.take().unwrap();
        // Odd piece sizes split frames across reads; the ring (64) is far smaller than the input.
        for piece in bytes.chunks(1001) {
            stdin.write_all(piece).unwrap();
        }
    } // closing stdin ends the input
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let body = text
        .split("BEGIN\n")
        .nth(1)
        .and_then(|t| t.split("END").next())
        .expect("child printed its samples");
    let got: Vec<f32> = body.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got, sent);
}
