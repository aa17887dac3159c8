"""Dense layers and matrix products: matmul, linear (fused bias + ReLU), linear_backward.

``linear`` follows ``torch.nn.functional.linear``: x (..., K) @ weight(N, K).T + bias(N,).
"""
from __future__ import annotations

from .. import _backend
from . import _arrays as arr

ACTIVATIONS = (None, "relu")


def check_activation(op: str, activation) -> bool:
    """True when a ReLU is fused; anything but None/"relu" is an error."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    return activation == "relu"



def matmul(a, b, *, out=None):
    """Matrix product of two 2-D arrays, ``c = a @ b``.

    Parameters
    ----------
    a : array (M, K), float32 (fast path) or float64
    b : array (K, N), same dtype
    out : array (M, N), optional

    Returns
    -------
    array (M, N)
        ``c[m, n] = sum_k a[m, k] * b[k, n]``; K = 0 gives zeros.
    """
    op = "matmul"
    aa, akind = arr.intake(op, "a", a)
    ba, bkind = arr.intake(op, "b", b)
    device = arr.check_same_device(op, {"a": akind, "b": bkind})
    dtype = arr.check_float(op, "a", aa)
    arr.check_same_dtype(op, "b", ba, dtype, "a")
    arr.check_ndim(op, "a", aa, (2,), "2-D (M, K)")
    arr.check_ndim(op, "b", ba, (2,), "2-D (K, N)")
    if aa.shape[1] != ba.shape[0]:
        raise ValueError(f"{op}: inner dimensions differ: a is {tuple(aa.shape)}, b is {tuple(ba.shape)}")
    shape = (aa.shape[0], ba.shape[1])
    c, user_out = arr.output_buffer(op, aa, shape, dtype, out, device, {"a": aa, "b": ba})
    if c.size:
        if aa.shape[1] == 0:
            c[...] = 0
        else:
            _backend.get_backend(device, op).matmul(arr.contiguous(aa), arr.contiguous(ba), c)
    return user_out if user_out is not None else akind.wrap(c)


def _linear_args(op, x, weight, bias):
    xa, xkind = arr.intake(op, "x", x)
    wa, wkind = arr.intake(op, "weight", weight)
    kinds = {"x": xkind, "weight": wkind}
    ba = None
    if bias is not None:
        ba, kinds["bias"] = arr.intake(op, "bias", bias)
    device = arr.check_same_device(op, kinds)
    dtype = arr.check_float(op, "x", xa)
    arr.check_same_dtype(op, "weight", wa, dtype, "x")
    if xa.ndim < 1:
        raise ValueError(f"{op}: x must have at least 1 dimension (..., in_features), got a 0-D array")
    arr.check_ndim(op, "weight", wa, (2,), "2-D (out_features, in_features)")
    if xa.shape[-1] != wa.shape[1]:
        raise ValueError(f"{op}: x has {xa.shape[-1]} features in its last axis but weight expects "
                         f"{wa.shape[1]} (weight shape {tuple(wa.shape)})")
    if ba is not None:
        arr.check_same_dtype(op, "bias", ba, dtype, "x")
        if ba.ndim != 1 or ba.shape[0] != wa.shape[0]:
            raise ValueError(f"{op}: bias must have shape ({wa.shape[0]},), got {tuple(ba.shape)}")
    return xa, wa, ba, xkind, device, dtype


def _rows(a):
    """(..., F) -> (M, F) C-contiguous 2-D view or copy."""
    a = arr.contiguous(a)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def linear(x, weight, bias=None, *, activation=None, out=None):
    """Fully connected layer ``y = act(x @ weight.T + bias)``, bias and ReLU fused into the GEMM.

    Parameters
    ----------
    x : array (..., in_features), float32 or float64
        Leading dimensions are batch dimensions.
    weight : array (out_features, in_features), same dtype
    bias : array (out_features,), optional
    activation : None or "relu"
        ReLU applied in the GEMM's output write (NaN propagates).
    out : array (..., out_features), optional

    Returns
    -------
    array (..., out_features)
    """
    if out is None and (activation is None or activation == "relu") and (
            y := arr.call_whole("linear", x, weight, bias, activation is not None)) is not None:
        return y  # the small-call path
    op = "linear"
    relu = check_activation(op, activation)
    xa, wa, ba, kind, device, dtype = _linear_args(op, x, weight, bias)
    shape = tuple(xa.shape[:-1]) + (wa.shape[0],)
    y, user_out = arr.output_buffer(op, xa, shape, dtype, out, device, {"x": xa, "weight": wa, "bias": ba})
    if y.size:
        y2 = y.reshape(-1, shape[-1])
        if wa.shape[1] == 0:  # no features: bias (and ReLU) only
            y2[...] = 0 if ba is None else ba
            if relu:
                _backend.get_backend(device, "relu").relu(y2, y2)
        else:
            _backend.get_backend(device, op).linear(
                _rows(xa), arr.contiguous(wa), None if ba is None else arr.contiguous(ba), y2, relu)
    return user_out if user_out is not None else kind.wrap(y)


def linear_backward(grad_out, x, weight, *, activation=None, output=None, needs_input_grad=True,
                    needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of :func:`linear`: ``(grad_x, grad_weight, grad_bias)``.

    With ``g' = grad_out`` masked by ``output <= 0`` when the forward fused a
    ReLU (pass ``activation="relu"`` and the forward result as ``output``):
    ``grad_x = g' @ weight``, ``grad_weight = g'^T @ x`` (batch dims flattened),
    ``grad_bias = g'`` summed over every axis but the last.

    Parameters
    ----------
    grad_out : array (..., out_features)
    x : array (..., in_features), the forward input
    weight : array (out_features, in_features)
    activation : None or "relu"
    output : array like grad_out, required with activation="relu"
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Gradients not asked for are not computed and returned as None.

    Returns
    -------
    tuple
        ``(grad_x or None, grad_weight or None, grad_bias or None)``; the
        reductions run in a fixed order (deterministic run to run).
    """
    op = "linear_backward"
    relu = check_activation(op, activation)
    xa, wa, _, kind, device, dtype = _linear_args(op, x, weight, None)
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    arr.check_same_device(op, {"x": kind, "grad_out": gkind})
    arr.check_same_dtype(op, "grad_out", ga, dtype, "x")
    expected = tuple(xa.shape[:-1]) + (wa.shape[0],)
    if tuple(ga.shape) != expected:
        raise ValueError(f"{op}: grad_out must have shape {expected}, got {tuple(ga.shape)}")
    ya = _relu_output(op, output, relu, ga, dtype, device)
    xp = arr.xp_of(xa)
    grad_x = xp.empty(xa.shape, dtype=dtype) if needs_input_grad else None
    grad_w = xp.empty(wa.shape, dtype=dtype) if needs_weight_grad else None
    grad_b = xp.empty((wa.shape[0],), dtype=dtype) if needs_bias_grad else None
    for g in (grad_x, grad_w, grad_b):
        if g is not None:
            g[...] = 0  # the kernels overwrite; this covers empty reductions (batch 0, no features)
    if ga.size and xa.size and (grad_x is not None or grad_w is not None or grad_b is not None):
        _backend.get_backend(device, op).linear_backward(
            _rows(ga), _rows(xa), arr.contiguous(wa), None if ya is None else _rows(ya),
            None if grad_x is None else grad_x.reshape(-1, xa.shape[-1]), grad_w, grad_b)
    elif ga.size and grad_b is not None:  # no input features: only the bias gradient is non-zero
        g2 = _rows(ga) if ya is None else xp.where(_rows(ya) <= 0, 0, _rows(ga))
        grad_b[...] = g2.sum(axis=0)
    return tuple(None if g is None else kind.wrap(g) for g in (grad_x, grad_w, grad_b))


def _relu_output(op, output, relu, grad, dtype, device):
    """The forward output that masks the gradient, validated; None without a fused ReLU."""
    if not relu:
        return None
    if output is None:
        raise ValueError(f"{op}: activation='relu' needs output= (the forward result) to mask the gradient")
    ya, ykind = arr.intake(op, "output", output)
    if ykind.device != device:
        raise ValueError(f"{op}: output must be on {device} like grad_out, got {ykind.device}")
    arr.check_same_dtype(op, "output", ya, dtype, "grad_out")
    if tuple(ya.shape) != tuple(grad.shape):
        raise ValueError(f"{op}: output must have grad_out's shape {tuple(grad.shape)}, got {tuple(ya.shape)}")
    return ya


__all__ = ["matmul", "linear", "linear_backward"]
