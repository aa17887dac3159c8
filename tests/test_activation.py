"""relu6, leaky_relu, sigmoid, tanh, silu, gelu and hardswish with their backward ops, on every
CPU backend: values and gradients against torch (the definitions they follow), NaN and
infinities, out= and in place, and bad arguments."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

# name: (lepton forward, its extra arguments, torch function, the backward's saved argument)
CASES = {
    "relu6": ((), F.relu6, "x"),
    "leaky_relu": ((0.2,), lambda t: F.leaky_relu(t, 0.2), "x"),
    "sigmoid": ((), torch.sigmoid, "y"),
    "tanh": ((), torch.tanh, "y"),
    "silu": ((), F.silu, "x"),
    "gelu": (("none",), F.gelu, "x"),
    "gelu_tanh": (("tanh",), lambda t: F.gelu(t, approximate="tanh"), "x"),
    "hardswish": ((), F.hardswish, "x"),
}


def _op(name):
    return "gelu" if name == "gelu_tanh" else name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_torch(cpu_backend, name, dtype, rng):
    extra, torch_fn, saved = CASES[name]
    x = (rng.standard_normal((7, 33)) * 5).astype(dtype)
    x[0, :6] = (-3.0, 0.0, 3.0, 6.0, -1e-30, 50.0)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch_fn(tx)
    ty.backward(torch.from_numpy(g))
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    y = getattr(lk, _op(name))(x, *extra)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    grad = getattr(lk, _op(name) + "_backward")(g, y if saved == "y" else x, *extra)
    np.testing.assert_allclose(grad, tx.grad.numpy(), **tol)
    assert y.dtype == dtype and grad.dtype == dtype


# Where the library gives the limit and torch a NaN (torch evaluates the closed form, whose
# inf * 0 or inf - inf is NaN there): documented in ops/activation.py.
LIMITS = {("gelu", 2): np.inf, ("hardswish", 1): 0.0}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's inf * 0
@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_propagates_and_infinities_give_the_limits(cpu_backend, name):
    extra, torch_fn, _ = CASES[name]
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0], np.float32)
    y = getattr(lk, _op(name))(x, *extra)
    want = torch_fn(torch.from_numpy(x)).numpy()
    for (case, i), limit in LIMITS.items():
        if case == name:
            want[i] = limit
    np.testing.assert_array_equal(y, want)


def test_out_and_in_place(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    want = lk.silu(x)
    out = np.empty_like(x)
    assert lk.silu(x, out=out) is out
    np.testing.assert_array_equal(out, want)
    lk.silu(x, out=x)  # out=x computes in place
    np.testing.assert_array_equal(x, want)
    view = want[:, ::2]  # a non-contiguous input is read through a copy
    np.testing.assert_array_equal(lk.tanh(view), lk.tanh(view.copy()))


@pytest.mark.parametrize("call, error, words", [
    (lambda x: lk.gelu(x, approximate="erf"), ValueError, "gelu: approximate must be 'none' or 'tanh'"),
    (lambda x: lk.leaky_relu(x, negative_slope="0.1"), TypeError, "negative_slope must be a finite number"),
    (lambda x: lk.leaky_relu(x, negative_slope=float("inf")), TypeError, "negative_slope must be a finite number"),
    (lambda x: lk.sigmoid(x.astype(np.int64)), TypeError, "sigmoid: x must be float32 or float64"),
    (lambda x: lk.tanh_backward(x, x[:1]), ValueError, "tanh_backward: output must have grad_out's shape"),
    (lambda x: lk.silu_backward(x, x.astype(np.float64)), TypeError, "silu_backward: x dtype must match grad_out"),
    (lambda x: lk.relu6(x, out=np.empty(3, np.float32)), ValueError, "relu6: out must have shape (2, 3)"),
])
def test_bad_arguments_are_clear_errors(call, error, words):
    import re

    with pytest.raises(error, match=re.escape(words)):
        call(np.ones((2, 3), np.float32))


# ---------------------------------------------------------------- autograd and nn layers
@pytest.mark.parametrize("layer, twin", [
    (lambda: lk.nn.ReLU6(), lambda: torch.nn.ReLU6()),
    (lambda: lk.nn.LeakyReLU(0.3), lambda: torch.nn.LeakyReLU(0.3)),
    (lambda: lk.nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    (lambda: lk.nn.Tanh(), lambda: torch.nn.Tanh()),
    (lambda: lk.nn.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: lk.nn.GELU(), lambda: torch.nn.GELU()),
    (lambda: lk.nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    (lambda: lk.nn.Hardswish(), lambda: torch.nn.Hardswish()),
])
def test_layers_train_and_infer_like_torch(layer, twin, rng):
    x = (rng.standard_normal((4, 5)) * 3).astype(np.float32)
    model = lk.nn.Sequential(lk.nn.Linear(5, 6), layer(), lk.nn.Linear(6, 2))
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 6), twin(), torch.nn.Linear(6, 2))
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        with torch.no_grad():
            tp.copy_(torch.from_numpy(p.data))
    out = model(lk.Tensor(x))
    out.sum().backward()
    tout = tmodel(torch.from_numpy(x))
    tout.sum().backward()
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5)
    with lk.no_grad():  # the inference plan runs the same layers on the arrays
        np.testing.assert_allclose(model(lk.Tensor(x)).data, out.data, rtol=0, atol=0)


def test_gelu_layer_refuses_an_unknown_approximation():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh'"):
        lk.nn.GELU("fast")
