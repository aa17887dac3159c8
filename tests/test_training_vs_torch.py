"""A few training steps of every model with SGD and Adam match the same model in PyTorch,
starting from the same weights (dropout off so both runs are deterministic)."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels import models, nn, optim
from lepton_kernels.autograd import Tensor
from lepton_kernels.nn import functional as F

torch = pytest.importorskip("torch")


def torch_twin(model):
    """The same architecture in torch.nn, with the same weights."""
    layers = []
    for layer in model:
        cfg = layer.config()
        kind = cfg["class"]
        if kind == "Conv2d":
            layers.append(torch.nn.Conv2d(cfg["in_channels"], cfg["out_channels"], tuple(cfg["kernel_size"]),
                                          cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"],
                                          bias=cfg["bias"]))
        elif kind == "Linear":
            layers.append(torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg["bias"]))
        elif kind == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"],
                                             ceil_mode=cfg["ceil_mode"]))
        elif kind == "Flatten":
            layers.append(torch.nn.Flatten(cfg["start_dim"], cfg["end_dim"]))
        elif kind == "Dropout":
            layers.append(torch.nn.Dropout(cfg["p"]))
        else:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    net.load_state_dict({k: torch.tensor(v.copy()) for k, v in model.state_dict().items()})
    return net


CASES = [
    ("lenet5", lambda: models.LeNet5(seed=0), (8, 1, 28, 28), "ce"),
    ("cifar", lambda: models.CifarCNN(seed=0), (4, 3, 32, 32), "ce"),
    ("digits", lambda: models.DigitsCNN(seed=0), (8, 1, 8, 8), "ce"),
    ("linear", lambda: models.LinearRegression(10, seed=0), (16, 10), "mse"),
    ("logistic-binary", lambda: models.LogisticRegression(30, 1, seed=0), (16, 30), "bce"),
    ("logistic-multi", lambda: models.LogisticRegression(30, 4, seed=0), (16, 30), "ce"),
]


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("name,make,shape,loss", CASES, ids=[c[0] for c in CASES])
def test_training_steps_match_torch(name, make, shape, loss, opt_name):
    rng = np.random.default_rng(1)
    model = make().eval()  # eval: dropout off in both frameworks
    net = torch_twin(model).eval()
    if opt_name == "sgd":
        ours, theirs = optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.optim.SGD(
            net.parameters(), lr=0.05, momentum=0.9)
    else:
        ours, theirs = optim.Adam(model.parameters(), lr=1e-3), torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32)
        out_dim = 1 if loss in ("mse", "bce") else (4 if name == "logistic-multi" else 10)
        if loss == "ce":
            y = rng.integers(0, out_dim, shape[0])
            our_loss = F.cross_entropy(model(Tensor(x)), y)
            their_loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        elif loss == "mse":
            y = rng.standard_normal((shape[0], 1)).astype(np.float32)
            our_loss = F.mse_loss(model(Tensor(x)), y)
            their_loss = torch.nn.functional.mse_loss(net(torch.tensor(x)), torch.tensor(y))
        else:
            y = (rng.random((shape[0], 1)) > 0.5).astype(np.float32)
            our_loss = F.binary_cross_entropy_with_logits(model(Tensor(x)), y)
            their_loss = torch.nn.functional.binary_cross_entropy_with_logits(net(torch.tensor(x)), torch.tensor(y))
        np.testing.assert_allclose(our_loss.data, their_loss.detach().numpy(), rtol=2e-4, atol=1e-5)
        ours.zero_grad()
        theirs.zero_grad()
        our_loss.backward()
        their_loss.backward()
        ours.step()
        theirs.step()
    # Adam divides by sqrt(v): where a gradient is ~0 its float32 rounding moves the step by up to
    # lr, so the parameters are compared to a fraction of lr after three steps.
    atol = 1e-4 if opt_name == "adam" else 2e-5
    for (key, ours_p), theirs_p in zip(model.state_dict().items(), net.state_dict().values()):
        np.testing.assert_allclose(ours_p, theirs_p.numpy(), rtol=2e-4, atol=atol, err_msg=key)


def test_module_to_device_rejects_unknown():
    with pytest.raises(ValueError, match="device"):
        nn.Linear(2, 2).to("tpu")
