//! One measurement of an ANN against its IF and GN conversions: output curves per T, the
//! stateful form's agreement, the τ = L, T = 1 exactness, per-layer errors and firing
//! rates, and operation counts.

use gn_onnx::proto::ModelProto;
use ndarray::{ArrayD, Axis};

use gn_transpile::detect::Site;
use gn_transpile::find_sites;
use gn_transpile::{transpile, Emit, NeuronKind, Options};

use crate::cost::count_operations;
use crate::metrics::{accuracy, mse, relative_mse, top1};
use crate::run::{batch_for, expose, run_batched_on, run_stateful_on, static_batch, unfold};
use crate::runtime::Runtime;
use crate::{Curve, Exactness, Layer, Measurement, Spec, StatefulAgreement, VerifyError};

/// One measurement's inputs and the facts every stage shares.
pub(crate) struct Run<'a> {
    pub runtime: &'a dyn Runtime,
    pub ann: &'a ModelProto,
    pub x: &'a ArrayD<f32>,
    pub labels: Option<&'a [usize]>,
    pub spec: &'a Spec,
    pub progress: &'a (dyn Fn(&str, usize, usize) + Sync),
    /// Images.
    pub n: usize,
    /// The largest T.
    pub t_max: usize,
    /// Images of the per-layer stage and of the rows kept (a prefix of the data).
    pub m: usize,
}

/// One emitted model's outputs on the first images.
type Outputs = Vec<ArrayD<f32>>;

/// The spiking models emitted by a measurement, by file stem, and their outputs on the
/// first images.
type Emitted = (Vec<(String, ModelProto)>, Vec<Vec<ArrayD<f32>>>);

