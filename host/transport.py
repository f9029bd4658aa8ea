"""The host side of the link: byte transports, and reliable requests over them.

A :class:`Transport` is a byte pipe with a deadline on reads; opening a port is its job.
:class:`SerialTransport` opens a URL with pyserial's ``serial_for_url``: ``/dev/ttyUSB1``,
``COM3``, ``socket://127.0.0.1:7777`` (a simulated device, or a test peer) and every other
pyserial URL take the same code path. Anything else with the same three methods (a simulator
pipe, a test double that drops and corrupts bytes) works as well.

A :class:`Link` sends requests in the frame format of :mod:`trine.contract.protocol` over a
transport, each answered by an ACK or a NAK carrying its ``seq``, its ``session`` and its
CRC-16 (``check``): one at a time (:meth:`Link.request`, stop-and-wait), or many in flight
(:meth:`Link.exchange`, a window of requests within the device's receive buffer).

Reliability rules
-----------------
* A link draws a random nonzero session nonce when it is made; every request carries it.
* Every request gets the next ``seq`` (mod 256). A retry resends the *same* bytes with the same
  ``seq``: writes are idempotent and the device answers a repeated RUN from its cache, so a
  retry never runs a batch twice.
* An answer counts only if its ``seq``, ``session`` and ``check`` are those of the request:
  a replayed answer of an earlier session, another host's answer on the same line and a late
  answer to another request are dropped (counted in :attr:`LinkStats.foreign_frames`), and
  a try that gets nothing else fails with a message that says so.
* A try fails on a timeout, on an answer whose CRC-16 is wrong, or on a NAK with a transient
  code (:data:`TRANSIENT_ERRORS`); after ``1 + retries`` failed tries the link raises
  :class:`DeviceError` listing what happened each time. A ``BUSY`` NAK is retried only after
  the rest of the try's timeout (a back-off; a RUN's own answer may still arrive).
* A NAK with a permanent code raises :class:`DeviceRefusedError` at once.
* Frames with another ``seq`` are late answers to earlier tries or requests and are dropped.
* What the answer says about the device's state (``program``, ``owner``) is returned with it
  (:class:`Answer`) and judged by the caller (:class:`trine.host.client.Client`).
* Only payloads of frames that passed both CRCs are ever returned, and an ACK whose payload
  length is not the one its request implies is a :class:`DeviceError`.

Windows of requests (:meth:`Link.exchange`)
-------------------------------------------
Stop-and-wait pays a round trip per request, and USB-serial bridges add milliseconds to each
(an FTDI chip holds short answers for its latency timer). :meth:`Link.exchange` sends
*groups* of requests (e.g. an inference's input WRITE, its RUN and its output READ) while
earlier answers are still on their way, within ``window`` bytes: the bytes of requests sent
but not yet answered never exceed the device's receive buffer (``DeviceInfo.rx_buffer``),
so the device, which handles frames one at a time in the order they arrive, loses none.

* The device answers in order, so an answer to a request proves that every request sent
  before it has been handled or lost: one that has not been answered by then never will be.
* A group counts only if *every* request in it is ACKed in the same try. It is then correct
  whatever happened to other groups, because its requests reached the device one after the
  other with nothing of this host's in between (a lost input WRITE would otherwise make the
  group's RUN compute on the previous sample's input). Groups must therefore not depend on
  each other: each inference group writes its own input first.
* A failed group (a request lost, a transient NAK, an answer damaged or missing for
  ``timeout`` seconds) is sent again whole, with new ``seq`` numbers, up to ``retries``
  times; late answers to the old try are then stale and dropped. A RUN sent again runs again,
  after its group's WRITE has rewritten the input.
* At most :data:`MAX_IN_FLIGHT` frames are in flight, so a ``seq`` is never reused while an
  answer to it may still come.
* A permanent NAK, an answer against the protocol, or an exception from the caller's
  ``on_answer`` (the client's owner check) stops the exchange: the link first waits for the
  answers still due (at most ``timeout`` seconds of silence), then raises.

Logging
-------
The logger ``trine.host.transport`` logs every frame sent and received at DEBUG, one line each
(``trine -vv``): direction, op, seq, payload length and the frame's bytes in hex; a frame
whose CRC-16 failed is logged as dropped. Retries are logged at INFO.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import serial

from trine.contract import protocol
from trine.contract.errors import TrineError
from trine.contract.protocol import (
    ACK,
    FRAME_OVERHEAD,
    NAK,
    ErrorCode,
    FrameDecoder,
    Op,
    encode_frame,
    frame_crc,
)

__all__ = [
    "TRANSIENT_ERRORS",
    "LinkError",
    "DeviceError",
    "DeviceRefusedError",
    "PortBusyError",
    "Transport",
    "SerialTransport",
    "LinkStats",
    "Answer",
    "Request",
    "Link",
    "MAX_IN_FLIGHT",
]

#: NAK codes that say "this frame was damaged or came at a bad time": worth resending.
TRANSIENT_ERRORS = protocol.TRANSIENT_ERRORS

_READ_SIZE = 4096

#: Frames :meth:`Link.exchange` keeps in flight at most (a quarter of the ``seq`` space).
MAX_IN_FLIGHT = 64

logger = logging.getLogger(__name__)


def _op_name(op: int) -> str:
    """A frame's op for the log: a request, its ACK, the NAK, or an unknown byte."""
    if op == NAK:
        return "NAK"
    try:
        return f"{Op(op & ~ACK).name}{' ACK' if op & ACK else ''}"
    except ValueError:
        return f"op 0x{op:02x}"


