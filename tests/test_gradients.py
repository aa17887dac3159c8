"""Backward ops against central finite differences of the forward ops, in float64."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk

EPS = 1e-6


def numeric_grad(f, x, g):
    """d/dx of sum(f(x) * g) by central differences (outputs that are constant -inf,
    windows entirely in padding, contribute nothing)."""
    def loss():
        y = f(x)
        return np.sum(np.where(np.isfinite(y), y, 0.0) * g)

    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + EPS
        up = loss()
        flat[i] = keep - EPS
        down = loss()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def away_from_kinks(rng, shape):
    """Values at least 0.05 from zero and from each other, so max/relu are differentiable."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2 + 0.5) * 0.1
    return values.reshape(shape).astype(np.float64)


def test_relu_gradient(cpu_backend, rng):
    x = away_from_kinks(rng, (2, 3, 4))
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(lk.relu_backward(g, x), numeric_grad(lk.relu, x, g), rtol=1e-6, atol=1e-8)


def test_bias_relu_gradients(cpu_backend, rng):
    x = away_from_kinks(rng, (2, 3, 3, 2))
    bias = np.array([0.012, -0.013, 0.021])  # keeps x + bias off zero
    g = rng.standard_normal(x.shape)
    grad_x, grad_b = lk.bias_relu_backward(g, lk.bias_relu(x, bias))
    np.testing.assert_allclose(grad_x, numeric_grad(lambda v: lk.bias_relu(v, bias), x, g), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_b, numeric_grad(lambda b: lk.bias_relu(x, b), bias.copy(), g),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False),
                                          (2, 3, ((1, 0), (0, 2)), 1, True)])
def test_max_pool2d_gradient(cpu_backend, rng, k, s, p, d, ceil):
    x = away_from_kinks(rng, (2, 2, 7, 6))
    y, idx = lk.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(lk.max_pool2d_backward(g, idx, x.shape),
                               numeric_grad(lambda v: lk.max_pool2d(v, k, s, p, d, ceil), x, g),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k,s,p,ceil,cip,div", [(2, 2, 0, False, True, None), (3, 2, 1, True, False, None),
                                                (3, 1, 1, False, True, None), (3, 2, 2, True, True, 5),
                                                (2, 1, ((0, 1), (2, 0)), False, False, None)])
def test_avg_pool2d_gradient(cpu_backend, rng, k, s, p, ceil, cip, div):
    x = rng.standard_normal((2, 2, 6, 7))
    y = lk.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(lk.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div),
                               numeric_grad(lambda v: lk.avg_pool2d(v, k, s, p, ceil, cip, div), x, g),
                               rtol=1e-6, atol=1e-8)
