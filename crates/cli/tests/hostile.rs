//! Hostile and malformed input, one test per class: every case ends in one clear line,
//! exit code 1, within 10 s and bounded memory, with no output file, no temporary left
//! behind and nothing outside OUT changed. Every input is built here.
//! This file: malformed structure, values and thresholds, external data and the paths
//! of IN and OUT.

mod common;

use gn_onnx::data::{tensor_f32, tensor_i64};
use gn_onnx::graph::attr;
use gn_onnx::io::{encode, load};
use gn_onnx::proto::{
    tensor_proto::DataLocation, GraphProto, ModelProto, NodeProto, SparseTensorProto, StringStringEntryProto,
    TensorProto, TrainingInfoProto,
};

use common::*;

#[test]
fn dims_whose_product_overflows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = cnn();
    let w = graph(&mut m).initializer.iter().position(|t| t.dims.len() == 4).unwrap();
    graph(&mut m).initializer[w].dims = vec![1 << 62, 4];
    convert_refused(dir.path(), "weight.onnx", &m, "whose product overflows");
    // The same on a scalar (the first site's θ, a Constant node): dims [2^62] over 4 bytes.
    let mut m = cnn();
    let is_theta =
        |t: &TensorProto| gn_onnx::data::tensor_to_f64(t).is_ok_and(|v| v.len() == 1 && v[0] > 1.5 && v[0] < 2.0);
    let g = graph(&mut m);
    let from_nodes = g.node.iter_mut().filter_map(|n| n.attribute.first_mut()?.t.as_mut());
    let theta = g.initializer.iter_mut().chain(from_nodes).find(|t| is_theta(t)).unwrap();
    theta.dims = vec![1 << 62];
    convert_refused(dir.path(), "theta.onnx", &m, "whose product overflows");
}

#[test]
fn nodes_missing_inputs_or_outputs_are_refused_before_any_pass() {
    let dir = tempfile::tempdir().unwrap();
    // A Div of the chain with one input.
    let mut m = cnn();
    let div = first(&mut m, "Div");
    graph(&mut m).node[div].input.truncate(1);
    convert_refused(dir.path(), "div.onnx", &m, "has 1 inputs, Div takes 2");
    // The straight-through residue's Sub with no output.
    let mut m = load(&fixture("cnn_l4_gncode.onnx")).unwrap().model;
    let floor = first(&mut m, "Floor");
    let f = graph(&mut m).node[floor].output[0].clone();
    let sub = graph(&mut m).node.iter().position(|n| n.op_type() == "Sub" && n.input.first() == Some(&f)).unwrap();
    graph(&mut m).node[sub].output.clear();
    convert_refused(dir.path(), "residue.onnx", &m, "has no output");
    // A crafted spiking-layer node with no input, and one with τ = −1.
    for (name, inputs, tau, needle) in [
        ("noinput.onnx", vec![], 4, "GroupNeuron has 1 input and one output"),
        ("tau.onnx", vec!["input".into()], -1, "τ = -1"),
    ] {
        let mut m = cnn();
        let x = graph(&mut m).input[0].name().to_string();
        let inputs = inputs.into_iter().map(|_: String| x.clone()).collect();
        graph(&mut m).node.push(NodeProto {
            input: inputs,
            output: vec!["crafted".into()],
            name: Some("crafted".into()),
            op_type: Some("GroupNeuron".into()),
            domain: Some("gn.transpile".into()),
            attribute: vec![attr::float("theta", 1.0), attr::int("tau", tau), attr::int("levels", 4)],
            ..Default::default()
        });
        convert_refused(dir.path(), name, &m, needle);
    }
    // A crafted direct-current node whose attributes are complete but for its T.
    let mut m = cnn();
    let x = graph(&mut m).input[0].name().to_string();
    let attributes = vec![
        attr::float("theta", 2.0),
        attr::int("tau", 4),
        attr::int("levels", 4),
        attr::float("v_init", 0.25),
        attr::float("theta_gn", 0.5),
    ];
    graph(&mut m).node.push(NodeProto {
        input: vec![x],
        output: vec!["crafted".into()],
        name: Some("crafted".into()),
        op_type: Some("GroupNeuronDirect".into()),
        domain: Some("gn.transpile".into()),
        attribute: attributes,
        ..Default::default()
    });
    convert_refused(dir.path(), "direct.onnx", &m, "GroupNeuronDirect has no 'timesteps' attribute");
    // A per-channel node without its thresholds.
    let last = graph(&mut m).node.len() - 1;
    let node = &mut graph(&mut m).node[last];
    node.op_type = Some("GroupNeuronPerChannel".into());
    node.attribute.push(attr::int("timesteps", 2));
    convert_refused(dir.path(), "channels.onnx", &m, "GroupNeuronPerChannel has 2 inputs");
}

