//! Pass 4, lower: fold the T time steps into the batch (SPEC §3, §5). Seeds on the
//! spiking-layer nodes (`IFNeuron`, `GroupNeuron`), which stay as nodes of the lowered
//! graph with a `timesteps` attribute: that graph is the custom-op emission. The
//! standard emission then replaces each of them by its expansion ([`expand_neurons`]).
//!
//! Time is folded into the batch ("multi-step" layout, step-major `[T·N, …]`):
//!
//! ```text
//!   input ─► prefix (time-invariant, runs once on [N, …]) ─► Neuron ─► [T·N, …] ─► Conv ─► Neuron ─► … ─► output [T·N, …]
//!
//!   lowered:   Neuron{T} reads [T·N, …]; a time-invariant x is tiled: Concat(x, x, …, x)
//!   expanded:  on a tiled x:   x ─► T steps ─► Concat(axis 0)          (the tiling is dropped)
//!              on a folded x:  Reshape [T, -1] ─► Split(T) ─► T steps ─► Concat ─► Reshape(Shape(x))
//! ```
//!
//! Every value is classified as constant, time-invariant (`[N, …]`), folded (`[T·N, …]`)
//! or a shape computed from one of the latter two. A node that mixes a time-invariant
//! operand into folded ones gets that operand tiled T times along axis 0. Ops that are
//! not linear in their folded inputs (MaxPool, Softmax, …) make the time-averaged output
//! differ from the ANN's and are refused unless the user accepts that; ops that act on
//! axis 0 or compute with the batch size of a time-invariant tensor are refused.

use std::collections::HashMap;

