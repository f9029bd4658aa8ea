"""Network architectures as a user types them: ``"c64k5s2p1,c64k3s2p1,c64k3s2p1"``.

An architecture is a comma-separated list of layers, applied in order to the input; a dense
classifier with one output per class (no ReLU) is appended at the end, after a flatten if the
last layer is not already flat. Every convolution and hidden dense layer has a ReLU.

===============================  =================================================================
token                            layer
===============================  =================================================================
``c<C>k<k>[s<s>][p<p>]``         convolution with ``C`` output channels, kernel ``k``, stride
                                 ``s`` (default 1), zero padding ``p`` (default 0); 1-D or 2-D
                                 after the input. In 2-D ``k3`` is 3 x 3 and ``k3x2`` is 3 x 2
                                 (the same for ``s`` and ``p``)
``m<k>``                         max-pooling with kernel = stride ``k`` (``m2`` is 2 x 2 in 2-D,
                                 ``m2x1`` pools the height only)
``f``                            flatten, C order (inserted by itself before a dense layer)
``d<M>``                         hidden dense layer of ``M`` outputs
===============================  =================================================================

Examples: MNIST-1D (input ``(1, 40)``) ``c64k5s2p1,c64k3s2p1,c64k3s2p1``; digits (input
``(1, 8, 8)``) ``c32k3p1,m2,c64k3p1,m2``; an MLP ``d256,d128``.

:func:`parse_arch` turns the text into :class:`LayerSpec` entries and checks, layer by layer,
that the shapes chain (the errors name the token).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from trine.contract.errors import FormatError, TrineError
from trine.contract.reference import Conv, Flatten, Layer, MaxPool

__all__ = ["ArchError", "LayerSpec", "parse_arch", "mlp_arch", "arch_text", "spec_layers"]


class ArchError(TrineError, ValueError):
    """An architecture string that cannot be read, or whose layers do not fit its input."""


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an architecture.

    ``kind`` is ``"conv"``, ``"pool"``, ``"flatten"`` or ``"dense"``; ``width`` the output
    channels (conv) or outputs (dense); ``kernel``, ``stride``, ``padding`` one int per
    spatial axis; ``relu`` whether a ReLU follows (convs and hidden dense layers).
    """

    kind: str
    width: int = 0
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    relu: bool = False

    @property
    def weighted(self) -> bool:
        return self.kind in ("conv", "dense")


_NUM = r"(\d+(?:x\d+)?)"
_CONV = re.compile(rf"c(\d+)k{_NUM}(?:s{_NUM})?(?:p{_NUM})?")
_POOL = re.compile(rf"m{_NUM}")
_DENSE = re.compile(r"d(\d+)")


def _axes(text: str | None, ndim: int, default: int, token: str) -> tuple[int, ...]:
    if text is None:
        return (default,) * ndim
    values = tuple(int(v) for v in text.split("x"))
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise ArchError(f"{token!r}: {text} gives {len(values)} sizes for a {ndim}-D input")
    return values


def spec_layers(specs: list[LayerSpec], input_shape: tuple[int, ...]) -> list:
    """Contract layers of the architecture's shapes, all weights zero (for shape checks and
    for the widths a trainer needs)."""
    layers, shape = [], tuple(input_shape)
    for spec in specs:
        if spec.kind == "conv":
            w = np.zeros((spec.width, shape[0], *spec.kernel), np.int8)
            layer = Conv(w, np.zeros(spec.width, np.int64), spec.stride, spec.padding, 0,
                         spec.relu)
        elif spec.kind == "pool":
            layer = MaxPool(spec.kernel, ndim=len(spec.kernel))
        elif spec.kind == "flatten":
            layer = Flatten()
        else:
            layer = Layer(np.zeros((spec.width, math.prod(shape)), np.int8),
                          np.zeros(spec.width, np.int64), 0, spec.relu)
        layers.append(layer)
        shape = (layer.fan_out,) if isinstance(layer, Layer) else layer.output_shape(shape)
    return layers


def parse_arch(text: str, input_shape: tuple[int, ...], n_classes: int) -> list[LayerSpec]:
    """The layers of architecture ``text`` on inputs of ``input_shape``, the classifier of
    ``n_classes`` outputs appended; flattens are inserted before dense layers that need them.

    Raises
    ------
    ArchError
        For a token that is not one of the table's, sizes that do not fit the input's rank,
        or layers whose shapes do not chain (naming the token).
    """
    if not isinstance(text, str):
        raise ArchError(f"an architecture must be a string such as 'c64k5s2p1,d128', not "
                        f"{text!r}")
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    specs: list[LayerSpec] = []
    shape = tuple(input_shape)
    origin: list[str] = []
    for token in [*tokens, "<classifier>"]:
        flat = len(shape) == 1
        ndim = len(shape) - 1
        if token == "<classifier>":
            new = [LayerSpec("dense", n_classes, relu=False)]
        elif m := _CONV.fullmatch(token):
            if flat:
                raise ArchError(f"{token!r}: a convolution needs a (C, L) or (C, H, W) input, "
                                f"not the flat {shape}")
            new = [LayerSpec("conv", int(m[1]), _axes(m[2], ndim, 1, token),
                             _axes(m[3], ndim, 1, token), _axes(m[4], ndim, 0, token), True)]
        elif m := _POOL.fullmatch(token):
            if flat:
                raise ArchError(f"{token!r}: max-pooling needs a (C, L) or (C, H, W) input")
            new = [LayerSpec("pool", kernel=_axes(m[1], ndim, 1, token))]
        elif token == "f":
            new = [LayerSpec("flatten")]
        elif m := _DENSE.fullmatch(token):
            new = [LayerSpec("dense", int(m[1]), relu=True)]
        else:
            raise ArchError(f"{token!r} is not a layer: write c<C>k<k>[s<s>][p<p>] (conv), "
                            f"m<k> (max-pool), f (flatten) or d<M> (dense), e.g. "
                            f"'c64k5s2p1,m2,d128'")
        if new[0].kind == "dense" and not flat:
            new.insert(0, LayerSpec("flatten"))
        for spec in new:
            if spec.kind in ("conv", "dense") and spec.width < 1:
                raise ArchError(f"{token!r}: a layer needs at least one output")
            try:
                (layer,) = spec_layers([spec], shape)
                shape = (layer.fan_out,) if isinstance(layer, Layer) else layer.output_shape(shape)
            except FormatError as e:
                where = "the classifier" if token == "<classifier>" else repr(token)
                raise ArchError(f"{where}: {e}") from None
            specs.append(spec)
            origin.append(token)
    return specs


def mlp_arch(hidden: tuple[int, ...]) -> str:
    """The architecture string of an MLP with these hidden widths."""
    return ",".join(f"d{w}" for w in hidden)


def arch_text(specs: list[LayerSpec]) -> str:
    """The architecture string of ``specs`` without the classifier (the inverse of
    :func:`parse_arch`)."""
    out = []
    for spec in specs[:-1]:
        def axes(values):
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))
        if spec.kind == "conv":
            text = f"c{spec.width}k{axes(spec.kernel)}"
            if any(v != 1 for v in spec.stride):
                text += f"s{axes(spec.stride)}"
            if any(spec.padding):
                text += f"p{axes(spec.padding)}"
            out.append(text)
        elif spec.kind == "pool":
            out.append(f"m{axes(spec.kernel)}")
        elif spec.kind == "flatten":
            continue
        else:
            out.append(f"d{spec.width}")
    return ",".join(out)
