//! What a measurement is asked for ([`Spec`]) and what it gives ([`Measurement`]).

use std::sync::Arc;

use gn_onnx::proto::ModelProto;
use gn_transpile::NeuronKind;
use ndarray::ArrayD;

use crate::cost::Operations;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Members per Group Neuron.
    pub tau: u32,
    /// The T values to report; the largest is simulated.
    pub timesteps: Vec<usize>,
    /// Images per tract call.
    pub batch: usize,
    /// T values up to this one are measured on every image ...
    pub short_max: usize,
    /// ... and larger ones on this many (a prefix of the data).
    pub long_images: usize,
    /// Images used for the per-layer errors and firing rates (a prefix of the data).
    pub layer_images: usize,
    /// T values of the per-layer table (at most 8 or so: site outputs are large).
    pub layer_timesteps: Vec<usize>,
    /// θ of the ReLU-family activations (a ReLU network), from `calibrate`.
    pub calibration: Option<Arc<gn_transpile::calibrate::Calibration>>,
    /// The energy of an operation, for the cost report.
    pub energy: crate::EnergyTable,
    /// τ values of the accuracy-for-energy table (GN at each, IF, at the per-layer T);
    /// empty for none.
    pub pareto_taus: Vec<u32>,
}

impl Spec {
    /// What `gn-transpile verify` and `gn_transpile.verify` measure on `n` inputs: every T
    /// on every input, per-layer figures on the first 100 inputs at the T up to 8, batches
    /// of 100.
    pub fn for_inputs(n: usize, tau: u32, timesteps: &[usize]) -> Spec {
        let t_max = timesteps.iter().copied().max().unwrap_or(1);
        let short: Vec<usize> = timesteps.iter().copied().filter(|&t| t <= 8).collect();
        Spec {
            tau,
            timesteps: timesteps.to_vec(),
            batch: 100,
            short_max: t_max,
            long_images: n,
            layer_images: n.min(100),
            layer_timesteps: if short.is_empty() { vec![1] } else { short },
            calibration: None,
            energy: crate::EnergyTable::default(),
            pareto_taus: Vec::new(),
        }
    }
}

/// One neuron model's curve over T.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Curve {
    pub neuron: NeuronKind,
    pub tau: u32,
    /// (T, MSE between the ANN's and the SNN's outputs)
    pub mse: Vec<(usize, f64)>,
    /// (T, top-1 accuracy), when labels are given.
    pub accuracy: Vec<(usize, f64)>,
}

impl Curve {
    /// `IF` or `GN τ=k`.
    pub fn label(&self) -> String {
        self.neuron.label(self.tau)
    }
}

/// The τ = L, T = 1 check (docs/design.md §4.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exactness {
    pub tau: u32,
    pub top1_agreement: f64,
    pub flips: usize,
    pub relative_mse: f64,
}

/// Per spiking layer: error against the ANN's activation and firing rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    pub site: String,
    /// The value the spiking layer writes once converted (the site's output, or the
    /// output of the max-pool that moved in front of it).
    pub output: String,
    /// θ (1 for a site calibrated per channel, whose θ are `channel_thetas`).
    pub theta: f64,
    /// L (0 for a calibrated ReLU site).
    pub levels: u32,
    /// θ per channel of a site calibrated with `--per-channel`; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_thetas: Vec<f64>,
    /// (T, MSE) of the IF layer's time-averaged output against the ANN activation.
    pub if_mse: Vec<(usize, f64)>,
    /// (T, MSE) of the GN layer's time-averaged output against the ANN activation.
    pub gn_mse: Vec<(usize, f64)>,
    /// Spikes per neuron per step (IF: at most 1), over the largest per-layer T.
    pub if_rate: f64,
    /// Spikes per group neuron per step (at most τ), over the largest per-layer T.
    pub gn_rate: f64,
    /// (T, spikes per neuron per step over the first T steps), IF.
    pub if_rates: Vec<(usize, f64)>,
    /// (T, spikes per group neuron per step over the first T steps), GN.
    pub gn_rates: Vec<(usize, f64)>,
    /// (T, spike events per neuron per step over the first T steps), IF: the share of
    /// neuron-steps with a spike.
    pub if_events: Vec<(usize, f64)>,
    /// (T, spike events per group neuron per step over the first T steps), GN: the share
    /// of neuron-steps with a count above 0 (a count of c member spikes is one event).
    pub gn_events: Vec<(usize, f64)>,
    /// Elements of the activation per image.
    pub neurons: usize,
}

/// (T, a figure) per T.
type Points = [(usize, f64)];

impl Layer {
    /// (T, member spikes per neuron per step) and (T, events per neuron per step) of one
    /// neuron kind.
    pub fn activity(&self, kind: NeuronKind) -> (&Points, &Points) {
        match kind {
            NeuronKind::If => (&self.if_rates, &self.if_events),
            NeuronKind::Gn => (&self.gn_rates, &self.gn_events),
        }
    }
}

/// Everything measured on one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    /// Members per Group Neuron of the GN curve.
    pub tau: u32,
    pub images: usize,
    /// Images behind the per-layer figures and the cost report (a prefix of the data).
    pub layer_images: usize,
    /// Images behind the figures for T above `short_max`.
    pub long_images: usize,
    pub short_max: usize,
    pub ann_accuracy: Option<f64>,
    /// The ANN's accuracy on the first `long_images` images, which the T > `short_max`
    /// figures are measured on.
    pub ann_accuracy_long: Option<f64>,
    pub levels: Vec<u32>,
    pub curves: Vec<Curve>,
    pub exactness: Option<Exactness>,
    pub layers: Vec<Layer>,
    /// The cost report: the ANN's multiply-accumulates and the spiking networks'
    /// synaptic operations, spikes and energy, per input.
    pub operations: Option<Operations>,
    /// Accuracy and MSE against energy for GN at each τ of `Spec::pareto_taus` and IF.
    pub pareto: Option<crate::Pareto>,
    /// The stateful form (GN) run call by call against the unrolled anytime rows.
    pub stateful: Option<StatefulAgreement>,
    /// The emitted models (IF and GN at the largest T, anytime), for cross-runtime checks.
    #[serde(skip)]
    pub emitted: Vec<(String, ModelProto)>,
    /// Outputs of the emitted models on the first `layer_images` images, as tract computed
    /// them (logits, and the anytime output where there is one).
    #[serde(skip)]
    pub emitted_outputs: Vec<Vec<ArrayD<f32>>>,
}

impl Measurement {
    /// The curve of one neuron kind (every measurement has one of each).
    pub fn curve(&self, kind: NeuronKind) -> &Curve {
        self.curves.iter().find(|c| c.neuron == kind).expect("a measurement has an IF and a GN curve")
    }
}

/// `calls` calls of the stateful GN model against the first `calls` rows of the
/// unrolled anytime model, on the first `images` inputs, through tract.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatefulAgreement {
    pub calls: usize,
    pub images: usize,
    pub max_abs_diff: f64,
}

/// A failure of the measurement.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Transpile(#[from] gn_transpile::TranspileError),
    #[cfg(feature = "tract")]
    #[error(transparent)]
    Tract(#[from] gn_onnx::tract_bridge::TractError),
    /// A failure of the runtime the models ran on.
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Data(String),
}
