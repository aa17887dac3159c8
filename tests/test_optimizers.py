"""optim.SGD / Adam / AdamW and the lr schedules against torch.optim over several steps."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels import optim
from lepton_kernels.autograd import Tensor

torch = pytest.importorskip("torch")


def _twins(rng, shapes):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return ([Tensor(a.copy(), requires_grad=True) for a in arrays],
            [torch.tensor(a.copy(), requires_grad=True) for a in arrays])


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    lambda ps: optim.Adam(ps, lr=0.01), lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.01),
])
def test_optimizers_match_torch(make):
    torch_make = {optim.SGD: torch.optim.SGD, optim.Adam: torch.optim.Adam, optim.AdamW: torch.optim.AdamW}
    rng = np.random.default_rng(0)
    ours, theirs = _twins(rng, [(4, 3), (7,), (2, 2, 3, 3)])
    opt = make(ours)
    group = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "decoupled_weight_decay")}
    topt = torch_make[type(opt)](theirs, **group)
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in ours]
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = g, torch.tensor(g)
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_parameters_without_grad_are_skipped_and_late_starters_work():
    rng = np.random.default_rng(1)
    ours, theirs = _twins(rng, [(3,), (3,)])
    opt, topt = optim.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    for step in range(3):
        active = [0] if step == 0 else [0, 1]
        for i in range(2):
            g = rng.standard_normal(3).astype(np.float32)
            ours[i].grad = g if i in active else None
            theirs[i].grad = torch.tensor(g) if i in active else None
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedulers_match_torch():
    p, tp = Tensor(np.ones(1, np.float32), requires_grad=True), torch.ones(1, requires_grad=True)
    for ours, theirs in (
        (lambda o: optim.lr_scheduler.StepLR(o, 2, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
        (lambda o: optim.lr_scheduler.CosineAnnealingLR(o, 5, 0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, 0.01)),
    ):
        opt, topt = optim.SGD([p], lr=0.1), torch.optim.SGD([tp], lr=0.1)
        s, ts = ours(opt), theirs(topt)
        for _ in range(7):
            assert s.get_last_lr()[0] == pytest.approx(ts.get_last_lr()[0], rel=1e-12)
            topt.step()
            s.step()
            ts.step()


def test_bad_hyper_parameters():
    p = Tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([], lr=0.1)
    p.grad = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="beta1"):
        optim.Adam([p], lr=0.1, betas=(1.5, 0.9)).step()


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.1)])
def test_arrays_changed_between_steps_are_still_checked(make):
    rng = np.random.default_rng(2)
    ours, _ = _twins(rng, [(4, 3), (5,)])
    opt = make(ours)
    for p in ours:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    before = [p.data.copy() for p in ours]
    ours[1].grad = np.ones(6, np.float32)  # a gradient of the wrong size after a first good step
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    ours[1].grad = np.ones(5, np.float64)
    with pytest.raises(TypeError, match="dtype"):
        opt.step()
    ours[1].grad = np.ones(5, np.float32)
    ours[1].data = np.zeros(10, np.float32)[::2]  # a parameter replaced by a non-contiguous view
    with pytest.raises(ValueError, match="contiguous"):
        opt.step()
    np.testing.assert_array_equal(ours[0].data, before[0])  # refused before anything was written
