"""GPU tests of the CUDA GEMM / linear / convolution kernels against the float64 spec.

Every CUDA backend that implements the op (native ``_lepton_cuda``, ``cupy``
RawModule over the same .cuh sources, ``numba`` numba.cuda when it has the op)
is called through the kernel interface of ``lepton_kernels._backend`` on CuPy
arrays, over shapes at the tile edges (the f32 tiles are 128 and 64, the f64
tiles 64 and 32: sizes one below, equal, one above), primes, strides 1-3,
dilations, groups and depthwise, asymmetric and oversized padding, batch 1,
fused bias+ReLU on and off, no bias, and the ReLU-masked backward (including a
NaN forward output, which passes its gradient). float32 results are checked
with a bound that grows with the reduction length, against the same product
of absolute values (so cancellation is allowed for). The reductions must be
bit-identical from run to run. The public API (``lepton_kernels.conv2d`` ...)
is then run on CuPy arrays with each backend forced. Marked ``gpu``; skipped
without CuPy or a device. Run: ``python -m pytest -m gpu tests/test_gpu_conv.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as R
from lepton_kernels._backend import ConvParams, get_named_backend, unavailable_reason

pytestmark = pytest.mark.gpu

CUDA_BACKENDS = ("native", "cupy", "numba")
DTYPES = (np.float32, np.float64)


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


def close(got, expected, magnitude, reduction, dtype, what=""):
    """|got - ref| <= (4*sqrt(K) + 2) * eps * magnitude + tiny, where magnitude is the same
    computation on absolute values; NaN positions must match exactly."""
    eps = np.finfo(dtype).eps
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    fin = np.isfinite(expected)
    bound = (4 * np.sqrt(max(reduction, 1)) + 2) * eps * np.abs(np.asarray(magnitude, np.float64))[fin] + 1e-30
    err = np.abs(got[fin] - expected[fin])
    if err.size and not np.all(err <= bound):
        k = int(np.argmax(err - bound))
        where = tuple(np.argwhere(fin)[k])
        raise AssertionError(f"{what}: error {err[k]:.3e} > bound {bound[k]:.3e} at {where} (reduction {reduction})")


def filled(cp, shape, dtype, value=7.0):
    """An output buffer holding garbage, so a kernel that skips an element is caught."""
    return cp.full(shape, value, dtype=dtype)


def relu_output(rng, shape, dtype):
    """A forward ReLU output with zeros (masked) and a few NaNs (which pass the gradient)."""
    y = np.abs(rng.standard_normal(shape)).astype(dtype)
    flat = y.reshape(-1)
    flat[rng.random(flat.size) < 0.4] = 0.0
    if flat.size >= 5:
        flat[rng.choice(flat.size, size=max(1, flat.size // 50), replace=False)] = np.nan
    return y


# ---------------------------------------------------------------- matmul and linear

# (m, k, n): tile edges of both dtypes, primes, LeNet layers, K below the K step (8).
GEMM_SHAPES = [
    (1, 1, 1), (3, 5, 7), (2, 3, 300), (31, 7, 33), (32, 8, 32), (33, 9, 31),
    (63, 17, 64), (64, 16, 65), (65, 33, 63), (127, 129, 128), (128, 64, 129), (129, 127, 127),
    (64, 400, 120), (64, 120, 84), (257, 1, 131), (1, 1000, 3), (500, 37, 2), (300, 301, 299),
]


def _gemm_id(s):
    return "x".join(map(str, s))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=_gemm_id)
def test_matmul(backend, cp, rng, dtype, shape):
    need(backend, "matmul")
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = filled(cp, (m, n), dtype)
    backend.matmul(cp.asarray(a), cp.asarray(b), out)
    close(out.get(), R.matmul(a, b), R.matmul(np.abs(a), np.abs(b)), k, dtype, "matmul")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=_gemm_id)
@pytest.mark.parametrize("relu,with_bias", [(False, True), (True, True), (True, False), (False, False)])
def test_linear_forward(backend, cp, rng, dtype, shape, relu, with_bias):
    need(backend, "linear")
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if with_bias else None
    out = filled(cp, (m, n), dtype)
    backend.linear(cp.asarray(x), cp.asarray(w), None if b is None else cp.asarray(b), out, relu)
    act = "relu" if relu else None
    mag = R.linear(np.abs(x), np.abs(w), None if b is None else np.abs(b))
    close(out.get(), R.linear(x, w, b, activation=act), mag, k, dtype, "linear")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=_gemm_id)
@pytest.mark.parametrize("masked", [False, True])
def test_linear_backward(backend, cp, rng, dtype, shape, masked):
    need(backend, "linear_backward")
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    g = rng.standard_normal((m, n)).astype(dtype)
    y = relu_output(rng, (m, n), dtype) if masked else None
    act = "relu" if masked else None
    ex, ew, eb = R.linear_backward(g, x, w, activation=act, output=y)
    gm = np.abs(R.relu_backward(g, y) if masked else g)
    gd, xd, wd = cp.asarray(g), cp.asarray(x), cp.asarray(w)
    yd = None if y is None else cp.asarray(y)
    gx, gw, gb = filled(cp, (m, k), dtype), filled(cp, (n, k), dtype), filled(cp, (n,), dtype)
    backend.linear_backward(gd, xd, wd, yd, gx, gw, gb)
    close(gx.get(), ex, gm @ np.abs(w), n, dtype, "grad_x")
    close(gw.get(), ew, gm.T @ np.abs(x), m, dtype, "grad_w")
    close(gb.get(), eb, gm.sum(axis=0), m, dtype, "grad_b")
    # Each gradient alone (the others None) gives the same bits.
    for which in range(3):
        outs = [None, None, None]
        outs[which] = filled(cp, [(m, k), (n, k), (n,)][which], dtype, 3.0)
        backend.linear_backward(gd, xd, wd, yd, *outs)
        assert cp.array_equal(outs[which], [gx, gw, gb][which]), f"gradient {which} alone differs"
    sync(cp)


# ---------------------------------------------------------------- convolution

# (x NCHW, c_out, (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw), groups)
CONV_CASES = [
    ((2, 3, 7, 9), 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 1, 28, 28), 6, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),       # LeNet conv1, batch 1
    ((4, 6, 14, 14), 16, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # LeNet conv2
    ((2, 3, 32, 32), 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # CIFAR conv1
    ((2, 32, 16, 16), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 64, 8, 8), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 64, 14, 14), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 256, 7, 7), 64, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # 1x1 as a GEMM
    ((2, 32, 15, 15), 64, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),     # stride 2
    ((1, 3, 11, 13), 5, (3, 3), (3, 3), (2, 2, 2, 2), (1, 1), 1),       # stride 3, pad > kernel/2
    ((2, 4, 13, 17), 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),       # dilation 2
    ((2, 2, 9, 7), 4, (2, 3), (1, 2), (0, 2, 3, 0), (3, 2), 2),         # dilation, groups, asymmetric
    ((2, 8, 9, 9), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),         # depthwise
    ((1, 8, 10, 9), 16, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 8),       # depthwise, multiplier 2
    ((1, 6, 9, 8), 9, (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 3),         # groups, everything asymmetric
    ((1, 2, 5, 5), 3, (3, 3), (3, 3), (4, 4, 4, 4), (1, 1), 1),         # padding larger than the kernel
    ((1, 5, 3, 3), 7, (5, 5), (1, 1), (3, 3, 3, 3), (1, 1), 1),         # kernel larger than the input
    ((3, 2, 4, 4), 3, (4, 4), (1, 1), (0, 0, 0, 0), (1, 1), 1),         # 1x1 output (s = 1 bias path)
    ((1, 1, 1, 1), 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((1, 17, 7, 31), 19, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # primes
    ((1, 130, 3, 5), 65, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # channel tile edges
    ((1, 3, 17, 16), 129, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),     # c_out = 128 + 1
    ((1, 4, 16, 16), 127, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),     # n*oh*ow = 256, c_out 127
    ((3, 16, 12, 11), 33, (3, 3), (2, 1), (1, 2, 0, 1), (2, 2), 1),
    ((2, 12, 10, 10), 24, (3, 3), (3, 2), (0, 3, 2, 0), (1, 3), 4),
    ((1, 2, 40, 3), 3, (7, 1), (2, 1), (3, 3, 0, 0), (1, 1), 1),        # tall and thin
]


def _conv_id(case):
    shape, co, k, s, p, d, g = case
    return (f"{'x'.join(map(str, shape))}-o{co}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, p))}"
            f"-d{d[0]}{d[1]}-g{g}")


def _conv_setup(case, dtype, rng):
    shape, co, (kh, kw), s, (t, b, l, r), d, g = case
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((co, shape[1] // g, kh, kw)).astype(dtype)
    bias = rng.standard_normal(co).astype(dtype)
    params = ConvParams(s[0], s[1], t, b, l, r, d[0], d[1], g)
    geo = dict(stride=s, padding=((t, b), (l, r)), dilation=d, groups=g)
    return x, w, bias, params, geo


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
@pytest.mark.parametrize("relu,with_bias", [(False, True), (True, True), (True, False), (False, False)])
def test_conv2d_forward(backend, cp, rng, dtype, case, relu, with_bias):
    need(backend, "conv2d")
    x, w, bias, params, geo = _conv_setup(case, dtype, rng)
    b = bias if with_bias else None
    act = "relu" if relu else None
    expected = R.conv2d(x, w, b, activation=act, **geo)
    mag = R.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), **geo)
    out = filled(cp, expected.shape, dtype)
    backend.conv2d(cp.asarray(x), cp.asarray(w), None if b is None else cp.asarray(b), out, params, relu)
    close(out.get(), expected, mag, w.shape[1] * w.shape[2] * w.shape[3], dtype, "conv2d")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
@pytest.mark.parametrize("masked", [False, True])
def test_conv2d_backward(backend, cp, rng, dtype, case, masked):
    need(backend, "conv2d_backward")
    x, w, _, params, geo = _conv_setup(case, dtype, rng)
    out_shape = R.conv2d(x, w, **geo).shape
    g = rng.standard_normal(out_shape).astype(dtype)
    y = relu_output(rng, out_shape, dtype) if masked else None
    act = "relu" if masked else None
    ex, ew, eb = R.conv2d_backward(g, x, w, activation=act, output=y, **geo)
    gm = np.abs(R.relu_backward(g, y) if masked else g)
    mx, mw, _ = R.conv2d_backward(gm, np.abs(x), np.abs(w), **geo)
    gd, xd, wd = cp.asarray(g), cp.asarray(x), cp.asarray(w)
    yd = None if y is None else cp.asarray(y)
    gx, gw, gb = filled(cp, x.shape, dtype), filled(cp, w.shape, dtype), filled(cp, (w.shape[0],), dtype)
    backend.conv2d_backward(gd, xd, wd, yd, gx, gw, gb, params)
    n, o, oh, ow = out_shape
    khw = w.shape[2] * w.shape[3]
    close(gx.get(), ex, mx, (o // params.groups) * khw, dtype, "grad_x")
    close(gw.get(), ew, mw, n * oh * ow, dtype, "grad_w")
    close(gb.get(), eb, gm.sum(axis=(0, 2, 3)), n * oh * ow, dtype, "grad_b")
    for which in range(3):  # each gradient alone: same bits
        outs = [None, None, None]
        outs[which] = filled(cp, [x.shape, w.shape, (w.shape[0],)][which], dtype, 3.0)
        backend.conv2d_backward(gd, xd, wd, yd, *outs, params)
        assert cp.array_equal(outs[which], [gx, gw, gb][which]), f"gradient {which} alone differs"
    sync(cp)


# Random geometries (seeded): every combination of small sizes the fixed list may miss.
def _random_cases(count, seed=5):
    r = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        g = int(r.choice([1, 1, 2, 3]))
        cg, og = int(r.integers(1, 6)), int(r.integers(1, 6))
        kh, kw = int(r.integers(1, 6)), int(r.integers(1, 6))
        s = (int(r.integers(1, 4)), int(r.integers(1, 4)))
        d = (int(r.integers(1, 4)), int(r.integers(1, 4)))
        h, w = int(r.integers(1, 20)), int(r.integers(1, 20))
        p = tuple(int(v) for v in r.integers(0, 5, size=4))
        if h + p[0] + p[1] < d[0] * (kh - 1) + 1 or w + p[2] + p[3] < d[1] * (kw - 1) + 1:
            continue
        cases.append(((int(r.integers(1, 5)), cg * g, h, w), og * g, (kh, kw), s, p, d, g))
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", _random_cases(40), ids=_conv_id)
def test_conv2d_random_geometry(backend, cp, rng, dtype, case):
    need(backend, "conv2d")
    need(backend, "conv2d_backward")
    x, w, bias, params, geo = _conv_setup(case, dtype, rng)
    expected = R.conv2d(x, w, bias, activation="relu", **geo)
    out = filled(cp, expected.shape, dtype)
    xd, wd = cp.asarray(x), cp.asarray(w)
    backend.conv2d(xd, wd, cp.asarray(bias), out, params, True)
    mag = R.conv2d(np.abs(x), np.abs(w), np.abs(bias), **geo)
    khw = w.shape[2] * w.shape[3]
    close(out.get(), expected, mag, w.shape[1] * khw, dtype, "conv2d")
    g = rng.standard_normal(expected.shape).astype(dtype)
    y = out.get()
    ex, ew, eb = R.conv2d_backward(g, x, w, activation="relu", output=y, **geo)
    gm = np.abs(R.relu_backward(g, y))
    mx, mw, _ = R.conv2d_backward(gm, np.abs(x), np.abs(w), **geo)
    gx, gw, gb = filled(cp, x.shape, dtype), filled(cp, w.shape, dtype), filled(cp, (w.shape[0],), dtype)
    backend.conv2d_backward(cp.asarray(g), xd, wd, out, gx, gw, gb, params)
    n, o, oh, ow = expected.shape
    close(gx.get(), ex, mx, (o // params.groups) * khw, dtype, "grad_x")
    close(gw.get(), ew, mw, n * oh * ow, dtype, "grad_w")
    close(gb.get(), eb, gm.sum(axis=(0, 2, 3)), n * oh * ow, dtype, "grad_b")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_nan_and_inf_propagate(backend, cp, rng, dtype):
    need(backend, "conv2d")
    case = ((2, 3, 9, 8), 4, (3, 3), (2, 1), (1, 2, 0, 1), (1, 2), 1)
    x, w, bias, params, geo = _conv_setup(case, dtype, rng)
    x[0, 1, 4, 3] = np.nan
    x[1, 2, 0, 0] = np.inf
    for relu in (False, True):
        act = "relu" if relu else None
        expected = R.conv2d(x, w, bias, activation=act, **geo)
        out = filled(cp, expected.shape, dtype)
        backend.conv2d(cp.asarray(x), cp.asarray(w), cp.asarray(bias), out, params, relu)
        got = out.get()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg="NaN positions")
        inf = np.isinf(expected)
        np.testing.assert_array_equal(got[inf], expected[inf])
    sync(cp)


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_are_bit_identical_run_to_run(backend, cp, rng, dtype):
    need(backend, "conv2d_backward")
    need(backend, "linear_backward")
    case = ((16, 8, 20, 20), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2)
    x, w, _, params, geo = _conv_setup(case, dtype, rng)
    out_shape = R.conv2d(x, w, **geo).shape
    gd, xd, wd = cp.asarray(rng.standard_normal(out_shape).astype(dtype)), cp.asarray(x), cp.asarray(w)
    yd = cp.asarray(relu_output(rng, out_shape, dtype))
    runs = []
    for _ in range(3):
        outs = (cp.empty(x.shape, dtype), cp.empty(w.shape, dtype), cp.empty((w.shape[0],), dtype))
        backend.conv2d_backward(gd, xd, wd, yd, *outs, params)
        runs.append([o.get() for o in outs])
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            np.testing.assert_array_equal(a, b, err_msg="conv2d_backward differs between runs")
    m, k, n = 3000, 70, 50
    g = cp.asarray(rng.standard_normal((m, n)).astype(dtype))
    xl, wl = cp.asarray(rng.standard_normal((m, k)).astype(dtype)), cp.asarray(rng.standard_normal((n, k)).astype(dtype))
    runs = []
    for _ in range(3):
        outs = (cp.empty((m, k), dtype), cp.empty((n, k), dtype), cp.empty((n,), dtype))
        backend.linear_backward(g, xl, wl, None, *outs)
        runs.append([o.get() for o in outs])
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            np.testing.assert_array_equal(a, b, err_msg="linear_backward differs between runs")
    sync(cp)


def test_native_and_cupy_agree_bit_for_bit(cp, rng):
    """Both run the same .cuh source with the same launch shape: identical results."""
    native, cupy_b = get_named_backend("native", "cuda"), get_named_backend("cupy", "cuda")
    if native is None or cupy_b is None:
        pytest.skip("needs both the native and the cupy CUDA backends")
    case = ((3, 6, 13, 11), 9, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 3)
    x, w, bias, params, geo = _conv_setup(case, np.float32, rng)
    out_shape = R.conv2d(x, w, **geo).shape
    xd, wd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(bias)
    g = cp.asarray(rng.standard_normal(out_shape).astype(np.float32))
    results = []
    for be in (native, cupy_b):
        y = cp.empty(out_shape, np.float32)
        be.conv2d(xd, wd, bd, y, params, True)
        grads = (cp.empty(x.shape, np.float32), cp.empty(w.shape, np.float32), cp.empty(9, np.float32))
        be.conv2d_backward(g, xd, wd, y, *grads, params)
        results.append([y.get()] + [t.get() for t in grads])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    sync(cp)


# ---------------------------------------------------------------- public API on CuPy arrays

@pytest.fixture(params=CUDA_BACKENDS)
def forced(request, cp):
    name = request.param
    module = get_named_backend(name, "cuda")
    if module is None:
        pytest.skip(f"cuda backend {name!r} unavailable: {unavailable_reason(name, 'cuda')}")
    if not all(hasattr(module, op) for op in ("conv2d", "conv2d_backward", "linear", "linear_backward", "matmul")):
        pytest.skip(f"cuda backend {name!r} lacks a conv/linear op")
    lk.use_backend(name)
    yield name
    lk.use_backend(None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_api_on_cupy_arrays(forced, cp, rng, dtype):
    x = rng.standard_normal((2, 6, 11, 10)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    xd, wd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(b)
    y = lk.conv2d(xd, wd, bd, activation="relu", **kw)
    assert isinstance(y, cp.ndarray) and y.dtype == dtype
    ey = R.conv2d(x, w, b, activation="relu", **kw)
    close(y.get(), ey, R.conv2d(np.abs(x), np.abs(w), np.abs(b), **kw), 27, dtype, f"conv2d [{forced}]")
    g = rng.standard_normal(ey.shape).astype(dtype)
    gx, gw, gb = lk.conv2d_backward(cp.asarray(g), xd, wd, activation="relu", output=y, **kw)
    ex, ew, eb = R.conv2d_backward(g, x, w, activation="relu", output=y.get(), **kw)
    gm = np.abs(R.relu_backward(g, y.get()))
    mx, mw, _ = R.conv2d_backward(gm, np.abs(x), np.abs(w), **kw)
    close(gx.get(), ex, mx, 36, dtype, "grad_x")
    close(gw.get(), ew, mw, g[:, 0].size, dtype, "grad_w")
    close(gb.get(), eb, gm.sum(axis=(0, 2, 3)), g[:, 0].size, dtype, "grad_b")
    none_x, gw2, none_b = lk.conv2d_backward(cp.asarray(g), xd, wd, activation="relu", output=y,
                                             needs_input_grad=False, needs_bias_grad=False, **kw)
    assert none_x is None and none_b is None and cp.array_equal(gw2, gw)

    xl = rng.standard_normal((5, 7, 40)).astype(dtype)  # leading batch dims
    wl = rng.standard_normal((30, 40)).astype(dtype)
    bl = rng.standard_normal(30).astype(dtype)
    yl = lk.linear(cp.asarray(xl), cp.asarray(wl), cp.asarray(bl), activation="relu")
    assert isinstance(yl, cp.ndarray) and yl.shape == (5, 7, 30)
    close(yl.get(), R.linear(xl, wl, bl, activation="relu"), R.linear(np.abs(xl), np.abs(wl), np.abs(bl)), 40,
          dtype, "linear")
    gl = rng.standard_normal((5, 7, 30)).astype(dtype)
    lx, lw, lb = lk.linear_backward(cp.asarray(gl), cp.asarray(xl), cp.asarray(wl), activation="relu", output=yl)
    ex, ew, eb = R.linear_backward(gl, xl, wl, activation="relu", output=yl.get())
    gm = np.abs(R.relu_backward(gl, yl.get())).reshape(-1, 30)
    close(lx.get(), ex, (gm @ np.abs(wl)).reshape(5, 7, 40), 30, dtype, "linear grad_x")
    close(lw.get(), ew, gm.T @ np.abs(xl.reshape(-1, 40)), 35, dtype, "linear grad_w")
    close(lb.get(), eb, gm.sum(axis=0), 35, dtype, "linear grad_b")

    a = rng.standard_normal((33, 65)).astype(dtype)
    bm = rng.standard_normal((65, 17)).astype(dtype)
    c = lk.matmul(cp.asarray(a), cp.asarray(bm))
    assert isinstance(c, cp.ndarray)
    close(c.get(), R.matmul(a, bm), R.matmul(np.abs(a), np.abs(bm)), 65, dtype, "matmul")
    out = cp.full((33, 17), 5, dtype=dtype)
    assert lk.matmul(cp.asarray(a), cp.asarray(bm), out=out) is out
    assert cp.array_equal(out, c)
    sync(cp)


def test_public_api_batch_zero_on_cupy(forced, cp):
    x = cp.zeros((0, 3, 8, 8), dtype=cp.float32)
    w = cp.ones((4, 3, 3, 3), dtype=cp.float32)
    y = lk.conv2d(x, w, padding=1)
    assert y.shape == (0, 4, 8, 8)
    gx, gw, gb = lk.conv2d_backward(cp.zeros((0, 4, 8, 8), dtype=cp.float32), x, w, padding=1)
    assert gx.shape == x.shape and float(cp.abs(gw).sum()) == 0 and float(cp.abs(gb).sum()) == 0
    sync(cp)
