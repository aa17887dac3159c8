"""Numba CPU fused log-softmax + NLL: per-row losses and d loss / d logits in one pass per row."""
from __future__ import annotations

import math

from numba import njit, prange


@njit(parallel=True, cache=True)
def _cross_entropy_kernel(z, target, weight, use_weight, ignore_index, eps, losses, dlogits, want_grad):
    n, c = z.shape
    for i in prange(n):
        t = target[i]
        if t == ignore_index:
            losses[i] = 0
            if want_grad:
                for j in range(c):
                    dlogits[i, j] = 0
            continue
        zmax = z[i, 0]
        for j in range(1, c):
            zmax = max(zmax, z[i, j])
        total = 0.0
        for j in range(c):
            total += math.exp(z[i, j] - zmax)
        log_sum = math.log(total) + zmax
        w_t = weight[t] if use_weight else 1.0
        q_sum = (1 - eps) * w_t
        loss = -(1 - eps) * w_t * (z[i, t] - log_sum)
        for j in range(c):
            w_j = weight[j] if use_weight else 1.0
            q_sum += eps * w_j / c
            loss -= eps * w_j / c * (z[i, j] - log_sum)
        losses[i] = loss
        if want_grad:
            for j in range(c):
                w_j = weight[j] if use_weight else 1.0
                q = eps * w_j / c + ((1 - eps) * w_t if j == t else 0.0)
                dlogits[i, j] = math.exp(z[i, j] - log_sum) * q_sum - q


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    use_weight = weight is not None
    want_grad = dlogits is not None
    _cross_entropy_kernel(logits, target, weight if use_weight else logits[0], use_weight, ignore_index,
                          label_smoothing, losses, dlogits if want_grad else logits, want_grad)
