"""int8 quantization with ONNX QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear /
MatMulInteger / ConvInteger semantics: round half to even, saturation, int32 accumulation,
per-tensor or per-channel (``axis``) scales and zero points.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .. import _backend, reference
from . import _arrays as arr
from .conv import _geometry as _conv_geometry

QTYPES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}

# The kind of a plain NumPy argument (what arr.intake returns for one): results go back as they are.
_HOST_KIND = arr.ArrayKind("cpu", lambda a: a)

# Below this many entries a Python loop over tolist() checks a vector faster than ufuncs + reductions.
_SMALL_VECTOR = 32


def _int_scalar(v):
    """A Python or NumPy integer (not a bool): validated without array round trips."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _real_scalar(v):
    """A Python or NumPy real number (not a bool)."""
    return isinstance(v, (float, int, np.floating)) and not isinstance(v, bool)


def _channel_view(a, axis):
    """(outer, channels, inner) view of a C-contiguous array split at ``axis`` (channels=1 per-tensor)."""
    if axis is None:
        return a.reshape(1, 1, -1)
    outer = int(np.prod(a.shape[:axis], dtype=np.int64))
    return a.reshape(outer, a.shape[axis], -1)


def _axis(op, axis, ndim):
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis must be an int in [{-ndim}, {ndim}) or None, got {axis!r}")
    return int(axis) % ndim


def _params(op, scale, zero_point, axis, shape, qtype):
    """float32 scales and int32 zero points, one per channel (length 1 per-tensor), validated."""
    scalar_zp = zero_point is None or _int_scalar(zero_point)
    if axis is None and np.dtype(qtype) in QTYPES and _real_scalar(scale) and scalar_zp:
        # per-tensor Python / NumPy scalars, the common case: no array round trips
        s32 = _scalar_scale(op, "scale", scale)
        return np.full(1, s32, np.float32), _zero_points(op, "zero_point", zero_point, qtype, 1, False)
    s = np.asarray(scale.get() if hasattr(scale, "get") else scale, dtype=np.float64)
    zp = np.asarray(0 if zero_point is None else (zero_point.get() if hasattr(zero_point, "get") else zero_point))
    channels = 1 if axis is None else shape[axis]
    for name, v in (("scale", s), ("zero_point", zp)):
        if v.ndim > 1 or (v.ndim == 1 and axis is None and v.size != 1):
            raise ValueError(f"{op}: {name} must be a scalar (per-tensor) or 1-D with axis=, got shape {v.shape}")
        # one element is per-tensor whatever the axis (ONNX: the axis is ignored for per-tensor quantization)
        if v.ndim == 1 and v.size not in (1, channels):
            raise ValueError(f"{op}: {name} must have {channels} entries for axis={axis} (shape {tuple(shape)}), "
                             f"got {v.size}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{op}: scale must be finite and > 0, got {s.ravel()[:8]}")
    if zp.dtype.kind not in "iu" and not np.all(np.equal(np.mod(zp, 1), 0)):
        raise ValueError(f"{op}: zero_point must be an integer, got {zp.ravel()[:8]}")
    lo, hi = QTYPES.get(np.dtype(qtype), (-2**31, 2**31 - 1))
    if np.any(zp < lo) or np.any(zp > hi):
        raise ValueError(f"{op}: zero_point must lie in [{lo}, {hi}] for {np.dtype(qtype)}, got {zp.ravel()[:8]}")
    s32 = np.broadcast_to(s.astype(np.float32), (channels,)).copy()
    z32 = np.broadcast_to(zp.astype(np.int32), (channels,)).copy()
    return s32, z32


def _device_params(like, *arrays):
    """The small per-channel vectors on ``like``'s device (None stays None)."""
    if isinstance(like, np.ndarray):  # host: they are there already (what xp_of's first test decides)
        return arrays
    xp = arr.xp_of(like)
    return [a if xp is np or a is None else xp.asarray(a) for a in arrays]


