//! Which values of a converted graph carry spikes: the outputs of the spiking layers
//! (per step, a count c ∈ 0..τ of θ_GN for a Group Neuron, 0 or θ for IF) and what only
//! moves, selects or pools them. A weighted op (Conv, Gemm, MatMul) reading spikes does
//! one accumulate per synapse per spike; one reading analog values (the image, a
//! rate-coded op's output) does multiply-accumulates.

use std::collections::HashSet;

use gn_onnx::graph::standard_op;
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::neuron::NeuronNode;
use crate::ops;

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
