"""numba.cuda int8 kernels: quantize, dequantize and dynamic (range) quantization with the
ONNX numerics of ``lepton_kernels.reference`` (the integer GEMM / convolution kernels are in
``cuda/kernels/quant.cuh`` only; this backend leaves them to the others).

* ``quantize``: one thread per element of the C-contiguous (outer, channels, inner) view;
  ``q = saturate(round_half_to_even(x / s[c]) + zp[c])`` with the division in float32 (as
  ONNX), rounded half to even exactly (floor plus a tie test, valid for |x / s| < 2^31;
  beyond that the value saturates); NaN -> zp[c].
* ``dequantize``: ``y = float32((float64(q) - zp[c]) * float64(s[c]))``, the float64
  product rounded once to float32, as the reference (exact for int8 / uint8).
* ``dynamic_quantize``: per-block min / max (with 0) in shared memory, the few block
  results reduced on the host; scale and zero point in float32 as ONNX, then ``quantize``.

Flat 1-D views; the launch helpers (streams, simulator-sized grids) live in ``.cuda``,
which re-exports these functions.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda


def _base():
    # Imported late: ``.cuda`` imports this module at its end.
    from . import cuda as base

    return base


_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@cuda.jit(cache=True)
def _quantize_k(x, scale, zp, q, channels, inner, lo, hi):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        c = (i // inner) % channels
        v = x[i]
        z = zp[c]
        if v != v:
            r = z
        else:
            t = v / scale[c]  # float32 / float32, correctly rounded
            if t >= 2147483648.0:
                r = hi
            elif t <= -2147483648.0:
                r = lo
            else:
                f = math.floor(t)
                d = t - f  # exact: the fraction of t
                if d > 0.5 or (d == 0.5 and f % 2 != 0):
                    f += 1
                r = f + z
        q[i] = min(max(r, lo), hi)


@cuda.jit(cache=True)
def _dequantize_k(q, scale, zp, y, channels, inner):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, q.size, step):
        c = (i // inner) % channels
        y[i] = (float(q[i]) - float(zp[c])) * float(scale[c])


@cuda.jit(cache=True)
def _minmax_k(x, partial):
    lo_s = cuda.shared.array(256, dtype=np.float32)
    hi_s = cuda.shared.array(256, dtype=np.float32)
    t = cuda.threadIdx.x
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    lo_s[t] = lo
    hi_s[t] = hi
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            if lo_s[t + half] < lo_s[t]:
                lo_s[t] = lo_s[t + half]
            if hi_s[t + half] > hi_s[t]:
                hi_s[t] = hi_s[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        partial[2 * cuda.blockIdx.x] = lo_s[0]
        partial[2 * cuda.blockIdx.x + 1] = hi_s[0]


def _view(a):
    """(flat device view, outer, channels, inner) of a (outer, channels, inner) device array."""
    _, channels, inner = (int(s) for s in a.shape)
    return _base()._flat(a), channels, inner


def quantize(x3, scale, zero_point, q3):
    base = _base()
    xf, channels, inner = _view(x3)
    qf = base._flat(q3)
    if qf.size == 0:
        return
    lo, hi = _LIMITS[np.dtype(qf.dtype)]
    base._launch(_quantize_k, qf.size, xf, base._flat(scale), base._flat(zero_point), qf, channels, inner, lo, hi)


def dequantize(q3, scale, zero_point, y3):
    base = _base()
    qf, channels, inner = _view(q3)
    yf = base._flat(y3)
    if yf.size == 0:
        return
    base._launch(_dequantize_k, yf.size, qf, base._flat(scale), base._flat(zero_point), yf, channels, inner)


def dynamic_quantize(x, q):
    base = _base()
    xf, qf = base._flat(x), base._flat(q)
    n = xf.size
    if n == 0:
        return np.float32(0.0), np.uint8(0)
    threads = base._REDUCE_THREADS  # a power of two, <= 256
    blocks = max(1, min(base._MAX_BLOCKS, 1024, math.ceil(n / threads)))
    stream = base._stream()
    partial = cuda.device_array(2 * blocks, dtype=np.float32, stream=stream)
    _minmax_k[blocks, threads, stream](xf, partial)
    ranges = partial.copy_to_host(stream=stream)
    stream.synchronize()
    lo = np.float32(min(0.0, float(ranges[0::2].min())))
    hi = np.float32(max(0.0, float(ranges[1::2].max())))
    with np.errstate(over="ignore"):
        scale = np.float32((hi - lo) / np.float32(255.0))
    if scale == 0:
        base._launch(_quantize_k, n, xf, cuda.to_device(np.ones(1, np.float32), stream=stream),
                     cuda.to_device(np.zeros(1, np.int32), stream=stream), qf, 1, n, 0, 0)  # every q = 0
        return np.float32(0.0), np.uint8(0)
    zero_point = np.uint8(np.clip(np.rint(np.float32(0.0) - lo / scale), 0, 255))
    base._launch(_quantize_k, n, xf, cuda.to_device(np.array([scale], np.float32), stream=stream),
                 cuda.to_device(np.array([zero_point], np.int32), stream=stream), qf, 1, n, 0, 255)
    return scale, zero_point
