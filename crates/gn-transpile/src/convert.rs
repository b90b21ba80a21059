//! Pass 2, convert: each QCFS site becomes an IF spiking layer (the traditional
//! conversion, docs/design.md §2): threshold θ, v(0) = θ/2. Seeds on the sites of [`crate::detect`].
//!
//! ```text
//!   x ─► Div ─► Clip ─► Mul ─► Add ─► Floor ─► Div ─► Mul ─► a      becomes      x ─► IFNeuron{θ} ─► a
//! ```
//!
//! The neuron node writes the site's output value, so nothing downstream is rewired; the
//! chain's nodes are removed (constants only they read become dead).

use gn_onnx::{Graph, Patch};

use crate::detect::Site;
use crate::neuron::{Neuron, NeuronKind, NeuronNode};
use crate::pass::Planned;

/// Plans the replacement of every site's chain by one `IFNeuron` node named `{site}.if`.
pub fn run(graph: &Graph, sites: &[Site]) -> Planned {
    let mut patch = Patch::new(graph);
    // Chain nodes are found by the values they write, which are unique; names need not be.
    let chain: std::collections::HashSet<&str> =
        sites.iter().flat_map(|s| s.values.iter().map(String::as_str)).collect();
    for (i, n) in graph.nodes().iter().enumerate() {
        if n.output.first().is_some_and(|o| chain.contains(o.as_str())) {
            patch.remove(i);
        }
    }
    for site in sites {
        let neuron = Neuron { kind: NeuronKind::If, theta: site.theta, tau: 1, levels: site.levels };
        let name = patch.unique_name(&format!("{}.if", site.name));
        match &site.per_channel {
            None => patch.push(NeuronNode { neuron, timesteps: None, direct: false, per_channel: false }.to_node(
                &name,
                &site.input,
                &site.output,
            )),
            Some(pc) => {
                // θ per channel: the layer's second input holds each channel's θ, by
                // which its unit is multiplied (`neuron::expand_layer`).
                let mut dims = vec![1i64; pc.rank];
                dims[1] = pc.theta.len() as i64;
                let theta: Vec<f32> = pc.theta.iter().map(|&t| t as f32).collect();
                let theta = patch.add_initializer_f32(&format!("{}.theta", site.name), &dims, &theta);
                let layer = NeuronNode { neuron, timesteps: None, direct: false, per_channel: true };
                patch.push(layer.to_node_reading(&name, &[&site.input, &theta], &site.output));
            }
        }
    }
    Planned::patch(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::detect;
    use crate::pass;

    /// x ─► QCFS(θ = 2, L = 4) ─► Neg ─► y, in the Div-Clip-Mul-Add-Floor-Div-Mul chain.
    fn qcfs_graph() -> Graph {
        use gn_onnx::data::{float_value_info, tensor_f32};
        let node = |op: &str, inputs: &[&str], out: &str| gn_onnx::proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            name: Some(format!("n_{out}")),
            op_type: Some(op.into()),
            ..Default::default()
        };
        Graph::new(gn_onnx::proto::GraphProto {
            node: vec![
                node("Div", &["x", "theta"], "a"),
                node("Clip", &["a", "zero", "one"], "b"),
                node("Mul", &["b", "levels"], "c"),
                node("Add", &["c", "half"], "d"),
                node("Floor", &["d"], "e"),
                node("Div", &["e", "levels"], "f"),
                node("Mul", &["f", "theta"], "g"),
                node("Neg", &["g"], "y"),
            ],
            initializer: vec![
                tensor_f32("theta", &[], &[2.0]),
                tensor_f32("zero", &[], &[0.0]),
                tensor_f32("one", &[], &[1.0]),
                tensor_f32("levels", &[], &[4.0]),
                tensor_f32("half", &[], &[0.5]),
            ],
            input: vec![float_value_info("x", &[None, Some(3)])],
            output: vec![float_value_info("y", &[None, Some(3)])],
            ..Default::default()
        })
    }

    #[test]
    fn a_site_becomes_one_if_node_writing_its_output() {
        let mut g = qcfs_graph();
        let sites = detect(&g).sites;
        assert_eq!(sites.len(), 1);
        pass::run(&mut g, "convert", |g| Ok(run(g, &sites))).unwrap();
        g.remove_dead_nodes();
        g.sort().unwrap();
        let node = &g.nodes()[0];
        let layer = NeuronNode::parse(node).unwrap().expect("a neuron node");
        assert_eq!(layer.neuron, Neuron { kind: NeuronKind::If, theta: 2.0, tau: 1, levels: 4 });
        assert_eq!(layer.timesteps, None);
        assert_eq!((node.input.as_slice(), node.output.as_slice()), (&["x".to_string()][..], &["g".to_string()][..]));
        // The chain and its constants are gone; the Neg still reads g.
        assert_eq!(g.nodes().len(), 2);
        assert!(g.proto.initializer.is_empty(), "{:?}", g.proto.initializer);
    }

    #[test]
    fn planning_leaves_the_graph_as_it_was() {
        let g = qcfs_graph();
        let before = g.render();
        let sites = detect(&g).sites;
        let planned = run(&g, &sites);
        assert!(!planned.patch.is_empty());
        assert_eq!(g.render(), before);
    }
}
