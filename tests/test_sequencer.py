"""trine.hw.sequencer.LayerSequencer under Amaranth's simulator, against a model of a run: the
table read (dense and convolution entries back to back), the entry handed to the address
generator, every way a run ends (the watchdog too), and its cycle count."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from trine.contract.device_image import LayerEntry
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode
from trine.hw.address_generator import held_entry
from trine.hw.sequencer import LayerSequencer
from trine.sim.testbench import simulate

PARAMS = AcceleratorParams(lanes=3, rows=2, weight_words=50, bias_depth=40, act_words=64,
                           table_words=200, max_batch=3, watchdog_bits=10)
TERNARY = PARAMS.replace(ternary_act=True)


def load_cycles(e):
    """Cycles of the table read: a word per cycle, one more for the read latency."""
    return e.words + 1


def first_setup(e):
    """From the start strobe to the first layer's setup: the start registered, the entry
    read (and checked as it arrives)."""
    return 2 + load_cycles(e)


def next_setup(e):
    """From the cycle every row of a layer is seen taken to the next one's setup (the entry
    is read while the requantiser drains: the drain is shorter here)."""
    return 1 + load_cycles(e)


class Harness(wiring.Component):
    """The sequencer with a layer table holding ``entries`` back to back."""

    def __init__(self, params, entries):
        self.seq = LayerSequencer(params)
        init = [w for e in entries for w in e.to_words()]
        init += [0] * (params.table_words - len(init))
        self.table = Memory(shape=16, depth=params.table_words, init=init[:params.table_words])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.seq, m.submodules.table = self.seq, self.table
        wiring.connect(m, self.seq.table, self.table.read_port())
        return m


def entry(**fields):
    base = dict(weight_base=3, bias_base=5, blocks=3, fan_out=5, cw=2, in_base=0,
                in_sample_words=2, out_base=40, out_sample_words=2, shift=4, relu=True)
    base.update(fields)
    return LayerEntry(**base)


def conv_entry(rng, **fields):
    s16 = lambda: int(rng.integers(-(1 << 15), 1 << 15))  # noqa: E731
    u16 = lambda lo=1: int(rng.integers(lo, 1 << 16))  # noqa: E731
    base = dict(conv=True, pool_levels=int(rng.integers(0, 3)), kw=u16(), kh=u16(),
                row_step=s16(), p_counts=tuple(u16() for _ in range(4)),
                act_steps=tuple(s16() for _ in range(4)),
                out_steps=tuple(s16() for _ in range(4)), in_width=u16(0), in_height=u16(0),
                x0=s16(), y0=s16(), x_steps=tuple(s16() for _ in range(4)),
                y_steps=tuple(s16() for _ in range(4)))
    base.update(fields)
    return entry(**base)


def run(entries, n_layers, batch, *, rng, events=None, cycles=400, never_done=False,
        params=PARAMS):
    """Start a run in cycle 1; the address generator's side is played by the testbench: it
    reports ``done`` a random number of cycles after each setup (and the requantiser keeps
    ``draining`` a little longer), and raises ``illegal`` or ``overrun`` in the cycles that
    ``events`` names. Returns every cycle's outputs."""
    top = Harness(params, entries)
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
            row = {name: ctx.get(getattr(dut, name)) for name in ("busy", "flush")}
            row.update(setup=ctx.get(dut.loops.setup), stop=ctx.get(dut.loops.stop),
                       error=ctx.get(dut.run.error), cycles=ctx.get(dut.run.cycles),
                       done=ctx.get(dut.loops.done), draining=ctx.get(dut.draining),
                       requantizer=(ctx.get(dut.requantizer.shift),
                                    ctx.get(dut.requantizer.relu),
                                    ctx.get(dut.requantizer.ternary_threshold)))
            if row["setup"]:
                row["config"] = _config(ctx, dut)
                if not never_done:
                    done_at = cycle + 1 + int(rng.integers(1, 30))
                    drain_until = done_at + int(rng.integers(0, 6))
            trace.append(row)
            await ctx.tick()

    simulate(top, bench)
    return trace


