"""The Python package against the fixtures: convert from a path, bytes and a ModelProto,
run the result on ONNX Runtime, inspect, errors as ValueError, and the command."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gn_transpile

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "fixtures" / "models" / "cnn_l4.onnx"


def images(n):
    raw = gzip.open(ROOT / "fixtures" / "data" / "t10k-images-idx3-ubyte.gz").read()[16 : 16 + n * 784]
    return (np.frombuffer(raw, np.uint8).reshape(n, 1, 28, 28) / 255).astype(np.float32)


def run(model_bytes, x):
    session = ort.InferenceSession(model_bytes)
    return session.run(None, {session.get_inputs()[0].name: x})


def test_path_bytes_and_modelproto_give_the_same_model():
    from_path = gn_transpile.convert(FIXTURE, tau=4, timesteps=2)
    assert from_path == gn_transpile.convert(str(FIXTURE), tau=4, timesteps=2)
    assert from_path == gn_transpile.convert(FIXTURE.read_bytes(), tau=4, timesteps=2)
    assert from_path == gn_transpile.convert(onnx.load(FIXTURE), tau=4, timesteps=2)
    model = onnx.load_from_string(from_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["gn_transpile.neuron"], meta["gn_transpile.tau"], meta["gn_transpile.timesteps"]) == ("gn", "4", "2")


def test_gn_with_tau_equal_to_l_at_one_step_reproduces_the_ann_on_onnx_runtime():
    x = images(64)
    ann = run(FIXTURE.read_bytes(), x)[0]
    snn = run(gn_transpile.convert(FIXTURE, tau=4, timesteps=1), x)[0]
    assert snn.shape == ann.shape
    assert (snn.argmax(1) == ann.argmax(1)).mean() >= 0.99
    assert np.abs(snn - ann).max() < 1e-3


def test_every_form_runs_on_onnx_runtime():
    x = images(8)
    standard = run(gn_transpile.convert(FIXTURE, timesteps=4, anytime=True), x)
    assert standard[1].shape == (4, 8, 10)
    compact = run(gn_transpile.convert(FIXTURE, timesteps=4, emit="custom-op"), x)[0]
    assert np.abs(compact - standard[0]).max() < 1e-5



def test_the_stateful_form_gives_the_unrolled_anytime_rows_call_by_call():
    x = images(8)
    rows = run(gn_transpile.convert(FIXTURE, timesteps=5, anytime=True), x)[1]
    stateful = onnx.load_from_string(gn_transpile.convert(FIXTURE, emit="stateful"))
    states = json.loads({p.key: p.value for p in stateful.metadata_props}["gn_transpile.state"])
    session = ort.InferenceSession(stateful.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    # A state dimension is a size, "N" (the batch) or "kN" (k times it).
    dim = lambda d: d if isinstance(d, int) else int(d[:-1] or 1) * len(x)  # noqa: E731
    state = {s["input"]: np.full([dim(d) for d in s["shape"]], s["init"], np.float32) for s in states}
    for t in range(5):
        outputs = session.run(None, {names[0]: x, **state})
        state = {s["input"]: o for s, o in zip(states, outputs[len(outputs) - len(states) :])}
        np.testing.assert_allclose(outputs[0], rows[t], atol=1e-5)


def test_the_fused_kernels_run_the_custom_op_form_with_the_same_results(tmp_path):
    x = images(16)
    model = gn_transpile.convert(FIXTURE, timesteps=4, emit="custom-op")
    inlined = run(model, x)[0]
    options = ort.SessionOptions()
    options.register_custom_ops_library(gn_transpile.ort_ops_library())
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(model, options)
    fused = session.run(None, {session.get_inputs()[0].name: x})[0]
    ops = {e["args"].get("op_name") for e in json.load(open(session.end_profiling())) if "args" in e}
    # The kernels ran, not the functions' expansion.
    assert {"GroupNeuron", "GroupNeuronDirect"} <= ops
    assert not {"Floor", "Clip"} & ops
    assert np.abs(fused - inlined).max() <= 1e-5
    # Without the library the same model runs its model-local functions.
    assert np.abs(inlined - run(gn_transpile.convert(FIXTURE, timesteps=4), x)[0]).max() <= 1e-5


def test_inspect_returns_the_audit_as_a_dict():
    audit = gn_transpile.inspect(FIXTURE)
    assert len(audit["sites"]) == 3
    assert all(s["levels"] == 4 and s["theta"] > 0 for s in audit["sites"])
    assert audit["converted"] is None
    assert audit["inexact"] == [] and audit["refused"] == []
    converted = gn_transpile.inspect(gn_transpile.convert(FIXTURE, emit="custom-op"))
    assert converted["converted"]["form"] == "custom-op"
    # The first layer's current (the image's) is the same at every step.
    assert [l["op"] for l in converted["converted"]["layers"]] == ["GroupNeuronDirect"] + ["GroupNeuron"] * 2


def test_errors_raise_value_error_with_the_commands_message():
    with pytest.raises(ValueError, match="no QCFS activation found"):
        relu = onnx.helper.make_model(
            onnx.helper.make_graph(
                [onnx.helper.make_node("Relu", ["x"], ["y"])],
                "g",
                [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
                [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])],
            ),
            opset_imports=[onnx.helper.make_opsetid("", 17)],
        )
        gn_transpile.convert(relu)
    with pytest.raises(ValueError, match="--tau must be between 1 and 1024"):
        gn_transpile.convert(FIXTURE, tau=0)
    with pytest.raises(ValueError, match="neuron must be one of gn, if"):
        gn_transpile.convert(FIXTURE, neuron="lif")
    with pytest.raises(ValueError, match="timesteps does not apply"):
        gn_transpile.convert(FIXTURE, emit="stateful", timesteps=4)
    with pytest.raises(ValueError, match="model bytes"):
        gn_transpile.convert(b"not a model")
    with pytest.raises(TypeError):
        gn_transpile.convert(42)


def test_the_wheel_installs_the_command(tmp_path):
    command = str(pathlib.Path(sys.executable).parent / "gn-transpile")
    out = tmp_path / "snn.onnx"
    done = subprocess.run([command, str(FIXTURE), str(out), "-t", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 spiking layers of GN (τ = 4), T = 2" in done.stderr
    onnx.checker.check_model(onnx.load(out), full_check=True)
    bad = subprocess.run([command, str(FIXTURE), str(FIXTURE)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr


RELU = ROOT / "fixtures" / "models" / "relu_cnn.onnx"
CALIBRATION_IMAGES = ROOT / "fixtures" / "data" / "calibration-images.npy"


def thresholds(calibration):
    return [(layer["site"], layer["theta"], layer.get("channels", [])) for layer in calibration["layers"]]


def test_a_relu_network_calibrates_and_converts_on_onnx_runtime():
    x = np.load(CALIBRATION_IMAGES)[:256]
    calibration = gn_transpile.calibrate(RELU, x, per_channel=True)
    assert calibration["inputs"] == 256 and calibration["per_channel"]
    assert all(layer["theta"] > 0 and layer["channels"] for layer in calibration["layers"])
    # The same inputs from a file, in other batches: the same thresholds.
    again = gn_transpile.calibrate(RELU, CALIBRATION_IMAGES, per_channel=True, batch=100)
    assert again["inputs"] == len(np.load(CALIBRATION_IMAGES))
    snn = gn_transpile.convert(RELU, calibrate=calibration, tau=4, timesteps=8)
    meta = {p.key: p.value for p in onnx.load_from_string(snn).metadata_props}
    assert json.loads(meta["gn_transpile.calibration"]) == calibration
    # Converting with the inputs directly records the same calibration.
    assert gn_transpile.convert(RELU, calibrate=x, per_channel=True, tau=4, timesteps=8) == snn
    # GN at T = 8 follows the ReLU network on real images.
    test = images(64)
    ann, spiking = run(RELU.read_bytes(), test)[0], run(snn, test)[0]
    assert (ann.argmax(1) == spiking.argmax(1)).mean() >= 0.9


def test_calibrated_thresholds_are_the_command_lines(tmp_path):
    cli = os.environ.get("GN_TRANSPILE_CLI")
    if not cli:
        pytest.skip("GN_TRANSPILE_CLI (the command built with tract) is not set; cargo xtask python sets it")
    out = tmp_path / "snn.onnx"
    subprocess.run([cli, RELU, out, "--calibrate", CALIBRATION_IMAGES, "--per-channel"], check=True, capture_output=True)
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    from_cli = json.loads(meta["gn_transpile.calibration"])
    from_python = gn_transpile.calibrate(RELU, CALIBRATION_IMAGES, per_channel=True)
    assert from_python["inputs"] == from_cli["inputs"]
    # ONNX Runtime and tract sum convolutions in different orders: an activation may move
    # across a histogram bin edge (1/256 octave), so θ agrees to within one bin.
    for (site, theta, channels), (site_cli, theta_cli, channels_cli) in zip(thresholds(from_python), thresholds(from_cli)):
        assert site == site_cli
        assert theta == pytest.approx(theta_cli, rel=3e-3)
        assert channels == pytest.approx(channels_cli, rel=3e-3)


def test_calibration_refuses_a_qcfs_network_in_one_line():
    with pytest.raises(ValueError, match="no ReLU-family activation to calibrate"):
        gn_transpile.calibrate(FIXTURE, images(4))
