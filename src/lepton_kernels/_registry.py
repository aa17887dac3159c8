"""The op registry: every public op of ``lepton_kernels.ops`` declared once.

An :class:`OpSpec` names the op, its family, where its public function and its
float64 reference live, the kernel-interface functions of ``_backend`` it calls
and the backends that implement all of them. Generated from it:

* ``lepton_kernels.ops.__all__`` and the op part of ``lepton_kernels.__all__``
  (the ops package binds each name from :func:`public_names`);
* ``_backend.KERNEL_NAMES``, the kernel interface every backend module exposes;
* the kernel-interface check (``tests/test_registry.py``): a backend that
  claims an op must define each of its kernels, and one that defines a kernel
  must claim it, so a missing kernel fails a test instead of ``get_backend``
  silently passing over to a slower backend;
* test parametrisation (``ops_in_family`` in ``tests/conftest.py``) and the
  family names ``lepton-kernels bench --ops`` accepts (``bench/registry.py``).

This module is plain data with no imports from the package, so ``_backend``
(below ``ops`` in the layering) can read it; functions are resolved on demand.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

FAMILIES = ("elementwise", "activation", "pool", "conv", "linear", "loss", "optim", "quant", "norm")

# Backend keys "<name>/<device>", as _backend._SPECS lists them.
NATIVE_CPU, NUMBA_CPU, REFERENCE_CPU = "native/cpu", "numba/cpu", "reference/cpu"
NATIVE_CUDA, CUPY, NUMBA_CUDA = "native/cuda", "cupy/cuda", "numba/cuda"
BACKEND_KEYS = (NATIVE_CPU, NUMBA_CPU, REFERENCE_CPU, NATIVE_CUDA, CUPY, NUMBA_CUDA)
WITHOUT_NUMBA_CUDA = tuple(k for k in BACKEND_KEYS if k != NUMBA_CUDA)
CPU_BACKENDS = (NATIVE_CPU, NUMBA_CPU, REFERENCE_CPU)


@dataclass(frozen=True)
class OpSpec:
    """One public op.

    Parameters
    ----------
    name : str
        The public name (``lepton_kernels.<name>``).
    family : str
        One of :data:`FAMILIES`; tests and benchmarks group ops by it.
    module : str
        The ``lepton_kernels.ops`` submodule defining it (``"elementwise"``).
    reference : str or None
        Name of its float64 spec in ``lepton_kernels.reference``; None for
        composites checked through the ops they call (``fake_quantize``,
        ``multi_tensor_*``, ``prepare_*``).
    kernels : tuple of str
        Kernel-interface functions of ``_backend`` the op calls.
    optional_kernels : tuple of str
        Kernels used when a backend has them and passed over otherwise.
    backends : tuple of str
        Backend keys (:data:`BACKEND_KEYS`) implementing every kernel.
    """

    name: str
    family: str
    module: str
    reference: str | None
    kernels: tuple[str, ...]
    optional_kernels: tuple[str, ...] = ()
    backends: tuple[str, ...] = BACKEND_KEYS

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"OpSpec {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        unknown = set(self.backends) - set(BACKEND_KEYS)
        if unknown:
            raise ValueError(f"OpSpec {self.name!r}: unknown backends {sorted(unknown)}")

    @property
    def function(self):
        """The public function (or class) ``lepton_kernels.ops.<module>.<name>``."""
        return getattr(importlib.import_module(f"lepton_kernels.ops.{self.module}"), self.name)

    @property
    def reference_function(self):
        """The float64 reference ``lepton_kernels.reference.<reference>``, or None."""
        if self.reference is None:
            return None
        return getattr(importlib.import_module("lepton_kernels.reference"), self.reference)


def _op(name, family, module, kernels, *, reference="same", optional_kernels=(), backends=BACKEND_KEYS):
    """An OpSpec whose reference has the op's name unless given (None for none)."""
    return OpSpec(name, family, module, name if reference == "same" else reference, tuple(kernels),
                  tuple(optional_kernels), tuple(backends))


_QLINEAR_PACKING = ("pack_qlinear_weights", "qlinear_matmul_packed")

