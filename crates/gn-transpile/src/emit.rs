//! Pass 5, emit: every emitted form, made from the lowered graph (docs/design.md §3, §5).
//!
//! 1. [`readout`]: the time-averaged readout of each folded output (and `{y}_anytime`).
//! 2. [`neurons`]: the spiking-layer nodes, per form: `Emit::Standard` replaces each by
//!    its T steps of standard ops ([`expand_layer`]); `Emit::CustomOp` keeps them (the
//!    direct-current op where the current is time-invariant), and [`model`] adds their
//!    model-local functions (the same [`expand_layer`], reading the node's attributes).
//! 3. [`model`]: the model around the graph: functions, `opset_import`, IR version, and
//!    the metadata that records the conversion.
//!
//! ```text
//!   y.folded [T·N, …] ─► Reshape [T, N, …] ─► Split(T) ─► y_1 … y_T ─► running sums S_t
//!       y = Squeeze(S_T / T)                                   [N, …]
//!       y_anytime = Concat(S_1/1, S_2/2, …, S_T/T)             [T, N, …]   (with --anytime)
//! ```
//!
//! The graph keeps the ANN's inputs and output names; each output holds the readout
//! averaged over the T steps. Metadata records the conversion.

use std::collections::HashMap;

use gn_onnx::graph::attr;
use gn_onnx::proto::{
    tensor_shape_proto, type_proto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto, ValueInfoProto,
};
use gn_onnx::{Graph, Patch};

use crate::detect::Site;
use crate::function::function;
use crate::lower::Lowered;
use crate::metadata::{LayerRecord, Metadata, State, StateDim};
use crate::neuron::{expand_layer, Current, Expansion, NeuronKind, NeuronNode, Params};
use crate::options::Emit;
use crate::pass::{Context, Planned};
use crate::rate::{expand_max_pool, PoolState};
use crate::DOMAIN;

fn rename_last_output(graph: &mut Graph, name: &str) {
    if let Some(n) = graph.proto.node.last_mut() {
        n.output[0] = name.to_string();
    }
}

/// Plans the time-averaged readout for each folded output (and `{y}_anytime` outputs if
/// asked, named uniquely): the node that wrote `y` writes `y.folded`, and the readout
/// writes `y`. Reports the names of the anytime outputs.
pub fn readout(graph: &Graph, cx: &Context, lowered: &Lowered) -> Planned<Vec<String>> {
    let (timesteps, anytime, opset) = (cx.options.timesteps, cx.options.anytime, cx.opset);
    let mut patch = Patch::new(graph);
    let mut outputs = Vec::new();
    let (pairs, renamed) = divert(graph, &mut patch, &lowered.folded_outputs, "folded");
    for (p, node) in renamed {
        patch.replace(p, node);
    }
    for (y, folded) in pairs {
        let y = &y;
        // `{y}_anytime`, unless the model already has a value of that name.
        let anytime_name = patch.unique_name(&format!("{y}_anytime"));
        let graph = patch.builder();
        let src = format!("{y}.readout");
        if timesteps == 1 {
            graph.add_node(&src, "mean", "Identity", &[&folded], vec![]);
            rename_last_output(graph, y);
            if anytime {
                opset.squeeze0(graph, &src, "anytime", "Unsqueeze", &folded);
                rename_last_output(graph, &anytime_name);
            }
        } else {
            // [T·N, d1, …] → [T, N, d1, …]: the target shape is [T, -1] ++ shape[1:].
            let shape = graph.add_node(&src, "shape", "Shape", &[&folded], vec![]);
            let one = graph.add_initializer_i64(&format!("{src}.one"), &[1], &[1]);
            let end = graph.add_initializer_i64(&format!("{src}.end"), &[1], &[i64::MAX]);
            let tail = graph.add_node(&src, "tail", "Slice", &[&shape, &one, &end], vec![]);
            let head = graph.add_initializer_i64(&format!("{src}.head"), &[2], &[timesteps as i64, -1]);
            let target = graph.add_node(&src, "target", "Concat", &[&head, &tail], vec![attr::int("axis", 0)]);
            let steps = graph.add_node(&src, "steps", "Reshape", &[&folded, &target], vec![]);
            let parts = opset.split(graph, &src, "split", &steps, timesteps);
            let mut sum = parts[0].clone();
            let mut means = Vec::new();
            for (t, part) in parts.iter().enumerate() {
                if t > 0 {
                    sum = graph.add_node(&src, &format!("t{}.sum", t + 1), "Add", &[&sum, part], vec![]);
                }
                if anytime || t + 1 == timesteps {
                    let count = graph.add_initializer_f32(&format!("{src}.t{}.count", t + 1), &[], &[(t + 1) as f32]);
                    means.push(graph.add_node(&src, &format!("t{}.mean", t + 1), "Div", &[&sum, &count], vec![]));
                }
            }
            let last = means.last().cloned().unwrap_or_default();
            opset.squeeze0(graph, &src, "mean", "Squeeze", &last);
            rename_last_output(graph, y);
            if anytime {
                let refs: Vec<&str> = means.iter().map(String::as_str).collect();
                graph.add_node(&src, "anytime", "Concat", &refs, vec![attr::int("axis", 0)]);
                rename_last_output(graph, &anytime_name);
            }
        }
        if anytime {
            outputs.push((y.clone(), anytime_name));
        }
    }
    let mut names = Vec::new();
    for (y, anytime_name) in outputs {
        let info = graph.proto.output.iter().find(|v| v.name() == y);
        patch.add_output(anytime_info(&anytime_name, info, timesteps));
        names.push(anytime_name);
    }
    Planned { patch, report: names }
}

