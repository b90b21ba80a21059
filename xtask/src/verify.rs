//! `cargo xtask verify`: the verification harness (see `xtask/verify.yaml`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use gn_onnx::data::read_idx_u8;
use gn_onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use gn_verify::{measure, mse, relative_mse, run_batched, top1, Measurement, Spec};
use gn_transpile::{transpile, Emit, NeuronKind, Options};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::plot::{line_chart, Axes, Series};

#[derive(clap::Args)]
pub struct Args {
    /// The harness configuration.
    #[arg(long, default_value = "xtask/verify.yaml")]
    config: PathBuf,
    /// Use the whole test set (10,000 images; T > 8 on the first 2,000).
    #[arg(long)]
    full: bool,
    /// Write the report's tables into README.md and its plots into docs/verify/.
    #[arg(long)]
    readme: bool,
    /// Measure this model instead of the configured fixtures.
    #[arg(long, requires = "data")]
    model: Option<PathBuf>,
    /// Input data for --model: a float32 .npy, batch on axis 0.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Labels for --model: an integer .npy of one label per input.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Members per Group Neuron (default: the config's).
    #[arg(long)]
    tau: Option<u32>,
    /// Where to write the report, JSON and plots.
    #[arg(long, default_value = "target/verify")]
    out: PathBuf,
    /// Skip ONNX Runtime (tract only).
    #[arg(long)]
    no_ort: bool,
}

#[derive(Deserialize)]
struct Config {
    data: DataConfig,
    tau: u32,
    timesteps: Vec<usize>,
    layer_timesteps: Vec<usize>,
    layer_images: usize,
    batch: usize,
    short_max: usize,
    long_images: usize,
    long_images_full: usize,
    models: Vec<ModelConfig>,
    tau_sweep: TauSweep,
    custom_op: CustomOpConfig,
    gates: Gates,
}

#[derive(Deserialize)]
struct CustomOpConfig {
    timesteps: Vec<usize>,
}

#[derive(Deserialize)]
struct DataConfig {
    images: PathBuf,
    labels: PathBuf,
    ci_images: usize,
}

#[derive(Deserialize)]
struct ModelConfig {
    name: String,
    path: PathBuf,
}

#[derive(Deserialize)]
struct TauSweep {
    model: String,
    taus: Vec<u32>,
    timesteps: Vec<usize>,
}

#[derive(Deserialize, Serialize, Clone)]
struct Gates {
    exactness_min_top1_agreement: f64,
    exactness_max_relative_mse: f64,
    ratio_model: String,
    ratio_max: f64,
    ratio_up_to_t: usize,
    ort_max_share_beyond_1e4_t1: f64,
    ort_max_relative_mse: f64,
    ort_max_top1_flip_share: f64,
    custom_op_max_abs_diff_ort: f64,
    built_max_abs_diff: f64,
}

/// A network built in code (max-pools, static batch) converted and run on both runtimes.
#[derive(Serialize)]
struct BuiltCheck {
    model: String,
    form: String,
    /// Max-pools moved in front of a spiking layer.
    moved: usize,
    /// GN τ = L = 4, T = 1 on ONNX Runtime against the ANN on ONNX Runtime.
    exact_max_abs_diff: f64,
    /// GN τ = 4, T = 4 (anytime): ONNX Runtime against tract, every output.
    ort_tract_max_abs_diff: f64,
    checker: String,
}

/// The custom-op form of one conversion against the standard form.
#[derive(Serialize)]
struct CustomOpCheck {
    neuron: String,
    timesteps: usize,
    nodes_standard: usize,
    nodes_compact: usize,
    /// ONNX Runtime on the custom-op model against ONNX Runtime on the standard model.
    ort_max_abs_diff: f64,
    /// tract on the custom-op model (registered kernels) against ONNX Runtime on the standard model.
    tract_max_abs_diff: f64,
    tract_share_beyond_1e5: f64,
    tract_relative_mse: f64,
    tract_top1_flips: usize,
    images: usize,
    checker: String,
    /// Wall time of the custom-op model over the standard one (load and run, same process).
    ort_time_ratio: f64,
    tract_time_ratio: f64,
}

/// The cross-runtime comparison of one emitted model.
#[derive(Serialize)]
struct RuntimeCheck {
    model: String,
    max_abs_diff: f64,
    share_beyond_1e4: f64,
    top1_flips: usize,
    images: usize,
    relative_mse: f64,
    checker: String,
}

