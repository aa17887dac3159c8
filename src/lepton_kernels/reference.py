"""float64 NumPy reference of every lepton_kernels op: the executable spec.

Each function has the same signature as the public op in ``lepton_kernels``
and returns float64 NumPy arrays (indices as int64). The code favours being
obviously right over being fast: loops over kernel taps, explicit window
bounds. Every backend is tested against these functions.

Layouts are NCHW for pooling; bias_relu broadcasts its bias over axis 1.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "relu",
    "relu_backward",
    "bias_relu",
    "bias_relu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pool_output_size",
    "conv_padding",
    "conv2d",
    "conv2d_backward",
    "linear",
    "linear_backward",
    "matmul",
    "sgd_step",
    "adam_step",
    "cross_entropy",
    "cross_entropy_backward",
    "batch_norm",
    "batch_norm_backward",
    "relu6",
    "relu6_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "silu",
    "silu_backward",
    "gelu",
    "gelu_backward",
    "hardswish",
    "hardswish_backward",
    "quantize",
    "dequantize",
    "dynamic_quantize",
    "matmul_integer",
    "conv2d_integer",
]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------- element-wise
def relu(x, *, out=None):
    """max(x, 0); NaN stays NaN."""
    x = _f64(x)
    return np.where(x <= 0, 0.0, x)  # NaN <= 0 is False, so NaN passes through


def relu_backward(grad_out, x, *, out=None):
    """grad_out where x is not <= 0, else 0 (a NaN activation passes its gradient, as torch)."""
    x = _f64(x)
    return np.where(x <= 0, 0.0, _f64(grad_out))


def _bias_view(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return bias.reshape((1, -1) + (1,) * (x.ndim - 2))


def bias_relu(x, bias, *, out=None):
    """relu(x + bias[None, :, None, ...])."""
    x = _f64(x)
    return relu(x + _bias_view(x, _f64(bias)))


def bias_relu_backward(grad_out, out, *, needs_bias_grad=True):
    """Gradients of bias_relu from its output: (grad_x, grad_bias)."""
    grad_x = relu_backward(grad_out, out)
    if not needs_bias_grad:
        return grad_x, None
    axes = (0,) + tuple(range(2, grad_x.ndim))
    return grad_x, grad_x.sum(axis=axes)


# --------------------------------------------------------------------------- pooling geometry
def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _pads(padding):
    """-> (top, bottom, left, right) from int, (ph, pw) or ((t, b), (l, r))."""
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in padding):
        (t, b), (l, r) = padding
        return int(t), int(b), int(l), int(r)
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def pool_output_size(size, kernel, stride, pad_before, pad_after, dilation, ceil_mode):
    """Output length along one axis, with PyTorch's rule for ceil mode.

    floor/ceil((size + pads - dilation*(kernel-1) - 1) / stride) + 1, where the
    extra window of ceil mode must start inside the input or the leading padding
    (PyTorch's rule, applied to that window only so ceil never gives less than floor).
    """
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = span // stride + 1
    extra_start = out * stride  # where the window ceil mode would add starts
    if ceil_mode and span % stride and extra_start < size + pad_before:
        out += 1
    return out


def _geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None or stride == () else stride)
    pt, pb, pl, pr = _pads(padding)
    dh, dw = _pair(dilation)
    H, W = x_shape[-2], x_shape[-1]
    oh = pool_output_size(H, kh, sh, pt, pb, dh, ceil_mode)
    ow = pool_output_size(W, kw, sw, pl, pr, dw, ceil_mode)
    return (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw), (oh, ow)


# --------------------------------------------------------------------------- max pooling
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """Max over each window; padding never wins. Ties: first tap in row-major order.

    A window containing NaN gives NaN and its index points at the first NaN.
    A window lying entirely in padding gives -inf and index -1 (int8 / uint8 input:
    the type's minimum; the result keeps the integer dtype).
    """
    if np.ndim(x) == 3:  # (C, H, W): one image
        y, idx = max_pool2d(np.asarray(x)[None], kernel_size, stride, padding, dilation, ceil_mode, True)
        return (y[0], idx[0]) if return_indices else y[0]
    in_dtype = np.asarray(x).dtype
    if in_dtype in _QRANGE:  # int8 / uint8: exact in float64; empty windows give the type's minimum
        y, idx = max_pool2d(np.asarray(x).astype(np.float64), kernel_size, stride, padding, dilation,
                            ceil_mode, return_indices=True)
        y = np.where(idx < 0, _QRANGE[in_dtype][0], y).astype(in_dtype)
        return (y, idx) if return_indices else y
    x = _f64(x)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw), (oh, ow) = _geometry(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    N, C, H, W = x.shape
    y = np.full((N, C, oh, ow), -np.inf)
    idx = np.full((N, C, oh, ow), -1, dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            best = np.full((N, C), -np.inf)
            best_idx = np.full((N, C), -1, dtype=np.int64)
            done = np.zeros((N, C), dtype=bool)  # a NaN was found: stop updating
            for a in range(kh):
                r = i * sh - pt + a * dh
                if not 0 <= r < H:
                    continue
                for b in range(kw):
                    c = j * sw - pl + b * dw
                    if not 0 <= c < W:
                        continue
                    v = x[:, :, r, c]
                    take = ~done & (np.isnan(v) | (v > best) | (best_idx < 0))
                    best = np.where(take, v, best)
                    best_idx = np.where(take, r * W + c, best_idx)
                    done |= np.isnan(v) & take
            y[:, :, i, j] = best
            idx[:, :, i, j] = best_idx
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape, *, out=None):
    """Scatter-add grad_out into the input plane at indices (-1 is skipped)."""
    if len(input_shape) == 3:  # (C, H, W): one image
        return max_pool2d_backward(np.asarray(grad_out)[None], np.asarray(indices)[None], (1, *input_shape))[0]
    g = _f64(grad_out)
    indices = np.asarray(indices, dtype=np.int64)
    N, C, H, W = tuple(input_shape)
    grad_in = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            flat = indices[n, c].ravel()
            keep = flat >= 0
            np.add.at(grad_in[n, c], flat[keep], g[n, c].ravel()[keep])
    return grad_in.reshape(N, C, H, W)


# --------------------------------------------------------------------------- average pooling
def _avg_windows(length, out_len, kernel, stride, pad_before, pad_after):
    """Per output position: (first, last+1) inside the input, and the pool size with padding."""
    spans = []
    for o in range(out_len):
        start = o * stride - pad_before
        end_padded = min(start + kernel, length + pad_after)
        lo, hi = max(start, 0), min(start + kernel, length)
        spans.append((lo, hi, end_padded - start))
    return spans


def _avg_divisor(rows, cols, count_include_pad, divisor_override):
    (r0, r1, rpool), (c0, c1, cpool) = rows, cols
    if divisor_override:
        return float(divisor_override)
    return float(rpool * cpool) if count_include_pad else float((r1 - r0) * (c1 - c0))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """Mean over each window, with PyTorch's divisor rules.

    divisor = divisor_override, else the window size clipped to the padded input
    (count_include_pad) or the number of taps inside the input. A window with
    no tap inside the input gives 0.
    """
    if np.ndim(x) == 3:  # (C, H, W): one image
        return avg_pool2d(np.asarray(x)[None], kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)[0]
    x = _f64(x)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), _, (oh, ow) = _geometry(
        x.shape, kernel_size, stride, padding, 1, ceil_mode)
    N, C, H, W = x.shape
    rows = _avg_windows(H, oh, kh, sh, pt, pb)
    cols = _avg_windows(W, ow, kw, sw, pl, pr)
    y = np.zeros((N, C, oh, ow))
    for i, rw in enumerate(rows):
        for j, cl in enumerate(cols):
            if rw[1] <= rw[0] or cl[1] <= cl[0]:
                continue
            total = x[:, :, rw[0]:rw[1], cl[0]:cl[1]].sum(axis=(2, 3))
            y[:, :, i, j] = total / _avg_divisor(rw, cl, count_include_pad, divisor_override)
    return y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        out=None):
    """Each window spreads grad_out / divisor over its taps inside the input."""
    if len(input_shape) == 3:  # (C, H, W): one image
        return avg_pool2d_backward(np.asarray(grad_out)[None], (1, *input_shape), kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override)[0]
    g = _f64(grad_out)
    N, C, H, W = tuple(input_shape)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), _, (oh, ow) = _geometry(
        (N, C, H, W), kernel_size, stride, padding, 1, ceil_mode)
    rows = _avg_windows(H, oh, kh, sh, pt, pb)
    cols = _avg_windows(W, ow, kw, sw, pl, pr)
    grad_in = np.zeros((N, C, H, W))
    for i, rw in enumerate(rows):
        for j, cl in enumerate(cols):
            if rw[1] <= rw[0] or cl[1] <= cl[0]:
                continue
            share = g[:, :, i, j] / _avg_divisor(rw, cl, count_include_pad, divisor_override)
            grad_in[:, :, rw[0]:rw[1], cl[0]:cl[1]] += share[:, :, None, None]
    return grad_in


# --------------------------------------------------------------------------- convolution
def conv_padding(padding, kernel_hw, dilation_hw):
    """(top, bottom, left, right) from int, pair, ((t, b), (l, r)), "valid" or "same".

    "same" pads dilation*(kernel-1) in total per axis, the odd one at the end (as torch).
    """
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        pads = []
        for k, d in zip(kernel_hw, dilation_hw):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    return _pads(padding)


def _activation(y, activation):
    return relu(y) if activation == "relu" else y


def _conv_taps(x, weight, stride, padding, dilation):
    """Yields (a, b, x_tap) with x_tap[n, c, i, j] = padded x at the tap (a, b) of output (i, j)."""
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    pt, pb, pl, pr = conv_padding(padding, (kh, kw), (dh, dw))
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    oh = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    for a in range(kh):
        for b in range(kw):
            r0, c0 = a * dh, b * dw
            yield a, b, xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw], (pt, pl, oh, ow)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None):
    """y[n,o,i,j] = act(bias[o] + sum_{c,a,b} x_pad[n, g*Cg + c, i*sh + a*dh, j*sw + b*dw] * w[o,c,a,b])."""
    x, weight = _f64(x), _f64(weight)
    O, Cg = weight.shape[0], weight.shape[1]
    Og = O // groups
    y = None
    for a, b, tap, (_, _, oh, ow) in _conv_taps(x, weight, stride, padding, dilation):
        if y is None:
            y = np.zeros((x.shape[0], O, oh, ow))
        for g in range(groups):
            xs = tap[:, g * Cg:(g + 1) * Cg]
            ws = weight[g * Og:(g + 1) * Og, :, a, b]
            y[:, g * Og:(g + 1) * Og] += np.einsum("ncij,oc->noij", xs, ws)
    if bias is not None:
        y += _f64(bias)[None, :, None, None]
    return _activation(y, activation)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
                    output=None, needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True):
    """(grad_x, grad_w, grad_b) of conv2d; with activation="relu", grad_out is masked by output > 0."""
    x, weight, g = _f64(x), _f64(weight), _f64(grad_out)
    if activation == "relu":
        g = relu_backward(g, output)
    O, Cg = weight.shape[0], weight.shape[1]
    Og = O // groups
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    pt, pb, pl, pr = conv_padding(padding, (kh, kw), (dh, dw))
    N, C, H, W = x.shape
    grad_w = np.zeros_like(weight)
    grad_xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    for a, b, tap, (_, _, oh, ow) in _conv_taps(x, weight, stride, padding, dilation):
        for gi in range(groups):
            gs = g[:, gi * Og:(gi + 1) * Og]
            grad_w[gi * Og:(gi + 1) * Og, :, a, b] = np.einsum("noij,ncij->oc", gs, tap[:, gi * Cg:(gi + 1) * Cg])
            contrib = np.einsum("noij,oc->ncij", gs, weight[gi * Og:(gi + 1) * Og, :, a, b])
            grad_xp[:, gi * Cg:(gi + 1) * Cg, a * dh:a * dh + sh * (oh - 1) + 1:sh,
                    b * dw:b * dw + sw * (ow - 1) + 1:sw] += contrib
    grad_x = grad_xp[:, :, pt:pt + H, pl:pl + W]
    return (grad_x if needs_input_grad else None,
            grad_w if needs_weight_grad else None,
            g.sum(axis=(0, 2, 3)) if needs_bias_grad else None)


# --------------------------------------------------------------------------- linear layers
def linear(x, weight, bias=None, *, activation=None, out=None):
    """act(x @ weight.T + bias) over the last axis of x (leading dims are batch)."""
    y = _f64(x) @ _f64(weight).T
    if bias is not None:
        y = y + _f64(bias)
    return _activation(y, activation)


def linear_backward(grad_out, x, weight, *, activation=None, output=None, needs_input_grad=True,
                    needs_weight_grad=True, needs_bias_grad=True):
    """(grad_x, grad_w, grad_b) of linear; with activation="relu", grad_out is masked by output > 0."""
    x, weight, g = _f64(x), _f64(weight), _f64(grad_out)
    if activation == "relu":
        g = relu_backward(g, output)
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return (g @ weight if needs_input_grad else None,
            g2.T @ x2 if needs_weight_grad else None,
            g2.sum(axis=0) if needs_bias_grad else None)


def matmul(a, b, *, out=None):
    """a @ b for 2-D arrays."""
    return _f64(a) @ _f64(b)


# --------------------------------------------------------------------------- optimizer updates
def sgd_step(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False, first_step=False):
    """One torch.optim.SGD update; returns (new_param, new_momentum_buffer or None).

    d = (-grad if maximize else grad) + weight_decay * param; with momentum the
    buffer becomes d on the first step, else momentum*buf + (1-dampening)*d, and
    the step uses d + momentum*buf (nesterov) or buf. param -= lr * step.
    """
    p, d = _f64(param), _f64(grad)
    d = -d if maximize else d
    if weight_decay:
        d = d + weight_decay * p
    buf = None
    if momentum:
        buf = d.copy() if first_step else momentum * _f64(momentum_buffer) + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, max_exp_avg_sq=None,
              maximize=False):
    """One torch.optim.Adam (AdamW when decoupled) update.

    Returns (param, exp_avg, exp_avg_sq, max_exp_avg_sq or None), float64.
    """
    p, g = _f64(param), _f64(grad)
    g = -g if maximize else g
    if weight_decay:
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = _f64(exp_avg) + (1 - beta1) * (g - _f64(exp_avg))
    v = beta2 * _f64(exp_avg_sq) + (1 - beta2) * g * g
    vmax = np.maximum(_f64(max_exp_avg_sq), v) if amsgrad else None
    bias1 = 1 - beta1 ** step
    bias2_sqrt = math.sqrt(1 - beta2 ** step)
    denom = np.sqrt(vmax if amsgrad else v) / bias2_sqrt + eps
    return p - (lr / bias1) * m / denom, m, v, vmax


# --------------------------------------------------------------------------- losses
def _cross_entropy_parts(logits, target, weight, ignore_index, label_smoothing):
    """Per-sample losses, d loss_i / d logits_i, and per-sample target weights (float64)."""
    z = _f64(logits)
    target = np.asarray(target, dtype=np.int64)
    n, c = z.shape
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    class_w = np.ones(c) if weight is None else _f64(weight)
    w_target = class_w[safe] * valid
    dist = np.zeros((n, c))
    dist[np.arange(n), safe] = (1 - label_smoothing) * w_target
    dist += label_smoothing * valid[:, None] * class_w[None, :] / c
    losses = -(dist * log_probs).sum(axis=1)
    dlogits = np.exp(log_probs) * dist.sum(axis=1, keepdims=True) - dist
    return losses, dlogits, w_target


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy of logits (N, C) and class indices (N,).

    loss_i = -sum_j q_ij log softmax(z_i)_j with q_i = (1-eps) w[t_i] onehot(t_i) + eps w / C
    (0 where t_i == ignore_index); "mean" divides the sum by sum_i w[t_i] over kept samples.
    """
    losses, _, w_target = _cross_entropy_parts(input, target, weight, ignore_index, label_smoothing)
    if reduction == "none":
        return losses
    return losses.sum() / (w_target.sum() if reduction == "mean" else 1.0)


def cross_entropy_backward(grad, input, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    """d(cross_entropy)/d(input) times grad (a scalar, or (N,) for reduction="none")."""
    _, dlogits, w_target = _cross_entropy_parts(input, target, weight, ignore_index, label_smoothing)
    g = _f64(grad)
    if reduction == "none":
        return dlogits * g[:, None]
    scale = g / (w_target.sum() if reduction == "mean" else 1.0)
    return dlogits * scale


# --------------------------------------------------------------------------- int8 (ONNX numerics)
_QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


# --------------------------------------------------------------------------- activations
# torch.nn.functional's definitions, in float64. Backward ops take the forward's input x,
# except sigmoid_backward and tanh_backward, which take its output (as torch's).
def relu6(x, *, out=None):
    x = _f64(x)
    return np.where(np.isnan(x), x, np.clip(x, 0.0, 6.0))


def relu6_backward(grad_out, x, *, out=None):
    x = _f64(x)
    return np.where((x <= 0) | (x >= 6), 0.0, _f64(grad_out))


def leaky_relu(x, negative_slope=0.01, *, out=None):
    x = _f64(x)
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope=0.01, *, out=None):
    g = _f64(grad_out)
    return np.where(_f64(x) > 0, g, g * negative_slope)


def sigmoid(x, *, out=None):
    return 1.0 / (1.0 + np.exp(-_f64(x)))


def sigmoid_backward(grad_out, output, *, out=None):
    y = _f64(output)
    return _f64(grad_out) * y * (1.0 - y)


def tanh(x, *, out=None):
    return np.tanh(_f64(x))


def tanh_backward(grad_out, output, *, out=None):
    y = _f64(output)
    return _f64(grad_out) * (1.0 - y * y)


def silu(x, *, out=None):
    x = _f64(x)
    return x * sigmoid(x)


def silu_backward(grad_out, x, *, out=None):
    x = _f64(x)
    s = sigmoid(x)
    return _f64(grad_out) * s * (1.0 + x * (1.0 - s))


_erf = np.frompyfunc(math.erf, 1, 1)


def _phi(x):
    """The standard normal CDF."""
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _gelu_tanh_inner(x):
    return math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)


def gelu(x, approximate="none", *, out=None):
    x = _f64(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(_gelu_tanh_inner(x)))
    return x * _phi(x)


def gelu_backward(grad_out, x, approximate="none", *, out=None):
    x, g = _f64(x), _f64(grad_out)
    if approximate == "tanh":
        t = np.tanh(_gelu_tanh_inner(x))
        d_inner = math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * x * x)
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner)
    return g * (_phi(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))


