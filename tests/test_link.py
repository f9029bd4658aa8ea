"""trine.hw.crc and trine.hw.link under Amaranth's simulator, checked against
trine.contract.protocol.

The receiver is checked three ways: directed cases with explicitly expected events; a seeded
random mix compared exactly with :class:`ReceiverModel` (the documented no-re-scan hunting) and
with :class:`trine.contract.protocol.FrameDecoder`; and end to end behind a bit-level UART.
"""

import random
import struct

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from trine.contract.protocol import (
    BITS_PER_BYTE,
    FRAME_TIMEOUT_BYTES,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    SYNC,
    ErrorCode,
    Frame,
    FrameDecoder,
    crc8,
    crc16,
    encode_frame,
    frame_timeout_cycles,
)
from trine.hw.crc import FRAME_CRC, HEADER_CRC, ByteCRC
from trine.hw.link import FrameReceiver, FrameTransmitter
from trine.hw.uart import UARTRx, UARTTx
from trine.sim.testbench import CLOCK_PERIOD, StreamSink, StreamSource, simulate

CLK = CLOCK_PERIOD
TIMEOUT = 120  # cycles; the stream-level tests leave at most 20 cycles between bytes


# -- CRC ----------------------------------------------------------------------------------------


def test_crc_algorithms_are_the_protocol_ones():
    rng = random.Random(0)
    for n in [0, 1, 2, 5, 17, 300]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert HEADER_CRC(8).compute(data) == crc8(data)
        assert FRAME_CRC(8).compute(data) == crc16(data)


@pytest.mark.parametrize("bits_per_cycle", [1, 2, 4, 8])
@pytest.mark.parametrize("algorithm, reference", [(HEADER_CRC, crc8), (FRAME_CRC, crc16)])
def test_byte_crc_matches_protocol(algorithm, reference, bits_per_cycle):
    rng = random.Random(bits_per_cycle)
    messages = [b"", b"\x00", b"\xff", b"123456789"]
    messages += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))) for _ in range(12)]
    dut = ByteCRC(algorithm, bits_per_cycle=bits_per_cycle)
    results = []

    async def bench(ctx):
        for message in messages:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for byte in message:
                if rng.random() < 0.3:
                    await ctx.tick().repeat(rng.randrange(1, 4))
                while ctx.get(dut.busy):
                    await ctx.tick()
                ctx.set(dut.data, byte)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
            while ctx.get(dut.busy):
                await ctx.tick()
            results.append(ctx.get(dut.crc))

    simulate(dut, bench)
    assert results == [reference(m) for m in messages]


def test_byte_crc_validation():
    with pytest.raises(ValueError, match=r"^bits_per_cycle must be 1, 2, 4 or 8, not 3$"):
        ByteCRC(HEADER_CRC, bits_per_cycle=3)
    with pytest.raises(TypeError, match=r"^bits_per_cycle must be an integer, not 1.0$"):
        ByteCRC(HEADER_CRC, bits_per_cycle=1.0)
    with pytest.raises(TypeError, match=r"^algorithm must be an amaranth.lib.crc.Algorithm"):
        ByteCRC(0x07)
    from amaranth.lib.crc import catalog

    with pytest.raises(ValueError, match=r"^algorithm must be unreflected without an output XOR"):
        ByteCRC(catalog.CRC16_KERMIT)


# -- construction -------------------------------------------------------------------------------


