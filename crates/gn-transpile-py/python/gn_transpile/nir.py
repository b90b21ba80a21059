"""NIR export (docs/nir.md): the spiking network that ``convert`` emits, as a ``nir.NIRGraph``.

The network is read from the converted model's custom-op form at one step: each node of
the ``gn.transpile`` domain (``GroupNeuron``, ``IFNeuron`` and their ``PerChannel`` and
``Direct`` variants) becomes a NIR ``IF`` node of threshold θ_GN (θ for IF neurons), the
standard ONNX ops around it ``Conv2d``, ``Affine`` and ``Flatten`` nodes. An ``IF`` node
emits its spike count c where the ONNX layer emits c·θ_GN: that factor is folded into the
weights that read the spikes, or, where spikes reach a sum directly (a residual), into a
diagonal 1×1 ``Conv2d`` (an ``Affine`` on vectors) on that edge. A channel concatenation is
kept as its parts: a Conv or Gemm reading it becomes one node per part (its weight's columns
for that part's channels), summed by the node they feed; pools and Flatten apply part by
part; any other reader gets the parts written into their channels by 1×1 ``Conv2d`` (or
``Affine``) selection nodes, whose outputs are summed.
"""

import collections
import re

import nir
import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from . import __version__, convert

_DOMAIN = "gn.transpile"
_NEURON = re.compile(r"(GroupNeuron|IFNeuron)(PerChannel)?(Direct)?")
_MAX_POOLS = {"MaxPool", "GlobalMaxPool", "ReduceMax"}
# Functions of the spike rates between spiking layers (exact in rate, docs/design.md §5.4).
_RATE = set(
    "Softmax LogSoftmax Sigmoid HardSigmoid HardSwish Gelu Erf Tanh Exp Log Sqrt Pow Reciprocal LayerNormalization "
    "ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare Where Min Max".split()
)
_EXACT_FORM = (
    "to_nir: form 'exact' is not written: it needs NIR I and Threshold nodes and a recurrent edge, "
    "which no consumer imports (snnTorch raises 'Unknown node type', sinabs and Norse fail with a KeyError); "
    "see docs/nir.md"
)
_ONE = np.float32(1)

# One ONNX tensor in NIR terms: the sum of the outputs of ``terms`` (NIR node, scale: the
# factor from the node's output to the ONNX value, a scalar or an array broadcasting to
# ``shape``), ``shape`` without the batch axis, ``spikes`` when it depends on a spiking layer.
_Value = collections.namedtuple("_Value", "terms shape spikes")
# A concatenation along the channel axis (axis 1 of [N, C, H, W] or [N, F]), not yet written as
# NIR nodes: ``parts``, the _Values concatenated along their first axis; ``origin``, the ONNX
# node that names the selection nodes if the concatenation has to be written (``_joined``).
_Concat = collections.namedtuple("_Concat", "parts shape spikes origin")


def to_nir(
    model,
    *,
    tau=4,
    neuron="gn",
    form="if",
    pool="conv",
    calibrate=None,
    percentile=99.9,
    per_channel=False,
    batch=64,
):
    """Converts ``model`` (as ``convert`` does) and returns the spiking network as a ``nir.NIRGraph``.

    tau, neuron, calibrate, percentile, per_channel, batch: as in ``convert``.
    form: "if", each spiking layer one NIR IF node of threshold θ_GN, reset by
        subtraction; its v(0) = θ_GN/2, spike test ``v >= v_threshold`` and at most tau
        spikes per step (1 for IF) are in the node's and the graph's metadata, which a
        consumer applies after import (docs/nir.md). "exact" (the neuron as NIR I,
        Threshold and recurrent Affine nodes) is refused: no consumer imports it.
    pool: "conv" writes each average pool as a Conv2d C→C with 1/k² on the channel
        diagonal (sinabs and Norse cannot import NIR AvgPool2d); "avgpool" writes AvgPool2d.

    The graph takes one image without the batch axis at every step (direct encoding);
    the output averaged over T steps is what the model ``convert(..., timesteps=T)``
    returns. An op NIR cannot hold raises ``ValueError`` naming the ONNX node.
    """
    if form == "exact":
        raise ValueError(_EXACT_FORM)
    if form != "if":
        raise ValueError(f"to_nir: form must be 'if' or 'exact', not {form!r}")
    if pool not in ("conv", "avgpool"):
        raise ValueError(f"to_nir: pool must be 'conv' or 'avgpool', not {pool!r}")
    converted = convert(
        model,
        tau=tau,
        timesteps=1,
        neuron=neuron,
        emit="custom-op",
        calibrate=calibrate,
        percentile=percentile,
        per_channel=per_channel,
        batch=batch,
    )
    return _Export(onnx.load_from_string(converted), pool).graph()


