"""Optimizers (SGD, Adam, AdamW) on the fused multi-tensor kernels, and learning-rate schedules."""
from . import lr_scheduler
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
