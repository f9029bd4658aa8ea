"""The ``trine`` command line.

Each subcommand imports what it needs when it runs, so the host-side commands never pull in
Amaranth or cocotb. Errors are reported as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys

from trine.contract.fileio import write_atomic

__all__ = ["main"]


class CLIError(ValueError):
    """An error the user can fix; printed as one line, without a traceback."""


def _cmd_verilog_mac_array(args: argparse.Namespace) -> int:
    from trine.hw.verilog import mac_array_verilog

    try:
        text = mac_array_verilog(
            args.lanes,
            args.rows,
            args.act_width,
            name=args.name,
            max_fan_in=args.max_fan_in,
            register_every=args.register_every,
            correction=not args.no_correction,
        )
    except (TypeError, ValueError) as e:
        raise CLIError(str(e)) from None
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
        print(f"wrote {args.output}: MACArray lanes={args.lanes} rows={args.rows}", file=sys.stderr)
    return 0


def _load_input(path: str):
    import numpy as np

    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read input {path}: {e}") from None
    if x.dtype.kind not in "iuf":
        raise CLIError(f"input {path} must hold numbers, not dtype {x.dtype}")
    return x


def _cmd_infer(args: argparse.Namespace) -> int:
    import numpy as np

    from trine.host.program import Program, ProgramError

    try:
        program = Program.load(args.program)
        x = _load_input(args.input)
        if x.dtype.kind == "f" and program.input_scale is None:
            raise CLIError(f"input {args.input} is float but {args.program} has no input_scale "
                           "to quantise it with; give int8 inputs")
        if args.backend == "reference":
            y = program.run_reference(x)
            note = "reference model"
        else:
            if not args.port:
                raise CLIError("--port is required with --backend device")
            from trine.host.client import Client
            from trine.host.transport import LinkError

            try:
                with Client(args.port, baud=args.baud, timeout=args.timeout) as client:
                    client.load(program, progress=_progress_bar("loading"))
                    y, cycles = client.infer_batch(x) if x.ndim == 2 else client.infer(x)
            except LinkError as e:
                raise CLIError(str(e)) from None
            note = f"device {args.port}, {sum(cycles)} cycles in {len(cycles)} run(s)"
    except ProgramError as e:
        raise CLIError(str(e)) from None
    except FileNotFoundError as e:
        raise CLIError(f"no such file: {e.filename}") from None
    write_atomic_npy(args.output, np.asarray(y, np.int8))
    n = 1 if np.ndim(y) == 1 else len(y)
    print(f"wrote {args.output}: {n} output(s) of width {np.shape(y)[-1]} ({note})",
          file=sys.stderr)
    return 0


def _progress_bar(label: str, min_total: int = 16384):
    """A callback(done, total) drawing a bar on stderr, for transfers of ``min_total`` bytes
    or more and only on a terminal (logs and pipes get nothing)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total < min_total:
            return
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done:,}/{total:,} bytes")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def write_atomic_npy(path: str, array) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())


def _cmd_sim_serve(args: argparse.Namespace, extra: list[str]) -> int:
    # The simulated device lives in sim/, which the host never imports: run it as a program.
    import subprocess

    cmd = [sys.executable, "-m", "trine.sim.serve", "--sim", args.sim, "--port", str(args.port),
           "--mode", args.mode, *extra]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trine",
        description="Ternary neural networks on open FPGA toolchains.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verilog = sub.add_parser("verilog", help="generate Verilog for a hardware block")
    vsub = verilog.add_subparsers(dest="block", required=True, metavar="BLOCK")
    mac = vsub.add_parser(
        "mac-array",
        help="the multiply-free ternary MAC array",
        description="Write the Verilog of MACArray: ROWS dot products of LANES trits x int8 "
        "per clock, with valid/ready streams (see hw/mac_array.py).",
    )
    mac.add_argument("--lanes", type=int, required=True, help="activations per beat (SIMD)")
    mac.add_argument("--rows", type=int, required=True, help="parallel dot products (PE)")
    mac.add_argument("--act-width", type=int, default=8, help="activation bits (default 8)")
    mac.add_argument(
        "--max-fan-in", type=int, default=4096, help="largest K held exactly (default 4096)"
    )
    mac.add_argument(
        "--register-every", type=int, default=1,
        help="pipeline register every N adder levels; 0 = combinational tree (default 1)",
    )
    mac.add_argument(
        "--no-correction", action="store_true",
        help="leave out the +1 per -1 weight (the user folds it into a bias)",
    )
    mac.add_argument("--name", default="mac_array", help="top module name")
    mac.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    mac.set_defaults(func=_cmd_verilog_mac_array)

    infer = sub.add_parser(
        "infer",
        aliases=["run"],
        help="run a program on inputs, on a device or the reference model",
        description="Load PROGRAM into the device at --port (a serial port such as "
        "/dev/ttyUSB1, or socket://127.0.0.1:PORT for the simulated device) and run it on "
        "every input of INPUT, or compute the same outputs in software with --backend "
        "reference. INPUT is a .npy array of shape (K,) or (N, K): int8 values are used as "
        "they are, floats are quantised with the program's input_scale. OUTPUT gets the "
        "int8 outputs, (M,) or (N, M).",
    )
    infer.add_argument("--program", required=True, help="the .trine program")
    infer.add_argument("--input", required=True, help="inputs, .npy")
    infer.add_argument("--output", required=True, help="where to write the outputs, .npy")
    infer.add_argument("--backend", choices=["device", "reference"], default="device")
    infer.add_argument("--port", help="device URL: /dev/ttyUSBx or socket://HOST:PORT")
    infer.add_argument("--baud", type=int, default=3_000_000, help="UART baud (default 3M)")
    infer.add_argument("--timeout", type=float, default=2.0,
                       help="seconds to wait for each answer before retrying (default 2)")
    infer.set_defaults(func=_cmd_infer)

    simp = sub.add_parser("sim", help="the simulated device")
    ssub = simp.add_subparsers(dest="what", required=True, metavar="WHAT")
    serve = ssub.add_parser(
        "serve",
        help="run the device's RTL in a simulator behind a TCP socket",
        description="Build the accelerator's Verilog, run it under cocotb on Icarus Verilog or "
        "Verilator, and bridge 127.0.0.1:PORT to its UART pins (--mode uart, bit level) or to "
        "its byte streams (--mode byte: the UART skipped, 6-8x faster). Point the host at "
        "socket://127.0.0.1:PORT. Further options (--lanes, --rows, --max-width, --once, ...) "
        "go to `python -m trine.sim.serve`; see its --help.",
    )
    serve.add_argument("--sim", choices=["icarus", "verilator"], default="verilator")
    serve.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    serve.add_argument("--mode", choices=["uart", "byte"], default="uart")
    serve.set_defaults(func=_cmd_sim_serve, passthrough=True)

    # Subcommands kept in their own modules (each imports its heavy dependencies lazily).
    from trine.cli import board as cli_board
    from trine.cli import import_model as cli_import
    from trine.cli import train as cli_train

    for module in (cli_train, cli_import, cli_board):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra) if getattr(args, "passthrough", False) else args.func(args)
    except (CLIError, ValueError) as e:  # every domain error of trine is a ValueError
        print(f"trine: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"trine: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
