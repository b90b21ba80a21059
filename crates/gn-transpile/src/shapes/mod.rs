//! Static shape inference: the shape of every value of a graph as far as it follows from
//! the graph inputs' declared shapes, the constants and each op's ONNX shape rule, with
//! the batch kept symbolic. The stateful emission declares its state tensors from it
//! (`pipeline::state_shapes`).
//!
//! A dimension is a fixed size or k·N ([`Dim`]), N being the size that the graph inputs
//! leave symbolic on axis 0. Small integer tensors (shapes and pieces of them) are
//! followed by value, element by element, so that a Reshape or Expand target that an
//! exporter computes from the batch resolves:
//!
//! ```text
//!   x [N, 6, 8] ─► Shape ─► [N, 6, 8] ─► Gather(0) ─► N ─► Unsqueeze ─► [N] ─┐
//!                                                      [-1, 2, 4] ───► Concat ─► [N, -1, 2, 4]
//!   x ─► Reshape(x, [N, -1, 2, 4]) ─► [N, 6, 2, 4]      (−1 = 48·N / (N·2·4))
//! ```
//!
//! A value whose shape does not follow (a data-dependent size, an op without a rule, a
//! size that is not a multiple of N) is recorded with the node and the reason, and
//! reported only when its shape is asked for. Arithmetic on sizes is checked: a hostile
//! model gets an error, never a panic or an allocation of its sizes.

//!
//! `dim` has the arithmetic of sizes, `rules` the rule of each op (element-wise ops and
//! the ops that make shapes), `layout` those that move elements (Reshape, Concat, Slice,
//! Gather, …) and `kernels` those that compute over windows and axes (Conv, pools, MatMul,
//! Einsum, reductions, Resize).

use std::collections::HashMap;
use std::rc::Rc;

use gn_onnx::graph::Constants;
use gn_onnx::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto, NodeProto, ValueInfoProto};
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::metadata::StateDim;

mod dim;
mod kernels;
mod layout;
mod rules;

pub use dim::Dim;
pub(crate) use layout::clamped_range;
use rules::{rule, Cx};

/// The most elements of a tensor followed by value (a shape or a piece of one).
const MAX_VALUE_ELEMENTS: usize = gn_onnx::graph::SMALL_ELEMENTS;

/// What is known of a value: its shape, and its elements (row-major) when it is a small
/// integer tensor whose elements follow.
#[derive(Debug, Clone, PartialEq)]
struct Fact {
    shape: Vec<Dim>,
    value: Option<Vec<Dim>>,
}

impl Fact {
    fn shaped(shape: Vec<Dim>) -> Fact {
        Fact { shape, value: None }
    }

    /// A 1-D value of these elements.
    fn vector(value: Vec<Dim>) -> Fact {
        Fact { shape: vec![Dim::Fixed(value.len() as i64)], value: Some(value) }
    }

    /// A shape with a value, the value kept only when it is small and has as many
    /// elements as the shape.
    fn with_value(shape: Vec<Dim>, value: Option<Vec<Dim>>) -> Fact {
        let value = value.filter(|v| v.len() <= MAX_VALUE_ELEMENTS && fixed_count(&shape) == Some(v.len()));
        Fact { shape, value }
    }
}

/// Why a value's shape is unknown: the node where inference stopped and the reason.
#[derive(Debug)]
struct Failure {
    node: String,
    op: String,
    reason: String,
}

type Known = Result<Fact, Rc<Failure>>;

/// Why a rule gave no shape: an input whose shape is unknown, or a reason of its own.
enum Why {
    Upstream(Rc<Failure>),
    Here(String),
}

type Rule<T> = Result<T, Why>;

fn here<T>(reason: impl Into<String>) -> Rule<T> {
    Err(Why::Here(reason.into()))
}

/// The statically inferred shapes of a graph's values.
#[derive(Debug)]
pub struct StaticShapes {
    facts: HashMap<String, Known>,
}

