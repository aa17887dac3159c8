"""lepton_kernels.torch: the torch.ops.lepton custom operators (opcheck, gradients against
torch's), the module subclasses, swap_modules, the fallbacks and torch.compile."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lepton_kernels.torch as lt  # noqa: E402

F = torch.nn.functional
OPS = torch.ops.lepton


def _t(*shape, grad=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)


# ---------------------------------------------------------------- the custom operators
def _opcheck_cases():
    x4 = _t(2, 3, 9, 9, grad=True)
    w = _t(4, 3, 3, 3, grad=True)
    b = _t(4, grad=True)
    xg = _t(2, 4, 8, 8, grad=True)
    wg = _t(6, 2, 3, 3, grad=True)
    xl = _t(2, 5, 7, grad=True)
    wl = _t(3, 7, grad=True)
    z = _t(6, 5, grad=True)
    target = torch.tensor([0, 4, -100, 2, 1, 3])
    return [
        ("relu", OPS.relu, (_t(3, 17, grad=True),)),
        ("relu_backward", OPS.relu_backward, (_t(3, 4), torch.relu(_t(3, 4, seed=1)))),
        ("linear", OPS.linear, (xl, wl, _t(3, grad=True))),
        ("linear no bias", OPS.linear, (xl, wl, None)),
        ("linear_backward", OPS.linear_backward, (_t(2, 5, 3), xl.detach(), wl.detach(), None, [True, True, True])),
        ("linear_relu", OPS.linear_relu, (xl, wl, _t(3, grad=True))),
        ("conv2d", OPS.conv2d, (x4, w, b, [1, 1], [1, 1], [1, 1], 1)),
        ("conv2d groups", OPS.conv2d, (xg, wg, None, [2, 1], [0, 1], [1, 2], 2)),
        ("conv2d_backward", OPS.conv2d_backward,
         (_t(2, 4, 9, 9), x4.detach(), w.detach(), None, [1, 1], [1, 1], [1, 1], 1, [False, True, True])),
        ("conv2d_relu", OPS.conv2d_relu, (x4, w, b, [1, 1], [1, 1], [1, 1], 1)),
        ("max_pool2d", OPS.max_pool2d, (x4, [2, 2], [2, 2], [0, 0], [1, 1], False)),
        ("max_pool2d ceil", OPS.max_pool2d, (x4, [3, 3], [2, 2], [1, 1], [1, 1], True)),
        ("max_pool2d_with_indices", OPS.max_pool2d_with_indices, (x4, [2, 2], [], [0, 0], [1, 1], False)),
        ("avg_pool2d", OPS.avg_pool2d, (x4, [3, 3], [2, 2], [1, 1], True, False, None)),
        ("avg_pool2d divisor", OPS.avg_pool2d, (x4, [2, 2], [2, 2], [0, 0], False, True, 3)),
        ("cross_entropy mean", OPS.cross_entropy, (z, target, None, 1, -100, 0.0)),
        ("cross_entropy none weighted", OPS.cross_entropy, (z, target, torch.rand(5) + 0.5, 0, -100, 0.1)),
        ("cross_entropy sum", OPS.cross_entropy, (z, target, None, 2, -100, 0.0)),
        ("batch_norm training", OPS.batch_norm,
         (_t(4, 3, 5, 5, grad=True), torch.zeros(3), torch.ones(3), _t(3, grad=True), _t(3, grad=True), True, 0.1,
          1e-5, False)),
        ("batch_norm eval relu", OPS.batch_norm,
         (_t(4, 3, 5, 5, grad=True), torch.rand(3), torch.rand(3) + 0.5, _t(3, grad=True), None, False, 0.1, 1e-5,
          True)),
        ("batch_norm no stats", OPS.batch_norm, (_t(6, 4, grad=True), None, None, None, None, True, 0.1, 1e-5, False)),
        *((f"activation {kind}", OPS.activation, (_t(3, 7, grad=True), kind, 0.2))
          for kind in ("relu6", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "gelu_tanh", "hardswish")),
    ]


@pytest.mark.parametrize("name, op, args", _opcheck_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


def test_public_schemas_mirror_aten():
    assert str(OPS.conv2d.default._schema) == (
        "lepton::conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> Tensor")
    assert str(OPS.max_pool2d.default._schema) == (
        "lepton::max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> Tensor")
    assert str(OPS.avg_pool2d.default._schema).startswith(
        "lepton::avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
        "bool count_include_pad, int? divisor_override)")
    assert str(OPS.linear.default._schema) == "lepton::linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor"
    assert str(OPS.relu.default._schema) == "lepton::relu(Tensor self) -> Tensor"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_torch(dtype):
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    cases = [
        (lambda x, w, b: OPS.conv2d(x, w, b, [2, 1], [1, 2], [1, 1], 1),
         lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2)), ((2, 3, 9, 8), (5, 3, 3, 3), (5,))),
        (lambda x, w, b: OPS.linear(x, w, b), F.linear, ((4, 6, 10), (7, 10), (7,))),
        (lambda x: OPS.relu(x), torch.relu, ((5, 9),)),
        (lambda x: OPS.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True),
         lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), ((2, 3, 9, 9),)),
        (lambda x: OPS.max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], False)[0],
         lambda x: F.max_pool2d(x, 2), ((2, 3, 8, 8),)),
        (lambda x: OPS.avg_pool2d(x, [3, 3], [2, 2], [1, 1], False, False, None),
         lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), ((2, 3, 9, 9),)),
    ]
    for lk_fn, torch_fn, shapes in cases:
        args = [_t(*s, grad=True, dtype=dtype, seed=i) for i, s in enumerate(shapes)]
        twins = [a.detach().clone().requires_grad_() for a in args]
        y, ty = lk_fn(*args), torch_fn(*twins)
        torch.testing.assert_close(y, ty, **tol)
        g = _t(*y.shape, dtype=dtype, seed=7)
        (y * g).sum().backward()
        (ty * g).sum().backward()
        for a, ta in zip(args, twins):
            torch.testing.assert_close(a.grad, ta.grad, **tol)


def test_cross_entropy_matches_torch():
    z, tz = _t(8, 6, grad=True), None
    tz = z.detach().clone().requires_grad_()
    target = torch.tensor([0, 5, -100, 2, 1, 3, 3, 4])
    weight = torch.rand(6) + 0.5
    for reduction in ("mean", "sum", "none"):
        z.grad = tz.grad = None
        loss = lt.nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=0.1)(z, target)
        tloss = nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=0.1)(tz, target)
        torch.testing.assert_close(loss, tloss)
        loss.sum().backward()
        tloss.sum().backward()
        torch.testing.assert_close(z.grad, tz.grad)


# ---------------------------------------------------------------- modules and swap_modules
class _Net(nn.Module):
    """A residual-free CNN with every swappable module, and a user module of its own."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 3, padding="same"), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_swap_modules_keeps_parameters_and_matches_torch():
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    keys = list(model.state_dict())
    swapped = lt.swap_modules(model)
    assert swapped == {"features": "Sequential", "features.0": "Conv2d", "features.1": "ReLU",
                       "features.2": "MaxPool2d", "features.3": "Conv2d", "features.4": "ReLU",
                       "features.5": "AvgPool2d", "head": "Sequential", "head.1": "Linear", "head.2": "ReLU",
                       "head.3": "Linear"}
    assert all(a is b for a, b in zip(params, model.parameters())) and list(model.state_dict()) == keys
    assert isinstance(model.features[0], nn.Conv2d) and type(model.features[0]) is lt.nn.Conv2d
    x = torch.randn(4, 1, 28, 28)
    target = torch.tensor([1, 2, 3, 4])
    for mode in ("train", "eval"):
        getattr(model, mode)(), getattr(twin, mode)()
        model.zero_grad(), twin.zero_grad()
        loss = F.cross_entropy(model(x), target)
        tloss = F.cross_entropy(twin(x), target)
        torch.testing.assert_close(loss, tloss, rtol=1e-5, atol=1e-6)
        loss.backward()
        tloss.backward()
        for p, tp in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p.grad, tp.grad, rtol=1e-4, atol=1e-5)
    opt.step()  # the optimizer built before the swap updates the same parameters
    assert not torch.equal(params[0], twin.features[0].weight)


