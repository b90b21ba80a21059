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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto, NodeProto, ValueInfoProto};
use gn_onnx::window::{Padding, Window};
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::metadata::StateDim;
use crate::neuron::NeuronNode;

/// The most elements of a tensor followed by value (a shape or a piece of one).
const MAX_VALUE_ELEMENTS: usize = gn_onnx::graph::SMALL_ELEMENTS;

/// One dimension of a value, or one element of a small integer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A size known before running.
    Fixed(i64),
    /// k·N, for the batch N of the graph inputs (k ≠ 0).
    Batch(i64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Batch(1) => write!(f, "N"),
            Dim::Batch(k) => write!(f, "{k}·N"),
        }
    }
}

/// c·N^p: a product of dims (the size of a tensor, the total a Reshape keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    coef: i64,
    power: u32,
}

impl Term {
    const ONE: Term = Term { coef: 1, power: 0 };

    fn mul(self, o: Term) -> Option<Term> {
        Some(Term { coef: self.coef.checked_mul(o.coef)?, power: self.power.checked_add(o.power)? })
    }

    /// self / o when it is exact.
    fn div(self, o: Term) -> Option<Term> {
        if self.coef == 0 {
            return Some(Term { coef: 0, power: 0 });
        }
        if o.coef == 0 || self.power < o.power || self.coef.checked_rem(o.coef)? != 0 {
            return None;
        }
        Some(Term { coef: self.coef.checked_div(o.coef)?, power: self.power - o.power })
    }

    fn dim(self) -> Option<Dim> {
        match (self.coef, self.power) {
            (0, _) => Some(Dim::Fixed(0)),
            (c, 0) => Some(Dim::Fixed(c)),
            (c, 1) => Some(Dim::Batch(c)),
            _ => None,
        }
    }
}

impl Dim {
    fn term(self) -> Term {
        match self {
            Dim::Fixed(c) => Term { coef: c, power: 0 },
            Dim::Batch(k) => Term { coef: k, power: 1 },
        }
    }

    fn fixed(self) -> Option<i64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Batch(_) => None,
        }
    }

    /// k·N with k = 0 is the size 0.
    fn batch(k: i64) -> Dim {
        if k == 0 {
            Dim::Fixed(0)
        } else {
            Dim::Batch(k)
        }
    }

    fn add(self, o: Dim) -> Option<Dim> {
        match (self, o) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a.checked_add(b).map(Dim::Fixed),
            (Dim::Batch(a), Dim::Batch(b)) => a.checked_add(b).map(Dim::batch),
            (Dim::Batch(_), Dim::Fixed(0)) => Some(self),
            (Dim::Fixed(0), Dim::Batch(_)) => Some(o),
            _ => None,
        }
    }

    fn neg(self) -> Option<Dim> {
        match self {
            Dim::Fixed(a) => a.checked_neg().map(Dim::Fixed),
            Dim::Batch(k) => k.checked_neg().map(Dim::Batch),
        }
    }

    fn sub(self, o: Dim) -> Option<Dim> {
        self.add(o.neg()?)
    }

    fn mul(self, o: Dim) -> Option<Dim> {
        self.term().mul(o.term())?.dim()
    }

    /// self / o when it is exact.
    fn div(self, o: Dim) -> Option<Dim> {
        self.term().div(o.term())?.dim()
    }

    /// Whether the dim is a size: at least 0, and k·N with k > 0.
    fn is_size(self) -> bool {
        match self {
            Dim::Fixed(n) => n >= 0,
            Dim::Batch(k) => k > 0,
        }
    }
}

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

/// The product of `dims` (the size of a tensor of that shape).
fn product(dims: &[Dim]) -> Option<Term> {
    dims.iter().try_fold(Term::ONE, |acc, d| acc.mul(d.term()))
}

/// The product of `dims` as one dim, if it is fixed or a multiple of N.
fn product_dim(dims: &[Dim]) -> Rule<Dim> {
    match product(dims).and_then(Term::dim) {
        Some(d) => Ok(d),
        None => here(format!("the product of {} is not a fixed size or a multiple of N", render(dims))),
    }
}

fn render(dims: &[Dim]) -> String {
    let inner: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// The numpy broadcast of two shapes.
fn broadcast(a: &[Dim], b: &[Dim]) -> Rule<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let at = |s: &[Dim], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { Dim::Fixed(1) };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (x, Dim::Fixed(1)) => Ok(x),
            (Dim::Fixed(1), y) => Ok(y),
            _ => here(format!("{} and {} do not broadcast", render(a), render(b))),
        })
        .collect()
}

/// The elements of the broadcast of small values, each computed by `f` from the inputs'
/// elements; `None` unless every input has a value and the result is small.
fn broadcast_values(out: &[Dim], inputs: &[&Fact], f: impl Fn(&[Dim]) -> Option<Dim>) -> Option<Vec<Dim>> {
    let count = fixed_count(out).filter(|&c| c <= MAX_VALUE_ELEMENTS)?;
    let out: Vec<usize> = out.iter().map(|d| d.fixed().map(|n| n as usize)).collect::<Option<_>>()?;
    let mut shapes = Vec::with_capacity(inputs.len());
    for fact in inputs {
        fact.value.as_ref()?;
        let s: Vec<usize> = fact.shape.iter().map(|d| d.fixed().map(|n| n as usize)).collect::<Option<_>>()?;
        shapes.push(s);
    }
    let mut result = Vec::with_capacity(count);
    let mut args = vec![Dim::Fixed(0); inputs.len()];
    for flat in 0..count {
        for (k, (fact, shape)) in inputs.iter().zip(&shapes).enumerate() {
            // The element of input k that broadcasts to out position `flat`.
            let (mut rest, mut index, mut stride) = (flat, 0usize, 1usize);
            for (axis, &n) in out.iter().enumerate().rev() {
                let i = rest % n.max(1);
                rest /= n.max(1);
                let Some(offset) = (axis + shape.len()).checked_sub(out.len()) else { continue };
                let m = shape[offset];
                index += if m == 1 { 0 } else { i } * stride;
                stride *= m;
            }
            args[k] = *fact.value.as_ref()?.get(index)?;
        }
        result.push(f(&args)?);
    }
    Some(result)
}

/// The elements of a small value moved to `out`: output axis k reads input axis
/// `from[k].0` at `start + i·step` for its index i (a Transpose, a Slice).
fn moved_values(value: &[Dim], shape: &[Dim], out: &[Dim], from: &[(usize, i128, i128)]) -> Option<Vec<Dim>> {
    let count = fixed_count(out).filter(|&c| c <= MAX_VALUE_ELEMENTS)?;
    let sizes: Vec<i128> = shape.iter().map(|d| d.fixed().map(i128::from)).collect::<Option<_>>()?;
    let out: Vec<i128> = out.iter().map(|d| d.fixed().map(i128::from)).collect::<Option<_>>()?;
    let mut strides = vec![1i128; sizes.len()];
    for a in (0..sizes.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * sizes[a + 1];
    }
    (0..count as i128)
        .map(|flat| {
            let (mut rest, mut index) = (flat, 0i128);
            for (k, &n) in out.iter().enumerate().rev() {
                let i = rest % n.max(1);
                rest /= n.max(1);
                let (a, start, step) = *from.get(k)?;
                index += (start + i * step) * strides.get(a)?;
            }
            value.get(usize::try_from(index).ok()?).copied()
        })
        .collect()
}

/// An axis in `-rank..rank`, as an index.
fn axis(a: i64, rank: usize) -> Rule<usize> {
    let r = rank as i64;
    match a {
        a if (0..r).contains(&a) => Ok(a as usize),
        a if (-r..0).contains(&a) => Ok((a + r) as usize),
        _ => here(format!("axis {a} is outside a value of rank {rank}")),
    }
}

/// The axes in `-rank..rank`, as sorted distinct indices.
fn axes(list: &[i64], rank: usize) -> Rule<Vec<usize>> {
    let mut out = list.iter().map(|&a| axis(a, rank)).collect::<Rule<Vec<usize>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return here(format!("axes {list:?} repeat an axis"));
    }
    Ok(out)
}

/// The reading of one node: its inputs' facts, the constants, the opset.
struct Cx<'a> {
    facts: &'a HashMap<String, Known>,
    consts: &'a Constants<'a>,
    opset: i64,
    node: &'a NodeProto,
}

