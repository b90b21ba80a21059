//! The gates: thresholds from the config applied to the results. Each gate is a line of
//! the report, (name, passed, detail).

use gn_transpile::NeuronKind;

use super::config::Gates;
use super::report::{BuiltCheck, Gate, ModelResult, RuntimeRow};

/// Every gate's verdict.
pub fn evaluate(g: &Gates, results: &[ModelResult], built: &[BuiltCheck], runtimes: &[RuntimeRow]) -> Vec<Gate> {
    let mut gates = Vec::new();
    built_gates(g, built, &mut gates);
    relu_gates(g, results, &mut gates);
    exact_and_runtime_gates(g, results, &mut gates);
    custom_op_gates(g, results, &mut gates);
    stateful_gates(g, results, &mut gates);
    ratio_gates(g, results, &mut gates);
    matrix_gates(g, runtimes, &mut gates);
    gates
}

/// Networks built in code: convert, run on ONNX Runtime, agree with tract.
fn built_gates(g: &Gates, built: &[BuiltCheck], gates: &mut Vec<Gate>) {
    for c in built {
        let ok = c.checker == "ok"
            && c.exact_max_abs_diff <= g.built_max_abs_diff
            && c.ort_tract_max_abs_diff <= g.built_max_abs_diff;
        gates.push(Gate::new(
            format!("{} ({}): converts and runs on ONNX Runtime", c.model, c.form),
            ok,
            format!(
                "τ=L T=1 vs ANN max |diff| {:.1e}, T=4 ONNX Runtime vs tract max |diff| {:.1e} (≤ {:.0e}); onnx.checker: {}",
                c.exact_max_abs_diff, c.ort_tract_max_abs_diff, g.built_max_abs_diff, c.checker
            ),
        ));
    }
}

/// Calibrated ReLU networks: GN below IF in MSE up to a T, and GN at that T near the ANN.
fn relu_gates(g: &Gates, results: &[ModelResult], gates: &mut Vec<Gate>) {
    for r in results.iter().filter(|r| r.calibration.is_some()) {
        // A calibrated ReLU network: GN below IF in MSE at every T up to relu_up_to_t,
        // and GN at that T within relu_max_accuracy_drop of the ANN.
        let (gn, ifc) = (r.measurement.curve(NeuronKind::Gn), r.measurement.curve(NeuronKind::If));
        let upto = g.relu_up_to_t;
        let pairs: Vec<(usize, f64, f64)> = gn
            .mse
            .iter()
            .filter(|p| p.0 <= upto)
            .filter_map(|&(t, m)| ifc.mse.iter().find(|q| q.0 == t).map(|q| (t, m, q.1)))
            .collect();
        let ok = !pairs.is_empty() && pairs.iter().all(|&(_, gn, ifm)| gn < ifm);
        let detail: Vec<String> = pairs.iter().map(|(t, a, b)| format!("T={t}: {a:.4} vs {b:.4}")).collect();
        gates.push(Gate::new(
            format!("{}: GN MSE below IF at T ≤ {upto} (calibrated ReLU)", r.name),
            ok,
            detail.join(", "),
        ));
        if let (Some(ann), Some(acc)) =
            (r.measurement.ann_accuracy, gn.accuracy.iter().find(|p| p.0 == upto).map(|p| p.1))
        {
            let drop = (ann - acc) * 100.0;
            gates.push(Gate::new(
                format!(
                    "{}: GN at T={upto} within {} point of the ANN (calibrated ReLU)",
                    r.name, g.relu_max_accuracy_drop
                ),
                drop <= g.relu_max_accuracy_drop,
                format!("ANN {:.2} %, GN {:.2} %: {drop:+.2} points", ann * 100.0, acc * 100.0),
            ));
        }
    }
}

/// τ = L, T = 1 exactness, and ONNX Runtime against tract on every emitted model.
fn exact_and_runtime_gates(g: &Gates, results: &[ModelResult], gates: &mut Vec<Gate>) {
    for r in results {
        if let Some(e) = &r.measurement.exactness {
            let ok =
                e.top1_agreement >= g.exactness_min_top1_agreement && e.relative_mse <= g.exactness_max_relative_mse;
            gates.push(Gate::new(
                format!("{}: GN τ=L={} T=1 reproduces the ANN", r.name, e.tau),
                ok,
                format!(
                    "top-1 agreement {:.4} (≥ {}), relative MSE {:.1e} (≤ {:.0e})",
                    e.top1_agreement, g.exactness_min_top1_agreement, e.relative_mse, g.exactness_max_relative_mse
                ),
            ));
        }
        for c in &r.runtime {
            let flip_share = c.top1_flips as f64 / c.images.max(1) as f64;
            let one_step = c.model.ends_with("_t1");
            let ok = c.checker == "ok"
                && c.relative_mse <= g.ort_max_relative_mse
                && flip_share <= g.ort_max_top1_flip_share
                && (!one_step || c.share_beyond_1e4 <= g.ort_max_share_beyond_1e4_t1);
            gates.push(Gate::new(
                format!("{} {}: ONNX Runtime vs tract", r.name, c.model),
                ok,
                format!(
                    "relative MSE {:.1e} (≤ {:.0e}), top-1 flips {}/{} (≤ {:.1}%), {:.2}% of images beyond 1e-4{}, max |diff| {:.1e}, onnx.checker: {}",
                    c.relative_mse, g.ort_max_relative_mse, c.top1_flips, c.images, g.ort_max_top1_flip_share * 100.0,
                    c.share_beyond_1e4 * 100.0,
                    if one_step { format!(" (≤ {:.1}%)", g.ort_max_share_beyond_1e4_t1 * 100.0) } else { String::new() },
                    c.max_abs_diff, c.checker
                ),
            ));
        }
    }
}

