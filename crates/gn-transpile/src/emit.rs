//! Pass 5, emit: every emitted form, made from the lowered graph (SPEC §3, §5).
//!
//! 1. [`readout`]: the time-averaged readout of each folded output (and `{y}_anytime`).
//! 2. [`neurons`]: the spiking-layer nodes, per form: `Emit::Standard` replaces each by
//!    its T steps of standard ops ([`expand_layer`]); `Emit::CustomOp` keeps them, tiling a
//!    time-invariant current for them, and [`model`] adds their model-local functions
//!    (the same [`expand_layer`], reading the node's attributes).
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
    tensor_shape_proto, type_proto, FunctionProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TypeProto, ValueInfoProto,
};
use gn_onnx::{Graph, Patch};

use crate::detect::Site;
use crate::lower::{tile, Lowered};
use crate::neuron::{attribute_names, expand_layer, Current, NeuronKind, NeuronNode, Opset, Params};
use crate::pass::{Context, Planned};
use crate::pipeline::Emit;
use crate::DOMAIN;

fn rename_last_output(graph: &mut Graph, name: &str) {
    if let Some(n) = graph.proto.node.last_mut() {
        n.output[0] = name.to_string();
    }
}

/// Plans the time-averaged readout for each folded output (and `{y}_anytime` outputs if
/// asked): the node that wrote `y` writes `y.folded`, and the readout writes `y`.
pub fn readout(graph: &Graph, cx: &Context, lowered: &Lowered) -> Planned {
    let (timesteps, anytime, opset) = (cx.options.timesteps, cx.options.anytime, cx.opset);
    let mut patch = Patch::new(graph);
    let producers = graph.producers();
    let mut renamed: HashMap<usize, NodeProto> = HashMap::new();
    let mut outputs = Vec::new();
    for y in &lowered.folded_outputs {
        let folded = patch.unique_name(&format!("{y}.folded"));
        if let Some(&p) = producers.get(y) {
            let node = renamed.entry(p).or_insert_with(|| graph.nodes()[p].clone());
            for o in &mut node.output {
                if o == y {
                    *o = folded.clone();
                }
            }
        }
        patch.redirect(y, &folded);
        let graph = patch.builder();
        let src = format!("{y}.readout");
        let anytime_name = format!("{y}_anytime");
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
    for (p, node) in renamed {
        patch.replace(p, node);
    }
    for (y, anytime_name) in outputs {
        let info = graph.proto.output.iter().find(|v| v.name() == y);
        patch.add_output(anytime_info(&anytime_name, info, timesteps));
    }
    Planned::patch(patch)
}

/// Plans the spiking-layer nodes of the emitted form. Standard: each node is replaced by
/// its T steps of standard ops, reading a time-invariant current directly. Custom-op: the
/// nodes stay, and a node whose current is time-invariant reads it tiled T times (the
/// op's function runs on `[T·N, …]`).
pub fn neurons(graph: &Graph, cx: &Context, lowered: &Lowered) -> Planned {
    let mut patch = Patch::new(graph);
    let mut tiles = lowered.tiles.clone();
    for (i, node) in graph.nodes().iter().enumerate() {
        let Some(layer) = NeuronNode::from_node(node) else { continue };
        let t = layer.timesteps.unwrap_or(1);
        let invariant = t == 1 || lowered.invariant_currents.contains(&node.input[0]);
        match cx.options.emit {
            Emit::Standard => {
                patch.remove(i);
                let current = if invariant { Current::Constant } else { Current::Folded };
                let neuron = Params::Inline(&layer.neuron);
                expand_layer(
                    patch.builder(),
                    cx.opset,
                    node.name(),
                    neuron,
                    &node.input[0],
                    current,
                    t,
                    &node.output[0],
                );
            }
            Emit::CustomOp if invariant && t > 1 => {
                let mut node = node.clone();
                node.input[0] = tile(&mut patch, &mut tiles, &node.input[0], t);
                patch.replace(i, node);
            }
            Emit::CustomOp => {}
        }
    }
    Planned::patch(patch)
}

/// Puts the emitted graph into `model`: the graph sorted and without dead nodes, the
/// neuron functions and the `gn.transpile` import (custom-op form), and the metadata
/// recording the conversion. Returns the number of nodes.
pub fn model(
    model: &mut ModelProto,
    mut graph: Graph,
    cx: &Context,
    sites: &[Site],
) -> Result<usize, crate::TranspileError> {
    if cx.options.emit == Emit::CustomOp {
        model.functions.retain(|f| f.domain() != DOMAIN);
        model.functions.push(function(cx.options.neuron, cx.opset, cx.options.timesteps));
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
    record_metadata(model, cx, sites);
    Ok(nodes)
}

fn record_metadata(model: &mut ModelProto, cx: &Context, sites: &[Site]) {
    let options = &cx.options;
    let props = &mut model.metadata_props;
    let tau = match options.neuron {
        NeuronKind::Gn => options.tau,
        NeuronKind::If => 1,
    };
    set_metadata(props, "gn_transpile.version", crate::VERSION.into());
    set_metadata(props, "gn_transpile.neuron", options.neuron.key().into());
    set_metadata(props, "gn_transpile.tau", tau.to_string());
    set_metadata(props, "gn_transpile.timesteps", options.timesteps.to_string());
    set_metadata(props, "gn_transpile.anytime", options.anytime.to_string());
    set_metadata(props, "gn_transpile.emit", options.emit.key().into());
    let layers: Vec<String> = sites
        .iter()
        .map(|s| format!("{{\"site\":{:?},\"theta\":{},\"levels\":{}}}", s.name, s.theta, s.levels))
        .collect();
    set_metadata(props, "gn_transpile.layers", format!("[{}]", layers.join(",")));
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

/// Appends `key = value` to the model's metadata, replacing an earlier entry of that key.
pub fn set_metadata(props: &mut Vec<StringStringEntryProto>, key: &str, value: String) {
    props.retain(|p| p.key() != key);
    props.push(StringStringEntryProto { key: Some(key.into()), value: Some(value) });
}

/// The model-local function that defines a custom spiking-layer op: its body is
/// [`expand_layer`] on a folded `[T·N, …]` input `X`, reading θ, τ and v(0) from the
/// calling node's attributes. T is fixed by the body, so a model holds one function per
/// op type and every node of that type runs T steps.
pub fn function(kind: NeuronKind, opset: Opset, timesteps: usize) -> FunctionProto {
    let mut g = Graph::new(Default::default());
    expand_layer(&mut g, opset, "neuron", Params::Attributes(kind), "X", Current::Folded, timesteps, "Y");
    debug_assert!(g.proto.initializer.is_empty(), "a function body holds no initializers");
    let doc = match kind {
        NeuronKind::If => "Integrate-and-fire neurons over T time steps folded into axis 0 ([T·N, …], step-major): threshold θ, v(0) = θ/2, soft reset.",
        NeuronKind::Gn => "Group Neurons of τ members over T time steps folded into axis 0 ([T·N, …], step-major): member thresholds i·θ/τ, θ_GN = θ/τ, v(0) = θ_GN/2, lateral soft reset (Lyu et al., arXiv 2402.19061, Algorithm 1).",
    };
    FunctionProto {
        name: Some(kind.op_type().into()),
        domain: Some(DOMAIN.into()),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        attribute: attribute_names(kind).iter().map(|a| a.to_string()).collect(),
        node: g.proto.node,
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset.0) }],
        doc_string: Some(format!("{doc} Runs {timesteps} steps.")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower;
    use crate::neuron::Neuron;
    use crate::pass;
    use crate::pipeline::Options;
    use gn_onnx::data::float_value_info;
    use gn_onnx::proto::GraphProto;

    /// x ─► layer ─► a ─► Neg ─► b ─► layer ─► y, lowered for `options`.
    fn lowered(options: &Options) -> (Graph, Context, Lowered) {
        let layer = |input: &str, output: &str| {
            let tau = if options.neuron == NeuronKind::If { 1 } else { options.tau };
            let neuron = Neuron { kind: options.neuron, theta: 2.0, tau, levels: 4 };
            NeuronNode { neuron, timesteps: None }.to_node(output, input, output)
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
    fn custom_op_nodes_read_an_invariant_current_tiled_and_a_folded_one_as_is() {
        let g = emitted(&Options { timesteps: 3, emit: Emit::CustomOp, ..Default::default() });
        let layers: Vec<&NodeProto> = g.nodes().iter().filter(|n| NeuronNode::from_node(n).is_some()).collect();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].input[0], "x.tiled");
        assert_eq!(writer(&g, "x.tiled").input, ["x", "x", "x"]);
        assert_eq!(layers[1].input[0], "b");
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
        let f = function(NeuronKind::Gn, Opset(17), 2);
        assert_eq!((f.name(), f.domain()), ("GroupNeuron", DOMAIN));
        let referenced: Vec<&str> =
            f.node.iter().flat_map(|n| n.attribute.iter().filter_map(|a| a.ref_attr_name.as_deref())).collect();
        assert_eq!(referenced, ["theta_gn", "tau", "v_init"]);
        assert_eq!(f.node.iter().filter(|n| n.op_type() == "Floor").count(), 2);
    }
}
