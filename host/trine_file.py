"""The ``.trine`` file: what a :class:`trine.host.program.Program` is on disk.

Little-endian throughout; the fields follow each other without gaps or alignment. Three format
versions exist. A writer uses the oldest that can hold the program: a chain of dense layers
with a flat input is written as version 1, which every trine release reads; anything with a
convolution, a pooling, a flatten or a shaped input as version 2; a program with a layer of
ternary activations (:mod:`trine.contract.reference`) as version 3. A reader takes all three.
A program without ternary activations is never written as version 3, so that readers that
predate them keep reading every program that does not use them.

The fixed header (24 bytes, every version)
------------------------------------------
====================  ====================  ===================================================
field                 type                  contents and rule
====================  ====================  ===================================================
magic                 8 bytes (offset 0)    ``b"TRINE\\x00\\r\\n"``: NUL marks it binary, CR LF
                                            catches newline translation
format_version        u16 (offset 8)        1, 2 or 3 (:data:`SUPPORTED_VERSIONS`)
spec_version          u16 (offset 10)       the :data:`trine.contract.spec.SPEC_VERSION` whose
                                            packing and requantisation the program follows
file_size             u64 (offset 12)       length of the whole file, checksum included
n_layers              u32 (offset 20)       >= 1
====================  ====================  ===================================================

Version 1: dense layers only, from offset 24
--------------------------------------------
====================  ====================  ===================================================
*per layer i:* M      u32                   fan-out, >= 1
K                     u32                   fan-in, in ``[1, MAX_FAN_IN]``; equals the previous
                                            layer's M
shift                 u8                    in ``[0, SHIFT_MAX]``
relu                  u8                    0 or 1
bias                  M x i32
weights               packed_size(M*K) B    :func:`trine.contract.spec.pack_trits` of the
                                            (M, K) trits, C order (row j: output j's weights)
====================  ====================  ===================================================

Version 2: an input shape and layers of four kinds, from offset 24
-------------------------------------------------------------------
====================  ====================  ===================================================
input_rank            u8                    1, 2 or 3: ``(K,)``, ``(C, L)`` or ``(C, H, W)``
input dims            rank x u32            each in ``[1, MAX_DIM]``
*per layer i:* kind   u8                    0 dense, 1 conv, 2 max-pool, 3 flatten
*dense:*              as in version 1       M, K, shift, relu, bias, weights
*conv:* ndim          u8                    1 (Conv1d) or 2 (Conv2d)
C_out, C_in           u32, u32              >= 1; ``C_in * prod(kernel) <= MAX_FAN_IN``
kernel                ndim x u32            >= 1
stride                ndim x u32            >= 1
padding               ndim x u32            <= MAX_DIM
shift, relu, bias     u8, u8, C_out x i32   as for dense
weights               packed B              the (C_out, C_in, *kernel) trits, C order
*max-pool:* ndim      u8                    1 or 2
kernel                ndim x u32            >= 1 (stride = kernel)
*flatten:*            (nothing)
====================  ====================  ===================================================

Version 3: version 2 with ternary activations
---------------------------------------------
As version 2, except that every dense and conv record has one more byte right after ``relu``:

====================  ====================  ===================================================
ternary_threshold     u8                    0: int8 outputs; ``t`` in ``[1, 127]``: ternary
                                            outputs with threshold ``t``
====================  ====================  ===================================================

The trailer (every version)
---------------------------
====================  ====================  ===================================================
has_input_scale       u8                    0 or 1
input_scale           f64                   only if has_input_scale; finite and > 0
has_labels            u8                    0 or 1
n_labels              u32                   only if has_labels; equals the outputs
*per label j:* length u32                   only if has_labels
label                 length bytes          UTF-8
crc32                 u32                   ``zlib.crc32`` of every byte before it
====================  ====================  ===================================================

Why CRC-32: the checksum guards against accidental damage (a bad copy, a flipped bit on a
card). CRC-32 detects every error burst of up to 32 bits, so any one damaged byte for certain,
costs 4 bytes and comes with the standard library, as in PNG, gzip and zip. SHA-256 would add
no protection against deliberate changes: whoever edits the file can recompute an unkeyed hash
too, and guarding against that takes a signature, a separate concern.

Why ``file_size``: it lets the loader tell a cut-off file ("layer 1 bias needs 8 bytes at
offset 59 but only 1 remain ... (7 missing)") and appended data apart from damage inside the
file (a checksum mismatch). Without it, a truncated file and a damaged length field look alike.

Loading checks, in order: the magic, the format version, the file length against
``file_size``, the checksum, then every field as it is read; anything wrong raises
:class:`ProgramFormatError` naming the field, and nothing is returned. Sizes are compared with
the bytes remaining before anything is allocated; the layers must chain
(:func:`trine.contract.network.network_shapes`).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from trine.contract.errors import FormatError, TrineError
from trine.contract.network import network_shapes
from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.contract.spec import (
    MAX_FAN_IN,
    SHIFT_MAX,
    SPEC_VERSION,
    TERNARY_THRESHOLD_MAX,
    TERNARY_THRESHOLD_MIN,
    pack_trits,
    packed_size,
    unpack_trits,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_DIM",
    "HEADER_SIZE",
    "ProgramError",
    "ProgramFormatError",
    "ProgramParts",
    "encode",
    "decode",
    "declared_size",
]

MAGIC = b"TRINE\x00\r\n"
#: The newest version; :func:`encode` writes the oldest that holds the program.
FORMAT_VERSION = 3
#: The versions :func:`decode` reads.
SUPPORTED_VERSIONS = (1, 2, 3)
#: Largest input dimension and padding a file may declare.
MAX_DIM = 1 << 16

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_HEADER = struct.Struct("<8sHHQI")  # magic, format_version, spec_version, file_size, n_layers
#: Bytes of the fixed header, enough to read ``file_size`` before the rest.
HEADER_SIZE = _HEADER.size
_SPEC_VERSION_OFFSET = 10
_FILE_SIZE_OFFSET = 12
_DENSE, _CONV, _POOL, _FLATTEN = range(4)


class ProgramError(TrineError, ValueError):
    """A program, or an input to it, that breaks the rules of a trine.host.program.Program."""


class ProgramFormatError(ProgramError):
    """A ``.trine`` file that cannot be loaded; no partial program is ever returned."""


class ProgramParts(NamedTuple):
    """What a file holds: the layers, the input shape, the input scale and the labels."""

    layers: tuple
    input_shape: tuple[int, ...]
    input_scale: float | None
    labels: tuple[str, ...] | None


def _nbytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _dims(values: Sequence[int]) -> bytes:
    return b"".join(_U32.pack(int(v)) for v in values)


def _threshold(layer, version: int) -> bytes:
    """Version 3's ternary_threshold byte (nothing in older versions)."""
    return _U8.pack(layer.ternary_threshold or 0) if version >= 3 else b""