def _config(ctx, dut):
    cfg = dut.loops.config
    out = {name: ctx.get(cfg.entry[name]) for name, _ in cfg.entry.shape()}
    out["batch"] = ctx.get(cfg.batch)
    return out


def expected_config(e, batch, params=PARAMS):
    return {**held_entry(params, e), "batch": batch}


def ended(trace, start=1):
    """The cycle busy fell, the error and the cycle count after it."""
    end = next(c for c in range(start + 1, len(trace)) if not trace[c]["busy"])
    return end, trace[end]["error"], trace[end]["cycles"]


@pytest.mark.parametrize("params", [PARAMS, TERNARY], ids=["int8", "ternary_act"])
@pytest.mark.parametrize("n_layers, batch", [(1, 1), (3, 2), (4, 3), (2, 1)])
def test_a_run_sets_every_layer_up_in_turn(n_layers, batch, params):
    rng = np.random.default_rng(n_layers * 10 + batch)

    def random_entry(k):
        fields = dict(weight_base=int(rng.integers(0, 40)), bias_base=int(rng.integers(0, 30)),
                      blocks=int(rng.integers(1, 1 << 16)), cw=int(rng.integers(1, 1 << 16)),
                      fan_out=int(rng.integers(0, 1 << 16)), shift=int(rng.integers(0, 32)),
                      relu=bool(rng.integers(0, 2)),
                      ternary_threshold=int(rng.integers(0, 128)) if k != 1 else 127)
        return conv_entry(rng, **fields) if k % 2 else entry(**fields)

    entries = [random_entry(k) for k in range(4)]
    trace = run(entries, n_layers, batch, rng=rng, params=params)
    assert [c for c, r in enumerate(trace) if r["flush"]] == [2]  # the cycle after the start
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    assert len(setups) == n_layers
    assert setups[0] == 1 + first_setup(entries[0])
    for k, s in enumerate(setups):
        expected = expected_config(entries[k], batch, params)
        assert {f: trace[s]["config"][f] for f in expected} == expected
        # the requantiser's shift, ReLU and threshold (none without ternary_act) are latched
        # at the setup, held while it runs
        threshold = entries[k].ternary_threshold if params.ternary_act else 0
        assert trace[s + 1]["requantizer"] == (entries[k].shift, int(entries[k].relu),
                                               threshold)
        # a layer ends at the first cycle of its run with done (the last one: and nothing
        # draining, its outputs all written)
        finish = next(c for c in range(s + 1, len(trace))
                      if trace[c]["done"] and (k + 1 < n_layers or not trace[c]["draining"]))
        if k + 1 < n_layers:
            assert setups[k + 1] == finish + next_setup(entries[k + 1])
    end, error, cycles = ended(trace)
    assert end == finish + 1 and error == 0
    assert cycles == end - 2  # busy from the cycle after the start strobe
    assert all(trace[c]["busy"] for c in range(2, end))
    assert not any(r["stop"] for r in trace[3:])  # nothing to stop: no abort


@pytest.mark.parametrize("n_layers, batch", [(0, 1), (1, 0), (1, PARAMS.max_batch + 1)])
def test_bad_run_arguments_end_the_run_at_once(n_layers, batch):
    trace = run([entry()], n_layers, batch, rng=np.random.default_rng(0), cycles=30)
    end, error, cycles = ended(trace)
    assert (end, error, cycles) == (3, ErrorCode.BAD_ARGUMENT, 1)
    assert not any(r["setup"] for r in trace)