def test_sequential_fuses_conv_and_linear_with_relu_unless_hooked():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.ReLU())
    twin = copy.deepcopy(model)
    lt.swap_modules(model)
    plan = model._lepton_plan()
    assert [(type(m).__name__, r is not None) for m, r in plan] == [("Conv2d", True), ("Flatten", False),
                                                                    ("Linear", True)]
    x = torch.randn(3, 2, 8, 8)
    calls = []
    with torch.autograd.profiler.profile() as prof:
        out = model(x)
    names = {e.name for e in prof.function_events}
    assert "lepton::conv2d_relu" in names and "lepton::linear_relu" in names and "lepton::relu" not in names
    out.square().sum().backward()
    tout = twin(x)
    tout.square().sum().backward()
    torch.testing.assert_close(out, tout, rtol=1e-5, atol=1e-6)
    for p, tp in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, tp.grad, rtol=1e-4, atol=1e-5)
    model[1].register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    model(x)
    assert calls == ["ReLU"]  # a hooked ReLU runs as a module, so its hook sees its output
    assert [r is not None for _, r in model._lepton_plan()] == [False, False, False, True]


@pytest.mark.parametrize("output_size, shape, covered", [
    (1, (2, 3, 7, 5), True), ((2, 5), (2, 3, 8, 5), True), ((None, 1), (3, 6, 4), True), (3, (1, 2, 7, 7), False)])
