//! Model I/O: byte-identical round trips, external data, and typed errors on bad input.

use std::fs;

use gn_onnx::io::{decode, encode, load, load_bytes, write_model, IoError};
use gn_onnx::proto::{tensor_proto, StringStringEntryProto};
use gn_onnx::save::save;
use gn_onnx::{Graph, GraphError};
use gn_tests::all_fixture_models as fixture_models;

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let models = fixture_models();
    assert!(models.len() >= 2, "fixtures/models holds the exported models");
    for path in models {
        let bytes = fs::read(&path).unwrap();
        let model = decode(&bytes, &path.display().to_string()).unwrap();
        assert!(encode(&model) == bytes, "{} changed in a decode/encode round trip", path.display());
    }
}

/// The streaming writer `save` uses writes what `encode` returns, byte for byte: on every
/// fixture and its conversions (large initializers written straight from the tensor), and
/// on a tensor holding raw_data beside typed data and fields after raw_data's tag.
#[test]
fn the_streaming_writer_writes_the_encoding() {
    let same = |m: &gn_onnx::proto::ModelProto, what: &str| {
        let mut written = Vec::new();
        write_model(m, &mut written).unwrap();
        assert!(written == encode(m), "{what}: the streaming writer differs from encode");
    };
    for path in fixture_models() {
        let ann = load(&path).unwrap().model;
        same(&ann, &path.display().to_string());
        let snn = gn_transpile::transpile(&ann, &gn_transpile::Options::default());
        if let Ok((snn, _)) = snn {
            same(&snn, &format!("{} converted", path.display()));
        }
    }
    let mut m = load(&fixture_models()[0]).unwrap().model;
    let g = m.graph.as_mut().unwrap();
    let mut t = gn_onnx::data::tensor_f32("odd", &[2], &[1.0, 2.0]);
    t.raw_data = Some(vec![7u8; 100_000].into());
    t.doc_string = Some("after raw_data".into());
    t.double_data = vec![0.5];
    t.metadata_props = vec![StringStringEntryProto { key: Some("k".into()), value: Some("v".into()) }];
    g.initializer.push(t);
    g.doc_string = Some("graph doc".into());
    m.doc_string = Some("model doc".into());
    same(&m, "a tensor with fields on both sides of raw_data");
    m.graph = None;
    same(&m, "a model without a graph");
}

#[test]
fn the_fixture_set_has_a_dynamo_opset_18_and_a_legacy_opset_13_export() {
    let opsets: Vec<(String, i64, usize)> = fixture_models()
        .iter()
        .map(|p| {
            let m = load(p).unwrap().model;
            let constants = m.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type() == "Constant").count();
            (m.producer_name().to_string(), gn_transpile::default_opset(&m).unwrap(), constants)
        })
        .collect();
    assert!(opsets.iter().any(|(_, v, _)| *v == 18), "{opsets:?}");
    assert!(opsets.iter().any(|(_, v, c)| *v == 13 && *c > 0), "legacy opset 13 with Constant nodes: {opsets:?}");
}

#[test]
fn external_data_is_inlined_and_matches_the_single_file_export() {
    let dir = gn_tests::fixtures().join("models");
    let external = load(&dir.join("external/cnn_l4_dynamo_op18_external.onnx")).unwrap().model;
    let single = load(&dir.join("cnn_l4_dynamo_op18.onnx")).unwrap().model;
    let count = |m: &gn_onnx::proto::ModelProto| m.graph.as_ref().unwrap().initializer.len();
    assert_eq!(count(&external), count(&single));
    for t in &external.graph.as_ref().unwrap().initializer {
        assert!(t.external_data.is_empty(), "{} still points to a side file", t.name());
        let same = single.graph.as_ref().unwrap().initializer.iter().find(|u| u.name() == t.name()).unwrap();
        assert_eq!(
            gn_onnx::data::tensor_to_f64(t).unwrap(),
            gn_onnx::data::tensor_to_f64(same).unwrap(),
            "tensor {}",
            t.name()
        );
    }
    // A model with external data cannot be resolved from bytes alone.
    let bytes = fs::read(dir.join("external/cnn_l4_dynamo_op18_external.onnx")).unwrap();
    assert!(matches!(load_bytes(&bytes), Err(IoError::ExternalData { .. })));
}

