//! The conversion, end to end on the fixtures and on small networks built here:
//! docs/design.md §4's invariants, agreement with an independent reference simulator, and
//! the emitted graph's text snapshot.

use gn_onnx::proto::ModelProto;
use gn_tests::reference::{self, matrix, mlp, Layer, Model};
use gn_tests::{argmax_rows, base_models, fixture_models, mse, run_tract, run_tract_2d, step, test_set, ModelBuilder};
use gn_transpile::{transpile, NeuronKind, Options};
use ndarray::Array2;

fn options(neuron: NeuronKind, tau: u32, timesteps: usize, anytime: bool) -> Options {
    Options { neuron, tau, timesteps, anytime, allow_inexact: false, ..Default::default() }
}

fn convert(model: &ModelProto, o: &Options) -> ModelProto {
    transpile(model, o).unwrap_or_else(|e| panic!("conversion failed: {e}")).0
}

/// docs/design.md §4.1: GN with τ = L at T = 1 reproduces the QCFS ANN.
#[test]
fn gn_with_tau_equal_to_l_at_one_step_reproduces_every_fixture() {
    let (x, _) = test_set(gn_tests::image_count());
    for path in fixture_models() {
        let ann = gn_onnx::io::load(&path).unwrap().model;
        let (_, report) = transpile(&ann, &Options::default()).unwrap();
        let levels = report.detection.sites[0].levels;
        assert!(report.detection.sites.iter().all(|s| s.levels == levels));
        let snn = convert(&ann, &options(NeuronKind::Gn, levels, 1, false));
        let expected = run_tract(&ann, &x, 500).remove(0);
        let got = run_tract(&snn, &x, 500).remove(0);
        let (a, b) = (argmax_rows(&expected), argmax_rows(&got));
        let flips: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(got.shape(), expected.shape());
        let rel = gn_verify::relative_mse(&got, &expected);
        eprintln!("{}: relative MSE {rel:.2e}, top-1 flips {flips:?}", path.display());
        // Flips can only come from float rounding at exact ties of floor(x·L/θ + 1/2).
        assert!(flips.len() * 1000 <= a.len(), "{}: {} top-1 flips", path.display(), flips.len());
        assert!(rel <= 1e-6, "{}: relative MSE {rel}", path.display());
    }
}

#[test]
fn emitted_graph_agrees_with_the_reference_simulator() {
    let x = matrix(64, 6, 99, 2.0);
    for (levels, seed) in [(4, 1), (8, 7)] {
        let (layers, model) = mlp(levels, seed);
        let ann = run_tract_2d(&model, &x).remove(0);
        let reference_ann = reference::ann(&layers, &x).into_dyn();
        assert!(gn_tests::max_abs_diff(&ann, &reference_ann) < 1e-5, "the reference ANN is the ONNX model");
        for (neuron, model_kind, tau) in [
            (NeuronKind::If, Model::If, 1),
            (NeuronKind::Gn, Model::Group { tau: 4 }, 4),
            (NeuronKind::Gn, Model::Group { tau: 2 }, 2),
        ] {
            let expected = reference::snn(&layers, &x, model_kind, 8);
            let snn = convert(&model, &options(neuron, tau, 8, true));
            let outputs = run_tract_2d(&snn, &x);
            for (t, want) in expected.iter().enumerate() {
                let got = step(&outputs[1], t);
                let diff = gn_tests::max_abs_diff(&got, &want.clone().into_dyn());
                assert!(diff <= 1e-5, "{neuron:?} τ={tau} L={levels}: step {} differs by {diff}", t + 1);
            }
            for timesteps in 1..=8 {
                let direct = run_tract_2d(&convert(&model, &options(neuron, tau, timesteps, false)), &x).remove(0);
                let diff = gn_tests::max_abs_diff(&direct, &expected[timesteps - 1].clone().into_dyn());
                assert!(diff <= 1e-5, "{neuron:?} τ={tau} T={timesteps}: readout differs by {diff}");
            }
        }
    }
}

