//! `gn-transpile inspect`: the pre-conversion audit. Lists the QCFS sites with θ and L,
//! classifies every other op as exact in time or not, and says why a chain around a
//! `Floor` was not taken as QCFS. Writes nothing.

use std::fmt::Write as _;

use gn_onnx::proto::ModelProto;

use crate::detect::detect;
use crate::error::TranspileError;
use crate::lower::{analyze, Role};
use crate::neuron::{attr_name, NeuronNode};
use gn_onnx::graph::attr;
use gn_onnx::proto::NodeProto;

/// One entry of the `gn_transpile.layers` metadata.
#[derive(Debug, serde::Deserialize)]
struct LayerRecord {
    site: String,
    theta: f64,
    levels: u32,
}

/// Renders the audit of `model` as text.
pub fn inspect(model: &ModelProto) -> Result<String, TranspileError> {
    let mut graph = crate::pipeline::prepare(model)?;
    let mut out = String::new();
    let meta = |k: &str| model.metadata_props.iter().find(|p| p.key() == k).map(|p| p.value().to_string());
    if let Some(neuron) = meta("gn_transpile.neuron") {
        let _ = writeln!(
            out,
            "converted by gn-transpile {}: neuron {neuron}, τ = {}, T = {}, form {}",
            meta("gn_transpile.version").unwrap_or_default(),
            meta("gn_transpile.tau").unwrap_or_default(),
            meta("gn_transpile.timesteps").unwrap_or_default(),
            meta("gn_transpile.emit").unwrap_or_else(|| "standard".into())
        );
        let compact: Vec<(&NodeProto, NeuronNode)> =
            graph.nodes().iter().filter_map(|node| Some((node, NeuronNode::from_node(node)?))).collect();
        if !compact.is_empty() {
            // Custom-op form: everything is on the nodes.
            let _ = writeln!(out, "spiking layers: {} (custom-op nodes)", compact.len());
            for (node, NeuronNode { neuron: n, timesteps }) in compact {
                let _ = writeln!(
                    out,
                    "  {}  {}  θ = {:.6}  τ = {}  θ_GN = {:.6}  v(0) = {:.6}  T = {}  L = {}",
                    node.name(),
                    n.op_type(),
                    n.theta,
                    n.tau,
                    n.theta_gn(),
                    attr::get_float(node, attr_name::V_INIT).unwrap_or(f32::NAN),
                    timesteps.map_or("?".into(), |t| t.to_string()),
                    n.levels
                );
            }
            for f in &model.functions {
                let _ = writeln!(
                    out,
                    "function {}::{}: {} nodes (the standard-op body ONNX runtimes inline)",
                    f.domain(),
                    f.name(),
                    f.node.len()
                );
            }
        } else {
            // Standard form: the layers are unrolled; the metadata records them.
            let layers: Vec<LayerRecord> =
                meta("gn_transpile.layers").and_then(|l| serde_json::from_str(&l).ok()).unwrap_or_default();
            let tau: f64 = meta("gn_transpile.tau").and_then(|t| t.parse().ok()).unwrap_or(1.0);
            let _ = writeln!(out, "spiking layers: {} (unrolled into standard ops)", layers.len());
            for l in &layers {
                let _ =
                    writeln!(out, "  {}  θ = {:.6}  θ_GN = {:.6}  L = {}", l.site, l.theta, l.theta / tau, l.levels);
            }
        }
        if let Some(states) = crate::emit::states(model) {
            let _ = writeln!(
                out,
                "state tensors: {} (fill each with init before the first call; feed each output back into its input)",
                states.len()
            );
            for s in &states {
                let shape: Vec<String> = s.shape.iter().map(|d| d.map_or("N".into(), |d| d.to_string())).collect();
                let _ = writeln!(out, "  {} → {}  [{}]  init {}", s.input, s.output, shape.join(", "), s.init);
            }
        }
        let _ = writeln!(out, "nodes: {}", graph.nodes().len());
        return Ok(out);
    }
    let detection = detect(&graph);
    let _ = writeln!(out, "QCFS sites: {}", detection.sites.len());
    for s in &detection.sites {
        let _ = writeln!(out, "  {}  θ = {:.6}  L = {}  input {}  ({})", s.name, s.theta, s.levels, s.input, s.ops);
    }
    for m in &detection.near_misses {
        let _ = writeln!(out, "near miss at '{}' ({}): {}", m.node, m.ops, m.reason);
    }
    if detection.sites.is_empty() {
        let _ = writeln!(out, "no QCFS activation: nothing to convert");
        for (op, n) in &detection.other_activations {
            let _ = writeln!(out, "  found {op} ×{n}");
        }
        return Ok(out);
    }
    crate::pass::run(&mut graph, "convert", |g| Ok(crate::convert::run(g, &detection.sites)))?;
    graph.remove_dead_nodes();
    for m in crate::pass::run(&mut graph, "commute", crate::commute::run)? {
        let _ = writeln!(out, "moved: {m}");
    }
    let analysis = analyze(&graph)?;
    let (mut invariant, mut exact, mut rate, mut other) = (0, 0, Vec::new(), Vec::new());
    for v in &analysis.verdicts {
        match &v.role {
            Role::TimeInvariant => invariant += 1,
            Role::Exact => exact += 1,
            Role::Rate => rate.push(format!(
                "  {} ({}): max-pool over running spike counts; its time average is the max-pool of the inputs' time averages",
                v.node, v.op
            )),
            Role::Spiking => {}
            Role::Inexact(r) => other.push(format!("  inexact  {} ({}): {r}", v.node, v.op)),
            Role::Refused(r) => other.push(format!("  refused  {} ({}): {r}", v.node, v.op)),
        }
    }
    if let Some(n) = analysis.static_batch {
        let _ = writeln!(
            out,
            "static batch: {n} (the emitted model keeps it; {} Reshape target(s) on time-varying tensors become T·{n})",
            analysis.rebatched.len()
        );
    }
    let _ = writeln!(out, "time-invariant nodes (computed once): {invariant}");
    let _ = writeln!(out, "nodes exact in time (run once over T·N samples): {exact}");
    let _ = writeln!(out, "nodes exact in rate: {}", rate.len());
    for line in rate {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "nodes not exact in time: {}", other.len());
    for line in other {
        let _ = writeln!(out, "{line}");
    }
    Ok(out)
}
