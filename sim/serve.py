"""The simulated device on a TCP socket, for the host client and its tests.

::

    python -m trine.sim.serve --sim icarus --port 5555            # UART pins, bit by bit
    python -m trine.sim.serve --sim verilator --mode byte --port 0 --once

The host then opens ``socket://127.0.0.1:PORT`` with pyserial (``serial.serial_for_url``) and
speaks the frame protocol of :mod:`trine.contract.protocol` exactly as over a real serial port.

``--mode uart`` simulates :class:`trine.hw.device.Top`: the bridge drives the ``rx`` pin and samples
``tx`` bit by bit, so the UART is exercised too. ``--mode byte`` simulates
:class:`trine.hw.device.LinkedAccelerator` and moves whole bytes on its streams, skipping the UART:
the same frames, commands and answers (INFO reports the same clock and baud rate) in about a
tenth of the simulated cycles (about 4 instead of 44 per byte).

Icarus is bound by its own evaluation of the design; Verilator by cocotb's per-trigger cost
(Python wakes up about 11 times per byte and direction in uart mode, 5 in byte mode), so byte
mode is the one for bulk runs (the README's simulation table has the figures).

The Verilog of each configuration is generated once (cached by the source of the gateware and
the contract, and the parameters) and built once per simulator under ``build/sim/``
(:func:`trine.sim.runner.build_verilog`). The bridge itself is :mod:`trine.sim.bridge`; the
cocotb test that runs it is :mod:`trine.sim.device_tb`. Simulated time stands still while no
request is pending, so an idle server costs no CPU.

``serve(...)`` is the same thing as a context manager for tests: it starts
``python -m trine.sim.serve ... --port 0 --once`` and yields the URL.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from trine.contract.errors import ParameterError, ParameterTypeError, TrineError
from trine.contract.params import SIMULATED, AcceleratorParams
from trine.contract.protocol import DEFAULT_BAUD, DeviceInfo, baud_divisor, frame_timeout_cycles
from trine.sim.bridge import BridgeConfig
from trine.sim.runner import (
    DEFAULT_BUILD_ROOT,
    SIMULATORS,
    TIMESCALE,
    SimulationError,
    build_verilog,
    failures,
    tail,
)

__all__ = ["MODES", "DeviceConfig", "ServeError", "build_device", "check_address", "run_server",
           "serve", "server_process", "wait_until_listening", "device_parser", "device_main",
           "main"]

MODES = ("uart", "byte")
TEST_MODULE = "trine.sim.device_tb"
TESTCASE = "serve_device"
ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"^listening on 127\.0\.0\.1:(\d+) ", re.MULTILINE)
#: Seconds a stopped server waits for its simulator; then its caller kills the process group.
STOP_TIMEOUT = 5.0


class ServeError(TrineError, RuntimeError):
    """The simulated device could not be built or started, or it failed."""


#: The simulated device's clock when none is given: at 3 Mbaud the UART has 4 clock cycles per
#: bit, the fewest it accepts, so that bytes cost few simulated cycles.
SIM_CLOCK_HZ = 12_000_000


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """One simulated device: link mode, clock, baud rate and accelerator parameters.

    The defaults are :data:`trine.contract.params.SIMULATED` (it holds the digits MLP with
    batches of up to 16) at :data:`SIM_CLOCK_HZ` and 3 Mbaud; ``trine sim serve --board B``
    takes the board's parameters, clock and baud instead, so INFO is the board's.

    Raises
    ------
    trine.contract.errors.ParameterError
        For an unknown mode, parameters that are not an ``AcceleratorParams``, or a clock and
        baud rate the UART cannot use.
    """

    mode: str = "uart"
    clock_hz: int = SIM_CLOCK_HZ
    baud: int = DEFAULT_BAUD
    params: AcceleratorParams = SIMULATED

    def __post_init__(self):
        if self.mode not in MODES:
            raise ParameterError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not isinstance(self.params, AcceleratorParams):
            raise ParameterTypeError(f"params must be an AcceleratorParams, not {self.params!r}")
        self.divisor  # noqa: B018 - validates the clock and baud rate

    @property
    def divisor(self) -> int:
        return baud_divisor(self.clock_hz, self.baud)

    @property
    def timeout_cycles(self) -> int:
        return frame_timeout_cycles(self.divisor)

    @property
    def period_ps(self) -> int:
        # Even, so that half a bit time is a whole number of picoseconds at any divisor.
        return 2 * round(1e12 / self.clock_hz / 2)

    @property
    def toplevel(self) -> str:
        return "trine_top" if self.mode == "uart" else "trine_linked"

    def component(self):
        """The Amaranth component that is simulated (the SPRAM, if any, as the generic memory
        it is equivalent to: see :meth:`AcceleratorParams.for_simulation`)."""
        from trine.hw.device import LinkedAccelerator, Top

        params = self.params.for_simulation()
        if self.mode == "uart":
            return Top(params, self.clock_hz, self.baud)
        return LinkedAccelerator(params, timeout_cycles=self.timeout_cycles,
                                 clock_hz=self.clock_hz, baud=self.baud)

    def info(self) -> DeviceInfo:
        """What the device answers to INFO (the same in both modes)."""
        return self.params.device_info(self.clock_hz, self.baud)

    def max_run_cycles(self) -> int:
        """A bound on one RUN; the bridge stops waiting for an answer after it. The device's
        watchdog ends any RUN after ``params.max_run_cycles``, and its answer takes far fewer
        than the margin."""
        return self.params.max_run_cycles + 100_000

    def cli_args(self) -> list[str]:
        """The ``python -m trine.sim.serve`` options that give this device."""
        args = ["--mode", self.mode, "--clock-hz", str(self.clock_hz), "--baud", str(self.baud)]
        for f in dataclasses.fields(self.params):
            args += [f"--{f.name.replace('_', '-')}", str(getattr(self.params, f.name))]
        return args


def _hw_fingerprint() -> str:
    """A digest of everything the device's Verilog depends on: the gateware, the contract and
    the Amaranth version."""
    import trine.contract
    import trine.hw

    digest = hashlib.sha256(importlib.metadata.version("amaranth").encode())
    for package in (trine.contract, trine.hw):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(f"{package.__name__}.{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def device_verilog(config: DeviceConfig, build_root: Path | None = None) -> str:
    """The Verilog of ``config``'s device, generated only when ``hw/`` or the parameters
    changed (generation takes a few seconds; the build cache is keyed by this text)."""
    root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
    key = hashlib.sha256(repr((dataclasses.astuple(config), _hw_fingerprint())).encode())
    path = root / "verilog" / f"{config.toplevel}-{key.hexdigest()[:16]}.v"
    if path.exists():
        return path.read_text()
    from trine.hw.verilog import to_verilog

    text = to_verilog(config.component(), config.toplevel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def build_device(simulator: str, config: DeviceConfig, build_root: Path | None = None) -> Path:
    """Build ``config``'s device for ``simulator`` unless already built; the build dir."""
    verilog = device_verilog(config, build_root)
    label = f"device-{config.mode}-{config.params.lanes}x{config.params.rows}"
    return build_verilog(simulator, verilog, config.toplevel, label, build_root)


