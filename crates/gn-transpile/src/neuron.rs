//! The spiking neurons of docs/design.md §2, defined once: their parameters, the IR node that
//! stands for a spiking layer between passes, and its expansion into standard ONNX ops.
//!
//! IF neuron (threshold θ): `v(0) = θ/2; p = v + x; s = [p ≥ θ]; v = p − s·θ; out = s·θ`.
//!
//! Group Neuron of τ members (Algorithm 1, eqs. 8-11): member thresholds θ_i = i·θ/τ,
//! θ_GN = θ/τ, `v(0) = θ_GN/2; p = v + x; c = Σ_i [p ≥ θ_i] = clip(⌊p/θ_GN⌋, 0, τ);
//! v = p − c·θ_GN; out = c·θ_GN`.
//!
//! IF is the GN with τ = 1, so both expand through the same code. The membrane is kept
//! in units of θ_GN (u = v/θ_GN), which is the same neuron with one division per layer
//! instead of one per step, and makes the T = 1, τ = L case round exactly as QCFS does:
//!
//! ```text
//!   q = Div(x, θ_GN)                       (once, over all steps)
//!   step t:  p_t = Add(u_{t-1}, q_t) ─► Floor ─► Clip(0, τ) = c_t      u_0 = 1/2
//!            u_t = Sub(p_t, c_t)
//!   out = Mul(Concat(c_1 … c_T), θ_GN)     (once, over all steps)
//! ```
//!
//! A layer calibrated per channel has a threshold θ·θ_c per channel c: the same
//! expansion with the unit `θ_GN · θ_c`, a `[1, C, 1, …]` constant.

use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::opset::Opset;
use crate::DOMAIN;

// The attribute names of a spiking-layer node: written by `NeuronNode::to_node` and the
// lower pass, read by `NeuronNode::parse`, `inspect`, the kernels and the function bodies.
pub use gn_neuron::attr as attr_name;

/// The neuron model of the spiking layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum NeuronKind {
    /// Group Neurons of τ members (the default).
    #[serde(rename = "GN")]
    Gn,
    /// Integrate-and-fire: the traditional conversion.
    #[serde(rename = "IF")]
    If,
}

impl NeuronKind {
    /// Both kinds, for op registries.
    pub const ALL: [NeuronKind; 2] = [NeuronKind::If, NeuronKind::Gn];

    /// The op type of the spiking-layer node in the `gn.transpile` domain.
    pub fn op_type(self) -> &'static str {
        op_type(self, false, false)
    }

    /// The kind, the direct-current flag and the per-channel flag of the op type `op`, if
    /// it is one of `NeuronNode::op_type`'s.
    pub fn from_op_type(op: &str) -> Option<(NeuronKind, bool, bool)> {
        NeuronKind::ALL.into_iter().find_map(|kind| {
            VARIANTS
                .into_iter()
                .find(|&(direct, per_channel)| op_type(kind, direct, per_channel) == op)
                .map(|(direct, per_channel)| (kind, direct, per_channel))
        })
    }

    /// The value written for it in metadata and accepted by `--neuron`: `gn` or `if`.
    pub fn key(self) -> &'static str {
        match self {
            NeuronKind::If => "if",
            NeuronKind::Gn => "gn",
        }
    }

    /// The label of a curve or table row: `IF`, or `GN τ=4` with the members per group.
    pub fn label(self, tau: u32) -> String {
        match self {
            NeuronKind::If => "IF".into(),
            NeuronKind::Gn => format!("GN τ={tau}"),
        }
    }

    /// The kind whose [`key`](NeuronKind::key) is `key`, if any.
    pub fn from_key(key: &str) -> Option<NeuronKind> {
        NeuronKind::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// `IF` or `GN`, as tables and reports label the curves.
impl std::fmt::Display for NeuronKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NeuronKind::If => "IF",
            NeuronKind::Gn => "GN",
        })
    }
}

/// The op type of a spiking-layer node: `GroupNeuron` or `IFNeuron`, then `PerChannel`
/// when its threshold is scaled per channel by a second input, then `Direct` when its
/// current is the same at every step (custom-op form only); the names are gn-neuron's.
pub fn op_type(kind: NeuronKind, direct: bool, per_channel: bool) -> &'static str {
    gn_neuron::OpType::new(kind == NeuronKind::Gn, direct, per_channel).name()
}