impl<'a> Cx<'a> {
    fn name(&self, i: usize) -> Option<&'a str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn has(&self, i: usize) -> bool {
        self.name(i).is_some()
    }

    fn fact(&self, i: usize) -> Rule<&'a Fact> {
        let Some(name) = self.name(i) else { return here(format!("has no input {i}")) };
        match self.facts.get(name) {
            Some(Ok(f)) => Ok(f),
            Some(Err(f)) => Err(Why::Upstream(f.clone())),
            None => here(format!("reads '{name}', which is not a graph input, an initializer or a node's output")),
        }
    }

    fn shape(&self, i: usize) -> Rule<&'a [Dim]> {
        Ok(&self.fact(i)?.shape)
    }

    /// The elements of input `i` (followed through the graph, or a constant's).
    fn value(&self, i: usize) -> Rule<Vec<Dim>> {
        match &self.fact(i)?.value {
            Some(v) => Ok(v.clone()),
            None => here(format!(
                "input '{}' is not a small integer value known before running",
                self.name(i).unwrap_or_default()
            )),
        }
    }

    /// The elements of input `i`, all fixed.
    fn ints(&self, i: usize) -> Rule<Vec<i64>> {
        let value = self.value(i)?;
        match value.iter().map(|d| d.fixed()).collect::<Option<Vec<i64>>>() {
            Some(ints) => Ok(ints),
            None => here(format!("input {i} is {}, which depends on the batch", render(&value))),
        }
    }

    /// The elements of a constant input `i` as numbers (scales).
    fn floats(&self, i: usize) -> Rule<Vec<f64>> {
        let name = self.name(i).unwrap_or_default();
        match self.consts.small(name) {
            Some(Ok(c)) => Ok(c.values),
            _ => here(format!("input '{name}' is not a small constant")),
        }
    }

    fn attr(&self, name: &str) -> Option<&'a gn_onnx::proto::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        attr::get_int(self.node, name).unwrap_or(default)
    }

    fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A list read from attribute `name` if the node has it, else from input `i`
    /// (the two spellings of axes, pads, splits across opsets); `None` when neither is given.
    fn attr_or_input(&self, name: &str, i: usize) -> Rule<Option<Vec<i64>>> {
        match self.ints_attr(name) {
            Some(v) => Ok(Some(v)),
            None if self.has(i) => self.ints(i).map(Some),
            None => Ok(None),
        }
    }
}

/// The elementwise ops whose output has their first input's shape.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitwiseNot",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "DequantizeLinear",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "QuantizeLinear",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
];

/// The ops that broadcast their inputs against each other (numpy style).
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "PRelu",
    "Pow",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

/// The shapes of a node's outputs, in order.
fn rule(cx: &Cx) -> Rule<Vec<Fact>> {
    let n = cx.node;
    if NeuronNode::from_node(n).is_some() {
        return Ok(vec![Fact::shaped(cx.shape(0)?.to_vec())]);
    }
    let op = standard_op(n);
    if op.is_empty() {
        return here(format!("op '{}' of domain '{}' has no shape rule", n.op_type(), n.domain()));
    }
    if SAME_SHAPE.contains(&op) {
        return Ok(vec![unary(cx, op)?]);
    }
    if BROADCAST.contains(&op) {
        return Ok(vec![elementwise(cx, op)?]);
    }
    let one = |f: Fact| -> Rule<Vec<Fact>> { Ok(vec![f]) };
    match op {
        "Dropout" => {
            let x = cx.fact(0)?.clone();
            Ok(vec![x.clone(), Fact::shaped(x.shape)])
        }
        "BatchNormalization" => {
            let mut out = vec![Fact::shaped(cx.shape(0)?.to_vec())];
            for i in [3, 4] {
                if n.output.len() > out.len() {
                    out.push(Fact::shaped(cx.shape(i)?.to_vec()));
                }
            }
            Ok(out)
        }
        "LayerNormalization" => {
            let x = cx.shape(0)?;
            let a = axis(cx.int("axis", -1), x.len())?;
            let stats: Vec<Dim> = x.iter().enumerate().map(|(i, &d)| if i < a { d } else { Dim::Fixed(1) }).collect();
            Ok(vec![Fact::shaped(x.to_vec()), Fact::shaped(stats.clone()), Fact::shaped(stats)])
        }
        "Constant" => one(constant(cx)?),
        "Shape" => one(shape_of(cx)?),
        "Size" => {
            let size = product_dim(cx.shape(0)?)?;
            one(Fact { shape: Vec::new(), value: Some(vec![size]) })
        }
        "ConstantOfShape" => one(constant_of_shape(cx)?),
        "Range" => one(range(cx)?),
        "Conv" => one(conv(cx)?),
        "ConvTranspose" => one(conv_transpose(cx)?),
        "MaxPool" | "AveragePool" | "LpPool" => {
            let out = pool(cx)?;
            Ok(vec![out.clone(), out])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = cx.shape(0)?;
            if x.len() < 2 {
                return here(format!("input of rank {} has no channel axis", x.len()));
            }
            let mut out = x[..2].to_vec();
            out.resize(x.len(), Dim::Fixed(1));
            one(Fact::shaped(out))
        }
        "Gemm" => one(gemm(cx)?),
        "MatMul" => one(Fact::shaped(matmul(cx.shape(0)?, cx.shape(1)?)?)),
        "Einsum" => one(Fact::shaped(einsum(cx)?)),
        "Flatten" => {
            let x = cx.fact(0)?;
            let r = x.shape.len() as i64;
            let a = cx.int("axis", 1);
            let a = if a < 0 { a + r } else { a };
            if !(0..=r).contains(&a) {
                return here(format!("axis {a} is outside a value of rank {r}"));
            }
            let (outer, inner) = x.shape.split_at(a as usize);
            let shape = vec![product_dim(outer)?, product_dim(inner)?];
            one(Fact::with_value(shape, x.value.clone()))
        }
        "Reshape" => one(reshape(cx)?),
        "Transpose" => {
            let x = cx.shape(0)?;
            let perm = cx.ints_attr("perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            let mut seen = vec![false; x.len()];
            let mut out = Vec::with_capacity(x.len());
            for &p in &perm {
                let a = usize::try_from(p).ok().filter(|&a| a < x.len() && !seen[a]);
                let Some(a) = a else { return here(format!("perm {perm:?} is not a permutation of {} axes", x.len())) };
                seen[a] = true;
                out.push(x[a]);
            }
            if out.len() != x.len() {
                return here(format!("perm {perm:?} is not a permutation of {} axes", x.len()));
            }
            let from: Vec<(usize, i128, i128)> = perm.iter().map(|&p| (p as usize, 0, 1)).collect();
            let value = cx.fact(0)?.value.as_ref().and_then(|v| moved_values(v, x, &out, &from));
            one(Fact::with_value(out, value))
        }
        "Concat" => one(concat(cx)?),
        "Split" => split(cx),
        "Slice" => one(slice(cx)?),
        "Gather" => one(gather(cx)?),
        "GatherElements" => one(Fact::shaped(cx.shape(1)?.to_vec())),
        // The data's shape, some of its elements overwritten.
        "ScatterND" | "ScatterElements" | "Scatter" => one(Fact::shaped(cx.shape(0)?.to_vec())),
        "Squeeze" => one(squeeze(cx)?),
        "Unsqueeze" => one(unsqueeze(cx)?),
        "Pad" => one(pad(cx)?),
        "Expand" => {
            let target = cx.value(1)?;
            if let Some(d) = target.iter().find(|d| !d.is_size()) {
                return here(format!("target {} has size {d}", render(&target)));
            }
            let x = cx.fact(0)?;
            let shape = broadcast(&x.shape, &target)?;
            let value = broadcast_values(&shape, &[x], |a| Some(a[0]));
            one(Fact::with_value(shape, value))
        }
        "Tile" => {
            let x = cx.shape(0)?;
            let repeats = cx.ints(1)?;
            if repeats.len() != x.len() {
                return here(format!("{} repeats for a value of rank {}", repeats.len(), x.len()));
            }
            let out = x.iter().zip(&repeats).map(|(d, &r)| match d.mul(Dim::Fixed(r)) {
                Some(t) if r >= 0 => Ok(t),
                _ => here(format!("repeating {d} × {r} is not a size")),
            });
            one(Fact::shaped(out.collect::<Rule<_>>()?))
        }
        "ReduceMax" | "ReduceMin" | "ReduceMean" | "ReduceSum" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => one(reduce(cx, op)?),
        "ArgMax" | "ArgMin" => {
            let x = cx.shape(0)?;
            let a = axis(cx.int("axis", 0), x.len())?;
            one(Fact::shaped(reduced(x, &[a], cx.int("keepdims", 1) != 0)))
        }
        "TopK" => {
            let x = cx.shape(0)?;
            let k = if cx.opset >= 10 {
                match cx.ints(1)?.as_slice() {
                    [k] => *k,
                    other => return here(format!("K is {other:?}, not one number")),
                }
            } else {
                cx.int("k", -1)
            };
            if k < 0 {
                return here(format!("K = {k} is negative"));
            }
            let mut out = x.to_vec();
            out[axis(cx.int("axis", -1), x.len())?] = Dim::Fixed(k);
            Ok(vec![Fact::shaped(out.clone()), Fact::shaped(out)])
        }
        "Resize" | "Upsample" => one(resize(cx, op)?),
        "DepthToSpace" | "SpaceToDepth" => {
            let x = cx.shape(0)?;
            let b = cx.int("blocksize", 0);
            let (&[n, c, h, w], true) = (x, b > 0) else {
                return here(format!("needs a rank-4 input and a positive blocksize, has {} and {b}", render(x)));
            };
            let bb = b.checked_mul(b).map(Dim::Fixed);
            let b = Dim::Fixed(b);
            let out = if op == "DepthToSpace" {
                [Some(n), bb.and_then(|bb| c.div(bb)), h.mul(b), w.mul(b)]
            } else {
                [Some(n), bb.and_then(|bb| c.mul(bb)), h.div(b), w.div(b)]
            };
            match out.into_iter().collect::<Option<Vec<Dim>>>() {
                Some(out) => one(Fact::shaped(out)),
                None => here(format!("blocksize {b} does not divide {}", render(x))),
            }
        }
        "If" | "Loop" | "Scan" => here("has a subgraph, whose shapes are not inferred"),
        "NonZero" | "NonMaxSuppression" | "Unique" | "Compress" => here("has a data-dependent output size"),
        _ => here(format!("no static shape rule for {op}")),
    }
}

/// An elementwise op of one input: the same shape, and the value of shape arithmetic.
fn unary(cx: &Cx, op: &str) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let value = x.value.as_ref().and_then(|v| {
        v.iter()
            .map(|&d| match op {
                "Identity" | "Floor" | "Ceil" | "Round" | "CastLike" => Some(d),
                "Cast" if cx.int("to", 0) == 9 => Some(Dim::Fixed((d != Dim::Fixed(0)) as i64)),
                "Cast" => Some(d),
                "Neg" => d.neg(),
                "Abs" => match d {
                    Dim::Fixed(a) => a.checked_abs().map(Dim::Fixed),
                    Dim::Batch(k) => k.checked_abs().map(Dim::Batch),
                },
                _ => None,
            })
            .collect()
    });
    Ok(Fact::with_value(x.shape.clone(), value))
}

