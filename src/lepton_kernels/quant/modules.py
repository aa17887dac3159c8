"""Quantized layers and the quantized model that chains them (inference only).

Activations between quantized layers are uint8 NCHW (or (N, features)) arrays with
per-tensor affine parameters; each layer knows the scale / zero point of its input and
output, so two int8 layers meet without a dequantize/quantize round trip:

    QuantStub (float -> uint8) -> QuantizedConv2d (int8 weights, relu fused) -> QuantizedMaxPool2d
    -> QuantizedFlatten -> QuantizedLinear -> ... -> DeQuantStub (uint8 -> float32 logits)

Weights are int8, symmetric per output channel (zero point 0); conv weights are OIHW,
linear weights are stored pre-transposed (in_features, out_features) C-contiguous as
``qlinear_matmul`` takes them; biases are int32 with scale ``input_scale * weight_scale[o]``.
A layer with no int8 kernel runs in float between a DeQuantStub and a QuantStub
(:class:`FloatLayer`).

Every layer describes itself with ``config()`` (JSON, no arrays) and ``tensors()`` (arrays
for the state dict), and is rebuilt by ``from_state(config, tensors)``: a model file names
only classes from this module and the plain ``nn`` layers, and loading never runs code.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import nn, ops
from ..autograd import Tensor
from ..ops import _arrays as arr

__all__ = ["QuantizedModel", "QuantStub", "DeQuantStub", "QuantizedConv2d", "QuantizedLinear",
           "QuantizedMaxPool2d", "QuantizedReLU", "QuantizedFlatten", "FloatLayer", "LAYERS"]

_QTYPES = {"uint8": np.dtype(np.uint8), "int8": np.dtype(np.int8)}
_INFERENCE_ONLY = ("quantized models are inference-only: train the float model (or use "
                   "nn.functional.fake_quantize for quantization-aware training) and quantize it again")


class _InferenceTensor(Tensor):
    """A quantized model's output: a plain Tensor whose backward() says why there is no gradient."""

    def backward(self, grad=None):
        raise RuntimeError(f"backward: {_INFERENCE_ONLY}")


def _tuples(v):
    """JSON lists back to the tuples the ops take (padding ((t, b), (l, r)) included)."""
    return tuple(_tuples(e) for e in v) if isinstance(v, list) else v


def _array(name, tensors, key, dtype, shape=None):
    if key not in tensors:
        raise ValueError(f"{name}: missing tensor {key!r}")
    a = tensors[key]
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: tensor {key!r} must be {np.dtype(dtype)}, got "
                         f"{getattr(a, 'dtype', type(a).__name__)}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: tensor {key!r} must have shape {tuple(shape)}, got {a.shape}")
    return a


def _scale(name, tensors, key):
    s = _array(name, tensors, key, np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name}: {key} must be finite and > 0")
    return s


class _QParams:
    """Per-tensor (scale, zero point) of an activation, stored as 0-d float32 / uint8-or-int8 arrays."""

    def __init__(self, scale, zero_point):
        self.scale = np.asarray(scale, np.float32).reshape(())
        zp = np.asarray(zero_point)
        if zp.dtype not in _QTYPES.values():
            raise TypeError(f"zero point must be a uint8 or int8 value, got {zp.dtype}")
        self.zero_point = zp.reshape(()).copy()
        self.py_scale = float(self.scale)  # what the ops take, converted once
        self.np_zero_point = self.zero_point[()]  # NumPy scalar: its dtype picks the output type

    @property
    def dtype(self):
        return self.zero_point.dtype

    def tensors(self, prefix):
        return {f"{prefix}scale": self.scale, f"{prefix}zero_point": self.zero_point}

    @classmethod
    def load(cls, name, tensors, prefix):
        s = _scale(name, tensors, f"{prefix}scale")
        if s.shape != ():
            raise ValueError(f"{name}: {prefix}scale must be a scalar, got shape {s.shape}")
        zp = tensors.get(f"{prefix}zero_point")
        if not isinstance(zp, np.ndarray) or zp.shape != () or zp.dtype not in _QTYPES.values():
            raise ValueError(f"{name}: {prefix}zero_point must be a uint8 or int8 scalar")
        return cls(s, zp)

    def __repr__(self):
        return f"scale={self.py_scale:.6g}, zero_point={int(self.zero_point)} ({self.dtype})"