/// Plans, for each output `y`, that the node writing it writes `{y}.{suffix}` instead and
/// that every reader of `y` reads that; returns (y, new name) pairs and the producers so
/// renamed, by index, for the caller to replace (or to expand further). The caller
/// writes `y`.
fn divert(
    graph: &Graph,
    patch: &mut Patch,
    outputs: &[String],
    suffix: &str,
) -> (Vec<(String, String)>, HashMap<usize, NodeProto>) {
    let producers = graph.producers();
    let mut renamed: HashMap<usize, NodeProto> = HashMap::new();
    let mut pairs = Vec::new();
    for y in outputs {
        let diverted = patch.unique_name(&format!("{y}.{suffix}"));
        if let Some(&p) = producers.get(y) {
            let node = renamed.entry(p).or_insert_with(|| graph.nodes()[p].clone());
            for o in &mut node.output {
                if o == y {
                    *o = diverted.clone();
                }
            }
        }
        patch.redirect(y, &diverted);
        pairs.push((y.clone(), diverted));
    }
    (pairs, renamed)
}

/// Plans the spiking-layer nodes of the emitted form. Standard: each node is replaced by
/// its T steps of standard ops, reading a time-invariant current directly. Custom-op: the
/// nodes stay, and a node whose current is time-invariant becomes the direct-current op
/// (`GroupNeuronDirect` / `IFNeuronDirect`), which reads its `[N, …]` current once
/// instead of a copy tiled T times.
pub fn neurons(graph: &Graph, cx: &Context, lowered: &Lowered) -> Planned {
    let mut patch = Patch::new(graph);
    for (i, node) in graph.nodes().iter().enumerate() {
        let Some(layer) = NeuronNode::from_node(node) else { continue };
        let t = layer.timesteps.unwrap_or(1);
        let invariant = t == 1 || lowered.invariant_currents.contains(&node.input[0]);
        match cx.options.emit {
            Emit::Standard => {
                patch.remove(i);
                let current = if invariant { Current::Constant } else { Current::Folded };
                let layer = Expansion {
                    name: node.name(),
                    params: Params::Inline(&layer.neuron),
                    x: &node.input[0],
                    current,
                    timesteps: t,
                    output: &node.output[0],
                    channels: node.input.get(1).filter(|_| layer.per_channel).map(String::as_str),
                    state: None,
                };
                expand_layer(patch.builder(), cx.opset, &layer);
            }
            Emit::CustomOp if invariant && t > 1 => {
                let direct = NeuronNode { direct: true, ..layer };
                patch.replace(i, direct.rewrite(node, node.name()));
            }
            // The stateful form is planned by `stateful` instead.
            Emit::CustomOp | Emit::Stateful => {}
        }
    }
    Planned::patch(patch)
}

/// The shapes of values of the lowered graph, as the stateful emission needs them for its
/// state tensors.
pub type Shapes = HashMap<String, Vec<StateDim>>;