/// The custom-op form against the standard form, on every runtime.
fn custom_op_gates(g: &Gates, results: &[ModelResult], gates: &mut Vec<Gate>) {
    for r in results {
        for c in &r.custom_op {
            let flip_share = c.tract_top1_flips as f64 / c.images.max(1) as f64;
            let ok = c.checker == "ok"
                && c.ort_max_abs_diff <= g.custom_op_max_abs_diff
                && c.fused_max_abs_diff <= g.custom_op_max_abs_diff
                // tract's kernel reproduces the standard form as one runtime runs it:
                // tract's own (optimised, or unoptimised where the optimiser rewrote
                // the expansion's arithmetic) or ONNX Runtime's (whose convolutions may
                // sum in another order).
                && c.tract_kernel_max_abs_diff.min(c.tract_max_abs_diff) <= g.custom_op_max_abs_diff
                && flip_share <= g.ort_max_top1_flip_share;
            gates.push(Gate::new(
                format!("{} {} T={}: custom-op model", r.name, c.neuron, c.timesteps),
                ok,
                format!(
                    "custom-op vs standard: max |diff| ONNX Runtime {:.1e}, ONNX Runtime + gn-ort-ops {:.1e} (≤ {:.0e}); tract custom-op vs tract standard {:.1e}, vs ONNX Runtime standard {:.1e} (either ≤ {:.0e}), top-1 flips {}/{} (≤ {:.1}%), relative MSE {:.1e}; onnx.checker: {}",
                    c.ort_max_abs_diff, c.fused_max_abs_diff, g.custom_op_max_abs_diff, c.tract_kernel_max_abs_diff,
                    c.tract_max_abs_diff, g.custom_op_max_abs_diff, c.tract_top1_flips, c.images,
                    g.ort_max_top1_flip_share * 100.0, c.tract_relative_mse, c.checker
                ),
            ));
        }
    }
}

/// Stateful calls against the anytime rows.
fn stateful_gates(g: &Gates, results: &[ModelResult], gates: &mut Vec<Gate>) {
    for r in results {
        for c in &r.stateful {
            // Identical, or (where a runtime picks another kernel for another batch
            // size) within the relative MSE and top-1 flip limits.
            let agrees = |max: f64, rel: f64, flips: usize| {
                max <= g.stateful_max_abs_diff
                    || (rel <= g.stateful_max_relative_mse
                        && flips as f64 <= g.stateful_max_top1_flip_share * c.images as f64)
            };
            let ok = c.checker == "ok"
                && agrees(c.ort_max_abs_diff, c.ort_relative_mse, c.ort_top1_flips)
                && agrees(c.tract_max_abs_diff, c.tract_relative_mse, c.tract_top1_flips);
            gates.push(Gate::new(
                format!("{} {}: {} stateful calls reproduce the anytime rows", r.name, c.neuron, c.calls),
                ok,
                format!(
                    "ONNX Runtime max |diff| {:.1e}, relative MSE {:.1e}, top-1 flips {}; tract {:.1e}, {:.1e}, {} (identical to {:.0e}, or relative MSE ≤ {:.0e} and flips ≤ {:.1}%); onnx.checker: {}",
                    c.ort_max_abs_diff, c.ort_relative_mse, c.ort_top1_flips, c.tract_max_abs_diff, c.tract_relative_mse,
                    c.tract_top1_flips, g.stateful_max_abs_diff, g.stateful_max_relative_mse,
                    g.stateful_max_top1_flip_share * 100.0, c.checker
                ),
            ));
        }
    }
}

/// GN/IF MSE on the ratio model, up to a T.
fn ratio_gates(g: &Gates, results: &[ModelResult], gates: &mut Vec<Gate>) {
    if let Some(r) = results.iter().find(|r| r.name == g.ratio_model) {
        let (if_, gn) = (r.measurement.curve(NeuronKind::If), r.measurement.curve(NeuronKind::Gn));
        for ((t, a), (_, b)) in if_.mse.iter().zip(&gn.mse).filter(|((t, _), _)| *t <= g.ratio_up_to_t) {
            let ratio = b / a;
            gates.push(Gate::new(
                format!("{}: GN/IF MSE at T={t}", r.name),
                ratio <= g.ratio_max,
                format!("{ratio:.3} (≤ {})", g.ratio_max),
            ));
        }
    }
}

/// The runtimes docs/forms.md names as running a form must run it and agree.
fn matrix_gates(g: &Gates, runtimes: &[RuntimeRow], gates: &mut Vec<Gate>) {
    // The runtimes docs/forms.md names as running a form must run it and agree.
    for row in runtimes.iter().filter(|r| {
        r.runtime == "onnx.reference"
            || r.runtime == "ONNX Runtime + gn-ort-ops"
            || (r.runtime == "OpenVINO (f32 hint)" && r.form == "standard")
    }) {
        let ok = row.runs && row.relative_mse <= g.ort_max_relative_mse && row.top1_flips == 0;
        let detail = if row.runs {
            format!(
                "relative MSE {:.1e} (≤ {:.0e}), top-1 flips {}/{}",
                row.relative_mse, g.ort_max_relative_mse, row.top1_flips, row.images
            )
        } else {
            format!("refused: {}", row.error)
        };
        gates.push(Gate::new(
            format!("{} {} on {}: agrees with ONNX Runtime", row.model, row.form, row.runtime),
            ok,
            detail,
        ));
    }
}
