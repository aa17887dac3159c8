"""pytest-benchmark: relu, relu_backward, bias_relu and its backward (cases in
``lepton_kernels/bench/cases_elementwise.py``), lepton backends vs torch and numpy."""
FAMILY = "elementwise"


def test_elementwise(bench_case, impl, run_bench_case):
    run_bench_case(bench_case, impl)