class _Export:
    """The NIR nodes and edges of one converted model, built node by node in graph order."""

    def __init__(self, model, pool):
        self.pool = pool
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.readers = collections.Counter(name for node in model.graph.node for name in node.input if name)
        self.nodes, self.edges, self.values = {}, [], {}
        self.onnx_nodes, self.layers, self.scaled, self.joined = {}, {}, {}, {}
        self.outputs = list(model.graph.output)
        self.meta = {p.key: p.value for p in model.metadata_props}
        self._input(model.graph)
        for node in model.graph.node:
            self._node(node)

    def graph(self):
        """The NIRGraph: the nodes, an Output node reading the model's output, and the metadata."""
        if len(self.outputs) != 1:
            raise ValueError(f"to_nir: the model has {len(self.outputs)} outputs; NIR export takes one")
        value = self._joined(self.values[self.outputs[0].name])
        self.nodes["output"] = nir.Output(output_type=np.array(value.shape))
        sources = self._unscaled(value)
        if len(sources) > 1:  # the importers return one node's output: a sum of several goes through one node
            name = self._add_node(
                self.onnx_nodes.get(sources[0], "input"), "sum", _selection(value.shape, np.ones(value.shape[0]), 0), sources
            )
            sources = [name]
        self._connect(sources, "output")
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=self._metadata())

    def _metadata(self):
        """The semantics a consumer needs beyond the NIR nodes (docs/nir.md)."""
        tau = int(self.meta["gn_transpile.tau"])
        return {
            "generator": f"gn_transpile {__version__}",
            "neuron": self.meta["gn_transpile.neuron"],
            "tau": tau,
            "form": "if",
            "pool": self.pool,
            "encoding": "direct: the input is presented unchanged at every step",
            "readout": "the output averaged over the steps",
            "spike_test": "v >= v_threshold",
            "max_spikes_per_step": tau,
            "spikes": "count = clip(floor(v / v_threshold), 0, max_spikes_per_step)",
            "reset": "subtract: v -= count * v_threshold",
            "leak": "none",
            "v_init": "v_threshold / 2: each IF node's metadata v_init",
            "theta_gn": {name: layer["theta_gn"] for name, layer in self.layers.items()},
            "theta": {name: layer["theta"] for name, layer in self.layers.items()},
            "onnx_nodes": self.onnx_nodes,
        }

    def _input(self, graph):
        """The Input node: the model's one input, without its batch axis."""
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ValueError(f"to_nir: the model has {len(inputs)} inputs; NIR export takes one")
        dims = inputs[0].type.tensor_type.shape.dim[1:]
        if not all(d.HasField("dim_value") for d in dims):
            raise ValueError(f"to_nir: input {inputs[0].name} needs a fixed shape after the batch axis")
        shape = tuple(d.dim_value for d in dims)
        self.nodes["input"] = nir.Input(input_type=np.array(shape))
        self.values[inputs[0].name] = _Value([("input", _ONE)], shape, False)

    def _node(self, node):
        """Maps one ONNX node: a spiking layer, a constant to fold, or a linear op."""
        if node.domain == _DOMAIN:
            self._neuron(node)
        elif all(name in self.constants for name in node.input if name):
            inputs = {name: self.constants[name] for name in node.input if name}
            self.constants.update(zip(node.output, ReferenceEvaluator(node).run(None, inputs)))
        elif node.op_type in _OPS:
            _OPS[node.op_type](self, node)
        else:
            raise _refuse(node, _reason(node, self._reads_spikes(node)))

    def _reads_spikes(self, node):
        return any(self.values[name].spikes for name in node.input if name in self.values)

    # --- spiking layers

    def _neuron(self, node):
        """A gn.transpile node: a NIR IF of threshold θ_GN (per channel: θ_GN·θ_c), v(0) in metadata."""
        kind = _NEURON.fullmatch(node.op_type)
        if kind is None:
            raise _refuse(node, "not a spiking layer of the gn.transpile domain")
        group, per_channel = kind.group(1) == "GroupNeuron", kind.group(2) is not None
        attrs = _attributes(node)
        value = self._value(node, node.input[0])
        factors = self._channel_factors(node, value.shape) if per_channel else _ONE
        unit = (np.float32(attrs["theta_gn"] if group else attrs["theta"]) * factors).astype(np.float32)
        v_init = np.broadcast_to(np.float32(attrs["v_init"]) * factors, value.shape).astype(np.float32)
        tau = int(attrs["tau"]) if group else 1
        name = self._name(node.name)
        self.nodes[name] = nir.IF(
            r=np.ones(value.shape, np.float32),
            v_threshold=np.broadcast_to(unit, value.shape).astype(np.float32),
            metadata={
                "onnx_node": node.name,
                "tau": tau,
                "max_spikes_per_step": tau,
                "v_init": v_init,
                "spike_test": "v >= v_threshold",
                "reset": "subtract",
            },
        )
        self.onnx_nodes[name] = node.name
        self.layers[name] = {"theta_gn": unit, "theta": np.float32(attrs["theta"]) * factors}
        self._connect(self._unscaled(value), name)
        self.values[node.output[0]] = _Value([(name, unit)], value.shape, True)

    def _channel_factors(self, node, shape):
        """θ_c of a per-channel layer, shaped to broadcast over ``shape`` along its channel axis."""
        factors = self._constant(node, node.input[1])
        expected = (1, shape[0]) + (1,) * (len(shape) - 1)
        if factors.shape != expected:
            raise _refuse(node, f"the channel factors have shape {list(factors.shape)}, not {list(expected)}")
        return factors[0].astype(np.float32)

    # --- linear ops

    def _conv(self, node):
        """Conv → Conv2d; a grouped convolution becomes its dense equivalent (block-diagonal weights).
        On a concatenation, one Conv2d per part, of the weight's input channels for that part."""
        value = self._lazy(node, node.input[0])
        attrs = _attributes(node)
        weight = self._constant(node, node.input[1])
        if weight.ndim != 4 or len(value.shape) != 3:
            raise _refuse(node, "only 2-D convolutions map to NIR Conv2d")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            raise _refuse(node, "auto_pad SAME_*: NIR Conv2d takes explicit symmetric padding")
        padding = self._symmetric(node, attrs.get("pads", [0] * 4))
        bias = self._constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(len(weight))
        weight = _dense(weight, attrs.get("group", 1))
        stride, dilation = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])

        def part(value, channels, first):
            sources, scale = self._common_scale(value)
            w = weight[:, channels] * _per_channel(scale, value.shape)[None, :, None, None]
            return _conv2d(value.shape, w, stride, padding, dilation, bias if first else np.zeros(len(weight))), sources

        self._split(node, value, part)

    def _batch_norm(self, node):
        """BatchNormalization after a Conv (or a channel Concat, then its selection nodes): folded into the weights and bias."""
        convs = self._only_reader_of(
            node, node.input[0], nir.Conv2d, "a BatchNormalization maps only directly after a Conv or a channel Concat"
        )
        gamma, beta, mean, var = (self._constant(node, name).astype(np.float64) for name in node.input[1:5])
        k = gamma / np.sqrt(var + _attributes(node).get("epsilon", 1e-5))
        for i, conv in enumerate(convs):  # the shift once: the convolution is the sum of the nodes
            shift, offset = (mean, beta) if i == 0 else (0, 0)
            conv.weight = (conv.weight * k[:, None, None, None]).astype(np.float32)
            conv.bias = ((conv.bias - shift) * k + offset).astype(np.float32)
        self.values[node.output[0]] = self.values[node.input[0]]

    def _gemm(self, node):
        """Gemm → Affine (weight alpha·B', bias beta·C)."""
        value = self._lazy(node, node.input[0])
        attrs = _attributes(node)
        if attrs.get("transA", 0) or len(value.shape) != 1:
            raise _refuse(node, "only a Gemm of [batch, features] by a constant maps to NIR Affine")
        b = self._constant(node, node.input[1])
        weight = (b if attrs.get("transB", 0) else b.T) * np.float32(attrs.get("alpha", 1.0))
        bias = np.zeros(len(weight))
        if len(node.input) > 2 and node.input[2]:
            c = self._constant(node, node.input[2]) * np.float32(attrs.get("beta", 1.0))
            bias = np.broadcast_to(c, (1, len(weight))).reshape(-1)
        self._affine(node, value, weight, bias)

    def _matmul(self, node):
        """MatMul of [batch, features] by a constant matrix → Affine of bias 0 (a following Add of a constant sets it)."""
        value = self._lazy(node, node.input[0])
        if node.input[1] not in self.constants or len(value.shape) != 1:
            raise _refuse(node, "only a MatMul of [batch, features] by a constant matrix maps to NIR Affine")
        weight = self.constants[node.input[1]].T
        self._affine(node, value, weight, np.zeros(len(weight)))

    def _affine(self, node, value, weight, bias):
        """An Affine; on a concatenation, one Affine per part, of the weight's columns for that part."""

        def part(value, columns, first):
            sources, scale = self._common_scale(value)
            b = bias if first else np.zeros(len(weight))
            return nir.Affine(weight=(weight[:, columns] * scale).astype(np.float32), bias=np.asarray(b, np.float32)), sources

        self._split(node, value, part)

    def _add(self, node):
        """Add: of a constant, into the bias of the Conv or Affine before it; of two tensors, their
        terms (NIR sums the edges into a node)."""
        a, b = node.input
        if a in self.constants or b in self.constants:
            constant, tensor = (a, b) if a in self.constants else (b, a)
            self._add_bias(node, tensor, self.constants[constant])
            return
        x, y = self._value(node, a), self._value(node, b)
        if x.shape != y.shape:
            raise _refuse(node, f"adds shapes {list(x.shape)} and {list(y.shape)}: NIR sums edges of one shape only")
        if {t for t, _ in x.terms} & {t for t, _ in y.terms}:
            raise _refuse(node, "adds a tensor to itself: NIR edges between two nodes are one edge")
        self.values[node.output[0]] = _Value(x.terms + y.terms, x.shape, x.spikes or y.spikes)

    def _add_bias(self, node, tensor, constant):
        target = self._only_reader_of(
            node, tensor, (nir.Conv2d, nir.Affine), "adds a constant that no Conv or Affine before it can hold"
        )[0]
        shape = self.values[tensor].shape
        full = np.broadcast_to(constant, (1, *shape)).reshape(shape)
        per_channel = full.reshape(shape[0], -1)
        if not (per_channel == per_channel[:, :1]).all():
            raise _refuse(node, "adds a constant that varies within a channel: a NIR bias is one value per channel")
        target.bias = (target.bias + per_channel[:, 0]).astype(np.float32)
        self.values[node.output[0]] = self.values[tensor]

    # --- pools and shapes

    def _average_pool(self, node):
        attrs = _attributes(node)
        kernel = attrs["kernel_shape"]
        pads = attrs.get("pads", [0] * 4)
        if attrs.get("ceil_mode", 0):
            raise _refuse(node, "ceil_mode=1: NIR pools and convolutions round the output size down")
        if any(pads) and not attrs.get("count_include_pad", 0):
            raise _refuse(node, "count_include_pad=0 with padding: a NIR pool divides by the whole window")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID") or any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise _refuse(node, "only explicit symmetric padding and dilation 1 map to a NIR pool")
        self._pool(node, kernel, attrs.get("strides", [1] * len(kernel)), self._symmetric(node, pads))

    def _global_average_pool(self, node):
        shape = self._lazy(node, node.input[0]).shape
        self._pool(node, shape[1:], shape[1:], [0, 0])

    def _reduce_mean(self, node):
        """ReduceMean over the two spatial axes of [batch, C, H, W]: a global average pool."""
        attrs = _attributes(node)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._constant(node, node.input[1]).tolist()
        shape = self._lazy(node, node.input[0]).shape
        if len(shape) != 3 or sorted(a % 4 for a in axes or []) != [2, 3]:
            raise _refuse(node, "only a mean over the spatial axes of [batch, C, H, W] maps to a NIR pool")
        self._pool(node, shape[1:], shape[1:], [0, 0])
        if not attrs.get("keepdims", 1):
            self._flatten(node, self.values[node.output[0]], "flat")

    def _pool(self, node, kernel, stride, padding):
        """An average pool: a diagonal Conv2d C→C of 1/k² (pool="conv") or an AvgPool2d; part by part on a concatenation."""
        value = self._lazy(node, node.input[0])
        if len(value.shape) != 3:
            raise _refuse(node, "only 2-D pools of [batch, C, H, W] map to NIR")

        def part(value, suffix):
            sources, scale = self._common_scale(value)
            channels = value.shape[0]
            if self.pool == "conv":
                weight = np.zeros((channels, channels, *kernel), np.float32)
                weight[np.arange(channels), np.arange(channels)] = (_per_channel(scale, value.shape) / np.prod(kernel))[
                    :, None, None
                ]
                return self._emit(
                    node, _conv2d(value.shape, weight, stride, padding, [1, 1], np.zeros(channels)), sources, _ONE, suffix
                )
            pool = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
            pool.input_type = {"input": np.array(value.shape)}
            pool.output_type = {"output": np.array(_pooled_shape(value.shape, kernel, stride, padding, [1, 1]))}
            return self._emit(node, pool, sources, scale, suffix)

        self.values[node.output[0]] = self._per_part(node, value, part)

    def _flatten_op(self, node):
        value = self._lazy(node, node.input[0])
        if _attributes(node).get("axis", 1) not in (1, -len(value.shape)):
            raise _refuse(node, "only a Flatten to [batch, features] maps to NIR Flatten")
        self._flatten(node, value)

    def _reshape(self, node):
        """A Reshape to [batch, features] (target [-1|0|1, F|-1]) is a Flatten."""
        value = self._lazy(node, node.input[0])
        target = self.constants.get(node.input[1])
        features = int(np.prod(value.shape))
        flat = target is not None and len(target) == 2 and target[0] in (-1, 0, 1) and target[1] in (-1, features)
        if not flat or target[0] == target[1] == -1:
            raise _refuse(node, "only a Reshape to [batch, features] by a constant target maps to NIR Flatten")
        self._flatten(node, value)

    def _flatten(self, node, value, suffix=""):
        """A Flatten of the dimensions after the batch (negative dims, as every consumer reads them); part by
        part on a concatenation of channels, whose flattened parts are the features in order."""
        if len(value.shape) == 1:
            self.values[node.output[0]] = value
            return

        def part(value, suffix):
            sources, scale = self._common_scale(value)
            flat = nir.Flatten(input_type={"input": np.array(value.shape)}, start_dim=-len(value.shape), end_dim=-1)
            if np.ndim(scale):
                scale = np.broadcast_to(scale, value.shape).reshape(-1)
            return self._emit(node, flat, sources, scale, suffix)

        self.values[node.output[0]] = self._per_part(node, value, part, suffix)

    def _identity(self, node):
        self.values[node.output[0]] = self._lazy(node, node.input[0])

    def _concat(self, node):
        """Concat of the channel axis: kept as its parts (a nested concatenation's parts included); the ops
        reading it split along them (``_split``, ``_per_part``) or write it (``_joined``)."""
        names = [name for name in node.input if name]
        if any(name in self.constants for name in names):
            raise _refuse(node, "concatenates a constant: NIR export maps only concatenations of computed tensors")
        parts = [part for name in names for part in _parts(self._lazy(node, name))]
        axis = _attributes(node).get("axis", 1)
        if axis % (len(parts[0].shape) + 1) != 1:
            raise _refuse(node, f"concatenates along axis {axis}: NIR export maps only a concatenation of channels (axis 1)")
        shape = (sum(part.shape[0] for part in parts), *parts[0].shape[1:])
        self.values[node.output[0]] = _Concat(parts, shape, any(part.spikes for part in parts), node.name)

    # --- bookkeeping

    def _emit(self, node, nir_node, sources, scale=_ONE, suffix=""):
        """Adds ``nir_node`` for ONNX ``node`` with edges from ``sources``; returns its output times ``scale`` as a value."""
        name = self._add_node(node.name, suffix, nir_node, sources)
        return _Value([(name, scale)], _output_shape(nir_node), self._reads_spikes(node))

    def _add_node(self, onnx_name, suffix, nir_node, sources):
        name = self._name(onnx_name + ("_" + suffix if suffix else ""))
        self.nodes[name] = nir_node
        self.onnx_nodes[name] = onnx_name
        self._connect(sources, name)
        return name

    def _connect(self, sources, target):
        self.edges.extend((source, target) for source in sources)

    def _split(self, node, value, part):
        """A linear op (Conv, Gemm) on ``value``: ``part(piece, input channels, first)`` → (NIR node, sources) for each
        part of a concatenation; the output is the sum of the parts' nodes (the bias on the first only)."""
        terms, offset = [], 0
        for i, piece in enumerate(_parts(value)):
            nir_node, sources = part(piece, slice(offset, offset + piece.shape[0]), i == 0)
            terms.append((self._add_node(node.name, _suffix(i, value), nir_node, sources), _ONE))
            offset += piece.shape[0]
        self.values[node.output[0]] = _Value(terms, _output_shape(nir_node), self._reads_spikes(node))

    def _per_part(self, node, value, part, suffix=""):
        """An op acting on each channel alone (pool, Flatten): ``part(piece, suffix)`` → _Value for each part of a
        concatenation; the output is the concatenation of the results."""
        if not isinstance(value, _Concat):
            return part(value, suffix)
        outputs = [part(piece, "_".join(filter(None, [suffix, _suffix(i, value)]))) for i, piece in enumerate(value.parts)]
        shape = (sum(out.shape[0] for out in outputs), *outputs[0].shape[1:])
        return _Concat(outputs, shape, value.spikes, node.name)

    def _joined(self, value):
        """A concatenation as NIR nodes: each part written into its channels by a selection node (a 1×1 Conv2d of
        [C, C_part], an Affine for vectors; the part's spike unit folded in), the value their sum. Once per value."""
        if not isinstance(value, _Concat):
            return value
        if id(value) not in self.joined:
            terms, offset = [], 0
            for i, part in enumerate(value.parts):
                sources, scale = self._common_scale(part)
                selection = _selection(value.shape, _per_channel(scale, part.shape), offset, part.shape[0])
                terms.append((self._add_node(value.origin, _suffix(i, value), selection, sources), _ONE))
                offset += part.shape[0]
            self.joined[id(value)] = (value, _Value(terms, value.shape, value.spikes))
        return self.joined[id(value)][1]

    def _common_scale(self, value):
        """(sources, scale): NIR nodes whose summed outputs times ``scale`` are the value."""
        scales = [scale for _, scale in value.terms]
        if all(np.array_equal(s, scales[0]) for s in scales):
            return [term for term, _ in value.terms], scales[0]
        return self._unscaled(value), _ONE

    def _unscaled(self, value):
        """NIR nodes whose summed outputs are the value: a term of scale s ≠ 1 goes through a diagonal node of s."""
        return [self._times(term, scale, value.shape) for term, scale in value.terms]

    def _times(self, term, scale, shape):
        """A node multiplying ``term``'s output by ``scale``: a 1×1 Conv2d (an Affine for vectors), once per term."""
        if np.all(scale == 1):
            return term
        if term not in self.scaled:
            name = self._name(term + "_scale")
            self.nodes[name] = _selection(shape, _per_channel(scale, shape))
            self.onnx_nodes[name] = self.onnx_nodes[term]
            self._connect([term], name)
            self.scaled[term] = name
        return self.scaled[term]

    def _only_reader_of(self, node, tensor, kinds, reason):
        """The Conv2d or Affine nodes of one ONNX node (several: split over a concatenation) whose summed outputs
        are ``tensor``, when ``node`` is its only reader."""
        value = self._value(node, tensor)
        terms = [term for term, _ in value.terms]
        if (
            self.readers[tensor] == 1
            and len({self.onnx_nodes.get(term) for term in terms}) == 1
            and all(isinstance(self.nodes[term], kinds) and np.all(scale == 1) for term, scale in value.terms)
        ):
            return [self.nodes[term] for term in terms]
        raise _refuse(node, reason)

    def _value(self, node, name):
        """The value of tensor ``name`` as NIR nodes (a concatenation written by ``_joined``)."""
        return self._joined(self._lazy(node, name))

    def _lazy(self, node, name):
        """The value of tensor ``name``: a _Value, or a _Concat its reader may split along."""
        if name not in self.values:
            raise _refuse(node, f"reads {name}, which is neither a constant nor mapped")
        return self.values[name]

    def _constant(self, node, name):
        if name not in self.constants:
            raise _refuse(node, f"input {name} is not a constant")
        return self.constants[name]

    def _symmetric(self, node, pads):
        half = len(pads) // 2
        if list(pads[:half]) != list(pads[half:]):
            raise _refuse(node, f"asymmetric padding {list(pads)}: NIR pads both sides alike")
        return list(pads[:half])

    def _name(self, onnx_name):
        """A NIR node name: the ONNX name as an identifier (torch module names), unique, never input/output."""
        base = re.sub(r"[^0-9A-Za-z]+", "_", onnx_name).strip("_") or "node"
        base = "n_" + base if base[0].isdigit() else base
        name, k = base, 1
        while name in self.nodes or name in ("input", "output"):
            k += 1
            name = f"{base}_{k}"
        return name


