"""numba.cuda kernels for the optimizer updates and the fused cross-entropy.

Simple and correct rather than fast (the tuned kernels are in ``cuda/kernels``):

* ``sgd_step`` / ``adam_step``: one grid-stride launch per tensor of the list, one
  thread per element, in the tensor's dtype (the scalars are passed as that dtype;
  Adam's bias corrections are computed once per call in double, as torch does).
* ``cross_entropy``: one thread per row, every sum in float64; the row is walked
  for the max, the sum of exponentials, the smoothing sums and the gradient. A
  target outside [0, C) that is not ``ignore_index`` gives a NaN row and is never
  used as an address (``lepton_kernels.ops`` rejects such targets first).

Semantics: ``csrc/lepton/optim.h`` and ``csrc/lepton/loss.h`` (smoothing terms
skipped when ``label_smoothing == 0``). Flat 1-D views of C-contiguous arrays; the
launch helpers (streams, simulator-sized grids) live in ``.cuda``, which re-exports
these functions.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda


def _base():
    # Imported late: ``.cuda`` imports this module at its end.
    from . import cuda as base

    return base


@cuda.jit(cache=True)
def _sgd_k(p, g, buf, lr, momentum, damp_c, wd, sign, use_buf, nesterov, first_step, has_wd):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.size, step):
        pi = p[i]
        d = sign * g[i]
        if has_wd:
            d += wd * pi
        if use_buf:
            if first_step:
                b = d
            else:
                b = momentum * buf[i] + damp_c * d
            buf[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        p[i] = pi - lr * d


@cuda.jit(cache=True)
def _adam_k(p, g, m, v, vmax, beta1_c, beta2, beta2_c, eps, wd, decay, step_size, bias2_sqrt, sign, has_wd,
            decoupled, amsgrad):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.size, step):
        grad = sign * g[i]
        param = p[i]
        if has_wd:
            if decoupled:
                param *= decay
            else:
                grad += wd * param
        mo = m[i]
        mi = mo + beta1_c * (grad - mo)
        vi = beta2 * v[i] + beta2_c * grad * grad
        m[i] = mi
        v[i] = vi
        if amsgrad:
            old = vmax[i]
            if old > vi or old != old:  # torch.maximum: NaN wins
                vi = old
            vmax[i] = vi
        p[i] = param - step_size * (mi / (math.sqrt(vi) / bias2_sqrt + eps))


@cuda.jit(cache=True)
def _cross_entropy_k(z, target, weight, use_weight, ignore_index, eps, losses, dlogits, want_grad, n, c):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        t = target[i]
        base = i * c
        if t == ignore_index or t < 0 or t >= c:
            fill = 0.0 if t == ignore_index else math.nan
            losses[i] = fill
            if want_grad:
                for j in range(c):
                    dlogits[base + j] = fill
            continue
        zmax = -math.inf
        for j in range(c):
            x = float(z[base + j])
            if x > zmax or x != x:
                zmax = x
        total = 0.0
        for j in range(c):
            total += math.exp(float(z[base + j]) - zmax)
        lse = math.log(total) + zmax
        w_t = float(weight[t]) if use_weight else 1.0
        q_sum = (1.0 - eps) * w_t
        loss = -(1.0 - eps) * w_t * (float(z[base + t]) - lse)
        smooth = eps / c
        if eps != 0.0:
            sw = 0.0
            swz = 0.0
            for j in range(c):
                w = float(weight[j]) if use_weight else 1.0
                sw += w
                swz += w * (float(z[base + j]) - lse)
            q_sum += smooth * sw
            loss -= smooth * swz
        losses[i] = loss
        if want_grad:
            for j in range(c):
                w = float(weight[j]) if use_weight else 1.0
                q = smooth * w
                if j == t:
                    q += (1.0 - eps) * w_t
                dlogits[base + j] = math.exp(float(z[base + j]) - lse) * q_sum - q


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    base = _base()
    use_buf = momentum != 0
    for i, p in enumerate(params):
        pf = base._flat(p)
        if pf.size == 0:
            continue
        T = np.dtype(pf.dtype).type
        bf = base._flat(bufs[i]) if use_buf else pf  # placeholder, never read without momentum
        base._launch(_sgd_k, pf.size, pf, base._flat(grads[i]), bf, T(lr), T(momentum), T(1.0 - dampening),
                     T(weight_decay), T(-1.0 if maximize else 1.0), use_buf, bool(nesterov), bool(first_step),
                     weight_decay != 0)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    base = _base()
    step_size = lr / (1.0 - beta1 ** step)
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    for i, p in enumerate(params):
        pf = base._flat(p)
        if pf.size == 0:
            continue
        T = np.dtype(pf.dtype).type
        v = base._flat(exp_avg_sqs[i])
        vmax = base._flat(max_exp_avg_sqs[i]) if amsgrad else v  # placeholder without amsgrad
        base._launch(_adam_k, pf.size, pf, base._flat(grads[i]), base._flat(exp_avgs[i]), v, vmax, T(1.0 - beta1),
                     T(beta2), T(1.0 - beta2), T(eps), T(weight_decay), T(1.0 - lr * weight_decay), T(step_size),
                     T(bias2_sqrt), T(-1.0 if maximize else 1.0), weight_decay != 0, bool(decoupled), bool(amsgrad))


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    base = _base()
    n, c = (int(s) for s in logits.shape)
    if n == 0:
        return
    z = base._flat(logits)
    use_weight = weight is not None
    want_grad = dlogits is not None
    base._launch(_cross_entropy_k, n, z, base._flat(target), base._flat(weight) if use_weight else z, use_weight,
                 int(ignore_index), float(label_smoothing), base._flat(losses),
                 base._flat(dlogits) if want_grad else z, want_grad, n, c)