def test_receiver_validation():
    with pytest.raises(ValueError, match=r"^Maximum payload must be in \[1, 1024\], not 0$"):
        FrameReceiver(0, timeout_cycles=100)
    with pytest.raises(ValueError, match=r"^Maximum payload must be in \[1, 1024\], not 1025$"):
        FrameReceiver(MAX_PAYLOAD + 1, timeout_cycles=100)
    with pytest.raises(
        ValueError,
        match=r"^FrameReceiver needs exactly one of divisor \(the "
        r"UART's clock cycles per bit\) and timeout_cycles, "
        r"not divisor=None and timeout_cycles=None$",
    ):
        FrameReceiver(16)
    with pytest.raises(ValueError, match="not divisor=4 and timeout_cycles=100$"):
        FrameReceiver(16, divisor=4, timeout_cycles=100)
    with pytest.raises(ValueError, match=r"^Timeout must be >= 1, not 0$"):
        FrameReceiver(16, timeout_cycles=0)
    with pytest.raises(ValueError, match=r"^UART divisor \(clock cycles per bit\) must be >= 4"):
        FrameReceiver(16, divisor=2)
    with pytest.raises(ValueError, match=r"^bits_per_cycle must be 1, 2, 4 or 8, not 5$"):
        FrameReceiver(16, divisor=4, crc_bits_per_cycle=5)
    with pytest.raises(ValueError, match=r"^bits_per_cycle must be 1, 2, 4 or 8, not 0$"):
        FrameTransmitter(crc_bits_per_cycle=0)


def test_receiver_default_timeout():
    assert frame_timeout_cycles(4) == FRAME_TIMEOUT_BYTES * BITS_PER_BYTE * 4
    assert FrameReceiver(divisor=6).timeout_cycles == FRAME_TIMEOUT_BYTES * BITS_PER_BYTE * 6
    assert FrameReceiver(8, timeout_cycles=77).timeout_cycles == 77


# -- the receiver's reference: FrameDecoder without re-scanning ---------------------------------


class ReceiverModel:
    """What :class:`trine.hw.link.FrameReceiver` does with a byte sequence (stop-and-wait: no byte
    arrives while a frame is pending). Events are ``(op, seq, length, error, payload)``, with
    ``payload`` None for a bad CRC."""

    def __init__(self, max_payload):
        self.max_payload = max_payload
        self.buf = None  # None: hunting
        self.header_errors = 0
        self.timeouts = 0

    def feed(self, byte):
        if self.buf is None:
            if byte == SYNC:
                self.buf = bytearray([byte])
            return None
        buf = self.buf
        buf.append(byte)
        if len(buf) == HEADER_SIZE:
            length = HEADER.unpack_from(buf, 1)[-1]
            if crc8(bytes(buf[1:-1])) != buf[-1] or length > self.max_payload:
                self.header_errors += 1
                self.buf = None
            return None
        if len(buf) < HEADER_SIZE:
            return None
        op, seq, *_, length = HEADER.unpack_from(buf, 1)
        if len(buf) < HEADER_SIZE + length + 2:
            return None
        self.buf = None
        (crc,) = struct.unpack_from("<H", buf, HEADER_SIZE + length)
        if crc == crc16(bytes(buf[1 : HEADER_SIZE + length])):
            return (op, seq, length, 0, bytes(buf[HEADER_SIZE : HEADER_SIZE + length]))
        return (op, seq, length, ErrorCode.BAD_CRC, None)

    def silence(self):
        if self.buf is not None:
            self.timeouts += 1
            self.buf = None


def event_of(frame: Frame):
    return (frame.op, frame.seq, len(frame.payload), 0, frame.payload)


# -- receiver harness ---------------------------------------------------------------------------


async def ticks(ctx, n):
    if n:
        await ctx.tick().repeat(n)


async def wait_for(ctx, expr, limit, what):
    for _ in range(limit):
        if ctx.get(expr):
            return
        await ctx.tick()
    raise AssertionError(f"timed out waiting for {what}")


def make_frame_monitor(dut, events, rng, *, min_wait=0, max_wait=6):
    """Background testbench: take each o_frame event after a random delay, reading the
    payload of good frames through the read port in random order."""

    async def monitor(ctx):
        while True:
            while not ctx.get(dut.o_frame.valid):  # not `until`: this testbench is background
                await ctx.tick()
            await ticks(ctx, rng.randrange(min_wait, max_wait + 1))
            head = ctx.get(dut.o_frame.payload)
            payload = None
            if head.error == 0:
                order = list(range(head.length))
                rng.shuffle(order)
                payload = bytearray(head.length)
                for a in order:
                    ctx.set(dut.payload.addr, a)
                    await ctx.tick()
                    payload[a] = ctx.get(dut.payload.data)
                payload = bytes(payload)
            assert ctx.get(dut.o_frame.valid), "o_frame.valid must hold until done"
            ctx.set(dut.o_frame.ready, 1)
            await ctx.tick()
            ctx.set(dut.o_frame.ready, 0)
            events.append((head.op, head.seq, head.length, head.error, payload))

    return monitor


