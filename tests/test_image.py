"""trine.contract.device_image: tile order, bias folding, the pool's layouts and the table."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    DENSE_ENTRY_WORDS,
    TABLE_WORD_BYTES,
    CapacityError,
    LayerEntry,
    TensorLayout,
    beat_bytes,
    compile_image,
    weight_words,
    word_size,
)
from trine.contract.device_model import run_image
from trine.contract.network import run_network
from trine.contract.protocol import Target
from trine.contract.reference import Flatten, Layer


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
    return layers, rng.integers(-128, 128, (2, widths[0])).astype(np.int8)


@settings(max_examples=100, deadline=None)
@given(networks(), st.integers(1, 7), st.integers(1, 5))
def test_image_execution_equals_reference(net, lanes, rows):
    layers, x = net
    image = compile_image(layers, x.shape[1:], lanes, rows, act_words=64, max_batch=2)
    x = x[: image.batch]
    assert np.array_equal(run_image(image, x, 64), run_network(x, layers))


def test_layout_sizes_and_entries():
    layers = [Layer(np.ones((10, 7)), np.zeros(10, np.int64), 3, True),
              Layer(-np.ones((4, 10)), np.arange(4), 0, False)]
    image = compile_image(layers, (7,), lanes=4, rows=3, act_words=16, max_batch=4)
    assert beat_bytes(4, 3) == 3  # 12 trits
    # layer 0: 4 blocks x 2 chunks; layer 1: 2 blocks x 3 chunks
    assert image.weight_words == 8 + 6 and len(image.weights) == 14 * 3
    assert weight_words(layers, (7,), 4, 3) == 14
    # each sample needs 2 + 3 words for layer 0: the pool holds 3 samples
    assert image.batch == 3
    assert image.entries[0].in_base == 0 and image.entries[0].out_base == 16 - 3 * 3
    assert image.entries[1].in_base == 16 - 3 * 3 and image.entries[1].out_base == 0
    assert image.entries[1] == LayerEntry(8, 12, 2, 4, 3, 7, 3, 0, 1, 0, False)
    assert list(image.biases[:10]) == [4] * 10  # no -1 weights, + 2**(3-1)
    assert list(image.biases[12:16]) == [10, 11, 12, 13]  # + ten -1 weights, no rounding
    assert len(image.bias_bytes()) == 18 * BIAS_STORE_BYTES
    assert len(image.table_bytes()) == 2 * DENSE_ENTRY_WORDS * TABLE_WORD_BYTES
    assert LayerEntry.from_words(image.entries[1].to_words()) == image.entries[1]
    assert [word_size(t, 4, 3) for t in Target] == [3, BIAS_STORE_BYTES, TABLE_WORD_BYTES, 4]


def test_positions_are_position_major():
    layout = TensorLayout((3, 2), base=5, lanes=2)
    x = np.arange(12, dtype=np.int8).reshape(2, 3, 2)
    packed = layout.pack(x)
    assert layout.sample_words == 4  # 2 positions x 2 words
    assert list(packed[0]) == [0, 2, 4, 0, 1, 3, 5, 0]  # channels of position 0, then 1
    assert np.array_equal(layout.unpack(packed), x)


def test_a_layer_the_pool_cannot_hold_is_named():
    layers = [Layer(np.ones((4, 30)), np.zeros(4, np.int64), 0, False)]
    with pytest.raises(CapacityError, match=r"layer 0 \(Dense\) needs 9 words \(36 bytes\) "
                       r"of activation pool .* more than act_words = 8"):
        compile_image(layers, (30,), lanes=4, rows=2, act_words=8)


@pytest.mark.parametrize("bias", [-(2**31), 2**31 - 1])
def test_bias_bytes_are_twos_complement(bias):
    layer = Layer(-np.ones((1, 65536)), [bias], 31, False)
    image = compile_image([layer], (65536,), lanes=8, rows=1, act_words=8193)
    raw = image.bias_bytes()
    value = int.from_bytes(raw, "little", signed=True)
    assert value == bias + 65536 + 2**30


def test_a_window_the_device_cannot_count_is_refused():
    """A device of 16 pool words counts window coordinates in 6 signed bits: padding 60 or
    25 on an input of 8 reaches past them (the pool itself would hold the layer)."""
    from trine.contract.reference import Conv

    conv = Conv(np.ones((2, 1, 3), np.int8), np.zeros(2, np.int64), 60, 60, 0, True)
    with pytest.raises(CapacityError, match=r"layer 0 \(Conv1d\): its x0 is -60, outside what "
                                            r"a device of act_words = 16 counts \(-32 .. 31\)"):
        compile_image([conv], (1, 8), lanes=4, rows=2, act_words=16)
    edge = Conv(np.ones((2, 1, 3), np.int8), np.zeros(2, np.int64), 25, 25, 0, True)
    with pytest.raises(CapacityError, match=r"layer 0 \(Conv1d\): its window's x coordinates "
                                            r"reach past what a device of act_words = 16 counts"):
        compile_image([edge], (1, 8), lanes=4, rows=2, act_words=16)  # 25 + 8 + 3 >= 32
    wide = Conv(np.ones((2, 1, 3), np.int8), np.zeros(2, np.int64), 10, 10, 0, True)
    compile_image([wide], (1, 8), lanes=4, rows=2, act_words=16)  # 10 + 8 + 3 < 32: fits


def test_a_program_with_ternary_outputs_is_refused_by_a_device_without_ternary_act():
    """Such a device would answer int8 values where the reference has trits: the program
    never reaches it, and the message names the layer and the parameter."""
    from trine.contract.params import SIMULATED, UP5K, check_fits
    from trine.contract.reference import Conv

    rng = np.random.default_rng(3)
    hidden = Layer(rng.integers(-1, 2, (6, 8)), np.zeros(6), shift=2, ternary_threshold=3)
    out = Layer(rng.integers(-1, 2, (3, 6)), np.zeros(3))
    with pytest.raises(CapacityError, match=r"layer 0 \(Dense\) has ternary outputs "
                                            r"\(ternary_threshold 3\): this device computes "
                                            r"int8 activations only \(built without the "
                                            r"accelerator parameter ternary_act\)"):
        compile_image([hidden, out], (8,), 8, 5, 256)
    with pytest.raises(CapacityError, match="ternary_act"):
        check_fits([hidden, out], UP5K.limits())
    conv = Conv(rng.integers(-1, 2, (4, 1, 3)), np.zeros(4), padding=1, ternary_threshold=1)
    with pytest.raises(CapacityError, match=r"layer 0 \(Conv1d\) has ternary outputs"):
        compile_image([conv], (1, 8), 8, 5, 256)
    with pytest.raises(CapacityError, match=r"layer 2 \(Dense\) has ternary outputs"):
        dense = Layer(rng.integers(-1, 2, (2, 32)), np.zeros(2), ternary_threshold=9)
        compile_image([Conv(conv.weights, conv.bias, padding=1), Flatten(), dense], (1, 8),
                      8, 5, 256, ternary_act=False)
    # the same layers with int8 outputs compile
    compile_image([Layer(hidden.weights, hidden.bias, shift=2), out], (8,), 8, 5, 256)
    # and a device with ternary_act takes them, the threshold in the entry's flags
    image = check_fits([hidden, out], SIMULATED.limits())
    assert [e.ternary_threshold for e in image.entries] == [3, 0]
    assert image.entries[0].to_words()[0] >> 9 == 3


def test_the_ternary_threshold_round_trips_through_the_flags_word():
    for t in (0, 1, 64, 127):
        entry = LayerEntry(1, 2, 3, 4, 5, 6, 7, 8, 9, 31, True, conv=True, pool_levels=2,
                           ternary_threshold=t)
        words = entry.to_words()
        assert words[0] == 31 | 1 << 5 | 2 << 6 | 1 << 8 | t << 9
        assert LayerEntry.from_words(words) == entry
    with pytest.raises(CapacityError, match="ternary_threshold is 128, outside 7 bits"):
        LayerEntry(1, 2, 3, 4, 5, 6, 7, 8, 9, 0, False, ternary_threshold=128).to_words()
