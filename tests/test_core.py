"""trine.hw.core.AcceleratorCore under Amaranth's simulator: whole networks vs the reference."""

import numpy as np
import pytest

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    LAYER_ENTRY_SIZE,
    beat_bytes,
    compile_image,
)
from trine.contract.network import run_network
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode, Target
from trine.contract.reference import Layer
from trine.hw.core import AcceleratorCore
from trine.sim.testbench import simulate


def make_core(lanes, rows, **params):
    return AcceleratorCore(AcceleratorParams(lanes, rows, **params))


def words(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield i // size, data[i : i + size]


async def write_bytes(ctx, dut, target, data, size):
    port = dut.host.write
    ctx.set(port.target, target)
    for addr, chunk in words(data, size):
        for lane, byte in enumerate(chunk):
            ctx.set(port.addr, addr)
            ctx.set(port.lane, lane)
            ctx.set(port.data, byte)
            ctx.set(port.en, 1)
            await ctx.tick()
    ctx.set(port.en, 0)


async def load(ctx, dut, image):
    await write_bytes(ctx, dut, Target.WEIGHTS, image.weights, beat_bytes(dut.lanes, dut.rows))
    await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes(), BIAS_STORE_BYTES)
    await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), LAYER_ENTRY_SIZE)


async def write_inputs(ctx, dut, x):
    port = dut.host.write
    for b, sample in enumerate(x):
        row = np.zeros(dut.stride * dut.lanes, np.int8)
        row[: len(sample)] = sample
        ctx.set(port.target, Target.INPUT)
        for k, v in enumerate(row.view(np.uint8)):
            ctx.set(port.addr, b * dut.stride + k // dut.lanes)
            ctx.set(port.lane, k % dut.lanes)
            ctx.set(port.data, int(v))
            ctx.set(port.en, 1)
            await ctx.tick()
    ctx.set(port.en, 0)


async def run(ctx, dut, n_layers, batch, limit=200_000):
    port = dut.host.run
    ctx.set(port.n_layers, n_layers)
    ctx.set(port.batch, batch)
    ctx.set(port.start, 1)
    await ctx.tick()
    ctx.set(port.start, 0)
    for _ in range(limit):
        if not ctx.get(port.busy):
            return ctx.get(port.error), ctx.get(port.cycles)
        # The feed has no backpressure: the array must take every beat it is offered.
        beat = dut.array.i_stream
        assert ctx.get(beat.ready) or not ctx.get(beat.valid), "the array refused a beat"
        await ctx.tick()
    raise AssertionError("the core did not finish")


async def read_outputs(ctx, dut, batch, width):
    port = dut.host.read
    out = np.zeros((batch, width), np.int8)
    ctx.set(port.buffer, ctx.get(dut.host.run.out_buffer))
    for b in range(batch):
        for k in range(width):
            ctx.set(port.addr, b * dut.stride + k // dut.lanes)
            ctx.set(port.lane, k % dut.lanes)
            await ctx.tick()
            out[b, k] = np.array(ctx.get(port.data), np.uint8).view(np.int8)
    return out


@pytest.mark.parametrize(
    "lanes, rows, widths, batch, big",
    [
        (4, 3, [10, 7, 5], 2, False),
        (5, 2, [1, 9, 4, 3], 3, False),
        (3, 4, [17, 16, 6], 1, True),
        (8, 5, [40, 13, 10], 2, False),
        (1, 1, [3, 2], 2, True),
        (32, 8, [70, 20, 9], 2, False),  # the ECP5 board's array: 52-byte weight words
    ],
)
@pytest.mark.parametrize("decoder", ["rom", "table", "logic"])
def test_network_matches_reference(lanes, rows, widths, batch, big, decoder, make_layers):
    rng = np.random.default_rng(sum(widths) + lanes * 7 + rows)
    layers = make_layers(rng, widths, bias=200, shifts=6, big_bias=big)
    image = compile_image(layers, lanes, rows)
    dut = make_core(lanes, rows, weight_words=image.weight_words + 3,
                    bias_depth=len(image.biases) + 2, max_layers=4,
                    max_width=max(widths), max_batch=batch, decoder=decoder)
    x = rng.integers(-128, 128, (batch, widths[0])).astype(np.int8)
    x[0, 0] = -128
    results = {}

    async def body(ctx):
        await load(ctx, dut, image)
        for attempt in range(2):  # a second run on the same program gives the same answer
            await write_inputs(ctx, dut, x)
            results[attempt] = await run(ctx, dut, len(layers), batch)
            results[f"y{attempt}"] = await read_outputs(ctx, dut, batch, widths[-1])

    simulate(dut, body)
    expected = run_network(x, layers)
    for attempt in range(2):
        error, cycles = results[attempt]
        assert error == 0
        assert np.array_equal(results[f"y{attempt}"], expected)
    ideal = sum(e.chunks * e.blocks for e in image.entries) * batch
    assert ideal <= cycles


@pytest.mark.parametrize("decoder", ["rom", "table", "logic"])
def test_illegal_weight_byte_aborts_with_an_error(decoder, make_layers):
    rng = np.random.default_rng(1)
    layers = make_layers(rng, [6, 5], bias=200, shifts=6)
    image = compile_image(layers, 3, 2)
    bad = bytearray(image.weights)
    bad[2] = 250
    dut = make_core(3, 2, weight_words=16, bias_depth=8, max_layers=2, max_width=8,
                    decoder=decoder)
    out = {}

    async def body(ctx):
        await write_bytes(ctx, dut, Target.WEIGHTS, bytes(bad), beat_bytes(3, 2))
        await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes(), BIAS_STORE_BYTES)
        await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), LAYER_ENTRY_SIZE)
        await write_inputs(ctx, dut, np.ones((1, 6), np.int8))
        out["bad"] = await run(ctx, dut, 1, 1)
        await write_bytes(ctx, dut, Target.WEIGHTS, image.weights, beat_bytes(3, 2))
        out["good"] = await run(ctx, dut, 1, 1)
        out["y"] = await read_outputs(ctx, dut, 1, 5)

    simulate(dut, body)
    assert out["bad"][0] == ErrorCode.ILLEGAL_WEIGHT
    assert out["good"][0] == 0  # the abort left nothing behind
    assert np.array_equal(out["y"], run_network(np.ones((1, 6), np.int8), layers))


