//! Pass 5, emit: the readout and the model's interface (SPEC §3, §5).
//!
//! ```text
//!   y.folded [T·N, …] ─► Reshape [T, N, …] ─► Split(T) ─► y_1 … y_T ─► running sums S_t
//!       y = Squeeze(S_T / T)                                   [N, …]
//!       y_anytime = Concat(S_1/1, S_2/2, …, S_T/T)             [T, N, …]   (with --anytime)
//! ```
//!
//! The graph keeps the ANN's inputs and output names; each output holds the readout
//! averaged over the T steps. Metadata records the conversion.

use gn_onnx::graph::attr;
use gn_onnx::proto::{tensor_shape_proto, type_proto, StringStringEntryProto, TypeProto, ValueInfoProto};
use gn_onnx::Graph;

use crate::neuron::Opset;

fn rename_last_output(graph: &mut Graph, name: &str) {
    if let Some(n) = graph.proto.node.last_mut() {
        n.output[0] = name.to_string();
    }
}

/// Adds the time-averaged readout for each folded output (and `{y}_anytime` outputs if asked).
pub fn readout(graph: &mut Graph, folded_outputs: &[String], timesteps: usize, anytime: bool, opset: Opset) {
    for y in folded_outputs {
        let folded = graph.unique_name(&format!("{y}.folded"));
        for n in &mut graph.proto.node {
            for o in &mut n.output {
                if o == y {
                    *o = folded.clone();
                }
            }
        }
        graph.redirect(y, &folded);
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
            let info = graph.proto.output.iter().find(|v| v.name() == y).cloned();
            graph.proto.output.push(anytime_info(&anytime_name, info.as_ref(), timesteps));
        }
    }
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
