//! Measuring a conversion on real data: the ANN and its spiking versions run side by
//! side (on tract, or any [`Runtime`]), and the figures of the paper's Table 1 (output MSE per T, IF
//! against GN) and Table 2 (top-1 accuracy per T) are computed, with per-layer errors
//! and firing rates that show where the error enters.
//!
//! One run of the `--anytime` model at the largest T gives the readout for every
//! shorter T (docs/design.md §3): the first t steps of a T-step run are a t-step run.

mod cost;
mod measure;
mod metrics;
mod npy;
mod pareto;
pub mod plot;
mod report;
mod run;
mod runtime;
mod types;

pub use cost::{footprint, Cost, EnergyTable, Operations, WeightedLayer, ENERGY_PRESETS};
#[cfg(feature = "tract")]
pub use measure::measure;
pub use measure::measure_on;
pub use metrics::{accuracy, mse, relative_mse, top1};
pub use npy::{read_npy_inputs, read_npy_labels};
pub use pareto::{Pareto, ParetoPoint};
pub use report::{cost_table, energy, si};
pub use run::{batch_for, initial_states, run_batched_on, run_stateful_on, static_batch};
#[cfg(feature = "tract")]
pub use run::{run_batched, run_batched_as, run_stateful};
#[cfg(feature = "tract")]
pub use runtime::Tract;
pub use runtime::{Plan, Runtime};
pub use types::{Curve, Exactness, Layer, Measurement, Spec, StatefulAgreement, VerifyError};
