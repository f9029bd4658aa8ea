"""QONNX models (as Brevitas and FINN export them) in :mod:`trine.host.onnx_import`.

A QONNX graph is an ONNX graph with quantisers: ``Quant`` (or ``IntQuant``) nodes of the
``qonnx.custom_op.general`` domain (also under their older domains ``onnx.brevitas`` and
``finn.custom_op.general``), each computing, for scale ``s``, zero point ``z`` and an integer
range given by the bit width, ``signed`` and ``narrow``::

    q = round(clip(x / s + z, min, max))        (rounding_mode: ROUND is half to even)
    y = (q - z) * s

``BipolarQuant`` gives ``s * sign(x)`` (+1 at 0). What trine reads:

* *weights*: a ``Quant`` of 2 bits, signed, narrow (the integers -1, 0, 1), zero point 0, on a
  constant weight (Brevitas' ``SignedTernaryWeightPerTensorConst`` and every other ternary
  weight quantiser), per tensor or per output channel; or a ``BipolarQuant`` (-1, +1). The
  integers *are* the trits: they are read, never re-quantised, and each output row's scale is
  kept (:class:`LayerQuant`);
* *activations*: a ``Quant`` on the chain (the input, after a layer or its ReLU) of at most
  8 bits, zero point 0, one scale: it fixes the scale of the integers there
  (:class:`ActQuant`), so the program's input scale and shifts come from the model, not from
  calibration;
* *biases*: any ``Quant`` on a constant bias is evaluated (Brevitas' ``Int32Bias`` gives
  integers in the accumulator's units, which fold exactly).

Refused, naming the node: ``FloatQuant`` (minifloats), ``Trunc`` (truncation, as quantised
average pooling exports), ``MultiThreshold`` and FINN's other operators, a non-zero zero point,
weights of more than 2 bits or not narrow, activations of more than 8 bits or with one scale
per channel, and a model where some layers' weights are quantised and others are not.

:func:`fold_quantized` folds such a network into a :class:`~trine.host.program.Program`.
Where the model's rules are the device's the program computes exactly what the model does; the
notes of :func:`quantization_notes` say where they are not:

* the device rounds the requantiser half up, ``Quant`` (ROUND) half to even: a layer's output
  differs by one where ``(acc + bias) / 2**shift`` is exactly half-way;
* a shift is a power of two: the ratio ``s_w s_in / s_out`` of a layer's scales must be one
  (Brevitas' ``...FixedPoint`` quantisers make it so), else the nearest is taken;
* one scale per layer: per-channel weight scales are replaced by their weighted mean;
* the device saturates at -128 and 127: an activation ``Quant`` of fewer bits clips lower, and
  an unsigned 8-bit one (0..255) is kept at half its resolution (twice its scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.reference import Conv, Flatten, Layer, MaxPool, im2col, ternary_matmul
from trine.contract.spec import ACT_MAX, ACT_MIN, BIAS_MAX, BIAS_MIN, SHIFT_MAX
from trine.host.onnx_graph import Graph, OnnxImportError
from trine.host.program import Program

__all__ = ["QONNX_DOMAINS", "QuantParams", "LayerQuant", "ActQuant", "Quantization",
           "qonnx_op", "read_quant", "quantize_constant", "weight_trits", "activation_quant",
           "quantization_notes", "fold_quantized", "apply_activation", "run_half_even"]

#: The domains QONNX operators come in (current, Brevitas' older exports, FINN's).
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
#: QONNX operators trine refuses, and why.
_REFUSED = {
    "FloatQuant": "minifloat quantisation (FloatQuant) is not supported: the device's "
                  "activations are int8 and its weights ternary",
    "Trunc": "Trunc (dropping low bits, as quantised average pooling exports) is not supported: "
             "the device pools by maximum and rounds half up",
    "MultiThreshold": "MultiThreshold (FINN's streamlined activations) is not supported: give "
                      "the QONNX model before streamlining",
}
_ROUNDING = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


def qonnx_op(g: Graph, i: int) -> str | None:
    """The QONNX operator node ``i`` is (``Quant``, ``IntQuant``, ``BipolarQuant``, ...),
    None for any other node."""
    node = g.nodes[i]
    return node.op_type if node.domain in QONNX_DOMAINS else None


def refused(g: Graph, i: int) -> OnnxImportError | None:
    """The error for a QONNX operator trine never imports, None for the others."""
    op = qonnx_op(g, i)
    if op in _REFUSED:
        return g.fail(i, _REFUSED[op])
    if op is not None and op not in ("Quant", "IntQuant", "BipolarQuant"):
        return g.fail(i, f"the QONNX operator {op} is not supported: trine reads Quant, "
                      "IntQuant and BipolarQuant")
    return None


@dataclass(frozen=True, eq=False)
class QuantParams:
    """A ``Quant`` / ``IntQuant`` / ``BipolarQuant`` node's parameters, checked.

    Members
    -------
    node : int
        The node's index in the graph.
    scale, zero_point : float64 arrays (broadcast against the input)
    bits : int
        1 for ``BipolarQuant``.
    signed, narrow : bool
    rounding : str
    """

    node: int
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    @property
    def bipolar(self) -> bool:
        return self.bits == 1

    @property
    def range(self) -> tuple[int, int]:
        """The integers it produces, ``(min, max)``."""
        if self.bipolar:
            return -1, 1
        if self.signed:
            return -(2 ** (self.bits - 1)) + int(self.narrow), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1 - int(self.narrow)


def _constant(g: Graph, i: int, name: str, role: str) -> np.ndarray:
    v = g.value(name) if name else None
    if v is None:
        raise g.fail(i, f"its {role} {name!r} is not a constant: "
                     f"{g.why_not_constant(name) if name else 'it is missing'}")
    a = np.asarray(v)
    if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a.astype(np.float64))):
        raise g.fail(i, f"its {role} {name!r} must be finite numbers")
    return a


def read_quant(g: Graph, i: int) -> QuantParams:
    """Node ``i``'s quantiser parameters, checked (a positive finite scale, an integer bit
    width of 1 to 32, a known rounding mode)."""
    op, node, at = qonnx_op(g, i), g.nodes[i], g.attrs[i]
    inputs = list(node.input)
    if op == "BipolarQuant":
        if len(inputs) != 2:
            raise g.fail(i, f"it has {len(inputs)} inputs; BipolarQuant takes X and scale")
        scale = _constant(g, i, inputs[1], "scale")
        zero, bits, signed, narrow, rounding = np.zeros(()), 1, True, False, "BIPOLAR"
    else:
        if len(inputs) != 4:
            raise g.fail(i, f"it has {len(inputs)} inputs; Quant takes X, scale, zero point "
                         "and bit width")
        scale = _constant(g, i, inputs[1], "scale")
        zero = _constant(g, i, inputs[2], "zero point")
        width = _constant(g, i, inputs[3], "bit width")
        if width.size != 1 or float(width.reshape(-1)[0]) != int(width.reshape(-1)[0]) or not (
                1 <= int(width.reshape(-1)[0]) <= 32):
            raise g.fail(i, f"its bit width {width.reshape(-1)[:4].tolist()} must be one "
                         "integer from 1 to 32")
        bits = int(width.reshape(-1)[0])
        signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
        rounding = at.get("rounding_mode", b"ROUND")
        rounding = (rounding.decode("ascii", "replace") if isinstance(rounding, bytes)
                    else str(rounding)).upper()
        if rounding not in _ROUNDING:
            raise g.fail(i, f"rounding_mode {rounding!r} is not one of {', '.join(_ROUNDING)}")
    if np.any(scale <= 0):
        raise g.fail(i, f"its scale must be > 0, not {float(np.min(scale)):g}")
    return QuantParams(i, scale.astype(np.float64), zero.astype(np.float64), bits, signed,
                       narrow, rounding)


def _round(y: np.ndarray, mode: str) -> np.ndarray:
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(y)
    if mode == "CEIL":
        return np.ceil(y)
    if mode == "FLOOR":
        return np.floor(y)
    if mode == "UP":
        return np.sign(y) * np.ceil(np.abs(y))
    if mode == "DOWN":
        return np.fix(y)
    if mode == "HALF_UP":
        return np.sign(y) * np.floor(np.abs(y) + 0.5)
    return np.sign(y) * np.ceil(np.abs(y) - 0.5)  # HALF_DOWN


def quantize_constant(x: np.ndarray, p: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    """``(integers, dequantised)`` of ``x`` by ``p``, as QONNX's own executor computes them
    (in the input's float type: clip, then round)."""
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    scale = p.scale.astype(dtype)
    if p.bipolar:
        q = np.where(x / scale >= 0, 1.0, -1.0).astype(dtype)
        return q, q * scale
    lo, hi = p.range
    y = x / scale + p.zero_point.astype(dtype)
    q = _round(np.clip(y, lo, hi), p.rounding)
    return q - p.zero_point.astype(dtype), (q - p.zero_point.astype(dtype)) * scale


def apply_activation(y: np.ndarray, act: ActQuant) -> np.ndarray:
    """An activation ``Quant`` on float64 activations (the float model's fake quantisation)."""
    lo, hi = act.range
    return _round(np.clip(y / act.scale, lo, hi), act.rounding) * act.scale


# --------------------------------------------------------------------------------------------
# What the walk records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LayerQuant:
    """A weighted layer's quantised weights: ``trits`` (its weight's shape, int8) and one
    scale per output row, ``w = scales[m] * trits[m]`` exactly."""

    node: str
    trits: np.ndarray
    scales: np.ndarray

    @property
    def per_channel(self) -> bool:
        used = self.scales[np.abs(self.trits.reshape(len(self.trits), -1)).sum(axis=1) > 0]
        return bool(used.size) and not np.all(used == used[0])

    def layer_scale(self) -> float:
        """The one scale the device can use: the rows' scales weighted by their nonzero trits
        (exact when they are all equal)."""
        counts = np.abs(self.trits.reshape(len(self.trits), -1)).sum(axis=1)
        if counts.sum() == 0:
            return float(self.scales.mean())
        return float(np.sum(self.scales * counts) / counts.sum())


@dataclass(frozen=True, eq=False)
class ActQuant:
    """An activation ``Quant``: one positive ``scale``, at most 8 bits, zero point 0."""

    node: str
    scale: float
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    @property
    def range(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits - 1)) + int(self.narrow), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1 - int(self.narrow)

    @property
    def program_scale(self) -> float:
        """The scale the program's int8 activations take here: the Quant's own, or twice it
        for 8 unsigned bits (0..255 does not fit -128..127)."""
        return 2 * self.scale if (not self.signed and self.bits == 8) else self.scale


