"""Linear regions of a network's real-valued function, counted exactly on a line or a plane.

A ReLU network is piecewise linear; the number of pieces it cuts its input into measures its
expressivity. This module counts them exactly (no sampling) on a segment
``x(t) = a + t (b - a)``, ``t`` in ``[0, 1]``, and in a 2-D slice ``x(u, v) = a + u d1 + v d2``,
``(u, v)`` in ``[-R, R]^2``, by walking the network layer by layer: every piece carries the
affine map from ``t`` (or ``(u, v)``) to the current layer's values, each ReLU neuron splits a
piece where its pre-activation crosses zero (an interval at its root, a convex polygon along
its zero line), and a max-pool splits where the maximum of its window changes hands.

The function counted
--------------------
For a :class:`~trine.host.program.Program` it is the integer path's real-valued counterpart on
the program's int8 input *values* taken as reals (the input before ``input_scale``
quantisation; a positive input scale does not change any count)::

    y_0 = x,   y_l = relu?((W_l y_{l-1} + b_l) / 2**shift_l)

with the layer's trits ``W_l``, integer bias ``b_l`` and its ``relu`` flag; convolutions are
their (linear) matrices, max-pooling is the maximum of each window, flatten is the identity on
the C-order vector. What the device adds is left out: the half-up rounding after each shift
and the int8 clip. For an ONNX model (:func:`trine.host.onnx_import.read_onnx_network`) it is
the float network the file computes, before any ternarisation (a QONNX model's dequantised
weights, without its activation quantisers), or with calibration inputs the program trine's
importer makes of it (:func:`from_onnx`). :func:`random_network` builds ternary (trits times
a per-layer scale) or Gaussian float networks with Gaussian biases.

Two counts
----------
``activation_regions``: the pieces on which the activation pattern is constant (which ReLUs are
on, ``z > 0``, and which input wins each pooling window, the first on a tie). A pattern's set
of inputs is convex, so on a segment these are intervals and in a slice convex polygons.

``regions``: the *linear regions* the segment or slice meets: maximal connected unions of
activation regions on which the network's output is one affine map of the whole input space
(``x -> J x + c``, every output). Two adjacent activation regions merge when their maps are the
same, which happens when the neuron that switches between them does not reach the output (a
zero outgoing trit, a dead neuron downstream) or its effects cancel. ``regions <=
activation_regions``; for networks with generic float weights they are equal. Because the
network is continuous, two adjacent pieces have the same affine map exactly when they have the
same linear part ``J``; ``J`` is compared through ``J D`` for the identity ``D`` on inputs of
at most 4 values and for 4 fixed Gaussian directions ``D`` on wider ones (equal ``J`` give
equal ``J D``; different ones differ with probability 1).

Arithmetic is float64. Roots and crossings are computed from each piece's affine map;
a neuron whose pre-activation changes sign by less than ``1e-9`` of its magnitude on a piece
does not split it, splits closer than ``1e-12`` (in ``t``, or ``1e-12 R`` in the plane) to a
piece's end are not made, and two linear parts are the same when they agree to ``1e-9`` of
the largest coefficient. A ternary program's coefficients are dyadic, exact in float64; the
roots are rational and rounded once, and the tests check every breakpoint of such programs
against the same walk in exact rational arithmetic. In the
plane, faces of one map are grouped by rounding ``J D`` to ``1e-7`` of its largest value and
joined when they share an edge.

Bounded work: ``limit`` caps the number of pieces (intervals or polygons) at any point of the
walk; past it :class:`TooManyRegionsError` is raised, never unbounded memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.errors import TrineError
from trine.contract.network import network_shapes
from trine.contract.reference import Conv, Flatten, Layer, MaxPool, im2col
from trine.contract.spec import ACT_MAX, ACT_MIN

__all__ = [
    "RegionsError",
    "TooManyRegionsError",
    "DEFAULT_LIMIT",
    "PLNetwork",
    "from_program",
    "from_onnx",
    "from_float_layers",
    "random_network",
    "LineRegions",
    "SliceRegions",
    "count_line",
    "count_slice",
    "random_chord",
    "random_plane",
    "sample_line_patterns",
    "sample_slice_patterns",
    "general_lower_bound",
    "sawtooth_program",
]

#: Most pieces a count may hold at once unless told otherwise.
DEFAULT_LIMIT = 200_000
_ZTOL = 1e-9      # relative: a sign change smaller than this does not split
_TTOL = 1e-12     # in t (or in units of R): no split this close to a piece's end
_MAPTOL = 1e-9    # relative: two affine maps equal to this are the same
_CHUNK_BYTES = 64 << 20
_PROBES = 4        # directions the affine maps are compared along
_PROBE_SEED = 20260715


class RegionsError(TrineError, ValueError):
    """A network, segment or slice that cannot be counted as given."""


class TooManyRegionsError(RegionsError):
    """The count would need more pieces than its ``limit``."""


# ---- the network ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Affine:
    """``z = W y + b`` on flat vectors (dense) or a convolution on C-order ``(C, *spatial)``."""

    matrix: np.ndarray            # (M, K) dense, or (C_out, C_in * prod(kernel)) conv
    bias: np.ndarray              # (out_width,), already expanded over positions for a conv
    relu: bool
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()

    def linear(self, y: np.ndarray) -> np.ndarray:
        """``W y`` for rows ``y`` (N, in_width): (N, out_width)."""
        if not self.kernel:
            return y @ self.matrix.T
        n = y.shape[0]
        cols = im2col(y.reshape(n, *self.in_shape), self.kernel, self.stride, self.padding,
                      np.float64)
        v = (cols @ self.matrix.T).reshape(n, *self.out_shape[1:], self.out_shape[0])
        return np.moveaxis(v, -1, 1).reshape(n, -1)


@dataclass(frozen=True, eq=False)
class _Pool:
    """Max over windows: output ``o`` is the max of flat inputs ``index[o]``."""

    index: np.ndarray             # (out_width, window) into the flat input


def _pool_index(shape: tuple[int, ...], kernel: tuple[int, ...]) -> np.ndarray:
    idx = np.arange(math.prod(shape)).reshape(shape)
    split = [shape[0]]
    for n, k in zip(shape[1:], kernel, strict=True):
        split += [n // k, k]
    idx = idx.reshape(split)
    outer = [0, *range(1, len(split), 2)]
    inner = list(range(2, len(split), 2))
    return idx.transpose(outer + inner).reshape(-1, math.prod(kernel))


@dataclass(frozen=True, eq=False)
class PLNetwork:
    """A piecewise-linear network on flat input vectors, ready to be counted.

    Members
    -------
    ops : tuple
        The layers on flat vectors (affine maps with or without ReLU, max-pools).
    input_shape : tuple of int
    box : (float, float)
        The input range every coordinate is taken from for a default (random) segment or
        slice: ``(-128, 127)`` for a program, ``(-1, 1)`` otherwise.
    source : str
        What the network is, for messages and JSON.
    """

    ops: tuple
    input_shape: tuple[int, ...]
    box: tuple[float, float]
    source: str

    @property
    def input_width(self) -> int:
        return math.prod(self.input_shape)

    @property
    def neurons(self) -> int:
        """ReLU units: the outputs of the layers with a ReLU."""
        return sum(op.bias.size for op in self.ops if isinstance(op, _Affine) and op.relu)

    def forward(self, x: Any) -> np.ndarray:
        """The real-valued function on rows ``x`` (N, input_width): float64 (N, outputs)."""
        y = np.atleast_2d(np.asarray(x, np.float64))
        for op in self.ops:
            if isinstance(op, _Pool):
                y = y[:, op.index].max(axis=2)
            else:
                y = op.linear(y) + op.bias
                if op.relu:
                    y = np.maximum(y, 0.0)
        return y

    def patterns(self, x: np.ndarray) -> np.ndarray:
        """The activation pattern of each row of ``x``: uint8 (N, bytes), bits packed."""
        y = np.atleast_2d(np.asarray(x, np.float64))
        bits = []
        for op in self.ops:
            if isinstance(op, _Pool):
                g = y[:, op.index]
                arg = g.argmax(axis=2)
                y = np.take_along_axis(g, arg[:, :, None], 2)[:, :, 0]
                for j in range(op.index.shape[1]):
                    bits.append(arg == j)
            else:
                z = op.linear(y) + op.bias
                if op.relu:
                    on = z > _ZTOL * (np.abs(z).max(axis=1, keepdims=True) + 1e-300)
                    bits.append(on)
                    y = np.where(on, z, 0.0)
                else:
                    y = z
        if not bits:
            return np.zeros((len(y), 1), np.uint8)
        return np.packbits(np.concatenate(bits, axis=1), axis=1)

    def jacobians(self, x: Any, probes: int | None = None) -> np.ndarray:
        """The linear part ``J`` of the affine map the network is at each row of ``x``, as
        ``J D`` (N, outputs, r).

        ``D`` is the identity (``r = K``) for inputs of at most :data:`_PROBES` values or with
        ``probes=0``, else ``probes`` (default :data:`_PROBES`) fixed Gaussian directions:
        two maps with the same ``J D`` have the same ``J`` with probability 1, at a fraction
        of the cost of the whole Jacobian. Two *adjacent* activation regions with the same
        ``J`` have the same affine map (the network is continuous, so both maps agree on
        the boundary they share). Computed in chunks so that memory stays bounded.
        """
        x = np.atleast_2d(np.asarray(x, np.float64))
        k = self.input_width
        r = _PROBES if probes is None else probes
        if r == 0 or k <= r:
            d = np.eye(k)
        else:
            d = np.random.default_rng(_PROBE_SEED).normal(size=(k, r))
        r = d.shape[1]
        widest = max([k, *(op.bias.size for op in self.ops if isinstance(op, _Affine))])
        chunk = max(1, _CHUNK_BYTES // (8 * (r + 1) * widest))
        out = []
        for s in range(0, len(x), chunk):
            xs = x[s:s + chunk]
            n = len(xs)
            # rows: each point's value, then the derivatives along the columns of D
            v = np.concatenate([xs[:, None, :], np.broadcast_to(d.T, (n, r, k))], axis=1)
            for op in self.ops:
                if isinstance(op, _Pool):
                    arg = v[:, 0, op.index].argmax(axis=2)
                    src = op.index[np.arange(op.index.shape[0])[None, :], arg]   # (n, out)
                    v = np.take_along_axis(v, np.broadcast_to(src[:, None, :],
                                                              (n, r + 1, src.shape[1])), 2)
                else:
                    w = op.linear(v.reshape(n * (r + 1), -1)).reshape(n, r + 1, -1)
                    w[:, 0] += op.bias
                    if op.relu:
                        z = w[:, 0]
                        on = z > _ZTOL * (np.abs(z).max(axis=1, keepdims=True) + 1e-300)
                        w = w * on[:, None, :]
                    v = w
            out.append(np.swapaxes(v[:, 1:], 1, 2))
        return np.concatenate(out)


def _as_affine(w: np.ndarray, b: np.ndarray, relu: bool, in_shape, out_shape, conv=None
               ) -> _Affine:
    w = np.asarray(w, np.float64)
    b = np.asarray(b, np.float64)
    if conv is None:
        return _Affine(w, b, bool(relu), tuple(in_shape), tuple(out_shape))
    kernel, stride, padding = conv
    positions = math.prod(out_shape[1:])
    return _Affine(w.reshape(w.shape[0], -1), np.repeat(b, positions), bool(relu),
                   tuple(in_shape), tuple(out_shape), tuple(kernel), tuple(stride),
                   tuple(padding))


def _ops_from(layers: Sequence, shapes: list[tuple[int, ...]], affine) -> tuple:
    ops: list = []
    for layer, shape_in, shape_out in zip(layers, shapes[:-1], shapes[1:], strict=True):
        if isinstance(layer, MaxPool):
            ops.append(_Pool(_pool_index(shape_in, layer.kernel)))
        elif isinstance(layer, Flatten):
            continue
        else:
            ops.append(affine(layer, shape_in, shape_out))
    return tuple(ops)


def from_program(program: Any, source: str = "program") -> PLNetwork:
    """The real-valued function of a :class:`~trine.host.program.Program` (see the module
    docstring): trits and biases over ``2**shift``, ReLU, no rounding and no clip."""
    def affine(layer, shape_in, shape_out):
        s = 2.0 ** -layer.shift
        w = layer.weights.astype(np.float64) * s
        b = layer.bias.astype(np.float64) * s
        if isinstance(layer, Conv):
            return _as_affine(w, b, layer.relu, shape_in, shape_out,
                              (layer.kernel, layer.stride, layer.padding))
        return _as_affine(w, b, layer.relu, shape_in, shape_out)

    shapes = network_shapes(program.layers, program.input_shape)
    return PLNetwork(_ops_from(program.layers, shapes, affine), tuple(program.input_shape),
                     (float(ACT_MIN), float(ACT_MAX)), source)


def from_float_layers(layers: Sequence, input_shape: Sequence[int] | None = None,
                      source: str = "float network") -> PLNetwork:
    """A float network in the layer format of :mod:`trine.host.ternarize` (``(W, b, relu)``
    tuples, :class:`~trine.host.ternarize.FloatConv`, ``MaxPool``, ``Flatten``)."""
    from trine.host.ternarize import FloatConv, _check_float_layers, _network_shapes

    layers = _check_float_layers(layers)
    shapes = _network_shapes(layers, input_shape)

    def affine(layer, shape_in, shape_out):
        if isinstance(layer, FloatConv):
            return _as_affine(layer.weights, layer.bias, layer.relu, shape_in, shape_out,
                              (layer.kernel, layer.stride, layer.padding))
        w, b, relu = layer
        return _as_affine(w, b, relu, shape_in, shape_out)

    return PLNetwork(_ops_from(layers, shapes, affine), tuple(shapes[0]), (-1.0, 1.0), source)


def from_onnx(path: str | os.PathLike[str], calibration_x: Any = None) -> PLNetwork:
    """An ONNX model's network.

    Without ``calibration_x``: the float network the file computes
    (:func:`~trine.host.onnx_import.read_onnx_network`), before ternarisation, its input range
    for default segments ``(-1, 1)``. With it: the program trine's importer makes of it on
    those calibration inputs (:func:`~trine.host.onnx_import.import_onnx`, its defaults), as
    :func:`from_program` counts it (int8 input units, the int8 box).
    """
    if calibration_x is not None:
        from trine.host.onnx_import import import_onnx

        program = import_onnx(path, calibration_x)
        return from_program(program, source=f"{os.fspath(path)} (imported)")
    from trine.host.onnx_import import read_onnx_network

    net = read_onnx_network(path, read_labels=False)
    return from_float_layers(list(net.layers), net.input_shape, source=os.fspath(path))


def random_network(widths: Sequence[int], *, ternary: bool = True, sparsity: float = 0.5,
                   scale: float | None = None, bias_std: float = 1.0, alternate: bool = False,
                   seed: int = 0) -> PLNetwork:
    """A random dense network ``widths[0] -> ... -> widths[-1]``, ReLU on every hidden layer
    (with ``alternate``, on the even-numbered ones only, the odd-numbered linear: the lower-bound
    paper's architecture, where two ternary layers with no ReLU between them compose into one
    layer of integer weights), the last layer linear.

    Ternary: each weight is 0 with probability ``sparsity``, else +1 or -1 with equal
    probability, times the layer's ``scale`` (by default ``sqrt(2 / (fan_in (1 -
    sparsity)))``, the variance of He initialisation). Float: Gaussian weights of that
    variance, ``N(0, 2 / fan_in)``. Biases are ``N(0, bias_std**2)`` in both, so that a ternary
    and a float network of one shape and seed differ in their weights only. The input range
    for default segments and slices is ``(-1, 1)``.

    Raises
    ------
    RegionsError
        For fewer than two widths, a width below 1, a sparsity outside ``[0, 1)`` or a
        non-positive scale.
    """
    widths = list(widths)
    if len(widths) < 2 or not all(isinstance(w, int | np.integer) and not isinstance(w, bool)
                                  and w >= 1 for w in widths):
        raise RegionsError(f"a network shape needs at least two widths >= 1, such as "
                           f"2,16,16,1, not {','.join(map(str, widths))}")
    if not 0 <= sparsity < 1:
        raise RegionsError(f"sparsity must be in [0, 1), not {sparsity}")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise RegionsError(f"scale must be a positive number, not {scale}")
    if not (math.isfinite(bias_std) and bias_std >= 0):
        raise RegionsError(f"bias_std must be >= 0, not {bias_std}")
    rng = np.random.default_rng(seed)
    ops = []
    for i, (k, m) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if ternary:
            trits = np.where(rng.random((m, k)) < sparsity, 0,
                             rng.choice(np.array([-1, 1]), size=(m, k)))
            s = scale if scale is not None else math.sqrt(2.0 / (k * (1.0 - sparsity)))
            w = trits * s
        else:
            w = rng.normal(0.0, math.sqrt(2.0 / k), (m, k))
        b = rng.normal(0.0, bias_std, m)
        relu = i < len(widths) - 2 and (not alternate or i % 2 == 1)
        ops.append(_as_affine(w, b, relu, (k,), (m,)))
    kind = f"ternary, sparsity {sparsity:g}" if ternary else "float"
    if alternate:
        kind += ", linear and ReLU layers alternating"
    return PLNetwork(tuple(ops), (widths[0],), (-1.0, 1.0),
                     f"random {kind} {'-'.join(map(str, widths))}, seed {seed}")


# ---- segments -------------------------------------------------------------------------------


def _vector(v: Any, k: int, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1) if np.size(v) else np.zeros(0)
    if a.size != k:
        raise RegionsError(f"{name} must have {k} values (the network's input width), not "
                           f"{a.size}")
    if not np.all(np.isfinite(a)):
        raise RegionsError(f"{name} must be finite")
    return a


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise RegionsError(f"limit must be a positive integer, not {limit!r}")
    return int(limit)


def _too_many(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise TooManyRegionsError(f"the count needs more than {limit:,} {what} (it reached "
                                  f"{n:,}); raise the limit or count a shorter segment or a "
                                  "smaller slice")


@dataclass(frozen=True, eq=False)
class LineRegions:
    """The regions a segment ``a + t (b - a)``, ``t`` in ``[0, 1]``, crosses.

    Members
    -------
    regions : int
        Linear regions (adjacent activation regions with one affine map merged).
    activation_regions : int
    breaks : float64 array
        The ``t`` where the activation pattern changes, increasing, ``activation_regions - 1``.
    region_breaks : float64 array
        The ``t`` where the affine map changes, ``regions - 1`` of them.
    """

    regions: int
    activation_regions: int
    breaks: np.ndarray
    region_breaks: np.ndarray


def _merge_runs(parent: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For intervals in order, True where an interval starts a new run (a new parent or a
    different key than the interval before)."""
    new = np.ones(len(parent), bool)
    if len(parent) > 1:
        new[1:] = (parent[1:] != parent[:-1]) | np.any(key[1:] != key[:-1], axis=1)
    return new


