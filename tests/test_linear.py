"""matmul / linear / linear_backward on every CPU backend vs the float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

from conftest import assert_reduction_close

DTYPES = [np.float32, np.float64]
# Around register tiles (8/16/32/48 columns, 6/8/12/14 rows), cache blocks, primes and the LeNet layers.
SIZES = [(1, 1, 1), (2, 3, 5), (7, 8, 9), (12, 16, 17), (13, 31, 33), (15, 47, 48), (16, 49, 64),
         (64, 400, 120), (64, 120, 84), (33, 257, 95), (97, 127, 129), (128, 256, 96), (1, 300, 7),
         (200, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", SIZES)
def test_matmul_matches_reference(cpu_backend, m, k, n, dtype, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = lk.matmul(a, b)
    assert_reduction_close(c, ref.matmul(a, b), np.abs(a) @ np.abs(b), k, dtype, what="matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("m,k,n", SIZES)
def test_linear_forward_and_backward(cpu_backend, m, k, n, relu, dtype, rng):
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    act = "relu" if relu else None
    y = lk.linear(x, w, b, activation=act)
    magnitude = np.abs(x) @ np.abs(w).T + np.abs(b)
    assert_reduction_close(y, ref.linear(x, w, b, activation=act), magnitude, k, dtype, what="linear")
    g = rng.standard_normal(y.shape).astype(dtype)
    output = y if relu else None
    got = lk.linear_backward(g, x, w, activation=act, output=output)
    want = ref.linear_backward(g, x, w, activation=act, output=output)
    mags = ref.linear_backward(np.abs(g), np.abs(x), np.abs(w))
    for name, a, e, mg, red in zip(("grad_x", "grad_w", "grad_b"), got, want, mags, (n, m, m)):
        assert_reduction_close(a, e, mg, red, dtype, what=name)


def test_linear_batch_dims_and_flags(cpu_backend, rng):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    y = lk.linear(x, w)
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y, ref.linear(x, w), rtol=1e-5, atol=1e-5)
    gx, gw, gb = lk.linear_backward(np.ones_like(y), x, w, needs_input_grad=False, needs_bias_grad=False)
    assert gx is None and gb is None and gw.shape == (4, 5)
    np.testing.assert_allclose(gw, ref.linear_backward(np.ones_like(y), x, w)[1], rtol=1e-5, atol=1e-5)
    assert lk.linear(x[:0], w).shape == (0, 3, 4)
    gx0, gw0, gb0 = lk.linear_backward(np.ones((0, 4), np.float32), x[0, :0], w)
    assert gx0.shape == (0, 5) and not gw0.any() and not gb0.any()


def test_linear_nan_propagates(cpu_backend):
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    y = lk.linear(x, np.ones((5, 4), np.float32), np.zeros(5, np.float32), activation="relu")
    assert np.isnan(y[1]).all() and not np.isnan(y[[0, 2]]).any()


def test_linear_backward_is_deterministic(fast_cpu_backend, rng):
    x = rng.standard_normal((256, 300)).astype(np.float32)
    w = rng.standard_normal((120, 300)).astype(np.float32)
    g = rng.standard_normal((256, 120)).astype(np.float32)
    first = lk.linear_backward(g, x, w)
    for a, b in zip(first, lk.linear_backward(g, x, w)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: lk.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32)), ValueError, ("matmul", "inner")),
    (lambda: lk.matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32)), ValueError, ("matmul", "a", "2-D")),
    (lambda: lk.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)), TypeError, ("b", "dtype")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32)), ValueError, ("linear", "features")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(3, np.float32)),
     ValueError, ("bias", "(4,)")),
    (lambda: lk.linear(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), activation="tanh"),
     ValueError, ("activation",)),
    (lambda: lk.linear_backward(np.ones((2, 5), np.float32), np.ones((2, 3), np.float32),
                                np.ones((4, 3), np.float32)), ValueError, ("grad_out", "(2, 4)")),
])
def test_linear_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


# ---- few rows (M <= 8): the GEMV-shaped kernels (M = 9 stays on the packed GEMM) ----
# K below, at, one above and at multiples of the SIMD widths (4/8/16 lanes) and a LeNet layer.
FEW_K = (1, 7, 15, 16, 17, 31, 32, 33, 400)
FEW_N = (1, 3, 16, 17, 120)


def _native_cpu():
    from lepton_kernels import _lepton_cpu

    return _lepton_cpu


def _native_isas():
    """The ISA variants of the native module this CPU runs (none without the module)."""
    try:
        cpu = _native_cpu()
    except ImportError:
        return []
    order = ["generic", "avx2", "avx512"]
    return order[: order.index(cpu.detected_isa()) + 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", range(1, 10))
def test_few_rows_linear_matmul_and_backward(cpu_backend, m, dtype, rng):
    for k in FEW_K:
        for n in FEW_N:
            x = rng.standard_normal((m, k)).astype(dtype)
            w = rng.standard_normal((n, k)).astype(dtype)
            b = rng.standard_normal(n).astype(dtype)
            what = f"m={m} k={k} n={n}"
            for bias in (None, b):
                for act in (None, "relu"):
                    y = lk.linear(x, w, bias, activation=act)
                    magnitude = np.abs(x) @ np.abs(w).T + (0 if bias is None else np.abs(bias))
                    assert_reduction_close(y, ref.linear(x, w, bias, activation=act), magnitude, k, dtype,
                                           what=f"linear {what} bias={bias is not None} act={act}")
            wt = np.ascontiguousarray(w.T)
            assert_reduction_close(lk.matmul(x, wt), ref.matmul(x, wt), np.abs(x) @ np.abs(wt), k, dtype,
                                   what=f"matmul {what}")
            y = lk.linear(x, w, b, activation="relu")
            g = rng.standard_normal((m, n)).astype(dtype)
            got = lk.linear_backward(g, x, w, activation="relu", output=y)
            want = ref.linear_backward(g, x, w, activation="relu", output=y)
            mags = ref.linear_backward(np.abs(g), np.abs(x), np.abs(w))
            for name, a, e, mg, red in zip(("grad_x", "grad_w", "grad_b"), got, want, mags, (n, m, m)):
                assert_reduction_close(a, e, mg, red, dtype, what=f"{name} {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_non_contiguous_inputs(cpu_backend, dtype, rng):
    base = rng.standard_normal((3, 2 * 33)).astype(dtype)
    x = base[:, ::2]  # (3, 33), strided columns
    w = rng.standard_normal((33, 17)).astype(dtype).T  # (17, 33), Fortran order
    b = rng.standard_normal(34).astype(dtype)[::2]
    y = lk.linear(x, w, b, activation="relu")
    assert_reduction_close(y, ref.linear(x, w, b, activation="relu"), np.abs(x) @ np.abs(w).T + np.abs(b), 33,
                           dtype, what="linear")
    assert_reduction_close(lk.matmul(x, w.T), ref.matmul(x, w.T), np.abs(x) @ np.abs(w).T, 33, dtype,
                           what="matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 4, 5, 8])
def test_few_rows_nan_propagates(cpu_backend, m, dtype):
    k, n = 33, 17  # K = 2 full 16-lane vectors + a masked tail of 1
    for p in (0, 20, k - 1):  # a NaN in the first vector, the second one, the masked tail
        x = np.ones((m, k), dtype)
        w = np.ones((n, k), dtype)
        x[m - 1, p] = np.nan
        y = lk.linear(x, w, np.zeros(n, dtype), activation="relu")
        assert np.isnan(y[m - 1]).all() and not np.isnan(y[: m - 1]).any(), f"x NaN at {p}"
        x[m - 1, p] = 1
        w[n - 1, p] = np.nan
        for act in (None, "relu"):
            y = lk.linear(x, w, activation=act)
            assert np.isnan(y[:, n - 1]).all() and not np.isnan(y[:, : n - 1]).any(), f"w NaN at {p}"
        c = lk.matmul(x, np.ascontiguousarray(w.T))
        assert np.isnan(c[:, n - 1]).all() and not np.isnan(c[:, : n - 1]).any(), f"matmul b NaN at {p}"
        g = np.ones((m, n), dtype)
        gx = lk.linear_backward(g, x, w, needs_weight_grad=False, needs_bias_grad=False)[0]
        assert np.isnan(gx[:, p]).all() and np.isfinite(np.delete(gx, p, axis=1)).all(), f"grad_x NaN at {p}"


@pytest.mark.parametrize("isa", _native_isas())
@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_take_the_gemv_path_and_nine_rows_do_not(isa, dtype, rng):
    """M <= 8 reduces in the GEMV kernels' order, which differs from the packed GEMM's in
    some output bits (K and N above the GEMM's K block, so it sums in blocks); M = 9 gives
    the packed GEMM's bits exactly."""
    cpu = _native_cpu()
    k, n = 400, 520
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    cpu.set_isa(isa)
    try:
        for m in range(1, 10):
            x = rng.standard_normal((m, k)).astype(dtype)
            g = rng.standard_normal((m, n)).astype(dtype)
            results = {}
            for on in (True, False):
                cpu.set_gemv_enabled(on)
                results[on] = (lk.linear(x, w, b, activation="relu"), lk.matmul(x, np.ascontiguousarray(w.T)),
                               lk.linear_backward(g, x, w, needs_weight_grad=False, needs_bias_grad=False)[0])
            cpu.set_gemv_enabled(True)
            for name, new, old in zip(("linear", "matmul", "grad_x"), results[True], results[False]):
                if m <= 8:
                    assert not np.array_equal(new, old), f"{name} m={m}: still on the packed GEMM"
                else:
                    np.testing.assert_array_equal(new, old, err_msg=f"{name} m={m}: left the packed GEMM")
    finally:
        cpu.set_gemv_enabled(True)
        cpu.set_isa(cpu.detected_isa())


@pytest.mark.parametrize("isa", _native_isas())
def test_few_rows_bitwise_equal_across_thread_counts(isa, rng):
    """Large enough that the column split runs on several threads (>= 1 MFLOP)."""
    cpu = _native_cpu()
    before = lk.get_num_threads()
    cpu.set_isa(isa)
    try:
        for m, k, n in ((1, 1152, 520), (4, 1152, 128), (8, 784, 257)):
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            g = rng.standard_normal((m, n)).astype(np.float32)
            runs = []
            for threads in (1, 2, 3):
                lk.set_num_threads(threads)
                runs.append((lk.linear(x, w, b, activation="relu"), lk.matmul(x, np.ascontiguousarray(w.T)),
                             lk.linear_backward(g, x, w)[0]))
            for other in runs[1:]:
                for a, c in zip(runs[0], other):
                    np.testing.assert_array_equal(a, c, err_msg=f"m={m} k={k} n={n}")
    finally:
        lk.set_num_threads(before)
        cpu.set_isa(cpu.detected_isa())


@pytest.mark.parametrize("isa", _native_isas())
@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_output_bits_do_not_depend_on_the_tile(isa, dtype, rng):
    """Each output is reduced in an order fixed by K alone: a column computed inside a
    register tile of several columns equals the same column computed alone."""
    cpu = _native_cpu()
    cpu.set_isa(isa)
    try:
        for m, k in ((1, 400), (3, 33), (4, 120), (7, 17), (8, 84)):
            x = rng.standard_normal((m, k)).astype(dtype)
            w = rng.standard_normal((29, k)).astype(dtype)
            b = rng.standard_normal(29).astype(dtype)
            y = lk.linear(x, w, b, activation="relu")
            for j in range(29):
                alone = lk.linear(x, w[j:j + 1], b[j:j + 1], activation="relu")
                np.testing.assert_array_equal(y[:, j:j + 1], alone, err_msg=f"m={m} k={k} column {j}")
                np.testing.assert_array_equal(y[:1, j:j + 1], lk.linear(x[:1], w[j:j + 1], b[j:j + 1],
                                                                         activation="relu"),
                                              err_msg=f"m={m} k={k} column {j}, row 0 alone")
    finally:
        cpu.set_isa(cpu.detected_isa())
