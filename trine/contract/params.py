"""The accelerator's parameter set, what a device of it reports, and what it can hold.

:class:`AcceleratorParams` is defined once, here: the board presets (:mod:`trine.flow.boards`),
the gateware (:class:`trine.hw.core.AcceleratorCore`, :class:`trine.hw.device.LinkedAccelerator`,
:class:`trine.hw.device.Top`), the simulated device (:mod:`trine.sim.serve`) and the command
line all take one, so the device a board builds and the device ``trine sim serve --board``
simulates are the same device, with the same INFO.

What the host knows of a device is its INFO (:class:`trine.contract.protocol.DeviceInfo`);
:class:`DeviceLimits` is the capacity that INFO describes, and :func:`check_fits` is the one
check of a network against it, used by :meth:`trine.host.program.Program.check_fits` and
:meth:`trine.host.client.Client.load` alike. Pure Python: no Amaranth needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from trine.contract.device_image import beat_bytes, bias_entries, weight_words
from trine.contract.errors import ParameterError, ParameterTypeError, TrineError, check_int
from trine.contract.protocol import MAX_PAYLOAD, PROTOCOL_VERSION, DeviceInfo
from trine.contract.reference import Layer
from trine.contract.spec import MAX_FAN_IN, SPEC_VERSION

__all__ = [
    "DECODERS",
    "WEIGHT_MEMORIES",
    "SPRAM_DEPTH",
    "SPRAM_WIDTH",
    "SPRAM_BLOCKS",
    "MAX_RUN_LAYERS",
    "AcceleratorParams",
    "DeviceLimits",
    "CapacityError",
    "check_fits",
    "SMALL",
    "SIMULATED",
    "UP5K",
    "ECP5_85F",
    "PRESETS",
]

#: Ways to build the trit decoder: a block-RAM ROM per weight byte, a constant table that
#: Yosys turns into the same ROMs, or ROMs in LUTs (no block RAM). Same timing and results.
DECODERS = ("rom", "table", "logic")
#: Where the weights are kept: an inferred memory (simulation; block RAM), or the
#: iCE40UP5K's SPRAM blocks (synthesis for that chip only).
WEIGHT_MEMORIES = ("generic", "spram")
#: Words and bits per word of one iCE40UP5K ``SB_SPRAM256KA``, and the blocks on the chip.
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
SPRAM_BLOCKS = 4
#: RUN carries the layer count in one byte.
MAX_RUN_LAYERS = 0xFF


class CapacityError(TrineError, ValueError):
    """A network that does not fit a device: the message names every limit it exceeds."""


@dataclasses.dataclass(frozen=True)
class AcceleratorParams:
    """One accelerator configuration: the MAC array's shape and every memory's depth.

    Parameters
    ----------
    lanes, rows : int
        Shape of the MAC array: activations per beat, outputs computed in parallel. A
        weight-memory word holds one ``rows x lanes`` tile (:func:`beat_bytes` bytes).
    weight_words : int
        Weight memory depth in tiles.
    bias_depth : int
        Folded biases held (``rows`` per block of outputs).
    max_layers : int
        Layer-table entries, at most :data:`MAX_RUN_LAYERS`.
    max_width : int
        Largest fan-in or fan-out of any layer (the activation buffers' row length).
    max_batch : int
        Inputs per RUN.
    decoder : str
        One of :data:`DECODERS`.
    weight_memory : str
        One of :data:`WEIGHT_MEMORIES`; ``"spram"`` holds at most :data:`SPRAM_DEPTH` words of
        ``SPRAM_BLOCKS * SPRAM_WIDTH / 8`` bytes.

    Raises
    ------
    ParameterError, ParameterTypeError
        For a value out of range or of the wrong type, naming it.
    """

    lanes: int
    rows: int
    weight_words: int
    bias_depth: int
    max_layers: int
    max_width: int
    max_batch: int = 1
    decoder: str = "rom"
    weight_memory: str = "generic"

    def __post_init__(self):
        check_int("Lane count", self.lanes, 1)
        check_int("Row count", self.rows, 1)
        check_int("Weight memory depth", self.weight_words, 1)
        check_int("Bias memory depth", self.bias_depth, 1)
        check_int("Maximum layer count", self.max_layers, 1, MAX_RUN_LAYERS)
        check_int("Maximum layer width", self.max_width, 1, MAX_FAN_IN)
        check_int("Maximum batch", self.max_batch, 1, 0xFFFF)
        for name, value, allowed in (("decoder", self.decoder, DECODERS),
                                     ("weight memory", self.weight_memory, WEIGHT_MEMORIES)):
            if not isinstance(value, str):
                raise ParameterTypeError(f"{name} must be a str, not {value!r}")
            if value not in allowed:
                raise ParameterError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.weight_memory == "spram":
            most = SPRAM_BLOCKS * SPRAM_WIDTH // 8
            if self.beat_bytes > most:
                raise ParameterError(
                    f"SPRAM words are at most {most} bytes wide, not {self.beat_bytes} "
                    f"({self.rows} x {self.lanes} trits)")
            if self.weight_words > SPRAM_DEPTH:
                raise ParameterError(
                    f"SPRAM holds at most {SPRAM_DEPTH} words, not {self.weight_words}")

    # ---- derived sizes ---------------------------------------------------------------------

    @property
    def beat_bytes(self) -> int:
        """Bytes per weight-memory word: one ``rows x lanes`` tile, 5 trits per byte."""
        return beat_bytes(self.lanes, self.rows)

    @property
    def stride(self) -> int:
        """Activation-buffer words per sample (``lanes`` bytes each)."""
        return -(-self.max_width // self.lanes)

    @property
    def buffer_words(self) -> int:
        """Words of one activation buffer: ``stride`` per sample of the largest batch."""
        return self.stride * self.max_batch

    @property
    def max_blocks(self) -> int:
        """Blocks of ``rows`` outputs in the widest layer."""
        return -(-self.max_width // self.rows)

    # ---- what the device says, and what it holds -----------------------------------------

    def device_info(self, clock_hz: int = 0, baud: int = 0) -> DeviceInfo:
        """What a device of these parameters answers to INFO (``clock_hz`` and ``baud`` are
        reported, never used by the host but for time estimates)."""
        return DeviceInfo(
            spec_version=SPEC_VERSION, protocol_version=PROTOCOL_VERSION, lanes=self.lanes,
            rows=self.rows, max_layers=self.max_layers, max_batch=self.max_batch,
            stride=self.stride, max_payload=MAX_PAYLOAD, max_width=self.max_width,
            weight_words=self.weight_words, bias_depth=self.bias_depth, clock_hz=int(clock_hz),
            baud=int(baud),
        )

    def limits(self) -> DeviceLimits:
        """The capacity of a device of these parameters."""
        return DeviceLimits.from_info(self.device_info())

    def replace(self, **changes: Any) -> AcceleratorParams:
        """A copy with some parameters changed (validated again).

        Raises
        ------
        ParameterError
            For a name that is not a parameter, or a value out of range.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ParameterError(f"unknown accelerator parameter {unknown[0]!r}; known: "
                                 f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def for_simulation(self) -> AcceleratorParams:
        """The same device for an RTL simulator: the SPRAM primitives have no model there, so
        the weights go to the generic memory, which behaves the same cycle for cycle."""
        return self.replace(weight_memory="generic")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def size(self) -> dict[str, int]:
        """The array's shape and the memories' depths, without how they are built (decoder,
        weight memory): what a preset such as :data:`SMALL` changes on a board's device."""
        return {k: v for k, v in self.as_dict().items() if isinstance(v, int)}


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """The capacity of a device, as its INFO describes it.

    Attributes
    ----------
    lanes, rows : the MAC array's shape (activations per beat, parallel outputs)
    max_layers : entries in the layer table (and layers a RUN can name)
    max_fan_in : largest K of any layer (also bounds the accumulator width)
    max_fan_out : largest M of any layer (activation buffer depth)
    weight_bytes : weight memory in bytes, holding ``rows x lanes`` tiles at 5 trits per byte
    bias_depth : folded biases held, ``rows`` per block of outputs
    """

    lanes: int
    rows: int
    max_layers: int
    max_fan_in: int
    max_fan_out: int
    weight_bytes: int
    bias_depth: int

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"device limit {f.name} must be a positive integer, "
                                     f"not {v!r}")
        if self.max_fan_in > MAX_FAN_IN:
            raise ParameterError(
                f"device limit max_fan_in must be <= {MAX_FAN_IN}, not {self.max_fan_in}"
            )

    @classmethod
    def from_info(cls, info: DeviceInfo) -> DeviceLimits:
        return cls(lanes=info.lanes, rows=info.rows,
                   max_layers=min(info.max_layers, MAX_RUN_LAYERS),
                   max_fan_in=info.max_width, max_fan_out=info.max_width,
                   weight_bytes=info.weight_words * beat_bytes(info.lanes, info.rows),
                   bias_depth=info.bias_depth)


def check_fits(layers: Sequence[Layer], limits: DeviceLimits) -> None:
    """Raise :class:`CapacityError` unless ``layers`` fit a device of ``limits``.

    Checks the layer count, every K against ``max_fan_in`` (the input width is layer 0's K),
    every M against ``max_fan_out``, the weight memory in whole ``rows x lanes`` tiles and the
    biases in whole blocks of ``rows``; the message lists every limit that is exceeded, with
    its value.
    """
    if not isinstance(limits, DeviceLimits):
        raise TypeError(f"limits must be a trine.contract.params.DeviceLimits, not "
                        f"{type(limits).__name__}")
    problems = []
    if len(layers) > limits.max_layers:
        problems.append(f"{len(layers)} layers, more than max_layers = {limits.max_layers}")
    for i, layer in enumerate(layers):
        if layer.fan_in > limits.max_fan_in:
            problems.append(f"layer {i} has fan-in K = {layer.fan_in}, more than "
                            f"max_fan_in = {limits.max_fan_in}")
        if layer.fan_out > limits.max_fan_out:
            problems.append(f"layer {i} has fan-out M = {layer.fan_out}, more than "
                            f"max_fan_out = {limits.max_fan_out}")
    need = weight_words(layers, limits.lanes, limits.rows) * beat_bytes(limits.lanes,
                                                                          limits.rows)
    if need > limits.weight_bytes:
        problems.append(f"the weights need {need} bytes in {limits.rows} x {limits.lanes} "
                        f"tiles, more than weight_bytes = {limits.weight_bytes}")
    biases = bias_entries(layers, limits.rows)
    if biases > limits.bias_depth:
        problems.append(f"the biases need {biases} entries in blocks of {limits.rows}, more "
                        f"than bias_depth = {limits.bias_depth}")
    if problems:
        raise CapacityError("program does not fit the device: " + "; ".join(problems))


#: A device small enough for any supported board, for tests and first builds: 2 lanes x 1 row,
#: 256 weight words, layers up to 32 wide.
SMALL = AcceleratorParams(lanes=2, rows=1, weight_words=256, bias_depth=64, max_layers=4,
                          max_width=32, max_batch=1)
#: The simulated device's default (``trine sim serve`` without ``--board``): the iCE40UP5K's
#: 8 x 5 array (one 40-trit, 64-bit weight word per clock) with 2048 weight words in a generic
#: memory, layers up to 256 wide and batches of up to 16.
SIMULATED = AcceleratorParams(lanes=8, rows=5, weight_words=2048, bias_depth=1024,
                              max_layers=8, max_width=256, max_batch=16)
#: The iCEBreaker's device (iCE40UP5K): 8 lanes x 5 rows, the weights in the four SPRAM
#: blocks (16K words of 40 trits), 1024 biases, 32 layers, batches of 4. 8 x 5 is the largest
#: array that fits the chip with the rest of the accelerator (see the README's board table).
UP5K = AcceleratorParams(lanes=8, rows=5, weight_words=16384, bias_depth=1024, max_layers=32,
                         max_width=256, max_batch=4, decoder="rom", weight_memory="spram")
#: The ULX3S-85F's device (LFE5U-85F): a 32 x 8 array, 52 bytes (256 trits) per weight word in
#: block RAM, so it takes a beat per clock.
ECP5_85F = AcceleratorParams(lanes=32, rows=8, weight_words=1024, bias_depth=1024,
                             max_layers=32, max_width=256, max_batch=16)
#: The presets by name.
PRESETS = {"small": SMALL, "simulated": SIMULATED, "up5k": UP5K, "ecp5-85f": ECP5_85F}
