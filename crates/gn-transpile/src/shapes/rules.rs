//! The shape rule of each op: the dispatch, element-wise ops, and the ops that make
//! shapes (Shape, Constant, ConstantOfShape, Range).

use std::collections::HashMap;

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::NodeProto;

use super::dim::{broadcast, product_dim, render, Dim};
use super::kernels::{conv, conv_transpose, einsum, gemm, matmul, pool, reduce, reduced, resize};
use super::layout::{clamped_range, concat, gather, pad, reshape, slice, split, squeeze, unsqueeze};
use super::{fixed_count, here, small_ints, Fact, Known, Rule, Why, MAX_VALUE_ELEMENTS};
use crate::neuron::NeuronNode;

/// The elements of the broadcast of small values, each computed by `f` from the inputs'
/// elements; `None` unless every input has a value and the result is small.
pub(super) fn broadcast_values(out: &[Dim], inputs: &[&Fact], f: impl Fn(&[Dim]) -> Option<Dim>) -> Option<Vec<Dim>> {
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
pub(super) fn moved_values(
    value: &[Dim],
    shape: &[Dim],
    out: &[Dim],
    from: &[(usize, i128, i128)],
) -> Option<Vec<Dim>> {
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
pub(super) fn axis(a: i64, rank: usize) -> Rule<usize> {
    let r = rank as i64;
    match a {
        a if (0..r).contains(&a) => Ok(a as usize),
        a if (-r..0).contains(&a) => Ok((a + r) as usize),
        _ => here(format!("axis {a} is outside a value of rank {rank}")),
    }
}

/// The axes in `-rank..rank`, as sorted distinct indices.
pub(super) fn axes(list: &[i64], rank: usize) -> Rule<Vec<usize>> {
    let mut out = list.iter().map(|&a| axis(a, rank)).collect::<Rule<Vec<usize>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return here(format!("axes {list:?} repeat an axis"));
    }
    Ok(out)
}

/// The reading of one node: its inputs' facts, the constants, the opset.
pub(super) struct Cx<'a> {
    pub(super) facts: &'a HashMap<String, Known>,
    pub(super) consts: &'a Constants<'a>,
    pub(super) opset: i64,
    pub(super) node: &'a NodeProto,
}

impl<'a> Cx<'a> {
    pub(super) fn name(&self, i: usize) -> Option<&'a str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub(super) fn has(&self, i: usize) -> bool {
        self.name(i).is_some()
    }

    pub(super) fn fact(&self, i: usize) -> Rule<&'a Fact> {
        let Some(name) = self.name(i) else { return here(format!("has no input {i}")) };
        match self.facts.get(name) {
            Some(Ok(f)) => Ok(f),
            Some(Err(f)) => Err(Why::Upstream(f.clone())),
            None => here(format!("reads '{name}', which is not a graph input, an initializer or a node's output")),
        }
    }

    pub(super) fn shape(&self, i: usize) -> Rule<&'a [Dim]> {
        Ok(&self.fact(i)?.shape)
    }

    /// The elements of input `i` (followed through the graph, or a constant's).
    pub(super) fn value(&self, i: usize) -> Rule<Vec<Dim>> {
        match &self.fact(i)?.value {
            Some(v) => Ok(v.clone()),
            None => here(format!(
                "input '{}' is not a small integer value known before running",
                self.name(i).unwrap_or_default()
            )),
        }
    }

    /// The elements of input `i`, all fixed.
    pub(super) fn ints(&self, i: usize) -> Rule<Vec<i64>> {
        let value = self.value(i)?;
        match value.iter().map(|d| d.fixed()).collect::<Option<Vec<i64>>>() {
            Some(ints) => Ok(ints),
            None => here(format!("input {i} is {}, which depends on the batch", render(&value))),
        }
    }

    /// The elements of a constant input `i` as numbers (scales).
    pub(super) fn floats(&self, i: usize) -> Rule<Vec<f64>> {
        let name = self.name(i).unwrap_or_default();
        match self.consts.small(name) {
            Some(Ok(c)) => Ok(c.values),
            _ => here(format!("input '{name}' is not a small constant")),
        }
    }

    pub(super) fn attr(&self, name: &str) -> Option<&'a gn_onnx::proto::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        attr::get_int(self.node, name).unwrap_or(default)
    }

    pub(super) fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A list read from attribute `name` if the node has it, else from input `i`
    /// (the two spellings of axes, pads, splits across opsets); `None` when neither is given.
    pub(super) fn attr_or_input(&self, name: &str, i: usize) -> Rule<Option<Vec<i64>>> {
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
pub(super) fn rule(cx: &Cx) -> Rule<Vec<Fact>> {
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
pub(super) fn unary(cx: &Cx, op: &str) -> Rule<Fact> {
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
pub(super) fn elementwise(cx: &Cx, op: &str) -> Rule<Fact> {
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
        // ONNX's integer Div truncates toward zero (`(d + 2) / 3`, the size of a chunk);
        // an operand that is an integer constant says the two are integers.
        ("Div", &[a, b])
            if [a, b].iter().any(|&i| {
                cx.name(i)
                    .and_then(|v| cx.consts.data_type(v))
                    .is_some_and(|t| gn_onnx::data::is_integer_type(t.into()))
            }) =>
        {
            let facts = [cx.fact(a)?, cx.fact(b)?];
            broadcast_values(&shape, &facts, |v| match (v[0], v[1]) {
                (Dim::Fixed(x), Dim::Fixed(y)) => x.checked_div(y).map(Dim::Fixed),
                (x, y) => x.div(y),
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
pub(super) fn binary_value(op: &str, a: Dim, b: Dim) -> Option<Dim> {
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
pub(super) fn constant(cx: &Cx) -> Rule<Fact> {
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
pub(super) fn shape_of(cx: &Cx) -> Rule<Fact> {
    let x = cx.shape(0)?;
    let r = x.len() as i64;
    Ok(Fact::vector(x[clamped_range(r, cx.int("start", 0), cx.int("end", r))].to_vec()))
}

/// A shape given by value: every element must be a size.
pub(super) fn shape_value(cx: &Cx, i: usize) -> Rule<Vec<Dim>> {
    let shape = cx.value(i)?;
    match shape.iter().find(|d| !d.is_size()) {
        Some(d) => here(format!("shape {} has size {d}", render(&shape))),
        None => Ok(shape),
    }
}

pub(super) fn constant_of_shape(cx: &Cx) -> Rule<Fact> {
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
pub(super) fn range(cx: &Cx) -> Rule<Fact> {
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
