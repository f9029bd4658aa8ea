"""A window of requests in flight (issue 13 §4): :meth:`trine.host.transport.Link.exchange` and
the client's loads and inferences through it, against a device with a receive buffer of a
chosen size (:class:`BufferedLine`, the device's behaviour at frame granularity: frames wait
in its buffer and are handled one at a time, in order; what does not fit is lost).

Checked: the bytes in flight never exceed the buffer; the window is really used; with lost
requests, lost, damaged and refused answers every output is the one of its own input, and the
load writes exactly the image; a stop halfway drains the answers still due; the RTL device is
exercised by tests/test_device.py and tests/test_e2e.py."""

from __future__ import annotations

import hashlib
import random
from collections import deque

import numpy as np
import pytest
from test_client import INFO, FakeDevice, random_program

from trine.contract.protocol import MAX_PAYLOAD, ErrorCode, FrameDecoder, Target
from trine.host.client import Client, DeviceChangedError
from trine.host.transport import MAX_IN_FLIGHT, DeviceError, DeviceRefusedError

WIDTHS = [50, 20, 7]


def outputs_of(sample: bytes) -> np.ndarray:
    """What the fake device computes: a function of the first 50 input bytes only."""
    return np.frombuffer(hashlib.blake2b(sample[:WIDTHS[0]], digest_size=7).digest(), np.int8)


class BufferedLine:
    """A transport to a :class:`FakeDevice` whose receive buffer holds ``capacity`` bytes.

    As on the device, a frame that arrives while the device is idle goes straight into its
    receiver, whatever its size; frames that arrive while it handles one wait in the buffer,
    in order, and a frame that does not fit there is lost. ``write`` delivers a frame (or
    loses it, when ``faults`` says so); ``read`` lets the device handle frames until one
    answer comes out (faults may lose, damage or refuse answers); with nothing left to handle
    it returns nothing at once, which the link takes as its timeout."""

    def __init__(self, device: FakeDevice, capacity: int, *, faults: float = 0.0,
                 seed: int = 0, on_frame=None):
        self.device, self.capacity = device, capacity
        self.faults, self.rng = faults, random.Random(seed)
        self.on_frame = on_frame
        self.receiving: bytes | None = None  # the frame in the receiver
        self.buffer: deque[bytes] = deque()  # the frames behind it
        self.level = self.max_level = self.max_frames = 0
        self.overflows = self.handled = 0
        self.damage: dict[str, int] = {"lost": 0, "drop": 0, "corrupt": 0, "nak": 0}
        self.decoder = FrameDecoder()

    def _fault(self) -> str:
        if self.rng.random() >= self.faults:
            return ""
        kind = self.rng.choice(list(self.damage))
        self.damage[kind] += 1
        return kind

    def write(self, data: bytes) -> None:
        if self.receiving is None:
            self.receiving = bytes(data)
        elif self.level + len(data) > self.capacity:
            self.overflows += 1
            return
        else:
            self.buffer.append(bytes(data))
            self.level += len(data)
        self.max_level = max(self.max_level, self.level)
        self.max_frames = max(self.max_frames, 1 + len(self.buffer))

    def read(self, n: int, deadline: float) -> bytes:
        while self.receiving is not None:
            data = self.receiving
            self.receiving = self.buffer.popleft() if self.buffer else None
            if self.receiving is not None:
                self.level -= len(self.receiving)
            fault = self._fault()
            if fault == "lost":
                continue
            (frame,) = self.decoder.feed(data)
            self.handled += 1
            if self.on_frame is not None:
                self.on_frame(self, frame)
            reply = _nak(frame, self.device) if fault == "nak" else self.device.answer(frame)
            if fault == "drop":
                continue
            if fault == "corrupt":
                reply = reply[:-1] + bytes([reply[-1] ^ 0x40])
            return reply
        return b""

    def close(self) -> None:
        pass


def _nak(frame, device: FakeDevice) -> bytes:
    from test_client import bound
    return bound(frame, 0xFF, bytes([frame.op, ErrorCode.BAD_CRC]), program=device.program,
                 owner=device.owner)


def make(capacity: int, *, claims: int | None = None, faults: float = 0.0, seed: int = 0,
         retries: int = 3, window: int | None = None, on_frame=None):
    info = INFO.__class__(**{**INFO.__dict__, "max_payload": MAX_PAYLOAD,
                             "rx_buffer": capacity if claims is None else claims})
    device = FakeDevice(info, outputs=outputs_of)
    line = BufferedLine(device, capacity, faults=faults, seed=seed, on_frame=on_frame)
    client = Client.over(line, timeout=0.05, retries=retries, window=window)
    return client, device, line


