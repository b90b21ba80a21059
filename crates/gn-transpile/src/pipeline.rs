//! The pass list, in order (the paper's Fig. 1(b)), and the conversion entry point.
//!
//! 1. [`detect`](crate::detect): find the QCFS sites, θ and L read from the model.
//! 2. [`convert`](crate::convert): each site becomes an IF spiking layer; then
//!    [`commute`](crate::commute): a max-pool after a layer with a time-invariant current
//!    moves in front of it.
//! 3. [`group`](crate::group): Algorithm 1, IF → GN of τ members (skipped for `--neuron if`).
//! 4. [`lower`](crate::lower): time folded into the batch; the neuron nodes stay.
//! 5. [`emit`](crate::emit): time-averaged readout; then either each neuron node
//!    expanded into its T steps of standard ops (`Emit::Standard`), or the nodes kept
//!    with their model-local functions (`Emit::CustomOp`); metadata.
//!
//! Each pass has one shape ([`crate::pass`]): it reads the graph and returns a patch,
//! which this pipeline applies.

use gn_onnx::proto::ModelProto;
use gn_onnx::Graph;

use crate::detect::{detect, Detection};
use crate::emit;
use crate::error::TranspileError;
use crate::neuron::{NeuronKind, NeuronNode, Opset};
use crate::pass::{self, Context};

/// The form of the emitted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Emit {
    /// Every step of every spiking layer unrolled into standard ONNX ops (the default).
    Standard,
    /// One `GroupNeuron` / `IFNeuron` node per spiking layer in the `gn.transpile` domain
    /// (`…Direct` where the current is time-invariant), defined by a model-local function
    /// holding the standard-op expansion; gn-ort-ops runs each as one fused kernel.
    CustomOp,
    /// One time step per call: the membranes and the readout's sums are inputs and
    /// outputs (metadata `gn_transpile.state`), so the caller chooses T at run time.
    Stateful,
}

impl Emit {
    /// The value written for it in metadata and accepted by `--emit`.
    pub fn key(self) -> &'static str {
        match self {
            Emit::Standard => "standard",
            Emit::CustomOp => "custom-op",
            Emit::Stateful => "stateful",
        }
    }
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
    /// θ for the ReLU-family activations, measured on sample inputs (`--calibrate`):
    /// they convert as QCFS sites of that θ. Without it, a ReLU is not a spiking layer.
    pub calibration: Option<std::sync::Arc<crate::calibrate::Calibration>>,
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
            calibration: None,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<(), TranspileError> {
        if self.tau == 0 || self.tau > MAX_TAU {
            return Err(TranspileError::Option(format!("--tau must be between 1 and {MAX_TAU}, got {}", self.tau)));
        }
        if self.emit == Emit::Stateful && self.anytime {
            return Err(TranspileError::Option(
                "--anytime does not apply to --emit stateful: each call returns the readout averaged over the steps so far"
                    .into(),
            ));
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
        if let Err(reason) = NeuronNode::parse(n) {
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

/// Runs the detect pass and turns "nothing found" into an error naming what was found
/// instead. With a calibration, the ReLU-family activations become sites too.
pub fn find_sites(
    graph: &Graph,
    allow_near_misses: bool,
    calibration: Option<&crate::calibrate::Calibration>,
) -> Result<Detection, TranspileError> {
    let mut detection = detect(graph);
    if let Some(m) = detection.near_misses.iter().find(|m| m.fatal) {
        return Err(TranspileError::Node { node: m.node.clone(), op: m.ops.clone(), reason: m.reason.clone() });
    }
    if let Some(c) = calibration {
        let calibrated = c.sites(&detection)?;
        detection.sites.extend(calibrated);
    }
    for site in &detection.sites {
        let per_channel = site.per_channel.iter().flat_map(|pc| pc.theta.iter());
        if let Some(&theta) = per_channel.clone().find(|t| !(t.is_finite() && **t > 0.0)) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: site.ops.clone(),
                reason: format!("a channel's θ = {theta} is not a positive finite threshold"),
            });
        }
        if let Some(&theta) = per_channel.clone().find(|t| !((**t as f32 / (2 * MAX_TAU) as f32).is_normal())) {
            return Err(TranspileError::Node {
                node: site.name.clone(),
                op: site.ops.clone(),
                reason: format!("a channel's θ = {theta:e} is outside the range a float32 threshold can hold"),
            });
        }
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
        let hint = match detection.relu_sites.len() {
            0 => String::new(),
            _ => "; a ReLU network converts with --calibrate x.npy, which sets each ReLU's θ from its activations on sample inputs".into(),
        };
        return Err(TranspileError::NoSites { found, hint });
    }
    Ok(detection)
}

