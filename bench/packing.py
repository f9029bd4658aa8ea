"""Trit packing throughput (trine.contract.spec packers), one core, MB/s of packed bytes."""

from __future__ import annotations

import argparse

import numpy as np

from bench._common import best_time, save
from trine.contract.spec import pack_trits, pack_trits_2bit, unpack_trits, unpack_trits_2bit

TARGET_MB_S = 50.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trits", type=int, default=20_000_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, args.trits).astype(np.int8)
    wf = w.astype(np.float32)
    dense, two_bit = pack_trits(w), pack_trits_2bit(w)
    cases = {
        "pack_trits (5/byte) from int8": (lambda: pack_trits(w), len(dense)),
        "pack_trits (5/byte) from float32": (lambda: pack_trits(wf), len(dense)),
        "unpack_trits (5/byte)": (lambda: unpack_trits(dense, w.size), len(dense)),
        "pack_trits_2bit (4/byte) from int8": (lambda: pack_trits_2bit(w), len(two_bit)),
        "unpack_trits_2bit (4/byte)": (lambda: unpack_trits_2bit(two_bit, w.size), len(two_bit)),
    }
    rows = {}
    print(f"packing {args.trits:,} trits, best of 5, one core")
    print(f"{'operation':40s} {'MB/s packed':>12s} {'Mtrit/s':>9s}")
    for name, (fn, nbytes) in cases.items():
        t = best_time(fn, repeat=5, min_time=0.3)
        rows[name] = {"seconds": t, "packed_MB_per_s": nbytes / t / 1e6,
                      "Mtrits_per_s": w.size / t / 1e6}
        print(f"{name:40s} {nbytes / t / 1e6:12.1f} {w.size / t / 1e6:9.1f}")
    ok = rows["pack_trits (5/byte) from int8"]["packed_MB_per_s"] >= TARGET_MB_S
    figures = {"trits": args.trits, "target_packed_MB_per_s": TARGET_MB_S,
               "target_met": ok, "results": rows}
    print(f"target >= {TARGET_MB_S:.0f} MB/s packed output: {'met' if ok else 'MISSED'}")
    print(f"saved {save('packing', figures)}")
    return figures


if __name__ == "__main__":
    main()
