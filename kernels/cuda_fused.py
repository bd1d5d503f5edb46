"""Fused CuPy kernels: one pass over memory where a training step would make several.

| function | replaces |
|---|---|
| `bias_relu(x, b)` | x + b (broadcast) then relu: 2 passes -> 1 |
| `relu_backward(dy, y)` | (y > 0) mask, multiply: 2 passes -> 1 |
| `softmax_xent_forward(logits, t)` | max, exp, sum, log, gather: 5 passes -> 1 (one thread per row) |
| `softmax_xent_backward(p, t, dloss)` | copy, one-hot subtract, scale: 3 -> 1 |
| `cross_entropy_forward(z, t, ignore_index)` | ignore/range masks, softmax, loss, row weights, sums: ~20 launches -> 2 |
| `cross_entropy_mean(total, count)` | guard, divide, NaN for no rows, cast: 5 -> 1 |
| `cross_entropy_backward(p, t, w, g, count)` | mean scale, row weights, one-hot subtract: ~8 -> 1 |
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
           "softmax_xent_backward", "cross_entropy_forward", "cross_entropy_mean",
           "cross_entropy_backward", "sgd_update_", "adam_update_"]


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
    # the mean of the counted rows' losses, NaN when none counts (PyTorch's 0/0); the
    # division in double, as NumPy promotes a float32 sum over an int64 count
    "xent_mean": (
        "T total, int64 count", "T mean",
        "mean = count > 0 ? (T)((double)total / (double)count) : (T)nan(\"\")"),
    # the upstream gradient g of a "mean" (counted: / max(count, 1)) or "sum" loss, times
    # the row weight (1 counted, 0 ignored, NaN out of range), times softmax - onehot
    "xent_backward_scaled": (
        "T p, raw int64 t, raw T g, raw int64 count, raw T w, int64 classes, bool counted, "
        "bool weighted", "T dz",
        "long long row = i / classes; long long col = i % classes;"
        "T s = counted ? (T)((double)g[0] / (double)(count[0] > 1 ? count[0] : 1)) : g[0];"
        "if (weighted) s = s * w[row];"
        "dz = s * (p - (col == t[row] ? (T)1 : (T)0))"),
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


# PyTorch's cross-entropy rows with ignore_index, without a host round trip: target
# ignore -> loss 0, weight 0; outside [0, C) -> loss and weight NaN (the host raises at its
# next read, Backend.defer_check); else weight 1. safe: the target, 0 where it is not one.
XENT_ROWS_SRC = r"""
extern "C" __global__ void tk_xent_rows_{T}(const {T}* z, const long long* t, {T}* loss,
                                           {T}* probs, long long* safe, {T}* weight,
                                           long long N, long long C, long long ignore) {
    long long n = blockDim.x * (long long)blockIdx.x + threadIdx.x;
    if (n >= N) return;
    long long tn = t[n];
    bool valid = tn != ignore;
    bool bad = valid && (tn < 0 || tn >= C);
    long long st = (valid && !bad) ? tn : 0;
    const {T}* row = z + n * C;
    {T}* p = probs + n * C;
    {T} m = row[0];
    for (long long c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
    {T} s = 0;
    for (long long c = 0; c < C; ++c) { {T} e = exp(row[c] - m); p[c] = e; s += e; }
    for (long long c = 0; c < C; ++c) p[c] /= s;
    {T} qnan = ({T})nan("");
    loss[n] = bad ? qnan : (valid ? m + log(s) - row[st] : ({T})0);
    weight[n] = bad ? qnan : (valid ? ({T})1 : ({T})0);
    safe[n] = st;
}
"""

# One block (XENT_SUM_THREADS threads, a power of two): the sum of the losses (in double,
# a fixed tree: the same bits every run, unlike atomics), the rows that count (weight
# != 0) and whether any was out of range (a NaN weight)
XENT_SUM_THREADS = 256
XENT_SUM_SRC = r"""
extern "C" __global__ void tk_xent_sum_{T}(const {T}* loss, const {T}* weight, long long N,
                                          {T}* total, long long* count, bool* bad) {
    __shared__ double s_sum[256];
    __shared__ long long s_cnt[256];
    __shared__ int s_bad[256];
    unsigned int tid = threadIdx.x;
    double acc = 0;
    long long cnt = 0;
    int b = 0;
    for (long long n = tid; n < N; n += blockDim.x) {
        acc += (double)loss[n];
        {T} w = weight[n];
        cnt += w != ({T})0;
        b |= w != w;
    }
    s_sum[tid] = acc; s_cnt[tid] = cnt; s_bad[tid] = b;
    __syncthreads();
    for (unsigned int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (tid < h) {
            s_sum[tid] += s_sum[tid + h]; s_cnt[tid] += s_cnt[tid + h];
            s_bad[tid] |= s_bad[tid + h];
        }
        __syncthreads();
    }
    if (tid == 0) { *total = ({T})s_sum[0]; *count = s_cnt[0]; *bad = s_bad[0] != 0; }
}
"""


@functools.lru_cache(maxsize=None)
def _raw(src_name, dtype_name):
    _need()
    t = "float" if dtype_name == "float32" else "double"
    src = {"rows": XENT_ROWS_SRC, "sum": XENT_SUM_SRC}[src_name]
    return cp.RawKernel(src.replace("{T}", t), f"tk_xent_{src_name}_{t}")


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


def cross_entropy_forward(logits, target, ignore_index):
    """Softmax cross-entropy rows with PyTorch's ignore_index, two launches, no wait:
    logits (N, C) float32/64, integer target (N,). Returns loss (N,) (0 ignored, NaN out
    of range), probs (N, C) = softmax(z), safe targets (N,) int64, the row weight (N,)
    (1 counted, 0 ignored, NaN out of range), and device 0-d arrays: the count of rows
    that are not ignored (int64), the sum of the losses (dtype of z) and whether a target
    was out of range (bool) -- what Backend._cross_entropy_deferred makes from ~20."""
    z = cp.ascontiguousarray(logits)
    n, c = z.shape
    t = cp.ascontiguousarray(target, dtype=cp.int64)
    loss, probs = cp.empty(n, dtype=z.dtype), cp.empty_like(z)
    safe, weight = cp.empty(n, dtype=cp.int64), cp.empty(n, dtype=z.dtype)
    total, count, bad = (cp.empty((), dtype=z.dtype), cp.empty((), dtype=cp.int64),
                         cp.empty((), dtype=cp.bool_))
    name = dtype_name(z.dtype)
    threads = 128
    if n:
        _raw("rows", name)(((n + threads - 1) // threads,), (threads,),
                           (z, t, loss, probs, safe, weight, np.int64(n), np.int64(c),
                            np.int64(ignore_index)))
    _raw("sum", name)((1,), (XENT_SUM_THREADS,), (loss, weight, np.int64(n), total, count, bad))
    return loss, probs, safe, weight, count, total, bad


def cross_entropy_mean(total, count):
    """total / count as total's dtype (the division in double), NaN where count == 0:
    0-d device arrays in, one out."""
    return _k("xent_mean")(total, count)


def cross_entropy_backward(probs, target, weight, g, count):
    """dz = s * w[:, None] * (probs - onehot(t)): s = g / max(count, 1) (a "mean" loss;
    count a 0-d int64 device array) or g (a "sum" loss, count None); w the row weight
    (None: 1). probs (N, C), target (N,) int64, g a 0-d array of probs' dtype."""
    t = cp.ascontiguousarray(target, dtype=cp.int64)
    counted, weighted = count is not None, weight is not None
    return _k("xent_backward_scaled")(
        probs, t, g, count if counted else t, weight if weighted else probs,
        probs.shape[1], counted, weighted)


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
