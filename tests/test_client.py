"""trine.host.client: the link behaviour of Client against scripted peers over a real socket://
port.

The peers speak trine.contract.protocol on a TCP socket on 127.0.0.1, so every test goes through
pyserial's
socket:// transport, the same code path as a serial port. Link tests script each answer (ACK,
NAK, silence, garbage, corrupted, truncated, stale); load/infer tests use ``FakeDevice``, which
stores what is written into per-target memories and answers READs with outputs the test chose.
It does no accelerator math.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import types
from collections.abc import Callable

import numpy as np
import pytest
import serial.urlhandler.protocol_socket

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    TABLE_WORD_BYTES,
    LayerEntry,
    beat_bytes,
)
from trine.contract.params import DeviceLimits
from trine.contract.protocol import (
    ACK,
    HEADER_SIZE,
    MAX_PAYLOAD,
    NAK,
    PROTOCOL_VERSION,
    READABLE,
    WRITE_HEADER,
    DeviceInfo,
    ErrorCode,
    Frame,
    FrameDecoder,
    Op,
    Target,
    encode_frame,
)
from trine.contract.reference import Layer
from trine.contract.spec import SPEC_VERSION
from trine.host.client import (
    Client,
    DeviceStatus,
    LinkStats,
    RunTimeoutError,
    program_digest,
)
from trine.host.program import Program, ProgramError, ProgramTooLargeError
from trine.host.transport import DeviceError, DeviceRefusedError, LinkError, SerialTransport

#: Seconds per try where a test makes the peer keep silent: every silence costs this much.
TIMEOUT = 0.2
#: Seconds per try elsewhere: long enough that a busy machine never causes a retry.
PATIENT = 2.0

Answer = Callable[[Frame], bytes]

# --------------------------------------------------------------------------------------------
# The peer: a TCP server thread that decodes requests and answers through a callback
# --------------------------------------------------------------------------------------------


class Peer:
    """Accepts one connection on 127.0.0.1 and answers every decoded request with
    ``answer(frame)`` (bytes to send; empty for silence)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Frame] = []
        self.raw: list[bytes] = []  # every request's bytes, re-encoded from the decoded frame
        self.closed = threading.Event()
        self.failure: BaseException | None = None
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(5)
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        decoder = FrameDecoder()
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    for frame in decoder.feed(data):
                        self.requests.append(frame)
                        self.raw.append(frame.encode())
                        reply = self.answer(frame)
                        if reply:
                            conn.sendall(reply)
            except OSError:
                pass
            except BaseException as e:  # a failing assertion in a callback: report it
                self.failure = e
        assert not decoder.errors, "the client sent a frame with a bad CRC"
        self.closed.set()

    def ops(self) -> list[int]:
        return [f.op for f in self.requests]

    def stop(self) -> None:
        self._server.close()
        self._thread.join(5)
        if self.failure is not None:
            raise self.failure


