"""batch_norm and batch_norm_backward on every CPU backend: torch's semantics (running
statistics updated in place with the unbiased variance, None statistics in training, eval
mode), gradients against torch's autograd, and every bad input a clear error."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _case(rng, shape, dtype, affine=True):
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w = (rng.random(c) + 0.5).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    return x, w, b


def _t(a):
    return None if a is None else torch.from_numpy(a.copy())


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 3), (4, 6, 5, 7), (2, 16, 9, 9), (3, 2, 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch(cpu_backend, dtype, shape, training, affine, rng):
    x, w, b = _case(rng, shape, dtype, affine)
    c = shape[1]
    rm, rv = rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)
    trm, trv = _t(rm), _t(rv)
    y = lk.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-4)
    ty = F.batch_norm(_t(x), trm, trv, _t(w), _t(b), training=training, momentum=0.2, eps=1e-4)
    np.testing.assert_allclose(y, ty.numpy(), **_tol(dtype))
    np.testing.assert_allclose(rm, trm.numpy(), **_tol(dtype))  # updated in place in training, untouched otherwise
    np.testing.assert_allclose(rv, trv.numpy(), **_tol(dtype))
    assert y.dtype == dtype and y.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_batch_norm_backward_matches_torch_autograd(cpu_backend, dtype, training, activation, rng):
    x, w, b = _case(rng, (4, 5, 6, 3), dtype)
    rm, rv = rng.standard_normal(5).astype(dtype), (rng.random(5) + 0.5).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ty = F.batch_norm(tx, _t(rm), _t(rv), tw, tb, training=training)
    if activation == "relu":
        ty = torch.relu(ty)
    ty.backward(torch.from_numpy(g))
    y = lk.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, activation=activation)
    np.testing.assert_allclose(y, ty.detach().numpy(), **_tol(dtype))
    gx, gw, gb = lk.batch_norm_backward(g, x, w, rm, rv, training=training, activation=activation,
                                        output=y if activation else None)
    for got, want in ((gx, tx.grad), (gw, tw.grad), (gb, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), **_tol(dtype))
    only_x = lk.batch_norm_backward(g, x, None, rm, rv, training=training, activation=activation,
                                    output=y if activation else None, needs_bias_grad=False)
    assert only_x[1] is None and only_x[2] is None  # no weight: no weight gradient


def test_training_without_running_statistics_and_nan(cpu_backend, rng):
    x, w, b = _case(rng, (6, 3, 2, 2), np.float32)
    x[0, 1, 0, 0] = np.nan
    y = lk.batch_norm(x, None, None, w, b, training=True)
    ty = F.batch_norm(_t(x), None, None, _t(w), _t(b), training=True)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-5, atol=1e-5)
    assert np.isnan(y[:, 1]).all() and not np.isnan(y[:, [0, 2]]).any()  # NaN spreads over its channel only


def test_torch_tensors_in_and_out(rng):
    x, w, b = _case(rng, (4, 3, 5, 5), np.float32)
    y = lk.batch_norm(_t(x), _t(np.zeros(3, np.float32)), _t(np.ones(3, np.float32)), _t(w), _t(b))
    assert isinstance(y, torch.Tensor)


@pytest.mark.parametrize("call, error, words", [
    (lambda x, v: lk.batch_norm(x, v[:2], v, training=False), ValueError, "running_mean must have shape (3,)"),
    (lambda x, v: lk.batch_norm(x, None, None, training=False), ValueError, "required when training is False"),
    (lambda x, v: lk.batch_norm(x, v, v, momentum=1.5, training=True), ValueError, "momentum must be in [0.0, 1.0]"),
    (lambda x, v: lk.batch_norm(x, v, v, momentum=-0.1), ValueError, "momentum"),
    (lambda x, v: lk.batch_norm(x, v, v, eps=0.0), ValueError, "eps must be in (0.0, inf)"),
    (lambda x, v: lk.batch_norm(x, v, v, eps=float("nan")), TypeError, "eps must be a finite number"),
    (lambda x, v: lk.batch_norm(x, v, v, activation="gelu"), ValueError, "activation must be None or 'relu'"),
    (lambda x, v: lk.batch_norm(x[:1, :, :1, :1], None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda x, v: lk.batch_norm(x, v.astype(np.float64), v), TypeError, "running_mean dtype must match x"),
    (lambda x, v: lk.batch_norm(x, v, v, weight=np.ones(4, np.float32)), ValueError, "weight must have shape (3,)"),
    (lambda x, v: lk.batch_norm(x[0, 0, 0], v, v), ValueError, "x must be (N, C)"),
    (lambda x, v: lk.batch_norm(x.astype(np.int32), v, v), TypeError, "x must be float32 or float64"),
    (lambda x, v: lk.batch_norm(x, v, v, training="yes"), TypeError, "training must be a bool"),
    (lambda x, v: lk.batch_norm_backward(x, x[:1], None, v, v), ValueError, "x must have grad_out's shape"),
    (lambda x, v: lk.batch_norm_backward(x, x, None, v, v, activation="relu"), ValueError, "needs the forward result"),
])
def test_bad_inputs_are_clear_errors(call, error, words):
    x = np.ones((2, 3, 4, 4), np.float32)
    v = np.ones(3, np.float32)
    with pytest.raises(error, match=__import__("re").escape(words)):
        call(x, v)


def test_read_only_running_statistics_are_refused_in_training():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    rm = np.zeros(3, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        lk.batch_norm(x, rm, np.ones(3, np.float32), training=True)
    assert lk.batch_norm(x, rm, np.ones(3, np.float32), training=False).shape == x.shape  # evaluation reads only
