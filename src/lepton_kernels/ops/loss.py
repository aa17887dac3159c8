"""Cross-entropy of logits against class indices: fused log-softmax + NLL in one pass per row.

For row i with target t (kept unless t == ignore_index), smoothing eps and class weights w:
q_ij = (1 - eps) w_t [j == t] + eps w_j / C, loss_i = -sum_j q_ij log softmax(z_i)_j and
d loss_i / d z_ij = softmax(z_i)_j sum_k q_ik - q_ij. "mean" divides the summed loss by
sum_i w_{t_i} over kept rows (as torch).
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _backend
from . import _arrays as arr

REDUCTIONS = ("none", "mean", "sum")


def _check(op, input, target, weight, ignore_index, reduction, label_smoothing):
    """Validated (logits, int64 targets, weight, kind, device, dtype, all_kept); all_kept is True
    when no target equals ignore_index (known without a mask when every target is a class)."""
    za, kind = arr.intake(op, "input", input)
    ta, tkind = arr.intake(op, "target", target)
    kinds = {"input": kind, "target": tkind}
    wa = None
    if weight is not None:
        wa, kinds["weight"] = arr.intake(op, "weight", weight)
    device = arr.check_same_device(op, kinds)
    dtype = arr.check_float(op, "input", za)
    arr.check_ndim(op, "input", za, (2,), "2-D logits (N, C)")
    if np.dtype(ta.dtype).kind not in "iu" or tuple(ta.shape) != (za.shape[0],):
        raise ValueError(f"{op}: target must be integer class indices of shape ({za.shape[0]},), "
                         f"got {np.dtype(ta.dtype)} {tuple(ta.shape)}")
    if wa is not None:
        arr.check_same_dtype(op, "weight", wa, dtype, "input")
        if tuple(wa.shape) != (za.shape[1],):
            raise ValueError(f"{op}: weight must have shape ({za.shape[1]},), got {tuple(wa.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    arr.check_int64(op, "ignore_index", int(ignore_index))
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if np.dtype(ta.dtype) == np.uint64 and ta.size and int(ta.max()) > arr.INT64_MAX:
        # the int64 cast below would wrap such a value, possibly onto ignore_index
        raise ValueError(f"{op}: target values must lie in [0, {za.shape[1]}) or equal ignore_index "
                         f"({ignore_index}), got {int(ta.max())}")
    ta = ta.astype(np.int64) if np.dtype(ta.dtype) != np.int64 else arr.contiguous(ta)
    if ta.size:
        lo, hi = int(ta.min()), int(ta.max())
        if 0 <= lo and hi < za.shape[1]:  # every target is a class: no ignore_index mask to build
            return za, ta, wa, kind, device, dtype, not lo <= ignore_index <= hi
    kept = ta[ta != ignore_index]
    if kept.size and (int(kept.min()) < 0 or int(kept.max()) >= za.shape[1]):
        raise ValueError(f"{op}: target values must lie in [0, {za.shape[1]}) or equal ignore_index "
                         f"({ignore_index}), got values in [{int(kept.min())}, {int(kept.max())}]")
    return za, ta, wa, kind, device, dtype, False


def cross_entropy_parts(op, input, target, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, *, with_grad=True):
    """(per-row losses, d loss_i / d logits or None, divisor of the reduction, caller's kind)."""
    za, ta, wa, kind, device, dtype, all_kept = _check(op, input, target, weight, ignore_index, reduction,
                                                       label_smoothing)
    xp = arr.xp_of(za)
    n, c = za.shape
    losses = xp.empty((n,), dtype=dtype)
    dlogits = xp.empty((n, c), dtype=dtype) if with_grad else None
    if n and c:
        _backend.get_backend(device, "cross_entropy").cross_entropy(
            arr.contiguous(za), ta, None if wa is None else arr.contiguous(wa), int(ignore_index),
            float(label_smoothing), losses, dlogits)
    else:
        losses[...] = 0
        if dlogits is not None:
            dlogits[...] = 0
    divisor = 1.0
    if reduction == "mean" and all_kept and wa is None:
        divisor = float(n)  # no row is ignored
    elif reduction == "mean":
        kept = ta != ignore_index
        divisor = float(kept.sum()) if wa is None else float((wa[xp.where(kept, ta, 0)] * kept).sum())
    return losses, dlogits, divisor, kind


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits (N, C) and class indices (N,), as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : array (N, C), float32 or float64
        Unnormalised logits.
    target : array (N,), integer
        Class indices in [0, C), or ``ignore_index``.
    weight : array (C,), optional
        Per-class weights.
    ignore_index : int
        Rows with this target contribute nothing.
    reduction : "mean", "sum" or "none"
        "mean" divides by the summed weight of the kept rows (NaN when none is kept, as torch).
    label_smoothing : float in [0, 1]

    Returns
    -------
    array
        0-d for "mean"/"sum", (N,) for "none". Stable for large logits (log-sum-exp).
    """
    if weight is None and type(ignore_index) is int and -arr.INT64_MAX - 1 <= ignore_index <= arr.INT64_MAX and (
            type(label_smoothing) is float or type(label_smoothing) is int) and reduction in REDUCTIONS and (
            loss := arr.call_whole("cross_entropy", input, target, ignore_index, label_smoothing,
                                   REDUCTIONS.index(reduction))) is not None:
        return loss  # the small-call path
    losses, _, divisor, kind = cross_entropy_parts("cross_entropy", input, target, weight, ignore_index, reduction,
                                                   label_smoothing, with_grad=False)
    if reduction == "none":
        return kind.wrap(losses)
    total = losses.sum(dtype=np.float64)
    return kind.wrap(arr.xp_of(losses).asarray((total / divisor) if reduction == "mean" else total,
                                               dtype=losses.dtype))


def cross_entropy_backward(grad, input, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    """Gradient of :func:`cross_entropy` with respect to ``input``, scaled by ``grad``.

    ``grad`` is a scalar (0-d) for "mean"/"sum" and (N,) for "none".
    """
    op = "cross_entropy_backward"
    _, dlogits, divisor, kind = cross_entropy_parts(op, input, target, weight, ignore_index, reduction,
                                                    label_smoothing)
    if isinstance(grad, (numbers.Real, np.generic)):
        ga = arr.xp_of(dlogits).asarray(grad, dtype=dlogits.dtype)
    else:
        ga, _ = arr.intake(op, "grad", grad)
    expected = (dlogits.shape[0],) if reduction == "none" else ()
    if tuple(ga.shape) != expected:
        raise ValueError(f"{op}: grad must have shape {expected} for reduction={reduction!r}, got {tuple(ga.shape)}")
    scale = ga[:, None] if reduction == "none" else ga / divisor
    return kind.wrap((dlogits * scale).astype(dlogits.dtype, copy=False))


__all__ = ["cross_entropy", "cross_entropy_backward"]
