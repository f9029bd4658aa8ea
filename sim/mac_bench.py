"""What the MAC array bench checks: its configuration, stimulus, payload codec, model, scoreboard.

Pure NumPy plus Amaranth *layouts* (no cocotb): the runner, the cocotb test module and plain
unit tests all import it. Bit positions come from :func:`trine.hw.mac_array.mac_input_layout` and
:func:`trine.hw.mac_array.mac_output_layout`, never from numbers written here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from trine.contract.reference import ternary_matmul
from trine.contract.spec import MAX_FAN_IN, TritCode, accumulator_width, codes_to_trits
from trine.hw.mac_array import mac_input_layout, mac_output_layout

__all__ = [
    "REFERENCES",
    "MACBenchConfig",
    "Vector",
    "MACPayloadCodec",
    "MACModel",
    "make_model",
    "make_stimulus",
    "Scoreboard",
    "acc_width_of",
]

#: Reference models the bench can check against; all but "exact" are deliberately wrong, to
#: prove that the scoreboard can fail.
REFERENCES = ("exact", "off-by-one", "sign-flip")

_ENV_PREFIX = "TRINE_MAC_"


@dataclass(frozen=True)
class MACBenchConfig:
    """One bench run: the hardware parameters plus the stimulus and the handshake pattern.

    ``vectors`` counts the random vectors; the corner cases come on top. ``idle`` is the
    probability that the driver leaves ``valid`` low for a cycle between beats, ``backpressure``
    the probability that the monitor holds ``ready`` low in a cycle.
    """

    lanes: int
    rows: int
    act_width: int = 8
    max_fan_in: int = 4096
    register_every: int = 1
    correction: bool = True
    seed: int = 1
    vectors: int = 200
    idle: float = 0.25
    backpressure: float = 0.25
    reference: str = "exact"

    def __post_init__(self):
        for name in (
            "lanes",
            "rows",
            "act_width",
            "max_fan_in",
            "register_every",
            "seed",
            "vectors",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if self.lanes < 1 or self.rows < 1:
            raise ValueError(f"lanes and rows must be >= 1, not {self.lanes} and {self.rows}")
        if not 2 <= self.act_width <= 16:
            raise ValueError(f"act_width must be in [2, 16], not {self.act_width}")
        if not 1 <= self.max_fan_in <= MAX_FAN_IN:
            raise ValueError(f"max_fan_in must be in [1, {MAX_FAN_IN}], not {self.max_fan_in}")
        if self.register_every < 0 or self.vectors < 0 or self.seed < 0:
            raise ValueError("register_every, vectors and seed must be >= 0")
        for name in ("idle", "backpressure"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} probability must be in [0, 1), not {p!r}")
        if self.reference not in REFERENCES:
            raise ValueError(
                f"reference must be one of {', '.join(REFERENCES)}, not {self.reference!r}"
            )
        if not isinstance(self.correction, bool):
            raise TypeError(f"correction must be a bool, not {self.correction!r}")

    @property
    def hardware(self) -> dict:
        """Keyword arguments of :class:`trine.hw.mac_array.MACArray` (the Verilog depends on)."""
        return {
            "lanes": self.lanes,
            "rows": self.rows,
            "act_width": self.act_width,
            "max_fan_in": self.max_fan_in,
            "register_every": self.register_every,
            "correction": self.correction,
        }

    def to_env(self) -> dict[str, str]:
        """Environment variables that carry this configuration into the simulator process."""
        return {
            _ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MACBenchConfig:
        parse = {"int": int, "float": float, "str": str, "bool": lambda s: s == "True"}
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = _ENV_PREFIX + f.name.upper()
            if key in environ:
                kwargs[f.name] = parse[f.type](environ[key])
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Stimulus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    """One input vector: ``x`` (K,) activations, ``codes`` (rows, K) 2-bit trit codes."""

    label: str
    x: np.ndarray
    codes: np.ndarray


def _act_range(act_width: int) -> tuple[int, int]:
    return -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1


def random_nonzero_acts(rng: np.random.Generator, n: int, act_width: int) -> np.ndarray:
    """``n`` random activations, none of them 0 (padding that a zero code must gate)."""
    lo, hi = _act_range(act_width)
    v = rng.integers(lo, hi, size=n, endpoint=True)
    v[v == 0] = hi
    return v.astype(np.int32)


def _corner_vectors(cfg: MACBenchConfig, rng: np.random.Generator) -> list[Vector]:
    lo, hi = _act_range(cfg.act_width)
    kmax, rows = cfg.max_fan_in, cfg.rows
    pos, neg, zero, bad = (
        int(c) for c in (TritCode.POS, TritCode.NEG, TritCode.ZERO, TritCode.ILLEGAL)
    )

    def full(k: int, value: int) -> np.ndarray:
        return np.full(k, value, dtype=np.int32)

    def codes(k: int, code: int) -> np.ndarray:
        return np.full((rows, k), code, dtype=np.uint8)

    def rand_x(k: int) -> np.ndarray:
        return rng.integers(lo, hi, size=k, endpoint=True).astype(np.int32)

    alternating = np.array(
        [[(pos, neg)[(r + k) % 2] for k in range(kmax)] for r in range(rows)], dtype=np.uint8
    )
    x_alternating = np.array([(lo, hi)[k % 2] for k in range(kmax)], dtype=np.int32)
    row_extremes = np.array([[(pos, neg)[r % 2]] * kmax for r in range(rows)], dtype=np.uint8)
    out = [
        # x = min at the maximum K gives the extreme sums: -2**(aw-1) * K with all +1, and
        # +2**(aw-1) * K with all -1 (min * -1 does not fit in act_width bits).
        Vector("all +1, x=min, K=max", full(kmax, lo), codes(kmax, pos)),
        Vector("all -1, x=min, K=max", full(kmax, lo), codes(kmax, neg)),
        Vector("all +1, x=max, K=max", full(kmax, hi), codes(kmax, pos)),
        Vector("all -1, x=max, K=max", full(kmax, hi), codes(kmax, neg)),
        Vector("rows alternate +1/-1, x=min, K=max", full(kmax, lo), row_extremes),
        Vector("all 0, random x, K=max", rand_x(kmax), codes(kmax, zero)),
        Vector("all illegal 0b10, x=min, K=max", full(kmax, lo), codes(kmax, bad)),
        Vector("alternating signs, x=min, K=max", full(kmax, lo), alternating),
        Vector("alternating signs, x=min/max, K=max", x_alternating, alternating),
    ]
    # K = 1: every code against both extremes and a random value; rows see different codes.
    cycle = (pos, neg, zero, bad)
    for i, code in enumerate(cycle):
        for x in (lo, hi, int(rand_x(1)[0])):
            c = np.array([[cycle[(i + r) % 4]] for r in range(rows)], dtype=np.uint8)
            out.append(Vector(f"K=1, row 0 code {code:#04b}, x={x}", full(1, x), c))
    # Lengths around the beat width.
    for k in sorted({1, cfg.lanes - 1, cfg.lanes, cfg.lanes + 1, 2 * cfg.lanes + 1} - {0}):
        if k <= kmax:
            w = rng.choice(np.array([pos, neg, zero], dtype=np.uint8), size=(rows, k))
            out.append(Vector(f"random, K={k}", rand_x(k), w))
    return out


def _random_vector(cfg: MACBenchConfig, rng: np.random.Generator, index: int) -> Vector:
    lo, hi = _act_range(cfg.act_width)
    # Mostly short vectors (a few beats), sometimes long ones; the maximum K is a corner case.
    k_top = 4 * cfg.lanes if rng.random() < 0.75 else 32 * cfg.lanes
    k = int(rng.integers(1, min(cfg.max_fan_in, k_top), endpoint=True))
    if rng.random() < 0.2:
        x = rng.choice(np.array([lo, hi], dtype=np.int32), size=k)
    else:
        x = rng.integers(lo, hi, size=k, endpoint=True).astype(np.int32)
    p_zero = rng.random()
    p_neg = rng.random() * (1 - p_zero)
    probs = [p_zero, 1 - p_zero - p_neg, p_neg]
    w = rng.choice(
        np.array([TritCode.ZERO, TritCode.POS, TritCode.NEG], dtype=np.uint8),
        size=(cfg.rows, k),
        p=probs,
    )
    label = f"random #{index}, K={k}"
    if rng.random() < 0.1:
        w[rng.random(w.shape) < 0.2] = TritCode.ILLEGAL
        label += ", with illegal codes"
    return Vector(label, x, w)


def make_stimulus(cfg: MACBenchConfig, rng: np.random.Generator) -> list[Vector]:
    """Corner cases first, then ``cfg.vectors`` random vectors, shuffled together."""
    vectors = _corner_vectors(cfg, rng) + [_random_vector(cfg, rng, i) for i in range(cfg.vectors)]
    order = rng.permutation(len(vectors))
    return [vectors[i] for i in order]


# --------------------------------------------------------------------------------------------
# Payload codec
# --------------------------------------------------------------------------------------------


def _size(shape) -> int:
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


class MACPayloadCodec:
    """Packs vectors into input beats and unpacks output beats, following the layouts."""

    def __init__(self, lanes: int, rows: int, act_width: int, acc_width: int):
        self.lanes, self.rows, self.act_width, self.acc_width = lanes, rows, act_width, acc_width
        layout = mac_input_layout(lanes, rows, act_width)
        self.input_width = layout.size
        acts, codes, last = layout["acts"], layout["codes"], layout["last"]
        act_stride = _size(acts.shape.elem_shape)
        row_stride = _size(codes.shape.elem_shape)
        code_layout = codes.shape.elem_shape
        code_stride, code_width = _size(code_layout.elem_shape), _size(code_layout.elem_shape)
        # Bit index of every payload bit we drive: acts (lanes, aw), codes (rows, lanes, cw).
        self._act_bits = (
            acts.offset + act_stride * np.arange(lanes)[:, None] + np.arange(act_width)[None, :]
        )
        self._code_bits = (
            codes.offset
            + row_stride * np.arange(rows)[:, None, None]
            + code_stride * np.arange(lanes)[None, :, None]
            + np.arange(code_width)[None, None, :]
        )
        self._code_width = code_width
        self._last_bit = last.offset
        out = mac_output_layout(rows, acc_width)
        self.output_width = out.size
        self._out_stride = _size(out.elem_shape)

    def beats(self, vector: Vector, rng: np.random.Generator) -> list[int]:
        """Input payloads (ints) for ``vector``; a short tail beat is padded with zero codes
        and random nonzero activations, which the zero codes must gate."""
        k = vector.x.size
        n_beats = max(1, math.ceil(k / self.lanes))
        pad = n_beats * self.lanes - k
        x = np.concatenate(
            [
                vector.x.astype(np.int64),
                random_nonzero_acts(rng, pad, self.act_width).astype(np.int64),
            ]
        )
        codes = np.concatenate([vector.codes, np.zeros((self.rows, pad), np.uint8)], axis=1)
        x = x.reshape(n_beats, self.lanes)
        codes = codes.reshape(self.rows, n_beats, self.lanes).transpose(1, 0, 2).astype(np.int64)
        bits = np.zeros((n_beats, self.input_width), dtype=np.uint8)
        # `>>` on int64 is arithmetic, so the low bits are the two's complement encoding.
        bits[:, self._act_bits] = (x[:, :, None] >> np.arange(self.act_width)) & 1
        bits[:, self._code_bits] = (codes[..., None] >> np.arange(self._code_width)) & 1
        bits[-1, self._last_bit] = 1
        packed = np.packbits(bits, axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def rows_of(self, payload: int) -> np.ndarray:
        """Signed accumulators (int64, shape (rows,)) from an output payload."""
        mask, sign = (1 << self.acc_width) - 1, 1 << (self.acc_width - 1)
        out = np.empty(self.rows, dtype=np.int64)
        for r in range(self.rows):
            v = (payload >> (r * self._out_stride)) & mask
            out[r] = v - (v & sign) * 2
        return out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _wide_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`ternary_matmul` for activations wider than int8: the product is linear in ``x``,
    so split ``x`` into 7-bit digits ``x = sum_j d_j 2**(7j)`` (the top digit signed, the
    others in [0, 127]) and sum the reference's exact products of the digits."""
    x = np.asarray(x, dtype=np.int64)
    acc, shift = 0, 0
    while x.size and (x.min() < -128 or x.max() > 127):
        acc = acc + (ternary_matmul((x & 127).astype(np.int8), w) << shift)
        x, shift = x >> 7, shift + 7
    return acc + (ternary_matmul(x.astype(np.int8), w) << shift)


