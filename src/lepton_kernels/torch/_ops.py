"""The ``lepton`` namespace of torch custom operators: the library's kernels inside torch's
dispatcher, with fake (meta) implementations and autograd through the library's public
backward ops, on CPU (NumPy views) and CUDA (CuPy views) tensors.

Registered from Python, never a C++ extension built against one torch ABI. The real
implementations call the library's ops on the (detached) tensors themselves: a CPU
tensor goes to the kernel as a DLPack capsule and its result comes back as a new torch
tensor in the same native call (the small-call path), where allocating the output with
torch and passing NumPy views as ``out=`` cost 15 us of argument checks per call. A
fake implementation allocates the same shape; output sizes come from the one C++
geometry rule (``_lepton_geometry``). Backward ops return every gradient their
``output_mask`` asks for and an empty tensor for the others (a custom op cannot return
None).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import ops as lk
from .. import _lepton_geometry as geometry

_REDUCTIONS = ("none", "mean", "sum")  # torch's enum order (at::Reduction)

# The ops are defined on one torch.library.Library (kept alive here: dropping it would
# unregister them) with the plain dispatcher API rather than torch.library.custom_op,
# whose wrappers cost 15 us per call: a CPU/CUDA kernel, a fake kernel, and an Autograd
# kernel that runs the op straight through when no gradient is wanted and through one
# autograd.Function otherwise.
_LIB = torch.library.Library("lepton", "DEF")


class _Op:
    """One ``lepton::<name>`` operator; the decorator and the two registration methods
    mirror torch.library.custom_op's (``register_fake``, ``register_autograd``)."""

    def __init__(self, name: str, schema: str, impl):
        _LIB.define(name + schema)
        for key in ("CPU", "CUDA"):
            _LIB.impl(name, impl, key)
        self.name, self.impl = name, impl

    def __call__(self, *args):
        return getattr(torch.ops.lepton, self.name)(*args)

    def register_fake(self, fake):
        torch.library.register_fake(f"lepton::{self.name}", fake, lib=_LIB)
        return fake

    def register_autograd(self, backward, *, setup_context):
        op = getattr(torch.ops.lepton, self.name).default
        function = type(f"{self.name}_autograd", (torch.autograd.Function,), {
            "forward": staticmethod(lambda ctx, *args: _forward(ctx, op, setup_context, args)),
            "backward": staticmethod(lambda ctx, *grads: backward(ctx, *grads)),
        })

        impl = self.impl

        def autograd_kernel(*args):
            if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
                return function.apply(*args)
            if all(type(a) is Tensor for a in args if isinstance(a, Tensor)) and not _tracing():
                return impl(*args)  # plain tensors, no gradient: the kernel itself, without a second dispatch
            with torch._C._AutoDispatchBelowAutograd():  # as custom_op: the backend (or fake) kernel
                return op(*args)

        _LIB.impl(self.name, autograd_kernel, "Autograd")


def _tracing() -> bool:
    """A dispatch mode is active (fake tensors, tracing, a user's mode): go through the dispatcher."""
    return torch._C._len_torch_dispatch_stack() > 0


def _forward(ctx, op, setup_context, args):
    with torch._C._AutoDispatchBelowAutograd():
        output = op(*args)
    setup_context(ctx, args, output)
    return output


def _op(name: str, schema: str):
    return lambda impl: _Op(name, schema, impl)


def _d(t: Optional[Tensor]):
    """The tensor as the kernels take it: detached (the autograd registration records the
    graph; a tensor that requires grad is refused by DLPack)."""
    return None if t is None else t.detach()


def _unused(like: Tensor) -> Tensor:
    """What a backward op returns for a gradient its output_mask did not ask for."""
    return like.new_empty((0,))


# --------------------------------------------------------------------------- relu
@_op("relu",
     "(Tensor self) -> Tensor")
def relu(self: Tensor) -> Tensor:
    return lk.relu(_d(self))


@relu.register_fake
def _(self):
    return torch.empty(self.shape, dtype=self.dtype, device=self.device)


@_op("relu_backward",
     "(Tensor grad_output, Tensor result) -> Tensor")
def relu_backward(grad_output: Tensor, result: Tensor) -> Tensor:
    return lk.relu_backward(_d(grad_output), _d(result))


@relu_backward.register_fake
def _(grad_output, result):
    return torch.empty(result.shape, dtype=result.dtype, device=result.device)


