//! Cross-runtime checks: emitted models on ONNX Runtime against tract, the custom-op
//! form against the standard form, and the networks built in code.

use std::path::Path;

use gn_onnx::proto::ModelProto;
use gn_transpile::{transpile, Emit, NeuronKind, Options};
use std::time::Instant;

use gn_verify::{relative_mse, run_batched, top1};
use ndarray::{ArrayD, IxDyn};

use super::report::{BuiltCheck, CustomOpCheck, RuntimeRow, StatefulCheck};

/// Where the checks run and write: ONNX Runtime, the venv with the onnx checker, the
/// report folder, and the custom-op library (gn-ort-ops) for the fused kernels.
pub struct Ort<'a> {
    pub rt: &'a crate::onnxruntime::Runtime,
    pub venv: &'a Path,
    pub out: &'a Path,
    pub ops: &'a Path,
}

/// The custom-op form of `ann` (IF and GN at each T) against the standard form: ONNX
/// Runtime on both and tract on both (each form against the standard form on the same
/// runtime), tract's custom-op kernels against ONNX Runtime, onnx.checker on every
/// custom-op file.
pub fn custom_op_checks(
    ann: &ModelProto,
    name: &str,
    xs: &ArrayD<f32>,
    ort: &Ort,
    base: &Options,
    timesteps: &[usize],
    batch: usize,
) -> anyhow::Result<Vec<CustomOpCheck>> {
    let tau = base.tau;
    let Ort { rt, venv, out, ops } = *ort;
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for (neuron, tag) in [(NeuronKind::If, "IF"), (NeuronKind::Gn, "GN")] {
        for &t in timesteps {
            eprint!("\r  custom-op {tag} T={t}          ");
            let options = |emit| Options { neuron, timesteps: t, emit, ..base.clone() };
            let standard = transpile(ann, &options(Emit::Standard))?.0;
            let compact = transpile(ann, &options(Emit::CustomOp))?.0;
            let file = out.join(format!("models/{name}_{}_t{t}_custom_op.onnx", tag.to_lowercase()));
            std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
            gn_onnx::save::save(&compact, &file, &[])?;
            files.push(file);
            gn_onnx::save::save(&standard, &out.join(format!("models/{name}_{}_t{t}.onnx", tag.to_lowercase())), &[])?;
            let timed = |f: &mut dyn FnMut() -> anyhow::Result<ArrayD<f32>>| -> anyhow::Result<(ArrayD<f32>, f64)> {
                let t0 = Instant::now();
                let out = f()?;
                Ok((out, t0.elapsed().as_secs_f64()))
            };
            let (standard_bytes, compact_bytes) = (gn_onnx::io::encode(&standard), gn_onnx::io::encode(&compact));
            let (reference, ort_standard_s) = timed(&mut || Ok(rt.run(&standard_bytes, xs, batch)?.remove(0)))?;
            let (ort, ort_compact_s) = timed(&mut || Ok(rt.run(&compact_bytes, xs, batch)?.remove(0)))?;
            let (fused, ort_fused_s) = timed(&mut || Ok(rt.run_with(&compact_bytes, xs, batch, Some(ops))?.remove(0)))?;
            let (tract_standard, tract_standard_s) =
                timed(&mut || Ok(run_batched(&standard, xs, batch, &|_| {})?.remove(0)))?;
            let (tract, tract_compact_s) = timed(&mut || Ok(run_batched(&compact, xs, batch, &|_| {})?.remove(0)))?;
            let on_tract = agreement(&tract, &reference, 1e-5);
            // tract's optimiser may fold the standard form's Div by a unit into the
            // convolution before it (a unit per channel is not a power of two), which moves
            // the rounding; then both forms are compared as written, unoptimised.
            let mut kernel_diff = agreement(&tract, &tract_standard, 1e-5).max_abs_diff;
            if kernel_diff > 1e-5 {
                let run = |m: &ModelProto| -> anyhow::Result<ArrayD<f32>> {
                    Ok(gn_verify::run_batched_as(m, xs, batch, false, &|_| {})?.remove(0))
                };
                kernel_diff = agreement(&run(&compact)?, &run(&standard)?, 1e-5).max_abs_diff;
            }
            let nodes = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.node.len());
            checks.push(CustomOpCheck {
                neuron: neuron.label(tau),
                timesteps: t,
                nodes_standard: nodes(&standard),
                nodes_compact: nodes(&compact),
                ort_max_abs_diff: agreement(&ort, &reference, 1e-5).max_abs_diff,
                fused_max_abs_diff: agreement(&fused, &reference, 1e-5).max_abs_diff,
                fused_time_ratio: ort_fused_s / ort_standard_s.max(1e-9),
                tract_kernel_max_abs_diff: kernel_diff,
                tract_max_abs_diff: on_tract.max_abs_diff,
                tract_share_beyond_1e5: on_tract.share_beyond,
                tract_relative_mse: on_tract.relative_mse,
                tract_top1_flips: on_tract.top1_flips,
                images: on_tract.images,
                checker: String::new(),
                ort_time_ratio: ort_compact_s / ort_standard_s.max(1e-9),
                tract_time_ratio: tract_compact_s / tract_standard_s.max(1e-9),
            });
        }
    }
    eprintln!();
    let verdicts = crate::onnxruntime::check_models(venv, &files)?;
    for (c, v) in checks.iter_mut().zip(verdicts) {
        c.checker = v;
    }
    Ok(checks)
}

