"""Array intake and output handling shared by every op.

Turns whatever the user passed (NumPy array, CuPy array, an object with
``__cuda_array_interface__``, or any ``__dlpack__`` tensor such as torch or
JAX) into the array a backend computes on, zero-copy where the layout allows,
and turns results back into the caller's array type. Also checks dtypes,
``out=`` arguments and aliasing, raising errors that name the op and argument.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import _backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_DLPACK_CPU = 1
_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged


@dataclass(frozen=True)
class ArrayKind:
    """Where an argument lives and how to hand results back in its type."""

    device: str  # "cpu" or "cuda"
    wrap: Callable[[Any], Any]  # backend array -> the caller's array type


def _identity(a):
    return a


identity = _identity  # the wrap of results already in the caller's type


# Kinds are immutable and an op call needs one per argument: build the common ones once
# (constructing a frozen dataclass costs more than the rest of a small call's intake).
_HOST = ArrayKind("cpu", _identity)
_DEVICE = ArrayKind("cuda", _identity)
_DLPACK_KINDS: dict[tuple[type, str], ArrayKind] = {}  # (tensor type, device) -> kind


def _cupy_ndarray():
    """cupy.ndarray if CuPy is imported (an object can be a CuPy array only then), else None."""
    return getattr(sys.modules.get("cupy"), "ndarray", None)


def _cupy():
    try:
        import cupy
    except Exception:  # cupy missing or its CUDA libraries unusable
        return None
    return cupy


def _dlpack_wrapper(obj) -> Callable[[Any], Any]:
    """A function turning a NumPy/CuPy result into obj's framework via DLPack."""
    root = type(obj).__module__.split(".")[0]
    module = sys.modules.get(root)
    if root == "jax" or root == "jaxlib":
        import jax.numpy as jnp

        return jnp.from_dlpack
    from_dlpack = getattr(module, "from_dlpack", None)
    if from_dlpack is None:  # unknown producer: hand back the array we computed on
        return _identity
    return from_dlpack


def intake(op: str, name: str, obj) -> tuple[Any, ArrayKind]:
    """The array to compute on (NumPy or CUDA array) and the caller's kind."""
    if isinstance(obj, np.ndarray):
        return obj, _HOST
    # DLPack producers first: asking a CPU torch tensor for __cuda_array_interface__ raises
    # inside torch, which cost more than the rest of the intake.
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        cupy_ndarray = _cupy_ndarray()
        if cupy_ndarray is not None and isinstance(obj, cupy_ndarray):
            return obj, _DEVICE
        return _dlpack_intake(op, name, obj)
    cupy = _cupy() if "cupy" in sys.modules or hasattr(obj, "__cuda_array_interface__") else None
    if cupy is not None and isinstance(obj, cupy.ndarray):
        return obj, _DEVICE
    if hasattr(obj, "__cuda_array_interface__") and not hasattr(obj, "__dlpack__"):
        return _cuda_interface_intake(op, name, obj, cupy)
    raise TypeError(
        f"{op}: {name} must be an array (numpy.ndarray, cupy.ndarray, or a DLPack tensor such as "
        f"torch.Tensor), got {type(obj).__name__}"
    )


def _cuda_interface_intake(op, name, obj, cupy):
    if cupy is not None:
        return cupy.asarray(obj), _DEVICE
    from numba import cuda  # numba.cuda arrays without CuPy

    return cuda.as_cuda_array(obj), _DEVICE


def _dlpack_intake(op, name, obj):
    device_type = int(obj.__dlpack_device__()[0])
    try:
        if device_type == _DLPACK_CPU:
            array = np.from_dlpack(obj)
            device = "cpu"
        elif device_type in _DLPACK_CUDA:
            cupy = _cupy()
            if cupy is None:
                raise TypeError("CUDA DLPack tensors need CuPy installed")
            array = cupy.from_dlpack(obj)
            device = "cuda"
        else:
            raise TypeError(f"DLPack device type {device_type} is not supported (CPU or CUDA only)")
    except (RuntimeError, BufferError, TypeError) as exc:
        raise TypeError(f"{op}: {name} could not be read through DLPack: {exc}") from exc
    key = (type(obj), device)
    kind = _DLPACK_KINDS.get(key)
    if kind is None:  # the wrapper depends only on the producer's module, i.e. on the type
        kind = _DLPACK_KINDS.setdefault(key, ArrayKind(device, _dlpack_wrapper(obj)))
    return array, kind


# ---------------------------------------------------------------- the small-call path
# DLPack producers whose CPU tensors the whole calls read as capsules: {tensor type:
# (to_capsule, from_capsule) or None}. A capsule costs the producer one C call, where its
# __dlpack__ method and numpy.from_dlpack cost more than a small kernel (torch: 3 us).
_CAPSULE_ADAPTERS: dict[type, Any] = {}


