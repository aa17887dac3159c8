"""``lepton-kernels`` command line: ``info`` (what this installation and
machine have) and ``bench`` (time every registered case against the
machine's limits and PyTorch/NumPy).

Subcommands are registered with :func:`register_command`; a later family adds
its own (``train``, ``quantize``, ``eval``) by calling it from a module listed
in ``COMMAND_MODULES``. A bad request (unknown op or backend, missing device
or plotting library) prints one line and exits with status 2, never a
traceback; ``LEPTON_DEBUG=1`` shows tracebacks of unexpected errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

PROG = "lepton-kernels"


class CliError(Exception):
    """A user error: message printed, exit status 2."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}
# Modules that call register_command() at import (later issues add theirs).
COMMAND_MODULES: tuple[str, ...] = ("lepton_kernels.cli_train", "lepton_kernels.cli_quantize")


def register_command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand: ``configure(parser)`` adds its arguments, ``run(args)``
    returns the exit status (raise :class:`CliError` for a user error)."""
    _COMMANDS[name] = Command(name, help, configure, run)


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [CliError]
    try:
        from .bench.report import PlotUnavailable
        from .bench.runner import BenchError

        errors += [BenchError, PlotUnavailable]
    except Exception:
        pass
    return tuple(errors)


# ---------------------------------------------------------------- helpers
def _csv(values: Sequence[str] | None) -> list[str] | None:
    """``--x a,b --x c`` -> [a, b, c]; None when the option was not given."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _try(fn: Callable[[], Any], default: Any = None) -> Any:
    try:
        return fn()
    except Exception:
        return default


# ---------------------------------------------------------------- info
_OPENMP = {200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0", 201511: "4.5",
           201811: "5.0", 202011: "5.1", 202111: "5.2"}


def collect_info(measure_limits: bool = False) -> dict[str, Any]:
    """Everything ``info`` prints, as a dict (``info --json``)."""
    import lepton_kernels as lk

    from .bench import machine

    pkg_dir = Path(lk.__file__).resolve().parent
    build = {}
    try:
        from . import _build_info as bi

        build = {k: getattr(bi, k) for k in dir(bi) if k.isupper()}
    except Exception as exc:
        build = {"error": f"no build info ({type(exc).__name__}: {exc}); running from a source tree?"}
    cpu_mod = _try(lambda: __import__("lepton_kernels._lepton_cpu", fromlist=["_"]))
    cpu = machine.describe_cpu()
    cpu["native_module"] = getattr(cpu_mod, "__file__", None) if cpu_mod is not None else None
    include, lib = pkg_dir / "include", pkg_dir / "lib"
    info: dict[str, Any] = {
        "version": getattr(lk, "__version__", "?"),
        "location": str(pkg_dir),
        "build": build,
        "install": {
            "include": str(include) if include.is_dir() else None,
            "headers": sorted(p.name for p in (include / "lepton").glob("*.h")) if include.is_dir() else [],
            "lib": str(lib) if lib.is_dir() else None,
            "libraries": sorted(p.name for p in lib.iterdir()) if lib.is_dir() else [],
        },
        "cpu": cpu,
        "backends": _try(lk.backends, {}),
        "cuda": machine.describe_cuda(),
        "versions": cpu.pop("versions", {}),
    }
    if measure_limits:
        info["limits"] = machine.measure_cpu_limits()
    return info


