"""DistributedDataParallel: one model replica per rank, gradients combined before each optimizer step.

Each rank runs the wrapped model on its slice ``[start, stop)`` of a global
batch of ``total`` samples. The loss each rank differentiates is the mean over
its own slice, so the gradient of the mean over the global batch is
``sum_r (n_r / total) * grad_r`` with ``n_r = stop - start``: that weighted
sum is what :meth:`DistributedDataParallel.sync_gradients` computes, in one
bucketed all-reduce. With equal slices it is the plain average of torch's DDP.
"""
from __future__ import annotations

import numpy as np

from ..data.loader import BatchShard
from ..nn import functional as F
from . import _world
from .collectives import broadcast, pack, reduce_contiguous, reduce_flat

__all__ = ["DistributedDataParallel", "BatchShard"]


def _named_buffers(model) -> list:
    """Buffers (running statistics) of models that declare them through ``named_buffers()``."""
    named = getattr(model, "named_buffers", None)
    return list(named()) if callable(named) else []


def _architecture(model) -> dict:
    config = model.config() if callable(getattr(model, "config", None)) else {"class": type(model).__name__}
    tensors = [(name, list(p.shape), str(p.dtype)) for name, p in model.named_parameters()]
    buffers = [(name, list(np.shape(b)), str(getattr(b, "dtype", ""))) for name, b in _named_buffers(model)]
    return {"config": config, "parameters": tensors, "buffers": buffers}


def _data(value):
    """The array of a parameter or buffer (autograd Tensors hold theirs in ``.data``)."""
    return getattr(value, "data", value) if not isinstance(value, np.ndarray) else value


