"""trine.host.evaluate: accuracy on the reference and on the simulated device, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from trine.host.data import load_digits_split
from trine.host.evaluate import evaluate
from trine.host.program import Program, ProgramError
from trine.host.results import accuracy, predict, program_accuracy
from trine.host.ternarize import fold_to_program


def _digits_program(hidden: int = 32) -> tuple[Program, tuple]:
    """A post-training ternarised digits MLP from a float least-squares fit (fast, no SGD)."""
    x_tr, y_tr, x_te, y_te = load_digits_split()
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (hidden, 64))
    h = np.maximum(x_tr @ w1.T, 0)
    target = np.eye(10)[y_tr] * 2 - 1
    w2 = np.linalg.lstsq(h, target, rcond=None)[0].T
    layers = [(w1, np.zeros(hidden), True), (w2, np.zeros(10), False)]
    return fold_to_program(layers, x_tr), (x_tr, y_tr, x_te, y_te)


def test_predict_ties_take_the_lowest_index():
    out = np.array([[5, 5, 1], [-3, 2, 2], [127, 127, 127]], np.int8)
    assert predict(out).tolist() == [0, 1, 0]
    assert accuracy(out, [0, 2, 0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy(out, [0, 1])


def test_reference_backend_matches_program_accuracy():
    program, (_, _, x_te, y_te) = _digits_program()
    ev = evaluate(program, x_te, y_te)
    assert ev.backend == "reference" and ev.samples == len(y_te) and ev.bit_exact
    assert ev.accuracy == ev.reference_accuracy == program_accuracy(program, x_te, y_te)
    assert ev.accuracy > 0.25  # well above chance (0.1), even post-training


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((3, 63)), np.zeros(3, int), "features"),
        (np.zeros(64), np.zeros(1, int), "shape"),
        (np.zeros((3, 64)), np.zeros(2, int), "labels"),
        (np.zeros((3, 64)), np.zeros(3), "labels"),
        (np.zeros((3, 64)), np.array([0, 1, 10]), "class indices"),
        (np.zeros((3, 64)), np.array([0, -1, 2]), "class indices"),
    ],
)
def test_bad_data_is_refused(x, y, match):
    program, _ = _digits_program(8)
    with pytest.raises(ProgramError, match=match):
        evaluate(program, x, y)


def test_bad_backend_and_missing_url():
    program, (_, _, x_te, y_te) = _digits_program(8)
    with pytest.raises(ValueError, match="backend"):
        evaluate(program, x_te, y_te, backend="fpga")
    with pytest.raises(ValueError, match="URL"):
        evaluate(program, x_te, y_te, backend="device")


@pytest.mark.cocotb
def test_device_backend_is_bit_exact_on_the_simulated_rtl(device_server):
    program, (_, _, x_te, y_te) = _digits_program(16)
    x, y = x_te[:40], y_te[:40]
    ev = evaluate(program, x, y, backend="device", url=device_server("icarus", "byte"),
                  timeout=30)
    assert ev.samples == 40 and ev.mismatches == 0 and ev.bit_exact
    assert ev.accuracy == ev.reference_accuracy == program_accuracy(program, x, y)
    d = ev.device
    assert d["runs"] == -(-40 // d["max_batch"])
    # 64-16-10 on 8 lanes x 5 rows: at least ceil(K/L) * ceil(M/P) cycles per layer
    assert d["latency_cycles"] >= 8 * 4 + 2 * 2
    assert d["cycles_per_inference"] <= d["latency_cycles"]
    assert d["weights"] == 64 * 16 + 16 * 10 and d["bits_per_weight"] > 1.6


@pytest.mark.verilator
def test_eval_reports_cycles_and_macs_from_the_device(device_server, tmp_path, capsys):
    """``trine eval --backend device --json`` on the native engine: the MACs are the hand
    count, the cycles the device's own, per run and in total."""
    import json

    from trine.cli.main import main
    from trine.contract.reference import Conv, Flatten, Layer, MaxPool

    rng = np.random.default_rng(7)
    # conv 4 x 1 x 3 on (1, 12), padding 1: 12 positions; then 2-pool, flatten, dense 24 -> 3
    program = Program([Conv(rng.integers(-1, 2, (4, 1, 3)), rng.integers(-9, 9, 4), 1, 1, 1, True),
                       MaxPool(2), Flatten(),
                       Layer(rng.integers(-1, 2, (3, 24)), rng.integers(-9, 9, 3), 2, False)],
                      input_shape=(1, 12))
    program.save(tmp_path / "p.trine")
    np.save(tmp_path / "x.npy", rng.integers(-128, 128, (20, 12)).astype(np.int8))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 20))
    url = device_server("native", "byte")
    assert main(["eval", "--program", str(tmp_path / "p.trine"), "--input",
                 str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--backend",
                 "device", "--port", url, "--timeout", "30", "--json",
                 str(tmp_path / "e.json")]) == 0
    assert "MACs per inference: 216;" in capsys.readouterr().out
    d = json.loads((tmp_path / "e.json").read_text())["device"]
    assert d["layer_macs"] == [4 * 1 * 3 * 12, 0, 0, 24 * 3]
    assert d["macs_per_inference"] == 216 and d["macs"] == 216 * 20
    assert d["peak_macs_per_cycle"] == d["lanes"] * d["rows"] == 40
    assert d["run_samples"] == [16, 4] and d["runs"] == 2  # the simulated device's batch: 16
    assert sum(d["run_cycles"]) == d["cycles"] and d["run_cycles"][0] > d["run_cycles"][1]
    assert d["macs_per_cycle"] == pytest.approx(216 * 20 / d["cycles"])
    assert d["run_macs_per_cycle"] == pytest.approx([216 * 16 / d["run_cycles"][0],
                                                     216 * 4 / d["run_cycles"][1]])
    assert d["latency_macs_per_cycle"] == pytest.approx(216 / d["latency_cycles"])
    # no run can beat the array, and a batch spreads the run's fixed cost over its samples
    assert 0 < d["latency_macs_per_cycle"] < d["run_macs_per_cycle"][0] <= 40
