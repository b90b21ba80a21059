//! Where the folded rows sit in a shape vector. A shape read from a folded tensor
//! (`[T·a, b, …]`) holds T times the step's extent on its axis 0 and the step's own
//! extents elsewhere; what the graph computes from it may carry the rows anywhere, or
//! not at all. One pass over the shape values, in topological order, says for each entry
//! of each such vector whether it is:
//!
//! - [`Entry::Rows`]: T times a step's value (axis 0 itself, its product with a step's
//!   extent, a sum of two of them);
//! - [`Entry::Step`]: the same at every step (a step's extent, a constant);
//! - [`Entry::Mixed`]: computed from the rows some other way (a quotient, a sum with a
//!   step's extent).
//!
//! The time analysis asks three questions of it: whether a shape reads the rows at all (a
//! ConstantOfShape or Range that does not is a constant), and, of a Reshape target,
//! whether its first entry follows the rows (0, −1 or [`Entry::Rows`]: the Reshape runs
//! once over all the steps) and whether any later entry reads them (it must run step by
//! step, on shapes computed again for one step).
//!
//! ```text
//!   Shape(x [T·N, L, C])          → [Rows, Step, Step]
//!   Gather(·, 0) · Gather(·, 1)   → [Rows]            (T·N·L = T·(N·L))
//!   Concat(·, [-1])               → [Rows, Step(-1)]  a target that follows the rows
//!   Div(Gather(·, 0), 4)          → [Mixed]           a target the steps compute again
//! ```

use std::collections::HashMap;

use gn_onnx::graph::{attr, standard_op, Constants};
use gn_onnx::proto::NodeProto;

use crate::rank::{const_ints, Shapes};
use crate::shapes::clamped_range;
use crate::time::TimeClass;

/// One entry of a shape vector computed from folded tensors' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// T times a step's value.
    Rows,
    /// The same at every step; its value where it is a known constant.
    Step(Option<i64>),
    /// Read from the rows some other way.
    Mixed,
}

impl Entry {
    fn reads_rows(self) -> bool {
        !matches!(self, Entry::Step(_))
    }
}

/// The entries of a shape vector: those known by position, then, where the length is not
/// known, what each further entry is at worst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    head: Vec<Entry>,
    rest: Option<Entry>,
}

impl Provenance {
    fn exactly(head: Vec<Entry>) -> Provenance {
        Provenance { head, rest: None }
    }

    /// Entries of unknown number and position, each at worst the worst of `of`.
    fn unknown<'a>(of: impl IntoIterator<Item = &'a Provenance>) -> Provenance {
        let rows = of.into_iter().any(Provenance::reads_rows);
        Provenance { head: Vec::new(), rest: Some(if rows { Entry::Mixed } else { Entry::Step(None) }) }
    }

    /// Whether any entry reads the folded rows.
    pub fn reads_rows(&self) -> bool {
        self.head.iter().any(|e| e.reads_rows()) || self.rest.is_some_and(Entry::reads_rows)
    }

    /// Whether, as a Reshape target, its first entry keeps T times the step's rows: 0 or
    /// −1 (which follow the input's axis 0), or [`Entry::Rows`].
    pub fn first_follows_rows(&self) -> bool {
        matches!(self.head.first(), Some(Entry::Rows | Entry::Step(Some(0 | -1))))
    }

    /// The number of entries, where it is known.
    pub fn known_len(&self) -> Option<usize> {
        self.rest.is_none().then_some(self.head.len())
    }

    /// Whether an entry after the first reads the folded rows.
    pub fn later_entries_read_rows(&self) -> bool {
        self.head.iter().skip(1).any(|e| e.reads_rows()) || self.rest.is_some_and(Entry::reads_rows)
    }

    /// Whether, as the shape of a new tensor, it gives T times the step's rows on axis 0
    /// and the step's own sizes elsewhere: its first entry is [`Entry::Rows`], no later
    /// one reads the rows.
    pub fn rows_then_steps(&self) -> bool {
        self.head.first() == Some(&Entry::Rows) && !self.later_entries_read_rows()
    }

    /// The same entries as floats: those that read the rows are [`Entry::Mixed`] (a float
    /// product with the rows is not T times an integer), constants lose their value.
    fn as_float(&self) -> Provenance {
        let float = |e: Entry| if e.reads_rows() { Entry::Mixed } else { Entry::Step(None) };
        Provenance { head: self.head.iter().copied().map(float).collect(), rest: self.rest.map(float) }
    }

    /// The entry at index `i` (negative from the end, where the length is known).
    fn at(&self, i: i64) -> Entry {
        let len = self.head.len() as i64;
        match self.rest {
            None if (-len..len).contains(&i) => self.head[i.rem_euclid(len.max(1)) as usize],
            Some(_) if (0..len).contains(&i) => self.head[i as usize],
            Some(rest) if i >= len => rest,
            // Out of range, or from the end of a vector of unknown length.
            _ => Entry::Mixed,
        }
    }
}

