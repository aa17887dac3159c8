"""CUDA backend over the compiled module ``_lepton_cuda`` (kernel interface of
``lepton_kernels._backend``).

Takes device arrays exposing ``__cuda_array_interface__`` (CuPy arrays, Numba
device arrays), already validated by ``lepton_kernels.ops``: C-contiguous,
float32/float64 (indices int64; max_pool2d also int8/uint8, through
``max_pool2d_int8``), non-empty. ``_lepton_cuda`` sees only raw device
pointers, sizes, a dtype code and a stream handle, so this module turns
arrays into those. Kernels run on CuPy's current stream when CuPy is importable,
else on the legacy default stream (0), and, like every CUDA launch, return
before the kernel finishes (dynamic_quantize waits: it returns the scale and
zero point). Layouts: NCHW for pooling and convolution (OIHW weights), (N, C, S)
for bias_relu, (outer, channels, inner) for quantize / dequantize, row-major 2-D
for matmul and linear. The int8 ops take int8 / uint8 (int32) arrays and
per-channel device vectors (float32 scales and multipliers, int32 zero points
and biases).
"""
from __future__ import annotations

from lepton_kernels._backend import KERNEL_NAMES as _KERNEL_NAMES

import math

import numpy as np

try:
    from . import _lepton_cuda as _cu

    _IMPORT_ERROR: str | None = None
except Exception as exc:  # not built (no nvcc at build time), or a broken install
    _cu = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


_DTYPE_CODES = {"f4": 0, "f8": 1}
_cupy_module = None  # None: not looked up yet; False: not importable


def unavailable_reason() -> str | None:
    """None when the CUDA module is built and a device is visible, else why not."""
    if _cu is None:
        return f"_lepton_cuda not built ({_IMPORT_ERROR})"
    try:
        count = _cu.device_count()
    except Exception as exc:  # device_count never raises by design; be defensive anyway
        return f"_lepton_cuda cannot query devices: {exc}"
    if count == 0:
        driver = _cu.driver_version()
        return "no CUDA device" + ("" if driver else " (no CUDA driver)")
    return None


# ---------------------------------------------------------------- arrays -> pointers

def _stream() -> int:
    """The handle of CuPy's current stream (0 = legacy default) or 0 without CuPy."""
    global _cupy_module
    if _cupy_module is None:
        try:
            import cupy

            _cupy_module = cupy
        except Exception:
            _cupy_module = False
    if _cupy_module is False:
        return 0
    return int(_cupy_module.cuda.get_current_stream().ptr)


def _iface(a, name: str):
    """(pointer, shape, dtype code) of a C-contiguous device array."""
    try:
        ai = a.__cuda_array_interface__
    except AttributeError:
        raise TypeError(f"_native_cuda: {name} must expose __cuda_array_interface__, "
                        f"got {type(a).__name__}") from None
    shape = tuple(int(s) for s in ai["shape"])
    typestr = ai["typestr"]
    strides = ai.get("strides")
    if strides is not None:
        itemsize = int(typestr[2:])
        expected, step = [], itemsize
        for s in reversed(shape):
            expected.append(step)
            step *= s
        if any(st != ex for st, ex, s in zip(strides, reversed(expected), shape) if s > 1):
            raise ValueError(f"_native_cuda: {name} must be C-contiguous, got strides {strides}")
    if typestr[0] == ">":
        raise TypeError(f"_native_cuda: {name} must be little-endian, got {typestr}")
    return int(ai["data"][0]), shape, typestr[1:]


def _float(a, name: str):
    ptr, shape, t = _iface(a, name)
    code = _DTYPE_CODES.get(t)
    if code is None:
        raise TypeError(f"_native_cuda: {name} must be float32 or float64, got typestr {t!r}")
    return ptr, shape, code


def _same(op: str, code: int, **codes):
    for name, c in codes.items():
        if c != code:
            raise TypeError(f"{op}: {name} has a different dtype from the first input")


def _index_ptr(a, name: str) -> int:
    ptr, _, t = _iface(a, name)
    if t != "i8":
        raise TypeError(f"_native_cuda: {name} must be int64, got typestr {t!r}")
    return ptr


# ---------------------------------------------------------------- element-wise

def relu(x, out):
    xp, shape, code = _float(x, "x")
    op, _, oc = _float(out, "out")
    _same("relu", code, out=oc)
    _cu.relu(xp, op, math.prod(shape), code, _stream())


def relu_backward(grad_out, x, out):
    gp, shape, code = _float(grad_out, "grad_out")
    xp, _, xc = _float(x, "x")
    op, _, oc = _float(out, "out")
    _same("relu_backward", code, x=xc, out=oc)
    _cu.relu_backward(gp, xp, op, math.prod(shape), code, _stream())


