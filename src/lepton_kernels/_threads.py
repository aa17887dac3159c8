"""Thread count shared by the native and Numba CPU backends.

Default: every core (OpenMP's default). ``LEPTON_NUM_THREADS`` sets it at
import; :func:`set_num_threads` changes it at run time.
"""
from __future__ import annotations

import numbers
import os
import sys


def _native():
    try:
        from . import _lepton_cpu
    except ImportError:
        return None
    return _lepton_cpu


def max_num_threads() -> int | None:
    """The most threads :func:`set_num_threads` and the benchmark probes accept.

    4 x the logical CPUs this process may run on, as the native module counts
    them (``lepton::max_num_threads``, the one place the rule is written): more
    threads buy no speed, and tens of thousands exhaust the OpenMP runtime.
    None without the native module (Numba caps its own count).
    """
    native = _native()
    return native.max_num_threads() if native is not None else None


def check_num_threads(op: str, name: str, n) -> int:
    """``n`` as an int in [1, :func:`max_num_threads`], else ValueError naming ``op`` and ``name``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{op}: {name} must be an int >= 1, got {n!r}")
    most = max_num_threads()
    if most is not None and n > most:
        raise ValueError(f"{op}: {name} must be at most {most} (4 x the logical CPUs this process may use), "
                         f"got {n}")
    return int(n)


def set_num_threads(n: int) -> None:
    """Threads used by CPU kernels (native OpenMP and Numba).

    Parameters
    ----------
    n : int
        In [1, :func:`max_num_threads`] (4 x the logical CPUs this process may
        use); larger counts raise ValueError. Numba's count is capped at its
        ``NUMBA_NUM_THREADS``.
    """
    n = check_num_threads("set_num_threads", "n", n)
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
    set_num_threads(check_num_threads("lepton_kernels", "LEPTON_NUM_THREADS", n))
