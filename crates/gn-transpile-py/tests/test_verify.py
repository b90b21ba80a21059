"""gn_transpile.verify: the measurement on ONNX Runtime, against the command line's on
tract, and its cost report."""

import gzip
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import gn_transpile

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "fixtures" / "models" / "cnn_l4.onnx"
DATA = ROOT / "fixtures" / "data"


def fashion(n):
    raw = gzip.open(DATA / "t10k-images-idx3-ubyte.gz").read()[16 : 16 + n * 784]
    x = (np.frombuffer(raw, np.uint8).reshape(n, 1, 28, 28) / 255).astype(np.float32)
    y = np.frombuffer(gzip.open(DATA / "t10k-labels-idx1-ubyte.gz").read()[8 : 8 + n], np.uint8).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def measured():
    x, y = fashion(200)
    stages = []
    result = gn_transpile.verify(
        FIXTURE, x, y, tau=4, timesteps=(1, 2, 4), pareto=True, progress=lambda *a: stages.append(a)
    )
    return x, y, result, stages


def test_verify_reports_curves_exactness_and_the_cost(measured):
    x, y, m, stages = measured
    assert m["images"] == 200 and m["tau"] == 4
    curves = {c["neuron"]: c for c in m["curves"]}
    assert [p[0] for p in curves["GN"]["mse"]] == [1, 2, 4]
    # GN with tau = L = 4 at T = 1 is the ANN.
    assert m["exactness"]["flips"] == 0 and m["exactness"]["relative_mse"] < 1e-10
    # GN follows the ANN from T = 1 on real images; IF needs more steps.
    gn_acc = dict(curves["GN"]["accuracy"])
    assert gn_acc[4] >= m["ann_accuracy"] - 0.02
    assert dict(curves["GN"]["mse"])[4] < dict(curves["IF"]["mse"])[4]
    ops = m["operations"]
    assert ops["ann_macs"] > 0 and ops["footprint"] > 0 and ops["energy"]["name"] == "45nm-fp32"
    for c in ops["costs"]:
        # The first conv reads the image once; every other weighted op reads spikes.
        assert c["effective_macs"] == ops["layers"][0]["macs"]
        assert c["effective_acs"] > 0 and 0 < c["activation_sparsity"] < 1
        assert c["events"] <= c["spikes"]
        energy = c["effective_macs"] * 4.6 + c["effective_acs"] * 0.9
        assert c["energy_pj"] == pytest.approx(energy, rel=1e-9)
    # Progress arrives per stage, batch by batch: the inputs done, up to every input.
    ann = [s for s in stages if s[0] == "ANN"]
    assert [s[1] for s in ann] == [100, 200] and all(s[2] == 200 for s in ann)


def test_verify_renders_tables_and_json(measured):
    _, _, m, _ = measured
    text = m.to_markdown()
    assert "MSE between the ANN's and the SNN's outputs (200 inputs)" in text
    assert "cost per input" in text and "weighted ops" not in text
    assert "weighted ops" in m.to_markdown(per_layer=True)
    assert json.loads(m.to_json()) == json.loads(json.dumps(dict(m)))


def assert_same_tables(a, b):
    """The same lines and cells; a number may differ in its last printed digit."""
    import re

    lines_a, lines_b = a.splitlines(), b.splitlines()
    assert len(lines_a) == len(lines_b), (a, b)
    for la, lb in zip(lines_a, lines_b):
        cells_a, cells_b = la.split("|"), lb.split("|")
        assert len(cells_a) == len(cells_b), (la, lb)
        for ca, cb in zip(cells_a, cells_b):
            if ca == cb:
                continue
            na, nb = re.fullmatch(r"\s*(-?[0-9.]+)(\D*)", ca), re.fullmatch(r"\s*(-?[0-9.]+)(\D*)", cb)
            assert na and nb and na.group(2) == nb.group(2), (la, lb)
            digits = len(na.group(1).partition(".")[2])
            assert abs(float(na.group(1)) - float(nb.group(1))) <= 1.01 * 10**-digits, (la, lb)


