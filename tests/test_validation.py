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
    # geometry numbers past int64 (were MemoryError, numpy's "Maximum allowed dimension exceeded"
    # or a pybind11 "incompatible function arguments" dump): ValueError naming the argument
    (lambda: lk.avg_pool2d(X, 2, 2**40, 2**64), ValueError, ("avg_pool2d", "padding", "64-bit")),
    (lambda: lk.avg_pool2d(X, 2, 2, 2**63), ValueError, ("avg_pool2d", "padding", "64-bit")),
    (lambda: lk.max_pool2d(X, 2, stride=2**64), ValueError, ("max_pool2d", "stride", "64-bit")),
    (lambda: lk.max_pool2d(X, 2**63), ValueError, ("max_pool2d", "kernel_size", "64-bit")),
    (lambda: lk.max_pool2d(X, 2, dilation=(1, 2**70)), ValueError, ("max_pool2d", "dilation", "64-bit")),
    (lambda: lk.max_pool2d(X, 2, padding=((0, 2**63 - 1), (0, 0))), ValueError, ("max_pool2d", "padding", "int64")),
    (lambda: lk.max_pool2d(X, 2**62, 1, 2**62), ValueError, ("max_pool2d", "padding", "int64")),
    (lambda: lk.max_pool2d(X, 2, 1, 2**61), ValueError, ("max_pool2d", "stride and padding", "int64")),
    (lambda: lk.avg_pool2d(X, 2, divisor_override=2**64), ValueError, ("divisor_override", "64-bit")),
    (lambda: lk.avg_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), (2, 3, 2**64, 8), 2), ValueError,
     ("avg_pool2d_backward", "input_shape", "64-bit")),
    (lambda: lk.conv2d(X, np.ones((4, 3, 3, 3), np.float32), stride=2**64), ValueError, ("conv2d", "stride", "64-bit")),
    (lambda: lk.conv2d(X, np.ones((4, 3, 3, 3), np.float32), padding=2**63), ValueError, ("conv2d", "padding")),
    (lambda: lk.conv2d(X, np.ones((4, 3, 3, 3), np.float32), padding=2**40), ValueError,
     ("conv2d", "stride and padding", "int64")),
    (lambda: lk.conv2d(X, np.ones((4, 3, 3, 3), np.float32), dilation=2**64), ValueError, ("conv2d", "dilation")),
    (lambda: lk.conv2d(X, np.ones((4, 3, 3, 3), np.float32), padding=((2**62, 2**62), (0, 0))), ValueError,
     ("conv2d", "padding", "int64")),
    (lambda: lk.conv2d_backward(np.ones((2, 4, 6, 6), np.float32), X, np.ones((4, 3, 3, 3), np.float32),
                                stride=2**64), ValueError, ("conv2d_backward", "stride")),
    (lambda: lk.conv2d_integer(np.ones((1, 3, 8, 8), np.uint8), np.ones((4, 3, 3, 3), np.int8), stride=2**64),
     ValueError, ("conv2d_integer", "stride", "64-bit")),
    (lambda: lk.conv2d_integer(np.ones((1, 3, 8, 8), np.uint8), np.ones((4, 3, 3, 3), np.int8), padding=2**63),
     ValueError, ("conv2d_integer", "padding", "64-bit")),
    (lambda: lk.qlinear_conv2d(np.ones((1, 3, 8, 8), np.uint8), 1.0, 0, np.ones((4, 3, 3, 3), np.int8), 1.0, 0,
                               1.0, 0, dilation=2**64), ValueError, ("qlinear_conv2d", "dilation", "64-bit")),
    (lambda: lk.prepare_qlinear_conv2d(1.0, 0, np.ones((4, 3, 3, 3), np.int8), 1.0, 0, 1.0, 0, padding=2**64),
     ValueError, ("padding", "64-bit")),
    (lambda: lk.cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 1]), ignore_index=2**70), ValueError,
     ("cross_entropy", "ignore_index")),
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


