//! `--emit stateful`: one call is one step. t calls reproduce row t of the unrolled
//! `--anytime` model; an input that changes at each step gives what the reference
//! simulator computes from the neuron equations.

use gn_onnx::proto::ModelProto;
use gn_tests::reference::{self, matrix, mlp, Model};
use gn_tests::{base_models, max_abs_diff, step, test_set};
use gn_transpile::metadata::{states, StateDim};
use gn_transpile::{transpile, Emit, NeuronKind, Options};
use gn_verify::run_stateful;
use ndarray::ArrayD;

fn convert(model: &ModelProto, options: &Options) -> ModelProto {
    transpile(model, options).unwrap_or_else(|e| panic!("conversion failed: {e}")).0
}

fn stateful(neuron: NeuronKind, tau: u32) -> Options {
    Options { neuron, tau, emit: Emit::Stateful, ..Default::default() }
}

fn anytime(neuron: NeuronKind, tau: u32, timesteps: usize) -> Options {
    Options { neuron, tau, timesteps, anytime: true, ..Default::default() }
}

/// Runs the stateful conversion of `ann` for `timesteps` calls on the same input and
/// compares call t with row t of the unrolled anytime output; returns the largest
/// difference and the number of rows whose top-1 differs.
fn against_anytime(ann: &ModelProto, x: &ArrayD<f32>, neuron: NeuronKind, timesteps: usize) -> (f32, usize) {
    let unrolled = gn_verify::run_batched(&convert(ann, &anytime(neuron, 4, timesteps)), x, 100, &|_| {}).unwrap();
    let calls = run_stateful(&convert(ann, &stateful(neuron, 4)), &vec![x.clone(); timesteps]).unwrap();
    let (mut worst, mut flips) = (0.0f32, 0);
    for (t, outputs) in calls.iter().enumerate() {
        let row = step(&unrolled[1], t);
        worst = worst.max(max_abs_diff(&outputs[0], &row));
        let (a, b) = (gn_verify::top1(&outputs[0]), gn_verify::top1(&row));
        flips += a.iter().zip(&b).filter(|(p, q)| p != q).count();
    }
    (worst, flips)
}

#[test]
fn calls_reproduce_the_anytime_rows_on_every_fixture() {
    let (x, _) = test_set(40);
    let x = x.into_dyn();
    for (name, path) in base_models() {
        let ann = gn_onnx::io::load(&path).unwrap().model;
        for neuron in [NeuronKind::If, NeuronKind::Gn] {
            let (worst, flips) = against_anytime(&ann, &x, neuron, 8);
            eprintln!(
                "{name} {neuron}: 8 calls against the T = 8 anytime rows: max |diff| {worst:.1e}, top-1 flips {flips}"
            );
            // One step of the same lowering: the same operations on the same values.
            assert_eq!(worst, 0.0, "{name} {neuron}: max |diff| {worst}");
            assert_eq!(flips, 0, "{name} {neuron}");
        }
    }
}

#[test]
fn max_pools_on_spikes_and_static_batches_keep_their_state() {
    let x = matrix(8, 16, 5, 2.0).into_shape_with_order((8, 1, 4, 4)).unwrap().into_dyn();
    for (name, model) in [("pool on spikes", gn_tests::built::two_layers(true)), ("stem", gn_tests::built::stem())] {
        let (worst, _) = against_anytime(&model, &x, NeuronKind::Gn, 6);
        eprintln!("{name}: max |diff| {worst:.1e}");
        assert_eq!(worst, 0.0, "{name}: max |diff| {worst}");
    }
    let fixed = gn_tests::built::static_batch(8);
    let (worst, _) = against_anytime(&fixed, &x, NeuronKind::Gn, 5);
    assert_eq!(worst, 0.0, "static batch: max |diff| {worst}");
    let declared = states(&convert(&fixed, &stateful(NeuronKind::Gn, 4))).unwrap();
    assert!(declared.iter().all(|s| s.shape.first().is_none_or(|d| *d == StateDim::Size(8))), "{declared:?}");
    let pooled = states(&convert(&gn_tests::built::two_layers(true), &stateful(NeuronKind::Gn, 4))).unwrap();
    // Two membranes, the pool's running sum and last maximum, the readout's sum, the step count.
    assert_eq!(pooled.len(), 6, "{pooled:?}");
}

