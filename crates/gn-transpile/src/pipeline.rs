//! The pass list, in order (the paper's Fig. 1(b)), and the conversion entry point.
//!
//! 1. [`detect`](crate::detect): find the QCFS sites, θ and L read from the model.
//! 2. [`convert`](crate::convert): each site becomes an IF spiking layer; then
//!    [`commute`](crate::commute): a max-pool after a layer with a time-invariant current
//!    moves in front of it.
//! 3. [`group`](crate::group): Algorithm 1, IF → GN of τ members (skipped for `--neuron if`).
//! 4. [`lower`](crate::lower): time folded into the batch; the neuron nodes stay.
//! 5. [`emit`](crate::emit): time-averaged readout, metadata; then either each neuron
//!    node expanded into its T steps of standard ops (`Emit::Standard`), or the nodes
//!    kept with their model-local functions (`Emit::CustomOp`).

use gn_onnx::proto::ModelProto;
use gn_onnx::Graph;

use crate::detect::{detect, Detection, Site};
use crate::emit::{readout, set_metadata};
use crate::error::TranspileError;
use crate::lower::{lower, LowerOptions};
use crate::neuron::{function, Neuron, NeuronKind, Opset};
use gn_onnx::proto::OperatorSetIdProto;

/// The form of the emitted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Emit {
    /// Every step of every spiking layer unrolled into standard ONNX ops (the default).
    Standard,
    /// One `GroupNeuron` / `IFNeuron` node per spiking layer in the `gn.transpile` domain,
    /// defined by a model-local function holding the standard-op expansion.
    CustomOp,
}

/// Largest τ accepted: τ member thresholds per neuron.
pub const MAX_TAU: u32 = 1024;
/// Largest T accepted: the emitted graph holds about 6 nodes per step per spiking layer.
pub const MAX_TIMESTEPS: usize = 512;

/// Conversion options.
#[derive(Debug, Clone)]
pub struct Options {
    pub neuron: NeuronKind,
    pub tau: u32,
    pub timesteps: usize,
    /// Add `{y}_anytime` outputs holding the readout after every step.
    pub anytime: bool,
    /// Convert ops that are not exact in time (MaxPool, Softmax, …) anyway, with a warning.
    pub allow_inexact: bool,
    /// Standard ops, or one custom node per spiking layer.
    pub emit: Emit,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            neuron: NeuronKind::Gn,
            tau: 4,
            timesteps: 4,
            anytime: false,
            allow_inexact: false,
            emit: Emit::Standard,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<(), TranspileError> {
        if self.tau == 0 || self.tau > MAX_TAU {
            return Err(TranspileError::Option(format!("--tau must be between 1 and {MAX_TAU}, got {}", self.tau)));
        }
        if self.timesteps == 0 || self.timesteps > MAX_TIMESTEPS {
            return Err(TranspileError::Option(format!(
                "--timesteps must be between 1 and {MAX_TIMESTEPS}, got {}",
                self.timesteps
            )));
        }
        Ok(())
    }
}

/// What the conversion found and did, for the summary on stderr.
#[derive(Debug, Clone)]
pub struct Report {
    pub detection: Detection,
    /// Max-pools moved in front of a spiking layer by the commute pass.
    pub moves: Vec<crate::commute::Move>,
    pub spiking_layers: Vec<String>,
    pub warnings: Vec<String>,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// The ONNX opset the model imports for the default domain.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map(|o| o.version())
}

/// Checks a model given to any entry point, before any pass: the structure
/// ([`gn_onnx::validate::validate_model`]), that the main graph's tensors are numeric, and
/// that nodes of the `gn.transpile` domain (present in converted or crafted models) are
/// well-formed spiking layers.
pub fn check_model(model: &ModelProto) -> Result<(), TranspileError> {
    use gn_onnx::proto::tensor_proto::DataType;
    gn_onnx::validate::validate_model(model)?;
    let graph = model.graph.as_ref().ok_or(TranspileError::NoGraph)?;
    for t in &graph.initializer {
        let ty = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
        if matches!(ty, DataType::String | DataType::Complex64 | DataType::Complex128 | DataType::Undefined) {
            return Err(TranspileError::Node {
                node: t.name().to_string(),
                op: "initializer".into(),
                reason: format!("a {} tensor has no place in a QCFS network", ty.as_str_name()),
            });
        }
    }
    for (i, n) in graph.node.iter().enumerate() {
        if let Err(reason) = Neuron::parse(n) {
            return Err(TranspileError::Node {
                node: if n.name().is_empty() { format!("#{i}") } else { n.name().to_string() },
                op: format!("{}::{}", n.domain(), n.op_type()),
                reason,
            });
        }
    }
    Ok(())
}

/// Checks the graph's sources and drops nodes that reach no output (an activation nobody
/// reads is not a spiking layer). Cycles were refused by [`check_model`].
fn check_graph(graph: &mut Graph) -> Result<(), TranspileError> {
    graph.check_sources()?;
    if graph.proto.output.is_empty() {
        return Err(TranspileError::NoOutputs);
    }
    graph.remove_dead_nodes();
    Ok(())
}

/// [`check_model`], then the main graph as the passes' IR, checked and without dead nodes.
pub fn prepare(model: &ModelProto) -> Result<Graph, TranspileError> {
    check_model(model)?;
    let mut graph = Graph::new(model.graph.clone().ok_or(TranspileError::NoGraph)?);
    check_graph(&mut graph)?;
    Ok(graph)
}

