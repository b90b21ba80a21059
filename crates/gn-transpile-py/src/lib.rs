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

/// float32 values from their bytes in native order (what numpy's `tobytes()` writes).
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// An array of `shape` from float32 bytes in native order; an error when they do not
/// fill it exactly.
fn array(shape: &[usize], bytes: &[u8]) -> Result<ndarray::ArrayD<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("{} bytes are not a whole number of float32 values", bytes.len()));
    }
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), f32s(bytes)).map_err(|e| e.to_string())
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
    let options = Options {
        neuron,
        tau,
        timesteps: timesteps.unwrap_or(4),
        anytime,
        allow_inexact,
        emit,
        calibration,
        ..Default::default()
    };
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
        let values: Vec<Vec<f32>> = activations.iter().map(|(_, bytes)| f32s(bytes)).collect();
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

/// A [`gn_verify::Runtime`] in Python: `load(model_bytes, optimize)` returns a function
/// that runs the model on a list of (shape, float32 bytes) inputs and returns its
/// outputs alike (the wrapper builds ONNX Runtime sessions).
struct PyRuntime {
    load: Py<PyAny>,
}

struct PyPlan {
    run: Py<PyAny>,
}

fn runtime_error(e: PyErr) -> gn_verify::VerifyError {
    gn_verify::VerifyError::Runtime(Python::with_gil(|py| e.value(py).to_string()))
}

impl gn_verify::Runtime for PyRuntime {
    fn load(
        &self,
        model: &gn_onnx::proto::ModelProto,
        optimize: bool,
    ) -> Result<Box<dyn gn_verify::Plan>, gn_verify::VerifyError> {
        let bytes = gn_onnx::io::encode(model);
        Python::with_gil(|py| {
            let run = self.load.call1(py, (PyBytes::new(py, &bytes), optimize)).map_err(runtime_error)?;
            Ok(Box::new(PyPlan { run }) as Box<dyn gn_verify::Plan>)
        })
    }

    /// ONNX Runtime runs each batch on its own threads.
    fn parallel(&self) -> bool {
        false
    }
}

impl gn_verify::Plan for PyPlan {
    fn run(&self, inputs: Vec<ndarray::ArrayD<f32>>) -> Result<Vec<ndarray::ArrayD<f32>>, gn_verify::VerifyError> {
        let outputs: Vec<(Vec<usize>, Vec<u8>)> = Python::with_gil(|py| {
            let args: Vec<(Vec<usize>, Bound<'_, PyBytes>)> = inputs
                .iter()
                .map(|a| {
                    let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_ne_bytes()).collect();
                    (a.shape().to_vec(), PyBytes::new(py, &bytes))
                })
                .collect();
            self.run.call1(py, (args,)).and_then(|out| out.extract(py)).map_err(runtime_error)
        })?;
        outputs
            .into_iter()
            .map(|(shape, bytes)| {
                array(&shape, &bytes)
                    .map_err(|e| gn_verify::VerifyError::Runtime(format!("an output of the wrong size: {e}")))
            })
            .collect()
    }
}

/// Measures a conversion on ONNX Runtime, as `gn-transpile verify` does on tract; returns
/// the measurement as JSON, its tables, its tables with the per-layer figures, and with
/// `pareto` τ values the accuracy-for-energy chart (SVG).
#[pyfunction]
#[pyo3(signature = (path, data, inputs, labels, tau, timesteps, calibration, energy, pareto, load, progress))]
#[allow(clippy::too_many_arguments)]
fn verify(
    py: Python<'_>,
    path: Option<PathBuf>,
    data: Option<Vec<u8>>,
    inputs: (Vec<usize>, Vec<u8>),
    labels: Option<Vec<usize>>,
    tau: u32,
    timesteps: Vec<usize>,
    calibration: Option<&str>,
    energy: &str,
    pareto: Vec<u32>,
    load: Py<PyAny>,
    progress: Py<PyAny>,
) -> PyResult<(String, String, String, Option<String>)> {
    let model = self::load(path, data.as_deref())?;
    let (shape, bytes) = inputs;
    let x =
        array(&shape, &bytes).map_err(|e| PyValueError::new_err(format!("the inputs do not fill their shape: {e}")))?;
    let calibration = calibration
        .map(|json| serde_json::from_str::<Calibration>(json).map(std::sync::Arc::new))
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("the calibration is not one gn_transpile wrote: {e}")))?;
    let energy: gn_verify::EnergyTable = energy.parse().map_err(PyValueError::new_err)?;
    if timesteps.is_empty() || timesteps.iter().any(|&t| t == 0 || t > gn_transpile::MAX_TIMESTEPS) {
        return Err(PyValueError::new_err(format!(
            "timesteps must list values between 1 and {}",
            gn_transpile::MAX_TIMESTEPS
        )));
    }
    let n = shape.first().copied().unwrap_or(0);
    let spec =
        gn_verify::Spec { calibration, energy, pareto_taus: pareto, ..gn_verify::Spec::for_inputs(n, tau, &timesteps) };
    let runtime = PyRuntime { load };
    let report = |stage: &str, batch: usize, total: usize| {
        Python::with_gil(|py| {
            // A failing progress callback does not stop the measurement.
            let _ = progress.call1(py, (stage, batch, total));
        })
    };
    let m = py
        .allow_threads(|| gn_verify::measure_on(&runtime, &model, &x, labels.as_deref(), &spec, &report))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let json = serde_json::to_string(&m).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let svg = match (&m.pareto, &m.operations) {
        (Some(p), Some(ops)) => Some(p.to_svg("accuracy for energy", m.ann_accuracy, ops.ann_energy_pj)),
        _ => None,
    };
    Ok((json, m.to_markdown(false), m.to_markdown(true), svg))
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
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_class::<Recorder>()?;
    m.add("__version__", gn_transpile::VERSION)?;
    Ok(())
}