/// The provenance of every shape vector computed from folded tensors' shapes.
#[derive(Debug, Default)]
pub struct ShapeRows {
    of: HashMap<String, Provenance>,
}

/// What [`ShapeRows::visit`] reads besides the node.
pub struct Context<'a> {
    pub consts: &'a Constants<'a>,
    pub shapes: &'a Shapes,
    pub classes: &'a HashMap<String, TimeClass>,
}

impl ShapeRows {
    /// The provenance of the shape value `v`; a value not visited (nor a small constant)
    /// may hold the rows anywhere.
    pub fn of(&self, v: &str) -> Provenance {
        self.of.get(v).cloned().unwrap_or(Provenance { head: Vec::new(), rest: Some(Entry::Mixed) })
    }

    /// Records the provenance of node `n`'s outputs, which the time analysis classed as
    /// shapes of folded tensors; its inputs are visited already (topological order).
    pub fn visit(&mut self, cx: &Context, n: &NodeProto) {
        let p = self.compute(cx, n);
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            self.of.insert(o.clone(), p.clone());
        }
    }

    /// The provenance of input `i` of `n`: a visited shape value, a small constant's
    /// values, or (any other tensor) entries that may hold the rows anywhere.
    fn input(&self, cx: &Context, n: &NodeProto, i: usize) -> Option<Provenance> {
        let v = n.input.get(i).filter(|s| !s.is_empty())?;
        if let Some(p) = self.of.get(v) {
            return Some(p.clone());
        }
        if let Some(Ok(c)) = cx.consts.small(v) {
            let integer = |x: f64| (x.fract() == 0.0 && x.abs() < 2f64.powi(62)).then_some(x as i64);
            return Some(Provenance::exactly(c.values.iter().map(|&x| Entry::Step(integer(x))).collect()));
        }
        let rows = cx.classes.get(v).is_none_or(|&c| c != TimeClass::Const);
        Some(Provenance { head: Vec::new(), rest: Some(if rows { Entry::Mixed } else { Entry::Step(None) }) })
    }

    fn compute(&self, cx: &Context, n: &NodeProto) -> Provenance {
        let inputs: Vec<Provenance> = (0..n.input.len()).filter_map(|i| self.input(cx, n, i)).collect();
        let first = || self.input(cx, n, 0);
        let folded = |i: usize| n.input.get(i).is_some_and(|v| cx.classes.get(v) == Some(&TimeClass::Folded));
        if standard_op(n) == "Shape" && folded(0) {
            return shape_of_folded(n, n.input.first().and_then(|x| cx.shapes.rank(x)));
        }
        // Entries are followed by position through vectors and scalars only: a node whose
        // output, or a shape operand, has another rank (or one not known) is taken at its
        // worst.
        let vector = |v: &String| cx.shapes.rank(v).is_some_and(|r| r <= 1);
        let shape_operands = n.input.iter().filter(|i| cx.classes.get(*i) == Some(&TimeClass::ShapeOfFolded));
        if !n.output.first().is_some_and(vector) || !shape_operands.clone().all(vector) {
            return Provenance::unknown(&inputs);
        }
        let computed = match standard_op(n) {
            "Gather" if attr::get_int(n, "axis").unwrap_or(0) == 0 => first().and_then(|p| {
                let indices = const_ints(cx.consts, n, 1)?;
                Some(Provenance::exactly(indices.iter().map(|&i| p.at(i)).collect()))
            }),
            "Slice" => first().and_then(|p| slice(cx.consts, n, &p)),
            "Concat" => Some(concat(&inputs)),
            "Unsqueeze" | "Squeeze" | "Identity" | "Reshape" => first(),
            // To a float, a product with the rows is no longer T times an integer.
            "Cast" if !attr::get_int(n, "to").is_some_and(gn_onnx::data::is_integer_type) => {
                first().map(|p| p.as_float())
            }
            "Cast" => first(),
            op @ ("Mul" | "Add" | "Sub") => match inputs.as_slice() {
                [a, b] => elementwise(op, a, b),
                _ => None,
            },
            _ => None,
        };
        computed.unwrap_or_else(|| Provenance::unknown(&inputs))
    }
}

