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

from . import data, distributed, models
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


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"C,H,W"`` (e.g. ``"1,28,28"``) as a tuple of three positive ints; ValueError otherwise."""
    try:
        dims = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"input shape must be C,H,W: three positive integers such as 1,28,28; got {text!r}")
    return dims


def parse_label_column(text: str) -> int | str:
    """A column index when ``text`` is an integer (``"0"``, ``"-1"``), else a header name."""
    try:
        return int(text)
    except ValueError:
        return str(text)


def _check_data_options(name, input_shape, pixel_scale, label_column):
    if label_column is not None and name != "csv":
        raise ValueError(f"--label-column applies to csv:FILE data sets, not {name}")
    if input_shape is not None and name not in ("csv", "folder"):
        raise ValueError(f"--input-shape applies to csv:FILE and folder:DIR data sets, not {name}")
    if pixel_scale is not None:
        if name != "csv":
            raise ValueError(f"--pixel-scale applies to csv:FILE data sets, not {name}")
        if not (np.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError(f"--pixel-scale must be a finite number > 0; got {pixel_scale}")


def _image_folder(path, input_shape):
    """The folder's images, resized and converted to the C,H,W asked for (C = 1 grey or 3 RGB)."""
    size, grayscale = None, False
    if input_shape is not None:
        channels, size = input_shape[0], input_shape[1:]
        if channels not in (1, 3):
            raise ValueError(f"--input-shape for folder:DIR needs 1 (grey) or 3 (RGB) channels; got {channels}")
        grayscale = channels == 1
    x, y, _ = data.load_image_folder(path, size=size, grayscale=grayscale)
    return x, y


def load_dataset(spec: str, seed: int = 0, input_shape=None, pixel_scale=None, label_column=None) -> Dataset:
    """``digits``, ``diabetes``, ``breast-cancer`` (built in), or ``mnist:DIR``, ``cifar10:DIR``,
    ``csv:FILE``, ``folder:DIR``.

    ``input_shape`` (C, H, W) reshapes a CSV's feature columns into images,
    or resizes a folder's images (C = 1 converts them to grey).
    ``pixel_scale`` divides a CSV's features by it (255 for 8-bit pixels)
    instead of standardizing them. ``label_column`` (index or header name,
    default the last column) picks a CSV's label column.
    """
    name, _, path = spec.partition(":")
    _check_data_options(name, input_shape, pixel_scale, label_column)
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
        if name == "mnist":  # load_mnist already gives float32 (N, 1, 28, 28) in [0, 1]
            x_tr, y_tr = data.load_mnist(path, kind="train")
            x_te, y_te = data.load_mnist(path, kind="t10k")
        else:
            x_tr, y_tr = data.load_cifar10(path, train=True)
            x_te, y_te = data.load_cifar10(path, train=False)
        return Dataset(name, x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), "classification", 10)
    if name == "folder" and path:
        x, y = _image_folder(path, input_shape)
        return _split_standardized(f"folder:{path}", x, y, "classification", seed, standardize=False)
    if name == "csv" and path:
        x, y = data.read_csv(path, label_column=-1 if label_column is None else label_column, shape=input_shape)
        task = "classification" if y.dtype.kind in "iu" else "regression"
        if task == "classification" and int(y.max()) == 1:
            task = "binary"
        if pixel_scale is not None:
            x = x / np.float32(pixel_scale)
        return _split_standardized(f"csv:{path}", x, y, task, seed, standardize=pixel_scale is None)
    raise ValueError(f"unknown dataset {spec!r}: use digits, diabetes, breast-cancer, mnist:DIR, cifar10:DIR, "
                     f"csv:FILE or folder:DIR")


MODEL_NAMES = ("lenet5", "cifar-cnn", "digits-cnn", "linear", "logistic")
_IMAGE_MODELS = {"lenet5": (models.LeNet5, (1, 28, 28)), "cifar-cnn": (models.CifarCNN, (3, 32, 32)),
                 "digits-cnn": (models.DigitsCNN, (1, 8, 8))}


#: Model-file metadata key holding the seed of the train/test split a model was trained on.
SPLIT_SEED_KEY = "split_seed"
#: The data options of :func:`load_dataset` that ``train --save`` records in the model file (under
#: these names), each with the parser of its recorded text.
DATA_OPTIONS = {"input_shape": parse_input_shape, "pixel_scale": float, "label_column": parse_label_column}


