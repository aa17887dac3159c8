"""Post-training quantization: calibrate a float ``nn.Sequential`` model on a few batches,
then convert it to a :class:`~lepton_kernels.quant.modules.QuantizedModel`.

Calibration runs the float model (eval mode, no gradient) step by step -- a step is a
Conv2d/Linear with the ReLU that follows it (fused, as ``Sequential`` runs them) or any
other single layer -- and an observer records the model input and every step's output.
Conversion then walks the steps:

* Conv2d / Linear (+ReLU): int8 weights, per output channel symmetric; int32 bias with
  scale ``input_scale * weight_scale[o]``; output scale / zero point from the observer of
  the step's output (after the ReLU). A QuantStub goes in front when the value is float.
* MaxPool2d, Flatten, a lone ReLU: run on the quantized values with unchanged parameters.
* Dropout: dropped (identity at inference).
* anything else (AvgPool2d, ...): DeQuantStub, the float layer, and a QuantStub again in
  front of the next Conv2d/Linear.
* a DeQuantStub ends the model, so it returns float32 outputs.
"""
from __future__ import annotations

import numpy as np

from .. import models, nn, ops
from ..autograd import Tensor, no_grad
from .modules import (
    DeQuantStub,
    FloatLayer,
    QuantizedConv2d,
    QuantizedFlatten,
    QuantizedLinear,
    QuantizedMaxPool2d,
    QuantizedModel,
    QuantizedReLU,
    QuantStub,
    _float_layer_from_config,
    _QParams,
)
from .observers import PerChannelMinMaxObserver, make_observer

__all__ = ["quantize_model", "quantize_weight", "quantize_bias", "calibrate"]

# A bias is quantized to int32 with step input_scale * weight_scale[o]; a channel's weight
# scale is raised where its bias would need more than this many steps (int32 headroom).
_BIAS_LIMIT = 2.0 ** 30


def _host(a):
    a = a.data if isinstance(a, Tensor) else a
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def quantize_weight(weight, axis: int = 0, *, min_scale=None):
    """Symmetric per-channel int8: ``scale[c] = max|w[c]| / 127`` (float32, all-zero channels get
    ``observers.EPS``; never below ``min_scale`` where given), ``q = quantize(w, scale, 0, axis)``.

    Returns
    -------
    (q int8 same shape as weight, scale float32 (C,))
    """
    w = np.ascontiguousarray(_host(weight), dtype=np.float32)
    observer = PerChannelMinMaxObserver(axis)
    observer(w)
    scale, _ = observer.calculate_qparams()
    if min_scale is not None:
        scale = np.maximum(scale, np.asarray(min_scale, np.float32)).astype(np.float32)
    return ops.quantize(w, scale, 0, dtype=np.int8, axis=axis), scale


def quantize_bias(bias, input_scale, weight_scale):
    """int32 bias for a requantizing layer (ONNX QLinearConv): ``rint(b / (input_scale * weight_scale[o]))``
    in float64 from the float32 scales, rounded half to even, saturated to int32."""
    step = np.float64(np.float32(input_scale)) * np.asarray(weight_scale, np.float32).astype(np.float64)
    q = np.rint(np.asarray(_host(bias), np.float64) / step)
    return np.clip(q, -2**31, 2**31 - 1).astype(np.int32)


def _steps(model):
    """[(layer, activation)] in the order Sequential runs them (Conv2d/Linear + ReLU fused)."""
    layers = [model[i] for i in range(len(model))]
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        fuse = isinstance(layer, (nn.Conv2d, nn.Linear)) and i + 1 < len(layers) and isinstance(layers[i + 1],
                                                                                                  nn.ReLU)
        steps.append((layer, "relu" if fuse else None))
        i += 2 if fuse else 1
    return steps


def _run_step(layer, activation, x):
    out = layer(Tensor(x), activation=activation) if activation else layer(Tensor(x))
    return out.data


def _batch_input(batch, index):
    if isinstance(batch, (tuple, list)):  # (x, y) from a DataLoader
        if not batch:
            raise ValueError(f"quantize_model: calibration batch {index} is empty")
        batch = batch[0]
    data = batch.data if isinstance(batch, Tensor) else batch
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise TypeError(f"quantize_model: calibration batch {index} must be an array or Tensor (or an (x, y) "
                        f"pair), got {type(batch).__name__}")
    return data


def _all_modules(module):
    yield module
    for child in module.children():
        yield from _all_modules(child)


