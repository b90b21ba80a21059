//! The harness configuration, `xtask/verify.yaml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct Config {
    pub data: DataConfig,
    pub tau: u32,
    pub timesteps: Vec<usize>,
    pub layer_timesteps: Vec<usize>,
    pub layer_images: usize,
    pub batch: usize,
    pub short_max: usize,
    pub long_images: usize,
    pub long_images_full: usize,
    pub models: Vec<ModelConfig>,
    pub pareto: ParetoConfig,
    pub custom_op: CustomOpConfig,
    pub stateful: StatefulConfig,
    /// Images for the runtime matrix (onnx.reference is slow).
    pub runtime_images: usize,
    /// The same with `--full`.
    pub runtime_images_full: usize,
    pub gates: Gates,
}

#[derive(Deserialize)]
pub struct CustomOpConfig {
    pub timesteps: Vec<usize>,
}

#[derive(Deserialize)]
pub struct StatefulConfig {
    pub calls: usize,
}

#[derive(Deserialize)]
pub struct DataConfig {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub ci_images: usize,
}

#[derive(Clone, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub path: PathBuf,
    /// A ReLU network: θ from its activations on these inputs (training images, never
    /// the evaluation ones), at `percentile`, per channel or per layer.
    #[serde(default)]
    pub calibrate: Option<PathBuf>,
    #[serde(default)]
    pub percentile: Option<f64>,
    #[serde(default)]
    pub per_channel: bool,
    /// Measured by `--full` only (the tables of docs/results.md), not by the CI run.
    #[serde(default)]
    pub full_only: bool,
}

/// The accuracy-for-energy table: GN at each τ (and IF) at the per-layer T.
#[derive(Deserialize)]
pub struct ParetoConfig {
    pub models: Vec<String>,
    /// Models measured so only with `--full`.
    #[serde(default)]
    pub models_full: Vec<String>,
    pub taus: Vec<u32>,
}

impl ParetoConfig {
    /// The τ values of `model`'s table: empty for a model without one.
    pub fn taus_of(&self, model: &str, full: bool) -> Vec<u32> {
        let listed = self.models.iter().chain(self.models_full.iter().filter(|_| full)).any(|m| m == model);
        if listed {
            self.taus.clone()
        } else {
            Vec::new()
        }
    }
}

#[derive(Deserialize, Serialize, Clone)]
pub struct Gates {
    pub exactness_min_top1_agreement: f64,
    pub exactness_max_relative_mse: f64,
    pub ratio_model: String,
    pub ratio_max: f64,
    pub ratio_up_to_t: usize,
    pub ort_max_share_beyond_1e4_t1: f64,
    pub ort_max_relative_mse: f64,
    pub ort_max_top1_flip_share: f64,
    pub custom_op_max_abs_diff: f64,
    pub built_max_abs_diff: f64,
    pub stateful_max_abs_diff: f64,
    pub stateful_max_relative_mse: f64,
    pub stateful_max_top1_flip_share: f64,
    pub relu_up_to_t: usize,
    pub relu_max_accuracy_drop: f64,
}
