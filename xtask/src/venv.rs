//! Python venvs under the target folder, created and filled from PyPI on first use (or
//! when their package list changes), for the harness and the Python package's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The venv `target/{name}` holding `packages`; returns its folder.
pub fn ensure(name: &str, packages: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = crate::target_dir().join(name);
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&packages.join("\n")) {
        return Ok(dir);
    }
    eprintln!("installing {} into {} (first use)", packages.join(" "), dir.display());
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&dir).status().context("python3 -m venv")?;
    if !ok.success() {
        bail!("python3 -m venv {} failed", dir.display());
    }
    pip(&dir, packages)?;
    std::fs::write(&stamp, packages.join("\n"))?;
    Ok(dir)
}

/// The venv's interpreter.
pub fn python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// `pip install` into the venv, from the workspace root. The venv's bin goes first on
/// PATH, so a build backend finds the venv's tools (maturin).
pub fn pip(venv: &Path, args: &[&str]) -> anyhow::Result<()> {
    let bin = venv.join("bin");
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let ok = Command::new(python(venv))
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