/// Plans the stateful form from a graph lowered at T = 1: one call runs one step.
///
/// ```text
///   spiking layer:  p = u_in + x/θ_GN; c = clip(⌊p⌋, 0, τ); u_out = p − c; out = c·θ_GN   (u(0) = 1/2)
///   max-pool on spikes:  C = C_in + x; P = MaxPool(C); out = P − P_in; C, P out          (0, 0)
///   region exact in rate:  S = S_in + x; F(S/k) with x̄ = S/k; Z = k·F; out = Z − Z_in     (0, 0)
///   readout:  k = k_in + 1; S = S_in + y_step; y = S / k; S, k out                       (0, 0)
/// ```
///
/// After t calls, `y` is the readout averaged over t steps: row t of the `--anytime`
/// output of the unrolled model. Every state is a graph input and a graph output;
/// `shapes` gives their shapes.
pub fn stateful(
    graph: &Graph,
    cx: &Context,
    lowered: &Lowered,
    shapes: &Shapes,
) -> Result<Planned<Vec<State>>, crate::TranspileError> {
    let mut patch = Patch::new(graph);
    let mut states = StateList { shapes, states: Vec::new() };
    // The readout reads each output's step value: its producer writes `{y}.step`, whether
    // it stays (diverted here) or is expanded below (a spiking layer or a max-pool on
    // spikes that writes a graph output expands the diverted node).
    let (readouts, mut diverted) = divert(graph, &mut patch, &lowered.folded_outputs, "step");
    // What an added node reads for a graph output: the step value, not the readout.
    let step_values: HashMap<String, String> = readouts.iter().cloned().collect();
    let current = |v: &str| step_values.get(v).cloned().unwrap_or_else(|| v.to_string());
    let mut node_at = |i: usize| diverted.remove(&i).unwrap_or_else(|| graph.nodes()[i].clone());
    // The membranes, in node order.
    for (i, original) in graph.nodes().iter().enumerate() {
        let Some(layer) = NeuronNode::from_node(original) else { continue };
        let node = node_at(i);
        let name = node.name();
        let (v_in, v_out) = states.add(&mut patch, &format!("{name}.membrane"), &node.input[0], name, 0.5)?;
        patch.remove(i);
        let x = current(&node.input[0]);
        let expansion = Expansion {
            name,
            params: Params::Inline(&layer.neuron),
            x: &x,
            current: Current::Constant,
            timesteps: 1,
            output: &node.output[0],
            channels: node.input.get(1).filter(|_| layer.per_channel).map(String::as_str),
            state: Some((&v_in, &v_out)),
        };
        expand_layer(patch.builder(), cx.opset, &expansion);
    }
    // The max-pools on spikes: running sums and the last pooled value.
    let producers = graph.producers();
    for pooled in &lowered.rate_pools {
        let Some(&i) = producers.get(pooled) else { continue };
        let node = node_at(i);
        let name = if node.name().is_empty() { pooled.as_str() } else { node.name() };
        let (c_in, c_out) = states.add(&mut patch, &format!("{name}.sum"), &node.input[0], name, 0.0)?;
        let (p_in, p_out) = states.add(&mut patch, &format!("{name}.max"), pooled, name, 0.0)?;
        patch.remove(i);
        let state = PoolState { sum: (&c_in, &c_out), max: (&p_in, &p_out) };
        let mut node = node.clone();
        node.input[0] = current(&node.input[0]);
        expand_max_pool(patch.builder(), cx.opset, node, 1, Some(state));
    }
    // The step count k, which the regions and the readout divide by.
    let k_out = if readouts.is_empty() && lowered.rate_regions.is_empty() {
        String::new()
    } else {
        let (k_in, k_out) = states.declare(&mut patch, "gn_transpile.steps", Vec::new(), 0.0);
        let one = patch.add_initializer_f32("gn_transpile.steps.one", &[], &[1.0]);
        patch.add_node("gn_transpile.steps", "count", "Add", &[&k_in, &one], vec![]);
        rename_last_output(patch.builder(), &k_out);
        k_out
    };
    // The regions exact in rate: running sums of their inputs, the last total of their outputs.
    for region in &lowered.rate_regions {
        let mut averages: HashMap<&str, String> = HashMap::new();
        for x in &region.inputs {
            let (s_in, s_out) = states.add(&mut patch, &format!("{x}.rate.sum"), x, x, 0.0)?;
            let b = patch.builder();
            b.add_node(x, "rate.sum", "Add", &[&s_in, &current(x)], vec![]);
            rename_last_output(b, &s_out);
            averages.insert(x, b.add_node(x, "rate.average", "Div", &[&s_out, &k_out], vec![]));
        }
        // F of each output before compensation, which the region's own nodes read.
        let uncompensated: HashMap<&str, String> =
            region.outputs.iter().map(|o| (o.as_str(), patch.unique_name(&format!("{o}.rate")))).collect();
        for value in &region.nodes {
            let Some(&i) = producers.get(value) else { continue };
            let mut node = node_at(i);
            for input in node.input.iter_mut() {
                if let Some(average) = averages.get(input.as_str()) {
                    *input = average.clone();
                } else if let Some(f) = uncompensated.get(input.as_str()) {
                    *input = f.clone();
                }
            }
            for (k, o) in graph.nodes()[i].output.iter().enumerate() {
                if !region.outputs.contains(o) {
                    continue;
                }
                // The node's output as the rest of the one-step graph reads it (diverted
                // to `{y}.step` where it is a graph output).
                let written = node.output[k].clone();
                let f = uncompensated[o.as_str()].clone();
                node.output[k] = f.clone();
                let (p_in, p_out) = states.add(&mut patch, &format!("{o}.rate.total"), o, o, 0.0)?;
                let b = patch.builder();
                b.add_node(&f, "rate.total", "Mul", &[&f, &k_out], vec![]);
                rename_last_output(b, &p_out);
                b.add_node(&f, "rate.diff", "Sub", &[&p_out, &p_in], vec![]);
                rename_last_output(b, &written);
            }
            patch.replace(i, node);
        }
    }
    for (p, node) in diverted {
        patch.replace(p, node);
    }
    // The readout: a running sum per output, divided by the step count.
    if !readouts.is_empty() {
        for (y, step) in readouts {
            let (s_in, s_out) = states.add(&mut patch, &format!("{y}.sum"), &y, &y, 0.0)?;
            let b = patch.builder();
            let src = format!("{y}.readout");
            b.add_node(&src, "sum", "Add", &[&s_in, &step], vec![]);
            rename_last_output(b, &s_out);
            b.add_node(&src, "mean", "Div", &[&s_out, &k_out], vec![]);
            rename_last_output(b, &y);
        }
    }
    Ok(Planned { patch, report: states.states })
}

