"""Benchmark cases for post-training quantization: whole-model inference at batch 256 of the
int8 model from ``quant.quantize_model`` against the same float32 model.

The float32 model runs in the "numpy" baseline slot (it calls lepton_kernels itself, so
"vs numpy" reads "speed-up of int8 over our float32 model"); the "torch" slot is PyTorch
eager float32 with the same weights. Work is the float model's forward flops, compared
with the int8 multiply-add peak.
"""
from __future__ import annotations

import numpy as np

from .registry import BenchCase, register

BATCH = 256
# forward flops per sample (2 per multiply-add): convolutions and dense layers
MODELS = {
    "DigitsCNN": ((1, 8, 8), 2 * (8 * 8 * 16 * 9 + 8 * 8 * 32 * 144 + 512 * 64 + 64 * 10)),
    "LeNet5": ((1, 28, 28), 2 * (28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10)),
}


def _float_model(name):
    from .. import models

    return getattr(models, name)(seed=0).eval()


def _setup(name):
    shape = MODELS[name][0]

    def setup(rng):
        x = rng.random((BATCH, *shape), dtype=np.float32)  # pixel-like values in [0, 1)
        return {"x": x, "calibration": rng.random((4 * BATCH, *shape), dtype=np.float32), "model": name}
    return setup


def _int8(lk, d):
    from ..autograd import Tensor, no_grad
    from ..quant import quantize_model

    model = _float_model(d["model"])
    calibration = np.asarray(d["calibration"].get() if hasattr(d["calibration"], "get") else d["calibration"])
    qmodel = quantize_model(model, [calibration[i:i + BATCH] for i in range(0, len(calibration), BATCH)])
    x = Tensor(d["x"])

    def run():
        with no_grad():
            return qmodel(x).data
    return run


def _fp32(d):
    from ..autograd import Tensor, no_grad

    model = _float_model(d["model"])
    x = Tensor(d["x"])

    def run():
        with no_grad():
            return model(x).data
    return run


def _torch(d):
    import torch

    from .. import nn

    layers = []
    for layer in _float_model(d["model"]):
        if isinstance(layer, nn.Conv2d):
            stride, padding, dilation, groups = layer.args
            c_in, c_out, k = layer.shape_args
            t = torch.nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups)
        elif isinstance(layer, nn.Linear):
            t = torch.nn.Linear(*layer.features)
        elif isinstance(layer, nn.ReLU):
            t = torch.nn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            t = torch.nn.MaxPool2d(*layer.args)
        elif isinstance(layer, nn.Flatten):
            t = torch.nn.Flatten(*layer.dims)
        else:
            t = torch.nn.Identity()  # dropout at inference
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            t.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
        layers.append(t)
    net = torch.nn.Sequential(*layers).eval()
    x = d["x"]

    def run():
        with torch.inference_mode():
            return net(x)
    return run


def _register_all():
    for name, (shape, flops) in MODELS.items():
        register(BenchCase(
            name=f"ptq_inference/{name.lower()}-b{BATCH}", family="ptq", op="ptq_inference", setup=_setup(name),
            lepton=_int8, flops=BATCH * flops, bytes_moved=4 * BATCH * int(np.prod(shape)), limit="int8_gops",
            baselines={"numpy": _fp32, "torch": _torch}, devices=("cpu",), compare=False,
            params={"model": name, "batch": BATCH, "lepton": "int8 quantize_model",
                    "numpy": "lepton float32 model", "torch": "PyTorch eager float32"}))


_register_all()
