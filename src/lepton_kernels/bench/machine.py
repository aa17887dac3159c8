"""Machine description and measured limits for the benchmark report.

The limits are what a kernel's throughput is divided by:

* ``fma_gflops``: fp32 FMA peak over the benchmark's threads, measured by
  ``_lepton_cpu.measure_fma_gflops`` (2 flops per lane per FMA, active ISA);
* ``copy_gbs``: sustained copy bandwidth (bytes read + bytes written per
  second) of a 256 MiB buffer, far above any last-level cache, measured by
  ``_lepton_cpu.measure_copy_gbs``.

Without the compiled module both fall back to NumPy (single-threaded copy,
sgemm through NumPy's BLAS) and say so in ``limits["source"]``. Results are
cached per (device, threads) for the life of the process.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._threads import check_num_threads

COPY_BYTES = 256 << 20
COPY_REPEATS = 5
FMA_SECONDS = 0.3

_limits_cache: dict[tuple[str, int], dict[str, Any]] = {}


def _cpu_module():
    try:
        from lepton_kernels import _lepton_cpu
    except Exception:  # not built, or built for another interpreter
        return None
    return _lepton_cpu


def _call(module, name, *args):
    fn = getattr(module, name, None) if module is not None else None
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None if unknown."""
    try:
        cores, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "physical id":
                phys = val.strip()
            elif key == "core id":
                cores.add((phys, val.strip()))
        return len(cores) or None
    except OSError:
        return None


def last_level_cache_bytes() -> int | None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = (0, None)
    try:
        for index in base.glob("index*"):
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:].upper(), 1)
            value = int(size.rstrip("KMGkmg")) * mult
            if level > best[0]:
                best = (level, value)
    except (OSError, ValueError):
        pass
    return best[1]


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait
    except (OSError, ValueError, IndexError):
        return None


def busy_fraction(seconds: float = 0.2) -> float | None:
    """Share of all CPUs busy during ``seconds`` while this process sleeps:
    other work on the machine that will make the timings noisy (Linux only)."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(seconds)
    b = _cpu_times()
    total = b[0] - a[0] if b else 0
    return max(0.0, 1.0 - (b[1] - a[1]) / total) if total > 0 else None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "numba", "cupy", "matplotlib"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception:
            out[name] = None
    try:
        import lepton_kernels

        out["lepton_kernels"] = getattr(lepton_kernels, "__version__", None)
    except Exception:
        out["lepton_kernels"] = None
    return out


def num_threads() -> int:
    """Threads lepton's kernels use now (all cores if unknown)."""
    try:
        import lepton_kernels

        return int(lepton_kernels.get_num_threads())
    except Exception:
        n = _call(_cpu_module(), "get_num_threads")
        return int(n) if n else (os.cpu_count() or 1)


def describe_cpu(check_busy: bool = False) -> dict[str, Any]:
    """Facts about this CPU and the build (no measurement); ``check_busy``
    adds how busy the machine is right now (0.2 s)."""
    mod = _cpu_module()
    features = _call(mod, "cpu_features")
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "llc_bytes": last_level_cache_bytes(),
        "isa": _call(mod, "isa"),
        "detected_isa": _call(mod, "detected_isa"),
        "cpu_features": features.split() if isinstance(features, str) else features,
        "threads": num_threads(),
        "openmp_version": _call(mod, "openmp_version"),
        "platform": platform.platform(),
        "busy_fraction": busy_fraction() if check_busy else None,
        "versions": _versions(),
    }