@dataclass(frozen=True, eq=False)
class Quantization:
    """A QONNX network's quantisers, for :func:`fold_quantized`.

    Members
    -------
    weights : tuple of LayerQuant
        One per weighted layer, in order.
    activations : dict of int -> ActQuant
        ``-1`` for the network input, ``k`` for the output of weighted layer ``k`` (after its
        ReLU, if it has one).
    """

    weights: tuple[LayerQuant, ...]
    activations: dict[int, ActQuant]


def weight_trits(g: Graph, i: int, w: np.ndarray, p: QuantParams) -> LayerQuant:
    """The trits and row scales of layer ``i``'s weight ``w`` (float64, its output channels
    first) made by the quantiser ``p``; refused unless ``p`` is ternary or bipolar with zero
    point 0 and a scale per tensor or per output channel."""
    where = g.desc(p.node)
    if p.bits > 2 or (p.bits == 2 and not (p.signed and p.narrow)):
        kind = f"{p.bits} bits" + ("" if p.signed else " unsigned") + (
            "" if p.narrow or p.bits > 2 else " (-2..1, not narrow)")
        raise g.fail(i, f"its weight quantiser {where} has {kind}: the device's weights are "
                     "ternary (a Quant of 2 bits, signed, narrow: -1, 0, 1)")
    if p.bits == 2 and not p.signed:
        raise g.fail(i, f"its weight quantiser {where} is unsigned: ternary weights are signed")
    if np.any(p.zero_point != 0):
        raise g.fail(i, f"its weight quantiser {where} has zero point "
                     f"{float(p.zero_point.reshape(-1)[np.flatnonzero(p.zero_point)[0]]):g}: "
                     "the device's trits are symmetric (zero point 0)")
    m = w.shape[0]
    if p.scale.size > 1 and p.scale.size != m:
        raise g.fail(i, f"its weight quantiser {where} has {p.scale.size} scales for {m} output "
                     "channels: trine needs one per tensor or per output channel")
    rows = w.reshape(m, -1)
    scales = np.abs(rows).max(axis=1)  # every nonzero weight of a ternary row has this size
    safe = np.where(scales > 0, scales, 1.0)
    trits = np.rint(rows / safe[:, None])
    if not np.allclose(trits * scales[:, None], rows, rtol=1e-6, atol=0):
        raise g.fail(i, f"its weight quantiser {where} has a scale that is not one per tensor "
                     "or per output channel: trine needs w = scale[row] * trits")
    used = scales > 0
    # a row of zero trits computes its bias alone, whatever its scale: give it the others'
    scales = np.where(used, scales, scales[used].mean() if used.any() else 1.0)
    return LayerQuant(g.desc(p.node), trits.astype(np.int8).reshape(w.shape), scales)


