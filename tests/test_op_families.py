"""Every float op of the registry's element-wise, activation, pool, conv, linear, loss and norm families,
on every available CPU backend, against the float64 reference through ``check_op``
(tests/conftest.py: one helper, one tolerance rule), over random shapes and the
edge sizes of the SIMD widths.

A new op of these families must add its sweep to SWEEPS (a test checks that every
registered op has one). The optim family updates its arguments in place and the
quant family is exact integer arithmetic: both are checked bit for bit by their
own test files (test_optim_kernels.py, test_quant.py), not through this rule.
"""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import _registry

from conftest import check_op

FAMILIES = ("elementwise", "activation", "pool", "conv", "linear", "loss", "norm")
DTYPES = (np.float32, np.float64)
# element counts around the vector widths (8 fp32 on AVX2, 16 on AVX-512) and a prime
EDGE = (1, 7, 16, 17, 33)


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _relu(rng, dtype):
    for n in EDGE:
        yield (_normal(rng, (n, 3), dtype),), {}, {}


def _relu_backward(rng, dtype):
    for n in EDGE:
        x = _normal(rng, (2, n), dtype)
        x[0, ::3] = 0  # the mask's edge
        yield (_normal(rng, x.shape, dtype), x), {}, {}


def _bias_relu(rng, dtype):
    for shape in ((3, 17), (2, 5, 4, 7), (1, 16, 1, 1)):
        yield (_normal(rng, shape, dtype), _normal(rng, shape[1], dtype)), {}, {}


def _bias_relu_backward(rng, dtype):
    for shape in ((3, 17), (2, 5, 4, 7), (4, 16, 3, 3)):
        g = _normal(rng, shape, dtype)
        y = lk.relu(_normal(rng, shape, dtype))
        per_channel = int(np.prod(shape)) // shape[1]
        yield (g, y), {}, dict(terms=per_channel, magnitude_args=(np.abs(g), y))


def _pool_geometries():
    return (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
            dict(kernel_size=(2, 3), stride=(1, 2), padding=((1, 0), (0, 2))))


def _max_pool2d(rng, dtype):
    for geometry in _pool_geometries():
        for shape in ((2, 3, 9, 11), (4, 17, 17)):
            yield (_normal(rng, shape, dtype),), dict(geometry, dilation=1), dict(rtol=0, atol=0)
    yield (_normal(rng, (1, 2, 12, 12), dtype), 3), dict(dilation=2), dict(rtol=0, atol=0)


def _max_pool2d_backward(rng, dtype):
    for geometry in _pool_geometries():
        x = _normal(rng, (2, 3, 9, 11), dtype)
        y, indices = lk.max_pool2d(x, return_indices=True, **geometry)
        k = geometry["kernel_size"]
        taps = int(np.prod(k if isinstance(k, tuple) else (k, k)))
        yield (_normal(rng, y.shape, dtype), indices, x.shape), {}, dict(terms=taps, magnitudes=True)


def _avg_pool2d(rng, dtype):
    for geometry in _pool_geometries():
        for extra in (dict(), dict(count_include_pad=False), dict(divisor_override=5)):
            x = _normal(rng, (2, 3, 9, 11), dtype)
            yield (x,), dict(geometry, **extra), dict(terms=9, magnitudes=True)


def _avg_pool2d_backward(rng, dtype):
    for geometry in _pool_geometries():
        shape = (2, 3, 9, 11)
        y = lk.avg_pool2d(_normal(rng, shape, dtype), **geometry)
        yield (_normal(rng, y.shape, dtype), shape), dict(geometry), dict(terms=9, magnitudes=True)


def _conv_cases():
    # (x shape, weight shape, stride, padding, dilation, groups)
    return (((2, 3, 9, 9), (4, 3, 3, 3), 1, 1, 1, 1), ((1, 4, 11, 7), (6, 2, 5, 3), (2, 1), (2, 0), 1, 2),
            ((2, 8, 8, 8), (8, 1, 3, 3), 1, 1, 2, 8), ((1, 17, 5, 5), (16, 17, 1, 1), 1, 0, 1, 1))


def _conv2d(rng, dtype):
    for xs, ws, stride, padding, dilation, groups in _conv_cases():
        taps = ws[1] * ws[2] * ws[3]
        for activation in (None, "relu"):
            args = (_normal(rng, xs, dtype), _normal(rng, ws, dtype), _normal(rng, ws[0], dtype),
                    stride, padding, dilation, groups)
            yield args, dict(activation=activation), dict(terms=taps + 1, magnitudes=True)


def _conv2d_backward(rng, dtype):
    for xs, ws, stride, padding, dilation, groups in _conv_cases():
        x, w = _normal(rng, xs, dtype), _normal(rng, ws, dtype)
        y = lk.conv2d(x, w, None, stride, padding, dilation, groups)
        longest = max(ws[0] * ws[2] * ws[3], y.shape[0] * y.shape[2] * y.shape[3])
        yield ((_normal(rng, y.shape, dtype), x, w, stride, padding, dilation, groups), {},
               dict(terms=longest, magnitudes=True))


def _linear(rng, dtype):
    for m, k, n in ((1, 400, 120), (3, 17, 5), (8, 33, 16), (2, 1, 7)):
        for activation in (None, "relu"):
            args = (_normal(rng, (m, k), dtype), _normal(rng, (n, k), dtype), _normal(rng, n, dtype))
            yield args, dict(activation=activation), dict(terms=k + 1, magnitudes=True)


def _linear_backward(rng, dtype):
    for m, k, n in ((1, 400, 120), (3, 17, 5), (8, 33, 16)):
        args = (_normal(rng, (m, n), dtype), _normal(rng, (m, k), dtype), _normal(rng, (n, k), dtype))
        yield args, {}, dict(terms=max(m, n), magnitudes=True)


