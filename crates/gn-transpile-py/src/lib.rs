//! The native half of the `gn_transpile` Python package: the converter and the audit,
//! called in-process, and the `gn-transpile` command. `python/gn_transpile/__init__.py`
//! is the public face (it accepts paths, bytes and `onnx.ModelProto`s).

use std::path::PathBuf;

use gn_transpile::calibrate::{Calibration, Recording};
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

/// Converts a model; returns the spiking network's bytes. `calibration` is the JSON of a
/// calibration ([`Recorder::finish`]) for a ReLU network. Errors carry the command's
/// one-line message.
#[pyfunction]
#[pyo3(signature = (path, data, tau, timesteps, neuron, emit, anytime, allow_inexact, calibration=None))]
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
    calibration: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let neuron: NeuronKind = parse("neuron", neuron)?;
    let emit: Emit = parse("emit", emit)?;
    if emit == Emit::Stateful && timesteps.is_some() {
        return Err(PyValueError::new_err(
            "timesteps does not apply to emit='stateful': the model runs one step per call, as many calls as the caller makes",
        ));
    }
    let calibration = calibration
        .map(|json| serde_json::from_str::<Calibration>(json).map(std::sync::Arc::new))
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("the calibration is not one gn_transpile wrote: {e}")))?;
    let options = Options { neuron, tau, timesteps: timesteps.unwrap_or(4), anytime, allow_inexact, emit, calibration };
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

/// A calibration in progress ([`Recording`]): the Python side runs [`Recorder::model`]
/// on ONNX Runtime and feeds each batch's activations to [`Recorder::add`].
#[pyclass]
struct Recorder {
    recording: Option<Recording>,
}

#[pymethods]
impl Recorder {
    #[new]
    #[pyo3(signature = (path, data, percentile, per_channel))]
    fn new(path: Option<PathBuf>, data: Option<Vec<u8>>, percentile: f64, per_channel: bool) -> PyResult<Self> {
        let model = load(path, data.as_deref())?;
        let recording =
            Recording::new(&model, percentile, per_channel).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Recorder { recording: Some(recording) })
    }

    /// The model to run (the ANN with the activations as outputs after its own), as bytes.
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &gn_onnx::io::encode(self.recording()?.model())))
    }

    /// The names of the activations, in the order `add` takes them.
    fn activations(&self) -> PyResult<Vec<String>> {
        Ok(self.recording()?.activations())
    }

    /// The static batch of the model's inputs, if it declares one.
    fn static_batch(&self) -> PyResult<Option<i64>> {
        let graph = gn_onnx::Graph::new(self.recording()?.model().graph.clone().unwrap_or_default());
        Ok(gn_transpile::static_batch(&graph))
    }

    /// Adds one batch of `rows` inputs: each activation as (shape, float32 bytes in
    /// native order, row-major).
    fn add(&mut self, py: Python<'_>, rows: usize, activations: Vec<(Vec<usize>, Vec<u8>)>) -> PyResult<()> {
        let values: Vec<Vec<f32>> = activations
            .iter()
            .map(|(_, bytes)| bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
            .collect();
        let views: Vec<(&[usize], &[f32])> =
            activations.iter().zip(&values).map(|((shape, _), v)| (shape.as_slice(), v.as_slice())).collect();
        let recording = self.recording.as_mut().ok_or_else(|| PyValueError::new_err("the calibration is finished"))?;
        py.allow_threads(|| recording.add(rows, &views)).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The calibration (JSON), from everything added; the recorder is then spent.
    fn finish(&mut self) -> PyResult<String> {
        let recording = self.recording.take().ok_or_else(|| PyValueError::new_err("the calibration is finished"))?;
        let calibration = recording.finish().map_err(|e| PyValueError::new_err(e.to_string()))?;
        serde_json::to_string(&calibration).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

impl Recorder {
    fn recording(&self) -> PyResult<&Recording> {
        self.recording.as_ref().ok_or_else(|| PyValueError::new_err("the calibration is finished"))
    }
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
    m.add_class::<Recorder>()?;
    m.add("__version__", gn_transpile::VERSION)?;
    Ok(())
}
