//! `cargo xtask bench`: the emitted SNN's cost against the ANN's, and the transpiler's
//! against a file copy. Every figure is a ratio of two timings taken in this process,
//! round-robin (one run of each model per round, the median over rounds), so that a
//! noisy machine moves both sides alike.
//!
//! ratio = SNN(T) time / (T × ANN time), same runtime, same batch: below 1 the SNN costs
//! less than running the ANN T times.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use gn_onnx::proto::ModelProto;
use gn_transpile::{transpile, Compensation, Emit, NeuronKind, Options};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batches: Vec<usize>,
    /// Time steps of the emitted models.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    timesteps: Vec<usize>,
    /// Timed rounds (after one warm-up round); each round runs every model once.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only these models (fixture names, or resnet18 for the random-weight ResNet-18).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Skip tract (ONNX Runtime only).
    #[arg(long)]
    no_tract: bool,
    /// Skip the transpiler's time and memory against a file copy.
    #[arg(long)]
    no_transpile: bool,
    /// A Python with torch and onnx2torch (not needed otherwise): also time PyTorch eager
    /// GN against the emitted model (fixtures/bench_pytorch.py).
    #[arg(long, value_name = "PYTHON")]
    torch_python: Option<PathBuf>,
    /// Write the Markdown tables into docs/bench.md (the README links them).
    #[arg(long)]
    readme: bool,
    /// Where to write bench.json and bench.md.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// The runtime label of the custom-op form on ONNX Runtime with the fused kernels.
const FUSED: &str = "ONNX Runtime, custom-op + gn-ort-ops";

/// The neuron label's suffix of a model compensated op by op ([`Compensation::PerOp`]).
const OP_BY_OP: &str = ", op by op";

#[derive(Serialize)]
struct Row {
    model: String,
    runtime: &'static str,
    batch: usize,
    neuron: String,
    timesteps: usize,
    ann_ms: f64,
    snn_ms: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Transpile {
    model: String,
    megabytes: f64,
    copy_ms: f64,
    /// The copy followed by an fsync of it: the durability of `--fsync`.
    copy_sync_ms: f64,
    transpile_ms: f64,
    ratio: f64,
    /// With `--fsync`, against the fsynced copy.
    transpile_sync_ms: f64,
    sync_ratio: f64,
    /// The converting process's peak resident memory (VmHWM).
    peak_megabytes: f64,
    peak_ratio: f64,
}

/// One conversion for the bench, run as `cargo xtask transpile-once IN OUT [--fsync]`:
/// prints the milliseconds from load to saved file, and the process's peak resident
/// memory in kB.
pub fn transpile_once(input: &std::path::Path, output: &std::path::Path, fsync: bool) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    let loaded = gn_onnx::io::load(input)?;
    let (snn, _) = transpile(&loaded.model, &Options::default())?;
    let durability = if fsync { gn_onnx::save::Durability::Fsync } else { gn_onnx::save::Durability::Atomic };
    gn_onnx::save::save_loaded(&snn, output, &loaded, durability)?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM in /proc/self/status")?;
    println!("{ms} {peak}");
    Ok(true)
}

/// A model to time: its ANN and the input shape per image.
struct Subject {
    name: String,
    ann: ModelProto,
    image: Vec<usize>,
}

fn subjects(only: &[String]) -> anyhow::Result<Vec<Subject>> {
    const FIXTURES: [&str; 6] = ["cnn_l4", "resnet20_l8", "vgg_l4", "vgg_maxpool_l4", "secnn_l4", "vit_l4"];
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if let Some(unknown) = only.iter().find(|o| !FIXTURES.contains(&o.as_str()) && o.as_str() != "resnet18") {
        anyhow::bail!("--models: no model '{unknown}' (known: {}, resnet18)", FIXTURES.join(", "));
    }
    let mut list = Vec::new();
    for name in FIXTURES.into_iter().filter(|n| wanted(n)) {
        let path = crate::workspace().join(format!("fixtures/models/{name}.onnx"));
        let ann = gn_onnx::io::load(&path).with_context(|| format!("{}", path.display()))?.model;
        list.push(Subject { name: name.into(), ann, image: vec![1, 28, 28] });
    }
    if wanted("resnet18") {
        list.push(Subject {
            name: "resnet18".into(),
            ann: gn_tests::built::resnet18(64, 64, 18),
            image: vec![3, 64, 64],
        });
    }
    Ok(list)
}