/// The state tensors being declared, with the shapes they are declared from.
struct StateList<'a> {
    shapes: &'a Shapes,
    states: Vec<State>,
}

impl StateList<'_> {
    /// A state shaped like `value`: a graph input `{base}` and a graph output `{base}.next`.
    fn add(
        &mut self,
        patch: &mut Patch,
        base: &str,
        value: &str,
        node: &str,
        init: f32,
    ) -> Result<(String, String), crate::TranspileError> {
        let error = |reason: String| crate::TranspileError::Pass { pass: "emit", node: node.to_string(), reason };
        let shape = self
            .shapes
            .get(value)
            .ok_or_else(|| error(format!("the shape of '{value}' is unknown, and a state tensor needs one")))?;
        Ok(self.declare(patch, base, shape.clone(), init))
    }

    fn declare(&mut self, patch: &mut Patch, base: &str, shape: Vec<StateDim>, init: f32) -> (String, String) {
        let input = patch.unique_name(base);
        let output = patch.unique_name(&format!("{base}.next"));
        patch.add_input(state_value_info(&input, &shape));
        patch.add_output(state_value_info(&output, &shape));
        self.states.push(State { input: input.clone(), output: output.clone(), init, shape });
        (input, output)
    }
}

/// A float state tensor's declaration: its sizes, `batch` for N and `k*batch` for k·N.
fn state_value_info(name: &str, shape: &[StateDim]) -> gn_onnx::proto::ValueInfoProto {
    use gn_onnx::proto::tensor_shape_proto::dimension::Value;
    let mut info = gn_onnx::data::float_value_info(name, &vec![None; shape.len()]);
    if let Some(gn_onnx::proto::type_proto::Value::TensorType(t)) = info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        for (dim, d) in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()).zip(shape) {
            dim.value = Some(match *d {
                StateDim::Size(n) => Value::DimValue(n),
                StateDim::Batch(1) => Value::DimParam("batch".into()),
                StateDim::Batch(k) => Value::DimParam(format!("{k}*batch")),
            });
        }
    }
    info
}

