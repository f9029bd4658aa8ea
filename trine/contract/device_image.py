"""What an accelerator's memories hold for a network: the device image (pure NumPy).

The host compiles a list of :class:`trine.contract.reference.Layer` into this image; the gateware
runs it;
the testbenches build it the same way. It is defined once, here.

Weights, in tile order
    For each layer, for each block of ``rows`` outputs ``j``, for each chunk of ``lanes`` inputs
    ``c``: one *beat* of ``rows x lanes`` trits, row-major (trit ``r * lanes + l`` is output
    ``j * rows + r``, input ``c * lanes + l``), ragged edges padded with 0-trits, packed 5 per
    byte (:func:`trine.contract.spec.pack_trits`) into ``beat_bytes(lanes, rows)`` bytes. One beat
    is one word
    of the weight memory, so the device reads one word per clock and never reorders anything.

Biases, folded
    The MAC array runs with ``correction=False`` (it outputs ``acc - count(w == -1)``), and the
    requantiser computes ``(acc' + bias') >> shift`` without a rounding adder. So the stored bias is
    ``bias + count(w[j] == -1) + (2**(shift-1) if shift else 0)``, which equals the reference's
    ``floor((acc + bias + 2**(shift-1)) / 2**shift)`` exactly. It needs
    :data:`BIAS_STORE_WIDTH` bits.

Layer table
    One :class:`LayerEntry` per layer, :data:`LAYER_ENTRY_SIZE` bytes little-endian.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

import numpy as np

from trine.contract.errors import FormatError
from trine.contract.reference import Layer
from trine.contract.spec import BIAS_MAX, MAX_FAN_IN, pack_trits, packed_size

__all__ = [
    "BIAS_STORE_WIDTH",
    "BIAS_STORE_BYTES",
    "LAYER_ENTRY_SIZE",
    "beat_bytes",
    "word_size",
    "weight_words",
    "bias_entries",
    "tile_layer",
    "LayerEntry",
    "DeviceImage",
    "compile_image",
]

#: Width of a stored (folded) bias: int32 plus up to MAX_FAN_IN -1 weights plus 2**30 rounding.
BIAS_STORE_WIDTH = 34
BIAS_STORE_BYTES = 5
assert BIAS_MAX + MAX_FAN_IN + (1 << 30) < 1 << (BIAS_STORE_WIDTH - 1)

_ENTRY = struct.Struct("<IHHHHBB")
#: Bytes per layer-table entry.
LAYER_ENTRY_SIZE = _ENTRY.size


def beat_bytes(lanes: int, rows: int) -> int:
    """Bytes per weight-memory word: one beat of ``rows x lanes`` trits, 5 per byte."""
    return packed_size(lanes * rows)


def word_size(target: int, lanes: int, rows: int) -> int:
    """Bytes per word of a device memory (:class:`trine.contract.protocol.Target` order: weights,
    biases,
    layer table, activation buffers). WRITE and READ advance one word every this many bytes."""
    sizes = (beat_bytes(lanes, rows), BIAS_STORE_BYTES, LAYER_ENTRY_SIZE, lanes)
    if not 0 <= int(target) < len(sizes):
        raise FormatError(f"no memory target {target}")
    return sizes[int(target)]


def weight_words(layers: Sequence[Layer], lanes: int, rows: int) -> int:
    """Weight-memory words the layers take: ``ceil(M / rows) * ceil(K / lanes)`` tiles each."""
    return sum(-(-x.fan_out // rows) * -(-x.fan_in // lanes) for x in layers)


def bias_entries(layers: Sequence[Layer], rows: int) -> int:
    """Bias-memory entries the layers take: ``rows`` per block of outputs."""
    return sum(-(-x.fan_out // rows) * rows for x in layers)


def tile_layer(weights: np.ndarray, lanes: int, rows: int) -> np.ndarray:
    """Weights ``(M, K)`` in tile order: ``(blocks, chunks, rows, lanes)``, zero padded."""
    m, k = weights.shape
    blocks, chunks = -(-m // rows), -(-k // lanes)
    padded = np.zeros((blocks * rows, chunks * lanes), np.int8)
    padded[:m, :k] = weights
    return padded.reshape(blocks, rows, chunks, lanes).transpose(0, 2, 1, 3)


@dataclasses.dataclass(frozen=True)
class LayerEntry:
    """One layer-table entry: where the layer's weights and biases are and how to loop."""

    weight_base: int  # word address of the first beat
    bias_base: int  # index of the first (folded) bias
    chunks: int  # ceil(K / lanes): beats per output block
    blocks: int  # ceil(M / rows)
    fan_out: int  # M: outputs written (the last block may be partial)
    shift: int
    relu: bool

    def to_bytes(self) -> bytes:
        return _ENTRY.pack(self.weight_base, self.bias_base, self.chunks, self.blocks,
                           self.fan_out, self.shift, int(self.relu))

    @classmethod
    def from_bytes(cls, data: bytes) -> LayerEntry:
        wb, bb, chunks, blocks, fan_out, shift, relu = _ENTRY.unpack(data)
        return cls(wb, bb, chunks, blocks, fan_out, shift, bool(relu))


@dataclasses.dataclass(frozen=True)
class DeviceImage:
    """Everything a program puts into the device.

    Members
    -------
    weights : bytes, ``beat_bytes`` per word, all layers back to back
    biases : int64 array of folded biases, all layers back to back (block-padded)
    entries : the layer table
    """

    lanes: int
    rows: int
    weights: bytes
    biases: np.ndarray
    entries: tuple[LayerEntry, ...]

    @property
    def weight_words(self) -> int:
        return len(self.weights) // beat_bytes(self.lanes, self.rows)

    def bias_bytes(self) -> bytes:
        """Biases as ``BIAS_STORE_BYTES``-byte little-endian two's complement values."""
        b = self.biases.astype("<i8").view(np.uint8).reshape(-1, 8)
        return b[:, :BIAS_STORE_BYTES].tobytes()

    def table_bytes(self) -> bytes:
        return b"".join(e.to_bytes() for e in self.entries)


def compile_image(layers: Sequence[Layer], lanes: int, rows: int) -> DeviceImage:
    """Lay ``layers`` out for a ``lanes x rows`` array (no capacity checks: the caller's job)."""
    words, biases, entries = [], [], []
    weight_base = bias_base = 0
    for layer in layers:
        w = layer.weights
        tiles = tile_layer(w, lanes, rows)
        blocks, chunks = tiles.shape[:2]
        for beat in tiles.reshape(blocks * chunks, rows * lanes):
            words.append(pack_trits(beat))
        bias = np.zeros(blocks * rows, np.int64)
        bias[: w.shape[0]] = layer.bias + (w == -1).sum(axis=1)
        if layer.shift:
            bias += 1 << (layer.shift - 1)
        biases.append(bias)
        entries.append(LayerEntry(weight_base, bias_base, chunks, blocks, w.shape[0],
                                  layer.shift, layer.relu))
        weight_base += blocks * chunks
        bias_base += blocks * rows
    return DeviceImage(lanes, rows, b"".join(words), np.concatenate(biases), tuple(entries))
