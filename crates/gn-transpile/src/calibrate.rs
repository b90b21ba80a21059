//! Thresholds for ReLU networks (`--calibrate`): a ReLU-family activation has no trained
//! θ, so one is set from the activation's values on sample inputs, a high percentile of
//! them (the robust normalisation of Rueckauer et al. 2017, as SpikingJelly's converter
//! and SNN Toolbox do), per layer or per output channel. The site then converts as a QCFS
//! site of that θ.
//!
//! This module holds what calibration records and computes, and how it enters the
//! conversion; it runs nothing. A [`Recording`] states what to record (the ANN with each
//! activation exposed as an output) and takes each batch's activations from whoever runs
//! the model: tract in the command line (`tract_calibrate`), ONNX Runtime in the
//! Python package. Each activation's values go into a [`Histogram`], which holds counts,
//! not values, so memory does not grow with the number of inputs, and the counts add up
//! to the same θ whatever the batches.

use serde::{Deserialize, Serialize};

use gn_onnx::proto::{ModelProto, ValueInfoProto};

use crate::detect::{Detection, PerChannel, ReluSite, Site};
use crate::error::TranspileError;

/// The default percentile.
pub const DEFAULT_PERCENTILE: f64 = 99.9;

/// θ of every ReLU-family site of one model, from its activations on sample inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The percentile of each activation's values (zeros included) taken as θ; 100 is
    /// the maximum.
    pub percentile: f64,
    /// θ per output channel (axis 1) instead of per layer.
    pub per_channel: bool,
    /// How many inputs the activations were recorded on.
    pub inputs: usize,
    pub layers: Vec<Threshold>,
}

/// The threshold chosen for one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The activation node's name.
    pub site: String,
    /// The value it writes (what identifies it).
    pub output: String,
    /// `Relu` or `Clip`.
    pub op: String,
    /// The layer's θ: the percentile over all its values (capped at a `Clip`'s bound).
    pub theta: f64,
    /// With `per_channel`: θ of each channel (a channel with no positive value on the
    /// inputs takes the layer's θ); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<f64>,
    /// The activation's rank (channels are axis 1).
    pub rank: usize,
    /// The largest value seen.
    pub max: f64,
    /// The share of values that were 0.
    pub zero_share: f64,
    /// Channels that were never positive on the inputs.
    #[serde(default)]
    pub dead_channels: usize,
}

impl Calibration {
    /// The sites the calibrated ReLU activations of `detection` become: each a site of
    /// the calibrated θ, with L = 0 (not quantized).
    pub fn sites(&self, detection: &Detection) -> Result<Vec<Site>, TranspileError> {
        let mut sites = Vec::new();
        for relu in &detection.relu_sites {
            let refuse = |reason: String| TranspileError::Node { node: relu.name.clone(), op: relu.op.clone(), reason };
            let t = self.layers.iter().find(|t| t.output == relu.output).ok_or_else(|| {
                refuse("the calibration has no θ for this activation (was it computed on another model?)".into())
            })?;
            let per_channel = match t.channels.is_empty() {
                true => None,
                false => {
                    if t.rank < 2 {
                        return Err(refuse(format!("per-channel θ on a tensor of rank {}", t.rank)));
                    }
                    Some(PerChannel { theta: t.channels.clone(), rank: t.rank })
                }
            };
            for &theta in std::iter::once(&t.theta).chain(&t.channels) {
                if !(theta.is_finite() && theta > 0.0) {
                    return Err(refuse(format!("the calibrated θ = {theta} is not a positive finite threshold")));
                }
            }
            let theta = if per_channel.is_some() { 1.0 } else { t.theta };
            sites.push(Site { per_channel, ..relu_site(relu, theta) });
        }
        Ok(sites)
    }
}

/// A calibration in progress: the ReLU-family activations of one ANN, what to run to
/// record them, and the statistics of the batches fed so far.
#[derive(Debug, Clone)]
pub struct Recording {
    sites: Vec<ReluSite>,
    model: ModelProto,
    outputs: usize,
    percentile: f64,
    per_channel: bool,
    stats: Vec<ActivationStats>,
    inputs: usize,
}

