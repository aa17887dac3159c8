"""torch.optim-compatible optimizers over autograd parameters, stepping with the fused
multi-tensor kernels (one kernel call per parameter group, no Python loop over elements)."""
from __future__ import annotations

from .. import ops
from ..ops import _arrays as arr


class Optimizer:
    """Base: ``param_groups`` (list of dicts with "params" and hyper-parameters) and per-parameter state."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        for group in groups:
            merged = {**defaults, **group, "params": list(group["params"])}
            self._check(merged)
            self.param_groups.append(merged)
        self.state: dict[int, dict] = {}

    def _check(self, group):  # hyper-parameters are validated again by the kernels at each step
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _with_grads(self, group):
        return [p for p in group["params"] if p.grad is not None]

    def _state(self, p):
        state = self.state.get(id(p))
        if state is None:
            state = self.state[id(p)] = {}
        return state


def _zeros_like(a):
    return arr.xp_of(a).zeros(a.shape, dtype=a.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (as torch.optim.SGD)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def step(self) -> None:
        for group in self.param_groups:
            params = self._with_grads(group)
            if not params:
                continue
            momentum = group["momentum"]
            bufs, first = None, False
            if momentum:
                states = [self._state(p) for p in params]
                bufs = [s.get("momentum_buffer") for s in states]
                missing = sum(b is None for b in bufs)
                if missing and missing != len(bufs):
                    # a parameter got its first gradient later than the others: step it on its own
                    self._step_mixed(group, params, states)
                    continue
                first = missing > 0
                if first:  # allocated on the first step only, not evaluated (and dropped) at every step
                    bufs = [s.setdefault("momentum_buffer", _zeros_like(p.data)) for s, p in zip(states, params)]
            ops.multi_tensor_sgd_step([p.data for p in params], [p.grad for p in params], bufs, lr=group["lr"],
                                      momentum=momentum, dampening=group["dampening"],
                                      weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                                      maximize=group["maximize"], first_step=first)

    def _step_mixed(self, group, params, states):
        for p, s in zip(params, states):
            buf = s.get("momentum_buffer")
            first = buf is None
            if first:
                buf = s["momentum_buffer"] = _zeros_like(p.data)
            ops.sgd_step(p.data, p.grad, buf, lr=group["lr"], momentum=group["momentum"],
                         dampening=group["dampening"], weight_decay=group["weight_decay"],
                         nesterov=group["nesterov"], maximize=group["maximize"], first_step=first)


class Adam(Optimizer):
    """Adam (and AdamW through ``decoupled_weight_decay``), as torch.optim.Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def step(self) -> None:
        for group in self.param_groups:
            by_step: dict[int, list] = {}
            for p in group["params"]:  # parameters that started later are at an earlier step count
                if p.grad is None:
                    continue
                s = self._state(p)
                if "step" not in s:
                    s.update(step=0, exp_avg=_zeros_like(p.data), exp_avg_sq=_zeros_like(p.data))
                    if group["amsgrad"]:
                        s["max_exp_avg_sq"] = _zeros_like(p.data)
                step = s["step"] = s["step"] + 1
                items = by_step.get(step)
                if items is None:
                    by_step[step] = [(p, s)]
                else:
                    items.append((p, s))
            for step, items in by_step.items():
                self._update(group, step, items)

    def _update(self, group, step, items):
        beta1, beta2 = group["betas"]
        ops.multi_tensor_adam_step(
            [p.data for p, _ in items], [p.grad for p, _ in items], [s["exp_avg"] for _, s in items],
            [s["exp_avg_sq"] for _, s in items], step=step, lr=group["lr"], beta1=beta1, beta2=beta2,
            eps=group["eps"], weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
            max_exp_avg_sqs=[s["max_exp_avg_sq"] for _, s in items] if group["amsgrad"] else None,
            maximize=group["maximize"])


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as torch.optim.AdamW)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
