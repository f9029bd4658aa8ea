"""trine.hw.executor.CommandExecutor under Amaranth's simulator, against a model of the protocol's
commands: random requests (good, refused, retried), a stand-in core, and backpressure on both
answer streams."""

import struct

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from trine.contract.device_image import BIAS_STORE_BYTES, TABLE_WORD_BYTES
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import (
    ACK,
    MAX_PAYLOAD,
    NAK,
    RUN_ACK,
    STATUS_ACK,
    WRITE_HEADER,
    ErrorCode,
    Op,
    Target,
    run_payload,
    write_payload,
)
from trine.hw.executor import CommandExecutor
from trine.hw.memories import host_read_latency
from trine.sim.testbench import StreamSink, simulate

PARAMS = AcceleratorParams(lanes=3, rows=2, weight_words=9, bias_depth=7, act_words=6,
                           table_words=12, max_batch=2)
INFO = PARAMS.device_info(12_000_000, 3_000_000)


def read_byte(target, addr, lane):
    """What the stand-in core's memories hold."""
    return (addr * 7 + lane * 3 + target * 50 + 1) & 0xFF


class Harness(wiring.Component):
    """The executor with a payload memory the testbench fills, as a receiver's would be."""

    def __init__(self, params=PARAMS):
        self.executor = CommandExecutor(params, INFO)
        self.payload = Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.executor, m.submodules.payload = self.executor, self.payload
        wiring.connect(m, self.executor.payload, self.payload.read_port())
        return m


