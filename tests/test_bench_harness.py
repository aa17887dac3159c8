"""The benchmark harness: throughput and %-of-limit arithmetic, speed-ups,
timing loop, case selection, backend resolution, report writers. Fast: no
case is actually run here (tests/test_cli.py runs one small bench)."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from lepton_kernels.bench import registry, report, runner
from lepton_kernels.bench.registry import BenchCase


def _case(**kw):
    base = dict(name="fake/op", family="fake", op="fake", setup=lambda rng: {}, lepton=lambda lk, d: (lambda: None))
    base.update(kw)
    return BenchCase(**base)


def _result(case, impl, kind, times):
    r = runner.Result(case=case.name, family=case.family, op=case.op, impl=impl, kind=kind, device="cpu",
                      bytes_moved=case.bytes_moved, flops=case.flops, limit=case.limit, times_s=list(times))
    return r


def test_memory_bound_throughput_and_percent():
    case = _case(bytes_moved=2_000_000_000)  # 2 GB per call
    assert case.throughput(0.5) == pytest.approx(4.0)  # GB/s
    assert case.percent_of(0.5, {"copy_gbs": 8.0, "fma_gflops": 100.0}) == pytest.approx(50.0)
    assert case.percent_of(0.5, {"copy_gbs": None}) is None
    assert case.percent_of(0.0, {"copy_gbs": 8.0}) is None


def test_compute_bound_uses_flops_and_fma_limit():
    case = _case(bytes_moved=10, flops=3_000_000_000, limit="fma_gflops")
    assert case.throughput(0.01) == pytest.approx(300.0)  # GFLOP/s
    assert case.percent_of(0.01, {"copy_gbs": 1.0, "fma_gflops": 600.0}) == pytest.approx(50.0)


def test_unknown_limit_and_baseline_are_refused():
    with pytest.raises(ValueError, match="limit"):
        _case(limit="bogus")
    with pytest.raises(ValueError, match="baselines"):
        _case(baselines={"jax": lambda d: None})


def test_fill_metrics_and_speedups_on_fake_timings():
    case = _case(bytes_moved=1_000_000_000)
    limits = {"copy_gbs": 20.0}
    ours = runner.fill_metrics(_result(case, "native", "lepton", [0.1, 0.3, 0.1, 0.1, 0.2]), case, limits)
    torch = runner.fill_metrics(_result(case, "torch", "baseline", [0.5, 0.5, 0.4]), case, limits)
    numpy = runner.fill_metrics(_result(case, "numpy", "baseline", [0.05]), case, limits)
    runner.fill_speedups([ours, torch, numpy])
    assert ours.median_s == pytest.approx(0.1)
    assert ours.throughput == pytest.approx(10.0) and ours.unit == "GB/s"
    assert ours.pct_of_limit == pytest.approx(50.0)
    assert ours.speedup_vs_torch == pytest.approx(5.0)
    assert ours.speedup_vs_numpy == pytest.approx(0.5)
    assert torch.speedup_vs_torch is None  # only lepton rows get ratios


def test_measure_respects_fixed_repeats_and_batches_tiny_calls():
    calls = []
    m = runner.measure(lambda: calls.append(1), runner.TimingSettings().fixed(7))
    assert len(m.times_s) == 7
    assert m.inner > 1  # a no-op is far below the timer's useful resolution
    assert all(t > 0 for t in m.times_s)
    assert len(calls) >= 7 * m.inner


def test_measure_stops_on_time_budget():
    import time

    settings = runner.TimingSettings(min_time=0.02, min_reps=3, max_reps=10_000, warmup_time=0.0)
    m = runner.measure(lambda: time.sleep(0.002), settings)
    assert 3 <= len(m.times_s) < 50
    assert m.median_s == pytest.approx(0.002, rel=2.0)


def test_select_cases_by_op_family_name_and_glob():
    relu = registry.select_cases(["relu"])
    assert relu and {c.op for c in relu} == {"relu"}
    pool = registry.select_cases(["pool"])
    assert {c.family for c in pool} == {"pool"}
    assert {"max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"} <= {c.op for c in pool}
    one = registry.select_cases([relu[0].name])
    assert [c.name for c in one] == [relu[0].name]
    globbed = registry.select_cases(["max_pool2d/k3s2p1*"])
    assert globbed and all(c.name.startswith("max_pool2d/k3s2p1") for c in globbed)
    with pytest.raises(LookupError, match="unknown op 'nosuchop'"):
        registry.select_cases(["relu", "nosuchop"])


def test_registered_cases_are_well_formed():
    cases = registry.load_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    for c in cases:
        assert c.bytes_moved > 0 and c.limit in registry.LIMITS
        assert set(c.baselines) <= {"torch", "numpy"}
    # the targets are all present
    for needed in ("relu/64x64x64x64", "bias_relu/64x64x64x64", "max_pool2d/k2s2/64x64x56x56",
                   "max_pool2d/k3s2p1/64x64x56x56", "max_pool2d_backward/k2s2/64x64x56x56",
                   "avg_pool2d_backward/k3s2p1/64x32x32x32"):
        assert needed in names


def test_relu_large_case_is_above_llc_and_counts_read_plus_write():
    case = next(c for c in registry.load_cases() if c.name == "relu/64x64x64x64")
    assert case.bytes_moved == 2 * 64**4 * 4


def test_numpy_max_pool_indices_match_torch():
    torch = pytest.importorskip("torch")
    from lepton_kernels.bench.cases_pool import max_pool_indices

    x = np.random.default_rng(1).standard_normal((2, 3, 9, 11), dtype=np.float32)
    for k, s, p in ((2, 2, 0), (3, 2, 1)):
        _, ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
        np.testing.assert_array_equal(max_pool_indices(x, k, s, p), ref.numpy())


def test_resolve_backends_errors():
    with pytest.raises(runner.BenchError, match="unknown backend 'bogus'"):
        runner.resolve_backends(["bogus"], "cpu")
    with pytest.raises(runner.BenchError, match="does not exist for cpu"):
        runner.resolve_backends(["cupy"], "cpu")
    default = runner.resolve_backends(None, "cpu")
    assert default and "reference" not in default
    assert runner.resolve_backends(["reference"], "cpu") == ["reference"]


def test_table_and_json_writer(tmp_path):
    case = _case(bytes_moved=1_000_000_000)
    ours = runner.fill_metrics(_result(case, "native", "lepton", [0.1]), case, {"copy_gbs": 20.0})
    torch = runner.fill_metrics(_result(case, "torch", "baseline", [0.3]), case, {"copy_gbs": 20.0})
    bad = _result(case, "numba", "lepton", [])
    bad.error = "RuntimeError: boom"
    runner.fill_speedups([ours, torch, bad])
    text = report.format_table([ours, bad, torch])
    assert "fake/op" in text and "3.00x" in text and "50%" in text and "10.0 GB/s" in text and "error" in text
    machine = {"device": "cpu", "cpu": {"cpu_model": "X"}, "limits": {"copy_gbs": 20.0, "fma_gflops": float("nan")}}
    path = tmp_path / "r.json"
    report.write_json(str(path), report.report_dict(machine, [ours, torch, bad], {"quick": True}, ["bench"]))
    data = json.loads(path.read_text())  # strict JSON: NaN became null
    assert data["machine"]["limits"]["fma_gflops"] is None
    assert data["results"][0]["times_s"] == [0.1]
    assert data["results"][0]["speedup_vs_torch"] == pytest.approx(3.0)


def test_progress_without_terminal_writes_one_line_per_step():
    buf = io.StringIO()
    p = report.Progress(2, stream=buf)
    p.step("a")
    p.step("b")
    p.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("[") and "2/2" in lines[1] and lines[1].endswith("b")


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    case = _case(bytes_moved=1)
    ours = runner.fill_metrics(_result(case, "native", "lepton", [0.1]), case, {})
    torch = runner.fill_metrics(_result(case, "torch", "baseline", [0.2]), case, {})
    runner.fill_speedups([ours, torch])
    out = report.plot_speedups([ours, torch], str(tmp_path / "s.png"))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert math.isclose(ours.speedup_vs_torch, 2.0)


def test_table_flags_noisy_samples():
    case = _case(bytes_moved=1)
    steady = runner.fill_metrics(_result(case, "native", "lepton", [0.10, 0.11, 0.10]), case, {})
    noisy = runner.fill_metrics(_result(case, "numba", "lepton", [0.10, 0.30, 0.30]), case, {})
    rows = {row[1]: row for row in report.table_rows([steady, noisy])}
    assert "noisy" not in rows["native"][-1]
    assert "noisy" in rows["numba"][-1]
