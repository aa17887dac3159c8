"""Bad input raises ValueError/TypeError naming the op and the argument; nothing is modified."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk

X = np.ones((2, 3, 8, 8), np.float32)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: lk.relu([1.0, 2.0]), TypeError, ("relu", "x", "list")),
    (lambda: lk.relu(np.ones(4, np.int32)), TypeError, ("relu", "x", "int32")),
    (lambda: lk.relu(np.ones(4, np.float16)), TypeError, ("relu", "float16")),
    (lambda: lk.relu(X, out=np.empty((2, 3), np.float32)), ValueError, ("relu", "out", "shape")),
    (lambda: lk.relu(X, out=np.empty(X.shape, np.float64)), TypeError, ("relu", "out", "dtype")),
    (lambda: lk.relu(X, out=np.empty((2, 3, 8, 16), np.float32)[..., ::2]), ValueError, ("out", "contiguous")),
    (lambda: lk.relu_backward(X, np.ones((2, 3), np.float32)), ValueError, ("relu_backward", "x", "shape")),
    (lambda: lk.relu_backward(X, X.astype(np.float64)), TypeError, ("relu_backward", "x", "dtype")),
    (lambda: lk.bias_relu(X, np.ones(4, np.float32)), ValueError, ("bias_relu", "bias", "(3,)")),
    (lambda: lk.bias_relu(X, np.ones((3, 1), np.float32)), ValueError, ("bias_relu", "bias")),
    (lambda: lk.bias_relu(X, np.ones(3, np.float64)), TypeError, ("bias_relu", "bias", "dtype")),
    (lambda: lk.bias_relu(np.ones(5, np.float32), np.ones(5, np.float32)), ValueError, ("bias_relu", "x", "1-D")),
    (lambda: lk.bias_relu_backward(X, X[:1]), ValueError, ("bias_relu_backward", "out", "shape")),
    (lambda: lk.max_pool2d(np.ones((8, 8), np.float32), 2), ValueError, ("max_pool2d", "x", "2-D")),
    (lambda: lk.max_pool2d(X, 0), ValueError, ("max_pool2d", "kernel_size", "positive")),
    (lambda: lk.max_pool2d(X, 2, stride=0), ValueError, ("max_pool2d", "stride", "positive")),
    (lambda: lk.max_pool2d(X, 2, stride=-1), ValueError, ("stride",)),
    (lambda: lk.max_pool2d(X, 2, padding=-1), ValueError, ("max_pool2d", "padding", "non-negative")),
    (lambda: lk.max_pool2d(X, 2, padding=((0, -1), (0, 0))), ValueError, ("padding",)),
    (lambda: lk.max_pool2d(X, 2, dilation=0), ValueError, ("dilation",)),
    (lambda: lk.max_pool2d(X, 9), ValueError, ("max_pool2d", "kernel_size", "padded input")),
    (lambda: lk.max_pool2d(X, 3, dilation=4), ValueError, ("dilation", "padded input")),
    (lambda: lk.max_pool2d(X, 2.5), TypeError, ("kernel_size",)),
    (lambda: lk.max_pool2d(X, (2, 2, 2)), ValueError, ("kernel_size",)),
    (lambda: lk.max_pool2d(X, True), TypeError, ("kernel_size",)),
    (lambda: lk.max_pool2d(X, 2, ceil_mode="yes"), TypeError, ("ceil_mode",)),
    (lambda: lk.max_pool2d(X, 2, out=np.empty((2, 3, 3, 3), np.float32)), ValueError, ("out", "(2, 3, 4, 4)")),
    (lambda: lk.max_pool2d(X.astype(np.int64), 2), TypeError, ("max_pool2d", "x", "int64")),
    (lambda: lk.avg_pool2d(X, 2, divisor_override=0), ValueError, ("avg_pool2d", "divisor_override")),
    (lambda: lk.avg_pool2d(X, 2, divisor_override=1.5), TypeError, ("divisor_override",)),
    (lambda: lk.avg_pool2d(X, 10, padding=0), ValueError, ("avg_pool2d", "kernel_size")),
    (lambda: lk.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.int32),
                                    X.shape), TypeError, ("indices", "int64")),
    (lambda: lk.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 3), np.int64),
                                    X.shape), ValueError, ("indices", "shape")),
    (lambda: lk.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.int64),
                                    (2, 4, 8, 8)), ValueError, ("input_shape",)),
    (lambda: lk.max_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.int64),
                                    "abc"), TypeError, ("input_shape",)),
    (lambda: lk.avg_pool2d_backward(np.ones((2, 3, 5, 5), np.float32), X.shape, 2), ValueError,
     ("avg_pool2d_backward", "grad_out", "(4, 4)")),
    (lambda: lk.use_backend("tensorflow"), ValueError, ("use_backend",)),
    (lambda: lk.set_num_threads(0), ValueError, ("set_num_threads",)),
])
def test_bad_input_raises_with_a_clear_message(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_read_only_out_is_refused():
    out = np.empty(X.shape, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        lk.relu(X, out=out)


def test_partial_overlap_is_refused_and_inputs_untouched():
    buf = np.arange(20, dtype=np.float32) - 10
    before = buf.copy()
    with pytest.raises(ValueError, match="overlaps input x"):
        lk.relu(buf[:10], out=buf[5:15])
    with pytest.raises(ValueError, match="overlaps"):
        lk.max_pool2d(buf.reshape(1, 1, 4, 5), 2, out=buf[:4].reshape(1, 1, 2, 2))
    np.testing.assert_array_equal(buf, before)


def test_read_only_inputs_are_fine():
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    x.flags.writeable = False
    assert lk.relu(x).flags.writeable
    lk.max_pool2d(x, 2)
    lk.bias_relu(x, np.zeros(1, np.float32))


def test_forced_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("LEPTON_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="LEPTON_BACKEND"):
        lk.relu(np.ones(3, np.float32))
    monkeypatch.setenv("LEPTON_BACKEND", "reference")
    np.testing.assert_array_equal(lk.relu(np.array([-1.0, 2.0], np.float32)), [0.0, 2.0])
    monkeypatch.setenv("LEPTON_BACKEND", "cupy")  # exists only for CUDA arrays
    with pytest.raises(RuntimeError, match="cupy"):
        lk.relu(np.ones(3, np.float32))
