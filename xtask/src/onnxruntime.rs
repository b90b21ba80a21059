//! ONNX Runtime for the harness: the PyPI `onnxruntime` wheel installed into a venv
//! under the target folder on first use (with `onnx`, whose checker validates every
//! emitted model), loaded through the `ort` crate's `load-dynamic`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;
use ndarray::ArrayD;
use ort::session::Session;
use ort::value::TensorRef;

const PACKAGES: &[&str] = &["onnxruntime==1.31.1", "onnx==1.23.2", "numpy", "openvino==2026.4.1"];

/// The venv, created and filled on first use.
pub fn venv() -> anyhow::Result<PathBuf> {
    crate::venv::ensure("verify-venv", PACKAGES)
}

/// The path of `libonnxruntime.so` inside the venv.
pub fn library(venv: &Path) -> anyhow::Result<PathBuf> {
    let lib = venv.join("lib");
    for py in std::fs::read_dir(&lib)?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        if let Ok(entries) = std::fs::read_dir(&capi) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("libonnxruntime.so") {
                    return Ok(e.path());
                }
            }
        }
    }
    bail!("libonnxruntime.so not found under {}", lib.display())
}

/// Builds the custom-op library (`gn-ort-ops`, release) and returns the path of the
/// shared library, for sessions that run the custom-op form's nodes as fused kernels.
pub fn ops_library() -> anyhow::Result<PathBuf> {
    crate::cargo_artifact(&["--release", "--package", "gn-ort-ops"], "gn_ort_ops", |f| {
        f.extension().is_some_and(|e| e == "so" || e == "dylib")
    })
}

/// Runs `onnx.checker.check_model(full_check=True)` on each file; returns one verdict
/// per file, in order: `ok`, or the file and the checker's first line.
pub fn check_models(venv: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let script = "import sys, onnx\nfor p in sys.argv[1:]:\n    try:\n        onnx.checker.check_model(onnx.load(p), full_check=True)\n    except Exception as e:\n        print(p + ': ' + str(e).splitlines()[0] if str(e) else p)\n";
    let out = Command::new(crate::venv::python(venv)).arg("-c").arg(script).args(files).output()?;
    if !out.status.success() {
        bail!("onnx checker failed to run: {}", String::from_utf8_lossy(&out.stderr));
    }
    let failures: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    Ok(files
        .iter()
        .map(|f| {
            let fail = failures.iter().find(|l| l.starts_with(&f.display().to_string()));
            fail.cloned().unwrap_or_else(|| "ok".into())
        })
        .collect())
}

/// An ONNX Runtime environment.
pub struct Runtime {
    env: ort::environment::Environment,
}

impl Runtime {
    pub fn new(library: &Path) -> anyhow::Result<Runtime> {
        let env = ort::init_from(library)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", library.display()))?
            .build()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Runtime { env })
    }

    /// Runs `model` on `x` in chunks of `batch` (of the model's static batch, if it has
    /// one); returns each output concatenated (anytime outputs along axis 1).
    pub fn run(&self, model: &[u8], x: &ArrayD<f32>, batch: usize) -> anyhow::Result<Vec<ArrayD<f32>>> {
        self.run_with(model, x, batch, None)
    }

    /// [`Runtime::run`] with the custom-op library `ops` registered, if given.
    pub fn run_with(
        &self,
        model: &[u8],
        x: &ArrayD<f32>,
        batch: usize,
        ops: Option<&Path>,
    ) -> anyhow::Result<Vec<ArrayD<f32>>> {
        let batch = gn_onnx::io::decode(model, "model").map_or(batch, |m| gn_verify::batch_for(&m, batch));
        let mut session = self.build(model, true, ops)?;
        let input = session.inputs()[0].name().to_string();
        let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let mut parts: Vec<Vec<ArrayD<f32>>> = vec![Vec::new(); names.len()];
        for chunk in x.axis_chunks_iter(ndarray::Axis(0), batch) {
            let tensor = TensorRef::from_array_view(chunk).map_err(|e| anyhow::anyhow!("{e}"))?;
            let outputs = session.run(ort::inputs![input.as_str() => tensor]).map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, name) in names.iter().enumerate() {
                let a = outputs[name.as_str()].try_extract_array::<f32>().map_err(|e| anyhow::anyhow!("{e}"))?;
                parts[i].push(a.to_owned());
            }
        }
        names
            .iter()
            .zip(parts)
            .map(|(name, p)| {
                let axis = if name.ends_with("_anytime") { 1 } else { 0 };
                let views: Vec<_> = p.iter().map(|a| a.view()).collect();
                Ok(ndarray::concatenate(ndarray::Axis(axis), &views)?)
            })
            .collect()
    }

    /// A session for `model` on 2 threads.
    pub fn session(&self, model: &[u8]) -> anyhow::Result<Session> {
        self.build(model, true, None)
    }

    /// A session on 2 threads that do not spin between runs: several sessions timed in
    /// turn in one process would otherwise keep each other's cores busy.
    pub fn session_without_spinning(&self, model: &[u8], ops: Option<&Path>) -> anyhow::Result<Session> {
        self.build(model, false, ops)
    }

    fn build(&self, model: &[u8], spinning: bool, ops: Option<&Path>) -> anyhow::Result<Session> {
        let mut builder = Session::builder(&self.env)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_intra_threads(2)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_intra_op_spinning(spinning)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(ops) = ops {
            builder = builder
                .with_operator_library(ops)
                .map_err(|e| anyhow::anyhow!("cannot register {}: {e}", ops.display()))?;
        }
        builder.commit_from_memory(model).map_err(|e| anyhow::anyhow!("ONNX Runtime cannot load the model: {e}"))
    }

    /// Runs a session once on `inputs` (in the model's input order); returns every output.
    pub fn run_once(session: &mut Session, inputs: &[ArrayD<f32>]) -> anyhow::Result<Vec<ArrayD<f32>>> {
        let names: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let mut feed: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = Vec::new();
        for (name, x) in names.iter().zip(inputs) {
            let tensor = ort::value::Tensor::from_array(x.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
            feed.push((name.clone().into(), tensor.into()));
        }
        let result = session.run(feed).map_err(|e| anyhow::anyhow!("{e}"))?;
        outputs
            .iter()
            .map(|name| {
                let a = result[name.as_str()].try_extract_array::<f32>().map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(a.to_owned())
            })
            .collect()
    }
}