@pytest.mark.parametrize(
    "fields, code",
    [
        (dict(cw=0), ErrorCode.BAD_ARGUMENT),
        (dict(blocks=0), ErrorCode.BAD_ARGUMENT),
        (dict(conv=True, kw=0), ErrorCode.BAD_ARGUMENT),
        (dict(conv=True, kh=0), ErrorCode.BAD_ARGUMENT),
        (dict(conv=True, p_counts=(1, 1, 0, 1)), ErrorCode.BAD_ARGUMENT),
        (dict(weight_base=PARAMS.weight_words), ErrorCode.BAD_ARGUMENT),
        (dict(bias_base=PARAMS.bias_depth), ErrorCode.BAD_ADDRESS),
        (dict(bias_base=PARAMS.bias_depth, cw=0), ErrorCode.BAD_ARGUMENT),  # first wins
        (dict(weight_base=0xFFFF, cw=0xFFFF, blocks=0xFFFF, fan_out=0xFFFF, shift=31,
              bias_base=0xFFFF), ErrorCode.BAD_ARGUMENT),
    ],
)
def test_a_bad_table_entry_ends_the_run_at_its_setup(fields, code):
    good = entry()
    trace = run([good, entry(**fields)], 2, 1, rng=np.random.default_rng(1))
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    assert len(setups) == 2  # the good layer, then the bad one (stopped the cycle after)
    end, error, _ = ended(trace)
    assert (end, error) == (setups[1] + 1, code)
    assert trace[setups[1] + 1]["stop"]


def test_an_entry_past_the_table_ends_the_run():
    rng = np.random.default_rng(4)
    # 5 conv entries and a dense one fill 195 words: the seventh would end past word 200
    entries = [conv_entry(rng, kw=1, kh=1, p_counts=(1, 1, 1, 1)) for _ in range(5)]
    trace = run([*entries, entry()], 7, 1, rng=rng, cycles=700)
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    end, error, _ = ended(trace)
    assert (len(setups), end, error) == (7, setups[-1] + 1, ErrorCode.BAD_ADDRESS)


@pytest.mark.parametrize("table_words, fits", [(47, True), (46, False)])
@pytest.mark.parametrize("order", ["conv last", "dense last"])
def test_an_entry_that_ends_on_the_table_s_last_word_runs(table_words, fits, order):
    # a conv entry and a dense one: 47 words, in a table of 47 (runs) or 46 (past its end)
    rng = np.random.default_rng(5)
    entries = [conv_entry(rng, kw=1, kh=1, p_counts=(1, 1, 1, 1)), entry()]
    if order == "dense last":
        entries.reverse()
    params = PARAMS.replace(table_words=table_words)
    trace = run(entries, 2, 1, rng=rng, cycles=400, params=params)
    setups = [c for c, r in enumerate(trace) if r["setup"]]
    end, error, _ = ended(trace)
    if fits:
        assert (len(setups), error) == (2, 0)
    else:
        assert (len(setups), end, error) == (2, setups[-1] + 1, ErrorCode.BAD_ADDRESS)


def test_the_watchdog_ends_a_run_that_never_finishes():
    trace = run([entry()], 1, 1, rng=np.random.default_rng(5), cycles=1100, never_done=True)
    end, error, cycles = ended(trace)
    assert error == ErrorCode.TIMEOUT
    assert cycles == PARAMS.max_run_cycles + 2  # the counter's bit, registered, then the abort
    assert trace[end]["stop"]


@pytest.mark.parametrize("event, code, late", [("illegal", ErrorCode.ILLEGAL_WEIGHT, 0),
                                               ("overrun", ErrorCode.BAD_ADDRESS, 1)])
def test_an_abort_while_running_stops_the_generator(event, code, late):
    at = 1 + first_setup(entry()) + 4  # in the first layer's run
    trace = run([entry(), entry()], 2, 1, rng=np.random.default_rng(2), events={at: event})
    end, error, cycles = ended(trace)
    # an illegal weight is registered by the feed already; an overrun is registered here
    assert (end, error, cycles) == (at + late + 1, code, at + late - 1)
    assert [c for c in range(3, len(trace)) if trace[c]["stop"]] == [at + late + 1]
    assert sum(r["setup"] for r in trace) == 1


def test_an_address_past_the_end_before_the_layer_runs_is_no_error():
    """Until the generator is set up its addresses may still be past the end (after a run
    aborted there): only an overrun while the layer runs counts."""
    events = {c: "overrun" for c in range(2, 2 + first_setup(entry()))}  # start .. setup
    trace = run([entry()], 1, 1, rng=np.random.default_rng(3), events=events)
    _, error, _ = ended(trace)
    assert error == 0
