"""The process world: who am I, how many are we, and waiting on MPI requests with a deadline.

A process started by ``mpiexec`` (detected from the variables the MPI process
managers set) joins ``MPI.COMM_WORLD``; any other process is a world of one
in which every collective is a no-op. mpi4py is imported only in the first
case, so single-process use needs no MPI installation.

Every collective here is non-blocking (``Iallreduce``, ``Ibcast``,
``Iallgather``, ``Ibarrier``) and polled against a deadline
(``LEPTON_DIST_TIMEOUT`` seconds, default 300): a rank that died or never
arrives turns into a ``RuntimeError`` on the others instead of a hang. After
such a failure the world is *broken*: the process aborts the whole MPI job
when it exits (``MPI_Abort``), because a pending request cannot be cancelled
and ``MPI_Finalize`` could wait on it forever.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager

import numpy as np

__all__ = ["init", "rank", "world_size", "is_initialized", "barrier", "check_same", "abort_on_error",
           "MismatchError", "TIMEOUT_ENV"]

#: Environment variable holding the collective-call timeout in seconds.
TIMEOUT_ENV = "LEPTON_DIST_TIMEOUT"
_DEFAULT_TIMEOUT = 300.0

# Set by MPICH/Intel MPI (hydra: PMI_*, MPI_LOCALRANKID), PMIx launchers and Open MPI.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
            "MPI_LOCALRANKID", "HYDRA_CONTROL_FD")

# Polling: spin this long first (a collective on one machine takes microseconds),
# then sleep between polls so a slow peer does not cost a busy core.
_SPIN_SECONDS = 2e-3
_MAX_SLEEP = 1e-3


class MismatchError(RuntimeError):
    """Ranks were started with different configurations (arguments, model); every rank raises it."""


class _World:
    """The communicator (None in a world of one), this rank, the size and the failure state."""

    def __init__(self, comm, rank_: int, size: int, timeout: float):
        self.comm, self.rank, self.size, self.timeout = comm, rank_, size, timeout
        self.broken: str | None = None  # why the world can no longer run collectives


_world: _World | None = None


def started_by_mpiexec(environ=None) -> bool:
    """Whether the environment says an MPI process manager started this process."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _MPI_ENV)


def _timeout_from_env() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return _DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"lepton_kernels.distributed: {TIMEOUT_ENV} must be a positive number of seconds; "
                         f"got {text!r}")
    return value


def init() -> None:
    """Join the MPI world when started by ``mpiexec``; otherwise set up a world of one process.

    Called automatically by every function of this package; calling it again
    does nothing. Under ``mpiexec`` mpi4py must be installed
    (``pip install lepton-kernels[mpi]``).

    Raises
    ------
    ImportError
        Started by ``mpiexec`` but mpi4py is missing.
    ValueError
        ``LEPTON_DIST_TIMEOUT`` is not a positive number.
    """
    global _world
    if _world is not None:
        return
    timeout = _timeout_from_env()
    if not started_by_mpiexec():
        _world = _World(None, 0, 1, timeout)
        return
    try:
        from mpi4py import MPI  # noqa: PLC0415 - only under mpiexec
    except ImportError as exc:
        raise ImportError("lepton_kernels.distributed: this process was started by mpiexec but mpi4py is not "
                          "installed (pip install lepton-kernels[mpi])") from exc
    comm = MPI.COMM_WORLD
    _world = _World(comm, comm.Get_rank(), comm.Get_size(), timeout)
    if _world.size > 1:
        # Registered after mpi4py's own finalizer, so it runs first (atexit is LIFO).
        atexit.register(_abort_if_broken)
        _chain_excepthook()


