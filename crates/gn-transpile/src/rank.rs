//! The ranks of values, and the dims of constants computed by nodes, as far as they
//! follow from the graph without running it. The lower pass uses them to tell whether a
//! constant's first axis lines up with the batch axis of a folded tensor (broadcasting
//! aligns shapes from the right), and whether an Expand keeps the batch on axis 0.

use std::collections::HashMap;

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::{tensor_shape_proto::dimension::Value, type_proto, NodeProto};
use gn_onnx::Graph;

use crate::neuron::NeuronNode;
use crate::ops;

/// Ranks of values and dims of constant values.
#[derive(Debug, Default)]
pub struct Shapes {
    ranks: HashMap<String, usize>,
    dims: HashMap<String, Vec<i64>>,
    /// The lengths of 1-D values computed from shapes (a Reshape target built by
    /// `Concat(Unsqueeze(Gather(Shape(x), 0)), …)`, as exports that read the batch write
    /// it): the rank of what they shape.
    lengths: HashMap<String, usize>,
}

impl Shapes {
    /// Infers what it can, visiting the nodes in `order` (a topological order).
    pub fn infer(graph: &Graph, consts: &Constants, order: &[usize]) -> Shapes {
        let mut s = Shapes::default();
        for v in graph.proto.input.iter().chain(&graph.proto.value_info).chain(&graph.proto.output) {
            if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                if let Some(shape) = &t.shape {
                    s.ranks.insert(v.name().to_string(), shape.dim.len());
                    let fixed: Option<Vec<i64>> = shape
                        .dim
                        .iter()
                        .map(|d| match d.value {
                            Some(Value::DimValue(n)) => Some(n),
                            _ => None,
                        })
                        .collect();
                    if let Some(fixed) = fixed.filter(|_| consts.is_constant(v.name())) {
                        s.dims.insert(v.name().to_string(), fixed);
                    }
                }
            }
        }
        for t in &graph.proto.initializer {
            s.set_dims(t.name(), t.dims.clone());
        }
        for &idx in order {
            s.visit(&graph.proto.node[idx], consts);
        }
        s
    }

    fn set_dims(&mut self, name: &str, dims: Vec<i64>) {
        self.ranks.insert(name.to_string(), dims.len());
        self.dims.insert(name.to_string(), dims);
    }

    /// The rank of a value, if known.
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.ranks.get(name).copied()
    }

    /// The length of a 1-D value: a constant's, or one computed from shapes.
    fn length(&self, name: &str) -> Option<usize> {
        match self.dims(name) {
            Some([n]) => usize::try_from(*n).ok(),
            Some(_) => None,
            None => self.lengths.get(name).copied(),
        }
    }

    /// The length of a 1-D value node `n` computes from shapes, if it follows from its
    /// inputs: Shape (of a tensor of known rank, with its start and end), Unsqueeze of a
    /// scalar, Concat, Gather, Cast, Identity, and element-wise arithmetic on them.
    fn computed_length(&self, n: &NodeProto) -> Option<usize> {
        let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty());
        let length = |i: usize| self.length(input(i)?);
        match standard_op(n) {
            "Shape" => {
                let r = self.rank(input(0)?)? as i64;
                let (start, end) = (attr::get_int(n, "start").unwrap_or(0), attr::get_int(n, "end").unwrap_or(r));
                Some(crate::shapes::clamped_range(r, start, end).len())
            }
            "Unsqueeze" if self.rank(input(0)?) == Some(0) => Some(1),
            "Concat" => (0..n.input.len()).map(length).sum(),
            "Gather" => match self.rank(input(1)?) {
                Some(1) => length(1),
                _ => None,
            },
            "Cast" | "Identity" => length(0),
            "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" => match (length(0), length(1)) {
                (Some(a), Some(b)) if a == b || b == 1 => Some(a),
                (Some(1), Some(b)) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// The dims of a constant value (an initializer, a Constant node, or a node computing
    /// a constant of known shape: ConstantOfShape, Expand, Tile), if known.
    pub fn dims(&self, name: &str) -> Option<&[i64]> {
        self.dims.get(name).map(Vec::as_slice)
    }

    /// The rank of a node's first output (of every output for Split), if it follows from
    /// its inputs' ranks and constant operands.
    fn output_rank(&self, n: &NodeProto, consts: &Constants) -> Option<usize> {
        let values = |i: usize| const_ints(consts, n, i);
        let rank = |i: usize| n.input.get(i).filter(|s| !s.is_empty()).and_then(|v| self.rank(v));
        let axes_len = || -> Option<usize> {
            n.attribute.iter().find(|a| a.name() == "axes").map(|a| a.ints.len()).or_else(|| values(1).map(|v| v.len()))
        };
        if NeuronNode::from_node(n).is_some() || ops::keeps_rank(standard_op(n)) {
            rank(0)
        } else if ops::broadcasts(standard_op(n)) {
            let ranks: Option<Vec<usize>> = (0..n.input.len()).filter(|&i| !n.input[i].is_empty()).map(rank).collect();
            ranks.and_then(|r| r.into_iter().max())
        } else {
            match standard_op(n) {
                "Reshape" => values(1).map(|v| v.len()).or_else(|| self.length(n.input.get(1)?)),
                "ConstantOfShape" => self.length(n.input.first()?),
                "Flatten" | "Gemm" => Some(2),
                "Shape" => Some(1),
                "Size" => Some(0),
                "MatMul" => match (rank(0), rank(1)) {
                    (Some(a), Some(b)) if a >= 2 && b >= 2 => Some(a.max(b)),
                    _ => None,
                },
                "Gather" => match (rank(0), rank(1)) {
                    (Some(a), Some(b)) if a >= 1 => Some(a - 1 + b),
                    _ => None,
                },
                "Unsqueeze" => Some(rank(0)? + axes_len()?),
                "Squeeze" => rank(0)?.checked_sub(axes_len()?),
                "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2" => {
                    if attr::get_int(n, "keepdims").unwrap_or(1) != 0 {
                        rank(0)
                    } else {
                        rank(0)?.checked_sub(axes_len()?)
                    }
                }
                "Expand" => match (rank(0), values(1).map(|v| v.len()).or_else(|| self.length(n.input.get(1)?))) {
                    (Some(a), Some(s)) => Some(a.max(s)),
                    _ => None,
                },
                _ => None,
            }
        }
    }

    fn visit(&mut self, n: &NodeProto, consts: &Constants) {
        let Some(out) = n.output.first().filter(|o| !o.is_empty()).cloned() else { return };
        let values = |i: usize| const_ints(consts, n, i);
        let input_dims = |s: &Shapes, i: usize| n.input.get(i).and_then(|v| s.dims(v)).map(<[i64]>::to_vec);
        // Dims of constants computed by nodes.
        let dims = match standard_op(n) {
            "Constant" => consts.dims(&out),
            "ConstantOfShape" => values(0),
            "Identity" | "Cast" => input_dims(self, 0),
            "Expand" => match (input_dims(self, 0), values(1)) {
                (Some(a), Some(b)) => broadcast(&a, &b),
                _ => None,
            },
            "Tile" => match (input_dims(self, 0), values(1)) {
                (Some(a), Some(r)) if a.len() == r.len() => a.iter().zip(&r).map(|(d, r)| d.checked_mul(*r)).collect(),
                _ => None,
            },
            _ => None,
        };
        if let Some(d) = dims {
            self.set_dims(&out, d);
            return;
        }
        if let Some(len) = self.computed_length(n) {
            self.lengths.insert(out.clone(), len);
        }
        let r = self.output_rank(n, consts);
        if let Some(r) = r {
            let outputs = if standard_op(n) == "Split" { n.output.len() } else { 1 };
            for o in n.output.iter().take(outputs).filter(|o| !o.is_empty()) {
                self.ranks.insert(o.clone(), r);
            }
        }
    }
}

/// The values of a node's small constant operand `i` (see [`Constants::small`]), as integers.
pub(crate) fn const_ints(consts: &Constants, n: &NodeProto, i: usize) -> Option<Vec<i64>> {
    let name = n.input.get(i).filter(|s| !s.is_empty())?;
    Some(consts.small(name)?.ok()?.values.iter().map(|&v| v as i64).collect())
}

/// The numpy broadcast of two shapes, if they broadcast.
fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let rank = a.len().max(b.len());
    let at = |s: &[i64], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_from_the_right() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[1, 8, 1, 1], &[2, 8, 5, 5]), Some(vec![2, 8, 5, 5]));
        assert_eq!(broadcast(&[2, 3], &[4, 3]), None);
    }

    /// A Reshape whose target is computed from the input's batch, as the legacy exporter
    /// writes `x.reshape(n, tokens, heads, d)` with `n = x.shape[0]`: the target's length
    /// (1 + 3) is the rank of the result, which the MatMul of the attention reads.
    #[test]
    fn a_target_shape_computed_from_a_shape_gives_the_rank() {
        use gn_onnx::data::{float_value_info, tensor_i64};
        use gn_onnx::proto::{GraphProto, NodeProto};
        let node = |op: &str, inputs: &[&str], output: &str, attribute| NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        };
        let graph = Graph::new(GraphProto {
            input: vec![float_value_info("x", &[None, Some(6), Some(8)])],
            initializer: vec![
                tensor_i64("zero", &[], &[0]),
                tensor_i64("axes", &[1], &[0]),
                tensor_i64("rest", &[3], &[6, 2, 4]),
            ],
            node: vec![
                node("Shape", &["x"], "s", vec![]),
                node("Gather", &["s", "zero"], "n", vec![attr::int("axis", 0)]),
                node("Unsqueeze", &["n", "axes"], "n1", vec![]),
                node("Concat", &["n1", "rest"], "target", vec![attr::int("axis", 0)]),
                node("Reshape", &["x", "target"], "heads", vec![]),
                node("Shape", &["heads"], "tail", vec![attr::int("start", -2)]),
                node("Expand", &["x", "target"], "expanded", vec![]),
            ],
            ..Default::default()
        });
        let consts = graph.constants();
        let order = graph.topo_order().unwrap();
        let shapes = Shapes::infer(&graph, &consts, &order);
        assert_eq!(shapes.length("target"), Some(4));
        assert_eq!(shapes.rank("heads"), Some(4));
        assert_eq!(shapes.length("tail"), Some(2));
        assert_eq!(shapes.rank("expanded"), Some(4));
    }
}
