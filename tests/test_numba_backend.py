"""The Numba backends (CPU njit and numba.cuda) called directly through the
kernel interface of ``lepton_kernels._backend``, against the float64 spec
``lepton_kernels.reference`` (a small float64 NumPy oracle written here stands
in when that module cannot be imported, and is checked against it when it can).

The numba.cuda tests run under the CUDA simulator: run pytest with
``NUMBA_ENABLE_CUDASIM=1`` (it must be set before numba.cuda is first imported);
they also run on a real GPU when numba.cuda finds one, and skip otherwise.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("numba")

from lepton_kernels._backend import PoolParams  # noqa: E402
from lepton_kernels import numba_backend as nbcpu  # noqa: E402

try:
    from lepton_kernels import reference as REF
except Exception:  # the spec module is optional here: fall back to the local oracle
    REF = None

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
DUMMY_POOL = PoolParams(1, 1, 1, 1, 0, 0, 0, 0)  # what lepton_kernels.ops passes to max_pool2d_backward
DTYPES = (np.float32, np.float64)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ oracle

def relu_ref(x):
    if REF is not None:
        return REF.relu(x)
    x = x.astype(np.float64)
    return np.where(x <= 0, 0.0, x)


def relu_backward_ref(g, x):
    if REF is not None:
        return REF.relu_backward(g, x)
    return np.where(x <= 0, 0.0, g.astype(np.float64))


def out_size(size, k, s, before, after, d=1, ceil=False):
    span = size + before + after - d * (k - 1) - 1
    n = (-(-span // s) if ceil else span // s) + 1
    if ceil and (n - 1) * s >= size + before:  # last window must start inside input or left pad
        n -= 1
    return n


def geometry(h, w, k, s, pads, d=(1, 1), ceil=False, **avg):
    """PoolParams and (out_h, out_w) for kernel k=(kh, kw), stride s, pads (t, b, l, r)."""
    t, b, l, r = pads
    p = PoolParams(k[0], k[1], s[0], s[1], t, b, l, r, d[0], d[1], **avg)
    return p, (out_size(h, k[0], s[0], t, b, d[0], ceil), out_size(w, k[1], s[1], l, r, d[1], ceil))


def _own_max_pool_ref(x, p, oh_n, ow_n):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.full((n, c, oh_n, ow_n), -np.inf)
    idx = np.full((n, c, oh_n, ow_n), -1, dtype=np.int64)
    for oh in range(oh_n):
        for ow in range(ow_n):
            best = np.full((n, c), -np.inf)
            bi = np.full((n, c), -1, dtype=np.int64)
            for i in range(p.kernel_h):
                ih = oh * p.stride_h - p.pad_top + i * p.dilation_h
                for j in range(p.kernel_w):
                    iw = ow * p.stride_w - p.pad_left + j * p.dilation_w
                    if not (0 <= ih < h and 0 <= iw < w):
                        continue
                    v = x[:, :, ih, iw]
                    take = (bi < 0) | (v > best) | (np.isnan(v) & ~np.isnan(best))
                    best = np.where(take, v, best)
                    bi = np.where(take, ih * w + iw, bi)
            out[:, :, oh, ow], idx[:, :, oh, ow] = best, bi
    return out, idx


def _own_max_pool_backward_ref(g, idx, shape):
    n, c, h, w = shape
    gi = np.zeros((n * c, h * w))
    g2, i2 = g.reshape(n * c, -1).astype(np.float64), idx.reshape(n * c, -1)
    for plane in range(n * c):
        keep = i2[plane] >= 0
        np.add.at(gi[plane], i2[plane][keep], g2[plane][keep])
    return gi.reshape(shape)


def avg_windows(p, h, w, oh_n, ow_n):
    """Yields (oh, ow, rows slice, cols slice, divisor or None when count is 0)."""
    for oh in range(oh_n):
        hs = oh * p.stride_h - p.pad_top
        he = min(hs + p.kernel_h, h + p.pad_bottom)
        for ow in range(ow_n):
            ws = ow * p.stride_w - p.pad_left
            we = min(ws + p.kernel_w, w + p.pad_right)
            h0, h1, w0, w1 = max(hs, 0), min(he, h), max(ws, 0), min(we, w)
            count = max(h1 - h0, 0) * max(w1 - w0, 0)
            if p.divisor_override > 0:
                div = p.divisor_override
            elif p.count_include_pad:
                div = (he - hs) * (we - ws)
            else:
                div = count
            yield oh, ow, slice(h0, h1), slice(w0, w1), (div if count else None)


def _own_avg_pool_ref(x, p, oh_n, ow_n):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh_n, ow_n))
    for oh, ow, rs, cs, div in avg_windows(p, h, w, oh_n, ow_n):
        if div is not None:
            out[:, :, oh, ow] = x[:, :, rs, cs].sum(axis=(2, 3)) / div
    return out


def _own_avg_pool_backward_ref(g, p, shape):
    n, c, h, w = shape
    gi = np.zeros(shape)
    g = g.astype(np.float64)
    for oh, ow, rs, cs, div in avg_windows(p, h, w, g.shape[2], g.shape[3]):
        if div is not None:
            gi[:, :, rs, cs] += (g[:, :, oh, ow] / div)[:, :, None, None]
    return gi


def _ref_geometry(p):
    k, st = (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w)
    return k, st, ((p.pad_top, p.pad_bottom), (p.pad_left, p.pad_right))


def _avg_kw(p, ceil):
    return dict(ceil_mode=ceil, count_include_pad=p.count_include_pad,
                divisor_override=p.divisor_override or None)


def _check_own(got, own, atol=1e-12):
    if isinstance(got, tuple):
        for a, b in zip(got, own):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=atol)
    else:
        np.testing.assert_allclose(got, own, rtol=1e-12, atol=atol)
    return got


def max_pool_ref(x, p, oh_n, ow_n, ceil=False):
    own = _own_max_pool_ref(x, p, oh_n, ow_n)
    if REF is None:
        return own
    k, st, pads = _ref_geometry(p)
    got = REF.max_pool2d(x, k, st, pads, (p.dilation_h, p.dilation_w), ceil, return_indices=True)
    assert got[0].shape == own[0].shape
    return _check_own(got, own)


def max_pool_backward_ref(g, idx, shape):
    own = _own_max_pool_backward_ref(g, idx, shape)
    return own if REF is None else _check_own(REF.max_pool2d_backward(g, idx, shape), own)


def avg_pool_ref(x, p, oh_n, ow_n, ceil=False):
    own = _own_avg_pool_ref(x, p, oh_n, ow_n)
    if REF is None:
        return own
    k, st, pads = _ref_geometry(p)
    return _check_own(REF.avg_pool2d(x, k, st, pads, **_avg_kw(p, ceil)), own)


def avg_pool_backward_ref(g, p, shape, ceil=False):
    own = _own_avg_pool_backward_ref(g, p, shape)
    if REF is None:
        return own
    k, st, pads = _ref_geometry(p)
    return _check_own(REF.avg_pool2d_backward(g, shape, k, st, pads, **_avg_kw(p, ceil)), own)


# ------------------------------------------------------------------ cases

# (shape NCHW, kernel, stride, pads (t, b, l, r), dilation, ceil)
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((1, 2, 7, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    ((2, 1, 9, 17), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), False),  # asymmetric
    ((1, 3, 5, 5), (2, 3), (3, 2), (3, 1, 2, 3), (1, 1), False),  # windows fully in padding
    ((2, 2, 11, 15), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), False),  # dilation 2
    ((1, 2, 13, 31), (3, 2), (2, 3), (1, 2, 0, 1), (1, 2), True),  # primes, mixed dilation, ceil
    ((3, 2, 5, 9), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),  # ceil: clipped last window
    ((1, 1, 4, 33), (4, 5), (1, 3), (3, 0, 4, 4), (1, 1), False),  # pads = kernel-1
]
POOL_IDS = [f"{s[0]}x{s[1]}x{s[2]}x{s[3]}-k{k[0]}{k[1]}-s{st[0]}{st[1]}-p{''.join(map(str, pd))}-d{d[0]}{d[1]}"
            + ("-ceil" if c else "") for s, k, st, pd, d, c in POOL_CASES]
AVG_OPTS = [(True, 0), (False, 0), (True, 3), (False, 5)]


def rand(rng, shape, dtype, ties=False):
    if ties:  # many equal values, -inf among them: exercises the first-wins rule
        x = rng.integers(-2, 3, size=shape).astype(dtype)
        x[x == -2] = -np.inf
        return x
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------ CPU: element-wise

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (16,), (17,), (3, 31), (2, 3, 5, 8)])
def test_cpu_relu(dtype, shape):
    rng = np.random.default_rng(0)
    x = rand(rng, shape, dtype)
    x.flat[0] = np.nan
    out = np.empty_like(x)
    nbcpu.relu(x, out)
    np.testing.assert_array_equal(out, relu_ref(x).astype(dtype))
    g = rand(rng, shape, dtype)
    gi = np.empty_like(x)
    nbcpu.relu_backward(g, x, gi)
    np.testing.assert_array_equal(gi, relu_backward_ref(g, x).astype(dtype))
    assert gi.flat[0] == g.flat[0]  # NaN activation passes its gradient
    nbcpu.relu(x, x)  # in place
    np.testing.assert_array_equal(x, out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ncs", [(1, 1, 1), (4, 3, 1), (2, 5, 7), (1, 3, 8), (3, 2, 9), (2, 4, 16), (1, 3, 17)])
def test_cpu_bias_relu(dtype, ncs):
    rng = np.random.default_rng(1)
    x, bias, g = rand(rng, ncs, dtype), rand(rng, ncs[1:2], dtype), rand(rng, ncs, dtype)
    x.flat[-1] = np.nan
    y = np.empty_like(x)
    nbcpu.bias_relu(x, bias, y)
    y_ref = relu_ref(x.astype(np.float64) + bias.astype(np.float64)[None, :, None])
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    gx, gb = np.empty_like(x), np.empty_like(bias)
    nbcpu.bias_relu_backward(g, y, gx, gb)
    gx_ref = relu_backward_ref(g, y)
    np.testing.assert_array_equal(gx, gx_ref.astype(dtype))
    np.testing.assert_allclose(gb, gx_ref.sum(axis=(0, 2)), **tol(dtype))
    gx2, gb2 = np.full_like(x, 7), np.empty_like(bias)
    nbcpu.bias_relu_backward(g, y, gx2, None)
    np.testing.assert_array_equal(gx2, gx)
    nbcpu.bias_relu_backward(g, y, gx2, gb2)  # deterministic: bitwise equal run to run
    np.testing.assert_array_equal(gb2, gb)


# ------------------------------------------------------------------ CPU: pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_cpu_max_pool(case, ties, dtype):
    shape, k, s, pads, d, ceil = case
    rng = np.random.default_rng(2)
    x = rand(rng, shape, dtype, ties)
    p, (oh, ow) = geometry(shape[2], shape[3], k, s, pads, d, ceil)
    out_ref, idx_ref = max_pool_ref(x, p, oh, ow, ceil)
    out = np.empty(shape[:2] + (oh, ow), dtype)
    idx = np.empty(out.shape, np.int64)
    nbcpu.max_pool2d(x, out, idx, p)
    np.testing.assert_array_equal(out, out_ref.astype(dtype))
    np.testing.assert_array_equal(idx, idx_ref)
    out2 = np.empty_like(out)
    nbcpu.max_pool2d(x, out2, None, p)
    np.testing.assert_array_equal(out2, out)

    g = rand(rng, out.shape, dtype)
    gi = np.full(shape, np.nan, dtype)  # must be fully overwritten
    nbcpu.max_pool2d_backward(g, idx, gi, p)
    np.testing.assert_allclose(gi, max_pool_backward_ref(g, idx_ref, shape), **tol(dtype))


def test_cpu_max_pool_fully_padded_windows():
    p, (oh, ow) = geometry(5, 5, (2, 3), (3, 2), (3, 1, 2, 3))
    x = np.random.default_rng(3).standard_normal((1, 3, 5, 5)).astype(np.float32)
    out = np.empty((1, 3, oh, ow), np.float32)
    idx = np.empty(out.shape, np.int64)
    nbcpu.max_pool2d(x, out, idx, p)
    assert np.all(out[:, :, 0, :] == -np.inf) and np.all(idx[:, :, 0, :] == -1)
    assert np.all(idx[:, :, 1:, 1:] >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_max_pool_nan(dtype):
    x = np.arange(2 * 6 * 7, dtype=dtype).reshape(1, 2, 6, 7)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 2] = np.nan  # same window, later: the first NaN keeps the index
    x[0, 0, 2, 0] = 1e9  # larger value after a NaN does not win
    x[0, 1, 5, 6] = np.nan
    p, (oh, ow) = geometry(6, 7, (3, 3), (2, 2), (1, 1, 1, 1))
    out = np.empty((1, 2, oh, ow), dtype)
    idx = np.empty(out.shape, np.int64)
    nbcpu.max_pool2d(x, out, idx, p)
    out_ref, idx_ref = max_pool_ref(x, p, oh, ow)
    np.testing.assert_array_equal(out, out_ref.astype(dtype))
    np.testing.assert_array_equal(idx, idx_ref)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1 * 7 + 1
    # rows 1..3 x cols 1..3 holds both NaNs; rows 1..3 x cols -1..1 holds NaN then 1e9
    assert np.isnan(out[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 1 * 7 + 1
    assert np.isnan(out[0, 0, 1, 0]) and idx[0, 0, 1, 0] == 1 * 7 + 1
    assert np.isnan(out[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 1 * 7 + 1
    assert np.isnan(out[0, 1, -1, -1]) and idx[0, 1, -1, -1] == 5 * 7 + 6


def test_cpu_max_pool_backward_bad_index():
    p, (oh, ow) = geometry(4, 4, (2, 2), (2, 2), (0, 0, 0, 0))
    g = np.ones((1, 1, oh, ow))
    idx = np.array([[[[0, -1], [16, 15]]]], dtype=np.int64)
    gi = np.empty((1, 1, 4, 4))
    with pytest.raises(ValueError, match="max_pool2d_backward"):
        nbcpu.max_pool2d_backward(g, idx, gi, p)
    idx[0, 0, 1, 0] = -1
    nbcpu.max_pool2d_backward(g, idx, gi, p)
    assert gi.sum() == 2 and gi[0, 0, 0, 0] == 1 and gi[0, 0, 3, 3] == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", AVG_OPTS, ids=lambda o: f"incl{int(o[0])}-div{o[1]}")
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[4] == (1, 1)],
                         ids=[i for i, c in zip(POOL_IDS, POOL_CASES) if c[4] == (1, 1)])
def test_cpu_avg_pool(case, opts, dtype):
    shape, k, s, pads, _, ceil = case
    rng = np.random.default_rng(4)
    x = rand(rng, shape, dtype)
    p, (oh, ow) = geometry(shape[2], shape[3], k, s, pads, ceil=ceil,
                           count_include_pad=opts[0], divisor_override=opts[1])
    out = np.full(shape[:2] + (oh, ow), np.nan, dtype)
    nbcpu.avg_pool2d(x, out, p)
    np.testing.assert_allclose(out, avg_pool_ref(x, p, oh, ow, ceil), **tol(dtype))
    g = rand(rng, out.shape, dtype)
    gi = np.full(shape, np.nan, dtype)
    nbcpu.avg_pool2d_backward(g, gi, p)
    np.testing.assert_allclose(gi, avg_pool_backward_ref(g, p, shape, ceil), **tol(dtype))


def test_cpu_avg_pool_fully_padded_window_is_zero():
    p, (oh, ow) = geometry(5, 5, (2, 3), (3, 2), (3, 1, 2, 3), count_include_pad=False)
    x = np.random.default_rng(5).standard_normal((1, 1, 5, 5))
    out = np.full((1, 1, oh, ow), np.nan)
    nbcpu.avg_pool2d(x, out, p)
    assert np.all(out[0, 0, 0, :] == 0)


# ------------------------------------------------------------------ numba.cuda

def dev(a):
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a))


def dev_empty(shape, dtype, fill=np.nan):
    return dev(np.full(shape, fill, dtype))


# The simulator runs threads as Python threads: keep these tiny.
CUDA_POOL_CASES = [
    ((1, 2, 5, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 1, 5, 7), (3, 3), (1, 2), (1, 2, 2, 0), (1, 1), True),  # asymmetric, ceil
    ((1, 2, 4, 5), (2, 3), (3, 2), (3, 1, 2, 3), (1, 1), False),  # fully padded windows
    ((1, 1, 7, 9), (3, 2), (1, 3), (2, 2, 1, 2), (2, 2), False),  # dilation 2
    ((2, 3, 9, 17), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),  # more elements than threads
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_elementwise(cu, dtype):
    rng = np.random.default_rng(6)
    x, g = rand(rng, (2, 3, 7), dtype), rand(rng, (2, 3, 7), dtype)
    x[0, 0, 0] = np.nan
    bias = rand(rng, (3,), dtype)
    out = dev_empty(x.shape, dtype)
    cu.relu(dev(x), out)
    np.testing.assert_array_equal(out.copy_to_host(), relu_ref(x).astype(dtype))
    cu.relu_backward(dev(g), dev(x), out)
    np.testing.assert_array_equal(out.copy_to_host(), relu_backward_ref(g, x).astype(dtype))

    cu.bias_relu(dev(x), dev(bias), out)
    y = out.copy_to_host()
    y_ref = relu_ref(x.astype(np.float64) + bias.astype(np.float64)[None, :, None])
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    gx, gb = dev_empty(x.shape, dtype), dev_empty((3,), dtype)
    cu.bias_relu_backward(dev(g), dev(y), gx, gb)
    gx_ref = relu_backward_ref(g, y)
    np.testing.assert_array_equal(gx.copy_to_host(), gx_ref.astype(dtype))
    np.testing.assert_allclose(gb.copy_to_host(), gx_ref.sum(axis=(0, 2)), **tol(dtype))
    gx2 = dev_empty(x.shape, dtype)
    cu.bias_relu_backward(dev(g), dev(y), gx2, None)
    np.testing.assert_array_equal(gx2.copy_to_host(), gx_ref.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CUDA_POOL_CASES)
def test_cuda_max_pool(cu, case, dtype):
    shape, k, s, pads, d, ceil = case
    rng = np.random.default_rng(7)
    x = rand(rng, shape, dtype, ties=dtype == np.float64)
    x.flat[3] = np.nan
    p, (oh, ow) = geometry(shape[2], shape[3], k, s, pads, d, ceil)
    out_ref, idx_ref = max_pool_ref(x, p, oh, ow, ceil)
    out, idx = dev_empty(shape[:2] + (oh, ow), dtype), dev_empty(shape[:2] + (oh, ow), np.int64, 7)
    cu.max_pool2d(dev(x), out, idx, p)
    np.testing.assert_array_equal(out.copy_to_host(), out_ref.astype(dtype))
    np.testing.assert_array_equal(idx.copy_to_host(), idx_ref)
    out2 = dev_empty(shape[:2] + (oh, ow), dtype)
    cu.max_pool2d(dev(x), out2, None, p)
    np.testing.assert_array_equal(out2.copy_to_host(), out_ref.astype(dtype))

    g = rand(rng, (shape[0], shape[1], oh, ow), dtype)
    bad = idx_ref.copy()
    bad.flat[0] = shape[2] * shape[3] + 5  # out of range: skipped, never written through
    gi = dev_empty(shape, dtype)
    # The backward takes only the indices: the ops layer hands every backend dummy geometry.
    cu.max_pool2d_backward(dev(g), dev(bad), gi, DUMMY_POOL)
    g_ok = g.copy()
    g_ok.flat[0] = 0
    np.testing.assert_allclose(gi.copy_to_host(), max_pool_backward_ref(g_ok, idx_ref, shape), **tol(dtype))


def sequential_scatter(g, idx, shape):
    """grad_in of the C++ kernel: zero, then += in row-major output order, in g's dtype."""
    n, c, h, w = shape
    gi = np.zeros((n * c, h * w), dtype=g.dtype)
    g2, i2 = g.reshape(n * c, -1), idx.reshape(n * c, -1)
    for plane in range(n * c):
        for k in range(g2.shape[1]):
            if 0 <= i2[plane, k] < h * w:
                gi[plane, i2[plane, k]] += g2[plane, k]
    return gi.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out_hw", [((1, 1, 1, 1), (1, 1)), ((2, 3, 4, 5), (6, 7)),
                                          ((1, 2, 3, 3), (1, 1)), ((3, 1, 5, 2), (4, 9))])
