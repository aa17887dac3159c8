"""Seeded sweeps of the native stride-1 int8 convolution (on an AVX-512 VNNI CPU: the "direct"
tall-input path) against an exact int64 reference, beyond test_quant.py / test_quant_fuzz.py.

What the geometries aim at (the corners of conv_direct_vnni and its fill / tile kernels):
- many output channels (40-200 per group) over 1-3 leftover input channels per group and kernels
  2-9 rows tall, so the leftover tap-major slots are folded over the kernel rows for every
  leftover count r = 1, 2, 3 (the fold cost model needs rows > 20 / 40 / 60 / 100 for the larger r);
- kernels 16-64 columns wide over inputs narrower and wider than 16 pixels (the register-permute
  fill of channel-major blocks and the general masked fill), with padding on either side;
- large batches of tiny images (images split among fill units; tiles laid out per image or
  continuously across the gap rows; several images in one tile);
- output planes smaller than the tile widths (32/48/64) and not multiples of them;
- pad_top > pad_bottom and the reverse, dilation in both directions, depthwise-like many groups;
- int8/uint8 x and w, per-channel weight zero points that are all zero (no column sums for int8
  w), zero and non-zero, per-tensor ones; int8/uint8 outputs, int32/float bias, ReLU;
- 1, 2 and 3 OpenMP threads on sizes above the one-thread threshold, several Python threads
  at once with sizes that grow the per-thread scratch buffers, and operands / outputs flush
  against guard pages.
Every result must equal the reference exactly.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _backend
from lepton_kernels import reference as ref

from conftest import failures_in_threads, guarded

TYPE_PAIRS = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)]


@pytest.fixture
def native():
    """The native backend at the CPU's best ISA (the VNNI direct path where the CPU has it)."""
    if _backend.get_named_backend("native", "cpu") is None:
        pytest.skip(_backend.unavailable_reason("native", "cpu"))
    from lepton_kernels import _lepton_cpu

    _lepton_cpu.set_isa(_lepton_cpu.detected_isa())
    lk.use_backend("native")
    before = lk.get_num_threads()
    yield
    lk.set_num_threads(before)
    lk.use_backend(None)


def _rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _conv_ref(x, w, x_zp, w_zp, padding, dilation, groups):
    """Exact int64 stride-1 ConvInteger (one einsum per kernel tap), wrapped to int32."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = padding
    dh, dw = dilation
    xs = x.astype(np.int64) - (0 if x_zp is None else x_zp)
    wz = 0 if w_zp is None else np.asarray(w_zp, np.int64)
    ws = w.astype(np.int64) - (wz.reshape(-1, 1, 1, 1) if np.ndim(wz) else wz)
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), np.int64)
    xp[:, :, pt:pt + h, pl:pl + wd] = xs
    oh, ow = h + pt + pb - dh * (kh - 1), wd + pl + pr - dw * (kw - 1)
    cog = co // groups
    y = np.zeros((n, co, oh, ow), np.int64)
    for g in range(groups):
        xg, wg = xp[:, g * cg:(g + 1) * cg], ws[g * cog:(g + 1) * cog]
        for a in range(kh):
            for b in range(kw):
                patch = xg[:, :, a * dh:a * dh + oh, b * dw:b * dw + ow]
                y[:, g * cog:(g + 1) * cog] += np.einsum("nchw,oc->nohw", patch, wg[:, :, a, b])
    return y.astype(np.int32)


def _qref(acc, x_scale, w_scale, y_scale, y_zp, bias, dtype, relu):
    """reference.qlinear_conv2d's requantization applied to an int32 result."""
    co = acc.shape[1]
    w_scale = np.broadcast_to(np.asarray(w_scale, np.float32), (co,))
    m = ref.requantize_multiplier(x_scale, w_scale, y_scale)
    bq = None if bias is None else ref.quantize_bias(bias, x_scale, w_scale)
    return ref.requantize(acc, bq, m, y_zp, dtype, relu, 1)


