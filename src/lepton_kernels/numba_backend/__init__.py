"""Numba CPU backend: the kernel interface of ``lepton_kernels._backend`` as
``@njit(parallel=True)`` kernels over NumPy arrays.

Layouts: element-wise ops see flat arrays; bias_relu sees (N, C, S); pooling
sees NCHW planes. Every function writes into preallocated outputs; float32 and
float64 each get their own specialization. Semantics follow
``csrc/lepton/elementwise.h`` and ``csrc/lepton/pool.h``. The numba.cuda
backend lives in ``lepton_kernels.numba_backend.cuda``.
"""
from __future__ import annotations

import numpy as np

try:
    import numba  # noqa: F401  (raises ImportError cleanly when numba is absent)
except ImportError as _exc:  # the registry catches this and records the reason
    raise ImportError(f"numba is not installed ({_exc})") from _exc

from . import cpu as _k

__all__ = [
    "unavailable_reason",
    "relu",
    "relu_backward",
    "bias_relu",
    "bias_relu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]

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


def _geometry(p):
    return (
        int(p.kernel_h), int(p.kernel_w), int(p.stride_h), int(p.stride_w),
        int(p.pad_top), int(p.pad_left), int(p.dilation_h), int(p.dilation_w),
    )


def max_pool2d(x, out, indices, p):
    want = indices is not None
    _k.max_pool2d_kernel(x, out, indices if want else _NO_INDICES, want, *_geometry(p))


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
