"""Direct calls into the compiled module with bad arguments raise; they never crash or write out of bounds."""
from __future__ import annotations

import numpy as np
import pytest

c = pytest.importorskip("lepton_kernels._lepton_cpu")
import lepton_kernels as lk  # noqa: E402  (after the skip: the ops need the module)

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


# ---------------------------------------------------------------- shared geometry rules
# pool2d_output_size / conv2d_output_size (module _lepton_geometry) are
# lepton::pool2d_output_size / conv2d_output_size (csrc/geometry), the rules the CPU and
# CUDA kernels validate with and the Python ops size their outputs by.
geometry = pytest.importorskip("lepton_kernels._lepton_geometry")
# They must give the shapes the Python ops give today, and PyTorch's where it accepts
# the geometry; past int64 they refuse, naming the op and the argument.

INT64_MAX = 2**63 - 1


def _pool_size(shape, kernel, stride, pads, dilation, ceil_mode):
    kh, kw = kernel
    sh, sw = stride
    pt, pb, pl, pr = pads
    dh, dw = dilation
    return geometry.pool2d_output_size("max_pool2d", shape, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, ceil_mode)


def _torch_rule(size, k, s, before, after, d, ceil_mode):
    """PyTorch's pooling_output_shape (with asymmetric padding), in Python's big ints."""
    span = size + before + after - d * (k - 1) - 1
    out = span // s + 1
    if ceil_mode and span % s and out * s < size + before:
        out += 1
    return out


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool2d_output_size_matches_the_python_ops_and_torch(ceil_mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    checked = 0
    for h, w in [(1, 1), (4, 5), (7, 6), (9, 13)]:
        x = np.zeros((1, 2, h, w), np.float32)
        xt = torch.zeros(1, 2, h, w)
        for k in (1, 2, 3):
            for s in (1, 2, 3):
                for p in range(0, k + 2):  # also past half the kernel (ONNX padding)
                    for d in (1, 2):
                        try:
                            want = lk.max_pool2d(x, k, s, p, d, ceil_mode).shape[2:]
                        except ValueError:  # the kernel spans more than the padded input
                            with pytest.raises(ValueError, match="^max_pool2d: kernel_size .* larger than the padded"):
                                _pool_size((1, 2, h, w), (k, k), (s, s), (p,) * 4, (d, d), ceil_mode)
                            continue
                        got = _pool_size((1, 2, h, w), (k, k), (s, s), (p,) * 4, (d, d), ceil_mode)
                        assert got == want, (h, w, k, s, p, d)
                        assert got == _pool_size((2, h, w), (k, k), (s, s), (p,) * 4, (d, d), ceil_mode)
                        if d == 1:
                            avg = lk.avg_pool2d(x, k, s, p, ceil_mode).shape[2:]
                            assert got == avg, (h, w, k, s, p)
                        if 2 * p <= k:  # torch's own limit on padding
                            assert got == F.max_pool2d(xt, k, s, p, d, ceil_mode).shape[2:], (h, w, k, s, p, d)
                        checked += 1
    assert checked > 200
    # Asymmetric padding and rectangular windows, against the rule written out.
    for pads in [(0, 3, 1, 0), (2, 0, 0, 2), (1, 4, 3, 1)]:
        got = _pool_size((1, 1, 6, 7), (2, 3), (3, 2), pads, (1, 2), ceil_mode)
        want = lk.max_pool2d(np.zeros((1, 1, 6, 7), np.float32), (2, 3), (3, 2), ((pads[0], pads[1]), (pads[2], pads[3])),
                             (1, 2), ceil_mode).shape[2:]
        assert got == want == (_torch_rule(6, 2, 3, pads[0], pads[1], 1, ceil_mode),
                               _torch_rule(7, 3, 2, pads[2], pads[3], 2, ceil_mode))


def test_pool2d_output_size_ceil_mode_keeps_the_last_window_inside():
    # 5 rows, kernel 2, stride 2, padding 1: a 4th window would start in the trailing padding.
    assert _pool_size((1, 1, 5, 5), (2, 2), (2, 2), (1, 1, 1, 1), (1, 1), True) == (3, 3)
    # 6 rows, kernel 3, stride 2, no padding: ceil adds the window that starts on row 4.
    assert _pool_size((1, 1, 6, 6), (3, 3), (2, 2), (0,) * 4, (1, 1), True) == (3, 3)
    assert _pool_size((1, 1, 6, 6), (3, 3), (2, 2), (0,) * 4, (1, 1), False) == (2, 2)
    # A large trailing padding never makes ceil give fewer outputs than floor.
    assert _pool_size((1, 1, 2, 2), (1, 1), (2, 2), (0, 9, 0, 9), (1, 1), True) == (6, 6)


@pytest.mark.parametrize("shape,kernel,stride,pads,dilation", [
    ((1, 1, 4, 4), (2, 2), (2**62, INT64_MAX), (0,) * 4, (1, 1)),                 # huge strides: one window
    ((1, 1, 4, 4), (2, 2), (2**40, 3), (2**62, 2**62 - 5, 0, 0), (1, 1)),         # padded height = int64 max
    ((1, 1, INT64_MAX, 1), (1, 1), (1, 1), (0,) * 4, (1, 1)),                     # int64 max rows
    ((1, 1, 2**40, 2**41), (3, 2), (2**20 + 5, 2**21 + 7), (2**40, 3, 1, 2**41), (2**20, 2**30)),
    ((1, 1, 2**62, 2**62), (2**61, 2), (2**61 - 1, 3), (1, 2**61, 0, 5), (2, 2**59)),
])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool2d_output_size_is_exact_up_to_int64(shape, kernel, stride, pads, dilation, ceil_mode):
    want = (_torch_rule(shape[-2], kernel[0], stride[0], pads[0], pads[1], dilation[0], ceil_mode),
            _torch_rule(shape[-1], kernel[1], stride[1], pads[2], pads[3], dilation[1], ceil_mode))
    assert _pool_size(shape, kernel, stride, pads, dilation, ceil_mode) == want


@pytest.mark.parametrize("args,words", [
    (dict(pads=(2**62, 2**62, 0, 0)), ("max_pool2d", "padding 4611686018427387904+4611686018427387904",
                                       "height", "overflow int64")),
    (dict(pads=(0, 0, INT64_MAX, 1)), ("max_pool2d", "padding", "width", "overflow int64")),
    (dict(kernel=(3, 2), dilation=(2**62, 1)), ("max_pool2d", "kernel_size (3, 2)", "dilation", "spans 9223372036854775809",
                                                "larger than the padded input")),
    (dict(shape=(2**40, 2**40, 4, 4), kernel=(1, 1)), ("max_pool2d", "stride and padding", "int64")),
    (dict(shape=(2**62, 4, 4)), ("max_pool2d", "stride and padding", "int64")),
    (dict(kernel=(2, 0)), ("max_pool2d", "kernel_w must be >= 1, got 0")),
    (dict(stride=(0, 1)), ("max_pool2d", "stride_h must be >= 1")),
    (dict(dilation=(1, -2)), ("max_pool2d", "dilation_w must be >= 1, got -2")),
    (dict(pads=(0, 0, -1, 0)), ("max_pool2d", "pad_left must be >= 0", "padding")),
    (dict(shape=(1, -1, 4, 4)), ("max_pool2d", "c must be >= 0")),
    (dict(shape=(4, 4)), ("max_pool2d", "shape", "(4, 4)")),
])
def test_pool2d_output_size_refuses_naming_the_argument(args, words):
    a = dict(shape=(1, 1, 4, 4), kernel=(2, 2), stride=(1, 1), pads=(0,) * 4, dilation=(1, 1))
    a.update(args)
    for ceil_mode in (False, True):
        with pytest.raises(ValueError) as info:
            _pool_size(a["shape"], a["kernel"], a["stride"], a["pads"], a["dilation"], ceil_mode)
        for word in words:
            assert word in str(info.value), f"{word!r} not in {info.value}"
        assert str(info.value).startswith("max_pool2d: ")
    with pytest.raises(ValueError, match="^avg_pool2d: "):  # the op named is the caller's
        geometry.pool2d_output_size("avg_pool2d", a["shape"], *a["kernel"], *a["stride"], *a["pads"], *a["dilation"], False)


def _conv_size(x_shape, w_shape, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, op="conv2d"):
    return geometry.conv2d_output_size(op, x_shape, w_shape, *stride, *pads, *dilation, groups)


def test_conv2d_output_size_matches_the_python_op_and_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    checked = 0
    for h, w in [(1, 1), (5, 4), (8, 11)]:
        for groups, c_in, c_out in [(1, 2, 3), (2, 4, 2)]:
            x = np.zeros((1, c_in, h, w), np.float32)
            for kh, kw in [(1, 1), (3, 3), (2, 5)]:
                wt = np.zeros((c_out, c_in // groups, kh, kw), np.float32)
                for s in (1, 2, 3):
                    for p in (0, 1, 3):
                        for d in (1, 2):
                            try:
                                want = lk.conv2d(x, wt, None, s, p, d, groups).shape[2:]
                            except ValueError:
                                with pytest.raises(ValueError, match="^conv2d: kernel .* larger than the padded input"):
                                    _conv_size(x.shape, wt.shape, (s, s), (p,) * 4, (d, d), groups)
                                continue
                            got = _conv_size(x.shape, wt.shape, (s, s), (p,) * 4, (d, d), groups)
                            assert got == want, (h, w, kh, kw, s, p, d, groups)
                            assert got == F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), None, s, p, d,
                                                   groups).shape[2:]
                            checked += 1
    assert checked > 150
    got = _conv_size((1, 1, 9, 10), (1, 1, 3, 2), (2, 3), (0, 4, 1, 0), (2, 1))
    want = lk.conv2d(np.zeros((1, 1, 9, 10), np.float32), np.zeros((1, 1, 3, 2), np.float32), None, (2, 3),
                     ((0, 4), (1, 0)), (2, 1)).shape[2:]
    assert got == want == ((9 + 4 - 5) // 2 + 1, (10 + 1 - 2) // 3 + 1)


def test_conv2d_output_size_is_exact_up_to_int64():
    assert _conv_size((1, 1, 4, 4), (1, 1, 2, 2), (2**62, INT64_MAX)) == (1, 1)
    assert _conv_size((1, 1, INT64_MAX, 1), (1, 1, 1, 1)) == (INT64_MAX, 1)
    assert _conv_size((1, 1, 4, 4), (1, 1, 1, 1), (2**40, 1), (2**62, 2**62 - 5, 0, 0)) == \
        ((INT64_MAX - 1) // 2**40 + 1, 4)
    assert _conv_size((2, 6, 2**40, 3), (6, 2, 5, 3), (3, 1), (0, 0, 0, 0), (2**30, 1), 3) == \
        ((2**40 - 2**32 - 1) // 3 + 1, 1)


@pytest.mark.parametrize("args,words", [
    (dict(pads=(2**62, 2**62, 0, 0)), ("conv2d", "padding", "height", "overflow int64")),
    (dict(w_shape=(1, 1, 3, 3), dilation=(1, 2**62)), ("conv2d", "kernel (3, 3)", "dilation", "width",
                                                        "larger than the padded input")),
    (dict(x_shape=(2**40, 1, 4, 4), w_shape=(2**40, 1, 1, 1)), ("conv2d", "stride and padding", "int64")),
    (dict(groups=0), ("conv2d", "groups must be >= 1, got 0")),
    (dict(x_shape=(1, 4, 4, 4), w_shape=(6, 1, 1, 1), groups=3), ("conv2d", "groups = 3 must divide c_in = 4")),
    (dict(x_shape=(1, 4, 4, 4), w_shape=(2, 1, 1, 1), groups=2), ("conv2d", "weight", "C_in/groups = 2")),
    (dict(w_shape=(1, 1, 0, 1)), ("conv2d", "kernel_h must be >= 1, got 0")),
    (dict(stride=(1, 0)), ("conv2d", "stride_w must be >= 1")),
    (dict(pads=(0, -3, 0, 0)), ("conv2d", "pad_bottom must be >= 0", "padding")),
    (dict(x_shape=(1, 1, 4)), ("conv2d", "x shape", "(1, 1, 4)")),
    (dict(w_shape=(1, 1, 4)), ("conv2d", "weight shape", "(1, 1, 4)")),
])
def test_conv2d_output_size_refuses_naming_the_argument(args, words):
    a = dict(x_shape=(1, 1, 4, 4), w_shape=(1, 1, 2, 2), stride=(1, 1), pads=(0,) * 4, dilation=(1, 1), groups=1)
    a.update(args)
    with pytest.raises(ValueError) as info:
        _conv_size(**a)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    assert str(info.value).startswith("conv2d: ")


@pytest.mark.parametrize("call,message", [
    (lambda: c.max_pool2d(X, OUT, None, 2, 0, 2, 2, 0, 0, 0, 0, 1, 1), "max_pool2d: kernel_w must be >= 1, got 0"),
    (lambda: c.max_pool2d(X, OUT, None, 2, 2, 2, 2, 0, 0, 0, 0, 1, 0), "max_pool2d: dilation_w must be >= 1, got 0"),
    (lambda: c.avg_pool2d(X, OUT, 2, 2, 2, 2, 0, -1, 0, 0, True, None), "avg_pool2d: pad_bottom must be >= 0, got -1"),
    (lambda: c.max_pool2d(X, OUT, None, 2, 2, 2, 2**31, 0, 0, 0, 0, 1, 1),
     "max_pool2d: a size, kernel, stride, padding or dilation is >= 2^31 (stride_w = 2147483648)"),
    (lambda: c.conv2d(X, np.ones((4, 3, 2, 2), np.float32), None, np.empty((2, 4, 3, 3), np.float32),
                      1, 1, 0, 0, 0, 0, 0, 1, 1), "conv2d: dilation_h must be >= 1, got 0"),
    (lambda: c.conv2d(X, np.ones((4, 3, 2, 2), np.float32), None, np.empty((2, 4, 3, 4), np.float32),
                      1, 1, 0, 0, 0, 0, 1, 1, 1), "conv2d: out_w = 4 does not match the geometry (expected 3)"),
])
def test_kernel_entry_points_name_the_argument(call, message):
    """The kernels' own checks (the shared lepton::validate) name the argument and its value."""
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)