def _dense_record(layer: Layer, version: int = 1) -> bytes:
    return (_U32.pack(layer.fan_out) + _U32.pack(layer.fan_in) + _U8.pack(layer.shift)
            + _U8.pack(int(layer.relu)) + _threshold(layer, version)
            + layer.bias.astype("<i4").tobytes() + pack_trits(layer.weights))


def encode(parts: ProgramParts) -> bytes:
    """The bytes of a ``.trine`` file (version 1 if it can hold the program, else 2, or 3 if
    a layer has ternary activations)."""
    layers, shape = parts.layers, parts.input_shape
    version = 1 if all(isinstance(x, Layer) for x in layers) and len(shape) == 1 else 2
    if any(getattr(x, "ternary_threshold", None) is not None for x in layers):
        version = 3
    out = bytearray(_HEADER.pack(MAGIC, version, SPEC_VERSION, 0, len(layers)))
    if version == 1:
        for layer in layers:
            out += _dense_record(layer)
    else:
        out += _U8.pack(len(shape)) + _dims(shape)
        for layer in layers:
            if isinstance(layer, Layer):
                out += _U8.pack(_DENSE) + _dense_record(layer, version)
            elif isinstance(layer, Conv):
                out += _U8.pack(_CONV) + _U8.pack(layer.ndim)
                out += _U32.pack(layer.out_channels) + _U32.pack(layer.in_channels)
                out += _dims(layer.kernel) + _dims(layer.stride) + _dims(layer.padding)
                out += _U8.pack(layer.shift) + _U8.pack(int(layer.relu))
                out += _threshold(layer, version)
                out += layer.bias.astype("<i4").tobytes() + pack_trits(layer.weights)
            elif isinstance(layer, MaxPool):
                out += _U8.pack(_POOL) + _U8.pack(layer.ndim) + _dims(layer.kernel)
            else:
                out += _U8.pack(_FLATTEN)
    if parts.input_scale is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1) + _F64.pack(parts.input_scale)
    if parts.labels is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1) + _U32.pack(len(parts.labels))
        for label in parts.labels:
            raw = label.encode("utf-8")
            out += _U32.pack(len(raw)) + raw
    _U64.pack_into(out, _FILE_SIZE_OFFSET, len(out) + _U32.size)
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Reader:
    """A cursor over ``data[:end]`` whose reads fail with the field's name, never past ``end``."""

    def __init__(self, data: bytes, end: int, problem: str, limit: str) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.end = end
        self.problem = problem  # what running out means here: "truncated file", ...
        self.limit = limit  # where the readable bytes end: "the end of the file", ...

    def take(self, n: int, field: str) -> memoryview:
        remain = self.end - self.pos
        if n > remain:
            raise ProgramFormatError(
                f"{self.problem}: {field} needs {_nbytes(n)} at offset {self.pos} but only "
                f"{remain} remain before {self.limit} ({n - remain} missing)"
            )
        self.pos += n
        return self.view[self.pos - n : self.pos]

    def read(self, fmt: struct.Struct, field: str) -> Any:
        return fmt.unpack(self.take(fmt.size, field))[0]

    def dims(self, n: int, field: str) -> tuple[int, ...]:
        return tuple(self.read(_U32, f"{field} {d}" if n > 1 else field) for d in range(n))


