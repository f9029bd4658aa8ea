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

from trine.contract.device_image import (
    CONV_ENTRY_WORDS,
    DENSE_ENTRY_WORDS,
    CapacityError,
    DeviceImage,
    beat_bytes,
    compile_image,
)
from trine.contract.errors import ParameterError, ParameterTypeError, check_int
from trine.contract.network import default_input_shape, layer_kind
from trine.contract.protocol import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    READABLE,
    DeviceInfo,
    Feature,
    Target,
    readable_mask,
)
from trine.contract.reference import Conv, Layer
from trine.contract.spec import SPEC_VERSION

__all__ = [
    "DECODERS",
    "WEIGHT_MEMORIES",
    "RAM_OUTPUTS",
    "READBACKS",
    "SPRAM_DEPTH",
    "SPRAM_WIDTH",
    "SPRAM_BLOCKS",
    "MAX_RUN_LAYERS",
    "MAX_DEPTH",
    "MAX_RX_BUFFER",
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
#: How block RAM reads are used: in the cycle the data leaves the RAM, or registered once more
#: first. ``"registered"``: the trit decoder's ROMs (codes and illegal-byte flags) and the
#: activation pool (the feed's words and host reads) take a cycle more, and the layer table,
#: which the sequencer uses in the cycle it reads it, is built from LUTs. ECP5 block RAM holds
#: those registers for free (its output register, ``trine.flow.ecp5``), which takes the RAM's
#: slow clock-to-output (about 5.8 ns in nextpnr's model) off every path after it.
RAM_OUTPUTS = ("direct", "registered")
#: Which memories READ reads: every one of ``trine.contract.protocol.READABLE``, or the
#: activation pool only (the other three's read multiplexers cost about 120 iCE40 cells).
READBACKS = ("all", "pool")
#: Words and bits per word of one iCE40UP5K ``SB_SPRAM256KA``, and the blocks on the chip.
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
SPRAM_BLOCKS = 4
#: RUN carries the layer count in one byte.
MAX_RUN_LAYERS = 0xFF
#: Deepest memory a 16-bit layer-table field can address (weight and bias bases, pool words).
MAX_DEPTH = 1 << 16
#: The largest receive buffer INFO can report (u16).
MAX_RX_BUFFER = 1 << 15


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
    act_words : int
        Words of the activation pool, ``lanes`` bytes each: a layer runs when its input and
        output (times the batch) fit (:mod:`trine.contract.device_image`).
    table_words : int
        16-bit words of the layer table (:data:`DENSE_ENTRY_WORDS` per dense layer,
        :data:`CONV_ENTRY_WORDS` per convolution).
    max_batch : int
        Inputs per RUN (fewer when the pool holds fewer).
    watchdog_bits : int
        A RUN still busy after ``2**watchdog_bits`` cycles is stopped and answered with
        ``TIMEOUT`` (a layer table whose loops would run for ever cannot hang the device).
    decoder : str
        One of :data:`DECODERS`.
    weight_memory : str
        One of :data:`WEIGHT_MEMORIES`; ``"spram"`` holds at most :data:`SPRAM_DEPTH` words of
        ``SPRAM_BLOCKS * SPRAM_WIDTH / 8`` bytes.
    ram_output : str
        One of :data:`RAM_OUTPUTS`: ``"registered"`` adds a cycle to the array's feed and to
        host reads of the pool.
    readback : str
        One of :data:`READBACKS` (INFO's ``readable``).
    ternary_act : bool
        Whether the requantiser also computes ternary outputs (layers with a
        ``ternary_threshold``, stored one trit per byte; INFO's ``features``). A device without
        it refuses such programs (:func:`check_fits`).
    rx_buffer : int
        Bytes of the receive buffer in front of the frame receiver (INFO's ``rx_buffer``): a
        power of two up to :data:`MAX_RX_BUFFER`, or 0 for none (the host then waits for
        every answer). 2048 bytes are four iCE40 block RAMs, one ECP5 DP16KD.

    Raises
    ------
    ParameterError, ParameterTypeError
        For a value out of range or of the wrong type, naming it.
    """

    lanes: int
    rows: int
    weight_words: int
    bias_depth: int
    act_words: int
    table_words: int
    max_batch: int = 1
    watchdog_bits: int = 20
    decoder: str = "rom"
    weight_memory: str = "generic"
    ram_output: str = "direct"
    readback: str = "all"
    ternary_act: bool = False
    rx_buffer: int = 2048

    def __post_init__(self):
        check_int("Lane count", self.lanes, 1)
        check_int("Row count", self.rows, 1)
        check_int("Weight memory depth", self.weight_words, 1, MAX_DEPTH)
        check_int("Bias memory depth", self.bias_depth, 1, MAX_DEPTH)
        check_int("Activation pool depth", self.act_words, 2, MAX_DEPTH)
        check_int("Layer table depth", self.table_words, DENSE_ENTRY_WORDS, MAX_DEPTH)
        check_int("Maximum batch", self.max_batch, 1, 0xFFFF)
        check_int("Watchdog bits", self.watchdog_bits, 8, 31)
        check_int("Receive buffer", self.rx_buffer, 0, MAX_RX_BUFFER)
        if self.rx_buffer & (self.rx_buffer - 1) or self.rx_buffer == 1:
            raise ParameterError(f"receive buffer must be 0 or a power of two >= 2 bytes, not "
                                 f"{self.rx_buffer}")
        if not isinstance(self.ternary_act, bool):
            raise ParameterTypeError(f"ternary_act must be a bool, not {self.ternary_act!r}")
        for name, value, allowed in (("decoder", self.decoder, DECODERS),
                                     ("weight memory", self.weight_memory, WEIGHT_MEMORIES),
                                     ("RAM output", self.ram_output, RAM_OUTPUTS),
                                     ("readback", self.readback, READBACKS)):
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
    def max_run_cycles(self) -> int:
        """Cycles after which a RUN ends with ``TIMEOUT``."""
        return 1 << self.watchdog_bits

    # ---- what the device says, and what it holds -----------------------------------------

    def device_info(self, clock_hz: int = 0, baud: int = 0) -> DeviceInfo:
        """What a device of these parameters answers to INFO (``clock_hz`` and ``baud`` are
        reported, never used by the host but for time estimates)."""
        return DeviceInfo(
            spec_version=SPEC_VERSION, protocol_version=PROTOCOL_VERSION, lanes=self.lanes,
            rows=self.rows, max_batch=self.max_batch, max_payload=MAX_PAYLOAD,
            act_words=self.act_words, table_words=self.table_words,
            weight_words=self.weight_words, bias_depth=self.bias_depth, clock_hz=int(clock_hz),
            baud=int(baud), max_run_cycles=self.max_run_cycles,
            readable=readable_mask(READABLE if self.readback == "all" else [Target.INPUT]),
            features=int(Feature.TERNARY_ACT) if self.ternary_act else 0,
            rx_buffer=self.rx_buffer,
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
        return {k: v for k, v in self.as_dict().items()
                if isinstance(v, int) and not isinstance(v, bool)}


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """The capacity of a device, as its INFO describes it.

    Attributes
    ----------
    lanes, rows : the MAC array's shape (activations per beat, parallel outputs)
    act_words : words of ``lanes`` bytes in the activation pool
    table_words : 16-bit words of the layer table
    weight_bytes : weight memory in bytes, holding ``rows x lanes`` tiles at 5 trits per byte
    bias_depth : folded biases held, ``rows`` per block of outputs
    max_batch : inputs per RUN
    ternary_act : whether it computes ternary outputs (INFO's ``features``)
    """

    lanes: int
    rows: int
    act_words: int
    table_words: int
    weight_bytes: int
    bias_depth: int
    max_batch: int = 1
    ternary_act: bool = False

    def __post_init__(self):
        if not isinstance(self.ternary_act, bool):
            raise ParameterError(f"device limit ternary_act must be a bool, not "
                                 f"{self.ternary_act!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "ternary_act":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"device limit {f.name} must be a positive integer, "
                                     f"not {v!r}")

    @classmethod
    def from_info(cls, info: DeviceInfo) -> DeviceLimits:
        return cls(lanes=info.lanes, rows=info.rows, act_words=info.act_words,
                   table_words=info.table_words,
                   weight_bytes=info.weight_words * beat_bytes(info.lanes, info.rows),
                   bias_depth=info.bias_depth, max_batch=info.max_batch,
                   ternary_act=bool(info.features & Feature.TERNARY_ACT))


def check_fits(layers: Sequence, limits: DeviceLimits,
               input_shape: Sequence[int] | None = None) -> DeviceImage:
    """The device image of ``layers`` for a device of ``limits``, or :class:`CapacityError`.

    The image is compiled (:func:`trine.contract.device_image.compile_image`: a layer whose
    input and output do not fit the activation pool for one sample is named with the words
    and bytes it needs); then the layer count (at most :data:`MAX_RUN_LAYERS` weighted
    layers, RUN's one byte), the weight memory (whole ``rows x lanes`` tiles), the biases
    (whole blocks of ``rows``) and the layer table are checked, and the message lists every
    limit that is exceeded, naming the layer that needs the most of each.
    ``input_shape`` defaults to ``(K,)`` of a first dense layer.
    """
    if not isinstance(limits, DeviceLimits):
        raise TypeError(f"limits must be a trine.contract.params.DeviceLimits, not "
                        f"{type(limits).__name__}")
    layers = tuple(layers)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(layers)
    image = compile_image(layers, shape, limits.lanes, limits.rows, limits.act_words,
                          limits.max_batch, ternary_act=limits.ternary_act)
    weighted = [(i, x) for i, x in enumerate(layers) if isinstance(x, Layer | Conv)]
    bb = beat_bytes(limits.lanes, limits.rows)
    problems = []
    if len(image.entries) > MAX_RUN_LAYERS:
        problems.append(f"{len(image.entries)} weighted layers, more than a RUN can name "
                        f"({MAX_RUN_LAYERS})")

    def largest(sizes, unit):
        j = max(range(len(sizes)), key=sizes.__getitem__)
        i, layer = weighted[j]
        return f"layer {i} ({layer_kind(layer)}) the most, {sizes[j]} {unit}"

    entries = image.entries
    weight_sizes = [(entries[j + 1].weight_base if j + 1 < len(entries) else image.weight_words)
                    - e.weight_base for j, e in enumerate(entries)]
    need = image.weight_words * bb
    if need > limits.weight_bytes:
        problems.append(f"the weights need {need} bytes in {limits.rows} x {limits.lanes} "
                        f"tiles ({largest([w * bb for w in weight_sizes], 'bytes')}), more "
                        f"than weight_bytes = {limits.weight_bytes}")
    if len(image.biases) > limits.bias_depth:
        most = largest([e.blocks * limits.rows for e in entries], "entries")
        problems.append(f"the biases need {len(image.biases)} entries in blocks of "
                        f"{limits.rows} ({most}), more than bias_depth = {limits.bias_depth}")
    if image.table_words > limits.table_words:
        problems.append(f"the layer table needs {image.table_words} words "
                        f"({DENSE_ENTRY_WORDS} per dense layer, {CONV_ENTRY_WORDS} per "
                        f"convolution), more than table_words = {limits.table_words}")
    if problems:
        raise CapacityError("program does not fit the device: " + "; ".join(problems))
    return image


#: A device small enough for any supported board, for tests and first builds: 2 lanes x 1 row,
#: 256 weight words, a pool of 32 words (64 bytes).
SMALL = AcceleratorParams(lanes=2, rows=1, weight_words=256, bias_depth=64, act_words=32,
                          table_words=64, max_batch=1, watchdog_bits=20)
#: The simulated device's default (``trine sim serve`` without ``--board``): the iCE40UP5K's
#: 8 x 5 array (one 40-trit, 64-bit weight word per clock) with 2048 weight words in a generic
#: memory, a pool of 1024 words (8 KiB) and batches of up to 16, with ternary outputs. Its
#: watchdog (2**20 cycles) is also how long the simulation bridge waits for an answer the
#: device may have dropped.
SIMULATED = AcceleratorParams(lanes=8, rows=5, weight_words=2048, bias_depth=1024,
                              act_words=1024, table_words=512, max_batch=16, watchdog_bits=20,
                              ternary_act=True)
#: The iCEBreaker's device (iCE40UP5K): 8 lanes x 5 rows, the weights in the four SPRAM
#: blocks (16K words of 40 trits), 1024 biases, a pool of 256 words (2 KiB, four block RAMs),
#: a table of 256 words (one block RAM), batches of 4. 8 x 5 is the largest array that fits
#: the chip with the rest of the accelerator (see the README's board table); READ reads the
#: pool only, and ternary outputs are left out, for want of room.
UP5K = AcceleratorParams(lanes=8, rows=5, weight_words=16384, bias_depth=1024, act_words=256,
                         table_words=256, max_batch=4, watchdog_bits=26, decoder="rom",
                         weight_memory="spram", readback="pool")
#: The ULX3S-85F's device (LFE5U-85F): a 32 x 8 array, 52 bytes (256 trits) per weight word in
#: block RAM, so it takes a beat per clock; block RAM reads go through the RAMs' output
#: registers (``ram_output="registered"``), for the clock. It computes ternary outputs.
ECP5_85F = AcceleratorParams(lanes=32, rows=8, weight_words=1024, bias_depth=1024,
                             act_words=256, table_words=512, max_batch=16, watchdog_bits=26,
                             ram_output="registered", ternary_act=True)
#: The presets by name.
PRESETS = {"small": SMALL, "simulated": SIMULATED, "up5k": UP5K, "ecp5-85f": ECP5_85F}
