"""matmul / linear / linear_backward on every CPU backend vs the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_reduction_close

DTYPES = [np.float32, np.float64]
# Around register tiles (8/16/32/48 columns, 6/8/12/14 rows), cache blocks, primes and the LeNet layers.
SIZES = [(1, 1, 1), (2, 3, 5), (7, 8, 9), (12, 16, 17), (13, 31, 33), (15, 47, 48), (16, 49, 64),
         (64, 400, 120), (64, 120, 84), (33, 257, 95), (97, 127, 129), (128, 256, 96), (1, 300, 7),
         (200, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", SIZES)
def test_matmul_matches_reference(cpu_backend, m, k, n, dtype, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = lk.matmul(a, b)
    assert_reduction_close(c, ref.matmul(a, b), np.abs(a) @ np.abs(b), k, dtype, what="matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("m,k,n", SIZES)
def test_linear_forward_and_backward(cpu_backend, m, k, n, relu, dtype, rng):
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    act = "relu" if relu else None
    y = lk.linear(x, w, b, activation=act)
    magnitude = np.abs(x) @ np.abs(w).T + np.abs(b)
    assert_reduction_close(y, ref.linear(x, w, b, activation=act), magnitude, k, dtype, what="linear")
    g = rng.standard_normal(y.shape).astype(dtype)
    output = y if relu else None
    got = lk.linear_backward(g, x, w, activation=act, output=output)
    want = ref.linear_backward(g, x, w, activation=act, output=output)
    mags = ref.linear_backward(np.abs(g), np.abs(x), np.abs(w))
    for name, a, e, mg, red in zip(("grad_x", "grad_w", "grad_b"), got, want, mags, (n, m, m)):
        assert_reduction_close(a, e, mg, red, dtype, what=name)


def test_linear_batch_dims_and_flags(cpu_backend, rng):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    y = lk.linear(x, w)
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y, ref.linear(x, w), rtol=1e-5, atol=1e-5)
    gx, gw, gb = lk.linear_backward(np.ones_like(y), x, w, needs_input_grad=False, needs_bias_grad=False)
    assert gx is None and gb is None and gw.shape == (4, 5)
    np.testing.assert_allclose(gw, ref.linear_backward(np.ones_like(y), x, w)[1], rtol=1e-5, atol=1e-5)
    assert lk.linear(x[:0], w).shape == (0, 3, 4)
    gx0, gw0, gb0 = lk.linear_backward(np.ones((0, 4), np.float32), x[0, :0], w)
    assert gx0.shape == (0, 5) and not gw0.any() and not gb0.any()


def test_linear_nan_propagates(cpu_backend):
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    y = lk.linear(x, np.ones((5, 4), np.float32), np.zeros(5, np.float32), activation="relu")
    assert np.isnan(y[1]).all() and not np.isnan(y[[0, 2]]).any()


def test_linear_backward_is_deterministic(fast_cpu_backend, rng):
    x = rng.standard_normal((256, 300)).astype(np.float32)
    w = rng.standard_normal((120, 300)).astype(np.float32)
    g = rng.standard_normal((256, 120)).astype(np.float32)
    first = lk.linear_backward(g, x, w)
    for a, b in zip(first, lk.linear_backward(g, x, w)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: lk.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32)), ValueError, ("matmul", "inner")),
    (lambda: lk.matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32)), ValueError, ("matmul", "a", "2-D")),
    (lambda: lk.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)), TypeError, ("b", "dtype")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32)), ValueError, ("linear", "features")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(3, np.float32)),
     ValueError, ("bias", "(4,)")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), activation="tanh"),
     ValueError, ("activation",)),
    (lambda: lk.linear_backward(np.ones((2, 5), np.float32), np.ones((2, 3), np.float32),
                                np.ones((4, 3), np.float32)), ValueError, ("grad_out", "(2, 4)")),
])
def test_linear_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
