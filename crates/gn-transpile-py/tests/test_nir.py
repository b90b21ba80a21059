"""NIR export without the consumers (fixtures/nir_check.py runs sinabs, snnTorch and Norse):
the nodes and edges, the weights against the ONNX model, the channel concatenations, the
write/read round trip, the refusals, the metadata, and the exported graph run in numpy
against the ONNX SNN on ONNX Runtime."""

import gzip
import pathlib

import numpy as np
import pytest

nir = pytest.importorskip("nir")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import gn_transpile  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODELS = ROOT / "fixtures" / "models"
CALIBRATION_IMAGES = ROOT / "fixtures" / "data" / "calibration-images.npy"


def images(n):
    raw = gzip.open(ROOT / "fixtures" / "data" / "t10k-images-idx3-ubyte.gz").read()[16 : 16 + n * 784]
    return (np.frombuffer(raw, np.uint8).reshape(n, 1, 28, 28) / 255).astype(np.float32)


def run_onnx(model_bytes, x):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def custom_op_model(path, **options):
    """The converted model to_nir reads: the custom-op form at one step."""
    return onnx.load_from_string(gn_transpile.convert(path, timesteps=1, emit="custom-op", **options))


def relative_mse(y, ref):
    return float(((y - ref) ** 2).mean() / (ref**2).mean())


def predecessors(graph, name):
    return [a for a, b in graph.edges if b == name]


def ifs_after(graph, onnx_node):
    """The IF nodes that read a node written for ONNX node ``onnx_node``."""
    written = {k for k, v in graph.metadata["onnx_nodes"].items() if v == onnx_node}
    return {b for a, b in graph.edges if a in written and isinstance(graph.nodes[b], nir.IF)}


def chain(graph):
    """The node types from Input to Output of a graph without branches."""
    kinds, name = [], "input"
    while True:
        kinds.append(type(graph.nodes[name]).__name__)
        after = [b for a, b in graph.edges if a == name]
        if not after:
            return kinds
        assert len(after) == 1
        name = after[0]


# --- a numpy run of the NIR graph: every node on the sum of its incoming edges, IF as in its metadata