impl Recording {
    /// Starts calibrating `ann` at `percentile` (0 < p ≤ 100; 100 = the maximum), per
    /// layer or per output channel. Refuses a model without ReLU-family activations.
    pub fn new(ann: &ModelProto, percentile: f64, per_channel: bool) -> Result<Recording, TranspileError> {
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(TranspileError::Calibration(format!(
                "--percentile must be above 0 and at most 100, got {percentile}"
            )));
        }
        let graph = crate::check::prepare_ann(ann)?;
        let detection = crate::detect::detect(&graph);
        if detection.relu_sites.is_empty() {
            let why = match detection.sites.len() {
                0 => String::new(),
                n => format!(" (its {n} QCFS activations carry their trained θ: convert it without --calibrate)"),
            };
            return Err(TranspileError::Calibration(format!(
                "the model has no ReLU-family activation to calibrate{why}"
            )));
        }
        let mut model = ann.clone();
        let outputs = graph.output_names().len();
        if let Some(g) = model.graph.as_mut() {
            g.output.extend(
                detection
                    .relu_sites
                    .iter()
                    .map(|s| ValueInfoProto { name: Some(s.output.clone()), ..Default::default() }),
            );
        }
        let stats = vec![ActivationStats::default(); detection.relu_sites.len()];
        Ok(Recording { sites: detection.relu_sites, model, outputs, percentile, per_channel, stats, inputs: 0 })
    }

    /// The model to run: the ANN with the activations as outputs after its own.
    pub fn model(&self) -> &ModelProto {
        &self.model
    }

    /// How many of the model's outputs are the ANN's own (the activations follow).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The activations recorded, in the order [`Recording::add`] takes them.
    pub fn activations(&self) -> Vec<String> {
        self.sites.iter().map(|s| s.output.clone()).collect()
    }

    /// The statistics of one batch: each activation's shape (`[N, C, …]`) and values in
    /// row-major order, in [`Recording::activations`] order. Batches may be computed on
    /// several threads and merged with [`Recording::merge`] in any order.
    pub fn batch(&self, activations: &[(&[usize], &[f32])]) -> Result<Vec<ActivationStats>, TranspileError> {
        if activations.len() != self.sites.len() {
            return Err(TranspileError::Calibration(format!(
                "a calibration batch holds {} activations, the model has {}",
                activations.len(),
                self.sites.len()
            )));
        }
        activations
            .iter()
            .zip(&self.sites)
            .map(|(&(shape, values), site)| {
                if shape.iter().product::<usize>() != values.len() {
                    return Err(TranspileError::Node {
                        node: site.name.clone(),
                        op: site.op.clone(),
                        reason: format!("an activation of shape {shape:?} came with {} values", values.len()),
                    });
                }
                let mut s = ActivationStats::default();
                s.add(shape, values, self.per_channel);
                Ok(s)
            })
            .collect()
    }

    /// Adds the statistics of a batch of `rows` inputs.
    pub fn merge(&mut self, rows: usize, batch: &[ActivationStats]) {
        for (total, s) in self.stats.iter_mut().zip(batch) {
            total.merge(s);
        }
        self.inputs += rows;
    }

    /// [`Recording::batch`], then [`Recording::merge`].
    pub fn add(&mut self, rows: usize, activations: &[(&[usize], &[f32])]) -> Result<(), TranspileError> {
        let batch = self.batch(activations)?;
        self.merge(rows, &batch);
        Ok(())
    }

    /// The thresholds from everything fed.
    pub fn finish(self) -> Result<Calibration, TranspileError> {
        if self.inputs == 0 {
            return Err(TranspileError::Calibration("no calibration inputs".into()));
        }
        let p = self.percentile;
        let layers =
            self.sites.iter().zip(&self.stats).map(|(site, s)| s.threshold(site, p)).collect::<Result<_, _>>()?;
        Ok(Calibration { percentile: p, per_channel: self.per_channel, inputs: self.inputs, layers })
    }
}

/// The site a ReLU-family activation becomes at threshold θ (L = 0: not quantized).
pub fn relu_site(relu: &ReluSite, theta: f64) -> Site {
    Site {
        name: relu.name.clone(),
        input: relu.input.clone(),
        output: relu.output.clone(),
        theta,
        levels: 0,
        nodes: vec![relu.name.clone()],
        values: vec![relu.output.clone()],
        ops: relu.op.clone(),
        per_channel: None,
    }
}

/// Counts of non-negative values in bins of 1/256 octave from 2^-64 to 2^64 (values
/// below count in the lowest bin, above in the highest), plus the zeros and the exact
/// maximum. Octaves are allocated when first used: a layer's values span a few dozen.
#[derive(Debug, Clone)]
pub struct Histogram {
    zeros: u64,
    total: u64,
    max: f32,
    octaves: Vec<Option<Box<[u64; BINS]>>>,
}

const BINS: usize = 256;
const MIN_EXP: i32 = -64;
const OCTAVES: usize = 128;

impl Default for Histogram {
    fn default() -> Self {
        Histogram { zeros: 0, total: 0, max: 0.0, octaves: vec![None; OCTAVES] }
    }
}

