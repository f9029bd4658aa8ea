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
