"""nn.Module and the layers of small CNN / linear models, with PyTorch's default initialisation.

Parameters are autograd Tensors with ``requires_grad=True``. ``Sequential``
runs a Conv2d or Linear followed by a ReLU as one fused kernel call.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import ops
from ..autograd import Tensor, is_grad_enabled
from ..autograd.tensor import flat_shape
from ..ops import _arrays as arr
from . import functional as F


class Module:
    """Base class: attributes that are Tensors with requires_grad are parameters; Modules are children."""

    # bumped by every attribute assignment and train()/eval() on any Module, so what a
    # module caches about its children (parameter list, Sequential's plans) knows it is stale
    _version = 0

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params, modules = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if params is None:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before assigning attributes")
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Tensor) and value.requires_grad:
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)
        Module._version += 1

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ parameters and state
    def named_parameters(self, prefix: str = ""):
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, child in self._modules.items():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        return list(self._parameter_tuple())

    def _parameter_tuple(self):
        return self._cached("parameters", lambda: tuple(p for _, p in self.named_parameters()))

    def _cached(self, key, build):
        """``build()``, computed again only after some Module attribute changed."""
        cache = self.__dict__.get("_cache")
        if cache is None or cache[0] != Module._version:
            cache = (Module._version, {})
            object.__setattr__(self, "_cache", cache)
        value = cache[1].get(key)
        if value is None:
            value = cache[1][key] = build()
        return value

    def children(self):
        return list(self._modules.values())

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameter arrays by dotted name (the arrays themselves, not copies)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Copy arrays into the parameters in place (shapes and dtypes must match)."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            p = own[name]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, expected {p.shape}")
            p.data[...] = arr.xp_of(p.data).asarray(value, dtype=p.dtype)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        object.__setattr__(self, "training", bool(mode))
        Module._version += 1
        for child in self._modules.values():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter to "cpu" (NumPy) or "cuda" (CuPy), in place; returns self."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"Module.to: device must be 'cpu' or 'cuda', got {device!r}")
        for p in self.parameters():
            p.data = to_device(p.data, device)
            p.grad = None
        return self

    def config(self) -> dict:
        """Architecture description saved with model files."""
        return {"class": type(self).__name__}


def to_device(a, device):
    if device == "cpu":
        return a if isinstance(a, np.ndarray) else a.get()
    import cupy  # noqa: PLC0415 - only needed for CUDA

    return cupy.asarray(a)


def _data(value):
    return value.data if isinstance(value, Tensor) else value


def _uniform(rng, shape, bound):
    return Tensor(rng.uniform(-bound, bound, shape).astype(np.float32), requires_grad=True)


class Conv2d(Module):
    """2-D convolution layer (weight (out, in/groups, kh, kw), bias (out,)), torch's default init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, rng=None):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        rng = rng or np.random.default_rng()
        fan_in = in_channels // groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) reduces to this
        self.weight = _uniform(rng, (out_channels, in_channels // groups, kh, kw), bound)
        self.bias = _uniform(rng, (out_channels,), bound) if bias else None
        self.args = (stride, padding, dilation, groups)
        self.shape_args = (in_channels, out_channels, (kh, kw))

    def forward(self, x, activation=None):
        return F.conv2d(x, self.weight, self.bias, *self.args, activation=activation)

    def _infer(self, a, activation=None):
        return ops.conv2d(a, _data(self.weight), _data(self.bias), *self.args, activation=activation)

    def config(self):
        return {"class": "Conv2d", "in_channels": self.shape_args[0], "out_channels": self.shape_args[1],
                "kernel_size": list(self.shape_args[2]), "stride": self.args[0], "padding": self.args[1],
                "dilation": self.args[2], "groups": self.args[3], "bias": self.bias is not None}


class Linear(Module):
    """Fully connected layer (weight (out, in), bias (out,)), torch's default init."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None):
        super().__init__()
        rng = rng or np.random.default_rng()
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = _uniform(rng, (out_features, in_features), bound)
        self.bias = _uniform(rng, (out_features,), bound) if bias else None
        self.features = (in_features, out_features)

    def forward(self, x, activation=None):
        return F.linear(x, self.weight, self.bias, activation=activation)

    def _infer(self, a, activation=None):
        return ops.linear(a, _data(self.weight), _data(self.bias), activation=activation)

    def config(self):
        return {"class": "Linear", "in_features": self.features[0], "out_features": self.features[1],
                "bias": self.bias is not None}


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def _infer(self, a, activation=None):
        return ops.relu(a)


class _ActivationModule(Module):
    """An element-wise activation layer: ``F.<name>`` with the layer's arguments."""

    _name = ""

    def _extra(self):
        return ()

    def forward(self, x):
        return getattr(F, self._name)(x, *self._extra())

    def _infer(self, a, activation=None):
        return getattr(ops, self._name)(a, *self._extra())


class ReLU6(_ActivationModule):
    _name = "relu6"


class LeakyReLU(_ActivationModule):
    _name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def _extra(self):
        return (self.negative_slope,)

    def config(self):
        return {"class": "LeakyReLU", "negative_slope": self.negative_slope}


class Sigmoid(_ActivationModule):
    _name = "sigmoid"


class Tanh(_ActivationModule):
    _name = "tanh"


class SiLU(_ActivationModule):
    _name = "silu"


class GELU(_ActivationModule):
    _name = "gelu"

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _extra(self):
        return (self.approximate,)

    def config(self):
        return {"class": "GELU", "approximate": self.approximate}


class Hardswish(_ActivationModule):
    _name = "hardswish"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.args = (kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, *self.args)

    def _infer(self, a, activation=None):
        return ops.max_pool2d(a, *self.args)

    def config(self):
        return {"class": "MaxPool2d", "kernel_size": self.args[0], "stride": self.args[1],
                "padding": self.args[2], "dilation": self.args[3], "ceil_mode": self.args[4]}


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def forward(self, x):
        return F.avg_pool2d(x, *self.args)

    def _infer(self, a, activation=None):
        return ops.avg_pool2d(a, *self.args)

    def config(self):
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        return {"class": "AvgPool2d", **dict(zip(names, self.args))}


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.dims = (start_dim, end_dim)

    def forward(self, x):
        return x.flatten(*self.dims)

    def _infer(self, a, activation=None):
        return a.reshape(flat_shape(tuple(a.shape), *self.dims))

    def config(self):
        return {"class": "Flatten", "start_dim": self.dims[0], "end_dim": self.dims[1]}


class Dropout(Module):
    """Dropout with its own generator; inside ``functional.batch_shard`` (data-parallel training) the
    mask is this process's rows of the mask one process would draw for the global batch."""

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng or np.random.default_rng()

    def forward(self, x):
        return F.dropout(x, self.p, self.training, rng=self.rng)

    def _infer(self, a, activation=None):
        y = F.dropout(a, self.p, self.training, rng=self.rng)
        return y.data if isinstance(y, Tensor) else y

    def config(self):
        return {"class": "Dropout", "p": self.p}


class Sequential(Module):
    """Layers applied in order; Conv2d/Linear followed by ReLU run as one fused call."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a Module, got {type(layer).__name__}")
            setattr(self, str(i), layer)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        if type(x) is Tensor and not (is_grad_enabled() and (x.requires_grad or self._any_parameter_grad())):
            plan = self._cached("inference", self._inference_plan)
            if plan:  # no graph to record: run the kernels on the arrays, wrap once
                a = x.data
                for step, activation in plan:
                    a = step(a, activation)
                return Tensor._wrap(a) if type(a) is np.ndarray else Tensor(a)
        for layer, fuse in self._cached("layers", self._fused_layers):
            x = layer(x, activation="relu") if fuse else layer(x)
        return x

    def _any_parameter_grad(self):
        return any(p.requires_grad for p in self._parameter_tuple())

    def _fused_layers(self):
        """(layer, fuse with the next ReLU) pairs; the ReLUs folded into the layer before them are left out."""
        layers, pairs, i = list(self._modules.values()), [], 0
        while i < len(layers):
            fuse = isinstance(layers[i], (Conv2d, Linear)) and i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
            pairs.append((layers[i], fuse))
            i += 2 if fuse else 1
        return tuple(pairs)

    def _inference_plan(self):
        """(array function, activation) per fused layer when every layer has a graph-free path
        equal to its forward (not overridden); else () and forward takes the Tensor path."""
        plan = []
        for layer, fuse in self._fused_layers():
            cls = type(layer)
            base = next((b for b in _INFERABLE if isinstance(layer, b)), None)
            if base is None or cls.forward is not base.forward or cls._infer is not base._infer \
                    or cls.__call__ is not Module.__call__ or "forward" in layer.__dict__:
                return ()
            plan.append((layer._infer, "relu" if fuse else None))
        return tuple(plan)
    def config(self):
        return {"class": "Sequential", "layers": [m.config() for m in self._modules.values()]}


# layers whose ``_infer`` computes ``forward`` on arrays when no graph is recorded
_INFERABLE = (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, _ActivationModule)
