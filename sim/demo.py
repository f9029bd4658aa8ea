"""``make demo``: the MAC array from generation to silicon figures, on the embedded defaults.

1. Generate the Verilog of a 16-lane x 4-row ternary MAC array.
2. Run it under cocotb on Icarus Verilog and on Verilator against the integer reference
   (random vectors and corner cases, random idle gaps and backpressure), and show that a
   deliberately wrong reference is caught.
3. Synthesise it for the iCE40 UP5K (Yosys + nextpnr, no DSP blocks): logic cells, Fmax
   after routing, and the same for an int8 x int8 array of the same shape built with ``*``.
4. Start the whole accelerator's RTL as a simulated device (Verilator, byte-level link), load
   a random 64-64-10 ternary MLP into it through the host client over ``socket://``, run 64
   inputs and compare every output with the reference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hw import synth
from hw.baseline import Int8MACArray
from hw.generate import mac_array_verilog, to_verilog
from hw.mac_array import MACArray
from hw.spec import accumulator_width
from sim.runner import SimulationError, run_mac_array

LANES, ROWS = 16, 4
BUILD = Path("build/demo")


def _step(text: str) -> float:
    print(f"\n== {text}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> str:
    return f"({time.perf_counter() - t0:.1f} s)"


def _device_step() -> int:
    import numpy as np

    from host.client import Client
    from host.program import Program
    from hw.reference import Layer
    from sim.serve import serve

    t0 = _step("4. the accelerator on Verilator behind socket://, driven by the host client")
    rng = np.random.default_rng(64)
    program = Program([Layer(rng.integers(-1, 2, (64, 64)), rng.integers(-300, 300, 64), 5, True),
                       Layer(rng.integers(-1, 2, (10, 64)), rng.integers(-300, 300, 10), 4, False)])
    x = rng.integers(-128, 128, (64, 64)).astype(np.int8)
    with serve("verilator", "byte") as url, Client(url, timeout=30) as client:
        info = client.info()
        load = client.load(program)
        y, cycles = client.infer_batch(x)
    same = int(np.sum(np.all(y == program.run_reference(x), axis=1)))
    ideal = sum(-(-k.fan_in // info.lanes) * -(-k.fan_out // info.rows) for k in program.layers)
    print(f"device: {info.lanes} lanes x {info.rows} rows; loaded {load.weights} weights in "
          f"{load.frames} frames ({load.bits_per_trit:.2f} bits per weight on the wire, biases "
          f"included)")
    print(f"{len(x)} inferences in {len(cycles)} runs: {sum(cycles) / len(x):.0f} cycles each "
          f"(ideal {ideal}); device == reference for {same} of {len(x)} {_done(t0)}")
    return 0 if same == len(x) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=300, help="random vectors per simulator")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-synth", action="store_true", help="skip step 3")
    args = parser.parse_args(argv)

    t0 = _step(f"1. Verilog of MACArray(lanes={LANES}, rows={ROWS})")
    verilog = mac_array_verilog(LANES, ROWS, max_fan_in=1024)
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"mac_array_{LANES}x{ROWS}.v"
    path.write_text(verilog)
    print(f"wrote {path}: {len(verilog.splitlines())} lines, accumulator "
          f"{accumulator_width(1024)} bits {_done(t0)}")

    failures = 0
    for simulator in ("icarus", "verilator"):
        t0 = _step(f"2. cocotb on {simulator}: {args.vectors} random vectors + corner cases, "
                   "25% idle, 25% backpressure")
        try:
            s = run_mac_array(simulator, LANES, ROWS, max_fan_in=1024, vectors=args.vectors,
                              seed=args.seed, idle=0.25, backpressure=0.25)
        except SimulationError as e:
            failures += 1
            print(f"FAILED: {e}")
            continue
        print(f"{s['vectors_checked']} vectors, {s['beats']} beats, {s['cycles']} cycles: "
              f"all equal to hw.reference (np.array_equal), {s['cycles_per_s']:,.0f} cycles/s "
              f"{_done(t0)}")

    t0 = _step("2b. the same bench with a deliberately wrong reference (must fail)")
    try:
        run_mac_array("icarus", LANES, ROWS, max_fan_in=1024, vectors=50, seed=args.seed,
                      reference="off-by-one")
        failures += 1
        print("FAILED: the scoreboard accepted a wrong reference")
    except SimulationError as e:
        print(f"caught as expected {_done(t0)}:\n  {str(e).splitlines()[0]}")

    if not args.no_synth:
        t0 = _step("3. iCE40 UP5K, Yosys + nextpnr (YoWASP; the first run compiles for ~1 min)")
        generic = synth.generic_cells(verilog, "mac_array")
        muls = {k: v for k, v in generic.items() if "mul" in k}
        print(f"multiplier cells in the ternary netlist: {muls or 'none'}")
        tern = synth.pack(verilog, "mac_array", "ice40")
        base_v = to_verilog(Int8MACArray(LANES, ROWS, max_fan_in=1024), "int8_array")
        plain = synth.pack(base_v, "int8_array", "ice40", flow=synth.Flow(dsp=False))
        booth = synth.pack(base_v, "int8_array", "ice40", flow=synth.BASELINE_FLOW)
        harness = to_verilog(synth.TimingHarness(MACArray(LANES, ROWS, max_fan_in=1024)),
                             "harness")
        pnr = synth.place_and_route(harness, "harness", "ice40", freq_mhz=60)
        fmax = min(pnr.fmax_mhz.values())
        macs = LANES * ROWS
        print(f"{'array':28s} {'logic cells':>12s} {'per MAC':>8s}")
        print(f"{'ternary (this project)':28s} {tern.logic_cells:12d} "
              f"{tern.logic_cells / macs:8.1f}")
        for name, base in (("int8 x int8 with *", plain), ("  same, Booth-recoded", booth)):
            print(f"{name:28s} {base.logic_cells:12d} {base.logic_cells / macs:8.1f}   "
                  f"{base.logic_cells / tern.logic_cells:.1f}x the ternary array")
        print(f"DSP blocks used by the ternary array (DSP mapping allowed): "
              f"{tern.cells.get('SB_MAC16', 0)}; its Fmax after routing: {fmax:.1f} MHz "
              f"{_done(t0)}")

    failures += _device_step()
    print("\nresult:", "PASS" if failures == 0 else f"{failures} FAILURE(S)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
