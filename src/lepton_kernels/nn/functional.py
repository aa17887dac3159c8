"""``torch.nn.functional`` on lepton Tensors: layers whose forward and backward call the
library's kernels (conv2d, linear, ReLU, pooling) and the usual losses.

Each Function records what its backward needs; a layer with ``activation="relu"``
runs the fused kernel forward and masks the gradient with its own output.
"""
from __future__ import annotations

import numbers
import threading
from contextlib import contextmanager

import numpy as np

from .. import ops
from ..autograd import Function, Tensor, is_grad_enabled
from ..ops import _arrays as arr
from ..ops.loss import cross_entropy_parts


# --------------------------------------------------------------------------- layers
class _Conv2d(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x, weight, bias, stride, padding, dilation, groups, activation):
        self.saved = (x, weight)
        self.geometry = (stride, padding, dilation, groups)
        self.activation = activation
        self.y = ops.conv2d(x, weight, bias, stride, padding, dilation, groups, activation=activation)
        return self.y

    def backward(self, grad):
        x, weight = self.saved
        gx, gw, gb = ops.conv2d_backward(
            grad, x, weight, *self.geometry, activation=self.activation,
            output=self.y if self.activation else None, needs_input_grad=self.needs[0],
            needs_weight_grad=self.needs[1], needs_bias_grad=len(self.needs) > 2 and self.needs[2])
        return gx, gw, gb


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """2-D convolution on Tensors (see :func:`lepton_kernels.conv2d`); ``activation="relu"`` fuses ReLU."""
    return _Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         activation=activation)


class _Linear(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x, weight, bias, activation):
        self.saved = (x, weight)
        self.activation = activation
        self.y = ops.linear(x, weight, bias, activation=activation)
        return self.y

    def backward(self, grad):
        x, weight = self.saved
        return ops.linear_backward(
            grad, x, weight, activation=self.activation, output=self.y if self.activation else None,
            needs_input_grad=self.needs[0], needs_weight_grad=self.needs[1],
            needs_bias_grad=len(self.needs) > 2 and self.needs[2])


def linear(x, weight, bias=None, *, activation=None):
    """``x @ weight.T + bias`` on Tensors; ``activation="relu"`` fuses ReLU into the GEMM."""
    return _Linear.apply(x, weight, bias, activation=activation)


class _ReLU(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x):
        self.y = ops.relu(x)
        return self.y

    def backward(self, grad):
        return (ops.relu_backward(grad, self.y),)


def relu(x):
    """max(x, 0) on a Tensor (NaN propagates)."""
    return _ReLU.apply(x)


class _Activation(Function):
    """relu6, leaky_relu, sigmoid, tanh, silu, gelu or hardswish: ``ops.<name>`` forward and
    ``ops.<name>_backward`` from the input, or from the output for sigmoid and tanh."""

    fresh_grads = True  # backward returns new arrays only
    _FROM_OUTPUT = ("sigmoid", "tanh")

    def forward(self, x, name, extra):
        self.name, self.extra = name, extra
        y = getattr(ops, name)(x, *extra)
        self.saved = y if name in self._FROM_OUTPUT else x
        return y

    def backward(self, grad):
        return (getattr(ops, self.name + "_backward")(grad, self.saved, *self.extra),)


def _activation(name, x, *extra):
    return _Activation.apply(x, name=name, extra=extra)


def relu6(x):
    """``min(max(x, 0), 6)`` on Tensors (see :func:`lepton_kernels.relu6`)."""
    return _activation("relu6", x)


