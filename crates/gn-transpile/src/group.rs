//! Pass 3, group (the paper's Algorithm 1): each IF layer becomes a Group Neuron layer
//! of τ members with thresholds θ_i = i·θ/τ, so θ_GN = θ/τ and v(0) = θ_GN/2.
//! Seeds on `IFNeuron`.
//!
//! ```text
//!   x ─► IFNeuron{θ} ─► a      becomes      x ─► GroupNeuron{θ, τ, θ_GN = θ/τ} ─► a
//! ```

use gn_onnx::{Graph, Patch};

use crate::neuron::{Neuron, NeuronKind, NeuronNode};
use crate::pass::{Context, Planned};

/// Plans the rewrite of every `IFNeuron` node into a `GroupNeuron` of `cx.options.tau`
/// members, named `{site}.gn`.
pub fn run(graph: &Graph, cx: &Context) -> Planned {
    let mut patch = Patch::new(graph);
    for (i, node) in graph.nodes().iter().enumerate() {
        let Some(layer) = NeuronNode::from_node(node).filter(|l| l.neuron.kind == NeuronKind::If) else { continue };
        let grouped =
            NeuronNode { neuron: Neuron { kind: NeuronKind::Gn, tau: cx.options.tau, ..layer.neuron }, ..layer };
        let base = node.name().strip_suffix(".if").unwrap_or(node.name());
        let name = patch.unique_name(&format!("{base}.gn"));
        patch.replace(i, grouped.rewrite(node, &name));
    }
    Planned::patch(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opset::Opset;
    use crate::options::Options;
    use crate::pass;

    #[test]
    fn an_if_layer_becomes_a_group_of_tau_members_with_the_same_theta() {
        let layer = NeuronNode {
            neuron: Neuron { kind: NeuronKind::If, theta: 3.0, tau: 1, levels: 8 },
            timesteps: None,
            direct: false,
            per_channel: false,
        };
        let mut g = Graph::new(gn_onnx::proto::GraphProto {
            node: vec![layer.to_node("site.if", "x", "a")],
            input: vec![gn_onnx::data::float_value_info("x", &[None])],
            output: vec![gn_onnx::data::float_value_info("a", &[None])],
            ..Default::default()
        });
        let cx = Context { options: Options { tau: 4, ..Default::default() }, opset: Opset(17) };
        pass::run(&mut g, "group", |g| Ok(run(g, &cx))).unwrap();
        let node = &g.nodes()[0];
        assert_eq!(node.name(), "site.gn");
        assert_eq!(node.op_type(), "GroupNeuron");
        let grouped = NeuronNode::parse(node).unwrap().unwrap().neuron;
        assert_eq!(grouped, Neuron { kind: NeuronKind::Gn, theta: 3.0, tau: 4, levels: 8 });
        assert_eq!(grouped.theta_gn(), 0.75);
        assert_eq!(grouped.v_init(), 0.375);
        assert_eq!((node.input[0].as_str(), node.output[0].as_str()), ("x", "a"));
    }
}
