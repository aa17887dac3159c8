"""conv2d / conv2d_backward on every CPU backend vs the float64 reference (and torch)."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_reduction_close

DTYPES = [np.float32, np.float64]

# (x shape, C_out, kernel, stride, padding, dilation, groups)
CASES = [
    ((2, 1, 28, 28), 6, 5, 1, 0, 1, 1),          # LeNet conv1 (small batch)
    ((2, 6, 14, 14), 16, 5, 1, 0, 1, 1),         # LeNet conv2
    ((2, 3, 32, 32), 32, 3, 1, 1, 1, 1),         # CIFAR conv1
    ((2, 32, 16, 16), 64, 3, 1, 1, 1, 1),
    ((1, 64, 8, 8), 64, 3, 1, 1, 1, 1),
    ((1, 64, 12, 12), 32, 1, 1, 0, 1, 1),        # 1x1 as a GEMM
    ((2, 32, 15, 15), 64, 3, 2, 1, 1, 1),        # stride 2
    ((1, 3, 7, 11), 5, 3, 3, 2, 1, 1),           # stride 3, padding > kernel/2
    ((2, 4, 13, 17), 6, 3, 1, 2, 2, 1),          # dilation 2
    ((1, 8, 9, 9), 8, 3, 1, 1, 1, 8),            # depthwise
    ((1, 8, 10, 9), 16, 3, 1, 1, 1, 2),          # groups
    ((1, 6, 9, 9), 12, (2, 3), (1, 2), ((0, 2), (1, 0)), 1, 3),  # asymmetric everything
    ((1, 2, 5, 5), 3, 5, 1, "same", 1, 1),
    ((1, 2, 6, 5), 3, (4, 2), 1, "same", (1, 2), 1),
    ((1, 3, 5, 6), 2, 3, 1, "valid", 1, 1),
    ((1, 1, 1, 1), 1, 1, 1, 0, 1, 1),
    ((3, 2, 4, 4), 3, 4, 1, 0, 1, 1),            # kernel covers the whole input
    ((1, 17, 7, 31), 19, 3, 1, 1, 1, 1),         # primes
    ((1, 5, 3, 3), 7, 5, 1, 3, 1, 1),            # kernel larger than the input, padded
]


def _ids(case):
    shape, co, k, s, p, d, g = case
    return f"{shape}-o{co}-k{k}-s{s}-p{p}-d{d}-g{g}"


def _make(case, dtype, rng):
    shape, co, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((co, shape[1] // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    return x, w, b, (s, p, d, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv2d_forward_matches_reference(cpu_backend, case, relu, dtype, rng):
    x, w, b, geo = _make(case, dtype, rng)
    x_before, w_before = x.copy(), w.copy()
    act = "relu" if relu else None
    y = lk.conv2d(x, w, b, *geo, activation=act)
    expected = ref.conv2d(x, w, b, *geo, activation=act)
    magnitude = ref.conv2d(np.abs(x), np.abs(w), np.abs(b), *geo)
    reduction = w.shape[1] * w.shape[2] * w.shape[3]
    assert y.dtype == dtype
    assert_reduction_close(y, expected, magnitude, reduction, dtype, what="conv2d")
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)
    y_nobias = lk.conv2d(x, w, None, *geo)
    assert_reduction_close(y_nobias, ref.conv2d(x, w, None, *geo), magnitude, reduction, dtype, what="no bias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv2d_backward_matches_reference(cpu_backend, case, relu, dtype, rng):
    x, w, b, geo = _make(case, dtype, rng)
    act = "relu" if relu else None
    y = lk.conv2d(x, w, b, *geo, activation=act)
    g = rng.standard_normal(y.shape).astype(dtype)
    output = y if relu else None
    gx, gw, gb = lk.conv2d_backward(g, x, w, *geo, activation=act, output=output)
    rx, rw, rb = ref.conv2d_backward(g, x, w, *geo, activation=act, output=output)
    ax, aw, ab = ref.conv2d_backward(np.abs(g), np.abs(x), np.abs(w), *geo)
    n, co, oh, ow = y.shape
    assert_reduction_close(gx, rx, ax, co // geo[3] * w.shape[2] * w.shape[3], dtype, what="grad_x")
    assert_reduction_close(gw, rw, aw, n * oh * ow, dtype, what="grad_w")
    assert_reduction_close(gb, rb, ab, n * oh * ow, dtype, what="grad_b")
    only_w = lk.conv2d_backward(g, x, w, *geo, needs_input_grad=False, needs_bias_grad=False)
    assert only_w[0] is None and only_w[2] is None
    assert_reduction_close(only_w[1], ref.conv2d_backward(g, x, w, *geo)[1], aw, n * oh * ow, dtype)


def test_conv2d_backward_is_deterministic(fast_cpu_backend, rng):
    x, w, b, geo = _make(((8, 16, 12, 12), 32, 3, 1, 1, 1, 1), np.float32, rng)
    y = lk.conv2d(x, w, b, *geo, activation="relu")
    g = rng.standard_normal(y.shape).astype(np.float32)
    first = lk.conv2d_backward(g, x, w, *geo, activation="relu", output=y)
    for _ in range(2):
        again = lk.conv2d_backward(g, x, w, *geo, activation="relu", output=y)
        for a, b_ in zip(first, again):
            np.testing.assert_array_equal(a, b_)


def test_conv2d_gradients_by_finite_differences(cpu_backend, rng):
    x, w, b, geo = _make(((2, 4, 5, 6), 4, 3, 2, ((1, 0), (0, 2)), 1, 2), np.float64, rng)
    g = rng.standard_normal(lk.conv2d(x, w, b, *geo).shape)
    gx, gw, gb = lk.conv2d_backward(g, x, w, *geo)

    def numeric(f, v):
        out, flat = np.zeros_like(v), v.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + 1e-6
            up = np.sum(f() * g)
            flat[i] = keep - 1e-6
            down = np.sum(f() * g)
            flat[i] = keep
            out.reshape(-1)[i] = (up - down) / 2e-6
        return out

    forward = lambda: lk.conv2d(x, w, b, *geo)  # noqa: E731
    np.testing.assert_allclose(gx, numeric(forward, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric(forward, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric(forward, b), rtol=1e-6, atol=1e-7)


def test_conv2d_nan_propagates_and_batch_edges(cpu_backend, rng):
    x, w, b, geo = _make(((2, 3, 8, 8), 4, 3, 1, 1, 1, 1), np.float32, rng)
    x[1, 2, 4, 4] = np.nan
    y = lk.conv2d(x, w, b, *geo, activation="relu")
    assert np.isnan(y[1, :, 3:6, 3:6]).all() and not np.isnan(y[0]).any()
    assert not np.isnan(np.delete(y[1].reshape(4, -1), [27, 28, 29, 35, 36, 37, 43, 44, 45], axis=1)).any()
    empty = lk.conv2d(x[:0], w, b, *geo)
    assert empty.shape == (0, 4, 8, 8)
    gx, gw, gb = lk.conv2d_backward(empty, x[:0], w, *geo)
    assert gx.shape == (0, 3, 8, 8) and not gw.any() and not gb.any()


def test_conv2d_out_argument_and_noncontiguous(cpu_backend, rng):
    x, w, b, geo = _make(((2, 6, 9, 9), 4, 3, 1, 1, 1, 1), np.float32, rng)
    out = np.empty((2, 4, 9, 9), np.float32)
    assert lk.conv2d(x, w, b, *geo, out=out) is out
    view = np.asfortranarray(x)
    np.testing.assert_allclose(lk.conv2d(view, w, b, *geo), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,exc,words", [
    (lambda x, w: lk.conv2d(x, w[:, :2]), ValueError, ("conv2d", "input channels")),
    (lambda x, w: lk.conv2d(x, w, groups=2), ValueError, ("groups", "divide")),
    (lambda x, w: lk.conv2d(x, w, np.ones(3, np.float32)), ValueError, ("bias", "(4,)")),
    (lambda x, w: lk.conv2d(x[:, :, :2, :2], w), ValueError, ("kernel", "padded input")),
    (lambda x, w: lk.conv2d(x, w, padding="same", stride=2), ValueError, ("same", "stride")),
    (lambda x, w: lk.conv2d(x, w, padding="full"), ValueError, ("padding",)),
    (lambda x, w: lk.conv2d(x, w, activation="gelu"), ValueError, ("activation", "gelu")),
    (lambda x, w: lk.conv2d(x, w, stride=0), ValueError, ("stride",)),
    (lambda x, w: lk.conv2d(x, w, dilation=(1, 0)), ValueError, ("dilation",)),
    (lambda x, w: lk.conv2d(x, w, padding=-1), ValueError, ("padding",)),
    (lambda x, w: lk.conv2d(x[0], w), ValueError, ("x", "4-D")),
    (lambda x, w: lk.conv2d(x, w[0]), ValueError, ("weight", "4-D")),
    (lambda x, w: lk.conv2d(x, w.astype(np.float64)), TypeError, ("weight", "dtype")),
    (lambda x, w: lk.conv2d(x.astype(np.int32), w), TypeError, ("x", "int32")),
    (lambda x, w: lk.conv2d(x, w, out=np.empty((2, 4, 5, 5), np.float32)), ValueError, ("out", "shape")),
    (lambda x, w: lk.conv2d_backward(np.ones((2, 4, 5, 5), np.float32), x, w), ValueError, ("grad_out",)),
    (lambda x, w: lk.conv2d_backward(np.ones((2, 4, 6, 6), np.float32), x, w, activation="relu"),
     ValueError, ("output",)),
])
def test_conv2d_bad_input(call, exc, words):
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(exc) as info:
        call(x, w)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("case", CASES[:12], ids=_ids)
def test_conv2d_matches_torch(fast_cpu_backend, case, rng):
    x, w, b, (s, p, d, g) = _make(case, np.float32, rng)
    if isinstance(p, tuple) and isinstance(p[0], tuple):
        pytest.skip("torch has no asymmetric padding")
    ty = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                               s, p, d, g))
    np.testing.assert_allclose(lk.conv2d(x, w, b, s, p, d, g, activation="relu"), ty.numpy(), rtol=1e-4,
                               atol=1e-4)
