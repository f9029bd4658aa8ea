"""The gateware's side of :class:`trine.contract.params.AcceleratorParams`: the check every
component makes of its ``params`` argument, and the base of signatures sized by them."""

from __future__ import annotations

from amaranth.lib import wiring

from trine.contract.errors import ParameterTypeError
from trine.contract.params import AcceleratorParams

__all__ = ["check_params", "ParamsSignature"]


def check_params(params) -> AcceleratorParams:
    """``params`` if it is an :class:`AcceleratorParams`.

    Raises
    ------
    ParameterTypeError
        Otherwise.
    """
    if not isinstance(params, AcceleratorParams):
        raise ParameterTypeError(f"params must be a trine.contract.params.AcceleratorParams, "
                                 f"not {params!r}")
    return params


class ParamsSignature(wiring.Signature):
    """A signature whose members follow from an :class:`AcceleratorParams`: two are equal when
    they are of the same class and their parameters are equal."""

    def __init__(self, params: AcceleratorParams, members):
        self.params = check_params(params)
        super().__init__(members)

    def __eq__(self, other):
        return type(self) is type(other) and self.params == other.params

    def __hash__(self):
        return hash((type(self), self.params))

    def __repr__(self):
        return f"{type(self).__name__}({self.params!r})"
