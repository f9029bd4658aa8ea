"""trine.sim.faults' line model: latency and rate, with the real Client against a scripted
device (test_client's FakeDevice) over socket://."""

import time

import pytest
from test_client import (
    INFO,
    FakeDevice,
    Peer,
    quick_socket_close,  # noqa: F401 (an autouse fixture)
)

from trine.contract.protocol import Target
from trine.host.client import Client
from trine.sim.faults import Faults, FaultyProxy


@pytest.fixture
def device_url():
    peer = Peer(FakeDevice().answer)
    yield peer.url
    peer.stop()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_latency_delays_each_direction_and_keeps_the_bytes(device_url):
    with FaultyProxy(port_of(device_url), Faults(latency=0.05)) as proxy:
        with Client(proxy.url, timeout=2) as client:
            client.read_memory(Target.INPUT, 0, INFO.lanes)  # the claim, a round trip
            t0 = time.perf_counter()
            for _ in range(5):
                client.read_memory(Target.INPUT, 0, INFO.lanes)
            seconds = (time.perf_counter() - t0) / 5
            data = bytes(range(INFO.lanes * 8))
            client.write_memory(Target.INPUT, 3, data)
            assert client.read_memory(Target.INPUT, 3, len(data)) == data
    assert 0.1 <= seconds < 0.5  # a round trip is two latencies
    assert proxy.counts["up"].forwarded > 0 and client.stats.retries == 0


def test_rate_limits_the_bytes_per_second(device_url):
    with FaultyProxy(port_of(device_url), Faults(rate=20_000)) as proxy:
        with Client(proxy.url, timeout=5) as client:
            client.info()
            before = client.stats
            t0 = time.perf_counter()
            client.write_memory(Target.INPUT, 0, bytes(INFO.lanes * INFO.act_words))
            seconds = time.perf_counter() - t0
            sent = client.stats.bytes_sent - before.bytes_sent
    assert sent / seconds < 20_000 * 1.1


def test_the_line_is_validated():
    with pytest.raises(ValueError, match="latency must be 0 to 60 seconds, not -1"):
        Faults(latency=-1)
    with pytest.raises(ValueError, match="rate must be >= 0 bytes per second, not -5"):
        Faults(rate=-5)
