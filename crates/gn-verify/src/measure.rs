//! One measurement of an ANN against its IF and GN conversions: output curves per T, the
//! stateful form's agreement, the τ = L, T = 1 exactness, per-layer errors and firing
//! rates, and operation counts.

use gn_onnx::proto::ModelProto;
use ndarray::{ArrayD, Axis};

use gn_transpile::detect::Site;
use gn_transpile::find_sites;
use gn_transpile::{transpile, Emit, NeuronKind, Options};

use crate::metrics::{accuracy, mse, relative_mse, top1};
use crate::operations::count_operations;
use crate::run::{batch_for, expose, run_batched, run_stateful, static_batch, unfold};
use crate::{Curve, Exactness, Layer, Measurement, Spec, StatefulAgreement, VerifyError};

/// One measurement's inputs and the facts every stage shares.
struct Run<'a> {
    ann: &'a ModelProto,
    x: &'a ArrayD<f32>,
    labels: Option<&'a [usize]>,
    spec: &'a Spec,
    progress: &'a (dyn Fn(&str, usize, usize) + Sync),
    /// Images.
    n: usize,
    /// The largest T.
    t_max: usize,
    /// Images of the per-layer stage and of the rows kept (a prefix of the data).
    m: usize,
}

/// One emitted model's outputs on the first images.
type Outputs = Vec<ArrayD<f32>>;

/// The spiking models emitted by a measurement, by file stem, and their outputs on the
/// first images.
type Emitted = (Vec<(String, ModelProto)>, Vec<Vec<ArrayD<f32>>>);

/// Measures `ann` on images `x` (batch on axis 0) with optional labels.
pub fn measure(
    ann: &ModelProto,
    x: &ArrayD<f32>,
    labels: Option<&[usize]>,
    spec: &Spec,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Measurement, VerifyError> {
    let n = check_request(x, labels, spec)?;
    let graph = gn_transpile::prepare_ann(ann)?;
    let sites = sites_before_the_output(ann, &graph, spec)?;
    let mut levels: Vec<u32> = sites.iter().map(|s| s.levels).collect();
    levels.sort();
    levels.dedup();
    let t_max = spec.timesteps.iter().copied().max().unwrap_or(1);
    let long = spec.long_images.min(n);
    let m = spec.layer_images.min(n).min(long.max(1));
    let run = Run { ann, x, labels, spec, progress, n, t_max, m };

    let ann_out = run_batched(ann, x, spec.batch, &|k| progress("ANN", k, n))?.remove(0);
    let ann_pred = top1(&ann_out);
    let (curves, (mut emitted, mut emitted_outputs)) = output_curves(&run, &ann_out, long)?;
    let stateful = stateful_agreement(&run, &emitted_outputs[1][1])?;
    let exactness = match levels.as_slice() {
        [l] if *l > 0 => Some(exactness(&run, *l, &ann_out, &ann_pred, (&mut emitted, &mut emitted_outputs))?),
        _ => None,
    };
    let xs = x.slice_axis(Axis(0), (0..m).into()).to_owned();
    let layers = layer_errors(&run, &sites, &xs)?;
    let one_image = xs.slice_axis(Axis(0), (0..1).into()).to_owned();
    let operations = count_operations(ann, &graph, &sites, &layers, &one_image)?;
    Ok(Measurement {
        stateful,
        images: n,
        long_images: long,
        short_max: short_max(spec),
        ann_accuracy: labels.map(|l| accuracy(&ann_pred, l)),
        ann_accuracy_long: labels.map(|l| accuracy(&ann_pred[..long], &l[..long])),
        levels,
        curves,
        exactness,
        layers,
        operations,
        emitted,
        emitted_outputs,
    })
}

/// Checks the data and the spec; returns the number of images.
fn check_request(x: &ArrayD<f32>, labels: Option<&[usize]>, spec: &Spec) -> Result<usize, VerifyError> {
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
        return Err(VerifyError::Data(format!("T = {t} is out of range (1 to {})", gn_transpile::MAX_TIMESTEPS)));
    }
    Ok(n)
}

/// The sites of a one-output model, none of which writes the output itself.
fn sites_before_the_output(ann: &ModelProto, graph: &gn_onnx::Graph, spec: &Spec) -> Result<Vec<Site>, VerifyError> {
    let outputs = graph.output_names();
    if outputs.len() != 1 {
        return Err(VerifyError::Data(format!(
            "verify compares one output, and the model has {} ({})",
            outputs.len(),
            outputs.join(", ")
        )));
    }
    let sites: Vec<Site> = find_sites(graph, false, spec.calibration.as_deref())?.sites;
    if let Some(s) = sites.iter().find(|s| s.output == outputs[0]) {
        return Err(VerifyError::Data(format!(
            "the QCFS site '{}' writes the graph output '{}' itself; verify reads a layer after the last activation",
            s.name, s.output
        )));
    }
    // A max-pool that moves in front of its spiking layer hands the layer its output.
    let options = Options { timesteps: 1, calibration: spec.calibration.clone(), ..Default::default() };
    let (_, report) = transpile(ann, &options)?;
    if let Some(m) = report.moves.iter().find(|m| m.output == outputs[0]) {
        return Err(VerifyError::Data(format!(
            "{} '{}' writes the graph output '{}' and moves in front of spiking layer '{}', which then writes the output itself; verify reads a layer after the last activation",
            m.op, m.pool, m.output, m.layer
        )));
    }
    Ok(sites)
}

