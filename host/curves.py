"""Accuracy-versus-time curves of training runs, as PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from trine.contract.fileio import write_atomic

__all__ = ["plot_curves"]


def plot_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str = "",
    key: str = "test_acc",
    baselines: Mapping[str, float] | None = None,
) -> None:
    """Plot ``key`` against ``elapsed_s`` for each run's history and write a PNG atomically.

    Parameters
    ----------
    path : path of the PNG
    curves : {label: history}
        ``history`` as in :class:`trine.host.results.TrainResult`: dicts with ``elapsed_s`` and
        ``key``
        (entries where ``key`` is missing or None are skipped).
    title : str
    key : str
        The history field on the y axis (``test_acc`` by default), plotted in percent.
    baselines : {label: accuracy}, optional
        Horizontal dashed lines, e.g. the float MLP of the same shape.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    try:
        for label, history in curves.items():
            pts = [(h["elapsed_s"], 100 * h[key]) for h in history if h.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.2, label=label)
        for label, value in (baselines or {}).items():
            ax.axhline(100 * value, linestyle="--", linewidth=1, color="grey")
            ax.annotate(
                f"{label} {100 * value:.1f}%",
                xy=(0, 100 * value),
                xycoords=("axes fraction", "data"),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=8,
                color="grey",
            )
        ax.set_xlabel("seconds")
        ax.set_ylabel(f"{key.replace('_', ' ')} (%)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())
