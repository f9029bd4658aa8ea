"""The TCP side of a simulated device's bridge: each client's bytes, and where it paused.

A device drops a partial frame after ``FRAME_TIMEOUT_BYTES`` byte times without a byte, so a host
that stops halfway through a frame and then sends a new one relies on its pause reaching the
device as a quiet line. A simulator does not run in step with the wall clock: one stretch of
simulated time can take longer than the host's pause, and bytes that arrived before and after
the pause are then read from the socket together. Once in the kernel's receive queue their
arrival times are gone too (the kernel merges queued segments and keeps the last one's time).
So the bridge reads every client often, whatever the simulation's speed (between stretches of
simulated time sized to take a few milliseconds of wall time), and accepts a new client as soon
as it connects, while the one before it is still served.

Every read is a :class:`Chunk` that records whether the client paused before it: whether more
than ``pause_s`` seconds passed since the client's previous bytes or, if later, since the
bridge last sent it something (a host's pause starts once it has its answer). The times are the
kernel's (``SO_TIMESTAMPNS``, when the platform has it; the clock otherwise), so a read that
comes late does not turn into a pause either. Nothing here knows the frame format.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import struct
import sys
import time
from collections import deque

__all__ = ["Chunk", "Client", "Lobby"]

#: Linux's ``SO_TIMESTAMPNS``; Python's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else 0)
_TIMESPEC = struct.Struct("@qq")
#: A client's bytes read ahead of the device are bounded; beyond, the kernel's window holds it.
READ_AHEAD_BYTES = 1 << 20


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data with its arrival time; whether it will."""
    if not SO_TIMESTAMPNS:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


@dataclasses.dataclass
class Chunk:
    """Bytes read at once from a client; ``after_pause``: the client paused before them."""

    data: bytes
    after_pause: bool


class Client:
    """One connected client: its chunks not yet given to the device, and whether it has gone."""

    def __init__(self, sock: socket.socket, peer, pause_s: float):
        self.sock, self.peer, self.pause_s = sock, peer, pause_s
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._stamped = enable_timestamps(sock)
        self.chunks: deque[Chunk] = deque()
        self.queued = 0  # bytes in chunks
        self.gone = False
        self._last_in: float | None = None  # arrival of its previous bytes
        self._sent_at: deque[float] = deque()  # when it was sent something, since then

    def read(self) -> None:
        """Take every byte waiting in the socket (up to :data:`READ_AHEAD_BYTES` queued)."""
        while not self.gone and self.queued < READ_AHEAD_BYTES:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.gone = True
                return
            if not data:
                self.gone = True
                return
            self._arrived(_arrival(ancillary) if self._stamped else time.time(), data)

    def _arrived(self, t: float, data: bytes) -> None:
        pause = False
        if self._last_in is not None:
            since = self._last_in
            while self._sent_at and self._sent_at[0] <= t:
                since = max(since, self._sent_at.popleft())
            pause = t - since > self.pause_s
        self._last_in = t
        self.chunks.append(Chunk(data, pause))
        self.queued += len(data)

    def take(self) -> Chunk:
        chunk = self.chunks.popleft()
        self.queued -= len(chunk.data)
        return chunk

    def send(self, data: bytes | bytearray) -> int:
        """Bytes of ``data`` the socket took now (maybe 0); marks the client gone if it is."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.gone = True
            return 0
        if sent:
            self._sent_at.append(time.time())
        return sent

    def close(self) -> None:
        self.sock.close()


def _arrival(ancillary) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec + nsec * 1e-9
    return time.time()  # data queued before the timestamps were switched on


class Lobby:
    """The listening socket and every client connected to it, in order of arrival; the first
    is the one being served."""

    def __init__(self, listener: socket.socket, pause_s: float):
        self.listener, self.pause_s = listener, pause_s
        listener.setblocking(False)
        # On the listener too, so that bytes sent before accept() are stamped as well.
        enable_timestamps(listener)
        self.clients: deque[Client] = deque()

    def poll(self, timeout: float = 0.0, *, writing: bool = False) -> None:
        """Accept and read whatever is waiting, after at most ``timeout`` seconds of waiting for
        something to arrive (or, with ``writing``, for the first client to take bytes)."""
        if timeout > 0:
            readers = [self.listener, *(c.sock for c in self.clients
                                        if not c.gone and c.queued < READ_AHEAD_BYTES)]
            writers = [self.clients[0].sock] if writing and self.clients else []
            select.select(readers, writers, [], timeout)
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. the client reset the connection before it was accepted
                break
            self.clients.append(Client(sock, peer, self.pause_s))
        for client in self.clients:
            client.read()

    def close_first(self) -> None:
        self.clients.popleft().close()

    def close(self) -> None:
        while self.clients:
            self.close_first()
