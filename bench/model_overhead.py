"""Cost of the Python layers above the ops (autograd, nn, optim) against PyTorch eager, in one run.

Cases:
- LeNet-5 inference (``lepton_kernels.models.LeNet5`` in eval mode, and the same
  net in torch with the same weights) at batch 1 and batch 64;
- the LeNet-5 batch-64 Adam training step (forward, cross_entropy, backward, step);
- conv2d+ReLU forward+backward through autograd, ``(relu(conv2d(x)) * g).sum()``
  and ``relu(conv2d(x)).sum()``, against the same work done by hand: the kernels
  called directly through ``lepton_kernels.ops`` (conv2d, relu, relu_backward,
  conv2d_backward) and the forward's product and sum in NumPy (``np.vdot``), on the
  CIFAR first layer (64x3x32x32, 32 filters 3x3) and LeNet's conv2 (64x6x14x14, 16 5x5);
- ``(relu(conv2d(x)) * g).sum().backward()`` through lepton's autograd against torch's on
  the eight shapes of the convolution benchmark (and their geometric mean);
- the Adam and SGD (momentum) step alone over LeNet-5's 10 parameter tensors
  against ``torch.optim`` with ``foreach=True``.

Timings are the median over rounds of the mean of a batch of calls; the two
sides of a comparison alternate round by round so a noisy neighbour hits both.
Both libraries use two threads.

Run: ``python bench/model_overhead.py [--rounds 15] [--scale 1.0] [--only SUBSTRING]``.
Prints microseconds per call and the ratio ``baseline / lepton`` (> 1: lepton faster).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import lepton_kernels as lk
from lepton_kernels import nn, ops, optim
from lepton_kernels.autograd import Tensor, no_grad
from lepton_kernels.models import LeNet5
from lepton_kernels.nn import functional as F


def _torch_lenet(model):
    """The torch twin of ``LeNet5`` holding copies of its weights."""
    net = tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))
    with torch.no_grad():
        for tp, lp in zip(net.parameters(), model.parameters()):
            tp.copy_(torch.from_numpy(lp.data.copy()))
    return net


def _per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _compare(fn_a, fn_b, rounds, calls):
    """Median seconds per call of two thunks, alternating round by round."""
    _per_call(fn_a, max(calls // 4, 1))
    _per_call(fn_b, max(calls // 4, 1))
    a, b = [], []
    for _ in range(rounds):
        a.append(_per_call(fn_a, calls))
        b.append(_per_call(fn_b, calls))
    return statistics.median(a), statistics.median(b)


def _inference_cases(rng):
    model = LeNet5(seed=0).eval()
    tnet = _torch_lenet(model).eval()
    cases = []
    for batch, calls in ((1, 2000), (64, 100)):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        tx = torch.from_numpy(x)
        xt = Tensor(x)
        np.testing.assert_allclose(model(xt).data, tnet(tx).detach().numpy(), rtol=1e-3, atol=1e-4)

        def lk_fn(xt=xt):
            with no_grad():
                return model(xt)

        def torch_fn(tx=tx):
            with torch.no_grad():
                return tnet(tx)

        cases.append((f"LeNet-5 inference batch {batch}", lk_fn, torch_fn, "torch", calls))
    return cases


def _training_case(rng):
    model = LeNet5(seed=0)
    tnet = _torch_lenet(model)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int64)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    xt = Tensor(x)
    opt = optim.Adam(model.parameters(), lr=1e-4)
    topt = torch.optim.Adam(tnet.parameters(), lr=1e-4, foreach=True)

    def lk_fn():
        opt.zero_grad()
        F.cross_entropy(model(xt), y).backward()
        opt.step()

    def torch_fn():
        topt.zero_grad()
        TF.cross_entropy(tnet(tx), ty).backward()
        topt.step()

    return [("LeNet-5 Adam train step batch 64", lk_fn, torch_fn, "torch", 40)]


def _conv_relu_cases(rng):
    """Autograd conv2d+ReLU forward+backward against the same kernels called directly."""
    cases = []
    shapes = (("CIFAR conv1 64x3x32x32 32 3x3", (64, 3, 32, 32), (32, 3, 3, 3), 0, 20),
              ("LeNet conv2 64x6x14x14 16 5x5", (64, 6, 14, 14), (16, 6, 5, 5), 0, 40))
    for name, xs, ws, pad, calls in shapes:
        cases += _conv_relu_pair(rng, name, xs, ws, pad, calls)
    return cases


def _conv_relu_pair(rng, name, xs, ws, pad, calls):
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
    b = (rng.standard_normal(ws[0]) * 0.1).astype(np.float32)
    xt, wt, bt = Tensor(x), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    out_shape = ops.conv2d(x, w, b, padding=pad).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    ones = np.ones(out_shape, np.float32)

    def kernels(grad, times):
        """The work of the expression done by hand: the kernels, and the forward's product and
        sum in NumPy, the cheapest way (autograd must compute them too; the gradient of the
        sum is ``grad``)."""
        def run():
            z = ops.conv2d(x, w, b, padding=pad)
            y = ops.relu(z)
            np.vdot(y, times) if times is not None else y.sum()  # no temporary: the cheapest way
            gz = ops.relu_backward(grad, y)
            return ops.conv2d_backward(gz, x, w, padding=pad, needs_input_grad=False)
        return run

    def autograd_mul():
        wt.grad = bt.grad = None
        (F.relu(F.conv2d(xt, wt, bt, padding=pad)) * g).sum().backward()

    def autograd_sum():
        wt.grad = bt.grad = None
        F.relu(F.conv2d(xt, wt, bt, padding=pad)).sum().backward()

    return [(f"conv+relu (y*g).sum() {name}", autograd_mul, kernels(g, g), "kernels", calls),
            (f"conv+relu y.sum() {name}", autograd_sum, kernels(ones, None), "kernels", calls)]


def _autograd_vs_torch_cases(rng):
    """``(relu(conv2d(x)) * g).sum().backward()`` through lepton's autograd and torch's, on the
    convolution benchmark's eight shapes (``bench.cases_conv.CONV_SHAPES``); x needs a gradient
    except in a network's first layer, as in training."""
    from lepton_kernels.bench.cases_conv import CONV_SHAPES

    cases = []
    for name, xs, c_out, k, stride, pad, first in CONV_SHAPES:
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal((c_out, xs[1], k, k)) * 0.1).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        g = rng.standard_normal(ops.conv2d(x, w, b, stride, pad).shape).astype(np.float32)
        xt, wt, bt = Tensor(x, requires_grad=not first), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
        tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(r) for a, r in ((x, not first), (w, True), (b, True)))
        tg = torch.from_numpy(g)

        def lk_fn(xt=xt, wt=wt, bt=bt, g=g, stride=stride, pad=pad):
            xt.grad = wt.grad = bt.grad = None
            (F.relu(F.conv2d(xt, wt, bt, stride=stride, padding=pad)) * g).sum().backward()

        def torch_fn(tx=tx, tw=tw, tb=tb, tg=tg, stride=stride, pad=pad):
            tx.grad = tw.grad = tb.grad = None
            (TF.relu(TF.conv2d(tx, tw, tb, stride=stride, padding=pad)) * tg).sum().backward()

        flops = 2 * np.prod(g.shape) * xs[1] * k * k
        cases.append((f"autograd conv+relu fwd+bwd {name}", lk_fn, torch_fn, "torch",
                      max(2, int(4e9 / (3 * flops)))))
    return cases


