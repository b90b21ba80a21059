//! The pass list, in order (the paper's Fig. 1(b)), and the conversion entry point.
//!
//! 1. [`detect`](crate::detect): find the QCFS sites, θ and L read from the model.
//! 2. [`convert`](crate::convert): each site becomes an IF spiking layer; then
//!    [`commute`](crate::commute): a max-pool after a layer with a time-invariant current
//!    moves in front of it.
//! 3. [`group`](crate::group): Algorithm 1, IF → GN of τ members (skipped for `--neuron if`).
//! 4. [`lower`](crate::lower): time folded into the batch; the neuron nodes stay.
//! 5. [`emit`](crate::emit): time-averaged readout; then either each neuron node
//!    expanded into its T steps of standard ops (`Emit::Standard`), or the nodes kept
//!    with their model-local functions (`Emit::CustomOp`); metadata.
//!
//! Each pass has one shape ([`crate::pass`]): it reads the graph and returns a patch,
//! which this pipeline applies.

use gn_onnx::proto::ModelProto;
use gn_onnx::Graph;

use crate::check::{check_ann, check_graph};
use crate::detect::{detect, Detection};
use crate::emit;
use crate::error::TranspileError;
use crate::neuron::{NeuronKind, NeuronNode};
use crate::opset::{default_opset, Opset};
use crate::options::{Emit, Options, MAX_LAYER_STEPS, MAX_TAU};
use crate::pass::{self, Context};
use crate::shapes::StaticShapes;

/// What the conversion found and did, for the summary on stderr.
#[derive(Debug, Clone)]
pub struct Report {
    pub detection: Detection,
    /// Max-pools moved in front of a spiking layer by the commute pass.
    pub moves: Vec<crate::commute::Move>,
    pub spiking_layers: Vec<String>,
    pub warnings: Vec<String>,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Runs the detect pass and turns "nothing found" into an error naming what was found
/// instead. With a calibration, the ReLU-family activations become sites too.
pub fn find_sites(
    graph: &Graph,
    allow_near_misses: bool,
    calibration: Option<&crate::calibrate::Calibration>,
) -> Result<Detection, TranspileError> {
    let mut detection = detect(graph);
    if let Some(m) = detection.near_misses.iter().find(|m| m.fatal) {
        return Err(TranspileError::Node { node: m.node.clone(), op: m.ops.clone(), reason: m.reason.clone() });
    }
    if let Some(c) = calibration {
        let calibrated = c.sites(&detection)?;
        detection.sites.extend(calibrated);
    }
    for site in &detection.sites {
        let per_channel = site.per_channel.iter().flat_map(|pc| pc.theta.iter());
        if let Some(&theta) = per_channel.clone().find(|t| !(t.is_finite() && **t > 0.0)) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: site.ops.clone(),
                reason: format!("a channel's θ = {theta} is not a positive finite threshold"),
            });
        }
        if let Some(&theta) = per_channel.clone().find(|t| !((**t as f32 / (2 * MAX_TAU) as f32).is_normal())) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: site.ops.clone(),
                reason: format!("a channel's θ = {theta:e} is outside the range a float32 threshold can hold"),
            });
        }
        if !(site.theta.is_finite() && site.theta > 0.0) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: "Floor".into(),
                reason: format!("θ = {} is not a positive finite threshold", site.theta),
            });
        }
        // The neurons hold θ, θ/τ and θ/(2τ) in float32: all must be finite and normal.
        let smallest = site.theta as f32 / (2 * MAX_TAU) as f32;
        if !(site.theta as f32).is_finite() || !smallest.is_normal() {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: "Floor".into(),
                reason: format!("θ = {:e} is outside the range a float32 threshold can hold", site.theta),
            });
        }
    }
    if !detection.sites.is_empty() {
        if let Some(m) = detection.near_misses.first() {
            if !allow_near_misses {
                return Err(TranspileError::Node {
                    node: m.node.clone(),
                    op: m.ops.clone(),
                    reason: format!(
                        "looks like a QCFS activation but is not one: {}; pass --allow-inexact to leave it unconverted",
                        m.reason
                    ),
                });
            }
        }
    }
    if detection.sites.is_empty() {
        let mut found: Vec<String> = detection.other_activations.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
        found.extend(detection.near_misses.iter().map(|m| format!("near miss at '{}': {}", m.node, m.reason)));
        let found = if found.is_empty() { String::new() } else { format!(" (found instead: {})", found.join(", ")) };
        let hint = match detection.relu_sites.len() {
            0 => String::new(),
            _ => "; a ReLU network converts with --calibrate x.npy, which sets each ReLU's θ from its activations on sample inputs".into(),
        };
        return Err(TranspileError::NoSites { found, hint });
    }
    Ok(detection)
}

