"""max_pool2d / avg_pool2d forward and backward on every CPU backend vs the float64
reference, plus agreement with torch where torch accepts the arguments."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_close

DTYPES = [np.float32, np.float64]

# (shape, kernel, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((1, 2, 9, 9), 3, 2, 1, 1, False),
    ((1, 2, 9, 9), 3, 2, 1, 1, True),
    ((2, 1, 7, 15), 2, 2, 0, 1, True),
    ((1, 3, 16, 16), 3, 2, 0, 1, False),
    ((1, 2, 17, 17), 3, 1, 1, 1, False),
    ((1, 1, 5, 33), (2, 3), (1, 2), (1, 0), 1, False),
    ((3, 2, 11, 13), 3, 3, 1, 2, True),
    ((1, 2, 6, 31), 1, 1, 0, 1, False),
    ((1, 1, 4, 4), 4, 1, 0, 1, False),
    ((1, 2, 10, 12), (3, 2), (2, 3), ((0, 2), (1, 0)), 1, False),   # asymmetric
    ((1, 2, 5, 5), 2, 2, 3, 1, False),                              # padding > kernel/2: all-pad windows
    ((1, 1, 3, 4), 3, 2, ((4, 1), (0, 5)), (1, 2), True),           # all of the above
    ((2, 2, 1, 1), 1, 1, 0, 1, False),
    ((1, 4, 28, 28), 2, 2, 0, 1, False),
    ((2, 3, 32, 47), 3, 2, 1, 1, True),
    ((1, 2, 13, 64), 2, 2, 0, 1, False),
    # stride / padding far beyond the input: the kernels clip each window to the input
    # instead of padding a scratch row to the stride or the padding
    ((2, 2, 5, 6), 2, 300, 1, 1, False),
    ((1, 2, 5, 6), 3, (1, 700), 2, (1, 2), True),
    ((1, 2, 3, 5), 3, (1, 2500), ((1, 0), (5000, 5000)), 1, False),
]


def _nchw(shape, dtype, rng):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}-p{g[3]}-d{g[4]}-c{g[5]}")
def test_max_pool2d_matches_reference(cpu_backend, dtype, geometry, rng):
    shape, k, s, p, d, ceil = geometry
    x = _nchw(shape, dtype, rng)
    x_before = x.copy()
    y, idx = lk.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = ref.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert_close(y, ry, dtype, rtol=0, atol=0, what="max_pool2d values")
    np.testing.assert_array_equal(idx, ridx)
    assert idx.dtype == np.int64
    assert_close(lk.max_pool2d(x, k, s, p, d, ceil), ry, dtype, rtol=0, atol=0, what="values only")
    np.testing.assert_array_equal(x, x_before)

    g = rng.standard_normal(y.shape).astype(dtype)
    gin = lk.max_pool2d_backward(g, idx, x.shape)
    assert_close(gin, ref.max_pool2d_backward(g, idx, x.shape), dtype, what="max_pool2d_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-k{g[1]}-s{g[2]}-p{g[3]}-c{g[5]}")
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_reference(cpu_backend, dtype, geometry, count_include_pad, rng):
    shape, k, s, p, _, ceil = geometry
    x = _nchw(shape, dtype, rng)
    y = lk.avg_pool2d(x, k, s, p, ceil, count_include_pad)
    assert_close(y, ref.avg_pool2d(x, k, s, p, ceil, count_include_pad), dtype, what="avg_pool2d")
    g = rng.standard_normal(y.shape).astype(dtype)
    gin = lk.avg_pool2d_backward(g, x.shape, k, s, p, ceil, count_include_pad)
    assert_close(gin, ref.avg_pool2d_backward(g, x.shape, k, s, p, ceil, count_include_pad), dtype,
                 what="avg_pool2d_backward")


@pytest.mark.parametrize("divisor", [1, 3, 7])
def test_avg_pool2d_divisor_override(cpu_backend, divisor, rng):
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    y = lk.avg_pool2d(x, 3, 2, 1, True, False, divisor)
    assert_close(y, ref.avg_pool2d(x, 3, 2, 1, True, False, divisor), np.float32)
    g = np.ones_like(y)
    assert_close(lk.avg_pool2d_backward(g, x.shape, 3, 2, 1, True, False, divisor),
                 ref.avg_pool2d_backward(g, x.shape, 3, 2, 1, True, False, divisor), np.float32)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 97])
@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (3, 1), (2, 1)])
def test_pool_widths_around_simd_tiles(fast_cpu_backend, width, kernel, stride, rng):
    """Output rows shorter than, equal to and longer than a vector, for the fast paths."""
    x = rng.standard_normal((2, 3, 7, width + kernel)).astype(np.float32)
    for pad in (0, 1):
        assert_close(lk.max_pool2d(x, kernel, stride, pad), ref.max_pool2d(x, kernel, stride, pad),
                     np.float32, rtol=0, atol=0, what=f"max w={width} pad={pad}")
        assert_close(lk.avg_pool2d(x, kernel, stride, pad), ref.avg_pool2d(x, kernel, stride, pad),
                     np.float32, what=f"avg w={width} pad={pad}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_nan_wins_and_index_points_at_first_nan(cpu_backend, dtype):
    x = np.arange(2 * 1 * 6 * 6, dtype=dtype).reshape(2, 1, 6, 6)
    x[0, 0, 1, 1] = np.nan   # window (0, 0) of a 2x2/s2 pool
    x[1, 0, 4, 5] = np.nan   # window (2, 2)
    x[1, 0, 5, 4] = np.nan   # second NaN in the same window: index stays at the first
    y, idx = lk.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1 * 6 + 1
    assert np.isnan(y[1, 0, 2, 2]) and idx[1, 0, 2, 2] == 4 * 6 + 5
    assert np.isnan(lk.max_pool2d(x, 2)).sum() == 2
    ry, ridx = ref.max_pool2d(x, 2, return_indices=True)
    assert_close(y, ry, dtype, rtol=0, atol=0)
    np.testing.assert_array_equal(idx, ridx)
    # NaN in every position of the window the vectorized paths see, incl. the tail
    for pos in range(36):
        z = np.zeros((1, 1, 6, 6), dtype)
        z.flat[pos] = np.nan
        for k, s in ((2, 2), (3, 2), (3, 1)):
            assert_close(lk.max_pool2d(z, k, s), ref.max_pool2d(z, k, s), dtype, rtol=0, atol=0,
                         what=f"NaN at {pos} k={k} s={s}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_infinities(cpu_backend, dtype):
    x = np.full((1, 1, 4, 4), -np.inf, dtype)
    x[0, 0, 3, 3] = np.inf
    y, idx = lk.max_pool2d(x, 2, return_indices=True)
    ry, ridx = ref.max_pool2d(x, 2, return_indices=True)
    assert_close(y, ry, dtype, rtol=0, atol=0)
    np.testing.assert_array_equal(idx, ridx)  # all -inf window: index of its first tap


def test_windows_entirely_in_padding(cpu_backend):
    x = np.ones((1, 1, 2, 2), np.float32)
    y, idx = lk.max_pool2d(x, 2, 2, 3, return_indices=True)  # 5x5 windows over an 8x8 padded plane
    assert y.shape == (1, 1, 4, 4)
    assert np.isneginf(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == -1
    assert y[0, 0, 1, 1] == 1.0
    avg = lk.avg_pool2d(x, 2, 2, 3, count_include_pad=False)
    assert avg[0, 0, 0, 0] == 0.0 and avg[0, 0, 1, 1] == 1.0
    gin = lk.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(gin, np.ones_like(x))


def test_three_dim_input_and_batch_sizes(cpu_backend, rng):
    x = rng.standard_normal((3, 10, 10)).astype(np.float32)
    y, idx = lk.max_pool2d(x, 2, return_indices=True)
    assert y.shape == (3, 5, 5) and idx.shape == (3, 5, 5)
    assert_close(y, ref.max_pool2d(x[None], 2)[0], np.float32, rtol=0, atol=0)
    assert lk.max_pool2d_backward(np.ones_like(y), idx, x.shape).shape == x.shape
    assert lk.avg_pool2d(x, 3, 1, 1).shape == (3, 10, 10)
    assert lk.avg_pool2d_backward(np.ones((3, 10, 10), np.float32), x.shape, 3, 1, 1).shape == x.shape
    empty = np.zeros((0, 3, 10, 10), np.float32)
    assert lk.max_pool2d(empty, 2).shape == (0, 3, 5, 5)
    y0, i0 = lk.max_pool2d(empty, 2, return_indices=True)
    assert y0.shape == i0.shape == (0, 3, 5, 5)
    assert lk.avg_pool2d(empty, 2).shape == (0, 3, 5, 5)
    assert lk.max_pool2d_backward(y0, i0, empty.shape).shape == empty.shape


def test_noncontiguous_input_same_as_contiguous(cpu_backend, rng):
    base = rng.standard_normal((4, 6, 20, 22)).astype(np.float32)
    view = base[::2, 1::2, :, 1:-1]
    assert not view.flags.c_contiguous
    assert_close(lk.max_pool2d(view, 3, 2, 1), lk.max_pool2d(np.ascontiguousarray(view), 3, 2, 1),
                 np.float32, rtol=0, atol=0)
    assert_close(lk.avg_pool2d(view, 2), ref.avg_pool2d(view, 2), np.float32)


def test_out_argument_is_written_and_returned(cpu_backend, rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = np.empty((2, 3, 4, 4), np.float32)
    assert lk.max_pool2d(x, 2, out=out) is out
    assert_close(out, ref.max_pool2d(x, 2), np.float32, rtol=0, atol=0)
    assert lk.avg_pool2d(x, 2, out=out) is out
    assert_close(out, ref.avg_pool2d(x, 2), np.float32)


def test_max_pool2d_backward_rejects_bad_indices(cpu_backend):
    g = np.ones((1, 1, 2, 2), np.float32)
    for bad in (16, 1000, -2):
        idx = np.zeros((1, 1, 2, 2), np.int64)
        idx[0, 0, 1, 1] = bad
        with pytest.raises(ValueError, match="indices"):
            lk.max_pool2d_backward(g, idx, (1, 1, 4, 4))


# ------------------------------------------------------------------ agreement with torch
torch = pytest.importorskip("torch")
TORCH_CASES = [
    (shape, k, s, p, d, ceil)
    for shape, k, s, p, d, ceil in itertools.product(
        [(2, 3, 9, 11), (1, 2, 16, 17), (3, 1, 28, 28)], [1, 2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True])
    if p <= k // 2
]


@pytest.mark.parametrize("case", TORCH_CASES)
def test_pooling_matches_torch(fast_cpu_backend, case, rng):
    shape, k, s, p, d, ceil = case
    if d * (k - 1) + 1 > min(shape[2:]) + 2 * p:
        pytest.skip("kernel larger than the padded input")
    x = rng.standard_normal(shape).astype(np.float32)
    t = torch.from_numpy(x)
    ty, tidx = torch.nn.functional.max_pool2d(t, k, s, p, d, ceil, return_indices=True)
    y, idx = lk.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    if d == 1:
        for cip in (True, False):
            ta = torch.nn.functional.avg_pool2d(t, k, s, p, ceil, cip)
            assert_close(lk.avg_pool2d(x, k, s, p, ceil, cip), ta.numpy(), np.float32, rtol=2e-6, atol=1e-6)


# ------------------------------------------------------------------ random geometries (hypothesis)
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def pool_geometry(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, 5)) for _ in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 20))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 40))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    return shape, (kh, kw), stride, ((pads[0], pads[1]), (pads[2], pads[3])), (dh, dw), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**31 - 1))
def test_native_pooling_random_geometries(geometry, seed):
    shape, k, s, p, d, ceil = geometry
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    y, idx = lk.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = ref.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert_close(y, ry, np.float32, rtol=0, atol=0)
    np.testing.assert_array_equal(idx, ridx)
    g = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
    assert_close(lk.max_pool2d_backward(g, idx, shape), ref.max_pool2d_backward(g, idx, shape), np.float32)
    if k[0] <= shape[2] + p[0][0] + p[0][1] and k[1] <= shape[3] + p[1][0] + p[1][1]:
        for cip in (True, False):
            a = lk.avg_pool2d(x, k, s, p, ceil, cip)
            assert_close(a, ref.avg_pool2d(x, k, s, p, ceil, cip), np.float32)
            ga = np.ones_like(a)
            assert_close(lk.avg_pool2d_backward(ga, shape, k, s, p, ceil, cip),
                         ref.avg_pool2d_backward(ga, shape, k, s, p, ceil, cip), np.float32)


# ------------------------------------------------------------------ geometry far beyond the input
# max_pool2d(x (2,2,2,5), 2, stride=2**28, padding=1) took 43 s and 16 GB (a scratch row sized
# by the stride) for a 1x1 output. Run in a child process with a timeout so a regression fails
# here instead of exhausting the machine; the bounds are generous (the fixed call takes ms).
HUGE_GEOMETRY = """
import json, resource, time
import numpy as np
import lepton_kernels as lk
x = np.random.default_rng(0).standard_normal((2, 2, 2, 5)).astype(np.float32)
lk.max_pool2d(x, 2)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
y, idx = lk.max_pool2d(x, 2, stride=2**28, padding=1, return_indices=True)
y2 = lk.max_pool2d(x, 2, stride=2**28, padding=1)
y8 = lk.max_pool2d((x * 10).astype(np.int8), 2, stride=2**28, padding=1)
a = lk.avg_pool2d(x, 2, stride=2**30, padding=2**29 - 8)
g = lk.avg_pool2d_backward(np.ones_like(a), x.shape, 2, stride=2**30, padding=2**29 - 8)
seconds = time.perf_counter() - t0
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
print(json.dumps({"seconds": seconds, "grown_kib": grown, "shapes": [y.shape, y2.shape, y8.shape, a.shape, g.shape],
                  "y": y.ravel().tolist(), "y2": y2.ravel().tolist(), "idx": idx.ravel().tolist(),
                  "want": x[:, :, :1, :1].ravel().tolist(), "a": float(np.abs(a).sum()),
                  "g": float(np.abs(g).sum())}))