@pytest.mark.parametrize("n_layers, batch", [(0, 1), (3, 1), (1, 0), (1, 3)])
def test_bad_run_arguments_are_refused(n_layers, batch):
    dut = make_core(2, 2, weight_words=4, bias_depth=4, max_layers=2, max_width=4,
                    max_batch=2)
    out = {}

    async def body(ctx):
        out["r"] = await run(ctx, dut, n_layers, batch)

    simulate(dut, body)
    assert out["r"][0] == ErrorCode.BAD_ARGUMENT


def test_garbage_layer_table_cannot_hang_the_core():
    dut = make_core(2, 2, weight_words=4, bias_depth=4, max_layers=1, max_width=4)
    out = {}

    async def body(ctx):
        await write_bytes(ctx, dut, Target.LAYER, bytes([0xFF] * LAYER_ENTRY_SIZE),
                          LAYER_ENTRY_SIZE)
        out["r"] = await run(ctx, dut, 1, 1, limit=1000)

    simulate(dut, body)
    assert out["r"][0] == ErrorCode.BAD_ARGUMENT


@pytest.mark.parametrize("short", ["weights", "biases"])
def test_a_layer_running_past_a_memory_aborts_with_bad_address(short, make_layers):
    rng = np.random.default_rng(5)
    layers = make_layers(rng, [7, 9], bias=200, shifts=6)
    image = compile_image(layers, 2, 2)
    words = image.weight_words - (short == "weights")
    biases = len(image.biases) - (short == "biases")
    dut = make_core(2, 2, weight_words=words, bias_depth=biases, max_layers=1,
                    max_width=9)
    ok = [Layer(np.ones((2, 2), np.int8), np.zeros(2, np.int64), 0, False)]
    ok_image = compile_image(ok, 2, 2)
    out = {}

    async def body(ctx):
        bb = beat_bytes(2, 2)
        await write_bytes(ctx, dut, Target.WEIGHTS, image.weights[: words * bb], bb)
        await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes()[: biases * BIAS_STORE_BYTES],
                          BIAS_STORE_BYTES)
        await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), LAYER_ENTRY_SIZE)
        await write_inputs(ctx, dut, np.ones((1, 7), np.int8))
        out["bad"] = await run(ctx, dut, 1, 1)
        await load(ctx, dut, ok_image)  # a program that fits runs right after the abort
        await write_inputs(ctx, dut, np.array([[3, -5]], np.int8))
        out["good"] = await run(ctx, dut, 1, 1)
        out["y"] = await read_outputs(ctx, dut, 1, 2)

    simulate(dut, body)
    assert out["bad"][0] == ErrorCode.BAD_ADDRESS
    assert out["good"][0] == 0
    assert np.array_equal(out["y"], run_network(np.array([[3, -5]], np.int8), ok))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(decoder="lut"), "decoder must be one of rom, table, logic, not 'lut'"),
        (dict(weight_memory="ebr"), "weight memory must be one of generic, spram, not 'ebr'"),
        (dict(lanes=8, rows=8, weight_memory="spram"),
         "SPRAM words are at most 8 bytes wide, not 13"),
        (dict(weight_words=16385, weight_memory="spram"),
         "SPRAM holds at most 16384 words, not 16385"),
        (dict(max_layers=256), r"Maximum layer count must be in \[1, 255\], not 256"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    params = dict(lanes=2, rows=2, weight_words=4, bias_depth=4, max_layers=2, max_width=4)
    params.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AcceleratorParams(**params)


def _count_trace(width, script):
    """CycleCounter's value after each cycle of ``script``: a list of (count, clear)."""
    from trine.hw.counters import CycleCounter

    dut = CycleCounter(width)
    values = []

    async def bench(ctx):
        for count, clear in script:
            ctx.set(dut.count, count)
            ctx.set(dut.clear, clear)
            await ctx.tick()
            values.append(ctx.get(dut.value))

    simulate(dut, bench)
    return values


@pytest.mark.parametrize("width", [2, 4, 6])
def test_cycle_counter_counts_saturates_and_clears(width):
    """Against a model over random enables and clears, through several saturations."""
    rng = np.random.default_rng(width)
    top = (1 << width) - 1
    script = []
    for _ in range(6):  # long counting stretches reach the top; clears come in between
        script += [(int(c), 0) for c in rng.random(3 * top) < 0.9]
        script += [(int(rng.integers(2)), 1)] + [(int(c), int(k)) for c, k in
                                                 zip(rng.integers(2, size=5), rng.random(5) < 0.2,
                                                     strict=True)]
    expected, value = [], 0
    for count, clear in script:
        value = 0 if clear else min(value + count, top)
        expected.append(value)
    got = _count_trace(width, script)
    assert got == expected
    assert expected.count(top) > 3  # saturation was reached, more than once


def test_cycle_counter_width_must_be_even():
    from trine.hw.counters import CycleCounter

    for width in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match="width"):
            CycleCounter(width)
