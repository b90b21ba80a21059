//! The report: what was measured per model, the checks and gates, rendered as Markdown
//! (and into the README's measured section).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;

use gn_transpile::NeuronKind;
use gn_verify::Measurement;
use serde::Serialize;

/// A network built in code (max-pools, static batch) converted and run on both runtimes.
#[derive(Serialize)]
pub struct BuiltCheck {
    pub model: String,
    pub form: String,
    /// Max-pools moved in front of a spiking layer.
    pub moved: usize,
    /// GN τ = L = 4, T = 1 on ONNX Runtime against the ANN on ONNX Runtime.
    pub exact_max_abs_diff: f64,
    /// GN τ = 4, T = 4 (anytime): ONNX Runtime against tract, every output.
    pub ort_tract_max_abs_diff: f64,
    pub checker: String,
}

/// The custom-op form of one conversion against the standard form.
#[derive(Serialize)]
pub struct CustomOpCheck {
    pub neuron: String,
    pub timesteps: usize,
    pub nodes_standard: usize,
    pub nodes_compact: usize,
    /// ONNX Runtime on the custom-op model against ONNX Runtime on the standard model.
    pub ort_max_abs_diff: f64,
    /// ONNX Runtime on the custom-op model with the gn-ort-ops library (fused kernels)
    /// against ONNX Runtime on the standard model.
    pub fused_max_abs_diff: f64,
    /// Wall time of the custom-op model with the library over the standard one.
    pub fused_time_ratio: f64,
    /// tract on the custom-op model (registered kernels) against tract on the standard
    /// model: both optimised, or both unoptimised where the optimised pair differs.
    pub tract_kernel_max_abs_diff: f64,
    /// tract on the custom-op model against ONNX Runtime on the standard model.
    pub tract_max_abs_diff: f64,
    pub tract_share_beyond_1e5: f64,
    pub tract_relative_mse: f64,
    pub tract_top1_flips: usize,
    pub images: usize,
    pub checker: String,
    /// Wall time of the custom-op model over the standard one (load and run, same process).
    pub ort_time_ratio: f64,
    pub tract_time_ratio: f64,
}

/// One emitted model on one runtime, against ONNX Runtime on the standard form (a
/// refusal is a result: `runs` false and the runtime's first line).
#[derive(Serialize, serde::Deserialize)]
pub struct RuntimeRow {
    pub model: String,
    pub form: String,
    pub runtime: String,
    pub images: usize,
    pub runs: bool,
    #[serde(default)]
    pub max_abs_diff: f64,
    #[serde(default)]
    pub relative_mse: f64,
    #[serde(default)]
    pub top1_flips: usize,
    #[serde(default)]
    pub images_differing: usize,
    #[serde(default)]
    pub error: String,
}

/// The stateful form of one conversion: calls against the unrolled anytime rows.
#[derive(Serialize)]
pub struct StatefulCheck {
    pub neuron: String,
    pub calls: usize,
    pub images: usize,
    /// State tensors (membranes, max-pool sums, readout).
    pub states: usize,
    /// Call t against row t of the unrolled `--anytime` model, worst over t, ONNX Runtime.
    pub ort_max_abs_diff: f64,
    /// Worst relative MSE and top-1 flips over the calls, ONNX Runtime.
    pub ort_relative_mse: f64,
    pub ort_top1_flips: usize,
    /// The same on tract.
    pub tract_max_abs_diff: f64,
    pub tract_relative_mse: f64,
    pub tract_top1_flips: usize,
    /// One call over one run of the ANN on the same images (ONNX Runtime, best of the calls / of 3 runs).
    pub ort_step_cost: f64,
    /// One call over one run of the ANN on tract (means).
    pub tract_step_cost: f64,
    pub checker: String,
}

/// The cross-runtime comparison of one emitted model.
#[derive(Serialize)]
pub struct RuntimeCheck {
    pub model: String,
    pub max_abs_diff: f64,
    pub share_beyond_1e4: f64,
    pub top1_flips: usize,
    pub images: usize,
    pub relative_mse: f64,
    pub checker: String,
}

#[derive(Serialize)]
pub struct ModelResult {
    pub name: String,
    #[serde(flatten)]
    pub measurement: Measurement,
    pub runtime: Vec<RuntimeCheck>,
    pub custom_op: Vec<CustomOpCheck>,
    pub stateful: Vec<StatefulCheck>,
    /// θ set from data for a ReLU network.
    pub calibration: Option<gn_transpile::calibrate::Calibration>,
    pub seconds: f64,
}