def samples(n: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, WIDTHS[0])).astype(np.int8)


def expected(x: np.ndarray) -> np.ndarray:
    return np.stack([outputs_of(row.tobytes()) for row in x])


@pytest.mark.parametrize("capacity", [256, 2048])
def test_requests_in_flight_stay_within_the_buffer(capacity):
    client, device, line = make(capacity)
    program = random_program(WIDTHS)
    client.load(program)
    x = samples(30)
    y, cycles = client.infer(x, batch=1)
    np.testing.assert_array_equal(y, expected(x))
    assert len(cycles) == 30
    assert line.overflows == 0 and line.max_level <= capacity
    assert line.max_frames > 1  # the window is used
    assert client.stats.retries == 0
    image = client.image
    assert bytes(device.memory[Target.WEIGHTS][:len(image.weights)]) == image.weights


def test_window_zero_waits_for_every_answer():
    client, _, line = make(2048, window=0)
    client.load(random_program(WIDTHS))
    x = samples(6)
    y, _ = client.infer(x, batch=1)
    np.testing.assert_array_equal(y, expected(x))
    assert line.max_frames == 1


def test_at_most_max_in_flight_frames():
    client, _, line = make(1 << 15)
    client.info()
    data = bytes(range(256)) * 4
    client.write_memory(Target.INPUT, 0, data[:64 * INFO.lanes])  # 64 words of the pool
    client._exchange([[client._read_requests(w % 64, 4, Target.INPUT)[0]] for w in range(200)])
    assert 1 < line.max_frames <= MAX_IN_FLIGHT


@pytest.mark.parametrize("seed", range(6))
def test_faults_never_pair_an_output_with_another_input(seed):
    """Lost requests, lost, damaged and NAKed answers, each about 3% of the frames: the load
    writes the image exactly, every output is its own input's, or the client gives up with
    an error (never a wrong answer)."""
    client, device, line = make(2048, faults=0.12, seed=seed, retries=10)
    program = random_program(WIDTHS)
    client.load(program)
    image = client.image
    for target, data in [(Target.WEIGHTS, image.weights), (Target.BIAS, image.bias_bytes()),
                         (Target.LAYER, image.table_bytes())]:
        assert bytes(device.memory[target][:len(data)]) == data
    x = samples(40, seed)
    y, cycles = client.infer(x, batch=1)
    np.testing.assert_array_equal(y, expected(x))
    x3 = samples(10, seed + 100)
    y3, cycles3 = client.infer(x3)  # runs of 3, 3, 3, 1
    np.testing.assert_array_equal(y3, expected(x3))
    assert len(cycles3) == 4
    assert sum(line.damage.values()) > 5 and client.stats.retries > 0


def test_a_device_with_less_buffer_than_it_claims_costs_retries_not_answers():
    """INFO says 2048 bytes, the device holds 400: frames are lost in every burst; the client
    retries them, and an output it returns is always its own input's."""
    client, _, line = make(400, claims=2048, retries=20)
    client.load(random_program(WIDTHS))
    x = samples(20)
    try:
        y, _ = client.infer(x, batch=1)
    except DeviceError as e:
        assert str(e).startswith("gave up on ")
    else:
        np.testing.assert_array_equal(y, expected(x))
    assert line.overflows > 0


def test_a_refusal_halfway_stops_the_window_and_drains_it():
    """A WRITE refused (BAD_ADDRESS) among many in flight: the load raises that refusal, the
    answers still due are read and dropped, and the next requests are answered normally."""
    client, device, line = make(2048)
    client.info()
    writes = [client._write_requests(Target.INPUT, bytes([w + 1]) * INFO.lanes, w)[0]
              for w in range(40)]
    writes.insert(20, client._write_requests(Target.INPUT, bytes(INFO.lanes), 64)[0])  # past
    with pytest.raises(DeviceRefusedError, match=r"WRITE \(INPUT word 64, 4 bytes\): BAD_ADDR"):
        client._exchange([[w] for w in writes])
    assert line.max_frames > 20
    assert line.receiving is None and not line.buffer  # nothing left in flight
    assert client.read_memory(Target.INPUT, 0, 8) == bytes([1] * 4 + [2] * 4)  # as usual


def test_another_host_halfway_through_a_windowed_load_is_caught():
    def intruder(line, frame):
        if line.handled == 6:  # another session writes: it owns the device from now on
            line.device.owner = 0x5EC0DE

    client, _, _ = make(2048, on_frame=intruder)
    with pytest.raises(DeviceChangedError, match="another host changed the device"):
        client.load(random_program(WIDTHS))
    assert client.program is None
