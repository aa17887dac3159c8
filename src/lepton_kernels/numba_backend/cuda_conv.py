"""numba.cuda kernels for matmul, linear and conv2d, forward and backward.

Simple and correct rather than fast (the tiled kernels are in ``cuda/kernels``):
every kernel sees flat 1-D views of row-major / NCHW / OIHW arrays and gives
each output element to one thread of a grid-stride loop, which adds its terms
in one fixed order, so the results are deterministic (no atomics):

* matmul / linear / conv2d forward: one thread per output element.
* linear grad_x / grad_w: one thread per element, summing over n / m.
* conv2d grad_x GATHERS: one thread per input element sums, over the output
  channels of its group and the taps (a, b), the outputs whose window holds it.
* conv2d grad_w: one thread per weight element, looping over (n, i, j).
* grad_b: one thread per channel, summing in float64 for both dtypes; every
  other sum stays in the arrays' dtype (the typed zero ``zero`` seeds it).

The ReLU-gradient mask (``y <= 0 ? 0 : g``, NaN passes) is applied where each
kernel reads grad_out; without y a 1-element placeholder and ``has_y=False``
are passed. Semantics: ``csrc/lepton/conv.h`` and ``csrc/lepton/linear.h``.
The launch helpers (streams, simulator-sized grids) live in ``.cuda``, which
re-exports these functions.
"""
from __future__ import annotations

import numpy as np
from numba import cuda


def _base():
    # Imported late: ``.cuda`` imports this module at its end.
    from . import cuda as base

    return base


# ---------------------------------------------------------------- device helpers

@cuda.jit(device=True, inline=True)
def _masked(g, y, has_y, i, zero):
    if has_y and y[i] <= 0:
        return zero
    return g[i]


@cuda.jit(device=True, inline=True)
def _store(out, o, v, relu, zero):
    if relu and v <= 0:  # NaN is not <= 0: it passes
        out[o] = zero
    else:
        out[o] = v


# ---------------------------------------------------------------- matmul / linear

@cuda.jit(cache=True)
def _matmul_k(a, b, out, m, k, n, zero):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for o in range(start, m * n, step):
        i, j = o // n, o % n
        acc = zero
        for p in range(k):
            acc += a[i * k + p] * b[p * n + j]
        out[o] = acc


@cuda.jit(cache=True)
def _linear_k(x, w, bias, out, m, k, n, has_bias, relu, zero):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for o in range(start, m * n, step):
        i, j = o // n, o % n
        acc = zero
        for p in range(k):
            acc += x[i * k + p] * w[j * k + p]
        if has_bias:
            acc += bias[j]
        _store(out, o, acc, relu, zero)


@cuda.jit(cache=True)
def _linear_grad_x_k(g, y, has_y, w, gx, m, k, n, zero):
    # gx[i, p] = sum_j g'[i, j] * w[j, p]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, m * k, step):
        i, p = e // k, e % k
        acc = zero
        for j in range(n):
            acc += _masked(g, y, has_y, i * n + j, zero) * w[j * k + p]
        gx[e] = acc


@cuda.jit(cache=True)
def _linear_grad_w_k(g, y, has_y, x, gw, m, k, n, zero):
    # gw[j, p] = sum_i g'[i, j] * x[i, p]
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, n * k, step):
        j, p = e // k, e % k
        acc = zero
        for i in range(m):
            acc += _masked(g, y, has_y, i * n + j, zero) * x[i * k + p]
        gw[e] = acc


@cuda.jit(cache=True)
def _channel_sum_k(g, y, has_y, gb, rows, c, s, zero):
    # gb[ch] = sum over (row, t) of g'[row, ch, t], in float64.
    start, step = cuda.grid(1), cuda.gridsize(1)
    for ch in range(start, c, step):
        acc = 0.0
        for r in range(rows):
            base = (r * c + ch) * s
            for t in range(s):
                acc += _masked(g, y, has_y, base + t, zero)
        gb[ch] = acc


# ---------------------------------------------------------------- conv2d

