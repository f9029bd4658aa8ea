"""trine.contract.device_image: tile order and bias folding reproduce the reference exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    LAYER_ENTRY_SIZE,
    LayerEntry,
    beat_bytes,
    compile_image,
    tile_layer,
)
from trine.contract.network import run_network
from trine.contract.reference import Layer
from trine.contract.spec import ACT_MAX, ACT_MIN, unpack_trits


def run_image(image, x, n_outputs):
    """Execute a device image the way the gateware does (array without correction)."""
    lanes, rows, bb = image.lanes, image.rows, beat_bytes(image.lanes, image.rows)
    y = x.astype(np.int64)
    for e in image.entries:
        k_pad = e.chunks * lanes
        xs = np.zeros((len(y), k_pad), np.int64)
        xs[:, : y.shape[1]] = y
        out = np.zeros((len(y), e.blocks * rows), np.int64)
        for j in range(e.blocks):
            for c in range(e.chunks):
                word = e.weight_base + j * e.chunks + c
                beat = unpack_trits(image.weights[word * bb : (word + 1) * bb], rows * lanes)
                w = beat.reshape(rows, lanes).astype(np.int64)
                acts = xs[:, c * lanes : (c + 1) * lanes]
                # the lane feeds ~x for -1: x * w - (w == -1)
                out[:, j * rows : (j + 1) * rows] += acts @ w.T - (w == -1).sum(axis=1)
        v = out + image.biases[e.bias_base : e.bias_base + e.blocks * rows]
        v >>= e.shift
        v = np.clip(np.maximum(v, 0) if e.relu else v, ACT_MIN, ACT_MAX)
        y = v[:, : e.fan_out]
    assert y.shape[1] == n_outputs
    return y.astype(np.int8)


@st.composite
def networks(draw):
    widths = [draw(st.integers(1, 23)) for _ in range(draw(st.integers(2, 4)))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = []
    for k, m in zip(widths, widths[1:], strict=False):
        big = draw(st.booleans())
        bias = rng.integers(-(2**31), 2**31) if big else rng.integers(-300, 300, m)
        layers.append(Layer(rng.integers(-1, 2, (m, k)), np.broadcast_to(bias, (m,)).copy(),
                            int(rng.integers(0, 32)) if big else int(rng.integers(0, 6)),
                            bool(rng.integers(0, 2))))
    return layers, rng.integers(-128, 128, (4, widths[0])).astype(np.int8)


@settings(max_examples=200)
@given(networks(), st.integers(1, 7), st.integers(1, 5))
def test_image_execution_equals_reference(net, lanes, rows):
    layers, x = net
    image = compile_image(layers, lanes, rows)
    assert np.array_equal(run_image(image, x, layers[-1].fan_out), run_network(x, layers))


def test_tile_order():
    w = np.arange(5 * 7).reshape(5, 7) % 3 - 1
    t = tile_layer(w.astype(np.int8), lanes=3, rows=2)
    assert t.shape == (3, 3, 2, 3)  # blocks, chunks, rows, lanes
    assert np.array_equal(t[1, 2, 0, :1], w[2, 6:7])  # block 1 row 0 = output 2; chunk 2 = 6..
    assert np.all(t[1, 2, :, 1:] == 0) and np.all(t[2, :, 1, :] == 0)  # padding


def test_layout_sizes_and_entries():
    layers = [Layer(np.ones((10, 7)), np.zeros(10, np.int64), 3, True),
              Layer(-np.ones((4, 10)), np.arange(4), 0, False)]
    image = compile_image(layers, lanes=4, rows=3)
    assert beat_bytes(4, 3) == 3  # 12 trits
    # layer 0: 4 blocks x 2 chunks; layer 1: 2 blocks x 3 chunks
    assert image.weight_words == 8 + 6 and len(image.weights) == 14 * 3
    assert image.entries[1] == LayerEntry(8, 12, 3, 2, 4, 0, False)
    assert list(image.biases[:10]) == [4] * 10  # no -1 weights, + 2**(3-1)
    assert list(image.biases[12:16]) == [10, 11, 12, 13]  # + ten -1 weights, no rounding
    assert len(image.bias_bytes()) == 18 * BIAS_STORE_BYTES
    assert len(image.table_bytes()) == 2 * LAYER_ENTRY_SIZE
    assert LayerEntry.from_bytes(image.entries[1].to_bytes()) == image.entries[1]


@pytest.mark.parametrize("bias", [-(2**31), 2**31 - 1])
def test_bias_bytes_are_twos_complement(bias):
    layer = Layer(-np.ones((1, 65536)), [bias], 31, False)
    image = compile_image([layer], lanes=1, rows=1)
    raw = image.bias_bytes()
    value = int.from_bytes(raw, "little", signed=True)
    assert value == bias + 65536 + 2**30