#[test]
fn bad_bytes_give_typed_errors() {
    let good = fs::read(gn_tests::fixtures().join("models/cnn_l4.onnx")).unwrap();
    assert!(matches!(decode(&[], "empty"), Err(IoError::Empty { .. })));
    assert!(matches!(decode(&good[..good.len() / 2], "half"), Err(IoError::Decode { .. })));
    assert!(matches!(
        decode(b"this is not a protobuf at all, just text", "text"),
        Err(IoError::Decode { .. } | IoError::NoGraph { .. })
    ));
    // Field 7 (graph), length-delimited, declaring 2^40 bytes that are not there.
    let absurd = [0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x01, 0x02];
    assert!(matches!(decode(&absurd, "absurd"), Err(IoError::Decode { .. })));
    // A valid protobuf that is not a model.
    assert!(matches!(decode(&[0x08, 0x07], "ir only"), Err(IoError::NoGraph { .. })));
    for n in [1, 7, 100, 1000, good.len() - 1] {
        let _ = decode(&good[..n], "prefix"); // never panics
    }
}

fn with_location(location: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = load(&gn_tests::fixtures().join("models/cnn_l4.onnx")).unwrap().model;
    let t = &mut model.graph.as_mut().unwrap().initializer[0];
    t.raw_data = None;
    t.float_data.clear();
    t.data_location = Some(tensor_proto::DataLocation::External as i32);
    t.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some(location.into()) }];
    let path = dir.path().join("sub/model.onnx");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, encode(&model)).unwrap();
    fs::write(dir.path().join("outside.bin"), vec![0u8; 1 << 16]).unwrap();
    (dir, path)
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    for location in ["../outside.bin", "/etc/passwd", "a/../../outside.bin"] {
        let (_dir, path) = with_location(location);
        match load(&path) {
            Err(IoError::ExternalData { tensor, reason }) => {
                assert!(!tensor.is_empty());
                assert!(reason.contains(location), "{reason}");
            }
            other => panic!("{location}: expected a refusal, got {other:?}"),
        }
    }
    // A link inside the folder that points out of it.
    let (dir, path) = with_location("link.bin");
    std::os::unix::fs::symlink(dir.path().join("outside.bin"), dir.path().join("sub/link.bin")).unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(err.contains("outside the model's folder"), "{err}");
}

#[test]
fn a_cyclic_graph_is_a_typed_error() {
    let mut model = load(&gn_tests::fixtures().join("models/cnn_l4.onnx")).unwrap().model;
    let g = model.graph.as_mut().unwrap();
    // Make the first node read the output of the last one.
    let last = g.node.last().unwrap().output[0].clone();
    let first_conv = g.node.iter().position(|n| n.op_type() == "Conv").unwrap();
    g.node[first_conv].input[0] = last;
    let graph = Graph::new(g.clone());
    assert!(matches!(graph.topo_order(), Err(GraphError::Cycle { .. })));
    let err = gn_transpile::transpile(&model, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[test]
fn save_is_atomic_and_never_overwrites_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.onnx");
    fs::copy(gn_tests::fixtures().join("models/cnn_l4.onnx"), &src).unwrap();
    let loaded = load(&src).unwrap();
    let model = loaded.model.clone();
    assert!(matches!(save(&model, &src, &loaded.sources), Err(IoError::Refused { .. })));
    let alias = dir.path().join("./in.onnx");
    assert!(matches!(save(&model, &alias, &loaded.sources), Err(IoError::Refused { .. })));
    let out = dir.path().join("out.onnx");
    save(&model, &out, &loaded.sources).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&src).unwrap());
    // A folder that does not exist: an error, and nothing left behind.
    let missing = dir.path().join("no/such/dir/out.onnx");
    assert!(matches!(save(&model, &missing, &[]), Err(IoError::Write { .. })));
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn graph_ir_finds_constants_and_renders_one_line_per_node() {
    for name in ["cnn_l4.onnx", "cnn_l4_legacy_op13.onnx", "cnn_l4_dynamo_op18.onnx"] {
        let model = load(&gn_tests::fixtures().join("models").join(name)).unwrap().model;
        let graph = Graph::new(model.graph.unwrap());
        let order = graph.topo_order().unwrap();
        assert_eq!(order.len(), graph.nodes().len());
        let floor = graph.nodes().iter().find(|n| n.op_type() == "Floor").unwrap();
        // The scalar added before the floor is 1/2, whether initializer or Constant node.
        let producers = graph.producers();
        let add = &graph.nodes()[producers[&floor.input[0]]];
        let half: Vec<f64> = add.input.iter().filter_map(|i| graph.scalar_constant(i)).collect();
        assert_eq!(half, vec![0.5], "{name}");
        let text = graph.render();
        assert_eq!(text.lines().filter(|l| l.contains(": ")).count(), graph.nodes().len());
    }
}

