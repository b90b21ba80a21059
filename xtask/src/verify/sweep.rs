//! The τ sweep: GN at several τ on one model, against IF (τ = 1).

use std::path::Path;

use gn_transpile::{transpile, NeuronKind, Options};
use gn_verify::{mse, run_batched, top1};
use ndarray::{ArrayD, Axis};

use super::config::TauSweep;
use super::data::progress;
use super::report::{ModelResult, SweepPoint};

/// Measures the sweep on `x` for one model of `results` (its calibration, if any,
/// reused); τ values already measured (IF, the configured τ) are taken from there.
pub fn run(
    sweep: &TauSweep,
    model: &str,
    results: &[ModelResult],
    path: &Path,
    x: &ArrayD<f32>,
    labels: Option<&[usize]>,
    batch: usize,
) -> anyhow::Result<(String, Vec<SweepPoint>)> {
    let n = x.shape()[0];
    let ann = gn_onnx::io::load(path)?.model;
    let calibration =
        results.iter().find(|r| r.name == model).and_then(|r| r.calibration.clone()).map(std::sync::Arc::new);
    let ann_out = run_batched(&ann, x, batch, &|_| {})?.remove(0);
    let sweep_ts = &sweep.timesteps;
    let t_max = sweep_ts.iter().copied().max().unwrap_or(1);
    let measured =
        results.iter().find(|r| r.name == model).map(|r| r.measurement.curves.as_slice()).unwrap_or_default();
    let mut points = Vec::new();
    for &k in &sweep.taus {
        // τ = 1 is IF, and the configured τ was measured already.
        let known = measured
            .iter()
            .find(|c| (k == 1 && c.neuron == NeuronKind::If) || (c.neuron == NeuronKind::Gn && c.tau == k));
        if let Some(c) = known {
            let keep =
                |v: &Vec<(usize, f64)>| v.iter().copied().filter(|p| sweep_ts.contains(&p.0)).collect::<Vec<_>>();
            points.push(SweepPoint { tau: k, mse: keep(&c.mse), accuracy: keep(&c.accuracy) });
            continue;
        }
        eprintln!("τ sweep on {model}: τ = {k}");
        let options = Options {
            neuron: NeuronKind::Gn,
            tau: k,
            timesteps: t_max,
            anytime: true,
            calibration: calibration.clone(),
            ..Default::default()
        };
        let snn = transpile(&ann, &options)?.0;
        let bar = progress();
        let label = NeuronKind::Gn.label(k);
        let out = run_batched(&snn, x, batch, &|c| bar(&label, c, n))?;
        let mut p = SweepPoint { tau: k, mse: Vec::new(), accuracy: Vec::new() };
        for &t in sweep_ts {
            let r = out[1].index_axis(Axis(0), t - 1).to_owned();
            p.mse.push((t, mse(&r, &ann_out)));
            if let Some(l) = labels {
                let pred = top1(&r);
                p.accuracy.push((t, pred.iter().zip(l).filter(|(a, b)| a == b).count() as f64 / n as f64));
            }
        }
        points.push(p);
    }
    Ok((model.to_string(), points))
}