/// The variants of each neuron kind's op, as (direct, per channel), the plain op first.
pub const VARIANTS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// Every op type of the `gn.transpile` domain.
#[cfg(any(feature = "tract", test))]
pub fn op_types() -> impl Iterator<Item = &'static str> {
    NeuronKind::ALL
        .into_iter()
        .flat_map(|kind| VARIANTS.map(|(direct, per_channel)| op_type(kind, direct, per_channel)))
}

/// The parameters of one spiking layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neuron {
    pub kind: NeuronKind,
    /// The site's threshold θ (the QCFS threshold).
    pub theta: f64,
    /// Members per group (1 for IF).
    pub tau: u32,
    /// The site's QCFS level L (informational).
    pub levels: u32,
}

impl Neuron {
    /// The firing unit: θ_GN = θ/τ (θ for IF).
    pub fn theta_gn(&self) -> f64 {
        self.theta / self.tau as f64
    }

    /// The initial membrane potential, θ_GN/2.
    pub fn v_init(&self) -> f64 {
        self.theta_gn() / 2.0
    }
}

/// The node that stands for a spiking layer: a `gn.transpile` `IFNeuron` or
/// `GroupNeuron` with the neuron's parameters as attributes ([`attr_name`]) and, once
/// the lower pass has run, the T steps it runs. A layer whose threshold differs per
/// channel (calibrated with `--per-channel`) is an `…PerChannel` op with a second input:
/// the factor of each channel's threshold, of shape `[1, C, 1, …]` (the current's rank),
/// so that channel c fires in units of `θ_GN · θ_c`. Convert and group write it, lower sets
/// `timesteps`, emit expands or keeps it, and `inspect` and the tract kernels read it:
/// [`NeuronNode::to_node`] and [`NeuronNode::parse`] are its only writer and reader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeuronNode {
    pub neuron: Neuron,
    /// T, set by the lower pass.
    pub timesteps: Option<usize>,
    /// The current is the same at every step: the node reads `[N, …]` and writes
    /// `[T·N, …]` (custom-op form only).
    pub direct: bool,
    /// The node's second input scales its threshold per channel.
    pub per_channel: bool,
}

impl NeuronNode {
    /// The node reading `input` and writing `output`.
    pub fn to_node(self, name: &str, input: &str, output: &str) -> NodeProto {
        debug_assert!(!self.per_channel, "a per-channel layer reads its thresholds too (to_node_reading)");
        self.to_node_reading(name, &[input], output)
    }

    /// The node reading `inputs` (the current, and the per-channel thresholds of a
    /// per-channel layer) and writing `output`.
    pub fn to_node_reading(self, name: &str, inputs: &[&str], output: &str) -> NodeProto {
        let n = &self.neuron;
        let mut attributes = vec![
            attr::float(attr_name::THETA, n.theta as f32),
            attr::int(attr_name::LEVELS, n.levels as i64),
            attr::float(attr_name::V_INIT, n.v_init() as f32),
        ];
        if n.kind == NeuronKind::Gn {
            attributes.push(attr::int(attr_name::TAU, n.tau as i64));
            attributes.push(attr::float(attr_name::THETA_GN, n.theta_gn() as f32));
        }
        if let Some(t) = self.timesteps {
            attributes.push(attr::int(attr_name::TIMESTEPS, t as i64));
        }
        NodeProto {
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            name: Some(name.into()),
            op_type: Some(self.op_type().into()),
            domain: Some(DOMAIN.into()),
            attribute: attributes,
            ..Default::default()
        }
    }

