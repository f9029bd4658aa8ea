"""trine.contract.network.layer_macs / network_macs against counts made by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trine.contract.errors import FormatError
from trine.contract.network import layer_macs, network_macs
from trine.contract.reference import Conv, Flatten, Layer, MaxPool


def _dense(k: int, m: int) -> Layer:
    return Layer(np.ones((m, k), np.int8), np.zeros(m, np.int64), 0, True)


def _conv(c_out: int, c_in: int, kernel, stride=1, padding=0) -> Conv:
    kernel = (kernel,) if isinstance(kernel, int) else tuple(kernel)
    return Conv(np.ones((c_out, c_in, *kernel), np.int8), np.zeros(c_out, np.int64), stride,
                padding)


def test_mlp_is_k_times_m_per_layer():
    layers = [_dense(40, 256), _dense(256, 128), _dense(128, 128), _dense(128, 10)]
    assert layer_macs(layers) == [40 * 256, 256 * 128, 128 * 128, 128 * 10]
    assert network_macs(layers) == 10240 + 32768 + 16384 + 1280 == 60672


def test_the_mnist1d_cnn_by_hand():
    # c64k5p2,m2,c64k3p1,m2,c64k3p1,m2,d10 on (1, 40): lengths 40 -> 20 -> 10 -> 5
    layers = [_conv(64, 1, 5, padding=2), MaxPool(2), _conv(64, 64, 3, padding=1), MaxPool(2),
              _conv(64, 64, 3, padding=1), MaxPool(2), Flatten(), _dense(320, 10)]
    hand = [64 * 1 * 5 * 40, 0, 64 * 64 * 3 * 20, 0, 64 * 64 * 3 * 10, 0, 0, 320 * 10]
    assert layer_macs(layers, (1, 40)) == hand
    assert network_macs(layers, (1, 40)) == 12800 + 245760 + 122880 + 3200 == 384640


def test_conv2d_counts_every_output_position_padding_included():
    # (3, 7, 5), kernel 3 x 2, stride (2, 1), padding (1, 0): 4 x 4 positions
    conv = _conv(4, 3, (3, 2), stride=(2, 1), padding=(1, 0))
    assert layer_macs([conv], (3, 7, 5)) == [4 * 3 * 3 * 2 * 4 * 4]
    # padding 2 on a length-1 input: 5 positions, 4 of which read mostly padding
    assert network_macs([_conv(2, 1, 1, padding=2)], (1, 1)) == 2 * 1 * 1 * 5


def test_zero_weights_are_macs_too():
    zeros = Layer(np.zeros((3, 7), np.int8), np.zeros(3, np.int64), 0, False)
    assert network_macs([zeros]) == 21


def test_layers_that_do_not_chain_are_refused():
    with pytest.raises(FormatError, match="layer 1 expects 9 inputs"):
        layer_macs([_dense(4, 8), _dense(9, 2)])
    with pytest.raises(FormatError, match="needs its input shape"):
        network_macs([_conv(2, 1, 3)])
