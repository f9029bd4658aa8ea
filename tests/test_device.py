"""trine.hw.device.LinkedAccelerator under Amaranth's simulator, byte level: frames in and out,
MLPs and CNNs loaded and run as the host does it."""

import struct

import numpy as np
import pytest
from conftest import random_cnn

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    TABLE_WORD_BYTES,
    beat_bytes,
)
from trine.contract.network import run_network
from trine.contract.params import ECP5_85F, UP5K, AcceleratorParams, check_fits
from trine.contract.protocol import (
    ACK,
    MAX_PAYLOAD,
    NAK,
    WRITE_HEADER,
    DeviceInfo,
    ErrorCode,
    FrameDecoder,
    Op,
    Target,
    encode_frame,
    read_payload,
    run_payload,
    write_payload,
)
from trine.hw.device import STATUS_SIZE, LinkedAccelerator, Top
from trine.sim.testbench import StreamMonitor, StreamSink, StreamSource, simulate

PARAMS = dict(weight_words=80, bias_depth=40, act_words=40, table_words=90, max_batch=3)


class Host:
    """Drives the byte streams from an Amaranth testbench, with idle gaps between the bytes it
    sends and backpressure on the bytes it receives; one request at a time."""

    def __init__(self, dut, ctx, rng, *, idle=0.2, backpressure=0.3):
        self.ctx = ctx
        self.source = StreamSource(dut.i_stream, rng=rng, idle=idle)
        self.sink = StreamSink(dut.o_stream, rng=rng, backpressure=backpressure)
        self.decoder = FrameDecoder()
        self.seq = 0

    async def send_bytes(self, data):
        await self.source.send(self.ctx, data)

    async def receive(self, limit=20_000):
        """The next frame from the device; ``limit`` cycles at most between two bytes."""
        while True:
            received = await self.sink.take(self.ctx, len(self.sink.received) + 1,
                                            timeout=limit)
            frames = self.decoder.feed(bytes(received[-1:]))
            if frames:
                return frames[0]

    async def request(self, op, payload=b"", seq=None):
        self.seq = (self.seq + 1) % 256 if seq is None else seq
        await self.send_bytes(encode_frame(op, self.seq, payload))
        frame = await self.receive()
        assert frame.seq == self.seq
        return frame

    async def write(self, target, data, word_size, first_word=0):
        per = (MAX_PAYLOAD - WRITE_HEADER) // word_size * word_size
        for start in range(0, len(data), per):
            f = await self.request(Op.WRITE, write_payload(target, first_word + start // word_size,
                                                            data[start : start + per]))
            assert f.op == Op.WRITE | ACK, f


BOARD_GENERIC = UP5K.for_simulation().as_dict()  # SPRAM cannot be simulated here


@pytest.mark.parametrize(
    "lanes, rows, net, params",
    [
        (4, 3, [9, 13, 5], PARAMS),
        (5, 2, [20, 7, 11, 3], PARAMS),
        (3, 2, "conv1d-pool", PARAMS),
        # the ECP5 board's block RAM reads: registered (a cycle more in the feed and READ)
        (3, 2, "conv1d-pool", dict(PARAMS, ram_output="registered")),
        (8, 5, [41, 12, 6], {k: v for k, v in BOARD_GENERIC.items() if k not in ("lanes", "rows")}),
    ],
)
def test_network_through_frames(lanes, rows, net, params, make_layers):
    rng = np.random.default_rng(lanes + len(net))
    p = AcceleratorParams(lanes, rows, **params)
    dut = LinkedAccelerator(p, timeout_cycles=5000)
    if isinstance(net, str):
        layers, shape = random_cnn(rng, net)
    else:
        layers, shape = make_layers(rng, net, shifts=5), (net[0],)
    image = check_fits(layers, p.limits(), shape)
    x = rng.integers(-128, 128, (image.batch, *shape)).astype(np.int8)
    out = {}
    monitor = StreamMonitor(dut.o_stream)

    async def body(ctx):
        host = Host(dut, ctx, rng)
        out["host"] = host
        info = DeviceInfo.from_bytes((await host.request(Op.INFO)).payload)
        out["info"] = info
        await host.write(Target.WEIGHTS, image.weights, beat_bytes(lanes, rows))
        await host.write(Target.BIAS, image.bias_bytes(), BIAS_STORE_BYTES)
        await host.write(Target.LAYER, image.table_bytes(), TABLE_WORD_BYTES)
        await host.write(Target.INPUT, image.input.pack(x).tobytes(), lanes, image.input.base)
        run = await host.request(Op.RUN, run_payload(len(image.entries), len(x)))
        assert run.op == Op.RUN | ACK, run
        out["cycles"] = struct.unpack("<I", run.payload)[0]
        again = await host.request(Op.RUN, run_payload(len(image.entries), len(x)),
                                   seq=host.seq)
        out["again"] = again
        size = image.output.sample_words * lanes * len(x)
        f = await host.request(Op.READ, read_payload(0, image.output.base, size))
        assert f.op == Op.READ | ACK
        out["y"] = image.output.unpack(np.frombuffer(f.payload, np.int8).reshape(len(x), -1))
        status = await host.request(Op.STATUS)
        out["status"] = status

    simulate(dut, body, background=[monitor.watch])
    # idle gaps and backpressure happened, and the device kept its bytes waiting meanwhile
    assert out["host"].source.idle_cycles > 0 and out["host"].sink.stall_cycles > 0
    assert monitor.waits > 0 and bytes(monitor.beats) == bytes(out["host"].sink.received)
    assert out["info"] == p.device_info()
    assert np.array_equal(out["y"], run_network(x, layers, shape))
    assert out["again"].payload == struct.pack("<I", out["cycles"])  # answered from memory
    busy, error, cycles, runs = struct.unpack("<BBII", out["status"].payload)
    assert (busy, error, cycles, runs) == (0, 0, out["cycles"], 1)  # the retry did not rerun
    assert len(out["status"].payload) == STATUS_SIZE