class Case:
    """One convolution: operands, zero points, requantization parameters and expected results."""

    def __init__(self, rng, geometry, index):
        n, groups, cg, cog, (kh, kw), dilation, padding, (h, w) = geometry
        self.geometry = geometry
        tx, tw = TYPE_PAIRS[index % 4]
        co = groups * cog
        self.x = _rand(rng, tx, (n, groups * cg, h, w))
        self.w = _rand(rng, tw, (co, cg, kh, kw))
        xi, wi = np.iinfo(tx), np.iinfo(tw)
        self.x_zp = [None, int(xi.max), int(xi.min), int(_rand(rng, tx, ()))][(index // 4) % 4]
        zeros = np.zeros(co, tw)  # per-channel but all 0: no column sums for int8 w
        vec = _rand(rng, tw, co)
        vec[0], vec[-1] = wi.min, wi.max
        self.w_zp = [vec, zeros, None, int(wi.max), int(_rand(rng, tw, ()))][index % 5]
        self.geo = dict(stride=1, padding=padding, dilation=dilation, groups=groups)
        self.want = _conv_ref(self.x, self.w, self.x_zp, self.w_zp, padding, dilation, groups)
        ty = (np.uint8, np.int8)[(index // 2) % 2]
        yi = np.iinfo(ty)
        self.w_scale = (rng.random(co) * 0.008 + 0.001).astype(np.float32) if index % 3 else 0.004
        self.bias = [None, rng.integers(-2**16, 2**16, co).astype(np.int32), rng.normal(0, 300, co).astype(np.float32),
                     np.full(co, 2**31 - 3000, np.int32)][index % 4]
        self.y_zp = ty([yi.min, yi.max, _rand(rng, ty, ()), (int(yi.min) + int(yi.max)) // 2][(index // 3) % 4])
        self.y_scale = 0.05 * 0.005 * np.sqrt(cg * kh * kw) * 60 * [0.3, 1.0, 3.0][index % 3]
        self.relu = index % 7 < 4
        self.want_q = _qref(self.want, 0.05, self.w_scale, self.y_scale, self.y_zp, self.bias, ty, self.relu)

    def qargs(self, x=None):
        return (self.x if x is None else x, 0.05, self.x_zp, self.w, self.w_scale, self.w_zp, self.y_scale, self.y_zp)

    def qkw(self):
        return dict(bias=self.bias, activation="relu" if self.relu else None, **self.geo)

    def check(self, what=""):
        desc = (f"{what} geometry={self.geometry} x {self.x.dtype} w {self.w.dtype} x_zp={self.x_zp} "
                f"w_zp={'vector' if isinstance(self.w_zp, np.ndarray) else self.w_zp} threads={lk.get_num_threads()}")
        np.testing.assert_array_equal(lk.conv2d_integer(self.x, self.w, self.x_zp, self.w_zp, **self.geo), self.want,
                                      err_msg="conv2d_integer " + desc)
        np.testing.assert_array_equal(lk.qlinear_conv2d(*self.qargs(), **self.qkw()), self.want_q,
                                      err_msg=f"qlinear_conv2d (y {self.want_q.dtype}) " + desc)


def _fits(h, w, kh, kw, dilation, padding):
    (pt, pb), (pl, pr) = padding
    return h + pt + pb - dilation[0] * (kh - 1) >= 1 and w + pl + pr - dilation[1] * (kw - 1) >= 1


def _direct_padding(rng, kh, kw, dilation, horizontal=4):
    """Padding the direct path takes (pad_bottom <= dh * (kh - 1)); either side may be the larger."""
    dh, dw = dilation
    reach = dh * (kh - 1)
    pb = int(rng.integers(0, reach + 1))
    pt = int(rng.integers(0, reach + 3))
    top_large = rng.random() < 0.5
    if top_large != (pt > pb):
        pt = max(pt, pb + 1) if top_large else min(pt, pb)
    hmax = max(horizontal, dw * (kw - 1) + 1)
    return (pt, pb), (int(rng.integers(0, hmax)), int(rng.integers(0, hmax)))


def _random_geometry(rng):
    while True:
        groups = int(rng.choice([1, 1, 1, 2, 3, 5]))
        cg = int(rng.integers(1, 10)) if rng.random() < 0.85 else int(rng.integers(10, 30))
        cog = int(rng.integers(1, 14)) if rng.random() < 0.6 else int(rng.integers(14, 140))
        kh = int(rng.integers(1, 8))
        kw = int(rng.integers(1, 6)) if rng.random() < 0.8 else int(rng.integers(6, 65))
        dilation = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3])) if kw < 20 else 1)
        n = int(rng.choice([1, 1, 2, 3, int(rng.integers(4, 40))]))
        h = int(rng.integers(1, 16))
        w = int(rng.integers(1, 17)) if rng.random() < 0.5 else int(rng.integers(17, 90))
        padding = _direct_padding(rng, kh, kw, dilation)
        if not _fits(h, w, kh, kw, dilation, padding):
            continue
        (pt, pb), (pl, pr) = padding
        work = n * groups * cog * cg * kh * kw * (h + pt + pb) * (w + pl + pr)
        if work > 1.2e7:
            continue
        return n, groups, cg, cog, (kh, kw), dilation, padding, (h, w)


def _fold_geometries(rng, count):
    """Many output channels over 1-3 leftover channels (plus whole blocks of 4), tall kernels."""
    out = []
    while len(out) < count:
        cg = int(rng.choice([1, 2, 3, 5, 6, 7, 9]))
        kh, kw = int(rng.choice([2, 3, 4, 5, 6, 7, 9])), int(rng.choice([1, 2, 3, 5, 7]))
        cog = int(rng.choice([21, 40, 41, 61, 64, 97, 101, 130, 200]))
        dilation = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2])))
        n = int(rng.choice([1, 2, 3, 6]))
        h, w = int(rng.integers(1, 14)), int(rng.choice([int(rng.integers(1, 17)), int(rng.integers(17, 40))]))
        padding = _direct_padding(rng, kh, kw, dilation, horizontal=3)
        if _fits(h, w, kh, kw, dilation, padding):
            out.append((n, int(rng.choice([1, 1, 2])), cg, cog, (kh, kw), dilation, padding, (h, w)))
    return out


