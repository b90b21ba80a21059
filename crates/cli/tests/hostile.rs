//! Hostile and malformed input, one test per class: every case ends in one clear line,
//! exit code 1, within 10 s and bounded memory, with no output file, no temporary left
//! behind and nothing outside OUT changed. Every input is built here.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gn_onnx::data::{tensor_f32, tensor_i64};
use gn_onnx::graph::attr;
use gn_onnx::io::{encode, load};
use gn_onnx::proto::{
    tensor_proto::DataLocation, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TensorProto, TrainingInfoProto,
};

const LIMIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

fn cnn() -> ModelProto {
    load(&fixture("cnn_l4.onnx")).unwrap().model
}

/// What a run of the command did.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    seconds: f64,
    /// Peak resident memory of the process, in MB.
    peak_mb: f64,
}

/// Runs the command in `cwd`, killing it after [`LIMIT`]; measures its peak memory
/// with `wait4`.
fn run_in(cwd: &Path, args: &[OsString]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gn-transpile"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    // The peak is read from /proc (VmHWM, a high-water mark that starts afresh at exec)
    // until the process exits: wait4's ru_maxrss would include the test process's own
    // size at fork time.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{args:?} still running after {LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Run {
        code: exit.code(),
        signal: exit.signal(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        seconds: start.elapsed().as_secs_f64(),
        peak_mb: peak_kb as f64 / 1024.0,
    }
}

fn args(list: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    list.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Every file under `dir` with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (e.path(), m.len(), m.modified().ok())
        })
        .collect();
    v.sort();
    v
}

/// A refusal: exit code 1, the last line of stderr is the error naming `needle`, no
/// panic, under the time and memory bounds, and the folder unchanged (no OUT, no
/// temporary, no file touched).
fn refused_in(dir: &Path, argv: Vec<OsString>, needle: &str, inputs_mb: f64) -> Run {
    let before = snapshot(dir);
    let r = run_in(dir, &argv);
    let last = r.stderr.trim_end().lines().last().unwrap_or_default().trim_start_matches('\r').to_string();
    assert_eq!(r.code, Some(1), "{argv:?}: exit {:?} signal {:?}: {}", r.code, r.signal, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{argv:?}: {}", r.stderr);
    assert!(last.starts_with("error: "), "{argv:?}: the error is not on a line of its own: {:?}", r.stderr);
    assert!(last.contains(needle), "{argv:?}: expected '{needle}' in: {last}");
    let bound = 2.0 * inputs_mb + 100.0;
    assert!(r.peak_mb <= bound, "{argv:?}: peak {:.0} MB above {bound:.0} MB", r.peak_mb);
    assert!(r.seconds < LIMIT.as_secs_f64(), "{argv:?}: {:.1} s", r.seconds);
    assert_eq!(snapshot(dir), before, "{argv:?}: the folder changed");
    r
}

fn mb(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0)
}