def format_info(info: dict[str, Any]) -> str:
    out = [f"lepton_kernels {info['version']}", f"  location      {info['location']}", "", "Build"]
    build = info["build"]
    if "error" in build:
        out.append(f"  {build['error']}")
    else:
        out += [f"  compiler      {build.get('CXX_COMPILER', '?')}",
                f"  build type    {build.get('BUILD_TYPE', '?')}",
                f"  CUDA module   {'built' if build.get('CUDA_BUILT') else 'not built'}"
                + (f" (architectures {build.get('CUDA_ARCHITECTURES')})" if build.get("CUDA_BUILT") else "")]
    inst = info["install"]
    out.append(f"  C++ headers   {inst['include'] or 'not installed'}"
               + (f"  ({', '.join(inst['headers'])})" if inst["headers"] else ""))
    out.append(f"  C++ library   {inst['lib'] or 'not installed'}"
               + (f"  ({', '.join(inst['libraries'])})" if inst["libraries"] else ""))

    cpu = info["cpu"]
    omp = cpu.get("openmp_version")
    omp_text = f"{omp} (OpenMP {_OPENMP[omp]})" if isinstance(omp, int) and omp in _OPENMP else str(omp or "unknown")
    out += ["", "CPU",
            f"  model         {cpu['cpu_model']}",
            f"  cores         {cpu['logical_cpus']} logical, {cpu.get('physical_cores') or '?'} physical",
            f"  last-level $  {cpu['llc_bytes'] // 2**20} MiB" if cpu.get("llc_bytes") else "  last-level $  unknown",
            f"  ISA variant   {cpu.get('isa') or 'unknown (native module missing)'}"
            + (f" (detected: {cpu['detected_isa']})" if cpu.get("detected_isa") else ""),
            f"  threads       {cpu.get('threads')}",
            f"  OpenMP        {omp_text}"]
    feats = cpu.get("cpu_features")
    if feats:
        wrapped = textwrap.wrap(" ".join(feats), 88)
        out.append(f"  features      {wrapped[0]}")
        out += [f"                {w}" for w in wrapped[1:]]
    if not cpu.get("native_module"):
        out.append("  native module _lepton_cpu: not importable")
    if "limits" in info:
        lim = info["limits"]
        out.append(f"  limits        fp32 FMA {lim['fma_gflops']:.1f} GFLOP/s, copy {lim['copy_gbs']:.1f} GB/s "
                   f"({lim['threads']} threads)")

    out += ["", "Backends (in order of preference)"]
    for device, entries in info["backends"].items():
        for i, (name, status) in enumerate(entries.items()):
            label = f"{device}:" if i == 0 else ""
            out.append(f"  {label:<6}{name:<10} {status}")

    cuda = info["cuda"]
    out += ["", "CUDA"]
    devs = cuda.get("devices", [])
    if devs:
        for d in devs:
            extra = f" (sm_{d['compute_capability'].replace('.', '')}, {d['sms']} SMs)" if "sms" in d else ""
            out.append(f"  device {d['index']}      {d['name']}{extra}")
    else:
        out.append("  devices       none")
    if cuda.get("runtime_version") is not None:
        out.append(f"  runtime       {_cuda_version(cuda.get('runtime_version'))}, "
                   f"driver {_cuda_version(cuda.get('driver_version'))}")
    if not devs:
        for source, why in cuda.get("errors", {}).items():
            out.append(f"  {source + ':':<13} {why[:110]}")

    out += ["", "Python packages"]
    out.append("  " + ", ".join(f"{k} {v or '-'}" for k, v in info["versions"].items() if k != "lepton_kernels"))
    return "\n".join(out)


def _cuda_version(v) -> str:
    """CUDA's 12040 -> "12.4"; 0 (no driver) -> "none"."""
    if not isinstance(v, int):
        return "?" if v is None else str(v)
    return f"{v // 1000}.{v % 1000 // 10}" if v > 0 else "none"


def _configure_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the information as JSON")
    p.add_argument("--limits", action="store_true",
                   help="also measure the fp32 FMA peak and copy bandwidth (a few seconds)")


def _run_info(args: argparse.Namespace) -> int:
    info = collect_info(measure_limits=args.limits)
    print(json.dumps(info, indent=1, default=str) if args.json else format_info(info))
    return 0


# ---------------------------------------------------------------- bench
def _configure_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ops", action="append", metavar="OPS",
                   help="comma list (repeatable) of ops, families, case names or globs; default: all")
    p.add_argument("--backends", action="append", metavar="NAMES",
                   help="comma list (repeatable) of lepton backends (native, numba, cupy, reference); "
                        "default: every available one except reference")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=_positive_int, help="threads for lepton and PyTorch (default: all cores)")
    p.add_argument("--repeats", type=_positive_int, help="exactly N timed samples per measurement")
    p.add_argument("--quick", action="store_true", help="short timings (for smoke tests, not for reporting)")
    p.add_argument("--json", metavar="FILE", help="write machine description, settings and raw timings")
    p.add_argument("--plot", metavar="FILE", help="bar chart of the speed-ups (PNG; needs matplotlib)")
    p.add_argument("--no-baselines", action="store_true", help="skip the PyTorch and NumPy baselines")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)


