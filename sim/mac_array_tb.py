"""cocotb test of the generated ``MACArray`` Verilog against :mod:`trine.contract.reference`.

Started by :mod:`trine.sim.runner`, which passes a :class:`trine.sim.mac_bench.MACBenchConfig`
through
environment variables and, in ``TRINE_MAC_SUMMARY``, a path for a JSON summary of the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import (
    ClockCycles,
    Event,
    FallingEdge,
    ReadOnly,
    SimTimeoutError,
    with_timeout,
)
from cocotb.utils import get_sim_time

from trine.sim.bfm import StreamMonitor, StreamSink, StreamSource
from trine.sim.mac_bench import (
    MACBenchConfig,
    MACModel,
    MACPayloadCodec,
    Scoreboard,
    Vector,
    acc_width_of,
    make_model,
    make_stimulus,
)

CLOCK_PERIOD_NS = 10


async def reset(dut, cycles: int = 3) -> None:
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def expect_all(vectors, model, scoreboard, codec, rng) -> tuple[list[int], Event, Callable]:
    """Queue every vector's expected rows on the scoreboard and return its input beats, an
    event set when every expected output has arrived, and the sink's callback for that."""
    beats: list[int] = []
    for i, v in enumerate(vectors):
        scoreboard.expect(v.label, model.expected(i, v))
        beats += codec.beats(v, rng)
    finished = Event()

    def on_output(payload: int) -> None:
        scoreboard.receive(codec.rows_of(payload))
        if scoreboard.pending == 0:
            finished.set()

    return beats, finished, on_output


def stream_bfms(dut, drv_rng, mon_rng, on_output, idle: float, backpressure: float):
    """The input source, the output sink, and a monitor that watches the input stream."""
    source = StreamSource(dut.clk, dut.i_stream__valid, dut.i_stream__ready,
                          dut.i_stream__payload, drv_rng, idle)
    sink = StreamSink(dut.clk, dut.o_stream__valid, dut.o_stream__ready, dut.o_stream__payload,
                      mon_rng, on_output, backpressure)
    monitor = StreamMonitor(dut.clk, dut.i_stream__valid, dut.i_stream__ready,
                            dut.i_stream__payload)
    return source, sink, monitor


@cocotb.test()
async def mac_array_matches_reference(dut):
    """Corner cases and random vectors, random idle gaps and backpressure, against the model."""
    cfg = MACBenchConfig.from_env(os.environ)
    # Separate streams, so that the handshake pattern does not change the stimulus.
    stim_rng, drv_rng, mon_rng = (np.random.default_rng([cfg.seed, i]) for i in range(3))

    codec = MACPayloadCodec(cfg.lanes, cfg.rows, cfg.act_width, acc_width_of(cfg))
    assert len(dut.i_stream__payload) == codec.input_width, "input payload width"
    assert len(dut.o_stream__payload) == codec.output_width, "output payload width"

    vectors = make_stimulus(cfg, stim_rng)
    model, scoreboard = make_model(cfg, len(vectors)), Scoreboard()
    beats, finished, on_output = expect_all(vectors, model, scoreboard, codec, stim_rng)
    driver, sink, watch = stream_bfms(dut, drv_rng, mon_rng, on_output, cfg.idle,
                                      cfg.backpressure)
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start()  # C-level: no Python per cycle
    await reset(dut)

    t0_sim, t0_wall = get_sim_time("ns"), time.perf_counter()
    sink.start()
    watch.start()
    driver.send(beats)
    # Generous: every beat and every output may wait many cycles at these probabilities.
    budget = 1000 + 4 * (len(beats) / (1 - cfg.idle) + len(vectors) / (1 - cfg.backpressure))
    timed_out = False
    try:
        await with_timeout(finished.wait(), int(budget) * CLOCK_PERIOD_NS, "ns")
    except SimTimeoutError:
        timed_out = True
    cycles = round((get_sim_time("ns") - t0_sim) / CLOCK_PERIOD_NS)
    wall = time.perf_counter() - t0_wall
    if not timed_out:
        # Anything the array emits after the last expected vector is an error too.
        await ClockCycles(dut.clk, 8 + 2 * (cfg.lanes.bit_length() + 1))

    summary = {
        "config": json.loads(json.dumps(cfg.__dict__)),
        "vectors": len(vectors),
        "vectors_checked": scoreboard.received,
        "beats": len(beats),
        "beats_sent": driver.sent,
        "cycles": cycles,
        "idle_cycles": driver.idle_cycles,
        "input_wait_cycles": driver.wait_cycles,
        "output_stall_cycles": sink.stall_cycles,
        "beats_seen": watch.beats,
        "sim_wall_s": round(wall, 3),
        "cycles_per_s": round(cycles / wall) if wall > 0 else None,
        "passed": not (timed_out or scoreboard.mismatches or scoreboard.unexpected),
    }
    if path := os.environ.get("TRINE_MAC_SUMMARY"):
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
    dut._log.info("summary: %s", summary)

    if timed_out:
        first = f"; first mismatch: {scoreboard.mismatches[0]}" if scoreboard.mismatches else ""
        raise AssertionError(
            f"timed out after {cycles} cycles: {scoreboard.received} of {len(vectors)} vectors "
            f"came out, {driver.sent} of {len(beats)} beats were taken{first}"
        )
    scoreboard.check()