def quantize(x, scale, zero_point, *, dtype=np.int8, axis=None, out=None):
    """ONNX QuantizeLinear: ``q = saturate(round_half_to_even(x / scale) + zero_point)``.

    Parameters
    ----------
    x : array, float32 (float64 is converted)
    scale : float or 1-D array (per channel along ``axis``), finite and > 0
        A 1-element array is per-tensor, whatever ``axis`` (as ONNX).
    zero_point : int or 1-D array, within the range of ``dtype`` (1 element: per-tensor)
    dtype : numpy.int8 or numpy.uint8
    axis : int, optional
        Per-channel axis; None for per-tensor.
    out : array, optional

    Returns
    -------
    array of ``dtype``
        NaN maps to the zero point; +inf / -inf saturate to the type's max / min.
    """
    op = "quantize"
    qtype = np.dtype(dtype)
    if qtype not in QTYPES:
        raise TypeError(f"{op}: dtype must be int8 or uint8, got {qtype}")
    xa, kind = arr.intake(op, "x", x)
    arr.check_float(op, "x", xa)
    axis = _axis(op, axis, xa.ndim)
    s32, z32 = _params(op, scale, zero_point, axis, xa.shape, qtype)
    q, user_out = arr.output_buffer(op, xa, xa.shape, qtype, out, kind.device, {"x": xa})
    if xa.size:
        x32 = arr.contiguous(xa.astype(np.float32, copy=False))
        s32, z32 = _device_params(x32, s32, z32)
        _backend.get_backend(kind.device, op).quantize(_channel_view(x32, axis), s32, z32, _channel_view(q, axis))
    return user_out if user_out is not None else kind.wrap(q)


def dequantize(q, scale, zero_point, *, axis=None, out=None):
    """ONNX DequantizeLinear: ``y = (q - zero_point) * scale`` as float32.

    ``q`` may be int8, uint8 or int32; scale / zero point per tensor (a scalar
    or a 1-element array) or per channel along ``axis``.
    """
    op = "dequantize"
    qa, kind = arr.intake(op, "q", q)
    qtype = np.dtype(qa.dtype)
    if qtype not in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)):
        raise TypeError(f"{op}: q must be int8, uint8 or int32, got {qtype}")
    axis = _axis(op, axis, qa.ndim)
    s32, z32 = _params(op, scale, zero_point, axis, qa.shape, qtype)
    y, user_out = arr.output_buffer(op, qa, qa.shape, np.dtype(np.float32), out, kind.device, {"q": qa})
    if qa.size:
        s32, z32 = _device_params(qa, s32, z32)
        _backend.get_backend(kind.device, op).dequantize(_channel_view(arr.contiguous(qa), axis), s32, z32,
                                                          _channel_view(y, axis))
    return user_out if user_out is not None else kind.wrap(y)


def dynamic_quantize(x):
    """ONNX DynamicQuantizeLinear -> ``(q_uint8, scale, zero_point)``.

    The range ``[min(x), max(x)]`` is widened to include 0; ``scale = (max - min) / 255``
    and ``zero_point = saturate(round(-min / scale))``; then ``q = quantize(x, scale, zero_point)``.
    An all-zero (or empty) input gives scale 0 and zero point 0.
    """
    op = "dynamic_quantize"
    xa, kind = arr.intake(op, "x", x)
    arr.check_float(op, "x", xa)
    x32 = arr.contiguous(xa.astype(np.float32, copy=False))
    if x32.size and not bool(arr.xp_of(x32).isfinite(x32).all()):
        raise ValueError(f"{op}: x must be finite (the range of a NaN/inf input is undefined)")
    q = arr.empty(x32, x32.shape, np.uint8)
    scale, zero_point = np.float32(0.0), np.uint8(0)
    if x32.size:
        scale, zero_point = _backend.get_backend(kind.device, op).dynamic_quantize(x32.reshape(-1), q.reshape(-1))
    elif q.size:
        q[...] = 0
    return kind.wrap(q), np.float32(scale), np.uint8(zero_point)


def _int8_operand(op, name, a):
    if np.dtype(a.dtype) not in QTYPES:
        raise TypeError(f"{op}: {name} must be int8 or uint8, got {np.dtype(a.dtype)}")


