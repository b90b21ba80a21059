//! ReLU networks (`--calibrate`): θ set from the activations on training images, and the
//! converted network is what the spec says it is. At T = 1 a Group Neuron of τ members
//! is the ReLU quantized to τ levels of θ/τ, so GN τ, T = 1 must reproduce the ReLU
//! network with every activation replaced by θ/τ · clip(floor(x·τ/θ + 1/2), 0, τ), the
//! calibrated θ per layer or per channel.

use std::sync::Arc;

use gn_onnx::data::tensor_f32;
use gn_onnx::proto::{ModelProto, NodeProto};
use gn_tests::{argmax_rows, calibration_images, relu_models, run_tract, test_set};
use gn_transpile::calibrate::Calibration;
use gn_transpile::tract_calibrate::{calibrate, calibrate_file, CalibrationSpec};
use gn_transpile::{transpile, NeuronKind, Options};
use ndarray::{ArrayD, Axis};

fn load(path: &std::path::Path) -> ModelProto {
    gn_onnx::io::load(path).unwrap().model
}

fn sample(n: usize) -> ArrayD<f32> {
    gn_verify::read_npy_inputs(&calibration_images()).unwrap().slice_axis(Axis(0), (0..n).into()).to_owned()
}

fn spec(per_channel: bool, batch: usize) -> CalibrationSpec {
    CalibrationSpec { per_channel, batch, ..Default::default() }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{output}.node")),
        op_type: Some(op.into()),
        ..Default::default()
    }
}

/// The ReLU network with each calibrated activation quantized to `levels` levels of θ/levels.
fn quantized(ann: &ModelProto, calibration: &Calibration, levels: f32) -> ModelProto {
    let mut m = ann.clone();
    let g = m.graph.as_mut().unwrap();
    let mut nodes = Vec::new();
    for n in std::mem::take(&mut g.node) {
        let Some(t) = calibration.layers.iter().find(|t| n.output.first() == Some(&t.output)) else {
            nodes.push(n);
            continue;
        };
        let (x, y) = (n.input[0].clone(), t.output.clone());
        let thetas: Vec<f32> =
            if t.channels.is_empty() { vec![t.theta as f32] } else { t.channels.iter().map(|&c| c as f32).collect() };
        let mut dims = vec![1i64; t.rank];
        if !t.channels.is_empty() {
            dims[1] = thetas.len() as i64;
        } else {
            dims.clear();
        }
        let k = |s: &str| format!("{y}.q.{s}");
        g.initializer.push(tensor_f32(&k("scale"), &dims, &thetas.iter().map(|t| levels / t).collect::<Vec<_>>()));
        g.initializer.push(tensor_f32(&k("unit"), &dims, &thetas.iter().map(|t| t / levels).collect::<Vec<_>>()));
        g.initializer.push(tensor_f32(&k("half"), &[], &[0.5]));
        g.initializer.push(tensor_f32(&k("zero"), &[], &[0.0]));
        g.initializer.push(tensor_f32(&k("levels"), &[], &[levels]));
        nodes.push(node("Mul", &[&x, &k("scale")], &k("a")));
        nodes.push(node("Add", &[&k("a"), &k("half")], &k("b")));
        nodes.push(node("Floor", &[&k("b")], &k("c")));
        nodes.push(node("Clip", &[&k("c"), &k("zero"), &k("levels")], &k("d")));
        nodes.push(node("Mul", &[&k("d"), &k("unit")], &y));
    }
    g.node = nodes;
    m
}

