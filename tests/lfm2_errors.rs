//! Bad checkpoints give clear errors naming the file and tensor (or config key), never a panic.

use sigflow::kernels::quant::DType;
use sigflow::s2s::lfm2::Lfm2;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lfm2")
        .join(name)
}

/// A writable copy of a fixture checkpoint.
fn copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> String {
    match Lfm2::load(dir, DType::F32, 1) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrite the safetensors header of `file` with `edit` applied to its JSON.
fn edit_header(file: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

#[test]
fn truncated_file_is_reported_with_its_path() {
    let d = copy("tiny_a");
    let f = d.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );
}

#[test]
fn garbage_header_is_reported() {
    let d = copy("tiny_a");
    let f = d.path().join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    for b in bytes.iter_mut().skip(8).take(40) {
        *b = b'#';
    }
    std::fs::write(&f, &bytes).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );
    // A file shorter than the length prefix.
    std::fs::write(&f, b"abc").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let d = copy("tiny_a");
    let f = d.path().join("model.safetensors");
    edit_header(&f, |h| {
        let m = h.as_object_mut().unwrap();
        let v = m.remove("model.layers.2.feed_forward.w2.weight").unwrap();
        m.insert("model.layers.2.feed_forward.w2.renamed".into(), v);
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors")
            && e.contains("`model.layers.2.feed_forward.w2.weight` is missing"),
        "{e}"
    );
}

#[test]
fn mis_shaped_tensor_is_named_with_both_shapes() {
    let d = copy("tiny_a");
    let f = d.path().join("model.safetensors");
    edit_header(&f, |h| {
        let t = h.get_mut("model.layers.1.self_attn.q_proj.weight").unwrap();
        // Same number of elements, different shape.
        t["shape"] = serde_json::json!([32, 128]);
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.1.self_attn.q_proj.weight")
            && e.contains("[32, 128]")
            && e.contains("[64, 64]"),
        "{e}"
    );
}

#[test]
fn shard_problems_name_the_shard_or_index() {
    let d = copy("tiny_b");
    // A shard listed in the index is missing.
    std::fs::remove_file(d.path().join("model-00002-of-00004.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00004.safetensors"), "{e}");
    // Broken index JSON.
    let d = copy("tiny_b");
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        "{\"weight_map\": [1,",
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("line 1"),
        "{e}"
    );
    // No weights at all.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny_a").join("config.json"),
        d.path().join("config.json"),
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn config_problems_name_the_key() {
    let d = copy("tiny_a");
    let p = d.path().join("config.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("\"full_attention\"", "\"mamba\"")).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("layer_types[1]") && e.contains("`mamba`"),
        "{e}"
    );
    std::fs::write(&p, "{\"vocab_size\": 10,").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("1:"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["num_key_value_heads"] = serde_json::json!(3);
    std::fs::write(&p, v.to_string()).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("num_key_value_heads"), "{e}");
}

#[test]
fn out_of_vocabulary_token_is_an_error() {
    let m = Lfm2::load(&fixture("tiny_a"), DType::F32, 1).unwrap();
    let mut st = m.new_state(4);
    let mut h = Vec::new();
    let e = m
        .forward(&[1, 9999], &mut st, &mut h, None, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("9999") && e.contains("vocabulary"), "{e}");
}