@pytest.fixture(autouse=True)
def quick_socket_close(monkeypatch):
    # pyserial's socket:// close() sleeps 0.3 s "in case of quick reconnects"; these tests
    # open a fresh port each, and the peer needs no such pause.
    monkeypatch.setattr(serial.urlhandler.protocol_socket, "time",
                        types.SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def peers():
    started: list[Peer] = []

    def start(answer: Answer) -> Peer:
        peer = Peer(answer)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


def connect(peer: Peer, retries: int = 3, timeout: float = PATIENT) -> Client:
    return Client(peer.url, timeout=timeout, retries=retries)


# --------------------------------------------------------------------------------------------
# Scripted answers
# --------------------------------------------------------------------------------------------


def bound(f: Frame, op: int, payload: bytes = b"", *, program: int | None = None,
          owner: int | None = None) -> bytes:
    """An answer to request ``f``: its seq, session and CRC, and by default the program the
    request expects and its own session as the owner (a device nobody else uses)."""
    return encode_frame(op, f.seq, payload, session=f.session, check=f.crc,
                        program=f.program if program is None else program,
                        owner=f.session if owner is None else owner)


def ack(payload: bytes = b"") -> Answer:
    return lambda f: bound(f, f.op | ACK, payload)


def nak(code: int, detail: bytes = b"") -> Answer:
    return lambda f: bound(f, NAK, bytes([f.op, code]) + detail)


def silence(f: Frame) -> bytes:
    return b""


def then(*answers: Answer) -> Answer:
    """Several answers to one request, back to back."""
    return lambda f: b"".join(a(f) for a in answers)


def stale(answer: Answer, back: int = 1) -> Answer:
    """``answer`` as if to the request ``back`` seqs earlier."""
    return lambda f: answer(Frame(f.op, (f.seq - back) & 0xFF, f.payload))


def flip(answer: Answer, index: int) -> Answer:
    """``answer`` with one bit flipped at byte ``index`` (negative: from the end)."""

    def flipped(f: Frame) -> bytes:
        data = bytearray(answer(f))
        data[index] ^= 0x10
        return bytes(data)

    return flipped


def truncated(answer: Answer, keep: int) -> Answer:
    return lambda f: answer(f)[:keep]


def scripted(*steps: Answer) -> Answer:
    """Answer the i-th request with ``steps[i]``; requests beyond the script get silence."""
    queue = list(steps)
    return lambda f: queue.pop(0)(f) if queue else b""


INFO = DeviceInfo(
    spec_version=SPEC_VERSION, protocol_version=PROTOCOL_VERSION, lanes=4, rows=3,
    max_batch=3, max_payload=32, act_words=64, table_words=40, weight_words=128,
    bias_depth=128, clock_hz=12_000_000, baud=3_000_000, max_run_cycles=1 << 20,
)
OTHER_INFO = DeviceInfo(**{**INFO.__dict__, "clock_hz": 48_000_000})
STATUS = struct.pack("<BBII", 0, 0, 1234, 5)


# --------------------------------------------------------------------------------------------
# Opening, arguments, life cycle
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_unreachable_socket_names_the_url():
    url = f"socket://127.0.0.1:{free_port()}"
    with pytest.raises(DeviceError) as info:
        Client(url)
    assert str(info.value) == f"cannot open {url}: connection refused"


def test_missing_serial_device_names_the_path(tmp_path):
    path = str(tmp_path / "ttyTRINE0")
    with pytest.raises(DeviceError) as info:
        Client(path)
    assert str(info.value) == f"cannot open {path}: no such file or directory"


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_serial_device_node_takes_the_same_path():
    # A pty stands in for /dev/ttyUSB1: pyserial's POSIX port, with its read timeouts.
    master, slave = os.openpty()
    answers = scripted(silence, ack(INFO.to_bytes()))

    def serve():
        decoder = FrameDecoder()
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            for frame in decoder.feed(data):
                os.write(master, answers(frame))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Client(os.ttyname(slave), timeout=TIMEOUT) as client:
            assert client.info() == INFO
            assert client.stats.retries == 1
    finally:
        os.close(slave)
        os.close(master)
        thread.join(2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"baud": 0}, "baud must be a positive integer, not 0"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, not nan"),
        ({"retries": -1}, "retries must be a non-negative integer, not -1"),
        ({"retries": 1.5}, "retries must be a non-negative integer, not 1.5"),
    ],
)
def test_bad_arguments_are_refused_before_opening(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Client("socket://127.0.0.1:1", **kwargs)


def test_context_manager_closes_the_port(peers):
    peer = peers(ack(STATUS))
    with connect(peer) as client:
        assert client.status() == DeviceStatus(False, 0, 1234, 5)
    assert peer.closed.wait(2)
    with pytest.raises(LinkError, match="^the link is closed$"):
        client.status()
    client.close()  # twice is harmless


# --------------------------------------------------------------------------------------------
# Requests, sequence numbers, statistics
# --------------------------------------------------------------------------------------------


def test_info_is_asked_once_and_gives_the_limits(peers):
    peer = peers(ack(INFO.to_bytes()))
    with connect(peer) as client:
        assert client.info() == INFO
        assert client.info() == INFO
        limits = client.limits()
    assert peer.ops() == [Op.INFO]
    assert (limits.lanes, limits.rows, limits.max_batch) == (4, 3, 3)
    assert (limits.act_words, limits.table_words) == (64, 40)
    assert limits.weight_bytes == 128 * beat_bytes(4, 3)


def test_seq_counts_up_and_wraps(peers):
    peer = peers(ack(STATUS))
    with connect(peer) as client:
        for _ in range(260):
            client.status()
    assert [f.seq for f in peer.requests] == [i % 256 for i in range(260)]


class CountingTransport:
    """Wraps a transport and counts the bytes that really cross it."""

    def __init__(self, inner):
        self.inner, self.sent, self.received = inner, 0, 0

    def write(self, data):
        self.sent += len(data)
        self.inner.write(data)

    def read(self, n, deadline):
        data = self.inner.read(n, deadline)
        self.received += len(data)
        return data

    def close(self):
        self.inner.close()


def test_stats_count_what_crosses_the_transport(peers):
    peer = peers(scripted(silence, ack(STATUS), then(ack(STATUS), ack(STATUS)), ack(STATUS)))
    wire = CountingTransport(SerialTransport(peer.url, 3_000_000))
    with Client.over(wire, timeout=TIMEOUT) as client:
        client.status()
        client.status()
        client.status()
        stats = client.stats
    assert stats == LinkStats(
        requests=3, frames_sent=4, retries=1, bytes_sent=wire.sent, frames_received=4,
        bytes_received=wire.received, stale_frames=1, corrupt_frames=0,
    )
    assert wire.sent == 4 * len(encode_frame(Op.STATUS, 0))


def test_over_refuses_a_non_transport():
    with pytest.raises(TypeError, match="^transport must have write, read and close"):
        Client.over(object())


# --------------------------------------------------------------------------------------------
# Retries and failures
# --------------------------------------------------------------------------------------------


def test_timeout_is_retried_with_the_same_seq_and_bytes(peers):
    peer = peers(scripted(silence, silence, ack(INFO.to_bytes())))
    with connect(peer, timeout=TIMEOUT) as client:
        assert client.info() == INFO
        assert client.stats.retries == 2
    assert [f.seq for f in peer.requests] == [0, 0, 0]
    assert peer.raw[0] == peer.raw[1] == peer.raw[2]


@pytest.mark.parametrize("code", [ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.BUSY])
def test_transient_nak_is_retried(peers, code):
    peer = peers(scripted(nak(code), ack(STATUS)))
    with connect(peer, timeout=TIMEOUT) as client:
        client.status()  # seq 0
        assert client.stats.retries == 1
    assert [f.seq for f in peer.requests] == [0, 0]


def test_busy_nak_still_takes_the_original_answer(peers):
    # A BUSY NAK (e.g. to a retried RUN that is still running) is followed by the real answer.
    peer = peers(then(nak(ErrorCode.BUSY), ack(STATUS)))
    with connect(peer) as client:
        client.status()
        assert client.stats.retries == 0
    assert len(peer.requests) == 1


@pytest.mark.parametrize(
    "code",
    [ErrorCode.UNKNOWN_OPCODE, ErrorCode.BAD_ADDRESS, ErrorCode.BAD_ARGUMENT,
     ErrorCode.ILLEGAL_WEIGHT],
)
def test_permanent_nak_raises_at_once(peers, code):
    peer = peers(nak(code, b"\x07"))
    with connect(peer) as client, pytest.raises(DeviceRefusedError) as info:
        client.status()
    assert str(info.value) == f"device refused STATUS (seq 0): {code.name} (detail 07)"
    assert (info.value.op, info.value.code, info.value.detail) == (Op.STATUS, code, b"\x07")
    assert len(peer.requests) == 1


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda f: bound(f, NAK, b"\x05\x66"),
         "device refused STATUS (seq 0) with unknown error code 0x66"),
        (lambda f: bound(f, NAK, b"\x05"),
         "device answered STATUS (seq 0) with a NAK of 1 bytes"),
        (lambda f: bound(f, NAK, b"\x04\x01"),
         "device answered STATUS (seq 0) with a NAK for op 0x04"),
        (lambda f: bound(f, f.op, b""),
         "device answered STATUS (seq 0) with op 0x05"),  # a looped-back line
        (lambda f: bound(f, Op.INFO | ACK, STATUS),
         "device answered STATUS (seq 0) with op 0x81"),
    ],
)
def test_malformed_answers_raise(peers, answer, message):
    peer = peers(answer)
    with connect(peer) as client, pytest.raises(DeviceError, match=f"^{re.escape(message)}$"):
        client.status()
    assert len(peer.requests) == 1


