"""Splitting and standardisation of in-memory arrays (samples on axis 0)."""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["train_test_split", "standardize", "Standardizer"]


def _n_test(test_size: Any, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"train_test_split: test_size must be a float in (0, 1) or an int; got {test_size!r}")
    if isinstance(test_size, numbers.Integral):
        if not 1 <= test_size < n:
            raise ValueError(f"train_test_split: int test_size={test_size} must be in [1, {n - 1}] "
                             f"for {n} samples")
        return int(test_size)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"train_test_split: float test_size={test_size} must be in (0, 1)")
    n_test = math.ceil(test_size * n)
    if n_test >= n:
        raise ValueError(f"train_test_split: test_size={test_size} with {n} samples leaves an empty "
                         "training set")
    return n_test


def _stratified(labels: np.ndarray, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    classes, y = np.unique(labels, return_inverse=True)
    y = y.reshape(-1)
    counts = np.bincount(y)
    n = len(y)
    if counts.min() < 2:
        bad = classes[counts.argmin()]
        raise ValueError(f"train_test_split: stratify class {bad!r} has only {counts.min()} member; "
                         "every class needs at least 2")
    if n_test < len(classes) or n - n_test < len(classes):
        raise ValueError(f"train_test_split: with stratify, train ({n - n_test}) and test ({n_test}) "
                         f"sizes must each be at least the number of classes ({len(classes)})")
    # largest-remainder allocation of the test set to classes, ties broken at random
    exact = counts * (n_test / n)
    take = np.minimum(np.maximum(np.floor(exact).astype(np.int64), 1), counts - 1)
    while take.sum() != n_test:
        frac = exact - take + rng.random(len(counts)) * 1e-9
        if take.sum() < n_test:
            frac[take >= counts - 1] = -np.inf
            take[np.argmax(frac)] += 1
        else:
            frac[take <= 1] = np.inf
            take[np.argmin(frac)] -= 1
    test_parts, train_parts = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y == c))
        test_parts.append(members[: take[c]])
        train_parts.append(members[take[c]:])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


