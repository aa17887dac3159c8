"""lepton_kernels: hand-written C++/CUDA kernels for small CNN and linear models.

``import lepton_kernels as lk`` and call kernels on NumPy arrays, CuPy arrays
or DLPack tensors (torch, JAX); results come back in the caller's type.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version

from . import autograd, data, models, nn, ops, optim, quant, reference
from .autograd import Tensor, no_grad
from .io import save
from .models import load_model as load
from ._backend import backends, use_backend
from ._threads import apply_environment as _apply_thread_environment
from ._threads import get_num_threads, max_num_threads, set_num_threads

try:
    __version__ = _dist_version("lepton-kernels")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

_apply_thread_environment()

# Every op, bound from the ops package (which binds them from the op registry).
globals().update({_name: getattr(ops, _name) for _name in ops.__all__})

__all__ = [
    "__version__",
    "backends",
    "use_backend",
    "set_num_threads",
    "get_num_threads",
    "max_num_threads",
    "autograd",
    "data",
    "models",
    "nn",
    "optim",
    "quant",
    "reference",
    "Tensor",
    "no_grad",
    "save",
    "load",
    *ops.__all__,  # every op, as declared in lepton_kernels._registry
]