"""


def test_huge_stride_and_padding_cost_what_the_data_costs():
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HUGE_GEOMETRY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["seconds"] < 5, f"took {r['seconds']:.1f} s"
    assert r["grown_kib"] < 200 * 1024, f"peak RSS grew by {r['grown_kib'] / 1024:.0f} MiB"
    assert r["shapes"][:3] == [[2, 2, 1, 1]] * 3
    # the one window covers padding row/column -1 and input (0, 0)
    assert r["y"] == r["y2"] == r["want"] and r["idx"] == [0, 0, 0, 0]
    # avg: one window per plane, entirely in the (2**29-row) padding
    assert r["shapes"][3:] == [[2, 2, 1, 1], [2, 2, 2, 5]] and r["a"] == r["g"] == 0.0


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_int8_max_pool2d_with_stride_beyond_the_input(cpu_backend, dtype, rng):
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (2, 3, 5, 6), endpoint=True).astype(dtype)
    for k, s, p in ((2, 300, 1), (3, (2, 900), ((0, 1), (2, 3000)))):
        want = ref.max_pool2d(x.astype(np.float64), k, s, p)
        want = np.where(np.isneginf(want), np.iinfo(dtype).min, want).astype(dtype)
        np.testing.assert_array_equal(lk.max_pool2d(x, k, s, p), want)
