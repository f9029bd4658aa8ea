"""What an accelerator's memories hold for a network: the device image (pure NumPy).

The host compiles a program (dense, convolution, max-pooling and flatten layers,
:mod:`trine.contract.reference`) into this image; the gateware runs it; the testbenches and
:mod:`trine.contract.device_model` build it the same way. It is defined once, here.

Activations: one pool, position-major
    The device keeps every activation in one memory of ``act_words`` words of ``lanes`` bytes.
    A tensor of shape ``(C, L)`` or ``(C, H, W)`` is stored position by position (row-major
    over ``(y, x)``), each position taking ``cw = ceil(C / lanes)`` words: channel ``c`` at
    byte ``c % lanes`` of the position's word ``c // lanes``; the bytes past ``C`` are
    padding that no weight reads. A flat tensor ``(K,)`` is one position of ``K`` channels.
    Each layer reads its input region and writes its output region, one sample after the
    other (``sample_words`` apart); the regions of a layer are at opposite ends of the pool,
    so a layer runs whenever ``batch * (input + output sample words) <= act_words``.
    Zero padding is not stored: the device feeds zeros for window words outside the input.

Weights, in tile order
    Each weighted layer is a dense layer of fan-in ``K`` over the device's view of its input:
    for a convolution the window, in the order ``(ty, tx, c)`` with channels padded to
    ``cw * lanes`` (``K = kh * kw * cw * lanes``); for a dense layer after a flatten the whole
    position-major tensor (``K = positions * cw * lanes``); otherwise its ``K`` inputs. Padded
    inputs get zero trits. For each block of ``rows`` outputs, for each chunk of ``lanes``
    inputs: one beat of ``rows x lanes`` trits, row-major (trit ``r * lanes + l`` is output
    ``j * rows + r``, input ``c * lanes + l``), packed 5 per byte into
    ``beat_bytes(lanes, rows)`` bytes: one word of the weight memory.

Biases, folded
    The MAC array runs with ``correction=False`` (it outputs ``acc - count(w == -1)``), and the
    requantiser computes ``(acc' + bias') >> shift`` without a rounding adder. So the stored
    bias is ``bias + count(w[j] == -1) + (2**(shift-1) if shift else 0)``, which equals the
    reference's ``floor((acc + bias + 2**(shift-1)) / 2**shift)`` exactly; it needs
    :data:`BIAS_STORE_WIDTH` bits. A max-pooling after a convolution is done by the
    requantiser (the maximum of requantised values, as the reference: requantisation is
    monotonic), so it has no table entry of its own; a flatten only changes how the next
    dense layer's weights are ordered.

Layer table
    One :class:`LayerEntry` per weighted layer: 16-bit words, little-endian, back to back
    (:data:`DENSE_ENTRY_WORDS` for a dense layer, :data:`CONV_ENTRY_WORDS` for a convolution);
    see :class:`LayerEntry` for what the loops do with them. The first word, ``flags``, packs
    the fields of :data:`FLAG_FIELDS`.

Ternary activations
    A layer with ``ternary_threshold=t`` (:func:`trine.contract.reference.ternarize`) has
    ``t`` in its entry's flags (0: int8 outputs). Its outputs are stored like int8 ones, one
    byte per activation holding -1, 0 or +1, so the next layer reads them as int8 inputs and
    computes the reference's dot product unchanged. With max-pooling the maximum is taken of
    the trits, which is the trit of the maximum (ternarisation is monotonic). Only a device
    built with ``ternary_act`` computes them (:func:`compile_image` refuses the layer for any
    other).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from trine.contract.errors import FormatError, TrineError
from trine.contract.network import layer_kind, network_shapes
from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.contract.spec import (
    BIAS_MAX,
    MAX_FAN_IN,
    TERNARY_THRESHOLD_MAX,
    pack_trits,
    packed_size,
)

__all__ = [
    "BIAS_STORE_WIDTH",
    "BIAS_STORE_BYTES",
    "TABLE_WORD_BYTES",
    "DENSE_ENTRY_WORDS",
    "CONV_ENTRY_WORDS",
    "POSITION_LEVELS",
    "FIELD_NAMES",
    "FLAG_FIELDS",
    "field_bits",
    "max_fan_in",
    "beat_bytes",
    "word_size",
    "CapacityError",
    "TensorLayout",
    "LayerEntry",
    "weight_words",
    "DeviceImage",
    "compile_image",
]

#: Width of a stored (folded) bias: int32 plus up to MAX_FAN_IN -1 weights plus 2**30 rounding.
BIAS_STORE_WIDTH = 34
BIAS_STORE_BYTES = 5
assert BIAS_MAX + MAX_FAN_IN + (1 << 30) < 1 << (BIAS_STORE_WIDTH - 1)
#: Bytes of a layer-table word (16 bits, little-endian).
TABLE_WORD_BYTES = 2
#: Table words of a dense layer's entry and of a convolution's.
DENSE_ENTRY_WORDS = 10
CONV_ENTRY_WORDS = 37
#: Loop levels over output positions (2-D pooling needs four: dx, dy, X, Y).
POSITION_LEVELS = 4
#: The fields of an entry, in table order (a dense entry stops after ``out_sample_words``).
_FIELD_NAMES = (
    "flags", "weight_base", "bias_base", "blocks", "fan_out", "cw", "in_base",
    "in_sample_words", "out_base", "out_sample_words", "kw", "kh", "row_step",
    *(f"p_count{i}" for i in range(POSITION_LEVELS)),
    *(f"act_step{i}" for i in range(POSITION_LEVELS)),
    *(f"out_step{i}" for i in range(POSITION_LEVELS)),
    "in_width", "in_height", "x0", "y0",
    *(f"x_step{i}" for i in range(POSITION_LEVELS)),
    *(f"y_step{i}" for i in range(POSITION_LEVELS)),
)
FIELD_NAMES = _FIELD_NAMES
#: The fields packed into an entry's ``flags`` word: ``name -> (first bit, bits)``. A
#: ``ternary_threshold`` of 0 means int8 outputs.
FLAG_FIELDS = {"shift": (0, 5), "relu": (5, 1), "pool_levels": (6, 2), "conv": (8, 1),
               "ternary_threshold": (9, 7)}
assert TERNARY_THRESHOLD_MAX < 1 << FLAG_FIELDS["ternary_threshold"][1]
_U16 = 1 << 16


class CapacityError(TrineError, ValueError):
    """A network that does not fit a device: the message names the layer and what it needs."""


def max_fan_in(act_words: int, lanes: int) -> int:
    """The most products one accumulator of a device sums: a window (or a dense layer's
    input) is at most ``act_words`` words of ``lanes`` bytes (:func:`compile_image` refuses a
    larger window)."""
    return act_words * lanes


def field_bits(act_words: int, lanes: int, rows: int) -> dict[str, tuple[int, bool, bool]]:
    """How wide the device keeps each layer-table field: ``name -> (bits, signed, exact)``.

    A device computes pool addresses modulo ``2**address bits`` (every word a valid table reads
    or writes is below ``act_words``, so that is the same as the table's 16-bit arithmetic):
    bases, sample sizes and steps of addresses are *modular* and kept at the address width.
    The loops' counts (at most ``act_words``: a window word, a position, a row of the input
    are all in the pool), the output count and the window coordinates are *exact*: a table
    whose value does not fit is refused by :func:`compile_image` (the device would count
    wrong). Weight and bias bases are checked against the memories instead (``None`` here).
    The flags word is 16 bits; a device without ``ternary_act`` keeps only the bits below
    ``ternary_threshold``'s (:data:`FLAG_FIELDS`).
    """
    address = max(1, (act_words - 1).bit_length())
    count = act_words.bit_length()
    coordinate = count + 1
    blocks = (-(-act_words * lanes // rows)).bit_length()
    fan_out = (act_words * lanes).bit_length()
    bits = {"flags": (16, False, True), "weight_base": None, "bias_base": None,
            "blocks": (blocks, False, True), "fan_out": (fan_out, False, True),
            "cw": (count, False, True), "in_base": (address, False, False),
            "in_sample_words": (address, False, False), "out_base": (address, False, False),
            "out_sample_words": (address, False, False), "kw": (count, False, True),
            "kh": (count, False, True), "row_step": (address, False, False)}
    for i in range(POSITION_LEVELS):
        bits[f"p_count{i}"] = (count, False, True)
    for kind in ("act_step", "out_step"):
        for i in range(POSITION_LEVELS):
            bits[f"{kind}{i}"] = (address, False, False)
    bits.update({"in_width": (count, False, True), "in_height": (count, False, True),
                 "x0": (coordinate, True, True), "y0": (coordinate, True, True)})
    for kind in ("x_step", "y_step"):
        for i in range(POSITION_LEVELS):
            bits[f"{kind}{i}"] = (coordinate, True, True)
    return bits


def _check_fields(entry: LayerEntry, act_words: int, lanes: int, rows: int, where: str) -> None:
    """Refuse an entry whose exact fields the device cannot hold, or whose window coordinates
    would leave the device's coordinate range."""
    values = dict(zip(_FIELD_NAMES, entry.field_values(), strict=True))
    if entry.window_words > act_words:
        raise CapacityError(f"program does not fit the device: {where}: its window is "
                            f"{entry.window_words} words ({entry.kh} x {entry.kw} x "
                            f"{entry.cw}), more than act_words = {act_words} (the device's "
                            f"accumulators hold at most {act_words * lanes} products)")
    for name, spec in field_bits(act_words, lanes, rows).items():
        if spec is None or not spec[2]:
            continue
        width, signed, _ = spec
        lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)
        if not lo <= values[name] < hi:
            raise CapacityError(f"program does not fit the device: {where}: its {name} is "
                                f"{values[name]}, outside what a device of act_words = "
                                f"{act_words} counts ({lo} .. {hi - 1})")
    width = field_bits(act_words, lanes, rows)["x0"][0]
    for axis, start, extent, kernel in (("x", entry.x0, entry.in_width, entry.kw),
                                        ("y", entry.y0, entry.in_height, entry.kh)):
        if abs(start) + extent + kernel >= 1 << (width - 1):
            raise CapacityError(f"program does not fit the device: {where}: its window's "
                                f"{axis} coordinates reach past what a device of act_words = "
                                f"{act_words} counts (padding {-start}, extent {extent}, "
                                f"kernel {kernel})")


