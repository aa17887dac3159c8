"""Benchmark cases for the training stack: a whole LeNet-5 training step (forward, cross-entropy,
backward, Adam) and the fused Adam update, side by side with PyTorch eager on the same model,
weights and optimizer.

The LeNet step's work is counted as 3x the forward flops (forward, grad_x, grad_w); the Adam
update moves 28 bytes per parameter (read p, g, m, v; write p, m, v).
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register

LENET_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
# forward flops of one LeNet-5 sample: conv1 (28x28x6, 5x5x1), conv2 (10x10x16, 5x5x6), three dense layers
LENET_FWD_FLOPS = 2 * (28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10)
BATCH = 64


def _lenet_setup(rng):
    return {"x": rng.standard_normal((BATCH, 1, 28, 28), dtype=np.float32),
            "y": rng.integers(0, 10, BATCH).astype(np.int64), "seed": 0}


def _lenet_lepton(lk, d):
    from .. import models, optim
    from ..autograd import Tensor
    from ..nn import functional as F

    model = models.LeNet5(seed=d["seed"])
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = Tensor(d["x"])

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), d["y"])
        loss.backward()
        opt.step()
        return np.asarray(loss.data)
    return step


def _lenet_torch(d):
    import torch

    from .. import models

    reference = models.LeNet5(seed=d["seed"])
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in reference.state_dict().items()})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(d["x"]), d["y"])
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def _adam_setup(shapes):
    def setup(rng):
        d = {}
        for i, s in enumerate(shapes):
            d[f"p{i}"] = rng.standard_normal(s, dtype=np.float32)
            d[f"g{i}"] = rng.standard_normal(s, dtype=np.float32)
            d[f"m{i}"] = np.zeros(s, np.float32)
            d[f"v{i}"] = np.zeros(s, np.float32)
        d["count"] = len(shapes)
        return d
    return setup


def _adam_lepton(lk, d):
    n = d["count"]
    lists = [[d[f"{k}{i}"] for i in range(n)] for k in "pgmv"]
    state = {"step": 0}

    def step():
        state["step"] += 1
        lk.multi_tensor_adam_step(*lists, step=state["step"], lr=1e-3)
        return lists[0][0]
    return step


def _adam_torch(d):
    import torch

    n = d["count"]
    params = [d[f"p{i}"] for i in range(n)]
    for i, p in enumerate(params):
        p.grad = d[f"g{i}"]
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)

    def step():
        opt.step()
        return params[0]
    return step


def _register_all():
    register(BenchCase(
        name="train_step/lenet5-b64-adam", family="train", op="train_step",
        setup=_lenet_setup, lepton=_lenet_lepton, flops=3 * BATCH * LENET_FWD_FLOPS,
        bytes_moved=4 * BATCH * 28 * 28, limit="fma_gflops", baselines={"torch": _lenet_torch},
        devices=("cpu",), compare=False, params={"model": "LeNet5", "batch": BATCH, "optimizer": "Adam"},
    ))
    big = [(1024, 1024)] * 4  # 4M parameters
    for name, shapes in (("lenet-61706", LENET_SHAPES), ("4M", big)):
        count = int(sum(np.prod(s) for s in shapes))
        register(BenchCase(
            name=f"adam_step/{name}", family="optim", op="adam_step",
            setup=_adam_setup(shapes), lepton=_adam_lepton, bytes_moved=28 * count, limit="copy_gbs",
            baselines={"torch": _adam_torch}, devices=("cpu",), compare=False,
            params={"parameters": count, "tensors": len(shapes)},
        ))


_register_all()
