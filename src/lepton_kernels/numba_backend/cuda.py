"""numba.cuda backend: the kernel interface of ``lepton_kernels._backend`` on
device arrays (anything exposing ``__cuda_array_interface__``: CuPy arrays,
Numba device arrays; under ``NUMBA_ENABLE_CUDASIM=1`` the simulator's arrays).

Every kernel sees flat 1-D views and walks its elements with a grid-stride
loop, one thread per output element. Pooling layouts are NCHW, bias_relu is
(N, C, S). max_pool2d also takes int8 / uint8 (forward only; an all-padding
window gives the type's minimum). Average-pool backward GATHERS: each input
element sums the output windows that contain it, in a fixed order. Max-pool
backward needs no geometry: one thread per (n, c) plane scatters grad_out
through the indices in output order, in the array's dtype (bit-equal to the sequential C++ scatter); an index
outside [0, h*w) is skipped, never used as an address (bad indices are rejected
by ``lepton_kernels.ops`` before any CUDA backend runs). Both are deterministic.
Kernels run on CuPy's current stream when CuPy is importable, else on Numba's
default stream. Semantics: ``csrc/lepton/pool.h`` and
``csrc/lepton/elementwise.h``. The other sums (average pooling and its
gradient, grad_bias) accumulate in float64 for both dtypes; everything else
stays in the array's dtype. matmul, linear and conv2d (forward and backward)
live in ``cuda_conv``, the optimizer updates and the fused cross-entropy in
``cuda_optim``, the int8 quantize / dequantize / dynamic_quantize in ``cuda_quant``;
all are re-exported here.
"""
from __future__ import annotations

from lepton_kernels._backend import KERNEL_NAMES as _KERNEL_NAMES

import math

import numpy as np
from numba import cuda

_SIM = bool(getattr(cuda.config, "ENABLE_CUDASIM", 0))
# The simulator runs each thread as a Python thread: keep launches tiny there
# (grid-stride loops make any grid size correct).
_THREADS = 32 if _SIM else 256
_MAX_BLOCKS = 2 if _SIM else 65535
_REDUCE_THREADS = 32 if _SIM else 256  # power of two, <= _SHARED
_SHARED = 256



def unavailable_reason() -> str | None:
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # a broken driver install must not break the import
        return f"numba.cuda cannot query the driver: {exc}"
    return "numba.cuda finds no CUDA GPU/driver (NUMBA_ENABLE_CUDASIM=1 enables the simulator)"


# ---------------------------------------------------------------- launching

def _flat(a):
    """A 1-D device view of a C-contiguous device array (no copy)."""
    if not _SIM:
        # No sync on import: we launch on the stream the caller's work is ordered on.
        a = cuda.as_cuda_array(a, sync=False)
    return a.reshape(a.size)


def _stream():
    if not _SIM:
        try:
            import cupy
        except ImportError:
            pass
        else:
            ptr = cupy.cuda.get_current_stream().ptr
            if ptr:
                return cuda.external_stream(ptr)
    return cuda.default_stream()


def _launch(kernel, total, *args):
    blocks = max(1, min(_MAX_BLOCKS, math.ceil(total / _THREADS)))
    kernel[blocks, _THREADS, _stream()](*args)


# ---------------------------------------------------------------- element-wise