_OPS = {
    "Conv": _Export._conv,
    "BatchNormalization": _Export._batch_norm,
    "Gemm": _Export._gemm,
    "MatMul": _Export._matmul,
    "Add": _Export._add,
    "AveragePool": _Export._average_pool,
    "GlobalAveragePool": _Export._global_average_pool,
    "ReduceMean": _Export._reduce_mean,
    "Flatten": _Export._flatten_op,
    "Reshape": _Export._reshape,
    "Identity": _Export._identity,
    "Dropout": _Export._identity,
    "Concat": _Export._concat,
}


def _reason(node, spikes):
    """Why NIR cannot hold ``node``."""
    op = node.op_type
    if op in _MAX_POOLS and spikes:
        return "a max-pool on spikes runs on their running sums (exact in rate, docs/design.md §5.4): NIR has no max-pool node"
    if op in _MAX_POOLS:
        return "NIR has no max-pool node"
    if op in _RATE and spikes:
        return f"{op} of spikes is a function of their rates (exact in rate, docs/design.md §5.4): NIR has no node for it"
    return f"NIR export maps no {op}"


def _refuse(node, reason):
    return ValueError(f"to_nir: node {node.name} ({node.op_type}): {reason}")


def _attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dense(weight, groups):
    """The weight of a grouped convolution as a dense one: zero outside the block diagonal."""
    if groups == 1:
        return weight
    out, per_group = weight.shape[:2]
    dense = np.zeros((out, per_group * groups, *weight.shape[2:]), weight.dtype)
    step = out // groups
    for g in range(groups):
        dense[g * step : (g + 1) * step, g * per_group : (g + 1) * per_group] = weight[g * step : (g + 1) * step]
    return dense


