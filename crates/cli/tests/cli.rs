//! The command line: conversions, the audit, and one clear line for every bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gn_onnx::io::{encode, load};
use gn_onnx::proto::ModelProto;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gn-transpile")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a conversion that must fail: exit code 1, one line naming `needle`, no output file.
fn refused(args: &[&str], out: &Path, needle: &str) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{args:?}: expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{} was written", out.display());
}

fn modified(dir: &Path, name: &str, f: impl FnOnce(&mut ModelProto)) -> PathBuf {
    let mut m = load(&fixture("cnn_l4.onnx")).unwrap().model;
    f(&mut m);
    let path = dir.join(name);
    std::fs::write(&path, encode(&m)).unwrap();
    path
}

#[test]
fn help_shows_the_options_and_examples() {
    let o = run(&["--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["--tau", "--timesteps", "--neuron", "--anytime", "--allow-inexact", "--emit", "inspect", "Examples:"]
    {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn converts_a_fixture_and_summarises_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snn.onnx");
    let o = run(&[fixture("cnn_l4.onnx").to_str().unwrap(), out.to_str().unwrap(), "--tau", "4", "-t", "2", "-v"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("θ = ").count(), 3, "{err}");
    assert!(err.contains("L = 4"));
    assert!(err.contains("3 spiking layers of GN (τ = 4), T = 2"), "{err}");
    let snn = load(&out).unwrap().model;
    assert!(snn.metadata_props.iter().any(|p| p.key() == "gn_transpile.tau" && p.value() == "4"));
    // --fsync writes the same bytes (it only waits for the disk), and no temporary is left.
    let synced = dir.path().join("synced.onnx");
    let o = run(&[fixture("cnn_l4.onnx").to_str().unwrap(), synced.to_str().unwrap(), "-t", "2", "--fsync"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&synced).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Both emitted forms, read back by `inspect`: the custom-op form from its nodes, the
/// standard form from its metadata.
#[test]
fn inspect_reports_the_spiking_layers_of_either_emitted_form() {
    let dir = tempfile::tempdir().unwrap();
    for (form, needle) in [("custom-op", "custom-op nodes"), ("standard", "unrolled into standard ops")] {
        let out = dir.path().join(format!("{form}.onnx"));
        let input = fixture("cnn_l8.onnx");
        let args = [input.to_str().unwrap(), out.to_str().unwrap(), "-t", "3", "--tau", "2", "--emit", form];
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(&["inspect", out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(text.contains(&format!("τ = 2, T = 3, form {form}")), "{text}");
        assert!(text.contains(&format!("spiking layers: 3 ({needle})")), "{text}");
        // θ of the first site of cnn_l8 and its θ_GN = θ/τ.
        assert!(text.contains("θ = 1.514") && text.contains("θ_GN = 0.757"), "{text}");
        if form == "custom-op" {
            // The first layer's current (the image's) is the same at every step.
            assert_eq!(text.matches("GroupNeuronDirect  θ =").count(), 1, "{text}");
            assert_eq!(text.matches("GroupNeuron  θ =").count(), 2, "{text}");
            assert!(text.contains("T = 3  L = 8"), "{text}");
            assert!(text.contains("function gn.transpile::GroupNeuron: "), "{text}");
            assert!(text.contains("function gn.transpile::GroupNeuronDirect: "), "{text}");
        }
    }
}

/// The custom-op form reads its attributes with Constant's value_float (opset ≥ 12).
#[test]
fn custom_op_emission_needs_opset_12() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snn.onnx");
    let input = fixture("cnn_l4_legacy_op11.onnx");
    refused(&[input.to_str().unwrap(), out.to_str().unwrap(), "--emit", "custom-op"], &out, "opset 12 or later");
}

#[test]
fn inspect_lists_sites_and_writes_nothing() {
    let o = run(&["inspect", fixture("cnn_l4_gncode.onnx").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text.contains("QCFS sites: 3"), "{text}");
    assert!(text.contains("Floor → Sub → Add → Clip"), "{text}");
    assert!(text.contains("nodes not exact in time: 0"), "{text}");
}

#[test]
fn bad_inputs_get_one_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o = out.to_str().unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x0a\xff\xff\xff\xff\x0fnot a model").unwrap();
    refused(&[garbage.to_str().unwrap(), o], &out, "not a valid ONNX protobuf");
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    refused(&[empty.to_str().unwrap(), o], &out, "is empty");
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(fixture("cnn_l4.onnx")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    refused(&[truncated.to_str().unwrap(), o], &out, "truncated");
    refused(&["/no/such/model.onnx", o], &out, "cannot read /no/such/model.onnx");
    let cnn = fixture("cnn_l4.onnx");
    let cnn = cnn.to_str().unwrap();
    refused(&[cnn, o, "--tau", "0"], &out, "--tau must be between 1 and");
    refused(&[cnn, o, "--timesteps", "0"], &out, "--timesteps must be between 1 and");
    refused(&[cnn, o, "--timesteps", "100000"], &out, "--timesteps must be between 1 and");
    // OUT equal to IN, also through another spelling of the path.
    let copy = dir.path().join("in.onnx");
    std::fs::copy(cnn, &copy).unwrap();
    let alias = dir.path().join(".").join("in.onnx");
    let o2 = run(&[copy.to_str().unwrap(), alias.to_str().unwrap()]);
    assert_eq!(o2.status.code(), Some(1));
    assert!(stderr(&o2).contains("the input model is read from"), "{}", stderr(&o2));
    assert_eq!(std::fs::read(&copy).unwrap(), bytes, "the input is untouched");
}

#[test]
fn a_model_without_qcfs_says_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let relu = modified(dir.path(), "relu.onnx", |m| {
        for n in &mut m.graph.as_mut().unwrap().node {
            if n.op_type() == "Floor" {
                n.op_type = Some("Relu".into());
            }
        }
    });
    refused(
        &[relu.to_str().unwrap(), out.to_str().unwrap()],
        &out,
        "no QCFS activation found (found instead: Clip ×3, Relu ×3",
    );
}

#[test]
fn a_non_positive_threshold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let negative = modified(dir.path(), "negative.onnx", |m| {
        let g = m.graph.as_mut().unwrap();
        for t in &mut g.initializer {
            let v = gn_onnx::data::tensor_to_f64(t).unwrap_or_default();
            if v.len() == 1 && v[0] > 1.5 && v[0] < 2.0 {
                *t = gn_onnx::data::tensor_f32(t.name(), &t.dims.clone(), &[-v[0] as f32]);
            }
        }
        for n in &mut g.node {
            if n.op_type() == "Constant" {
                for a in &mut n.attribute {
                    if let Some(t) = &mut a.t {
                        let v = gn_onnx::data::tensor_to_f64(t).unwrap_or_default();
                        if v.len() == 1 && v[0] > 1.5 && v[0] < 2.0 {
                            // The first site's θ (1.96): make it negative.
                            *t = gn_onnx::data::tensor_f32(t.name(), &t.dims.clone(), &[-v[0] as f32]);
                        }
                    }
                }
            }
        }
    });
    refused(&[negative.to_str().unwrap(), out.to_str().unwrap(), "-t", "2"], &out, "θ is not positive");
}

#[test]
fn maxpool_on_spikes_converts_exact_in_rate_and_inspect_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let maxpool = modified(dir.path(), "maxpool.onnx", |m| {
        for n in &mut m.graph.as_mut().unwrap().node {
            if n.op_type() == "AveragePool" {
                n.op_type = Some("MaxPool".into());
                n.attribute.retain(|a| a.name() != "count_include_pad");
            }
        }
    });
    let m = maxpool.to_str().unwrap();
    let o = run(&[m, out.to_str().unwrap(), "-t", "3", "-v"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(err.matches("moved in front of spiking layer").count(), 1, "{err}");
    let audit = run(&["inspect", m]);
    let text = String::from_utf8_lossy(&audit.stdout);
    // The first pool reads a layer fed by the image: it moves in front of that layer.
    assert!(text.contains("moved: MaxPool '/features/features.2/AveragePool' moved in front of"), "{text}");
    assert!(text.contains("nodes exact in rate: 1"), "{text}");
    assert!(text.contains("max-pool over running spike counts"), "{text}");
    assert!(text.contains("nodes not exact in time: 0"), "{text}");
}

#[test]
fn verify_reports_mse_and_accuracy_per_timestep_on_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/t10k-images-idx3-ubyte.gz");
    let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/t10k-labels-idx1-ubyte.gz");
    let (_, pixels) = gn_onnx::data::read_idx_u8(&images).unwrap();
    let (_, y) = gn_onnx::data::read_idx_u8(&labels).unwrap();
    let x = ndarray::Array4::from_shape_vec(
        (40, 1, 28, 28),
        pixels[..40 * 784].iter().map(|&p| p as f32 / 255.0).collect(),
    )
    .unwrap();
    let y = ndarray::Array1::from_vec(y[..40].iter().map(|&l| l as i64).collect());
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    ndarray_npy::write_npy(&xp, &x).unwrap();
    ndarray_npy::write_npy(&yp, &y).unwrap();
    let o = run(&[
        "verify",
        fixture("cnn_l4.onnx").to_str().unwrap(),
        "--data",
        xp.to_str().unwrap(),
        "--labels",
        yp.to_str().unwrap(),
        "--timesteps",
        "1,2",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("| GN τ=4 | 0.0000 |"), "τ = L = 4 at T = 1 is exact: {out}");
    assert!(out.contains("top-1 agreement 1.0000"), "{out}");
    assert!(out.contains("top-1 accuracy (%); ANN"), "{out}");
    assert!(out.contains("cost per input (first 40 inputs; energy 45nm-fp32"), "{out}");
    let (x, y) = (xp.to_str().unwrap(), yp.to_str().unwrap());
    let model = fixture("cnn_l4.onnx");
    let model = model.to_str().unwrap();
    // The figures as JSON, the energy table named; the per-layer tables on request.
    let o = run(&["verify", model, "--data", x, "--labels", y, "--timesteps", "1", "--energy", "45nm-int8", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(json["operations"]["energy"]["name"], "45nm-int8");
    let o = run(&["verify", model, "--data", x, "--timesteps", "1", "--energy", "mac=2,ac=0.5", "--per-layer"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("weighted ops (GN τ=4, T=1)"), "{out}");
    // Accuracy for energy at τ = 1 (IF), 2, 4, and its chart, written whole.
    let svg = dir.path().join("pareto.svg");
    let o = run(&["verify", model, "--data", x, "--labels", y, "--timesteps", "1,2", "--pareto", "1,2,4", "--plot"]);
    assert_eq!(o.status.code(), Some(2), "--plot needs a file: {}", stderr(&o));
    let o = run(&[
        "verify",
        model,
        "--data",
        x,
        "--labels",
        y,
        "--timesteps",
        "1,2",
        "--pareto",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("accuracy for energy (accuracy and MSE on 40 inputs"), "{out}");
    let table = &out[out.find("accuracy for energy").unwrap()..];
    for network in ["IF", "GN τ=2", "GN τ=4", "GN τ=8"] {
        assert_eq!(table.matches(&format!("\n| {network} | ")).count(), 2, "{network}: {table}");
    }
    let chart = std::fs::read_to_string(&svg).expect("--plot writes the chart");
    assert!(chart.starts_with("<svg") && chart.contains("GN τ=8") && chart.contains(r#"r="7""#), "{chart}");
    // --plot without --pareto, and a chart over an input, are refused before any work.
    let o = run(&["verify", model, "--data", x, "--plot", svg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["verify", model, "--data", x, "--pareto", "--plot", x]);
    assert!(!o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
    assert!(Path::new(x).metadata().unwrap().len() > 1000, "the inputs are untouched");
    let o = run(&["verify", model, "--data", x, "--pareto", "0,2"]);
    assert!(!o.status.success() && stderr(&o).contains("--pareto"), "{}", stderr(&o));
    // A malformed energy table is one line and exit code 2 (clap), before any work.
    for bad in ["7nm", "mac=1", "mac=1,ac=-2", "mac=x,ac=1"] {
        let o = run(&["verify", model, "--data", x, "--energy", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("energy"), "{bad}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{bad}");
    }
}

#[test]
fn the_stateful_form_lists_its_states_and_refuses_a_fixed_t() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("step.onnx");
    let (input, output) = (fixture("cnn_l4.onnx"), out.to_str().unwrap().to_string());
    refused(&[input.to_str().unwrap(), &output, "--emit", "stateful", "-t", "4"], &out, "--timesteps does not apply");
    refused(&[input.to_str().unwrap(), &output, "--emit", "stateful", "--anytime"], &out, "--anytime does not apply");
    let o = run(&[input.to_str().unwrap(), &output, "--emit", "stateful"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 spiking layers of GN (τ = 4), one step per call"), "{}", stderr(&o));
    let o = run(&["inspect", &output]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("form stateful"), "{text}");
    assert!(text.contains("state tensors: 5"), "{text}");
    assert!(text.contains("membrane.next  [N, 32, 28, 28]  init 0.5"), "{text}");
}

fn calibration_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/calibration-images.npy")
}

#[test]
fn a_relu_network_converts_with_calibrate_and_the_model_records_its_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let (ann, out) = (fixture("relu_cnn.onnx"), dir.path().join("snn.onnx"));
    let (ann, out_s) = (ann.to_str().unwrap(), out.to_str().unwrap());
    refused(&[ann, out_s], &out, "--calibrate x.npy");
    let cal = calibration_images();
    let o = run(&[ann, out_s, "--calibrate", cal.to_str().unwrap(), "--per-channel", "--percentile", "99.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("θ per channel"), "{}", stderr(&o));
    let o = run(&["inspect", out_s]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("θ calibrated: percentile 99.5 of each activation over 1000 inputs, per channel"), "{text}");
    assert!(text.contains("ReLU"), "{text}");
    // inspect on the ReLU network names the sites and the flag.
    let o = run(&["inspect", ann]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ReLU-family activations: 3") && text.contains("--calibrate"), "{text}");
}

#[test]
fn calibration_inputs_and_options_that_cannot_work_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snn.onnx");
    let out_s = out.to_str().unwrap();
    let relu = fixture("relu_cnn.onnx");
    let relu = relu.to_str().unwrap();
    let npy = |name: &str, shape: &[usize]| {
        let path = dir.path().join(name);
        ndarray_npy::write_npy(&path, &ndarray::ArrayD::<f32>::zeros(shape)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let channels = npy("three_channels.npy", &[4, 3, 28, 28]);
    refused(&[relu, out_s, "--calibrate", &channels], &out, "takes [N, 1, 28, 28]");
    let cal = calibration_images();
    let cal = cal.to_str().unwrap();
    refused(&[relu, out_s, "--calibrate", cal, "--percentile", "0"], &out, "--percentile must be above 0");
    refused(&[relu, out_s, "--calibrate", "/dev/zero"], &out, "not a regular file");
    let qcfs = fixture("cnn_l4.onnx");
    refused(&[qcfs.to_str().unwrap(), out_s, "--calibrate", cal], &out, "carry their trained θ");
    // --percentile and --per-channel without --calibrate are usage errors.
    let o = run(&[relu, out_s, "--per-channel"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `export-nir` runs a Python: OUT appears only when it wrote the graph, and its refusal
/// or a missing package comes back as one line, with nothing written. (The export itself
/// is tested in Python, where the `nir` package is: crates/gn-transpile-py/tests.)
#[test]
fn export_nir_reports_what_python_says_and_writes_only_a_whole_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snn.nir");
    let fake = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let model = fixture("cnn_l4.onnx");
    let export = |python: &Path| {
        run(&["export-nir", model.to_str().unwrap(), out.to_str().unwrap(), "--python", python.to_str().unwrap()])
    };
    // argv: -c PROGRAM IN TEMPORARY options…: the graph goes to the temporary ($4).
    let writes = fake("writes", "printf graph > \"$4\"");
    let o = export(&writes);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "graph");
    std::fs::remove_file(&out).unwrap();
    for (name, body, needle) in [
        ("refuses", "echo 'to_nir: node pool (MaxPool): NIR has no max-pool node' >&2; exit 2", "cannot export"),
        (
            "lacks",
            "echo \"needs the Python packages gn_transpile and nir (No module named 'nir')\" >&2; exit 3",
            "pip install nir",
        ),
        ("crashes", "printf half > \"$4\"; echo 'Traceback: boom' >&2; exit 1", "failed: Traceback: boom"),
    ] {
        let o = export(&fake(name, body));
        assert_eq!(o.status.code(), Some(1), "{name}");
        let e = stderr(&o);
        assert!(e.contains(needle) && e.lines().count() == 1, "{name}: {e}");
        assert!(!out.exists(), "{name}: nothing written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 4, "only the fake Pythons: {leftovers:?}");
    let o = export(Path::new("/nonexistent/python"));
    assert!(stderr(&o).contains("cannot be started"), "{}", stderr(&o));
}