/// A broadcasting op: the broadcast of its inputs' shapes, and the value of shape
/// arithmetic (Add, Sub, Mul, exact Div, Max, Min, Equal, Where). Variadic ones fold
/// left, one input at a time.
fn elementwise(cx: &Cx, op: &str) -> Rule<Fact> {
    let inputs: Vec<usize> = (0..cx.node.input.len()).filter(|&i| cx.has(i)).collect();
    let Some((&first, rest)) = inputs.split_first() else { return here("has no inputs") };
    let mut shape = cx.shape(first)?.to_vec();
    for &i in rest {
        shape = broadcast(&shape, cx.shape(i)?)?;
    }
    let value = match (op, inputs.as_slice()) {
        ("Where", &[c, a, b]) => {
            let facts = [cx.fact(c)?, cx.fact(a)?, cx.fact(b)?];
            broadcast_values(&shape, &facts, |v| match v[0] {
                Dim::Fixed(0) => Some(v[2]),
                Dim::Fixed(_) => Some(v[1]),
                Dim::Batch(_) => None,
            })
        }
        (_, &[a, b]) => {
            let facts = [cx.fact(a)?, cx.fact(b)?];
            broadcast_values(&shape, &facts, |v| binary_value(op, v[0], v[1]))
        }
        (_, &[a]) => cx.fact(a)?.value.clone(),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// The element of a binary op on two elements of shape arithmetic, where it follows.
fn binary_value(op: &str, a: Dim, b: Dim) -> Option<Dim> {
    let flag = |b: bool| Some(Dim::Fixed(b as i64));
    match (op, a, b) {
        ("Add" | "Sum", ..) => a.add(b),
        ("Sub", ..) => a.sub(b),
        ("Mul", ..) => a.mul(b),
        ("Div", ..) => a.div(b),
        ("Max" | "Min", Dim::Fixed(x), Dim::Fixed(y)) => {
            Some(Dim::Fixed(if op == "Max" { x.max(y) } else { x.min(y) }))
        }
        // k·N ≥ k > c when N ≥ 1.
        ("Max", Dim::Batch(k), Dim::Fixed(c)) | ("Max", Dim::Fixed(c), Dim::Batch(k)) if k > 0 && c <= k => {
            Some(Dim::Batch(k))
        }
        ("Min", Dim::Batch(k), Dim::Fixed(c)) | ("Min", Dim::Fixed(c), Dim::Batch(k)) if k > 0 && c <= k => {
            Some(Dim::Fixed(c))
        }
        ("Equal", ..) if a == b => flag(true),
        ("Equal", Dim::Fixed(_), Dim::Fixed(_)) => flag(false),
        ("Equal", Dim::Batch(k), Dim::Fixed(c)) | ("Equal", Dim::Fixed(c), Dim::Batch(k)) if k > 0 && c < k => {
            flag(false)
        }
        // Integer Mod: the remainder takes the divisor's sign (fmod = 0).
        ("Mod", Dim::Fixed(x), Dim::Fixed(y)) if y != 0 => {
            let r = x.checked_rem(y)?;
            Some(Dim::Fixed(if r != 0 && (r < 0) != (y < 0) { r + y } else { r }))
        }
        ("Less", Dim::Fixed(x), Dim::Fixed(y)) => flag(x < y),
        ("Greater", Dim::Fixed(x), Dim::Fixed(y)) => flag(x > y),
        _ => None,
    }
}

/// A Constant node's output: its attribute's shape, and its value when small.
fn constant(cx: &Cx) -> Rule<Fact> {
    let Some(a) = cx.node.attribute.first() else { return here("has no value attribute") };
    let shape = match a.name() {
        "value" => match &a.t {
            Some(t) if t.dims.iter().all(|&d| d >= 0) => t.dims.clone(),
            _ => return here("its value tensor has no valid shape"),
        },
        "value_float" | "value_int" | "value_string" => Vec::new(),
        "value_floats" => vec![a.floats.len() as i64],
        "value_ints" => vec![a.ints.len() as i64],
        "value_strings" => vec![a.strings.len() as i64],
        other => return here(format!("its attribute '{other}' has no shape rule")),
    };
    let shape = shape.into_iter().map(Dim::Fixed).collect();
    let value = cx.node.output.first().and_then(|o| small_ints(cx.consts, o));
    Ok(Fact::with_value(shape, value))
}

/// Shape (with `start` and `end` from opset 15): a 1-D value of the input's dims.
fn shape_of(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let r = x.len() as i64;
    let clamp = |a: i64| (if a < 0 { a.saturating_add(r).max(0) } else { a.min(r) }) as usize;
    let start = clamp(cx.int("start", 0));
    let end = clamp(cx.int("end", r)).max(start);
    Ok(Fact::vector(x[start..end].to_vec()))
}

/// A shape given by value: every element must be a size.
fn shape_value(cx: &Cx, i: usize) -> Rule<Vec<Dim>> {
    let shape = cx.value(i)?;
    match shape.iter().find(|d| !d.is_size()) {
        Some(d) => here(format!("shape {} has size {d}", render(&shape))),
        None => Ok(shape),
    }
}

fn constant_of_shape(cx: &Cx) -> Rule<Fact> {
    let shape = shape_value(cx, 0)?;
    let fill = match cx.attr("value").and_then(|a| a.t.as_ref()) {
        None => Some(0.0),
        Some(t) if gn_onnx::data::element_count(&t.dims) == Some(1) => {
            gn_onnx::data::tensor_to_f64(t).ok().and_then(|v| v.first().copied())
        }
        Some(_) => return here("its value is not one element"),
    };
    let fill = fill.filter(|v| v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64).map(|v| Dim::Fixed(v as i64));
    let value = match (fill, fixed_count(&shape)) {
        (Some(fill), Some(count)) if count <= MAX_VALUE_ELEMENTS => Some(vec![fill; count]),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// Range(start, limit, delta): max(⌈(limit − start) / delta⌉, 0) elements.
fn range(cx: &Cx) -> Rule<Fact> {
    let scalar = |i: usize| match cx.value(i)?.as_slice() {
        [d] => Ok(*d),
        other => here(format!("input {i} is {}, not one number", render(other))),
    };
    let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
    match (start, limit, delta) {
        (Dim::Fixed(s), Dim::Fixed(l), Dim::Fixed(d)) if d != 0 => {
            let count = ((l as i128 - s as i128) + d as i128 - d.signum() as i128) / d as i128;
            let count = count.max(0);
            let Ok(len) = i64::try_from(count) else { return here("has too many elements") };
            let value = (count as usize <= MAX_VALUE_ELEMENTS)
                .then(|| {
                    (0..len).map(|i| s.checked_add(i.checked_mul(d)?).map(Dim::Fixed)).collect::<Option<Vec<Dim>>>()
                })
                .flatten();
            Ok(Fact { shape: vec![Dim::Fixed(len)], value })
        }
        (Dim::Fixed(0), Dim::Batch(k), Dim::Fixed(1)) if k > 0 => Ok(Fact::shaped(vec![limit])),
        _ => here(format!("the length of Range({start}, {limit}, {delta}) is not a fixed size or N")),
    }
}

/// The sliding-window output sizes of Conv and the pools, per spatial axis:
/// ⌊(in + pads − ((k − 1)·d + 1)) / s⌋ + 1 (⌈…⌉ with ceil_mode, dropping a last window
/// that would start in the end padding), or ⌈in / s⌉ with auto_pad SAME_*.
fn windows(cx: &Cx, spatial: &[Dim], kernel: &[i64], ceil: bool) -> Rule<Vec<Dim>> {
    let s = spatial.len();
    let Window { strides, dilations, padding } = match Window::of(cx.node, s) {
        Ok(w) => w,
        Err(why) => return here(why),
    };
    let pads = match padding {
        Padding::Explicit(pads) => pads,
        Padding::Same { .. } => Vec::new(),
    };
    if kernel.len() != s {
        return here(format!("the kernel has {} axes, the input {s} spatial axes", kernel.len()));
    }
    let mut out = Vec::with_capacity(s);
    for i in 0..s {
        let (k, stride, d) = (kernel[i] as i128, strides[i] as i128, dilations[i] as i128);
        if k < 1 || stride < 1 || d < 1 {
            return here(format!("kernel {k}, stride {stride} and dilation {d} must be positive"));
        }
        let Some(size) = spatial[i].fixed() else {
            return here(format!("spatial axis {i} has size {}, which is not fixed", spatial[i]));
        };
        let size = size as i128;
        if pads.is_empty() {
            out.push(Dim::Fixed(((size + stride - 1) / stride) as i64));
            continue;
        }
        let (begin, end) = (pads[i] as i128, pads[i + s] as i128);
        if begin < 0 || end < 0 {
            return here(format!("pads {pads:?} are negative"));
        }
        let span = size + begin + end - ((k - 1) * d + 1);
        if span < 0 {
            return here(format!(
                "the window ({k} × dilation {d}) is larger than the padded size {}",
                size + begin + end
            ));
        }
        let mut n = if ceil { (span + stride - 1) / stride } else { span / stride } + 1;
        if ceil && (n - 1) * stride >= size + begin {
            n -= 1;
        }
        match i64::try_from(n) {
            Ok(n) => out.push(Dim::Fixed(n)),
            Err(_) => return here("an output size overflows"),
        }
    }
    Ok(out)
}

/// Conv: [N, C, in…] ⊛ [M, C/group, k…] → [N, M, out…].
fn conv(cx: &Cx) -> Rule<Fact> {
    let (x, w) = (cx.shape(0)?, cx.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return here(format!("input {} and weight {} are not [N, C, …] and [M, C/group, …]", render(x), render(w)));
    }
    let weight_kernel: Option<Vec<i64>> = w[2..].iter().map(|d| d.fixed()).collect();
    let Some(kernel) = cx.ints_attr("kernel_shape").or(weight_kernel) else {
        return here(format!("the kernel of weight {} is not fixed", render(w)));
    };
    let mut out = vec![x[0], w[0]];
    out.extend(windows(cx, &x[2..], &kernel, false)?);
    Ok(Fact::shaped(out))
}

/// ConvTranspose: [N, C, in…] with weight [C, M/group, k…] → [N, M, out…], out =
/// s·(in − 1) + output_padding + (k − 1)·d + 1 − pads, or `output_shape`.
fn conv_transpose(cx: &Cx) -> Rule<Fact> {
    let (x, w) = (cx.shape(0)?, cx.shape(1)?);
    if x.len() < 3 || w.len() != x.len() {
        return here(format!("input {} and weight {} are not [N, C, …] and [C, M/group, …]", render(x), render(w)));
    }
    let s = x.len() - 2;
    let group = cx.int("group", 1);
    let Some(channels) = w[1].mul(Dim::Fixed(group)).filter(|c| group > 0 && c.is_size()) else {
        return here(format!("{} channels × group {group} is not a size", w[1]));
    };
    let mut out = vec![x[0], channels];
    if let Some(shape) = cx.ints_attr("output_shape") {
        let spatial = &shape[shape.len().saturating_sub(s)..];
        if spatial.len() != s || spatial.iter().any(|&d| d < 0) {
            return here(format!("output_shape {shape:?} does not give {s} spatial sizes"));
        }
        out.extend(spatial.iter().map(|&d| Dim::Fixed(d)));
        return Ok(Fact::shaped(out));
    }
    let weight_kernel: Option<Vec<i64>> = w[2..].iter().map(|d| d.fixed()).collect();
    let Some(kernel) = cx.ints_attr("kernel_shape").or(weight_kernel) else {
        return here(format!("the kernel of weight {} is not fixed", render(w)));
    };
    let list = |name: &str, default: i64, len: usize| cx.ints_attr(name).unwrap_or_else(|| vec![default; len]);
    let (strides, dilations, padding) = (list("strides", 1, s), list("dilations", 1, s), list("output_padding", 0, s));
    let auto_pad = attr::get_string(cx.node, "auto_pad").unwrap_or_default();
    let pads = if auto_pad.starts_with("SAME") { Vec::new() } else { list("pads", 0, 2 * s) };
    if [kernel.len(), strides.len(), dilations.len(), padding.len()] != [s; 4]
        || !(pads.is_empty() || pads.len() == 2 * s)
    {
        return here("kernel_shape, strides, dilations, output_padding or pads do not match the spatial axes");
    }
    for i in 0..s {
        let Some(size) = x[2 + i].fixed() else { return here(format!("spatial axis {i} is not fixed")) };
        let (size, stride) = (size as i128, strides[i] as i128);
        let n = if pads.is_empty() {
            size * stride
        } else {
            let (k, d) = (kernel[i] as i128, dilations[i] as i128);
            stride * (size - 1) + padding[i] as i128 + (k - 1) * d + 1 - pads[i] as i128 - pads[i + s] as i128
        };
        match i64::try_from(n) {
            Ok(n) if n >= 0 => out.push(Dim::Fixed(n)),
            _ => return here(format!("spatial axis {i} has output size {n}")),
        }
    }
    Ok(Fact::shaped(out))
}

/// MaxPool, AveragePool, LpPool: [N, C, in…] → [N, C, out…] (MaxPool's indices alike).
fn pool(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let Some(kernel) = cx.ints_attr("kernel_shape") else { return here("has no kernel_shape") };
    if x.len() != kernel.len() + 2 {
        return here(format!("input {} does not have {} spatial axes", render(x), kernel.len()));
    }
    let mut out = x[..2].to_vec();
    out.extend(windows(cx, &x[2..], &kernel, cx.int("ceil_mode", 0) != 0)?);
    Ok(Fact::shaped(out))
}

/// Gemm: A [M, K] (transposed with transA) · B [K, N] (transB) → [M, N].
fn gemm(cx: &Cx) -> Rule<Fact> {
    let (a, b) = (cx.shape(0)?, cx.shape(1)?);
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        return here(format!("A {} and B {} are not both of rank 2", render(a), render(b)));
    };
    let m = if cx.int("transA", 0) != 0 { a1 } else { a0 };
    let n = if cx.int("transB", 0) != 0 { b0 } else { b1 };
    Ok(Fact::shaped(vec![m, n]))
}

/// MatMul with numpy's rules: 1-D operands gain and then lose an axis, the leading
/// axes broadcast.
fn matmul(a: &[Dim], b: &[Dim]) -> Rule<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return here("an operand is a scalar");
    }
    let a2: Vec<Dim> = if a.len() == 1 { vec![Dim::Fixed(1), a[0]] } else { a.to_vec() };
    let b2: Vec<Dim> = if b.len() == 1 { vec![b[0], Dim::Fixed(1)] } else { b.to_vec() };
    let (ka, kb) = (a2[a2.len() - 1], b2[b2.len() - 2]);
    if ka != kb {
        return here(format!("{} · {}: the inner sizes {ka} and {kb} differ", render(a), render(b)));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1]);
    }
    Ok(out)
}

