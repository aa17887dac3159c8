"""Cost of combining LeNet-5's gradients over MPI, against a raw mpi4py Allreduce of the same buffer.

Run with ``mpiexec -n 2 python bench/mpi_allreduce.py [--steps N]``. Each row
is the median over ``--steps`` timed steps (after warm-up; the cases take
turns step by step, and the ranks are aligned with a barrier before each
timed call, outside the timing) of:

* ``raw Allreduce``: ``comm.Allreduce(MPI.IN_PLACE, flat)`` of one contiguous
  float32 buffer holding all 61,706 gradients: the floor set by the MPI
  library;
* ``all_reduce(mean)``: :func:`lepton_kernels.distributed.all_reduce` on the
  ten gradient arrays (pack, one Iallreduce polled with a deadline, unpack);
* ``sync_gradients``: ``DistributedDataParallel.sync_gradients`` on a LeNet-5
  whose ``.grad`` are set (the same plus the slice weighting and the
  gradient-present flags).

Rank 0 prints the table; the target is at most 100 us per step for the
library's rows on one machine with two processes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lepton_kernels import distributed, models


def _medians_us(steps, comm, cases):
    """Median and 90th percentile per case, in us; the cases take turns at every step, so a load
    change on the machine hits all of them alike."""
    for _ in range(max(steps // 10, 20)):  # warm-up: buffers allocated, MPI paths set up
        for step in cases:
            step()
    times = np.empty((len(cases), steps))
    for i in range(steps):
        for c, step in enumerate(cases):
            comm.Barrier()
            start = time.perf_counter()
            step()
            times[c, i] = time.perf_counter() - start
    return 1e6 * np.median(times, axis=1), 1e6 * np.percentile(times, 90, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if distributed.world_size() < 2:
        raise SystemExit("run under mpiexec with at least 2 processes: mpiexec -n 2 python bench/mpi_allreduce.py")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    model = distributed.DistributedDataParallel(models.LeNet5(seed=0))
    rng = np.random.default_rng(distributed.rank())
    for p in model.parameters():
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    params = model.parameters()
    grads = [p.grad for p in params]
    count = sum(g.size for g in grads)
    flat = np.concatenate([g.reshape(-1) for g in grads])

    def sync():  # as after backward(): fresh gradient arrays (a sync leaves views of its buffer)
        for p, g in zip(params, grads):
            p.grad = g
        model.sync_gradients()

    rows = [
        ("raw Allreduce", lambda: comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)),
        ("all_reduce(mean)", lambda: distributed.all_reduce(grads, op="mean")),
        ("sync_gradients", sync),
    ]
    medians, p90s = _medians_us(args.steps, comm, [step for _, step in rows])
    results = [(name, m, p) for (name, _), m, p in zip(rows, medians, p90s)]
    if distributed.rank() == 0:
        raw = results[0][1]
        print(f"LeNet-5 gradients: {count:,} float32 ({4 * count / 1024:.0f} KiB) in {len(grads)} arrays, "
              f"{distributed.world_size()} processes, {args.steps} steps, {MPI.Get_library_version().splitlines()[0]}")
        print(f"{'case':<20}{'median us':>12}{'p90 us':>10}{'x raw':>8}")
        for name, median, p90 in results:
            print(f"{name:<20}{median:>12.1f}{p90:>10.1f}{median / raw:>8.2f}")


if __name__ == "__main__":
    main()
