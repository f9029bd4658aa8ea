"""A network: an input shape and a chain of layers, each checked against what it receives.

The layers are those of :mod:`trine.contract.reference`: :class:`~trine.contract.reference.Layer`
(dense), :class:`~trine.contract.reference.Conv` (1-D or 2-D),
:class:`~trine.contract.reference.MaxPool` and :class:`~trine.contract.reference.Flatten`.
:func:`network_shapes` follows the shapes through the chain and names the first layer that
does not fit what comes before it; :func:`run_network` is the normative forward pass, on one
sample or a batch (a leading sample axis); :func:`ternary_inputs` says which layers receive
trits (the outputs of a layer with ternary activations, through any pooling and flatten);
:func:`layer_macs` and :func:`network_macs` count the multiply-accumulates of one sample, the
one definition of a MAC that the host's figures and the benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trine.contract.errors import FormatError
from trine.contract.reference import (
    Conv,
    Flatten,
    Layer,
    MaxPool,
    _check_activations,
    _layer_forward,
)
from trine.contract.spec import ACT_MAX, ACT_MIN

__all__ = ["LAYER_TYPES", "layer_kind", "default_input_shape", "network_shapes", "run_network",
           "ternary_inputs", "layer_macs", "network_macs"]

#: Everything a network is made of.
LAYER_TYPES = (Layer, Conv, MaxPool, Flatten)


def layer_kind(layer) -> str:
    """``"Dense"``, ``"Conv1d"``, ``"Conv2d"``, ``"MaxPool1d"``, ``"MaxPool2d"`` or
    ``"Flatten"``."""
    return "Dense" if isinstance(layer, Layer) else layer.kind


def default_input_shape(layers: Sequence) -> tuple[int, ...]:
    """The input shape a network of dense layers implies: ``(K,)`` of its first layer.

    Raises
    ------
    FormatError
        If the network does not start with a dense layer (its input shape must be given).
    """
    if layers and isinstance(layers[0], Layer):
        return (layers[0].fan_in,)
    first = layer_kind(layers[0]) if layers else "nothing"
    raise FormatError(f"a network that starts with {first} needs its input shape")


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    if (not isinstance(shape, tuple | list) or not 1 <= len(shape) <= 3
            or not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1
                       for d in shape)):
        raise FormatError(f"input shape must be (K,), (C, L) or (C, H, W) with every size >= 1, "
                          f"not {shape!r}")
    return tuple(int(d) for d in shape)


def network_shapes(layers: Sequence, input_shape=None) -> list[tuple[int, ...]]:
    """The shape of the input and of every layer's output, ``len(layers) + 1`` shapes.

    Raises
    ------
    FormatError
        For an empty list, an element that is no layer, or the first layer whose input does
        not fit it (wrong rank, channels or width; a kernel larger than its padded input; a
        pool window that does not divide), naming the layer by index and kind.
    """
    if len(layers) == 0:
        raise FormatError("a network needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, LAYER_TYPES):
            raise FormatError(f"layer {i} must be a trine.contract.reference.Layer, Conv, "
                              f"MaxPool or Flatten, not {type(layer).__name__}")
    shape = _check_shape(default_input_shape(layers) if input_shape is None else input_shape)
    shapes = [shape]
    for i, layer in enumerate(layers):
        kind = layer_kind(layer)
        if isinstance(layer, Layer):
            if len(shape) != 1:
                raise FormatError(f"layer {i} ({kind}) needs a flat input, not {shape}: put a "
                                  "Flatten before it")
            if shape[0] != layer.fan_in:
                before = f"layer {i - 1} has {shape[0]} outputs" if i else (
                    f"the input has {shape[0]} values")
                raise FormatError(f"layer {i} expects {layer.fan_in} inputs but {before}")
            shape = (layer.fan_out,)
        else:
            try:
                shape = layer.output_shape(shape)
            except FormatError as e:
                raise FormatError(f"layer {i} ({kind}): {e}") from None
        shapes.append(shape)
    return shapes


def layer_macs(layers: Sequence, input_shape=None) -> list[int]:
    """The multiply-accumulates of each layer for one sample, ``len(layers)`` counts.

    A dense layer of fan-in ``K`` and fan-out ``M`` takes ``K x M``; a convolution takes
    ``C_out x C_in x k`` (``x kh x kw`` in 2-D) at every output position, those that read zero
    padding included (the array computes them all); max-pooling and flatten take none. Every
    weight counts, zeros too: a MAC is a weight applied to an activation, whatever its trit.

    Raises
    ------
    FormatError
        For layers that do not chain (see :func:`network_shapes`).
    """
    shapes = network_shapes(layers, input_shape)
    counts = []
    for layer, out in zip(layers, shapes[1:], strict=True):
        if isinstance(layer, Layer):
            counts.append(layer.fan_in * layer.fan_out)
        elif isinstance(layer, Conv):
            positions = 1
            for n in out[1:]:
                positions *= n
            counts.append(int(layer.weights.size) * positions)
        else:
            counts.append(0)
    return counts


def network_macs(layers: Sequence, input_shape=None) -> int:
    """The multiply-accumulates of one sample through ``layers``: the sum of
    :func:`layer_macs`."""
    return sum(layer_macs(layers, input_shape))


def ternary_inputs(layers: Sequence) -> tuple[bool, ...]:
    """For each layer, whether what it receives is trits: the network's input is int8; a
    dense or convolution layer's output is trits exactly when it has a
    ``ternary_threshold``; max-pooling and flatten pass on what they receive (the maximum of
    trits is a trit). A weighted layer with ternary inputs computes the same integer dot
    product as with int8 ones (:mod:`trine.contract.reference`); the flag says where a
    device may use a trit-by-trit datapath and keep the activations 5 per byte.

    Raises
    ------
    FormatError
        For an element that is no layer, naming it.
    """
    out = []
    trits = False
    for i, layer in enumerate(layers):
        if not isinstance(layer, LAYER_TYPES):
            raise FormatError(f"layer {i} must be a trine.contract.reference.Layer, Conv, "
                              f"MaxPool or Flatten, not {type(layer).__name__}")
        out.append(trits)
        if isinstance(layer, Layer | Conv):
            trits = layer.ternary_threshold is not None
    return tuple(out)


def run_network(x, layers: Sequence, input_shape=None) -> np.ndarray:
    """Run ``layers`` on one input of ``input_shape`` or a batch ``(N, *input_shape)``.

    ``input_shape`` defaults to ``(K,)`` of a first dense layer. Returns int8, the last
    layer's output for the one sample or for each sample of the batch.

    Raises
    ------
    FormatError
        For layers that do not chain (see :func:`network_shapes`), or inputs that are not
        int8-valued integers of the input shape.
    """
    shapes = network_shapes(layers, input_shape)
    shape = shapes[0]
    if all(isinstance(layer, Layer) for layer in layers):  # the MLP path, as it always was
        y = _check_activations(x, shape[0])
        for layer in layers:
            y = _layer_forward(y, layer)
        return y
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise FormatError(f"x must be an integer array (int8 activations), not dtype {a.dtype}")
    single = a.shape == shape
    if not single and a.shape[1:] != shape:
        raise FormatError(f"x must have shape {shape} or (N, {', '.join(map(str, shape))}), "
                          f"not {a.shape}")
    if a.dtype != np.int8:
        bad = (a < ACT_MIN) | (a > ACT_MAX)
        if bad.any():
            pos = tuple(int(v) for v in np.argwhere(bad)[0])
            raise FormatError(f"x must be in [{ACT_MIN}, {ACT_MAX}]: value {int(a[pos])} at "
                              f"{pos}")
        a = a.astype(np.int8)
    y = a[np.newaxis] if single else a
    for layer in layers:
        y = _layer_forward(y, layer) if isinstance(layer, Layer) else layer(y)
    return y[0] if single else y