class MACModel:
    """What the array must output for a vector: the exact dot products from
    :func:`trine.contract.reference.ternary_matmul` (illegal codes count as 0), minus the number of
    -1
    weights per row when the array runs without its correction."""

    def __init__(self, correction: bool = True):
        self.correction = correction

    def expected(self, index: int, vector: Vector) -> np.ndarray:
        acc = _wide_matmul(vector.x, codes_to_trits(vector.codes, strict=False))
        if not self.correction:
            acc = acc - np.count_nonzero(vector.codes == TritCode.NEG, axis=1)
        return acc


class OffByOneModel(MACModel):
    """Deliberately wrong: adds 1 to one row of one vector."""

    def __init__(self, correction: bool = True, victim: int = 0):
        super().__init__(correction)
        self.victim = victim

    def expected(self, index: int, vector: Vector) -> np.ndarray:
        acc = super().expected(index, vector)
        if index == self.victim:
            acc[index % acc.size] += 1
        return acc


class SignFlipModel(MACModel):
    """Deliberately wrong: negates the first nonzero result it computes."""

    def __init__(self, correction: bool = True):
        super().__init__(correction)
        self.flipped = False

    def expected(self, index: int, vector: Vector) -> np.ndarray:
        acc = super().expected(index, vector)
        if not self.flipped and np.any(acc):
            row = int(np.flatnonzero(acc)[0])
            acc[row] = -acc[row]
            self.flipped = True
        return acc


