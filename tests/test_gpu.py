"""GPU tests of the CUDA backends against the float64 spec ``lepton_kernels.reference``.

Every CUDA backend (native ``_lepton_cuda``, ``cupy`` RawModule over the same
.cuh sources, ``numba`` numba.cuda) is called through the kernel interface of
``lepton_kernels._backend`` on CuPy arrays, over shapes around the block size
(255/256/257), primes, misaligned pointers (vector path vs scalar path),
asymmetric and oversized padding, windows entirely in padding, ceil mode and
dilation; then the public ``lepton_kernels`` API is run on CuPy arrays with each
backend forced. All tests are marked ``gpu`` and skip without CuPy or a device.
Run: ``python -m pytest -m gpu tests/test_gpu.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels import reference as R
from lepton_kernels._backend import PoolParams, get_named_backend, unavailable_reason

pytestmark = pytest.mark.gpu

CUDA_BACKENDS = ("native", "cupy", "numba")
DUMMY_POOL = PoolParams(1, 1, 1, 1, 0, 0, 0, 0)  # what lepton_kernels.ops passes to max_pool2d_backward
DTYPES = (np.float32, np.float64)
TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


def close(got, expected, dtype, what="", rtol=None, atol=None):
    """max|got - ref| <= atol + rtol*|ref|; NaNs and infinities must match exactly."""
    base_rtol, base_atol = TOL[np.dtype(dtype).type]
    rtol = base_rtol if rtol is None else rtol
    atol = base_atol if atol is None else atol
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{what}: NaN positions")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf], err_msg=f"{what}: infinities")
    fin = np.isfinite(expected)
    err = np.abs(got[fin] - expected[fin])
    bound = atol + rtol * np.abs(expected[fin])
    if err.size and not np.all(err <= bound):
        k = int(np.argmax(err - bound))
        where = np.argwhere(fin)[k]
        raise AssertionError(f"{what}: error {err[k]:.3e} > bound {bound[k]:.3e} at {tuple(where)} "
                             f"(got {got[tuple(where)]!r}, expected {expected[tuple(where)]!r})")


def device(cp, a, offset=0):
    """A C-contiguous device copy of a; offset > 0 shifts it off 16-byte alignment."""
    a = np.ascontiguousarray(a)
    if offset == 0:
        return cp.asarray(a)
    buf = cp.empty(a.size + offset, dtype=a.dtype)
    view = buf[offset:].reshape(a.shape)
    view[...] = cp.asarray(a)
    return view


def sequential_scatter(g, idx, shape):
    """grad_in of the C++ kernel: zero, then += through the indices in row-major output
    order, in g's dtype (np.add.at applies its terms one at a time, in order)."""
    n, c, h, w = shape
    gi = np.zeros((n * c, h * w), dtype=g.dtype)
    g2, i2 = g.reshape(n * c, -1), idx.reshape(n * c, -1)
    for plane in range(n * c):
        keep = (i2[plane] >= 0) & (i2[plane] < h * w)
        np.add.at(gi[plane], i2[plane][keep], g2[plane][keep])
    return gi.reshape(shape)


def sync(cp):
    cp.cuda.get_current_stream().synchronize()
    cp.cuda.runtime.deviceSynchronize()  # surfaces asynchronous kernel faults here