def _check_cuda() -> None:
    try:
        import cupy as cp

        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise CliError(f"--device cuda needs CuPy and a CUDA device ({type(exc).__name__}: {exc})") from None
    if n < 1:
        raise CliError("--device cuda: no CUDA device found")


def _run_bench(args: argparse.Namespace) -> int:
    import lepton_kernels as lk

    from .bench import machine, report, runner
    from .bench.registry import select_cases

    if args.plot:
        report.require_matplotlib()
    if args.device == "cuda":
        _check_cuda()
    try:
        cases = select_cases(_csv(args.ops), device=args.device)
    except LookupError as exc:
        raise CliError(str(exc.args[0])) from None
    if not cases:
        raise CliError(f"no benchmark case matches {args.ops} on {args.device}")
    if args.list:
        for c in cases:
            bases = ",".join(c.baselines) or "-"
            print(f"{c.name:<44} {c.family:<12} {c.bytes_moved / 2**20:8.1f} MiB  baselines: {bases}")
        return 0
    warn = lambda msg: print(f"{PROG} bench: {msg}", file=sys.stderr)  # noqa: E731
    backends = runner.resolve_backends(_csv(args.backends), args.device, warn=warn)

    baselines: tuple[str, ...] = ()
    if not args.no_baselines:
        for name, why in runner.available_baselines(args.device).items():
            if why is None:
                baselines += (name,)
            else:
                warn(f"no {name} baseline: {why}")
    threads = args.threads or lk.get_num_threads()
    runner.set_threads(threads, torch_too="torch" in baselines)

    settings = runner.TimingSettings.quick() if args.quick else runner.TimingSettings()
    if args.repeats:
        settings = settings.fixed(args.repeats)
    if not args.no_progress:
        print(f"{PROG} bench: measuring machine limits ({threads} threads)...", file=sys.stderr, flush=True)
    desc = machine.describe_machine(args.device, threads)
    plan = runner.Plan(cases=cases, backends=backends, device=args.device, baselines=baselines,
                       settings=settings, seed=args.seed)
    progress = report.Progress(plan.steps(), enabled=not args.no_progress)
    try:
        results = runner.run_plan(plan, desc["limits"], progress)
    finally:
        progress.close()
    if args.device == "cpu":  # best of the probes before and after the run
        desc["limits"] = machine.remeasure_cpu_limits(desc["limits"])
        runner.refill_metrics(results, cases, desc["limits"])
    print(report.format_report(desc, results))

    if args.json:
        meta = {"device": args.device, "backends": backends, "baselines": list(baselines),
                "threads": threads, "quick": args.quick, "timing": dataclasses.asdict(settings)}
        argv = sys.argv[1:] if args.argv is None else args.argv
        report.write_json(args.json, report.report_dict(desc, results, meta, argv))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot_speedups(results, args.plot,
                             title=f"lepton_kernels speed-up, {desc['cpu']['cpu_model']}, {threads} threads")
        print(f"wrote {args.plot}", file=sys.stderr)
    failed = [r for r in results if r.error and r.kind == "lepton"]
    return 1 if failed else 0


register_command("info", "version, build, CPU features and ISA, threads, backends, CUDA devices",
                 _configure_info, _run_info)
register_command("bench", "time the kernels against the machine's limits and PyTorch/NumPy",
                 _configure_bench, _run_bench)


# ---------------------------------------------------------------- main
def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # one broken command must not take down `info`
            print(f"{PROG}: warning: commands from {name} unavailable ({type(exc).__name__}: {exc})",
                  file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = argparse.ArgumentParser(prog=PROG, description="lepton_kernels: compiled CNN kernels for Python.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(handler=cmd.run)
    return parser


def _version() -> str:
    try:
        import lepton_kernels

        return lepton_kernels.__version__
    except Exception:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lepton-kernels`` and ``python -m lepton_kernels``;
    returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(argv) if argv is not None else None
    try:
        return int(args.handler(args) or 0)
    except _user_errors() as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lepton-kernels bench | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("LEPTON_DEBUG"):
            raise
        print(f"{PROG} {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set LEPTON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
