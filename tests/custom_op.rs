//! `--emit custom-op`: the compact model (one node per spiking layer, defined by a
//! model-local function) against the standard emission, on tract.

use gn_onnx::proto::ModelProto;
use gn_tests::{base_models, fixture_models, max_abs_diff, run_tract_with, test_set};
use gn_transpile::{transpile, Emit, NeuronKind, Options};

fn emit(model: &ModelProto, neuron: NeuronKind, timesteps: usize, emit: Emit) -> ModelProto {
    let options = Options { neuron, tau: 4, timesteps, emit, ..Default::default() };
    transpile(model, &options).unwrap_or_else(|e| panic!("conversion failed: {e}")).0
}

fn count_ops(model: &ModelProto, op: &str) -> usize {
    model.graph.as_ref().map_or(0, |g| g.node.iter().filter(|n| n.op_type() == op).count())
}

/// For every fixture (every export form; opset 11 is refused), IF and GN, T ∈ {1, 4}, on
/// 100 test images: the custom-op model on tract (its ops run by
/// the registered kernel) computes what the standard model computes on tract, bit for bit.
/// Both run unoptimised, so that tract evaluates every op as written: optimised, tract
/// folds the standard graph's Div and Mul into the neighbouring convolutions, which moves
/// the rounding and flips the odd spike that sits exactly on a threshold.
#[test]
fn custom_op_model_on_tract_agrees_with_the_standard_model() {
    let (x, _) = test_set(gn_tests::image_count().min(100));
    for path in fixture_models() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let ann = gn_onnx::io::load(&path).unwrap().model;
        if gn_transpile::default_opset(&ann).unwrap_or(1) < 12 {
            let options = Options { emit: Emit::CustomOp, ..Default::default() };
            let err = transpile(&ann, &options).expect_err("opset 11 is refused");
            assert!(err.to_string().contains("opset 12 or later"), "{name}: {err}");
            continue;
        }
        for neuron in [NeuronKind::If, NeuronKind::Gn] {
            for t in [1, 4] {
                let standard = emit(&ann, neuron, t, Emit::Standard);
                let compact = emit(&ann, neuron, t, Emit::CustomOp);
                let op = if neuron == NeuronKind::Gn { "GroupNeuron" } else { "IFNeuron" };
                let direct = count_ops(&compact, &format!("{op}Direct"));
                // At T > 1 the first layer's current (the image's) is time-invariant.
                assert_eq!(direct > 0, t > 1, "{name}: {direct} {op}Direct nodes at T = {t}");
                let sites = count_ops(&compact, op) + direct;
                assert!(sites > 0, "{name}: no {op} node in the custom-op model");
                let a = run_tract_with(&standard, &x, 250, false).remove(0);
                let b = run_tract_with(&compact, &x, 250, false).remove(0);
                let rows_beyond = (0..a.shape()[0])
                    .filter(|&i| {
                        let (ra, rb) = (a.index_axis(ndarray::Axis(0), i), b.index_axis(ndarray::Axis(0), i));
                        ra.iter().zip(rb.iter()).any(|(p, q)| (p - q).abs() > 1e-5)
                    })
                    .count();
                let d = max_abs_diff(&a, &b);
                eprintln!(
                    "{name} {neuron:?} T={t}: {sites} {op} nodes; {} nodes standard, {} compact; max |Δ| {d:.2e}, images beyond 1e-5: {rows_beyond}",
                    standard.graph.as_ref().unwrap().node.len(),
                    compact.graph.as_ref().unwrap().node.len()
                );
                assert!(d <= 1e-5, "{name} {neuron:?} T={t}: max |Δ| {d}");
                assert_eq!(rows_beyond, 0);
            }
        }
    }
}

/// The compact graph holds one neuron node per spiking layer and no unrolled step; its
/// size grows with T only in the readout. Prints the node counts of both forms.
#[test]
fn one_node_per_spiking_layer() {
    let path = base_models().into_iter().find(|(n, _)| n == "resnet20_l8").unwrap().1;
    let ann = gn_onnx::io::load(&path).unwrap().model;
    let sites =
        gn_transpile::find_sites(&gn_onnx::Graph::new(ann.graph.clone().unwrap()), false, None).unwrap().sites.len();
    for t in [4, 32] {
        let standard = emit(&ann, NeuronKind::Gn, t, Emit::Standard);
        let compact = emit(&ann, NeuronKind::Gn, t, Emit::CustomOp);
        let (ns, nc) = (standard.graph.as_ref().unwrap().node.len(), compact.graph.as_ref().unwrap().node.len());
        eprintln!("resnet20_l8 GN τ=4 T={t}: standard {ns} nodes, custom-op {nc} nodes");
        // The first layer reads the image's (time-invariant) current once.
        assert_eq!(count_ops(&compact, "GroupNeuronDirect"), 1);
        assert_eq!(count_ops(&compact, "GroupNeuron"), sites - 1);
        assert_eq!(count_ops(&compact, "Floor"), 0, "no step is unrolled in the main graph");
        assert_eq!(count_ops(&compact, "Concat"), 1, "only the readout concatenates (no tiled current)");
        let names: Vec<&str> = compact.functions.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["GroupNeuron", "GroupNeuronDirect"]);
        for f in &compact.functions {
            assert_eq!(f.node.iter().filter(|n| n.op_type() == "Floor").count(), t);
        }
        assert!(count_ops(&standard, "Floor") == sites * t);
    }
}

/// tract's builder checks the domain: a `GroupNeuron` of another domain is not ours.
#[test]
fn tract_refuses_a_neuron_op_of_another_domain() {
    let ann = gn_onnx::io::load(&base_models()[0].1).unwrap().model;
    let mut compact = emit(&ann, NeuronKind::Gn, 2, Emit::CustomOp);
    for n in &mut compact.graph.as_mut().unwrap().node {
        if n.op_type() == "GroupNeuron" {
            n.domain = Some("com.example".into());
        }
    }
    let err = gn_transpile::tract_ops::load(&compact, true).err().expect("tract must refuse the model");
    assert!(err.to_string().contains("domain 'com.example' is not known"), "{err}");
}
