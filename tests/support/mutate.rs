//! The fuzzer's mutations: bytes flipped, spliced and truncated, or the model decoded, a
//! field of a tensor, node, attribute, output, opset or metadata entry set to a hostile
//! value, and re-encoded.

use gn_onnx::data::tensor_f32;
use gn_onnx::graph::attr;
use gn_onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto};
use prost::Message;

use crate::rng::Rng;

const HOSTILE_F32: &[f32] = &[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 1e30, 0.5, 4.0, 1e-30];
const HOSTILE_I64: &[i64] = &[-1, 0, 1, 2, 3, 7, 64, 1 << 31, 1 << 40, 1 << 62, i64::MAX, i64::MIN, -(1 << 40)];
const OPS: &[&str] = &[
    "Floor",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Clip",
    "Max",
    "Min",
    "Relu",
    "MaxPool",
    "AveragePool",
    "Reshape",
    "Split",
    "Concat",
    "Gemm",
    "Conv",
    "Identity",
    "Shape",
    "Slice",
    "Gather",
    "Softmax",
    "Loop",
    "If",
    "Constant",
    "GroupNeuron",
    "IFNeuron",
    "GroupNeuronPerChannel",
    "IFNeuronPerChannelDirect",
    "Flatten",
    "Transpose",
    "ReduceMean",
    "Squeeze",
];

/// One mutation of `input`: byte-level or structural.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    if rng.chance(3) {
        return mutate_bytes(rng, input, other);
    }
    match ModelProto::decode(input) {
        Ok(mut m) => {
            for _ in 0..1 + rng.below(3) {
                mutate_model(rng, &mut m);
            }
            m.encode_to_vec()
        }
        Err(_) => mutate_bytes(rng, input, other),
    }
}

fn mutate_bytes(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = *rng.pick(&[0u8, 0x7f, 0x80, 0xff, 0x08, 0x12, 0x1a, 0x22]);
            }
            2 => {
                let at = rng.below(len);
                let n = rng.below(16).min(b.len().saturating_sub(at));
                b.drain(at..at + n);
            }
            3 if !b.is_empty() => {
                let at = rng.below(b.len());
                let n = rng.below(32).min(b.len() - at);
                let copy = b[at..at + n].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, copy);
            }
            4 if !other.is_empty() => {
                let at = rng.below(other.len());
                let n = rng.below(64).min(other.len() - at);
                let to = rng.below(len).min(b.len());
                b.splice(to..to, other[at..at + n].iter().copied());
            }
            _ => b.truncate(rng.below(len)),
        }
    }
    b
}

fn value_names(m: &ModelProto) -> Vec<String> {
    let g = m.graph.as_ref();
    let mut v: Vec<String> = g.map(|g| g.node.iter().flat_map(|n| n.output.clone()).collect()).unwrap_or_default();
    if let Some(g) = g {
        v.extend(g.input.iter().map(|i| i.name().to_string()));
        v.extend(g.initializer.iter().map(|t| t.name().to_string()));
    }
    v.push(String::new());
    v
}

fn mutate_model(rng: &mut Rng, m: &mut ModelProto) {
    let names = value_names(m);
    mutate_header(rng, m);
    let Some(g) = m.graph.as_mut() else { return };
    match rng.below(18) {
        // Mutations that keep the model well-formed, to reach the passes.
        12 | 13 if !g.initializer.is_empty() => {
            let i = rng.below(g.initializer.len());
            keep_initializer_form(rng, &mut g.initializer[i]);
        }
        14 | 15 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            swap_op(rng, &mut g.node[i]);
        }
        16 | 17 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            g.node[i].name = Some(rng.pick(HOSTILE_NAMES).to_string());
        }
        0 | 1 if !g.initializer.is_empty() => {
            let i = rng.below(g.initializer.len());
            break_initializer(rng, &mut g.initializer[i]);
        }
        2 | 3 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            break_node(rng, &mut g.node[i], &names);
        }
        _ => restructure(rng, g, &names),
    }
}

