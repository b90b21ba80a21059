//! Pass 4, lower: fold the T time steps into the batch (SPEC §3, §5). Seeds on the
//! spiking-layer nodes (`IFNeuron`, `GroupNeuron`), which stay as nodes of the lowered
//! graph with a `timesteps` attribute; every emitted form is made from that graph by
//! [`crate::emit`].
//!
//! Time is folded into the batch ("multi-step" layout, step-major `[T·N, …]`):
//!
//! ```text
//!   input ─► prefix (time-invariant, runs once on [N, …]) ─► Neuron ─► [T·N, …] ─► Conv ─► Neuron ─► … ─► output [T·N, …]
//!
//!   lowered:   Neuron{T} reads [T·N, …], or a time-invariant [N, …] (`Lowered::invariant_currents`)
//!   standard:  on an invariant x: x ─► T steps ─► Concat(axis 0)
//!              on a folded x:     Reshape [T, -1] ─► Split(T) ─► T steps ─► Concat ─► Reshape(Shape(x))
//!   custom-op: an invariant x is tiled for the node: Concat(x, x, …, x)
//! ```
//!
//! Every value is classified as constant, time-invariant (`[N, …]`), folded (`[T·N, …]`)
//! or a shape computed from one of the latter two. A node that mixes a time-invariant
//! operand into folded ones gets that operand tiled T times along axis 0. Ops that are
//! not linear in their folded inputs (MaxPool, Softmax, …) make the time-averaged output
//! differ from the ANN's and are refused unless the user accepts that; ops that act on
//! axis 0 or compute with the batch size of a time-invariant tensor are refused.

use std::collections::{HashMap, HashSet};

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::NodeProto;
use gn_onnx::{Graph, Patch};

use crate::error::TranspileError;
use crate::neuron::{NeuronNode, Opset};
use crate::pass::{Context, Planned};
use crate::rank::{const_ints, Shapes};

/// When a value is computed, relative to the time steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeClass {
    /// Initializers and what is computed from them alone.
    Const,
    /// Computed once from the network input, batch on axis 0: `[N, …]`.
    Static,
    /// One slice per step, folded into the batch: `[T·N, …]`.
    Folded,
    /// A shape (or a piece of one) read from a `Static` tensor.
    ShapeOfStatic,
    /// A shape (or a piece of one) read from a `Folded` tensor.
    ShapeOfFolded,
}

/// What becomes of one node of the converted graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Before the first spiking layer (or on no spiking path): computed once.
    TimeInvariant,
    /// A spiking layer.
    Spiking,
    /// Runs once over all T·N samples; exact in time (linear in its folded inputs).
    Exact,
    /// A max-pool on time-varying inputs, lowered to a max-pool over the running sums:
    /// exact in rate (its time-averaged output is the max-pool of the time-averaged
    /// inputs at every step; see [`expand_max_pool`]).
    Rate,
    /// Runs on folded inputs but is not linear in them: the time-averaged output is not
    /// what the ANN computes. Allowed only when the user accepts it.
    Inexact(String),
    /// Cannot be lowered safely.
    Refused(String),
}

/// A node's role, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub node: String,
    pub op: String,
    pub role: Role,
}

/// The outcome of classifying a graph.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub classes: HashMap<String, TimeClass>,
    pub verdicts: Vec<Verdict>,
    /// The static batch N of the graph's inputs (`[N, …]` with N a number), if any.
    pub static_batch: Option<i64>,
    /// Outputs of the nodes on folded tensors whose constant shape operand holds the static
    /// batch N where it lines up with the batch axis: a Reshape target [N, …] becomes
    /// [T·N, …], an Expand shape [N, …] becomes [1, …], a Slice end N becomes open.
    pub rebatched: HashSet<String>,
    /// Constants that hold a batch of N on the axis that lines up with the batch axis of a
    /// folded operand (ConstantOfShape [N, …], an initializer [N, …]), by the index of the
    /// node that reads them: tiled T times for that node, like time-invariant operands.
    pub batch_constants: HashSet<(usize, String)>,
    /// The node indices in the topological order the verdicts follow.
    pub order: Vec<usize>,
}

/// The batch every graph input declares as a number on its first axis, if they agree.
pub fn static_batch(graph: &Graph) -> Option<i64> {
    use gn_onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
    let initializers: HashSet<&str> = graph.proto.initializer.iter().map(|t| t.name()).collect();
    let mut batch = None;
    for v in graph.proto.input.iter().filter(|v| !initializers.contains(v.name())) {
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return None;
        };
        let Some(Value::DimValue(n)) = t.shape.as_ref()?.dim.first()?.value else { return None };
        if n < 1 || batch.is_some_and(|b| b != n) {
            return None;
        }
        batch = Some(n);
    }
    batch
}

/// Ops that are linear in their (single) folded operand and act on each sample of the
/// batch independently, so they commute with the time average.
const LINEAR: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Sum",
    "Neg",
    "Mul",
    "Div",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "BatchNormalization",
    "Identity",
    "Squeeze",
    "Unsqueeze",
    "Dropout",
    "Pad",
    "ReduceMean",
    "ReduceSum",
    "Slice",
    "Split",
    "Gather",
    "Cast",
    "Expand",
    "Tile",
    "Mean",
    "DepthToSpace",
    "SpaceToDepth",
    "Resize",
    "Upsample",
];

/// Max-reductions per sample, lowered to the cumulative form on time-varying inputs.
pub const MAX_POOLS: &[&str] = &["MaxPool", "GlobalMaxPool", "ReduceMax"];

