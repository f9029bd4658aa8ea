"""The trine contract: every format shared by the gateware, the testbenches and the host.

This module is pure Python/NumPy and must import without Amaranth or cocotb. Anything
that the hardware and the host both need to agree on is defined here, once.

Trit codes (2 bits per trit, used inside the hardware)
------------------------------------------------------
===========  ======  ================================================================
code (bin)   trit    meaning
===========  ======  ================================================================
``0b00``     0       zero
``0b01``     +1      bit 0 is *nonzero*
``0b11``     -1      bit 1 is *negative*
``0b10``     --      illegal ("negative zero"): the MAC array treats it as 0 (its
                     *nonzero* bit is clear), the software unpacker rejects it
===========  ======  ================================================================

A MAC lane therefore needs only the two bits as they are: ``nonzero`` gates the
activation, ``negative`` inverts it.

Dense packing (storage and the link): 5 trits per byte, base 3
---------------------------------------------------------------
Trits ``t0..t4`` become the byte ``sum((t_i + 1) * 3**i)``: ``t0`` is the least
significant base-3 digit. A tail group shorter than 5 is padded with 0-trits (digit 1).
Bytes 243..255 are illegal. 5 trits in 8 bits is 1.6 bits per trit (log2(3) = 1.585).

2-bit packing: 4 trits per byte, ``t0`` in bits 1:0, using the trit codes above. A tail
group is padded with the zero code.

Accumulator width
-----------------
With ``act_width``-bit signed activations ``|x| <= 2**(act_width-1)`` and ternary
weights, ``|sum_k w_k x_k| <= 2**(act_width-1) * K``. The bound is reached
(``-128 * -1 = +128`` for every k), so the signed accumulator needs
``act_width + ceil(log2 K) + 1`` bits: see :func:`accumulator_width`. Hardware
accumulates with wrap-around, which is exact because the true sum always fits.
The supported fan-in is ``1 <= K <= MAX_FAN_IN``.

Ternary activations (optional, per layer)
-----------------------------------------
A dense or convolution layer may requantise its outputs to trits instead of int8 (the rule
and its threshold ``t`` in ``[TERNARY_THRESHOLD_MIN, TERNARY_THRESHOLD_MAX]`` are defined in
:func:`trine.contract.reference.ternarize`). Ternary activations are trits like weights:
wherever they are stored or sent they use the same packing, :func:`pack_trits` (5 per byte)
and :func:`unpack_trits`, and the same 2-bit :class:`TritCode` inside the hardware (a sign
plane and a mask plane). A layer whose *inputs* are trits has ``|acc| <= K``: see
:func:`ternary_accumulator_width`.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from trine.contract.errors import FormatError

__all__ = [
    "SPEC_VERSION",
    "ACT_WIDTH",
    "ACT_MIN",
    "ACT_MAX",
    "MAX_FAN_IN",
    "SHIFT_MAX",
    "BIAS_MIN",
    "BIAS_MAX",
    "TRITS_PER_BYTE",
    "TRITS_PER_BYTE_2BIT",
    "TritCode",
    "accumulator_width",
    "ternary_accumulator_width",
    "TERNARY_THRESHOLD_MIN",
    "TERNARY_THRESHOLD_MAX",
    "trits_to_codes",
    "codes_to_trits",
    "pack_trits",
    "unpack_trits",
    "packed_size",
    "pack_trits_2bit",
    "unpack_trits_2bit",
    "packed_size_2bit",
    "as_trits",
]

SPEC_VERSION = 1

#: Activation width in bits (signed, two's complement).
ACT_WIDTH = 8
ACT_MIN = -(1 << (ACT_WIDTH - 1))
ACT_MAX = (1 << (ACT_WIDTH - 1)) - 1

#: Largest fan-in (inputs per output) any trine configuration supports.
MAX_FAN_IN = 1 << 16

#: Requantisation shift range (inclusive).
SHIFT_MAX = 31
#: Bias range: a signed 32-bit integer.
BIAS_MIN = -(1 << 31)
BIAS_MAX = (1 << 31) - 1

TRITS_PER_BYTE = 5
TRITS_PER_BYTE_2BIT = 4

#: Range of a ternary-activation threshold, compared with the int8 requantised value: 1 keeps
#: every nonzero value, 127 only the saturated ones (any larger one would make 0 of every
#: positive output).
TERNARY_THRESHOLD_MIN = 1
TERNARY_THRESHOLD_MAX = ACT_MAX
_MAX_DENSE_BYTE = 3**TRITS_PER_BYTE - 1  # 242


class TritCode(enum.IntEnum):
    """2-bit hardware encoding of a trit: bit 0 = nonzero, bit 1 = negative."""

    ZERO = 0b00
    POS = 0b01
    ILLEGAL = 0b10
    NEG = 0b11


def accumulator_width(fan_in: int, act_width: int = ACT_WIDTH) -> int:
    """Signed accumulator width that holds any ``sum_k w_k x_k`` over ``fan_in`` terms.

    ``act_width + ceil(log2 fan_in) + 1``: the ``+1`` covers ``-2**(act_width-1) * -1``
    (e.g. ``-128 * -1 = +128``), which does not fit in ``act_width`` bits.

    Raises
    ------
    ValueError
        If ``fan_in`` is not in ``[1, MAX_FAN_IN]`` or ``act_width`` is below 2.
    """
    if not isinstance(fan_in, int | np.integer) or not 1 <= fan_in <= MAX_FAN_IN:
        raise FormatError(f"fan-in must be an integer in [1, {MAX_FAN_IN}], not {fan_in!r}")
    if not isinstance(act_width, int | np.integer) or act_width < 2:
        raise FormatError(f"activation width must be an integer >= 2, not {act_width!r}")
    return int(act_width) + math.ceil(math.log2(int(fan_in))) + 1


def ternary_accumulator_width(fan_in: int) -> int:
    """Signed accumulator width that holds any ``sum_k w_k x_k`` of trits times trits.

    ``|sum| <= K``, so ``ceil(log2(K + 1)) + 1`` bits (two's complement ``[-K, K]``): one
    bit less than :func:`accumulator_width` with ``act_width=2`` gives.

    Raises
    ------
    FormatError
        If ``fan_in`` is not an integer in ``[1, MAX_FAN_IN]``.
    """
    if (isinstance(fan_in, bool) or not isinstance(fan_in, int | np.integer)
            or not 1 <= fan_in <= MAX_FAN_IN):
        raise FormatError(f"fan-in must be an integer in [1, {MAX_FAN_IN}], not {fan_in!r}")
    return math.ceil(math.log2(int(fan_in) + 1)) + 1


# --------------------------------------------------------------------------------------------
# Validation of trit arrays
# --------------------------------------------------------------------------------------------


def _first_index(mask: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...] | int:
    flat = int(np.flatnonzero(mask.reshape(-1))[0])
    if len(shape) <= 1:
        return flat
    return tuple(int(i) for i in np.unravel_index(flat, shape))


_CHECK_CHUNK = 1 << 16  # elements at a time in as_trits and unpack_trits (bounded temporaries)


def as_trits(w, name: str = "weights") -> np.ndarray:
    """Return ``w`` as an ``int8`` array of trits, or raise ``ValueError`` naming the problem.

    Accepts integer, boolean-free numeric and float arrays whose values are exactly
    -1, 0 or +1. The error names the first offending position (in ``w``'s own shape).
    """
    a = np.asarray(w)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise FormatError(f"{name} must be a numeric array, not dtype {a.dtype}")
    if a.dtype.kind == "b":
        raise FormatError(f"{name} must hold trits -1/0/+1, not booleans")
    if a.dtype.kind == "f":
        bad = np.isnan(a)
        if bad.any():
            pos = _first_index(bad, a.shape)
            raise FormatError(f"{name} contains NaN at position {pos}")
        bad = (a != -1) & (a != 0) & (a != 1)
        if bad.any():
            pos = _first_index(bad, a.shape)
            v = a.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            kind = "non-integer value" if np.isfinite(v) and v != np.rint(v) else "value"
            raise FormatError(
                f"{name} must be ternary (-1, 0, +1): {kind} {float(v)!r} at position {pos}"
            )
        return a.astype(np.int8)
    if a.dtype == np.int8:
        # One unsigned compare finds everything outside {-1, 0, 1}; in chunks, so that a
        # large program's trits are not held again (twice) to be checked.
        flat = a.reshape(-1)
        bad = None
        for start in range(0, flat.size, _CHECK_CHUNK):
            part = flat[start:start + _CHECK_CHUNK].view(np.uint8)
            if ((part + np.uint8(1)) > 2).any():
                bad = (a.view(np.uint8) + np.uint8(1)) > 2
                break
        if bad is None:
            return a
    else:
        bad = (a < -1) | (a > 1)
    if bad.any():
        pos = _first_index(bad, a.shape)
        v = a.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        raise FormatError(f"{name} must be ternary (-1, 0, +1): value {int(v)} at position {pos}")
    return a.astype(np.int8, copy=False)


# --------------------------------------------------------------------------------------------
# 2-bit trit codes
# --------------------------------------------------------------------------------------------

_TRIT_TO_CODE = np.array([TritCode.NEG, TritCode.ZERO, TritCode.POS], dtype=np.uint8)  # t + 1
_CODE_TO_TRIT = np.array([0, 1, 0, -1], dtype=np.int8)  # ILLEGAL decodes as 0 (as in hardware)


def trits_to_codes(w) -> np.ndarray:
    """Map trits to their 2-bit :class:`TritCode` values (``uint8``, same shape)."""
    t = as_trits(w)
    return _TRIT_TO_CODE[t.astype(np.intp) + 1]


def codes_to_trits(codes, *, strict: bool = True) -> np.ndarray:
    """Map 2-bit codes back to trits (``int8``).

    With ``strict`` (the default) the illegal code ``0b10`` raises ``ValueError``; with
    ``strict=False`` it decodes as 0, which is what the MAC array computes with it.
    """
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise FormatError(f"trit codes must be integers, not dtype {c.dtype}")
    bad = (c < 0) | (c > 3)
    if bad.any():
        raise FormatError(f"trit code out of range 0..3 at position {_first_index(bad, c.shape)}")
    if strict:
        bad = c == TritCode.ILLEGAL
        if bad.any():
            pos = _first_index(bad, c.shape)
            raise FormatError(f"illegal trit code 0b10 at position {pos}")
    return _CODE_TO_TRIT[c.astype(np.intp)]


# --------------------------------------------------------------------------------------------
# Dense packing: 5 trits per byte
# --------------------------------------------------------------------------------------------

# _DENSE_DECODE[b] = the 5 trits of byte b (rows 243..255 unused: those bytes are rejected).
_DENSE_DECODE = np.zeros((256, TRITS_PER_BYTE), dtype=np.int8)
for _b in range(_MAX_DENSE_BYTE + 1):
    _DENSE_DECODE[_b] = [(_b // 3**_i) % 3 - 1 for _i in range(TRITS_PER_BYTE)]
del _b
_DENSE_DECODE.setflags(write=False)


def packed_size(count: int) -> int:
    """Bytes needed to hold ``count`` trits at 5 trits per byte."""
    return -(-int(count) // TRITS_PER_BYTE)


def packed_size_2bit(count: int) -> int:
    """Bytes needed to hold ``count`` trits at 4 trits per byte."""
    return -(-int(count) // TRITS_PER_BYTE_2BIT)


def _digits(w, group: int) -> tuple[np.ndarray, int]:
    """Flatten (C order), validate, pad to a multiple of ``group``; return ``t + 1`` as uint8."""
    t = as_trits(w).reshape(-1)
    n = t.size
    pad = (-n) % group
    d = np.empty(n + pad, dtype=np.uint8)
    np.add(t.view(np.uint8), np.uint8(1), out=d[:n])  # int8 -1/0/1 -> 0/1/2 (wraps exactly)
    d[n:] = 1
    return d.reshape(-1, group), n


def pack_trits(w) -> bytes:
    """Pack trits densely, 5 per byte, base 3 (``t0`` least significant).

    ``w`` may have any shape; it is flattened in C order. Raises ``ValueError`` for
    values outside {-1, 0, +1}, NaN or non-integer floats, naming the first position.
    """
    d, _ = _digits(w, TRITS_PER_BYTE)
    # Horner's rule on uint8 columns: 242 is the largest value, so nothing overflows.
    acc = d[:, 4] * np.uint8(3)
    acc += d[:, 3]
    acc *= np.uint8(3)
    acc += d[:, 2]
    acc *= np.uint8(3)
    acc += d[:, 1]
    acc *= np.uint8(3)
    acc += d[:, 0]
    return acc.tobytes()


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    a = np.asarray(data)
    if a.dtype != np.uint8 or a.ndim != 1:
        raise FormatError(f"packed data must be bytes or a 1-D uint8 array, not {a.dtype}{a.shape}")
    return a


def _check_count(count, nbytes: int, per_byte: int) -> int:
    if not isinstance(count, int | np.integer) or count < 0:
        raise FormatError(f"trit count must be a non-negative integer, not {count!r}")
    need = -(-int(count) // per_byte)
    if need != nbytes:
        raise FormatError(
            f"{count} trits need {need} bytes at {per_byte} trits per byte, but {nbytes} were given"
        )
    return int(count)


def unpack_trits(data, count: int) -> np.ndarray:
    """Unpack ``count`` trits from the dense 5-per-byte form into a flat ``int8`` array.

    Raises ``ValueError`` when ``count`` does not match the data length, for illegal bytes
    (243..255) and for a tail group whose padding is not 0-trits (a corrupted tail), naming
    the first offending byte.
    """
    b = _as_bytes(data)
    count = _check_count(count, b.size, TRITS_PER_BYTE)
    bad = b > _MAX_DENSE_BYTE
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"illegal packed byte {int(b[i])} (> {_MAX_DENSE_BYTE}) at byte {i}")
    whole = count // TRITS_PER_BYTE  # bytes of five trits, then maybe one partial byte
    out = np.empty(count, dtype=np.int8)  # owns its data: the one copy of the trits
    rows = out[: whole * TRITS_PER_BYTE].reshape(whole, TRITS_PER_BYTE)
    for start in range(0, whole, _CHECK_CHUNK):  # in chunks: the indices are made intp
        end = min(start + _CHECK_CHUNK, whole)
        np.take(_DENSE_DECODE, b[start:end], axis=0, out=rows[start:end], mode="clip")
    if whole < b.size:
        last = _DENSE_DECODE[b[whole]]
        used = count - whole * TRITS_PER_BYTE
        if np.any(last[used:] != 0):
            raise FormatError(f"padding trits of the last byte (byte {b.size - 1}) are not zero")
        out[whole * TRITS_PER_BYTE:] = last[:used]
    return out


# --------------------------------------------------------------------------------------------
# 2-bit packing: 4 trits per byte, trit codes, t0 in the low bits
# --------------------------------------------------------------------------------------------

# _TWOBIT_DECODE[b] = the 4 trit codes of byte b, t0 first.
_TWOBIT_CODES = np.array(
    [[(b >> (2 * i)) & 3 for i in range(TRITS_PER_BYTE_2BIT)] for b in range(256)], dtype=np.uint8
)
_TWOBIT_LEGAL = ~np.any(_TWOBIT_CODES == TritCode.ILLEGAL, axis=1)
_TWOBIT_DECODE = _CODE_TO_TRIT[_TWOBIT_CODES.astype(np.intp)]
_TWOBIT_DECODE.setflags(write=False)


def pack_trits_2bit(w) -> bytes:
    """Pack trits as 2-bit :class:`TritCode` values, 4 per byte, ``t0`` in bits 1:0."""
    d, _ = _digits(w, TRITS_PER_BYTE_2BIT)
    c = _TRIT_TO_CODE[d]  # uint8 codes
    acc = c[:, 3] << np.uint8(6)
    acc |= c[:, 2] << np.uint8(4)
    acc |= c[:, 1] << np.uint8(2)
    acc |= c[:, 0]
    return acc.tobytes()


def unpack_trits_2bit(data, count: int) -> np.ndarray:
    """Unpack ``count`` trits from the 2-bit form (flat ``int8``).

    Raises ``ValueError`` for a count that does not match, an illegal code (``0b10``) or
    non-zero padding, naming the first offending byte.
    """
    b = _as_bytes(data)
    count = _check_count(count, b.size, TRITS_PER_BYTE_2BIT)
    bad = ~_TWOBIT_LEGAL[b]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"illegal trit code 0b10 in byte {i} (0x{int(b[i]):02x})")
    out = _TWOBIT_DECODE[b].reshape(-1)
    if out.size != count and np.any(_TWOBIT_CODES[b[-1]][count % TRITS_PER_BYTE_2BIT :] != 0):
        raise FormatError(f"padding trits of the last byte (byte {b.size - 1}) are not zero")
    return out[:count].copy()