class QuantizedLayer:
    """Base of the layers in a :class:`QuantizedModel`."""

    produces_float = False  # output is float32 (DeQuantStub, FloatLayer)

    def config(self) -> dict:
        return {"class": type(self).__name__}

    def tensors(self) -> dict:
        return {}

    def to(self, device):
        return self

    def __repr__(self):
        extra = self.extra_repr()
        return f"{type(self).__name__}({extra})"

    def extra_repr(self):
        return ""


class QuantStub(QuantizedLayer):
    """float -> quantized: ``q = saturate(round_half_even(x / scale) + zero_point)`` (ONNX QuantizeLinear)."""

    def __init__(self, scale, zero_point):
        self.qparams = _QParams(scale, zero_point)

    def __call__(self, x):
        q = self.qparams
        return ops.quantize(x, q.py_scale, q.np_zero_point, dtype=q.dtype)

    def tensors(self):
        return self.qparams.tensors("")

    @classmethod
    def from_state(cls, config, tensors):
        q = _QParams.load(cls.__name__, tensors, "")
        return cls(q.scale, q.zero_point)

    def extra_repr(self):
        return repr(self.qparams)


class DeQuantStub(QuantStub):
    """quantized -> float32: ``(q - zero_point) * scale`` (ONNX DequantizeLinear)."""

    produces_float = True

    def __call__(self, q):
        p = self.qparams
        return ops.dequantize(q, p.py_scale, p.np_zero_point)


class _Requantizing(QuantizedLayer):
    """Shared state of QuantizedConv2d / QuantizedLinear."""

    def __init__(self, weight, weight_scale, bias, input_qparams, output_qparams, activation, channel_axis):
        weight = np.ascontiguousarray(weight)
        if weight.dtype != np.int8:
            raise TypeError(f"{type(self).__name__}: weight must be int8, got {weight.dtype}")
        channels = weight.shape[channel_axis]
        self.weight = weight
        self.weight_scale = np.ascontiguousarray(weight_scale, dtype=np.float32).reshape(-1)
        if self.weight_scale.shape != (channels,):
            raise ValueError(f"{type(self).__name__}: weight_scale must have {channels} entries, "
                             f"got {self.weight_scale.shape}")
        if bias is not None:
            bias = np.ascontiguousarray(bias)
            if bias.dtype != np.int32 or bias.shape != (channels,):
                raise ValueError(f"{type(self).__name__}: bias must be int32 of shape ({channels},), "
                                 f"got {bias.dtype} {bias.shape}")
        self.bias = bias
        self.input_qparams, self.output_qparams = input_qparams, output_qparams
        if activation not in (None, "relu"):
            raise ValueError(f"{type(self).__name__}: activation must be None or 'relu', got {activation!r}")
        self.activation = activation
        self._prepared = None  # the op with weights and parameters validated once (host weights only)

    def __call__(self, x):
        if self._prepared is None:
            self._prepared = self._prepare() if isinstance(self.weight, np.ndarray) else self._call_op
        return self._prepared(x)

    def tensors(self):
        t = {"weight": self.weight, "weight_scale": self.weight_scale}
        if self.bias is not None:
            t["bias"] = self.bias
        t.update(self.input_qparams.tensors("input_"))
        t.update(self.output_qparams.tensors("output_"))
        return t

    @classmethod
    def _load_common(cls, config, tensors, weight_ndim, channel_axis):
        name = cls.__name__
        w = _array(name, tensors, "weight", np.int8)
        if w.ndim != weight_ndim:
            raise ValueError(f"{name}: weight must be {weight_ndim}-D, got shape {w.shape}")
        channels = w.shape[channel_axis]
        ws = _scale(name, tensors, "weight_scale")
        if ws.shape != (channels,):
            raise ValueError(f"{name}: weight_scale must have shape ({channels},), got {ws.shape}")
        bias = _array(name, tensors, "bias", np.int32, (channels,)) if config.get("bias") else None
        return (w, ws, bias, _QParams.load(name, tensors, "input_"), _QParams.load(name, tensors, "output_"),
                config.get("activation"))

    def to(self, device):
        self.weight = nn.modules.to_device(self.weight, device)
        self._prepared = None
        return self

    def extra_repr(self):
        act = ", relu" if self.activation else ""
        return f"weight {self.weight.shape} int8{act}, in ({self.input_qparams}), out ({self.output_qparams})"