/// docs/design.md §4.2: IF at T = 1 is QCFS with L = 1.
/// The harness's operation counts on the MLP: MACs from the layer shapes, and SOPs equal
/// to the reference simulator's member spikes times the fan-out of the next layer.
#[test]
fn synaptic_operations_match_the_reference_spike_counts() {
    use gn_verify::{measure, Spec};
    let (layers, model) = mlp(4, 7);
    let x = matrix(64, 6, 99, 2.0);
    let spec = Spec {
        tau: 4,
        timesteps: vec![1, 2, 4],
        batch: 64,
        short_max: 4,
        long_images: 64,
        layer_images: 64,
        layer_timesteps: vec![1, 2, 4],
        calibration: None,
        energy: gn_verify::EnergyTable::default(),
        pareto_taus: Vec::new(),
    };
    let m = measure(&model, &x.clone().into_dyn(), None, &spec, &|_, _, _| {}).unwrap();
    let ops = m.operations.expect("the MLP has weighted layers");
    assert_eq!(ops.ann_macs, 6 * 12 + 12 * 10 + 10 * 4);
    let first = 6 * 12;
    for (model, kind, tau) in [(Model::If, NeuronKind::If, 1), (Model::Group { tau: 4 }, NeuronKind::Gn, 4)] {
        let (_, spikes) = reference::simulate(&layers, &x, model, 4);
        for t in [1, 2, 4] {
            let cost = ops.cost(kind, t).expect("a cost per network and T");
            // Fan-outs: the first spiking layer feeds 10 outputs, the second 4. The first
            // layer reads the input once, whatever T.
            let expected = (spikes[t - 1][0] * 10 + spikes[t - 1][1] * 4) as f64 / 64.0;
            let got = cost.effective_acs;
            eprintln!("{model:?} T={t}: ACs {got:.3}, reference {expected:.3}");
            assert!((got - expected).abs() <= 1e-3 * expected.max(1.0), "{model:?} T={t}: {got} vs {expected}");
            assert_eq!(cost.effective_macs, first as f64);
            assert_eq!(cost.dense, (first + t * (12 * 10 + 10 * 4)) as f64);
            assert_eq!(cost.membrane_updates, (t * (12 + 10)) as f64);
            let reference_spikes = (spikes[t - 1][0] + spikes[t - 1][1]) as f64 / 64.0;
            assert!((cost.spikes - reference_spikes).abs() <= 1e-3 * reference_spikes.max(1.0));
            // A count of c member spikes is one event: events ≤ spikes, equal for IF.
            assert!(cost.events <= cost.spikes + 1e-9);
            if kind == NeuronKind::If {
                assert!((cost.events - cost.spikes).abs() <= 1e-9);
            }
            assert_eq!(cost.tau, tau);
            let e = gn_verify::EnergyTable::default();
            assert!((cost.energy_pj - (got * e.ac_pj + first as f64 * e.mac_pj)).abs() <= 1e-6 * cost.energy_pj);
        }
    }
}

#[test]
fn if_at_one_step_is_qcfs_with_one_level() {
    let x = matrix(128, 6, 5, 2.0);
    let (layers, model) = mlp(4, 3);
    let one_level: Vec<Layer> = layers
        .iter()
        .map(|l| match l {
            Layer::Qcfs { theta, .. } => Layer::Qcfs { theta: *theta, levels: 1 },
            other => other.clone(),
        })
        .collect();
    let expected = reference::ann(&one_level, &x).into_dyn();
    let got = run_tract_2d(&convert(&model, &options(NeuronKind::If, 1, 1, false)), &x).remove(0);
    assert!(gn_tests::max_abs_diff(&got, &expected) <= 1e-5);
}