def test_a_run_that_would_never_end_is_answered_with_timeout():
    """A table whose loops would run for about 2**80 cycles: the watchdog ends the RUN, the
    host gets a NAK TIMEOUT, and the device still answers INFO."""
    p = AcceleratorParams(2, 2, **dict(PARAMS, watchdog_bits=12))
    dut = LinkedAccelerator(p, timeout_cycles=5000)
    table = [0x01FF, 0, 0, 0xFFFF, 0xFFFF, 1] + [0xFFFF] * 4 + [1, 1] + [0xFFFF] * 25
    out = {}

    async def body(ctx):
        host = Host(dut, ctx, np.random.default_rng(3))
        await host.write(Target.LAYER, np.array(table, "<u2").tobytes(), TABLE_WORD_BYTES)
        out["run"] = await host.request(Op.RUN, run_payload(1, 1))
        out["info"] = await host.request(Op.INFO)
        out["status"] = await host.request(Op.STATUS)

    simulate(dut, body)
    assert out["run"].op == NAK and out["run"].payload == bytes([Op.RUN, ErrorCode.TIMEOUT])
    assert out["info"].op == Op.INFO | ACK
    busy, error, cycles, _ = struct.unpack("<BBII", out["status"].payload)
    assert (busy, error) == (0, ErrorCode.TIMEOUT) and cycles >= p.max_run_cycles


@pytest.mark.parametrize(
    "op, payload, code",
    [
        (Op.INFO, b"x", ErrorCode.BAD_LENGTH),
        (0x42, b"", ErrorCode.UNKNOWN_OPCODE),
        (Op.WRITE, b"\x00\x00", ErrorCode.BAD_LENGTH),
        (Op.WRITE, write_payload(7, 0, b"\x01"), ErrorCode.BAD_ARGUMENT),
        (Op.WRITE, write_payload(Target.LAYER, PARAMS["table_words"] - 1, bytes(3)),
         ErrorCode.BAD_ADDRESS),  # runs past the last table word: nothing is written
        (Op.WRITE, write_payload(Target.WEIGHTS, 2**32 - 1, b"\x01"), ErrorCode.BAD_ADDRESS),
        (Op.READ, struct.pack("<BIH", 1, 0, 1), ErrorCode.BAD_ARGUMENT),  # the pool is 0
        (Op.READ, read_payload(0, PARAMS["act_words"], 1), ErrorCode.BAD_ADDRESS),
        (Op.RUN, struct.pack("<BH", 0, 1), ErrorCode.BAD_ARGUMENT),  # zero layers
        (Op.RUN, b"\x01", ErrorCode.BAD_LENGTH),
    ],
)
def test_bad_requests_get_a_nak(op, payload, code):
    dut = LinkedAccelerator(AcceleratorParams(2, 2, **PARAMS), timeout_cycles=5000)
    out = {}

    async def body(ctx):
        host = Host(dut, ctx, np.random.default_rng(0))
        out["f"] = await host.request(op, payload)
        out["info"] = await host.request(Op.INFO)  # and the device still answers

    simulate(dut, body)
    assert out["f"].op == NAK and out["f"].payload == bytes([op, code])
    assert out["info"].op == Op.INFO | ACK