def test_exhausted_retries_list_every_try(peers):
    peer = peers(scripted(
        silence,
        nak(ErrorCode.BAD_CRC),
        flip(ack(INFO.to_bytes()), HEADER_SIZE + 3),  # payload damaged: CRC-16 fails
        flip(ack(INFO.to_bytes()), 2),  # header damaged: the decoder hunts past it
        nak(ErrorCode.BUSY),  # retried after the try's timeout
    ))
    with connect(peer, retries=4, timeout=TIMEOUT) as client, pytest.raises(DeviceError) as info:
        client.info()
    assert str(info.value) == (
        "gave up on INFO (seq 0) after 5 tries: timeout, BAD_CRC NAK, corrupted answer, "
        "timeout, BUSY NAK"
    )
    assert len(peer.requests) == 5


def test_retries_zero_means_one_try(peers):
    peer = peers(silence)
    with connect(peer, retries=0, timeout=TIMEOUT) as client, pytest.raises(DeviceError) as info:
        client.status()
    assert str(info.value) == "gave up on STATUS (seq 0) after 1 tries: timeout"
    assert len(peer.requests) == 1


@pytest.mark.parametrize("index", [HEADER_SIZE, HEADER_SIZE + 37, -1, -2])
def test_corrupted_answer_is_never_returned(peers, index):
    bad = flip(ack(OTHER_INFO.to_bytes()), index)
    peer = peers(scripted(bad, ack(INFO.to_bytes())))
    with connect(peer) as client:
        assert client.info() == INFO
        assert client.stats.corrupt_frames == 1
    assert [f.seq for f in peer.requests] == [0, 0]


def test_only_corrupted_answers_raise(peers):
    peer = peers(flip(ack(INFO.to_bytes()), -1))
    with connect(peer, retries=2) as client, pytest.raises(DeviceError) as info:
        client.info()
    assert str(info.value).endswith("after 3 tries: corrupted answer, corrupted answer, "
                                    "corrupted answer")


def test_stale_answers_are_dropped(peers):
    # Late answers with an older seq, one even with a valid INFO payload, come first.
    old = then(stale(ack(OTHER_INFO.to_bytes())), stale(nak(ErrorCode.BAD_ADDRESS), back=5))
    peer = peers(scripted(ack(STATUS), then(old, ack(INFO.to_bytes()))))
    with connect(peer) as client:
        client.status()
        assert client.info() == INFO
        assert client.stats.stale_frames == 2


