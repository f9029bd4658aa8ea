"""A compiled trine program and its ``.trine`` file format.

A :class:`Program` is what the host sends to an accelerator: a chain of ternary layers
(:class:`trine.contract.reference.Layer`), the rule that turns a float input into int8
(``input_scale``)
and optional names for the outputs. :meth:`Program.run_reference` is its bit-exact software
inference through :func:`trine.contract.reference.run_network`.

The ``.trine`` file, format version 1
-------------------------------------
Little-endian throughout; the fields follow each other without gaps or alignment. The fixed
header is 24 bytes; the layer records follow from offset 24, each ``10 + 4*M +
packed_size(M*K)`` bytes long, then the trailer and the checksum.

====================  ====================  ===================================================
field                 type                  contents and rule
====================  ====================  ===================================================
magic                 8 bytes (offset 0)    ``b"TRINE\\x00\\r\\n"``: NUL marks it binary, CR LF
                                            catches newline translation
format_version        u16 (offset 8)        1; the readable versions are
                                            :data:`SUPPORTED_VERSIONS`
spec_version          u16 (offset 10)       the :data:`trine.contract.spec.SPEC_VERSION` whose
packing and
                                            requantisation rule the program follows
file_size             u64 (offset 12)       length of the whole file, checksum included
n_layers              u32 (offset 20)       >= 1
*per layer i:* M      u32                   fan-out, >= 1
K                     u32                   fan-in, in ``[1, MAX_FAN_IN]``; equals the previous
                                            layer's M
shift                 u8                    in ``[0, SHIFT_MAX]``
relu                  u8                    0 or 1
bias                  M x i32
weights               packed_size(M*K) B    :func:`trine.contract.spec.pack_trits` of the (M, K)
trits,
                                            C order (row j holds output j's K weights)
has_input_scale       u8                    0 or 1
input_scale           f64                   only if has_input_scale; finite and > 0
has_labels            u8                    0 or 1
n_labels              u32                   only if has_labels; equals the last layer's M
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
the bytes remaining before anything is allocated.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trine.contract.device_image import beat_bytes, weight_words
from trine.contract.errors import TrineError
from trine.contract.fileio import write_atomic
from trine.contract.network import run_network
from trine.contract.params import CapacityError, DeviceLimits, check_fits
from trine.contract.reference import Layer
from trine.contract.spec import (
    ACT_MAX,
    ACT_MIN,
    MAX_FAN_IN,
    SHIFT_MAX,
    SPEC_VERSION,
    pack_trits,
    packed_size,
    unpack_trits,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "ProgramError",
    "ProgramFormatError",
    "ProgramTooLargeError",
    "Program",
    "Layer",  # trine.contract.reference.Layer, re-exported: the one layer type
]

MAGIC = b"TRINE\x00\r\n"
#: The version :meth:`Program.to_bytes` writes.
FORMAT_VERSION = 1
#: The versions :meth:`Program.from_bytes` reads.
SUPPORTED_VERSIONS = (1,)

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_HEADER = struct.Struct("<8sHHQI")  # magic, format_version, spec_version, file_size, n_layers
_SPEC_VERSION_OFFSET = 10
_FILE_SIZE_OFFSET = 12


class ProgramError(TrineError, ValueError):
    """A program, or an input to it, that breaks the rules of :class:`Program`."""


class ProgramFormatError(ProgramError):
    """A ``.trine`` file that cannot be loaded; no partial program is ever returned."""


class ProgramTooLargeError(ProgramError, CapacityError):
    """A program that exceeds the :class:`trine.contract.params.DeviceLimits` of its device."""


def _check_input_scale(scale: Any) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, int | float | np.integer | np.floating):
        raise ProgramError(f"input_scale must be a positive finite number or None, not {scale!r}")
    try:
        value = float(scale)
    except OverflowError:
        value = math.inf
    if not (math.isfinite(value) and value > 0):
        raise ProgramError(f"input_scale must be a positive finite number, not {scale!r}")
    return value


def _check_labels(labels: Any, outputs: int) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
        raise ProgramError(f"labels must be a list of str or None, not {type(labels).__name__}")
    if len(labels) != outputs:
        raise ProgramError(
            f"labels has {len(labels)} entries but the last layer has {outputs} outputs"
        )
    for j, label in enumerate(labels):
        if not isinstance(label, str):
            raise ProgramError(f"label {j} must be a str, not {type(label).__name__}")
        try:
            label.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ProgramError(f"label {j} cannot be encoded as UTF-8: {e.reason}") from None
    return tuple(labels)


def _first_position(bad: np.ndarray) -> int | tuple[int, ...]:
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    return pos[0] if len(pos) == 1 else pos


def _nbytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


class Program:
    """A chain of ternary layers ready to be sent to a device or saved as a ``.trine`` file.

    Parameters
    ----------
    layers : sequence of trine.contract.reference.Layer
        At least one; layer ``i + 1`` takes as many inputs as layer ``i`` has outputs.
    input_scale : float, optional
        Positive and finite. A float input ``x`` becomes
        ``clip(rint(x / input_scale), -128, 127)`` as int8, computed in float64, ``rint``
        rounding ties to even. Without it, only integer inputs are accepted.
    labels : list of str, optional
        One name per output of the last layer.

    Members
    -------
    layers : tuple of trine.contract.reference.Layer
    input_scale : float or None
    labels : tuple of str or None
    input_width, output_width, n_layers : int

    Raises
    ------
    ProgramError
        For an empty or non-chaining layer list, an element that is not a ``Layer``, a bad
        ``input_scale`` or a label list of the wrong length or type.
    """

    __slots__ = ("_layers", "_input_scale", "_labels")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        layers: Sequence[Layer],
        input_scale: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        if isinstance(layers, Layer) or not isinstance(layers, Sequence):
            raise ProgramError(
                "layers must be a sequence of trine.contract.reference.Layer, not "
                f"{type(layers).__name__}"
            )
        layers = tuple(layers)
        if not layers:
            raise ProgramError("a program needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ProgramError(
                    f"layer {i} must be a trine.contract.reference.Layer, not "
                    f"{type(layer).__name__}"
                )
            if i and layer.fan_in != layers[i - 1].fan_out:
                raise ProgramError(
                    f"layer {i} expects {layer.fan_in} inputs but layer {i - 1} has "
                    f"{layers[i - 1].fan_out} outputs"
                )
        self._layers: tuple[Layer, ...] = layers
        self._input_scale = _check_input_scale(input_scale)
        self._labels = _check_labels(labels, layers[-1].fan_out)

    @property
    def layers(self) -> tuple[Layer, ...]:
        return self._layers

    @property
    def input_scale(self) -> float | None:
        return self._input_scale

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self._labels

    @property
    def input_width(self) -> int:
        return self._layers[0].fan_in

    @property
    def output_width(self) -> int:
        return self._layers[-1].fan_out

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        return (
            self._input_scale == other._input_scale
            and self._labels == other._labels
            and len(self._layers) == len(other._layers)
            and all(
                a.shift == b.shift
                and a.relu == b.relu
                and np.array_equal(a.weights, b.weights)
                and np.array_equal(a.bias, b.bias)
                for a, b in zip(self._layers, other._layers, strict=True)
            )
        )

    def __repr__(self) -> str:
        widths = " -> ".join(str(w) for w in [self.input_width, *(x.fan_out for x in self._layers)])
        return f"Program({widths}, input_scale={self._input_scale!r}, labels={self._labels!r})"

    # ----------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------

    def quantize_input(self, x: Any) -> np.ndarray:
        """Return ``x`` as int8 activations of shape ``(K,)`` or ``(N, K)``.

        Integer arrays (any dtype) must already lie in ``[-128, 127]`` and keep their values.
        Float arrays are quantised with ``input_scale`` (see :class:`Program`).

        Raises
        ------
        ProgramError
            For a wrong shape or dtype, integers out of range, NaN or infinity, or a float
            input when the program has no ``input_scale``.
        """
        try:
            a = np.asarray(x)
        except ValueError as e:
            raise ProgramError(f"input must be a rectangular numeric array: {e}") from None
        if a.dtype.kind not in "iuf":
            raise ProgramError(f"input must be an integer or float array, not dtype {a.dtype}")
        if a.ndim not in (1, 2):
            raise ProgramError(f"input must have shape (K,) or (N, K), not {a.shape}")
        if a.shape[-1] != self.input_width:
            raise ProgramError(
                f"input has {a.shape[-1]} values per sample, the program expects {self.input_width}"
            )
        if a.dtype.kind in "iu":
            if a.dtype != np.int8:
                bad = (a < ACT_MIN) | (a > ACT_MAX)
                if bad.any():
                    pos = _first_position(bad)
                    raise ProgramError(
                        f"integer input must be in [{ACT_MIN}, {ACT_MAX}]: value "
                        f"{int(a[pos])} at {pos}"
                    )
                a = a.astype(np.int8)
            return a
        if self._input_scale is None:
            raise ProgramError(
                "float input needs an input_scale, and this program has none "
                "(give int8 input or build the program with input_scale)"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            pos = _first_position(bad)
            raise ProgramError(f"input must be finite: {float(a[pos])} at {pos}")
        with np.errstate(over="ignore"):  # a huge x / scale is inf, which clips to 127 as it should
            q = np.rint(a.astype(np.float64) / self._input_scale)
        return np.clip(q, ACT_MIN, ACT_MAX).astype(np.int8)

    def run_reference(self, x: Any) -> np.ndarray:
        """Run the program on one input ``(K,)`` or a batch ``(N, K)`` with the integer reference.

        ``x`` goes through :meth:`quantize_input` first; returns int8 of shape ``(M,)`` or
        ``(N, M)``, exactly what the hardware computes.
        """
        return run_network(self.quantize_input(x), self._layers)

    # ----------------------------------------------------------------------------------------
    # Device fit and figures
    # ----------------------------------------------------------------------------------------

    def weight_bytes(self, lanes: int, rows: int) -> int:
        """Weight memory in bytes on a device with a ``rows`` x ``lanes`` MAC array.

        The device keeps each layer in tile order (see :mod:`trine.contract.device_image`): one
        weight word of ``beat_bytes(lanes, rows)`` bytes per ``rows x lanes`` tile,
        ``ceil(M / rows) * ceil(K / lanes)`` tiles per layer.
        """
        for name, v in (("lanes", lanes), ("rows", rows)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ProgramError(f"{name} must be a positive integer, not {v!r}")
        lanes, rows = int(lanes), int(rows)
        return weight_words(self._layers, lanes, rows) * beat_bytes(lanes, rows)

    def check_fits(self, limits: DeviceLimits) -> None:
        """Raise :class:`ProgramTooLargeError` unless the program fits ``limits``: the one
        capacity check, :func:`trine.contract.params.check_fits`, whose message lists every
        limit that is exceeded."""
        try:
            check_fits(self._layers, limits)
        except CapacityError as e:
            raise ProgramTooLargeError(str(e)) from None

    def stats(self) -> dict[str, Any]:
        """Figures about the program.

        Returns
        -------
        dict with ``layers`` (count), ``weights`` (trits), ``parameters`` (trits and biases),
        ``sparsity`` (per layer, the fraction of zero weights), ``packed_bytes`` (the packed
        weights alone), ``file_bytes`` (the whole ``.trine`` file) and ``bits_per_weight``
        (``8 * file_bytes / weights``: everything on file, header and biases included).
        """
        weights = sum(x.weights.size for x in self._layers)
        file_bytes = len(self.to_bytes())
        return {
            "layers": self.n_layers,
            "weights": weights,
            "parameters": weights + sum(x.fan_out for x in self._layers),
            "sparsity": [float(np.mean(x.weights == 0)) for x in self._layers],
            "packed_bytes": sum(packed_size(x.weights.size) for x in self._layers),
            "file_bytes": file_bytes,
            "bits_per_weight": 8 * file_bytes / weights,
        }

    # ----------------------------------------------------------------------------------------
    # The .trine file
    # ----------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The program as a ``.trine`` file (see the module docstring for the layout)."""
        out = bytearray(_HEADER.pack(MAGIC, FORMAT_VERSION, SPEC_VERSION, 0, self.n_layers))
        for layer in self._layers:
            out += _U32.pack(layer.fan_out) + _U32.pack(layer.fan_in)
            out += _U8.pack(layer.shift) + _U8.pack(int(layer.relu))
            out += layer.bias.astype("<i4").tobytes()
            out += pack_trits(layer.weights)
        if self._input_scale is None:
            out += _U8.pack(0)
        else:
            out += _U8.pack(1) + _F64.pack(self._input_scale)
        if self._labels is None:
            out += _U8.pack(0)
        else:
            out += _U8.pack(1) + _U32.pack(len(self._labels))
            for label in self._labels:
                raw = label.encode("utf-8")
                out += _U32.pack(len(raw)) + raw
        _U64.pack_into(out, _FILE_SIZE_OFFSET, len(out) + _U32.size)
        out += _U32.pack(zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Program:
        """Decode a ``.trine`` file, validating every field.

        Raises
        ------
        ProgramFormatError
            For anything but a complete, intact, valid file, naming the field at fault.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        return _decode(bytes(data))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the program to ``path`` atomically: the file is complete or untouched."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Program:
        """Read a ``.trine`` file; a :class:`ProgramFormatError` message starts with the path."""
        data = Path(path).read_bytes()
        try:
            return _decode(data)
        except ProgramFormatError as e:
            raise ProgramFormatError(f"{os.fspath(path)}: {e}") from None


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


def _crc_ends_at(data: bytes, end: int) -> bool:
    """Whether ``data[end-4:end]`` is the CRC-32 of everything before it."""
    if end < _HEADER.size + _U32.size or end > len(data):
        return False
    return zlib.crc32(data[: end - 4]) == _U32.unpack_from(data, end - 4)[0]


def _decode(data: bytes) -> Program:
    n = len(data)
    if data[: len(MAGIC)] != MAGIC[:n]:
        raise ProgramFormatError(
            f"not a trine program: magic is {data[: len(MAGIC)]!r}, expected {MAGIC!r}"
        )
    head = _Reader(data, n, "truncated file", "the end of the file")
    head.take(len(MAGIC), "magic")
    version = head.read(_U16, "format_version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise ProgramFormatError(
            f"unsupported format_version {version}: this reader supports version {supported}"
        )
    head.take(_U16.size, "spec_version")  # checked once the checksum has been
    file_size = head.read(_U64, "file_size")

    if n < file_size:
        # Cut short: find the field where the data runs out. If nothing is missing after all,
        # file_size itself is wrong, and the checksum (which covers it) says so.
        r = _Reader(
            data,
            n,
            f"truncated file ({n} bytes, file_size says {file_size})",
            "the end of the file",
        )
        _parse(r)
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
    computed = zlib.crc32(data[: n - 4])
    if stored != computed:
        raise ProgramFormatError(
            f"checksum mismatch: crc32 is 0x{stored:08x} but the contents give "
            f"0x{computed:08x}; the file is corrupt"
        )
    r = _Reader(data, n - _U32.size, "invalid file", "the checksum")
    program = _parse(r)
    if r.pos != r.end:
        raise ProgramFormatError(
            f"invalid file: {_nbytes(r.end - r.pos)} of unexpected data at offset {r.pos}, "
            f"between the last field and the checksum"
        )
    return program


def _parse(r: _Reader) -> Program:
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
    layers: list[Layer] = []
    for i in range(n_layers):
        m = r.read(_U32, f"layer {i} M")
        if m == 0:
            raise ProgramFormatError(f"layer {i} M (fan-out) must be at least 1, not 0")
        k = r.read(_U32, f"layer {i} K")
        if not 1 <= k <= MAX_FAN_IN:
            raise ProgramFormatError(f"layer {i} K (fan-in) must be in [1, {MAX_FAN_IN}], not {k}")
        if layers and k != layers[-1].fan_out:
            raise ProgramFormatError(
                f"layer {i} K = {k} does not match layer {i - 1} M = {layers[-1].fan_out}: "
                f"the layers do not chain"
            )
        shift = r.read(_U8, f"layer {i} shift")
        if shift > SHIFT_MAX:
            raise ProgramFormatError(f"layer {i} shift must be in [0, {SHIFT_MAX}], not {shift}")
        relu = r.read(_U8, f"layer {i} relu")
        if relu > 1:
            raise ProgramFormatError(f"layer {i} relu must be 0 or 1, not {relu}")
        bias = np.frombuffer(r.take(4 * m, f"layer {i} bias ({m} x i32)"), dtype="<i4")
        packed = r.take(packed_size(m * k), f"layer {i} weights ({m} x {k} trits)")
        try:
            weights = unpack_trits(packed, m * k).reshape(m, k)
        except ValueError as e:
            raise ProgramFormatError(f"layer {i} weights: {e}") from None
        layers.append(Layer(weights, bias.astype(np.int64), shift, bool(relu)))

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
        outputs = layers[-1].fan_out
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
    return Program(layers, scale, labels)
