"""gn-transpile: QCFS ANN in, Group-Neuron spiking network out, both ONNX.

    import gn_transpile
    snn_bytes = gn_transpile.convert("ann.onnx", tau=4, timesteps=4)
    audit = gn_transpile.inspect("ann.onnx")

    # A ReLU network: θ of each activation from sample inputs, on ONNX Runtime.
    snn_bytes = gn_transpile.convert("relu.onnx", calibrate=images, per_channel=True)

    # The custom-op form on ONNX Runtime with the fused kernels (gn-ort-ops):
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(gn_transpile.ort_ops_library())

    # ANN against IF and GN per T on your data, with the cost report (ONNX Runtime):
    result = gn_transpile.verify("ann.onnx", images, labels, timesteps=(1, 2, 4, 8))
    print(result.to_markdown())

    # The spiking network as a NIR graph (needs the nir and onnx packages, docs/nir.md):
    graph = gn_transpile.to_nir("ann.onnx", tau=4)

``model`` is a path (external data is read beside it), the model's bytes, or an
``onnx.ModelProto``. Errors raise ``ValueError`` with the command's one-line message.
"""

import json
import os

from . import _native

__all__ = ["calibrate", "convert", "inspect", "ort_ops_library", "to_nir", "verify", "Verification", "__version__"]
__version__ = _native.__version__


