"""The link never returns someone else's answer: the real Client, over socket://, to the simulated
RTL device, through proxies that replay an earlier session's answers, forge answers with valid
CRCs, or put two clients on one device (trine.sim.faults).

Every output a client returns is compared with Program.run_reference by np.array_equal; every
other call must raise a DeviceError that says what happened.
"""

import dataclasses
import random
import threading

import numpy as np
import pytest
from conftest import random_layers

from trine.contract.protocol import ACK, Op
from trine.host.client import Client, DeviceChangedError
from trine.host.program import Program
from trine.host.transport import DeviceError
from trine.sim.faults import ForgingProxy, ReplayingProxy, SharedLine

DEVICE = dict(lanes=4, rows=3, weight_words=512, bias_depth=256, act_words=96, table_words=160,
              max_batch=4)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def program_of(seed: int) -> Program:
    rng = np.random.default_rng(seed)
    return Program(random_layers(rng, [12, 9, 5], bias=300, shifts=5))


def inputs(rng, program, n=3):
    return rng.integers(-128, 128, (n, program.input_width)).astype(np.int8)


@pytest.fixture(scope="module")
def device(device_server):
    return device_server("icarus", "byte", **DEVICE)


@pytest.mark.cocotb
@pytest.mark.parametrize("substitute", [True, False], ids=["substituted", "raced"])
def test_answers_of_an_earlier_session_are_refused(device, substitute):
    """A proxy records the first session's READ answers and replays them, CRCs valid and seqs
    equal, to a second session that sends the same requests but other inputs. Substituted for
    the real answers, they are dropped: the client sends the run again (new seqs) and gets the
    real answers, or fails with a clear error, never the old outputs; sent before them, they
    are dropped and the real ones returned."""
    program = program_of(1)
    rng = np.random.default_rng(2)
    with ReplayingProxy(port_of(device), substitute=substitute) as proxy:
        with Client(proxy.url, timeout=30) as first:
            first.load(program)
            old = [first.infer_batch(inputs(rng, program))[0] for _ in range(3)]
        assert proxy.recorded
        with Client(proxy.url, timeout=0.5 if substitute else 30, retries=1) as second:
            second.load(program)
            for i in range(3):
                x = inputs(rng, program)
                if substitute:
                    try:
                        y, _ = second.infer_batch(x)
                    except DeviceError as e:
                        assert "with its seq but another session or request" in str(e)
                    else:
                        assert np.array_equal(y, program.run_reference(x))
                        assert not np.array_equal(y, old[i])
                else:
                    y, _ = second.infer_batch(x)
                    assert np.array_equal(y, program.run_reference(x))
                    assert not np.array_equal(y, old[i])
            stats = second.stats
    assert proxy.replayed >= 3
    assert stats.foreign_frames >= 3


def forge_read(change):
    """A forger of READ answers: ``change(frame)`` gives the replacement (its CRC recomputed)."""
    return lambda f: change(f) if f.op == Op.READ | ACK else None


def garbled(payload: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in payload)


FORGERIES = {
    # a forger of protocol v2: right seq and op, valid CRC, no tag
    "untagged": forge_read(lambda f: dataclasses.replace(
        f, payload=garbled(f.payload), session=0, program=0, owner=0, check=0)),
    # the right session, but bound to another request (another READ, another seq's)
    "other request": forge_read(lambda f: dataclasses.replace(
        f, payload=garbled(f.payload), check=f.check ^ 0x0100)),
    # the right session and request, but another owner: someone else changed the device
    "other owner": forge_read(lambda f: dataclasses.replace(
        f, payload=garbled(f.payload), owner=f.owner ^ 1)),
    "other program": forge_read(lambda f: dataclasses.replace(
        f, payload=garbled(f.payload), program=f.program ^ 0x8000_0000)),
}


@pytest.mark.cocotb
@pytest.mark.parametrize("kind", list(FORGERIES))
def test_forged_answers_are_refused(device, kind):
    program = program_of(3)
    rng = np.random.default_rng(4)
    with ForgingProxy(port_of(device), FORGERIES[kind]) as proxy:
        with Client(proxy.url, timeout=0.5, retries=1) as client:
            client.load(program)
            x = inputs(rng, program)
            if kind in ("other owner", "other program"):
                with pytest.raises(DeviceChangedError, match="^another host changed the device"):
                    client.infer_batch(x)
            else:
                with pytest.raises(DeviceError, match="another session or request"):
                    client.infer_batch(x)
    assert proxy.forged >= 1


@pytest.mark.cocotb
def test_a_second_host_on_the_line_is_noticed(device):
    """The issue's case: two clients on one device line, each with its own program. A request
    that changes the device (a WRITE or a RUN, even one whose answer then tells its client of
    the other) makes its client the owner; the other's next request fails with
    DeviceChangedError instead of returning the other program's outputs, and a reload makes
    it right again."""
    a_program, b_program = program_of(5), program_of(6)
    rng = np.random.default_rng(7)
    with SharedLine(port_of(device)) as line:
        with Client(line.url, timeout=30) as a, Client(line.url, timeout=30) as b:
            a.load(a_program)
            x = inputs(rng, a_program)
            assert np.array_equal(a.infer_batch(x)[0], a_program.run_reference(x))
            b.load(b_program)
            with pytest.raises(DeviceChangedError, match=f"not by this client's "
                                                         f"0x{a.session:08x}"):
                a.infer_batch(x)  # its input WRITE landed, then its answer said B's device
            x = inputs(rng, b_program)
            with pytest.raises(DeviceChangedError):
                b.infer_batch(x)  # so B is told of A's WRITE in turn
            b.load(b_program)
            assert np.array_equal(b.infer_batch(x)[0], b_program.run_reference(x))
            x = inputs(rng, a_program)
            a.load(a_program)
            assert np.array_equal(a.infer_batch(x)[0], a_program.run_reference(x))
            # each saw the other's answers on the line and dropped them
            assert a.stats.stale_frames + a.stats.foreign_frames > 0
            assert b.stats.stale_frames + b.stats.foreign_frames > 0


@pytest.mark.cocotb
def test_two_hosts_at_once_never_get_a_wrong_answer(device):
    """Two clients in two threads load their programs and infer at the same time on one line,
    backing off when they notice each other: every output either of them returns is its own
    program's, whatever the interleaving."""
    programs = [program_of(8), program_of(9)]
    results = [{"right": 0, "changed": 0, "other": 0} for _ in programs]
    wrong = []

    def host(i: int, url: str) -> None:
        rng = np.random.default_rng(10 + i)
        pause = random.Random(i)
        program = programs[i]
        with Client(url, timeout=5, retries=2) as client:
            for _ in range(6):
                try:
                    client.load(program)
                    for _ in range(2):
                        x = inputs(rng, program, 2)
                        y, _ = client.infer_batch(x)
                        if np.array_equal(y, program.run_reference(x)):
                            results[i]["right"] += 1
                        else:
                            wrong.append((i, x, y))
                except DeviceChangedError:
                    results[i]["changed"] += 1
                    # back off for a while, as hosts on a shared line would have to
                    threading.Event().wait(0.5 + pause.random() * 2)
                except DeviceError:
                    results[i]["other"] += 1

    with SharedLine(port_of(device)) as line:
        threads = [threading.Thread(target=host, args=(i, line.url)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)
    assert not wrong, "a client returned another program's outputs"
    assert sum(r["changed"] for r in results) > 0, "the hosts never met: the test proves nothing"
    assert sum(r["right"] for r in results) > 0
