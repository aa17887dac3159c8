"""CuPy backend: the CUDA kernels of ``cuda/kernels/*.cuh`` compiled at run time
by NVRTC through ``cupy.RawModule`` (kernel interface of ``lepton_kernels._backend``).

The compiled module ``_lepton_cuda`` and this backend run the very same kernel
source; this one needs no CUDA toolkit at build time, only CuPy (whose NVRTC
compiles each file once per device and caches the result on disk). The sources
ship in the package as ``lepton_kernels/cuda_kernels/*.cuh``; in a source
checkout ``cuda/kernels/`` is used. Kernels run on CuPy's current stream.
Arrays: anything with ``__cuda_array_interface__``, C-contiguous, float32 or
float64 (indices int64; int8 / uint8 for max_pool2d too; int8 / uint8 / int32 for
the quantization kernels, whose per-channel scales, zero points, biases and
multipliers are device arrays too), already validated by ``lepton_kernels.ops``.
Layouts: NCHW for pooling and convolution (OIHW weights), (N, C, S) for
bias_relu, (outer, channels, inner) for quantize / dequantize, row-major 2-D
for matmul and linear. The launch shapes, the choice of 32-bit index kernels
and of GEMM tiles mirror ``cuda/launch.h``, ``cuda/launch_quant.h``, ``cuda/pool.cu``, ``cuda/gemm.cu``,
``cuda/conv.cu`` and ``cuda/quant.cu``.
"""
from __future__ import annotations

from lepton_kernels._backend import KERNEL_NAMES as _KERNEL_NAMES

import importlib.resources
import math
import threading
from pathlib import Path

import numpy as np


_SOURCES = ("elementwise.cuh", "pool.cuh", "gemm.cuh", "conv.cuh", "optim.cuh", "loss.cuh", "quant.cuh")
_OPTIONS = ("--std=c++17",)
# conv.cuh includes gemm.cuh from its own directory; its copy of the dense GEMM
# entry points is left out (they come from the gemm.cuh module), as in cuda/conv.cu.
_EXTRA_OPTIONS = {"conv.cuh": ("-DLK_GEMM_NO_ENTRIES",)}
_BLOCK = 256  # as kBlock in cuda/launch.h (whole warps)
_WARP = 32
_MAX_GRID = 65536  # as kMaxGrid
_REDUCE_THREADS = 512  # LK_REDUCE_THREADS in elementwise.cuh
_I32_LIMIT = 1 << 31

_lock = threading.Lock()
_modules: dict[tuple[int, str], object] = {}  # (device id, file) -> RawModule
_kernels: dict[tuple[int, str], object] = {}  # (device id, kernel name) -> RawKernel


def _cupy():
    import cupy

    return cupy


def kernel_dir() -> Path:
    """Where the .cuh sources are: the installed package, else the source tree."""
    try:
        installed = importlib.resources.files("lepton_kernels") / "cuda_kernels"
        if installed.is_dir() and (installed / _SOURCES[0]).is_file():
            return Path(str(installed))
    except (ModuleNotFoundError, TypeError, NotImplementedError):
        pass
    tree = Path(__file__).resolve().parents[2] / "cuda" / "kernels"
    if (tree / _SOURCES[0]).is_file():
        return tree
    raise FileNotFoundError(
        "CUDA kernel sources not found: neither lepton_kernels/cuda_kernels/ (installed) "
        f"nor {tree} (source checkout)")


def _module(source: str):
    cupy = _cupy()
    key = (cupy.cuda.Device().id, source)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            folder = kernel_dir()
            code = (folder / source).read_text(encoding="utf-8")
            options = _OPTIONS + (f"-I{folder}",) + _EXTRA_OPTIONS.get(source, ())
            mod = cupy.RawModule(code=code, options=options)
            _modules[key] = mod
        return mod


def _kernel(source: str, name: str):
    cupy = _cupy()
    key = (cupy.cuda.Device().id, name)
    kern = _kernels.get(key)
    if kern is None:
        kern = _module(source).get_function(name)  # compiles the module on first use
        _kernels[key] = kern
    return kern