/// docs/design.md §4.3: spike counts of the first spiking layer under a constant current.
#[test]
fn constant_current_spike_counts() {
    let theta = 1.5f32;
    let mut b = ModelBuilder::new(&[1]);
    let a = b.qcfs("input", theta, 4);
    let model = b.finish(&a, &[1]);
    let currents: Vec<f32> = (0..200).map(|i| -0.5 + i as f32 * 0.01137).collect();
    let x = Array2::from_shape_vec((currents.len(), 1), currents.clone()).unwrap();
    for timesteps in [1usize, 3, 4, 7, 16] {
        for (neuron, tau) in [(NeuronKind::If, 1u32), (NeuronKind::Gn, 4), (NeuronKind::Gn, 3)] {
            let out = run_tract_2d(&convert(&model, &options(neuron, tau, timesteps, false)), &x).remove(0);
            let unit = theta / tau as f32;
            for (i, &c) in currents.iter().enumerate() {
                let spikes = (out[[i, 0]] * timesteps as f32 / unit).round();
                let expected =
                    ((timesteps as f32 * c + unit / 2.0) / unit).floor().clamp(0.0, (tau as usize * timesteps) as f32);
                // Rounding may differ only where T·x + θ_GN/2 lands exactly on a level.
                let at_tie = (((timesteps as f32 * c + unit / 2.0) / unit).fract()).abs() < 1e-4;
                assert!(
                    spikes == expected || at_tie,
                    "{neuron:?} τ={tau} T={timesteps} x={c}: {spikes} spikes, docs/design.md §4.3 says {expected}"
                );
            }
        }
    }
}

/// docs/design.md §4.4 on the resnet20 fixture (L = 8, τ = 4): GN is closer to the ANN than IF at
/// small T, and both approach the ANN as T grows.
#[test]
fn resnet20_gn_beats_if_at_small_t() {
    let Some((_, path)) = base_models().into_iter().find(|(n, _)| n == "resnet20_l8") else {
        panic!("fixtures/models/resnet20_l8.onnx is missing");
    };
    let (x, _) = test_set(400);
    let ann = gn_onnx::io::load(&path).unwrap().model;
    let expected = run_tract(&ann, &x, 200).remove(0);
    let anytime = |neuron| run_tract(&convert(&ann, &options(neuron, 4, 32, true)), &x, 200).remove(1);
    let (gn, if_) = (anytime(NeuronKind::Gn), anytime(NeuronKind::If));
    let curve = |a: &ndarray::ArrayD<f32>| (0..32).map(|t| mse(&step(a, t), &expected)).collect::<Vec<_>>();
    let (gn, if_) = (curve(&gn), curve(&if_));
    eprintln!("GN MSE by T: {gn:.4?}\nIF MSE by T: {if_:.4?}");
    for t in [1, 2, 4, 8] {
        assert!(gn[t - 1] < if_[t - 1], "T={t}: GN {} is not below IF {}", gn[t - 1], if_[t - 1]);
    }
    assert!(gn[31] < 0.5 * gn[0], "GN at T=32 ({}) is not well below T=1 ({})", gn[31], gn[0]);
    assert!(if_[31] < 0.2 * if_[0], "IF at T=32 ({}) is not well below T=1 ({})", if_[31], if_[0]);
}

#[test]
fn the_emitted_graph_keeps_the_interface_and_records_the_conversion() {
    let path = gn_tests::fixtures().join("models/cnn_l4_dynamo_op18.onnx");
    let ann = gn_onnx::io::load(&path).unwrap().model;
    let snn = convert(&ann, &options(NeuronKind::Gn, 4, 4, true));
    let (g0, g1) = (ann.graph.as_ref().unwrap(), snn.graph.as_ref().unwrap());
    assert_eq!(g0.input, g1.input, "same inputs, names, types and symbolic batch");
    assert_eq!(g0.output[0], g1.output[0]);
    assert_eq!(g1.output[1].name(), "logits_anytime");
    assert_eq!(ann.opset_import, snn.opset_import, "the opset is kept");
    let meta = |k: &str| snn.metadata_props.iter().find(|p| p.key() == k).map(|p| p.value().to_string());
    assert_eq!(meta("gn_transpile.neuron").as_deref(), Some("gn"));
    assert_eq!(meta("gn_transpile.tau").as_deref(), Some("4"));
    assert_eq!(meta("gn_transpile.timesteps").as_deref(), Some("4"));
    assert!(meta("gn_transpile.layers").unwrap().contains("\"levels\":4"));
    assert!(g1.node.iter().all(|n| n.domain().is_empty()), "standard ONNX ops only");
    let output_shapes = gn_onnx::tract_bridge::output_shapes(&snn).unwrap();
    assert_eq!(output_shapes.len(), 2);
    assert!(output_shapes[1].starts_with("4,"), "anytime output is [T, batch, 10]: {output_shapes:?}");
}

