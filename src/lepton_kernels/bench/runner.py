"""Timing: warm-up, then repeated samples until a time budget or a repeat
count is reached; the median is what the report uses.

CPU samples use ``time.perf_counter``. CUDA samples bracket the calls with
CuPy events on the current stream and synchronise on the end event, so the
time is the device's, not the launch's. Calls shorter than ~0.2 ms are
batched (``inner`` calls per sample) so timer resolution does not dominate.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .registry import LIMITS, BenchCase

MIN_SAMPLE_S = 2e-4


@dataclass(frozen=True)
class TimingSettings:
    min_time: float = 0.3  # seconds of samples per measurement, at least
    min_reps: int = 5
    max_reps: int = 2000
    warmup_time: float = 0.05  # after the first (compiling / page-faulting) call

    @classmethod
    def quick(cls) -> "TimingSettings":
        return cls(min_time=0.03, min_reps=3, max_reps=50, warmup_time=0.0)

    def fixed(self, reps: int) -> "TimingSettings":
        """Exactly ``reps`` samples, whatever they cost."""
        return TimingSettings(min_time=0.0, min_reps=reps, max_reps=reps, warmup_time=self.warmup_time)


class CpuTimer:
    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner

    def sync(self) -> None:
        pass


class CudaTimer:
    """CUDA events on CuPy's current stream (torch's default stream is the
    same legacy stream); the whole device is synchronised before each sample."""

    def __init__(self):
        import cupy as cp

        self._cp = cp
        self._start = cp.cuda.Event()
        self._end = cp.cuda.Event()

    def sync(self) -> None:
        self._cp.cuda.Device().synchronize()

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        self.sync()
        self._start.record()
        for _ in range(inner):
            fn()
        self._end.record()
        self._end.synchronize()
        return self._cp.cuda.get_elapsed_time(self._start, self._end) / 1e3 / inner


def make_timer(device: str):
    return CudaTimer() if device == "cuda" else CpuTimer()


@dataclass
class Measurement:
    times_s: list[float]  # one entry per sample: seconds per call
    inner: int  # calls per sample
    first_call_s: float  # the untimed first call (JIT compile, first touch)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def measure(fn: Callable[[], Any], settings: TimingSettings, timer=None) -> Measurement:
    """Time ``fn`` (a zero-argument call) per :class:`TimingSettings`."""
    timer = timer or CpuTimer()
    first = timer.sample(fn, 1)
    probe = [first]
    end = time.perf_counter() + settings.warmup_time
    while time.perf_counter() < end or len(probe) < 2:
        probe.append(timer.sample(fn, 1))
        if len(probe) > 1000:
            break
    estimate = min(probe[1:])
    inner = 1 if estimate >= MIN_SAMPLE_S else min(1000, math.ceil(MIN_SAMPLE_S / max(estimate, 1e-9)))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < settings.max_reps:
        times.append(timer.sample(fn, inner))
        if len(times) >= settings.min_reps and time.perf_counter() - start >= settings.min_time:
            break
    return Measurement(times_s=times, inner=inner, first_call_s=first)


# ---------------------------------------------------------------- results
@dataclass
class Result:
    case: str
    family: str
    op: str
    impl: str  # lepton backend name, or "torch" / "numpy"
    kind: str  # "lepton" or "baseline"
    device: str
    bytes_moved: int
    flops: int
    limit: str
    params: dict = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)
    inner: int = 0
    first_call_s: float | None = None
    median_s: float | None = None
    min_s: float | None = None
    throughput: float | None = None  # in `unit`
    unit: str = ""
    pct_of_limit: float | None = None
    speedup_vs_torch: float | None = None  # torch median / this median
    speedup_vs_numpy: float | None = None
    matches_baseline: bool | None = None  # values equal a baseline's (None: not checked)
    compared_with: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fill_metrics(result: Result, case: BenchCase, limits: dict) -> Result:
    """Median, throughput and % of the machine limit from the raw times."""
    if not result.times_s:
        return result
    result.median_s = statistics.median(result.times_s)
    result.min_s = min(result.times_s)
    result.unit = LIMITS[case.limit][0]
    result.throughput = case.throughput(result.median_s)
    result.pct_of_limit = case.percent_of(result.median_s, limits)
    return result


def refill_metrics(results: Sequence[Result], cases: Sequence[BenchCase], limits: dict) -> None:
    """Recompute throughput and % of limit (after the limits were re-measured)."""
    by_name = {c.name: c for c in cases}
    for r in results:
        if r.case in by_name:
            fill_metrics(r, by_name[r.case], limits)


def fill_speedups(results: Sequence[Result]) -> None:
    """Speed-up of every lepton result over the baselines of the same case."""
    by_case: dict[str, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.impl if r.kind == "baseline" else f"lepton:{r.impl}"] = r
    for r in results:
        if r.kind != "lepton" or not r.median_s:
            continue
        for base, attr in (("torch", "speedup_vs_torch"), ("numpy", "speedup_vs_numpy")):
            b = by_case[r.case].get(base)
            if b is not None and b.median_s:
                setattr(r, attr, b.median_s / r.median_s)


# ---------------------------------------------------------------- conversion
def to_impl(inputs: dict, impl: str, device: str) -> dict:
    """Inputs as the implementation's arrays (zero-copy views on the CPU)."""
    if impl == "torch":
        import torch

        if device == "cuda":
            return {k: torch.as_tensor(v, device="cuda") if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    if device == "cuda":
        import cupy as cp

        return {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    return inputs


def to_host(result) -> np.ndarray | None:
    """First output as a fresh NumPy array (for the baseline comparison)."""
    if isinstance(result, (tuple, list)):
        result = result[0] if result else None
    if result is None:
        return None
    if hasattr(result, "detach"):  # torch
        return result.detach().cpu().numpy().copy()
    if hasattr(result, "get") and hasattr(result, "__cuda_array_interface__"):  # cupy
        return result.get()
    return np.array(result, copy=True)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool | None:
    if a is None or b is None:
        return None
    if a.shape != b.shape:
        return False
    if bool(np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)):
        return True
    # float32 reductions over thousands of terms (GEMM, grad_w) differ element-wise by more
    # than 1e-4 where the result is small; compare the whole array's relative error instead.
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)):
        return False
    finite = np.isfinite(b64)
    err = np.linalg.norm((a64 - b64)[finite])
    return bool(err <= 1e-4 * max(np.linalg.norm(b64[finite]), 1e-30))