def _source(model):
    """(path, bytes) for the native functions: one of them is None."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model), None
    if isinstance(model, (bytes, bytearray, memoryview)):
        return None, bytes(model)
    serialize = getattr(model, "SerializeToString", None)
    if callable(serialize):
        return None, serialize()
    raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, not {type(model).__name__}")


def convert(
    model,
    *,
    tau=4,
    timesteps=None,
    neuron="gn",
    emit="standard",
    anytime=False,
    allow_inexact=False,
    calibrate=None,
    percentile=99.9,
    per_channel=False,
    batch=64,
):
    """Converts a QCFS ANN (or, with ``calibrate``, a ReLU network) into a spiking
    network; returns the model's bytes.

    tau: members per Group Neuron (member i fires at i*theta/tau).
    timesteps: time steps unrolled into the graph (default 4; not with emit="stateful").
    neuron: "gn" (Group Neurons) or "if" (integrate-and-fire, the baseline).
    emit: "standard" (standard ONNX ops), "custom-op" (one gn.transpile node per layer)
        or "stateful" (one step per call, state listed in metadata gn_transpile.state).
    anytime: also output ``{y}_anytime``, the readout after every step.
    allow_inexact: convert ops that are neither exact in time nor in rate (random ops) anyway.
    calibrate: sample inputs (an array with the batch on axis 0, or the path of a float32
        .npy file) from which each ReLU-family activation's threshold is set, or a
        calibration ``calibrate()`` returned; ``percentile``, ``per_channel`` and ``batch``
        are as in ``calibrate()``.
    """
    path, data = _source(model)
    calibration = _calibration_json(model, calibrate, percentile, per_channel, batch)
    return _native.convert(path, data, tau, timesteps, neuron, emit, anytime, allow_inexact, calibration)


def calibrate(model, inputs, *, percentile=99.9, per_channel=False, batch=64, progress=None):
    """Sets the threshold of each ReLU-family activation of ``model`` from its values on
    ``inputs`` (an array with the batch on axis 0, or the path of a float32 .npy file,
    read a batch at a time); returns the calibration, a dict that ``convert(...,
    calibrate=...)`` takes.

    The model runs on ONNX Runtime with the activations as extra outputs; the histograms
    and the choice of theta are the command line's (``gn-transpile --calibrate``), so the
    same inputs give the same thresholds. percentile: of each activation's values (100 =
    the maximum). per_channel: theta per output channel (axis 1). batch: inputs per run
    (a model with a static batch runs its own). progress: called as ``progress(done,
    total)`` after each batch; by default a tqdm bar where tqdm is installed.
    """
    import numpy as np
    import onnxruntime as ort

    path, data = _source(model)
    recorder = _native.Recorder(path, data, float(percentile), bool(per_channel))
    if isinstance(inputs, (str, os.PathLike)):
        inputs = np.load(os.fspath(inputs), mmap_mode="r")
    if getattr(inputs, "ndim", 0) < 1 or len(inputs) == 0:
        raise ValueError("calibrate: the inputs need the batch on axis 0 and at least one input")
    static = recorder.static_batch()
    if static is not None:
        batch = static
        if len(inputs) % static:
            raise ValueError(
                f"calibrate: the model's inputs have a static batch of {static}, and {len(inputs)} inputs are not a multiple of it"
            )
    session = ort.InferenceSession(recorder.model(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    names = recorder.activations()
    progress = progress or _progress_bar(len(inputs))
    for start in range(0, len(inputs), batch):
        chunk = np.ascontiguousarray(inputs[start : start + batch], dtype=np.float32)
        outputs = session.run(names, {feed: chunk})
        recorder.add(len(chunk), [(list(a.shape), np.ascontiguousarray(a, dtype=np.float32).tobytes()) for a in outputs])
        progress(min(start + batch, len(inputs)), len(inputs))
    return json.loads(recorder.finish())


_calibrate = calibrate


def _calibration_json(model, calibrate, percentile, per_channel, batch):
    """The native functions' calibration: ``calibrate`` run on inputs (an array or a path),
    or a calibration ``calibrate()`` returned, as JSON; None without one."""
    if calibrate is None:
        return None
    if not isinstance(calibrate, dict):
        calibrate = _calibrate(model, calibrate, percentile=percentile, per_channel=per_channel, batch=batch)
    return json.dumps(calibrate)


def _progress_bar(total):
    """A tqdm bar where tqdm is installed and the run is long, else nothing."""
    bars = _stage_bars(total)
    return lambda done, total: bars("calibrating", done, total)


class Verification(dict):
    """What ``verify`` measured, as a dict (the command line's ``--json``), with the
    command line's tables as ``to_markdown()`` and, when ``verify`` was given ``pareto``,
    the accuracy-for-energy chart as ``pareto_svg()``."""

    def __init__(self, figures, markdown, markdown_per_layer, svg=None):
        super().__init__(figures)
        self._markdown = (markdown, markdown_per_layer)
        self._svg = svg

    def pareto_svg(self, path=None):
        """The chart of accuracy (MSE without labels) against energy per input, a line per
        network through its T, the points no other point beats ringed (``gn-transpile
        verify --pareto --plot``), as SVG text; also written to ``path`` when given."""
        if self._svg is None:
            raise ValueError("no accuracy-for-energy chart: call verify with pareto=(1, 2, 4, 8)")
        if path is not None:
            with open(os.fspath(path), "w", encoding="utf-8") as f:
                f.write(self._svg)
        return self._svg

    def to_markdown(self, per_layer=False):
        """The tables ``gn-transpile verify`` prints (``--per-layer``: with each weighted
        op's and spiking layer's figures)."""
        return self._markdown[1 if per_layer else 0]

    def to_json(self, **kwargs):
        """The figures as JSON (``json.dumps`` keyword arguments apply)."""
        return json.dumps(self, **kwargs)


def verify(
    model,
    data,
    labels=None,
    *,
    tau=4,
    timesteps=(1, 2, 4, 8),
    calibrate=None,
    percentile=99.9,
    per_channel=False,
    energy="45nm-fp32",
    pareto=None,
    progress=None,
):
    """Runs the ANN and its IF and GN conversions on ONNX Runtime and measures them, as
    ``gn-transpile verify`` does on tract: output MSE and top-1 accuracy per T, the
    tau = L, T = 1 check, the stateful form against the unrolled one, per-layer errors
    and firing rates, and the cost per input (accumulates, multiply-accumulates, spikes,
    activation sparsity, membrane updates, energy; NeuroBench's names, docs/cost.md).
    Returns a ``Verification``: a dict, with ``to_markdown()`` and ``to_json()``.

    data: inputs, an array with the batch on axis 0 or the path of a float32 .npy file.
    labels: one integer per input (an array or a .npy path), for accuracy.
    tau: members per Group Neuron. timesteps: the T values reported.
    calibrate: for a ReLU network, as in ``convert`` (inputs, a path, or a calibration).
    energy: "45nm-fp32" (4.6 pJ per MAC, 0.9 pJ per AC), "45nm-fp16", "45nm-int8", or
        "mac=PJ,ac=PJ".
    pareto: tau values (True: 1, 2, 4, 8; tau = 1 is IF): also measure GN at each, at the
        T up to 8, for the accuracy-for-energy table (``pareto`` in the result, the points
        no other point beats marked) and chart (``pareto_svg()``).
    progress: called as ``progress(stage, done, total)``; by default a tqdm bar per stage
        where tqdm is installed and the run is long.
    """
    import numpy as np
    import onnxruntime as ort

    path, bytes_ = _source(model)
    if isinstance(data, (str, os.PathLike)):
        data = np.load(os.fspath(data))
    x = np.ascontiguousarray(data, dtype=np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError("verify: the inputs need the batch on axis 0 and at least one input")
    if labels is not None:
        if isinstance(labels, (str, os.PathLike)):
            labels = np.load(os.fspath(labels))
        labels = [int(v) for v in np.asarray(labels).reshape(-1)]
        if any(v < 0 for v in labels):
            raise ValueError("verify: labels are class indices, 0 or more")
    calibration = _calibration_json(model, calibrate, percentile, per_channel, 64)
    if pareto is True:
        pareto = (1, 2, 4, 8)
    pareto = [int(k) for k in (pareto or ())]

    def load(model_bytes, optimize):
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(bytes(model_bytes), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(inputs):
            feed = {n: np.frombuffer(b, dtype=np.float32).reshape(shape) for n, (shape, b) in zip(names, inputs)}
            return [(list(r.shape), np.ascontiguousarray(r, dtype=np.float32).tobytes()) for r in session.run(None, feed)]

        return run

    progress = progress or _stage_bars(len(x))
    figures, markdown, per_layer, svg = _native.verify(
        path,
        bytes_,
        (list(x.shape), x.tobytes()),
        labels,
        int(tau),
        [int(t) for t in timesteps],
        calibration,
        str(energy),
        pareto,
        load,
        progress,
    )
    return Verification(json.loads(figures), markdown, per_layer, svg)


def _stage_bars(total):
    """A tqdm bar per stage, closed when the stage is done, where tqdm is installed and
    the run is long (``total`` inputs), else nothing."""
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda stage, done, total: None
    if total < 1000:
        return lambda stage, done, total: None
    bars = {}

    def update(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, unit="inputs", desc=stage)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def inspect(model):
    """Audits a model without converting it; returns a dict.

    For an ANN: "sites" (name, input, output, theta, levels, nodes, values, ops,
    per_channel), "near_misses" (node, ops, reason, fatal), "moves", "time_invariant",
    "exact", "rate", "inexact", "refused" (node, op, reason), "weighted" (node, op, and
    "spikes" or "analog": what it reads once converted), "per_step" (node, op, reason:
    linear nodes along axis 0, run once per step), "tensors" ("spikes", "analog_steps",
    "analog_once": the values by what they carry once converted), "warnings", and
    "other_activations" and "relu_sites" when there is no QCFS activation. For a converted
    model: "converted" (neuron, tau, timesteps, form, layers, functions, states, nodes).
    """
    path, data = _source(model)
    return json.loads(_native.inspect(path, data))


def ort_ops_library():
    """The path of the fused-kernel library for ONNX Runtime (gn-ort-ops).

    Register it with ``SessionOptions.register_custom_ops_library`` before creating a
    session for a model converted with ``emit="custom-op"``: each ``gn.transpile`` node then
    runs as one fused kernel (ONNX Runtime 1.17 or later) instead of its model-local
    function. The results are the same. The library is this package's native module,
    which exports ONNX Runtime's ``RegisterCustomOps`` entry point.
    """
    return os.path.abspath(_native.__file__)


def __getattr__(name):
    """``to_nir`` (``gn_transpile.nir``), imported on first use: it needs the ``nir`` and ``onnx`` packages."""
    if name == "to_nir":
        from .nir import to_nir

        return to_nir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