/// One term of an Einsum equation: letters before and after an optional ellipsis.
fn einsum_term(term: &str) -> Rule<(Vec<char>, bool, Vec<char>)> {
    let (before, ellipsis, after) = match term.find("...") {
        Some(p) => (&term[..p], true, &term[p + 3..]),
        None => (term, false, ""),
    };
    let letters = |s: &str| -> Rule<Vec<char>> {
        match s.chars().all(|c| c.is_ascii_alphabetic()) {
            true => Ok(s.chars().collect()),
            false => here(format!("equation term '{term}' is not letters and one '...'")),
        }
    };
    Ok((letters(before)?, ellipsis, letters(after)?))
}

/// Einsum: each letter's size from the inputs, the output's letters from the explicit
/// right-hand side, or (implicit form) the letters that occur once, alphabetically,
/// after the broadcast ellipsis.
fn einsum(cx: &Cx) -> Rule<Vec<Dim>> {
    let equation: String = attr::get_string(cx.node, "equation").unwrap_or_default().split_whitespace().collect();
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (equation.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.node.input.len() {
        return here(format!("equation '{equation}' has {} terms for {} inputs", terms.len(), cx.node.input.len()));
    }
    let mut sizes: BTreeMap<char, Dim> = BTreeMap::new();
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut ellipsis: Vec<Dim> = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let shape = cx.shape(i)?;
        let (before, has_ellipsis, after) = einsum_term(term)?;
        let named = before.len() + after.len();
        let spread = shape.len().checked_sub(named).filter(|&e| has_ellipsis || e == 0);
        let Some(spread) = spread else {
            return here(format!("term '{term}' does not match input {i} of shape {}", render(shape)));
        };
        ellipsis = broadcast(&ellipsis, &shape[before.len()..before.len() + spread])?;
        let dims = before.iter().zip(shape).chain(after.iter().zip(&shape[before.len() + spread..]));
        for (&c, &d) in dims {
            *counts.entry(c).or_default() += 1;
            let size = match sizes.get(&c) {
                Some(&s) => broadcast(&[s], &[d])?[0],
                None => d,
            };
            sizes.insert(c, size);
        }
    }
    let (before, has_ellipsis, after) = match rhs {
        Some(r) => einsum_term(r)?,
        None => (Vec::new(), true, counts.iter().filter(|(_, &n)| n == 1).map(|(&c, _)| c).collect()),
    };
    let letter =
        |c: &char| sizes.get(c).copied().ok_or_else(|| Why::Here(format!("output letter '{c}' is in no input")));
    let mut out = before.iter().map(letter).collect::<Rule<Vec<Dim>>>()?;
    if has_ellipsis {
        out.extend(&ellipsis);
    }
    out.extend(after.iter().map(letter).collect::<Rule<Vec<Dim>>>()?);
    Ok(out)
}

