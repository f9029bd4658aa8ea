"""trine.contract.reference: the normative integer model."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.contract.network import run_network
from trine.contract.reference import Layer, requantize, ternary_layer, ternary_matmul


def naive_layer(x, w, bias, shift, relu):
    """The spec's formula in plain Python integers, one output at a time."""
    out = []
    for j in range(len(w)):
        v = sum(int(w[j][k]) * int(x[k]) for k in range(len(x))) + int(bias[j])
        if shift > 0:
            v = (v + 2 ** (shift - 1)) // 2**shift  # Python // is floor division
        if relu:
            v = max(v, 0)
        out.append(min(max(v, -128), 127))
    return np.array(out, dtype=np.int8)


@st.composite
def layers(draw, max_k=40, max_m=12):
    k = draw(st.integers(1, max_k))
    m = draw(st.integers(1, max_m))
    w = draw(hnp.arrays(np.int8, (m, k), elements=st.integers(-1, 1)))
    bias = draw(hnp.arrays(np.int64, (m,), elements=st.integers(-(2**31), 2**31 - 1)))
    small = draw(st.booleans())
    if small:
        bias = bias % 2001 - 1000
    return w, bias, draw(st.integers(0, 31)), draw(st.booleans())


acts = st.integers(-128, 127)


@settings(max_examples=300)
@given(layers(), st.data())
def test_matches_naive_formula(layer, data):
    w, bias, shift, relu = layer
    x = data.draw(hnp.arrays(np.int8, (w.shape[1],), elements=acts))
    expected = naive_layer(x, w, bias, shift, relu)
    assert np.array_equal(ternary_layer(x, w, bias, shift, relu), expected)


@given(layers(), st.data())
def test_batch_equals_rows(layer, data):
    w, bias, shift, relu = layer
    xs = data.draw(hnp.arrays(np.int8, (5, w.shape[1]), elements=acts))
    batch = ternary_layer(xs, w, bias, shift, relu)
    assert batch.shape == (5, w.shape[0]) and batch.dtype == np.int8
    for i in range(5):
        assert np.array_equal(batch[i], ternary_layer(xs[i], w, bias, shift, relu))


@given(layers(), st.data())
def test_zero_weights_give_bias_only(layer, data):
    w, bias, shift, relu = layer
    x = data.draw(hnp.arrays(np.int8, (w.shape[1],), elements=acts))
    got = ternary_layer(x, np.zeros_like(w), bias, shift, relu)
    assert np.array_equal(got, requantize(np.zeros(len(bias), np.int64), bias, shift, relu))


@given(layers(), st.data())
def test_linear_before_requantisation(layer, data):
    w, *_ = layer
    k = w.shape[1]
    a = data.draw(hnp.arrays(np.int64, (k,), elements=st.integers(-64, 63)))
    b = data.draw(hnp.arrays(np.int64, (k,), elements=st.integers(-64, 64)))
    assert np.array_equal(
        ternary_matmul((a + b).astype(np.int8), w),
        ternary_matmul(a.astype(np.int8), w) + ternary_matmul(b.astype(np.int8), w),
    )
    a8 = a.astype(np.int8)
    assert np.array_equal(ternary_matmul(a8, -w), -ternary_matmul(a8, w))


def test_extremes_are_exact_at_the_largest_fan_in():
    k = 1 << 16
    x = np.full(k, -128, np.int8)
    assert ternary_matmul(x, -np.ones((1, k), np.int8))[0] == 128 * k
    assert ternary_matmul(x, np.ones((1, k), np.int8))[0] == -128 * k


def test_float_path_is_exact_on_large_random_layers():
    rng = np.random.default_rng(7)
    w = rng.integers(-1, 2, (64, 65536)).astype(np.int8)
    x = rng.integers(-128, 128, (3, 65536)).astype(np.int8)
    assert np.array_equal(ternary_matmul(x, w), x.astype(np.int64) @ w.T.astype(np.int64))


