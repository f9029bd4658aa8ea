"""The accelerator on its simulated RTL: cycles against the ideal, and the link's efficiency.

The device's own cycle counter (returned by RUN) is compared with the ideal of one beat per
clock: per sample, ``blocks x positions x window words`` for each layer-table entry of the
program's device image (``ceil(K / lanes) * ceil(M / rows)`` for a dense layer; for a
convolution, every output position before pooling times its ``kh * kw * ceil(C_in / lanes)``
window words, zero padding included). The array consumes one weight word (``lanes x rows``
trits) per clock, which is also the weight memory's read width, so the batch-1 roofline is
``lanes x rows`` MACs per cycle; reported MACs count real (unpadded) ones.

Two networks:

* the MLP 64-256-256-10 on the simulated device's 8 x 5 array, each layer alone, then the
  network at batch 1 and at the largest batch;
* the MNIST-1D CNN (QAT's default, ``c64k5p2,m2,c64k3p1,m2,c64k3p1,m2`` and a dense layer to
  10 classes) on the iCEBreaker's default device (:data:`trine.contract.params.UP5K`, the
  SPRAM simulated as the generic memory it is equivalent to), each weighted layer alone (a
  convolution with its fused pooling) and the network, with inferences per second at 48 MHz.

The link figures come from loading the MLP through the real client: bits per weight on the
wire, framing overhead, and the goodput a stop-and-wait host reaches against the UART's payload
rate (all bytes each way counted, host turnaround not: on a real USB-serial bridge add its
latency per frame).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench._common import save
from trine.contract.network import layer_kind, network_macs, network_shapes
from trine.contract.params import SIMULATED, UP5K
from trine.contract.reference import Conv, Flatten, Layer, MaxPool
from trine.host.arch import parse_arch, spec_layers
from trine.host.client import Client
from trine.host.program import Program, ProgramTooLargeError
from trine.sim.serve import serve

# 8 x 5 = 40 trits per beat = 8 bytes at 5 trits per byte: one 64-bit word (UP5K SPRAM width)
MLP_DEVICE = SIMULATED.replace(weight_words=4096)
WIDTHS = [64, 256, 256, 10]  # an MLP whose big layers have K >= 4 x lanes
CNN_ARCH = "c64k5p2,m2,c64k3p1,m2,c64k3p1,m2"
CNN_INPUT = (1, 40)
CNN_DEVICE = UP5K
BOARD_CLOCK_HZ = 48_000_000


def _mlp(widths, rng) -> Program:
    return Program([Layer(rng.integers(-1, 2, (m, k)), rng.integers(-500, 500, m), 4, True)
                    for k, m in zip(widths, widths[1:], strict=False)])


def _cnn(rng) -> list:
    """The MNIST-1D CNN's shapes with random trits, biases and shifts."""
    layers = []
    for layer in spec_layers(parse_arch(CNN_ARCH, CNN_INPUT, 10), CNN_INPUT):
        if isinstance(layer, Conv | Layer):
            w = rng.integers(-1, 2, layer.weights.shape)
            b = rng.integers(-300, 300, len(layer.bias))
            layer = (Conv(w, b, layer.stride, layer.padding, 4, layer.relu)
                     if isinstance(layer, Conv) else Layer(w, b, 5, layer.relu))
        layers.append(layer)
    return layers


def _ideal(image) -> int:
    """Beats per sample: one per clock is the ideal."""
    return sum(e.blocks * math.prod(e.p_counts) * e.window_words for e in image.entries)


def _split(layers):
    """Each weighted layer with what it runs with: a convolution and the pooling fused after
    it, a flatten and the dense layer after it."""
    groups, i = [], 0
    while i < len(layers):
        group = [layers[i]]
        if isinstance(layers[i], Flatten) or (
                isinstance(layers[i], Conv) and i + 1 < len(layers)
                and isinstance(layers[i + 1], MaxPool)):
            group.append(layers[i + 1])
        groups.append((i, group))
        i += len(group)
    return groups


def _fits(program, client) -> bool:
    try:
        program.check_fits(client.limits())
    except ProgramTooLargeError:
        return False
    return True


def _measure(client, program, rng, batch, what):
    client.load(program)
    image = client.image
    x = rng.integers(-128, 128, (batch, *program.input_shape)).astype(np.int8)
    y, cycles = client.infer_batch(x)
    assert np.array_equal(y, program.run_reference(x)), what
    assert len(cycles) == 1, f"{what}: the batch of {batch} took {len(cycles)} runs"
    macs = network_macs(program.layers, program.input_shape) * batch
    ideal = _ideal(image) * batch
    return {"what": what, "batch": batch, "cycles": cycles[0], "ideal_cycles": ideal,
            "utilisation": ideal / cycles[0], "cycles_per_inference": cycles[0] / batch,
            "macs_per_cycle": macs / cycles[0]}