@cuda.jit(cache=True)
def _conv_k(x, w, bias, out, has_bias, relu, c_in, h, wd, c_out, cg, kh, kw, oh_n, ow_n,
            sh, sw, pt, pl, dh, dw, zero):
    og = c_out // (c_in // cg)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, out.size, step):
        j = e % ow_n
        i = (e // ow_n) % oh_n
        o = (e // (ow_n * oh_n)) % c_out
        b = e // (ow_n * oh_n * c_out)
        c0 = (o // og) * cg
        acc = zero
        for cl in range(cg):
            xbase = (b * c_in + c0 + cl) * h
            wbase = (o * cg + cl) * kh
            for a in range(kh):
                ih = i * sh - pt + a * dh
                if ih < 0 or ih >= h:
                    continue
                for q in range(kw):
                    iw = j * sw - pl + q * dw
                    if iw < 0 or iw >= wd:
                        continue
                    acc += x[(xbase + ih) * wd + iw] * w[(wbase + a) * kw + q]
        if has_bias:
            acc += bias[o]
        _store(out, e, acc, relu, zero)


@cuda.jit(cache=True)
def _conv_grad_x_k(g, y, has_y, w, gx, c_in, h, wd, c_out, cg, kh, kw, oh_n, ow_n,
                   sh, sw, pt, pl, dh, dw, zero):
    og = c_out // (c_in // cg)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, gx.size, step):
        iw = e % wd
        ih = (e // wd) % h
        c = (e // (wd * h)) % c_in
        b = e // (wd * h * c_in)
        grp, cl = c // cg, c % cg
        acc = zero
        for o in range(grp * og, (grp + 1) * og):
            gbase = (b * c_out + o) * oh_n
            wbase = (o * cg + cl) * kh
            for a in range(kh):
                t = ih + pt - a * dh
                if t < 0 or t % sh != 0 or t // sh >= oh_n:
                    continue
                i = t // sh
                for q in range(kw):
                    u = iw + pl - q * dw
                    if u < 0 or u % sw != 0 or u // sw >= ow_n:
                        continue
                    acc += _masked(g, y, has_y, (gbase + i) * ow_n + u // sw, zero) * w[(wbase + a) * kw + q]
        gx[e] = acc


@cuda.jit(cache=True)
def _conv_grad_w_k(g, y, has_y, x, gw, n, c_in, h, wd, c_out, cg, kh, kw, oh_n, ow_n,
                   sh, sw, pt, pl, dh, dw, zero):
    og = c_out // (c_in // cg)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, gw.size, step):
        q = e % kw
        a = (e // kw) % kh
        cl = (e // (kw * kh)) % cg
        o = e // (kw * kh * cg)
        c = (o // og) * cg + cl
        acc = zero
        for b in range(n):
            gbase = (b * c_out + o) * oh_n
            xbase = (b * c_in + c) * h
            for i in range(oh_n):
                ih = i * sh - pt + a * dh
                if ih < 0 or ih >= h:
                    continue
                for j in range(ow_n):
                    iw = j * sw - pl + q * dw
                    if iw < 0 or iw >= wd:
                        continue
                    acc += _masked(g, y, has_y, (gbase + i) * ow_n + j, zero) * x[(xbase + ih) * wd + iw]
        gw[e] = acc


# ---------------------------------------------------------------- host side

def _zero(a):
    return a.dtype.type(0)


def _optional(a, dtype):
    """(flat array, present): a 1-element placeholder stands in for None."""
    if a is not None:
        return _base()._flat(a), True
    return cuda.device_array(1, dtype=dtype), False


def matmul(a, b, out):
    m, k = (int(s) for s in a.shape)
    n = int(b.shape[1])
    base = _base()
    base._launch(_matmul_k, m * n, base._flat(a), base._flat(b), base._flat(out), m, k, n, _zero(out))


def linear(x2, weight, bias, out2, relu):
    m, k = (int(s) for s in x2.shape)
    n = int(weight.shape[0])
    base = _base()
    bf, has_bias = _optional(bias, out2.dtype)
    base._launch(_linear_k, m * n, base._flat(x2), base._flat(weight), bf, base._flat(out2),
                 m, k, n, has_bias, bool(relu), _zero(out2))


def linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b):
    m, k = (int(s) for s in x2.shape)
    n = int(weight.shape[0])
    base = _base()
    g, zero = base._flat(grad_out2), _zero(grad_out2)
    y, has_y = _optional(y2, grad_out2.dtype)
    if grad_x2 is not None:
        base._launch(_linear_grad_x_k, m * k, g, y, has_y, base._flat(weight), base._flat(grad_x2),
                     m, k, n, zero)
    if grad_w is not None:
        base._launch(_linear_grad_w_k, n * k, g, y, has_y, base._flat(x2), base._flat(grad_w),
                     m, k, n, zero)
    if grad_b is not None:
        base._launch(_channel_sum_k, n, g, y, has_y, base._flat(grad_b), m, n, 1, zero)


def _conv_sizes(x, weight, out):
    n, c_in, h, wd = (int(s) for s in x.shape)
    c_out, cg, kh, kw = (int(s) for s in weight.shape)
    return n, (c_in, h, wd, c_out, cg, kh, kw, int(out.shape[2]), int(out.shape[3]))


def _conv_geometry(c):
    return (int(c.stride_h), int(c.stride_w), int(c.pad_top), int(c.pad_left),
            int(c.dilation_h), int(c.dilation_w))


def conv2d(x, weight, bias, out, c, relu):
    base = _base()
    _, sizes = _conv_sizes(x, weight, out)
    of = base._flat(out)
    bf, has_bias = _optional(bias, out.dtype)
    base._launch(_conv_k, of.size, base._flat(x), base._flat(weight), bf, of, has_bias, bool(relu),
                 *sizes, *_conv_geometry(c), _zero(out))


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    base = _base()
    n, sizes = _conv_sizes(x, weight, grad_out)
    geometry = _conv_geometry(c)
    g, zero = base._flat(grad_out), _zero(grad_out)
    yf, has_y = _optional(y, grad_out.dtype)
    if grad_x is not None:
        gx = base._flat(grad_x)
        base._launch(_conv_grad_x_k, gx.size, g, yf, has_y, base._flat(weight), gx, *sizes, *geometry,
                     zero)
    if grad_w is not None:
        gw = base._flat(grad_w)
        base._launch(_conv_grad_w_k, gw.size, g, yf, has_y, base._flat(x), gw, n, *sizes, *geometry,
                     zero)
    if grad_b is not None:
        c_out = sizes[3]
        base._launch(_channel_sum_k, c_out, g, yf, has_y, base._flat(grad_b), n, c_out,
                     sizes[7] * sizes[8], zero)
