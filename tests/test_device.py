"""trine.hw.device.LinkedAccelerator under Amaranth's simulator, byte level: frames in and out,
MLPs and CNNs loaded and run as the host does it."""

import struct

import numpy as np
import pytest
from conftest import random_cnn
from ternary_nets import with_thresholds

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    BIAS_STORE_WIDTH,
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
    frame_crc,
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

    def __init__(self, dut, ctx, rng, *, idle=0.2, backpressure=0.3, session=0x5E55_1011):
        self.ctx = ctx
        self.session = session
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

    async def request(self, op, payload=b"", seq=None, program=0):
        """Send a request; its answer, which must be bound to it (seq, session, check)."""
        self.seq = (self.seq + 1) % 256 if seq is None else seq
        request = encode_frame(op, self.seq, payload, session=self.session, program=program)
        await self.send_bytes(request)
        frame = await self.receive()
        assert (frame.seq, frame.session, frame.check) == (
            self.seq, self.session, frame_crc(request))
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
        # ternary hidden layers, on a device with ternary_act
        (4, 3, ("mixed", [9, 13, 7, 5]), dict(PARAMS, ternary_act=True)),
        (3, 2, ("mixed", "conv1d-pool"), dict(PARAMS, ternary_act=True, ram_output="registered")),
    ],
)
def test_network_through_frames(lanes, rows, net, params, make_layers):
    rng = np.random.default_rng(lanes + len(net))
    p = AcceleratorParams(lanes, rows, **params)
    dut = LinkedAccelerator(p, timeout_cycles=5000)
    mixed = isinstance(net, tuple)
    net = net[1] if mixed else net
    if isinstance(net, str):
        layers, shape = random_cnn(rng, net)
    else:
        layers, shape = make_layers(rng, net, shifts=5), (net[0],)
    image = check_fits(layers, p.limits(), shape)
    x = rng.integers(-128, 128, (image.batch, *shape)).astype(np.int8)
    if mixed:
        layers = with_thresholds(rng, layers, x, shape)
        image = check_fits(layers, p.limits(), shape)
        assert any(e.ternary_threshold for e in image.entries)
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
        f = await host.request(Op.READ, read_payload(Target.INPUT, image.output.base, size))
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
        (Op.READ, struct.pack("<BIH", 4, 0, 1), ErrorCode.BAD_ARGUMENT),
        (Op.READ, struct.pack("<BIH", 0x13, 0, 1), ErrorCode.BAD_ARGUMENT),
        (Op.READ, read_payload(Target.INPUT, PARAMS["act_words"], 1), ErrorCode.BAD_ADDRESS),
        (Op.READ, read_payload(Target.BIAS, PARAMS["bias_depth"] - 1, 6),
         ErrorCode.BAD_ADDRESS),
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
        out["read"] = await host.request(Op.READ, read_payload(Target.INPUT, 0, 2))

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


