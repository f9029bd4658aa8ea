"""trine.sim.serve: the simulated device behind a TCP socket, driven with raw pyserial and frames.

One server per (simulator, mode), shared by the module; every test opens its own connection, so
the server also shows that it serves clients one after the other. Every wait is bounded: the
serial timeout, and the server is killed when the module ends.
"""

import struct
import time

import numpy as np
import pytest
import serial
from conftest import stops_listening

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    TABLE_WORD_BYTES,
    beat_bytes,
)
from trine.contract.errors import ParameterError
from trine.contract.network import run_network
from trine.contract.params import check_fits
from trine.contract.protocol import (
    ACK,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_PAYLOAD,
    WRITE_HEADER,
    DeviceInfo,
    Frame,
    FrameDecoder,
    Op,
    Target,
    crc8,
    encode_frame,
    read_payload,
    run_payload,
    write_payload,
)
from trine.contract.reference import Layer
from trine.sim.serve import DeviceConfig, ServeError, main, serve

ANSWER_TIMEOUT = 30.0  # seconds; the slowest answer here takes well under 5

DEVICES = [
    pytest.param(("icarus", "uart"), marks=pytest.mark.cocotb, id="icarus-uart"),
    pytest.param(("icarus", "byte"), marks=pytest.mark.cocotb, id="icarus-byte"),
    pytest.param(("verilator", "byte"), marks=pytest.mark.verilator, id="verilator-byte"),
]


@pytest.fixture(scope="module", params=DEVICES)
def device(request, device_server):
    sim, mode = request.param
    return device_server(sim, mode), DeviceConfig(mode=mode)


