"""Element-wise ops: ReLU and fused bias + ReLU, forward and backward.

Any shape for relu; bias_relu broadcasts a (C,) bias over axis 1 of an
(N, C, ...) input (NCHW, or (N, C) for linear layers), viewed by the kernels
as (N, C, S) with S the product of the trailing dims.
"""
from __future__ import annotations

import math

from .. import _backend
from . import _arrays as arr


def _finish(kind, buf, user_out):
    if user_out is not None:
        return user_out
    return buf if kind.wrap is arr.identity else kind.wrap(buf)  # NumPy in, NumPy out: no call


def relu(x, *, out=None):
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : array, float32 or float64, any shape
        NumPy, CuPy or DLPack tensor (the result has the same type).
    out : array, optional
        Written in place and returned; same shape and dtype as ``x``,
        C-contiguous. ``out=x`` computes in place.

    Returns
    -------
    array
        ``y = x if x > 0 else 0``. NaN propagates (``relu(NaN) = NaN``).
    """
    if out is None and (y := arr.call_whole("relu", x)) is not None:  # the small-call path
        return y
    op = "relu"
    xa, kind = arr.intake(op, "x", x)
    dtype = arr.check_float(op, "x", xa)
    buf, user_out = arr.output_buffer(op, xa, xa.shape, dtype, out, kind.device, {"x": xa}, ("x",))
    if xa.size:
        _backend.get_backend(kind.device, op).relu(arr.contiguous(xa), buf)
    return _finish(kind, buf, user_out)


def relu_backward(grad_out, x, *, out=None):
    """Gradient of :func:`relu`: ``grad_in = grad_out if not x <= 0 else 0``.

    Parameters
    ----------
    grad_out : array, float32 or float64
        Gradient with respect to relu's output.
    x : array, same shape and dtype
        relu's input, or its output (both give the same mask). A NaN
        activation passes its gradient (as ``torch.nn.functional.relu``).
    out : array, optional
        Receives ``grad_in``; may be ``grad_out`` itself.

    Returns
    -------
    array
        ``grad_in``, same shape and dtype as ``grad_out``.
    """
    if out is None and (y := arr.call_whole("relu_backward", grad_out, x)) is not None:
        return y  # the small-call path; a broadcast grad_out (autograd's sum) is read as its one value
    op = "relu_backward"
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    xa, xkind = arr.intake(op, "x", x)
    device = arr.check_same_device(op, {"grad_out": gkind, "x": xkind})
    dtype = arr.check_float(op, "grad_out", ga)
    arr.check_same_dtype(op, "x", xa, dtype, "grad_out")
    if tuple(xa.shape) != tuple(ga.shape):
        raise ValueError(f"{op}: x must have grad_out's shape {tuple(ga.shape)}, got {tuple(xa.shape)}")
    buf, user_out = arr.output_buffer(op, ga, ga.shape, dtype, out, device, {"grad_out": ga, "x": xa},
                            ("grad_out", "x"))
    if ga.size:
        _backend.get_backend(device, op).relu_backward(arr.contiguous(ga), arr.contiguous(xa), buf)
    return _finish(gkind, buf, user_out)


def _channels_view(a):
    """(N, C, ...) -> (N, C, S) view of a C-contiguous array."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def bias_relu(x, bias, *, out=None):
    """Fused bias add and ReLU in one pass: ``relu(x + bias[c])``.

    Parameters
    ----------
    x : array, (N, C) or (N, C, ...) e.g. NCHW, float32 or float64
    bias : array, (C,), same dtype as ``x``
        Broadcast over axis 1 of ``x``.
    out : array, optional
        Same shape and dtype as ``x``, C-contiguous; ``out=x`` is in place.

    Returns
    -------
    array
        ``y[n, c, ...] = max(x[n, c, ...] + bias[c], 0)``; NaN propagates.
    """
    if out is None and (y := arr.call_whole("bias_relu", x, bias)) is not None:  # the small-call path
        return y
    op = "bias_relu"
    xa, xkind = arr.intake(op, "x", x)
    ba, bkind = arr.intake(op, "bias", bias)
    device = arr.check_same_device(op, {"x": xkind, "bias": bkind})
    dtype = arr.check_float(op, "x", xa)
    arr.check_same_dtype(op, "bias", ba, dtype, "x")
    arr.check_ndim(op, "x", xa, tuple(range(2, 33)), "(N, C) or (N, C, ...) with at least 2 dims")
    if ba.ndim != 1 or ba.shape[0] != xa.shape[1]:
        raise ValueError(
            f"{op}: bias must have shape ({xa.shape[1]},) to match x's channel axis, got {tuple(ba.shape)}")
    buf, user_out = arr.output_buffer(op, xa, xa.shape, dtype, out, device, {"x": xa, "bias": ba}, ("x",))
    if xa.size:
        kernel = _backend.get_backend(device, op).bias_relu
        kernel(_channels_view(arr.contiguous(xa)), arr.contiguous(ba), _channels_view(buf))
    return _finish(xkind, buf, user_out)


def bias_relu_backward(grad_out, out, *, needs_bias_grad=True):
    """Gradients of :func:`bias_relu`, from its output, in one pass.

    Parameters
    ----------
    grad_out : array, (N, C, ...), float32 or float64
    out : array, same shape and dtype
        The forward result ``y = relu(x + bias)`` (the mask is ``y > 0``).
    needs_bias_grad : bool
        Skip the bias reduction when False (grad_bias is then None).

    Returns
    -------
    grad_x : array
        ``grad_out if not y <= 0 else 0``.
    grad_bias : array (C,) or None
        ``grad_x`` summed over every axis but 1, in a fixed order
        (deterministic run to run).
    """
    op = "bias_relu_backward"
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    ya, ykind = arr.intake(op, "out", out)
    device = arr.check_same_device(op, {"grad_out": gkind, "out": ykind})
    dtype = arr.check_float(op, "grad_out", ga)
    arr.check_same_dtype(op, "out", ya, dtype, "grad_out")
    arr.check_ndim(op, "grad_out", ga, tuple(range(2, 33)), "(N, C) or (N, C, ...)")
    if tuple(ya.shape) != tuple(ga.shape):
        raise ValueError(f"{op}: out must have grad_out's shape {tuple(ga.shape)}, got {tuple(ya.shape)}")
    xp = arr.xp_of(ga)
    grad_x = xp.empty(ga.shape, dtype=dtype)
    grad_bias = None
    if needs_bias_grad:
        grad_bias = xp.empty((ga.shape[1],), dtype=dtype)
    if ga.size:
        _backend.get_backend(device, op).bias_relu_backward(
            _channels_view(arr.contiguous(ga)), _channels_view(arr.contiguous(ya)),
            _channels_view(grad_x), grad_bias)
    elif grad_bias is not None:
        grad_bias[...] = 0
    return gkind.wrap(grad_x), None if grad_bias is None else gkind.wrap(grad_bias)
