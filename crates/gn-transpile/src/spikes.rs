//! Which values of a converted graph carry spikes: the outputs of the spiking layers
//! (per step, a count c ∈ 0..τ of θ_GN for a Group Neuron, 0 or θ for IF) and what only
//! moves, selects or pools them. A weighted op (Conv, Gemm, MatMul) reading spikes does
//! one accumulate per synapse per spike; one reading analog values (the image, a
//! rate-coded op's output) does multiply-accumulates.

use std::collections::HashSet;

use gn_onnx::graph::standard_op;
use gn_onnx::Graph;

use crate::detect::Site;
use crate::error::TranspileError;
use crate::neuron::NeuronNode;
use crate::ops;
use crate::time::{analyze, TimeClass};

/// The values that carry spikes, visiting the nodes in topological order.
pub fn spike_values(graph: &Graph) -> Result<HashSet<String>, TranspileError> {
    let mut spikes: HashSet<String> = HashSet::new();
    for idx in graph.topo_order()? {
        let n = &graph.nodes()[idx];
        let carries = if NeuronNode::from_node(n).is_some() {
            true
        } else if ops::moves_values(standard_op(n)) {
            // The data operand (every operand of a Concat) must carry spikes.
            match standard_op(n) {
                "Concat" => n.input.iter().all(|i| spikes.contains(i)),
                _ => n.input.first().is_some_and(|i| spikes.contains(i)),
            }
        } else {
            false
        };
        if carries {
            spikes.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    Ok(spikes)
}

/// Whether op `op` weights its input by a constant (Conv, ConvTranspose, Gemm, MatMul).
pub fn is_weighted(op: &str) -> bool {
    matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
}

/// What a weighted op reads once converted, which sets the kind and the number of its
/// synaptic operations over T steps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reads {
    /// Spike counts written by these spiking layers (the sites' output values): one
    /// accumulate per synapse per member spike.
    Spikes(Vec<String>),
    /// The average of spike counts over windows of an averaging pool (node `pool`, whose
    /// input is `input`): folded into the op's weights (as the NIR export does), the op
    /// reads the spikes, each reaching the synapses of every window that holds it.
    PooledSpikes { sources: Vec<String>, pool: String, input: String },
    /// Analog values computed once per sample (the image, or what only it feeds): its
    /// multiply-accumulates run once, whatever T.
    Once,
    /// Analog values that change every step (a rate-coded op's output, an averaging
    /// pool's, a sum of weighted spikes): its multiply-accumulates run at every step.
    Steps,
}

/// A weighted op (Conv, ConvTranspose, Gemm, MatMul) of the ANN and what it reads once
/// converted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightedRead {
    pub node: String,
    pub op: String,
    /// The input its weights multiply (for a product of two time-varying tensors, the
    /// first).
    pub data: String,
    pub reads: Reads,
}

/// What each weighted op of the ANN `graph` ([`crate::prepare_ann`]) reads once its
/// `sites` are spiking layers, in node order.
pub fn weighted_reads(graph: &Graph, sites: &[Site]) -> Result<Vec<WeightedRead>, TranspileError> {
    let mut graph = graph.clone();
    crate::pipeline::convert_sites(&mut graph, sites)?;
    converted_reads(&graph)
}

/// [`weighted_reads`] of a graph whose sites are already spiking layers.
pub(crate) fn converted_reads(graph: &Graph) -> Result<Vec<WeightedRead>, TranspileError> {
    let spikes = spike_values(graph)?;
    let classes = analyze(graph)?.classes;
    let producers = graph.producers();
    let varying = |v: &str| classes.get(v) == Some(&TimeClass::Folded);
    let mut reads = Vec::new();
    for n in graph.nodes().iter().filter(|n| is_weighted(standard_op(n))) {
        let operands: Vec<&String> = n.input.iter().take(2).filter(|i| !i.is_empty()).collect();
        let moving: Vec<&String> = operands.iter().copied().filter(|i| varying(i)).collect();
        let (data, kind) = match moving.as_slice() {
            [] => {
                let data = operands.iter().find(|i| classes.get(i.as_str()) != Some(&TimeClass::Const));
                (data.or(operands.first()).map_or(String::new(), |d| d.to_string()), Reads::Once)
            }
            [one] if spikes.contains(one.as_str()) => {
                (one.to_string(), Reads::Spikes(spike_sources(graph, &producers, one)))
            }
            [one] => match averaged_spikes(graph, &producers, &spikes, one) {
                Some((pool, input)) => {
                    let sources = spike_sources(graph, &producers, &input);
                    (one.to_string(), Reads::PooledSpikes { sources, pool, input })
                }
                None => (one.to_string(), Reads::Steps),
            },
            [first, ..] => (first.to_string(), Reads::Steps),
        };
        reads.push(WeightedRead { node: n.name().to_string(), op: n.op_type().to_string(), data, reads: kind });
    }
    Ok(reads)
}

