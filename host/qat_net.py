"""The network under quantisation-aware training: latent weights whose hard forward pass is
the device's integer path, and its straight-through backward pass. Trained by
:mod:`trine.host.qat`.

A :class:`QATNet` is a chain of layers given as :class:`trine.host.arch.LayerSpec` entries:
dense and convolution layers (weighted: latent float weights ``W`` (M, K), latent biases
``beta`` in output LSBs, one integer shift each), max-pooling and flatten. A convolution is a
dense layer applied to every window of its input (``K = C_in * prod(kernel)``, the windows cut
by :func:`trine.contract.reference.im2col`), so both share one forward and one backward rule:

* trits: TWN, ``T = sign(W)`` where ``|W| > 0.7 * mean|W|`` (per layer or per row);
* ``acc = T a`` exactly (integers in float32, see :mod:`trine.contract.reference`),
  ``bias = rint(beta * 2**s)``, ``y = saturate(shift(acc + bias + rounding))``: the
  requantiser of :mod:`trine.contract.reference`, so ``to_program().run_reference(x)`` equals
  :meth:`QATNet.forward` bit for bit;
* backward: rounding and the shift pass the gradient as ``2**-s``; clipping passes it only
  where it moves the value back into range; the ternariser passes it to ``W`` unchanged; a
  convolution's input gradient is the windows' gradients added back where they came from;
  max-pooling routes it to the window's (first) maximum.

Ternary activations (``act_thresholds``: per weighted layer ``None`` for int8 outputs or an
integer threshold ``t``): the layer's int8 result becomes
:func:`trine.contract.reference.ternarize` of it, as in the reference. Straight through, the
ternariser is read as a quantiser of step ``2 t``: the gradient passes as ``1 / (2 t)`` where
the int8 clip before it passes it (a window of ``|v| < 3 t``, the quantiser's own range,
trained worse: most pre-activations of a layer with a small ``t`` got no gradient).
:meth:`QATNet.calibrate` chooses such a layer's shift and threshold together: the real
threshold ``act_delta * mean|acc + bias|`` (TWN's rule applied to the activations, with a
smaller ``act_delta`` than TWN's 0.7 by default: see :mod:`trine.host.qat`) is expressed as
``t * 2**s`` with the smallest shift that keeps ``t <= 127``; the next layer's inputs are
trits whatever the shift, so its bias is left alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from trine.contract.errors import FormatError
from trine.contract.reference import (
    Conv,
    Flatten,
    Layer,
    MaxPool,
    check_ternary_threshold,
    im2col,
    rounding_constant,
    saturate,
    shift_inplace,
    ternarize,
)
from trine.contract.spec import (
    ACT_MAX,
    ACT_MIN,
    BIAS_MAX,
    BIAS_MIN,
    SHIFT_MAX,
    TERNARY_THRESHOLD_MAX,
    TERNARY_THRESHOLD_MIN,
)
from trine.host.arch import LayerSpec, spec_layers
from trine.host.learning import Adam, TrainError, softmax_xent
from trine.host.program import Program
from trine.host.ternarize import twn_trits

__all__ = ["THRESHOLDS", "QATNet", "quantize", "shift_for", "ternary_shift_for"]

THRESHOLDS = ("layer", "row")


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    """:meth:`Program.quantize_input`'s rule: float64 division, ties to even, saturate."""
    with np.errstate(over="ignore"):
        q = np.rint(np.asarray(x, np.float64) / scale)
    return np.clip(q, ACT_MIN, ACT_MAX).astype(np.int8)


def shift_for(z: np.ndarray, relu: bool, percentile: float) -> int:
    """The smallest shift that brings the ``percentile`` of ``|relu?(z)|`` within 127."""
    mag = np.maximum(z, 0) if relu else np.abs(z)
    q = float(np.percentile(mag, percentile))
    if q <= ACT_MAX:
        return 0
    return int(min(math.ceil(math.log2(q / ACT_MAX)), SHIFT_MAX))


