"""Hostile inputs into every public op (lepton_kernels.ops.__all__, with the valid small arguments
of tests/fuzz/lk_cases.py):

* views: negative strides, stride 0, every-other-element, one byte misaligned, Fortran order;
  the result equals the op on a contiguous copy, and no input is modified; in-place targets
  (optimizer steps) refuse a view instead of updating a hidden copy;
* huge-but-valid geometry on a tiny input (strides and paddings of 2**28..2**40 that give a 1x1
  output), which must finish at once and in little memory, and geometry or targets whose numbers
  overflow int64, which must be refused with a ValueError naming the argument;
* stride-0 views whose shape products are near the int64 limit, into the public ops and straight
  into the compiled module: refused or MemoryError at once, never a crash, a hang or a write
  through the view;
* resource limits: NumPy allocations during a call on a tiny input (tracemalloc) stay within a
  bounded multiple of its inputs and outputs, and native allocations (ru_maxrss of a subprocess
  whose address space is capped) stay small.

Depends on fixes of issue 15: the pool scratch sized by the input and the geometry refusals
(bug 5: test_geometry[*pool*, *ignore_index*, *padding*]; the convolutions' stride-sized
phase buffers, the same fault: test_geometry[conv2d*stride*, conv2d dilation*]), the thread bound (bug 4:
test_geometry[set_num_threads*]), uint64 targets (bug 6: test_geometry[cross_entropy uint64*]),
optimizer shapes (bug 7: test_geometry[sgd_step*, adam_step*]).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import lk_cases  # noqa: E402

CASES = lk_cases.build_cases(seed=5)
VIEW_KINDS = ("reversed", "every_other", "stride0", "misaligned", "fortran")


def view_of(arr: np.ndarray, kind: str) -> np.ndarray | None:
    """A view with the layout `kind` (values equal to `arr`, except stride0: the first slice
    repeated along axis 0); None where the layout does not apply (0-d)."""
    if arr.ndim == 0:
        return None
    if kind == "reversed":
        return arr[(slice(None, None, -1),) * arr.ndim].copy()[(slice(None, None, -1),) * arr.ndim]
    if kind == "every_other":
        big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
        big[..., ::2] = arr
        return big[..., ::2]
    if kind == "stride0":
        return np.broadcast_to(arr[:1], arr.shape)
    if kind == "misaligned":
        buf = np.zeros(arr.nbytes + 1, np.uint8)
        out = buf[1:].view(arr.dtype).reshape(arr.shape)
        out[...] = arr
        return out
    return np.asfortranarray(arr)


def _contiguous(arrays):
    return {k: np.array(v, order="C", copy=True) for k, v in arrays.items()}


def _view_params():
    for op in sorted(CASES):
        case = CASES[op]
        for name in sorted(case.arrays):
            if name not in case.inplace:
                for kind in VIEW_KINDS:
                    yield pytest.param(op, name, kind, id=f"{op}-{name}-{kind}")


@pytest.mark.parametrize("op, name, kind", _view_params())
def test_views_give_the_contiguous_result(op, name, kind):
    case = CASES[op]
    arrays = case.fresh_arrays()
    view = view_of(arrays[name], kind)
    if view is None:
        pytest.skip("0-d input")
    if kind == "stride0" and view.strides[0] != 0 and view.shape[0] > 1:
        raise AssertionError("not a stride-0 view")
    arrays[name] = view
    want = case(_contiguous(arrays))
    before = {k: np.array(v, copy=True) for k, v in arrays.items() if k not in case.inplace}
    got = case(arrays)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w, err_msg=f"{op}: {kind} {name!r} changes the result")
    for k, b in before.items():
        np.testing.assert_array_equal(arrays[k], b, err_msg=f"{op}: input {k!r} was modified")


_THROUGH_VIEWS = ("reversed", "every_other")  # layouts a strided in-place target is updated through
_REFUSED = ("stride0", "readonly")  # layouts no in-place target can take


def _inplace_params(updated_through_views=False):
    """(op, in-place array, layout): the layouts each op must refuse, or (updated_through_views)
    those an op with strided in-place targets (batch_norm's running statistics) must update."""
    for op in sorted(CASES):
        strided = CASES[op].strided_inplace
        if updated_through_views:
            kinds = _THROUGH_VIEWS if strided else ()
        else:
            kinds = _REFUSED if strided else _THROUGH_VIEWS + _REFUSED
        for name in sorted(CASES[op].inplace):
            for kind in kinds:
                yield pytest.param(op, name, kind, id=f"{op}-{name}-{kind}")


@pytest.mark.parametrize("op, name, kind", _inplace_params(updated_through_views=True))
def test_strided_inplace_targets_are_updated_through_the_view(op, name, kind):
    """batch_norm's running statistics may be strided views: the update lands in the caller's
    memory, exactly as on a contiguous copy."""
    case = CASES[op]
    want = case(case.fresh_arrays())
    arrays = case.fresh_arrays()
    arrays[name] = view_of(arrays[name], kind)
    got = case(arrays)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("op, name, kind", _inplace_params())
def test_inplace_targets_refuse_views(op, name, kind):
    """An in-place target it would have to copy (an optimizer's, any strided one; for every op a
    stride-0 or read-only one) is refused with ValueError/TypeError, and nothing (neither the
    view's buffer nor the other arrays) changes."""
    case = CASES[op]
    arrays = case.fresh_arrays()
    if kind == "readonly":
        target = arrays[name].copy()
        target.flags.writeable = False
    else:
        target = view_of(arrays[name], kind)
    arrays[name] = target
    before = {k: np.array(v, copy=True) for k, v in arrays.items()}
    with pytest.raises((ValueError, TypeError)):
        case(arrays)
    for k, b in before.items():
        np.testing.assert_array_equal(arrays[k], b, err_msg=f"{op}: {k!r} changed by a refused call")


# ---------------------------------------------------------------- NumPy allocations

@pytest.mark.parametrize("op", sorted(CASES))
def test_numpy_allocations_bounded_by_inputs_and_outputs(op):
    """Peak traced (NumPy + Python) memory of one call on a tiny input is at most 16x its
    inputs and outputs plus 256 KiB (Python objects, small plans)."""
    case = CASES[op]
    case()  # warm-up: caches and lazily built plans are not per-call costs
    arrays = case.fresh_arrays()
    tracemalloc.start()
    try:
        result = case(arrays)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    io_bytes = sum(a.nbytes for a in arrays.values()) + sum(r.nbytes for r in result)
    assert peak <= 16 * io_bytes + 256 * 1024, f"{op}: peak {peak} bytes for {io_bytes} bytes in and out"


# ---------------------------------------------------------------- geometry, overflow, native memory

# Each entry: name -> (code, expected). Code runs in a subprocess with x (2,2,2,5), x4 (1,2,5,6),
# w (2,2,2,2), big(shape, dtype) a stride-0 view of one element and `_cpu` (the compiled module).
# Expected: "ok" (must succeed), or a regex that the ValueError's message must match, or
# "refused" (ValueError, TypeError or MemoryError: a huge request answered at once).
GEOMETRY = {
    "max_pool2d stride 2**28": ("lk.max_pool2d(x, 2, stride=2**28, padding=1)", "ok"),
    "max_pool2d stride 2**30 indices": ("lk.max_pool2d(x, 2, stride=2**30, padding=1, return_indices=True)", "ok"),
    "avg_pool2d stride 2**28": ("lk.avg_pool2d(x, 2, stride=2**28, padding=1)", "ok"),
    "avg_pool2d_backward stride 2**28": (
        "lk.avg_pool2d_backward(np.ones((2, 2, 1, 1), np.float32), (2, 2, 2, 5), 2, stride=2**28, padding=1)", "ok"),
    # past the kernels' 2**31 geometry limit: refused, naming the argument
    "max_pool2d stride 2**40": ("lk.max_pool2d(x, 2, stride=2**40, padding=1, return_indices=True)", "stride"),
    "avg_pool2d stride 2**40": ("lk.avg_pool2d(x, 2, stride=2**40, padding=1)", "stride"),
    "avg_pool2d_backward stride 2**40": (
        "lk.avg_pool2d_backward(np.ones((2, 2, 1, 1), np.float32), (2, 2, 2, 5), 2, stride=2**40, padding=1)",
        "stride"),
    "max_pool2d_backward stride 2**28": (
        "y, i = lk.max_pool2d(x, 2, stride=2**28, padding=1, return_indices=True); "
        "lk.max_pool2d_backward(np.ones_like(y), i, x.shape)", "ok"),
    "conv2d stride 2**20": ("lk.conv2d(x4, w, stride=2**20, padding=1)", "ok"),
    "conv2d stride 2**30": ("lk.conv2d(x4, w, stride=2**30, padding=1)", "ok"),
    "conv2d dilation 2**20": ("lk.conv2d(x4, w, stride=2**28, padding=2**20, dilation=2**20)", "ok"),
    "conv2d_backward stride 2**28": (
        "lk.conv2d_backward(np.ones((1, 2, 1, 1), np.float32), x4, w, stride=2**28, padding=1)", "ok"),
    "conv2d_integer stride 2**28": (
        "lk.conv2d_integer(x4.astype(np.uint8), w.astype(np.int8), 0, 0, stride=2**28, padding=1)", "ok"),
    "avg_pool2d padding 2**64": ("lk.avg_pool2d(x, 2, 2**40, 2**64)", "padding"),
    "max_pool2d padding 2**63": ("lk.max_pool2d(x, 2, 2, 2**63)", "padding"),
    "conv2d padding 2**63": ("lk.conv2d(x4, w, padding=2**63)", "padding"),
    "conv2d stride 2**64": ("lk.conv2d(x4, w, stride=2**64)", "stride"),
    "cross_entropy ignore_index 2**70": (
        "lk.cross_entropy(np.ones((2, 3), np.float32), np.array([0, 1]), ignore_index=2**70)", "ignore_index"),
    "cross_entropy uint64 targets": (
        "lk.cross_entropy(np.ones((2, 3), np.float32), np.array([0, 2**64 - 100], np.uint64))", "target"),
    "cross_entropy target out of range": (
        "lk.cross_entropy(np.ones((2, 3), np.float32), np.array([0, 3]))", "target"),
    "sgd_step grad (1, 8) for param (8,)": (
        "lk.sgd_step(np.ones(8, np.float32), np.ones((1, 8), np.float32), lr=0.1)", "grad"),
    "adam_step 0-d param with (1,) state": (
        "lk.adam_step(np.ones((), np.float32), np.ones((), np.float32), np.ones(1, np.float32), "
        "np.ones(1, np.float32), step=1, lr=0.1)", "exp_avg"),
    "set_num_threads 100000": ("lk.set_num_threads(100000)", "thread"),
    # shape products near the int64 limit, through the public ops (copies must be refused at once)
    "relu 2**60 elements": ("lk.relu(big((2**30, 2**30)))", "refused"),
    "linear K 2**40": ("lk.linear(big((1, 2**40)), big((1, 2**40)))", "refused"),
    "matmul K 2**40": ("lk.matmul(big((1, 2**40)), big((2**40, 1)))", "refused"),
    "conv2d C 2**16": ("lk.conv2d(big((1, 2**16, 2**16, 2**16)), big((1, 2**16, 2**16, 2**16)))", "refused"),
    "cross_entropy 2**40 rows": ("lk.cross_entropy(big((2**40, 4)), big((2**40,), np.int64))", "refused"),
    "bias_relu 2**50": ("lk.bias_relu(big((2**20, 2**20, 2**10)), big((2**20,)))", "refused"),
    "quantize 2**60": ("lk.quantize(big((2**30, 2**30)), 0.1, 0)", "refused"),
    "matmul_integer K 2**40": ("lk.matmul_integer(big((1, 2**40), np.uint8), big((2**40, 1), np.int8))", "refused"),
    "max_pool2d 2**60": ("lk.max_pool2d(big((2**15, 2**15, 2**15, 2**15)), 2)", "refused"),
    # straight into the compiled module: a stride-0 view must never be written through
    "_cpu.relu stride-0 out": ("_cpu.relu(big((2**40,)), big((2**40,)))", "refused"),
    "_cpu.linear stride-0": ("_cpu.linear(big((2**20, 2**20)), big((2**20, 2**20)), None, "
                             "big((2**20, 2**20)), False)", "refused"),
    "_cpu.max_pool2d stride-0": ("_cpu.max_pool2d(big((2**10, 2**10, 2**10, 2**10)), big((2**10, 2**10, 2**9, 2**9)),"
                                 " None, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1)", "refused"),
    "_cpu.sgd_step stride-0": ("_cpu.sgd_step([big((2**40,))], [big((2**40,))], None, 0.1, 0.0, 0.0, 0.0, False, "
                               "False, False)", "refused"),
}

_RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from numpy.lib.stride_tricks import as_strided
    import lepton_kernels as lk
    from lepton_kernels import _lepton_cpu as _cpu

    def big(shape, dtype=np.float32):
        return as_strided(np.ones(1, dtype), shape=shape, strides=(0,) * len(shape))

    x = np.arange(40, dtype=np.float32).reshape(2, 2, 2, 5)
    x4 = np.arange(60, dtype=np.float32).reshape(1, 2, 5, 6)
    w = np.ones((2, 2, 2, 2), np.float32)
    lk.relu(x); lk.conv2d(x4, w); lk.max_pool2d(x, 2)  # warm-up: OpenMP threads, plans
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    # Cap the address space at what is mapped now + LIMIT: an allocation out of proportion
    # fails at once (MemoryError) instead of paging the machine.
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), resource.RLIM_INFINITY))
    for name, code in json.loads(sys.stdin.read()):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            exec(code)
            outcome, message = "ok", ""
        except BaseException as exc:
            outcome, message = type(exc).__name__, str(exc)[:300]
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        print(json.dumps([name, outcome, message, time.perf_counter() - t0, grew]), flush=True)
""")
NATIVE_LIMIT = 1 << 30  # bytes of address space a tiny call may add
RSS_LIMIT_MB = 256
SECONDS_LIMIT = 20


@pytest.fixture(scope="module")
def geometry_outcomes():
    """Runs every GEOMETRY entry in one capped subprocess; name -> (outcome, message, s, MB)."""
    env = dict(os.environ, LEPTON_NUM_THREADS="2")
    todo = [(name, code) for name, (code, _) in GEOMETRY.items()]
    outcomes = {}
    while todo:  # a crash ends the process: the rest runs in the next one
        try:
            proc = subprocess.run([sys.executable, "-c", _RUNNER, str(NATIVE_LIMIT)], input=json.dumps(todo),
                                  capture_output=True, text=True, timeout=SECONDS_LIMIT * len(todo) + 60, env=env)
            stdout, stderr, ended = proc.stdout, proc.stderr, f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, ended = exc.stdout or "", exc.stderr or "", "timed out"
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        for line in stdout.splitlines():
            name, outcome, message, seconds, grew = json.loads(line)
            outcomes[name] = (outcome, message, seconds, grew)
        todo = [(n, c) for n, c in todo if n not in outcomes]
        if todo:  # the first case without an answer ended the process
            outcomes[todo[0][0]] = (f"process ended ({ended})", stderr[-2000:], 0, 0)
            todo = todo[1:]
    return outcomes


@pytest.mark.parametrize("name", sorted(GEOMETRY))
def test_geometry(name, geometry_outcomes):
    code, expected = GEOMETRY[name]
    outcome, message, seconds, grew_mb = geometry_outcomes[name]
    what = f"{code}\n-> {outcome}: {message}"
    if expected == "ok":
        assert outcome == "ok", what
    elif expected == "refused":
        assert outcome in ("ValueError", "TypeError", "MemoryError"), what
    else:
        assert outcome == "ValueError" and re.search(expected, message), \
            f"{what}\nexpected a ValueError naming {expected!r}"
    assert seconds < SECONDS_LIMIT, f"{what}\ntook {seconds:.1f} s"
    assert grew_mb < RSS_LIMIT_MB, f"{what}\nmax RSS grew {grew_mb:.0f} MB"
