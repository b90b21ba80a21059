//! Pass 2b, commute: a max-pool directly after a spiking layer whose input current is
//! time-invariant moves in front of it. Seeds on `IFNeuron` (after convert, before group).
//!
//! ```text
//!   x (time-invariant) ─► IFNeuron ─► a ─► MaxPool ─► m      becomes      x ─► MaxPool ─► IFNeuron ─► m
//! ```
//!
//! QCFS is monotone non-decreasing, so `MaxPool(QCFS(x)) = QCFS(MaxPool(x))`: the ANN's
//! function is unchanged. The pooled current is time-invariant like `x`, so the spiking
//! layer converts it as it would any other, and no max-pool acts on spikes. This is the
//! stem of every torchvision ResNet (`Conv 7×7/2 → BN → QCFS → MaxPool 3×3/2`).
//! MaxPool (with no Indices output read), GlobalMaxPool and ReduceMax move; after a layer
//! with θ per channel, only MaxPool and GlobalMaxPool, which keep the channels apart.

use std::collections::HashSet;

use gn_onnx::{Graph, Patch};

use crate::error::TranspileError;
use crate::neuron::NeuronNode;
use crate::ops;
use crate::pass::Planned;
use crate::time::{analyze, TimeClass};

/// One max-pool moved in front of a spiking layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The max-pool node.
    pub pool: String,
    pub op: String,
    /// The spiking layer it now feeds.
    pub layer: String,
    /// The activation value the pool read (the QCFS site's output in the ANN).
    pub activation: String,
    /// The value the pool wrote, which the spiking layer now writes: the layer's output
    /// in the converted model (the ANN's activation value before the pool is gone).
    pub output: String,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} '{}' moved in front of spiking layer '{}' (its input current is time-invariant; max-pool and QCFS commute)",
            self.op, self.pool, self.layer
        )
    }
}

/// Plans the moves; reports them.
pub fn run(graph: &Graph) -> Result<Planned<Vec<Move>>, TranspileError> {
    let classes = analyze(graph)?.classes;
    let consumers = graph.consumers();
    let outputs: HashSet<String> = graph.output_names().into_iter().collect();
    let mut patch = Patch::new(graph);
    let mut moves = Vec::new();
    for (i, n) in graph.nodes().iter().enumerate() {
        let Some(layer) = NeuronNode::from_node(n) else { continue };
        let (x, a) = (&n.input[0], &n.output[0]);
        if !matches!(classes.get(x), Some(TimeClass::Static | TimeClass::Const)) || outputs.contains(a) {
            continue;
        }
        let Some(&[p]) = consumers.get(a).map(Vec::as_slice) else { continue };
        let pool = &graph.nodes()[p];
        let indices_read = pool.output.get(1).is_some_and(|o| !o.is_empty());
        // A layer with θ per channel commutes only with a pool that keeps the channels
        // apart (a ReduceMax may take the max across them).
        let op = gn_onnx::graph::standard_op(pool);
        if !(ops::is_max_pool(op)
            && !(layer.per_channel && op == "ReduceMax")
            && pool.input.len() == 1
            && pool.input[0] == *a
            && !indices_read)
        {
            continue;
        }
        // x ─► pool ─► x.pooled ─► neuron ─► m (the value the pool wrote).
        let m = pool.output[0].clone();
        let pooled = patch.unique_name(&format!("{x}.pooled"));
        let mut moved_pool = pool.clone();
        moved_pool.input[0] = x.clone();
        moved_pool.output = vec![pooled.clone()];
        let mut moved_neuron = n.clone();
        moved_neuron.input[0] = pooled;
        moved_neuron.output[0] = m.clone();
        patch.replace(p, moved_pool);
        patch.replace(i, moved_neuron);
        moves.push(Move {
            pool: pool.name().to_string(),
            op: pool.op_type().to_string(),
            layer: n.name().to_string(),
            activation: a.clone(),
            output: m,
        });
    }
    Ok(Planned { patch, report: moves })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron::{Neuron, NeuronKind};
    use gn_onnx::proto::{GraphProto, NodeProto};

    fn node(op: &str, input: &str, output: &str) -> NodeProto {
        NodeProto {
            input: vec![input.into()],
            output: vec![output.into()],
            name: Some(output.into()),
            op_type: Some(op.into()),
            ..Default::default()
        }
    }

    fn commute(g: &mut Graph) -> Result<Vec<Move>, TranspileError> {
        let moves = crate::pass::run(g, "commute", run)?;
        g.sort()?;
        Ok(moves)
    }

    fn graph(nodes: Vec<NodeProto>) -> Graph {
        Graph::new(GraphProto {
            node: nodes,
            input: vec![gn_onnx::data::float_value_info("x", &[None, Some(1), Some(4), Some(4)])],
            output: vec![gn_onnx::data::float_value_info("y", &[None])],
            ..Default::default()
        })
    }

    fn neuron(input: &str, output: &str) -> NodeProto {
        let neuron = Neuron { kind: NeuronKind::If, theta: 1.0, tau: 1, levels: 4 };
        NeuronNode { neuron, timesteps: None, direct: false, per_channel: false }.to_node(output, input, output)
    }

    #[test]
    fn a_max_pool_on_a_time_invariant_layer_moves_in_front() {
        let mut g = graph(vec![neuron("x", "a"), node("MaxPool", "a", "m"), neuron("m", "b"), node("Relu", "b", "y")]);
        let moves = commute(&mut g).unwrap();
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].pool, "m");
        let render = g.render();
        // The pool reads x, the layer reads the pooled current and writes m.
        assert!(render.contains("m: MaxPool(x) -> x.pooled"), "{render}");
        assert!(render.contains("a: gn.transpile::IFNeuron(x.pooled) -> m"), "{render}");
    }

    #[test]
    fn a_reduce_max_after_a_layer_with_theta_per_channel_stays() {
        let neuron = Neuron { kind: NeuronKind::If, theta: 1.0, tau: 1, levels: 0 };
        let layer = NeuronNode { neuron, timesteps: None, direct: false, per_channel: true };
        let mut g = graph(vec![layer.to_node_reading("a", &["x", "theta_c"], "a"), node("ReduceMax", "a", "m")]);
        g.proto.initializer.push(gn_onnx::data::tensor_f32("theta_c", &[1, 1, 1, 1], &[1.0]));
        assert!(commute(&mut g).unwrap().is_empty());
        // A MaxPool keeps the channels apart: it moves.
        let mut g = graph(vec![layer.to_node_reading("a", &["x", "theta_c"], "a"), node("MaxPool", "a", "m")]);
        g.proto.initializer.push(gn_onnx::data::tensor_f32("theta_c", &[1, 1, 1, 1], &[1.0]));
        assert_eq!(commute(&mut g).unwrap().len(), 1);
    }

    #[test]
    fn a_max_pool_on_spikes_stays() {
        // The second layer's current comes from spikes: its max-pool is not moved.
        let mut g = graph(vec![neuron("x", "a"), neuron("a", "b"), node("MaxPool", "b", "m"), node("Relu", "m", "y")]);
        assert!(commute(&mut g).unwrap().is_empty());
    }

    #[test]
    fn a_layer_read_by_more_than_the_pool_stays() {
        let add = NodeProto {
            input: vec!["a".into(), "m".into()],
            output: vec!["y".into()],
            op_type: Some("Add".into()),
            ..Default::default()
        };
        let mut g = graph(vec![neuron("x", "a"), node("MaxPool", "a", "m"), add]);
        assert!(commute(&mut g).unwrap().is_empty());
    }
}