/// The text of one emitted graph, so that a reviewer sees what a change does to the
/// output. Set UPDATE_SNAPSHOTS=1 to rewrite it.
#[test]
fn snapshot_of_an_emitted_graph() {
    let (_, model) = mlp(4, 1);
    let snn = convert(&model, &options(NeuronKind::Gn, 4, 2, false));
    let text = gn_onnx::Graph::new(snn.graph.unwrap()).render();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/mlp_gn_tau4_t2.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    similar_asserts::assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// The compact form of the same network: one GroupNeuron node per spiking layer, and the
/// model-local function that defines it.
#[test]
fn snapshot_of_a_custom_op_graph() {
    let (_, model) = mlp(4, 1);
    let o = Options { emit: gn_transpile::Emit::CustomOp, ..options(NeuronKind::Gn, 4, 2, false) };
    let snn = convert(&model, &o);
    let mut text = gn_onnx::Graph::new(snn.graph.clone().unwrap()).render();
    for f in &snn.functions {
        text.push_str(&gn_onnx::graph::render_function(f));
    }
    let opsets: Vec<String> = snn.opset_import.iter().map(|o| format!("{}={}", o.domain(), o.version())).collect();
    text.push_str(&format!("opset_import {}\nir_version {}\n", opsets.join(", "), snn.ir_version()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/mlp_gn_tau4_t2_custom_op.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    similar_asserts::assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// Gemm → QCFS → Reshape to [N, 3, 4] with the batch read by Shape → Gather from
/// `batch_source` (the spiking layer's output, or the network input) → Flatten → Gemm.
fn reshape_chain(from_input: bool) -> ModelProto {
    let mut b = ModelBuilder::new(&[6]);
    let h = b.gemm("input", &matrix(12, 6, 3, 0.8), &[0.1; 12]);
    let h = b.qcfs(&h, 1.1, 4);
    let source = if from_input { "input".to_string() } else { h.clone() };
    let shape = b.node("Shape", &[&source], vec![]);
    let zero = b.constant_i64(&[1], &[0]);
    let batch = b.node("Gather", &[&shape, &zero], vec![gn_onnx::graph::attr::int("axis", 0)]);
    let tail = b.constant_i64(&[2], &[3, 4]);
    let target = b.node("Concat", &[&batch, &tail], vec![gn_onnx::graph::attr::int("axis", 0)]);
    let r = b.node("Reshape", &[&h, &target], vec![]);
    let f = b.node("Flatten", &[&r], vec![gn_onnx::graph::attr::int("axis", 1)]);
    let y = b.gemm(&f, &matrix(4, 12, 5, 0.8), &[0.0; 4]);
    b.finish(&y, &[4])
}

/// docs/design.md §3's shape rule: a batch size read from a folded tensor is T·N and lowers as
/// it stands; one read from a time-invariant tensor is N, and the lower pass computes it
/// again with T·N where it shapes a folded tensor. Both equal the plain MLP's SNN.
#[test]
fn shapes_computed_from_the_batch_follow_their_provenance() {
    let x = matrix(32, 6, 11, 2.0);
    // The reshape round trip is the identity on values: the SNN equals the plain MLP's SNN.
    let mut plain = ModelBuilder::new(&[6]);
    let h = plain.gemm("input", &matrix(12, 6, 3, 0.8), &[0.1; 12]);
    let h = plain.qcfs(&h, 1.1, 4);
    let y = plain.gemm(&h, &matrix(4, 12, 5, 0.8), &[0.0; 4]);
    let plain = plain.finish(&y, &[4]);
    for from_input in [false, true] {
        let chain = reshape_chain(from_input);
        for t in [1, 4] {
            let a = run_tract_2d(&convert(&chain, &options(NeuronKind::Gn, 4, t, false)), &x).remove(0);
            let b = run_tract_2d(&convert(&plain, &options(NeuronKind::Gn, 4, t, false)), &x).remove(0);
            let diff = gn_tests::max_abs_diff(&a, &b);
            assert!(diff <= 1e-6, "batch from the input {from_input}, T={t}: {diff}");
        }
    }
    // The batch-scaled copy of the shape chain is there, beside the original.
    let snn = convert(&reshape_chain(true), &options(NeuronKind::Gn, 4, 4, false));
    assert!(snn.graph.unwrap().node.iter().any(|n| n.op_type() == "Mul" && n.output[0].ends_with(".folded")));
}

/// Declares the batch of an MLP's input `[·, 6]` and output `[·, 4]`: a number (static
/// batch) or `None` (symbolic).
fn set_batch(m: &mut ModelProto, n: Option<i64>) {
    let g = m.graph.as_mut().unwrap();
    g.input[0] = gn_onnx::data::float_value_info("input", &[n, Some(6)]);
    g.output[0] = gn_onnx::data::float_value_info("output", &[n, Some(4)]);
}

/// The MLP of [`reshape_chain`] with a static batch `n`, as the legacy exporter writes it
/// without `dynamic_axes`: input `[n, 6]`, output `[n, 4]`, and the reshape target
/// folded into the constant `[n, 3, 4]`.
fn static_batch_mlp(n: i64, target_batch: i64) -> ModelProto {
    let mut b = ModelBuilder::new(&[6]);
    let h = b.gemm("input", &matrix(12, 6, 3, 0.8), &[0.1; 12]);
    let h = b.qcfs(&h, 1.1, 4);
    let target = b.constant_i64(&[3], &[target_batch, 3, 4]);
    let r = b.node("Reshape", &[&h, &target], vec![]);
    let f = b.node("Flatten", &[&r], vec![gn_onnx::graph::attr::int("axis", 1)]);
    let y = b.gemm(&f, &matrix(4, 12, 5, 0.8), &[0.0; 4]);
    let mut m = b.finish(&y, &[4]);
    set_batch(&mut m, Some(n));
    m
}

#[test]
fn a_static_batch_model_converts_and_keeps_its_shapes() {
    let x = matrix(5, 6, 11, 2.0);
    let ann = static_batch_mlp(5, 5);
    let want = run_tract_2d(&ann, &x).remove(0);
    for t in [1, 4] {
        let o = options(NeuronKind::Gn, 4, t, true);
        let snn = convert(&ann, &o);
        let g = snn.graph.as_ref().unwrap();
        // The interface is the ANN's, static batch included; the anytime output is [T, 5, 4].
        assert_eq!(g.input[0], ann.graph.as_ref().unwrap().input[0]);
        assert_eq!(g.output[0], ann.graph.as_ref().unwrap().output[0]);
        let outs = run_tract_2d(&snn, &x);
        assert_eq!(outs[0].shape(), &[5, 4]);
        assert_eq!(outs[1].shape(), &[t, 5, 4]);
        if t == 1 {
            // τ = L = 4 at T = 1 is the ANN.
            assert!(gn_tests::max_abs_diff(&outs[0], &want) <= 1e-5, "{}", gn_tests::max_abs_diff(&outs[0], &want));
        }
        // The same network with a dynamic batch gives the same values.
        let dynamic = convert(&reshape_like_dynamic(), &o);
        let d = run_tract_2d(&dynamic, &x).remove(0);
        assert!(gn_tests::max_abs_diff(&outs[0], &d) <= 1e-6, "T={t}");
    }
    // A static batch so large that T times it overflows is refused, not wrapped.
    let huge = i64::MAX / 2;
    let err = transpile(&static_batch_mlp(huge, huge), &options(NeuronKind::Gn, 4, 4, false)).expect_err("refused");
    assert!(err.to_string().contains("overflows"), "{err}");
    // A leading entry that is neither 0, -1 nor the static batch reshapes each step's
    // rows as the ANN does: the node runs once per step, named by inspect.
    let ann = static_batch_mlp(5, 2);
    transpile(&ann, &options(NeuronKind::Gn, 4, 4, false)).expect("converts");
    let audit = gn_transpile::inspect::audit(&ann).unwrap();
    assert_eq!(audit.per_step.len(), 1, "{:?}", audit.per_step);
    assert!(audit.per_step[0].reason.contains("the model's static batch 5"), "{:?}", audit.per_step);
}

/// A static-batch MLP (batch `n`) whose constants carry the batch, as constant folding
/// leaves them in legacy exports: an Expand of the spikes to `[n, 12]`, a Concat along
/// features with `ConstantOfShape([n, 4])`, and a per-sample bias initializer `[n, 16]`.
fn batch_constants_mlp(n: i64) -> ModelProto {
    let mut b = ModelBuilder::new(&[6]);
    let h = b.gemm("input", &matrix(12, 6, 3, 0.8), &[0.1; 12]);
    let h = b.qcfs(&h, 1.1, 4);
    let shape = b.constant_i64(&[2], &[n, 12]);
    let e = b.node("Expand", &[&h, &shape], vec![]);
    let zeros_shape = b.constant_i64(&[2], &[n, 4]);
    let fill = gn_onnx::graph::attr::tensor("value", gn_onnx::data::tensor_f32("", &[1], &[0.25]));
    let z = b.node("ConstantOfShape", &[&zeros_shape], vec![fill]);
    let cat = b.node("Concat", &[&e, &z], vec![gn_onnx::graph::attr::int("axis", 1)]);
    let bias: Vec<f32> = (0..n * 16).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.05).collect();
    let bias = b.constant(&[n, 16], &bias);
    let sum = b.node("Add", &[&cat, &bias], vec![]);
    let h = b.qcfs(&sum, 1.3, 4);
    let y = b.gemm(&h, &matrix(4, 16, 5, 0.8), &[0.0; 4]);
    let mut m = b.finish(&y, &[4]);
    set_batch(&mut m, Some(n));
    m
}

/// Constants that hold the static batch where it lines up with the batch axis are
/// rewritten (Expand's [N, …] becomes [1, …]) or tiled T times (ConstantOfShape, a
/// per-sample initializer): the SNN keeps the ANN's shapes, is the ANN at τ = L, T = 1,
/// and keeps every sample to itself at every T.
#[test]
fn constants_that_carry_a_static_batch_are_rebatched() {
    let x = matrix(3, 6, 11, 2.0);
    let ann = batch_constants_mlp(3);
    let want = run_tract_2d(&ann, &x).remove(0);
    for t in [1, 2, 4] {
        for emit in [gn_transpile::Emit::Standard, gn_transpile::Emit::CustomOp] {
            let o = Options { emit, ..options(NeuronKind::Gn, 4, t, true) };
            let snn = convert(&ann, &o);
            let outs = run_tract_2d(&snn, &x);
            assert_eq!(outs[0].shape(), &[3, 4]);
            assert_eq!(outs[1].shape(), &[t, 3, 4]);
            if t == 1 {
                let d = gn_tests::max_abs_diff(&outs[0], &want);
                assert!(d <= 1e-5, "{emit:?}: τ = L at T = 1 is the ANN: {d}");
            }
            // Changing sample 0 leaves samples 1 and 2 alone: the tiled constants pair
            // each step's sample with its own row.
            let mut x2 = x.clone();
            x2.row_mut(0).fill(-3.0);
            let other = run_tract_2d(&snn, &x2).remove(0);
            let rows = |a: &ndarray::ArrayD<f32>| a.slice_axis(ndarray::Axis(0), (1..3).into()).to_owned();
            assert_eq!(rows(&outs[0]), rows(&other), "{emit:?} T={t}");
            assert_ne!(outs[0].index_axis(ndarray::Axis(0), 0), other.index_axis(ndarray::Axis(0), 0));
        }
    }
}

/// [`static_batch_mlp`] with a dynamic batch (target `[0, 3, 4]`).
fn reshape_like_dynamic() -> ModelProto {
    let mut m = static_batch_mlp(5, 0);
    set_batch(&mut m, None);
    m
}
