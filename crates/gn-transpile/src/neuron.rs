//! The spiking neurons of SPEC §2, defined once: their parameters, the IR node that
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

use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;
use gn_onnx::Graph;

use crate::DOMAIN;

/// Which neuron a spiking layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integrate-and-fire: the traditional conversion.
    If,
    /// Group Neuron of τ members.
    Group,
}

/// The parameters of one spiking layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neuron {
    pub kind: Kind,
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

    /// The op type of the IR node for this neuron.
    pub fn op_type(&self) -> &'static str {
        match self.kind {
            Kind::If => "IFNeuron",
            Kind::Group => "GroupNeuron",
        }
    }

    /// The IR node standing for a spiking layer reading `input` and writing `output`
    /// (in the ANN's layout, before time is lowered).
    pub fn node(&self, name: &str, input: &str, output: &str) -> NodeProto {
        let mut attributes = vec![
            attr::float("theta", self.theta as f32),
            attr::int("levels", self.levels as i64),
            attr::float("v_init", self.v_init() as f32),
        ];
        if self.kind == Kind::Group {
            attributes.push(attr::int("tau", self.tau as i64));
            attributes.push(attr::float("theta_gn", self.theta_gn() as f32));
        }
        NodeProto {
            input: vec![input.into()],
            output: vec![output.into()],
            name: Some(name.into()),
            op_type: Some(self.op_type().into()),
            domain: Some(DOMAIN.into()),
            attribute: attributes,
            ..Default::default()
        }
    }

    /// Reads the neuron back from an IR node, if it is one.
    pub fn from_node(node: &NodeProto) -> Option<Neuron> {
        if node.domain() != DOMAIN {
            return None;
        }
        let kind = match node.op_type() {
            "IFNeuron" => Kind::If,
            "GroupNeuron" => Kind::Group,
            _ => return None,
        };
        let theta = attr::get_float(node, "theta")? as f64;
        let levels = attr::get_int(node, "levels").unwrap_or(0) as u32;
        let tau = match kind {
            Kind::If => 1,
            Kind::Group => attr::get_int(node, "tau")? as u32,
        };
        Some(Neuron { kind, theta, tau, levels })
    }

    /// Short name used in node names: `if` or `gn`.
    pub fn tag(&self) -> &'static str {
        match self.kind {
            Kind::If => "if",
            Kind::Group => "gn",
        }
    }
}

/// The opset-dependent spelling of the few ops the expansion needs.
#[derive(Debug, Clone, Copy)]
pub struct Opset(pub i64);

impl Opset {
    /// `Clip(x, lo, hi)`: bounds as inputs from opset 11.
    pub fn clip(&self, g: &mut Graph, source: &str, suffix: &str, x: &str, lo: &str, hi: &str) -> String {
        g.add_node(source, suffix, "Clip", &[x, lo, hi], vec![])
    }

    /// `Split(x)` into `parts` equal slices along axis 0.
    pub fn split(&self, g: &mut Graph, source: &str, suffix: &str, x: &str, parts: usize) -> Vec<String> {
        let attrs = if self.0 >= 18 {
            vec![attr::int("axis", 0), attr::int("num_outputs", parts as i64)]
        } else {
            vec![attr::int("axis", 0)]
        };
        g.add_node_multi(source, suffix, "Split", &[x], parts, attrs)
    }

    /// `Unsqueeze(x)` or `Squeeze(x)` at axis 0: axes as an input from opset 13.
    pub fn squeeze0(&self, g: &mut Graph, source: &str, suffix: &str, op: &str, x: &str) -> String {
        if self.0 >= 13 {
            let axes = g.add_initializer_i64(&format!("{source}.{suffix}.axes"), &[1], &[0]);
            g.add_node(source, suffix, op, &[x, &axes], vec![])
        } else {
            g.add_node(source, suffix, op, &[x], vec![attr::ints("axes", &[0])])
        }
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

/// Appends the standard-op expansion of one spiking layer named `name` to `g`: input
/// `x`, T steps, output written to the value `output` (`[T·N, …]`, step-major).
pub fn expand_layer(
    g: &mut Graph,
    opset: Opset,
    name: &str,
    neuron: &Neuron,
    x: &str,
    current: Current,
    timesteps: usize,
    output: &str,
) {
    let theta_gn = g.add_initializer_f32(&format!("{name}.theta_gn"), &[], &[neuron.theta_gn() as f32]);
    let zero = g.add_initializer_f32(&format!("{name}.zero"), &[], &[0.0]);
    let tau = g.add_initializer_f32(&format!("{name}.tau"), &[], &[neuron.tau as f32]);
    let u_init = g.add_initializer_f32(&format!("{name}.u_init"), &[], &[0.5]);
    let q = g.add_node(name, "scale", "Div", &[x, &theta_gn], vec![]);
    let folded = current == Current::Folded && timesteps > 1;
    let steps: Vec<String> = if folded {
        // [T·N, …] → [T, N·…] so that the split runs along a dimension of known size T.
        let rows = g.add_initializer_i64(&format!("{name}.rows"), &[2], &[timesteps as i64, -1]);
        let r = g.add_node(name, "steps", "Reshape", &[&q, &rows], vec![]);
        opset.split(g, name, "split", &r, timesteps)
    } else {
        vec![q.clone(); timesteps]
    };
    let mut membrane = u_init;
    let mut counts = Vec::with_capacity(timesteps);
    for (t, q_t) in steps.iter().enumerate() {
        let step = format!("t{}", t + 1);
        let p = g.add_node(name, &format!("{step}.charge"), "Add", &[&membrane, q_t], vec![]);
        let f = g.add_node(name, &format!("{step}.floor"), "Floor", &[&p], vec![]);
        let c = opset.clip(g, name, &format!("{step}.spikes"), &f, &zero, &tau);
        if t + 1 < timesteps {
            membrane = g.add_node(name, &format!("{step}.reset"), "Sub", &[&p, &c], vec![]);
        }
        counts.push(c);
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
