"""Seeded randomized sweeps of the int8 convolution, requantization and int8/float32 2x2 max-pool
paths against the reference (exact), plus concurrency, thread-count determinism and guard pages.

The geometries aim at the corners of the native kernels: the VNNI direct (tall-input) convolution
and its fall back to im2col (stride > 1, pad_bottom > dilation*(kh-1), kw > 64), asymmetric
padding, kernels wider/taller than the input, 1x1 kernels with padding, every per-group channel
remainder mod 4, output widths 1 and > 64, tiles straddling images, zero points at the extremes,
per-channel weight zero points, every (x, w, y) type combination, int32 bias wrap-around.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import failures_in_threads, guarded

TYPE_PAIRS = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)]

# (x shape, C_out, (kh, kw), stride, padding, dilation, groups); small enough for every backend.
PINNED = [
    ((2, 5, 9, 8), 6, (3, 3), 1, 2, 2, 1),                          # dilation > 1 with padding
    ((1, 3, 10, 11), 4, (3, 2), 1, ((2, 1), (0, 3)), (2, 3), 1),    # dilation and asymmetric padding
    ((2, 4, 7, 6), 5, (3, 3), 1, ((0, 2), (3, 1)), 1, 1),           # asymmetric padding
    ((1, 3, 4, 3), 4, (2, 7), 1, ((1, 0), (3, 4)), 1, 1),           # kernel wider than the input
    ((2, 2, 2, 5), 3, (5, 3), 1, ((2, 2), (1, 1)), 1, 1),           # kernel taller than the input
    ((2, 5, 4, 5), 7, (1, 1), 1, ((2, 0), (1, 2)), 1, 1),           # 1x1, top/left padding (tall path)
    ((2, 5, 4, 5), 7, (1, 1), 1, ((0, 2), (0, 0)), 1, 1),           # 1x1, bottom padding (im2col)
    ((1, 6, 3, 3), 4, (1, 1), 1, 1, 1, 1),                          # 1x1, padding 1
    ((2, 4, 6, 6), 5, (3, 3), 1, ((0, 4), (1, 1)), (2, 1), 1),      # pad_bottom == dh*(kh-1): tall
    ((2, 4, 6, 6), 5, (3, 3), 1, ((0, 5), (1, 1)), (2, 1), 1),      # pad_bottom > dh*(kh-1): im2col
    ((1, 8, 6, 5), 6, (3, 3), 1, 1, 1, 2),                          # 4 channels per group
    ((2, 15, 5, 6), 9, (3, 2), 1, ((1, 0), (1, 1)), 1, 3),          # 5 per group
    ((1, 12, 5, 5), 4, (2, 3), 1, 1, 1, 2),                         # 6 per group
    ((2, 12, 6, 4), 8, (3, 3), 1, 1, 1, 4),                         # 3 per group
    ((1, 21, 5, 5), 6, (3, 3), 1, 1, 1, 3),                         # 7 per group
    ((2, 6, 7, 7), 12, (3, 3), 1, 1, 1, 6),                         # depthwise, 2 outputs per group
    ((2, 3, 6, 3), 4, (3, 3), 1, ((1, 1), (0, 0)), 1, 1),           # output width 1
    ((3, 5, 7, 1), 3, (3, 1), 1, ((1, 1), (0, 0)), 1, 1),           # input and output width 1
    ((1, 3, 3, 70), 5, (3, 3), 1, ((1, 1), (2, 0)), 1, 1),          # output width 70
    ((1, 2, 2, 130), 3, (2, 5), 1, 0, (1, 2), 1),                   # output width 122
    ((1, 4, 3, 6), 3, (1, 9), 1, ((0, 0), (10, 10)), 1, 1),         # narrow input, output width 18
    ((9, 3, 2, 2), 5, (2, 2), 1, ((1, 1), (1, 1)), 1, 1),           # many tiny images in one tile
    ((2, 5, 9, 8), 6, (3, 3), 2, 1, 1, 1),                          # stride 2
    ((1, 4, 7, 9), 3, (3, 3), (1, 2), ((1, 0), (2, 1)), 1, 1),      # stride (1, 2)
    ((1, 4, 7, 9), 3, (2, 3), (2, 1), 1, (2, 1), 1),                # stride (2, 1)
    ((1, 2, 2, 2), 3, (1, 1), 1, ((3, 0), (4, 2)), 1, 1),           # outputs entirely in the padding
    ((1, 1, 1, 1), 1, (1, 1), 1, 0, 1, 1),
    ((2, 3, 1, 1), 4, (3, 3), 1, 1, 1, 1),
]

# Native only: several threads (> 2e6 multiply-adds), several MR panels / wide chunks, kw at the tall limit.
LARGE = [
    ((2, 16, 20, 20), 24, (3, 3), 1, 1, 1, 1),
    ((1, 32, 12, 100), 40, (3, 3), 1, ((1, 1), (2, 0)), 1, 2),
    ((3, 20, 15, 15), 36, (5, 5), 1, 2, 1, 1),
    ((4, 64, 8, 8), 64, (3, 3), 1, 1, 1, 64),
    ((2, 13, 17, 33), 29, (3, 3), 1, ((2, 1), (1, 2)), (2, 1), 1),
    ((1, 8, 40, 40), 16, (3, 3), 2, 1, 1, 1),
    ((8, 3, 32, 32), 6, (5, 5), 1, 2, 1, 1),
    ((1, 200, 6, 6), 50, (3, 3), 1, 1, 1, 1),
    ((64, 3, 1, 1), 7, (1, 1), 1, 0, 1, 1),
    ((50, 6, 2, 3), 15, (1, 1), 1, ((2, 0), (1, 1)), 1, 3),
    ((1, 4, 3, 100), 5, (1, 64), 1, ((0, 0), (10, 10)), 1, 1),
    ((1, 4, 3, 100), 5, (1, 65), 1, ((0, 0), (10, 10)), 1, 1),
    ((2, 30, 9, 70), 26, (3, 3), 1, ((0, 2), (1, 1)), 1, 2),
]


def _rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _random_geometry(rng, large):
    while True:
        g = int(rng.choice([1, 1, 2, 3, 4] if large else [1, 1, 2, 3]))
        cg = int(rng.integers(1, 40 if large else 10))
        cog = int(rng.integers(1, 40 if large else 7))
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        dil = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3])))
        stride = (1, 1) if rng.random() < 0.75 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        t, b, l, r = (int(v) for v in rng.integers(0, 4, 4))
        h, w = (int(v) for v in rng.integers(4, 30, 2)) if large else (int(v) for v in rng.integers(1, 11, 2))
        if rng.random() < 0.15:  # wide rows: output width > 64
            h, w = int(rng.integers(1, 6)), int(rng.integers(62, 140))
        n = int(rng.integers(1, 5))
        if h + t + b - dil[0] * (kh - 1) - 1 < 0 or w + l + r - dil[1] * (kw - 1) - 1 < 0:
            continue
        return (n, g * cg, h, w), g * cog, (kh, kw), stride, ((t, b), (l, r)), dil, g


def _case(rng, geometry, index):
    """Operands, zero points and requantization parameters for one geometry. Types and zero points
    cycle with ``index`` (4 type pairs x 5 zero-point choices: all 20 pairings within 20 cases);
    output type, bias, y_zp and activation are drawn at random."""
    shape, c_out, kernel, stride, padding, dilation, groups = geometry
    tx, tw = TYPE_PAIRS[index % 4]
    ty = (np.uint8, np.int8)[int(rng.integers(2))]
    xi, wi, yi = np.iinfo(tx), np.iinfo(tw), np.iinfo(ty)
    x, w = _rand(rng, tx, shape), _rand(rng, tw, (c_out, shape[1] // groups) + kernel)
    wzp_vec = _rand(rng, tw, c_out)
    wzp_vec[0], wzp_vec[-1] = wi.min, wi.max
    x_zp, w_zp = [(int(xi.max), wzp_vec), (int(xi.min), int(wi.max)), (None, None),
                  (int(_rand(rng, tx, ())), wzp_vec), (int(xi.max), int(wi.min))][index % 5]
    taps = shape[1] // groups * kernel[0] * kernel[1]
    w_scale = (rng.random(c_out) * 0.008 + 0.001).astype(np.float32) if index % 3 else np.float32(0.004)
    bias = [None, rng.normal(0, 300, c_out).astype(np.float32),
            rng.integers(-2**16, 2**16, c_out).astype(np.int32),
            np.full(c_out, 2**31 - 3000, np.int32)][int(rng.integers(4))]  # the last wraps acc + bias in int32
    y_zp = ty([yi.min, yi.max, _rand(rng, ty, ()), (int(yi.min) + int(yi.max)) // 2][int(rng.integers(4))])
    y_scale = 0.05 * 0.005 * np.sqrt(taps) * 60 * float(rng.choice([0.3, 1.0, 3.0]))
    qargs = (x, 0.05, x_zp, w, w_scale, w_zp, y_scale, y_zp)
    qkw = dict(bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
               activation="relu" if rng.random() < 0.5 else None)
    return dict(geometry=geometry, types=(tx.__name__, tw.__name__, ty.__name__), x_zp=x_zp, w_zp=w_zp,
                x=x, w=w, conv_args=(x, w, x_zp, w_zp, stride, padding, dilation, groups), qargs=qargs, qkw=qkw)


def _describe(c):
    return (f"geometry={c['geometry']} types={c['types']} x_zp={c['x_zp']} "
            f"w_zp={'per-channel' if isinstance(c['w_zp'], np.ndarray) else c['w_zp']} "
            f"bias={None if c['qkw']['bias'] is None else c['qkw']['bias'].dtype} act={c['qkw']['activation']}")


_EXPECTED = {}


def _cases(which):
    """Cases with their reference results, computed once per session (shared by all backends)."""
    if which not in _EXPECTED:
        if which == "small":
            rng = np.random.default_rng(20240601)
            geoms = [(g, i) for i, g in enumerate(PINNED)] + [(g, i + 1) for i, g in enumerate(PINNED)]
            geoms += [(_random_geometry(rng, False), i) for i in range(70)]
        else:
            rng = np.random.default_rng(20240602)
            geoms = [(g, i) for i, g in enumerate(LARGE)] + [(_random_geometry(rng, True), i) for i in range(20)]
        cases = []
        for geometry, index in geoms:
            c = _case(rng, geometry, index)
            c["want_int"] = ref.conv2d_integer(*c["conv_args"])
            c["want_q"] = ref.qlinear_conv2d(*c["qargs"], **c["qkw"])
            cases.append(c)
        _EXPECTED[which] = cases
    return _EXPECTED[which]


def _check_case(c, prepared=True):
    got = lk.conv2d_integer(*c["conv_args"])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, c["want_int"], err_msg="conv2d_integer " + _describe(c))
    got = lk.qlinear_conv2d(*c["qargs"], **c["qkw"])
    assert got.dtype == c["want_q"].dtype
    np.testing.assert_array_equal(got, c["want_q"], err_msg="qlinear_conv2d " + _describe(c))
    if prepared:
        f = lk.prepare_qlinear_conv2d(*c["qargs"][1:], **c["qkw"], x_dtype=c["x"].dtype)
        np.testing.assert_array_equal(f(c["x"]), c["want_q"], err_msg="prepare_qlinear_conv2d " + _describe(c))
        np.testing.assert_array_equal(f(c["x"][:1]), c["want_q"][:1], err_msg="prepared, batch 1 " + _describe(c))


def test_conv_fuzz_small(cpu_backend):
    """Every CPU backend on the pinned corner cases (each twice, with different types and zero
    points) and 70 random small geometries."""
    for c in _cases("small"):
        _check_case(c)


def test_conv_fuzz_large_native(fast_cpu_backend):
    if not fast_cpu_backend.startswith("native"):
        pytest.skip("large shapes on the native backend only")
    for c in _cases("large"):
        _check_case(c, prepared=False)


def test_conv_thread_count_determinism(fast_cpu_backend):
    """1, 2 and 3 threads (different work splits) give the reference bit for bit."""
    if not fast_cpu_backend.startswith("native"):
        pytest.skip("large shapes on the native backend only")
    before = lk.get_num_threads()
    cases = _cases("large")[::2]
    try:
        for threads in (1, 2, 3):
            lk.set_num_threads(threads)
            for c in cases:
                np.testing.assert_array_equal(lk.conv2d_integer(*c["conv_args"]), c["want_int"],
                                              err_msg=f"{threads} threads: " + _describe(c))
                np.testing.assert_array_equal(lk.qlinear_conv2d(*c["qargs"], **c["qkw"]), c["want_q"],
                                              err_msg=f"{threads} threads: " + _describe(c))
    finally:
        lk.set_num_threads(before)


@pytest.mark.parametrize("types", TYPE_PAIRS, ids=lambda t: "-".join(np.dtype(d).name for d in t))
def test_conv_int32_wraparound(cpu_backend, types):
    """36000 taps of +-255 x +-255 overflow int32: every path wraps modulo 2**32 as the reference
    (stride 1: the direct VNNI path; stride 2: im2col), and the requantized output follows."""
    tx, tw = types
    xi, wi = np.iinfo(tx), np.iinfo(tw)
    x = np.full((1, 4000, 5, 5), xi.max, tx)
    w = np.full((2, 4000, 3, 3), wi.min, tw)
    exact = 4000 * 9 * (int(xi.max) - int(xi.min)) * (int(wi.min) - int(wi.max))  # an interior output
    assert not -2**31 <= exact < 2**31
    for stride in (1, 2):
        want = ref.conv2d_integer(x, w, int(xi.min), int(wi.max), stride, 1)
        assert int(want[0, 0, 1, 1]) == int(np.int64(exact).astype(np.int32))  # wrapped
        np.testing.assert_array_equal(lk.conv2d_integer(x, w, int(xi.min), int(wi.max), stride, 1), want)
        qargs = (x, 0.5, int(xi.min), w, 0.5, int(wi.max), 4e6, np.int8(0))  # the wrapped value lands in range
        kw = dict(bias=np.full(2, 2**31 - 7, np.int32), stride=stride, padding=1)
        np.testing.assert_array_equal(lk.qlinear_conv2d(*qargs, **kw), ref.qlinear_conv2d(*qargs, **kw))


def _matmul_cases():
    rng = np.random.default_rng(20240603)
    cases = []
    for i in range(24):
        big = i % 4 == 0
        m, k, n = (int(rng.integers(1, hi)) for hi in ((300, 600, 150) if big else (30, 70, 40)))
        ta, tb = TYPE_PAIRS[i % 4]
        ty = (np.uint8, np.int8)[(i // 4) % 2]
        a, b = _rand(rng, ta, (m, k)), _rand(rng, tb, (k, n))
        bzp = _rand(rng, tb, n) if i % 2 else int(np.iinfo(tb).min)
        bias = [None, rng.normal(0, 300, n), rng.integers(-2**20, 2**20, n).astype(np.int32)][i % 3]
        args = (a, 0.05, int(_rand(rng, ta, ())), b, (rng.random(n) * 0.01 + 1e-3).astype(np.float32), bzp,
                0.05 * 0.006 * np.sqrt(k) * 50, ty(_rand(rng, ty, ())))
        kw = dict(bias=bias, activation="relu" if i % 5 < 2 else None)
        cases.append((args, kw, big, ref.qlinear_matmul(*args, **kw)))
    return cases


def test_qlinear_matmul_fuzz_threads(fast_cpu_backend):
    """The requantizing GEMM sink (row blocks per thread, partial last blocks) and the prepared
    (packed) matmul, with 1 and 2 threads."""
    before = lk.get_num_threads()
    native = fast_cpu_backend.startswith("native")
    try:
        for threads in (1, 2):
            lk.set_num_threads(threads)
            for args, kw, big, want in _matmul_cases():
                if big and not native:
                    continue
                what = f"{threads} threads, a {args[0].shape} {args[0].dtype}, b {args[3].dtype}, y {want.dtype}"
                np.testing.assert_array_equal(lk.qlinear_matmul(*args, **kw), want, err_msg=what)
                f = lk.prepare_qlinear_matmul(*args[1:], **kw, a_dtype=args[0].dtype)
                np.testing.assert_array_equal(f(args[0]), want, err_msg="prepared " + what)
    finally:
        lk.set_num_threads(before)


def test_concurrent_python_threads(fast_cpu_backend):
    """Several Python threads (the GIL is released in the kernels) calling the int8 ops on different
    shapes at once, so per-thread scratch buffers grow and are reused concurrently: every result
    equals the single-threaded one."""
    if not fast_cpu_backend.startswith("native"):
        pytest.skip("only the native kernels run without the GIL")
    small, large = _cases("small"), _cases("large")
    picked = small[::6] + large[::3]
    jobs = []
    for c in picked:
        jobs.append((lambda c=c: lk.conv2d_integer(*c["conv_args"]), c["want_int"]))
        jobs.append((lambda c=c: lk.qlinear_conv2d(*c["qargs"], **c["qkw"]), c["want_q"]))
        f = lk.prepare_qlinear_conv2d(*c["qargs"][1:], **c["qkw"], x_dtype=c["x"].dtype)
        jobs.append((lambda f=f, x=c["x"]: f(x), c["want_q"]))
    for args, kw, _, want in _matmul_cases()[:8]:
        jobs.append((lambda args=args, kw=kw: lk.qlinear_matmul(*args, **kw), want))
    pool_x = _rand(np.random.default_rng(5), np.int8, (3, 8, 16, 66))
    jobs.append((lambda: lk.max_pool2d(pool_x, 2), ref.max_pool2d(pool_x, 2)))
    failures = failures_in_threads(jobs, workers=5, rounds=3)
    assert not failures, f"{len(failures)} failing calls (thread, job, what): {failures[:5]}"


# ---------------------------------------------------------------- max_pool2d 2x2 (flat path)
def _pool_input(rng, dtype, shape):
    if dtype == np.float32:
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.03] = np.nan
        x[rng.random(shape) < 0.02] = np.inf
        x[rng.random(shape) < 0.02] = -np.inf
        return x
    return _rand(rng, dtype, shape)


def _check_pool(x, **kw):
    want = ref.max_pool2d(x, 2, **kw)
    got = lk.max_pool2d(x, 2, **kw)
    assert got.dtype == x.dtype
    if x.dtype == np.float32:
        want = want.astype(np.float32)
    np.testing.assert_array_equal(got, want, err_msg=f"max_pool2d {x.shape} {x.dtype} {kw}")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float32])
def test_max_pool2d_2x2_fuzz(cpu_backend, dtype):
    """Random even planes (widths 2, 8, 64, 66 and others, a few odd ones that must not take the
    flat path), values at the type extremes, NaN / +-inf in float32."""
    rng = np.random.default_rng(20240604 + np.dtype(dtype).num)
    for i in range(40):
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        h = 2 * int(rng.integers(1, 8))
        w = [2, 8, 64, 66][i % 4] if i < 16 else 2 * int(rng.integers(1, 90))
        if i % 10 == 9:
            h += 1  # odd height: the general path
        x = _pool_input(rng, dtype, (n, c, h, w))
        if dtype != np.float32 and i % 7 == 0:
            x[0, 0] = np.iinfo(dtype).min
            x[-1, -1, :, ::3] = np.iinfo(dtype).max
        if dtype == np.float32 and i % 7 == 0:
            x[0, 0, :2] = np.nan  # a whole window of NaN
        _check_pool(x, ceil_mode=bool(i % 3 == 0))
    x = _pool_input(rng, dtype, (2, 3, 6, 8))
    _check_pool(x[:, :, :, :])
    _check_pool(x.transpose(0, 1, 3, 2))  # non-contiguous input


def test_max_pool2d_2x2_large_threads(fast_cpu_backend):
    before = lk.get_num_threads()
    rng = np.random.default_rng(20240605)
    try:
        for dtype in (np.int8, np.uint8, np.float32):
            x = _pool_input(rng, dtype, (4, 16, 34, 66))
            for threads in (1, 2, 3):
                lk.set_num_threads(threads)
                _check_pool(x)
    finally:
        lk.set_num_threads(before)


# ---------------------------------------------------------------- guard pages
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard pages (Linux)")
@pytest.mark.parametrize("at_end", [True, False], ids=["guard-after", "guard-before"])
def test_guard_pages_around_operands(fast_cpu_backend, at_end):
    """Inputs and outputs flush against an inaccessible page: the masked loads/stores of the
    direct convolution, im2col, requantization and 2x2 pooling never touch memory outside them."""
    rng = np.random.default_rng(20240606)
    geometries = [((1, 3, 5, 7), 5, (3, 3), 1, 1, 1, 1), ((2, 5, 3, 9), 4, (2, 3), 1, ((1, 1), (2, 0)), (1, 2), 1),
                  ((1, 1, 1, 1), 1, (1, 1), 1, 0, 1, 1), ((3, 4, 6, 70), 6, (3, 5), 1, 2, 1, 2),
                  ((2, 6, 7, 5), 9, (3, 3), 2, 1, 1, 3), ((1, 2, 4, 4), 3, (3, 3), 1, ((0, 3), (1, 1)), 1, 1),
                  ((1, 3, 2, 3), 2, (1, 9), 1, ((0, 0), (12, 1)), 1, 1)]
    for i, (shape, c_out, kernel, stride, padding, dilation, groups) in enumerate(geometries):
        for j, (tx, tw) in enumerate(TYPE_PAIRS):
            ty = (np.uint8, np.int8)[j % 2]
            x = guarded(shape, tx, at_end)
            x[...] = _rand(rng, tx, shape)
            w = guarded((c_out, shape[1] // groups) + kernel, tw, at_end)
            w[...] = _rand(rng, tw, w.shape)
            geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
            np.testing.assert_array_equal(lk.conv2d_integer(x, w, 3, 1, **geo), ref.conv2d_integer(x, w, 3, 1, **geo))
            qargs = (x, 0.1, 3, w, 0.01, 1, 0.2, ty(5))
            want = ref.qlinear_conv2d(*qargs, **geo, activation="relu" if i % 2 else None)
            out = guarded(want.shape, ty, at_end)
            lk.qlinear_conv2d(*qargs, **geo, activation="relu" if i % 2 else None, out=out)
            np.testing.assert_array_equal(out, want)
    for shape in [(1, 1, 2, 2), (2, 3, 2, 8), (1, 2, 4, 64), (3, 1, 2, 66), (1, 1, 6, 130), (5, 1, 2, 8)]:
        for dtype in (np.uint8, np.int8, np.float32):
            x = guarded(shape, dtype, at_end)
            x[...] = _pool_input(rng, dtype, shape)
            want = ref.max_pool2d(x, 2).astype(dtype)
            out = guarded(want.shape, dtype, at_end)
            lk.max_pool2d(x, 2, out=out)
            np.testing.assert_array_equal(out, want)
