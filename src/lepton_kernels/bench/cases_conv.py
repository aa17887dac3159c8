"""Benchmark cases for convolution, linear layers and GEMM, float32, against PyTorch.

The shape set of the convolution issue: the first layers of LeNet/CIFAR models
(1-6 input channels, where im2col + GEMM wastes most of the machine), mid-size
CIFAR layers, a ResNet-like 3x3, a 1x1 and a stride-2 layer; GEMM 1024^3 and
the LeNet linear layers. Forward cases fuse bias + ReLU (torch: conv2d then an
in-place relu_). Forward+backward cases time the forward and the gradients a
training step needs (no grad_x for a first layer: its input is the data), with
torch's autograd doing the same work. Throughput is GFLOP/s against the
measured fp32 FMA peak.
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register

# name, (batch, C_in, H, W), C_out, kernel, stride, padding, first layer (no grad_x)
CONV_SHAPES = [
    ("lenet-conv1", (64, 1, 28, 28), 6, 5, 1, 0, True),
    ("lenet-conv2", (64, 6, 14, 14), 16, 5, 1, 0, False),
    ("cifar-conv1", (64, 3, 32, 32), 32, 3, 1, 1, True),
    ("cifar-32x16", (64, 32, 16, 16), 64, 3, 1, 1, False),
    ("cifar-64x8", (64, 64, 8, 8), 64, 3, 1, 1, False),
    ("resnet-3x3", (8, 64, 56, 56), 64, 3, 1, 1, False),
    ("pointwise-1x1", (8, 256, 56, 56), 64, 1, 1, 0, False),
    ("stride2-3x3", (32, 32, 32, 32), 64, 3, 2, 1, False),
]
QUICK = {"lenet-conv1", "cifar-conv1", "resnet-3x3"}
# (name, M, K, N): x (M, K) @ w (N, K).T
LINEAR_SHAPES = [("lenet-fc1", 64, 400, 120), ("lenet-fc2", 64, 120, 84)]


def _out_hw(h, w, k, s, p):
    return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1


def _conv_flops(shape, c_out, k, s, p):
    n, c_in, h, w = shape
    oh, ow = _out_hw(h, w, k, s, p)
    return 2 * n * c_out * oh * ow * c_in * k * k


def _conv_bytes(shape, c_out, k, s, p, backward):
    """float32 bytes read and written once: x, w, b, y (and grad_out, grad_w, grad_b, grad_x)."""
    n, c_in, h, w = shape
    oh, ow = _out_hw(h, w, k, s, p)
    x, wt, y = n * c_in * h * w, c_out * c_in * k * k, n * c_out * oh * ow
    once = x + wt + c_out + y
    return 4 * (once + (y + wt + c_out + x if backward else 0))


def _conv_setup(shape, c_out, k, s, p, backward):
    def setup(rng):
        n, c_in, h, w = shape
        oh, ow = _out_hw(h, w, k, s, p)
        scale = 1.0 / np.sqrt(c_in * k * k)
        d = {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "w": (rng.standard_normal((c_out, c_in, k, k)) * scale).astype(np.float32),
            "b": rng.standard_normal(c_out, dtype=np.float32),
            "out": np.empty((n, c_out, oh, ow), np.float32),
            "s": s,
            "p": p,
        }
        if backward:
            d["grad"] = rng.standard_normal((n, c_out, oh, ow), dtype=np.float32)
        return d
    return setup


def _conv_lepton(lk, d):
    return lambda: lk.conv2d(d["x"], d["w"], d["b"], d["s"], d["p"], activation="relu", out=d["out"])


def _conv_torch(d):
    import torch.nn.functional as F

    return lambda: F.conv2d(d["x"], d["w"], d["b"], d["s"], d["p"]).relu_()


def _conv_train_lepton(first_layer):
    def factory(lk, d):
        def step():
            y = lk.conv2d(d["x"], d["w"], d["b"], d["s"], d["p"], activation="relu", out=d["out"])
            grads = lk.conv2d_backward(d["grad"], d["x"], d["w"], d["s"], d["p"], 1, 1, activation="relu",
                                       output=y, needs_input_grad=not first_layer)
            return grads[1]  # grad_w, compared with torch's
        return step
    return factory


def _conv_train_torch(first_layer):
    def factory(d):
        import torch
        import torch.nn.functional as F

        x = d["x"].detach().requires_grad_(not first_layer)
        w = d["w"].detach().requires_grad_(True)
        b = d["b"].detach().requires_grad_(True)
        wanted = [w, b] if first_layer else [x, w, b]

        def step():
            y = F.conv2d(x, w, b, d["s"], d["p"]).relu_()
            grads = torch.autograd.grad(y, wanted, d["grad"])
            return grads[-2]  # grad_w
        return step
    return factory


def _linear_setup(m, k, n):
    def setup(rng):
        return {
            "x": rng.standard_normal((m, k), dtype=np.float32),
            "w": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
            "b": rng.standard_normal(n, dtype=np.float32),
            "out": np.empty((m, n), np.float32),
        }
    return setup


def _linear_lepton(lk, d):
    return lambda: lk.linear(d["x"], d["w"], d["b"], activation="relu", out=d["out"])


def _linear_torch(d):
    import torch.nn.functional as F

    return lambda: F.linear(d["x"], d["w"], d["b"]).relu_()


def _gemm_setup(m, k, n):
    def setup(rng):
        return {
            "a": rng.standard_normal((m, k), dtype=np.float32),
            "b": rng.standard_normal((k, n), dtype=np.float32),
            "out": np.empty((m, n), np.float32),
        }
    return setup


def _gemm_lepton(lk, d):
    return lambda: lk.matmul(d["a"], d["b"], out=d["out"])


def _gemm_torch(d):
    import torch

    return lambda: torch.mm(d["a"], d["b"], out=d["out"])


def _gemm_numpy(d):
    return lambda: np.matmul(d["a"], d["b"], out=d["out"])


def _register_all():
    for name, shape, c_out, k, s, p, first in CONV_SHAPES:
        flops = _conv_flops(shape, c_out, k, s, p)
        params = {"shape": list(shape), "c_out": c_out, "kernel": k, "stride": s, "padding": p,
                  "dtype": "float32", "activation": "relu"}
        register(BenchCase(
            name=f"conv2d/{name}", family="conv", op="conv2d",
            setup=_conv_setup(shape, c_out, k, s, p, False), lepton=_conv_lepton,
            flops=flops, bytes_moved=_conv_bytes(shape, c_out, k, s, p, False), limit="fma_gflops",
            baselines={"torch": _conv_torch},
            quick=name in QUICK, params=params,
        ))
        # backward: grad_w costs one forward's flops, grad_x another (skipped for a first layer)
        train_flops = flops * (2 if first else 3)
        register(BenchCase(
            name=f"conv2d_train/{name}", family="conv", op="conv2d_backward",
            setup=_conv_setup(shape, c_out, k, s, p, True), lepton=_conv_train_lepton(first),
            flops=train_flops, bytes_moved=_conv_bytes(shape, c_out, k, s, p, True), limit="fma_gflops",
            baselines={"torch": _conv_train_torch(first)},
            quick=name in QUICK, params={**params, "first_layer": first},
        ))
    for name, m, k, n in LINEAR_SHAPES:
        register(BenchCase(
            name=f"linear/{name}", family="linear", op="linear",
            setup=_linear_setup(m, k, n), lepton=_linear_lepton, flops=2 * m * k * n,
            bytes_moved=4 * (m * k + n * k + n + m * n), limit="fma_gflops",
            baselines={"torch": _linear_torch}, params={"m": m, "k": k, "n": n, "activation": "relu"},
        ))
    register(BenchCase(
        name="matmul/1024x1024x1024", family="linear", op="matmul",
        setup=_gemm_setup(1024, 1024, 1024), lepton=_gemm_lepton, flops=2 * 1024 ** 3,
        bytes_moved=3 * 4 * 1024 ** 2, limit="fma_gflops",
        baselines={"torch": _gemm_torch, "numpy": _gemm_numpy}, params={"m": 1024, "k": 1024, "n": 1024},
    ))


_register_all()
