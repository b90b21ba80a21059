//! Measuring a conversion on real data: the ANN and its spiking versions run side by
//! side through tract, and the figures of the paper's Table 1 (output MSE per T, IF
//! against GN) and Table 2 (top-1 accuracy per T) are computed, with per-layer errors
//! and firing rates that show where the error enters.
//!
//! One run of the `--anytime` model at the largest T gives the readout for every
//! shorter T (SPEC §3): the first t steps of a T-step run are a t-step run.

use std::sync::Arc;

pub mod calibrate;

use gn_onnx::proto::{ModelProto, ValueInfoProto};
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use gn_transpile::detect::Site;
use gn_transpile::pipeline::find_sites;
use gn_transpile::{transpile, Emit, Options};
use gn_transpile::NeuronKind;

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

/// The τ = L, T = 1 check (SPEC §4.1).
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
    /// Elements of the activation per image.
    pub neurons: usize,
}

/// Everything measured on one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub images: usize,
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
    /// Multiply-accumulates of the ANN and synaptic operations of the SNNs, per image.
    pub operations: Option<Operations>,
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
    #[error(transparent)]
    Tract(#[from] gn_onnx::tract_bridge::TractError),
    #[error("{0}")]
    Data(String),
}

/// The static batch N of a model whose inputs all declare the same numeric leading
/// dimension (the lower pass's definition).
pub fn static_batch(model: &ModelProto) -> Option<usize> {
    let graph = gn_onnx::Graph::new(model.graph.clone()?);
    gn_transpile::time::static_batch(&graph).map(|n| n as usize)
}

/// The images per run: the model's static batch if it has one, else `requested`.
pub fn batch_for(model: &ModelProto, requested: usize) -> usize {
    static_batch(model).unwrap_or(requested.max(1))
}

