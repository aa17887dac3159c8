"""lepton_kernels inside PyTorch (extra ``[torch]``; torch is imported only in this package).

- ``torch.ops.lepton.*``: custom operators registered with ``torch.library`` (conv2d,
  linear, relu, max_pool2d, avg_pool2d, cross_entropy and their backward ops), with fake
  implementations and autograd, on CPU and CUDA tensors;
- :mod:`lepton_kernels.torch.nn`: subclasses of the torch modules running those ops;
- :func:`swap_modules`: switches a model's supported modules to them in place;
- :mod:`lepton_kernels.torch.optim`: SGD, Adam and AdamW stepping each parameter group
  with one multi-tensor kernel call.
"""
from __future__ import annotations

from . import nn, optim
from ._swap import swap_modules

__all__ = ["nn", "optim", "swap_modules"]