def train_test_split(*arrays: Any, test_size: float | int = 0.2, seed: int | None = 0,
                     shuffle: bool = True, stratify: Any = None) -> list:
    """Split arrays into random train and test subsets (scikit-learn's semantics).

    Parameters
    ----------
    *arrays : arrays with the same length along axis 0
    test_size : float in (0, 1) or int in [1, N-1]
        Fraction (rounded up, as scikit-learn does) or number of test samples.
    seed : int or None, default 0
        Seed of the numpy Generator; the same seed gives the same split.
    shuffle : bool, default True
        If False the first ``N - n_test`` samples are the training set.
    stratify : array of labels, optional
        Keep each class's proportion in both subsets (needs ``shuffle=True``
        and at least 2 members per class).

    Returns
    -------
    list
        ``[a_train, a_test, b_train, b_test, ...]`` in the order of ``arrays``.
    """
    if not arrays:
        raise ValueError("train_test_split: at least one array is required")
    arrays = tuple(a if hasattr(a, "shape") else np.asarray(a) for a in arrays)
    lengths = [a.shape[0] if len(a.shape) else None for a in arrays]
    if None in lengths:
        raise ValueError("train_test_split: 0-dimensional input; arrays need a sample axis 0")
    if len(set(lengths)) != 1:
        raise ValueError(f"train_test_split: arrays have different lengths along axis 0: {lengths}")
    n = lengths[0]
    if n < 2:
        raise ValueError(f"train_test_split: need at least 2 samples to split; got {n}")
    n_test = _n_test(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify is not None:
        if not shuffle:
            raise ValueError("train_test_split: stratify requires shuffle=True")
        labels = np.asarray(stratify)
        if labels.shape[:1] != (n,):
            raise ValueError(f"train_test_split: stratify has {labels.shape[:1]} labels, expected ({n},)")
        if labels.ndim > 1:  # e.g. one-hot: stratify by the row as a whole
            labels = np.unique(labels.reshape(n, -1), axis=0, return_inverse=True)[1].reshape(-1)
        train_idx, test_idx = _stratified(labels, n_test, rng)
    elif shuffle:
        order = rng.permutation(n)
        train_idx, test_idx = order[: n - n_test], order[n - n_test:]
    else:
        train_idx, test_idx = slice(0, n - n_test), slice(n - n_test, n)
    out = []
    for a in arrays:
        out += [a[train_idx], a[test_idx]]
    return out


class Standardizer:
    """Zero-mean, unit-variance scaling fitted on training data only.

    ``transform(x) = (x - mean) / std`` with statistics over ``axis``
    (default 0, the sample axis: one mean/std per feature or per pixel).
    Statistics are computed in float64; the population std (ddof=0) is used
    and any std below ``eps`` is replaced by 1, so constant features become 0
    instead of inf/NaN. Float inputs keep their dtype; integer inputs become
    float64.
    """

    def __init__(self, eps: float = 1e-8, axis: int | tuple[int, ...] = 0):
        if not eps >= 0:
            raise ValueError(f"Standardizer: eps must be >= 0; got {eps}")
        self.eps = float(eps)
        self.axis = axis
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, x: Any) -> "Standardizer":
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"Standardizer.fit: need at least one sample; got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"Standardizer.fit: expected a real numeric array; got dtype {x.dtype}")
        x64 = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x64)):
            raise ValueError("Standardizer.fit: training data contains NaN or inf")
        self._dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        self.mean_ = x64.mean(axis=self.axis, keepdims=True)
        std = x64.std(axis=self.axis, keepdims=True)
        self.std_ = np.where(std < self.eps, 1.0, std)
        return self

    def _check(self, x: Any, what: str) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError(f"Standardizer.{what}: call fit() first")
        x = np.asarray(x)
        if x.ndim != self.mean_.ndim or any(m != 1 and m != s for m, s in zip(self.mean_.shape, x.shape)):
            raise ValueError(f"Standardizer.{what}: shape {x.shape} is incompatible with the fitted "
                             f"statistics of shape {self.mean_.shape}")
        return x

    def transform(self, x: Any) -> np.ndarray:
        x = self._check(x, "transform")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else self._dtype
        return ((x.astype(np.float64, copy=False) - self.mean_) / self.std_).astype(dtype, copy=False)

    def inverse_transform(self, x: Any) -> np.ndarray:
        x = self._check(x, "inverse_transform")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else self._dtype
        return (x.astype(np.float64, copy=False) * self.std_ + self.mean_).astype(dtype, copy=False)

    def fit_transform(self, x: Any) -> np.ndarray:
        return self.fit(x).transform(x)

    @property
    def mean(self) -> np.ndarray:
        """Fitted mean with the sample axis removed (float64)."""
        return np.squeeze(self.mean_, axis=self.axis)

    @property
    def std(self) -> np.ndarray:
        """Fitted std (after the eps rule) with the sample axis removed (float64)."""
        return np.squeeze(self.std_, axis=self.axis)


def standardize(train: Any, *others: Any, eps: float = 1e-8) -> tuple:
    """Standardise ``train`` and ``others`` with statistics of ``train`` only.

    ``out = (x - mean) / std``, mean and std per feature over axis 0 of
    ``train`` (std below ``eps`` -> 1). See :class:`Standardizer`.

    Returns
    -------
    tuple
        ``(train_std, *others_std, (mean, std))`` — e.g.
        ``x_tr, x_te, (mean, std) = standardize(x_tr, x_te)``. ``mean`` and
        ``std`` are float64 arrays of the feature shape (``train.shape[1:]``).
    """
    scaler = Standardizer(eps=eps).fit(train)
    return (scaler.transform(train), *(scaler.transform(o) for o in others), (scaler.mean, scaler.std))
