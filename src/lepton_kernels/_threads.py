"""Thread count shared by the native and Numba CPU backends.

Default: every core (OpenMP's default). ``LEPTON_NUM_THREADS`` sets it at
import; :func:`set_num_threads` changes it at run time.
"""
from __future__ import annotations

import os
import sys


def _native():
    try:
        from . import _lepton_cpu
    except ImportError:
        return None
    return _lepton_cpu


def set_num_threads(n: int) -> None:
    """Threads used by CPU kernels (native OpenMP and Numba).

    Parameters
    ----------
    n : int
        At least 1. Numba's count is capped at its ``NUMBA_NUM_THREADS``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    native = _native()
    if native is not None:
        native.set_num_threads(n)
    if "numba" in sys.modules:  # don't import numba just to set its threads
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """Threads the native CPU kernels use (os.cpu_count() without the native module)."""
    native = _native()
    return native.get_num_threads() if native is not None else (os.cpu_count() or 1)


def apply_environment() -> None:
    value = os.environ.get("LEPTON_NUM_THREADS", "").strip()
    if not value:
        return
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"LEPTON_NUM_THREADS must be a positive integer, got {value!r}") from None
    set_num_threads(n)
