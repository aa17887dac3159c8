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

    def forward(self, input):
        padding = self._lepton_padding()
        reason = None
        if self.padding_mode != "zeros":
            reason = f"padding_mode={self.padding_mode!r} (the kernels pad with zeros)"
        elif padding is None:
            reason = "padding='same' with an odd total padding (asymmetric)"
        if not self._covered(input, reason):
            return super().forward(input)
        return torch.ops.lepton.conv2d(input, self.weight, self.bias, list(self.stride), list(padding),
                                       list(self.dilation), self.groups)


class Linear(_Lepton, nn.Linear):
    def forward(self, input):
        if not self._covered(input):
            return super().forward(input)
        return torch.ops.lepton.linear(input, self.weight, self.bias)


class ReLU(_Lepton, nn.ReLU):
    def forward(self, input):
        if not self._covered(input, "inplace=True (the kernel writes a new tensor)" if self.inplace else None):
            return super().forward(input)
        return torch.ops.lepton.relu(input)


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


class CrossEntropyLoss(_Lepton, nn.CrossEntropyLoss):
    def forward(self, input, target):
        reason = None
        if input.dim() != 2 or target.dim() != 1 or target.dtype != torch.int64:
            reason = "input other than (N, C) logits with int64 class indices"
        if not self._covered(input, reason):
            return super().forward(input, target)
        return torch.ops.lepton.cross_entropy(input, target, self.weight, _REDUCTION_INDEX[self.reduction],
                                              self.ignore_index, float(self.label_smoothing))


#: torch module class -> the lepton subclass swap_modules puts in its place
SWAPS = {nn.Conv2d: Conv2d, nn.Linear: Linear, nn.ReLU: ReLU, nn.MaxPool2d: MaxPool2d, nn.AvgPool2d: AvgPool2d,
         nn.CrossEntropyLoss: CrossEntropyLoss}

__all__ = ["Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "CrossEntropyLoss", "SWAPS"]
