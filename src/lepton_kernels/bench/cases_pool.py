"""Benchmark cases for 2-D pooling, NCHW float32, batch 64.

Shapes: (64, 64, 56, 56) (a ResNet stem output, 49 MiB: DRAM-bound) and
(64, 32, 32, 32) (CIFAR-size, 8 MiB). Windows: 2x2 stride 2 and 3x3 stride 2
padding 1. Bytes moved: the input read once, the output (and int64 indices)
written once; backward: grad_out (+ indices) read, grad_in written once.

lepton and NumPy write into preallocated outputs; PyTorch forwards go through
``torch.nn.functional`` (no out=, but the outputs are small enough for malloc
to reuse), PyTorch backwards through the aten ``grad_input=`` overloads.
NumPy only has a natural version for non-overlapping 2x2 windows (reshape).
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register, shape_str

F32, I64 = 4, 8
SHAPES = ((64, 64, 56, 56), (64, 32, 32, 32))
WINDOWS = ((2, 2, 0), (3, 2, 1))  # kernel, stride, padding


def _out_hw(h, w, k, s, p):
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1


def _tag(k, s, p):
    return f"k{k}s{s}" + (f"p{p}" if p else "")


def max_pool_indices(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """int64 indices ``ih * W + iw`` of each window's max (first on ties): the
    input to max_pool2d_backward, computed with NumPy only."""
    n, c, h, w = x.shape
    ho, wo = _out_hw(h, w, k, s, p)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :ho, :wo]
    tap = win.reshape(n, c, ho, wo, k * k).argmax(axis=-1)
    di, dj = np.divmod(tap, k)
    ih = np.arange(ho)[:, None] * s - p + di
    iw = np.arange(wo)[None, :] * s - p + dj
    return (ih * w + iw).astype(np.int64)


def _blocks(a, k):
    """View (N, C, H, W) as (N, C, H/k, k, W/k, k) for non-overlapping windows."""
    n, c, h, w = a.shape
    return a.reshape(n, c, h // k, k, w // k, k)


# ---------------------------------------------------------------- max_pool2d
def _max_setup(shape, k, s, p, backward=False):
    n, c, h, w = shape
    ho, wo = _out_hw(h, w, k, s, p)

    def setup(rng):
        x = rng.standard_normal(shape, dtype=np.float32)
        d = {"x": x, "k": k, "s": s, "p": p, "in_shape": tuple(shape)}
        if backward:
            d["idx"] = max_pool_indices(x, k, s, p)
            d["grad"] = rng.standard_normal((n, c, ho, wo), dtype=np.float32)
            d["out"] = np.empty(shape, np.float32)
        else:
            d["out"] = np.empty((n, c, ho, wo), np.float32)
        return d
    return setup


def _max_lepton(lk, d):
    return lambda: lk.max_pool2d(d["x"], d["k"], d["s"], d["p"], out=d["out"])


def _max_idx_lepton(lk, d):
    return lambda: lk.max_pool2d(d["x"], d["k"], d["s"], d["p"], return_indices=True, out=d["out"])


def _max_bwd_lepton(lk, d):
    return lambda: lk.max_pool2d_backward(d["grad"], d["idx"], d["in_shape"], out=d["out"])


def _max_torch(d):
    import torch.nn.functional as F

    return lambda: F.max_pool2d(d["x"], d["k"], d["s"], d["p"])


def _max_idx_torch(d):
    import torch.nn.functional as F

    return lambda: F.max_pool2d(d["x"], d["k"], d["s"], d["p"], return_indices=True)


def _max_bwd_torch(d):
    import torch

    op = torch.ops.aten.max_pool2d_with_indices_backward.grad_input
    k, s, p = d["k"], d["s"], d["p"]
    return lambda: op(d["grad"], d["x"], [k, k], [s, s], [p, p], [1, 1], False, d["idx"], grad_input=d["out"])


def _max_numpy(d):
    if d["k"] != d["s"] or d["p"]:
        raise NotImplementedError
    return lambda: _blocks(d["x"], d["k"]).max(axis=(3, 5), out=d["out"])


# ---------------------------------------------------------------- avg_pool2d
def _avg_setup(shape, k, s, p, backward=False):
    n, c, h, w = shape
    ho, wo = _out_hw(h, w, k, s, p)

    def setup(rng):
        d = {"k": k, "s": s, "p": p, "in_shape": tuple(shape)}
        if backward:
            d["x"] = np.empty(shape, np.float32)  # only its shape is used (torch's API wants it)
            d["grad"] = rng.standard_normal((n, c, ho, wo), dtype=np.float32)
            d["out"] = np.empty(shape, np.float32)
        else:
            d["x"] = rng.standard_normal(shape, dtype=np.float32)
            d["out"] = np.empty((n, c, ho, wo), np.float32)
        return d
    return setup


def _avg_lepton(lk, d):
    return lambda: lk.avg_pool2d(d["x"], d["k"], d["s"], d["p"], out=d["out"])


def _avg_bwd_lepton(lk, d):
    return lambda: lk.avg_pool2d_backward(d["grad"], d["in_shape"], d["k"], d["s"], d["p"], out=d["out"])


def _avg_torch(d):
    import torch.nn.functional as F

    return lambda: F.avg_pool2d(d["x"], d["k"], d["s"], d["p"])


def _avg_bwd_torch(d):
    import torch

    op = torch.ops.aten.avg_pool2d_backward.grad_input
    k, s, p = d["k"], d["s"], d["p"]
    return lambda: op(d["grad"], d["x"], [k, k], [s, s], [p, p], False, True, None, grad_input=d["out"])


def _avg_numpy(d):
    if d["k"] != d["s"] or d["p"]:
        raise NotImplementedError
    return lambda: _blocks(d["x"], d["k"]).mean(axis=(3, 5), out=d["out"])


def _avg_bwd_numpy(d):
    if d["k"] != d["s"] or d["p"]:
        raise NotImplementedError
    k = d["k"]
    g = d["grad"][:, :, :, None, :, None]
    dst = _blocks(d["out"], k)
    return lambda: np.multiply(g, 1.0 / (k * k), out=dst)


def _register_all():
    pending = []  # (op order, window, shape order, case): the report groups one op's cases
    for si, shape in enumerate(SHAPES):
        n, c, h, w = shape
        for wi, (k, s, p) in enumerate(WINDOWS):
            ho, wo = _out_hw(h, w, k, s, p)
            nin = n * c * h * w
            nout = n * c * ho * wo
            name = f"{_tag(k, s, p)}/{shape_str(shape)}"
            common = {"shape": list(shape), "kernel": k, "stride": s, "padding": p, "dtype": "float32"}
            numpy_ok = k == s and p == 0 and h % k == 0 and w % k == 0
            np_fwd = {"numpy": _max_numpy} if numpy_ok else {}
            pending.append((1, wi, si, BenchCase(
                name=f"max_pool2d/{name}", family="pool", op="max_pool2d",
                setup=_max_setup(shape, k, s, p), lepton=_max_lepton,
                bytes_moved=(nin + nout) * F32, flops=nout * k * k,
                baselines={"torch": _max_torch, **np_fwd}, params=common,
            )))
            pending.append((2, wi, si, BenchCase(
                name=f"max_pool2d/{_tag(k, s, p)}+idx/{shape_str(shape)}", family="pool", op="max_pool2d",
                setup=_max_setup(shape, k, s, p), lepton=_max_idx_lepton,
                bytes_moved=(nin + nout) * F32 + nout * I64, flops=nout * k * k,
                baselines={"torch": _max_idx_torch}, params={**common, "return_indices": True},
            )))
            pending.append((3, wi, si, BenchCase(
                name=f"max_pool2d_backward/{name}", family="pool", op="max_pool2d_backward",
                setup=_max_setup(shape, k, s, p, backward=True), lepton=_max_bwd_lepton,
                bytes_moved=(nout + nin) * F32 + nout * I64, flops=nout,
                baselines={"torch": _max_bwd_torch}, params=common,
            )))
            pending.append((4, wi, si, BenchCase(
                name=f"avg_pool2d/{name}", family="pool", op="avg_pool2d",
                setup=_avg_setup(shape, k, s, p), lepton=_avg_lepton,
                bytes_moved=(nin + nout) * F32, flops=nout * k * k,
                baselines={"torch": _avg_torch, **({"numpy": _avg_numpy} if numpy_ok else {})}, params=common,
            )))
            pending.append((5, wi, si, BenchCase(
                name=f"avg_pool2d_backward/{name}", family="pool", op="avg_pool2d_backward",
                setup=_avg_setup(shape, k, s, p, backward=True), lepton=_avg_bwd_lepton,
                bytes_moved=(nout + nin) * F32, flops=nout * k * k,
                baselines={"torch": _avg_bwd_torch, **({"numpy": _avg_bwd_numpy} if numpy_ok else {})},
                params=common,
            )))

    for *_, case in sorted(pending, key=lambda t: t[:3]):
        register(case)


_register_all()
