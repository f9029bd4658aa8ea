"""trine.hw.core.AcceleratorCore under Amaranth's simulator: whole networks vs the reference.

Dense, Conv1d/Conv2d (strides, zero padding), fused max-pooling and flatten, against
:func:`trine.contract.network.run_network`; the table's checks and the watchdog."""

import numpy as np
import pytest
from conftest import CNN_KINDS, random_cnn, random_layers
from ternary_nets import trit_counts, with_thresholds

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    TABLE_WORD_BYTES,
    beat_bytes,
    compile_image,
)
from trine.contract.network import run_network
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import ErrorCode, Target
from trine.contract.reference import Layer
from trine.hw.core import AcceleratorCore
from trine.hw.memories import host_read_latency
from trine.sim.testbench import simulate


def make_core(lanes, rows, **params):
    params.setdefault("act_words", 64)
    params.setdefault("table_words", 64)
    return AcceleratorCore(AcceleratorParams(lanes, rows, **params))


def words(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield i // size, data[i : i + size]


async def write_bytes(ctx, dut, target, data, size, first_word=0):
    port = dut.host.write
    ctx.set(port.target, target)
    for addr, chunk in words(data, size):
        for lane, byte in enumerate(chunk):
            ctx.set(port.addr, first_word + addr)
            ctx.set(port.lane, lane)
            ctx.set(port.data, byte)
            ctx.set(port.en, 1)
            await ctx.tick()
    ctx.set(port.en, 0)


async def load(ctx, dut, image):
    await write_bytes(ctx, dut, Target.WEIGHTS, image.weights, beat_bytes(dut.lanes, dut.rows))
    await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes(), BIAS_STORE_BYTES)
    await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), TABLE_WORD_BYTES)


async def write_inputs(ctx, dut, image, x):
    data = image.input.pack(x).tobytes()
    await write_bytes(ctx, dut, Target.INPUT, data, dut.lanes, image.input.base)


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