def _wide_kernel_geometries(rng, count):
    """kw 16-64 over inputs narrower than, as wide as and wider than 16 pixels."""
    out = []
    while len(out) < count:
        kw = int(rng.choice([16, 17, 31, 33, 48, 63, 64]))
        w = int(rng.choice([1, 3, 8, 15, 16, 17, 40, 70]))
        cg = int(rng.choice([1, 3, 4, 5, 8]))
        kh = int(rng.choice([1, 2, 3]))
        pl = int(rng.integers(0, kw))
        pr = max(0, kw - w - pl) + int(rng.integers(0, 4))  # output width >= 1, sometimes up to 19
        (pt, pb), _ = _direct_padding(rng, kh, kw, (1, 1))
        h = int(rng.integers(1, 6))
        if _fits(h, w, kh, kw, (1, 1), ((pt, pb), (pl, pr))):
            out.append((int(rng.choice([1, 2, 4])), 1, cg, int(rng.choice([3, 20, 45])), (kh, kw), (1, 1),
                        ((pt, pb), (pl, pr)), (h, w)))
    return out


def _batch_geometries(rng):
    """Large batches of tiny images: sizes above the one-thread threshold (2e6 multiply-adds)."""
    out = []
    for n in (50, 129, 257, 700):
        for h, w in ((1, 1), (2, 3), (4, 4), (3, 7)):
            kh, kw = int(rng.choice([1, 2, 3])), int(rng.choice([1, 2, 3]))
            padding = _direct_padding(rng, kh, kw, (1, 1), horizontal=2)
            if _fits(h, w, kh, kw, (1, 1), padding):
                out.append((n, int(rng.choice([1, 2])), int(rng.choice([3, 4, 5, 7])), int(rng.choice([33, 48, 64])),
                            (kh, kw), (1, 1), padding, (h, w)))
    return out


