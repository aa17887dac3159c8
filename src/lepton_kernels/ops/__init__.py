"""Public functional API: validation, backend choice, results in the caller's array type."""
from .elementwise import bias_relu, bias_relu_backward, relu, relu_backward
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "relu",
    "relu_backward",
    "bias_relu",
    "bias_relu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]