async def read_outputs(ctx, dut, image, batch):
    port = dut.host.read
    out = image.output
    size = out.sample_words * dut.lanes
    data = np.zeros(batch * size, np.uint8)
    ctx.set(port.target, Target.INPUT)
    for k in range(batch * size):
        ctx.set(port.addr, out.base + k // dut.lanes)
        ctx.set(port.lane, k % dut.lanes)
        await ctx.tick().repeat(host_read_latency(dut.params))
        data[k] = ctx.get(port.data)
    return out.unpack(data.view(np.int8).reshape(batch, size))


def run_on_core(layers, shape, lanes, rows, batch, *, act_words=64, decoder="rom", runs=1,
                ram_output="direct", ternary_act=False, x=None):
    """Compile ``layers`` for a core just big enough, run ``batch`` random samples (or ``x``)
    ``runs`` times; returns the inputs, the outputs of each run, and the errors and cycles."""
    rng = np.random.default_rng(lanes * 31 + rows + batch)
    image = compile_image(layers, shape, lanes, rows, act_words, batch, ternary_act=ternary_act)
    assert image.batch == batch
    dut = make_core(lanes, rows, weight_words=image.weight_words + 3,
                    bias_depth=len(image.biases) + 2, act_words=act_words,
                    table_words=image.table_words + 1, max_batch=batch, decoder=decoder,
                    ram_output=ram_output, ternary_act=ternary_act)
    if x is None:
        x = rng.integers(-128, 128, (batch, *shape)).astype(np.int8)
        x.reshape(batch, -1)[0, 0] = -128
    results = []

    async def body(ctx):
        await load(ctx, dut, image)
        for _ in range(runs):  # a second run on the same program gives the same answer
            await write_inputs(ctx, dut, image, x)
            status = await run(ctx, dut, len(image.entries), batch)
            results.append((status, await read_outputs(ctx, dut, image, batch)))

    simulate(dut, body)
    return image, x, results


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
@pytest.mark.parametrize("decoder, ram_output", [("rom", "direct"), ("table", "direct"),
                                                 ("logic", "direct"), ("rom", "registered")])
def test_mlp_matches_reference(lanes, rows, widths, batch, big, decoder, ram_output,
                               make_layers):
    rng = np.random.default_rng(sum(widths) + lanes * 7 + rows)
    layers = make_layers(rng, widths, bias=200, shifts=6, big_bias=big)
    image, x, results = run_on_core(layers, (widths[0],), lanes, rows, batch, decoder=decoder,
                                    runs=2, ram_output=ram_output)
    expected = run_network(x, layers)
    for (error, _), y in results:
        assert error == 0
        assert np.array_equal(y, expected)
    ideal = sum(e.cw * e.blocks for e in image.entries) * batch
    assert ideal <= results[-1][0][1]


@pytest.mark.parametrize("lanes, rows, ram_output", [(4, 3, "direct"), (3, 2, "direct"),
                                                     (2, 5, "direct"), (8, 5, "direct"),
                                                     (3, 2, "registered")])
@pytest.mark.parametrize("kind", ["conv1d", "conv1d-pool", "conv2d", "conv2d-pool"])
def test_cnn_matches_reference(kind, lanes, rows, ram_output):
    rng = np.random.default_rng(len(kind) * 13 + lanes * 7 + rows)
    layers, shape = random_cnn(rng, kind)
    batch = 2
    _, x, results = run_on_core(layers, shape, lanes, rows, batch, act_words=256,
                                ram_output=ram_output)
    ((error, _), y), = results
    assert error == 0
    assert np.array_equal(y, run_network(x, layers, shape))


@pytest.mark.parametrize("lanes, rows, widths, ram_output", [
    (4, 3, [10, 7, 5], "direct"), (5, 2, [9, 12, 6, 3], "direct"), (3, 2, [8, 6, 4], "registered"),
    (8, 5, [40, 13, 10], "direct")])
@pytest.mark.parametrize("last", [False, True], ids=["int8-out", "ternary-out"])
def test_mixed_mlp_matches_reference(lanes, rows, widths, ram_output, last):
    """Ternary hidden layers (and, with ``last``, outputs): the trits are bytes in the pool,
    which the next layer reads as int8 inputs."""
    rng = np.random.default_rng(sum(widths) + lanes + 100 * last)
    batch = 3
    x = rng.integers(-128, 128, (batch, widths[0])).astype(np.int8)
    layers = with_thresholds(rng, random_layers(rng, widths, bias=300, shifts=4), x, last=last)
    assert all(c.min() > 0 for c in trit_counts(layers, x)[:1])  # every trit occurs
    _, _, results = run_on_core(layers, (widths[0],), lanes, rows, batch, x=x,
                                ram_output=ram_output, ternary_act=True)
    ((error, _), y), = results
    assert error == 0
    assert np.array_equal(y, run_network(x, layers))


@pytest.mark.parametrize("kind", list(CNN_KINDS))
def test_mixed_cnn_matches_reference(kind):
    """Ternary convolutions, pooled (the maximum of trits) and flattened into a dense layer."""
    rng = np.random.default_rng(len(kind) + 200)
    batch = 2
    layers, shape = random_cnn(rng, kind)
    x = rng.integers(-128, 128, (batch, *shape)).astype(np.int8)
    layers = with_thresholds(rng, layers, x, shape, last=kind == "conv2d")
    _, _, results = run_on_core(layers, shape, 3, 2, batch, x=x, act_words=256,
                                ternary_act=True)
    ((error, _), y), = results
    assert error == 0
    assert np.array_equal(y, run_network(x, layers, shape))


@pytest.mark.parametrize("decoder, ram_output, lanes, rows, where", [
    ("rom", "direct", 3, 2, 2), ("table", "direct", 3, 2, 2), ("logic", "direct", 3, 2, 2),
    ("rom", "registered", 3, 2, 2),
    # the last beat of the run, on the array with the shortest latency
    ("rom", "direct", 1, 1, -1), ("rom", "registered", 1, 1, -1)])
def test_illegal_weight_byte_aborts_with_an_error(decoder, ram_output, lanes, rows, where,
                                                  make_layers):
    rng = np.random.default_rng(1)
    layers = make_layers(rng, [6, 5], bias=200, shifts=6)
    image = compile_image(layers, (6,), lanes, rows, 64)
    bad = bytearray(image.weights)
    bad[where] = 250
    dut = make_core(lanes, rows, weight_words=image.weight_words, bias_depth=8,
                    decoder=decoder, ram_output=ram_output)
    out = {}
    x = np.ones((1, 6), np.int8)

    async def body(ctx):
        await write_bytes(ctx, dut, Target.WEIGHTS, bytes(bad), beat_bytes(lanes, rows))
        await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes(), BIAS_STORE_BYTES)
        await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), TABLE_WORD_BYTES)
        await write_inputs(ctx, dut, image, x)
        out["bad"] = await run(ctx, dut, 1, 1)
        await write_bytes(ctx, dut, Target.WEIGHTS, image.weights, beat_bytes(lanes, rows))
        out["good"] = await run(ctx, dut, 1, 1)
        out["y"] = await read_outputs(ctx, dut, image, 1)

    simulate(dut, body)
    assert out["bad"][0] == ErrorCode.ILLEGAL_WEIGHT
    assert out["good"][0] == 0  # the abort left nothing behind
    assert np.array_equal(out["y"], run_network(x, layers))


@pytest.mark.parametrize("n_layers, batch", [(0, 1), (1, 0), (1, 3)])
def test_bad_run_arguments_are_refused(n_layers, batch):
    dut = make_core(2, 2, weight_words=4, bias_depth=4, max_batch=2)
    out = {}

    async def body(ctx):
        out["r"] = await run(ctx, dut, n_layers, batch)

    simulate(dut, body)
    assert out["r"][0] == ErrorCode.BAD_ARGUMENT