/// Runs `model` on `x` in parallel batches (of the model's static batch, if it has one);
/// returns every output, concatenated along the batch axis (axis 1 for the outputs the
/// conversion wrote with the steps in front: `gn_transpile.anytime_outputs`).
pub fn run_batched(
    model: &ModelProto,
    x: &ArrayD<f32>,
    batch: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ArrayD<f32>>, VerifyError> {
    run_batched_as(model, x, batch, true, progress)
}

/// [`run_batched`], on a plan tract optimised or not (unoptimised, tract evaluates every
/// op as written, without folding constants into its neighbours).
pub fn run_batched_as(
    model: &ModelProto,
    x: &ArrayD<f32>,
    batch: usize,
    optimize: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ArrayD<f32>>, VerifyError> {
    let batch = batch_for(model, batch);
    let rows = x.shape().first().copied().unwrap_or(0);
    if static_batch(model).is_some() && rows % batch != 0 {
        return Err(VerifyError::Data(format!(
            "the model's inputs have a static batch of {batch}, and {rows} inputs are not a multiple of it"
        )));
    }
    let plan = Arc::new(gn_transpile::tract_ops::load(model, optimize)?);
    let names: Vec<String> =
        model.graph.as_ref().map(|g| g.output.iter().map(|o| o.name().to_string()).collect()).unwrap_or_default();
    let stacked = gn_transpile::metadata::Metadata::read(model).and_then(Result::ok).map(|m| m.anytime_outputs);
    let stacked = stacked.unwrap_or_default();
    let chunks: Vec<ArrayD<f32>> = x.axis_chunks_iter(Axis(0), batch.max(1)).map(|c| c.to_owned()).collect();
    let results: Result<Vec<Vec<ArrayD<f32>>>, VerifyError> = chunks
        .into_par_iter()
        .map(|c| {
            let n = c.shape()[0];
            let out = plan.run(vec![c]).map_err(VerifyError::from);
            progress(n);
            out
        })
        .collect();
    let results = results?;
    let outputs = names.len();
    if results.iter().any(|r| r.len() != outputs) {
        return Err(VerifyError::Data(format!(
            "tract returned a different number of outputs than the model's {outputs}"
        )));
    }
    (0..outputs)
        .map(|i| {
            let axis = if names.get(i).is_some_and(|n| stacked.contains(n)) { 1 } else { 0 };
            let views: Vec<_> = results.iter().map(|r| r[i].view()).collect();
            ndarray::concatenate(Axis(axis), &views).map_err(|e| VerifyError::Data(e.to_string()))
        })
        .collect()
}

/// The state tensors of a stateful model before its first call, for a batch of `n`:
/// each of its shape, filled with its `init`.
pub fn initial_states(states: &[gn_transpile::metadata::State], n: usize) -> Vec<ArrayD<f32>> {
    states.iter().map(|s| ArrayD::from_elem(IxDyn(&s.dims(n)), s.init)).collect()
}

/// Runs a stateful model (`--emit stateful`) for `steps.len()` calls, input `steps[t]`
/// at call t, each state filled with its `init` before the first call and fed back
/// after each; returns the model's non-state outputs after every call.
pub fn run_stateful(model: &ModelProto, steps: &[ArrayD<f32>]) -> Result<Vec<Vec<ArrayD<f32>>>, VerifyError> {
    let states = gn_transpile::metadata::states(model).ok_or_else(|| {
        VerifyError::Data("the model has no gn_transpile.state metadata: it is not a stateful model".into())
    })?;
    let Some(first) = steps.first() else { return Ok(Vec::new()) };
    let n = first.shape().first().copied().unwrap_or(1);
    let plan = gn_transpile::tract_ops::load(model, true)?;
    let mut state = initial_states(&states, n);
    let mut readouts = Vec::with_capacity(steps.len());
    for x in steps {
        let mut inputs = vec![x.clone()];
        inputs.extend(state.iter().cloned());
        let mut outputs = plan.run(inputs)?;
        state = outputs.split_off(outputs.len() - states.len());
        readouts.push(outputs);
    }
    Ok(readouts)
}

/// Reads inputs from a float32 `.npy` file: the batch on axis 0, at least one input.
pub fn read_npy_inputs(path: &std::path::Path) -> Result<ArrayD<f32>, VerifyError> {
    use gn_onnx::data::{read_npy, NpyData};
    let what = path.display();
    let npy = read_npy(path).map_err(|e| VerifyError::Data(e.to_string()))?;
    let NpyData::F32(data) = npy.data else {
        return Err(VerifyError::Data(format!("{what}: inputs must be a float32 (<f4) .npy")));
    };
    match npy.shape.first() {
        None => {
            return Err(VerifyError::Data(format!("{what}: inputs must have the batch on axis 0, not be a scalar")))
        }
        Some(0) => return Err(VerifyError::Data(format!("{what}: holds no inputs (the batch axis is 0)"))),
        _ => {}
    }
    ArrayD::from_shape_vec(IxDyn(&npy.shape), data).map_err(|e| VerifyError::Data(format!("{what}: {e}")))
}

/// Reads non-negative integer labels from a `.npy` file of int64, int32 or uint8 values.
pub fn read_npy_labels(path: &std::path::Path) -> Result<Vec<usize>, VerifyError> {
    use gn_onnx::data::{read_npy, NpyData};
    let what = path.display();
    let npy = read_npy(path).map_err(|e| VerifyError::Data(e.to_string()))?;
    let values: Vec<i64> = match npy.data {
        NpyData::I64(v) => v,
        NpyData::I32(v) => v.into_iter().map(i64::from).collect(),
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        _ => return Err(VerifyError::Data(format!("{what}: labels must be an int64, int32 or uint8 .npy"))),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v).map_err(|_| VerifyError::Data(format!("{what}: label {i} is {v}, not a class index")))
        })
        .collect()
}

/// Mean squared difference of two arrays of one shape.
pub fn mse(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// MSE of `got` against `reference`, relative to the mean square of `reference`.
pub fn relative_mse(got: &ArrayD<f32>, reference: &ArrayD<f32>) -> f64 {
    let ms = reference.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / reference.len().max(1) as f64;
    mse(got, reference) / ms
}

/// Index of the largest value in each row (over all but the first axis).
pub fn top1(a: &ArrayD<f32>) -> Vec<usize> {
    a.outer_iter()
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect()
}

fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / pred.len().max(1) as f64
}

/// Adds each site's output as a graph output named like the value, so that tract
/// returns it.
fn expose(model: &ModelProto, values: &[String]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        for v in values {
            g.output.push(ValueInfoProto { name: Some(v.clone()), ..Default::default() });
        }
    }
    m
}

