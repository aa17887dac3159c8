"""Tensor: an array with a gradient, and the reverse-mode engine.

A Tensor wraps a NumPy or CuPy array (``.data``). Operations on Tensors that
require gradients record a :class:`Function` node; ``backward()`` walks the
recorded graph in reverse topological order and accumulates gradients into
the ``.grad`` of leaf tensors (as PyTorch: repeated ``backward()`` calls add
up until ``zero_grad()``).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from ..ops import _arrays as arr

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextmanager
def no_grad():
    """Context manager: operations inside record no graph (inference, optimizer steps)."""
    previous = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


def _as_array(data, dtype=None):
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, (int, float, bool, list, tuple)):
        return np.asarray(data, dtype=dtype or np.float32)
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise TypeError(f"Tensor: data must be an array (numpy or cupy), got {type(data).__name__}")
    return data


class Tensor:
    """An array with an optional gradient.

    Parameters
    ----------
    data : numpy.ndarray, cupy.ndarray or a Python number/list
        Stored as is (no copy); Python values become float32 arrays.
    requires_grad : bool
        Whether ``backward()`` computes a gradient for this tensor.
    """

    __array_priority__ = 1000  # numpy scalars/arrays defer to Tensor's operators

    def __init__(self, data, requires_grad: bool = False):
        self.data = _as_array(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None  # the Function that produced this tensor (None for leaves)

    # ------------------------------------------------------------------ properties
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def device(self) -> str:
        return "cpu" if isinstance(self.data, np.ndarray) else "cuda"

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU when needed)."""
        data = self.data
        return data if isinstance(data, np.ndarray) else data.get()

    def item(self):
        return self.numpy().item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data, requires_grad=False)

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad``.

        Parameters
        ----------
        grad : array, optional
            Gradient of the final objective with respect to this tensor;
            defaults to 1 for a single-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no graph was recorded)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward: grad must be given for a non-scalar tensor of shape {self.shape}")
            grad = arr.xp_of(self.data).ones(self.data.shape, dtype=self.data.dtype)
        else:
            grad = _as_array(grad)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad must have shape {self.shape}, got {tuple(grad.shape)}")
        _run_backward(self, grad)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return _function("Add")(self, other)

    def __radd__(self, other):
        return _function("Add")(other, self)

    def __sub__(self, other):
        return _function("Sub")(self, other)

    def __rsub__(self, other):
        return _function("Sub")(other, self)

    def __mul__(self, other):
        return _function("Mul")(self, other)

    def __rmul__(self, other):
        return _function("Mul")(other, self)

    def __truediv__(self, other):
        return _function("Div")(self, other)

    def __rtruediv__(self, other):
        return _function("Div")(other, self)

    def __neg__(self):
        return _function("Neg")(self)

    def __matmul__(self, other):
        return _function("MatMul")(self, other)

    def __rmatmul__(self, other):
        return _function("MatMul")(other, self)

    def sum(self, axis=None, keepdims=False):
        return _function("Sum")(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _function("Mean")(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _function("Reshape")(self, shape=shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        """Merge dims start_dim..end_dim (as ``torch.flatten``)."""
        ndim = self.ndim
        start, end = start_dim % ndim if ndim else 0, end_dim % ndim if ndim else 0
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1], dtype=np.int64)),) + self.shape[end + 1:]
        return self.reshape(shape)


def _function(name):
    from . import functions  # functions imports Tensor: resolve at call time

    return getattr(functions, name).apply


def _topological_order(root: Tensor) -> list[Tensor]:
    order, seen, stack = [], set(), [(root, False)]
    while stack:  # iterative DFS: deep graphs must not hit the recursion limit
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node.inputs:
                if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    return order[::-1]


def _run_backward(root: Tensor, grad) -> None:
    grads = {id(root): grad}
    for tensor in _topological_order(root):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        if tensor._node is None:  # a leaf: own a copy, gradients may be shared views
            tensor.grad = g.copy() if tensor.grad is None else tensor.grad + g
            continue
        node = tensor._node
        input_grads = node.backward(g)
        for parent, pg in zip(node.inputs, input_grads):
            if pg is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                continue
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
