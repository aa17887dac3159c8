"""pytest-benchmark suite over the cases registered in ``lepton_kernels.bench``.

Run: ``python -m pytest bench --benchmark-only`` (not part of the test suite).
Each test module sets ``FAMILY``; its tests take the ``bench_case`` and
``impl`` fixtures, parametrized here over that family's cases and over every
lepton CPU backend (skipped when unavailable) plus the torch and numpy
baselines (skipped when the case has none). ``--bench-threads N`` sets the
threads of lepton and PyTorch alike (default: all cores). Results are grouped
per case so pytest-benchmark's table compares the implementations.
"""
from __future__ import annotations

import pytest

import lepton_kernels as lk
from lepton_kernels._backend import BACKEND_NAMES, unavailable_reason
from lepton_kernels.bench import runner
from lepton_kernels.bench.registry import select_cases

LEPTON_IMPLS = tuple(n for n in BACKEND_NAMES if n not in ("cupy", "reference"))
IMPLS = LEPTON_IMPLS + ("torch", "numpy")


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=None,
                     help="threads for lepton and PyTorch (default: all cores)")


@pytest.fixture(scope="session", autouse=True)
def bench_threads(request):
    lk.backends()  # import the backends first so numba's thread count is set too
    n = request.config.getoption("--bench-threads") or lk.get_num_threads()
    runner.set_threads(n)
    return n


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        family = getattr(metafunc.module, "FAMILY")
        cases = select_cases([family], device="cpu")
        metafunc.parametrize("bench_case", cases, ids=[c.name for c in cases], scope="module")
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", IMPLS)


class _Inputs:
    """The current case's inputs, built once and shared by its implementations
    (the cases are large; only one case's arrays are alive at a time)."""

    def __init__(self):
        self.name, self.host = None, None

    def get(self, case):
        if self.name != case.name:
            self.name, self.host = None, None
            self.host = case.setup(__import__("numpy").random.default_rng(0))
            self.name = case.name
        return self.host


@pytest.fixture(scope="session")
def case_inputs():
    return _Inputs()


@pytest.fixture
def run_bench_case(benchmark, case_inputs):
    """``run_bench_case(case, impl)``: benchmark one implementation of a case."""

    def run(case, impl):
        if impl in LEPTON_IMPLS:
            reason = unavailable_reason(impl, "cpu")
            if reason:
                pytest.skip(f"lepton backend {impl} unavailable: {reason}")
        elif impl not in case.baselines:
            pytest.skip(f"{case.name} has no {impl} baseline")
        elif impl == "torch":
            pytest.importorskip("torch")
        host = case_inputs.get(case)
        benchmark.group = case.name
        benchmark.extra_info.update(bytes_moved=case.bytes_moved, flops=case.flops, limit=case.limit,
                                    impl=impl, **{k: v for k, v in case.params.items() if k != "note"})
        if impl in LEPTON_IMPLS:
            lk.use_backend(impl)
            try:
                thunk = case.lepton(lk, host)
                thunk()  # JIT compile / first touch outside the timing
                benchmark(thunk)
            finally:
                lk.use_backend(None)
        else:
            try:
                thunk = case.baselines[impl](runner.to_impl(host, impl, "cpu"))
            except NotImplementedError:
                pytest.skip(f"no {impl} version of {case.name}")
            thunk()
            benchmark(thunk)
        median = benchmark.stats.stats.median if benchmark.stats else None
        if median:
            benchmark.extra_info["throughput"] = case.throughput(median)
            benchmark.extra_info["unit"] = "GFLOP/s" if case.limit == "fma_gflops" else "GB/s"

    return run
