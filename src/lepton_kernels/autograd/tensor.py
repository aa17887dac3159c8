"""Tensor: an array with a gradient, and the reverse-mode engine.

A Tensor wraps a NumPy or CuPy array (``.data``). Operations on Tensors that
require gradients record a :class:`Function` node; ``backward()`` walks the
recorded graph in reverse topological order and accumulates gradients into
the ``.grad`` of leaf tensors (as PyTorch: repeated ``backward()`` calls add
up until ``zero_grad()``).
"""
from __future__ import annotations

import sys
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

    @classmethod
    def _wrap(cls, data: np.ndarray) -> "Tensor":
        """A Tensor over an ndarray already known to be one (the constructor's checks skipped)."""
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._node = data, None, False, None
        return t

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
        return self.reshape(flat_shape(self.shape, start_dim, end_dim))


def flat_shape(shape: tuple, start_dim: int, end_dim: int) -> tuple:
    """``shape`` with dims start_dim..end_dim merged into one (the rule of ``torch.flatten``)."""
    ndim = len(shape)
    start, end = start_dim % ndim if ndim else 0, end_dim % ndim if ndim else 0
    merged = 1
    for n in shape[start:end + 1]:
        merged *= int(n)
    return shape[:start] + (merged,) + shape[end + 1:]


def _function(name):
    from . import functions  # functions imports Tensor: resolve at call time

    return getattr(functions, name).apply


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors that need a gradient, each after every tensor computed from it (root first)."""
    order, seen = [], {id(root)}
    stack = [(root, _grad_parents(root))]
    while stack:  # iterative DFS: deep graphs must not hit the recursion limit
        tensor, parents = stack[-1]
        for parent in parents:
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append((parent, _grad_parents(parent)))
                break
        else:  # every parent done: post-order
            stack.pop()
            order.append(tensor)
    order.reverse()
    return order


def _grad_parents(tensor):
    node = tensor._node
    if node is None:
        return iter(())
    return iter([p for p in node.inputs if isinstance(p, Tensor) and p.requires_grad])


def _run_backward(root: Tensor, grad) -> None:
    grads = {id(root): grad}
    owned = set()  # ids of tensors whose pending gradient is an array nothing else references
    for tensor in _topological_order(root):
        key = id(tensor)
        g = grads.pop(key, None)
        if g is None:
            continue
        node = tensor._node
        if node is None:
            _accumulate_leaf(tensor, g, key in owned)
            continue
        input_grads = node.backward(g)
        for parent, pg in zip(node.inputs, input_grads):
            if pg is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                continue
            k = id(parent)
            if k not in grads:
                grads[k] = pg
                if node.fresh_grads:
                    owned.add(k)
            elif k in owned and _can_add_into(grads[k], pg):
                grads[k] += pg
            else:
                grads[k] = grads[k] + pg
                owned.add(k)


def _can_add_into(buf, g) -> bool:
    """Whether ``buf += g`` gives exactly ``buf + g`` (same array type, shape and dtype, writeable)."""
    return (type(buf) is np.ndarray and type(g) is np.ndarray and buf.shape == g.shape
            and buf.dtype == g.dtype and buf.flags.writeable)


def _accumulate_leaf(tensor: Tensor, g, owned: bool) -> None:
    """Add ``g`` into ``tensor.grad``.

    The first gradient is kept without a copy only when ``owned`` (a fresh array
    no other node or caller references); later ones add in place only into a
    buffer that nothing but the tensor references (the reference count says so),
    so an array the user holds, or a view of it, never changes under them.
    """
    buf = tensor.grad
    if buf is None:
        tensor.grad = g if owned else g.copy()
    elif _can_add_into(buf, g) and sys.getrefcount(buf) <= _SOLE_OWNER_REFS:
        buf += g
    else:
        tensor.grad = buf + g


# references to a ``.grad`` array held by nothing else, seen from _accumulate_leaf:
# the tensor's attribute, the local name and getrefcount's argument
_SOLE_OWNER_REFS = 3
