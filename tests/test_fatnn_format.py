"""The .trine format, version 3: ternary activations on file (trine.host.trine_file)."""

import struct
import zlib

import numpy as np
import pytest

from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.host.program import Program
from trine.host.trine_file import (
    FORMAT_VERSION,
    MAGIC,
    SUPPORTED_VERSIONS,
    ProgramFormatError,
    decode,
)


def version_of(data: bytes) -> int:
    return struct.unpack_from("<H", data, 8)[0]


def thresholds(program):
    return [getattr(layer, "ternary_threshold", "-") for layer in program.layers]


def mixed_cnn(seed=0):
    rng = np.random.default_rng(seed)
    return Program([Conv(rng.integers(-1, 2, (4, 1, 3)), rng.integers(-30, 30, 4), 1, 1, 2,
                         False, ternary_threshold=3), MaxPool(2),
                    Conv(rng.integers(-1, 2, (4, 4, 3)), rng.integers(-3, 3, 4), 1, 1, 0,
                         True, ternary_threshold=1), Flatten(),
                    Layer(rng.integers(-1, 2, (3, 16)), rng.integers(-5, 5, 3), 0, False)],
                   0.25, ["a", "b", "c"], input_shape=(1, 8))


def mixed_mlp(seed=0):
    rng = np.random.default_rng(seed)
    return Program([Layer(rng.integers(-1, 2, (7, 5)), rng.integers(-99, 99, 7), 3, False,
                          ternary_threshold=127),
                    Layer(rng.integers(-1, 2, (6, 7)), rng.integers(-9, 9, 6), 0, False,
                          ternary_threshold=2),
                    Layer(rng.integers(-1, 2, (2, 6)), rng.integers(-9, 9, 2), 1, False)], 0.5)


@pytest.mark.parametrize("make", [mixed_mlp, mixed_cnn])
def test_ternary_programs_round_trip_as_version_3(make, tmp_path):
    p = make()
    data = p.to_bytes()
    assert version_of(data) == 3 == FORMAT_VERSION
    q = Program.from_bytes(data)
    assert thresholds(q) == thresholds(p)
    assert q.to_bytes() == data and q.input_shape == p.input_shape
    x = np.random.default_rng(1).normal(0, 40, (9, *p.input_shape))
    assert np.array_equal(q.run_reference(x), p.run_reference(x))
    p.save(tmp_path / "t.trine")
    assert Program.load(tmp_path / "t.trine").to_bytes() == data


def test_a_threshold_changes_the_file():
    p, q = mixed_mlp(), mixed_mlp()
    layers = list(q.layers)
    first = layers[0]
    layers[0] = Layer(first.weights, first.bias, first.shift, first.relu, ternary_threshold=126)
    assert Program(layers, 0.5).to_bytes() != p.to_bytes()


def test_programs_without_ternary_activations_keep_versions_1_and_2():
    p = mixed_mlp()
    plain = Program([Layer(x.weights, x.bias, x.shift, x.relu) for x in p.layers], 0.5)
    assert version_of(plain.to_bytes()) == 1
    c = mixed_cnn()
    plain = Program([Conv(x.weights, x.bias, x.stride, x.padding, x.shift, x.relu)
                     if isinstance(x, Conv) else x for x in c.layers], 0.25, c.labels,
                    input_shape=(1, 8))
    assert version_of(plain.to_bytes()) == 2


def file_of(version, body, n_layers, shape=(3,)):
    data = bytearray(MAGIC + struct.pack("<HHQI", version, 1, 0, n_layers))
    data += struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
    data += body + b"\x00\x00"
    struct.pack_into("<Q", data, 12, len(data) + 4)
    return bytes(data) + struct.pack("<I", zlib.crc32(data))


def dense_v3(m=2, k=3, shift=0, relu=0, threshold=0):
    return (struct.pack("<BIIBBB", 0, m, k, shift, relu, threshold) + bytes(4 * m)
            + bytes([121]) * -(-(m * k) // 5))


def test_version_3_with_every_option_off_loads():
    parts = decode(file_of(3, dense_v3() + dense_v3(1, 2), 2))
    assert [layer.ternary_threshold for layer in parts.layers] == [None, None]


def test_version_3_thresholds_are_read():
    parts = decode(file_of(3, dense_v3(threshold=5) + dense_v3(1, 2), 2))
    assert [layer.ternary_threshold for layer in parts.layers] == [5, None]


@pytest.mark.parametrize("threshold", [128, 200, 255])
def test_a_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(ProgramFormatError, match=rf"layer 1 ternary_threshold must be 0 \(int8 "
                                                 rf"outputs\) or in \[1, 127\], not {threshold}"):
        decode(file_of(3, dense_v3() + dense_v3(1, 2, threshold=threshold), 2))


def test_a_version_3_conv_record_without_its_threshold_byte_is_caught():
    # a version-2 conv record in a version-3 file: every field after relu is one byte late
    conv = (struct.pack("<BBII", 1, 1, 2, 1) + struct.pack("<III", 3, 1, 0)
            + struct.pack("<BB", 0, 0) + bytes(8) + bytes([121]) * 2)
    with pytest.raises(ProgramFormatError):
        decode(file_of(3, conv + b"\x03", 2, shape=(1, 5)))
    assert decode(file_of(2, conv + b"\x03", 2, shape=(1, 5))).layers[0].ternary_threshold is None


def test_every_supported_version_is_named_when_one_is_not():
    assert SUPPORTED_VERSIONS == (1, 2, 3)
    with pytest.raises(ProgramFormatError, match="supports versions 1, 2 and 3"):
        decode(file_of(4, dense_v3(), 1))


def test_every_flipped_byte_of_a_version_3_file_is_caught():
    data = mixed_cnn().to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 1 << (i % 8)
        with pytest.raises(ProgramFormatError):
            Program.from_bytes(bytes(bad))


def test_programs_differing_only_in_a_threshold_are_not_equal():
    from trine.contract.reference import Layer as L

    p = mixed_mlp()
    first = p.layers[0]
    changed = L(first.weights, first.bias, first.shift, first.relu, ternary_threshold=126)
    q = Program([changed, *p.layers[1:]], p.input_scale)
    assert p == Program.from_bytes(p.to_bytes())
    assert p != q and p.to_bytes() != q.to_bytes()