def bias_relu(x3, bias, out3):
    xp, (n, c, s), code = _float(x3, "x")
    bp, _, bc = _float(bias, "bias")
    op, _, oc = _float(out3, "out")
    _same("bias_relu", code, bias=bc, out=oc)
    _cu.bias_relu(xp, bp, op, n, c, s, code, _stream())


def bias_relu_backward(grad_out3, y3, grad_x3, grad_bias):
    gp, (n, c, s), code = _float(grad_out3, "grad_out")
    yp, _, yc = _float(y3, "out")
    gxp, _, gxc = _float(grad_x3, "grad_x")
    codes = {"out": yc, "grad_x": gxc}
    gbp = 0
    if grad_bias is not None:
        gbp, _, codes["grad_bias"] = _float(grad_bias, "grad_bias")
    _same("bias_relu_backward", code, **codes)
    _cu.bias_relu_backward(gp, yp, gxp, gbp, n, c, s, code, _stream())


# ---------------------------------------------------------------- pooling

def _window(p):
    return (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w,
            p.pad_top, p.pad_bottom, p.pad_left, p.pad_right)


def _no_dilation(op: str, p):
    if p.dilation_h != 1 or p.dilation_w != 1:
        raise ValueError(f"{op}: average pooling has no dilation, got ({p.dilation_h}, {p.dilation_w})")


def max_pool2d(x, out, indices, p):
    ip = 0 if indices is None else _index_ptr(indices, "indices")
    if _iface(out, "out")[2] in ("i1", "u1"):  # quantized activations: the int8 kernels
        xp, (n, c, h, w), code = _int(x, "x")
        op, (_, _, oh, ow), oc = _int(out, "out")
        _same("max_pool2d", code, out=oc)
        _cu.max_pool2d_int8(xp, op, ip, n, c, h, w, oh, ow, *_window(p), p.dilation_h, p.dilation_w,
                            code, _stream())
        return
    xp, (n, c, h, w), code = _float(x, "x")
    op, (_, _, oh, ow), oc = _float(out, "out")
    _same("max_pool2d", code, out=oc)
    _cu.max_pool2d(xp, op, ip, n, c, h, w, oh, ow, *_window(p), p.dilation_h, p.dilation_w,
                   code, _stream())


def max_pool2d_backward(grad_out, indices, grad_in, p):
    # The scatter follows the indices: p (the geometry) is not needed and not passed.
    gp, (_, _, oh, ow), code = _float(grad_out, "grad_out")
    ip = _index_ptr(indices, "indices")
    gip, (n, c, h, w), gic = _float(grad_in, "grad_in")
    _same("max_pool2d_backward", code, grad_in=gic)
    _cu.max_pool2d_backward(gp, ip, gip, n, c, h, w, oh, ow, code, _stream())


def avg_pool2d(x, out, p):
    _no_dilation("avg_pool2d", p)
    xp, (n, c, h, w), code = _float(x, "x")
    op, (_, _, oh, ow), oc = _float(out, "out")
    _same("avg_pool2d", code, out=oc)
    _cu.avg_pool2d(xp, op, n, c, h, w, oh, ow, *_window(p), bool(p.count_include_pad),
                   int(p.divisor_override or 0), code, _stream())


def avg_pool2d_backward(grad_out, grad_in, p):
    _no_dilation("avg_pool2d_backward", p)
    gp, (_, _, oh, ow), code = _float(grad_out, "grad_out")
    gip, (n, c, h, w), gic = _float(grad_in, "grad_in")
    _same("avg_pool2d_backward", code, grad_in=gic)
    _cu.avg_pool2d_backward(gp, gip, n, c, h, w, oh, ow, *_window(p), bool(p.count_include_pad),
                            int(p.divisor_override or 0), code, _stream())


# ---------------------------------------------------------------- GEMM, linear, convolution

def _optional(a, name: str, op: str, code: int) -> int:
    """Pointer of an optional float array of dtype `code`; 0 (null) for None."""
    if a is None:
        return 0
    ptr, _, c = _float(a, name)
    _same(op, code, **{name: c})
    return ptr


def matmul(a, b, out):
    ap, (m, k), code = _float(a, "a")
    bp, (_, n), bc = _float(b, "b")
    op, _, oc = _float(out, "out")
    _same("matmul", code, b=bc, out=oc)
    _cu.matmul(ap, bp, op, m, k, n, code, _stream())