class QuantizedConv2d(_Requantizing):
    """int8 convolution with requantized output (``lk.qlinear_conv2d``), ReLU fused when ``activation="relu"``.

    weight (C_out, C_in/groups, KH, KW) int8, weight_scale (C_out,) float32, bias (C_out,) int32 or None.
    """

    def __init__(self, weight, weight_scale, bias, input_qparams, output_qparams, stride=1, padding=0,
                 dilation=1, groups=1, activation=None):
        super().__init__(weight, weight_scale, bias, input_qparams, output_qparams, activation, 0)
        self.geometry = (stride, padding, dilation, groups)

    def _prepare(self):
        i, o = self.input_qparams, self.output_qparams
        return ops.prepare_qlinear_conv2d(i.py_scale, i.np_zero_point, self.weight, self.weight_scale, 0, o.py_scale,
                                          o.np_zero_point, self.bias, *self.geometry, activation=self.activation,
                                          x_dtype=i.dtype)

    def _call_op(self, x):
        i, o = self.input_qparams, self.output_qparams
        return ops.qlinear_conv2d(x, i.py_scale, i.np_zero_point, self.weight, self.weight_scale, 0, o.py_scale,
                                  o.np_zero_point, self.bias, *self.geometry, activation=self.activation)

    def config(self):
        stride, padding, dilation, groups = self.geometry
        return {"class": "QuantizedConv2d", "stride": stride, "padding": padding, "dilation": dilation,
                "groups": groups, "activation": self.activation, "bias": self.bias is not None}

    @classmethod
    def from_state(cls, config, tensors):
        w, ws, bias, iq, oq, act = cls._load_common(config, tensors, 4, 0)
        return cls(w, ws, bias, iq, oq, _tuples(config.get("stride", 1)), _tuples(config.get("padding", 0)),
                   _tuples(config.get("dilation", 1)), int(config.get("groups", 1)), act)


class QuantizedLinear(_Requantizing):
    """int8 fully connected layer with requantized output (``lk.qlinear_matmul``).

    weight (in_features, out_features) int8 -- the float weight transposed --, weight_scale
    (out_features,) float32, bias (out_features,) int32 or None.
    """

    def __init__(self, weight, weight_scale, bias, input_qparams, output_qparams, activation=None):
        super().__init__(weight, weight_scale, bias, input_qparams, output_qparams, activation, 1)

    def _prepare(self):
        i, o = self.input_qparams, self.output_qparams
        return ops.prepare_qlinear_matmul(i.py_scale, i.np_zero_point, self.weight, self.weight_scale, 0, o.py_scale,
                                          o.np_zero_point, bias=self.bias, activation=self.activation,
                                          a_dtype=i.dtype)

    def _call_op(self, x):
        i, o = self.input_qparams, self.output_qparams
        return ops.qlinear_matmul(x, i.py_scale, i.np_zero_point, self.weight, self.weight_scale, 0, o.py_scale,
                                  o.np_zero_point, bias=self.bias, activation=self.activation)

    def config(self):
        return {"class": "QuantizedLinear", "activation": self.activation, "bias": self.bias is not None}

    @classmethod
    def from_state(cls, config, tensors):
        return cls(*cls._load_common(config, tensors, 2, 1))


