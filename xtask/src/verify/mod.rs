//! `cargo xtask verify`: the verification harness. The fixtures (or a model of the
//! user's) are measured by `gn_verify::measure` on real data; the emitted models are
//! cross-checked on ONNX Runtime, in both forms; gates decide pass or fail; the report
//! is written as Markdown, JSON and plots.
//!
//! - `config`: `xtask/verify.yaml`
//! - `data`: test images, labels, progress display
//! - `checks`: ONNX Runtime against tract, custom-op against standard, built networks
//! - `gates`: thresholds applied to the results
//! - `report`: the report's types, Markdown and the README's measured section
//! - `plots`: the SVG figures

mod checks;
mod config;
mod data;
mod gates;
mod markdown;
mod plots;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use gn_verify::{measure, Spec};
use ndarray::{ArrayD, Axis};

use checks::{agreement, built_checks, custom_op_checks, runtime_matrix, stateful_checks, Ort};
use config::{Config, ModelConfig};
use data::{load_images, load_labels, progress};
use markdown::render_markdown;
use plots::write_plots;
use report::{render_summary, update_readme, ModelResult, Report, RuntimeCheck};

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
    /// With --model: a ReLU network, θ set from these inputs (a float32 .npy).
    #[arg(long, value_name = "X.npy")]
    calibrate: Option<PathBuf>,
    /// With --calibrate: the percentile (default 99.9).
    #[arg(long, requires = "calibrate")]
    percentile: Option<f64>,
    /// With --calibrate: θ per channel.
    #[arg(long, requires = "calibrate")]
    per_channel: bool,
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
    let (models, x, labels) = inputs(&args, &config)?;
    let n = x.shape()[0];
    let data = match &args.data {
        Some(path) if args.model.is_some() => format!("inputs from {}", path.display()),
        _ => "Fashion-MNIST test images".to_string(),
    };
    let spec = Spec {
        tau,
        timesteps: config.timesteps.clone(),
        batch: config.batch,
        layer_images: config.layer_images,
        layer_timesteps: config.layer_timesteps.clone(),
        short_max: config.short_max,
        long_images: if args.full { config.long_images_full } else { config.long_images },
        calibration: None,
        energy: gn_verify::EnergyTable::default(),
        pareto_taus: Vec::new(),
    };
    let runtime = if args.no_ort {
        None
    } else {
        let venv = crate::onnxruntime::venv()?;
        let lib = crate::onnxruntime::library(&venv)?;
        let ops = crate::onnxruntime::ops_library()?;
        Some((venv, crate::onnxruntime::Runtime::new(&lib)?, ops))
    };
    let ort = runtime.as_ref().map(|(venv, rt, ops)| Ort { rt, venv, out: &args.out, ops });
    let mut results = Vec::new();
    for mc in &models {
        let spec = Spec { pareto_taus: config.pareto.taus_of(&mc.name, args.full), ..spec.clone() };
        results.push(measure_model(mc, &x, labels.as_deref(), &spec, &config, ort.as_ref(), &args.out)?);
    }
    let t0 = Instant::now();
    let built = match &ort {
        Some(ort) if args.model.is_none() => built_checks(ort.rt, ort.venv, &args.out)?,
        _ => Vec::new(),
    };
    if !built.is_empty() {
        eprintln!("networks built in code: done in {:.0} s", t0.elapsed().as_secs_f64());
    }
    let runtimes = match (&ort, config.custom_op.timesteps.iter().max()) {
        (Some(ort), Some(&t)) => matrix(ort, &args, &config, &spec, &results, &x, t)?,
        _ => Vec::new(),
    };
    let gates =
        if args.model.is_none() { gates::evaluate(&config.gates, &results, &built, &runtimes) } else { Vec::new() };
    let report = Report {
        data,
        images: n,
        tau,
        models: results,
        built,
        runtimes,
        gates,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_report(&report, &args, &spec, &root)
}

/// The models, the inputs (batch on axis 0) and the labels, if any.
type Inputs = (Vec<ModelConfig>, ArrayD<f32>, Option<Vec<usize>>);

/// The models to measure, the inputs and the labels: the configured fixtures on the test
/// set, or `--model` on `--data`.
fn inputs(args: &Args, config: &Config) -> anyhow::Result<Inputs> {
    Ok(match &args.model {
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
            let model = ModelConfig {
                name,
                path: model.clone(),
                calibrate: args.calibrate.clone(),
                percentile: args.percentile,
                per_channel: args.per_channel,
                full_only: false,
            };
            (vec![model], x, labels)
        }
        None => {
            let n = if args.full { usize::MAX } else { config.data.ci_images };
            let x = load_images(&config.data.images, n)?;
            let labels = load_labels(&config.data.labels, x.shape()[0])?;
            let models = config.models.iter().filter(|m| args.full || !m.full_only).cloned().collect();
            (models, x, Some(labels))
        }
    })
}

/// The thresholds of a ReLU fixture (`calibrate:` in the config), from its calibration
/// images; `None` for a QCFS fixture.
fn calibration(
    mc: &ModelConfig,
    ann: &gn_onnx::proto::ModelProto,
    spec: &Spec,
) -> anyhow::Result<Option<std::sync::Arc<gn_transpile::calibrate::Calibration>>> {
    Ok(match &mc.calibrate {
        Some(data) => {
            let cs = gn_transpile::tract_calibrate::CalibrationSpec {
                percentile: mc.percentile.unwrap_or(gn_transpile::calibrate::DEFAULT_PERCENTILE),
                per_channel: mc.per_channel,
                batch: spec.batch,
            };
            let bar = progress();
            let step = |done: usize, total: usize| bar("calibrate", done, total);
            let c = gn_transpile::tract_calibrate::calibrate_file(ann, data, &cs, &step)
                .with_context(|| format!("cannot calibrate {} on {}", mc.name, data.display()))?;
            Some(std::sync::Arc::new(c))
        }
        None => None,
    })
}

