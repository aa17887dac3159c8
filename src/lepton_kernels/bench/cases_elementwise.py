"""Benchmark cases for the element-wise family: relu, relu_backward, bias_relu
and its backward, NCHW float32.

Sizes: (64, 64, 64, 64) = 64 MiB per tensor, well above a 32 MiB L3, so the
time is DRAM-bound and compared with the measured copy bandwidth; and
(64, 32, 16, 16) = 2 MiB per tensor, which stays in cache (its "% of copy"
can exceed 100%).

Every implementation writes into a preallocated output where its API allows,
so the kernels are compared, not the allocator (a fresh 64 MiB array costs a
page fault per 4 KiB on every call). PyTorch has no ``relu(out=)``; its
``clamp_min(out=)`` does the same work.
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register, shape_str

F32 = 4
LARGE = (64, 64, 64, 64)
SMALL = (64, 32, 16, 16)


def _nbytes(shape, itemsize=F32):
    return int(np.prod(shape)) * itemsize


def _bias_view(b, ndim):
    return b.reshape((-1,) + (1,) * (ndim - 2))


# ---------------------------------------------------------------- relu
def _relu_setup(shape):
    def setup(rng):
        return {"x": rng.standard_normal(shape, dtype=np.float32), "out": np.empty(shape, np.float32)}
    return setup


def _relu_torch(d):
    import torch

    return lambda: torch.clamp_min(d["x"], 0.0, out=d["out"])


def _relu_numpy(d):
    return lambda: np.maximum(d["x"], 0.0, out=d["out"])


# ---------------------------------------------------------------- relu_backward
def _relu_bwd_setup(shape):
    def setup(rng):
        return {
            "grad": rng.standard_normal(shape, dtype=np.float32),
            "x": rng.standard_normal(shape, dtype=np.float32),
            "out": np.empty(shape, np.float32),
        }
    return setup


def _relu_bwd_torch(d):
    import torch

    op = torch.ops.aten.threshold_backward.grad_input
    return lambda: op(d["grad"], d["x"], 0.0, grad_input=d["out"])


def _relu_bwd_numpy(d):
    return lambda: np.multiply(d["grad"], d["x"] > 0, out=d["out"])


# ---------------------------------------------------------------- bias_relu
def _bias_relu_setup(shape):
    def setup(rng):
        return {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "bias": rng.standard_normal(shape[1], dtype=np.float32),
            "out": np.empty(shape, np.float32),
        }
    return setup


def _bias_relu_torch(d):
    import torch

    x, out = d["x"], d["out"]
    b = _bias_view(d["bias"], x.dim())

    def run():  # eager PyTorch has no fused bias+relu: two passes
        torch.add(x, b, out=out)
        return torch.relu_(out)
    return run


def _bias_relu_numpy(d):
    x, out = d["x"], d["out"]
    b = _bias_view(d["bias"], x.ndim)

    def run():
        np.add(x, b, out=out)
        return np.maximum(out, 0.0, out=out)
    return run


# ---------------------------------------------------------------- bias_relu_backward
# lepton's bias_relu_backward has no out= (it returns both gradients), so every
# implementation here allocates grad_x: the same allocation cost on each side.
def _bias_relu_bwd_setup(shape):
    def setup(rng):
        return {
            "grad": rng.standard_normal(shape, dtype=np.float32),
            "y": np.maximum(rng.standard_normal(shape, dtype=np.float32), 0.0),
        }
    return setup


def _bias_relu_bwd_torch(d):
    import torch

    g, y = d["grad"], d["y"]
    dims = (0,) + tuple(range(2, g.dim()))

    def run():
        gx = torch.ops.aten.threshold_backward(g, y, 0.0)
        return gx, gx.sum(dim=dims)
    return run


def _bias_relu_bwd_numpy(d):
    g, y = d["grad"], d["y"]
    axes = (0,) + tuple(range(2, g.ndim))

    def run():
        gx = g * (y > 0)
        return gx, gx.sum(axis=axes)
    return run


def _register_all():
    pending = []  # (op order, size order, case): the report groups one op's cases
    for si, (shape, size) in enumerate(((LARGE, "large"), (SMALL, "small"))):
        s = shape_str(shape)
        n = _nbytes(shape)
        c = shape[1] * F32
        common = {"shape": list(shape), "dtype": "float32", "size": size}
        pending.append((1, si, BenchCase(
            name=f"relu/{s}", family="elementwise", op="relu",
            setup=_relu_setup(shape),
            lepton=lambda lk, d: (lambda: lk.relu(d["x"], out=d["out"])),
            bytes_moved=2 * n, flops=n // F32,
            baselines={"torch": _relu_torch, "numpy": _relu_numpy}, params=common,
        )))
        pending.append((2, si, BenchCase(
            name=f"relu_backward/{s}", family="elementwise", op="relu_backward",
            setup=_relu_bwd_setup(shape),
            lepton=lambda lk, d: (lambda: lk.relu_backward(d["grad"], d["x"], out=d["out"])),
            bytes_moved=3 * n,
            baselines={"torch": _relu_bwd_torch, "numpy": _relu_bwd_numpy}, params=common,
        )))
        pending.append((3, si, BenchCase(
            name=f"bias_relu/{s}", family="elementwise", op="bias_relu",
            setup=_bias_relu_setup(shape),
            lepton=lambda lk, d: (lambda: lk.bias_relu(d["x"], d["bias"], out=d["out"])),
            bytes_moved=2 * n + c, flops=2 * (n // F32),
            baselines={"torch": _bias_relu_torch, "numpy": _bias_relu_numpy}, params=common,
        )))
        pending.append((4, si, BenchCase(
            name=f"bias_relu_backward/{s}", family="elementwise", op="bias_relu_backward",
            setup=_bias_relu_bwd_setup(shape),
            lepton=lambda lk, d: (lambda: lk.bias_relu_backward(d["grad"], d["y"])),
            bytes_moved=3 * n + c, flops=2 * (n // F32),
            baselines={"torch": _bias_relu_bwd_torch, "numpy": _bias_relu_bwd_numpy},
            params={**common, "note": "grad_x allocated per call by every implementation"},
        )))

    for *_, case in sorted(pending, key=lambda t: t[:2]):
        register(case)


_register_all()