/// `Shape(x)` of a folded `x` of rank `rank` (if known), with its start and end.
fn shape_of_folded(n: &NodeProto, rank: Option<usize>) -> Provenance {
    let entry = |k: i64| if k == 0 { Entry::Rows } else { Entry::Step(None) };
    let (start, end) = (attr::get_int(n, "start").unwrap_or(0), attr::get_int(n, "end"));
    match rank {
        Some(r) => {
            let r = r as i64;
            Provenance::exactly(clamped_range(r, start, end.unwrap_or(r)).map(|k| entry(k as i64)).collect())
        }
        // Of unknown rank (at least 1, a folded tensor's): entry 0 exists, the length is
        // not known (ONNX clamps `end` to the rank).
        None => match (start, end) {
            (0, None) => Provenance { head: vec![Entry::Rows], rest: Some(Entry::Step(None)) },
            (0, Some(e)) if e > 0 => Provenance { head: vec![Entry::Rows], rest: Some(Entry::Step(None)) },
            (s, _) if s > 0 => Provenance { head: Vec::new(), rest: Some(Entry::Step(None)) },
            _ => Provenance { head: Vec::new(), rest: Some(Entry::Mixed) },
        },
    }
}

/// A Slice of the shape vector `p` along its only axis, with step 1 and constant bounds.
fn slice(consts: &Constants, n: &NodeProto, p: &Provenance) -> Option<Provenance> {
    // An operand as an attribute (opset < 10) or a constant input: `Some(None)` where it
    // is absent, `None` where it is computed.
    let operand = |name: &str, i: usize| -> Option<Option<Vec<i64>>> {
        if let Some(a) = n.attribute.iter().find(|a| a.name() == name) {
            return Some(Some(a.ints.clone()));
        }
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Some(None),
            Some(_) => const_ints(consts, n, i).map(Some),
        }
    };
    let (Some(starts), Some(ends)) = (operand("starts", 1)?, operand("ends", 2)?) else {
        return None;
    };
    let (&[start], &[end]) = (starts.as_slice(), ends.as_slice()) else {
        return None;
    };
    if operand("axes", 3)?.is_some_and(|a| a.iter().any(|&x| x != 0 && x != -1)) {
        return None;
    }
    if operand("steps", 4)?.is_some_and(|s| s != [1]) {
        return None;
    }
    let len = p.head.len() as i64;
    match p.rest {
        None => Some(Provenance::exactly(p.head[clamped_range(len, start, end)].to_vec())),
        Some(_) if (0..=len).contains(&start) && (start..=len).contains(&end) => {
            Some(Provenance::exactly(p.head[start as usize..end as usize].to_vec()))
        }
        Some(rest) if (0..=len).contains(&start) && end >= i64::from(i32::MAX) => {
            Some(Provenance { head: p.head[start as usize..].to_vec(), rest: Some(rest) })
        }
        Some(_) => None,
    }
}

/// Pieces joined: positions are known up to the first piece of unknown length.
fn concat(pieces: &[Provenance]) -> Provenance {
    let mut head = Vec::new();
    for (k, p) in pieces.iter().enumerate() {
        head.extend_from_slice(&p.head);
        if let Some(rest) = p.rest {
            let after = Provenance::unknown(&pieces[k + 1..]);
            let worst = if rest.reads_rows() { rest } else { after.rest.unwrap_or(rest) };
            return Provenance { head, rest: Some(worst) };
        }
    }
    Provenance::exactly(head)
}