def _log_frame(direction: str, op: int, seq: int, payload: bytes, frame: bytes) -> None:
    logger.debug("%s %s seq %d, %d bytes: %s", direction, _op_name(op), seq, len(payload),
                 frame.hex(" "))


class LinkError(TrineError):
    """Anything that stops the host from using a device through the link."""


class DeviceError(LinkError):
    """The device cannot be reached, does not answer, or answers against the protocol."""


class PortBusyError(DeviceError):
    """The serial port is held by another program (trine opens ports exclusively)."""


class DeviceRefusedError(DeviceError):
    """The device refused a request with a permanent error code (a NAK worth no retry).

    Members
    -------
    op : trine.contract.protocol.Op
        The refused request.
    code : trine.contract.protocol.ErrorCode
    detail : bytes
        Whatever the device appended to the NAK payload.
    """

    def __init__(self, message: str, op: int, code: int, detail: bytes = b"") -> None:
        super().__init__(message)
        self.op = op
        self.code = code
        self.detail = detail


@runtime_checkable
class Transport(Protocol):
    """A bidirectional byte pipe to one device."""

    def write(self, data: bytes) -> None:
        """Send all of ``data``; raise :class:`DeviceError` if the pipe is gone."""

    def read(self, n: int, deadline: float) -> bytes:
        """Return between 1 and ``n`` bytes as soon as any are available, or ``b""`` once
        :func:`time.monotonic` reaches ``deadline``; raise :class:`DeviceError` if the pipe
        is gone."""

    def close(self) -> None:
        """Release the pipe; closing twice is harmless."""


def _open_failure(url: str, error: Exception) -> str:
    """pyserial's reason for a failed open, without its repetitions of the URL."""
    text = str(error.strerror if isinstance(error, OSError) and error.strerror else error)
    text = re.sub(rf"^could not open port {re.escape(url)}: ", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\[Errno -?\d+\] ", "", text)
    text = re.sub(rf": '{re.escape(url)}'$", "", text)
    return text[:1].lower() + text[1:]


class SerialTransport:
    """A pyserial port opened from a URL (a device node, ``COM3``, ``socket://host:port``...).

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` accepts.
    baud : int
        Line rate (ignored by ``socket://``).

    Raises
    ------
    DeviceError
        If the port cannot be opened; the message names ``url`` and the reason.
    PortBusyError
        If another program holds the port: it is opened exclusively (an advisory lock on
        POSIX, what Windows does anyway; ``socket://`` has no such lock).
    """

    def __init__(self, url: str, baud: int) -> None:
        self.url = url
        try:
            # exclusive: a second trine (or any program that asks the same) on this port is
            # refused instead of sharing the line and reading the other's answers
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            if "exclusively lock" in str(e):
                raise PortBusyError(
                    f"cannot open {url}: it is in use by another program (another trine?); "
                    "trine opens serial ports exclusively so that two hosts never share a "
                    "device") from e
            raise DeviceError(f"cannot open {url}: {_open_failure(url, e)}") from e
        self._low_latency()

    def _low_latency(self) -> None:
        """Answers as soon as they arrive: ``socket://`` without Nagle's algorithm (requests
        sent ahead of their answers would otherwise wait for TCP's delayed ACKs), and a serial
        port in the kernel's low-latency mode where the driver has one (an FTDI bridge then
        sets its latency timer to 1 ms instead of holding short answers for 16 ms; without
        it: ``echo 1 > /sys/bus/usb-serial/devices/ttyUSB1/latency_timer``)."""
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return
        try:
            self._port.set_low_latency_mode(True)
        except (AttributeError, NotImplementedError, ValueError, OSError) as e:
            logger.debug("%s: no low-latency mode (%s)", self.url, e)

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            # Wait until the bytes have left the UART, so that the caller's answer deadline
            # starts when the device has the whole request, whatever the frame length.
            self._port.flush()
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"lost the connection to {self.url}: {e}") from e

    def read(self, n: int, deadline: float) -> bytes:
        try:
            self._port.timeout = max(0.0, deadline - time.monotonic())
            first = self._port.read(1)
            if not first or n == 1:
                return first
            # The rest of what has already arrived, without waiting: pyserial's in_waiting is
            # only a readiness flag for socket://, so read non-blocking instead.
            self._port.timeout = 0
            return first + self._port.read(n - 1)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"lost the connection to {self.url}: {e}") from e

    def close(self) -> None:
        self._port.close()