def _recorded(path) -> dict:
    from . import io

    return io.load(path)[1].get("metadata", {})


def split_seed(path, requested=None) -> int:
    """The train/test split seed to evaluate the model file ``path`` with: ``requested`` when
    given, else the one ``train --save`` recorded in the file (0 for files without one), so
    evaluation never runs on samples the model was trained on by accident."""
    if requested is not None:
        return int(requested)
    recorded = _recorded(path).get(SPLIT_SEED_KEY)
    try:
        return int(recorded) if recorded is not None else 0
    except ValueError:
        raise ValueError(f"{path}: metadata {SPLIT_SEED_KEY}={recorded!r} is not an integer") from None


def data_metadata(options: dict) -> dict[str, str]:
    """The model-file metadata recording the :data:`DATA_OPTIONS` given (None: not recorded)."""
    text = {"input_shape": lambda v: ",".join(str(d) for d in v), "pixel_scale": lambda v: repr(float(v))}
    return {name: text.get(name, str)(value) for name, value in options.items()
            if name in DATA_OPTIONS and value is not None}


def data_options(path, requested: dict) -> dict:
    """The :data:`DATA_OPTIONS` to evaluate the model file ``path`` with: each as requested when
    given (not None), else as ``train --save`` recorded it, else None."""
    missing = [name for name in DATA_OPTIONS if requested.get(name) is None]
    meta = _recorded(path) if missing else {}
    options = dict(requested)
    try:
        for name in missing:
            options[name] = DATA_OPTIONS[name](meta[name]) if name in meta else None
    except ValueError as exc:
        raise ValueError(f"{path}: recorded data option {name}={meta[name]!r} is invalid: {exc}") from None
    return options


def build_model(name: str, dataset: Dataset, seed: int = 0):
    """The model ``name`` sized for ``dataset``; a mismatch is a ValueError saying why."""
    if name in _IMAGE_MODELS:
        cls, shape = _IMAGE_MODELS[name]
        if dataset.task == "regression":
            raise ValueError(f"model {name} classifies; dataset {dataset.name} is a regression task")
        if dataset.sample_shape != shape:
            hint = (f" (--input-shape {','.join(map(str, shape))} reshapes or resizes it)"
                    if dataset.name.startswith(("csv:", "folder:")) else "")
            raise ValueError(f"model {name} expects inputs of shape {shape}, dataset {dataset.name} has "
                             f"{dataset.sample_shape}{hint}")
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
    if isinstance(model, distributed.DistributedDataParallel):
        model = model.module
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

    ``on_epoch_end()`` runs after each epoch (a learning-rate schedule's ``step``). A
    :class:`~lepton_kernels.distributed.DistributedDataParallel` model trains on this rank's slice of
    every global batch of ``batch_size`` and combines the gradients before each step; the rate then
    counts every rank's samples and the progress bar's loss is this rank's.
    """
    ddp = isinstance(model, distributed.DistributedDataParallel)
    loader = data.DataLoader((dataset.x_train, dataset.y_train), batch_size=batch_size, shuffle=True, seed=seed,
                             distributed=ddp)
    seen, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        bar = EpochBar(epoch, epochs, len(loader)) if progress else None
        epoch_samples, running, local = 0, 0.0, 0
        for i, (xb, yb) in enumerate(loader, 1):
            optimizer.zero_grad()
            x = Tensor(_to_device(_inputs(model, xb), device))
            out = model(x, shard=loader.shard) if ddp else model(x)
            if len(xb):  # a rank's slice of a short last batch may be empty: it only draws its dropout masks
                loss = loss_fn(model, dataset.task, out, _to_device(yb, device))
                loss.backward()
                running += float(_to_host(loss.data)) * len(xb)
                local += len(xb)
            if ddp:
                model.sync_gradients()
            optimizer.step()
            epoch_samples += loader.shard.total
            if bar is not None:
                bar.update(i, epoch_samples, running / max(local, 1))
        seen += epoch_samples
        if on_epoch_end is not None:
            on_epoch_end()
    seconds = time.perf_counter() - start
    return seconds, seen / seconds if seconds > 0 else 0.0
