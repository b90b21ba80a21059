//! Models that are valid but awkward, or converted and then tampered with: every one is
//! converted, measured or refused with one line naming the node, never run unchecked.

use gn_onnx::graph::attr;
use gn_onnx::proto::{ModelProto, NodeProto};
use gn_tests::reference::{matrix, mlp};
use gn_tests::{test_set, ModelBuilder};
use gn_transpile::metadata::Metadata;
use gn_transpile::{transpile, Emit, Options};

fn fixture() -> ModelProto {
    gn_onnx::io::load(&gn_tests::fixtures().join("models/cnn_l4.onnx")).unwrap().model
}

fn graph(m: &mut ModelProto) -> &mut gn_onnx::proto::GraphProto {
    m.graph.as_mut().unwrap()
}

/// A value already named `{y}_anytime`: the anytime output takes a fresh name, which the
/// metadata records, and `verify`'s batching follows the metadata, not the name.
#[test]
fn anytime_outputs_are_named_uniquely_and_recorded() {
    let (_, mut model) = mlp(4, 3);
    // The first Gemm writes a value named `output_anytime`.
    let g = graph(&mut model);
    let old = g.node[0].output[0].clone();
    for n in &mut g.node {
        for v in n.input.iter_mut().chain(n.output.iter_mut()) {
            if *v == old {
                *v = "output_anytime".into();
            }
        }
    }
    let options = Options { timesteps: 3, anytime: true, ..Default::default() };
    let (snn, _) = transpile(&model, &options).unwrap();
    let outputs: Vec<&str> = snn.graph.as_ref().unwrap().output.iter().map(|o| o.name()).collect();
    assert_eq!(outputs.len(), 2);
    assert_ne!(outputs[1], "output_anytime");
    let meta = Metadata::read(&snn).unwrap().unwrap();
    assert_eq!(meta.anytime_outputs, [outputs[1]]);
    let x = matrix(5, 6, 1, 2.0).into_dyn();
    let out = gn_verify::run_batched(&snn, &x, 2, &|_| {}).unwrap();
    assert_eq!(out[1].shape(), &[3, 5, 4]);
}

/// A model whose output is named like an anytime output is measured like any other.
#[test]
fn verify_measures_a_model_whose_output_is_named_like_an_anytime_output() {
    let mut ann = fixture();
    let g = graph(&mut ann);
    let y = g.output[0].name().to_string();
    for n in &mut g.node {
        for v in n.output.iter_mut().filter(|v| **v == y) {
            *v = "logits_anytime".into();
        }
    }
    g.output[0].name = Some("logits_anytime".into());
    let (x, labels) = test_set(12);
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let spec = gn_verify::Spec {
        tau: 4,
        timesteps: vec![1, 2],
        batch: 4,
        short_max: 2,
        long_images: 12,
        layer_images: 4,
        layer_timesteps: vec![1, 2],
        calibration: None,
        energy: gn_verify::EnergyTable::default(),
        pareto_taus: Vec::new(),
    };
    let m = gn_verify::measure(&ann, &x.into_dyn(), Some(&labels), &spec, &|_, _, _| {}).unwrap();
    assert_eq!(m.exactness.map(|e| e.flips), Some(0));
}

/// Standard form beyond the layers × T budget: refused with the way out.
#[test]
fn the_standard_form_has_a_budget_of_layers_times_steps() {
    let mut b = ModelBuilder::new(&[2]);
    let mut h = "input".to_string();
    let w = ndarray::Array2::from_shape_vec((2, 2), vec![0.9, 0.1, 0.2, 0.8]).unwrap();
    for _ in 0..300 {
        h = b.gemm(&h, &w, &[0.0, 0.0]);
        h = b.qcfs(&h, 1.0, 4);
    }
    let h = b.gemm(&h, &w, &[0.0, 0.0]);
    let model = b.finish(&h, &[2]);
    let options = Options { timesteps: 512, ..Default::default() };
    let err = transpile(&model, &options).unwrap_err().to_string();
    assert!(err.contains("300 spiking layers × T = 512") && err.contains("--emit custom-op"), "{err}");
    let (compact, _) = transpile(&model, &Options { emit: Emit::CustomOp, ..options }).unwrap();
    assert_eq!(compact.graph.unwrap().node.iter().filter(|n| n.domain() == gn_transpile::DOMAIN).count(), 300);
}