def _capsule_adapter(t: type):
    adapter = _CAPSULE_ADAPTERS.get(t, False)
    if adapter is False:
        torch = sys.modules.get("torch")
        is_torch = t.__module__.split(".")[0] == "torch" and torch is not None and issubclass(t, torch.Tensor)
        adapter = _CAPSULE_ADAPTERS[t] = _torch_adapter() if is_torch else None
    return adapter


@functools.cache
def _torch_adapter():
    """(to_capsule, from_capsule) for torch.Tensor and its subclasses (one object for all of
    them: call_whole converts the arguments whose type shares x's adapter)."""
    import torch
    from torch.utils import dlpack

    def to_capsule(t):
        if t.requires_grad:  # torch's __dlpack__ refuses these, its to_dlpack does not
            raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
        return dlpack.to_dlpack(t)

    # torch.utils.dlpack.from_dlpack checks for __dlpack__ in Python before it calls
    # torch._C._from_dlpack: half a microsecond, a third of torch.relu's whole call.
    return to_capsule, getattr(torch._C, "_from_dlpack", dlpack.from_dlpack)


def call_whole(op: str, x, *args):
    """``op`` computed by its backend's whole native call (``_backend.whole_call``) on x and
    args, returned in x's array type; None when there is no such call or it does not cover
    these arguments (a layout, dtype or value the op's general path handles or refuses)."""
    if type(x) is np.ndarray:
        call = _backend.whole_call(op)
        return None if call is None else call(x, *args)
    adapter = _capsule_adapter(type(x))
    if adapter is None:
        return None
    call = _backend.whole_call(op)
    if call is None:
        return None
    to_capsule, from_capsule = adapter
    try:
        x = to_capsule(x)
        if args:
            args = [to_capsule(a) if _capsule_adapter(type(a)) is adapter else a for a in args]
    except Exception:  # e.g. a tensor that requires grad: the general path says why it is refused
        return None
    y = call(x, *args)
    return None if y is None else from_capsule(y)


def check_same_device(op: str, kinds: dict[str, ArrayKind]) -> str:
    first, *rest = kinds.values()
    for kind in rest:
        if kind.device != first.device:
            where = ", ".join(f"{n} on {k.device}" for n, k in kinds.items())
            raise ValueError(f"{op}: all arrays must be on one device, got {where}")
    return first.device


def check_float(op: str, name: str, a) -> np.dtype:
    dtype = np.dtype(a.dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {dtype}")
    return dtype


def check_same_dtype(op: str, name: str, a, expected: np.dtype, ref_name: str) -> None:
    if np.dtype(a.dtype) != expected:
        raise TypeError(f"{op}: {name} dtype must match {ref_name} ({expected}), got {np.dtype(a.dtype)}")


INT64_MAX = (1 << 63) - 1


def check_int64(op: str, name: str, value: int) -> int:
    """``value`` if a C int64 holds it; the compiled kernels take every size and
    geometry number as int64, so a larger Python int is refused here, naming the
    argument, instead of overflowing or failing inside the binding."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{op}: {name} must fit a signed 64-bit integer ([-2**63, 2**63 - 1]), got {value}")
    return value


def plain(v) -> bool:
    """An int, str or tuple of them: hashable, and equal only to values that validate alike
    (as a dict key, True or 1.0 would find the entry of 1 and skip their errors)."""
    t = type(v)
    return t is int or t is str or (t is tuple and all(plain(e) for e in v))


_REMEMBERED_KEPT = 256  # entries per memo; a program uses a handful of layer geometries


def remembered(memo: dict, key, compute):
    """``memo[key]``, computed by ``compute()`` the first time. Keys must be built from
    :func:`plain` values (and exact shapes) so that equal keys validate alike. Only successes
    are kept, so a bad argument raises on every call. Parsing a pooling or convolution
    geometry costs more Python than the rest of a small call; this skips it on repeats."""
    found = memo.get(key)
    if found is None:
        found = compute()
        if len(memo) >= _REMEMBERED_KEPT:
            memo.clear()
        memo[key] = found
    return found


def check_ndim(op: str, name: str, a, allowed: tuple[int, ...], what: str) -> None:
    if a.ndim not in allowed:
        raise ValueError(f"{op}: {name} must be {what}, got {a.ndim}-D array of shape {tuple(a.shape)}")


def xp_of(a):
    """The array module that allocates like ``a`` (numpy, cupy, or a numba.cuda shim)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np
    cupy = _cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return _NumbaCudaAlloc


class _NumbaCudaAlloc:
    """Minimal allocation namespace for numba.cuda device arrays (no CuPy)."""

    @staticmethod
    def empty(shape, dtype):
        from numba import cuda

        return cuda.device_array(shape, dtype=dtype)

    @staticmethod
    def ascontiguousarray(a):
        if a.is_c_contiguous():
            return a
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(a.copy_to_host()))


