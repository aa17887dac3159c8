"""relu, relu_backward, bias_relu, bias_relu_backward on every CPU backend vs the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_close

# Below, at, one above and multiples of the SIMD widths (8 fp32 on AVX2, 16 on AVX-512),
# primes, and sizes past the OpenMP threshold.
COUNTS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 97, 1000, 4099, 65537, 300007]
DTYPES = [np.float32, np.float64]
GUARD = 37  # elements of sentinel around out= buffers


def guarded_out(shape, dtype, fill=np.float32(-7.25)):
    """An out= array inside a larger buffer whose borders are sentinels."""
    n = int(np.prod(shape))
    buf = np.full(n + 2 * GUARD, fill, dtype=dtype)
    return buf, buf[GUARD:GUARD + n].reshape(shape)


def assert_guards_intact(buf, fill=np.float32(-7.25)):
    assert np.all(buf[:GUARD] == fill) and np.all(buf[-GUARD:] == fill), "kernel wrote outside out="


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", COUNTS)
def test_relu_matches_reference(cpu_backend, dtype, count, rng):
    if cpu_backend == "reference" and count > 5000:
        pytest.skip("reference backend is slow")
    x = rng.standard_normal(count).astype(dtype)
    x[::5] = 0.0
    x_before = x.copy()
    buf, out = guarded_out(x.shape, dtype)
    result = lk.relu(x, out=out)
    assert result is out
    assert_guards_intact(buf)
    assert_close(out, ref.relu(x), dtype, rtol=0, atol=0, what="relu")
    np.testing.assert_array_equal(x, x_before)
    assert_close(lk.relu(x), ref.relu(x), dtype, rtol=0, atol=0, what="relu (allocated out)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_propagates_nan_and_inf(cpu_backend, dtype):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 2.0] * 5, dtype=dtype)
    y = lk.relu(x)
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == np.inf
    assert_close(y, ref.relu(x), dtype, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_in_place_and_noncontiguous(cpu_backend, dtype, rng):
    x = rng.standard_normal((6, 40)).astype(dtype)
    expected = ref.relu(x)
    view = x[:, ::3]  # non-contiguous input
    assert_close(lk.relu(view), ref.relu(view), dtype, rtol=0, atol=0)
    assert lk.relu(x, out=x) is x
    assert_close(x, expected, dtype, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [1, 15, 16, 17, 1000, 65537])
def test_relu_backward_matches_reference(cpu_backend, dtype, count, rng):
    if cpu_backend == "reference" and count > 5000:
        pytest.skip("reference backend is slow")
    x = rng.standard_normal(count).astype(dtype)
    x[::7] = 0.0
    x[3::11] = np.nan
    g = rng.standard_normal(count).astype(dtype)
    buf, out = guarded_out(x.shape, dtype)
    lk.relu_backward(g, x, out=out)
    assert_guards_intact(buf)
    assert_close(out, ref.relu_backward(g, x), dtype, rtol=0, atol=0, what="relu_backward")


BIAS_SHAPES = [(1, 1), (3, 5), (2, 17), (64, 120), (1, 1, 1, 1), (2, 3, 4, 5), (3, 6, 7, 7),
               (2, 16, 8, 8), (4, 5, 17, 19), (1, 33, 1, 1), (8, 32, 32, 33), (2, 3, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BIAS_SHAPES)
def test_bias_relu_matches_reference(cpu_backend, dtype, shape, rng):
    if cpu_backend == "reference" and np.prod(shape) > 20000:
        pytest.skip("reference backend is slow")
    x = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    x_before, bias_before = x.copy(), bias.copy()
    buf, out = guarded_out(shape, dtype)
    assert lk.bias_relu(x, bias, out=out) is out
    assert_guards_intact(buf)
    assert_close(out, ref.bias_relu(x, bias), dtype, what="bias_relu")
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(bias, bias_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BIAS_SHAPES)
def test_bias_relu_backward_matches_reference(cpu_backend, dtype, shape, rng):
    if cpu_backend == "reference" and np.prod(shape) > 20000:
        pytest.skip("reference backend is slow")
    x = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    y = lk.bias_relu(x, bias)
    g = rng.standard_normal(shape).astype(dtype)
    grad_x, grad_b = lk.bias_relu_backward(g, y)
    ref_x, ref_b = ref.bias_relu_backward(g, y)
    assert_close(grad_x, ref_x, dtype, rtol=0, atol=0, what="grad_x")
    reduction = int(np.prod(shape)) // shape[1]
    eps = np.finfo(dtype).eps
    assert_close(grad_b, ref_b, dtype, rtol=4 * eps * np.sqrt(reduction),
                 atol=4 * eps * np.sqrt(reduction) * np.abs(g).max(), what="grad_bias")
    gx_only, none = lk.bias_relu_backward(g, y, needs_bias_grad=False)
    assert none is None
    assert_close(gx_only, ref_x, dtype, rtol=0, atol=0)


def test_bias_relu_backward_is_deterministic(fast_cpu_backend, rng):
    g = rng.standard_normal((32, 16, 30, 30)).astype(np.float32)
    y = np.abs(rng.standard_normal(g.shape)).astype(np.float32)
    first = lk.bias_relu_backward(g, y)[1]
    for _ in range(3):
        np.testing.assert_array_equal(lk.bias_relu_backward(g, y)[1], first)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_nan_propagates(cpu_backend, dtype):
    x = np.zeros((2, 3, 4, 4), dtype=dtype)
    x[1, 2, 3, 1] = np.nan
    bias = np.array([1.0, np.nan, -1.0], dtype=dtype)
    y = lk.bias_relu(x, bias)
    assert_close(y, ref.bias_relu(x, bias), dtype, rtol=0, atol=0)
    assert np.isnan(y[:, 1]).all() and np.isnan(y[1, 2, 3, 1])


def test_empty_inputs_return_empty(cpu_backend):
    x = np.zeros((0, 3, 4, 4), np.float32)
    assert lk.relu(x).shape == x.shape
    assert lk.bias_relu(x, np.zeros(3, np.float32)).shape == x.shape
    gx, gb = lk.bias_relu_backward(x, x)
    assert gx.shape == x.shape and gb.shape == (3,) and not gb.any()
    assert lk.relu_backward(x, x).shape == x.shape