/// Node names that a writer must escape or a terminal must not interpret.
const HOSTILE_NAMES: &[&str] =
    &["", "a\u{1}b", "\"quoted\"", "back\\slash", "\u{1b}[2J", "new\nline", "é∑😀", "x.gn.t1", "output_anytime"];

/// The opset, or a `gn_transpile.*` metadata entry set to a hostile value.
fn mutate_header(rng: &mut Rng, m: &mut ModelProto) {
    match rng.below(10) {
        0 => {
            let v = *rng.pick(&[-5i64, 0, 1, 10, 11, 12, 13, 17, 18, 25, 26, 99]);
            match m.opset_import.iter_mut().find(|o| o.domain().is_empty()) {
                Some(o) if !rng.chance(5) => o.version = Some(v),
                _ => m.opset_import.push(OperatorSetIdProto { domain: Some(String::new()), version: Some(v) }),
            }
        }
        1 => {
            let key = *rng.pick(&[
                "neuron",
                "layers",
                "tau",
                "timesteps",
                "anytime",
                "anytime_outputs",
                "emit",
                "state",
                "calibration",
            ]);
            let value = *rng.pick(&[
                "gn",
                "if",
                "[{\"site\":1}]",
                "not json",
                "-4",
                "0",
                "NaN",
                "[]",
                "true",
                "stateful",
                "custom-op",
                "[\"output\"]",
                "[{\"input\":\"a\",\"output\":\"b\",\"init\":0.5,\"shape\":[\"N\",-1]}]",
            ]);
            m.metadata_props
                .push(StringStringEntryProto { key: Some(format!("gn_transpile.{key}")), value: Some(value.into()) });
        }
        _ => {}
    }
}

/// A one-element float initializer set to a hostile value, keeping its form.
fn keep_initializer_form(rng: &mut Rng, t: &mut TensorProto) {
    if t.data_type() == 1 && gn_onnx::data::element_count(&t.dims) == Some(1) {
        *t = tensor_f32(t.name(), &t.dims.clone(), &[*rng.pick(HOSTILE_F32)]);
    }
}

/// A node's op swapped for another of the same arity.
fn swap_op(rng: &mut Rng, n: &mut NodeProto) {
    const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Max", "Min"];
    if BINARY.contains(&n.op_type()) {
        n.op_type = Some(rng.pick(BINARY).to_string());
    } else if n.input.len() == 1 && n.op_type() != "Constant" {
        n.op_type = Some(rng.pick(&["Floor", "Relu", "Identity", "Neg", "MaxPool", "Softmax"]).to_string());
    }
}

/// An initializer's dims, type, data or location broken.
fn break_initializer(rng: &mut Rng, t: &mut TensorProto) {
    match rng.below(5) {
        0 => {
            let d = *rng.pick(HOSTILE_I64);
            if t.dims.is_empty() || rng.chance(3) {
                t.dims.push(d);
            } else {
                let k = rng.below(t.dims.len());
                t.dims[k] = d;
            }
        }
        1 => t.data_type = Some(*rng.pick(&[0, 1, 2, 6, 7, 8, 10, 11, 14, 16, 21, 24, 25, 99, -1])),
        2 => {
            if let Some(raw) = &t.raw_data {
                let n = rng.below(raw.len() + 1);
                t.raw_data = Some(raw.slice(..n));
            }
        }
        3 => {
            t.data_location = Some(1);
            let loc = *rng.pick(&["../x.bin", "/dev/zero", "x.bin", "", "a/../../b"]);
            t.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some(loc.into()) }];
        }
        _ => {
            let v = *rng.pick(HOSTILE_F32);
            *t = tensor_f32(t.name(), &[], &[v]);
        }
    }
}

