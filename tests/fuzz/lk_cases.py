"""Valid small arguments for every public op (``lepton_kernels.ops.__all__``), shared by the
fuzz targets (a starting point to mutate), the hostile-input tests (views, resource limits)
and the determinism tests.

A case is a dict of named input arrays plus a function that runs the op on such a dict and
returns its result as a tuple of arrays. Ops that update arrays in place (the optimizer steps)
list those names in ``inplace`` and return the updated arrays; every other input must come
back unmodified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import lepton_kernels as lk

#: Public names that are not ops to call directly (the prepared object is built by prepare_*).
NOT_CALLED = {"PreparedQLinear"}


@dataclass
class Case:
    name: str
    arrays: dict[str, np.ndarray]
    run: Callable[[dict], tuple]
    inplace: frozenset = field(default_factory=frozenset)
    float_op: bool = True  # float in, float out (the determinism tests' ops)
    # the in-place arrays may be strided views, updated through them (batch_norm's running
    # statistics: NumPy arithmetic on C numbers); a kernel's in-place targets may not
    strided_inplace: bool = False

    def fresh_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.arrays.items()}

    def __call__(self, arrays=None) -> tuple:
        return _as_tuple(self.run(self.fresh_arrays() if arrays is None else arrays))


def _as_tuple(result) -> tuple:
    if result is None:
        return ()
    if isinstance(result, (tuple, list)):
        return tuple(np.asarray(r) for r in result if r is not None)
    return (np.asarray(result),)


def build_cases(seed: int = 0, dtype=np.float32, size: int = 1) -> dict[str, Case]:
    """One case per public op. ``size`` scales batch and spatial sizes (1 = tiny)."""
    rng = np.random.default_rng(seed)
    f = (lambda *s: rng.standard_normal(s).astype(dtype))
    n, h = 2 * size, 6 + size
    cases: list[Case] = []

    def add(name, arrays, run, inplace=(), float_op=True, strided_inplace=False):
        cases.append(Case(name, arrays, run, frozenset(inplace), float_op, strided_inplace))

    # convolution: x (n, 3, h, h-1), w (4, 3, 3, 2), padding 1 -> out (n, 4, h, h)
    conv_out = (n, 4, h, h)
    add("conv2d", dict(x=f(n, 3, h, h - 1), w=f(4, 3, 3, 2), b=f(4)),
        lambda a: lk.conv2d(a["x"], a["w"], a["b"], stride=1, padding=1))
    add("conv2d_backward", dict(g=f(*conv_out), x=f(n, 3, h, h - 1), w=f(4, 3, 3, 2)),
        lambda a: lk.conv2d_backward(a["g"], a["x"], a["w"], stride=1, padding=1))
    add("linear", dict(x=f(3 * size, 6), w=f(4, 6), b=f(4)), lambda a: lk.linear(a["x"], a["w"], a["b"]))
    add("linear_backward", dict(g=f(3 * size, 4), x=f(3 * size, 6), w=f(4, 6)),
        lambda a: lk.linear_backward(a["g"], a["x"], a["w"]))
    add("matmul", dict(a=f(3 * size, 6), b=f(6, 5)), lambda a: lk.matmul(a["a"], a["b"]))
    # elementwise and pooling
    add("relu", dict(x=f(n, 3, h, h)), lambda a: lk.relu(a["x"]))
    add("relu_backward", dict(g=f(n, 3, h, h), x=f(n, 3, h, h)), lambda a: lk.relu_backward(a["g"], a["x"]))
    add("bias_relu", dict(x=f(n, 3, h, h), b=f(3)), lambda a: lk.bias_relu(a["x"], a["b"]))
    add("bias_relu_backward", dict(g=f(n, 3, h, h), y=np.maximum(f(n, 3, h, h), 0)),
        lambda a: lk.bias_relu_backward(a["g"], a["y"]))
    add("max_pool2d", dict(x=f(n, 3, h, h + 1)),
        lambda a: lk.max_pool2d(a["x"], 2, stride=2, padding=1, return_indices=True))
    pooled = lk.max_pool2d(f(n, 3, h, h + 1), 2, stride=2, padding=1, return_indices=True)
    add("max_pool2d_backward", dict(g=f(*pooled[0].shape), i=pooled[1]),
        lambda a: lk.max_pool2d_backward(a["g"], a["i"], (n, 3, h, h + 1)))
    add("avg_pool2d", dict(x=f(n, 3, h, h + 1)), lambda a: lk.avg_pool2d(a["x"], 3, stride=2, padding=1))
    avg_shape = lk.avg_pool2d(f(n, 3, h, h + 1), 3, stride=2, padding=1).shape
    add("avg_pool2d_backward", dict(g=f(*avg_shape)),
        lambda a: lk.avg_pool2d_backward(a["g"], (n, 3, h, h + 1), 3, stride=2, padding=1))
    # activations (the backward ops of sigmoid and tanh take the forward's output)
    for name, extra in (("relu6", ()), ("leaky_relu", (0.2,)), ("sigmoid", ()), ("tanh", ()), ("silu", ()),
                        ("gelu", ("tanh",)), ("hardswish", ())):
        forward, backward = getattr(lk, name), getattr(lk, name + "_backward")
        add(name, dict(x=f(n, 3, h, h) * 4), lambda a, forward=forward, extra=extra: forward(a["x"], *extra))
        add(name + "_backward", dict(g=f(n, 3, h, h), s=f(n, 3, h, h) * 4),
            lambda a, backward=backward, extra=extra: backward(a["g"], a["s"], *extra))

    # batch normalization (training moves the running statistics in place)
    def bn(a):
        y = lk.batch_norm(a["x"], a["rm"], a["rv"], a["w"], a["b"], training=True, activation="relu")
        return y, a["rm"], a["rv"]

    add("batch_norm", dict(x=f(n, 3, h, h), rm=f(3), rv=np.abs(f(3)) + 0.5, w=f(3), b=f(3)), bn,
        inplace=("rm", "rv"), strided_inplace=True)
    add("batch_norm_backward", dict(g=f(n, 3, h, h), x=f(n, 3, h, h), w=f(3)),
        lambda a: lk.batch_norm_backward(a["g"], a["x"], a["w"], None, None, training=True))
    # loss
    target = rng.integers(0, 4, size=3 * size).astype(np.int64)
    add("cross_entropy", dict(x=f(3 * size, 4), t=target, wt=np.abs(f(4)) + 0.5),
        lambda a: lk.cross_entropy(a["x"], a["t"], a["wt"], label_smoothing=0.1))
    add("cross_entropy_backward", dict(g=np.asarray(1.5, dtype), x=f(3 * size, 4), t=target),
        lambda a: lk.cross_entropy_backward(a["g"], a["x"], a["t"], label_smoothing=0.1))
    # optimizers (in place: param and state)
    p = 7 * size

    def sgd(a):
        lk.sgd_step(a["p"], a["g"], a["m"], lr=0.1, momentum=0.9, weight_decay=0.01)
        return a["p"], a["m"]

    add("sgd_step", dict(p=f(p), g=f(p), m=f(p)), sgd, inplace=("p", "m"))

    def adam(a):
        lk.adam_step(a["p"], a["g"], a["m"], a["v"], step=3, lr=1e-2, weight_decay=0.01)
        return a["p"], a["m"], a["v"]

    add("adam_step", dict(p=f(p), g=f(p), m=f(p), v=np.abs(f(p))), adam, inplace=("p", "m", "v"))

    def msgd(a):
        lk.multi_tensor_sgd_step([a["p0"], a["p1"]], [a["g0"], a["g1"]], [a["m0"], a["m1"]], lr=0.1,
                                 momentum=0.9)
        return a["p0"], a["p1"], a["m0"], a["m1"]

    add("multi_tensor_sgd_step", dict(p0=f(p), p1=f(3, 2), g0=f(p), g1=f(3, 2), m0=f(p), m1=f(3, 2)), msgd,
        inplace=("p0", "p1", "m0", "m1"))

    def madam(a):
        lk.multi_tensor_adam_step([a["p0"], a["p1"]], [a["g0"], a["g1"]], [a["m0"], a["m1"]],
                                  [a["v0"], a["v1"]], step=2, lr=1e-2)
        return a["p0"], a["p1"], a["m0"], a["m1"], a["v0"], a["v1"]

    add("multi_tensor_adam_step", dict(p0=f(p), p1=f(3, 2), g0=f(p), g1=f(3, 2), m0=f(p), m1=f(3, 2),
                                       v0=np.abs(f(p)), v1=np.abs(f(3, 2))), madam,
        inplace=("p0", "p1", "m0", "m1", "v0", "v1"))
    # int8 (not float ops: exact integer results)
    u8 = (lambda *s: rng.integers(0, 256, size=s).astype(np.uint8))
    s8 = (lambda *s: rng.integers(-128, 128, size=s).astype(np.int8))
    add("quantize", dict(x=f(n, 3, h, h)), lambda a: lk.quantize(a["x"], 0.05, 3), float_op=False)
    add("dequantize", dict(q=s8(n, 3, h, h)), lambda a: lk.dequantize(a["q"], 0.05, 3), float_op=False)
    add("dynamic_quantize", dict(x=f(4 * size, 5)), lambda a: lk.dynamic_quantize(a["x"]), float_op=False)
    add("fake_quantize", dict(x=f(n, 3, h, h)), lambda a: lk.fake_quantize(a["x"], 0.05, 0), float_op=False)
    add("matmul_integer", dict(a=u8(3 * size, 6), b=s8(6, 4)), lambda a: lk.matmul_integer(a["a"], a["b"], 3, 0),
        float_op=False)
    add("conv2d_integer", dict(x=u8(n, 3, h, h), w=s8(4, 3, 3, 3)),
        lambda a: lk.conv2d_integer(a["x"], a["w"], 3, 0, padding=1), float_op=False)
    add("qlinear_matmul", dict(a=u8(3 * size, 6), b=s8(6, 4)),
        lambda a: lk.qlinear_matmul(a["a"], 0.02, 3, a["b"], 0.01, 0, 0.05, 2), float_op=False)
    add("qlinear_conv2d", dict(x=u8(n, 3, h, h), w=s8(4, 3, 3, 3)),
        lambda a: lk.qlinear_conv2d(a["x"], 0.02, 3, a["w"], 0.01, 0, 0.05, 2, padding=1), float_op=False)
    add("prepare_qlinear_matmul", dict(a=u8(3 * size, 6), b=s8(6, 4)),
        lambda a: lk.prepare_qlinear_matmul(0.02, 3, a["b"], 0.01, 0, 0.05, 2)(a["a"]), float_op=False)
    add("prepare_qlinear_conv2d", dict(x=u8(n, 3, h, h), w=s8(4, 3, 3, 3)),
        lambda a: lk.prepare_qlinear_conv2d(0.02, 3, a["w"], 0.01, 0, 0.05, 2, padding=1)(a["x"]),
        float_op=False)
    return {c.name: c for c in cases}


def missing_ops(cases: dict[str, Case]) -> set[str]:
    """Public ops without a case (a new op must add one here)."""
    return set(lk.ops.__all__) - NOT_CALLED - set(cases)
