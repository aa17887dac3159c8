"""Numba CPU optimizer updates (torch.optim.SGD / Adam semantics), one pass over each parameter.

Scalars that depend only on the step (bias corrections) are computed once in
Python and passed in; the kernels are element-wise and parallel.
"""
from __future__ import annotations

import math


from numba import njit, prange


@njit(parallel=True, cache=True)
def _sgd_kernel(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step, use_buf):
    for i in prange(p.size):
        d = -g[i] if maximize else g[i]
        if weight_decay != 0:
            d += weight_decay * p[i]
        if use_buf:
            b = d if first_step else momentum * buf[i] + (1 - dampening) * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] -= lr * d


@njit(parallel=True, cache=True)
def _adam_kernel(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize,
                 step_size, bias2_sqrt):
    for i in prange(p.size):
        grad = -g[i] if maximize else g[i]
        param = p[i]
        if weight_decay != 0:
            if decoupled:
                param *= 1 - lr * weight_decay
            else:
                grad += weight_decay * param
        mi = m[i] + (1 - beta1) * (grad - m[i])
        vi = beta2 * v[i] + (1 - beta2) * grad * grad
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        p[i] = param - step_size * mi / (math.sqrt(vi) / bias2_sqrt + eps)


def _flat(a):
    return a.reshape(-1)


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    for p, g, b in zip(params, grads, bufs):
        use_buf = b is not None
        dtype = p.dtype.type
        _sgd_kernel(_flat(p), _flat(g), _flat(b) if use_buf else _flat(p[:0] if p.ndim else p.reshape(1)[:0]),
                    dtype(lr), dtype(momentum), dtype(dampening), dtype(weight_decay), nesterov, maximize,
                    first_step, use_buf)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    step_size = lr / (1 - beta1 ** step)
    bias2_sqrt = math.sqrt(1 - beta2 ** step)
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        vmax = max_exp_avg_sqs[i] if amsgrad else v
        dtype = p.dtype.type
        _adam_kernel(_flat(p), _flat(g), _flat(m), _flat(v), _flat(vmax), dtype(lr), dtype(beta1), dtype(beta2),
                     dtype(eps), dtype(weight_decay), decoupled, amsgrad, maximize, dtype(step_size),
                     dtype(bias2_sqrt))



