"""trine.hw.sequencer.LayerSequencer under Amaranth's simulator, against a model of a run: the
table read, the loop bounds handed to the address generator, the buffer swaps, every way a run
ends, and its cycle count."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from trine.contract.device_image import LayerEntry
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode
from trine.hw.memories import TABLE_HALFWORDS, TABLE_SLOTS
from trine.hw.sequencer import LayerSequencer
from trine.sim.testbench import simulate

PARAMS = AcceleratorParams(lanes=3, rows=2, weight_words=50, bias_depth=40, max_layers=4,
                           max_width=12, max_batch=3)
#: Cycles from the start strobe to the first layer's setup, and from the cycle a layer is seen
#: finished to the next one's setup: the table entry is read a halfword per cycle (one more for
#: the read latency), checked, and the verdict registered.
LOAD = TABLE_HALFWORDS + 1
FIRST_SETUP = 2 + LOAD + 2
NEXT_SETUP = 1 + LOAD + 2


class Harness(wiring.Component):
    """The sequencer with a layer table holding ``entries``."""

    def __init__(self, params, entries):
        self.seq = LayerSequencer(params)
        init = [0] * (params.max_layers * TABLE_SLOTS)
        for i, entry in enumerate(entries):
            data = entry.to_bytes() + b"\0"
            for h in range(TABLE_HALFWORDS):
                init[i * TABLE_SLOTS + h] = int.from_bytes(data[2 * h : 2 * h + 2], "little")
        self.table = Memory(shape=16, depth=len(init), init=init)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.seq, m.submodules.table = self.seq, self.table
        wiring.connect(m, self.seq.table, self.table.read_port())
        return m


def entry(p=PARAMS, **fields):
    base = dict(weight_base=3, bias_base=5, chunks=2, blocks=3, fan_out=5, shift=4, relu=True)
    base.update(fields)
    return LayerEntry(**base)


def run(entries, n_layers, batch, *, rng, events=None, cycles=300):
    """Start a run in cycle 1; the address generator's side is played by the testbench: it
    reports ``done`` a random number of cycles after each setup (and the requantiser keeps
    ``draining`` a little longer), and raises ``illegal`` or ``overrun`` in the cycles that
    ``events`` names. Returns every cycle's outputs."""
    top = Harness(PARAMS, entries)
    dut = top.seq
    events = events or {}
    trace = []

    async def bench(ctx):
        done_at = drain_until = None
        for cycle in range(cycles):
            ctx.set(dut.run.start, cycle == 1)
            ctx.set(dut.run.n_layers, n_layers)
            ctx.set(dut.run.batch, batch)
            ctx.set(dut.loops.done, done_at is not None and cycle >= done_at)
            ctx.set(dut.draining, drain_until is not None and cycle < drain_until)
            ctx.set(dut.illegal, events.get(cycle) == "illegal")
            ctx.set(dut.loops.overrun, events.get(cycle) == "overrun")
            row = {name: ctx.get(getattr(dut, name)) for name in ("busy", "src", "flush")}
            row.update(setup=ctx.get(dut.loops.setup), stop=ctx.get(dut.loops.stop),
                       error=ctx.get(dut.run.error), cycles=ctx.get(dut.run.cycles),
                       out_buffer=ctx.get(dut.run.out_buffer), done=ctx.get(dut.loops.done),
                       draining=ctx.get(dut.draining))
            if row["setup"]:
                row["config"] = _config(ctx, dut)
                done_at = cycle + 1 + int(rng.integers(1, 30))
                drain_until = done_at + int(rng.integers(0, 6))
            trace.append(row)
            await ctx.tick()

    simulate(top, bench)
    return trace


def _config(ctx, dut):
    cfg = dut.loops.config
    fields = ("weight_base", "bias_base", "chunks_last", "chunks_one", "blocks_last",
              "blocks_one", "batch_last", "batch_one", "fan_out")
    out = {f: ctx.get(getattr(cfg, f)) for f in fields}
    out["shift"] = ctx.get(dut.requantizer.shift)
    out["relu"] = ctx.get(dut.requantizer.relu)
    return out


def expected_config(e, batch):
    return {"weight_base": e.weight_base, "bias_base": e.bias_base,
            "chunks_last": e.chunks - 1, "chunks_one": int(e.chunks == 1),
            "blocks_last": e.blocks - 1, "blocks_one": int(e.blocks == 1),
            "batch_last": batch - 1, "batch_one": int(batch == 1), "fan_out": e.fan_out,
            "shift": e.shift, "relu": int(e.relu)}


def ended(trace, start=1):
    """The cycle busy fell, the error and the cycle count after it."""
    end = next(c for c in range(start + 1, len(trace)) if not trace[c]["busy"])
    return end, trace[end]["error"], trace[end]["cycles"]


