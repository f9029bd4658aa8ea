"""trine.contract: the ternary-activation option of dense and convolution layers (FATNN)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.contract.errors import FormatError
from trine.contract.network import run_network, ternary_inputs
from trine.contract.reference import (
    Conv,
    Flatten,
    Layer,
    MaxPool,
    ternarize,
    ternary_layer,
)
from trine.contract.spec import (
    TERNARY_THRESHOLD_MAX,
    TERNARY_THRESHOLD_MIN,
    pack_trits,
    ternary_accumulator_width,
    unpack_trits,
)


def naive(x, w, bias, shift, relu, t=None):
    """The docstring's rule in Python integers, one output at a time."""
    out = []
    for j in range(len(w)):
        v = sum(int(w[j][k]) * int(x[k]) for k in range(len(x))) + int(bias[j])
        if shift > 0:
            v = (v + 2 ** (shift - 1)) // 2**shift
        if relu:
            v = max(v, 0)
        v = min(max(v, -128), 127)
        if t is not None:
            v = 1 if v >= t else -1 if v <= -t else 0
        out.append(v)
    return np.array(out, dtype=np.int8)


def test_ternarize_rule_by_hand():
    y = np.array([-128, -3, -2, -1, 0, 1, 2, 3, 127], np.int8)
    assert ternarize(y, 2).tolist() == [-1, -1, -1, 0, 0, 0, 1, 1, 1]
    assert ternarize(y, 1).tolist() == [-1, -1, -1, -1, 0, 1, 1, 1, 1]
    assert ternarize(y, 127).tolist() == [-1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert ternarize(y, 2).dtype == np.int8


def test_a_ternary_layer_by_hand():
    # acc = [1*5 + 0*-7 + -1*20, -1*5 + 1*-7 + 1*20] = [-15, 8]; bias [+1, -2] -> [-14, 6];
    # shift 1: floor((v + 1) / 2) = [-7, 3]; threshold 3 -> [-1, +1]; threshold 4 -> [-1, 0]
    w = np.array([[1, 0, -1], [-1, 1, 1]], np.int8)
    x = np.array([5, -7, 20], np.int8)
    bias = np.array([1, -2])
    assert ternary_layer(x, w, bias, 1, False).tolist() == [-7, 3]
    assert ternary_layer(x, w, bias, 1, False, ternary_threshold=3).tolist() == [-1, 1]
    assert ternary_layer(x, w, bias, 1, False, ternary_threshold=4).tolist() == [-1, 0]
    assert ternary_layer(x, w, bias, 1, True, ternary_threshold=3).tolist() == [0, 1]
    # the next layer on trits: [-1, 1] . [1, 1] = 0, . [-1, 1] = 2
    nxt = Layer(np.array([[1, 1], [-1, 1]], np.int8), np.zeros(2, np.int64))
    assert nxt(np.array([-1, 1], np.int8)).tolist() == [0, 2]


@st.composite
def ternary_layers(draw, max_k=30, max_m=10):
    k = draw(st.integers(1, max_k))
    m = draw(st.integers(1, max_m))
    w = draw(hnp.arrays(np.int8, (m, k), elements=st.integers(-1, 1)))
    bias = draw(hnp.arrays(np.int64, (m,), elements=st.integers(-300, 300)))
    t = draw(st.integers(TERNARY_THRESHOLD_MIN, TERNARY_THRESHOLD_MAX))
    return w, bias, draw(st.integers(0, 6)), draw(st.booleans()), t


@settings(max_examples=200)
@given(ternary_layers(), st.data())
def test_ternary_outputs_match_the_rule(layer, data):
    w, bias, shift, relu, t = layer
    trit_input = data.draw(st.booleans())
    x = data.draw(hnp.arrays(np.int8, (5, w.shape[1]),
                             elements=st.integers(-1, 1) if trit_input
                             else st.integers(-128, 127)))
    got = Layer(w, bias, shift, relu, ternary_threshold=t)(x)
    assert got.dtype == np.int8
    for i in range(len(x)):
        assert np.array_equal(got[i], naive(x[i], w, bias, shift, relu, t))


@settings(max_examples=50)
@given(st.data())
def test_mixed_mlp_chains(data):
    """int8 input layer, ternary hidden layers, int8 logits: run_network against the
    per-layer rule in Python integers."""
    widths = data.draw(st.lists(st.integers(1, 12), min_size=3, max_size=5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    layers = []
    for i, (k, m) in enumerate(zip(widths, widths[1:], strict=False)):
        last = i == len(widths) - 2
        layers.append(Layer(rng.integers(-1, 2, (m, k)).astype(np.int8),
                            rng.integers(-50, 50, m), int(rng.integers(0, 4)),
                            bool(rng.integers(0, 2)),
                            ternary_threshold=None if last else int(rng.integers(1, 20))))
    x = rng.integers(-128, 128, (4, widths[0])).astype(np.int8)
    y = run_network(x, layers)
    for n in range(len(x)):
        a = x[n]
        for layer in layers:
            a = naive(a, layer.weights, layer.bias, layer.shift, layer.relu,
                      layer.ternary_threshold)
            if layer is not layers[-1]:
                assert set(a.tolist()) <= {-1, 0, 1}
        assert np.array_equal(y[n], a)


def naive_conv1d(x, w, bias, stride, padding, shift, relu, t):
    c_out, c_in, k = w.shape
    length = x.shape[1]
    xp = np.zeros((c_in, length + 2 * padding), np.int64)
    xp[:, padding:padding + length] = x
    out_len = (length + 2 * padding - k) // stride + 1
    y = np.zeros((c_out, out_len), np.int8)
    for q in range(out_len):
        window = xp[:, q * stride:q * stride + k].reshape(-1)
        y[:, q] = naive(window, w.reshape(c_out, -1), bias, shift, relu, t)
    return y


def test_mixed_cnn_chains():
    """Conv (int8 in, trits out), max-pool of trits, conv (trits in and out), flatten, dense
    (trits in, int8 out), against a loop written from the docstrings."""
    rng = np.random.default_rng(7)
    w0 = rng.integers(-1, 2, (4, 1, 3)).astype(np.int8)
    w1 = rng.integers(-1, 2, (5, 4, 3)).astype(np.int8)
    w2 = rng.integers(-1, 2, (3, 5 * 4)).astype(np.int8)
    b0, b1, b2 = rng.integers(-20, 20, 4), rng.integers(-3, 3, 5), rng.integers(-5, 5, 3)
    layers = [Conv(w0, b0, 1, 1, 2, False, ternary_threshold=3), MaxPool(2),
              Conv(w1, b1, 1, 1, 0, False, ternary_threshold=2), Flatten(),
              Layer(w2, b2, 0, False)]
    assert ternary_inputs(layers) == (False, True, True, True, True)
    x = rng.integers(-128, 128, (6, 1, 8)).astype(np.int8)
    y = run_network(x, layers, (1, 8))
    for n in range(len(x)):
        a = naive_conv1d(x[n], w0, b0, 1, 1, 2, False, 3)
        a = a.reshape(4, 4, 2).max(axis=2)
        a = naive_conv1d(a, w1, b1, 1, 1, 0, False, 2)
        a = naive(a.reshape(-1), w2, b2, 0, False)
        assert np.array_equal(y[n], a)
    assert set(np.unique(run_network(x, layers[:4], (1, 8)))) <= {-1, 0, 1}


def test_conv2d_ternary_equals_its_dense_rows():
    rng = np.random.default_rng(3)
    conv = Conv(rng.integers(-1, 2, (3, 2, 2, 2)), rng.integers(-9, 9, 3), 1, 0, 1, False,
                ternary_threshold=2)
    assert conv.ternary_output and conv.dense.ternary_threshold == 2
    x = rng.integers(-1, 2, (2, 2, 3, 3)).astype(np.int8)
    y = conv(x)
    for i in range(2):
        for j in range(2):
            window = x[:, :, i:i + 2, j:j + 2].reshape(2, -1)
            assert np.array_equal(y[:, :, i, j], conv.dense(window))


def test_default_is_int8_and_signatures_are_unchanged():
    layer = Layer(np.ones((2, 3), np.int8), np.zeros(2), 1, True)
    assert layer.ternary_threshold is None and not layer.ternary_output
    conv = Conv(np.ones((2, 1, 3), np.int8), np.zeros(2), 1, 0, 0, False)
    assert conv.ternary_threshold is None and not conv.ternary_output
    assert ternary_inputs([layer]) == (False,)


@pytest.mark.parametrize("bad, message", [
    (0, r"ternary_threshold must be in \[1, 127\] \(None for int8 outputs\), not 0"),
    (128, r"ternary_threshold must be in \[1, 127\] \(None for int8 outputs\), not 128"),
    (-3, r"ternary_threshold must be in \[1, 127\]"),
    (True, r"ternary_threshold must be None \(int8 outputs\) or an integer in \[1, 127\], "
           r"not True"),
    (2.0, r"ternary_threshold must be None \(int8 outputs\) or an integer in \[1, 127\], "
          r"not 2.0"),
    ("3", r"ternary_threshold must be None .* not '3'"),
])
def test_thresholds_are_validated(bad, message):
    w = np.ones((2, 3), np.int8)
    with pytest.raises(FormatError, match=message):
        Layer(w, np.zeros(2), ternary_threshold=bad)
    with pytest.raises(FormatError, match=message):
        Conv(w.reshape(2, 1, 3), np.zeros(2), ternary_threshold=bad)
    with pytest.raises(FormatError, match=message):
        ternary_layer(np.zeros(3, np.int8), w, np.zeros(2), ternary_threshold=bad)


def test_ternarize_refuses_a_missing_threshold():
    with pytest.raises(FormatError, match=r"threshold must be an integer in \[1, 127\], not None"):
        ternarize(np.zeros(3, np.int8), None)
    with pytest.raises(FormatError, match=r"threshold must be in \[1, 127\]"):
        ternarize(np.zeros(3, np.int8), 0)


def test_a_layer_and_a_threshold_are_not_given_twice():
    layer = Layer(np.ones((2, 3), np.int8), np.zeros(2))
    with pytest.raises(FormatError, match="either a Layer or weights"):
        ternary_layer(np.zeros(3, np.int8), layer, ternary_threshold=2)


def test_ternary_inputs_follow_pooling_and_flatten():
    w = np.ones((2, 1, 1), np.int8)
    layers = [Conv(w, np.zeros(2), ternary_threshold=1), MaxPool(1), Flatten(),
              Layer(np.ones((2, 2), np.int8), np.zeros(2)),
              Layer(np.ones((2, 2), np.int8), np.zeros(2), ternary_threshold=5),
              Layer(np.ones((1, 2), np.int8), np.zeros(1))]
    assert ternary_inputs(layers) == (False, True, True, True, False, True)
    with pytest.raises(FormatError, match="layer 1 must be"):
        ternary_inputs([layers[0], "dense"])


def test_ternary_activations_pack_like_weights():
    rng = np.random.default_rng(0)
    layer = Layer(rng.integers(-1, 2, (17, 9)), rng.integers(-4, 4, 17), ternary_threshold=1)
    a = layer(rng.integers(-128, 128, (3, 9)))
    raw = pack_trits(a)
    assert len(raw) == math.ceil(a.size / 5)
    assert np.array_equal(unpack_trits(raw, a.size).reshape(a.shape), a)


@pytest.mark.parametrize("fan_in", [1, 2, 3, 4, 7, 8, 64, 1000, 1 << 16])
def test_ternary_accumulator_width_holds_the_extremes_and_no_more(fan_in):
    bits = ternary_accumulator_width(fan_in)
    assert -(1 << (bits - 1)) <= -fan_in and fan_in <= (1 << (bits - 1)) - 1
    assert fan_in > (1 << (bits - 2)) - 1  # one bit fewer would not hold +K


@pytest.mark.parametrize("fan_in", [0, -1, (1 << 16) + 1, True, 2.0])
def test_ternary_accumulator_width_rejects(fan_in):
    with pytest.raises(FormatError, match="fan-in must be an integer"):
        ternary_accumulator_width(fan_in)
