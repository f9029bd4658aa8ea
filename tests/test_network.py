"""trine.contract.network and the convolution layers of trine.contract.reference.

Every layer is checked against a plain-Python transcription of its formula (loops over
outputs, channels and kernel taps, zero outside the input), on random shapes, strides and
paddings, with the requantiser's extremes; batches against single samples; every error names
the layer.
"""

import itertools

import numpy as np
import pytest

from trine.contract.network import network_shapes, run_network
from trine.contract.reference import Conv, Flatten, Layer, MaxPool, requantize


def conv_by_the_formula(x, w, bias, stride, padding, shift, relu):
    """``acc[o, q] = sum_{c, t} w[o, c, t] * x[c, q*s + t - p]``, x = 0 outside; then the
    dense layer's requantisation. Any number of spatial axes, plain Python."""
    c_in, *spatial = x.shape
    c_out, _, *kernel = w.shape
    out = [(n + 2 * p - k) // s + 1
           for n, k, s, p in zip(spatial, kernel, stride, padding, strict=True)]
    acc = np.zeros((c_out, *out), np.int64)
    for o in range(c_out):
        for q in itertools.product(*(range(n) for n in out)):
            total = 0
            for c in range(c_in):
                for t in itertools.product(*(range(k) for k in kernel)):
                    pos = [qi * s + ti - p
                           for qi, ti, s, p in zip(q, t, stride, padding, strict=True)]
                    if all(0 <= pi < n for pi, n in zip(pos, spatial, strict=True)):
                        total += int(w[(o, c, *t)]) * int(x[(c, *pos)])
            acc[(o, *q)] = total
    b = np.asarray(bias).reshape(-1, *([1] * len(out)))
    return requantize(acc, np.broadcast_to(b, acc.shape), shift, relu)


def pool_by_the_formula(x, kernel):
    c, *spatial = x.shape
    out = [n // k for n, k in zip(spatial, kernel, strict=True)]
    y = np.zeros((c, *out), np.int8)
    for ch in range(c):
        for q in itertools.product(*(range(n) for n in out)):
            window = [x[(ch, *[qi * k + ti for qi, ti, k in zip(q, t, kernel, strict=True)])]
                      for t in itertools.product(*(range(k) for k in kernel))]
            y[(ch, *q)] = max(window)
    return y


def random_conv(rng, ndim, c_in, c_out, kernel, stride, padding, big=False):
    w = rng.integers(-1, 2, (c_out, c_in, *kernel))
    if big:
        bias, shift = rng.integers(-(2**31), 2**31, c_out), int(rng.integers(20, 32))
    else:
        bias, shift = rng.integers(-200, 200, c_out), int(rng.integers(0, 5))
    return Conv(w, bias, stride, padding, shift, bool(rng.integers(0, 2)))


CONV1D_CASES = [  # (C_in, L, C_out, k, s, p)
    (1, 40, 6, 5, 2, 1),  # the MNIST-1D CNN's first layer, narrower
    (3, 10, 4, 3, 1, 0),
    (2, 7, 3, 7, 1, 0),  # the kernel fills the input: one output
    (2, 5, 3, 3, 3, 2),  # padding wider than a stride
    (4, 9, 5, 1, 2, 0),  # pointwise
    (3, 6, 2, 4, 5, 3),
]


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("c_in, length, c_out, k, s, p", CONV1D_CASES)
def test_conv1d_is_the_formula(c_in, length, c_out, k, s, p, big):
    rng = np.random.default_rng(c_in * 100 + length * 10 + k + big)
    layer = random_conv(rng, 1, c_in, c_out, (k,), s, p, big)
    x = rng.integers(-128, 128, (3, c_in, length)).astype(np.int8)
    x[0, 0, 0] = -128
    y = run_network(x, [layer], input_shape=(c_in, length))
    for n in range(3):
        expected = conv_by_the_formula(x[n], layer.weights, layer.bias, (s,), (p,), layer.shift,
                                       layer.relu)
        assert np.array_equal(y[n], expected)
    assert y.shape == (3, *layer.output_shape((c_in, length)))
    # one sample alone gives the same as in the batch
    assert np.array_equal(run_network(x[1], [layer], input_shape=(c_in, length)), y[1])


@pytest.mark.parametrize("c_in, h, w, c_out, kernel, stride, padding", [
    (1, 8, 8, 4, (3, 3), (1, 1), (1, 1)),  # digits-sized
    (2, 6, 7, 3, (2, 3), (2, 1), (0, 1)),
    (3, 5, 5, 2, (5, 5), (1, 1), (0, 0)),
    (2, 4, 9, 3, (1, 4), (1, 3), (2, 0)),
])
def test_conv2d_is_the_formula(c_in, h, w, c_out, kernel, stride, padding):
    rng = np.random.default_rng(h * w + c_in)
    layer = random_conv(rng, 2, c_in, c_out, kernel, stride, padding)
    x = rng.integers(-128, 128, (2, c_in, h, w)).astype(np.int8)
    y = run_network(x, [layer], input_shape=(c_in, h, w))
    for n in range(2):
        assert np.array_equal(y[n], conv_by_the_formula(x[n], layer.weights, layer.bias, stride,
                                                         padding, layer.shift, layer.relu))


def test_extremes_are_exact_at_a_wide_fan_in():
    # every term -128 x -1: the accumulator's bound, 128 * C_in * k
    c_in, k = 1024, 3
    layer = Conv(-np.ones((2, c_in, k), np.int8), [0, -(2**31)], 1, 0, 0, False)
    x = np.full((1, c_in, 5), -128, np.int8)
    y = run_network(x, [layer], input_shape=(c_in, 5))
    assert (y[0, 0] == 127).all() and (y[0, 1] == -128).all()
    layer = Conv(-np.ones((1, c_in, k), np.int8), [-128 * c_in * k + 5], 1, 0, 0, False)
    assert (run_network(x, [layer], input_shape=(c_in, 5)) == 5).all()


@pytest.mark.parametrize("shape, kernel", [((3, 8), (2,)), ((2, 9), (3,)), ((2, 4, 6), (2, 3)),
                                           ((1, 3, 3), (3, 1))])
def test_maxpool_is_the_formula(shape, kernel):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, (4, *shape)).astype(np.int8)
    pool = MaxPool(kernel if len(kernel) > 1 else kernel[0], ndim=len(kernel))
    y = pool(x)
    for n in range(4):
        assert np.array_equal(y[n], pool_by_the_formula(x[n], kernel))