class RawHost:
    """Stop-and-wait requests over pyserial, with nothing but trine.contract.protocol."""

    def __init__(self, url: str):
        self.port = serial.serial_for_url(url, timeout=ANSWER_TIMEOUT)
        self.decoder = FrameDecoder()
        self.seq = 0

    def close(self) -> None:
        self.port.close()

    def receive(self) -> Frame:
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            data = self.port.read(max(1, self.port.in_waiting))
            if frames := self.decoder.feed(data):
                assert len(frames) == 1, frames
                return frames[0]
        raise AssertionError(f"no answer within {ANSWER_TIMEOUT} s")

    def request(self, op: int, payload: bytes = b"", *, prefix: bytes = b"") -> Frame:
        self.seq = (self.seq + 1) % 256
        self.port.write(prefix + encode_frame(op, self.seq, payload))
        frame = self.receive()
        assert frame.seq == self.seq, frame
        return frame

    def write(self, target: int, word: int, data: bytes, word_size: int) -> None:
        per = (MAX_PAYLOAD - WRITE_HEADER) // word_size * word_size
        for start in range(0, len(data), per):
            f = self.request(
                Op.WRITE,
                write_payload(target, word + start // word_size, data[start : start + per]),
            )
            assert f.op == Op.WRITE | ACK, f


@pytest.fixture
def host(device):
    h = RawHost(device[0])
    yield h
    h.close()


def test_info_reports_the_configuration(host, device):
    f = host.request(Op.INFO)
    assert f.op == Op.INFO | ACK
    assert DeviceInfo.from_bytes(f.payload) == device[1].info()


def test_network_matches_reference(host, device):
    cfg = device[1]
    rng = np.random.default_rng(7)
    widths = [21, 13, 6]  # ragged tiles on an 8 x 4 array
    layers = [
        Layer(
            rng.integers(-1, 2, (m, k)), rng.integers(-300, 300, m), int(rng.integers(0, 4)), relu
        )
        for k, m, relu in zip(widths[:-1], widths[1:], (True, False), strict=True)
    ]
    image = check_fits(layers, cfg.params.limits())
    x = rng.integers(-128, 128, (3, widths[0])).astype(np.int8)
    lanes = cfg.params.lanes

    host.write(Target.WEIGHTS, 0, image.weights, beat_bytes(lanes, cfg.params.rows))
    host.write(Target.BIAS, 0, image.bias_bytes(), BIAS_STORE_BYTES)
    host.write(Target.LAYER, 0, image.table_bytes(), TABLE_WORD_BYTES)
    # the samples one after the other where the image puts the network's input
    host.write(Target.INPUT, image.input.base, image.input.pack(x).tobytes(), lanes)
    run = host.request(Op.RUN, run_payload(len(image.entries), len(x)))
    assert run.op == Op.RUN | ACK, run
    assert struct.unpack("<I", run.payload)[0] > 0  # cycles
    size = image.output.sample_words * lanes * len(x)
    raw = host.request(Op.READ, read_payload(Target.INPUT, image.output.base, size)).payload
    y = image.output.unpack(np.frombuffer(raw, np.int8).reshape(len(x), -1))
    assert np.array_equal(y, run_network(x, layers))


def test_garbage_then_a_good_frame_is_answered(host):
    # A false SYNC whose header check fails, then bytes without SYNC: the decoder (and the
    # gateware, which hunts again after a bad header) end up hunting.
    header = bytes(range(1, HEADER_SIZE - 1))
    garbage = b"\x00\xff\x13noise" + bytes([0xA5]) + header + bytes([crc8(header) ^ 1]) + b"tail"
    probe = FrameDecoder()
    assert probe.feed(garbage) == [] and not probe.in_frame
    f = host.request(Op.INFO, prefix=garbage)  # garbage and frame in one write
    assert f.op == Op.INFO | ACK


def test_partial_frame_is_dropped_after_a_pause(host):
    # Half a header, then silence: the device's inter-byte timeout must drop it, so the
    # bridge has to turn the host's pause into quiet simulated time.
    host.port.write(encode_frame(Op.INFO, 0x77)[:4])
    time.sleep(0.3)
    f = host.request(Op.INFO)
    assert f.op == Op.INFO | ACK


def test_client_that_leaves_mid_frame_does_not_disturb_the_next(device):
    port = serial.serial_for_url(device[0], timeout=ANSWER_TIMEOUT)
    port.write(encode_frame(Op.WRITE, 1, write_payload(Target.INPUT, 0, bytes(100)))[:50])
    port.close()
    host = RawHost(device[0])
    try:
        assert host.request(Op.INFO).op == Op.INFO | ACK
    finally:
        host.close()


#: The client's pause, and per engine a baud rate at which the device's inter-byte timeout (64
#: byte times) takes the bridge longer than that to simulate, even on a fast machine: 38k cycles
#: on Icarus (over a second on this machine), 1.5M on the native engine (about half a second).
PAUSE_S = 0.3
SLOW_DEVICES = [
    pytest.param(("icarus", 200_000), marks=pytest.mark.cocotb, id="icarus"),
    pytest.param(("native", 5_000), marks=pytest.mark.verilator, id="native"),
]


@pytest.fixture(params=SLOW_DEVICES)
def slow_device(request, device_server) -> str:
    sim, baud = request.param
    return device_server(sim, "byte", baud=baud)


def test_a_pause_shorter_than_the_quiet_line_still_drops_the_partial_frame(slow_device):
    """The client's pause is shorter in wall time than the bridge takes to simulate the quiet
    line it begins with: the bytes on both sides of the pause must still not run together."""
    for _ in range(2):  # the second also waits for the first client's partial frame to go
        host = RawHost(slow_device)
        try:
            host.port.write(encode_frame(Op.INFO, 0x77)[:4])
            time.sleep(PAUSE_S)
            assert host.request(Op.INFO).op == Op.INFO | ACK
        finally:
            host.close()


def test_a_client_waiting_its_turn_keeps_its_pauses(slow_device):
    """A client that connects and pauses while another is served: its pause happened before
    the bridge got to it, and must still become a quiet line."""
    first = RawHost(slow_device)
    try:
        assert first.request(Op.INFO).op == Op.INFO | ACK
        second = RawHost(slow_device)
        try:
            second.port.write(encode_frame(Op.INFO, 0x77)[:4])
            time.sleep(PAUSE_S)
            second.port.write(encode_frame(Op.INFO, 9))
            time.sleep(PAUSE_S)  # both parts are in before the first client leaves
            first.close()
            f = second.receive()
            assert (f.op, f.seq) == (Op.INFO | ACK, 9)
        finally:
            second.close()
    finally:
        first.close()


def test_a_request_left_behind_by_a_client_is_answered_before_the_next(slow_device):
    """A client that sends a request and leaves before its turn: its bytes still reach the
    device (a serial port drains its output on close), so the next client does not wait out
    the bridge's quiet limit (over a minute on Icarus) for an answer that never comes."""
    first = RawHost(slow_device)
    try:
        assert first.request(Op.INFO).op == Op.INFO | ACK
        leaving = serial.serial_for_url(slow_device, timeout=ANSWER_TIMEOUT)
        leaving.write(encode_frame(Op.INFO, 5))
        time.sleep(PAUSE_S)  # read by the bridge before it goes
        leaving.close()
        nxt = RawHost(slow_device)
        try:
            first.close()
            assert nxt.request(Op.INFO).op == Op.INFO | ACK
        finally:
            nxt.close()
    finally:
        first.close()


@pytest.mark.cocotb
def test_once_stops_after_the_first_client():
    with serve("icarus", "byte") as url:
        host = RawHost(url)
        assert host.request(Op.INFO).op == Op.INFO | ACK
        host.close()
        # the listener closes when the simulator ends
        assert stops_listening(url, 20), "still listening after the first client left"


def test_serve_reports_a_server_that_dies():
    with pytest.raises(ServeError, match=r"(?s)exited with status 2 before listening.*error"):
        with serve("no-such-simulator", "byte", ready_timeout=60):
            pass


def test_serve_checks_the_parameters_before_starting():
    with pytest.raises(ParameterError, match="Lane count must be >= 1, not 0"):
        with serve("icarus", "byte", lanes=0, ready_timeout=60):
            pass


def test_only_loopback_addresses(capsys):
    assert main(["--port", "0", "--host", "0.0.0.0"]) == 2
    assert "loopback address only" in capsys.readouterr().err


def test_configuration_is_checked_at_once():
    with pytest.raises(ValueError, match="mode must be one of uart, byte"):
        DeviceConfig(mode="usb")
    with pytest.raises(ValueError, match="at least 4"):
        DeviceConfig(baud=6_000_000)


def test_a_burst_with_dropped_bytes_gets_every_answer_at_once(device_server):
    """INFO, garbage, INFO in one write: both answers come without more bytes being sent
    (the bridge keeps simulating while a complete request is unanswered)."""
    url = device_server("icarus", "byte")
    port = serial.serial_for_url(url, timeout=ANSWER_TIMEOUT)
    try:
        # enough zeros that the second INFO comes after the first's answer (a byte a cycle in,
        # several cycles per answer byte out): the device takes one frame at a time
        gap = bytes(10 * (FRAME_OVERHEAD + DeviceInfo.SIZE))
        port.write(encode_frame(Op.INFO, 1) + gap + encode_frame(Op.INFO, 2))
        decoder = FrameDecoder()
        frames = []
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while len(frames) < 2 and time.monotonic() < deadline:
            frames += decoder.feed(port.read(1) + port.read(port.in_waiting or 0))
        assert [f.seq for f in frames] == [1, 2]
    finally:
        port.close()
