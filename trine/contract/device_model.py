"""An executable model of the accelerator core: a device image run the way the gateware runs it.

:func:`run_image` walks the layer table with the loops of
:class:`trine.contract.device_image.LayerEntry`, over an activation pool of ``act_words`` words
of ``lanes`` bytes, reading weights in tile order and biases folded, with 16-bit address
arithmetic and zero padding fed for window words outside the input. It models *addresses*,
not cycles. Its use is to show, in plain NumPy, that a compiled image makes the device compute
what the reference computes (tests compare it with :func:`trine.contract.network.run_network`
on random networks) before and besides any gateware: the gateware's address generator and
requantiser implement exactly these loops.
"""

from __future__ import annotations

import itertools

import numpy as np

from trine.contract.device_image import DeviceImage, LayerEntry, beat_bytes
from trine.contract.spec import ACT_MAX, ACT_MIN, unpack_trits

__all__ = ["run_image"]

_MASK16 = 0xFFFF


def _weights(image: DeviceImage) -> np.ndarray:
    """The weight memory as trits, ``(words, rows, lanes)``."""
    bb = beat_bytes(image.lanes, image.rows)
    data = np.frombuffer(image.weights, np.uint8).reshape(-1, bb)
    trits = [unpack_trits(word, image.rows * image.lanes) for word in data]
    return np.array(trits, np.int64).reshape(-1, image.rows, image.lanes)


def _positions(entry: LayerEntry):
    """The output positions in loop order (p0 fastest): yields, per position, the level that
    advances after it (None after the last), and whether it is the first and the last of its
    pooling window."""
    counts = entry.p_counts
    pools = entry.pool_levels
    ranges = [range(n) for n in reversed(counts)]
    order = list(itertools.product(*ranges))
    for k, idx in enumerate(order):
        inner = list(reversed(idx))  # p0 first
        first = all(inner[i] == 0 for i in range(pools))
        last = all(inner[i] == counts[i] - 1 for i in range(pools))
        if k + 1 == len(order):
            level = None
        else:
            level = next(i for i in range(len(counts)) if inner[i] != counts[i] - 1)
        yield level, first, last


def _layer(entry: LayerEntry, pool: np.ndarray, trits: np.ndarray, biases: np.ndarray,
           lanes: int, rows: int, act_words: int, batch: int) -> None:
    window = entry.window_words
    ww = np.arange(window)
    g = ww % entry.cw
    tx = (ww // entry.cw) % entry.kw
    ty = ww // (entry.cw * entry.kw)
    offsets = ty * (entry.kw * entry.cw - 1 + entry.row_step) + tx * entry.cw + g
    for b in range(batch):
        in_s = entry.in_base + b * entry.in_sample_words
        out_s = entry.out_base + b * entry.out_sample_words
        for j in range(entry.blocks):
            start, pos, x, y = in_s, out_s, entry.x0, entry.y0
            held = np.zeros(rows, np.int64)
            w = trits[entry.weight_base + j * window: entry.weight_base + (j + 1) * window]
            for level, first, last in _positions(entry):
                addr = (start + offsets) & _MASK16
                inside = ((x + tx >= 0) & (x + tx < entry.in_width) & (y + ty >= 0)
                          & (y + ty < entry.in_height))
                assert np.all(addr[inside] < act_words), "a window word outside the pool"
                acts = np.zeros((window, lanes), np.int64)
                acts[inside] = pool[addr[inside]]
                # the array's (correction=False) sum, then the requantiser's
                acc = np.einsum("wrl,wl->r", w, acts) - (w == -1).sum(axis=(0, 2))
                v = acc + biases[entry.bias_base + j * rows: entry.bias_base + (j + 1) * rows]
                v >>= entry.shift
                v = np.clip(np.maximum(v, 0) if entry.relu else v, ACT_MIN, ACT_MAX)
                if entry.ternary_threshold:
                    t = entry.ternary_threshold
                    v = np.where(v >= t, 1, np.where(v <= -t, -1, 0))
                held = v if first else np.maximum(held, v)
                if last:
                    for r in range(rows):
                        m = j * rows + r
                        if m < entry.fan_out:
                            byte = (pos & _MASK16) * lanes + m
                            pool[byte // lanes, byte % lanes] = held[r]
                if level is not None:
                    start += entry.act_steps[level]
                    pos += entry.out_steps[level]
                    x += entry.x_steps[level]
                    y += entry.y_steps[level]


def run_image(image: DeviceImage, x: np.ndarray, act_words: int) -> np.ndarray:
    """Run ``image`` on int8 inputs ``(N, *input shape)`` (``N <= image.batch``) in a pool of
    ``act_words`` words; return the outputs ``(N, *output shape)``."""
    x = np.asarray(x, np.int8)
    n = len(x)
    assert n <= image.batch
    lanes, rows = image.lanes, image.rows
    pool = np.zeros((act_words, lanes), np.int64)
    packed = image.input.pack(x).reshape(n, -1, lanes)
    for b in range(n):
        base = image.input.base + b * image.input.sample_words
        pool[base: base + image.input.sample_words] = packed[b]
    trits = _weights(image)
    for entry in image.entries:
        _layer(entry, pool, trits, image.biases, lanes, rows, act_words, n)
    out = image.output
    words = np.stack([pool[out.base + b * out.sample_words:
                           out.base + (b + 1) * out.sample_words] for b in range(n)])
    return out.unpack(words.reshape(n, -1).astype(np.int8))
