"""The accelerator on its simulated RTL: cycles against the ideal, and the link's efficiency.

The device's own cycle counter (returned by RUN) is compared with the ideal of one beat per
clock, ``sum over layers of ceil(K / lanes) * ceil(M / rows)`` per sample, for each layer alone
and for the whole network at batch 1 and at the largest batch. The array consumes one weight
word (``lanes x rows`` trits) per clock, which is also the weight memory's read width, so the
batch-1 roofline is ``lanes x rows`` MACs per cycle; reported MACs count real (unpadded) ones.

The link figures come from loading the program through the real client: bits per weight on the
wire, framing overhead, and the goodput a stop-and-wait host reaches against the UART's payload
rate (all bytes each way counted, host turnaround not: on a real USB-serial bridge add its
latency per frame).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench._common import save
from trine.contract.device_image import compile_image
from trine.contract.reference import Layer
from trine.host.client import Client
from trine.host.program import Program
from trine.sim.serve import serve

# 8 x 5 = 40 trits per beat = 8 bytes at 5 trits per byte: one 64-bit word (UP5K SPRAM width)
DEVICE = dict(lanes=8, rows=5, weight_words=4096, bias_depth=1024, max_layers=8,
              max_width=256, max_batch=16)
WIDTHS = [64, 256, 256, 10]  # an MLP whose big layers have K >= 4 x lanes


def _program(widths, rng) -> Program:
    return Program([Layer(rng.integers(-1, 2, (m, k)), rng.integers(-500, 500, m), 4, True)
                    for k, m in zip(widths, widths[1:], strict=False)])


def _ideal(program: Program, lanes: int, rows: int) -> int:
    return sum(-(-layer.fan_in // lanes) * -(-layer.fan_out // rows) for layer in program.layers)


def _macs(program: Program) -> int:
    return sum(layer.fan_in * layer.fan_out for layer in program.layers)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sim", choices=["icarus", "verilator"], default="verilator")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lanes, rows, max_batch = DEVICE["lanes"], DEVICE["rows"], DEVICE["max_batch"]
    net = _program(WIDTHS, rng)
    runs = []
    with serve(args.sim, "byte", once=False, **DEVICE) as url:
        with Client(url, timeout=60) as client:
            info = client.info()
            # each layer alone, then the network at batch 1 and at the largest batch
            for i, layer in enumerate(net.layers):
                single = Program([layer])
                client.load(single)
                x = rng.integers(-128, 128, single.input_width).astype(np.int8)
                y, cycles = client.infer(x)
                assert np.array_equal(y, single.run_reference(x))
                ideal = _ideal(single, lanes, rows)
                runs.append({"what": f"layer {i}: K={layer.fan_in} M={layer.fan_out}",
                             "batch": 1, "cycles": cycles[0], "ideal_cycles": ideal})
            t0 = time.perf_counter()
            load = client.load(net)
            load_seconds = time.perf_counter() - t0
            for batch in (1, max_batch):
                x = rng.integers(-128, 128, (batch, net.input_width)).astype(np.int8)
                y, cycles = client.infer_batch(x)
                assert np.array_equal(y, net.run_reference(x))
                runs.append({"what": f"network {'-'.join(map(str, WIDTHS))}", "batch": batch,
                             "cycles": cycles[0], "ideal_cycles": _ideal(net, lanes, rows) * batch})
    print(f"device: {lanes} lanes x {rows} rows, peak {lanes * rows} MACs/cycle "
          f"(= one {lanes * rows}-trit weight word per cycle)")
    print(f"{'run':34s} {'batch':>5s} {'cycles':>8s} {'ideal':>8s} {'util':>6s} "
          f"{'cyc/inf':>8s} {'MAC/cyc':>8s}")
    for r in runs:
        single = r["what"].startswith("layer")
        macs = (_macs(Program([net.layers[int(r['what'].split()[1][:-1])]])) if single
                else _macs(net)) * r["batch"]
        r["utilisation"] = r["ideal_cycles"] / r["cycles"]
        r["cycles_per_inference"] = r["cycles"] / r["batch"]
        r["macs_per_cycle"] = macs / r["cycles"]
        print(f"{r['what']:34s} {r['batch']:5d} {r['cycles']:8d} {r['ideal_cycles']:8d} "
              f"{r['utilisation']:6.1%} {r['cycles_per_inference']:8.0f} "
              f"{r['macs_per_cycle']:8.1f}")
    framing = 1 - load.payload_bytes / load.wire_bytes_sent
    weight_bytes = len(compile_image(net.layers, lanes, rows).weights)
    weight_bits = 8 * weight_bytes / load.weights  # tile padding included
    goodput = load.payload_bytes / (load.wire_bytes_sent + load.wire_bytes_received)
    link = {"weights": load.weights, "payload_bytes": load.payload_bytes,
            "wire_bytes_sent": load.wire_bytes_sent,
            "wire_bytes_received": load.wire_bytes_received, "frames": load.frames,
            "bits_per_weight_on_wire": load.bits_per_trit,
            "weight_image_bits_per_weight": weight_bits,
            "weight_bits_on_wire_per_weight": weight_bits / (1 - framing),
            "framing_overhead": framing, "goodput_fraction_of_uart": goodput,
            "load_seconds_simulated_device": load_seconds,
            "load_seconds_at_baud": (load.wire_bytes_sent + load.wire_bytes_received) * 10
            / 3_000_000}
    print(f"weights: {weight_bits:.3f} bits per weight in the image (1.6 = 5 trits per byte; "
          f"tile padding included), {weight_bits / (1 - framing):.3f} with framing")
    print(f"load: {load.weights} weights, {load.payload_bytes} payload bytes, "
          f"{load.wire_bytes_sent} bytes sent in {load.frames} frames: "
          f"{load.bits_per_trit:.3f} bits per weight on the wire (biases and table included), "
          f"framing {framing:.2%}, goodput {goodput:.1%} of the UART's byte rate; "
          f"{link['load_seconds_at_baud'] * 1e3:.0f} ms at 3 Mbaud")
    figures = {"simulator": args.sim, "device": DEVICE, "network": WIDTHS,
               "clock_hz": info.clock_hz, "runs": runs, "link": link}
    print(f"saved {save('device', figures)}")
    return figures


if __name__ == "__main__":
    main()