impl StaticShapes {
    /// Infers the shape of every value of `graph`, reading the opset-dependent forms of
    /// ops (Slice, Resize) for the default-domain `opset`. Fails only on a cycle.
    pub fn infer(graph: &Graph, opset: i64) -> Result<StaticShapes, TranspileError> {
        let order = graph.topo_order()?;
        let consts = graph.constants();
        let mut facts: HashMap<String, Known> = HashMap::new();
        for t in &graph.proto.initializer {
            let known = if t.dims.iter().all(|&d| d >= 0) {
                let shape = t.dims.iter().map(|&d| Dim::Fixed(d)).collect();
                Ok(Fact::with_value(shape, small_ints(&consts, t.name())))
            } else {
                Err(Rc::new(Failure {
                    node: t.name().into(),
                    op: "initializer".into(),
                    reason: "has a negative dimension".into(),
                }))
            };
            facts.insert(t.name().to_string(), known);
        }
        for v in &graph.proto.input {
            let known = input_fact(v)
                .map_err(|reason| Rc::new(Failure { node: v.name().into(), op: "graph input".into(), reason }));
            facts.insert(v.name().to_string(), known);
        }
        for &i in &order {
            let node = &graph.proto.node[i];
            let outcome = rule(&Cx { facts: &facts, consts: &consts, opset, node });
            let failure = |f: Rc<Failure>| (0..node.output.len()).map(|_| Err(f.clone())).collect();
            let outputs: Vec<Known> = match outcome {
                Ok(found) => found.into_iter().map(Ok).collect(),
                Err(Why::Upstream(f)) => failure(f),
                Err(Why::Here(reason)) => {
                    failure(Rc::new(Failure { node: node_name(node), op: node.op_type().into(), reason }))
                }
            };
            for (k, o) in node.output.iter().enumerate() {
                if o.is_empty() {
                    continue;
                }
                let known = outputs.get(k).cloned().unwrap_or_else(|| {
                    Err(Rc::new(Failure {
                        node: node_name(node),
                        op: node.op_type().into(),
                        reason: format!("the shape of output {k} does not follow from the inputs"),
                    }))
                });
                facts.insert(o.clone(), known);
            }
        }
        Ok(StaticShapes { facts })
    }

    /// The shape of `value`, or an error naming the node where inference stopped and why.
    pub fn shape(&self, value: &str) -> Result<&[Dim], TranspileError> {
        match self.facts.get(value) {
            Some(Ok(f)) => Ok(&f.shape),
            Some(Err(f)) => Err(TranspileError::Node {
                node: f.node.clone(),
                op: f.op.clone(),
                reason: format!("cannot infer the shape of '{value}': {}", f.reason),
            }),
            None => Err(TranspileError::Pass {
                pass: "emit",
                node: String::new(),
                reason: format!("cannot infer the shape of '{value}': no node writes it"),
            }),
        }
    }

    /// The shape of `value` as a state tensor records it ([`crate::metadata::State`]).
    pub fn state_shape(&self, value: &str) -> Result<Vec<StateDim>, TranspileError> {
        self.shape(value)?
            .iter()
            .map(|d| match *d {
                Dim::Fixed(n) => Ok(StateDim::Size(n)),
                Dim::Batch(k) if k >= 1 => Ok(StateDim::Batch(k as u64)),
                Dim::Batch(_) => Err(TranspileError::Pass {
                    pass: "emit",
                    node: value.to_string(),
                    reason: format!("'{value}' has size {d}, which no batch gives a state tensor"),
                }),
            })
            .collect()
    }
}

fn node_name(n: &NodeProto) -> String {
    match n.name() {
        "" => n.output.first().cloned().unwrap_or_default(),
        name => name.to_string(),
    }
}

/// A graph input's declared shape: numbers are fixed, and a symbolic or missing size is
/// N on axis 0 (refused on any other axis).
fn input_fact(v: &ValueInfoProto) -> Result<Fact, String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    let shape = t.shape.as_ref().ok_or("declares no shape")?;
    let dims = shape.dim.iter().enumerate().map(|(axis, d)| match d.value {
        Some(DimValue::DimValue(n)) if n >= 0 => Ok(Dim::Fixed(n)),
        Some(DimValue::DimValue(n)) => Err(format!("declares size {n} on axis {axis}")),
        _ if axis == 0 => Ok(Dim::Batch(1)),
        _ => Err(format!("has a symbolic size on axis {axis}; only axis 0, the batch, may be symbolic")),
    });
    Ok(Fact::shaped(dims.collect::<Result<_, _>>()?))
}

/// The elements of a small constant, if they are integers.
fn small_ints(consts: &Constants, name: &str) -> Option<Vec<Dim>> {
    let c = consts.small(name)?.ok()?;
    // Sizes beyond 2^53 (INT64_MAX as a Slice end) are read saturated: they only clamp.
    c.values.iter().map(|&v| (v.is_finite() && v.fract() == 0.0).then_some(Dim::Fixed(v as i64))).collect()
}

/// The element count of a shape whose dims are all fixed.
fn fixed_count(shape: &[Dim]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(usize::try_from(d.fixed()?).ok()?))
}

#[cfg(test)]
mod tests;
