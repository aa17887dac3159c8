"""pytest-benchmark: max/avg pool2d forward (with and without indices) and
backward (cases in ``lepton_kernels/bench/cases_pool.py``), lepton backends vs
torch and numpy."""
FAMILY = "pool"


def test_pool(bench_case, impl, run_bench_case):
    run_bench_case(bench_case, impl)