def activation_quant(g: Graph, i: int) -> ActQuant:
    """The activation quantiser node ``i`` is, checked (see the module)."""
    p = read_quant(g, i)
    if p.bipolar:
        raise g.fail(i, "BipolarQuant on activations is not supported: the device's activations "
                     "are int8")
    if p.bits > 8:
        raise g.fail(i, f"it quantises activations to {p.bits} bits: the device's activations "
                     "are 8 bits (int8)")
    if np.any(p.zero_point != 0):
        raise g.fail(i, f"zero point {float(p.zero_point.reshape(-1)[0]):g} is not supported: "
                     "the device's activations are symmetric (zero point 0)")
    if p.scale.size != 1:
        raise g.fail(i, f"it has {p.scale.size} scales (one per channel): the device has one "
                     "scale per activation tensor")
    return ActQuant(g.desc(i), float(p.scale.reshape(-1)[0]), p.bits, p.signed, p.narrow,
                    p.rounding)


def quantization_notes(q: Quantization, relus: Sequence[bool]) -> list[str]:
    """Where the device's rules differ from the model's (see the module), one note each."""
    notes = []
    for lq in q.weights:
        if lq.per_channel:
            used = lq.scales[np.abs(lq.trits.reshape(len(lq.trits), -1)).sum(axis=1) > 0]
            notes.append(f"{lq.node}: one scale per output channel (from {used.min():.4g} to "
                         f"{used.max():.4g}); the device has one per layer, the mean "
                         f"{lq.layer_scale():.4g} is used, so outputs differ")
    # the scales chain from the input's: where each layer's ratio is no power of two
    s_in = q.activations[-1].program_scale if -1 in q.activations else None
    for k, lq in enumerate(q.weights):
        act = q.activations.get(k)
        if s_in is None or act is None:
            s_in = None
            continue
        unit = lq.layer_scale() * s_in
        shift, exact = _shift_for(act.program_scale / unit)
        if not exact:
            notes.append(f"{act.node}: its scale is 2**{math.log2(act.program_scale / unit):.3f}"
                         f" times the accumulator's, not a power of two: shift {shift}, so "
                         "outputs differ")
        s_in = unit * 2.0**shift
    for k, act in sorted(q.activations.items()):
        lo, hi = act.range
        if act.rounding != "HALF_UP" and k >= 0:
            mode = {"ROUND": "half to even", "HALF_EVEN": "half to even", "HALF_DOWN":
                    "half down", "UP": "away from zero", "DOWN": "toward zero"}.get(
                        act.rounding, act.rounding.lower())
            notes.append(f"{act.node}: rounds {mode}, the device's requantiser half up: "
                         "outputs that fall exactly half-way can differ by one")
        low = 0 if (k >= 0 and relus[k]) else ACT_MIN
        if not act.signed and act.bits == 8:
            notes.append(f"{act.node}: 8 unsigned bits (0..255) kept at twice its scale in int8 "
                         "(one bit lost)")
        elif hi < ACT_MAX or (lo > low and not (lo == 0 and low == 0)):
            notes.append(f"{act.node}: clips at {lo}..{hi}, the device at {low}..{ACT_MAX}: "
                         "values beyond its range differ")
    return notes


