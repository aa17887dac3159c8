"""Post-training quantization: observers, int8 layers and ``quantize_model``.

``quantize_model(model, calibration_batches)`` turns a trained float ``nn.Sequential``
(every ``lepton_kernels.models`` class) into a :class:`QuantizedModel` whose Conv2d /
Linear (+ReLU) layers run the int8 kernels (``qlinear_conv2d`` / ``qlinear_matmul``) with
int8 weights (symmetric per output channel) and uint8 activations (per-tensor affine) kept
in int8 from one layer to the next; max pooling runs on the uint8 values. The quantized
model is called like the float one, returns float32 outputs, is inference only, and
saves / loads with ``lepton_kernels.save`` / ``lepton_kernels.load``.
"""
from .convert import calibrate, quantize_bias, quantize_model, quantize_weight
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
)
from .observers import (
    EPS,
    OBSERVERS,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    Observer,
    PerChannelMinMaxObserver,
    affine_qparams,
)

__all__ = ["quantize_model", "calibrate", "quantize_weight", "quantize_bias", "QuantizedModel", "QuantStub",
           "DeQuantStub", "QuantizedConv2d", "QuantizedLinear", "QuantizedMaxPool2d", "QuantizedReLU",
           "QuantizedFlatten", "FloatLayer", "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver",
           "HistogramObserver", "PerChannelMinMaxObserver", "OBSERVERS", "EPS", "affine_qparams"]