def beat_bytes(lanes: int, rows: int) -> int:
    """Bytes per weight-memory word: one beat of ``rows x lanes`` trits, 5 per byte."""
    return packed_size(lanes * rows)


def word_size(target: int, lanes: int, rows: int) -> int:
    """Bytes per word of a device memory, in :class:`trine.contract.protocol.Target` order:
    weights (one beat), biases (:data:`BIAS_STORE_BYTES`), the layer table
    (:data:`TABLE_WORD_BYTES`) and the activation pool (``lanes``). WRITE and READ advance one
    word every this many bytes."""
    sizes = (beat_bytes(lanes, rows), BIAS_STORE_BYTES, TABLE_WORD_BYTES, lanes)
    if not 0 <= int(target) < len(sizes):
        raise FormatError(f"no memory target {target}")
    return sizes[int(target)]


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """Where a tensor of ``shape`` sits in the activation pool: sample ``b`` from word
    ``base + b * sample_words``, ``cw`` words per position (see the module notes)."""

    shape: tuple[int, ...]
    base: int
    lanes: int

    @property
    def channels(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else self.shape[0]

    @property
    def positions(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    @property
    def cw(self) -> int:
        return -(-self.channels // self.lanes)

    @property
    def sample_words(self) -> int:
        return self.positions * self.cw

    def pack(self, x: np.ndarray) -> np.ndarray:
        """int8 samples ``(N, *shape)`` as the pool's bytes, ``(N, sample_words * lanes)``
        (zero in the padding)."""
        n = len(x)
        c = self.channels
        out = np.zeros((n, self.positions, self.cw * self.lanes), np.int8)
        flat = x.reshape(n, c, self.positions)  # channel-major, as the reference holds it
        out[:, :, :c] = flat.transpose(0, 2, 1)
        return out.reshape(n, -1)

    def unpack(self, data: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`pack`: ``(N, sample_words * lanes)`` bytes to int8
        ``(N, *shape)``."""
        n = len(data)
        pos = np.asarray(data, np.int8).reshape(n, self.positions, self.cw * self.lanes)
        return pos[:, :, : self.channels].transpose(0, 2, 1).reshape(n, *self.shape).copy()

    def flat_index(self) -> np.ndarray:
        """For each byte of a packed sample, the index into the reference's flattened tensor
        (C order, as ``Flatten``), or -1 for padding."""
        c, p = self.channels, self.positions
        idx = np.full((p, self.cw * self.lanes), -1, np.int64)
        idx[:, :c] = (np.arange(c)[None, :] * p + np.arange(p)[:, None])
        return idx.reshape(-1)


@dataclasses.dataclass(frozen=True)
class LayerEntry:
    """One layer-table entry: where a weighted layer's weights, biases and activations are,
    and the loops that walk them. All fields are 16-bit; ``*_step`` fields are signed (two's
    complement, taken modulo the memory's size).

    What the core does with an entry, for each sample ``b`` of the batch::

        in_s, out_s = in_base + b * in_sample_words, out_base + b * out_sample_words
        for block j in range(blocks):                 # rows outputs j*rows .. j*rows+rows-1
            start, pos, x, y = in_s, out_s, x0, y0    # reset at every block
            for each output position, level p0 fastest (counts p_counts):
                acc[r] = sum over the window of w * a, where the window is
                    for ty in range(kh): for tx in range(kw): for g in range(cw):
                        word = start + ty * (kw * cw - 1 + row_step) + tx * cw + g
                        a = pool[word] if 0 <= x + tx < in_width and 0 <= y + ty < in_height
                            else 0                    # zero padding, never stored
                    and w the next word of weights (weight_base + j * window words + ...)
                out[r] = requantise(acc[r] + bias[bias_base + j * rows + r])
                    then, with ternary_threshold t > 0: +1 if out[r] >= t, -1 if
                    out[r] <= -t, else 0 (stored as an int8 byte)
                with pooling, the maximum of out[r] over the pool window (levels p0, or p0
                and p1) is written once, at the window's last position; the bytes written are
                pos * lanes + j * rows + r, for j * rows + r < fan_out
                then, for the level l that advances (the lower ones wrap):
                    start += act_steps[l]; pos += out_steps[l]
                    x += x_steps[l]; y += y_steps[l]

    A dense layer (``conv`` false) has ``kw = kh = 1``, one position and ``cw`` = its chunks;
    its table entry stops after ``out_sample_words``.
    """

    weight_base: int
    bias_base: int
    blocks: int
    fan_out: int
    cw: int
    in_base: int
    in_sample_words: int
    out_base: int
    out_sample_words: int
    shift: int
    relu: bool
    conv: bool = False
    pool_levels: int = 0
    kw: int = 1
    kh: int = 1
    row_step: int = 0
    p_counts: tuple[int, ...] = (1, 1, 1, 1)
    act_steps: tuple[int, ...] = (0, 0, 0, 0)
    out_steps: tuple[int, ...] = (0, 0, 0, 0)
    in_width: int = 1
    in_height: int = 1
    x0: int = 0
    y0: int = 0
    x_steps: tuple[int, ...] = (0, 0, 0, 0)
    y_steps: tuple[int, ...] = (0, 0, 0, 0)
    ternary_threshold: int = 0

    @property
    def words(self) -> int:
        return CONV_ENTRY_WORDS if self.conv else DENSE_ENTRY_WORDS

    @property
    def flags(self) -> int:
        """The flags word: the fields of :data:`FLAG_FIELDS`."""
        word = 0
        for name, (first, bits) in FLAG_FIELDS.items():
            value = int(getattr(self, name))
            if not 0 <= value < 1 << bits:
                raise CapacityError(f"a layer-table entry's {name} is {value}, outside "
                                    f"{bits} bits")
            word |= value << first
        return word

    def field_values(self) -> list[int]:
        """Every field of a convolution's entry (a dense entry's tail at its defaults), in
        table order, as integers (signed ones signed; the flags word whole)."""
        return [self.flags, self.weight_base, self.bias_base, self.blocks, self.fan_out, self.cw,
                self.in_base, self.in_sample_words, self.out_base, self.out_sample_words,
                self.kw, self.kh, self.row_step, *self.p_counts, *self.act_steps,
                *self.out_steps, self.in_width, self.in_height, self.x0, self.y0,
                *self.x_steps, *self.y_steps]

    @property
    def window_words(self) -> int:
        return self.kh * self.kw * self.cw

    def to_words(self) -> list[int]:
        """The entry as table words (unsigned 16-bit)."""
        words = [self.flags, self.weight_base, self.bias_base, self.blocks, self.fan_out, self.cw,
                 self.in_base, self.in_sample_words, self.out_base, self.out_sample_words]
        if self.conv:
            words += [self.kw, self.kh, self.row_step, *self.p_counts, *self.act_steps,
                      *self.out_steps, self.in_width, self.in_height, self.x0, self.y0,
                      *self.x_steps, *self.y_steps]
        for v in words:
            if not -(1 << 15) <= v < _U16:
                raise CapacityError(f"a layer-table field is {v}, outside 16 bits")
        return [v % _U16 for v in words]

    @classmethod
    def from_words(cls, words: Sequence[int]) -> LayerEntry:
        """Decode an entry from the start of ``words`` (unsigned 16-bit values)."""
        def signed(v):
            return v - _U16 if v >= 1 << 15 else v

        flags = {name: words[0] >> first & ((1 << bits) - 1)
                 for name, (first, bits) in FLAG_FIELDS.items()}
        conv = bool(flags["conv"])
        head = dict(weight_base=words[1], bias_base=words[2], blocks=words[3],
                    fan_out=words[4], cw=words[5], in_base=words[6], in_sample_words=words[7],
                    out_base=words[8], out_sample_words=words[9], shift=flags["shift"],
                    relu=bool(flags["relu"]), conv=conv, pool_levels=flags["pool_levels"],
                    ternary_threshold=flags["ternary_threshold"])
        if not conv:
            return cls(**head)
        w = list(words[10:CONV_ENTRY_WORDS])
        return cls(**head, kw=w[0], kh=w[1], row_step=signed(w[2]), p_counts=tuple(w[3:7]),
                   act_steps=tuple(map(signed, w[7:11])),
                   out_steps=tuple(map(signed, w[11:15])), in_width=w[15], in_height=w[16],
                   x0=signed(w[17]), y0=signed(w[18]), x_steps=tuple(map(signed, w[19:23])),
                   y_steps=tuple(map(signed, w[23:27])))


@dataclasses.dataclass(frozen=True)
class DeviceImage:
    """Everything a program puts into the device, and where its inputs and outputs are.

    Members
    -------
    lanes, rows : the array's shape the image is for
    weights : bytes, ``beat_bytes`` per word, all layers back to back
    biases : int64 array of folded biases, all layers back to back (block-padded)
    entries : the layer table
    input, output : TensorLayout of the network's input and output in the pool
    batch : the most samples one RUN may take with this image (the pool's capacity, at most
        the device's ``max_batch``)
    """

    lanes: int
    rows: int
    weights: bytes
    biases: np.ndarray
    entries: tuple[LayerEntry, ...]
    input: TensorLayout
    output: TensorLayout
    batch: int

    @property
    def weight_words(self) -> int:
        return len(self.weights) // beat_bytes(self.lanes, self.rows)

    @property
    def table_words(self) -> int:
        return sum(e.words for e in self.entries)

    def bias_bytes(self) -> bytes:
        """Biases as ``BIAS_STORE_BYTES``-byte little-endian two's complement values."""
        b = self.biases.astype("<i8").view(np.uint8).reshape(-1, 8)
        return b[:, :BIAS_STORE_BYTES].tobytes()

    def table_bytes(self) -> bytes:
        return b"".join(np.asarray(e.to_words(), "<u2").tobytes() for e in self.entries)


# --------------------------------------------------------------------------------------------
# Compiling
# --------------------------------------------------------------------------------------------


def _tiles(weights: np.ndarray, lanes: int, rows: int) -> np.ndarray:
    """Weights ``(M, K)`` in tile order: ``(blocks, chunks, rows, lanes)``, zero padded."""
    m, k = weights.shape
    blocks, chunks = -(-m // rows), -(-k // lanes)
    padded = np.zeros((blocks * rows, chunks * lanes), np.int8)
    padded[:m, :k] = weights
    return padded.reshape(blocks, rows, chunks, lanes).transpose(0, 2, 1, 3)


def _conv_weights(conv: Conv, cw: int, lanes: int) -> np.ndarray:
    """A convolution's trits over the device's window order ``(ty, tx, channel byte)``."""
    w = conv.weights if conv.ndim == 2 else conv.weights[:, :, None, :]
    c_out, c_in, kh, kw = w.shape
    out = np.zeros((c_out, kh, kw, cw * lanes), np.int8)
    out[:, :, :, :c_in] = w.transpose(0, 2, 3, 1)
    return out.reshape(c_out, -1)


def _position_nest(conv: Conv, in_shape, out_shape, pool: MaxPool | None, cw: int,
                   out_cw: int):
    """Counts and per-level steps of the output-position loops (p0 fastest) for ``conv`` on an
    input of ``in_shape`` (no halo: addresses of padded positions are never read)."""
    spatial = list(in_shape[1:])
    if conv.ndim == 1:
        height, width = 1, spatial[0]
        (kw,), (sx,), (px,) = conv.kernel, conv.stride, conv.padding
        kh, sy, py = 1, 1, 0
        ho, wo = 1, (width + 2 * px - kw) // sx + 1
    else:
        height, width = spatial
        (kh, kw), (sy, sx), (py, px) = conv.kernel, conv.stride, conv.padding
        ho, wo = ((height + 2 * py - kh) // sy + 1, (width + 2 * px - kw) // sx + 1)
    pk = (1, 1) if pool is None else ((1, *pool.kernel) if pool.ndim == 1 else pool.kernel)
    pky, pkx = pk
    # levels, fastest first: (name, count); a position is (qy, qx) of the conv's output
    if pool is None:
        levels = [("qx", wo), ("qy", ho)]
    elif conv.ndim == 1:
        levels = [("dx", pkx), ("X", wo // pkx)]
    else:
        levels = [("dx", pkx), ("dy", pky), ("X", wo // pkx), ("Y", ho // pky)]
    counts = [n for _, n in levels]

    def position(idx):
        v = dict(zip([name for name, _ in levels], idx, strict=True))
        if pool is None:
            qx, qy = v["qx"], v.get("qy", 0)
            out_index = qy * wo + qx
        else:
            qx = v["X"] * pkx + v["dx"]
            qy = v.get("Y", 0) * pky + v.get("dy", 0)
            out_index = v.get("Y", 0) * (wo // pkx) + v["X"]
        x, y = qx * sx - px, qy * sy - py
        return (y * width + x) * cw, out_index * out_cw, x, y

    act, out, xs, ys = [], [], [], []
    for level in range(len(levels)):
        before = [n - 1 if i < level else 0 for i, n in enumerate(counts)]
        after = [1 if i == level else 0 for i in range(len(counts))]
        a, b = position(before), position(after)
        act.append(b[0] - a[0])
        out.append(b[1] - a[1])
        xs.append(b[2] - a[2])
        ys.append(b[3] - a[3])
    # a level of one position never steps: its steps are 0 (they would only jump back)
    for steps in (act, out, xs, ys):
        steps[:] = [0 if n == 1 else v for v, n in zip(steps, counts, strict=True)]
    x0, y0 = -px, -py
    pad = POSITION_LEVELS - len(levels)
    return dict(
        start_offset=position([0] * len(levels))[0],
        pool_levels=0 if pool is None else pool.ndim, kw=kw, kh=kh,
        row_step=width * cw - (kw * cw - 1), p_counts=tuple(counts + [1] * pad),
        act_steps=tuple(act + [0] * pad), out_steps=tuple(out + [0] * pad),
        in_width=width, in_height=height, x0=x0, y0=y0, x_steps=tuple(xs + [0] * pad),
        y_steps=tuple(ys + [0] * pad))


def _weighted_plan(layers, input_shape):
    """Each weighted layer with the shape it reads, the pooling fused after it, and whether a
    flatten came before it; refuses what the device cannot run."""
    shapes = network_shapes(layers, input_shape)
    plan, i = [], 0
    flattened = False
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, Flatten):
            flattened = True
            i += 1
            continue
        if isinstance(layer, MaxPool):
            raise CapacityError(f"layer {i} ({layer.kind}): the device pools only right after "
                                "a convolution")
        pool = None
        if isinstance(layer, Conv) and i + 1 < len(layers) and isinstance(layers[i + 1],
                                                                        MaxPool):
            pool = layers[i + 1]
        plan.append((i, layer, shapes[i], pool, flattened))
        flattened = False
        i += 2 if pool is not None else 1
    return plan, shapes


def weight_words(layers: Sequence, input_shape, lanes: int, rows: int) -> int:
    """Weight-memory words (``rows x lanes`` tiles) the network takes on a ``lanes x rows``
    array: ``ceil(M / rows)`` blocks of ``ceil(K_dev / lanes)`` beats per weighted layer, where
    ``K_dev`` is its fan-in over the device's view of its input (see the module notes)."""
    plan, shapes = _weighted_plan(tuple(layers), input_shape)
    total = 0
    for index, layer, in_shape, _pool, flattened in plan:
        read = shapes[index - 1] if flattened and index else in_shape
        view = TensorLayout(read, 0, lanes)
        if isinstance(layer, Conv):
            chunks = math.prod(layer.kernel) * view.cw
        elif len(read) > 1:
            chunks = view.sample_words
        else:
            chunks = -(-layer.fan_in // lanes)
        total += -(-len(layer.bias) // rows) * chunks
    return total


def compile_image(layers: Sequence, input_shape, lanes: int, rows: int, act_words: int,
                  max_batch: int = 1, *, ternary_act: bool = False) -> DeviceImage:
    """Lay a network out for a ``lanes x rows`` array and an activation pool of ``act_words``;
    ``ternary_act``: whether the device computes ternary outputs
    (:class:`trine.contract.params.AcceleratorParams`).

    Raises
    ------
    CapacityError
        For a network the device cannot run at all: a max-pooling that does not follow a
        convolution, a layer whose input and output do not fit the pool for one sample
        (naming the layer and the words it needs), a table field outside 16 bits, or a layer
        with ternary outputs (``ternary_threshold``) for a device without ``ternary_act``
        (it would answer int8 values). The other capacities (weights, biases, table, layers)
        are checked by :func:`trine.contract.params.check_fits`.
    """
    layers = tuple(layers)
    for i, layer in enumerate(layers):
        if getattr(layer, "ternary_threshold", None) is not None and not ternary_act:
            raise CapacityError(
                f"layer {i} ({layer_kind(layer)}) has ternary outputs (ternary_threshold "
                f"{layer.ternary_threshold}): this device computes int8 activations only "
                "(built without the accelerator parameter ternary_act); run the program on a "
                "device with ternary_act or on the reference")
    plan, shapes = _weighted_plan(layers, input_shape)
    # layouts of the tensors each weighted layer reads and writes
    tensors = []
    for index, _layer, in_shape, pool, flattened in plan:
        end = index + (2 if pool is not None else 1)
        out_shape = shapes[end]
        read = in_shape if not flattened else shapes[index - 1] if index else in_shape
        tensors.append((read, out_shape))
    # the batch the pool holds: every layer's input and output at once
    need = [TensorLayout(r, 0, lanes).sample_words + TensorLayout(o, 0, lanes).sample_words
            for r, o in tensors]
    worst = int(np.argmax(need))
    if need[worst] > act_words:
        i, layer = plan[worst][0], plan[worst][1]
        out_words = TensorLayout(tensors[worst][1], 0, lanes).sample_words
        raise CapacityError(
            f"program does not fit the device: layer {i} ({layer_kind(layer)}) needs "
            f"{need[worst]} words ({need[worst] * lanes} bytes) of activation pool for one "
            f"sample (input {need[worst] - out_words} + output {out_words} words of {lanes} "
            f"bytes), more than act_words = {act_words}")
    batch = max(1, min(max_batch, act_words // max(need)))

    words, biases, entries = [], [], []
    weight_base = bias_base = 0
    low = True  # the layer's input sits at the low end of the pool, its output at the high end
    first_input = last_output = None
    for (index, layer, _, pool, _), (read, out_shape) in zip(plan, tensors, strict=True):
        in_layout_probe = TensorLayout(read, 0, lanes)
        out_probe = TensorLayout(out_shape, 0, lanes)
        if low:
            in_layout = TensorLayout(read, 0, lanes)
            out_layout = TensorLayout(out_shape, act_words - batch * out_probe.sample_words,
                                      lanes)
        else:
            in_layout = TensorLayout(read, act_words - batch * in_layout_probe.sample_words,
                                     lanes)
            out_layout = TensorLayout(out_shape, 0, lanes)
        if first_input is None:
            first_input = in_layout
        last_output = out_layout
        low = not low
        if isinstance(layer, Conv):
            w_dev = _conv_weights(layer, in_layout.cw, lanes)
            nest = _position_nest(layer, read, out_shape, pool, in_layout.cw, out_layout.cw)
        else:
            if len(read) > 1:  # after a flatten: columns in the pool's byte order
                idx = in_layout.flat_index()
                w_dev = np.zeros((layer.fan_out, idx.size), np.int8)
                used = idx >= 0
                w_dev[:, used] = layer.weights[:, idx[used]]
            else:
                w_dev = layer.weights
            nest = {}
        tiles = _tiles(w_dev, lanes, rows)
        blocks, chunks = tiles.shape[:2]
        for beat in tiles.reshape(blocks * chunks, rows * lanes):
            words.append(pack_trits(beat))
        m = w_dev.shape[0]
        bias = np.zeros(blocks * rows, np.int64)
        bias[:m] = layer.bias + (w_dev == -1).sum(axis=1)
        if layer.shift:
            bias += 1 << (layer.shift - 1)
        biases.append(bias)
        cw = chunks if isinstance(layer, Layer) else in_layout.cw
        # a convolution's first window starts before its input when it is padded: the
        # offset is folded into the base (16-bit arithmetic wraps; padded words are not read)
        first = nest.pop("start_offset", 0)
        entry = LayerEntry(weight_base, bias_base, blocks, m, cw,
                           (in_layout.base + first) % _U16, in_layout.sample_words,
                           out_layout.base, out_layout.sample_words, layer.shift, layer.relu,
                           conv=isinstance(layer, Conv),
                           ternary_threshold=layer.ternary_threshold or 0, **nest)
        entry.to_words()  # every field within 16 bits, or a CapacityError
        _check_fields(entry, act_words, lanes, rows,
                      f"layer {index} ({layer_kind(layer)})")
        entries.append(entry)
        weight_base += blocks * chunks
        bias_base += blocks * rows
    return DeviceImage(lanes, rows, b"".join(words), np.concatenate(biases), tuple(entries),
                       first_input, last_output, batch)