def test_duplicated_answer_is_dropped_by_the_next_request(peers):
    peer = peers(scripted(then(ack(INFO.to_bytes()), ack(OTHER_INFO.to_bytes())), ack(STATUS)))
    with connect(peer) as client:
        assert client.info() == INFO
        assert client.status() == DeviceStatus(False, 0, 1234, 5)
        assert client.stats.stale_frames == 1


def test_garbage_before_the_answer_is_skipped(peers):
    garbage = b"\x00\xa5\xa5\x13\x37\xa5\x81\x00\x26" + bytes(range(256))
    peer = peers(then(lambda f: garbage, ack(INFO.to_bytes())))
    with connect(peer) as client:
        assert client.info() == INFO
        assert client.stats.retries == 0


def test_truncated_answer_does_not_swallow_the_retry(peers):
    # The cut-off frame has a valid header announcing 38 payload bytes; left in the decoder it
    # would eat the first bytes of the next answer, and with one retry the request would fail.
    peer = peers(scripted(truncated(ack(INFO.to_bytes()), HEADER_SIZE + 10), ack(INFO.to_bytes())))
    with connect(peer, retries=1, timeout=TIMEOUT) as client:
        assert client.info() == INFO


@pytest.mark.parametrize(
    "answer, message",
    [
        (ack(INFO.to_bytes()[:-1]),
         f"device answered INFO with {DeviceInfo.SIZE - 1} bytes, expected {DeviceInfo.SIZE}"),
        (ack(INFO.to_bytes() + b"\x00"),
         f"device answered INFO with {DeviceInfo.SIZE + 1} bytes, expected {DeviceInfo.SIZE}"),
        # a protocol-4 device's INFO (2 bytes shorter) and a protocol-3 one's (4 bytes) are
        # named by their versions
        (ack(struct.pack("<HH", SPEC_VERSION, 4) + INFO.to_bytes()[4:-2]),
         f"device speaks protocol version 4, this client version {PROTOCOL_VERSION}"),
        (ack(struct.pack("<HH", SPEC_VERSION, 3) + INFO.to_bytes()[4:-4]),
         f"device speaks protocol version 3, this client version {PROTOCOL_VERSION}"),
        (ack(b"\x01"), f"device answered INFO with 1 bytes, expected {DeviceInfo.SIZE}"),
    ],
)
def test_wrong_info_length_is_rejected(peers, answer, message):
    peer = peers(answer)
    with connect(peer) as client, pytest.raises(DeviceError, match=f"^{re.escape(message)}$"):
        client.info()


def test_wrong_status_length_is_rejected(peers):
    peer = peers(ack(STATUS + b"\x00"))
    with connect(peer) as client, pytest.raises(
        DeviceError, match=r"^device answered STATUS \(seq 0\) with 11 bytes, expected 10$"
    ):
        client.status()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"protocol_version": 2},
         f"device speaks protocol version 2, this client version {PROTOCOL_VERSION}"),
        ({"spec_version": 9},
         f"device implements trine.contract.spec version 9, this client version "
                              f"{SPEC_VERSION}"),
        ({"act_words": 0}, "device info is inconsistent: act_words is 0"),
        ({"readable": 0b0001},
         "device info is inconsistent: READ does not read the activation pool"),
        ({"table_words": 9}, "device info is inconsistent: table_words 9 cannot hold one "
                             "layer (10 words)"),
        ({"max_payload": 8}, "device info is inconsistent: max_payload 8 cannot carry a "
                             "5-byte word in one WRITE"),
    ],
)
def test_unusable_device_info_is_refused(peers, change, message):
    peer = peers(ack(DeviceInfo(**{**INFO.__dict__, **change}).to_bytes()))
    with connect(peer) as client, pytest.raises(DeviceError, match=f"^{re.escape(message)}$"):
        client.info()


# --------------------------------------------------------------------------------------------
# A device model for load and infer: memories, a RUN cache, outputs chosen by the test
# --------------------------------------------------------------------------------------------


