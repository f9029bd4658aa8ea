"""End to end: the real Client, over socket://, to the simulated RTL device (trine.sim.serve).

Every output is compared with Program.run_reference by np.array_equal. With faults injected
between them, every call either returns exactly the reference's answer or raises a
DeviceError: never a wrong answer, never a hang (socket timeouts and bounded retries).
"""

import numpy as np
import pytest
from conftest import CNN_KINDS, random_cnn, random_layers

from trine.contract.reference import Layer
from trine.host.client import Client
from trine.host.program import Program
from trine.host.transport import DeviceError
from trine.sim.faults import Faults, FaultyProxy
from trine.sim.serve import serve

# Small enough to keep the simulated device quick, large enough for ragged tiles.
DEVICE = dict(lanes=4, rows=3, weight_words=512, bias_depth=256, act_words=96, table_words=160,
              max_batch=4)


def random_program(rng, max_width=40, max_layers=4):
    n = int(rng.integers(1, max_layers + 1))
    widths = [int(rng.integers(1, max_width + 1)) for _ in range(n + 1)]
    return Program(random_layers(rng, widths, bias=500, shifts=6))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def icarus_byte(device_server):
    return device_server("icarus", "byte", **DEVICE)


@pytest.mark.cocotb
def test_random_programs_are_bit_exact(icarus_byte):
    rng = np.random.default_rng(2026)
    programs = [random_program(rng) for _ in range(4)]
    programs.append(Program([Layer(rng.integers(-1, 2, (40, 1)), rng.integers(-9, 9, 40), 0,
                                   True),  # K = 1, then the maximum width
                             Layer(rng.integers(-1, 2, (40, 40)), rng.integers(-9, 9, 40), 3,
                                   False)]))
    with Client(icarus_byte, timeout=30) as client:
        for program in programs:
            client.load(program)
            x = rng.integers(-128, 128, (6, program.input_width)).astype(np.int8)
            y, cycles = client.infer_batch(x)  # 6 samples: two runs of at most 4
            assert np.array_equal(y, program.run_reference(x))
            assert len(cycles) == 2 and all(c > 0 for c in cycles)
            y1, _ = client.infer(x[0])
            assert np.array_equal(y1, program.run_reference(x[0]))


@pytest.mark.cocotb
def test_random_cnns_are_bit_exact(icarus_byte):
    """Conv1d/Conv2d with strides and padding, fused pooling, flatten and dense layers."""
    rng = np.random.default_rng(2027)
    with Client(icarus_byte, timeout=30) as client:
        for kind in CNN_KINDS:
            layers, shape = random_cnn(rng, kind)
            program = Program(layers, input_shape=shape)
            client.load(program)
            x = rng.integers(-128, 128, (5, *shape)).astype(np.int8)
            y, cycles = client.infer_batch(x)
            assert np.array_equal(y, program.run_reference(x)), kind
            assert all(c > 0 for c in cycles)


@pytest.mark.cocotb
def test_uart_mode_is_bit_exact():
    rng = np.random.default_rng(7)
    program = random_program(rng, max_width=12, max_layers=2)
    with serve("icarus", "uart", **DEVICE) as url, Client(url, timeout=60) as client:
        client.load(program)
        x = rng.integers(-128, 128, (2, program.input_width)).astype(np.int8)
        y, _ = client.infer_batch(x)
        # the load's WRITEs went out in a window: the device's receive buffer kept every
        # frame that arrived while it answered the one before
        assert client.stats.retries == 0 and client.info().rx_buffer > 0
    assert np.array_equal(y, program.run_reference(x))


@pytest.mark.cocotb
@pytest.mark.parametrize(
    "faults",
    [
        Faults(flip=0.002),
        Faults(drop=0.002, duplicate=0.002),
        Faults(garbage=0.003, flip=0.001),
        Faults(stall_every=3000, stall_seconds=0.6),
    ],
    ids=["flips", "drops-duplicates", "garbage", "stalls"],
)
def test_faults_never_give_a_wrong_answer(icarus_byte, faults):
    rng = np.random.default_rng(11)
    program = random_program(rng, max_width=30, max_layers=3)
    outcomes = {"right": 0, "error": 0}
    with FaultyProxy(port_of(icarus_byte), faults, seed=5) as proxy:
        # 8 tries: a v3 frame carries a 14-byte tag, so more of them meet a fault
        with Client(proxy.url, timeout=0.5, retries=8) as client:
            try:
                client.load(program)
            except DeviceError:
                pytest.fail("loading failed although every fault was recoverable by retries")
            for _ in range(6):
                x = rng.integers(-128, 128, (3, program.input_width)).astype(np.int8)
                try:
                    y, _ = client.infer_batch(x)
                except DeviceError:
                    outcomes["error"] += 1
                    continue
                assert np.array_equal(y, program.run_reference(x)), "a wrong answer got through"
                outcomes["right"] += 1
            stats = client.stats
    injected = sum(dataclass_sum(c) for c in proxy.counts.values())
    assert injected > 0, "the proxy injected no fault: the test proves nothing"
    assert outcomes["right"] >= 1
    assert stats.retries > 0


def dataclass_sum(counts) -> int:
    return counts.flipped + counts.dropped + counts.duplicated + counts.garbage + counts.stalls
