//! `sigflow generate` prints transformers' greedy continuation; `sigflow bench lfm2 --json` prints its keys.

use std::process::Command;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2")
        .join(name)
}

#[test]
fn generate_prints_the_greedy_continuation_and_dumps_logits() {
    // Prompt 0 of tiny_b and its expected continuation are in expected.safetensors; read them through the crate.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny_b").join("expected.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let ck = sigflow::s2s::weights::Checkpoint::open(tmp.path()).unwrap();
    let (p, ps) = ck.i64_any("prompts").unwrap();
    let (g, gs) = ck.i64_any("greedy").unwrap();
    let prompt: Vec<String> = p[..ps[1]].iter().map(|v| v.to_string()).collect();
    let want: Vec<String> = g[..gs[1]].iter().map(|v| v.to_string()).collect();
    let npy = tmp.path().join("logits.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .args(["generate", "--checkpoint"])
        .arg(fixture("tiny_b"))
        .args([
            "--tokens",
            &prompt.join(","),
            "--max-new-tokens",
            "16",
            "--greedy",
            "--threads",
            "2",
            "--dump-logits",
        ])
        .arg(&npy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.join(","));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert!(String::from_utf8_lossy(&bytes[10..10 + hl]).contains("'shape': (16, 320)"));
    assert_eq!(bytes.len(), 10 + hl + 16 * 320 * 4);
}

#[test]
fn generate_reports_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .args(["generate", "--checkpoint"])
        .arg(fixture("tiny_a"))
        .args(["--tokens", "1,x,3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("item 2"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sigflow"))
        .args([
            "generate",
            "--checkpoint",
            "/nonexistent/dir",
            "--tokens",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}
