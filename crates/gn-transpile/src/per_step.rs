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
//! network input, time-invariant tensors) are read as they are, as the ANN reads them.

use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;
use gn_onnx::Patch;

use crate::opset::Opset;

/// Replaces `node` (already removed from the patch's graph) by `t` copies, one per step:
/// each of its `folded` operands is cut into its `t` steps along axis 0, and each output
/// is the copies' outputs concatenated along axis 0.
pub fn lower(patch: &mut Patch, opset: Opset, node: &NodeProto, folded: &[String], t: usize) {
    let base =
        if node.name().is_empty() { node.output.first().cloned().unwrap_or_default() } else { node.name().into() };
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for f in folded {
        if !steps.iter().any(|(v, _)| v == f) {
            let parts = cut(patch, opset, &base, f, t);
            steps.push((f.clone(), parts));
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
    (0..t)
        .map(|s| {
            let index = g.add_initializer_i64(&format!("{base}.step{s}"), &[], &[s as i64]);
            g.add_node(base, &format!("step{s}"), "Gather", &[&steps, &index], vec![attr::int("axis", 0)])
        })
        .collect()
}