def run_receiver(dut, script, rng, *, model=None, gap=0.3, monitor_wait=6):
    """Feed ``script`` (items: bytes, or the string "silence") to ``dut.i_stream`` with random
    idle gaps (probability ``gap`` per cycle). With ``model``, each byte after which the model
    expects an event is followed by a wait until the event is taken (stop-and-wait), so
    gateware and model stay in step. Returns the events and the counters."""
    events = []
    result = {}
    source = StreamSource(dut.i_stream, rng=rng, idle=gap)

    async def driver(ctx):
        for item in script:
            if item == "silence":
                await ctx.tick().repeat(dut.timeout_cycles + 5)
                if model:
                    model.silence()
                continue
            segment = []
            for byte in item:
                segment.append(byte)
                if model and model.feed(byte) is not None:
                    await source.send(ctx, segment)
                    segment = []
                    await wait_for(ctx, dut.o_frame.valid, 50, "a frame event")
                    await wait_for(ctx, ~dut.o_frame.valid, 3000, "the event to be taken")
            await source.send(ctx, segment)
        await ctx.tick().repeat(20)
        await wait_for(ctx, ~dut.o_frame.valid, 3000, "the last event to be taken")
        for name in ("header_errors", "timeouts"):
            result[name] = ctx.get(getattr(dut, name))

    monitor = make_frame_monitor(dut, events, rng, max_wait=monitor_wait)
    simulate(dut, driver, background=[monitor])
    assert gap == 0 or source.idle_cycles > 0
    return events, result


def flip(frame: bytes, index: int, bit: int) -> bytes:
    out = bytearray(frame)
    out[index] ^= 1 << bit
    return bytes(out)


# -- receiver: directed -------------------------------------------------------------------------


def test_receiver_good_frames_with_garbage_between():
    rng = random.Random(10)
    max_payload = 40
    dut = FrameReceiver(max_payload, timeout_cycles=TIMEOUT, counter_width=16)
    payloads = [b"", b"\x01", bytes([SYNC] * 7), bytes(range(max_payload)), b"\xa5\x00\x00\x00"]
    frames = [Frame(0x01 + i, 0xF0 + i, p) for i, p in enumerate(payloads)]
    frames.append(Frame(SYNC, SYNC, bytes([SYNC, 0x07])))  # SYNC values inside the header
    script = [b"\x00\x13\x37"]
    for f in frames:
        script += [
            encode_frame(f.op, f.seq, f.payload),
            bytes(rng.randrange(0xA6, 256) for _ in range(3)),
        ]
    events, counters = run_receiver(dut, script, rng, model=ReceiverModel(max_payload))
    assert events == [event_of(f) for f in frames]
    assert counters == {"header_errors": 0, "timeouts": 0}


def test_receiver_rejects_every_corrupted_header_byte():
    """A flipped bit in any of op, seq, length or the check byte makes the header invalid: no
    event, a header error, and the following frame is received."""
    rng = random.Random(11)
    dut = FrameReceiver(32, timeout_cycles=TIMEOUT)
    good = encode_frame(0x05, 0x42, b"abc")
    script = []
    for index in range(1, HEADER_SIZE):
        script += [flip(encode_frame(0x02, index, b"xyz"), index, rng.randrange(8)), good]
    events, counters = run_receiver(dut, script, rng, model=ReceiverModel(32))
    assert events == [(0x05, 0x42, 3, 0, b"abc")] * (HEADER_SIZE - 1)
    assert counters["header_errors"] == HEADER_SIZE - 1


