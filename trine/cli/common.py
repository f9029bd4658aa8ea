"""What the commands of ``trine`` share: the usage error, option sets, files, the progress bar.

Every command module imports this one, never :mod:`trine.cli.main`. The helpers here are the
command line's edge: a file that is missing, unreadable or of the wrong kind, a package that is
not installed, an output that cannot be written, all become a :class:`UsageError` (a
:class:`trine.TrineError`), which ``trine`` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from trine.contract.errors import TrineError
from trine.contract.fileio import write_atomic
from trine.contract.params import SMALL
from trine.contract.protocol import DEFAULT_BAUD
from trine.flow.boards import BOARDS

__all__ = [
    "UsageError",
    "HelpFormatter",
    "positive_int",
    "positive_float",
    "add_device_options",
    "add_board_option",
    "board_table",
    "PARAM_OPTIONS",
    "add_params_options",
    "params_changes",
    "file_access",
    "optional_dependency",
    "load_npy",
    "write_npy",
    "write_file",
    "read_program",
    "ProgressBar",
]

#: Seconds a device command waits for each answer before it retries.
DEFAULT_TIMEOUT = 2.0
#: Transfers shorter than this many bytes are over too soon for a bar to help.
MIN_TRANSFER_BAR = 16384


class UsageError(TrineError):
    """A command-line argument, or a file it names, that cannot be used."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps the plain lines of a description or epilog into paragraphs (a blank line ends
    one) and keeps indented lines, such as examples and tables, as they are written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                out.append(super(HelpFormatter, self)._fill_text(" ".join(paragraph), width,
                                                                 indent))
                paragraph.clear()

        for line in text.splitlines():
            if line.startswith(" ") or not line.strip():
                flush()
                out.append(indent + line if line.strip() else "")
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(out)


# ---- option types and option sets ----------------------------------------------------------


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (a wrong one is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--port URL``, ``--baud N`` and ``--timeout S``: how a command reaches a device."""
    group = parser.add_argument_group("device")
    group.add_argument("--port", metavar="URL",
                       help="device URL: a serial port such as /dev/ttyUSB1, or "
                       "socket://127.0.0.1:PORT for the simulated device (trine sim serve)")
    group.add_argument("--baud", type=positive_int, default=DEFAULT_BAUD, metavar="N",
                       help=f"UART baud rate (default {DEFAULT_BAUD:,}; ignored by socket://)")
    group.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                       help=f"seconds to wait for each answer before retrying "
                       f"(default {DEFAULT_TIMEOUT:g})")


def board_table() -> str:
    """One line per board: its FPGA, oscillator, USB-serial bridge, default clock and baud."""
    return "\n".join(
        f"  {b.name:<11} {b.device}, {b.osc_hz / 1e6:g} MHz oscillator, UART via {b.bridge} "
        f"(default {b.default_clock_hz / 1e6:g} MHz, {b.default_baud / 1e6:g} Mbaud; at most "
        f"{b.max_baud / 1e6:g} Mbaud)"
        for b in BOARDS.values())


def add_board_option(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """``--board BOARD``, one of :data:`trine.flow.boards.BOARDS`."""
    parser.add_argument("--board", required=required, choices=list(BOARDS), metavar="BOARD",
                        help=f"{help}; one of: {', '.join(BOARDS)}")


#: Accelerator parameters settable from the command line, besides --lanes and --rows.
PARAM_OPTIONS = {
    "weight_words": "weight-memory words (one rows x lanes tile each)",
    "bias_depth": "bias memory entries",
    "act_words": "activation-pool words (lanes bytes each)",
    "table_words": "layer-table words (16 bits each)",
    "max_batch": "largest batch of one RUN",
}


def add_params_options(parser: argparse.ArgumentParser, default: str) -> None:
    """The device's size: ``--lanes``, ``--rows``, ``--small`` and :data:`PARAM_OPTIONS`, the
    same for the device ``trine build`` makes and the one ``trine sim serve`` simulates.

    ``default`` says where unset values come from ("the board's"). Values are not checked
    here: :class:`trine.contract.params.AcceleratorParams` refuses a bad one with its name.
    """
    group = parser.add_argument_group("device parameters")
    group.add_argument("--lanes", type=int, metavar="N",
                       help=f"activations per clock (default: {default})")
    group.add_argument("--rows", type=int, metavar="N",
                       help=f"dot products in parallel (default: {default})")
    group.add_argument("--small", action="store_true",
                       help=f"the smallest useful device ({SMALL.lanes} lanes x {SMALL.rows} "
                       f"row, {SMALL.weight_words} weight words, a pool of "
                       f"{SMALL.act_words * SMALL.lanes} bytes): a quick build to try the flow")
    for name, text in PARAM_OPTIONS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name, metavar="N",
                           help=f"{text} (default: {default})")


def params_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~trine.contract.params.AcceleratorParams` fields the options change."""
    changes: dict[str, Any] = SMALL.size() if args.small else {}
    for name in ("lanes", "rows", *PARAM_OPTIONS):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    return changes


# ---- files ---------------------------------------------------------------------------------


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


@contextlib.contextmanager
def file_access(action: str) -> Iterator[None]:
    """Turn an ``OSError`` of the file operations inside into a :class:`UsageError`
    "cannot ``action``: reason" (``action`` such as "write out.trine")."""
    try:
        yield
    except OSError as e:
        raise UsageError(f"cannot {action}: {_reason(e)}") from None


@contextlib.contextmanager
def optional_dependency(what: str, extra: str) -> Iterator[None]:
    """Turn a missing third-party package inside into a :class:`UsageError` naming the pip
    extra that installs it; a missing module of trine itself stays a bug."""
    try:
        yield
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] == "trine":
            raise
        raise UsageError(f"{what} needs the {e.name} package: pip install 'trine[{extra}]'") \
            from None