/// Writes `model` as `name` in `dir`, then runs the conversion to `out.onnx` and expects
/// a refusal naming `needle`.
fn convert_refused(dir: &Path, name: &str, model: &ModelProto, needle: &str) {
    let path = dir.join(name);
    std::fs::write(&path, encode(model)).unwrap();
    refused_in(dir, args(&[&path, &dir.join("out.onnx")]), needle, mb(&path));
    std::fs::remove_file(&path).unwrap();
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

fn first(m: &mut ModelProto, op: &str) -> usize {
    graph(m).node.iter().position(|n| n.op_type() == op).unwrap()
}

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

/// Adds a weight of `n` float zeros that the output reads (`y = y' + ReduceSum(w)`, which
/// adds 0), so the conversion keeps it and writes it.
fn with_ballast(m: &mut ModelProto, n: i64) {
    let g = graph(m);
    g.initializer.push(TensorProto {
        name: Some("ballast".into()),
        dims: vec![n],
        data_type: Some(1),
        raw_data: Some(vec![0u8; 4 * n as usize].into()),
        ..Default::default()
    });
    let y = g.output[0].name().to_string();
    let last = g.node.iter().position(|n| n.output.contains(&y)).unwrap();
    g.node[last].output = vec!["y.pre".into()];
    for (op, input, output) in [
        ("ReduceSum", vec!["ballast".to_string()], "ballast.sum"),
        ("Add", vec!["y.pre".into(), "ballast.sum".into()], &y),
    ] {
        g.node.push(NodeProto {
            input,
            output: vec![output.to_string()],
            name: Some(output.to_string()),
            op_type: Some(op.into()),
            ..Default::default()
        });
    }
}

#[test]
fn sigterm_during_a_write_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A model carrying 300 MB of weights makes the write last long enough to interrupt.
    let mut m = cnn();
    with_ballast(&mut m, 75_000_000);
    std::fs::write(d.join("big.onnx"), encode(&m)).unwrap();
    drop(m);
    let out = d.join("out.onnx");
    for attempt in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gn-transpile"))
            .args(args(&[&d.join("big.onnx"), &out, &"-t", &"1"]))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the temporary to appear, then interrupt.
        let start = Instant::now();
        let mut seen = false;
        while start.elapsed() < LIMIT {
            if std::fs::read_dir(d).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")) {
                seen = true;
                // SAFETY: signals our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let status = child.wait().unwrap();
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "attempt {attempt}: {left:?} left behind");
        if seen && status.code() == Some(128 + libc::SIGTERM) {
            // Interrupted before the rename: no OUT; after it: a complete one.
            if out.exists() {
                load(&out).expect("an OUT written before the interruption is complete");
            }
            return;
        }
        let _ = std::fs::remove_file(&out);
    }
    panic!("the write was never caught in progress");
}

#[test]
fn memory_stays_within_twice_the_model_for_a_large_weight() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut m = cnn();
    with_ballast(&mut m, 50_000_000);
    std::fs::write(d.join("large.onnx"), encode(&m)).unwrap();
    drop(m);
    let r = run_in(d, &args(&[&d.join("large.onnx"), &d.join("out.onnx"), &"-t", &"1"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let bound = 2.0 * mb(&d.join("large.onnx")) + 100.0;
    assert!(r.peak_mb <= bound, "peak {:.0} MB above {bound:.0} MB", r.peak_mb);
}

/// A chain `x → Add(+0)×k → Floor → Add(+0)×k → y` for the detection-time bound.
fn long_chain(k: usize) -> ModelProto {
    let mut nodes = Vec::new();
    let mut cur = "x".to_string();
    let mut push = |op: &str, inputs: Vec<String>, cur: &mut String| {
        let out = format!("v{}", nodes.len());
        nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: Some(out.clone()),
            op_type: Some(op.into()),
            ..Default::default()
        });
        *cur = out;
    };
    for _ in 0..k {
        let c = cur.clone();
        push("Add", vec![c, "zero".into()], &mut cur);
    }
    let c = cur.clone();
    push("Floor", vec![c], &mut cur);
    for _ in 0..k {
        let c = cur.clone();
        push("Add", vec![c, "zero".into()], &mut cur);
    }
    model_of(nodes, &cur, vec![tensor_f32("zero", &[], &[0.0])])
}

/// `k` QCFS sites in sequence on a vector of 4.
fn sequential_sites(k: usize) -> ModelProto {
    let mut nodes = Vec::new();
    let mut cur = "x".to_string();
    let init = vec![tensor_f32("half", &[], &[0.5]), tensor_f32("zero", &[], &[0.0]), tensor_f32("four", &[], &[4.0])];
    for i in 0..k {
        let mut step = |op: &str, extra: &[&str], cur: &mut String, tag: &str| {
            let out = format!("s{i}.{tag}");
            let mut input = vec![cur.clone()];
            input.extend(extra.iter().map(|s| s.to_string()));
            nodes.push(NodeProto {
                input,
                output: vec![out.clone()],
                name: Some(out.clone()),
                op_type: Some(op.into()),
                ..Default::default()
            });
            *cur = out;
        };
        // QCFS with θ = L = 4: clip(floor(x + 1/2), 0, 4).
        step("Add", &["half"], &mut cur, "add");
        step("Floor", &[], &mut cur, "floor");
        step("Clip", &["zero", "four"], &mut cur, "clip");
        step("Neg", &[], &mut cur, "neg");
        step("Neg", &[], &mut cur, "pos");
    }
    model_of(nodes, &cur, init)
}

