"""trine.hw.reset.PowerOnReset: the reset that holds the device until the PLL has locked."""

import pytest

from trine.hw.reset import PowerOnReset
from trine.sim.testbench import simulate


def _trace(delay, locked_wave):
    """rst after each clock, with ``locked`` set to ``locked_wave[i]`` before clock ``i``."""
    dut = PowerOnReset(delay)
    trace = []

    async def bench(ctx):
        assert ctx.get(dut.rst) == 1  # from configuration on
        for level in locked_wave:
            ctx.set(dut.locked, level)
            await ctx.tick()
            trace.append(ctx.get(dut.rst))

    simulate(dut, bench)
    return trace


@pytest.mark.parametrize("delay", [1, 2, 7])
def test_reset_falls_delay_plus_three_clocks_after_lock(delay):
    trace = _trace(delay, [0] * 5 + [1] * (delay + 10))
    released = trace.index(0)
    assert released == 5 + delay + 2  # the clock after which rst reads 0: delay + 3 clocks
    assert all(trace[:released]) and not any(trace[released:])


def test_losing_lock_resets_again_and_waits_the_whole_delay():
    delay = 4
    trace = _trace(delay, [1] * 12 + [0] + [1] * 12)
    first = trace.index(0)
    assert first == delay + 2
    back = trace.index(1, first)
    assert 12 <= back <= 12 + 3  # lock lost at clock 12: reset within the synchroniser's delay
    again = trace.index(0, back)
    assert again - back >= delay  # and the whole delay is counted once more
    assert not any(trace[again:])


def test_a_glitch_shorter_than_the_synchroniser_still_restarts_the_count():
    trace = _trace(3, [1] * 10 + [0] + [1] * 10)
    assert 1 in trace[10:]


@pytest.mark.parametrize("delay", [0, -1, 1.5, True, None])
def test_delay_must_be_a_positive_number_of_clocks(delay):
    with pytest.raises(ValueError, match="delay"):
        PowerOnReset(delay)