def test_flatten_is_pytorch_order_and_a_cnn_runs_end_to_end():
    rng = np.random.default_rng(3)
    conv = random_conv(rng, 1, 2, 4, (3,), 1, 1)
    dense = Layer(rng.integers(-1, 2, (3, 4 * 4)), rng.integers(-50, 50, 3), 1, False)
    layers = [conv, MaxPool(2), Flatten(), dense]
    x = rng.integers(-128, 128, (5, 2, 8)).astype(np.int8)
    assert network_shapes(layers, (2, 8)) == [(2, 8), (4, 8), (4, 4), (16,), (3,)]
    y = run_network(x, layers, input_shape=(2, 8))
    for n in range(5):
        h = pool_by_the_formula(conv_by_the_formula(x[n], conv.weights, conv.bias, (1,), (1,),
                                                    conv.shift, conv.relu), (2,))
        flat = h.reshape(-1)  # channel-major: (c, l) -> c * L + l, as torch.flatten(1)
        assert flat[5] == h[1, 1]
        assert np.array_equal(y[n], run_network(flat, [dense]))


@pytest.mark.parametrize("layers, shape, message", [
    ([Conv(np.ones((2, 3, 3)), [0, 0])], (2, 10),
     r"layer 0 \(Conv1d\): Conv1d expects 3 input channels, not 2"),
    ([Conv(np.ones((2, 1, 5)), [0, 0], padding=1)], (1, 2),
     r"layer 0 \(Conv1d\): Conv1d kernel 5 is larger than its padded input length 4 "
     r"\(2 \+ 2 x 1\)"),
    ([Conv(np.ones((2, 1, 3, 3)), [0, 0])], (1, 10),
     r"layer 0 \(Conv2d\): Conv2d needs an input of shape \(C, H, W\), not \(1, 10\)"),
    ([Conv(np.ones((2, 1, 3)), [0, 0]), MaxPool(3)], (1, 10),
     r"layer 1 \(MaxPool1d\): MaxPool1d window 3 does not divide the input size 8"),
    ([Conv(np.ones((2, 1, 3)), [0, 0]), Layer(np.ones((2, 16)), [0, 0])], (1, 10),
     r"layer 1 \(Dense\) needs a flat input, not \(2, 8\): put a Flatten before it"),
    ([Conv(np.ones((2, 1, 3)), [0, 0]), Flatten(), Layer(np.ones((2, 15)), [0, 0])], (1, 10),
     r"layer 2 expects 15 inputs but layer 1 has 16 outputs"),
    ([Conv(np.ones((2, 1, 3)), [0, 0])], None, r"starts with Conv1d needs its input shape"),
    ([Flatten()], (0, 3), r"input shape must be .* every size >= 1"),
])
def test_shapes_that_do_not_chain_are_named(layers, shape, message):
    with pytest.raises(ValueError, match=message):
        network_shapes(layers, shape)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=np.ones((2, 3)), bias=[0, 0]), r"conv weights must have shape"),
    (dict(weights=np.ones((2, 1, 3)), bias=[0, 0], stride=0), r"stride must be >= 1, not 0"),
    (dict(weights=np.ones((2, 1, 3)), bias=[0, 0], padding=-1), r"padding must be >= 0"),
    (dict(weights=np.ones((2, 1, 3, 3)), bias=[0, 0], stride=(1,)),
     r"stride must be an integer or 2 integers"),
    (dict(weights=np.full((2, 1, 3), 2), bias=[0, 0]), r"ternary"),
    (dict(weights=np.ones((2, 1, 3)), bias=[0]), r"bias must have shape \(2,\)"),
])
def test_bad_conv_layers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv(**kwargs)


def test_bad_pools_and_inputs_are_refused():
    with pytest.raises(ValueError, match="pool kernel must be >= 1"):
        MaxPool(0)
    with pytest.raises(ValueError, match="MaxPool pools 1 or 2 spatial axes"):
        MaxPool((2, 2, 2))
    layer = Conv(np.ones((2, 1, 3)), [0, 0])
    with pytest.raises(ValueError, match=r"x must have shape \(1, 8\) or \(N, 1, 8\)"):
        run_network(np.zeros((2, 8), np.int8), [layer], input_shape=(1, 8))
    with pytest.raises(ValueError, match=r"x must be in \[-128, 127\]: value 300"):
        run_network(np.full((1, 8), 300), [layer], input_shape=(1, 8))
