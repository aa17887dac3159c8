"""CPU backend over the compiled C++ module ``_lepton_cpu`` (kernel interface of _backend)."""
from __future__ import annotations

from . import _lepton_cpu as _cpu


def unavailable_reason():
    return None  # importing _lepton_cpu succeeded


# Kernels whose binding already has the kernel interface's signature are the
# binding itself: one Python frame less per call on the small-call path.
relu = _cpu.relu
relu_backward = _cpu.relu_backward
bias_relu = _cpu.bias_relu
bias_relu_backward = _cpu.bias_relu_backward


# Whole-call entries (csrc/bind_calls.cpp): the plain NumPy call of an op checked, allocated
# and run in one C++ call; each returns None for anything else (see _backend.whole_call).
call_relu = _cpu.call_relu
call_relu_backward = _cpu.call_relu_backward
call_bias_relu = _cpu.call_bias_relu
call_max_pool2d = _cpu.call_max_pool2d
call_avg_pool2d = _cpu.call_avg_pool2d
call_conv2d = _cpu.call_conv2d
call_linear = _cpu.call_linear
call_cross_entropy = _cpu.call_cross_entropy


activation = _cpu.activation  # the bindings themselves, as relu above
activation_backward = _cpu.activation_backward
batch_norm_stats = _cpu.batch_norm_stats
batch_norm_backward_reduce = _cpu.batch_norm_backward_reduce
batch_norm_backward_apply = _cpu.batch_norm_backward_apply


def batch_norm_apply(x3, scale, shift, out3, relu):
    _cpu.batch_norm_apply(x3, scale, shift, out3, bool(relu))


def _window(p):
    return (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w,
            p.pad_top, p.pad_bottom, p.pad_left, p.pad_right)


def max_pool2d(x, out, indices, p):
    pool = _cpu.max_pool2d if out.dtype.kind == "f" else _cpu.max_pool2d_int8
    pool(x, out, indices, *_window(p), p.dilation_h, p.dilation_w)


def max_pool2d_backward(grad_out, indices, grad_in, p):
    _cpu.max_pool2d_backward(grad_out, indices, grad_in)


def avg_pool2d(x, out, p):
    _cpu.avg_pool2d(x, out, *_window(p), p.count_include_pad, p.divisor_override)


def avg_pool2d_backward(grad_out, grad_in, p):
    _cpu.avg_pool2d_backward(grad_out, grad_in, *_window(p), p.count_include_pad, p.divisor_override)


matmul = _cpu.matmul  # the binding itself, as relu above


def linear(x2, weight, bias, out2, relu):
    _cpu.linear(x2, weight, bias, out2, bool(relu))


linear_backward = _cpu.linear_backward  # the binding itself, as relu above


def _conv_geometry(c):
    return (c.stride_h, c.stride_w, c.pad_top, c.pad_bottom, c.pad_left, c.pad_right,
            c.dilation_h, c.dilation_w, c.groups)


def conv2d(x, weight, bias, out, c, relu):
    _cpu.conv2d(x, weight, bias, out, *_conv_geometry(c), bool(relu))


def conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, c):
    _cpu.conv2d_backward(grad_out, x, weight, y, grad_x, grad_w, grad_b, *_conv_geometry(c))


def sgd_step(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    # One call for the whole list: the C++ side chunks every tensor and updates them in one parallel pass.
    _cpu.sgd_step(params, grads, bufs, float(lr), float(momentum), float(dampening), float(weight_decay),
                  bool(nesterov), bool(maximize), bool(first_step))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay,
              decoupled, amsgrad, maximize):
    _cpu.adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None, int(step),
                   float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), bool(decoupled),
                   bool(amsgrad), bool(maximize))


def cross_entropy(logits, target, weight, ignore_index, label_smoothing, losses, dlogits):
    _cpu.cross_entropy(logits, target, weight, int(ignore_index), float(label_smoothing), losses, dlogits)


def quantize(x3, scale, zero_point, q3):
    _cpu.quantize(x3, scale, zero_point, q3)


def dequantize(q3, scale, zero_point, y3):
    _cpu.dequantize(q3, scale, zero_point, y3)


def dynamic_quantize(x, q):
    return _cpu.dynamic_quantize(x, q)


def matmul_integer(a, b, a_zero_point, b_zero_point, out):
    _cpu.matmul_integer(a, b, a_zero_point, b_zero_point, out)


def conv2d_integer(x, w, x_zero_point, w_zero_point, out, c):
    _cpu.conv2d_integer(x, w, x_zero_point, w_zero_point, out, *_conv_geometry(c))


def qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out):
    _cpu.qlinear_matmul(a, b, a_zero_point, b_zero_point, bias, multiplier, y_zero_point, relu, out)


def qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out, c):
    _cpu.qlinear_conv2d(x, w, x_zero_point, w_zero_point, bias, multiplier, y_zero_point, relu, out,
                        *_conv_geometry(c))


def pack_qlinear_weights(b, b_zero_point):
    """Optional kernel: b (K, N) packed once for qlinear_matmul_packed (zero point included)."""
    return _cpu.pack_matmul_integer_b(b, b_zero_point)


def qlinear_matmul_packed(a, packed, a_zero_point, bias, multiplier, y_zero_point, relu, out):
    _cpu.qlinear_matmul_packed(a, packed, a_zero_point, bias, multiplier, y_zero_point, relu, out)