/// Ops whose output is a shape or a piece of one when their inputs are.
const SHAPE_OPS: &[&str] = &["Shape", "Size"];

fn node_name(n: &NodeProto, idx: usize) -> String {
    if n.name().is_empty() {
        format!("{}#{idx}", n.op_type())
    } else {
        n.name().to_string()
    }
}

/// Why a node that reads folded inputs would mix time with the batch, if it does.
fn acts_on_batch_axis(consts: &Constants, n: &NodeProto) -> Option<String> {
    let axis_attr = |name: &str, default: i64| attr::get_int(n, name).unwrap_or(default);
    let msg = |what: &str| Some(format!("{what} axis 0, which holds time × batch after folding"));
    match standard_op(n) {
        "Concat" | "Split" | "Gather" if axis_attr("axis", 0) == 0 => msg("works along"),
        "Flatten" if axis_attr("axis", 1) == 0 => msg("flattens"),
        "Transpose" => {
            let perm = n.attribute.iter().find(|a| a.name() == "perm").map(|a| a.ints.clone());
            match perm {
                Some(p) if p.first() == Some(&0) => None,
                _ => msg("moves"),
            }
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" => {
            let axes = n
                .attribute
                .iter()
                .find(|a| a.name() == "axes")
                .map(|a| a.ints.clone())
                .or_else(|| const_ints(consts, n, 1));
            match axes {
                Some(a) if !a.is_empty() && !a.contains(&0) => None,
                _ => msg("reduces over"),
            }
        }
        "Tile" => {
            let repeats = n.input.get(1).and_then(|i| consts.small(i)?.ok());
            match repeats {
                Some(r) if r.values.first() == Some(&1.0) => None,
                _ => msg("repeats along"),
            }
        }
        "Slice" => {
            let axes = n.input.get(3).filter(|s| !s.is_empty()).and_then(|i| consts.small(i)?.ok());
            match axes {
                Some(a) if !a.values.contains(&0.0) => None,
                _ => msg("slices"),
            }
        }
        _ => None,
    }
}

/// Classifies every value and node of a graph whose spiking layers are IR neuron nodes.
pub fn analyze(graph: &Graph) -> Result<Analysis, TranspileError> {
    use TimeClass::*;
    let order = graph.topo_order()?;
    let consts = graph.constants();
    let batch = static_batch(graph);
    let shapes = Shapes::infer(graph, &consts, &order);
    let mut rebatched = HashSet::new();
    let mut batch_constants = HashSet::new();
    let mut classes: HashMap<String, TimeClass> = HashMap::new();
    for v in &graph.proto.input {
        classes.insert(v.name().to_string(), Static);
    }
    for t in &graph.proto.initializer {
        classes.entry(t.name().to_string()).or_insert(Const);
    }
    let mut verdicts = Vec::with_capacity(order.len());
    for &idx in &order {
        let n = &graph.proto.node[idx];
        let name = node_name(n, idx);
        let inputs: Vec<TimeClass> =
            n.input.iter().filter(|i| !i.is_empty()).map(|i| classes.get(i).copied().unwrap_or(Static)).collect();
        let has = |c: TimeClass| inputs.contains(&c);
        let (out, role) = if NeuronNode::from_node(n).is_some() {
            match inputs.first() {
                Some(ShapeOfStatic | ShapeOfFolded) => {
                    (Folded, Role::Refused("a spiking layer on a shape tensor".into()))
                }
                _ if inputs.get(1).is_some_and(|&c| c != Const) => {
                    (Folded, Role::Refused("its thresholds per channel (input 2) are not a constant".into()))
                }
                _ => (Folded, Role::Spiking),
            }
        } else if SHAPE_OPS.contains(&standard_op(n)) {
            match inputs.first() {
                Some(Folded) => (ShapeOfFolded, Role::Exact),
                Some(Static) => (ShapeOfStatic, Role::TimeInvariant),
                _ => (Const, Role::TimeInvariant),
            }
        } else if has(Folded) {
            let role = if has(ShapeOfStatic) {
                Role::Refused("its shape operand is computed from the batch size of a time-invariant tensor".into())
            } else if let Some(whole) = slice_of_whole_batch(&consts, n, batch) {
                // A Slice that keeps all of axis 0 ([0, N) of a static batch N, or [0, ∞)):
                // its end becomes open, so it keeps all T·N.
                if !whole {
                    rebatched.extend(n.output.first().cloned());
                }
                Role::Exact
            } else if let Some(why) = acts_on_batch_axis(&consts, n) {
                Role::Refused(why)
            } else if let Some(verdict) = expand_of_folded(&shapes, &consts, &classes, n, batch) {
                match verdict {
                    Ok(()) => {
                        rebatched.extend(n.output.first().cloned());
                        Role::Exact
                    }
                    Err(why) => Role::Refused(why),
                }
            } else if let Err(why) = constants_on_the_batch_axis(&shapes, &classes, n, batch).map(|tiled| {
                batch_constants.extend(tiled.into_iter().map(|c| (idx, c)));
            }) {
                Role::Refused(why)
            } else if let Some(leading) = reshape_leading_entry(&consts, n).filter(|&d| d != 0.0 && d != -1.0) {
                // A leading 0 or -1 follows the input's batch; the static batch N is
                // rewritten to T·N when lowered; anything else fixes the batch.
                match batch {
                    Some(b) if leading == b as f64 => {
                        rebatched.extend(n.output.first().cloned());
                        Role::Exact
                    }
                    Some(b) => Role::Refused(format!(
                        "its target shape's first entry is neither 0, -1 nor the model's static batch {b}"
                    )),
                    None => Role::Refused(
                        "its target shape hard-codes the batch size; use 0 or -1 for the batch dimension".into(),
                    ),
                }
            } else if MAX_POOLS.contains(&standard_op(n)) {
                if standard_op(n) == "MaxPool" && n.output.get(1).is_some_and(|o| !o.is_empty()) {
                    Role::Refused("its Indices output depends on the step; only the pooled values convert".into())
                } else {
                    Role::Rate
                }
            } else if !LINEAR.contains(&standard_op(n)) {
                Role::Inexact(format!("{} is not linear, so it does not commute with the time average", n.op_type()))
            } else if matches!(standard_op(n), "Mul" | "Div" | "MatMul")
                && inputs.iter().filter(|&&c| c == Folded).count() > 1
            {
                Role::Inexact("a product of two time-varying tensors does not commute with the time average".into())
            } else if standard_op(n) == "Div" && classes.get(&n.input[1]) == Some(&Folded) {
                Role::Inexact("dividing by a time-varying tensor does not commute with the time average".into())
            } else {
                Role::Exact
            };
            (Folded, role)
        } else if has(ShapeOfFolded) {
            if has(Static) || has(ShapeOfStatic) {
                (ShapeOfFolded, Role::Refused("it mixes the folded batch size with a time-invariant tensor".into()))
            } else if matches!(standard_op(n), "ConstantOfShape" | "Range") {
                (Folded, Role::Exact)
            } else {
                (ShapeOfFolded, Role::Exact)
            }
        } else if has(ShapeOfStatic) {
            if matches!(standard_op(n), "ConstantOfShape" | "Range") {
                (Static, Role::TimeInvariant)
            } else {
                (ShapeOfStatic, Role::TimeInvariant)
            }
        } else if has(Static) {
            (Static, Role::TimeInvariant)
        } else {
            (Const, Role::TimeInvariant)
        };
        if !n.attribute.iter().all(|a| a.g.is_none() && a.graphs.is_empty()) && out == Folded {
            verdicts.push(Verdict {
                node: name,
                op: n.op_type().into(),
                role: Role::Refused("control flow on spiking activity is not supported".into()),
            });
        } else {
            verdicts.push(Verdict { node: name, op: n.op_type().into(), role });
        }
        for o in &n.output {
            classes.insert(o.clone(), out);
        }
    }
    Ok(Analysis { classes, verdicts, static_batch: batch, rebatched, batch_constants, order })
}

