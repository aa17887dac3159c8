"""2-D convolution (cross-correlation, as torch), NCHW input, OIHW weight, forward and backward.

Arguments follow ``torch.nn.functional.conv2d``; padding also takes
``"same"`` / ``"valid"`` and ONNX-style asymmetric ``((top, bottom), (left, right))``.
"""
from __future__ import annotations

from .. import _backend
from .. import _lepton_geometry as geometry
from .._backend import ConvParams
from . import _arrays as arr
from .linear import _relu_output, check_activation
from .pool import _padding, _pair


def _conv_padding(op, padding, stride, kernel, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1 (as torch), got stride {stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # the odd pixel goes to the end, as torch
            return tuple(pads)
        raise ValueError(f"{op}: padding must be an int, a pair, 'same', 'valid' or ((top, bottom), "
                         f"(left, right)), got {padding!r}")
    return _padding(op, padding)


def _groups(op, groups, c_in, c_out):
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide both input channels ({c_in}) and output "
                         f"channels ({c_out})")
    return groups


_geometries: dict = {}  # (x.shape, w.shape, stride, padding, dilation, groups) -> _geometry's result


def _geometry(op, x_shape, w_shape, stride, padding, dilation, groups):
    """Validated ConvParams and output (H, W) for x (N, C, H, W) and weight (O, C/groups, KH, KW),
    remembered per plain set of arguments (see ``_arrays.remembered``)."""
    if not (arr.plain(stride) and arr.plain(padding) and arr.plain(dilation) and type(groups) is int):
        return _parse_geometry(op, x_shape, w_shape, stride, padding, dilation, groups)
    key = (tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups)
    return arr.remembered(_geometries, key,
                          lambda: _parse_geometry(op, x_shape, w_shape, stride, padding, dilation, groups))


def _parse_geometry(op, x_shape, w_shape, stride, padding, dilation, groups):
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    kernel = (int(w_shape[2]), int(w_shape[3]))
    pt, pb, pl, pr = _conv_padding(op, padding, stride, kernel, dilation)
    c_in, c_out = int(x_shape[1]), int(w_shape[0])
    groups = _groups(op, groups, c_in, c_out)
    if int(w_shape[1]) * groups != c_in:
        raise ValueError(f"{op}: weight expects {int(w_shape[1]) * groups} input channels "
                         f"({w_shape[1]} per group x {groups} groups) but x has {c_in}")
    if min(kernel) < 1:
        raise ValueError(f"{op}: weight's kernel size must be positive, got {kernel}")
    # the output size, and every check of the window against the input, by csrc/geometry's rule
    out = geometry.conv2d_output_size(op, tuple(int(s) for s in x_shape), tuple(int(s) for s in w_shape),
                                      *stride, pt, pb, pl, pr, *dilation, groups)
    params = ConvParams(stride[0], stride[1], pt, pb, pl, pr, dilation[0], dilation[1], groups)
    return params, tuple(out)


def _conv_args(op, x, weight, bias):
    xa, xkind = arr.intake(op, "x", x)
    wa, wkind = arr.intake(op, "weight", weight)
    kinds = {"x": xkind, "weight": wkind}
    ba = None
    if bias is not None:
        ba, kinds["bias"] = arr.intake(op, "bias", bias)
    device = arr.check_same_device(op, kinds)
    dtype = arr.check_float(op, "x", xa)
    arr.check_same_dtype(op, "weight", wa, dtype, "x")
    arr.check_ndim(op, "x", xa, (4,), "4-D (N, C_in, H, W)")
    arr.check_ndim(op, "weight", wa, (4,), "4-D (C_out, C_in/groups, KH, KW)")
    if ba is not None:
        arr.check_same_dtype(op, "bias", ba, dtype, "x")
        if ba.ndim != 1 or ba.shape[0] != wa.shape[0]:
            raise ValueError(f"{op}: bias must have shape ({wa.shape[0]},) (one per output channel), "
                             f"got {tuple(ba.shape)}")
    return xa, wa, ba, xkind, device, dtype


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None):
    """2-D convolution with bias and optional ReLU fused into the output write.

    ``y[n, o, i, j] = act(bias[o] + sum_{c, a, b} x[n, g*C_g + c, i*sH - pad_top + a*dH,
    j*sW - pad_left + b*dW] * weight[o, c, a, b])`` with ``g = o // (C_out / groups)``
    and zero padding.

    Parameters
    ----------
    x : array (N, C_in, H, W), float32 (fast path) or float64
    weight : array (C_out, C_in/groups, KH, KW), same dtype
    bias : array (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), "same" (stride 1 only), "valid" or ((top, bottom), (left, right))
        May exceed half the kernel.
    groups : int
        Divides C_in and C_out; ``groups == C_in`` is a depthwise convolution.
    activation : None or "relu"
        Fused ReLU (NaN propagates).
    out : array (N, C_out, H_out, W_out), optional

    Returns
    -------
    array (N, C_out, H_out, W_out)
        ``H_out = (H + pad_top + pad_bottom - dH*(KH-1) - 1) // sH + 1``.
    """
    if out is None and (activation is None or activation == "relu") and (y := arr.call_whole(
            "conv2d", x, weight, bias, stride, padding, dilation, groups, activation is not None)) is not None:
        return y  # the small-call path
    op = "conv2d"
    relu = check_activation(op, activation)
    xa, wa, ba, kind, device, dtype = _conv_args(op, x, weight, bias)
    params, (oh, ow) = _geometry(op, xa.shape, wa.shape, stride, padding, dilation, groups)
    shape = (xa.shape[0], wa.shape[0], oh, ow)
    y, user_out = arr.output_buffer(op, xa, shape, dtype, out, device, {"x": xa, "weight": wa, "bias": ba})
    if y.size:
        if xa.shape[1] == 0:  # no input channels: bias (and ReLU) only
            y[...] = 0 if ba is None else ba[None, :, None, None]
            if relu:
                _backend.get_backend(device, "relu").relu(y, y)
        else:
            _backend.get_backend(device, op).conv2d(
                arr.contiguous(xa), arr.contiguous(wa), None if ba is None else arr.contiguous(ba), y,
                params, relu)
    return user_out if user_out is not None else kind.wrap(y)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
                    output=None, needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True):
    """Gradients of :func:`conv2d`: ``(grad_x, grad_weight, grad_bias)``.

    With ``g' = grad_out`` masked where ``output <= 0`` when the forward fused
    a ReLU (pass ``activation="relu"`` and the forward result as ``output``):
    ``grad_x`` is the transposed convolution of ``g'`` with ``weight``,
    ``grad_weight[o, c, a, b] = sum_{n, i, j} g'[n, o, i, j] * x_pad[n, c, i*sH + a*dH, j*sW + b*dW]``,
    ``grad_bias[o] = sum_{n, i, j} g'[n, o, i, j]``.

    Parameters
    ----------
    grad_out : array (N, C_out, H_out, W_out)
    x : array (N, C_in, H, W), the forward input
    weight : array (C_out, C_in/groups, KH, KW)
    stride, padding, dilation, groups
        As given to the forward call.
    activation : None or "relu"
    output : array like grad_out, required with activation="relu"
    needs_input_grad, needs_weight_grad, needs_bias_grad : bool
        Gradients not asked for are not computed (a first layer needs no grad_x).

    Returns
    -------
    tuple
        ``(grad_x or None, grad_weight or None, grad_bias or None)``. Batch
        reductions run in a fixed order, without atomics (deterministic).
    """
    op = "conv2d_backward"
    relu = check_activation(op, activation)
    xa, wa, _, kind, device, dtype = _conv_args(op, x, weight, None)
    params, (oh, ow) = _geometry(op, xa.shape, wa.shape, stride, padding, dilation, groups)
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    arr.check_same_device(op, {"x": kind, "grad_out": gkind})
    arr.check_same_dtype(op, "grad_out", ga, dtype, "x")
    expected = (xa.shape[0], wa.shape[0], oh, ow)
    if tuple(ga.shape) != expected:
        raise ValueError(f"{op}: grad_out must have shape {expected}, got {tuple(ga.shape)}")
    ya = _relu_output(op, output, relu, ga, dtype, device)
    xp = arr.xp_of(xa)
    grad_x = xp.empty(xa.shape, dtype=dtype) if needs_input_grad else None
    grad_w = xp.empty(wa.shape, dtype=dtype) if needs_weight_grad else None
    grad_b = xp.empty((wa.shape[0],), dtype=dtype) if needs_bias_grad else None
    wanted = [g for g in (grad_x, grad_w, grad_b) if g is not None]
    if ga.size and xa.size and wanted:
        _backend.get_backend(device, op).conv2d_backward(
            arr.contiguous(ga), arr.contiguous(xa), arr.contiguous(wa),
            None if ya is None else arr.contiguous(ya), grad_x, grad_w, grad_b, params)
    else:  # empty batch or no channels: every gradient is an empty sum
        for g in wanted:
            g[...] = 0
        if ga.size and grad_b is not None:
            g2 = ga if ya is None else xp.where(ya <= 0, 0, ga)
            grad_b[...] = g2.sum(axis=(0, 2, 3))
    return tuple(None if g is None else kind.wrap(g) for g in (grad_x, grad_w, grad_b))


__all__ = ["conv2d", "conv2d_backward"]