class QuantizedMaxPool2d(QuantizedLayer):
    """Max pooling directly on the quantized values (it commutes with a monotone affine map)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.args = (kernel_size, stride, padding, dilation, ceil_mode)

    def __call__(self, q):
        return ops.max_pool2d(q, *self.args)

    def config(self):
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        return {"class": "QuantizedMaxPool2d", **dict(zip(names, self.args))}

    @classmethod
    def from_state(cls, config, tensors):
        return cls(_tuples(config.get("kernel_size")), _tuples(config.get("stride")),
                   _tuples(config.get("padding", 0)), _tuples(config.get("dilation", 1)),
                   bool(config.get("ceil_mode", False)))

    def extra_repr(self):
        return f"kernel_size={self.args[0]}, stride={self.args[1]}"


class QuantizedReLU(QuantizedLayer):
    """ReLU on quantized values: ``max(q, zero_point)`` (the zero point encodes 0.0)."""

    def __init__(self, zero_point):
        self.zero_point = np.asarray(zero_point).reshape(()).copy()

    def __call__(self, q):
        return arr.xp_of(q).maximum(q, self.zero_point[()])

    def tensors(self):
        return {"zero_point": self.zero_point}

    @classmethod
    def from_state(cls, config, tensors):
        zp = tensors.get("zero_point")
        if not isinstance(zp, np.ndarray) or zp.shape != () or zp.dtype not in _QTYPES.values():
            raise ValueError("QuantizedReLU: zero_point must be a uint8 or int8 scalar")
        return cls(zp)


class QuantizedFlatten(QuantizedLayer):
    """``flatten(start_dim, end_dim)`` as a reshape of the quantized array (no copy)."""

    def __init__(self, start_dim=1, end_dim=-1):
        self.dims = (int(start_dim), int(end_dim))

    def __call__(self, q):
        nd = q.ndim
        start, end = self.dims[0] % nd, self.dims[1] % nd
        return q.reshape(q.shape[:start] + (-1,) + q.shape[end + 1:])

    def config(self):
        return {"class": "QuantizedFlatten", "start_dim": self.dims[0], "end_dim": self.dims[1]}

    @classmethod
    def from_state(cls, config, tensors):
        return cls(config.get("start_dim", 1), config.get("end_dim", -1))


# Plain nn layers a FloatLayer may hold (rebuilt from their config; nothing else is ever constructed).
_FLOAT_LAYERS = {cls.__name__: cls for cls in (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
                                                 nn.Flatten, nn.Dropout)}


def _float_layer_from_config(config):
    config = dict(config)
    name = config.pop("class", None)
    if name not in _FLOAT_LAYERS:
        raise ValueError(f"FloatLayer: unknown layer class {name!r}; known: {', '.join(_FLOAT_LAYERS)}")
    cls = _FLOAT_LAYERS[name]
    for key in ("stride", "padding", "dilation", "kernel_size"):
        if key in config:
            config[key] = _tuples(config[key])
    try:
        return cls(**config)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"FloatLayer: bad arguments for {name}: {exc}") from None


class FloatLayer(QuantizedLayer):
    """A layer without an int8 kernel (average pooling, ...) run in float32 on dequantized input."""

    produces_float = True

    def __init__(self, layer, activation=None):
        self.layer = layer.eval()
        self.activation = activation

    def __call__(self, x):
        out = self.layer(Tensor(x), activation=self.activation) if self.activation else self.layer(Tensor(x))
        return out.data

    def config(self):
        return {"class": "FloatLayer", "layer": self.layer.config(), "activation": self.activation}

    def tensors(self):
        return {f"layer.{k}": v for k, v in self.layer.state_dict().items()}

    @classmethod
    def from_state(cls, config, tensors):
        layer = _float_layer_from_config(config.get("layer") or {})
        state = {k[len("layer."):]: v for k, v in tensors.items() if k.startswith("layer.")}
        layer.load_state_dict(state)
        return cls(layer, config.get("activation"))

    def to(self, device):
        self.layer.to(device)
        return self

    def extra_repr(self):
        return type(self.layer).__name__


LAYERS = {cls.__name__: cls for cls in (QuantStub, DeQuantStub, QuantizedConv2d, QuantizedLinear,
                                         QuantizedMaxPool2d, QuantizedReLU, QuantizedFlatten, FloatLayer)}


class QuantizedModel:
    """A model converted by :func:`lepton_kernels.quant.quantize_model`: called like the float
    model (a Tensor or float array of inputs in, a Tensor of float32 outputs back), inference only.

    Parameters
    ----------
    layers : list of quantized layers, run in order
    source : dict, optional
        ``config()`` of the float model it was converted from (kept for reference).
    flatten_input : bool
        Reshape inputs to (N, features) first (linear / logistic regression models).
    """

    training = False

    def __init__(self, layers, *, source=None, flatten_input=False):
        self.layers = list(layers)
        self.source = source
        self.flatten_input = bool(flatten_input)

    # ------------------------------------------------------------------ inference
    def forward(self, x, *, trace=None):
        """Run the layers; ``trace``, a list, receives ``(layer name, output array)`` per layer."""
        data = x.data if isinstance(x, Tensor) else x
        if self.flatten_input and data.ndim > 2:
            data = data.reshape(data.shape[0], -1)
        for i, layer in enumerate(self.layers):
            data = layer(data)
            if trace is not None:
                trace.append((f"{i}.{type(layer).__name__}", data))
        return _InferenceTensor(data)

    __call__ = forward

    def eval(self) -> "QuantizedModel":
        return self

    def train(self, mode: bool = True) -> "QuantizedModel":
        if mode:
            raise RuntimeError(f"train: {_INFERENCE_ONLY}")
        return self

    def parameters(self):
        """No trainable parameters (an optimizer over a quantized model has nothing to update)."""
        return []

    def named_parameters(self, prefix: str = ""):
        return iter(())

    def zero_grad(self) -> None:
        pass

    def to(self, device: str) -> "QuantizedModel":
        """Move the int8 weights to "cpu" or "cuda" in place (scales and zero points stay on the host)."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"QuantizedModel.to: device must be 'cpu' or 'cuda', got {device!r}")
        for layer in self.layers:
            layer.to(device)
        return self

    # ------------------------------------------------------------------ files
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every array by ``<layer index>.<name>``: int8 weights, float32 scales, int32 biases, zero points."""
        state = OrderedDict()
        for i, layer in enumerate(self.layers):
            for name, value in layer.tensors().items():
                state[f"{i}.{name}"] = value
        return state

    def config(self) -> dict:
        """Architecture description saved with the model file (no arrays)."""
        return {"class": "QuantizedModel", "format": 1, "flatten_input": self.flatten_input,
                "source": self.source, "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_state(cls, config, state) -> "QuantizedModel":
        """Rebuild from ``config()`` and ``state_dict()`` (as read from a model file); ValueError if they do not fit."""
        if not isinstance(config, dict) or config.get("class") != "QuantizedModel":
            raise ValueError("QuantizedModel: not a quantized model architecture")
        if config.get("format") != 1:
            raise ValueError(f"QuantizedModel: unsupported format {config.get('format')!r}")
        layer_configs = config.get("layers")
        if not isinstance(layer_configs, list):
            raise ValueError("QuantizedModel: 'layers' must be a list")
        grouped = [{} for _ in layer_configs]
        for key, value in state.items():
            index, _, name = key.partition(".")
            if not index.isdigit() or int(index) >= len(grouped) or not name:
                raise ValueError(f"QuantizedModel: unexpected tensor {key!r}")
            grouped[int(index)][name] = value
        layers = []
        for i, (layer_config, tensors) in enumerate(zip(layer_configs, grouped)):
            name = layer_config.get("class") if isinstance(layer_config, dict) else None
            if name not in LAYERS:
                raise ValueError(f"QuantizedModel: layer {i} has unknown class {name!r}")
            layer = LAYERS[name].from_state(layer_config, tensors)
            unexpected = set(tensors) - set(layer.tensors())
            if unexpected:
                raise ValueError(f"QuantizedModel: layer {i} ({name}): unexpected tensors {sorted(unexpected)}")
            layers.append(layer)
        return cls(layers, source=config.get("source"), flatten_input=bool(config.get("flatten_input", False)))

    def __repr__(self):
        body = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"QuantizedModel(\n{body}\n)"