/// For an Expand of a folded tensor to a constant shape: `Some(Ok(()))` where the shape's
/// entry on the batch axis is the static batch N (it becomes 1, which keeps all T·N
/// rows), `Some(Err(why))` where the Expand would move or repeat the batch axis, and
/// `None` where it leaves the batch axis alone (or is not such an Expand).
fn expand_of_folded(
    shapes: &Shapes,
    consts: &Constants,
    classes: &HashMap<String, TimeClass>,
    n: &NodeProto,
    batch: Option<i64>,
) -> Option<Result<(), String>> {
    if standard_op(n) != "Expand" || classes.get(n.input.first()?) != Some(&TimeClass::Folded) {
        return None;
    }
    let shape = const_ints(consts, n, 1)?;
    let lead = *shape.first()?;
    match shapes.rank(&n.input[0]) {
        Some(r) if shape.len() > r => Some(Err(format!(
            "expands a tensor of rank {r} to rank {}, which moves axis 0 (time × batch after folding) off axis 0",
            shape.len()
        ))),
        Some(r) if shape.len() < r || lead == 1 => None,
        Some(_) if Some(lead) == batch => Some(Ok(())),
        Some(_) => Some(Err(format!(
            "its target shape's first entry {lead} hard-codes the batch size; use 1 to keep the input's batch"
        ))),
        None if lead > 1 && Some(lead) == batch => Some(Err(format!(
            "its target shape starts with the model's static batch {lead}, and the rank of its input is not known, so whether that entry is the batch axis cannot be told"
        ))),
        None => None,
    }
}

/// The constant operands of a broadcasting op or a Concat on folded tensors that hold
/// the static batch N on the axis lining up with the batch axis: they must be tiled T
/// times, as the ANN pairs them with N samples and the SNN with T·N. Refuses a
/// constant that would broadcast a folded tensor to a higher rank (moving its batch
/// axis), or one whose alignment cannot be told.
fn constants_on_the_batch_axis(
    shapes: &Shapes,
    classes: &HashMap<String, TimeClass>,
    n: &NodeProto,
    batch: Option<i64>,
) -> Result<Vec<String>, String> {
    let concat = standard_op(n) == "Concat";
    if !concat && !crate::rank::BROADCAST.contains(&standard_op(n)) {
        return Ok(vec![]);
    }
    let is = |i: &String, c: TimeClass| classes.get(i) == Some(&c);
    let folded_rank = n.input.iter().filter(|i| is(i, TimeClass::Folded)).filter_map(|i| shapes.rank(i)).max();
    let mut tiled = Vec::new();
    for c in n.input.iter().filter(|i| is(i, TimeClass::Const)) {
        let Some(dims) = shapes.dims(c) else { continue };
        if let Some(r) = folded_rank.filter(|&r| !concat && dims.len() > r) {
            return Err(format!(
                "broadcasts a tensor of rank {r} against the constant '{c}' of shape {dims:?}, which moves axis 0 (time × batch after folding) off axis 0"
            ));
        }
        let Some(b) = batch.filter(|&b| dims.first() == Some(&b) && (b > 1 || concat)) else { continue };
        match folded_rank {
            _ if concat => tiled.push(c.clone()),
            Some(r) if dims.len() == r => tiled.push(c.clone()),
            Some(_) => {}
            None if dims.len() >= 2 => {
                return Err(format!(
                    "its constant operand '{c}' of shape {dims:?} starts with the model's static batch {b}, and the rank of the other operands is not known, so whether that axis is the batch axis cannot be told"
                ))
            }
            None => {}
        }
    }
    Ok(tiled)
}

