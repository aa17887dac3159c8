"""sgd_step / adam_step (single and multi-tensor) on every CPU backend vs the reference and torch.optim."""
from __future__ import annotations

import numpy as np
import pytest

import lepton_kernels as lk
from lepton_kernels import reference as ref

torch = pytest.importorskip("torch")

SIZES = [1, 15, 16, 17, 1000, 70001]
SGD_CONFIGS = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
               dict(momentum=0.5, dampening=0.3, maximize=True), dict(weight_decay=0.1)]
ADAM_CONFIGS = [dict(), dict(weight_decay=1e-2), dict(weight_decay=5e-2, decoupled_weight_decay=True),
                dict(amsgrad=True), dict(maximize=True, beta1=0.5, beta2=0.9, eps=1e-6)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_sgd_matches_torch_over_steps(cpu_backend, config, size, dtype, rng):
    p = rng.standard_normal(size).astype(dtype)
    t = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.SGD([t], lr=0.05, **config)
    buf = np.zeros_like(p) if config.get("momentum") else None
    for step in range(3):
        g = rng.standard_normal(size).astype(dtype)
        t.grad = torch.tensor(g)
        opt.step()
        lk.sgd_step(p, g, buf, lr=0.05, first_step=step == 0, **config)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(p, t.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("config", ADAM_CONFIGS)
def test_adam_matches_torch_over_steps(cpu_backend, config, size, dtype, rng):
    p = rng.standard_normal(size).astype(dtype)
    t = torch.tensor(p.copy(), requires_grad=True)
    decoupled = config.pop("decoupled_weight_decay", False)
    kwargs = {("betas" if k == "beta1" else k): v for k, v in config.items() if k != "beta2"}
    if "beta1" in config:
        kwargs["betas"] = (config["beta1"], config["beta2"])
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([t], lr=0.01, **kwargs)
    m, v = np.zeros_like(p), np.zeros_like(p)
    vmax = np.zeros_like(p) if config.get("amsgrad") else None
    for step in range(1, 4):
        g = rng.standard_normal(size).astype(dtype)
        t.grad = torch.tensor(g)
        opt.step()
        lk.adam_step(p, g, m, v, step=step, lr=0.01, decoupled_weight_decay=decoupled, max_exp_avg_sq=vmax,
                     **config)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(p, t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m, opt.state[t]["exp_avg"].numpy(), rtol=tol, atol=tol)


def test_multi_tensor_forms_update_every_array(cpu_backend, rng):
    shapes = [(3, 4), (17,), (2, 3, 5, 5)]
    ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    expected = [ref.sgd_step(p, g, None, lr=0.1, weight_decay=0.01)[0] for p, g in zip(ps, gs)]
    lk.multi_tensor_sgd_step(ps, gs, lr=0.1, weight_decay=0.01)
    for p, e in zip(ps, expected):
        np.testing.assert_allclose(p, e, rtol=1e-6)
    ms = [np.zeros(s, np.float32) for s in shapes]
    vs = [np.zeros(s, np.float32) for s in shapes]
    expected = [ref.adam_step(p, g, m, v, step=1, lr=0.01)[0] for p, g, m, v in zip(ps, gs, ms, vs)]
    lk.multi_tensor_adam_step(ps, gs, ms, vs, step=1, lr=0.01)
    for p, e in zip(ps, expected):
        np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-7)


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("call,exc,words", [
    (lambda p, g: lk.sgd_step(_read_only(p), g, lr=0.1), ValueError, ("params[0]",)),
    (lambda p, g: lk.sgd_step(p[::2], g[::2], lr=0.1), ValueError, ("contiguous",)),
    (lambda p, g: lk.sgd_step(p, g[:3], lr=0.1), ValueError, ("grads[0]", "shape")),
    (lambda p, g: lk.sgd_step(p, g.astype(np.float64), lr=0.1), TypeError, ("dtype",)),
    (lambda p, g: lk.sgd_step(p.astype(np.int32), g, lr=0.1), TypeError, ("params[0]",)),
    (lambda p, g: lk.sgd_step(p, g, lr=-0.1), ValueError, ("lr",)),
    (lambda p, g: lk.sgd_step(p, g, lr=0.1, momentum=0.9), ValueError, ("momentum_buffers",)),
    (lambda p, g: lk.sgd_step(p, g, np.zeros(3, np.float32), lr=0.1, momentum=0.9), ValueError, ("shape",)),
    (lambda p, g: lk.sgd_step(p, g, p, lr=0.1, momentum=0.9), ValueError, ("share",)),
    (lambda p, g: lk.sgd_step(p, g, lr=0.1, nesterov=True), ValueError, ("nesterov",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=0, lr=0.1), ValueError, ("step",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=0.1, beta1=1.0), ValueError,
     ("beta1",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=0.1, beta2=-0.1), ValueError,
     ("beta2",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=0.1, amsgrad=True),
     ValueError, ("max_exp_avg_sqs",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros(3, np.float32), np.zeros_like(p), step=1, lr=0.1), ValueError,
     ("exp_avgs[0]",)),
    (lambda p, g: lk.multi_tensor_sgd_step([p, p.copy()], [g], lr=0.1), ValueError, ("lengths",)),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=2**63, lr=0.1), ValueError,
     ("step", "64-bit")),  # was a pybind11 "incompatible function arguments" dump
    # the same element count in another shape was accepted ("same shape" is the documented rule)
    (lambda p, g: lk.sgd_step(p, g.reshape(1, 16), lr=0.1), ValueError, ("grads[0]", "(16,)", "(1, 16)")),
    (lambda p, g: lk.sgd_step(p.reshape(4, 4), g, lr=0.1), ValueError, ("grads[0]", "(4, 4)", "(16,)")),
    (lambda p, g: lk.sgd_step(p, g, np.zeros((16, 1), np.float32), lr=0.1, momentum=0.9), ValueError,
     ("momentum_buffers[0]", "(16,)", "(16, 1)")),
    (lambda p, g: lk.adam_step(p, g, np.zeros((2, 8), np.float32), np.zeros_like(p), step=1, lr=0.1), ValueError,
     ("exp_avgs[0]", "(16,)", "(2, 8)")),
    (lambda p, g: lk.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=0.1, amsgrad=True,
                               max_exp_avg_sq=np.zeros((1, 16), np.float32)), ValueError,
     ("max_exp_avg_sqs[0]", "(1, 16)")),
    (lambda p, g: lk.multi_tensor_adam_step([p, p[:4].copy()], [g, g[:4].reshape(1, 4)],
                                            [np.zeros_like(p), np.zeros(4, np.float32)],
                                            [np.zeros_like(p), np.zeros(4, np.float32)], step=1, lr=0.1), ValueError,
     ("grads[1]", "(4,)", "(1, 4)")),
])
def test_bad_updates_are_refused_and_nothing_changes(call, exc, words, rng):
    p = rng.standard_normal(16).astype(np.float32)
    g = rng.standard_normal(16).astype(np.float32)
    before = p.copy()
    with pytest.raises(exc) as info:
        call(p, g)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    np.testing.assert_array_equal(p, before)