#[derive(Serialize)]
struct ModelResult {
    name: String,
    #[serde(flatten)]
    measurement: Measurement,
    runtime: Vec<RuntimeCheck>,
    custom_op: Vec<CustomOpCheck>,
    seconds: f64,
}

#[derive(Serialize)]
struct SweepPoint {
    tau: u32,
    mse: Vec<(usize, f64)>,
    accuracy: Vec<(usize, f64)>,
}

#[derive(Serialize)]
struct Report {
    images: usize,
    tau: u32,
    models: Vec<ModelResult>,
    tau_sweep: Option<(String, Vec<SweepPoint>)>,
    built: Vec<BuiltCheck>,
    gates: Vec<(String, bool, String)>,
    seconds: f64,
}

/// Progress on stderr: one line per stage, updated in place.
fn progress() -> impl Fn(&str, usize, usize) + Sync {
    let done = AtomicUsize::new(0);
    let stage = std::sync::Mutex::new(String::new());
    let last = std::sync::Mutex::new(Instant::now());
    move |name: &str, k: usize, total: usize| {
        let mut s = stage.lock().unwrap_or_else(|e| e.into_inner());
        if *s != name {
            *s = name.to_string();
            done.store(0, Ordering::SeqCst);
        }
        let d = done.fetch_add(k, Ordering::SeqCst) + k;
        eprint!("\r  {name:<16} {d:>6}/{total} images");
        if d >= total {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("  ({:.1} s)", l.elapsed().as_secs_f64());
            *l = Instant::now();
        }
    }
}

fn load_images(path: &Path, n: usize) -> anyhow::Result<ArrayD<f32>> {
    let (dims, pixels) = read_idx_u8(path)?;
    let n = n.min(dims[0]);
    let per = dims[1..].iter().product::<usize>();
    let mut shape = vec![n, 1];
    shape.extend(&dims[1..]);
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), pixels[..n * per].iter().map(|&p| p as f32 / 255.0).collect())?)
}