impl Histogram {
    /// Adds a value of a ReLU-family activation; negative values (there are none) count
    /// as 0. Returns false for a NaN, which is not added.
    pub fn add(&mut self, v: f32) -> bool {
        if v.is_nan() {
            return false;
        }
        self.total += 1;
        if v <= 0.0 {
            self.zeros += 1;
            return true;
        }
        self.max = self.max.max(v);
        let (octave, bin) = Self::bin_of(v);
        self.octaves[octave].get_or_insert_with(|| Box::new([0; BINS]))[bin] += 1;
        true
    }

    fn bin_of(v: f32) -> (usize, usize) {
        if v.is_infinite() {
            return (OCTAVES - 1, BINS - 1);
        }
        let bits = v.to_bits();
        // Subnormals have exponent field 0: they fall in the lowest bin.
        let exp = ((bits >> 23) & 0xFF) as i32 - 127;
        let octave = exp - MIN_EXP;
        if octave < 0 || exp == -127 {
            return (0, 0);
        }
        if octave >= OCTAVES as i32 {
            return (OCTAVES - 1, BINS - 1);
        }
        (octave as usize, ((bits >> 15) & 0xFF) as usize)
    }

    /// The upper edge of a bin.
    fn upper_edge(octave: usize, bin: usize) -> f64 {
        2f64.powi(octave as i32 + MIN_EXP) * (1.0 + (bin + 1) as f64 / BINS as f64)
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        self.zeros += other.zeros;
        self.total += other.total;
        self.max = self.max.max(other.max);
        for (mine, theirs) in self.octaves.iter_mut().zip(&other.octaves) {
            if let Some(theirs) = theirs {
                let mine = mine.get_or_insert_with(|| Box::new([0; BINS]));
                for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                    *a += b;
                }
            }
        }
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value added (0 if none was positive).
    pub fn max(&self) -> f64 {
        self.max as f64
    }

    /// The share of values that were 0.
    pub fn zero_share(&self) -> f64 {
        self.zeros as f64 / self.total.max(1) as f64
    }

    /// The `p`-th percentile (nearest rank: the smallest value with at least p % of the
    /// values at or below it), rounded up to the edge of its bin (at most 1/256 octave,
    /// 0.3 %, above) and never above the maximum; `p` = 100 is the maximum. 0 when that
    /// rank falls among the zeros.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        if p >= 100.0 {
            return self.max();
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank <= self.zeros {
            return 0.0;
        }
        let mut seen = self.zeros;
        for (octave, bins) in self.octaves.iter().enumerate() {
            let Some(bins) = bins else { continue };
            for (bin, &count) in bins.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Self::upper_edge(octave, bin).min(self.max());
                }
            }
        }
        self.max()
    }
}

/// The histograms of one activation: all its values, and per channel with `per_channel`.
#[derive(Debug, Clone, Default)]
pub struct ActivationStats {
    pub layer: Histogram,
    pub channels: Vec<Histogram>,
    /// The activation's rank.
    pub rank: usize,
    /// NaNs seen (refused).
    pub nans: u64,
}

impl ActivationStats {
    /// Adds a batch of the activation's values, `shape` = [N, C, …] in row-major order.
    pub fn add(&mut self, shape: &[usize], values: &[f32], per_channel: bool) {
        self.rank = shape.len();
        let channels = if per_channel && shape.len() >= 2 { shape[1] } else { 0 };
        if self.channels.len() < channels {
            self.channels.resize_with(channels, Histogram::default);
        }
        let inner: usize = shape.iter().skip(2).product();
        for (i, &v) in values.iter().enumerate() {
            if !self.layer.add(v) {
                self.nans += 1;
                continue;
            }
            if channels > 0 {
                self.channels[(i / inner.max(1)) % channels].add(v);
            }
        }
    }

    /// Adds another batch's statistics.
    pub fn merge(&mut self, other: &ActivationStats) {
        self.rank = self.rank.max(other.rank);
        self.nans += other.nans;
        self.layer.merge(&other.layer);
        if self.channels.len() < other.channels.len() {
            self.channels.resize_with(other.channels.len(), Histogram::default);
        }
        for (a, b) in self.channels.iter_mut().zip(&other.channels) {
            a.merge(b);
        }
    }

