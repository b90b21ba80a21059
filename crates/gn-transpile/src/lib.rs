//! gn-transpile: QCFS ANN in, Group-Neuron SNN out, as standard ONNX.
//!
//! [`transpile`] converts a model read with [`gn_onnx::io::load`] (or decoded from bytes)
//! into a spiking network per [`Options`], and reports what it found ([`Report`]);
//! [`inspect::audit`] says what a model holds and why each op converts or not, without
//! converting; [`calibrate`] sets the thresholds of a plain ReLU network from sample
//! inputs; [`metadata`] reads the record a converted model carries.
//!
//! ```
//! use gn_transpile::{transpile, NeuronKind, Options};
//!
//! let ann = gn_onnx::io::load("../../fixtures/models/cnn_l4.onnx".as_ref())?.model;
//! let options = Options { neuron: NeuronKind::Gn, tau: 4, timesteps: 4, ..Default::default() };
//! let (snn, report) = transpile(&ann, &options)?;
//! assert_eq!(report.spiking_layers.len(), report.detection.sites.len());
//! let record = gn_transpile::metadata::Metadata::read(&snn).expect("a converted model")?;
//! assert_eq!((record.tau, record.timesteps), (4, 4));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Inside, the conversion is a pipeline of passes over the graph IR of [`gn_onnx::Graph`]
//! (the paper's Fig. 1(b)), each a module that plans a patch (`pass.rs`), listed in order
//! in `pipeline.rs`:
//!
//! ```text
//! ONNX → check → detect (QCFS sites) → convert (IF neurons) → commute (max-pools)
//!      → group (Algorithm 1: GN) → lower (time folded into the batch)
//!      → emit (readout; standard, custom-op or stateful form; metadata) → ONNX
//! ```
//!
//! The passes share the configuration (`options.rs`, `opset.rs`), one table of op facts
//! (`ops.rs`), the time analysis (`time.rs`), the rate-coded forms (`rate.rs`) and the
//! neuron's definition (`neuron.rs`, over the `gn-neuron` crate that the runtimes' kernels
//! share); docs/design.md says what is computed and why.

pub mod calibrate;
mod check;
mod commute;
mod convert;
pub mod detect;
mod emit;
mod error;
mod function;
mod group;
pub mod inspect;
mod lower;
pub mod metadata;
mod neuron;
mod ops;
mod opset;
mod options;
mod pass;
mod per_step;
mod pipeline;
mod rank;
mod rate;
mod rebatch;
mod rows;
mod shapes;
pub mod spikes;
#[cfg(test)]
mod test_graphs;
mod time;
#[cfg(feature = "tract")]
pub mod tract_calibrate;
#[cfg(feature = "tract")]
pub mod tract_ops;

pub use check::{prepare, prepare_ann};
pub use commute::Move;
pub use error::TranspileError;
pub use neuron::NeuronKind;
pub use opset::default_opset;
pub use options::{Compensation, Emit, Options, MAX_TAU, MAX_TIMESTEPS};
pub use pipeline::{find_sites, transpile, Report};
pub use time::static_batch;

/// The ONNX domain of the spiking-layer nodes.
pub const DOMAIN: &str = gn_neuron::DOMAIN;
/// The version of [`DOMAIN`] recorded in `opset_import` when its nodes are emitted.
pub const DOMAIN_VERSION: i64 = 1;
/// The tool's version, recorded in the emitted model's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