# --------------------------------------------------------------------------------------------
# Folding
# --------------------------------------------------------------------------------------------


def _shift_for(ratio: float) -> tuple[int, bool]:
    """The shift for an output-to-accumulator scale ratio, and whether it is exact."""
    exact = math.log2(ratio)
    shift = int(np.clip(round(exact), 0, SHIFT_MAX))
    return shift, abs(exact - shift) < 1e-9


def fold_quantized(layers: Sequence, quant: Quantization, input_shape: Sequence[int],
                   calibration_x: Any = None, *, percentile: float = 100.0,
                   labels: Sequence[str] | None = None) -> tuple[Program, list[str]]:
    """The program of a QONNX network whose every weighted layer's trits are given.

    Parameters
    ----------
    layers : list of layers
        The float network (:mod:`trine.host.ternarize`'s format) with the dequantised weights.
    quant : Quantization
    input_shape : tuple of int
    calibration_x : float array, optional
        Needed only where the model gives no scale: the input (without an input ``Quant``) and
        a layer without an activation ``Quant`` after it, whose shift is then chosen as
        :func:`trine.host.ternarize.fold_to_program` chooses it.
    percentile : float
    labels : list of str, optional

    Returns
    -------
    (Program, notes)
        The notes say which scales were inexact (not a power of two apart) and which came
        from the calibration inputs.

    Raises
    ------
    OnnxImportError
        If a scale is needed and there is no calibration data.
    """
    from trine.host.ternarize import FloatConv, _scales

    shape = tuple(input_shape)
    notes: list[str] = []
    x = None
    if calibration_x is not None:
        x = np.asarray(calibration_x, np.float64).reshape(-1, *shape)

    def need(what: str) -> np.ndarray:
        if x is None:
            raise OnnxImportError(f"{what} has no activation Quant to give its scale: "
                                  "calibration inputs are needed (trine import --calib)")
        return x

    inp = quant.activations.get(-1)
    if inp is not None:
        s_in = inp.program_scale
        input_scale = s_in
    else:
        peak = float(np.abs(need("the network input")).max())
        input_scale = s_in = (peak if peak > 0 else 1.0) / ACT_MAX
        notes.append("the input scale from the calibration inputs (no input Quant)")
    a = None if x is None else np.clip(np.rint(x / input_scale), ACT_MIN, ACT_MAX).astype(
        np.int8)
    out: list = []
    k = 0
    for layer in layers:
        if isinstance(layer, MaxPool | Flatten):
            out.append(layer)
            a = None if a is None else layer(a)
            continue
        lq = quant.weights[k]
        alpha = lq.layer_scale()
        unit = alpha * s_in
        if isinstance(layer, FloatConv):
            b, relu = layer.bias, layer.relu
        else:
            _, b, relu = layer
        act = quant.activations.get(k)
        if act is not None:
            shift = _shift_for(act.program_scale / unit)[0]  # inexact: quantization_notes
            bias = np.clip(np.rint(b / unit), BIAS_MIN, BIAS_MAX).astype(np.int64)
        else:
            need(f"layer {len(out)}")
            assert a is not None
            if isinstance(layer, FloatConv):
                acc = ternary_matmul(im2col(a, layer.kernel, layer.stride, layer.padding,
                                            np.int8), lq.trits.reshape(len(lq.trits), -1))
            else:
                acc = ternary_matmul(a, lq.trits)
            bias, shift, unit = _scales(acc, np.asarray(alpha), b, relu, s_in, percentile)
            notes.append(f"layer {len(out)}: shift from the calibration inputs (no activation "
                         "Quant after it)")
        if isinstance(layer, FloatConv):
            made = Conv(lq.trits, bias, layer.stride, layer.padding, shift, relu)
        else:
            made = Layer(lq.trits, bias, shift, relu)
        out.append(made)
        a = None if a is None else made(a)
        s_in = unit * 2.0**shift
        k += 1
    if all(isinstance(layer, Layer) for layer in out) and len(shape) == 1:
        return Program(out, input_scale, labels), notes
    return Program(out, input_scale, labels, input_shape=shape), notes


