"""The host side of the link: byte transports, and reliable requests over them.

A :class:`Transport` is a byte pipe with a deadline on reads; opening a port is its job.
:class:`SerialTransport` opens a URL with pyserial's ``serial_for_url``: ``/dev/ttyUSB1``,
``COM3``, ``socket://127.0.0.1:7777`` (a simulated device, or a test peer) and every other
pyserial URL take the same code path. Anything else with the same three methods (a simulator
pipe, a test double that drops and corrupts bytes) works as well.

A :class:`Link` sends requests in the frame format of :mod:`trine.contract.protocol` over a
transport, stop-and-wait: one request in flight, each answered by an ACK or a NAK carrying
its ``seq``, its ``session`` and its CRC-16 (``check``).

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
import time
from typing import Any, Protocol, runtime_checkable

import serial

from trine.contract import protocol
from trine.contract.errors import TrineError
from trine.contract.protocol import (
    ACK,
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
    "Link",
]

#: NAK codes that say "this frame was damaged or came at a bad time": worth resending.
TRANSIENT_ERRORS = protocol.TRANSIENT_ERRORS

_READ_SIZE = 4096

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

    def request(self, op: Op, payload: bytes, expect: int, args: str = "", *,
                program: int = 0) -> Answer:
        """Send one request until it is ACKed; return the ACK.

        Parameters
        ----------
        op, payload
            The request.
        expect : int
            The ACK payload length the request implies.
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
                if len(answer.payload) != expect:
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
