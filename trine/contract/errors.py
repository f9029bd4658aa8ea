"""The root of every error a user can cause, and the parameter checks that raise them.

Everything trine raises for bad input (a parameter out of range, a malformed file, a device
that does not answer, a design that does not fit) is a :class:`TrineError`: the command line
prints it as one line and exits with status 2. Anything else is a bug and keeps its traceback.
Each layer defines its own subclasses next to the code that raises them; the ones here are
shared by every layer.
"""

from __future__ import annotations

__all__ = ["TrineError", "ParameterError", "ParameterTypeError", "FormatError", "check_int"]


class TrineError(Exception):
    """An error the user can cause and fix: bad input, a missing tool, an absent device."""


class ParameterError(TrineError, ValueError):
    """A parameter outside its range."""


class ParameterTypeError(ParameterError, TypeError):
    """A parameter of the wrong type."""


class FormatError(TrineError, ValueError):
    """Data that breaks a format of the contract: trits, packed bytes, activations, layers."""


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer in range, else raise with a message naming it.

    Raises
    ------
    ParameterTypeError
        If ``value`` is not an ``int`` (``bool`` is refused too).
    ParameterError
        If it is below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ParameterError(f"{name} must be {bound}, not {value}")
    return value