def test_receiver_rejects_length_above_max_payload():
    """A header with a correct CRC-8 but a length above max_payload is a bad header."""
    rng = random.Random(12)
    dut = FrameReceiver(8, timeout_cycles=TIMEOUT)
    too_long = encode_frame(0x02, 0x01, bytes(9))
    script = [
        too_long[:HEADER_SIZE],
        b"\x00" * 3,
        "silence",
        too_long,
        "silence",
        encode_frame(0x02, 0x02, bytes(8)),
    ]
    events, counters = run_receiver(dut, script, rng, model=ReceiverModel(8))
    assert events == [(0x02, 0x02, 8, 0, bytes(8))]
    assert counters["header_errors"] == 2 and counters["timeouts"] == 0


def test_receiver_bad_crc_event_carries_op_and_seq():
    rng = random.Random(13)
    dut = FrameReceiver(16, timeout_cycles=TIMEOUT)
    bad_payload = flip(encode_frame(0x03, 0x77, b"hello"), HEADER_SIZE + 2, 5)
    bad_crc_low = flip(encode_frame(0x04, 0x78, b"hello"), HEADER_SIZE + 5, 0)
    bad_crc_high = flip(encode_frame(0x06, 0x79, b""), HEADER_SIZE + 1, 7)
    script = [bad_payload, bad_crc_low, bad_crc_high, encode_frame(0x07, 0x80, b"ok")]
    events, _ = run_receiver(dut, script, rng, model=ReceiverModel(16))
    assert events == [
        (0x03, 0x77, 5, ErrorCode.BAD_CRC, None),
        (0x04, 0x78, 5, ErrorCode.BAD_CRC, None),
        (0x06, 0x79, 0, ErrorCode.BAD_CRC, None),
        (0x07, 0x80, 2, 0, b"ok"),
    ]


def test_receiver_times_out_truncated_frames_at_every_position():
    rng = random.Random(14)
    dut = FrameReceiver(16, timeout_cycles=TIMEOUT, counter_width=16)
    frame = encode_frame(0x02, 0x10, b"\xa5\x5a\xa5")
    good = encode_frame(0x08, 0x11, b"after")
    script = []
    for cut in range(1, len(frame)):
        script += [frame[:cut], "silence", good]
    events, counters = run_receiver(dut, script, rng, model=ReceiverModel(16))
    assert events == [(0x08, 0x11, 5, 0, b"after")] * (len(frame) - 1)
    assert counters == {"header_errors": 0, "timeouts": len(frame) - 1}


def test_receiver_gaps_shorter_than_timeout_do_not_time_out():
    rng = random.Random(15)
    dut = FrameReceiver(16, timeout_cycles=TIMEOUT)
    frame = encode_frame(0x02, 0x10, b"slow bytes")
    events = []

    async def driver(ctx):
        for byte in frame:
            ctx.set(dut.i_stream.valid, 0)
            await ctx.tick().repeat(TIMEOUT - 2)
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)
        await wait_for(ctx, dut.o_frame.valid, 20, "the frame")
        await wait_for(ctx, ~dut.o_frame.valid, 100, "the frame to be taken")
        assert ctx.get(dut.timeouts) == 0

    simulate(dut, driver, background=[make_frame_monitor(dut, events, rng)])
    assert events == [(0x02, 0x10, 10, 0, b"slow bytes")]


@pytest.mark.parametrize("gap, times_out", [(TIMEOUT - 1, False), (TIMEOUT, True)])
def test_receiver_timeout_is_exactly_timeout_cycles_without_a_byte(gap, times_out):
    rng = random.Random(16)
    dut = FrameReceiver(16, timeout_cycles=TIMEOUT)
    frame = encode_frame(0x02, 0x10, b"ab")
    events, seen = [], {}

    async def driver(ctx):
        for byte in frame:
            ctx.set(dut.i_stream.valid, 0)
            await ctx.tick().repeat(gap)
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)
        await ctx.tick().repeat(3 * TIMEOUT)
        seen["timeouts"] = ctx.get(dut.timeouts)

    simulate(dut, driver, background=[make_frame_monitor(dut, events, rng)])
    if times_out:  # every byte after the first comes too late (the SYNC byte starts again)
        assert (seen["timeouts"], events) == (1, [])
    else:
        assert (seen["timeouts"], events) == (0, [(0x02, 0x10, 2, 0, b"ab")])


