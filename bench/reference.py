"""Reference-model throughput next to a float32 NumPy matmul of the same shape (same run):
dense layers against a bare matmul, convolutions against a float32 im2col and matmul.

The reference (``trine.contract.reference.ternary_layer``) is exact integer arithmetic; it uses a
float
BLAS only where that is provably exact (see its module docstring). The comparison shows what
that exactness costs over a plain float32 matmul, and what a naive int64 matmul would cost.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench._common import best_time, save
from trine.contract.network import run_network
from trine.contract.reference import Conv, Layer, im2col, ternary_layer

# (name, batch N, fan-in K, outputs M)
SHAPES = [
    ("digits MLP layer", 1797, 64, 64),
    ("MNIST-1D MLP layer", 4000, 40, 256),
    ("wide layer", 4096, 1024, 256),
    ("batch-1 large layer", 1, 4096, 4096),
]
# (name, batch N, input (C, *spatial), C_out, kernel, stride, padding)
CONV_SHAPES = [
    ("MNIST-1D CNN conv 1", 1000, (1, 40), 64, (5,), 2, 1),
    ("MNIST-1D CNN conv 2", 1000, (64, 19), 64, (3,), 2, 1),
    ("digits CNN conv 2", 450, (16, 4, 4), 32, (3, 3), 1, 1),
    ("wide Conv2d", 64, (32, 16, 16), 64, (3, 3), 1, 1),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    hdr = f"{'shape':22s} {'N x K x M':>18s} {'reference':>10s} {'float32':>10s} {'int64':>10s}"
    print(hdr + f" {'ref/f32':>8s} {'GMAC/s ref':>10s}")
    for name, n, k, m in SHAPES:
        w = rng.integers(-1, 2, (m, k)).astype(np.int8)
        x = rng.integers(-128, 128, (n, k)).astype(np.int8)
        layer = Layer(w, rng.integers(-1000, 1000, m), 6, True)
        xf, wf = x.astype(np.float32), w.T.astype(np.float32)
        xi, wi = x.astype(np.int64), w.T.astype(np.int64)
        t_ref = best_time(lambda x=x, layer=layer: ternary_layer(x, layer))
        t_f32 = best_time(lambda xf=xf, wf=wf: xf @ wf)
        t_i64 = best_time(lambda xi=xi, wi=wi: xi @ wi, repeat=3)
        macs = n * k * m
        rows.append({"shape": name, "N": n, "K": k, "M": m, "reference_s": t_ref,
                     "float32_matmul_s": t_f32, "int64_matmul_s": t_i64,
                     "reference_over_float32": t_ref / t_f32,
                     "reference_GMAC_per_s": macs / t_ref / 1e9})
        print(f"{name:22s} {f'{n}x{k}x{m}':>18s} {t_ref * 1e3:8.2f}ms {t_f32 * 1e3:8.2f}ms "
              f"{t_i64 * 1e3:8.2f}ms {t_ref / t_f32:8.2f} {macs / t_ref / 1e9:10.2f}")
    conv_rows = []
    print(f"\n{'convolution':22s} {'N, input, C_out':>24s} {'reference':>10s} "
          f"{'f32 im2col':>10s} {'f32 matmul':>10s} {'ref/f32':>8s}")
    for name, n, shape, c_out, kernel, stride, padding in CONV_SHAPES:
        w = rng.integers(-1, 2, (c_out, shape[0], *kernel)).astype(np.int8)
        layer = Conv(w, rng.integers(-1000, 1000, c_out), stride, padding, 6, True)
        x = rng.integers(-128, 128, (n, *shape)).astype(np.int8)
        xf = x.astype(np.float32)
        wf = w.reshape(c_out, -1).T.astype(np.float32)
        s, p = (stride,) * len(kernel), (padding,) * len(kernel)
        cols = im2col(xf, kernel, s, p, np.float32)
        t_ref = best_time(lambda x=x, layer=layer, shape=shape: run_network(x, [layer], shape))
        t_f32 = best_time(lambda xf=xf, wf=wf, kernel=kernel, s=s, p=p:
                          im2col(xf, kernel, s, p, np.float32) @ wf)
        t_mm = best_time(lambda cols=cols, wf=wf: cols @ wf)
        macs = cols.shape[0] * cols.shape[1] * c_out
        conv_rows.append({"shape": name, "N": n, "input": list(shape), "C_out": c_out,
                          "kernel": list(kernel), "stride": stride, "padding": padding,
                          "reference_s": t_ref, "float32_im2col_matmul_s": t_f32,
                          "float32_matmul_s": t_mm, "reference_over_float32": t_ref / t_f32,
                          "reference_GMAC_per_s": macs / t_ref / 1e9})
        print(f"{name:22s} {f'{n}, {shape}, {c_out}':>24s} {t_ref * 1e3:8.2f}ms "
              f"{t_f32 * 1e3:8.2f}ms {t_mm * 1e3:8.2f}ms {t_ref / t_f32:8.2f}")
    figures = {"note": "reference = int8 -> exact BLAS matmul -> int64 requantisation; "
                       "float32 = bare matmul of pre-converted float32 arrays; for "
                       "convolutions, float32 = im2col of a float32 input and the matmul",
               "results": rows, "convolutions": conv_rows}
    print(f"saved {save('reference', figures)}")
    return figures


if __name__ == "__main__":
    main()