def calibrate(model, calibration_batches, observer="minmax", *, flatten_input=False):
    """Run the float model over the batches; one observer for the input and one per step output.

    Returns (steps, observers) with ``observers[0]`` the model input and ``observers[k + 1]``
    the output of step ``k``. The model's train/eval flags are restored afterwards.
    """
    factory = make_observer(observer)
    steps = _steps(model)
    observers = [factory() for _ in range(len(steps) + 1)]
    params = model.parameters()
    on_cuda = bool(params) and not isinstance(params[0].data, np.ndarray)
    modes = [(m, m.training) for m in _all_modules(model)]
    model.eval()
    count = 0
    try:
        with no_grad():
            for index, batch in enumerate(calibration_batches):
                x = _batch_input(batch, index)
                if flatten_input and x.ndim > 2:
                    x = x.reshape(x.shape[0], -1)
                if on_cuda and isinstance(x, np.ndarray):
                    x = nn.modules.to_device(x, "cuda")
                observers[0](x)
                for (layer, activation), obs in zip(steps, observers[1:]):
                    x = _run_step(layer, activation, x)
                    obs(x)
                count += 1
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
    if count == 0:
        raise ValueError("quantize_model: calibration_batches is empty (need at least one batch)")
    return steps, observers


def _requantizing(layer, activation, in_q, out_q):
    bias = None if layer.bias is None else _host(layer.bias).astype(np.float64)
    min_scale = None
    if bias is not None:  # keep the int32 bias far from saturation (tiny weights, large bias)
        min_scale = (np.abs(bias) / (np.float64(in_q.scale) * _BIAS_LIMIT)).astype(np.float32)
    q, scale = quantize_weight(layer.weight, 0, min_scale=min_scale)
    bias_q = None if bias is None else quantize_bias(bias, in_q.scale, scale)
    if isinstance(layer, nn.Conv2d):
        stride, padding, dilation, groups = layer.args
        return QuantizedConv2d(q, scale, bias_q, in_q, out_q, stride, padding, dilation, groups, activation)
    return QuantizedLinear(np.ascontiguousarray(q.T), scale, bias_q, in_q, out_q, activation)


def _float_copy(layer, index):
    """A host copy of a plain nn layer, rebuilt from its config (so the model file can rebuild it too)."""
    try:
        copy = _float_layer_from_config(layer.config())
    except ValueError:
        raise ValueError(f"quantize_model: layer {index} ({type(layer).__name__}) has no quantized version and "
                         f"is not a plain nn layer that can run in float between int8 layers") from None
    copy.load_state_dict({k: _host(v) for k, v in layer.state_dict().items()})
    return copy


def _convert(steps, observers):
    layers, current = [], None  # current: qparams of the quantized value flowing, None while float
    for k, (layer, activation) in enumerate(steps):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if current is None:
                current = _QParams(*observers[k].calculate_qparams())
                layers.append(QuantStub(current.scale, current.zero_point))
            out_q = _QParams(*observers[k + 1].calculate_qparams())
            layers.append(_requantizing(layer, activation, current, out_q))
            current = out_q
        elif isinstance(layer, nn.Dropout):
            continue
        elif current is not None and isinstance(layer, nn.MaxPool2d):
            layers.append(QuantizedMaxPool2d(*layer.args))
        elif current is not None and isinstance(layer, nn.Flatten):
            layers.append(QuantizedFlatten(*layer.dims))
        elif current is not None and isinstance(layer, nn.ReLU):
            layers.append(QuantizedReLU(current.zero_point))
        else:
            if current is not None:
                layers.append(DeQuantStub(current.scale, current.zero_point))
                current = None
            layers.append(FloatLayer(_float_copy(layer, k), activation))
    if current is not None:
        layers.append(DeQuantStub(current.scale, current.zero_point))
    return layers


def quantize_model(model, calibration_batches, *, observer="minmax") -> QuantizedModel:
    """Post-training static quantization of an ``nn.Sequential`` model (every ``models`` class).

    Parameters
    ----------
    model : nn.Sequential
        The trained float model; it is not modified (its train/eval flags are restored).
    calibration_batches : iterable
        Input batches (arrays or Tensors, or ``(x, y)`` pairs such as a DataLoader yields),
        representative of the data the model will see; a few hundred samples usually do.
    observer : str, Observer class or factory
        Activation range estimator: ``"minmax"`` (default), ``"moving_average"``,
        ``"histogram"`` (percentile clipping) or a callable returning an observer.

    Returns
    -------
    QuantizedModel
        int8 weights (symmetric per output channel), uint8 activations (per-tensor affine)
        kept in int8 between consecutive quantized layers; float32 outputs. Inference only.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"quantize_model: model must be an nn.Sequential (any lepton_kernels.models class), "
                        f"got {type(model).__name__}")
    if isinstance(calibration_batches, np.ndarray) or isinstance(calibration_batches, Tensor):
        calibration_batches = [calibration_batches]
    flatten = isinstance(model, (models.LinearRegression, models.LogisticRegression))
    steps, observers = calibrate(model, calibration_batches, observer, flatten_input=flatten)
    return QuantizedModel(_convert(steps, observers), source=model.config(), flatten_input=flatten)