def test_receiver_holds_bytes_back_while_a_frame_is_pending():
    """While a frame waits for the consumer's done strobe the receiver takes no byte
    (``i_stream.ready`` low): the next frame, sent back to back, waits in the source and is
    received whole after the strobe; the pending payload is not touched by it."""
    rng = random.Random(16)
    dut = FrameReceiver(16, timeout_cycles=TIMEOUT)
    first = encode_frame(0x02, 0x01, b"keep me")
    second = encode_frame(0x02, 0x02, b"XXXXXXX")
    events, held = [], []

    source = StreamSource(dut.i_stream)  # back to back

    async def driver(ctx):
        await source.send(ctx, first + second + encode_frame(0x03, 0x03, b"next"))
        await ctx.tick().repeat(5)
        await wait_for(ctx, ~dut.o_frame.valid, 3000, "the frame to be taken")

    async def watch(ctx):
        async for _, _, valid, ready in ctx.tick().sample(dut.o_frame.valid,
                                                          dut.i_stream.ready):
            if valid:
                held.append(ready)

    # The consumer waits longer than the second frame takes to send before it reads.
    monitor = make_frame_monitor(dut, events, rng, min_wait=len(second) + 5,
                                 max_wait=len(second) + 9)
    simulate(dut, driver, background=[monitor, watch])
    assert events == [(0x02, 0x01, 7, 0, b"keep me"), (0x02, 0x02, 7, 0, b"XXXXXXX"),
                      (0x03, 0x03, 4, 0, b"next")]
    assert held and not any(held)


def test_receiver_max_payload_frames_full_size():
    rng = random.Random(17)
    dut = FrameReceiver(timeout_cycles=TIMEOUT)  # MAX_PAYLOAD bytes of memory
    big = bytes(rng.randrange(256) for _ in range(MAX_PAYLOAD))
    script = [
        encode_frame(0x02, 0x01, big),
        encode_frame(0x01, 0x02, b""),
        encode_frame(0x02, 0x03, big[::-1]),
    ]
    events, counters = run_receiver(dut, script, rng, model=ReceiverModel(MAX_PAYLOAD), gap=0.02)
    assert events == [
        (0x02, 0x01, MAX_PAYLOAD, 0, big),
        (0x01, 0x02, 0, 0, b""),
        (0x02, 0x03, MAX_PAYLOAD, 0, big[::-1]),
    ]
    assert counters["header_errors"] == 0


def test_receiver_false_sync_difference_from_frame_decoder():
    """The documented difference: a real frame starting within HEADER_SIZE - 1 bytes of a false
    SYNC is missed by the gateware (no re-scan) but found by FrameDecoder; with that many bytes
    or more in between, both find it."""
    rng = random.Random(18)
    frame = encode_frame(0x02, 0x33, b"data")
    short = bytes(range(1, HEADER_SIZE - 1))
    for garbage, gateware_sees_it in [
        (b"", False),
        (short, False),
        (short + b"\x7f", True),
    ]:
        stream = bytes([SYNC]) + garbage + frame
        decoder = FrameDecoder()
        assert decoder.feed(stream) == [Frame(0x02, 0x33, b"data")]
        dut = FrameReceiver(16, timeout_cycles=TIMEOUT)
        events, counters = run_receiver(dut, [stream, "silence"], rng, model=ReceiverModel(16))
        assert events == ([(0x02, 0x33, 4, 0, b"data")] if gateware_sees_it else [])
        assert counters["header_errors"] >= 1


# -- receiver: seeded random mix against the model and FrameDecoder -----------------------------


def _no_sync(rng, n):
    return bytes(rng.choice([b for b in range(256) if b != SYNC]) for _ in range(n))