def _relu_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_grad(ctx, grad):
    (result,) = ctx.saved_tensors
    return torch.ops.lepton.relu_backward(grad, result)


relu.register_autograd(_relu_grad, setup_context=_relu_setup)


# --------------------------------------------------------------------------- linear
def _linear_shape(input, weight):
    return (*input.shape[:-1], weight.shape[0])


@_op("linear",
     "(Tensor input, Tensor weight, Tensor? bias) -> Tensor")
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return lk.linear(_d(input), _d(weight), _d(bias))


@linear.register_fake
def _(input, weight, bias):
    return input.new_empty(_linear_shape(input, weight))


@_op("linear_backward",
     "(Tensor grad_output, Tensor input, Tensor weight, Tensor? result, bool[3] output_mask) -> (Tensor, Tensor, Tensor)")
def linear_backward(grad_output: Tensor, input: Tensor, weight: Tensor, result: Optional[Tensor],
                    output_mask: Sequence[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """``result``: the output of a fused linear + ReLU (the gradient is masked where it is <= 0), else None."""
    k, n = weight.shape[1], weight.shape[0]
    gx, gw, gb = lk.linear_backward(_d(grad_output).reshape(-1, n), _d(input).reshape(-1, k), _d(weight),
                                    activation=None if result is None else "relu",
                                    output=None if result is None else _d(result).reshape(-1, n),
                                    needs_input_grad=output_mask[0], needs_weight_grad=output_mask[1],
                                    needs_bias_grad=output_mask[2])
    return (gx.reshape(input.shape) if output_mask[0] else _unused(input),
            gw if output_mask[1] else _unused(weight), gb if output_mask[2] else _unused(weight))


@linear_backward.register_fake
def _(grad_output, input, weight, result, output_mask):
    return (input.new_empty(input.shape) if output_mask[0] else _unused(input),
            weight.new_empty(weight.shape) if output_mask[1] else _unused(weight),
            weight.new_empty((weight.shape[0],)) if output_mask[2] else _unused(weight))


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*(t for t in inputs[:2]))
    ctx.has_bias = inputs[2] is not None
    ctx.args = inputs[3:]


def _save_inputs_and_result(ctx, inputs, output):
    """As _save_inputs, and the output of the fused ReLU that masks the gradient."""
    ctx.save_for_backward(inputs[0], inputs[1], output)
    ctx.has_bias = inputs[2] is not None
    ctx.args = inputs[3:]


def _mask(ctx):
    return [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]


def _gradients(ctx, grads):
    mask = _mask(ctx)
    gx, gw, gb = grads
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None)


def _linear_grad(ctx, grad):
    input, weight, *result = ctx.saved_tensors
    grads = torch.ops.lepton.linear_backward(grad, input, weight, result[0] if result else None, _mask(ctx))
    return _gradients(ctx, grads)


linear.register_autograd(_linear_grad, setup_context=_save_inputs)


@_op("linear_relu",
     "(Tensor input, Tensor weight, Tensor? bias) -> Tensor")
def linear_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """relu(linear(...)) in one kernel (the ReLU in the GEMM's output write)."""
    return lk.linear(_d(input), _d(weight), _d(bias), activation="relu")


@linear_relu.register_fake
def _(input, weight, bias):
    return input.new_empty(_linear_shape(input, weight))


linear_relu.register_autograd(_linear_grad, setup_context=_save_inputs_and_result)


# --------------------------------------------------------------------------- conv2d
def _conv_shape(input, weight, stride, padding, dilation, groups):
    oh, ow = geometry.conv2d_output_size("conv2d", tuple(input.shape), tuple(weight.shape), stride[0], stride[1],
                                         padding[0], padding[0], padding[1], padding[1], dilation[0], dilation[1],
                                         groups)
    return (input.shape[0], weight.shape[0], oh, ow)


@_op("conv2d",
     "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor")
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int], groups: int) -> Tensor:
    return lk.conv2d(_d(input), _d(weight), _d(bias), tuple(stride), tuple(padding), tuple(dilation), groups)


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    return input.new_empty(_conv_shape(input, weight, stride, padding, dilation, groups))


@_op("conv2d_backward",
     "(Tensor grad_output, Tensor input, Tensor weight, Tensor? result, int[2] stride, int[2] padding, int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)")