/// A different input at each step (a frame per call): the readout after each call is
/// the reference simulator's, which charges each step with that step's input.
#[test]
fn an_input_that_changes_every_step_follows_the_neuron_equations() {
    let (layers, model) = mlp(4, 3);
    let xs: Vec<ndarray::Array2<f32>> = (0..7).map(|t| matrix(32, 6, 40 + t, 2.0)).collect();
    for (neuron, kind, tau) in [(NeuronKind::If, Model::If, 1), (NeuronKind::Gn, Model::Group { tau: 4 }, 4)] {
        let (expected, _) = reference::simulate_inputs(&layers, &xs, kind);
        let inputs: Vec<ArrayD<f32>> = xs.iter().map(|x| x.clone().into_dyn()).collect();
        let calls = run_stateful(&convert(&model, &stateful(neuron, tau)), &inputs).unwrap();
        for (t, (got, want)) in calls.iter().zip(&expected).enumerate() {
            let diff = max_abs_diff(&got[0], &want.clone().into_dyn());
            assert!(diff <= 1e-5, "{neuron} step {}: differs from the reference by {diff}", t + 1);
        }
        // Not the constant-input result: the inputs mattered.
        let (constant, _) = reference::simulate(&layers, &xs[0], kind, 7);
        assert!(max_abs_diff(&calls[6][0], &constant[6].clone().into_dyn()) > 1e-3);
    }
}

