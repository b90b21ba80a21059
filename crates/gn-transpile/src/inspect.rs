//! `gn-transpile inspect`: the pre-conversion audit. Lists the QCFS sites with θ and L,
//! classifies every other op as exact in time or not, and says why a chain around a
//! `Floor` was not taken as QCFS; on a converted model, reports the conversion. Writes
//! nothing. [`audit`] gives the result as data (the Python package returns it as a
//! dict); [`inspect`] renders it as text.

use std::fmt::Write as _;

use gn_onnx::graph::attr;
use gn_onnx::proto::ModelProto;
use serde::Serialize;

use crate::detect::{detect, NearMiss, ReluSite, Site};
use crate::error::TranspileError;
use crate::metadata::{Metadata, State};
use crate::neuron::{attr_name, NeuronNode};
use crate::time::{analyze, Role, TimeClass};

/// What `inspect` found in a model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Set when the model was written by gn-transpile.
    pub converted: Option<Converted>,
    /// The QCFS activations (an ANN).
    pub sites: Vec<Site>,
    /// Chains around a `Floor` that are not QCFS, and why.
    pub near_misses: Vec<NearMiss>,
    /// Other activations seen (op type, count), when there is no QCFS activation.
    pub other_activations: Vec<(String, usize)>,
    /// ReLU-family activations (`Relu`, `Clip(0, c)`), when there is no QCFS activation:
    /// spiking layers once `--calibrate` sets their θ. The rest of the audit then shows
    /// the graph as converted with them.
    pub relu_sites: Vec<ReluSite>,
    /// Max-pools that move in front of a spiking layer (one line each).
    pub moves: Vec<String>,
    /// The static batch N, when the inputs declare one.
    pub static_batch: Option<i64>,
    /// Reshape targets on time-varying tensors rewritten from N to T·N.
    pub rebatched: usize,
    /// Nodes computed once, before the first spiking layer.
    pub time_invariant: usize,
    /// Nodes exact in time (run once over T·N samples).
    pub exact: usize,
    /// Max-pools on spikes, exact in rate.
    pub rate: Vec<NodeReason>,
    /// Linear nodes that act along axis 0 of a folded value: run once per step, exact in
    /// time.
    pub per_step: Vec<NodeReason>,
    /// Nodes not exact in time (converted only with `--allow-inexact`).
    pub inexact: Vec<NodeReason>,
    /// Nodes that cannot be lowered.
    pub refused: Vec<NodeReason>,
    /// The weighted ops (Conv, Gemm, MatMul) once converted, and what they read: `spikes`
    /// (accumulates) or `analog` (multiply-accumulates).
    pub weighted: Vec<NodeReason>,
    /// What each value of the converted graph carries, in node order.
    pub tensors: Tensors,
    /// What the audit could not trust in the model (malformed metadata).
    pub warnings: Vec<String>,
}

/// The values of a converted graph by what they carry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tensors {
    /// Spikes at every step: counts of θ_GN between 0 and τ (0 or θ for IF), the spiking
    /// layers' outputs and what only moves, selects or pools them.
    pub spikes: Vec<String>,
    /// Analog values that change every step (sums of weighted spikes, rate-coded ops).
    pub analog_steps: Vec<String>,
    /// Analog values computed once per input, before the first spiking layer or on no
    /// spiking path (constants and shapes left out).
    pub analog_once: Vec<String>,
}

/// A node and what is said about it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReason {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// The record of a conversion, read from a converted model.
#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    pub version: String,
    pub neuron: String,
    pub tau: String,
    pub timesteps: String,
    pub form: String,
    pub layers: Vec<LayerInfo>,
    /// Model-local functions (custom-op form): (domain::name, nodes in the body).
    pub functions: Vec<(String, usize)>,
    /// State tensors (stateful form).
    pub states: Vec<State>,
    /// How θ was set for ReLU-family activations (`--calibrate`).
    pub calibration: Option<crate::calibrate::Calibration>,
    pub nodes: usize,
}

/// One spiking layer of a converted model.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub theta: f64,
    pub theta_gn: f64,
    pub levels: u32,
    /// Custom-op form: the node's op, τ, v(0) and T.
    pub op: Option<String>,
    pub tau: Option<u32>,
    pub v_init: Option<f64>,
    pub timesteps: Option<usize>,
}

