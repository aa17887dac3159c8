"""GPU tests of the CUDA int8 kernels against the int64 / float64 spec, bit for bit.

Every CUDA backend that implements the op (native ``_lepton_cuda`` and ``cupy``
over the same ``cuda/kernels/quant.cuh``, ``numba`` numba.cuda for quantize /
dequantize / dynamic_quantize) is called through the kernel interface of
``lepton_kernels._backend`` on CuPy arrays and must equal
``lepton_kernels.reference`` exactly: quantize / dequantize per tensor and per
channel with NaN, +-inf, exact .5 ties, saturation at -128/127 and 0/255, zero
points at the extremes; dynamic_quantize over one and many blocks, all-zero,
one-signed, denormal and overflowing ranges; matmul_integer / conv2d_integer
over every int8/uint8 pair at the dp4a tile edges (64 rows / columns, 32-byte K
steps, K not a multiple of 4, unaligned operands), per-column / per-channel zero
points, reductions long enough that a 16-bit intermediate overflows and long
enough that the int32 accumulator itself wraps; the requantizing qlinear
kernels with ties of the half-to-even rounding, int32 bias wraparound, ReLU and
saturation. Then the public API on CuPy arrays with each backend forced.
Marked ``gpu``; skipped without CuPy or a device.
Run: ``python -m pytest -m gpu tests/test_gpu_quant.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as R
from lepton_kernels._backend import ConvParams, get_named_backend, unavailable_reason

pytestmark = pytest.mark.gpu

CUDA_BACKENDS = ("native", "cupy", "numba")
QTYPES = (np.int8, np.uint8)
PAIRS = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)]


# ---------------------------------------------------------------- fixtures and helpers

def need(backend, op):
    if not hasattr(backend, op):
        pytest.skip(f"{backend.__name__} does not implement {op}")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def sync(cp):
    cp.cuda.get_current_stream().synchronize()
    cp.cuda.runtime.deviceSynchronize()  # surfaces asynchronous kernel faults here


def host(cp, a):
    sync(cp)
    return a.get()


def garbage(cp, shape, dtype):
    """An output buffer holding a value no kernel should leave, so a skipped element is caught."""
    fill = {np.dtype(np.int8): 77, np.dtype(np.uint8): 77, np.dtype(np.int32): 0x5A5A5A5A,
            np.dtype(np.float32): np.nan}[np.dtype(dtype)]
    return cp.full(shape, fill, dtype=dtype)


def span(t):
    info = np.iinfo(t)
    return int(info.min), int(info.max)


def rand_int(rng, t, shape):
    lo, hi = span(t)
    return rng.integers(lo, hi + 1, shape).astype(t)


def equal(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    bad = np.flatnonzero(got.reshape(-1).view(np.uint8 if got.itemsize == 1 else f"u{got.itemsize}")
                         != want.reshape(-1).view(np.uint8 if want.itemsize == 1 else f"u{want.itemsize}"))
    if bad.size:
        i = int(bad[0])
        where = np.unravel_index(i, got.shape)
        raise AssertionError(f"{what}: {bad.size} of {got.size} differ; first at {where}: got "
                             f"{got.reshape(-1)[i]!r}, want {want.reshape(-1)[i]!r}")


# ---------------------------------------------------------------- quantize / dequantize

def special_floats(rng, n, scale):
    """Random values plus NaN, +-inf, exact .5 ties of x / scale, saturating and tiny values."""
    x = (rng.standard_normal(n) * 60 * scale).astype(np.float32)
    k = rng.integers(-300, 300, n)
    ties = (np.float32(scale) * (k + 0.5)).astype(np.float32)  # exact when scale is a power of two
    pick = rng.random(n)
    x = np.where(pick < 0.15, ties, x)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, -1e-40, 127.5 * scale,
                         -128.5 * scale, 255.5 * scale, -0.5 * scale, 0.5 * scale, 1.5 * scale], np.float32)
    x[: min(n, specials.size)] = specials[: min(n, specials.size)]
    return x


def division_sensitive(scale):
    """float32 x near (k + 0.5) * scale where rint(x / scale) != rint(x * (1 / scale)): a kernel
    that multiplies by a reciprocal instead of dividing (as ONNX) gets these wrong."""
    s = np.float32(scale)
    x0 = ((np.arange(-400, 400) + 0.5) * np.float64(s)).astype(np.float32)
    cands = np.concatenate([x0.view(np.int32) + d for d in range(-3, 4)]).view(np.float32)
    with np.errstate(all="ignore"):
        return cands[np.rint(cands / s) != np.rint(cands * (np.float32(1) / s))]


def with_division_sensitive(x3, scale):
    """x3 (outer, channels, inner) with every other element of each channel replaced by values
    sensitive to the division of that channel's scale."""
    x3 = x3.copy()
    for c in range(x3.shape[1]):
        vals = division_sensitive(scale[c] if len(scale) > 1 else scale[0])
        plane = x3[:, c, :]
        idx = np.arange(1, plane.size, 2)[: vals.size]
        plane.flat[idx] = vals[: idx.size]
    return x3