def _split_intervals(lo, hi, cuts_piece, cuts_t, limit):
    """Cut intervals ``[lo_i, hi_i]`` at ``(cuts_piece, cuts_t)``; returns the pieces'
    ``(parent, lo, hi)`` in order."""
    m = len(lo)
    keep = (cuts_t > lo[cuts_piece] + _TTOL) & (cuts_t < hi[cuts_piece] - _TTOL)
    pid = np.concatenate([np.arange(m), cuts_piece[keep]])
    t = np.concatenate([lo, cuts_t[keep]])
    order = np.lexsort((t, pid))
    pid, t = pid[order], t[order]
    dup = np.zeros(len(t), bool)
    dup[1:] = (pid[1:] == pid[:-1]) & (t[1:] - t[:-1] <= _TTOL)
    pid, t = pid[~dup], t[~dup]
    _too_many(len(t), limit, "intervals")
    nxt = np.empty_like(t)
    nxt[:-1] = t[1:]
    last = np.ones(len(t), bool)
    last[:-1] = pid[1:] != pid[:-1]
    nxt[last] = hi[pid[last]]
    return pid, t, nxt


def _crossings(z0, z1, lo, hi):
    """Pieces and ``t`` where ``z0 + z1 t`` changes sign strictly inside ``[lo, hi]``."""
    zl = z0 + z1 * lo[:, None]
    zh = z0 + z1 * hi[:, None]
    tol = _ZTOL * (np.abs(zl) + np.abs(zh)) + 1e-300
    cross = ((zl > tol) & (zh < -tol)) | ((zl < -tol) & (zh > tol))
    piece, unit = np.nonzero(cross)
    return piece, -z0[piece, unit] / z1[piece, unit]