def _random_payload(rng, max_payload):
    n = rng.choice([0, 1, max_payload, rng.randrange(max_payload + 1)])
    return bytes(rng.choice([SYNC, rng.randrange(256)]) for _ in range(n))


def make_mixed_script(rng, max_payload, items):
    """A random byte script plus what a re-scanning decoder must find: the intended good frames
    and BAD_CRC errors. Bytes that the generator means to be rejected contain no SYNC after
    their first byte, so that no chance header appears in them."""
    script, good, bad = [], [], []

    def clean_frame(op_seq_payload_ok):
        while True:
            op, seq = rng.randrange(256), rng.randrange(256)
            payload = _random_payload(rng, max_payload)
            raw = encode_frame(op, seq, payload)
            if op_seq_payload_ok or SYNC not in raw[1:]:
                return op, seq, payload, raw

    for _ in range(items):
        kind = rng.choice(
            [
                "good",
                "good",
                "good",
                "bad_payload",
                "bad_crc",
                "bad_header",
                "too_long",
                "truncated",
                "garbage",
                "false_sync",
                "silence",
            ]
        )
        if kind == "good":
            op, seq, payload, raw = clean_frame(True)
            script.append(raw)
            good.append(Frame(op, seq, payload))
        elif kind in ("bad_payload", "bad_crc"):
            op, seq, payload, raw = clean_frame(True)
            if kind == "bad_payload" and payload:
                raw = flip(raw, HEADER_SIZE + rng.randrange(len(payload)), rng.randrange(8))
            else:
                raw = flip(raw, len(raw) - 1 - rng.randrange(2), rng.randrange(8))
            script.append(raw)
            bad.append((ErrorCode.BAD_CRC, op, seq))
        elif kind == "bad_header":
            while True:
                *_, raw = clean_frame(False)
                raw = flip(raw, rng.randrange(1, HEADER_SIZE), rng.randrange(8))
                if SYNC not in raw[1:]:
                    break
            script.append(raw)
        elif kind == "too_long":
            while True:
                length = rng.randrange(MAX_PAYLOAD + 1, 0x10000)
                header = struct.pack("<BBH", rng.randrange(256), rng.randrange(256), length)
                raw = bytes([SYNC]) + header + bytes([crc8(header)])
                if SYNC not in raw[1:]:
                    break
            script.append(raw)
        elif kind == "truncated":
            *_, raw = clean_frame(True)
            script += [raw[: rng.randrange(1, len(raw))], "silence"]
        elif kind == "garbage":
            script.append(_no_sync(rng, rng.randrange(1, 12)))
        elif kind == "false_sync":
            # Shorter than a header: it swallows the start of whatever comes next, unless
            # padded to five bytes after the SYNC.
            stub = bytes([SYNC]) + _no_sync(rng, rng.randrange(0, 5))
            if rng.random() < 0.5:
                stub += _no_sync(rng, HEADER_SIZE - len(stub))
            script.append(stub)
        else:
            script.append("silence")
    script.append("silence")
    return script, good, bad


def decode_with_frame_decoder(script):
    decoder = FrameDecoder()
    frames = []
    for item in script:
        if item == "silence":
            if decoder.in_frame:
                decoder.reset()
        else:
            frames += decoder.feed(item)
    return frames, decoder.errors


def is_subsequence(small, big):
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


