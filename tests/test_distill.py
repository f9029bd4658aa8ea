"""trine.host.distill: label-free distillation of an imported program towards its float model
(the committed skl2onnx digits MLP and the CNN fixtures)."""

from pathlib import Path

import numpy as np
import pytest

from trine.host.data import load_digits_split
from trine.host.distill import (
    DISTILL_DEFAULTS,
    _augmented,
    _draw,
    distill,
    logit_scale,
    soft_targets,
)
from trine.host.learning import TrainError
from trine.host.program import Program
from trine.host.results import program_accuracy

pytest.importorskip("onnx")
from trine.host.onnx_import import read_onnx_network  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def digits():
    net = read_onnx_network(FIXTURES / "digits_mlp_skl.onnx")
    x_train, _, x_test, y_test = load_digits_split()
    return net, x_train[:256].astype(np.float64), x_test, y_test


def test_soft_targets_and_logit_scale():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    q = soft_targets(z, 1.0)
    assert np.allclose(q.sum(axis=1), 1) and np.allclose(q[1], 1 / 3)
    assert np.allclose(soft_targets(z, 2.0)[0], soft_targets(z / 2, 1.0)[0])
    y = np.array([[10, 20, 30], [5, -5, 0]])
    assert logit_scale(y, 0.25 * y + 7) == pytest.approx(0.25)  # a constant per row is ignored
    assert logit_scale(np.zeros((2, 3)), z) == 1.0
    assert logit_scale(y, -y) == 1.0


def test_drawn_classes_follow_the_probabilities():
    q = np.tile([0.1, 0.6, 0.3], (20000, 1))
    counts = np.bincount(_draw(q, np.random.default_rng(0)), minlength=3) / len(q)
    assert np.allclose(counts, q[0], atol=0.01)


def test_distillation_without_labels_recovers_a_twn_import(digits):
    # TWN alone loses a third of the accuracy; ten epochs of distillation on the same 256
    # unlabelled inputs bring most of it back.
    net, calib, x_test, y_test = digits
    start = net.to_program(calib, method="twn")
    progress = []
    result = distill(start, net.forward, calib, epochs=10, seed=3,
                     progress=lambda f, m: progress.append((f, m)))
    before = program_accuracy(start, x_test, y_test)
    after = program_accuracy(result.program, x_test, y_test)
    assert before < 0.8 and after > 0.9
    assert result.program.labels == start.labels and result.program.input_shape == (64,)
    assert [h["epoch"] for h in result.history] == list(range(11))
    assert result.history[-1]["agreement"] > result.history[0]["agreement"]
    assert progress[0][0] == 0 and progress[-1][0] == 1 and len(progress) == 11
    assert progress[-1][1].startswith("epoch 10 agreement ")
    assert result.settings["seed"] == 3 and result.settings["epochs"] == 10
    for key in DISTILL_DEFAULTS:
        assert key in result.settings


def test_distillation_is_reproducible(digits):
    net, calib, _, _ = digits
    start = net.to_program(calib)
    a, b, c = (distill(start, net.forward, calib, epochs=2, seed=s).program for s in (0, 0, 1))
    assert a.to_bytes() == b.to_bytes()
    assert a.to_bytes() != c.to_bytes()


def test_distillation_of_a_cnn(tmp_path):
    net = read_onnx_network(FIXTURES / "cnn1d_dynamo.onnx")
    calib = np.random.default_rng(0).normal(size=(64, 1, 40))
    start = net.to_program(calib)
    result = distill(start, net.forward, calib.reshape(64, -1), epochs=2, augment=2)
    assert result.program.input_shape == (1, 40)
    assert len(result.program.layers) == len(start.layers)
    result.program.save(tmp_path / "c.trine")
    assert Program.load(tmp_path / "c.trine") == result.program


def test_distillation_refusals(digits):
    net, calib, _, _ = digits
    start = net.to_program(calib)
    with pytest.raises(TrainError, match="must be a trine.host.program.Program, not list"):
        distill([], net.forward, calib)
    with pytest.raises(TrainError, match="no input_scale"):
        distill(Program(start.layers), net.forward, calib)
    with pytest.raises(TrainError, match=r"calibration_x must be float inputs \(N, 64\) or "
                       r"\(N, 64\), not int64 \(3, 64\)"):
        distill(start, net.forward, np.ones((3, 64), np.int64))
    with pytest.raises(TrainError, match="the teacher gives 3 logits per input, the program "
                       "10 outputs"):
        distill(start, lambda x: np.zeros((len(x), 3)), calib)
    with pytest.raises(TrainError, match="the teacher gave logits that are not finite"):
        distill(start, lambda x: np.full((len(x), 10), np.nan), calib)
    with pytest.raises(TrainError, match="temperature must be a finite number > 0"):
        distill(start, net.forward, calib, temperature=0)
    with pytest.raises(TrainError, match="augment must be an integer >= 0, not -1"):
        distill(start, net.forward, calib, augment=-1)
    with pytest.raises(TrainError, match="select must be an integer >= 0, not -1"):
        distill(start, net.forward, calib, select=-1)


def test_the_epoch_returned_is_the_best_on_held_out_mixtures(digits):
    # The held-out mixtures are rebuilt here as distill makes them (seed [seed, 1]): the
    # program returned must be the one whose agreement on them the history records as best.
    net, calib, _, _ = digits
    start = net.to_program(calib, method="twn")
    result = distill(start, net.forward, calib, epochs=4, seed=5, select=3)
    held_out = [h["held_out_agreement"] for h in result.history]
    chosen = result.settings["selected_epoch"]
    assert held_out[chosen] == max(held_out) and held_out.index(max(held_out)) == chosen
    spread = calib.std(axis=0)
    held = _augmented(calib, spread, 3, DISTILL_DEFAULTS["noise"],
                      np.random.default_rng([5, 1]))[len(calib):]
    agree = np.mean(result.program.run_reference(held).argmax(1) ==
                    net.forward(held).argmax(1))
    assert agree == held_out[chosen]
    # the same training without the selection returns the last epoch, which is chosen only
    # when it is the best
    last = distill(start, net.forward, calib, epochs=4, seed=5, select=0)
    assert "selected_epoch" not in last.settings
    assert all("held_out_agreement" not in h for h in last.history)
    assert [h["agreement"] for h in last.history] == [h["agreement"] for h in result.history]
    assert (last.program.to_bytes() == result.program.to_bytes()) == (chosen == 4)