def conv2d(x, node):
    (ph, pw), (sh, sw) = node.padding, node.stride
    assert tuple(node.dilation) == (1, 1) and node.groups == 1
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(x, node.weight.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    return np.einsum("nchwij,ocij->nohw", windows, node.weight, optimize=True) + node.bias[:, None, None]


def avg_pool2d(x, node):
    (ph, pw), (sh, sw) = node.padding, node.stride
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return sliding_window_view(x, tuple(node.kernel_size), axis=(2, 3))[:, :, ::sh, ::sw].mean(axis=(4, 5))


def integrate_and_fire(node, v, x):
    """One step: v += x; count = clip(floor(v / θ), 0, cap); v -= count·θ. Returns (count, v)."""
    v = v + x
    count = np.clip(np.floor(v / node.v_threshold), 0, int(node.metadata["max_spikes_per_step"]))
    return count, v - count * node.v_threshold


def topological(graph):
    order = []
    while len(order) < len(graph.nodes):
        order.append(next(k for k in graph.nodes if k not in order and set(predecessors(graph, k)) <= set(order)))
    return order


def simulate(graph, x, steps):
    """The output averaged over ``steps`` steps, the images x presented at every step."""
    order = topological(graph)
    v = {
        k: np.broadcast_to(n.metadata["v_init"], (len(x), *n.v_threshold.shape))
        for k, n in graph.nodes.items()
        if isinstance(n, nir.IF)
    }
    total = 0
    for _ in range(steps):
        out = {"input": x}
        for name in order[1:]:
            node, current = graph.nodes[name], sum(out[p] for p in predecessors(graph, name))
            if isinstance(node, nir.Conv2d):
                out[name] = conv2d(current, node)
            elif isinstance(node, nir.AvgPool2d):
                out[name] = avg_pool2d(current, node)
            elif isinstance(node, nir.Affine):
                out[name] = current @ node.weight.T + node.bias
            elif isinstance(node, nir.Flatten):
                out[name] = current.reshape(len(current), -1)
            elif isinstance(node, nir.IF):
                out[name], v[name] = integrate_and_fire(node, v[name], current)
            else:
                out[name] = current
        total = total + out["output"]
    return total / steps


# --- tests


def test_a_cnn_exports_as_conv_if_pool_flatten_affine():
    graph = gn_transpile.to_nir(MODELS / "cnn_l4.onnx")
    block = ["Conv2d", "IF", "Conv2d"]  # convolution, spiking layer, average pool as a convolution
    assert chain(graph) == ["Input", *block * 3, "Flatten", "Affine", "Output"]
    assert list(graph.nodes["input"].input_type["input"]) == [1, 28, 28]
    converted = custom_op_model(MODELS / "cnn_l4.onnx")
    onnx_layers = [n.name for n in converted.graph.node if n.domain == "gn.transpile"]
    assert [n.metadata["onnx_node"] for n in graph.nodes.values() if isinstance(n, nir.IF)] == onnx_layers


def test_weights_are_the_onnx_initializers_times_the_unit_of_the_spikes_they_read():
    graph = gn_transpile.to_nir(MODELS / "vgg_l4.onnx")
    converted = custom_op_model(MODELS / "vgg_l4.onnx")
    initializers = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    linear = {n.name: n for n in converted.graph.node if n.op_type in ("Conv", "Gemm")}
    exported = {
        name: linear[graph.metadata["onnx_nodes"][name]]
        for name in graph.nodes
        if graph.metadata["onnx_nodes"].get(name) in linear
    }
    assert set(n.name for n in exported.values()) == set(linear)
    for name, onnx_node in exported.items():
        (source,) = predecessors(graph, name)
        unit = graph.nodes[source].v_threshold.reshape(-1)[0] if isinstance(graph.nodes[source], nir.IF) else np.float32(1)
        assert np.array_equal(graph.nodes[name].weight, initializers[onnx_node.input[1]] * unit)
        assert np.array_equal(graph.nodes[name].bias, initializers[onnx_node.input[2]])


def test_a_residual_is_two_edges_and_skipped_spikes_pass_a_diagonal_conv_of_their_unit():
    graph = gn_transpile.to_nir(MODELS / "resnet20_l8.onnx")
    converted = custom_op_model(MODELS / "resnet20_l8.onnx")
    producer = {out: n for n in converted.graph.node for out in n.output}
    adds = {n.output[0]: n for n in converted.graph.node if n.op_type == "Add"}
    convs = {n.name for n in converted.graph.node if n.op_type == "Conv"}
    after_add = {n.name for n in converted.graph.node if n.domain and n.input[0] in adds}
    identity_skips = sum(producer[i].domain == "gn.transpile" for add in adds.values() for i in add.input)
    ifs = {n.metadata["onnx_node"]: k for k, n in graph.nodes.items() if isinstance(n, nir.IF)}
    assert after_add and after_add <= set(ifs)
    scales = []
    for layer in after_add:
        sources = predecessors(graph, ifs[layer])
        assert len(sources) == 2 and all(isinstance(graph.nodes[s], nir.Conv2d) for s in sources)
        scales += [s for s in sources if graph.metadata["onnx_nodes"][s] not in convs]
    assert len(scales) == identity_skips > 0
    for scale in scales:
        (spikes,) = predecessors(graph, scale)
        weight = graph.nodes[scale].weight
        assert np.array_equal(weight[:, :, 0, 0], np.diag(np.full(len(weight), graph.nodes[spikes].v_threshold.reshape(-1)[0])))


def assert_edges_join_equal_types(graph):
    for a, b in graph.edges:
        assert np.array_equal(graph.nodes[a].output_type["output"], graph.nodes[b].input_type["input"]), (a, b)


def test_write_and_read_give_the_same_graph(tmp_path):
    graph = gn_transpile.to_nir(MODELS / "resnet20_l8.onnx", neuron="if")
    nir.write(tmp_path / "resnet20.nir", graph)
    again = nir.read(tmp_path / "resnet20.nir")
    assert set(again.nodes) == set(graph.nodes)
    assert sorted(again.edges) == sorted(graph.edges)
    assert_edges_join_equal_types(graph)
    assert_edges_join_equal_types(again)
    for name, node in graph.nodes.items():
        assert type(again.nodes[name]) is type(node)
        for field in ("weight", "bias", "v_threshold"):
            if hasattr(node, field):
                assert np.array_equal(getattr(again.nodes[name], field), getattr(node, field))
        if isinstance(node, nir.IF):
            assert np.array_equal(again.nodes[name].metadata["v_init"], node.metadata["v_init"])
    assert again.metadata["tau"] == 1 and again.metadata["neuron"] == "if"
    assert again.metadata["onnx_nodes"] == graph.metadata["onnx_nodes"]
    x = images(2)
    assert np.array_equal(simulate(again, x, 2), simulate(graph, x, 2))


@pytest.mark.parametrize("neuron", ["gn", "if"])
def test_metadata_holds_tau_the_units_and_the_neuron_semantics(neuron):
    graph = gn_transpile.to_nir(MODELS / "cnn_l4.onnx", tau=4, neuron=neuron)
    tau = 4 if neuron == "gn" else 1
    meta = graph.metadata
    assert (meta["neuron"], meta["tau"], meta["max_spikes_per_step"]) == (neuron, tau, tau)
    assert meta["spike_test"] == "v >= v_threshold" and meta["reset"].startswith("subtract") and meta["leak"] == "none"
    converted = custom_op_model(MODELS / "cnn_l4.onnx", tau=4, neuron=neuron)
    attributes = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in converted.graph.node if n.domain}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.IF):
            continue
        onnx_attributes = attributes[node.metadata["onnx_node"]]
        unit = np.float32(onnx_attributes["theta_gn" if neuron == "gn" else "theta"])
        assert meta["theta_gn"][name] == unit and meta["theta"][name] == np.float32(onnx_attributes["theta"])
        assert np.all(node.v_threshold == unit) and np.all(node.r == 1)
        assert np.all(node.metadata["v_init"] == np.float32(onnx_attributes["v_init"]))
        assert np.all(node.metadata["v_init"] == node.v_threshold / 2)
        assert node.metadata["max_spikes_per_step"] == tau