def test_rounding_is_half_up_and_arithmetic():
    acc = np.array([5, 6, 7, -5, -6, -7, -8, 3, -3])
    # shift 2: v/4 rounded half up = floor(v/4 + 1/2)
    expected = [1, 2, 2, -1, -1, -2, -2, 1, -1]
    assert list(requantize(acc, np.zeros(9, np.int64), 2, False)) == expected
    assert list(requantize([1000, -1000], [0, 0], 0, False)) == [127, -128]
    assert list(requantize([1000, -1000], [0, 0], 0, True)) == [127, 0]
    big = np.array([2**31 - 1 + 128 * 65536])  # bias + accumulator beyond int32
    assert requantize(big, [2**31 - 1], 31, False)[0] == ((int(big[0]) + 2**31 - 1 + 2**30) >> 31)


def test_run_network_chains_layers():
    rng = np.random.default_rng(3)
    net = [
        Layer(rng.integers(-1, 2, (10, 7)), rng.integers(-50, 50, 10), 1, True),
        Layer(rng.integers(-1, 2, (4, 10)), rng.integers(-50, 50, 4), 2, False),
    ]
    x = rng.integers(-128, 128, (6, 7)).astype(np.int8)
    expected = ternary_layer(ternary_layer(x, net[0]), net[1])
    assert np.array_equal(run_network(x, net), expected)
    assert np.array_equal(run_network(x[0], net), expected[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights=[[0, 2]], bias=[0]), r"ternary .* value 2 at position \(0, 1\)"),
        (dict(weights=[0, 1], bias=[0]), r"shape \(M, K\)"),
        (dict(weights=np.zeros((2, 0)), bias=[0, 0]), r"fan-in K = 0"),
        (dict(weights=[[0, 1]], bias=[0, 0]), r"bias must have shape \(1,\)"),
        (dict(weights=[[0, 1]], bias=[2**31]), r"int32: value 2147483648 at 0"),
        (dict(weights=[[0, 1]], bias=[0.5]), r"bias must be integers"),
        (dict(weights=[[0, 1]], bias=[0], shift=32), r"shift must be in \[0, 31\], not 32"),
        (dict(weights=[[0, 1]], bias=[0], shift=-1), r"shift must be in"),
        (dict(weights=[[0, 1]], bias=[0], shift=1.0), r"shift must be an integer"),
        (dict(weights=[[0, 1]], bias=[0], relu=1), r"relu must be a bool"),
    ],
)
def test_layer_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Layer(**kwargs)


def test_activation_validation():
    layer = Layer([[1, 0, -1]], [0])
    with pytest.raises(ValueError, match=r"has 2 inputs per sample, the weights expect 3"):
        ternary_layer(np.zeros(2, np.int8), layer)
    with pytest.raises(ValueError, match=r"\[-128, 127\]: value 128 at 2"):
        ternary_layer(np.array([0, 0, 128]), layer)
    with pytest.raises(ValueError, match=r"integer array"):
        ternary_layer(np.zeros(3, np.float32), layer)
    with pytest.raises(ValueError, match=r"shape \(K,\) or \(N, K\)"):
        ternary_layer(np.zeros((1, 1, 3), np.int8), layer)
    with pytest.raises(ValueError, match=r"not both"):
        ternary_layer(np.zeros(3, np.int8), layer, [0])


def test_run_network_validation():
    a = Layer(np.ones((4, 3)), np.zeros(4, np.int64))
    b = Layer(np.ones((2, 5)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"layer 1 expects 5 inputs but layer 0 has 4 outputs"):
        run_network(np.zeros(3, np.int8), [a, b])
    with pytest.raises(ValueError, match=r"at least one layer"):
        run_network(np.zeros(3, np.int8), [])
    with pytest.raises(ValueError, match=r"layer 0 must be a trine.contract.reference.Layer"):
        run_network(np.zeros(3, np.int8), [(np.ones((4, 3)), np.zeros(4))])
