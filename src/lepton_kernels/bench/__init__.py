"""Benchmark harness: machine limits, the case registry, timing and reports.

``lepton-kernels bench`` drives it; ``bench/`` at the repository root runs the
same cases under pytest-benchmark. An op family adds its cases in a
``cases_<family>.py`` module of this package (discovered automatically)::

    from lepton_kernels.bench.registry import BenchCase, register
    register(BenchCase(name="conv2d/3x3/64x3x32x32", family="conv", op="conv2d",
                       setup=..., lepton=..., flops=..., limit="fma_gflops",
                       baselines={"torch": ...}))
"""
from .machine import describe_machine, measure_cpu_limits
from .registry import LIMITS, BenchCase, load_cases, register, select_cases
from .runner import BenchError, Plan, Result, TimingSettings, measure, resolve_backends, run_plan

__all__ = [
    "BenchCase",
    "BenchError",
    "LIMITS",
    "Plan",
    "Result",
    "TimingSettings",
    "describe_machine",
    "load_cases",
    "measure",
    "measure_cpu_limits",
    "register",
    "resolve_backends",
    "run_plan",
    "select_cases",
]
