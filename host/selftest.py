"""What a user runs first on a new board (``trine selftest``): the link, every memory, the
datapath, checked through the protocol alone.

:func:`run_selftest` runs the checks in order on a :class:`trine.host.client.Client` and returns a
:class:`SelftestReport`; each check is a :class:`Check` that passed or failed with a one-line
reason. A check that raises a :class:`trine.host.transport.LinkError` fails with that message
and the next check runs (a device that stopped answering makes them all fail, each saying so).

The checks
----------
``device``
    INFO answers, with this host's protocol and spec versions.
``byte values``
    Frames carrying every byte value, ``SYNC`` among them, written to the activation pool and
    read back unchanged.
``memory NAME`` (one per memory)
    A march test through WRITE and READ, in blocks of one frame: ``w(P)`` over the memory,
    then ascending ``r(P) w(~P)``, descending ``r(~P) w(P)``, and ``r(P)``, with ``P`` first an
    address pattern (each word holds bytes of its own address, so two addresses that reach
    the same cells differ), then a checkerboard. Each bit is written both ways and read after
    each; only the bits a memory stores are compared (a bias entry's top six bits are not).
    A memory the device does not read back (``DeviceInfo.readable``) is skipped, and covered
    by the known answers only.
``known answers``
    A built-in program (seeded, the same on every host), loaded and run on built-in inputs:
    every output equal to :meth:`trine.host.program.Program.run_reference`.
``link``
    ``frames`` frames (WRITE and READ of random bytes, read back equal): the share of
    frames that needed a retry must not exceed ``max_error_rate``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import numpy as np

from trine.contract.device_image import BIAS_STORE_BYTES, BIAS_STORE_WIDTH, word_size
from trine.contract.protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    WRITE_HEADER,
    DeviceInfo,
    Target,
)
from trine.contract.reference import Layer
from trine.contract.spec import SPEC_VERSION
from trine.host.client import Client
from trine.host.program import Program
from trine.host.transport import LinkError

__all__ = ["Check", "SelftestReport", "builtin_program", "run_selftest", "MEMORY_NAMES"]

#: How the report names the memories.
MEMORY_NAMES = {Target.WEIGHTS: "weights", Target.BIAS: "biases", Target.LAYER: "layer table",
                Target.INPUT: "activation pool"}
#: Seed of the built-in program and its inputs.
BUILTIN_SEED = 13
#: The built-in program's layer widths: small enough for the smallest preset (SMALL).
BUILTIN_WIDTHS = (12, 8, 6)


@dataclasses.dataclass
class Check:
    """One check's outcome: ``passed``, a one-line ``detail``, and figures for ``--json``."""

    name: str
    passed: bool
    detail: str
    figures: dict = dataclasses.field(default_factory=dict)
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "skip" if self.skipped else "PASS" if self.passed else "FAIL"