def _crc_ends_at(data: bytes, end: int) -> bool:
    """Whether ``data[end-4:end]`` is the CRC-32 of everything before it."""
    if end < _HEADER.size + _U32.size or end > len(data):
        return False
    return zlib.crc32(memoryview(data)[: end - 4]) == _U32.unpack_from(data, end - 4)[0]


def declared_size(header: bytes) -> int | None:
    """``file_size`` from the first :data:`HEADER_SIZE` bytes of a file, None if they are not
    a trine header of a supported version (:func:`decode` then says why)."""
    if len(header) < HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
        return None
    version = _U16.unpack_from(header, 8)[0]
    if version not in SUPPORTED_VERSIONS:
        return None
    return _U64.unpack_from(header, _FILE_SIZE_OFFSET)[0]


def decode(data: bytes) -> ProgramParts:
    """Decode and validate a whole ``.trine`` file.

    Raises
    ------
    ProgramFormatError
        For anything but a complete, intact, valid file, naming the field at fault.
    """
    n = len(data)
    if data[: len(MAGIC)] != MAGIC[:n]:
        raise ProgramFormatError(
            f"not a trine program: magic is {data[: len(MAGIC)]!r}, expected {MAGIC!r}"
        )
    head = _Reader(data, n, "truncated file", "the end of the file")
    head.take(len(MAGIC), "magic")
    version = head.read(_U16, "format_version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS[:-1])
        supported += f" and {SUPPORTED_VERSIONS[-1]}"
        raise ProgramFormatError(
            f"unsupported format_version {version}: this reader supports versions {supported}"
        )
    head.take(_U16.size, "spec_version")  # checked once the checksum has been
    file_size = head.read(_U64, "file_size")

    if n < file_size:
        # Cut short: find the field where the data runs out. If nothing is missing after all,
        # file_size itself is wrong, and the checksum (which covers it) says so.
        r = _Reader(data, n, f"truncated file ({n} bytes, file_size says {file_size})",
                    "the end of the file")
        _parse(r, version)
        r.take(_U32.size, "crc32")
        if not _crc_ends_at(data, n):
            raise ProgramFormatError("checksum mismatch: the file is corrupt")
        raise ProgramFormatError(f"file_size says {file_size} bytes but the file has {n}")
    if n > file_size:
        if _crc_ends_at(data, file_size):
            raise ProgramFormatError(
                f"trailing data: {_nbytes(n - file_size)} after the end of the program "
                f"(file_size = {file_size})"
            )
        if _crc_ends_at(data, n):
            raise ProgramFormatError(f"file_size says {file_size} bytes but the file has {n}")
        raise ProgramFormatError(
            f"checksum mismatch: the file is corrupt (it has {n} bytes, file_size says {file_size})"
        )
    stored = _U32.unpack_from(data, n - 4)[0]
    computed = zlib.crc32(memoryview(data)[: n - 4])  # no copy of a large file
    if stored != computed:
        raise ProgramFormatError(
            f"checksum mismatch: crc32 is 0x{stored:08x} but the contents give "
            f"0x{computed:08x}; the file is corrupt"
        )
    r = _Reader(data, n - _U32.size, "invalid file", "the checksum")
    parts = _parse(r, version)
    if r.pos != r.end:
        raise ProgramFormatError(
            f"invalid file: {_nbytes(r.end - r.pos)} of unexpected data at offset {r.pos}, "
            f"between the last field and the checksum"
        )
    return parts


def _read_bias_and_weights(r: _Reader, i: int, m: int, shape: tuple[int, ...]):
    bias = np.frombuffer(r.take(4 * m, f"layer {i} bias ({m} x i32)"), dtype="<i4")
    count = math.prod(shape)
    packed = r.take(packed_size(count), f"layer {i} weights ({' x '.join(map(str, shape))} "
                                        "trits)")
    try:
        weights = unpack_trits(packed, count)
        weights.setflags(write=False)  # the layer keeps this very array
        weights = weights.reshape(shape)
    except ValueError as e:
        raise ProgramFormatError(f"layer {i} weights: {e}") from None
    return bias.astype(np.int64), weights


def _shift_relu(r: _Reader, i: int) -> tuple[int, bool]:
    shift = r.read(_U8, f"layer {i} shift")
    if shift > SHIFT_MAX:
        raise ProgramFormatError(f"layer {i} shift must be in [0, {SHIFT_MAX}], not {shift}")
    relu = r.read(_U8, f"layer {i} relu")
    if relu > 1:
        raise ProgramFormatError(f"layer {i} relu must be 0 or 1, not {relu}")
    return shift, bool(relu)


def _read_threshold(r: _Reader, i: int, version: int) -> int | None:
    if version < 3:
        return None
    t = r.read(_U8, f"layer {i} ternary_threshold")
    if t > TERNARY_THRESHOLD_MAX:
        raise ProgramFormatError(f"layer {i} ternary_threshold must be 0 (int8 outputs) or in "
                                 f"[{TERNARY_THRESHOLD_MIN}, {TERNARY_THRESHOLD_MAX}], not {t}")
    return t or None


def _dense(r: _Reader, i: int, previous: int | None, version: int = 1) -> Layer:
    m = r.read(_U32, f"layer {i} M")
    if m == 0:
        raise ProgramFormatError(f"layer {i} M (fan-out) must be at least 1, not 0")
    k = r.read(_U32, f"layer {i} K")
    if not 1 <= k <= MAX_FAN_IN:
        raise ProgramFormatError(f"layer {i} K (fan-in) must be in [1, {MAX_FAN_IN}], not {k}")
    if previous is not None and k != previous:
        raise ProgramFormatError(
            f"layer {i} K = {k} does not match layer {i - 1} M = {previous}: "
            f"the layers do not chain"
        )
    shift, relu = _shift_relu(r, i)
    threshold = _read_threshold(r, i, version)
    bias, weights = _read_bias_and_weights(r, i, m, (m, k))
    return Layer(weights, bias, shift, relu, ternary_threshold=threshold)


def _ndim(r: _Reader, i: int, what: str) -> int:
    ndim = r.read(_U8, f"layer {i} {what} ndim")
    if ndim not in (1, 2):
        raise ProgramFormatError(f"layer {i} {what} ndim must be 1 or 2, not {ndim}")
    return ndim


def _positive(values: tuple[int, ...], field: str, high: int = MAX_DIM) -> None:
    for v in values:
        if not 1 <= v <= high:
            raise ProgramFormatError(f"{field} must be in [1, {high}], not {v}")


def _conv(r: _Reader, i: int, version: int = 2) -> Conv:
    ndim = _ndim(r, i, "conv")
    c_out = r.read(_U32, f"layer {i} C_out")
    c_in = r.read(_U32, f"layer {i} C_in")
    _positive((c_out,), f"layer {i} C_out", MAX_FAN_IN)
    _positive((c_in,), f"layer {i} C_in", MAX_FAN_IN)
    kernel = r.dims(ndim, f"layer {i} kernel")
    _positive(kernel, f"layer {i} kernel", MAX_FAN_IN)
    if c_in * math.prod(kernel) > MAX_FAN_IN:
        raise ProgramFormatError(f"layer {i} fan-in C_in x kernel = {c_in * math.prod(kernel)} "
                                 f"exceeds {MAX_FAN_IN}")
    stride = r.dims(ndim, f"layer {i} stride")
    _positive(stride, f"layer {i} stride")
    padding = r.dims(ndim, f"layer {i} padding")
    for p in padding:
        if p > MAX_DIM:
            raise ProgramFormatError(f"layer {i} padding must be <= {MAX_DIM}, not {p}")
    shift, relu = _shift_relu(r, i)
    threshold = _read_threshold(r, i, version)
    bias, weights = _read_bias_and_weights(r, i, c_out, (c_out, c_in, *kernel))
    try:
        return Conv(weights, bias, stride, padding, shift, relu, ternary_threshold=threshold)
    except FormatError as e:
        raise ProgramFormatError(f"layer {i}: {e}") from None


def _parse(r: _Reader, version: int) -> ProgramParts:
    """Read and validate everything after the format version, up to the checksum."""
    r.pos = _SPEC_VERSION_OFFSET
    spec_version = r.read(_U16, "spec_version")
    if spec_version != SPEC_VERSION:
        raise ProgramFormatError(
            f"spec_version {spec_version} is not supported: this toolkit implements "
            f"trine.contract.spec version {SPEC_VERSION}"
        )
    r.take(_U64.size, "file_size")
    n_layers = r.read(_U32, "n_layers")
    if n_layers == 0:
        raise ProgramFormatError("n_layers is 0: a program needs at least one layer")
    layers: list = []
    shape: tuple[int, ...] | None = None
    if version == 1:
        for i in range(n_layers):
            layers.append(_dense(r, i, layers[-1].fan_out if layers else None))
    else:
        rank = r.read(_U8, "input_rank")
        if rank not in (1, 2, 3):
            raise ProgramFormatError(f"input_rank must be 1, 2 or 3, not {rank}")
        shape = r.dims(rank, "input dim")
        _positive(shape, "input dim")
        for i in range(n_layers):
            kind = r.read(_U8, f"layer {i} kind")
            if kind == _DENSE:
                layers.append(_dense(r, i, None, version))
            elif kind == _CONV:
                layers.append(_conv(r, i, version))
            elif kind == _POOL:
                ndim = _ndim(r, i, "max-pool")
                kernel = r.dims(ndim, f"layer {i} pool kernel")
                _positive(kernel, f"layer {i} pool kernel")
                layers.append(MaxPool(kernel, ndim=ndim))
            elif kind == _FLATTEN:
                layers.append(Flatten())
            else:
                raise ProgramFormatError(f"layer {i} kind must be 0 (dense), 1 (conv), "
                                         f"2 (max-pool) or 3 (flatten), not {kind}")
    try:
        shapes = network_shapes(layers, shape)
    except FormatError as e:
        raise ProgramFormatError(f"the layers do not chain: {e}") from None
    outputs = math.prod(shapes[-1])

    has_scale = r.read(_U8, "has_input_scale")
    if has_scale > 1:
        raise ProgramFormatError(f"has_input_scale must be 0 or 1, not {has_scale}")
    scale = None
    if has_scale:
        scale = r.read(_F64, "input_scale")
        if not (math.isfinite(scale) and scale > 0):
            raise ProgramFormatError(f"input_scale must be a positive finite number, not {scale}")
    has_labels = r.read(_U8, "has_labels")
    if has_labels > 1:
        raise ProgramFormatError(f"has_labels must be 0 or 1, not {has_labels}")
    labels = None
    if has_labels:
        count = r.read(_U32, "n_labels")
        if count != outputs:
            raise ProgramFormatError(
                f"n_labels is {count} but the last layer has {outputs} outputs"
            )
        labels = []
        for j in range(count):
            length = r.read(_U32, f"label {j} length")
            raw = r.take(length, f"label {j} ({_nbytes(length)})")
            try:
                labels.append(str(raw, "utf-8"))
            except UnicodeDecodeError as e:
                raise ProgramFormatError(
                    f"label {j} is not valid UTF-8: {e.reason} at byte {e.start}"
                ) from None
    return ProgramParts(tuple(layers), shapes[0], scale, None if labels is None else tuple(labels))