fn load_labels(path: &Path, n: usize) -> anyhow::Result<Vec<usize>> {
    let (_, labels) = read_idx_u8(path)?;
    Ok(labels.iter().take(n).map(|&l| l as usize).collect())
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let start = Instant::now();
    let root = crate::workspace();
    std::env::set_current_dir(&root)?;
    let config: Config = serde_yaml::from_str(
        &std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {}", args.config.display()))?,
    )
    .with_context(|| format!("{} is not a valid harness config", args.config.display()))?;
    let tau = args.tau.unwrap_or(config.tau);
    std::fs::create_dir_all(&args.out)?;

    // The models and data.
    let (models, x, labels): (Vec<ModelConfig>, ArrayD<f32>, Option<Vec<usize>>) = match &args.model {
        Some(model) => {
            let data = args.data.as_ref().context("--model needs --data")?;
            let x = gn_verify::read_npy_inputs(data)?;
            let labels = args.labels.as_deref().map(gn_verify::read_npy_labels).transpose()?;
            if let Some(l) = &labels {
                if l.len() != x.shape()[0] {
                    bail!("{} labels for {} inputs", l.len(), x.shape()[0]);
                }
            }
            let name = model.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
            (vec![ModelConfig { name, path: model.clone() }], x, labels)
        }
        None => {
            let n = if args.full { usize::MAX } else { config.data.ci_images };
            let x = load_images(&config.data.images, n)?;
            let labels = load_labels(&config.data.labels, x.shape()[0])?;
            (config.models, x, Some(labels))
        }
    };
    let n = x.shape()[0];
    let spec = Spec {
        tau,
        timesteps: config.timesteps.clone(),
        batch: config.batch,
        layer_images: config.layer_images,
        layer_timesteps: config.layer_timesteps.clone(),
        short_max: config.short_max,
        long_images: if args.full { config.long_images_full } else { config.long_images },
    };

    let runtime = if args.no_ort {
        None
    } else {
        let venv = crate::onnxruntime::venv()?;
        let lib = crate::onnxruntime::library(&venv)?;
        Some((venv, crate::onnxruntime::Runtime::new(&lib)?))
    };

    let mut results = Vec::new();
    for mc in models {
        eprintln!("{}: {} images, τ = {tau}", mc.name, n);
        let t0 = Instant::now();
        let ann = gn_onnx::io::load(&mc.path)?.model;
        let m = measure(&ann, &x, labels.as_deref(), &spec, &progress())
            .with_context(|| format!("{}", mc.path.display()))?;
        let mut checks = Vec::new();
        let mut custom = Vec::new();
        if let Some((venv, rt)) = &runtime {
            let prefix = spec.layer_images.min(n).min(spec.long_images.min(n).max(1));
            let xs = x.slice_axis(Axis(0), (0..prefix).into()).to_owned();
            let mut files = Vec::new();
            for ((name, model), tract_out) in m.emitted.iter().zip(&m.emitted_outputs) {
                let file = args.out.join(format!("models/{}_{}.onnx", mc.name, name));
                std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
                gn_onnx::io::save(model, &file, &[])?;
                files.push(file);
                let ort_out = rt.run(&gn_onnx::io::encode(model), &xs, spec.batch)?;
                let logits = agreement(&ort_out[0], &tract_out[0], 1e-4);
                // The largest difference over every output (the anytime one included).
                let max_any = ort_out
                    .iter()
                    .zip(tract_out)
                    .map(|(p, q)| agreement(p, q, 1e-4).max_abs_diff)
                    .fold(logits.max_abs_diff, f64::max);
                checks.push(RuntimeCheck {
                    model: name.clone(),
                    max_abs_diff: max_any,
                    share_beyond_1e4: logits.share_beyond,
                    top1_flips: logits.top1_flips,
                    images: logits.images,
                    relative_mse: logits.relative_mse,
                    checker: String::new(),
                });
            }
            let verdicts = crate::onnxruntime::check_models(venv, &files)?;
            for (c, v) in checks.iter_mut().zip(verdicts) {
                c.checker = v;
            }
            custom = custom_op_checks(
                &ann,
                &mc.name,
                &xs,
                rt,
                venv,
                &args.out,
                tau,
                &config.custom_op.timesteps,
                spec.batch,
            )?;
        }
        results.push(ModelResult {
            name: mc.name,
            measurement: m,
            runtime: checks,
            custom_op: custom,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }

    // τ sweep.
    let tau_sweep = match results.iter().position(|r| r.name == config.tau_sweep.model) {
        Some(_) if args.model.is_none() => {
            let path = root.join(format!("fixtures/models/{}.onnx", config.tau_sweep.model));
            let ann = gn_onnx::io::load(&path)?.model;
            let ann_out = run_batched(&ann, &x, spec.batch, &|_| {})?.remove(0);
            let sweep_ts = config.tau_sweep.timesteps.clone();
            let t_max = sweep_ts.iter().copied().max().unwrap_or(1);
            let mut points = Vec::new();
            let measured = &results
                .iter()
                .find(|r| r.name == config.tau_sweep.model)
                .map(|r| r.measurement.curves.clone())
                .unwrap_or_default();
            for &k in &config.tau_sweep.taus {
                // τ = 1 is IF, and the configured τ was measured already.
                let known = measured.iter().find(|c| (k == 1 && c.neuron == NeuronKind::If) || (c.neuron == NeuronKind::Gn && c.tau == k));
                if let Some(c) = known {
                    let keep = |v: &Vec<(usize, f64)>| {
                        v.iter().copied().filter(|p| sweep_ts.contains(&p.0)).collect::<Vec<_>>()
                    };
                    points.push(SweepPoint { tau: k, mse: keep(&c.mse), accuracy: keep(&c.accuracy) });
                    continue;
                }
                eprintln!("τ sweep on {}: τ = {k}", config.tau_sweep.model);
                let options = Options {
                    neuron: NeuronKind::Gn,
                    tau: k,
                    timesteps: t_max,
                    anytime: true,
                    allow_inexact: false,
                    ..Default::default()
                };
                let snn = transpile(&ann, &options)?.0;
                let bar = progress();
                let label = NeuronKind::Gn.label(k);
                let out = run_batched(&snn, &x, spec.batch, &|c| bar(&label, c, n))?;
                let mut p = SweepPoint { tau: k, mse: Vec::new(), accuracy: Vec::new() };
                for &t in &sweep_ts {
                    let r = out[1].index_axis(Axis(0), t - 1).to_owned();
                    p.mse.push((t, mse(&r, &ann_out)));
                    if let Some(l) = &labels {
                        let pred = top1(&r);
                        p.accuracy.push((t, pred.iter().zip(l).filter(|(a, b)| a == b).count() as f64 / n as f64));
                    }
                }
                points.push(p);
            }
            Some((config.tau_sweep.model.clone(), points))
        }
        _ => None,
    };

    let built = match &runtime {
        Some((venv, rt)) if args.model.is_none() => built_checks(rt, venv, &args.out)?,
        _ => Vec::new(),
    };

    // Gates.
    let g = &config.gates;
    let mut gates = Vec::new();
    if args.model.is_none() {
        for c in &built {
            let ok = c.checker == "ok"
                && c.exact_max_abs_diff <= g.built_max_abs_diff
                && c.ort_tract_max_abs_diff <= g.built_max_abs_diff;
            gates.push((
                format!("{} ({}): converts and runs on ONNX Runtime", c.model, c.form),
                ok,
                format!(
                    "τ=L T=1 vs ANN max |diff| {:.1e}, T=4 ONNX Runtime vs tract max |diff| {:.1e} (≤ {:.0e}); onnx.checker: {}",
                    c.exact_max_abs_diff, c.ort_tract_max_abs_diff, g.built_max_abs_diff, c.checker
                ),
            ));
        }
        for r in &results {
            if let Some(e) = &r.measurement.exactness {
                let ok = e.top1_agreement >= g.exactness_min_top1_agreement
                    && e.relative_mse <= g.exactness_max_relative_mse;
                gates.push((
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
                gates.push((
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
        for r in &results {
            for c in &r.custom_op {
                let flip_share = c.tract_top1_flips as f64 / c.images.max(1) as f64;
                let ok = c.checker == "ok"
                    && c.ort_max_abs_diff <= g.custom_op_max_abs_diff_ort
                    && c.tract_relative_mse <= g.ort_max_relative_mse
                    && flip_share <= g.ort_max_top1_flip_share;
                gates.push((
                    format!("{} {} T={}: custom-op model", r.name, c.neuron, c.timesteps),
                    ok,
                    format!(
                        "ONNX Runtime custom-op vs standard max |diff| {:.1e} (≤ {:.0e}); tract custom-op vs ONNX Runtime standard: relative MSE {:.1e} (≤ {:.0e}), top-1 flips {}/{}; onnx.checker: {}",
                        c.ort_max_abs_diff, g.custom_op_max_abs_diff_ort, c.tract_relative_mse, g.ort_max_relative_mse,
                        c.tract_top1_flips, c.images, c.checker
                    ),
                ));
            }
        }
        if let Some(r) = results.iter().find(|r| r.name == g.ratio_model) {
            let (if_, gn) = (r.measurement.curve(NeuronKind::If), r.measurement.curve(NeuronKind::Gn));
            for ((t, a), (_, b)) in if_.mse.iter().zip(&gn.mse).filter(|((t, _), _)| *t <= g.ratio_up_to_t) {
                let ratio = b / a;
                gates.push((
                    format!("{}: GN/IF MSE at T={t}", r.name),
                    ratio <= g.ratio_max,
                    format!("{ratio:.3} (≤ {})", g.ratio_max),
                ));
            }
        }
    }
    let report =
        Report { images: n, tau, models: results, tau_sweep, built, gates, seconds: start.elapsed().as_secs_f64() };
    let markdown = render_markdown(&report);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    write_plots(&report, &args.out, &spec)?;
    if args.readme && args.model.is_none() {
        update_readme(&root.join("README.md"), &markdown, &args.out)?;
    }
    println!("{markdown}");
    let failed: Vec<&(String, bool, String)> = report.gates.iter().filter(|g| !g.1).collect();
    for (name, _, detail) in &failed {
        eprintln!("gate missed: {name}: {detail}");
    }
    let passed = report.gates.len() - failed.len();
    println!("verify: {passed} passed, {} failed", failed.len());
    eprintln!("report in {} ({:.0} s)", args.out.display(), report.seconds);
    Ok(failed.is_empty())
}

/// The paper's Table 1 for ResNet-20 on CIFAR-100 (τ = 4), for the report.
const PAPER_TABLE1: &str = "| paper (ResNet-20, CIFAR-100) | 1 | 2 | 4 | 8 | 16 | 32 |\n| --- | --- | --- | --- | --- | --- | --- |\n| GN | 1.39 | 0.64 | 0.37 | 0.30 | 0.28 | 0.28 |\n| IF | 11.65 | 6.36 | 3.72 | 2.02 | 0.92 | 0.45 |\n| GN/IF | 11.9% | 10.1% | 9.9% | 14.9% | 30.4% | 62.2% |\n";

fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Verification: ANN vs IF vs GN (τ = {}) on {} Fashion-MNIST test images\n", r.tau, r.images);
    let ts: Vec<usize> =
        r.models.first().map(|m| m.measurement.curve(NeuronKind::If).mse.iter().map(|p| p.0).collect()).unwrap_or_default();
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
        header(&mut s, &format!("{} (L = {:?})", m.name, m.measurement.levels));
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
        let _ = writeln!(
            s,
            "- {} (L = {:?}, τ = {}): {:+.2} points",
            m.name,
            m.measurement.levels,
            r.tau,
            (gn2.1 - ann) * 100.0
        );
    }
    if let Some((model, points)) = &r.tau_sweep {
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
                "| {} | {:.4} | {} | {} | {} | {} | {:.3} | {:.3} |",
                l.site,
                l.theta,
                l.levels,
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
    if r.models.iter().any(|m| !m.custom_op.is_empty()) {
        let _ = writeln!(s, "\n### Custom-op emission (`--emit custom-op`) against the standard emission\n");
        let _ = writeln!(s, "One `gn.transpile` node per spiking layer, defined by a model-local function whose body is the standard expansion. ONNX Runtime inlines the function; tract runs the registered kernel. Compared with ONNX Runtime on the standard model, first images. The time ratios (load and run of the custom-op model over the standard one, same process, same images) are single runs on a shared machine: read them as rough.\n");
        let _ = writeln!(s, "| model | neuron | T | nodes standard → custom-op | ORT custom-op: max abs diff | tract custom-op: max abs diff | images beyond 1e-5 | top-1 flips | onnx.checker | time custom-op / standard: ORT, tract |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for m in &r.models {
            for c in &m.custom_op {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} → {} | {:.1e} | {:.1e} | {:.1}% | {}/{} | {} | {:.2}, {:.2} |",
                    m.name,
                    c.neuron,
                    c.timesteps,
                    c.nodes_standard,
                    c.nodes_compact,
                    c.ort_max_abs_diff,
                    c.tract_max_abs_diff,
                    c.tract_share_beyond_1e5 * 100.0,
                    c.tract_top1_flips,
                    c.images,
                    c.checker,
                    c.ort_time_ratio,
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

/// The custom-op form of `ann` (IF and GN at each T) against the standard form: ONNX
/// Runtime on both, tract on the custom-op model, onnx.checker on every custom-op file.
#[allow(clippy::too_many_arguments)]
fn custom_op_checks(
    ann: &ModelProto,
    name: &str,
    xs: &ArrayD<f32>,
    rt: &crate::onnxruntime::Runtime,
    venv: &Path,
    out: &Path,
    tau: u32,
    timesteps: &[usize],
    batch: usize,
) -> anyhow::Result<Vec<CustomOpCheck>> {
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for (neuron, tag) in [(NeuronKind::If, "IF"), (NeuronKind::Gn, "GN")] {
        for &t in timesteps {
            eprint!("\r  custom-op {tag} T={t}          ");
            let options = |emit| Options { neuron, tau, timesteps: t, emit, ..Default::default() };
            let standard = transpile(ann, &options(Emit::Standard))?.0;
            let compact = transpile(ann, &options(Emit::CustomOp))?.0;
            let file = out.join(format!("models/{name}_{}_t{t}_custom_op.onnx", tag.to_lowercase()));
            std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
            gn_onnx::io::save(&compact, &file, &[])?;
            files.push(file);
            let timed = |f: &mut dyn FnMut() -> anyhow::Result<ArrayD<f32>>| -> anyhow::Result<(ArrayD<f32>, f64)> {
                let t0 = Instant::now();
                let out = f()?;
                Ok((out, t0.elapsed().as_secs_f64()))
            };
            let (standard_bytes, compact_bytes) = (gn_onnx::io::encode(&standard), gn_onnx::io::encode(&compact));
            let (reference, ort_standard_s) = timed(&mut || Ok(rt.run(&standard_bytes, xs, batch)?.remove(0)))?;
            let (ort, ort_compact_s) = timed(&mut || Ok(rt.run(&compact_bytes, xs, batch)?.remove(0)))?;
            let (_, tract_standard_s) = timed(&mut || Ok(run_batched(&standard, xs, batch, &|_| {})?.remove(0)))?;
            let (tract, tract_compact_s) = timed(&mut || Ok(run_batched(&compact, xs, batch, &|_| {})?.remove(0)))?;
            let on_tract = agreement(&tract, &reference, 1e-5);
            let nodes = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.node.len());
            checks.push(CustomOpCheck {
                neuron: neuron.label(tau),
                timesteps: t,
                nodes_standard: nodes(&standard),
                nodes_compact: nodes(&compact),
                ort_max_abs_diff: agreement(&ort, &reference, 1e-5).max_abs_diff,
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

/// The networks of `gn_tests::built` converted in both forms and run on ONNX Runtime and
/// tract: GN τ = L = 4 at T = 1 against the ANN, GN τ = 4 at T = 4 across runtimes.
fn built_checks(rt: &crate::onnxruntime::Runtime, venv: &Path, out: &Path) -> anyhow::Result<Vec<BuiltCheck>> {
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
            gn_onnx::io::save(&snn, &file, &[])?;
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
struct Agreement {
    max_abs_diff: f64,
    /// Share of images with any element beyond the tolerance.
    share_beyond: f64,
    relative_mse: f64,
    top1_flips: usize,
    images: usize,
}

fn agreement(got: &ArrayD<f32>, reference: &ArrayD<f32>, tolerance: f32) -> Agreement {
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

/// The values of (T, value) points as table cells: `a | b | c`.
fn cells(points: &[(usize, f64)], format: impl Fn(f64) -> String) -> String {
    points.iter().map(|p| format(p.1)).collect::<Vec<_>>().join(" | ")
}

/// A count with an SI suffix: 1.23M.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn write_plots(r: &Report, out: &Path, spec: &Spec) -> anyhow::Result<()> {
    const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    for m in &r.models {
        let series: Vec<Series> = m
            .measurement
            .curves
            .iter()
            .enumerate()
            .map(|(i, c)| Series {
                name: c.label(),
                color: COLORS[i],
                points: c.mse.iter().map(|&(t, v)| (t as f64, v)).collect(),
                dashed: false,
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
            .map(|(i, c)| Series {
                name: c.label(),
                color: COLORS[i],
                points: c.accuracy.iter().map(|&(t, v)| (t as f64, v * 100.0)).collect(),
                dashed: false,
            })
            .collect();
        if let Some(a) = m.measurement.ann_accuracy {
            series.push(Series {
                name: "ANN".into(),
                color: "#444",
                points: spec.timesteps.iter().map(|&t| (t as f64, a * 100.0)).collect(),
                dashed: true,
            });
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
    }
    // Fig. 2: firing-rate staircase of one IF and one GN neuron against the ANN, T = 4.
    if let Some(layer) = r.models.iter().find_map(|m| m.measurement.layers.first().cloned()) {
        let (theta, levels) = (layer.theta as f32, layer.levels);
        let model = single_site(theta, levels);
        let currents: Vec<f32> = (0..=400).map(|i| -0.25 * theta + i as f32 * 1.5 * theta / 400.0).collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[currents.len(), 1]), currents.clone())?;
        let mut series = Vec::new();
        let ann = run_batched(&model, &x, 1000, &|_| {})?.remove(0);
        series.push(Series {
            name: format!("ANN (QCFS L={levels})"),
            color: "#444",
            points: currents.iter().zip(ann.iter()).map(|(&c, &a)| (c as f64, a as f64)).collect(),
            dashed: true,
        });
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
            series.push(Series {
                name,
                color: COLORS[i],
                points: currents.iter().zip(out.iter()).map(|(&c, &a)| (c as f64, a as f64)).collect(),
                dashed: false,
            });
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
    use gn_onnx::data::tensor_f32;
    let c = |name: &str, v: f32| tensor_f32(name, &[], &[v]);
    let node = |op: &str, i: &[&str], o: &str| NodeProto {
        input: i.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        name: Some(o.into()),
        op_type: Some(op.into()),
        ..Default::default()
    };
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
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// Replaces the README's measured section (between markers) with the full report.
fn update_readme(readme: &Path, markdown: &str, out: &Path) -> anyhow::Result<()> {
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
    let mut plots = String::from("#### Plots\n\n![firing-rate staircase at T = 4](docs/verify/staircase.svg)\n\n");
    let mut names: Vec<String> =
        std::fs::read_dir(&docs)?.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    for name in names.iter().filter(|n| n.starts_with("mse_") || n.starts_with("accuracy_")) {
        let _ = writeln!(plots, "![{}](docs/verify/{name})", name.trim_end_matches(".svg"));
    }
    let body = markdown.replace("### ", "#### ").replace("## Verification", "### Verification");
    let new = format!("{}{begin}\n{body}\n{plots}\n{}", &text[..a], &text[b..]);
    std::fs::write(readme, new)?;
    Ok(())
}
