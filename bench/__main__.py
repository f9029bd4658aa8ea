"""Run the benchmarks: ``python -m bench [NAME ...]``; figures go to bench/results/*.json."""

from __future__ import annotations

import argparse
import importlib
import time

BENCHES = ["packing", "reference", "device", "sim_engines", "area", "boards", "qat", "qat_cnn",
           "evolve", "evolve_islands", "regions", "import_accuracy", "fatnn", "link_latency"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHES)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    for name in args.names or BENCHES:
        print(f"\n=== bench.{name} ===", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"bench.{name}").main([])
        print(f"(bench.{name}: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