def test_cuda_max_pool_backward_follows_indices_only(cu, shape, out_hw, dtype):
    """Arbitrary indices (repeats, -1, no window structure) with dummy geometry: the result
    is the reference scatter, bit for bit the sequential one, and repeatable."""
    rng = np.random.default_rng(9)
    n, c, h, w = shape
    gshape = (n, c) + out_hw
    idx = rng.integers(-1, h * w, size=gshape).astype(np.int64)
    idx.reshape(-1)[::4] = rng.integers(0, min(h * w, 3), size=idx.reshape(-1)[::4].size)  # repeats
    g = rand(rng, gshape, dtype)
    gi = dev_empty(shape, dtype)
    cu.max_pool2d_backward(dev(g), dev(idx), gi, DUMMY_POOL)
    got = gi.copy_to_host()
    np.testing.assert_allclose(got, max_pool_backward_ref(g, idx, shape), **tol(dtype))
    np.testing.assert_array_equal(got, sequential_scatter(g, idx, shape))
    gi2 = dev_empty(shape, dtype, 3.0)
    cu.max_pool2d_backward(dev(g), dev(idx), gi2, DUMMY_POOL)
    np.testing.assert_array_equal(gi2.copy_to_host(), got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", AVG_OPTS[:2] + AVG_OPTS[3:], ids=lambda o: f"incl{int(o[0])}-div{o[1]}")
@pytest.mark.parametrize("case", [c for c in CUDA_POOL_CASES if c[4] == (1, 1)])
def test_cuda_avg_pool(cu, case, opts, dtype):
    shape, k, s, pads, _, ceil = case
    rng = np.random.default_rng(8)
    x = rand(rng, shape, dtype)
    p, (oh, ow) = geometry(shape[2], shape[3], k, s, pads, ceil=ceil,
                           count_include_pad=opts[0], divisor_override=opts[1])
    out = dev_empty(shape[:2] + (oh, ow), dtype)
    cu.avg_pool2d(dev(x), out, p)
    np.testing.assert_allclose(out.copy_to_host(), avg_pool_ref(x, p, oh, ow, ceil), **tol(dtype))
    g = rand(rng, (shape[0], shape[1], oh, ow), dtype)
    gi = dev_empty(shape, dtype)
    cu.avg_pool2d_backward(dev(g), gi, p)
    np.testing.assert_allclose(gi.copy_to_host(), avg_pool_backward_ref(g, p, shape, ceil), **tol(dtype))