def linear(x2, weight, bias, out2, relu):
    xp, (m, k), code = _float(x2, "x")
    wp, (n, _), wc = _float(weight, "weight")
    op, _, oc = _float(out2, "out")
    _same("linear", code, weight=wc, out=oc)
    bp = _optional(bias, "bias", "linear", code)
    _cu.linear(xp, wp, bp, op, m, k, n, bool(relu), code, _stream())


def linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b):
    op = "linear_backward"
    gp, (m, n), code = _float(grad_out2, "grad_out")
    xp, (_, k), xc = _float(x2, "x")
    wp, _, wc = _float(weight, "weight")
    _same(op, code, x=xc, weight=wc)
    _cu.linear_backward(gp, xp, wp, _optional(y2, "output", op, code),
                        _optional(grad_x2, "grad_x", op, code), _optional(grad_w, "grad_w", op, code),
                        _optional(grad_b, "grad_b", op, code), m, k, n, code, _stream())


def _conv_geometry(c):
    return (c.stride_h, c.stride_w, c.pad_top, c.pad_bottom, c.pad_left, c.pad_right,
            c.dilation_h, c.dilation_w, c.groups)


def conv2d(x, weight, bias, out, c, relu):
    xp, (n, c_in, h, w), code = _float(x, "x")
    wp, (c_out, _, kh, kw), wc = _float(weight, "weight")
    op, (_, _, oh, ow), oc = _float(out, "out")
    _same("conv2d", code, weight=wc, out=oc)
    bp = _optional(bias, "bias", "conv2d", code)
    _cu.conv2d(xp, wp, bp, op, n, c_in, h, w, c_out, kh, kw, oh, ow, *_conv_geometry(c), bool(relu),
               code, _stream())


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    op = "conv2d_backward"
    gp, (n, c_out, oh, ow), code = _float(grad_out, "grad_out")
    xp, (_, c_in, h, w), xc = _float(x, "x")
    wp, (_, _, kh, kw), wc = _float(weight, "weight")
    _same(op, code, x=xc, weight=wc)
    _cu.conv2d_backward(gp, xp, wp, _optional(y, "output", op, code), _optional(grad_x, "grad_x", op, code),
                        _optional(grad_w, "grad_w", op, code), _optional(grad_b, "grad_b", op, code),
                        n, c_in, h, w, c_out, kh, kw, oh, ow, *_conv_geometry(c), code, _stream())


# ---------------------------------------------------------------- optimizers and losses

def _tables(op: str, params, **lists):
    """(dtype code, counts, {name: pointer list}) for lists of arrays shaped like params.

    A list given as None (no momentum buffers, no amsgrad) comes back as None.
    """
    counts, tables, code = [], {"params": []}, None
    for i, p in enumerate(params):
        ptr, shape, c = _float(p, f"params[{i}]")
        code = c if code is None else code
        _same(op, code, **{f"params[{i}]": c})
        counts.append(math.prod(shape))
        tables["params"].append(ptr)
    for name, arrays in lists.items():
        if arrays is None:
            tables[name] = None
            continue
        tables[name] = []
        for i, a in enumerate(arrays):
            ptr, shape, c = _float(a, f"{name}[{i}]")
            _same(op, code, **{f"{name}[{i}]": c})
            if math.prod(shape) != counts[i]:
                raise ValueError(f"{op}: {name}[{i}] has {math.prod(shape)} elements, params[{i}] {counts[i]}")
            tables[name].append(ptr)
    return (0 if code is None else code), counts, tables


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    # One binding call; the launcher loops over the tensors on the host, all on one stream.
    code, counts, t = _tables("sgd_step", params, grads=grads, bufs=bufs if momentum else None)
    _cu.sgd_step(t["params"], t["grads"], t["bufs"], counts, code, float(lr), float(momentum), float(dampening),
                 float(weight_decay), bool(nesterov), bool(maximize), bool(first_step), _stream())


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    code, counts, t = _tables("adam_step", params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs,
                              max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else None)
    _cu.adam_step(t["params"], t["grads"], t["exp_avgs"], t["exp_avg_sqs"], t["max_exp_avg_sqs"], counts, code,
                  int(step), float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), bool(decoupled),
                  bool(amsgrad), bool(maximize), _stream())


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    op = "cross_entropy"
    zp, (n, c), code = _float(logits, "logits")
    lp, _, lc = _float(losses, "losses")
    _same(op, code, losses=lc)
    _cu.cross_entropy(zp, _index_ptr(target, "target"), _optional(weight, "weight", op, code), lp,
                      _optional(dlogits, "dlogits", op, code), n, c, int(ignore_index), float(label_smoothing),
                      code, _stream())


