//! Time analysis: when each value of a graph with spiking layers is computed relative
//! to the time steps ([`TimeClass`]: constant, once per sample, once per step folded into
//! the batch, or a shape read from one of those), and what becomes of each node
//! ([`Role`]: computed once, a spiking layer, exact in time, exact in rate, inexact, or
//! refused, with the reason). The commute and lower passes, the emission and `inspect`
//! read it; the op facts come from [`crate::ops`].
//!
//! ```text
//!   input ─► Conv ─► Neuron ─► Conv ─► MaxPool ─► Neuron ─► Gemm ─► output
//!   Static   Static  Folded    Folded  Folded     Folded    Folded   (classes of outputs)
//!   TimeInv  TimeInv Spiking   Exact   Rate       Spiking   Exact    (roles)
//! ```

use std::collections::{HashMap, HashSet};

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::error::TranspileError;
use crate::neuron::NeuronNode;
use crate::ops;
use crate::rank::{const_ints, Shapes};
use crate::rows::{self, ShapeRows};

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
    /// Linear, but acts along axis 0 of a folded value (a Transpose that moves it, a
    /// Reshape, Gather, Slice or Concat across it): runs once per step, on each step's
    /// slice as the ANN runs it ([`crate::per_step`]); exact in time. The reason says what
    /// it does along axis 0.
    PerStep(String),
    /// Not linear in its time-varying inputs, and a function of its current inputs: exact
    /// in rate. Its output averaged over the first t steps is the op applied to its inputs
    /// averaged over them, at every t: a max-pool by the running sums
    /// ([`crate::rate::expand_max_pool`]), any other op as part of a region computed on
    /// the running averages and differenced over the steps ([`crate::rate`]).
    Rate,
    /// Runs on folded inputs but is not a function of its current inputs (random ops,
    /// ops of unknown domains): neither exact in time nor in rate. Allowed only when the
    /// user accepts it.
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
    /// Shapes read from a time-invariant tensor (batch N) that shape a folded one, by the
    /// index of the node that reads them (a Reshape target `Concat(Gather(Shape(x), 0),
    /// …)`, as exports that read the batch write it): the lower pass computes them with
    /// the batch entry T·N.
    pub batch_shapes: HashSet<(usize, String)>,
    /// The node indices in the topological order the verdicts follow.
    pub order: Vec<usize>,
}

