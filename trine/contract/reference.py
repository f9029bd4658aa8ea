"""The executable definition of what trine hardware computes (normative, integer only).

For one layer, with int8 activations ``x`` (shape ``(K,)`` or ``(N, K)``), ternary weights
``w`` (``(M, K)``), int32 ``bias`` (``(M,)``), ``shift`` in ``[0, 31]`` and ``relu``::

    acc[j] = sum_k w[j, k] * x[k]                 # exact integer
    v      = acc + bias
    if shift > 0: v = floor((v + 2**(shift-1)) / 2**shift)   # round half up
    if relu:      v = max(v, 0)
    y      = clip(v, -128, 127)  as int8

Ternary activations (a per-layer option, ``ternary_threshold=t`` with ``t`` an integer in
``[1, 127]``; ``None``, the default, keeps int8 outputs): the int8 ``y`` above becomes a trit::

    y_t = +1 if y >= t,  -1 if y <= -t,  else 0          (int8 array of -1 / 0 / +1)

(:func:`ternarize`). Since ``1 <= t <= 127``, comparing the clipped ``y`` or the unclipped
``v`` gives the same trit, so the device can compare the requantiser's int8 result. With
``relu`` the trits are 0 or +1. The next layer receives these trits and computes the same
integer dot product (trits times trits, ``|acc| <= K``); nothing else about a layer changes
with what its input is. A network may mix both kinds (e.g. an int8 input layer, ternary
hidden layers and an int8 output layer for the logits).

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
    TERNARY_THRESHOLD_MAX,
    TERNARY_THRESHOLD_MIN,
    as_trits,
)

__all__ = ["Layer", "Dense", "Conv", "MaxPool", "Flatten", "im2col", "ternary_matmul",
           "rounding_constant",
           "shift_inplace", "saturate", "requantize_inplace", "requantize", "ternary_layer",
           "ternarize", "check_ternary_threshold",
           "run_network"]

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
    """One ternary layer: ``weights`` (M x K, trits), ``bias`` (M, int32), ``shift``, ``relu``,
    and (keyword only) ``ternary_threshold``: ``None`` for int8 outputs, or ``t`` in
    ``[1, 127]`` for ternary outputs (:func:`ternarize` of the int8 result).

    Validated at construction; the arrays are stored read-only as ``int8`` / ``int64``.

    Raises
    ------
    ValueError
        For non-ternary weights, a bias of the wrong length or outside int32, a shift outside
        ``[0, 31]``, a fan-in outside ``[1, MAX_FAN_IN]``, or a ternary threshold that is
        not ``None`` or an integer in ``[1, 127]``.
    """

    weights: np.ndarray
    bias: np.ndarray
    shift: int = 0
    relu: bool = False
    _bias_rounded: np.ndarray | None = field(default=None, repr=False, compare=False)
    ternary_threshold: int | None = field(default=None, kw_only=True)

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
        threshold = check_ternary_threshold(self.ternary_threshold)
        if w.flags.writeable or w.base is not None and w.base.flags.writeable:
            w = w.copy()  # a read-only array (a file's trits) is kept as it is: no copy
        w.setflags(write=False)
        b.setflags(write=False)
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
        object.__setattr__(self, "ternary_threshold", threshold)

    @property
    def ternary_output(self) -> bool:
        """Whether the outputs are trits (``ternary_threshold`` is set) rather than int8."""
        return self.ternary_threshold is not None

    @property
    def _f32(self) -> np.ndarray:
        """The trits as floats for the exact BLAS path, the transpose of a C-ordered (M, K)
        array (the fastest layout here); made on first use, so that a loaded program holds
        its trits once until it runs."""
        cached = self.__dict__.get("_f32_cache")
        if cached is None:
            k = self.weights.shape[1]
            cached = self.weights.astype(np.float32 if 128 * k <= _F32_EXACT_LIMIT
                                         else np.float64).T
            cached.setflags(write=False)
            object.__setattr__(self, "_f32_cache", cached)
        return cached

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
    y = requantize_inplace(v, layer.shift, layer.relu)
    if layer.ternary_threshold is not None:
        return ternarize(y, layer.ternary_threshold)
    return y.astype(np.int8)


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


def check_ternary_threshold(threshold, name: str = "ternary_threshold") -> int | None:
    """``threshold`` as ``None`` or an ``int`` in ``[1, 127]``, or :class:`FormatError`."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
        raise FormatError(f"{name} must be None (int8 outputs) or an integer in "
                          f"[{TERNARY_THRESHOLD_MIN}, {TERNARY_THRESHOLD_MAX}], not {threshold!r}")
    if not TERNARY_THRESHOLD_MIN <= threshold <= TERNARY_THRESHOLD_MAX:
        raise FormatError(f"{name} must be in [{TERNARY_THRESHOLD_MIN}, "
                          f"{TERNARY_THRESHOLD_MAX}] (None for int8 outputs), not {threshold}")
    return int(threshold)


