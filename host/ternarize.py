"""Ternarisation of float weights and folding of a float network into an integer :class:`Program`.

Two ternarisers turn a float matrix ``W`` into trits ``T`` in ``{-1, 0, +1}`` and a scale
``alpha`` so that ``W ~ alpha * T``:

* :func:`ternarize_twn`, Ternary Weight Networks (Li et al., 2016): threshold
  ``delta = 0.7 * mean|W|``, ``alpha`` the mean magnitude of the kept weights;
* :func:`ternarize_absmean`, BitNet b1.58 (Ma et al., 2024): ``gamma = mean|W|``,
  ``T = clip(round(W / gamma), -1, 1)``, ``alpha = gamma``.

A float network is a list of layers, each one of

* ``(W (M, K), b (M,), relu)``: a dense layer ``y = relu?(W x + b)`` (an MLP is a list of
  these alone, the format every trainer here returns);
* :class:`FloatConv`: a 1-D or 2-D convolution with zero padding, ternarised as its matrix
  ``(C_out, C_in * prod(kernel))`` (so per channel means per output channel);
* :class:`trine.contract.reference.MaxPool` and :class:`trine.contract.reference.Flatten`,
  which carry no weights and act on float and integer activations alike.

:func:`fold_to_program` turns a float network into the integer-only chain of
:mod:`trine.contract.reference` layers the device runs (see its docstring for the scale
bookkeeping), ternarised by one of those or, with ``method="gptq"``, by fitting each layer's
output on the calibration data (:mod:`trine.host.ptq`); :func:`run_float` is the float
network and :func:`run_ternarized_float` the ternarised float model the program approximates,
for accuracy comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.errors import FormatError, TrineError
from trine.contract.network import network_shapes
from trine.contract.reference import (
    Conv,
    Flatten,
    Layer,
    MaxPool,
    im2col,
    ternary_layer,
    ternary_matmul,
)
from trine.contract.spec import ACT_MAX, ACT_MIN, BIAS_MAX, BIAS_MIN, SHIFT_MAX
from trine.host.program import Program

__all__ = [
    "TernarizeError",
    "TernarizedLayer",
    "FloatConv",
    "TernarizedConv",
    "TWN_DELTA_FACTOR",
    "twn_trits",
    "ternarize_twn",
    "ternarize_absmean",
    "sparsity",
    "ternarize_layers",
    "run_float",
    "float_activations",
    "float_step",
    "run_ternarized_float",
    "fold_to_program",
]

TWN_DELTA_FACTOR = 0.7  # Li et al.: delta* ~ 0.7 E|W| for Gaussian-like weights
ABSMEAN_EPS = 1e-8  # keeps W / gamma finite for an all-zero matrix
METHODS = ("twn", "absmean")
#: What :func:`fold_to_program` takes: the weight-only ternarisers, and ``gptq``, which fits
#: each layer's output on the calibration data (:mod:`trine.host.ptq`).
FOLD_METHODS = ("gptq", *METHODS)

# (trits (M, K) int8, alpha: scalar or (M,) float64, bias (M,) float64, relu)
TernarizedLayer = tuple[np.ndarray, np.ndarray, np.ndarray, bool]


class TernarizeError(TrineError, ValueError):
    """Weights, layers or calibration data that cannot be ternarised or folded."""


def _check_matrix(w: Any, name: str = "w") -> np.ndarray:
    a = np.asarray(w)
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise TernarizeError(f"{name} must be a real numeric array, not dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise TernarizeError(f"{name} must have shape (M, K) with M, K >= 1, not {a.shape}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise TernarizeError(f"{name} must be finite (no NaN or inf): {a[i, j]} at ({i}, {j})")
    return a


def twn_trits(w: np.ndarray, per_row: bool = False) -> np.ndarray:
    """The TWN trits of a finite float matrix ``w`` (M, K): ``sign(W)`` where ``|W| > delta``,
    ``delta = TWN_DELTA_FACTOR * mean|W|`` over the matrix or, with ``per_row``, over each row.
    Unchecked (trainers call it at every step); :func:`ternarize_twn` checks its input."""
    mag = np.abs(w)
    delta = TWN_DELTA_FACTOR * mag.mean(axis=1 if per_row else None, keepdims=True)
    return (np.sign(w) * (mag > delta)).astype(np.int8)


def ternarize_twn(w: Any, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ternary Weight Networks: threshold at ``0.7 * mean|W|``, scale by the kept magnitudes.

    Parameters
    ----------
    w : array (M, K), finite reals
    per_channel : bool
        If true, ``delta`` and ``alpha`` are computed per output row, else per matrix.

    Returns
    -------
    trits : int8 array (M, K)
        ``sign(W)`` where ``|W| > delta``, else 0.
    alpha : float64 array
        Shape ``()`` per matrix or ``(M,)`` per channel: the mean of ``|W|`` over the kept
        weights. A matrix (or row) that keeps nothing, e.g. all zeros, has ``alpha = 0`` and
        all-zero trits: ``alpha * trits`` is then exactly zero, the best ternary fit.

    Raises
    ------
    TernarizeError
        For a non-2-D or non-numeric ``w``, or NaN/inf in it.
    """
    a = _check_matrix(w)
    mag = np.abs(a)
    axis = 1 if per_channel else None
    trits = twn_trits(a, per_channel)
    keep = trits != 0
    kept = keep.sum(axis=axis, keepdims=True)
    total = np.where(keep, mag, 0.0).sum(axis=axis, keepdims=True)
    alpha = np.where(kept > 0, total / np.maximum(kept, 1), 0.0)
    return trits, (alpha[:, 0] if per_channel else alpha.reshape(()))


