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
then raises a clear RuntimeError. Run through CuPy on a real GPU by
tests/test_kernels_gpu.py (``pytest -m gpu``); without one, tests/test_kernels_fused_src.py
compiles every kernel body with NVRTC and runs it on the CPU as C++ against NumPy.
"""
from __future__ import annotations

import functools

import numpy as np

from ._common import dtype_name

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


# The ElementwiseKernels as plain data -- name: (in_params, out_params, operation) -- so
# that tests/test_kernels_fused_src.py can also compile each body with NVRTC and run it
# on the CPU as C++ against NumPy, where there is no GPU. ``i`` is CuPy's element index.
ELEMENTWISE = {
    "bias_relu": (
        "T x, raw T b, int64 channels, int64 plane", "T y",
        "T v = x + b[(i / plane) % channels]; y = v < (T)0 ? (T)0 : v"),
    "relu_backward": ("T dy, T y", "T dx", "dx = y <= (T)0 ? (T)0 : dy"),
    "xent_backward": (
        "T p, raw int64 t, raw T dloss, int64 classes", "T dz",
        "long long row = i / classes; long long col = i % classes;"
        "dz = dloss[row] * (p - (col == t[row] ? (T)1 : (T)0))"),
    # every scalar combination (1 - dampening, lr / (1 - beta1^t), ...) is formed on the
    # host in double and rounded once to T, as NumPy and PyTorch do: 1 - 0.999f in float
    # is 1.00004e-3, a 4e-5 relative error in Adam's second moment
    "sgd": (
        "T g, T lr, T mom, T one_minus_damp, T wd, bool nesterov, bool first", "T p, T buf",
        "T d = g + wd * p;"
        "if (mom != (T)0) {"
        "  buf = first ? d : mom * buf + one_minus_damp * d;"
        "  d = nesterov ? d + mom * buf : buf;"
        "}"
        "p = p - lr * d;"),
    "adam": (
        "T g, T b1, T one_minus_b1, T b2, T one_minus_b2, T eps, T wd, T step_size, T bc2, "
        "T decay, bool decoupled", "T p, T m, T v",
        "T gg = g;"
        "if (wd != (T)0) { if (decoupled) p = p * decay; else gg = g + wd * p; }"
        "m = b1 * m + one_minus_b1 * gg;"
        "v = b2 * v + one_minus_b2 * gg * gg;"
        "p = p - step_size * m / (sqrt(v / bc2) + eps);"),
}


@functools.lru_cache(maxsize=None)
def _k(name):
    _need()
    in_params, out_params, operation = ELEMENTWISE[name]
    return cp.ElementwiseKernel(in_params, out_params, operation, f"tk_{name}")


XENT_FORWARD_SRC = r"""
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
    return cp.RawKernel(XENT_FORWARD_SRC.replace("{T}", t), f"tk_xent_fwd_{t}")


def _scalar(v, like):
    return np.asarray(v, dtype=like.dtype)[()]


def bias_relu(x, b):
    """relu(x + b), b (C,) along axis 1 of x (N, C) or (N, C, H, W)."""
    s = int(np.prod(x.shape[2:])) if x.ndim > 2 else 1
    return _k("bias_relu")(x, b, x.shape[1], s)


def relu_backward(dy, y):
    """dx = 0 where y <= 0, else dy (PyTorch's threshold_backward)."""
    return _k("relu_backward")(dy, y)


def softmax_xent_forward(logits, target):
    """-> loss (N,) = logsumexp(z_n) - z_n[t_n], probs (N, C) = softmax(z): one thread a row."""
    z = cp.ascontiguousarray(logits)
    n, c = z.shape
    loss = cp.empty(n, dtype=z.dtype)
    probs = cp.empty_like(z)
    threads = 128
    _xent_fwd(dtype_name(z.dtype))(((n + threads - 1) // threads,), (threads,),
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
    _k("sgd")(grad, s(lr), s(momentum), s(1 - dampening), s(weight_decay), bool(nesterov),
              bool(first_step), param, buf)


def adam_update_(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """PyTorch's Adam / AdamW step in one pass, in place on param, m and v."""
    s = lambda x: _scalar(x, param)  # noqa: E731
    _k("adam")(grad, s(beta1), s(1 - beta1), s(beta2), s(1 - beta2), s(eps), s(weight_decay),
               s(lr / (1 - beta1 ** step)), s(1 - beta2 ** step), s(1 - lr * weight_decay),
               bool(decoupled), param, m, v)