def _host_allocator():
    """The native module's allocator (csrc/bind_calls.cpp: results of 1 MiB or more start on
    a 64-byte line for the kernels' full-line stores; that rule lives there only), or plain
    numpy.empty when the compiled module is missing (no native kernel then reads the result)."""
    try:
        from .._lepton_cpu import empty as native_empty
    except ImportError:
        return lambda shape, dtype: np.empty(shape, dtype=dtype)
    return native_empty


_host_empty = _host_allocator()


def empty(like, shape: tuple, dtype) -> Any:
    """``xp.empty(shape, dtype)`` on ``like``'s device (NumPy results through _host_empty)."""
    if not isinstance(like, np.ndarray):
        return xp_of(like).empty(shape, dtype=dtype)
    return _host_empty(tuple(shape), np.dtype(dtype))


def contiguous(a):
    """C-contiguous, aligned view or copy (a copy never touches the caller's array).

    A misaligned view (a dtype view at an odd byte offset of a buffer) is
    copied: the kernels' vector loads assume element alignment, and the binding
    refuses such arrays rather than read them.
    """
    if isinstance(a, np.ndarray):
        if a.flags.aligned:
            return np.ascontiguousarray(a)
        return np.array(a, order="C", copy=True)
    return xp_of(a).ascontiguousarray(a)


_byte_bounds = np.lib.array_utils.byte_bounds if hasattr(np.lib, "array_utils") else np.byte_bounds


def _data_span(a) -> tuple[int, int]:
    """[first byte, last byte + 1) an array's elements occupy."""
    if isinstance(a, np.ndarray):
        if a.flags.c_contiguous:  # the common case, without byte_bounds' stride walk
            start = a.__array_interface__["data"][0]
            return start, start + a.nbytes
        return _byte_bounds(a)
    iface = a.__cuda_array_interface__
    start = iface["data"][0]
    itemsize = np.dtype(iface["typestr"]).itemsize
    strides = iface.get("strides") or None
    shape = iface["shape"]
    if strides is None:
        return start, start + itemsize * int(np.prod(shape))
    low = start + sum(s * (n - 1) for s, n in zip(strides, shape) if s < 0)
    high = start + itemsize + sum(s * (n - 1) for s, n in zip(strides, shape) if s > 0)
    return low, high


def overlaps(a, b) -> bool:
    if a.size == 0 or b.size == 0:
        return False
    (a0, a1), (b0, b1) = _data_span(a), _data_span(b)
    return a0 < b1 and b0 < a1


def same_memory(a, b) -> bool:
    """Exactly the same elements in the same layout (an allowed in-place alias)."""
    return _data_span(a) == _data_span(b) and tuple(a.shape) == tuple(b.shape) and tuple(
        a.strides) == tuple(b.strides)


def check_out(op: str, out, shape: tuple, dtype: np.dtype, device: str, inputs: dict,
              may_alias: tuple[str, ...] = (), name: str = "out"):
    """Validate a user ``out=`` array; returns (backend array, kind)."""
    array, kind = intake(op, name, out)
    if kind.device != device:
        raise ValueError(f"{op}: {name} must be on {device} like the inputs, got {kind.device}")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    if np.dtype(array.dtype) != dtype:
        raise TypeError(f"{op}: {name} must have dtype {dtype}, got {np.dtype(array.dtype)}")
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only")
    if not _is_c_contiguous(array):
        raise ValueError(f"{op}: {name} must be C-contiguous (it is written in place)")
    for input_name, a in inputs.items():
        if a is None or not overlaps(array, a):
            continue
        if input_name in may_alias and same_memory(array, a):
            continue
        raise ValueError(f"{op}: {name} overlaps input {input_name}; pass a separate array")
    return array, kind


def output_buffer(op: str, like, shape: tuple, dtype: np.dtype, out, device: str, inputs: dict,
                  may_alias: tuple[str, ...] = ()):
    """(array the kernel writes, what the caller gets back: ``out`` itself or None)."""
    if out is None:
        return empty(like, shape, dtype), None
    buf, _ = check_out(op, out, shape, dtype, device, inputs, may_alias)
    return buf, out


def _is_c_contiguous(a) -> bool:
    flags = getattr(a, "flags", None)
    if flags is not None and hasattr(flags, "c_contiguous"):
        return bool(flags.c_contiguous)
    if flags is not None:
        return bool(flags["C_CONTIGUOUS"])
    return bool(a.is_c_contiguous())
