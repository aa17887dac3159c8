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


# ------------------------------------------------------------------ the bound on the thread count
# 100000 threads used to kill the process (SIGSEGV) at the next op, and ~40000 made libgomp
# exit it: every check below runs in a child process, so a regression fails the test.
BOUND = """
import json, sys
import numpy as np
import lepton_kernels as lk
from lepton_kernels import _lepton_cpu, _threads
from lepton_kernels.bench import machine

most = _threads.max_num_threads()
refused = {}
calls = {
    "set_num_threads": lambda: lk.set_num_threads(most + 1),
    "set_num_threads_100000": lambda: lk.set_num_threads(100000),
    "binding_set_num_threads": lambda: _lepton_cpu.set_num_threads(100000),
    "binding_measure_fma_gflops": lambda: _lepton_cpu.measure_fma_gflops(100000, 0.01),
    "binding_measure_vnni_gops": lambda: _lepton_cpu.measure_vnni_gops(100000, 0.01),
    "measure_cpu_limits": lambda: machine.measure_cpu_limits(100000, copy_bytes=1 << 16, fma_seconds=0.01),
    "describe_machine": lambda: machine.describe_machine("cpu", 100000),
}
for name, call in calls.items():
    try:
        call()
        refused[name] = None
    except ValueError as exc:
        refused[name] = str(exc)
x = np.ones((2, 3, 8, 8), np.float32)
lk.max_pool2d(x, 2)  # the op that crashed after a huge count
lk.set_num_threads(most)  # the bound itself is safe
ok = bool((lk.max_pool2d(x, 2) == 1).all())
print(json.dumps({"most": most, "refused": refused, "threads": lk.get_num_threads(), "ok": ok}))
"""


def test_thread_count_is_bounded_everywhere():
    done = subprocess.run([sys.executable, "-c", BOUND], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["most"] == 4 * CORES == _lepton_cpu.max_num_threads()
    for name, message in result["refused"].items():
        assert message is not None, f"{name} accepted 100000 threads"
        assert str(result["most"]) in message, message
    assert "set_num_threads" in result["refused"]["set_num_threads"]
    assert "measure_cpu_limits" in result["refused"]["measure_cpu_limits"]
    assert "measure_fma_gflops" in result["refused"]["binding_measure_fma_gflops"]
    assert result["ok"] and result["threads"] == result["most"]


def test_environment_variable_above_the_bound_is_refused_at_import():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["LEPTON_NUM_THREADS"] = "100000"
    code = "import numpy as np, lepton_kernels as lk; lk.max_pool2d(np.ones((1, 1, 4, 4), np.float32), 2)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, f"exit {done.returncode} (negative: killed by a signal): {done.stderr[-2000:]}"
    assert "ValueError" in done.stderr and "LEPTON_NUM_THREADS" in done.stderr, done.stderr[-2000:]


def test_refused_count_leaves_the_setting_alone():
    before = lk.get_num_threads()
    with pytest.raises(ValueError, match=r"set_num_threads: n must be at most"):
        lk.set_num_threads(lk._threads.max_num_threads() + 1)
    with pytest.raises(ValueError, match=r"set_num_threads: n must be in \[1, "):
        _lepton_cpu.set_num_threads(2**40)
    assert lk.get_num_threads() == before


def test_openmp_environment_above_the_bound_starts_at_the_bound():
    """OMP_NUM_THREADS=100000 (OpenMP's own variable, not refused) starts lepton at the bound."""
    env = {k: v for k, v in os.environ.items() if k != "LEPTON_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "100000"
    code = ("import numpy as np, lepton_kernels as lk; from lepton_kernels import _lepton_cpu as c\n"
            "y = lk.max_pool2d(np.ones((64, 16, 32, 32), np.float32), 2)\n"
            "print(lk.get_num_threads(), c.parallel_region_threads(), bool((y == 1).all()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == [str(4 * CORES), str(4 * CORES), "True"]