def test_refused_write_changes_nothing():
    dut = LinkedAccelerator(AcceleratorParams(2, 2, **PARAMS), timeout_cycles=5000)
    out = {}

    async def body(ctx):
        host = Host(dut, ctx, np.random.default_rng(1))
        await host.request(Op.WRITE, write_payload(Target.INPUT, 0, b"\x05\x06"))
        bad = write_payload(Target.INPUT, PARAMS["act_words"] - 1, bytes([9] * 4))
        out["nak"] = await host.request(Op.WRITE, bad)
        out["ok"] = await host.request(Op.WRITE, write_payload(Target.INPUT, 0, b"\x07"))
        out["read"] = await host.request(Op.READ, read_payload(0, 0, 2))

    simulate(dut, body)
    assert out["nak"].payload == bytes([Op.WRITE, ErrorCode.BAD_ADDRESS])
    assert out["read"].payload == b"\x07\x06"


def test_corrupted_frame_is_nakked_with_its_seq_and_garbage_is_ignored():
    dut = LinkedAccelerator(AcceleratorParams(2, 2, **PARAMS), timeout_cycles=300)
    out = {}

    async def body(ctx):
        host = Host(dut, ctx, np.random.default_rng(2))
        frame = bytearray(encode_frame(Op.INFO, 0x33, b""))
        frame[-1] ^= 0x10
        await host.send_bytes(bytes(frame))
        out["nak"] = await host.receive()
        await host.send_bytes(b"\x00\xa5\x01garbage")  # a partial frame, then silence
        await ctx.tick().repeat(400)  # the receiver's timeout drops it
        out["info"] = await host.request(Op.INFO)

    simulate(dut, body)
    assert out["nak"].op == NAK and out["nak"].seq == 0x33
    assert out["nak"].payload == bytes([Op.INFO, ErrorCode.BAD_CRC])
    assert out["info"].op == Op.INFO | ACK


def test_top_checks_the_baud_rate():
    assert Top(AcceleratorParams(2, 2, **PARAMS), 12_000_000, 3_000_000).divisor == 4
    with pytest.raises(ValueError):
        Top(AcceleratorParams(2, 2, **PARAMS), 12_000_000, 6_000_000)


@pytest.mark.parametrize("params", [UP5K, ECP5_85F])
def test_board_parameters_hold_the_mnist1d_networks(params, make_layers):
    """40-256-256-10 (78,336 weights), a 784-input layer at batch 1, and the MNIST-1D CNN
    (QAT's default) each fit the board's memories and limits."""
    from trine.host.arch import parse_arch, spec_layers

    widths = [40, 256, 256, 10]
    layers = make_layers(np.random.default_rng(0), widths)
    check_fits(layers, params.limits())
    check_fits(make_layers(np.random.default_rng(1), [784, 128, 10]), params.limits())
    cnn = spec_layers(parse_arch("c64k5p2,m2,c64k3p1,m2,c64k3p1,m2", (1, 40), 10), (1, 40))
    image = check_fits(cnn, params.limits(), (1, 40))
    assert image.batch >= 1
    info = Top(params, 48_000_000, 3_000_000).device.info
    assert info == params.device_info(48_000_000, 3_000_000)


@pytest.mark.synth
def test_up5k_parameters_fit_the_up5k():
    """Weights in the four SPRAM blocks, everything else in at most 30 block RAMs, no DSP."""
    from trine.flow.synth import ToolNotFoundError, cell_stats
    from trine.hw.verilog import to_verilog

    top = Top(UP5K, 48_000_000, 3_000_000)
    try:
        cells = cell_stats(to_verilog(top, "top"), "top", "ice40")
    except ToolNotFoundError as exc:  # the tools are an optional extra
        pytest.skip(str(exc))
    assert cells.get("SB_SPRAM256KA") == 4
    assert cells.get("SB_RAM40_4K", 0) <= 30
    assert cells.get("SB_LUT4", 0) < 5280
    assert "SB_MAC16" not in cells
