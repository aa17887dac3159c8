"""max_pool2d of the numba.cuda backend on int8 / uint8 (quantized activations), equal to
``lepton_kernels.reference.max_pool2d`` exactly: values keep the input's dtype, ties go to
the first tap, a window entirely in the padding gives the type's minimum and index -1.

Runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba.cuda is first
imported; CI runs the suite that way) or on a GPU, and skips otherwise. The simulator runs
every thread as a Python thread, so the planes are small, one of them larger than a block.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("numba")

from lepton_kernels import reference as R  # noqa: E402
from lepton_kernels._backend import PoolParams  # noqa: E402

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
QTYPES = (np.uint8, np.int8)

# (input NCHW, kernel, stride, pads (top, bottom, left, right), dilation, ceil_mode)
CASES = [
    ((1, 2, 5, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 1, 5, 7), (3, 3), (1, 2), (1, 2, 2, 0), (1, 1), True),    # asymmetric, ceil
    ((1, 2, 4, 5), (2, 3), (3, 2), (3, 1, 2, 3), (1, 1), False),   # windows entirely in padding
    ((1, 1, 7, 9), (3, 2), (1, 3), (2, 2, 1, 2), (2, 2), False),   # dilation 2
    ((2, 3, 9, 17), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),  # more outputs than threads
]


def dev(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def _setup(case, qtype, seed):
    shape, (kh, kw), (sh, sw), (t, b, l, r), (dh, dw), ceil = case
    info = np.iinfo(qtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, int(info.max) + 1, size=shape).astype(qtype)
    x.reshape(-1)[::3] = info.min  # ties at the minimum: the first tap must win
    x[0, 0, 0, : shape[3] // 2] = info.max
    p = PoolParams(kh, kw, sh, sw, t, b, l, r, dh, dw)
    ey, ei = R.max_pool2d(x, (kh, kw), (sh, sw), ((t, b), (l, r)), (dh, dw), ceil, return_indices=True)
    return x, p, ey, ei


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-k{c[1][0]}{c[1][1]}")
def test_cuda_max_pool_int8_exact(cu, case, qtype):
    x, p, ey, ei = _setup(case, qtype, 11)
    assert ey.dtype == qtype
    out = dev(np.full(ey.shape, 77, qtype))
    idx = dev(np.full(ey.shape, 12345, np.int64))
    cu.max_pool2d(dev(x), out, idx, p)
    got = out.copy_to_host()
    assert got.dtype == qtype
    np.testing.assert_array_equal(got, ey)
    np.testing.assert_array_equal(idx.copy_to_host(), ei)
    out2 = dev(np.full(ey.shape, 77, qtype))
    cu.max_pool2d(dev(x), out2, None, p)
    np.testing.assert_array_equal(out2.copy_to_host(), ey)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
def test_cuda_max_pool_int8_all_padding_windows_give_the_minimum(cu, qtype):
    """Windows in the padding only: the type's minimum (never a converted -inf) and index -1."""
    x, p, ey, ei = _setup(CASES[2], qtype, 12)
    assert (ei < 0).any() and (ei >= 0).any()
    out = dev(np.full(ey.shape, 77, qtype))
    idx = dev(np.full(ey.shape, 12345, np.int64))
    cu.max_pool2d(dev(x), out, idx, p)
    got, got_idx = out.copy_to_host(), idx.copy_to_host()
    np.testing.assert_array_equal(got_idx, ei)
    assert (got[ei < 0] == np.iinfo(qtype).min).all()
    np.testing.assert_array_equal(got, ey)


def test_cuda_max_pool_float_all_padding_windows_stay_minus_inf(cu):
    """The float path is unchanged: an all-padding window still gives -inf."""
    x = np.arange(20, dtype=np.float32).reshape(1, 1, 4, 5)
    p = PoolParams(2, 3, 3, 2, 3, 1, 2, 3)
    ey, ei = R.max_pool2d(x, (2, 3), (3, 2), ((3, 1), (2, 3)), return_indices=True)
    out = dev(np.zeros(ey.shape, np.float32))
    cu.max_pool2d(dev(x), out, None, p)
    got = out.copy_to_host()
    assert np.isneginf(got[ei < 0]).all() and (ei < 0).any()
    np.testing.assert_array_equal(got, ey.astype(np.float32))