class DistributedDataParallel:
    """Data-parallel training of ``module`` over all ranks of the MPI world.

    At construction every rank checks that the others wrap the same
    architecture (class, configuration, parameter names, shapes and dtypes;
    :class:`MismatchError` otherwise) and receives rank 0's parameters and
    buffers, so all replicas start equal. Then, per step::

        out = ddp(x, shard=loader.shard)   # this rank's slice of the global batch
        loss = loss_fn(out, y)             # mean over the slice
        loss.backward()
        ddp.sync_gradients()               # or ddp.backward(loss) for the two lines
        optimizer.step()

    Parameters
    ----------
    module : nn.Module
        The model; its parameters must be NumPy (CPU) arrays.

    Notes
    -----
    Attribute access, ``parameters()``, ``named_parameters()``,
    ``state_dict()``, ``load_state_dict()``, ``train()``, ``eval()``,
    ``zero_grad()`` and ``config()`` reach the wrapped model (``.module``), and
    state-dict keys carry no ``module.`` prefix, so a saved file is the plain
    model's. Buffers (a model's ``named_buffers()``, e.g. BatchNorm running
    statistics) are broadcast from rank 0 before each training-mode forward,
    as torch's ``broadcast_buffers=True``. The list of parameters is taken at
    construction (as torch's DDP); the gradients are reduced in a flat buffer
    allocated then.

    Raises
    ------
    TypeError
        A parameter is not a NumPy array (CUDA training over MPI is not supported).
    MismatchError
        The ranks wrap different architectures.
    RuntimeError
        A rank did not arrive within ``LEPTON_DIST_TIMEOUT`` seconds.
    """

    def __init__(self, module):
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "_weight", 1.0)
        world = _world.usable()
        params = [_data(p) for p in module.parameters()]
        for name, p in module.named_parameters():
            if not isinstance(_data(p), np.ndarray):
                raise TypeError(f"DistributedDataParallel: parameter {name} is a {type(_data(p)).__module__}."
                                f"{type(_data(p)).__name__}; data-parallel training runs on NumPy (CPU) parameters")
        _world.check_same(_architecture(module), what="models")
        broadcast(params + self._buffer_arrays(), root=0)
        object.__setattr__(self, "_world", world)
        object.__setattr__(self, "_params", module.parameters())  # fixed at construction, as torch's DDP
        object.__setattr__(self, "_grad_views", self._gradient_buffer())

    def _gradient_buffer(self):
        """Views, one per parameter, of one flat buffer (plus a flag per parameter at its end) that
        the gradients are packed into and reduced in; None when the parameters mix dtypes."""
        params = self._params
        dtype = params[0].dtype if params else None
        if dtype is None or dtype.kind != "f" or any(p.dtype != dtype for p in params):
            return None
        flat = np.empty(sum(p.size for p in params) + len(params), dtype=dtype)
        views, offset = [], 0
        for p in params:
            views.append(flat[offset:offset + p.size].reshape(p.shape))
            offset += p.size
        return flat, views

    # ------------------------------------------------------------------ forwarding to the model
    def __getattr__(self, name):
        if name == "module":  # not set yet: no recursion through self.module
            raise AttributeError(name)
        return getattr(self.module, name)

    def __setattr__(self, name, value):
        setattr(self.module, name, value)

    def parameters(self):
        return self.module.parameters()

    def named_parameters(self, prefix: str = ""):
        return self.module.named_parameters(prefix)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state, strict: bool = True):
        return self.module.load_state_dict(state, strict)

    def train(self, mode: bool = True) -> "DistributedDataParallel":
        self.module.train(mode)
        return self

    def eval(self) -> "DistributedDataParallel":
        return self.train(False)

    def zero_grad(self) -> None:
        self.module.zero_grad()

    def config(self) -> dict:
        return self.module.config()

    # ------------------------------------------------------------------ the step
    def _buffer_arrays(self) -> list[np.ndarray]:
        return [_data(b) for _, b in _named_buffers(self.module)]

    def __call__(self, *args, shard: BatchShard | tuple | None = None, **kwargs):
        return self.forward(*args, shard=shard, **kwargs)

    def forward(self, x, *args, shard: BatchShard | tuple | None = None, **kwargs):
        """Run the model on this rank's slice ``x`` of the global batch.

        Parameters
        ----------
        x : Tensor
            This rank's rows of the global batch (batch axis 0).
        shard : BatchShard or (start, stop, total), optional
            Where those rows lie in the global batch (``DataLoader.shard`` of a
            distributed loader). Default: equal slices, rank ``r`` holding rows
            ``[r * n, (r + 1) * n)`` of ``n * world_size()``.

        Notes
        -----
        Random layers (dropout) draw their masks for the whole global batch
        and keep this rank's rows, so the replicas together draw what one
        process would.
        """
        n = int(x.shape[0])
        world = self._world
        start, stop, total = shard if shard is not None else (world.rank * n, (world.rank + 1) * n, n * world.size)
        if stop - start != n or not 0 <= start <= stop <= total:
            raise ValueError(f"DistributedDataParallel: shard {(start, stop, total)} does not describe "
                             f"{n} rows of the global batch (expected 0 <= start <= stop <= total, stop - start == "
                             f"{n})")
        object.__setattr__(self, "_weight", (stop - start) / total if total else 0.0)
        buffers = self._buffer_arrays()
        if buffers and self.module.training and world.size > 1:
            broadcast(buffers, root=0)
        with F.batch_shard(start, stop, total):
            return self.module(x, *args, **kwargs)

    def sync_gradients(self) -> None:
        """Combine the gradients of all ranks in place: ``grad = sum_r (n_r / total) * grad_r``.

        One bucketed all-reduce over every parameter's gradient; call it after
        ``backward()`` and before ``optimizer.step()``. A parameter without a
        gradient on a rank (an empty slice) contributes zeros; one without a
        gradient on every rank keeps ``grad = None``, as in one process.
        Afterwards the gradients are views of one flat buffer owned by the
        wrapper (no copy back), overwritten by the next sync.
        """
        if self._world.size == 1 or not self._params:
            return
        if self._grad_views is None:
            return self._sync_mixed(self._params)
        flat, views = self._grad_views
        params = self._params
        # One flag per parameter rides in the same message; weighted like the gradients, a flag
        # sums to zero exactly when no rank with samples had that gradient.
        present = [p.grad is not None for p in params]
        pieces = [np.asarray(p.grad).reshape(-1) if has else np.zeros(p.size, flat.dtype)
                  for p, has in zip(params, present)]
        pack(flat, pieces + [np.array(present, dtype=flat.dtype)], self._weight)  # weighted in the same pass
        reduce_contiguous(flat, "sum")
        for p, view, flag in zip(params, views, flat[-len(params):].tolist()):
            p.grad = view if flag != 0 else None

    def _sync_mixed(self, params) -> None:
        """Parameters of several dtypes: the general bucketed all-reduce, one buffer per dtype."""
        present = np.array([p.grad is not None for p in params], dtype=np.float64)
        for p in params:
            if p.grad is None:
                p.grad = np.zeros(p.shape, dtype=p.dtype)
            elif not (isinstance(p.grad, np.ndarray) and p.grad.flags.c_contiguous and p.grad.flags.writeable):
                p.grad = np.ascontiguousarray(p.grad)
        reduce_flat([p.grad for p in params] + [present], "sum", scale=self._weight)
        for p, count in zip(params, present):
            if count == 0:
                p.grad = None

    def backward(self, loss) -> None:
        """``loss.backward()`` followed by :meth:`sync_gradients`."""
        loss.backward()
        self.sync_gradients()