@dataclasses.dataclass
class LinkStats:
    """Counters of one link's traffic, both directions, retries included."""

    requests: int = 0
    frames_sent: int = 0
    retries: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    stale_frames: int = 0  # good frames with another seq, dropped
    foreign_frames: int = 0  # good frames with this seq but another session or request
    corrupt_frames: int = 0  # frames whose CRC-16 failed, dropped


@dataclasses.dataclass(frozen=True)
class Answer:
    """An ACK bound to its request: its payload, and the device state its tag reports.

    Members
    -------
    payload : bytes
    program, owner : int
        The ``program`` and ``session`` fields of the last request that changed the
        device's memories (a WRITE or a RUN).
    """

    payload: bytes
    program: int
    owner: int


@dataclasses.dataclass(frozen=True)
class Request:
    """One request of :meth:`Link.exchange`: what :meth:`Link.request` takes."""

    op: Op
    payload: bytes
    expect: int  # the ACK payload length the request implies
    args: str = ""  # what it is about, for messages
    program: int = 0

    def describe(self) -> str:
        return f"{self.op.name}{' (' + self.args + ')' if self.args else ''}"


@dataclasses.dataclass
class _Sent:
    """A frame of an exchange in flight."""

    seq: int
    check: int
    size: int
    group: int
    index: int
    attempt: int