/// The runners of one runtime, in the order of the models they run.
type Runners = Vec<Box<dyn Runner>>;

/// Something that runs a model on one input.
trait Runner {
    fn run(&mut self, x: &ArrayD<f32>) -> anyhow::Result<()>;
}

struct Ort(ort::session::Session);
impl Runner for Ort {
    fn run(&mut self, x: &ArrayD<f32>) -> anyhow::Result<()> {
        crate::onnxruntime::Runtime::run_once(&mut self.0, std::slice::from_ref(x)).map(|_| ())
    }
}

struct Tract(gn_onnx::tract_bridge::TractModel);
impl Runner for Tract {
    fn run(&mut self, x: &ArrayD<f32>) -> anyhow::Result<()> {
        self.0.run(vec![x.clone()]).map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times every runner round-robin: one warm-up round, then `rounds` timed ones.
fn round_robin(runners: &mut [Box<dyn Runner>], x: &ArrayD<f32>, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = vec![Vec::new(); runners.len()];
    for round in 0..=rounds {
        for (r, t) in runners.iter_mut().zip(times.iter_mut()) {
            let t0 = Instant::now();
            r.run(x)?;
            if round > 0 {
                t.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(times.into_iter().map(median).collect())
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let root = crate::workspace();
    std::env::set_current_dir(&root)?;
    std::fs::create_dir_all(&args.out)?;
    let venv = crate::onnxruntime::venv()?;
    let rt = crate::onnxruntime::Runtime::new(&crate::onnxruntime::library(&venv)?)?;
    let ops = crate::onnxruntime::ops_library()?;
    let mut rows = Vec::new();
    for s in &subjects(&args.models)? {
        time_subject(s, &args, &rt, &ops, &mut rows)?;
    }
    let transpiles = if args.no_transpile { Vec::new() } else { vec![transpile_against_copy(&args)?] };
    let mut md = render(&rows, &transpiles, &args);
    pytorch(&args, &root, &ops, &mut md)?;
    std::fs::write(args.out.join("bench.md"), &md)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "rows": rows, "transpile": transpiles }))?,
    )?;
    println!("{md}");
    if args.readme {
        crate::replace_section(&root.join("docs/bench.md"), "bench", &md)?;
    }
    Ok(true)
}

/// One subject's ANN and its emitted models, timed on each runtime at each batch size.
fn time_subject(
    s: &Subject,
    args: &Args,
    rt: &crate::onnxruntime::Runtime,
    ops: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // The emitted models: GN and IF at each T, standard form; and the custom-op form,
    // which ONNX Runtime runs with the fused kernels of gn-ort-ops.
    let mut models = vec![("ANN".to_string(), 1, s.ann.clone(), false)];
    for fused in [false, true] {
        for neuron in [NeuronKind::Gn, NeuronKind::If] {
            for &t in &args.timesteps {
                let emit = if fused { Emit::CustomOp } else { Emit::Standard };
                let options = Options { neuron, timesteps: t, emit, ..Default::default() };
                let snn = transpile(&s.ann, &options).with_context(|| format!("{} {neuron} T={t}", s.name))?.0;
                models.push((neuron.label(options.tau), t, snn, fused));
            }
        }
    }
    // A model with ops exact in rate: also GN compensated op by op, against its regions.
    for &t in &args.timesteps {
        let options = Options { timesteps: t, compensation: Compensation::PerOp, ..Default::default() };
        let per_op = transpile(&s.ann, &options).with_context(|| format!("{} op by op T={t}", s.name))?.0;
        let regions = models.iter().find(|m| m.1 == t && !m.3 && m.0 == NeuronKind::Gn.label(options.tau));
        let nodes = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.node.len());
        if regions.is_some_and(|r| nodes(&r.2) != nodes(&per_op)) {
            models.push((format!("{}{OP_BY_OP}", NeuronKind::Gn.label(options.tau)), t, per_op, false));
        }
    }
    for &batch in &args.batches {
        let mut shape = vec![batch];
        shape.extend(&s.image);
        let count: usize = shape.iter().product();
        let pixels = (0..count).map(|i| ((i * 7919) % 97) as f32 / 97.0).collect();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), pixels)?;
        let mut runtimes: Vec<(&'static str, Vec<usize>, Runners)> = Vec::new();
        let all: Vec<usize> = (0..models.len()).collect();
        let ort_runners = models
            .iter()
            .map(|(_, _, m, fused)| {
                let session = rt.session_without_spinning(&gn_onnx::io::encode(m), fused.then_some(ops))?;
                Ok(Box::new(Ort(session)) as Box<dyn Runner>)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        runtimes.push(("ONNX Runtime", all, ort_runners));
        if !args.no_tract {
            let standard: Vec<usize> = (0..models.len()).filter(|&i| !models[i].3).collect();
            let tract_runners = standard
                .iter()
                .map(|&i| {
                    let plan = gn_transpile::tract_ops::load(&models[i].2, true).map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(Box::new(Tract(plan)) as Box<dyn Runner>)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            runtimes.push(("tract", standard, tract_runners));
        }
        for (runtime, which, mut runners) in runtimes {
            eprintln!("{} batch {batch} on {runtime}: {} models × {} rounds", s.name, runners.len(), args.rounds);
            let ms = round_robin(&mut runners, &x, args.rounds)?;
            for (&i, &snn_ms) in which.iter().zip(&ms).skip(1) {
                let (label, t, _, fused) = &models[i];
                rows.push(Row {
                    model: s.name.clone(),
                    runtime: if *fused { FUSED } else { runtime },
                    batch,
                    neuron: label.clone(),
                    timesteps: *t,
                    ann_ms: ms[0],
                    snn_ms,
                    ratio: snn_ms / (*t as f64 * ms[0]),
                });
            }
        }
    }
    Ok(())
}

/// The transpiler against a file copy, on a ResNet-50-size model (a ResNet-18 layout of
/// width 92, random weights: 95 MB), each conversion in a process of its own so that its
/// peak memory is its own.
fn transpile_against_copy(args: &Args) -> anyhow::Result<Transpile> {
    let dir = tempfile::tempdir()?;
    let (src, copy, out) = (dir.path().join("ann.onnx"), dir.path().join("copy.onnx"), dir.path().join("snn.onnx"));
    std::fs::write(&src, gn_onnx::io::encode(&gn_tests::built::resnet18(64, 92, 50)))?;
    // Each timed operation starts with nothing of the others' left to write back: on
    // ext4 an fsync also flushes other files' dirty data, which would charge the
    // converter for the copy's.
    let flush = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
    flush(&src)?;
    let (mut copy_ms, mut copy_sync_ms, mut peak_kb) = (Vec::new(), Vec::new(), 0u64);
    let (mut transpile_ms, mut transpile_sync_ms) = (Vec::new(), Vec::new());
    let mut convert = |fsync: bool| -> anyhow::Result<f64> {
        let _ = std::fs::remove_file(&out);
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("transpile-once").arg(&src).arg(&out);
        if fsync {
            command.arg("--fsync");
        }
        let child = command.output()?;
        if !child.status.success() {
            anyhow::bail!("transpile-once failed: {}", String::from_utf8_lossy(&child.stderr));
        }
        let text = String::from_utf8_lossy(&child.stdout).to_string();
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>());
        let (Some(Ok(ms)), Some(Ok(kb))) = (fields.next(), fields.next()) else {
            anyhow::bail!("transpile-once printed {text:?}")
        };
        peak_kb = peak_kb.max(kb as u64);
        flush(&out)?;
        Ok(ms)
    };
    for _ in 0..=args.rounds.max(1) {
        let _ = std::fs::remove_file(&copy);
        let t0 = Instant::now();
        std::fs::copy(&src, &copy)?;
        copy_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        flush(&copy)?;
        let _ = std::fs::remove_file(&copy);
        let t0 = Instant::now();
        std::fs::copy(&src, &copy)?;
        flush(&copy)?;
        copy_sync_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        transpile_ms.push(convert(false)?);
        transpile_sync_ms.push(convert(true)?);
    }
    // The first round warms the page cache and is left out.
    for v in [&mut copy_ms, &mut copy_sync_ms, &mut transpile_ms, &mut transpile_sync_ms] {
        v.remove(0);
    }
    let (copy_ms, copy_sync_ms) = (median(copy_ms), median(copy_sync_ms));
    let (transpile_ms, transpile_sync_ms) = (median(transpile_ms), median(transpile_sync_ms));
    let bytes = std::fs::metadata(&src)?.len() as f64;
    Ok(Transpile {
        model: "ResNet-18 layout, width 92".into(),
        megabytes: bytes / 1e6,
        copy_ms,
        copy_sync_ms,
        transpile_ms,
        ratio: transpile_ms / copy_ms,
        transpile_sync_ms,
        sync_ratio: transpile_sync_ms / copy_sync_ms,
        peak_megabytes: peak_kb as f64 * 1024.0 / 1e6,
        peak_ratio: peak_kb as f64 * 1024.0 / bytes,
    })
}

/// With `--torch-python`: PyTorch eager GN against the emitted model, appended to `md`.
fn pytorch(args: &Args, root: &Path, ops: &Path, md: &mut String) -> anyhow::Result<()> {
    let Some(python) = &args.torch_python else { return Ok(()) };
    // The command converts (and calibrates) the models; nothing of it is timed, so the
    // profile the tests built (dependencies optimised) serves, without a release build
    // of tract.
    let cli = crate::cargo_artifact(&["--package", "gn-transpile-cli"], "gn-transpile", |f| {
        f.file_name().is_some_and(|n| n == "gn-transpile")
    })?;
    eprintln!("PyTorch eager GN against the emitted model (fixtures/bench_pytorch.py)");
    let out = std::process::Command::new(python)
        .arg(root.join("fixtures/bench_pytorch.py"))
        .arg("--bin")
        .arg(&cli)
        .arg("--ops")
        .arg(ops)
        .arg("--rounds")
        .arg(args.rounds.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("fixtures/bench_pytorch.py failed");
    }
    md.push('\n');
    md.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn render(rows: &[Row], transpiles: &[Transpile], args: &Args) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`cargo xtask bench` ({} timed rounds, round-robin, medians; ONNX Runtime on 2 threads that do not spin between runs, tract single-threaded). Ratio = SNN(T) / (T × ANN), same runtime and batch: below 1 the emitted model costs less than T runs of the ANN.\n",
        args.rounds
    );
    let ts = &args.timesteps;
    let _ = writeln!(
        s,
        "| model | runtime | batch | neuron | ANN ms | {} |",
        ts.iter().map(|t| format!("T={t}")).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |{}", " --- |".repeat(ts.len()));
    let mut keys: Vec<(String, &str, usize, String)> = Vec::new();
    // The op-by-op rows have their own table below.
    for r in rows.iter().filter(|r| !r.neuron.ends_with(OP_BY_OP)) {
        let k = (r.model.clone(), r.runtime, r.batch, r.neuron.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (model, runtime, batch, neuron) in keys {
        let of = |t: usize| {
            rows.iter().find(|r| {
                r.model == model && r.runtime == runtime && r.batch == batch && r.neuron == neuron && r.timesteps == t
            })
        };
        let ann = of(ts[0]).map_or(0.0, |r| r.ann_ms);
        let cells: Vec<String> = ts.iter().map(|&t| of(t).map_or("–".into(), |r| format!("{:.2}", r.ratio))).collect();
        let _ = writeln!(s, "| {model} | {runtime} | {batch} | {neuron} | {ann:.2} | {} |", cells.join(" | "));
    }
    // The fused kernels against the standard form, same runtime, batch and T.
    let fused: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| r.runtime == FUSED)
        .filter_map(|f| {
            let standard = rows.iter().find(|r| {
                r.runtime == "ONNX Runtime"
                    && r.model == f.model
                    && r.batch == f.batch
                    && r.neuron == f.neuron
                    && r.timesteps == f.timesteps
            })?;
            Some((standard, f))
        })
        .collect();
    pair_table(
        &mut s,
        ts,
        "The custom-op form with the fused kernels of `gn-ort-ops` against the standard form on ONNX Runtime: speed-up = standard time / fused time.",
        ["model", "batch", "neuron"],
        &fused,
        |f| [f.model.clone(), f.batch.to_string(), f.neuron.clone()],
        |standard, f| standard.snn_ms / f.snn_ms,
    );
    // Op-by-op compensation against regions, same runtime, batch and T.
    let per_op: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|o| {
            let plain = o.neuron.strip_suffix(OP_BY_OP)?;
            let regions = rows.iter().find(|r| {
                r.neuron == plain
                    && r.runtime == o.runtime
                    && r.model == o.model
                    && r.batch == o.batch
                    && r.timesteps == o.timesteps
            })?;
            Some((regions, o))
        })
        .collect();
    pair_table(
        &mut s,
        ts,
        "Ops exact in rate compensated op by op (each averages its inputs and differences its output) against once per region (the default): cost = op-by-op time / region time, standard form.",
        ["model", "runtime", "batch"],
        &per_op,
        |o| [o.model.clone(), o.runtime.to_string(), o.batch.to_string()],
        |regions, o| o.snn_ms / regions.snn_ms,
    );
    for t in transpiles {
        let _ = writeln!(
            s,
            "\nTranspiling a {:.0} MB model ({}; GN τ = 4, T = 4; load, convert and write, in a process of its own): {:.0} ms against {:.0} ms to copy the file: {:.1}×. With `--fsync`: {:.0} ms against {:.0} ms for a copy that is fsynced too: {:.1}×. Peak resident memory of the converting process: {:.0} MB, {:.2}× the model.",
            t.megabytes, t.model, t.transpile_ms, t.copy_ms, t.ratio, t.transpile_sync_ms, t.copy_sync_ms, t.sync_ratio, t.peak_megabytes, t.peak_ratio
        );
    }
    s
}

/// A table of one figure per pair of rows (a baseline, a variant), a line per key of the
/// variant (three columns) and a cell per T; nothing without pairs.
fn pair_table(
    s: &mut String,
    ts: &[usize],
    intro: &str,
    columns: [&str; 3],
    pairs: &[(&Row, &Row)],
    key: fn(&Row) -> [String; 3],
    figure: fn(&Row, &Row) -> f64,
) {
    use std::fmt::Write as _;
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{intro}\n");
    let header: Vec<String> = ts.iter().map(|t| format!("T={t}")).collect();
    let _ = writeln!(s, "| {} | {} |", columns.join(" | "), header.join(" | "));
    let _ = writeln!(s, "| --- | --- | --- |{}", " --- |".repeat(ts.len()));
    let mut keys: Vec<[String; 3]> = Vec::new();
    for (_, v) in pairs {
        if !keys.contains(&key(v)) {
            keys.push(key(v));
        }
    }
    for k in keys {
        let cells: Vec<String> = ts
            .iter()
            .map(|&t| {
                pairs
                    .iter()
                    .find(|(_, v)| key(v) == k && v.timesteps == t)
                    .map_or("–".into(), |(b, v)| format!("{:.2}", figure(b, v)))
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", k.join(" | "), cells.join(" | "));
    }
}
