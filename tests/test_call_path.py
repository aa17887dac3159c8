"""The small-call path: whole native calls (csrc/bind_calls.cpp) behind the ops.

A whole call checks, allocates and runs an op's plain NumPy (or torch, through a
DLPack capsule) call in one C++ call and declines anything else, which the op's
general path then handles. These tests hold the two paths to the same results,
check that the whole call is really taken for plain calls and never for others,
and that declining leaves every error message to the general path.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _backend

native = _backend.get_named_backend("native", "cpu")
pytestmark = pytest.mark.skipif(native is None, reason="the native CPU module is not built")

WHOLE_CALL_OPS = ("relu", "relu_backward", "bias_relu", "max_pool2d", "avg_pool2d", "conv2d", "linear", "cross_entropy")


@pytest.fixture
def spies(monkeypatch):
    """Counts, per op, the calls the native whole-call entry took (returned a result for)."""
    counts = dict.fromkeys(WHOLE_CALL_OPS, 0)
    for op in WHOLE_CALL_OPS:
        entry = getattr(native, "call_" + op)

        def spy(*args, _op=op, _entry=entry):
            result = _entry(*args)
            counts[_op] += result is not None
            return result

        monkeypatch.setattr(native, "call_" + op, spy)
    _backend.use_backend(None)  # a fresh selection: whole_call looks the entries up again
    yield counts
    monkeypatch.undo()
    _backend.use_backend(None)


@pytest.fixture
def general_path(monkeypatch):
    """Runs the ops without their whole calls (the path before this one existed)."""
    monkeypatch.setattr(_backend, "whole_call", lambda op: None)


def _cases(rng, dtype):
    x = rng.standard_normal((2, 6, 14, 14)).astype(dtype)
    w = rng.standard_normal((16, 6, 5, 5)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    xl = rng.standard_normal((3, 4, 40)).astype(dtype)
    wl = rng.standard_normal((12, 40)).astype(dtype)
    bl = rng.standard_normal(12).astype(dtype)
    z = rng.standard_normal((5, 10)).astype(dtype)
    t = np.array([1, 9, -100, 0, 3])
    return {
        "relu": lambda: lk.relu(x),
        "relu_backward": lambda: lk.relu_backward(x[:, :, ::-1].copy(), x),
        "relu_backward broadcast": lambda: lk.relu_backward(np.broadcast_to(dtype(2.5), x.shape), x),
        "bias_relu": lambda: lk.bias_relu(x, x[0, :, 0, 0].copy()),
        "max_pool2d": lambda: lk.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        "max_pool2d chw": lambda: lk.max_pool2d(x[0], (2, 3), (1, 2), ((1, 0), (0, 1)), dilation=(2, 1)),
        "avg_pool2d": lambda: lk.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        "avg_pool2d divisor": lambda: lk.avg_pool2d(x, 2, divisor_override=3),
        "conv2d": lambda: lk.conv2d(x, w, b, stride=(1, 2), padding=(2, 1)),
        "conv2d relu groups": lambda: lk.conv2d(x, w[:, :3].copy(), None, 1, 1, 2, 2, activation="relu"),
        "linear": lambda: lk.linear(xl, wl, bl),
        "linear relu 1-D": lambda: lk.linear(xl[0, 0], wl, None, activation="relu"),
        "cross_entropy mean": lambda: lk.cross_entropy(z, t),
        "cross_entropy sum": lambda: lk.cross_entropy(z, t, reduction="sum", label_smoothing=0.1),
        "cross_entropy none": lambda: lk.cross_entropy(z, t, reduction="none"),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(_cases(np.random.default_rng(0), np.float32)))
def test_whole_call_matches_the_general_path(case, dtype, spies, monkeypatch):
    fast = _cases(np.random.default_rng(1), dtype)[case]()
    assert sum(spies.values()) == 1, "the plain call must take the whole call"
    monkeypatch.setattr(_backend, "whole_call", lambda op: None)
    slow = _cases(np.random.default_rng(1), dtype)[case]()
    assert type(fast) is np.ndarray and fast.dtype == slow.dtype and fast.shape == slow.shape
    if case.startswith("cross_entropy") and "none" not in case:  # float64 sums in another order
        np.testing.assert_allclose(fast, slow, rtol=1e-6 if dtype == np.float32 else 1e-13)
    else:
        np.testing.assert_array_equal(fast, slow)
    assert fast.flags.c_contiguous and fast.flags.writeable and fast.flags.owndata or fast.base is not None


@pytest.mark.parametrize("call, error", [
    (lambda x: lk.max_pool2d(x, 2.0), TypeError),            # a float equal to a cached int
    (lambda x: lk.max_pool2d(x, (2, True)), TypeError),      # a bool equal to 1
    (lambda x: lk.max_pool2d(x, 2, padding=-1), ValueError),
    (lambda x: lk.max_pool2d(x, 2, stride=0), ValueError),
    (lambda x: lk.max_pool2d(x, 2, ceil_mode=1), TypeError),
    (lambda x: lk.max_pool2d(x, 30), ValueError),             # larger than the padded input
    (lambda x: lk.avg_pool2d(x, 2, divisor_override=0), ValueError),
    (lambda x: lk.avg_pool2d(x, 2, count_include_pad="yes"), TypeError),
    (lambda x: lk.conv2d(x, np.ones((4, 6, 3, 3), np.float32), groups=True), ValueError),
    (lambda x: lk.conv2d(x, np.ones((4, 5, 3, 3), np.float32)), ValueError),
    (lambda x: lk.conv2d(x, np.ones((4, 6, 3, 3), np.float64)), TypeError),
    (lambda x: lk.linear(x, np.ones((4, 13), np.float32)), ValueError),
    (lambda x: lk.relu(x.astype(np.int32)), TypeError),
    (lambda x: lk.relu(x.astype(">f4")), TypeError),
    (lambda x: lk.cross_entropy(x[0, 0], np.array([0] * 13 + [99])), ValueError),
    (lambda x: lk.cross_entropy(x[0, 0], np.arange(14), reduction="avg"), ValueError),
    (lambda x: lk.cross_entropy(x[0, 0], np.arange(14), ignore_index=2 ** 70), ValueError),
])
def test_declined_calls_raise_the_general_paths_errors(call, error):
    x = np.random.default_rng(2).standard_normal((1, 6, 14, 14)).astype(np.float32)
    lk.max_pool2d(x, 2)  # plain calls first: nothing they leave behind may let a bad call through
    lk.conv2d(x, np.ones((4, 6, 3, 3), np.float32))
    with pytest.raises(error):
        call(x)


def test_calls_the_whole_call_does_not_cover_go_the_general_path(spies):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    view = x[:, :, ::2, ::2]  # not contiguous
    np.testing.assert_array_equal(lk.relu(view), np.maximum(view, 0))
    np.testing.assert_array_equal(lk.max_pool2d(view, [2, 2]), lk.max_pool2d(view.copy(), 2))  # a list
    y, idx = lk.max_pool2d(x, 2, return_indices=True)
    assert idx.dtype == np.int64
    out = np.empty_like(x)
    assert lk.relu(x, out=out) is out
    assert lk.conv2d(x, np.ones((1, 3, 3, 3), np.float32), padding="same").shape == (2, 1, 8, 8)
    assert lk.relu(np.empty((0, 4), np.float32)).shape == (0, 4)

    class Sub(np.ndarray):
        pass

    np.testing.assert_array_equal(lk.relu(x.view(Sub)), np.maximum(x, 0))
    assert spies["relu"] == 0 and spies["conv2d"] == 0  # every one of those took the general path
    assert spies["max_pool2d"] == 1  # the plain copy only


def test_forced_backends_keep_their_meaning(spies, monkeypatch):
    x = np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32)
    _backend.use_backend("reference")
    try:
        np.testing.assert_array_equal(lk.relu(x), np.maximum(x, 0))
        assert spies["relu"] == 0
    finally:
        _backend.use_backend(None)
    monkeypatch.setenv("LEPTON_BACKEND", "reference")
    lk.relu(x)
    assert spies["relu"] == 0
    monkeypatch.delenv("LEPTON_BACKEND")
    lk.relu(x)
    assert spies["relu"] == 1


def test_relu_backward_reads_a_broadcast_gradient_as_its_value(spies):
    x = np.array([[-1.0, 0.0, 2.0, np.nan], [3.0, -0.0, np.inf, -np.inf]], np.float32)
    got = lk.relu_backward(np.broadcast_to(np.float32(1.5), x.shape), x)
    np.testing.assert_array_equal(got, [[0, 0, 1.5, 1.5], [1.5, 0, 1.5, 0]])  # a NaN x passes (as torch)
    assert spies["relu_backward"] == 1
    partly = np.broadcast_to(np.arange(4, dtype=np.float32), x.shape)  # stride 0 on one axis only
    np.testing.assert_array_equal(lk.relu_backward(partly, x), np.where(x <= 0, 0, partly))
    assert spies["relu_backward"] == 1  # that one took the general path


def test_large_results_start_on_a_cache_line():
    x = np.ones(2 ** 18 + 5, np.float32)  # 1 MiB and a little more
    y = lk.relu(x)
    assert y.ctypes.data % 64 == 0 and y.flags.writeable
    y[...] = 2  # the result owns (through its base) memory nobody else holds
    assert x[0] == 1


def test_empty_refuses_shapes_past_int64():
    from lepton_kernels import _lepton_cpu

    with pytest.raises(ValueError, match="overflows"):
        _lepton_cpu.empty((2 ** 40, 2 ** 40), np.dtype(np.float32))
    with pytest.raises(ValueError):
        _lepton_cpu.empty((-1,), np.dtype(np.float32))


def test_threads_share_the_whole_calls():
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 6, 14, 14)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    want = [lk.conv2d(x, w) for x in xs]
    errors = []

    def work(i):
        for _ in range(50):
            if not np.array_equal(lk.conv2d(xs[i], w), want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---------------------------------------------------------------- torch tensors through capsules
@pytest.fixture
def torch_module():
    return pytest.importorskip("torch")


def test_torch_tensors_go_through_capsules(torch_module, spies):
    torch = torch_module
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 14, 14, generator=g)
    w = torch.nn.Parameter(torch.randn(16, 6, 5, 5, generator=g), requires_grad=False)
    b = torch.randn(16, generator=g)
    before = x.clone()
    cases = [
        (lk.relu(x), torch.relu(x)),
        (lk.relu_backward(x.flip(0).contiguous(), x), torch.where(x <= 0, 0.0, x.flip(0))),
        (lk.bias_relu(x, b[:6].contiguous()), torch.relu(x + b[:6].view(1, 6, 1, 1))),
        (lk.max_pool2d(x, 2), F.max_pool2d(x, 2)),
        (lk.avg_pool2d(x, 3, 1, 1), F.avg_pool2d(x, 3, 1, 1)),
        (lk.conv2d(x, w, b, padding=2), F.conv2d(x, w, b, padding=2)),
        (lk.linear(x.reshape(2, -1), torch.randn(5, 1176, generator=g)), None),
        (lk.cross_entropy(x[:, :, 0, 0].contiguous(), torch.tensor([1, 5])),
         F.cross_entropy(x[:, :, 0, 0], torch.tensor([1, 5]))),
    ]
    assert all(v == 1 for v in spies.values()), spies
    for got, want in cases:
        assert isinstance(got, torch.Tensor)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, before)  # read, never written
    y = lk.relu(x)
    del x  # the result owns its own memory
    y.add_(1)
    assert float(y.min()) >= 1.0


def test_torch_tensors_the_capsules_do_not_cover(torch_module, spies):
    torch = torch_module
    x = torch.randn(4, 6)
    np.testing.assert_array_equal(lk.relu(x.t()).numpy(), torch.relu(x.t()).numpy())  # not contiguous
    with pytest.raises(TypeError, match="DLPack"):
        lk.relu(torch.randn(3, requires_grad=True))
    with pytest.raises(TypeError):
        lk.relu(torch.ones(3, dtype=torch.int32))
    assert spies["relu"] == 0  # the strided view and the int32 tensor were offered and declined


# ---------------------------------------------------------------- the result cache
def test_large_results_reuse_cached_blocks_and_the_cache_is_bounded():
    from lepton_kernels import _lepton_cpu

    _lepton_cpu.empty_memory_cache()
    x = np.ones((512, 1024), np.float32)  # 2 MiB
    y = lk.relu(x)
    address = y.ctypes.data
    assert _lepton_cpu.memory_cache_info() == (0, 0)
    del y  # its block goes back to the cache, still mapped
    blocks, cached = _lepton_cpu.memory_cache_info()
    assert blocks == 1 and cached >= x.nbytes
    z = lk.relu(-x)  # the same size class: the same block, written afresh
    assert z.ctypes.data == address and np.all(z == 0)
    view = z[3:5]
    del z
    assert _lepton_cpu.memory_cache_info()[0] == 0  # a view keeps the block in use
    assert np.all(view == 0)
    del view
    assert _lepton_cpu.memory_cache_info()[0] == 1
    huge = _lepton_cpu.empty((257 << 20,), np.dtype(np.uint8))  # past the largest block cached
    del huge
    assert _lepton_cpu.memory_cache_info()[0] == 1
    _lepton_cpu.empty_memory_cache()
    assert _lepton_cpu.memory_cache_info() == (0, 0)


# ---------------------------------------------------------------- capsules that lie
class _DLTensor(__import__("ctypes").Structure):
    import ctypes as _c
    _fields_ = [("data", _c.c_void_p), ("device_type", _c.c_int32), ("device_id", _c.c_int32),
                ("ndim", _c.c_int32), ("code", _c.c_uint8), ("bits", _c.c_uint8), ("lanes", _c.c_uint16),
                ("shape", _c.POINTER(_c.c_int64)), ("strides", _c.POINTER(_c.c_int64)),
                ("byte_offset", _c.c_uint64), ("manager_ctx", _c.c_void_p), ("deleter", _c.c_void_p)]


def _capsule(data, shape, *, code=2, bits=32, device=1, strides=None):
    """A "dltensor" capsule over ``data`` (kept alive by the caller) claiming ``shape``."""
    import ctypes

    dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
    steps = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
    t = _DLTensor(data.ctypes.data, device, 0, len(shape), code, bits, 1, dims,
                  None if steps is None else steps, 0, None, None)
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ctypes.addressof(t), b"dltensor", None), (t, dims, steps)


@pytest.mark.parametrize("shape, kwargs", [
    ((-4, -2), {}),                      # negative sizes whose product is positive
    ((2 ** 40, 2 ** 40), {}),            # an element count past int64
    ((4, 2), dict(device=2)),            # not on the CPU
    ((4, 2), dict(code=2, bits=16)),     # float16
    ((4, 2), dict(strides=(1, 4))),      # not C-contiguous
])
def test_capsules_that_lie_are_declined(shape, kwargs):
    from lepton_kernels import _lepton_cpu

    data = np.arange(8, dtype=np.float32)
    capsule, keep = _capsule(data, shape, **kwargs)
    assert _lepton_cpu.call_relu(capsule) is None


def test_an_honest_capsule_is_read_and_not_consumed():
    from lepton_kernels import _lepton_cpu

    data = np.array([-1.0, 2.0, -3.0, 4.0], np.float32)
    capsule, keep = _capsule(data, (2, 2))
    result = _lepton_cpu.call_relu(capsule)
    assert type(result).__name__ == "PyCapsule"  # the result goes back as a capsule
    np.testing.assert_array_equal(np.from_dlpack(_Holder(result)), [[0, 2], [0, 4]])
    assert _lepton_cpu.call_relu(capsule) is not None  # still readable: never renamed "used_dltensor"


class _Holder:
    """An object with __dlpack__ over a capsule, for numpy.from_dlpack."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)
