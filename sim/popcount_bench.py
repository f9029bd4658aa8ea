"""The popcount (trit x trit) MAC array's cocotb bench: configuration, stimulus, payload codec,
model, and the runner that builds the Verilog once per simulator and runs
:mod:`trine.sim.popcount_array_tb`.

The model is :func:`trine.contract.reference.ternary_matmul` on the trits, so the hardware is
checked against the normative reference; ``reference="off-by-one"`` corrupts one expected
vector, which the bench must catch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trine.contract.reference import ternary_matmul
from trine.contract.spec import TritCode, ternary_accumulator_width, trits_to_codes
from trine.sim.runner import SimulationError, build_verilog, failures, tail

__all__ = ["PopcountBenchConfig", "PopcountCodec", "make_vectors", "expected", "run_popcount"]

TOPLEVEL = "popcount_array"
TEST_MODULE = "trine.sim.popcount_array_tb"
TIMESCALE = ("1ns", "1ps")
REFERENCES = ("exact", "off-by-one")
_ENV = "TRINE_POPCOUNT_CONFIG"


@dataclass(frozen=True)
class PopcountBenchConfig:
    """One bench run: the array's parameters and the traffic."""

    lanes: int
    rows: int
    max_fan_in: int = 64
    register_every: int = 1
    form: str = "fatnn"
    seed: int = 1
    vectors: int = 200
    idle: float = 0.3
    backpressure: float = 0.3
    reference: str = "exact"

    def __post_init__(self):
        for name in ("idle", "backpressure"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} probability must be in [0, 1), not "
                                 f"{getattr(self, name)}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}")

    @property
    def hardware(self) -> dict:
        return dict(lanes=self.lanes, rows=self.rows, max_fan_in=self.max_fan_in,
                    register_every=self.register_every, form=self.form)

    @property
    def acc_width(self) -> int:
        return ternary_accumulator_width(self.max_fan_in)

    def to_env(self) -> dict[str, str]:
        return {_ENV: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_env(cls, env) -> PopcountBenchConfig:
        return cls(**json.loads(env[_ENV]))


class PopcountCodec:
    """Beats as the integers of :func:`trine.hw.popcount_array.popcount_input_layout`: ``acts``
    (2 bits per lane, lane 0 lowest), then ``codes`` row by row, then ``last``."""

    def __init__(self, lanes: int, rows: int, acc_width: int):
        self.lanes, self.rows, self.acc_width = lanes, rows, acc_width
        self.input_width = 2 * lanes * (rows + 1) + 1
        self.output_width = rows * acc_width

    def beats(self, x: np.ndarray, w: np.ndarray, pad_code: int = TritCode.ZERO) -> list[int]:
        """The beats of one vector (trits ``x`` (K,), ``w`` (rows, K)); the tail's codes are
        ``pad_code`` (zero, or the illegal code, which must count as zero too)."""
        k, lanes = len(x), self.lanes
        n = -(-k // lanes)
        acts = np.full(n * lanes, pad_code, np.int64)
        acts[:k] = trits_to_codes(x)
        codes = np.full((self.rows, n * lanes), pad_code, np.int64)
        codes[:, :k] = trits_to_codes(w)
        out = []
        for b in range(n):
            word = 0
            for lane in range(lanes):
                word |= int(acts[b * lanes + lane]) << (2 * lane)
                for r in range(self.rows):
                    word |= int(codes[r, b * lanes + lane]) << (2 * lanes * (r + 1) + 2 * lane)
            word |= int(b == n - 1) << (2 * lanes * (self.rows + 1))
            out.append(word)
        return out

    def rows_of(self, payload: int) -> np.ndarray:
        """The signed accumulators of one output payload."""
        mask, sign = (1 << self.acc_width) - 1, 1 << (self.acc_width - 1)
        vals = [(payload >> (r * self.acc_width)) & mask for r in range(self.rows)]
        return np.array([v - (1 << self.acc_width) if v & sign else v for v in vals], np.int64)


def make_vectors(cfg: PopcountBenchConfig, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Corner cases (every product +1 or -1 at the maximum fan-in, K = 1, K = lanes + 1) and
    random vectors of random length and sparsity."""
    k, rows = cfg.max_fan_in, cfg.rows
    vecs = [(np.ones(k), np.ones((rows, k))), (np.ones(k), -np.ones((rows, k))),
            (-np.ones(k), -np.ones((rows, k))),
            (rng.integers(-1, 2, 1), rng.integers(-1, 2, (rows, 1)))]
    if cfg.lanes + 1 <= k:
        n = cfg.lanes + 1
        vecs.append((rng.integers(-1, 2, n), rng.integers(-1, 2, (rows, n))))
    for _ in range(cfg.vectors):
        n = int(rng.integers(1, k + 1))
        density = rng.random()
        x = rng.integers(-1, 2, n) * (rng.random(n) < density)
        vecs.append((x, rng.integers(-1, 2, (rows, n))))
    return [(x.astype(np.int8), w.astype(np.int8)) for x, w in vecs]


def expected(cfg: PopcountBenchConfig, vectors) -> list[np.ndarray]:
    """What the array must output per vector: the reference, or a corrupted one on purpose."""
    out = [ternary_matmul(x, w) for x, w in vectors]
    if cfg.reference == "off-by-one":
        out[len(out) // 2] = out[len(out) // 2] + 1
    return out


def _verilog(cfg: PopcountBenchConfig) -> str:
    from trine.hw.popcount_array import PopcountArray
    from trine.hw.verilog import to_verilog

    return to_verilog(PopcountArray(**cfg.hardware), TOPLEVEL)


def run_popcount(simulator: str, cfg: PopcountBenchConfig,
                 build_root: Path | None = None) -> dict:
    """Build (once) and run the bench of ``cfg`` on ``simulator``; the summary it wrote.

    Raises
    ------
    SimulationError
        If the build fails, the simulator dies, or the bench reports a failure (with the
        scoreboard's first mismatch).
    """
    from cocotb_tools.runner import get_runner

    label = f"popcount-{cfg.form}-{cfg.lanes}x{cfg.rows}"
    build_dir = build_verilog(simulator, _verilog(cfg), TOPLEVEL, label, build_root)
    key = hashlib.sha256(json.dumps(cfg.to_env(), sort_keys=True).encode()).hexdigest()[:10]
    run_dir = build_dir / "runs" / f"{cfg.reference}-s{cfg.seed}-{key}-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results, summary_file, log = (run_dir / n for n in ("results.xml", "summary.json", "sim.log"))
    try:
        get_runner(simulator).test(
            test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=run_dir, results_xml=str(results),
            extra_env=cfg.to_env() | {"TRINE_POPCOUNT_SUMMARY": str(summary_file)},
            seed=cfg.seed, timescale=TIMESCALE, log_file=log)
    except (RuntimeError, SystemExit):
        pass  # the results file says what happened, in and out of pytest
    if not results.is_file():
        raise SimulationError(f"{simulator} ended without a results file; last lines of "
                              f"{log}:\n{tail(log)}")
    n_cases, messages = failures(results)
    if n_cases == 0:
        raise SimulationError(f"{simulator} ran no test (see {log}):\n{tail(log)}")
    if messages:
        raise SimulationError(f"{simulator} bench failed: " + "; ".join(messages)
                              + f" (log: {log})")
    summary = json.loads(summary_file.read_text())
    summary.update(simulator=simulator, build_dir=str(build_dir))
    return summary
