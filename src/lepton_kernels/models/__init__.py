"""Ready-made models: LeNet-5, a small CIFAR CNN, a digits CNN for 8x8 images, linear and logistic regression.

Every model is an ``nn.Sequential`` subclass whose ``config()`` records its
constructor arguments, so a saved model file can rebuild it (:func:`from_config`).
"""
from __future__ import annotations

import numpy as np

from .. import nn


class _Model(nn.Sequential):
    """A Sequential that remembers how it was built."""

    def __init__(self, *layers, **arguments):
        super().__init__(*layers)
        object.__setattr__(self, "arguments", arguments)

    def config(self):
        return {"class": type(self).__name__, "arguments": dict(self.arguments)}


class LeNet5(_Model):
    """LeNet-5 for 1x28x28 images (MNIST variant: padding 2 on the first conv, ReLU, max-pool)."""

    def __init__(self, num_classes: int = 10, *, seed=None):
        rng = np.random.default_rng(seed)
        super().__init__(
            nn.Conv2d(1, 6, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120, rng=rng), nn.ReLU(),
            nn.Linear(120, 84, rng=rng), nn.ReLU(),
            nn.Linear(84, num_classes, rng=rng), num_classes=num_classes)


class CifarCNN(_Model):
    """conv32-pool-conv64-pool-conv64-dense64-dropout-dense10 for 3x32x32 images."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, *, seed=None):
        rng = np.random.default_rng(seed)
        super().__init__(
            nn.Conv2d(3, 32, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, rng=rng), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64, rng=rng), nn.ReLU(), nn.Dropout(dropout, rng=rng),
            nn.Linear(64, num_classes, rng=rng), num_classes=num_classes, dropout=dropout)


class DigitsCNN(_Model):
    """A small CNN sized for the 1x8x8 handwritten digits."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.25, *, seed=None):
        rng = np.random.default_rng(seed)
        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1, rng=rng), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64, rng=rng), nn.ReLU(), nn.Dropout(dropout, rng=rng),
            nn.Linear(64, num_classes, rng=rng), num_classes=num_classes, dropout=dropout)


class LinearRegression(_Model):
    """y = x @ W.T + b with ``out_features`` outputs (train with mse_loss)."""

    def __init__(self, in_features: int, out_features: int = 1, *, seed=None):
        super().__init__(nn.Linear(in_features, out_features, rng=np.random.default_rng(seed)),
                         in_features=in_features, out_features=out_features)


class LogisticRegression(_Model):
    """Class logits x @ W.T + b; binary (one logit, BCE with logits) when ``num_classes`` is 1."""

    def __init__(self, in_features: int, num_classes: int = 1, *, seed=None):
        super().__init__(nn.Linear(in_features, num_classes, rng=np.random.default_rng(seed)),
                         in_features=in_features, num_classes=num_classes)


MODELS = {cls.__name__: cls for cls in (LeNet5, CifarCNN, DigitsCNN, LinearRegression, LogisticRegression)}


def from_config(config: dict):
    """Rebuild a model from ``model.config()`` (as stored in model files)."""
    name = config.get("class") if isinstance(config, dict) else None
    if name not in MODELS:
        raise ValueError(f"from_config: unknown model class {name!r}; known: {', '.join(MODELS)}")
    arguments = config.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ValueError(f"from_config: arguments must be a mapping, got {type(arguments).__name__}")
    try:
        return MODELS[name](**arguments)
    except TypeError as exc:
        raise ValueError(f"from_config: bad arguments for {name}: {exc}") from None


__all__ = ["LeNet5", "CifarCNN", "DigitsCNN", "LinearRegression", "LogisticRegression", "MODELS", "from_config"]


def load_model(path):
    """Load a model file written by ``lepton_kernels.save``.

    Returns the rebuilt model (in eval mode) when the file records the
    architecture of one of :data:`MODELS` or a quantized model
    (:class:`lepton_kernels.quant.QuantizedModel`), else the state dict. Never runs code
    from the file; a damaged file raises ``ValueError``, and so does a file of
    the first format (checksum over the tensors only, so its architecture was
    unprotected): re-save it with ``state, info = lepton_kernels.io.load(path,
    legacy=True)`` and ``lepton_kernels.save(..., architecture=info["architecture"])``.
    """
    from .. import io

    state, info = io.load(path)
    architecture = info.get("architecture")
    if isinstance(architecture, dict) and architecture.get("class") == "QuantizedModel":
        from ..quant import QuantizedModel  # a file written from lepton_kernels.quant.quantize_model

        try:
            return QuantizedModel.from_state(architecture, state)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"load: {path}: {exc}") from None
    if not isinstance(architecture, dict) or architecture.get("class") not in MODELS:
        return state
    model = from_config(architecture)
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"load: {path}: tensors do not fit the recorded {architecture['class']}: {exc}") from None
    return model.eval()


__all__.append("load_model")
