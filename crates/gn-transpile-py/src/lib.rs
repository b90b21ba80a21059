//! The native half of the `gn_transpile` Python package: the converter and the audit,
//! called in-process, and the `gn-transpile` command. `python/gn_transpile/__init__.py`
//! is the public face (it accepts paths, bytes and `onnx.ModelProto`s).

use std::path::PathBuf;

use gn_transpile::{transpile, Emit, NeuronKind, Options};
// Linked for its exported `RegisterCustomOps`: this module is also the fused-kernel
// library that `gn_transpile.ort_ops_library()` hands to ONNX Runtime.
use gn_ort_ops as _;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The model, loaded from a path (external data resolved beside it) or from bytes.
fn load(path: Option<PathBuf>, data: Option<&[u8]>) -> PyResult<gn_onnx::proto::ModelProto> {
    let model = match (path, data) {
        (Some(path), None) => gn_onnx::io::load(&path).map(|l| l.model),
        (None, Some(bytes)) => gn_onnx::io::load_bytes(bytes),
        _ => return Err(PyValueError::new_err("give the model as a path or as bytes")),
    };
    model.map_err(|e| PyValueError::new_err(e.to_string()))
}

fn parse<T: clap::ValueEnum>(what: &str, value: &str) -> PyResult<T> {
    T::from_str(value, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        PyValueError::new_err(format!("{what} must be one of {}, got '{value}'", names.join(", ")))
    })
}

/// Converts a model; returns the spiking network's bytes. Errors carry the command's
/// one-line message.
#[pyfunction]
#[pyo3(signature = (path, data, tau, timesteps, neuron, emit, anytime, allow_inexact))]
#[allow(clippy::too_many_arguments)]
fn convert<'py>(
    py: Python<'py>,
    path: Option<PathBuf>,
    data: Option<Vec<u8>>,
    tau: u32,
    timesteps: Option<usize>,
    neuron: &str,
    emit: &str,
    anytime: bool,
    allow_inexact: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let neuron: NeuronKind = parse("neuron", neuron)?;
    let emit: Emit = parse("emit", emit)?;
    if emit == Emit::Stateful && timesteps.is_some() {
        return Err(PyValueError::new_err(
            "timesteps does not apply to emit='stateful': the model runs one step per call, as many calls as the caller makes",
        ));
    }
    let options =
        Options { neuron, tau, timesteps: timesteps.unwrap_or(4), anytime, allow_inexact, emit, calibration: None };
    let model = load(path, data.as_deref())?;
    let bytes = py
        .allow_threads(|| transpile(&model, &options).map(|(snn, _)| gn_onnx::io::encode(&snn)))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &bytes))
}

/// The audit of a model as JSON (the wrapper returns it as a dict).
#[pyfunction]
#[pyo3(signature = (path, data))]
fn inspect(path: Option<PathBuf>, data: Option<Vec<u8>>) -> PyResult<String> {
    let model = load(path, data.as_deref())?;
    let audit = gn_transpile::inspect::audit(&model).map_err(|e| PyValueError::new_err(e.to_string()))?;
    serde_json::to_string(&audit).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Runs the `gn-transpile` command on `argv` (program name first); returns its exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.allow_threads(|| gn_transpile_cli::run_command(argv))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", gn_transpile::VERSION)?;
    Ok(())
}
