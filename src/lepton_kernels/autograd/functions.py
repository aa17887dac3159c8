"""Differentiable functions: each keeps its forward and backward side by side.

``Function.apply(*inputs, **options)`` runs ``forward`` on the arrays inside the
Tensor inputs (other inputs are constants) and, when gradients are enabled and
an input requires one, records the node so ``backward`` can later map the
output's gradient to one gradient per input (None where there is none).
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ops import _arrays as arr
from .tensor import Tensor, is_grad_enabled


class Function:
    """Base class: subclasses define ``forward(self, *arrays, **options)`` and ``backward(self, grad)``.

    A subclass sets ``fresh_grads = True`` when every array its backward returns
    is newly allocated and referenced nowhere else (not an input, not a saved
    array, not one returned twice): the engine then hands such a gradient to a
    leaf without copying it.
    """

    fresh_grads = False

    def __init__(self):
        self.inputs: tuple = ()
        self.needs: tuple[bool, ...] = ()  # which inputs need a gradient

    @classmethod
    def apply(cls, *inputs, **options):
        fn = cls()
        fn.needs = needs = tuple([isinstance(a, Tensor) and a.requires_grad for a in inputs])
        record = True in needs and is_grad_enabled()
        fn.recording = record  # a forward may skip saving what only its backward needs
        out = fn.forward(*[a.data if isinstance(a, Tensor) else a for a in inputs], **options)
        if type(out) is not np.ndarray:
            if isinstance(out, np.generic):  # NumPy reductions return scalars; keep 0-d arrays
                out = np.asarray(out)
            return _result(Tensor(out), fn, inputs, record)
        return _result(Tensor._wrap(out), fn, inputs, record)

    def forward(self, *arrays, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError


def _result(result, fn, inputs, record):
    if record:  # only a recorded node keeps its inputs (and what forward saved) alive
        result.requires_grad = True
        fn.inputs = inputs
        result._node = fn
    return result


def _shape(a):
    return tuple(np.shape(a)) if not hasattr(a, "shape") else tuple(a.shape)


def unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to ``shape``."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


_LARGE_BYTES = 1 << 20  # the size from which the native allocator caches results (csrc/bind_alloc.cpp)


def _binary(ufunc, a, b):
    """``ufunc(a, b)``; a large NumPy result is written into a block of the ops' result cache,
    so a training step does not fault in (and zero) fresh pages for it at every step."""
    if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype and (
            a.nbytes >= _LARGE_BYTES or b.nbytes >= _LARGE_BYTES):
        return ufunc(a, b, out=arr.empty(a, np.broadcast_shapes(a.shape, b.shape), a.dtype))
    return ufunc(a, b)


class Add(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return _binary(np.add, a, b)

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(grad, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (_shape(a), _shape(b))
        return _binary(np.subtract, a, b)

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(-grad, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return _binary(np.multiply, a, b)

    def backward(self, grad):
        return (self._times(grad, self.b, self.a) if self.needs[0] else None,
                self._times(grad, self.a, self.b) if self.needs[1] else None)

    @staticmethod
    def _times(grad, other, this):
        """unbroadcast(grad * other, shape of this), skipping the product when grad is
        all ones spread by broadcasting (``(a * b).sum()``): then it is ``other`` itself."""
        if _is_broadcast_one(grad) and type(other) is np.ndarray and other.shape == grad.shape \
                and np.result_type(grad, other) == other.dtype:
            return unbroadcast(other, _shape(this))
        return unbroadcast(grad * other, _shape(this))


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        return (unbroadcast(grad / self.b, _shape(self.a)) if self.needs[0] else None,
                unbroadcast(-grad * self.a / (self.b * self.b), _shape(self.b)) if self.needs[1] else None)


class Neg(Function):
    fresh_grads = True

    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


def _is_broadcast_one(grad) -> bool:
    """A NumPy array whose elements are all one value 1 through stride 0 (as Sum's gradient)."""
    return (type(grad) is np.ndarray and grad.size > 0 and not any(grad.strides)
            and grad[(0,) * grad.ndim] == 1)


def _is_float_matrix(a):
    return getattr(a, "ndim", 0) == 2 and a.dtype in (np.float32, np.float64)


class MatMul(Function):
    """a @ b; 2-D float operands use the library's GEMM."""

    def forward(self, a, b):
        self.a, self.b = a, b
        if _is_float_matrix(a) and _is_float_matrix(b) and a.dtype == b.dtype:
            return ops.matmul(a, b)
        return arr.xp_of(a).matmul(a, b)

    def backward(self, grad):
        a, b = self.a, self.b
        xp = arr.xp_of(grad)
        ga = gb = None
        if self.needs[0]:
            ga = unbroadcast(self._mm(grad, xp.swapaxes(b, -1, -2) if b.ndim > 1 else b[None, :], xp), _shape(a)) \
                if b.ndim > 1 else unbroadcast(xp.multiply.outer(grad, b), _shape(a))
        if self.needs[1]:
            if a.ndim > 1 and b.ndim > 1:
                gb = unbroadcast(self._mm(xp.swapaxes(a, -1, -2), grad, xp), _shape(b))
            elif a.ndim == 1 and b.ndim > 1:
                gb = xp.multiply.outer(a, grad)
            else:
                gb = unbroadcast(self._mm(xp.swapaxes(a, -1, -2), grad[..., None], xp)[..., 0], _shape(b))
        return ga, gb

    @staticmethod
    def _mm(x, y, xp):
        if _is_float_matrix(x) and _is_float_matrix(y) and x.dtype == y.dtype:
            return ops.matmul(xp.ascontiguousarray(x), xp.ascontiguousarray(y))
        return xp.matmul(x, y)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = _shape(a), axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        return (_expand(grad, self.shape, self.axis, self.keepdims),)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = _shape(a), axis, keepdims
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, grad):
        count = int(np.prod(self.shape, dtype=np.int64)) // max(int(np.prod(grad.shape, dtype=np.int64)), 1)
        return (_expand(grad / count, self.shape, self.axis, self.keepdims),)


def _expand(grad, shape, axis, keepdims):
    """Broadcast a reduced gradient back over the reduced axes."""
    xp = arr.xp_of(grad)
    if axis is not None and not keepdims:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        grad = xp.expand_dims(grad, tuple(a % len(shape) for a in axes))
    return xp.broadcast_to(grad, shape)


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = _shape(a)
        return a.reshape(shape)

    def backward(self, grad):
        return (grad.reshape(self.shape),)