def _get() -> _World:
    if _world is None:
        init()
    return _world


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (0 in a single process)."""
    return _get().rank


def world_size() -> int:
    """Number of processes training together (1 without ``mpiexec``)."""
    return _get().size


def is_initialized() -> bool:
    """Whether :func:`init` has run (explicitly or through another call of this package)."""
    return _world is not None


# ---------------------------------------------------------------- failure handling
# Before MPI_Abort: the launcher forwards output through pipes, and an abort that comes too soon
# cuts the error message that explains it.
_ABORT_GRACE_SECONDS = 0.5


def _abort_if_broken() -> None:
    world = _world
    if world is not None and world.broken is not None and world.comm is not None:
        sys.stderr.flush()
        sys.stdout.flush()
        time.sleep(_ABORT_GRACE_SECONDS)
        world.comm.Abort(1)


def _chain_excepthook() -> None:
    """An uncaught exception on one rank aborts the job at exit instead of leaving the others waiting."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        mark_broken(f"uncaught {kind.__name__}")

    sys.excepthook = hook


def mark_broken(reason: str) -> None:
    """Record that this rank can no longer take part in collectives: the job aborts at exit."""
    world = _get()
    if world.broken is None:
        world.broken = reason


def _is_mismatch(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, MismatchError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def abort_on_error():
    """Inside this block, an exception on one rank aborts the whole job when the process exits.

    Without it the other ranks would wait in their next collective until the
    timeout. A :class:`MismatchError` is exempt: every rank raises it and exits
    on its own with the message.
    """
    try:
        yield
    except BaseException as exc:
        if _get().size > 1 and not _is_mismatch(exc):
            mark_broken(f"{type(exc).__name__}: {exc}")
        raise


def wait(request, what: str) -> None:
    """Poll an MPI request until it completes or the deadline passes (then RuntimeError)."""
    world = _get()
    start = time.monotonic()
    deadline, spin_until, pause = start + world.timeout, start + _SPIN_SECONDS, 1e-5
    while not request.Test():
        now = time.monotonic()
        if now > deadline:
            message = (f"lepton_kernels.distributed: rank {world.rank}: {what} did not complete within "
                       f"{world.timeout:g} s ({TIMEOUT_ENV}); another rank died or stopped calling "
                       f"collectives; aborting the job")
            mark_broken(message)
            raise RuntimeError(message)
        if now > spin_until:
            time.sleep(pause)
            pause = min(2 * pause, _MAX_SLEEP)


def usable() -> _World:
    """The world, after checking that an earlier failure has not broken it."""
    world = _get()
    if world.broken is not None:
        raise RuntimeError(f"lepton_kernels.distributed: rank {world.rank}: the MPI world is unusable after an "
                           f"earlier failure ({world.broken})")
    return world


def barrier() -> None:
    """Wait until every rank has called ``barrier()`` (RuntimeError after the timeout)."""
    world = usable()
    if world.comm is not None and world.size > 1:
        wait(world.comm.Ibarrier(), "barrier")


# ---------------------------------------------------------------- configuration check
def _digest(config) -> bytes:
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).digest()


def check_same(config, what: str = "configuration") -> None:
    """Check that every rank passes an equal ``config``; otherwise every rank raises MismatchError.

    Parameters
    ----------
    config : str or JSON-serialisable object
        Hashed with SHA-256 (JSON with sorted keys; other objects by ``str``);
        only the 32-byte digests travel, in one ``Iallgather``.
    what : str
        Named in the error message ("command-line arguments", "model").

    Raises
    ------
    MismatchError
        On every rank, naming the ranks whose digest differs from rank 0's.
    RuntimeError
        A rank did not arrive within the timeout.
    """
    world = usable()
    if world.size == 1:
        return
    mine = np.frombuffer(_digest(config), dtype=np.uint8).copy()
    every = np.empty((world.size, mine.size), dtype=np.uint8)
    wait(world.comm.Iallgather(mine, every), f"the {what} check")
    differing = [r for r in range(world.size) if not np.array_equal(every[r], every[0])]
    if differing:
        raise MismatchError(f"ranks were started with different {what}: ranks {differing} differ from rank 0 "
                            f"(start every rank with the same arguments, data and library version)")
