//! Pass 4, lower: fold the T time steps into the batch (docs/design.md §3, §5). Seeds on the
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
//! differ from the ANN's and are computed on running averages (exact in rate); linear ops
//! that act along axis 0 run once per step ([`crate::per_step`]); ops that compute with
//! the batch size of a time-invariant tensor outside a shape operand are refused.

use std::collections::{HashMap, HashSet};

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::NodeProto;
use gn_onnx::{Graph, Patch};

use crate::error::TranspileError;
use crate::neuron::NeuronNode;
use crate::ops;
use crate::pass::{Context, Planned};
use crate::rate::{self, expand_max_pool, Region};
use crate::rebatch::Rebatch;
use crate::time::{analyze, Analysis, Role, TimeClass};

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
    /// The regions of other ops exact in rate: compensated here when T > 1, given state
    /// by the stateful emission.
    pub rate_regions: Vec<Region>,
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
    let joined = cx.options.compensation == crate::Compensation::Regions;
    lowered.rate_regions = rate::regions(graph, &analysis, joined)?;
    let per_step: HashSet<usize> = analysis
        .order
        .iter()
        .zip(&analysis.verdicts)
        .filter(|(_, v)| matches!(v.role, Role::PerStep(_)))
        .map(|(&i, _)| i)
        .collect();
    let t = cx.options.timesteps;
    let copies = per_step.len().saturating_mul(t);
    if t > 1 && copies > crate::options::MAX_LAYER_STEPS {
        return Err(TranspileError::Option(format!(
            "{} nodes act along axis 0 and run once per step: × T = {t} would write {copies} copies of them (at most {}); convert with a smaller T, or --emit stateful",
            per_step.len(),
            crate::options::MAX_LAYER_STEPS
        )));
    }
    let Analysis { classes, rebatched, batch_constants, batch_shapes, order, .. } = analysis;
    // Built (its shape inference run) only for a graph that has such shapes.
    let mut rebatch: Option<Rebatch> = None;
    let consts = graph.constants();
    let producers = graph.producers();
    let mut patch = Patch::new(graph);
    // Each region reads the running averages of its time-varying inputs, and its outputs
    // are compensated after it.
    let mut in_region: HashMap<String, usize> = HashMap::new();
    let mut averages: HashMap<String, String> = HashMap::new();
    let mut compensated: Vec<(String, String)> = Vec::new();
    // F of each region output, before compensation: what the outside reads compensated,
    // the region's own nodes read as it is.
    let mut uncompensated: HashMap<String, String> = HashMap::new();
    if t > 1 {
        for (k, region) in lowered.rate_regions.iter().enumerate() {
            in_region.extend(region.nodes.iter().map(|n| (n.clone(), k)));
            for o in &region.outputs {
                uncompensated.insert(o.clone(), patch.unique_name(&format!("{o}.rate")));
            }
            for x in &region.inputs {
                if !averages.contains_key(x) {
                    averages.insert(x.clone(), rate::running_mean(patch.builder(), x, t));
                }
            }
        }
    }
    for &idx in &order {
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
        // A node that reads no folded value is as the ANN has it, unless it runs per
        // step (a Range to the rows of a folded value).
        if !per_step.contains(&idx) && !original.input.iter().any(|i| classes.get(i) == Some(&TimeClass::Folded)) {
            continue;
        }
        if ops::is_max_pool(standard_op(original)) {
            lowered.rate_pools.extend(original.output.first().cloned());
        }
        if t == 1 {
            continue;
        }
        let mut node = original.clone();
        if node.output.first().is_some_and(|o| rebatched.contains(o)) {
            rebatch_constant(&mut node, &consts, &mut patch, t)?;
        }
        if ops::is_max_pool(standard_op(&node)) {
            patch.remove(idx);
            expand_max_pool(patch.builder(), cx.opset, node, t, None);
            continue;
        }
        if per_step.contains(&idx) {
            patch.remove(idx);
            let steps = crate::per_step::Steps { graph, classes: &classes, producers: &producers, opset: cx.opset, t };
            crate::per_step::lower(&mut patch, &steps, &node);
            continue;
        }
        for input in node.input.iter_mut() {
            if classes.get(input) == Some(&TimeClass::Static) || batch_constants.contains(&(idx, input.clone())) {
                *input = tile(&mut patch, &mut lowered.tiles, input, t);
            }
        }
        for input in node.input.iter_mut() {
            if batch_shapes.contains(&(idx, input.clone())) {
                let rebatch = rebatch.get_or_insert_with(|| Rebatch::new(graph, &classes, &order, t));
                *input = rebatch.folded(&mut patch, input)?;
            }
        }
        if let Some(&k) = node.output.first().and_then(|o| in_region.get(o)) {
            let region = &lowered.rate_regions[k];
            for input in node.input.iter_mut() {
                if region.inputs.contains(input) {
                    *input = averages[input.as_str()].clone();
                } else if region.outputs.contains(input) {
                    *input = uncompensated[input.as_str()].clone();
                }
            }
            for output in node.output.iter_mut().filter(|o| region.outputs.contains(o)) {
                let f = uncompensated[output.as_str()].clone();
                compensated.push((std::mem::replace(output, f.clone()), f));
            }
        }
        patch.replace(idx, node);
    }
    for (y, f) in compensated {
        rate::compensate(patch.builder(), &f, &y, t);
    }
    lowered.folded_outputs =
        graph.output_names().into_iter().filter(|o| classes.get(o) == Some(&TimeClass::Folded)).collect();
    Ok(Planned { patch, report: lowered })
}