#[test]
fn gn_at_one_step_is_the_relu_network_quantized_at_the_calibrated_theta() {
    let (x, _) = test_set(100);
    for path in relu_models() {
        let ann = load(&path);
        for per_channel in [false, true] {
            let c = Arc::new(calibrate(&ann, &sample(200), &spec(per_channel, 50), &|_, _| {}).unwrap());
            assert!(!c.layers.is_empty());
            for tau in [2u32, 8] {
                let options = Options {
                    neuron: NeuronKind::Gn,
                    tau,
                    timesteps: 1,
                    calibration: Some(c.clone()),
                    ..Default::default()
                };
                let snn = transpile(&ann, &options).unwrap().0;
                let got = run_tract(&snn, &x, 50).remove(0);
                let want = run_tract(&quantized(&ann, &c, tau as f32), &x, 50).remove(0);
                let rel = gn_verify::relative_mse(&got, &want);
                let flips = argmax_rows(&got).iter().zip(argmax_rows(&want)).filter(|(a, b)| **a != *b).count();
                eprintln!(
                    "{} per_channel={per_channel} τ={tau}: relative MSE {rel:.2e}, flips {flips}",
                    path.display()
                );
                // Differences can only come from float rounding at exact ties of the floor.
                assert!(rel <= 1e-6, "{}: relative MSE {rel}", path.display());
                assert!(flips <= 1, "{}: {flips} top-1 flips", path.display());
            }
        }
    }
}

#[test]
fn calibration_is_deterministic_whatever_the_batch_or_the_source() {
    let path = &relu_models()[0];
    let ann = load(path);
    for per_channel in [false, true] {
        let a = calibrate(&ann, &sample(150), &spec(per_channel, 7), &|_, _| {}).unwrap();
        let b = calibrate(&ann, &sample(150), &spec(per_channel, 64), &|_, _| {}).unwrap();
        assert_eq!(a, b, "θ must not depend on the batch");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.npy");
        ndarray_npy::write_npy(&file, &sample(150)).unwrap();
        let c = calibrate_file(&ann, &file, &spec(per_channel, 64), &|_, _| {}).unwrap();
        assert_eq!(a, c, "θ from a file equals θ from memory");
        assert_eq!(a.inputs, 150);
        for t in &a.layers {
            assert!(t.theta > 0.0 && t.theta <= t.max, "{t:?}");
            assert_eq!(t.channels.is_empty(), !per_channel);
        }
    }
}

#[test]
fn percentile_orders_the_thresholds_and_a_clip_bound_caps_them() {
    let path = &relu_models()[0];
    let mut ann = load(path);
    let x = sample(100);
    let at = |ann: &ModelProto, p: f64| {
        calibrate(ann, &x, &CalibrationSpec { percentile: p, ..spec(false, 50) }, &|_, _| {}).unwrap()
    };
    let (p99, p999, max) = (at(&ann, 99.0), at(&ann, 99.9), at(&ann, 100.0));
    for ((a, b), c) in p99.layers.iter().zip(&p999.layers).zip(&max.layers) {
        assert!(a.theta <= b.theta && b.theta <= c.theta, "{} {} {}", a.theta, b.theta, c.theta);
        assert_eq!(c.theta, c.max);
    }
    // The first Relu becomes Clip(0, c) with c below its 99.9th percentile: θ = c.
    let cap = (p999.layers[0].theta / 2.0) as f32;
    let g = ann.graph.as_mut().unwrap();
    let relu = g.node.iter().position(|n| n.op_type() == "Relu").unwrap();
    g.initializer.push(tensor_f32("cap.lo", &[], &[0.0]));
    g.initializer.push(tensor_f32("cap.hi", &[], &[cap]));
    g.node[relu].op_type = Some("Clip".into());
    g.node[relu].input.extend(["cap.lo".to_string(), "cap.hi".to_string()]);
    let capped = at(&ann, 99.9);
    assert_eq!(capped.layers[0].op, "Clip");
    assert_eq!(capped.layers[0].theta, cap as f64);
}

#[test]
fn a_relu_network_without_a_calibration_is_refused_with_the_flag_that_converts_it() {
    let ann = load(&relu_models()[0]);
    let err = transpile(&ann, &Options::default()).unwrap_err().to_string();
    assert!(err.contains("--calibrate"), "{err}");
    // A calibration computed on another model does not fit.
    let other = load(&relu_models()[1]);
    let c = calibrate(&other, &sample(20), &spec(false, 20), &|_, _| {}).unwrap();
    let options = Options { calibration: Some(Arc::new(c)), ..Default::default() };
    let err = transpile(&ann, &options).unwrap_err().to_string();
    assert!(err.contains("no θ for this activation"), "{err}");
}