    /// The node's op type (see [`op_type`]).
    pub fn op_type(&self) -> &'static str {
        op_type(self.neuron.kind, self.direct, self.per_channel)
    }

    /// `node` (a spiking-layer node) rewritten for this layer under `name`: the same
    /// inputs and output, this layer's op type and attributes.
    pub fn rewrite(&self, node: &NodeProto, name: &str) -> NodeProto {
        let inputs: Vec<&str> = node.input.iter().map(String::as_str).collect();
        self.to_node_reading(name, &inputs, node.output.first().map_or("", String::as_str))
    }

    /// Sets (or replaces) the `timesteps` attribute of a neuron node.
    pub fn set_timesteps(node: &mut NodeProto, timesteps: usize) {
        node.attribute.retain(|a| a.name() != attr_name::TIMESTEPS);
        node.attribute.push(attr::int(attr_name::TIMESTEPS, timesteps as i64));
    }

    /// The spiking layer `node` stands for, if it is a well-formed one (see [`NeuronNode::parse`]).
    pub fn from_node(node: &NodeProto) -> Option<NeuronNode> {
        NeuronNode::parse(node).ok().flatten()
    }

    /// Reads a node of the `gn.transpile` domain (one read from a model file may be
    /// crafted): a known op, one input and one output, and attributes in range and
    /// consistent with each other. `Ok(None)` for nodes of other domains.
    pub fn parse(node: &NodeProto) -> Result<Option<NeuronNode>, String> {
        if node.domain() != DOMAIN {
            return Ok(None);
        }
        let Some((kind, direct, per_channel)) = NeuronKind::from_op_type(node.op_type()) else {
            return Err(format!("{DOMAIN} has no op '{}'", node.op_type()));
        };
        let inputs = 1 + per_channel as usize;
        if node.input.len() != inputs
            || node.input.iter().any(String::is_empty)
            || node.output.len() != 1
            || node.output[0].is_empty()
        {
            return Err(format!(
                "{} has {inputs} input{} and one output, this node has {} and {}",
                node.op_type(),
                if per_channel { "s (the current and the thresholds per channel)" } else { "" },
                node.input.len(),
                node.output.len()
            ));
        }
        let layer = NeuronNode::from_attributes(kind, |a| attr::get_float(node, a), |a| attr::get_int(node, a))?;
        if direct && layer.timesteps.is_none() {
            return Err(format!("{} has no 'timesteps' attribute", node.op_type()));
        }
        Ok(Some(NeuronNode { direct, per_channel, ..layer }))
    }

    /// Reads the node's attributes through `float` and `int` (which return `None` for a
    /// missing attribute) and checks them. The tract kernels read tract's node type
    /// through this too.
    pub fn from_attributes(
        kind: NeuronKind,
        float: impl Fn(&str) -> Option<f32>,
        int: impl Fn(&str) -> Option<i64>,
    ) -> Result<NeuronNode, String> {
        use gn_neuron::{MAX_TAU, MAX_TIMESTEPS};
        let theta = float(attr_name::THETA).ok_or("has no 'theta' attribute")?;
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("θ = {theta} is not a positive finite threshold"));
        }
        let levels = int(attr_name::LEVELS).unwrap_or(0);
        if !(0..=u32::MAX as i64).contains(&levels) {
            return Err(format!("levels = {levels} is out of range"));
        }
        let tau = match kind {
            NeuronKind::If => 1,
            NeuronKind::Gn => {
                let tau = int(attr_name::TAU).ok_or("has no 'tau' attribute")?;
                if !(1..=MAX_TAU as i64).contains(&tau) {
                    return Err(format!("τ = {tau} is out of range (1 to {MAX_TAU})"));
                }
                tau
            }
        };
        let timesteps = match int(attr_name::TIMESTEPS) {
            Some(t) if !(1..=MAX_TIMESTEPS as i64).contains(&t) => {
                return Err(format!("timesteps = {t} is out of range (1 to {MAX_TIMESTEPS})"))
            }
            t => t.map(|t| t as usize),
        };
        let neuron = Neuron { kind, theta: theta as f64, tau: tau as u32, levels: levels as u32 };
        if !(neuron.theta_gn() as f32).is_normal() {
            return Err(format!(
                "θ_GN = θ/τ = {:e} is not a normal float32: the kernels would divide by it",
                neuron.theta_gn()
            ));
        }
        // v(0) and θ_GN are written for runtimes that read the node (the function body,
        // kernels); they must be what θ and τ make them.
        let derived = [(attr_name::V_INIT, neuron.v_init() as f32), (attr_name::THETA_GN, neuron.theta_gn() as f32)];
        for (name, value) in derived {
            match float(name) {
                Some(v) if !v.is_finite() => return Err(format!("'{name}' is not finite")),
                // Written as float32 from θ before θ itself was rounded to float32.
                Some(v) if (v - value).abs() > 4.0 * f32::EPSILON * value.abs() => {
                    return Err(format!(
                        "'{name}' = {v} disagrees with θ = {theta} and τ = {tau}, which make it {value}"
                    ))
                }
                None if name == attr_name::V_INIT || kind == NeuronKind::Gn => {
                    return Err(format!("has no '{name}' attribute"))
                }
                _ => {}
            }
        }
        Ok(NeuronNode { neuron, timesteps, direct: false, per_channel: false })
    }
}

