"""trine.hw.uart under Amaranth's simulator: loopback, bit timing, baud mismatch, line errors."""

import random

import pytest
from amaranth.hdl import Elaboratable, Module

from trine.contract.protocol import BITS_PER_BYTE, baud_divisor
from trine.hw.uart import UARTRx, UARTTx
from trine.sim.testbench import CLOCK_PERIOD, StreamSink, StreamSource, simulate

CLK = CLOCK_PERIOD  # seconds per clock cycle of simulate()


def byte_segments(byte: int, bit_cycles: float, stop: int = 1) -> list[tuple[int, float]]:
    """(level, duration in clock cycles) for one 8N1 character."""
    bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    return [(bit, bit_cycles) for bit in bits]


async def play(ctx, pin, segments):
    """Drive ``pin`` through ``segments`` in continuous time (bit times need not be whole
    clock cycles, so a baud-rate mismatch is modelled exactly)."""
    await ctx.delay(0.37 * CLK)  # keep pin edges away from clock edges
    for level, cycles in segments:
        ctx.set(pin, level)
        await ctx.delay(cycles * CLK)


async def read_serial_byte(ctx, pin, divisor: int, *, back_to_back=False) -> int:
    """Wait for a start bit on ``pin`` (or insist that it is already there) and decode one
    character, insisting that every bit lasts exactly ``divisor`` cycles and the stop bit is
    high."""
    assert not (back_to_back and ctx.get(pin)), "idle time between back-to-back characters"
    while ctx.get(pin):
        await ctx.tick()
    cells = []
    for _ in range(BITS_PER_BYTE):
        first = ctx.get(pin)
        for _ in range(divisor):
            assert ctx.get(pin) == first, "a bit changed inside its cell"
            await ctx.tick()
        cells.append(first)
    assert cells[0] == 0 and cells[-1] == 1, f"bad start/stop bits {cells}"
    return sum(bit << i for i, bit in enumerate(cells[1:9]))


def run_rx(dut: UARTRx, segments, rng, ready_prob=0.6, ready_after=0):
    """Play ``segments`` into ``dut.rx``; collect bytes with random backpressure (never ready
    before cycle ``ready_after``). Returns the bytes and the strobe counts."""
    got = []
    strobes = {"framing_error": 0, "overrun": 0}

    async def sender(ctx):
        await play(ctx, dut.rx, segments)
        await ctx.delay(3 * BITS_PER_BYTE * dut.divisor * CLK)

    async def consumer(ctx):
        cycle = 0
        while True:
            ready = cycle >= ready_after and rng.random() < ready_prob
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload, fe, ov = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload, dut.framing_error, dut.overrun
            )
            if ready and valid:
                got.append(payload)
            strobes["framing_error"] += fe
            strobes["overrun"] += ov
            cycle += 1

    simulate(dut, sender, background=[consumer])
    return got, strobes


def idle(cycles):
    return [(1, cycles)]


# -- construction -------------------------------------------------------------------------------


def test_baud_divisor():
    assert baud_divisor(12e6, 3e6) == 4
    assert baud_divisor(48e6, 115200) == 417
    assert baud_divisor(12e6, 1e6) == 12


@pytest.mark.parametrize(
    "clk, baud, message",
    [
        (
            12e6,
            4e6,
            "clock frequency 1.2e+07 Hz is too low for 4e+06 baud: 3.00 cycles per bit, "
            "need at least 4",
        ),
        (
            12e6,
            2.5e6,
            "divisor 5 gives 2.4e+06 baud at 1.2e+07 Hz, 4.0% off the requested "
            "2.5e+06 baud (tolerance 2.0%)",
        ),
        (0, 9600, "clock frequency and baud rate must be positive, not 0 and 9600"),
    ],
)
def test_baud_divisor_errors(clk, baud, message):
    with pytest.raises(ValueError) as info:
        baud_divisor(clk, baud)
    assert str(info.value) == message


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
def test_divisor_validation(cls):
    with pytest.raises(
        ValueError,
        match=r"^UART divisor \(clock cycles per bit\) must be >= 4, "
        r"not 3$",
    ):
        cls(3)
    with pytest.raises(
        TypeError,
        match=r"^UART divisor \(clock cycles per bit\) must be an "
        r"integer, not 4.0$",
    ):
        cls(4.0)
    with pytest.raises(TypeError, match="must be an integer, not True"):
        cls(True)


def test_counter_width_validation():
    with pytest.raises(ValueError, match=r"^Counter width must be >= 1, not 0$"):
        UARTRx(4, counter_width=0)


# -- transmitter --------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor", [4, 5, 9])
def test_tx_exact_bit_timing(divisor):
    """Every bit lasts exactly `divisor` cycles, back-to-back bytes have no gap, the line idles
    high, and input gaps only add idle time."""
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(20)]
    dut = UARTTx(divisor)
    got = []
    gappy = StreamSource(dut.i_stream, rng=rng, idle=0.9)

    async def driver(ctx):
        assert ctx.get(dut.tx) == 1
        await StreamSource(dut.i_stream).send(ctx, data[:8])  # the first 8 back to back
        await gappy.send(ctx, data[8:])

    async def decoder(ctx):
        # Back-to-back: the next start bit follows the stop bit immediately, which the
        # decoder checks by reading the pin on exactly the next cycle.
        while len(got) < len(data):
            back_to_back = 1 <= len(got) < 8
            got.append(await read_serial_byte(ctx, dut.tx, divisor, back_to_back=back_to_back))
        for _ in range(3 * divisor):
            assert ctx.get(dut.tx) == 1 and not ctx.get(dut.busy)
            await ctx.tick()

    simulate(dut, driver, decoder)
    assert got == data
    assert gappy.idle_cycles > 0


