"""Fused optimizer updates, in place: SGD (momentum, Nesterov) and Adam / AdamW.

Each update reads and writes every parameter element once. The single-tensor
functions follow ``torch.optim.SGD`` / ``torch.optim.Adam`` exactly; the
``multi_tensor_*`` forms update lists of parameters in one call. Arrays that
cannot be updated in place (read-only, not C-contiguous, wrong dtype or shape,
overlapping another state array) are refused before anything is written.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _backend
from . import _arrays as arr


# --------------------------------------------------------------------------- validation
def _number(op, name, value, *, low=None, high=None, high_open=False, integer=False):
    kind = numbers.Integral if integer else numbers.Real
    exact = type(value) is int or (type(value) is float and not integer)  # skips the slow ABC check
    if not exact and (isinstance(value, bool) or not isinstance(value, kind)):
        raise TypeError(f"{op}: {name} must be {'an int' if integer else 'a number'}, got {value!r}")
    value = int(value) if integer else float(value)
    if value != value:
        raise ValueError(f"{op}: {name} must not be NaN")
    if low is not None and value < low:
        raise ValueError(f"{op}: {name} must be >= {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{op}: {name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def _state_array(op, name, obj, like=None, device=None):
    """An array updated in place: float, C-contiguous, writeable, matching ``like``."""
    a, kind = arr.intake(op, name, obj)
    dtype = arr.check_float(op, name, a)
    if device is not None and kind.device != device:
        raise ValueError(f"{op}: {name} must be on {device} like param, got {kind.device}")
    if like is not None:
        if np.dtype(like.dtype) != dtype:
            raise TypeError(f"{op}: {name} must have param's dtype {np.dtype(like.dtype)}, got {dtype}")
        if tuple(a.shape) != tuple(like.shape):
            raise ValueError(f"{op}: {name} must have param's shape {tuple(like.shape)}, got {tuple(a.shape)}")
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only and cannot be updated in place")
    if not arr._is_c_contiguous(a):
        raise ValueError(f"{op}: {name} must be C-contiguous to be updated in place (a copy would hide the update)")
    return a, kind


def _grad_array(op, name, obj, param, device):
    g, kind = arr.intake(op, name, obj)
    if kind.device != device:
        raise ValueError(f"{op}: {name} must be on {device} like param, got {kind.device}")
    if np.dtype(g.dtype) != np.dtype(param.dtype):
        raise TypeError(f"{op}: {name} must have param's dtype {np.dtype(param.dtype)}, got {np.dtype(g.dtype)}")
    if tuple(g.shape) != tuple(param.shape):
        raise ValueError(f"{op}: {name} must have param's shape {tuple(param.shape)}, got {tuple(g.shape)}")
    return arr.contiguous(g)


def _lists(op, named_lists):
    lengths = {name: len(v) for name, v in named_lists.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{op}: the lists must have equal lengths, got {lengths}")
    return next(iter(lengths.values()), 0)


def _native_cpu():
    """The native CPU backend when it serves the optimizer kernels now (not forced elsewhere)."""
    backend = _backend.get_backend("cpu", "adam_step") if _backend.forced_backend() in (None, "native") else None
    return backend if backend is not None and backend.__name__ == "lepton_kernels._native_cpu" else None


def _try_native(kernel, *args):
    """Run the update through the native binding, which checks every array (dtype, contiguity,
    writeability, size, overlap) before writing anything. On a refusal (a non-NumPy array, a
    non-contiguous gradient, a bad array) it returns False and the caller validates in Python,
    which adapts what it can and otherwise raises an error in terms of the public arguments.
    Validating ~40 arrays in Python first would cost more than updating a small model."""
    native = _native_cpu()
    if native is None:
        return False
    try:
        getattr(native, kernel)(*args)
    except (TypeError, ValueError):
        return False
    return True


def _as_list(op, name, value):
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{op}: {name} must be a list of arrays, got {type(value).__name__}")
    return list(value)


# --------------------------------------------------------------------------- SGD
def _sgd_hyper(op, lr, momentum, dampening, weight_decay, nesterov):
    lr = _number(op, "lr", lr, low=0.0)
    momentum = _number(op, "momentum", momentum, low=0.0)
    dampening = _number(op, "dampening", dampening)
    weight_decay = _number(op, "weight_decay", weight_decay, low=0.0)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"{op}: nesterov needs momentum > 0 and dampening 0 (as torch)")
    return lr, momentum, dampening, weight_decay


def multi_tensor_sgd_step(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0,
                          weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """:func:`sgd_step` on lists of parameters in one call (all validated before any is updated).

    Parameters
    ----------
    params, grads : list of arrays
    momentum_buffers : list of arrays, or None when momentum is 0
    lr, momentum, dampening, weight_decay, nesterov, maximize, first_step
        As :func:`sgd_step`.
    """
    op = "multi_tensor_sgd_step"
    lr, momentum, dampening, weight_decay = _sgd_hyper(op, lr, momentum, dampening, weight_decay, nesterov)
    params, grads = _as_list(op, "params", params), _as_list(op, "grads", grads)
    bufs = _as_list(op, "momentum_buffers", momentum_buffers)
    count = _lists(op, {"params": params, "grads": grads, "momentum_buffers": bufs})
    if momentum and bufs is None:
        raise ValueError(f"{op}: momentum_buffers are required when momentum != 0")
    if _try_native("sgd_step", params, grads, bufs if momentum else [None] * count, lr, momentum, dampening,
                   weight_decay, bool(nesterov), bool(maximize), bool(first_step)):
        return
    p_arrays, g_arrays, b_arrays, device = [], [], [], None
    for i in range(count):
        p, kind = _state_array(op, f"params[{i}]", params[i], device=device)
        device = device or kind.device
        g = _grad_array(op, f"grads[{i}]", grads[i], p, device)
        b = None
        if momentum:
            b, _ = _state_array(op, f"momentum_buffers[{i}]", bufs[i], like=p, device=device)
        p_arrays.append(p)
        g_arrays.append(g)
        b_arrays.append(b)
    _check_distinct(op, p_arrays + [b for b in b_arrays if b is not None])
    if count:
        _backend.get_backend(device, "sgd_step").sgd_step(
            p_arrays, g_arrays, b_arrays, lr, momentum, dampening, weight_decay, bool(nesterov), bool(maximize),
            bool(first_step))


def sgd_step(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False, first_step=False):
    """One ``torch.optim.SGD`` update of ``param`` (and ``momentum_buffer``), in place, one pass.

    ``d = (-grad if maximize else grad) + weight_decay * param``; with momentum,
    ``buf = d`` on the first step (``first_step=True``) else
    ``buf = momentum * buf + (1 - dampening) * d``, and the step is
    ``d + momentum * buf`` (Nesterov) or ``buf``; ``param -= lr * step``.

    Parameters
    ----------
    param : array, float32 or float64, C-contiguous, writeable
    grad : array, same shape and dtype
    momentum_buffer : array like param, or None when momentum is 0
    lr : float >= 0
    momentum, weight_decay : float >= 0
    dampening : float
    nesterov, maximize, first_step : bool

    Raises
    ------
    ValueError, TypeError
        For arrays that cannot be updated in place or invalid hyper-parameters;
        nothing is modified then.
    """
    multi_tensor_sgd_step([param], [grad], None if momentum_buffer is None else [momentum_buffer], lr=lr,
                          momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                          maximize=maximize, first_step=first_step)


# --------------------------------------------------------------------------- Adam
def multi_tensor_adam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1=0.9, beta2=0.999,
                           eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
                           max_exp_avg_sqs=None, maximize=False):
    """:func:`adam_step` on lists of parameters in one call (all validated before any is updated)."""
    op = "multi_tensor_adam_step"
    step = arr.check_int64(op, "step", _number(op, "step", step, low=1, integer=True))
    lr = _number(op, "lr", lr, low=0.0)
    beta1 = _number(op, "beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = _number(op, "beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = _number(op, "eps", eps, low=0.0)
    weight_decay = _number(op, "weight_decay", weight_decay, low=0.0)
    lists = {name: _as_list(op, name, v) for name, v in (
        ("params", params), ("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs),
        ("max_exp_avg_sqs", max_exp_avg_sqs))}
    count = _lists(op, lists)
    if amsgrad and lists["max_exp_avg_sqs"] is None:
        raise ValueError(f"{op}: amsgrad=True needs max_exp_avg_sqs")
    if _try_native("adam_step", lists["params"], lists["grads"], lists["exp_avgs"], lists["exp_avg_sqs"],
                   lists["max_exp_avg_sqs"] if amsgrad else None, step, lr, beta1, beta2, eps, weight_decay,
                   bool(decoupled_weight_decay), bool(amsgrad), bool(maximize)):
        return
    state, device = {k: [] for k in lists}, None
    for i in range(count):
        p, kind = _state_array(op, f"params[{i}]", lists["params"][i], device=device)
        device = device or kind.device
        row = {"params": p, "grads": _grad_array(op, f"grads[{i}]", lists["grads"][i], p, device)}
        for name in ("exp_avgs", "exp_avg_sqs") + (("max_exp_avg_sqs",) if amsgrad else ()):
            row[name], _ = _state_array(op, f"{name}[{i}]", lists[name][i], like=p, device=device)
        for name in state:
            state[name].append(row.get(name))
    _check_distinct(op, [a for name in ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
                         for a in state[name] if a is not None])
    if count:
        _backend.get_backend(device, "adam_step").adam_step(
            state["params"], state["grads"], state["exp_avgs"], state["exp_avg_sqs"], state["max_exp_avg_sqs"],
            step, lr, beta1, beta2, eps, weight_decay, bool(decoupled_weight_decay), bool(amsgrad), bool(maximize))


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
              decoupled_weight_decay=False, amsgrad=False, max_exp_avg_sq=None, maximize=False):
    """One ``torch.optim.Adam`` update (``AdamW`` with ``decoupled_weight_decay=True``), in place, one pass.

    ``g = -grad if maximize else grad``; weight decay is ``param *= 1 - lr*wd``
    (decoupled) or ``g += wd*param``; ``m += (1-beta1)(g - m)``,
    ``v = beta2 v + (1-beta2) g^2``, ``v_max = max(v_max, v)`` (amsgrad);
    ``param -= lr / (1-beta1^step) * m / (sqrt(v or v_max) / sqrt(1-beta2^step) + eps)``.

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq : arrays of one shape and float dtype
        ``param`` and the moment buffers are updated in place.
    step : int >= 1
        The step number after this update (1 on the first call).
    lr : float >= 0
    beta1, beta2 : float in [0, 1)
    eps, weight_decay : float >= 0
    decoupled_weight_decay, amsgrad, maximize : bool
    max_exp_avg_sq : array, required with amsgrad
    """
    multi_tensor_adam_step([param], [grad], [exp_avg], [exp_avg_sq], step=step, lr=lr, beta1=beta1, beta2=beta2,
                           eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                           amsgrad=amsgrad, max_exp_avg_sqs=None if max_exp_avg_sq is None else [max_exp_avg_sq],
                           maximize=maximize)


def _span(a):
    """[first byte, last byte + 1) of a C-contiguous array (checked before this is called)."""
    if isinstance(a, np.ndarray):
        start = a.__array_interface__["data"][0]
        return start, start + a.nbytes
    return arr._data_span(a)


def _check_distinct(op, arrays):
    """No two updated arrays may share memory (an update would be applied twice)."""
    spans = sorted((_span(a), i) for i, a in enumerate(arrays) if a.size)
    for ((lo1, hi1), i), ((lo2, hi2), j) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise ValueError(f"{op}: two of the arrays to update share memory (positions {i} and {j} in the "
                             f"flattened state); pass separate arrays")


__all__ = ["sgd_step", "adam_step", "multi_tensor_sgd_step", "multi_tensor_adam_step"]
