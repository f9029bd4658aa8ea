"""``trine sim serve``: the device's RTL in a simulator, behind a TCP socket.

Two engines serve the same device: ``native`` (:func:`trine.sim.native.run_native_server`:
Verilator with a C++ bridge, no Python in the loop) and ``cocotb``
(:func:`trine.sim.serve.run_server`: cocotb on Icarus or Verilator). ``--board B`` simulates
the device ``trine build --board B`` makes, with the same parameter options, clock and baud.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import threading

from trine.cli.common import (
    HelpFormatter,
    UsageError,
    add_board_option,
    add_params_options,
    params_changes,
    positive_float,
    positive_int,
)
from trine.contract.params import DECODERS, SIMULATED, WEIGHT_MEMORIES
from trine.contract.protocol import DEFAULT_BAUD

__all__ = ["add_parsers", "device_config", "engine"]

logger = logging.getLogger(__name__)

#: trine.sim.serve.SIM_CLOCK_HZ for the help text (importing trine.sim.serve loads Amaranth and
#: cocotb, too slow for building the parser); a test checks that the two agree.
SIM_CLOCK_HZ = 12_000_000
_MHZ = 1_000_000
#: The cocotb engine's simulator unless --sim names one.
DEFAULT_SIM = "verilator"


def device_config(args: argparse.Namespace):
    """The :class:`trine.sim.serve.DeviceConfig` the options describe.

    With ``--board`` the board's parameters, and its clock as its PLL makes it
    (:func:`trine.flow.boards.plan_clock`, as ``trine build`` does); without, SIMULATED at
    12 MHz. Either way the options change them the same way.

    Raises
    ------
    trine.flow.boards.BoardError
        For a clock the board's PLL cannot make or that does not suit the baud rate.
    trine.contract.errors.ParameterError
        For parameters that do not make a device.
    """
    from trine.sim import serve

    changes = params_changes(args)
    for name in ("decoder", "weight_memory"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    clock_hz = args.clock_hz if args.clock_mhz is None else args.clock_mhz * _MHZ
    if args.board is None:
        return serve.DeviceConfig(
            args.mode, serve.SIM_CLOCK_HZ if clock_hz is None else round(clock_hz),
            DEFAULT_BAUD if args.baud is None else args.baud, SIMULATED.replace(**changes))
    from trine.flow.boards import get_board, plan_clock

    board = get_board(args.board)
    plan = plan_clock(board, board.default_clock_hz if clock_hz is None else clock_hz,
                      board.default_baud if args.baud is None else args.baud)
    return serve.DeviceConfig(args.mode, plan.achieved_hz, plan.baud,
                              board.params.replace(**changes))


@contextlib.contextmanager
def _sigterm_sets(stop: threading.Event):
    """SIGTERM and SIGINT stop the simulator and reap it (main thread only).

    SIGINT gets a handler of its own too: a process started in the background by a shell
    inherits SIGINT ignored, and Python then raises no KeyboardInterrupt for it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def engine(args: argparse.Namespace) -> str:
    """The engine the options ask for: ``--engine``, else cocotb if ``--sim`` names its
    simulator, else native.

    Raises
    ------
    UsageError
        For ``--sim`` or ``--trace`` with an engine that does not take it.
    """
    chosen = args.engine or ("cocotb" if args.sim else "native")
    if chosen == "native" and args.sim:
        raise UsageError(f"--sim {args.sim} is for --engine cocotb; the native engine is "
                         "Verilator without Python")
    if chosen == "cocotb" and args.trace:
        raise UsageError("--trace needs --engine native")
    return chosen


def _serve_build(args: argparse.Namespace, level: str, path: str) -> int:
    """``--netlist DIR`` / ``--bitstream DIR``: the board build's own files, simulated."""
    if args.engine == "cocotb" or args.sim:
        raise UsageError(f"--{level} runs on the native engine only")
    given = [flag for flag, value in (("--board", args.board), ("--mode byte",
                                       args.mode == "byte"), ("--clock-mhz", args.clock_mhz),
                                      ("--clock-hz", args.clock_hz), ("--baud", args.baud),
                                      ("--decoder", args.decoder),
                                      ("--weight-memory", args.weight_memory)) if value]
    given += [f"--{name.replace('_', '-')}" for name in params_changes(args)]
    if given:
        raise UsageError(f"--{level} simulates the device {path} was built with: "
                         f"{', '.join(given)} cannot change it")
    from trine.sim.netlist import read_build, run_netlist_server

    build = read_build(path)
    logger.info("simulating the %s of %s (%s at %g MHz, %d baud) on its UART pins", level, path,
                build.report["board"], build.config.clock_hz / _MHZ, build.config.baud)

    def ready(port: int) -> None:
        print(f"listening on {args.host}:{port} ({level}, uart mode)", flush=True)
        logger.info("point the host at socket://%s:%d", args.host, port)

    stop = threading.Event()
    with _sigterm_sets(stop):
        run_netlist_server(path, level, port=args.port, host=args.host, once=args.once,
                           stats_file=args.stats, trace=args.trace, on_ready=ready, stop=stop)
    return 0


