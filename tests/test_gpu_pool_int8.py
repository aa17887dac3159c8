"""GPU tests of max_pool2d on int8 / uint8 (quantized activations) on every CUDA backend.

Each CUDA backend (native ``_lepton_cuda`` -> ``lk_max_pool2d_u8/_s8`` through
``max_pool2d_int8``, ``cupy`` RawModule over the same ``cuda/kernels/pool.cuh``,
``numba`` numba.cuda) is called through the kernel interface of
``lepton_kernels._backend`` on CuPy arrays and must equal
``lepton_kernels.reference.max_pool2d`` exactly: the result keeps x's dtype, ties
(values at the type's minimum and maximum) go to the first tap, a window entirely
in the padding gives the type's minimum and index -1; with and without indices,
asymmetric and oversized padding, ceil mode, dilation, sizes around the block
(255/256/257 outputs) and misaligned (odd byte offset) operands. The 32-bit and
64-bit index instantiations must agree; the other ops still refuse int8. Then the
public API on CuPy arrays with each backend forced. Marked ``gpu``; skipped without
CuPy or a device. Run: ``python -m pytest -m gpu tests/test_gpu_pool_int8.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels import reference as R
from lepton_kernels._backend import PoolParams, get_named_backend, unavailable_reason

pytestmark = pytest.mark.gpu

CUDA_BACKENDS = ("native", "cupy", "numba")
QTYPES = (np.uint8, np.int8)

# (input NCHW, kernel, stride, pads (top, bottom, left, right), dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((1, 2, 10, 11), (3, 2), (2, 3), (1, 0, 0, 2), (1, 1), True),     # asymmetric
    ((2, 2, 6, 5), (2, 2), (1, 1), (3, 3, 2, 4), (1, 1), False),      # pad > kernel: windows in padding
    ((1, 2, 4, 5), (2, 3), (3, 2), (3, 1, 2, 3), (1, 1), False),      # windows in padding, strided
    ((2, 2, 5, 5), (3, 3), (3, 3), (2, 2, 2, 2), (1, 1), True),
    ((1, 3, 9, 13), (3, 2), (1, 2), (2, 1, 1, 0), (2, 3), False),     # dilation
    ((1, 3, 9, 13), (2, 3), (3, 1), (0, 2, 3, 1), (3, 2), True),
    ((2, 1, 4, 4), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), False),      # kernel larger than input
    ((1, 2, 5, 7), (1, 1), (2, 3), (0, 0, 0, 0), (1, 1), True),       # stride > kernel
    ((1, 1, 30, 34), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),    # 255 outputs
    ((1, 1, 32, 32), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),    # 256 outputs
    ((1, 1, 2, 514), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),    # 257 outputs
    ((3, 5, 17, 19), (4, 4), (3, 3), (2, 1, 0, 3), (1, 1), True),
    ((8, 64, 56, 56), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),   # ResNet stem
    ((4, 16, 32, 32), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),   # LeNet/CIFAR
]


def _case_id(case):
    shape, k, s, pads, d, ceil = case
    return f"{'x'.join(map(str, shape))}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, pads))}-d{d[0]}{d[1]}" + (
        "-ceil" if ceil else "")


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture
def rng():
    return np.random.default_rng(20241125)


def device(cp, a, offset=0):
    """A C-contiguous device copy of a; offset > 0 shifts it by that many elements (bytes)."""
    a = np.ascontiguousarray(a)
    if offset == 0:
        return cp.asarray(a)
    buf = cp.empty(a.size + offset, dtype=a.dtype)
    view = buf[offset:].reshape(a.shape)
    view[...] = cp.asarray(a)
    return view


def sync(cp):
    cp.cuda.get_current_stream().synchronize()
    cp.cuda.runtime.deviceSynchronize()  # surfaces asynchronous kernel faults here


def quantized(rng, shape, qtype):
    """Random codes over the whole range, a third of them at the minimum (ties), one plane
    entirely at the minimum and one row at the maximum."""
    info = np.iinfo(qtype)
    x = rng.integers(info.min, int(info.max) + 1, size=shape).astype(qtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)] = info.min
    if shape[1] > 1:
        x[0, 1] = info.min
        x[-1, -1, 0] = info.max
    return x


def geometry(case):
    shape, (kh, kw), (sh, sw), (t, b, l, r), (dh, dw), ceil = case
    oh = R.pool_output_size(shape[2], kh, sh, t, b, dh, ceil)
    ow = R.pool_output_size(shape[3], kw, sw, l, r, dw, ceil)
    p = PoolParams(kh, kw, sh, sw, t, b, l, r, dh, dw)
    kw_ = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=((t, b), (l, r)), dilation=(dh, dw), ceil_mode=ceil)
    return p, (shape[0], shape[1], oh, ow), kw_


# ---------------------------------------------------------------- the kernel interface

@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("case", POOL_CASES, ids=_case_id)
def test_max_pool2d_int8(backend, cp, rng, qtype, case):
    p, out_shape, kw = geometry(case)
    x = quantized(rng, case[0], qtype)
    ey, ei = R.max_pool2d(x, return_indices=True, **kw)
    assert ey.dtype == qtype
    for offset in (0, 1):  # 1: an odd byte address
        xd = device(cp, x, offset)
        out = device(cp, np.full(out_shape, 77, qtype), offset)
        ind = cp.full(out_shape, 12345, dtype=cp.int64)
        backend.max_pool2d(xd, out, ind, p)
        got = out.get()
        assert got.dtype == qtype
        np.testing.assert_array_equal(got, ey, err_msg=f"max_pool2d values (offset {offset})")
        np.testing.assert_array_equal(ind.get(), ei, err_msg=f"max_pool2d indices (offset {offset})")
        out2 = cp.full(out_shape, 77, dtype=qtype)
        backend.max_pool2d(xd, out2, None, p)
        np.testing.assert_array_equal(out2.get(), ey, err_msg="max_pool2d without indices")
    if (ei < 0).any():  # windows entirely in padding: the type's minimum, index -1
        assert (got[ei < 0] == np.iinfo(qtype).min).all()
    sync(cp)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
def test_max_pool2d_int8_all_padding_windows(backend, cp, qtype):
    """An input of maxima, windows of which some see only padding: those give the minimum and -1,
    the others the maximum and a real index."""
    info = np.iinfo(qtype)
    case = ((1, 2, 3, 3), (2, 2), (3, 3), (3, 3, 3, 3), (1, 1), True)
    p, out_shape, kw = geometry(case)
    x = np.full(case[0], info.max, qtype)
    ey, ei = R.max_pool2d(x, return_indices=True, **kw)
    assert (ei < 0).any() and (ei >= 0).any()
    out = cp.full(out_shape, 77, dtype=qtype)
    ind = cp.full(out_shape, 12345, dtype=cp.int64)
    backend.max_pool2d(cp.asarray(x), out, ind, p)
    np.testing.assert_array_equal(ind.get(), ei)
    np.testing.assert_array_equal(out.get(), np.where(ei < 0, info.min, info.max).astype(qtype))
    sync(cp)


def test_cupy_int8_kernels_64_bit_and_32_bit_index_alike(cp, rng):
    """lk_max_pool2d_{u8,s8} and their _i32 twins agree on a small shape with a few blocks."""
    from lepton_kernels import cupy_backend as cb

    if cb.unavailable_reason() is not None:
        pytest.skip(cb.unavailable_reason())
    case = ((2, 3, 11, 10), (3, 2), (2, 1), (1, 2, 0, 1), (2, 1), True)
    p, out_shape, kw = geometry(case)
    n, c, h, w = case[0]
    geom = cb._max_geom(n, c, h, w, out_shape[2], out_shape[3], p)
    ptr = lambda a: cb._iface(a)[0]  # noqa: E731
    for qtype, sfx in ((np.uint8, "u8"), (np.int8, "s8")):
        x = quantized(rng, case[0], qtype)
        ey, ei = R.max_pool2d(x, return_indices=True, **kw)
        xd = cp.asarray(x)
        assert cb._pool_name("max_pool2d", np.dtype(qtype).str[1:], n, c, h, w, out_shape[2], out_shape[3],
                             p) == f"lk_max_pool2d_{sfx}_i32"
        for name in (f"lk_max_pool2d_{sfx}", f"lk_max_pool2d_{sfx}_i32"):
            out = cp.zeros(out_shape, dtype=qtype)
            ind = cp.zeros(out_shape, dtype=cp.int64)
            cb._launch("pool.cuh", name, 5, 64, (ptr(xd), ptr(out), ptr(ind)) + geom)
            np.testing.assert_array_equal(out.get(), ey, err_msg=name)
            np.testing.assert_array_equal(ind.get(), ei, err_msg=name)
    sync(cp)


@pytest.mark.parametrize("name", ("native", "cupy"))
def test_other_ops_still_refuse_int8(cp, name):
    """Only max_pool2d gained int8: the other kernels refuse int8 arrays instead of reading them as float."""
    module = get_named_backend(name, "cuda")
    if module is None:
        pytest.skip(unavailable_reason(name, "cuda"))
    x = cp.zeros((1, 2, 4, 4), dtype=cp.uint8)
    out = cp.zeros((1, 2, 2, 2), dtype=cp.uint8)
    p = PoolParams(2, 2, 2, 2, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        module.avg_pool2d(x, out, p)
    with pytest.raises(TypeError):
        module.avg_pool2d_backward(out, x, p)
    with pytest.raises(TypeError):
        module.max_pool2d_backward(out, cp.zeros(out.shape, dtype=cp.int64), x, PoolParams(1, 1, 1, 1, 0, 0, 0, 0))
    with pytest.raises(TypeError):
        module.relu(x, x)
    with pytest.raises(TypeError):  # x and out of different types
        module.max_pool2d(x, cp.zeros((1, 2, 2, 2), dtype=cp.int8), None, p)
    with pytest.raises(TypeError):
        module.max_pool2d(x, cp.zeros((1, 2, 2, 2), dtype=cp.float32), None, p)


# ---------------------------------------------------------------- the public API on CuPy arrays

@pytest.fixture(params=CUDA_BACKENDS)
def forced(request, cp):
    import lepton_kernels as lk

    if get_named_backend(request.param, "cuda") is None:
        pytest.skip(f"cuda backend {request.param!r} unavailable: {unavailable_reason(request.param, 'cuda')}")
    lk.use_backend(request.param)
    yield lk
    lk.use_backend(None)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda t: np.dtype(t).name)
def test_public_api_int8_on_cupy(forced, cp, rng, qtype):
    lk = forced
    x = quantized(rng, (3, 4, 13, 11), qtype)
    xd = cp.asarray(x)
    for kw in (dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
               dict(kernel_size=2, padding=((1, 0), (0, 1))),
               dict(kernel_size=2)):
        y, idx = lk.max_pool2d(xd, return_indices=True, **kw)
        ey, ei = R.max_pool2d(x, return_indices=True, **kw)
        assert isinstance(y, cp.ndarray) and y.dtype == qtype
        np.testing.assert_array_equal(y.get(), ey, err_msg=f"lk.max_pool2d {kw}")
        np.testing.assert_array_equal(idx.get(), ei)
        np.testing.assert_array_equal(lk.max_pool2d(xd, **kw).get(), ey)
        out = cp.full(ey.shape, 77, dtype=qtype)
        assert lk.max_pool2d(xd, out=out, **kw) is out
        np.testing.assert_array_equal(out.get(), ey)
    y = lk.max_pool2d(xd[0], 2)  # CHW
    np.testing.assert_array_equal(y.get(), R.max_pool2d(x[:1], 2)[0])
    assert lk.max_pool2d(cp.zeros((0, 3, 8, 8), dtype=qtype), 2).shape == (0, 3, 4, 4)
    sync(cp)


def test_public_api_int8_commutes_with_quantization_on_cupy(forced, cp, rng):
    lk = forced
    x = cp.asarray(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    q = lk.quantize(x, 0.02, 128, dtype=np.uint8)
    np.testing.assert_array_equal(lk.max_pool2d(q, 2).get(),
                                  lk.quantize(lk.max_pool2d(x, 2), 0.02, 128, dtype=np.uint8).get())
    sync(cp)
