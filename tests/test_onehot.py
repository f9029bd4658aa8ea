"""trine.hw.onehot.OneHotFSM: transitions under Amaranth's simulator, and misuse refused."""

import pytest
from amaranth.hdl import Module, Signal

from trine.hw.onehot import OneHotFSM
from trine.sim.testbench import simulate


def counter_machine():
    """A -> B on `go`, B -> C, C -> A; `reset_to_a` forces A from anywhere."""
    m = Module()
    go, reset_to_a = Signal(), Signal()
    fsm = OneHotFSM(m, ["A", "B", "C"])
    with fsm.state("A"):
        with m.If(go):
            fsm.go("B")
    with fsm.state("B"):
        fsm.go("C")
    with fsm.state("C"):
        fsm.go("A")
    with m.If(reset_to_a):
        fsm.force("A")
    return m, fsm, go, reset_to_a


def test_states_are_one_hot_and_follow_the_transitions():
    m, fsm, go, reset_to_a = counter_machine()
    seen = []

    async def body(ctx):
        for g, r in [(0, 0), (1, 0), (0, 0), (0, 0), (1, 0), (0, 1), (0, 0)]:
            ctx.set(go, g)
            ctx.set(reset_to_a, r)
            seen.append("".join(n for n in "ABC" if ctx.get(fsm.ongoing(n))))
            await ctx.tick()

    simulate(m, body)
    assert seen == ["A", "A", "B", "C", "A", "B", "A"]


def test_misuse_is_refused():
    m = Module()
    with pytest.raises(ValueError, match="states must be distinct names"):
        OneHotFSM(m, ["A", "A"])
    with pytest.raises(ValueError, match="states must be distinct names"):
        OneHotFSM(m, [])
    fsm = OneHotFSM(m, ["A", "B"])
    with pytest.raises(RuntimeError, match="go\\(\\) must be called inside a state"):
        fsm.go("B")
    with pytest.raises(RuntimeError, match="states cannot be nested"):
        with fsm.state("A"):
            with fsm.state("B"):
                pass