def _intake_pair(op, names, a, b):
    """(a, b, a's array kind, device) of two array arguments on one device."""
    if type(a) is np.ndarray and type(b) is np.ndarray:  # the common CPU call: nothing to convert or compare
        return a, b, _HOST_KIND, "cpu"
    aa, akind = arr.intake(op, names[0], a)
    ba, bkind = arr.intake(op, names[1], b)
    return aa, ba, akind, arr.check_same_device(op, {names[0]: akind, names[1]: bkind})


def _matmul_operands(op, a, b):
    """(a, b, a's array kind, device): int8/uint8 (M, K) and (K, N) operands on one device."""
    aa, ba, akind, device = _intake_pair(op, ("a", "b"), a, b)
    _int8_operand(op, "a", aa)
    _int8_operand(op, "b", ba)
    arr.check_ndim(op, "a", aa, (2,), "2-D (M, K)")
    arr.check_ndim(op, "b", ba, (2,), "2-D (K, N)")
    if aa.shape[1] != ba.shape[0]:
        raise ValueError(f"{op}: inner dimensions differ: a is {tuple(aa.shape)}, b is {tuple(ba.shape)}")
    return aa, ba, akind, device


def _conv_operands(op, x, w, stride, padding, dilation, groups):
    """(x, w, x's array kind, device, ConvParams, (OH, OW)): int8/uint8 NCHW x and OIHW w."""
    xa, wa, xkind, device = _intake_pair(op, ("x", "w"), x, w)
    _int8_operand(op, "x", xa)
    _int8_operand(op, "w", wa)
    arr.check_ndim(op, "x", xa, (4,), "4-D (N, C_in, H, W)")
    arr.check_ndim(op, "w", wa, (4,), "4-D (C_out, C_in/groups, KH, KW)")
    params, out_hw = _conv_geometry(op, xa.shape, wa.shape, stride, padding, dilation, groups)
    return xa, wa, xkind, device, params, out_hw


def _filled(count, value, dtype):
    """``np.full(count, value, dtype)`` for a value the dtype holds: empty + fill skips np.full's
    general casting (same bits, a third of the time)."""
    a = np.empty(count, dtype)
    a.fill(value)
    return a


def _zero_points(op, name, zp, qtype, count, per_channel_ok):
    length = count if per_channel_ok else 1
    if zp is None:
        return np.zeros(length, np.int32)
    lo, hi = QTYPES[np.dtype(qtype)]
    if _int_scalar(zp):  # the common scalar: no array checks
        if not lo <= zp <= hi:
            raise ValueError(f"{op}: {name} must be integer in [{lo}, {hi}], got {zp}")
        return _filled(length, zp, np.int32)
    v = np.asarray(zp.get() if hasattr(zp, "get") else zp)
    # A 1-D tensor of one element is per-tensor, as a scalar (ONNX, e.g. MatMulInteger's a_zero_point [12]).
    if v.ndim > 1 or (v.ndim == 1 and v.size != 1 and (not per_channel_ok or v.size != count)):
        raise ValueError(f"{op}: {name} must be a scalar or a 1-element vector"
                         f"{' or have ' + str(count) + ' entries' if per_channel_ok else ''}, got shape {v.shape}")
    if v.dtype.kind not in "iu" or (v.size and (v.min() < lo or v.max() > hi)):
        raise ValueError(f"{op}: {name} must be integer in [{lo}, {hi}], got {v.ravel()[:8]}")
    return np.broadcast_to(v.astype(np.int32), (count if per_channel_ok else 1,)).copy()