fn model_of(nodes: Vec<NodeProto>, output: &str, initializer: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            node: nodes,
            name: Some("g".into()),
            initializer,
            input: vec![gn_onnx::data::float_value_info("x", &[None, Some(4)])],
            output: vec![gn_onnx::data::float_value_info(output, &[None, Some(4)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn detection_is_linear_on_long_chains_and_many_sites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A Floor between 2,000 Adds on each side: refused (no clamp) well within the limit.
    std::fs::write(d.join("chain.onnx"), encode(&long_chain(2000))).unwrap();
    let r = refused_in(d, args(&[&d.join("chain.onnx"), &d.join("out.onnx")]), "no QCFS activation", 1.0);
    assert!(r.seconds < 2.0, "{:.1} s", r.seconds);
    // 10,000 sequential sites: inspected within the limit.
    std::fs::write(d.join("sites.onnx"), encode(&sequential_sites(10_000))).unwrap();
    let r = run_in(d, &args(&[&"inspect", &d.join("sites.onnx")]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("QCFS sites: 10000"), "{}", &r.stdout[..r.stdout.len().min(300)]);
    assert!(r.seconds < 5.0, "{:.1} s", r.seconds);
}

fn write_npy_header(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_refuses_what_it_cannot_measure_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cnn_path = fixture("cnn_l4.onnx");
    let images: Vec<u8> = (0..2 * 784).flat_map(|i| ((i % 255) as f32 / 255.0).to_le_bytes()).collect();
    write_npy_header(&d.join("x.npy"), "<f4", "(2, 1, 28, 28)", &images);
    let x = d.join("x.npy");
    let verify = |model: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = args(&[&"verify", &model, &"--data", &x, &"--timesteps", &"1,2"]);
        a.extend(args(extra));
        a
    };
    // A header declaring 2^40 elements over 64 bytes: refused before allocating.
    write_npy_header(&d.join("huge.npy"), "<f4", "(1099511627776,)", &[0u8; 64]);
    refused_in(d, args(&[&"verify", &cnn_path, &"--data", &d.join("huge.npy")]), "but the file holds 64 bytes", 1.0);
    write_npy_header(&d.join("huge_labels.npy"), "<i8", "(1099511627776,)", &[0u8; 64]);
    refused_in(d, verify(&cnn_path, &[&"--labels", &d.join("huge_labels.npy")]), "but the file holds 64 bytes", 1.0);
    // A rank-0 array, and negative labels.
    write_npy_header(&d.join("scalar.npy"), "<f4", "()", &1f32.to_le_bytes());
    refused_in(d, args(&[&"verify", &cnn_path, &"--data", &d.join("scalar.npy")]), "not be a scalar", 1.0);
    let labels: Vec<u8> = [3i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_header(&d.join("neg.npy"), "<i8", "(2,)", &labels);
    refused_in(d, verify(&cnn_path, &[&"--labels", &d.join("neg.npy")]), "label 1 is -1", 1.0);
    // τ = 0 is refused before anything runs.
    let r = refused_in(d, verify(&cnn_path, &[&"--tau", &"0"]), "--tau must be between 1 and", 1.0);
    assert!(!r.stderr.contains("ANN"), "{}", r.stderr);
    // Two outputs, no outputs.
    let save = |name: &str, m: &ModelProto| {
        let p = d.join(name);
        std::fs::write(&p, encode(m)).unwrap();
        p
    };
    let mut m = cnn();
    let floor = first(&mut m, "Floor");
    let f = graph(&mut m).node[floor].output[0].clone();
    graph(&mut m).output.push(gn_onnx::data::float_value_info(&f, &[None]));
    let two = save("two.onnx", &m);
    refused_in(d, verify(&two, &[]), "verify compares one output, and the model has 2", 1.0);
    let mut m = cnn();
    graph(&mut m).output.clear();
    let none = save("none.onnx", &m);
    refused_in(d, verify(&none, &[]), "the graph has no outputs", 1.0);
    // A site whose value reaches no output: the only reachable part has no QCFS left.
    let mut m = cnn();
    let g = graph(&mut m);
    let first_conv = g.node.iter().position(|n| n.op_type() == "Conv").unwrap();
    let conv_out = g.node[first_conv].output[0].clone();
    g.output = vec![gn_onnx::data::float_value_info(&conv_out, &[None])];
    let dead = save("dead.onnx", &m);
    refused_in(d, verify(&dead, &[]), "no QCFS activation found", 1.0);
    // A site that writes the graph output itself.
    let mut m = cnn();
    let det = gn_transpile::detect::detect(&gn_onnx::Graph::new(m.graph.clone().unwrap()));
    let site_out = det.sites[0].output.clone();
    graph(&mut m).output = vec![gn_onnx::data::float_value_info(&site_out, &[None])];
    let direct = save("direct.onnx", &m);
    refused_in(d, verify(&direct, &[]), "writes the graph output", 1.0);
}

#[test]
fn usability_bare_names_single_causes_and_clean_error_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("cnn_l4.onnx"), d.join("in.onnx")).unwrap();
    // Bare file names, no "./".
    let r = run_in(d, &args(&[&"in.onnx", &"out.onnx", &"-t", &"1"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(d.join("out.onnx").exists());
    // An I/O error states its cause once.
    let r = refused_in(d, args(&[&"missing.onnx", &"other.onnx"]), "cannot read missing.onnx", 0.0);
    assert_eq!(r.stderr.matches("No such file or directory").count(), 1, "{}", r.stderr);
}

#[test]
fn unnamed_and_duplicate_node_names_survive_conversion() {
    // Found by the fuzzer: chain nodes were removed by name, taking every node of the
    // same (or no) name with them.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (file, rename) in [("unnamed.onnx", None), ("same.onnx", Some("n"))] {
        let mut m = cnn();
        for n in &mut graph(&mut m).node {
            n.name = rename.map(String::from);
        }
        std::fs::write(d.join(file), encode(&m)).unwrap();
        let r = run_in(d, &args(&[&d.join(file), &d.join("out.onnx"), &"-t", &"2"]));
        assert_eq!(r.code, Some(0), "{file}: {}", r.stderr);
        let r = run_in(d, &args(&[&"inspect", &d.join("out.onnx")]));
        assert_eq!(r.code, Some(0), "{file}: the emitted model is whole: {}", r.stderr);
    }
}

#[test]
fn calibration_memory_does_not_grow_with_the_number_of_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/calibration-images.npy"))
            .unwrap();
    let mut peaks = Vec::new();
    for n in [100usize, 500, 2000] {
        // 2,000 inputs: the 1,000 training images twice (the peak is what is measured).
        let views: Vec<_> = (0..n.div_ceil(1000)).map(|_| sample.view()).collect();
        let x = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
        let x = x.slice_axis(ndarray::Axis(0), (0..n).into()).to_owned();
        let file = d.join(format!("x{n}.npy"));
        ndarray_npy::write_npy(&file, &x).unwrap();
        let r = run_in(
            d,
            &args(&[&fixture("relu_resnet20.onnx"), &d.join("out.onnx"), &"--calibrate", &file, &"--per-channel"]),
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        eprintln!(
            "{n} calibration inputs ({:.1} MB of data): peak {:.1} MB in {:.1} s",
            mb(&file),
            r.peak_mb,
            r.seconds
        );
        peaks.push(r.peak_mb);
    }
    // Holding the activations of 2,000 inputs would take 300 MB. Past one group of
    // batches (128 inputs) the peak stays flat: measured 94, 103 and 106 MB.
    assert!(
        peaks[2] <= peaks[1] * 1.05 + 4.0,
        "peak {:.1} MB at 2,000 inputs against {:.1} MB at 500",
        peaks[2],
        peaks[1]
    );
    assert!(peaks[2] <= peaks[0] + 40.0, "peak {:.1} MB at 2,000 inputs against {:.1} MB at 100", peaks[2], peaks[0]);
}
