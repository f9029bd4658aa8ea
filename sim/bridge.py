"""A TCP socket bridged to the simulated device, inside a cocotb test (:mod:`trine.sim.device_tb`).

Two links move bytes between Python and the device; both call ``on_byte`` for every byte the
device sends and keep ``busy`` true while a byte is on its way in either direction:

* :class:`UARTLink` drives :class:`trine.hw.device.Top`'s ``rx`` pin with one ``Timer`` per bit and
  samples ``tx`` from the falling edge of each start bit (``FallingEdge``, then ``Timer`` to
  mid-bit), so the UART itself is exercised; about 11 Python wake-ups per byte each way.
* :class:`StreamLink` drives :class:`trine.hw.device.LinkedAccelerator`'s ``i_stream`` and reads its
  ``o_stream`` (always ready), skipping the UART: a byte takes about 9 cycles instead of
  ``10 * divisor``.

:class:`SocketBridge` serves one client at a time. Simulated time only moves while there is
something to do: bytes to drive or being received, or a request that has not been answered
(the bridge decodes both directions with :class:`trine.contract.protocol.FrameDecoder` to know).
Then it advances in stretches of at most ``chunk_cycles``, each sized to take about ``chunk_s``
of wall time (or until the link reports a drained queue or a complete answer), and reads the
clients in between (:mod:`trine.sim.clients`); Python never runs once per clock cycle. When
nothing is pending, the simulator is deliberately paused in ``select()`` (no CPU, no simulated
time). Every new client, and every client's bytes that came after it paused for more than
``pause_s`` seconds of wall time, are preceded by a quiet line of ``timeout_cycles`` plus a
margin, so that a partial frame left behind is dropped by the device's inter-byte timeout, as
on hardware. The pauses are taken from when the bytes arrived, not from when the bridge got to
them: a quiet line that takes longer than the host's pause does not run the bytes on either
side of the pause together.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping

import cocotb
from cocotb.triggers import Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from trine.contract.protocol import FrameDecoder
from trine.sim.bfm import StreamSink, StreamSource
from trine.sim.clients import Client, Lobby

__all__ = ["BridgeConfig", "UARTLink", "StreamLink", "SocketBridge"]

ENV_VAR = "TRINE_SERVE"
#: Extra quiet cycles on top of the device's inter-byte timeout when a pause is replayed.
SILENCE_MARGIN = 64
#: The fewest cycles in a stretch of simulated time between two reads of the clients.
MIN_CHUNK_CYCLES = 8


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """What :mod:`trine.sim.serve` tells the cocotb test (through one environment variable)."""

    mode: str  # "uart" or "byte"
    period_ps: int  # clock period; even, so half a period is a whole picosecond
    divisor: int  # UART clock cycles per bit
    timeout_cycles: int  # the device's inter-byte timeout
    host: str = "127.0.0.1"
    port: int = 0
    once: bool = False
    ready_file: str = ""  # the bound port is written here once listening
    stats_file: str = ""  # one JSON line per client is appended here
    parent_pid: int = 0  # stop when this process is gone (0: do not check)
    stop_file: str = ""  # stop when this file appears
    chunk_cycles: int = 512  # at most, between two reads of the clients
    chunk_s: float = 0.005  # wall time a stretch of simulated time is sized to take
    max_quiet_cycles: int = 1_000_000  # give up waiting for an answer after this long
    pause_s: float = 0.02
    poll_s: float = 0.05

    def to_env(self) -> dict[str, str]:
        return {ENV_VAR: json.dumps(dataclasses.asdict(self))}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BridgeConfig:
        return cls(**json.loads(env[ENV_VAR]))


class _Link:
    """What both links share: the input queue, the busy flags and the byte callback."""

    def __init__(self, dut, on_byte: Callable[[int], None], on_drained: Callable[[], None]):
        self.dut, self.on_byte, self.on_drained = dut, on_byte, on_drained
        self._queue: deque[int] = deque()
        self._wake = Event()
        self.sending = False
        self.receiving = False
        self.framing_errors = 0

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self.sending or self.receiving

    def send(self, data: bytes) -> None:
        self._queue.extend(data)
        self._wake.set()

    def start(self) -> None:
        cocotb.start_soon(self._drive())
        cocotb.start_soon(self._sample())

    async def _wait_for_bytes(self) -> None:
        self.sending = False
        self.on_drained()
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        self.sending = True
        await FallingEdge(self.dut.clk)  # writes happen on falling edges only

    async def _drive(self) -> None:
        raise NotImplementedError

    async def _sample(self) -> None:
        raise NotImplementedError


class UARTLink(_Link):
    """8N1 on :class:`trine.hw.device.Top`'s pins, ``divisor`` clock cycles per bit."""

    def __init__(self, dut, period_ps: int, divisor: int, on_byte, on_drained):
        super().__init__(dut, on_byte, on_drained)
        self.bit_ps = divisor * period_ps
        dut.rx.value = 1

    async def _drive(self) -> None:
        rx, bit_time = self.dut.rx, Timer(self.bit_ps, "ps")
        while True:
            if not self._queue:
                await self._wait_for_bytes()
            byte = self._queue.popleft()
            for bit in (0, *((byte >> i) & 1 for i in range(8)), 1):
                rx.value = bit
                await bit_time

    async def _sample(self) -> None:
        tx = self.dut.tx
        half, full = Timer(self.bit_ps // 2, "ps"), Timer(self.bit_ps, "ps")
        while True:
            await FallingEdge(tx)
            self.receiving = True
            await half
            if tx.value != 0:  # not a start bit (the device never glitches; be safe)
                self.receiving = False
                continue
            byte = 0
            for i in range(8):
                await full
                byte |= int(tx.value) << i
            await full
            self.receiving = False
            if tx.value != 1:
                self.framing_errors += 1
                cocotb.log.warning("framing error: low stop bit after 0x%02x", byte)
                continue
            self.on_byte(byte)


class StreamLink:
    """Byte streams of :class:`trine.hw.device.LinkedAccelerator`: the shared stream source
    drives ``i_stream``, the shared sink takes ``o_stream`` (always ready)."""

    def __init__(self, dut, period_ps: int, on_byte, on_drained):
        self.source = StreamSource(dut.clk, dut.i_stream__valid, dut.i_stream__ready,
                                   dut.i_stream__payload, period_ps=period_ps,
                                   on_drained=on_drained)
        self.sink = StreamSink(dut.clk, dut.o_stream__valid, dut.o_stream__ready,
                               dut.o_stream__payload, callback=on_byte)

    @property
    def busy(self) -> bool:
        return self.source.busy

    def send(self, data: bytes) -> None:
        self.source.send(data)

    def start(self) -> None:
        self.sink.start()


@dataclasses.dataclass
class SessionStats:
    """One client's traffic, and how fast the simulation ran while it had work."""

    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    answers: int = 0
    cycles: int = 0  # simulated, whole session
    busy_cycles: int = 0  # simulated while work was pending
    busy_wall_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        rate = self.busy_cycles / self.busy_wall_s if self.busy_wall_s > 0 else None
        d.update(
            busy_wall_s=round(self.busy_wall_s, 4),
            wall_s=round(self.wall_s, 4),
            cycles_per_s=round(rate) if rate else None,
        )
        return d


class SocketBridge:
    """Serves TCP clients on ``cfg.host:cfg.port``, one after the other, through ``link``."""

    def __init__(self, dut, cfg: BridgeConfig):
        self.dut, self.cfg = dut, cfg
        if cfg.mode == "uart":
            self.link: UARTLink | StreamLink = UARTLink(
                dut, cfg.period_ps, cfg.divisor, self._on_byte, self._on_drained
            )
        elif cfg.mode == "byte":
            self.link = StreamLink(dut, cfg.period_ps, self._on_byte, self._on_drained)
        else:
            raise ValueError(f"mode must be 'uart' or 'byte', not {cfg.mode!r}")
        self._wake = Event()
        self._out = bytearray()
        self._discarding = False  # what the device sends is for a client that has gone
        self._answers = FrameDecoder()
        self._stats = SessionStats()
        self._last_active_cycle = 0
        self._outstanding = 0  # complete requests not answered yet
        self._last_request_cycle = self._last_answer_cycle = 0
        self._lobby: Lobby | None = None
        self._client: Client | None = None
        self._chunk = cfg.chunk_cycles  # cycles per stretch, sized to take about chunk_s

    def _now(self) -> int:
        return int(get_sim_time("ps")) // self.cfg.period_ps

    def _on_byte(self, byte: int) -> None:
        if not self._discarding:
            self._out.append(byte)
        self._stats.bytes_out += 1
        self._last_active_cycle = self._now()
        if self._answers.feed(bytes([byte])):
            self._stats.answers += 1
            self._last_answer_cycle = self._now()
            self._wake.set()

    def _on_drained(self) -> None:
        self._wake.set()

    def _told_to_stop(self) -> bool:
        cfg = self.cfg
        return (cfg.parent_pid != 0 and os.getppid() != cfg.parent_pid) or (
            bool(cfg.stop_file) and os.path.exists(cfg.stop_file)
        )

    def _quiet_too_long(self) -> bool:
        return (
            not self.link.busy and self._now() - self._last_active_cycle > self.cfg.max_quiet_cycles
        )

    def _io(self, timeout: float = 0.0) -> None:
        """Read every client, and give the one served what the device sent it."""
        self._lobby.poll(timeout, writing=bool(self._out))
        if self._out and self._client is not None:
            del self._out[: self._client.send(self._out)]

    async def _advance(self, cycles: int, *, until_woken: bool = True) -> int:
        """Simulate up to ``cycles`` cycles (fewer once the input drains or an answer is out,
        with ``until_woken``; and no more than about ``chunk_s`` of wall time), then read the
        clients: however slow the simulation, they are read every few milliseconds, so that
        their pauses are seen. The number of cycles simulated."""
        cfg = self.cfg
        c0, t0 = self._now(), time.perf_counter()
        timer = Timer(max(1, min(cycles, self._chunk)) * cfg.period_ps, "ps")
        if until_woken:
            self._wake.clear()
            await First(timer, self._wake.wait())
        else:
            await timer
        done, wall = self._now() - c0, time.perf_counter() - t0
        if done > 0 and wall > 0:
            fit = int(done * cfg.chunk_s / wall)
            self._chunk = max(MIN_CHUNK_CYCLES, min(cfg.chunk_cycles, fit))
        self._io()
        return done

    async def _silence(self) -> None:
        """A quiet line for longer than the device's inter-byte timeout (what it sends meanwhile
        is received as usual)."""
        left = self.cfg.timeout_cycles + SILENCE_MARGIN
        while left > 0:
            left -= await self._advance(left, until_woken=False)

    async def run(self) -> None:
        cfg = self.cfg
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((cfg.host, cfg.port))
            listener.listen(8)
            self._lobby = lobby = Lobby(listener, cfg.pause_s)
            port = listener.getsockname()[1]
            self.link.start()
            if cfg.ready_file:
                tmp = cfg.ready_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(f"{port}\n")
                os.replace(tmp, cfg.ready_file)
            cocotb.log.info("listening on %s:%d (%s mode)", cfg.host, port, cfg.mode)
            clients = 0
            try:
                while True:
                    if self._told_to_stop():
                        cocotb.log.info("told to stop, or the serving process is gone")
                        return
                    if not lobby.clients:
                        # Paused on purpose: no client, no simulated time.
                        lobby.poll(cfg.poll_s)
                        continue
                    self._client = client = lobby.clients[0]
                    clients += 1
                    cocotb.log.info("client %d connected from %s:%d", clients, *client.peer[:2])
                    stats = await self._session(client)
                    self._client = None
                    lobby.close_first()
                    summary = stats.summary()
                    cocotb.log.info("client %d gone: %s", clients, summary)
                    if cfg.stats_file:
                        with open(cfg.stats_file, "a") as f:
                            f.write(json.dumps(summary) + "\n")
                    if cfg.once or self._told_to_stop():
                        return
            finally:
                lobby.close()

    async def _session(self, client: Client) -> SessionStats:
        cfg, link = self.cfg, self.link
        self._stats = stats = SessionStats()
        start_cycle, start_wall = self._now(), time.perf_counter()
        # Let the device finish what the previous client started, then give it a quiet line,
        # so that a half-sent frame is dropped; whatever it sends meanwhile is discarded.
        # (at most the previous client's last request can still be answered: the device takes
        # one frame at a time and drops what comes meanwhile). The new client's bytes are read
        # meanwhile, with its pauses.
        self._discarding = True
        self._out.clear()
        while ((self._outstanding and stats.answers == 0) or link.busy) \
                and not self._quiet_too_long():
            await self._advance(cfg.chunk_cycles)
        self._outstanding = 0
        await self._silence()
        self._discarding = False
        self._stats = stats = SessionStats()
        self._out.clear()
        self._answers = FrameDecoder()
        requests = FrameDecoder()
        while not self._told_to_stop():
            self._io()
            while client.chunks:
                if client.chunks[0].after_pause:
                    if link.busy:
                        break  # the quiet line comes after the bytes before it
                    await self._silence()  # the host paused: the line was quiet meanwhile
                    requests = FrameDecoder()  # and the device has dropped a partial frame
                    client.chunks[0].after_pause = False
                    continue
                data = client.take().data
                link.send(data)
                stats.bytes_in += len(data)
                complete = len(requests.feed(data)) + len(requests.errors)
                requests.errors.clear()  # a bad-CRC frame with a good header is NAKed
                if complete:
                    # every complete request is answered (or the device dropped it, which
                    # the quiet timeout below finds): simulate until the answers are out
                    stats.requests += complete
                    self._outstanding += complete
                    self._last_active_cycle = self._last_request_cycle = self._now()
            if client.gone and not client.chunks:
                # What it sent before it left is on the line all the same (as a serial port
                # drains its output on close), and the next client waits for its answer.
                break
            awaiting = self._outstanding > stats.answers
            if awaiting and self._quiet_too_long():
                cocotb.log.warning(
                    "no answer after %d cycles; the device missed a frame?", cfg.max_quiet_cycles
                )
                self._outstanding = stats.answers
                awaiting = False
            if link.busy or awaiting:
                t0, c0 = time.perf_counter(), self._now()
                await self._advance(cfg.chunk_cycles)
                stats.busy_wall_s += time.perf_counter() - t0
                stats.busy_cycles += self._now() - c0
            else:
                self._io(cfg.poll_s)
        self._out.clear()
        # left for the next client's wait: whether the last request is still unanswered
        self._outstanding = int(self._last_request_cycle > self._last_answer_cycle)
        stats.cycles = self._now() - start_cycle
        stats.wall_s = time.perf_counter() - start_wall
        return stats


