"""The executable definition of what trine hardware computes (normative, integer only).

For one layer, with int8 activations ``x`` (shape ``(K,)`` or ``(N, K)``), ternary weights
``w`` (``(M, K)``), int32 ``bias`` (``(M,)``), ``shift`` in ``[0, 31]`` and ``relu``::

    acc[j] = sum_k w[j, k] * x[k]                 # exact integer
    v      = acc + bias
    if shift > 0: v = floor((v + 2**(shift-1)) / 2**shift)   # round half up
    if relu:      v = max(v, 0)
    y      = clip(v, -128, 127)  as int8

Every other implementation (the gateware, the host's software inference, accuracy figures)
must agree with :func:`ternary_layer` exactly. Pure NumPy; imports without Amaranth.

Speed: the matrix product runs through a floating-point BLAS where that is provably exact.
All operands are integers, and every partial sum of ``w[j, k] * x[k]`` over any subset of
``k`` (so in any summation order a BLAS may choose, with or without FMA) is bounded by
``128 * K``. float32 represents every integer up to ``2**24`` exactly, so the product is exact
in float32 when ``128 * K <= 2**24`` (``K <= 131072``, more than :data:`MAX_FAN_IN`); float64
covers anything larger. The result is converted back to int64 before bias and rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trine.contract.errors import FormatError
from trine.contract.spec import (
    ACT_MAX,
    ACT_MIN,
    BIAS_MAX,
    BIAS_MIN,
    MAX_FAN_IN,
    SHIFT_MAX,
    as_trits,
)

__all__ = ["Layer", "ternary_matmul", "rounding_constant", "shift_inplace", "saturate",
           "requantize_inplace", "requantize", "ternary_layer", "run_network"]

_F32_EXACT_LIMIT = 1 << 24  # every integer of magnitude <= 2**24 is a float32


def _check_activations(x, fan_in: int | None = None, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise FormatError(f"{name} must be an integer array (int8 activations), "
                          f"not dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise FormatError(f"{name} must have shape (K,) or (N, K), not {a.shape}")
    if a.dtype != np.int8:
        bad = (a < ACT_MIN) | (a > ACT_MAX)
        if bad.any():
            i = np.argwhere(bad)[0]
            pos = int(i[0]) if a.ndim == 1 else tuple(int(v) for v in i)
            raise FormatError(
                f"{name} must be in [{ACT_MIN}, {ACT_MAX}]: value {int(a[tuple(i)])} at {pos}"
            )
    if fan_in is not None and a.shape[-1] != fan_in:
        raise FormatError(f"{name} has {a.shape[-1]} inputs per sample, the weights expect "
                          f"{fan_in}")
    return a


@dataclass(frozen=True, eq=False)
class Layer:
    """One ternary layer: ``weights`` (M x K, trits), ``bias`` (M, int32), ``shift``, ``relu``.

    Validated at construction; the arrays are stored read-only as ``int8`` / ``int64``.

    Raises
    ------
    ValueError
        For non-ternary weights, a bias of the wrong length or outside int32, a shift outside
        ``[0, 31]``, or a fan-in outside ``[1, MAX_FAN_IN]``.
    """

    weights: np.ndarray
    bias: np.ndarray
    shift: int = 0
    relu: bool = False
    _f32: np.ndarray | None = field(default=None, repr=False, compare=False)
    _bias_rounded: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        w = as_trits(self.weights, "weights")
        if w.ndim != 2 or w.shape[0] < 1:
            raise FormatError(f"weights must have shape (M, K) with M >= 1, not {w.shape}")
        m, k = w.shape
        if not 1 <= k <= MAX_FAN_IN:
            raise FormatError(f"fan-in K = {k} is outside the supported range [1, {MAX_FAN_IN}]")
        b = np.asarray(self.bias)
        if b.dtype.kind not in "iu":
            if b.dtype.kind == "f" and np.all(np.isfinite(b)) and np.all(b == np.rint(b)):
                b = b.astype(np.int64)
            else:
                raise FormatError(f"bias must be integers, not dtype {b.dtype}")
        if b.shape != (m,):
            raise FormatError(f"bias must have shape ({m},) to match {m} outputs, not {b.shape}")
        b = b.astype(np.int64)
        bad = (b < BIAS_MIN) | (b > BIAS_MAX)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FormatError(f"bias must fit in int32: value {int(b[i])} at {i}")
        shift = self.shift
        if isinstance(shift, bool) or not isinstance(shift, int | np.integer):
            raise FormatError(f"shift must be an integer in [0, {SHIFT_MAX}], not {shift!r}")
        if not 0 <= shift <= SHIFT_MAX:
            raise FormatError(f"shift must be in [0, {SHIFT_MAX}], not {shift}")
        if not isinstance(self.relu, bool | np.bool_):
            raise FormatError(f"relu must be a bool, not {self.relu!r}")
        w = w.copy()
        w.setflags(write=False)
        b.setflags(write=False)
        # Stored as the transpose of a C-ordered (M, K) array: the fastest layout for BLAS here.
        f32 = w.astype(np.float32 if 128 * k <= _F32_EXACT_LIMIT else np.float64).T
        f32.setflags(write=False)
        # Requantisation in int32 when |acc + bias + rounding| provably fits, else int64.
        half = rounding_constant(shift)
        fits32 = 128 * k + int(np.abs(b).max()) + half < (1 << 31)
        bias_rounded = (b + half).astype(np.int32 if fits32 else np.int64)
        bias_rounded.setflags(write=False)
        object.__setattr__(self, "_bias_rounded", bias_rounded)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "shift", int(shift))
        object.__setattr__(self, "relu", bool(self.relu))
        object.__setattr__(self, "_f32", f32)

    @property
    def fan_in(self) -> int:
        return self.weights.shape[1]

    @property
    def fan_out(self) -> int:
        return self.weights.shape[0]

    def __call__(self, x) -> np.ndarray:
        return ternary_layer(x, self)


def _layer_forward(x: np.ndarray, layer: Layer) -> np.ndarray:
    """:func:`requantize` fused with the matmul, in place, in the narrowest exact integer type."""
    v = np.matmul(x.astype(layer._f32.dtype), layer._f32).astype(layer._bias_rounded.dtype)
    v += layer._bias_rounded
    return requantize_inplace(v, layer.shift, layer.relu).astype(np.int8)


def _matmul_exact(x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``x @ wt`` for int8 ``x`` and a float copy ``wt`` (K x M) of ternary weights, as int64."""
    return np.matmul(x.astype(wt.dtype), wt).astype(np.int64)