class Model:
    """What the executor must do with each request: the core writes, whether it runs the core,
    and the answer ``(op, payload)``."""

    SIZES = {Target.WEIGHTS: (PARAMS.beat_bytes, PARAMS.weight_words),
             Target.BIAS: (BIAS_STORE_BYTES, PARAMS.bias_depth),
             Target.LAYER: (TABLE_WORD_BYTES, PARAMS.table_words),
             Target.INPUT: (PARAMS.lanes, PARAMS.act_words)}

    def __init__(self):
        self.cache = None  # (seq, error, cycles) of the last run
        self.runs = 0
        self.core = (0, 0)  # the core's error and cycles

    def nak(self, op, code):
        return [], None, (NAK, bytes([op, code]))

    def request(self, op, seq, payload, crc_error, run_result):
        n = len(payload)
        if crc_error:
            return self.nak(op, ErrorCode.BAD_CRC)
        lengths = {Op.INFO: n == 0, Op.STATUS: n == 0, Op.WRITE: n >= WRITE_HEADER,
                   Op.RUN: n == 3, Op.READ: n == 7}
        if op not in lengths:
            return self.nak(op, ErrorCode.UNKNOWN_OPCODE)
        if not lengths[op]:
            return self.nak(op, ErrorCode.BAD_LENGTH)
        if op == Op.INFO:
            self.cache = None
            return [], None, (Op.INFO | ACK, INFO.to_bytes())
        if op == Op.STATUS:
            return [], None, (Op.STATUS | ACK, STATUS_ACK.pack(0, *self.core, self.runs))
        if op == Op.RUN:
            if self.cache is not None and self.cache[0] == seq:
                run = None  # a retry: answered from the cache
            else:
                run = payload[0], payload[1] | payload[2] << 8
                self.cache = (seq, *run_result)
                self.core = run_result
                self.runs += 1
            _, error, cycles = self.cache
            if error:
                return [], run, (NAK, bytes([op, error]))
            return [], run, (Op.RUN | ACK, RUN_ACK.pack(cycles))
        if op == Op.WRITE:
            self.cache = None
            target, word = payload[0], struct.unpack_from("<I", payload, 1)[0]
            data = payload[WRITE_HEADER:]
            if target > max(Target):
                return self.nak(op, ErrorCode.BAD_ARGUMENT)
            size, depth = self.SIZES[Target(target)]
            if data and word + (len(data) - 1) // size >= depth:
                return self.nak(op, ErrorCode.BAD_ADDRESS)
            writes = [(target, word + i // size, i % size, b) for i, b in enumerate(data)]
            return writes, None, (Op.WRITE | ACK, b"")
        memory, word, count = struct.unpack("<BIH", payload)
        if not INFO.can_read(memory) or count > MAX_PAYLOAD:
            return self.nak(op, ErrorCode.BAD_ARGUMENT)
        size, depth = self.SIZES[Target(memory)]
        if count and word + (count - 1) // size >= depth:
            return self.nak(op, ErrorCode.BAD_ADDRESS)
        data = bytes(read_byte(memory, word + i // size, i % size) for i in range(count))
        return [], None, (Op.READ | ACK, data)


def random_request(rng, seq, last_run_seq):
    kind = rng.choice(["info", "status", "write", "write", "read", "read", "run", "retry",
                       "unknown", "bad_length", "bad_crc"])
    if kind == "retry" and last_run_seq is not None:
        return Op.RUN, last_run_seq, run_payload(1, 1), False
    if kind in ("info", "status"):
        return (Op.INFO if kind == "info" else Op.STATUS), seq, b"", False
    if kind == "write":
        target = int(rng.choice([0, 1, 2, 3, 3, 7]))
        word = int(rng.choice([0, 1, 2, 5, 8, 0xFFFF_FFFF]))
        data = rng.bytes(int(rng.integers(0, 20)))
        return Op.WRITE, seq, write_payload(target, word, data), False
    if kind == "read":
        memory = int(rng.choice([0, 1, 2, 3, 3, 3, 4, 0x13]))
        word = int(rng.choice([0, 1, 3, 5, 100]))
        count = int(rng.choice([0, 1, 4, 9, 12, MAX_PAYLOAD + 1]))
        return Op.READ, seq, struct.pack("<BIH", memory, word, count), False
    if kind in ("run", "retry"):
        return Op.RUN, seq, run_payload(int(rng.integers(1, 3)), int(rng.integers(1, 3))), False
    if kind == "unknown":
        return 0x42, seq, rng.bytes(int(rng.integers(0, 4))), False
    if kind == "bad_length":
        op = int(rng.choice([Op.INFO, Op.STATUS, Op.RUN, Op.READ, Op.WRITE]))
        n = {Op.INFO: 1, Op.STATUS: 2, Op.RUN: 2, Op.READ: 3, Op.WRITE: 4}[op]
        return op, seq, rng.bytes(n), False
    return int(rng.choice([Op.INFO, Op.WRITE, Op.RUN])), seq, rng.bytes(5), True


@pytest.mark.parametrize("seed, ram_output", [(1, "direct"), (2, "direct"), (3, "registered")])
def test_random_requests_match_the_model(seed, ram_output):
    rng = np.random.default_rng(seed)
    # registered RAM output answers a host read later (host_read_latency)
    params = PARAMS.replace(ram_output=ram_output)
    read_latency = host_read_latency(params)
    top = Harness(params)
    dut = top.executor
    model = Model()
    headers = StreamSink(dut.o_frame, rng=rng, backpressure=0.4)
    answer_bytes = StreamSink(dut.o_stream, rng=rng, backpressure=0.4)
    seen = {"writes": [], "runs": [], "answers": [], "expected": []}
    core = {"busy": 0, "result": (0, 0)}

    async def host(ctx):
        last_run_seq = None
        for seq in range(60):
            op, seq, payload, crc_error = random_request(rng, seq % 256, last_run_seq)
            result = (int(rng.choice([0, 0, ErrorCode.ILLEGAL_WEIGHT])),
                      int(rng.integers(1, 1 << 32)))
            core["result"] = result
            expected = model.request(op, seq, payload, crc_error, result)
            seen["expected"].append(expected)
            if op == Op.RUN:
                last_run_seq = seq
            for i, b in enumerate(payload):
                ctx.set(top.payload.data[i], b)
            await ctx.tick().repeat(int(rng.integers(1, 4)))  # idle between requests
            ctx.set(dut.i_frame.payload, {"op": op, "seq": seq, "length": len(payload),
                                          "error": ErrorCode.BAD_CRC if crc_error else 0})
            ctx.set(dut.i_frame.valid, 1)
            header = (await headers.take(ctx, len(headers.received) + 1, timeout=5000))[-1]
            start = len(answer_bytes.received)
            await answer_bytes.take(ctx, start + int(header.length), timeout=5000)
            await ctx.tick().until(dut.i_frame.ready)
            ctx.set(dut.i_frame.valid, 0)
            assert int(header.seq) == seq
            seen["answers"].append((int(header.op), bytes(answer_bytes.received[start:])))

    async def stand_in_core(ctx):
        """Records writes and starts; a run keeps ``busy`` for a few cycles, then reports."""
        port = dut.core
        countdown = 0
        async for _, _, en, target, addr, lane, data, start in ctx.tick().sample(
                port.write.en, port.write.target, port.write.addr, port.write.lane,
                port.write.data, port.run.start):
            if en:
                seen["writes"].append((target, addr, lane, data))
            if start:
                seen["runs"].append((ctx.get(port.run.n_layers), ctx.get(port.run.batch)))
                countdown = int(rng.integers(1, 8))
                ctx.set(port.run.busy, 1)
            elif countdown:
                countdown -= 1
                if not countdown:
                    ctx.set(port.run.busy, 0)
                    ctx.set(port.run.error, core["result"][0])
                    ctx.set(port.run.cycles, core["result"][1])

    async def stand_in_pool(ctx):
        """The core's read port: the byte addressed ``read_latency`` cycles before."""
        port = dut.core.read
        addressed = [(0, 0, 0)] * read_latency
        async for _, _, target, addr, lane in ctx.tick().sample(port.target, port.addr,
                                                               port.lane):
            addressed.append((target, addr, lane))
            ctx.set(port.data, read_byte(*addressed[-read_latency]))
            addressed.pop(0)

    simulate(top, host, background=[stand_in_core, stand_in_pool])
    answers = [answer for _, _, answer in seen["expected"]]
    assert seen["answers"] == answers
    assert seen["writes"] == [w for writes, _, _ in seen["expected"] for w in writes]
    assert seen["runs"] == [run for _, run, _ in seen["expected"] if run is not None]
    # every kind of answer came up, and both streams were held back
    ops = {op for op, _ in answers}
    assert {NAK, Op.INFO | ACK, Op.STATUS | ACK, Op.WRITE | ACK, Op.READ | ACK} <= ops
    assert headers.stall_cycles > 0 and answer_bytes.stall_cycles > 0
    assert any(op == NAK and p[1] == ErrorCode.BAD_ADDRESS for op, p in answers)