/// One model: measured on tract, then (with ONNX Runtime) its emitted models checked
/// against tract's outputs, the custom-op and the stateful forms.
fn measure_model(
    mc: &ModelConfig,
    x: &ArrayD<f32>,
    labels: Option<&[usize]>,
    spec: &Spec,
    config: &Config,
    ort: Option<&Ort>,
    out: &Path,
) -> anyhow::Result<ModelResult> {
    let (n, tau) = (x.shape()[0], spec.tau);
    eprintln!("{}: {} images, τ = {tau}", mc.name, n);
    let t0 = Instant::now();
    let ann = gn_onnx::io::load(&mc.path)?.model;
    let calibration = calibration(mc, &ann, spec)?;
    let spec = Spec { calibration: calibration.clone(), ..spec.clone() };
    let m = measure(&ann, x, labels, &spec, &progress()).with_context(|| format!("{}", mc.path.display()))?;
    eprintln!("{}: measured on tract in {:.0} s", mc.name, t0.elapsed().as_secs_f64());
    let (mut checks, mut custom, mut stateful) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(ort) = ort {
        let prefix = spec.layer_images.min(n).min(spec.long_images.min(n).max(1));
        let xs = x.slice_axis(Axis(0), (0..prefix).into()).to_owned();
        checks = emitted_checks(mc, &m, &xs, ort, out, spec.batch)?;
        let base = gn_transpile::Options { tau, calibration: calibration.clone(), ..Default::default() };
        custom = custom_op_checks(&ann, &mc.name, &xs, ort, &base, &config.custom_op.timesteps, spec.batch)?;
        stateful = stateful_checks(&ann, &mc.name, &xs, ort, &base, config.stateful.calls)?;
    }
    eprintln!("{}: done in {:.0} s", mc.name, t0.elapsed().as_secs_f64());
    Ok(ModelResult {
        name: mc.name.clone(),
        measurement: m,
        runtime: checks,
        custom_op: custom,
        stateful,
        calibration: calibration.as_deref().cloned(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The models a measurement emitted, saved, run on ONNX Runtime against tract's outputs
/// and checked by `onnx.checker`.
fn emitted_checks(
    mc: &ModelConfig,
    m: &gn_verify::Measurement,
    xs: &ArrayD<f32>,
    ort: &Ort,
    out: &Path,
    batch: usize,
) -> anyhow::Result<Vec<RuntimeCheck>> {
    let mut checks = Vec::new();
    let mut files = Vec::new();
    for ((name, model), tract_out) in m.emitted.iter().zip(&m.emitted_outputs) {
        let file = out.join(format!("models/{}_{}.onnx", mc.name, name));
        std::fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))?;
        gn_onnx::save::save(model, &file, &[])?;
        files.push(file);
        let ort_out = ort.rt.run(&gn_onnx::io::encode(model), xs, batch)?;
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
    let verdicts = crate::onnxruntime::check_models(ort.venv, &files)?;
    for (c, v) in checks.iter_mut().zip(verdicts) {
        c.checker = v;
    }
    Ok(checks)
}

/// The runtime matrix: every form of every model on ONNX Runtime, onnx.reference and
/// OpenVINO, at T = `t`.
fn matrix(
    ort: &Ort,
    args: &Args,
    config: &Config,
    spec: &Spec,
    results: &[ModelResult],
    x: &ArrayD<f32>,
    t: usize,
) -> anyhow::Result<Vec<report::RuntimeRow>> {
    let t0 = Instant::now();
    eprintln!("runtime matrix: ONNX Runtime, onnx.reference, OpenVINO");
    let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    let images = if args.full { config.runtime_images_full } else { config.runtime_images };
    let few = x.slice_axis(Axis(0), (0..images.min(x.shape()[0])).into()).to_owned();
    let unrolled = spec.timesteps.iter().copied().max().unwrap_or(1);
    let calls = config.stateful.calls.min(unrolled);
    let rows = runtime_matrix(ort, &names, &few, t, unrolled, calls)?;
    eprintln!("runtime matrix: done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(rows)
}

/// Writes report.md, report.json and the plots (and, with `--readme`, the README's
/// summary and docs/verify/); prints the report and the gates. Whether every gate passed.
fn write_report(report: &Report, args: &Args, spec: &Spec, root: &Path) -> anyhow::Result<bool> {
    let markdown = render_markdown(report);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    write_plots(report, &args.out, spec)?;
    if args.readme && args.model.is_none() {
        update_readme(&root.join("README.md"), &markdown, &render_summary(report), &args.out)?;
    }
    println!("{markdown}");
    let failed: Vec<&report::Gate> = report.gates.iter().filter(|g| !g.passed).collect();
    for gate in &failed {
        eprintln!("gate missed: {}: {}", gate.name, gate.detail);
    }
    let passed = report.gates.len() - failed.len();
    println!("verify: {passed} passed, {} failed", failed.len());
    eprintln!("report in {} ({:.0} s)", args.out.display(), report.seconds);
    Ok(failed.is_empty())
}