def _serve(args: argparse.Namespace) -> int:
    for level in ("netlist", "bitstream"):
        if getattr(args, level):
            return _serve_build(args, level, getattr(args, level))
    kind = engine(args)
    config = device_config(args)
    simulator = "native" if kind == "native" else args.sim or DEFAULT_SIM
    p = config.params
    logger.info("simulating %s%s: %s at %g MHz, %d baud, %s mode, on %s",
                f"the {args.board}'s device" if args.board else "the default device",
                "" if not params_changes(args) else " (changed)",
                ", ".join(f"{f.name}={getattr(p, f.name)}" for f in dataclasses.fields(p)),
                config.clock_hz / _MHZ, config.baud, config.mode,
                "the native engine" if kind == "native" else f"cocotb and {simulator}")

    def ready(port: int) -> None:
        print(f"listening on {args.host}:{port} ({simulator}, {args.mode} mode)", flush=True)
        logger.info("point the host at socket://%s:%d%s", args.host, port,
                    "; the server stops when the first client leaves" if args.once else "")

    stop = threading.Event()
    with _sigterm_sets(stop):
        if kind == "native":
            from trine.sim.native import run_native_server

            run_native_server(config, port=args.port, host=args.host, once=args.once,
                              stats_file=args.stats, trace=args.trace, on_ready=ready,
                              stop=stop)
        else:
            from trine.sim.serve import run_server

            run_server(simulator, config, port=args.port, host=args.host, once=args.once,
                       stats_file=args.stats, on_ready=ready, stop=stop)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``trine sim serve`` to the ``trine`` parser."""
    simp = sub.add_parser("sim", help="the simulated device",
                          description="The device's RTL in a simulator, for the host to talk "
                          "to without a board.")
    what = simp.add_subparsers(dest="what", required=True, metavar="WHAT")
    serve = what.add_parser(
        "serve",
        help="run the device's RTL in a simulator behind a TCP socket",
        formatter_class=HelpFormatter,
        description="Build the accelerator's Verilog, simulate it, and bridge 127.0.0.1:PORT "
        "to its UART pins (--mode uart, bit level) or to its byte streams (--mode byte: the "
        "UART skipped, about 10x fewer cycles per byte). Point the host at "
        "socket://127.0.0.1:PORT. Once the socket listens, `listening on 127.0.0.1:PORT` is "
        "printed on stdout.\n\n"
        "Two engines, the same device and the same answers: native (the default: the Verilog "
        "compiled by Verilator with a C++ bridge of trine's own, no Python in the loop; the "
        "first build of a configuration takes a minute or two, later starts are instant) and "
        "cocotb (--engine cocotb or --sim: cocotb 2 on Icarus Verilog or Verilator, Python on "
        "every byte, much slower).\n\n"
        f"The device is the default simulated one ({SIMULATED.lanes} lanes x {SIMULATED.rows} "
        f"rows, batches of up to {SIMULATED.max_batch}, {SIM_CLOCK_HZ / _MHZ:g} MHz, "
        f"{DEFAULT_BAUD / 1e6:g} Mbaud) or, with --board, exactly the device `trine build "
        "--board` makes: the board's parameters, clock and baud rate, so INFO answers the "
        "same. The device parameter options change either, as they do for `trine build`.",
        epilog="examples:\n"
        "  trine sim serve --port 5555 --mode byte\n"
        "  trine sim serve --port 5555 --mode byte --trace run.fst --once\n"
        "  trine sim serve --engine cocotb --sim icarus --port 5555\n"
        "  trine sim serve --board icebreaker --port 0 --once\n"
        "then: trine infer --port socket://127.0.0.1:PORT ...",
    )
    serve.add_argument("--engine", choices=["native", "cocotb"],
                       help="native: Verilator and a C++ bridge (the default); cocotb: cocotb "
                       "on --sim")
    serve.add_argument("--sim", choices=["icarus", "verilator"],
                       help=f"the cocotb engine's simulator (default {DEFAULT_SIM}); implies "
                       "--engine cocotb")
    serve.add_argument("--trace", metavar="FILE.fst",
                       help="native engine: write every simulated cycle to this FST waveform "
                       "(a model built with tracing, slower; view it with gtkwave)")
    built = serve.add_mutually_exclusive_group()
    built.add_argument("--netlist", metavar="BUILD_DIR",
                       help="simulate the post-synthesis netlist of `trine build --out "
                       "BUILD_DIR` (Yosys's cell models, the PLL as a pass-through) on its UART "
                       "pins, at the build's clock and baud rate; native engine")
    built.add_argument("--bitstream", metavar="BUILD_DIR",
                       help="iCE40: simulate the placed and routed design (the build's .asc "
                       "through icestorm's icebox_vlog); native engine")
    serve.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    serve.add_argument("--mode", choices=["uart", "byte"], default="uart",
                       help="uart: drive the rx/tx pins bit by bit (the default); byte: the "
                       "byte streams, skipping the UART")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; loopback addresses only (default 127.0.0.1)")
    serve.add_argument("--once", action="store_true",
                       help="exit when the first client disconnects")
    serve.add_argument("--stats", metavar="FILE", help="append one JSON line per client")
    add_board_option(serve, required=False, help="simulate this board's device")
    clock = serve.add_mutually_exclusive_group()
    clock.add_argument("--clock-mhz", type=positive_float, metavar="F",
                       help="the clock in MHz (default: the board's, else "
                       f"{SIM_CLOCK_HZ / _MHZ:g}); with --board, "
                       "the closest its PLL makes, as for `trine build`")
    clock.add_argument("--clock-hz", type=positive_int, metavar="HZ",
                       help="the clock in Hz, instead of --clock-mhz")
    serve.add_argument("--baud", type=positive_int, metavar="N",
                       help=f"UART baud rate (default: the board's, else {DEFAULT_BAUD})")
    add_params_options(serve, default="the board's, else the simulated device's")
    group = serve.add_argument_group("how the device is built")
    group.add_argument("--decoder", choices=DECODERS,
                       help="how the trits are decoded (default: the board's, else "
                       f"{SIMULATED.decoder})")
    group.add_argument("--weight-memory", choices=WEIGHT_MEMORIES,
                       help="where the weights are kept (simulated as the generic memory, "
                       "which behaves the same cycle for cycle)")
    serve.set_defaults(func=_serve)
