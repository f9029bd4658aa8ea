"""A software model of per-output-row shifts, to measure whether building them would pay.

The device has one requantisation shift per layer, so one scale ``alpha`` serves all of a
layer's ternary rows. This module simulates a device that stores a shift per output row beside
its bias, and measures what that would buy on imported models; it is a measurement, not the
normative reference (:mod:`trine.contract.reference` is unchanged and the device does not do
this).

A per-row float scale ``alpha_r`` can only be folded into per-row shifts when the rows' scales
are a common scale times powers of two: every row's output must land on the layer's one output
scale, which is the next layer's input scale. So each ``alpha_r`` becomes
``alpha_max * 2**k_r`` (``k_r <= 0``, the nearest power-of-two ratio), and row ``r``'s shift is
the layer's shift plus ``-k_r``. The integer model (:func:`run_per_row`) is the reference's
requantiser (bias, round half up, ReLU, int8 clip) with a shift per row; with equal shifts it
is the reference exactly (``python -m bench import_accuracy`` checks it on every run).

Two ways to choose the rows' scales are modelled:

* ``twn``: per-channel TWN (the threshold and ``alpha_r`` of each row), then rounded as above;
* ``gptq``: :mod:`trine.host.ptq`'s output fit (float targets on the integer inputs, GPTQ's
  error feedback, bias correction) with the scale searched *per row* on a grid of
  ``2**(1/8)`` steps: the rows' scales are restricted to one phase of that grid (so their
  ratios are powers of two), the phase with the smallest output error of the layer is kept,
  and the common factor refitted in closed form. ``gptq-layer`` is the same search with one
  scale for all rows: the control that tells the per-row gain from the grid's.

For quantisation-aware training, :class:`RowShiftQATNet` is :class:`trine.host.qat_net.QATNet`
with a shift per output row (each row's own smallest shift that brings the percentile of its
``|acc + bias|`` within 127, re-chosen every epoch as QAT does per layer), and :func:`train`
the loop of :func:`trine.host.qat.train_qat` (random start) for any of these nets: with
``QATNet`` it gives ``train_qat``'s program byte for byte, which the bench checks. When a
row's shift moves, the next layer's inputs from that row double or halve; unlike a layer's
shift, no bias can compensate it (the next layer's trits see every input alike), so
:class:`FrozenRowShiftQATNet` keeps the rows' offsets from the first calibration and moves a
layer's shifts together, compensated as QATNet does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.reference import Conv, Flatten, Layer, MaxPool, im2col, saturate, ternary_matmul
from trine.contract.spec import ACT_MAX, ACT_MIN, BIAS_MAX, BIAS_MIN, SHIFT_MAX
from trine.host.arch import LayerSpec, spec_layers
from trine.host.learning import Adam, cosine, input_range, single_threaded_blas
from trine.host.program import Program
from trine.host.ptq import _damped, ternarize_gptq
from trine.host.qat_net import QATNet, quantize
from trine.host.ternarize import FloatConv, float_step, ternarize_twn

MODES = ("twn", "gptq", "gptq-layer")
#: Scales tried by the per-row search, in units of mean|W'|: 2**(j/8), j = -32..16.
_STEPS_PER_OCTAVE = 8
_GRID = 2.0 ** (np.arange(-32, 17) / _STEPS_PER_OCTAVE)


@dataclass(frozen=True)
class RowShiftLayer:
    """A weighted layer with one shift per output row: ``layer`` holds the trits, biases and
    geometry (its own ``shift`` is 0 and unused), ``shifts`` (M,) the rows' shifts."""

    layer: Layer | Conv
    shifts: np.ndarray


def _quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(x / scale), ACT_MIN, ACT_MAX).astype(np.int8)


def _rows(layer: Layer | Conv, a: np.ndarray) -> np.ndarray:
    if isinstance(layer, Conv):
        return im2col(a, layer.kernel, layer.stride, layer.padding, np.int8)
    return a


def _weighted(layer: Layer | Conv, shifts: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The reference's requantiser with a shift per output row."""
    dense = layer if isinstance(layer, Layer) else layer.dense
    v = ternary_matmul(_rows(layer, a), dense.weights) + layer.bias
    s = shifts.astype(np.int64)
    v += np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)  # round half up
    v >>= s
    y = saturate(v, layer.relu).astype(np.int8)
    if isinstance(layer, Conv):
        out = layer.output_shape(a.shape[1:])
        y = np.moveaxis(y.reshape(len(a), *out[1:], out[0]), -1, 1)
    return y


