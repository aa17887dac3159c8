"""CUDA optimizer updates (sgd_step, adam_step) and the fused cross-entropy against the
float64 spec ``lepton_kernels.reference``.

Two parts:

* ``gpu``-marked tests: every CUDA backend (native ``_lepton_cuda``, ``cupy`` RawModule
  over the same .cuh sources, ``numba`` numba.cuda) through the kernel interface of
  ``lepton_kernels._backend`` on CuPy arrays -- sizes around the block (255/256/257),
  a multi-tensor list with an empty tensor, every SGD/Adam option over several steps,
  cross-entropy with C around the warp and block sizes, weights, ignore_index, label
  smoothing, huge logits, and bit-identical reruns; then the public API on CuPy arrays
  with each backend forced. Skipped without CuPy or a device.
* numba.cuda tests on Numba device arrays, which also run under the CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1``) and skip when numba.cuda has neither a GPU nor the
  simulator.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from lepton_kernels import reference as R
from lepton_kernels._backend import get_named_backend

CUDA_BACKENDS = ("native", "cupy", "numba")
DTYPES = (np.float32, np.float64)
SGD_CONFIGS = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
               dict(momentum=0.5, dampening=0.3, maximize=True), dict(weight_decay=0.1)]
ADAM_CONFIGS = [dict(), dict(weight_decay=1e-2), dict(weight_decay=5e-2, decoupled=True), dict(amsgrad=True),
                dict(maximize=True, beta1=0.5, beta2=0.9, eps=1e-6)]
SGD_DEFAULTS = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
ADAM_DEFAULTS = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False, amsgrad=False,
                     maximize=False)


def tol(dtype):
    return dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- drivers (any array module)

def run_sgd(backend, to_dev, to_host, sizes, dtype, config, rng, steps=3):
    """`steps` SGD updates of a list of tensors on the device vs the float64 reference."""
    cfg = {**SGD_DEFAULTS, **config}
    ps = [rng.standard_normal(s).astype(dtype) for s in sizes]
    refs = [p.astype(np.float64) for p in ps]
    ref_bufs = [None] * len(sizes)
    dp = [to_dev(p) for p in ps]
    db = [to_dev(np.zeros(s, dtype)) for s in sizes] if cfg["momentum"] else [None] * len(sizes)
    for step in range(steps):
        gs = [rng.standard_normal(s).astype(dtype) for s in sizes]
        backend.sgd_step(dp, [to_dev(g) for g in gs], db, 0.05, cfg["momentum"], cfg["dampening"],
                         cfg["weight_decay"], cfg["nesterov"], cfg["maximize"], step == 0)
        for i, g in enumerate(gs):
            refs[i], ref_bufs[i] = R.sgd_step(refs[i], g, ref_bufs[i], lr=0.05, first_step=step == 0,
                                              **{k: v for k, v in cfg.items()})
    for i in range(len(sizes)):
        np.testing.assert_allclose(to_host(dp[i]), refs[i], **tol(dtype), err_msg=f"param {i}")
        if cfg["momentum"]:
            np.testing.assert_allclose(to_host(db[i]), ref_bufs[i], **tol(dtype), err_msg=f"buf {i}")


def run_adam(backend, to_dev, to_host, sizes, dtype, config, rng, steps=3):
    cfg = {**ADAM_DEFAULTS, **config}
    ps = [rng.standard_normal(s).astype(dtype) for s in sizes]
    ref = [[p.astype(np.float64), np.zeros(s), np.zeros(s), np.zeros(s)] for p, s in zip(ps, sizes)]
    dp = [to_dev(p) for p in ps]
    dm = [to_dev(np.zeros(s, dtype)) for s in sizes]
    dv = [to_dev(np.zeros(s, dtype)) for s in sizes]
    dx = [to_dev(np.zeros(s, dtype)) for s in sizes] if cfg["amsgrad"] else None
    for step in range(1, steps + 1):
        gs = [rng.standard_normal(s).astype(dtype) for s in sizes]
        backend.adam_step(dp, [to_dev(g) for g in gs], dm, dv, dx, step, 0.01, cfg["beta1"], cfg["beta2"],
                          cfg["eps"], cfg["weight_decay"], cfg["decoupled"], cfg["amsgrad"], cfg["maximize"])
        for i, g in enumerate(gs):
            p, m, v, x = ref[i]
            out = R.adam_step(p, g, m, v, step=step, lr=0.01, beta1=cfg["beta1"], beta2=cfg["beta2"], eps=cfg["eps"],
                              weight_decay=cfg["weight_decay"], decoupled_weight_decay=cfg["decoupled"],
                              amsgrad=cfg["amsgrad"], max_exp_avg_sq=x if cfg["amsgrad"] else None,
                              maximize=cfg["maximize"])
            ref[i] = [out[0], out[1], out[2], out[3] if cfg["amsgrad"] else x]
    for i in range(len(sizes)):
        np.testing.assert_allclose(to_host(dp[i]), ref[i][0], **tol(dtype), err_msg=f"param {i}")
        np.testing.assert_allclose(to_host(dm[i]), ref[i][1], **tol(dtype), err_msg=f"exp_avg {i}")
        np.testing.assert_allclose(to_host(dv[i]), ref[i][2], **tol(dtype), err_msg=f"exp_avg_sq {i}")
        if cfg["amsgrad"]:
            np.testing.assert_allclose(to_host(dx[i]), ref[i][3], **tol(dtype), err_msg=f"max_exp_avg_sq {i}")


def ce_inputs(rng, n, c, dtype, weighted, ignore, scale=4.0):
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    t = rng.integers(0, c, n).astype(np.int64)
    if ignore and n > 1:
        t[::3] = -100
    w = (rng.random(c) + 0.5).astype(dtype) if weighted else None
    return z, t, w


def run_cross_entropy(backend, to_dev, to_host, z, t, w, smoothing, want_grad=True):
    n, c = z.shape
    losses = to_dev(np.full(n, np.nan, z.dtype))
    dl = to_dev(np.full((n, c), np.nan, z.dtype)) if want_grad else None
    backend.cross_entropy(to_dev(z), to_dev(t), None if w is None else to_dev(w), -100, smoothing, losses, dl)
    ref_l, ref_d, _ = R._cross_entropy_parts(z, t, w, -100, smoothing)
    rtol, atol = (2e-5, 1e-6) if z.dtype == np.float32 else (1e-11, 1e-12)
    np.testing.assert_allclose(to_host(losses), ref_l, rtol=rtol, atol=atol, err_msg="losses")
    if want_grad:
        np.testing.assert_allclose(to_host(dl), ref_d, rtol=rtol, atol=atol, err_msg="dlogits")
    return to_host(losses), (to_host(dl) if want_grad else None)


# ---------------------------------------------------------------- GPU part (CuPy arrays)

def _cupy_io(cp):
    return (lambda a: cp.asarray(np.ascontiguousarray(a))), (lambda a: cp.asnumpy(a))


GPU_SIZES = [(255,), (256,), (257,), (3, 70001), (0,), (1,)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_gpu_sgd_step(backend, cp, config, dtype):
    run_sgd(backend, *_cupy_io(cp), GPU_SIZES, dtype, config, np.random.default_rng(1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_gpu_adam_step(backend, cp, config, dtype):
    run_adam(backend, *_cupy_io(cp), GPU_SIZES, dtype, config, np.random.default_rng(2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(1, 1), (7, 5), (33, 31), (16, 32), (17, 33), (5, 255), (3, 256), (4, 257),
                                 (2, 1000), (70000, 3)])
@pytest.mark.parametrize("weighted,ignore,smoothing", [(False, False, 0.0), (True, True, 0.1), (False, True, 0.3)])
def test_gpu_cross_entropy(backend, cp, n, c, weighted, ignore, smoothing, dtype):
    rng = np.random.default_rng(n * 1000 + c)
    z, t, w = ce_inputs(rng, n, c, dtype, weighted, ignore)
    io = _cupy_io(cp)
    first = run_cross_entropy(backend, *io, z, t, w, smoothing)
    again = run_cross_entropy(backend, *io, z, t, w, smoothing)
    np.testing.assert_array_equal(first[0], again[0])  # fixed reduction order
    np.testing.assert_array_equal(first[1], again[1])
    run_cross_entropy(backend, *io, z, t, w, smoothing, want_grad=False)


@pytest.mark.gpu
def test_gpu_cross_entropy_is_stable_for_huge_logits(backend, cp):
    rng = np.random.default_rng(5)
    z, t, _ = ce_inputs(rng, 20, 7, np.float32, False, False, scale=50.0)
    z[0, 0] = 1e4
    losses, _ = run_cross_entropy(backend, *_cupy_io(cp), z, t, None, 0.05)
    assert np.all(np.isfinite(losses))


@pytest.mark.gpu
@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_gpu_public_api_with_each_backend(cp, name):
    import lepton_kernels as lk

    if get_named_backend(name, "cuda") is None:
        pytest.skip(f"cuda backend {name!r} unavailable")
    rng = np.random.default_rng(9)
    p = rng.standard_normal(300).astype(np.float32)
    g = rng.standard_normal(300).astype(np.float32)
    z, t, w = ce_inputs(rng, 40, 10, np.float32, True, True)
    lk.use_backend(name)
    try:
        dp, dm, dv = cp.asarray(p), cp.zeros(300, np.float32), cp.zeros(300, np.float32)
        lk.adam_step(dp, cp.asarray(g), dm, dv, step=1, lr=0.01)
        expected = R.adam_step(p, g, np.zeros(300), np.zeros(300), step=1, lr=0.01)[0]
        np.testing.assert_allclose(cp.asnumpy(dp), expected, rtol=2e-6, atol=2e-6)
        dp2 = cp.asarray(p)
        lk.multi_tensor_sgd_step([dp2], [cp.asarray(g)], lr=0.1, weight_decay=0.01)
        np.testing.assert_allclose(cp.asnumpy(dp2), R.sgd_step(p, g, None, lr=0.1, weight_decay=0.01)[0],
                                   rtol=2e-6, atol=2e-6)
        loss = lk.cross_entropy(cp.asarray(z), cp.asarray(t), weight=cp.asarray(w), label_smoothing=0.1)
        np.testing.assert_allclose(float(loss), R.cross_entropy(z, t, weight=w, label_smoothing=0.1), rtol=2e-5)
        grad = lk.cross_entropy_backward(np.float32(1.0), cp.asarray(z), cp.asarray(t), weight=cp.asarray(w))
        np.testing.assert_allclose(cp.asnumpy(grad), R.cross_entropy_backward(1.0, z, t, weight=w), rtol=2e-5,
                                   atol=1e-6)
    finally:
        lk.use_backend(None)


@pytest.mark.gpu
def test_gpu_native_bindings_validate_tables(cp):
    cu = pytest.importorskip("lepton_kernels._lepton_cuda")
    with pytest.raises(ValueError, match="grad_ptrs\\[1\\] is a null pointer"):
        cu.sgd_step([8, 8], [8, 0], None, [4, 4], 0, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(ValueError, match="step must be >= 1"):
        cu.adam_step([8], [8], [8], [8], None, [4], 0, 0, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False)


# ---------------------------------------------------------------- numba.cuda (GPU or simulator)

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@pytest.fixture(scope="module")
def nbcu():
    pytest.importorskip("numba")
    from numba import cuda

    if not SIM and not cuda.is_available():
        pytest.skip("numba.cuda: no GPU; run with NUMBA_ENABLE_CUDASIM=1 for the simulator")
    from lepton_kernels.numba_backend import cuda as backend

    assert backend.unavailable_reason() is None
    return backend


def _numba_io():
    from numba import cuda

    return (lambda a: cuda.to_device(np.ascontiguousarray(a))), (lambda a: a.copy_to_host())


# The simulator runs each CUDA thread as a Python thread: small sizes, still above a block.
SIM_SIZES = [(3, 5), (70,), (0,), (1,)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_numba_cuda_sgd_step(nbcu, config, dtype):
    run_sgd(nbcu, *_numba_io(), SIM_SIZES, dtype, config, np.random.default_rng(3), steps=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_numba_cuda_adam_step(nbcu, config, dtype):
    run_adam(nbcu, *_numba_io(), SIM_SIZES, dtype, config, np.random.default_rng(4), steps=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(1, 1), (7, 5), (40, 3)])
@pytest.mark.parametrize("weighted,ignore,smoothing", [(False, False, 0.0), (True, True, 0.1), (False, True, 0.3)])
def test_numba_cuda_cross_entropy(nbcu, n, c, weighted, ignore, smoothing, dtype):
    z, t, w = ce_inputs(np.random.default_rng(n + c), n, c, dtype, weighted, ignore)
    run_cross_entropy(nbcu, *_numba_io(), z, t, w, smoothing)
    run_cross_entropy(nbcu, *_numba_io(), z, t, w, smoothing, want_grad=False)


def test_numba_cuda_cross_entropy_bad_target_is_nan_not_a_read(nbcu):
    z = np.zeros((2, 3), np.float32)
    to_dev, to_host = _numba_io()
    losses, dl = to_dev(np.zeros(2, np.float32)), to_dev(np.zeros((2, 3), np.float32))
    nbcu.cross_entropy(to_dev(z), to_dev(np.array([1, 7], np.int64)), None, -100, 0.0, losses, dl)
    out = to_host(losses)
    assert np.isfinite(out[0]) and np.isnan(out[1])
    assert np.all(np.isnan(to_host(dl)[1]))
