"""trine selftest (trine.host.selftest, trine.cli.selftest): it passes a healthy device, names
the memory and the cell of a broken one, and fails the link check through the fault proxy.

The fast tests run it against test_client's FakeDevice (memories that store what is written,
outputs chosen by the test) with faults planted in its memories; the cocotb ones against the
simulated RTL device, directly and through trine.sim.faults.FaultyProxy.
"""

import dataclasses
import json

import pytest
from test_client import (
    INFO,
    FakeDevice,
    Peer,
    connect,
    quick_socket_close,  # noqa: F401 (an autouse fixture)
)

from trine.cli.main import main
from trine.cli.selftest import FAILED_STATUS
from trine.contract.protocol import Op, Target, readable_mask
from trine.host.selftest import builtin_program, run_selftest
from trine.sim.faults import Faults, FaultyProxy


class BrokenDevice(FakeDevice):
    """A FakeDevice whose memory ``target`` mangles what is written: ``fault(memory, start,
    data)`` runs after each WRITE to it."""

    def __init__(self, target=None, fault=None, **kwargs):
        _, x = builtin_program()
        program, _ = builtin_program()
        super().__init__(outputs=program.run_reference(x), **kwargs)
        self.target, self.fault = target, fault

    def _answer(self, f):
        reply = super()._answer(f)
        if f.op == Op.WRITE and self.fault is not None and f.payload[0] == self.target:
            word = int.from_bytes(f.payload[1:5], "little")
            self.fault(self.memory[self.target], word * self.word_size[self.target],
                       f.payload[5:])
        return reply


@pytest.fixture
def peers():
    """``peers(answer)``: a scripted peer of test_client, stopped after the test."""
    started = []

    def start(answer):
        started.append(Peer(answer))
        return started[-1]

    yield start
    for peer in started:
        peer.stop()


def stuck_bit(byte_index, bit):
    def fault(memory, start, data):
        if start <= byte_index < start + len(data):
            memory[byte_index] |= 1 << bit
    return fault


def alias(address_bit, size):
    """Writes also land at the word whose address differs in ``address_bit``."""
    def fault(memory, start, data):
        for i, b in enumerate(data):
            word, lane = divmod(start + i, size)
            other = (word ^ (1 << address_bit)) * size + lane
            if other < len(memory):
                memory[other] = b
    return fault


def selftest(peers, device, **kwargs):
    peer = peers(device.answer)
    with connect(peer) as client:
        return run_selftest(client, peer.url, frames=40, **kwargs)


def verdicts(report):
    return {c.name: c.verdict for c in report.checks}


def test_a_healthy_device_passes_every_check(peers):
    report = selftest(peers, BrokenDevice())
    assert report.passed, report.render()
    assert set(verdicts(report).values()) == {"PASS"}
    assert list(verdicts(report)) == [
        "device", "byte values", "memory weights", "memory biases", "memory layer table",
        "memory activation pool", "known answers", "link"]
    assert report.render().splitlines()[-1].startswith("PASS: 8 checks")
    link = report.checks[-1].figures
    assert link["requests"] == 40 and link["retries"] == 0


@pytest.mark.parametrize("target, fault, where", [
    (Target.BIAS, stuck_bit(5 * 17 + 2, 3), "word 17 byte 2"),
    (Target.INPUT, stuck_bit(4 * 9 + 1, 7), "word 9 byte 1"),
    (Target.WEIGHTS, alias(5, 3), "word "),  # an address line that does nothing
    (Target.LAYER, alias(0, 2), "word "),
])
def test_a_broken_memory_fails_its_check_and_names_the_cell(peers, target, fault, where):
    report = selftest(peers, BrokenDevice(target, fault))
    names = {Target.WEIGHTS: "memory weights", Target.BIAS: "memory biases",
             Target.LAYER: "memory layer table", Target.INPUT: "memory activation pool"}
    failed = {c.name: c for c in report.checks if c.verdict == "FAIL"}
    # that memory's march; the byte values go through the pool, and the known answers
    # through everything (the fake finds its outputs' place in the layer table)
    assert names[target] in failed, report.render()
    assert set(failed) <= {names[target], "byte values", "known answers"}, report.render()
    check = failed[names[target]]
    assert check.detail.startswith(where) and ", read 0x" in check.detail
    assert not report.passed
    last = report.render().splitlines()[-1]
    assert last.startswith("FAIL: ") and names[target] in last


def test_the_bias_bits_that_are_not_stored_are_not_compared(peers):
    # byte 4 of every 5-byte entry keeps only two bits on the device: a fake that keeps
    # none of the other six passes
    def drop_high_bits(memory, start, data):
        for i in range(start, start + len(data)):
            if i % 5 == 4:
                memory[i] &= 0x03
    assert selftest(peers, BrokenDevice(Target.BIAS, drop_high_bits)).passed


def test_memories_the_device_does_not_read_back_are_skipped(peers):
    info = dataclasses.replace(INFO, readable=readable_mask([Target.INPUT]))
    report = selftest(peers, BrokenDevice(info=info))
    assert report.passed
    assert [c.name for c in report.checks if c.skipped] == [
        "memory weights", "memory biases", "memory layer table"]
    assert "covered by the known answers" in report.checks[2].detail


def test_cli_json_and_exit_status(peers, capsys):
    peer = peers(BrokenDevice(Target.BIAS, stuck_bit(3, 0)).answer)
    status = main(["selftest", "--port", peer.url, "--frames", "10", "--quick", "--json"])
    assert status == FAILED_STATUS
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["info"]["lanes"] == INFO.lanes
    assert {c["name"]: c["verdict"] for c in report["checks"]}["memory biases"] == "FAIL"


def test_cli_without_a_device(capsys):
    assert main(["selftest", "--port", "socket://127.0.0.1:1", "--timeout", "0.2"]) == 2
    assert capsys.readouterr().err.startswith("trine: error: cannot open socket://127.0.0.1:1")


# -- the simulated device ----------------------------------------------------------------------

DEVICE = dict(lanes=4, rows=3, weight_words=512, bias_depth=256, act_words=96, table_words=160,
              max_batch=4)


@pytest.mark.cocotb
def test_the_simulated_device_passes(device_server, capsys):
    url = device_server("icarus", "byte", **DEVICE)
    assert main(["selftest", "--port", url, "--frames", "200", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("PASS: 8 checks")
    assert "march over 512 words of 3 bytes" in out  # every memory, whole


@pytest.mark.cocotb
def test_a_noisy_link_fails_the_link_check(device_server, capsys):
    url = device_server("icarus", "byte", **DEVICE)
    port = int(url.rsplit(":", 1)[1])
    # rare enough that retries carry every request, common enough for a few per hundred
    with FaultyProxy(port, Faults(flip=0.0005), seed=3) as proxy:
        status = main(["selftest", "--port", proxy.url, "--quick", "--frames", "100",
                       "--timeout", "10", "--retries", "8", "--json"])
    report = json.loads(capsys.readouterr().out)
    verdict = {c["name"]: c for c in report["checks"]}
    assert status == FAILED_STATUS and not report["passed"]
    assert verdict["link"]["verdict"] == "FAIL" and verdict["link"]["figures"]["retries"] > 0
    # the retries kept every other check right
    assert all(c["verdict"] == "PASS" for name, c in verdict.items() if name != "link")