@dataclasses.dataclass
class SelftestReport:
    """Every check of one run, in order."""

    url: str
    checks: list[Check]
    seconds: float
    info: DeviceInfo | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed or c.skipped for c in self.checks)

    def to_dict(self) -> dict:
        return {"url": self.url, "passed": self.passed, "seconds": round(self.seconds, 3),
                "info": dataclasses.asdict(self.info) if self.info else None,
                "checks": [{"name": c.name, "verdict": c.verdict, "detail": c.detail,
                            "figures": c.figures} for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """The one-screen verdict."""
        width = max(len(c.name) for c in self.checks)
        lines = [f"trine selftest of {self.url}"]
        lines += [f"  {c.verdict:4}  {c.name:{width}}  {c.detail}" for c in self.checks]
        failed = [c.name for c in self.checks if not (c.passed or c.skipped)]
        lines.append(f"{'PASS' if not failed else 'FAIL'}: "
                     + (f"{len(self.checks)} checks in {self.seconds:.1f} s" if not failed
                        else f"{', '.join(failed)} failed ({self.seconds:.1f} s)"))
        return "\n".join(lines)


def builtin_program() -> tuple[Program, np.ndarray]:
    """The known-answer program and its inputs (the same on every host: seeded)."""
    rng = np.random.default_rng(BUILTIN_SEED)
    layers = []
    for i, (k, m) in enumerate(zip(BUILTIN_WIDTHS[:-1], BUILTIN_WIDTHS[1:], strict=True)):
        layers.append(Layer(rng.integers(-1, 2, (m, k)), rng.integers(-300, 300, m), 4,
                            relu=i < len(BUILTIN_WIDTHS) - 2))
    x = rng.integers(-128, 128, (5, BUILTIN_WIDTHS[0])).astype(np.int8)
    return Program(layers), x


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def _device(client: Client) -> Check:
    info = client.info()  # refuses other protocol and spec versions, inconsistent values
    readable = [MEMORY_NAMES[t] for t in Target if info.can_read(t)]
    return Check("device", True,
                 f"protocol {PROTOCOL_VERSION}, spec {SPEC_VERSION}: {info.lanes} lanes x "
                 f"{info.rows} rows at {info.clock_hz / 1e6:g} MHz; reads back "
                 f"{', '.join(readable)}", {"info": dataclasses.asdict(info)})


def _pool_bytes(info: DeviceInfo) -> int:
    return info.act_words * info.lanes


def _byte_values(client: Client, info: DeviceInfo) -> Check:
    values = bytes(range(256)) + bytes([0xA5]) * 64 + bytes(range(255, -1, -1))
    n = min(len(values), _pool_bytes(info)) // info.lanes * info.lanes
    sent = 0
    for start in range(0, len(values), n):
        part = values[start : start + n]
        part += bytes(-len(part) % info.lanes)
        client.write_memory(Target.INPUT, 0, part)
        got = client.read_memory(Target.INPUT, 0, len(part))
        if got != part:
            i = next(i for i, (a, b) in enumerate(zip(part, got, strict=True)) if a != b)
            return Check("byte values", False, f"pool byte {i}: wrote 0x{part[i]:02x}, read "
                         f"0x{got[i]:02x}")
        sent += len(part)
    return Check("byte values", True, f"all 256 byte values, SYNC runs among them, written "
                 f"and read back ({sent} bytes)", {"bytes": sent})


def _stored_mask(target: Target, size: int) -> np.ndarray:
    """The bits of each byte of a word that the memory stores."""
    mask = np.full(size, 0xFF, np.uint8)
    if target == Target.BIAS:
        mask[BIAS_STORE_BYTES - 1] = (1 << (BIAS_STORE_WIDTH - 8 * (BIAS_STORE_BYTES - 1))) - 1
    return mask


def _address_pattern(words: int, size: int) -> np.ndarray:
    """Byte ``l`` of word ``w``: bytes of ``w`` itself (low, high) and mixtures, so that every
    word of up to 65536 differs from every other and no byte pattern repeats every 2**n."""
    w = np.arange(words, dtype=np.uint32)[:, None]
    lane = np.arange(size, dtype=np.uint32)[None, :]
    shifted = (w >> (8 * (lane % 2))) & 0xFF
    mixed = (w * 0x9D + lane * 0x3B + 0x5A) & 0xFF
    return np.where(lane < 2, shifted ^ (lane * 0xC3), mixed).astype(np.uint8)


def _checkerboard(words: int, size: int) -> np.ndarray:
    w = np.arange(words)[:, None]
    lane = np.arange(size)[None, :]
    return np.where((w + lane) % 2 == 0, 0x55, 0xAA).astype(np.uint8)


class _MarchFailure(Exception):
    pass


def _march(client: Client, info: DeviceInfo, target: Target, quick: bool) -> Check:
    name = f"memory {MEMORY_NAMES[target]}"
    if not info.can_read(target):
        return Check(name, True, "not read back by this device: covered by the known answers",
                     skipped=True)
    depth = {Target.WEIGHTS: info.weight_words, Target.BIAS: info.bias_depth,
             Target.LAYER: info.table_words, Target.INPUT: info.act_words}[target]
    size = word_size(target, info.lanes, info.rows)
    if quick:
        depth = min(depth, 64)
    mask = _stored_mask(target, size)
    per_frame = max(1, (min(MAX_PAYLOAD, info.max_payload) - WRITE_HEADER) // size)
    blocks = [(w, min(per_frame, depth - w)) for w in range(0, depth, per_frame)]
    bits = 0

    def write(pattern, block):
        first, n = block
        client.write_memory(target, first, pattern[first : first + n].tobytes())

    def read(pattern, block, element):
        nonlocal bits
        first, n = block
        got = np.frombuffer(client.read_memory(target, first, n * size), np.uint8)
        got = got.reshape(n, size) & mask
        want = pattern[first : first + n] & mask
        bits += int(np.unpackbits(mask).sum()) * n
        if not np.array_equal(got, want):
            w, lane = (int(v[0]) for v in np.nonzero(got != want))
            raise _MarchFailure(
                f"word {first + w} byte {lane}: wrote 0x{want[w, lane]:02x}, read "
                f"0x{got[w, lane]:02x} ({element})")

    try:
        for label, pattern in (("address pattern", _address_pattern(depth, size)),
                               ("checkerboard", _checkerboard(depth, size))):
            inverse = ~pattern
            for block in blocks:
                write(pattern, block)
            for block in blocks:  # ascending: read P, write ~P
                read(pattern, block, f"{label}, ascending r(P) w(~P)")
                write(inverse, block)
            for block in reversed(blocks):  # descending: read ~P, write P
                read(inverse, block, f"{label}, descending r(~P) w(P)")
                write(pattern, block)
            for block in blocks:
                read(pattern, block, f"{label}, final r(P)")
    except _MarchFailure as e:
        return Check(name, False, str(e))
    extent = f"the first {depth} words" if quick else f"{depth} words"
    return Check(name, True, f"march over {extent} of {size} bytes: address pattern and "
                 f"checkerboard, each bit both ways", {"words": depth, "bits_read": bits})


def _known_answers(client: Client) -> Check:
    program, x = builtin_program()
    client.load(program)
    y, cycles = client.infer_batch(x)
    expected = program.run_reference(x)
    if not np.array_equal(y, expected):
        b, j = (int(v[0]) for v in np.nonzero(y != expected))
        return Check("known answers", False, f"sample {b} output {j}: {int(y[b, j])}, the "
                     f"reference says {int(expected[b, j])}")
    return Check("known answers", True, f"the built-in {'-'.join(map(str, BUILTIN_WIDTHS))} "
                 f"program on {len(x)} inputs: every output equal to the reference "
                 f"({sum(cycles)} cycles)", {"cycles": cycles})


def _link(client: Client, info: DeviceInfo, frames: int, max_error_rate: float,
          seed: int) -> Check:
    rng = np.random.default_rng(seed)
    # one frame each way per step: at most 256 bytes, and what one frame carries
    largest = min(MAX_PAYLOAD, info.max_payload) - WRITE_HEADER
    size = max(info.lanes, min(256, _pool_bytes(info), largest) // info.lanes * info.lanes)
    client.read_memory(Target.INPUT, 0, size)  # claims the device before the count starts
    before = client.stats
    t0 = time.perf_counter()
    for _ in range(max(1, frames // 2)):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        client.write_memory(Target.INPUT, 0, data)
        if client.read_memory(Target.INPUT, 0, size) != data:
            return Check("link", False, "a READ returned other bytes than were written")
    seconds = time.perf_counter() - t0
    after = client.stats
    sent = after.frames_sent - before.frames_sent
    requests = after.requests - before.requests
    retries = after.retries - before.retries
    rate = retries / max(1, sent)
    wire = (after.bytes_sent - before.bytes_sent) + (after.bytes_received -
                                                     before.bytes_received)
    figures = {"requests": requests, "frames_sent": sent, "retries": retries,
               "corrupt_frames": after.corrupt_frames - before.corrupt_frames,
               "foreign_frames": after.foreign_frames - before.foreign_frames,
               "error_rate": rate, "seconds": seconds,
               "bytes_per_second": wire / seconds if seconds > 0 else None}
    detail = (f"{requests} requests in {sent} frames, {retries} retried ({rate:.2%}; at most "
              f"{max_error_rate:.2%} allowed), {wire / max(seconds, 1e-9) / 1e3:.1f} kB/s "
              "both ways")
    return Check("link", rate <= max_error_rate, detail, figures)


def run_selftest(client: Client, url: str = "", *, frames: int = 2000, quick: bool = False,
                 max_error_rate: float = 0.001, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> SelftestReport:
    """Run every check on ``client``; see the module notes.

    Parameters
    ----------
    client : Client
        Connected; its device's memories are overwritten (no program stays loaded).
    url : str
        For the report.
    frames : int
        Frames of the link check (half WRITEs, half READs).
    quick : bool
        March only the first 64 words of each memory.
    max_error_rate : float
        The share of the link check's frames that may need a retry.
    seed : int
        Of the link check's random bytes.
    progress : callable, optional
        Called with each check's name before it runs.
    """
    t0 = time.perf_counter()
    checks: list[Check] = []
    info = None

    def run(name: str, check: Callable[[], Check]) -> None:
        if progress is not None:
            progress(name)
        try:
            checks.append(check())
        except LinkError as e:
            checks.append(Check(name, False, str(e)))

    run("device", lambda: _device(client))
    if checks[-1].passed:
        info = client.info()
        run("byte values", lambda: _byte_values(client, info))
        for target in (Target.WEIGHTS, Target.BIAS, Target.LAYER, Target.INPUT):
            run(f"memory {MEMORY_NAMES[target]}", lambda t=target: _march(client, info, t,
                                                                          quick))
        run("known answers", lambda: _known_answers(client))
        run("link", lambda: _link(client, info, frames, max_error_rate, seed))
    return SelftestReport(url, checks, time.perf_counter() - t0, info)
