//! The spiking layer of gn-transpile, defined once for every runtime: the op types of the
//! `gn.transpile` domain, their attribute names, the limits on τ and T, the check of a
//! layer's values, and the kernel loop. The converter writes nodes with these names and
//! limits, the tract kernels and the ONNX Runtime library (gn-ort-ops) read them and run
//! [`Kernel`], so every runtime computes the same bits (docs/design.md, "The neurons").
//!
//! Group Neuron of τ members with firing unit θ_GN = θ/τ, membrane kept in units of θ_GN
//! (`u = v/θ_GN`), on a current `x(t)`:
//!
//! ```text
//!   u(0) = v(0)/θ_GN = 1/2
//!   step t:  p = u + x(t)/θ_GN;  c = min(max(⌊p⌋, 0), τ);  u = p − c;  out(t) = c·θ_GN
//! ```
//!
//! IF is the same neuron with τ = 1 and θ_GN = θ. A layer calibrated per channel fires
//! channel c in units of θ_GN·θ_c.
//!
//! ```
//! use gn_neuron::{Kernel, OpType};
//!
//! let op = OpType::from_name("GroupNeuron").unwrap();
//! assert!(op.group && !op.direct && !op.per_channel);
//! // θ_GN = 0.5, τ = 4, v(0) = θ_GN/2, T = 2, a folded current [T·N] with N = 1.
//! let kernel = Kernel::new(0.5, 4, 0.25, 2, false).unwrap();
//! let mut out = [0f32; 2];
//! kernel.run(&[0.6, 0.6], &mut out);
//! assert_eq!(out, [0.5, 0.5]); // u: 0.5 + 1.2 = 1.7 → one spike, 0.7 + 1.2 = 1.9 → one spike
//! ```

mod kernel;
mod op;

pub use kernel::{check_factors, Kernel, BLOCK};
pub use op::{attr, OpType};

/// The ONNX domain of the spiking-layer ops.
pub const DOMAIN: &str = "gn.transpile";

/// Largest τ accepted: τ member thresholds per neuron.
pub const MAX_TAU: u32 = 1024;

/// Largest T accepted: the standard form holds about 6 nodes per step per spiking layer,
/// and a kernel's output is T times its current.
pub const MAX_TIMESTEPS: usize = 512;
