//! Project tasks, run as `cargo xtask <task>`.
//!
//! * `verify`: the verification harness. Runs each fixture ANN and its IF and GN
//!   conversions side by side on Fashion-MNIST, on tract and on ONNX Runtime, reports the
//!   paper's Table 1 and Table 2 with per-layer errors and firing rates, writes a
//!   Markdown report, JSON and SVG plots, and fails when a gate of `xtask/verify.yaml`
//!   is missed. With `--model` it measures a user's own model and data.
//! * `fuzz`: a bounded mutation-fuzzing campaign over the model reader and the pipeline.
//! * `bench`: the emitted SNN's run time against T runs of the ANN, on ONNX Runtime and
//!   tract, and the transpiler's against a file copy.

mod bench;
mod fuzz;
mod onnxruntime;
mod python;
mod venv;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// ANN vs SNN on real data: Table 1 (MSE per T, IF vs GN), Table 2 (accuracy per T), gates.
    Verify(verify::Args),
    /// Fuzz the model reader and the whole pipeline for a bounded time; fails on any crash or hang.
    Fuzz(fuzz::Args),
    /// Build the Python package into a venv (as `pip install ./crates/gn-transpile-py` does) and run its tests.
    Python(python::Args),
    /// Time the emitted SNN against T runs of the ANN (ONNX Runtime, tract), and the transpiler against a file copy.
    Bench(bench::Args),
    /// One load, convert (GN, τ = 4, T = 4) and save, in a process of its own: prints the
    /// milliseconds it took and the process's peak resident memory (for the bench).
    #[command(hide = true)]
    TranspileOnce {
        input: PathBuf,
        output: PathBuf,
        #[arg(long)]
        fsync: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Verify(args) => verify::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Python(args) => python::run(args),
        Task::Bench(args) => bench::run(args),
        Task::TranspileOnce { input, output, fsync } => bench::transpile_once(&input, &output, fsync),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo build` with `args` and returns the file of target `target` that `pick`
/// accepts (the binary, the shared library, …), as cargo reports it.
pub fn cargo_artifact(args: &[&str], target: &str, pick: impl Fn(&std::path::Path) -> bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--message-format=json"])
        .args(args)
        .current_dir(workspace())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("cargo build {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" || message["target"]["name"] != target {
            continue;
        }
        if let Some(file) = message["executable"].as_str().map(PathBuf::from).filter(|f| pick(f)) {
            return Ok(file);
        }
        let files = message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        if let Some(file) = files.map(PathBuf::from).find(|f| pick(f)) {
            return Ok(file);
        }
    }
    anyhow::bail!("cargo build {} named no file of {target}", args.join(" "))
}

/// The workspace root (the folder holding `xtask/`).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Replaces the text between `<!-- {key}:begin -->` and `<!-- {key}:end -->` in a file.
pub fn replace_section(path: &std::path::Path, key: &str, body: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (begin, end) = (format!("<!-- {key}:begin -->"), format!("<!-- {key}:end -->"));
    let (Some(a), Some(b)) = (text.find(&begin), text.find(&end)) else {
        anyhow::bail!("{} has no {begin} … {end} section", path.display());
    };
    let updated = format!("{}{begin}\n{body}\n{}", &text[..a], &text[b..]);
    std::fs::write(path, updated)?;
    Ok(())
}

/// The cargo target folder: `CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}
