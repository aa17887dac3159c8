"""nn modules: parameters, state dicts, train/eval, fused Conv/Linear + ReLU, agreement with torch."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels import nn
from lepton_kernels.autograd import Tensor

torch = pytest.importorskip("torch")


def _small_cnn(rng):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, rng=rng), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 2 * 2, 8, rng=rng), nn.ReLU(), nn.Dropout(0.5, rng=rng), nn.Linear(8, 3, rng=rng))


def _torch_twin(model):
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(24, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    tm.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return tm


def test_parameters_and_state_dict_names_match_torch():
    model = _small_cnn(np.random.default_rng(0))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias", "9.weight", "9.bias"]
    assert list(model.state_dict()) == list(_torch_twin(model).state_dict())
    assert len(model.parameters()) == 8 and all(p.requires_grad for p in model.parameters())


def test_forward_and_backward_match_torch_in_eval_mode():
    model = _small_cnn(np.random.default_rng(1)).eval()
    tm = _torch_twin(model).eval()
    x = np.random.default_rng(2).standard_normal((5, 1, 8, 8)).astype(np.float32)
    target = np.array([0, 1, 2, 1, 0])
    loss = nn.functional.cross_entropy(model(Tensor(x)), target)
    tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(target))
    np.testing.assert_allclose(loss.data, tloss.detach().numpy(), rtol=1e-5)
    loss.backward()
    tloss.backward()
    for (name, p), tp in zip(model.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_default_init_bounds_follow_torch():
    layer = nn.Linear(400, 120, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(400)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.9 * bound
    conv = nn.Conv2d(6, 16, 5, rng=np.random.default_rng(0))
    assert np.abs(conv.weight.data).max() <= 1 / np.sqrt(150)


def test_load_state_dict_copies_in_place_and_validates():
    a, b = _small_cnn(np.random.default_rng(3)), _small_cnn(np.random.default_rng(4))
    weight = b.state_dict()["0.weight"]
    b.load_state_dict(a.state_dict())
    assert b.state_dict()["0.weight"] is weight
    np.testing.assert_array_equal(weight, a.state_dict()["0.weight"])
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"0.weight": weight})
    bad = dict(a.state_dict())
    bad["0.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(bad)


def test_train_eval_toggles_dropout_and_zero_grad():
    model = _small_cnn(np.random.default_rng(5))
    x = Tensor(np.ones((4, 1, 8, 8), np.float32))
    model.eval()
    np.testing.assert_array_equal(model(x).data, model(x).data)
    model.train()
    assert model[8].training
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_sequential_fuses_relu_into_conv_and_linear(monkeypatch):
    calls = []
    real = nn.functional.conv2d

    def spy(*args, **kwargs):
        calls.append(kwargs.get("activation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(nn.functional, "conv2d", spy)
    relu_calls = []
    monkeypatch.setattr(nn.functional, "relu", lambda x: relu_calls.append(1) or x)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=np.random.default_rng(0)), nn.ReLU())
    model(Tensor(np.ones((1, 1, 5, 5), np.float32)))
    assert calls == ["relu"] and relu_calls == []


def test_config_describes_the_architecture():
    cfg = _small_cnn(np.random.default_rng(6)).config()
    assert cfg["class"] == "Sequential" and cfg["layers"][0]["class"] == "Conv2d"
    assert cfg["layers"][6] == {"class": "Linear", "in_features": 24, "out_features": 8, "bias": True}


def _run_both_paths(model, x):
    """(output under no_grad, output with the graph recorded) for the same input."""
    from lepton_kernels.autograd import no_grad

    with no_grad():
        fast = model(Tensor(x))
    slow = model(Tensor(x, requires_grad=True))
    return fast, slow


def test_inference_without_graph_matches_the_recorded_forward(monkeypatch):
    rng = np.random.default_rng(0)
    model = _small_cnn(rng).eval()
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    fast, slow = _run_both_paths(model, x)
    np.testing.assert_array_equal(fast.data, slow.data)
    assert not fast.requires_grad and fast._node is None and slow._node is not None
    calls = []
    monkeypatch.setattr(nn.functional._Conv2d, "apply", lambda *a, **k: calls.append(1))
    from lepton_kernels.autograd import no_grad

    with no_grad():
        model(Tensor(x))  # no Function nodes are built without a graph
    for p in model.parameters():  # frozen parameters and an input without grad: no graph either
        p.requires_grad = False
    model(Tensor(x))
    assert calls == []


def test_inference_path_follows_replaced_layers_and_overridden_forward():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.ReLU()).eval()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    fast, _ = _run_both_paths(model, x)
    model[0].weight.data[...] = 0  # updated in place: seen at once
    model[0].bias.data[...] = -1
    fast, _ = _run_both_paths(model, x)
    np.testing.assert_array_equal(fast.data, np.zeros((2, 3), np.float32))
    setattr(model, "0", nn.Linear(4, 5, rng=rng))  # a replaced layer
    fast, slow = _run_both_paths(model, x)
    assert fast.shape == (2, 5)
    np.testing.assert_array_equal(fast.data, slow.data)

    class Doubled(nn.ReLU):
        def forward(self, x):
            return nn.functional.relu(x) * 2

    model = nn.Sequential(nn.Flatten(), Doubled())
    fast, slow = _run_both_paths(model, x - 10)
    np.testing.assert_array_equal(fast.data, np.zeros((2, 4), np.float32))
    fast, slow = _run_both_paths(model, np.abs(x))
    np.testing.assert_array_equal(fast.data, 2 * np.abs(x))


def test_dropout_under_no_grad_still_drops_in_training_mode():
    from lepton_kernels.autograd import no_grad

    x = np.ones((4, 8), np.float32)
    ours = nn.Sequential(nn.Dropout(0.5, rng=np.random.default_rng(3)))
    with no_grad():
        y = ours(Tensor(x)).data
    expected = nn.functional.dropout(Tensor(x), 0.5, rng=np.random.default_rng(3)).data
    np.testing.assert_array_equal(y, expected)
    with no_grad():
        np.testing.assert_array_equal(ours.eval()(Tensor(x)).data, x)


def test_parameters_follow_assignments_and_are_a_new_list_each_call():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(3, 2, rng=rng))
    first = model.parameters()
    first.clear()
    assert len(model.parameters()) == 2
    new = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    model[0].weight = new
    assert sum(p is new for p in model.parameters()) == 1 and len(model.parameters()) == 2
    model[0].bias = None
    assert model.parameters() == [new]
