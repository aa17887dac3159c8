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


# ---------------------------------------------------------------- the one tolerance rule
# Every comparison against the float64 reference uses one bound per element:
#
#     |got - ref| <= atol + rtol * |ref| + (4 * sqrt(K) + 2) * eps * magnitude
#
# (rtol, atol) per dtype covers element-wise rounding (a few ulps, and libm's exp/log);
# the last term covers a result that sums K rounded products: eps is the dtype's machine
# epsilon and `magnitude` the same computation on absolute values (|a| @ |b| for a
# product), so cancellation in the sum is allowed for and nothing else is. K = 1 (an
# element-wise op) leaves the first two terms. A test may tighten the bound (rtol=0,
# atol=0 for exact ops such as ReLU), never loosen it past this rule.
TOLERANCES = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}


def error_bound(expected, dtype, *, reduction=1, magnitude=None, rtol=None, atol=None):
    """The rule above, per element of ``expected`` (float64 arrays)."""
    base_rtol, base_atol = TOLERANCES[np.dtype(dtype).type]
    rtol = base_rtol if rtol is None else rtol
    atol = base_atol if atol is None else atol
    def finite_abs(a):  # infinities and NaN are compared exactly, elsewhere
        a = np.asarray(a, np.float64)
        return np.abs(np.where(np.isfinite(a), a, 0.0))

    bound = atol + rtol * finite_abs(expected)
    if reduction > 1:
        eps = np.finfo(dtype).eps
        bound = bound + (4 * np.sqrt(reduction) + 2) * eps * finite_abs(expected if magnitude is None else magnitude)
    return bound


def _check_bound(got, expected, bound, what):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(got[infinite], expected[infinite], err_msg=f"{what}: infinities")
    finite = np.isfinite(expected)
    bound = np.broadcast_to(bound, expected.shape)[finite]
    err = np.abs(got[finite] - expected[finite])
    if err.size and not np.all(err <= bound):
        worst = np.argmax(err - bound)
        raise AssertionError(f"{what}: max error {err[worst]:.3e} exceeds bound {bound[worst]:.3e}")


def assert_close(got, expected, dtype, rtol=None, atol=None, what=""):
    """Element-wise results against the reference: the one rule with K = 1 (NaN where the
    reference has NaN, the same infinities)."""
    expected = np.asarray(expected, dtype=np.float64)
    _check_bound(got, expected, error_bound(expected, dtype, rtol=rtol, atol=atol), what)


def assert_reduction_close(got, expected, abs_expected, reduction, dtype, what=""):
    """Sums of ``reduction`` products against the reference: the one rule, with
    ``abs_expected`` the same computation on absolute values."""
    expected = np.asarray(expected, dtype=np.float64)
    bound = error_bound(expected, dtype, reduction=reduction, magnitude=np.asarray(abs_expected, np.float64))
    _check_bound(got, expected, bound, f"{what} (reduction length {reduction})")


def _backend_names():
    """Every available CPU backend that runs ops fast enough for a sweep, by fixture name."""
    return [p for p in FAST_CPU_BACKENDS if isinstance(p, str)]


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def check_op(op, *args, terms=1, magnitudes=False, magnitude_args=None, rtol=None, atol=None, backends=None,
             **kwargs):
    """Runs ``lepton_kernels.<op>(*args, **kwargs)`` on every available CPU backend (each
    native ISA variant and Numba) and checks every output against
    ``lepton_kernels.reference.<op>`` on the same arguments, under the one tolerance rule.

    ``terms`` is the number of products each output sums (K above); with
    ``magnitudes`` the reference also runs on the absolute values of the float
    arguments to give the cancellation-free magnitude (multilinear ops: conv, linear),
    or on ``magnitude_args`` when the op is not multilinear in all of them (a mask).
    The arguments must come back unchanged. Returns the reference's outputs.
    """
    from lepton_kernels import reference as ref

    floats = [a for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    dtype = floats[0].dtype if floats else np.float64
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    expected = _as_tuple(getattr(ref, op)(*args, **kwargs))
    magnitude = [None] * len(expected)
    if magnitudes and magnitude_args is None:
        magnitude_args = [np.abs(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    if magnitude_args is not None:
        magnitude = [None if m is None else np.abs(np.asarray(m, np.float64))
                     for m in _as_tuple(getattr(ref, op)(*magnitude_args, **kwargs))]
    for name in backends or _backend_names():
        _activate(name)
        try:
            got = _as_tuple(getattr(lk, op)(*args, **kwargs))
        finally:
            _restore()
        assert len(got) == len(expected), f"{op} on {name}: {len(got)} outputs, the reference gives {len(expected)}"
        for i, (g, e, m) in enumerate(zip(got, expected, magnitude)):
            what = f"{op} on {name}, output {i}"
            if e is None:
                assert g is None, what
                continue
            if np.asarray(e).dtype.kind != "f":  # indices and other exact outputs
                np.testing.assert_array_equal(g, e, err_msg=what)
                continue
            assert np.asarray(g).dtype == dtype, f"{what}: dtype {np.asarray(g).dtype}, expected {dtype}"
            e64 = np.asarray(e, np.float64)
            _check_bound(g, e64, error_bound(e64, dtype, reduction=terms, magnitude=m, rtol=rtol, atol=atol), what)
        for a, b in zip(args, before):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{op} on {name} changed an argument")
    return expected


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