def ternarize(y, threshold: int) -> np.ndarray:
    """The ternary activation of requantised values ``y`` (normative)::

        +1 if y >= t,   -1 if y <= -t,   0 otherwise

    with ``t = threshold`` in ``[1, 127]``. ``y`` is the int8 result of :func:`requantize`
    (any integer array gives the same trits as its int8 clip, because ``1 <= t <= 127``).
    Returns int8 trits of ``y``'s shape.

    Raises
    ------
    FormatError
        For a threshold outside ``[1, 127]``.
    """
    t = check_ternary_threshold(threshold, "threshold")
    if t is None:
        raise FormatError("threshold must be an integer in "
                          f"[{TERNARY_THRESHOLD_MIN}, {TERNARY_THRESHOLD_MAX}], not None")
    y = np.asarray(y)
    return ((y >= t).astype(np.int8) - (y <= -t).astype(np.int8))


def ternary_layer(x, w, bias=None, shift: int = 0, relu: bool = False, *,
                  ternary_threshold: int | None = None) -> np.ndarray:
    """One ternary layer, exactly as the hardware computes it.

    Parameters
    ----------
    x : int array, shape (K,) or (N, K), values in [-128, 127]
    w : trits, shape (M, K), or a :class:`Layer` (then ``bias``, ``shift``, ``relu`` are taken
        from it and must not be given)
    bias : int array, shape (M,), int32 range
    shift : int in [0, 31]
    relu : bool
    ternary_threshold : None or int in [1, 127]
        ``None``: int8 outputs; else trits, :func:`ternarize` of them.

    Returns
    -------
    np.ndarray of int8, shape (M,) or (N, M); values in {-1, 0, +1} for ternary outputs

    Raises
    ------
    ValueError
        For any argument outside the ranges above, naming it.
    """
    if isinstance(w, Layer):
        if bias is not None or ternary_threshold is not None:
            raise FormatError("give either a Layer or weights with bias/shift/relu/"
                              "ternary_threshold, not both")
        layer = w
    else:
        if bias is None:
            raise FormatError("bias is required with raw weights (use zeros for none)")
        layer = Layer(w, bias, shift, relu, ternary_threshold=ternary_threshold)
    return _layer_forward(_check_activations(x, layer.fan_in), layer)


#: The dense layer under its other name (``Layer`` is what the MLP-era code calls it).
Dense = Layer


