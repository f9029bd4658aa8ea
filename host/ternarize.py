"""Ternarisation of float weights and folding of a float MLP into an integer :class:`Program`.

Two ternarisers turn a float matrix ``W`` into trits ``T`` in ``{-1, 0, +1}`` and a scale
``alpha`` so that ``W ~ alpha * T``:

* :func:`ternarize_twn`, Ternary Weight Networks (Li et al., 2016): threshold
  ``delta = 0.7 * mean|W|``, ``alpha`` the mean magnitude of the kept weights;
* :func:`ternarize_absmean`, BitNet b1.58 (Ma et al., 2024): ``gamma = mean|W|``,
  ``T = clip(round(W / gamma), -1, 1)``, ``alpha = gamma``.

:func:`fold_to_program` then turns a ternarised float MLP into the integer-only chain of
:class:`trine.contract.reference.Layer` the device runs (see its docstring for the scale
bookkeeping), and
:func:`run_ternarized_float` is the float model it approximates, for accuracy comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trine.contract.errors import TrineError
from trine.contract.reference import Layer, ternary_layer, ternary_matmul
from trine.contract.spec import ACT_MAX, ACT_MIN, BIAS_MAX, BIAS_MIN, SHIFT_MAX
from trine.host.program import Program

__all__ = [
    "TernarizeError",
    "TernarizedLayer",
    "TWN_DELTA_FACTOR",
    "twn_trits",
    "ternarize_twn",
    "ternarize_absmean",
    "sparsity",
    "ternarize_layers",
    "run_ternarized_float",
    "fold_to_program",
]

TWN_DELTA_FACTOR = 0.7  # Li et al.: delta* ~ 0.7 E|W| for Gaussian-like weights
ABSMEAN_EPS = 1e-8  # keeps W / gamma finite for an all-zero matrix
METHODS = ("twn", "absmean")

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


def _check_float_layers(float_layers: Any) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    if not isinstance(float_layers, Sequence) or isinstance(float_layers, str | bytes):
        raise TernarizeError(
            f"float_layers must be a list of (W, b, relu), not {type(float_layers).__name__}"
        )
    if len(float_layers) == 0:
        raise TernarizeError("float_layers is empty: a network needs at least one layer")
    out = []
    for i, item in enumerate(float_layers):
        if not isinstance(item, Sequence) or len(item) != 3:
            raise TernarizeError(f"layer {i} must be a (W, b, relu) triple, not {item!r:.60}")
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
        if out and k != out[-1][0].shape[0]:
            raise TernarizeError(
                f"layer {i} W has {k} inputs but layer {i - 1} has {out[-1][0].shape[0]} "
                f"outputs: the layers do not chain"
            )
        out.append((w, b, bool(relu)))
    return out


def ternarize_layers(
    float_layers: Sequence[tuple[Any, Any, bool]],
    *,
    method: str = "twn",
    per_channel: bool = False,
) -> list[TernarizedLayer]:
    """Ternarise every weight matrix of a float MLP; biases and ReLU flags are kept.

    Parameters
    ----------
    float_layers : list of (W (M, K), b (M,), relu)
        A float MLP ``y = relu?(W x + b)`` layer by layer; consecutive layers must chain.
    method : {"twn", "absmean"}
    per_channel : bool
        Per-row ``alpha`` (TWN only).

    Returns
    -------
    list of (trits, alpha, b, relu)

    Raises
    ------
    TernarizeError
        For an unknown method, ``per_channel`` with absmean, or malformed layers.
    """
    if method not in METHODS:
        raise TernarizeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if per_channel and method != "twn":
        raise TernarizeError(f"per_channel is only supported with method 'twn', not {method!r}")
    result = []
    for w, b, relu in _check_float_layers(float_layers):
        if method == "twn":
            trits, alpha = ternarize_twn(w, per_channel=per_channel)
        else:
            trits, alpha = ternarize_absmean(w)
        result.append((trits, alpha, b, relu))
    return result


def run_ternarized_float(layers: Sequence[TernarizedLayer], x: Any) -> np.ndarray:
    """The ternarised model in float64: ``y = relu?(alpha * (T x) + b)`` layer by layer.

    ``x`` is ``(K,)`` or ``(N, K)``; this is what :func:`fold_to_program` approximates with
    integers (exactly up to activation rounding, for per-layer ``alpha``).
    """
    y = np.asarray(x, dtype=np.float64)
    for trits, alpha, b, relu in layers:
        y = (y @ trits.T.astype(np.float64)) * alpha + b
        if relu:
            y = np.maximum(y, 0.0)
    return y


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


def fold_to_program(
    float_layers: Sequence[tuple[Any, Any, bool]],
    calibration_x: Any,
    *,
    method: str = "twn",
    per_channel: bool = False,
    input_scale: float | None = None,
    labels: Sequence[str] | None = None,
    percentile: float = 100.0,
) -> Program:
    """Ternarise a float MLP and fold its scales into integer biases and shifts.

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
    float_layers : list of (W (M, K), b (M,), relu)
        The float MLP; the last layer is typically without ReLU (logits).
    calibration_x : float array (N, K)
        Representative raw inputs, in the same units as the inputs at inference.
    method, per_channel
        As in :func:`ternarize_layers`.
    input_scale : float, optional
        Fixes the input quantisation step instead of deriving it from the calibration set.
    labels : list of str, optional
        Output names, passed to :class:`Program`.
    percentile : float
        In ``(0, 100]``; 100 (the default) takes the maximum.

    Returns
    -------
    Program
        With ``input_scale`` set; ``Program.stats()["sparsity"]`` gives the per-layer sparsity.

    Raises
    ------
    TernarizeError
        For malformed layers, calibration data of the wrong dtype, shape or width, a bad
        ``input_scale`` or ``percentile``, or an all-zero calibration set without
        ``input_scale``.
    """
    tern = ternarize_layers(float_layers, method=method, per_channel=per_channel)
    x = _check_calibration(calibration_x, tern[0][0].shape[1])
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
    # The same rule as Program.quantize_input, so calibration sees the device's inputs.
    a = np.clip(np.rint(x / s_in), ACT_MIN, ACT_MAX).astype(np.int8)

    layers = []
    for trits, alpha, b, relu in tern:
        alpha_eff = float(np.mean(alpha))
        unit = alpha_eff * s_in if alpha_eff > 0 else s_in
        pre = unit * ternary_matmul(a, trits).astype(np.float64) + b
        if relu:
            pre = np.maximum(pre, 0.0)
        q = float(np.percentile(np.abs(pre), percentile))
        shift = 0
        if q > 0:
            shift = int(np.clip(round(math.log2(q / ACT_MAX / unit)), 0, SHIFT_MAX))
        bias = np.clip(np.rint(b / unit), BIAS_MIN, BIAS_MAX).astype(np.int64)
        layer = Layer(trits, bias, shift, relu)
        layers.append(layer)
        a = ternary_layer(a, layer)
        s_in = unit * 2.0**shift
    return Program(layers, input_scale, labels)