def _matmul(rng, dtype):
    for m, k, n in ((1, 1, 1), (5, 17, 33), (16, 64, 9)):
        yield (_normal(rng, (m, k), dtype), _normal(rng, (k, n), dtype)), {}, dict(terms=k, magnitudes=True)


def _cross_entropy_args(rng, dtype, n, c):
    target = rng.integers(0, c, n)
    target[1::4] = -100  # ignored rows (row 0 is kept: "mean" over no row is NaN, tested elsewhere)
    return _normal(rng, (n, c), dtype) * 3, target


def _cross_entropy(rng, dtype):
    for n, c in ((1, 2), (7, 10), (33, 17)):
        z, t = _cross_entropy_args(rng, dtype, n, c)
        for kwargs in (dict(), dict(reduction="sum", label_smoothing=0.1), dict(reduction="none"),
                       dict(weight=np.abs(_normal(rng, c, dtype)) + 0.1)):
            yield (z, t), kwargs, dict(terms=n * c)


def _cross_entropy_backward(rng, dtype):
    for n, c in ((1, 2), (7, 10), (33, 17)):
        z, t = _cross_entropy_args(rng, dtype, n, c)
        yield (np.asarray(1.0, dtype), z, t), dict(label_smoothing=0.05), dict(terms=c)
        yield (_normal(rng, n, dtype), z, t), dict(reduction="none"), dict(terms=c)


def _bn_args(rng, dtype, shape):
    c = shape[1]
    return (_normal(rng, shape, dtype) * 2 + 1, np.abs(_normal(rng, c, dtype)) + 0.5, _normal(rng, c, dtype))


def _batch_norm(rng, dtype):
    # running statistics in evaluation; None in training (check_op wants the arguments unchanged:
    # the in-place update of the running statistics is checked against torch in test_norm.py)
    for shape in ((5, 3), (2, 4, 5, 7), (3, 17, 2, 2)):
        x, w, b = _bn_args(rng, dtype, shape)
        mean, var = _normal(rng, shape[1], dtype), np.abs(_normal(rng, shape[1], dtype)) + 0.1
        terms = x.size // shape[1]
        for activation in (None, "relu"):
            yield (x, mean, var, w, b), dict(training=False, activation=activation), {}
            yield (x, None, None, w, b), dict(training=True, activation=activation), dict(terms=terms)
        yield (x, mean, var), dict(training=False, eps=1e-3), {}


def _batch_norm_backward(rng, dtype):
    for shape in ((5, 3), (2, 4, 5, 7), (3, 17, 2, 2)):
        x, w, _ = _bn_args(rng, dtype, shape)
        mean, var = _normal(rng, shape[1], dtype), np.abs(_normal(rng, shape[1], dtype)) + 0.1
        g = _normal(rng, shape, dtype)
        terms = x.size // shape[1]
        yield (g, x, w, mean, var), dict(training=False), dict(terms=terms)
        yield (g, x, w, None, None), dict(training=True), dict(terms=terms)
        y = lk.batch_norm(x, None, None, w, None, training=True, activation="relu")
        yield ((g, x, w, None, None), dict(training=True, activation="relu", output=y),
               dict(terms=terms))


def _activation_sweep(op, extra=()):
    """Values across every branch of the activations (the kinks at 0, +-3 and 6 included)."""
    def sweep(rng, dtype):
        for args in extra or ((),):
            for n in EDGE:
                x = (_normal(rng, (n, 3), dtype) * 4).astype(dtype)
                x[0, :] = (-3.0, 0.0, 6.0)[: x.shape[1]]
                if op.endswith("_backward"):
                    saved = getattr(lk, op[:-len("_backward")])(x, *args) if op in (
                        "sigmoid_backward", "tanh_backward") else x
                    yield (_normal(rng, x.shape, dtype), saved, *args), {}, {}
                else:
                    yield (x, *args), {}, {}
    return sweep


_ACTIVATIONS = {"relu6": (), "leaky_relu": ((0.01,), (0.2,)), "sigmoid": (), "tanh": (), "silu": (),
                "gelu": (("none",), ("tanh",)), "hardswish": ()}
_ACTIVATION_SWEEPS = {name + suffix: _activation_sweep(name + suffix, extra)
                      for name, extra in _ACTIVATIONS.items() for suffix in ("", "_backward")}


SWEEPS = {
    "relu": _relu, "relu_backward": _relu_backward, "bias_relu": _bias_relu,
    "bias_relu_backward": _bias_relu_backward, "max_pool2d": _max_pool2d,
    "max_pool2d_backward": _max_pool2d_backward, "avg_pool2d": _avg_pool2d,
    "avg_pool2d_backward": _avg_pool2d_backward, "conv2d": _conv2d, "conv2d_backward": _conv2d_backward,
    "linear": _linear, "linear_backward": _linear_backward, "matmul": _matmul,
    "cross_entropy": _cross_entropy, "cross_entropy_backward": _cross_entropy_backward,
    "batch_norm": _batch_norm, "batch_norm_backward": _batch_norm_backward,
    **_ACTIVATION_SWEEPS,
}
FAMILY_OPS = [spec.name for family in FAMILIES for spec in _registry.ops_in_family(family)]


def test_every_op_of_the_families_has_a_sweep():
    assert sorted(FAMILY_OPS) == sorted(SWEEPS), "add the new op's sweep to SWEEPS"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", FAMILY_OPS)
def test_op_on_every_backend_against_the_reference(op, dtype):
    rng = np.random.default_rng(abs(hash(op)) % 2**32)
    cases = list(SWEEPS[op](rng, dtype))
    assert cases
    for args, kwargs, rule in cases:
        check_op(op, *args, **rule, **kwargs)