def run_half_even(program: Program, x: Any) -> np.ndarray:
    """``program`` on raw inputs ``x`` with its requantiser rounding half to *even*, as QONNX's
    ``Quant`` (ROUND) does, instead of the device's half up: a software model, to tell the
    outputs that differ from a QONNX model's because of rounding ties from any other
    difference. int8, like :meth:`Program.run_reference`."""
    from trine.contract.reference import saturate

    a = program.quantize_input(x)
    for layer in program.layers:
        if not isinstance(layer, Layer | Conv):
            a = layer(a)
            continue
        dense = layer if isinstance(layer, Layer) else layer.dense
        if isinstance(layer, Conv):
            rows = im2col(a, layer.kernel, layer.stride, layer.padding, np.int8)
        else:
            rows = a
        v = ternary_matmul(rows, dense.weights) + layer.bias
        s = layer.shift
        if s:
            q = v >> s
            rest = v - (q << s)
            half = 1 << (s - 1)
            q += (rest > half) | ((rest == half) & (q % 2 == 1))
            v = q
        y = saturate(v, layer.relu)
        if isinstance(layer, Conv):
            n = len(a)
            out = layer.output_shape(a.shape[1:])
            y = np.moveaxis(y.reshape(n, *out[1:], out[0]), -1, 1)
        a = y.astype(np.int8)
    return a
