//! `cargo xtask python`: builds the Python package from source into a venv under the
//! target folder, exactly as `pip install ./crates/gn-transpile-py` does for a user,
//! and runs its pytest file against the installed package.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;

/// What the tests import besides the package (nir: the NIR export writes with it), and
/// the build backend (installed once, so the package builds without fetching maturin
/// each time).
const PACKAGES: &[&str] = &["maturin>=1.5,<2", "pytest", "onnxruntime==1.31.1", "onnx==1.23.2", "numpy", "nir==1.0.4"];

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for pytest (e.g. `-k inspect`).
    #[arg(trailing_var_arg = true)]
    pytest: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let venv = crate::venv::ensure("py-venv", PACKAGES)?;
    let start = Instant::now();
    eprintln!("building and installing ./crates/gn-transpile-py (maturin, release profile) …");
    crate::venv::pip(&venv, &["--no-build-isolation", "--no-deps", "--force-reinstall", "./crates/gn-transpile-py"])?;
    eprintln!("installed in {:.0} s", start.elapsed().as_secs_f64());
    // The command with tract, whose calibration the package's must reproduce.
    let cli = crate::cargo_artifact(&["--package", "gn-transpile-cli"], "gn-transpile", |f| {
        f.file_name().is_some_and(|n| n == "gn-transpile")
    })?;
    let ok = Command::new(crate::venv::python(&venv))
        .env("GN_TRANSPILE_CLI", &cli)
        .args(["-m", "pytest", "-q", "crates/gn-transpile-py/tests"])
        .args(&args.pytest)
        .current_dir(crate::workspace())
        .status()
        .context("pytest")?;
    Ok(ok.success())
}
