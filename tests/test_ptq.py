"""trine.host.ptq: GPTQ's rounding, the output fit of one layer, and fold_to_program's gptq
method on the committed skl2onnx digits MLP and the CNN fixtures."""

from pathlib import Path

import numpy as np
import pytest

from trine.host.data import load_digits_split
from trine.host.ptq import OutputFit, fit_layer, mixtures, ternarize_gptq
from trine.host.results import accuracy, program_accuracy
from trine.host.ternarize import TernarizeError, fold_to_program

FIXTURES = Path(__file__).parent / "fixtures"
RNG = np.random.default_rng(3)


def _correlated_inputs(n=400, k=12):
    mix = RNG.normal(size=(k, k)) + 2 * np.eye(k)
    return RNG.normal(size=(n, k)) @ mix


def _output_error(w, x, trits, alpha):
    return float(np.sum((x @ (w - alpha * trits).T) ** 2))


def test_gptq_with_uncorrelated_inputs_rounds_to_nearest():
    w = RNG.normal(size=(6, 9))
    trits = ternarize_gptq(w, np.eye(9), 0.8)
    assert np.array_equal(trits, np.clip(np.rint(w / 0.8), -1, 1))
    assert trits.dtype == np.int8
    assert not ternarize_gptq(w, np.eye(9), 0.0).any()


def test_gptq_error_feedback_lowers_the_output_error():
    x = _correlated_inputs()
    w = RNG.normal(size=(8, 12))
    h = x.T @ x + 0.01 * np.mean(np.diag(x.T @ x)) * np.eye(12)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    for alpha in (0.5, 0.9, 1.4):
        gptq = ternarize_gptq(w, u, alpha)
        nearest = np.clip(np.rint(w / alpha), -1, 1)
        assert _output_error(w, x, gptq, alpha) < 0.9 * _output_error(w, x, nearest, alpha)


def test_fit_layer_parts():
    x = _correlated_inputs()
    w, b = RNG.normal(size=(5, 12)), RNG.normal(size=5)
    y = x @ w.T + b
    errors = {}
    for fit in (OutputFit(), OutputFit(error_feedback=False), OutputFit(search_scale=False),
                OutputFit(error_feedback=False, search_scale=False, bias_correction=False)):
        trits, alpha, bias = fit_layer(w, b, x, x, fit)
        assert trits.shape == w.shape and set(np.unique(trits)) <= {-1, 0, 1} and alpha > 0
        residual = y - (alpha * x @ trits.T + bias)
        if fit.bias_correction:
            assert np.allclose(residual.mean(axis=0), 0, atol=1e-9)
        else:
            assert np.array_equal(bias, b)
        errors[fit] = float(np.sum(residual ** 2))
    assert errors[OutputFit()] == min(errors.values())
    # nothing to fit: an all-zero weight stays zero and keeps its bias
    trits, alpha, bias = fit_layer(np.zeros((3, 12)), np.ones(3), x, x)
    assert not trits.any() and alpha == 0.0 and np.allclose(bias, 1)


def test_float_targets_correct_for_the_inputs_error():
    # The inputs the layer gets are a distorted version of the float model's: fitting to the
    # float targets compensates, fitting to its own inputs cannot.
    x_f = _correlated_inputs()
    x_q = x_f @ (np.eye(12) + 0.3 * RNG.normal(size=(12, 12)))
    w, b = RNG.normal(size=(6, 12)), np.zeros(6)
    target = x_f @ w.T

    def err(fit):
        trits, alpha, bias = fit_layer(w, b, x_q, x_f, fit)
        return np.sum((target - alpha * x_q @ trits.T - bias) ** 2)

    assert err(OutputFit()) < 0.7 * err(OutputFit(float_targets=False))


@pytest.fixture(scope="module")
def digits_mlp():
    pytest.importorskip("onnx")
    from trine.host.onnx_import import read_onnx_network

    return read_onnx_network(FIXTURES / "digits_mlp_skl.onnx")


