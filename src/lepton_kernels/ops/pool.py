"""2-D max and average pooling over NCHW (or CHW) arrays, forward and backward.

Arguments follow ``torch.nn.functional.max_pool2d`` / ``avg_pool2d``, plus
ONNX-style padding: larger than half the kernel, and asymmetric as
``((top, bottom), (left, right))``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _backend
from .. import _lepton_geometry as geometry
from .._backend import PoolParams
from . import _arrays as arr


# --------------------------------------------------------------------------- arguments
# Integer types max_pool2d accepts (forward only): quantized activations.
_INT8_TYPES = (np.dtype(np.int8), np.dtype(np.uint8))

def _int(op, name, v):
    if type(v) is int and -arr.INT64_MAX - 1 <= v <= arr.INT64_MAX:  # the common case, without the ABC check
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return arr.check_int64(op, name, int(v))


def _pair(op, name, v, minimum):
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = (v[0], v[0])
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        pair = (_int(op, name, v[0]), _int(op, name, v[1]))
    else:
        pair = (_int(op, name, v),) * 2
    if min(pair) < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {bound}, got {v!r}")
    return pair


def _padding(op, padding):
    """(top, bottom, left, right) from int, (ph, pw) or ((top, bottom), (left, right))."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) for p in padding):
        (t, b), (l, r) = (_pair(op, "padding", p, 0) for p in padding)
        return t, b, l, r
    ph, pw = _pair(op, "padding", padding, 0)
    return ph, ph, pw, pw


_geometries: dict = {}  # (shape and every geometry argument) -> _geometry's result


def _geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad=True,
              divisor_override=None):
    """Validated PoolParams and output (H, W) for an input of shape (..., H, W), remembered per
    plain set of arguments (see ``_arrays.remembered``; the flags must be exactly bools)."""
    args = (kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override)
    if not (arr.plain(kernel_size) and (stride is None or arr.plain(stride)) and arr.plain(padding)
            and arr.plain(dilation) and type(ceil_mode) is bool and type(count_include_pad) is bool
            and (divisor_override is None or type(divisor_override) is int)):
        return _parse_geometry(op, shape, *args)
    return arr.remembered(_geometries, (tuple(shape),) + args, lambda: _parse_geometry(op, shape, *args))


