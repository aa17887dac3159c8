"""DLPack tensors in, the same type out, zero-copy; backend registry and selection."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _backend
from lepton_kernels import reference as ref

torch = pytest.importorskip("torch")


def test_torch_tensor_in_torch_tensor_out():
    t = torch.randn(2, 3, 8, 8)
    y = lk.relu(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), ref.relu(t.numpy()).astype(np.float32))
    pooled, idx = lk.max_pool2d(t, 2, return_indices=True)
    assert isinstance(pooled, torch.Tensor) and isinstance(idx, torch.Tensor) and idx.dtype == torch.int64
    tp, tidx = torch.nn.functional.max_pool2d(t, 2, return_indices=True)
    assert torch.equal(pooled, tp) and torch.equal(idx, tidx)
    grad = lk.max_pool2d_backward(torch.ones_like(pooled), idx, tuple(t.shape))
    assert isinstance(grad, torch.Tensor) and grad.shape == t.shape
    gx, gb = lk.bias_relu_backward(torch.ones_like(t), lk.bias_relu(t, torch.zeros(3)))
    assert isinstance(gx, torch.Tensor) and isinstance(gb, torch.Tensor)


def test_torch_results_share_memory_with_out():
    t = torch.randn(64)
    out = torch.empty(64)
    assert lk.relu(t, out=out) is out
    assert torch.equal(out, torch.relu(t))
    lk.relu(t, out=t)  # in place, through DLPack views of the same memory
    assert torch.equal(t, out)


def test_torch_input_is_read_zero_copy():
    t = torch.randn(4, 4)
    view, kind = __import__("lepton_kernels.ops._arrays", fromlist=["intake"]).intake("relu", "x", t)
    assert kind.device == "cpu"
    assert view.__array_interface__["data"][0] == t.data_ptr()


def test_noncontiguous_torch_tensor():
    t = torch.randn(4, 6, 10, 10).permute(0, 1, 3, 2)
    np.testing.assert_array_equal(lk.max_pool2d(t, 2).numpy(),
                                  torch.nn.functional.max_pool2d(t, 2).numpy())


def test_tensor_requiring_grad_gets_a_clear_error():
    t = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="relu: x could not be read through DLPack"):
        lk.relu(t)


def test_mixed_devices_and_kinds_are_refused():
    with pytest.raises(TypeError, match="bias_relu: bias"):
        lk.bias_relu(np.ones((2, 3), np.float32), [1.0, 2.0, 3.0])


def test_backends_report_every_backend_with_a_status():
    report = lk.backends()
    assert set(report) == {"cpu", "cuda"}
    assert list(report["cpu"]) == ["native", "numba", "reference"]
    assert set(report["cuda"]) == {"native", "cupy", "numba"}
    for device in report.values():
        for status in device.values():
            assert status == "available" or status.startswith("unavailable: ")
    assert report["cpu"]["reference"] == "available"


def test_native_cpu_backend_is_built():
    """An installed package must have its compiled module: a silent Numba fallback would hide a broken build."""
    assert _backend.unavailable_reason("native", "cpu") is None, lk.backends()["cpu"]["native"]
    assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._native_cpu"


def test_use_backend_forces_and_restores():
    lk.use_backend("reference")
    try:
        assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._reference_backend"
    finally:
        lk.use_backend(None)
    assert _backend.get_backend("cpu", "relu").__name__ == "lepton_kernels._native_cpu"