def _parts(value):
    """The parts of a concatenation along its first axis; a value that is not one is its own part."""
    return list(value.parts) if isinstance(value, _Concat) else [value]


def _suffix(i, value):
    """The NIR name suffix of part i of ``value``: none when it is a single part."""
    return f"part{i}" if isinstance(value, _Concat) and len(value.parts) > 1 else ""


def _output_shape(nir_node):
    return tuple(int(d) for d in nir_node.output_type["output"])


def _selection(shape, diagonal, offset=0, channels=None):
    """A node writing its input (of ``shape``, ``channels`` channels) times ``diagonal`` (one factor per channel) into
    the channels offset… of ``shape``: a 1×1 Conv2d on [C, H, W], an Affine on [F]."""
    channels = shape[0] if channels is None else channels
    weight = np.zeros((shape[0], channels), np.float32)
    weight[offset + np.arange(channels), np.arange(channels)] = diagonal
    if len(shape) == 3:
        return _conv2d((channels, *shape[1:]), weight[:, :, None, None], [1, 1], [0, 0], [1, 1], np.zeros(shape[0]))
    return nir.Affine(weight=weight, bias=np.zeros(shape[0], np.float32))


def _per_channel(scale, shape):
    """A scale broadcasting over ``shape`` as one factor per channel (axis 0)."""
    return np.broadcast_to(scale, shape).reshape(shape[0], -1)[:, 0].astype(np.float32)


def _pooled_shape(shape, kernel, stride, padding, dilation):
    """[C', H', W'] of a 2-D convolution or pool, rounding down."""
    spatial = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(shape[1:], kernel, stride, padding, dilation)]
    return [shape[0], *spatial]


def _conv2d(shape, weight, stride, padding, dilation, bias):
    """A NIR Conv2d on [C, H, W] with its output type (nir 1.0.4 sizes both axes by the kernel's height)."""
    conv = nir.Conv2d(
        input_shape=tuple(shape[1:]),
        weight=np.asarray(weight, np.float32),
        stride=tuple(stride),
        padding=tuple(padding),
        dilation=tuple(dilation),
        groups=1,
        bias=np.asarray(bias, np.float32),
    )
    conv.output_type = {"output": np.array(_pooled_shape((len(weight), *shape[1:]), weight.shape[2:], stride, padding, dilation))}
    return conv