def ternary_shift_for(z: np.ndarray, relu: bool, delta: float) -> tuple[int, int]:
    """``(shift, threshold)`` of a ternary-activation layer whose ``acc + bias`` are ``z``: the
    real threshold ``delta * mean|relu?(z)|`` as ``t * 2**s``, ``s`` the smallest shift with
    ``t <= 127`` (so ``t`` is as fine as the accumulator allows), ``t >= 1``."""
    mag = np.maximum(z, 0) if relu else np.abs(z)
    theta = delta * float(mag.mean()) if mag.size else 0.0
    s = 0 if theta <= TERNARY_THRESHOLD_MAX else math.ceil(math.log2(theta / TERNARY_THRESHOLD_MAX))
    s = min(s, SHIFT_MAX)
    t = int(np.clip(round(theta / 2.0**s), TERNARY_THRESHOLD_MIN, TERNARY_THRESHOLD_MAX))
    return s, t


def _pool_forward(a: np.ndarray, kernel: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Max over non-overlapping windows of ``a`` (N, C, *spatial); also the index of the
    (first) maximum within each window, for the backward pass."""
    n, c, *spatial = a.shape
    out = [s // k for s, k in zip(spatial, kernel, strict=True)]
    split = [n, c]
    for o, k in zip(out, kernel, strict=True):
        split += [o, k]
    # (N, C, o1, k1, o2, k2) -> (N, C, o1, o2, k1 * k2)
    d = len(kernel)
    order = [0, 1, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2)]
    windows = a.reshape(split).transpose(order).reshape(n, c, *out, math.prod(kernel))
    where = windows.argmax(axis=-1)
    return np.take_along_axis(windows, where[..., None], -1)[..., 0], where


def _pool_backward(g: np.ndarray, where: np.ndarray, kernel: tuple[int, ...]) -> np.ndarray:
    n, c, *out = g.shape
    d = len(kernel)
    windows = np.zeros((*g.shape, math.prod(kernel)), g.dtype)
    np.put_along_axis(windows, where[..., None], g[..., None], -1)
    windows = windows.reshape(n, c, *out, *kernel)
    # (N, C, o1, o2, k1, k2) -> (N, C, o1, k1, o2, k2)
    order = [0, 1]
    for a in range(d):
        order += [2 + a, 2 + d + a]
    return windows.transpose(order).reshape(n, c, *(o * k for o, k in zip(out, kernel,
                                                                        strict=True)))


def _col2im(g_cols: np.ndarray, n: int, in_shape: tuple[int, ...], kernel, stride,
            padding) -> np.ndarray:
    """The transpose of :func:`im2col`: each window's gradient added back to its inputs."""
    c, *spatial = in_shape
    out = [(s + 2 * p - k) // st + 1
           for s, k, st, p in zip(spatial, kernel, stride, padding, strict=True)]
    g = g_cols.reshape(n, *out, c, *kernel)
    padded = np.zeros((n, c, *(s + 2 * p for s, p in zip(spatial, padding, strict=True))),
                      g_cols.dtype)
    d = len(kernel)
    for taps in itertools.product(*(range(k) for k in kernel)):
        where = (slice(None), slice(None),
                 *(slice(t, t + st * (o - 1) + 1, st)
                   for t, st, o in zip(taps, stride, out, strict=True)))
        part = g[(slice(None),) * (1 + d) + (slice(None),) + taps]  # (N, *out, C)
        padded[where] += np.moveaxis(part, -1, 1)
    crop = (slice(None), slice(None), *(slice(p, p + s) for p, s in zip(padding, spatial,
                                                                       strict=True)))
    return padded[crop]


class QATNet:
    """The state of a ternary network under QAT: latent weights, biases and integer shifts.

    Parameters
    ----------
    weights : list of float arrays (M, K)
        Latent weights of the weighted layers in order; their ternarisation is what runs.
    betas : list of float arrays (M,)
        Latent biases in output LSBs: the integer bias is ``rint(beta * 2**shift)``.
    shifts : list of int in [0, 31]
    relus : list of bool
    input_scale : float
        Positive: ``a0 = clip(rint(x / input_scale), -128, 127)``.
    threshold : {"layer", "row"}
        Where the TWN threshold's mean is taken.
    specs : list of LayerSpec, optional
        The chain of layers (default: every weight a dense layer: an MLP).
    input_shape : tuple of int, optional
        The input's shape (default ``(K,)`` of the first weight).
    act_thresholds : list of (None or int in [1, 127]), optional
        Per weighted layer: ``None`` for int8 outputs (the default for every layer), or the
        threshold of ternary outputs.
    act_delta : float
        The ternary threshold :meth:`calibrate` chooses, relative to ``mean|acc + bias|``.
    """

    def __init__(self, weights: Sequence[np.ndarray], betas: Sequence[np.ndarray],
                 shifts: Sequence[int], relus: Sequence[bool], input_scale: float,
                 threshold: str = "layer", *, specs: Sequence[LayerSpec] | None = None,
                 input_shape: Sequence[int] | None = None,
                 act_thresholds: Sequence[int | None] | None = None,
                 act_delta: float = 0.3) -> None:
        if threshold not in THRESHOLDS:
            raise TrainError(f"threshold must be one of {', '.join(THRESHOLDS)}, not "
                             f"{threshold!r}")
        self.weights = [np.asarray(w, np.float32) for w in weights]
        self.betas = [np.asarray(b, np.float64) for b in betas]
        self.shifts = [int(s) for s in shifts]
        self.relus = [bool(r) for r in relus]
        if act_thresholds is None:
            act_thresholds = [None] * len(self.weights)
        if len(act_thresholds) != len(self.weights):
            raise TrainError(f"act_thresholds has {len(act_thresholds)} entries for "
                             f"{len(self.weights)} weighted layers")
        try:
            self.act_thresholds = [check_ternary_threshold(t, f"act_thresholds[{i}]")
                                   for i, t in enumerate(act_thresholds)]
        except FormatError as e:
            raise TrainError(str(e)) from None
        self.act_delta = float(act_delta)
        self.input_scale = float(input_scale)
        self.threshold = threshold
        if specs is None:
            specs = [LayerSpec("dense", w.shape[0], relu=r)
                     for w, r in zip(self.weights, self.relus, strict=True)]
        self.specs = list(specs)
        self.input_shape = (tuple(int(d) for d in input_shape) if input_shape is not None
                            else (self.weights[0].shape[1],))
        # the shape each spec receives, and the contract layer of each weighted one's geometry
        self._geometry = spec_layers(self.specs, self.input_shape)
        self._in_shapes = [self.input_shape]
        for layer in self._geometry:
            shape = self._in_shapes[-1]
            self._in_shapes.append(
                (layer.fan_out,) if isinstance(layer, Layer) else layer.output_shape(shape))

    @property
    def n_layers(self) -> int:
        """Weighted layers (dense and convolution)."""
        return len(self.weights)

    def trits(self, i: int) -> np.ndarray:
        """Weighted layer ``i``'s ternary weights (int8, M x K)."""
        return twn_trits(self.weights[i], per_row=self.threshold == "row")

    def int_bias(self, i: int) -> np.ndarray:
        """Weighted layer ``i``'s integer bias (int64 within int32), in accumulator units."""
        b = np.rint(self.betas[i] * 2.0 ** self.shifts[i])
        return np.clip(b, BIAS_MIN, BIAS_MAX).astype(np.int64)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Raw float inputs to int8 of ``(N, *input_shape)``, as :meth:`Program.quantize_input`
        (flat inputs are reshaped)."""
        q = quantize(x, self.input_scale)
        return q.reshape(len(q), *self.input_shape)

    def layer_forward(self, i: int, a: np.ndarray, t: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted layer ``i`` on int8-valued ``a`` (its input, flat for a dense layer): the
        pre-clip post-shift values ``v`` (int64, one row per output position) and the outputs
        ``y`` (int64; ``(N, C_out, *spatial)`` for a convolution)."""
        return self._weighted_forward(i, a, t)[:2]

    def _spec_index(self, i: int) -> int:
        return [j for j, s in enumerate(self.specs) if s.weighted][i]

    def _weighted_forward(self, i: int, a: np.ndarray, t: np.ndarray | None = None):
        """(v, y, inputs as rows) of weighted layer ``i``."""
        if t is None:
            t = self.trits(i)
        j = self._spec_index(i)
        spec = self.specs[j]
        if spec.kind == "dense":
            rows = a.astype(np.float32)
        else:
            geometry = self._geometry[j]
            rows = im2col(a, geometry.kernel, geometry.stride, geometry.padding, np.float32)
        acc = (rows @ t.T.astype(np.float32)).astype(np.int64)
        s = self.shifts[i]
        v = shift_inplace(acc + (self.int_bias(i) + rounding_constant(s)), s)
        y = saturate(v.copy(), self.relus[i])
        if self.act_thresholds[i] is not None:
            y = ternarize(y, self.act_thresholds[i]).astype(np.int64)
        if spec.kind == "conv":
            out = self._in_shapes[j + 1]
            y = np.moveaxis(y.reshape(len(a), *out[1:], out[0]), -1, 1)
        return v, y, rows

    def _walk(self, a: np.ndarray, tape: list | None = None, *, calibrate_with=None):
        """The hard forward pass on int8-valued ``a`` (N, *input_shape); records what the
        backward pass needs in ``tape``; with ``calibrate_with = (percentile, opt)`` chooses
        each weighted layer's shift on the way."""
        i = 0
        for j, spec in enumerate(self.specs):
            if spec.kind == "flatten":
                if tape is not None:
                    tape.append(("flatten", a.shape))
                a = a.reshape(len(a), -1)
            elif spec.kind == "pool":
                a, where = _pool_forward(a, spec.kernel)
                if tape is not None:
                    tape.append(("pool", where, spec.kernel))
            else:
                t = self.trits(i)
                if calibrate_with is not None:
                    self._calibrate_layer(i, a, t, *calibrate_with)
                v, y, rows = self._weighted_forward(i, a, t)
                if tape is not None:
                    tape.append((spec.kind, i, j, rows, v, t.astype(np.float32), a.shape))
                a = y
                i += 1
        return a

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The hard (device) forward pass on raw inputs ``(N, ...)``: int8 outputs ``(N, M)``."""
        return self._walk(self.quantize_input(x)).astype(np.int8)

    def to_program(self, labels: Sequence[str] | None = None) -> Program:
        """The integer program this network is, for the device and the reference."""
        layers, i = [], 0
        for j, spec in enumerate(self.specs):
            if spec.kind == "flatten":
                layers.append(Flatten())
            elif spec.kind == "pool":
                layers.append(MaxPool(spec.kernel, ndim=len(spec.kernel)))
            else:
                t, b, s, r = self.trits(i), self.int_bias(i), self.shifts[i], self.relus[i]
                act = self.act_thresholds[i]
                if spec.kind == "dense":
                    layers.append(Layer(t, b, s, r, ternary_threshold=act))
                else:
                    c_in = self._in_shapes[j][0]
                    layers.append(Conv(t.reshape(spec.width, c_in, *spec.kernel), b,
                                       spec.stride, spec.padding, s, r, ternary_threshold=act))
                i += 1
        return Program(layers, self.input_scale, labels, input_shape=self.input_shape)

    @classmethod
    def from_program(cls, program: Program, threshold: str = "layer") -> QATNet:
        """The network that *is* ``program`` (which must have an ``input_scale``).

        Latent weights are the trits scaled to ``mean|W| = 1``, which the TWN threshold
        (``0.7 * mean|W|``, per layer or per row) maps back to the same trits; betas are
        ``bias / 2**shift``, exact in float64, so ``to_program()`` gives ``program`` back.
        """
        if not isinstance(program, Program):
            raise TrainError(f"expected a trine.host.program.Program, not {type(program).__name__}")
        if program.input_scale is None:
            raise TrainError("the program has no input_scale: QAT needs one for float inputs")
        weights, betas, shifts, relus, specs, acts = [], [], [], [], [], []
        for layer in program.layers:
            if isinstance(layer, Layer | Conv):
                dense = layer if isinstance(layer, Layer) else layer.dense
                t = dense.weights.astype(np.float64)
                density = float(np.abs(t).mean())
                weights.append(t / density if density else t)
                betas.append(layer.bias / 2.0**layer.shift)
                shifts.append(layer.shift)
                relus.append(layer.relu)
                acts.append(layer.ternary_threshold)
                if isinstance(layer, Layer):
                    specs.append(LayerSpec("dense", layer.fan_out, relu=layer.relu))
                else:
                    specs.append(LayerSpec("conv", layer.out_channels, layer.kernel,
                                           layer.stride, layer.padding, layer.relu))
            elif isinstance(layer, MaxPool):
                specs.append(LayerSpec("pool", kernel=layer.kernel))
            else:
                specs.append(LayerSpec("flatten"))
        return cls(weights, betas, shifts, relus, program.input_scale, threshold, specs=specs,
                   input_shape=program.input_shape, act_thresholds=acts)

    def _calibrate_layer(self, i: int, a: np.ndarray, t: np.ndarray, percentile: float,
                         opt: Adam | None) -> None:
        j = self._spec_index(i)
        if self.specs[j].kind == "dense":
            rows = a.astype(np.float32)
        else:
            g = self._geometry[j]
            rows = im2col(a, g.kernel, g.stride, g.padding, np.float32)
        z = (rows @ t.T.astype(np.float32)).astype(np.int64)
        z += self.int_bias(i)
        ternary = self.act_thresholds[i] is not None
        if ternary:
            new, self.act_thresholds[i] = ternary_shift_for(z, self.relus[i], self.act_delta)
        else:
            new = shift_for(z, self.relus[i], percentile)
        d = self.shifts[i] - new
        if d:
            self._rescale_beta(i, 2.0**d, opt)
            # the next layer's inputs scale with this shift, unless they are trits
            if i + 1 < self.n_layers and not ternary:
                self._rescale_beta(i + 1, 2.0**d, opt)
            self.shifts[i] = new

    def calibrate(self, a0: np.ndarray, percentile: float, opt: Adam | None = None) -> None:
        """Re-choose every shift from int8 inputs ``a0``, keeping integer biases: the smallest
        shift that brings the ``percentile`` of each layer's ``|acc + bias|`` within 127; when
        a shift moves by ``d``, this layer's and the next weighted layer's betas are rescaled
        by ``2**-d`` (the next layer's inputs halved or doubled). ``opt`` is the optimiser
        whose parameters ``L .. 2L-1`` are the betas: its moments are rescaled with them."""
        self._walk(a0, calibrate_with=(percentile, opt))

    def _rescale_beta(self, i: int, factor: float, opt: Adam | None) -> None:
        self.betas[i] *= factor
        if opt is not None:
            opt.rescale(self.n_layers + i, factor)

    def sparsity(self) -> list[float]:
        return [float(np.mean(self.trits(i) == 0)) for i in range(self.n_layers)]

    def loss_and_grads(self, a0: np.ndarray, y: np.ndarray, tau: float
                       ) -> tuple[float, list[np.ndarray]]:
        """Hard forward on one batch, then the straight-through backward pass: the loss and
        the gradients of the weights and then the betas."""
        n_layers = self.n_layers
        tape: list = []
        out = self._walk(a0.astype(np.float32), tape)
        loss, g = softmax_xent(tau * out.astype(np.float64), y)
        g = (tau * g).astype(np.float32)
        gw: list[np.ndarray] = [None] * n_layers  # type: ignore[list-item]
        gb: list[np.ndarray] = [None] * n_layers  # type: ignore[list-item]
        for entry in reversed(tape):
            kind = entry[0]
            if kind == "flatten":
                g = g.reshape(entry[1])
                continue
            if kind == "pool":
                g = _pool_backward(g, entry[1], entry[2])
                continue
            _, i, j, rows, v, t, in_shape = entry
            if kind == "conv":  # (N, C_out, *spatial) -> one row per output position
                g = np.moveaxis(g, 1, -1).reshape(-1, v.shape[1])
            # pass where in range, or where descent (-g) moves a saturated value back into range
            low = 0 if self.relus[i] else ACT_MIN
            inside = (v >= low) & (v <= ACT_MAX)
            back = (v > ACT_MAX) & (g > 0)
            if not self.relus[i]:
                back |= (v < ACT_MIN) & (g < 0)
            g = g * (inside | back)
            act = self.act_thresholds[i]
            if act is not None:  # ternary outputs: one level per 2 t of v
                g = g * np.float32(1 / (2 * act))
            gb[i] = g.sum(axis=0).astype(np.float64)  # d bias / d beta = 2**s cancels the 2**-s
            gz = g * np.float32(2.0 ** -self.shifts[i])
            gw[i] = gz.T @ rows
            if i == 0:  # nothing before the first weighted layer learns
                break
            g = gz @ t
            if kind == "conv":
                geometry = self._geometry[j]
                g = _col2im(g, in_shape[0], tuple(in_shape[1:]), geometry.kernel,
                            geometry.stride, geometry.padding)
        return loss, gw + gb
