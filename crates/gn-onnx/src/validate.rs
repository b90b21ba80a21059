//! Structural validation of a decoded model, once, before any pass looks at it.
//!
//! A model file is untrusted input: everything a pass would otherwise index, multiply or
//! follow is checked here, for the main graph, every subgraph, every model-local function
//! and the training info:
//!
//! * tensors: a known data type, non-negative dims whose product does not overflow, and
//!   exactly the data those dims need (in `raw_data` or the typed field), nothing left in
//!   a side file;
//! * values: every value written once (graph inputs, initializers and node outputs are
//!   distinct), graph outputs named and distinct;
//! * nodes: standard ops the passes read have their required inputs and outputs;
//! * the graph is acyclic; the default-domain opset is one this tool knows.

use std::collections::{HashMap, HashSet};

use crate::data::element_count;
use crate::proto::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::topology::{node_label, topo_order_of};

/// The newest ONNX opset (default domain) this tool knows the operators of.
pub const MAX_OPSET: i64 = 25;

/// Why a model is refused: where, and the reason. Displays as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct Invalid {
    pub place: String,
    pub reason: String,
}

fn invalid(place: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid { place: place.into(), reason: reason.into() }
}

/// Checks the whole model; see the module documentation.
pub fn validate_model(model: &ModelProto) -> Result<(), Invalid> {
    let mut default_opsets = model.opset_import.iter().filter(|o| matches!(o.domain(), "" | "ai.onnx"));
    if let Some(o) = default_opsets.next() {
        if default_opsets.next().is_some() {
            return Err(invalid("the model", "imports the default ONNX domain twice"));
        }
        if o.version() < 1 || o.version() > MAX_OPSET {
            return Err(invalid(
                "the model",
                format!(
                    "imports ONNX opset {}; gn-transpile knows opsets 1 to {MAX_OPSET} (re-export with an opset in that range)",
                    o.version()
                ),
            ));
        }
    }
    let graph = model.graph.as_ref().ok_or_else(|| invalid("the model", "has no graph"))?;
    validate_graph(graph, "the graph")?;
    for f in &model.functions {
        let place = format!("function '{}::{}'", f.domain(), f.name());
        validate_nodes(&f.node, &place)?;
        check_single_assignment(f.input.iter().map(String::as_str), &f.node, &place)?;
        for a in &f.attribute_proto {
            check_attribute_tensors(a, &place)?;
        }
    }
    for info in &model.training_info {
        for g in info.initialization.iter().chain(info.algorithm.iter()) {
            validate_graph(g, "training info")?;
        }
    }
    Ok(())
}

fn validate_graph(g: &GraphProto, place: &str) -> Result<(), Invalid> {
    for t in &g.initializer {
        check_tensor(t)?;
    }
    for s in &g.sparse_initializer {
        for t in s.values.iter().chain(s.indices.iter()) {
            check_tensor(t)?;
        }
    }
    let mut inputs = HashSet::new();
    for v in &g.input {
        if !inputs.insert(v.name()) {
            return Err(invalid(format!("{place} input '{}'", v.name()), "is listed twice"));
        }
    }
    let mut initializers = HashSet::new();
    for t in &g.initializer {
        if !initializers.insert(t.name()) {
            return Err(invalid(format!("tensor '{}'", t.name()), "is defined twice as an initializer"));
        }
    }
    // An initializer may also be listed as an input (its default value), so the two
    // sets are merged before node outputs are checked against them.
    let defined = inputs.union(&initializers).copied();
    check_single_assignment(defined, &g.node, place)?;
    let mut outputs = HashSet::new();
    for o in &g.output {
        if o.name().is_empty() {
            return Err(invalid(format!("{place} output"), "has no name"));
        }
        if !outputs.insert(o.name()) {
            return Err(invalid(format!("{place} output '{}'", o.name()), "is listed twice"));
        }
    }
    validate_nodes(&g.node, place)?;
    topo_order_of(&g.node).map_err(|e| invalid(place.to_string(), e.to_string()))?;
    Ok(())
}