/// Audits `model`.
pub fn audit(model: &ModelProto) -> Result<Audit, TranspileError> {
    let mut graph = crate::check::prepare(model)?;
    let mut audit = Audit::default();
    let meta = match Metadata::read(model) {
        Some(Ok(meta)) => Some(meta),
        Some(Err(why)) => {
            audit
                .warnings
                .push(format!("the model's gn_transpile metadata cannot be trusted ({why}): audited as an ANN"));
            None
        }
        None => None,
    };
    let detection = detect(&graph);
    if let Some(meta) = meta {
        let layers = graph.nodes().iter().any(|n| NeuronNode::from_node(n).is_some());
        if detection.sites.is_empty() || layers {
            audit.converted = Some(converted(model, &graph, &meta));
            return Ok(audit);
        }
        audit.warnings.push(format!(
            "the model's gn_transpile metadata says it was converted, but it holds {} QCFS activations and no spiking layer: audited as an ANN",
            detection.sites.len()
        ));
    }
    audit.sites = detection.sites.clone();
    audit.near_misses = detection.near_misses.clone();
    let mut sites = detection.sites.clone();
    if detection.sites.is_empty() {
        audit.other_activations = detection.other_activations.clone().into_iter().collect();
        audit.relu_sites = detection.relu_sites.clone();
        if detection.relu_sites.is_empty() {
            return Ok(audit);
        }
        // The graph as `--calibrate` converts it (θ does not change the classification).
        sites = detection.relu_sites.iter().map(|r| crate::calibrate::relu_site(r, 1.0)).collect();
    }
    let moves = crate::pipeline::convert_sites(&mut graph, &sites)?;
    audit.moves = moves.iter().map(|m| m.to_string()).collect();
    for w in crate::spikes::converted_reads(&graph)? {
        let reason = if matches!(w.reads, crate::spikes::Reads::Spikes(_)) { "spikes" } else { "analog" };
        audit.weighted.push(NodeReason { node: w.node, op: w.op, reason: reason.into() });
    }
    let analysis = analyze(&graph)?;
    let spikes = crate::spikes::spike_values(&graph)?;
    for &i in &analysis.order {
        for o in graph.nodes()[i].output.iter().filter(|o| !o.is_empty()) {
            let list = match analysis.classes.get(o) {
                _ if spikes.contains(o) => &mut audit.tensors.spikes,
                Some(TimeClass::Folded) => &mut audit.tensors.analog_steps,
                Some(TimeClass::Static) => &mut audit.tensors.analog_once,
                _ => continue,
            };
            list.push(o.clone());
        }
    }
    audit.static_batch = analysis.static_batch;
    audit.rebatched = analysis.rebatched.len();
    for v in analysis.verdicts {
        let entry = |reason: String| NodeReason { node: v.node.clone(), op: v.op.clone(), reason };
        match v.role {
            Role::TimeInvariant => audit.time_invariant += 1,
            Role::Exact => audit.exact += 1,
            Role::PerStep(r) => audit.per_step.push(entry(format!("runs once per step: {r}"))),
            Role::Rate if crate::ops::is_max_pool(&v.op) => audit.rate.push(entry(
                "max-pool over running spike counts; its time average is the max-pool of the inputs' time averages"
                    .into(),
            )),
            Role::Rate => audit.rate.push(entry(
                "computed on the running averages of its time-varying inputs and differenced over the steps; its time average is the op applied to the inputs' time averages".into(),
            )),
            Role::Spiking => {}
            Role::Inexact(r) => audit.inexact.push(entry(r)),
            Role::Refused(r) => audit.refused.push(entry(r)),
        }
    }
    Ok(audit)
}

