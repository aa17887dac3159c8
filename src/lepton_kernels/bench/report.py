"""Benchmark output: the text table, the JSON file, the speed-up bar chart,
and a dependency-free progress bar on stderr."""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
from typing import IO, Any, Sequence

from .runner import Result

SCHEMA = 1


# ---------------------------------------------------------------- progress
class Progress:
    """``[#####-----]  7/28  relu/64x64x64x64 native  0:12`` redrawn in place
    on a terminal; one line per step otherwise (logs, CI)."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 24, enabled: bool = True):
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        self.done += 1
        filled = int(self.width * (self.done - 1) / self.total)
        elapsed = int(time.perf_counter() - self.start)
        line = (f"[{'#' * filled}{'-' * (self.width - filled)}] {self.done:>3}/{self.total} "
                f"{elapsed // 60}:{elapsed % 60:02d}  {label}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:120])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


# ---------------------------------------------------------------- text
def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:{spec}}{suffix}"


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "?"


def machine_summary(machine: dict) -> str:
    cpu = machine.get("cpu", {})
    lim = machine.get("limits", {})
    threads = lim.get("threads", cpu.get("threads"))
    lines = [
        f"machine: {cpu.get('cpu_model')} | {cpu.get('logical_cpus')} logical CPUs, "
        f"LLC {_mib(cpu.get('llc_bytes'))} | ISA {cpu.get('isa') or '?'} | threads {threads}",
    ]
    if machine.get("device") == "cuda":
        devs = machine.get("cuda", {}).get("devices", [])
        lines.append("cuda: " + (", ".join(d.get("name", "?") for d in devs) or "no device"))
    busy = cpu.get("busy_fraction")
    if busy is not None and busy > 0.1:
        lines.append(f"warning: {busy:.0%} of the CPUs were busy with other work when the run started; "
                     "the timings are noisy")
    if lim:
        def probes(key):
            samples = lim.get(f"{key}_samples") or []
            return f" (best of {', '.join(f'{v:.1f}' for v in samples)})" if len(samples) > 1 else ""

        lines.append(
            f"limits: fp32 FMA {_fmt(lim.get('fma_gflops'), '.1f', ' GFLOP/s')}{probes('fma_gflops')}, "
            f"copy {_fmt(lim.get('copy_gbs'), '.1f', ' GB/s')}{probes('copy_gbs')}, "
            + (f"int8 VNNI {_fmt(lim.get('int8_gops'), '.0f', ' GOP/s')}{probes('int8_gops')}, "
               if lim.get("int8_gops") else "")
            + f"{_mib(lim.get('copy_buffer_bytes'))} buffer  [{lim.get('source', '')}]"
        )
    return "\n".join(lines)


NOISY = 1.5  # median / fastest sample above this: the samples disagree (other load, throttling)
HEADERS = ("case", "impl", "median ms", "throughput", "% limit", "vs torch", "vs numpy", "check")


def table_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    rows = []
    last = None
    for r in results:
        name = r.case if r.case != last else ""
        last = r.case
        impl = r.impl if r.kind == "lepton" else f"({r.impl})"
        if r.error:
            rows.append((name, impl, "-", "-", "-", "-", "-", f"error: {r.error[:70]}"))
            continue
        check = {True: "ok", False: "MISMATCH", None: ""}[r.matches_baseline]
        if r.median_s and r.min_s and r.median_s > NOISY * r.min_s:
            check = f"{check} noisy".strip()
        rows.append((
            name, impl,
            _fmt(r.median_s * 1e3 if r.median_s else None, ".3f"),
            _fmt(r.throughput, ".1f", " " + r.unit if r.unit else ""),
            _fmt(r.pct_of_limit, ".0f", "%"),
            _fmt(r.speedup_vs_torch, ".2f", "x"),
            _fmt(r.speedup_vs_numpy, ".2f", "x"),
            check,
        ))
    return rows


def format_table(results: Sequence[Result]) -> str:
    rows = [HEADERS] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    right = {2, 3, 4, 5, 6}
    out = []
    for j, row in enumerate(rows):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_report(machine: dict, results: Sequence[Result]) -> str:
    note = ("% limit: GB/s against the measured copy bandwidth (GFLOP/s against the FMA peak for compute-bound "
            "cases); in-cache sizes can exceed 100%.\nvs torch / vs numpy: baseline median / lepton median "
            "(>1 = lepton faster); (torch), (numpy): baseline rows; check: lepton's values vs a baseline's;\n"
            f"noisy: median > {NOISY}x the fastest sample (rerun on an idle machine).")
    return f"{machine_summary(machine)}\n\n{format_table(results)}\n\n{note}"


# ---------------------------------------------------------------- JSON
def report_dict(machine: dict, results: Sequence[Result], settings: dict | None = None,
                argv: Sequence[str] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv) if argv is not None else None,
        "settings": settings or {},
        "machine": machine,
        "results": [r.to_dict() for r in results],
    }


def _clean(obj):
    """Strict JSON: non-finite floats become null, arrays become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def write_json(path: str, report: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_clean(report), f, indent=1, allow_nan=False)
        f.write("\n")


# ---------------------------------------------------------------- plot
class PlotUnavailable(RuntimeError):
    pass


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the install hint if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except Exception as exc:
        raise PlotUnavailable(
            f"--plot needs matplotlib ({type(exc).__name__}: {exc}); "
            "install it with `pip install matplotlib` or `pip install lepton-kernels[bench]`"
        ) from None


def plot_speedups(results: Sequence[Result], path: str, title: str = "") -> str:
    """Bar chart of lepton's speed-up over PyTorch (NumPy where PyTorch has no
    baseline), one bar per backend per case; returns the path written."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lepton = [r for r in results if r.kind == "lepton" and r.median_s]
    cases = list(dict.fromkeys(r.case for r in lepton))
    backends = list(dict.fromkeys(r.impl for r in lepton))
    if not cases:
        raise PlotUnavailable("--plot: no successful lepton results to draw")
    fig_w = max(6.0, 0.55 * len(cases) * max(1, len(backends)) + 2)
    fig, ax = plt.subplots(figsize=(min(fig_w, 40), 5.5))
    width = 0.8 / len(backends)
    vs_used = set()
    for j, b in enumerate(backends):
        heights = []
        for c in cases:
            r = next((x for x in lepton if x.case == c and x.impl == b), None)
            v = None
            if r is not None:
                v = r.speedup_vs_torch if r.speedup_vs_torch is not None else r.speedup_vs_numpy
                vs_used.add("torch" if r.speedup_vs_torch is not None else "numpy" if v is not None else "")
            heights.append(v if v is not None else float("nan"))
        xs = [i + (j - (len(backends) - 1) / 2) * width for i in range(len(cases))]
        bars = ax.bar(xs, heights, width=width, label=b)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=60, ha="right", fontsize=7)
    base = " / ".join(sorted(v for v in vs_used if v)) or "baseline"
    ax.set_ylabel(f"speed-up over {base} (x)")
    ax.set_yscale("log")
    ax.set_title(title or "lepton_kernels speed-up (baseline time / lepton time)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