# (outer, channels, inner): per tensor when channels == 1; sizes around the 256-thread block.
QUANT_VIEWS = [(1, 1, 1), (1, 1, 15), (1, 1, 255), (1, 1, 256), (1, 1, 257), (1, 1, 100003),
               (3, 5, 7), (2, 64, 1), (1, 3, 513), (7, 2, 33)]


def _per_channel(rng, channels, qtype):
    lo, hi = span(qtype)
    scale = (rng.random(channels) * 0.2 + 0.01).astype(np.float32)
    scale[0] = 0.25  # power of two: exact ties
    zp = rng.integers(lo, hi + 1, channels).astype(np.int32)
    zp[0] = lo
    zp[-1] = hi
    return scale, zp


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("view", QUANT_VIEWS, ids=lambda v: "x".join(map(str, v)))
def test_quantize_exact(backend, cp, rng, view, qtype):
    need(backend, "quantize")
    outer, channels, inner = view
    lo, hi = span(qtype)
    x = special_floats(rng, outer * channels * inner, 0.25).reshape(view)
    for scale, zp in ((np.array([0.25], np.float32), np.array([lo], np.int32)),
                      (np.array([0.1], np.float32), np.array([hi], np.int32)),
                      (np.array([3.3e-3], np.float32), np.array([(lo + hi) // 2], np.int32))):
        if channels > 1:
            scale, zp = _per_channel(rng, channels, qtype)
        xs = with_division_sensitive(x, scale)
        q = garbage(cp, view, qtype)
        backend.quantize(cp.asarray(xs), cp.asarray(scale), cp.asarray(zp), q)
        axis = 1 if channels > 1 else None
        want = R.quantize(xs, scale if axis else scale[0], zp if axis else zp[0], dtype=qtype, axis=axis)
        equal(host(cp, q), want, f"quantize {view} {np.dtype(qtype).name} zp={zp[:3]}")


@pytest.mark.parametrize("qtype", (np.int8, np.uint8, np.int32), ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("view", QUANT_VIEWS, ids=lambda v: "x".join(map(str, v)))
def test_dequantize_exact(backend, cp, rng, view, qtype):
    need(backend, "dequantize")
    outer, channels, inner = view
    lo, hi = span(qtype)
    q = rand_int(rng, qtype, view)
    flat = q.reshape(-1)
    flat[: min(2, flat.size)] = [lo, hi][: min(2, flat.size)]
    if channels > 1:
        scale = (rng.random(channels) * 3 + 1e-7).astype(np.float32)
        zp = (rng.integers(-128, 128, channels) if qtype == np.int32 else rand_int(rng, qtype, channels))
        zp = zp.astype(np.int32)
        zp[0] = lo
    else:
        scale = np.array([0.0371], np.float32)  # not a power of two: the product rounds
        zp = np.array([hi if qtype != np.int32 else -7], np.int32)
    y = garbage(cp, view, np.float32)
    backend.dequantize(cp.asarray(q), cp.asarray(scale), cp.asarray(zp), y)
    axis = 1 if channels > 1 else None
    want = R.dequantize(q, scale if axis else scale[0], zp if axis else zp[0], axis=axis).astype(np.float32)
    equal(host(cp, y), want, f"dequantize {view} {np.dtype(qtype).name}")


def test_dequantize_int32_extremes(backend, cp):
    """(q - zp) spans 33 bits: the float64 product rounds, then float32 rounds again, as the reference."""
    need(backend, "dequantize")
    q = np.array([-2**31, -2**31 + 1, -5, 0, 7, 2**31 - 1, 123456789, -987654321], np.int32)
    for s, z in ((0.25, 0), (0.1, 2**31 - 1), (3.7e-9, -2**31), (1e30, 5)):
        scale, zp = np.array([s], np.float32), np.array([z], np.int32)
        y = garbage(cp, (1, 1, q.size), np.float32)
        backend.dequantize(cp.asarray(q.reshape(1, 1, -1)), cp.asarray(scale), cp.asarray(zp), y)
        with np.errstate(over="ignore"):  # 1e30 * 2^31 is inf in float32, on both sides
            want = R.dequantize(q, scale[0], zp[0]).astype(np.float32)
        equal(host(cp, y).reshape(-1), want, f"s={s} zp={z}")


def dynamic_inputs(rng):
    big = (rng.standard_normal(300_001) * 7).astype(np.float32)  # more than 1024 blocks of 256
    big[123_457] = -50.0
    return {
        "normal": (rng.standard_normal(1001) * 3).astype(np.float32),
        "many-blocks": big,
        "positive": np.abs(rng.standard_normal(257)).astype(np.float32) + 1,
        "negative": -np.abs(rng.standard_normal(64)).astype(np.float32) - 1,
        "zeros": np.zeros(300, np.float32),
        "signed-zeros": np.array([0.0, -0.0, -0.0], np.float32),
        "one": np.array([3.5], np.float32),
        "denormal": np.array([0.0, 1e-45, 0.0], np.float32),  # (hi - lo) / 255 underflows to 0
        "tiny": np.array([-1e-38, 2e-38, 0.0], np.float32),
        "huge": np.array([3e38, -3e38, 1.0], np.float32),  # hi - lo overflows to inf
    }


@pytest.mark.parametrize("case", list(dynamic_inputs(np.random.default_rng(0))))
def test_dynamic_quantize_exact(backend, cp, case):
    need(backend, "dynamic_quantize")
    x = dynamic_inputs(np.random.default_rng(5))[case]
    q = garbage(cp, x.shape, np.uint8)
    scale, zp = backend.dynamic_quantize(cp.asarray(x), q)
    with np.errstate(over="ignore"):
        rq, rs, rz = R.dynamic_quantize(x)
    assert np.float32(scale).tobytes() == np.float32(rs).tobytes(), (scale, rs)
    assert int(zp) == int(rz), (zp, rz)
    equal(host(cp, q), rq, f"dynamic_quantize {case}")


# ---------------------------------------------------------------- matmul_integer

# (m, k, n): the 64 x 64 tile edges, K around the 32-byte step and not a multiple of 4.
MM_SHAPES = [(1, 1, 1), (3, 5, 7), (2, 3, 300), (63, 31, 65), (64, 32, 64), (65, 33, 63),
             (1, 4099, 3), (130, 100, 129), (129, 257, 1), (17, 64, 128), (64, 400, 120)]


def _mm_zero_points(rng, ta, tb, n):
    (alo, ahi), (blo, bhi) = span(ta), span(tb)
    per_col = rand_int(rng, tb, n).astype(np.int32)
    per_col[0], per_col[-1] = blo, bhi
    return [(0, np.zeros(n, np.int32)), (ahi, np.full(n, blo, np.int32)), (alo, per_col),
            ((alo + ahi) // 2, np.full(n, bhi, np.int32))]


def _extreme_operands(rng, ta, tb, m, k, n):
    a, b = rand_int(rng, ta, (m, k)), rand_int(rng, tb, (k, n))
    a[0, :] = span(ta)[1]  # a row of maxima against a column of minima: 16-bit sums overflow
    b[:, 0] = span(tb)[0]
    if m > 1:
        a[-1, :] = span(ta)[0]
    if n > 1:
        b[:, -1] = span(tb)[1]
    return a, b


@pytest.mark.parametrize("types", PAIRS, ids=lambda t: "x".join(np.dtype(d).name for d in t))
@pytest.mark.parametrize("shape", MM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_integer_exact(backend, cp, rng, shape, types):
    need(backend, "matmul_integer")
    m, k, n = shape
    ta, tb = types
    a, b = _extreme_operands(rng, ta, tb, m, k, n)
    ad, bd = cp.asarray(a), cp.asarray(b)
    for azp, bzp in _mm_zero_points(rng, ta, tb, n):
        out = garbage(cp, (m, n), np.int32)
        backend.matmul_integer(ad, bd, azp, cp.asarray(bzp), out)
        equal(host(cp, out), R.matmul_integer(a, b, azp, bzp), f"matmul_integer {shape} zp=({azp}, {bzp[:2]})")


def test_matmul_integer_wraps_in_int32(backend, cp):
    """K * 255 * 255 > 2^31: the int32 accumulator wraps, exactly as the int64 sum cast to int32."""
    need(backend, "matmul_integer")
    k = 70_001
    for ta, tb, va, vb, azp, bzp in ((np.uint8, np.uint8, 255, 255, 0, 0), (np.uint8, np.int8, 255, -128, 0, 127),
                                     (np.int8, np.int8, -128, -128, 127, 127), (np.int8, np.uint8, 127, 0, -128, 255)):
        a = np.full((2, k), va, ta)
        a[1, ::3] = span(ta)[0]
        b = np.full((k, 3), vb, tb)
        b[::5, 1] = span(tb)[1]
        bzp_v = np.full(3, bzp, np.int32)
        out = garbage(cp, (2, 3), np.int32)
        backend.matmul_integer(cp.asarray(a), cp.asarray(b), azp, cp.asarray(bzp_v), out)
        want = R.matmul_integer(a, b, azp, bzp_v)
        wide = (a.astype(np.int64) - azp) @ (b.astype(np.int64) - bzp_v)
        assert np.abs(wide).max() > 2**31  # the test really wraps
        equal(host(cp, out), want, f"wrap {np.dtype(ta).name}x{np.dtype(tb).name}")


def test_matmul_integer_unaligned_operands(backend, cp, rng):
    """Operands starting at odd byte addresses (the 4-byte loads must fall back to bytes)."""
    need(backend, "matmul_integer")
    for m, k, n in ((5, 64, 9), (66, 36, 70)):
        a, b = rand_int(rng, np.uint8, (m, k)), rand_int(rng, np.int8, (k, n))
        for offset in (1, 2, 3):
            abuf = cp.zeros(m * k + offset, np.uint8)
            abuf[offset:] = cp.asarray(a.reshape(-1))
            bbuf = cp.zeros(k * n + offset, np.int8)
            bbuf[offset:] = cp.asarray(b.reshape(-1))
            out = garbage(cp, (m, n), np.int32)
            bzp = np.arange(n, dtype=np.int32) - 60
            backend.matmul_integer(abuf[offset:].reshape(m, k), bbuf[offset:].reshape(k, n), 17, cp.asarray(bzp), out)
            equal(host(cp, out), R.matmul_integer(a, b, 17, bzp), f"offset {offset} {m}x{k}x{n}")


# ---------------------------------------------------------------- conv2d_integer

def _out_hw(xs, ws, c):
    oh = (xs[2] + c.pad_top + c.pad_bottom - (c.dilation_h * (ws[2] - 1) + 1)) // c.stride_h + 1
    ow = (xs[3] + c.pad_left + c.pad_right - (c.dilation_w * (ws[3] - 1) + 1)) // c.stride_w + 1
    return oh, ow


def _ref_conv_args(c):
    return ((c.stride_h, c.stride_w), ((c.pad_top, c.pad_bottom), (c.pad_left, c.pad_right)),
            (c.dilation_h, c.dilation_w), c.groups)


# (x shape, w shape, ConvParams(stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dil_h, dil_w, groups))
CONV_CASES = [
    ((2, 3, 9, 9), (4, 3, 3, 3), ConvParams(1, 1, 1, 1, 1, 1, 1, 1, 1)),
    ((1, 6, 8, 7), (6, 2, 3, 3), ConvParams(2, 2, 2, 2, 2, 2, 1, 1, 3)),
    ((2, 4, 10, 10), (8, 4, 5, 5), ConvParams(1, 1, 0, 0, 0, 0, 2, 2, 1)),
    ((1, 1, 28, 28), (6, 1, 5, 5), ConvParams(1, 1, 2, 2, 2, 2, 1, 1, 1)),  # LeNet conv1
    ((3, 4, 5, 6), (4, 1, 3, 3), ConvParams(3, 2, 3, 3, 0, 4, 1, 2, 4)),  # depthwise, large asymmetric pads
    ((2, 130, 3, 3), (70, 130, 1, 1), ConvParams(1, 1, 0, 0, 0, 0, 1, 1, 1)),  # K = 130, 70 rows > tile
    ((1, 16, 12, 12), (65, 16, 3, 3), ConvParams(1, 1, 1, 1, 1, 1, 1, 1, 1)),  # K = 144, 65 rows
    ((2, 4, 9, 8), (6, 2, 3, 2), ConvParams(2, 1, 1, 0, 2, 1, 2, 1, 2)),
    ((1, 64, 6, 6), (8, 64, 7, 7), ConvParams(1, 1, 3, 3, 3, 3, 1, 1, 1)),  # K = 3136, padding-heavy
]


def _conv_id(case):
    xs, ws, c = case
    return f"x{'x'.join(map(str, xs))}-w{'x'.join(map(str, ws))}-g{c.groups}"


@pytest.mark.parametrize("types", PAIRS, ids=lambda t: "x".join(np.dtype(d).name for d in t))
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_integer_exact(backend, cp, rng, case, types):
    need(backend, "conv2d_integer")
    xs, ws, c = case
    tx, tw = types
    x, w = rand_int(rng, tx, xs), rand_int(rng, tw, ws)
    x[0, :, 0, :] = span(tx)[1]
    w[0] = span(tw)[0]
    (xlo, xhi), (wlo, whi) = span(tx), span(tw)
    per_ch = rand_int(rng, tw, ws[0]).astype(np.int32)
    per_ch[0] = whi
    oh, ow = _out_hw(xs, ws, c)
    xd, wd = cp.asarray(x), cp.asarray(w)
    for xzp, wzp in ((0, np.zeros(ws[0], np.int32)), (xhi, per_ch), (xlo, np.full(ws[0], wlo, np.int32))):
        out = garbage(cp, (xs[0], ws[0], oh, ow), np.int32)
        backend.conv2d_integer(xd, wd, xzp, cp.asarray(wzp), out, c)
        want = R.conv2d_integer(x, w, xzp, wzp, *_ref_conv_args(c))
        equal(host(cp, out), want, f"conv2d_integer {_conv_id(case)} xzp={xzp}")


# ---------------------------------------------------------------- qlinear (requantize epilogue)

# The multiplier's type is the reference's (float32: requantization in float32, as ONNX Runtime).
MULT_DTYPE = np.asarray(R.requantize_multiplier(1.0, np.ones(1, np.float32), 1.0)).dtype
QL_TYPES = [(np.uint8, np.int8, np.uint8), (np.int8, np.int8, np.int8), (np.uint8, np.uint8, np.int8),
            (np.int8, np.uint8, np.uint8)]


def _ql_id(t):
    return "-".join(np.dtype(d).name for d in t)


def _requant_cases(rng, n, k, ty):
    """(bias or None, multiplier (n,), y_zp, relu): saturating and not, ties, int32 wraparound."""
    ylo, yhi = span(ty)
    mult = (rng.random(n) * 2 + 0.05) / (40.0 * np.sqrt(k) * 64)
    mult[0] = 0.5  # acc * 0.5 ties at every odd accumulator
    if n > 1:
        mult[1] = 1e-9
    wrap_bias = rng.integers(-2**31, 2**31, n).astype(np.int32)
    wrap_bias[0] = 2**31 - 1
    return [
        (None, mult.astype(MULT_DTYPE), ylo, False),
        (rng.integers(-2**20, 2**20, n).astype(np.int32), mult.astype(MULT_DTYPE), yhi, True),
        (wrap_bias, (mult * 1e-3).astype(MULT_DTYPE), (ylo + yhi) // 2, True),
        (None, np.full(n, 0.25, MULT_DTYPE), ylo + 3, False),  # every other multiple of 2 is a tie
    ]


@pytest.mark.parametrize("types", QL_TYPES, ids=_ql_id)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 300, 5), (65, 33, 63), (64, 64, 64), (3, 4099, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_qlinear_matmul_exact(backend, cp, rng, shape, types):
    need(backend, "qlinear_matmul")
    m, k, n = shape
    ta, tb, ty = types
    a, b = _extreme_operands(rng, ta, tb, m, k, n)
    ad, bd = cp.asarray(a), cp.asarray(b)
    for (azp, bzp), (bias, mult, yzp, relu) in zip(_mm_zero_points(rng, ta, tb, n), _requant_cases(rng, n, k, ty)):
        out = garbage(cp, (m, n), ty)
        backend.qlinear_matmul(ad, bd, azp, cp.asarray(bzp), None if bias is None else cp.asarray(bias),
                               cp.asarray(mult), yzp, relu, out)
        want = R.requantize(R.matmul_integer(a, b, azp, bzp), bias, mult, yzp, ty, relu, 1)
        equal(host(cp, out), want, f"qlinear_matmul {shape} azp={azp} yzp={yzp} relu={relu}")


def test_qlinear_matmul_ties_and_wraparound(backend, cp):
    """acc * 0.5 on .5 rounds half to even; acc + bias wraps in int32 before the scaling; an
    accumulator above 2^24 is rounded (half to even) when converted to float32."""
    need(backend, "qlinear_matmul")
    a = np.array([[1, 3, 5, 7, 9, 11, 13, 15, 255]], np.uint8)
    b = np.eye(9, dtype=np.int8)
    zeros = np.zeros(9, np.int32)
    big = np.array([2**24 + 1, 2**24 + 3, -(2**24 + 1), 3 * 2**24 + 2, 2**25 + 2, 2**25 + 6, 2**24 - 1, 5, -3],
                   np.int64) - a[0]  # acc + bias = these values
    for bias, mult, yzp, ty in ((None, 0.5, 100, np.uint8), (np.full(9, 2**31 - 100, np.int32), 1e-9, 0, np.int8),
                                (big.astype(np.int32), 2.0**-25, 0, np.int8)):
        out = garbage(cp, (1, 9), ty)
        m = np.full(9, mult, MULT_DTYPE)
        backend.qlinear_matmul(cp.asarray(a), cp.asarray(b), 0, cp.asarray(zeros),
                               None if bias is None else cp.asarray(bias), cp.asarray(m), yzp, False, out)
        equal(host(cp, out), R.requantize(R.matmul_integer(a, b, 0, zeros), bias, m, yzp, ty, False, 1),
              f"ties/wrap bias={bias is not None}")


@pytest.mark.parametrize("types", QL_TYPES, ids=_ql_id)
@pytest.mark.parametrize("case", CONV_CASES[:7], ids=_conv_id)
def test_qlinear_conv2d_exact(backend, cp, rng, case, types):
    need(backend, "qlinear_conv2d")
    xs, ws, c = case
    tx, tw, ty = types
    x, w = rand_int(rng, tx, xs), rand_int(rng, tw, ws)
    k = ws[1] * ws[2] * ws[3]
    oh, ow = _out_hw(xs, ws, c)
    per_ch = rand_int(rng, tw, ws[0]).astype(np.int32)
    xd, wd = cp.asarray(x), cp.asarray(w)
    zps = [(span(tx)[1], per_ch), (0, np.zeros(ws[0], np.int32)), (span(tx)[0], np.full(ws[0], span(tw)[1], np.int32)),
           (3, per_ch)]
    for (xzp, wzp), (bias, mult, yzp, relu) in zip(zps, _requant_cases(rng, ws[0], k, ty)):
        out = garbage(cp, (xs[0], ws[0], oh, ow), ty)
        backend.qlinear_conv2d(xd, wd, xzp, cp.asarray(wzp), None if bias is None else cp.asarray(bias),
                               cp.asarray(mult), yzp, relu, out, c)
        acc = R.conv2d_integer(x, w, xzp, wzp, *_ref_conv_args(c))
        equal(host(cp, out), R.requantize(acc, bias, mult, yzp, ty, relu, 1),
              f"qlinear_conv2d {_conv_id(case)} xzp={xzp} yzp={yzp} relu={relu}")


# ---------------------------------------------------------------- public API on CuPy arrays

@pytest.fixture(params=CUDA_BACKENDS)
def forced(request, cp):
    name = request.param
    module = get_named_backend(name, "cuda")
    if module is None:
        pytest.skip(f"cuda backend {name!r} unavailable: {unavailable_reason(name, 'cuda')}")
    lk.use_backend(name)
    yield module
    lk.use_backend(None)


def test_public_quantize_on_cupy_arrays(forced, cp, rng):
    need(forced, "quantize")
    x = special_floats(rng, 4 * 5 * 6, 0.5).reshape(4, 5, 6)
    scale = (rng.random(5) + 0.05).astype(np.float32)
    zp = rand_int(rng, np.uint8, 5)
    q = lk.quantize(cp.asarray(x), scale, zp, dtype=np.uint8, axis=1)
    assert isinstance(q, cp.ndarray)
    equal(q.get(), R.quantize(x, scale, zp, dtype=np.uint8, axis=1), "lk.quantize")
    y = lk.dequantize(q, scale, zp, axis=1)
    equal(y.get(), R.dequantize(q.get(), scale, zp, axis=1).astype(np.float32), "lk.dequantize")
    q, s, z = lk.dynamic_quantize(cp.asarray(x[np.isfinite(x)]))
    rq, rs, rz = R.dynamic_quantize(x[np.isfinite(x)])
    equal(q.get(), rq, "lk.dynamic_quantize")
    assert s == rs and z == rz


def test_public_int8_gemm_and_conv_on_cupy_arrays(forced, cp, rng):
    need(forced, "matmul_integer")
    a, b = rand_int(rng, np.uint8, (9, 70)), rand_int(rng, np.int8, (70, 11))
    bzp = rand_int(rng, np.int8, 11)
    got = lk.matmul_integer(cp.asarray(a), cp.asarray(b), 255, bzp)
    equal(got.get(), R.matmul_integer(a, b, 255, bzp), "lk.matmul_integer")
    x, w = rand_int(rng, np.uint8, (2, 4, 9, 8)), rand_int(rng, np.int8, (6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2)
    got = lk.conv2d_integer(cp.asarray(x), cp.asarray(w), 7, np.full(6, 3, np.int8), **kw)
    equal(got.get(), R.conv2d_integer(x, w, 7, np.full(6, 3, np.int8), **kw), "lk.conv2d_integer")
    if not hasattr(lk, "qlinear_matmul") or not hasattr(forced, "qlinear_matmul"):
        return
    b_scale = (rng.random(11) * 0.02 + 1e-3).astype(np.float32)
    args = (0.05, 128, None, b_scale, bzp, 0.2, np.uint8(10))
    bias = rng.normal(0, 20, 11).astype(np.float32)
    got = lk.qlinear_matmul(cp.asarray(a), args[0], args[1], cp.asarray(b), *args[3:], bias=bias, activation="relu")
    want = R.qlinear_matmul(a, args[0], args[1], b, *args[3:], bias=bias, activation="relu")
    equal(got.get(), want, "lk.qlinear_matmul")
    w_scale = (rng.random(6) * 0.01 + 1e-3).astype(np.float32)
    cargs = (0.1, 9, None, w_scale, None, 0.05, np.int8(-3))
    got = lk.qlinear_conv2d(cp.asarray(x), cargs[0], cargs[1], cp.asarray(w), *cargs[3:], **kw)
    want = R.qlinear_conv2d(x, cargs[0], cargs[1], w, *cargs[3:], **kw)
    equal(got.get(), want, "lk.qlinear_conv2d")
