"""Backend registry and selection.

A *backend* is a module that computes the kernels on already-validated
arguments. ``lepton_kernels.ops`` validates every call, allocates the outputs
and then calls one backend function, which writes into those outputs in place.
Every backend module exposes the same functions (the *kernel interface*)::

    relu(x, out)
    relu_backward(grad_out, x, out)
    bias_relu(x3, bias, out3)                        # x3, out3: (N, C, S); bias: (C,)
    bias_relu_backward(grad_out3, y3, grad_x3, grad_bias)   # grad_bias may be None
    max_pool2d(x, out, indices, p)                   # indices: int64 like out, or None
    max_pool2d_backward(grad_out, indices, grad_in, p)
    avg_pool2d(x, out, p)
    avg_pool2d_backward(grad_out, grad_in, p)
    matmul(a, b, out)                                # (M, K) @ (K, N) -> (M, N)
    linear(x2, weight, bias, out2, relu)             # x2 (M, K), weight (N, K), bias (N,) or None
    linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b)
    conv2d(x, weight, bias, out, c, relu)            # NCHW x, OIHW weight, bias (O,) or None
    conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c)
    sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)
    adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps,
              weight_decay, decoupled, amsgrad, maximize)     # lists; updated in place
    cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits)
        # logits (N, C); target int64 (N,) already checked; per-row losses and, unless
        # dlogits is None, d loss_i / d logits (see ops/loss.py)
    activation(x, out, kind, param)                  # kind: relu6, leaky_relu (param: slope), sigmoid, tanh,
                                                     # silu, gelu, gelu_tanh, hardswish (csrc/lepton/activation.h)
    activation_backward(grad_out, saved, out, kind, param)   # saved: x, or the output for sigmoid and tanh
    batch_norm_stats(x3, mean, var)                  # x3 (N, C, S); per-channel mean, biased var (C,)
    batch_norm_apply(x3, scale, shift, out3, relu)   # out3 = x3 * scale[c] + shift[c] (+ ReLU)
    batch_norm_backward_reduce(grad_out3, x3, mean, y3, sum_g, sum_gx)
        # g' = grad_out3 masked where y3 <= 0 (y3 None: no mask); sum_g = sum g', sum_gx = sum g'(x - mean)
    batch_norm_backward_apply(grad_out3, x3, mean, y3, k1, k2, k3, grad_x3)
        # grad_x3 = k1[c] g' + k2[c] (x3 - mean[c]) + k3[c]
    quantize(x3, scale, zero_point, q3)              # x3 float32 (outer, channels, inner); per-channel
    dequantize(q3, scale, zero_point, y3)            # float32 scale / int32 zero point of length channels
    dynamic_quantize(x, q) -> (scale, zero_point)    # flat float32 -> uint8
    matmul_integer(a, b, a_zero_point, b_zero_point, out)     # int8/uint8 -> int32; b_zero_point (N,)
    conv2d_integer(x, w, x_zero_point, w_zero_point, out, c)  # w_zero_point (C_out,)
    qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out)
        # out (M, N) int8/uint8 = requantize(matmul_integer + bias): b_zero_point int32 (N,), bias
        # int32 (N,) or None, multiplier float32 (N,); see reference.requantize. K >= 1
    qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c)
        # the same per output channel (w_zero_point, bias, multiplier of length C_out)

Optional (used when present, e.g. by ops.prepare_qlinear_matmul)::

    pack_qlinear_weights(b, b_zero_point) -> packed   # b (K, N) packed once
    qlinear_matmul_packed(a, packed, a_zero_point, bias, multiplier, y_zero_point, relu, out)

In the backward kernels ``y`` is the forward output when the forward fused a
ReLU (the gradient is masked where ``y <= 0``), else None; each gradient
output is None when it is not wanted. ``c`` is a :class:`ConvParams`.

Arrays are C-contiguous, of one float dtype (float32 or float64; indices
int64), non-empty, and the outputs are writeable and do not overlap the
inputs (``out`` may be exactly ``x`` for the element-wise forwards). ``p`` is a
:class:`PoolParams`; output sizes come from ``out.shape``. The semantics are
those of ``lepton_kernels.reference`` (and ``csrc/lepton/*.h``). A backend may
implement a subset; :func:`get_backend` passes over one that lacks an op. Which
backend implements which op is declared in ``lepton_kernels._registry``
(:data:`KERNEL_NAMES`, the names above, is generated from it), and
``tests/test_registry.py`` fails when a backend lacks a kernel it claims.

CPU backends take NumPy arrays. CUDA backends take objects exposing
``__cuda_array_interface__`` (CuPy arrays or Numba device arrays) and run on
the current stream.

Selection: the array's device picks the family, then the first available
backend in this order (``LEPTON_BACKEND``, read at import and whenever its value
changes, or :func:`use_backend` overrides; the choice is cached per (device, op)):

    cpu : native (_lepton_cpu) -> numba -> reference
    cuda: native (_lepton_cuda) -> cupy -> numba (numba.cuda)
"""
from __future__ import annotations