@cuda.jit(cache=True)
def _relu_k(x, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        out[i] = v if not (v <= 0) else 0  # NaN passes through


@cuda.jit(cache=True)
def _relu_backward_k(grad_out, x, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        # Separate stores keep float32 math in float32 (no int/float unification).
        if x[i] <= 0:
            out[i] = 0
        else:
            out[i] = grad_out[i]


@cuda.jit(cache=True)
def _bias_relu_k(x, bias, out, c, s):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i] + bias[(i // s) % c]
        out[i] = v if not (v <= 0) else 0


@cuda.jit(cache=True)
def _bias_relu_backward_bias_k(grad_out, y, grad_x, grad_bias, n, c, s):
    # One block per channel: threads stride over the channel's n*s elements,
    # then a fixed-shape tree reduction in shared memory (deterministic).
    ch = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    part = cuda.shared.array(_SHARED, dtype=np.float64)
    acc = 0.0
    for k in range(tid, n * s, nthreads):
        i = ((k // s) * c + ch) * s + k % s
        if y[i] <= 0:
            grad_x[i] = 0
        else:
            g = grad_out[i]
            grad_x[i] = g
            acc += g
    part[tid] = acc
    cuda.syncthreads()
    half = nthreads // 2
    while half > 0:
        if tid < half:
            part[tid] += part[tid + half]
        cuda.syncthreads()
        half //= 2
    if tid == 0:
        grad_bias[ch] = part[0]


def relu(x, out):
    xf = _flat(x)
    _launch(_relu_k, xf.size, xf, _flat(out))


def relu_backward(grad_out, x, out):
    xf = _flat(x)
    _launch(_relu_backward_k, xf.size, _flat(grad_out), xf, _flat(out))


def bias_relu(x3, bias, out3):
    n, c, s = x3.shape
    xf = _flat(x3)
    _launch(_bias_relu_k, xf.size, xf, _flat(bias), _flat(out3), c, s)


def bias_relu_backward(grad_out3, y3, grad_x3, grad_bias):
    n, c, s = y3.shape
    g, y, gx = _flat(grad_out3), _flat(y3), _flat(grad_x3)
    if grad_bias is None:
        _launch(_relu_backward_k, y.size, g, y, gx)
    else:
        _bias_relu_backward_bias_k[c, _REDUCE_THREADS, _stream()](g, y, gx, _flat(grad_bias), n, c, s)


# ---------------------------------------------------------------- pooling

@cuda.jit(cache=True)
def _max_pool_k(x, out, indices, want_indices, lowest, h, w, oh_n, ow_n, kh, kw, sh, sw, pt, pl, dh, dw):
    # lowest: what a window entirely in padding gives, typed like out (-inf, or the
    # int8/uint8 minimum: converting -inf to an integer type is undefined on a GPU).
    start, step = cuda.grid(1), cuda.gridsize(1)
    for o in range(start, out.size, step):
        ow = o % ow_n
        oh = (o // ow_n) % oh_n
        base = (o // (ow_n * oh_n)) * h * w
        ih0 = oh * sh - pt
        iw0 = ow * sw - pl
        best = x[0]  # typed like x; only read once best_idx >= 0
        best_idx = -1
        for i in range(kh):
            ih = ih0 + i * dh
            if ih < 0 or ih >= h:
                continue
            for j in range(kw):
                iw = iw0 + j * dw
                if iw < 0 or iw >= w:
                    continue
                v = x[base + ih * w + iw]
                # First in-bounds tap, then first strictly greater; first NaN sticks.
                if best_idx < 0 or v > best or (v != v and best == best):
                    best = v
                    best_idx = ih * w + iw
        if best_idx < 0:
            out[o] = lowest
        else:
            out[o] = best
        if want_indices:
            indices[o] = best_idx


@cuda.jit(cache=True)
def _max_pool_backward_k(grad_out, indices, grad_in, planes, in_plane, out_plane):
    # One thread per (n, c) plane: zero it, then scatter in output order, in the
    # array's dtype, so the sums are bit-equal to the sequential C++ scatter. The
    # geometry is not needed; an index outside [0, in_plane) is skipped.
    start, step = cuda.grid(1), cuda.gridsize(1)
    for q in range(start, planes, step):
        ibase = q * in_plane
        obase = q * out_plane
        for e in range(in_plane):
            grad_in[ibase + e] = 0
        for k in range(out_plane):
            at = indices[obase + k]
            if at >= 0 and at < in_plane:
                grad_in[ibase + at] += grad_out[obase + k]


@cuda.jit(device=True, inline=True)
def _avg_window(o, stride, pad_before, pad_after, kernel, size):
    start = o * stride - pad_before
    end = min(start + kernel, size + pad_after)
    return max(start, 0), min(end, size), end - start


@cuda.jit(device=True, inline=True)
def _avg_divisor(pool_h, pool_w, count_h, count_w, count_include_pad, divisor_override):
    if divisor_override > 0:
        return divisor_override
    if count_include_pad:
        return pool_h * pool_w
    return count_h * count_w


@cuda.jit(cache=True)
def _avg_pool_k(x, out, h, w, oh_n, ow_n, kh, kw, sh, sw, pt, pb, pl, pr, include_pad, override):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for o in range(start, out.size, step):
        ow = o % ow_n
        oh = (o // ow_n) % oh_n
        base = (o // (ow_n * oh_n)) * h * w
        h0, h1, pool_h = _avg_window(oh, sh, pt, pb, kh, h)
        w0, w1, pool_w = _avg_window(ow, sw, pl, pr, kw, w)
        if h1 <= h0 or w1 <= w0:
            out[o] = 0
            continue
        acc = 0.0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                acc += x[base + ih * w + iw]
        out[o] = acc / _avg_divisor(pool_h, pool_w, h1 - h0, w1 - w0, include_pad, override)


@cuda.jit(cache=True)
def _avg_pool_backward_k(grad_out, grad_in, h, w, oh_n, ow_n, kh, kw, sh, sw, pt, pb, pl, pr,
                         include_pad, override):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, grad_in.size, step):
        iw = e % w
        ih = (e // w) % h
        obase = (e // (w * h)) * oh_n * ow_n
        acc = 0.0
        for i in range(kh - 1, -1, -1):
            t = ih + pt - i
            if t < 0 or t % sh != 0 or t // sh >= oh_n:
                continue
            oh = t // sh
            h0, h1, pool_h = _avg_window(oh, sh, pt, pb, kh, h)
            for j in range(kw - 1, -1, -1):
                u = iw + pl - j
                if u < 0 or u % sw != 0 or u // sw >= ow_n:
                    continue
                ow = u // sw
                w0, w1, pool_w = _avg_window(ow, sw, pl, pr, kw, w)
                div = _avg_divisor(pool_h, pool_w, h1 - h0, w1 - w0, include_pad, override)
                acc += grad_out[obase + oh * ow_n + ow] / div
        grad_in[e] = acc


def _sizes(inp, outp):
    return int(inp.shape[2]), int(inp.shape[3]), int(outp.shape[2]), int(outp.shape[3])


def _lowest(dtype):
    """The value of an all-padding max-pool window, as a scalar of out's dtype."""
    dtype = np.dtype(dtype)
    return dtype.type(np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf)


def max_pool2d(x, out, indices, p):
    want = indices is not None
    idx = _flat(indices) if want else cuda.device_array(1, dtype=np.int64)
    of = _flat(out)
    _launch(_max_pool_k, of.size, _flat(x), of, idx, want, _lowest(out.dtype), *_sizes(x, out),
            int(p.kernel_h), int(p.kernel_w), int(p.stride_h), int(p.stride_w),
            int(p.pad_top), int(p.pad_left), int(p.dilation_h), int(p.dilation_w))


def max_pool2d_backward(grad_out, indices, grad_in, p):
    # p (the geometry) is unused: the scatter follows the indices.
    n, c, h, w = (int(s) for s in grad_in.shape)
    oh, ow = int(grad_out.shape[2]), int(grad_out.shape[3])
    _launch(_max_pool_backward_k, n * c, _flat(grad_out), _flat(indices), _flat(grad_in),
            n * c, h * w, oh * ow)


def _avg_args(p):
    return (int(p.kernel_h), int(p.kernel_w), int(p.stride_h), int(p.stride_w),
            int(p.pad_top), int(p.pad_bottom), int(p.pad_left), int(p.pad_right),
            bool(p.count_include_pad), int(p.divisor_override))


def avg_pool2d(x, out, p):
    of = _flat(out)
    _launch(_avg_pool_k, of.size, _flat(x), of, *_sizes(x, out), *_avg_args(p))


def avg_pool2d_backward(grad_out, grad_in, p):
    gf = _flat(grad_in)
    _launch(_avg_pool_backward_k, gf.size, _flat(grad_out), gf, *_sizes(grad_in, grad_out),
            *_avg_args(p))


# ---------------------------------------------------------------- linear / conv
# At the end: cuda_conv uses the launch helpers above (it imports this module late).
from .cuda_conv import (  # noqa: E402
    conv2d,
    conv2d_backward,
    linear,
    linear_backward,
    matmul,
)
from .cuda_optim import (  # noqa: E402
    adam_step,
    cross_entropy,
    sgd_step,
)
from .cuda_quant import (  # noqa: E402
    dequantize,
    dynamic_quantize,
    quantize,
)

# The kernel-interface functions this backend defines (see _backend.KERNEL_NAMES).
__all__ = ["unavailable_reason"] + [_name for _name in _KERNEL_NAMES if _name in globals()]
