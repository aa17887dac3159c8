"""torch.nn modules whose forward runs the library's kernels through ``torch.ops.lepton``.

Each is a subclass of the torch module it replaces (same constructor, parameters,
``state_dict`` keys; ``isinstance`` still holds), so :func:`swap_modules` can switch a
live module's class in place. A configuration the kernels do not cover (another
``padding_mode``, a dtype other than float32/float64, a device other than CPU/CUDA,
``inplace=True``, ``return_indices=True``, ...) runs torch's own forward after one
warning naming the module and the reason.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from . import _ops  # noqa: F401  (registers torch.ops.lepton)

_DTYPES = (torch.float32, torch.float64)
_DEVICES = ("cpu", "cuda")
_REDUCTION_INDEX = {"none": 0, "mean": 1, "sum": 2}


class _Lepton:
    """The fallback rule shared by the modules: one warning per module and reason."""

    def _covered(self, tensor, reason=None) -> bool:
        if reason is None and tensor.dtype not in _DTYPES:
            reason = f"dtype {tensor.dtype} (the kernels take float32 and float64)"
        if reason is None and tensor.device.type not in _DEVICES:
            reason = f"device {tensor.device.type} (the kernels run on CPU and CUDA)"
        if reason is None:
            return True
        warned = self.__dict__.setdefault("_lepton_warned", set())
        if reason not in warned:
            warned.add(reason)
            warnings.warn(f"lepton_kernels.torch: {type(self).__name__} runs torch's own forward: {reason}",
                          stacklevel=3)
        return False


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class Conv2d(_Lepton, nn.Conv2d):
    def _lepton_padding(self):
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return None if any(t % 2 for t in totals) else tuple(t // 2 for t in totals)
        return tuple(self.padding)

    def _lepton_args(self, input):
        """The op's arguments, or None (after the warning) when the kernels do not cover the call."""
        padding = self._lepton_padding()
        reason = None
        if self.padding_mode != "zeros":
            reason = f"padding_mode={self.padding_mode!r} (the kernels pad with zeros)"
        elif padding is None:
            reason = "padding='same' with an odd total padding (asymmetric)"
        if not self._covered(input, reason):
            return None
        return (input, self.weight, self.bias, list(self.stride), list(padding), list(self.dilation), self.groups)

    def forward(self, input):
        args = self._lepton_args(input)
        return super().forward(input) if args is None else torch.ops.lepton.conv2d(*args)

    def _fused_relu(self, input):
        """relu(self(input)) as one kernel call, or None when the kernels do not cover it."""
        args = self._lepton_args(input)
        return None if args is None else torch.ops.lepton.conv2d_relu(*args)


class Linear(_Lepton, nn.Linear):
    def forward(self, input):
        if not self._covered(input):
            return super().forward(input)
        return torch.ops.lepton.linear(input, self.weight, self.bias)

    def _fused_relu(self, input):
        """relu(self(input)) as one kernel call, or None when the kernels do not cover it."""
        return torch.ops.lepton.linear_relu(input, self.weight, self.bias) if self._covered(input) else None


class ReLU(_Lepton, nn.ReLU):
    def forward(self, input):
        if not self._covered(input, "inplace=True (the kernel writes a new tensor)" if self.inplace else None):
            return super().forward(input)
        return torch.ops.lepton.relu(input)


class _Activation(_Lepton):
    """An element-wise activation through ``torch.ops.lepton.activation``."""

    _kind = ""

    def _lepton_kind(self):
        return self._kind, 0.0

    def forward(self, input):
        inplace = getattr(self, "inplace", False)
        if not self._covered(input, "inplace=True (the kernel writes a new tensor)" if inplace else None):
            return super().forward(input)
        return torch.ops.lepton.activation(input, *self._lepton_kind())


class ReLU6(_Activation, nn.ReLU6):
    _kind = "relu6"


class LeakyReLU(_Activation, nn.LeakyReLU):
    def _lepton_kind(self):
        return "leaky_relu", float(self.negative_slope)


class Sigmoid(_Activation, nn.Sigmoid):
    _kind = "sigmoid"


class Tanh(_Activation, nn.Tanh):
    _kind = "tanh"


class SiLU(_Activation, nn.SiLU):
    _kind = "silu"


class GELU(_Activation, nn.GELU):
    def _lepton_kind(self):
        return ("gelu_tanh" if self.approximate == "tanh" else "gelu"), 0.0


class Hardswish(_Activation, nn.Hardswish):
    _kind = "hardswish"


class MaxPool2d(_Lepton, nn.MaxPool2d):
    def forward(self, input):
        if not self._covered(input, "return_indices=True" if self.return_indices else None):
            return super().forward(input)
        args = (list(_pair(self.kernel_size)), list(_pair(self.stride if self.stride is not None else
                                                           self.kernel_size)),
                list(_pair(self.padding)), list(_pair(self.dilation)), bool(self.ceil_mode))
        if torch.is_grad_enabled() and input.requires_grad:  # keep the indices for backward
            return torch.ops.lepton.max_pool2d_with_indices(input, *args)[0]
        return torch.ops.lepton.max_pool2d(input, *args)