def _per_axis(value, name: str, minimum: int, ndim: int) -> tuple[int, ...]:
    """``value`` (an int, or one int per spatial axis) as one int per spatial axis."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        values = (int(value),) * ndim
    elif (isinstance(value, tuple | list) and len(value) == ndim
          and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)):
        values = tuple(int(v) for v in value)
    else:
        raise FormatError(f"{name} must be an integer or {ndim} integers, not {value!r}")
    if any(v < minimum for v in values):
        raise FormatError(f"{name} must be >= {minimum}, not {value!r}")
    return values


@dataclass(frozen=True, eq=False)
class Conv:
    """A ternary convolution, 1-D or 2-D, with zero padding; requantised like a dense layer.

    ``weights`` are trits of shape ``(C_out, C_in, k)`` (Conv1d) or ``(C_out, C_in, kh, kw)``
    (Conv2d). On an input ``x`` of shape ``(C_in, L)`` (or ``(C_in, H, W)``), zero outside
    ``[0, L)``::

        L_out = (L + 2 p - k) // s + 1
        acc[o, q] = sum_{c, t} w[o, c, t] * x[c, q * s + t - p]

    and in 2-D the same over ``(kh, kw)``, ``(sh, sw)``, ``(ph, pw)``; then exactly the dense
    layer's requantisation (bias, round-half-up shift, ReLU, int8 clip) per output. ``stride``
    and ``padding`` are an int or one per spatial axis.

    Members
    -------
    ndim : 1 or 2
    kernel, stride, padding : tuple of ndim ints
    dense : Layer
        The same weights as a dense layer of fan-in ``C_in * prod(kernel)``, in C order
        (``c`` slowest, then the kernel's axes): what each output position computes.

    Raises
    ------
    FormatError
        For weights of another rank, a stride below 1, a negative padding, and everything
        :class:`Layer` refuses (bias, shift, fan-in), naming it.
    """

    weights: np.ndarray
    bias: np.ndarray
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    shift: int = 0
    relu: bool = False
    dense: Layer | None = field(default=None, repr=False, compare=False)
    ternary_threshold: int | None = field(default=None, kw_only=True)

    def __post_init__(self):
        w = as_trits(self.weights, "weights")
        if w.ndim not in (3, 4) or w.shape[0] < 1 or w.shape[1] < 1 or 0 in w.shape:
            raise FormatError(f"conv weights must have shape (C_out, C_in, k) or (C_out, C_in, "
                              f"kh, kw) with every size >= 1, not {w.shape}")
        ndim = w.ndim - 2
        stride = _per_axis(self.stride, "stride", 1, ndim)
        padding = _per_axis(self.padding, "padding", 0, ndim)
        dense = Layer(w.reshape(w.shape[0], -1), self.bias, self.shift, self.relu,
                      ternary_threshold=self.ternary_threshold)
        w = dense.weights.reshape(w.shape)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", dense.bias)
        object.__setattr__(self, "shift", dense.shift)
        object.__setattr__(self, "relu", dense.relu)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "dense", dense)
        object.__setattr__(self, "ternary_threshold", dense.ternary_threshold)

    @property
    def ternary_output(self) -> bool:
        """Whether the outputs are trits (``ternary_threshold`` is set) rather than int8."""
        return self.ternary_threshold is not None

    @property
    def ndim(self) -> int:
        return self.weights.ndim - 2

    @property
    def kind(self) -> str:
        return f"Conv{self.ndim}d"

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
    def fan_in(self) -> int:
        """Inputs of one output: ``C_in * prod(kernel)``."""
        return self.dense.fan_in

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output's ``(C_out, *spatial)`` for an input of ``shape`` ``(C_in, *spatial)``.

        Raises
        ------
        FormatError
            For an input of another rank or channel count, or a kernel larger than its
            padded input.
        """
        if len(shape) != self.ndim + 1:
            raise FormatError(f"{self.kind} needs an input of shape {_SHAPES[self.ndim]}, not "
                              f"{shape}")
        if shape[0] != self.in_channels:
            raise FormatError(f"{self.kind} expects {self.in_channels} input channels, not "
                              f"{shape[0]}")
        out = [self.out_channels]
        for axis, (n, k, s, p) in enumerate(zip(shape[1:], self.kernel, self.stride,
                                                self.padding, strict=True)):
            if k > n + 2 * p:
                what = "length" if self.ndim == 1 else ("height", "width")[axis]
                raise FormatError(f"{self.kind} kernel {k} is larger than its padded input "
                                  f"{what} {n + 2 * p} ({n} + 2 x {p})")
            out.append((n + 2 * p - k) // s + 1)
        return tuple(out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The layer on int8 activations ``(N, C_in, *spatial)``; int8 ``(N, C_out, ...)``."""
        out_shape = self.output_shape(x.shape[1:])
        n = x.shape[0]
        cols = im2col(x, self.kernel, self.stride, self.padding, self.dense._f32.dtype)
        v = np.matmul(cols, self.dense._f32).astype(self.dense._bias_rounded.dtype)
        v += self.dense._bias_rounded
        y = requantize_inplace(v, self.shift, self.relu)
        y = (ternarize(y, self.ternary_threshold) if self.ternary_threshold is not None
             else y.astype(np.int8))
        # (N * positions, C_out) -> (N, C_out, *spatial)
        y = y.reshape(n, *out_shape[1:], self.out_channels)
        return np.ascontiguousarray(np.moveaxis(y, -1, 1))


_SHAPES = {1: "(C, L)", 2: "(C, H, W)"}


def im2col(x: np.ndarray, kernel, stride, padding, dtype) -> np.ndarray:
    """The windows of ``x`` (N, C, *spatial), zero padded, as rows ``(N * positions,
    C * prod(kernel))`` in C order of ``(c, kernel axes)``, in the float type ``dtype``."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    pad = [(0, 0), (0, 0)] + [(p, p) for p in padding]
    xp = np.pad(x.astype(dtype), pad)
    windows = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=tuple(range(2, xp.ndim)))
    windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    out = tuple((size + 2 * p - k) // s + 1
                for size, k, s, p in zip(spatial, kernel, stride, padding, strict=True))
    windows = windows[(slice(None), slice(None), *(slice(0, o) for o in out))]
    # (N, C, *out, *kernel) -> (N, *out, C, *kernel)
    windows = np.moveaxis(windows, 1, 1 + len(out))
    return windows.reshape(n * int(np.prod(out)), c * int(np.prod(kernel)))


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling with kernel = stride (non-overlapping windows), 1-D or 2-D, over int8.

    ``kernel`` is an int (1-D), or a pair ``(kh, kw)`` (2-D); ``ndim`` says which when
    ``kernel`` is a single int for a 2-D pool (``MaxPool(2, ndim=2)`` pools 2 x 2). The
    windows must tile the input exactly.

    Raises
    ------
    FormatError
        For a kernel below 1 or of the wrong length.
    """

    kernel: int | tuple[int, ...]
    ndim: int = 0

    def __post_init__(self):
        ndim = self.ndim or (len(self.kernel) if isinstance(self.kernel, tuple | list) else 1)
        if ndim not in (1, 2):
            raise FormatError(f"MaxPool pools 1 or 2 spatial axes, not {ndim}")
        kernel = _per_axis(self.kernel, "pool kernel", 1, ndim)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "ndim", ndim)

    @property
    def kind(self) -> str:
        return f"MaxPool{self.ndim}d"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != self.ndim + 1:
            raise FormatError(f"{self.kind} needs an input of shape {_SHAPES[self.ndim]}, not "
                              f"{shape}")
        for n, k in zip(shape[1:], self.kernel, strict=True):
            if n % k:
                raise FormatError(f"{self.kind} window {k} does not divide the input size {n}")
        return (shape[0], *(n // k for n, k in zip(shape[1:], self.kernel, strict=True)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.output_shape(x.shape[1:])
        split = [x.shape[0], x.shape[1]]
        for o, k in zip(out[1:], self.kernel, strict=True):
            split += [o, k]
        return x.reshape(split).max(axis=tuple(range(3, len(split), 2)))


@dataclass(frozen=True)
class Flatten:
    """``(C, L)`` or ``(C, H, W)`` to one axis, in C order (PyTorch's ``flatten(1)``)."""

    @property
    def kind(self) -> str:
        return "Flatten"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(shape)),)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)


def run_network(x, layers, input_shape=None) -> np.ndarray:
    """:func:`trine.contract.network.run_network`, where the MLP-era callers look for it."""
    from trine.contract.network import run_network as run

    return run(x, layers, input_shape)
