"""Bitwise determinism of the native CPU backend: every public op (forward, backward, loss,
optimizer steps, int8) gives the same bits with 1, 2 and 3 threads and on repeated runs.

The README's "Determinism" section states this guarantee; an op that breaks it must be
documented there, not hidden here. Shapes are large enough that each op's parallel loop splits
the work between threads (batch 16, 15x15 images, 24-row GEMMs, 56-element optimizer steps).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _backend

_lepton_cpu = pytest.importorskip("lepton_kernels._lepton_cpu")

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import lk_cases  # noqa: E402

pytestmark = pytest.mark.skipif(_backend.get_named_backend("native", "cpu") is None,
                                reason="native CPU backend not built")
THREADS = (1, 2, 3)
OPS = sorted(lk_cases.build_cases())


@pytest.fixture
def native_threads():
    """Native backend, thread count restored afterwards."""
    before = lk.get_num_threads()
    lk.use_backend("native")
    yield
    lk.use_backend(None)
    lk.set_num_threads(before)


def _bits(results: tuple) -> list[tuple]:
    return [(r.dtype.str, r.shape, np.ascontiguousarray(r).tobytes()) for r in results]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", OPS)
def test_bitwise_identical_across_threads_and_runs(op, dtype, native_threads):
    case = lk_cases.build_cases(seed=11, dtype=dtype, size=8)[op]
    if not case.float_op and dtype == np.float64:
        pytest.skip("int8 op: one input dtype")
    lk.set_num_threads(1)
    want = _bits(case())
    for threads in THREADS + THREADS[::-1]:  # every count, and each one twice
        lk.set_num_threads(threads)
        assert lk.get_num_threads() == threads
        assert _lepton_cpu.parallel_region_threads() == threads  # OpenMP really runs that many
        got = _bits(case())
        assert got == want, f"{op} ({np.dtype(dtype).name}): {threads} threads give other bits than 1 thread"


def test_every_public_op_is_covered():
    assert not lk_cases.missing_ops(lk_cases.build_cases()), "add the op to tests/fuzz/lk_cases.py"
