"""``make demo`` end to end (slow: training a CNN, a Verilator build and 1000 inferences)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_passes(capsys, monkeypatch, tmp_path):
    from trine import demo

    monkeypatch.setattr(demo, "BUILD", tmp_path)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "device == reference          1000 of 1000 samples" in out
    accuracy = float(out.split("ternary accuracy, device")[1].split("%")[0])
    assert accuracy >= 94.0  # the default CNN (95% and more on seeds 0-2 in bench qat_cnn)
    assert (tmp_path / "mnist1d_cnn.trine").exists()


@pytest.mark.slow
def test_demo_runs_on_a_device_given_by_port(capsys, monkeypatch, tmp_path):
    """--port: step 3 against a device the demo did not start (here the RTL behind
    socket://, as a board behind /dev/ttyUSBx), projected at the clock the device reports."""
    from trine import demo
    from trine.sim.serve import serve

    monkeypatch.setattr(demo, "BUILD", tmp_path)
    with serve("verilator", "byte", once=False) as url:  # a board, too, outlives a client
        assert demo.main(["--port", url, "--model", "mlp", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert f"3. the device at {url}" in out
    assert "device == reference          450 of 450 samples" in out


def test_demo_fails_fast_and_clearly_on_an_unreachable_port(capsys, monkeypatch, tmp_path):
    """A wrong --port is an error line and exit status 2, before any training."""
    import socket

    from trine import demo

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(demo, "BUILD", tmp_path)
    assert demo.main(["--port", f"socket://127.0.0.1:{port}"]) == 2
    captured = capsys.readouterr()
    assert "demo: error: cannot open socket://127.0.0.1:" in captured.err
    assert "train" not in captured.out
    assert not list(tmp_path.glob("*.trine"))
