"""torch.optim.SGD, Adam and AdamW stepping every parameter of a group with one call of the
library's multi-tensor kernels (lepton_kernels.ops.multi_tensor_sgd_step / _adam_step).

Subclasses of the torch optimizers: the same arguments, parameter groups, results and
``state_dict`` format (``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``), so a checkpoint moves between them and torch's. Parameters are
updated in place through zero-copy views. A group the kernels do not cover
(``differentiable`` or ``capturable``, complex, sparse gradients, dtypes other than
float32/float64, devices other than CPU/CUDA) makes ``step`` run torch's own after one
warning naming the reason.
"""
from __future__ import annotations

import warnings

import torch

from .. import ops as lk

_DTYPES = (torch.float32, torch.float64)


def _array(t):
    """A zero-copy NumPy (CPU) or CuPy (CUDA) view the kernels update in place."""
    if t.device.type == "cpu":
        return t.detach().numpy()
    import cupy  # noqa: PLC0415 - CUDA tensors only

    return cupy.from_dlpack(t.detach())


def _uncovered(group, params) -> str | None:
    for flag in ("differentiable", "capturable"):
        if group.get(flag):
            return f"{flag}=True"
    for p in params:
        if p.grad.is_sparse:
            return "a sparse gradient"
        if p.dtype not in _DTYPES:
            return f"a {p.dtype} parameter (the kernels take float32 and float64)"
        if p.device.type not in ("cpu", "cuda"):
            return f"a parameter on {p.device.type}"
    return None


class _MultiTensor:
    """step(): each group through one kernel call per (dtype, state) batch, or torch's own."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        reason = next((r for g, ps in groups if (r := _uncovered(g, ps))), None)
        if reason is not None:
            warned = self.__dict__.setdefault("_lepton_warned", set())
            if reason not in warned:
                warned.add(reason)
                warnings.warn(f"lepton_kernels.torch.optim: {type(self).__name__} steps with torch's own "
                              f"implementation: {reason}", stacklevel=2)
            super().step()
            return loss
        for group, params in groups:
            if params:
                self._step_group(group, params)
        return loss


def _batches(params, key):
    """The parameters grouped by ``key(p)`` (a kernel call takes one dtype and one state)."""
    batches: dict = {}
    for p in params:
        batches.setdefault(key(p), []).append(p)
    return batches.values()


class SGD(_MultiTensor, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, Nesterov, weight decay, maximize)."""

    def _step_group(self, group, params):
        momentum = group["momentum"]
        for batch in _batches(params, lambda p: (p.dtype, p.device, momentum != 0 and
                                                 self.state[p].get("momentum_buffer") is None)):
            first = momentum != 0 and self.state[batch[0]].get("momentum_buffer") is None
            bufs = None
            if momentum != 0:
                if first:  # torch's first step sets the buffer to the gradient: the kernel fills it
                    for p in batch:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs = [_array(self.state[p]["momentum_buffer"]) for p in batch]
            lk.multi_tensor_sgd_step([_array(p) for p in batch], [_array(p.grad) for p in batch], bufs,
                                     lr=float(group["lr"]), momentum=momentum, dampening=group["dampening"],
                                     weight_decay=float(group["weight_decay"]), nesterov=group["nesterov"],
                                     maximize=group["maximize"], first_step=first)


class Adam(_MultiTensor, torch.optim.Adam):
    """torch.optim.Adam (amsgrad, weight decay, maximize, ``decoupled_weight_decay``)."""

    def _step_group(self, group, params):
        amsgrad = group["amsgrad"]
        for p in params:
            state = self.state[p]
            if not state:  # torch's state layout, so state_dict() is torch's
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        beta1, beta2 = (float(b) for b in group["betas"])
        decoupled = group.get("decoupled_weight_decay", False) or isinstance(self, torch.optim.AdamW)
        for batch in _batches(params, lambda p: (p.dtype, p.device, int(self.state[p]["step"]))):
            states = [self.state[p] for p in batch]
            lk.multi_tensor_adam_step(
                [_array(p) for p in batch], [_array(p.grad) for p in batch], [_array(s["exp_avg"]) for s in states],
                [_array(s["exp_avg_sq"]) for s in states], step=int(states[0]["step"]), lr=float(group["lr"]),
                beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=float(group["weight_decay"]),
                decoupled_weight_decay=decoupled, amsgrad=amsgrad, maximize=group["maximize"],
                max_exp_avg_sqs=[_array(s["max_exp_avg_sq"]) for s in states] if amsgrad else None)


class AdamW(Adam, torch.optim.AdamW):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 0.01)."""


__all__ = ["SGD", "Adam", "AdamW"]