def test_answers_say_whose_device_it_is():
    """Each answer carries its request's session and CRC, and the session and program fields
    of the last WRITE or RUN with a good CRC, once that request was answered. Reads, INFO,
    STATUS and damaged frames change nothing."""
    dut = LinkedAccelerator(AcceleratorParams(2, 2, **PARAMS), timeout_cycles=300)
    a_session, b_session = 0xA11CE5ED, 0x0B0B0B0B
    out = []

    async def body(ctx):
        rng = np.random.default_rng(4)
        a = Host(dut, ctx, rng, session=a_session)
        b = Host(dut, ctx, rng, session=b_session)
        claim = write_payload(Target.INPUT, 0, b"")
        out.append(("reset", await a.request(Op.INFO, program=0x1234)))
        out.append(("a claim", await a.request(Op.WRITE, claim, program=0x04030201)))
        out.append(("b info", await b.request(Op.INFO, program=0xBBBB)))
        out.append(("b read", await b.request(Op.READ, read_payload(Target.INPUT, 0, 2))))
        out.append(("b write", await b.request(Op.WRITE, write_payload(Target.INPUT, 0, b"\x09"),
                                               program=0xB0B)))
        out.append(("a status", await a.request(Op.STATUS)))
        out.append(("a run", await a.request(Op.RUN, run_payload(1, 1), program=0xA)))
        out.append(("b status", await b.request(Op.STATUS)))
        # B's WRITE with a damaged payload: NAKed BAD_CRC, and A stays the owner
        damaged = bytearray(encode_frame(Op.WRITE, 0x44, write_payload(Target.INPUT, 0, b"\x08"),
                                         session=b_session, program=0xDEAD))
        damaged[-3] ^= 0x01
        out.append(("damaged", bytes(damaged)))
        await b.send_bytes(bytes(damaged))
        out.append(("b damaged", await b.receive()))
        out.append(("a info", await a.request(Op.INFO)))
        out.append(("a refused write", await a.request(
            Op.WRITE, write_payload(Target.INPUT, PARAMS["act_words"], b"\x00"), program=0xF)))
        out.append(("b info again", await b.request(Op.INFO)))

    simulate(dut, body)
    got = {name: f for name, f in out}
    assert (got["reset"].owner, got["reset"].program) == (0, 0)
    # a request counts once it has been answered: its own answer shows the state before
    assert (got["a claim"].owner, got["a claim"].program) == (0, 0)
    assert (got["b info"].owner, got["b info"].program) == (a_session, 0x04030201)
    assert got["b read"].owner == a_session
    assert got["b write"].owner == a_session
    assert (got["a status"].owner, got["a status"].program) == (b_session, 0xB0B)
    assert got["a run"].op == NAK  # no layer table: refused, but a RUN all the same
    assert (got["b status"].owner, got["b status"].program) == (a_session, 0xA)
    nak, damaged = got["b damaged"], got["damaged"]
    assert nak.op == NAK and nak.payload == bytes([Op.WRITE, ErrorCode.BAD_CRC])
    assert (nak.session, nak.check) == (b_session, int.from_bytes(damaged[-2:], "little"))
    assert (got["a info"].owner, got["a info"].program) == (a_session, 0xA)
    refused = got["a refused write"]
    assert refused.op == NAK and refused.payload == bytes([Op.WRITE, ErrorCode.BAD_ADDRESS])
    assert (got["b info again"].owner, got["b info again"].program) == (a_session, 0xF)


@pytest.mark.parametrize("readback, ram_output, lanes, rows", [
    ("all", "direct", 3, 2), ("pool", "direct", 3, 2), ("all", "registered", 3, 2),
    # words of several groups of bytes (AcceleratorCore.GROUP_BYTES), the last one short:
    # 11-byte weight words (8 + 3), 17-byte pool words (8 + 8 + 1)
    ("all", "registered", 17, 3)])
def test_read_reads_every_memory(readback, ram_output, lanes, rows):
    """READ's memory byte selects the memory: what was written to each reads back (a bias
    entry's top six bits are not stored and read as 0); a device built with readback="pool"
    reads only the pool, and says so in INFO. With registered RAM output every memory's word
    is registered before its byte is chosen, in two registered steps (host_read_latency)."""
    p = AcceleratorParams(lanes, rows, **PARAMS, readback=readback, ram_output=ram_output)
    dut = LinkedAccelerator(p, timeout_cycles=5000)
    rng = np.random.default_rng(5)
    sizes = {Target.WEIGHTS: (p.beat_bytes, p.weight_words),
             Target.BIAS: (BIAS_STORE_BYTES, p.bias_depth),
             Target.LAYER: (TABLE_WORD_BYTES, p.table_words), Target.INPUT: (p.lanes, p.act_words)}
    data = {t: rng.integers(0, 256, size * depth, dtype=np.uint8).tobytes()
            for t, (size, depth) in sizes.items()}
    out = {}

    async def body(ctx):
        host = Host(dut, ctx, rng)
        out["info"] = DeviceInfo.from_bytes((await host.request(Op.INFO)).payload)
        for t, (size, _) in sizes.items():
            await host.write(t, data[t], size)
        for t, (size, depth) in sizes.items():
            first = depth // 3  # from a word in the middle, across word boundaries
            count = min(size * (depth - first), MAX_PAYLOAD // size * size)
            out[t] = (first * size, await host.request(Op.READ, read_payload(t, first, count)))

    simulate(dut, body)
    assert out.pop("info").readable == (0b1111 if readback == "all" else 0b1000)
    for t, (start, f) in out.items():
        if readback == "pool" and t != Target.INPUT:
            assert f.op == NAK and f.payload == bytes([Op.READ, ErrorCode.BAD_ARGUMENT])
            continue
        expected = bytearray(data[t][start : start + len(f.payload)])
        if t == Target.BIAS:
            for i in range(BIAS_STORE_BYTES - 1, len(expected), BIAS_STORE_BYTES):
                expected[i] &= (1 << (BIAS_STORE_WIDTH - 32)) - 1
        assert f.op == Op.READ | ACK and f.payload == bytes(expected), t