def unavailable_reason() -> str | None:
    """None when CuPy, a device and a working NVRTC are present, else why not."""
    try:
        cupy = _cupy()
    except Exception as exc:
        return f"cupy not installed or not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except Exception as exc:
        return f"no CUDA device ({type(exc).__name__}: {exc})"
    try:
        _kernel("elementwise.cuh", "lk_relu_f32")
        _kernel("pool.cuh", "lk_max_pool2d_f32")
    except Exception as exc:  # missing sources, NVRTC failure, driver too old
        return f"cannot compile the CUDA kernels with NVRTC ({type(exc).__name__}: {exc})"
    return None


# ---------------------------------------------------------------- launching

def _iface(a):
    ai = a.__cuda_array_interface__
    return np.uint64(ai["data"][0]), tuple(int(s) for s in ai["shape"]), ai["typestr"][1:]


def _suffix(typestr: str) -> str:
    if typestr == "f4":
        return "f32"
    if typestr == "f8":
        return "f64"
    raise TypeError(f"cupy_backend: expected float32 or float64 arrays, got typestr {typestr!r}")


def _grid(work: int) -> int:
    return max(1, min(_MAX_GRID, -(-work // _BLOCK)))


def _fits_i32(largest: int) -> bool:
    return 0 <= largest and largest + _MAX_GRID * _BLOCK < _I32_LIMIT


def _launch(source: str, name: str, grid: int, block: int, args) -> None:
    _kernel(source, name)((grid,), (block,), args)


_ll = np.int64


# ---------------------------------------------------------------- element-wise

def relu(x, out):
    xp, shape, t = _iface(x)
    op = _iface(out)[0]
    count = math.prod(shape)
    _launch("elementwise.cuh", f"lk_relu_{_suffix(t)}", _grid(count), _BLOCK, (xp, op, _ll(count)))


def relu_backward(grad_out, x, out):
    gp, shape, t = _iface(grad_out)
    count = math.prod(shape)
    _launch("elementwise.cuh", f"lk_relu_backward_{_suffix(t)}", _grid(count), _BLOCK,
            (gp, _iface(x)[0], _iface(out)[0], _ll(count)))


def bias_relu(x3, bias, out3):
    xp, (n, c, s), t = _iface(x3)
    count = n * c * s
    name = f"lk_bias_relu_{_suffix(t)}" + ("_i32" if _fits_i32(count) else "")
    _launch("elementwise.cuh", name, _grid(count), _BLOCK,
            (xp, _iface(bias)[0], _iface(out3)[0], _ll(n), _ll(c), _ll(s)))


def bias_relu_backward(grad_out3, y3, grad_x3, grad_bias):
    gp, (n, c, s), t = _iface(grad_out3)
    sfx = _suffix(t)
    gxp = _iface(grad_x3)[0]
    count = n * c * s
    if count > 0:
        _launch("elementwise.cuh", f"lk_bias_relu_backward_{sfx}", _grid(count), _BLOCK,
                (gp, _iface(y3)[0], gxp, _ll(count)))
    if grad_bias is None or c == 0:
        return
    # One block per channel, after grad_x on the same stream; fixed summation order.
    name = f"lk_bias_relu_backward_bias_{sfx}" + ("_i32" if _fits_i32(max(count, c)) else "")
    _launch("elementwise.cuh", name, min(c, _MAX_GRID), _REDUCE_THREADS,
            (gxp, _iface(grad_bias)[0], _ll(n), _ll(c), _ll(s)))


# ---------------------------------------------------------------- pooling

def _largest_index(n, c, h, w, oh, ow, p) -> int:
    """Mirror of largest_index() in cuda/pool.cu: decides the 32-bit index kernels."""
    sizes = (h, w, oh, ow, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_top,
             p.pad_bottom, p.pad_left, p.pad_right, p.dilation_h, p.dilation_w,
             p.divisor_override or 0)
    if max(sizes) >= _I32_LIMIT:
        return max(sizes)
    span_h = (oh + 1) * p.stride_h + (p.kernel_h + 1) * p.dilation_h + h + p.pad_top + p.pad_bottom
    span_w = (ow + 1) * p.stride_w + (p.kernel_w + 1) * p.dilation_w + w + p.pad_left + p.pad_right
    pool = ((p.kernel_h + p.pad_top + p.pad_bottom + h)
            * (p.kernel_w + p.pad_left + p.pad_right + w))
    return max(n * c * h * w, n * c * oh * ow, span_h, span_w, pool, p.divisor_override or 0)


# max_pool2d (forward) also runs on quantized activations: lk_max_pool2d_u8 / _s8.
_MAX_POOL_INT_SUFFIX = {"u1": "u8", "i1": "s8"}


def _pool_name(op: str, t: str, n, c, h, w, oh, ow, p) -> str:
    sfx = _MAX_POOL_INT_SUFFIX.get(t) if op == "max_pool2d" else None
    i32 = _fits_i32(_largest_index(n, c, h, w, oh, ow, p))
    return f"lk_{op}_{sfx or _suffix(t)}" + ("_i32" if i32 else "")


def _max_geom(n, c, h, w, oh, ow, p):
    return tuple(_ll(v) for v in (n * c, h, w, oh, ow, p.kernel_h, p.kernel_w, p.stride_h,
                                  p.stride_w, p.pad_top, p.pad_left, p.dilation_h, p.dilation_w))


def _avg_geom(n, c, h, w, oh, ow, p):
    if p.dilation_h != 1 or p.dilation_w != 1:
        raise ValueError(f"avg_pool2d: average pooling has no dilation, got ({p.dilation_h}, {p.dilation_w})")
    sizes = tuple(_ll(v) for v in (n * c, h, w, oh, ow, p.kernel_h, p.kernel_w, p.stride_h,
                                   p.stride_w, p.pad_top, p.pad_bottom, p.pad_left, p.pad_right))
    return sizes + (np.int32(1 if p.count_include_pad else 0), _ll(p.divisor_override or 0))


def max_pool2d(x, out, indices, p):
    xp, (n, c, h, w), t = _iface(x)
    op, (_, _, oh, ow), t_out = _iface(out)
    if t_out != t:  # the kernel reads and writes one type
        raise TypeError(f"max_pool2d: out must have x's dtype (typestr {t!r}), got {t_out!r}")
    ip = np.uint64(0) if indices is None else _iface(indices)[0]  # null pointer: no indices
    work = n * c * oh * ow
    _launch("pool.cuh", _pool_name("max_pool2d", t, n, c, h, w, oh, ow, p), _grid(work), _BLOCK,
            (xp, op, ip) + _max_geom(n, c, h, w, oh, ow, p))


def _scatter_args(n, c, h, w, oh, ow):
    """Kernel size arguments of lk_max_pool2d_backward_*: (nc, in_plane, out_plane)."""
    return _ll(n * c), _ll(h * w), _ll(oh * ow)


def max_pool2d_backward(grad_out, indices, grad_in, p):
    # Geometry-free scatter through the indices (p is unused), one warp per plane,
    # as max_pool2d_backward in cuda/pool.cu.
    gp, (_, _, oh, ow), t = _iface(grad_out)
    gip, (n, c, h, w), _ = _iface(grad_in)
    planes = n * c
    if planes == 0 or h * w == 0:
        return
    i32 = _fits_i32(max(planes * h * w, planes * oh * ow))
    name = f"lk_max_pool2d_backward_{_suffix(t)}" + ("_i32" if i32 else "")
    warps = min(planes, _MAX_GRID * _BLOCK // _WARP)
    _launch("pool.cuh", name, _grid(warps * _WARP), _BLOCK,
            (gp, _iface(indices)[0], gip) + _scatter_args(n, c, h, w, oh, ow))


def avg_pool2d(x, out, p):
    xp, (n, c, h, w), t = _iface(x)
    op, (_, _, oh, ow), _ = _iface(out)
    work = n * c * oh * ow
    _launch("pool.cuh", _pool_name("avg_pool2d", t, n, c, h, w, oh, ow, p), _grid(work), _BLOCK,
            (xp, op) + _avg_geom(n, c, h, w, oh, ow, p))


def avg_pool2d_backward(grad_out, grad_in, p):
    gp, (_, _, oh, ow), t = _iface(grad_out)
    gip, (n, c, h, w), _ = _iface(grad_in)
    work = n * c * h * w
    _launch("pool.cuh", _pool_name("avg_pool2d_backward", t, n, c, h, w, oh, ow, p), _grid(work),
            _BLOCK, (gp, gip) + _avg_geom(n, c, h, w, oh, ow, p))


# ---------------------------------------------------------------- GEMM, linear, convolution

_GEMM_THREADS = 256  # kGemmThreads / LK_GEMM_THREADS
_GEMM_MAX_DIM = (1 << 31) - 4096  # kGemmMaxDim
_LARGE_TILE_MIN_BLOCKS = 264  # kLargeTileMinBlocks
_MAX_GRID_YZ = 65535  # kMaxGridYZ
_CONV_LIMIT = 1 << 30  # sizes and padded extents, as conv_geometry in cuda/bind_cuda.cpp
_NULL = np.uint64(0)


def _gemm_tile(f64: bool, small: bool) -> int:
    return (32 if small else 64) if f64 else (64 if small else 128)


def _gemm_plan(m: int, n: int, groups: int, f64: bool):
    """(small tile, grid x, y, z) for an m x n output per group: gemm_plan in cuda/launch.h."""
    big, little = _gemm_tile(f64, False), _gemm_tile(f64, True)
    small = m <= little or n <= little or -(-m // big) * -(-n // big) * groups < _LARGE_TILE_MIN_BLOCKS
    t = _gemm_tile(f64, small)
    clamp = lambda v: max(1, min(_MAX_GRID_YZ, v))  # noqa: E731
    return small, -(-n // t), clamp(-(-m // t)), clamp(groups)


def _bias_grad_grid(c: int, s: int) -> int:
    blocks = -(-c // 32) if s == 1 else c
    return max(1, min(_MAX_GRID_YZ, blocks))


def _check_dims(op: str, **dims) -> None:
    for name, v in dims.items():
        if v > _GEMM_MAX_DIM:
            raise ValueError(f"{op}: {name} = {v} exceeds the GEMM limit {_GEMM_MAX_DIM}")


def _gemm_launch(source: str, op: str, sfx: str, m: int, n: int, groups: int, args) -> None:
    small, gx, gy, gz = _gemm_plan(m, n, groups, sfx == "f64")
    name = f"lk_{op}_" + ("s_" if small else "") + sfx
    _kernel(source, name)((gx, gy, gz), (_GEMM_THREADS,), args)


def _ptr_or_null(a):
    return _NULL if a is None else _iface(a)[0]


def _bias_grad(sfx: str, g, y, gb, n: int, c: int, s: int) -> None:
    _launch("gemm.cuh", f"lk_bias_grad_{sfx}", _bias_grad_grid(c, s), _GEMM_THREADS,
            (_iface(g)[0], _ptr_or_null(y), _iface(gb)[0], _ll(n), _ll(c), _ll(s)))


def matmul(a, b, out):
    ap, (m, k), t = _iface(a)
    bp, (_, n), _ = _iface(b)
    _check_dims("matmul", m=m, k=k, n=n)
    if m == 0 or n == 0:
        return
    _gemm_launch("gemm.cuh", "matmul", _suffix(t), m, n, 1,
                 (ap, bp, _iface(out)[0], _ll(m), _ll(k), _ll(n)))


def linear(x2, weight, bias, out2, relu):
    xp, (m, k), t = _iface(x2)
    wp, (n, _), _ = _iface(weight)
    _check_dims("linear", m=m, k=k, n=n)
    if m == 0 or n == 0:
        return
    _gemm_launch("gemm.cuh", "linear", _suffix(t), m, n, 1,
                 (xp, wp, _ptr_or_null(bias), _iface(out2)[0], _ll(m), _ll(k), _ll(n),
                  np.int32(1 if relu else 0)))


def linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b):
    gp, (m, n), t = _iface(grad_out2)
    xp, (_, k), _ = _iface(x2)
    sfx = _suffix(t)
    _check_dims("linear_backward", m=m, k=k, n=n)
    yp = _ptr_or_null(y2)
    sizes = (_ll(m), _ll(k), _ll(n))
    if grad_x2 is not None and m > 0 and k > 0:  # (m, k) = g' @ w
        _gemm_launch("gemm.cuh", "linear_grad_x", sfx, m, k, 1,
                     (gp, yp, _iface(weight)[0], _iface(grad_x2)[0]) + sizes)
    if grad_w is not None and n > 0 and k > 0:  # (n, k) = g'^T @ x
        _gemm_launch("gemm.cuh", "linear_grad_w", sfx, n, k, 1, (gp, yp, xp, _iface(grad_w)[0]) + sizes)
    if grad_b is not None and n > 0:
        _bias_grad(sfx, grad_out2, y2, grad_b, m, n, 1)


def _conv_args(op: str, x_shape, w_shape, out_hw, c):
    """Kernel geometry arguments (LK_CONV_GEOM_PARAMS) after the limit checks of bind_cuda.cpp."""
    n, c_in, h, w = x_shape
    c_out, cg, kh, kw = w_shape
    oh, ow = out_hw
    g = c.groups
    sizes = (n, c_in, h, w, c_out, kh, kw, oh, ow, c.stride_h, c.stride_w, c.pad_top, c.pad_bottom,
             c.pad_left, c.pad_right, c.dilation_h, c.dilation_w, g)
    if max(sizes) >= _CONV_LIMIT or h + c.pad_top + c.pad_bottom >= _CONV_LIMIT \
            or w + c.pad_left + c.pad_right >= _CONV_LIMIT:
        raise ValueError(f"{op}: a size, padding or padded extent is >= 2^30")
    _check_dims(op, **{"n*out_h*out_w": n * oh * ow, "n*h*w": n * h * w,
                       "c_in/groups*kernel_h*kernel_w": cg * kh * kw,
                       "c_out/groups*kernel_h*kernel_w": (c_out // g) * kh * kw})
    return tuple(_ll(v) for v in (n, c_in, h, w, c_out, kh, kw, oh, ow, c.stride_h, c.stride_w,
                                  c.pad_top, c.pad_left, c.dilation_h, c.dilation_w, g))


def conv2d(x, weight, bias, out, c, relu):
    xp, xs, t = _iface(x)
    wp, ws, _ = _iface(weight)
    op, (n, c_out, oh, ow), _ = _iface(out)
    geom = _conv_args("conv2d", xs, ws, (oh, ow), c)
    if n * c_out * oh * ow == 0:
        return
    _gemm_launch("conv.cuh", "conv2d", _suffix(t), c_out // c.groups, n * oh * ow, c.groups,
                 (xp, wp, _ptr_or_null(bias), op) + geom + (np.int32(1 if relu else 0),))


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    gp, (n, c_out, oh, ow), t = _iface(grad_out)
    xp, xs, _ = _iface(x)
    wp, ws, _ = _iface(weight)
    sfx = _suffix(t)
    geom = _conv_args("conv2d_backward", xs, ws, (oh, ow), c)
    _, c_in, h, w = xs
    g = c.groups
    cg, og, khw = c_in // g, c_out // g, ws[2] * ws[3]
    yp = _ptr_or_null(y)
    if grad_w is not None and og > 0 and cg > 0:
        _gemm_launch("conv.cuh", "conv2d_grad_w", sfx, og, cg * khw, g, (gp, yp, xp, _iface(grad_w)[0]) + geom)
    if grad_x is not None and cg > 0 and n * h * w > 0:
        _gemm_launch("conv.cuh", "conv2d_grad_x", sfx, cg, n * h * w, g, (gp, yp, wp, _iface(grad_x)[0]) + geom)
    if grad_b is not None and c_out > 0:
        _bias_grad(sfx, grad_out, y, grad_b, n, c_out, oh * ow)


# ---------------------------------------------------------------- optimizers and losses
# Mirrors cuda/optim.cu and cuda/loss.cu: scalars computed in double and rounded to the
# dtype, one grid-stride launch per tensor; one block of _ce_block(c) threads per row.

_SGD_MOMENTUM, _SGD_NESTEROV, _SGD_FIRST, _SGD_WD = 1, 2, 4, 8  # LK_SGD_* in optim.cuh
_ADAM_WD, _ADAM_DECOUPLED, _ADAM_AMSGRAD = 1, 2, 4  # LK_ADAM_*
_CE_THREADS = 256  # LK_CE_THREADS in loss.cuh / kCeThreads


def _scalar_type(sfx: str):
    return np.float32 if sfx == "f32" else np.float64


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    use_buf = momentum != 0
    flags = ((_SGD_MOMENTUM if use_buf else 0) | (_SGD_NESTEROV if use_buf and nesterov else 0)
             | (_SGD_FIRST if first_step else 0) | (_SGD_WD if weight_decay != 0 else 0))
    for i, p in enumerate(params):
        pp, shape, t = _iface(p)
        count = math.prod(shape)
        if count == 0:
            continue
        sfx = _suffix(t)
        T = _scalar_type(sfx)
        bp = _iface(bufs[i])[0] if use_buf else _NULL
        _launch("optim.cuh", f"lk_sgd_step_{sfx}", _grid(count), _BLOCK,
                (pp, _iface(grads[i])[0], bp, _ll(count), T(lr), T(momentum), T(1.0 - dampening), T(weight_decay),
                 T(-1.0 if maximize else 1.0), np.int32(flags)))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    flags = ((_ADAM_WD if weight_decay != 0 else 0) | (_ADAM_DECOUPLED if decoupled else 0)
             | (_ADAM_AMSGRAD if amsgrad else 0))
    step_size = lr / (1.0 - beta1 ** step)
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    for i, p in enumerate(params):
        pp, shape, t = _iface(p)
        count = math.prod(shape)
        if count == 0:
            continue
        sfx = _suffix(t)
        T = _scalar_type(sfx)
        xp = _iface(max_exp_avg_sqs[i])[0] if amsgrad else _NULL
        _launch("optim.cuh", f"lk_adam_step_{sfx}", _grid(count), _BLOCK,
                (pp, _iface(grads[i])[0], _iface(exp_avgs[i])[0], _iface(exp_avg_sqs[i])[0], xp, _ll(count),
                 T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(eps), T(weight_decay), T(1.0 - lr * weight_decay),
                 T(step_size), T(bias2_sqrt), T(-1.0 if maximize else 1.0), np.int32(flags)))


def _ce_block(c: int) -> int:
    """Mirror of ce_block() in cuda/launch.h: whole warps covering a row, at most _CE_THREADS."""
    return max(_WARP, min(_CE_THREADS, -(-c // _WARP) * _WARP))


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    zp, (n, c), t = _iface(logits)
    if n == 0:
        return
    _launch("loss.cuh", f"lk_cross_entropy_{_suffix(t)}", max(1, min(n, _MAX_GRID)), _ce_block(c),
            (zp, _iface(target)[0], _ptr_or_null(weight), _iface(losses)[0], _ptr_or_null(dlogits), _ll(n), _ll(c),
             _ll(ignore_index), np.float64(label_smoothing)))


# ---------------------------------------------------------------- int8 quantization
# Mirrors cuda/quant.cu over kernels/quant.cuh: quantize / dequantize as grid-stride
# launches; dynamic_quantize as a range pass, a one-block parameter kernel and quantize
# on the current stream (the parameters stay on the device until the final copy); the
# integer GEMM / convolution on the dp4a tiles (qgemm_grid in cuda/launch_quant.h).

_QUANT_THREADS = 256  # LK_QUANT_THREADS / kQuantThreads
_QGEMM_TILE = 64  # LK_QGEMM_BM == LK_QGEMM_BN / kQgemmTile
_MINMAX_BLOCKS = 1024  # kMinmaxBlocks
_QTYPES = {"i1": "s8", "u1": "u8", "i4": "s32"}


def _qtype(typestr: str, op: str, name: str, allowed=("s8", "u8")) -> str:
    sfx = _QTYPES.get(typestr)
    if sfx not in allowed:
        raise TypeError(f"{op}: {name} must be one of {allowed}, got typestr {typestr!r}")
    return sfx


def _qgemm_grid(m: int, n: int, groups: int):
    """(grid x, y, z) of the integer GEMM kernels: qgemm_grid in cuda/launch_quant.h."""
    clamp = lambda v: max(1, min(_MAX_GRID_YZ, v))  # noqa: E731
    return -(-n // _QGEMM_TILE), clamp(-(-m // _QGEMM_TILE)), clamp(groups)


def _minmax_blocks(n: int) -> int:
    return max(1, min(_MINMAX_BLOCKS, -(-n // _QUANT_THREADS)))


def _device_empty(shape, dtype):
    """Scratch device memory (a CuPy array)."""
    return _cupy().empty(shape, dtype=dtype)


def _unsigned(typestr: str) -> np.int32:
    return np.int32(1 if typestr == "u1" else 0)


def quantize(x3, scale, zero_point, q3):
    xp, (outer, channels, inner), _ = _iface(x3)
    qp, _, qt = _iface(q3)
    count = outer * channels * inner
    if count == 0:
        return
    _launch("quant.cuh", f"lk_quantize_{_qtype(qt, 'quantize', 'q')}", _grid(count), _BLOCK,
            (xp, _iface(scale)[0], _iface(zero_point)[0], qp, _ll(outer), _ll(channels), _ll(inner)))


def dequantize(q3, scale, zero_point, y3):
    qp, (outer, channels, inner), qt = _iface(q3)
    count = outer * channels * inner
    if count == 0:
        return
    sfx = _qtype(qt, "dequantize", "q", ("s8", "u8", "s32"))
    _launch("quant.cuh", f"lk_dequantize_{sfx}", _grid(count), _BLOCK,
            (qp, _iface(scale)[0], _iface(zero_point)[0], _iface(y3)[0], _ll(outer), _ll(channels), _ll(inner)))


def dynamic_quantize(x, q):
    xp, shape, _ = _iface(x)
    n = math.prod(shape)
    if n == 0:
        return np.float32(0.0), np.uint8(0)
    blocks = _minmax_blocks(n)
    partial = _device_empty((2 * blocks,), np.float32)
    scale = _device_empty((1,), np.float32)
    zp = _device_empty((1,), np.int32)
    sp, zpp = _iface(scale)[0], _iface(zp)[0]
    _launch("quant.cuh", "lk_minmax_f32", blocks, _QUANT_THREADS, (xp, _ll(n), _iface(partial)[0]))
    _launch("quant.cuh", "lk_dynamic_qparams", 1, _QUANT_THREADS, (_iface(partial)[0], _ll(blocks), sp, zpp))
    _launch("quant.cuh", "lk_quantize_u8", _grid(n), _BLOCK, (xp, sp, zpp, _iface(q)[0], _ll(1), _ll(1), _ll(n)))
    return np.float32(scale.get()[0]), np.uint8(zp.get()[0])


def _qgemm_launch(name: str, m: int, n: int, groups: int, args) -> None:
    _kernel("quant.cuh", name)(_qgemm_grid(m, n, groups), (_QUANT_THREADS,), args)


def _int_scalar(op: str, name: str, v, lo: int, hi: int) -> np.int32:
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"{op}: {name} must lie in [{lo}, {hi}], got {v}")
    return np.int32(v)


_QRANGE = {"s8": (-128, 127), "u8": (0, 255)}


def matmul_integer(a, b, a_zero_point, b_zero_point, out):
    op = "matmul_integer"
    ap, (m, k), at = _iface(a)
    bp, (_, n), bt = _iface(b)
    _check_dims(op, m=m, k=k, n=n)
    azp = _int_scalar(op, "a_zero_point", a_zero_point, *_QRANGE[_qtype(at, op, "a")])
    _qtype(bt, op, "b")
    if m == 0 or n == 0:
        return
    _qgemm_launch("lk_matmul_integer", m, n, 1,
                  (ap, bp, _iface(out)[0], azp, _ptr_or_null(b_zero_point), _ll(m), _ll(k), _ll(n),
                   _unsigned(at), _unsigned(bt)))


def qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out):
    op = "qlinear_matmul"
    ap, (m, k), at = _iface(a)
    bp, (_, n), bt = _iface(b)
    yp, _, yt = _iface(out)
    _check_dims(op, m=m, k=k, n=n)
    azp = _int_scalar(op, "a_zero_point", a_zero_point, *_QRANGE[_qtype(at, op, "a")])
    _qtype(bt, op, "b")
    sfx = _qtype(yt, op, "out")
    yzp = _int_scalar(op, "y_zero_point", y_zero_point, *_QRANGE[sfx])
    if m == 0 or n == 0:
        return
    _qgemm_launch(f"lk_qlinear_matmul_{sfx}", m, n, 1,
                  (ap, bp, _ptr_or_null(bias), _iface(multiplier)[0], yp, azp, _ptr_or_null(b_zero_point), yzp,
                   np.int32(1 if relu else 0), _ll(m), _ll(k), _ll(n), _unsigned(at), _unsigned(bt)))


def conv2d_integer(x, w, x_zero_point, w_zero_point, out, c):
    op = "conv2d_integer"
    xp, xs, xt = _iface(x)
    wp, ws, wt = _iface(w)
    yp, (n, c_out, oh, ow), _ = _iface(out)
    geom = _conv_args(op, xs, ws, (oh, ow), c)
    xzp = _int_scalar(op, "x_zero_point", x_zero_point, *_QRANGE[_qtype(xt, op, "x")])
    _qtype(wt, op, "w")
    if n * c_out * oh * ow == 0:
        return
    _qgemm_launch("lk_conv2d_integer", c_out // c.groups, n * oh * ow, c.groups,
                  (xp, wp, yp, xzp, _ptr_or_null(w_zero_point)) + geom + (_unsigned(xt), _unsigned(wt)))


def qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c):
    op = "qlinear_conv2d"
    xp, xs, xt = _iface(x)
    wp, ws, wt = _iface(w)
    yp, (n, c_out, oh, ow), yt = _iface(out)
    geom = _conv_args(op, xs, ws, (oh, ow), c)
    xzp = _int_scalar(op, "x_zero_point", x_zero_point, *_QRANGE[_qtype(xt, op, "x")])
    _qtype(wt, op, "w")
    sfx = _qtype(yt, op, "out")
    yzp = _int_scalar(op, "y_zero_point", y_zero_point, *_QRANGE[sfx])
    if n * c_out * oh * ow == 0:
        return
    _qgemm_launch(f"lk_qlinear_conv2d_{sfx}", c_out // c.groups, n * oh * ow, c.groups,
                  (xp, wp, _ptr_or_null(bias), _iface(multiplier)[0], yp, xzp, _ptr_or_null(w_zero_point), yzp,
                   np.int32(1 if relu else 0)) + geom + (_unsigned(xt), _unsigned(wt)))

# The kernel-interface functions this backend defines (see _backend.KERNEL_NAMES).
__all__ = ["unavailable_reason"] + [_name for _name in _KERNEL_NAMES if _name in globals()]
