"""trine.contract.spec: trit codes, packers and the accumulator width rule."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trine.contract import spec
from trine.contract.spec import (
    TritCode,
    accumulator_width,
    codes_to_trits,
    pack_trits,
    pack_trits_2bit,
    packed_size,
    trits_to_codes,
    unpack_trits,
    unpack_trits_2bit,
)

trit_arrays = hnp.arrays(
    np.int8,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=13),
    elements=st.integers(-1, 1),
)


def test_imports_without_amaranth():
    import subprocess
    import sys

    code = (
        "import sys; import trine.contract.spec, trine.contract.reference; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('amaranth', 'cocotb')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dense_byte_values_follow_the_spec():
    # t0 is the least significant base-3 digit, digit = t + 1.
    assert pack_trits([-1, -1, -1, -1, -1]) == bytes([0])
    assert pack_trits([1, 1, 1, 1, 1]) == bytes([242])
    assert pack_trits([0, -1, -1, -1, -1]) == bytes([1])
    assert pack_trits([-1, 0, -1, -1, -1]) == bytes([3])
    assert pack_trits([-1, -1, -1, -1, 1]) == bytes([2 * 81])
    # Tail padded with 0-trits (digit 1).
    assert pack_trits([1]) == bytes([2 + 3 + 9 + 27 + 81])
    assert pack_trits(np.zeros(0, np.int8)) == b""


def test_dense_matches_the_formula_exhaustively():
    digits = np.array(np.meshgrid(*[np.arange(3)] * 5, indexing="ij")).reshape(5, -1).T
    trits = (digits - 1).astype(np.int8)  # all 243 groups
    packed = np.frombuffer(pack_trits(trits), np.uint8)
    expected = (digits * 3 ** np.arange(5)).sum(axis=1)
    assert np.array_equal(packed, expected)
    assert sorted(packed) == list(range(243))


def test_two_bit_layout():
    byte = TritCode.POS | TritCode.NEG << 2 | TritCode.ZERO << 4 | TritCode.POS << 6
    assert pack_trits_2bit([1, -1, 0, 1]) == bytes([byte])
    assert pack_trits_2bit([-1]) == bytes([TritCode.NEG])


def test_trit_code_table():
    assert list(trits_to_codes([-1, 0, 1])) == [0b11, 0b00, 0b01]
    assert list(codes_to_trits([0, 1, 3], strict=True)) == [0, 1, -1]
    assert list(codes_to_trits([2], strict=False)) == [0]
    with pytest.raises(ValueError, match=r"illegal trit code 0b10 at position 1"):
        codes_to_trits([0, 2])


@given(trit_arrays)
def test_dense_round_trip(w):
    data = pack_trits(w)
    assert len(data) == packed_size(w.size)
    assert np.array_equal(unpack_trits(data, w.size), w.reshape(-1))


@given(trit_arrays)
def test_two_bit_round_trip(w):
    data = pack_trits_2bit(w)
    assert len(data) == -(-w.size // 4)
    assert np.array_equal(unpack_trits_2bit(data, w.size), w.reshape(-1))


@given(hnp.arrays(np.float64, st.integers(0, 30), elements=st.sampled_from([-1.0, 0.0, 1.0])))
def test_float_trits_pack_like_ints(w):
    assert pack_trits(w) == pack_trits(w.astype(np.int8))


def test_packing_is_c_order():
    w = np.array([[1, 0, -1], [-1, 1, 0]], dtype=np.int64)
    assert pack_trits(w) == pack_trits(w.reshape(-1))
    assert pack_trits(np.asfortranarray(w)) == pack_trits(w.reshape(-1))


@pytest.mark.parametrize(
    "bad, message",
    [
        ([0, 1, 2], r"value 2 at position 2"),
        ([[0, 0], [0, -3]], r"value -3 at position \(1, 1\)"),
        ([0.0, 0.5], r"non-integer value 0.5 at position 1"),
        ([0.0, np.nan], r"NaN at position 1"),
        ([np.inf], r"value inf at position 0"),
        (np.array([True, False]), r"not booleans"),
        (np.array(["1"]), r"numeric array"),
        (np.array([-128], np.int8), r"value -128 at position 0"),
        (np.array([255], np.uint8), r"value 255 at position 0"),
    ],
)
@pytest.mark.parametrize("packer", [pack_trits, pack_trits_2bit])
def test_pack_rejects_non_trits(packer, bad, message):
    with pytest.raises(ValueError, match=message):
        packer(np.asarray(bad))


def test_unpack_rejects_illegal_bytes():
    with pytest.raises(ValueError, match=r"illegal packed byte 243 .* at byte 2"):
        unpack_trits(bytes([0, 1, 243, 255]), 20)


def test_unpack_rejects_wrong_count():
    with pytest.raises(ValueError, match=r"7 trits need 2 bytes .* but 3 were given"):
        unpack_trits(bytes(3), 7)
    with pytest.raises(ValueError, match=r"need 1 bytes .* but 0"):
        unpack_trits(b"", 1)
    with pytest.raises(ValueError, match=r"non-negative integer"):
        unpack_trits(b"", -1)
    with pytest.raises(ValueError, match=r"3 trits need 1 bytes .* but 2"):
        unpack_trits_2bit(bytes(2), 3)


def test_unpack_rejects_nonzero_padding():
    data = pack_trits([1, 1, 1, 1, 1])  # 5 trits, claim only 3: the last two are not padding
    with pytest.raises(ValueError, match=r"padding trits of the last byte \(byte 0\)"):
        unpack_trits(data, 3)
    with pytest.raises(ValueError, match=r"padding"):
        unpack_trits_2bit(pack_trits_2bit([1, 1, 1, 1]), 2)


def test_unpack_2bit_rejects_illegal_code():
    with pytest.raises(ValueError, match=r"illegal trit code 0b10 in byte 1 \(0x08\)"):
        unpack_trits_2bit(bytes([0, 0b1000]), 8)


def test_unpack_accepts_uint8_arrays_only():
    assert list(unpack_trits(np.array([1 + 3 + 9 + 27 + 81], np.uint8), 1)) == [0]
    with pytest.raises(ValueError, match="1-D uint8"):
        unpack_trits(np.array([1], np.int32), 1)


@pytest.mark.parametrize(
    "fan_in, width", [(1, 9), (2, 10), (3, 11), (4, 11), (5, 12), (64, 15), (4096, 21), (65536, 25)]
)
def test_accumulator_width(fan_in, width):
    assert accumulator_width(fan_in) == width


@given(st.integers(1, spec.MAX_FAN_IN), st.integers(2, 16))
def test_accumulator_width_holds_the_extremes(fan_in, act_width):
    w = accumulator_width(fan_in, act_width)
    most_negative_x = -(1 << (act_width - 1))
    extremes = (most_negative_x * fan_in, -most_negative_x * fan_in)  # w = +1 and w = -1
    assert all(-(1 << (w - 1)) <= e <= (1 << (w - 1)) - 1 for e in extremes)
    if fan_in & (fan_in - 1) == 0:  # tight for powers of two: one bit less overflows
        assert -most_negative_x * fan_in > (1 << (w - 2)) - 1


@pytest.mark.parametrize("fan_in", [0, -1, spec.MAX_FAN_IN + 1, 2.0])
def test_accumulator_width_rejects(fan_in):
    with pytest.raises(ValueError, match="fan-in must be an integer"):
        accumulator_width(fan_in)
