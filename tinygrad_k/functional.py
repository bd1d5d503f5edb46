"""Functional interface (re-exported as ``tinygrad_k.nn.functional``), torch names.

Each function validates its arguments and calls one Function from ``tinygrad_k.ops``.
"""
from __future__ import annotations

from .ops import elementwise as E
from .ops import linalg as L
from .ops import nn as N
from .random import uniform as _uniform
from .tensor import Tensor

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "softmax",
           "log_softmax", "linear", "conv2d", "max_pool2d", "avg_pool2d", "dropout",
           "cross_entropy", "bias_relu", "pad"]


def relu(x):
    return x.relu()


def leaky_relu(x, negative_slope=0.01):
    return x.leaky_relu(negative_slope)


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def gelu(x, approximate="none"):
    return x.gelu(approximate)


def silu(x):
    """x * sigmoid(x) (swish)."""
    return x * x.sigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """ln(1 + e^(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    return E.Softplus.apply(x, float(beta), float(threshold))


def softmax(x, dim=-1):
    return x.softmax(dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(dim)


def pad(x, pad, mode="constant", value=0.0):
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    return x.pad(pad, value)


def linear(x, weight, bias=None):
    """y = x W^T + b; x (..., in), W (out, in), b (out,)."""
    _same_device("linear", x, weight, bias)
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {x.dtype} and weight dtype {weight.dtype} differ")
    return L.Linear.apply(x, weight, bias)


def bias_relu(x, bias):
    """relu(x + b) with b (C,) along axis 1, fused into one kernel on the GPU."""
    if bias.ndim != 1 or x.ndim < 2 or x.shape[1] != bias.shape[0]:
        raise ValueError(f"bias_relu: bias of shape {bias.shape} does not match axis 1 of "
                         f"input {x.shape}")
    return E.BiasReLU.apply(x, bias)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation, NCHW input, OIHW weight (see ``ops.nn.Conv2d`` for the math)."""
    _same_device("conv2d", x, weight, bias)
    return N.Conv2d.apply(x, weight, bias, stride=stride, padding=padding)


def _pool_args(op, kernel_size, stride, padding):
    k = N.pair(kernel_size, "kernel_size", op)
    s = k if stride is None else N.pair(stride, "stride", op)
    p = N.pair(padding, "padding", op)
    if min(k) <= 0 or min(s) <= 0 or min(p) < 0:
        raise ValueError(f"{op}: kernel_size {k} and stride {s} must be positive and padding "
                         f"{p} non-negative")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} should be at most half of kernel_size {k}")
    return k, s, p


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over KHxKW windows (stride defaults to kernel_size, -inf padding)."""
    return N.MaxPool2d.apply(x, *_pool_args("max_pool2d", kernel_size, stride, padding))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over KHxKW windows (zero padding counted, as PyTorch's default)."""
    return N.AvgPool2d.apply(x, *_pool_args("avg_pool2d", kernel_size, stride, padding))


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    u = _uniform(x.shape, x.dtype, x.backend)
    return N.Dropout.apply(x, p, u)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Fused log-softmax + NLL. input (N, C) logits (or (N, C, d1, ...)), target (N,) or
    (N, d1, ...) integer class indices."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    if target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices (int64), got "
                        f"dtype {target.dtype}; for probabilities use a soft-target loss")
    if input.ndim < 2:
        raise ValueError(f"cross_entropy: input must be (N, C) logits, got shape {input.shape}")
    if input.ndim > 2:  # (N, C, d...) -> (N*d..., C)
        c = input.shape[1]
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        flat = input.permute(*perm).reshape(-1, c)
        expected = (input.shape[0],) + input.shape[2:]
        if target.shape != expected:
            raise ValueError(f"cross_entropy: target shape {target.shape}, expected {expected} "
                             f"for input {input.shape}")
        out = cross_entropy(flat, target.reshape(-1), reduction, label_smoothing, ignore_index)
        return out.reshape(expected) if reduction == "none" else out
    if target.shape != (input.shape[0],):
        raise ValueError(f"cross_entropy: input {input.shape} needs target of shape "
                         f"({input.shape[0]},), got {target.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    _same_device("cross_entropy", input, target)
    return N.CrossEntropy.apply(input, target, reduction, float(label_smoothing), ignore_index)


def _same_device(op, *tensors):
    ts = [t for t in tensors if t is not None]
    devices = {t.device for t in ts}
    if len(devices) > 1:
        desc = ", ".join(f"{t.shape} on {t.device}" for t in ts)
        raise RuntimeError(f"{op}: expected all tensors on the same device, got {desc}")


