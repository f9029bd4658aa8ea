"""The host client: load a :class:`trine.host.program.Program` into an accelerator and run it.

The client sends the commands of :mod:`trine.contract.protocol` through a
:class:`trine.host.transport.Link` (requests with bounded retries; see there for the
reliability rules) over a :class:`trine.host.transport.Transport`: a serial port or
``socket://`` URL by default. Loads, inferences and memory transfers keep a window of requests
in flight, as many bytes as the device's receive buffer holds (``DeviceInfo.rx_buffer``;
``window=0`` waits for each answer): a load's WRITEs are independent groups, and each run of
an inference (its input WRITEs, the RUN, its output READs) is one group that counts only if
all of it was answered, so a lost request can never pair an output with another input.

Memory addressing (see :mod:`trine.contract.device_image` and :mod:`trine.hw.core`)
----------------------------------------------------------------------------------
A WRITE or READ starts at byte 0 of a word, so every transfer is cut at word boundaries: the
word is a weight beat (``beat_bytes(lanes, rows)`` bytes), a stored bias
(``BIAS_STORE_BYTES``), a layer-table word (``TABLE_WORD_BYTES``) or an activation-pool word
(``lanes`` bytes). The program's device image says where its tensors are: sample ``b``'s
inputs at pool word ``image.input.base + b * image.input.sample_words``, its outputs at
``image.output.base + b * image.output.sample_words``, both position-major
(:class:`trine.contract.device_image.TensorLayout`).

Whose device it is
------------------
Every answer says which session last changed the device's memories (``owner``) and the
``program`` that request carried (:mod:`trine.contract.protocol`). A load starts with a WRITE
of no data (a claim: program 0, "loading"), writes the image, and ends with a second claim
that carries the image's digest (:func:`program_digest`), which every later request carries.
From the answer to the first claim on, the client accepts an answer only while the owner is
its own session and the program the one it is loading (0) or loaded; otherwise it raises
:class:`DeviceChangedError` (another host, or another process on the same line, wrote or ran
something in between), so outputs computed or read after such a change are never returned.

The logger ``trine.host.client`` says at INFO what the device is, what a load cost and what an
inference took (``trine -v``); the frames themselves are logged by
:mod:`trine.host.transport` at DEBUG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

from trine.contract.device_image import (
    BIAS_STORE_BYTES,
    DENSE_ENTRY_WORDS,
    TABLE_WORD_BYTES,
    DeviceImage,
    beat_bytes,
    word_size,
)
from trine.contract.params import DeviceLimits
from trine.contract.protocol import (
    FRAME_OVERHEAD,
    MAX_PAYLOAD,
    PROGRAM_BYTES,
    PROTOCOL_VERSION,
    RUN_ACK,
    STATUS_ACK,
    WRITE_HEADER,
    DeviceInfo,
    ErrorCode,
    Op,
    Target,
    read_payload,
    run_payload,
    write_payload,
)
from trine.contract.spec import SPEC_VERSION
from trine.host.program import Program, ProgramError
from trine.host.transport import (
    Answer,
    DeviceError,
    DeviceRefusedError,
    Link,
    LinkError,
    LinkStats,
    Request,
    SerialTransport,
    Transport,
)

__all__ = [
    "DEFAULT_BAUD",
    "LinkError",
    "DeviceError",
    "DeviceRefusedError",
    "RunTimeoutError",
    "DeviceChangedError",
    "program_digest",
    "LinkStats",
    "LoadStats",
    "DeviceStatus",
    "Client",
]

DEFAULT_BAUD = 3_000_000
_RUN_ACK = RUN_ACK
_STATUS_ACK = STATUS_ACK

logger = logging.getLogger(__name__)

#: Frames of a load or transfer that a window holds (see Client._frame_payload).
_FRAMES_IN_WINDOW = 4


class RunTimeoutError(DeviceRefusedError):
    """The device's watchdog stopped a RUN (``ErrorCode.TIMEOUT``): the loaded layer table
    loops for longer than the device allows; the device itself still answers."""


class DeviceChangedError(DeviceError):
    """Another host changed the device since this client wrote to it: an answer names another
    owner session or another program than the one this client is loading or loaded."""


def program_digest(image: DeviceImage) -> int:
    """The program identity a client writes after loading ``image``: 32 bits of BLAKE2b over
    its weights, biases and layer table, never 0 (0 means "no program")."""
    h = hashlib.blake2b(digest_size=PROGRAM_BYTES)
    for part in (image.weights, image.bias_bytes(), image.table_bytes()):
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "little") or 1


@dataclasses.dataclass(frozen=True)
class LoadStats:
    """What one :meth:`Client.load` cost.

    Members
    -------
    payload_bytes : int
        Image bytes written (weights, biases, layer table).
    wire_bytes_sent, wire_bytes_received : int
        Everything on the wire in each direction: frame overhead, retries, the answers.
    frames : int
        Frames sent, retries included.
    retries : int
    seconds : float
        The whole load.
    stream_seconds : float
        The image's WRITEs alone, without the claims before and after them (one round trip
        each): ``payload_bytes / stream_seconds`` is the rate of the weight stream.
    weights : int
        Real (unpadded) weights of the program.
    bits_per_trit : float
        ``8 * wire_bytes_sent / weights``: what one weight costs on the wire towards the device,
        padding, biases, table and framing included (a UART adds 2 more bits per byte).
    """

    payload_bytes: int
    wire_bytes_sent: int
    wire_bytes_received: int
    frames: int
    retries: int
    seconds: float
    stream_seconds: float
    weights: int
    bits_per_trit: float


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """What STATUS reports."""

    busy: bool
    error: int  # trine.contract.protocol.ErrorCode of the last run, 0 if it succeeded
    cycles: int  # of the last run
    runs: int


def _check_window(window: Any) -> None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 0):
        raise ValueError(f"window must be a non-negative number of bytes or None, not "
                         f"{window!r}")


def _check_versions(spec_version: int, protocol_version: int) -> None:
    if protocol_version != PROTOCOL_VERSION:
        raise DeviceError(
            f"device speaks protocol version {protocol_version}, this client "
            f"version {PROTOCOL_VERSION}"
        )
    if spec_version != SPEC_VERSION:
        raise DeviceError(
            f"device implements trine.contract.spec version {spec_version}, this client "
            f"version {SPEC_VERSION}"
        )


def _check_info(info: DeviceInfo) -> None:
    """Refuse a device whose INFO the client cannot work with (validated at the edge)."""
    _check_versions(info.spec_version, info.protocol_version)
    for name in ("lanes", "rows", "max_batch", "max_payload", "act_words", "table_words",
                 "weight_words", "bias_depth", "max_run_cycles"):
        if getattr(info, name) < 1:
            raise DeviceError(f"device info is inconsistent: {name} is 0")
    if not info.can_read(Target.INPUT):
        raise DeviceError("device info is inconsistent: READ does not read the activation pool")
    if info.table_words < DENSE_ENTRY_WORDS:
        raise DeviceError(
            f"device info is inconsistent: table_words {info.table_words} cannot hold one "
            f"layer ({DENSE_ENTRY_WORDS} words)"
        )
    largest = max(beat_bytes(info.lanes, info.rows), BIAS_STORE_BYTES, TABLE_WORD_BYTES,
                  info.lanes)
    if min(info.max_payload, MAX_PAYLOAD) < WRITE_HEADER + largest:
        raise DeviceError(
            f"device info is inconsistent: max_payload {info.max_payload} cannot carry a "
            f"{largest}-byte word in one WRITE"
        )


class Client:
    """An accelerator on the other end of a link.

    Parameters
    ----------
    url : str
        A serial device (``/dev/ttyUSB1``, ``COM3``) or any pyserial URL such as
        ``socket://127.0.0.1:7777``.
    baud : int
        Line rate; ignored by ``socket://``.
    timeout : float
        Seconds to wait for the answer to one try of a request.
    retries : int
        Tries after the first before giving up.
    window : int, optional
        Bytes of requests kept in flight; by default the device's receive buffer
        (``DeviceInfo.rx_buffer``), never more; 0 waits for every answer.

    Members
    -------
    stats : LinkStats
        A snapshot of the traffic so far.
    program : Program or None
        The program last loaded successfully.

    Raises
    ------
    DeviceError
        If the port cannot be opened (the message names ``url``).
    TypeError, ValueError
        For a bad ``baud``, ``timeout`` or ``retries``.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        baud: int = DEFAULT_BAUD,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        window: int | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(
                f"url must be a str, not {type(url).__name__} (Client.over takes a transport)"
            )
        if isinstance(baud, bool) or not isinstance(baud, int) or baud < 1:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        Link.check_arguments(timeout, retries)  # before the port is opened
        _check_window(window)
        self._setup(Link(SerialTransport(url, baud), timeout=timeout, retries=retries), window)

    @classmethod
    def over(cls, transport: Transport, *, timeout: float = 1.0, retries: int = 3,
             window: int | None = None) -> Client:
        """A client on an already open transport (a simulator pipe, a test double)."""
        _check_window(window)
        self = cls.__new__(cls)
        self._setup(Link(transport, timeout=timeout, retries=retries), window)
        return self

    def _setup(self, link: Link, window: int | None) -> None:
        self._link = link
        self._window_limit = window
        # The program identity the device must report (None: no expectation yet, before the
        # first write of a load), and with it that this session owns the device.
        self._expected: int | None = None
        self._info: DeviceInfo | None = None
        self._program: Program | None = None
        self._image: DeviceImage | None = None

    # ----------------------------------------------------------------------------------------
    # Life cycle
    # ----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> LinkStats:
        return self._link.stats

    @property
    def session(self) -> int:
        """This client's session nonce (the ``session`` of its requests)."""
        return self._link.session

    def _request(self, op: Op, payload: bytes, expect: int, args: str = "", *,
                 program: int | None = None) -> bytes:
        """One request through the link, carrying ``program`` (by default the one expected);
        its answer must come from a device this client owns, once it expects to (see the
        module notes)."""
        expected = self._expected
        if program is None:
            program = expected or 0
        answer: Answer = self._link.request(op, payload, expect, args, program=program)
        self._check_owner(answer, f"{op.name}{', ' + args if args else ''}", expected)
        return answer.payload

    def _check_owner(self, answer: Answer, what: str, expected: int | None) -> None:
        """Raise :class:`DeviceChangedError` unless ``answer`` comes from a device this
        client owns with program ``expected`` (nothing is checked while that is None)."""
        if expected is not None:
            if answer.owner != self.session:
                self._expected = None  # nothing more is checked against a lost device
                raise DeviceChangedError(
                    f"another host changed the device: the answer to {what} says its memories "
                    f"were last changed by session 0x{answer.owner:08x}, not by this client's "
                    f"0x{self.session:08x}; load the program again (and keep other hosts off "
                    f"this device)")
            if answer.program != expected:
                self._expected = None
                raise DeviceChangedError(
                    f"another host changed the device: the answer to {what} reports program "
                    f"0x{answer.program:08x}, not 0x{expected:08x} that this client "
                    f"{'loaded' if self._program is not None else 'was loading'}; load the "
                    f"program again")

    def _window(self) -> int:
        """Bytes of requests in flight: the device's receive buffer, or less if asked."""
        buffer = self.info().rx_buffer
        return buffer if self._window_limit is None else min(buffer, self._window_limit)

    def _exchange(self, groups: list[list[Request]],
                  on_group: Callable[[int, list[Answer]], None] | None = None,
                  ) -> list[list[bytes]]:
        """Groups of requests through the link's window (each request carries the program
        expected), every answer checked as :meth:`_request` checks it; their payloads."""
        expected = self._expected
        window = self._window()
        program = expected or 0
        groups = [[dataclasses.replace(r, program=program) for r in g] for g in groups]

        def check(request: Request, answer: Answer) -> None:
            self._check_owner(answer, f"{request.op.name}"
                              f"{', ' + request.args if request.args else ''}", expected)

        done = self._link.exchange(groups, window=window, on_answer=check, on_group=on_group)
        return [[a.payload for a in answers] for answers in done]

    @property
    def program(self) -> Program | None:
        return self._program

    @property
    def image(self) -> DeviceImage | None:
        """The device image of the program last loaded: where its inputs and outputs are in
        the device's pool, its layer table, the batch one RUN takes."""
        return self._image

    # ----------------------------------------------------------------------------------------
    # Commands
    # ----------------------------------------------------------------------------------------

    def info(self) -> DeviceInfo:
        """The device's shape and limits (asked once, then cached).

        Raises
        ------
        DeviceError
            If the device does not answer, or its protocol or spec version differs from this
            client's, or the values contradict each other.
        """
        if self._info is None:
            raw = self._request(Op.INFO, b"", None)
            if len(raw) != DeviceInfo.SIZE:
                # another protocol version's INFO: its first fields say which
                if len(raw) >= 4:
                    _check_versions(*struct.unpack_from("<HH", raw))
                raise DeviceError(f"device answered INFO with {len(raw)} bytes, expected "
                                  f"{DeviceInfo.SIZE}")
            info = DeviceInfo.from_bytes(raw)
            _check_info(info)
            self._info = info
            logger.info("device: %d lanes x %d rows, %d weight words, %d biases, a pool of %d "
                        "words, a table of %d words, batches up to %d, at %g MHz and %d baud",
                        info.lanes, info.rows, info.weight_words, info.bias_depth,
                        info.act_words, info.table_words, info.max_batch, info.clock_hz / 1e6,
                        info.baud)
        return self._info

    def limits(self) -> DeviceLimits:
        """The device's capacity, for :meth:`trine.host.program.Program.check_fits`."""
        return DeviceLimits.from_info(self.info())

    def status(self) -> DeviceStatus:
        busy, error, cycles, runs = _STATUS_ACK.unpack(
            self._request(Op.STATUS, b"", _STATUS_ACK.size)
        )
        return DeviceStatus(bool(busy), error, cycles, runs)

    def _max_payload(self) -> int:
        return min(MAX_PAYLOAD, self.info().max_payload)

    def _frame_payload(self) -> int:
        """Payload bytes per WRITE or READ frame: the device's maximum, or with a window a
        quarter of it (so that four frames are in flight, enough to keep the line busy while
        the first one's answer comes back), never less than one word of any memory."""
        window = self._window()
        if window == 0:
            return self._max_payload()
        info = self.info()
        smallest = WRITE_HEADER + max(beat_bytes(info.lanes, info.rows), BIAS_STORE_BYTES,
                                      TABLE_WORD_BYTES, info.lanes)
        return min(self._max_payload(), max(smallest, window // _FRAMES_IN_WINDOW
                                            - FRAME_OVERHEAD))

    def _claim(self, program: int) -> None:
        """A WRITE of no data: it writes nothing, and makes this session and ``program`` the
        device's."""
        expected = self._expected
        what = f"WRITE, claim for program 0x{program:08x}"
        answer = self._link.request(Op.WRITE, write_payload(Target.INPUT, 0, b""), 0, what,
                                    program=program)
        # The first answer tells the program before the claim. A claim sent again because
        # that answer was lost is answered after the device took its first copy: the answer
        # then reports this claim's program already (still from this session).
        if expected is not None and answer.program == program:
            expected = program
        self._check_owner(answer, what, expected)

    def _word_size(self, target: Target) -> int:
        info = self.info()
        return word_size(target, info.lanes, info.rows)

    def _write(
        self,
        target: Target,
        data: bytes,
        word: int = 0,
        sent: Callable[[int], None] | None = None,
    ) -> None:
        """WRITE ``data`` from byte 0 of ``word`` on, in frames cut at word boundaries."""
        groups = [[request] for request in self._write_requests(target, data, word)]
        if not groups:
            return

        def done(g: int, _answers: list[Answer]) -> None:
            if sent is not None:
                sent(len(groups[g][0].payload) - WRITE_HEADER)

        self._exchange(groups, on_group=done)

    def _write_requests(self, target: Target, data: bytes, word: int) -> list[Request]:
        """WRITEs of ``data`` from byte 0 of ``word`` on, cut at word boundaries."""
        size = self._word_size(target)
        chunk = (self._frame_payload() - WRITE_HEADER) // size * size
        requests = []
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            at = word + offset // size
            requests.append(Request(Op.WRITE, write_payload(target, at, piece), 0,
                                    f"{target.name} word {at}, {len(piece)} bytes"))
        return requests

    def _read_requests(self, word: int, count: int, memory: Target) -> list[Request]:
        """READs of ``count`` bytes of ``memory`` from byte 0 of ``word`` on."""
        size = self._word_size(memory)
        chunk = self._frame_payload() // size * size
        requests = []
        for offset in range(0, count, chunk):
            n = min(chunk, count - offset)
            at = word + offset // size
            requests.append(Request(Op.READ, read_payload(memory, at, n), n,
                                    f"{memory.name} word {at}, {n} bytes"))
        return requests

    def _read(self, word: int, count: int, memory: Target = Target.INPUT) -> bytes:
        """READ ``count`` bytes of ``memory`` (the activation pool by default) from byte 0 of
        ``word`` on."""
        groups = [[request] for request in self._read_requests(word, count, memory)]
        return b"".join(answers[0] for answers in self._exchange(groups))

    def _run_request(self, n_layers: int, batch: int) -> Request:
        return Request(Op.RUN, run_payload(n_layers, batch), _RUN_ACK.size,
                       f"{n_layers} layers, batch {batch}")

    def _run_refused(self, e: DeviceRefusedError, request: Request) -> BaseException:
        """A RUN's permanent NAK as the error to raise: the watchdog's as RunTimeoutError."""
        if e.code != ErrorCode.TIMEOUT or e.op != Op.RUN:
            return e
        limit = self.info().max_run_cycles
        n_layers, batch = struct.unpack("<BH", request.payload)
        return RunTimeoutError(
            f"the device stopped the run of {n_layers} layers at batch {batch} after {limit} "
            f"cycles (its watchdog, max_run_cycles): the loaded layer table loops for longer "
            f"than the device allows (a corrupted or hostile program?); the device still "
            f"answers, load a program again", e.op, e.code, e.detail)

    # ----------------------------------------------------------------------------------------
    # The memories as bytes (diagnostics: trine selftest)
    # ----------------------------------------------------------------------------------------

    def _own_raw(self) -> None:
        """Before a raw memory access: no program counts as loaded any more, and this client
        owns the device from the claim's answer on (as in a load)."""
        self._program = None
        self._image = None
        if self._expected != 0:
            self._expected = None
            self._claim(0)
            self._expected = 0

    def write_memory(self, target: Target, word: int, data: bytes) -> None:
        """WRITE ``data`` into memory ``target`` from byte 0 of ``word`` on (cut into frames at
        word boundaries). The program loaded before no longer counts as loaded.

        Raises
        ------
        DeviceRefusedError
            If the device refuses (``BAD_ADDRESS`` past the memory's end).
        DeviceChangedError
            If another host changed the device since this client's first raw access.
        """
        self._own_raw()
        self._write(Target(target), bytes(data), word=word)

    def read_memory(self, target: Target, word: int, count: int) -> bytes:
        """``count`` bytes of memory ``target`` from byte 0 of ``word`` on (the bits a memory
        does not store read as 0). The program loaded before no longer counts as loaded.

        Raises
        ------
        DeviceRefusedError
            If the device does not read ``target`` (``DeviceInfo.readable``) or the range
            leaves the memory.
        DeviceChangedError
            As for :meth:`write_memory`.
        """
        self._own_raw()
        return self._read(word, count, Target(target))

    # ----------------------------------------------------------------------------------------
    # Programs
    # ----------------------------------------------------------------------------------------

    def load(
        self,
        program: Program,
        progress: Callable[[int, int], None] | None = None,
    ) -> LoadStats:
        """Compile ``program`` for the device and write it: weights, biases, layer table.

        A program that does not fit is refused before anything but INFO is sent, and the
        program loaded before stays. Once the writes start, no program counts as loaded until
        they have all been acknowledged (so :meth:`infer` refuses after a failed load).

        Parameters
        ----------
        program : Program
        progress : callable, optional
            Called as ``progress(bytes_done, bytes_total)`` with image bytes, once before the
            first WRITE and after each acknowledged one.

        Raises
        ------
        ProgramTooLargeError
            If the program exceeds the device's layer, width, weight or bias capacity.
        DeviceError
            If the device does not take the writes.
        """
        if not isinstance(program, Program):
            raise TypeError(
                f"program must be a trine.host.program.Program, not {type(program).__name__}")
        image = program.check_fits(self.limits())

        parts = [
            (Target.WEIGHTS, image.weights),
            (Target.BIAS, image.bias_bytes()),
            (Target.LAYER, image.table_bytes()),
        ]
        total = sum(len(data) for _, data in parts)
        done = 0

        def sent(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        self._program = None
        self._image = None
        before = self.stats
        start = time.perf_counter()
        if progress is not None:
            progress(0, total)
        # "Loading" (program 0) first, so that a load cut short never looks like a program.
        # The claim's answer tells who owned the device before; from the next answer on,
        # this client does.
        self._expected = None
        self._claim(0)
        self._expected = 0
        # the whole image in one window: weights, biases and table, each WRITE its own group
        writes = [[r] for target, data in parts for r in self._write_requests(target, data, 0)]
        stream_start = time.perf_counter()
        self._exchange(writes, on_group=lambda g, _: sent(len(writes[g][0].payload)
                                                          - WRITE_HEADER))
        stream_seconds = time.perf_counter() - stream_start
        digest = program_digest(image)
        self._claim(digest)  # answered before it counts: its answer still says program 0
        self._expected = digest
        seconds = time.perf_counter() - start
        self._program = program
        self._image = image

        after = self.stats
        weights = sum(layer.weights.size for layer in program.weighted_layers)
        wire_sent = after.bytes_sent - before.bytes_sent
        logger.info("loaded %d bytes in %d frames (%d bytes on the wire, %d retries) in %.2f s",
                    total, after.frames_sent - before.frames_sent, wire_sent,
                    after.retries - before.retries, seconds)
        return LoadStats(
            payload_bytes=total,
            wire_bytes_sent=wire_sent,
            wire_bytes_received=after.bytes_received - before.bytes_received,
            frames=after.frames_sent - before.frames_sent,
            retries=after.retries - before.retries,
            seconds=seconds,
            stream_seconds=stream_seconds,
            weights=weights,
            bits_per_trit=8 * wire_sent / weights,
        )

    def infer(self, x: Any, *, batch: int | None = None) -> tuple[np.ndarray, list[int]]:
        """Run the loaded program on one input or a batch: ``input_shape`` or
        ``(N, *input_shape)``, or flat ``(K,)`` / ``(N, K)``.

        Float inputs are quantised with the program's ``input_scale``, integer ones must be in
        the int8 range (:meth:`trine.host.program.Program.quantize_input`). The batch is cut into
        runs of at most the image's batch (``max_batch``, or fewer when the device's activation
        pool holds fewer), or of at most ``batch`` samples; the runs are pipelined through the
        link's window (each one a group: module notes).

        Returns
        -------
        outputs : int8 array of ``output_shape`` or ``(N, *output_shape)``, following ``x``
        cycles : list of int, the device's cycle count of each run

        Raises
        ------
        LinkError
            If no program is loaded.
        ProgramError
            For an input the program does not accept.
        DeviceError
            If the device fails to run it.
        """
        program = self._program
        if program is None:
            raise LinkError("no program is loaded: call load() before infer()")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)
                                  or batch < 1):
            raise ValueError(f"batch must be a positive integer, not {batch!r}")
        q = program.quantize_input(x)
        if q.shape == program.input_shape:
            outputs, cycles = self._infer(program, q[np.newaxis])
            return outputs[0], cycles
        return self._infer(program, q, batch)

    def infer_batch(self, x: Any) -> tuple[np.ndarray, list[int]]:
        """:meth:`infer` for a batch only (``(N, K)`` or ``(N, *input_shape)``)."""
        program = self._program
        shape = program.input_shape if program is not None else ()
        if np.ndim(x) != 2 and np.shape(x)[1:] != shape:
            raise ProgramError(f"a batch must have shape (N, K) or (N, *{shape}), not "
                               f"{np.shape(x)}")
        return self.infer(x)

    def _infer(self, program: Program, q: np.ndarray,
               batch: int | None = None) -> tuple[np.ndarray, list[int]]:
        image = self._image
        assert image is not None
        n_entries = len(image.entries)
        inputs, outputs_at = image.input, image.output
        size = outputs_at.sample_words * image.lanes
        per_run = image.batch if batch is None else min(batch, image.batch)
        # One group per run: its input WRITEs, the RUN, its output READs (see the module notes)
        groups, runs = [], []
        for first in range(0, len(q), per_run):
            run = q[first : first + per_run]
            packed = inputs.pack(run.reshape(len(run), *program.input_shape))
            writes = self._write_requests(Target.INPUT, packed.tobytes(), inputs.base)
            reads = self._read_requests(outputs_at.base, size * len(run), Target.INPUT)
            groups.append([*writes, self._run_request(n_entries, len(run)), *reads])
            runs.append((first, len(run), len(writes)))
        try:
            answers = self._exchange(groups)
        except DeviceRefusedError as e:
            raise self._run_refused(e, groups[0][runs[0][2]]) from None
        outputs = np.empty((len(q), *program.output_shape), np.int8)
        cycles = []
        for (first, n, n_writes), payloads in zip(runs, answers, strict=True):
            cycles.append(_RUN_ACK.unpack(payloads[n_writes])[0])
            raw = b"".join(payloads[n_writes + 1 :])
            data = np.frombuffer(raw, np.int8).reshape(n, size)
            outputs[first : first + n] = outputs_at.unpack(data)
        logger.info("ran %d sample(s) in %d run(s): %d cycles", len(q), len(cycles), sum(cycles))
        return outputs, cycles
