"""Every autograd Function's gradient against central finite differences, in float64."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels.autograd import Tensor
from lepton_kernels.nn import functional as F


def gradcheck(fn, *arrays, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Compare backward() of sum(fn(*tensors) * g) with central differences for every input."""
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    (out * g).sum().backward()
    for t in tensors:
        numeric = np.zeros_like(t.data)
        flat, nflat = t.data.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            up = float((fn(*tensors).data * g).sum())
            flat[i] = keep - eps
            down = float((fn(*tensors).data * g).sum())
            flat[i] = keep
            nflat[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(t.grad, numeric, rtol=rtol, atol=atol)


def _rand(*shape, seed=0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) + offset


def _distinct(*shape, seed=0):
    """Values at least 0.05 apart and away from 0: max-pool and ReLU are differentiable there."""
    n = int(np.prod(shape))
    return ((np.random.default_rng(seed).permutation(n) - n / 2 + 0.5) * 0.1).reshape(shape)


@pytest.mark.parametrize("name,fn,shapes", [
    ("add", lambda a, b: a + b, [(3, 4), (4,)]),
    ("sub", lambda a, b: a - b, [(2, 3), (2, 1)]),
    ("mul", lambda a, b: a * b, [(3, 4), (3, 4)]),
    ("div", lambda a, b: a / b, [(3, 4), (4,)]),
    ("neg", lambda a: -a, [(5,)]),
    ("matmul", lambda a, b: a @ b, [(3, 4), (4, 2)]),
    ("batched matmul", lambda a, b: a @ b, [(2, 3, 4), (4, 5)]),
    ("sum", lambda a: a.sum(axis=1), [(3, 4)]),
    ("mean", lambda a: a.mean(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    ("reshape", lambda a: a.reshape(4, 3) * a.reshape(4, 3), [(3, 4)]),
])
def test_arithmetic_functions(name, fn, shapes):
    arrays = [_rand(*s, seed=i, offset=3.0 if name == "div" else 0.0) for i, s in enumerate(shapes)]
    gradcheck(fn, *arrays)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear(activation):
    gradcheck(lambda x, w, b: F.linear(x, w, b, activation=activation),
              _distinct(4, 5, seed=1), _rand(3, 5, seed=2) * 0.3, np.array([0.011, -0.013, 0.017]))


@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d(activation):
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, 2, 1, 1, 2, activation=activation),
              _distinct(2, 4, 5, 5, seed=3), _rand(4, 2, 3, 3, seed=4) * 0.2, np.array([0.01, -0.02, 0.03, 0.0]))


def test_relu_and_pools():
    gradcheck(F.relu, _distinct(2, 3, 4))
    gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1), _distinct(1, 2, 7, 7, seed=5))
    gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1, True, False), _rand(1, 2, 7, 6, seed=6))


def test_dropout():
    gradcheck(lambda x: F.dropout(x, 0.3, rng=np.random.default_rng(7)), _rand(4, 5))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses(reduction):
    target = np.array([0, 2, 1, -100, 2])
    weight = np.array([0.5, 1.5, 2.0])
    gradcheck(lambda z: F.cross_entropy(z, target, weight, reduction=reduction, label_smoothing=0.1),
              _rand(5, 3, seed=8))
    y = _rand(5, 3, seed=9)
    gradcheck(lambda z: F.mse_loss(z, y, reduction) if reduction != "none" else F.mse_loss(z, y, "none"),
              _rand(5, 3, seed=10))
    t = (np.random.default_rng(11).random((5, 3)) > 0.5).astype(np.float64)
    gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, t, reduction, pos_weight=np.array([1.0, 2.0, 0.5])),
              _rand(5, 3, seed=12) * 3)