/// The stateful form of `ann` (IF and GN): `calls` calls against the rows of the
/// unrolled `--anytime` model at T = `calls`, on ONNX Runtime and on tract, and the cost
/// of one call against one run of the ANN (same runtime, same images, best of 3).
pub fn stateful_checks(
    ann: &ModelProto,
    name: &str,
    xs: &ArrayD<f32>,
    ort: &Ort,
    base: &Options,
    calls: usize,
) -> anyhow::Result<Vec<StatefulCheck>> {
    let tau = base.tau;
    let Ort { rt, venv, out, .. } = *ort;
    use crate::onnxruntime::Runtime;
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for neuron in [NeuronKind::If, NeuronKind::Gn] {
        eprint!("\r  stateful {neuron} × {calls}          ");
        let options = Options { neuron, timesteps: calls, anytime: true, ..base.clone() };
        let unrolled = transpile(ann, &options)?.0;
        let stateful = transpile(ann, &Options { emit: Emit::Stateful, anytime: false, ..options })?.0;
        let states = gn_transpile::metadata::states(&stateful).ok_or_else(|| anyhow::anyhow!("no state metadata"))?;
        let file = out.join(format!("models/{name}_{}_stateful.onnx", neuron.key()));
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
        gn_onnx::save::save(&stateful, &file, &[])?;
        files.push(file);
        // A static-batch model's states hold its batch: the calls run on that many images.
        let xs = &match gn_verify::static_batch(ann) {
            Some(b) => xs.slice_axis(ndarray::Axis(0), (0..b.min(xs.shape()[0])).into()).to_owned(),
            None => xs.clone(),
        };
        let n = xs.shape()[0];
        // ONNX Runtime: the anytime rows, then the calls with the states fed back.
        let rows = rt.run(&gn_onnx::io::encode(&unrolled), xs, n)?.remove(1);
        let mut session = rt.session(&gn_onnx::io::encode(&stateful))?;
        let mut state = gn_verify::initial_states(&states, n);
        let (mut ort_max, mut ort_rel, mut ort_flips) = (0.0f64, 0.0f64, 0usize);
        let mut call_s = f64::INFINITY;
        for t in 0..calls {
            let mut inputs = vec![xs.clone()];
            inputs.extend(state.iter().cloned());
            let t0 = Instant::now();
            let mut outputs = Runtime::run_once(&mut session, &inputs)?;
            call_s = call_s.min(t0.elapsed().as_secs_f64());
            state = outputs.split_off(outputs.len() - states.len());
            let row = rows.index_axis(ndarray::Axis(0), t).to_owned();
            let a = agreement(&outputs[0], &row, 1e-5);
            (ort_max, ort_rel, ort_flips) =
                (ort_max.max(a.max_abs_diff), ort_rel.max(a.relative_mse), ort_flips.max(a.top1_flips));
        }
        let mut ann_session = rt.session(&gn_onnx::io::encode(ann))?;
        let mut ann_s = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            Runtime::run_once(&mut ann_session, std::slice::from_ref(xs))?;
            ann_s = ann_s.min(t0.elapsed().as_secs_f64());
        }
        // tract: the same, through gn_verify.
        let tract_rows = run_batched(&unrolled, xs, n, &|_| {})?.remove(1);
        let t0 = Instant::now();
        let tract_calls = gn_verify::run_stateful(&stateful, &vec![xs.clone(); calls])?;
        let tract_call_s = t0.elapsed().as_secs_f64() / calls as f64;
        let t0 = Instant::now();
        run_batched(ann, xs, n, &|_| {})?;
        let tract_ann_s = t0.elapsed().as_secs_f64();
        let (mut tract_max, mut tract_rel, mut tract_flips) = (0.0f64, 0.0f64, 0usize);
        for (t, outputs) in tract_calls.iter().enumerate() {
            let row = tract_rows.index_axis(ndarray::Axis(0), t).to_owned();
            let a = agreement(&outputs[0], &row, 1e-5);
            (tract_max, tract_rel, tract_flips) =
                (tract_max.max(a.max_abs_diff), tract_rel.max(a.relative_mse), tract_flips.max(a.top1_flips));
        }
        checks.push(StatefulCheck {
            neuron: neuron.label(tau),
            calls,
            images: n,
            states: states.len(),
            ort_max_abs_diff: ort_max,
            ort_relative_mse: ort_rel,
            ort_top1_flips: ort_flips,
            tract_max_abs_diff: tract_max,
            tract_relative_mse: tract_rel,
            tract_top1_flips: tract_flips,
            ort_step_cost: call_s / ann_s.max(1e-9),
            tract_step_cost: tract_call_s / tract_ann_s.max(1e-9),
            checker: String::new(),
        });
    }
    eprintln!();
    let verdicts = crate::onnxruntime::check_models(venv, &files)?;
    for (c, v) in checks.iter_mut().zip(verdicts) {
        c.checker = v;
    }
    Ok(checks)
}