/// Reshape: 0 copies the input's size on that axis (unless allowzero), −1 takes what
/// the others leave of the input's size.
fn reshape(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let target = cx.value(1)?;
    let allow_zero = cx.int("allowzero", 0) != 0;
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            Dim::Fixed(0) if !allow_zero => match x.shape.get(i) {
                Some(&d) => out.push(d),
                None => return here(format!("target {} copies axis {i} of {}", render(&target), render(&x.shape))),
            },
            Dim::Fixed(-1) if inferred.is_none() => {
                inferred = Some(i);
                out.push(Dim::Fixed(1));
            }
            t if t.is_size() => out.push(t),
            _ => return here(format!("target {} is not a shape", render(&target))),
        }
    }
    let (total, rest) = (product(&x.shape), product(&out));
    if let Some(i) = inferred {
        let left = total.zip(rest.filter(|r| r.coef != 0)).and_then(|(t, r)| t.div(r)).and_then(Term::dim);
        match left {
            Some(d) => out[i] = d,
            None => {
                return here(format!("target {} does not divide the elements of {}", render(&target), render(&x.shape)))
            }
        }
    } else if let (Some(t), Some(r)) = (total, rest) {
        if t != r && (t.coef, r.coef) != (0, 0) {
            return here(format!("target {} does not hold the elements of {}", render(&out), render(&x.shape)));
        }
    }
    Ok(Fact::with_value(out, x.value.clone()))
}

/// Concat: the sizes along `axis` add up, the other axes agree.
fn concat(cx: &Cx) -> Rule<Fact> {
    let inputs: Vec<usize> = (0..cx.node.input.len()).filter(|&i| cx.has(i)).collect();
    let Some((&first, rest)) = inputs.split_first() else { return here("has no inputs") };
    let mut shape = cx.shape(first)?.to_vec();
    let Some(a) = attr::get_int(cx.node, "axis") else { return here("has no axis") };
    let a = axis(a, shape.len())?;
    for &i in rest {
        let s = cx.shape(i)?;
        if s.len() != shape.len() || s.iter().zip(&shape).enumerate().any(|(k, (x, y))| k != a && x != y) {
            return here(format!("inputs {} and {} differ off axis {a}", render(&shape), render(s)));
        }
        match shape[a].add(s[a]) {
            Some(d) => shape[a] = d,
            None => {
                return here(format!(
                    "sizes {} and {} on axis {a} do not add up to a fixed size or a multiple of N",
                    shape[a], s[a]
                ))
            }
        }
    }
    let value = if shape.len() == 1 {
        inputs.iter().map(|&i| cx.value(i).ok()).collect::<Option<Vec<_>>>().map(|v| v.concat())
    } else {
        None
    };
    Ok(Fact::with_value(shape, value))
}

/// Split along `axis` into the `split` sizes (attribute, or input from opset 13), or
/// into equal parts (`num_outputs` from opset 18: the last part smaller).
fn split(cx: &Cx) -> Rule<Vec<Fact>> {
    let x = cx.shape(0)?;
    let a = axis(cx.int("axis", 0), x.len())?;
    let parts = cx.node.output.len();
    let sizes: Vec<Dim> = match cx.attr_or_input("split", 1)? {
        Some(split) => {
            let sum = split.iter().try_fold(0i64, |acc, &s| acc.checked_add(s).filter(|_| s >= 0));
            if split.len() != parts || sum.map(Dim::Fixed) != Some(x[a]) {
                return here(format!("split {split:?} into {parts} outputs does not cover size {}", x[a]));
            }
            split.into_iter().map(Dim::Fixed).collect()
        }
        None if parts == 0 => return here("has no outputs"),
        None => {
            let num = cx.int("num_outputs", parts as i64);
            match x[a] {
                Dim::Fixed(d) if num > 0 && num as usize == parts => {
                    let chunk = d.div_euclid(num) + (d.rem_euclid(num) != 0) as i64;
                    if cx.attr("num_outputs").is_none() && d % num != 0 {
                        return here(format!("size {d} does not split into {num} equal parts"));
                    }
                    (0..num).map(|i| Dim::Fixed(d.saturating_sub(i.saturating_mul(chunk)).clamp(0, chunk))).collect()
                }
                d => match d.div(Dim::Fixed(parts as i64)) {
                    Some(part) if num as usize == parts => vec![part; parts],
                    _ => return here(format!("size {d} does not split into {parts} equal parts")),
                },
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut shape = x.to_vec();
            shape[a] = s;
            Fact::shaped(shape)
        })
        .collect())
}

/// The indices Slice takes along an axis of size `d`: start, step and count, with
/// negative indices counted from the end and both ends clamped (ONNX's rule).
fn slice_axis(d: i64, start: i64, end: i64, step: i64) -> (i128, i128, i128) {
    let (d, step) = (d as i128, step as i128);
    let norm = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(0, (d - 1).max(0)), norm(end).clamp(-1, d - 1))
    };
    let count = if step > 0 { (e - s + step - 1) / step } else { (s - e + (-step) - 1) / (-step) };
    (s, step, count.max(0))
}

/// Slice: starts, ends, axes, steps as inputs (opset 10 on) or attributes (before).
fn slice(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let (starts, ends, axes_list, steps) = if cx.opset >= 10 {
        let optional = |i: usize| if cx.has(i) { cx.ints(i).map(Some) } else { Ok(None) };
        (cx.ints(1)?, cx.ints(2)?, optional(3)?, optional(4)?)
    } else {
        let attr = |name: &str| cx.ints_attr(name);
        (attr("starts").unwrap_or_default(), attr("ends").unwrap_or_default(), attr("axes"), None)
    };
    let count = starts.len();
    let axes_list = axes_list.unwrap_or_else(|| (0..count as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; count]);
    if ends.len() != count || axes_list.len() != count || steps.len() != count {
        return here("starts, ends, axes and steps differ in length");
    }
    let axes_list: Vec<usize> = axes_list.iter().map(|&a| axis(a, x.shape.len())).collect::<Rule<_>>()?;
    let mut shape = x.shape.clone();
    let mut from: Vec<(usize, i128, i128)> = (0..shape.len()).map(|a| (a, 0, 1)).collect();
    for k in 0..count {
        let (a, step) = (axes_list[k], steps[k]);
        if step == 0 {
            return here("a step is 0");
        }
        match shape[a] {
            Dim::Fixed(d) => {
                let (s, step, n) = slice_axis(d, starts[k], ends[k], step);
                shape[a] = Dim::Fixed(n as i64);
                from[a] = (a, s, step);
            }
            // The whole of a batch axis: start 0, an end past any size, step 1.
            d if starts[k] == 0 && ends[k] >= i32::MAX as i64 && step == 1 => shape[a] = d,
            d => {
                return here(format!(
                    "slicing {}..{} step {step} of axis {a} of size {d} does not give a fixed size or a multiple of N",
                    starts[k], ends[k]
                ))
            }
        }
    }
    let value = x.value.as_ref().and_then(|v| moved_values(v, &x.shape, &shape, &from));
    Ok(Fact::with_value(shape, value))
}

