"""The installed package carries what the build promised."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import lepton_kernels as lk


def test_cuda_module_built_when_nvcc_present():
    if shutil.which("nvcc") is None or os.environ.get("LEPTON_CUDA", "AUTO").upper() == "OFF":
        pytest.skip("no nvcc on this machine (or LEPTON_CUDA=OFF): the CUDA module is optional")
    from lepton_kernels import _build_info

    assert _build_info.CUDA_BUILT, "nvcc is on PATH but _lepton_cuda was not built"
    from lepton_kernels import _lepton_cuda  # noqa: F401  (must import without a GPU)


def test_cpp_api_and_cuda_sources_are_installed():
    root = Path(lk.__file__).parent
    for header in ("status.h", "elementwise.h", "pool.h", "runtime.h"):
        assert (root / "include" / "lepton" / header).is_file()
    assert (root / "lib" / "liblepton_core.a").is_file()
    assert sorted(p.name for p in (root / "cuda_kernels").glob("*.cuh"))
