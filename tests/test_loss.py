"""cross_entropy / cross_entropy_backward (fused log-softmax + NLL) on every CPU backend vs reference and torch."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_close

torch = pytest.importorskip("torch")
CASES = [(1, 1), (1, 2), (7, 5), (16, 10), (17, 3), (64, 10), (33, 1000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,ignore,smoothing", [(False, False, 0.0), (True, True, 0.1), (False, True, 0.3)])
def test_cross_entropy_matches_reference(cpu_backend, n, c, reduction, weighted, ignore, smoothing, dtype, rng):
    z = (rng.standard_normal((n, c)) * 4).astype(dtype)
    t = rng.integers(0, c, n)
    if ignore and n > 1:
        t[::3] = -100
    w = (rng.random(c) + 0.5).astype(dtype) if weighted else None
    args = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
    assert_close(lk.cross_entropy(z, t, **args), ref.cross_entropy(z, t, **args), dtype, rtol=2e-5, atol=1e-6)
    g = rng.standard_normal(n).astype(dtype) if reduction == "none" else dtype(1.5)
    assert_close(lk.cross_entropy_backward(g, z, t, **args), ref.cross_entropy_backward(g, z, t, **args), dtype,
                 rtol=2e-5, atol=1e-6)


def test_cross_entropy_matches_torch_and_is_stable(cpu_backend, rng):
    z = (rng.standard_normal((20, 7)) * 50).astype(np.float32)
    z[0, 0] = 1e4
    t = rng.integers(0, 7, 20)
    ours = lk.cross_entropy(z, t, label_smoothing=0.05)
    theirs = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(t), label_smoothing=0.05)
    assert np.isfinite(ours) and abs(float(ours) - float(theirs)) <= 1e-4 * abs(float(theirs))


@pytest.mark.parametrize("call,exc,words", [
    (lambda z, t: lk.cross_entropy(z[0], t), ValueError, ("input", "2-D")),
    (lambda z, t: lk.cross_entropy(z, t[:2]), ValueError, ("target", "shape")),
    (lambda z, t: lk.cross_entropy(z, t.astype(np.float32)), ValueError, ("target", "integer")),
    (lambda z, t: lk.cross_entropy(z, t + 5), ValueError, ("target", "[0, 5)")),
    (lambda z, t: lk.cross_entropy(z, t, weight=np.ones(4, np.float32)), ValueError, ("weight",)),
    (lambda z, t: lk.cross_entropy(z, t, reduction="avg"), ValueError, ("reduction",)),
    (lambda z, t: lk.cross_entropy(z, t, label_smoothing=1.5), ValueError, ("label_smoothing",)),
    (lambda z, t: lk.cross_entropy_backward(np.ones(3, np.float32), z, t), ValueError, ("grad", "shape")),
    # ignore_index past int64 was a pybind11 "incompatible function arguments" dump
    (lambda z, t: lk.cross_entropy(z, t, ignore_index=2**70), ValueError, ("cross_entropy", "ignore_index", "64-bit")),
    (lambda z, t: lk.cross_entropy(z, t, ignore_index=-2**63 - 1), ValueError, ("ignore_index",)),
    (lambda z, t: lk.cross_entropy_backward(np.float32(1), z, t, ignore_index=2**64), ValueError,
     ("cross_entropy_backward", "ignore_index")),
])
def test_cross_entropy_bad_input(call, exc, words):
    z = np.zeros((4, 5), np.float32)
    t = np.array([0, 1, 2, 3])
    with pytest.raises(exc) as info:
        call(z, t)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_uint64_targets_past_int64_are_refused_not_wrapped(cpu_backend, op):
    """2**64 - 100 used to wrap to -100 (the default ignore_index): the sample was silently dropped."""
    z = np.zeros((4, 5), np.float32)
    t = np.array([0, 1, 2, 2**64 - 100], np.uint64)
    call = (lambda: lk.cross_entropy(z, t)) if op == "forward" else (
        lambda: lk.cross_entropy_backward(np.float32(1), z, t))
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 5\).*18446744073709551516"):
        call()
    for ignore in (-100, 2**63 - 1):  # whatever ignore_index, a value int64 cannot hold is refused
        with pytest.raises(ValueError, match="target"):
            lk.cross_entropy(z, np.array([0, 2**63], np.uint64), ignore_index=ignore)


def test_uint64_targets_in_range_and_int64_ignore_index_bounds_work(cpu_backend):
    z = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    t = np.array([0, 1, 4, 3])
    want = lk.cross_entropy(z, t)
    assert_close(lk.cross_entropy(z, t.astype(np.uint64)), want, np.float32, rtol=0, atol=0)
    assert_close(lk.cross_entropy(z, t.astype(np.uint8)), want, np.float32, rtol=0, atol=0)
    for ignore in (2**63 - 1, -2**63):  # the int64 extremes are valid ignore_index values
        assert_close(lk.cross_entropy(z, t, ignore_index=ignore), want, np.float32, rtol=0, atol=0)
    kept = lk.cross_entropy(z[:3], t[:3])
    assert_close(lk.cross_entropy(z, np.array([0, 1, 4, 2**63 - 1], np.uint64), ignore_index=2**63 - 1), kept,
                 np.float32)
