"""In-place all-reduce and broadcast of many NumPy arrays through one flat, bucketed buffer.

The arrays of one call are grouped by dtype. Each group is seen as one stream
of elements (array 0 flattened, then array 1, ...) cut into buckets of at most
``BUCKET_BYTES``; each bucket is packed into a reusable contiguous buffer,
reduced (or broadcast) with one non-blocking MPI call polled against the
timeout, and unpacked back into the arrays. So a model's gradients cost one
message per 4 MiB, not one per tensor, and the staging memory stays bounded.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from . import _world

__all__ = ["all_reduce", "broadcast", "BUCKET_BYTES", "OPS"]

#: Largest message of one collective call, in bytes.
BUCKET_BYTES = 4 << 20
#: Reductions accepted by :func:`all_reduce`.
OPS = ("mean", "sum", "max", "min")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_DTYPES = _FLOATS + tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                                np.uint32, np.uint64))

# Staging buffers by dtype, grown up to one bucket and reused by every call.
_buffers: dict[np.dtype, np.ndarray] = {}


def _checked_arrays(fn: str, arrays) -> list[np.ndarray]:
    """The arrays as a list, each a writable C-contiguous NumPy array of a supported dtype, none overlapping."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    elif not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{fn}: arrays must be a numpy.ndarray or a list/tuple of them; "
                        f"got {type(arrays).__name__}")
    out = list(arrays)
    for i, a in enumerate(out):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{fn}: arrays[{i}] must be a numpy.ndarray; got {type(a).__module__}."
                            f"{type(a).__name__}")
        if a.dtype not in _DTYPES:
            raise TypeError(f"{fn}: arrays[{i}] has dtype {a.dtype}; expected one of "
                            f"{', '.join(d.name for d in _DTYPES)}")
        if not a.flags.writeable:
            raise ValueError(f"{fn}: arrays[{i}] is read-only; the result is written in place")
        if not a.flags.c_contiguous:
            raise ValueError(f"{fn}: arrays[{i}] must be C-contiguous (updated in place, not through a copy); "
                             f"got strides {a.strides} for shape {a.shape}")
    _check_disjoint(fn, out)
    return out


def _check_disjoint(fn: str, arrays: list[np.ndarray]) -> None:
    """Overlapping arrays would be read and written twice: refuse them (sorted by address, O(n log n))."""
    if all(a.base is None for a in arrays) and len({id(a) for a in arrays}) == len(arrays):
        return  # distinct arrays that own their memory cannot overlap (reading addresses costs us per array)
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, i) for i, a in enumerate(arrays) if a.nbytes)
    for (lo0, n0, i0), (lo1, _, i1) in zip(spans, spans[1:]):
        if lo1 < lo0 + n0:
            raise ValueError(f"{fn}: arrays[{min(i0, i1)}] and arrays[{max(i0, i1)}] overlap in memory")


def _groups(arrays: list[np.ndarray]) -> dict[np.dtype, list[np.ndarray]]:
    """Non-empty arrays grouped by dtype, in call order (each seen as its C-order elements)."""
    groups: dict[np.dtype, list[np.ndarray]] = {}
    for a in arrays:
        if a.size:
            groups.setdefault(a.dtype, []).append(a)
    return groups


@functools.lru_cache(maxsize=64)
def _plan(sizes: tuple[int, ...], capacity: int) -> tuple:
    """Cut the stream of ``sizes`` elements into buckets of at most ``capacity`` elements.

    Returns, per bucket, its length and its (array position, offset in the
    array, offset in the bucket, count) segments. Cached: a training loop
    reduces the same shapes at every step.
    """
    buckets, segments, filled = [], [], 0
    for pos, size in enumerate(sizes):
        offset = 0
        while offset < size:
            count = min(size - offset, capacity - filled)
            segments.append((pos, offset, filled, count))
            offset += count
            filled += count
            if filled == capacity:
                buckets.append((filled, tuple(segments)))
                segments, filled = [], 0
    if filled:
        buckets.append((filled, tuple(segments)))
    return tuple(buckets)