def ternarize_absmean(w: Any) -> tuple[np.ndarray, np.ndarray]:
    """BitNet b1.58 absmean: ``T = clip(round(W / (gamma + eps)), -1, 1)``, ``alpha = gamma``.

    ``gamma = mean|W|`` over the whole matrix; ``round`` ties to even, as NumPy's. An all-zero
    matrix gives all-zero trits and ``alpha = 0``.

    Returns
    -------
    trits : int8 array (M, K)
    alpha : float64 array of shape ``()``

    Raises
    ------
    TernarizeError
        For a non-2-D or non-numeric ``w``, or NaN/inf in it.
    """
    a = _check_matrix(w)
    gamma = np.abs(a).mean()
    trits = np.clip(np.rint(a / (gamma + ABSMEAN_EPS)), -1, 1).astype(np.int8)
    return trits, np.asarray(gamma, dtype=np.float64)


def sparsity(trits: Any) -> float:
    """The fraction of zero trits (0.0 for an empty array)."""
    t = np.asarray(trits)
    return float(np.mean(t == 0)) if t.size else 0.0


# ---------------------------------------------------------------------------------------------
# Float networks: dense triples, convolutions, max-pooling, flatten
# ---------------------------------------------------------------------------------------------


def _axes_arg(value: Any, name: str, minimum: int, ndim: int) -> tuple[int, ...]:
    """``value`` (an int, or one int per spatial axis) as one int per spatial axis."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if is_int(value):
        values = (int(value),) * ndim
    elif isinstance(value, tuple | list) and len(value) == ndim and all(map(is_int, value)):
        values = tuple(int(v) for v in value)
    else:
        raise TernarizeError(f"{name} must be an integer or {ndim} integers, not {value!r}")
    if any(v < minimum for v in values):
        raise TernarizeError(f"{name} must be >= {minimum}, not {value!r}")
    return values


@dataclass(frozen=True, eq=False)
class FloatConv:
    """A float convolution, 1-D or 2-D, with zero padding: the layer
    :class:`trine.contract.reference.Conv` is folded from.

    On an input ``x`` of shape ``(C_in, L)`` (zero outside ``[0, L)``)::

        y[o, q] = relu?(b[o] + sum_{c, t} w[o, c, t] * x[c, q * s + t - p])

    with ``L_out = (L + 2 p - k) // s + 1``, and in 2-D the same over both axes.

    Parameters
    ----------
    weights : float array (C_out, C_in, k) or (C_out, C_in, kh, kw), finite
    bias : float array (C_out,), finite
    stride, padding : int, or one int per spatial axis (>= 1 and >= 0)
    relu : bool

    Members
    -------
    ndim, kernel, in_channels, out_channels
    matrix : float64 (C_out, C_in * prod(kernel))
        The weights as the dense layer each output position computes, in C order (the
        order of :func:`trine.contract.reference.im2col`); what is ternarised.

    Raises
    ------
    TernarizeError
        For weights of another rank or not finite, a bias of the wrong shape, a stride below
        1, a negative padding or a non-bool ``relu``.
    """

    weights: np.ndarray
    bias: np.ndarray
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    relu: bool = False

    def __post_init__(self):
        w = np.asarray(self.weights)
        if w.dtype.kind not in "fiu" or w.ndim not in (3, 4) or 0 in w.shape:
            raise TernarizeError(
                "conv weights must be a real array of shape (C_out, C_in, k) or (C_out, C_in, "
                f"kh, kw) with every size >= 1, not {w.dtype} {w.shape}"
            )
        matrix = _check_matrix(w.reshape(w.shape[0], -1), "conv weights")
        b = np.asarray(self.bias)
        if b.dtype.kind not in "fiu" or b.shape != (w.shape[0],):
            raise TernarizeError(f"conv bias must be a real array of shape ({w.shape[0]},) to "
                                 f"match weights {w.shape}, not {b.dtype} {b.shape}")
        b = b.astype(np.float64)
        if not np.all(np.isfinite(b)):
            raise TernarizeError("conv bias must be finite (no NaN or inf)")
        if not isinstance(self.relu, bool | np.bool_):
            raise TernarizeError(f"conv relu must be a bool, not {self.relu!r}")
        ndim = w.ndim - 2
        weights = matrix.reshape(w.shape)
        for a in (weights, b):
            a.setflags(write=False)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "stride", _axes_arg(self.stride, "stride", 1, ndim))
        object.__setattr__(self, "padding", _axes_arg(self.padding, "padding", 0, ndim))
        object.__setattr__(self, "relu", bool(self.relu))

    @property
    def ndim(self) -> int:
        return self.weights.ndim - 2

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weights.shape[2:])

    @property
    def in_channels(self) -> int:
        return self.weights.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weights.shape[0]

    @property
    def matrix(self) -> np.ndarray:
        return self.weights.reshape(self.out_channels, -1)


@dataclass(frozen=True, eq=False)
class TernarizedConv:
    """A :class:`FloatConv` after ternarisation: ``trits`` (its weights' shape, int8) times
    ``alpha`` (``()`` per layer or ``(C_out,)`` per channel), ``bias`` and the geometry."""

    trits: np.ndarray
    alpha: np.ndarray
    bias: np.ndarray
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    relu: bool

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.trits.shape[2:])

    @property
    def matrix(self) -> np.ndarray:
        return self.trits.reshape(self.trits.shape[0], -1)


_PASS_THROUGH = (MaxPool, Flatten)


def _is_dense(layer: Any) -> bool:
    return isinstance(layer, tuple)


def _check_float_layers(float_layers: Any) -> list:
    if not isinstance(float_layers, Sequence) or isinstance(float_layers, str | bytes):
        raise TernarizeError(
            f"float_layers must be a list of (W, b, relu), not {type(float_layers).__name__}"
        )
    if len(float_layers) == 0:
        raise TernarizeError("float_layers is empty: a network needs at least one layer")
    out: list = []
    for i, item in enumerate(float_layers):
        if isinstance(item, (FloatConv, *_PASS_THROUGH)):
            out.append(item)
            continue
        if not isinstance(item, Sequence) or len(item) != 3:
            raise TernarizeError(f"layer {i} must be a (W, b, relu) triple, a FloatConv, a "
                                 f"MaxPool or a Flatten, not {item!r:.60}")
        w_raw, b_raw, relu = item
        w = _check_matrix(w_raw, f"layer {i} W")
        m, k = w.shape
        b = np.asarray(b_raw)
        if b.dtype.kind not in "fiu" or b.shape != (m,):
            raise TernarizeError(
                f"layer {i} b must be a real array of shape ({m},) to match W {w.shape}, "
                f"not {b.dtype} {b.shape}"
            )
        b = b.astype(np.float64)
        if not np.all(np.isfinite(b)):
            raise TernarizeError(f"layer {i} b must be finite (no NaN or inf)")
        if not isinstance(relu, bool | np.bool_):
            raise TernarizeError(f"layer {i} relu must be a bool, not {relu!r}")
        if out and _is_dense(out[-1]) and k != out[-1][0].shape[0]:
            raise TernarizeError(
                f"layer {i} W has {k} inputs but layer {i - 1} has {out[-1][0].shape[0]} "
                f"outputs: the layers do not chain"
            )
        out.append((w, b, bool(relu)))
    return out


def _skeleton(layer: Any) -> Any:
    """A contract layer with ``layer``'s geometry and zero weights, to check shapes with."""
    if isinstance(layer, _PASS_THROUGH):
        return layer
    if isinstance(layer, FloatConv | TernarizedConv):
        shape = layer.weights.shape if isinstance(layer, FloatConv) else layer.trits.shape
        return Conv(np.zeros(shape, np.int8), np.zeros(shape[0], np.int64), layer.stride,
                    layer.padding)
    m, k = layer[0].shape
    return Layer(np.zeros((m, k), np.int8), np.zeros(m, np.int64))


def _network_shapes(layers: Sequence, input_shape: Any) -> list[tuple[int, ...]]:
    """Every shape along a float or ternarised network (the contract's rules and messages)."""
    try:
        return network_shapes([_skeleton(layer) for layer in layers], input_shape)
    except FormatError as e:
        raise TernarizeError(str(e)) from None


def _is_mlp(layers: Sequence, input_shape: Any) -> bool:
    """Dense layers alone on a flat input: the MLP path, unchanged since MLPs came first."""
    if not all(_is_dense(layer) for layer in layers):
        return False
    return input_shape is None or tuple(np.atleast_1d(input_shape)) == (layers[0][0].shape[1],)


def _batch(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Float inputs ``(N, *shape)`` or flat ``(N, prod(shape))`` as float64 ``(N, *shape)``."""
    a = np.asarray(x)
    width = math.prod(shape)
    dims = ", ".join(map(str, shape))
    if a.dtype.kind != "f":
        raise TernarizeError(
            f"{name} must be a float array of raw inputs, not dtype {a.dtype}"
        )
    if a.ndim < 2 or a.shape[0] < 1 or not (a.shape[1:] == shape or a.shape[1:] == (width,)):
        raise TernarizeError(
            f"{name} must have shape (N, {dims}) or (N, {width}) with N >= 1, not {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise TernarizeError(f"{name} must be finite (no NaN or inf)")
    return a.astype(np.float64).reshape(len(a), *shape)


def _float_input(layers: Sequence, x: Any, input_shape: Any) -> np.ndarray:
    """The batch ``x`` as float64 ``(N, *input_shape)``, the shape checked along ``layers``;
    without ``input_shape``, each sample's own shape is the network's input shape."""
    if input_shape is None:
        input_shape = np.shape(x)[1:]
    return _batch(x, _network_shapes(layers, input_shape)[0], "x")


def _conv_float(y: np.ndarray, matrix: np.ndarray, alpha: Any, bias: np.ndarray,
                kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
                relu: bool) -> np.ndarray:
    """A convolution in float64 on ``y`` (N, C_in, *spatial): ``matrix`` (times ``alpha``,
    if not None) applied to every window, plus ``bias``, ReLU if ``relu``."""
    n = y.shape[0]
    out = tuple((size + 2 * p - k) // s + 1
                for size, k, s, p in zip(y.shape[2:], kernel, stride, padding, strict=True))
    v = im2col(y, kernel, stride, padding, np.float64) @ matrix.T.astype(np.float64)
    if alpha is not None:
        v = v * alpha
    v = v + bias
    if relu:
        v = np.maximum(v, 0.0)
    return np.ascontiguousarray(np.moveaxis(v.reshape(n, *out, matrix.shape[0]), -1, 1))


def run_float(float_layers: Sequence, x: Any, input_shape: Sequence[int] | None = None
              ) -> np.ndarray:
    """The float network in float64, layer by layer.

    Parameters
    ----------
    float_layers : list of layers (see the module docstring)
    x : float array
        For an MLP ``(K,)`` or ``(N, K)``; otherwise a batch ``(N, *input_shape)`` or flat
        ``(N, prod(input_shape))``.
    input_shape : tuple of int, optional
        The shape of one input; by default ``(K,)`` for an MLP, else each sample's shape in
        ``x``.

    Returns
    -------
    float64 array: the last layer's output, ``(N, *output_shape)`` (or ``(M,)`` for one
    input of an MLP).

    Raises
    ------
    TernarizeError
        For malformed layers, layers whose shapes do not chain, or inputs of the wrong shape.
    """
    layers = _check_float_layers(float_layers)
    if _is_mlp(layers, input_shape):
        y = np.asarray(x, dtype=np.float64)
        for w, b, relu in layers:
            y = y @ w.T + b
            if relu:
                y = np.maximum(y, 0.0)
        return y
    y = _float_input(layers, x, input_shape)
    for layer in layers:
        if isinstance(layer, FloatConv):
            y = _conv_float(y, layer.matrix, None, layer.bias, layer.kernel, layer.stride,
                            layer.padding, layer.relu)
        elif isinstance(layer, _PASS_THROUGH):
            y = layer(y)
        else:
            w, b, relu = layer
            y = y @ w.T + b
            if relu:
                y = np.maximum(y, 0.0)
    return y


def float_activations(float_layers: Sequence, x: Any,
                      input_shape: Sequence[int] | None = None) -> list[np.ndarray]:
    """Every layer's output of the float network on a batch ``x``, float64: the list of
    what :func:`run_float` computes on the way (its last entry is :func:`run_float`'s result
    for a batch). ``x`` and ``input_shape`` as for :func:`run_float`."""
    layers = _check_float_layers(float_layers)
    if _is_mlp(layers, input_shape):
        y = np.asarray(x, dtype=np.float64)
        if y.ndim != 2:
            raise TernarizeError(f"x must be a batch (N, K), not shape {y.shape}")
    else:
        y = _float_input(layers, x, input_shape)
    out = []
    for layer in layers:
        y = float_step(layer, y)
        out.append(y)
    return out


def ternarize_layers(
    float_layers: Sequence,
    *,
    method: str = "twn",
    per_channel: bool = False,
) -> list:
    """Ternarise every weight matrix of a float network; biases and ReLU flags are kept.

    Parameters
    ----------
    float_layers : list of layers (see the module docstring)
        Dense ``(W (M, K), b (M,), relu)`` triples, :class:`FloatConv`, ``MaxPool``,
        ``Flatten``; consecutive dense layers must chain.
    method : {"twn", "absmean"}
    per_channel : bool
        Per-row ``alpha`` (TWN only); a convolution's rows are its output channels.

    Returns
    -------
    list
        ``(trits, alpha, b, relu)`` for each dense layer (:data:`TernarizedLayer`), a
        :class:`TernarizedConv` for each convolution, pooling and flatten as they were.

    Raises
    ------
    TernarizeError
        For an unknown method, ``per_channel`` with absmean, or malformed layers.
    """
    if method not in METHODS:
        raise TernarizeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if per_channel and method != "twn":
        raise TernarizeError(f"per_channel is only supported with method 'twn', not {method!r}")

    def ternarize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if method == "twn":
            return ternarize_twn(w, per_channel=per_channel)
        return ternarize_absmean(w)

    result: list = []
    for layer in _check_float_layers(float_layers):
        if isinstance(layer, FloatConv):
            trits, alpha = ternarize(layer.matrix)
            result.append(TernarizedConv(trits.reshape(layer.weights.shape), alpha, layer.bias,
                                         layer.stride, layer.padding, layer.relu))
        elif isinstance(layer, _PASS_THROUGH):
            result.append(layer)
        else:
            w, b, relu = layer
            trits, alpha = ternarize(w)
            result.append((trits, alpha, b, relu))
    return result


def run_ternarized_float(layers: Sequence, x: Any,
                         input_shape: Sequence[int] | None = None) -> np.ndarray:
    """The ternarised model in float64: ``y = relu?(alpha * (T x) + b)`` layer by layer
    (every window of a convolution alike; pooling and flatten as they are).

    ``x`` is ``(K,)`` or ``(N, K)`` for an MLP, else ``(N, *input_shape)`` or flat
    ``(N, prod(input_shape))`` (``input_shape`` as in :func:`run_float`); this is what
    :func:`fold_to_program` approximates with integers (exactly up to activation rounding,
    for per-layer ``alpha``).
    """
    if _is_mlp(layers, input_shape):
        y = np.asarray(x, dtype=np.float64)
        for trits, alpha, b, relu in layers:
            y = (y @ trits.T.astype(np.float64)) * alpha + b
            if relu:
                y = np.maximum(y, 0.0)
        return y
    y = _float_input(layers, x, input_shape)
    for layer in layers:
        if isinstance(layer, TernarizedConv):
            y = _conv_float(y, layer.matrix, layer.alpha, layer.bias, layer.kernel,
                            layer.stride, layer.padding, layer.relu)
        elif isinstance(layer, _PASS_THROUGH):
            y = layer(y)
        else:
            trits, alpha, b, relu = layer
            y = (y @ trits.T.astype(np.float64)) * alpha + b
            if relu:
                y = np.maximum(y, 0.0)
    return y


# ---------------------------------------------------------------------------------------------
# Folding into integers
# ---------------------------------------------------------------------------------------------


def _check_calibration(x: Any, fan_in: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TernarizeError(
            f"calibration_x must be a float array of raw inputs, not dtype {a.dtype}"
        )
    if a.ndim != 2 or a.shape[0] < 1:
        raise TernarizeError(f"calibration_x must have shape (N, K) with N >= 1, not {a.shape}")
    if a.shape[1] != fan_in:
        raise TernarizeError(
            f"calibration_x has {a.shape[1]} features per sample, layer 0 expects {fan_in}"
        )
    if not np.all(np.isfinite(a)):
        raise TernarizeError("calibration_x must be finite (no NaN or inf)")
    return a.astype(np.float64)


def _scales(acc: np.ndarray, alpha: np.ndarray, b: np.ndarray, relu: bool, s_in: float,
            percentile: float) -> tuple[np.ndarray, int, float]:
    """The integer bias, the shift and the accumulator unit of one weighted layer whose
    accumulators over the calibration set are ``acc`` (..., M)."""
    alpha_eff = float(np.mean(alpha))
    unit = alpha_eff * s_in if alpha_eff > 0 else s_in
    pre = unit * acc.astype(np.float64) + b
    if relu:
        pre = np.maximum(pre, 0.0)
    q = float(np.percentile(np.abs(pre), percentile))
    shift = 0
    if q > 0:
        shift = int(np.clip(round(math.log2(q / ACT_MAX / unit)), 0, SHIFT_MAX))
    bias = np.clip(np.rint(b / unit), BIAS_MIN, BIAS_MAX).astype(np.int64)
    return bias, shift, unit


def float_step(layer: Any, y: np.ndarray) -> np.ndarray:
    """One float layer on a batch ``y`` (float64, ``(N, ...)``, unchecked), as
    :func:`run_float` computes it."""
    if isinstance(layer, FloatConv):
        return _conv_float(y, layer.matrix, None, layer.bias, layer.kernel, layer.stride,
                           layer.padding, layer.relu)
    if isinstance(layer, _PASS_THROUGH):
        return layer(y)
    w, b, relu = layer
    y = y @ w.T + b
    return np.maximum(y, 0.0) if relu else y


def _fit(layer: Any, a: np.ndarray, s_in: float, x_f: np.ndarray, fit: Any) -> Any:
    """A weighted float layer ternarised by :func:`trine.host.ptq.fit_layer` on its inputs:
    ``a`` as the integer program has them (int8, scale ``s_in``), ``x_f`` as the float model
    has them."""
    from trine.host.ptq import fit_layer

    if isinstance(layer, FloatConv):
        rows_q = im2col(a, layer.kernel, layer.stride, layer.padding, np.float64) * s_in
        rows_f = im2col(x_f, layer.kernel, layer.stride, layer.padding, np.float64)
        trits, alpha, bias = fit_layer(layer.matrix, layer.bias, rows_q, rows_f, fit)
        return TernarizedConv(trits.reshape(layer.weights.shape), np.asarray(alpha), bias,
                              layer.stride, layer.padding, layer.relu)
    w, b, relu = layer
    trits, alpha, bias = fit_layer(w, b, a.astype(np.float64) * s_in, x_f, fit)
    return (trits, np.asarray(alpha), bias, relu)


def fold_to_program(
    float_layers: Sequence,
    calibration_x: Any,
    *,
    method: str = "twn",
    per_channel: bool = False,
    input_scale: float | None = None,
    labels: Sequence[str] | None = None,
    percentile: float = 100.0,
    input_shape: Sequence[int] | None = None,
    fit: Any = None,
    mixtures: int = 0,
    mixture_seed: int = 0,
) -> Program:
    """Ternarise a float network and fold its scales into integer biases and shifts.

    Every int8 activation ``a`` stands for the real value ``a * s``. Layer 0's ``s`` is
    ``input_scale``, by default ``max|calibration_x| / 127`` (the largest calibration input
    maps to 127, nothing saturates). For a layer with trits ``T``, scale ``alpha`` and float
    bias ``b``, the ternarised pre-activation is ``unit * (T a) + b`` with
    ``unit = alpha * s_in``. The hardware can only compute ``(acc + bias) >> shift``, so:

    * ``bias = round(b / unit)`` (clipped to int32): the bias in accumulator units;
    * the wanted output scale is ``q / 127``, ``q`` the ``percentile`` of the calibration
      pre-activations' magnitudes (after ReLU if the layer has one), and
      ``shift = round(log2(wanted / unit))`` clamped to ``[0, 31]``;
    * the output scale is then *redefined* as exactly ``s_out = unit * 2**shift``, which is
      next layer's ``s_in``. Rounding ``log2`` makes ``s_out`` up to ``sqrt(2)`` smaller than
      wanted, so the largest calibration values may saturate at 127 (one bit of resolution
      bought with a little clipping); a shift clamped at 0 loses no range.

    A convolution is folded the same way, its ``q`` taken over every output position of every
    calibration input (one shift per layer, as the device has). Max-pooling and flatten keep
    the scale: the maximum of values on one scale is on that scale.

    The calibration set is propagated through the *integer* layers (``trine.contract.reference``),
    so each
    scale is chosen from exactly what the device will compute. A layer with ``alpha = 0``
    (all trits zero) outputs its bias alone; ``unit = s_in`` is used for it.

    Per-channel ``alpha`` (``per_channel=True``) cannot be represented: trits stay trits and
    the shift is one per layer. The folded layer uses the *mean* of the row alphas, so per
    channel only changes which weights are kept; the integer program then approximates
    ``mean(alpha) * T``, not the per-row model of :func:`run_ternarized_float`.

    Parameters
    ----------
    float_layers : list of layers (see the module docstring)
        The float network; the last layer is typically dense without ReLU (logits).
    calibration_x : float array (N, K), or (N, *input_shape)
        Representative raw inputs, in the same units as the inputs at inference; flat inputs
        are reshaped in C order.
    method : {"twn", "absmean", "gptq"}
        ``twn`` and ``absmean`` ternarise each weight matrix on its own (see
        :func:`ternarize_layers`); ``gptq`` chooses each layer's trits, scale and bias to
        reproduce the float model's output on the calibration data, layer by layer on what
        the integer layers before it compute (:mod:`trine.host.ptq`).
    per_channel
        As in :func:`ternarize_layers` (``twn`` only).
    fit : trine.host.ptq.OutputFit, optional
        The parts of the ``gptq`` fit to use (default all of them).
    mixtures : int
        Calibrate on ``calibration_x`` and ``mixtures`` random mixtures of two of its inputs
        per input (:func:`trine.host.ptq.mixtures`, drawn with ``mixture_seed``), the float
        model's activations on them as targets: more points for the ``gptq`` fit than a few
        hundred inputs give (a layer with more inputs than calibration rows is otherwise fitted
        on a rank-deficient ``X^T X``). ``input_scale`` comes from ``calibration_x`` alone.
        0 (the default): the calibration inputs alone.
    mixture_seed : int
    input_scale : float, optional
        Fixes the input quantisation step instead of deriving it from the calibration set.
    labels : list of str, optional
        Output names, passed to :class:`Program`.
    percentile : float
        In ``(0, 100]``; 100 (the default) takes the maximum.
    input_shape : tuple of int, optional
        The shape of one input, ``(K,)``, ``(C, L)`` or ``(C, H, W)``; by default ``(K,)`` of
        a first dense layer (required when the network starts with a convolution).

    Returns
    -------
    Program
        With ``input_scale`` and ``input_shape`` set; ``Program.stats()["sparsity"]`` gives
        the sparsity per weighted layer.

    Raises
    ------
    TernarizeError
        For malformed layers or layers whose shapes do not chain (naming the layer),
        calibration data of the wrong dtype or shape, an unknown ``method``, ``per_channel``
        or ``fit`` with a method they do not apply to, a bad ``input_scale`` or
        ``percentile``, a negative ``mixtures``, or an all-zero calibration set without
        ``input_scale``.
    """
    for value, name in ((mixtures, "mixtures"), (mixture_seed, "mixture_seed")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise TernarizeError(f"{name} must be an integer >= 0, not {value!r}")
    if method not in FOLD_METHODS:
        raise TernarizeError(f"method must be one of {', '.join(FOLD_METHODS)}, not {method!r}")
    if method == "gptq":
        if per_channel:
            raise TernarizeError("per_channel is only supported with method 'twn', not 'gptq' "
                                 "(which fits one scale per layer to the outputs)")
        from trine.host.ptq import OutputFit

        fit = OutputFit() if fit is None else fit
        checked = _check_float_layers(float_layers)
        tern = None
    else:
        if fit is not None:
            raise TernarizeError(f"fit only applies with method 'gptq', not {method!r}")
        tern = ternarize_layers(float_layers, method=method, per_channel=per_channel)
        checked = tern
    mlp = _is_mlp(checked, input_shape)
    if mlp:
        shape = (checked[0][0].shape[1],)
        x = _check_calibration(calibration_x, shape[0])
    else:
        shape = _network_shapes(checked, input_shape)[0]
        x = _batch(calibration_x, shape, "calibration_x")
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, int | float)
        or not (0 < percentile <= 100)
    ):
        raise TernarizeError(f"percentile must be in (0, 100], not {percentile!r}")
    if input_scale is None:
        peak = float(np.abs(x).max())
        if peak == 0:
            raise TernarizeError(
                "calibration_x is all zeros: cannot choose input_scale (give one explicitly)"
            )
        input_scale = peak / ACT_MAX
    elif (
        isinstance(input_scale, bool)
        or not isinstance(input_scale, int | float | np.floating)
        or not (math.isfinite(input_scale) and input_scale > 0)
    ):
        raise TernarizeError(f"input_scale must be a positive finite number, not {input_scale!r}")
    s_in = float(input_scale)
    if mixtures:
        from trine.host.ptq import mixtures as mix

        x = mix(x, int(mixtures), np.random.default_rng(int(mixture_seed)))
    # The same rule as Program.quantize_input, so calibration sees the device's inputs.
    a = np.clip(np.rint(x / s_in), ACT_MIN, ACT_MAX).astype(np.int8)
    x_f = x  # the float model's activations, followed along for the output fit

    layers: list = []
    for k, item in enumerate(checked):
        if tern is not None:
            t = item
        elif isinstance(item, _PASS_THROUGH):
            t = item
        else:
            t = _fit(item, a, s_in, x_f, fit)
        if isinstance(t, _PASS_THROUGH):
            layer = t
        elif isinstance(t, TernarizedConv):
            cols = im2col(a, t.kernel, t.stride, t.padding, np.int8)
            bias, shift, unit = _scales(ternary_matmul(cols, t.matrix), t.alpha, t.bias,
                                        t.relu, s_in, percentile)
            layer = Conv(t.trits, bias, t.stride, t.padding, shift, t.relu)
            s_in = unit * 2.0**shift
        else:
            trits, alpha, b, relu = t
            bias, shift, unit = _scales(ternary_matmul(a, trits), alpha, b, relu, s_in,
                                        percentile)
            layer = Layer(trits, bias, shift, relu)
            s_in = unit * 2.0**shift
        layers.append(layer)
        a = ternary_layer(a, layer) if isinstance(layer, Layer) else layer(a)
        if tern is None and k + 1 < len(checked):
            x_f = float_step(item, x_f)
    if mlp:
        return Program(layers, input_scale, labels)
    return Program(layers, input_scale, labels, input_shape=shape)
