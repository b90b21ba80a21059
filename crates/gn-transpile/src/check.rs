//! The checks every entry point runs on a model before any pass: its structure
//! ([`gn_onnx::validate::validate_model`]), numeric tensors in the main graph, and the
//! nodes of the `gn.transpile` domain (present in converted or crafted models): each a
//! well-formed spiking layer ([`NeuronNode::parse`]), its thresholds per channel (when
//! they are an initializer) checked as every kernel checks them
//! ([`gn_neuron::check_factors`]), and its `timesteps` the T of its model-local
//! function's body, where the model defines one.

use std::collections::HashSet;

use gn_onnx::data::tensor_to_f64;
use gn_onnx::proto::{tensor_proto::DataType, ModelProto, NodeProto};
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::function::function;
use crate::neuron::NeuronNode;
use crate::opset::Opset;
use crate::DOMAIN;

/// Checks a model given to any entry point (see the module documentation).
pub fn check_model(model: &ModelProto) -> Result<(), TranspileError> {
    gn_onnx::validate::validate_model(model)?;
    let graph = model.graph.as_ref().ok_or(TranspileError::NoGraph)?;
    for t in &graph.initializer {
        let ty = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
        if matches!(ty, DataType::String | DataType::Complex64 | DataType::Complex128 | DataType::Undefined) {
            return Err(TranspileError::Node {
                node: t.name().to_string(),
                op: "initializer".into(),
                reason: format!("a {} tensor has no place in a QCFS network", ty.as_str_name()),
            });
        }
    }
    // Each function body is compared once per T its nodes state, not once per node.
    let mut bodies_checked: HashSet<(String, usize)> = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        let refuse = |reason: String| TranspileError::Node {
            node: if n.name().is_empty() { format!("#{i}") } else { n.name().to_string() },
            op: format!("{}::{}", n.domain(), n.op_type()),
            reason,
        };
        let Some(layer) = NeuronNode::parse(n).map_err(refuse)? else { continue };
        check_thresholds(model, n, &layer).map_err(refuse)?;
        if bodies_checked.insert((n.op_type().to_string(), layer.timesteps.unwrap_or(0))) {
            check_function(model, n, &layer).map_err(refuse)?;
        }
    }
    Ok(())
}

/// [`check_model`] for a model to be converted or measured: an ANN, which holds no
/// spiking layer. A `gn.transpile` node in one (a converted model given again, or a node
/// written by hand) is refused, never executed.
pub fn check_ann(model: &ModelProto) -> Result<(), TranspileError> {
    check_model(model)?;
    let graph = model.graph.as_ref().ok_or(TranspileError::NoGraph)?;
    if let Some((i, n)) = graph.node.iter().enumerate().find(|(_, n)| n.domain() == DOMAIN) {
        return Err(TranspileError::Node {
            node: if n.name().is_empty() { format!("#{i}") } else { n.name().to_string() },
            op: format!("{}::{}", n.domain(), n.op_type()),
            reason: "the model already holds a spiking layer; gn-transpile converts and measures ANNs (inspect reads converted models)".into(),
        });
    }
    Ok(())
}

/// The thresholds per channel of a per-channel layer, where they are an initializer.
fn check_thresholds(model: &ModelProto, node: &NodeProto, layer: &NeuronNode) -> Result<(), String> {
    let graph = model.graph.as_ref();
    let Some(name) = node.input.get(1).filter(|_| layer.per_channel) else { return Ok(()) };
    let Some(t) = graph.and_then(|g| g.initializer.iter().find(|t| t.name() == name)) else { return Ok(()) };
    if gn_onnx::io::is_external(t) {
        // Read by the runtime from its file; the kernels check it there.
        return Ok(());
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
    let factors = tensor_to_f64(t).map_err(|e| format!("its thresholds per channel '{name}' cannot be read: {e}"))?;
    let factors: Vec<f32> = factors.iter().map(|&v| v as f32).collect();
    gn_neuron::check_factors(layer.neuron.theta_gn() as f32, &shape, &factors).map(|_| ())
}

/// The node's `timesteps` against the body of the model's function for its op: the
/// fused kernels run the attribute's T, ONNX runtimes that inline the function run the
/// body's, so the two must be one T.
fn check_function(model: &ModelProto, node: &NodeProto, layer: &NeuronNode) -> Result<(), String> {
    let Some(f) = model.functions.iter().find(|f| f.domain() == DOMAIN && f.name() == node.op_type()) else {
        return Ok(());
    };
    let Some(t) = layer.timesteps else {
        return Err(format!("has no 'timesteps' attribute, and the model defines {} with a fixed T", f.name()));
    };
    let opset = f.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map_or(0, |o| o.version());
    let expected = function(layer.neuron.kind, Opset(opset), t, layer.direct, layer.per_channel);
    if expected.node != f.node || expected.input != f.input || expected.output != f.output {
        return Err(format!(
            "its timesteps = {t} disagrees with the model's function {}, whose body is not the expansion of {t} steps",
            f.name()
        ));
    }
    Ok(())
}

/// Checks the graph's sources and drops nodes that reach no output (an activation nobody
/// reads is not a spiking layer). Cycles were refused by [`check_model`].
pub(crate) fn check_graph(graph: &mut Graph) -> Result<(), TranspileError> {
    graph.check_sources()?;
    if graph.proto.output.is_empty() {
        return Err(TranspileError::NoOutputs);
    }
    graph.remove_dead_nodes();
    Ok(())
}

/// `check_ann`, then the main graph as the passes' IR, checked and without dead nodes:
/// where conversion and measurement start.
pub fn prepare_ann(model: &ModelProto) -> Result<Graph, TranspileError> {
    check_ann(model)?;
    prepare(model)
}

/// `check_model`, then the main graph as the passes' IR, checked and without dead nodes.
pub fn prepare(model: &ModelProto) -> Result<Graph, TranspileError> {
    check_model(model)?;
    let mut graph = Graph::new(model.graph.clone().ok_or(TranspileError::NoGraph)?);
    check_graph(&mut graph)?;
    Ok(graph)
}