def special(rng, shape, dtype):
    """Random values with zeros, -0.0, NaN and +-inf sprinkled in."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    if flat.size >= 8:
        idx = rng.choice(flat.size, size=max(4, flat.size // 50), replace=False)
        vals = np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype=dtype)
        flat[idx] = vals[np.arange(idx.size) % vals.size]
    return x


# ---------------------------------------------------------------- element-wise

SIZES = [1, 3, 4, 5, 255, 256, 257, 1000, 4099, 65537, (1 << 20) + 3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("offset", [0, 1])
def test_relu_and_backward(backend, cp, rng, dtype, size, offset):
    x = special(rng, size, dtype)
    g = rng.standard_normal(size).astype(dtype)
    xd, gd = device(cp, x, offset), device(cp, g, offset)
    out = device(cp, np.full(size, 7, dtype), offset)
    backend.relu(xd, out)
    close(out.get(), R.relu(x), dtype, "relu")
    gi = device(cp, np.full(size, 7, dtype), offset)
    backend.relu_backward(gd, xd, gi)
    close(gi.get(), R.relu_backward(g, x), dtype, "relu_backward")
    backend.relu(xd, xd)  # in place
    close(xd.get(), R.relu(x), dtype, "relu in place")
    sync(cp)


BIAS_SHAPES = [(1, 1, 1), (2, 3, 1), (64, 10, 1), (3, 5, 7), (2, 4, 8), (2, 16, 255), (2, 3, 256),
               (3, 7, 257), (1, 3, 1000), (8, 64, 49), (5, 1, 4096)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BIAS_SHAPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_bias_relu_and_backward(backend, cp, rng, dtype, shape, offset):
    n, c, s = shape
    x = special(rng, shape, dtype)
    b = rng.standard_normal(c).astype(dtype)
    xd = device(cp, x, offset)
    out = device(cp, np.full(shape, 7, dtype), offset)
    backend.bias_relu(xd, cp.asarray(b), out)
    y = out.get()
    close(y, R.bias_relu(x, b), dtype, "bias_relu")

    g = rng.standard_normal(shape).astype(dtype)
    gx = device(cp, np.full(shape, 7, dtype), offset)
    gb = cp.full(c, 7, dtype=dtype)
    backend.bias_relu_backward(device(cp, g, offset), out, gx, gb)
    ex, eb = R.bias_relu_backward(g, y)
    close(gx.get(), ex, dtype, "grad_x")
    scale = np.abs(ex).sum(axis=(0, 2)) + 1.0  # sums cancel: bound by the sum of magnitudes
    close(gb.get() / scale, eb / scale, dtype, "grad_bias", rtol=1e-5, atol=1e-6)

    gx2 = device(cp, np.full(shape, 7, dtype), offset)
    backend.bias_relu_backward(device(cp, g, offset), out, gx2, None)  # no grad_bias
    close(gx2.get(), ex, dtype, "grad_x without grad_bias")
    backend.bias_relu(xd, cp.asarray(b), xd)  # in place
    close(xd.get(), R.bias_relu(x, b), dtype, "bias_relu in place")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(256, 3, 4096), (100000, 7, 1)])
def test_bias_grad_is_deterministic(backend, cp, rng, dtype, shape):
    g = cp.asarray(rng.standard_normal(shape).astype(dtype))
    y = cp.asarray(rng.standard_normal(shape).astype(dtype))
    runs = []
    for _ in range(3):
        gx = cp.empty_like(g)
        gb = cp.empty(shape[1], dtype=dtype)
        backend.bias_relu_backward(g, y, gx, gb)
        runs.append(gb.get())
    assert all(np.array_equal(runs[0], r) for r in runs[1:]), "grad_bias differs between runs"
    ex, eb = R.bias_relu_backward(g.get(), y.get())
    scale = np.abs(ex).sum(axis=(0, 2)) + 1.0
    close(runs[0] / scale, eb / scale, dtype, "grad_bias", rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- pooling

# (input NCHW, kernel, stride, pads (top, bottom, left, right), dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((1, 2, 10, 11), (3, 2), (2, 3), (1, 0, 0, 2), (1, 1), True),     # asymmetric
    ((2, 2, 6, 5), (2, 2), (1, 1), (3, 3, 2, 4), (1, 1), False),      # pad > kernel: windows in padding
    ((2, 2, 5, 5), (3, 3), (3, 3), (2, 2, 2, 2), (1, 1), True),
    ((1, 3, 9, 13), (3, 2), (1, 2), (2, 1, 1, 0), (2, 3), False),     # dilation
    ((1, 3, 9, 13), (2, 3), (3, 1), (0, 2, 3, 1), (3, 2), True),
    ((2, 1, 4, 4), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), False),      # kernel larger than input
    ((1, 2, 5, 7), (1, 1), (2, 3), (0, 0, 0, 0), (1, 1), True),       # stride > kernel
    ((3, 5, 17, 19), (4, 4), (3, 3), (2, 1, 0, 3), (1, 1), True),
    ((8, 64, 56, 56), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),   # ResNet stem
    ((4, 16, 32, 32), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),   # LeNet/CIFAR
    ((1, 1, 300, 257), (7, 7), (5, 3), (3, 2, 1, 6), (1, 1), True),
]


def _case_id(case):
    shape, k, s, pads, d, ceil = case
    return f"{'x'.join(map(str, shape))}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, pads))}-d{d[0]}{d[1]}" + (
        "-ceil" if ceil else "")


def _geometry(case, **avg):
    shape, (kh, kw), (sh, sw), (t, b, l, r), (dh, dw), ceil = case
    oh = R.pool_output_size(shape[2], kh, sh, t, b, dh, ceil)
    ow = R.pool_output_size(shape[3], kw, sw, l, r, dw, ceil)
    p = PoolParams(kh, kw, sh, sw, t, b, l, r, dh, dw, **avg)
    return p, (shape[0], shape[1], oh, ow), dict(kernel_size=(kh, kw), stride=(sh, sw),
                                                 padding=((t, b), (l, r)), ceil_mode=ceil)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=_case_id)
def test_max_pool2d(backend, cp, rng, dtype, case):
    p, out_shape, kw = _geometry(case)
    # Small integers make ties, so the first-tap rule is exercised.
    x = rng.integers(-4, 5, size=case[0]).astype(dtype)
    x.reshape(-1)[rng.choice(x.size, size=max(1, x.size // 97), replace=False)] = np.nan
    if x.shape[1] > 1:
        x[0, 1] = -np.inf  # an all -inf plane: the first tap in the window must win
    ey, ei = R.max_pool2d(x, dilation=(p.dilation_h, p.dilation_w), return_indices=True, **kw)
    xd = cp.asarray(x)
    out = cp.full(out_shape, 7, dtype=dtype)
    ind = cp.full(out_shape, 12345, dtype=cp.int64)
    backend.max_pool2d(xd, out, ind, p)
    close(out.get(), ey, dtype, "max_pool2d")
    np.testing.assert_array_equal(ind.get(), ei, err_msg="max_pool2d indices")
    out2 = cp.full(out_shape, 7, dtype=dtype)
    backend.max_pool2d(xd, out2, None, p)
    close(out2.get(), ey, dtype, "max_pool2d without indices")

    g = rng.standard_normal(out_shape).astype(dtype)
    gi = cp.full(case[0], 7, dtype=dtype)
    # The backward follows the indices only: the ops layer hands every backend dummy geometry.
    backend.max_pool2d_backward(cp.asarray(g), cp.asarray(ei), gi, DUMMY_POOL)
    close(gi.get(), R.max_pool2d_backward(g, ei, case[0]), dtype, "max_pool2d_backward")
    np.testing.assert_array_equal(gi.get(), sequential_scatter(g, ei, case[0]),
                                  err_msg="max_pool2d_backward differs from the sequential scatter")
    gi2 = cp.full(case[0], 9, dtype=dtype)
    backend.max_pool2d_backward(cp.asarray(g), cp.asarray(ei), gi2, DUMMY_POOL)
    assert cp.array_equal(gi, gi2), "max_pool2d_backward is not deterministic"
    sync(cp)


AVG_OPTIONS = [dict(count_include_pad=True, divisor_override=0),
               dict(count_include_pad=False, divisor_override=0),
               dict(count_include_pad=True, divisor_override=5),
               dict(count_include_pad=False, divisor_override=3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[4] == (1, 1)], ids=_case_id)
@pytest.mark.parametrize("opts", AVG_OPTIONS, ids=lambda o: f"inc{int(o['count_include_pad'])}-div{o['divisor_override']}")
def test_avg_pool2d(backend, cp, rng, dtype, case, opts):
    p, out_shape, kw = _geometry(case, **opts)
    ref_opts = dict(count_include_pad=opts["count_include_pad"], divisor_override=opts["divisor_override"] or None)
    x = rng.standard_normal(case[0]).astype(dtype)
    out = cp.full(out_shape, 7, dtype=dtype)
    backend.avg_pool2d(cp.asarray(x), out, p)
    close(out.get(), R.avg_pool2d(x, **kw, **ref_opts), dtype, "avg_pool2d")

    g = rng.standard_normal(out_shape).astype(dtype)
    gi = cp.full(case[0], 7, dtype=dtype)
    backend.avg_pool2d_backward(cp.asarray(g), gi, p)
    close(gi.get(), R.avg_pool2d_backward(g, case[0], **kw, **ref_opts), dtype, "avg_pool2d_backward")
    sync(cp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_backward_bad_indices_stay_in_bounds(backend, cp, rng, dtype):
    """Corrupt indices (outside [-1, h*w)) must never write outside grad_in."""
    case = ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False)
    p, out_shape, _ = _geometry(case)
    n, c, h, w = case[0]
    ind = rng.integers(-(1 << 40), 1 << 40, size=out_shape).astype(np.int64)
    ind.reshape(-1)[::3] = rng.integers(-3, h * w + 3, size=ind.reshape(-1)[::3].size)
    guard = 4096
    buf = cp.full(guard + n * c * h * w + guard, 1234.5, dtype=dtype)
    gi = buf[guard:guard + n * c * h * w].reshape(case[0])
    g = cp.asarray(rng.standard_normal(out_shape).astype(dtype))
    try:
        backend.max_pool2d_backward(g, cp.asarray(ind), gi, DUMMY_POOL)
    except (ValueError, RuntimeError):
        pass  # rejecting corrupt indices is allowed; writing out of bounds is not
    sync(cp)
    assert bool(cp.all(buf[:guard] == 1234.5)) and bool(cp.all(buf[-guard:] == 1234.5)), \
        "max_pool2d_backward wrote outside grad_in"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out_hw", [((1, 1, 1, 1), (1, 1)), ((2, 3, 4, 5), (6, 7)),
                                          ((3, 5, 7, 9), (11, 13)), ((1, 3, 2, 40), (33, 65)),
                                          ((40, 70, 3, 3), (2, 2))])
def test_max_pool2d_backward_follows_indices_only(backend, cp, rng, dtype, shape, out_hw):
    """Arbitrary indices (repeats inside and across warp-sized chunks, -1, no window
    structure) with dummy geometry: bit for bit the sequential scatter, every run."""
    n, c, h, w = shape
    gshape = (n, c) + out_hw
    ind = rng.integers(-1, h * w, size=gshape).astype(np.int64)
    flat = ind.reshape(-1)
    flat[::3] = rng.integers(0, min(h * w, 4), size=flat[::3].size)  # many repeats
    g = rng.standard_normal(gshape).astype(dtype)
    g.reshape(-1)[::7] = -0.0
    gd, indd = cp.asarray(g), cp.asarray(ind)
    gi = cp.full(shape, 7, dtype=dtype)
    backend.max_pool2d_backward(gd, indd, gi, DUMMY_POOL)
    got = gi.get()
    close(got, R.max_pool2d_backward(g, ind, shape), dtype, "max_pool2d_backward")
    np.testing.assert_array_equal(got, sequential_scatter(g, ind, shape))
    for _ in range(3):
        gi2 = cp.full(shape, 9, dtype=dtype)
        backend.max_pool2d_backward(gd, indd, gi2, DUMMY_POOL)
        assert cp.array_equal(gi, gi2), "max_pool2d_backward is not deterministic"
    sync(cp)


# ---------------------------------------------------------------- both kernel variants (int / long long)

def test_cupy_runs_64_bit_and_32_bit_index_kernels_alike(cp, rng):
    """The _i32 and 64-bit instantiations of every pooling kernel agree on small shapes
    (the launchers only pick the 64-bit ones for >2^31 elements)."""
    from lepton_kernels import cupy_backend as cb

    if cb.unavailable_reason() is not None:
        pytest.skip(cb.unavailable_reason())
    case = ((2, 3, 11, 10), (3, 2), (2, 1), (1, 2, 0, 1), (2, 1), True)
    p, out_shape, kw = _geometry(case)
    n, c, h, w = case[0]
    x = rng.standard_normal(case[0])
    g = rng.standard_normal(out_shape)
    ey, ei = R.max_pool2d(x, dilation=(2, 1), return_indices=True, **kw)
    xd, gd, eid = cp.asarray(x), cp.asarray(g), cp.asarray(ei)  # kept alive across the async launches
    geom = cb._max_geom(n, c, h, w, out_shape[2], out_shape[3], p)
    ptr = lambda a: cb._iface(a)[0]  # noqa: E731
    for sfx in ("f64", "f64_i32"):
        out = cp.zeros(out_shape)
        ind = cp.zeros(out_shape, dtype=cp.int64)
        cb._launch("pool.cuh", f"lk_max_pool2d_{sfx}", 5, 64, (ptr(xd), ptr(out), ptr(ind)) + geom)
        close(out.get(), ey, np.float64, f"lk_max_pool2d_{sfx}")
        np.testing.assert_array_equal(ind.get(), ei)
        gi = cp.full(case[0], 7.0)
        scatter = cb._scatter_args(n, c, h, w, out_shape[2], out_shape[3])
        cb._launch("pool.cuh", f"lk_max_pool2d_backward_{sfx}", 3, 32, (ptr(gd), ptr(eid), ptr(gi)) + scatter)
        close(gi.get(), R.max_pool2d_backward(g, ei, case[0]), np.float64, f"max backward {sfx}")
        np.testing.assert_array_equal(gi.get(), sequential_scatter(g, ei, case[0]))

    avg_case = ((2, 3, 11, 10), (3, 2), (2, 1), (1, 2, 0, 1), (1, 1), True)
    p, out_shape, kw = _geometry(avg_case, count_include_pad=False)
    ga = rng.standard_normal(out_shape)
    gad = cp.asarray(ga)
    geom = cb._avg_geom(n, c, h, w, out_shape[2], out_shape[3], p)
    for sfx in ("f64", "f64_i32"):
        out = cp.zeros(out_shape)
        cb._launch("pool.cuh", f"lk_avg_pool2d_{sfx}", 2, 96, (ptr(xd), ptr(out)) + geom)
        close(out.get(), R.avg_pool2d(x, count_include_pad=False, **kw), np.float64, f"avg {sfx}")
        gi = cp.zeros(avg_case[0])
        cb._launch("pool.cuh", f"lk_avg_pool2d_backward_{sfx}", 7, 32, (ptr(gad), ptr(gi)) + geom)
        close(gi.get(), R.avg_pool2d_backward(ga, avg_case[0], count_include_pad=False, **kw), np.float64,
              f"avg backward {sfx}")

    s3 = (3, 5, 7)
    gx = rng.standard_normal(s3)
    gxd = cp.asarray(gx)
    for sfx in ("f64", "f64_i32"):
        gb = cp.zeros(5)
        cb._launch("elementwise.cuh", f"lk_bias_relu_backward_bias_{sfx}", 2, 100,  # not a power of two
                   (ptr(gxd), ptr(gb), np.int64(3), np.int64(5), np.int64(7)))
        close(gb.get(), gx.sum(axis=(0, 2)), np.float64, f"channel sums {sfx}")
    sync(cp)


@pytest.mark.slow
def test_native_above_2_to_31_elements(cp, rng):
    """Sizes past 2^31 take the 64-bit index kernels of _lepton_cuda (about 16 GB of memory)."""
    native = get_named_backend("native", "cuda")
    if native is None:
        pytest.skip(unavailable_reason("native", "cuda"))
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 17 * (1 << 30):
        pytest.skip("needs about 16 GB of free device memory")
    H, W = 1 << 16, (1 << 15) + 6  # 2^31 + 393216 elements in one plane
    x = cp.random.standard_normal((1, 1, H, W), dtype=cp.float32)
    p = PoolParams(2, 2, 2, 2, 0, 0, 0, 0)
    out = cp.empty((1, 1, H // 2, W // 2), dtype=cp.float32)
    ind = cp.empty(out.shape, dtype=cp.int64)
    native.max_pool2d(x, out, ind, p)
    tail = x[:, :, -4:, :].get()
    ey, ei = R.max_pool2d(tail, 2, return_indices=True)
    close(out[:, :, -2:, :].get(), ey, np.float32, "max_pool2d tail")
    np.testing.assert_array_equal(ind[:, :, -2:, :].get(), ei + (H - 4) * W)
    del ind, out
    native.relu(x, x)
    assert float(x[0, 0, -1, -1]) >= 0 and float(cp.min(x[0, 0, -8:, :])) >= 0
    sync(cp)


# ---------------------------------------------------------------- the public API on CuPy arrays

@pytest.fixture(params=CUDA_BACKENDS)
def forced(request, cp):
    import lepton_kernels as lk

    if get_named_backend(request.param, "cuda") is None:
        pytest.skip(f"cuda backend {request.param!r} unavailable: {unavailable_reason(request.param, 'cuda')}")
    lk.use_backend(request.param)
    yield lk
    lk.use_backend(None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_api_on_cupy(forced, cp, rng, dtype):
    lk = forced
    x = rng.standard_normal((3, 4, 13, 11)).astype(dtype)
    xd = cp.asarray(x)

    y = lk.relu(xd)
    assert isinstance(y, cp.ndarray) and y.dtype == dtype
    close(y.get(), R.relu(x), dtype, "lk.relu")
    g = rng.standard_normal(x.shape).astype(dtype)
    close(lk.relu_backward(cp.asarray(g), xd).get(), R.relu_backward(g, x), dtype, "lk.relu_backward")

    b = rng.standard_normal(4).astype(dtype)
    y = lk.bias_relu(xd, cp.asarray(b))
    close(y.get(), R.bias_relu(x, b), dtype, "lk.bias_relu")
    gx, gb = lk.bias_relu_backward(cp.asarray(g), y)
    ex, eb = R.bias_relu_backward(g, y.get())
    close(gx.get(), ex, dtype, "lk.bias_relu_backward grad_x")
    close(gb.get(), eb, dtype, "lk.bias_relu_backward grad_bias", rtol=1e-4, atol=1e-5)

    for kw in (dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
               dict(kernel_size=2)):
        y, idx = lk.max_pool2d(xd, return_indices=True, **kw)
        ey, ei = R.max_pool2d(x, return_indices=True, **kw)
        close(y.get(), ey, dtype, f"lk.max_pool2d {kw}")
        np.testing.assert_array_equal(idx.get(), ei)
        go = rng.standard_normal(ey.shape).astype(dtype)
        gi = lk.max_pool2d_backward(cp.asarray(go), idx, x.shape)
        close(gi.get(), R.max_pool2d_backward(go, ei, x.shape), dtype, f"lk.max_pool2d_backward {kw}")

    for kw in (dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
               dict(kernel_size=(2, 3), stride=1, padding=(1, 0), divisor_override=4)):
        y = lk.avg_pool2d(xd, **kw)
        close(y.get(), R.avg_pool2d(x, **kw), dtype, f"lk.avg_pool2d {kw}")
        go = rng.standard_normal(y.shape).astype(dtype)
        gi = lk.avg_pool2d_backward(cp.asarray(go), x.shape, **kw)
        close(gi.get(), R.avg_pool2d_backward(go, x.shape, **kw), dtype, f"lk.avg_pool2d_backward {kw}")
    sync(cp)


def test_public_api_empty_batch_on_cupy(forced, cp):
    lk = forced
    x = cp.zeros((0, 3, 8, 8), dtype=cp.float32)
    assert lk.relu(x).shape == (0, 3, 8, 8)
    assert lk.max_pool2d(x, 2).shape == (0, 3, 4, 4)
    assert lk.avg_pool2d(x, 2).shape == (0, 3, 4, 4)


def test_native_matches_torch_when_available(cp, rng):
    """Cross-check against PyTorch's CUDA max/avg pooling on symmetric padding."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    native = get_named_backend("native", "cuda")
    if native is None:
        pytest.skip(unavailable_reason("native", "cuda"))
    x = rng.standard_normal((4, 8, 33, 35)).astype(np.float32)
    tx = torch.from_numpy(x).cuda()
    ty, ti = torch.nn.functional.max_pool2d(tx, 3, 2, 1, 1, True, True)
    p = PoolParams(3, 3, 2, 2, 1, 1, 1, 1)
    out = cp.empty(tuple(ty.shape), dtype=cp.float32)
    ind = cp.empty(tuple(ty.shape), dtype=cp.int64)
    native.max_pool2d(cp.asarray(x), out, ind, p)
    np.testing.assert_array_equal(out.get(), ty.cpu().numpy())
    np.testing.assert_array_equal(ind.get(), ti.cpu().numpy())
    ta = torch.nn.functional.avg_pool2d(tx, 3, 2, 1, True, False)
    pa = PoolParams(3, 3, 2, 2, 1, 1, 1, 1, count_include_pad=False)
    outa = cp.empty(tuple(ta.shape), dtype=cp.float32)
    native.avg_pool2d(cp.asarray(x), outa, pa)
    np.testing.assert_allclose(outa.get(), ta.cpu().numpy(), rtol=1e-5, atol=1e-6)
    sync(cp)