@cocotb.test()
async def mac_array_latency(dut):
    """Latency of one single-beat vector, then full throughput when the output never stalls."""
    cfg = MACBenchConfig.from_env(os.environ)
    rng = np.random.default_rng([cfg.seed, 3])
    codec = MACPayloadCodec(cfg.lanes, cfg.rows, cfg.act_width, acc_width_of(cfg))
    model, scoreboard = MACModel(cfg.correction), Scoreboard()
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 1
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start()  # C-level: no Python per cycle
    await reset(dut)

    # Offered at this falling edge, taken at the next rising edge (nothing is pending, so
    # ready is high); latency counts rising edges from that one to the one that can take the
    # result.
    probe = make_stimulus(dataclasses.replace(cfg, vectors=1), rng)[0]
    probe = Vector("latency probe", probe.x[: cfg.lanes], probe.codes[:, : cfg.lanes])
    (payload,) = codec.beats(probe, rng)
    dut.i_stream__payload.value = payload
    dut.i_stream__valid.value = 1
    await ReadOnly()
    assert dut.i_stream__ready.value, "an idle array must be ready"
    await FallingEdge(dut.clk)
    dut.i_stream__valid.value = 0
    latency = 1
    while True:
        await ReadOnly()
        if dut.o_stream__valid.value:
            break
        assert latency < 64, "no output within 64 cycles"
        await FallingEdge(dut.clk)
        latency += 1
    scoreboard.expect(probe.label, model.expected(0, probe))
    scoreboard.receive(codec.rows_of(dut.o_stream__payload.value.to_unsigned()))
    await FallingEdge(dut.clk)  # the result is taken at the rising edge before this one

    # Back-to-back traffic with ready always high: the array must never refuse a beat.
    vectors = make_stimulus(dataclasses.replace(cfg, vectors=50), rng)
    beats, finished, on_output = expect_all(vectors, model, scoreboard, codec, rng)
    driver, sink, _ = stream_bfms(dut, rng, rng, on_output, idle=0.0, backpressure=0.0)
    sink.start()
    driver.send(beats)
    await with_timeout(finished.wait(), (len(beats) + 1000) * CLOCK_PERIOD_NS, "ns")

    summary = {
        "latency": latency,
        "beats": len(beats),
        "input_wait_cycles": driver.wait_cycles,
        "vectors_checked": scoreboard.received,
    }
    if path := os.environ.get("TRINE_MAC_SUMMARY"):
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
    dut._log.info("summary: %s", summary)
    scoreboard.check()
    assert driver.wait_cycles == 0, f"ready was low for {driver.wait_cycles} cycles"