/// Where a spiking layer's input current comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// The same `[N, …]` tensor at every step (a time-invariant input).
    Constant,
    /// One `[N, …]` slice per step, folded into a `[T·N, …]` tensor.
    Folded,
}

/// Where an expansion takes the neuron's parameters from.
#[derive(Debug, Clone, Copy)]
pub enum Params<'a> {
    /// Literal values, as initializers of the graph (the standard emission).
    Inline(&'a Neuron),
    /// The calling node's attributes, by reference (the body of a model-local function).
    Attributes(NeuronKind),
}

/// The attributes a spiking-layer node carries, in the order they are written.
pub fn attribute_names(kind: NeuronKind) -> &'static [&'static str] {
    gn_neuron::OpType::new(kind == NeuronKind::Gn, false, false).attributes()
}

/// The scalars of the expansion: θ_GN, τ, 0 and the initial membrane u(0) = v(0)/θ_GN.
struct Scalars {
    theta_gn: String,
    tau: String,
    zero: String,
    u_init: String,
}

fn float_constant(g: &mut Graph, name: &str, suffix: &str, value: f32) -> String {
    g.add_node(name, suffix, "Constant", &[], vec![attr::float("value_float", value)])
}

fn scalars(g: &mut Graph, name: &str, params: Params) -> Scalars {
    use gn_onnx::proto::attribute_proto::AttributeType;
    match params {
        Params::Inline(n) => {
            let theta_gn = n.theta_gn() as f32;
            Scalars {
                theta_gn: g.add_initializer_f32(&format!("{name}.theta_gn"), &[], &[theta_gn]),
                zero: g.add_initializer_f32(&format!("{name}.zero"), &[], &[0.0]),
                tau: g.add_initializer_f32(&format!("{name}.tau"), &[], &[n.tau as f32]),
                u_init: g.add_initializer_f32(&format!("{name}.u_init"), &[], &[n.v_init() as f32 / theta_gn]),
            }
        }
        Params::Attributes(kind) => {
            let unit = if kind == NeuronKind::Gn { attr_name::THETA_GN } else { attr_name::THETA };
            let reference = attr::reference("value_float", unit, AttributeType::Float);
            let theta_gn = g.add_node(name, "theta_gn", "Constant", &[], vec![reference]);
            let tau = match kind {
                NeuronKind::Gn => {
                    let reference = attr::reference("value_int", attr_name::TAU, AttributeType::Int);
                    let t = g.add_node(name, "tau_int", "Constant", &[], vec![reference]);
                    g.add_node(name, "tau", "Cast", &[&t], vec![attr::int("to", 1)])
                }
                NeuronKind::If => float_constant(g, name, "tau", 1.0),
            };
            let reference = attr::reference("value_float", attr_name::V_INIT, AttributeType::Float);
            let v_init = g.add_node(name, "v_init", "Constant", &[], vec![reference]);
            Scalars {
                u_init: g.add_node(name, "u_init", "Div", &[&v_init, &theta_gn], vec![]),
                theta_gn,
                tau,
                zero: float_constant(g, name, "zero", 0.0),
            }
        }
    }
}

