"""Numba CPU kernels for matmul, linear and conv2d, forward and backward.

Layouts: matrices are row-major 2-D; convolution is NCHW input, OIHW weight
(``csrc/lepton/conv.h``, ``csrc/lepton/linear.h``). Products accumulate in the
arrays' dtype; channel sums (grad_bias) accumulate in float64.

Every output element is produced by exactly one parallel iteration and its
terms are added in one fixed order, so results do not depend on the thread
count or on run-to-run scheduling (no atomics, no reductions across threads):

* ``gemm_kernel``: tiles of RB rows x CB columns; out[i, j] sums k ascending
  with an axpy inner loop over contiguous columns (vectorizable without
  fastmath). linear runs it on a transposed weight, linear_backward on the
  transposed masked gradient.
* ``conv2d_kernel``: one (n, o) output plane per iteration, taps (c, a, b)
  ascending, inner loop over a contiguous output row.
* ``conv2d_grad_x_kernel``: one (n, c) input plane per iteration, scattering
  every (o, a, b) tap into it in that order (a transposed convolution).
* ``conv2d_grad_w_kernel``: one (o, c) weight slice per iteration; per tap a
  row of partial sums over the output columns j gathers (n, i) in order, then
  the row is summed in j order.

Optional arguments (bias) are passed as a 1-element placeholder plus a flag so
one compiled specialization per dtype serves both cases.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)

RB = 4  # GEMM tile rows: each loaded row of b feeds RB output rows
CB = 256  # GEMM tile columns: an RB x CB output tile stays in L1


@njit(cache=True, inline="always")
def _span(offset, stride, size, count):
    """[first, end) of the positions p < count with 0 <= p*stride + offset < size."""
    first = 0 if offset >= 0 else (-offset + stride - 1) // stride
    last = size - 1 - offset
    end = 0 if last < 0 else last // stride + 1
    return first, max(first, min(end, count))


@njit(**_JIT)
def gemm_kernel(a, b, bias, out, has_bias, relu):
    """out (m, n) = act(a (m, k) @ b (k, n) + bias)."""
    m, k = a.shape
    n = b.shape[1]
    row_tiles = (m + RB - 1) // RB
    col_tiles = (n + CB - 1) // CB
    for t in prange(row_tiles * col_tiles):
        i0 = (t // col_tiles) * RB
        j0 = (t % col_tiles) * CB
        i1, j1 = min(i0 + RB, m), min(j0 + CB, n)
        width = j1 - j0
        for i in range(i0, i1):
            out[i, j0:j1] = 0
        for p in range(k):
            brow = b[p, j0:j1]
            for i in range(i0, i1):
                aip = a[i, p]
                orow = out[i, j0:j1]
                for j in range(width):
                    orow[j] += aip * brow[j]
        if has_bias or relu:
            for i in range(i0, i1):
                orow = out[i]
                for j in range(j0, j1):
                    v = orow[j]
                    if has_bias:
                        v += bias[j]
                    if relu and v <= 0:  # NaN is not <= 0: it passes
                        orow[j] = 0
                    else:
                        orow[j] = v


@njit(**_JIT)
def channel_sum_kernel(g, out):
    """out[c] = sum over (n, s) of g (n, c, s), n then s ascending, in float64."""
    n, c, s = g.shape
    for ch in prange(c):
        acc = 0.0
        for b in range(n):
            for k in range(s):
                acc += g[b, ch, k]
        out[ch] = acc


@njit(cache=True, inline="always")
def _axpy(dst, src, stride, alpha, count):
    """dst[j] += alpha * src[j * stride] for j < count (dst, src: 1-D views from 0)."""
    if stride == 1:
        for j in range(count):
            dst[j] += alpha * src[j]
    else:
        for j in range(count):
            dst[j] += alpha * src[j * stride]


@njit(cache=True, inline="always")
def _scatter_axpy(dst, stride, src, alpha, count):
    """dst[j * stride] += alpha * src[j] for j < count."""
    if stride == 1:
        for j in range(count):
            dst[j] += alpha * src[j]
    else:
        for j in range(count):
            dst[j * stride] += alpha * src[j]


@njit(cache=True, inline="always")
def _mul_acc(dst, a, b, stride, count):
    """dst[j] += a[j] * b[j * stride] for j < count."""
    if stride == 1:
        for j in range(count):
            dst[j] += a[j] * b[j]
    else:
        for j in range(count):
            dst[j] += a[j] * b[j * stride]


# In the conv kernels a row segment [j0, j1) of output columns reads input
# columns j*sw + off; the loops index 1-D views that start at the segment, so
# every index is provably non-negative and LLVM vectorizes the stride-1 case.

@njit(**_JIT)
def conv2d_kernel(x, w, bias, out, has_bias, relu, sh, sw, pt, pl, dh, dw):
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    og = c_out // (c_in // cg)
    for t in prange(n * c_out):
        b, o = t // c_out, t % c_out
        c0 = (o // og) * cg
        plane = out[b, o]
        plane[:, :] = 0
        for cl in range(cg):
            for a in range(kh):
                i0, i1 = _span(a * dh - pt, sh, h, oh_n)
                for q in range(kw):
                    off = q * dw - pl
                    j0, j1 = _span(off, sw, wd, ow_n)
                    wv = w[o, cl, a, q]
                    for i in range(i0, i1):
                        xrow = x[b, c0 + cl, i * sh + a * dh - pt]
                        _axpy(plane[i, j0:], xrow[j0 * sw + off:], sw, wv, j1 - j0)
        if has_bias or relu:
            bv = bias[o] if has_bias else bias[0]
            for i in range(oh_n):
                row = plane[i]
                for j in range(ow_n):
                    v = row[j]
                    if has_bias:
                        v += bv
                    if relu and v <= 0:  # NaN is not <= 0: it passes
                        row[j] = 0
                    else:
                        row[j] = v


@njit(**_JIT)
def conv2d_grad_x_kernel(g, w, gx, sh, sw, pt, pl, dh, dw):
    n, c_in, h, wd = gx.shape
    c_out, cg, kh, kw = w.shape
    oh_n, ow_n = g.shape[2], g.shape[3]
    og = c_out // (c_in // cg)
    for t in prange(n * c_in):
        b, c = t // c_in, t % c_in
        grp, cl = c // cg, c % cg
        plane = gx[b, c]
        plane[:, :] = 0
        for o in range(grp * og, (grp + 1) * og):
            for a in range(kh):
                i0, i1 = _span(a * dh - pt, sh, h, oh_n)
                for q in range(kw):
                    off = q * dw - pl
                    j0, j1 = _span(off, sw, wd, ow_n)
                    wv = w[o, cl, a, q]
                    for i in range(i0, i1):
                        row = plane[i * sh + a * dh - pt]
                        _scatter_axpy(row[j0 * sw + off:], sw, g[b, o, i, j0:], wv, j1 - j0)


@njit(**_JIT)
def conv2d_grad_w_kernel(g, x, gw, sh, sw, pt, pl, dh, dw):
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = gw.shape
    oh_n, ow_n = g.shape[2], g.shape[3]
    og = c_out // (c_in // cg)
    for t in prange(c_out * cg):
        o, cl = t // cg, t % cg
        c = (o // og) * cg + cl
        part = np.empty(ow_n, dtype=gw.dtype)
        for a in range(kh):
            i0, i1 = _span(a * dh - pt, sh, h, oh_n)
            for q in range(kw):
                off = q * dw - pl
                j0, j1 = _span(off, sw, wd, ow_n)
                part[:] = 0
                for b in range(n):
                    for i in range(i0, i1):
                        xrow = x[b, c, i * sh + a * dh - pt]
                        _mul_acc(part, g[b, o, i, j0:], xrow[j0 * sw + off:], sw, j1 - j0)
                acc = 0.0
                for j in range(j1 - j0):
                    acc += part[j]
                gw[o, cl, a, q] = acc
