"""Neural-network layers on the autograd Tensor."""
from . import functional
from .modules import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
)

__all__ = ["functional", "Module", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout",
           "Sequential"]