#[test]
fn dead_nodes_are_removed_and_names_are_unique() {
    let model = load(&gn_tests::fixtures().join("models/cnn_l4.onnx")).unwrap().model;
    let mut graph = Graph::new(model.graph.unwrap());
    let before = graph.nodes().len();
    let first = graph.nodes()[0].name().to_string();
    let a = graph.add_node(&first, "probe", "Identity", &["input"], vec![]);
    let b = graph.add_node(&first, "probe", "Identity", &["input"], vec![]);
    assert_eq!(a, format!("{first}.probe"));
    assert_eq!(b, format!("{first}.probe.1"));
    assert_eq!(graph.remove_dead_nodes(), 2);
    assert_eq!(graph.nodes().len(), before);
}

/// The written file is the model's encoding, whether tensor data was copied from the
/// input file by the kernel or written from memory.
#[test]
fn save_loaded_writes_the_model_encoding_copying_data_from_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.onnx");
    fs::write(&src, encode(&gn_tests::built::resnet18(32, 16, 3))).unwrap();
    let external = gn_tests::fixtures().join("models/external/cnn_l4_dynamo_op18_external.onnx");
    for input in [src.clone(), external] {
        let loaded = load(&input).unwrap();
        assert!(!loaded.mapped.is_empty(), "{} is mapped", input.display());
        let (snn, _) = gn_transpile::transpile(&loaded.model, &Default::default()).unwrap();
        let out = dir.path().join("out.onnx");
        gn_onnx::save::save_loaded(&snn, &out, &loaded, Default::default()).unwrap();
        assert_eq!(fs::read(&out).unwrap(), encode(&snn), "{}", input.display());
        assert!(matches!(
            gn_onnx::save::save_loaded(&snn, &input, &loaded, Default::default()),
            Err(IoError::Refused { .. })
        ));
    }
}

/// A model file rewritten or truncated after it was read: the writer refuses, nothing
/// is written, and reading the data that is gone does not end the process.
#[test]
fn save_loaded_refuses_an_input_that_changed_after_it_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.onnx");
    let bytes = encode(&gn_tests::built::resnet18(32, 16, 3));
    let out = dir.path().join("out.onnx");
    let leftovers = || fs::read_dir(dir.path()).unwrap().count();
    for change in ["rewrite", "truncate"] {
        fs::write(&src, &bytes).unwrap();
        let loaded = load(&src).unwrap();
        let (snn, _) = gn_transpile::transpile(&loaded.model, &Default::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = fs::OpenOptions::new().write(true).open(&src).unwrap();
        match change {
            "rewrite" => std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; 4096], 100_000).unwrap(),
            _ => file.set_len(bytes.len() as u64 / 3).unwrap(),
        }
        drop(file);
        if change == "truncate" {
            // Every tensor's data, read from memory: the part past the new end reads as
            // zeros instead of ending the process.
            let mut sum = 0u64;
            for t in &loaded.model.graph.as_ref().unwrap().initializer {
                sum += t.raw_data.as_ref().map_or(0, |r| r.iter().map(|&b| b as u64).sum::<u64>());
            }
            assert!(sum > 0);
        }
        let err = gn_onnx::save::save_loaded(&snn, &out, &loaded, Default::default()).unwrap_err().to_string();
        let why = if change == "truncate" { "shrank while it was being read" } else { "modified" };
        assert!(err.contains("in.onnx") && err.contains(why), "{change}: {err}");
        assert!(!out.exists(), "{change}");
        assert_eq!(leftovers(), 1, "{change}: only the input is left");
    }
}