# ---------------------------------------------------------------- int8 quantization
# Integer arrays travel as (pointer, type code): 0 int8, 1 uint8, 2 int32; the small
# per-channel vectors (scales and multipliers float32, zero points and biases int32)
# are device arrays too.

_QCODES = {"i1": 0, "u1": 1, "i4": 2}


def _int(a, name: str, allowed=(0, 1)):
    ptr, shape, t = _iface(a, name)
    code = _QCODES.get(t)
    if code not in allowed:
        names = ", ".join(("int8", "uint8", "int32")[c] for c in allowed)
        raise TypeError(f"_native_cuda: {name} must be {names}, got typestr {t!r}")
    return ptr, shape, code


def _typed(a, name: str, typestr: str) -> int:
    ptr, _, t = _iface(a, name)
    if t != typestr:
        raise TypeError(f"_native_cuda: {name} must have typestr {typestr!r}, got {t!r}")
    return ptr


def _typed_or_null(a, name: str, typestr: str) -> int:
    return 0 if a is None else _typed(a, name, typestr)


def quantize(x3, scale, zero_point, q3):
    xp, (outer, channels, inner), t = _iface(x3, "x")
    if t != "f4":
        raise TypeError(f"_native_cuda: x must be float32, got typestr {t!r}")
    qp, _, code = _int(q3, "q")
    _cu.quantize(xp, _typed(scale, "scale", "f4"), _typed(zero_point, "zero_point", "i4"), qp, outer, channels,
                 inner, code, _stream())


def dequantize(q3, scale, zero_point, y3):
    qp, (outer, channels, inner), code = _int(q3, "q", (0, 1, 2))
    _cu.dequantize(qp, _typed(scale, "scale", "f4"), _typed(zero_point, "zero_point", "i4"), _typed(y3, "y", "f4"),
                   outer, channels, inner, code, _stream())


def dynamic_quantize(x, q):
    xp = _typed(x, "x", "f4")
    qp, shape, _ = _int(q, "q", (1,))
    scale, zero_point = _cu.dynamic_quantize(xp, qp, math.prod(shape), _stream())
    return np.float32(scale), np.uint8(zero_point)


def matmul_integer(a, b, a_zero_point, b_zero_point, out):
    ap, (m, k), ac = _int(a, "a")
    bp, (_, n), bc = _int(b, "b")
    _cu.matmul_integer(ap, bp, _typed_or_null(b_zero_point, "b_zero_point", "i4"), _typed(out, "out", "i4"), m, k,
                       n, int(a_zero_point), ac, bc, _stream())


def qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out):
    ap, (m, k), ac = _int(a, "a")
    bp, (_, n), bc = _int(b, "b")
    op, _, oc = _int(out, "out")
    _cu.qlinear_matmul(ap, bp, _typed_or_null(b_zero_point, "b_zero_point", "i4"),
                       _typed_or_null(bias, "bias", "i4"), _typed(multiplier, "multiplier", "f4"), op, m, k, n,
                       int(a_zero_point), int(y_zero_point), bool(relu), ac, bc, oc, _stream())


def conv2d_integer(x, w, x_zero_point, w_zero_point, out, c):
    xp, (n, c_in, h, wd), xc = _int(x, "x")
    wp, (c_out, _, kh, kw), wc = _int(w, "w")
    _, (_, _, oh, ow), _ = _iface(out, "out")
    _cu.conv2d_integer(xp, wp, _typed_or_null(w_zero_point, "w_zero_point", "i4"), _typed(out, "out", "i4"), n,
                       c_in, h, wd, c_out, kh, kw, oh, ow, *_conv_geometry(c), int(x_zero_point), xc, wc, _stream())


def qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c):
    xp, (n, c_in, h, wd), xc = _int(x, "x")
    wp, (c_out, _, kh, kw), wc = _int(w, "w")
    op, (_, _, oh, ow), oc = _int(out, "out")
    _cu.qlinear_conv2d(xp, wp, _typed_or_null(w_zero_point, "w_zero_point", "i4"), _typed_or_null(bias, "bias", "i4"),
                       _typed(multiplier, "multiplier", "f4"), op, n, c_in, h, wd, c_out, kh, kw, oh, ow,
                       *_conv_geometry(c), int(x_zero_point), int(y_zero_point), bool(relu), xc, wc, oc, _stream())

# The kernel-interface functions this backend defines (see _backend.KERNEL_NAMES).
__all__ = ["unavailable_reason"] + [_name for _name in _KERNEL_NAMES if _name in globals()]