# In the order of the public __all__.
OPS: tuple[OpSpec, ...] = (
    _op("conv2d", "conv", "conv", ("conv2d", "relu")),
    _op("conv2d_backward", "conv", "conv", ("conv2d_backward",)),
    _op("linear", "linear", "linear", ("linear", "relu")),
    _op("linear_backward", "linear", "linear", ("linear_backward",)),
    _op("matmul", "linear", "linear", ("matmul",)),
    _op("quantize", "quant", "quant", ("quantize",)),
    _op("dequantize", "quant", "quant", ("dequantize",)),
    _op("dynamic_quantize", "quant", "quant", ("dynamic_quantize",)),
    _op("fake_quantize", "quant", "quant", ("quantize", "dequantize"), reference=None),
    _op("matmul_integer", "quant", "quant", ("matmul_integer",), backends=WITHOUT_NUMBA_CUDA),
    _op("conv2d_integer", "quant", "quant", ("conv2d_integer",), backends=WITHOUT_NUMBA_CUDA),
    _op("qlinear_matmul", "quant", "quant", ("qlinear_matmul",), optional_kernels=_QLINEAR_PACKING,
        backends=WITHOUT_NUMBA_CUDA),
    _op("qlinear_conv2d", "quant", "quant", ("qlinear_conv2d",), backends=WITHOUT_NUMBA_CUDA),
    _op("prepare_qlinear_matmul", "quant", "quant", ("qlinear_matmul",), reference=None,
        optional_kernels=_QLINEAR_PACKING, backends=WITHOUT_NUMBA_CUDA),
    _op("prepare_qlinear_conv2d", "quant", "quant", ("qlinear_conv2d",), reference=None,
        backends=WITHOUT_NUMBA_CUDA),
    _op("PreparedQLinear", "quant", "quant", ("qlinear_matmul", "qlinear_conv2d"), reference=None,
        optional_kernels=_QLINEAR_PACKING, backends=WITHOUT_NUMBA_CUDA),
    _op("cross_entropy", "loss", "loss", ("cross_entropy",)),
    _op("cross_entropy_backward", "loss", "loss", ("cross_entropy",)),
    _op("sgd_step", "optim", "optim", ("sgd_step",)),
    _op("adam_step", "optim", "optim", ("adam_step",)),
    _op("multi_tensor_sgd_step", "optim", "optim", ("sgd_step",), reference=None),
    _op("multi_tensor_adam_step", "optim", "optim", ("adam_step",), reference=None),
    _op("relu", "elementwise", "elementwise", ("relu",)),
    _op("relu_backward", "elementwise", "elementwise", ("relu_backward",)),
    _op("bias_relu", "elementwise", "elementwise", ("bias_relu",)),
    _op("bias_relu_backward", "elementwise", "elementwise", ("bias_relu_backward",)),
    _op("max_pool2d", "pool", "pool", ("max_pool2d",)),
    _op("max_pool2d_backward", "pool", "pool", ("max_pool2d_backward",)),
    _op("avg_pool2d", "pool", "pool", ("avg_pool2d",)),
    _op("avg_pool2d_backward", "pool", "pool", ("avg_pool2d_backward",)),
    # CPU backends first; the CUDA ones (native, CuPy, numba.cuda) come with their kernels
    *(_op(name, "activation", "activation", ("activation_backward" if name.endswith("_backward") else "activation",),
          backends=CPU_BACKENDS)
      for name in ("relu6", "relu6_backward", "leaky_relu", "leaky_relu_backward", "sigmoid", "sigmoid_backward",
                   "tanh", "tanh_backward", "silu", "silu_backward", "gelu", "gelu_backward", "hardswish",
                   "hardswish_backward")),
    _op("batch_norm", "norm", "norm", ("batch_norm_stats", "batch_norm_apply"), backends=CPU_BACKENDS),
    _op("batch_norm_backward", "norm", "norm",
        ("batch_norm_stats", "batch_norm_backward_reduce", "batch_norm_backward_apply"), backends=CPU_BACKENDS),
)

BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}
if len(BY_NAME) != len(OPS):
    raise RuntimeError("lepton_kernels._registry: an op is declared twice")


def public_names() -> list[str]:
    """The public op names, in ``__all__`` order."""
    return [op.name for op in OPS]


def ops_in_family(family: str) -> list[OpSpec]:
    """The ops of one family (ValueError naming the families for an unknown one)."""
    if family not in FAMILIES:
        raise ValueError(f"ops_in_family: family must be one of {FAMILIES}, got {family!r}")
    return [op for op in OPS if op.family == family]


def family_of(name: str) -> str | None:
    """The family of public op ``name``, or None if it is not a registered op."""
    op = BY_NAME.get(name)
    return None if op is None else op.family


def kernel_names() -> tuple[str, ...]:
    """Every required kernel-interface function, each once, in first-use order."""
    return tuple(dict.fromkeys(k for op in OPS for k in op.kernels))


def optional_kernel_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for op in OPS for k in op.optional_kernels))


def claimed_kernels(backend_key: str) -> tuple[str, ...]:
    """The required kernels a backend must define, from the ops that list it."""
    return tuple(dict.fromkeys(k for op in OPS if backend_key in op.backends for k in op.kernels))