#[test]
fn the_interface_is_self_describing() {
    let (_, model) = mlp(4, 3);
    let snn = convert(&model, &stateful(NeuronKind::Gn, 4));
    let declared = states(&snn).expect("gn_transpile.state");
    let graph = snn.graph.as_ref().unwrap();
    let inputs: Vec<&str> = graph.input.iter().map(|v| v.name()).collect();
    let outputs: Vec<&str> = graph.output.iter().map(|v| v.name()).collect();
    assert_eq!(inputs[0], "input");
    assert_eq!(outputs[0], "output");
    assert_eq!(&inputs[1..], declared.iter().map(|s| s.input.as_str()).collect::<Vec<_>>());
    assert_eq!(&outputs[1..], declared.iter().map(|s| s.output.as_str()).collect::<Vec<_>>());
    // Two membranes at v(0) = θ_GN/2 (u = 1/2 in units of θ_GN), then the readout's step count and sum.
    let inits: Vec<f32> = declared.iter().map(|s| s.init).collect();
    assert_eq!(inits, [0.5, 0.5, 0.0, 0.0]);
    let shapes: Vec<&[StateDim]> = declared.iter().map(|s| s.shape.as_slice()).collect();
    let (n, size) = (StateDim::Batch(1), StateDim::Size);
    assert_eq!(shapes, [&[n, size(12)][..], &[n, size(10)], &[], &[n, size(4)]]);
    let json = &snn.metadata_props.iter().find(|p| p.key() == "gn_transpile.state").unwrap().value;
    assert!(json.as_deref().unwrap().contains(r#""shape":["N",12]"#), "{json:?}");
    let emit = snn.metadata_props.iter().find(|p| p.key() == "gn_transpile.emit").unwrap();
    assert_eq!(emit.value(), "stateful");
    // No neuron nodes and no time folding: one step of standard ops.
    assert!(graph.node.iter().all(|n| n.domain() != gn_transpile::DOMAIN));
    assert_eq!(graph.node.iter().filter(|n| n.op_type() == "Floor").count(), 2);
    let err = transpile(&model, &Options { anytime: true, ..stateful(NeuronKind::Gn, 4) }).unwrap_err();
    assert!(err.to_string().contains("--anytime does not apply to --emit stateful"), "{err}");
}

/// `model` with its last `drop` nodes removed and the node before them writing the graph
/// output `output` (of `dims` after the batch) itself.
fn ending_at_the_last_op(mut model: ModelProto, drop: usize, dims: &[i64]) -> ModelProto {
    let g = model.graph.as_mut().unwrap();
    g.node.truncate(g.node.len() - drop);
    g.node.last_mut().unwrap().output[0] = "output".into();
    let mut shape = vec![None];
    shape.extend(dims.iter().map(|&d| Some(d)));
    g.output[0] = gn_onnx::data::float_value_info("output", &shape);
    model
}

/// A spiking layer that writes the graph output, a max-pool on spikes that does, and a
/// stem whose max-pool, moved in front of its layer, hands the layer the output: each
/// expands into one step with its state, and t calls are row t of the anytime output.
#[test]
fn layers_and_pools_that_write_the_graph_output_keep_their_state() {
    let x = matrix(8, 16, 7, 2.0).into_shape_with_order((8, 1, 4, 4)).unwrap().into_dyn();
    let mut b = gn_tests::ModelBuilder::new(&[1, 4, 4]);
    let w = b.constant(&[2, 1, 1, 1], &[0.9, -0.4]);
    let c = b.node("Conv", &["input", &w], vec![]);
    let a = b.qcfs(&c, 1.5, 4);
    let pool =
        vec![gn_onnx::graph::attr::ints("kernel_shape", &[2, 2]), gn_onnx::graph::attr::ints("strides", &[2, 2])];
    let p = b.node("MaxPool", &[&a], pool);
    let stem = b.finish(&p, &[2, 2, 2]);
    for (name, model) in [
        ("a spiking layer", ending_at_the_last_op(gn_tests::built::two_layers(false), 2, &[1, 4, 4])),
        ("a max-pool on spikes", ending_at_the_last_op(gn_tests::built::two_layers(true), 2, &[1, 2, 2])),
        ("a moved max-pool", ending_at_the_last_op(stem, 1, &[2, 2, 2])),
    ] {
        for neuron in [NeuronKind::If, NeuronKind::Gn] {
            let snn = convert(&model, &stateful(neuron, 4));
            let graph = snn.graph.as_ref().unwrap();
            assert!(graph.node.iter().all(|n| n.domain() != gn_transpile::DOMAIN), "{name}: a neuron node is left");
            let (worst, flips) = against_anytime(&model, &x, neuron, 6);
            assert_eq!((worst, flips), (0.0, 0), "{name} {neuron}: max |diff| {worst}");
        }
    }
}

/// A first spiking layer that reads the graph input itself (or through an Identity):
/// its membrane's shape is the input's, which the stateful form takes from the input's
/// declaration.
#[test]
fn a_layer_on_the_graph_input_keeps_its_state() {
    let x = matrix(8, 6, 9, 2.0).into_dyn();
    for through_identity in [false, true] {
        let mut b = gn_tests::ModelBuilder::new(&[6]);
        let source = if through_identity { b.node("Identity", &["input"], vec![]) } else { "input".to_string() };
        let a = b.qcfs(&source, 1.5, 4);
        let y = b.gemm(&a, &matrix(4, 6, 2, 0.7), &[0.1; 4]);
        let model = b.finish(&y, &[4]);
        let (worst, flips) = against_anytime(&model, &x, NeuronKind::Gn, 5);
        assert_eq!((worst, flips), (0.0, 0), "through an Identity: {through_identity}");
    }
}

/// Spiking layers joined by a variadic Sum, Mean or Max of many inputs: the states keep
/// their shapes (inferred on a copy where the node is a tree of binary Adds) and the
/// calls reproduce the anytime rows.
#[test]
fn layers_joined_by_a_wide_variadic_node_keep_their_state() {
    let x = matrix(8, 6, 4, 2.0).into_dyn();
    for op in ["Sum", "Mean", "Max"] {
        let mut b = gn_tests::ModelBuilder::new(&[6]);
        let branches: Vec<String> = (0..7)
            .map(|k| {
                let g = b.gemm("input", &matrix(5, 6, 10 + k, 0.6), &[0.05; 5]);
                b.qcfs(&g, 1.0 + 0.1 * k as f32, 4)
            })
            .collect();
        let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
        let joined = b.node(op, &refs, vec![]);
        let y = b.gemm(&joined, &matrix(3, 5, 3, 0.7), &[0.0; 3]);
        let model = b.finish(&y, &[3]);
        let (worst, flips) = against_anytime(&model, &x, NeuronKind::Gn, 4);
        assert_eq!((worst, flips), (0.0, 0), "{op}");
    }
}
