"""``make demo``: a ternary CNN from the MNIST-1D data set to answers from the simulated RTL.

1. Train, with quantisation-aware training (the device's integer arithmetic in the loop,
   trine.host.qat), the MNIST-1D CNN of :data:`trine.host.qat.DEFAULTS` (three Conv1d layers
   of 64 channels with max-pooling and a dense layer to 10 classes; MNIST-1D is generated
   locally, no download). ``--data digits`` trains the digits CNN (2-D, 8x8 images);
   ``--model mlp`` a ternary MLP instead, with a float MLP of the same shape as the yardstick.
2. Compile the ternary network to a ``.trine`` program (5 trits per byte) and read it back.
3. Start the accelerator's RTL behind ``socket://`` on the native Verilator engine
   (trine.sim.native; ``--engine cocotb`` for cocotb with ``--sim``), with the byte-level link
   (the bit-level UART is skipped to go faster; ``--mode uart`` keeps it), stream the program
   through the host client, run the whole test split through the device and compare every
   output with the bit-exact reference.
4. Print the accuracies, device == reference, cycles per inference and the projected
   inferences per second at the target board's clock, bytes streamed and bits per weight.

``--port /dev/ttyUSB1`` runs step 3 on a real board instead (after ``trine build --board
icebreaker`` and ``trine program --board icebreaker``; ``--baud`` if the build used another),
and projects at the clock the device reports.

``--hardware`` adds the MAC-array checks: cocotb on Icarus and Verilator against the reference
(with a deliberately wrong reference that must be caught) and an iCE40 UP5K synthesis next to
an int8 array built with ``*``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BUILD = Path("build/demo")
DESCRIPTIONS = {"mnist1d": "MNIST-1D, 4,000 + 1,000 sequences of 40 samples, generated locally",
                "digits": "scikit-learn's digits, 1,797 8x8 images, bundled"}
LANES, ROWS = 16, 4  # the MAC array of the --hardware steps


def _step(text: str) -> float:
    print(f"\n== {text}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> str:
    return f"({time.perf_counter() - t0:.1f} s)"


def _hardware_steps(vectors: int, seed: int) -> int:
    from trine.flow import synth
    from trine.hw.baseline import Int8MACArray
    from trine.hw.mac_array import MACArray
    from trine.hw.verilog import mac_array_verilog, to_verilog
    from trine.sim.runner import SimulationError, run_mac_array

    failures = 0
    t0 = _step(f"H1. the MAC array alone, MACArray(lanes={LANES}, rows={ROWS}), under cocotb")
    verilog = mac_array_verilog(LANES, ROWS, max_fan_in=1024)
    for simulator in ("icarus", "verilator"):
        try:
            s = run_mac_array(simulator, LANES, ROWS, max_fan_in=1024, vectors=vectors,
                              seed=seed, idle=0.25, backpressure=0.25)
        except SimulationError as e:
            failures += 1
            print(f"{simulator}: FAILED: {e}")
            continue
        print(f"{simulator}: {s['vectors_checked']} vectors (random + corner cases, 25% idle, "
              f"25% backpressure), all equal to trine.contract.reference")
    try:
        run_mac_array("icarus", LANES, ROWS, max_fan_in=1024, vectors=50, seed=seed,
                      reference="off-by-one")
        failures += 1
        print("FAILED: the scoreboard accepted a deliberately wrong reference")
    except SimulationError:
        print(f"a deliberately wrong reference is caught {_done(t0)}")

    t0 = _step("H2. iCE40 UP5K synthesis, Yosys + nextpnr (YoWASP; a first run compiles ~1 min)")
    tern = synth.pack(verilog, "mac_array", "ice40")
    base = synth.pack(to_verilog(Int8MACArray(LANES, ROWS, max_fan_in=1024), "int8_array"),
                      "int8_array", "ice40", flow=synth.Flow(dsp=False))
    harness = to_verilog(synth.TimingHarness(MACArray(LANES, ROWS, max_fan_in=1024)), "harness")
    fmax = min(synth.place_and_route(harness, "harness", "ice40", freq_mhz=60).fmax_mhz.values())
    macs = LANES * ROWS
    print(f"ternary array: {tern.logic_cells} logic cells ({tern.logic_cells / macs:.1f} per MAC),"
          f" {tern.cells.get('SB_MAC16', 0)} DSP, {fmax:.1f} MHz after routing")
    print(f"int8 x int8 with `*`: {base.logic_cells} logic cells "
          f"({base.logic_cells / tern.logic_cells:.1f}x the ternary array) {_done(t0)}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["mnist1d", "digits"], default="mnist1d",
                        help="data set (default mnist1d)")
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn",
                        help="network (default cnn: the data set's default CNN)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="QAT epochs (default: the data set's measured setting)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--engine", choices=["native", "cocotb"], default="native",
                        help="simulation engine of step 3 (default native: Verilator with no "
                             "Python in the loop)")
    parser.add_argument("--sim", choices=["verilator", "icarus"], default="verilator",
                        help="with --engine cocotb: the simulator")
    parser.add_argument("--mode", choices=["byte", "uart"], default="byte",
                        help="link to the simulated device (default byte: UART skipped)")
    parser.add_argument("--board", default="icebreaker",
                        help="board whose clock the throughput is projected at")
    parser.add_argument("--port", metavar="URL",
                        help="run step 3 on a real device instead of the simulated RTL: the "
                             "board's serial port after `trine build` and `trine program` "
                             "(e.g. /dev/ttyUSB1 on the iCEBreaker), or any socket:// device")
    parser.add_argument("--baud", type=int, default=None,
                        help="with --port: the device's baud rate (default: the board's)")
    parser.add_argument("--hardware", action="store_true",
                        help="also run the MAC-array cocotb checks and the UP5K synthesis")
    parser.add_argument("--vectors", type=int, default=300, help="vectors per simulator (H1)")
    args = parser.parse_args(argv)

    from trine.flow.boards import get_board
    from trine.host.client import Client
    from trine.host.data import load_dataset
    from trine.host.evaluate import evaluate
    from trine.host.program import Program
    from trine.host.qat import DEFAULTS, train_float_mlp, train_qat
    from trine.host.results import accuracy
    from trine.host.transport import LinkError
    from trine.sim.serve import serve

    def device_error(exc: Exception) -> int:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2

    board = get_board(args.board)
    baud = args.baud or board.default_baud
    if args.port:
        # Reach the device before training, so that a wrong port fails in a second.
        try:
            with Client(args.port, baud, timeout=2) as client:
                info = client.info()
        except (LinkError, ValueError) as exc:
            return device_error(exc)
        print(f"device at {args.port}: {info.lanes} lanes x {info.rows} rows, "
              f"{info.clock_hz / 1e6:g} MHz")
    x_tr, y_tr, x_te, y_te = load_dataset(args.data)
    settings = DEFAULTS[args.data]
    if args.model == "cnn":
        qat_opts = dict(settings["cnn"])
        shape = f"CNN {qat_opts['arch']} + dense to 10 on {tuple(qat_opts['input_shape'])}"
    else:
        qat_opts = dict(settings["qat"])
        shape = "MLP " + "-".join(str(w) for w in [x_tr.shape[1], *qat_opts["hidden"], 10])
    if args.epochs is not None:
        qat_opts["epochs"] = args.epochs
    t0 = _step(f"1. train the {args.data} {args.model.upper()} ({DESCRIPTIONS[args.data]}; "
               f"{qat_opts['epochs']} epochs)")
    float_acc = None
    if args.model == "mlp":
        float_mlp = train_float_mlp(x_tr, y_tr, x_test=x_te, y_test=y_te, seed=args.seed,
                                    **settings["float"])
        float_acc = float_mlp.metrics["test_acc"]
    result = train_qat(x_tr, y_tr, x_test=x_te, y_test=y_te, seed=args.seed, **qat_opts)
    tern_acc = result.metrics["test_acc"]
    print(f"{len(y_tr)} training / {len(y_te)} test samples, {shape}")
    if float_acc is not None:
        print(f"float MLP:            test accuracy {float_acc:.2%}")
    versus = f"; {100 * (tern_acc - float_acc):+.2f} points vs float" if float_acc else ""
    print(f"ternary (QAT) program: test accuracy {tern_acc:.2%} (bit-exact integer reference"
          f"{versus}) {_done(t0)}")

    t0 = _step("2. compile to a .trine program")
    BUILD.mkdir(parents=True, exist_ok=True)
    path = BUILD / f"{args.data}_{args.model}.trine"
    result.program.save(path)
    program = Program.load(path)
    assert program == result.program
    stats = program.stats()
    sparsity = ", ".join(f"{s:.0%}" for s in stats["sparsity"])
    print(f"wrote {path}: {stats['weights']:,} weights in {stats['packed_bytes']:,} packed bytes "
          f"({stats['file_bytes']:,} bytes on file), zeros per layer {sparsity}, "
          f"shifts {[layer.shift for layer in program.layers if hasattr(layer, 'shift')]}")

    if args.port:
        t0 = _step(f"3. the device at {args.port}, through the host client")
        try:
            ev = evaluate(program, x_te, y_te, backend="device", url=args.port, baud=baud,
                          timeout=5)
        except (LinkError, ValueError) as exc:  # the device went away, or refused the program
            return device_error(exc)
    else:
        link = "byte-level link, the UART skipped" if args.mode == "byte" else "bit-level UART"
        engine = ("native Verilator (a first run builds the model: 1-3 min)"
                  if args.engine == "native" else f"{args.sim} under cocotb")
        t0 = _step(f"3. the accelerator's RTL on {engine} ({link}), through the host client")
        if args.engine == "native":
            from trine.sim.native import serve as serve_native

            server = serve_native(args.mode)
        else:
            server = serve(args.sim, args.mode)
        with server as url:
            ev = evaluate(program, x_te, y_te, backend="device", url=url, timeout=60)
    d = ev.device
    ref = program.run_reference(x_te)
    assert ev.reference_accuracy == accuracy(ref, y_te)
    print(f"device: {d['lanes']} lanes x {d['rows']} rows; {len(y_te)} test samples in "
          f"{d['runs']} runs of up to {d['max_batch']} {_done(t0)}")

    _step("4. results")
    # A real device reports its own clock; the simulated one is projected at the board's.
    clk = d["clock_hz"] if args.port and d.get("clock_hz") else board.default_clock_hz
    wire_bits = 10 * d["infer_wire_bytes"] / ev.samples  # 8N1: 10 bits per byte
    if float_acc is not None:
        print(f"float MLP accuracy           {float_acc:8.2%}")
    print(f"ternary accuracy, reference  {ev.reference_accuracy:8.2%}")
    print(f"ternary accuracy, device     {ev.accuracy:8.2%}")
    print(f"device == reference          {ev.samples - ev.mismatches} of {ev.samples} samples "
          "(every output byte compared)")
    print(f"cycles per inference         {d['latency_cycles']} alone, "
          f"{d['cycles_per_inference']:.1f} in batches of {d['max_batch']}")
    clock_of = "the device's clock" if args.port else board.name
    print(f"{f'at {clk / 1e6:g} MHz ({clock_of})':28s} "
          f"{clk / d['latency_cycles']:,.0f} inferences/s (batch 1), "
          f"{clk / d['cycles_per_inference']:,.0f}/s batched")
    print(f"link-bound                   {d['infer_wire_bytes'] / ev.samples:.0f} bytes on the "
          f"wire per inference (input, output, frames): {d['baud'] / wire_bits:,.0f} "
          f"inferences/s at {d['baud'] / 1e6:g} Mbaud")
    print(f"program streamed             {d['wire_bytes_sent']:,} bytes in {d['frames']} frames "
          f"for {d['weights']:,} weights: {d['bits_per_weight']:.2f} bits per weight (biases, "
          "layer table and framing included)")
    failures = 0 if ev.bit_exact else 1
    if args.hardware:
        failures += _hardware_steps(args.vectors, 2026)
    print("\nresult:", "PASS" if failures == 0 else f"{failures} FAILURE(S)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
