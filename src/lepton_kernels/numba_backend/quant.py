"""Numba CPU int8 kernels (ONNX numerics): quantize / dequantize over (outer, channels, inner)
views, dynamic range quantization, int32-accumulating matmul / convolution, and the
requantizing qlinear versions (int32 result requantized per output channel, as
``reference.requantize``)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _quantize_kernel(x, scale, zp, q, lo, hi):
    outer, channels, inner = x.shape
    for o in prange(outer):
        for c in range(channels):
            s = scale[c]
            z = zp[c]
            for i in range(inner):
                v = x[o, c, i]
                if v != v:
                    r = z
                else:
                    t = np.rint(v / s)  # float32 division, as ONNX
                    if t > 2147483647.0:
                        r = hi
                    elif t < -2147483648.0:
                        r = lo
                    else:
                        r = int(t) + z
                q[o, c, i] = min(max(r, lo), hi)


@njit(parallel=True, cache=True)
def _dequantize_kernel(q, scale, zp, y):
    outer, channels, inner = q.shape
    for o in prange(outer):
        for c in range(channels):
            for i in range(inner):
                y[o, c, i] = np.float32(np.int64(q[o, c, i]) - zp[c]) * scale[c]


def quantize(x3, scale, zero_point, q3):
    lo, hi = (-128, 127) if q3.dtype == np.int8 else (0, 255)
    _quantize_kernel(x3, scale, zero_point, q3, lo, hi)


def dequantize(q3, scale, zero_point, y3):
    _dequantize_kernel(q3, scale, zero_point, y3)


def dynamic_quantize(x, q):
    lo = np.float32(min(0.0, float(x.min())))
    hi = np.float32(max(0.0, float(x.max())))
    scale = np.float32((hi - lo) / np.float32(255.0))
    if scale == 0:
        q[...] = 0
        return np.float32(0.0), np.uint8(0)
    zero_point = np.uint8(np.clip(np.rint(np.float32(0.0) - lo / scale), 0, 255))
    quantize(x.reshape(1, 1, -1), np.array([scale], np.float32), np.array([zero_point], np.int32),
             q.reshape(1, 1, -1))
    return scale, zero_point


@njit(parallel=True, cache=True)
def _matmul_integer_kernel(a, b, azp, bzp, c):
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        acc = np.zeros(n, np.int32)
        for p in range(k):
            av = np.int32(a[i, p]) - azp
            for j in range(n):
                acc[j] += av * (np.int32(b[p, j]) - bzp[j])
        c[i, :] = acc


def matmul_integer(a, b, a_zero_point, b_zero_point, out):
    _matmul_integer_kernel(a, b, np.int32(a_zero_point), b_zero_point, out)


@njit(parallel=True, cache=True)
def _conv2d_integer_kernel(x, w, xzp, wzp, y, sh, sw, pt, pl, dh, dw, groups):
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    og = cout // groups
    for job in prange(n * cout):
        b, o = job // cout, job % cout
        g = o // og
        for i in range(oh):
            for j in range(ow):
                acc = np.int32(0)
                for c in range(cg):
                    for a in range(kh):
                        r = i * sh - pt + a * dh
                        if r < 0 or r >= h:
                            continue
                        for e in range(kw):
                            col = j * sw - pl + e * dw
                            if col < 0 or col >= wd:
                                continue
                            acc += (np.int32(x[b, g * cg + c, r, col]) - xzp) * (np.int32(w[o, c, a, e]) - wzp[o])
                y[b, o, i, j] = acc


def conv2d_integer(x, w, x_zero_point, w_zero_point, out, c):
    _conv2d_integer_kernel(x, w, np.int32(x_zero_point), w_zero_point, out, c.stride_h, c.stride_w, c.pad_top,
                           c.pad_left, c.dilation_h, c.dilation_w, c.groups)


@njit(parallel=True, cache=True)
def _requantize_kernel(acc, bias, has_bias, multiplier, yzp, lo, hi, y):
    # acc / y: (outer, channels, inner); one multiplier and bias per channel.
    outer, channels, inner = acc.shape
    for o in prange(outer):
        for c in range(channels):
            b = bias[c] if has_bias else np.int32(0)
            m = multiplier[c]
            for i in range(inner):
                total = np.int32(acc[o, c, i] + b)  # int32 wraparound, as the accumulators
                v = np.float64(np.rint(np.float32(total) * m)) + yzp  # float32 product, as reference.requantize
                y[o, c, i] = min(max(v, lo), hi)


def _requantize(acc3, bias, multiplier, y_zero_point, relu, out3):
    lo, hi = (-128, 127) if out3.dtype == np.int8 else (0, 255)
    if relu:
        lo = max(lo, int(y_zero_point))
    has_bias = bias is not None
    _requantize_kernel(acc3, bias if has_bias else np.zeros(1, np.int32), has_bias, multiplier,
                       np.float64(y_zero_point), np.float64(lo), np.float64(hi), out3)


def qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out):
    acc = np.empty(out.shape, np.int32)
    matmul_integer(a, b, a_zero_point, b_zero_point, acc)
    m, n = out.shape  # columns are the channels: (outer=m, channels=n, inner=1)
    _requantize(acc.reshape(m, n, 1), bias, multiplier, y_zero_point, relu, out.reshape(m, n, 1))


def qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c):
    acc = np.empty(out.shape, np.int32)
    conv2d_integer(x, w, x_zero_point, w_zero_point, acc, c)
    n, c_out = out.shape[:2]
    _requantize(acc.reshape(n, c_out, -1), bias, multiplier, y_zero_point, relu, out.reshape(n, c_out, -1))
