"""Shared fixtures: every CPU backend (and every native ISA variant) as a parameter,
plus the comparison helper used against the float64 reference, and the CUDA fixtures
(CuPy, each CUDA backend, the numba.cuda backend) the gpu and simulator tests share."""
from __future__ import annotations

import ctypes
import mmap
import os
import threading

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _backend


def _cpu_backend_params():
    params = []
    native = _backend.get_named_backend("native", "cpu")
    if native is not None:
        from lepton_kernels import _lepton_cpu

        order = ["generic", "avx2", "avx512"]
        best = order.index(_lepton_cpu.detected_isa())
        params += [f"native-{isa}" for isa in order[: best + 1]]
    else:
        params.append(pytest.param("native", marks=pytest.mark.skip(
            reason=_backend.unavailable_reason("native", "cpu"))))
    for name in ("numba", "reference"):
        reason = _backend.unavailable_reason(name, "cpu")
        params.append(name if reason is None else pytest.param(name, marks=pytest.mark.skip(reason=reason)))
    return params


CPU_BACKENDS = _cpu_backend_params()
FAST_CPU_BACKENDS = [p for p in CPU_BACKENDS if p != "reference"]


def _activate(name: str):
    if name.startswith("native-"):
        from lepton_kernels import _lepton_cpu

        _lepton_cpu.set_isa(name.split("-", 1)[1])
        lk.use_backend("native")
    else:
        lk.use_backend(name)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Forces one CPU backend (native per ISA variant, numba, reference) for the test."""
    _activate(request.param)
    yield request.param
    _restore()


@pytest.fixture(params=FAST_CPU_BACKENDS)
def fast_cpu_backend(request):
    """Like cpu_backend without the slow reference backend (for larger shapes)."""
    _activate(request.param)
    yield request.param
    _restore()


def _restore():
    lk.use_backend(None)
    native = _backend.get_named_backend("native", "cpu")
    if native is not None:
        from lepton_kernels import _lepton_cpu

        _lepton_cpu.set_isa(_lepton_cpu.detected_isa())


TOLERANCES = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}


def assert_close(got, expected, dtype, rtol=None, atol=None, what=""):
    """max|got - ref| <= atol + rtol*|ref|, NaN where the reference has NaN, same infs."""
    base_rtol, base_atol = TOLERANCES[np.dtype(dtype).type]
    rtol = base_rtol if rtol is None else rtol
    atol = base_atol if atol is None else atol
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)],
                                  err_msg=f"{what}: infinities")
    err = np.abs(got[finite] - expected[finite])
    bound = atol + rtol * np.abs(expected[finite])
    if err.size and not np.all(err <= bound):
        worst = np.argmax(err - bound)
        raise AssertionError(f"{what}: max error {err[worst]:.3e} exceeds bound {bound[worst]:.3e} "
                             f"(rtol={rtol}, atol={atol})")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


CUDA_BACKENDS = ("native", "cupy", "numba")


@pytest.fixture(scope="module")
def cu():
    """The numba.cuda backend: on a GPU, or under the simulator (NUMBA_ENABLE_CUDASIM=1)."""
    pytest.importorskip("numba")
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and not cuda.is_available():
        pytest.skip("numba.cuda: no GPU; run with NUMBA_ENABLE_CUDASIM=1 for the simulator")
    from lepton_kernels.numba_backend import cuda as backend

    assert backend.unavailable_reason() is None
    return backend


@pytest.fixture(scope="module")
def cp():
    """CuPy, or a skip when it or a CUDA device is missing (the gpu tests)."""
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver
        pytest.skip(f"no CUDA device ({exc})")
    if count == 0:
        pytest.skip("no CUDA device")
    return cupy


@pytest.fixture(params=CUDA_BACKENDS)
def backend(request, cp):
    """Each CUDA backend module in turn (skipped when unavailable)."""
    module = _backend.get_named_backend(request.param, "cuda")
    if module is None:
        reason = _backend.unavailable_reason(request.param, "cuda")
        pytest.skip(f"cuda backend {request.param!r} unavailable: {reason}")
    return module


def assert_reduction_close(got, expected, abs_expected, reduction, dtype, what=""):
    """For sums of `reduction` products: |got - ref| <= (4*sqrt(K) + 2) * eps * (|a|@|b|) + tiny,
    where abs_expected is the same computation on absolute values (so cancellation is allowed for)."""
    eps = np.finfo(dtype).eps
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    finite = np.isfinite(expected)
    bound = (4 * np.sqrt(max(reduction, 1)) + 2) * eps * np.abs(np.asarray(abs_expected))[finite] + 1e-30
    err = np.abs(got[finite] - expected[finite])
    if err.size and not np.all(err <= bound):
        worst = np.argmax(err - bound)
        raise AssertionError(f"{what}: error {err[worst]:.3e} exceeds bound {bound[worst]:.3e} "
                             f"(reduction length {reduction})")


# ---------------------------------------------------------------- guard pages
_PAGE = mmap.PAGESIZE
_MAPS = []


def guarded(shape, dtype, at_end):
    """An array whose last byte ends a page followed by an inaccessible page (at_end) or whose
    first byte starts a page preceded by one: a read or write outside it faults."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    pages = (nbytes + _PAGE - 1) // _PAGE
    mm = mmap.mmap(-1, (pages + 2) * _PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    assert libc.mprotect(base, _PAGE, 0) == 0
    assert libc.mprotect(base + (pages + 1) * _PAGE, _PAGE, 0) == 0
    _MAPS.append(mm)  # kept for the session: the arrays below point into it
    offset = (pages + 1) * _PAGE - nbytes if at_end else _PAGE
    return np.frombuffer(mm, dtype, count, offset).reshape(shape)


def failures_in_threads(jobs, workers, rounds):
    """Runs the (call, want) jobs from `workers` Python threads at once, each through its own
    shuffled order of `rounds` passes; returns (thread, job, what) for each call that raised or
    whose result differs from `want` (empty when all agree)."""
    barrier = threading.Barrier(workers)
    failures = []

    def work(tid):
        order = np.random.default_rng(tid).permutation(len(jobs) * rounds) % len(jobs)
        barrier.wait()
        for j in order:
            call, want = jobs[j]
            try:
                if not np.array_equal(call(), want):
                    failures.append((tid, j, "mismatch"))
            except Exception as e:  # noqa: BLE001 - reported by the caller
                failures.append((tid, j, repr(e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def ops_in_family(family: str) -> list[str]:
    """Public op names of one family, from the op registry, for ``pytest.mark.parametrize``
    (``@pytest.mark.parametrize("op", ops_in_family("pool"))``)."""
    from lepton_kernels import _registry

    return [spec.name for spec in _registry.ops_in_family(family)]