#[derive(Serialize)]
pub struct SweepPoint {
    pub tau: u32,
    pub mse: Vec<(usize, f64)>,
    pub accuracy: Vec<(usize, f64)>,
}

#[derive(Serialize)]
pub struct Report {
    /// What the images are: "Fashion-MNIST test images", or the user's file.
    pub data: String,
    pub images: usize,
    pub tau: u32,
    pub models: Vec<ModelResult>,
    pub tau_sweep: Vec<(String, Vec<SweepPoint>)>,
    pub built: Vec<BuiltCheck>,
    pub runtimes: Vec<RuntimeRow>,
    pub gates: Vec<(String, bool, String)>,
    pub seconds: f64,
}

/// The paper's Table 1 for ResNet-20 on CIFAR-100 (τ = 4), for the report.
const PAPER_TABLE1: &str = "| paper (ResNet-20, CIFAR-100) | 1 | 2 | 4 | 8 | 16 | 32 |\n| --- | --- | --- | --- | --- | --- | --- |\n| GN | 1.39 | 0.64 | 0.37 | 0.30 | 0.28 | 0.28 |\n| IF | 11.65 | 6.36 | 3.72 | 2.02 | 0.92 | 0.45 |\n| GN/IF | 11.9% | 10.1% | 9.9% | 14.9% | 30.4% | 62.2% |\n";

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

