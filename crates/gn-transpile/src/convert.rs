//! Pass 2, convert: each QCFS site becomes an IF spiking layer (the traditional
//! conversion, SPEC §2): threshold θ, v(0) = θ/2. Seeds on the sites of [`crate::detect`].
//!
//! ```text
//!   x ─► Div ─► Clip ─► Mul ─► Add ─► Floor ─► Div ─► Mul ─► a      becomes      x ─► IFNeuron{θ} ─► a
//! ```
//!
//! The neuron node writes the site's output value, so nothing downstream is rewired; the
//! chain's nodes become dead and are removed.

use gn_onnx::Graph;

use crate::detect::Site;
use crate::neuron::{Neuron, NeuronKind};

/// Replaces every site's chain by one `IFNeuron` node named `{site}.if`.
pub fn convert(graph: &mut Graph, sites: &[Site]) {
    // Chain nodes are found by the values they write, which are unique; names need not be.
    let chain: std::collections::HashSet<&str> =
        sites.iter().flat_map(|s| s.values.iter().map(String::as_str)).collect();
    graph.proto.node.retain(|n| !n.output.first().is_some_and(|o| chain.contains(o.as_str())));
    for site in sites {
        let neuron = Neuron { kind: NeuronKind::If, theta: site.theta, tau: 1, levels: site.levels };
        let name = graph.unique_name(&format!("{}.if", site.name));
        graph.proto.node.push(neuron.node(&name, &site.input, &site.output));
    }
    graph.remove_dead_nodes();
}