import functools
import importlib
import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

from . import _registry

# The kernel interface (every function a full backend defines), generated from
# the op registry; the docstring above gives each one's signature.
KERNEL_NAMES = _registry.kernel_names()


class PoolParams(NamedTuple):
    """Pooling geometry handed to every backend (see ``csrc/lepton/pool.h``)."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int = 1
    dilation_w: int = 1
    count_include_pad: bool = True
    divisor_override: int = 0  # 0 = none


class ConvParams(NamedTuple):
    """Convolution geometry handed to every backend (see ``csrc/lepton/conv.h``)."""

    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1


@dataclass(frozen=True)
class BackendSpec:
    name: str  # "native", "numba", "cupy", "reference"
    device: str  # "cpu" or "cuda"
    module: str  # module implementing the kernel interface


# In order of preference per device.
_SPECS = (
    BackendSpec("native", "cpu", "lepton_kernels._native_cpu"),
    BackendSpec("numba", "cpu", "lepton_kernels.numba_backend"),
    BackendSpec("reference", "cpu", "lepton_kernels._reference_backend"),
    BackendSpec("native", "cuda", "lepton_kernels._native_cuda"),
    BackendSpec("cupy", "cuda", "lepton_kernels.cupy_backend"),
    BackendSpec("numba", "cuda", "lepton_kernels.numba_backend.cuda"),
)
BACKEND_NAMES = ("native", "numba", "cupy", "reference")

_lock = threading.Lock()  # guards every write below; the hot path only reads
_loaded: dict[tuple[str, str], object] = {}
_errors: dict[tuple[str, str], str] = {}
_forced: str | None = None  # set by use_backend; overrides LEPTON_BACKEND


def _load(spec: BackendSpec):
    """Import a backend once; remember why it is unavailable if it fails."""
    key = (spec.name, spec.device)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if key in _errors:
            return None
        try:
            module = importlib.import_module(spec.module)
            check = getattr(module, "unavailable_reason", None)
            reason = check() if check is not None else None
            if reason:
                raise ImportError(reason)
        except Exception as exc:  # any failure means "not available", with the reason
            _errors[key] = f"{type(exc).__name__}: {exc}"
            return None
        _loaded[key] = module
        return module


def backends() -> dict[str, dict[str, str]]:
    """Which backends this machine has.

    Returns
    -------
    dict
        ``{"cpu": {name: "available" | "unavailable: <reason>"}, "cuda": {...}}``
        in order of preference.
    """
    report: dict[str, dict[str, str]] = {"cpu": {}, "cuda": {}}
    for spec in _SPECS:
        module = _load(spec)
        status = "available" if module is not None else f"unavailable: {_errors[(spec.name, spec.device)]}"
        report[spec.device][spec.name] = status
    return report


# ---------------------------------------------------------------- cached selection
# get_backend runs on every op call, so its answer is cached per (device, op) in a
# _Selection that is replaced whole whenever what it depends on changes: use_backend,
# or the LEPTON_BACKEND variable. The variable is parsed at import and again only when
# its raw value changes; noticing a change costs one dict read of os.environ's backing
# store (no decoding, no lock), so a test or program that sets it later still sees it
# take effect, as before the cache.

_ENV_VAR = "LEPTON_BACKEND"


def _environment_reader():
    """A C-level callable returning LEPTON_BACKEND's raw value (None when unset)."""
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and encodekey is not None:  # CPython's os._Environ
        return functools.partial(data.get, encodekey(_ENV_VAR))
    return functools.partial(os.environ.get, _ENV_VAR)


_read_environment = _environment_reader()


def _parse_environment(raw) -> tuple[str | None, str | None]:
    """(backend forced by LEPTON_BACKEND or None, error message or None)."""
    if raw is None:
        return None, None
    env = (os.fsdecode(raw) if isinstance(raw, bytes) else raw).strip().lower()
    if env in ("", "auto"):
        return None, None
    if env not in BACKEND_NAMES:
        return None, f"LEPTON_BACKEND must be one of {BACKEND_NAMES} or 'auto', got {env!r}"
    return env, None