/// Runs the detect pass and turns "nothing found" into an error naming what was found instead.
pub fn find_sites(graph: &Graph, allow_near_misses: bool) -> Result<Detection, TranspileError> {
    let detection = detect(graph);
    if let Some(m) = detection.near_misses.iter().find(|m| m.fatal) {
        return Err(TranspileError::Node { node: m.node.clone(), op: m.ops.clone(), reason: m.reason.clone() });
    }
    for site in &detection.sites {
        if !(site.theta.is_finite() && site.theta > 0.0) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: "Floor".into(),
                reason: format!("θ = {} is not a positive finite threshold", site.theta),
            });
        }
        // The neurons hold θ, θ/τ and θ/(2τ) in float32: all must be finite and normal.
        let smallest = site.theta as f32 / (2 * MAX_TAU) as f32;
        if !(site.theta as f32).is_finite() || !smallest.is_normal() {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: "Floor".into(),
                reason: format!("θ = {:e} is outside the range a float32 threshold can hold", site.theta),
            });
        }
    }
    if !detection.sites.is_empty() {
        if let Some(m) = detection.near_misses.first() {
            if !allow_near_misses {
                return Err(TranspileError::Node {
                    node: m.node.clone(),
                    op: m.ops.clone(),
                    reason: format!(
                        "looks like a QCFS activation but is not one: {}; pass --allow-inexact to leave it unconverted",
                        m.reason
                    ),
                });
            }
        }
    }
    if detection.sites.is_empty() {
        let mut found: Vec<String> = detection.other_activations.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
        found.extend(detection.near_misses.iter().map(|m| format!("near miss at '{}': {}", m.node, m.reason)));
        let found = if found.is_empty() { String::new() } else { format!(" (found instead: {})", found.join(", ")) };
        return Err(TranspileError::NoSites { found });
    }
    Ok(detection)
}

/// Converts a QCFS ANN into a spiking network per `options`.
pub fn transpile(model: &ModelProto, options: &Options) -> Result<(ModelProto, Report), TranspileError> {
    options.validate()?;
    let opset = default_opset(model).unwrap_or(1);
    if opset < 11 {
        return Err(TranspileError::OldOpset(opset));
    }
    if options.emit == Emit::CustomOp && opset < 12 {
        return Err(TranspileError::Option(format!(
            "--emit custom-op needs opset 12 or later (the model imports opset {opset}): the neuron functions read their attributes through Constant's value_float"
        )));
    }
    check_model(model)?;
    // Tensor data is shared (`Bytes`), so the copy costs the structure, not the weights.
    let mut model = model.clone();
    let mut graph = Graph::new(model.graph.take().ok_or(TranspileError::NoGraph)?);
    let nodes_before = graph.nodes().len();
    check_graph(&mut graph)?;

    let detection = find_sites(&graph, options.allow_inexact)?;
    crate::convert::convert(&mut graph, &detection.sites);
    let moves = crate::commute::commute(&mut graph)?;
    if options.neuron == NeuronKind::Gn {
        crate::group::group(&mut graph, options.tau);
    }
    let near_misses =
        detection.near_misses.iter().map(|m| format!("node '{}' ({}) left unconverted: {}", m.node, m.ops, m.reason));
    let near_misses: Vec<String> = near_misses.collect();
    let mut lowered = lower(
        &mut graph,
        &LowerOptions { timesteps: options.timesteps, allow_inexact: options.allow_inexact, opset: Opset(opset) },
    )?;
    lowered.warnings.extend(near_misses);
    readout(&mut graph, &lowered.folded_outputs, options.timesteps, options.anytime, Opset(opset));
    match options.emit {
        Emit::Standard => {
            crate::lower::expand_neurons(&mut graph, Opset(opset));
        }
        Emit::CustomOp => {
            let kind = options.neuron;
            model.functions.retain(|f| f.domain() != crate::DOMAIN);
            model.functions.push(function(kind, Opset(opset), options.timesteps));
            model.opset_import.retain(|o| o.domain() != crate::DOMAIN);
            model
                .opset_import
                .push(OperatorSetIdProto { domain: Some(crate::DOMAIN.into()), version: Some(crate::DOMAIN_VERSION) });
            // Model-local functions arrived with IR version 8.
            model.ir_version = Some(model.ir_version().max(8));
        }
    }
    graph.proto.value_info.clear();
    graph.remove_dead_nodes();
    graph.sort()?;
    let nodes_after = graph.nodes().len();
    model.graph = Some(graph.into_proto());
    record_metadata(&mut model, options, &detection.sites);

    Ok((
        model,
        Report {
            detection,
            moves,
            spiking_layers: lowered.spiking_layers,
            warnings: lowered.warnings,
            nodes_before,
            nodes_after,
        },
    ))
}

fn record_metadata(model: &mut ModelProto, options: &Options, sites: &[Site]) {
    let props = &mut model.metadata_props;
    let (neuron, tau) = match options.neuron {
        NeuronKind::Gn => ("gn", options.tau),
        NeuronKind::If => ("if", 1),
    };
    set_metadata(props, "gn_transpile.version", crate::VERSION.into());
    set_metadata(props, "gn_transpile.neuron", neuron.into());
    set_metadata(props, "gn_transpile.tau", tau.to_string());
    set_metadata(props, "gn_transpile.timesteps", options.timesteps.to_string());
    set_metadata(props, "gn_transpile.anytime", options.anytime.to_string());
    let emit = match options.emit {
        Emit::Standard => "standard",
        Emit::CustomOp => "custom-op",
    };
    set_metadata(props, "gn_transpile.emit", emit.into());
    let layers: Vec<String> = sites
        .iter()
        .map(|s| format!("{{\"site\":{:?},\"theta\":{},\"levels\":{}}}", s.name, s.theta, s.levels))
        .collect();
    set_metadata(props, "gn_transpile.layers", format!("[{}]", layers.join(",")));
}
