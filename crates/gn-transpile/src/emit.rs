//! Pass 5, emit: the readout and the model's interface (SPEC §3, §5).
//!
//! ```text
//!   y.folded [T·N, …] ─► Split(T) ─► y_1 … y_T ─► running sums S_t ─► y = S_T / T
//!                                                         └─► (anytime) Unsqueeze(S_t / t) ─► Concat ─► y_anytime [T, N, …]
//! ```
//!
//! The graph keeps the ANN's inputs and output names; each output holds the readout
//! averaged over the T steps. Metadata records the conversion.

use gn_onnx::graph::attr;
use gn_onnx::proto::{type_proto, tensor_shape_proto, StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto};
use gn_onnx::Graph;

use crate::neuron::Opset;

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
        let steps = if timesteps > 1 { opset.split(graph, &src, "split", &folded, timesteps) } else { vec![folded.clone()] };
        let axes = if anytime && opset.0 >= 13 { Some(graph.add_initializer_i64(&format!("{src}.axes"), &[1], &[0])) } else { None };
        let mut sum = steps[0].clone();
        let mut averages = Vec::new();
        for (t, step) in steps.iter().enumerate() {
            if t > 0 {
                sum = graph.add_node(&src, &format!("t{}.sum", t + 1), "Add", &[&sum, step], vec![]);
            }
            let last = t + 1 == timesteps;
            if anytime || last {
                let count = graph.add_initializer_f32(&format!("{src}.t{}.count", t + 1), &[], &[(t + 1) as f32]);
                let mean = graph.add_node(&src, &format!("t{}.mean", t + 1), "Div", &[&sum, &count], vec![]);
                if last {
                    if let Some(n) = graph.proto.node.last_mut() {
                        n.output[0] = y.clone();
                    }
                    averages.push(y.clone());
                } else {
                    averages.push(mean);
                }
            }
        }
        if anytime {
            let rows: Vec<String> = averages
                .iter()
                .enumerate()
                .map(|(t, a)| opset.unsqueeze0(graph, &src, &format!("t{}.row", t + 1), a, axes.as_deref().unwrap_or("")))
                .collect();
            let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
            let name = format!("{y}_anytime");
            let out = graph.add_node(&src, "anytime", "Concat", &refs, vec![attr::int("axis", 0)]);
            if let Some(n) = graph.proto.node.last_mut() {
                n.output[0] = name.clone();
            }
            let _ = out;
            let info = graph.proto.output.iter().find(|v| v.name() == y).cloned();
            graph.proto.output.push(anytime_info(&name, info.as_ref(), timesteps));
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
        } else {
            t.shape = None::<TensorShapeProto>;
        }
    }
    ValueInfoProto { name: Some(name.into()), r#type: Some(ty), ..Default::default() }
}

/// Appends `key = value` to the model's metadata, replacing an earlier entry of that key.
pub fn set_metadata(props: &mut Vec<StringStringEntryProto>, key: &str, value: String) {
    props.retain(|p| p.key() != key);
    props.push(StringStringEntryProto { key: Some(key.into()), value: Some(value) });
}
