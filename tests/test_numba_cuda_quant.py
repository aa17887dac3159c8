"""The numba.cuda int8 kernels (quantize, dequantize, dynamic_quantize) through the kernel
interface of ``lepton_kernels._backend``, equal to ``lepton_kernels.reference`` bit for bit.

They run under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba.cuda is
first imported; CI runs the whole suite that way) or on a GPU. The simulator runs every
thread as a Python thread, so the arrays are small, still larger than a block: NaN,
+-inf, exact .5 ties, values whose float32 quotient differs from a multiplication by the
reciprocal, saturation at -128/127 and 0/255, zero points at the extremes, per-channel
scales, int32 inputs spanning 33 bits after the zero point, and the dynamic ranges that
are all zero, one-signed, denormal or overflowing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("numba")

from lepton_kernels import reference as R  # noqa: E402

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def dev(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def filled(shape, dtype, value):
    return dev(np.full(shape, value, dtype))


def span(t):
    info = np.iinfo(t)
    return int(info.min), int(info.max)


def division_sensitive(scale, count):
    """x near (k + 0.5) * scale where rint(x / scale) != rint(x * (1 / scale)) in float32."""
    s = np.float32(scale)
    x0 = ((np.arange(-300, 300) + 0.5) * np.float64(s)).astype(np.float32)
    cands = np.concatenate([x0.view(np.int32) + d for d in range(-3, 4)]).view(np.float32)
    with np.errstate(all="ignore"):
        picked = cands[np.rint(cands / s) != np.rint(cands * (np.float32(1) / s))]
    return picked[:count]


def inputs(rng, n, scale):
    x = (rng.standard_normal(n) * 50 * scale).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 127.5 * scale, -128.5 * scale,
                         255.5 * scale, 0.5 * scale, -0.5 * scale, 2.5 * scale, 1e-40], np.float32)
    x[: specials.size] = specials
    sens = division_sensitive(scale, n // 3)
    x[specials.size: specials.size + sens.size] = sens
    return x


@pytest.mark.parametrize("qtype", [np.int8, np.uint8], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("scale", [0.1, 0.25, 0.0371])
def test_numba_cuda_quantize_per_tensor(cu, qtype, scale):
    rng = np.random.default_rng(1)
    x = inputs(rng, 70, scale).reshape(1, 1, 70)
    lo, hi = span(qtype)
    for zp in (lo, hi, (lo + hi) // 2):
        q = filled(x.shape, qtype, 77)
        cu.quantize(dev(x), dev(np.array([scale], np.float32)), dev(np.array([zp], np.int32)), q)
        np.testing.assert_array_equal(q.copy_to_host(), R.quantize(x, scale, zp, dtype=qtype), err_msg=f"zp={zp}")


@pytest.mark.parametrize("qtype", [np.int8, np.uint8], ids=lambda t: np.dtype(t).name)
def test_numba_cuda_quantize_per_channel(cu, qtype):
    rng = np.random.default_rng(2)
    lo, hi = span(qtype)
    scale = np.array([0.1, 0.25, 0.0371], np.float32)
    zp = np.array([lo, hi, 5], np.int32)
    x = np.stack([inputs(rng, 24, s).reshape(2, 12) for s in scale], axis=1)  # (2, 3, 12)
    q = filled(x.shape, qtype, 77)
    cu.quantize(dev(x), dev(scale), dev(zp), q)
    np.testing.assert_array_equal(q.copy_to_host(), R.quantize(x, scale, zp, dtype=qtype, axis=1))


@pytest.mark.parametrize("qtype", [np.int8, np.uint8, np.int32], ids=lambda t: np.dtype(t).name)
def test_numba_cuda_dequantize(cu, qtype):
    rng = np.random.default_rng(3)
    lo, hi = span(qtype)
    q = rng.integers(lo, hi + 1, (2, 3, 11)).astype(qtype)
    q[0, 0, :2] = [lo, hi]
    scale = np.array([0.0371, 0.25, 3.7e-9], np.float32)
    zp = np.array([lo, hi, 0], np.int32) if qtype != np.int32 else np.array([-2**31, 2**31 - 1, 7], np.int32)
    y = filled(q.shape, np.float32, np.nan)
    cu.dequantize(dev(q), dev(scale), dev(zp), y)
    np.testing.assert_array_equal(y.copy_to_host(), R.dequantize(q, scale, zp, axis=1).astype(np.float32))
    flat = q.reshape(1, 1, -1)
    y = filled(flat.shape, np.float32, np.nan)
    cu.dequantize(dev(flat), dev(scale[:1]), dev(zp[1:2]), y)
    np.testing.assert_array_equal(y.copy_to_host(), R.dequantize(flat, scale[0], zp[1]).astype(np.float32))


DYNAMIC = {
    "normal": lambda rng: (rng.standard_normal(150) * 3).astype(np.float32),
    "positive": lambda rng: np.abs(rng.standard_normal(40)).astype(np.float32) + 1,
    "negative": lambda rng: -np.abs(rng.standard_normal(40)).astype(np.float32) - 1,
    "zeros": lambda rng: np.zeros(33, np.float32),
    "one": lambda rng: np.array([3.5], np.float32),
    "denormal": lambda rng: np.array([0.0, 1e-45, 0.0], np.float32),  # the scale underflows to 0
    "huge": lambda rng: np.array([3e38, -3e38, 1.0], np.float32),  # hi - lo overflows to inf
}


@pytest.mark.parametrize("case", list(DYNAMIC))
def test_numba_cuda_dynamic_quantize(cu, case):
    x = DYNAMIC[case](np.random.default_rng(4))
    q = filled(x.shape, np.uint8, 77)
    scale, zp = cu.dynamic_quantize(dev(x), q)
    with np.errstate(over="ignore"):
        rq, rs, rz = R.dynamic_quantize(x)
    assert np.float32(scale).tobytes() == np.float32(rs).tobytes() and int(zp) == int(rz), (scale, zp, rs, rz)
    np.testing.assert_array_equal(q.copy_to_host(), rq)