use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::neuron::{expand_layer, Current, Neuron, Opset, Params};

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
fn acts_on_batch_axis(graph: &Graph, n: &NodeProto) -> Option<String> {
    let axis_attr = |name: &str, default: i64| attr::get_int(n, name).unwrap_or(default);
    let msg = |what: &str| Some(format!("{what} axis 0, which holds time × batch after folding"));
    match n.op_type() {
        "Concat" | "Split" | "Gather" if axis_attr("axis", 0) == 0 => msg("works along"),
        "Flatten" if axis_attr("axis", 1) == 0 => msg("flattens"),
        "Transpose" => {
            let perm = n.attribute.iter().find(|a| a.name() == "perm").map(|a| a.ints.clone());
            match perm {
                Some(p) if p.first() == Some(&0) => None,
                _ => msg("moves"),
            }
        }
        "ReduceMean" | "ReduceSum" => {
            let axes = n.attribute.iter().find(|a| a.name() == "axes").map(|a| a.ints.clone()).or_else(|| {
                n.input
                    .get(1)
                    .and_then(|i| graph.constant(i)?.ok())
                    .map(|c| c.values.iter().map(|&v| v as i64).collect())
            });
            match axes {
                Some(a) if !a.is_empty() && !a.contains(&0) => None,
                _ => msg("reduces over"),
            }
        }
        "Slice" => {
            let axes = n.input.get(3).filter(|s| !s.is_empty()).and_then(|i| graph.constant(i)?.ok());
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
    let mut classes: HashMap<String, TimeClass> = HashMap::new();
    for v in &graph.proto.input {
        classes.insert(v.name().to_string(), Static);
    }
    for t in &graph.proto.initializer {
        classes.entry(t.name().to_string()).or_insert(Const);
    }
    let mut verdicts = Vec::with_capacity(order.len());
    for idx in order {
        let n = &graph.proto.node[idx];
        let name = node_name(n, idx);
        let inputs: Vec<TimeClass> =
            n.input.iter().filter(|i| !i.is_empty()).map(|i| classes.get(i).copied().unwrap_or(Static)).collect();
        let has = |c: TimeClass| inputs.contains(&c);
        let (out, role) = if Neuron::from_node(n).is_some() {
            match inputs.first() {
                Some(ShapeOfStatic | ShapeOfFolded) => {
                    (Folded, Role::Refused("a spiking layer on a shape tensor".into()))
                }
                _ => (Folded, Role::Spiking),
            }
        } else if SHAPE_OPS.contains(&n.op_type()) {
            match inputs.first() {
                Some(Folded) => (ShapeOfFolded, Role::Exact),
                Some(Static) => (ShapeOfStatic, Role::TimeInvariant),
                _ => (Const, Role::TimeInvariant),
            }
        } else if has(Folded) {
            let role = if has(ShapeOfStatic) {
                Role::Refused("its shape operand is computed from the batch size of a time-invariant tensor".into())
            } else if let Some(why) = acts_on_batch_axis(graph, n) {
                Role::Refused(why)
            } else if n.op_type() == "Reshape" && reshape_hardcodes_batch(graph, n) {
                Role::Refused("its target shape hard-codes the batch size; use 0 or -1 for the batch dimension".into())
            } else if n.op_type() == "MaxPool" {
                Role::Inexact("MaxPool of spike trains is not the spike train of the MaxPool".into())
            } else if !LINEAR.contains(&n.op_type()) {
                Role::Inexact(format!("{} is not linear, so it does not commute with the time average", n.op_type()))
            } else if matches!(n.op_type(), "Mul" | "Div" | "MatMul")
                && inputs.iter().filter(|&&c| c == Folded).count() > 1
            {
                Role::Inexact("a product of two time-varying tensors does not commute with the time average".into())
            } else if n.op_type() == "Div" && classes.get(&n.input[1]) == Some(&Folded) {
                Role::Inexact("dividing by a time-varying tensor does not commute with the time average".into())
            } else {
                Role::Exact
            };
            (Folded, role)
        } else if has(ShapeOfFolded) {
            if has(Static) || has(ShapeOfStatic) {
                (ShapeOfFolded, Role::Refused("it mixes the folded batch size with a time-invariant tensor".into()))
            } else if matches!(n.op_type(), "ConstantOfShape" | "Range") {
                (Folded, Role::Exact)
            } else {
                (ShapeOfFolded, Role::Exact)
            }
        } else if has(ShapeOfStatic) {
            if matches!(n.op_type(), "ConstantOfShape" | "Range") {
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
    Ok(Analysis { classes, verdicts })
}

fn reshape_hardcodes_batch(graph: &Graph, n: &NodeProto) -> bool {
    match n.input.get(1).and_then(|s| graph.constant(s)).and_then(Result::ok) {
        Some(shape) => shape.values.first().is_some_and(|&d| d != 0.0 && d != -1.0),
        None => false,
    }
}

/// Options of the lower pass.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    pub timesteps: usize,
    pub allow_inexact: bool,
}

/// What the lower pass did.
#[derive(Debug, Clone, Default)]
pub struct Lowered {
    /// Spiking layers emitted, by IR node name.
    pub spiking_layers: Vec<String>,
    /// Graph outputs that are folded `[T·N, …]` and need a readout.
    pub folded_outputs: Vec<String>,
    /// One line per inexact node accepted by the user.
    pub warnings: Vec<String>,
}

/// Runs the lower pass.
pub fn lower(graph: &mut Graph, options: &LowerOptions) -> Result<Lowered, TranspileError> {
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
            Role::Inexact(reason) if !options.allow_inexact => {
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
    let classes = analysis.classes;
    let t = options.timesteps;
    let order = graph.topo_order()?;
    let nodes = std::mem::take(&mut graph.proto.node);
    let mut tiled: HashMap<String, String> = HashMap::new();
    let mut slots: Vec<Option<NodeProto>> = nodes.into_iter().map(Some).collect();
    for idx in order {
        let Some(mut node) = slots[idx].take() else { continue };
        let spiking = Neuron::from_node(&node).is_some();
        if spiking {
            lowered.spiking_layers.push(node.name().to_string());
            node.attribute.retain(|a| a.name() != "timesteps");
            node.attribute.push(attr::int("timesteps", t as i64));
        }
        let folded = spiking || node.input.iter().any(|i| classes.get(i) == Some(&TimeClass::Folded));
        if folded && t > 1 {
            for i in 0..node.input.len() {
                let v = node.input[i].clone();
                if classes.get(&v) == Some(&TimeClass::Static) {
                    let tiled_name = match tiled.get(&v) {
                        Some(n) => n.clone(),
                        None => {
                            let copies = vec![v.as_str(); t];
                            let n = graph.add_node(&v, "tiled", "Concat", &copies, vec![attr::int("axis", 0)]);
                            tiled.insert(v.clone(), n.clone());
                            n
                        }
                    };
                    node.input[i] = tiled_name;
                }
            }
        }
        graph.proto.node.push(node);
    }
    lowered.folded_outputs =
        graph.output_names().into_iter().filter(|o| classes.get(o) == Some(&TimeClass::Folded)).collect();
    Ok(lowered)
}

/// The value tiled by `Concat(v, v, …, v)` along axis 0 with `copies` inputs, if `node` is that.
fn tiled_value(node: &NodeProto, copies: usize) -> Option<&str> {
    let first = node.input.first()?;
    let tiles = node.op_type() == "Concat"
        && attr::get_int(node, "axis") == Some(0)
        && node.input.len() == copies
        && node.input.iter().all(|i| i == first);
    tiles.then_some(first.as_str())
}

/// Replaces every spiking-layer node of a lowered graph by its standard-op expansion
/// ([`expand_layer`]). A layer whose input is its time-invariant current tiled T times
/// reads that current directly, so the tiling disappears. Returns the layers expanded.
pub fn expand_neurons(graph: &mut Graph, opset: Opset) -> usize {
    let nodes = std::mem::take(&mut graph.proto.node);
    let mut expanded = 0;
    let mut kept = Vec::with_capacity(nodes.len());
    let mut neurons = Vec::new();
    for node in nodes {
        match Neuron::from_node(&node) {
            Some(neuron) => neurons.push((neuron, node)),
            None => kept.push(node),
        }
    }
    graph.proto.node = kept;
    // Expansions are appended, so the indices of the kept nodes stay valid.
    let producers = graph.producers();
    for (neuron, node) in neurons {
        let t = attr::get_int(&node, "timesteps").unwrap_or(1).max(1) as usize;
        let input = node.input[0].clone();
        let producer = producers.get(&input).map(|&i| &graph.proto.node[i]);
        let tiled = producer.and_then(|p| tiled_value(p, t)).map(str::to_string);
        let (x, current) = match (t, tiled) {
            (1, _) => (input, Current::Constant),
            (_, Some(v)) => (v, Current::Constant),
            _ => (input, Current::Folded),
        };
        expand_layer(graph, opset, node.name(), Params::Inline(&neuron), &x, current, t, &node.output[0]);
        expanded += 1;
    }
    expanded
}