def test_adaptive_avg_pool_runs_as_a_fixed_window_when_it_divides(output_size, shape, covered):
    pool = nn.AdaptiveAvgPool2d(output_size)
    lt.swap_modules(pool)
    x = _t(*shape, grad=True)
    tx = x.detach().clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = pool(x)
    assert (not caught) == covered, [str(w.message) for w in caught]
    ty = F.adaptive_avg_pool2d(tx, output_size)
    torch.testing.assert_close(y, ty)
    y.square().sum().backward()
    ty.square().sum().backward()
    torch.testing.assert_close(x.grad, tx.grad)


@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False)])
def test_batch_norm_module_matches_torch_with_its_buffers(kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, **kwargs), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          nn.BatchNorm2d(4, **kwargs))
    twin = copy.deepcopy(model)
    lt.swap_modules(model)
    assert [(type(m).__name__, r is not None) for m, r in model._lepton_plan()] == [
        ("Conv2d", False), ("BatchNorm2d", True), ("Conv2d", False), ("BatchNorm2d", False)]
    x = torch.randn(4, 3, 8, 8)
    for mode in ("train", "train", "eval"):
        getattr(model, mode)(), getattr(twin, mode)()
        model.zero_grad(), twin.zero_grad()
        y, ty = model(x), twin(x)
        torch.testing.assert_close(y, ty, rtol=1e-4, atol=1e-5)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        for p, tp in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p.grad, tp.grad, rtol=1e-4, atol=1e-4)
        for (name, b), tb in zip(model.named_buffers(), twin.buffers()):
            torch.testing.assert_close(b, tb, rtol=1e-5, atol=1e-6, msg=name)
    assert list(model.state_dict()) == list(twin.state_dict())


def test_activation_modules_match_torch_and_inplace_falls_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Hardswish(), nn.Linear(6, 6), nn.GELU("tanh"), nn.Linear(6, 6),
                          nn.Sigmoid(), nn.LeakyReLU(0.2), nn.ReLU6(), nn.SiLU(), nn.Tanh(), nn.GELU())
    twin = copy.deepcopy(model)
    swapped = lt.swap_modules(model)
    assert [swapped[str(i)] for i in (1, 3, 5, 6, 7, 8, 9, 10)] == [
        "Hardswish", "GELU", "Sigmoid", "LeakyReLU", "ReLU6", "SiLU", "Tanh", "GELU"]
    x = torch.randn(4, 5) * 3
    y, ty = model(x), twin(x)
    torch.testing.assert_close(y, ty)
    y.sum().backward()
    ty.sum().backward()
    for p, tp in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, tp.grad)
    silu = nn.SiLU(inplace=True)
    lt.swap_modules(silu)
    with pytest.warns(UserWarning, match="SiLU runs torch's own forward: inplace=True"):
        silu(x.clone())


def test_swap_modules_filter_and_errors():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(4, 4))
    assert lt.swap_modules(model, lambda name, m: type(m) is nn.ReLU) == {"1": "ReLU"}
    assert type(model[0]) is nn.Conv2d

    class MyConv(nn.Conv2d):  # a user's subclass may change forward: left alone
        pass

    assert lt.swap_modules(nn.Sequential(MyConv(1, 1, 1))) == {"": "Sequential"}
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        lt.swap_modules([nn.ReLU()])


