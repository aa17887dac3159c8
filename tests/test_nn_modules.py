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