def _optimizer_cases(rng):
    model = LeNet5(seed=0)
    params = model.parameters()
    for p in params:
        p.grad = (rng.standard_normal(p.shape) * 1e-3).astype(np.float32)
    tparams = [torch.from_numpy(p.data.copy()).requires_grad_() for p in params]
    for tp, p in zip(tparams, params):
        tp.grad = torch.from_numpy(p.grad.copy())
    count = sum(p.size for p in params)
    adam, tadam = optim.Adam(params, lr=1e-6), torch.optim.Adam(tparams, lr=1e-6, foreach=True)
    sgd = optim.SGD(params, lr=1e-6, momentum=0.9)
    tsgd = torch.optim.SGD(tparams, lr=1e-6, momentum=0.9, foreach=True)
    label = f"LeNet-5 {len(params)} tensors {count} params"
    return [(f"Adam step {label}", adam.step, tadam.step, "torch", 2000),
            (f"SGD step {label}", sgd.step, tsgd.step, "torch", 2000)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's call count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lk.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cases = (_inference_cases(rng) + _training_case(rng) + _conv_relu_cases(rng) + _autograd_vs_torch_cases(rng)
             + _optimizer_cases(rng))
    print(f"{'case':60s} {'lepton us':>10s} {'base us':>10s} {'base':>8s} {'base/lepton':>12s}")
    autograd_ratios = []
    for name, lk_fn, base_fn, base, calls in cases:
        if args.only not in name:
            continue
        lk_s, base_s = _compare(lk_fn, base_fn, args.rounds, max(int(calls * args.scale), 1))
        print(f"{name:60s} {lk_s * 1e6:10.1f} {base_s * 1e6:10.1f} {base:>8s} {base_s / lk_s:12.2f}", flush=True)
        if name.startswith("autograd conv+relu"):
            autograd_ratios.append(base_s / lk_s)
    if autograd_ratios:
        geomean = float(np.exp(np.mean(np.log(autograd_ratios))))
        print(f"{'geomean torch/lepton, autograd conv+relu fwd+bwd':60s} {'':10s} {'':10s} {'':8s} {geomean:12.2f}")


if __name__ == "__main__":
    main()