def _print(runs, title):
    print(title)
    print(f"{'run':44s} {'batch':>5s} {'cycles':>8s} {'ideal':>8s} {'util':>6s} "
          f"{'cyc/inf':>8s} {'MAC/cyc':>8s}")
    for r in runs:
        print(f"{r['what']:44s} {r['batch']:5d} {r['cycles']:8d} {r['ideal_cycles']:8d} "
              f"{r['utilisation']:6.1%} {r['cycles_per_inference']:8.0f} "
              f"{r['macs_per_cycle']:8.1f}")


def mlp_runs(sim: str, rng) -> tuple[list, dict, dict]:
    net = _mlp(WIDTHS, rng)
    runs = []
    with serve(sim, "byte", once=False, params=MLP_DEVICE) as url:
        with Client(url, timeout=60) as client:
            info = client.info()
            for i, layer in enumerate(net.layers):
                runs.append(_measure(client, Program([layer]), rng, 1,
                                     f"layer {i}: K={layer.fan_in} M={layer.fan_out}"))
            t0 = time.perf_counter()
            load = client.load(net)
            load_seconds = time.perf_counter() - t0
            weight_bytes = len(client.image.weights)
            for batch in (1, MLP_DEVICE.max_batch):
                runs.append(_measure(client, net, rng, batch,
                                     f"network {'-'.join(map(str, WIDTHS))}"))
    framing = 1 - load.payload_bytes / load.wire_bytes_sent
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
    return runs, link, {"clock_hz": info.clock_hz}


def cnn_runs(sim: str, rng) -> list:
    layers = _cnn(rng)
    shapes = network_shapes(layers, CNN_INPUT)
    runs = []
    with serve(sim, "byte", once=False, params=CNN_DEVICE) as url:
        with Client(url, timeout=60) as client:
            for i, group in _split(layers):
                kinds = "+".join(layer_kind(x) for x in group)
                shape = "x".join(map(str, shapes[i]))
                weighted = group[-1] if isinstance(group[0], Flatten) else group[0]
                detail = ""
                if isinstance(weighted, Conv):
                    c_in, k = weighted.weights.shape[1], math.prod(weighted.kernel)
                    detail = f", C_in x k = {c_in * k}"
                r = _measure(client, Program(group, input_shape=shapes[i]), rng, 1,
                             f"layer {i}: {kinds} on {shape}{detail}")
                alone = Program(group[:1], input_shape=shapes[i])
                if isinstance(group[-1], MaxPool) and _fits(alone, client):
                    # what the fused pooling costs: the same convolution without it (where
                    # its larger output fits the pool)
                    alone = _measure(client, alone, rng, 1, f"layer {i} without its pooling")
                    r["cycles_without_pooling"] = alone["cycles"]
                    r["pooling_cost"] = r["cycles"] / alone["cycles"] - 1
                runs.append(r)
            r = _measure(client, Program(layers, input_shape=CNN_INPUT), rng, 1,
                         f"network {CNN_ARCH},d10")
            runs.append(r)
    for r in runs:
        r["inferences_per_second_at_48_mhz"] = BOARD_CLOCK_HZ / r["cycles_per_inference"]
    return runs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sim", choices=["icarus", "verilator"], default="verilator")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    runs, link, extra = mlp_runs(args.sim, rng)
    cnn = cnn_runs(args.sim, rng)
    lanes, rows = MLP_DEVICE.lanes, MLP_DEVICE.rows
    _print(runs, f"MLP on {lanes} lanes x {rows} rows, peak {lanes * rows} MACs/cycle "
           f"(= one {lanes * rows}-trit weight word per cycle)")
    _print(cnn, f"MNIST-1D CNN on the iCEBreaker's default device ({CNN_DEVICE.lanes} x "
           f"{CNN_DEVICE.rows}, a pool of {CNN_DEVICE.act_words} words)")
    net = cnn[-1]
    print(f"CNN: {net['cycles_per_inference']:.0f} cycles per inference, "
          f"{net['inferences_per_second_at_48_mhz']:.0f} inferences/s at 48 MHz")
    for r in cnn:
        if "pooling_cost" in r:
            print(f"{r['what']}: fused pooling costs {r['pooling_cost']:+.2%} "
                  f"({r['cycles']} cycles, {r['cycles_without_pooling']} without it)")
    print(f"load: {link['weights']} weights, {link['payload_bytes']} payload bytes, "
          f"{link['wire_bytes_sent']} bytes sent in {link['frames']} frames: "
          f"{link['bits_per_weight_on_wire']:.3f} bits per weight on the wire (biases and "
          f"table included), framing {link['framing_overhead']:.2%}, goodput "
          f"{link['goodput_fraction_of_uart']:.1%} of the UART's byte rate; "
          f"{link['load_seconds_at_baud'] * 1e3:.0f} ms at 3 Mbaud")
    device = {k: v for k, v in MLP_DEVICE.size().items()}
    figures = {"simulator": args.sim, "device": device, "network": WIDTHS, **extra,
               "runs": runs, "link": link,
               "cnn": {"arch": f"{CNN_ARCH},d10", "input_shape": list(CNN_INPUT),
                       "device": CNN_DEVICE.size(), "clock_hz": BOARD_CLOCK_HZ, "runs": cnn}}
    print(f"saved {save('device', figures)}")
    return figures


if __name__ == "__main__":
    main()
