"""Data-parallel training over MPI (mpi4py): N processes compute what one process computes.

Start the processes with ``mpiexec -n N python script.py`` (or
``mpiexec -n N lepton-kernels train ...``). A process started by ``mpiexec``
joins the MPI world on the first call of this package; any other process is
a world of one where every collective returns at once, and mpi4py is never
imported (install it with ``pip install lepton-kernels[mpi]``).

* :func:`init`, :func:`rank`, :func:`world_size`, :func:`is_initialized`,
  :func:`barrier`.
* :func:`all_reduce` / :func:`broadcast`: in place on NumPy arrays, all the
  arrays of one call packed into one flat buffer per dtype and sent in
  buckets of at most ``BUCKET_BYTES`` (one message per bucket, not per array).
* :class:`DistributedDataParallel`: rank 0's parameters broadcast at
  construction; after ``backward()``, :meth:`~DistributedDataParallel.sync_gradients`
  combines the gradients with one bucketed all-reduce before the optimizer
  step.
* ``data.DataLoader(..., distributed=True)``: every global batch is the one a
  single process would draw (same seed, same permutation), cut into equal
  contiguous slices, rank ``r`` taking slice ``r``.

What is averaged, and why N processes match one
-----------------------------------------------
Each rank's loss is the mean over its slice; the gradient of the mean over
the global batch is ``sum_r (n_r / total) * grad_r``, which equals the plain
average when the slices are equal (every full batch) and stays exact for an
uneven last batch. Dropout draws its mask for the whole global batch and
keeps the rank's rows (:func:`lepton_kernels.nn.functional.batch_shard`), so
the random stream matches one process. The remaining difference is float
summation order (the per-rank partial sums and the all-reduce).

BatchNorm
---------
Handled as torch's ``DistributedDataParallel`` (``broadcast_buffers=True``,
no SyncBatchNorm): in training mode each rank normalises with the mean and
variance of its own slice (so a model with BatchNorm does not match the
single-process run exactly: its statistics come from ``total / N`` samples),
and the running statistics — the model's buffers, listed by
``named_buffers()`` — are broadcast from rank 0 before every training-mode
forward and at construction, so every replica evaluates with rank 0's running
statistics. The broadcast applies to any module that exposes
``named_buffers()``.

Failures
--------
Every collective is non-blocking and polled against a deadline of
``LEPTON_DIST_TIMEOUT`` seconds (default 300): when a rank dies the others
raise ``RuntimeError`` and the job is aborted (``MPI_Abort``) as the process
exits, instead of hanging. :func:`check_same` (used by the CLI and by
:class:`DistributedDataParallel`) compares a hash of each rank's
configuration and raises :class:`MismatchError` on every rank when they
differ.
"""
from ._world import (
    TIMEOUT_ENV,
    MismatchError,
    abort_on_error,
    barrier,
    check_same,
    init,
    is_initialized,
    rank,
    world_size,
)
from .collectives import BUCKET_BYTES, OPS, all_reduce, broadcast
from .ddp import BatchShard, DistributedDataParallel

__all__ = ["init", "rank", "world_size", "is_initialized", "barrier", "all_reduce", "broadcast",
           "DistributedDataParallel", "BatchShard", "check_same", "abort_on_error", "MismatchError",
           "BUCKET_BYTES", "OPS", "TIMEOUT_ENV"]
