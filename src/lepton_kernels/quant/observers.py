"""Observers: record the range of float tensors during calibration and turn it into
quantization parameters (scale, zero point).

Activations use per-tensor affine uint8 (ONNX DynamicQuantizeLinear style): the
observed range ``[lo, hi]`` is widened to include 0, ``scale = (hi - lo) / 255``
(float32, never below ``EPS``) and ``zero_point = clip(round_half_even(-lo / scale), 0, 255)``,
so 0.0 is exactly representable (zero padding, ReLU). Weights use per-output-channel
symmetric int8: ``scale[o] = max|w[o]| / 127``, zero point 0.
"""
from __future__ import annotations

import numpy as np

__all__ = ["EPS", "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "HistogramObserver",
           "PerChannelMinMaxObserver", "OBSERVERS", "affine_qparams", "make_observer"]

#: Smallest scale handed out (float32 machine epsilon): a constant or all-zero tensor still gets scale > 0.
EPS = float(np.finfo(np.float32).eps)
_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _host_float(name, x):
    """A float64 NumPy view of an array, Tensor or CuPy array; NaN/inf refused."""
    from ..autograd import Tensor

    data = x.data if isinstance(x, Tensor) else x
    if hasattr(data, "get") and not isinstance(data, np.ndarray):  # CuPy -> host
        data = data.get()
    a = np.asarray(data)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name}: calibration data must be finite (found NaN or inf)")
    return a


def affine_qparams(lo, hi, dtype=np.uint8):
    """(scale float32, zero point of ``dtype``) for the float range ``[lo, hi]`` widened to include 0.

    ``scale = max(float32((hi - lo) / (qmax - qmin)), EPS)`` and
    ``zero_point = clip(qmin - round_half_even(lo / scale), qmin, qmax)``.
    """
    qtype = np.dtype(dtype)
    if qtype not in _QRANGE:
        raise TypeError(f"affine_qparams: dtype must be uint8 or int8, got {qtype}")
    qmin, qmax = _QRANGE[qtype]
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = np.float32(max(float(np.float32((hi - lo) / (qmax - qmin))), EPS))
    zero_point = np.clip(qmin - np.rint(lo / np.float64(scale)), qmin, qmax)
    return scale, qtype.type(zero_point)


class Observer:
    """Base observer: ``observe(x)`` (or ``observer(x)``, which returns ``x``) records a batch;
    :meth:`calculate_qparams` gives the per-tensor (scale, zero_point).

    Parameters
    ----------
    dtype : numpy.uint8 (default) or numpy.int8
        Quantized type the parameters are for (affine, range widened to include 0).
    """

    name = "observer"

    def __init__(self, dtype=np.uint8):
        if np.dtype(dtype) not in _QRANGE:
            raise TypeError(f"{type(self).__name__}: dtype must be uint8 or int8, got {np.dtype(dtype)}")
        self.dtype = np.dtype(dtype)
        self.min_val = None
        self.max_val = None
        self.batches = 0

    def __call__(self, x):
        self.observe(x)
        return x

    def observe(self, x) -> None:
        a = _host_float(type(self).__name__, x)
        if a.size:
            self._update(a)
            self.batches += 1

    def _update(self, a):  # pragma: no cover - abstract
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        """The float range the parameters cover (before widening to include 0)."""
        if self.min_val is None:
            raise ValueError(f"{type(self).__name__}: no data observed; run calibration batches first")
        return float(self.min_val), float(self.max_val)

    def calculate_qparams(self):
        """(scale as numpy.float32 > 0, zero_point as a numpy scalar of ``dtype``)."""
        return affine_qparams(*self.range(), self.dtype)

    def __repr__(self):
        seen = f"[{self.min_val:.6g}, {self.max_val:.6g}]" if self.min_val is not None else "nothing"
        return f"{type(self).__name__}({seen} over {self.batches} batches)"