@pytest.mark.parametrize("seed, bits_per_cycle", [(1, 8), (2, 8), (3, 1), (4, 2)])
def test_receiver_random_mix_against_model_and_frame_decoder(seed, bits_per_cycle):
    rng = random.Random(seed)
    max_payload = 24
    script, good, bad = make_mixed_script(rng, max_payload, items=45)

    # The generator's claim, checked on the host decoder: it finds exactly the intended frames.
    decoder_frames, decoder_errors = decode_with_frame_decoder(script)
    assert decoder_frames == good and decoder_errors == bad

    model = ReceiverModel(max_payload)
    dut = FrameReceiver(
        max_payload, timeout_cycles=TIMEOUT, counter_width=16, crc_bits_per_cycle=bits_per_cycle
    )
    events, counters = run_receiver(dut, script, rng, model=model)

    expected = ReceiverModel(max_payload)
    expected_events = []
    for item in script:
        if item == "silence":
            expected.silence()
        else:
            expected_events += [e for e in map(expected.feed, item) if e is not None]
    assert events == expected_events
    assert counters == {
        "header_errors": expected.header_errors,
        "timeouts": expected.timeouts,
    }

    # Never accepts an invalid frame, and agrees with FrameDecoder on what it accepts.
    accepted = [Frame(op, seq, p) for op, seq, _, error, p in events if error == 0]
    naks = [(ErrorCode(error), op, seq) for op, seq, _, error, _ in events if error]
    assert is_subsequence(accepted, good) and is_subsequence(naks, bad)
    # Only frames right behind a short false SYNC may be missed.
    missed = len(good) + len(bad) - len(accepted) - len(naks)
    stubs = sum(1 for i in script if i != "silence" and i[0] == SYNC and len(i) < HEADER_SIZE)
    assert missed <= stubs
    assert len(accepted) >= len(good) - stubs


# -- transmitter --------------------------------------------------------------------------------


def run_transmitter(dut, frames, rng, *, gap=0.3, backpressure=0.4):
    """Send ``frames`` (header, then payload bytes) with idle gaps, take the bytes with
    backpressure; the bytes that came out."""
    headers = StreamSource(dut.i_frame, rng=rng, idle=gap)
    payloads = StreamSource(dut.i_stream, rng=rng, idle=gap)
    sink = StreamSink(dut.o_stream, rng=rng, backpressure=backpressure)
    total = sum(HEADER_SIZE + len(f.payload) + 2 for f in frames)

    async def driver(ctx):
        for frame in frames:
            await headers.send(ctx, [{"op": frame.op, "seq": frame.seq,
                                      "length": len(frame.payload)}])
            await payloads.send(ctx, frame.payload)

    async def drain(ctx):
        await sink.take(ctx, total, timeout=50 * total)
        await ctx.tick().repeat(30)
        assert not ctx.get(dut.o_stream.valid), "more bytes than the frames hold"

    simulate(dut, driver, drain)
    assert headers.idle_cycles + payloads.idle_cycles > 0 and sink.stall_cycles > 0
    return bytes(sink.received)


@pytest.mark.parametrize("bits_per_cycle", [1, 8])
def test_transmitter_frames_decode_exactly(bits_per_cycle):
    rng = random.Random(20 + bits_per_cycle)
    frames = [
        Frame(0x81, 0x00, b""),
        Frame(0xFF, SYNC, bytes([SYNC] * 5)),
        Frame(0x82, 0x01, bytes(rng.randrange(256) for _ in range(300))),
    ]
    frames += [
        Frame(
            rng.randrange(256),
            rng.randrange(256),
            bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))),
        )
        for _ in range(12)
    ]
    out = run_transmitter(FrameTransmitter(crc_bits_per_cycle=bits_per_cycle), frames, rng)
    assert out == b"".join(encode_frame(f.op, f.seq, f.payload) for f in frames)
    decoder = FrameDecoder()
    assert decoder.feed(out) == frames
    assert decoder.errors == [] and decoder.dropped == 0 and not decoder.in_frame


# -- end to end through the UART ----------------------------------------------------------------


def serial_segments(data: bytes, bit_cycles: float, rng, idle_prob=0.2):
    segments = []
    for byte in data:
        if rng.random() < idle_prob:
            segments.append((1, rng.uniform(0.5, 30)))
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        segments += [(bit, bit_cycles) for bit in bits]
    return segments


