"""Render bench/results/*.json as the README's benchmark tables.

``python -m bench.report`` prints the Markdown; ``--update README.md`` replaces the text between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in that file. ``make bench`` does the latter,
so the README always shows the figures of the last run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bench._common import RESULTS
from bench.regions import table as regions_table

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def _label(design: str) -> str:
    kind, _, rest = design.partition(" ")
    return {"int8-plain": f"int8 x int8 `*`, default synthesis, {rest}",
            "int8": f"int8 x int8 `*`, Booth-recoded, {rest}"}.get(kind, design)


def area_tables(d: dict) -> list[str]:
    by = {(r["design"], r["family"]): r for r in d["results"]}
    designs = list(dict.fromkeys(r["design"] for r in d["results"]))
    out = [
        "Logic cells of the bare array (nextpnr packing: iCE40 `ICESTORM_LC`, ECP5 `TRELLIS_COMB`)"
        " per MAC lane (rows x lanes), and Fmax after routing in a register harness "
        f"(seed 1). Measured {d['context']['date'][:10]}, `python -m bench area`.",
        "",
        "| array (rows x lanes) | UP5K cells/lane | UP5K Fmax MHz | ECP5 cells/lane "
        "| ECP5 Fmax MHz |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in designs:
        cols = []
        for fam in ("ice40", "ecp5"):
            r = by.get((name, fam))
            if r is None:
                cols += ["-", "-"]
                continue
            cells = f"{r['lc_per_lane']:.1f}"
            if not r["fits"]:
                cells += f" (does not fit: {r['logic_cells']}/{r['available']})"
            cols += [cells, _fmt(r.get("fmax_mhz"))]
        out.append(f"| {_label(name)} | " + " | ".join(cols) + " |")
    t = d.get("targets", {})
    labels = {
        "ice40_lc_per_lane": "UP5K cells per lane at 4x32 <= 22",
        "ice40_lc_per_lane_stretch": "stretch: <= 18",
        "ice40_ratio_vs_int8_plain": "fewer cells than int8 `*` (default synthesis), UP5K >= 8x",
        "ecp5_ratio_vs_int8_plain": "fewer cells than int8 `*` (default synthesis), ECP5 >= 8x",
        "ice40_ratio_vs_int8": "same, against Booth-recoded int8 (stronger baseline), UP5K",
        "ecp5_ratio_vs_int8": "same, against Booth-recoded int8, ECP5",
        "ice40_fmax_mhz": "UP5K Fmax >= 60 MHz",
        "ecp5_fmax_mhz": "ECP5 Fmax >= 150 MHz",
    }
    out += ["", "| target (4x32) | measured | met |", "|---|---:|---|"]
    for key, label in labels.items():
        if key in t:
            v = t[key]["value"]
            met = {True: "yes", False: "no", None: "-"}[t[key]["pass"]]
            out.append(f"| {label} | {_fmt(v, '.2f')} | {met} |")
    return out


def packing_table(d: dict) -> list[str]:
    out = [f"Packing {d['trits']:,} trits on one core (`python -m bench packing`):", "",
           "| operation | MB/s packed | Mtrit/s |", "|---|---:|---:|"]
    for name, r in d["results"].items():
        out.append(f"| {name} | {r['packed_MB_per_s']:.0f} | {r['Mtrits_per_s']:.0f} |")
    return out


def reference_table(d: dict) -> list[str]:
    out = ["Reference model next to a bare float32 NumPy matmul of the same shape, same run "
           "(`python -m bench reference`):", "",
           "| layer | N x K x M | reference ms | float32 matmul ms | int64 matmul ms "
           "| reference / float32 |", "|---|---|---:|---:|---:|---:|"]
    for r in d["results"]:
        out.append(f"| {r['shape']} | {r['N']}x{r['K']}x{r['M']} | {r['reference_s'] * 1e3:.2f} "
                   f"| {r['float32_matmul_s'] * 1e3:.2f} | {r['int64_matmul_s'] * 1e3:.2f} "
                   f"| {r['reference_over_float32']:.2f} |")
    if d.get("convolutions"):
        out += ["", "Convolutions, next to a float32 im2col and matmul of the same shape (the "
                "float path a NumPy user would write), same run:", "",
                "| layer | N, input, C_out, kernel / stride / padding | reference ms "
                "| float32 im2col + matmul ms | float32 matmul alone ms | reference / float32 |",
                "|---|---|---:|---:|---:|---:|"]
        for r in d["convolutions"]:
            k = "x".join(map(str, r["kernel"]))
            shape = "x".join(map(str, r["input"]))
            out.append(f"| {r['shape']} | {r['N']}, {shape}, {r['C_out']}, {k} / {r['stride']} "
                       f"/ {r['padding']} | {r['reference_s'] * 1e3:.2f} "
                       f"| {r['float32_im2col_matmul_s'] * 1e3:.2f} "
                       f"| {r['float32_matmul_s'] * 1e3:.2f} "
                       f"| {r['reference_over_float32']:.2f} |")
    return out


def device_tables(d: dict) -> list[str]:
    dev, link = d["device"], d["link"]
    out = [f"The accelerator's RTL on {d['simulator']} (`python -m bench device`), "
           f"{dev['lanes']} lanes x {dev['rows']} rows: cycles from the device's own counter "
           "against one beat per clock (`sum ceil(K/lanes) * ceil(M/rows)` for a dense layer); "
           "peak "
           f"{dev['lanes'] * dev['rows']} MACs per cycle, which is also one weight-memory word "
           "per cycle (the batch-1 roofline).", "",
           "| run | batch | cycles | ideal | utilisation | cycles per inference | MACs/cycle |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in d["runs"]:
        out.append(f"| {r['what']} | {r['batch']} | {r['cycles']} | {r['ideal_cycles']} "
                   f"| {r['utilisation']:.1%} | {r['cycles_per_inference']:.0f} "
                   f"| {r['macs_per_cycle']:.1f} |")
    out += ["", f"Loading it through the client: {link['weight_image_bits_per_weight']:.3f} bits "
            f"per weight in the image (5 trits per byte, tile padding included), "
            f"{link['weight_bits_on_wire_per_weight']:.3f} with framing; framing overhead "
            f"{link['framing_overhead']:.2%}; {link['bits_per_weight_on_wire']:.2f} bits per "
            f"weight counting biases and the layer table; a stop-and-wait host reaches "
            f"{link['goodput_fraction_of_uart']:.1%} of the UART's byte rate (answers counted, "
            f"host turnaround not): {link['load_seconds_at_baud'] * 1e3:.0f} ms at 3 Mbaud for "
            f"{link['weights']:,} weights."]
    cnn = d.get("cnn")
    if cnn:
        cd = cnn["device"]
        out += ["", f"The MNIST-1D CNN `{cnn['arch']}` on the iCEBreaker's default device "
                f"({cd['lanes']} x {cd['rows']}, a pool of {cd['act_words']} words), each "
                "weighted layer alone (a convolution with its fused pooling) and the network: "
                "ideal = one beat per clock over every output position before pooling and "
                "every window word (zero padding included).", "",
                "| run | cycles | ideal | utilisation | MACs/cycle | inferences/s at 48 MHz |",
                "|---|---:|---:|---:|---:|---:|"]
        for r in cnn["runs"]:
            out.append(f"| {r['what']} | {r['cycles']} | {r['ideal_cycles']} "
                       f"| {r['utilisation']:.1%} | {r['macs_per_cycle']:.1f} "
                       f"| {r['inferences_per_second_at_48_mhz']:,.0f} |")
        costs = [f"{r['pooling_cost']:+.2%} ({r['cycles']} cycles, "
                 f"{r['cycles_without_pooling']} without it)"
                 for r in cnn["runs"] if "pooling_cost" in r]
        if costs:
            out += ["", "The fused max-pooling, against the same convolution without it: "
                    + "; ".join(costs) + "."]
    return out


def _load_avg(d: dict) -> str:
    la = d.get("context", {}).get("load_average")
    return f"{la[0]:.1f}" if isinstance(la, list) and la else "unknown"


def boards_table(d: dict) -> list[str]:
    out = ["Whole-device builds per board (`python -m bench boards`: Amaranth, Yosys, nextpnr "
           "through YoWASP, seed 1, each built for the clock in the last column: the board's "
           "default unless the run named one): logic cells, block RAM, "
           "SPRAM, Fmax after routing; peak = lanes x rows x Fmax, which is also the batch-1 "
           "roofline while the array takes one weight word (lanes x rows trits) per clock. "
           "DSP blocks and multiplier cells: 0 in every build. Build times were measured on a "
           f"2-core machine (load average {_load_avg(d)}).", "",
           "| board | lanes x rows | logic cells | FF | block RAM | SPRAM | Fmax MHz | peak GMAC/s "
           "| fits, timing |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, b in d["boards"].items():
        for r in b["results"]:
            lc = r.get("logic_cells") or [None, None]
            ram = r.get("block_ram") or [None, None]
            sp = r.get("spram")
            state = ("no fit" if not r.get("fits") else
                     f"met at {r['clock_mhz']:g} MHz" if r.get("timing_met") else
                     f"missed {r['clock_mhz']:g} MHz")
            out.append(f"| {name} | {r['lanes']} x {r['rows']} | {lc[0]}/{lc[1]} | {r.get('ff')} "
                       f"| {ram[0]}/{ram[1]} | {f'{sp[0]}/{sp[1]}' if sp else '-'} "
                       f"| {_fmt(r.get('fmax_mhz'))} | {_fmt(r.get('peak_gmacs'), '.2f')} "
                       f"| {state} |")
    seeds = []
    for name, b in d["boards"].items():
        dd = b.get("default_device")
        if not dd or not dd.get("seeds"):
            continue
        runs = [s for s in dd["seeds"] if s.get("fmax_mhz") is not None]
        if not runs:
            continue
        met = sum(bool(s.get("timing_met")) for s in runs)
        fmaxes = ", ".join(f"{s['fmax_mhz']:.1f}" for s in runs)
        seeds.append(f"{name} {dd['lanes']} x {dd['rows']}: {fmaxes} MHz (seeds "
                     f"{', '.join(str(s['seed']) for s in runs)}; timing met at "
                     f"{b['clock_mhz']:g} MHz with {met} of {len(runs)})")
    if seeds:
        out += ["", "Each board's default device over nextpnr placement seeds: "
                + "; ".join(seeds) + "."]
    for name, b in d["boards"].items():
        cmp, dd = b.get("compare"), b.get("default_device")
        if not cmp or not dd:
            continue
        text = ", ".join(f"{k}={v}" for k, v in cmp["changes"].items())
        after = {s["seed"]: s for s in dd["seeds"]}
        rows = []
        for s in cmp["seeds"]:
            a = after.get(s["seed"], {})
            lc, alc = s.get("logic_cells") or [None], a.get("logic_cells") or [None]
            rows.append(f"| {name} | {s['seed']} | {lc[0]} | {_fmt(s.get('fmax_mhz'))} "
                        f"| {alc[0]} | {_fmt(a.get('fmax_mhz'))} |")
        out += ["", f"The {name}'s default device against the same device with {text} "
                f"(built in the same run, same seeds, both for {b['clock_mhz']:g} MHz):", "",
                f"| board | seed | logic cells ({text}) | Fmax MHz ({text}) | logic cells "
                "(default) | Fmax MHz (default) |", "|---|---:|---:|---:|---:|---:|", *rows]
    older = [f"{name} on {b['measured_in'].get('date', '?')[:10]} (load average "
             f"{', '.join(f'{x:.1f}' for x in b['measured_in'].get('load_average', []))})"
             for name, b in d["boards"].items() if b.get("measured_in")]
    if older:
        out += ["", "Boards not rebuilt in the last run keep their figures from an earlier one: "
                + "; ".join(older) + "."]
    out += ["", "| board | first build (empty YoWASP cache) s | warm build s |", "|---|---:|---:|"]
    for name, b in d["boards"].items():
        out.append(f"| {name} | {_fmt(b.get('first_run_s'), '.0f')} "
                   f"| {_fmt(b.get('warm_s'), '.0f')} |")
    return out


def qat_table(d: dict) -> list[str]:
    out = ["Training on the bundled data sets (`python -m bench qat`): a float MLP, the same "
           "float MLP ternarised after training (TWN, scales folded into integer biases and "
           "shifts), and quantisation-aware training of the same shape. Ternary accuracies are "
           "the bit-exact reference's, i.e. the device's.", "",
           "| data | MLP | float | ternarised after training | QAT | QAT - float | QAT s |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in d["results"]:
        fm, qm = r["float"]["metrics"], r["qat"]["metrics"]
        out.append(f"| {r['data']} | {r['shape']} | {fm['test_acc']:.2%} "
                   f"| {r['folded_test_acc']:.2%} | {qm['test_acc']:.2%} "
                   f"| {100 * (qm['test_acc'] - fm['test_acc']):+.2f} pt | {qm['seconds']:.0f} |")
    return out


def evolve_table(d: dict) -> list[str]:
    out = ["Gradient-free evolution of the ternary weights against QAT and the float MLP, same "
           "shape, same run (`python -m bench evolve`; curves in `bench/results/evolve_*.png`)."
           + (" Quick run (short budgets)." if d.get("quick") else ""), "",
           "| run | method | network | test accuracy | seconds | generations |",
           "|---|---|---|---:|---:|---:|"]
    names = {"evolve": "evolution", "qat": "QAT", "float": "float MLP"}
    for run_name, run in d["runs"].items():
        for r in run["results"]:
            m = r.get("metrics", {})
            acc = m.get("test_acc")
            settings = r.get("settings", {})
            shape = settings.get("arch") or run.get("arch") or "hidden " + "-".join(
                str(w) for w in settings.get("hidden", run.get("hidden", [])))
            out.append(f"| {run_name} | {names.get(r['method'], r['method'])} | {shape} "
                       f"| {_fmt(acc and 100 * acc, '.2f')}% | {_fmt(m.get('seconds'), '.0f')} "
                       f"| {m.get('generations', '-')} |")
    return out


def evolve_islands_table(d: dict) -> list[str]:
    s = d["settings"]
    out = [f"Evolution at scale (`python -m bench evolve_islands`): the island search "
           f"({s['islands']} islands, {s['generations_per_island']} generations each, migration "
           f"every {s['migrate_every']}) on {s['data']} {s['hidden']}, in-process and on Ray "
           f"{s['ray']} workers, one run; load average {s['load_average_at_start']} at the "
           f"start on {d['context']['cpus']} cores. Same program on every engine: "
           f"{'yes' if d['same_program'] else 'NO'}.", "",
           "| engine | wall s | of which Ray's start | test accuracy |",
           "|---|---:|---:|---:|"]
    for r in d["runs"]:
        out.append(f"| {r['engine']} | {r['wall_s']:.1f} | {r['ray_start_s']:.1f} "
                   f"| {100 * r['test_acc']:.2f}% |")
    ratios = d["ratios"]
    out += ["", f"Speed-up of 2 workers over 1: {ratios['speedup_2_vs_1_workers']}x "
                f"({ratios['speedup_2_vs_1_workers_search']}x without Ray's start)."]
    return out


def qat_cnn_table(d: dict) -> list[str]:
    out = ["Ternary CNNs by QAT (`python -m bench qat_cnn`, the defaults of "
           "`trine.host.qat.DEFAULTS[...]['cnn']`); test accuracy of the bit-exact reference.", "",
           "| data | CNN | test accuracy per seed | mean | seconds per run |",
           "|---|---|---|---:|---:|"]
    for name, sm in d["summary"].items():
        runs = [r for r in d["runs"] if r["data"] == name]
        secs = sum(r["seconds"] for r in runs) / len(runs)
        per_seed = " / ".join(f"{100 * a:.2f}%" for a in sm["test_acc"])
        out.append(f"| {name} | {sm['arch']} | {per_seed} (seeds "
                   f"{', '.join(map(str, sm['seeds']))}) | {100 * sm['mean']:.2f}% "
                   f"| {secs:.0f} |")
    return out


def _pc(v: float) -> str:
    return f"{100 * v:.1f}%"


def import_accuracy_tables(d: dict) -> list[str]:
    names = {"digits": "skl2onnx digits MLP 64-96-10", "mnist1d": "torch.onnx MNIST-1D CNN"}
    out = ["Importing float models (`python -m bench import_accuracy`" +
           (", quick run" if d.get("quick") else "") + "): test accuracy of the float model "
           "(its ONNX graph) and of the programs (the bit-exact reference, i.e. the device), "
           "seconds in brackets (one BLAS thread). Calibration: the first N training inputs, no "
           "labels. Distilled: from the gptq program, mean over seeds (range), the epoch chosen on "
           "held-out mixtures; without that choice (the last epoch) after it.", "",
           "| model | N | float | gptq | twn | twn per channel | absmean | distilled | "
           "last epoch | target | met |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for key, t in d["targets"].items():
        for c in t["calibrations"]:
            post = {(r["method"], r["per_channel"]): r for r in c["post_training"]}
            cells = [f"{_pc(post[m]['test_acc'])} ({post[m]['seconds']:.1f} s)"
                     for m in (("gptq", False), ("twn", False), ("twn", True),
                               ("absmean", False))]
            chosen = [r for r in c["distilled"] if r["select"]]
            last = [r for r in c["distilled"] if not r["select"]]

            def summary(runs):
                if not runs:
                    return "-"
                accs = [r["test_acc"] for r in runs]
                secs = sum(r["seconds"] for r in runs) / len(runs)
                spread = f" ({_pc(min(accs))}-{_pc(max(accs))})" if len(accs) > 1 else ""
                return f"{_pc(sum(accs) / len(accs))}{spread}, {len(accs)} seed(s), {secs:.0f} s"
            tg = c["targets"]
            goals, met = [], []
            for label, k in (("post-training", "post_training"), ("distilled", "distilled_mean")):
                if tg[k]["within"] is not None:
                    goals.append(f"{label} within {tg[k]['within']:g} pt "
                                 f"({tg[k]['points_below_float']:.1f} below)")
                    met.append("yes" if tg[k]["pass"] else "no")
            out.append(f"| {names.get(key, key)} | {c['n_calib']} | {_pc(t['float']['test_acc'])} "
                       f"| {' | '.join(cells)} | {summary(chosen)} | {summary(last)} "
                       f"| {'; '.join(goals)} | {', '.join(met)} |")
    out += ["", "Which parts of the gptq fit pay (`trine.host.ptq.OutputFit`, each switched off "
            "alone; test accuracy of the program):", ""]
    labels = None
    rows = []
    for key, t in d["targets"].items():
        for c in t["calibrations"]:
            labels = [r["parts"] for r in c["ablation"]]
            rows.append(f"| {names.get(key, key)} | {c['n_calib']} | " +
                        " | ".join(_pc(r["test_acc"]) for r in c["ablation"]) + " |")
    if labels:
        out += ["| model | N | " + " | ".join(labels) + " |",
                "|---|---:|" + "---:|" * len(labels), *rows]
    out += ["", "A shift per output row (issue §3), simulated in software "
            "(`bench/_per_row.py`; not the device): each row's scale rounded to a power-of-two "
            "ratio of the layer's largest and folded into its own shift. gptq per row searches "
            "each row's scale; 'one scale, same search' is the control with the per-row search's "
            "grid and one scale per layer (its integers equal the reference's, checked).", "",
            "| model | N | gptq, device | gptq per row | one scale, same search | twn per channel, "
            "device | twn per channel, per row |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, t in d["targets"].items():
        for c in t["calibrations"]:
            post = {(r["method"], r["per_channel"]): r["test_acc"] for r in c["post_training"]}
            pr = {r["mode"]: r["test_acc"] for r in c["per_row_shift"]}
            out.append(f"| {names.get(key, key)} | {c['n_calib']} | {_pc(post[('gptq', False)])} "
                       f"| {_pc(pr['gptq'])} | {_pc(pr['gptq-layer'])} "
                       f"| {_pc(post[('twn', True)])} | {_pc(pr['twn'])} |")
    qat = d.get("qat_per_row_shift") or {}
    if qat:
        kinds = list(dict.fromkeys(r["shift"] for q in qat.values() for r in q["runs"]))
        out += ["", "QAT (the MLPs of `trine.host.qat.DEFAULTS`, random start, the same loop and "
                "seeds) with a shift per layer (the device) and per row (simulated); test "
                "accuracy, mean (range) over seeds:", "",
                "| data | MLP | " + " | ".join(f"shift {k}" for k in kinds) + " |",
                "|---|---|" + "---:|" * len(kinds)]
        for name, q in qat.items():
            cells = []
            for k in kinds:
                accs = [r["test_acc"] for r in q["runs"] if r["shift"] == k]
                cells.append(f"{_pc(sum(accs) / len(accs))} ({_pc(min(accs))}-{_pc(max(accs))})"
                             if accs else "-")
            out.append(f"| {name} | {q['shape']} | " + " | ".join(cells) + " |")
    mix = (d.get("mixtures") or {}).get("runs") or []
    if mix:
        counts = sorted({r["mixtures"] for r in mix})
        out += ["", "The gptq fit on mixtures of the calibration inputs too "
                "(`trine import --mixtures K`, `fold_to_program(mixtures=K)`): test accuracy, "
                "mean (range) over the mixtures' seeds:", "",
                "| model | N | " + " | ".join(f"K = {k}" for k in counts) + " |",
                "|---|---:|" + "---:|" * len(counts)]
        for key in dict.fromkeys(r["target"] for r in mix):
            cells = []
            for k in counts:
                accs = [r["test_acc"] for r in mix if r["target"] == key and r["mixtures"] == k]
                spread = f" ({_pc(min(accs))}-{_pc(max(accs))})" if len(accs) > 1 else ""
                cells.append(f"{_pc(sum(accs) / len(accs))}{spread}" if accs else "-")
            n = next(r["n_calib"] for r in mix if r["target"] == key)
            out.append(f"| {names.get(key, key)} | {n} | " + " | ".join(cells) + " |")
    out += ["", "Brevitas ternary models through QONNX (trits read, not re-quantised), on the "
            "fixture's 256 test inputs against Brevitas' own integer outputs:", "",
            "| model | rounding ties half to even: bit-exact | device (half up): outputs equal "
            "| max difference | same class | test accuracy Brevitas / program |",
            "|---|---|---:|---:|---:|---:|"]
    for name, b in d["brevitas"].items():
        out.append(f"| {name} | {'yes' if b['half_even_equal'] else 'no'} "
                   f"| {_pc(b['device_outputs_equal'])} | {b['device_max_abs_diff']} "
                   f"| {_pc(b['device_class_agreement'])} "
                   f"| {_pc(b['brevitas_test_acc'])} / {_pc(b['program_test_acc'])} |")
    return out


def sim_engines_table(d: dict) -> list[str]:
    la = d.get("load_average") or [None]
    out = [f"The simulated device ({d['device']}) on both engines in one run (`python -m bench "
           f"sim_engines`): native (Verilator, no Python in the loop) and cocotb on "
           f"{d['cocotb_simulator']}. Simulated cycles per second of wall time while work was "
           "pending (the servers' own count), for the compute workload (RUNs of a batch of 16 "
           "through a 64-192-192-10 MLP) and over every workload; the native engine's figure "
           "per second of its own CPU time beside it (less affected by the machine's other "
           "load, not immune: the cores' caches are shared); and the wall time of whole "
           "workloads through the host client (every output "
           f"equal to the reference). Load average during the run: {_fmt(la[0])} on "
           f"{d['context']['cpus']} cores.", "",
           "| engine | mode | cycles/s (compute) | cycles/s (all) | cycles per CPU-s | startup s "
           "| workload wall times |", "|---|---|---:|---:|---:|---:|---|"]
    for r in d["runs"]:
        walls = "; ".join(f"{w['what']}: {w['wall_s']:.1f} s" for w in r["workloads"].values())
        out.append(f"| {r['engine']} | {r['mode']} | {_fmt(r['cycles_per_s'], ',.0f')} "
                   f"| {_fmt(r['cycles_per_s_all'], ',.0f')} "
                   f"| {_fmt(r.get('cycles_per_cpu_s'), ',.0f')} | {r['startup_s']:.1f} "
                   f"| {walls} |")
    for mode, s in d.get("speedup", {}).items():
        rest = ", ".join(f"{k} {v:.1f}x" for k, v in s.items() if k != "cycles")
        out += ["", f"Native over cocotb, {mode} mode: {s['cycles']:.1f}x the simulated cycles "
                f"per second; wall time of the workloads {rest}."]
    return out


def link_latency_table(d: dict) -> list[str]:
    t = d.get("targets")
    out = [f"The link against latency (`python -m bench link_latency`): a device that answers at "
           f"once behind a {d['uart_bytes_per_s']:,} bytes/s line (3 Mbaud 8N1) with the given "
           "latency added each way; the real client loads a 64-256-256-10 program and runs "
           f"{d.get('inferences', '')} samples at batch 1, stop-and-wait against the window of "
           "the device's receive buffer, side by side (median of "
           f"{d['rows'][0].get('repeats', 1)} runs each). *Weight stream*: the image's WRITEs, "
           "frames included, as a share of the line's byte rate (the whole load adds the two "
           "claims' round trips); *batch-1*: inferences per second over the stream of samples, "
           f"and the time of one sample alone. Load average {_fmt(d.get('load_average'))}.", "",
           "| latency each way | mode | window | weight stream | whole load "
           "| batch-1 inferences/s | vs 0 ms | one sample |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        if "mode" not in r:
            continue
        out.append(f"| {r['latency_ms']} ms | {r['mode']} | {r['window_bytes']} B "
                   f"| {r['weight_stream_share_of_uart']:.0%} | {r['load_share_of_uart']:.0%} "
                   f"| {r['inferences_per_s']:,.0f} | {r['inference_rate_vs_0ms']:.0%} "
                   f"| {r['single_inference_ms']:.1f} ms |")
    if t:
        out += ["", f"Targets at {t['latency_ms']} ms each way: weight stream >= 90% of the byte "
                f"rate: {t['weight_stream_share']:.0%} "
                f"({'met' if t['weight_stream_met'] else 'not met'}); batch-1 inference at "
                f">= half its 0 ms rate: {t['inference_rate_vs_0ms']:.0%} "
                f"({'met' if t['inference_rate_met'] else 'not met'})."]
    return out


def fatnn_tables(d: dict) -> list[str]:
    out = []
    acc = d.get("accuracy")
    if acc:
        out += ["Ternary activations (FATNN) against int8 activations: QAT at the same settings "
                "(`trine.host.qat.DEFAULTS`; epochs as listed), test accuracy of the bit-exact "
                "reference, mean over seeds; *inner*: the first hidden layer's outputs int8 too "
                f"(`act=\"ternary-inner\"`). Measured {d['context']['date'][:10]}, "
                "`python -m bench.fatnn`.", "",
                "| data | model | epochs | seeds | int8 activations | ternary activations "
                "| cost (points) | ternary, inner | cost (points) |",
                "|---|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in acc["summary"]:
            inner, inner_cost = r.get("ternary-inner"), r.get("ternary-inner_cost_points")
            out.append(f"| {r['data']} | {r['model']} | {r['epochs']} "
                       f"| {', '.join(map(str, r['seeds']))} | {_fmt(r['int8'], '.1%')} "
                       f"| {_fmt(r['ternary'], '.1%')} | {_fmt(r['cost_points'])} "
                       f"| {_fmt(inner, '.1%')} | {_fmt(inner_cost)} |")
    area = d.get("area")
    if area:
        if out:
            out.append("")
        out += [f"The trit-by-trit array against today's int8-activation lane at {area['size']} "
                "(rows x lanes): logic cells per MAC of the bare array (nextpnr packing), Fmax "
                "after routing in the register harness, and the MACs the UP5K's logic cells "
                "hold at that density (the array alone). Target: "
                f"<= {area['lc_per_lane_target']:g} cells per MAC.", "",
                "| array | register_every | UP5K cells/MAC | UP5K Fmax MHz | UP5K MACs "
                "| ECP5 cells/MAC | ECP5 Fmax MHz |", "|---|---:|---:|---:|---:|---:|---:|"]
        by = {(r["design"], r["register_every"], r["family"]): r for r in area["rows"]}
        for key in dict.fromkeys((r["design"], r["register_every"]) for r in area["rows"]):
            ice, ecp = by.get((*key, "ice40")), by.get((*key, "ecp5"))
            cols = [_fmt(ice and ice["lc_per_lane"], ".2f"), _fmt(ice and ice["fmax_mhz"]),
                    _fmt(ice and ice.get("up5k_lanes"), "d"),
                    _fmt(ecp and ecp["lc_per_lane"], ".2f"), _fmt(ecp and ecp["fmax_mhz"])]
            out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cols) + " |")
    return out


def render() -> str:
    parts = []
    for name, fn in (("qat", qat_table), ("qat_cnn", qat_cnn_table), ("evolve", evolve_table),
                     ("evolve_islands", evolve_islands_table), ("regions", regions_table),
                     ("import_accuracy", import_accuracy_tables), ("area", area_tables),
                     ("boards", boards_table), ("device", device_tables),
                     ("sim_engines", sim_engines_table),
                     ("link_latency", link_latency_table),
                     ("packing", packing_table), ("reference", reference_table),
                     ("fatnn", fatnn_tables)):
        d = _load(name)
        parts.append("\n".join(fn(d)) if d else f"(no {name} results yet: run `make bench`)")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", type=Path, help="rewrite the marked section of this file")
    args = parser.parse_args(argv)
    text = render()
    if not args.update:
        print(text)
        return
    doc = args.update.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{args.update}: no {START} ... {END} section")
    args.update.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", doc))
    print(f"updated {args.update}")


if __name__ == "__main__":
    main()