/// Measures `ann` on images `x` (batch on axis 0) with optional labels.
pub fn measure(
    ann: &ModelProto,
    x: &ArrayD<f32>,
    labels: Option<&[usize]>,
    spec: &Spec,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Measurement, VerifyError> {
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(VerifyError::Data("no inputs: the data needs the batch on axis 0 and at least one input".into()));
    }
    if let Some(l) = labels {
        if l.len() != n {
            return Err(VerifyError::Data(format!("{} labels for {n} inputs", l.len())));
        }
    }
    gn_transpile::Options { tau: spec.tau, ..Default::default() }.validate()?;
    if let Some(&t) = spec.timesteps.iter().find(|&&t| t == 0 || t > gn_transpile::MAX_TIMESTEPS) {
        return Err(VerifyError::Data(format!(
            "T = {t} is out of range (1 to {})",
            gn_transpile::MAX_TIMESTEPS
        )));
    }
    let t_max = spec.timesteps.iter().copied().max().unwrap_or(1);
    let graph = gn_transpile::pipeline::prepare(ann)?;
    let outputs = graph.output_names();
    if outputs.len() != 1 {
        return Err(VerifyError::Data(format!(
            "verify compares one output, and the model has {} ({})",
            outputs.len(),
            outputs.join(", ")
        )));
    }
    let calibration = spec.calibration.clone();
    let sites: Vec<Site> = find_sites(&graph, false, calibration.as_deref())?.sites;
    if let Some(s) = sites.iter().find(|s| s.output == outputs[0]) {
        return Err(VerifyError::Data(format!(
            "the QCFS site '{}' writes the graph output '{}' itself; verify reads a layer after the last activation",
            s.name, s.output
        )));
    }
    let mut levels: Vec<u32> = sites.iter().map(|s| s.levels).collect();
    levels.sort();
    levels.dedup();

    let ann_out = run_batched(ann, x, spec.batch, &|k| progress("ANN", k, n))?.remove(0);
    let ann_pred = top1(&ann_out);
    let ann_accuracy = labels.map(|l| accuracy(&ann_pred, l));

    // T ≤ short_max on every image; longer T on the first `long_images` (one anytime run each).
    let t_short = spec.timesteps.iter().copied().filter(|&t| t <= spec.short_max).max().unwrap_or(1);
    let long = spec.long_images.min(n);
    let m = spec.layer_images.min(n).min(long.max(1));
    let xl = x.slice_axis(Axis(0), (0..long).into()).to_owned();
    let ann_accuracy_long = labels.map(|l| accuracy(&ann_pred[..long], &l[..long]));
    let mut curves = Vec::new();
    let mut emitted = Vec::new();
    let mut emitted_outputs = Vec::new();
    for (neuron, tau) in [(NeuronKind::If, 1), (NeuronKind::Gn, spec.tau)] {
        let tag = neuron.to_string();
        let mut curve = Curve { neuron, tau, mse: Vec::new(), accuracy: Vec::new() };
        for (pass, (steps, images)) in [(t_short, n), (t_max, long)].into_iter().enumerate() {
            // The second pass covers T above short_max, if any.
            if pass == 1 && t_max == t_short {
                continue;
            }
            let options = Options {
                neuron,
                tau,
                timesteps: steps,
                anytime: true,
                allow_inexact: false,
                calibration: calibration.clone(),
                ..Default::default()
            };
            let (snn, _) = transpile(ann, &options)?;
            let label = format!("{tag} T={steps}");
            let input = if images == n { x } else { &xl };
            let outs = run_batched(&snn, input, spec.batch, &|k| progress(&label, k, images))?;
            let reference = ann_out.slice_axis(Axis(0), (0..images).into()).to_owned();
            for &t in spec.timesteps.iter().filter(|&&t| if pass == 0 { t <= t_short } else { t > t_short }) {
                let readout = outs[1].index_axis(Axis(0), t - 1).to_owned();
                curve.mse.push((t, mse(&readout, &reference)));
                if let Some(l) = labels {
                    curve.accuracy.push((t, accuracy(&top1(&readout), &l[..images])));
                }
            }
            if steps == t_max {
                emitted_outputs.push(vec![
                    outs[0].slice_axis(Axis(0), (0..m).into()).to_owned(),
                    outs[1].slice_axis(Axis(1), (0..m).into()).to_owned(),
                ]);
                emitted.push((format!("{}_t{t_max}", tag.to_lowercase()), snn));
            }
        }
        curves.push(curve);
    }

    // The stateful form: one call per step, against the GN anytime rows just computed.
    // (A model whose state shapes are not fixed has no stateful form: skipped.)
    let calls = spec.layer_timesteps.iter().copied().max().unwrap_or(1).min(t_max);
    let options = Options {
        neuron: NeuronKind::Gn,
        tau: spec.tau,
        emit: Emit::Stateful,
        calibration: calibration.clone(),
        ..Default::default()
    };
    let stateful = if let Ok((model, _)) = transpile(ann, &options) {
        // A static-batch model's states hold its batch: the calls run on that many images.
        let m = static_batch(ann).map_or(m, |b| b.min(m));
        let xm = x.slice_axis(Axis(0), (0..m).into()).to_owned();
        progress("GN stateful", 0, m);
        let readouts = run_stateful(&model, &vec![xm; calls])?;
        progress("GN stateful", m, m);
        let rows = &emitted_outputs[1][1];
        let max_abs_diff = readouts
            .iter()
            .enumerate()
            .flat_map(|(t, r)| {
                let row = rows.index_axis(Axis(0), t);
                let row = row.slice_axis(Axis(0), (0..m).into());
                r[0].iter().zip(row).map(|(a, b)| (a - b).abs() as f64).collect::<Vec<_>>()
            })
            .fold(0.0, f64::max);
        Some(StatefulAgreement { calls, images: m, max_abs_diff })
    } else {
        None
    };

    // SPEC §4.1: τ = L at T = 1 reproduces the ANN (only when all sites share one L; a
    // calibrated ReLU site, L = 0, is not quantized in the ANN).
    let exactness = match levels.as_slice() {
        [l] if *l > 0 => {
            let options = Options {
                neuron: NeuronKind::Gn,
                tau: *l,
                timesteps: 1,
                anytime: false,
                allow_inexact: false,
                ..Default::default()
            };
            let (snn, _) = transpile(ann, &options)?;
            let out = run_batched(&snn, x, spec.batch, &|k| progress("GN τ=L T=1", k, n))?.remove(0);
            let pred = top1(&out);
            let flips = pred.iter().zip(&ann_pred).filter(|(a, b)| a != b).count();
            emitted.push((format!("gn_tau{l}_t1"), snn));
            emitted_outputs.push(vec![out.slice_axis(Axis(0), (0..m).into()).to_owned()]);
            Some(Exactness {
                tau: *l,
                top1_agreement: 1.0 - flips as f64 / n as f64,
                flips,
                relative_mse: relative_mse(&out, &ann_out),
            })
        }
        _ => None,
    };

    // Per layer, on a prefix of the data.
    let xs = x.slice_axis(Axis(0), (0..m).into()).to_owned();
    // A site whose max-pool moved in front of it writes the pool's output in the SNN: the
    // layer is compared there, against the ANN's pooled activation.
    let (_, report) =
        transpile(ann, &Options { timesteps: 1, calibration: calibration.clone(), ..Default::default() })?;
    let site_values: Vec<String> = sites
        .iter()
        .map(|s| {
            let moved = report.moves.iter().find(|m| m.activation == s.output);
            moved.map_or_else(|| s.output.clone(), |m| m.output.clone())
        })
        .collect();
    let ann_acts = run_batched(&expose(ann, &site_values), &xs, spec.batch, &|k| progress("ANN layers", k, m))?;
    let t_layer = spec.layer_timesteps.iter().copied().max().unwrap_or(1);
    // Per neuron model: per site, (T, MSE) and (T, firing rate).
    type Series = Vec<(usize, f64)>;
    let mut per_neuron: Vec<(Vec<Series>, Vec<Series>)> = Vec::new();
    for (neuron, tau) in [(NeuronKind::If, 1u32), (NeuronKind::Gn, spec.tau)] {
        let options = Options {
            neuron,
            tau,
            timesteps: t_layer,
            anytime: false,
            allow_inexact: false,
            calibration: calibration.clone(),
            ..Default::default()
        };
        let (snn, _) = transpile(ann, &options)?;
        let stage = if neuron == NeuronKind::If { "IF layers" } else { "GN layers" };
        let outs = run_batched(&expose(&snn, &site_values), &xs, spec.batch, &|k| progress(stage, k, m))?;
        let mut errors = Vec::new();
        let mut rates = Vec::new();
        for (k, site) in sites.iter().enumerate() {
            // The folded [T·M, …] output of a batch-concatenated run is batch-major per
            // chunk; regroup it to [T, M, …] chunk by chunk.
            let folded = &outs[k + 1];
            let steps = unfold(folded, t_layer, m, batch_for(ann, spec.batch));
            let reference = &ann_acts[k + 1];
            let mut sum = ArrayD::<f32>::zeros(reference.raw_dim());
            let mut curve = Vec::new();
            for t in 1..=t_layer {
                sum = sum + steps.index_axis(Axis(0), t - 1);
                if spec.layer_timesteps.contains(&t) {
                    curve.push((t, mse(&(&sum / t as f32), reference)));
                }
            }
            // A step's output is (spikes) × θ_GN: member spikes for a Group Neuron. With
            // θ per channel (axis 1 of each image's activation), θ_GN is per channel.
            let units: Vec<f64> = match &site.per_channel {
                Some(pc) => pc.theta.iter().map(|t| t / tau as f64).collect(),
                None => vec![site.theta / tau as f64],
            };
            let inner: usize = steps.shape().iter().skip(3).product();
            let per_step: Vec<f64> = steps
                .outer_iter()
                .map(|s| {
                    let spikes: f64 = s
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (*v as f64 / units[(i / inner.max(1)) % units.len()]).round())
                        .sum();
                    spikes / s.len().max(1) as f64
                })
                .collect();
            let prefix_rate = |t: usize| per_step[..t].iter().sum::<f64>() / t as f64;
            rates.push(spec.layer_timesteps.iter().map(|&t| (t, prefix_rate(t))).collect::<Vec<_>>());
            errors.push(curve);
        }
        per_neuron.push((errors, rates));
    }
    let layers = sites
        .iter()
        .enumerate()
        .map(|(k, s)| Layer {
            site: s.name.clone(),
            theta: s.theta,
            levels: s.levels,
            channel_thetas: s.per_channel.as_ref().map(|pc| pc.theta.clone()).unwrap_or_default(),
            if_mse: per_neuron[0].0[k].clone(),
            gn_mse: per_neuron[1].0[k].clone(),
            if_rate: per_neuron[0].1[k].last().map_or(0.0, |r| r.1),
            gn_rate: per_neuron[1].1[k].last().map_or(0.0, |r| r.1),
            if_rates: per_neuron[0].1[k].clone(),
            gn_rates: per_neuron[1].1[k].clone(),
            neurons: ann_acts[k + 1].len() / m.max(1),
        })
        .collect::<Vec<Layer>>();
    let operations = count_operations(ann, &graph, &sites, &layers, &xs.slice_axis(Axis(0), (0..1).into()).to_owned())?;

    Ok(Measurement {
        stateful,
        images: n,
        long_images: long,
        short_max: t_short,
        ann_accuracy,
        ann_accuracy_long,
        levels,
        curves,
        exactness,
        layers,
        operations,
        emitted,
        emitted_outputs,
    })
}

