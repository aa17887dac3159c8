"""nn.functional on Tensors vs torch.nn.functional: outputs and gradients."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels.nn.functional as F
from lepton_kernels.autograd import Tensor

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair(rng, shape, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    return Tensor(a.copy(), requires_grad=True), torch.tensor(a, requires_grad=True)


def _check(ours, theirs, pairs, rtol=1e-4, atol=1e-5, seed=0):
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(seed).standard_normal(theirs.shape).astype(np.float32)
    if ours.ndim == 0:
        ours.backward()
        theirs.backward()
    else:
        ours.backward(g)
        theirs.backward(torch.tensor(g))
    for o, t in pairs:
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("stride,padding,groups", [(1, 0, 1), (2, 1, 1), (1, 1, 2)])
def test_conv2d(activation, stride, padding, groups):
    rng = np.random.default_rng(1)
    (x, tx), (w, tw), (b, tb) = _pair(rng, (2, 4, 9, 9)), _pair(rng, (6, 4 // groups, 3, 3)), _pair(rng, (6,))
    ours = F.conv2d(x, w, b, stride, padding, 1, groups, activation=activation)
    theirs = TF.conv2d(tx, tw, tb, stride, padding, 1, groups)
    if activation:
        theirs = torch.relu(theirs)
    _check(ours, theirs, [(x, tx), (w, tw), (b, tb)])


def test_conv2d_first_layer_skips_input_grad():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    (w, tw), (b, tb) = _pair(rng, (3, 1, 3, 3)), _pair(rng, (3,))
    F.conv2d(x, w, b).sum().backward()
    assert x.grad is None and w.grad is not None and b.grad is not None


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear(activation):
    rng = np.random.default_rng(3)
    (x, tx), (w, tw), (b, tb) = _pair(rng, (5, 7)), _pair(rng, (4, 7)), _pair(rng, (4,))
    theirs = TF.linear(tx, tw, tb)
    _check(F.linear(x, w, b, activation=activation), torch.relu(theirs) if activation else theirs,
           [(x, tx), (w, tw), (b, tb)])


def test_relu_and_pools():
    rng = np.random.default_rng(4)
    x, tx = _pair(rng, (2, 3, 8, 8))
    _check(F.relu(x), torch.relu(tx), [(x, tx)])
    x, tx = _pair(rng, (2, 3, 9, 9))
    _check(F.max_pool2d(x, 3, 2, 1), TF.max_pool2d(tx, 3, 2, 1), [(x, tx)])
    x, tx = _pair(rng, (2, 3, 9, 9))
    _check(F.avg_pool2d(x, 3, 2, 1, False, False), TF.avg_pool2d(tx, 3, 2, 1, False, False), [(x, tx)])


def test_dropout_scales_and_masks():
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    y = F.dropout(x, 0.25, rng=np.random.default_rng(0))
    kept = y.data != 0
    assert 0.7 < kept.mean() < 0.8 and np.allclose(y.data[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(x, 1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,ignore,smoothing", [(False, False, 0.0), (True, False, 0.0), (False, True, 0.0),
                                                       (True, True, 0.1), (False, False, 0.2)])
def test_cross_entropy(reduction, weighted, ignore, smoothing):
    rng = np.random.default_rng(5)
    x, tx = _pair(rng, (8, 5), scale=3.0)
    target = rng.integers(0, 5, 8)
    if ignore:
        target[[1, 4]] = -100
    weight = rng.random(5).astype(np.float32) + 0.5 if weighted else None
    ours = F.cross_entropy(x, target, weight, reduction=reduction, label_smoothing=smoothing)
    theirs = TF.cross_entropy(tx, torch.tensor(target), None if weight is None else torch.tensor(weight),
                              reduction=reduction, label_smoothing=smoothing)
    _check(ours, theirs, [(x, tx)])


def test_cross_entropy_is_stable_and_validates():
    x = Tensor(np.array([[1000.0, 0.0], [-1000.0, 0.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 0]))
    assert np.isfinite(loss.data) and abs(float(loss.data) - 500.0) < 1e-3
    with pytest.raises(ValueError, match="target"):
        F.cross_entropy(x, np.array([0, 2]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, np.array([0, 1]), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_and_bce_with_logits(reduction):
    rng = np.random.default_rng(6)
    x, tx = _pair(rng, (6, 3), scale=10.0)
    y = rng.standard_normal((6, 3)).astype(np.float32)
    _check(F.mse_loss(x, y, reduction), TF.mse_loss(tx, torch.tensor(y), reduction=reduction), [(x, tx)])
    x, tx = _pair(rng, (6, 3), scale=30.0)
    t = (rng.random((6, 3)) > 0.5).astype(np.float32)
    pw = np.full(3, 2.0, np.float32)
    _check(F.binary_cross_entropy_with_logits(x, t, reduction, pos_weight=pw),
           TF.binary_cross_entropy_with_logits(tx, torch.tensor(t), reduction=reduction, pos_weight=torch.tensor(pw)),
           [(x, tx)])
