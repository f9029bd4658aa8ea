"""trine.hw.memories.CoreMemories under Amaranth's simulator, against a model of the four
memories (weights, biases, layer table, activation pool): host writes and reads while idle,
the datapath's ports while busy, cycle by cycle."""

import numpy as np
import pytest
from amaranth.hdl import Shape

from trine.contract.device_image import BIAS_STORE_BYTES, BIAS_STORE_WIDTH, TABLE_WORD_BYTES
from trine.contract.params import AcceleratorParams
from trine.contract.protocol import Target
from trine.hw.host_port import HostWriteSignature
from trine.hw.memories import CoreMemories, host_read_latency
from trine.sim.testbench import simulate


class Model:
    """The memories as bytes; host writes land a cycle after they are presented."""

    def __init__(self, p):
        self.p = p
        self.words = {Target.WEIGHTS: (p.beat_bytes, p.weight_words),
                      Target.BIAS: (BIAS_STORE_BYTES, p.bias_depth),
                      Target.LAYER: (TABLE_WORD_BYTES, p.table_words),
                      Target.INPUT: (p.lanes, p.act_words)}
        self.weights = np.zeros((p.weight_words, p.beat_bytes), np.uint8)
        self.biases = np.zeros((p.bias_depth, BIAS_STORE_BYTES), np.uint8)
        self.table = np.zeros((p.table_words, TABLE_WORD_BYTES), np.uint8)
        self.pool = np.zeros((p.act_words, p.lanes), np.uint8)

    def host_write(self, target, addr, lane, data):
        size, depth = self.words[target]
        if lane >= size or addr >= depth:
            return  # dropped
        if target == Target.WEIGHTS:
            self.weights[addr, lane] = data
        elif target == Target.BIAS:
            self.biases[addr, lane] = data
        elif target == Target.LAYER:
            self.table[addr, lane] = data
        else:
            self.pool[addr, lane] = data

    def word(self, rows, addr):
        return int.from_bytes(rows[addr].tobytes(), "little")

    def bias(self, addr):
        value = self.word(self.biases, addr) & ((1 << BIAS_STORE_WIDTH) - 1)
        return value - (1 << BIAS_STORE_WIDTH) if value >> (BIAS_STORE_WIDTH - 1) else value


def random_host_write(rng, p):
    target = Target(int(rng.integers(4)))
    # mostly in range, sometimes past the memory's depth or word
    depth = {Target.WEIGHTS: p.weight_words, Target.BIAS: p.bias_depth,
             Target.LAYER: p.table_words, Target.INPUT: p.act_words}[target]
    addr = int(rng.integers(depth + 2 if rng.random() < 0.1 else depth))
    lane = int(rng.integers(1 << Shape.cast(HostWriteSignature(p).members["lane"].shape).width))
    return target, addr, lane, int(rng.integers(256))


@pytest.mark.parametrize("lanes, rows, ram_output", [(3, 2, "direct"), (8, 5, "direct"),
                                                     (2, 1, "direct"), (3, 2, "registered")])
def test_host_and_datapath_ports_match_the_model(lanes, rows, ram_output):
    p = AcceleratorParams(lanes=lanes, rows=rows, weight_words=12, bias_depth=10, act_words=14,
                          table_words=20, max_batch=2, ram_output=ram_output)
    rng = np.random.default_rng(lanes * 10 + rows)
    dut = CoreMemories(p)
    assert dut.read_latency == (2 if ram_output == "registered" else 1)
    model = Model(p)
    checked = {"read": 0, "table": 0, "weights": 0, "biases": 0, "acts": 0, "ignored": 0}
    # the pool's and the weights' reads (host and datapath): (port, value, name, cycle),
    # seen read_latency - 1 cycles after the others
    pool_reads = []

    async def bench(ctx):
        w, r = dut.write, dut.read
        pending = None  # the host write presented in the previous cycle
        cycle = 0
        for phase in range(6):
            busy = phase % 2 == 1
            ctx.set(dut.busy, busy)
            for step in range(150):
                # inputs of this cycle
                host = random_host_write(rng, p) if rng.random() < 0.7 else None
                ctx.set(w.en, host is not None and step < 148)  # no write just before a swap
                if host is not None:
                    for port, v in zip((w.target, w.addr, w.lane, w.data), host, strict=True):
                        ctx.set(port, v)
                reads = dict(addr=int(rng.integers(p.act_words)), lane=int(rng.integers(lanes)))
                for name, v in reads.items():
                    ctx.set(getattr(r, name), v)
                dp = dict(table=int(rng.integers(p.table_words)),
                          weights=int(rng.integers(p.weight_words)),
                          biases=int(rng.integers(p.bias_depth)),
                          acts=int(rng.integers(p.act_words)))
                for name, v in dp.items():
                    ctx.set(getattr(dut, name).addr, v)
                result = None
                if busy and rng.random() < 0.5:
                    result = (int(rng.integers(p.act_words)), int(rng.integers(lanes)),
                              int(rng.integers(256)))
                    ctx.set(dut.result.word, result[0])
                    ctx.set(dut.result.value, result[2])
                ctx.set(dut.result.lanes, 0 if result is None else 1 << result[1])
                weights_written = pending is not None and pending[0] == Target.WEIGHTS
                await ctx.tick()
                # what was read at that edge, before its writes
                if not busy:
                    pool_reads.append((r.data, model.pool[reads["addr"], reads["lane"]], "read",
                                       cycle))
                else:
                    assert ctx.get(dut.table.data) == model.word(model.table, dp["table"])
                    assert ctx.get(dut.biases.data) == model.bias(dp["biases"])
                    pool_reads.append((dut.acts.data, model.word(model.pool, dp["acts"]), "acts",
                                       cycle))
                    checked["table"] += 1
                    checked["biases"] += 1
                    if not weights_written:
                        pool_reads.append((dut.weights.data,
                                           model.word(model.weights, dp["weights"]), "weights",
                                           cycle))
                # the pool's and the weights' reads: seen read_latency - 1 cycles later
                due = [x for x in pool_reads if x[3] == cycle - dut.read_latency + 1]
                for x in due:
                    port, value, name, _ = x
                    assert ctx.get(port) == value, name
                    checked[name] += 1
                    pool_reads.remove(x)
                # the writes of that edge
                if pending is not None:
                    model.host_write(*pending)
                if result is not None:
                    model.pool[result[0], result[1]] = result[2]
                cycle += 1
                taken = host is not None and step < 148
                pending = host if taken and not busy else None
                checked["ignored"] += taken and busy

    simulate(dut, bench)
    assert all(n > 50 for n in checked.values()), checked


@pytest.mark.parametrize("ram_output, readback, latency", [
    ("direct", "all", 1), ("direct", "pool", 1), ("registered", "pool", 2),
    # the word registered, then the byte chosen within its group, then the group
    ("registered", "all", 4)])
def test_host_read_latency(ram_output, readback, latency):
    params = AcceleratorParams(lanes=3, rows=2, weight_words=12, bias_depth=10, act_words=14,
                               table_words=16, max_batch=2, ram_output=ram_output,
                               readback=readback)
    assert host_read_latency(params) == latency
