"""int8 ops on every CPU backend: integer results equal the reference exactly (ONNX numerics)."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

SIZES = [(1,), (15,), (16,), (17,), (3, 64, 65), (2, 3, 7, 9), (100003,)]


@pytest.mark.parametrize("qtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_quantize_dequantize_per_tensor_exact(cpu_backend, shape, qtype, rng):
    if cpu_backend == "reference" and np.prod(shape) > 5000:
        pytest.skip("reference backend is slow")
    x = (rng.standard_normal(shape) * 40).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7] = np.float32(0.5) * rng.integers(-300, 300, flat[::7].size)  # exact .5 ties
    flat[1::11] = np.nan
    flat[2::13] = np.inf
    flat[3::13] = -np.inf
    zp = 3 if qtype == np.int8 else 128
    q = lk.quantize(x, 0.5, zp, dtype=qtype)
    assert q.dtype == qtype
    np.testing.assert_array_equal(q, ref.quantize(x, 0.5, zp, dtype=qtype))
    y = lk.dequantize(q, 0.5, zp)
    np.testing.assert_array_equal(y, ref.dequantize(q, 0.5, zp).astype(np.float32))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_channel_exact(cpu_backend, axis, rng):
    x = (rng.standard_normal((4, 5, 6)) * 10).astype(np.float32)
    n = x.shape[axis]
    scale = (rng.random(n) + 0.05).astype(np.float32)
    zp = rng.integers(-128, 128, n).astype(np.int8)
    zp[0] = -128
    q = lk.quantize(x, scale, zp, axis=axis)
    np.testing.assert_array_equal(q, ref.quantize(x, scale, zp, axis=axis))
    np.testing.assert_array_equal(lk.dequantize(q, scale, zp, axis=axis),
                                  ref.dequantize(q, scale, zp, axis=axis).astype(np.float32))


def test_dequantize_int32(cpu_backend):
    q = np.array([-2**31, -5, 0, 7, 2**31 - 1], np.int32)
    np.testing.assert_array_equal(lk.dequantize(q, 0.25, 0), ref.dequantize(q, 0.25, 0).astype(np.float32))


@pytest.mark.parametrize("scale", [1.0, 1e-3, 37.5])
def test_dynamic_quantize_matches_onnx(cpu_backend, scale, rng):
    for x in (rng.standard_normal(1001).astype(np.float32) * scale, np.abs(rng.standard_normal(64)).astype(np.float32),
              -np.abs(rng.standard_normal(64)).astype(np.float32), np.zeros(5, np.float32)):
        q, s, z = lk.dynamic_quantize(x)
        rq, rs, rz = ref.dynamic_quantize(x)
        np.testing.assert_array_equal(q, rq)
        assert s == rs and z == rz and q.dtype == np.uint8


MM_SIZES = [(1, 1, 1), (7, 300, 5), (16, 64, 32), (33, 129, 47), (64, 4100, 17), (128, 256, 96)]


@pytest.mark.parametrize("types", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)])
@pytest.mark.parametrize("m,k,n", MM_SIZES)
def test_matmul_integer_exact(cpu_backend, m, k, n, types, rng):
    if cpu_backend == "reference" and m * k * n > 2_000_000:
        pytest.skip("reference backend is slow")
    ta, tb = types
    lo_a, hi_a = np.iinfo(ta).min, np.iinfo(ta).max
    lo_b, hi_b = np.iinfo(tb).min, np.iinfo(tb).max
    a = rng.integers(lo_a, hi_a + 1, (m, k)).astype(ta)
    b = rng.integers(lo_b, hi_b + 1, (k, n)).astype(tb)
    a[0, :] = hi_a  # extremes: the 16-bit trap of vpmaddubsw
    b[:, 0] = lo_b
    for azp, bzp in ((None, None), (hi_a, lo_b), (lo_a, rng.integers(lo_b, hi_b + 1, n).astype(tb))):
        np.testing.assert_array_equal(lk.matmul_integer(a, b, azp, bzp), ref.matmul_integer(a, b, azp, bzp))


@pytest.mark.parametrize("case", [((2, 3, 9, 9), 4, 3, 1, 1, 1, 1), ((1, 6, 8, 7), 6, 3, 2, 2, 1, 3),
                                  ((2, 4, 10, 10), 8, 5, 1, 0, 2, 1), ((1, 1, 28, 28), 6, 5, 1, 2, 1, 1),
                                  ((3, 16, 8, 8), 32, 3, 1, 1, 1, 1), ((2, 9, 11, 5), 13, 3, 1, 2, 1, 1),
                                  ((1, 128, 5, 5), 17, 3, 1, 1, 1, 1)])
def test_conv2d_integer_exact(cpu_backend, case, rng):
    shape, co, k, s, p, d, g = case
    x = rng.integers(0, 256, shape).astype(np.uint8)
    w = rng.integers(-128, 128, (co, shape[1] // g, k, k)).astype(np.int8)
    wzp = rng.integers(-128, 128, co).astype(np.int8)
    for xzp, wz in ((None, None), (255, wzp), (0, -128)):
        np.testing.assert_array_equal(lk.conv2d_integer(x, w, xzp, wz, s, p, d, g),
                                      ref.conv2d_integer(x, w, xzp, wz, s, p, d, g))


def _rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("case", [((2, 3, 9, 11), 40, (3, 3), ((1, 0), (2, 1)), (1, 1)),
                                  ((3, 2, 12, 7), 40, (5, 3), ((3, 4), (1, 1)), (2, 1)),
                                  ((2, 7, 8, 9), 48, (3, 2), ((2, 1), (0, 1)), (1, 2)),
                                  ((2, 5, 6, 20), 64, (2, 4), ((1, 0), (1, 2)), (1, 1))])
@pytest.mark.parametrize("types", [(np.uint8, np.int8), (np.int8, np.uint8)])
def test_conv2d_integer_many_outputs_few_channels_exact(fast_cpu_backend, case, types, rng):
    """Many output channels over 1-3 leftover input channels: on VNNI the last tap-major slots are
    folded over the kernel rows (rows shifted into the gap rows between images); asymmetric padding,
    dilation, both operand signs and per-channel zero points, plus the int8 layer around it."""
    shape, co, kernel, padding, dilation = case
    tx, tw = types
    x, w = _rand(rng, tx, shape), _rand(rng, tw, (co, shape[1]) + kernel)
    x[0, :, 0, :] = np.iinfo(tx).max  # an edge row at the extreme reaches the folded slots first
    for xzp, wzp in ((None, None), (int(np.iinfo(tx).min), _rand(rng, tw, co))):
        np.testing.assert_array_equal(lk.conv2d_integer(x, w, xzp, wzp, 1, padding, dilation),
                                      ref.conv2d_integer(x, w, xzp, wzp, 1, padding, dilation))
    w_scale = (rng.random(co) * 0.01 + 1e-3).astype(np.float32)
    args = (x, 0.02, 3, w, w_scale, None, 0.3, np.uint8(9), rng.integers(-900, 900, co).astype(np.int32), 1,
            padding, dilation)
    np.testing.assert_array_equal(lk.qlinear_conv2d(*args, activation="relu"),
                                  ref.qlinear_conv2d(*args, activation="relu"))


QL_TYPES = [(np.uint8, np.int8, np.uint8), (np.int8, np.int8, np.int8), (np.uint8, np.uint8, np.int8),
            (np.int8, np.uint8, np.uint8)]


@pytest.mark.parametrize("types", QL_TYPES, ids=lambda t: "-".join(np.dtype(d).name for d in t))
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 300, 5), (16, 64, 32), (33, 129, 47), (64, 4100, 17)])
def test_qlinear_matmul_exact(cpu_backend, m, k, n, types, rng):
    """Requantized output equals the reference bit for bit: per-column scales and zero points,
    int32 and float bias, ReLU, saturation at both ends, zero points at the extremes."""
    ta, tb, ty = types
    a, b = _rand(rng, ta, (m, k)), _rand(rng, tb, (k, n))
    b_scale = (rng.random(n) * 0.02 + 1e-4).astype(np.float32)
    y_info = np.iinfo(ty)
    cases = [
        dict(a_zp=np.iinfo(ta).max, b_zp=_rand(rng, tb, n), y_zp=ty(y_info.min), bias=None, activation=None),
        dict(a_zp=np.iinfo(ta).min, b_zp=np.iinfo(tb).min, y_zp=ty(y_info.max), bias=rng.normal(0, 5, n),
             activation="relu"),
        dict(a_zp=0, b_zp=None, y_zp=ty(3), bias=rng.integers(-2**20, 2**20, n).astype(np.int32), activation="relu"),
    ]
    for c in cases:
        # y_scale small enough that many outputs saturate, large enough that many do not
        args = (a, 0.05, c["a_zp"], b, b_scale, c["b_zp"], 0.05 * np.sqrt(k) * 0.02, c["y_zp"])
        got = lk.qlinear_matmul(*args, bias=c["bias"], activation=c["activation"])
        want = ref.qlinear_matmul(*args, bias=c["bias"], activation=c["activation"])
        assert got.dtype == ty
        np.testing.assert_array_equal(got, want)
        assert (got == y_info.max).any() or k < 4 or m * n < 8  # saturation is exercised


@pytest.mark.parametrize("case", [((2, 3, 9, 9), 4, 3, 1, 1, 1, 1), ((1, 6, 8, 7), 6, 3, 2, 2, 1, 3),
                                  ((2, 4, 10, 10), 8, 5, 1, 0, 2, 1), ((3, 16, 8, 8), 32, 3, 1, 1, 1, 1),
                                  ((1, 1, 28, 28), 17, 5, 1, 2, 1, 1), ((2, 5, 7, 6), 7, 3, 1, 1, 2, 1),
                                  ((2, 8, 6, 6), 6, 3, 1, 1, 1, 2), ((1, 64, 6, 6), 20, 3, 1, 1, 1, 1),
                                  ((3, 12, 5, 9), 9, 1, 1, 0, 1, 3), ((2, 4, 6, 6), 5, 1, 1, 1, 1, 1),
                                  ((2, 2, 9, 4), 3, 2, 1, 3, 1, 1)])
@pytest.mark.parametrize("types", QL_TYPES, ids=lambda t: "-".join(np.dtype(d).name for d in t))
def test_qlinear_conv2d_exact(cpu_backend, case, types, rng):
    tx, tw, ty = types
    shape, co, k, s, p, d, g = case
    x, w = _rand(rng, tx, shape), _rand(rng, tw, (co, shape[1] // g, k, k))
    w_scale = (rng.random(co) * 0.01 + 1e-4).astype(np.float32)
    for x_zp, w_zp, act in ((np.iinfo(tx).max, _rand(rng, tw, co), "relu"), (0, None, None)):
        args = (x, 0.1, x_zp, w, w_scale, w_zp, 0.1 * 0.01 * k * np.sqrt(shape[1]), ty(np.iinfo(ty).min + 5))
        kw = dict(bias=rng.normal(0, 10, co).astype(np.float32), stride=s, padding=p, dilation=d, groups=g,
                  activation=act)
        got = lk.qlinear_conv2d(*args, **kw)
        np.testing.assert_array_equal(got, ref.qlinear_conv2d(*args, **kw))


def test_requantize_ties_and_int32_wraparound(cpu_backend):
    """acc * m landing exactly on .5 rounds half to even; acc + bias wraps in int32."""
    a = np.array([[1, 3, 5, 7, 9, 11, 13, 15, 255]], np.uint8)  # one row, K = 9, a single 1 in b picks a column
    b = np.eye(9, dtype=np.int8)
    y = lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 2.0, np.uint8(100))  # m = 0.5: 0.5, 1.5, ... are ties
    np.testing.assert_array_equal(y, ref.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 2.0, np.uint8(100)))
    np.testing.assert_array_equal(y[0, :8], 100 + np.array([0, 2, 2, 4, 4, 6, 6, 8]))
    big = np.full(9, 2**31 - 100, np.int32)  # + 255 wraps to a large negative accumulator
    y = lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1e-9, np.int8(0), bias=big)
    np.testing.assert_array_equal(y, ref.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1e-9, np.int8(0), bias=big))
    assert y[0, 8] == -128 and y[0, 0] == 127


def test_qlinear_output_dtype_rule():
    a, b = np.ones((2, 3), np.uint8), np.ones((3, 4), np.int8)
    assert lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1.0, 0).dtype == np.uint8  # a's type
    assert lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1.0, np.int8(0)).dtype == np.int8  # y_zp's type
    assert lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1.0, 0, dtype=np.int8).dtype == np.int8
    out = np.empty((2, 4), np.uint8)
    assert lk.qlinear_matmul(a, 1.0, 0, b, 1.0, 0, 1.0, 0, out=out) is out
    assert (out == 3).all()
    empty_k = lk.qlinear_matmul(np.ones((2, 0), np.uint8), 1.0, 0, np.ones((0, 4), np.int8), 1.0, 0, 1.0, 7,
                                bias=np.array([-20, 0, 2, 9], np.int32))
    np.testing.assert_array_equal(empty_k, [[0, 7, 9, 16]] * 2)


@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
@pytest.mark.parametrize("geom", [(2, None, 0, False), (3, 2, 1, False), (3, 2, 1, True), (2, 1, 0, False)])
def test_max_pool2d_int8_exact(cpu_backend, qtype, geom, rng):
    k, s, p, ceil = geom
    x = _rand(rng, qtype, (2, 3, 11, 10))
    x[0, 0] = np.iinfo(qtype).min  # a plane at the minimum: ties go to the first tap
    y, idx = lk.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    ry, ridx = ref.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    assert y.dtype == qtype
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(lk.max_pool2d(x, k, s, p, ceil_mode=ceil), ry)


@pytest.mark.parametrize("qtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape", [(3, 5, 8, 12), (2, 2, 6, 130), (1, 1, 2, 2), (4, 3, 10, 64), (5, 3, 8, 8),
                                   (1, 3, 6, 8)], ids=str)
def test_max_pool2d_int8_2x2_flat_path(cpu_backend, qtype, shape, rng):
    """2x2 / stride 2 on even planes: the vectorized row-pair kernel (widths below, at and above 64)."""
    x = _rand(rng, qtype, shape)
    np.testing.assert_array_equal(lk.max_pool2d(x, 2), ref.max_pool2d(x, 2))


def test_max_pool2d_int8_commutes_with_quantization(rng):
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    q = lk.quantize(x, 0.02, 128, dtype=np.uint8)
    np.testing.assert_array_equal(lk.max_pool2d(q, 2), lk.quantize(lk.max_pool2d(x, 2), 0.02, 128, dtype=np.uint8))


@pytest.mark.parametrize("call,exc,words", [
    (lambda x: lk.quantize(x, 0.0, 0), ValueError, ("scale",)),
    (lambda x: lk.quantize(x, np.inf, 0), ValueError, ("scale",)),
    (lambda x: lk.quantize(x, 1.0, 200), ValueError, ("zero_point", "[-128, 127]")),
    (lambda x: lk.quantize(x, 1.0, -1, dtype=np.uint8), ValueError, ("zero_point",)),
    (lambda x: lk.quantize(x, 1.0, 0, dtype=np.int16), TypeError, ("dtype",)),
    (lambda x: lk.quantize(x, np.ones(3, np.float32), 0, axis=1), ValueError, ("scale", "4 entries")),
    (lambda x: lk.quantize(x, 1.0, 0, axis=5), ValueError, ("axis",)),
    (lambda x: lk.dequantize(x, 1.0, 0), TypeError, ("q", "float32")),
    (lambda x: lk.dynamic_quantize(np.array([1.0, np.nan], np.float32)), ValueError, ("finite",)),
    (lambda x: lk.matmul_integer(np.ones((2, 3), np.uint8), np.ones((4, 2), np.int8)), ValueError, ("inner",)),
    (lambda x: lk.matmul_integer(np.ones((2, 3), np.int16), np.ones((3, 2), np.int8)), TypeError, ("a",)),
    (lambda x: lk.matmul_integer(np.ones((2, 3), np.uint8), np.ones((3, 2), np.int8), 300), ValueError,
     ("a_zero_point",)),
    (lambda x: lk.matmul_integer(np.ones((2, 3), np.uint8), np.ones((3, 2), np.int8), 0, np.zeros(3, np.int8)),
     ValueError, ("b_zero_point",)),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 0.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 0),
     ValueError, ("a_scale",)),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), np.ones(3), 0, 1.0, 0),
     ValueError, ("b_scale", "2 entries")),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, np.nan, 0),
     ValueError, ("y_scale",)),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 300),
     ValueError, ("y_zero_point",)),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 0,
                                 bias=np.ones(3)), ValueError, ("bias", "(2,)")),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 0,
                                 bias=np.ones(2, np.int64)), TypeError, ("bias", "int32")),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 0,
                                 activation="gelu"), ValueError, ("activation",)),
    (lambda x: lk.qlinear_matmul(np.ones((2, 3), np.uint8), 1.0, 0, np.ones((3, 2), np.int8), 1.0, 0, 1.0, 0,
                                 dtype=np.int32), TypeError, ("dtype",)),
    (lambda x: lk.qlinear_conv2d(np.ones((1, 2, 5, 5), np.uint8), 1.0, 0, np.ones((3, 2, 3, 3), np.int8),
                                 np.ones(2), 0, 1.0, 0), ValueError, ("w_scale", "3 entries")),
    (lambda x: lk.qlinear_conv2d(np.ones((1, 2, 5, 5), np.float32), 1.0, 0, np.ones((3, 2, 3, 3), np.int8),
                                 1.0, 0, 1.0, 0), TypeError, ("x",)),
    (lambda x: lk.max_pool2d(np.ones((1, 1, 4, 4), np.int16), 2), TypeError, ("x",)),
    (lambda x: lk.qlinear_matmul(np.ones((1, 3), np.uint8), 1e30, 0, np.ones((3, 2), np.int8), 1e30, 0, 1e-30, 0),
     ValueError, ("a_scale * b_scale / y_scale", "finite")),
])
def test_int8_bad_input(call, exc, words):
    x = np.ones((2, 4, 3), np.float32)
    with pytest.raises(exc) as info:
        call(x)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_fake_quantize_matches_quantize_then_dequantize_and_torch(cpu_backend, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((4, 6)) * 10).astype(np.float32)
    y = lk.fake_quantize(x, 0.1, 3)
    np.testing.assert_array_equal(y, ref.dequantize(ref.quantize(x, 0.1, 3), 0.1, 3).astype(np.float32))
    t = torch.fake_quantize_per_tensor_affine(torch.tensor(x), 0.1, 3, -128, 127).numpy()
    assert np.max(np.abs(y - t)) <= 0.1 + 1e-6  # torch multiplies by 1/scale: ties may land one step apart


def test_fake_quantize_straight_through_gradient():
    torch = pytest.importorskip("torch")
    from lepton_kernels.autograd import Tensor
    from lepton_kernels.nn import functional as F

    x = np.array([[-20.0, -12.8, -0.04, 0.0, 0.26, 12.7, 13.0, 30.0]], np.float32)
    t = Tensor(x.copy(), requires_grad=True)
    F.fake_quantize(t, 0.1, 0).sum().backward()
    tt = torch.tensor(x, requires_grad=True)
    torch.fake_quantize_per_tensor_affine(tt, 0.1, 0, -128, 127).sum().backward()
    np.testing.assert_array_equal(t.grad, tt.grad.numpy())
    scale = np.array([0.1, 0.5], np.float32)
    t2 = Tensor(np.ones((2, 3), np.float32) * 20, requires_grad=True)
    F.fake_quantize(t2, scale, np.zeros(2, np.int8), axis=0).sum().backward()
    np.testing.assert_array_equal(t2.grad, [[0, 0, 0], [1, 1, 1]])  # 20/0.1 = 200 saturates, 20/0.5 = 40 does not


@pytest.mark.parametrize("types", QL_TYPES, ids=lambda t: "-".join(np.dtype(d).name for d in t))
def test_prepared_qlinear_ops_equal_the_ops(cpu_backend, types, rng):
    """prepare_qlinear_conv2d / prepare_qlinear_matmul give the op's result on the short path
    and on the full path (out=, other input shapes), and validate their arguments up front."""
    tx, tw, ty = types
    x, w = _rand(rng, tx, (3, 6, 9, 7)), _rand(rng, tw, (5, 6, 3, 3))
    w_scale, bias = (rng.random(5) * 0.01 + 1e-4).astype(np.float32), rng.normal(0, 20, 5).astype(np.float32)
    args = (0.05, np.iinfo(tx).max, w, w_scale, _rand(rng, tw, 5), 0.3, ty(7), bias, 1, ((1, 0), (2, 1)), 1, 1)
    conv = lk.prepare_qlinear_conv2d(*args, activation="relu", x_dtype=tx)
    want = lk.qlinear_conv2d(x, *args, activation="relu")
    np.testing.assert_array_equal(conv(x), want)
    np.testing.assert_array_equal(conv(x[:1]), want[:1])
    np.testing.assert_array_equal(conv(x[:, :, :5]), lk.qlinear_conv2d(x[:, :, :5], *args, activation="relu"))
    out = np.empty_like(want)
    assert conv(x, out=out) is out and np.array_equal(out, want)
    a, b = _rand(rng, tx, (7, 33)), _rand(rng, tw, (33, 4))
    margs = (0.05, 3 if tx == np.uint8 else -3, b, (rng.random(4) * 0.01 + 1e-4).astype(np.float32), 0, 0.2, ty(1))
    mm = lk.prepare_qlinear_matmul(*margs, bias=np.arange(4, dtype=np.int32), a_dtype=tx)
    np.testing.assert_array_equal(mm(a), lk.qlinear_matmul(a, *margs, bias=np.arange(4, dtype=np.int32)))
    np.testing.assert_array_equal(mm(a[:0]), np.empty((0, 4), ty))
    with pytest.raises(TypeError, match="x"):
        conv(x.astype(np.float32))  # the full op names the bad argument
    with pytest.raises(ValueError, match="inner dimensions"):
        mm(a[:, :5])


@pytest.mark.parametrize("call,exc,words", [
    (lambda w: lk.prepare_qlinear_conv2d(0.0, 0, w, 1.0, 0, 1.0, 0), ValueError, ("x_scale",)),
    (lambda w: lk.prepare_qlinear_conv2d(1.0, 0, w, np.ones(3), 0, 1.0, 0), ValueError, ("w_scale", "4 entries")),
    (lambda w: lk.prepare_qlinear_conv2d(1.0, 0, w, 1.0, 0, 1.0, 0, stride=0), ValueError, ("stride",)),
    (lambda w: lk.prepare_qlinear_conv2d(1.0, 0, w, 1.0, 0, 1.0, 0, x_dtype=np.int16), TypeError, ("x_dtype",)),
    (lambda w: lk.prepare_qlinear_conv2d(1.0, 0, w.astype(np.float32), 1.0, 0, 1.0, 0), TypeError, ("w",)),
    (lambda w: lk.prepare_qlinear_matmul(1.0, 0, w[:, :, 0, 0], 1.0, 0, 1.0, 300), ValueError, ("y_zero_point",)),
])
def test_prepare_qlinear_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call(np.ones((4, 2, 3, 3), np.int8))
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.parametrize("types", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)])
def test_conv2d_integer_extremes_exact(cpu_backend, types):
    """Every operand at its extreme (a 16-bit intermediate would overflow many times over),
    zero points at the other extreme, padding (x_zp) everywhere at the border."""
    tx, tw = types
    xi, wi = np.iinfo(tx), np.iinfo(tw)
    for x_fill, w_fill, x_zp, w_zp in ((xi.max, wi.min, xi.min, wi.max), (xi.min, wi.min, xi.max, wi.max)):
        x = np.full((2, 64, 6, 6), x_fill, tx)
        w = np.full((8, 64, 3, 3), w_fill, tw)
        got = lk.conv2d_integer(x, w, x_zp, w_zp, 1, 1)
        np.testing.assert_array_equal(got, ref.conv2d_integer(x, w, x_zp, w_zp, 1, 1))
        assert abs(int(got[0, 0, 3, 3])) > 2 ** 16  # the interior really is that large
        y = lk.qlinear_conv2d(x, 0.5, x_zp, w, 0.5, w_zp, 1.0, np.uint8(9), padding=1)
        np.testing.assert_array_equal(y, ref.qlinear_conv2d(x, 0.5, x_zp, w, 0.5, w_zp, 1.0, np.uint8(9), padding=1))


def test_max_pool2d_2x2_flat_float_ties_keep_the_first_tap():
    """The flat 2x2 float32 path takes the taps in row-major order: 0.0 against -0.0 keeps the
    first, as the reference (the separable paths of other geometries and ISAs compare rows
    first, so only values, not the sign of a zero, are specified there)."""
    if lk.backends()["cpu"]["native"] != "available":
        pytest.skip("native backend not built")
    from lepton_kernels import _lepton_cpu

    if _lepton_cpu.detected_isa() != "avx512":
        pytest.skip("the flat 2x2 path is the AVX-512 one")
    lk.use_backend("native")
    try:
        for window in ([[-1.0, -0.0], [0.0, -5.0]], [[0.0, -1.0], [-0.0, -5.0]], [[-0.0, 0.0], [0.0, 0.0]]):
            x = np.tile(np.array(window, np.float32), (3, 2, 4, 8))  # (3, 2, 8, 16): every window the same
            got, want = lk.max_pool2d(x, 2), ref.max_pool2d(x, 2).astype(np.float32)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    finally:
        lk.use_backend(None)


def _raised(call):
    """(exception type, message) of a call expected to fail."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("op", ["conv2d_integer", "qlinear_conv2d"])
