"""Soak: long runs of training steps and of small op calls must not grow the process's memory.

The resident set size (from /proc/self/statm) is sampled through the run; after a warm-up
(allocator pools, caches, lazily built plans) it must stay flat: the growth from the first
samples to the last and the fitted slope over the run both stay below a few MB. A per-call
leak of a kernel's scratch or of a pybind11 reference shows up as a steady slope.

The full runs (10,000 training steps, 1,000,000 small calls) are `slow` and run with
LEPTON_SOAK=1; the CI-sized runs make the same assertion over fewer steps.
"""
from __future__ import annotations

import gc
import mmap
import os

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import nn, optim

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
FULL = pytest.mark.skipif(os.environ.get("LEPTON_SOAK") != "1",
                          reason="full soak: LEPTON_SOAK=1 python -m pytest tests/test_soak.py -m slow")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def assert_flat_rss(step, steps: int, warmup: int, samples: int = 40, limit_mb: float = 6.0) -> np.ndarray:
    """Runs `step(i)` `warmup` times, then `steps` times with `samples` RSS readings; the growth
    (median of the last 5 readings minus median of the first 5) and the least-squares slope
    extrapolated over the run must stay below `limit_mb`."""
    for i in range(warmup):
        step(i)
    gc.collect()
    every = max(1, steps // samples)
    readings = []
    for i in range(steps):
        step(i)
        if i % every == 0:
            readings.append(rss_bytes())
    gc.collect()
    readings.append(rss_bytes())
    r = np.array(readings, dtype=np.float64) / MB
    growth = np.median(r[-5:]) - np.median(r[:5])
    slope = np.polyfit(np.arange(len(r)), r, 1)[0] * (len(r) - 1)
    assert growth < limit_mb and slope < limit_mb, (
        f"RSS grew {growth:.1f} MB (fitted {slope:.1f} MB) over {steps} steps after warm-up: "
        f"{r[0]:.1f} -> {r[-1]:.1f} MB")
    return r


def training_step_fn(seed: int = 0):
    """One Adam step of a small CNN (conv+ReLU, max-pool, linear; every kind of layer and its
    backward) on a fixed random batch of 8 single-channel 6x6 images, 3 classes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(36, 3))
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step(_):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(lk.Tensor(x)), y)
        loss.backward()
        opt.step()

    return step


def small_calls_fn():
    """A cycle of tiny calls through the public ops (forward, backward, loss, optimizer, int8)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    a = rng.standard_normal((2, 5)).astype(np.float32)
    lw = rng.standard_normal((3, 5)).astype(np.float32)
    p, g, m = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    t = np.array([0, 2])
    q = rng.integers(0, 255, (2, 5)).astype(np.uint8)
    qb = rng.integers(-128, 127, (5, 3)).astype(np.int8)
    calls = (
        lambda: lk.relu(x),
        lambda: lk.conv2d(x, w, padding=1),
        lambda: lk.max_pool2d(x, 2, return_indices=True),
        lambda: lk.avg_pool2d(x, 2),
        lambda: lk.linear(a, lw),
        lambda: lk.linear_backward(np.ones((2, 3), np.float32), a, lw),
        lambda: lk.cross_entropy(a, t),
        lambda: lk.sgd_step(p, g, m, lr=1e-3, momentum=0.9),
        lambda: lk.quantize(x, 0.1, 0),
        lambda: lk.matmul_integer(q, qb, 3, 0),
    )

    def step(i):
        calls[i % len(calls)]()

    return step


def test_training_steps_keep_memory_flat():
    assert_flat_rss(training_step_fn(), steps=2000, warmup=200)


def test_small_calls_keep_memory_flat():
    assert_flat_rss(small_calls_fn(), steps=100_000, warmup=5_000)


def test_flat_rss_check_sees_a_leak():
    """The check fails on a leak of 16 KB per step (24 MB over 1500 steps), in fresh pages (an
    anonymous mapping, written) so freed heap left by earlier tests cannot absorb it."""
    kept = []

    def leak(_):
        m = mmap.mmap(-1, 16384)
        m[::4096] = b"x" * 4  # touch each page: resident
        kept.append(m)

    with pytest.raises(AssertionError, match="RSS grew"):
        assert_flat_rss(leak, steps=1500, warmup=10, limit_mb=6.0)
    for m in kept:
        m.close()


@pytest.mark.slow
@FULL
def test_training_soak_full():
    assert_flat_rss(training_step_fn(), steps=10_000, warmup=500)


@pytest.mark.slow
@FULL
def test_small_calls_soak_full():
    assert_flat_rss(small_calls_fn(), steps=1_000_000, warmup=20_000)