def test_multi_tensor_validates_everything_before_updating(rng):
    good = rng.standard_normal(8).astype(np.float32)
    bad = _read_only(rng.standard_normal(8).astype(np.float32))
    before = good.copy()
    with pytest.raises(ValueError, match="params\\[1\\]"):
        lk.multi_tensor_sgd_step([good, bad], [np.ones(8, np.float32)] * 2, lr=0.1)
    np.testing.assert_array_equal(good, before)


def test_zero_d_param_needs_zero_d_state(cpu_backend):
    """adam_step with a 0-d param and (1,) state was accepted (same element count)."""
    p = np.array(1.0, np.float32)
    for name, state in (("exp_avgs[0]", (np.zeros(1, np.float32), np.zeros((), np.float32))),
                        ("exp_avg_sqs[0]", (np.zeros((), np.float32), np.zeros(1, np.float32)))):
        with pytest.raises(ValueError, match=r"%s.*\(\).*\(1,\)" % name.replace("[", r"\[").replace("]", r"\]")):
            lk.adam_step(p, np.ones((), np.float32), *state, step=1, lr=0.1)
        assert p == 1.0
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        lk.adam_step(p, np.ones(1, np.float32), np.zeros((), np.float32), np.zeros((), np.float32), step=1, lr=0.1)
    lk.adam_step(p, np.ones((), np.float32), np.zeros((), np.float32), np.zeros((), np.float32), step=1, lr=0.1)
    assert p < 1.0


def test_binding_refuses_other_shapes_directly():
    """The compiled binding itself checks shapes (a direct call must not accept a reshaped array)."""
    c = pytest.importorskip("lepton_kernels._lepton_cpu")
    p = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"sgd_step: grads\[0\] must have the shape of params\[0\] \(8,\), got \(1, 8\)"):
        c.sgd_step([p], [np.ones((1, 8), np.float32)], None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    z = np.zeros((), np.float32)
    with pytest.raises(ValueError, match=r"adam_step: exp_avgs\[0\].*\(\), got \(1,\)"):
        c.adam_step([z], [np.ones((), np.float32)], [np.zeros(1, np.float32)], [np.zeros((), np.float32)], None, 1,
                    0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False)
    assert not p.any() and z == 0
