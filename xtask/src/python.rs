//! `cargo xtask python`: builds the Python package from source into a venv under the
//! target folder, exactly as `pip install ./crates/gn-transpile-py` does for a user,
//! and runs its pytest file against the installed package.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

/// What the tests import besides the package, and the build backend (installed once, so
/// the package builds without fetching maturin each time).
const PACKAGES: &[&str] = &["maturin>=1.5,<2", "pytest", "onnxruntime==1.31.1", "onnx==1.23.2", "numpy"];

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for pytest (e.g. `-k inspect`).
    #[arg(trailing_var_arg = true)]
    pytest: Vec<String>,
}

fn pip(python: &Path, args: &[&str]) -> anyhow::Result<()> {
    // The build backend runs the venv's `maturin` executable: the venv's bin goes first on PATH.
    let bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let ok = Command::new(python)
        .env("PATH", path)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(args)
        .current_dir(crate::workspace())
        .status()
        .context("pip install")?;
    if !ok.success() {
        bail!("pip install {} failed", args.join(" "));
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<bool> {
    let dir = crate::target_dir().join("py-venv");
    let python = dir.join("bin/python");
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&PACKAGES.join("\n")) {
        eprintln!("installing {} into {} (first use)", PACKAGES.join(" "), dir.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&dir).status().context("python3 -m venv")?;
        if !ok.success() {
            bail!("python3 -m venv {} failed", dir.display());
        }
        pip(&python, PACKAGES)?;
        std::fs::write(&stamp, PACKAGES.join("\n"))?;
    }
    let start = Instant::now();
    eprintln!("building and installing ./crates/gn-transpile-py (maturin, release profile) …");
    pip(&python, &["--no-build-isolation", "--no-deps", "--force-reinstall", "./crates/gn-transpile-py"])?;
    eprintln!("installed in {:.0} s", start.elapsed().as_secs_f64());
    let ok = Command::new(&python)
        .args(["-m", "pytest", "-q", "crates/gn-transpile-py/tests"])
        .args(&args.pytest)
        .current_dir(crate::workspace())
        .status()
        .context("pytest")?;
    Ok(ok.success())
}
