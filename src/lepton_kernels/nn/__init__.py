"""Neural-network layers on the autograd Tensor."""
from . import functional
from .modules import (
    GELU,
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Hardswish,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    ReLU6,
    Sequential,
    Sigmoid,
    SiLU,
    Tanh,
)

__all__ = ["functional", "Module", "Conv2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "GELU",
           "Hardswish", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "Sequential"]