/// A node's inputs, outputs, op or attributes broken.
fn break_node(rng: &mut Rng, n: &mut NodeProto, names: &[String]) {
    match rng.below(6) {
        0 if !n.input.is_empty() => {
            let k = rng.below(n.input.len());
            n.input.remove(k);
        }
        1 => n.input.push(rng.pick(names).clone()),
        2 => n.output.clear(),
        3 if !n.output.is_empty() => {
            n.output[0] = if rng.chance(4) { rng.pick(names).clone() } else { format!("fresh{}", rng.below(1000)) }
        }
        4 => {
            let op = *rng.pick(OPS);
            n.op_type = Some(op.into());
            if op.ends_with("Neuron") {
                n.domain = Some("gn.transpile".into());
            }
        }
        _ => {
            if n.attribute.is_empty() || rng.chance(2) {
                let name = *rng.pick(&["theta", "tau", "timesteps", "axis", "perm", "min", "max", "levels"]);
                n.attribute.push(if rng.chance(2) {
                    attr::int(name, *rng.pick(HOSTILE_I64))
                } else {
                    attr::float(name, *rng.pick(HOSTILE_F32))
                });
            } else {
                let k = rng.below(n.attribute.len());
                let a = &mut n.attribute[k];
                a.i = Some(*rng.pick(HOSTILE_I64));
                a.f = Some(*rng.pick(HOSTILE_F32));
                a.ints = vec![*rng.pick(HOSTILE_I64); rng.below(4)];
            }
        }
    }
}

/// Nodes removed, duplicated, swapped or added; outputs duplicated, cleared or added.
fn restructure(rng: &mut Rng, g: &mut GraphProto, names: &[String]) {
    match rng.below(10) {
        4 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            g.node.remove(i);
        }
        5 if !g.node.is_empty() => {
            let i = rng.below(g.node.len());
            let mut n = g.node[i].clone();
            if rng.chance(2) {
                n.output = vec![format!("{}.dup", n.output.first().cloned().unwrap_or_default())];
            }
            g.node.push(n);
        }
        6 if g.node.len() > 1 => {
            let (a, b) = (rng.below(g.node.len()), rng.below(g.node.len()));
            g.node.swap(a, b);
        }
        7 => match rng.below(3) {
            0 if !g.output.is_empty() => {
                let o = g.output[rng.below(g.output.len())].clone();
                g.output.push(o);
            }
            1 => g.output.clear(),
            _ => {
                let name: &String = rng.pick(names);
                g.output.push(gn_onnx::data::float_value_info(name, &[None]))
            }
        },
        8 if !g.node.is_empty() => {
            // A node's operand replaced by a new Constant of a hostile value.
            let name = format!("hostile{}", rng.below(1 << 20));
            let v = *rng.pick(HOSTILE_F32);
            let i = rng.below(g.node.len());
            let n = &mut g.node[i];
            if !n.input.is_empty() {
                let k = rng.below(n.input.len());
                n.input[k] = name.clone();
            }
            let value = if rng.chance(3) {
                attr::ints("value_ints", &[*rng.pick(HOSTILE_I64), *rng.pick(HOSTILE_I64)])
            } else {
                attr::float("value_float", v)
            };
            g.node.insert(
                0,
                NodeProto {
                    output: vec![name],
                    op_type: Some("Constant".into()),
                    attribute: vec![value],
                    ..Default::default()
                },
            );
        }
        9 => {
            let x = rng.pick(names).clone();
            let y = format!("fuzz{}", rng.below(1000));
            let op = *rng.pick(OPS);
            let domain = if op.ends_with("Neuron") { "gn.transpile" } else { "" };
            g.node.push(NodeProto {
                input: vec![x],
                output: vec![y.clone()],
                op_type: Some(op.into()),
                domain: Some(domain.into()),
                attribute: vec![attr::float("theta", *rng.pick(HOSTILE_F32)), attr::int("tau", *rng.pick(HOSTILE_I64))],
                ..Default::default()
            });
            if rng.chance(2) {
                g.output.push(gn_onnx::data::float_value_info(&y, &[None]));
            }
        }
        _ => {}
    }
}