def _parse_geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad=True,
                    divisor_override=None):
    kh, kw = _pair(op, "kernel_size", kernel_size, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _pair(op, "stride", stride, 1)
    pt, pb, pl, pr = _padding(op, padding)
    dh, dw = _pair(op, "dilation", dilation, 1)
    for name, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{op}: {name} must be a bool, got {flag!r}")
    if divisor_override is not None:
        divisor_override = _int(op, "divisor_override", divisor_override)
        if divisor_override <= 0:
            raise ValueError(f"{op}: divisor_override must be a positive int or None, got {divisor_override}")
    # the output size, and every check of the window against the input, by csrc/geometry's rule
    oh, ow = geometry.pool2d_output_size(op, tuple(int(s) for s in shape), kh, kw, sh, sw, pt, pb, pl, pr, dh, dw,
                                         bool(ceil_mode))
    params = PoolParams(kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, bool(count_include_pad),
                        divisor_override or 0)
    return params, (oh, ow)


def _as_nchw(op, name, a):
    """4-D view of an NCHW or CHW array, and whether a batch axis was added."""
    arr.check_ndim(op, name, a, (3, 4), "3-D (C, H, W) or 4-D (N, C, H, W)")
    return (a[None], True) if a.ndim == 3 else (a, False)


def _input_shape(op, input_shape, batched_like):
    try:
        shape = tuple(_int(op, "input_shape", s) for s in input_shape)
    except TypeError:
        raise TypeError(f"{op}: input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) not in (3, 4) or min(shape) < 0:
        raise ValueError(f"{op}: input_shape must be (N, C, H, W) or (C, H, W), got {input_shape!r}")
    if (len(shape) == 4) != batched_like:
        raise ValueError(f"{op}: input_shape {shape} and grad_out must both have a batch axis or neither")
    return shape if len(shape) == 4 else (1,) + shape



def _unbatch(a, squeeze):
    return a[0] if squeeze else a


# --------------------------------------------------------------------------- max pooling
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """2-D max pooling over NCHW (or CHW) input.

    ``y[n, c, i, j] = max over a < kH, b < kW of x[n, c, i*sH - pad_top + a*dH, j*sW - pad_left + b*dW]``,
    skipping taps in the padding.

    Parameters
    ----------
    x : array, (N, C, H, W) or (C, H, W), float32, float64, int8 or uint8
        Quantized (int8/uint8) input pools directly: max commutes with the monotone
        affine quantization, so the result keeps x's scale and zero point.
    kernel_size, stride, dilation : int or (int, int)
        ``stride`` defaults to ``kernel_size``.
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        Implicit -inf padding; may exceed half the kernel (ONNX) and be asymmetric.
    ceil_mode : bool
        Round the output size up (PyTorch's rule: a window must start inside
        the input or the leading padding).
    return_indices : bool
        Also return int64 indices ``ih * W + iw`` into each input plane.
    out : array, optional
        Receives the values (C-contiguous, right shape and dtype).

    Returns
    -------
    y or (y, indices)
        Output ``H_out = floor_or_ceil((H + pads - dH*(kH-1) - 1) / sH) + 1``.
        Ties go to the first tap in row-major order. A window containing NaN
        gives NaN and its index points at the first NaN. A window entirely in
        the padding gives -inf (int8/uint8: the type's minimum) and index -1.
    """
    if out is None and return_indices is False and (  # the small-call path
            y := arr.call_whole("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)) is not None:
        return y
    op = "max_pool2d"
    xa, kind = arr.intake(op, "x", x)
    dtype = np.dtype(xa.dtype)
    if dtype not in _INT8_TYPES:
        arr.check_float(op, "x", xa)
    x4, squeeze = _as_nchw(op, "x", xa)
    params, (oh, ow) = _geometry(op, x4.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"{op}: return_indices must be a bool, got {return_indices!r}")
    shape4 = (x4.shape[0], x4.shape[1], oh, ow)
    user_shape = shape4[1:] if squeeze else shape4
    y, user_out = arr.output_buffer(op, xa, user_shape, dtype, out, kind.device, {"x": xa})
    y4 = y[None] if squeeze else y
    indices = arr.xp_of(xa).empty(shape4, dtype=np.int64) if return_indices else None
    if x4.size:
        _backend.get_backend(kind.device, op).max_pool2d(arr.contiguous(x4), y4, indices, params)
    elif y4.size:  # empty planes (H or W of 0 with padding): every window is padding
        y4[...] = np.iinfo(dtype).min if dtype in _INT8_TYPES else -np.inf
        if indices is not None:
            indices[...] = -1
    result = user_out if user_out is not None else kind.wrap(y)
    if not return_indices:
        return result
    return result, kind.wrap(_unbatch(indices, squeeze))


def max_pool2d_backward(grad_out, indices, input_shape, *, out=None):
    """Gradient of :func:`max_pool2d` from its indices.

    ``grad_in`` is zero except that each ``grad_out[n, c, i, j]`` is added at
    ``indices[n, c, i, j]`` of plane (n, c) (indices of -1 are skipped).

    Parameters
    ----------
    grad_out : array, (N, C, H_out, W_out) or (C, H_out, W_out), float
    indices : array, int64, same shape as grad_out
        From ``max_pool2d(..., return_indices=True)``; each in [-1, H*W).
    input_shape : tuple of int
        Shape of the forward input, (N, C, H, W) or (C, H, W).
    out : array, optional
        Receives ``grad_in`` (shape ``input_shape``).

    Returns
    -------
    array
        ``grad_in`` of shape ``input_shape``. Deterministic: each plane is
        accumulated in a fixed order.
    """
    op = "max_pool2d_backward"
    ga, gkind = arr.intake(op, "grad_out", grad_out)
    ia, ikind = arr.intake(op, "indices", indices)
    device = arr.check_same_device(op, {"grad_out": gkind, "indices": ikind})
    dtype = arr.check_float(op, "grad_out", ga)
    g4, squeeze = _as_nchw(op, "grad_out", ga)
    if np.dtype(ia.dtype) != np.int64:
        raise TypeError(f"{op}: indices must be int64, got {np.dtype(ia.dtype)}")
    if tuple(ia.shape) != tuple(ga.shape):
        raise ValueError(f"{op}: indices must have grad_out's shape {tuple(ga.shape)}, got {tuple(ia.shape)}")
    shape4 = _input_shape(op, input_shape, not squeeze)
    if shape4[:2] != tuple(g4.shape[:2]):
        raise ValueError(f"{op}: input_shape {tuple(input_shape)} does not match grad_out's batch and "
                         f"channels {tuple(g4.shape[:2])}")
    user_shape = shape4[1:] if squeeze else shape4
    grad_in, user_out = arr.output_buffer(op, ga, user_shape, dtype, out, device, {"grad_out": ga, "indices": ia})
    gin4 = grad_in[None] if squeeze else grad_in
    i4 = arr.contiguous(ia[None] if squeeze else ia)
    backend = _backend.get_backend(device, op)
    if g4.size and gin4.size:
        if backend.__name__ != "lepton_kernels._native_cpu":  # the C++ kernel checks its indices itself
            _check_indices(op, i4, shape4[2] * shape4[3])
        backend.max_pool2d_backward(arr.contiguous(g4), i4, gin4, _backward_params())
    elif gin4.size:
        gin4[...] = 0
    return user_out if user_out is not None else gkind.wrap(grad_in)


def _backward_params():
    # The scatter needs only the indices; the geometry is carried for the C++ API's descriptor.
    return PoolParams(1, 1, 1, 1, 0, 0, 0, 0)


def _check_indices(op, indices, plane):
    lo, hi = int(indices.min()), int(indices.max())
    if lo < -1 or hi >= plane:
        raise ValueError(f"{op}: indices must lie in [-1, {plane}) for input planes of {plane} elements, "
                         f"got values in [{lo}, {hi}]")


# --------------------------------------------------------------------------- average pooling
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """2-D average pooling over NCHW (or CHW) input.

    ``y[n, c, i, j] = sum of x over the window's taps inside the input / divisor``.

    Parameters
    ----------
    x : array, (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride : int or (int, int)
        ``stride`` defaults to ``kernel_size``.
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        Zero padding; may exceed half the kernel and be asymmetric.
    ceil_mode : bool
        Round the output size up (PyTorch's rule).
    count_include_pad : bool
        Divisor counts padding taps (the window clipped to the padded input)
        rather than only the taps inside the input.
    divisor_override : int, optional
        Positive divisor used for every window instead.
    out : array, optional
        Receives the result.

    Returns
    -------
    array
        A window with no tap inside the input gives 0.
    """
    if out is None and (y := arr.call_whole("avg_pool2d", x, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad, divisor_override)) is not None:
        return y  # the small-call path
    op = "avg_pool2d"
    xa, kind = arr.intake(op, "x", x)
    dtype = arr.check_float(op, "x", xa)
    x4, squeeze = _as_nchw(op, "x", xa)
    params, (oh, ow) = _geometry(op, x4.shape, kernel_size, stride, padding, 1, ceil_mode,
                                 count_include_pad, divisor_override)
    shape4 = (x4.shape[0], x4.shape[1], oh, ow)
    y, user_out = arr.output_buffer(op, xa, shape4[1:] if squeeze else shape4, dtype, out, kind.device, {"x": xa})
    y4 = y[None] if squeeze else y
    if x4.size:
        _backend.get_backend(kind.device, op).avg_pool2d(arr.contiguous(x4), y4, params)
    elif y4.size:
        y4[...] = 0
    return user_out if user_out is not None else kind.wrap(y)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, out=None):
    """Gradient of :func:`avg_pool2d`.

    ``grad_in[n, c, h, w] = sum over windows containing (h, w) of grad_out / divisor``,
    with the forward's geometry and divisor rules.

    Parameters
    ----------
    grad_out : array, (N, C, H_out, W_out) or (C, H_out, W_out), float
    input_shape : tuple of int
        Shape of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to the forward call.
    out : array, optional
        Receives ``grad_in``.

    Returns
    -------
    array
        ``grad_in`` of shape ``input_shape``.
    """
    op = "avg_pool2d_backward"
    ga, kind = arr.intake(op, "grad_out", grad_out)
    dtype = arr.check_float(op, "grad_out", ga)
    g4, squeeze = _as_nchw(op, "grad_out", ga)
    shape4 = _input_shape(op, input_shape, not squeeze)
    if shape4[:2] != tuple(g4.shape[:2]):
        raise ValueError(f"{op}: input_shape {tuple(input_shape)} does not match grad_out's batch and "
                         f"channels {tuple(g4.shape[:2])}")
    params, out_hw = _geometry(op, shape4, kernel_size, stride, padding, 1, ceil_mode,
                               count_include_pad, divisor_override)
    if tuple(g4.shape[2:]) != out_hw:
        raise ValueError(f"{op}: grad_out must have spatial shape {out_hw} for this input_shape and "
                         f"geometry, got {tuple(g4.shape[2:])}")
    grad_in, user_out = arr.output_buffer(op, ga, shape4[1:] if squeeze else shape4, dtype, out, kind.device,
                               {"grad_out": ga})
    gin4 = grad_in[None] if squeeze else grad_in
    if g4.size and gin4.size:
        _backend.get_backend(kind.device, op).avg_pool2d_backward(arr.contiguous(g4), gin4, params)
    elif gin4.size:
        gin4[...] = 0
    return user_out if user_out is not None else kind.wrap(grad_in)


__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