/// A custom-op model whose node's T was changed after conversion: its function body
/// still runs the old T, so the model is refused where it is read.
#[test]
fn a_node_whose_timesteps_disagree_with_its_function_body_is_refused() {
    let (_, model) = mlp(4, 3);
    let (mut snn, _) =
        transpile(&model, &Options { timesteps: 4, emit: Emit::CustomOp, ..Default::default() }).unwrap();
    assert!(gn_transpile::inspect::audit(&snn).is_ok());
    let node = graph(&mut snn).node.iter_mut().find(|n| n.domain() == gn_transpile::DOMAIN).unwrap();
    for a in &mut node.attribute {
        if a.name() == "timesteps" {
            a.i = Some(8);
        }
    }
    let err = gn_transpile::inspect::audit(&snn).unwrap_err().to_string();
    assert!(err.contains("timesteps = 8 disagrees with the model's function GroupNeuron"), "{err}");
}

/// Thresholds per channel that no kernel would accept are refused when the model is read.
#[test]
fn thresholds_per_channel_are_checked_as_the_kernels_check_them() {
    for (dims, values, expected) in [
        (vec![1, 2, 1, 1], vec![1.0, f32::NAN], "θ factor is NaN"),
        (vec![1, 2, 1, 1], vec![1.0, 0.0], "θ factor is 0"),
        (vec![1, 2, 2, 1], vec![1.0; 4], "must be [1, C, 1, …]"),
        (vec![2, 2, 1, 1], vec![1.0; 4], "must be [1, C, 1, …]"),
    ] {
        let mut model = fixture();
        let g = graph(&mut model);
        g.initializer.push(gn_onnx::data::tensor_f32("factors", &dims, &values));
        let first = g.node.iter().position(|n| n.op_type() == "Conv").unwrap();
        let x = g.node[first].output[0].clone();
        g.node.insert(
            first + 1,
            NodeProto {
                input: vec![x, "factors".into()],
                output: vec!["spikes".into()],
                name: Some("layer".into()),
                op_type: Some("GroupNeuronPerChannel".into()),
                domain: Some(gn_transpile::DOMAIN.into()),
                attribute: vec![
                    attr::float("theta", 2.0),
                    attr::int("levels", 4),
                    attr::float("v_init", 0.25),
                    attr::int("tau", 4),
                    attr::float("theta_gn", 0.5),
                    attr::int("timesteps", 2),
                ],
                ..Default::default()
            },
        );
        let err = gn_transpile::inspect::audit(&model).unwrap_err().to_string();
        assert!(err.contains("node 'layer'") && err.contains(expected), "{dims:?} {values:?}: {err}");
    }
}

/// Metadata that cannot be trusted is said so, the model is audited as what it is, and
/// what the model names is printed with its control characters escaped.
#[test]
fn inspect_warns_on_metadata_it_cannot_trust_and_escapes_what_it_prints() {
    let (_, model) = mlp(4, 3);
    let (mut snn, _) = transpile(&model, &Options::default()).unwrap();
    for p in &mut snn.metadata_props {
        if p.key() == "gn_transpile.tau" {
            p.value = Some("0".into());
        }
    }
    let text = gn_transpile::inspect::inspect(&snn).unwrap();
    assert!(
        text.starts_with("warning: the model's gn_transpile metadata cannot be trusted (gn_transpile.tau = \"0\""),
        "{text}"
    );
    let mut ann = model.clone();
    let first = graph(&mut ann).node.iter().position(|n| n.op_type() == "Floor").unwrap();
    graph(&mut ann).node[first].name = Some("floor\u{1b}[2J\u{7}".into());
    let text = gn_transpile::inspect::inspect(&ann).unwrap();
    assert!(text.contains("floor\\u{1b}[2J\\u{7}") && !text.contains('\u{1b}'), "{text}");
    // A record copied onto an ANN is not trusted: the ANN is audited as one.
    let mut forged = model.clone();
    forged.metadata_props = snn_record(&model);
    let text = gn_transpile::inspect::inspect(&forged).unwrap();
    assert!(
        text.contains("says it was converted, but it holds 2 QCFS activations") && text.contains("QCFS sites: 2"),
        "{text}"
    );
    // The record of a model converted from it is JSON any reader accepts.
    let (snn, _) = transpile(&ann, &Options::default()).unwrap();
    let record = Metadata::read(&snn).unwrap().unwrap();
    assert_eq!(record.layers[0].site, "floor\u{1b}[2J\u{7}");
}

/// The metadata of `model` converted with the default options.
fn snn_record(model: &ModelProto) -> Vec<gn_onnx::proto::StringStringEntryProto> {
    transpile(model, &Options::default()).unwrap().0.metadata_props
}
