//! The report as Markdown: one function per section, in the order they appear.

use std::fmt::Write as _;

use gn_transpile::NeuronKind;

use gn_verify::si;

use super::report::{cells, ModelResult, Report, PAPER_TABLE1};

/// The T values of the first model's curves, the columns of the per-T tables.
fn steps(r: &Report) -> Vec<usize> {
    r.models.first().map(|m| m.measurement.curve(NeuronKind::If).mse.iter().map(|p| p.0).collect()).unwrap_or_default()
}

/// A table header: `first` and one column per T.
fn header(s: &mut String, ts: &[usize], first: &str) {
    let _ = writeln!(s, "| {first} | {} |", ts.iter().map(|t| format!("T={t}")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "| --- |{}", " --- |".repeat(ts.len()));
}

/// What a model's activations are: `L = [4]`, or how θ was calibrated for a ReLU network.
fn kind(m: &ModelResult) -> String {
    match &m.calibration {
        Some(c) => format!(
            "ReLU, θ {} = p{} of {} training images",
            if c.per_channel { "per channel" } else { "per layer" },
            c.percentile,
            c.inputs
        ),
        None => format!("L = {:?}", m.measurement.levels),
    }
}

/// The whole report.
pub fn render_markdown(r: &Report) -> String {
    let mut s = String::new();

    intro(&mut s, r);
    table1(&mut s, r);
    table2(&mut s, r);
    per_layer(&mut s, r);
    operations(&mut s, r);
    pareto(&mut s, r);
    stateful(&mut s, r);
    runtimes(&mut s, r);
    custom_op(&mut s, r);
    built(&mut s, r);
    gates(&mut s, r);
    s
}

/// The title and what was measured on how many images.
fn intro(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Verification: ANN vs IF vs GN (τ = {}) on {} {}\n", r.tau, r.images, r.data);
    if let Some(m) = r.models.first() {
        let _ = writeln!(
            s,
            "T ≤ {} on {} images; larger T on the first {} (one anytime run per neuron model).\n",
            m.measurement.short_max, m.measurement.images, m.measurement.long_images
        );
    }
}

/// Table 1: MSE between the ANN's and the SNN's logits, per model and T.
fn table1(s: &mut String, r: &Report) {
    let ts = steps(r);
    let _ = writeln!(s, "### Table 1: MSE between the ANN's and the SNN's logits\n");
    for m in &r.models {
        header(s, &ts, &format!("{} ({})", m.name, kind(m)));
        let (if_, gn) = (m.measurement.curve(NeuronKind::If), m.measurement.curve(NeuronKind::Gn));
        let _ = writeln!(s, "| GN | {} |", cells(&gn.mse, |v| format!("{v:.4}")));
        let _ = writeln!(s, "| IF | {} |", cells(&if_.mse, |v| format!("{v:.4}")));
        let _ = writeln!(
            s,
            "| GN/IF | {} |\n",
            if_.mse
                .iter()
                .zip(&gn.mse)
                .map(|(a, b)| format!("{:.1}%", 100.0 * b.1 / a.1))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let _ = writeln!(s, "{PAPER_TABLE1}");
}

/// Table 2: top-1 accuracy per model, neuron model and T, and the gap to the ANN at T = 2.
fn table2(s: &mut String, r: &Report) {
    let ts = steps(r);
    let _ = writeln!(s, "### Table 2: top-1 accuracy (%)\n");
    let long = r.models.first().map(|m| (m.measurement.short_max, m.measurement.long_images, m.measurement.images));
    if let Some((short_max, long, n)) = long.filter(|l| l.1 < l.2) {
        let _ = writeln!(
            s,
            "Columns up to T = {short_max} are on {n} images; larger T on the first {long}, so compare those with the last column, the ANN on the same {long} images.\n"
        );
    }
    let _ = writeln!(
        s,
        "| model | ANN | {} | ANN, first {} |",
        ts.iter().map(|t| format!("T={t}")).collect::<Vec<_>>().join(" | "),
        long.map_or(0, |l| l.1)
    );
    let _ = writeln!(s, "| --- | --- |{} --- |", " --- |".repeat(ts.len()));
    for m in &r.models {
        let pct = |a: Option<f64>| a.map(|a| format!("{:.2}", a * 100.0)).unwrap_or_else(|| "–".into());
        let (ann, ann_long) = (pct(m.measurement.ann_accuracy), pct(m.measurement.ann_accuracy_long));
        for c in &m.measurement.curves {
            let tag = c.label();
            let _ = writeln!(
                s,
                "| {} {tag} | {ann} | {} | {ann_long} |",
                m.name,
                cells(&c.accuracy, |v| format!("{:.2}", v * 100.0))
            );
        }
    }
    let _ = writeln!(
        s,
        "\nThe paper reports GN within 0.1-0.7 points of the ANN at T = 2 (Table 2). Measured gap at T = 2:\n"
    );
    for m in &r.models {
        let (Some(ann), Some(gn2)) =
            (m.measurement.ann_accuracy, m.measurement.curve(NeuronKind::Gn).accuracy.iter().find(|p| p.0 == 2))
        else {
            continue;
        };
        let _ = writeln!(s, "- {} ({}, τ = {}): {:+.2} points", m.name, kind(m), r.tau, (gn2.1 - ann) * 100.0);
    }
}

/// Accuracy and MSE against energy, GN at each τ and IF, on the models that have the table.
fn pareto(s: &mut String, r: &Report) {
    for m in &r.models {
        let (Some(p), Some(ops)) = (&m.measurement.pareto, &m.measurement.operations) else { continue };
        let _ = writeln!(s, "\n### Accuracy for energy on {}\n", m.name);
        let _ = writeln!(s, "![accuracy for energy](pareto_{}.svg)", m.name);
        s.push_str(&p.to_markdown(ops.ann_energy_pj));
    }
}

/// Per layer: MSE of the time-averaged layer output and firing rates.
fn per_layer(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n### Per layer (first images; MSE of the time-averaged layer output against the ANN activation)\n"
    );
    let _ = writeln!(s, "Firing rate: spikes per neuron per step, averaged over all neurons of the layer and all steps of the largest per-layer T; a Group Neuron can emit up to τ per step (one per member that fires).\n");
    for m in &r.models {
        let lt: Vec<usize> =
            m.measurement.layers.first().map(|l| l.gn_mse.iter().map(|p| p.0).collect()).unwrap_or_default();
        let _ = writeln!(s, "**{}**\n", m.name);
        let _ = writeln!(
            s,
            "| site | θ | L | neurons | {} | {} | IF rate | GN rate |",
            lt.iter().map(|t| format!("IF T={t}")).collect::<Vec<_>>().join(" | "),
            lt.iter().map(|t| format!("GN T={t}")).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(
            s,
            "| --- | --- | --- | --- |{}{} --- | --- |",
            " --- |".repeat(lt.len()),
            " --- |".repeat(lt.len())
        );
        for l in &m.measurement.layers {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} |",
                l.site,
                match l
                    .channel_thetas
                    .iter()
                    .copied()
                    .reduce(f64::min)
                    .zip(l.channel_thetas.iter().copied().reduce(f64::max))
                {
                    Some((lo, hi)) => format!("{lo:.3}–{hi:.3} per channel"),
                    None => format!("{:.4}", l.theta),
                },
                if l.levels == 0 { "ReLU".to_string() } else { l.levels.to_string() },
                l.neurons,
                cells(&l.if_mse, |v| format!("{v:.4}")),
                cells(&l.gn_mse, |v| format!("{v:.4}")),
                l.if_rate,
                l.gn_rate
            );
        }
        let _ = writeln!(s);
    }
}

/// The cost per image: ANN MACs against the spiking networks' operations and energy.
fn operations(s: &mut String, r: &Report) {
    let _ = writeln!(s, "### Cost per image: the ANN's MACs against the spiking networks' operations and energy\n");
    let _ = writeln!(s, "Names as NeuroBench defines them (docs/cost.md). A weighted op (Conv, Gemm, MatMul) reading spikes does one accumulate (AC) per synapse per member spike: its ANN MACs × (member spikes per input neuron per step, over the first T steps) × T. One reading analog values does multiply-accumulates (MACs): once if the values are computed once per image (the first layer on the image), at every step if they change (a rate-coded op's output, an averaging pool's). Energy: 45 nm FP32, 4.6 pJ per MAC and 0.9 pJ per AC. Shapes come from one image run, rates from the per-layer run above.\n");
    for m in &r.models {
        let Some(ops) = &m.measurement.operations else { continue };
        let _ = writeln!(
            s,
            "**{}**: the ANN does {} MACs per image ({}); {} bytes of parameters.\n",
            m.name,
            si(ops.ann_macs as f64),
            gn_verify::energy(ops.ann_energy_pj),
            ops.footprint
        );
        let _ = writeln!(s, "{}", gn_verify::cost_table(ops));
    }
    let _ = writeln!(s, "### ONNX Runtime against tract (emitted models)\n");
    let _ = writeln!(s, "Both runtimes compute every elementwise op of the neurons identically, but sum convolutions in different orders; where a membrane lies within float rounding of a threshold, a spike moves by one step or one layer, which changes that image's readout by about one spike's weight. The T = 1 models show the agreement without that effect.\n");
    let _ = writeln!(s, "| model | emitted | max abs diff | images beyond 1e-4 | relative MSE | top-1 flips | onnx.checker |\n| --- | --- | --- | --- | --- | --- | --- |");
    for m in &r.models {
        for c in &m.runtime {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2e} | {:.2}% | {:.1e} | {}/{} | {} |",
                m.name,
                c.model,
                c.max_abs_diff,
                c.share_beyond_1e4 * 100.0,
                c.relative_mse,
                c.top1_flips,
                c.images,
                c.checker
            );
        }
    }
}