/// The record of a converted model: its metadata, and its layers as the nodes (custom-op
/// form) or the metadata (unrolled forms) give them.
fn converted(model: &ModelProto, graph: &gn_onnx::Graph, meta: &Metadata) -> Converted {
    let mut layers: Vec<LayerInfo> = graph
        .nodes()
        .iter()
        .filter_map(|node| {
            let layer = NeuronNode::from_node(node)?;
            let (n, timesteps) = (layer.neuron, layer.timesteps);
            Some(LayerInfo {
                name: node.name().to_string(),
                theta: n.theta,
                theta_gn: n.theta_gn(),
                levels: n.levels,
                op: Some(layer.op_type().to_string()),
                tau: Some(n.tau),
                v_init: attr::get_float(node, attr_name::V_INIT).map(f64::from),
                timesteps,
            })
        })
        .collect();
    if layers.is_empty() {
        // Standard and stateful forms: the layers are unrolled; the metadata records them.
        let tau = meta.tau as f64;
        layers = meta
            .layers
            .iter()
            .cloned()
            .map(|l| LayerInfo {
                name: l.site,
                theta: l.theta,
                theta_gn: l.theta / tau,
                levels: l.levels,
                op: None,
                tau: None,
                v_init: None,
                timesteps: None,
            })
            .collect();
    }
    Converted {
        version: meta.version.clone(),
        neuron: meta.neuron.key().into(),
        tau: meta.tau.to_string(),
        timesteps: meta.timesteps.to_string(),
        form: meta.emit.key().into(),
        layers,
        functions: model.functions.iter().map(|f| (format!("{}::{}", f.domain(), f.name()), f.node.len())).collect(),
        states: meta.state.clone().unwrap_or_default(),
        calibration: meta.calibration.clone(),
        nodes: graph.nodes().len(),
    }
}

/// Renders the audit of `model` as text.
pub fn inspect(model: &ModelProto) -> Result<String, TranspileError> {
    Ok(render(&audit(model)?))
}

/// `text` with every control character but the line break escaped (`\u{1b}`), so that
/// names read from a model cannot move the cursor, clear the screen or recolour a
/// terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// The text of an audit, control characters escaped.
pub fn render(a: &Audit) -> String {
    let mut out = String::new();
    for w in &a.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    match &a.converted {
        Some(c) => render_converted(&mut out, c),
        None => render_ann(&mut out, a),
    }
    escape_controls(&out)
}

/// The record of a converted model.
fn render_converted(out: &mut String, c: &Converted) {
    let _ = writeln!(
        out,
        "converted by gn-transpile {}: neuron {}, τ = {}, T = {}, form {}",
        c.version, c.neuron, c.tau, c.timesteps, c.form
    );
    if c.layers.iter().any(|l| l.op.is_some()) {
        // Custom-op form: everything is on the nodes.
        let _ = writeln!(out, "spiking layers: {} (custom-op nodes)", c.layers.len());
        for l in &c.layers {
            let _ = writeln!(
                out,
                "  {}  {}  θ = {:.6}  τ = {}  θ_GN = {:.6}  v(0) = {:.6}  T = {}  L = {}",
                l.name,
                l.op.as_deref().unwrap_or_default(),
                l.theta,
                l.tau.unwrap_or(1),
                l.theta_gn,
                l.v_init.unwrap_or(f64::NAN),
                l.timesteps.map_or("?".into(), |t| t.to_string()),
                l.levels
            );
        }
        for (name, nodes) in &c.functions {
            let _ = writeln!(out, "function {name}: {nodes} nodes (the standard-op body ONNX runtimes inline)");
        }
    } else {
        let _ = writeln!(out, "spiking layers: {} (unrolled into standard ops)", c.layers.len());
        for l in &c.layers {
            let levels = if l.levels == 0 { "ReLU".to_string() } else { format!("L = {}", l.levels) };
            let _ = writeln!(out, "  {}  θ = {:.6}  θ_GN = {:.6}  {levels}", l.name, l.theta, l.theta_gn);
        }
    }
    if let Some(cal) = &c.calibration {
        let _ = writeln!(
            out,
            "θ calibrated: percentile {} of each activation over {} inputs, {}",
            cal.percentile,
            cal.inputs,
            if cal.per_channel { "per channel" } else { "per layer" }
        );
        for t in &cal.layers {
            let channels = match t.channels.is_empty() {
                true => String::new(),
                false => {
                    let (lo, hi) = t.channels.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &c| (a.min(c), b.max(c)));
                    format!("  channels {}: θ {lo:.4}..{hi:.4} ({} never active)", t.channels.len(), t.dead_channels)
                }
            };
            let _ = writeln!(
                out,
                "  {} ({})  θ = {:.6}  max {:.6}  zeros {:.1} %{channels}",
                t.site,
                t.op,
                t.theta,
                t.max,
                t.zero_share * 100.0
            );
        }
    }
    if !c.states.is_empty() {
        let _ = writeln!(
            out,
            "state tensors: {} (fill each with init before the first call; feed each output back into its input)",
            c.states.len()
        );
        for s in &c.states {
            let shape: Vec<String> = s.shape.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  {} → {}  [{}]  init {}", s.input, s.output, shape.join(", "), s.init);
        }
    }
    let _ = writeln!(out, "nodes: {}", c.nodes);
}

