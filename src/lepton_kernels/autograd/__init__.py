"""A small reverse-mode autograd over the library's ops (Tensor, Function, no_grad)."""
from .functions import Function, unbroadcast
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "unbroadcast"]
