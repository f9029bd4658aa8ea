"""trine.host.ternarize and trine.host.data: TWN / absmean ternarisation and folding a float
network (MLPs, and convolutions with max-pooling and flatten)."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.contract.reference import Conv, Flatten, MaxPool
from trine.host.data import load_digits_split
from trine.host.program import Program
from trine.host.ternarize import (
    FloatConv,
    TernarizedConv,
    TernarizeError,
    fold_to_program,
    run_float,
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
        ({"method": "xnor"}, "method must be one of gptq, twn, absmean"),
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


# ---------------------------------------------------------------------------------------------
# Convolutional networks
# ---------------------------------------------------------------------------------------------


def _conv_reference(x, w, b, stride, padding, relu):
    """A 1-D or 2-D convolution written out from its definition (zero outside the input)."""
    n, c_in, *spatial = x.shape
    kernel = w.shape[2:]
    out = [(size + 2 * p - k) // s + 1
           for size, k, s, p in zip(spatial, kernel, stride, padding, strict=True)]
    y = np.zeros((n, w.shape[0], *out))
    for q in np.ndindex(*out):
        for t in np.ndindex(*kernel):
            pos = [qi * s + ti - p for qi, s, ti, p in zip(q, stride, t, padding, strict=True)]
            if all(0 <= v < size for v, size in zip(pos, spatial, strict=True)):
                y[(slice(None), slice(None), *q)] += (
                    x[(slice(None), slice(None), *pos)] @ w[(slice(None), slice(None), *t)].T)
    y += b.reshape(-1, *(1,) * len(out))
    return np.maximum(y, 0) if relu else y


def _small_cnn(rng, ndim=2):
    """(2, 7, 6) -> conv 3x2 s(2, 1) p(1, 0) relu -> (3, 4, 5) -> ... -> dense 4."""
    if ndim == 1:
        conv = FloatConv(rng.normal(size=(3, 2, 3)), rng.normal(size=3), 2, 1, True)
        return [conv, MaxPool(2), Flatten(), (rng.normal(size=(4, 9)), rng.normal(size=4),
                                              False)], (2, 11)
    conv = FloatConv(rng.normal(size=(3, 2, 3, 2)), rng.normal(size=3), (2, 1), (1, 0), True)
    return [conv, MaxPool((2, 1)), Flatten(), (rng.normal(size=(4, 30)), rng.normal(size=4),
                                               False)], (2, 7, 6)


@pytest.mark.parametrize("ndim", [1, 2])
def test_run_float_of_a_cnn_equals_the_definition(ndim):
    rng = np.random.default_rng(12)
    layers, shape = _small_cnn(rng, ndim)
    x = rng.normal(size=(5, *shape))
    conv, pool, _, (w, b, _) = layers
    h = _conv_reference(x, conv.weights, conv.bias, conv.stride, conv.padding, True)
    h = pool(h)
    want = h.reshape(5, -1) @ w.T + b
    assert np.allclose(run_float(layers, x), want, rtol=1e-12, atol=1e-12)
    assert np.array_equal(run_float(layers, x.reshape(5, -1), shape), run_float(layers, x))


def test_ternarize_a_conv_per_output_channel():
    rng = np.random.default_rng(13)
    layers, _ = _small_cnn(rng)
    conv = layers[0]
    for kwargs in ({}, {"per_channel": True}, {"method": "absmean"}):
        tern = ternarize_layers(layers, **kwargs)
        t = tern[0]
        assert isinstance(t, TernarizedConv) and t.trits.shape == conv.weights.shape
        assert (t.stride, t.padding, t.relu) == (conv.stride, conv.padding, True)
        assert tern[1] is layers[1] and tern[2] is layers[2]
        if kwargs.get("method") == "absmean":
            trits, alpha = ternarize_absmean(conv.matrix)
        else:
            trits, alpha = ternarize_twn(conv.matrix, per_channel=bool(kwargs))
        np.testing.assert_array_equal(t.matrix, trits)
        np.testing.assert_array_equal(t.alpha, alpha)
    # The ternarised float model is the definition with alpha * trits as weights.
    x = rng.normal(size=(4, 2, 7, 6))
    t, _, _, (trits, alpha, b, _) = ternarize_layers(layers, per_channel=True)
    h = _conv_reference(x, t.trits * t.alpha[:, None, None, None], t.bias, t.stride, t.padding,
                        True)
    want = (MaxPool((2, 1))(h).reshape(4, -1) @ trits.T) * alpha + b
    assert np.allclose(run_ternarized_float(ternarize_layers(layers, per_channel=True), x), want)


def test_fold_single_conv_layer_matches_float_within_half_a_step():
    # As for a dense layer: one conv layer, per-layer alpha, integer outputs times their scale
    # equal the ternarised float model on the quantised input within half an output step.
    rng = np.random.default_rng(14)
    layers = [FloatConv(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 3, 1, 1, True)]
    x = rng.normal(size=(60, 2, 5, 5)) * 4
    program = fold_to_program(layers, x, input_shape=(2, 5, 5))
    (t,) = ternarize_layers(layers)
    (layer,) = program.layers
    assert isinstance(layer, Conv) and (layer.stride, layer.padding) == ((1, 1), (1, 1))
    np.testing.assert_array_equal(layer.weights, t.trits)
    s_out = program.input_scale * float(t.alpha) * 2.0 ** layer.shift
    xq = program.quantize_input(x).astype(np.float64) * program.input_scale
    want = run_ternarized_float([t], xq)
    out = program.run_reference(x)
    got = out.astype(np.float64) * s_out
    bias_err = 0.5 * float(t.alpha) * program.input_scale
    inside = out < 127
    assert np.all(np.abs(got - want)[inside] <= s_out / 2 + bias_err + 1e-9)
    assert np.all(want[~inside] >= 126.5 * s_out - bias_err)
    assert out.max() > 64


def test_fold_a_cnn_flat_or_shaped_calibration():
    rng = np.random.default_rng(15)
    layers, shape = _small_cnn(rng)
    x = rng.normal(size=(40, *shape))
    program = fold_to_program(layers, x, input_shape=shape, labels=list("abcd"))
    assert program.input_shape == shape and program.labels == tuple("abcd")
    assert [type(layer) for layer in program.layers][:3] == [Conv, MaxPool, Flatten]
    assert fold_to_program(layers, x.reshape(40, -1), input_shape=shape) == \
        fold_to_program(layers, x, input_shape=shape)
    assert program.to_bytes() == Program.from_bytes(program.to_bytes()).to_bytes()


@pytest.mark.parametrize("case, match", [
    ("no input shape", "a network that starts with Conv2d needs its input shape"),
    ("wrong channels", r"layer 0 \(Conv2d\): Conv2d expects 2 input channels, not 3"),
    ("dense on feature maps", r"layer 2 \(Dense\) needs a flat input, not \(3, 2, 5\)"),
    ("pool that does not tile", r"layer 1 \(MaxPool2d\): MaxPool2d window 3 does not divide"),
    ("calibration of another shape",
     r"calibration_x must have shape \(N, 2, 7, 6\) or \(N, 84\) with N >= 1, not \(5, 2, 7\)"),
    ("integer calibration", "calibration_x must be a float array of raw inputs, not dtype int64"),
])
def test_fold_a_cnn_rejects(case, match):
    rng = np.random.default_rng(16)
    layers, shape = _small_cnn(rng)
    x = rng.normal(size=(5, *shape))
    kwargs = {"input_shape": shape}
    if case == "no input shape":
        kwargs = {}
    elif case == "wrong channels":
        kwargs["input_shape"], x = (3, 7, 6), rng.normal(size=(5, 3, 7, 6))
    elif case == "dense on feature maps":
        layers = [layers[0], layers[1], layers[3]]
    elif case == "pool that does not tile":
        layers = [layers[0], MaxPool(3, ndim=2), Flatten(), layers[3]]
    elif case == "calibration of another shape":
        x = x[:, :, :, 0]
    else:
        x = np.ones((5, *shape), np.int64)
    with pytest.raises(TernarizeError, match=match):
        fold_to_program(layers, x, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"weights": np.ones((2, 3))}, r"conv weights must be a real array of shape \(C_out, C_in"),
    ({"weights": np.ones((2, 0, 3))}, "every size >= 1"),
    ({"weights": np.full((2, 1, 3), np.nan)}, r"conv weights must be finite .*\(0, 0\)"),
    ({"bias": np.zeros(3)}, r"conv bias must be a real array of shape \(2,\)"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"stride": (1, 1)}, "stride must be an integer or 1 integers"),
    ({"padding": -1}, "padding must be >= 0"),
    ({"relu": 1}, "conv relu must be a bool"),
])
def test_float_conv_checks_its_arguments(kwargs, match):
    args = {"weights": np.ones((2, 1, 3)), "bias": np.zeros(2), **kwargs}
    with pytest.raises(TernarizeError, match=match):
        FloatConv(**args)