def _zero_point(op, name, zp, qtype):
    """A per-tensor zero point as the Python int the kernels take, validated as :func:`_zero_points`."""
    if zp is None:
        return 0
    bounds = QTYPES.get(qtype)
    if bounds is not None and _int_scalar(zp) and bounds[0] <= zp <= bounds[1]:  # the common case, no array
        return int(zp)
    return int(_zero_points(op, name, zp, qtype, 1, False)[0])  # anything else, and every error


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    """ONNX MatMulInteger: ``(a - a_zero_point) @ (b - b_zero_point)`` with int32 accumulation.

    Parameters
    ----------
    a : array (M, K), uint8 or int8
    b : array (K, N), int8 or uint8
    a_zero_point : int or 1-element array, optional (per-tensor, as ONNX's shape (1,))
    b_zero_point : int, 1-element array or array (N,), optional (per output column)

    Returns
    -------
    array (M, N) int32
    """
    op = "matmul_integer"
    aa, ba, akind, device = _matmul_operands(op, a, b)
    azp = _zero_point(op, "a_zero_point", a_zero_point, aa.dtype)
    bzp = _zero_points(op, "b_zero_point", b_zero_point, ba.dtype, ba.shape[1], True)
    c = arr.empty(aa, (aa.shape[0], ba.shape[1]), np.int32)
    if c.size:
        if aa.shape[1] == 0:
            c[...] = 0
        else:
            (bzp_dev,) = _device_params(aa, bzp)
            _backend.get_backend(device, op).matmul_integer(arr.contiguous(aa), arr.contiguous(ba), azp, bzp_dev, c)
    return akind.wrap(c)


def conv2d_integer(x, w, x_zero_point=None, w_zero_point=None, stride=1, padding=0, dilation=1, groups=1):
    """ONNX ConvInteger: convolution of ``(x - x_zero_point)`` and ``(w - w_zero_point)``, int32 result.

    Parameters
    ----------
    x : array (N, C_in, H, W), uint8 or int8
    w : array (C_out, C_in/groups, KH, KW), int8 or uint8
    x_zero_point : int or 1-element array, optional; padding takes this value (contributes zero)
    w_zero_point : int, 1-element array or array (C_out,), optional (per output channel)
    stride, padding, dilation, groups
        As :func:`lepton_kernels.conv2d`.

    Returns
    -------
    array (N, C_out, H_out, W_out) int32
    """
    op = "conv2d_integer"
    xa, wa, xkind, device, params, (oh, ow) = _conv_operands(op, x, w, stride, padding, dilation, groups)
    xzp = _zero_point(op, "x_zero_point", x_zero_point, xa.dtype)
    wzp = _zero_points(op, "w_zero_point", w_zero_point, wa.dtype, wa.shape[0], True)
    y = arr.empty(xa, (xa.shape[0], wa.shape[0], oh, ow), np.int32)
    if y.size:
        (wzp_dev,) = _device_params(xa, wzp)
        _backend.get_backend(device, op).conv2d_integer(arr.contiguous(xa), arr.contiguous(wa), xzp, wzp_dev, y,
                                                        params)
    return xkind.wrap(y)


def _scalar_scale(op, name, value):
    if _real_scalar(value):
        s = np.float32(value)
        if not (math.isfinite(s) and s > 0):  # math.isfinite: same answer, no ufunc call
            raise ValueError(f"{op}: {name} must be finite and > 0 (as float32), got {value!r}")
        return s
    v = np.asarray(value.get() if hasattr(value, "get") else value)
    if v.size != 1 or v.ndim > 1:
        raise ValueError(f"{op}: {name} must be a scalar, got shape {v.shape}")
    s = float(v.reshape(()))
    if not np.isfinite(np.float32(s)) or not np.float32(s) > 0:
        raise ValueError(f"{op}: {name} must be finite and > 0 (as float32), got {s!r}")
    return np.float32(s)


def _finite_positive(s):
    """Every entry of a float vector finite and > 0 (NaN fails both comparisons)."""
    if s.size <= _SMALL_VECTOR:
        return all(0.0 < v < math.inf for v in s.tolist())
    return bool(np.isfinite(s).all() and (s > 0).all())


def _finite(m):
    if m.size <= _SMALL_VECTOR:
        return all(math.isfinite(v) for v in m.tolist())
    return bool(np.isfinite(m).all())


def _channel_scales(op, name, value, count, what):
    if type(value) is float:  # the common per-tensor scale: a 0-d float64 array would pass every check below
        s = _filled(count, value, np.float32)
    else:
        v = np.asarray(value.get() if hasattr(value, "get") else value)
        if v.ndim > 1 or (v.ndim == 1 and v.size not in (1, count)):
            raise ValueError(f"{op}: {name} must be a scalar or have {count} entries (one per {what}), "
                             f"got shape {v.shape}")
        if v.dtype.kind not in "fiu":
            raise TypeError(f"{op}: {name} must be a float, got {v.dtype}")
        s = np.full(count, v, np.float32) if v.size == 1 else v.astype(np.float32)  # a fresh array either way
    if not _finite_positive(s):
        raise ValueError(f"{op}: {name} must be finite and > 0 (as float32), got {s[:8]}")
    return s


