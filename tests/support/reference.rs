//! An independent reference simulator, written straight from the paper's equations
//! (8)-(11) and docs/design.md §2, with member thresholds and Heaviside steps taken literally.
//! It shares no code with the emitter: it runs a small MLP of Gemm and QCFS layers.

use gn_onnx::proto::ModelProto;
use ndarray::{Array1, Array2};

use crate::ModelBuilder;

/// One layer of a small reference network.
#[derive(Debug, Clone)]
pub enum Layer {
    /// `x @ wᵀ + b`, w of shape [out, in].
    Gemm { w: Array2<f32>, b: Array1<f32> },
    /// QCFS with threshold θ and L levels.
    Qcfs { theta: f32, levels: u32 },
}

/// The neuron model to simulate.
#[derive(Debug, Clone, Copy)]
pub enum Model {
    /// Integrate-and-fire with threshold θ.
    If,
    /// Group Neuron of τ members.
    Group { tau: u32 },
}

/// The QCFS ANN: a = θ · clip(floor(x·L/θ + 1/2) / L, 0, 1).
pub fn ann(layers: &[Layer], x: &Array2<f32>) -> Array2<f32> {
    let mut h = x.clone();
    for layer in layers {
        h = match layer {
            Layer::Gemm { w, b } => h.dot(&w.t()) + b,
            Layer::Qcfs { theta, levels } => {
                let l = *levels as f32;
                h.mapv(|v| theta * ((v * l / theta + 0.5).floor() / l).clamp(0.0, 1.0))
            }
        };
    }
    h
}

/// The SNN under direct encoding: for each step t = 1..T the readout averaged over
/// steps 1..t (the anytime readout); element T−1 is the T-step readout.
pub fn snn(layers: &[Layer], x: &Array2<f32>, model: Model, timesteps: usize) -> Vec<Array2<f32>> {
    simulate(layers, x, model, timesteps).0
}

/// [`snn`], and for each step t the member spikes fired so far, per layer (one entry per
/// `Qcfs` layer, summed over all neurons and inputs).
pub fn simulate(
    layers: &[Layer],
    x: &Array2<f32>,
    model: Model,
    timesteps: usize,
) -> (Vec<Array2<f32>>, Vec<Vec<u64>>) {
    simulate_inputs(layers, &vec![x.clone(); timesteps], model)
}

/// [`simulate`] with input `xs[t − 1]` at step t (a different input at each step).
pub fn simulate_inputs(layers: &[Layer], xs: &[Array2<f32>], model: Model) -> (Vec<Array2<f32>>, Vec<Vec<u64>>) {
    let timesteps = xs.len();
    // Member thresholds θ_i = i·θ/τ (Algorithm 1); IF has the single threshold θ.
    let members = |theta: f32| -> (Vec<f32>, f32) {
        match model {
            Model::If => (vec![theta], theta),
            Model::Group { tau } => ((1..=tau).map(|i| i as f32 * theta / tau as f32).collect(), theta / tau as f32),
        }
    };
    let mut membranes: Vec<Option<Array2<f32>>> = vec![None; layers.len()];
    let mut sum: Option<Array2<f32>> = None;
    let mut readouts = Vec::with_capacity(timesteps);
    let mut fired = vec![0u64; layers.len()];
    let mut spikes = Vec::with_capacity(timesteps);
    for (t, x) in (1..=timesteps).zip(xs) {
        let mut h = x.clone();
        for (k, layer) in layers.iter().enumerate() {
            h = match layer {
                Layer::Gemm { w, b } => h.dot(&w.t()) + b,
                Layer::Qcfs { theta, .. } => {
                    let (thresholds, unit) = members(*theta);
                    // v(0) = θ_GN / 2 for every member (θ/2 for IF).
                    let v = membranes[k].get_or_insert_with(|| Array2::from_elem(h.dim(), unit / 2.0));
                    let mut out = Array2::zeros(h.dim());
                    for ((vi, &xi), oi) in v.iter_mut().zip(h.iter()).zip(out.iter_mut()) {
                        let p = *vi + xi; // eq. (8): charge
                                          // eq. (9): member i fires iff p ≥ θ_i; eq. (11): aggregate the spikes.
                        let count = thresholds.iter().filter(|&&th| p >= th).count() as f32;
                        fired[k] += count as u64;
                        *vi = p - count * unit; // eq. (10): lateral soft reset
                        *oi = count * unit;
                    }
                    out
                }
            };
        }
        let s = match sum.take() {
            Some(s) => s + &h,
            None => h,
        };
        readouts.push(&s / t as f32);
        sum = Some(s);
        let per_layer = layers.iter().zip(&fired).filter(|(l, _)| matches!(l, Layer::Qcfs { .. }));
        spikes.push(per_layer.map(|(_, &f)| f).collect());
    }
    (readouts, spikes)
}

/// A deterministic pseudo-random matrix in [-scale, scale].
pub fn matrix(rows: usize, cols: usize, seed: u64, scale: f32) -> Array2<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
    })
}

/// A small MLP: Gemm → QCFS → Gemm → QCFS → Gemm, as layers and as an ONNX model.
pub fn mlp(levels: u32, seed: u64) -> (Vec<Layer>, ModelProto) {
    let shapes = [(6, 12), (12, 10), (10, 4)];
    let thetas = [1.3f32, 0.9];
    let mut layers = Vec::new();
    let mut b = ModelBuilder::new(&[6]);
    let mut h = "input".to_string();
    for (k, &(i, o)) in shapes.iter().enumerate() {
        let w = matrix(o, i, seed + k as u64, 0.8);
        let bias = matrix(1, o, seed + 10 + k as u64, 0.3).into_shape_with_order(o).unwrap();
        h = b.gemm(&h, &w, bias.as_slice().unwrap());
        layers.push(Layer::Gemm { w, b: Array1::from(bias.to_vec()) });
        if k < thetas.len() {
            h = b.qcfs(&h, thetas[k], levels);
            layers.push(Layer::Qcfs { theta: thetas[k], levels });
        }
    }
    (layers, b.finish(&h, &[4]))
}
