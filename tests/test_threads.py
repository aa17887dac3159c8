"""Threads: all cores by default, set_num_threads / LEPTON_NUM_THREADS, and no silent drop to one
thread when torch, NumPy and scikit-learn (each possibly with its own OpenMP runtime) share the process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lepton_kernels as lk

_lepton_cpu = pytest.importorskip("lepton_kernels._lepton_cpu")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

PROBE = """
import json, sys
for name in sys.argv[1].split(","):
    __import__(name)
import numpy as np
import lepton_kernels as lk
from lepton_kernels import _lepton_cpu
x = np.random.default_rng(0).standard_normal((64, 16, 32, 32)).astype(np.float32)
y = lk.max_pool2d(x, 2)
import torch
ok = bool(torch.equal(torch.from_numpy(y), torch.nn.functional.max_pool2d(torch.from_numpy(x), 2)))
print(json.dumps({"threads": lk.get_num_threads(), "in_region": _lepton_cpu.parallel_region_threads(),
                  "correct": ok}))
"""


def _probe(order, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LEPTON_NUM_THREADS")}
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order", ["torch,sklearn,numpy", "sklearn,torch", "lepton_kernels,torch,sklearn",
                                   "numpy,lepton_kernels"])
def test_mixed_openmp_runtimes_keep_all_threads(order):
    pytest.importorskip("sklearn")
    result = _probe(order)
    assert result["correct"]
    assert result["threads"] == CORES
    assert result["in_region"] == CORES, f"parallel region ran {result['in_region']} threads, expected {CORES}"


def test_environment_variable_sets_threads():
    result = _probe("torch", {"LEPTON_NUM_THREADS": "1"})
    assert result["threads"] == 1 and result["in_region"] == 1


def test_set_num_threads_round_trip():
    before = lk.get_num_threads()
    try:
        lk.set_num_threads(1)
        assert lk.get_num_threads() == 1 and _lepton_cpu.parallel_region_threads() == 1
    finally:
        lk.set_num_threads(before)
    assert lk.get_num_threads() == before
