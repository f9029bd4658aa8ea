"""``make demo`` end to end (slow: training, a Verilator build and 450 inferences)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_passes(capsys, monkeypatch, tmp_path):
    from sim import demo

    monkeypatch.setattr(demo, "BUILD", tmp_path)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "device == reference          450 of 450 samples" in out
    assert (tmp_path / "digits.trine").exists()
