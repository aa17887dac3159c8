"""Numba CPU backend: the kernel interface of ``lepton_kernels._backend`` as
``@njit(parallel=True)`` kernels over NumPy arrays.

Layouts: element-wise ops see flat arrays; bias_relu sees (N, C, S); pooling
sees NCHW planes; convolution is NCHW x OIHW; matmul/linear are row-major
matrices. Every function writes into preallocated outputs; float32 and
float64 each get their own specialization. Semantics follow
``csrc/lepton/elementwise.h``, ``csrc/lepton/pool.h``, ``csrc/lepton/conv.h``
and ``csrc/lepton/linear.h``; the conv/linear kernels are in ``conv.py``. The
numba.cuda backend lives in ``lepton_kernels.numba_backend.cuda``.
"""
from __future__ import annotations

from lepton_kernels._backend import KERNEL_NAMES as _KERNEL_NAMES

import numpy as np

try:
    import numba  # noqa: F401  (raises ImportError cleanly when numba is absent)
except ImportError as _exc:  # the registry catches this and records the reason
    raise ImportError(f"numba is not installed ({_exc})") from _exc

from . import conv as _c
from .loss import cross_entropy  # noqa: F401  (kernel interface)
from .optim import adam_step, sgd_step  # noqa: F401  (kernel interface)
from .quant import (  # noqa: F401  (kernel interface)
    conv2d_integer,
    dequantize,
    dynamic_quantize,
    matmul_integer,
    qlinear_conv2d,
    qlinear_matmul,
    quantize,
)
from . import cpu as _k


# Placeholder handed to the max-pool kernel when the caller wants no indices,
# so that one compiled specialization serves both cases.
_NO_INDICES = np.zeros((1, 1, 1, 1), dtype=np.int64)


def unavailable_reason() -> str | None:
    """None: importing this module already proved numba is importable."""
    return None


def relu(x, out):
    _k.relu_kernel(x.reshape(-1), out.reshape(-1))


def relu_backward(grad_out, x, out):
    _k.relu_backward_kernel(grad_out.reshape(-1), x.reshape(-1), out.reshape(-1))


def bias_relu(x3, bias, out3):
    _k.bias_relu_kernel(x3, bias, out3)


def bias_relu_backward(grad_out3, y3, grad_x3, grad_bias):
    if grad_bias is None:
        _k.bias_relu_backward_kernel(grad_out3, y3, grad_x3)
    else:
        _k.bias_relu_backward_bias_kernel(grad_out3, y3, grad_x3, grad_bias)


def activation(x, out, kind, param):
    _k.activation_kernel(x.reshape(-1), out.reshape(-1), _k.ACTIVATION_CODES[kind], float(param))


def activation_backward(grad_out, saved, out, kind, param):
    _k.activation_backward_kernel(grad_out.reshape(-1), saved.reshape(-1), out.reshape(-1), _k.ACTIVATION_CODES[kind],
                                  float(param))


def batch_norm_stats(x3, mean, var):
    _k.batch_norm_stats_kernel(x3, mean, var)


def batch_norm_apply(x3, scale, shift, out3, relu):
    _k.batch_norm_apply_kernel(x3, scale, shift, out3, bool(relu))


def batch_norm_backward_reduce(g3, x3, mean, y3, sum_g, sum_gx):
    _k.batch_norm_backward_reduce_kernel(g3, x3, mean, g3 if y3 is None else y3, y3 is not None, sum_g, sum_gx)


def batch_norm_backward_apply(g3, x3, mean, y3, k1, k2, k3, grad_x3):
    _k.batch_norm_backward_apply_kernel(g3, x3, mean, g3 if y3 is None else y3, y3 is not None, k1, k2, k3,
                                        grad_x3)


def _geometry(p):
    return (
        int(p.kernel_h), int(p.kernel_w), int(p.stride_h), int(p.stride_w),
        int(p.pad_top), int(p.pad_left), int(p.dilation_h), int(p.dilation_w),
    )