/// Every value is written once: by a graph input or initializer, or by one node output.
fn check_single_assignment<'a>(
    defined: impl Iterator<Item = &'a str>,
    nodes: &'a [NodeProto],
    place: &str,
) -> Result<(), Invalid> {
    let mut writer: HashMap<&str, Option<usize>> = defined.map(|d| (d, None)).collect();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if let Some(prev) = writer.insert(o.as_str(), Some(i)) {
                let other = match prev {
                    Some(j) => node_label(&nodes[j], j),
                    None => format!("{place}'s inputs or initializers"),
                };
                return Err(invalid(node_label(n, i), format!("writes '{o}', which {other} already writes")));
            }
        }
    }
    Ok(())
}

/// Required inputs and outputs of the standard ops the passes read:
/// (op, fewest inputs, most inputs, fewest outputs, most outputs).
const ARITY: &[(&str, usize, usize, usize, usize)] = &[
    ("Floor", 1, 1, 1, 1),
    ("Relu", 1, 1, 1, 1),
    ("Identity", 1, 1, 1, 1),
    ("Neg", 1, 1, 1, 1),
    ("Add", 2, 2, 1, 1),
    ("Sub", 2, 2, 1, 1),
    ("Mul", 2, 2, 1, 1),
    ("Div", 2, 2, 1, 1),
    ("Max", 1, usize::MAX, 1, 1),
    ("Min", 1, usize::MAX, 1, 1),
    ("Sum", 1, usize::MAX, 1, 1),
    ("Mean", 1, usize::MAX, 1, 1),
    ("Clip", 1, 3, 1, 1),
    ("Conv", 2, 3, 1, 1),
    ("ConvTranspose", 2, 3, 1, 1),
    ("Gemm", 2, 3, 1, 1),
    ("MatMul", 2, 2, 1, 1),
    ("MaxPool", 1, 1, 1, 2),
    ("AveragePool", 1, 1, 1, 1),
    ("GlobalAveragePool", 1, 1, 1, 1),
    ("GlobalMaxPool", 1, 1, 1, 1),
    ("Flatten", 1, 1, 1, 1),
    ("Reshape", 1, 2, 1, 1),
    ("Transpose", 1, 1, 1, 1),
    ("Concat", 1, usize::MAX, 1, 1),
    ("Split", 1, 2, 1, usize::MAX),
    ("BatchNormalization", 5, 5, 1, 5),
    ("Squeeze", 1, 2, 1, 1),
    ("Unsqueeze", 1, 2, 1, 1),
    ("Dropout", 1, 3, 1, 2),
    ("Pad", 1, 4, 1, 1),
    ("ReduceMean", 1, 2, 1, 1),
    ("ReduceSum", 1, 2, 1, 1),
    ("ReduceMax", 1, 2, 1, 1),
    ("Slice", 1, 5, 1, 1),
    ("Gather", 2, 2, 1, 1),
    ("Cast", 1, 1, 1, 1),
    ("Expand", 2, 2, 1, 1),
    ("Tile", 2, 2, 1, 1),
    ("Shape", 1, 1, 1, 1),
    ("Size", 1, 1, 1, 1),
    ("Constant", 0, 0, 1, 1),
    ("ConstantOfShape", 1, 1, 1, 1),
    ("Range", 3, 3, 1, 1),
    ("Softmax", 1, 1, 1, 1),
    ("Resize", 1, 4, 1, 1),
    ("Upsample", 1, 2, 1, 1),
    ("Sigmoid", 1, 1, 1, 1),
    ("Tanh", 1, 1, 1, 1),
    ("LeakyRelu", 1, 1, 1, 1),
    ("DepthToSpace", 1, 1, 1, 1),
    ("SpaceToDepth", 1, 1, 1, 1),
];

fn validate_nodes(nodes: &[NodeProto], place: &str) -> Result<(), Invalid> {
    for (i, n) in nodes.iter().enumerate() {
        if n.output.iter().all(String::is_empty) {
            return Err(invalid(node_label(n, i), "has no output"));
        }
        for a in &n.attribute {
            check_attribute_tensors(a, place)?;
        }
        if !matches!(n.domain(), "" | "ai.onnx") {
            continue;
        }
        let Some(&(_, min_in, max_in, min_out, max_out)) = ARITY.iter().find(|a| a.0 == n.op_type()) else {
            continue;
        };
        let count = |what: &str, got: usize, lo: usize, hi: usize| -> Result<(), Invalid> {
            if got < lo || got > hi {
                let want = match (lo, hi) {
                    (l, h) if l == h => format!("{l}"),
                    (l, usize::MAX) => format!("at least {l}"),
                    (l, h) => format!("{l} to {h}"),
                };
                return Err(invalid(node_label(n, i), format!("has {got} {what}, {} takes {want}", n.op_type())));
            }
            Ok(())
        };
        count("inputs", n.input.len(), min_in, max_in)?;
        count("outputs", n.output.len(), min_out, max_out)?;
        if let Some(k) = n.input.iter().take(min_in).position(String::is_empty) {
            return Err(invalid(node_label(n, i), format!("input {k} is required but empty")));
        }
        if n.output.first().is_some_and(String::is_empty) {
            return Err(invalid(node_label(n, i), "its first output is required but empty"));
        }
        if n.op_type() == "Constant" && n.attribute.len() != 1 {
            return Err(invalid(node_label(n, i), "a Constant needs exactly one value attribute"));
        }
    }
    Ok(())
}