def conv2d_backward(grad_output: Tensor, input: Tensor, weight: Tensor, result: Optional[Tensor],
                    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                    output_mask: Sequence[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """``result``: the output of a fused conv2d + ReLU (the gradient is masked where it is <= 0), else None."""
    gx, gw, gb = lk.conv2d_backward(_d(grad_output), _d(input), _d(weight), tuple(stride), tuple(padding),
                                    tuple(dilation), groups, activation=None if result is None else "relu",
                                    output=_d(result), needs_input_grad=output_mask[0],
                                    needs_weight_grad=output_mask[1], needs_bias_grad=output_mask[2])
    return (gx if output_mask[0] else _unused(input), gw if output_mask[1] else _unused(weight),
            gb if output_mask[2] else _unused(weight))


@conv2d_backward.register_fake
def _(grad_output, input, weight, result, stride, padding, dilation, groups, output_mask):
    return (input.new_empty(input.shape) if output_mask[0] else _unused(input),
            weight.new_empty(weight.shape) if output_mask[1] else _unused(weight),
            weight.new_empty((weight.shape[0],)) if output_mask[2] else _unused(weight))


def _conv_grad(ctx, grad):
    input, weight, *result = ctx.saved_tensors
    grads = torch.ops.lepton.conv2d_backward(grad, input, weight, result[0] if result else None, *ctx.args,
                                             _mask(ctx))
    return (*_gradients(ctx, grads), None, None, None, None)


conv2d.register_autograd(_conv_grad, setup_context=_save_inputs)


@_op("conv2d_relu",
     "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor")
def conv2d_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    """relu(conv2d(...)) in one kernel (the ReLU in the convolution's output write)."""
    return lk.conv2d(_d(input), _d(weight), _d(bias), tuple(stride), tuple(padding), tuple(dilation), groups,
                     activation="relu")


@conv2d_relu.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    return input.new_empty(_conv_shape(input, weight, stride, padding, dilation, groups))


conv2d_relu.register_autograd(_conv_grad, setup_context=_save_inputs_and_result)


# --------------------------------------------------------------------------- pooling
def _pool_shape(input, kernel_size, stride, padding, dilation, ceil_mode):
    oh, ow = geometry.pool2d_output_size("max_pool2d", tuple(input.shape), kernel_size[0], kernel_size[1],
                                         stride[0], stride[1], padding[0], padding[0], padding[1], padding[1],
                                         dilation[0], dilation[1], ceil_mode)
    return (*input.shape[:-2], oh, ow)


def _stride(kernel_size, stride):
    return tuple(stride) if len(stride) else tuple(kernel_size)  # aten: an empty stride means the kernel size


@_op("max_pool2d_with_indices",
     "(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)")
def max_pool2d_with_indices(self: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                            padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> tuple[Tensor, Tensor]:
    return lk.max_pool2d(_d(self), tuple(kernel_size), _stride(kernel_size, stride), tuple(padding),
                         tuple(dilation), ceil_mode, return_indices=True)


@max_pool2d_with_indices.register_fake
def _(self, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool_shape(self, kernel_size, _stride(kernel_size, stride), padding, dilation, ceil_mode)
    return self.new_empty(shape), self.new_empty(shape, dtype=torch.int64)


@_op("max_pool2d",
     "(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor")
def max_pool2d(self: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], ceil_mode: bool) -> Tensor:
    return lk.max_pool2d(_d(self), tuple(kernel_size), _stride(kernel_size, stride), tuple(padding),
                         tuple(dilation), ceil_mode)


@max_pool2d.register_fake
def _(self, kernel_size, stride, padding, dilation, ceil_mode):
    return self.new_empty(_pool_shape(self, kernel_size, _stride(kernel_size, stride), padding, dilation, ceil_mode))


@_op("max_pool2d_backward",
     "(Tensor grad_output, Tensor indices, int[] input_shape) -> Tensor")
def max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_shape: Sequence[int]) -> Tensor:
    return lk.max_pool2d_backward(_d(grad_output), _d(indices), tuple(input_shape))


@max_pool2d_backward.register_fake
def _(grad_output, indices, input_shape):
    return grad_output.new_empty(tuple(input_shape))


def _pool_indices_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])
    ctx.input_shape = tuple(inputs[0].shape)


def _pool_indices_grad(ctx, grad, _grad_indices):
    (indices,) = ctx.saved_tensors
    return torch.ops.lepton.max_pool2d_backward(grad, indices, ctx.input_shape), None, None, None, None, None


max_pool2d_with_indices.register_autograd(_pool_indices_grad, setup_context=_pool_indices_setup)