/// The networks of `gn_tests::built` converted in both forms and run on ONNX Runtime and
/// tract: GN τ = L = 4 at T = 1 against the ANN, GN τ = 4 at T = 4 across runtimes.
pub fn built_checks(rt: &crate::onnxruntime::Runtime, venv: &Path, out: &Path) -> anyhow::Result<Vec<BuiltCheck>> {
    use gn_tests::built::{static_batch, stem, two_layers};
    let images = |n: usize| {
        let mut state = 0x9e37_79b9_u64;
        ArrayD::from_shape_fn(IxDyn(&[n, 1, 4, 4]), |_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0
        })
    };
    let max_diff = |a: &[ArrayD<f32>], b: &[ArrayD<f32>]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| p.iter().zip(q.iter()).map(|(u, v)| (u - v).abs() as f64).fold(0.0, f64::max))
            .fold(0.0, f64::max)
    };
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for (name, ann, n) in
        [("stem", stem(), 64), ("pool_on_spikes", two_layers(true), 64), ("static_batch", static_batch(3), 3)]
    {
        eprint!("\r  built {name}          ");
        let x = images(n);
        let want = rt.run(&gn_onnx::io::encode(&ann), &x, n)?;
        for (emit, form) in [(Emit::Standard, "standard"), (Emit::CustomOp, "custom-op")] {
            let (exact, report) = transpile(&ann, &Options { tau: 4, timesteps: 1, emit, ..Default::default() })?;
            let got = rt.run(&gn_onnx::io::encode(&exact), &x, n)?;
            let (snn, _) = transpile(&ann, &Options { timesteps: 4, anytime: true, emit, ..Default::default() })?;
            let on_ort = rt.run(&gn_onnx::io::encode(&snn), &x, n)?;
            let on_tract = run_batched(&snn, &x, n, &|_| {})?;
            let file = out.join(format!("models/built_{name}_{}.onnx", form.replace('-', "_")));
            std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
            gn_onnx::save::save(&snn, &file, &[])?;
            files.push(file);
            checks.push(BuiltCheck {
                model: name.into(),
                form: form.into(),
                moved: report.moves.len(),
                exact_max_abs_diff: max_diff(&got[..1], &want[..1]),
                ort_tract_max_abs_diff: max_diff(&on_ort, &on_tract),
                checker: String::new(),
            });
        }
    }
    eprintln!();
    for (c, v) in checks.iter_mut().zip(crate::onnxruntime::check_models(venv, &files)?) {
        c.checker = v;
    }
    Ok(checks)
}