def leaky_relu(x, negative_slope=0.01):
    """``x if x > 0 else negative_slope * x`` on Tensors."""
    return _activation("leaky_relu", x, negative_slope)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` on Tensors."""
    return _activation("sigmoid", x)


def tanh(x):
    """``tanh(x)`` on Tensors."""
    return _activation("tanh", x)


def silu(x):
    """``x * sigmoid(x)`` on Tensors."""
    return _activation("silu", x)


def gelu(x, approximate="none"):
    """GELU on Tensors, the erf form or ``approximate="tanh"``."""
    return _activation("gelu", x, approximate)


def hardswish(x):
    """``x * relu6(x + 3) / 6`` on Tensors."""
    return _activation("hardswish", x)


class _MaxPool2d(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x, kernel_size, stride, padding, dilation, ceil_mode):
        self.shape = tuple(x.shape)
        if not self.recording:  # inference: no indices to keep
            return ops.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        y, self.indices = ops.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        return y

    def backward(self, grad):
        return (ops.max_pool2d_backward(arr.xp_of(grad).ascontiguousarray(grad), self.indices, self.shape),)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling on a Tensor; the backward scatters through the saved indices."""
    return _MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                            ceil_mode=ceil_mode)


class _AvgPool2d(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        self.shape = tuple(x.shape)
        self.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        return ops.avg_pool2d(x, *self.args)

    def backward(self, grad):
        return (ops.avg_pool2d_backward(arr.xp_of(grad).ascontiguousarray(grad), self.shape, *self.args),)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling on a Tensor."""
    return _AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                            count_include_pad=count_include_pad, divisor_override=divisor_override)


_shard = threading.local()


@contextmanager
def batch_shard(start, stop, total):
    """Declare that the batch axis of the inputs is rows ``[start, stop)`` of a global batch of ``total`` rows.

    Data-parallel training (:class:`lepton_kernels.distributed.DistributedDataParallel`)
    runs each process on its slice of a global batch. Inside this context random
    layers (:func:`dropout`) draw their values for the whole global batch from
    their generator and keep rows ``start:stop``, so the processes together use
    the masks one process would draw for the global batch, and every process's
    generator stays in the same state. Contexts nest; the setting is per thread.

    Raises
    ------
    TypeError, ValueError
        Bounds not ints with ``0 <= start <= stop <= total``.
    """
    bounds = (start, stop, total)
    if any(isinstance(b, bool) or not isinstance(b, numbers.Integral) for b in bounds):
        raise TypeError(f"batch_shard: start, stop and total must be ints; got {bounds!r}")
    if not 0 <= start <= stop <= total:
        raise ValueError(f"batch_shard: expected 0 <= start <= stop <= total; got start={start}, stop={stop}, "
                         f"total={total}")
    previous = getattr(_shard, "rows", None)
    _shard.rows = tuple(int(b) for b in bounds)
    try:
        yield
    finally:
        _shard.rows = previous


def _uniform_rows(rng, shape):
    """``rng.random(shape)``, or this process's rows of the global batch's draw inside :func:`batch_shard`."""
    rows = getattr(_shard, "rows", None)
    if rows is None:
        return rng.random(shape)
    start, stop, total = rows
    if len(shape) == 0 or shape[0] != stop - start:
        raise ValueError(f"dropout: inside batch_shard({start}, {stop}, {total}) the input's axis 0 must hold "
                         f"the {stop - start} rows of this process's slice; got shape {tuple(shape)}")
    return rng.random((total,) + tuple(shape[1:]))[start:stop]


class _Dropout(Function):
    fresh_grads = True  # backward returns new arrays only

    def forward(self, x, p, rng):
        xp = arr.xp_of(x)
        keep = _uniform_rows(rng, x.shape) >= p
        self.scale = (keep / (1.0 - p)).astype(x.dtype)
        if xp is not np:
            self.scale = xp.asarray(self.scale)
        return x * self.scale

    def backward(self, grad):
        return (grad * self.scale,)


_default_rng = np.random.default_rng()


def dropout(x, p=0.5, training=True, *, rng=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (identity when not training).

    ``rng`` (a ``numpy.random.Generator``) makes the mask reproducible. Inside
    :func:`batch_shard` the mask is this process's rows of the global batch's mask.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return _Dropout.apply(x, p=p, rng=rng or _default_rng)


class _FakeQuantize(Function):
    """Quantize-dequantize forward; straight-through backward inside the representable range."""

    fresh_grads = True

    def forward(self, x, scale, zero_point, dtype, axis):
        y = ops.fake_quantize(x, scale, zero_point, dtype=dtype, axis=axis)
        xp = arr.xp_of(x)
        lo, hi = (-128, 127) if np.dtype(dtype) == np.int8 else (0, 255)
        shape = [1] * x.ndim
        if axis is not None:
            shape[axis % x.ndim] = -1
        s = xp.asarray(np.asarray(scale, np.float32).reshape(shape if np.ndim(scale) else ()))
        z = xp.asarray(np.asarray(zero_point, np.float32).reshape(shape if np.ndim(zero_point) else ()))
        v = xp.rint(x.astype(np.float32) / s) + z
        self.mask = ((v >= lo) & (v <= hi)).astype(x.dtype)  # NaN compares False: no gradient
        return y.astype(x.dtype, copy=False)

    def backward(self, grad):
        return (grad * self.mask,)


def fake_quantize(x, scale, zero_point, *, dtype=np.int8, axis=None):
    """Fake quantization for quantization-aware training (see :func:`lepton_kernels.fake_quantize`).

    The gradient passes straight through where ``round(x / scale) + zero_point``
    lies inside the type's range and is zero where it saturates (as
    ``torch.fake_quantize_per_tensor_affine``).
    """
    return _FakeQuantize.apply(x, scale=scale, zero_point=zero_point, dtype=dtype, axis=axis)


# --------------------------------------------------------------------------- losses
def _reduce(loss, reduction, op):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


class _CrossEntropy(Function):
    """Fused log-softmax + NLL kernel: per-row losses and d loss / d logits in one pass."""

    fresh_grads = True

    def forward(self, logits, target, weight, ignore_index, reduction, label_smoothing):
        with_grad = is_grad_enabled() and self.needs[0]
        losses, self.dlogits, self.divisor, _ = cross_entropy_parts(
            "cross_entropy", logits, target, weight, ignore_index, reduction, label_smoothing, with_grad=with_grad)
        self.reduction = reduction
        if reduction == "none":
            return losses
        total = losses.sum()
        return total / self.divisor if reduction == "mean" else total

    def backward(self, grad):
        scale = grad[:, None] if self.reduction == "none" else grad / self.divisor
        return (self.dlogits * scale, None, None)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits (N, C) against class indices (N,), as ``torch.nn.functional.cross_entropy``.

    Runs the library's fused log-softmax + NLL kernel. ``weight`` rescales classes;
    targets equal to ``ignore_index`` contribute nothing; ``label_smoothing`` mixes
    the target with the uniform distribution; "mean" divides by the total weight of
    the kept targets.
    """
    target = target.data if isinstance(target, Tensor) else target
    weight = weight.data if isinstance(weight, Tensor) else weight
    return _CrossEntropy.apply(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error ``(input - target)^2``."""
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


class _BCEWithLogits(Function):
    """Per element ``loss = -(pw * t * log s(z) + (1 - t) * log(1 - s(z)))`` with s the sigmoid, and
    its derivatives as torch: ``d/dz = pw * t * (s - 1) + (1 - t) * s``,
    ``d/dt = log(1 - s(z)) - pw * log s(z)`` (``-z`` when pw is 1)."""

    fresh_grads = True

    def forward(self, logits, target, pos_weight):
        xp = arr.xp_of(logits)
        # log(1 + exp(-|z|)) keeps the loss finite for large |z|
        softplus_neg = xp.log1p(xp.exp(-xp.abs(logits)))
        log_sig = xp.minimum(logits, 0) - softplus_neg          # log(sigmoid(z))
        log_one_minus = xp.minimum(-logits, 0) - softplus_neg   # log(1 - sigmoid(z))
        pw = 1.0 if pos_weight is None else pos_weight
        sig = xp.exp(log_sig)
        self.dgrad = (pw * target * (sig - 1) + (1 - target) * sig).astype(logits.dtype)
        if self.recording and self.needs[1]:
            dtype = target.dtype if np.issubdtype(target.dtype, np.floating) else logits.dtype
            self.dtarget = (log_one_minus - pw * log_sig).astype(dtype)
        return (-(pw * target * log_sig + (1 - target) * log_one_minus)).astype(logits.dtype)

    def backward(self, grad):
        return (grad * self.dgrad if self.needs[0] else None,
                grad * self.dtarget if self.needs[1] else None, None)


def binary_cross_entropy_with_logits(input, target, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy, numerically stable, as the torch function.

    Differentiable with respect to ``input`` and ``target`` (a Tensor with
    ``requires_grad``): ``d loss / d target = log(1 - sigmoid(input)) -
    pos_weight * log(sigmoid(input))`` per element, divided by the element count
    for "mean". ``pos_weight`` (broadcast over the last axis) is a constant; as in
    torch, a ``pos_weight`` that requires grad is refused.
    """
    target_data = target.data if isinstance(target, Tensor) else target
    if tuple(target_data.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target shape {tuple(target_data.shape)} must match "
                         f"input shape {tuple(input.shape)}")
    if isinstance(pos_weight, Tensor) and pos_weight.requires_grad:
        raise ValueError("binary_cross_entropy_with_logits: pos_weight must be a constant (torch does not "
                         "differentiate with respect to it); got a Tensor with requires_grad=True")
    return _reduce(_BCEWithLogits.apply(input, target, pos_weight), reduction,
                   "binary_cross_entropy_with_logits")


__all__ = ["conv2d", "linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "hardswish",
           "max_pool2d", "avg_pool2d", "dropout", "batch_shard", "fake_quantize",
           "cross_entropy",
           "mse_loss",
           "binary_cross_entropy_with_logits", "is_grad_enabled"]
