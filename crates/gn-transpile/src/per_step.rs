//! Ops that act along axis 0 of a folded value, run step by step. A folded value is its
//! per-step values stacked along axis 0 (`[T·a, …]`, step-major), so an op that works
//! on each row of axis 0 separately runs once over all the steps; one that moves axis 0
//! (the Transpose of a sequence-first attention), reshapes, gathers, slices or concatenates
//! across it, is linear, and runs once per step instead, on each step's slice exactly as
//! the ANN runs it, the results stacked again:
//!
//! ```text
//!   x [T·a, …] ─► Reshape [T, −1, …] ─► Gather(s) ─► op ─► Concat(axis 0) ─► y [T·b, …]
//!                                      (one Gather and one op per step s)
//! ```
//!
//! Being linear, its output averaged over the first t steps is the op on its inputs
//! averaged over them: exact in time. Its other operands (weights, shapes read from the
//! network input, time-invariant tensors) are read as they are, as the ANN reads them; a
//! shape computed from folded tensors (T times the step's rows on axis 0) is computed
//! again from the step's shapes: each `Shape(v)` of a folded `v` in its computation
//! becomes the Shape of `v`'s first step.

use std::collections::HashMap;

use gn_onnx::graph::{attr, standard_op};
use gn_onnx::proto::NodeProto;
use gn_onnx::{Graph, Patch};

use crate::opset::Opset;
use crate::time::TimeClass;

/// What the step's copies read from the lowered graph.
pub struct Steps<'a> {
    pub graph: &'a Graph,
    pub classes: &'a HashMap<String, TimeClass>,
    pub producers: &'a HashMap<String, usize>,
    pub opset: Opset,
    pub t: usize,
}

/// Replaces `node` (already removed from the patch's graph) by `t` copies, one per step:
/// each of its folded operands is cut into its `t` steps along axis 0, each shape operand
/// computed from folded tensors is computed again for one step, and each output is the
/// copies' outputs concatenated along axis 0.
pub fn lower(patch: &mut Patch, cx: &Steps, node: &NodeProto) {
    let (opset, t) = (cx.opset, cx.t);
    let base =
        if node.name().is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name().into() };
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut shapes: HashMap<String, String> = HashMap::new();
    for f in &node.input {
        if steps.iter().any(|(v, _)| v == f) {
            continue;
        }
        match cx.classes.get(f) {
            Some(TimeClass::Folded) => {
                let parts = cut(patch, opset, &base, f, t);
                steps.push((f.clone(), parts));
            }
            Some(TimeClass::ShapeOfFolded) => {
                let step = step_shape(patch, cx, &mut shapes, f, 0);
                steps.push((f.clone(), vec![step; t]));
            }
            _ => {}
        }
    }
    let mut outputs: Vec<Vec<String>> = vec![Vec::new(); node.output.len()];
    for s in 0..t {
        let mut copy = node.clone();
        copy.name = Some(patch.unique_name(&format!("{base}.step{s}")));
        for input in copy.input.iter_mut() {
            if let Some((_, parts)) = steps.iter().find(|(v, _)| v == input) {
                *input = parts[s].clone();
            }
        }
        for (k, output) in copy.output.iter_mut().enumerate() {
            if !output.is_empty() {
                *output = patch.unique_name(&format!("{output}.step{s}"));
                outputs[k].push(output.clone());
            }
        }
        patch.push(copy);
    }
    for (y, parts) in node.output.iter().zip(outputs) {
        if y.is_empty() {
            continue;
        }
        let name = patch.unique_name(&format!("{y}.steps"));
        patch.push(NodeProto {
            name: Some(name),
            op_type: Some("Concat".into()),
            input: parts,
            output: vec![y.clone()],
            attribute: vec![attr::int("axis", 0)],
            ..Default::default()
        });
    }
}