/// How far `got` is from `reference` (same shape, batch on axis 0).
pub struct Agreement {
    pub max_abs_diff: f64,
    /// Share of images with any element beyond the tolerance.
    pub share_beyond: f64,
    pub relative_mse: f64,
    pub top1_flips: usize,
    pub images: usize,
}

pub fn agreement(got: &ArrayD<f32>, reference: &ArrayD<f32>, tolerance: f32) -> Agreement {
    let images = reference.shape()[0];
    let beyond = got
        .outer_iter()
        .zip(reference.outer_iter())
        .filter(|(p, q)| p.iter().zip(q.iter()).any(|(u, v)| (u - v).abs() > tolerance))
        .count();
    Agreement {
        max_abs_diff: got.iter().zip(reference.iter()).map(|(p, q)| (p - q).abs() as f64).fold(0.0, f64::max),
        share_beyond: beyond as f64 / images.max(1) as f64,
        relative_mse: relative_mse(got, reference),
        top1_flips: top1(got).iter().zip(top1(reference)).filter(|(a, b)| **a != *b).count(),
        images,
    }
}

/// The runtime matrix (`xtask/runtimes.py`): for each model, its GN standard and custom-op
/// files at T = `t` on ONNX Runtime, onnx.reference and OpenVINO (default precision and
/// f32), against ONNX Runtime on the standard file, and its stateful file for `calls`
/// calls against the rows of the anytime model unrolled to `unrolled` steps; on the
/// images `xs`.
pub fn runtime_matrix(
    ort: &Ort,
    models: &[String],
    xs: &ArrayD<f32>,
    t: usize,
    unrolled: usize,
    calls: usize,
) -> anyhow::Result<Vec<RuntimeRow>> {
    let Ort { venv, out, ops, .. } = *ort;
    let inputs = out.join("models/runtime_inputs.npy");
    ndarray_npy::write_npy(&inputs, xs)?;
    let mut jobs = Vec::new();
    for name in models {
        let standard = out.join(format!("models/{name}_gn_t{t}.onnx"));
        let compact = out.join(format!("models/{name}_gn_t{t}_custom_op.onnx"));
        for (form, file) in [("standard", &standard), ("custom-op", &compact)] {
            jobs.push(serde_json::json!({
                "model": name, "form": form, "file": file, "reference": standard, "inputs": inputs,
            }));
        }
        // The stateful form against the rows of the unrolled anytime model.
        jobs.push(serde_json::json!({
            "model": name, "form": "stateful", "file": out.join(format!("models/{name}_gn_stateful.onnx")),
            "reference": out.join(format!("models/{name}_gn_t{unrolled}.onnx")), "inputs": inputs, "calls": calls,
        }));
    }
    let (jobs_file, results_file) = (out.join("runtime_jobs.json"), out.join("runtime_results.json"));
    std::fs::write(&jobs_file, serde_json::to_string(&jobs)?)?;
    let script = crate::workspace().join("xtask/runtimes.py");
    let ok = std::process::Command::new(crate::venv::python(venv))
        .arg(script)
        .arg(&jobs_file)
        .arg(&results_file)
        .arg(ops)
        .status()?;
    if !ok.success() {
        anyhow::bail!("xtask/runtimes.py failed");
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(&results_file)?)?)
}
