"""`lepton-kernels info` and `lepton-kernels bench`: output sections, the JSON
report, the plot, and exit status 2 with a message (no traceback) on bad
requests. One small real bench run (`--ops relu --quick`) is shared."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lepton_kernels.cli import main


def test_info_prints_key_sections(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for needed in ("lepton_kernels", "Build", "C++ headers", "C++ library", "CPU", "ISA variant", "threads",
                   "OpenMP", "Backends", "cpu:", "native", "numba", "CUDA", "numpy"):
        assert needed in out, needed


def test_info_json_is_valid(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"version", "build", "cpu", "backends", "cuda", "install"} <= set(info)
    assert info["backends"]["cpu"]["reference"] == "available"
    assert info["cpu"]["threads"] >= 1


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "lepton_kernels", "info"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Backends" in proc.stdout


@pytest.fixture(scope="module")
def relu_bench(tmp_path_factory):
    """One quick real run: relu on every available backend + baselines, with JSON and plot."""
    d = tmp_path_factory.mktemp("bench")
    json_path, png_path = d / "r.json", d / "r.png"
    args = ["bench", "--ops", "relu", "--quick", "--no-progress", "--json", str(json_path)]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(png_path)]
    except ImportError:
        png_path = None
    rc = main(args)
    return rc, json_path, png_path


def test_bench_writes_json_with_limits_and_results(relu_bench, capsys):
    rc, json_path, _ = relu_bench
    assert rc == 0
    data = json.loads(json_path.read_text())
    limits = data["machine"]["limits"]
    assert limits["fma_gflops"] > 0 and limits["copy_gbs"] > 0
    assert data["machine"]["cpu"]["cpu_model"]
    results = data["results"]
    assert {r["op"] for r in results} == {"relu"}
    lepton = [r for r in results if r["kind"] == "lepton" and not r["error"]]
    assert lepton, results
    for r in lepton:
        assert r["median_s"] > 0 and r["times_s"] and all(t > 0 for t in r["times_s"])
        assert r["throughput"] > 0 and r["unit"] == "GB/s" and r["pct_of_limit"] > 0
        assert r["matches_baseline"] in (True, None)
    if any(r["impl"] == "torch" for r in results):
        assert all(r["speedup_vs_torch"] > 0 for r in lepton)


def test_bench_plot_is_a_png(relu_bench):
    _, _, png_path = relu_bench
    if png_path is None:
        pytest.skip("matplotlib not installed")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_list(capsys):
    assert main(["bench", "--list", "--ops", "pool"]) == 0
    out = capsys.readouterr().out
    assert "max_pool2d/k2s2/64x64x56x56" in out and "relu/" not in out


@pytest.mark.parametrize("args, message", [
    (["bench", "--ops", "nosuchop"], "unknown op 'nosuchop'"),
    (["bench", "--ops", "relu", "--backends", "bogus"], "unknown backend 'bogus'"),
    (["bench", "--ops", "relu", "--backends", "cupy"], "does not exist for cpu"),
    (["bench", "--threads", "0"], "positive integer"),
    (["bench", "--device", "tpu"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_requests_exit_2_with_a_message(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["bench", "--ops", "relu", "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "Traceback" not in err


def test_cuda_device_without_gpu_is_a_clear_error(capsys):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a CUDA device is present")
    except Exception:
        pass
    assert main(["bench", "--device", "cuda", "--ops", "relu"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_subprocess_bad_op_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "lepton_kernels", "bench", "--ops", "nosuchop"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown op" in proc.stderr and "Traceback" not in proc.stderr