def run_per_row(layers: list, input_scale: float, x: np.ndarray) -> np.ndarray:
    """The integer outputs, int8 (N, M), of a per-row-shift network on raw inputs ``x``
    (N, *input_shape)."""
    a = _quantize(np.asarray(x, np.float64), input_scale)
    for layer in layers:
        a = _weighted(layer.layer, layer.shifts, a) if isinstance(layer, RowShiftLayer) \
            else layer(a)
    return a.reshape(len(a), -1)


def _fit_rows(w: np.ndarray, b: np.ndarray, x_q: np.ndarray, x_f: np.ndarray,
              per_row: bool, damping: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """trits (M, K), ``alpha`` (M,) with power-of-two ratios, float bias (M,): see the module."""
    y = x_f @ w.T
    h = _damped(x_q.T @ x_q, damping)
    w_fit = np.linalg.solve(h, x_q.T @ y).T
    h_inv = np.linalg.inv(h)
    u = np.linalg.cholesky((h_inv + h_inv.T) / 2).T
    mean = float(np.abs(w_fit).mean())
    m = w.shape[0]
    if mean == 0:
        return np.zeros(w.shape, np.int8), np.zeros(m), np.asarray(b, np.float64).copy()
    yc = y - y.mean(axis=0)
    trits, errors = [], []
    for factor in _GRID:
        alpha = factor * mean
        t = ternarize_gptq(w_fit, u, alpha)
        z = x_q @ t.T.astype(np.float64)
        r = yc - alpha * (z - z.mean(axis=0))
        trits.append(t)
        errors.append(np.einsum("nm,nm->m", r, r))
    e = np.array(errors)  # (grid, M)
    if per_row:
        best = None
        for phase in range(_STEPS_PER_OCTAVE):
            idx = np.arange(phase, len(_GRID), _STEPS_PER_OCTAVE)
            pick = idx[e[idx].argmin(axis=0)]
            total = float(e[pick, np.arange(m)].sum())
            if best is None or total < best[0]:
                best = (total, pick)
        pick = best[1]
    else:
        pick = np.full(m, int(e.sum(axis=1).argmin()))
    t = np.stack([trits[j][r] for r, j in enumerate(pick)])
    alpha = _GRID[pick] * mean
    # the common factor, refitted to the outputs in closed form (the ratios kept)
    z = alpha * (x_q @ t.T.astype(np.float64))
    zc = z - z.mean(axis=0)
    zz = float(np.vdot(zc, zc))
    c = max(float(np.vdot(zc, yc)) / zz, 0.0) if zz > 0 else 0.0
    alpha = c * alpha
    bias = np.asarray(b, np.float64) + (y - c * z).mean(axis=0)
    return t, alpha, bias


def _power_of_two_ratios(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``alpha_max * 2**k`` nearest each row's ``alpha`` (rows of scale 0 keep k = 0): the
    rounded scales, ``k`` (<= 0) and ``alpha_max``."""
    amax = float(alpha.max())
    if amax <= 0:
        return np.zeros_like(alpha), np.zeros(len(alpha), np.int64), 0.0
    with np.errstate(divide="ignore"):
        k = np.where(alpha > 0, np.rint(np.log2(np.where(alpha > 0, alpha, amax) / amax)), 0)
    k = k.astype(np.int64)
    return amax * 2.0**k, k, amax


def fold_per_row(float_layers: list, x: Any, input_shape: tuple[int, ...],
                 mode: str) -> tuple[list, float]:
    """Ternarise and fold a float network (:mod:`trine.host.ternarize`'s format) into
    per-row-shift layers, calibrated on raw inputs ``x``; returns ``(layers, input_scale)``.

    The shift rule is :func:`trine.host.ternarize.fold_to_program`'s (percentile 100): the
    layer's shift for its largest row scale ``alpha_max``, each row ``-k_r`` more."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    x = np.asarray(x, np.float64).reshape(len(x), *input_shape)
    input_scale = float(np.abs(x).max()) / ACT_MAX
    s_in = input_scale
    a = _quantize(x, s_in)
    x_f = x
    layers: list = []
    for item in float_layers:
        if isinstance(item, MaxPool | Flatten):
            layers.append(item)
            a, x_f = item(a), item(x_f)
            continue
        if isinstance(item, FloatConv):
            w, b, relu = item.matrix, item.bias, item.relu
            geometry = (item.kernel, item.stride, item.padding)
            rows_q = im2col(a, *geometry, np.float64) * s_in
            rows_f = im2col(x_f, *geometry, np.float64)
        else:
            w, b, relu = item
            rows_q, rows_f = a.astype(np.float64) * s_in, x_f.reshape(len(x_f), -1)
        if mode == "twn":
            trits, alpha = ternarize_twn(w, per_channel=True)
            bias_f = np.asarray(b, np.float64)
        else:
            trits, alpha, bias_f = _fit_rows(w, b, rows_q, rows_f, mode == "gptq")
        alpha_r, k, amax = _power_of_two_ratios(np.asarray(alpha, np.float64))
        unit_ref = amax * s_in if amax > 0 else s_in
        unit = np.where(alpha_r > 0, alpha_r * s_in, unit_ref)
        acc = ternary_matmul(np.rint(rows_q / s_in).astype(np.int8), trits)
        pre = unit * acc + bias_f
        if relu:
            pre = np.maximum(pre, 0.0)
        q = float(np.abs(pre).max())
        shift = int(np.clip(round(math.log2(q / ACT_MAX / unit_ref)), 0, SHIFT_MAX)) if q > 0 \
            else 0
        shifts = np.clip(shift - k, 0, SHIFT_MAX)
        bias = np.clip(np.rint(bias_f / unit), BIAS_MIN, BIAS_MAX).astype(np.int64)
        if isinstance(item, FloatConv):
            layer = Conv(trits.reshape(item.weights.shape), bias, item.stride, item.padding, 0,
                         relu)
        else:
            layer = Layer(trits, bias, 0, relu)
        layers.append(RowShiftLayer(layer, shifts))
        a = _weighted(layer, shifts, a)
        x_f = float_step(item, x_f)
        s_in = unit_ref * 2.0**shift
    return layers, input_scale


def as_program(layers: list, input_scale: float, input_shape: tuple[int, ...]) -> Program:
    """The device's program of per-row layers whose rows all have one shift (ValueError
    otherwise): the check that :func:`run_per_row` is the reference when shifts are equal."""
    out = []
    for layer in layers:
        if not isinstance(layer, RowShiftLayer):
            out.append(layer)
            continue
        if len(set(layer.shifts.tolist())) != 1:
            raise ValueError("the rows' shifts differ: not a device program")
        shift = int(layer.shifts[0])
        base = layer.layer
        if isinstance(base, Conv):
            out.append(Conv(base.weights, base.bias, base.stride, base.padding, shift,
                            base.relu))
        else:
            out.append(Layer(base.weights, base.bias, shift, base.relu))
    if all(isinstance(x, Layer) for x in out):
        return Program(out, input_scale)
    return Program(out, input_scale, input_shape=input_shape)


# ---------------------------------------------------------------------------------------------
# Quantisation-aware training with a shift per row
# ---------------------------------------------------------------------------------------------


def _row_shifts(z: np.ndarray, relu: bool, percentile: float) -> np.ndarray:
    """:func:`trine.host.qat_net.shift_for` of each column of ``z`` (rows x M)."""
    mag = np.maximum(z, 0) if relu else np.abs(z)
    q = np.percentile(mag, percentile, axis=0)
    with np.errstate(divide="ignore"):
        s = np.ceil(np.log2(np.maximum(q, 1) / ACT_MAX))
    return np.clip(np.where(q <= ACT_MAX, 0, s), 0, SHIFT_MAX).astype(np.int64)


class RowShiftQATNet(QATNet):
    """:class:`QATNet` whose weighted layers have one shift per output row (see the module):
    ``shifts[i]`` is an int64 array (M,). Its forward pass is :func:`run_per_row`'s
    requantiser; the backward pass is QATNet's (``2**-s`` per row broadcasts)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shifts = [np.full(w.shape[0], s, np.int64)
                       for w, s in zip(self.weights, self.shifts, strict=True)]

    def _rows(self, i: int, a: np.ndarray) -> np.ndarray:
        j = self._spec_index(i)
        if self.specs[j].kind == "dense":
            return a.astype(np.float32)
        g = self._geometry[j]
        return im2col(a, g.kernel, g.stride, g.padding, np.float32)

    def _weighted_forward(self, i: int, a: np.ndarray, t: np.ndarray | None = None):
        if t is None:
            t = self.trits(i)
        j = self._spec_index(i)
        rows = self._rows(i, a)
        acc = (rows @ t.T.astype(np.float32)).astype(np.int64)
        s = self.shifts[i]
        v = acc + self.int_bias(i) + np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
        v >>= s
        y = saturate(v.copy(), self.relus[i])
        if self.specs[j].kind == "conv":
            out = self._in_shapes[j + 1]
            y = np.moveaxis(y.reshape(len(a), *out[1:], out[0]), -1, 1)
        return v, y, rows

    def _calibrate_layer(self, i: int, a: np.ndarray, t: np.ndarray, percentile: float,
                         opt: Adam | None) -> None:
        z = (self._rows(i, a) @ t.T.astype(np.float32)).astype(np.int64) + self.int_bias(i)
        new = _row_shifts(z, self.relus[i], percentile)
        d = self.shifts[i] - new
        if np.any(d):
            self._rescale_beta(i, 2.0 ** d, opt)  # the integer biases kept
            self.shifts[i] = new

    def to_program(self, labels=None) -> Program:
        raise TypeError("a network with a shift per row is not a device program")


class FrozenRowShiftQATNet(RowShiftQATNet):
    """:class:`RowShiftQATNet` whose rows keep the offsets ``shift_r - min(shift)`` of the
    first calibration: later calibrations move the layer's shifts together, by the least that
    keeps every row's percentile within 127, and rescale the next layer's betas as QATNet does
    (so the network's function is kept, as with one shift per layer)."""

    def _calibrate_layer(self, i: int, a: np.ndarray, t: np.ndarray, percentile: float,
                         opt: Adam | None) -> None:
        if not hasattr(self, "_offsets"):
            self._offsets: dict[int, np.ndarray] = {}
        if i not in self._offsets:
            super()._calibrate_layer(i, a, t, percentile, opt)
            self._offsets[i] = self.shifts[i] - self.shifts[i].min()
            return
        z = (self._rows(i, a) @ t.T.astype(np.float32)).astype(np.int64) + self.int_bias(i)
        wanted = _row_shifts(z, self.relus[i], percentile)
        base = int(np.max(wanted - self._offsets[i]))
        new = np.clip(base + self._offsets[i], 0, SHIFT_MAX)
        d = int(self.shifts[i].min()) - int(new.min())
        if d:
            self._rescale_beta(i, 2.0 ** (self.shifts[i] - new), opt)
            if i + 1 < self.n_layers:
                self._rescale_beta(i + 1, 2.0**d, opt)
            self.shifts[i] = new


def train(net_class: type, x: np.ndarray, y: np.ndarray, specs: list[LayerSpec],
          input_shape: tuple[int, ...], settings: dict) -> QATNet:
    """The training loop of :func:`trine.host.qat.train_qat` from a random start (settings as
    there, every key given), for ``QATNet`` or :class:`RowShiftQATNet`."""
    rng = np.random.default_rng(settings["seed"])
    pct = settings["act_percentile"]
    input_scale = input_range(x, settings["input_percentile"]) / ACT_MAX
    a0 = quantize(x, input_scale).reshape(len(x), *input_shape)
    geometry = spec_layers(specs, input_shape)
    fans = [(g.fan_out, g.fan_in) if s.kind == "dense" else (g.out_channels, g.fan_in)
            for s, g in zip(specs, geometry, strict=True) if s.weighted]
    ws = [rng.normal(0.0, 1.0, fan) for fan in fans]
    net = net_class([w / np.abs(w).mean() for w in ws], [np.zeros(m) for m, _ in fans],
                    [0] * len(ws), [s.relu for s in specs if s.weighted], input_scale,
                    settings["threshold"], specs=specs, input_shape=input_shape)
    with single_threaded_blas():
        net.calibrate(a0, pct)
        n_layers = net.n_layers
        opt = Adam(net.weights + net.betas)
        epochs, batch_size = settings["epochs"], settings["batch_size"]
        total = epochs * -(-len(x) // batch_size)
        step = 0
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                _, grads = net.loss_and_grads(a0[idx], y[idx], settings["logit_scale"])
                f = cosine(step / total)
                opt.step(grads, [settings["lr"] * f] * n_layers +
                         [settings["bias_lr"] * f] * n_layers,
                         [settings["weight_decay"]] * n_layers + [0.0] * n_layers)
                step += 1
            net.calibrate(a0, pct, opt)
    return net
