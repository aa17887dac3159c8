"""Public functional API: validation, backend choice, results in the caller's array type."""
from .conv import conv2d, conv2d_backward
from .elementwise import bias_relu, bias_relu_backward, relu, relu_backward
from .loss import cross_entropy, cross_entropy_backward
from .linear import linear, linear_backward, matmul
from .optim import adam_step, multi_tensor_adam_step, multi_tensor_sgd_step, sgd_step
from .quant import (PreparedQLinear, conv2d_integer, dequantize, dynamic_quantize, fake_quantize, matmul_integer,
                    prepare_qlinear_conv2d, prepare_qlinear_matmul, qlinear_conv2d, qlinear_matmul, quantize)
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "conv2d",
    "conv2d_backward",
    "linear",
    "linear_backward",
    "matmul",
    "quantize",
    "dequantize",
    "dynamic_quantize",
    "fake_quantize",
    "matmul_integer",
    "conv2d_integer",
    "qlinear_matmul",
    "qlinear_conv2d",
    "prepare_qlinear_matmul",
    "prepare_qlinear_conv2d",
    "PreparedQLinear",
    "cross_entropy",
    "cross_entropy_backward",
    "sgd_step",
    "adam_step",
    "multi_tensor_sgd_step",
    "multi_tensor_adam_step",
    "relu",
    "relu_backward",
    "bias_relu",
    "bias_relu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]