/// The first entry of a Reshape's constant target (`None` for other ops, and for a
/// target computed at run time).
fn reshape_leading_entry(consts: &Constants, n: &NodeProto) -> Option<f64> {
    if standard_op(n) != "Reshape" {
        return None;
    }
    consts.small(n.input.get(1)?)?.ok()?.values.first().copied()
}

/// For a Slice on axis 0 with constant bounds that keep the whole batch — start 0, step
/// 1, end i64::MAX (`Some(true)`: nothing to rewrite) or, with a static batch N, an end
/// ≥ N (`Some(false)`: the end becomes open) — and no other effect on axis 0; `None`
/// for any other node.
fn slice_of_whole_batch(consts: &Constants, n: &NodeProto, batch: Option<i64>) -> Option<bool> {
    if standard_op(n) != "Slice" {
        return None;
    }
    let values = |i: usize| -> Option<Vec<f64>> {
        let name = n.input.get(i).filter(|s| !s.is_empty())?;
        Some(consts.small(name)?.ok()?.values.clone())
    };
    let (starts, ends) = (values(1)?, values(2)?);
    let axes = values(3).unwrap_or_else(|| (0..starts.len()).map(|a| a as f64).collect());
    let steps = values(4).unwrap_or_else(|| vec![1.0; starts.len()]);
    let k = axes.iter().position(|&a| a == 0.0)?;
    if starts.get(k) != Some(&0.0) || steps.get(k) != Some(&1.0) {
        return None;
    }
    let end = *ends.get(k)?;
    if end >= i64::MAX as f64 {
        Some(true)
    } else {
        batch.filter(|&b| end >= b as f64).map(|_| false)
    }
}

/// What the lower pass did.
#[derive(Debug, Clone, Default)]
pub struct Lowered {
    /// Spiking layers emitted, by IR node name.
    pub spiking_layers: Vec<String>,
    /// Graph outputs that are folded `[T·N, …]` and need a readout.
    pub folded_outputs: Vec<String>,
    /// The input currents of spiking layers that are time-invariant (`[N, …]`, the same
    /// at every step); the other layers read `[T·N, …]`.
    pub invariant_currents: HashSet<String>,
    /// Time-invariant values tiled T times along axis 0 for the ops that mix them into
    /// folded ones: value → its tiling.
    pub tiles: HashMap<String, String>,
    /// The outputs of the max-pools on time-varying inputs (exact in rate): expanded to
    /// running sums here when T > 1, given state by the stateful emission.
    pub rate_pools: Vec<String>,
    /// One line per inexact node accepted by the user.
    pub warnings: Vec<String>,
}

/// Plans the lowering: every node on folded tensors runs once over `[T·N, …]`, the
/// spiking layers get `timesteps`, max-pools on spikes get their cumulative form, a
/// static batch N in a Reshape target becomes T·N, and time-invariant operands of folded
/// ops are tiled. Refuses what cannot be lowered (see [`analyze`]).
pub fn run(graph: &Graph, cx: &Context) -> Result<Planned<Lowered>, TranspileError> {
    let analysis = analyze(graph)?;
    let mut lowered = Lowered::default();
    for v in &analysis.verdicts {
        match &v.role {
            Role::Refused(reason) => {
                return Err(TranspileError::Pass {
                    pass: "lower",
                    node: v.node.clone(),
                    reason: format!("{} {reason}", v.op),
                })
            }
            Role::Inexact(reason) if !cx.options.allow_inexact => {
                return Err(TranspileError::Pass {
                    pass: "lower",
                    node: v.node.clone(),
                    reason: format!("{reason}; pass --allow-inexact to convert it anyway and accept the error"),
                })
            }
            Role::Inexact(reason) => lowered.warnings.push(format!("node '{}' ({}): {reason}", v.node, v.op)),
            _ => {}
        }
    }
    let Analysis { classes, rebatched, batch_constants, order, .. } = analysis;
    let t = cx.options.timesteps;
    let consts = graph.constants();
    let mut patch = Patch::new(graph);
    for idx in order {
        let original = &graph.nodes()[idx];
        if NeuronNode::from_node(original).is_some() {
            lowered.spiking_layers.push(original.name().to_string());
            let mut node = original.clone();
            NeuronNode::set_timesteps(&mut node, t);
            if matches!(classes.get(&node.input[0]), Some(TimeClass::Static | TimeClass::Const)) {
                lowered.invariant_currents.insert(node.input[0].clone());
            }
            patch.replace(idx, node);
            continue;
        }
        if !original.input.iter().any(|i| classes.get(i) == Some(&TimeClass::Folded)) {
            continue;
        }
        if MAX_POOLS.contains(&standard_op(original)) {
            lowered.rate_pools.extend(original.output.first().cloned());
        }
        if t == 1 {
            continue;
        }
        let mut node = original.clone();
        if node.output.first().is_some_and(|o| rebatched.contains(o)) && standard_op(&node) == "Slice" {
            // A Slice keeping all of a static batch keeps all of T·N: its end on axis 0 opens.
            let bound = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).and_then(|b| consts.small(b)?.ok());
            if let (Some(ends), axes) = (bound(2), bound(3)) {
                let k = axes.map_or(Some(0), |a| a.values.iter().position(|&v| v == 0.0));
                if let Some(k) = k {
                    let mut ends: Vec<i64> = ends.values.iter().map(|&v| v as i64).collect();
                    ends[k] = i64::MAX;
                    let name =
                        patch.add_initializer_i64(&format!("{}.folded", node.input[2]), &[ends.len() as i64], &ends);
                    node.input[2] = name;
                }
            }
        } else if node.output.first().is_some_and(|o| rebatched.contains(o)) {
            // A static-batch target [N, …] on a folded tensor becomes [T·N, …] (Reshape),
            // or [1, …] (Expand: the input's T·N rows stay as they are).
            if let Some(Ok(target)) = node.input.get(1).and_then(|t| consts.small(t)) {
                let mut dims: Vec<i64> = target.values.iter().map(|&v| v as i64).collect();
                dims[0] = if standard_op(&node) == "Expand" {
                    1
                } else {
                    dims[0].checked_mul(t as i64).ok_or_else(|| TranspileError::Pass {
                        pass: "lower",
                        node: original.name().to_string(),
                        reason: format!("{} its batch {} times T = {t} overflows", original.op_type(), dims[0]),
                    })?
                };
                let name = patch.add_initializer_i64(&format!("{}.folded", node.input[1]), &[dims.len() as i64], &dims);
                node.input[1] = name;
            }
        }
        if MAX_POOLS.contains(&standard_op(&node)) {
            patch.remove(idx);
            expand_max_pool(patch.builder(), cx.opset, node, t, None);
            continue;
        }
        for input in node.input.iter_mut() {
            if classes.get(input) == Some(&TimeClass::Static) || batch_constants.contains(&(idx, input.clone())) {
                *input = tile(&mut patch, &mut lowered.tiles, input, t);
            }
        }
        patch.replace(idx, node);
    }
    lowered.folded_outputs =
        graph.output_names().into_iter().filter(|o| classes.get(o) == Some(&TimeClass::Folded)).collect();
    Ok(Planned { patch, report: lowered })
}