def test_what_nir_cannot_hold_is_refused_in_one_line_naming_the_node():
    converted = custom_op_model(MODELS / "vgg_maxpool_l4.onnx")
    first_max_pool = next(n.name for n in converted.graph.node if n.op_type == "MaxPool")
    with pytest.raises(ValueError) as refused:
        gn_transpile.to_nir(MODELS / "vgg_maxpool_l4.onnx")
    message = str(refused.value)
    assert "\n" not in message and f"node {first_max_pool} (MaxPool)" in message and "max-pool on spikes" in message
    with pytest.raises(ValueError) as refused:
        gn_transpile.to_nir(concat_ann(axis=2))
    message = str(refused.value)
    assert "\n" not in message and "node cat2 (Concat): concatenates along axis 2" in message
    with pytest.raises(ValueError, match="form 'exact' is not written"):
        gn_transpile.to_nir(MODELS / "cnn_l4.onnx", form="exact")
    with pytest.raises(ValueError, match="form must be 'if' or 'exact', not 'bogus'"):
        gn_transpile.to_nir(MODELS / "cnn_l4.onnx", form="bogus")
    with pytest.raises(ValueError, match="pool must be 'conv' or 'avgpool', not 'max'"):
        gn_transpile.to_nir(MODELS / "cnn_l4.onnx", pool="max")
    with pytest.raises(ValueError, match="tau"):
        gn_transpile.to_nir(MODELS / "cnn_l4.onnx", tau=0)


