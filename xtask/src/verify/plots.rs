//! The report's SVG figures: MSE and accuracy per T per model, and the staircase of one
//! QCFS activation against its IF and GN conversions.

use std::path::Path;

use gn_onnx::proto::{GraphProto, ModelProto, ValueInfoProto};
use gn_transpile::{transpile, NeuronKind, Options};
use gn_verify::{run_batched, Spec};
use ndarray::{ArrayD, IxDyn};

use super::report::Report;
use gn_verify::plot::{line_chart, Axes, Series};

pub fn write_plots(r: &Report, out: &Path, spec: &Spec) -> anyhow::Result<()> {
    const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    for m in &r.models {
        let series: Vec<Series> = m
            .measurement
            .curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Series::line(c.label(), COLORS[i], c.mse.iter().map(|&(t, v)| (t as f64, v)).collect(), false)
            })
            .collect();
        let axes = Axes {
            title: format!("{}: MSE vs T", m.name),
            x_label: "T".into(),
            y_label: "MSE (ANN vs SNN logits)".into(),
            log_x: true,
            log_y: true,
            steps: false,
        };
        std::fs::write(out.join(format!("mse_{}.svg", m.name)), line_chart(&axes, &series))?;
        let mut series: Vec<Series> = m
            .measurement
            .curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Series::line(
                    c.label(),
                    COLORS[i],
                    c.accuracy.iter().map(|&(t, v)| (t as f64, v * 100.0)).collect(),
                    false,
                )
            })
            .collect();
        if let Some(a) = m.measurement.ann_accuracy {
            series.push(Series::line(
                "ANN",
                "#444",
                spec.timesteps.iter().map(|&t| (t as f64, a * 100.0)).collect(),
                true,
            ));
        }
        let axes = Axes {
            title: format!("{}: top-1 accuracy vs T", m.name),
            x_label: "T".into(),
            y_label: "accuracy (%)".into(),
            log_x: true,
            log_y: false,
            steps: false,
        };
        std::fs::write(out.join(format!("accuracy_{}.svg", m.name)), line_chart(&axes, &series))?;
        if let (Some(p), Some(ops)) = (&m.measurement.pareto, &m.measurement.operations) {
            let title = format!("{}: accuracy for energy", m.name);
            let svg = p.to_svg(&title, m.measurement.ann_accuracy, ops.ann_energy_pj);
            std::fs::write(out.join(format!("pareto_{}.svg", m.name)), svg)?;
        }
    }
    // Fig. 2: firing-rate staircase of one IF and one GN neuron against the ANN, T = 4.
    if let Some(layer) = r.models.iter().find_map(|m| m.measurement.layers.iter().find(|l| l.levels > 0).cloned()) {
        let (theta, levels) = (layer.theta as f32, layer.levels);
        let model = single_site(theta, levels);
        let currents: Vec<f32> = (0..=400).map(|i| -0.25 * theta + i as f32 * 1.5 * theta / 400.0).collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[currents.len(), 1]), currents.clone())?;
        let mut series = Vec::new();
        let ann = run_batched(&model, &x, 1000, &|_| {})?.remove(0);
        series.push(Series::line(
            format!("ANN (QCFS L={levels})"),
            "#444",
            currents.iter().zip(ann.iter()).map(|(&c, &a)| (c as f64, a as f64)).collect(),
            true,
        ));
        for (i, (neuron, tau, name)) in
            [(NeuronKind::If, 1, NeuronKind::If.label(1)), (NeuronKind::Gn, r.tau, NeuronKind::Gn.label(r.tau))]
                .into_iter()
                .enumerate()
        {
            let snn = transpile(
                &model,
                &Options { neuron, tau, timesteps: 4, anytime: false, allow_inexact: false, ..Default::default() },
            )?
            .0;
            let out = run_batched(&snn, &x, 1000, &|_| {})?.remove(0);
            let points = currents.iter().zip(out.iter()).map(|(&c, &a)| (c as f64, a as f64)).collect();
            series.push(Series::line(name, COLORS[i], points, false));
        }
        let axes = Axes {
            title: format!("Firing rate × θ at T = 4 (θ = {theta:.3})"),
            x_label: "input current".into(),
            y_label: "output (rate × θ)".into(),
            log_x: false,
            log_y: false,
            steps: true,
        };
        std::fs::write(out.join("staircase.svg"), line_chart(&axes, &series))?;
    }
    Ok(())
}

/// A model of one QCFS activation on a [N, 1] input, for the staircase plot.
fn single_site(theta: f32, levels: u32) -> ModelProto {
    use gn_onnx::data::{model, tensor_f32};
    let c = |name: &str, v: f32| tensor_f32(name, &[], &[v]);
    let node = |op: &str, i: &[&str], o: &str| gn_onnx::data::node(op, i, o, vec![]);
    let graph = GraphProto {
        name: Some("qcfs".into()),
        node: vec![
            node("Div", &["x", "theta"], "a"),
            node("Clip", &["a", "zero", "one"], "b"),
            node("Mul", &["b", "levels"], "c"),
            node("Add", &["c", "half"], "d"),
            node("Floor", &["d"], "e"),
            node("Div", &["e", "levels"], "f"),
            node("Mul", &["f", "theta"], "y"),
        ],
        initializer: vec![c("theta", theta), c("zero", 0.0), c("one", 1.0), c("levels", levels as f32), c("half", 0.5)],
        input: vec![gn_onnx::data::float_value_info("x", &[None, Some(1)])],
        output: vec![ValueInfoProto { name: Some("y".into()), ..Default::default() }],
        ..Default::default()
    };
    model(graph, 17)
}
