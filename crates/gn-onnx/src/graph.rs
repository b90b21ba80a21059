//! A graph IR over `GraphProto`: nodes, values, producers and consumers, constants,
//! topological order, deterministic node naming, dead-node removal and a plain-text
//! rendering for snapshot tests.
//!
//! Passes never edit a node while matching: they read the graph and return a
//! [`Patch`](crate::patch::Patch) (add nodes, replace or remove nodes, redirect uses of a
//! value), which the pipeline applies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::data::{tensor_to_f64, TensorError};
use crate::proto::tensor_proto::DataType;
use crate::proto::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto, TensorProto};
pub use crate::topology::{topo_order_of, GraphError};

/// A constant's value in f64, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstTensor {
    pub dims: Vec<i64>,
    pub values: Vec<f64>,
}

impl ConstTensor {
    /// The single value of a rank-0 tensor or a tensor of one element.
    pub fn scalar(&self) -> Option<f64> {
        (self.values.len() == 1).then(|| self.values[0])
    }
}

/// The graph being transformed. Owns the `GraphProto` fields; nodes stay in a `Vec`
/// and indices into it are only valid until the next mutation.
#[derive(Debug, Clone)]
pub struct Graph {
    pub proto: GraphProto,
    used_names: HashSet<String>,
}

impl Graph {
    pub fn new(proto: GraphProto) -> Self {
        let mut used_names = HashSet::new();
        for n in &proto.node {
            used_names.insert(n.name().to_string());
            used_names.extend(n.output.iter().cloned());
        }
        used_names.extend(proto.input.iter().map(|v| v.name().to_string()));
        used_names.extend(proto.initializer.iter().map(|t| t.name().to_string()));
        Graph { proto, used_names }
    }

    pub fn into_proto(self) -> GraphProto {
        self.proto
    }

    pub fn nodes(&self) -> &[NodeProto] {
        &self.proto.node
    }

    /// Output value name → index of the node producing it.
    pub fn producers(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.proto.node.iter().enumerate() {
            for o in &n.output {
                if !o.is_empty() {
                    m.insert(o.clone(), i);
                }
            }
        }
        m
    }