class ReceivePath(Elaboratable):
    def __init__(self, divisor, max_payload):
        self.uart = UARTRx(divisor)
        self.link = FrameReceiver(max_payload, divisor=divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart, m.submodules.link = self.uart, self.link
        wiring.connect(m, self.uart.o_stream, self.link.i_stream)
        return m


@pytest.mark.parametrize("divisor, mismatch", [(4, 0.01), (5, -0.015)])
def test_end_to_end_serial_pin_to_frames(divisor, mismatch):
    rng = random.Random(30 + divisor)
    top = ReceivePath(divisor, max_payload=32)
    frames = [
        Frame(0x01, 0x10, b""),
        Frame(0x02, 0x11, bytes([SYNC, 0, 0xFF] * 10)),
        Frame(0x05, 0x12, b"input"),
    ]
    stream = b"\x00\xff" + encode_frame(0x01, 0x10) + b"\x13"
    stream += encode_frame(0x02, 0x11, frames[1].payload)
    stream += flip(encode_frame(0x06, 0x99, b"bad"), HEADER_SIZE + 1, 3)
    stream += encode_frame(0x05, 0x12, b"input")
    events = []
    byte_time = BITS_PER_BYTE * divisor

    async def sender(ctx):
        await ctx.delay(0.3 * CLK)
        # Stop-and-wait: one frame at a time, the next one after the device has answered.
        chunks = [stream[: 2 + 8 + 1], stream[11 : 11 + 38], stream[49 : 49 + 11], stream[60:]]
        assert b"".join(chunks) == stream
        for chunk in chunks:
            for level, cycles in serial_segments(chunk, divisor * (1 + mismatch), rng):
                ctx.set(top.uart.rx, level)
                await ctx.delay(cycles * CLK)
            await ctx.delay(3 * byte_time * CLK)
        await ctx.delay(20 * byte_time * CLK)

    simulate(top, sender, background=[make_frame_monitor(top.link, events, rng)])
    assert events == [
        event_of(frames[0]),
        event_of(frames[1]),
        (0x06, 0x99, 3, ErrorCode.BAD_CRC, None),
        event_of(frames[2]),
    ]


class TransmitPath(Elaboratable):
    def __init__(self, divisor):
        self.link = FrameTransmitter()
        self.uart = UARTTx(divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link, m.submodules.uart = self.link, self.uart
        wiring.connect(m, self.link.o_stream, self.uart.i_stream)
        return m


async def read_serial(ctx, pin, divisor, count):
    """Decode ``count`` characters from ``pin``, sampling each bit at its middle."""
    out = bytearray()
    for _ in range(count):
        while ctx.get(pin):
            await ctx.tick()
        await ctx.tick().repeat(divisor // 2)
        bits = [ctx.get(pin)]
        for _ in range(BITS_PER_BYTE - 1):
            await ctx.tick().repeat(divisor)
            bits.append(ctx.get(pin))
        assert bits[0] == 0 and bits[-1] == 1
        out.append(sum(b << i for i, b in enumerate(bits[1:9])))
    return bytes(out)


@pytest.mark.parametrize("divisor", [4, 6])
def test_end_to_end_frames_to_serial_pin(divisor):
    rng = random.Random(40 + divisor)
    top = TransmitPath(divisor)
    frames = [
        Frame(0x86, 0x20, b"\x01\x02\x03"),
        Frame(0xFF, 0x21, bytes([0x02, 0x01])),
        Frame(0x87, 0x22, b""),
    ]
    total = sum(len(f.payload) + HEADER_SIZE + 2 for f in frames)
    received = []
    headers = StreamSource(top.link.i_frame)
    # bytes sometimes faster, sometimes slower than the line: gaps of about a byte time
    payloads = StreamSource(top.link.i_stream, rng=rng, idle=1 - 1 / (BITS_PER_BYTE * divisor))

    async def driver(ctx):
        for frame in frames:
            await headers.send(ctx, [{"op": frame.op, "seq": frame.seq,
                                      "length": len(frame.payload)}])
            await payloads.send(ctx, frame.payload)

    async def decoder(ctx):
        received.append(await read_serial(ctx, top.uart.tx, divisor, total))

    simulate(top, driver, decoder)
    assert payloads.idle_cycles > 0
    decoder = FrameDecoder()
    assert decoder.feed(received[0]) == frames
    assert decoder.errors == [] and decoder.dropped == 0