def ternary_matmul(x, w) -> np.ndarray:
    """``acc = x @ w.T`` exactly, as int64 (the MAC array's output, before requantisation)."""
    layer = w if isinstance(w, Layer) else Layer(w, np.zeros(np.shape(w)[0], np.int64))
    a = _check_activations(x, layer.fan_in)
    return _matmul_exact(a, layer._f32)


def rounding_constant(shift: int) -> int:
    """What the requantiser adds before its shift so that the shift rounds half up."""
    return (1 << (shift - 1)) if shift > 0 else 0


def shift_inplace(v: np.ndarray, shift: int) -> np.ndarray:
    """The requantiser's shift of ``v = acc + bias + rounding_constant(shift)`` (a signed
    integer array), in place: ``>>`` on a signed integer is floor division, so this is
    ``floor((acc + bias + 2**(shift-1)) / 2**shift)``, round half up. Returns ``v``."""
    if shift:
        v >>= shift
    return v


def saturate(v: np.ndarray, relu: bool) -> np.ndarray:
    """ReLU (if ``relu``) and int8 saturation of a signed integer array, in place; ``v``."""
    np.maximum(v, 0 if relu else ACT_MIN, out=v)  # ReLU and the lower clip in one pass
    np.minimum(v, ACT_MAX, out=v)
    return v


def requantize_inplace(v: np.ndarray, shift: int, relu: bool) -> np.ndarray:
    """:func:`requantize` of ``v = acc + bias + rounding_constant(shift)``, in place, in
    ``v``'s own integer type (the caller's proof that it cannot overflow); returns ``v``."""
    return saturate(shift_inplace(v, shift), relu)


def requantize(acc, bias, shift: int, relu: bool) -> np.ndarray:
    """Bias, round-half-up arithmetic shift, optional ReLU and int8 saturation (integer only)."""
    v = np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64)
    v += rounding_constant(shift)
    return requantize_inplace(v, shift, relu).astype(np.int8)


def ternary_layer(x, w, bias=None, shift: int = 0, relu: bool = False) -> np.ndarray:
    """One ternary layer, exactly as the hardware computes it.

    Parameters
    ----------
    x : int array, shape (K,) or (N, K), values in [-128, 127]
    w : trits, shape (M, K), or a :class:`Layer` (then ``bias``, ``shift``, ``relu`` are taken
        from it and must not be given)
    bias : int array, shape (M,), int32 range
    shift : int in [0, 31]
    relu : bool

    Returns
    -------
    np.ndarray of int8, shape (M,) or (N, M)

    Raises
    ------
    ValueError
        For any argument outside the ranges above, naming it.
    """
    if isinstance(w, Layer):
        if bias is not None:
            raise FormatError("give either a Layer or weights with bias/shift/relu, not both")
        layer = w
    else:
        if bias is None:
            raise FormatError("bias is required with raw weights (use zeros for none)")
        layer = Layer(w, bias, shift, relu)
    return _layer_forward(_check_activations(x, layer.fan_in), layer)


def run_network(x, layers: Sequence[Layer]) -> np.ndarray:
    """Run ``layers`` in order on one input ``(K,)`` or a batch ``(N, K)``; returns int8.

    Raises ``ValueError`` if the list is empty, an element is not a :class:`Layer`, or the
    width of one layer's output is not the next layer's fan-in.
    """
    if len(layers) == 0:
        raise FormatError("a network needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise FormatError(f"layer {i} must be a trine.contract.reference.Layer, not "
                             f"{type(layer).__name__}")
        if i and layer.fan_in != layers[i - 1].fan_out:
            raise FormatError(
                f"layer {i} expects {layer.fan_in} inputs but layer {i - 1} has "
                f"{layers[i - 1].fan_out} outputs"
            )
    y = _check_activations(x, layers[0].fan_in)
    for layer in layers:
        y = _layer_forward(y, layer)
    return y
