"""trine.hw.tags and the tag ports of trine.hw.link under Amaranth's simulator: what an answer's
tag says, byte for byte, after requests that do and do not change the device."""

import random
import struct

from trine.contract.protocol import TAG_SIZE, encode_frame, frame_crc
from trine.hw.link import FrameReceiver, FrameTransmitter
from trine.hw.tags import TagStore
from trine.sim.testbench import StreamSink, StreamSource, simulate


def tag_bytes(session, program, owner, check):
    return struct.pack("<IIIH", session, program, owner, check)


async def write_request(ctx, dut, session, program, check):
    """What the receiver does for one request: its session and program bytes, then its CRC."""
    fields = struct.pack("<II", session, program)
    for index, byte in enumerate(fields):
        ctx.set(dut.rx.field, 1)
        ctx.set(dut.rx.index, index)
        ctx.set(dut.rx.data, byte)
        await ctx.tick()
    ctx.set(dut.rx.field, 0)
    for index, byte in enumerate(check.to_bytes(2, "little")):
        ctx.set(dut.rx.check, 1)
        ctx.set(dut.rx.index, index)
        ctx.set(dut.rx.data, byte)
        await ctx.tick()
    ctx.set(dut.rx.check, 0)


async def read_tag(ctx, dut):
    out = bytearray()
    for index in range(TAG_SIZE):
        ctx.set(dut.tx.index, index)
        await ctx.tick()
        out.append(ctx.get(dut.tx.data))
    return bytes(out)


def test_tag_store_keeps_the_owner_until_a_commit():
    dut = TagStore()
    got = []

    async def bench(ctx):
        requests = [  # session, program, check, commit
            (0x11111111, 0xAAAA0001, 0x1234, True),
            (0x22222222, 0xBBBB0002, 0x5678, False),
            (0x33333333, 0xCCCC0003, 0x9ABC, True),
            (0x44444444, 0xDDDD0004, 0xDEF0, False),
        ]
        for session, program, check, commit in requests:
            await write_request(ctx, dut, session, program, check)
            got.append(await read_tag(ctx, dut))
            if commit:
                ctx.set(dut.commit, 1)
                await ctx.tick()
                ctx.set(dut.commit, 0)

    simulate(dut, bench)
    assert got == [
        tag_bytes(0x11111111, 0, 0, 0x1234),  # nothing committed since reset
        tag_bytes(0x22222222, 0xAAAA0001, 0x11111111, 0x5678),
        tag_bytes(0x33333333, 0xAAAA0001, 0x11111111, 0x9ABC),  # not committed: B's fields gone
        tag_bytes(0x44444444, 0xCCCC0003, 0x33333333, 0xDEF0),
    ]


def test_receiver_writes_each_frames_fields_and_crc():
    """The receiver's tag port carries the session and program bytes and the CRC-16 bytes of
    every frame, in order, whatever else is in its tag; the transmitter emits what it reads."""
    rng = random.Random(7)
    dut = FrameReceiver(32, timeout_cycles=200)
    frames = []
    for i in range(6):
        session, program, owner = (rng.getrandbits(32) for _ in range(3))
        frames.append(encode_frame(i + 1, 0x40 + i, bytes(rng.randrange(256) for _ in range(i * 5)),
                                   session=session, program=program, owner=owner,
                                   check=rng.getrandbits(16)))
    writes = []

    async def driver(ctx):
        source = StreamSource(dut.i_stream, rng=rng, idle=0.3)
        for frame in frames:
            await source.send(ctx, frame)
            while not ctx.get(dut.o_frame.valid):
                await ctx.tick()
            ctx.set(dut.o_frame.ready, 1)
            await ctx.tick()
            ctx.set(dut.o_frame.ready, 0)

    async def monitor(ctx):
        async for _, _, field, check, index, data in ctx.tick().sample(
                dut.tag.field, dut.tag.check, dut.tag.index, dut.tag.data):
            if field or check:
                writes.append(("field" if field else "check", index, data))

    simulate(dut, driver, background=[monitor])
    expected = []
    for frame in frames:
        expected += [("field", k, b) for k, b in enumerate(frame[3:11])]
        expected += [("check", k, b) for k, b in enumerate(frame[-2:])]
    assert writes == expected


def test_transmitter_emits_the_tag_it_reads():
    rng = random.Random(8)
    dut = FrameTransmitter()
    tag = bytes(rng.randrange(256) for _ in range(TAG_SIZE))
    out = []

    async def memory(ctx):  # a read port: the byte at the index of the cycle before
        async for _, _, index in ctx.tick().sample(dut.tag.index):
            ctx.set(dut.tag.data, tag[index] if index < TAG_SIZE else 0)

    async def send(ctx):
        source = StreamSource(dut.i_stream, rng=rng, idle=0.2)
        ctx.set(dut.i_frame.payload.op, 0x83)
        ctx.set(dut.i_frame.payload.seq, 0x21)
        ctx.set(dut.i_frame.payload.length, 3)
        ctx.set(dut.i_frame.valid, 1)
        await ctx.tick().until(dut.i_frame.ready)
        ctx.set(dut.i_frame.valid, 0)
        await source.send(ctx, b"abc")

    async def take(ctx):
        sink = StreamSink(dut.o_stream, rng=rng, backpressure=0.3)
        out.extend(await sink.take(ctx, 20 + 3 + 2, timeout=2000))

    simulate(dut, send, take, background=[memory])
    session, program, owner, check = struct.unpack("<IIIH", tag)
    expected = encode_frame(0x83, 0x21, b"abc", session=session, program=program, owner=owner,
                            check=check)
    assert bytes(out) == expected and frame_crc(expected) == frame_crc(bytes(out))
