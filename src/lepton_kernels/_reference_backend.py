"""The float64 reference as a CPU backend (``LEPTON_BACKEND=reference``): slow, for debugging.

Adapts the kernel interface of _backend to the public-signature functions of
:mod:`lepton_kernels.reference` and casts results to the output dtype.
"""
from __future__ import annotations

import numpy as np

from . import reference as ref


def unavailable_reason():
    return None


def relu(x, out):
    out[...] = ref.relu(x)


def relu_backward(grad_out, x, out):
    out[...] = ref.relu_backward(grad_out, x)


def bias_relu(x3, bias, out3):
    out3[...] = ref.bias_relu(x3, bias)


def bias_relu_backward(grad_out3, y3, grad_x3, grad_bias):
    gx, gb = ref.bias_relu_backward(grad_out3, y3, needs_bias_grad=grad_bias is not None)
    grad_x3[...] = gx
    if grad_bias is not None:
        grad_bias[...] = gb


def _args(p):
    padding = ((p.pad_top, p.pad_bottom), (p.pad_left, p.pad_right))
    return (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w), padding


def _fit(result, shape):
    """The reference sizes its outputs itself; they must agree with the op's."""
    if result.shape[2:] == tuple(shape[2:]):
        return result
    raise ValueError(f"reference produced {result.shape}, expected {tuple(shape)}")


def max_pool2d(x, out, indices, p):
    k, s, pad = _args(p)
    ceil = _needs_ceil(x.shape, out.shape, p)
    y, idx = ref.max_pool2d(x, k, s, pad, (p.dilation_h, p.dilation_w), ceil, return_indices=True)
    out[...] = _fit(y, out.shape)
    if indices is not None:
        indices[...] = idx


def max_pool2d_backward(grad_out, indices, grad_in, p):
    grad_in[...] = ref.max_pool2d_backward(grad_out, indices, grad_in.shape)


def avg_pool2d(x, out, p):
    k, s, pad = _args(p)
    ceil = _needs_ceil(x.shape, out.shape, p)
    out[...] = _fit(ref.avg_pool2d(x, k, s, pad, ceil, p.count_include_pad, p.divisor_override or None),
                    out.shape)


def avg_pool2d_backward(grad_out, grad_in, p):
    k, s, pad = _args(p)
    ceil = _needs_ceil(grad_in.shape, grad_out.shape, p)
    grad_in[...] = ref.avg_pool2d_backward(grad_out, grad_in.shape, k, s, pad, ceil,
                                           p.count_include_pad, p.divisor_override or None)


def _needs_ceil(in_shape, out_shape, p) -> bool:
    """Whether the op's output size came from ceil mode (the interface passes sizes, not the flag)."""
    floor_h = ref.pool_output_size(in_shape[2], p.kernel_h, p.stride_h, p.pad_top, p.pad_bottom,
                                   p.dilation_h, False)
    floor_w = ref.pool_output_size(in_shape[3], p.kernel_w, p.stride_w, p.pad_left, p.pad_right,
                                   p.dilation_w, False)
    return (floor_h, floor_w) != tuple(out_shape[2:])


def matmul(a, b, out):
    out[...] = ref.matmul(a, b)


def linear(x2, weight, bias, out2, relu):
    out2[...] = ref.linear(x2, weight, bias, activation="relu" if relu else None)


def linear_backward(grad_out2, x2, weight, y2, grad_x2, grad_w, grad_b):
    relu = "relu" if y2 is not None else None
    gx, gw, gb = ref.linear_backward(grad_out2, x2, weight, activation=relu, output=y2)
    for dst, src in ((grad_x2, gx), (grad_w, gw), (grad_b, gb)):
        if dst is not None:
            dst[...] = src


def _conv_args(c):
    padding = ((c.pad_top, c.pad_bottom), (c.pad_left, c.pad_right))
    return (c.stride_h, c.stride_w), padding, (c.dilation_h, c.dilation_w), c.groups