#[test]
fn a_string_initializer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = cnn();
    graph(&mut m).initializer.push(TensorProto {
        name: Some("labels".into()),
        dims: vec![1],
        data_type: Some(8),
        string_data: vec![b"cat".to_vec().into()],
        ..Default::default()
    });
    convert_refused(dir.path(), "string.onnx", &m, "a STRING tensor has no place");
}

#[test]
fn malformed_tensors_and_values_are_not_silently_accepted() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = fn(&mut ModelProto);
    let cases: [(&str, Edit, &str); 9] = [
        ("negative dims", |m| graph(m).initializer[0].dims[0] = -3, "negative dimension"),
        (
            "raw_data length",
            |m| {
                let t = &mut graph(m).initializer[0];
                let raw = t.raw_data.clone().unwrap();
                t.raw_data = Some(raw.slice(..raw.len() - 4));
            },
            "bytes of data, not the",
        ),
        ("undefined data type", |m| graph(m).initializer[0].data_type = Some(0), "UNDEFINED"),
        ("unknown data type", |m| graph(m).initializer[0].data_type = Some(99), "data type 99"),
        (
            "two producers of one value",
            |m| {
                let g = graph(m);
                let o = g.node[0].output[0].clone();
                g.node[1].output = vec![o];
            },
            "already writes",
        ),
        (
            "duplicate graph outputs",
            |m| {
                let o = graph(m).output[0].clone();
                graph(m).output.push(o);
            },
            "is listed twice",
        ),
        (
            "an opset newer than known",
            |m| {
                for o in &mut m.opset_import {
                    if o.domain().is_empty() {
                        o.version = Some(99);
                    }
                }
            },
            "opset 99",
        ),
        (
            "a self-loop",
            |m| {
                let g = graph(m);
                let floor = g.node.iter().position(|n| n.op_type() == "Floor").unwrap();
                let f = g.node[floor].output[0].clone();
                let one = tensor_f32("one", &[], &[1.0]);
                g.initializer.push(one);
                g.node.push(NodeProto {
                    input: vec![f.clone(), "one".into()],
                    output: vec![f],
                    op_type: Some("Add".into()),
                    name: Some("loop".into()),
                    ..Default::default()
                });
            },
            "already writes",
        ),
        (
            "a cycle",
            |m| {
                let g = graph(m);
                let last = g.node.last().unwrap().output[0].clone();
                let conv = g.node.iter().position(|n| n.op_type() == "Conv").unwrap();
                g.node[conv].input[0] = last;
            },
            "cycle",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut m = cnn();
        edit(&mut m);
        convert_refused(dir.path(), &format!("{}.onnx", what.replace(' ', "_")), &m, needle);
    }
}

/// Sets every scalar constant in (1.5, 2.0), the first site's θ of cnn_l4 (1.96), to `v`.
fn set_theta(m: &mut ModelProto, v: f32) {
    let g = graph(m);
    let hit = |t: &TensorProto| {
        let x = gn_onnx::data::tensor_to_f64(t).unwrap_or_default();
        x.len() == 1 && x[0] > 1.5 && x[0] < 2.0
    };
    for t in &mut g.initializer {
        if hit(t) {
            *t = tensor_f32(t.name(), &t.dims.clone(), &[v]);
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(t) = &mut a.t {
                if hit(t) {
                    *t = tensor_f32(t.name(), &t.dims.clone(), &[v]);
                }
            }
        }
    }
}