def test_an_entry_past_the_table_is_refused(make_layers):
    rng = np.random.default_rng(2)
    image = compile_image(make_layers(rng, [4, 3]), (4,), 2, 2, 64)
    dut = make_core(2, 2, weight_words=8, bias_depth=8, table_words=15)
    out = {}

    async def body(ctx):
        await load(ctx, dut, image)
        out["one"] = await run(ctx, dut, 1, 1)
        out["two"] = await run(ctx, dut, 2, 1)  # the second entry would start at word 10

    simulate(dut, body)
    assert out["one"][0] == 0
    assert out["two"][0] == ErrorCode.BAD_ADDRESS


def test_garbage_layer_table_cannot_hang_the_core():
    """Counts of 65535 everywhere (and windows of one word, so that no address runs past its
    memory) would loop for about 2**80 cycles; the watchdog stops the run, and the core runs
    the next program as usual."""
    dut = make_core(2, 2, weight_words=4, bias_depth=4, table_words=40, watchdog_bits=12)
    ok = [Layer(np.ones((2, 2), np.int8), np.zeros(2, np.int64), 0, False)]
    ok_image = compile_image(ok, (2,), 2, 2, 64)
    out = {}

    async def body(ctx):
        table = [0x01FF, 0, 0, 0xFFFF, 0xFFFF, 1] + [0xFFFF] * 4 + [1, 1] + [0xFFFF] * 25
        garbage = np.array(table, "<u2").tobytes()
        await write_bytes(ctx, dut, Target.LAYER, garbage, TABLE_WORD_BYTES)
        out["r"] = await run(ctx, dut, 1, 1, limit=20_000)
        await load(ctx, dut, ok_image)
        await write_inputs(ctx, dut, ok_image, np.array([[3, -5]], np.int8))
        out["good"] = await run(ctx, dut, 1, 1)
        out["y"] = await read_outputs(ctx, dut, ok_image, 1)

    simulate(dut, body)
    error, cycles = out["r"]
    assert error == ErrorCode.TIMEOUT
    assert 1 << 12 <= cycles < (1 << 12) + 8
    assert out["good"][0] == 0
    assert np.array_equal(out["y"], run_network(np.array([[3, -5]], np.int8), ok))


@pytest.mark.parametrize("short", ["weights", "biases"])
def test_a_layer_running_past_a_memory_aborts_with_bad_address(short, make_layers):
    rng = np.random.default_rng(5)
    layers = make_layers(rng, [7, 9], bias=200, shifts=6)
    image = compile_image(layers, (7,), 2, 2, 64)
    words_ = image.weight_words - (short == "weights")
    biases = len(image.biases) - (short == "biases")
    dut = make_core(2, 2, weight_words=words_, bias_depth=biases)
    ok = [Layer(np.ones((2, 2), np.int8), np.zeros(2, np.int64), 0, False)]
    ok_image = compile_image(ok, (2,), 2, 2, 64)
    out = {}

    async def body(ctx):
        bb = beat_bytes(2, 2)
        await write_bytes(ctx, dut, Target.WEIGHTS, image.weights[: words_ * bb], bb)
        await write_bytes(ctx, dut, Target.BIAS, image.bias_bytes()[: biases * BIAS_STORE_BYTES],
                          BIAS_STORE_BYTES)
        await write_bytes(ctx, dut, Target.LAYER, image.table_bytes(), TABLE_WORD_BYTES)
        await write_inputs(ctx, dut, image, np.ones((1, 7), np.int8))
        out["bad"] = await run(ctx, dut, 1, 1)
        await load(ctx, dut, ok_image)  # a program that fits runs right after the abort
        await write_inputs(ctx, dut, ok_image, np.array([[3, -5]], np.int8))
        out["good"] = await run(ctx, dut, 1, 1)
        out["y"] = await read_outputs(ctx, dut, ok_image, 1)

    simulate(dut, body)
    assert out["bad"][0] == ErrorCode.BAD_ADDRESS
    assert out["good"][0] == 0
    assert np.array_equal(out["y"], run_network(np.array([[3, -5]], np.int8), ok))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(decoder="lut"), "decoder must be one of rom, table, logic, not 'lut'"),
        (dict(weight_memory="ebr"), "weight memory must be one of generic, spram, not 'ebr'"),
        (dict(ram_output="outreg"), "RAM output must be one of direct, registered, not 'outreg'"),
        (dict(lanes=8, rows=8, weight_memory="spram"),
         "SPRAM words are at most 8 bytes wide, not 13"),
        (dict(weight_words=16385, weight_memory="spram"),
         "SPRAM holds at most 16384 words, not 16385"),
        (dict(act_words=1 << 17), r"Activation pool depth must be in \[2, 65536\], not 131072"),
        (dict(table_words=9), r"Layer table depth must be in \[10, 65536\], not 9"),
        (dict(watchdog_bits=32), r"Watchdog bits must be in \[8, 31\], not 32"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    params = dict(lanes=2, rows=2, weight_words=4, bias_depth=4, act_words=8, table_words=20)
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
        value = count if clear else min(value + count, top)
        expected.append(value)
    got = _count_trace(width, script)
    assert got == expected
    assert expected.count(top) > 3  # saturation was reached, more than once


def test_cycle_counter_width_must_be_even():
    from trine.hw.counters import CycleCounter

    for width in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match="width"):
            CycleCounter(width)
