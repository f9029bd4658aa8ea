"""TCP proxies that damage the link on purpose: the fault injectors of the end-to-end tests.

``FaultyProxy(target_port, faults, seed)`` listens on 127.0.0.1 (an ephemeral port) and
forwards each client connection to ``127.0.0.1:target_port``, byte by byte in both directions,
applying :class:`Faults` independently to every byte: flip one bit, drop it, send it twice, or
insert a garbage byte before it; and, once per ``stall_every`` bytes on average, stop forwarding
for ``stall_seconds`` (a device that stops answering for a while). Reproducible from its seed
(per direction), bounded in time: it only ever forwards what it is given.

The others attack the protocol with frames whose CRCs are valid: :class:`ReplayingProxy`
replays a previous session's answers, :class:`ForgingProxy` rewrites answers, and
:class:`SharedLine` puts several clients on one device as a shared serial line would.
"""

from __future__ import annotations

import dataclasses
import queue
import random
import socket
import threading
import time
from collections.abc import Callable

from trine.contract.protocol import ACK, NAK, Frame, FrameDecoder, Op

__all__ = ["Faults", "FaultyProxy", "ReplayingProxy", "ForgingProxy", "SharedLine"]


@dataclasses.dataclass(frozen=True)
class Faults:
    """Per-byte fault probabilities (each in [0, 1]), stalls, and a line: every byte arrives
    ``latency`` seconds after it was sent, in each direction (a USB-serial bridge's latency
    timer, say), and at most ``rate`` bytes per second pass (0: no limit; a 3 Mbaud UART
    carries 300,000)."""

    flip: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    garbage: float = 0.0
    stall_every: int = 0  # bytes between stalls on average; 0 = never
    stall_seconds: float = 0.0
    latency: float = 0.0
    rate: float = 0.0

    def __post_init__(self):
        for name in ("flip", "drop", "duplicate", "garbage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, not {getattr(self, name)}")
        if not 0.0 <= self.latency < 60.0:
            raise ValueError(f"latency must be 0 to 60 seconds, not {self.latency}")
        if not self.rate >= 0.0:
            raise ValueError(f"rate must be >= 0 bytes per second, not {self.rate}")


class _DelayLine:
    """``sendall`` that delivers each piece ``latency`` seconds later, in order, and no
    faster than ``rate`` bytes per second (0: at once)."""

    def __init__(self, dst: socket.socket, latency: float, rate: float,
                 stop: threading.Event):
        self.dst, self.latency, self.rate, self.stop = dst, latency, rate, stop
        self.queue: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._free = 0.0  # when the line has sent everything queued
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    #: Bytes delivered at once on a rate-limited line: a piece arrives when its last byte
    #: would, as on a UART, instead of a whole TCP read (several frames) at the end.
    PIECE = 64

    def sendall(self, data) -> None:
        if not data:
            return
        now = time.monotonic()
        self._free = max(now, self._free)
        step = self.PIECE if self.rate else len(data)
        for at in range(0, len(data), step):
            piece = bytes(data[at : at + step])
            if self.rate:
                self._free += len(piece) / self.rate
            self.queue.put((self._free + self.latency, piece))

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                due, data = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                self.dst.sendall(data)
            except OSError:
                return


@dataclasses.dataclass
class FaultCounts:
    flipped: int = 0
    dropped: int = 0
    duplicated: int = 0
    garbage: int = 0
    stalls: int = 0
    forwarded: int = 0


class FaultyProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target_port`` through :class:`Faults`.

    Use as a context manager; :attr:`url` is the ``socket://`` URL to give a client, and
    :attr:`counts` tells how many faults were injected (``"up"`` towards the device, ``"down"``
    towards the host).
    """

    def __init__(self, target_port: int, faults: Faults, seed: int = 0):
        self.target_port = target_port
        self.faults = faults
        self.seed = seed
        self.counts = {"up": FaultCounts(), "down": FaultCounts()}
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FaultyProxy:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            device = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            for sock in (client, device):  # a frame never waits for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst, direction in ((client, device, "up"), (device, client, "down")):
                rng = random.Random(f"{self.seed}-{direction}")
                t = threading.Thread(target=self._pump, args=(src, dst, direction, rng),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str,
              rng: random.Random) -> None:
        f, n = self.faults, self.counts[direction]
        sock = dst
        if f.latency or f.rate:
            dst = _DelayLine(sock, f.latency, f.rate, self._stop)
        src.settimeout(0.1)
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                out = bytearray()
                for byte in data:
                    if f.stall_every and rng.random() < 1 / f.stall_every:
                        dst.sendall(out)
                        out.clear()
                        n.stalls += 1
                        time.sleep(f.stall_seconds)
                    if rng.random() < f.garbage:
                        out.append(rng.randrange(256))
                        n.garbage += 1
                    if rng.random() < f.drop:
                        n.dropped += 1
                        continue
                    if rng.random() < f.flip:
                        byte ^= 1 << rng.randrange(8)
                        n.flipped += 1
                    out.append(byte)
                    if rng.random() < f.duplicate:
                        out.append(byte)
                        n.duplicated += 1
                    n.forwarded += 1
                dst.sendall(out)
        except OSError:
            pass  # the other side closed: the session is over
        finally:
            if isinstance(dst, _DelayLine):  # what is on its way still arrives
                deadline = dst._free + f.latency + 1.0
                while not dst.queue.empty() and time.monotonic() < deadline:
                    time.sleep(0.01)
            for s in (src, sock):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# --------------------------------------------------------------------------------------------
# Proxies that attack the protocol rather than the bytes: every frame they send has a valid CRC
# --------------------------------------------------------------------------------------------


class _FrameProxy:
    """Forwards each client connection to ``127.0.0.1:target_port``: the requests byte for
    byte, the answers frame by frame (cut by :class:`FrameDecoder`, each passed to
    :meth:`answer`, which returns the frames to send instead). Connections are numbered from 0
    in the order they arrive; :meth:`request` sees each decoded request first."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self):
        self._start(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._server.close()

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            device = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            self._start(self._up, client, device, index)
            self._start(self._down, device, client, index)
            index += 1

    def request(self, connection: int, frame: Frame) -> None:
        """Called for each request a client sends, before it is forwarded."""

    def answer(self, connection: int, frame: Frame) -> list[Frame]:
        """The frames to send the client instead of the device's answer ``frame``."""
        return [frame]

    def _up(self, src: socket.socket, dst: socket.socket, connection: int) -> None:
        decoder = FrameDecoder()

        def each(data: bytes) -> None:
            for frame in decoder.feed(data):
                with self._lock:
                    self.request(connection, frame)
            dst.sendall(data)

        self._pump(src, dst, each)

    def _down(self, src: socket.socket, dst: socket.socket, connection: int) -> None:
        decoder = FrameDecoder()

        def each(data: bytes) -> None:
            out = bytearray()
            for frame in decoder.feed(data):
                with self._lock:
                    for f in self.answer(connection, frame):
                        out += f.encode()
            dst.sendall(out)

        self._pump(src, dst, each)

    def _pump(self, src: socket.socket, dst: socket.socket, each) -> None:
        src.settimeout(0.1)
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                each(data)
        except OSError:
            pass  # the other side closed: the session is over
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ReplayingProxy(_FrameProxy):
    """Records the answers of the first connection (a session), and replays them to every
    later one: when a later client sends a request of ``ops`` with a ``seq`` the first session
    had an answer for, that old answer (its CRC valid: the device's own frame) goes to the
    client at once. With ``substitute``, the device's real answer to that request is dropped,
    so a client can only get it wrong or fail; otherwise both arrive, the old one first.

    Members
    -------
    replayed, withheld : int
        Old answers sent; real answers dropped.
    """

    def __init__(self, target_port: int, ops=(Op.READ,), *, substitute: bool = True):
        super().__init__(target_port)
        self.ops = {int(op) for op in ops}
        self.substitute = substitute
        self.recorded: dict[tuple[int, int], Frame] = {}  # (op, seq) -> the first answer
        # (connection, op, seq) -> the old answer to give with the answer to that request
        self._pending: dict[tuple[int, int, int], Frame] = {}
        self.replayed = 0
        self.withheld = 0

    def request(self, connection: int, frame: Frame) -> None:
        old = self.recorded.get((frame.op, frame.seq))
        if connection > 0 and frame.op in self.ops and old is not None:
            self._pending[(connection, frame.op, frame.seq)] = old

    def answer(self, connection: int, frame: Frame) -> list[Frame]:
        op = frame.op & ~ACK if frame.op != NAK else (frame.payload[:1] or b"\0")[0]
        if connection == 0:
            self.recorded.setdefault((op, frame.seq), frame)
            return [frame]
        old = self._pending.pop((connection, op, frame.seq), None)
        if old is None:
            return [frame]
        self.replayed += 1
        if self.substitute:
            self.withheld += 1
            return [old]
        return [old, frame]


class ForgingProxy(_FrameProxy):
    """Rewrites answers: ``forge(frame)`` returns the frame to send in place of the device's
    answer (re-encoded, so its CRC is valid), or None to pass it on unchanged.

    Members
    -------
    forged : int
    """

    def __init__(self, target_port: int, forge: Callable[[Frame], Frame | None]):
        super().__init__(target_port)
        self.forge = forge
        self.forged = 0

    def answer(self, connection: int, frame: Frame) -> list[Frame]:
        forged = self.forge(frame)
        if forged is None:
            return [frame]
        self.forged += 1
        return [forged]


class SharedLine:
    """Several clients on one device, as two hosts on one serial line (or two processes that
    opened the same port) are: every byte the device sends goes to every client, and the
    clients' requests reach the device whole, one at a time in the order they arrive (a
    request waits for the answer to the one before, or ``turn_seconds``).

    Use as a context manager; :attr:`url` is the address for every client.
    """

    def __init__(self, target_port: int, turn_seconds: float = 2.0):
        self.turn_seconds = turn_seconds
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._device = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        self._device.settimeout(0.1)
        self._clients: list[socket.socket] = []
        self._requests: queue.Queue[bytes] = queue.Queue()
        self._answered = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.requests = 0

    def __enter__(self) -> SharedLine:
        for target in (self._accept, self._forward, self._broadcast):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for s in [*self._clients, self._device, self._server]:
            s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            client.settimeout(0.1)
            self._clients.append(client)
            t = threading.Thread(target=self._read_client, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_client(self, client: socket.socket) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            try:
                data = client.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for frame in decoder.feed(data):
                self._requests.put(frame.encode())

    def _forward(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._requests.get(timeout=0.1)
            except queue.Empty:
                continue
            self._answered.clear()
            self.requests += 1
            try:
                self._device.sendall(frame)
            except OSError:
                return
            self._answered.wait(self.turn_seconds)

    def _broadcast(self) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            try:
                data = self._device.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for client in list(self._clients):
                try:
                    client.sendall(data)
                except OSError:
                    pass
            if decoder.feed(data):
                self._answered.set()