def conv2d(x, weight, bias, out, c, relu):
    out[...] = ref.conv2d(x, weight, bias, *_conv_args(c), activation="relu" if relu else None)


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    relu = "relu" if y is not None else None
    gx, gw, gb = ref.conv2d_backward(grad_out, x, weight, *_conv_args(c), activation=relu, output=y)
    for dst, src in ((grad_x, gx), (grad_w, gw), (grad_b, gb)):
        if dst is not None:
            dst[...] = src


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    for p, g, b in zip(params, grads, bufs):
        new_p, new_b = ref.sgd_step(p, g, b, lr=lr, momentum=momentum, dampening=dampening,
                                    weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                    first_step=first_step)
        p[...] = new_p
        if b is not None:
            b[...] = new_b


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        vmax = max_exp_avg_sqs[i] if amsgrad else None
        new = ref.adam_step(p, g, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                            weight_decay=weight_decay, decoupled_weight_decay=decoupled, amsgrad=amsgrad,
                            max_exp_avg_sq=vmax, maximize=maximize)
        for dst, src in zip((p, m, v, vmax), new):
            if dst is not None:
                dst[...] = src


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    loss, grad, _ = ref._cross_entropy_parts(logits, target, weight, ignore_index, label_smoothing)
    losses[...] = loss
    if dlogits is not None:
        dlogits[...] = grad


def quantize(x3, scale, zero_point, q3):
    q3[...] = ref.quantize(x3, scale, zero_point, dtype=q3.dtype, axis=1)


def dequantize(q3, scale, zero_point, y3):
    y3[...] = ref.dequantize(q3, scale, zero_point, axis=1)


def dynamic_quantize(x, q):
    values, scale, zero_point = ref.dynamic_quantize(x)
    q[...] = values
    return scale, zero_point


def matmul_integer(a, b, a_zero_point, b_zero_point, out):
    out[...] = ref.matmul_integer(a, b, a_zero_point, b_zero_point)


def conv2d_integer(x, w, x_zero_point, w_zero_point, out, c):
    out[...] = ref.conv2d_integer(x, w, x_zero_point, w_zero_point, *_conv_args(c))


def qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out):
    acc = ref.matmul_integer(a, b, a_zero_point, b_zero_point)
    out[...] = ref.requantize(acc, bias, multiplier, y_zero_point, out.dtype, relu, 1)


def qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c):
    acc = ref.conv2d_integer(x, w, x_zero_point, w_zero_point, *_conv_args(c))
    out[...] = ref.requantize(acc, bias, multiplier, y_zero_point, out.dtype, relu, 1)


# batch normalization: the four passes of csrc/lepton/norm.h, in float64
def batch_norm_stats(x3, mean, var):
    x = ref._f64(x3)
    mean[...] = x.mean(axis=(0, 2))
    var[...] = x.var(axis=(0, 2))


def batch_norm_apply(x3, scale, shift, out3, relu):
    y = ref._f64(x3) * ref._f64(scale)[None, :, None] + ref._f64(shift)[None, :, None]
    out3[...] = ref.relu(y) if relu else y


def _masked(g3, y3):
    g = ref._f64(g3)
    return g if y3 is None else np.where(ref._f64(y3) <= 0, 0.0, g)


def batch_norm_backward_reduce(g3, x3, mean, y3, sum_g, sum_gx):
    g = _masked(g3, y3)
    sum_g[...] = g.sum(axis=(0, 2))
    sum_gx[...] = (g * (ref._f64(x3) - ref._f64(mean)[None, :, None])).sum(axis=(0, 2))


def batch_norm_backward_apply(g3, x3, mean, y3, k1, k2, k3, grad_x3):
    centered = ref._f64(x3) - ref._f64(mean)[None, :, None]
    grad_x3[...] = (ref._f64(k1)[None, :, None] * _masked(g3, y3) + ref._f64(k2)[None, :, None] * centered
                    + ref._f64(k3)[None, :, None])


# activations: kind -> (the reference forward, the reference backward, extra argument)
def _activation_refs(kind, param):
    if kind == "leaky_relu":
        return ref.leaky_relu, ref.leaky_relu_backward, (param,)
    if kind in ("gelu", "gelu_tanh"):
        approximate = ("tanh" if kind == "gelu_tanh" else "none",)
        return ref.gelu, ref.gelu_backward, approximate
    return getattr(ref, kind), getattr(ref, kind + "_backward"), ()


def activation(x, out, kind, param):
    forward, _, extra = _activation_refs(kind, param)
    out[...] = forward(x, *extra)


def activation_backward(grad_out, saved, out, kind, param):
    _, backward, extra = _activation_refs(kind, param)
    out[...] = backward(grad_out, saved, *extra)