class Link:
    """Requests to one device over a transport, with bounded retries.

    Parameters
    ----------
    transport : Transport
        Open; the link closes it.
    timeout : float
        Seconds to wait for the answer to one try of a request.
    retries : int
        Tries after the first before giving up.
    session : int, optional
        The session nonce (a nonzero u32); by default a random one.

    Members
    -------
    stats : LinkStats
        A snapshot of the traffic so far.
    session : int
        This link's session nonce.

    Raises
    ------
    TypeError, ValueError
        For a bad ``transport``, ``timeout``, ``retries`` or ``session``.
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 3,
                 session: int | None = None) -> None:
        self.check_arguments(timeout, retries)
        if session is None:
            session = secrets.randbits(32) or 1
        if isinstance(session, bool) or not isinstance(session, int) or not (
                0 < session < 1 << 32):
            raise ValueError(f"session must be a nonzero u32, not {session!r}")
        self.session = session
        if not isinstance(transport, Transport):
            raise TypeError(
                f"transport must have write, read and close, not {type(transport).__name__}"
            )
        self._transport = transport
        self._timeout = float(timeout)
        self._retries = retries
        self._seq = 0
        self._decoder = FrameDecoder()
        self._stats = LinkStats()
        self._closed = False

    @staticmethod
    def check_arguments(timeout: Any, retries: Any) -> None:
        """Raise ``ValueError`` for a ``timeout`` or ``retries`` a :class:`Link` refuses."""
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")

    @property
    def stats(self) -> LinkStats:
        return dataclasses.replace(self._stats)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()

    def request(self, op: Op, payload: bytes, expect: int | None, args: str = "", *,
                program: int = 0) -> Answer:
        """Send one request until it is ACKed; return the ACK.

        Parameters
        ----------
        op, payload
            The request.
        expect : int or None
            The ACK payload length the request implies (None: any, checked by the caller).
        args : str
            What the request is about, for error messages ("WEIGHTS word 4, 27 bytes").
        program : int
            The program identity this host expects the device to have (the request's
            ``program`` field; the device ignores it, a monitor on the line can read it).

        Raises
        ------
        DeviceRefusedError
            For a NAK with a permanent code.
        DeviceError
            When every try failed, or for an answer against the protocol.
        LinkError
            If the link is closed.
        """
        if self._closed:
            raise LinkError("the link is closed")
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        what = f"{op.name} (seq {seq}{', ' + args if args else ''})"
        frame = encode_frame(op, seq, payload, session=self.session, program=program)
        check = frame_crc(frame)
        self._stats.requests += 1
        outcomes: list[str] = []
        for attempt in range(1 + self._retries):
            if attempt:
                self._stats.retries += 1
                logger.info("retrying %s after a %s (try %d of %d)", what, outcomes[-1],
                            attempt + 1, 1 + self._retries)
            # Stop-and-wait: a partial frame still buffered belongs to an earlier try's answer,
            # and left there it would swallow the start of this try's answer.
            self._decoder.reset()
            self._transport.write(frame)
            if logger.isEnabledFor(logging.DEBUG):
                _log_frame("->", op, seq, payload, frame)
            self._stats.frames_sent += 1
            self._stats.bytes_sent += len(frame)
            answer = self._await(op, seq, check, time.monotonic() + self._timeout, what)
            if isinstance(answer, Answer):
                if expect is not None and len(answer.payload) != expect:
                    raise DeviceError(f"device answered {what} with {len(answer.payload)} "
                                      f"bytes, expected {expect}")
                return answer
            outcomes.append(answer)
        raise DeviceError(
            f"gave up on {what} after {len(outcomes)} tries: {', '.join(outcomes)}"
        )

    def _await(self, op: Op, seq: int, check: int, deadline: float,
               what: str) -> Answer | str:
        """The ACK for ``seq`` bound to this session and request, or why this try failed."""
        busy = False
        foreign = 0
        while True:
            data = self._transport.read(_READ_SIZE, deadline)
            if not data:
                if foreign:
                    return (f"timeout after {foreign} answer(s) with this seq but another "
                            "session or request (replayed, or another host's)")
                return "BUSY NAK" if busy else "timeout"
            self._stats.bytes_received += len(data)
            frames = self._decoder.feed(data)
            errors = self._decoder.errors
            corrupt = any(error_seq == seq for _, _, error_seq in errors)
            if errors and logger.isEnabledFor(logging.DEBUG):
                for _, error_op, error_seq in errors:
                    logger.debug("<- %s seq %d dropped: its CRC-16 failed",
                                 _op_name(error_op), error_seq)
            self._stats.corrupt_frames += len(errors)
            errors.clear()
            outcome: bytes | str | None = None
            for frame in frames:
                if logger.isEnabledFor(logging.DEBUG):
                    _log_frame("<-", frame.op, frame.seq, frame.payload, frame.encode())
                self._stats.frames_received += 1
                # Once this try has its outcome, whatever follows in the same read is a
                # duplicate: no later request has been sent yet.
                if outcome is not None or frame.seq != seq:
                    self._stats.stale_frames += 1
                elif frame.session != self.session or frame.check != check:
                    self._stats.foreign_frames += 1
                    foreign += 1
                    logger.debug("<- seq %d dropped: bound to session 0x%08x and request "
                                 "CRC 0x%04x, not 0x%08x and 0x%04x", frame.seq,
                                 frame.session, frame.check, self.session, check)
                elif frame.op == op | ACK:
                    outcome = Answer(frame.payload, frame.program, frame.owner)
                elif frame.op != NAK:
                    raise DeviceError(f"device answered {what} with op 0x{frame.op:02x}")
                else:
                    code = self._nak_code(frame.payload, op, what)
                    if code == ErrorCode.BUSY:
                        busy = True
                    else:
                        outcome = f"{code.name} NAK"
            if outcome is None and corrupt:
                outcome = "corrupted answer"
            if outcome is not None:
                return outcome

    def exchange(self, groups: Sequence[Sequence[Request]], *, window: int,
                 on_answer: Callable[[Request, Answer], None] | None = None,
                 on_group: Callable[[int, list[Answer]], None] | None = None,
                 ) -> list[list[Answer]]:
        """Send groups of requests with up to ``window`` bytes in flight; return every ACK.

        See the module notes ("Windows of requests") for the rules.

        Parameters
        ----------
        groups : sequence of sequences of Request
            Each group is sent whole, its requests one after the other, and counts only if
            all of them are ACKed in the same try; groups must not depend on each other.
        window : int
            Bytes of requests (whole frames) that may be unanswered at once, at least one
            frame: the device's ``DeviceInfo.rx_buffer`` (0: one frame at a time).
        on_answer : callable, optional
            ``on_answer(request, answer)`` for every ACK taken; an exception from it stops
            the exchange and is raised.
        on_group : callable, optional
            ``on_group(index, answers)`` once a group is complete (in any order).

        Returns
        -------
        list of list of Answer
            For each group, the ACKs of its requests, in order.

        Raises
        ------
        DeviceRefusedError
            For a NAK with a permanent code.
        DeviceError
            When a group failed ``1 + retries`` times, or for an answer against the protocol.
        LinkError
            If the link is closed.
        """
        if self._closed:
            raise LinkError("the link is closed")
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be a non-negative number of bytes, not {window!r}")
        groups = [list(g) for g in groups]
        for group in groups:
            if not group or not all(isinstance(r, Request) for r in group):
                raise ValueError("every group must be a non-empty sequence of Request")
        results: list[list[Answer] | None] = [None] * len(groups)
        tries = [0] * len(groups)
        failed = [False] * len(groups)  # in the current try
        answers: list[list[Answer | None]] = [[] for _ in groups]
        reasons: list[list[str]] = [[] for _ in groups]
        todo = deque(range(len(groups)))
        sending: list[int] | None = None  # [group, next request] of the group being sent
        flight: deque[_Sent] = deque()
        flight_bytes = 0
        deadline = 0.0
        foreign = [0]  # answers with the seq of a frame in flight but not bound to it
        self._stats.requests += sum(len(g) for g in groups)

        def what(g: int) -> str:
            group = groups[g]
            if len(group) <= 4:
                return ", ".join(r.describe() for r in group)
            return f"{group[0].describe()} and the {len(group) - 1} requests after it"

        def fail(g: int, attempt: int, reason: str) -> None:
            nonlocal sending
            if attempt != tries[g] or failed[g] or results[g] is not None:
                return  # an earlier try, or already decided
            failed[g] = True
            reasons[g].append(reason)
            if sending is not None and sending[0] == g:
                sending = None  # do not send the rest of a try that has failed
            if tries[g] > self._retries:
                raise DeviceError(f"gave up on {what(g)} after {tries[g]} tries: "
                                  f"{', '.join(reasons[g])}")
            logger.info("retrying %s after a %s (try %d of %d)", what(g), reason, tries[g] + 1,
                        1 + self._retries)
            todo.appendleft(g)

        def take(sent: _Sent, frame) -> None:
            g, attempt = sent.group, sent.attempt
            request = groups[g][sent.index]
            if attempt != tries[g] or failed[g]:
                return
            if frame is None:
                fail(g, attempt, f"corrupted answer to {request.op.name}")
            elif frame.op == request.op | ACK:
                if len(frame.payload) != request.expect:
                    raise DeviceError(f"device answered {request.describe()} with "
                                      f"{len(frame.payload)} bytes, expected {request.expect}")
                answer = Answer(frame.payload, frame.program, frame.owner)
                if on_answer is not None:
                    on_answer(request, answer)
                answers[g][sent.index] = answer
                if all(a is not None for a in answers[g]):
                    results[g] = done = list(answers[g])  # type: ignore[arg-type]
                    if on_group is not None:
                        on_group(g, done)
            elif frame.op != NAK:
                raise DeviceError(f"device answered {request.describe()} with op "
                                  f"0x{frame.op:02x}")
            else:
                code = self._nak_code(frame.payload, request.op, request.describe())
                fail(g, attempt, f"{code.name} NAK to {request.op.name}")

        def settle(seq: int, frame) -> bool:
            """The answer (``frame``, None if damaged) for the frame ``seq`` in flight."""
            nonlocal flight_bytes
            j = next((j for j, sent in enumerate(flight) if sent.seq == seq
                      and (frame is None or frame.check == sent.check)), None)
            if j is None:
                return False
            for _ in range(j):  # sent before it, never answered: lost
                lost = flight.popleft()
                flight_bytes -= lost.size
                fail(lost.group, lost.attempt,
                     f"no answer to {groups[lost.group][lost.index].op.name}")
            sent = flight.popleft()
            flight_bytes -= sent.size
            take(sent, frame)
            return True

        def receive(until: float) -> bool:
            """Take what arrives before ``until``; False on silence."""
            data = self._transport.read(_READ_SIZE, until)
            if not data:
                return False
            self._stats.bytes_received += len(data)
            frames = self._decoder.feed(data)
            errors = list(self._decoder.errors)
            self._decoder.errors.clear()
            self._stats.corrupt_frames += len(errors)
            for frame in frames:
                if logger.isEnabledFor(logging.DEBUG):
                    _log_frame("<-", frame.op, frame.seq, frame.payload, frame.encode())
                self._stats.frames_received += 1
                if frame.session != self.session:
                    self._stats.foreign_frames += 1
                    foreign[0] += any(s.seq == frame.seq for s in flight)
                elif not settle(frame.seq, frame):
                    if any(s.seq == frame.seq for s in flight):
                        self._stats.foreign_frames += 1  # this seq, another request
                        foreign[0] += 1
                    else:
                        self._stats.stale_frames += 1
            for _, _, seq in errors:
                settle(seq, None)
            return True

        try:
            while todo or sending is not None or flight:
                while True:  # send while the window has room
                    if sending is None:
                        if not todo:
                            break
                        g = todo.popleft()
                        tries[g] += 1
                        failed[g] = False
                        answers[g] = [None] * len(groups[g])
                        if tries[g] > 1:
                            self._stats.retries += len(groups[g])
                        sending = [g, 0]
                    g, i = sending
                    request = groups[g][i]
                    size = FRAME_OVERHEAD + len(request.payload)
                    if flight and (flight_bytes + size > window
                                   or len(flight) >= MAX_IN_FLIGHT):
                        break
                    seq = self._seq
                    self._seq = (seq + 1) & 0xFF
                    frame = encode_frame(request.op, seq, request.payload,
                                         session=self.session, program=request.program)
                    if not flight:
                        self._decoder.reset()  # a partial frame left there is an old answer's
                    self._transport.write(frame)
                    if logger.isEnabledFor(logging.DEBUG):
                        _log_frame("->", request.op, seq, request.payload, frame)
                    self._stats.frames_sent += 1
                    self._stats.bytes_sent += len(frame)
                    flight.append(_Sent(seq, frame_crc(frame), size, g, i, tries[g]))
                    flight_bytes += size
                    deadline = time.monotonic() + self._timeout
                    sending = [g, i + 1] if i + 1 < len(groups[g]) else None
                if not flight:
                    continue
                if receive(deadline):
                    deadline = time.monotonic() + self._timeout
                else:  # silence: nothing in flight will be answered any more
                    extra = (f" after {foreign[0]} answer(s) with its seq but another session "
                             "or request (replayed, or another host's)" if foreign[0] else "")
                    while flight:
                        sent = flight.popleft()
                        fail(sent.group, sent.attempt, "timeout waiting for "
                             f"{groups[sent.group][sent.index].op.name}{extra}")
                    flight_bytes = 0
                    foreign[0] = 0
        except BaseException:
            self._drain(flight)
            raise
        return results  # type: ignore[return-value]

    def _drain(self, flight: deque[_Sent]) -> None:
        """After an exchange stopped early: wait for the answers still due (dropped), at most
        ``timeout`` seconds of silence, so that they do not meet the next request."""
        due = {s.seq for s in flight}
        until = time.monotonic() + self._timeout
        try:
            while due and (data := self._transport.read(_READ_SIZE, until)):
                for frame in self._decoder.feed(data):
                    if frame.session == self.session:
                        due.discard(frame.seq)
                self._decoder.errors.clear()
                until = time.monotonic() + self._timeout
        except LinkError:
            pass

    @staticmethod
    def _nak_code(payload: bytes, op: Op, what: str) -> ErrorCode:
        """The code of a NAK to ``op``; raises for a permanent one or a malformed NAK."""
        if len(payload) < 2:
            raise DeviceError(f"device answered {what} with a NAK of {len(payload)} bytes")
        if payload[0] != op:
            raise DeviceError(f"device answered {what} with a NAK for op 0x{payload[0]:02x}")
        try:
            code = ErrorCode(payload[1])
        except ValueError:
            raise DeviceError(
                f"device refused {what} with unknown error code 0x{payload[1]:02x}"
            ) from None
        if code not in TRANSIENT_ERRORS:
            detail = payload[2:]
            extra = f" (detail {detail.hex(' ')})" if detail else ""
            raise DeviceRefusedError(f"device refused {what}: {code.name}{extra}", op, code,
                                     detail)
        return code
