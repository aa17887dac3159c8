"""Benchmark cases for int8: matmul_integer / qlinear_matmul against the int8 peak and the
library's own float32 GEMM, conv2d_integer (int32 out) and qlinear_conv2d (requantized uint8
out, bias + ReLU: what a quantized layer runs) on the LeNet/CIFAR shapes against the float32
convolution, and quantize / dequantize bandwidth.

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


def _qconv_lepton(lk, d):
    # What a quantized layer runs: requantized uint8 output, per-channel weight scales, int32 bias, ReLU.
    c_out = d["w"].shape[0]
    w_scale = np.full(c_out, 0.004, np.float32)
    bias = np.arange(c_out, dtype=np.int32) * 100
    return lambda: lk.qlinear_conv2d(d["x"], 0.02, 128, d["w"], w_scale, 0, 0.5, np.uint8(0), bias, d["s"], d["p"],
                                     activation="relu")


def _conv_float_relu(d):
    import lepton_kernels as lk

    bias = np.zeros(d["wf"].shape[0], np.float32)
    return lambda: lk.conv2d(d["xf"], d["wf"], bias, d["s"], d["p"], activation="relu")


def _qmm_lepton(lk, d):
    n = d["b"].shape[1]
    w_scale = np.full(n, 0.004, np.float32)
    bias = np.arange(n, dtype=np.int32)
    return lambda: lk.qlinear_matmul(d["a"], 0.02, 128, d["b"], w_scale, 0, 0.5, np.uint8(0), bias=bias,
                                     activation="relu")


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
        register(BenchCase(
            name=f"qlinear_conv2d/{name}", family="int8", op="qlinear_conv2d",
            setup=_conv_setup(shape, c_out, k, s, p), lepton=_qconv_lepton,
            flops=2 * n * c_out * oh * ow * c * k * k,
            bytes_moved=n * c * h * w + c_out * c * k * k + n * c_out * oh * ow, limit="int8_gops",
            baselines={"numpy": _conv_float_relu}, devices=("cpu",), compare=False,
            params={"shape": list(shape), "c_out": c_out, "kernel": k, "output": "uint8, bias + relu",
                    "baseline": "lepton float32 conv2d + bias + relu"}))
    register(BenchCase(
        name=f"qlinear_matmul/u8s8-{N}", family="int8", op="qlinear_matmul", setup=_mm_setup,
        lepton=_qmm_lepton, flops=2 * N ** 3, bytes_moved=3 * N * N, limit="int8_gops",
        baselines={"numpy": _mm_float}, devices=("cpu",), compare=False,
        params={"m": N, "k": N, "n": N, "types": "u8 x s8 -> u8, bias + relu", "baseline": "lepton float32 matmul"}))
    count = int(np.prod(BIG))
    register(BenchCase(
        name="quantize/64x64x64x64", family="int8", op="quantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.quantize(d["x"], 0.05, 3, out=d["q"])), bytes_moved=5 * count,
        devices=("cpu",), compare=False, params={"dtype": "int8"}))
    register(BenchCase(
        name="dequantize/64x64x64x64", family="int8", op="dequantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.dequantize(d["q"], 0.05, 3, out=d["y"])), bytes_moved=5 * count,
        devices=("cpu",), compare=False, params={"dtype": "int8"}))



# ---------------------------------------------------------------- CUDA (dp4a kernels of cuda/kernels/quant.cuh)
# GPU cases time the CUDA backends on device arrays. Baselines are torch on the GPU: cuBLAS int8
# (torch._int_mm, signed int8 without zero points) for matmul_integer, cuDNN float32 for the
# convolutions (torch has no int8 CUDA convolution users would reach for), quantize_per_tensor
# and an element-wise float expression for quantize / dequantize.
GPU_N = 4096
GPU_CONV = [s for s in CONV_SHAPES if s[0] in ("lenet-conv2", "cifar-32x16", "resnet-3x3", "pointwise-1x1")]


def _gpu_mm_setup(signed_a):
    def setup(rng):
        lo = -128 if signed_a else 0
        a = rng.integers(lo, lo + 256, (GPU_N, GPU_N)).astype(np.int8 if signed_a else np.uint8)
        return {"a": a, "b": rng.integers(-128, 128, (GPU_N, GPU_N)).astype(np.int8),
                "af": rng.standard_normal((GPU_N, GPU_N), dtype=np.float32),
                "bf": rng.standard_normal((GPU_N, GPU_N), dtype=np.float32)}
    return setup


def _qlinear_lepton(lk, d):
    bias = np.linspace(-1000, 1000, GPU_N, dtype=np.float32)  # host floats: quantized by the op
    return lambda: lk.qlinear_matmul(d["a"], 0.05, 128, d["b"], 0.01, 0, 2.0, np.uint8(5), bias=bias,
                                     activation="relu")


def _int_mm_torch(d):
    import torch

    return lambda: torch._int_mm(d["a"], d["b"])


def _mm_float_torch(d):
    import torch

    return lambda: torch.matmul(d["af"], d["bf"])


def _gpu_conv_torch(d):
    import torch.nn.functional as F

    return lambda: F.conv2d(d["xf"], d["wf"], None, d["s"], d["p"])


def _quantize_torch(d):
    import torch

    return lambda: torch.quantize_per_tensor(d["x"], 0.05, 3, torch.qint8)


def _dequantize_torch(d):
    return lambda: (d["q"].float() - 3) * 0.05


def _register_gpu():
    flops = 2 * GPU_N ** 3
    mm_bytes = 2 * GPU_N * GPU_N + 4 * GPU_N * GPU_N
    register(BenchCase(
        name=f"matmul_integer/cuda-s8s8-{GPU_N}", family="int8", op="matmul_integer", setup=_gpu_mm_setup(True),
        lepton=lambda lk, d: (lambda: lk.matmul_integer(d["a"], d["b"])), flops=flops, bytes_moved=mm_bytes,
        limit="int8_gops", baselines={"torch": _int_mm_torch}, devices=("cuda",), compare=True,
        params={"m": GPU_N, "k": GPU_N, "n": GPU_N, "types": "s8 x s8", "baseline": "torch._int_mm (cuBLAS int8)"}))
    register(BenchCase(
        name=f"matmul_integer/cuda-u8s8-zp-{GPU_N}", family="int8", op="matmul_integer", setup=_gpu_mm_setup(False),
        lepton=lambda lk, d: (lambda: lk.matmul_integer(d["a"], d["b"], 3, 1)), flops=flops, bytes_moved=mm_bytes,
        limit="int8_gops", baselines={"torch": _mm_float_torch}, devices=("cuda",), compare=False, quick=False,
        params={"m": GPU_N, "k": GPU_N, "n": GPU_N, "types": "u8 x s8, zero points 3 / 1",
                "baseline": "torch float32 matmul"}))
    register(BenchCase(
        name=f"qlinear_matmul/cuda-u8s8-{GPU_N}", family="int8", op="qlinear_matmul", setup=_gpu_mm_setup(False),
        lepton=_qlinear_lepton,
        flops=flops, bytes_moved=3 * GPU_N * GPU_N, limit="int8_gops", baselines={"torch": _mm_float_torch},
        devices=("cuda",), compare=False, quick=False,
        params={"m": GPU_N, "k": GPU_N, "n": GPU_N, "types": "u8 x s8 -> u8, bias + relu",
                "baseline": "torch float32 matmul"}))
    for name, shape, c_out, k, s, p, _ in GPU_CONV:
        n, c, h, w = shape
        oh, ow = _out_hw(h, w, k, s, p)
        register(BenchCase(
            name=f"conv2d_integer/cuda-{name}", family="int8", op="conv2d_integer",
            setup=_conv_setup(shape, c_out, k, s, p), lepton=_conv_lepton, flops=2 * n * c_out * oh * ow * c * k * k,
            bytes_moved=n * c * h * w + c_out * c * k * k + 4 * n * c_out * oh * ow, limit="int8_gops",
            baselines={"torch": _gpu_conv_torch}, devices=("cuda",), compare=False, quick=name == "resnet-3x3",
            params={"shape": list(shape), "c_out": c_out, "kernel": k, "baseline": "torch float32 conv2d (cuDNN)"}))
    count = int(np.prod(BIG))
    register(BenchCase(
        name="quantize/cuda-64x64x64x64", family="int8", op="quantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.quantize(d["x"], 0.05, 3, out=d["q"])), bytes_moved=5 * count,
        baselines={"torch": _quantize_torch}, devices=("cuda",), compare=False, params={"dtype": "int8"}))
    register(BenchCase(
        name="dequantize/cuda-64x64x64x64", family="int8", op="dequantize", setup=_q_setup,
        lepton=lambda lk, d: (lambda: lk.dequantize(d["q"], 0.05, 3, out=d["y"])), bytes_moved=5 * count,
        baselines={"torch": _dequantize_torch}, devices=("cuda",), compare=False, params={"dtype": "int8"}))


_register_all()
_register_gpu()
