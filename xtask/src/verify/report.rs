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
pub struct Report {
    /// What the images are: "Fashion-MNIST test images", or the user's file.
    pub data: String,
    pub images: usize,
    pub tau: u32,
    pub models: Vec<ModelResult>,
    pub built: Vec<BuiltCheck>,
    pub runtimes: Vec<RuntimeRow>,
    pub gates: Vec<Gate>,
    pub seconds: f64,
}

/// One gate: a named threshold check and its verdict, one line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Gate {
    pub fn new(name: String, passed: bool, detail: String) -> Gate {
        Gate { name, passed, detail }
    }
}

/// The paper's Table 1 for ResNet-20 on CIFAR-100 (τ = 4), for the report.
pub const PAPER_TABLE1: &str = "| paper (ResNet-20, CIFAR-100) | 1 | 2 | 4 | 8 | 16 | 32 |\n| --- | --- | --- | --- | --- | --- | --- |\n| GN | 1.39 | 0.64 | 0.37 | 0.30 | 0.28 | 0.28 |\n| IF | 11.65 | 6.36 | 3.72 | 2.02 | 0.92 | 0.45 |\n| GN/IF | 11.9% | 10.1% | 9.9% | 14.9% | 30.4% | 62.2% |\n";

/// The values of (T, value) points as table cells: `a | b | c`.
pub fn cells(points: &[(usize, f64)], format: impl Fn(f64) -> String) -> String {
    points.iter().map(|p| format(p.1)).collect::<Vec<_>>().join(" | ")
}

/// The README's summary of a report: accuracy and MSE at a glance, the exactness check,
/// the forms and runtimes, the gates, and where the full report is.
pub fn render_summary(r: &Report) -> String {
    let mut s = String::new();
    let passed = r.gates.iter().filter(|g| g.passed).count();
    let _ = writeln!(
        s,
        "### Verification: ANN vs IF vs GN (τ = {}) on {} {}\n\n{passed} of {} gates pass. The full report (per-layer errors, firing rates, synaptic operations, accuracy for energy, every check and gate) is [docs/verify/report.md](docs/verify/report.md).\n",
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
            "\nGN with τ = L at T = 1 reproduces the ANN (docs/design.md §4.1), top-1 agreement: {}.",
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