def count_line(net: PLNetwork, a: Any, b: Any, *, limit: int = DEFAULT_LIMIT) -> LineRegions:
    """Count exactly the regions the segment from ``a`` to ``b`` crosses (module docstring).

    Raises
    ------
    RegionsError
        For endpoints of the wrong size, not finite, or equal.
    TooManyRegionsError
        If more than ``limit`` intervals would be needed.
    """
    limit = _check_limit(limit)
    a = _vector(a, net.input_width, "the segment's start")
    b = _vector(b, net.input_width, "the segment's end")
    if np.array_equal(a, b):
        raise RegionsError("the segment's ends are the same point")
    lo, hi = np.zeros(1), np.ones(1)
    p, q = a[None].copy(), (b - a)[None].copy()
    for op in net.ops:
        if isinstance(op, _Pool):
            g0, g1 = p[:, op.index], q[:, op.index]            # (m, out, window)
            w = op.index.shape[1]
            pieces, ts = [], []
            for i in range(w):
                for j in range(i + 1, w):
                    pc, tc = _crossings(g0[:, :, i] - g0[:, :, j], g1[:, :, i] - g1[:, :, j],
                                        lo, hi)
                    pieces.append(pc)
                    ts.append(tc)
            parent, lo, hi = _split_intervals(lo, hi, np.concatenate(pieces),
                                              np.concatenate(ts), limit)
            g0, g1 = g0[parent], g1[parent]
            mid = 0.5 * (lo + hi)
            arg = (g0 + g1 * mid[:, None, None]).argmax(axis=2)
            new = _merge_runs(parent, arg)
            starts = np.nonzero(new)[0]
            ends = np.append(starts[1:], len(new)) - 1
            lo, hi, arg = lo[starts], hi[ends], arg[starts]
            g0, g1 = g0[starts], g1[starts]
            p = np.take_along_axis(g0, arg[:, :, None], 2)[:, :, 0]
            q = np.take_along_axis(g1, arg[:, :, None], 2)[:, :, 0]
            continue
        z0 = op.linear(p) + op.bias
        z1 = op.linear(q)
        if not op.relu:
            p, q = z0, z1
            continue
        parent, lo, hi = _split_intervals(lo, hi, *_crossings(z0, z1, lo, hi), limit)
        z0, z1 = z0[parent], z1[parent]
        zm = z0 + z1 * (0.5 * (lo + hi))[:, None]
        on = zm > _ZTOL * (np.abs(z0) + np.abs(z1)) + 1e-300
        new = _merge_runs(parent, on)
        starts = np.nonzero(new)[0]
        ends = np.append(starts[1:], len(new)) - 1
        lo, hi, on = lo[starts], hi[ends], on[starts]
        p, q = z0[starts] * on, z1[starts] * on
    breaks = lo[1:].copy()
    jac = net.jacobians(a + np.outer(0.5 * (lo + hi), b - a))
    same = _same_maps(jac[1:], jac[:-1])
    region_breaks = breaks[~same]
    return LineRegions(len(region_breaks) + 1, len(lo), breaks, region_breaks)


