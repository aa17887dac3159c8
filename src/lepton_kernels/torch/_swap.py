"""swap_modules: a torch model's supported modules switched to lepton_kernels.torch.nn in place."""
from __future__ import annotations

from typing import Callable

from torch import nn as tnn

from .nn import SWAPS


def swap_modules(model: tnn.Module, filter_fn: Callable[[str, tnn.Module], bool] | None = None) -> dict[str, str]:
    """Replace, recursively and in place, every module whose exact class has a lepton version.

    The module objects stay the same (their class is switched), so their parameters,
    buffers, hooks and ``state_dict`` keys are untouched and an optimizer built before
    the swap keeps working. Subclasses of the torch modules (a user's own Conv2d) are
    left alone: their forward may differ.

    Parameters
    ----------
    model : torch.nn.Module
    filter_fn : callable (qualified name, module) -> bool, optional
        Only modules for which it returns True are swapped.

    Returns
    -------
    dict
        ``{qualified module name: new class name}`` of the modules swapped (the root
        module's name is ``""``).
    """
    if not isinstance(model, tnn.Module):
        raise TypeError(f"swap_modules: model must be a torch.nn.Module, got {type(model).__name__}")
    swapped = {}
    for name, module in model.named_modules():
        lepton_class = SWAPS.get(type(module))
        if lepton_class is None or (filter_fn is not None and not filter_fn(name, module)):
            continue
        module.__class__ = lepton_class
        swapped[name] = lepton_class.__name__
    return swapped