def _buckets(flats: list[np.ndarray], dtype: np.dtype):
    """(staging buffer, segments) per bucket of one dtype group; the buffer is reused between buckets."""
    capacity = max(1, BUCKET_BYTES // dtype.itemsize)
    for length, segments in _plan(tuple(f.size for f in flats), capacity):
        buf = _buffers.get(dtype)
        if buf is None or buf.size < length:
            buf = _buffers[dtype] = np.empty(min(capacity, sum(f.size for f in flats)), dtype=dtype)
        yield buf[:length], segments


def _native_moves():
    """The compiled module's gather/scatter (one call per bucket, the GIL released), or None."""
    try:
        from .._lepton_cpu import gather, scatter
    except ImportError:
        return None
    return gather, scatter


_NATIVE_MOVES = _native_moves()


def _parts(flats: list[np.ndarray], segments) -> list[np.ndarray]:
    """The arrays, or views of their elements, that one bucket holds, in bucket order (an array
    the bucket holds whole is passed as it is: a model's gradients are usually one bucket)."""
    return [flats[pos] if count == flats[pos].size else flats[pos].reshape(-1)[src:src + count]
            for pos, src, _, count in segments]


def pack(buf: np.ndarray, parts: list[np.ndarray], scale=None) -> None:
    """buf <- the parts' elements in order, times ``scale`` (float buffers) when given."""
    factor = 1.0 if scale is None else scale
    if _NATIVE_MOVES is not None and (factor == 1 or buf.dtype in _FLOATS):
        try:
            _NATIVE_MOVES[0](parts, buf, factor)
            return
        except TypeError:  # a part of another dtype (a float64 gradient of float32 weights): cast below
            pass
    np.concatenate([p.reshape(-1) for p in parts], out=buf, casting="same_kind")
    if factor != 1:
        np.multiply(buf, factor, out=buf, casting="unsafe")


def unpack(buf: np.ndarray, parts: list[np.ndarray], divisor: int = 1) -> None:
    """Each part <- its slice of buf (in order), divided by ``divisor`` (float buffers, "mean")."""
    if _NATIVE_MOVES is not None:
        _NATIVE_MOVES[1](buf, parts, float(divisor))
        return
    start = 0
    for part in parts:
        piece = buf[start:start + part.size]
        start += part.size
        part = part.reshape(-1)  # a view: the parts are C-contiguous
        if divisor != 1:
            np.divide(piece, divisor, out=part)
        else:
            part[...] = piece


_mpi_ops: dict = {}  # op name -> MPI.Op, filled on the first reduction of a multi-process world


def _reduce_bucket(world, buf: np.ndarray, op: str) -> None:
    if not _mpi_ops:
        from mpi4py import MPI  # noqa: PLC0415 - only a world of more than one process has it

        _mpi_ops.update(mean=MPI.SUM, sum=MPI.SUM, max=MPI.MAX, min=MPI.MIN, in_place=MPI.IN_PLACE)
    _world.wait(world.comm.Iallreduce(_mpi_ops["in_place"], buf, _mpi_ops[op]), f"all_reduce({op})")


def reduce_contiguous(buf: np.ndarray, op: str) -> None:
    """All-reduce one contiguous 1-D buffer in place ("mean" not divided), one message per bucket."""
    world = _world.usable()
    if world.size == 1:
        return
    step = max(1, BUCKET_BYTES // buf.itemsize)
    for start in range(0, buf.size, step):
        _reduce_bucket(world, buf[start:start + step], op)


def reduce_flat(arrays: list[np.ndarray], op: str, scale: float | None = None) -> None:
    """All-reduce validated arrays in place: ``sum_r scale_r * arrays_r[i]`` ("sum"), the mean, max or min.

    ``scale`` (this rank's weight, or None) multiplies the packed buffer before
    the reduction: one pass, whatever the number of arrays.
    """
    world = _world.usable()
    if world.size == 1 and scale is None:
        return
    for dtype, flats in _groups(arrays).items():
        for buf, segments in _buckets(flats, dtype):
            parts = _parts(flats, segments)
            pack(buf, parts, scale)
            if world.size > 1:
                _reduce_bucket(world, buf, op)
            # "mean" divides on the way back: one pass over the bucket, not two
            unpack(buf, parts, world.size if op == "mean" else 1)


def all_reduce(arrays, op: str = "mean") -> None:
    """Reduce arrays element-wise over all ranks, in place, with one message per bucket.

    Every rank passes arrays of the same shapes and dtypes in the same order;
    afterwards each rank holds the same result
    ``arrays[i] = reduce_r arrays_r[i]``.

    Parameters
    ----------
    arrays : numpy.ndarray or list/tuple of numpy.ndarray
        Writable, C-contiguous, pairwise non-overlapping; float32/float64 or
        (u)int8/16/32/64. Mixed dtypes are reduced in one buffer per dtype.
    op : {"mean", "sum", "max", "min"}
        "mean" is the sum divided by ``world_size()`` (floating dtypes only).

    Raises
    ------
    TypeError
        ``arrays`` is not NumPy arrays of a supported dtype; "mean" of an
        integer array.
    ValueError
        ``op`` unknown; an array is read-only, non-contiguous or overlaps another.
    RuntimeError
        A rank did not take part within ``LEPTON_DIST_TIMEOUT`` seconds.

    Notes
    -----
    In a single process (no ``mpiexec``) the arrays are validated and left
    unchanged. NaN propagates through "sum" and "mean"; for "max"/"min" the
    result follows the MPI library's comparison.
    """
    arrays = _checked_arrays("all_reduce", arrays)
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, OPS))}; got {op!r}")
    if op == "mean":
        for i, a in enumerate(arrays):
            if a.dtype.kind != "f":
                raise TypeError(f"all_reduce: op='mean' needs floating arrays; arrays[{i}] has dtype {a.dtype} "
                                f"(use op='sum')")
    reduce_flat(arrays, op)


def broadcast(arrays, root: int = 0) -> None:
    """Copy the arrays of rank ``root`` into the same arrays of every rank, in place.

    Parameters
    ----------
    arrays : numpy.ndarray or list/tuple of numpy.ndarray
        As for :func:`all_reduce`; the same shapes and dtypes on every rank.
    root : int, default 0
        The rank whose values everyone receives, ``0 <= root < world_size()``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`all_reduce`; ``root`` not an int or out of range.
    RuntimeError
        A rank did not take part within ``LEPTON_DIST_TIMEOUT`` seconds.
    """
    arrays = _checked_arrays("broadcast", arrays)
    if isinstance(root, bool) or not isinstance(root, numbers.Integral):
        raise TypeError(f"broadcast: root must be an int; got {type(root).__name__}")
    world = _world.usable()
    if not 0 <= root < world.size:
        raise ValueError(f"broadcast: root must be in [0, {world.size}) (the world size); got {root}")
    if world.size == 1:
        return
    root = int(root)
    for dtype, flats in _groups(arrays).items():
        for buf, segments in _buckets(flats, dtype):
            parts = _parts(flats, segments)
            if world.rank == root:
                pack(buf, parts)
            _world.wait(world.comm.Ibcast(buf, root=root), f"broadcast(root={root})")
            if world.rank != root:
                unpack(buf, parts)