def _same_maps(j1: np.ndarray, j2: np.ndarray) -> np.ndarray:
    """Row by row: the same linear part, to :data:`_MAPTOL` of the largest coefficient."""
    if len(j1) == 0:
        return np.zeros(0, bool)
    scale = max(np.abs(j1).max(), np.abs(j2).max(), 1e-300)
    return np.abs(j1 - j2).reshape(len(j1), -1).max(axis=1) <= _MAPTOL * scale


# ---- slices ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SliceRegions:
    """The regions a slice ``a + u d1 + v d2``, ``(u, v)`` in ``[-R, R]^2``, meets.

    Members
    -------
    regions : int
        Linear regions: connected unions of activation regions with one affine map.
    activation_regions : int
        Faces: convex polygons of constant activation pattern.
    polygons : list of float64 arrays (vertices, 2)
        The faces, in ``(u, v)``.
    region_of : int array
        For each face, the linear region it belongs to (``0 .. regions - 1``).
    """

    regions: int
    activation_regions: int
    polygons: list
    region_of: np.ndarray


def _cut(poly: np.ndarray, s: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Split the convex polygon ``poly`` (n, 2) by the line where the affine function with
    vertex values ``s`` is zero: (part with s <= 0, part with s >= 0)."""
    neg, pos = [], []
    n = len(poly)
    for k in range(n):
        p, sp = poly[k], s[k]
        q, sq = poly[(k + 1) % n], s[(k + 1) % n]
        if sp <= tol:
            neg.append(p)
        if sp >= -tol:
            pos.append(p)
        if (sp > tol and sq < -tol) or (sp < -tol and sq > tol):
            x = p + (q - p) * (sp / (sp - sq))
            neg.append(x)
            pos.append(x)
    return np.array(neg), np.array(pos)


def _dedupe(poly: np.ndarray, eps: float) -> np.ndarray:
    """Drop vertices within ``eps`` of the one before (cuts through a vertex make them)."""
    if len(poly) < 2:
        return poly
    step = np.abs(np.diff(poly, axis=0, prepend=poly[-1:])).max(axis=1)
    keep = step > eps
    return poly[keep] if keep.any() else poly[:1]


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull, counter-clockwise (monotone chain)."""
    pts = sorted(map(tuple, np.round(points, 15)))
    pts = list(dict.fromkeys(pts))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def _split_polygon(poly, z0, zu, zv, units, min_area, tol_scale):
    """Split one polygon by the zero lines of units ``units`` of ``z0 + zu u + zv v``."""
    parts = [poly]
    for j in units:
        nxt = []
        for pg in parts:
            s = z0[j] + zu[j] * pg[:, 0] + zv[j] * pg[:, 1]
            tol = _ZTOL * (abs(z0[j]) + (abs(zu[j]) + abs(zv[j])) * tol_scale)
            if s.max() > tol and s.min() < -tol:
                for half in _cut(pg, s, tol):
                    half = _dedupe(half, _TTOL * tol_scale)
                    if len(half) >= 3 and _area(half) > min_area:
                        nxt.append(half)
            else:
                nxt.append(pg)
        parts = nxt
    return parts


def count_slice(net: PLNetwork, a: Any, d1: Any, d2: Any, extent: float, *,
                limit: int = DEFAULT_LIMIT) -> SliceRegions:
    """Count exactly the regions of the slice ``a + u d1 + v d2``, ``|u|, |v| <= extent``.

    Raises
    ------
    RegionsError
        For vectors of the wrong size or not finite, parallel directions, or an extent that
        is not a positive number.
    TooManyRegionsError
        If more than ``limit`` faces would be needed.
    """
    limit = _check_limit(limit)
    k = net.input_width
    a, d1, d2 = _vector(a, k, "the slice's origin"), _vector(d1, k, "d1"), _vector(d2, k, "d2")
    if not (isinstance(extent, int | float | np.integer | np.floating)
            and math.isfinite(extent) and extent > 0):
        raise RegionsError(f"the slice's extent must be a positive number, not {extent!r}")
    gram = np.array([[d1 @ d1, d1 @ d2], [d1 @ d2, d2 @ d2]])
    if np.linalg.det(gram) <= 1e-12 * gram[0, 0] * gram[1, 1]:
        raise RegionsError("the slice's directions d1 and d2 are parallel (or zero)")
    r = float(extent)
    min_area = (_TTOL * r) ** 2
    polys = [np.array([[-r, -r], [r, -r], [r, r], [-r, r]])]
    p = a[None].copy()
    qu, qv = d1[None].copy(), d2[None].copy()
    for op in net.ops:
        new_polys, parents, keys = [], [], []
        if isinstance(op, _Pool):
            g0, gu, gv = p[:, op.index], qu[:, op.index], qv[:, op.index]
            w = op.index.shape[1]
            pairs = [(i, j) for i in range(w) for j in range(i + 1, w)]
            for n, pg in enumerate(polys):
                # the difference lines of every pair in every window
                d0 = np.concatenate([g0[n, :, i] - g0[n, :, j] for i, j in pairs])
                du = np.concatenate([gu[n, :, i] - gu[n, :, j] for i, j in pairs])
                dv = np.concatenate([gv[n, :, i] - gv[n, :, j] for i, j in pairs])
                s = d0[None] + np.outer(pg[:, 0], du) + np.outer(pg[:, 1], dv)
                tol = _ZTOL * (np.abs(d0) + (np.abs(du) + np.abs(dv)) * r)
                units = np.nonzero((s.max(axis=0) > tol) & (s.min(axis=0) < -tol))[0]
                parts = _split_polygon(pg, d0, du, dv, units, min_area, r)
                groups: dict[bytes, list] = {}
                for part in parts:
                    cu, cv = part.mean(axis=0)
                    arg = (g0[n] + gu[n] * cu + gv[n] * cv).argmax(axis=1)
                    groups.setdefault(arg.astype(np.int32).tobytes(), []).append(part)
                for key, members in groups.items():
                    new_polys.append(members[0] if len(members) == 1
                                     else _dedupe(_hull(np.concatenate(members)), _TTOL * r))
                    parents.append(n)
                    keys.append(np.frombuffer(key, np.int32))
                _too_many(len(new_polys), limit, "faces")
            parents = np.array(parents)
            arg = np.array(keys)
            g0, gu, gv = g0[parents], gu[parents], gv[parents]
            p = np.take_along_axis(g0, arg[:, :, None], 2)[:, :, 0]
            qu = np.take_along_axis(gu, arg[:, :, None], 2)[:, :, 0]
            qv = np.take_along_axis(gv, arg[:, :, None], 2)[:, :, 0]
            polys = new_polys
            continue
        z0 = op.linear(p) + op.bias
        zu, zv = op.linear(qu), op.linear(qv)
        if not op.relu:
            p, qu, qv = z0, zu, zv
            continue
        ons = []
        for n, pg in enumerate(polys):
            s = z0[n][None] + np.outer(pg[:, 0], zu[n]) + np.outer(pg[:, 1], zv[n])
            tol = _ZTOL * (np.abs(z0[n]) + (np.abs(zu[n]) + np.abs(zv[n])) * r)
            units = np.nonzero((s.max(axis=0) > tol) & (s.min(axis=0) < -tol))[0]
            for part in _split_polygon(pg, z0[n], zu[n], zv[n], units, min_area, r):
                cu, cv = part.mean(axis=0)
                zc = z0[n] + zu[n] * cu + zv[n] * cv
                ons.append(zc > _ZTOL * (np.abs(z0[n]) + (np.abs(zu[n]) + np.abs(zv[n])) * r))
                new_polys.append(part)
                parents.append(n)
            _too_many(len(new_polys), limit, "faces")
        parents = np.array(parents)
        on = np.array(ons)
        p, qu, qv = z0[parents] * on, zu[parents] * on, zv[parents] * on
        polys = new_polys
    centroids = np.array([pg.mean(axis=0) for pg in polys])
    jac = net.jacobians(a + np.outer(centroids[:, 0], d1) + np.outer(centroids[:, 1], d2))
    region_of = _connected_regions(polys, jac, r)
    return SliceRegions(int(region_of.max()) + 1, len(polys), polys, region_of)


def _connected_regions(polys, jac, r: float) -> np.ndarray:
    """Label faces so that adjacent faces (sharing an edge) with the same linear part share a
    label (continuity makes their affine maps the same)."""
    n = len(polys)
    scale = max(float(np.abs(jac).max()), 1e-300)
    key = np.round(jac.reshape(n, -1) / (scale * 100 * _MAPTOL)).astype(np.int64)
    _, group = np.unique(key, axis=0, return_inverse=True)
    group = group.reshape(-1)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        if len(members) < 2:
            continue
        edges, owner = [], []
        for f in members:
            pg = polys[f]
            edges.append(np.stack([pg, np.roll(pg, -1, axis=0)], axis=1))
            owner.append(np.full(len(pg), f))
        e = np.concatenate(edges)                     # (E, 2, 2)
        own = np.concatenate(owner)
        tol = 1e-9 * r
        d = e[:, 1] - e[:, 0]
        length = np.linalg.norm(d, axis=1)
        unit = d / np.maximum(length, 1e-300)[:, None]
        for i in range(len(e)):
            # edges of other faces on the same line as edge i, overlapping it
            off0 = e[:, 0] - e[i, 0]
            off1 = e[:, 1] - e[i, 0]
            cross0 = unit[i, 0] * off0[:, 1] - unit[i, 1] * off0[:, 0]
            cross1 = unit[i, 0] * off1[:, 1] - unit[i, 1] * off1[:, 0]
            s0, s1 = off0 @ unit[i], off1 @ unit[i]
            overlap = np.minimum(np.maximum(s0, s1), length[i]) - np.maximum(
                np.minimum(s0, s1), 0.0)
            hit = (np.abs(cross0) <= tol) & (np.abs(cross1) <= tol) & (overlap > tol) & (
                own != own[i])
            for j in np.nonzero(hit)[0]:
                ra, rb = find(own[i]), find(own[j])
                if ra != rb:
                    parent[ra] = rb
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels.reshape(-1)


# ---- default segments and slices, sampling, the bound ------------------------------------------


def random_chord(net: PLNetwork, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random segment across the input box (``net.box`` in every coordinate): the line
    through two independent uniform points of the box, extended both ways to the box's
    boundary. (A line through one uniform point in a uniform direction would be short in many
    dimensions, stopped by the nearest face; two points make it typically
    ``0.4 sqrt(K)`` sides long.)"""
    lo, hi = net.box
    k = net.input_width
    p, q = rng.uniform(lo, hi, (2, k))
    d = q - p
    d /= np.linalg.norm(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(d > 0, (hi - p) / d, np.where(d < 0, (lo - p) / d, np.inf))
        t0 = np.where(d > 0, (lo - p) / d, np.where(d < 0, (hi - p) / d, -np.inf))
    return p + t0.max() * d, p + t1.min() * d


def random_plane(net: PLNetwork, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A random slice through the centre of the input box: two random orthonormal directions,
    extent half the box's side (for a 2-D input, the whole box up to a rotation)."""
    lo, hi = net.box
    k = net.input_width
    if k == 1:
        raise RegionsError("a network with one input has no 2-D slice; count a line")
    if k == 2:
        d1, d2 = np.eye(2)
    else:
        basis, _ = np.linalg.qr(rng.normal(size=(k, 2)))
        d1, d2 = basis[:, 0], basis[:, 1]
    return np.full(k, 0.5 * (lo + hi)), d1, d2, 0.5 * (hi - lo)


def sample_line_patterns(net: PLNetwork, a: Any, b: Any, points: int) -> int:
    """The number of runs of equal activation patterns at ``points`` equally spaced ``t`` in
    ``[0, 1]``: a sampled lower bound of :func:`count_line`'s ``activation_regions``."""
    t = np.linspace(0.0, 1.0, points)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    runs = 1
    prev = None
    for s in range(0, points, 4096):
        pat = net.patterns(a + np.outer(t[s:s + 4096], b - a))
        if prev is not None:
            runs += int(np.any(pat[0] != prev))
        runs += int(np.any(pat[1:] != pat[:-1], axis=1).sum())
        prev = pat[-1]
    return runs


def sample_slice_patterns(net: PLNetwork, a: Any, d1: Any, d2: Any, extent: float,
                          points: int) -> int:
    """The number of distinct activation patterns on a ``points`` x ``points`` grid of the
    slice: a sampled lower bound of :func:`count_slice`'s ``activation_regions`` (a pattern's
    inputs are convex, so each distinct pattern is one face)."""
    g = np.linspace(-extent, extent, points)
    u, v = np.meshgrid(g, g)
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    seen: set[bytes] = set()
    for s in range(0, len(uv), 8192):
        x = np.asarray(a) + np.outer(uv[s:s + 8192, 0], d1) + np.outer(uv[s:s + 8192, 1], d2)
        seen.update(row.tobytes() for row in net.patterns(x))
    return len(seen)


def sawtooth_program(n: int, depth: int) -> Any:
    """A ternary program whose output on ``[0, n**depth]`` is a zig-zag of ``n**depth`` linear
    pieces (0 at even integers, 1 at odd ones), ``depth`` hidden layers of ``2 n - 1`` ReLUs.

    Montufar et al.'s construction in trits: hidden layer ``l`` computes
    ``relu(y - i n**(depth - l))`` for ``i = 0 .. n-1`` from the zig-zag ``y`` of the layer
    before (the input ``x`` for ``l = 1``), each ``i >= 1`` twice, so that the next layer's trits
    ``+1, -1, -1, +1, +1, ...`` weigh it by the zig-zag's coefficient 2; each zig-zag folds its
    input range ``n`` times onto ``1/n`` of it. Integer biases, shift 0, every value within
    int8 for ``n**depth <= 127``: the integer path computes exactly the real-valued function.

    Raises
    ------
    RegionsError
        Unless ``n >= 2``, ``depth >= 1`` and ``n**depth <= 127``.
    """
    from trine.host.program import Program

    if not (isinstance(n, int) and isinstance(depth, int) and n >= 2 and depth >= 1
            and n ** depth <= ACT_MAX):
        raise RegionsError(f"the sawtooth needs n >= 2, depth >= 1 and n**depth <= {ACT_MAX}, "
                           f"not n={n!r}, depth={depth!r}")
    signs = np.array([1] + [s for i in range(1, n) for s in ((-1) ** i, (-1) ** i)], np.int8)
    offsets = np.array([0] + [i for i in range(1, n) for _ in (0, 1)])
    width = 2 * n - 1
    layers = []
    for level in range(1, depth + 1):
        w = np.ones((width, 1), np.int8) if level == 1 else np.tile(signs, (width, 1))
        layers.append(Layer(w, (-offsets * n ** (depth - level)).astype(np.int32), 0, True))
    layers.append(Layer(signs.reshape(1, width), np.zeros(1, np.int32), 0, False))
    return Program(layers)


def general_lower_bound(n0: int, widths: Sequence[int]) -> int:
    """Montufar et al. (2014)'s lower bound on the maximal number of linear regions of a
    ReLU network with ``n0`` inputs and hidden layers of ``widths`` (each >= ``n0``), general
    (real) weights: ``prod_{l < L} floor(n_l / n0) ** n0 * sum_{j <= n0} C(n_L, j)``."""
    widths = list(widths)
    if not widths or n0 < 1 or min(widths) < n0:
        raise RegionsError(f"the bound needs hidden widths >= the input dimension {n0}, not "
                           f"{widths}")
    head = math.prod((w // n0) ** n0 for w in widths[:-1])
    return head * sum(math.comb(widths[-1], j) for j in range(n0 + 1))
