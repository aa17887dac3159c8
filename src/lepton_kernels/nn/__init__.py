"""Neural-network layers on the autograd Tensor (``nn.functional`` now; modules follow)."""
from . import functional

__all__ = ["functional"]
