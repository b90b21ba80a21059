"""gn-transpile: QCFS ANN in, Group-Neuron spiking network out, both ONNX.

    import gn_transpile
    snn_bytes = gn_transpile.convert("ann.onnx", tau=4, timesteps=4)
    audit = gn_transpile.inspect("ann.onnx")

    # The custom-op form on ONNX Runtime with the fused kernels (gn-ort-ops):
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(gn_transpile.ort_ops_library())

``model`` is a path (external data is read beside it), the model's bytes, or an
``onnx.ModelProto``. Errors raise ``ValueError`` with the command's one-line message.
"""

import json
import os

from . import _native

__all__ = ["convert", "inspect", "ort_ops_library", "__version__"]
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


def convert(model, *, tau=4, timesteps=None, neuron="gn", emit="standard", anytime=False, allow_inexact=False):
    """Converts a QCFS ANN into a spiking network; returns the model's bytes.

    tau: members per Group Neuron (member i fires at i*theta/tau).
    timesteps: time steps unrolled into the graph (default 4; not with emit="stateful").
    neuron: "gn" (Group Neurons) or "if" (integrate-and-fire, the baseline).
    emit: "standard" (standard ONNX ops), "custom-op" (one gn.transpile node per layer)
        or "stateful" (one step per call, state listed in metadata gn_transpile.state).
    anytime: also output ``{y}_anytime``, the readout after every step.
    allow_inexact: convert ops that are neither exact in time nor in rate (random ops) anyway.
    """
    path, data = _source(model)
    return _native.convert(path, data, tau, timesteps, neuron, emit, anytime, allow_inexact)


def inspect(model):
    """Audits a model without converting it; returns a dict.

    For an ANN: "sites" (name, theta, levels, input, ops), "near_misses", "moves",
    "time_invariant", "exact", "rate", "inexact", "refused" (node, op, reason), and
    "other_activations" when there is no QCFS activation. For a converted model:
    "converted" (neuron, tau, timesteps, form, layers, functions, states, nodes).
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