# ---------------------------------------------------------------- limits
def _numpy_copy_gbs(nbytes: int, repeats: int) -> float:
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def _numpy_sgemm_gflops(seconds: float) -> float:
    n = 1024
    a = np.ones((n, n), np.float32)
    b = np.ones((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure_cpu_limits(threads: int | None = None, *, copy_bytes: int = COPY_BYTES,
                       fma_seconds: float = FMA_SECONDS, refresh: bool = False) -> dict[str, Any]:
    """fp32 FMA GFLOP/s and copy GB/s with ``threads`` threads (cached).

    ``threads``: None for the count lepton's kernels use now, else an int in
    [1, :func:`lepton_kernels._threads.max_num_threads`] (ValueError otherwise,
    as ``set_num_threads``).
    """
    threads = num_threads() if threads is None else check_num_threads("measure_cpu_limits", "threads", threads)
    key = ("cpu", threads)
    if key in _limits_cache and not refresh:
        return _limits_cache[key]
    mod = _cpu_module()
    limits: dict[str, Any] = {"threads": threads, "copy_buffer_bytes": copy_bytes}
    fma = _call(mod, "measure_fma_gflops", threads, fma_seconds)
    copy = _call(mod, "measure_copy_gbs", copy_bytes, COPY_REPEATS)
    sources = []
    if fma and fma > 0:
        sources.append("fma: _lepton_cpu")
    else:
        fma = _numpy_sgemm_gflops(fma_seconds)
        sources.append("fma: numpy sgemm fallback (not the FMA peak)")
    if copy and copy > 0:
        sources.append("copy: _lepton_cpu")
    else:
        copy = _numpy_copy_gbs(copy_bytes, COPY_REPEATS)
        sources.append("copy: numpy single-thread fallback")
    limits.update(fma_gflops=float(fma), copy_gbs=float(copy), source="; ".join(sources))
    has_vnni = getattr(mod, "has_vnni", None)
    if has_vnni is not None and has_vnni():
        limits["int8_gops"] = float(_call(mod, "measure_vnni_gops", threads, fma_seconds) or 0) or None
    _limits_cache[key] = limits
    return limits


def remeasure_cpu_limits(limits: dict[str, Any]) -> dict[str, Any]:
    """Measure again (e.g. after the run) and keep the best of each limit: a
    probe that ran while something else used the machine understates the
    limit, which would overstate every "% of limit". Keeps all samples."""
    again = measure_cpu_limits(limits.get("threads"), copy_bytes=limits.get("copy_buffer_bytes", COPY_BYTES),
                               refresh=True)
    merged = dict(limits)
    for key in ("fma_gflops", "copy_gbs", "int8_gops"):
        if key not in limits:
            continue
        samples = list(limits.get(f"{key}_samples", [limits.get(key)])) + [again.get(key)]
        samples = [v for v in samples if v]
        merged[f"{key}_samples"] = samples
        merged[key] = max(samples) if samples else None
    _limits_cache[("cpu", merged["threads"])] = merged
    return merged


def _cuda_fp32_lanes_per_sm(major: int, minor: int) -> int:
    if major >= 9 or (major == 8 and minor >= 6):
        return 128
    if major == 8 or major == 7:
        return 64
    return 128


def describe_cuda() -> dict[str, Any]:
    """CUDA devices seen by CuPy, else by _lepton_cuda; ``devices`` is empty
    without a GPU, and ``errors`` says why for each source."""
    info: dict[str, Any] = {"devices": [], "errors": {}}
    try:
        from lepton_kernels import _lepton_cuda as lc

        info["native_module"] = True
        for key in ("runtime_version", "driver_version"):
            try:
                info[key] = getattr(lc, key)()
            except Exception:
                pass
        try:
            info["devices"] = [{"index": i, "name": lc.device_name(i)} for i in range(lc.device_count())]
        except Exception as exc:
            info["errors"]["_lepton_cuda"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        info["native_module"] = False
        info["errors"]["_lepton_cuda"] = f"not importable ({type(exc).__name__}: {exc})"
    try:
        import cupy as cp

        info["cupy_runtime_version"] = cp.cuda.runtime.runtimeGetVersion()
        devices = []
        for i in range(cp.cuda.runtime.getDeviceCount()):
            p = cp.cuda.runtime.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
            devices.append({
                "index": i, "name": name, "compute_capability": f"{p['major']}.{p['minor']}",
                "sms": p["multiProcessorCount"], "memory_bytes": p["totalGlobalMem"],
            })
        if devices:
            info["devices"] = devices
    except Exception as exc:
        info["errors"]["cupy"] = f"{type(exc).__name__}: {exc}"
    return info


def measure_cuda_limits(copy_bytes: int = COPY_BYTES, refresh: bool = False) -> dict[str, Any]:
    """Device-to-device copy GB/s (CUDA events) and the theoretical fp32 FMA
    peak from the SM count and clock (no GPU FMA probe is shipped yet)."""
    import cupy as cp

    dev = cp.cuda.Device().id
    key = ("cuda", dev)
    if key in _limits_cache and not refresh:
        return _limits_cache[key]
    src = cp.ones(copy_bytes // 4, cp.float32)
    dst = cp.empty_like(src)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    dst[...] = src
    best = float("inf")
    for _ in range(COPY_REPEATS * 2):
        start.record()
        dst[...] = src
        end.record()
        end.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, end) / 1e3)
    p = cp.cuda.runtime.getDeviceProperties(dev)
    lanes = _cuda_fp32_lanes_per_sm(p["major"], p["minor"])
    clock_khz = p.get("clockRate")  # gone from cudaDeviceProp in CUDA 13
    if not clock_khz:
        try:
            clock_khz = cp.cuda.runtime.deviceGetAttribute(cp.cuda.runtime.cudaDevAttrClockRate, dev)
        except Exception:
            clock_khz = None
    fma = 2.0 * lanes * p["multiProcessorCount"] * clock_khz * 1e3 / 1e9 if clock_khz else None
    limits = {
        "device": dev, "copy_gbs": 2 * src.nbytes / best / 1e9, "fma_gflops": fma,
        "copy_buffer_bytes": copy_bytes, "source": "copy: cupy events; fma: theoretical (SMs x lanes x clock)",
    }
    _limits_cache[key] = limits
    return limits


def describe_machine(device: str = "cpu", threads: int | None = None, *, measure: bool = True) -> dict[str, Any]:
    """Everything the report needs about this machine; ``limits`` is measured
    unless ``measure`` is False (``threads`` as :func:`measure_cpu_limits`)."""
    desc: dict[str, Any] = {"device": device, "cpu": describe_cpu(check_busy=True)}
    if device == "cuda":
        desc["cuda"] = describe_cuda()
        desc["limits"] = measure_cuda_limits() if measure else {}
    else:
        desc["limits"] = measure_cpu_limits(threads) if measure else {}
    return desc