/// The stateful form against the unrolled anytime rows.
fn stateful(s: &mut String, r: &Report) {
    if r.models.iter().any(|m| !m.stateful.is_empty()) {
        let _ = writeln!(s, "\n### Stateful emission (`--emit stateful`): one step per call\n");
        let _ = writeln!(s, "The membranes, the max-pools' running sums and the readout are graph inputs and outputs; the caller feeds them back. Call t against row t of the unrolled `--anytime` model, same runtime, first images; the cost of one call is against one run of the ANN on the same images (single measurements on a shared machine).\n");
        let _ = writeln!(s, "| model | neuron | calls | states | ORT: max abs diff, relative MSE, top-1 flips | tract: max abs diff, relative MSE, top-1 flips | one call / one ANN run: ORT, tract | onnx.checker |\n| --- | --- | --- | --- | --- | --- | --- | --- |");
        for m in &r.models {
            for c in &m.stateful {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1e}, {:.1e}, {}/{} | {:.1e}, {:.1e}, {}/{} | {:.2}, {:.2} | {} |",
                    m.name,
                    c.neuron,
                    c.calls,
                    c.states,
                    c.ort_max_abs_diff,
                    c.ort_relative_mse,
                    c.ort_top1_flips,
                    c.images,
                    c.tract_max_abs_diff,
                    c.tract_relative_mse,
                    c.tract_top1_flips,
                    c.images,
                    c.ort_step_cost,
                    c.tract_step_cost,
                    c.checker
                );
            }
        }
    }
}

