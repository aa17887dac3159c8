"""Benchmark cases for batch normalization: batch_norm forward+backward in training mode
(the step a CNN runs per layer), NCHW float32, against torch's batch_norm forward and
autograd backward on the same tensors.

Shapes: (64, 64, 16, 16) (issue 11's target shape, 4 MiB per tensor) and
(64, 16, 32, 32) (ResNet-8's first stage). The running statistics are updated in
place on both sides, as in training.
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register, shape_str

F32 = 4
SHAPES = ((64, 64, 16, 16), (64, 16, 32, 32))


def _setup(shape):
    def setup(rng):
        c = shape[1]
        return {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "grad": rng.standard_normal(shape, dtype=np.float32),
            "weight": (rng.random(c, dtype=np.float32) + 0.5),
            "bias": rng.standard_normal(c, dtype=np.float32),
            "running_mean": np.zeros(c, np.float32),
            "running_var": np.ones(c, np.float32),
        }
    return setup


def _lepton(lk, d):
    def run():
        y = lk.batch_norm(d["x"], d["running_mean"], d["running_var"], d["weight"], d["bias"], training=True)
        lk.batch_norm_backward(d["grad"], d["x"], d["weight"], None, None, training=True)
        return y
    return run


def _torch(d):
    import torch

    x = d["x"].detach().requires_grad_()
    w, b = d["weight"].detach().requires_grad_(), d["bias"].detach().requires_grad_()

    def run():
        x.grad = w.grad = b.grad = None
        y = torch.nn.functional.batch_norm(x, d["running_mean"], d["running_var"], w, b, training=True)
        y.backward(d["grad"])
        return y.detach()
    return run


def _register_all():
    for shape in SHAPES:
        n = int(np.prod(shape)) * F32
        register(BenchCase(
            name=f"batch_norm_train/{shape_str(shape)}", family="norm", op="batch_norm",
            setup=_setup(shape), lepton=_lepton,
            # forward: x read twice (statistics), once more and y written; backward: the
            # statistics again, g and x read twice, grad_x written
            bytes_moved=9 * n, baselines={"torch": _torch},
            params={"shape": list(shape), "dtype": "float32", "note": "forward + backward, training mode"},
        ))


_register_all()