# -- receiver -----------------------------------------------------------------------------------


class Loopback(Elaboratable):
    def __init__(self, divisor):
        self.tx = UARTTx(divisor)
        self.rx = UARTRx(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisor", [4, 5, 7])
def test_loopback_random_bytes_gaps_backpressure(divisor):
    rng = random.Random(100 + divisor)
    data = [rng.randrange(256) for _ in range(60)]
    top = Loopback(divisor)
    source = StreamSource(top.tx.i_stream, rng=rng, idle=0.95)  # gaps of about 20 cycles
    sink = StreamSink(top.rx.o_stream, rng=rng, backpressure=0.5)

    async def driver(ctx):
        await source.send(ctx, data)

    async def consumer(ctx):
        await sink.take(ctx, len(data), timeout=len(data) * 4 * BITS_PER_BYTE * divisor)

    simulate(top, driver, consumer)
    assert sink.received == data
    assert source.idle_cycles > 0 and sink.stall_cycles > 0


@pytest.mark.parametrize("divisor", [4, 5, 6, 16])
@pytest.mark.parametrize("mismatch", [-0.02, +0.02])
def test_rx_baud_mismatch(divisor, mismatch):
    """The sender's bit time is 2% off; characters follow each other without idle time, so the
    error accumulates over the whole character (the worst case)."""
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80] + [rng.randrange(256) for _ in range(30)]
    bit = divisor * (1 + mismatch)
    segments = idle(2 * divisor) + [s for b in data for s in byte_segments(b, bit)]
    dut = UARTRx(divisor)
    got, strobes = run_rx(dut, segments, rng)
    assert got == data
    assert strobes == {"framing_error": 0, "overrun": 0}


def test_rx_fails_beyond_tolerance():
    """The mismatch test can fail: 15% off at divisor 4 garbles the data."""
    rng = random.Random(1)
    data = [0x00, 0xFF, 0x55, 0xAA] * 4
    segments = [s for b in data for s in byte_segments(b, 4 * 1.15)]
    got, strobes = run_rx(UARTRx(4), idle(8) + segments, rng)
    assert got != data


def test_rx_framing_error_on_low_stop_bit():
    divisor = 5
    segments = (
        idle(10)
        + byte_segments(0x3C, divisor)
        + byte_segments(0x99, divisor, stop=0)  # stop bit low for one bit time, then high
        + idle(divisor)
        + byte_segments(0xC3, divisor)
    )
    dut = UARTRx(divisor)
    got, strobes = run_rx(dut, segments, random.Random(2))
    assert got == [0x3C, 0xC3]
    assert strobes == {"framing_error": 1, "overrun": 0}


def test_rx_break_does_not_hang():
    """A break (line low for several characters) is one framing error; reception resumes as
    soon as the line is released."""
    divisor = 4
    dut = UARTRx(divisor)
    framing_errors = []
    segments = (
        idle(10)
        + byte_segments(0x11, divisor)
        + [(0, 7 * BITS_PER_BYTE * divisor)]  # break
        + idle(divisor)
        + byte_segments(0x22, divisor)
        + byte_segments(0xA5, divisor)
    )

    async def counter_probe(ctx):
        await ctx.delay(sum(c for _, c in segments) * CLK + 20 * divisor * CLK)
        framing_errors.append(ctx.get(dut.framing_errors))

    got = []

    async def sender(ctx):
        await play(ctx, dut.rx, segments)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while True:
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            if valid:
                got.append(payload)

    simulate(dut, sender, counter_probe, background=[consumer])
    assert got == [0x11, 0x22, 0xA5]
    assert framing_errors == [1]


def test_rx_ignores_short_glitch():
    divisor = 8
    segments = idle(10) + [(0, 2)] + idle(30) + byte_segments(0x5A, divisor)
    got, strobes = run_rx(UARTRx(divisor), segments, random.Random(3))
    assert got == [0x5A]
    assert strobes == {"framing_error": 0, "overrun": 0}


def test_rx_overrun_drops_new_bytes_without_blocking():
    """Nobody takes the first byte for three character times: the next two are dropped and
    counted, the first is kept, and reception continues normally afterwards."""
    divisor = 4
    data = [0x10, 0x20, 0x30, 0x40, 0x50]
    segments = idle(4) + [s for b in data[:3] for s in byte_segments(b, divisor)]
    segments += idle(20 * divisor) + [s for b in data[3:] for s in byte_segments(b, divisor)]
    dut = UARTRx(divisor)
    ready_after = 4 + 3 * BITS_PER_BYTE * divisor + 5 * divisor
    got, strobes = run_rx(dut, segments, random.Random(4), ready_after=ready_after)
    assert got == [0x10, 0x40, 0x50]
    assert strobes == {"framing_error": 0, "overrun": 2}


def test_rx_counters_saturate():
    divisor = 4
    dut = UARTRx(divisor, counter_width=2)
    segments = idle(4)
    for _ in range(5):
        segments += byte_segments(0x00, divisor, stop=0) + idle(2 * divisor)
    values = []

    async def sender(ctx):
        await play(ctx, dut.rx, segments)
        await ctx.delay(2 * divisor * CLK)
        values.append((ctx.get(dut.framing_errors), ctx.get(dut.overruns)))

    simulate(dut, sender)
    assert values == [(3, 0)]
