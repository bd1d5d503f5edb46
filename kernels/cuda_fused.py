"""Fused CuPy kernels: one pass over memory where a training step would make several.

| function | replaces |
|---|---|
| `bias_relu(x, b)` | x + b (broadcast) then relu: 2 passes -> 1 |
| `relu_backward(dy, y)` | (y > 0) mask, multiply: 2 passes -> 1 |
| `softmax_xent_forward(logits, t)` | max, exp, sum, log, gather: 5 passes -> 1 (one thread per row) |
| `softmax_xent_backward(p, t, dloss)` | copy, one-hot subtract, scale: 3 -> 1 |
| `sgd_update_(p, g, buf, ...)` | weight decay, momentum, nesterov, update: up to 5 -> 1 |
| `adam_update_(p, g, m, v, ...)` | decay, two moments, bias corrections, update: ~9 -> 1 |

Importing this module without CuPy works (``AVAILABLE`` is False); calling a function
then raises a clear RuntimeError. Tested on a real GPU only (tests/test_kernels_gpu.py,
``pytest -m gpu``).
"""
from __future__ import annotations

import functools

import numpy as np

try:
    import cupy as cp
    AVAILABLE = True
except ImportError:  # no CuPy: the framework never calls these then
    cp = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "bias_relu", "relu_backward", "softmax_xent_forward",
           "softmax_xent_backward", "sgd_update_", "adam_update_"]


def _need():
    if not AVAILABLE:
        raise RuntimeError("kernels.cuda_fused needs CuPy and a CUDA GPU "
                           "(pip install 'tinygrad_k[cuda]')")


@functools.lru_cache(maxsize=None)
def _k(name):
    _need()
    if name == "bias_relu":
        return cp.ElementwiseKernel(
            "T x, raw T b, int64 C, int64 S", "T y",
            "T v = x + b[(i / S) % C]; y = v > (T)0 ? v : (T)0", "tk_bias_relu")
    if name == "relu_backward":
        return cp.ElementwiseKernel("T dy, T y", "T dx", "dx = y > (T)0 ? dy : (T)0",
                                    "tk_relu_backward")
    if name == "xent_backward":
        return cp.ElementwiseKernel(
            "T p, raw int64 t, raw T dloss, int64 C", "T dz",
            "long long n = i / C; long long c = i % C;"
            "dz = dloss[n] * (p - (c == t[n] ? (T)1 : (T)0))", "tk_xent_backward")
    if name == "sgd":
        return cp.ElementwiseKernel(
            "T g, T lr, T mom, T damp, T wd, bool nesterov, bool first", "T p, T buf",
            "T d = g + wd * p;"
            "if (mom != (T)0) {"
            "  buf = first ? d : mom * buf + ((T)1 - damp) * d;"
            "  d = nesterov ? d + mom * buf : buf;"
            "}"
            "p = p - lr * d;", "tk_sgd_update")
    if name == "adam":
        return cp.ElementwiseKernel(
            "T g, T lr, T b1, T b2, T eps, T wd, T bc1, T bc2, bool decoupled",
            "T p, T m, T v",
            "T gg = g;"
            "if (wd != (T)0) { if (decoupled) p = p * ((T)1 - lr * wd); else gg = g + wd * p; }"
            "m = b1 * m + ((T)1 - b1) * gg;"
            "v = b2 * v + ((T)1 - b2) * gg * gg;"
            "p = p - (lr / bc1) * m / (sqrt(v / bc2) + eps);", "tk_adam_update")
    raise KeyError(name)


_XENT_SRC = r"""
extern "C" __global__ void tk_xent_fwd_{T}(const {T}* z, const long long* t, {T}* loss,
                                          {T}* probs, long long N, long long C) {
    long long n = blockDim.x * (long long)blockIdx.x + threadIdx.x;
    if (n >= N) return;
    const {T}* row = z + n * C;
    {T} m = row[0];
    for (long long c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
    {T} s = 0;
    for (long long c = 0; c < C; ++c) { {T} e = exp(row[c] - m); probs[n * C + c] = e; s += e; }
    for (long long c = 0; c < C; ++c) probs[n * C + c] /= s;
    loss[n] = m + log(s) - row[t[n]];
}
"""


@functools.lru_cache(maxsize=None)
def _xent_fwd(dtype_name):
    _need()
    t = "float" if dtype_name == "float32" else "double"
    return cp.RawKernel(_XENT_SRC.replace("{T}", t), f"tk_xent_fwd_{t}")


def _scalar(v, like):
    return np.asarray(v, dtype=like.dtype)[()]


def bias_relu(x, b):
    """relu(x + b), b (C,) along axis 1 of x (N, C) or (N, C, H, W)."""
    s = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
    return _k("bias_relu")(x, b, x.shape[1], s)


def relu_backward(dy, y):
    """dx = dy * [y > 0]."""
    return _k("relu_backward")(dy, y)


def softmax_xent_forward(logits, target):
    """-> loss (N,) = logsumexp(z_n) - z_n[t_n], probs (N, C) = softmax(z): one thread a row."""
    z = cp.ascontiguousarray(logits)
    n, c = z.shape
    loss = cp.empty(n, dtype=z.dtype)
    probs = cp.empty_like(z)
    threads = 128
    _xent_fwd(z.dtype.name)(((n + threads - 1) // threads,), (threads,),
                            (z, cp.ascontiguousarray(target, dtype=cp.int64), loss, probs,
                             np.int64(n), np.int64(c)))
    return loss, probs


def softmax_xent_backward(probs, target, dloss):
    """dz = dloss[:, None] * (probs - onehot(t))."""
    return _k("xent_backward")(probs, cp.ascontiguousarray(target, dtype=cp.int64),
                               cp.ascontiguousarray(dloss, dtype=probs.dtype), probs.shape[1])


def sgd_update_(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """PyTorch's SGD step in one pass, in place on param (and buf)."""
    if buf is None:
        buf = cp.empty_like(param)  # unused when momentum == 0
    s = lambda v: _scalar(v, param)  # noqa: E731
    _k("sgd")(grad, s(lr), s(momentum), s(dampening), s(weight_decay), bool(nesterov),
              bool(first_step), param, buf)


def adam_update_(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """PyTorch's Adam / AdamW step in one pass, in place on param, m and v."""
    s = lambda x: _scalar(x, param)  # noqa: E731
    _k("adam")(grad, s(lr), s(beta1), s(beta2), s(eps), s(weight_decay), s(1 - beta1 ** step),
               s(1 - beta2 ** step), bool(decoupled), param, m, v)