/// Passes 2 and 2b: every site becomes an IF layer (the chains and what only they read
/// removed), then max-pools on time-invariant layers move in front of them. Returns the
/// moves. `transpile` and `inspect` both start here.
pub fn convert_sites(
    graph: &mut Graph,
    sites: &[crate::detect::Site],
) -> Result<Vec<crate::commute::Move>, TranspileError> {
    pass::run(graph, "convert", |g| Ok(crate::convert::run(g, sites)))?;
    graph.remove_dead_nodes();
    pass::run(graph, "commute", crate::commute::run)
}

/// Converts a QCFS ANN into a spiking network per `options`.
pub fn transpile(model: &ModelProto, options: &Options) -> Result<(ModelProto, Report), TranspileError> {
    options.validate()?;
    let opset = default_opset(model).unwrap_or(1);
    if opset < 11 {
        return Err(TranspileError::OldOpset(opset));
    }
    if options.emit == Emit::CustomOp && opset < 12 {
        return Err(TranspileError::Option(format!(
            "--emit custom-op needs opset 12 or later (the model imports opset {opset}): the neuron functions read their attributes through Constant's value_float"
        )));
    }
    check_ann(model)?;
    let cx = Context { options: options.clone(), opset: Opset(opset) };
    // Tensor data is shared (`Bytes`), so the copy costs the structure, not the weights.
    let mut model = model.clone();
    let mut graph = Graph::new(model.graph.take().ok_or(TranspileError::NoGraph)?);
    let nodes_before = graph.nodes().len();
    check_graph(&mut graph)?;

    let detection = find_sites(&graph, options.allow_inexact, options.calibration.as_deref())?;
    let moves = convert_sites(&mut graph, &detection.sites)?;
    if options.neuron == NeuronKind::Gn {
        pass::run(&mut graph, "group", |g| Ok(crate::group::run(g, &cx)))?;
    }
    // The stateful form is one step of the graph lowered at T = 1.
    let cx = match options.emit {
        Emit::Stateful => Context { options: Options { timesteps: 1, anytime: false, ..options.clone() }, ..cx },
        _ => cx,
    };
    let mut lowered = pass::run(&mut graph, "lower", |g| crate::lower::run(g, &cx))?;
    let layer_steps = lowered.spiking_layers.len().saturating_mul(cx.options.timesteps);
    if options.emit == Emit::Standard && layer_steps > MAX_LAYER_STEPS {
        return Err(TranspileError::Option(format!(
            "the standard form of {} spiking layers × T = {} would unroll {layer_steps} layer-steps, about {} nodes (at most {MAX_LAYER_STEPS} layer-steps); --emit custom-op writes one node per layer",
            lowered.spiking_layers.len(),
            cx.options.timesteps,
            6 * layer_steps
        )));
    }
    lowered.warnings.extend(
        detection.near_misses.iter().map(|m| format!("node '{}' ({}) left unconverted: {}", m.node, m.ops, m.reason)),
    );
    let (states, anytime_outputs) = match options.emit {
        Emit::Stateful => {
            let shapes = state_shapes(&graph, &lowered, cx.opset)?;
            (pass::run(&mut graph, "emit", |g| emit::stateful(g, &cx, &lowered, &shapes))?, Vec::new())
        }
        Emit::Standard | Emit::CustomOp => {
            let anytime_outputs = pass::run(&mut graph, "emit", |g| Ok(emit::readout(g, &cx, &lowered)))?;
            pass::run(&mut graph, "emit", |g| Ok(emit::neurons(g, &cx, &lowered)))?;
            (Vec::new(), anytime_outputs)
        }
    };
    let nodes_after = emit::model(&mut model, graph, &cx, &detection.sites, &states, &anytime_outputs)?;

    Ok((
        model,
        Report {
            detection,
            moves,
            spiking_layers: lowered.spiking_layers,
            warnings: lowered.warnings,
            nodes_before,
            nodes_after,
        },
    ))
}