def make_model(cfg: MACBenchConfig, n_vectors: int) -> MACModel:
    if cfg.reference == "off-by-one":
        return OffByOneModel(cfg.correction, victim=n_vectors // 2)
    if cfg.reference == "sign-flip":
        return SignFlipModel(cfg.correction)
    return MACModel(cfg.correction)


# --------------------------------------------------------------------------------------------
# Scoreboard
# --------------------------------------------------------------------------------------------


class Scoreboard:
    """Compares output vectors, in order, with the expected ones (``np.array_equal``)."""

    def __init__(self):
        self._expected: list[tuple[str, np.ndarray]] = []
        self.received = 0
        self.mismatches: list[str] = []
        self.unexpected = 0

    def expect(self, label: str, values: np.ndarray) -> None:
        self._expected.append((label, np.asarray(values, dtype=np.int64)))

    @property
    def pending(self) -> int:
        return len(self._expected) - self.received

    def receive(self, got: np.ndarray) -> None:
        if self.received >= len(self._expected):
            self.unexpected += 1
            return
        index = self.received
        label, want = self._expected[index]
        self.received += 1
        if not np.array_equal(want, got):
            row = int(np.flatnonzero(want != got)[0])
            self.mismatches.append(
                f"vector {index} ({label}), row {row}: expected {int(want[row])}, "
                f"got {int(got[row])} (expected {want.tolist()}, got {got.tolist()})"
            )

    def check(self) -> None:
        """Raise ``AssertionError`` describing the first problem, if there was any."""
        problems = []
        if self.mismatches:
            problems.append(
                f"{len(self.mismatches)} of {self.received} vectors mismatch; "
                f"first: {self.mismatches[0]}"
            )
        if self.pending:
            problems.append(f"{self.pending} of {len(self._expected)} vectors never came out")
        if self.unexpected:
            problems.append(f"{self.unexpected} unexpected output beats")
        if problems:
            raise AssertionError("; ".join(problems))


def acc_width_of(cfg: MACBenchConfig) -> int:
    return accumulator_width(cfg.max_fan_in, cfg.act_width)