/// Entry by entry (one side may be a single entry, broadcast): a product with one factor
/// T times the step's is T times the step's product, a sum or difference of two such is
/// T times theirs; anything else that reads the rows is [`Entry::Mixed`].
fn elementwise(op: &str, a: &Provenance, b: &Provenance) -> Option<Provenance> {
    if a.rest.is_some() || b.rest.is_some() {
        return None;
    }
    let (la, lb) = (a.head.len(), b.head.len());
    let len = match (la, lb) {
        _ if la == lb => la,
        (1, _) => lb,
        (_, 1) => la,
        _ => return None,
    };
    let pick = |p: &Provenance, i: usize| p.head[if p.head.len() == 1 { 0 } else { i }];
    let combine = |x: Entry, y: Entry| match (op, x, y) {
        (_, Entry::Step(u), Entry::Step(v)) => Entry::Step(u.zip(v).and_then(|(u, v)| match op {
            "Mul" => u.checked_mul(v),
            "Add" => u.checked_add(v),
            _ => u.checked_sub(v),
        })),
        ("Mul", Entry::Rows, Entry::Step(_)) | ("Mul", Entry::Step(_), Entry::Rows) => Entry::Rows,
        ("Add" | "Sub", Entry::Rows, Entry::Rows) => Entry::Rows,
        _ => Entry::Mixed,
    };
    Some(Provenance::exactly((0..len).map(|i| combine(pick(a, i), pick(b, i))).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gn_onnx::data::{node, tensor_i64};
    use gn_onnx::proto::GraphProto;
    use gn_onnx::Graph;
    use Entry::{Mixed, Rows, Step};

    /// Visits `nodes` (in order) with `x` a folded tensor of rank 3 and `y` one of unknown
    /// rank; every node output is a shape of folded tensors.
    fn provenance(nodes: Vec<NodeProto>, initializers: Vec<gn_onnx::proto::TensorProto>, v: &str) -> Provenance {
        let mut proto = GraphProto { node: nodes, initializer: initializers, ..Default::default() };
        proto.value_info.push(gn_onnx::data::float_value_info("x", &[Some(6), Some(4), Some(2)]));
        let graph = Graph::new(proto);
        let consts = graph.constants();
        let order: Vec<usize> = (0..graph.proto.node.len()).collect();
        let shapes = Shapes::infer(&graph, &consts, &order);
        let mut classes: HashMap<String, TimeClass> =
            [("x", TimeClass::Folded), ("y", TimeClass::Folded)].map(|(k, c)| (k.to_string(), c)).into();
        for t in &graph.proto.initializer {
            classes.insert(t.name().to_string(), TimeClass::Const);
        }
        let mut rows = ShapeRows::default();
        for n in &graph.proto.node {
            let cx = Context { consts: &consts, shapes: &shapes, classes: &classes };
            rows.visit(&cx, n);
            for o in &n.output {
                classes.insert(o.clone(), TimeClass::ShapeOfFolded);
            }
        }
        rows.of(v)
    }

    fn exactly(head: &[Entry]) -> Provenance {
        Provenance::exactly(head.to_vec())
    }

    #[test]
    fn a_shape_holds_the_rows_on_its_first_entry_only() {
        let shape = node("Shape", &["x"], "s", vec![]);
        assert_eq!(provenance(vec![shape.clone()], vec![], "s"), exactly(&[Rows, Step(None), Step(None)]));
        let tail = node("Shape", &["x"], "s", vec![attr::int("start", 1)]);
        assert!(!provenance(vec![tail], vec![], "s").reads_rows());
        let from_end = node("Shape", &["x"], "s", vec![attr::int("start", -3)]);
        assert_eq!(provenance(vec![from_end], vec![], "s").head[0], Rows);
        let unknown_rank = node("Shape", &["y"], "s", vec![]);
        let p = provenance(vec![unknown_rank], vec![], "s");
        assert!(p.first_follows_rows() && !p.later_entries_read_rows());
    }

    #[test]
    fn products_with_the_rows_follow_them_and_quotients_do_not() {
        let nodes = |op: &str| {
            vec![
                node("Shape", &["x"], "s", vec![]),
                node("Gather", &["s", "zero"], "n", vec![]),
                node("Gather", &["s", "one"], "l", vec![]),
                node(op, &["n", "l"], "m", vec![]),
                node("Unsqueeze", &["m", "axes"], "u", vec![]),
                node("Concat", &["u", "minus_one"], "target", vec![attr::int("axis", 0)]),
            ]
        };
        let consts = || {
            vec![
                tensor_i64("zero", &[], &[0]),
                tensor_i64("one", &[], &[1]),
                tensor_i64("axes", &[1], &[0]),
                tensor_i64("minus_one", &[1], &[-1]),
            ]
        };
        let product = provenance(nodes("Mul"), consts(), "target");
        assert_eq!(product, exactly(&[Rows, Step(Some(-1))]));
        assert!(product.first_follows_rows() && !product.later_entries_read_rows());
        let quotient = provenance(nodes("Div"), consts(), "target");
        assert!(!quotient.first_follows_rows() && quotient.reads_rows());
        let sum = provenance(nodes("Add"), consts(), "target");
        assert_eq!(sum.head[0], Mixed);
    }

    #[test]
    fn a_later_entry_that_reads_the_rows_is_seen() {
        let nodes = vec![
            node("Shape", &["x"], "s", vec![]),
            node("Slice", &["s", "zero", "one"], "rows", vec![]),
            node("Concat", &["rows", "rows"], "target", vec![attr::int("axis", 0)]),
            node("Gather", &["s", "tail"], "step", vec![]),
            node("Concat", &["rows", "step"], "fine", vec![attr::int("axis", 0)]),
        ];
        let consts =
            || vec![tensor_i64("zero", &[1], &[0]), tensor_i64("one", &[1], &[1]), tensor_i64("tail", &[2], &[-2, -1])];
        let target = provenance(nodes.clone(), consts(), "target");
        assert!(target.first_follows_rows() && target.later_entries_read_rows());
        let fine = provenance(nodes, consts(), "fine");
        assert_eq!(fine, exactly(&[Rows, Step(None), Step(None)]));
    }

    #[test]
    fn a_float_product_with_the_rows_is_not_t_times_the_steps() {
        let nodes = vec![
            node("Shape", &["x"], "s", vec![]),
            node("Gather", &["s", "first"], "n", vec![]),
            node("Cast", &["n"], "f", vec![attr::int("to", 1)]),
            node("Mul", &["f", "half"], "h", vec![]),
            node("Cast", &["h"], "i", vec![attr::int("to", 7)]),
            node("Concat", &["i", "minus_one"], "target", vec![attr::int("axis", 0)]),
        ];
        let consts = vec![
            tensor_i64("first", &[1], &[0]),
            gn_onnx::data::tensor_f32("half", &[1], &[0.5]),
            tensor_i64("minus_one", &[1], &[-1]),
        ];
        let target = provenance(nodes, consts, "target");
        assert_eq!(target, exactly(&[Mixed, Step(Some(-1))]));
        assert!(!target.first_follows_rows());
    }

    #[test]
    fn only_vectors_are_followed_by_position() {
        // Gather with 2-D indices [[1, 0]] then row 0: [L, T·a], not two entries of one row.
        let nodes = vec![
            node("Shape", &["x"], "s", vec![]),
            node("Gather", &["s", "pairs"], "g", vec![]),
            node("Gather", &["g", "zero"], "h", vec![]),
            node("Concat", &["minus_one", "h"], "target", vec![attr::int("axis", 0)]),
        ];
        let consts = vec![
            tensor_i64("pairs", &[1, 2], &[1, 0]),
            tensor_i64("zero", &[], &[0]),
            tensor_i64("minus_one", &[1], &[-1]),
        ];
        assert!(provenance(nodes, consts, "target").later_entries_read_rows());
    }

    #[test]
    fn a_computed_slice_step_or_an_end_past_an_unknown_rank_is_not_trusted() {
        let nodes = vec![
            node("Shape", &["x"], "s", vec![]),
            node("Neg", &["minus_one"], "one", vec![]),
            node("Slice", &["s", "minus_one", "lowest", "zero", "one"], "reversed", vec![]),
            node("Shape", &["y"], "t", vec![attr::int("end", 3)]),
            node("Gather", &["t", "second_last"], "g", vec![]),
        ];
        let consts = vec![
            tensor_i64("minus_one", &[1], &[-1]),
            tensor_i64("lowest", &[1], &[i64::MIN]),
            tensor_i64("zero", &[1], &[0]),
            tensor_i64("second_last", &[], &[-2]),
        ];
        // Reversed with a computed step −1: [L, T·a] read as a step-1 slice would be empty.
        assert!(provenance(nodes.clone(), consts.clone(), "reversed").reads_rows());
        // `end` 3 on a tensor of rank 2: index −2 is axis 0.
        assert_eq!(provenance(nodes, consts, "g"), exactly(&[Mixed]));
    }

    #[test]
    fn unknown_ops_and_lengths_are_taken_at_their_worst() {
        let nodes = vec![
            node("Shape", &["y"], "s", vec![]),
            node("Concat", &["s", "minus_one"], "target", vec![attr::int("axis", 0)]),
            node("ReduceProd", &["s"], "p", vec![]),
            node("Gather", &["s", "last"], "g", vec![]),
        ];
        let consts = || vec![tensor_i64("minus_one", &[1], &[-1]), tensor_i64("last", &[], &[-1])];
        // A shape of unknown rank: its first entry is the rows, the rest the step's.
        let target = provenance(nodes.clone(), consts(), "target");
        assert!(target.first_follows_rows() && !target.later_entries_read_rows());
        assert!(provenance(nodes.clone(), consts(), "p").later_entries_read_rows());
        // Counted from the end of a vector of unknown length: may be axis 0.
        assert_eq!(provenance(nodes, consts(), "g"), exactly(&[Mixed]));
        assert!(ShapeRows::default().of("never_visited").reads_rows());
    }
}