def _output_dtype(op, y_zp, like_dtype, dtype):
    if dtype is not None:
        out_dtype = np.dtype(dtype)
        if out_dtype not in QTYPES:
            raise TypeError(f"{op}: dtype must be int8 or uint8, got {out_dtype}")
        return out_dtype
    zp_dtype = getattr(y_zp, "dtype", None)
    if zp_dtype is not None and np.dtype(zp_dtype) in QTYPES:
        return np.dtype(zp_dtype)
    return np.dtype(like_dtype)


def _activation(op, activation):
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    return activation == "relu"


def _requant_bias(op, bias, in_scale, w_scale, count, what):
    """int32 bias (taken as is) or a float bias quantized with scale in_scale * w_scale."""
    if bias is None:
        return None
    b = np.asarray(bias.get() if hasattr(bias, "get") else bias)
    if b.shape != (count,):
        raise ValueError(f"{op}: bias must have shape ({count},) (one per {what}), got {b.shape}")
    if b.dtype != np.int32 and b.dtype.kind != "f":
        raise TypeError(f"{op}: bias must be int32 (already quantized) or float, got {b.dtype}")
    if b.dtype.kind == "f" and not np.all(np.isfinite(b)):
        raise ValueError(f"{op}: bias must be finite")
    return np.ascontiguousarray(reference.quantize_bias(b, in_scale, w_scale))  # the one definition of the rounding


class _Requant(NamedTuple):
    """What the requantizing kernels take after their operands, in their order, and the output type."""

    in_zp: int
    w_zp: object       # int32 (count,)
    bias: object       # int32 (count,) or None
    multiplier: object  # float32 (count,)
    y_zp: int
    relu: bool
    out_dtype: np.dtype

    def kernel_args(self):
        return tuple(self)[:6]

    def on_device_of(self, like):
        """The same with the per-channel vectors on ``like``'s device."""
        if isinstance(like, np.ndarray):  # host: nothing to move, no new tuple
            return self
        w_zp, bias, multiplier = _device_params(like, self.w_zp, self.bias, self.multiplier)
        return self._replace(w_zp=w_zp, bias=bias, multiplier=multiplier)


def _requantization(op, names, in_dtype, w_dtype, count, what, in_scale, in_zp, w_scale, w_zp, y_scale, y_zp,
                    bias, activation, dtype):
    """Validated parameters of a qlinear op; ``names`` = ("a", "b") or ("x", "w")."""
    in_name, w_name = names
    relu = _activation(op, activation)
    out_dtype = _output_dtype(op, y_zp, in_dtype, dtype)
    izp = _zero_point(op, f"{in_name}_zero_point", in_zp, in_dtype)
    wzp = _zero_points(op, f"{w_name}_zero_point", w_zp, w_dtype, count, True)
    s_in = _scalar_scale(op, f"{in_name}_scale", in_scale)
    s_w = _channel_scales(op, f"{w_name}_scale", w_scale, count, what)
    s_y = _scalar_scale(op, "y_scale", y_scale)
    yzp = _zero_point(op, "y_zero_point", y_zp, out_dtype)
    with np.errstate(over="ignore"):
        multiplier = reference.requantize_multiplier(s_in, s_w, s_y)
    if not _finite(multiplier):
        raise ValueError(f"{op}: {in_name}_scale * {w_name}_scale / y_scale must be a finite float32 (the "
                         f"requantization multiplier), got {in_name}_scale={float(s_in)!r}, "
                         f"{w_name}_scale={s_w[:8]}, y_scale={float(s_y)!r}")
    return _Requant(izp, wzp, _requant_bias(op, bias, s_in, s_w, count, what), multiplier, yzp, relu, out_dtype)