class MinMaxObserver(Observer):
    """Running minimum and maximum over every observed batch."""

    name = "minmax"

    def _update(self, a):
        lo, hi = float(a.min()), float(a.max())
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min and max:
    ``min <- min + c * (batch_min - min)`` (the first batch sets them), ``c = averaging_constant``."""

    name = "moving_average"

    def __init__(self, averaging_constant: float = 0.01, dtype=np.uint8):
        super().__init__(dtype)
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"MovingAverageMinMaxObserver: averaging_constant must be in (0, 1], "
                             f"got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)

    def _update(self, a):
        lo, hi = float(a.min()), float(a.max())
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
            return
        c = self.averaging_constant
        self.min_val += c * (lo - self.min_val)
        self.max_val += c * (hi - self.max_val)


class HistogramObserver(Observer):
    """Histogram of every observed value; the range is clipped at percentiles.

    ``calculate_qparams`` uses ``[q((100 - percentile) / 100), q(percentile / 100)]`` where
    ``q`` is the quantile read from the histogram (linear within a bin), which drops the
    rare outliers a min/max observer would spend the 256 levels on. The histogram has
    ``bins`` equal bins over the observed range; when a batch widens the range, the old
    counts move to the new bins by their bin centres.
    """

    name = "histogram"

    def __init__(self, bins: int = 2048, percentile: float = 99.99, dtype=np.uint8):
        super().__init__(dtype)
        if int(bins) < 2:
            raise ValueError(f"HistogramObserver: bins must be >= 2, got {bins}")
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"HistogramObserver: percentile must be in (50, 100], got {percentile}")
        self.bins, self.percentile = int(bins), float(percentile)
        self.counts = np.zeros(self.bins, np.float64)
        self.edges = None

    def _update(self, a):
        lo, hi = float(a.min()), float(a.max())
        if self.edges is None:
            self.edges = self._edges(lo, hi)
        elif lo < self.edges[0] or hi > self.edges[-1]:
            new = self._edges(min(lo, self.edges[0]), max(hi, self.edges[-1]))
            centres = 0.5 * (self.edges[:-1] + self.edges[1:])
            self.counts, _ = np.histogram(centres, bins=new, weights=self.counts)
            self.edges = new
        counts, _ = np.histogram(a.ravel(), bins=self.edges)
        self.counts += counts
        self.min_val = lo if self.min_val is None else min(self.min_val, lo)
        self.max_val = hi if self.max_val is None else max(self.max_val, hi)

    def _edges(self, lo, hi):
        if hi <= lo:  # a constant batch: a tiny non-empty range around it
            hi = lo + max(abs(lo), 1.0) * 1e-6
        return np.linspace(lo, hi, self.bins + 1)

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the observed values lie (from the histogram)."""
        lo, hi = Observer.range(self)
        total = self.counts.sum()
        cdf = np.cumsum(self.counts)
        target = q * total
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        before = cdf[i - 1] if i else 0.0
        inside = self.counts[i]
        frac = (target - before) / inside if inside > 0 else 0.0
        value = self.edges[i] + frac * (self.edges[i + 1] - self.edges[i])
        return float(min(max(value, lo), hi))

    def range(self):
        Observer.range(self)  # raises when nothing was observed
        tail = (100.0 - self.percentile) / 100.0
        return self.quantile(tail), self.quantile(1.0 - tail)


class PerChannelMinMaxObserver:
    """Per-channel symmetric int8 parameters (weights): ``scale[c] = max|x[c]| / 127``, zero point 0.

    An all-zero channel gets ``scale = EPS`` (any positive scale quantizes it to 0).
    """

    def __init__(self, axis: int = 0):
        self.axis = int(axis)
        self.max_abs = None

    def __call__(self, x):
        self.observe(x)
        return x

    def observe(self, x) -> None:
        a = _host_float(type(self).__name__, x)
        a = np.moveaxis(a, self.axis, 0).reshape(a.shape[self.axis], -1)
        m = np.abs(a).max(axis=1) if a.shape[1] else np.zeros(a.shape[0])
        self.max_abs = m if self.max_abs is None else np.maximum(self.max_abs, m)

    def calculate_qparams(self):
        """(scales float32 (C,), zero points int8 zeros (C,))."""
        if self.max_abs is None:
            raise ValueError("PerChannelMinMaxObserver: no data observed")
        scale = (self.max_abs / 127.0).astype(np.float32)
        scale = np.where(scale > EPS, scale, np.float32(EPS)).astype(np.float32)
        return scale, np.zeros(scale.shape, np.int8)


OBSERVERS = {cls.name: cls for cls in (MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver)}


def make_observer(spec):
    """An observer factory from a name (``"minmax"``, ``"moving_average"``, ``"histogram"``),
    an :class:`Observer` subclass, or any zero-argument callable returning an observer."""
    if isinstance(spec, str):
        if spec not in OBSERVERS:
            raise ValueError(f"unknown observer {spec!r}: use one of {', '.join(OBSERVERS)}")
        return OBSERVERS[spec]
    if callable(spec):
        return spec
    raise TypeError(f"observer must be a name, an Observer class or a factory, got {type(spec).__name__}")