/// [`static_batch`] of a model's main graph.
#[cfg(feature = "tract")]
pub fn static_batch_of(model: &gn_onnx::proto::ModelProto) -> Option<i64> {
    static_batch(&Graph::new(model.graph.clone()?))
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

fn node_name(n: &NodeProto, idx: usize) -> String {
    if n.name().is_empty() {
        format!("{}#{idx}", n.op_type())
    } else {
        n.name().to_string()
    }
}

/// Why a node that reads folded inputs would mix time with the batch, if it does.
fn acts_on_batch_axis(consts: &Constants, n: &NodeProto, rank: Option<usize>) -> Option<String> {
    // An axis as ONNX reads it: negative ones count from the end (-1 is never axis 0 of a
    // folded tensor, whose rank is at least 2 once it has features).
    let axis0 = |a: i64| match (a, rank) {
        (a, Some(r)) if a < 0 => a + r as i64 == 0,
        (a, _) => a == 0,
    };
    let axis_attr = |name: &str, default: i64| attr::get_int(n, name).unwrap_or(default);
    let ints = |name: &str, input: usize| {
        n.attribute.iter().find(|a| a.name() == name).map(|a| a.ints.clone()).or_else(|| const_ints(consts, n, input))
    };
    let msg = |what: &str| Some(format!("{what} axis 0, which holds time × batch after folding"));
    match standard_op(n) {
        "Concat" | "Split" | "Gather" if axis0(axis_attr("axis", 0)) => msg("works along"),
        "Flatten" if axis0(axis_attr("axis", 1)) => msg("flattens"),
        "Softmax" | "LogSoftmax" | "Hardmax" | "LpNormalization" | "TopK" if axis0(axis_attr("axis", -1)) => {
            msg("works along")
        }
        "LayerNormalization" if axis0(axis_attr("axis", -1)) => msg("normalises over"),
        "ArgMax" | "ArgMin" if axis0(axis_attr("axis", 0)) => msg("works along"),
        "CumSum" => match const_ints(consts, n, 1).as_deref() {
            Some([a]) if !axis0(*a) => None,
            _ => msg("may sum along"),
        },
        "MeanVarianceNormalization" => match ints("axes", usize::MAX) {
            Some(a) if !a.iter().any(|&a| axis0(a)) => None,
            _ => msg("normalises over"),
        },
        // A new axis 0, or axis 0 removed: the steps' rows are no longer on axis 0.
        "Unsqueeze" => match ints("axes", 1) {
            Some(a) => {
                // A negative axis counts in the output, one axis longer per entry.
                let out = rank.map(|r| (r + a.len()) as i64);
                let first = a.iter().any(|&x| x == 0 || out.map_or(x < 0, |r| x.checked_add(r) == Some(0)));
                if first {
                    msg("inserts an axis before")
                } else {
                    None
                }
            }
            None => msg("may insert an axis before"),
        },
        "Squeeze" => match ints("axes", 1) {
            Some(a) if !a.is_empty() && !a.iter().any(|&x| axis0(x)) => None,
            Some(a) if !a.is_empty() => msg("removes"),
            _ => msg("may remove"),
        },
        "Transpose" => {
            let perm = n.attribute.iter().find(|a| a.name() == "perm").map(|a| a.ints.clone());
            match perm {
                Some(p) if p.first() == Some(&0) => None,
                _ => msg("moves"),
            }
        }
        op if op.starts_with("Reduce") => match ints("axes", 1) {
            Some(a) if !a.is_empty() && !a.iter().any(|&a| axis0(a)) => None,
            _ => msg("reduces over"),
        },
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
                Some(a) if !a.values.iter().any(|&v| axis0(v as i64)) => None,
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
    let mut rows = ShapeRows::default();
    let producers = graph.producers();
    let mut rebatched = HashSet::new();
    let mut batch_constants = HashSet::new();
    let mut batch_shapes = HashSet::new();
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
        let cx = FoldedContext { consts: &consts, shapes: &shapes, classes: &classes, batch, rows: &rows };
        let (out, role) = if NeuronNode::from_node(n).is_some() {
            match inputs.first() {
                Some(ShapeOfStatic | ShapeOfFolded) => {
                    (Folded, Role::Refused("a spiking layer on a shape tensor".into()))
                }
                // Its T steps of spikes fold into [T·k, …]: they line up with the folded
                // batch only where k is the graph's static batch.
                Some(Const)
                    if n.input.first().and_then(|c| shapes.dims(c)).is_none_or(|d| d.first().copied() != batch) =>
                {
                    (
                        Folded,
                        Role::Refused(
                            "a spiking layer on a constant, which has no batch axis to fold the steps into; fold the activation of the constant into the model before converting".into(),
                        ),
                    )
                }
                _ if inputs.get(1).is_some_and(|&c| c != Const) => {
                    (Folded, Role::Refused("its thresholds per channel (input 2) are not a constant".into()))
                }
                _ => (Folded, Role::Spiking),
            }
        } else if ops::is_shape(standard_op(n)) {
            match inputs.first() {
                Some(Folded) => (ShapeOfFolded, Role::Exact),
                // The shape of a shape vector is its length, the same for every batch (not
                // that of data expanded to one).
                Some(ShapeOfFolded)
                    if n.input.first().is_some_and(|i| {
                        shapes.rank(i).is_some_and(|r| r <= 1)
                            && !producers.get(i).is_some_and(|&p| {
                                let m = &graph.proto.node[p];
                                made_from_shape(m, m.input.first().and_then(|x| classes.get(x)).copied())
                            })
                    }) =>
                {
                    (Const, Role::TimeInvariant)
                }
                Some(ShapeOfFolded) => (ShapeOfFolded, Role::Exact),
                Some(Static) => (ShapeOfStatic, Role::TimeInvariant),
                _ => (Const, Role::TimeInvariant),
            }
        } else if has(Folded) {
            let role = folded_role(&cx, n, idx, &mut rebatched, &mut batch_constants, &mut batch_shapes);
            (Folded, role)
        } else if has(ShapeOfFolded) {
            if has(Static) || has(ShapeOfStatic) {
                (ShapeOfFolded, Role::Refused("it mixes the folded batch size with a time-invariant tensor".into()))
            } else if made_from_shape(n, inputs.first().copied()) {
                data_from_folded_shape(&cx, n)
            } else {
                (ShapeOfFolded, Role::Exact)
            }
        } else if has(ShapeOfStatic) {
            // A tensor reshaped, expanded or sliced by a shape read from the input is data
            // of that batch, not a shape: `[N, …]`, computed once.
            if inputs.first() == Some(&Static) || made_from_shape(n, inputs.first().copied()) {
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
        if out == ShapeOfFolded {
            rows.visit(&rows::Context { consts: &consts, shapes: &shapes, classes: &classes }, n);
        }
        for o in &n.output {
            classes.insert(o.clone(), out);
        }
    }
    Ok(Analysis { classes, verdicts, static_batch: batch, rebatched, batch_constants, batch_shapes, order })
}

/// What the lower pass does with node `n` (index `idx`), which reads a folded tensor:
/// where it rewrites a static batch, its output joins `rebatched`; where it pairs a
/// constant holding the batch with folded operands, that constant joins
/// `batch_constants`.
fn folded_role(
    cx: &FoldedContext,
    n: &NodeProto,
    idx: usize,
    rebatched: &mut HashSet<String>,
    batch_constants: &mut HashSet<(usize, String)>,
    batch_shapes: &mut HashSet<(usize, String)>,
) -> Role {
    use TimeClass::*;
    let FoldedContext { consts, shapes, classes, batch, .. } = *cx;
    let inputs: Vec<TimeClass> =
        n.input.iter().filter(|i| !i.is_empty()).map(|i| classes.get(i).copied().unwrap_or(Static)).collect();
    let has = |c: TimeClass| inputs.contains(&c);
    // A folded value is its per-step values stacked along axis 0: an op that mixes
    // along that axis runs step by step, if it is linear (so exact in time) and reads no
    // shape of a folded value (which holds T times the step's extent).
    if slice_of_whole_batch(consts, n, batch).is_none() {
        let rank = n.input.first().and_then(|i| shapes.rank(i));
        let along = acts_on_batch_axis(consts, n, rank)
            .or_else(|| hard_coded_batch(consts, n, batch))
            .or_else(|| computed_target_off_rows(cx, n));
        if let Some(why) = along {
            let products = matches!(standard_op(n), "Mul" | "Div" | "MatMul" | "Einsum")
                && inputs.iter().filter(|&&c| c == Folded).count() > 1;
            // A shape read from a folded tensor is computed again for the step's copies
            // ([`crate::per_step`]).
            return if ops::is_linear(standard_op(n)) && !products { Role::PerStep(why) } else { Role::Refused(why) };
        }
    }
    if has(ShapeOfStatic) {
        // A shape read from a time-invariant tensor holds N where the folded tensor has
        // T·N rows: as a shape operand, the lower pass computes it again with T·N.
        let first_is_shape = n.input.first().is_some_and(|i| classes.get(i) == Some(&ShapeOfStatic));
        if first_is_shape || !ops::takes_a_shape(standard_op(n)) {
            return Role::Refused(
                "its shape operand is computed from the batch size of a time-invariant tensor, and is not a shape operand of a Reshape, Expand, Tile, Slice, Pad or Resize".into(),
            );
        }
        let read = n.input.iter().filter(|i| classes.get(*i) == Some(&ShapeOfStatic));
        batch_shapes.extend(read.map(|i| (idx, i.clone())));
    }
    if let Some(whole) = slice_of_whole_batch(consts, n, batch) {
        // A Slice that keeps all of axis 0 ([0, N) of a static batch N, or [0, ∞)):
        // its end becomes open, so it keeps all T·N.
        if !whole {
            rebatched.extend(n.output.first().cloned());
        }
        Role::Exact
    } else if let Some(why) = einsum_mixes_samples(n, classes) {
        Role::Refused(why)
    } else if let Some(verdict) = expand_of_folded(shapes, consts, classes, n, batch) {
        match verdict {
            Ok(()) => {
                rebatched.extend(n.output.first().cloned());
                Role::Exact
            }
            Err(why) => Role::Refused(why),
        }
    } else if let Err(why) = constants_on_the_batch_axis(shapes, classes, n, batch).map(|tiled| {
        batch_constants.extend(tiled.into_iter().map(|c| (idx, c)));
    }) {
        Role::Refused(why)
    } else if reshape_leading_entry(consts, n).is_some_and(|d| d != 0.0 && d != -1.0) {
        // A leading 0 or -1 follows the input's batch; the static batch N (anything else
        // runs step by step: `hard_coded_batch`) is rewritten to T·N when lowered.
        rebatched.extend(n.output.first().cloned());
        Role::Exact
    } else if ops::is_max_pool(standard_op(n)) {
        if standard_op(n) == "MaxPool" && n.output.get(1).is_some_and(|o| !o.is_empty()) {
            Role::Refused("its Indices output depends on the step; only the pooled values convert".into())
        } else {
            Role::Rate
        }
    } else if standard_op(n).is_empty() {
        Role::Inexact(format!(
            "an op of domain '{}' is not known to be a function of its current inputs, so it is neither exact in time nor in rate",
            n.domain()
        ))
    } else if ops::is_random(standard_op(n)) {
        Role::Inexact(format!("{} draws random values: not a function of its inputs", n.op_type()))
    } else if !ops::is_linear(standard_op(n))
        || (matches!(standard_op(n), "Mul" | "Div" | "MatMul" | "Einsum")
            && inputs.iter().filter(|&&c| c == Folded).count() > 1)
        || (standard_op(n) == "Div" && classes.get(&n.input[1]) == Some(&Folded))
    {
        // Not linear in its time-varying inputs: computed on their running averages and
        // differenced over the steps (docs/design.md §5.4), if it acts on each sample.
        let folded_ranks: Vec<Option<usize>> =
            n.input.iter().filter(|i| classes.get(*i) == Some(&Folded)).map(|i| shapes.rank(i)).collect();
        if !ops::per_sample(standard_op(n)) {
            Role::Inexact(format!(
                "{} is not known to act on each sample separately, so it is neither exact in time nor in rate",
                n.op_type()
            ))
        } else if standard_op(n) == "MatMul"
            && folded_ranks.len() > 1
            && !folded_ranks.iter().all(|r| r.is_some_and(|r| r >= 3))
        {
            Role::Refused(
                "a MatMul of two time-varying tensors multiplies across axis 0 unless both have a batch axis of their own (rank 3 or more, and known)".into(),
            )
        } else {
            Role::Rate
        }
    } else {
        Role::Exact
    }
}

/// Whether node `n` (first input of class `first`) makes a tensor of data from a shape:
/// ConstantOfShape and Range, or a constant reshaped, expanded, tiled, sliced, padded or
/// resized to it.
fn made_from_shape(n: &NodeProto, first: Option<TimeClass>) -> bool {
    matches!(standard_op(n), "ConstantOfShape" | "Range")
        || (first == Some(TimeClass::Const) && ops::takes_a_shape(standard_op(n)))
}

/// What becomes of a tensor of data made from shapes of folded tensors
/// ([`made_from_shape`]). From a step's sizes only (no rows): the same at every step, a
/// constant (Swin's attention mask). With T times the step's rows on its axis 0 and the
/// step's sizes elsewhere (a ConstantOfShape, an Expand or a Tile of a class token to the
/// batch): its steps' values stacked, folded. A ConstantOfShape or Range that reads the
/// rows otherwise (a Range to them, each sample's index) is computed per step.
fn data_from_folded_shape(cx: &FoldedContext, n: &NodeProto) -> (TimeClass, Role) {
    let shape_operands: Vec<&String> =
        n.input.iter().filter(|i| cx.classes.get(*i) == Some(&TimeClass::ShapeOfFolded)).collect();
    if !shape_operands.iter().any(|i| cx.rows.of(i).reads_rows()) {
        return (TimeClass::Const, Role::TimeInvariant);
    }
    let op = standard_op(n);
    let shape = match op {
        "ConstantOfShape" => n.input.first(),
        "Expand" | "Tile" => n.input.get(1),
        _ => None,
    };
    let stacked = shape.filter(|s| shape_operands.len() == 1 && shape_operands[0] == *s).is_some_and(|s| {
        let p = cx.rows.of(s);
        // An Expand aligns its shape with the data's axes from the right: axis 0 of the
        // output is the shape's entry 0 only if the data has no more axes than it has
        // entries.
        let aligned = op != "Expand"
            || n.input.first().and_then(|c| cx.shapes.rank(c)).zip(p.known_len()).is_some_and(|(r, l)| r <= l);
        aligned && p.rows_then_steps()
    });
    if stacked {
        (TimeClass::Folded, Role::Exact)
    } else if !matches!(op, "ConstantOfShape" | "Range") {
        // A constant reshaped, expanded, tiled or sliced to a shape that reads the rows
        // otherwise (the legacy export's `expand(n, −1)`, built through Where) is left
        // as it is computed, T·N rows where the rows lead: its consumers see a shape's
        // class, and a spiking layer on it is refused.
        (TimeClass::ShapeOfFolded, Role::Exact)
    } else {
        (
            TimeClass::Folded,
            Role::PerStep(format!(
                "its {} read axis 0 of a time-varying tensor, T times the step's rows",
                if op == "Range" { "bounds" } else { "shape" }
            )),
        )
    }
}

/// Why an Einsum would mix samples, if it is one that does. It acts on each sample when
/// the subscripts of every time-varying operand start with one letter (their batch axis),
/// the output's start with it too, and no other operand has it: `bhid,bhjd->bhij` does,
/// `bi,bj->ij` sums over the batch, `...` may hold it anywhere and is refused.
fn einsum_mixes_samples(n: &NodeProto, classes: &HashMap<String, TimeClass>) -> Option<String> {
    if standard_op(n) != "Einsum" {
        return None;
    }
    let equation: String =
        attr::get_string(n, "equation").unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect();
    let refuse =
        |why: &str| Some(format!("its equation '{equation}' {why}, and axis 0 holds time × batch after folding"));
    let Some((inputs, output)) = equation.split_once("->") else {
        return refuse("has no explicit output (->)");
    };
    if equation.contains("...") {
        return refuse("uses '...', which may hold axis 0");
    }
    let terms: Vec<&str> = inputs.split(',').collect();
    if terms.len() != n.input.len() {
        return refuse("does not have one term per input");
    }
    let folded = |i: usize| classes.get(&n.input[i]) == Some(&TimeClass::Folded);
    let Some(batch) = terms.iter().enumerate().find(|&(i, _)| folded(i)).and_then(|(_, t)| t.chars().next()) else {
        return refuse("gives a time-varying operand no subscripts");
    };
    for (i, term) in terms.iter().enumerate() {
        let carries = if folded(i) { term.starts_with(batch) } else { !term.contains(batch) };
        if !carries || (folded(i) && term.chars().filter(|&c| c == batch).count() != 1) {
            return refuse(&format!("does not keep '{batch}' as the batch axis of every time-varying operand only"));
        }
    }
    if !output.starts_with(batch) || output.chars().filter(|&c| c == batch).count() != 1 {
        return refuse(&format!("does not keep '{batch}' on the output's axis 0"));
    }
    None
}

/// Why a Reshape whose target is computed from a folded tensor's shape does not keep
/// axis 0 as it is ([`crate::rows`]): its first entry is not 0, −1 or T times the step's
/// rows, or a later entry reads the rows.
fn computed_target_off_rows(cx: &FoldedContext, n: &NodeProto) -> Option<String> {
    let target = n.input.get(1).filter(|t| cx.classes.get(*t) == Some(&TimeClass::ShapeOfFolded))?;
    if standard_op(n) != "Reshape" {
        return None;
    }
    let target = cx.rows.of(target);
    if !target.first_follows_rows() {
        Some("its target shape, computed at run time, sets axis 0 to something other than 0, −1 or T times the step's rows".into())
    } else if target.later_entries_read_rows() {
        Some("its target shape, computed at run time, reads axis 0 of a time-varying tensor (T times the step's rows) in an entry after the first".into())
    } else {
        None
    }
}

/// What [`folded_role`] reads besides the node.
#[derive(Clone, Copy)]
struct FoldedContext<'a> {
    consts: &'a Constants<'a>,
    shapes: &'a Shapes,
    classes: &'a HashMap<String, TimeClass>,
    batch: Option<i64>,
    rows: &'a ShapeRows,
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
    if !concat && !ops::broadcasts(standard_op(n)) {
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
/// Why a Reshape's constant target does not keep axis 0 of its folded input as it is: a
/// first entry other than 0, -1 or the static batch N (which becomes T·N).
fn hard_coded_batch(consts: &Constants, n: &NodeProto, batch: Option<i64>) -> Option<String> {
    let leading = reshape_leading_entry(consts, n).filter(|&d| d != 0.0 && d != -1.0)?;
    match batch {
        Some(b) if leading == b as f64 => None,
        Some(b) => Some(format!("its target shape's first entry is neither 0, -1 nor the model's static batch {b}")),
        None => Some("its target shape sets axis 0 to a number, not 0 or -1".into()),
    }
}

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