pub fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Verification: ANN vs IF vs GN (τ = {}) on {} {}\n", r.tau, r.images, r.data);
    let ts: Vec<usize> = r
        .models
        .first()
        .map(|m| m.measurement.curve(NeuronKind::If).mse.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let header = |s: &mut String, first: &str| {
        let _ = writeln!(s, "| {first} | {} |", ts.iter().map(|t| format!("T={t}")).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "| --- |{}", " --- |".repeat(ts.len()));
    };
    if let Some(m) = r.models.first() {
        let _ = writeln!(
            s,
            "T ≤ {} on {} images; larger T on the first {} (one anytime run per neuron model).\n",
            m.measurement.short_max, m.measurement.images, m.measurement.long_images
        );
    }
    let _ = writeln!(s, "### Table 1: MSE between the ANN's and the SNN's logits\n");
    for m in &r.models {
        header(&mut s, &format!("{} ({})", m.name, kind(m)));
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
    for (model, points) in &r.tau_sweep {
        let ts: Vec<usize> = points.first().map(|p| p.mse.iter().map(|q| q.0).collect()).unwrap_or_default();
        let _ = writeln!(s, "\n### GN against τ on {model}\n");
        let _ = writeln!(s, "| τ | {} |", ts.iter().map(|t| format!("MSE T={t}")).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "| --- |{}", " --- |".repeat(ts.len()));
        for p in points {
            let _ = writeln!(s, "| {} | {} |", p.tau, cells(&p.mse, |v| format!("{v:.4}")));
        }
        let _ = writeln!(s, "\n| τ | {} |", ts.iter().map(|t| format!("acc T={t}")).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "| --- |{}", " --- |".repeat(ts.len()));
        for p in points {
            let _ = writeln!(s, "| {} | {} |", p.tau, cells(&p.accuracy, |v| format!("{:.2}", v * 100.0)));
        }
    }
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
    let _ = writeln!(s, "### Operations per image: ANN MACs against SNN synaptic operations\n");
    let _ = writeln!(s, "Counting rule: a weighted layer (Conv, Gemm, MatMul) fed by a spiking layer does one accumulate per synapse per input spike, so its SOPs over T steps are its ANN MACs × (spikes per input neuron per step, measured over the first T steps) × T. A Group Neuron counts its member spikes. A weighted layer that reads the image runs once on the time-invariant input and keeps its MACs (the \"analog MACs\" column). Pooling between a spiking layer and a weighted layer is taken to preserve the rate. Shapes come from tract, rates from the per-layer run above. An accumulate is cheaper than a multiply-accumulate (about 0.9 pJ against 4.6 pJ in 45 nm CMOS), so a ratio below about 5× can still save energy on hardware that exploits sparsity.\n");
    let mut op_header = false;
    for m in &r.models {
        let Some(ops) = &m.measurement.operations else { continue };
        if !op_header {
            let ts: Vec<usize> = ops.gn_sops.iter().map(|p| p.0).collect();
            let _ = writeln!(
                s,
                "| model | ANN MACs | analog MACs | neuron | {} |",
                ts.iter().map(|t| format!("SOPs T={t} (× ANN MACs)")).collect::<Vec<_>>().join(" | ")
            );
            let _ = writeln!(s, "| --- | --- | --- | --- |{}", " --- |".repeat(ts.len()));
            op_header = true;
        }
        for (tag, sops) in [("IF", &ops.if_sops), (&*NeuronKind::Gn.label(r.tau), &ops.gn_sops)] {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {tag} | {} |",
                m.name,
                si(ops.ann_macs as f64),
                si(ops.analog_macs as f64),
                sops.iter()
                    .map(|p| format!("{} ({:.2}×)", si(p.1), p.1 / ops.ann_macs.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    let _ = writeln!(s);
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
    let _ = writeln!(s, "\n### Gates\n");
    for (name, ok, detail) in &r.gates {
        let _ = writeln!(s, "- {} {name}: {detail}", if *ok { "pass" } else { "FAIL" });
    }
    s
}

/// The values of (T, value) points as table cells: `a | b | c`.
pub fn cells(points: &[(usize, f64)], format: impl Fn(f64) -> String) -> String {
    points.iter().map(|p| format(p.1)).collect::<Vec<_>>().join(" | ")
}

/// A count with an SI suffix: 1.23M.
pub fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The README's summary of a report: accuracy and MSE at a glance, the exactness check,
/// the forms and runtimes, the gates, and where the full report is.
pub fn render_summary(r: &Report) -> String {
    let mut s = String::new();
    let passed = r.gates.iter().filter(|g| g.1).count();
    let _ = writeln!(
        s,
        "### Verification: ANN vs IF vs GN (τ = {}) on {} {}\n\n{passed} of {} gates pass. The full report (per-layer errors, firing rates, synaptic operations, the τ sweep, every check and gate) is [docs/verify/report.md](docs/verify/report.md).\n",
        r.tau,
        r.images,
        r.data,
        r.gates.len()
    );
    let shown = [1usize, 2, 4, 8, 32];
    let at = |v: &[(usize, f64)], t: usize| v.iter().find(|p| p.0 == t).map(|p| p.1);
    let _ = writeln!(
        s,
        "Top-1 accuracy (%) by T (T = 32 on the first {} images):\n",
        r.models.first().map_or(0, |m| m.measurement.long_images)
    );
    let _ = writeln!(
        s,
        "| model | ANN | {} |\n| --- | --- |{}",
        shown.map(|t| format!("GN T={t}")).join(" | "),
        " --- |".repeat(shown.len())
    );
    for m in &r.models {
        let gn = m.measurement.curve(NeuronKind::Gn);
        let row: Vec<String> =
            shown.iter().map(|&t| at(&gn.accuracy, t).map_or("–".into(), |a| format!("{:.2}", a * 100.0))).collect();
        let ann = m.measurement.ann_accuracy.map_or("–".into(), |a| format!("{:.2}", a * 100.0));
        let _ = writeln!(s, "| {} | {ann} | {} |", m.name, row.join(" | "));
    }
    let _ = writeln!(
        s,
        "\nIF at the same T, and the MSE of GN against IF's (the paper's Table 1 measures 10-15 % at T ≤ 4):\n"
    );
    let _ = writeln!(
        s,
        "| model | {} | {} |\n| --- |{}",
        shown.map(|t| format!("IF T={t}")).join(" | "),
        shown.map(|t| format!("GN/IF MSE T={t}")).join(" | "),
        " --- |".repeat(2 * shown.len())
    );
    for m in &r.models {
        let (if_, gn) = (m.measurement.curve(NeuronKind::If), m.measurement.curve(NeuronKind::Gn));
        let acc: Vec<String> =
            shown.iter().map(|&t| at(&if_.accuracy, t).map_or("–".into(), |a| format!("{:.2}", a * 100.0))).collect();
        let ratio: Vec<String> = shown
            .iter()
            .map(|&t| match (at(&gn.mse, t), at(&if_.mse, t)) {
                (Some(g), Some(i)) if i > 0.0 => format!("{:.0}%", 100.0 * g / i),
                _ => "–".into(),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} | {} |", m.name, acc.join(" | "), ratio.join(" | "));
    }
    let exact: Vec<String> = r
        .models
        .iter()
        .filter_map(|m| {
            m.measurement.exactness.as_ref().map(|e| format!("{} {}/{}", m.name, r.images - e.flips, r.images))
        })
        .collect();
    if !exact.is_empty() {
        let _ = writeln!(
            s,
            "\nGN with τ = L at T = 1 reproduces the ANN (SPEC §4.1), top-1 agreement: {}.",
            exact.join(", ")
        );
    }
    let stateful: Vec<&StatefulCheck> = r.models.iter().flat_map(|m| &m.stateful).collect();
    if !stateful.is_empty() {
        let worst = |f: &dyn Fn(&StatefulCheck) -> f64| stateful.iter().map(|c| f(c)).fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "`--emit stateful`: t calls against row t of the unrolled anytime model on every model, IF and GN: max |diff| {:.1e} on tract; on ONNX Runtime {:.1e} (relative MSE ≤ {:.1e}, {} top-1 flips).",
            worst(&|c| c.tract_max_abs_diff),
            worst(&|c| c.ort_max_abs_diff),
            worst(&|c| c.ort_relative_mse),
            stateful.iter().map(|c| c.ort_top1_flips).sum::<usize>()
        );
    }
    if !r.runtimes.is_empty() {
        let mut lines = Vec::new();
        let mut runtimes: Vec<&str> = Vec::new();
        for row in &r.runtimes {
            if !runtimes.contains(&row.runtime.as_str()) {
                runtimes.push(&row.runtime);
            }
        }
        for runtime in runtimes {
            for form in ["standard", "custom-op", "stateful"] {
                let rows: Vec<&RuntimeRow> =
                    r.runtimes.iter().filter(|x| x.runtime == runtime && x.form == form).collect();
                if rows.is_empty() {
                    continue;
                }
                let verdict = if rows.iter().all(|x| !x.runs) {
                    "refused".to_string()
                } else if rows.iter().all(|x| x.runs) {
                    let worst = rows.iter().map(|x| x.relative_mse).fold(0.0, f64::max);
                    let flips: usize = rows.iter().map(|x| x.top1_flips).sum();
                    format!("runs, relative MSE ≤ {worst:.1e}, {flips} top-1 flips")
                } else {
                    "runs some models".to_string()
                };
                lines.push(format!("| {runtime} | {form} | {verdict} |"));
            }
        }
        let _ = writeln!(s, "\nRuntimes, against ONNX Runtime on the unrolled standard form (first {} images of each model):\n\n| runtime | form | result |\n| --- | --- | --- |\n{}", r.runtimes[0].images, lines.join("\n"));
    }
    let _ = writeln!(s, "\n![MSE against T](docs/verify/mse_resnet20_l8.svg) ![accuracy against T](docs/verify/accuracy_resnet20_l8.svg)");
    s
}

/// Writes the full report to `docs/verify/report.md` (with the plots beside it) and the
/// summary into the README's measured section (between markers).
pub fn update_readme(readme: &Path, markdown: &str, summary: &str, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(readme)?;
    let (begin, end) = ("<!-- verify:begin -->", "<!-- verify:end -->");
    let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
        bail!("README.md has no {begin} … {end} section");
    };
    let docs = crate::workspace().join("docs/verify");
    std::fs::create_dir_all(&docs)?;
    for e in std::fs::read_dir(out)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "svg") {
            std::fs::copy(e.path(), docs.join(e.file_name()))?;
        }
    }
    let mut plots = String::from("### Plots\n\n![firing-rate staircase at T = 4](staircase.svg)\n\n");
    let mut names: Vec<String> =
        std::fs::read_dir(&docs)?.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    for name in names.iter().filter(|n| n.starts_with("mse_") || n.starts_with("accuracy_")) {
        let _ = writeln!(plots, "![{}]({name})", name.trim_end_matches(".svg"));
    }
    std::fs::write(
        docs.join("report.md"),
        format!("{}\n{plots}", markdown.replacen("## Verification", "# Verification", 1)),
    )?;
    let new = format!("{}{begin}\n{summary}\n{}", &text[..a], &text[b..]);
    std::fs::write(readme, new)?;
    Ok(())
}
