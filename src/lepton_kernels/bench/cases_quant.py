"""Benchmark cases for int8: matmul_integer against the int8 peak and the library's own float32
GEMM, conv2d_integer on the LeNet/CIFAR shapes against the float32 convolution, and
quantize / dequantize bandwidth.

The float32 counterparts run as the "numpy" baseline slot: they call lepton_kernels itself,
so "vs numpy" reads "speed-up over our float32 kernel" for these cases.
"""
from __future__ import annotations

import numpy as np

from .cases_conv import CONV_SHAPES, _out_hw
from .registry import BenchCase, register

N = 1024
INT8_CONV = [s for s in CONV_SHAPES if s[0] in ("lenet-conv1", "lenet-conv2", "cifar-conv1", "cifar-32x16",
                                                 "cifar-64x8")]
BIG = (64, 64, 64, 64)  # 16M elements


def _mm_setup(rng):
    return {"a": rng.integers(0, 256, (N, N)).astype(np.uint8), "b": rng.integers(-128, 128, (N, N)).astype(np.int8),
            "af": rng.standard_normal((N, N), dtype=np.float32), "bf": rng.standard_normal((N, N), dtype=np.float32),
            "out": np.empty((N, N), np.float32)}


def _mm_lepton(lk, d):
    return lambda: lk.matmul_integer(d["a"], d["b"], 3, 1)


def _mm_float(d):
    import lepton_kernels as lk

    return lambda: lk.matmul(d["af"], d["bf"], out=d["out"])


def _conv_setup(shape, c_out, k, s, p):
    def setup(rng):
        n, c, h, w = shape
        return {"x": rng.integers(0, 256, shape).astype(np.uint8),
                "w": rng.integers(-128, 128, (c_out, c, k, k)).astype(np.int8),
                "xf": rng.standard_normal(shape, dtype=np.float32),
                "wf": rng.standard_normal((c_out, c, k, k), dtype=np.float32), "s": s, "p": p}
    return setup


def _conv_lepton(lk, d):
    return lambda: lk.conv2d_integer(d["x"], d["w"], 128, None, d["s"], d["p"])


def _conv_float(d):
    import lepton_kernels as lk

    return lambda: lk.conv2d(d["xf"], d["wf"], None, d["s"], d["p"])


def _q_setup(rng):
    return {"x": rng.standard_normal(BIG, dtype=np.float32), "q": np.empty(BIG, np.int8),
            "y": np.empty(BIG, np.float32)}


def _register_all():
    register(BenchCase(
        name=f"matmul_integer/u8s8-{N}", family="int8", op="matmul_integer", setup=_mm_setup,
        lepton=_mm_lepton, flops=2 * N ** 3, bytes_moved=2 * N * N + 4 * N * N, limit="int8_gops",
        baselines={"numpy": _mm_float}, devices=("cpu",), compare=False,
        params={"m": N, "k": N, "n": N, "types": "u8 x s8", "baseline": "lepton float32 matmul"}))
    for name, shape, c_out, k, s, p, _ in INT8_CONV:
        n, c, h, w = shape
        oh, ow = _out_hw(h, w, k, s, p)
        register(BenchCase(
            name=f"conv2d_integer/{name}", family="int8", op="conv2d_integer", setup=_conv_setup(shape, c_out, k, s, p),
            lepton=_conv_lepton, flops=2 * n * c_out * oh * ow * c * k * k,
            bytes_moved=n * c * h * w + c_out * c * k * k + 4 * n * c_out * oh * ow, limit="int8_gops",
            baselines={"numpy": _conv_float}, devices=("cpu",), compare=False,
            params={"shape": list(shape), "c_out": c_out, "kernel": k, "baseline": "lepton float32 conv2d"}))
    count = int(np.prod(BIG))
    register(BenchCase(
        name="quantize/64x64x64x64", family="int8", op="quantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.quantize(d["x"], 0.05, 3, out=d["q"])), bytes_moved=5 * count,
        devices=("cpu",), compare=False, params={"dtype": "int8"}))
    register(BenchCase(
        name="dequantize/64x64x64x64", family="int8", op="dequantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.dequantize(d["q"], 0.05, 3, out=d["y"])), bytes_moved=5 * count,
        devices=("cpu",), compare=False, params={"dtype": "int8"}))


_register_all()