    /// Value name → indices of the nodes reading it (once per node).
    pub fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in self.proto.node.iter().enumerate() {
            for inp in &n.input {
                if inp.is_empty() {
                    continue;
                }
                let e = m.entry(inp.clone()).or_default();
                if e.last() != Some(&i) {
                    e.push(i);
                }
            }
        }
        m
    }

    /// Names of the graph outputs.
    pub fn output_names(&self) -> Vec<String> {
        self.proto.output.iter().map(|v| v.name().to_string()).collect()
    }

    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.proto.initializer.iter().find(|t| t.name() == name)
    }

    /// The value of a constant: an initializer (not overridable by a graph input) or
    /// the output of a `Constant` node.
    /// (One lookup; passes that look up many values use [`Graph::constants`].)
    pub fn constant(&self, name: &str) -> Option<Result<ConstTensor, TensorError>> {
        self.constants().get(name)
    }

    /// The value of a scalar constant (rank 0, or any rank with one element; any float
    /// or integer dtype), or `None` if `name` is not a constant scalar.
    pub fn scalar_constant(&self, name: &str) -> Option<f64> {
        self.constants().scalar(name)
    }

    /// Node indices in topological order, or the cycle found.
    pub fn topo_order(&self) -> Result<Vec<usize>, GraphError> {
        topo_order_of(&self.proto.node)
    }

    /// An index of the graph's constants, for many lookups in linear total time.
    pub fn constants(&self) -> Constants<'_> {
        Constants::new(&self.proto)
    }

    /// Checks that every node input and graph output has a source.
    pub fn check_sources(&self) -> Result<(), GraphError> {
        let mut known: HashSet<&str> = self.proto.input.iter().map(|v| v.name()).collect();
        known.extend(self.proto.initializer.iter().map(|t| t.name()));
        for n in &self.proto.node {
            known.extend(n.output.iter().map(String::as_str));
        }
        for n in &self.proto.node {
            for i in &n.input {
                if !i.is_empty() && !known.contains(i.as_str()) {
                    return Err(GraphError::MissingInput { node: n.name().to_string(), value: i.clone() });
                }
            }
        }
        for o in &self.proto.output {
            if !known.contains(o.name()) {
                return Err(GraphError::MissingOutput { value: o.name().to_string() });
            }
        }
        Ok(())
    }

    /// Sorts the nodes topologically (ONNX requires it of emitted graphs).
    pub fn sort(&mut self) -> Result<(), GraphError> {
        let order = self.topo_order()?;
        let mut nodes: Vec<Option<NodeProto>> = std::mem::take(&mut self.proto.node).into_iter().map(Some).collect();
        self.proto.node = order.into_iter().filter_map(|i| nodes[i].take()).collect();
        Ok(())
    }

    /// Marks every name `other` uses (or has handed out) as used here too.
    pub(crate) fn reserve_names_of(&mut self, other: &Graph) {
        self.used_names.extend(other.used_names.iter().cloned());
    }

    /// Marks `names` as used.
    pub(crate) fn reserve_names(&mut self, names: HashSet<String>) {
        if self.used_names.is_empty() {
            self.used_names = names;
        } else {
            self.used_names.extend(names);
        }
    }

    /// The proto and the names used or handed out.
    pub(crate) fn into_parts(self) -> (GraphProto, HashSet<String>) {
        (self.proto, self.used_names)
    }

    /// A fresh name `{base}` or `{base}.{k}` not used by any node or value yet.
    pub fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used_names.contains(&name) {
            name = format!("{base}.{k}");
            k += 1;
        }
        self.used_names.insert(name.clone());
        name
    }

    /// Appends a node named `{source}.{suffix}` (made unique) with one output named
    /// like the node. Returns the output value's name.
    pub fn add_node(
        &mut self,
        source: &str,
        suffix: &str,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.add_node_multi(source, suffix, op_type, inputs, 1, attributes).remove(0)
    }

    /// Appends a node with `n_outputs` outputs named `{node}.out{i}` (`{node}` alone
    /// when there is one). Returns the output names.
    pub fn add_node_multi(
        &mut self,
        source: &str,
        suffix: &str,
        op_type: &str,
        inputs: &[&str],
        n_outputs: usize,
        attributes: Vec<AttributeProto>,
    ) -> Vec<String> {
        let name = self.unique_name(&format!("{source}.{suffix}"));
        let outputs: Vec<String> = if n_outputs == 1 {
            vec![name.clone()]
        } else {
            (0..n_outputs).map(|i| self.unique_name(&format!("{name}.out{i}"))).collect()
        };
        self.proto.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name: Some(name),
            op_type: Some(op_type.to_string()),
            attribute: attributes,
            ..Default::default()
        });
        outputs
    }

    /// Adds a float32 initializer named `{base}` (made unique) and returns its name.
    pub fn add_initializer_f32(&mut self, base: &str, dims: &[i64], values: &[f32]) -> String {
        let name = self.unique_name(base);
        self.proto.initializer.push(crate::data::tensor_f32(&name, dims, values));
        name
    }

    /// Adds an int64 initializer named `{base}` (made unique) and returns its name.
    pub fn add_initializer_i64(&mut self, base: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.unique_name(base);
        self.proto.initializer.push(crate::data::tensor_i64(&name, dims, values));
        name
    }

    /// Replaces every read of value `from` (by nodes and graph outputs) with `to`.
    pub fn redirect(&mut self, from: &str, to: &str) {
        for n in &mut self.proto.node {
            for i in &mut n.input {
                if i == from {
                    *i = to.to_string();
                }
            }
        }
    }

    /// Removes nodes whose outputs reach no graph output, and initializers nobody reads.
    /// Returns the number of nodes removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let producers = self.producers();
        let mut live = vec![false; self.proto.node.len()];
        let mut needed: Vec<String> = self.output_names();
        let mut seen: HashSet<String> = needed.iter().cloned().collect();
        while let Some(v) = needed.pop() {
            if let Some(&p) = producers.get(&v) {
                if !live[p] {
                    live[p] = true;
                    for i in &self.proto.node[p].input {
                        if !i.is_empty() && seen.insert(i.clone()) {
                            needed.push(i.clone());
                        }
                    }
                    for a in &self.proto.node[p].attribute {
                        // Values captured by subgraphs stay alive.
                        for g in a.g.iter().chain(a.graphs.iter()) {
                            for sub in &g.node {
                                for i in &sub.input {
                                    if seen.insert(i.clone()) {
                                        needed.push(i.clone());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let before = self.proto.node.len();
        let mut keep = live.into_iter();
        self.proto.node.retain(|_| keep.next().unwrap_or(false));
        self.proto.initializer.retain(|t| seen.contains(t.name()));
        let read: HashSet<&str> = seen.iter().map(String::as_str).collect();
        self.proto.value_info.retain(|v| read.contains(v.name()));
        before - self.proto.node.len()
    }

    /// One line per node, `name: Op(inputs) -> outputs {attributes}`, in node order;
    /// then the graph outputs. Initializers are shown by name and shape.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for v in &self.proto.input {
            let _ = writeln!(s, "input {}", v.name());
        }
        let shapes: BTreeMap<&str, &[i64]> =
            self.proto.initializer.iter().map(|t| (t.name(), t.dims.as_slice())).collect();
        for n in &self.proto.node {
            let inputs: Vec<String> = n
                .input
                .iter()
                .map(|i| match shapes.get(i.as_str()) {
                    Some(dims) => format!("{i}{dims:?}"),
                    None => i.clone(),
                })
                .collect();
            let _ = write!(s, "{}: {}({}) -> {}", n.name(), op_label(n), inputs.join(", "), n.output.join(", "));
            let attrs: Vec<String> = n.attribute.iter().filter_map(render_attribute).collect();
            if !attrs.is_empty() {
                let _ = write!(s, " {{{}}}", attrs.join(", "));
            }
            s.push('\n');
        }
        for v in &self.proto.output {
            let _ = writeln!(s, "output {}", v.name());
        }
        s
    }
}

fn op_label(n: &NodeProto) -> String {
    match n.domain() {
        "" | "ai.onnx" => n.op_type().to_string(),
        d => format!("{d}::{}", n.op_type()),
    }
}

/// A model-local function rendered like a graph: a header line naming it, its inputs,
/// outputs and attributes, then its body one node per line (indented).
pub fn render_function(f: &crate::proto::FunctionProto) -> String {
    let mut s = format!(
        "function {}::{}({}) -> {} [{}]\n",
        f.domain(),
        f.name(),
        f.input.join(", "),
        f.output.join(", "),
        f.attribute.join(", ")
    );
    let body = Graph::new(GraphProto { node: f.node.clone(), ..Default::default() }).render();
    for line in body.lines() {
        let _ = writeln!(s, "  {line}");
    }
    s
}

fn render_attribute(a: &AttributeProto) -> Option<String> {
    if let Some(referenced) = &a.ref_attr_name {
        return Some(format!("{}=@{referenced}", a.name()));
    }
    let v = match a.r#type() {
        AttributeType::Float => format!("{}", a.f()),
        AttributeType::Int => format!("{}", a.i()),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Tensor => match &a.t {
            Some(t) => match tensor_to_f64(t) {
                Ok(v) if v.len() <= 8 => format!("{v:?}"),
                _ => format!("tensor{:?}", t.dims),
            },
            None => "tensor".into(),
        },
        _ => return Some(format!("{}=…", a.name())),
    };
    Some(format!("{}={v}", a.name()))
}

/// The op type of a node of the default ONNX domain, or `""` for a node of any other
/// domain: passes match standard ops through this, so a custom op that happens to be
/// called `Div` is never taken for ONNX's.
pub fn standard_op(n: &NodeProto) -> &str {
    match n.domain() {
        "" | "ai.onnx" => n.op_type(),
        _ => "",
    }
}

/// The most elements a constant read by [`Constants::small`] may have.
pub const SMALL_ELEMENTS: usize = 64;

/// The constants of a graph, indexed by value name: initializers (unless a graph input
/// of the same name overrides them) and `Constant` node outputs. Lookups are O(1), and
/// deciding whether a value is constant never converts its data.
pub struct Constants<'a> {
    inputs: HashSet<&'a str>,
    initializers: HashMap<&'a str, &'a TensorProto>,
    nodes: HashMap<&'a str, &'a NodeProto>,
}

impl<'a> Constants<'a> {
    fn new(g: &'a GraphProto) -> Self {
        let mut nodes = HashMap::new();
        for n in g.node.iter().filter(|n| n.op_type() == "Constant") {
            for o in &n.output {
                nodes.insert(o.as_str(), n);
            }
        }
        Constants {
            inputs: g.input.iter().map(|v| v.name()).collect(),
            initializers: g.initializer.iter().map(|t| (t.name(), t)).collect(),
            nodes,
        }
    }

    /// Whether `name` is a constant (without reading its data).
    pub fn is_constant(&self, name: &str) -> bool {
        !self.inputs.contains(name) && (self.initializers.contains_key(name) || self.nodes.contains_key(name))
    }

    /// The element type (`TensorProto.DataType`) of a constant, without reading its data.
    pub fn data_type(&self, name: &str) -> Option<i32> {
        if self.inputs.contains(name) {
            return None;
        }
        if let Some(t) = self.initializers.get(name) {
            return t.data_type;
        }
        let a = self.nodes.get(name)?.attribute.first()?;
        match a.name() {
            "value" => a.t.as_ref()?.data_type,
            "value_int" | "value_ints" => Some(DataType::Int64 as i32),
            "value_float" | "value_floats" => Some(DataType::Float as i32),
            _ => None,
        }
    }

    /// The dims of a constant, without reading its data.
    pub fn dims(&self, name: &str) -> Option<Vec<i64>> {
        if self.inputs.contains(name) {
            return None;
        }
        if let Some(t) = self.initializers.get(name) {
            return Some(t.dims.clone());
        }
        constant_node_value(self.nodes.get(name)?)?.ok().map(|c| c.dims)
    }

    /// The value of a constant, in f64.
    pub fn get(&self, name: &str) -> Option<Result<ConstTensor, TensorError>> {
        if self.inputs.contains(name) {
            return None;
        }
        if let Some(t) = self.initializers.get(name) {
            return Some(tensor_to_f64(t).map(|values| ConstTensor { dims: t.dims.clone(), values }));
        }
        constant_node_value(self.nodes.get(name)?)
    }

    /// The value of a small constant (a shape, axes, bounds, repeats): `None` for one of more
    /// than [`SMALL_ELEMENTS`] elements, which is refused before its data is read, so that a
    /// shape operand cannot make the converter expand a large tensor.
    pub fn small(&self, name: &str) -> Option<Result<ConstTensor, TensorError>> {
        if self.inputs.contains(name) {
            return None;
        }
        let count = match self.initializers.get(name) {
            Some(t) => crate::data::element_count(&t.dims),
            None => {
                let a = self.nodes.get(name)?.attribute.first()?;
                match a.name() {
                    "value" => crate::data::element_count(&a.t.as_ref()?.dims),
                    "value_floats" => Some(a.floats.len()),
                    "value_ints" => Some(a.ints.len()),
                    _ => Some(1),
                }
            }
        };
        if count.is_none_or(|c| c > SMALL_ELEMENTS) {
            return None;
        }
        self.get(name)
    }

    /// The value of a scalar constant (one element, any rank, float or integer). Tensors
    /// of more than one element are rejected before their data is read.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        if self.inputs.contains(name) {
            return None;
        }
        let tensor = match self.initializers.get(name) {
            Some(t) => Some(*t),
            None => self.nodes.get(name)?.attribute.first().and_then(|a| a.t.as_ref()),
        };
        if tensor.is_some_and(|t| crate::data::element_count(&t.dims) != Some(1)) {
            return None;
        }
        self.get(name)?.ok()?.scalar()
    }
}