/// Gather along `axis`: data[:axis] ++ indices ++ data[axis + 1:].
fn gather(cx: &Cx) -> Rule<Fact> {
    let (data, indices) = (cx.fact(0)?, cx.fact(1)?);
    let a = axis(cx.int("axis", 0), data.shape.len())?;
    let mut shape = data.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[a + 1..]);
    let value = match (&data.value, data.shape.len()) {
        (Some(v), 1) => cx.ints(1).ok().and_then(|idx| {
            idx.iter()
                .map(|&i| {
                    let i = if i < 0 { i.checked_add(v.len() as i64)? } else { i };
                    v.get(usize::try_from(i).ok()?).copied()
                })
                .collect()
        }),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// Squeeze: the listed axes (attribute, or input from opset 13), each of size 1, or
/// every axis of size 1.
fn squeeze(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let shape = match cx.attr_or_input("axes", 1)? {
        Some(list) => {
            let removed = axes(&list, x.shape.len())?;
            if let Some(&a) = removed.iter().find(|&&a| x.shape[a] != Dim::Fixed(1)) {
                return here(format!("squeezes axis {a} of size {}", x.shape[a]));
            }
            x.shape.iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, &d)| d).collect()
        }
        None => x.shape.iter().copied().filter(|&d| d != Dim::Fixed(1)).collect(),
    };
    Ok(Fact::with_value(shape, x.value.clone()))
}

/// Unsqueeze: a size-1 axis at each listed position of the output (attribute, or input
/// from opset 13).
fn unsqueeze(cx: &Cx) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let Some(list) = cx.attr_or_input("axes", 1)? else { return here("has no axes") };
    let rank = x.shape.len() + list.len();
    let added = axes(&list, rank)?;
    let mut rest = x.shape.iter();
    let shape = (0..rank)
        .map(|i| if added.contains(&i) { Some(Dim::Fixed(1)) } else { rest.next().copied() })
        .collect::<Option<Vec<Dim>>>();
    match shape {
        Some(shape) => Ok(Fact::with_value(shape, x.value.clone())),
        None => here("axes do not fit the output rank"),
    }
}

/// Pad: each axis grows by its begin and end pads (attribute before opset 11, input
/// after, with the axes input of opset 18).
fn pad(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let Some(pads) = cx.attr_or_input("pads", 1)? else { return here("has no pads") };
    let padded: Vec<usize> = if cx.has(3) { axes(&cx.ints(3)?, x.len())? } else { (0..x.len()).collect() };
    if pads.len() != 2 * padded.len() {
        return here(format!("{} pads for {} axes", pads.len(), padded.len()));
    }
    let mut shape = x.to_vec();
    for (k, &a) in padded.iter().enumerate() {
        let grown = pads[k].checked_add(pads[k + padded.len()]).and_then(|p| shape[a].add(Dim::Fixed(p)));
        match grown {
            Some(d) if d.is_size() => shape[a] = d,
            _ => {
                return here(format!(
                    "padding axis {a} of size {} by {} and {}",
                    shape[a],
                    pads[k],
                    pads[k + padded.len()]
                ))
            }
        }
    }
    Ok(Fact::shaped(shape))
}

/// The shape left by reducing `reduced` axes, kept as 1 with `keep`.
fn reduced(x: &[Dim], reduced: &[usize], keep: bool) -> Vec<Dim> {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (reduced.contains(&i), keep) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
        })
        .collect()
}

/// Reduce*: the axes (attribute, or input from opset 13 for ReduceSum and 18 for the
/// others), all of them when none are given (unless noop_with_empty_axes).
fn reduce(cx: &Cx, op: &str) -> Rule<Fact> {
    let x = cx.fact(0)?;
    let keep = cx.int("keepdims", 1) != 0;
    let list = cx.attr_or_input("axes", 1)?.unwrap_or_default();
    if list.is_empty() && cx.int("noop_with_empty_axes", 0) != 0 {
        return Ok(x.clone());
    }
    let all: Vec<usize> = (0..x.shape.len()).collect();
    let removed = if list.is_empty() { all.clone() } else { axes(&list, x.shape.len())? };
    let shape = reduced(&x.shape, &removed, keep);
    // The product or sum of a shape vector (numel as exporters compute it).
    let value = match (&x.value, x.shape.len(), op) {
        (Some(v), 1, "ReduceProd") => product(v).and_then(Term::dim).map(|d| vec![d]),
        (Some(v), 1, "ReduceSum") => v.iter().try_fold(Dim::Fixed(0), |acc, &d| acc.add(d)).map(|d| vec![d]),
        _ => None,
    };
    Ok(Fact::with_value(shape, value))
}