/// Puts the emitted graph into `model`: the graph sorted and without dead nodes, the
/// neuron functions and the `gn.transpile` import (custom-op form), and the metadata
/// recording the conversion (with the state tensors of the stateful form). Returns the
/// number of nodes.
pub fn model(
    model: &mut ModelProto,
    mut graph: Graph,
    cx: &Context,
    sites: &[Site],
    states: &[State],
    anytime_outputs: &[String],
) -> Result<usize, crate::TranspileError> {
    if cx.options.emit == Emit::CustomOp {
        model.functions.retain(|f| f.domain() != DOMAIN);
        // The folded op's function, and each other op's that a node uses.
        let layers: Vec<NeuronNode> = graph.nodes().iter().filter_map(NeuronNode::from_node).collect();
        for (direct, per_channel) in crate::neuron::VARIANTS {
            let used = layers.iter().any(|l| (l.direct, l.per_channel) == (direct, per_channel));
            if used || (!direct && !per_channel) {
                let (kind, opset, t) = (cx.options.neuron, cx.opset, cx.options.timesteps);
                model.functions.push(function(kind, opset, t, direct, per_channel));
            }
        }
        model.opset_import.retain(|o| o.domain() != DOMAIN);
        model
            .opset_import
            .push(OperatorSetIdProto { domain: Some(DOMAIN.into()), version: Some(crate::DOMAIN_VERSION) });
        // Model-local functions arrived with IR version 8.
        model.ir_version = Some(model.ir_version().max(8));
    }
    graph.proto.value_info.clear();
    graph.remove_dead_nodes();
    graph.sort()?;
    let nodes = graph.nodes().len();
    model.graph = Some(graph.into_proto());
    record_metadata(model, cx, sites, states, anytime_outputs);
    Ok(nodes)
}

/// The record of the conversion ([`Metadata`]).
fn record_metadata(model: &mut ModelProto, cx: &Context, sites: &[Site], states: &[State], anytime_outputs: &[String]) {
    let options = &cx.options;
    let meta = Metadata {
        version: crate::VERSION.into(),
        neuron: options.neuron,
        tau: match options.neuron {
            NeuronKind::Gn => options.tau,
            NeuronKind::If => 1,
        },
        timesteps: options.timesteps,
        anytime: options.anytime,
        anytime_outputs: anytime_outputs.to_vec(),
        emit: options.emit,
        layers: sites.iter().map(|s| LayerRecord { site: s.name.clone(), theta: s.theta, levels: s.levels }).collect(),
        calibration: options.calibration.as_deref().cloned(),
        state: (options.emit == Emit::Stateful).then(|| states.to_vec()),
    };
    meta.write(&mut model.metadata_props);
}