def _max_pool_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


def _max_pool_grad(ctx, grad):
    # max_pool2d keeps no indices (inference needs none): find them again from the input
    (input,) = ctx.saved_tensors
    _, indices = torch.ops.lepton.max_pool2d_with_indices(input.detach(), *ctx.args)
    return torch.ops.lepton.max_pool2d_backward(grad, indices, tuple(input.shape)), None, None, None, None, None


max_pool2d.register_autograd(_max_pool_grad, setup_context=_max_pool_setup)


@_op("avg_pool2d",
     "(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor")
def avg_pool2d(self: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    return lk.avg_pool2d(_d(self), tuple(kernel_size), _stride(kernel_size, stride), tuple(padding), ceil_mode,
                         count_include_pad, divisor_override)


@avg_pool2d.register_fake
def _(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return self.new_empty(_pool_shape(self, kernel_size, _stride(kernel_size, stride), padding, (1, 1), ceil_mode))


@_op("avg_pool2d_backward",
     "(Tensor grad_output, int[] input_shape, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor")
def avg_pool2d_backward(grad_output: Tensor, input_shape: Sequence[int], kernel_size: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Optional[int]) -> Tensor:
    return lk.avg_pool2d_backward(_d(grad_output), tuple(input_shape), tuple(kernel_size),
                                  _stride(kernel_size, stride), tuple(padding), ceil_mode, count_include_pad,
                                  divisor_override)


@avg_pool2d_backward.register_fake
def _(grad_output, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return grad_output.new_empty(tuple(input_shape))


def _avg_pool_setup(ctx, inputs, output):
    ctx.input_shape = tuple(inputs[0].shape)
    ctx.args = inputs[1:]


def _avg_pool_grad(ctx, grad):
    return (torch.ops.lepton.avg_pool2d_backward(grad, ctx.input_shape, *ctx.args), None, None, None, None, None,
            None)


avg_pool2d.register_autograd(_avg_pool_grad, setup_context=_avg_pool_setup)


# --------------------------------------------------------------------------- cross_entropy
@_op("cross_entropy",
     "(Tensor input, Tensor target, Tensor? weight, int reduction, int ignore_index, float label_smoothing) -> Tensor")
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: int, ignore_index: int,
                  label_smoothing: float) -> Tensor:
    return lk.cross_entropy(_d(input), _d(target), _d(weight), ignore_index, _REDUCTIONS[reduction],
                            label_smoothing)


@cross_entropy.register_fake
def _(input, target, weight, reduction, ignore_index, label_smoothing):
    return input.new_empty((input.shape[0],) if _REDUCTIONS[reduction] == "none" else ())


@_op("cross_entropy_backward",
     "(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, int reduction, int ignore_index, float label_smoothing) -> Tensor")
def cross_entropy_backward(grad_output: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor],
                           reduction: int, ignore_index: int, label_smoothing: float) -> Tensor:
    return lk.cross_entropy_backward(_d(grad_output), _d(input), _d(target), _d(weight), ignore_index,
                                     _REDUCTIONS[reduction], label_smoothing)


@cross_entropy_backward.register_fake
def _(grad_output, input, target, weight, reduction, ignore_index, label_smoothing):
    return input.new_empty(input.shape)


def _cross_entropy_setup(ctx, inputs, output):
    input, target, weight = inputs[:3]
    ctx.save_for_backward(input, target, *(() if weight is None else (weight,)))
    ctx.args = inputs[3:]


def _cross_entropy_grad(ctx, grad):
    input, target, *weight = ctx.saved_tensors
    g = torch.ops.lepton.cross_entropy_backward(grad, input, target, weight[0] if weight else None, *ctx.args)
    return g, None, None, None, None, None


cross_entropy.register_autograd(_cross_entropy_grad, setup_context=_cross_entropy_setup)


# --------------------------------------------------------------------------- batch_norm
@_op("batch_norm",
     "(Tensor input, Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor? weight, Tensor? bias, "
     "bool training, float momentum, float eps, bool relu) -> Tensor")
def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor], weight: Optional[Tensor],
               bias: Optional[Tensor], training: bool, momentum: float, eps: float, relu: bool) -> Tensor:
    """torch.nn.functional.batch_norm (+ ReLU); in training the running statistics move in place."""
    return lk.batch_norm(_d(input), _d(running_mean), _d(running_var), _d(weight), _d(bias), training, momentum, eps,
                         activation="relu" if relu else None)


