"""The importer's check of itself: does the integer program still compute the float model?

:func:`check_program` runs the float network and the integer program side by side on the same
inputs (the calibration inputs, as no labels are needed) and measures

* the top-1 agreement: the fraction of inputs on which both predict the same class;
* the output correlation: Pearson's correlation of all outputs (scale-free, so the int8
  outputs compare with the float logits as they are);
* the same correlation after every weighted layer, and how much each layer loses of it: the
  layer whose correlation falls most is the one to blame when the program disagrees.

:meth:`ImportCheck.refusal` says why a program should not be written: an agreement below
:data:`MIN_AGREEMENT`, unless the float model's own top-1 is a tie on most inputs (outputs
equal to within :data:`TIE` of their scale, as an all-zero layer gives): then its class is not
a thing a program can agree with, and agreement says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trine.contract.network import layer_kind
from trine.contract.reference import Conv, Layer
from trine.host.program import Program
from trine.host.ternarize import float_activations

__all__ = ["MIN_AGREEMENT", "TIE", "LayerCheck", "ImportCheck", "check_program",
           "correlation"]

#: Below this top-1 agreement with the float model the importer refuses (unless forced).
MIN_AGREEMENT = 0.5
#: The float model's top-1 is a tie when its two largest outputs differ by less than this
#: fraction of the largest output magnitude over all inputs (float64 rounding, not a choice).
TIE = 1e-9


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of two arrays of the same size, flattened; 1.0 if both are
    constant and equal, 0.0 if only one is constant."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    nx, ny = float(np.sqrt(np.vdot(x, x))), float(np.sqrt(np.vdot(y, y)))
    if nx == 0 or ny == 0:
        return 1.0 if nx == ny and np.array_equal(a, b) else 0.0
    return float(np.clip(np.vdot(x, y) / (nx * ny), -1.0, 1.0))


@dataclass(frozen=True)
class LayerCheck:
    """One weighted layer of the program next to the float model.

    Members
    -------
    index : int
        The layer's index in the program.
    kind : str
        ``"dense"`` or ``"conv"`` (:func:`trine.contract.network.layer_kind`).
    correlation : float
        Of the program's activations after this layer with the float model's.
    loss : float
        How much correlation this layer loses: the previous weighted layer's (1 for the first)
        minus its own.
    """

    index: int
    kind: str
    correlation: float
    loss: float


@dataclass(frozen=True)
class ImportCheck:
    """What :func:`check_program` measured.

    Members
    -------
    n : int
        Inputs compared.
    agreement : float
        Top-1 agreement of program and float model.
    correlation : float
        Of their outputs.
    float_decided : float
        The share of the inputs on which the float model's top-1 is not a tie (see
        :data:`TIE`).
    layers : tuple of LayerCheck
        One per weighted layer.
    """

    n: int
    agreement: float
    correlation: float
    float_decided: float
    layers: tuple[LayerCheck, ...]

    @property
    def worst(self) -> LayerCheck | None:
        """The weighted layer that loses the most correlation (None without layers)."""
        return max(self.layers, key=lambda c: c.loss, default=None)

    @property
    def checkable(self) -> bool:
        """Whether the float model's top-1 is decided on most inputs (see the module)."""
        return self.float_decided >= MIN_AGREEMENT

    def refusal(self, threshold: float = MIN_AGREEMENT) -> str | None:
        """Why the program should not be written, or None: an agreement below ``threshold``
        on a checkable model. The reason names the worst layer."""
        if self.agreement >= threshold or not self.checkable:
            return None
        text = (f"the program agrees with the float model on {self.agreement:.1%} of the "
                f"{self.n} calibration inputs (below {threshold:.0%}; output correlation "
                f"{self.correlation:.3f})")
        worst = self.worst
        if worst is not None:
            before = worst.correlation + worst.loss
            text += (f"; layer {worst.index} ({worst.kind}) loses the most: correlation "
                     f"{before:.3f} -> {worst.correlation:.3f}")
        return text


def check_program(float_layers: Sequence, program: Program, x: Any,
                  input_shape: Sequence[int] | None = None) -> ImportCheck:
    """Compare ``program`` with the float network it was made from on raw inputs ``x``.

    Parameters
    ----------
    float_layers : list of layers
        The float network (:mod:`trine.host.ternarize`'s format), whose weighted layers are
        the program's, in order.
    program : Program
        With an ``input_scale``.
    x : float array (N, *input_shape) or flat (N, K)
    input_shape : tuple of int, optional
        Default the program's.

    Returns
    -------
    ImportCheck
    """
    shape = tuple(program.input_shape if input_shape is None else input_shape)
    xs = np.asarray(x, np.float64).reshape(len(x), *shape)
    floats = float_activations(list(float_layers), xs, shape)
    a = program.quantize_input(xs)
    checks: list[LayerCheck] = []
    previous = 1.0
    for i, layer in enumerate(program.layers):
        a = layer(a)
        if isinstance(layer, Layer | Conv):
            c = correlation(a, floats[i])
            checks.append(LayerCheck(i, layer_kind(layer), c, previous - c))
            previous = c
    n = len(xs)
    out = a.reshape(n, -1).astype(np.float64)
    ref = floats[-1].reshape(n, -1)
    float_class = ref.argmax(axis=1)
    if ref.shape[1] > 1:
        top2 = np.sort(ref, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        decided = float(np.mean(margin > TIE * float(np.abs(ref).max())))
    else:
        decided = 1.0  # one output: its argmax is always 0
    return ImportCheck(
        n=n, agreement=float(np.mean(out.argmax(axis=1) == float_class)),
        correlation=correlation(out, ref), float_decided=decided, layers=tuple(checks),
    )
