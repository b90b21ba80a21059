//! The conversion's configuration: [`Options`], the emitted form ([`Emit`]) and the
//! limits on τ and T (the neuron's, [`gn_neuron`]). Every pass reads it through
//! [`crate::pass::Context`]; nothing here depends on a pass.

use crate::error::TranspileError;
use crate::neuron::NeuronKind;

/// The form of the emitted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Emit {
    /// Every step of every spiking layer unrolled into standard ONNX ops (the default).
    Standard,
    /// One `GroupNeuron` / `IFNeuron` node per spiking layer in the `gn.transpile` domain
    /// (`…Direct` where the current is time-invariant, `…PerChannel` where θ is set per
    /// channel), defined by a model-local function
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

    /// The form whose [`key`](Emit::key) is `key`, if any.
    pub fn from_key(key: &str) -> Option<Emit> {
        [Emit::Standard, Emit::CustomOp, Emit::Stateful].into_iter().find(|e| e.key() == key)
    }
}

/// How the ops exact in rate are compensated (docs/design.md §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compensation {
    /// Once per maximal connected region of them (the default): a region's inputs are
    /// averaged once and each output read outside it is differenced once.
    #[default]
    Regions,
    /// Each op on its own, averaging its inputs and differencing its output: the same
    /// values in rate, with a difference and a re-sum between every pair of ops. For
    /// measuring what regions save (`cargo xtask bench`); a comparison feeding a Where is
    /// refused, its booleans leaving its region.
    PerOp,
}

pub use gn_neuron::{MAX_TAU, MAX_TIMESTEPS};

/// Largest spiking layers × T the standard form unrolls: it writes about six nodes per
/// step per layer, so this bounds it near 800,000 nodes. Beyond it, the custom-op form
/// (one node per layer) holds the same network.
pub const MAX_LAYER_STEPS: usize = 1 << 17;

/// Conversion options.
#[derive(Debug, Clone)]
pub struct Options {
    pub neuron: NeuronKind,
    pub tau: u32,
    pub timesteps: usize,
    /// Add `{y}_anytime` outputs holding the readout after every step.
    pub anytime: bool,
    /// Convert ops that are neither exact in time nor exact in rate (Softmax, Sigmoid, …)
    /// anyway, with a warning; leave near-QCFS chains unconverted.
    pub allow_inexact: bool,
    /// Standard ops, or one custom node per spiking layer.
    pub emit: Emit,
    /// θ for the ReLU-family activations, measured on sample inputs (`--calibrate`):
    /// they convert as QCFS sites of that θ. Without it, a ReLU is not a spiking layer.
    pub calibration: Option<std::sync::Arc<crate::calibrate::Calibration>>,
    /// How the ops exact in rate are compensated.
    pub compensation: Compensation,
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
            compensation: Compensation::Regions,
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