def max_pool2d(x, out, indices, p):
    want = indices is not None
    if out.dtype.kind == "f":
        _k.max_pool2d_kernel(x, out, indices if want else _NO_INDICES, want, *_geometry(p))
        return
    # int8 / uint8: pool into float32 (exact), then an all-padding window's -inf becomes the type minimum
    values = np.empty(out.shape, np.float32)
    _k.max_pool2d_kernel(x, values, indices if want else _NO_INDICES, want, *_geometry(p))
    out[...] = np.maximum(values, np.iinfo(out.dtype).min)


def max_pool2d_backward(grad_out, indices, grad_in, p):
    n, c, h, w = grad_in.shape
    bad = _k.max_pool2d_backward_kernel(
        grad_out.reshape(n * c, -1), indices.reshape(n * c, -1), grad_in.reshape(n * c, h * w)
    )
    if bad:
        raise ValueError(
            f"max_pool2d_backward: indices must be -1 or in [0, {h * w}) (the input plane "
            f"of {h}x{w}), got {bad} entries outside that range"
        )


def avg_pool2d(x, out, p):
    kh, kw, sh, sw, pt, pl, _, _ = _geometry(p)
    _k.avg_pool2d_kernel(
        x, out, kh, kw, sh, sw, pt, int(p.pad_bottom), pl, int(p.pad_right),
        bool(p.count_include_pad), int(p.divisor_override),
    )


def avg_pool2d_backward(grad_out, grad_in, p):
    kh, kw, sh, sw, pt, pl, _, _ = _geometry(p)
    _k.avg_pool2d_backward_kernel(
        grad_out, grad_in, kh, kw, sh, sw, pt, int(p.pad_bottom), pl, int(p.pad_right),
        bool(p.count_include_pad), int(p.divisor_override),
    )


# ---------------------------------------------------------------- linear / conv

def _optional(a, dtype):
    """(array, present) with a 1-element placeholder for None: one specialization serves both."""
    return (a, True) if a is not None else (np.zeros(1, dtype=dtype), False)


def _relu_masked(grad, y):
    """grad where the forward output y > 0 (or NaN), else 0; grad itself when y is None."""
    if y is None:
        return grad
    masked = np.empty_like(grad)
    _k.relu_backward_kernel(grad.reshape(-1), y.reshape(-1), masked.reshape(-1))
    return masked


def matmul(a, b, out):
    _c.gemm_kernel(a, b, np.zeros(1, dtype=a.dtype), out, False, False)


def linear(x2, weight, bias, out2, relu):
    bias, has_bias = _optional(bias, x2.dtype)
    _c.gemm_kernel(x2, np.ascontiguousarray(weight.T), bias, out2, has_bias, bool(relu))


def linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b):
    g = _relu_masked(grad_out2, y2)
    none = np.zeros(1, dtype=g.dtype)
    if grad_x2 is not None:
        _c.gemm_kernel(g, weight, none, grad_x2, False, False)
    if grad_w is not None:
        _c.gemm_kernel(np.ascontiguousarray(g.T), x2, none, grad_w, False, False)
    if grad_b is not None:
        _c.channel_sum_kernel(g.reshape(g.shape[0], g.shape[1], 1), grad_b)


def _conv_geometry(c):
    return (int(c.stride_h), int(c.stride_w), int(c.pad_top), int(c.pad_left),
            int(c.dilation_h), int(c.dilation_w))


def conv2d(x, weight, bias, out, c, relu):
    bias, has_bias = _optional(bias, x.dtype)
    _c.conv2d_kernel(x, weight, bias, out, has_bias, bool(relu), *_conv_geometry(c))


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    g = _relu_masked(grad_out, y)
    geometry = _conv_geometry(c)
    if grad_x is not None:
        _c.conv2d_grad_x_kernel(g, weight, grad_x, *geometry)
    if grad_w is not None:
        _c.conv2d_grad_w_kernel(g, x, grad_w, *geometry)
    if grad_b is not None:
        n, o = g.shape[0], g.shape[1]
        _c.channel_sum_kernel(g.reshape(n, o, -1), grad_b)

# The kernel-interface functions this backend defines (see _backend.KERNEL_NAMES).
__all__ = ["unavailable_reason"] + [_name for _name in _KERNEL_NAMES if _name in globals()]