/// The value `v` tiled `t` times along axis 0, `Concat(v, v, …, v)`: one tiling per value.
pub fn tile(patch: &mut Patch, tiles: &mut HashMap<String, String>, v: &str, t: usize) -> String {
    if let Some(tiled) = tiles.get(v) {
        return tiled.clone();
    }
    let copies = vec![v; t];
    let tiled = patch.add_node(v, "tiled", "Concat", &copies, vec![attr::int("axis", 0)]);
    tiles.insert(v.to_string(), tiled.clone());
    tiled
}

/// The running sums and the last pooled value of a max-pool on spikes, kept as state
/// (input, output) by a graph that runs one step per call.
#[derive(Debug, Clone, Copy)]
pub struct PoolState<'a> {
    /// C(t−1) in, C(t) out.
    pub sum: (&'a str, &'a str),
    /// P(t−1) in, P(t) out.
    pub max: (&'a str, &'a str),
}

/// Lowers a max-pool (MaxPool, GlobalMaxPool, ReduceMax) on a folded input `[T·N, …]` to
/// the max-pool of the running sums, differenced over time:
///
/// ```text
///   C(t) = Σ_{s ≤ t} x(s)          (running sum per input neuron)
///   P(t) = MaxPool(C(t))           (one MaxPool over all T·N samples)
///   y(t) = P(t) − P(t−1)           (P(0) = 0)
/// ```
///
/// The steps telescope: Σ_{s ≤ t} y(s) = MaxPool(C(t)), so the output averaged over the
/// first t steps is the max-pool of the inputs averaged over them, at every t; on spike
/// trains each y(t) is a non-negative count of firing units; at T = 1 it is the MaxPool.
///
/// With `state` (one step per call, `timesteps` = 1) C(t−1) and P(t−1) are read from the
/// state instead of being 0, and C(t) and P(t) are written to it. This is the one
/// definition of the cumulative max-pool: the unrolled and the stateful emissions use it.
pub fn expand_max_pool(graph: &mut Graph, opset: Opset, node: NodeProto, timesteps: usize, state: Option<PoolState>) {
    debug_assert!(state.is_none() || timesteps == 1, "a max-pool keeps state only in a one-step graph");
    let name = if node.name().is_empty() { format!("{}.maxpool", node.output[0]) } else { node.name().to_string() };
    let x = node.input[0].clone();
    let folded = timesteps > 1;
    if folded && state.is_none() && opset.0 >= 11 {
        return running_max_pool(graph, &name, node, timesteps);
    }
    let rows = folded.then(|| graph.add_initializer_i64(&format!("{name}.rows"), &[2], &[timesteps as i64, -1]));
    let parts = match &rows {
        Some(rows) => {
            let xs = graph.add_node(&name, "cum.steps", "Reshape", &[&x, rows], vec![]);
            opset.split(graph, &name, "cum.split", &xs, timesteps)
        }
        None => vec![x.clone()],
    };
    let mut sums: Vec<String> = Vec::with_capacity(timesteps);
    for (t, part) in parts.iter().enumerate() {
        let previous = match (t, state) {
            (0, None) => {
                sums.push(part.clone());
                continue;
            }
            (0, Some(s)) => s.sum.0.to_string(),
            _ => sums[t - 1].clone(),
        };
        let sum = graph.add_node(&name, &format!("cum.t{}", t + 1), "Add", &[&previous, part], vec![]);
        sums.push(match state {
            Some(s) => rename_last_output(graph, s.sum.1),
            None => sum,
        });
    }
    let counts = if folded {
        let refs: Vec<&str> = sums.iter().map(String::as_str).collect();
        let cum = graph.add_node(&name, "cum.join", "Concat", &refs, vec![attr::int("axis", 0)]);
        let x_shape = graph.add_node(&name, "cum.shape", "Shape", &[&x], vec![]);
        graph.add_node(&name, "cum", "Reshape", &[&cum, &x_shape], vec![])
    } else {
        sums[0].clone()
    };
    let pool_name = graph.unique_name(&format!("{name}.pooled"));
    let pooled = state.map_or(pool_name.clone(), |s| s.max.1.to_string());
    let mut pool = node.clone();
    pool.name = Some(pool_name);
    pool.input[0] = counts;
    pool.output = vec![pooled.clone()];
    graph.proto.node.push(pool);
    let parts = match &rows {
        Some(rows) => {
            let ps = graph.add_node(&name, "diff.steps", "Reshape", &[&pooled, rows], vec![]);
            opset.split(graph, &name, "diff.split", &ps, timesteps)
        }
        None => vec![pooled.clone()],
    };
    let mut steps = Vec::with_capacity(timesteps);
    for t in 0..timesteps {
        let previous = match (t, state) {
            (0, None) => {
                steps.push(parts[0].clone());
                continue;
            }
            (0, Some(s)) => s.max.0,
            _ => parts[t - 1].as_str(),
        };
        steps.push(graph.add_node(&name, &format!("diff.t{}", t + 1), "Sub", &[&parts[t], previous], vec![]));
    }
    if folded {
        let refs: Vec<&str> = steps.iter().map(String::as_str).collect();
        let joined = graph.add_node(&name, "diff.join", "Concat", &refs, vec![attr::int("axis", 0)]);
        let p_shape = graph.add_node(&name, "diff.shape", "Shape", &[&pooled], vec![]);
        graph.add_node(&name, "out", "Reshape", &[&joined, &p_shape], vec![]);
    }
    // The last node written (the output reshape, the difference, or the pool) writes y.
    rename_last_output(graph, &node.output[0]);
}