# ---------------------------------------------------------------- driver
@dataclass
class Plan:
    """What to run: cases x (lepton backends + baselines) on one device."""

    cases: list[BenchCase]
    backends: list[str]
    device: str = "cpu"
    baselines: tuple[str, ...] = ("torch", "numpy")
    settings: TimingSettings = field(default_factory=TimingSettings)
    seed: int = 0

    def steps(self) -> int:
        n = 0
        for c in self.cases:
            n += len(self.backends) + sum(1 for b in self.baselines if b in c.baselines)
        return n


def available_baselines(device: str) -> dict[str, str | None]:
    """{"torch": None (usable) or the reason not, "numpy": ...}."""
    out: dict[str, str | None] = {}
    try:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            out["torch"] = "torch has no CUDA device"
        else:
            out["torch"] = None
    except Exception as exc:
        out["torch"] = f"torch not importable ({type(exc).__name__}: {exc})"
    out["numpy"] = "numpy baselines are CPU only" if device == "cuda" else None
    return out


class _ForcedBackend:
    def __init__(self, lk, name):
        self.lk, self.name = lk, name

    def __enter__(self):
        from lepton_kernels import _backend

        self.prev = getattr(_backend, "_forced", None)
        self.lk.use_backend(self.name)

    def __exit__(self, *exc):
        self.lk.use_backend(self.prev)


def _run_one(thunk_factory, settings, timer) -> tuple[Measurement, Any]:
    thunk = thunk_factory()
    m = measure(thunk, settings, timer)
    return m, thunk()


