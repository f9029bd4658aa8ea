"""A TCP proxy that damages the link on purpose: the fault injector of the end-to-end tests.

``FaultyProxy(target_port, faults, seed)`` listens on 127.0.0.1 (an ephemeral port) and
forwards each client connection to ``127.0.0.1:target_port``, byte by byte in both directions,
applying :class:`Faults` independently to every byte: flip one bit, drop it, send it twice, or
insert a garbage byte before it; and, once per ``stall_every`` bytes on average, stop forwarding
for ``stall_seconds`` (a device that stops answering for a while). Reproducible from its seed
(per direction), bounded in time: it only ever forwards what it is given.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import threading
import time

__all__ = ["Faults", "FaultyProxy"]


@dataclasses.dataclass(frozen=True)
class Faults:
    """Per-byte fault probabilities (each in [0, 1]) and stalls."""

    flip: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    garbage: float = 0.0
    stall_every: int = 0  # bytes between stalls on average; 0 = never
    stall_seconds: float = 0.0

    def __post_init__(self):
        for name in ("flip", "drop", "duplicate", "garbage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, not {getattr(self, name)}")


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
            for src, dst, direction in ((client, device, "up"), (device, client, "down")):
                rng = random.Random(f"{self.seed}-{direction}")
                t = threading.Thread(target=self._pump, args=(src, dst, direction, rng),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str,
              rng: random.Random) -> None:
        f, n = self.faults, self.counts[direction]
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
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