/// θ per channel lives in the spiking layer: one `…PerChannel` node (custom-op form) or
/// one Div and one Mul by the unit of each channel (standard form), no Mul around the
/// layer. On tract, unoptimised, the custom-op model computes what the standard model
/// computes, bit for bit, GN and IF at T = 4.
#[test]
fn per_channel_layers_agree_across_the_emitted_forms() {
    let (x, _) = test_set(50);
    for path in relu_models() {
        let ann = load(&path);
        let c = Arc::new(calibrate(&ann, &sample(100), &spec(true, 50), &|_, _| {}).unwrap());
        for neuron in [NeuronKind::Gn, NeuronKind::If] {
            let options = Options { neuron, tau: 4, timesteps: 4, calibration: Some(c.clone()), ..Default::default() };
            let standard = transpile(&ann, &options).unwrap().0;
            let compact =
                transpile(&ann, &Options { emit: gn_transpile::Emit::CustomOp, ..options.clone() }).unwrap().0;
            let ops: Vec<&str> = compact.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
            let base = neuron.op_type();
            let layers = ops.iter().filter(|o| o.starts_with(base)).count();
            assert_eq!(layers, c.layers.len(), "{}: {ops:?}", path.display());
            assert!(ops.iter().filter(|o| o.starts_with(base)).all(|o| o.contains("PerChannel")), "{ops:?}");
            assert_eq!(ops.iter().filter(|o| **o == format!("{base}PerChannelDirect")).count(), 1, "{ops:?}");
            let names: Vec<&str> = compact.functions.iter().map(|f| f.name()).collect();
            assert!(names.contains(&format!("{base}PerChannel").as_str()), "{names:?}");
            let a = gn_tests::run_tract_with(&standard, &x, 50, false).remove(0);
            let b = gn_tests::run_tract_with(&compact, &x, 50, false).remove(0);
            let d = gn_tests::max_abs_diff(&a, &b);
            eprintln!("{} {neuron:?} per channel, T = 4: {layers} layers, max |Δ| {d:.2e}", path.display());
            assert_eq!(d, 0.0, "{}: {neuron:?}", path.display());
        }
    }
}

/// A custom-op model whose per-channel thresholds were tampered with fails on tract with
/// a line naming the op and the reason: a θ factor that is not positive, a tensor that is
/// not `[1, C, 1, …]`.
#[test]
fn tampered_per_channel_thresholds_fail_cleanly_on_tract() {
    let ann = load(&relu_models()[0]);
    let c = Arc::new(calibrate(&ann, &sample(50), &spec(true, 50), &|_, _| {}).unwrap());
    let options =
        Options { timesteps: 2, emit: gn_transpile::Emit::CustomOp, calibration: Some(c), ..Default::default() };
    let compact = transpile(&ann, &options).unwrap().0;
    let (x, _) = test_set(2);
    let x = x.into_dyn();
    let layer = compact.graph.as_ref().unwrap().node.iter().find(|n| n.op_type() == "GroupNeuronPerChannel").unwrap();
    let theta = layer.input[1].clone();
    let tamper = |f: &dyn Fn(&mut gn_onnx::proto::TensorProto)| {
        let mut m = compact.clone();
        let t = m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name() == theta).unwrap();
        f(t);
        let plan = gn_transpile::tract_ops::load(&m, false).map_err(|e| e.to_string());
        plan.and_then(|p| p.run(vec![x.clone()]).map_err(|e| e.to_string())).expect_err("the run must fail")
    };
    let negative = tamper(&|t| {
        let mut v: Vec<f32> = gn_onnx::data::tensor_to_f64(t).unwrap().iter().map(|&v| v as f32).collect();
        v[0] = -1.0;
        *t = tensor_f32(t.name(), &t.dims.clone(), &v);
    });
    assert!(negative.contains("GroupNeuronPerChannel: a channel's θ factor is -1"), "{negative}");
    let flat = tamper(&|t| {
        let v: Vec<f32> = gn_onnx::data::tensor_to_f64(t).unwrap().iter().map(|&v| v as f32).collect();
        *t = tensor_f32(t.name(), &[v.len() as i64], &v);
    });
    assert!(flat.contains("must be [1, C, 1, …]"), "{flat}");
}