def test_uncovered_configurations_run_torch_after_one_warning():
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    relu = nn.ReLU(inplace=True)
    lt.swap_modules(conv), lt.swap_modules(relu)
    x = torch.randn(1, 2, 5, 5)
    with pytest.warns(UserWarning, match="Conv2d runs torch's own forward: padding_mode='reflect'"):
        y = conv(x)
    torch.testing.assert_close(y, nn.Conv2d.forward(conv, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x)  # once per module and reason
    with pytest.warns(UserWarning, match="inplace=True"):
        relu(x.clone())
    r = nn.ReLU()
    lt.swap_modules(r)
    with pytest.warns(UserWarning, match="dtype torch.int32"):
        r(torch.ones(3, dtype=torch.int32))


def test_torch_compile_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    lt.swap_modules(model)
    compiled = torch.compile(model, fullgraph=True)  # inductor: the custom ops stay opaque calls
    x = torch.randn(2, 1, 28, 28)
    out = compiled(x)
    out.sum().backward()
    tout = twin(x)
    tout.sum().backward()
    torch.testing.assert_close(out, tout, rtol=1e-5, atol=1e-6)
    for p, tp in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, tp.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- optimizers
def _params(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=dtype)) for s in ((6, 3, 5, 5), (6,), (10, 7))]


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, maximize=True, decoupled_weight_decay=True, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, amsgrad=True, weight_decay=0.05)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_optimizers_match_torch_and_share_its_state_dict(name, kwargs, dtype):
    ours, theirs = _params(1, dtype), _params(1, dtype)
    opt = getattr(lt.optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    assert isinstance(opt, getattr(torch.optim, name))
    g = torch.Generator().manual_seed(2)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in ours]
        for p, tp, grad in zip(ours, theirs, grads):
            p.grad, tp.grad = grad.clone(), grad.clone()
        if step == 2:  # a parameter without a gradient is left alone, as by torch
            ours[1].grad = theirs[1].grad = None
        opt.step()
        topt.step()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for p, tp in zip(ours, theirs):
        torch.testing.assert_close(p, tp, **tol)
    state, tstate = opt.state_dict(), topt.state_dict()
    assert state["param_groups"] == tstate["param_groups"]
    for i in tstate["state"]:
        assert state["state"][i].keys() == tstate["state"][i].keys()
        for key, value in tstate["state"][i].items():
            torch.testing.assert_close(state["state"][i][key], value, **tol)
    fresh = getattr(lt.optim, name)(_params(3, dtype), **kwargs)
    fresh.load_state_dict(tstate)  # torch's checkpoint loads into ours, and steps on
    for i, entries in tstate["state"].items():
        for key, value in entries.items():
            torch.testing.assert_close(fresh.state_dict()["state"][i][key], value)


def test_optimizer_falls_back_to_torch_with_one_warning():
    ours, theirs = _params(4, torch.float16), _params(4, torch.float16)
    opt = lt.optim.SGD(ours, lr=1e-2, momentum=0.9)
    topt = torch.optim.SGD(theirs, lr=1e-2, momentum=0.9)
    for p, tp in zip(ours, theirs):
        p.grad, tp.grad = torch.ones_like(p), torch.ones_like(tp)
    with pytest.warns(UserWarning, match="SGD steps with torch's own implementation: a torch.float16 parameter"):
        opt.step()
    topt.step()
    for p, tp in zip(ours, theirs):
        torch.testing.assert_close(p, tp)


# ---------------------------------------------------------------- DistributedDataParallel
def test_ddp_gloo_two_processes_match_one(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("torch_ddp_worker.py")
    procs = [subprocess.Popen([sys.executable, str(worker), str(rank), "2", str(tmp_path / "init"),
                               str(tmp_path / "two.pt")]) for rank in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    subprocess.run([sys.executable, str(worker), "0", "1", str(tmp_path / "init1"), str(tmp_path / "one.pt")],
                   check=True, timeout=120)
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    for key in one:  # DDP's state_dict prefixes the wrapped model's keys with "module."
        torch.testing.assert_close(two[f"module.{key}"], one[key], rtol=1e-4, atol=1e-5)
