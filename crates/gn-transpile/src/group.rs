//! Pass 3, group (the paper's Algorithm 1): each IF layer becomes a Group Neuron layer
//! of τ members with thresholds θ_i = i·θ/τ, so θ_GN = θ/τ and v(0) = θ_GN/2.
//! Seeds on `IFNeuron`.
//!
//! ```text
//!   x ─► IFNeuron{θ} ─► a      becomes      x ─► GroupNeuron{θ, τ, θ_GN = θ/τ} ─► a
//! ```

use gn_onnx::Graph;

use crate::neuron::{Kind, Neuron};

/// Rewrites every `IFNeuron` node into a `GroupNeuron` of `tau` members, named `{site}.gn`.
pub fn group(graph: &mut Graph, tau: u32) {
    for i in 0..graph.proto.node.len() {
        let node = &graph.proto.node[i];
        let Some(neuron) = Neuron::from_node(node).filter(|n| n.kind == Kind::If) else { continue };
        let grouped = Neuron { kind: Kind::Group, tau, ..neuron };
        let base = node.name().strip_suffix(".if").unwrap_or(node.name()).to_string();
        let (input, output) = (node.input[0].clone(), node.output[0].clone());
        let name = graph.unique_name(&format!("{base}.gn"));
        graph.proto.node[i] = grouped.node(&name, &input, &output);
    }
}
