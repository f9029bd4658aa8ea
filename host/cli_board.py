"""Subcommands of ``trine`` for boards (``trine build``, ``trine program``).

``host.cli.build_parser`` calls :func:`add_parsers`."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``trine`` parser (none yet)."""
