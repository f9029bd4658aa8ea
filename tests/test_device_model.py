"""trine.contract.device_image and trine.contract.device_model: a compiled image, run with the
device's loops, addresses and zero padding, computes exactly what the reference computes."""

import numpy as np
import pytest
from conftest import random_layers
from ternary_nets import with_thresholds

from trine.contract.device_image import LayerEntry, compile_image
from trine.contract.device_model import run_image
from trine.contract.network import run_network
from trine.contract.params import CapacityError
from trine.contract.reference import Conv, Flatten, Layer, MaxPool


def conv(rng, c_in, c_out, kernel, stride=1, padding=0, relu=True):
    w = rng.integers(-1, 2, (c_out, c_in, *kernel))
    return Conv(w, rng.integers(-300, 300, c_out), stride, padding, int(rng.integers(0, 4)),
                relu)


def dense(rng, k, m, relu=False):
    return Layer(rng.integers(-1, 2, (m, k)), rng.integers(-300, 300, m),
                 int(rng.integers(0, 4)), relu)


NETWORKS = {
    "mlp": (lambda r: random_layers(r, [21, 13, 7]), (21,)),
    "mnist1d-like": (lambda r: [conv(r, 1, 8, (5,), 2, 1), conv(r, 8, 8, (3,), 2, 1),
                                conv(r, 8, 6, (3,), 2, 1), Flatten(), dense(r, 30, 10)],
                     (1, 40)),
    "conv1d-pool": (lambda r: [conv(r, 3, 5, (3,), 1, 1), MaxPool(2), conv(r, 5, 4, (2,)),
                               Flatten(), dense(r, 4 * 4, 3)], (3, 10)),
    "conv2d": (lambda r: [conv(r, 1, 4, (3, 3), 1, 1), conv(r, 4, 6, (3, 2), (2, 1), (0, 1)),
                          Flatten(), dense(r, 6 * 3 * 7, 5)], (1, 8, 6)),
    "conv2d-pool": (lambda r: [conv(r, 2, 4, (3, 3), 1, 1), MaxPool(2, ndim=2),
                               conv(r, 4, 3, (3, 3), 1, 1), MaxPool((2, 1)),
                               Flatten(), dense(r, 3 * 2 * 4, 4)], (2, 8, 8)),
    "conv-last": (lambda r: [conv(r, 2, 3, (3,), 2, 1, relu=False)], (2, 9)),
}


@pytest.mark.parametrize("lanes, rows", [(8, 5), (4, 3), (3, 2), (1, 1), (32, 8)])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_device_computes_the_reference(name, lanes, rows):
    make, shape = NETWORKS[name]
    rng = np.random.default_rng(len(name) * 7 + lanes)
    layers = make(rng)
    image = compile_image(layers, shape, lanes, rows, act_words=600, max_batch=3)
    x = rng.integers(-128, 128, (image.batch, *shape)).astype(np.int8)
    got = run_image(image, x, act_words=600)
    assert np.array_equal(got, run_network(x, layers, shape))


@pytest.mark.parametrize("lanes, rows", [(8, 5), (3, 2), (32, 8)])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_device_computes_mixed_networks(name, lanes, rows):
    """Ternary outputs on every weighted layer but the last, as bytes in the pool."""
    make, shape = NETWORKS[name]
    rng = np.random.default_rng(len(name) * 11 + lanes)
    x = rng.integers(-128, 128, (3, *shape)).astype(np.int8)
    layers = with_thresholds(rng, make(rng), x, shape, last=name == "conv-last")
    image = compile_image(layers, shape, lanes, rows, act_words=600, max_batch=3,
                          ternary_act=True)
    assert np.array_equal(run_image(image, x, act_words=600), run_network(x, layers, shape))


def test_entries_survive_the_table_words():
    rng = np.random.default_rng(1)
    layers, shape = NETWORKS["conv2d-pool"][0](rng), NETWORKS["conv2d-pool"][1]
    image = compile_image(layers, shape, 8, 5, act_words=600)
    for entry in image.entries:
        assert LayerEntry.from_words(entry.to_words()) == entry
    assert image.table_words == 2 * 37 + 10


def test_the_pool_decides_the_batch_and_what_runs():
    rng = np.random.default_rng(2)
    layers = [dense(rng, 784, 64, relu=True), dense(rng, 64, 10)]
    # a 784-input dense layer at batch 1: 98 + 8 words on 8 lanes
    assert compile_image(layers, (784,), 8, 5, act_words=256, max_batch=4).batch == 2
    with pytest.raises(CapacityError, match=r"layer 0 \(Dense\) needs 106 words \(848 bytes\) "
                                            r"of activation pool for one sample \(input 98 \+ "
                                            r"output 8 words of 8 bytes\)"):
        compile_image(layers, (784,), 8, 5, act_words=100)
    with pytest.raises(CapacityError, match=r"layer 0 \(MaxPool1d\): the device pools only"):
        compile_image([MaxPool(2), Flatten(), dense(rng, 4, 2)], (1, 8), 8, 5, act_words=100)
