//! gn-transpile: QCFS ANN in, Group-Neuron SNN out, as standard ONNX.
//!
//! The conversion is a pipeline of passes over the graph IR of [`gn_onnx::Graph`],
//! listed in order in [`pipeline`] (the paper's Fig. 1(b)):
//!
//! ```text
//! ONNX → detect (QCFS sites) → convert (IF neurons) → group (Algorithm 1: GN)
//!      → lower (time folded into the batch, T steps unrolled) → emit (readout, metadata) → ONNX
//! ```
//!
//! The neurons themselves (SPEC §2) are defined once, in [`neuron`].

pub mod calibrate;
pub mod check;
pub mod commute;
pub mod convert;
pub mod detect;
pub mod emit;
pub mod error;
pub mod group;
pub mod inspect;
pub mod lower;
pub mod metadata;
pub mod neuron;
mod ops;
pub mod options;
pub mod opset;
pub mod pass;
pub mod pipeline;
pub mod rank;
pub mod rate;
pub mod time;
#[cfg(feature = "tract")]
pub mod tract_ops;

pub use error::TranspileError;
pub use neuron::NeuronKind;
pub use options::{Emit, Options, MAX_TAU, MAX_TIMESTEPS};
pub use pipeline::{transpile, Report};

/// The ONNX domain of the spiking-layer nodes that exist between passes.
pub const DOMAIN: &str = gn_neuron::DOMAIN;
/// The version of [`DOMAIN`] recorded in `opset_import` when its nodes are emitted.
pub const DOMAIN_VERSION: i64 = 1;
/// The tool's version, recorded in the emitted model's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