class FakeDevice:
    """Stores WRITEs per target (word addressed, as trine.hw.core does), answers READs from the
    activation pool. A RUN reads the layer table it was sent: it records the inputs it finds
    where the first entry reads them, and puts the next rows of ``outputs`` where the last
    entry writes them (its other output bytes: 0x5a); a repeated RUN seq is answered from a
    cache, as the device does. Memory that nobody wrote holds 0xEE. ``outputs`` is an array of
    the outputs to give, in the order of the samples run, or a function from a sample's input
    bytes (its pool words) to its outputs."""

    def __init__(self, info: DeviceInfo = INFO, outputs: np.ndarray | None = None) -> None:
        self.info = info
        lanes, rows = info.lanes, info.rows
        self.word_size = {
            Target.WEIGHTS: beat_bytes(lanes, rows), Target.BIAS: BIAS_STORE_BYTES,
            Target.LAYER: TABLE_WORD_BYTES, Target.INPUT: lanes,
        }
        depth = {
            Target.WEIGHTS: info.weight_words, Target.BIAS: info.bias_depth,
            Target.LAYER: info.table_words, Target.INPUT: info.act_words,
        }
        self.memory = {t: bytearray(b"\xee" * (depth[t] * self.word_size[t])) for t in depth}
        self.pool = self.memory[Target.INPUT]
        # what every answer reports: the program and session of the last WRITE or RUN
        self.program = 0
        self.owner = 0
        self.claims: list[int] = []  # the program fields of WRITEs of no data, in order
        self.outputs = outputs
        self.next_sample = 0
        self.runs: list[tuple[int, int, list[bytes]]] = []  # n_layers, batch, inputs found
        self.cached: tuple[int, bytes] | None = None  # seq, answer of the last RUN
        self.writes: list[tuple[Target, int, bytes]] = []
        self.reads: list[tuple[int, int, int]] = []

    def entries(self, n: int) -> list[LayerEntry]:
        words = np.frombuffer(bytes(self.memory[Target.LAYER]), "<u2").tolist()
        out, at = [], 0
        for _ in range(n):
            entry = LayerEntry.from_words(words[at:])
            out.append(entry)
            at += entry.words
        return out

    def answer(self, f: Frame) -> bytes:
        reply = self._answer(f)
        if f.op in (Op.WRITE, Op.RUN):  # after the answer's tag, as the device does
            self.owner, self.program = f.session, f.program
        return reply

    def _bound(self, f: Frame, op: int, payload: bytes = b"") -> bytes:
        return bound(f, op, payload, program=self.program, owner=self.owner)

    def _answer(self, f: Frame) -> bytes:
        op, payload = f.op, f.payload
        lanes = self.info.lanes
        ack = lambda payload=b"": lambda f: self._bound(f, f.op | ACK, payload)  # noqa: E731
        nak = lambda code: lambda f: self._bound(f, NAK, bytes([f.op, code]))  # noqa: E731
        if op == Op.INFO:
            return ack(self.info.to_bytes())(f)
        if op == Op.WRITE:
            target, word = Target(payload[0]), struct.unpack_from("<I", payload, 1)[0]
            data = payload[WRITE_HEADER:]
            if not data:
                self.claims.append(f.program)
                self.cached = None
                return ack()(f)
            start = word * self.word_size[target]
            mem = self.memory[target]
            if start + len(data) > len(mem):
                return nak(ErrorCode.BAD_ADDRESS)(f)
            mem[start : start + len(data)] = data
            self.writes.append((target, word, bytes(data)))
            self.cached = None
            return ack()(f)
        if op == Op.RUN:
            if self.cached is not None and self.cached[0] == f.seq:
                return self.cached[1]
            n_layers, batch = struct.unpack("<BH", payload)
            entries = self.entries(n_layers)
            first, last = entries[0], entries[-1]
            inputs = [bytes(self.pool[(first.in_base + b * first.in_sample_words) * lanes:
                                      (first.in_base + (b + 1) * first.in_sample_words) * lanes])
                      for b in range(batch)]
            # A run again on the inputs of the run before (a client's retry) computes the same
            # outputs, as a device does; other runs take the next chosen outputs.
            again = bool(self.runs) and self.runs[-1] == (n_layers, batch, inputs)
            if again:
                self.next_sample -= batch
            self.runs.append((n_layers, batch, inputs))
            size = last.out_sample_words * lanes
            for b in range(batch):
                at = (last.out_base + b * last.out_sample_words) * lanes
                if callable(self.outputs):  # a function of the sample's input bytes
                    y = np.asarray(self.outputs(inputs[b]), np.int8).tobytes()
                else:
                    y = self.outputs[self.next_sample + b].tobytes()
                self.pool[at : at + size] = y + b"\x5a" * (size - len(y))
            self.next_sample += batch
            reply = ack(struct.pack("<I", 1000 + len(self.runs)))(f)
            self.cached = (f.seq, reply)
            return reply
        if op == Op.READ:
            memory, word, count = struct.unpack("<BIH", payload)
            self.reads.append((memory, word, count))
            if memory not in READABLE or count > self.info.max_payload:
                return nak(ErrorCode.BAD_ARGUMENT)(f)
            start = word * self.word_size[Target(memory)]
            return ack(bytes(self.memory[Target(memory)][start : start + count]))(f)
        return nak(ErrorCode.UNKNOWN_OPCODE)(f)


class Lossy:
    """Damages the link around a device: ``faults[i]`` says what happens to request ``i``:
    ``"lost"`` (the device never sees it), ``"drop"`` (the answer is lost), ``"corrupt"`` (the
    answer arrives with a bad CRC), ``"nak"`` (a BAD_CRC NAK), anything else: delivered."""

    def __init__(self, device: FakeDevice, faults: Callable[[int, Frame], str]) -> None:
        self.device, self.faults, self.count = device, faults, 0

    def __call__(self, f: Frame) -> bytes:
        fault = self.faults(self.count, f)
        self.count += 1
        if fault == "lost":
            return b""
        if fault == "nak":
            return nak(ErrorCode.BAD_CRC)(f)
        reply = self.device.answer(f)
        if fault == "drop":
            return b""
        if fault == "corrupt":
            return flip(lambda _: reply, -1)(f)
        return reply