/// Resize (X, roi, scales, sizes from opset 11; X, scales in opset 10) and Upsample
/// (scales as an attribute, or input from opset 9): ⌊size · scale⌋, or the sizes given.
fn resize(cx: &Cx, op: &str) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let resized: Vec<usize> = match cx.ints_attr("axes") {
        Some(list) => axes(&list, x.len())?,
        None => (0..x.len()).collect(),
    };
    let (scales_at, sizes_at) = if op == "Resize" && cx.opset >= 11 { (2, Some(3)) } else { (1, None) };
    let present = |i: usize| cx.has(i) && cx.shape(i).is_ok_and(|s| fixed_count(s) != Some(0));
    let mut shape = x.to_vec();
    if let Some(sizes) = sizes_at.filter(|&i| present(i)) {
        let policy = attr::get_string(cx.node, "keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into());
        if policy != "stretch" {
            return here(format!("keep_aspect_ratio_policy '{policy}' has no shape rule"));
        }
        let sizes = shape_value(cx, sizes)?;
        if sizes.len() != resized.len() {
            return here(format!("{} sizes for {} axes", sizes.len(), resized.len()));
        }
        for (&a, s) in resized.iter().zip(sizes) {
            shape[a] = s;
        }
        return Ok(Fact::shaped(shape));
    }
    let scales: Vec<f64> = match cx.attr("scales") {
        Some(a) if op == "Upsample" => a.floats.iter().map(|&f| f as f64).collect(),
        _ if present(scales_at) => cx.floats(scales_at)?,
        _ => return here("has neither scales nor sizes known before running"),
    };
    if scales.len() != resized.len() {
        return here(format!("{} scales for {} axes", scales.len(), resized.len()));
    }
    for (&a, &scale) in resized.iter().zip(&scales) {
        shape[a] = match shape[a] {
            d if scale == 1.0 => d,
            Dim::Fixed(d) if scale.is_finite() && scale > 0.0 => {
                let out = (d as f64 * scale).floor();
                if out >= i64::MAX as f64 {
                    return here(format!("scaling size {d} by {scale} overflows"));
                }
                Dim::Fixed(out as i64)
            }
            Dim::Batch(k) if scale.fract() == 0.0 && scale > 0.0 && scale < i64::MAX as f64 => {
                match k.checked_mul(scale as i64) {
                    Some(k) => Dim::Batch(k),
                    None => return here("a scaled size overflows"),
                }
            }
            d => return here(format!("scaling size {d} by {scale} does not give a fixed size or a multiple of N")),
        };
    }
    Ok(Fact::shaped(shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gn_onnx::data::{float_value_info, tensor_f32, tensor_i64};
    use gn_onnx::proto::{AttributeProto, GraphProto, TensorProto};

    const N: Dim = Dim::Batch(1);
    const fn f(n: i64) -> Dim {
        Dim::Fixed(n)
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: Some(format!("{op}_{}", outputs[0])),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        }
    }

    fn one(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        node(op, inputs, &[output], attribute)
    }

    fn infer(inputs: &[(&str, &[Option<i64>])], initializer: Vec<TensorProto>, nodes: Vec<NodeProto>) -> StaticShapes {
        let graph = Graph::new(GraphProto {
            input: inputs.iter().map(|(name, dims)| float_value_info(name, dims)).collect(),
            initializer,
            node: nodes,
            ..Default::default()
        });
        StaticShapes::infer(&graph, 17).expect("an acyclic graph")
    }

    fn shape(s: &StaticShapes, v: &str) -> Vec<Dim> {
        s.shape(v).unwrap_or_else(|e| panic!("{v}: {e}")).to_vec()
    }

    fn refusal(s: &StaticShapes, v: &str) -> String {
        s.shape(v).expect_err("no shape").to_string()
    }

    #[test]
    fn elementwise_ops_broadcast_from_the_right_and_refuse_what_does_not_broadcast() {
        let s = infer(
            &[("x", &[None, Some(3), Some(1)]), ("y", &[Some(4)]), ("z", &[None, Some(2)])],
            vec![],
            vec![
                one("Add", &["x", "y"], "sum", vec![]),
                one("Relu", &["sum"], "relu", vec![]),
                one("Where", &["y", "x", "y"], "where", vec![]),
                one("Mul", &["x", "z"], "bad", vec![]),
                one("Neg", &["bad"], "after_bad", vec![]),
            ],
        );
        assert_eq!(shape(&s, "sum"), [N, f(3), f(4)]);
        assert_eq!(shape(&s, "relu"), [N, f(3), f(4)]);
        assert_eq!(shape(&s, "where"), [N, f(3), f(4)]);
        // The failure is reported where it happened, for every value downstream.
        let reason = refusal(&s, "after_bad");
        assert!(reason.contains("node 'Mul_bad' (Mul)") && reason.contains("do not broadcast"), "{reason}");
    }

    #[test]
    fn integer_mod_follows_the_divisor_s_sign_and_scatters_keep_the_data_s_shape() {
        let s = infer(
            &[("x", &[None, Some(6), Some(4)])],
            vec![
                tensor_i64("a", &[3], &[7, -7, 9]),
                tensor_i64("b", &[3], &[3, 3, -4]),
                tensor_i64("zero", &[1], &[0]),
                tensor_i64("idx", &[1, 1], &[0]),
                tensor_i64("seven", &[1], &[7]),
                tensor_i64("three", &[1], &[3]),
            ],
            vec![
                one("Mod", &["a", "b"], "m", vec![]),
                // The shape [N, 6, 4] sliced from 0 to 7 mod 3 = 1: [N], one element.
                one("Mod", &["seven", "three"], "end", vec![]),
                one("Shape", &["x"], "sx", vec![]),
                one("Slice", &["sx", "zero", "end"], "head", vec![]),
                one("ScatterND", &["x", "idx", "x"], "scattered", vec![]),
            ],
        );
        assert_eq!(s.facts["m"].as_ref().unwrap().value.as_deref(), Some(&[f(1), f(2), f(-3)][..]));
        assert_eq!(shape(&s, "head"), [f(1)]);
        assert_eq!(shape(&s, "scattered"), [N, f(6), f(4)]);
    }

    #[test]
    fn a_variadic_sum_of_two_thousand_inputs_is_inferred_in_one_pass() {
        let names: Vec<String> = (0..2000).map(|i| format!("x{i}")).collect();
        let inputs: Vec<(&str, &[Option<i64>])> = names.iter().map(|n| (n.as_str(), &[None, Some(8)][..])).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let s = infer(&inputs, vec![], vec![one("Sum", &refs, "y", vec![])]);
        assert_eq!(shape(&s, "y"), [N, f(8)]);
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    #[test]
    fn conv_and_pool_sizes_follow_pads_strides_dilations_and_ceil_mode() {
        let w = |name: &str, dims: &[i64]| tensor_f32(name, dims, &vec![0.0; dims.iter().product::<i64>() as usize]);
        let s = infer(
            &[("x", &[None, Some(8), Some(32), Some(32)]), ("v", &[None, Some(1), Some(5), Some(5)])],
            vec![w("w", &[16, 8, 3, 3]), w("dw", &[8, 1, 3, 3]), w("up", &[1, 4, 3, 3])],
            vec![
                // ⌊(32 + 2 − 3) / 2⌋ + 1 = 16
                one(
                    "Conv",
                    &["x", "w"],
                    "strided",
                    vec![attr::ints("pads", &[1, 1, 1, 1]), attr::ints("strides", &[2, 2])],
                ),
                // 32 − ((3 − 1)·2 + 1) + 1 = 28
                one("Conv", &["x", "w"], "dilated", vec![attr::ints("dilations", &[2, 2])]),
                // ⌈32 / 3⌉ = 11
                one(
                    "Conv",
                    &["x", "w"],
                    "same",
                    vec![attr::string("auto_pad", "SAME_UPPER"), attr::ints("strides", &[3, 3])],
                ),
                one("Conv", &["x", "dw"], "depthwise", vec![attr::int("group", 8)]),
                // 2·(5 − 1) + 3 − 2 = 9 spatial, 4 channels
                one(
                    "ConvTranspose",
                    &["v", "up"],
                    "transposed",
                    vec![attr::ints("strides", &[2, 2]), attr::ints("pads", &[1, 1, 1, 1])],
                ),
                // ⌊29 / 2⌋ + 1 = 15; ⌈29 / 2⌉ + 1 = 16
                node(
                    "MaxPool",
                    &["x"],
                    &["floor", "indices"],
                    vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("strides", &[2, 2])],
                ),
                one(
                    "MaxPool",
                    &["x"],
                    "ceil",
                    vec![
                        attr::ints("kernel_shape", &[3, 3]),
                        attr::ints("strides", &[2, 2]),
                        attr::int("ceil_mode", 1),
                    ],
                ),
                // Size 5, kernel 2, stride 2, pads 1: ⌈5 / 2⌉ + 1 = 4 windows, the last starting
                // in the end padding (at 6 ≥ 5 + 1), so 3.
                one(
                    "AveragePool",
                    &["v"],
                    "dropped",
                    vec![
                        attr::ints("kernel_shape", &[2, 2]),
                        attr::ints("strides", &[2, 2]),
                        attr::ints("pads", &[1, 1, 1, 1]),
                        attr::int("ceil_mode", 1),
                    ],
                ),
                one("GlobalAveragePool", &["x"], "global", vec![]),
            ],
        );
        assert_eq!(shape(&s, "strided"), [N, f(16), f(16), f(16)]);
        assert_eq!(shape(&s, "dilated"), [N, f(16), f(28), f(28)]);
        assert_eq!(shape(&s, "same"), [N, f(16), f(11), f(11)]);
        assert_eq!(shape(&s, "depthwise"), [N, f(8), f(30), f(30)]);
        assert_eq!(shape(&s, "transposed"), [N, f(4), f(9), f(9)]);
        assert_eq!(shape(&s, "floor"), [N, f(8), f(15), f(15)]);
        assert_eq!(shape(&s, "indices"), [N, f(8), f(15), f(15)]);
        assert_eq!(shape(&s, "ceil"), [N, f(8), f(16), f(16)]);
        assert_eq!(shape(&s, "dropped"), [N, f(1), f(3), f(3)]);
        assert_eq!(shape(&s, "global"), [N, f(8), f(1), f(1)]);
    }

    #[test]
    fn gemm_matmul_and_einsum_contract_their_operands() {
        let s = infer(
            &[
                ("x", &[None, Some(64)]),
                ("w", &[Some(10), Some(64)]),
                ("seq", &[None, Some(8), Some(16)]),
                ("m", &[Some(16), Some(4)]),
                ("v", &[Some(16)]),
                ("heads", &[None, Some(1), Some(4), Some(8)]),
                ("stack", &[Some(3), Some(8), Some(2)]),
                ("q", &[None, Some(2), Some(5), Some(8)]),
                ("k", &[None, Some(2), Some(7), Some(8)]),
            ],
            vec![],
            vec![
                one("Gemm", &["x", "w"], "gemm", vec![attr::int("transB", 1)]),
                one("MatMul", &["seq", "m"], "mm", vec![]),
                one("MatMul", &["m", "v"], "bad_inner", vec![]),
                one("MatMul", &["seq", "v"], "mv", vec![]),
                one("MatMul", &["v", "m"], "vm", vec![]),
                one("MatMul", &["heads", "stack"], "batched", vec![]),
                one("Einsum", &["q", "k"], "scores", vec![attr::string("equation", "bhqd,bhkd->bhqk")]),
                one("Einsum", &["q", "k"], "implicit", vec![attr::string("equation", "...qd,...kd")]),
            ],
        );
        assert_eq!(shape(&s, "gemm"), [N, f(10)]);
        assert_eq!(shape(&s, "mm"), [N, f(8), f(4)]);
        assert_eq!(shape(&s, "mv"), [N, f(8)]);
        assert_eq!(shape(&s, "vm"), [f(4)]);
        assert_eq!(shape(&s, "batched"), [N, f(3), f(4), f(2)]);
        assert_eq!(shape(&s, "scores"), [N, f(2), f(5), f(7)]);
        // Implicit output: the ellipsis, then the letters that occur once, alphabetically.
        assert_eq!(shape(&s, "implicit"), [N, f(2), f(7), f(5)]);
        assert!(refusal(&s, "bad_inner").contains("inner sizes"));
    }

    /// `x.reshape(n, -1, 2, 4)` with `n = x.shape[0]`, as the legacy exporter writes it.
    #[test]
    fn a_reshape_target_computed_from_the_batch_resolves_with_n_symbolic() {
        let s = infer(
            &[("x", &[None, Some(6), Some(8)])],
            vec![
                tensor_i64("zero", &[], &[0]),
                tensor_i64("axes", &[1], &[0]),
                tensor_i64("rest", &[3], &[-1, 2, 4]),
                tensor_i64("keep", &[2], &[0, -1]),
                tensor_i64("rows", &[2], &[-1, 8]),
                tensor_i64("all", &[1], &[-1]),
            ],
            vec![
                one("Shape", &["x"], "s", vec![]),
                one("Gather", &["s", "zero"], "n", vec![attr::int("axis", 0)]),
                one("Unsqueeze", &["n", "axes"], "n1", vec![]),
                one("Concat", &["n1", "rest"], "target", vec![attr::int("axis", 0)]),
                one("Reshape", &["x", "target"], "heads", vec![]),
                one("Reshape", &["x", "keep"], "flat", vec![]),
                one("Reshape", &["x", "rows"], "rows_of_8", vec![]),
                one("Reshape", &["x", "all"], "vector", vec![]),
                one("Flatten", &["x"], "flatten", vec![attr::int("axis", 2)]),
                one("Size", &["x"], "size", vec![]),
            ],
        );
        assert_eq!(shape(&s, "n"), Vec::<Dim>::new());
        assert_eq!(shape(&s, "target"), [f(4)]);
        assert_eq!(shape(&s, "heads"), [N, f(6), f(2), f(4)]);
        assert_eq!(shape(&s, "flat"), [N, f(48)]);
        assert_eq!(shape(&s, "rows_of_8"), [Dim::Batch(6), f(8)]);
        assert_eq!(shape(&s, "vector"), [Dim::Batch(48)]);
        assert_eq!(shape(&s, "flatten"), [Dim::Batch(6), f(8)]);
        assert_eq!(s.facts["size"].as_ref().unwrap().value, Some(vec![Dim::Batch(48)]));
    }

    /// `x.expand(-1, 3, -1)` as torch exports it: ones, times −1, compared with the target,
    /// and the −1 replaced by 1 before the Expand.
    #[test]
    fn an_expand_target_built_with_where_resolves() {
        let s = infer(
            &[("x", &[None, Some(1), Some(5)])],
            vec![
                tensor_i64("target", &[3], &[-1, 3, -1]),
                tensor_i64("len", &[1], &[3]),
                tensor_i64("minus", &[], &[-1]),
            ],
            vec![
                one("ConstantOfShape", &["len"], "ones", vec![attr_tensor("value", tensor_i64("", &[1], &[1]))]),
                one("Mul", &["ones", "minus"], "minus_ones", vec![]),
                one("Equal", &["target", "minus_ones"], "is_free", vec![]),
                one("Where", &["is_free", "ones", "target"], "shape", vec![]),
                one("Expand", &["x", "shape"], "y", vec![]),
            ],
        );
        assert_eq!(shape(&s, "y"), [N, f(3), f(5)]);
    }

    fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(gn_onnx::proto::attribute_proto::AttributeType::Tensor as i32),
            t: Some(t),
            ..Default::default()
        }
    }

    #[test]
    fn moves_and_selections_keep_the_batch_where_it_is() {
        let s = infer(
            &[("x", &[None, Some(10), Some(7)]), ("c", &[None, Some(1), Some(1), Some(4)])],
            vec![
                tensor_i64("starts", &[2], &[-3, 6]),
                tensor_i64("ends", &[2], &[i64::MAX, -100]),
                tensor_i64("slice_axes", &[2], &[1, 2]),
                tensor_i64("steps", &[2], &[1, -2]),
                tensor_i64("idx", &[2, 3], &[0, 1, 2, 3, 4, 5]),
                tensor_i64("last", &[], &[-1]),
                tensor_i64("squeeze_axes", &[2], &[1, -2]),
                tensor_i64("unsqueeze_axes", &[2], &[0, -1]),
                tensor_i64("split", &[2], &[3, 7]),
                tensor_i64("pads", &[6], &[0, 1, 2, 0, 3, 4]),
                tensor_i64("repeats", &[3], &[2, 1, 3]),
                tensor_i64("reduce_axes", &[1], &[1]),
            ],
            vec![
                one("Transpose", &["x"], "t", vec![attr::ints("perm", &[0, 2, 1])]),
                one("Concat", &["x", "x"], "cat", vec![attr::int("axis", -1)]),
                one("Concat", &["x", "x"], "cat0", vec![attr::int("axis", 0)]),
                one("Slice", &["x", "starts", "ends", "slice_axes", "steps"], "sliced", vec![]),
                one("Gather", &["x", "idx"], "gathered", vec![attr::int("axis", 1)]),
                one("Gather", &["x", "last"], "picked", vec![attr::int("axis", 2)]),
                one("Squeeze", &["c", "squeeze_axes"], "squeezed", vec![]),
                one("Unsqueeze", &["x", "unsqueeze_axes"], "unsqueezed", vec![]),
                node("Split", &["x", "split"], &["s1", "s2"], vec![attr::int("axis", 1)]),
                node("Split", &["x"], &["p1", "p2", "p3"], vec![attr::int("axis", 1), attr::int("num_outputs", 3)]),
                one("Pad", &["x", "pads"], "padded", vec![]),
                one("Tile", &["x", "repeats"], "tiled", vec![]),
                one("ReduceMean", &["x", "reduce_axes"], "mean", vec![attr::int("keepdims", 0)]),
                one("ReduceSum", &["x"], "total", vec![]),
                one("ArgMax", &["x"], "argmax", vec![attr::int("axis", -1)]),
            ],
        );
        assert_eq!(shape(&s, "t"), [N, f(7), f(10)]);
        assert_eq!(shape(&s, "cat"), [N, f(10), f(14)]);
        assert_eq!(shape(&s, "cat0"), [Dim::Batch(2), f(10), f(7)]);
        // Axis 1: 7..10; axis 2: 6, 4, 2, 0 (the end −100 clamps to before the start).
        assert_eq!(shape(&s, "sliced"), [N, f(3), f(4)]);
        assert_eq!(shape(&s, "gathered"), [N, f(2), f(3), f(7)]);
        assert_eq!(shape(&s, "picked"), [N, f(10)]);
        assert_eq!(shape(&s, "squeezed"), [N, f(4)]);
        assert_eq!(shape(&s, "unsqueezed"), [f(1), N, f(10), f(7), f(1)]);
        assert_eq!((shape(&s, "s1"), shape(&s, "s2")), (vec![N, f(3), f(7)], vec![N, f(7), f(7)]));
        assert_eq!([shape(&s, "p1")[1], shape(&s, "p2")[1], shape(&s, "p3")[1]], [f(4), f(4), f(2)]);
        assert_eq!(shape(&s, "padded"), [N, f(14), f(13)]);
        assert_eq!(shape(&s, "tiled"), [Dim::Batch(2), f(10), f(21)]);
        assert_eq!(shape(&s, "mean"), [N, f(7)]);
        assert_eq!(shape(&s, "total"), [f(1), f(1), f(1)]);
        assert_eq!(shape(&s, "argmax"), [N, f(10), f(1)]);
        assert_eq!(s.state_shape("cat0").unwrap()[0], StateDim::Batch(2));
        assert_eq!(s.state_shape("t").unwrap(), [StateDim::Batch(1), StateDim::Size(7), StateDim::Size(10)]);
    }

    #[test]
    fn resize_scales_or_sizes_and_shape_builders_give_their_sizes() {
        let s = infer(
            &[("x", &[None, Some(3), Some(8), Some(8)])],
            vec![
                tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 1.5]),
                tensor_i64("sizes", &[4], &[1, 3, 5, 5]),
                tensor_f32("empty", &[0], &[]),
                tensor_i64("start", &[], &[0]),
                tensor_i64("limit", &[], &[10]),
                tensor_i64("delta", &[], &[3]),
                tensor_i64("k", &[1], &[2]),
            ],
            vec![
                one("Resize", &["x", "", "scales"], "scaled", vec![]),
                one("Resize", &["x", "", "empty", "sizes"], "sized", vec![]),
                one("Upsample", &["x", "scales"], "upsampled", vec![]),
                one("Range", &["start", "limit", "delta"], "range", vec![]),
                one("Shape", &["x"], "tail", vec![attr::int("start", -2)]),
                one("ConstantOfShape", &["tail"], "zeros", vec![]),
                node("TopK", &["x", "k"], &["values", "indices"], vec![attr::int("axis", 1)]),
            ],
        );
        assert_eq!(shape(&s, "scaled"), [N, f(3), f(16), f(12)]);
        assert_eq!(shape(&s, "sized"), [f(1), f(3), f(5), f(5)]);
        assert_eq!(shape(&s, "upsampled"), [N, f(3), f(16), f(12)]);
        assert_eq!(shape(&s, "range"), [f(4)]);
        assert_eq!(shape(&s, "zeros"), [f(8), f(8)]);
        assert_eq!(shape(&s, "indices"), [N, f(2), f(8), f(8)]);
    }

    #[test]
    fn a_value_known_only_at_run_time_or_a_hostile_size_is_refused_with_its_node() {
        let s = infer(
            &[("x", &[None, Some(4)]), ("target", &[Some(2)]), ("y", &[None, Some(4), None])],
            vec![tensor_i64("huge", &[2], &[2, i64::MAX]), tensor_i64("wide", &[2], &[-1, 3])],
            vec![
                one("Reshape", &["x", "target"], "r", vec![]),
                one("NonZero", &["x"], "nz", vec![]),
                one("Tile", &["x", "huge"], "tiled", vec![]),
                one("Reshape", &["x", "wide"], "indivisible", vec![]),
                one("Relu", &["y"], "ragged", vec![]),
            ],
        );
        let reason = refusal(&s, "r");
        assert!(reason.contains("'Reshape_r' (Reshape)") && reason.contains("not a small integer value"), "{reason}");
        assert!(refusal(&s, "nz").contains("data-dependent"));
        assert!(refusal(&s, "tiled").contains("is not a size"));
        assert!(refusal(&s, "indivisible").contains("does not divide"));
        assert!(refusal(&s, "ragged").contains("symbolic size on axis 2"));
        assert!(refusal(&s, "nowhere").contains("no node writes it"));
    }
}