def qlinear_matmul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, bias=None, activation=None,
                   dtype=None, out=None):
    """ONNX QLinearMatMul with a fused bias and ReLU: int8 in, int8 out, int32 accumulation.

    ``acc[i, j] = sum_k (a[i, k] - a_zp) * (b[k, j] - b_zp[j]) + bias_q[j]`` (int32),
    ``y[i, j] = saturate(round_half_to_even(float32(acc[i, j]) * m[j]) + y_zp)`` with the
    float32 multiplier ``m[j] = a_scale * b_scale[j] / y_scale`` (computed in float64 from
    the float32 scales, rounded once); the product is one float32 multiply, as ONNX Runtime
    requantizes. ``activation="relu"`` raises the lower saturation bound to ``y_zp``
    (ReLU in the real domain).

    Parameters
    ----------
    a : array (M, K), uint8 or int8
    a_scale : float > 0; a_zp : int in a's range
    b : array (K, N), int8 or uint8 (weights; per output column quantization allowed)
    b_scale : float or array (N,) > 0; b_zp : int or array (N,)
    y_scale : float > 0; y_zp : int in the output type's range
        Every scalar here may also be a 1-element array (per-tensor, as ONNX's shape (1,)).
    bias : array (N,), optional
        int32 (already quantized with scale ``a_scale * b_scale[j]``, zero point 0, as
        ONNX QLinearConv) or float (quantized here to that scale, half to even, saturated).
    activation : None or "relu"
    dtype : numpy.int8 or numpy.uint8, optional
        Output type; default y_zp's dtype when it is a NumPy int8/uint8, else a's dtype.
    out : array (M, N) of the output type, optional

    Returns
    -------
    array (M, N) int8 or uint8
    """
    op = "qlinear_matmul"
    aa, ba, akind, device = _matmul_operands(op, a, b)
    n = ba.shape[1]
    q = _requantization(op, ("a", "b"), aa.dtype, ba.dtype, n, "output column", a_scale, a_zp, b_scale, b_zp,
                        y_scale, y_zp, bias, activation, dtype)
    y, user_out = arr.output_buffer(op, aa, (aa.shape[0], n), q.out_dtype, out, device, {"a": aa, "b": ba})
    if y.size:
        kernel = _backend.get_backend(device, op).qlinear_matmul
        if aa.shape[1] == 0:  # empty reduction: the kernels need K >= 1; a zero row of the right type does
            aa = arr.xp_of(aa).full((aa.shape[0], 1), q.in_zp, dtype=aa.dtype)
            ba = arr.xp_of(ba).zeros((1, n), dtype=ba.dtype)
        kernel(arr.contiguous(aa), arr.contiguous(ba), *q.on_device_of(aa).kernel_args(), y)
    return user_out if user_out is not None else akind.wrap(y)


def qlinear_conv2d(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None, stride=1, padding=0,
                   dilation=1, groups=1, *, activation=None, dtype=None, out=None):
    """ONNX QLinearConv with a fused ReLU: int8 convolution, int32 accumulation, requantized output.

    ``acc[n, o, i, j] = conv(x - x_zp, w - w_zp[o])[n, o, i, j] + bias_q[o]`` (int32; padding
    takes x_zp), ``y = saturate(round_half_to_even(acc * m[o]) + y_zp)`` with
    ``m[o] = x_scale * w_scale[o] / y_scale`` (float32, see :func:`qlinear_matmul`); ``activation="relu"`` clamps
    below at ``y_zp``. Arguments as :func:`qlinear_matmul` with ``o`` the output channel;
    geometry (``stride``, ``padding``, ``dilation``, ``groups``) as :func:`lepton_kernels.conv2d`.

    Parameters
    ----------
    x : array (N, C_in, H, W), uint8 or int8
    w : array (C_out, C_in/groups, KH, KW), int8 or uint8
    w_scale, w_zp : scalar or array (C_out,)
    bias : array (C_out,) int32 or float, optional

    Returns
    -------
    array (N, C_out, H_out, W_out) int8 or uint8
    """
    op = "qlinear_conv2d"
    xa, wa, xkind, device, params, (oh, ow) = _conv_operands(op, x, w, stride, padding, dilation, groups)
    c_out = wa.shape[0]
    q = _requantization(op, ("x", "w"), xa.dtype, wa.dtype, c_out, "output channel", x_scale, x_zp, w_scale, w_zp,
                        y_scale, y_zp, bias, activation, dtype)
    y, user_out = arr.output_buffer(op, xa, (xa.shape[0], c_out, oh, ow), q.out_dtype, out, device,
                                    {"x": xa, "w": wa})
    if y.size:
        _backend.get_backend(device, op).qlinear_conv2d(arr.contiguous(xa), arr.contiguous(wa),
                                                        *q.on_device_of(xa).kernel_args(), y, params)
    return user_out if user_out is not None else xkind.wrap(y)