/// The audit of an ANN: its sites, near misses, moves, and the role of every node.
fn render_ann(out: &mut String, a: &Audit) {
    let _ = writeln!(out, "QCFS sites: {}", a.sites.len());
    for s in &a.sites {
        let _ = writeln!(out, "  {}  θ = {:.6}  L = {}  input {}  ({})", s.name, s.theta, s.levels, s.input, s.ops);
    }
    for m in &a.near_misses {
        let _ = writeln!(out, "near miss at '{}' ({}): {}", m.node, m.ops, m.reason);
    }
    if a.sites.is_empty() {
        for (op, n) in &a.other_activations {
            let _ = writeln!(out, "  found {op} ×{n}");
        }
        if a.relu_sites.is_empty() {
            let _ = writeln!(out, "no QCFS activation: nothing to convert");
            return;
        }
        let _ = writeln!(
            out,
            "ReLU-family activations: {} (no trained θ: `--calibrate x.npy` sets each from its activations on sample inputs, then they convert like QCFS sites)",
            a.relu_sites.len()
        );
        for r in &a.relu_sites {
            let bound = r.bound.map_or(String::new(), |c| format!(" (0, {c})"));
            let _ = writeln!(out, "  {}  {}{bound}  input {}", r.name, r.op, r.input);
        }
    }
    for m in &a.moves {
        let _ = writeln!(out, "moved: {m}");
    }
    if let Some(n) = a.static_batch {
        let _ = writeln!(
            out,
            "static batch: {n} (the emitted model keeps it; {} Reshape target(s) on time-varying tensors become T·{n})",
            a.rebatched
        );
    }
    let _ = writeln!(out, "time-invariant nodes (computed once): {}", a.time_invariant);
    let _ = writeln!(out, "nodes exact in time (run once over T·N samples): {}", a.exact);
    let _ = writeln!(out, "nodes exact in time, run once per step (they act along axis 0): {}", a.per_step.len());
    for r in &a.per_step {
        let _ = writeln!(out, "  {} ({}): {}", r.node, r.op, r.reason);
    }
    let _ = writeln!(out, "nodes exact in rate: {}", a.rate.len());
    for r in &a.rate {
        let _ = writeln!(out, "  {} ({}): {}", r.node, r.op, r.reason);
    }
    let t = &a.tensors;
    let _ = writeln!(
        out,
        "values carrying spikes (per step, a count of θ_GN from 0 to τ; 0 or θ for IF): {}; analog values changing every step: {}; analog values computed once: {}",
        t.spikes.len(),
        t.analog_steps.len(),
        t.analog_once.len()
    );
    const SHOWN: usize = 12;
    let shown: Vec<&str> = t.spikes.iter().take(SHOWN).map(String::as_str).collect();
    if !shown.is_empty() {
        let more = t.spikes.len().saturating_sub(SHOWN);
        let tail = if more > 0 { format!(", … and {more} more (all in the JSON audit)") } else { String::new() };
        let _ = writeln!(out, "  spikes: {}{tail}", shown.join(", "));
    }
    let on_spikes = a.weighted.iter().filter(|w| w.reason == "spikes").count();
    let _ = writeln!(
        out,
        "weighted ops reading spikes (accumulates): {on_spikes} of {}; reading analog values (multiply-accumulates):",
        a.weighted.len()
    );
    for w in a.weighted.iter().filter(|w| w.reason != "spikes") {
        let _ = writeln!(out, "  {} ({})", w.node, w.op);
    }
    let _ = writeln!(out, "nodes not exact in time: {}", a.inexact.len() + a.refused.len());
    if !a.inexact.is_empty() {
        let _ = writeln!(out, "  (inexact nodes convert with --allow-inexact, with a warning for each)");
    }
    if !a.refused.is_empty() {
        let _ = writeln!(out, "  (no flag converts a refused node: re-export the model as its reason says)");
    }
    for (kind, list) in [("inexact", &a.inexact), ("refused", &a.refused)] {
        for r in list {
            let _ = writeln!(out, "  {kind}  {} ({}): {}", r.node, r.op, r.reason);
        }
    }
}