/// A weighted layer of the ANN (Conv, Gemm or MatMul) and what drives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightedLayer {
    pub node: String,
    pub op: String,
    /// Multiply-accumulates per image in the ANN.
    pub macs: u64,
    /// The spiking layer whose spikes reach this layer's input (through pooling, flattening
    /// or reshaping only), if any; `None` means the layer reads analog values (the image).
    pub site: Option<String>,
}

/// Operation counts per image: the ANN's MACs against the SNN's synaptic operations.
///
/// Counting rule: a weighted layer fed by a spiking layer performs, per input spike, one
/// accumulate per synapse of that input, so over T steps its SOPs are its ANN MACs ×
/// (spikes per input neuron per step) × T; a Group Neuron's count is its member spikes
/// (c of τ members firing = c operations). A weighted layer reading analog values runs
/// once on the time-invariant input and keeps its MACs. Pooling between a spiking layer
/// and the weighted layer is taken to preserve the firing rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operations {
    pub layers: Vec<WeightedLayer>,
    /// MACs of the ANN per image.
    pub ann_macs: u64,
    /// MACs of the layers that read analog values, which the SNN keeps.
    pub analog_macs: u64,
    /// (T, SOPs per image) of the IF network.
    pub if_sops: Vec<(usize, f64)>,
    /// (T, SOPs per image) of the GN network.
    pub gn_sops: Vec<(usize, f64)>,
}