/// The `ValueInfoProto` of `{y}_anytime`: y's type with a leading dimension T.
fn anytime_info(name: &str, y: Option<&ValueInfoProto>, timesteps: usize) -> ValueInfoProto {
    let mut ty = y.and_then(|v| v.r#type.clone()).unwrap_or_else(|| TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(1), shape: None })),
        ..Default::default()
    });
    if let Some(type_proto::Value::TensorType(t)) = &mut ty.value {
        if let Some(shape) = &mut t.shape {
            shape.dim.insert(
                0,
                tensor_shape_proto::Dimension {
                    value: Some(tensor_shape_proto::dimension::Value::DimValue(timesteps as i64)),
                    denotation: None,
                },
            );
        }
    }
    ValueInfoProto { name: Some(name.into()), r#type: Some(ty), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower;
    use crate::neuron::Neuron;
    use crate::opset::Opset;
    use crate::options::Options;
    use crate::pass;
    use gn_onnx::data::float_value_info;
    use gn_onnx::proto::GraphProto;

    /// x ─► layer ─► a ─► Neg ─► b ─► layer ─► y, lowered for `options`.
    fn lowered(options: &Options) -> (Graph, Context, Lowered) {
        let layer = |input: &str, output: &str| {
            let tau = if options.neuron == NeuronKind::If { 1 } else { options.tau };
            let neuron = Neuron { kind: options.neuron, theta: 2.0, tau, levels: 4 };
            NeuronNode { neuron, timesteps: None, direct: false, per_channel: false }.to_node(output, input, output)
        };
        let neg = NodeProto {
            input: vec!["a".into()],
            output: vec!["b".into()],
            name: Some("neg".into()),
            op_type: Some("Neg".into()),
            ..Default::default()
        };
        let mut g = Graph::new(GraphProto {
            node: vec![layer("x", "a"), neg, layer("b", "y")],
            input: vec![float_value_info("x", &[None, Some(3)])],
            output: vec![float_value_info("y", &[None, Some(3)])],
            ..Default::default()
        });
        let cx = Context { options: options.clone(), opset: Opset(17) };
        let lowered = pass::run(&mut g, "lower", |g| lower::run(g, &cx)).unwrap();
        (g, cx, lowered)
    }

    fn emitted(options: &Options) -> Graph {
        let (mut g, cx, lowered) = lowered(options);
        pass::run(&mut g, "emit", |g| Ok(readout(g, &cx, &lowered))).unwrap();
        pass::run(&mut g, "emit", |g| Ok(neurons(g, &cx, &lowered))).unwrap();
        g.sort().unwrap();
        g
    }

    fn writer<'g>(g: &'g Graph, value: &str) -> &'g NodeProto {
        g.nodes().iter().find(|n| n.output.iter().any(|o| o == value)).unwrap()
    }

    #[test]
    fn the_readout_writes_the_output_and_the_layer_writes_the_folded_value() {
        let g = emitted(&Options { timesteps: 3, anytime: true, emit: Emit::CustomOp, ..Default::default() });
        assert_eq!(g.output_names(), ["y", "y_anytime"]);
        assert_eq!(writer(&g, "y").op_type(), "Squeeze");
        assert_eq!(writer(&g, "y_anytime").op_type(), "Concat");
        assert_eq!(writer(&g, "y.folded").op_type(), "GroupNeuron");
        // {y}_anytime has y's type with a leading dimension T.
        let render = format!("{:?}", g.proto.output[1]);
        assert!(render.contains("DimValue(3)"), "{render}");
    }

    #[test]
    fn custom_op_nodes_read_an_invariant_current_directly_and_a_folded_one_as_is() {
        let g = emitted(&Options { timesteps: 3, emit: Emit::CustomOp, ..Default::default() });
        let layers: Vec<&NodeProto> = g.nodes().iter().filter(|n| NeuronNode::from_node(n).is_some()).collect();
        assert_eq!(layers.len(), 2);
        assert_eq!((layers[0].op_type(), layers[0].input[0].as_str()), ("GroupNeuronDirect", "x"));
        assert_eq!((layers[1].op_type(), layers[1].input[0].as_str()), ("GroupNeuron", "b"));
        assert!(
            g.nodes().iter().all(|n| n.op_type() != "Concat" || n.input.iter().all(|i| i != "x")),
            "x is not tiled"
        );
        // At T = 1 a current is one step: the folded op reads it as is.
        let g = emitted(&Options { timesteps: 1, emit: Emit::CustomOp, ..Default::default() });
        assert!(g.nodes().iter().filter_map(NeuronNode::from_node).all(|l| !l.direct));
    }

    #[test]
    fn the_standard_form_has_no_neuron_nodes_and_steps_each_layer_t_times() {
        for (t, neuron) in [(1, NeuronKind::Gn), (4, NeuronKind::Gn), (4, NeuronKind::If)] {
            let g = emitted(&Options { timesteps: t, neuron, ..Default::default() });
            assert!(g.nodes().iter().all(|n| n.domain() != DOMAIN));
            let floors = g.nodes().iter().filter(|n| n.op_type() == "Floor").count();
            assert_eq!(floors, 2 * t, "two layers of {t} steps");
            // The invariant current is not tiled: the first layer's steps all read x / θ_GN.
            assert!(g.nodes().iter().all(|n| n.op_type() != "Concat" || n.input.iter().all(|i| i != "x")));
        }
    }

    #[test]
    fn the_function_body_reads_the_node_attributes() {
        let f = function(NeuronKind::Gn, Opset(17), 2, false, false);
        assert_eq!((f.name(), f.domain()), ("GroupNeuron", DOMAIN));
        let referenced: Vec<&str> =
            f.node.iter().flat_map(|n| n.attribute.iter().filter_map(|a| a.ref_attr_name.as_deref())).collect();
        assert_eq!(referenced, ["theta_gn", "tau", "v_init"]);
        assert_eq!(f.node.iter().filter(|n| n.op_type() == "Floor").count(), 2);
    }

    #[test]
    fn the_per_channel_body_divides_and_multiplies_by_the_unit_of_each_channel() {
        let f = function(NeuronKind::If, Opset(17), 3, true, true);
        assert_eq!(f.name(), "IFNeuronPerChannelDirect");
        assert_eq!(f.input, ["X", "Theta"]);
        let unit = f.node.iter().find(|n| n.op_type() == "Mul" && n.input.iter().any(|i| i == "Theta")).unwrap();
        let unit = &unit.output[0];
        // q = X / unit, out = spikes · unit: the only readers of the unit.
        let readers: Vec<&str> = f.node.iter().filter(|n| n.input.contains(unit)).map(|n| n.op_type()).collect();
        assert_eq!(readers, ["Div", "Mul"]);
        assert_eq!(f.node.iter().filter(|n| n.op_type() == "Floor").count(), 3);
    }
}
