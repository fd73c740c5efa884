//! Malformed or unsupported ONNX files give one-line errors naming the file, node, operator and attribute; random
//! corruption never panics.

#[path = "cnn_common.rs"]
mod common;

use common::*;
use proptest::prelude::*;
use prost::Message;
use sigflow::cnn::import;
use sigflow::cnn::onnx_proto::{AttributeProto, ModelProto};

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap()
}

fn import_err(bytes: &[u8]) -> String {
    match import::import_bytes(bytes) {
        Ok(_) => panic!("the edited model imported without error"),
        Err(e) => e,
    }
}

fn edited(name: &str, f: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut m = ModelProto::decode(model_bytes(name).as_slice()).unwrap();
    f(&mut m);
    m.encode_to_vec()
}

#[test]
fn unsupported_operator_names_node_and_op() {
    let bytes = edited("gated", |m| {
        let g = m.graph.as_mut().unwrap();
        let n = g.node.iter_mut().find(|n| n.op_type == "Tanh").unwrap();
        n.op_type = "LSTM".into();
        n.name = "/block0/gate".into();
    });
    let e = import_err(&bytes);
    assert_eq!(
        e,
        "node `/block0/gate` (op LSTM): operator `LSTM` is not supported by the CNN engine"
    );
}

#[test]
fn unsupported_attribute_names_node_op_and_attribute() {
    let bytes = edited("dsconv", |m| {
        let g = m.graph.as_mut().unwrap();
        let n = g.node.iter_mut().find(|n| n.op_type == "MaxPool").unwrap();
        n.attribute.retain(|a| a.name != "ceil_mode");
        n.attribute.push(AttributeProto {
            name: "ceil_mode".into(),
            i: 1,
            r#type: 2,
            ..Default::default()
        });
    });
    let e = import_err(&bytes);
    assert!(
        e.contains("(op MaxPool): attribute `ceil_mode` = 1 is not supported"),
        "{e}"
    );
    let bytes = edited("tcn", |m| {
        let g = m.graph.as_mut().unwrap();
        let n = g.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
        n.attribute.push(AttributeProto {
            name: "frobnicate".into(),
            i: 1,
            r#type: 2,
            ..Default::default()
        });
    });
    let e = import_err(&bytes);
    assert!(
        e.contains("(op Conv): attribute `frobnicate` is not supported"),
        "{e}"
    );
}

#[test]
fn broken_weights_and_truncated_files_are_reported() {
    let bytes = edited("strided", |m| {
        let g = m.graph.as_mut().unwrap();
        g.initializer[0].raw_data.truncate(10);
    });
    let e = import_err(&bytes);
    assert!(e.contains("raw_data has 10 bytes"), "{e}");
    let full = model_bytes("strided");
    let e = import_err(&full[..full.len() / 2]);
    assert!(e.contains("not a valid ONNX model"), "{e}");
    let path = fixtures().join("manifest.json");
    let e = import::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: not a valid ONNX model", path.display())),
        "{e}"
    );
}

#[test]
fn float_data_initializers_load_like_raw_data() {
    let bytes = edited("same", |m| {
        for t in &mut m.graph.as_mut().unwrap().initializer {
            if t.data_type == 1 && !t.raw_data.is_empty() {
                t.float_data = t
                    .raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                t.raw_data.clear();
            }
        }
    });
    assert_eq!(
        import::import_bytes(&bytes).unwrap(),
        import::import_bytes(&model_bytes("same")).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn corrupted_models_never_panic(pos in 0usize..100_000, val in any::<u8>(), cut in 0usize..100_000, which in 0usize..4) {
        let name = ["tcn", "gated", "gmp", "melcnn"][which];
        let mut b = model_bytes(name);
        let p = pos % b.len();
        b[p] = val;
        b.truncate(b.len() - cut % (b.len() / 4));
        let _ = import::import_bytes(&b);
    }
}