fn check_attribute_tensors(a: &crate::proto::AttributeProto, place: &str) -> Result<(), Invalid> {
    for t in a.t.iter().chain(a.tensors.iter()) {
        check_tensor(t)?;
    }
    for s in a.sparse_tensor.iter().chain(a.sparse_tensors.iter()) {
        for t in s.values.iter().chain(s.indices.iter()) {
            check_tensor(t)?;
        }
    }
    for g in a.g.iter().chain(a.graphs.iter()) {
        validate_graph(g, &format!("a subgraph of {place}"))?;
    }
    Ok(())
}

/// Bits per element of a tensor of type `ty` in `raw_data` (0 for strings).
pub fn element_bits(ty: DataType) -> u64 {
    use DataType::*;
    match ty {
        Float | Int32 | Uint32 => 32,
        Double | Int64 | Uint64 | Complex64 => 64,
        Complex128 => 128,
        Float16 | Bfloat16 | Int16 | Uint16 => 16,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz | Float8e8m0 => 8,
        Uint4 | Int4 | Float4e2m1 => 4,
        String | Undefined => 0,
    }
}

/// Checks one tensor: known data type, sane dims, and exactly the data they need.
pub fn check_tensor(t: &TensorProto) -> Result<(), Invalid> {
    let place = format!("tensor '{}'", t.name());
    let dtype = t.data_type();
    let ty = match DataType::try_from(dtype) {
        Ok(DataType::Undefined) => return Err(invalid(place, "has no data type (UNDEFINED)")),
        Ok(ty) => ty,
        Err(_) => return Err(invalid(place, format!("has data type {dtype}, which ONNX does not define"))),
    };
    if crate::io::is_external(t) {
        return Err(invalid(place, "is stored in a side file that was not read; load the model from its path"));
    }
    if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
        return Err(invalid(place, format!("has a negative dimension ({d}) in {:?}", t.dims)));
    }
    let count = element_count(&t.dims).filter(|&c| c <= 1 << 40).ok_or_else(|| {
        invalid(&place, format!("has dimensions {:?}, whose product overflows or exceeds 2^40 elements", t.dims))
    })?;
    use DataType::*;
    // Bits per element in raw_data, and the typed field with its length.
    let bits = element_bits(ty);
    let typed = match ty {
        Float | Complex64 => t.float_data.len(),
        Double | Complex128 => t.double_data.len(),
        Int64 => t.int64_data.len(),
        Uint32 | Uint64 => t.uint64_data.len(),
        String => t.string_data.len(),
        _ => t.int32_data.len(),
    };
    let per_element = if matches!(ty, Complex64 | Complex128) { 2 } else { 1 };
    let wanted_typed = match bits {
        4 => count.div_ceil(2),
        _ => count * per_element,
    };
    match &t.raw_data {
        Some(raw) if !(raw.is_empty() && typed > 0) => {
            if ty == String {
                return Err(invalid(place, "is a STRING tensor with raw_data, which ONNX does not allow"));
            }
            let need = (count as u64 * bits).div_ceil(8);
            if raw.len() as u64 != need {
                return Err(invalid(
                    place,
                    format!("holds {} bytes of data, not the {need} its shape {:?} needs", raw.len(), t.dims),
                ));
            }
        }
        _ => {
            if typed != wanted_typed {
                return Err(invalid(
                    place,
                    format!("holds {typed} values, not the {wanted_typed} its shape {:?} needs", t.dims),
                ));
            }
        }
    }
    Ok(())
}
