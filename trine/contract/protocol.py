"""The trine link protocol: frames, opcodes, error codes and checksums (pure Python).

Shared by the gateware (frame receiver and transmitter), the testbenches and the host client.

Frame (both directions, one layout)
-----------------------------------
=========  =====  ===========================================================================
offset     size   field
=========  =====  ===========================================================================
0          1      ``SYNC`` = 0xA5
1          1      ``op``: a request :class:`Op`, or in a response ``op | ACK`` or ``NAK``
2          1      ``seq``: chosen by the host, echoed by the device
3          4      ``session``: the host's session nonce; an answer echoes its request's
7          4      ``program``: in a request, the identity of the program its host has
                  loaded (0: none, or a load under way); in an answer, the ``program`` of
                  the last request that changed the device's memories (a WRITE or a RUN)
11         4      ``owner``: in an answer, the ``session`` of that request; 0 in a request
15         2      ``check``: an answer carries its request's CRC-16 field as received; 0 in a
                  request
17         2      ``length`` of the payload, little-endian, ``<= MAX_PAYLOAD``
19         1      header check: CRC-8 (poly 0x07, init 0) of bytes 1..18
20         n      payload
20 + n     2      CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of bytes 1..19+n, little-endian
=========  =====  ===========================================================================

All multi-byte fields are little-endian. Bytes 3..16 are the *tag* (:data:`TAG_SIZE`).

Why this shape:

* A receiver *hunts* for ``SYNC``. The header check rejects a false start (a 0xA5 inside a
  payload, garbage) after 20 bytes, so a corrupted length never makes the receiver swallow the
  following frames; after any error it simply hunts again, which resynchronises by construction.
  Because the header is checked on its own, a frame whose payload is damaged can still be
  answered with a NAK that carries the right ``seq``. (Over 18 bytes the CRC-8 detects every
  odd number of bit errors and every pair of errors less than 127 bits apart; the CRC-16
  covers the header as well.)
* CRC-16/CCITT has Hamming distance 4 for messages up to 32751 bits, far beyond the largest
  frame (``MAX_PAYLOAD + FRAME_OVERHEAD`` bytes): every 1-, 2- and 3-bit error and every burst
  up to 16 bits is detected. It is also ``binascii.crc_hqx(data, 0xFFFF)``, so the host side is
  C-speed.
* One layout both ways: whatever cuts a byte stream into frames (the host, the simulation
  bridges) needs no direction.
* Overhead is 22 bytes per frame: 2.1% at ``MAX_PAYLOAD`` = 1024.

Sessions: an answer is never someone else's
-------------------------------------------
An answer belongs to a request only if its ``seq``, ``session`` and ``check`` are the
request's: a host draws a random nonzero ``session`` when it connects, so an answer of an
earlier session (replayed, or late) or of another host on the same line never matches, and
``check`` ties it to the exact request bytes (op, seq, session, payload). ``program`` and
``owner`` say whose device state an answer comes from: the device keeps the ``session`` and
``program`` fields of the last request with a good CRC that changed its memories, once that
request has been answered. A host that loads a program sends its identity (a digest of the
image) with every request once the load is complete, and from its first WRITE on accepts an
answer only while ``owner`` is its own session and ``program`` the one it is loading (0) or
loaded, so a second host that writes or runs anything in between is noticed at the next
answer. These fields guard
against stale, replayed, misrouted and blindly forged answers, and against another host's
changes; not against a party on the line that rewrites answers knowing this protocol (that
would take a keyed MAC).

A receiver also drops a partial frame when no byte arrives for ``FRAME_TIMEOUT_BYTES`` byte
times, so a host that goes silent mid-frame never leaves the device waiting.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import struct

from trine.contract.errors import ParameterError, TrineError

__all__ = [
    "PROTOCOL_VERSION",
    "SYNC",
    "MAX_PAYLOAD",
    "HEADER",
    "HEADER_SIZE",
    "TAG_SIZE",
    "TAG_OFFSET",
    "FRAME_OVERHEAD",
    "PROGRAM_BYTES",
    "READABLE",
    "readable_mask",
    "FRAME_TIMEOUT_BYTES",
    "ACK",
    "NAK",
    "Op",
    "Target",
    "ErrorCode",
    "DeviceInfo",
    "Feature",
    "WRITE_HEADER",
    "write_payload",
    "run_payload",
    "read_payload",
    "Frame",
    "FrameError",
    "crc8",
    "crc16",
    "encode_frame",
    "frame_crc",
    "FrameDecoder",
    "DEFAULT_BAUD",
    "BITS_PER_BYTE",
    "MIN_DIVISOR",
    "baud_divisor",
    "frame_timeout_cycles",
]

#: 5: INFO reports ``features`` (what the device computes beyond int8 activations); 4: the
#: device buffers ``DeviceInfo.rx_buffer`` bytes of requests (a window of requests in flight);
#: 3: answers bound to session, request and owner.
PROTOCOL_VERSION = 5

SYNC = 0xA5
MAX_PAYLOAD = 1024
#: The header after ``SYNC`` and before its check: op, seq, session, program, owner, check,
#: length.
HEADER = struct.Struct("<BBIIIHH")
_HEADER = HEADER
HEADER_SIZE = 1 + _HEADER.size + 1  # SYNC, the fields, header check
#: Where the tag (session, program, owner, check) starts, and its bytes, in that order.
TAG_OFFSET = 3
TAG_SIZE = 14
FRAME_OVERHEAD = HEADER_SIZE + 2
#: Bytes of the program identity (the ``program`` field).
PROGRAM_BYTES = 4
#: A partial frame is dropped after this many byte times without a byte.
FRAME_TIMEOUT_BYTES = 64

#: Set in a response's ``op`` when the request succeeded.
ACK = 0x80
#: A response ``op`` for a refused request; payload: ``[request op, ErrorCode, detail...]``.
NAK = 0xFF


class Op(enum.IntEnum):
    """Request opcodes and their payloads (built by :func:`write_payload` and friends).

    ==========  =====================================  =========================================
    op          request payload                        ACK payload
    ==========  =====================================  =========================================
    INFO        (none)                                 :class:`DeviceInfo`
    WRITE       target u8, word u32, data bytes        (none)
    RUN         n_layers u8, batch u16                 cycles u32
    READ        memory u8, word u32, count u16         ``count`` bytes
    STATUS      (none)                                 busy u8, error u8, cycles u32, runs u32
    ==========  =====================================  =========================================

    WRITE stores ``data`` from byte 0 of word ``word`` of memory ``target`` (:class:`Target`)
    on, wrapping to the next word after the target's word size
    (:func:`trine.contract.device_image.word_size`): a write is idempotent, and one of no
    data bytes writes nothing (but, as every WRITE, makes its session and program the
    device's: see the module notes). READ returns bytes the same way from ``memory``, one
    of :data:`READABLE` that ``DeviceInfo.readable`` lists.

    Loading a program is WRITEs only: the device image's weights, biases and layer table
    (:class:`trine.contract.device_image.DeviceImage`, compiled by the host for the device's
    INFO). RUN runs the first ``n_layers`` entries of the layer table, back to back from table
    word 0, on ``batch`` samples, and answers when it is done. The device knows nothing of
    where a network's inputs and outputs are but what the table says: the host WRITEs sample
    ``b`` at pool word ``image.input.base + b * image.input.sample_words`` and READs the
    outputs at ``image.output.base + b * image.output.sample_words`` (position-major,
    :class:`trine.contract.device_image.TensorLayout`). The device remembers the ``seq`` of
    the last RUN and answers a repeated RUN with the same ``seq`` from that memory instead of
    running again (a RUN may overwrite its inputs, so a retried RUN must not rerun); any
    WRITE and any INFO forgets it (a host session starts with INFO, so a new session never
    meets the memory of an old one).

    A RUN still busy after ``DeviceInfo.max_run_cycles`` cycles (the device's watchdog) is
    stopped and answered with a NAK ``TIMEOUT``: a layer table whose loops would run for
    ever (corrupted, or hostile) cannot hang the device, which answers the next request as
    usual.

    The device handles one frame at a time, in the order the frames arrive, and answers each
    before it takes the next. Bytes that arrive meanwhile wait in its receive buffer of
    ``DeviceInfo.rx_buffer`` bytes, so a host may send requests ahead of their answers as
    long as the bytes it has sent beyond the last request answered stay within that buffer
    (:meth:`trine.host.transport.Link.exchange`); bytes beyond it are lost (and so, by their
    CRC, are the frames they belong to). A device with ``rx_buffer`` 0 loses what arrives
    while it is busy: its host must wait for each answer (stop-and-wait). The device never
    sends ``BUSY``; the code is reserved.
    """

    INFO = 0x01
    WRITE = 0x02
    RUN = 0x03
    READ = 0x04
    STATUS = 0x05


class Target(enum.IntEnum):
    """The memory a WRITE goes to, or a READ reads: weights, biases, the layer table (16-bit
    words), the activation pool (``INPUT``: a program's inputs, or any pool word)."""

    WEIGHTS = 0
    BIAS = 1
    LAYER = 2
    INPUT = 3


#: The memories a READ can read (its ``memory`` byte). A device may read fewer
#: (``DeviceInfo.readable``; always the activation pool).
READABLE = (Target.WEIGHTS, Target.BIAS, Target.LAYER, Target.INPUT)


def readable_mask(memories) -> int:
    """``DeviceInfo.readable`` for the given memories."""
    return sum(1 << int(t) for t in set(memories))


class ErrorCode(enum.IntEnum):
    """Why a request was refused (second payload byte of a ``NAK``)."""

    BAD_CRC = 0x01
    BAD_LENGTH = 0x02
    UNKNOWN_OPCODE = 0x03
    BAD_ADDRESS = 0x04
    BAD_ARGUMENT = 0x05
    BUSY = 0x06
    ILLEGAL_WEIGHT = 0x07
    #: A RUN stopped by the device's watchdog (``DeviceInfo.max_run_cycles``).
    TIMEOUT = 0x08


class Feature(enum.IntFlag):
    """What a device computes beyond int8 activations (``DeviceInfo.features``)."""

    #: Layers with ternary outputs (``ternary_threshold``).
    TERNARY_ACT = 1


_INFO = struct.Struct("<HHHHHHHHIIIIIHHH")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What INFO reports: versions, the array's shape and every capacity limit."""

    spec_version: int
    protocol_version: int
    lanes: int
    rows: int
    max_batch: int
    max_payload: int
    act_words: int  # activation pool words, ``lanes`` bytes each
    table_words: int  # layer-table words, 16 bits each
    weight_words: int
    bias_depth: int
    clock_hz: int
    baud: int
    max_run_cycles: int  # the watchdog: a longer RUN ends with TIMEOUT
    #: The memories READ reads: bit ``t`` for :class:`Target` ``t`` (see :func:`readable_mask`);
    #: by default all of :data:`READABLE`.
    readable: int | None = None
    #: Bytes of requests the device buffers while it handles one (0: none, stop-and-wait).
    rx_buffer: int = 0
    #: :class:`Feature` bits: what the device computes beyond int8 activations.
    features: int = 0

    SIZE = _INFO.size

    def __post_init__(self):
        if self.readable is None:
            object.__setattr__(self, "readable", readable_mask(READABLE))

    def can_read(self, memory: int) -> bool:
        """Whether READ reads ``memory`` on this device."""
        return 0 <= memory < 16 and bool(self.readable >> memory & 1)

    def to_bytes(self) -> bytes:
        return _INFO.pack(*dataclasses.astuple(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceInfo:
        if len(data) != _INFO.size:
            raise FrameError(f"device info must be {_INFO.size} bytes, not {len(data)}")
        return cls(*_INFO.unpack(data))


def write_payload(target: int, word: int, data: bytes) -> bytes:
    """Payload of a WRITE request."""
    return struct.pack("<BI", target, word) + bytes(data)


def run_payload(n_layers: int, batch: int) -> bytes:
    """Payload of a RUN request (``n_layers`` 1..255, ``batch`` 1..65535)."""
    if not (1 <= n_layers <= 0xFF and 1 <= batch <= 0xFFFF):
        raise FrameError(f"RUN needs 1..255 layers and a batch of 1..65535, not "
                         f"{n_layers} and {batch}")
    return struct.pack("<BH", n_layers, batch)


def read_payload(memory: int, word: int, count: int) -> bytes:
    """Payload of a READ request: ``count`` bytes of ``memory`` (one of :data:`READABLE`)
    from byte 0 of ``word`` on."""
    if memory not in READABLE or not 0 <= word <= 0xFFFFFFFF or not 0 <= count <= MAX_PAYLOAD:
        raise FrameError(f"READ needs a readable memory ({', '.join(t.name for t in READABLE)}"
                         f"), a u32 word and 0..{MAX_PAYLOAD} bytes, not {memory}, {word}, "
                         f"{count}")
    return struct.pack("<BIH", memory, word, count)


#: Bytes of a WRITE payload before the data.
WRITE_HEADER = 5
#: ACK payload of RUN: the run's clock cycles.
RUN_ACK = struct.Struct("<I")
#: ACK payload of STATUS: busy, error of the last run, its cycles, runs since reset.
STATUS_ACK = struct.Struct("<BBII")
#: NAK codes worth a retry of the same frame (the frame, not the request, was at fault).
TRANSIENT_ERRORS = frozenset({ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH, ErrorCode.BUSY})


class FrameError(TrineError, ValueError):
    """A byte string is not a valid frame, or a request that cannot be framed."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame's fields (``crc`` is its CRC-16 field; in an answer, ``check`` is the CRC-16
    field of the request it answers)."""

    op: int
    seq: int
    payload: bytes = b""
    session: int = 0
    program: int = 0
    owner: int = 0
    check: int = 0
    crc: int = dataclasses.field(default=0, compare=False)

    def encode(self) -> bytes:
        """The frame's bytes (the CRC-16 computed afresh)."""
        return encode_frame(self.op, self.seq, self.payload, session=self.session,
                            program=self.program, owner=self.owner, check=self.check)

    @property
    def is_ack(self) -> bool:
        return self.op != NAK and bool(self.op & ACK)

    @property
    def is_nak(self) -> bool:
        return self.op == NAK


_CRC8_TABLE = []
for _byte in range(256):
    _c = _byte
    for _ in range(8):
        _c = ((_c << 1) ^ 0x07) & 0xFF if _c & 0x80 else (_c << 1) & 0xFF
    _CRC8_TABLE.append(_c)
_CRC8_TABLE = bytes(_CRC8_TABLE)
del _byte, _c


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8 (poly 0x07, init 0, no reflection, no final xor): the header check."""
    for b in data:
        crc = _CRC8_TABLE[crc ^ b]
    return crc


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, crc)


def encode_frame(op: int, seq: int, payload: bytes = b"", *, session: int = 0,
                 program: int = 0, owner: int = 0, check: int = 0) -> bytes:
    """The bytes of one frame (a request leaves ``owner`` and ``check`` 0).

    Raises
    ------
    FrameError
        If ``op`` or ``seq`` is not a byte, a tag field does not fit its width, or the payload
        is longer than ``MAX_PAYLOAD``.
    """
    if not 0 <= op <= 0xFF:
        raise FrameError(f"op must be a byte, not {op}")
    if not 0 <= seq <= 0xFF:
        raise FrameError(f"seq must be a byte, not {seq}")
    for name, value, bits in (("session", session, 32), ("program", program, 32),
                              ("owner", owner, 32), ("check", check, 16)):
        if not 0 <= value < 1 << bits:
            raise FrameError(f"{name} must be a u{bits}, not {value}")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds the maximum of {MAX_PAYLOAD}")
    header = _HEADER.pack(op, seq, session, program, owner, check, len(payload))
    body = header + bytes([crc8(header)]) + bytes(payload)
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


def frame_crc(frame: bytes) -> int:
    """The CRC-16 field of an encoded frame: what the answer to it carries as ``check``."""
    return int.from_bytes(frame[-2:], "little")


class FrameDecoder:
    """Incremental receiver: feed it bytes, collect frames. The host's model of the gateware.

    It hunts for ``SYNC``, checks the header (CRC-8 and ``length <= MAX_PAYLOAD``), then
    collects the payload and checks the CRC-16. A bad header sends it back to hunting from the
    byte after the false ``SYNC``; a bad CRC-16 drops the frame and is reported in
    :attr:`errors` with its (trustworthy) header, so the caller can NAK it.

    Members
    -------
    errors : list of (ErrorCode, op, seq)
        Frames whose header was valid but whose payload was not, in arrival order.
    dropped : int
        Bytes discarded while hunting or in rejected headers.
    """

    def __init__(self):
        self._buf = bytearray()
        self.errors: list[tuple[ErrorCode, int, int]] = []
        self.dropped = 0

    @property
    def in_frame(self) -> bool:
        """Whether a partial frame is buffered (for the caller's inter-byte timeout)."""
        return bool(self._buf)

    def reset(self) -> None:
        """Drop a partial frame (the inter-byte timeout expired)."""
        self.dropped += len(self._buf)
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        buf = self._buf
        while buf:
            if buf[0] != SYNC:
                i = buf.find(SYNC)
                skip = len(buf) if i < 0 else i
                self.dropped += skip
                del buf[:skip]
                continue
            if len(buf) < HEADER_SIZE:
                break
            op, seq, session, program, owner, check, length = _HEADER.unpack_from(buf, 1)
            if crc8(bytes(buf[1 : HEADER_SIZE - 1])) != buf[HEADER_SIZE - 1] or (
                    length > MAX_PAYLOAD):
                self.dropped += 1
                del buf[:1]  # hunt again from the byte after this false SYNC
                continue
            end = HEADER_SIZE + length + 2
            if len(buf) < end:
                break
            (crc,) = struct.unpack_from("<H", buf, end - 2)
            if crc16(bytes(buf[1 : end - 2])) == crc:
                frames.append(Frame(op, seq, bytes(buf[HEADER_SIZE : end - 2]), session,
                                    program, owner, check, crc))
            else:
                self.errors.append((ErrorCode.BAD_CRC, op, seq))
            del buf[:end]
        return frames


# --------------------------------------------------------------------------------------------
# The serial line (8N1 UART) under the frames
# --------------------------------------------------------------------------------------------

#: The baud rate hosts and boards use unless told otherwise (both boards' bridges take it).
DEFAULT_BAUD = 3_000_000
#: Bit times per byte on the wire (8N1: start, 8 data, stop).
BITS_PER_BYTE = 10
#: Fewest clock cycles per bit: the receiver needs a mid-bit sample and a cycle of edge jitter.
MIN_DIVISOR = 4


def baud_divisor(clk_freq: float, baud: float, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq``, rounded to the nearest integer.

    Raises
    ------
    ParameterError
        If there are fewer than :data:`MIN_DIVISOR` cycles per bit, or if the rounded divisor
        misses the requested baud rate by more than ``tolerance`` (a fraction, default 2%).
    """
    if not clk_freq > 0 or not baud > 0:
        raise ParameterError(
            f"clock frequency and baud rate must be positive, not {clk_freq} and {baud}"
        )
    exact = clk_freq / baud
    if exact < MIN_DIVISOR:
        raise ParameterError(
            f"clock frequency {clk_freq:g} Hz is too low for {baud:g} baud: {exact:.2f} cycles "
            f"per bit, need at least {MIN_DIVISOR}"
        )
    divisor = round(exact)
    actual = clk_freq / divisor
    error = abs(actual - baud) / baud
    if error > tolerance:
        raise ParameterError(
            f"divisor {divisor} gives {actual:g} baud at {clk_freq:g} Hz, {error:.1%} off the "
            f"requested {baud:g} baud (tolerance {tolerance:.1%})"
        )
    return divisor


def frame_timeout_cycles(divisor: int) -> int:
    """The inter-byte timeout (``FRAME_TIMEOUT_BYTES`` byte times) in clock cycles, for a UART
    with ``divisor`` clock cycles per bit."""
    from trine.contract.errors import check_int

    check_int("UART divisor (clock cycles per bit)", divisor, MIN_DIVISOR)
    return FRAME_TIMEOUT_BYTES * BITS_PER_BYTE * divisor
