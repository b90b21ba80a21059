//! Pass 3, group (the paper's Algorithm 1): each IF layer becomes a Group Neuron layer
//! of τ members with thresholds θ_i = i·θ/τ, so θ_GN = θ/τ and v(0) = θ_GN/2.
//! Seeds on `IFNeuron`.
//!
//! ```text
//!   x ─► IFNeuron{θ} ─► a      becomes      x ─► GroupNeuron{θ, τ, θ_GN = θ/τ} ─► a
//! ```

use gn_onnx::Graph;

use crate::neuron::{Neuron, NeuronKind};

/// Rewrites every `IFNeuron` node into a `GroupNeuron` of `tau` members, named `{site}.gn`.
pub fn group(graph: &mut Graph, tau: u32) {
    // Planned on the unchanged graph, then applied.
    let plan: Vec<(usize, Neuron)> = graph
        .nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, node)| Some((i, Neuron::from_node(node).filter(|n| n.kind == NeuronKind::If)?)))
        .collect();
    for (i, neuron) in plan {
        let node = &graph.proto.node[i];
        let grouped = Neuron { kind: NeuronKind::Gn, tau, ..neuron };
        let base = node.name().strip_suffix(".if").unwrap_or(node.name()).to_string();
        let (input, output) = (node.input[0].clone(), node.output[0].clone());
        let name = graph.unique_name(&format!("{base}.gn"));
        graph.proto.node[i] = grouped.node(&name, &input, &output);
    }
}