    /// The threshold of the site writing this activation, at percentile `p`; an error
    /// naming why none can be set.
    pub fn threshold(&self, site: &crate::detect::ReluSite, p: f64) -> Result<Threshold, TranspileError> {
        let refuse = |reason: String| TranspileError::Node { node: site.name.clone(), op: site.op.clone(), reason };
        if self.nans > 0 {
            return Err(refuse(format!("the activation was NaN {} times on the calibration inputs", self.nans)));
        }
        let cap = |theta: f64| site.bound.map_or(theta, |c| theta.min(c));
        let theta = cap(self.layer.percentile(p));
        if theta <= 0.0 {
            return Err(refuse(format!(
                "the activation was {} on the calibration inputs, so no θ can be set from them{}",
                if self.layer.max() > 0.0 { "almost always 0" } else { "always 0" },
                if self.layer.max() > 0.0 {
                    format!(
                        " at percentile {p} (its {:.2} % zeros); try a higher --percentile",
                        self.layer.zero_share() * 100.0
                    )
                } else {
                    String::new()
                }
            )));
        }
        let mut dead = 0;
        let channels = self
            .channels
            .iter()
            .map(|h| match cap(h.percentile(p)) {
                t if t > 0.0 => t,
                _ => {
                    dead += 1;
                    theta
                }
            })
            .collect();
        Ok(Threshold {
            site: site.name.clone(),
            output: site.output.clone(),
            op: site.op.clone(),
            theta,
            channels,
            rank: self.rank,
            max: self.layer.max(),
            zero_share: self.layer.zero_share(),
            dead_channels: dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest-rank percentile of the values, exactly.
    fn exact(values: &[f32], p: f64) -> f64 {
        let mut v: Vec<f32> = values.iter().map(|&x| x.max(0.0)).collect();
        v.sort_by(f32::total_cmp);
        let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        // A ReLU of a heavy-tailed mixture: half zeros, values over six octaves.
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                let x = (u - 0.5) * 2.0;
                (x * x * x * 40.0) as f32
            })
            .collect()
    }

    #[test]
    fn percentiles_are_within_one_bin_above_the_exact_ones() {
        let v = values(100_000, 7);
        let mut h = Histogram::default();
        v.iter().for_each(|&x| assert!(h.add(x)));
        for p in [50.0, 90.0, 99.0, 99.9, 99.99] {
            let (got, want) = (h.percentile(p), exact(&v, p));
            assert!(got >= want && got <= want * (1.0 + 1.0 / 256.0) + 1e-12, "p{p}: {got} vs exact {want}");
        }
        assert_eq!(h.percentile(100.0), exact(&v, 100.0));
        assert_eq!(h.percentile(10.0), 0.0, "the lower half are zeros");
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn merged_histograms_equal_one_over_all_values() {
        let v = values(30_000, 3);
        let mut whole = Histogram::default();
        v.iter().for_each(|&x| _ = whole.add(x));
        let mut parts = Histogram::default();
        for chunk in v.chunks(7_000) {
            let mut h = Histogram::default();
            chunk.iter().for_each(|&x| _ = h.add(x));
            parts.merge(&h);
        }
        for p in [1.0, 50.0, 99.0, 99.9, 100.0] {
            assert_eq!(parts.percentile(p), whole.percentile(p));
        }
    }

    #[test]
    fn extremes_land_in_the_end_bins() {
        let mut h = Histogram::default();
        for v in [1e-30f32, f32::MIN_POSITIVE / 4.0, 1e30, f32::INFINITY, -3.0, 0.0] {
            assert!(h.add(v));
        }
        assert!(!h.add(f32::NAN));
        assert_eq!(h.count(), 6);
        assert_eq!(h.zero_share(), 2.0 / 6.0);
        assert_eq!(h.percentile(100.0), f64::INFINITY);
    }

    #[test]
    fn per_channel_thresholds_and_dead_channels() {
        // [N = 2, C = 3, 2]: channel 0 up to 1, channel 1 up to 8, channel 2 never positive.
        let x = [0.5, 1.0, 4.0, 8.0, -1.0, 0.0, 0.25, 0.75, 2.0, 6.0, 0.0, -2.0];
        let mut stats = ActivationStats::default();
        stats.add(&[2, 3, 2], &x, true);
        let site = crate::detect::ReluSite {
            name: "r".into(),
            input: "x".into(),
            output: "y".into(),
            op: "Relu".into(),
            bound: None,
        };
        let t = stats.threshold(&site, 100.0).unwrap();
        assert_eq!(t.channels, vec![1.0, 8.0, 8.0]);
        assert_eq!((t.theta, t.dead_channels, t.rank), (8.0, 1, 3));
        // A Clip(0, 6) caps θ at 6.
        let t = stats.threshold(&crate::detect::ReluSite { bound: Some(6.0), ..site.clone() }, 100.0).unwrap();
        assert_eq!(t.channels, vec![1.0, 6.0, 6.0]);
        // All zeros: refused, naming the site.
        let mut dead = ActivationStats::default();
        dead.add(&[2, 2], &[0.0, -1.0, 0.0, 0.0], false);
        let err = dead.threshold(&site, 99.9).unwrap_err().to_string();
        assert!(err.contains("'r'") && err.contains("always 0"), "{err}");
    }
}