CASES = [
    ("cnn_l4", "gn", "conv", {}),
    ("cnn_l4", "if", "avgpool", {}),
    ("resnet20_l8", "gn", "conv", {}),
    ("resnet20_l8", "if", "conv", {}),
    ("cnn_l4_dynamo_op18", "gn", "conv", {}),
    ("relu_cnn", "gn", "conv", {"per_channel": True}),
    ("densenet_l4", "gn", "conv", {}),
    ("densenet_l4", "if", "avgpool", {}),
]


@pytest.mark.parametrize("fixture, neuron, pool, options", CASES)
def test_the_exported_graph_run_in_numpy_reproduces_the_onnx_snn(fixture, neuron, pool, options):
    if fixture.startswith("relu"):
        options = {"calibrate": gn_transpile.calibrate(MODELS / f"{fixture}.onnx", np.load(CALIBRATION_IMAGES)[:64], **options)}
    x = images(8)
    graph = gn_transpile.to_nir(MODELS / f"{fixture}.onnx", tau=4, neuron=neuron, pool=pool, **options)
    snn = run_onnx(gn_transpile.convert(MODELS / f"{fixture}.onnx", tau=4, timesteps=4, neuron=neuron, **options), x)
    assert relative_mse(simulate(graph, x, 4), snn) <= 1e-5


def qcfs(out, x, theta):
    """The QCFS activation of threshold constant ``theta`` on tensor x (its L: the constant ``levels``)."""
    steps = [("Div", [x, theta]), ("Clip", ["zero", "one"]), ("Mul", ["levels"]), ("Add", ["half"]), ("Floor", [])]
    steps += [("Div", ["levels"]), ("Mul", [theta])]
    nodes, current = [], None
    for i, (op, inputs) in enumerate(steps):
        name = out if i == len(steps) - 1 else f"{out}.{i}"
        nodes.append(helper.make_node(op, inputs if current is None else [current, *inputs], [name], name=name))
        current = name
    return nodes


