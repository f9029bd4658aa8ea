"""trine.host.ternarize and trine.host.data: TWN / absmean ternarisation and folding a float MLP."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.host.data import load_digits_split
from trine.host.program import Program
from trine.host.ternarize import (
    TernarizeError,
    fold_to_program,
    run_ternarized_float,
    sparsity,
    ternarize_absmean,
    ternarize_layers,
    ternarize_twn,
)

W_HAND = np.array(
    [
        [1.0, -0.2, 0.5, -2.0],
        [0.1, 0.1, -0.1, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)


# ---------------------------------------------------------------------------------------------
# Ternarisers on hand-made matrices
# ---------------------------------------------------------------------------------------------


def test_twn_per_layer_hand_matrix():
    # mean|W| = 4.0 / 12; delta = 0.7 * that = 0.2333: keeps 1.0, 0.5, -2.0 only.
    trits, alpha = ternarize_twn(W_HAND)
    assert trits.dtype == np.int8
    np.testing.assert_array_equal(trits, [[1, 0, 1, -1], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert alpha.shape == ()
    assert float(alpha) == pytest.approx(3.5 / 3)


def test_twn_per_channel_hand_matrix():
    # Row 0: delta = 0.7 * 0.925 = 0.6475 keeps 1.0, -2.0. Row 1: delta = 0.0525 keeps the
    # three 0.1s. Row 2 keeps nothing: alpha 0, all-zero trits.
    trits, alpha = ternarize_twn(W_HAND, per_channel=True)
    np.testing.assert_array_equal(trits, [[1, 0, 0, -1], [1, 1, -1, 0], [0, 0, 0, 0]])
    assert alpha.shape == (3,)
    np.testing.assert_allclose(alpha, [1.5, 0.1, 0.0])


def test_absmean_hand_matrix():
    # gamma = 1/3: W / gamma = [3, -0.6, 1.5, -6], [0.3, 0.3, -0.3, 0], 0 -> round, clip.
    trits, alpha = ternarize_absmean(W_HAND)
    np.testing.assert_array_equal(trits, [[1, -1, 1, -1], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert float(alpha) == pytest.approx(1 / 3)


def test_all_zero_matrix():
    z = np.zeros((2, 3))
    for trits, alpha in (ternarize_twn(z), ternarize_absmean(z)):
        assert not trits.any()
        assert float(alpha) == 0.0
    trits, alpha = ternarize_twn(z, per_channel=True)
    assert not trits.any() and not alpha.any()


def test_sparsity():
    assert sparsity(np.array([[1, 0, -1, 0]])) == 0.5
    assert sparsity(np.zeros((0, 3))) == 0.0


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    w=hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12), elements=finite
    ),
    zero_rows=st.integers(0, 3),
)
def test_trits_always_ternary(w, zero_rows):
    w = w.copy()
    w[:zero_rows] = 0
    for trits, alpha in (
        ternarize_twn(w),
        ternarize_twn(w, per_channel=True),
        ternarize_absmean(w),
    ):
        assert trits.shape == w.shape and trits.dtype == np.int8
        assert set(np.unique(trits)) <= {-1, 0, 1}
        assert np.all(np.asarray(alpha) >= 0) and np.all(np.isfinite(alpha))
        # A kept weight always has the sign of the float weight.
        assert np.all(trits * np.sign(w) >= 0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "fn", [ternarize_twn, ternarize_absmean, lambda w: ternarize_twn(w, per_channel=True)]
)
def test_non_finite_weights_rejected(fn, bad):
    w = np.ones((2, 3))
    w[1, 2] = bad
    with pytest.raises(TernarizeError, match=r"NaN or inf.*\(1, 2\)"):
        fn(w)


@pytest.mark.parametrize(
    "w, match",
    [
        (np.ones(3), "shape"),
        (np.ones((0, 3)), "shape"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_weight_shapes_rejected(w, match):
    with pytest.raises(TernarizeError, match=match):
        ternarize_twn(w)


# ---------------------------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------------------------


def _small_mlp(rng):
    return [
        (rng.normal(size=(6, 4)), rng.normal(size=6), True),
        (rng.normal(size=(3, 6)), rng.normal(size=3), False),
    ]


def test_fold_single_layer_matches_float_within_half_a_step():
    # One layer, per-layer alpha: the integer output times its scale must equal the float
    # ternarised pre-activation to within half an output step (plus the input rounding).
    rng = np.random.default_rng(1)
    layer = [(rng.normal(size=(5, 8)), rng.normal(size=5) * 3, True)]
    x = rng.normal(size=(200, 8)) * 4
    program = fold_to_program(layer, x)
    ((trits, alpha, _, _),) = ternarize_layers(layer)
    np.testing.assert_array_equal(program.layers[0].weights, trits)
    s_out = program.input_scale * float(alpha) * 2.0 ** program.layers[0].shift
    xq = program.quantize_input(x).astype(np.float64) * program.input_scale
    want = run_ternarized_float([(trits, alpha, layer[0][1], True)], xq)
    out = program.run_reference(x)
    got = out.astype(np.float64) * s_out
    bias_err = 0.5 * float(alpha) * program.input_scale  # bias rounded to accumulator units
    inside = out < 127  # saturated outputs are only bounded below
    assert np.all(np.abs(got - want)[inside] <= s_out / 2 + bias_err + 1e-9)
    assert np.all(want[~inside] >= 126.5 * s_out - bias_err)
    assert out.max() > 64  # the range is actually used


def test_fold_two_layers_scales_chain():
    # Dequantise the last layer with the product of every layer's exact scale
    # (input_scale * alpha * 2**shift): it must track the float ternarised model. Measured mean
    # relative error 0.020; a wrong scale handed to layer 1 gives 0.20.
    rng = np.random.default_rng(6)
    layers = [
        (rng.normal(size=(16, 8)), rng.normal(size=16), True),
        (rng.normal(size=(4, 16)), rng.normal(size=4) * 4, False),
    ]
    x = rng.normal(size=(300, 8)) * 2
    program = fold_to_program(layers, x)
    tern = ternarize_layers(layers)
    scale = program.input_scale
    for layer, (_, alpha, _, _) in zip(program.layers, tern, strict=True):
        scale *= float(alpha) * 2.0**layer.shift
    got = program.run_reference(x) * scale
    want = run_ternarized_float(tern, x)
    assert np.abs(got - want).mean() <= 0.05 * np.abs(want).mean()


def test_fold_default_input_scale_and_labels():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    program = fold_to_program(_small_mlp(rng), x, labels=["a", "b", "c"])
    assert isinstance(program, Program)
    assert program.input_scale == pytest.approx(np.abs(x).max() / 127)
    assert program.labels == ("a", "b", "c")
    assert [layer.relu for layer in program.layers] == [True, False]
    assert program.quantize_input(x).max() == 127 or program.quantize_input(x).min() == -127
    fixed = fold_to_program(_small_mlp(rng), x, input_scale=0.25)
    assert fixed.input_scale == 0.25


def test_fold_rejects_layers_that_do_not_chain():
    rng = np.random.default_rng(3)
    layers = [(np.ones((6, 4)), np.zeros(6), True), (np.ones((3, 5)), np.zeros(3), False)]
    with pytest.raises(TernarizeError, match="layer 1 W has 5 inputs but layer 0 has 6"):
        fold_to_program(layers, rng.normal(size=(10, 4)))
    with pytest.raises(TernarizeError, match=r"layer 0 b must .* shape \(6,\)"):
        fold_to_program([(np.ones((6, 4)), np.zeros(5), True)], rng.normal(size=(10, 4)))
    with pytest.raises(TernarizeError, match="relu must be a bool"):
        fold_to_program([(np.ones((6, 4)), np.zeros(6), 1)], rng.normal(size=(10, 4)))
    with pytest.raises(TernarizeError, match="empty"):
        fold_to_program([], rng.normal(size=(10, 4)))


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((10, 5)), "5 features per sample, layer 0 expects 4"),
        (np.ones((10, 4), dtype=np.int8), "float array .* not dtype int8"),
        (np.ones(4), r"shape \(N, K\)"),
        (np.full((2, 4), np.nan), "NaN"),
        (np.zeros((3, 4)), "all zeros"),
    ],
)
def test_fold_rejects_bad_calibration(x, match):
    with pytest.raises(TernarizeError, match=match):
        fold_to_program(_small_mlp(np.random.default_rng(4)), x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "xnor"}, "method must be one of twn, absmean"),
        ({"method": "absmean", "per_channel": True}, "per_channel is only supported"),
        ({"input_scale": -1.0}, "input_scale must be a positive"),
        ({"percentile": 0}, "percentile"),
    ],
)
def test_fold_rejects_bad_options(kwargs, match):
    rng = np.random.default_rng(5)
    with pytest.raises(TernarizeError, match=match):
        fold_to_program(_small_mlp(rng), rng.normal(size=(10, 4)), **kwargs)


# ---------------------------------------------------------------------------------------------
# End to end on the digits: float MLP -> ternarised float -> integer program
# ---------------------------------------------------------------------------------------------


def test_load_digits_split():
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.dtype == np.float32 and x_train.shape[1] == 64
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert x_train.min() == 0 and x_train.max() == 16
    assert set(np.unique(y_test)) == set(range(10))
    again = load_digits_split()
    np.testing.assert_array_equal(again[2], x_test)
    with pytest.raises(ValueError, match="test_size"):
        load_digits_split(test_size=1.5)


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_test, y_test = load_digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0)
        clf.fit(x_train, y_train)
    # sklearn stores coefs_ as (K, M); the float layers here are (M, K).
    n = len(clf.coefs_)
    layers = [
        (w.T, b, i < n - 1)
        for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True))
    ]
    return clf, layers, (x_train, y_train, x_test, y_test)


# Measured on the seed-0 split (sklearn 1.x): float MLP 0.967; ternarised without retraining,
# float 0.633 (twn) / 0.687 (absmean); integer program 0.638 / 0.680, agreeing with the
# ternarised float model's argmax on 99.3% / 98.2% of the test samples.
@pytest.mark.parametrize("method", ["twn", "absmean"])
def test_fold_digits_integer_program_tracks_ternarized_float(digits_mlp, method):
    clf, layers, (x_train, _, x_test, y_test) = digits_mlp
    program = fold_to_program(layers, x_train, method=method, labels=[str(d) for d in range(10)])
    float_acc = clf.score(x_test, y_test)
    tern_pred = run_ternarized_float(ternarize_layers(layers, method=method), x_test).argmax(1)
    int_pred = program.run_reference(x_test).argmax(1)
    tern_acc = float(np.mean(tern_pred == y_test))
    int_acc = float(np.mean(int_pred == y_test))
    agree = float(np.mean(int_pred == tern_pred))
    print(
        f"\n{method}: float {float_acc:.3f}, ternarised float {tern_acc:.3f}, "
        f"integer {int_acc:.3f}, argmax agreement {agree:.3f}, "
        f"sparsity {program.stats()['sparsity']}"
    )
    # The logits themselves, scaled back by the product of the layers' exact scales, track the
    # float ternarised logits (measured mean relative error 0.027 twn, 0.018 absmean).
    tern = ternarize_layers(layers, method=method)
    scale = program.input_scale
    for layer, (_, alpha, _, _) in zip(program.layers, tern, strict=True):
        scale *= float(alpha) * 2.0**layer.shift
    logits = program.run_reference(x_test) * scale
    want = run_ternarized_float(tern, x_test)
    assert np.abs(logits - want).mean() <= 0.06 * np.abs(want).mean()
    assert float_acc > 0.9
    assert agree >= 0.95
    assert abs(int_acc - tern_acc) <= 0.03
    assert int_acc > 0.5  # far above chance (0.1), even without ternary-aware training


def test_fold_digits_per_channel_runs(digits_mlp):
    # Per-channel alphas only choose which trits are kept (one scale per layer in hardware).
    _, layers, (x_train, _, x_test, y_test) = digits_mlp
    program = fold_to_program(layers, x_train, per_channel=True)
    tern = ternarize_layers(layers, per_channel=True)
    for layer, (trits, *_rest) in zip(program.layers, tern, strict=True):
        np.testing.assert_array_equal(layer.weights, trits)
    assert float(np.mean(program.run_reference(x_test).argmax(1) == y_test)) > 0.5