/// Passes 2 and 2b: every site becomes an IF layer (the chains and what only they read
/// removed), then max-pools on time-invariant layers move in front of them. Returns the
/// moves. `transpile` and `inspect` both start here.
pub fn convert_sites(
    graph: &mut Graph,
    sites: &[crate::detect::Site],
) -> Result<Vec<crate::commute::Move>, TranspileError> {
    pass::run(graph, "convert", |g| Ok(crate::convert::run(g, sites)))?;
    graph.remove_dead_nodes();
    pass::run(graph, "commute", crate::commute::run)
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
    let cx = Context { options: options.clone(), opset: Opset(opset) };
    // Tensor data is shared (`Bytes`), so the copy costs the structure, not the weights.
    let mut model = model.clone();
    let mut graph = Graph::new(model.graph.take().ok_or(TranspileError::NoGraph)?);
    let nodes_before = graph.nodes().len();
    check_graph(&mut graph)?;

    let detection = find_sites(&graph, options.allow_inexact, options.calibration.as_deref())?;
    let moves = convert_sites(&mut graph, &detection.sites)?;
    if options.neuron == NeuronKind::Gn {
        pass::run(&mut graph, "group", |g| Ok(crate::group::run(g, &cx)))?;
    }
    // The stateful form is one step of the graph lowered at T = 1.
    let cx = match options.emit {
        Emit::Stateful => Context { options: Options { timesteps: 1, anytime: false, ..options.clone() }, ..cx },
        _ => cx,
    };
    let mut lowered = pass::run(&mut graph, "lower", |g| crate::lower::run(g, &cx))?;
    lowered.warnings.extend(
        detection.near_misses.iter().map(|m| format!("node '{}' ({}) left unconverted: {}", m.node, m.ops, m.reason)),
    );
    let states = match options.emit {
        Emit::Stateful => {
            let shapes = state_shapes(&model, &graph, &lowered)?;
            pass::run(&mut graph, "emit", |g| emit::stateful(g, &cx, &lowered, &shapes))?
        }
        Emit::Standard | Emit::CustomOp => {
            pass::run(&mut graph, "emit", |g| Ok(emit::readout(g, &cx, &lowered)))?;
            pass::run(&mut graph, "emit", |g| Ok(emit::neurons(g, &cx, &lowered)))?;
            Vec::new()
        }
    };
    let nodes_after = emit::model(&mut model, graph, &cx, &detection.sites, &states)?;

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

/// The shapes of the values the stateful form keeps as state (the spiking layers' and
/// the max-pools' inputs, the pooled values, the outputs), inferred by tract on the
/// lowered one-step graph.
#[cfg(feature = "tract")]
fn state_shapes(
    model: &ModelProto,
    graph: &Graph,
    lowered: &crate::lower::Lowered,
) -> Result<emit::Shapes, TranspileError> {
    let producers = graph.producers();
    let mut values: Vec<String> = Vec::new();
    for n in graph.nodes() {
        if NeuronNode::from_node(n).is_some() {
            values.push(n.input[0].clone());
        }
    }
    for pooled in &lowered.rate_pools {
        if let Some(&i) = producers.get(pooled) {
            values.push(graph.nodes()[i].input[0].clone());
        }
        values.push(pooled.clone());
    }
    values.extend(lowered.folded_outputs.iter().cloned());
    values.sort();
    values.dedup();
    let one_step = ModelProto { graph: Some(graph.proto.clone()), ..model.clone() };
    let shapes = crate::tract_ops::value_shapes(&one_step, &values).map_err(|e| TranspileError::Pass {
        pass: "emit",
        node: String::new(),
        reason: format!("cannot infer the shapes of the state tensors: {e}"),
    })?;
    Ok(values.into_iter().zip(shapes).collect())
}

#[cfg(not(feature = "tract"))]
fn state_shapes(
    _model: &ModelProto,
    _graph: &Graph,
    _lowered: &crate::lower::Lowered,
) -> Result<emit::Shapes, TranspileError> {
    Err(TranspileError::Option(
        "--emit stateful infers the shapes of its state tensors with tract, which this build leaves out (feature `tract`)"
            .into(),
    ))
}