def test_gptq_keeps_the_digits_mlp_within_six_points(digits_mlp):
    x_train, _, x_test, y_test = load_digits_split()
    float_acc = accuracy(digits_mlp.forward(x_test), y_test)
    layers = list(digits_mlp.layers)
    twn = program_accuracy(fold_to_program(layers, x_train[:256]), x_test, y_test)
    program = fold_to_program(layers, x_train[:256], method="gptq")
    gptq = program_accuracy(program, x_test, y_test)
    assert twn < float_acc - 0.2  # the figure: TWN loses a third of the accuracy
    assert gptq > float_acc - 0.06
    assert program == fold_to_program(layers, x_train[:256], method="gptq")  # deterministic


@pytest.mark.parametrize("model", ["cnn1d_legacy", "cnn2d_dynamo"])
def test_gptq_tracks_cnns_closer_than_twn(model):
    pytest.importorskip("onnx")
    from trine.host.import_check import correlation
    from trine.host.onnx_import import read_onnx_network

    net = read_onnx_network(FIXTURES / f"{model}.onnx")
    rng = np.random.default_rng(1)
    calib, test = (rng.normal(size=(300, *net.input_shape)) for _ in range(2))
    want = net.forward(test)
    got = {m: net.to_program(calib, method=m).run_reference(test) for m in ("twn", "gptq")}
    assert correlation(got["gptq"], want) > correlation(got["twn"], want)
    assert correlation(got["gptq"], want) > 0.9


def test_gptq_refusals(digits_mlp):
    layers, x = list(digits_mlp.layers), load_digits_split()[0][:50]
    with pytest.raises(TernarizeError, match="per_channel is only supported with method "
                       "'twn', not 'gptq'"):
        fold_to_program(layers, x, method="gptq", per_channel=True)
    with pytest.raises(TernarizeError, match="fit only applies with method 'gptq', not 'twn'"):
        fold_to_program(layers, x, fit=OutputFit())
    with pytest.raises(TernarizeError, match="method must be one of gptq, twn, absmean, not "
                       "'best'"):
        fold_to_program(layers, x, method="best")
    with pytest.raises(ValueError, match="damping must be a positive number, not 0"):
        OutputFit(damping=0)


def test_mixtures_lie_between_the_calibration_inputs():
    x = RNG.normal(size=(20, 3, 5))
    out = mixtures(x, 4, np.random.default_rng(0))
    assert out.shape == (100, 3, 5) and np.array_equal(out[:20], x)
    assert out.max() <= x.max() and out.min() >= x.min()  # convex combinations
    assert np.array_equal(out, mixtures(x, 4, np.random.default_rng(0)))
    assert mixtures(x, 0, np.random.default_rng(0)) is x
    noisy = mixtures(x, 4, np.random.default_rng(0), 0.5, np.ones((3, 5)))
    assert np.array_equal(noisy[:20], x) and not np.array_equal(noisy[20:], out[20:])


def test_fold_with_mixtures(digits_mlp):
    # the fit sees the mixtures as calibration inputs of their own: the same program as
    # calibrating on them, with the input scale of the given inputs
    layers, x = list(digits_mlp.layers), load_digits_split()[0][:64].astype(np.float64)
    program = fold_to_program(layers, x, method="gptq", mixtures=3, mixture_seed=2)
    scale = float(np.abs(x).max()) / 127
    assert program.input_scale == scale
    mixed = mixtures(x, 3, np.random.default_rng(2))
    assert program == fold_to_program(layers, mixed, method="gptq", input_scale=scale)
    assert program != fold_to_program(layers, x, method="gptq")
    assert program != fold_to_program(layers, x, method="gptq", mixtures=3, mixture_seed=3)
    for bad in (-1, 1.5, True):
        with pytest.raises(TernarizeError, match=f"mixtures must be an integer >= 0, not "
                           f"{bad!r}"):
            fold_to_program(layers, x, method="gptq", mixtures=bad)