@batch_norm.register_fake
def _(input, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@_op("batch_norm_backward",
     "(Tensor grad_output, Tensor input, Tensor? weight, Tensor? running_mean, Tensor? running_var, bool training, "
     "float eps, Tensor? result, bool[3] output_mask) -> (Tensor, Tensor, Tensor)")
def batch_norm_backward(grad_output: Tensor, input: Tensor, weight: Optional[Tensor], running_mean: Optional[Tensor],
                        running_var: Optional[Tensor], training: bool, eps: float, result: Optional[Tensor],
                        output_mask: Sequence[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """``result``: the output of a fused batch_norm + ReLU (the gradient is masked where it is <= 0), else None."""
    gx, gw, gb = lk.batch_norm_backward(
        _d(grad_output), _d(input), _d(weight), _d(running_mean), _d(running_var), training, eps,
        activation=None if result is None else "relu", output=_d(result), needs_input_grad=output_mask[0],
        needs_weight_grad=output_mask[1], needs_bias_grad=output_mask[2])
    return (gx if gx is not None else _unused(input), gw if gw is not None else _unused(input),
            gb if gb is not None else _unused(input))


@batch_norm_backward.register_fake
def _(grad_output, input, weight, running_mean, running_var, training, eps, result, output_mask):
    c = input.shape[1]
    return (torch.empty_like(input, memory_format=torch.contiguous_format) if output_mask[0] else _unused(input),
            input.new_empty((c,)) if output_mask[1] and weight is not None else _unused(input),
            input.new_empty((c,)) if output_mask[2] else _unused(input))


def _batch_norm_setup(ctx, inputs, output):
    input, running_mean, running_var, weight, bias, training, momentum, eps, relu = inputs
    ctx.save_for_backward(input, weight, running_mean, running_var, output if relu else None)
    ctx.training, ctx.eps = training, eps
    ctx.has = (weight is not None, bias is not None)


def _batch_norm_grad(ctx, grad):
    input, weight, running_mean, running_var, result = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.has[0] and ctx.needs_input_grad[3], ctx.has[1] and ctx.needs_input_grad[4]]
    gx, gw, gb = torch.ops.lepton.batch_norm_backward(grad, input, weight, running_mean, running_var, ctx.training,
                                                      ctx.eps, result, mask)
    return (gx if mask[0] else None, None, None, gw if mask[1] else None, gb if mask[2] else None,
            None, None, None, None)


batch_norm.register_autograd(_batch_norm_grad, setup_context=_batch_norm_setup)


# --------------------------------------------------------------------------- activations
# kind: relu6, leaky_relu (param: negative slope), sigmoid, tanh, silu, gelu, gelu_tanh,
# hardswish; the backward takes the input, or the output for sigmoid and tanh.
_FROM_OUTPUT = ("sigmoid", "tanh")


def _activation_call(kind: str, param: float):
    if kind == "leaky_relu":
        return "leaky_relu", (param,)
    if kind in ("gelu", "gelu_tanh"):
        return "gelu", ("tanh" if kind == "gelu_tanh" else "none",)
    return kind, ()


@_op("activation", "(Tensor self, str kind, float param) -> Tensor")
def activation(self: Tensor, kind: str, param: float) -> Tensor:
    name, extra = _activation_call(kind, param)
    return getattr(lk, name)(_d(self), *extra)


@activation.register_fake
def _(self, kind, param):
    return torch.empty(self.shape, dtype=self.dtype, device=self.device)


@_op("activation_backward", "(Tensor grad_output, Tensor saved, str kind, float param) -> Tensor")
def activation_backward(grad_output: Tensor, saved: Tensor, kind: str, param: float) -> Tensor:
    name, extra = _activation_call(kind, param)
    return getattr(lk, name + "_backward")(_d(grad_output), _d(saved), *extra)


@activation_backward.register_fake
def _(grad_output, saved, kind, param):
    return torch.empty(saved.shape, dtype=saved.dtype, device=saved.device)


def _activation_setup(ctx, inputs, output):
    self, kind, param = inputs
    ctx.save_for_backward(output if kind in _FROM_OUTPUT else self)
    ctx.kind, ctx.param = kind, param


def _activation_grad(ctx, grad):
    (saved,) = ctx.saved_tensors
    return torch.ops.lepton.activation_backward(grad, saved, ctx.kind, ctx.param), None, None


activation.register_autograd(_activation_grad, setup_context=_activation_setup)