/// The averaging pool (its name and input) whose output `value` is, through ops that only
/// move values, when the pool averages spikes.
fn averaged_spikes(
    graph: &Graph,
    producers: &std::collections::HashMap<String, usize>,
    spikes: &HashSet<String>,
    value: &str,
) -> Option<(String, String)> {
    let mut v = value.to_string();
    for _ in 0..graph.nodes().len() {
        let n = &graph.nodes()[*producers.get(&v)?];
        let first = n.input.first()?;
        match standard_op(n) {
            "AveragePool" | "GlobalAveragePool" if spikes.contains(first) => {
                return Some((n.name().to_string(), first.clone()));
            }
            op if ops::moves_values(op) && op != "Concat" => v = first.clone(),
            _ => return None,
        }
    }
    None
}

/// The outputs of the spiking layers whose spikes `value` carries (through the ops that
/// only move values), each once, in the order found.
fn spike_sources(graph: &Graph, producers: &std::collections::HashMap<String, usize>, value: &str) -> Vec<String> {
    let mut sources = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![value.to_string()];
    while let Some(v) = stack.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        let Some(&p) = producers.get(&v) else { continue };
        let n = &graph.nodes()[p];
        if NeuronNode::from_node(n).is_some() {
            sources.push(v);
        } else if standard_op(n) == "Concat" {
            stack.extend(n.input.iter().rev().filter(|i| !i.is_empty()).cloned());
        } else if let Some(first) = n.input.first() {
            stack.push(first.clone());
        }
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_graphs::{qcfs, qcfs_constants};
    use gn_onnx::data::{float_value_info, node, tensor_f32};
    use gn_onnx::proto::GraphProto;

    /// x [N, 4] → MatMul w → QCFS → MatMul w (spikes), → Sigmoid → MatMul w (analog per
    /// step), and → GlobalAveragePool → MatMul w (averaged spikes); the product of the
    /// first two (two varying operands).
    #[test]
    fn weighted_ops_read_spikes_per_step_analog_values_or_the_input_once() {
        let mut nodes = vec![node("MatMul", &["x", "w"], "h", vec![])];
        nodes.extend(qcfs("h", "a"));
        nodes.extend([
            node("Flatten", &["a"], "f", vec![]),
            node("MatMul", &["f", "w"], "on_spikes", vec![]),
            node("Sigmoid", &["a"], "s", vec![]),
            node("MatMul", &["s", "w"], "on_steps", vec![]),
            node("MatMul", &["on_spikes", "on_steps"], "product", vec![]),
            node("GlobalAveragePool", &["a"], "pooled", vec![]),
            node("MatMul", &["pooled", "w"], "on_pooled", vec![]),
        ]);
        let mut initializer = vec![tensor_f32("w", &[4, 4], &[0.5; 16])];
        initializer.extend(qcfs_constants(1.0));
        let graph = GraphProto {
            node: nodes,
            initializer,
            input: vec![float_value_info("x", &[None, Some(4)])],
            output: vec![
                float_value_info("product", &[None, Some(4)]),
                float_value_info("on_pooled", &[None, Some(4)]),
            ],
            ..Default::default()
        };
        let graph = Graph::new(graph);
        let sites = crate::detect::detect(&graph).sites;
        let reads = weighted_reads(&graph, &sites).unwrap();
        let got: Vec<(&str, &Reads)> = reads.iter().map(|r| (r.node.as_str(), &r.reads)).collect();
        assert_eq!(
            got,
            [
                ("h", &Reads::Once),
                ("on_spikes", &Reads::Spikes(vec!["a".into()])),
                ("on_steps", &Reads::Steps),
                ("product", &Reads::Steps),
                (
                    "on_pooled",
                    &Reads::PooledSpikes { sources: vec!["a".into()], pool: "pooled".into(), input: "a".into() }
                ),
            ]
        );
        assert_eq!(reads[1].data, "f");
    }
}
