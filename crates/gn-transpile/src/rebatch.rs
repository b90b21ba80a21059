//! Shapes read from a time-invariant tensor that shape a folded one: exports that read
//! the batch at run time compute a Reshape target (or an Expand shape) from the input's
//! shape, whose batch entry is N, where the folded tensor has T·N rows. The lower pass
//! computes each such shape again from its `Shape` nodes with the batch entry scaled by T:
//!
//! ```text
//!   ANN:     s = Shape(x) ─► Gather(0) ─► Unsqueeze ─► Concat(·, [L, D]) ─► Reshape(h, ·)
//!   lowered: s' = Mul(Shape(x), [T, 1, …]) ─► Gather(0) ─► Unsqueeze ─► Concat ─► Reshape(h, ·)
//! ```
//!
//! The original chain stays for the time-invariant tensors that read it. A `Shape` whose
//! `start` skips axis 0 holds no batch entry and is read as it is.

use std::collections::HashMap;

use gn_onnx::graph::{attr, standard_op};
use gn_onnx::{Graph, Patch};

use crate::error::TranspileError;
use crate::rank::Shapes;
use crate::time::TimeClass;

/// Writes the batch-scaled copies of shape chains into a patch, one per value.
pub struct Rebatch<'a> {
    graph: &'a Graph,
    classes: &'a HashMap<String, TimeClass>,
    shapes: Shapes,
    producers: HashMap<String, usize>,
    timesteps: usize,
    done: HashMap<String, String>,
}

impl<'a> Rebatch<'a> {
    pub fn new(graph: &'a Graph, classes: &'a HashMap<String, TimeClass>, order: &[usize], timesteps: usize) -> Self {
        let shapes = Shapes::infer(graph, &graph.constants(), order);
        Rebatch { graph, classes, shapes, producers: graph.producers(), timesteps, done: HashMap::new() }
    }

    /// The value `v` (a shape read from a time-invariant tensor) computed with T·N for N.
    pub fn folded(&mut self, patch: &mut Patch, v: &str) -> Result<String, TranspileError> {
        if let Some(done) = self.done.get(v) {
            return Ok(done.clone());
        }
        let Some(&p) = self.producers.get(v) else { return Ok(v.to_string()) };
        let node = &self.graph.nodes()[p];
        let refuse = |reason: String| TranspileError::Pass { pass: "lower", node: node.name().to_string(), reason };
        if standard_op(node) == "Size" {
            // N·(the other sizes), read as T·N·(the other sizes).
            let t = patch.add_initializer_i64(&format!("{v}.steps"), &[], &[self.timesteps as i64]);
            let scaled = patch.add_node(v, "folded", "Mul", &[v, &t], vec![]);
            self.done.insert(v.to_string(), scaled.clone());
            return Ok(scaled);
        }
        if standard_op(node) == "Shape" {
            let x = &node.input[0];
            let rank = self.shapes.rank(x).ok_or_else(|| {
                refuse(format!(
                    "Shape of '{x}' gives the batch of a tensor that shapes a time-varying one, and the rank of '{x}' is not known, so its batch entry cannot be scaled by T"
                ))
            })?;
            // `start` as ONNX reads it: negative counts from the end, clamped to [0, rank].
            let start = attr::get_int(node, "start").unwrap_or(0);
            let start = if start < 0 { start + rank as i64 } else { start }.clamp(0, rank as i64);
            let scaled = if start != 0 {
                v.to_string()
            } else {
                let end = attr::get_int(node, "end").map_or(rank as i64, |e| if e < 0 { rank as i64 + e } else { e });
                let len = end.clamp(1, rank as i64) as usize;
                let mut factor = vec![1i64; len];
                factor[0] = self.timesteps as i64;
                let factor = patch.add_initializer_i64(&format!("{v}.per_step"), &[len as i64], &factor);
                patch.add_node(v, "folded", "Mul", &[v, &factor], vec![])
            };
            self.done.insert(v.to_string(), scaled.clone());
            return Ok(scaled);
        }
        // Any other node of the chain is copied, reading the scaled copies of its inputs.
        let mut copy = node.clone();
        for input in copy.input.iter_mut() {
            if self.classes.get(input.as_str()) == Some(&TimeClass::ShapeOfStatic) {
                *input = self.folded(patch, input)?;
            }
        }
        let mut result = v.to_string();
        for output in copy.output.iter_mut().filter(|o| !o.is_empty()) {
            let renamed = patch.unique_name(&format!("{output}.folded"));
            self.done.insert(output.clone(), renamed.clone());
            if output == v {
                result = renamed.clone();
            }
            *output = renamed;
        }
        copy.name = Some(patch.unique_name(&format!("{}.folded", node.name())));
        patch.builder().proto.node.push(copy);
        Ok(result)
    }
}
