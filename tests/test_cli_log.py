"""``trine -v`` and ``trine -vv``: progress at INFO, every frame on the link as hex at DEBUG.

The device is the simulated RTL behind ``socket://`` (the session's ``device_server``)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from trine.cli.main import main
from trine.contract.protocol import ACK, HEADER, HEADER_SIZE, SYNC, Op

#: One DEBUG line per frame: direction, op, seq, payload length, the frame's bytes in hex.
FRAME = re.compile(r"^D: trine\.host\.transport: (->|<-) ([A-Z]+(?: ACK)?) seq (\d+), "
                   r"(\d+) bytes: ((?:[0-9a-f]{2} ?)+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 12-10-4 program, three int8 inputs for it, and the folder that holds them."""
    from trine.contract.reference import Layer
    from trine.host.program import Program

    rng = np.random.default_rng(2)
    program = Program([Layer(rng.integers(-1, 2, (10, 12)), rng.integers(-50, 50, 10), 2, True),
                       Layer(rng.integers(-1, 2, (4, 10)), rng.integers(-50, 50, 4), 1, False)])
    d = tmp_path_factory.mktemp("log")
    program.save(d / "p.trine")
    x = rng.integers(-128, 128, (3, program.input_width)).astype(np.int8)
    np.save(d / "x.npy", x)
    return d, program, x


def _infer(files, device_server, capsys, *verbosity: str) -> tuple[str, np.ndarray]:
    d, program, x = files
    out = d / f"y{len(verbosity)}.npy"
    url = device_server("icarus", "byte")
    assert main([*verbosity, "infer", "--port", url, "--program", str(d / "p.trine"),
                 "--input", str(d / "x.npy"), "--output", str(out)]) == 0
    y = np.load(out)
    assert np.array_equal(y, program.run_reference(x))
    return capsys.readouterr().err, y


def test_vv_logs_every_frame_as_hex(files, device_server, capsys):
    err, _ = _infer(files, device_server, capsys, "-vv")
    frames = FRAME.findall(err)
    sent = [f for f in frames if f[0] == "->"]
    received = [f for f in frames if f[0] == "<-"]
    assert sent and len(received) >= len(sent)
    assert sent[0][1] == "INFO" and received[0][1] == "INFO ACK"
    assert {f[1] for f in sent} >= {"INFO", "WRITE", "RUN", "READ"}
    for _, op, seq, length, hex_bytes in frames:
        raw = bytes.fromhex(hex_bytes)
        # SYNC, op, seq, the tag, the payload's length, then the payload and its CRC-16
        name, _, ack = op.partition(" ")
        assert raw[0] == SYNC and raw[1] == Op[name] | (ACK if ack else 0)
        assert raw[2] == int(seq)
        assert HEADER.unpack_from(raw, 1)[-1] == int(length)
        assert len(raw) == HEADER_SIZE + int(length) + 2
    # Each request takes the next seq (a retry would resend the same one).
    seqs = [int(f[2]) for f in sent]
    assert seqs == sorted(seqs) and sorted(set(seqs)) == list(range(len(set(seqs))))
    assert "I: trine.host.client: loaded " in err


def test_v_logs_progress_but_no_frames(files, device_server, capsys):
    err, _ = _infer(files, device_server, capsys, "-v")
    assert re.search(r"^I: trine\.host\.client: loaded \d+ bytes in \d+ frames", err,
                     re.MULTILINE), err
    assert re.search(r"^I: trine\.host\.client: device: 8 lanes x 5 rows", err, re.MULTILINE)
    assert not FRAME.search(err) and "trine.host.transport" not in err


def test_without_v_nothing_is_logged(files, device_server, capsys):
    err, _ = _infer(files, device_server, capsys)
    assert "trine.host" not in err
    assert err.startswith("wrote ") and err.count("\n") == 1, err


def test_the_loggers_are_restored_after_a_command(files, device_server, capsys):
    logger = logging.getLogger("trine")
    handlers, level = list(logger.handlers), logger.level
    _infer(files, device_server, capsys, "-vv")
    assert logger.handlers == handlers and logger.level == level
