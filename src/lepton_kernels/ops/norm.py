"""Batch normalization over axis 1 (torch.nn.functional.batch_norm), forward and backward.

x is (N, C) or (N, C, ...) (NCHW), viewed by the kernels as (N, C, S). The forward runs
two kernel passes in training (per-channel statistics, then ``y = x*scale + shift`` with
the ReLU fused) and one in evaluation; the per-channel vectors between them (C numbers)
are NumPy. The backward runs a reduction pass and an apply pass.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _backend
from . import _arrays as arr
from .linear import check_activation


def _channels_view(a):
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _vector(op, name, v, c, dtype, device, writeable=False):
    """A (C,) argument of x's dtype and device, or None."""
    if v is None:
        return None
    a, kind = arr.intake(op, name, v)
    if kind.device != device:
        raise ValueError(f"{op}: {name} must be on {device} like x, got {kind.device}")
    if tuple(a.shape) != (c,):
        raise ValueError(f"{op}: {name} must have shape ({c},) (one per channel of x), got {tuple(a.shape)}")
    arr.check_same_dtype(op, name, a, dtype, "x")
    if writeable and isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only; training updates it in place")
    return a


def _number(op, name, v, low, high=None, low_open=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise TypeError(f"{op}: {name} must be a finite number, got {v!r}")
    v = float(v)
    if (v <= low if low_open else v < low) or (high is not None and v > high):
        bounds = f"({low}, inf)" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{op}: {name} must be in {bounds}, got {v}")
    return v


def _input(op, x):
    xa, kind = arr.intake(op, "x", x)
    dtype = arr.check_float(op, "x", xa)
    arr.check_ndim(op, "x", xa, tuple(range(2, 33)), "(N, C) or (N, C, ...) with at least 2 dims")
    return xa, kind, dtype


def _statistics(op, x3, training, running_mean, running_var, momentum, kernels, xp):
    """(mean, var) that normalize x3, updating the running statistics in training."""
    n, c, s = x3.shape
    if not training:
        return running_mean, running_var
    if n * s <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input of "
                         f"{n * s} value(s) per channel")
    mean, var = xp.empty((c,), x3.dtype), xp.empty((c,), x3.dtype)
    kernels.batch_norm_stats(x3, mean, var)
    count = n * s
    if running_mean is not None:  # in place, as torch (the caller's arrays)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= 1 - momentum
        running_var += (momentum * count / (count - 1)) * var
    return mean, var


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               activation=None):
    """Batch normalization over the channel axis, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``, then ReLU when
    ``activation="relu"`` (fused into the same pass; NaN propagates).

    Parameters
    ----------
    x : array (N, C) or (N, C, ...), float32 or float64
    running_mean, running_var : arrays (C,) of x's dtype, or None
        Used to normalize when ``training`` is False (then required). In training
        they are updated in place (when given): ``r = (1 - momentum) r + momentum b``
        with b the batch mean, and the batch's unbiased variance for ``running_var``.
    weight, bias : arrays (C,), optional
    training : bool
        Normalize with the batch's mean and biased variance (more than one value per
        channel needed).
    momentum : float in [0, 1]
    eps : float > 0
    activation : None or "relu"

    Returns
    -------
    array, x's shape and type
    """
    op = "batch_norm"
    relu = check_activation(op, activation)
    xa, kind, dtype = _input(op, x)
    c = xa.shape[1]
    device = kind.device
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    momentum = _number(op, "momentum", momentum, 0.0, 1.0)
    eps = _number(op, "eps", eps, 0.0, low_open=True)
    rm = _vector(op, "running_mean", running_mean, c, dtype, device, writeable=training)
    rv = _vector(op, "running_var", running_var, c, dtype, device, writeable=training)
    if not training and (rm is None or rv is None):
        raise ValueError(f"{op}: running_mean and running_var are required when training is False")
    w = _vector(op, "weight", weight, c, dtype, device)
    b = _vector(op, "bias", bias, c, dtype, device)
    xp = arr.xp_of(xa)
    y = arr.empty(xa, xa.shape, dtype)
    if xa.size == 0:
        return kind.wrap(y)
    x3 = _channels_view(arr.contiguous(xa))
    kernels = _backend.get_backend(device, "batch_norm_apply")  # the backend's batch-norm passes
    mean, var = _statistics(op, x3, bool(training), rm, rv, momentum, kernels, xp)
    invstd = 1.0 / xp.sqrt(var + dtype.type(eps))
    scale = invstd if w is None else w * invstd
    shift = -mean * scale if b is None else b - mean * scale
    kernels.batch_norm_apply(x3, arr.contiguous(scale.astype(dtype)), arr.contiguous(shift.astype(dtype)),
                             _channels_view(y), relu)
    return kind.wrap(y)


