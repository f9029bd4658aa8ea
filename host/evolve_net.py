"""The integer network that :mod:`trine.host.evolve` mutates, with exact caches for cheap offspring.

:class:`EvolvingNet` holds ternary weights, int32 biases and shifts, and for every training
sample the accumulators and int8 activations of every layer, exactly as
:func:`trine.contract.reference.run_network` computes them. A mutation of one neuron's row is scored
by
recomputing that row's accumulators and what depends on it, for a whole batch of mutants at
once, and its fitness gain is computed from cached per-output exponentials, so a generation
never runs the whole network.

Layout: caches are feature-major, one column per sample (``(M, N)``), so the loss's sums over
the few outputs of a sample are sums of contiguous rows (about ten times faster in NumPy than
reductions over a short last axis).

Exactness: every matrix product multiplies int8-valued float32 activations by trits; every
partial sum is an integer of magnitude at most ``128 * K < 2**24`` and so exact in float32 (the
argument of :mod:`trine.contract.reference`); everything after it is int32 arithmetic, bounded
because
biases stay within :meth:`EvolvingNet.bias_limit` and shifts within ``SHIFT_LIMIT``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trine.contract.reference import Layer, requantize_inplace, rounding_constant
from trine.contract.spec import ACT_MAX

__all__ = ["EvolvingNet", "forward", "requantize", "MIN_TEMPERATURE", "SHIFT_LIMIT"]

SHIFT_LIMIT = 20  # shifts stay in [0, 20]: 2**20 exceeds any accumulator; int32 never overflows
# exp((out - 127) / T) for int8 outputs lies in [exp(-255 / T), 1]: a normal float32 for T >= 4
MIN_TEMPERATURE = 4.0


def requantize(acc: np.ndarray, bias_half: np.ndarray, shift: int, relu: bool) -> np.ndarray:
    """:func:`trine.contract.reference.requantize_inplace` of int32 ``acc + bias_half`` (a new
    array; ``bias_half`` is :func:`bias_half`, broadcast against ``acc``)."""
    return requantize_inplace(acc + bias_half, shift, relu)


def bias_half(bias: np.ndarray, shift: int) -> np.ndarray:
    """``bias`` plus the rounding constant of ``shift``, as int32 (exact: biases stay within
    :meth:`EvolvingNet.bias_limit`)."""
    return (np.asarray(bias, np.int64) + rounding_constant(shift)).astype(np.int32)


def _mm(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``w @ a`` for float32 trits ``(M, K)`` and int8-valued float32 ``(..., K, N)``: exact."""
    return np.matmul(w, a).astype(np.int32)