def check_address(host: str, port: int) -> None:
    """Refuse what a simulated device may not listen on: an address that is not IPv4 loopback
    (it has no authentication), or a port out of range.

    Raises
    ------
    ServeError
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback or address.version != 4:
        raise ServeError(
            f"the simulated device listens on an IPv4 loopback address only, not {host!r}"
        )
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be in [0, 65535], not {port}")


def run_server(
    simulator: str,
    config: DeviceConfig,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    once: bool = False,
    stats_file: str | None = None,
    on_ready: Callable[[int], None] = lambda port: None,
    stop: threading.Event | None = None,
    build_root: Path | None = None,
) -> None:
    """Build, then simulate the device and serve TCP clients until the bridge stops.

    ``on_ready(port)`` is called once the socket listens. Returns when the bridge stops
    (after the first client with ``once``); raises ``KeyboardInterrupt`` after stopping the
    simulator when ``stop`` is set or on Ctrl-C.

    Raises
    ------
    ServeError
        If the build fails or the simulation ends with an error.
    """
    if simulator not in SIMULATORS:
        raise ServeError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    check_address(host, port)
    try:
        build_dir = build_device(simulator, config, build_root)
    except SimulationError as e:
        raise ServeError(str(e)) from None
    from cocotb_tools.runner import get_runner

    run_dir = build_dir / "runs" / f"serve-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ready_file, stop_file, results, log = (
        run_dir / n for n in ("port", "stop", "results.xml", "sim.log")
    )
    ready_file.unlink(missing_ok=True)
    stop_file.unlink(missing_ok=True)
    bridge = BridgeConfig(
        mode=config.mode,
        period_ps=config.period_ps,
        divisor=config.divisor,
        timeout_cycles=config.timeout_cycles,
        host=host,
        port=port,
        once=once,
        ready_file=str(ready_file),
        stats_file=str(Path(stats_file).resolve()) if stats_file else "",
        parent_pid=os.getpid(),
        stop_file=str(stop_file),
        max_quiet_cycles=config.max_run_cycles(),
    )
    # Started from a pytest test, cocotb's runner would believe it runs under pytest itself.
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    outcome: dict[str, BaseException] = {}
    done = threading.Event()

    def simulate():
        try:
            get_runner(simulator).test(
                test_module=TEST_MODULE,
                testcase=TESTCASE,
                hdl_toplevel=config.toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=run_dir,
                results_xml=str(results),
                extra_env=bridge.to_env(),
                timescale=TIMESCALE,
                log_file=log,
            )
        except BaseException as e:  # the runner calls sys.exit when the simulator fails
            outcome["error"] = e
        finally:
            done.set()

    print(f"simulator log: {log}", file=sys.stderr, flush=True)
    # A daemon thread: if this process is killed, the simulator notices that its parent is gone.
    # Completion is an Event, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C can
    # leave the thread looking finished while it still waits for the simulator.
    threading.Thread(target=simulate, name="simulator", daemon=True).start()
    stop = stop if stop is not None else threading.Event()
    announced = False
    try:
        while not done.wait(0.02):
            if not announced and ready_file.exists():
                on_ready(int(ready_file.read_text()))
                announced = True
            if stop.is_set():
                break
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set():
        # Let the simulator end its test and exit, so that the thread reaps it.
        stop_file.touch()
        done.wait(STOP_TIMEOUT)
        raise KeyboardInterrupt
    if not results.is_file():
        raise ServeError(
            f"{simulator} ended without a results file "
            f"({outcome.get('error')!r}); last lines of {log}:\n{tail(log)}"
        )
    n_cases, messages = failures(results)
    if n_cases == 0 or messages:
        raise ServeError(
            f"{simulator} bridge failed: {'; '.join(messages) or 'no test ran'}; "
            f"last lines of {log}:\n{tail(log)}"
        )


def device_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every simulated device's server takes (``python -m trine.sim.serve`` and
    ``python -m trine.sim.native``): link mode, address, clock, baud and the accelerator's
    parameters."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--mode",
        choices=MODES,
        default="uart",
        help="uart: drive the rx/tx pins bit by bit; byte: the byte streams",
    )
    p.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    p.add_argument("--host", default="127.0.0.1", help="loopback addresses only")
    p.add_argument("--once", action="store_true", help="exit when the first client disconnects")
    p.add_argument("--stats", metavar="FILE", help="append one JSON line per client")
    p.add_argument("--parent-pid", type=int, default=0, metavar="PID",
                   help="stop when process PID, which started this one, is gone")
    p.add_argument("--clock-hz", type=int, default=SIM_CLOCK_HZ, metavar="HZ",
                   help=f"the clock INFO reports and the UART runs at (default {SIM_CLOCK_HZ})")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, metavar="N")
    for f in dataclasses.fields(AcceleratorParams):
        default = getattr(SIMULATED, f.name)
        kind = _boolean if isinstance(default, bool) else type(default)
        metavar = ("true|false" if isinstance(default, bool) else
                   "N" if isinstance(default, int) else "NAME")
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default,
                       metavar=metavar, help=f"accelerator parameter {f.name} (default {default})")
    return p


def _boolean(text: str) -> bool:
    """A boolean accelerator parameter as :meth:`DeviceConfig.cli_args` writes it."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value


