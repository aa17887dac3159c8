"""Per-call cost of small in-cache lepton_kernels calls against PyTorch, in the same run.

Each case times one lepton call and the torch call doing the same work on inputs
that fit in L1, so the time is almost all call path (argument intake, validation,
backend lookup, allocation, result wrapping), not arithmetic. Both libraries use
two threads. Timings are the median over rounds of the mean of a batch of calls;
lepton and torch alternate round by round so a noisy neighbour hits both alike.

Run: ``python bench/call_overhead.py [--rounds 30] [--calls 2000]``. Prints a
table of microseconds per call and torch_time / lepton_time (> 1: lepton faster),
and the geometric mean of the ratios. ``--frames`` instead counts, per lepton
call, the Python functions entered and the C functions called from Python: a
measure of the call path that a loaded machine does not blur.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import lepton_kernels as lk


def _cases(rng):
    """(name, lepton thunk, torch thunk); the inputs are shared through zero-copy views."""
    f32 = np.float32
    x16 = rng.standard_normal((16, 16)).astype(f32)
    xb = rng.standard_normal((1, 16, 5, 5)).astype(f32)
    bias16 = rng.standard_normal(16).astype(f32)
    xp = rng.standard_normal((1, 6, 14, 14)).astype(f32)
    wc = rng.standard_normal((16, 6, 5, 5)).astype(f32)
    bc = rng.standard_normal(16).astype(f32)
    xl = rng.standard_normal((1, 400)).astype(f32)
    wl = rng.standard_normal((120, 400)).astype(f32)
    bl = rng.standard_normal(120).astype(f32)
    logits = rng.standard_normal((4, 10)).astype(f32)
    target = rng.integers(0, 10, 4).astype(np.int64)
    t = torch.from_numpy
    tx16, txb, tb16, txp, twc, tbc = t(x16), t(xb), t(bias16), t(xp), t(wc), t(bc)
    txl, twl, tbl, tlog, ttar = t(xl), t(wl), t(bl), t(logits), t(target)
    tb4 = tb16.view(1, 16, 1, 1)
    return [
        ("relu 16x16", lambda: lk.relu(x16), lambda: torch.relu(tx16)),
        ("bias_relu 1x16x5x5", lambda: lk.bias_relu(xb, bias16), lambda: torch.relu(txb + tb4)),
        ("max_pool2d 1x6x14x14 k2", lambda: lk.max_pool2d(xp, 2), lambda: F.max_pool2d(txp, 2)),
        ("avg_pool2d 1x6x14x14 k2", lambda: lk.avg_pool2d(xp, 2), lambda: F.avg_pool2d(txp, 2)),
        ("conv2d 1x6x14x14->16 5x5", lambda: lk.conv2d(xp, wc, bc), lambda: F.conv2d(txp, twc, tbc)),
        ("linear 1x400->120 +bias", lambda: lk.linear(xl, wl, bl), lambda: F.linear(txl, twl, tbl)),
        ("cross_entropy 4x10", lambda: lk.cross_entropy(logits, target), lambda: F.cross_entropy(tlog, ttar)),
        ("relu torch in/out 16x16", lambda: lk.relu(tx16), lambda: torch.relu(tx16)),
    ]


def _per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(rounds: int, calls: int):
    """[(name, lepton seconds, torch seconds)] medians over ``rounds``."""
    results = []
    with torch.no_grad():
        for name, lk_fn, torch_fn in _cases(np.random.default_rng(0)):
            _per_call(lk_fn, calls // 4 + 1)  # warm-up: imports, caches, first allocations
            _per_call(torch_fn, calls // 4 + 1)
            lk_times, torch_times = [], []
            for _ in range(rounds):
                lk_times.append(_per_call(lk_fn, calls))
                torch_times.append(_per_call(torch_fn, calls))
            results.append((name, statistics.median(lk_times), statistics.median(torch_times)))
    return results


def count_calls(fn) -> tuple[int, int, list[str]]:
    """(Python frames entered, C functions called, the Python function names) for one ``fn()``."""
    fn()  # warm: first-call imports and caches are not the steady path
    events = []

    def record(frame, event, arg):
        if event == "call":
            events.append(frame.f_code.co_name)
        elif event == "c_call":
            events.append(None)

    sys.setprofile(record)
    try:
        fn()
    finally:
        sys.setprofile(None)
    python = [name for name in events[1:] if name is not None]  # events[0]: the case's own lambda
    return len(python), events.count(None) - 1, python  # - 1: the setprofile(None) call itself


def print_frames():
    print(f"{'case':28s} {'py frames':>10s} {'C calls':>8s}  python functions entered")
    for name, lk_fn, _ in _cases(np.random.default_rng(0)):
        python, c_calls, names = count_calls(lk_fn)
        print(f"{name:28s} {python:10d} {c_calls:8d}  {' '.join(names)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", action="store_true", help="count calls on the path instead of timing")
    args = parser.parse_args(argv)
    if args.frames:
        print_frames()
        return
    torch.set_num_threads(args.threads)
    lk.set_num_threads(args.threads)
    results = measure(args.rounds, args.calls)
    print(f"{'case':28s} {'lepton us':>10s} {'torch us':>10s} {'torch/lepton':>13s}")
    for name, lk_s, torch_s in results:
        print(f"{name:28s} {lk_s * 1e6:10.2f} {torch_s * 1e6:10.2f} {torch_s / lk_s:13.2f}")
    geomean = math.exp(sum(math.log(t / l) for _, l, t in results) / len(results))
    print(f"{'geomean torch/lepton':28s} {'':10s} {'':10s} {geomean:13.2f}")


if __name__ == "__main__":
    main()
