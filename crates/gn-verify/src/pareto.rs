//! Accuracy for cost: GN at several τ, and IF, at each T, with the points that no other
//! point beats marked (the Pareto front of accuracy, or output MSE, against energy).

use std::fmt::Write as _;

use gn_transpile::detect::Site;
use gn_transpile::{transpile, NeuronKind, Options};
use ndarray::{ArrayD, Axis};

use crate::cost::{Activity, Operations};
use crate::measure::{site_series, Run, SiteReference};
use crate::metrics::{accuracy, mse, top1};
use crate::plot::{line_chart, Axes, Series};
use crate::report::{energy, si};
use crate::run::run_batched_on;
use crate::{Curve, Layer, VerifyError};

/// One network at one T: what it gets right and what it costs per input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParetoPoint {
    pub neuron: NeuronKind,
    pub tau: u32,
    pub timesteps: usize,
    /// MSE between the ANN's and the SNN's outputs.
    pub mse: f64,
    /// Top-1 accuracy, when labels are given.
    pub accuracy: Option<f64>,
    /// Synaptic operations per input: accumulates and multiply-accumulates.
    pub synaptic_operations: f64,
    /// Energy per input, pJ.
    pub energy_pj: f64,
    /// No other point has at least this accuracy for at most this energy, and is better
    /// in one of the two (false without labels).
    pub front_accuracy: bool,
    /// No other point has at most this MSE for at most this energy, and is better in one.
    pub front_mse: bool,
}

/// The accuracy-for-energy table of a measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pareto {
    /// Inputs behind the accuracy and the MSE.
    pub images: usize,
    /// Inputs behind the cost (a prefix of the data).
    pub cost_images: usize,
    /// IF, then GN by τ, each by T.
    pub points: Vec<ParetoPoint>,
}

/// Measures GN at each of `spec.pareto_taus` (the measurement's τ and IF are reused from
/// `curves` and `ops`) at the T of the cost report that are measured on every input.
pub(crate) fn measure(
    run: &Run,
    sites: &[Site],
    reference: &SiteReference,
    layers: &[Layer],
    ann_out: &ArrayD<f32>,
    curves: &[Curve],
    ops: &Operations,
) -> Result<Option<Pareto>, VerifyError> {
    let Run { runtime, ann, x, labels, spec, progress, n, m, .. } = *run;
    let t_short = crate::measure::short_max(spec);
    let ts: Vec<usize> = spec.layer_timesteps.iter().copied().filter(|&t| t <= t_short).collect();
    let Some(&t_p) = ts.iter().max() else { return Ok(None) };
    let mut points = Vec::new();
    let point = |neuron, tau, t, mse, accuracy, cost: &crate::Cost| ParetoPoint {
        neuron,
        tau,
        timesteps: t,
        mse,
        accuracy,
        synaptic_operations: cost.effective_acs + cost.effective_macs,
        energy_pj: cost.energy_pj,
        front_accuracy: false,
        front_mse: false,
    };
    // IF and the measurement's own τ: figures already measured.
    for c in curves {
        for &t in &ts {
            let (Some(e), Some(cost)) = (c.mse.iter().find(|p| p.0 == t), ops.cost(c.neuron, t)) else { continue };
            let a = c.accuracy.iter().find(|p| p.0 == t).map(|p| p.1);
            points.push(point(c.neuron, c.tau, t, e.1, a, cost));
        }
    }
    let mut taus = spec.pareto_taus.clone();
    taus.sort();
    taus.dedup();
    // τ = 1 is IF.
    for tau in taus.into_iter().filter(|&k| k != spec.tau && k != 1) {
        let label = NeuronKind::Gn.label(tau);
        let options = Options {
            neuron: NeuronKind::Gn,
            tau,
            timesteps: t_p,
            anytime: true,
            calibration: spec.calibration.clone(),
            ..Default::default()
        };
        let (snn, _) = transpile(ann, &options)?;
        let stage = format!("{label} T={t_p}");
        let outs = run_batched_on(runtime, &snn, x, spec.batch, true, &|k| progress(&stage, k, n))?;
        let series = site_series(run, sites, reference, NeuronKind::Gn, tau)?;
        let activity: Vec<Activity> = series
            .iter()
            .zip(layers)
            .map(|(s, l)| Activity { output: &l.output, neurons: l.neurons, rates: &s.rates, events: &s.events })
            .collect();
        let costs = ops.network_costs(NeuronKind::Gn, tau, &activity);
        for &t in &ts {
            let readout = outs[1].index_axis(Axis(0), t - 1).to_owned();
            let a = labels.map(|l| accuracy(&top1(&readout), l));
            if let Some(cost) = costs.iter().find(|c| c.timesteps == t) {
                points.push(point(NeuronKind::Gn, tau, t, mse(&readout, ann_out), a, cost));
            }
        }
    }
    points.sort_by_key(|p| (p.neuron == NeuronKind::Gn, p.tau, p.timesteps));
    mark_fronts(&mut points);
    Ok(Some(Pareto { images: n, cost_images: m, points }))
}