def device_main(parser: argparse.ArgumentParser, argv: list[str] | None, engine: Callable,
                run: Callable) -> int:
    """A server's ``main``: parse ``argv``, then ``run(args, config, on_ready=, stop=)`` until
    it returns, SIGTERM or Ctrl-C (status 130); a :class:`TrineError` is one line on stderr
    and status 2. ``engine(args)`` names the engine in the line that announces the port."""
    args = parser.parse_args(argv)
    # SIGTERM and Ctrl-C stop the simulator and reap it before this process exits.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    if args.parent_pid:
        # A server in a session of its own gets no signal when its starter dies (a test run
        # killed with SIGKILL): it finds out by being handed to another parent.
        threading.Thread(target=_stop_with_parent, args=(args.parent_pid, stop),
                         daemon=True).start()
    fields = [f.name for f in dataclasses.fields(AcceleratorParams)]
    try:
        params = AcceleratorParams(**{name: getattr(args, name) for name in fields})
        config = DeviceConfig(args.mode, args.clock_hz, args.baud, params)

        def ready(port: int) -> None:
            print(f"listening on {args.host}:{port} ({engine(args)}, {args.mode} mode)",
                  flush=True)

        run(args, config, on_ready=ready, stop=stop)
    except TrineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _stop_with_parent(pid: int, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        if os.getppid() != pid:
            stop.set()


def _parser() -> argparse.ArgumentParser:
    p = device_parser("python -m trine.sim.serve", __doc__.split("\n")[0])
    p.add_argument("--sim", choices=SIMULATORS, default="icarus")
    return p


def main(argv: list[str] | None = None) -> int:
    def run(args, config, **kwargs):
        run_server(args.sim, config, port=args.port, host=args.host, once=args.once,
                   stats_file=args.stats, **kwargs)

    return device_main(_parser(), argv, lambda args: args.sim, run)


@contextlib.contextmanager
def serve(
    sim: str = "icarus",
    mode: str = "uart",
    *,
    params: AcceleratorParams = SIMULATED,
    clock_hz: int = SIM_CLOCK_HZ,
    baud: int = DEFAULT_BAUD,
    once: bool = True,
    ready_timeout: float = 600.0,
    stats_file: str | os.PathLike | None = None,
    **changes,
) -> Iterator[str]:
    """Run ``python -m trine.sim.serve`` in a subprocess; yield ``"socket://127.0.0.1:PORT"``.

    The device is ``params`` with ``changes`` (AcceleratorParams fields) applied, at
    ``clock_hz`` and ``baud``. On exit the server is stopped (SIGTERM: it stops and reaps its
    simulator; SIGKILL to its process group if that takes over 10 s) and reaped; should this
    process die first (SIGKILL), the server stops by itself (``--parent-pid``).

    Raises
    ------
    ServeError
        If the server is not listening within ``ready_timeout`` seconds (the build included)
        or exits before; the message carries its output.
    trine.contract.errors.ParameterError
        For parameters that do not make a device.
    """
    config = DeviceConfig(mode, clock_hz, baud, params.replace(**changes))
    cmd = [sys.executable, "-m", "trine.sim.serve", "--sim", sim, "--port", "0", "--parent-pid",
           str(os.getpid()), *config.cli_args()]
    if once:
        cmd.append("--once")
    if stats_file is not None:
        cmd += ["--stats", str(stats_file)]
    with server_process(cmd, ready_timeout) as url:
        yield url


@contextlib.contextmanager
def server_process(cmd: list[str], ready_timeout: float) -> Iterator[str]:
    """Run the server ``cmd`` (it prints :data:`READY` once listening) in a process group of
    its own; yield ``"socket://127.0.0.1:PORT"``; then stop it (SIGTERM: it stops and reaps its
    simulator; after :data:`STOP_TIMEOUT` + 5 s, and in any case for whatever is left of its
    group, SIGKILL) and reap it.

    Raises
    ------
    ServeError
        If the server is not listening within ``ready_timeout`` seconds or exits before.
    """
    # A file, not a pipe: nobody has to keep draining it while the caller runs.
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
        try:
            yield f"socket://127.0.0.1:{wait_until_listening(proc, output, ready_timeout)}"
        finally:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=STOP_TIMEOUT + 5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until_listening(proc: subprocess.Popen, output, timeout: float) -> int:
    """The port a server started with ``stdout=output`` (a file) announces; raises
    :class:`ServeError` with its output if it exits first or takes over ``timeout`` s."""
    name = " ".join(a for a in proc.args[1:3] if a != "-m") or str(proc.args[0])
    deadline = time.monotonic() + timeout
    while True:
        # pread: the server shares this file's offset, so a seek here would move its writes.
        fd = output.fileno()
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        if m := READY.search(text):
            return int(m.group(1))
        if proc.poll() is not None:
            raise ServeError(f"{name} exited with status {proc.returncode} before listening; "
                             f"its output:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise ServeError(f"{name} was not listening after {timeout:g} s; its output:\n"
                             f"{text[-4000:]}")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