/// ONNX Runtime against tract, and the runtime matrix.
fn runtimes(s: &mut String, r: &Report) {
    if !r.runtimes.is_empty() {
        let _ = writeln!(s, "\n### Runtimes\n");
        let _ = writeln!(s, "GN (τ = {}) models of each form on each runtime, first {} images: the standard and custom-op forms against ONNX Runtime on the standard form; the stateful form, called once per step, against the rows of the unrolled anytime model on ONNX Runtime. OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with AVX-512-BF16 or AMX (this machine has them), which moves spikes; with `INFERENCE_PRECISION_HINT` = `f32` it agrees. OpenVINO does not expand model-local functions, so it refuses the custom-op form.\n", r.tau, r.runtimes[0].images);
        let _ = writeln!(s, "| model | form | runtime | runs | max abs diff | relative MSE | images differing (> 1e-5) | top-1 flips |\n| --- | --- | --- | --- | --- | --- | --- | --- |");
        for row in &r.runtimes {
            if row.runs {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | yes | {:.1e} | {:.1e} | {}/{} | {} |",
                    row.model,
                    row.form,
                    row.runtime,
                    row.max_abs_diff,
                    row.relative_mse,
                    row.images_differing,
                    row.images,
                    row.top1_flips
                );
            } else {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | no: {} | | | | |",
                    row.model,
                    row.form,
                    row.runtime,
                    row.error.replace('|', "/")
                );
            }
        }
    }
}