/// [`expand_max_pool`] on a folded input without state, in four passes over the data: the
/// running sums by one `CumSum` along the steps, the pool, and the difference as `P`
/// minus `P` shifted by one step (`Slice`, then `Pad` with a zero step in front). The
/// sums are taken in step order, as the chain of `Add`s of the general form does.
fn running_max_pool(graph: &mut Graph, name: &str, node: NodeProto, timesteps: usize) {
    let t = timesteps as i64;
    let x = node.input[0].clone();
    let rows = graph.add_initializer_i64(&format!("{name}.rows"), &[2], &[t, -1]);
    let axis = graph.add_initializer_i64(&format!("{name}.step_axis"), &[], &[0]);
    let xs = graph.add_node(name, "cum.steps", "Reshape", &[&x, &rows], vec![]);
    let cum = graph.add_node(name, "cum.sum", "CumSum", &[&xs, &axis], vec![]);
    let x_shape = graph.add_node(name, "cum.shape", "Shape", &[&x], vec![]);
    let counts = graph.add_node(name, "cum", "Reshape", &[&cum, &x_shape], vec![]);
    let pooled = graph.unique_name(&format!("{name}.pooled"));
    let mut pool = node.clone();
    pool.name = Some(pooled.clone());
    pool.input[0] = counts;
    pool.output = vec![pooled.clone()];
    graph.proto.node.push(pool);
    let ps = graph.add_node(name, "diff.steps", "Reshape", &[&pooled, &rows], vec![]);
    let starts = graph.add_initializer_i64(&format!("{name}.diff.starts"), &[1], &[0]);
    let ends = graph.add_initializer_i64(&format!("{name}.diff.ends"), &[1], &[t - 1]);
    let axes = graph.add_initializer_i64(&format!("{name}.diff.axes"), &[1], &[0]);
    let earlier = graph.add_node(name, "diff.earlier", "Slice", &[&ps, &starts, &ends, &axes], vec![]);
    let pads = graph.add_initializer_i64(&format!("{name}.diff.pads"), &[4], &[1, 0, 0, 0]);
    let previous = graph.add_node(name, "diff.previous", "Pad", &[&earlier, &pads], vec![]);
    let steps = graph.add_node(name, "diff", "Sub", &[&ps, &previous], vec![]);
    let p_shape = graph.add_node(name, "diff.shape", "Shape", &[&pooled], vec![]);
    graph.add_node(name, "out", "Reshape", &[&steps, &p_shape], vec![]);
    rename_last_output(graph, &node.output[0]);
}