/// Marks the points that no other point beats: at most the energy and at least the
/// accuracy (at most the MSE), better in one.
fn mark_fronts(points: &mut [ParetoPoint]) {
    let beaten = |p: &ParetoPoint, better: &dyn Fn(&ParetoPoint, &ParetoPoint) -> Option<bool>| {
        points.iter().any(|q| {
            let cheaper = q.energy_pj <= p.energy_pj;
            match better(q, p) {
                // At least as good and no dearer, and strictly one of them.
                Some(strict) => cheaper && (strict || q.energy_pj < p.energy_pj),
                None => false,
            }
        })
    };
    // q at least as good as p: Some(q strictly better); None when worse.
    let by_accuracy = |q: &ParetoPoint, p: &ParetoPoint| match (q.accuracy, p.accuracy) {
        (Some(a), Some(b)) if a >= b => Some(a > b),
        _ => None,
    };
    let by_mse = |q: &ParetoPoint, p: &ParetoPoint| (q.mse <= p.mse).then_some(q.mse < p.mse);
    let fronts: Vec<(bool, bool)> =
        points.iter().map(|p| (p.accuracy.is_some() && !beaten(p, &by_accuracy), !beaten(p, &by_mse))).collect();
    for (p, (a, e)) in points.iter_mut().zip(fronts) {
        p.front_accuracy = a;
        p.front_mse = e;
    }
}

impl Pareto {
    /// The table: a row per network and T, its accuracy, MSE, synaptic operations and
    /// energy, and whether it is on the front of accuracy (MSE) against energy.
    pub fn to_markdown(&self, ann_energy_pj: f64) -> String {
        let mut s = format!(
            "\naccuracy for energy (accuracy and MSE on {} inputs, cost per input on the first {}); ✓: no other point has better accuracy (MSE) for less energy\n",
            self.images, self.cost_images
        );
        s.push_str("| | T | top-1 (%) | MSE | SOPs | energy | × ANN | front (accuracy) | front (MSE) |\n");
        s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        let mark = |b: bool| if b { "✓" } else { "" };
        for p in &self.points {
            let a = p.accuracy.map_or_else(|| "-".to_string(), |a| format!("{:.2}", a * 100.0));
            let _ = writeln!(
                s,
                "| {} | {} | {a} | {:.4} | {} | {} | {:.2} | {} | {} |",
                p.neuron.label(p.tau),
                p.timesteps,
                p.mse,
                si(p.synaptic_operations),
                energy(p.energy_pj),
                p.energy_pj / ann_energy_pj.max(f64::MIN_POSITIVE),
                mark(p.front_accuracy),
                mark(p.front_mse)
            );
        }
        s
    }

