"""The Numba conv/linear kernels (CPU njit and numba.cuda) called directly
through the kernel interface of ``lepton_kernels._backend`` (outputs allocated
here), against the float64 spec ``lepton_kernels.reference``.

float32 tolerances scale with each output's reduction length; float64 is
tight. The numba.cuda tests run only under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before numba.cuda is first imported), on tiny
shapes because the simulator runs every thread as a Python thread.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("numba")

import lepton_kernels as lk  # noqa: E402
from lepton_kernels import numba_backend as nbcpu  # noqa: E402
from lepton_kernels import reference as REF  # noqa: E402
from lepton_kernels._backend import ConvParams  # noqa: E402

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
DTYPES = (np.float32, np.float64)


def tol(dtype, length):
    """Tolerance for sums of ``length`` products of O(1) values."""
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-6 * max(length, 1))
    return dict(rtol=1e-12, atol=1e-13 * max(length, 1))


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def close(got, want, dtype, length, what):
    np.testing.assert_allclose(got, want, err_msg=what, **tol(dtype, length))


# ------------------------------------------------------------------ geometry

def out_size(size, k, s, before, after, d):
    return (size + before + after - d * (k - 1) - 1) // s + 1


class Case:
    """x (n, c, h, w), weight (o, c/groups, kh, kw), stride, (t, b, l, r) pads, dilation, groups."""

    def __init__(self, x, w, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), groups=1):
        self.x, self.w, self.stride, self.pads, self.dil, self.groups = x, w, stride, pads, dil, groups
        t, b, l, r = pads
        self.out = (x[0], w[0], out_size(x[2], w[2], stride[0], t, b, dil[0]),
                    out_size(x[3], w[3], stride[1], l, r, dil[1]))
        self.params = ConvParams(stride[0], stride[1], t, b, l, r, dil[0], dil[1], groups)

    def ref_args(self):
        t, b, l, r = self.pads
        return self.stride, ((t, b), (l, r)), self.dil, self.groups

    def lengths(self):
        """Reduction lengths of (forward, grad_x, grad_w, grad_b)."""
        o, cg, kh, kw = self.w
        n, _, oh, ow = self.out
        return cg * kh * kw, (o // self.groups) * kh * kw, n * oh * ow, n * oh * ow

    def __repr__(self):
        return f"x{self.x}-w{self.w}-s{self.stride}-p{self.pads}-d{self.dil}-g{self.groups}"


CONV_CASES = [
    Case((1, 1, 7, 7), (1, 1, 3, 3)),  # batch 1, one channel
    Case((2, 3, 11, 13), (5, 3, 3, 3), pads=(1, 1, 1, 1)),  # primes, "same"-like
    Case((3, 4, 13, 17), (6, 2, 3, 5), (2, 1), (1, 3, 0, 2), (2, 1), 2),  # groups, asymmetric
    Case((2, 5, 9, 10), (5, 1, 3, 3), (3, 3), (2, 2, 2, 2), groups=5),  # depthwise, stride 3
    Case((1, 3, 8, 7), (6, 1, 2, 2), (1, 2), groups=3),  # depthwise, multiplier 2, even kernel
    Case((2, 2, 5, 4), (3, 2, 3, 3), (2, 3), (4, 5, 3, 6)),  # padding beyond the kernel
    Case((1, 3, 12, 11), (4, 3, 3, 3), pads=(2, 2, 2, 2), dil=(2, 2)),  # dilation 2
    Case((2, 8, 5, 7), (16, 8, 1, 1)),  # 1x1
    Case((1, 2, 3, 4), (3, 2, 5, 6), pads=(1, 1, 1, 1)),  # kernel == padded input: 1x1 output
    Case((2, 6, 17, 19), (9, 2, 3, 2), (3, 3), (0, 1, 2, 0), (2, 2), 3),  # stride 3, dil 2, groups 3
    Case((3, 1, 28, 28), (6, 1, 5, 5)),  # LeNet conv1
    Case((2, 3, 9, 300), (4, 3, 2, 3), (1, 1), (0, 1, 1, 0)),  # wide rows (longer than a vector)
]


def conv_inputs(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rand(rng, case.x, dtype), rand(rng, case.w, dtype), rand(rng, (case.w[0],), dtype),
            rand(rng, case.out, dtype))


def run_conv(backend, case, x, w, bias, relu, alloc=np.empty, to_host=np.asarray, to_dev=np.asarray):
    out = alloc(case.out, x.dtype)
    backend.conv2d(to_dev(x), to_dev(w), None if bias is None else to_dev(bias), out, case.params, relu)
    return to_host(out)


def run_conv_backward(backend, case, g, x, w, y, wants, alloc=np.empty, to_host=np.asarray,
                      to_dev=np.asarray):
    shapes = (case.x, case.w, (case.w[0],))
    grads = [alloc(s, x.dtype) if want else None for s, want in zip(shapes, wants)]
    backend.conv2d_backward(to_dev(g), to_dev(x), to_dev(w), None if y is None else to_dev(y),
                            *grads, case.params)
    return [None if a is None else to_host(a) for a in grads]


def check_conv_backward(got, case, g, x, w, y, wants, dtype):
    ref = REF.conv2d_backward(g, x, w, *case.ref_args(), activation=None if y is None else "relu",
                              output=y)
    for name, a, r, want, length in zip(("grad_x", "grad_w", "grad_b"), got, ref, wants,
                                        case.lengths()[1:]):
        if not want:
            assert a is None
            continue
        close(a, r, dtype, length, f"{name} {case}")


# ------------------------------------------------------------------ CPU conv2d

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias,relu", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("case", CONV_CASES, ids=repr)
def test_cpu_conv2d(case, with_bias, relu, dtype):
    x, w, bias, _ = conv_inputs(case, dtype)
    bias = bias if with_bias else None
    got = run_conv(nbcpu, case, x, w, bias, relu)
    want = REF.conv2d(x, w, bias, *case.ref_args(), activation="relu" if relu else None)
    assert got.dtype == dtype and got.shape == want.shape
    close(got, want, dtype, case.lengths()[0], str(case))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=repr)
def test_cpu_conv2d_backward(case, with_y, dtype):
    x, w, bias, g = conv_inputs(case, dtype)
    y = run_conv(nbcpu, case, x, w, bias, True) if with_y else None
    wants = (True, True, True)
    got = run_conv_backward(nbcpu, case, g, x, w, y, wants)
    check_conv_backward(got, case, g, x, w, y, wants, dtype)


@pytest.mark.parametrize("wants", [(True, False, False), (False, True, False), (False, False, True),
                                   (False, True, True), (True, False, True)])
@pytest.mark.parametrize("case", [CONV_CASES[2], CONV_CASES[3], CONV_CASES[5]], ids=repr)
def test_cpu_conv2d_backward_partial(case, wants):
    dtype = np.float64
    x, w, bias, g = conv_inputs(case, dtype, seed=1)
    y = run_conv(nbcpu, case, x, w, bias, True)
    got = run_conv_backward(nbcpu, case, g, x, w, y, wants)
    check_conv_backward(got, case, g, x, w, y, wants, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_conv2d_nan_propagates(dtype):
    case = CONV_CASES[1]
    x, w, bias, g = conv_inputs(case, dtype, seed=2)
    x[0, 1, 4, 5] = np.nan
    x[1, 0, 0, 0] = np.inf
    y = run_conv(nbcpu, case, x, w, bias, True)
    want = REF.conv2d(x, w, bias, *case.ref_args(), activation="relu")
    assert np.isnan(y).sum() == np.isnan(want).sum() > 0
    close(y, want, dtype, case.lengths()[0], "NaN forward")
    # A NaN forward output passes its gradient (the mask is y <= 0).
    finite = np.where(np.isfinite(x), x, 0).astype(dtype)
    got = run_conv_backward(nbcpu, case, g, finite, w, y, (True, True, True))
    check_conv_backward(got, case, g, finite, w, y, (True, True, True), dtype)


def _with_threads(n, fn):
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_deterministic(dtype):
    """Bit-identical run to run and for any thread count (fixed-order reductions)."""
    case = Case((8, 6, 15, 14), (8, 3, 3, 3), (1, 2), (1, 1, 2, 0), groups=2)
    x, w, bias, g = conv_inputs(case, dtype, seed=3)
    rng = np.random.default_rng(4)
    a, b, gl = rand(rng, (37, 91), dtype), rand(rng, (53, 91), dtype), rand(rng, (37, 53), dtype)

    def run():
        y = run_conv(nbcpu, case, x, w, bias, True)
        grads = run_conv_backward(nbcpu, case, g, x, w, y, (True, True, True))
        yl = np.empty((37, 53), dtype)
        nbcpu.linear(a, b, b[:, 0].copy(), yl, True)
        lg = [np.empty((37, 91), dtype), np.empty((53, 91), dtype), np.empty(53, dtype)]
        nbcpu.linear_backward(gl, a, b, yl, *lg)
        return [y, *grads, yl, *lg]

    first = run()
    for again in (run(), _with_threads(1, run)):
        for p, q in zip(first, again):
            np.testing.assert_array_equal(p, q)


# ------------------------------------------------------------------ CPU matmul / linear

MNK = [(1, 1, 1), (3, 7, 5), (13, 17, 300), (5, 1, 257), (64, 400, 120), (29, 3, 31)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", MNK)
def test_cpu_matmul(m, k, n, dtype):
    rng = np.random.default_rng(5)
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    out = np.full((m, n), np.nan, dtype)
    nbcpu.matmul(a, b, out)
    close(out, REF.matmul(a, b), dtype, k, "matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias,relu", [(False, False), (True, True), (True, False), (False, True)])
@pytest.mark.parametrize("m,k,n", MNK)
def test_cpu_linear(m, k, n, with_bias, relu, dtype):
    rng = np.random.default_rng(6)
    x, w, bias = rand(rng, (m, k), dtype), rand(rng, (n, k), dtype), rand(rng, (n,), dtype)
    bias = bias if with_bias else None
    out = np.full((m, n), np.nan, dtype)
    nbcpu.linear(x, w, bias, out, relu)
    close(out, REF.linear(x, w, bias, activation="relu" if relu else None), dtype, k, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("wants", [(True, True, True), (True, False, False), (False, True, False),
                                   (False, False, True)])
@pytest.mark.parametrize("m,k,n", MNK)
def test_cpu_linear_backward(m, k, n, wants, with_y, dtype):
    rng = np.random.default_rng(7)
    x, w, bias, g = (rand(rng, (m, k), dtype), rand(rng, (n, k), dtype), rand(rng, (n,), dtype),
                     rand(rng, (m, n), dtype))
    y = None
    if with_y:
        y = np.empty((m, n), dtype)
        nbcpu.linear(x, w, bias, y, True)
        y.flat[0] = np.nan  # a NaN output passes its gradient
    grads = [np.full(s, np.nan, dtype) if want else None for s, want in zip(((m, k), (n, k), (n,)), wants)]
    nbcpu.linear_backward(g, x, w, y, *grads)
    ref = REF.linear_backward(g, x, w, activation="relu" if with_y else None, output=y)
    for name, a, r, want, length in zip(("grad_x", "grad_w", "grad_b"), grads, ref, wants, (n, m, m)):
        if want:
            close(a, r, dtype, length, name)


# ------------------------------------------------------------------ through the public ops

@pytest.fixture
def numba_ops():
    lk.use_backend("numba")
    yield lk
    lk.use_backend(None)


def test_public_ops_use_numba(numba_ops):
    rng = np.random.default_rng(8)
    x, w = rand(rng, (2, 4, 9, 8), np.float32), rand(rng, (6, 2, 3, 3), np.float32)
    b = rand(rng, (6,), np.float32)
    y = lk.conv2d(x, w, b, stride=1, padding="same", dilation=2, groups=2, activation="relu")
    want = REF.conv2d(x, w, b, 1, "same", 2, 2, activation="relu")
    close(y, want, np.float32, 18, "public conv2d")
    g = rand(rng, y.shape, np.float32)
    got = lk.conv2d_backward(g, x, w, 1, "same", 2, 2, activation="relu", output=y, needs_input_grad=False)
    ref = REF.conv2d_backward(g, x, w, 1, "same", 2, 2, activation="relu", output=y)
    assert got[0] is None
    close(got[1], ref[1], np.float32, 2 * 9 * 8, "public grad_w")
    close(got[2], ref[2], np.float32, 2 * 9 * 8, "public grad_b")

    xl, wl = rand(rng, (2, 3, 10), np.float64), rand(rng, (7, 10), np.float64)
    yl = lk.linear(xl, wl, activation="relu")
    np.testing.assert_allclose(yl, REF.linear(xl, wl, activation="relu"), **tol(np.float64, 10))
    gl = rand(rng, yl.shape, np.float64)
    got = lk.linear_backward(gl, xl, wl, activation="relu", output=yl)
    ref = REF.linear_backward(gl, xl, wl, activation="relu", output=yl)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, **tol(np.float64, 10))
    a, bm = rand(rng, (5, 6), np.float32), rand(rng, (6, 4), np.float32)
    close(lk.matmul(a, bm), REF.matmul(a, bm), np.float32, 6, "public matmul")


# ------------------------------------------------------------------ numba.cuda (simulator)

@pytest.fixture(scope="module")
def cu():
    if not SIM:
        pytest.skip("numba.cuda conv/linear: run with NUMBA_ENABLE_CUDASIM=1 for the simulator")
    from lepton_kernels.numba_backend import cuda as backend

    assert backend.unavailable_reason() is None
    return backend


def dev(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def dev_nan(shape, dtype):
    return dev(np.full(shape, np.nan, dtype))


def host(a):
    return a.copy_to_host()


CUDA_CASES = [
    Case((1, 2, 4, 5), (3, 2, 2, 3), pads=(1, 0, 1, 1)),
    Case((2, 4, 5, 5), (4, 2, 3, 2), (2, 1), (1, 2, 0, 1), (1, 2), 2),  # groups, stride, dilation
    Case((1, 3, 4, 4), (3, 1, 3, 3), (1, 1), (1, 1, 1, 1), groups=3),  # depthwise
    Case((1, 2, 3, 3), (2, 2, 2, 2), (3, 2), (3, 2, 0, 4)),  # large padding, stride 3
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CUDA_CASES, ids=repr)
def test_cuda_conv2d(cu, case, dtype):
    x, w, bias, g = conv_inputs(case, dtype, seed=9)
    io = dict(alloc=dev_nan, to_host=host, to_dev=dev)
    y = run_conv(cu, case, x, w, bias, True, **io)
    close(y, REF.conv2d(x, w, bias, *case.ref_args(), activation="relu"), dtype, case.lengths()[0], "fwd")
    y0 = run_conv(cu, case, x, w, None, False, **io)
    close(y0, REF.conv2d(x, w, None, *case.ref_args()), dtype, case.lengths()[0], "fwd no bias")
    got = run_conv_backward(cu, case, g, x, w, y, (True, True, True), **io)
    check_conv_backward(got, case, g, x, w, y, (True, True, True), dtype)
    wants = (False, True, False) if case.groups > 1 else (True, False, True)
    got = run_conv_backward(cu, case, g, x, w, None, wants, **io)
    check_conv_backward(got, case, g, x, w, None, wants, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_linear_matmul(cu, dtype):
    rng = np.random.default_rng(10)
    m, k, n = 3, 5, 4
    x, w, bias, g = (rand(rng, (m, k), dtype), rand(rng, (n, k), dtype), rand(rng, (n,), dtype),
                     rand(rng, (m, n), dtype))
    out = dev_nan((m, n), dtype)
    cu.matmul(dev(x), dev(w.T), out)
    close(host(out), REF.matmul(x, w.T), dtype, k, "matmul")
    cu.linear(dev(x), dev(w), None, out, False)
    close(host(out), REF.linear(x, w), dtype, k, "linear")
    cu.linear(dev(x), dev(w), dev(bias), out, True)
    y = host(out)
    close(y, REF.linear(x, w, bias, activation="relu"), dtype, k, "linear relu")
    for yy in (y, None):
        grads = [dev_nan(s, dtype) for s in ((m, k), (n, k), (n,))]
        cu.linear_backward(dev(g), dev(x), dev(w), None if yy is None else dev(yy), *grads)
        ref = REF.linear_backward(g, x, w, activation=None if yy is None else "relu", output=yy)
        for name, a, r, length in zip(("grad_x", "grad_w", "grad_b"), grads, ref, (n, m, m)):
            close(host(a), r, dtype, length, name)
    gw = dev_nan((n, k), dtype)
    cu.linear_backward(dev(g), dev(x), dev(w), dev(y), None, gw, None)
    close(host(gw), REF.linear_backward(g, x, w, activation="relu", output=y)[1], dtype, m, "grad_w only")


def test_cuda_deterministic(cu):
    case = CUDA_CASES[1]
    x, w, bias, g = conv_inputs(case, np.float32, seed=11)
    io = dict(alloc=dev_nan, to_host=host, to_dev=dev)
    runs = [run_conv_backward(cu, case, g, x, w, None, (True, True, True), **io) for _ in range(2)]
    for p, q in zip(*runs):
        np.testing.assert_array_equal(p, q)
