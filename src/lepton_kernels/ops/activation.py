"""Element-wise activations of torch.nn.functional, forward and backward: relu6,
leaky_relu, sigmoid, tanh, silu, gelu (erf or tanh approximation) and hardswish.

Every forward takes any shape of float32/float64 and returns the same shape; NaN
propagates, and +-inf give the limits (gelu(+inf) = +inf and hardswish(-inf) = 0, where
torch evaluates its closed forms to NaN). Each backward returns ``grad_in`` from ``grad_out`` and what the
derivative needs: the forward's input ``x``, or its output for sigmoid and tanh (as
torch's ``sigmoid_backward`` / ``tanh_backward``). The kernels are one pass each
(``csrc/lepton/activation.h``).
"""
from __future__ import annotations

import math
import numbers

from .. import _backend
from . import _arrays as arr

GELU_APPROXIMATIONS = ("none", "tanh")


def _forward(op, kind, x, param, out):
    xa, kind_of_x = arr.intake(op, "x", x)
    dtype = arr.check_float(op, "x", xa)
    buf, user_out = arr.output_buffer(op, xa, xa.shape, dtype, out, kind_of_x.device, {"x": xa}, ("x",))
    if xa.size:
        _backend.get_backend(kind_of_x.device, "activation").activation(arr.contiguous(xa), buf, kind, param)
    return user_out if user_out is not None else kind_of_x.wrap(buf)


def _backward(op, kind, grad_out, saved, saved_name, param, out):
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    sa, skind = arr.intake(op, saved_name, saved)
    device = arr.check_same_device(op, {"grad_out": gkind, saved_name: skind})
    dtype = arr.check_float(op, "grad_out", ga)
    arr.check_same_dtype(op, saved_name, sa, dtype, "grad_out")
    if tuple(sa.shape) != tuple(ga.shape):
        raise ValueError(f"{op}: {saved_name} must have grad_out's shape {tuple(ga.shape)}, got {tuple(sa.shape)}")
    buf, user_out = arr.output_buffer(op, ga, ga.shape, dtype, out, device, {"grad_out": ga, saved_name: sa},
                                      ("grad_out", saved_name))
    if ga.size:
        _backend.get_backend(device, "activation_backward").activation_backward(
            arr.contiguous(ga), arr.contiguous(sa), buf, kind, param)
    return user_out if user_out is not None else gkind.wrap(buf)


def _slope(op, negative_slope):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real) or not math.isfinite(
            float(negative_slope)):
        raise TypeError(f"{op}: negative_slope must be a finite number, got {negative_slope!r}")
    return float(negative_slope)


def _gelu_kind(op, approximate):
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return "gelu_tanh" if approximate == "tanh" else "gelu"


def relu6(x, *, out=None):
    """``min(max(x, 0), 6)``; NaN propagates. ``out=`` may be ``x``."""
    return _forward("relu6", "relu6", x, 0.0, out)


def relu6_backward(grad_out, x, *, out=None):
    """Gradient of :func:`relu6`: ``grad_out`` where not ``x <= 0`` and not ``x >= 6``, else 0."""
    return _backward("relu6_backward", "relu6", grad_out, x, "x", 0.0, out)


def leaky_relu(x, negative_slope=0.01, *, out=None):
    """``x if x > 0 else negative_slope * x``; NaN propagates."""
    return _forward("leaky_relu", "leaky_relu", x, _slope("leaky_relu", negative_slope), out)


def leaky_relu_backward(grad_out, x, negative_slope=0.01, *, out=None):
    """Gradient of :func:`leaky_relu`: ``grad_out if x > 0 else negative_slope * grad_out``."""
    return _backward("leaky_relu_backward", "leaky_relu", grad_out, x, "x",
                     _slope("leaky_relu_backward", negative_slope), out)


def sigmoid(x, *, out=None):
    """``1 / (1 + exp(-x))``."""
    return _forward("sigmoid", "sigmoid", x, 0.0, out)


def sigmoid_backward(grad_out, output, *, out=None):
    """Gradient of :func:`sigmoid` from its output ``y``: ``grad_out * y * (1 - y)``."""
    return _backward("sigmoid_backward", "sigmoid", grad_out, output, "output", 0.0, out)


def tanh(x, *, out=None):
    """``tanh(x)``."""
    return _forward("tanh", "tanh", x, 0.0, out)


def tanh_backward(grad_out, output, *, out=None):
    """Gradient of :func:`tanh` from its output ``y``: ``grad_out * (1 - y^2)``."""
    return _backward("tanh_backward", "tanh", grad_out, output, "output", 0.0, out)


def silu(x, *, out=None):
    """``x * sigmoid(x)`` (swish)."""
    return _forward("silu", "silu", x, 0.0, out)


def silu_backward(grad_out, x, *, out=None):
    """Gradient of :func:`silu`: ``grad_out * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``."""
    return _backward("silu_backward", "silu", grad_out, x, "x", 0.0, out)


def gelu(x, approximate="none", *, out=None):
    """``x * Phi(x)`` (Phi the standard normal CDF, through erf), or with ``approximate="tanh"``
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as torch."""
    return _forward("gelu", _gelu_kind("gelu", approximate), x, 0.0, out)


def gelu_backward(grad_out, x, approximate="none", *, out=None):
    """Gradient of :func:`gelu`: ``grad_out * (Phi(x) + x phi(x))`` (erf form), or the derivative
    of the tanh approximation."""
    return _backward("gelu_backward", _gelu_kind("gelu_backward", approximate), grad_out, x, "x", 0.0, out)


def hardswish(x, *, out=None):
    """``x * relu6(x + 3) / 6``; NaN propagates."""
    return _forward("hardswish", "hardswish", x, 0.0, out)


def hardswish_backward(grad_out, x, *, out=None):
    """Gradient of :func:`hardswish` (torch's, kinks included): 0 for ``x <= -3``,
    ``grad_out * (x/3 + 1/2)`` for ``-3 < x < 3``, ``grad_out`` from 3 on."""
    return _backward("hardswish_backward", "hardswish", grad_out, x, "x", 0.0, out)


__all__ = ["relu6", "relu6_backward", "leaky_relu", "leaky_relu_backward", "sigmoid", "sigmoid_backward", "tanh",
           "tanh_backward", "silu", "silu_backward", "gelu", "gelu_backward", "hardswish", "hardswish_backward"]
