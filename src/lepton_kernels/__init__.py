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
from .ops import (
    adam_step,
    avg_pool2d,
    avg_pool2d_backward,
    bias_relu,
    bias_relu_backward,
    conv2d,
    conv2d_backward,
    conv2d_integer,
    cross_entropy,
    cross_entropy_backward,
    dequantize,
    dynamic_quantize,
    fake_quantize,
    linear,
    linear_backward,
    matmul,
    matmul_integer,
    max_pool2d,
    max_pool2d_backward,
    multi_tensor_adam_step,
    multi_tensor_sgd_step,
    PreparedQLinear,
    prepare_qlinear_conv2d,
    prepare_qlinear_matmul,
    qlinear_conv2d,
    qlinear_matmul,
    quantize,
    relu,
    relu_backward,
    sgd_step,
)

try:
    __version__ = _dist_version("lepton-kernels")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+src"

_apply_thread_environment()

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
    *ops.__all__,  # every kernel, as listed by the ops package
]