class PreparedQLinear:
    """A :func:`qlinear_conv2d` or :func:`qlinear_matmul` with everything but the input bound
    and validated once (weights, scales, zero points, bias quantization, geometry), as
    inference engines prepare a layer. Calling it with an input gives exactly the op's result;
    a NumPy input of the prepared dtype and channel count takes a short path (its only checks
    are on the input), anything else goes through the full op (device arrays, ``out=``, errors).
    Made by :func:`prepare_qlinear_conv2d` / :func:`prepare_qlinear_matmul`.
    """

    def __init__(self, op, full_call, weight, in_dtype, in_channels, out_channels, requant, geometry=None):
        self.op, self._full_call = op, full_call
        self.weight, self.in_dtype, self.out_dtype = weight, np.dtype(in_dtype), requant.out_dtype
        self._in_channels, self._out_channels = in_channels, out_channels
        self._args = requant.kernel_args()
        self._geometry_args = geometry  # (stride, padding, dilation, groups) for a convolution
        self._shapes = {}  # conv: x.shape[1:] -> (ConvParams, (OH, OW))
        self._packed = None  # matmul: (backend, weights packed once by it) when it can pack

    def __call__(self, x, *, out=None):
        fast = (type(x) is np.ndarray and out is None and x.dtype == self.in_dtype and x.flags.c_contiguous
                and x.ndim == (4 if self._geometry_args else 2) and x.shape[1] == self._in_channels)
        if not fast:
            return self._full_call(x, out)
        backend = _backend.get_backend("cpu", self.op)
        kernel = getattr(backend, self.op)
        if self._geometry_args is None:
            y = arr.empty(x, (x.shape[0], self._out_channels), self.out_dtype)
            if y.size:
                if x.shape[1] == 0:
                    return self._full_call(x, out)
                packed = self._packed_for(backend)
                if packed is not None:
                    in_zp, _, bias, multiplier, y_zp, relu = self._args
                    backend.qlinear_matmul_packed(x, packed, in_zp, bias, multiplier, y_zp, relu, y)
                else:
                    kernel(x, self.weight, *self._args, y)
            return y
        shape = self._shapes.get(x.shape[1:])
        if shape is None:
            shape = self._shapes[x.shape[1:]] = _conv_geometry(self.op, x.shape, self.weight.shape,
                                                               *self._geometry_args)
        params, (oh, ow) = shape
        y = arr.empty(x, (x.shape[0], self._out_channels, oh, ow), self.out_dtype)
        if y.size:
            kernel(x, self.weight, *self._args, y, params)
        return y

    def _packed_for(self, backend):
        """The weights packed by ``backend`` (once), or None when it cannot pack."""
        if self._packed is None or self._packed[0] is not backend:
            pack = getattr(backend, "pack_qlinear_weights", None)
            if pack is None or not hasattr(backend, "qlinear_matmul_packed"):
                return None
            self._packed = (backend, pack(self.weight, self._args[1]))
        return self._packed[1]

    def __repr__(self):
        return (f"PreparedQLinear({self.op}, weight {tuple(self.weight.shape)} {self.weight.dtype}, "
                f"{self.in_dtype} -> {self.out_dtype})")


def _host_int8(op, name, a):
    if type(a) is not np.ndarray:
        raise TypeError(f"{op}: {name} must be a NumPy array to prepare (device arrays go through {op[8:]})")
    _int8_operand(op, name, a)
    return np.ascontiguousarray(a)