# ------------------------------------------------------------------ huge but valid geometry
# A stride or padding far beyond the input must cost what the data costs: float32 conv2d with
# stride 2**24 took 3 s and 1.5 GB for a 2x2 output, its backward ran out of memory (buffers laid
# out over the padded span). Run in a child process with a timeout and an RSS check so a
# regression fails here instead of exhausting the machine.
SPREAD_GEOMETRY = """
import json, resource, time
import numpy as np
import lepton_kernels as lk
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
xi, wi = rng.integers(0, 256, x.shape).astype(np.uint8), rng.integers(-128, 128, w.shape).astype(np.int8)
lk.conv2d(x, w), lk.conv2d_integer(xi, wi)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
geo = dict(stride=2**24, padding=2**23)
y = lk.conv2d(x, w, **geo)
gx, gw, gb = lk.conv2d_backward(np.ones_like(y), x, w, **geo)
yi = lk.conv2d_integer(xi, wi, 0, 0, 2**24, 2**23)
yq = lk.qlinear_conv2d(xi, 0.1, 0, wi, 0.1, 0, 0.1, 0, None, 2**24, 2**23)
m = lk.max_pool2d(x, 2, 2**28, 1)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "grown_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0,
                  "shapes": [y.shape, gx.shape, gw.shape, yi.shape, yq.shape, m.shape]}))
"""


def test_huge_stride_and_padding_cost_what_the_data_costs():
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SPREAD_GEOMETRY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["seconds"] < 5, f"took {r['seconds']:.1f} s"
    assert r["grown_kib"] < 200 * 1024, f"peak RSS grew by {r['grown_kib'] / 1024:.0f} MiB"
    assert r["shapes"] == [[2, 4, 2, 2], [2, 3, 5, 6], [4, 3, 2, 2], [2, 4, 2, 2], [2, 4, 2, 2], [2, 3, 1, 1]]


@pytest.mark.parametrize("geo", [dict(stride=300, padding=200), dict(stride=(1, 400), padding=(0, 300)),
                                 dict(stride=50, padding=120, dilation=(60, 1))], ids=str)
@pytest.mark.parametrize("c_in", [3, 12])  # the direct (few channels) and the wide / GEMM dispatch
def test_conv2d_with_stride_far_above_the_kernel_matches_reference(geo, c_in):
    from lepton_kernels import reference as ref

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, c_in, 5, 6))
    w = rng.standard_normal((8, c_in, 2, 2))
    b = rng.standard_normal(8)
    for dtype in (np.float32, np.float64):
        xd, wd, bd = x.astype(dtype), w.astype(dtype), b.astype(dtype)
        y = lk.conv2d(xd, wd, bd, **geo)
        want = ref.conv2d(x, w, b, **geo)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
        g = rng.standard_normal(y.shape)
        got = lk.conv2d_backward(g.astype(dtype), xd, wd, **geo)
        for a, e in zip(got, ref.conv2d_backward(g, x, w, **geo)):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("geo", [dict(stride=2**28, padding=1), dict(stride=(2**28, 1), padding=(1, 0)),
                                 dict(stride=(1, 2**30), padding=(0, 1))], ids=str)
@pytest.mark.parametrize("c_in", [3, 12])
def test_conv_stride_of_a_one_output_axis_costs_nothing_and_matches_reference(geo, c_in):
    # An axis with one output has one window whatever its stride: the kernels run it with
    # stride 1 (lepton::canonical) instead of sizing stride-phase buffers by 2**28 or refusing.
    from lepton_kernels import reference as ref

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, c_in, 5, 6))
    w = rng.standard_normal((4, c_in, 2, 2))
    y = lk.conv2d(x.astype(np.float32), w.astype(np.float32), **geo)
    want = ref.conv2d(x, w, None, **geo)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape)
    for a, e in zip(lk.conv2d_backward(g, x, w, **geo), ref.conv2d_backward(g, x, w, **geo)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)
    xq = rng.integers(0, 256, x.shape).astype(np.uint8)
    wq = rng.integers(-128, 128, w.shape).astype(np.int8)
    got = lk.conv2d_integer(xq, wq, 3, 0, **geo)
    np.testing.assert_array_equal(got, ref.conv2d_integer(xq, wq, 3, 0, **geo))