/// The largest T measured on every image.
fn short_max(spec: &Spec) -> usize {
    spec.timesteps.iter().copied().filter(|&t| t <= spec.short_max).max().unwrap_or(1)
}

/// The IF and GN curves (MSE and accuracy per T): T ≤ short_max on every image, longer
/// T on the first `long` (one anytime run each).
fn output_curves(run: &Run, ann_out: &ArrayD<f32>, long: usize) -> Result<(Vec<Curve>, Emitted), VerifyError> {
    let Run { ann, x, labels, spec, progress, n, t_max, m } = *run;
    let calibration = &spec.calibration;
    let t_short = short_max(spec);
    let xl = x.slice_axis(Axis(0), (0..long).into()).to_owned();
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
    Ok((curves, (emitted, emitted_outputs)))
}

/// The stateful form: one call per step, against the GN anytime rows `rows` (`[T, m, …]`).
/// A model whose state shapes are not fixed has no stateful form: `None`.
fn stateful_agreement(run: &Run, rows: &ArrayD<f32>) -> Result<Option<StatefulAgreement>, VerifyError> {
    let Run { ann, x, spec, progress, t_max, m, .. } = *run;
    let calls = spec.layer_timesteps.iter().copied().max().unwrap_or(1).min(t_max);
    let options = Options {
        neuron: NeuronKind::Gn,
        tau: spec.tau,
        emit: Emit::Stateful,
        calibration: spec.calibration.clone(),
        ..Default::default()
    };
    let Ok((model, _)) = transpile(ann, &options) else { return Ok(None) };
    // A static-batch model's states hold its batch: the calls run on that many images.
    let m = static_batch(ann).map_or(m, |b| b.min(m));
    let xm = x.slice_axis(Axis(0), (0..m).into()).to_owned();
    progress("GN stateful", 0, m);
    let readouts = run_stateful(&model, &vec![xm; calls])?;
    progress("GN stateful", m, m);
    let max_abs_diff = readouts
        .iter()
        .enumerate()
        .flat_map(|(t, r)| {
            let row = rows.index_axis(Axis(0), t);
            let row = row.slice_axis(Axis(0), (0..m).into());
            r[0].iter().zip(row).map(|(a, b)| (a - b).abs() as f64).collect::<Vec<_>>()
        })
        .fold(0.0, f64::max);
    Ok(Some(StatefulAgreement { calls, images: m, max_abs_diff }))
}

/// docs/design.md §4.1: GN with τ = L at T = 1 reproduces the ANN (only when all sites
/// share one L; a calibrated ReLU site, L = 0, is not quantized in the ANN).
fn exactness(
    run: &Run,
    l: u32,
    ann_out: &ArrayD<f32>,
    ann_pred: &[usize],
    (emitted, emitted_outputs): (&mut Vec<(String, ModelProto)>, &mut Vec<Outputs>),
) -> Result<Exactness, VerifyError> {
    let Run { ann, x, spec, progress, n, m, .. } = *run;
    let options = Options { neuron: NeuronKind::Gn, tau: l, timesteps: 1, ..Default::default() };
    let (snn, _) = transpile(ann, &options)?;
    let out = run_batched(&snn, x, spec.batch, &|k| progress("GN τ=L T=1", k, n))?.remove(0);
    let pred = top1(&out);
    let flips = pred.iter().zip(ann_pred).filter(|(a, b)| a != b).count();
    emitted.push((format!("gn_tau{l}_t1"), snn));
    emitted_outputs.push(vec![out.slice_axis(Axis(0), (0..m).into()).to_owned()]);
    Ok(Exactness {
        tau: l,
        top1_agreement: 1.0 - flips as f64 / n as f64,
        flips,
        relative_mse: relative_mse(&out, ann_out),
    })
}

/// Per layer, on the first images `xs`: each site's MSE against the ANN's activation and
/// its firing rate, per T, for IF and GN.
fn layer_errors(run: &Run, sites: &[Site], xs: &ArrayD<f32>) -> Result<Vec<Layer>, VerifyError> {
    let Run { ann, spec, progress, m, .. } = *run;
    let calibration = &spec.calibration;
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
    let ann_acts = run_batched(&expose(ann, &site_values), xs, spec.batch, &|k| progress("ANN layers", k, m))?;
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
        let outs = run_batched(&expose(&snn, &site_values), xs, spec.batch, &|k| progress(stage, k, m))?;
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
    Ok(layers)
}