_CASES = {}


def _cases(which):
    if which not in _CASES:
        rng = np.random.default_rng({"random": 20240701, "fold": 20240702, "wide": 20240703, "batch": 20240704}[which])
        geometries = {"random": lambda: [_random_geometry(rng) for _ in range(1200)],
                      "fold": lambda: _fold_geometries(rng, 400),
                      "wide": lambda: _wide_kernel_geometries(rng, 200),
                      "batch": lambda: _batch_geometries(rng)}[which]()
        _CASES[which] = [Case(rng, g, i) for i, g in enumerate(geometries)]
    return _CASES[which]


def test_int64_reference_matches_the_spec():
    """The fast reference used here equals reference.conv2d_integer / qlinear_conv2d."""
    for c in _cases("random")[:12] + _cases("fold")[:4]:
        if c.x.size * c.w.shape[0] > 3e5:
            continue
        np.testing.assert_array_equal(c.want, ref.conv2d_integer(c.x, c.w, c.x_zp, c.w_zp, **c.geo))
        np.testing.assert_array_equal(c.want_q, ref.qlinear_conv2d(*c.qargs(), **c.qkw()))


@pytest.mark.parametrize("which", ["random", "fold", "wide"])
def test_direct_conv_sweep(native, which):
    """Random direct-path geometries, the fold corner and wide kernels; threads cycle 1, 2, 3."""
    for i, c in enumerate(_cases(which)):
        lk.set_num_threads(1 + i % 3)
        c.check(which)


def test_direct_conv_large_batches_every_thread_count(native):
    for c in _cases("batch"):
        for threads in (1, 2, 3):
            lk.set_num_threads(threads)
            c.check("batch")


# ---------------------------------------------------------------- guard pages
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard pages (Linux)")
def test_direct_conv_guard_pages(native):
    """x, w and the requantized output flush against inaccessible pages on the fold, wide-kernel
    and narrow-input geometries: the masked fill loads and the tile stores stay inside them."""
    picked = _cases("fold")[::8] + _cases("wide")[::4] + _cases("random")[::40]
    for i, c in enumerate(picked):
        at_end = bool(i % 2)
        x = guarded(c.x.shape, c.x.dtype, at_end)
        x[...] = c.x
        w = guarded(c.w.shape, c.w.dtype, at_end)
        w[...] = c.w
        lk.set_num_threads(1 + i % 3)
        np.testing.assert_array_equal(lk.conv2d_integer(x, w, c.x_zp, c.w_zp, **c.geo), c.want,
                                      err_msg=f"guarded {c.geometry}")
        out = guarded(c.want_q.shape, c.want_q.dtype, at_end)
        lk.qlinear_conv2d(x, *c.qargs()[1:3], w, *c.qargs()[4:], **c.qkw(), out=out)
        np.testing.assert_array_equal(out, c.want_q, err_msg=f"guarded qlinear {c.geometry}")


def test_direct_conv_concurrent_python_threads(native):
    """Python threads calling at once, each through growing and shrinking sizes (per-thread scratch
    regrown while other threads' teams read theirs), 2 OpenMP threads each."""
    lk.set_num_threads(2)
    jobs = _cases("fold")[::16] + _cases("wide")[::10] + _cases("batch")[::3] + _cases("random")[::60]
    calls = []
    for c in jobs:  # both ops of every case
        calls.append((lambda c=c: lk.conv2d_integer(c.x, c.w, c.x_zp, c.w_zp, **c.geo), c.want))
        calls.append((lambda c=c: lk.qlinear_conv2d(*c.qargs(), **c.qkw()), c.want_q))
    failures = failures_in_threads(calls, workers=4, rounds=2)
    assert not failures, f"{len(failures)} failing calls (thread, job, op): {failures[:5]}"