/// The `t` steps of the folded value `x` (`[T·a, …]`): `Reshape(x, [T, −1, …x's other
/// dims])`, then a Gather of each step on axis 0, `[a, …]` each. A runtime that follows
/// shapes symbolically sees every step with the same shape.
fn cut(patch: &mut Patch, opset: Opset, base: &str, x: &str, t: usize) -> Vec<String> {
    cut_steps(patch, opset, base, x, t, t)
}

/// The first `count` of the `t` steps of the folded value `x`, as [`cut`] gives them.
fn cut_steps(patch: &mut Patch, opset: Opset, base: &str, x: &str, t: usize, count: usize) -> Vec<String> {
    let g = patch.builder();
    let shape = g.add_node(base, "shape", "Shape", &[x], vec![]);
    let rest = if opset.0 >= 10 {
        let start = g.add_initializer_i64(&format!("{base}.one"), &[1], &[1]);
        let end = g.add_initializer_i64(&format!("{base}.end"), &[1], &[i64::MAX]);
        g.add_node(base, "rest", "Slice", &[&shape, &start, &end], vec![])
    } else {
        let attrs = vec![attr::ints("starts", &[1]), attr::ints("ends", &[i64::MAX]), attr::ints("axes", &[0])];
        g.add_node(base, "rest", "Slice", &[&shape], attrs)
    };
    let head = g.add_initializer_i64(&format!("{base}.head"), &[2], &[t as i64, -1]);
    let target = g.add_node(base, "target", "Concat", &[&head, &rest], vec![attr::int("axis", 0)]);
    let steps = g.add_node(base, "steps", "Reshape", &[x, &target], vec![]);
    (0..count)
        .map(|s| {
            let index = g.add_initializer_i64(&format!("{base}.step{s}"), &[], &[s as i64]);
            g.add_node(base, &format!("step{s}"), "Gather", &[&steps, &index], vec![attr::int("axis", 0)])
        })
        .collect()
}

/// The shape vector `v` (computed from folded tensors' shapes) as one step sees it: its
/// computation again, each `Shape(x)` of a folded `x` replaced by the Shape of `x`'s first
/// step. One per value.
fn step_shape(patch: &mut Patch, cx: &Steps, memo: &mut HashMap<String, String>, v: &str, depth: usize) -> String {
    if let Some(s) = memo.get(v) {
        return s.clone();
    }
    let Some(&p) = cx.producers.get(v) else { return v.to_string() };
    if cx.classes.get(v) != Some(&TimeClass::ShapeOfFolded) || depth > 256 {
        return v.to_string();
    }
    let n = &cx.graph.nodes()[p];
    let folded_input = n.input.first().is_some_and(|i| cx.classes.get(i) == Some(&TimeClass::Folded));
    let step = if standard_op(n) == "Shape" && folded_input {
        // The same Shape (its start and end as they are) of the first step's slice.
        let x = &n.input[0];
        let first = cut_steps(patch, cx.opset, v, x, cx.t, 1).remove(0);
        let mut copy = n.clone();
        copy.name = Some(patch.unique_name(&format!("{}.step", n.name())));
        copy.input[0] = first;
        let out = patch.unique_name(&format!("{v}.step"));
        copy.output = vec![out.clone()];
        patch.push(copy);
        out
    } else {
        let mut copy = n.clone();
        for input in copy.input.iter_mut().filter(|i| !i.is_empty()) {
            *input = step_shape(patch, cx, memo, &input.clone(), depth + 1);
        }
        let name = patch.unique_name(&format!("{}.step", n.name()));
        copy.name = Some(name);
        for output in copy.output.iter_mut().filter(|o| !o.is_empty()) {
            *output = patch.unique_name(&format!("{output}.step"));
        }
        let k = n.output.iter().position(|o| o == v).unwrap_or(0);
        let out = copy.output[k].clone();
        patch.push(copy);
        out
    };
    memo.insert(v.to_string(), step.clone());
    step
}