class _Selection:
    """The inputs of backend choice and its cached answers, {(device, op): module} and
    {op: whole-call entry or None}."""

    __slots__ = ("environment", "forced", "error", "chosen", "calls")

    def __init__(self, environment, forced_by_call: str | None):
        self.environment = environment  # raw LEPTON_BACKEND value this selection read
        env_forced, env_error = _parse_environment(environment)
        self.forced = forced_by_call if forced_by_call is not None else env_forced
        self.error = None if forced_by_call is not None else env_error  # use_backend overrides a bad variable
        self.chosen: dict[tuple[str, str], object] = {}
        self.calls: dict[str, object] = {}


_selection = _Selection(_read_environment(), None)


def _current() -> _Selection:
    """The selection in force, rebuilt if LEPTON_BACKEND changed since it was made."""
    global _selection
    selection = _selection
    if _read_environment() != selection.environment:
        with _lock:
            environment = _read_environment()
            if environment != _selection.environment:  # (not already rebuilt by another thread)
                _selection = _Selection(environment, _forced)
            selection = _selection
    return selection


def use_backend(name: str | None) -> None:
    """Force one backend by name (``None`` restores automatic choice).

    Overrides the ``LEPTON_BACKEND`` environment variable for this process.
    """
    global _forced, _selection
    if name is not None and name not in BACKEND_NAMES:
        raise ValueError(f"use_backend: name must be one of {BACKEND_NAMES} or None, got {name!r}")
    with _lock:
        _forced = name
        _selection = _Selection(_read_environment(), name)


def forced_backend() -> str | None:
    """The backend forced by :func:`use_backend` or ``LEPTON_BACKEND``, or None."""
    selection = _current()
    if selection.error is not None:
        raise ValueError(selection.error)
    return selection.forced


def get_backend(device: str, op: str):
    """The backend module that runs kernel ``op`` on ``device`` ("cpu" or "cuda").

    A backend that does not implement ``op`` is passed over (families of ops
    land in the backends one at a time), unless it was forced. The answer is
    cached until :func:`use_backend` or ``LEPTON_BACKEND`` changes; errors are
    not cached.
    """
    selection = _selection
    if _read_environment() != selection.environment:
        selection = _current()
    module = selection.chosen.get((device, op))
    if module is None:
        module = _choose(selection, device, op)
    return module


def whole_call(op: str):
    """The CPU backend's whole-call entry for ``op`` (its ``call_<op>``), or None.

    A whole call takes the op's plain NumPy arguments, checks them, allocates the
    result and runs the kernel in one native call; it returns None for any call it
    does not cover (the op then takes its general path, which also raises the errors).
    Only the backend chosen for ("cpu", op) is asked, so LEPTON_BACKEND and
    :func:`use_backend` keep their meaning. Cached like :func:`get_backend`.
    """
    selection = _selection
    if _read_environment() != selection.environment:
        selection = _current()
    try:
        return selection.calls[op]
    except KeyError:
        entry = getattr(get_backend("cpu", op), "call_" + op, None)  # raises as get_backend does
        with _lock:
            selection.calls[op] = entry
        return entry


def _choose(selection: _Selection, device: str, op: str):
    """get_backend's answer worked out, then cached in ``selection``."""
    if selection.error is not None:
        raise ValueError(selection.error)
    forced = selection.forced
    for spec in _SPECS:
        if spec.device != device or (forced is not None and spec.name != forced):
            continue
        module = _load(spec)
        if module is not None and hasattr(module, op):
            with _lock:  # a selection replaced meanwhile is dropped whole, so writing to it is harmless
                selection.chosen[(device, op)] = module
            return module
        if forced is not None:
            why = _errors.get((spec.name, spec.device)) or f"it does not implement {op}"
            raise RuntimeError(
                f"{op}: backend {forced!r} was requested for {device} arrays but is unavailable: {why}"
            )
    if forced is not None:
        raise RuntimeError(f"{op}: backend {forced!r} does not exist for {device} arrays")
    reasons = "; ".join(
        f"{s.name}: {_errors.get((s.name, s.device), 'does not implement ' + op)}"
        for s in _SPECS if s.device == device
    )
    raise RuntimeError(f"{op}: no backend available for {device} arrays ({reasons})")


def get_named_backend(name: str, device: str):
    """A specific backend module, or None if unavailable (tests and benchmarks)."""
    for spec in _SPECS:
        if spec.name == name and spec.device == device:
            return _load(spec)
    return None


def unavailable_reason(name: str, device: str) -> str | None:
    for spec in _SPECS:
        if spec.name == name and spec.device == device:
            return None if _load(spec) is not None else _errors[(name, device)]
    return f"no backend {name!r} for {device}"
