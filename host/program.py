"""A compiled trine program: a network of ternary layers, its input rule and output names.

A :class:`Program` is what the host sends to an accelerator: a chain of ternary layers
(:mod:`trine.contract.reference`: dense, Conv1d/Conv2d, max-pooling, flatten) with its input
shape, the rule that turns a float input into int8 (``input_scale``) and optional names for
the outputs. :meth:`Program.run_reference` is its bit-exact software inference
(:func:`trine.contract.network.run_network`). Its file format is :mod:`trine.host.trine_file`.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from typing import Any

import numpy as np

from trine.contract.device_image import DeviceImage, beat_bytes, weight_words
from trine.contract.errors import FormatError
from trine.contract.fileio import write_atomic
from trine.contract.network import LAYER_TYPES, layer_kind, network_shapes, run_network
from trine.contract.params import CapacityError, DeviceLimits, check_fits
from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.contract.spec import ACT_MAX, ACT_MIN, packed_size
from trine.host.trine_file import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    SUPPORTED_VERSIONS,
    ProgramError,
    ProgramFormatError,
    ProgramParts,
    declared_size,
)
from trine.host.trine_file import decode as _decode_file
from trine.host.trine_file import encode as _encode_file

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_FILE_SIZE",
    "ProgramError",
    "ProgramFormatError",
    "ProgramTooLargeError",
    "Program",
    "Layer",  # the layers of trine.contract.reference, re-exported
    "Conv",
    "MaxPool",
    "Flatten",
]

#: Largest ``.trine`` file :meth:`Program.load` reads (far beyond any device's memories).
MAX_FILE_SIZE = 1 << 30


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


class Program:
    """A network of ternary layers ready to be sent to a device or saved as a ``.trine`` file.

    Parameters
    ----------
    layers : sequence of trine.contract.reference layers
        At least one: ``Layer`` (dense), ``Conv``, ``MaxPool``, ``Flatten``; each must take
        what the one before gives (:func:`trine.contract.network.network_shapes`).
    input_scale : float, optional
        Positive and finite. A float input ``x`` becomes
        ``clip(rint(x / input_scale), -128, 127)`` as int8, computed in float64, ``rint``
        rounding ties to even. Without it, only integer inputs are accepted.
    labels : list of str, optional
        One name per output of the last layer.
    input_shape : tuple of int, optional
        ``(K,)``, ``(C, L)`` or ``(C, H, W)``; by default ``(K,)`` of a first dense layer
        (required when the network starts with a convolution).

    Members
    -------
    layers : tuple of layers
    input_shape, output_shape : tuple of int
    input_scale : float or None
    labels : tuple of str or None
    input_width, output_width : int
        Values per sample in and out (the products of the shapes).
    n_layers : int

    Raises
    ------
    ProgramError
        For an empty or non-chaining layer list, an element that is not a layer, a bad
        ``input_scale`` or a label list of the wrong length or type.
    """

    __slots__ = ("_layers", "_input_scale", "_labels", "_shapes")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        layers: Sequence,
        input_scale: float | None = None,
        labels: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if isinstance(layers, LAYER_TYPES) or not isinstance(layers, Sequence):
            raise ProgramError(
                "layers must be a sequence of trine.contract.reference.Layer, not "
                f"{type(layers).__name__}"
            )
        layers = tuple(layers)
        try:
            self._shapes = network_shapes(layers, input_shape)
        except FormatError as e:
            raise ProgramError(str(e)) from None
        self._layers = layers
        self._input_scale = _check_input_scale(input_scale)
        self._labels = _check_labels(labels, math.prod(self._shapes[-1]))

    @property
    def layers(self) -> tuple:
        return self._layers

    @property
    def input_scale(self) -> float | None:
        return self._input_scale

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self._labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shapes[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._shapes[-1]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shape and every layer's output shape."""
        return list(self._shapes)

    @property
    def input_width(self) -> int:
        return math.prod(self._shapes[0])

    @property
    def output_width(self) -> int:
        return math.prod(self._shapes[-1])

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def weighted_layers(self) -> tuple:
        """The dense and convolution layers, the ones with trits and biases."""
        return tuple(x for x in self._layers if isinstance(x, Layer | Conv))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Program):
            return NotImplemented
        return (
            self._input_scale == other._input_scale
            and self._labels == other._labels
            and self._shapes == other._shapes
            and len(self._layers) == len(other._layers)
            and all(_same_layer(a, b) for a, b in zip(self._layers, other._layers, strict=True))
        )

    def __repr__(self) -> str:
        if all(isinstance(x, Layer) for x in self._layers):
            widths = " -> ".join(str(w) for w in [self.input_width,
                                                  *(x.fan_out for x in self._layers)])
        else:
            widths = " -> ".join([str(self.input_shape), *(layer_kind(x) for x in self._layers)])
        return f"Program({widths}, input_scale={self._input_scale!r}, labels={self._labels!r})"

    # ----------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------

    def quantize_input(self, x: Any) -> np.ndarray:
        """Return ``x`` as int8 activations of the input shape, one sample or a batch.

        ``x`` is ``input_shape`` or ``(N, *input_shape)``, or flat: ``(K,)`` or ``(N, K)`` with
        ``K = input_width`` (reshaped in C order). Integer arrays (any dtype) must already lie
        in ``[-128, 127]`` and keep their values. Float arrays are quantised with
        ``input_scale`` (see :class:`Program`).

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
        shape = self.input_shape
        if a.shape == shape or a.shape[1:] == shape:
            pass
        elif a.ndim in (1, 2) and len(shape) > 1 and a.shape[-1] == self.input_width:
            a = a.reshape(*a.shape[:-1], *shape)
        elif len(shape) == 1:
            if a.ndim not in (1, 2):
                raise ProgramError(f"input must have shape (K,) or (N, K), not {a.shape}")
            raise ProgramError(f"input has {a.shape[-1]} values per sample, the program "
                               f"expects {self.input_width}")
        else:
            raise ProgramError(f"input must have shape {shape}, (N, {', '.join(map(str, shape))})"
                               f" or {self.input_width} values per sample, not {a.shape}")
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
        """Run the program on one input or a batch with the integer reference.

        ``x`` goes through :meth:`quantize_input` first; returns int8 of ``output_shape`` or
        ``(N, *output_shape)``, exactly what the hardware computes.
        """
        return run_network(self.quantize_input(x), self._layers, self.input_shape)

    # ----------------------------------------------------------------------------------------
    # Device fit and figures
    # ----------------------------------------------------------------------------------------

    def weight_bytes(self, lanes: int, rows: int) -> int:
        """Weight memory in bytes on a device with a ``rows`` x ``lanes`` MAC array.

        The device keeps each layer in tile order (see :mod:`trine.contract.device_image`): one
        weight word of ``beat_bytes(lanes, rows)`` bytes per ``rows x lanes`` tile,
        ``ceil(M / rows) * ceil(K / lanes)`` tiles per dense layer (``K`` over the device's
        view of a convolution's window: channels padded to whole words).
        """
        for name, v in (("lanes", lanes), ("rows", rows)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ProgramError(f"{name} must be a positive integer, not {v!r}")
        lanes, rows = int(lanes), int(rows)
        return (weight_words(self._layers, self.input_shape, lanes, rows)
                * beat_bytes(lanes, rows))

    def check_fits(self, limits: DeviceLimits) -> DeviceImage:
        """The program's device image for a device of ``limits``, or
        :class:`ProgramTooLargeError`: the one capacity check,
        :func:`trine.contract.params.check_fits`, whose message names the layer and what it
        needs for every limit that is exceeded (weights, biases, table, activation pool)."""
        try:
            return check_fits(self._layers, limits, self.input_shape)
        except CapacityError as e:
            raise ProgramTooLargeError(str(e)) from None

    def stats(self) -> dict[str, Any]:
        """Figures about the program.

        Returns
        -------
        dict with ``layers`` (count), ``weights`` (trits), ``parameters`` (trits and biases),
        ``sparsity`` (per dense or conv layer, the fraction of zero weights),
        ``packed_bytes`` (the packed weights alone), ``file_bytes`` (the whole ``.trine``
        file) and ``bits_per_weight`` (``8 * file_bytes / weights``: everything on file,
        header and biases included).
        """
        weighted = self.weighted_layers
        weights = sum(x.weights.size for x in weighted)
        file_bytes = len(self.to_bytes())
        return {
            "layers": self.n_layers,
            "weights": weights,
            "parameters": weights + sum(x.bias.size for x in weighted),
            "sparsity": [float(np.mean(x.weights == 0)) for x in weighted],
            "packed_bytes": sum(packed_size(x.weights.size) for x in weighted),
            "file_bytes": file_bytes,
            "bits_per_weight": 8 * file_bytes / weights if weights else math.inf,
        }

    # ----------------------------------------------------------------------------------------
    # The .trine file
    # ----------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The program as a ``.trine`` file (:mod:`trine.host.trine_file`)."""
        return _encode_file(ProgramParts(self._layers, self.input_shape, self._input_scale,
                                         self._labels))

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
        parts = _decode_file(data if isinstance(data, bytes) else bytes(data))
        return cls(parts.layers, parts.input_scale, parts.labels, parts.input_shape)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the program to ``path`` atomically: the file is complete or untouched."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Program:
        """Read a ``.trine`` file; a :class:`ProgramFormatError` message starts with the path.

        Only a regular file is read, and only after its header's ``file_size`` has been
        checked against the file's length and :data:`MAX_FILE_SIZE`: no file makes this read
        without bound.
        """
        name = os.fspath(path)
        # O_NONBLOCK: opening a FIFO (or a device) for reading would otherwise wait for a
        # writer for ever; a regular file ignores the flag
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ProgramFormatError(f"{name}: not a regular file")
        with open(fd, "rb") as f:
            head = f.read(HEADER_SIZE)
            declared = declared_size(head)
            if info.st_size > MAX_FILE_SIZE or (declared is not None
                                                and declared > MAX_FILE_SIZE):
                raise ProgramFormatError(
                    f"{name}: {max(info.st_size, declared or 0)} bytes is more than a program "
                    f"may have ({MAX_FILE_SIZE})")
            data = head + f.read(info.st_size - len(head) + 1)
        try:
            return cls.from_bytes(data)
        except ProgramFormatError as e:
            raise ProgramFormatError(f"{name}: {e}") from None


def _same_layer(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, Layer | Conv):
        return (a.shift == b.shift and a.relu == b.relu and np.array_equal(a.weights, b.weights)
                and np.array_equal(a.bias, b.bias)
                and getattr(a, "ternary_threshold", None) == getattr(b, "ternary_threshold", None)
                and (not isinstance(a, Conv)
                     or (a.stride, a.padding) == (b.stride, b.padding)))
    return a == b