class AvgPool2d(_Lepton, nn.AvgPool2d):
    def forward(self, input):
        if not self._covered(input):
            return super().forward(input)
        return torch.ops.lepton.avg_pool2d(
            input, list(_pair(self.kernel_size)), list(_pair(self.stride if self.stride is not None else
                                                             self.kernel_size)),
            list(_pair(self.padding)), bool(self.ceil_mode), bool(self.count_include_pad), self.divisor_override)


class AdaptiveAvgPool2d(_Lepton, nn.AdaptiveAvgPool2d):
    """Runs as an average pooling with a fixed window when the output size divides the input's
    (global pooling to 1x1 included); torch's own otherwise."""

    def forward(self, input):
        size = _pair(self.output_size)
        h, w = input.shape[-2:]
        out = tuple(d if s is None else s for s, d in zip(size, (h, w)))  # None keeps the input's size
        reason = None
        if input.dim() not in (3, 4):
            reason = f"a {input.dim()}-D input"
        elif not (out[0] and out[1] and h % out[0] == 0 and w % out[1] == 0):
            reason = f"output size {out} not dividing the input's {(h, w)} (windows of different sizes)"
        if not self._covered(input, reason):
            return super().forward(input)
        window = [h // out[0], w // out[1]]
        return torch.ops.lepton.avg_pool2d(input, window, window, [0, 0], False, True, None)


class BatchNorm2d(_Lepton, nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on the library's batch_norm (running statistics, momentum=None's
    cumulative average and num_batches_tracked exactly as torch's module keeps them)."""

    def _lepton_args(self, input):
        reason = None if input.dim() == 4 else f"a {input.dim()}-D input (BatchNorm2d takes (N, C, H, W))"
        if not self._covered(input, reason):
            return None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats  # torch passes no statistics otherwise
        return (input, self.running_mean if keep else None, self.running_var if keep else None, self.weight,
                self.bias, use_batch, float(factor), float(self.eps))

    def forward(self, input):
        args = self._lepton_args(input)
        return super().forward(input) if args is None else torch.ops.lepton.batch_norm(*args, False)

    def _fused_relu(self, input):
        """relu(self(input)) as one kernel pass, or None when the kernels do not cover it."""
        args = self._lepton_args(input)
        return None if args is None else torch.ops.lepton.batch_norm(*args, True)


class CrossEntropyLoss(_Lepton, nn.CrossEntropyLoss):
    def forward(self, input, target):
        reason = None
        if input.dim() != 2 or target.dim() != 1 or target.dtype != torch.int64:
            reason = "input other than (N, C) logits with int64 class indices"
        if not self._covered(input, reason):
            return super().forward(input, target)
        return torch.ops.lepton.cross_entropy(input, target, self.weight, _REDUCTION_INDEX[self.reduction],
                                              self.ignore_index, float(self.label_smoothing))


def _hooked(module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


class Sequential(nn.Sequential):
    """nn.Sequential running each lepton Conv2d, Linear or BatchNorm2d -> ReLU pair as one fused call
    (training and eval). A pair with hooks on either module, or an in-place ReLU, runs module by
    module, as does a pair whose layer the kernels do not cover for this input."""

    def _lepton_plan(self):
        """((module, the ReLU fused into it or None), ...) for the current children, cached."""
        children = tuple(self._modules.values())
        key = tuple((id(m), _hooked(m)) for m in children)  # a new child or a new hook: plan again
        cached = self.__dict__.get("_lepton_cached_plan")
        if cached is not None and cached[0] == key:
            return cached[1]
        plan, i = [], 0
        while i < len(children):
            module = children[i]
            after = children[i + 1] if i + 1 < len(children) else None
            fuse = (type(module) in (Conv2d, Linear, BatchNorm2d) and type(after) is ReLU and not after.inplace
                    and not _hooked(module) and not _hooked(after))
            plan.append((module, after if fuse else None))
            i += 2 if fuse else 1
        plan = tuple(plan)
        self.__dict__["_lepton_cached_plan"] = (key, plan)
        return plan

    def forward(self, input):
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return super().forward(input)  # every module's hooks must run
        for module, relu in self._lepton_plan():
            if relu is None:
                input = module(input)
                continue
            fused = module._fused_relu(input)
            input = fused if fused is not None else relu(module(input))
        return input


#: torch module class -> the lepton subclass swap_modules puts in its place
SWAPS = {nn.Conv2d: Conv2d, nn.Linear: Linear, nn.ReLU: ReLU, nn.MaxPool2d: MaxPool2d, nn.AvgPool2d: AvgPool2d,
         nn.CrossEntropyLoss: CrossEntropyLoss, nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d, nn.BatchNorm2d: BatchNorm2d,
         nn.Sequential: Sequential, nn.ReLU6: ReLU6, nn.LeakyReLU: LeakyReLU, nn.Sigmoid: Sigmoid, nn.Tanh: Tanh,
         nn.SiLU: SiLU, nn.GELU: GELU, nn.Hardswish: Hardswish}

__all__ = ["Conv2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "GELU", "Hardswish",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "CrossEntropyLoss", "Sequential", "SWAPS"]
