"""Direct calls into the compiled module with bad arguments raise; they never crash or write out of bounds."""
from __future__ import annotations

import numpy as np
import pytest

c = pytest.importorskip("lepton_kernels._lepton_cpu")

X = np.ones((2, 3, 4, 4), np.float32)
OUT = np.empty((2, 3, 2, 2), np.float32)


def _read_only(shape):
    a = np.empty(shape, np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("call,exc,words", [
    (lambda: c.relu(X.astype(np.int32), np.empty(X.shape, np.int32)), TypeError, ("relu", "x")),
    (lambda: c.relu(X, np.empty(X.shape, np.float64)), TypeError, ("relu", "out", "dtype")),
    (lambda: c.relu(X[..., ::2], np.empty((2, 3, 4, 2), np.float32)), ValueError, ("relu", "x", "contiguous")),
    (lambda: c.relu(X, np.empty((2, 3), np.float32)), ValueError, ("relu", "out", "shape")),
    (lambda: c.relu([1.0], np.empty(1, np.float32)), TypeError, ("relu", "x")),
    (lambda: c.relu(X, _read_only(X.shape)), ValueError, ("relu", "out", "writeable")),
    (lambda: c.relu_backward(X, X[:1], np.empty(X.shape, np.float32)), ValueError, ("relu_backward",)),
    (lambda: c.bias_relu(X.reshape(2, 3, 16), np.ones(4, np.float32), np.empty((2, 3, 16), np.float32)),
     ValueError, ("bias_relu", "bias")),
    (lambda: c.max_pool2d(X, np.empty((2, 3, 9, 9), np.float32), None, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1),
     ValueError, ("max_pool2d", "out_h")),
    (lambda: c.max_pool2d(X, OUT, None, 0, 2, 2, 2, 0, 0, 0, 0, 1, 1), ValueError, ("max_pool2d", "kernel")),
    (lambda: c.max_pool2d(X, OUT, None, 2, 2, 0, 2, 0, 0, 0, 0, 1, 1), ValueError, ("max_pool2d", "stride")),
    (lambda: c.max_pool2d(X, OUT, None, 2, 2, 2, 2, -1, 0, 0, 0, 1, 1), ValueError, ("max_pool2d", "padding")),
    (lambda: c.max_pool2d(X, OUT, np.empty((2, 3, 2, 2), np.int32), 2, 2, 2, 2, 0, 0, 0, 0, 1, 1), TypeError,
     ("max_pool2d", "indices")),
    (lambda: c.max_pool2d(X, X, None, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1), ValueError, ("max_pool2d", "overlap")),
    (lambda: c.avg_pool2d(X, OUT, 2, 2, 2, 2, 0, 0, 0, 0, True, -3), ValueError, ("avg_pool2d", "divisor")),
    (lambda: c.max_pool2d_backward(OUT, np.full(OUT.shape, 99, np.int64), np.empty(X.shape, np.float32)),
     ValueError, ("max_pool2d_backward", "indices")),
    (lambda: c.set_isa("sse9"), ValueError, ("set_isa",)),
    (lambda: c.set_num_threads(0), ValueError, ("set_num_threads",)),
])
def test_direct_calls_with_bad_arguments_raise(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value).lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {info.value}"


def test_bad_indices_never_write_outside_grad_in():
    buf = np.full(2 * 3 * 16 + 64, 5.0, np.float32)
    grad_in = buf[32:32 + 96].reshape(2, 3, 4, 4)
    idx = np.zeros((2, 3, 2, 2), np.int64)
    idx[1, 2, 1, 1] = 16  # one past the plane
    idx[0, 0, 0, 0] = -7
    with pytest.raises(ValueError):
        c.max_pool2d_backward(np.ones((2, 3, 2, 2), np.float32), idx, grad_in)
    assert np.all(buf[:32] == 5.0) and np.all(buf[32 + 96:] == 5.0)


def test_isa_variants_and_probes():
    assert c.detected_isa() in ("generic", "avx2", "avx512")
    assert c.isa() == c.detected_isa()
    assert c.measure_fma_gflops(1, 0.05) > 0
    assert c.measure_copy_gbs(8 << 20, 1) > 0
    assert c.openmp_version() >= 201511
