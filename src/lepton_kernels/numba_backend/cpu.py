"""Numba CPU kernels behind ``lepton_kernels.numba_backend``.

Each kernel is compiled lazily per dtype (float32/float64) and cached on disk.
Parallel loops run over independent rows or planes, so every output element is
produced by one thread in a fixed order: results do not depend on the thread
count. Pooling arrays are NCHW; bias_relu arrays are (N, C, S).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)


@njit(**_JIT)
def relu_kernel(x, out):
    for i in prange(x.size):
        v = x[i]
        # v > 0 is False for NaN, so test "not <= 0" to let NaN through.
        out[i] = v if not (v <= 0) else 0


@njit(**_JIT)
def relu_backward_kernel(grad_out, x, out):
    for i in prange(x.size):
        out[i] = 0 if x[i] <= 0 else grad_out[i]


@njit(**_JIT)
def bias_relu_kernel(x, bias, out):
    n, c, s = x.shape
    for r in prange(n * c):
        b, ch = r // c, r % c
        bv = bias[ch]
        for k in range(s):
            v = x[b, ch, k] + bv
            out[b, ch, k] = v if not (v <= 0) else 0


@njit(**_JIT)
def bias_relu_backward_kernel(grad_out, y, grad_x):
    n, c, s = y.shape
    for r in prange(n * c):
        b, ch = r // c, r % c
        for k in range(s):
            grad_x[b, ch, k] = 0 if y[b, ch, k] <= 0 else grad_out[b, ch, k]


@njit(**_JIT)
def bias_relu_backward_bias_kernel(grad_out, y, grad_x, grad_bias):
    # One channel per iteration, summed over (n, s) in fixed order: deterministic.
    n, c, s = y.shape
    for ch in prange(c):
        acc = 0.0
        for b in range(n):
            for k in range(s):
                g = 0 if y[b, ch, k] <= 0 else grad_out[b, ch, k]
                grad_x[b, ch, k] = g
                acc += g
        grad_bias[ch] = acc


@njit(**_JIT)
def max_pool2d_kernel(x, out, indices, want_indices, kh, kw, sh, sw, pt, pl, dh, dw):
    n, c, h, w = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    for r in prange(n * c * oh_n):
        plane, oh = r // oh_n, r % oh_n
        b, ch = plane // c, plane % c
        ih0 = oh * sh - pt
        for ow in range(ow_n):
            iw0 = ow * sw - pl
            best = -np.inf
            best_idx = -1
            for i in range(kh):
                ih = ih0 + i * dh
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = iw0 + j * dw
                    if iw < 0 or iw >= w:
                        continue
                    v = x[b, ch, ih, iw]
                    # The first in-bounds tap always wins, then the first strictly
                    # greater value; the first NaN wins and sticks (NaN > v is False).
                    if best_idx < 0 or v > best or (v != v and best == best):
                        best = v
                        best_idx = ih * w + iw
            out[b, ch, oh, ow] = best
            if want_indices:
                indices[b, ch, oh, ow] = best_idx


@njit(**_JIT)
def max_pool2d_backward_kernel(grad_out, indices, grad_in):
    # Planes are (n*c, out_h*out_w) / (n*c, h*w). Scatter inside one plane per
    # iteration, in output order: deterministic. Returns the count of indices
    # outside {-1} U [0, h*w) (those are skipped, never written through).
    planes, hw = grad_in.shape
    m = grad_out.shape[1]
    bad = np.zeros(planes, dtype=np.int64)
    for pl in prange(planes):
        for k in range(hw):
            grad_in[pl, k] = 0
        for k in range(m):
            idx = indices[pl, k]
            if idx >= 0 and idx < hw:
                grad_in[pl, idx] += grad_out[pl, k]
            elif idx != -1:
                bad[pl] += 1
    return bad.sum()


@njit(cache=True, inline="always")
def _avg_window(o, stride, pad_before, pad_after, kernel, size):
    """(first in-bounds tap, end of in-bounds taps, pool length with padding)."""
    start = o * stride - pad_before
    end = min(start + kernel, size + pad_after)
    pool = end - start
    return max(start, 0), min(end, size), pool


@njit(cache=True, inline="always")
def _avg_divisor(pool_h, pool_w, count_h, count_w, count_include_pad, divisor_override):
    if divisor_override > 0:
        return divisor_override
    if count_include_pad:
        return pool_h * pool_w
    return count_h * count_w


@njit(**_JIT)
def avg_pool2d_kernel(x, out, kh, kw, sh, sw, pt, pb, pl, pr, count_include_pad, divisor_override):
    n, c, h, w = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    for r in prange(n * c * oh_n):
        plane, oh = r // oh_n, r % oh_n
        b, ch = plane // c, plane % c
        h0, h1, pool_h = _avg_window(oh, sh, pt, pb, kh, h)
        for ow in range(ow_n):
            w0, w1, pool_w = _avg_window(ow, sw, pl, pr, kw, w)
            if h1 <= h0 or w1 <= w0:
                out[b, ch, oh, ow] = 0
                continue
            acc = 0.0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    acc += x[b, ch, ih, iw]
            div = _avg_divisor(pool_h, pool_w, h1 - h0, w1 - w0, count_include_pad, divisor_override)
            out[b, ch, oh, ow] = acc / div


@njit(**_JIT)
def avg_pool2d_backward_kernel(grad_out, grad_in, kh, kw, sh, sw, pt, pb, pl, pr,
                               count_include_pad, divisor_override):
    # Scatter within one plane per iteration, in output order: deterministic.
    n, c, h, w = grad_in.shape
    oh_n, ow_n = grad_out.shape[2], grad_out.shape[3]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for ih in range(h):
            for iw in range(w):
                grad_in[b, ch, ih, iw] = 0
        for oh in range(oh_n):
            h0, h1, pool_h = _avg_window(oh, sh, pt, pb, kh, h)
            for ow in range(ow_n):
                w0, w1, pool_w = _avg_window(ow, sw, pl, pr, kw, w)
                if h1 <= h0 or w1 <= w0:
                    continue
                div = _avg_divisor(pool_h, pool_w, h1 - h0, w1 - w0, count_include_pad, divisor_override)
                g = grad_out[b, ch, oh, ow] / div
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        grad_in[b, ch, ih, iw] += g


# ---------------------------------------------------------------- batch normalization
# The passes of csrc/lepton/norm.h over x3 (N, C, S), parallel over channels, sums in float64.
@njit(**_JIT)
def batch_norm_stats_kernel(x3, mean, var):
    n, c, s = x3.shape
    for ch in prange(c):
        total = 0.0
        for i in range(n):
            for j in range(s):
                total += x3[i, ch, j]
        m = total / (n * s)
        sq = 0.0
        for i in range(n):
            for j in range(s):
                v = x3[i, ch, j] - m
                sq += v * v
        mean[ch] = m
        var[ch] = sq / (n * s)


@njit(**_JIT)
def batch_norm_apply_kernel(x3, scale, shift, out3, relu):
    n, c, s = x3.shape
    for ch in prange(c):
        a, b = scale[ch], shift[ch]
        for i in range(n):
            for j in range(s):
                v = x3[i, ch, j] * a + b
                out3[i, ch, j] = 0 if (relu and v < 0) else v


@njit(**_JIT)
def batch_norm_backward_reduce_kernel(g3, x3, mean, y3, has_y, sum_g, sum_gx):
    n, c, s = g3.shape
    for ch in prange(c):
        sg = 0.0
        sgx = 0.0
        m = mean[ch]
        for i in range(n):
            for j in range(s):
                g = 0.0 if (has_y and y3[i, ch, j] <= 0) else g3[i, ch, j]
                sg += g
                sgx += g * (x3[i, ch, j] - m)
        sum_g[ch] = sg
        sum_gx[ch] = sgx


@njit(**_JIT)
def batch_norm_backward_apply_kernel(g3, x3, mean, y3, has_y, k1, k2, k3, grad_x3):
    n, c, s = g3.shape
    for ch in prange(c):
        a, b, e, m = k1[ch], k2[ch], k3[ch], mean[ch]
        for i in range(n):
            for j in range(s):
                g = 0.0 if (has_y and y3[i, ch, j] <= 0) else g3[i, ch, j]
                grad_x3[i, ch, j] = a * g + b * (x3[i, ch, j] - m) + e


# ---------------------------------------------------------------- activations
# Kinds by code (the order of csrc/lepton/activation.h's enum).
ACTIVATION_CODES = {"relu6": 0, "leaky_relu": 1, "sigmoid": 2, "tanh": 3, "silu": 4, "gelu": 5, "gelu_tanh": 6,
                    "hardswish": 7}
_SQRT1_2, _INV_SQRT_2PI, _SQRT_2_OVER_PI, _KAPPA = 0.7071067811865476, 0.3989422804014327, 0.7978845608028654, 0.044715


@njit(cache=True, inline="always")
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True)
def _activation_one(code, x, slope):
    if code == 0:
        return x if x != x else (0.0 if x < 0 else (6.0 if x > 6 else x))
    if code == 1:
        return x if x > 0 else x * slope
    if code == 2:
        return _sigmoid(x)
    if code == 3:
        return math.tanh(x)
    if code == 4:
        return x * _sigmoid(x)
    if code == 5:
        return 0.5 * x * (1.0 + math.erf(x * _SQRT1_2))
    if code == 6:
        return 0.5 * x * (1.0 + math.tanh(_SQRT_2_OVER_PI * (x + _KAPPA * x * x * x)))
    return x if x != x else (0.0 if x <= -3 else (x if x >= 3 else x * (x + 3.0) / 6.0))


@njit(cache=True)
def _activation_grad_one(code, g, s, slope):
    if code == 0:
        return 0.0 if (s <= 0 or s >= 6) else g
    if code == 1:
        return g if s > 0 else g * slope
    if code == 2:
        return g * s * (1.0 - s)
    if code == 3:
        return g * (1.0 - s * s)
    if code == 4:
        sg = _sigmoid(s)
        return g * sg * (1.0 + s * (1.0 - sg))
    if code == 5:
        return g * (0.5 * (1.0 + math.erf(s * _SQRT1_2)) + s * math.exp(-0.5 * s * s) * _INV_SQRT_2PI)
    if code == 6:
        t = math.tanh(_SQRT_2_OVER_PI * (s + _KAPPA * s * s * s))
        return g * (0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _KAPPA * s * s))
    return 0.0 if s <= -3 else (g * (s / 3.0 + 0.5) if s < 3 else g)


@njit(**_JIT)
def activation_kernel(x, out, code, slope):
    for i in prange(x.size):
        out[i] = _activation_one(code, x[i], slope)


@njit(**_JIT)
def activation_backward_kernel(g, s, out, code, slope):
    for i in prange(g.size):
        out[i] = _activation_grad_one(code, g[i], s[i], slope)