def load_npy(path: str, flag: str, *, kinds: str | None = None, what: str = "numbers") -> Any:
    """The array in the ``.npy`` file ``path``, given with option ``flag``.

    ``kinds`` are the NumPy dtype kinds accepted (``"iuf"``: numbers), ``what`` says so in the
    message ("numbers").

    Raises
    ------
    UsageError
        For a missing or unreadable file, one that is not a ``.npy`` array (a ``.npz`` of
        several, pickled objects, anything else) or an array of another dtype kind.
    """
    import stat

    import numpy as np
    from numpy.lib import format as npy_format

    try:
        # non-blocking: a FIFO with no writer would otherwise keep open() waiting for ever
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UsageError(f"{flag}: no such file: {path}") from None
    except OSError as e:
        raise UsageError(f"{flag}: cannot read {path}: {_reason(e)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UsageError(f"{flag}: {path} is not a regular file")
    size = info.st_size
    with open(fd, "rb") as f:
        try:
            if f.read(4) == b"PK\x03\x04":
                raise UsageError(f"{flag}: {path} holds several arrays (.npz); give one .npy "
                                 "array")
            f.seek(0)
            # the header first: the data it declares must be in the file, so a forged shape
            # never makes NumPy allocate more than the file holds
            version = npy_format.read_magic(f)
            read_header = {(1, 0): npy_format.read_array_header_1_0,
                           (2, 0): npy_format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read "
                                 "here (1.0 and 2.0 are)")
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if need > size - f.tell():
                raise UsageError(f"{flag}: {path} declares {need:,} bytes of data in {shape} "
                                 f"but holds {max(0, size - f.tell()):,}: truncated or forged")
            f.seek(0)
            a = np.load(f, allow_pickle=False)
        except OSError as e:
            raise UsageError(f"{flag}: cannot read {path}: {_reason(e)}") from None
        except (ValueError, EOFError, SyntaxError) as e:  # not a .npy (pickles, text, empty)
            raise UsageError(f"{flag}: cannot read {path} as a .npy array: "
                             f"{e or 'empty file'}") from None
    if kinds is not None and a.dtype.kind not in kinds:
        raise UsageError(f"{flag}: {path} must hold {what}, not dtype {a.dtype}")
    return a


def write_file(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (complete or untouched); :class:`UsageError` if
    it cannot be written."""
    with file_access(f"write {os.fspath(path)}"):
        write_atomic(path, data)


def write_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Write ``array`` as a ``.npy`` file atomically, like :func:`write_file`."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_file(path, buf.getvalue())


def read_program(path: str) -> Any:
    """The :class:`trine.host.program.Program` in the ``.trine`` file ``path``.

    Raises
    ------
    UsageError
        If the file cannot be read.
    trine.host.program.ProgramFormatError
        If it is not a valid program (the message starts with the path).
    """
    from trine.host.program import Program

    with file_access(f"read {path}"):
        return Program.load(path)


# ---- progress ------------------------------------------------------------------------------


class ProgressBar:
    """One progress line on stderr, for training (fractions) and transfers (bytes) alike.

    On a terminal the line is redrawn in place. Elsewhere (a log, a pipe, a test) it is
    written at most once per tenth of the way with ``trace``, so a long run leaves a readable
    record, and never without.

    Parameters
    ----------
    label : str
        What progresses ("float MLP", "loading").
    stream : text stream, optional
        Default ``sys.stderr`` at the time of the call.
    trace : bool
        Off a terminal, write a line per tenth; else nothing.

    Members
    -------
    __call__(fraction, message="")
        The ``progress(fraction, message)`` callback of the trainers.
    transfer(done, total)
        The ``progress(bytes_done, bytes_total)`` callback of
        :meth:`trine.host.client.Client.load`; transfers under 16 KiB are not shown.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, trace: bool = True) -> None:
        self.label = label
        self._out = stream if stream is not None else sys.stderr
        self._tty = self._out.isatty()
        self._trace = trace
        self._last_tenth = -1

    def __call__(self, fraction: float, message: str = "") -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        if self._tty:
            width = 30
            filled = int(width * f)
            self._out.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                            f"{f:4.0%} {message}\033[K")
            if f >= 1.0:
                self._out.write("\n")
            self._out.flush()
        elif self._trace and int(f * 10) > self._last_tenth:
            self._last_tenth = int(f * 10)
            self._out.write(f"{self.label} {f:4.0%} {message}".rstrip() + "\n")
            self._out.flush()

    def transfer(self, done: int, total: int) -> None:
        if total >= MIN_TRANSFER_BAR:
            self(done / total, f"{done:,}/{total:,} bytes")
