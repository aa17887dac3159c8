"""DataLoader: mini-batches over a tuple of equal-length arrays or a map-style dataset.

Arrays are indexed along axis 0 (the sample axis, N of NCHW). Shuffling uses a
numpy Generator seeded once per loader, so each epoch gets a new order and the
sequence of epochs is reproducible for a given seed.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterator

import numpy as np

__all__ = ["DataLoader"]


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "__getitem__") and hasattr(x, "dtype")


def _collate(items: list) -> Any:
    """Stack a list of samples; tuples/lists of fields are stacked field by field."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        width = len(first)
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != width:
                raise ValueError(f"DataLoader: dataset item {i} has a different structure from item 0 "
                                 f"(expected a tuple of {width} fields)")
        return tuple(np.stack([np.asarray(item[k]) for item in items]) for k in range(width))
    return np.stack([np.asarray(item) for item in items])


class DataLoader:
    """Iterate over mini-batches of a dataset.

    Parameters
    ----------
    dataset_or_arrays : tuple of arrays, array, or map-style dataset
        * a ``tuple`` of arrays with the same length along axis 0, e.g.
          ``(x, y)``: each batch is a tuple ``(x[idx], y[idx])``;
        * a single array: each batch is ``x[idx]``;
        * any object with ``__len__`` and ``__getitem__(int)`` (a list of
          samples included): items are collated with ``np.stack`` field by
          field, so items ``(x_i, y_i)`` give batches ``(x_batch, y_batch)``.
    batch_size : int, default 1
        Samples per batch (>= 1). The last batch is smaller unless
        ``drop_last``.
    shuffle : bool, default False
        Draw a new permutation at the start of every epoch (every ``iter()``).
    drop_last : bool, default False
        Drop the final incomplete batch.
    seed : int, numpy.random.Generator or None
        Seed of the shuffling Generator. Two loaders with the same seed give
        the same sequence of epochs; None draws fresh OS entropy.

    Notes
    -----
    Without shuffling, array batches are views (slices) of the inputs; with
    shuffling they are copies. ``len(loader)`` is the number of batches per
    epoch: ``ceil(N / batch_size)``, or ``floor`` with ``drop_last``.
    """

    def __init__(self, dataset_or_arrays: Any, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | np.random.Generator | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"DataLoader: batch_size must be an int; got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.dataset = dataset_or_arrays
        self._arrays: tuple | None = None
        self._single = False
        if isinstance(dataset_or_arrays, tuple) and dataset_or_arrays and all(
                _is_array(a) for a in dataset_or_arrays):
            self._arrays = tuple(dataset_or_arrays)
        elif _is_array(dataset_or_arrays):
            self._arrays = (dataset_or_arrays,)
            self._single = True
        if self._arrays is not None:
            lengths = []
            for i, a in enumerate(self._arrays):
                if len(a.shape) == 0:
                    raise ValueError(f"DataLoader: array {i} is 0-dimensional; arrays need a sample axis 0")
                lengths.append(a.shape[0])
            if len(set(lengths)) != 1:
                raise ValueError(f"DataLoader: arrays must have the same length along axis 0; got {lengths}")
            self._n = lengths[0]
        else:
            if not (hasattr(dataset_or_arrays, "__len__") and hasattr(dataset_or_arrays, "__getitem__")):
                raise TypeError("DataLoader: expected a tuple of arrays, an array, or an object with "
                                f"__len__ and __getitem__; got {type(dataset_or_arrays).__name__}")
            self._n = len(dataset_or_arrays)

    @property
    def num_samples(self) -> int:
        """Samples per epoch, before ``drop_last``."""
        return self._n

    def __len__(self) -> int:
        if self.drop_last:
            return self._n // self.batch_size
        return math.ceil(self._n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n, bs = self._n, self.batch_size
        order = self._rng.permutation(n) if self.shuffle else None
        for b in range(len(self)):
            start, stop = b * bs, min((b + 1) * bs, n)
            idx = slice(start, stop) if order is None else order[start:stop]
            if self._arrays is not None:
                batch = tuple(a[idx] for a in self._arrays)
                yield batch[0] if self._single else batch
            else:
                indices = range(start, stop) if order is None else idx.tolist()
                yield _collate([self.dataset[i] for i in indices])
