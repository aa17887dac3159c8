"""Benchmark case registry.

A :class:`BenchCase` describes one timed call: how to build its inputs, the
lepton call to time, optional PyTorch / NumPy baselines doing the same work,
and how much data it must move and how many flops it must do, so the harness
can turn a time into GB/s or GFLOP/s and a share of the machine's limit.

Each op family has a ``cases_<family>.py`` module in this package that calls
:func:`register` at import; :func:`load_cases` imports all of them
(``pkgutil`` discovery), so a new family needs no edit anywhere else. A case's
``op`` is usually a public op declared in ``lepton_kernels._registry``; its
registry family (``quant`` for the ``int8`` cases) then selects it too.
"""
from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from lepton_kernels import _registry

# inputs: a dict of NumPy arrays (converted to the implementation's array type
# before the factory sees them) and plain Python values (passed unchanged).
Inputs = dict[str, Any]
# factory: inputs -> zero-argument callable that runs the op once and returns its result
Factory = Callable[[Inputs], Callable[[], Any]]

# Machine limits a case can be compared to (keys of machine limits).
LIMITS = {
    "copy_gbs": ("GB/s", "memory copy"),
    "fma_gflops": ("GFLOP/s", "fp32 FMA peak"),
    "int8_gops": ("GOP/s", "int8 multiply-add peak (AVX-512 VNNI)"),
}
COMPUTE_LIMITS = ("fma_gflops", "int8_gops")


@dataclass(frozen=True)
class BenchCase:
    """One benchmarked call.

    Parameters
    ----------
    name : str
        Unique, ``op/variant/shape`` (e.g. ``max_pool2d/k3s2p1/64x64x56x56``).
    family : str
        Op family (``elementwise``, ``pool``, ``conv`` ...); ``--ops`` matches it.
    op : str
        The lepton function timed; ``--ops`` matches it.
    setup : callable
        ``setup(rng) -> Inputs``: NumPy inputs and preallocated outputs. Called
        once per case and device; every implementation shares the arrays.
    lepton : callable
        ``lepton(lk, inputs) -> thunk`` where ``lk`` is the ``lepton_kernels``
        module and ``inputs`` live on the benchmarked device. The backend is
        forced by the harness around the call.
    bytes_moved : int
        Bytes the op must read and write once (inputs + outputs (+ indices)).
    flops : int
        Floating-point (or int) operations per call; 0 for memory-bound ops.
    limit : str
        Key of the machine limit to compare to: ``copy_gbs``, ``fma_gflops`` or
        ``int8_gops`` (flops then counts int8 operations, 2 per multiply-add).
    baselines : mapping
        ``{"torch": factory, "numpy": factory}``; a torch factory receives
        torch tensors (zero-copy views of the inputs), a numpy one NumPy arrays.
    devices : tuple of str
        Devices the case runs on.
    quick : bool
        Kept by ``bench --quick`` (small/representative cases).
    params : mapping
        Descriptive parameters written to the JSON report.
    compare : bool
        Check lepton's result against a baseline's once (values, first output).
    """

    name: str
    family: str
    op: str
    setup: Callable[[np.random.Generator], Inputs]
    lepton: Callable[[Any, Inputs], Callable[[], Any]]
    bytes_moved: int = 0
    flops: int = 0
    limit: str = "copy_gbs"
    baselines: Mapping[str, Factory] = field(default_factory=dict)
    devices: tuple[str, ...] = ("cpu", "cuda")
    quick: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    compare: bool = True

    def __post_init__(self):
        if self.limit not in LIMITS:
            raise ValueError(f"BenchCase {self.name!r}: limit must be one of {sorted(LIMITS)}, got {self.limit!r}")
        unknown = set(self.baselines) - {"torch", "numpy"}
        if unknown:
            raise ValueError(f"BenchCase {self.name!r}: unknown baselines {sorted(unknown)}")

    @property
    def work(self) -> float:
        """The quantity divided by time: bytes for memory-bound, flops otherwise."""
        return float(self.flops if self.limit in COMPUTE_LIMITS else self.bytes_moved)

    def throughput(self, seconds: float) -> float:
        """GB/s or GFLOP/s (10^9 per second) for one call taking ``seconds``."""
        return self.work / seconds / 1e9 if seconds > 0 else float("nan")

    def percent_of(self, seconds: float, limits: Mapping[str, float | None]) -> float | None:
        """Throughput as a percentage of the machine limit this case is bound by."""
        peak = limits.get(self.limit)
        if not peak or seconds <= 0:
            return None
        return 100.0 * self.throughput(seconds) / peak


_CASES: dict[str, BenchCase] = {}
_loaded = False


def register(case: BenchCase) -> BenchCase:
    """Add a case; names are unique (re-registering the same name replaces it)."""
    _CASES[case.name] = case
    return case


def load_cases() -> list[BenchCase]:
    """Import every ``cases_*`` module of this package once; all cases in order."""
    global _loaded
    if not _loaded:
        import lepton_kernels.bench as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if info.name.startswith("cases_"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")
        _loaded = True
    return list(_CASES.values())


def all_cases() -> list[BenchCase]:
    return load_cases()


def _matches(token: str, case: BenchCase) -> bool:
    if token in (case.name, case.op, case.family) or token == _registry.family_of(case.op):
        return True
    if any(ch in token for ch in "*?["):
        return fnmatch.fnmatchcase(case.name, token) or fnmatch.fnmatchcase(case.op, token)
    return case.name.startswith(token + "/")


def select_cases(tokens: list[str] | None = None, *, device: str = "cpu", quick: bool = False) -> list[BenchCase]:
    """Cases matching any token (name, op, family, name prefix or glob) on ``device``.

    Raises
    ------
    LookupError
        When a token matches no case; the message lists the known ops and families.
    """
    cases = [c for c in load_cases() if device in c.devices]
    if tokens:
        unknown = [t for t in tokens if not any(_matches(t, c) for c in load_cases())]
        if unknown:
            ops = sorted({c.op for c in load_cases()})
            fams = sorted({f for c in load_cases() for f in (c.family, _registry.family_of(c.op)) if f})
            raise LookupError(
                f"unknown op {', '.join(map(repr, unknown))}; known ops: {', '.join(ops)}; "
                f"families: {', '.join(fams)} (or a case name / glob, see `bench --list`)"
            )
        cases = [c for c in cases if any(_matches(t, c) for t in tokens)]
    if quick:
        cases = [c for c in cases if c.quick]
    return cases


def shape_str(shape) -> str:
    return "x".join(str(int(s)) for s in shape)