def model_of(name, nodes, constants):
    """A model of input x [N, 2, 6, 6] and output y [N, 10]; IR version 8 (opset 17), what the pinned ONNX Runtime
    reads, whatever onnx writes by default."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def qcfs_ann(channels=4, groups=2, theta=1.5, levels=4):
    """A small QCFS network: Conv (grouped) → BatchNormalization → QCFS → Flatten → MatMul → Add."""
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    constants = {
        "w": f32(channels, 2 // groups, 3, 3),
        "b": f32(channels),
        "gamma": np.abs(f32(channels)) + 0.5,
        "beta": f32(channels),
        "mean": f32(channels),
        "var": np.abs(f32(channels)) + 0.1,
        "theta": np.float32(theta),
        "one": np.float32(1),
        "zero": np.float32(0),
        "levels": np.float32(levels),
        "half": np.float32(0.5),
        "head": f32(channels * 36, 10),
        "head_bias": f32(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1], group=groups),
        helper.make_node("BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-5),
        *qcfs("act", "bn", "theta"),
        helper.make_node("Flatten", ["act"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "head"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "head_bias"], ["y"], name="bias"),
    ]
    return model_of("qcfs", nodes, constants)


def test_batch_norm_and_groups_fold_into_one_dense_conv_and_matmul_add_into_an_affine():
    ann = qcfs_ann()
    graph = gn_transpile.to_nir(ann, tau=4)
    assert chain(graph) == ["Input", "Conv2d", "IF", "Flatten", "Affine", "Output"]
    conv = next(n for n in graph.nodes.values() if isinstance(n, nir.Conv2d))
    assert conv.groups == 1 and conv.weight.shape == (4, 2, 3, 3)
    # The Conv2d is the ANN's Conv → BatchNormalization, as ONNX Runtime computes it.
    linear = onnx.ModelProto()
    linear.CopyFrom(ann)
    del linear.graph.node[2:]
    linear.graph.output[0].CopyFrom(helper.make_tensor_value_info("bn", onnx.TensorProto.FLOAT, ["N", 4, 6, 6]))
    x = np.random.default_rng(1).random((16, 2, 6, 6), np.float32)
    assert np.abs(conv2d(x, conv) - run_onnx(linear.SerializeToString(), x)).max() <= 1e-5
    snn = run_onnx(gn_transpile.convert(ann, tau=4, timesteps=4), x)
    assert relative_mse(simulate(graph, x, 4), snn) <= 1e-5


def concat_ann(axis=1):
    """A QCFS network with channel concatenations: one read by a BatchNormalization and a spiking layer, one by a
    Conv, and a nested one (``axis``: its axis) flattened into the readout (MatMul → Add), each layer of its own θ."""
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    constants = {
        "wa": f32(3, 2, 3, 3),
        "wb": f32(2, 2, 3, 3),
        "wc": f32(4, 5, 3, 3),
        "wd": f32(5, 9, 1, 1),
        "bd": f32(5),
        "gamma": np.abs(f32(5)) + 0.5,
        "beta": f32(5),
        "mean": f32(5),
        "var": np.abs(f32(5)) + 0.1,
        "t0": np.float32(1.5),
        "t1": np.float32(0.8),
        "t2": np.float32(1.2),
        "one": np.float32(1),
        "zero": np.float32(0),
        "levels": np.float32(4),
        "half": np.float32(0.5),
        "head": f32((9 + 5) * 36 if axis == 1 else 9 * 72, 10),
        "head_bias": f32(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["ab"], name="cat_ab", axis=1),
        helper.make_node("BatchNormalization", ["ab", "gamma", "beta", "mean", "var"], ["ab_bn"], name="bn", epsilon=1e-5),
        *qcfs("s0", "ab_bn", "t0"),
        helper.make_node("Conv", ["s0", "wc"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),
        *qcfs("s1", "c", "t1"),
        helper.make_node("Concat", ["s0", "s1"], ["cat1"], name="cat1", axis=1),
        helper.make_node("Conv", ["cat1", "wd", "bd"], ["d"], name="conv_d"),
        *qcfs("s2", "d", "t2"),
        helper.make_node("Concat", ["cat1", "s2" if axis == 1 else "cat1"], ["cat2"], name="cat2", axis=axis),
        helper.make_node("Flatten", ["cat2"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "head"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "head_bias"], ["y"], name="bias"),
    ]
    return model_of("concat", nodes, constants)


def test_a_conv_reading_a_concatenation_is_one_conv2d_per_part_summed_by_the_next_layer():
    graph = gn_transpile.to_nir(MODELS / "densenet_l4.onnx")
    converted = custom_op_model(MODELS / "densenet_l4.onnx")
    initializers = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    producer = {out: n for n in converted.graph.node for out in n.output}
    ifs = {n.metadata["onnx_node"]: k for k, n in graph.nodes.items() if isinstance(n, nir.IF)}

    def parts(tensor):
        """The ONNX tensors a (nested) concatenation is made of, in channel order."""
        node = producer[tensor]
        return [p for i in node.input for p in parts(i)] if node.op_type == "Concat" else [tensor]

    after_concat = [n for n in converted.graph.node if n.op_type == "Conv" and n.input[0] in producer]
    after_concat = [n for n in after_concat if producer[n.input[0]].op_type == "Concat"]
    assert len(after_concat) == 5
    for conv in after_concat:
        nodes = sorted(k for k, onnx_node in graph.metadata["onnx_nodes"].items() if onnx_node == conv.name)
        (layer,) = [n.name for n in converted.graph.node if n.domain and n.input[0] == conv.output[0]]
        assert sorted(predecessors(graph, ifs[layer])) == nodes and len(nodes) == len(parts(conv.input[0])) > 1
        weight, bias, offset = initializers[conv.input[1]], initializers[conv.input[2]], 0
        for name, tensor in zip(nodes, parts(conv.input[0])):
            (source,) = predecessors(graph, name)
            node = graph.nodes[name]
            unit = graph.nodes[source].v_threshold.reshape(-1)[0] if isinstance(graph.nodes[source], nir.IF) else np.float32(1)
            assert graph.metadata["onnx_nodes"].get(source) == producer[tensor].name
            assert np.array_equal(node.weight, weight[:, offset : offset + node.weight.shape[1]] * unit)
            assert np.array_equal(node.bias, bias if name == nodes[0] else np.zeros_like(bias))
            offset += node.weight.shape[1]
        assert offset == weight.shape[1]
    assert_edges_join_equal_types(graph)


@pytest.mark.parametrize("neuron", ["gn", "if"])
def test_concatenations_read_by_a_layer_and_by_the_readout_are_written_into_their_channels(neuron):
    ann = concat_ann()
    graph = gn_transpile.to_nir(ann, tau=4, neuron=neuron)
    kinds = {k: type(n).__name__ for k, n in graph.nodes.items()}
    # The spiking layer on cat_ab reads 1×1 selection Conv2d nodes of conv_a and conv_b into channels 0–2 and 3–4,
    # with the BatchNormalization folded in (its shift on the first only).
    constants = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in ann.graph.initializer}
    k = constants["gamma"] / np.sqrt(constants["var"] + 1e-5)
    (layer,) = ifs_after(graph, "cat_ab")
    selections = sorted(predecessors(graph, layer))
    assert selections == ["cat_ab_part0", "cat_ab_part1"]
    for name, (source, channels, offset) in zip(selections, [("conv_a", 3, 0), ("conv_b", 2, 3)]):
        assert predecessors(graph, name) == [source]
        expected = np.zeros((5, channels))
        expected[offset + np.arange(channels), np.arange(channels)] = k[offset : offset + channels]
        np.testing.assert_allclose(graph.nodes[name].weight[:, :, 0, 0], expected, rtol=1e-6)
        shift = constants["beta"] - constants["mean"] * k if offset == 0 else np.zeros(5)
        np.testing.assert_allclose(graph.nodes[name].bias, shift, rtol=1e-6, atol=1e-7)
    # The readout reads the nested concatenation flattened part by part; its parts meet in one node before Output.
    assert sorted(predecessors(graph, "mm_sum")) == ["mm_part0", "mm_part1", "mm_part2"]
    assert predecessors(graph, "output") == ["mm_sum"] and kinds["mm_sum"] == "Affine"
    assert [kinds[predecessors(graph, f"mm_part{i}")[0]] for i in range(3)] == ["Flatten"] * 3
    assert np.array_equal(graph.nodes["mm_part0"].bias, numpy_helper.to_array(ann.graph.initializer[-1]))
    assert_edges_join_equal_types(graph)
    x = np.random.default_rng(1).random((16, 2, 6, 6), np.float32)
    snn = run_onnx(gn_transpile.convert(ann, tau=4, timesteps=4, neuron=neuron), x)
    assert relative_mse(simulate(graph, x, 4), snn) <= 1e-5


def test_the_command_line_writes_the_graph_to_nir_returns(tmp_path):
    import os
    import subprocess
    import sys

    cli = os.environ.get("GN_TRANSPILE_CLI")
    if not cli:
        pytest.skip("GN_TRANSPILE_CLI (the command) is not set; cargo xtask python sets it")
    model = MODELS / "resnet20_l8.onnx"
    out = tmp_path / "snn.nir"
    subprocess.run([cli, "export-nir", model, out, "--tau", "2", "--python", sys.executable], check=True, capture_output=True)
    from_cli = nir.read(out)
    from_python = gn_transpile.to_nir(model, tau=2)
    assert sorted(from_cli.nodes) == sorted(from_python.nodes)
    assert sorted(map(tuple, from_cli.edges)) == sorted(map(tuple, from_python.edges))
    for name, node in from_python.nodes.items():
        for field in ("weight", "bias", "v_threshold"):
            if hasattr(node, field):
                np.testing.assert_array_equal(
                    getattr(from_cli.nodes[name], field), getattr(node, field), err_msg=f"{name}.{field}"
                )
    refused = subprocess.run(
        [cli, "export-nir", MODELS / "vgg_maxpool_l4.onnx", tmp_path / "pool.nir", "--python", sys.executable],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "MaxPool" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pool.nir").exists()