def hardswish(x, *, out=None):
    """x * relu6(x + 3) / 6, piecewise (so hardswish(-inf) is its limit 0); NaN propagates."""
    x = _f64(x)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(x), x, np.where(x <= -3, 0.0, np.where(x >= 3, x, x * (x + 3.0) / 6.0)))


def hardswish_backward(grad_out, x, *, out=None):
    x, g = _f64(x), _f64(grad_out)
    return np.where(x <= -3, 0.0, np.where(x < 3, g * (x / 3.0 + 0.5), g))


# --------------------------------------------------------------------------- batch normalization
def _channel_view(v, ndim):
    return _f64(v).reshape((1, -1) + (1,) * (ndim - 2))


def _batch_stats(x):
    """Per-channel mean and biased variance of x (N, C, ...), over every axis but 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    return x.mean(axis=axes), x.var(axis=axes)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               activation=None):
    """torch.nn.functional.batch_norm. In training the batch's mean and biased variance
    normalize, and the running statistics (when given) move in place by ``momentum``
    towards the mean and the unbiased variance; otherwise the running statistics normalize."""
    x = _f64(x)
    if training:
        mean, var = _batch_stats(x)
        count = x.size // x.shape[1]
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * _f64(running_var) + momentum * var * count / (count - 1)
    else:
        mean, var = _f64(running_mean), _f64(running_var)
    y = (x - _channel_view(mean, x.ndim)) / np.sqrt(_channel_view(var, x.ndim) + eps)
    if weight is not None:
        y = y * _channel_view(weight, x.ndim)
    if bias is not None:
        y = y + _channel_view(bias, x.ndim)
    return _activation(y, activation)


def batch_norm_backward(grad_out, x, weight, running_mean, running_var, training=False, eps=1e-5, *,
                        activation=None, output=None):
    """(grad_x, grad_weight, grad_bias) of :func:`batch_norm` (grad_out masked where
    ``output <= 0`` for a fused ReLU). In training the batch statistics depend on x."""
    x, g = _f64(x), _f64(grad_out)
    if activation == "relu":
        g = np.where(_f64(output) <= 0, 0.0, g)
    mean, var = _batch_stats(x) if training else (_f64(running_mean), _f64(running_var))
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - _channel_view(mean, x.ndim)) * _channel_view(invstd, x.ndim)
    axes = (0,) + tuple(range(2, x.ndim))
    grad_bias = g.sum(axis=axes)
    grad_weight = (g * xhat).sum(axis=axes)
    w = np.ones_like(mean) if weight is None else _f64(weight)
    scale = _channel_view(w * invstd, x.ndim)
    if training:
        count = x.size // x.shape[1]
        grad_x = scale / count * (count * g - _channel_view(grad_bias, x.ndim) - xhat * _channel_view(grad_weight, x.ndim))
    else:
        grad_x = g * scale
    return grad_x, grad_weight, grad_bias


def _per_axis(value, ndim, axis):
    """A scale/zero point shaped to broadcast along ``axis`` (scalar when axis is None)."""
    v = np.asarray(value)
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def quantize(x, scale, zero_point, *, dtype=np.int8, axis=None, out=None):
    """ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point).

    The division is float32 / float32 (as ONNX computes it), so integer results
    are exact and every backend must divide, not multiply by a reciprocal.
    NaN maps to the zero point; +inf / -inf saturate to the type's max / min.
    """
    lo, hi = _QRANGE[np.dtype(dtype)]
    x = np.asarray(x, dtype=np.float32)
    s = _per_axis(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    zp = _per_axis(np.asarray(zero_point, dtype=np.float64), x.ndim, axis)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        q = np.rint(x / s).astype(np.float64) + zp
    q = np.where(np.isnan(x), zp, q)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q, scale, zero_point, *, axis=None, out=None):
    """ONNX DequantizeLinear: (q - zero_point) * scale, computed exactly in float64 from the
    float32 scale (scales are float32 in ONNX), so a float32 result is one correct rounding."""
    q = np.asarray(q).astype(np.float64)
    s = _per_axis(np.asarray(scale, dtype=np.float32).astype(np.float64), q.ndim, axis)
    zp = _per_axis(np.asarray(zero_point, dtype=np.float64), q.ndim, axis)
    return (q - zp) * s


def dynamic_quantize(x):
    """ONNX DynamicQuantizeLinear -> (uint8 q, float32 scale, uint8 zero_point).

    The range [min(x), max(x)] is widened to include 0; scale = (max - min) / 255
    (computed in float32, as ONNX); zero_point = saturate(round(0 - min / scale)).
    """
    x32 = np.asarray(x, dtype=np.float32)
    lo = np.float32(min(0.0, float(x32.min()) if x32.size else 0.0))
    hi = np.float32(max(0.0, float(x32.max()) if x32.size else 0.0))
    scale = np.float32((hi - lo) / np.float32(255.0))
    if scale == 0:
        return np.zeros(x32.shape, np.uint8), np.float32(0.0), np.uint8(0)
    zero_point = np.uint8(np.clip(np.rint(np.float32(0.0) - lo / scale), 0, 255))
    return quantize(x32, scale, zero_point, dtype=np.uint8), scale, zero_point


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    """ONNX MatMulInteger: (a - a_zp) @ (b - b_zp) in int64 (returned as int32); b_zp may be per column."""
    a64 = np.asarray(a).astype(np.int64) - (0 if a_zero_point is None else np.int64(np.asarray(a_zero_point)))
    bzp = 0 if b_zero_point is None else np.asarray(b_zero_point).astype(np.int64)
    b64 = np.asarray(b).astype(np.int64) - bzp
    return (a64 @ b64).astype(np.int32)


def conv2d_integer(x, w, x_zero_point=None, w_zero_point=None, stride=1, padding=0, dilation=1, groups=1):
    """ONNX ConvInteger: convolution of (x - x_zp) and (w - w_zp) in int64 (returned as int32).

    Padding takes the value x_zero_point (it contributes zero after the shift);
    w_zero_point may be per output channel.
    """
    xs = np.asarray(x).astype(np.int64) - (0 if x_zero_point is None else np.int64(np.asarray(x_zero_point)))
    wzp = 0 if w_zero_point is None else np.asarray(w_zero_point).astype(np.int64)
    ws = np.asarray(w).astype(np.int64) - (_per_axis(wzp, 4, 0) if np.ndim(wzp) else wzp)
    y = conv2d(xs.astype(np.float64), ws.astype(np.float64), None, stride, padding, dilation, groups)
    return np.rint(y).astype(np.int64).astype(np.int32)


def requantize_multiplier(in_scale, w_scale, y_scale):
    """float32 ``in_scale * w_scale / y_scale`` (one per output channel) from the float32 scales.

    Computed in float64 (the product of two float32 values is exact there) and rounded
    once to float32, so every backend starts from the same multiplier bit for bit.
    """
    s_in = np.float64(np.float32(in_scale))
    s_w = np.asarray(w_scale, dtype=np.float32).astype(np.float64)
    return (s_in * s_w / np.float64(np.float32(y_scale))).astype(np.float32)


def quantize_bias(bias, in_scale, w_scale):
    """int32 bias for a requantizing layer: an int32 bias is taken as is (ONNX QLinearConv:
    scale ``in_scale * w_scale``, zero point 0); a float bias is rounded half to even to
    that scale (float64) and saturated to int32."""
    b = np.asarray(bias)
    if b.dtype == np.int32:
        return b
    step = np.float64(np.float32(in_scale)) * np.asarray(w_scale, dtype=np.float32).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(b.astype(np.float64) / step)
    return np.clip(np.nan_to_num(q, nan=0.0), -2**31, 2**31 - 1).astype(np.int32)


def requantize(acc, bias_q, multiplier, y_zero_point, dtype, relu, axis):
    """int32 accumulators -> int8/uint8: ``clip(rint(float32(acc + bias) * m) + y_zp)``.

    As ONNX Runtime requantizes: ``acc + bias`` wraps in int32 (as the kernels' int32
    accumulators), is converted to float32 (rounded to nearest even), multiplied by the
    float32 multiplier in float32 (one rounding, no fused multiply-add), rounded half to
    even to an integer, then the zero point is added and the result saturated; ``relu``
    raises the lower bound to y_zp (ReLU in the real domain). ``multiplier`` and
    ``bias_q`` vary along ``axis``.
    """
    lo, hi = _QRANGE[np.dtype(dtype)]
    acc64 = np.asarray(acc).astype(np.int64)
    if bias_q is not None:
        acc64 = acc64 + _per_axis(np.asarray(bias_q, np.int64), acc64.ndim, axis)
    acc32 = acc64.astype(np.int32)  # wraps modulo 2**32
    m = _per_axis(np.asarray(multiplier, np.float32), acc64.ndim, axis)
    v = np.rint(acc32.astype(np.float32) * m).astype(np.float64) + np.float64(y_zero_point)
    lower = max(lo, int(y_zero_point)) if relu else lo
    return np.clip(v, lower, hi).astype(dtype)


def _qlinear_dtype(y_zero_point, like, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    zp_dtype = getattr(y_zero_point, "dtype", None)
    if zp_dtype is not None and np.dtype(zp_dtype) in _QRANGE:
        return np.dtype(zp_dtype)
    return np.dtype(np.asarray(like).dtype)


def _requantize_channels(acc, in_scale, w_scale, y_scale, y_zp, bias, dtype, activation):
    """requantize the int32 ``acc`` whose axis 1 is the output channel (column or feature map)."""
    channels = acc.shape[1]
    w_scale = np.broadcast_to(np.asarray(w_scale, np.float32), (channels,))
    m = requantize_multiplier(in_scale, w_scale, y_scale)
    bq = None if bias is None else np.broadcast_to(quantize_bias(bias, in_scale, w_scale), (channels,))
    return requantize(acc, bq, m, y_zp, dtype, activation == "relu", 1)


def qlinear_matmul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, *, bias=None, activation=None,
                   dtype=None, out=None):
    """ONNX QLinearMatMul (+ bias and ReLU): requantize(matmul_integer(a, b), bias, a_scale * b_scale / y_scale).

    b_scale / b_zp may be per output column; a float bias is quantized with scale a_scale * b_scale.
    """
    return _requantize_channels(matmul_integer(a, b, a_zp, b_zp), a_scale, b_scale, y_scale, y_zp, bias,
                                _qlinear_dtype(y_zp, a, dtype), activation)


def qlinear_conv2d(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None, stride=1, padding=0,
                   dilation=1, groups=1, *, activation=None, dtype=None, out=None):
    """ONNX QLinearConv (+ ReLU): requantize(conv2d_integer(x, w), bias, x_scale * w_scale / y_scale)
    per output channel; padding takes x_zp."""
    return _requantize_channels(conv2d_integer(x, w, x_zp, w_zp, stride, padding, dilation, groups), x_scale,
                                w_scale, y_scale, y_zp, bias, _qlinear_dtype(y_zp, x, dtype), activation)
