"""cocotb test of the generated ``PopcountArray`` Verilog against :mod:`trine.contract.reference`.

Started by :func:`trine.sim.popcount_bench.run_popcount`, which passes a
:class:`trine.sim.popcount_bench.PopcountBenchConfig` through the environment and, in
``TRINE_POPCOUNT_SUMMARY``, a path for a JSON summary of the run.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, SimTimeoutError, with_timeout

from trine.contract.spec import TritCode
from trine.sim.bfm import StreamMonitor, StreamSink, StreamSource
from trine.sim.popcount_bench import PopcountBenchConfig, PopcountCodec, expected, make_vectors

CLOCK_PERIOD_NS = 10


@cocotb.test()
async def popcount_array_matches_reference(dut):
    """Corner cases and random vectors, random idle gaps and backpressure, against the model."""
    cfg = PopcountBenchConfig.from_env(os.environ)
    stim_rng, drv_rng, mon_rng = (np.random.default_rng([cfg.seed, i]) for i in range(3))
    codec = PopcountCodec(cfg.lanes, cfg.rows, cfg.acc_width)
    assert len(dut.i_stream__payload) == codec.input_width, "input payload width"
    assert len(dut.o_stream__payload) == codec.output_width, "output payload width"

    vectors = make_vectors(cfg, stim_rng)
    wanted = expected(cfg, vectors)
    beats = []
    for x, w in vectors:  # a third of the tails padded with the illegal code
        pad = TritCode.ILLEGAL if stim_rng.random() < 1 / 3 else TritCode.ZERO
        beats += codec.beats(x, w, pad)
    got: list[np.ndarray] = []
    finished = Event()

    def on_output(payload: int) -> None:
        got.append(codec.rows_of(payload))
        if len(got) == len(vectors):
            finished.set()

    source = StreamSource(dut.clk, dut.i_stream__valid, dut.i_stream__ready,
                          dut.i_stream__payload, drv_rng, cfg.idle)
    sink = StreamSink(dut.clk, dut.o_stream__valid, dut.o_stream__ready, dut.o_stream__payload,
                      mon_rng, on_output, cfg.backpressure)
    watch = StreamMonitor(dut.clk, dut.i_stream__valid, dut.i_stream__ready,
                          dut.i_stream__payload)
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    sink.start()
    watch.start()
    source.send(beats)
    budget = 1000 + 4 * (len(beats) / (1 - cfg.idle) + len(vectors) / (1 - cfg.backpressure))
    timed_out = False
    try:
        await with_timeout(finished.wait(), int(budget) * CLOCK_PERIOD_NS, "ns")
    except SimTimeoutError:
        timed_out = True
    if not timed_out:  # anything after the last expected vector is an error too
        await ClockCycles(dut.clk, 8 + 2 * (cfg.lanes.bit_length() + 1))
    mismatches = [i for i, (g, e) in enumerate(zip(got, wanted, strict=False))
                  if not np.array_equal(g, e)]
    summary = {
        "config": json.loads(json.dumps(cfg.__dict__)),
        "vectors": len(vectors), "vectors_checked": len(got), "beats": len(beats),
        "beats_sent": source.sent, "beats_seen": watch.beats,
        "idle_cycles": source.idle_cycles, "output_stall_cycles": sink.stall_cycles,
        "mismatches": len(mismatches),
        "passed": not timed_out and not mismatches and len(got) == len(vectors),
    }
    if path := os.environ.get("TRINE_POPCOUNT_SUMMARY"):
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
    assert not timed_out, f"timed out: {len(got)} of {len(vectors)} vectors came out"
    if mismatches:
        i = mismatches[0]
        raise AssertionError(f"{len(mismatches)} of {len(vectors)} vectors mismatch; first: "
                             f"vector {i}: got {got[i].tolist()}, expected {wanted[i].tolist()}")
    assert len(got) == len(vectors), f"{len(got) - len(vectors)} unexpected outputs"
