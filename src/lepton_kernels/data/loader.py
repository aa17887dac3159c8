"""DataLoader: mini-batches over a tuple of equal-length arrays or a map-style dataset.

Arrays are indexed along axis 0 (the sample axis, N of NCHW). Shuffling uses a
numpy Generator seeded once per loader, so each epoch gets a new order and the
sequence of epochs is reproducible for a given seed.

A distributed loader (data-parallel training over MPI) draws the same global
batches on every rank and yields rank ``r``'s contiguous slice of each.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterator, NamedTuple

import numpy as np

__all__ = ["DataLoader", "BatchShard"]


class BatchShard(NamedTuple):
    """A process's rows ``[start, stop)`` of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int


def _local_rows(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous rows of a batch of ``total``: equal parts, the first ``total % world``
    ranks holding one more (``numpy.array_split``), so a short last batch is split as evenly as it can be."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


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
    distributed : bool, default False
        Data-parallel training (``mpiexec -n N``): ``batch_size`` is the global
        batch, every rank draws the global batches one process would (so
        ``seed`` must be given when shuffling) and yields its contiguous
        slice: rank ``r`` of ``W`` takes rows ``[r * B/W, (r + 1) * B/W)``.
        ``batch_size`` must be divisible by the world size (ValueError
        otherwise). The last, partial batch of ``L`` samples is split as
        evenly as possible (the first ``L % W`` ranks hold one more sample;
        ranks beyond ``L`` get an empty slice); ``DistributedDataParallel``
        weights each rank's gradient by its slice size, so the step still
        equals one process's.

    Attributes
    ----------
    shard : BatchShard or None
        Where the batch last yielded lies in its global batch
        (``(start, stop, total)``); pass it to ``DistributedDataParallel``.

    Notes
    -----
    Without shuffling, array batches are views (slices) of the inputs; with
    shuffling they are copies. ``len(loader)`` is the number of batches per
    epoch: ``ceil(N / batch_size)``, or ``floor`` with ``drop_last`` (global
    batches when distributed).
    """

    def __init__(self, dataset_or_arrays: Any, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | np.random.Generator | None = None, distributed: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"DataLoader: batch_size must be an int; got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._rank, self._world = self._place(bool(distributed), seed)
        self.shard: BatchShard | None = None
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

    def _place(self, distributed: bool, seed) -> tuple[int, int]:
        """(rank, world size) of this process; (0, 1) unless ``distributed``."""
        if not distributed:
            return 0, 1
        from .. import distributed as dist  # noqa: PLC0415 - the MPI layer only when asked for

        world = dist.world_size()
        if self.batch_size % world:
            raise ValueError(f"DataLoader: distributed batch_size (the global batch) must be divisible by the "
                             f"world size {world}; got {self.batch_size}")
        if world > 1 and self.shuffle and seed is None:
            raise ValueError("DataLoader: distributed shuffling needs a seed (int or Generator) so that every "
                             "rank draws the same permutation; got seed=None")
        return dist.rank(), world

    @property
    def num_samples(self) -> int:
        """Samples per epoch, before ``drop_last``."""
        return self._n

    def __len__(self) -> int:
        if self.drop_last:
            return self._n // self.batch_size
        return math.ceil(self._n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for batch, shard in self._batches(self._rank, self._world):
            self.shard = shard
            yield batch

    def _batches(self, rank: int, world: int) -> Iterator[tuple[Any, BatchShard]]:
        """One epoch of (batch, shard) as rank ``rank`` of ``world`` sees it: its rows of each global batch."""
        n, bs = self._n, self.batch_size
        order = self._rng.permutation(n) if self.shuffle else None
        for b in range(len(self)):
            first, last = b * bs, min((b + 1) * bs, n)
            lo, hi = _local_rows(last - first, rank, world)
            shard = BatchShard(lo, hi, last - first)
            start, stop = first + lo, first + hi
            idx = slice(start, stop) if order is None else order[start:stop]
            if self._arrays is not None:
                batch = tuple(a[idx] for a in self._arrays)
                yield (batch[0] if self._single else batch), shard
            else:
                indices = range(start, stop) if order is None else idx.tolist()
                yield _collate([self.dataset[i] for i in indices]), shard