/// Rewrites the constant shape operand of a node whose static batch N lines up with the
/// folded batch: a Slice end on axis 0 opens, a Reshape target [N, …] becomes [T·N, …],
/// an Expand shape [N, …] becomes [1, …].
fn rebatch_constant(
    node: &mut NodeProto,
    consts: &Constants,
    patch: &mut Patch,
    t: usize,
) -> Result<(), TranspileError> {
    if standard_op(node) == "Slice" {
        // A Slice keeping all of a static batch keeps all of T·N: its end on axis 0 opens.
        let bound = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).and_then(|b| consts.small(b)?.ok());
        if let (Some(ends), axes) = (bound(2), bound(3)) {
            let k = axes.map_or(Some(0), |a| a.values.iter().position(|&v| v == 0.0));
            if let Some(k) = k {
                let mut ends: Vec<i64> = ends.values.iter().map(|&v| v as i64).collect();
                ends[k] = i64::MAX;
                let name = patch.add_initializer_i64(&format!("{}.folded", node.input[2]), &[ends.len() as i64], &ends);
                node.input[2] = name;
            }
        }
    } else {
        // A static-batch target [N, …] on a folded tensor becomes [T·N, …] (Reshape),
        // or [1, …] (Expand: the input's T·N rows stay as they are).
        if let Some(Ok(target)) = node.input.get(1).and_then(|t| consts.small(t)) {
            let mut dims: Vec<i64> = target.values.iter().map(|&v| v as i64).collect();
            dims[0] = if standard_op(node) == "Expand" {
                1
            } else {
                dims[0].checked_mul(t as i64).ok_or_else(|| TranspileError::Pass {
                    pass: "lower",
                    node: node.name().to_string(),
                    reason: format!("{} its batch {} times T = {t} overflows", node.op_type(), dims[0]),
                })?
            };
            let name = patch.add_initializer_i64(&format!("{}.folded", node.input[1]), &[dims.len() as i64], &dims);
            node.input[1] = name;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron::{Neuron, NeuronKind};
    use crate::opset::Opset;
    use crate::options::Options;
    use gn_onnx::data::{float_value_info, node, tensor_f32};
    use gn_onnx::proto::{GraphProto, NodeProto};

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
    fn linear_ops_along_axis_0_run_per_step_and_random_ones_need_consent() {
        // A Concat along axis 0 runs once per step on that step's rows: each step's slice
        // (a Gather of the [T, −1, …] view) concatenated with itself, the steps stacked.
        let concat = node("Concat", &["c", "c"], "y", vec![attr::int("axis", 0)]);
        let g = graph(concat, None);
        let role = &analyze(&g).unwrap().verdicts[3].role;
        assert!(matches!(role, Role::PerStep(why) if why.contains("works along axis 0")), "{role:?}");
        let mut lowered = g.clone();
        crate::pass::run(&mut lowered, "lower", |g| run(g, &cx(2))).unwrap();
        let render = lowered.render();
        assert!(
            render.contains("Concat(y.step0.1, y.step0.1)") && render.contains("Concat(y.step0.3, y.step1.3) -> y"),
            "{render}"
        );
        // A Tile that repeats along axis 0 too; one that keeps it runs over all steps.
        for (first, per_step) in [(2, true), (1, false)] {
            let mut g = graph(node("Tile", &["c", "repeats"], "y", vec![]), None);
            g.proto.initializer.push(gn_onnx::data::tensor_i64("repeats", &[2], &[first, 3]));
            let role = analyze(&g).unwrap().verdicts[3].role.clone();
            assert_eq!(matches!(role, Role::PerStep(_)), per_step, "repeats [{first}, 3]: {role:?}");
            assert!(run(&g, &cx(2)).is_ok());
        }
        // A Softmax is exact in rate: one region, its input averaged, its output compensated.
        let softmax = node("Softmax", &["c"], "y", vec![]);
        let planned = run(&graph(softmax, None), &cx(2)).unwrap();
        assert!(planned.report.warnings.is_empty());
        assert_eq!(planned.report.rate_regions.len(), 1);
        assert_eq!(planned.report.rate_regions[0].outputs, ["y"]);
        // A random op is not a function of its inputs: only with consent, and a warning.
        let random = node("RandomNormalLike", &["c"], "y", vec![]);
        let err = run(&graph(random.clone(), None), &cx(2)).unwrap_err().to_string();
        assert!(err.contains("--allow-inexact") && err.contains("draws random values"), "{err}");
        let mut lenient = cx(2);
        lenient.options.allow_inexact = true;
        let planned = run(&graph(random, None), &lenient).unwrap();
        assert_eq!(planned.report.warnings.len(), 1);
        // Ops that work along axis 0, or that are not known to act per sample, are not
        // exact in rate.
        for (op, attrs, why) in [
            ("Softmax", vec![attr::int("axis", 0)], "axis 0"),
            ("ReduceMin", vec![], "reduces over axis 0"),
            ("ArgMax", vec![], "axis 0"),
            ("MeanVarianceNormalization", vec![], "normalises over axis 0"),
            ("STFT", vec![], "not known to act on each sample"),
            ("Einsum", vec![], "has no explicit output"),
            ("Einsum", vec![attr::string("equation", "bi->i")], "does not keep 'b' on the output's axis 0"),
        ] {
            let err = run(&graph(node(op, &["c"], "y", attrs), None), &cx(2)).unwrap_err().to_string();
            assert!(err.contains(why), "{op}: {err}");
        }
        // A comparison whose booleans would leave the region is refused.
        let less = node("Less", &["c", "c"], "y", vec![]);
        let err = run(&graph(less, None), &cx(2)).unwrap_err().to_string();
        assert!(err.contains("booleans or indices"), "{err}");
    }

    /// A tensor reshaped by a shape read from the input (`Reshape(x, Shape(x))`, as exports
    /// that read the batch write it) is data: a spiking layer on it is a spiking layer.
    #[test]
    fn a_tensor_reshaped_by_a_shape_of_the_input_is_data() {
        let g = Graph::new(GraphProto {
            node: vec![node("Shape", &["x"], "s", vec![]), node("Reshape", &["x", "s"], "r", vec![]), layer("r", "y")],
            input: vec![float_value_info("x", &[None, Some(4)])],
            output: vec![float_value_info("y", &[None, Some(4)])],
            ..Default::default()
        });
        let analysis = analyze(&g).unwrap();
        assert_eq!(analysis.classes["r"], TimeClass::Static);
        assert_eq!(analysis.verdicts[2].role, Role::Spiking);
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
    fn step_copies_are_bounded_before_they_are_written() {
        // 300 Transposes that move axis 0 × T = 512 copies is past the bound; × 4 is not.
        let mut g = graph(node("Transpose", &["c", ""], "t0", vec![attr::ints("perm", &[1, 0])]), None);
        g.proto.node[3].input.truncate(1);
        for k in 1..300 {
            let (from, to) = (format!("t{}", k - 1), format!("t{k}"));
            g.proto.node.push(node("Transpose", &[&from], &to, vec![attr::ints("perm", &[1, 0])]));
        }
        g.proto.output[0].name = Some("t299".into());
        let g = Graph::new(g.proto);
        let err = run(&g, &cx(512)).unwrap_err().to_string();
        assert!(err.contains("300 nodes act along axis 0") && err.contains("153600 copies"), "{err}");
        assert!(run(&g, &cx(4)).is_ok());
    }

    #[test]
    fn a_slice_of_the_whole_static_batch_keeps_all_t_times_n() {
        // Slice [0, N) on axis 0 opens its end; [0, 2) of 5 keeps 2 rows of each step: it
        // runs once per step, its end as it is.
        for (end, whole) in [(5, true), (7, true), (2, false)] {
            let mut g = graph(node("Slice", &["c", "starts", "ends", "axes"], "y", vec![]), Some(5));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("starts", &[2], &[0, 1]));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("ends", &[2], &[end, 3]));
            g.proto.initializer.push(gn_onnx::data::tensor_i64("axes", &[2], &[0, 1]));
            crate::pass::run(&mut g, "lower", |g| run(g, &cx(3))).unwrap();
            let slices: Vec<&NodeProto> =
                g.nodes().iter().filter(|n| n.op_type() == "Slice" && n.input.len() == 4).collect();
            assert_eq!(slices.len(), if whole { 1 } else { 3 }, "end {end}");
            let ends = g.constant(&slices[0].input[2]).unwrap().unwrap().values;
            assert_eq!(ends, [if whole { i64::MAX as f64 } else { 2.0 }, 3.0]);
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