def prepare_qlinear_conv2d(x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None, stride=1, padding=0,
                           dilation=1, groups=1, *, activation=None, x_dtype=np.uint8, dtype=None):
    """Bind :func:`qlinear_conv2d`'s weights and parameters once; returns a
    :class:`PreparedQLinear` ``f`` with ``f(x) == qlinear_conv2d(x, x_scale, x_zp, w, ..., activation=...)``.

    ``x_dtype`` is the type the inputs will have (uint8 or int8); ``w`` is a NumPy array (it is
    copied if not C-contiguous). Every argument is validated here with the op's messages.
    """
    op = "prepare_qlinear_conv2d"
    wa = _host_int8(op, "w", w)
    arr.check_ndim(op, "w", wa, (4,), "4-D (C_out, C_in/groups, KH, KW)")
    in_dtype = np.dtype(x_dtype)
    if in_dtype not in QTYPES:
        raise TypeError(f"{op}: x_dtype must be int8 or uint8, got {in_dtype}")
    c_in = wa.shape[1] * (int(groups) if isinstance(groups, numbers.Integral) else 1)
    # stride, padding, dilation and groups checked now, on an input larger than any kernel's reach
    # (batch 0: the output of this stand-in is never counted against int64)
    _conv_geometry(op, (0, c_in, 1 << 40, 1 << 40), wa.shape, stride, padding, dilation, groups)
    c_out = wa.shape[0]
    q = _requantization(op, ("x", "w"), in_dtype, wa.dtype, c_out, "output channel", x_scale, x_zp, w_scale, w_zp,
                        y_scale, y_zp, bias, activation, dtype)

    def full_call(x, out):
        return qlinear_conv2d(x, x_scale, x_zp, wa, w_scale, w_zp, y_scale, y_zp, bias, stride, padding, dilation,
                              groups, activation=activation, dtype=q.out_dtype, out=out)
    return PreparedQLinear("qlinear_conv2d", full_call, wa, in_dtype, c_in, c_out, q,
                           (stride, padding, dilation, groups))


def prepare_qlinear_matmul(a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, bias=None, activation=None,
                           a_dtype=np.uint8, dtype=None):
    """Bind :func:`qlinear_matmul`'s right operand (weights, (K, N)) and parameters once; returns a
    :class:`PreparedQLinear` ``f`` with ``f(a) == qlinear_matmul(a, a_scale, a_zp, b, ...)``."""
    op = "prepare_qlinear_matmul"
    ba = _host_int8(op, "b", b)
    arr.check_ndim(op, "b", ba, (2,), "2-D (K, N)")
    in_dtype = np.dtype(a_dtype)
    if in_dtype not in QTYPES:
        raise TypeError(f"{op}: a_dtype must be int8 or uint8, got {in_dtype}")
    n = ba.shape[1]
    q = _requantization(op, ("a", "b"), in_dtype, ba.dtype, n, "output column", a_scale, a_zp, b_scale, b_zp,
                        y_scale, y_zp, bias, activation, dtype)

    def full_call(a, out):
        return qlinear_matmul(a, a_scale, a_zp, ba, b_scale, b_zp, y_scale, y_zp, bias=bias, activation=activation,
                              dtype=q.out_dtype, out=out)
    return PreparedQLinear("qlinear_matmul", full_call, ba, in_dtype, ba.shape[0], n, q)


def fake_quantize(x, scale, zero_point, *, dtype=np.int8, axis=None):
    """Quantize then dequantize: ``(saturate(round_half_to_even(x / scale) + zp) - zp) * scale``.

    The float32 result carries exactly the rounding and saturation an int8 model
    would see (quantization-aware training); arguments as :func:`quantize`. The
    autograd version with a straight-through gradient is
    ``lepton_kernels.nn.functional.fake_quantize``.
    """
    q = quantize(x, scale, zero_point, dtype=dtype, axis=axis)
    return dequantize(q, scale, zero_point, axis=axis)


__all__ = ["quantize", "dequantize", "dynamic_quantize", "fake_quantize", "matmul_integer", "conv2d_integer",
           "qlinear_matmul", "qlinear_conv2d", "prepare_qlinear_matmul", "prepare_qlinear_conv2d", "PreparedQLinear"]