/// The value of a `Constant` node's output, from whichever attribute holds it.
pub fn constant_node_value(node: &NodeProto) -> Option<Result<ConstTensor, TensorError>> {
    let a = node.attribute.first()?;
    Some(match a.name() {
        "value" => {
            let t = a.t.as_ref()?;
            tensor_to_f64(t).map(|values| ConstTensor { dims: t.dims.clone(), values })
        }
        "value_float" => Ok(ConstTensor { dims: vec![], values: vec![a.f() as f64] }),
        "value_floats" => {
            Ok(ConstTensor { dims: vec![a.floats.len() as i64], values: a.floats.iter().map(|&f| f as f64).collect() })
        }
        "value_int" => Ok(ConstTensor { dims: vec![], values: vec![a.i() as f64] }),
        "value_ints" => {
            Ok(ConstTensor { dims: vec![a.ints.len() as i64], values: a.ints.iter().map(|&i| i as f64).collect() })
        }
        _ => return None,
    })
}

/// Attribute constructors.
pub mod attr {
    use super::*;

    pub fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        }
    }
    pub fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(v),
            ..Default::default()
        }
    }
    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: v.to_vec(),
            ..Default::default()
        }
    }
    pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(t),
            ..Default::default()
        }
    }
    pub fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(v.as_bytes().to_vec().into()),
            ..Default::default()
        }
    }

    /// An attribute of a function-body node that takes the value of the calling node's
    /// attribute `referenced` (`ref_attr_name`), of type `ty`.
    pub fn reference(name: &str, referenced: &str, ty: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            ref_attr_name: Some(referenced.into()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    /// The value of an integer attribute of `node`, if present.
    pub fn get_int(node: &NodeProto, name: &str) -> Option<i64> {
        node.attribute.iter().find(|a| a.name() == name).map(|a| a.i())
    }
    /// The values of an integer-list attribute of `node`, if present.
    pub fn get_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
        node.attribute.iter().find(|a| a.name() == name).map(|a| a.ints.as_slice())
    }
    /// The value of a float attribute of `node`, if present.
    pub fn get_float(node: &NodeProto, name: &str) -> Option<f32> {
        node.attribute.iter().find(|a| a.name() == name).map(|a| a.f())
    }
    /// The value of a string attribute of `node` (lossy UTF-8), if present.
    pub fn get_string(node: &NodeProto, name: &str) -> Option<String> {
        node.attribute.iter().find(|a| a.name() == name).map(|a| String::from_utf8_lossy(a.s()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reads_only_constants_of_a_few_elements() {
        let g = GraphProto {
            initializer: vec![
                crate::data::tensor_i64("shape", &[SMALL_ELEMENTS as i64], &[1; SMALL_ELEMENTS]),
                crate::data::tensor_f32("weights", &[SMALL_ELEMENTS as i64 + 1], &[0.5; SMALL_ELEMENTS + 1]),
            ],
            node: vec![NodeProto {
                op_type: Some("Constant".into()),
                output: vec!["axes".into()],
                attribute: vec![attr::ints("value_ints", &[0, 1])],
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = Constants::new(&g);
        assert_eq!(c.small("shape").unwrap().unwrap().values.len(), SMALL_ELEMENTS);
        assert!(c.small("weights").is_none());
        assert!(c.get("weights").is_some());
        assert_eq!(c.small("axes").unwrap().unwrap().values, [0.0, 1.0]);
    }
}