/// The custom-op form against the standard form.
fn custom_op(s: &mut String, r: &Report) {
    if r.models.iter().any(|m| !m.custom_op.is_empty()) {
        let _ = writeln!(s, "\n### Custom-op emission (`--emit custom-op`) against the standard emission\n");
        let _ = writeln!(s, "One `gn.transpile` node per spiking layer, defined by a model-local function whose body is the standard expansion. ONNX Runtime inlines the function, or, with the `gn-ort-ops` library registered, runs its fused kernel; tract runs the registered kernel. Each runtime's custom-op output is compared with the same runtime's standard output (the form must not change a value), and tract's custom-op output with ONNX Runtime's standard output (where the convolutions' summation order can move a spike at a threshold), first images. The time ratios (load and run of the custom-op model over the standard one, same process, same images) are single runs on a shared machine: read them as rough.\n");
        let _ = writeln!(s, "| model | neuron | T | nodes standard → custom-op | max abs diff against the standard form: ORT, ORT + gn-ort-ops, tract | tract custom-op vs ORT standard: max abs diff | images beyond 1e-5 | top-1 flips | onnx.checker | time custom-op / standard: ORT, ORT + gn-ort-ops, tract |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for m in &r.models {
            for c in &m.custom_op {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} → {} | {:.1e}, {:.1e}, {:.1e} | {:.1e} | {:.1}% | {}/{} | {} | {:.2}, {:.2}, {:.2} |",
                    m.name,
                    c.neuron,
                    c.timesteps,
                    c.nodes_standard,
                    c.nodes_compact,
                    c.ort_max_abs_diff,
                    c.fused_max_abs_diff,
                    c.tract_kernel_max_abs_diff,
                    c.tract_max_abs_diff,
                    c.tract_share_beyond_1e5 * 100.0,
                    c.tract_top1_flips,
                    c.images,
                    c.checker,
                    c.ort_time_ratio,
                    c.fused_time_ratio,
                    c.tract_time_ratio
                );
            }
        }
    }
}

/// Networks built in code.
fn built(s: &mut String, r: &Report) {
    if !r.built.is_empty() {
        let _ = writeln!(s, "\n### Max-pools and static batch (networks built in code, ONNX Runtime and tract)\n");
        let _ = writeln!(s, "`stem`: Conv → QCFS → MaxPool 3×3/2 → Conv → QCFS (the pool moves in front of the first layer); `pool_on_spikes`: a MaxPool 2×2/2 after the second spiking layer (max-pool over running counts); `static_batch`: the same exported with a static batch of 3 and a Reshape to [3, -1].\n");
        let _ = writeln!(s, "| model | form | pools moved | GN τ=L T=1 vs ANN (ORT): max abs diff | GN T=4 ORT vs tract: max abs diff | onnx.checker |\n| --- | --- | --- | --- | --- | --- |");
        for c in &r.built {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1e} | {:.1e} | {} |",
                c.model, c.form, c.moved, c.exact_max_abs_diff, c.ort_tract_max_abs_diff, c.checker
            );
        }
    }
}

/// The gates, pass or fail.
fn gates(s: &mut String, r: &Report) {
    let _ = writeln!(s, "\n### Gates\n");
    for super::report::Gate { name, passed: ok, detail } in &r.gates {
        let _ = writeln!(s, "- {} {name}: {detail}", if *ok { "pass" } else { "FAIL" });
    }
}
