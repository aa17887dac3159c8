"""Training and evaluation loops behind ``lepton-kernels train`` / ``eval``.

A *task* pairs a dataset with the loss and metric its labels call for:
classification (cross-entropy, accuracy), binary (BCE with logits on one
logit, accuracy) or regression (MSE, R^2).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from . import data, models
from .autograd import Tensor, no_grad
from .nn import functional as F


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification", "binary" or "regression"
    num_classes: int = 0

    @property
    def sample_shape(self):
        return tuple(self.x_train.shape[1:])


def _split_standardized(name, x, y, task, seed, standardize):
    stratify = y if task != "regression" else None
    x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, test_size=0.2, seed=seed, stratify=stratify)
    if standardize:
        x_tr, x_te, _ = data.standardize(x_tr, x_te)
    if task == "regression":  # unit-scale targets; R^2 is unchanged by this affine map
        y_tr, y_te, _ = data.standardize(y_tr.reshape(-1, 1), y_te.reshape(-1, 1))
        y_tr, y_te = y_tr.reshape(-1).astype(np.float32), y_te.reshape(-1).astype(np.float32)
    classes = int(y.max()) + 1 if task != "regression" else 0
    return Dataset(name, x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te, task, classes)


def load_dataset(spec: str, seed: int = 0) -> Dataset:
    """``digits``, ``diabetes``, ``breast-cancer`` (built in), or ``mnist:DIR``, ``cifar10:DIR``, ``csv:FILE``."""
    name, _, path = spec.partition(":")
    if name == "digits":
        x, y = data.load_digits()
        return _split_standardized(name, x, y, "classification", seed, standardize=False)
    if name == "diabetes":
        x, y = data.load_diabetes()
        return _split_standardized(name, x, y.astype(np.float32), "regression", seed, standardize=True)
    if name == "breast-cancer":
        x, y = data.load_breast_cancer()
        return _split_standardized(name, x, y, "binary", seed, standardize=True)
    if name in ("mnist", "cifar10") and path:
        loader = data.load_mnist if name == "mnist" else data.load_cifar10
        if name == "mnist":
            x_tr, y_tr = loader(path, kind="train")
            x_te, y_te = loader(path, kind="t10k")
            x_tr = (x_tr.astype(np.float32) / 255.0)[:, None]
            x_te = (x_te.astype(np.float32) / 255.0)[:, None]
        else:
            x_tr, y_tr = loader(path, train=True)
            x_te, y_te = loader(path, train=False)
        return Dataset(name, x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), "classification", 10)
    if name == "csv" and path:
        x, y = data.read_csv(path)
        task = "classification" if y.dtype.kind in "iu" else "regression"
        if task == "classification" and int(y.max()) == 1:
            task = "binary"
        return _split_standardized(f"csv:{path}", x, y, task, seed, standardize=True)
    raise ValueError(f"unknown dataset {spec!r}: use digits, diabetes, breast-cancer, mnist:DIR, cifar10:DIR "
                     f"or csv:FILE")


MODEL_NAMES = ("lenet5", "cifar-cnn", "digits-cnn", "linear", "logistic")
_IMAGE_MODELS = {"lenet5": (models.LeNet5, (1, 28, 28)), "cifar-cnn": (models.CifarCNN, (3, 32, 32)),
                 "digits-cnn": (models.DigitsCNN, (1, 8, 8))}


#: Model-file metadata key holding the seed of the train/test split a model was trained on.
SPLIT_SEED_KEY = "split_seed"


def split_seed(path, requested=None) -> int:
    """The train/test split seed to evaluate the model file ``path`` with: ``requested`` when
    given, else the one ``train --save`` recorded in the file (0 for files without one), so
    evaluation never runs on samples the model was trained on by accident."""
    if requested is not None:
        return int(requested)
    from . import io

    recorded = io.load(path)[1].get("metadata", {}).get(SPLIT_SEED_KEY)
    try:
        return int(recorded) if recorded is not None else 0
    except ValueError:
        raise ValueError(f"{path}: metadata {SPLIT_SEED_KEY}={recorded!r} is not an integer") from None


def build_model(name: str, dataset: Dataset, seed: int = 0):
    """The model ``name`` sized for ``dataset``; a mismatch is a ValueError saying why."""
    if name in _IMAGE_MODELS:
        cls, shape = _IMAGE_MODELS[name]
        if dataset.task == "regression":
            raise ValueError(f"model {name} classifies; dataset {dataset.name} is a regression task")
        if dataset.sample_shape != shape:
            raise ValueError(f"model {name} expects inputs of shape {shape}, dataset {dataset.name} has "
                             f"{dataset.sample_shape}")
        return cls(num_classes=max(dataset.num_classes, 2), seed=seed)
    features = int(np.prod(dataset.sample_shape))
    if name == "linear":
        if dataset.task != "regression":
            raise ValueError(f"model linear is a regression; dataset {dataset.name} has class labels "
                             f"(use --model logistic)")
        return models.LinearRegression(features, 1, seed=seed)
    if name == "logistic":
        if dataset.task == "regression":
            raise ValueError(f"model logistic classifies; dataset {dataset.name} is a regression (use --model linear)")
        return models.LogisticRegression(features, 1 if dataset.task == "binary" else dataset.num_classes, seed=seed)
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)}")


def _inputs(model, x):
    """Flatten features for the linear models; images go in as they are."""
    if isinstance(model, (models.LinearRegression, models.LogisticRegression)):
        return x.reshape(len(x), -1)
    return x


def loss_fn(model, task, logits, y):
    if task == "regression":
        return F.mse_loss(logits, y.reshape(-1, 1).astype(logits.dtype))
    if task == "binary" and logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, y.reshape(-1, 1).astype(logits.dtype))
    return F.cross_entropy(logits, y)


def predict(model, x, batch_size=256, device="cpu"):
    """Model outputs for ``x`` in eval mode, as a NumPy array."""
    model.eval()
    outs = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            xb = _to_device(_inputs(model, x[start:start + batch_size]), device)
            outs.append(_to_host(model(Tensor(xb)).data))
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def metric(task, outputs, y):
    """(name, value): accuracy for classification/binary, R^2 for regression."""
    if task == "regression":
        pred = outputs.reshape(-1)
        ss_res = float(((y - pred) ** 2).sum())
        ss_tot = float(((y - y.mean()) ** 2).sum())
        return "test_r2", 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    pred = (outputs[:, 0] > 0).astype(np.int64) if outputs.shape[1] == 1 else outputs.argmax(axis=1)
    return "test_accuracy", float((pred == y).mean())


def _to_device(a, device):
    if device == "cpu":
        return a
    import cupy  # noqa: PLC0415 - CUDA only

    return cupy.asarray(a)


def _to_host(a):
    return a if isinstance(a, np.ndarray) else a.get()


class EpochBar:
    """A progress line per epoch on stderr: bar, batches, loss and samples/s.

    On a terminal the line redraws at most ten times a second; elsewhere (a log
    file, CI) only the finished line of each epoch is written.
    """

    def __init__(self, epoch, epochs, batches, stream=None, width=24):
        self.epoch, self.epochs, self.batches, self.width = epoch, epochs, batches, width
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last_draw = time.perf_counter()

    def update(self, done, samples, loss):
        now = time.perf_counter()
        final = done == self.batches
        if not final and (not self.live or now - self.last_draw < 0.1):
            return
        self.last_draw = now
        rate = samples / max(now - self.start, 1e-9)
        filled = int(self.width * done / max(self.batches, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        line = (f"epoch {self.epoch}/{self.epochs} [{bar}] {done}/{self.batches} "
                f"loss {loss:.4f} {rate:,.0f} samples/s")
        self.stream.write(("\r" if self.live else "") + line + ("\n" if final else ""))
        self.stream.flush()


def fit(model, dataset: Dataset, optimizer, epochs, batch_size, seed=0, device="cpu", progress=True,
        on_epoch_end=None):
    """Train ``model`` on ``dataset.x_train``; returns (seconds, samples per second).

    ``on_epoch_end()`` runs after each epoch (a learning-rate schedule's ``step``).
    """
    loader = data.DataLoader((dataset.x_train, dataset.y_train), batch_size=batch_size, shuffle=True, seed=seed)
    seen, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        bar = EpochBar(epoch, epochs, len(loader)) if progress else None
        epoch_samples, running = 0, 0.0
        for i, (xb, yb) in enumerate(loader, 1):
            optimizer.zero_grad()
            out = model(Tensor(_to_device(_inputs(model, xb), device)))
            loss = loss_fn(model, dataset.task, out, _to_device(yb, device))
            loss.backward()
            optimizer.step()
            epoch_samples += len(xb)
            running += float(_to_host(loss.data)) * len(xb)
            if bar is not None:
                bar.update(i, epoch_samples, running / epoch_samples)
        seen += epoch_samples
        if on_epoch_end is not None:
            on_epoch_end()
    seconds = time.perf_counter() - start
    return seconds, seen / seconds if seconds > 0 else 0.0
