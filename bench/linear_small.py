"""Small-batch ``linear`` (M <= 8 rows) against torch, same run, 2 threads.

Per shape, microseconds per call of
  lk      ``lk.linear`` (the public op, Python layer included),
  native  ``_lepton_cpu.linear`` with a preallocated output (kernel plus the
          binding's checks, no Python op layer),
  packed  the same native call with the GEMV-shaped path switched off
          (``set_gemv_enabled(False)``: the packed GEMM, the path before it),
  torch   ``torch.nn.functional.linear``,
and the ratios torch/lk, torch/native (> 1: faster than torch) and
packed/native (the gain of the GEMV path over the packed GEMM). Each time is
the best of repeated batches: the machine may be shared, and the minimum is
the least disturbed. ``--path packed`` times lk and native on the packed GEMM.

Run: ``python bench/linear_small.py [--repeat N] [--path gemv|packed]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import lepton_kernels as lk
from lepton_kernels import _lepton_cpu

ROWS = (1, 2, 4, 8)
SHAPES = ((400, 120), (120, 84), (84, 10), (1152, 128), (784, 256))


def per_call_us(fn, repeat):
    """Best over `repeat` batches of the mean time of one call, in microseconds."""
    for _ in range(50):
        fn()
    inner = 200
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner * 1e6)
    return best


def time_native(x, w, b, out, repeat, gemv):
    _lepton_cpu.set_gemv_enabled(gemv)
    try:
        return per_call_us(lambda: _lepton_cpu.linear(x, w, b, out, False), repeat)
    finally:
        _lepton_cpu.set_gemv_enabled(True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed batches per case")
    parser.add_argument("--path", choices=("gemv", "packed"), default="gemv",
                        help="path for the lk and native columns")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lk.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"lk/native on the {args.path} path")
    print(f"{'M':>2} {'K':>5} {'N':>4} | {'lk':>7} {'native':>7} {'packed':>7} {'torch':>7} | "
          f"{'torch/lk':>8} {'torch/nat':>9} {'pack/nat':>8}")
    ratios = {"torch/lk": [], "torch/native": [], "packed/native": []}
    for k, n in SHAPES:
        for m in ROWS:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            out = np.empty((m, n), np.float32)
            xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            _lepton_cpu.set_gemv_enabled(args.path == "gemv")
            try:
                t_lk = per_call_us(lambda: lk.linear(x, w, b), args.repeat)
            finally:
                _lepton_cpu.set_gemv_enabled(True)
            t_nat = time_native(x, w, b, out, args.repeat, args.path == "gemv")
            t_pack = time_native(x, w, b, out, args.repeat, False)
            t_th = per_call_us(lambda: torch.nn.functional.linear(xt, wt, bt), args.repeat)
            row = {"torch/lk": t_th / t_lk, "torch/native": t_th / t_nat, "packed/native": t_pack / t_nat}
            for key, v in row.items():
                ratios[key].append(v)
            print(f"{m:>2} {k:>5} {n:>4} | {t_lk:7.2f} {t_nat:7.2f} {t_pack:7.2f} {t_th:7.2f} | "
                  f"{row['torch/lk']:8.2f} {row['torch/native']:9.2f} {row['packed/native']:8.2f}")
    means = (f"{key} {float(np.exp(np.mean(np.log(v)))):.2f}" for key, v in ratios.items())
    print("geomean " + ", ".join(means))


if __name__ == "__main__":
    main()