    /// The chart: accuracy (or, without labels, MSE on a log axis) against energy per
    /// input, a line per network through its T, the front ringed, the ANN as a point.
    pub fn to_svg(&self, title: &str, ann_accuracy: Option<f64>, ann_energy_pj: f64) -> String {
        const COLORS: [&str; 8] = ["#444", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];
        let by_accuracy = ann_accuracy.is_some() && self.points.iter().all(|p| p.accuracy.is_some());
        let max_pj = self.points.iter().map(|p| p.energy_pj).fold(ann_energy_pj, f64::max);
        let (unit, scale) = match max_pj {
            v if v >= 1e6 => ("µJ", 1e-6),
            v if v >= 1e3 => ("nJ", 1e-3),
            _ => ("pJ", 1.0),
        };
        let mut networks: Vec<(NeuronKind, u32)> = self.points.iter().map(|p| (p.neuron, p.tau)).collect();
        networks.dedup();
        let mut series: Vec<Series> = networks
            .iter()
            .enumerate()
            .map(|(i, &(neuron, tau))| {
                let points: Vec<&ParetoPoint> =
                    self.points.iter().filter(|p| p.neuron == neuron && p.tau == tau).collect();
                let y = |p: &ParetoPoint| if by_accuracy { p.accuracy.unwrap_or(0.0) * 100.0 } else { p.mse };
                let front = |p: &ParetoPoint| if by_accuracy { p.front_accuracy } else { p.front_mse };
                let mut line = Series::line(
                    neuron.label(tau),
                    COLORS[(i + 1) % COLORS.len()],
                    points.iter().map(|p| (p.energy_pj * scale, y(p))).collect(),
                    neuron == NeuronKind::If,
                );
                line.dots = true;
                line.ringed = points.iter().enumerate().filter(|(_, p)| front(p)).map(|(k, _)| k).collect();
                line
            })
            .collect();
        if let (true, Some(a)) = (by_accuracy, ann_accuracy) {
            let mut ann = Series::line("ANN", COLORS[0], vec![(ann_energy_pj * scale, a * 100.0)], false);
            ann.dots = true;
            series.push(ann);
        }
        let axes = Axes {
            title: title.into(),
            x_label: format!("energy per input ({unit}); ringed: no point beats it"),
            y_label: if by_accuracy { "top-1 accuracy (%)".into() } else { "MSE (ANN vs SNN outputs)".into() },
            log_x: false,
            log_y: !by_accuracy,
            steps: false,
        };
        line_chart(&axes, &series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tau: u32, energy_pj: f64, accuracy: f64, mse: f64) -> ParetoPoint {
        ParetoPoint {
            neuron: NeuronKind::Gn,
            tau,
            timesteps: 1,
            mse,
            accuracy: Some(accuracy),
            synaptic_operations: 0.0,
            energy_pj,
            front_accuracy: false,
            front_mse: false,
        }
    }

    #[test]
    fn the_front_holds_the_points_nothing_beats() {
        let mut points = vec![
            p(1, 1.0, 0.50, 0.9),
            p(2, 2.0, 0.80, 0.5),
            // Dearer and no better than τ=2: beaten on both.
            p(3, 3.0, 0.80, 0.5),
            // Dearer and more accurate: on the accuracy front; its MSE is beaten.
            p(4, 4.0, 0.85, 0.6),
            // As cheap as τ=2 and as accurate: neither beats the other on accuracy.
            p(5, 2.0, 0.80, 0.7),
        ];
        mark_fronts(&mut points);
        let fronts: Vec<(u32, bool, bool)> = points.iter().map(|p| (p.tau, p.front_accuracy, p.front_mse)).collect();
        assert_eq!(fronts, [(1, true, true), (2, true, true), (3, false, false), (4, true, false), (5, true, false)]);
        // Without labels only the MSE front is marked.
        let mut unlabeled: Vec<ParetoPoint> =
            points.iter().map(|q| ParetoPoint { accuracy: None, ..q.clone() }).collect();
        mark_fronts(&mut unlabeled);
        assert!(unlabeled.iter().all(|q| !q.front_accuracy));
        assert_eq!(unlabeled.iter().filter(|q| q.front_mse).count(), 2);
    }

    #[test]
    fn the_table_and_the_chart_show_every_point_and_ring_the_front() {
        let mut points = vec![p(1, 1e6, 0.5, 0.9), p(1, 2e6, 0.9, 0.1), p(2, 3e6, 0.6, 0.5)];
        points[1].timesteps = 2;
        mark_fronts(&mut points);
        let pareto = Pareto { images: 10, cost_images: 5, points };
        let table = pareto.to_markdown(4e6);
        assert_eq!(table.matches("| GN τ=1 |").count(), 2, "{table}");
        assert!(table.contains("| GN τ=2 | 1 | 60.00 | 0.5000 | 0 | 3.00 µJ | 0.75 |  |  |"), "{table}");
        let svg = pareto.to_svg("m", Some(0.95), 4e6);
        // Two networks and the ANN; the two τ=1 points are ringed, τ=2's is not.
        assert_eq!(svg.matches(r#"r="7""#).count(), 2, "{svg}");
        assert!(svg.contains("energy per input (µJ)") && svg.contains(">ANN</text>"));
    }
}