#[test]
fn a_threshold_of_zero_nan_or_infinity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (v, name) in [(0.0, "zero"), (f32::NAN, "nan"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "neginf")] {
        let mut m = cnn();
        set_theta(&mut m, v);
        convert_refused(dir.path(), &format!("{name}.onnx"), &m, "not a positive finite threshold");
        // inspect refuses it too, rather than reporting a site with θ = 1.
        let path = dir.path().join("theta.onnx");
        std::fs::write(&path, encode(&m)).unwrap();
        let r = run_in(dir.path(), &args(&[&"inspect", &path]));
        assert!(!r.stdout.contains("θ = 1.000000"), "{name}: {}", r.stdout);
        assert!(
            r.stdout.contains("not a positive finite threshold") || r.stderr.contains("not a positive finite"),
            "{name}: {} {}",
            r.stdout,
            r.stderr
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Points a tensor at a side file.
fn external(t: &mut TensorProto, location: &str, offset: u64, length: u64) {
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    let kv = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    t.external_data =
        vec![kv("location", location.into()), kv("offset", offset.to_string()), kv("length", length.to_string())];
}

#[test]
fn external_data_is_read_once_bounded_and_only_from_regular_files_inside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 4,000 initializers over one 1 MiB side file: refused as overlapping, in bounded memory.
    std::fs::write(d.join("side.bin"), vec![0u8; 1 << 20]).unwrap();
    let mut m = cnn();
    for i in 0..4000 {
        let mut t = tensor_f32(&format!("dup{i}"), &[1 << 18], &[]);
        external(&mut t, "side.bin", 0, 1 << 20);
        graph(&mut m).initializer.push(t);
    }
    std::fs::write(d.join("amplified.onnx"), encode(&m)).unwrap();
    refused_in(d, args(&[&d.join("amplified.onnx"), &d.join("out.onnx")]), "overlapping ranges", 1.5);
    // A side file that is a FIFO: refused at once, not waited on.
    let fifo = d.join("fifo.bin");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let mut m = cnn();
    let mut t = tensor_f32("fifo", &[4], &[]);
    external(&mut t, "fifo.bin", 0, 16);
    graph(&mut m).initializer.push(t);
    convert_refused(d, "fifo.onnx", &m, "not a regular file (a FIFO)");
    // Sparse initializers and training info point outside the folder: refused like initializers.
    let mut m = cnn();
    let mut values = tensor_f32("sparse_values", &[1], &[]);
    external(&mut values, "../outside.bin", 0, 4);
    graph(&mut m).sparse_initializer.push(SparseTensorProto {
        values: Some(values),
        indices: Some(tensor_i64("sparse_indices", &[1], &[0])),
        dims: vec![4],
    });
    convert_refused(d, "sparse.onnx", &m, "leaves the model's folder");
    let mut m = cnn();
    let mut t = tensor_f32("trained", &[1], &[]);
    external(&mut t, "/etc/passwd", 0, 4);
    m.training_info.push(TrainingInfoProto {
        initialization: Some(GraphProto { initializer: vec![t], ..Default::default() }),
        ..Default::default()
    });
    convert_refused(d, "training.onnx", &m, "is an absolute path");
}

#[test]
fn input_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    refused_in(dir.path(), args(&[&"/dev/zero", &out]), "not a regular file (a device)", 0.0);
    refused_in(dir.path(), args(&[&dir.path(), &out]), "not a regular file (a folder)", 0.0);
}

#[test]
fn output_that_is_not_a_regular_file_or_is_read_by_the_input_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("in.onnx");
    std::fs::copy(fixture("cnn_l4.onnx"), &model).unwrap();
    // A FIFO and a folder as OUT.
    let fifo = d.join("fifo.onnx");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    refused_in(d, args(&[&model, &fifo]), "a FIFO, not a regular file", 1.0);
    std::fs::create_dir(d.join("folder.onnx")).unwrap();
    refused_in(d, args(&[&model, &d.join("folder.onnx")]), "a folder, not a regular file", 1.0);
    // OUT that is the input through a hard link or a symbolic link.
    std::fs::hard_link(&model, d.join("hard.onnx")).unwrap();
    refused_in(d, args(&[&model, &d.join("hard.onnx")]), "the input model is read from", 1.0);
    std::os::unix::fs::symlink(&model, d.join("soft.onnx")).unwrap();
    refused_in(d, args(&[&model, &d.join("soft.onnx")]), "the input model is read from", 1.0);
    // OUT equal to one of the input's external-data files.
    let ext = "cnn_l4_dynamo_op18_external.onnx";
    std::fs::copy(fixture(&format!("external/{ext}")), d.join(ext)).unwrap();
    std::fs::copy(fixture(&format!("external/{ext}.data")), d.join(format!("{ext}.data"))).unwrap();
    let side = std::fs::read(d.join(format!("{ext}.data"))).unwrap();
    refused_in(d, args(&[&d.join(ext), &d.join(format!("{ext}.data"))]), "the input model is read from", 2.0);
    assert_eq!(std::fs::read(d.join(format!("{ext}.data"))).unwrap(), side);
}

#[test]
fn temporaries_are_unpredictable_and_symlinks_planted_beside_out_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = d.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    // Links at every name the old scheme (".out.onnx.tmp-{pid}") could have used next.
    let me = std::process::id();
    for pid in me..me + 2000 {
        std::os::unix::fs::symlink(&victim, d.join(format!(".out.onnx.tmp-{pid}"))).unwrap();
    }
    let r = run_in(d, &args(&[&fixture("cnn_l4.onnx"), &d.join("out.onnx"), &"-t", &"1"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let temporaries =
        std::fs::read_dir(d).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).count();
    assert_eq!(temporaries, 0);
}