def forward(x_q: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """This module's integer forward pass on int8 inputs ``(N, K)``; returns int8 ``(N, M)``.

    Equal to :func:`trine.contract.reference.run_network` bit for bit (tests/test_evolve.py checks
    it).
    """
    a = np.ascontiguousarray(np.asarray(x_q).T, dtype=np.float32)
    for layer in layers:
        acc = _mm(layer.weights.astype(np.float32), a)
        v = requantize(acc, bias_half(layer.bias, layer.shift)[:, None], layer.shift, layer.relu)
        a = v.astype(np.float32)
    return a.T.astype(np.int8)


class EvolvingNet:
    """A ternary MLP under evolution, with exact caches over its training set.

    Parameters
    ----------
    x_q : int8 array (N, K)
        Quantised training inputs.
    y : int array (N,)
        Labels, in ``[0, M_out)``.
    weights, biases, shifts, relus : per-layer sequences
        Trits ``(M, K)``, int biases ``(M,)``, shifts in ``[0, SHIFT_LIMIT]``, ReLU flags.
    temperature : float
        Softmax temperature of the cross-entropy fitness, ``>= MIN_TEMPERATURE``.

    Members
    -------
    acc, act : lists of arrays (M, N)
        Per layer, int32 accumulators without bias and float32 int8-valued activations.
    exp_out : float32 array (M_out, N)
        ``exp((out - 127) / temperature)`` of the outputs, the loss's cache.
    """

    def __init__(self, x_q, y, weights, biases, shifts, relus, temperature: float) -> None:
        self.x = np.ascontiguousarray(np.asarray(x_q).T, dtype=np.float32)
        self.y = np.asarray(y, np.int64)
        self.cols = np.arange(len(self.y))
        self.w = [np.asarray(w, np.int8).copy() for w in weights]
        self.wf = [w.astype(np.float32) for w in self.w]
        self.bias = [np.asarray(b, np.int64).copy() for b in biases]
        self.shift = [int(s) for s in shifts]
        self.relu = [bool(r) for r in relus]
        self.bh = [bias_half(b, s) for b, s in zip(self.bias, self.shift, strict=True)]
        self.inv_t = np.float32(1.0 / temperature)
        self.acc: list[np.ndarray] = []
        self.act: list[np.ndarray] = []
        self.refresh(0)

    # ---- the network ---------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.w)

    def inputs(self, layer: int) -> np.ndarray:
        return self.x if layer == 0 else self.act[layer - 1]

    def layers(self) -> list[Layer]:
        """The current network as reference layers."""
        return [Layer(w, b, s, r) for w, b, s, r in
                zip(self.w, self.bias, self.shift, self.relu, strict=True)]

    def bias_limit(self, layer: int, shift: int | None = None) -> int:
        """Biases beyond this change no output (and keep int32 sums from overflowing)."""
        shift = self.shift[layer] if shift is None else shift
        return 128 * self.w[layer].shape[1] + (256 << shift)

    def _requantize(self, i: int, acc: np.ndarray, rows=slice(None)) -> np.ndarray:
        return requantize(acc, self.bh[i][rows, None], self.shift[i], self.relu[i])

    def _exp(self, out: np.ndarray) -> np.ndarray:
        return np.exp((out - np.float32(ACT_MAX)) * self.inv_t)

    def refresh(self, start: int) -> None:
        """Recompute every cache from layer ``start`` on, for every sample."""
        del self.acc[start:], self.act[start:]
        for i in range(start, self.n_layers):
            acc = _mm(self.wf[i], self.inputs(i))
            self.acc.append(acc)
            self.act.append(self._requantize(i, acc).astype(np.float32))
        self.exp_out = self._exp(self.act[-1])

    def downstream(self, layer: int, a: np.ndarray) -> np.ndarray:
        """Run activations ``a`` (..., M_layer, Nb) of ``layer`` through the layers after it."""
        for i in range(layer + 1, self.n_layers):
            a = self._requantize(i, _mm(self.wf[i], a)).astype(np.float32)
        return a

    # ---- the loss --------------------------------------------------------------------------

    def sample_loss(self) -> np.ndarray:
        """Cross-entropy of every training sample (float64, (N,))."""
        lse = np.log(self.exp_out.sum(axis=0))
        zy = (self.act[-1][self.y, self.cols] - np.float32(ACT_MAX)) * self.inv_t
        return (lse - zy).astype(np.float64)

    def fitness(self) -> float:
        """Minus the mean cross-entropy over the training set (higher is better)."""
        return -float(self.sample_loss().mean())

    def gain(self, rows: np.ndarray, new: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        """Summed cross-entropy of the parent minus that of each variant, over samples ``idx``.

        ``new`` (L, R, Nb) holds each variant's outputs ``rows`` (the other outputs are the
        parent's). A variant equal to the parent on a sample contributes exactly 0 there: the
        parent's and the variant's column sums are computed by the same operations. No
        difference of large sums is ever taken, so tiny probabilities keep their precision.
        """
        cols = self.cols if idx is None else idx
        y = self.y[cols]
        e_old = self.exp_out[rows][:, cols]  # (R, Nb)
        e_new = self._exp(new)  # (L, R, Nb)
        others = np.setdiff1d(np.arange(self.exp_out.shape[0]), rows, assume_unique=True)
        if others.size:
            rest = self.exp_out[others][:, cols].sum(axis=0)
            parent_sum, variant_sum = rest + e_old.sum(axis=0), rest + e_new.sum(axis=1)
        else:
            parent_sum, variant_sum = e_old.sum(axis=0), e_new.sum(axis=1)
        g = (np.log(parent_sum) - np.log(variant_sum)).sum(axis=-1, dtype=np.float64)
        # the label's own output, where it is among the rows that change
        where = np.full(self.exp_out.shape[0], -1)
        where[rows] = np.arange(len(rows))
        r = where[y]
        hit = np.flatnonzero(r >= 0)
        if hit.size:
            old = self.act[-1][y[hit], cols[hit]]
            dz = (new[:, r[hit], hit] - old) * self.inv_t
            g += dz.sum(axis=-1, dtype=np.float64)
        return g

    # ---- offspring: one row's variants ---------------------------------------------------

    def row_variants(self, layer: int, row: int, trits: np.ndarray, biases: np.ndarray,
                     idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The outputs of the network when ``row`` of ``layer`` takes each of ``L`` variants.

        Variant ``c`` gives the row the trits ``trits[c]`` and the bias ``biases[c]``; the
        samples are ``idx`` (all when None). Only the row's accumulators and what depends on
        them are computed.

        Returns
        -------
        rows : int array (R,)
            The outputs that can differ from the parent's (the others are the parent's).
        new : float32 array (L, R, Nb)
            Their int8 values for every variant and sample.
        """
        shift, relu = self.shift[layer], self.relu[layer]
        bh = bias_half(biases, shift)
        inputs = self.inputs(layer) if idx is None else self.inputs(layer)[:, idx]
        acc = _mm(trits.astype(np.float32), inputs)  # (L, Nb)
        act = requantize(acc, bh[:, None], shift, relu)
        if layer + 1 == self.n_layers:
            return np.array([row]), act[:, None, :].astype(np.float32)
        old = self.act[layer][row] if idx is None else self.act[layer][row, idx]
        delta = act - old.astype(np.int32)  # (L, Nb)
        nxt = layer + 1
        col = self.w[nxt][:, row].astype(np.int32)
        if nxt + 1 == self.n_layers:
            # only the outputs this neuron feeds through a nonzero trit can change
            rows = np.flatnonzero(col)
            acc_n = self.acc[nxt][rows] if idx is None else self.acc[nxt][np.ix_(rows, idx)]
            acc_n = acc_n[None] + col[rows, None] * delta[:, None, :]
            return rows, self._requantize(nxt, acc_n, rows).astype(np.float32)
        acc_n = self.acc[nxt] if idx is None else self.acc[nxt][:, idx]
        acc_n = acc_n[None] + col[:, None] * delta[:, None, :]  # (L, M_next, Nb)
        out = self.downstream(nxt, self._requantize(nxt, acc_n).astype(np.float32))
        return np.arange(out.shape[1]), out

    def apply_row(self, layer: int, row: int, trits: np.ndarray, bias: int) -> None:
        """Give ``row`` of ``layer`` these trits and bias, updating the caches where needed."""
        self.w[layer][row] = trits
        self.wf[layer][row] = trits
        self.bias[layer][row] = bias
        self.bh[layer] = bias_half(self.bias[layer], self.shift[layer])
        acc = _mm(self.wf[layer][row][None], self.inputs(layer))[0]
        self.acc[layer][row] = acc
        new = requantize(acc, self.bh[layer][row], self.shift[layer], self.relu[layer])
        changed = np.flatnonzero(new != self.act[layer][row])
        if changed.size == 0:
            return
        delta = new[changed] - self.act[layer][row, changed].astype(np.int32)
        self.act[layer][row, changed] = new[changed]
        if layer + 1 == self.n_layers:
            self.exp_out[row, changed] = self._exp(self.act[layer][row, changed])
            return
        nxt = layer + 1
        col = self.w[nxt][:, row].astype(np.int32)[:, None]
        acc_n = self.acc[nxt][:, changed] + col * delta
        self.acc[nxt][:, changed] = acc_n
        self.act[nxt][:, changed] = self._requantize(nxt, acc_n)
        for i in range(nxt + 1, self.n_layers):
            acc_i = _mm(self.wf[i], self.act[i - 1][:, changed])
            self.acc[i][:, changed] = acc_i
            self.act[i][:, changed] = self._requantize(i, acc_i)
        self.exp_out[:, changed] = self._exp(self.act[-1][:, changed])

    # ---- a whole layer's shift -----------------------------------------------------------

    def shift_variant(self, layer: int, shift: int, biases: np.ndarray,
                      idx: np.ndarray | None) -> np.ndarray:
        """Outputs ``(M_out, Nb)`` with ``layer``'s shift and biases replaced."""
        acc = self.acc[layer] if idx is None else self.acc[layer][:, idx]
        a = requantize(acc, bias_half(biases, shift)[:, None], shift, self.relu[layer])
        return self.downstream(layer, a.astype(np.float32))

    def apply_shift(self, layer: int, shift: int, biases: np.ndarray) -> None:
        self.shift[layer] = int(shift)
        self.bias[layer] = np.asarray(biases, np.int64).copy()
        self.bh[layer] = bias_half(self.bias[layer], self.shift[layer])
        self.refresh(layer)