def run_plan(plan: Plan, limits: dict, progress=None) -> list[Result]:
    """Time every case of ``plan``; errors become results with ``error`` set."""
    import lepton_kernels as lk

    timer = make_timer(plan.device)
    results: list[Result] = []
    for case in plan.cases:
        rng = np.random.default_rng(plan.seed)
        base = dict(case=case.name, family=case.family, op=case.op, device=plan.device,
                    bytes_moved=case.bytes_moved, flops=case.flops, limit=case.limit, params=dict(case.params))
        try:
            host = case.setup(rng)
        except Exception as exc:
            results.append(Result(impl="setup", kind="lepton", error=_err(exc), **base))
            continue
        reference: tuple[str, np.ndarray | None] | None = None
        case_results: list[Result] = []
        for impl in plan.baselines:
            factory = case.baselines.get(impl)
            if factory is None:
                continue
            if progress:
                progress.step(f"{case.name} {impl}")
            r = Result(impl=impl, kind="baseline", **base)
            try:
                inputs = to_impl(host, impl, plan.device)
                m, out = _run_one(lambda: factory(inputs), plan.settings, timer)
                r.times_s, r.inner, r.first_call_s = m.times_s, m.inner, m.first_call_s
                if case.compare and reference is None:
                    reference = (impl, to_host(out))
            except NotImplementedError:
                continue
            except Exception as exc:
                r.error = _err(exc)
            case_results.append(fill_metrics(r, case, limits))
        for name in plan.backends:
            if progress:
                progress.step(f"{case.name} {name}")
            r = Result(impl=name, kind="lepton", **base)
            try:
                inputs = to_impl(host, "lepton", plan.device)
                with _ForcedBackend(lk, name):
                    m, out = _run_one(lambda: case.lepton(lk, inputs), plan.settings, timer)
                r.times_s, r.inner, r.first_call_s = m.times_s, m.inner, m.first_call_s
                if reference is not None:
                    r.compared_with = reference[0]
                    r.matches_baseline = _same(to_host(out), reference[1])
            except Exception as exc:
                r.error = _err(exc)
            case_results.append(fill_metrics(r, case, limits))
        # lepton rows first, then the baselines, in the plan's order
        case_results.sort(key=lambda r: (r.kind != "lepton",))
        results.extend(case_results)
        del host
    fill_speedups(results)
    return results


def _err(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


def set_threads(n: int, *, torch_too: bool = True) -> int:
    """Use ``n`` threads in lepton (native + numba) and in PyTorch."""
    import lepton_kernels as lk

    lk.set_num_threads(n)
    if torch_too:
        try:
            import torch

            torch.set_num_threads(n)
        except Exception:
            pass
    return n


class BenchError(ValueError):
    """A bad benchmark request (unknown op/backend, missing device): the CLI
    prints the message and exits with status 2."""


def resolve_backends(names: Sequence[str] | None, device: str, *, warn=None) -> list[str]:
    """lepton backends to time on ``device``.

    ``None``: every available backend except ``reference`` (the float64 spec,
    not a performance path). Unknown names, or names that do not exist for the
    device, raise :class:`BenchError`; requested but unavailable ones are
    skipped with a warning, and an empty result raises.
    """
    from lepton_kernels import _backend

    status = _backend.backends()[device]
    if names is None:
        chosen = [n for n, s in status.items() if s == "available" and n != "reference"]
        if not chosen:
            reasons = "; ".join(f"{n}: {s}" for n, s in status.items())
            raise BenchError(f"no lepton backend is available for {device} ({reasons})")
        return chosen
    unknown = [n for n in names if n not in _backend.BACKEND_NAMES]
    if unknown:
        raise BenchError(f"unknown backend {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(_backend.BACKEND_NAMES)}")
    wrong_device = [n for n in names if n not in status]
    if wrong_device:
        raise BenchError(f"backend {', '.join(map(repr, wrong_device))} does not exist for {device}; "
                         f"{device} backends: {', '.join(status)}")
    chosen = []
    for n in dict.fromkeys(names):
        if status[n] == "available":
            chosen.append(n)
        elif warn is not None:
            warn(f"skipping backend {n!r} ({status[n]})")
    if not chosen:
        raise BenchError("none of the requested backends is available: "
                         + "; ".join(f"{n}: {status[n]}" for n in names))
    return chosen
