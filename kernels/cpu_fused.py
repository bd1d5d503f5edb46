"""Fused Numba CPU kernels for the elementwise and per-channel steps around the big
primitives: one parallel pass where NumPy makes several single-threaded ones, each
writing a fresh temporary.

| function | replaces (NumPy) | LeNet-5 conv1 output, batch 256, 2 cores |
|---|---|---|
| `relu(x)` | maximum(x, 0) | 0.66 ms -> ~0.2 |
| `relu_backward(dy, y)` | dy * (y > 0): a bool temporary, then the product | 0.45 ms -> ~0.2 |
| `bias_relu(x, b)` | x + b (broadcast) then relu: 2 passes -> 1 | |
| `add_channel_bias_(y, b)` | y += b[None, :, None, None] | 0.27 ms -> ~0.1 |
| `channel_sum(g)` | g.sum(axis=(0, 2, 3)) (the bias gradient) | 0.27 ms -> ~0.1 |

Semantics are PyTorch's: relu keeps NaN (NaN < 0 is false) and relu_backward is
``where(y <= 0, 0, dy)`` (threshold_backward), so a NaN gradient where the unit is off
gives 0 and a NaN output passes its gradient on. Inputs of any layout are accepted (a
contiguous copy is made where needed); outputs are new contiguous arrays of the input
dtype, except the in-place ``add_channel_bias_``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu as _cpu  # noqa: F401  (chooses Numba's threading layer first)

__all__ = ["relu", "relu_backward", "bias_relu", "add_channel_bias_", "channel_sum"]


@njit(parallel=True, cache=True)
def _relu(x, y):
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def _relu_backward(dy, y, dx):
    for i in prange(dy.shape[0]):
        dx[i] = 0 if y[i] <= 0 else dy[i]


@njit(parallel=True, cache=True)
def _bias_relu(x, b, y):
    """x, y (N, C, L); b (C,)."""
    n_, c_, l_ = x.shape
    for nc in prange(n_ * c_):
        n, c = nc // c_, nc % c_
        bc = b[c]
        xr, yr = x[n, c], y[n, c]
        for k in range(l_):
            v = xr[k] + bc
            yr[k] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def _add_channel_bias(y, b):
    """y (N, C, L) += b (C,) along axis 1, in place."""
    n_, c_, l_ = y.shape
    for nc in prange(n_ * c_):
        n, c = nc // c_, nc % c_
        bc = b[c]
        yr = y[n, c]
        for k in range(l_):
            yr[k] += bc


@njit(parallel=True, cache=True)
def _channel_sum(g, part):
    """part[chunk, c] = sum over the chunk's samples n and positions k of g[n, c, k]."""
    n_, c_, l_ = g.shape
    chunks = part.shape[0]
    for ch in prange(chunks):
        for n in range(ch, n_, chunks):
            for c in range(c_):
                s = part[ch, c]
                gr = g[n, c]
                for k in range(l_):
                    s += gr[k]
                part[ch, c] = s


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _ncl(a):
    """(N, C, *rest) -> a contiguous (N, C, L) view or copy."""
    a = np.ascontiguousarray(a)
    if a.ndim < 2:
        return a.reshape(1, -1, 1)
    return a.reshape(a.shape[0], a.shape[1], int(np.prod(a.shape[2:], dtype=np.int64)))


def relu(x):
    """y = max(x, 0), NaN kept; any shape."""
    y = np.empty(x.shape, dtype=x.dtype)
    _relu(_flat(x), y.reshape(-1))
    return y


def relu_backward(dy, y):
    """dx = 0 where y <= 0, else dy (PyTorch's threshold_backward); dy and y one shape."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _relu_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def bias_relu(x, b):
    """relu(x + b), b (C,) broadcast along axis 1 of x ((N, C) or (N, C, ...))."""
    y = np.empty(x.shape, dtype=np.result_type(x, b))
    _bias_relu(_ncl(x).astype(y.dtype, copy=False), np.ascontiguousarray(b, dtype=y.dtype),
               y.reshape(_ncl(y).shape))
    return y


def add_channel_bias_(y, b):
    """y += b along axis 1, in place (y a contiguous (N, C, ...) array); returns y."""
    if not y.flags.c_contiguous or y.ndim < 2:
        y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y
    _add_channel_bias(_ncl(y), np.ascontiguousarray(b, dtype=y.dtype))
    return y


def channel_sum(g):
    """g (N, C, ...) summed over every axis but 1 -> (C,), in g's dtype (the bias
    gradient); samples are split over the threads, whose partial sums are then added."""
    g3 = _ncl(g)
    from numba import get_num_threads

    part = np.zeros((max(1, min(g3.shape[0], get_num_threads())), g3.shape[1]), dtype=g.dtype)
    _channel_sum(g3, part)
    return part.sum(axis=0)