/// One spiking layer to expand: what [`expand_layer`] writes.
#[derive(Debug, Clone, Copy)]
pub struct Expansion<'a> {
    /// The layer's name, the prefix of every node and initializer written.
    pub name: &'a str,
    pub params: Params<'a>,
    /// The input current's value.
    pub x: &'a str,
    pub current: Current,
    pub timesteps: usize,
    /// The value the spikes (times θ_GN) are written to: `[T·N, …]`, step-major.
    pub output: &'a str,
    /// The per-channel factors of θ (`[1, C, 1, …]`) of a per-channel layer: its unit is
    /// then `θ_GN · θ_c`, one Mul of two constants.
    pub channels: Option<&'a str>,
    /// The membrane as state, for a graph that runs one step per call: the membrane is
    /// read from `.0` instead of starting at u(0), and the membrane after the last step
    /// is written to `.1` (in units of θ_GN, like u).
    pub state: Option<(&'a str, &'a str)>,
}

/// Appends the standard-op expansion of one spiking layer to `g`. This is the one
/// definition of the neuron in ONNX ops: the standard emission inlines it, the custom-op
/// emission uses it as the body of the op's model-local function, and the stateful
/// emission runs one step of it on a membrane held as state.
pub fn expand_layer(g: &mut Graph, opset: Opset, layer: &Expansion) {
    let Expansion { name, params, x, current, timesteps, output, channels, state } = *layer;
    let Scalars { theta_gn, tau, zero, u_init } = scalars(g, name, params);
    // u(0) is in units, 1/2 for every channel; the unit itself is per channel.
    let theta_gn = match channels {
        Some(c) => g.add_node(name, "unit", "Mul", &[&theta_gn, c], vec![]),
        None => theta_gn,
    };
    let q = g.add_node(name, "scale", "Div", &[x, &theta_gn], vec![]);
    let folded = current == Current::Folded && timesteps > 1;
    let steps: Vec<String> = if folded {
        // [T·N, …] → [T, N·…] so that the split runs along a dimension of known size T.
        let rows = [timesteps as i64, -1];
        let rows = match params {
            Params::Inline(_) => g.add_initializer_i64(&format!("{name}.rows"), &[2], &rows),
            Params::Attributes(_) => g.add_node(name, "rows", "Constant", &[], vec![attr::ints("value_ints", &rows)]),
        };
        let r = g.add_node(name, "steps", "Reshape", &[&q, &rows], vec![]);
        opset.split(g, name, "split", &r, timesteps)
    } else {
        vec![q.clone(); timesteps]
    };
    let mut membrane = match state {
        Some((v, _)) => v.to_string(),
        None => u_init,
    };
    let mut counts = Vec::with_capacity(timesteps);
    for (t, q_t) in steps.iter().enumerate() {
        let step = format!("t{}", t + 1);
        let p = g.add_node(name, &format!("{step}.charge"), "Add", &[&membrane, q_t], vec![]);
        let f = g.add_node(name, &format!("{step}.floor"), "Floor", &[&p], vec![]);
        let c = opset.clip(g, name, &format!("{step}.spikes"), &f, &zero, &tau);
        if t + 1 < timesteps || state.is_some() {
            membrane = g.add_node(name, &format!("{step}.reset"), "Sub", &[&p, &c], vec![]);
        }
        counts.push(c);
    }
    if let Some((_, next)) = state {
        if let Some(reset) = g.proto.node.last_mut() {
            reset.output[0] = next.to_string();
        }
    }
    let refs: Vec<&str> = counts.iter().map(String::as_str).collect();
    let joined = if timesteps == 1 {
        counts[0].clone()
    } else {
        let j = g.add_node(name, "join", "Concat", &refs, vec![attr::int("axis", 0)]);
        if folded {
            let shape = g.add_node(name, "shape", "Shape", &[x], vec![]);
            g.add_node(name, "unfold", "Reshape", &[&j, &shape], vec![])
        } else {
            j
        }
    };
    g.add_node(name, "out", "Mul", &[&joined, &theta_gn], vec![]);
    if let Some(last) = g.proto.node.last_mut() {
        last.output[0] = output.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_format_round_trips_for_awkward_thresholds() {
        for theta in [0.1, 1.0 / 3.0, 2.6457513, 1e-3, 123.456] {
            for (kind, tau, direct, per_channel) in [
                (NeuronKind::If, 1, false, false),
                (NeuronKind::Gn, 3, true, false),
                (NeuronKind::Gn, 7, false, true),
                (NeuronKind::If, 1, true, true),
            ] {
                let layer = NeuronNode {
                    neuron: Neuron { kind, theta, tau, levels: 8 },
                    timesteps: Some(5),
                    direct,
                    per_channel,
                };
                let inputs: &[&str] = if per_channel { &["x", "theta_c"] } else { &["x"] };
                let node = layer.to_node_reading("n", inputs, "y");
                let read = NeuronNode::parse(&node).unwrap().unwrap();
                assert_eq!((read.neuron.kind, read.direct, read.per_channel), (kind, direct, per_channel));
                assert_eq!(read.neuron.tau, tau);
                assert_eq!(read.neuron.theta, theta as f32 as f64);
                assert_eq!(read.timesteps, Some(5));
            }
        }
        // Every op type names one (kind, direct, per-channel) and back.
        let all: Vec<&str> = op_types().collect();
        assert_eq!(all.len(), 8);
        for op in all {
            let (kind, direct, per_channel) = NeuronKind::from_op_type(op).unwrap();
            assert_eq!(op_type(kind, direct, per_channel), op);
        }
    }

    #[test]
    fn a_per_channel_node_reads_its_thresholds() {
        let neuron = Neuron { kind: NeuronKind::Gn, theta: 1.0, tau: 4, levels: 0 };
        let layer = NeuronNode { neuron, timesteps: Some(2), direct: false, per_channel: true };
        let node = layer.to_node_reading("n", &["x"], "y");
        assert_eq!(node.op_type(), "GroupNeuronPerChannel");
        let err = NeuronNode::parse(&node).unwrap_err();
        assert!(err.contains("GroupNeuronPerChannel has 2 inputs"), "{err}");
        // A layer without it takes no second input either.
        let plain = NeuronNode { per_channel: false, ..layer }.to_node_reading("n", &["x", "t"], "y");
        assert!(NeuronNode::parse(&plain).unwrap_err().contains("has 1 input and one output"));
    }

    #[test]
    fn a_direct_node_without_timesteps_is_refused() {
        let neuron = Neuron { kind: NeuronKind::Gn, theta: 2.0, tau: 4, levels: 8 };
        let node = NeuronNode { neuron, timesteps: None, direct: true, per_channel: false }.to_node("n", "x", "y");
        assert_eq!(node.op_type(), "GroupNeuronDirect");
        let err = NeuronNode::parse(&node).unwrap_err();
        assert!(err.contains("GroupNeuronDirect has no 'timesteps'"), "{err}");
    }

    #[test]
    fn attributes_that_contradict_theta_and_tau_are_refused() {
        let layer = NeuronNode {
            neuron: Neuron { kind: NeuronKind::Gn, theta: 2.0, tau: 4, levels: 8 },
            timesteps: None,
            direct: false,
            per_channel: false,
        };
        let mut node = layer.to_node("n", "x", "y");
        for a in &mut node.attribute {
            if a.name() == attr_name::V_INIT {
                a.f = Some(0.3);
            }
        }
        let err = NeuronNode::parse(&node).unwrap_err();
        assert!(err.contains("'v_init' = 0.3 disagrees"), "{err}");
        node.attribute.retain(|a| a.name() != attr_name::THETA_GN);
        assert!(NeuronNode::from_node(&node).is_none());
    }

    #[test]
    fn set_timesteps_replaces_the_attribute() {
        let layer = NeuronNode {
            neuron: Neuron { kind: NeuronKind::If, theta: 1.0, tau: 1, levels: 2 },
            timesteps: Some(2),
            direct: false,
            per_channel: false,
        };
        let mut node = layer.to_node("n", "x", "y");
        NeuronNode::set_timesteps(&mut node, 7);
        assert_eq!(node.attribute.iter().filter(|a| a.name() == attr_name::TIMESTEPS).count(), 1);
        assert_eq!(NeuronNode::from_node(&node).unwrap().timesteps, Some(7));
    }
}