def test_conv_geometry_remembered_only_for_values_that_validate_alike(op, rng):
    """The int8 convolutions remember the parsed geometry of plain int/str/tuple arguments: a
    geometry computed once must neither let a look-alike through (True == 1, 1.0 == 1 as dict
    keys) nor stop an error from repeating, nor depend on the batch size."""
    x = rng.integers(0, 256, (2, 4, 9, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)

    def call(xx, *geometry):
        if op == "conv2d_integer":
            return lk.conv2d_integer(xx, w, 128, 0, *geometry)
        return lk.qlinear_conv2d(xx, 0.5, 128, w, 0.25, 0, 1.0, 128, None, *geometry)

    def expected(xx, *geometry):
        if op == "conv2d_integer":
            return ref.conv2d_integer(xx, w, 128, 0, *geometry)
        return ref.qlinear_conv2d(xx, 0.5, 128, w, 0.25, 0, 1.0, 128, None, *geometry)

    good = [(1, 1, 1, 2), ((2, 1), 0, (1, 2), 2), (1, "same", 1, 2), (1, ((1, 0), (2, 1)), 1, 2)]
    for geometry in good:
        for xx in (x, x[:1], x[:0]):  # same cached entry whatever the batch
            np.testing.assert_array_equal(call(xx, *geometry), expected(xx, *geometry))
    look_alikes = [(True, 1, 1, 2), (1.0, 1, 1, 2), (1, 1.0, 1, 2), (1, 1, (1, True), 2), (1, 1, 1, 2.0),
                   (1, 1, 1, True), ((1, 2.0), 0, (1, 2), 2), (1, ((1, 0), (2, 1.0)), 1, 2)]
    for geometry in look_alikes:
        first = _raised(lambda: call(x, *geometry))
        assert _raised(lambda: call(x, *geometry)) == first
    np.testing.assert_array_equal(call(x, np.int64(1), np.int64(1), 1, 2), expected(x, 1, 1, 1, 2))
    np.testing.assert_array_equal(call(x, [1, 1], [1, 1], [1], 2), expected(x, 1, 1, 1, 2))
    for geometry in [(1, 1, 1, 3), (0, 1, 1, 2), (1, "full", 1, 2), (1, 0, 9, 2)]:  # errors repeat every time
        assert _raised(lambda: call(x, *geometry)) == _raised(lambda: call(x, *geometry))


def test_int8_scalar_parameters_take_the_same_path_as_arrays(rng):
    """Per-tensor zero points and scales given as Python numbers (the fast path), NumPy scalars
    and 0-d arrays give the same result; a 1-element 1-D zero point is per-tensor too (ONNX, see
    test_onnx_one_element_tensors_are_per_tensor), while longer or 2-D ones are errors."""
    x = rng.integers(0, 256, (2, 3, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    want = lk.conv2d_integer(x, w, np.array(130), np.array(-3), 1, 1)
    for x_zp, w_zp in ((130, -3), (np.uint8(130), np.int8(-3)), (np.int64(130), np.full(4, -3, np.int32))):
        np.testing.assert_array_equal(lk.conv2d_integer(x, w, x_zp, w_zp, 1, 1), want)
    np.testing.assert_array_equal(lk.conv2d_integer(x, w, np.array([130]), np.array([-3], np.int8), 1, 1), want)
    for bad in (np.array([130, 130]), np.array([[130]])):
        with pytest.raises(ValueError, match="x_zero_point"):
            lk.conv2d_integer(x, w, bad, 0)
    want_q = ref.qlinear_conv2d(x, 0.02, 130, w, 0.004, 0, 0.5, np.uint8(7), None, 1, 1)
    for w_scale in (0.004, np.float64(0.004), np.array(0.004), np.full(4, 0.004), np.full(4, 0.004, np.float32)):
        np.testing.assert_array_equal(lk.qlinear_conv2d(x, 0.02, 130, w, w_scale, 0, 0.5, np.uint8(7), None, 1, 1),
                                      want_q)
    for bad in (0.0, -0.004, np.nan, np.inf, 1e300, np.array([0.1, 0.1, np.nan, 0.1]), np.full(40, -1.0)[:4]):
        with pytest.raises(ValueError, match="w_scale"), np.errstate(over="ignore"):  # 1e300 -> float32 inf
            lk.qlinear_conv2d(x, 0.02, 130, w, bad, 0, 0.5, 7)
    with pytest.raises(ValueError, match="w_scale"):  # the vectorized check of longer vectors
        lk.qlinear_conv2d(x, 0.02, 130, np.zeros((40, 3, 1, 1), np.int8), np.r_[np.ones(39), np.inf], 0, 0.5, 7)


def test_large_int8_results_start_on_a_cache_line(rng):
    """Results of 1 MiB or more are 64-byte aligned (a kernel's vector stores never split a line),
    writable, C-contiguous and exactly the reference's values; small ones are plain arrays."""
    x = rng.integers(0, 256, (8, 3, 32, 32)).astype(np.uint8)
    w = rng.integers(-128, 128, (32, 3, 3, 3)).astype(np.int8)
    for _ in range(4):  # whatever malloc hands out
        y = lk.conv2d_integer(x, w, 128, None, 1, 1)
        assert y.nbytes >= 1 << 20 and y.ctypes.data % 64 == 0
        assert y.flags.c_contiguous and y.flags.writeable and y.dtype == np.int32 and y.shape == (8, 32, 32, 32)
        np.testing.assert_array_equal(y, ref.conv2d_integer(x, w, 128, None, 1, 1))
        q = lk.quantize(rng.standard_normal((1 << 20) + 3).astype(np.float32), 0.05, 3, dtype=np.uint8)
        assert q.ctypes.data % 64 == 0 and q.shape == ((1 << 20) + 3,) and q.dtype == np.uint8
    small = lk.conv2d_integer(x[:1, :, :4, :4], w, 128, None, 1, 1)
    assert small.base is None and small.shape == (1, 32, 4, 4)


def test_onnx_one_element_tensors_are_per_tensor(cpu_backend, rng):
    """ONNX gives per-tensor scales and zero points as 1-D tensors of one element (shape (1,)); they
    mean the same as scalars. Inputs and outputs of the ONNX backend node tests test_matmulinteger
    and test_qlinearmatmul_2D (onnx/backend/test/case/node/), which were refused."""
    a = np.array([[11, 7, 3], [10, 6, 2], [9, 5, 1], [8, 4, 0]], np.uint8)
    b = np.array([[1, 4], [2, 5], [3, 6]], np.uint8)
    np.testing.assert_array_equal(lk.matmul_integer(a, b, np.array([12], np.uint8), np.array([0], np.uint8)),
                                  np.array([[-38, -83], [-44, -98], [-50, -113], [-56, -128]], np.int32))
    a = np.array([[208, 236, 0, 238], [3, 214, 255, 29]], np.uint8)
    b = np.array([[152, 51, 244], [60, 26, 255], [0, 127, 246], [127, 254, 247]], np.uint8)
    one = lambda v, t: np.array([v], t)  # noqa: E731
    y = lk.qlinear_matmul(a, one(0.0066, np.float32), one(113, np.uint8), b, one(0.00705, np.float32),
                          one(114, np.uint8), one(0.0107, np.float32), one(118, np.uint8))
    np.testing.assert_array_equal(y, np.array([[168, 115, 255], [1, 66, 151]], np.uint8))
    assert y.dtype == np.uint8

    # ConvInteger / QLinearConv / QuantizeLinear / DequantizeLinear: (1,) gives the scalar's result
    x = rng.integers(0, 256, (2, 3, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    np.testing.assert_array_equal(lk.conv2d_integer(x, w, one(130, np.uint8), one(-3, np.int8), 1, 1),
                                  lk.conv2d_integer(x, w, 130, -3, 1, 1))
    np.testing.assert_array_equal(
        lk.qlinear_conv2d(x, one(0.02, np.float32), one(130, np.uint8), w, one(0.004, np.float32), one(0, np.int8),
                          one(0.5, np.float32), one(7, np.uint8), None, 1, 1),
        lk.qlinear_conv2d(x, 0.02, 130, w, 0.004, 0, 0.5, np.uint8(7), None, 1, 1))
    f = rng.standard_normal((2, 4, 3)).astype(np.float32)
    for axis in (None, 1):  # ONNX ignores the axis for a per-tensor (one-element) scale
        q = lk.quantize(f, one(0.05, np.float32), one(3, np.int8), axis=axis)
        np.testing.assert_array_equal(q, lk.quantize(f, 0.05, 3))
        np.testing.assert_array_equal(lk.dequantize(q, one(0.05, np.float32), one(3, np.int8), axis=axis),
                                      lk.dequantize(q, 0.05, 3))