/// Renames the output of the node last added to `graph`; returns the new name.
fn rename_last_output(graph: &mut Graph, name: &str) -> String {
    if let Some(last) = graph.proto.node.last_mut() {
        last.output[0] = name.to_string();
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron::{Neuron, NeuronKind};
    use crate::pipeline::Options;
    use gn_onnx::data::{float_value_info, tensor_f32};
    use gn_onnx::proto::GraphProto;

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<gn_onnx::proto::AttributeProto>) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: Some(output.into()),
            op_type: Some(op.into()),
            attribute,
            ..Default::default()
        }
    }

    fn layer(input: &str, output: &str) -> NodeProto {
        let neuron = Neuron { kind: NeuronKind::Gn, theta: 1.0, tau: 2, levels: 4 };
        NeuronNode { neuron, timesteps: None, direct: false, per_channel: false }.to_node(output, input, output)
    }

    /// x ─► layer ─► a ─► Add(a, x) ─► b ─► layer ─► c ─► extra
    fn graph(extra: NodeProto, batch: Option<i64>) -> Graph {
        Graph::new(GraphProto {
            node: vec![layer("x", "a"), node("Add", &["a", "x"], "b", vec![]), layer("b", "c"), extra],
            initializer: vec![tensor_f32("w", &[4, 4], &[0.5; 16])],
            input: vec![float_value_info("x", &[batch, Some(4)])],
            output: vec![float_value_info("y", &[batch, Some(4)])],
            ..Default::default()
        })
    }

    fn cx(timesteps: usize) -> Context {
        Context { options: Options { timesteps, ..Default::default() }, opset: Opset(17) }
    }

    #[test]
    fn values_are_classified_by_when_they_are_computed() {
        let g = graph(node("MatMul", &["c", "w"], "y", vec![]), None);
        let a = analyze(&g).unwrap();
        assert_eq!(a.classes["x"], TimeClass::Static);
        assert_eq!(a.classes["w"], TimeClass::Const);
        for v in ["a", "b", "c", "y"] {
            assert_eq!(a.classes[v], TimeClass::Folded, "{v}");
        }
        let roles: Vec<&Role> = a.verdicts.iter().map(|v| &v.role).collect();
        assert_eq!(roles, [&Role::Spiking, &Role::Exact, &Role::Spiking, &Role::Exact]);
    }

    #[test]
    fn lowering_sets_t_tiles_invariant_operands_and_records_invariant_currents() {
        let mut g = graph(node("MatMul", &["c", "w"], "y", vec![]), None);
        let lowered = crate::pass::run(&mut g, "lower", |g| run(g, &cx(3))).unwrap();
        assert_eq!(lowered.spiking_layers, ["a", "c"]);
        assert_eq!(lowered.folded_outputs, ["y"]);
        // The first layer reads x itself (emission decides how); the Add reads x tiled.
        assert_eq!(lowered.invariant_currents.iter().collect::<Vec<_>>(), ["x"]);
        assert_eq!(lowered.tiles.get("x").map(String::as_str), Some("x.tiled"));
        let render = g.render();
        assert!(render.contains("x.tiled: Concat(x, x, x) -> x.tiled {axis=0}"), "{render}");
        assert!(render.contains("b: Add(a, x.tiled) -> b"), "{render}");
        for n in g.nodes().iter().filter_map(NeuronNode::from_node) {
            assert_eq!(n.timesteps, Some(3));
        }
    }

    #[test]
    fn at_one_step_nothing_is_tiled() {
        let mut g = graph(node("MatMul", &["c", "w"], "y", vec![]), None);
        let lowered = crate::pass::run(&mut g, "lower", |g| run(g, &cx(1))).unwrap();
        assert!(lowered.tiles.is_empty());
        assert!(g.render().contains("b: Add(a, x) -> b"));
    }

    #[test]
    fn ops_that_mix_time_with_the_batch_are_refused_and_nonlinear_ones_need_consent() {
        let concat = node("Concat", &["c", "c"], "y", vec![attr::int("axis", 0)]);
        let err = run(&graph(concat, None), &cx(2)).unwrap_err().to_string();
        assert!(err.contains("axis 0, which holds time × batch"), "{err}");
        for (first, ok) in [(2, false), (1, true)] {
            let mut g = graph(node("Tile", &["c", "repeats"], "y", vec![]), None);
            g.proto.initializer.push(gn_onnx::data::tensor_i64("repeats", &[2], &[first, 3]));
            let result = run(&g, &cx(2));
            assert_eq!(result.is_ok(), ok, "repeats [{first}, 3]");
        }
        let softmax = node("Softmax", &["c"], "y", vec![]);
        let err = run(&graph(softmax.clone(), None), &cx(2)).unwrap_err().to_string();
        assert!(err.contains("--allow-inexact"), "{err}");
        let mut lenient = cx(2);
        lenient.options.allow_inexact = true;
        let planned = run(&graph(softmax, None), &lenient).unwrap();
        assert_eq!(planned.report.warnings.len(), 1);
    }

    #[test]
    fn a_static_batch_reshape_target_becomes_t_times_n() {
        let mut g = graph(node("Reshape", &["c", "target"], "y", vec![]), Some(5));
        g.proto.initializer.push(gn_onnx::data::tensor_i64("target", &[2], &[5, -1]));
        let a = analyze(&g).unwrap();
        assert_eq!(a.static_batch, Some(5));
        assert!(a.rebatched.contains("y"));
        crate::pass::run(&mut g, "lower", |g| run(g, &cx(3))).unwrap();
        let target = g.nodes().iter().find(|n| n.op_type() == "Reshape").unwrap().input[1].clone();
        assert_eq!(g.constant(&target).unwrap().unwrap().values, [15.0, -1.0]);
    }

    #[test]
    fn a_slice_of_the_whole_static_batch_keeps_all_t_times_n() {
        // Slice [0, N) on axis 0 opens its end; [0, 2) of 5 would drop samples: refused.
        for (end, ok) in [(5, true), (7, true), (2, false)] {
            let mut g = graph(node("Slice", &["c", "starts", "ends", "axes"], "y", vec![]), Some(5));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("starts", &[2], &[0, 1]));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("ends", &[2], &[end, 3]));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("axes", &[2], &[0, 1]));
            let lowered = crate::pass::run(&mut g, "lower", |g| run(g, &cx(3)));
            assert_eq!(lowered.is_ok(), ok, "end {end}: {:?}", lowered.err());
            if ok {
                let ends = g.nodes().iter().find(|n| n.op_type() == "Slice").unwrap().input[2].clone();
                assert_eq!(g.constant(&ends).unwrap().unwrap().values, [i64::MAX as f64, 3.0]);
            }
        }
    }

    #[test]
    fn an_expand_to_the_static_batch_keeps_all_t_times_n_and_one_to_a_higher_rank_is_refused() {
        // x is [5, 4]: Expand(c, [5, 4]) lines its 5 up with the batch axis → [1, 4].
        for (shape, ok) in [(vec![5, 4], true), (vec![1, 4], true), (vec![4], true), (vec![2, 5, 4], false)] {
            let mut g = graph(node("Expand", &["c", "shape"], "y", vec![]), Some(5));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("shape", &[shape.len() as i64], &shape));
            let lowered = crate::pass::run(&mut g, "lower", |g| run(g, &cx(3)));
            assert_eq!(lowered.is_ok(), ok, "{shape:?}: {:?}", lowered.err());
            if ok {
                let s = g.nodes().iter().find(|n| n.op_type() == "Expand").unwrap().input[1].clone();
                let want: Vec<f64> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if i == 0 && shape.len() == 2 { 1.0 } else { d as f64 })
                    .collect();
                assert_eq!(g.constant(&s).unwrap().unwrap().values, want, "{shape:?}");
            } else {
                let err = lowered.unwrap_err().to_string();
                assert!(err.contains("'y'") && err.contains("rank 2 to rank 3"), "{err}");
            }
        }
    }

    #[test]
    fn constants_holding_the_static_batch_on_the_batch_axis_are_tiled() {
        // [5, 4] lines up with c's batch axis; [1, 4] broadcasts; [4] lines up with features.
        for (dims, tiled) in [(vec![5i64, 4], true), (vec![1, 4], false), (vec![4], false)] {
            let count = dims.iter().product::<i64>() as usize;
            let mut g = graph(node("Add", &["c", "k"], "y", vec![]), Some(5));
            g.proto.initializer.push(tensor_f32("k", &dims, &vec![0.5; count]));
            let a = analyze(&g).unwrap();
            assert_eq!(a.batch_constants.iter().any(|(_, c)| c == "k"), tiled, "{dims:?}");
            crate::pass::run(&mut g, "lower", |g| run(g, &cx(3))).unwrap();
            assert_eq!(g.render().contains("y: Add(c, k.tiled) -> y"), tiled, "{dims:?}: {}", g.render());
        }
        // A ConstantOfShape [5, 2] concatenated along features, and one of a higher rank
        // broadcast against c: tiled; refused.
        let mut g = graph(node("Concat", &["c", "z"], "y", vec![attr::int("axis", 1)]), Some(5));
        g.proto.initializer.push(gn_onnx::data::tensor_i64("zshape", &[2], &[5, 2]));
        g.proto.node.insert(0, node("ConstantOfShape", &["zshape"], "z", vec![]));
        crate::pass::run(&mut g, "lower", |g| run(g, &cx(3))).unwrap();
        assert!(g.render().contains("y: Concat(c, z.tiled) -> y"), "{}", g.render());
        // Every broadcasting op, the inexact ones too (they convert with --allow-inexact).
        for op in ["Mul", "Pow", "PRelu", "Less"] {
            let mut g = graph(node(op, &["c", "k"], "y", vec![]), Some(5));
            g.proto.initializer.push(tensor_f32("k", &[2, 5, 4], &[0.5; 40]));
            let err = run(&g, &cx(3)).unwrap_err().to_string();
            assert!(err.contains("moves axis 0"), "{op}: {err}");
            let mut g = graph(node(op, &["c", "k"], "y", vec![]), Some(5));
            g.proto.initializer.push(tensor_f32("k", &[5, 4], &[0.5; 20]));
            assert!(analyze(&g).unwrap().batch_constants.iter().any(|(_, c)| c == "k"), "{op}");
        }
    }

    #[test]
    fn a_max_pool_on_spikes_gets_the_running_count_form() {
        let pool = node("ReduceMax", &["c"], "y", vec![attr::ints("axes", &[1])]);
        let g = graph(pool, None);
        assert_eq!(analyze(&g).unwrap().verdicts[3].role, Role::Rate);
        // From opset 11 the running sums are one CumSum and the difference one Sub;
        // before, a chain of T − 1 Adds and T − 1 Subs.
        for (opset, cumsum, subs) in [(17, 1, 1), (10, 0, 2)] {
            let mut g = g.clone();
            let cx = Context { opset: Opset(opset), ..cx(3) };
            crate::pass::run(&mut g, "lower", |g| run(g, &cx)).unwrap();
            g.sort().unwrap();
            let ops: Vec<&str> = g.nodes().iter().map(|n| n.op_type()).collect();
            assert_eq!(ops.iter().filter(|&&o| o == "ReduceMax").count(), 1);
            assert_eq!(ops.iter().filter(|&&o| o == "CumSum").count(), cumsum, "{ops:?}");
            assert_eq!(ops.iter().filter(|&&o| o == "Sub").count(), subs, "{ops:?}");
            // The pooled value keeps its name, written by the last difference's reshape.
            assert_eq!(g.nodes().iter().filter(|n| n.output[0] == "y").count(), 1);
        }
    }
}