def random_program(widths, seed=1, scale=None):
    rng = np.random.default_rng(seed)
    layers = [
        Layer(rng.integers(-1, 2, size=(m, k)), rng.integers(-50, 51, size=m), 2, True)
        for k, m in zip(widths, widths[1:], strict=False)
    ]
    return Program(layers, scale)


def device_image(device: FakeDevice, target: Target, n: int) -> bytes:
    return bytes(device.memory[target][:n])


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_payload", [32, 47, MAX_PAYLOAD])
def test_load_writes_the_image_in_word_aligned_chunks(peers, max_payload):
    info = DeviceInfo(**{**INFO.__dict__, "max_payload": max_payload})
    device = FakeDevice(info)
    peer = peers(device.answer)
    program = random_program([50, 20, 7])
    image = program.check_fits(DeviceLimits.from_info(info))
    calls = []
    with connect(peer) as client:
        stats = client.load(program, progress=lambda done, total: calls.append((done, total)))
        assert client.program is program

    assert device_image(device, Target.WEIGHTS, len(image.weights)) == image.weights
    assert device_image(device, Target.BIAS, len(image.bias_bytes())) == image.bias_bytes()
    assert device_image(device, Target.LAYER, len(image.table_bytes())) == image.table_bytes()
    # nothing written beyond the image
    assert set(device.memory[Target.WEIGHTS][len(image.weights):]) == {0xEE}
    assert set(device.memory[Target.BIAS][len(image.bias_bytes()):]) == {0xEE}

    for target in (Target.WEIGHTS, Target.BIAS, Target.LAYER):
        size = device.word_size[target]
        chunk = (max_payload - WRITE_HEADER) // size * size
        writes = [(w, d) for t, w, d in device.writes if t == target]
        assert [len(d) for _, d in writes[:-1]] == [chunk] * (len(writes) - 1)
        assert [w for w, _ in writes] == [i * chunk // size for i in range(len(writes))]
    assert [t for t, _, _ in device.writes] == sorted(t for t, _, _ in device.writes)

    total = len(image.weights) + len(image.bias_bytes()) + len(image.table_bytes())
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == len(device.writes) + 1

    wire = sum(len(raw) for raw in peer.raw if raw[1] == Op.WRITE)
    # the image's WRITEs, and two claims: program 0 first, the digest last
    assert device.claims == [0, program_digest(image)]
    frames = len(device.writes) + 2
    assert (stats.payload_bytes, stats.frames, stats.retries) == (total, frames, 0)
    assert stats.wire_bytes_sent == wire
    assert stats.wire_bytes_received == frames * len(encode_frame(Op.WRITE, 0))
    assert stats.weights == 50 * 20 + 20 * 7
    assert stats.bits_per_trit == 8 * wire / stats.weights


def test_load_survives_a_lossy_link(peers):
    device = FakeDevice()
    faults = {1: "drop", 2: "corrupt", 3: "nak", 5: "lost", 7: "corrupt", 8: "corrupt"}
    peer = peers(Lossy(device, lambda i, f: faults.get(i, "")))
    program = random_program([50, 20, 7])
    image = program.check_fits(DeviceLimits.from_info(INFO))
    with connect(peer, timeout=TIMEOUT) as client:
        stats = client.load(program)
    assert stats.retries == 6
    assert device_image(device, Target.WEIGHTS, len(image.weights)) == image.weights
    assert device_image(device, Target.BIAS, len(image.bias_bytes())) == image.bias_bytes()
    assert device_image(device, Target.LAYER, len(image.table_bytes())) == image.table_bytes()


def test_load_survives_losing_the_answers_to_its_claims(peers):
    """A claim sent again because its answer was lost is answered after the device took the
    first copy: that answer already reports the claimed program, which is no other host's."""
    device = FakeDevice()
    claims = []

    def faults(i, f):
        if f.op == Op.WRITE and len(f.payload) == WRITE_HEADER:
            claims.append(i)
            return "drop" if claims.count(i) == 1 and len(claims) in (1, 3) else ""
        return ""

    peer = peers(Lossy(device, faults))
    program = random_program([50, 20, 7])
    with connect(peer, timeout=TIMEOUT) as client:
        stats = client.load(program)
        assert stats.retries == 2
        x = np.arange(50, dtype=np.int8)
        device.outputs = np.ones((1, 7), np.int8)
        assert np.array_equal(client.infer(x)[0], np.ones(7, np.int8))
    image = program.check_fits(DeviceLimits.from_info(INFO))
    assert device.claims == [0, 0, program_digest(image), program_digest(image)]


@pytest.mark.parametrize(
    "change, widths, message",
    [
        ({"weight_words": 100}, [50, 20, 7], "the weights need 318 bytes in 3 x 4 tiles "
                                             "(layer 0 (Dense) the most, 273 bytes), more "
                                             "than weight_bytes = 300"),
        ({"bias_depth": 29}, [50, 20, 7], "the biases need 30 entries in blocks of 3 (layer 0 "
                                          "(Dense) the most, 21 entries), more than "
                                          "bias_depth = 29"),
        ({"table_words": 15}, [50, 20, 7], "the layer table needs 20 words (10 per dense "
                                           "layer, 37 per convolution), more than "
                                           "table_words = 15"),
        ({}, [300, 3], "layer 0 (Dense) needs 76 words (304 bytes) of activation pool for one "
                       "sample (input 75 + output 1 words of 4 bytes), more than "
                       "act_words = 64"),
    ],
)
def test_load_refuses_a_program_that_does_not_fit_before_writing(peers, change, widths,
                                                                  message):
    device = FakeDevice(DeviceInfo(**{**INFO.__dict__, **change}))
    peer = peers(device.answer)
    with connect(peer) as client:
        with pytest.raises(ProgramTooLargeError, match=re.escape(message)):
            client.load(random_program(widths))
        assert client.program is None
    assert peer.ops() == [Op.INFO]


def test_failed_load_leaves_no_program(peers):
    # The device claims more weight memory than it has: a permanent BAD_ADDRESS mid-load.
    device = FakeDevice()
    device.memory[Target.WEIGHTS] = device.memory[Target.WEIGHTS][:100]
    peer = peers(device.answer)
    program = random_program([50, 20, 7])
    with connect(peer) as client:
        client.load(random_program([4, 2]))
        with pytest.raises(DeviceRefusedError, match=r"^device refused WRITE \("
                                                     r"WEIGHTS word 27, 27 bytes\): BAD_ADDRESS$"):
            client.load(program)
        assert client.program is None
        with pytest.raises(LinkError, match=r"^no program is loaded: call load\(\) before"):
            client.infer(np.zeros(50, np.int8))


# --------------------------------------------------------------------------------------------
# infer
# --------------------------------------------------------------------------------------------


def loaded(peers, widths, n, answer=None, scale=None, info=INFO, timeout=PATIENT, retries=3):
    """A client with a program loaded into a FakeDevice that will produce ``n`` chosen outputs."""
    rng = np.random.default_rng(3)
    program = random_program(widths, scale=scale)
    outputs = rng.integers(-128, 128, size=(n, widths[-1])).astype(np.int8)
    device = FakeDevice(info, outputs=outputs)
    peer = peers(answer(device) if answer else device.answer)
    client = connect(peer, timeout=timeout, retries=retries)
    client.load(program)
    return client, device, peer, program, outputs


@pytest.mark.parametrize("max_payload", [32, 30])
@pytest.mark.parametrize("widths", [[50, 20], [50, 20, 7], [10, 40], [10, 40, 3, 40]])
def test_infer_addresses_inputs_and_outputs(peers, widths, max_payload):
    # Reads of 40 outputs and writes of 50 inputs take several frames, cut at lane words.
    n = 7
    info = DeviceInfo(**{**INFO.__dict__, "max_payload": max_payload})
    client, device, _, program, expected = loaded(peers, widths, n, info=info)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, size=(n, widths[0])).astype(np.int8)
    with client:
        y, cycles = client.infer(x)
    assert y.dtype == np.int8 and y.shape == (n, widths[-1])
    np.testing.assert_array_equal(y, expected)
    assert cycles == [1001, 1002, 1003]  # runs of 3, 3, 1 (max_batch = 3)

    image = program.check_fits(DeviceLimits.from_info(info))
    assert [(n_layers, batch) for n_layers, batch, _ in device.runs] == [
        (len(image.entries), 3), (len(image.entries), 3), (len(image.entries), 1)
    ]
    for r, (_, batch, found) in enumerate(device.runs):
        for b in range(batch):
            assert found[b][: widths[0]] == x[3 * r + b].tobytes()

    out = image.output
    chunk = max_payload // info.lanes * info.lanes
    first = out.base
    for memory, word, count in device.reads:
        assert memory == Target.INPUT and count <= max_payload
        assert first <= word and (word - first) * info.lanes % chunk == 0
        assert word + -(-count // info.lanes) <= out.base + 3 * out.sample_words
    inputs = [(w, d) for t, w, d in device.writes if t == Target.INPUT]
    assert all(len(d) <= max_payload - WRITE_HEADER for _, d in inputs)
    assert sum(len(d) for _, d in inputs) == n * image.input.sample_words * info.lanes


def test_infer_one_sample_returns_one_dimension(peers):
    client, device, _, _, expected = loaded(peers, [50, 20, 7], 1)
    with client:
        y, cycles = client.infer(np.arange(50, dtype=np.int8))
    assert y.shape == (7,)
    np.testing.assert_array_equal(y, expected[0])
    assert cycles == [1001] and len(device.runs) == 1


def test_infer_quantizes_floats_with_input_scale(peers):
    client, device, _, program, _ = loaded(peers, [10, 4], 2, scale=0.5)
    x = np.linspace(-70.0, 70.0, 20).reshape(2, 10)
    with client:
        client.infer_batch(x)
    q = program.quantize_input(x)
    found = device.runs[0][2]
    assert [found[b][:10] for b in range(2)] == [q[0].tobytes(), q[1].tobytes()]


def test_infer_checks_its_input(peers):
    client, device, _, _, _ = loaded(peers, [10, 4], 2)
    with client:
        with pytest.raises(ProgramError, match=r"^a batch must have shape \(N, K\) or "
                                               r"\(N, \*\(10,\)\), not \(10,\)"):
            client.infer_batch(np.zeros(10, np.int8))
        with pytest.raises(ProgramError, match="program expects 10"):
            client.infer(np.zeros((2, 9), np.int8))
        y, cycles = client.infer(np.zeros((0, 10), np.int8))
    assert y.shape == (0, 4) and cycles == []
    assert device.runs == []


def test_infer_before_load_raises(peers):
    peer = peers(FakeDevice().answer)
    with connect(peer) as client, pytest.raises(LinkError, match="^no program is loaded"):
        client.infer(np.zeros(4, np.int8))
    assert peer.requests == []


def test_a_run_stopped_by_the_watchdog_is_a_clear_error(peers):
    def watchdog(device):
        def answer(f):
            return nak(ErrorCode.TIMEOUT)(f) if f.op == Op.RUN else device.answer(f)
        return answer

    client, _, peer, _, _ = loaded(peers, [50, 20, 7], 1, answer=watchdog)
    with client:
        with pytest.raises(RunTimeoutError, match=r"^the device stopped the run of 2 layers "
                           r"at batch 1 after 1048576 cycles \(its watchdog, max_run_cycles\)"):
            client.infer(np.zeros(50, np.int8))
        assert client.info() == INFO  # and it still answers
    assert [op for op in peer.ops() if op == Op.RUN] == [Op.RUN]  # not retried


def test_a_run_whose_answer_is_lost_is_sent_again_whole(peers):
    """The first RUN answer is lost and the second READ answer arrives corrupted: each time
    the client sends the whole run again (its input WRITE, the RUN, the READ) with new seqs,
    so that a RUN never counts unless the WRITE before it was answered in the same try."""
    counts = {Op.RUN: 0, Op.READ: 0}

    def faults(i, f):
        if f.op not in counts:
            return ""
        counts[f.op] += 1
        if f.op == Op.RUN and counts[f.op] == 1:
            return "drop"
        return "corrupt" if f.op == Op.READ and counts[f.op] == 2 else ""

    client, device, peer, _, expected = loaded(
        peers, [50, 20, 7], 5, answer=lambda d: Lossy(d, faults), timeout=TIMEOUT
    )
    x = np.arange(250).reshape(5, 50).astype(np.int8)
    with client:
        y, cycles = client.infer(x)
    np.testing.assert_array_equal(y, expected)
    assert len(cycles) == 2
    # runs: 1 (answer lost), 1 again, 2 (READ corrupted), 2 again, 3, 3 again: each on its
    # own inputs
    assert [batch for _, batch, _ in device.runs] == [3, 3, 2, 2]
    for (_, batch, found), first in zip(device.runs, [0, 0, 3, 3], strict=True):
        assert [f[:50] for f in found] == [x[first + b].tobytes() for b in range(batch)]
    ops = [raw[1] for raw in peer.raw]
    runs = [i for i, op in enumerate(ops) if op == Op.RUN]
    assert len(runs) == 4 and all(ops[i - 1] == Op.WRITE for i in runs)
    assert len({raw for raw in peer.raw if raw[1] == Op.RUN}) == 4  # new seqs every time


def test_unanswered_run_lists_every_try(peers):
    faults = lambda i, f: "drop" if f.op == Op.RUN else ""  # noqa: E731
    client, device, _, _, _ = loaded(peers, [50, 20, 7], 3, answer=lambda d: Lossy(d, faults),
                                     timeout=TIMEOUT, retries=1)
    with client, pytest.raises(DeviceError) as info:
        client.infer(np.ones((3, 50), np.int8))
    # the run's input takes 7 WRITEs of 24 bytes at most (max_payload 32), its output 1 READ
    assert str(info.value) == ("gave up on WRITE (INPUT word 0, 24 bytes) and the 8 requests "
                               "after it after 2 tries: timeout waiting for RUN, timeout "
                               "waiting for RUN")
    assert len(device.runs) == 2


def test_short_read_is_rejected(peers):
    def short_reads(device):
        def answer(f):
            return ack(b"\x01\x02")(f) if f.op == Op.READ else device.answer(f)
        return answer

    client, _, _, _, _ = loaded(peers, [50, 20, 7], 1, answer=short_reads)
    with client, pytest.raises(DeviceError, match=r"with 2 bytes, expected 8$"):  # 2 words
        client.infer(np.ones(50, np.int8))