/// Measures `ann` on images `x` (batch on axis 0) with optional labels, on tract.
#[cfg(feature = "tract")]
pub fn measure(
    ann: &ModelProto,
    x: &ArrayD<f32>,
    labels: Option<&[usize]>,
    spec: &Spec,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Measurement, VerifyError> {
    measure_on(&crate::Tract, ann, x, labels, spec, progress)
}

/// Measures `ann` on images `x` (batch on axis 0) with optional labels, every model run
/// on `runtime`. `progress` is told, after each batch, (stage, inputs done, the stage's
/// inputs).
pub fn measure_on(
    runtime: &dyn Runtime,
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
    let run = Run { runtime, ann, x, labels, spec, progress, n, t_max, m };

    let ann_out = run_batched_on(runtime, ann, x, spec.batch, true, &|k| progress("ANN", k, n))?.remove(0);
    let ann_pred = top1(&ann_out);
    let (curves, (mut emitted, mut emitted_outputs)) = output_curves(&run, &ann_out, long)?;
    let stateful = stateful_agreement(&run, &emitted_outputs[1][1])?;
    let exactness = match levels.as_slice() {
        [l] if *l > 0 => Some(exactness(&run, *l, &ann_out, &ann_pred, (&mut emitted, &mut emitted_outputs))?),
        _ => None,
    };
    let reference = site_reference(&run, &sites)?;
    let layers = layer_errors(&run, &sites, &reference)?;
    let one_image = reference.xs.slice_axis(Axis(0), (0..1).into()).to_owned();
    let operations = count_operations(runtime, ann, &graph, &sites, &layers, spec.tau, &spec.energy, &one_image)?;
    let pareto = match &operations {
        Some(ops) if !spec.pareto_taus.is_empty() => {
            crate::pareto::measure(&run, &sites, &reference, &layers, &ann_out, &curves, ops)?
        }
        _ => None,
    };
    Ok(Measurement {
        tau: spec.tau,
        layer_images: m,
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
        pareto,
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
    if let Some(&k) = spec.pareto_taus.iter().find(|&&k| k == 0 || k > gn_transpile::MAX_TAU) {
        return Err(VerifyError::Data(format!(
            "τ = {k} of the accuracy-for-energy table is out of range (1 to {})",
            gn_transpile::MAX_TAU
        )));
    }
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
pub(crate) fn short_max(spec: &Spec) -> usize {
    spec.timesteps.iter().copied().filter(|&t| t <= spec.short_max).max().unwrap_or(1)
}

/// The IF and GN curves (MSE and accuracy per T): T ≤ short_max on every image, longer
/// T on the first `long` (one anytime run each).
fn output_curves(run: &Run, ann_out: &ArrayD<f32>, long: usize) -> Result<(Vec<Curve>, Emitted), VerifyError> {
    let Run { runtime, ann, x, labels, spec, progress, n, t_max, m } = *run;
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
            let outs = run_batched_on(runtime, &snn, input, spec.batch, true, &|k| progress(&label, k, images))?;
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
    let Run { runtime, ann, x, spec, progress, t_max, m, .. } = *run;
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
    let readouts = run_stateful_on(runtime, &model, &vec![xm; calls])?;
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
    let Run { runtime, ann, x, spec, progress, n, m, .. } = *run;
    let options = Options { neuron: NeuronKind::Gn, tau: l, timesteps: 1, ..Default::default() };
    let (snn, _) = transpile(ann, &options)?;
    let out = run_batched_on(runtime, &snn, x, spec.batch, true, &|k| progress("GN τ=L T=1", k, n))?.remove(0);
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

/// (T, a figure) per T.
type Series = Vec<(usize, f64)>;

/// One site of one spiking network on the first images: (T, MSE against the ANN's
/// activation), (T, member spikes per neuron per step), (T, events per neuron per step).
pub(crate) struct SiteSeries {
    pub errors: Series,
    pub rates: Series,
    pub events: Series,
}

/// What every per-layer run is compared against, on the first images.
pub(crate) struct SiteReference {
    /// The first images.
    pub xs: ArrayD<f32>,
    /// The value each site writes in the SNN: a site whose max-pool moved in front of it
    /// writes the pool's output, and is compared there, against the ANN's pooled
    /// activation.
    pub values: Vec<String>,
    /// The ANN's output on `xs`, then its activation at each of `values`.
    pub ann: Vec<ArrayD<f32>>,
}

/// The sites' values in the SNN and the ANN's activations there, on the first images.
fn site_reference(run: &Run, sites: &[Site]) -> Result<SiteReference, VerifyError> {
    let Run { runtime, ann, x, spec, progress, m, .. } = *run;
    let options = Options { timesteps: 1, calibration: spec.calibration.clone(), ..Default::default() };
    let (_, report) = transpile(ann, &options)?;
    let values: Vec<String> = sites
        .iter()
        .map(|s| {
            let moved = report.moves.iter().find(|m| m.activation == s.output);
            moved.map_or_else(|| s.output.clone(), |m| m.output.clone())
        })
        .collect();
    let xs = x.slice_axis(Axis(0), (0..m).into()).to_owned();
    let acts =
        run_batched_on(runtime, &expose(ann, &values), &xs, spec.batch, true, &|k| progress("ANN layers", k, m))?;
    Ok(SiteReference { xs, values, ann: acts })
}

/// Per layer, on the first images: each site's MSE against the ANN's activation and its
/// firing rate, per T, for IF and GN.
fn layer_errors(run: &Run, sites: &[Site], reference: &SiteReference) -> Result<Vec<Layer>, VerifyError> {
    let Run { spec, m, .. } = *run;
    let if_ = site_series(run, sites, reference, NeuronKind::If, 1)?;
    let gn = site_series(run, sites, reference, NeuronKind::Gn, spec.tau)?;
    let layers = sites
        .iter()
        .zip(reference.values.iter().cloned())
        .zip(if_.into_iter().zip(gn))
        .enumerate()
        .map(|(k, ((s, output), (i, g)))| Layer {
            site: s.name.clone(),
            output,
            theta: s.theta,
            levels: s.levels,
            channel_thetas: s.per_channel.as_ref().map(|pc| pc.theta.clone()).unwrap_or_default(),
            if_rate: i.rates.last().map_or(0.0, |r| r.1),
            gn_rate: g.rates.last().map_or(0.0, |r| r.1),
            if_mse: i.errors,
            gn_mse: g.errors,
            if_rates: i.rates,
            gn_rates: g.rates,
            if_events: i.events,
            gn_events: g.events,
            neurons: reference.ann[k + 1].len() / m.max(1),
        })
        .collect::<Vec<Layer>>();
    Ok(layers)
}

/// One spiking network's sites on the first images, against the ANN's activations there,
/// at the per-layer T.
pub(crate) fn site_series(
    run: &Run,
    sites: &[Site],
    reference: &SiteReference,
    neuron: NeuronKind,
    tau: u32,
) -> Result<Vec<SiteSeries>, VerifyError> {
    let SiteReference { xs, values, ann: ann_acts } = reference;
    let Run { runtime, ann, spec, progress, m, .. } = *run;
    let t_layer = spec.layer_timesteps.iter().copied().max().unwrap_or(1);
    let options = Options {
        neuron,
        tau,
        timesteps: t_layer,
        anytime: false,
        allow_inexact: false,
        calibration: spec.calibration.clone(),
        ..Default::default()
    };
    let (snn, _) = transpile(ann, &options)?;
    let stage = format!("{} layers", neuron.label(tau));
    let outs = run_batched_on(runtime, &expose(&snn, values), xs, spec.batch, true, &|k| progress(&stage, k, m))?;
    let mut series = Vec::new();
    for (k, site) in sites.iter().enumerate() {
        // The folded [T·M, …] output of a batch-concatenated run is batch-major per
        // chunk; regroup it to [T, M, …] chunk by chunk.
        let steps = unfold(&outs[k + 1], t_layer, m, batch_for(ann, spec.batch));
        let reference = &ann_acts[k + 1];
        let mut sum = ArrayD::<f32>::zeros(reference.raw_dim());
        let mut errors = Vec::new();
        for t in 1..=t_layer {
            sum = sum + steps.index_axis(Axis(0), t - 1);
            if spec.layer_timesteps.contains(&t) {
                errors.push((t, mse(&(&sum / t as f32), reference)));
            }
        }
        // A step's output is (spikes) × θ_GN: member spikes for a Group Neuron. With
        // θ per channel (axis 1 of each image's activation), θ_GN is per channel.
        let units: Vec<f64> = match &site.per_channel {
            Some(pc) => pc.theta.iter().map(|t| t / tau as f64).collect(),
            None => vec![site.theta / tau as f64],
        };
        let inner: usize = steps.shape().iter().skip(3).product();
        // Per step: (member spikes, events: neurons with a count above 0) per neuron.
        let per_step: Vec<(f64, f64)> = steps
            .outer_iter()
            .map(|s| {
                let (spikes, events) = s.iter().enumerate().fold((0.0, 0.0), |(spikes, events), (i, v)| {
                    let c = (*v as f64 / units[(i / inner.max(1)) % units.len()]).round();
                    (spikes + c, events + if c > 0.0 { 1.0 } else { 0.0 })
                });
                let neurons = s.len().max(1) as f64;
                (spikes / neurons, events / neurons)
            })
            .collect();
        let prefix = |t: usize, f: fn(&(f64, f64)) -> f64| per_step[..t].iter().map(f).sum::<f64>() / t as f64;
        series.push(SiteSeries {
            errors,
            rates: spec.layer_timesteps.iter().map(|&t| (t, prefix(t, |p| p.0))).collect(),
            events: spec.layer_timesteps.iter().map(|&t| (t, prefix(t, |p| p.1))).collect(),
        });
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gn_onnx::data::{float_value_info, model, node, tensor_f32};
    use gn_onnx::proto::GraphProto;

    /// input [N, 3] → Gemm (4 × 3) → QCFS (θ = 1, L = 4, the dynamo form) → Gemm (2 × 4).
    fn mlp() -> ModelProto {
        let w1: Vec<f32> = (0..12).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.4).collect();
        let w2: Vec<f32> = (0..8).map(|i| ((i * 3 % 4) as f32 - 1.5) * 0.5).collect();
        let graph = GraphProto {
            node: vec![
                node("MatMul", &["input", "w1"], "h", vec![]),
                node("Div", &["h", "theta"], "q1", vec![]),
                node("Clip", &["q1", "zero", "one"], "q2", vec![]),
                node("Mul", &["q2", "levels"], "q3", vec![]),
                node("Add", &["q3", "half"], "q4", vec![]),
                node("Floor", &["q4"], "q5", vec![]),
                node("Div", &["q5", "levels"], "q6", vec![]),
                node("Mul", &["q6", "theta"], "a", vec![]),
                node("MatMul", &["a", "w2"], "output", vec![]),
            ],
            initializer: vec![
                tensor_f32("w1", &[3, 4], &w1),
                tensor_f32("w2", &[4, 2], &w2),
                tensor_f32("theta", &[], &[1.0]),
                tensor_f32("levels", &[], &[4.0]),
                tensor_f32("zero", &[], &[0.0]),
                tensor_f32("one", &[], &[1.0]),
                tensor_f32("half", &[], &[0.5]),
            ],
            input: vec![float_value_info("input", &[None, Some(3)])],
            output: vec![float_value_info("output", &[None, Some(2)])],
            ..Default::default()
        };
        model(graph, 17)
    }

    fn spec() -> Spec {
        Spec {
            tau: 4,
            timesteps: vec![1, 2, 4, 8],
            batch: 8,
            short_max: 4,
            long_images: 16,
            layer_images: 8,
            layer_timesteps: vec![1, 2, 4],
            calibration: None,
            energy: crate::EnergyTable::default(),
            pareto_taus: Vec::new(),
        }
    }

    fn inputs(n: usize) -> ArrayD<f32> {
        let values: Vec<f32> = (0..n * 3).map(|i| ((i * 7919 % 97) as f32 / 97.0 - 0.3) * 3.0).collect();
        ArrayD::from_shape_vec(ndarray::IxDyn(&[n, 3]), values).unwrap()
    }

    #[test]
    fn a_measurement_reports_every_figure_it_promises() {
        let labels: Vec<usize> = (0..32).map(|i| i % 2).collect();
        let m = measure(&mlp(), &inputs(32), Some(&labels), &spec(), &|_, _, _| {}).unwrap();
        // τ = L = 4 at T = 1 is the ANN (docs/design.md §4.1).
        let exact = m.exactness.as_ref().unwrap();
        assert_eq!((exact.tau, exact.flips), (4, 0));
        assert!(exact.relative_mse <= 1e-10, "{}", exact.relative_mse);
        // One curve per neuron model, a point per T: T ≤ 4 on all 32 images, T = 8 on 16.
        for c in &m.curves {
            assert_eq!(c.mse.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 4, 8]);
            assert_eq!(c.accuracy.len(), 4);
        }
        assert_eq!((m.images, m.long_images, m.short_max), (32, 16, 4));
        // The stateful calls are the anytime rows.
        assert_eq!(m.stateful.as_ref().map(|s| s.max_abs_diff), Some(0.0));
        // One layer, its rate in spikes per neuron per step at most τ.
        assert_eq!(m.layers.len(), 1);
        assert!(m.layers[0].gn_rate > 0.0 && m.layers[0].gn_rate <= 4.0);
        // MACs per image: 3 × 4 + 4 × 2; the second MatMul reads the spikes.
        let ops = m.operations.as_ref().unwrap();
        assert_eq!(ops.ann_macs, 20);
        assert_eq!(ops.layers[0].reads, gn_transpile::spikes::Reads::Once);
        assert_eq!(ops.layers[1].reads, gn_transpile::spikes::Reads::Spikes(vec!["a".into()]));
    }

    #[test]
    fn the_accuracy_for_energy_table_measures_each_tau_as_its_own_measurement_would() {
        let labels: Vec<usize> = (0..32).map(|i| i % 2).collect();
        let x = inputs(32);
        let swept = Spec { pareto_taus: vec![1, 2, 4, 8], ..spec() };
        let m = measure(&mlp(), &x, Some(&labels), &swept, &|_, _, _| {}).unwrap();
        let p = m.pareto.as_ref().expect("a table was asked for");
        // IF (τ = 1), then GN τ = 2, 4, 8, each at the per-layer T up to short_max.
        let keys: Vec<(NeuronKind, u32, usize)> = p.points.iter().map(|q| (q.neuron, q.tau, q.timesteps)).collect();
        let mut expected = vec![];
        for (neuron, tau) in [(NeuronKind::If, 1), (NeuronKind::Gn, 2), (NeuronKind::Gn, 4), (NeuronKind::Gn, 8)] {
            expected.extend([1, 2, 4].map(|t| (neuron, tau, t)));
        }
        assert_eq!(keys, expected);
        assert_eq!((p.images, p.cost_images), (32, 8));
        // τ = 2's points are what a measurement at τ = 2 reports for GN.
        let at2 = measure(&mlp(), &x, Some(&labels), &Spec { tau: 2, ..spec() }, &|_, _, _| {}).unwrap();
        let ops = at2.operations.as_ref().unwrap();
        for q in p.points.iter().filter(|q| q.tau == 2) {
            let curve = at2.curve(NeuronKind::Gn);
            assert_eq!(Some(q.mse), curve.mse.iter().find(|c| c.0 == q.timesteps).map(|c| c.1));
            assert_eq!(q.accuracy, curve.accuracy.iter().find(|c| c.0 == q.timesteps).map(|c| c.1));
            let cost = ops.cost(NeuronKind::Gn, q.timesteps).unwrap();
            assert_eq!(q.energy_pj, cost.energy_pj);
            assert_eq!(q.synaptic_operations, cost.effective_acs + cost.effective_macs);
        }
        // Nothing is cheaper than the cheapest points: one of them is on each front.
        let cheapest = p.points.iter().map(|q| q.energy_pj).fold(f64::INFINITY, f64::min);
        assert!(p.points.iter().any(|q| q.energy_pj == cheapest && q.front_accuracy));
        assert!(p.points.iter().any(|q| q.energy_pj == cheapest && q.front_mse));
        assert!(m.to_markdown(false).contains("accuracy for energy"));
        // A τ out of range is refused before any work.
        let bad = Spec { pareto_taus: vec![0], ..spec() };
        let err = measure(&mlp(), &x, None, &bad, &|_, _, _| {}).unwrap_err().to_string();
        assert!(err.contains("τ = 0 of the accuracy-for-energy table is out of range"), "{err}");
    }

    #[test]
    fn a_model_whose_site_writes_the_output_or_with_two_outputs_is_refused() {
        let mut model = mlp();
        let g = model.graph.as_mut().unwrap();
        g.node.pop();
        g.output[0].name = Some("a".into());
        let err = measure(&model, &inputs(4), None, &spec(), &|_, _, _| {}).unwrap_err().to_string();
        assert!(err.contains("writes the graph output 'a' itself"), "{err}");
        let mut model = mlp();
        model.graph.as_mut().unwrap().output.push(float_value_info("h", &[None, Some(4)]));
        let err = measure(&model, &inputs(4), None, &spec(), &|_, _, _| {}).unwrap_err().to_string();
        assert!(err.contains("verify compares one output, and the model has 2"), "{err}");
        let err = measure(&mlp(), &inputs(4), Some(&[0, 1]), &spec(), &|_, _, _| {}).unwrap_err().to_string();
        assert!(err.contains("2 labels for 4 inputs"), "{err}");
    }
}