@pytest.mark.parametrize("n_layers, batch", [(1, 1), (3, 2), (4, 3), (2, 1)])
def test_a_run_sets_every_layer_up_in_turn(n_layers, batch):
    rng = np.random.default_rng(n_layers * 10 + batch)
    entries = [entry(weight_base=int(rng.integers(0, 40)), bias_base=int(rng.integers(0, 30)),
                     chunks=int(rng.integers(1, PARAMS.stride + 1)),
                     blocks=int(rng.integers(1, PARAMS.max_blocks + 1)),
                     fan_out=int(rng.integers(1, PARAMS.max_width + 1)),
                     shift=int(rng.integers(0, 32)), relu=bool(rng.integers(0, 2)))
               for _ in range(PARAMS.max_layers)]
    trace = run(entries, n_layers, batch, rng=rng)
    assert [c for c, r in enumerate(trace) if r["flush"]] == [2]  # the cycle after the start
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    assert len(setups) == n_layers
    assert setups[0] == 1 + FIRST_SETUP
    for k, s in enumerate(setups):
        assert trace[s]["config"] == expected_config(entries[k], batch)
        # the layer ends at the first cycle of its run with done and nothing draining
        finish = next(c for c in range(s + 1, len(trace))
                      if trace[c]["done"] and not trace[c]["draining"])
        assert all(trace[c]["src"] == k % 2 for c in range(s, finish + 1))
        if k + 1 < n_layers:
            assert setups[k + 1] == finish + NEXT_SETUP
    end, error, cycles = ended(trace)
    assert end == finish + 1 and error == 0
    assert cycles == end - 2  # busy from the cycle after the start strobe
    assert all(trace[c]["busy"] for c in range(2, end))
    assert trace[end]["out_buffer"] == n_layers % 2
    assert not any(r["stop"] for r in trace[3:])  # nothing to stop: no abort


@pytest.mark.parametrize("n_layers, batch", [(0, 1), (PARAMS.max_layers + 1, 1), (1, 0),
                                             (1, PARAMS.max_batch + 1)])
def test_bad_run_arguments_end_the_run_at_once(n_layers, batch):
    trace = run([entry()], n_layers, batch, rng=np.random.default_rng(0), cycles=30)
    end, error, cycles = ended(trace)
    assert (end, error, cycles) == (3, ErrorCode.BAD_ARGUMENT, 1)
    assert not any(r["setup"] for r in trace)


@pytest.mark.parametrize(
    "fields, code",
    [
        (dict(chunks=0), ErrorCode.BAD_ARGUMENT),
        (dict(chunks=PARAMS.stride + 1), ErrorCode.BAD_ARGUMENT),
        (dict(blocks=0), ErrorCode.BAD_ARGUMENT),
        (dict(blocks=PARAMS.max_blocks + 1), ErrorCode.BAD_ARGUMENT),
        (dict(fan_out=0), ErrorCode.BAD_ARGUMENT),
        (dict(fan_out=PARAMS.max_width + 1), ErrorCode.BAD_ARGUMENT),
        (dict(shift=32), ErrorCode.BAD_ARGUMENT),
        (dict(weight_base=PARAMS.weight_words), ErrorCode.BAD_ARGUMENT),
        (dict(bias_base=PARAMS.bias_depth), ErrorCode.BAD_ADDRESS),
        (dict(bias_base=PARAMS.bias_depth, chunks=0), ErrorCode.BAD_ARGUMENT),  # first wins
        (dict(weight_base=0xFFFF_FFFF, chunks=0xFFFF, blocks=0xFFFF, fan_out=0xFFFF,
              shift=0xFF, bias_base=0xFFFF), ErrorCode.BAD_ARGUMENT),
    ],
)
def test_a_bad_table_entry_ends_the_run_at_its_setup(fields, code):
    good = entry()
    trace = run([good, entry(**fields)], 2, 1, rng=np.random.default_rng(1))
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    assert len(setups) == 2  # the good layer, then the bad one (whose setup is stopped)
    end, error, _ = ended(trace)
    assert (end, error) == (setups[1] + 1, code)
    assert trace[setups[1]]["stop"]


@pytest.mark.parametrize("event, code, late", [("illegal", ErrorCode.ILLEGAL_WEIGHT, 0),
                                               ("overrun", ErrorCode.BAD_ADDRESS, 1)])
def test_an_abort_while_running_stops_the_generator(event, code, late):
    at = 1 + FIRST_SETUP + 4  # in the first layer's run
    trace = run([entry(), entry()], 2, 1, rng=np.random.default_rng(2), events={at: event})
    end, error, cycles = ended(trace)
    # an illegal weight is registered by the feed already; an overrun is registered here
    assert (end, error, cycles) == (at + late + 1, code, at + late - 1)
    assert [c for c in range(3, len(trace)) if trace[c]["stop"]] == [at + late]
    assert sum(r["setup"] for r in trace) == 1


def test_an_address_past_the_end_before_the_layer_runs_is_no_error():
    """Until the generator is set up its addresses may still be past the end (after a run
    aborted there): only an overrun while the layer runs counts."""
    events = {c: "overrun" for c in range(2, 2 + FIRST_SETUP)}  # start .. setup
    trace = run([entry()], 1, 1, rng=np.random.default_rng(3), events=events)
    _, error, _ = ended(trace)
    assert error == 0