def test_the_command_line_prints_the_same_numbers(measured, tmp_path):
    cli = os.environ.get("GN_TRANSPILE_CLI")
    if not cli:
        pytest.skip("GN_TRANSPILE_CLI (the command built with tract) is not set; cargo xtask python sets it")
    x, y, m, _ = measured
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    run = subprocess.run(
        [cli, "verify", FIXTURE, "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--timesteps", "1,2,4", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    cli_m = json.loads(run.stdout)
    table = subprocess.run(
        [cli, "verify", FIXTURE, "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--timesteps", "1,2,4", "--pareto"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # tract and ONNX Runtime sum convolutions in different orders: where a membrane lies
    # within rounding of a threshold, a spike moves; the printed tables agree, to the last
    # printed digit of an MSE or a count.
    assert_same_tables(table, m.to_markdown())
    assert cli_m["ann_accuracy"] == m["ann_accuracy"]
    for a, b in zip(cli_m["curves"], m["curves"]):
        assert a["accuracy"] == b["accuracy"]
        assert np.allclose([p[1] for p in a["mse"]], [p[1] for p in b["mse"]], rtol=1e-3, atol=1e-6)
    ops, cli_ops = m["operations"], cli_m["operations"]
    assert (ops["ann_macs"], ops["footprint"], ops["layers"]) == (cli_ops["ann_macs"], cli_ops["footprint"], cli_ops["layers"])
    for a, b in zip(ops["costs"], cli_ops["costs"]):
        assert a["effective_acs"] == pytest.approx(b["effective_acs"], rel=1e-3)


def test_verify_marks_the_points_no_other_point_beats(measured, tmp_path):
    _, _, m, _ = measured
    points = m["pareto"]["points"]
    # IF (tau = 1), then GN at tau = 2, 4, 8, at each T of the cost report.
    assert [(p["neuron"], p["tau"], p["timesteps"]) for p in points] == [
        (n, k, t) for n, k in (("IF", 1), ("GN", 2), ("GN", 4), ("GN", 8)) for t in (1, 2, 4)
    ]
    # The points of the measurement's own tau are its curve and its cost.
    curve = {c["neuron"]: c for c in m["curves"]}["GN"]
    costs = {c["timesteps"]: c for c in m["operations"]["costs"] if c["neuron"] == "GN"}
    for p in (p for p in points if p["tau"] == 4):
        assert p["accuracy"] == dict(curve["accuracy"])[p["timesteps"]]
        assert p["energy_pj"] == costs[p["timesteps"]]["energy_pj"]
    # The fronts, recomputed: a point is on one when no other point is as good for as
    # little energy and better in one of the two.
    for key, better in (("accuracy", lambda a, b: a >= b), ("mse", lambda a, b: a <= b)):
        for p in points:
            beaten = any(
                q["energy_pj"] <= p["energy_pj"]
                and better(q[key], p[key])
                and (q["energy_pj"] < p["energy_pj"] or q[key] != p[key])
                for q in points
            )
            assert p["front_" + key] == (not beaten), (key, p)
    assert sum(p["front_accuracy"] for p in points) >= 1
    assert "accuracy for energy" in m.to_markdown()
    svg = m.pareto_svg(tmp_path / "pareto.svg")
    assert svg.startswith("<svg") and (tmp_path / "pareto.svg").read_text() == svg
    assert svg.count('r="7"') == sum(p["front_accuracy"] for p in points)


def test_verify_refuses_bad_requests_in_one_line():
    x, y = fashion(4)
    with pytest.raises(ValueError, match="energy table"):
        gn_transpile.verify(FIXTURE, x, y, energy="7nm")
    with pytest.raises(ValueError, match="no accuracy-for-energy chart"):
        gn_transpile.verify(FIXTURE, x, y, timesteps=(1,)).pareto_svg()
    with pytest.raises(ValueError, match="3 labels for 4 inputs"):
        gn_transpile.verify(FIXTURE, x, y[:3])
    with pytest.raises(ValueError, match="timesteps must list values"):
        gn_transpile.verify(FIXTURE, x, y, timesteps=(0, 2))
    with pytest.raises(ValueError, match="at least one input"):
        gn_transpile.verify(FIXTURE, x[:0], None)
    with pytest.raises(ValueError, match="labels are class indices"):
        gn_transpile.verify(FIXTURE, x, -y - 1)