def batch_norm_backward(grad_out, x, weight, running_mean, running_var, training=False, eps=1e-5, *,
                        activation=None, output=None, needs_input_grad=True, needs_weight_grad=True,
                        needs_bias_grad=True):
    """Gradients of :func:`batch_norm` with respect to x, weight and bias.

    In training the batch statistics are computed again from ``x`` (they depend on it):
    ``grad_x = w*invstd/M * (M*g - sum(g) - xhat*sum(g*xhat))`` per channel, M = N*S;
    otherwise ``grad_x = g * w * invstd``. ``grad_weight = sum(g * xhat)``,
    ``grad_bias = sum(g)``. With ``activation="relu"`` pass the forward result as
    ``output``: g is masked where it is <= 0.

    Returns
    -------
    (grad_x, grad_weight, grad_bias)
        Each None when not asked for (grad_weight also when weight is None).
    """
    op = "batch_norm_backward"
    relu = check_activation(op, activation)
    ga, kind, dtype = _input(op, grad_out)
    xa, xkind = arr.intake(op, "x", x)
    arr.check_same_dtype(op, "x", xa, dtype, "grad_out")
    if tuple(xa.shape) != tuple(ga.shape):
        raise ValueError(f"{op}: x must have grad_out's shape {tuple(ga.shape)}, got {tuple(xa.shape)}")
    c, device = ga.shape[1], kind.device
    eps = _number(op, "eps", eps, 0.0, low_open=True)
    w = _vector(op, "weight", weight, c, dtype, device)
    rm = _vector(op, "running_mean", running_mean, c, dtype, device)
    rv = _vector(op, "running_var", running_var, c, dtype, device)
    if not training and (rm is None or rv is None):
        raise ValueError(f"{op}: running_mean and running_var are required when training is False")
    ya = None
    if relu:
        if output is None:
            raise ValueError(f"{op}: activation='relu' needs the forward result as output")
        ya, _ = arr.intake(op, "output", output)
        if tuple(ya.shape) != tuple(ga.shape):
            raise ValueError(f"{op}: output must have grad_out's shape {tuple(ga.shape)}, got {tuple(ya.shape)}")
        arr.check_same_dtype(op, "output", ya, dtype, "grad_out")
    xp = arr.xp_of(ga)
    n, s = ga.shape[0], math.prod(ga.shape[2:])
    kernels = _backend.get_backend(device, "batch_norm_backward_apply")  # the backend's batch-norm passes
    g3, x3 = _channels_view(arr.contiguous(ga)), _channels_view(arr.contiguous(xa))
    y3 = None if ya is None else _channels_view(arr.contiguous(ya))
    if training:
        if n * s <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training")
        mean, var = xp.empty((c,), dtype), xp.empty((c,), dtype)
        kernels.batch_norm_stats(x3, mean, var)
    else:
        mean, var = rm, rv
    sum_g, sum_gx = xp.zeros((c,), dtype), xp.zeros((c,), dtype)
    if ga.size:
        kernels.batch_norm_backward_reduce(g3, x3, arr.contiguous(mean), y3, sum_g, sum_gx)
    invstd = 1.0 / xp.sqrt(var.astype(np.float64) + eps)
    grad_x = None
    if needs_input_grad:
        grad_x = arr.empty(ga, ga.shape, dtype)
        scale = invstd if w is None else w.astype(np.float64) * invstd
        if training:
            count = n * s
            k1, k2, k3 = scale, -scale * invstd * invstd * sum_gx / count, -scale * sum_g / count
        else:
            k1, k2, k3 = scale, xp.zeros((c,)), xp.zeros((c,))
        if ga.size:
            kernels.batch_norm_backward_apply(g3, x3, arr.contiguous(mean), y3, *(
                arr.contiguous(k.astype(dtype)) for k in (k1, k2, k3)), _channels_view(grad_x))
        grad_x = kind.wrap(grad_x)
    grad_w = kind.wrap((sum_gx * invstd).astype(dtype)) if needs_weight_grad and w is not None else None
    grad_b = kind.wrap(sum_g) if needs_bias_grad else None
    return grad_x, grad_w, grad_b


__all__ = ["batch_norm", "batch_norm_backward"]
