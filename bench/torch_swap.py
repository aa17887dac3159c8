"""lepton_kernels.torch against PyTorch eager, in the same run: swapped models' training steps
and batch-1 inference, and the per-call cost of ``torch.ops.lepton.relu``.

Each case builds one model, deep-copies it, swaps the copy's modules
(``lepton_kernels.torch.swap_modules``) and times both on the same data with the same
optimizer algorithm (``lepton_kernels.torch.optim.Adam`` on the swapped copy,
``torch.optim.Adam`` on the original); rounds alternate so a noisy neighbour hits both. Both sides use
``--threads`` threads.

Run: ``python bench/torch_swap.py [--threads 2] [--rounds 15]``. Prints
microseconds per call and torch_time / swapped_time (> 1: the swapped model is faster).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import lepton_kernels as lk
import lepton_kernels.torch as lt


def lenet5():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def lepton_cnn():
    """The seed's LeptonCNN: conv 3->32 3x3, max-pool, 1152 -> 128 -> 10 on 3x14x14."""
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1152, 128),
                         nn.ReLU(), nn.Linear(128, 10))


def cifar_cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 64),
                         nn.ReLU(), nn.Linear(64, 10))


class _Block(nn.Module):
    """He et al.'s CIFAR basic block: conv-BN-ReLU-conv-BN plus the (1x1 projected) input, ReLU."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Sequential() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet8():
    """ResNet-8 for 32x32 inputs (6n+2 layers, n = 1: 16/32/64 channels)."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), _Block(16, 16, 1),
                         _Block(16, 32, 2), _Block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _train_step(model, x, y, optimizer=torch.optim.Adam):
    opt = optimizer(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def _cases():
    torch.manual_seed(0)
    cases = []
    for name, build, shape in (("LeNet-5", lenet5, (1, 28, 28)), ("LeptonCNN", lepton_cnn, (3, 14, 14)),
                               ("CIFAR CNN", cifar_cnn, (3, 32, 32)), ("ResNet-8", resnet8, (3, 32, 32))):
        model = build()
        swapped = copy.deepcopy(model)
        lt.swap_modules(swapped)
        x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
        cases.append((f"{name} Adam train step batch 64", _train_step(swapped, x, y, lt.optim.Adam),
                      _train_step(model, x, y), 20))
    model = lenet5().eval()
    swapped = copy.deepcopy(model)
    lt.swap_modules(swapped)
    x1 = torch.randn(1, 1, 28, 28)

    def infer(m):
        def run():
            with torch.no_grad():
                return m(x1)
        return run
    cases.append(("LeNet-5 inference batch 1", infer(swapped), infer(model), 500))
    t = torch.randn(16, 16)
    cases.append(("torch.ops.lepton.relu 16x16 (vs torch.relu)", lambda: torch.ops.lepton.relu(t),
                  lambda: torch.relu(t), 5000))
    return cases


def _per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lk.set_num_threads(args.threads)
    print(f"{'case':50s} {'lepton us':>10s} {'torch us':>10s} {'torch/lepton':>13s}")
    for name, lk_fn, torch_fn, calls in _cases():
        for _ in range(3):
            lk_fn(), torch_fn()
        lk_times, torch_times = [], []
        for _ in range(args.rounds):
            lk_times.append(_per_call(lk_fn, calls))
            torch_times.append(_per_call(torch_fn, calls))
        a, b = statistics.median(lk_times), statistics.median(torch_times)
        print(f"{name:50s} {a * 1e6:10.1f} {b * 1e6:10.1f} {b / a:13.2f}", flush=True)


if __name__ == "__main__":
    main()