/// Ops through which spikes reach a weighted layer unchanged in rate.
const RATE_PRESERVING: &[&str] = &[
    "Identity",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Dropout",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "GlobalMaxPool",
    "Pad",
];

/// Counts the ANN's MACs per weighted layer (shapes from one image run through tract)
/// and the SNNs' synaptic operations from the measured firing rates.
fn count_operations(
    ann: &ModelProto,
    graph: &gn_onnx::Graph,
    sites: &[Site],
    layers: &[Layer],
    one_image: &ArrayD<f32>,
) -> Result<Option<Operations>, VerifyError> {
    let weighted: Vec<&gn_onnx::proto::NodeProto> =
        graph.nodes().iter().filter(|n| matches!(gn_onnx::graph::standard_op(n), "Conv" | "Gemm" | "MatMul")).collect();
    if weighted.is_empty() || one_image.shape()[0] == 0 {
        return Ok(None);
    }
    let constants = graph.constants();
    let const_dims = |name: &str| constants.dims(name);
    let outputs: Vec<String> = weighted.iter().map(|n| n.output[0].clone()).collect();
    let shapes = run_batched(&expose(ann, &outputs), one_image, 1, &|_| {})?;
    let producers = graph.producers();
    let site_of = |value: &str| -> Option<usize> {
        let mut value = value.to_string();
        loop {
            if let Some(k) = sites.iter().position(|s| s.output == value) {
                return Some(k);
            }
            let node = &graph.nodes()[*producers.get(&value)?];
            if !RATE_PRESERVING.contains(&node.op_type()) {
                return None;
            }
            value = node.input.first()?.clone();
        }
    };
    let mut result = Vec::new();
    for (k, node) in weighted.iter().enumerate() {
        let out_elems = shapes[k + 1].len() as u64;
        // A MatMul may hold its weight on either side; Conv and Gemm hold it second.
        let weight_first = node.op_type() == "MatMul" && const_dims(&node.input[0]).is_some();
        let (data, weight) =
            if weight_first { (&node.input[1], &node.input[0]) } else { (&node.input[0], &node.input[1]) };
        let Some(w) = const_dims(weight) else { continue };
        let fan_in: i64 = match node.op_type() {
            "Conv" => w.iter().skip(1).product(),
            "Gemm" if gn_onnx::graph::attr::get_int(node, "transB").unwrap_or(0) == 1 => w.get(1).copied().unwrap_or(0),
            "Gemm" => w.first().copied().unwrap_or(0),
            // x @ W sums over W's rows; W @ x over W's columns.
            _ if weight_first => w.last().copied().unwrap_or(0),
            _ => w.get(w.len().saturating_sub(2)).copied().unwrap_or(0),
        };
        result.push(WeightedLayer {
            node: node.name().to_string(),
            op: node.op_type().to_string(),
            macs: out_elems * fan_in.max(0) as u64,
            site: site_of(data).map(|s| sites[s].name.clone()),
        });
    }
    let ann_macs = result.iter().map(|l| l.macs).sum();
    let analog_macs = result.iter().filter(|l| l.site.is_none()).map(|l| l.macs).sum();
    let sops = |gn: bool| -> Vec<(usize, f64)> {
        let ts: Vec<usize> = layers.first().map(|l| l.if_rates.iter().map(|r| r.0).collect()).unwrap_or_default();
        ts.iter()
            .enumerate()
            .map(|(i, &t)| {
                let total = result
                    .iter()
                    .filter_map(|w| {
                        let layer = layers.iter().find(|l| Some(&l.site) == w.site.as_ref())?;
                        let rate = if gn { layer.gn_rates[i].1 } else { layer.if_rates[i].1 };
                        Some(w.macs as f64 * rate * t as f64)
                    })
                    .sum::<f64>();
                (t, total)
            })
            .collect()
    };
    Ok(Some(Operations { if_sops: sops(false), gn_sops: sops(true), layers: result, ann_macs, analog_macs }))
}

/// Regroups a folded site output computed batch by batch (`[T·b, …]` per chunk of b
/// images, chunks concatenated) into `[T, M, …]`.
fn unfold(folded: &ArrayD<f32>, timesteps: usize, images: usize, batch: usize) -> ArrayD<f32> {
    let tail: Vec<usize> = folded.shape()[1..].to_vec();
    let mut shape = vec![timesteps, images];
    shape.extend(&tail);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
    let per_image: usize = tail.iter().product();
    let src = folded.as_standard_layout();
    let src = src.as_slice().unwrap_or_default();
    let dst = out.as_slice_mut().unwrap_or_default();
    let (mut offset, mut start) = (0, 0);
    while start < images {
        let b = batch.min(images - start);
        for t in 0..timesteps {
            for i in 0..b {
                let from = (offset + t * b + i) * per_image;
                let to = (t * images + start + i) * per_image;
                dst[to..to + per_image].copy_from_slice(&src[from..from + per_image]);
            }
        }
        offset += timesteps * b;
        start += b;
    }
    out
}
