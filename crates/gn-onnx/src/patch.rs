//! A patch: the edits a pass plans while it reads an unchanged [`Graph`], applied at once
//! by [`Graph::apply`] (after tract's `TypedModelPatch`: a pass never edits what it is
//! still matching against).
//!
//! A patch can remove nodes, replace nodes (same index, new content), redirect the reads
//! of a value to another value, and add nodes and initializers. New names are made unique
//! against the graph the patch was made for and against the patch's own additions, so a
//! pass names what it adds exactly as [`Graph::add_node`] would.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::Graph;
use crate::proto::{AttributeProto, GraphProto, NodeProto, ValueInfoProto};

/// Edits planned on one graph. Node indices refer to that graph, as it was when the
/// patch was made.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The additions, as a graph of their own whose names avoid the target's.
    added: Graph,
    removed: BTreeSet<usize>,
    replaced: BTreeMap<usize, NodeProto>,
    redirects: Vec<(String, String)>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    nodes: usize,
}

impl Patch {
    /// An empty patch for `graph`.
    pub fn new(graph: &Graph) -> Patch {
        Patch {
            added: graph.empty_sibling(),
            removed: BTreeSet::new(),
            replaced: BTreeMap::new(),
            redirects: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            nodes: graph.nodes().len(),
        }
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
            && self.replaced.is_empty()
            && self.redirects.is_empty()
            && self.inputs.is_empty()
            && self.outputs.is_empty()
            && self.added.proto.node.is_empty()
            && self.added.proto.initializer.is_empty()
    }

    /// Removes node `index`.
    pub fn remove(&mut self, index: usize) {
        self.replaced.remove(&index);
        self.removed.insert(index);
    }

    /// Replaces node `index` by `node`.
    pub fn replace(&mut self, index: usize, node: NodeProto) {
        self.removed.remove(&index);
        self.replaced.insert(index, node);
    }

    /// Declares one more graph input (its name must be fresh: see [`Patch::unique_name`]).
    pub fn add_input(&mut self, input: ValueInfoProto) {
        self.inputs.push(input);
    }

    /// Declares one more graph output (written by a node the patch adds).
    pub fn add_output(&mut self, output: ValueInfoProto) {
        self.outputs.push(output);
    }

    /// Makes every node of the graph that reads `from` read `to` instead, replaced nodes
    /// included (the nodes the patch adds are taken as written).
    pub fn redirect(&mut self, from: &str, to: &str) {
        self.redirects.push((from.to_string(), to.to_string()));
    }

    /// Adds a node as it is (its names must be fresh: see [`Patch::unique_name`]).
    pub fn push(&mut self, node: NodeProto) {
        self.added.proto.node.push(node);
    }

    /// The additions so far: a graph holding only the new nodes and initializers, for the
    /// builders that append to a graph (see [`Graph::add_node`]).
    pub fn builder(&mut self) -> &mut Graph {
        &mut self.added
    }

    /// A fresh name, unused in the graph and in the patch.
    pub fn unique_name(&mut self, base: &str) -> String {
        self.added.unique_name(base)
    }

    /// [`Graph::add_node`] on the patch.
    pub fn add_node(
        &mut self,
        source: &str,
        suffix: &str,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.added.add_node(source, suffix, op_type, inputs, attributes)
    }

    /// [`Graph::add_initializer_i64`] on the patch.
    pub fn add_initializer_i64(&mut self, base: &str, dims: &[i64], values: &[i64]) -> String {
        self.added.add_initializer_i64(base, dims, values)
    }

    /// [`Graph::add_initializer_f32`] on the patch.
    pub fn add_initializer_f32(&mut self, base: &str, dims: &[i64], values: &[f32]) -> String {
        self.added.add_initializer_f32(base, dims, values)
    }
}

/// Why a patch does not fit the graph it is applied to.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a patch planned on a graph of {planned} nodes was applied to one of {actual}")]
pub struct PatchMismatch {
    pub planned: usize,
    pub actual: usize,
}

impl Graph {
    /// An empty graph that avoids this one's names: the additions of a patch.
    fn empty_sibling(&self) -> Graph {
        let mut g = Graph::new(GraphProto::default());
        g.reserve_names_of(self);
        g
    }

    /// Applies a patch made for this graph: replaces nodes, redirects the reads of the
    /// graph's nodes, removes nodes, and appends the additions, inputs and outputs (nodes after the existing ones,
    /// in the order added). The graph is not re-sorted.
    pub fn apply(&mut self, patch: Patch) -> Result<(), PatchMismatch> {
        let Patch { added, removed, replaced, redirects, inputs, outputs, nodes } = patch;
        if nodes != self.proto.node.len() {
            return Err(PatchMismatch { planned: nodes, actual: self.proto.node.len() });
        }
        for (i, node) in replaced {
            if let Some(slot) = self.proto.node.get_mut(i) {
                *slot = node;
            }
        }
        if !redirects.is_empty() {
            let map: std::collections::HashMap<&str, &str> =
                redirects.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
            for n in &mut self.proto.node {
                for i in &mut n.input {
                    if let Some(to) = map.get(i.as_str()) {
                        *i = to.to_string();
                    }
                }
            }
        }
        if !removed.is_empty() {
            let mut index = 0;
            self.proto.node.retain(|_| {
                index += 1;
                !removed.contains(&(index - 1))
            });
        }
        let (GraphProto { node, initializer, .. }, added_names) = added.into_parts();
        self.proto.node.extend(node);
        self.proto.initializer.extend(initializer);
        self.proto.input.extend(inputs);
        self.proto.output.extend(outputs);
        self.reserve_names(added_names);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::node;

    fn graph() -> Graph {
        Graph::new(GraphProto {
            node: vec![
                node("Relu", &["x"], "a", vec![]),
                node("Neg", &["a"], "b", vec![]),
                node("Abs", &["b"], "y", vec![]),
            ],
            input: vec![crate::data::float_value_info("x", &[None])],
            output: vec![crate::data::float_value_info("y", &[None])],
            ..Default::default()
        })
    }

    #[test]
    fn the_graph_is_unchanged_until_the_patch_is_applied() {
        let mut g = graph();
        let before = g.render();
        let mut p = Patch::new(&g);
        let c = p.add_node("b", "copy", "Identity", &["a"], vec![]);
        p.redirect("b", &c);
        p.remove(1);
        assert_eq!(g.render(), before);
        g.apply(p).unwrap();
        g.sort().unwrap();
        assert_eq!(
            g.render(),
            "input x\na: Relu(x) -> a\nb.copy: Identity(a) -> b.copy\ny: Abs(b.copy) -> y\noutput y\n"
        );
    }

    #[test]
    fn names_added_by_a_patch_avoid_the_graph_and_each_other() {
        let mut g = graph();
        let mut p = Patch::new(&g);
        assert_eq!(p.unique_name("a"), "a.1");
        assert_eq!(p.unique_name("a"), "a.2");
        g.apply(p).unwrap();
        // The graph now knows the names the patch took.
        assert_eq!(g.unique_name("a"), "a.3");
    }

    #[test]
    fn replace_and_remove_act_on_the_planned_indices() {
        let mut g = graph();
        let mut p = Patch::new(&g);
        p.replace(1, node("Sigmoid", &["a"], "b", vec![]));
        g.apply(p).unwrap();
        assert!(g.render().contains("b: Sigmoid(a) -> b"));
        let mut p = Patch::new(&g);
        p.remove(0);
        g.proto.node.pop();
        assert_eq!(g.apply(p), Err(PatchMismatch { planned: 3, actual: 2 }));
    }
}