/// The shapes of the values the stateful form keeps as state (the spiking layers' and
/// the max-pools' inputs, the pooled values, the outputs, the rate regions' inputs and
/// outputs), inferred statically on the lowered one-step graph ([`StaticShapes`]).
fn state_shapes(graph: &Graph, lowered: &crate::lower::Lowered, opset: Opset) -> Result<emit::Shapes, TranspileError> {
    let producers = graph.producers();
    let mut values: Vec<String> = Vec::new();
    for n in graph.nodes() {
        if NeuronNode::from_node(n).is_some() {
            values.push(n.input[0].clone());
        }
    }
    for pooled in &lowered.rate_pools {
        if let Some(&i) = producers.get(pooled) {
            values.push(graph.nodes()[i].input[0].clone());
        }
        values.push(pooled.clone());
    }
    values.extend(lowered.folded_outputs.iter().cloned());
    for region in &lowered.rate_regions {
        values.extend(region.inputs.iter().chain(&region.outputs).cloned());
    }
    values.sort();
    values.dedup();
    let inferred = StaticShapes::infer(graph, opset.0)?;
    values
        .into_iter()
        .map(|v| {
            let shape = inferred.state_shape(&v)?;
            Ok((v, shape))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{states, StateDim};
    use crate::test_graphs::{qcfs, qcfs_constants};
    use gn_onnx::data::{float_value_info, model, node, tensor_f32, tensor_i64};
    use gn_onnx::graph::attr;
    use gn_onnx::proto::GraphProto;

    /// x [N, 1, 4, 4] ─► Conv 3×3 ─► QCFS ─► Conv 1×1 ─► QCFS ─► MaxPool 2×2/2 ─► Reshape
    /// to [N, −1] (the target built from Shape(x)[0]) ─► Gemm ─► y [N, 3].
    fn two_layers_and_a_pool() -> ModelProto {
        let mut nodes = vec![node("Conv", &["x", "w1"], "c1", vec![attr::ints("pads", &[1, 1, 1, 1])])];
        nodes.extend(qcfs("c1", "a1"));
        nodes.push(node("Conv", &["a1", "w2"], "c2", vec![]));
        nodes.extend(qcfs("c2", "a2"));
        nodes.extend([
            node(
                "MaxPool",
                &["a2"],
                "pooled",
                vec![attr::ints("kernel_shape", &[2, 2]), attr::ints("strides", &[2, 2])],
            ),
            node("Shape", &["pooled"], "s", vec![]),
            node("Gather", &["s", "zero_i"], "n", vec![attr::int("axis", 0)]),
            node("Unsqueeze", &["n", "axes"], "n1", vec![]),
            node("Concat", &["n1", "minus_one"], "target", vec![attr::int("axis", 0)]),
            node("Reshape", &["pooled", "target"], "flat", vec![]),
            node("Gemm", &["flat", "w3"], "y", vec![attr::int("transB", 1)]),
        ]);
        let graph = GraphProto {
            node: nodes,
            initializer: [
                vec![
                    tensor_f32("w1", &[2, 1, 3, 3], &[0.3; 18]),
                    tensor_f32("w2", &[2, 2, 1, 1], &[0.9, -0.4, 0.5, 0.7]),
                    tensor_f32("w3", &[3, 8], &[0.1; 24]),
                    tensor_i64("zero_i", &[], &[0]),
                    tensor_i64("axes", &[1], &[0]),
                    tensor_i64("minus_one", &[1], &[-1]),
                ],
                qcfs_constants(1.5),
            ]
            .concat(),
            input: vec![float_value_info("x", &[None, Some(1), Some(4), Some(4)])],
            output: vec![float_value_info("y", &[None, Some(3)])],
            ..Default::default()
        };
        model(graph, 17)
    }

    #[test]
    fn the_stateful_form_declares_its_state_shapes_from_the_static_inference() {
        let options = Options { emit: Emit::Stateful, ..Default::default() };
        let (snn, _) = transpile(&two_layers_and_a_pool(), &options).expect("a stateful conversion");
        let mut declared: Vec<(String, Vec<StateDim>)> =
            states(&snn).expect("state metadata").into_iter().map(|s| (s.input, s.shape)).collect();
        declared.sort();
        let (n, s) = (StateDim::Batch(1), StateDim::Size);
        let expected = [
            ("a1.e.gn.membrane", vec![n, s(2), s(4), s(4)]),
            ("a2.e.gn.membrane", vec![n, s(2), s(4), s(4)]),
            ("gn_transpile.steps", vec![]),
            ("pooled.max", vec![n, s(2), s(2), s(2)]),
            ("pooled.sum", vec![n, s(2), s(4), s(4)]),
            ("y.sum", vec![n, s(3)]),
        ];
        let expected: Vec<(String, Vec<StateDim>)> = expected.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(declared, expected);
    }

    /// Every shipped fixture that converts to the unrolled form converts to the stateful
    /// form too: the shapes of its state tensors follow without tract.
    #[test]
    fn every_fixture_that_converts_has_the_state_shapes_of_its_stateful_form() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
        let Ok(entries) = std::fs::read_dir(&folder) else { return };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        paths.sort();
        for path in paths {
            let ann = gn_onnx::io::load(&path).expect("a fixture").model;
            let standard = Options { timesteps: 2, ..Default::default() };
            if let Err(e) = transpile(&ann, &standard) {
                eprintln!("{}: not converted ({e})", path.display());
                continue;
            }
            let stateful = Options { emit: Emit::Stateful, ..Default::default() };
            let (snn, _) = transpile(&ann, &stateful).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let declared = states(&snn).expect("state metadata");
            eprintln!("{}: {} state tensors", path.display(), declared.len());
            assert!(!declared.is_empty(), "{}", path.display());
        }
    }
}
