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
| `batch_norm_forward` | mean, var, xhat, y: ~8 passes -> 3 | ResNet-18 step, batch 64: 150 ms -> 44 |
| `batch_norm_backward` | ~10 passes -> 2 | the same: 149 ms -> 62 |
| `sgd_update_` | 4-5 NumPy passes and temporaries -> 1 | |

Semantics are PyTorch's: relu keeps NaN (NaN < 0 is false) and relu_backward is
``where(y <= 0, 0, dy)`` (threshold_backward), so a NaN gradient where the unit is off
gives 0 and a NaN output passes its gradient on. Inputs of any layout are accepted (a
contiguous copy is made where needed); outputs are new contiguous arrays of the input
dtype, except the in-place ``add_channel_bias_``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .cpu import num_threads, set_num_threads  # (kernels.cpu chooses the threading layer)

__all__ = ["relu", "relu_backward", "bias_relu", "add_channel_bias_", "channel_sum",
           "batch_norm_forward", "batch_norm_backward", "sgd_update_",
           "cross_entropy_forward", "softmax_xent_backward"]

# reassociation lets LLVM vectorise the float64 channel sums; no "nnan"/"ninf": a NaN
# or inf in the input must still reach the output, as in NumPy and PyTorch
_FASTMATH = {"reassoc", "contract"}


# The most frequent kernels take ``serial`` and then run a plain loop: no parallel region
# and no thread-count switch (_run's way costs ~10 us, a 64K-element relu's whole work).
@njit(parallel=True, cache=True)
def _relu(x, y, serial):
    z = x.dtype.type(0)  # not the literal 0: an int would promote the select to float64
    if serial:
        for i in range(x.shape[0]):
            v = x[i]
            y[i] = z if v < z else v
    else:
        for i in prange(x.shape[0]):
            v = x[i]
            y[i] = z if v < z else v


@njit(parallel=True, cache=True)
def _relu_backward(dy, y, dx, serial):
    z = dy.dtype.type(0)
    if serial:
        for i in range(dy.shape[0]):
            dx[i] = z if y[i] <= z else dy[i]
    else:
        for i in prange(dy.shape[0]):
            dx[i] = z if y[i] <= z else dy[i]


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


# The element loops of batch norm run in x's dtype. Their per-channel constants come
# through ``coef`` (an array of x's dtype), and the float64 mean is split in two,
# mu = hi + lo, so (x - hi) - lo keeps the mean's float64 accuracy: a float32 mean of 50
# is off by 2e-6, 2e-5 of a channel whose spread is 0.1. These loops are compiled
# without fastmath, which could fold (x - hi) - lo back into x - (hi + lo).
@njit(cache=True)
def _bn_scale_shift(xr, yr, hi, lo, a, b):
    """yr = ((xr - hi) - lo) * a + b."""
    for k in range(xr.shape[0]):
        yr[k] = ((xr[k] - hi) - lo) * a + b


@njit(cache=True)
def _bn_input_grad(gr, xr, dr, hi, lo, k1, k2, k3):
    """dr = gr * k1 + ((xr - hi) - lo) * k2 + k3."""
    for k in range(xr.shape[0]):
        dr[k] = gr[k] * k1 + ((xr[k] - hi) - lo) * k2 + k3


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _bn_forward(x, gamma, beta, eps, y, mean, var, rstd, coef):
    """Per channel c (in parallel): mean and biased variance over (n, k) in float64
    (two passes, so no cancellation), then y = (x - mean) * (rstd * gamma) + beta.
    x, y (N, C, L); gamma, beta (C,) in x's dtype; mean, var, rstd (C,) float64 outputs;
    coef (C, 4) of x's dtype, scratch."""
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        s = 0.0
        for n in range(n_):
            xr = x[n, c]
            for k in range(l_):
                s += xr[k]
        mu = s / m
        q = 0.0
        for n in range(n_):
            xr = x[n, c]
            for k in range(l_):
                d = xr[k] - mu
                q += d * d
        v = q / m
        r = 1.0 / np.sqrt(v + eps)
        mean[c], var[c], rstd[c] = mu, v, r
        coef[c, 0] = mu
        coef[c, 1] = mu - coef[c, 0]
        coef[c, 2] = r * gamma[c]
        for n in range(n_):
            _bn_scale_shift(x[n, c], y[n, c], coef[c, 0], coef[c, 1], coef[c, 2], beta[c])


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _bn_backward(g, x, mean, rstd, gamma, dx, dgamma, dbeta, coef):
    """Per channel c (in parallel), with xhat = (x - mean) * rstd and m = N*L:
    dbeta = sum g, dgamma = sum g * xhat (float64 sums), then
    dx = rstd * gamma / m * (m * g - dbeta - xhat * dgamma)
       = g * k1 + (x - mean) * k2 + k3,  k1 = rstd*gamma,  k2 = -k1*rstd*dgamma/m,
         k3 = -k1*dbeta/m.  mean, rstd float64 (C,); coef (C, 5) scratch of x's dtype."""
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        mu, r = mean[c], rstd[c]
        sg = 0.0
        sgx = 0.0
        for n in range(n_):
            gr, xr = g[n, c], x[n, c]
            for k in range(l_):
                gv = gr[k]
                sg += gv
                sgx += gv * (xr[k] - mu)
        sgx *= r
        dbeta[c], dgamma[c] = sg, sgx
        k1 = r * gamma[c]
        coef[c, 0] = mu
        coef[c, 1] = mu - coef[c, 0]
        coef[c, 2] = k1
        coef[c, 3] = -k1 * r * sgx / m
        coef[c, 4] = -k1 * sg / m
        for n in range(n_):
            _bn_input_grad(g[n, c], x[n, c], dx[n, c], coef[c, 0], coef[c, 1], coef[c, 2],
                           coef[c, 3], coef[c, 4])


@njit(cache=True)
def _sgd_at(i, p, g, buf, lr, mom, damp1, wd, has_wd, has_momentum, nesterov, first):
    gi = g[i]
    if has_wd:
        gi = gi + wd * p[i]
    if has_momentum:
        b = gi if first else buf[i] * mom + damp1 * gi
        buf[i] = b
        gi = gi + mom * b if nesterov else b
    p[i] = p[i] - lr * gi


@njit(parallel=True, cache=True)
def _sgd(p, g, buf, coef, has_wd, has_momentum, nesterov, first, serial):
    """PyTorch's SGD step on flat arrays, in place on p (and buf), with the NumPy
    composition's roundings: the scalars lr, momentum, 1 - dampening, weight_decay come
    in x's dtype (coef) and nothing is fused into an FMA (no fastmath)."""
    lr, mom, damp1, wd = coef[0], coef[1], coef[2], coef[3]
    if serial and has_momentum and not (has_wd or nesterov or first):
        # the usual step, as its own loop: LLVM vectorises it (the generic loop below,
        # with the flags inside, it does not: 35 us instead of 8 for 32K elements)
        for i in range(p.shape[0]):
            b = buf[i] * mom + damp1 * g[i]
            buf[i] = b
            p[i] = p[i] - lr * b
    elif serial:
        for i in range(p.shape[0]):
            _sgd_at(i, p, g, buf, lr, mom, damp1, wd, has_wd, has_momentum, nesterov, first)
    else:
        for i in prange(p.shape[0]):
            _sgd_at(i, p, g, buf, lr, mom, damp1, wd, has_wd, has_momentum, nesterov, first)


@njit(parallel=True, cache=True)
def _xent_forward(z, t, ignore, loss, probs, safe, state):
    """Row i: m = max z_i (NaN if any is), e = exp(z_i - m), s = sum e (float64),
    probs_i = e / s, loss_i = m + log s - z_i[t_i], or 0 where t_i == ignore (safe_i = 0
    there, t_i elsewhere). state_i: 0 the row counts, 1 it is ignored, 2 its target is
    outside [0, C) (it gets no loss).

    No scalar is summed across rows here (see _xent_tally): a prange reduction next to
    the branches on t_i fails to compile on some Numba versions ("unexpected cycle in
    lookup()", numba issue 10132; hit with numba 0.68.0 on the GPU image)."""
    n, c = z.shape
    for i in prange(n):
        zi, pi = z[i], probs[i]
        m = zi[0]
        for j in range(1, c):
            v = zi[j]
            if v > m or v != v:  # NumPy's max: a NaN wins and stays
                m = v
        s = 0.0
        for j in range(c):
            e = np.exp(zi[j] - m)
            pi[j] = e
            s += e
        s_t = z.dtype.type(s)
        for j in range(c):
            pi[j] = pi[j] / s_t
        ti = t[i]
        li = z.dtype.type(0)
        st = 0
        if ti == ignore:
            ti, st = 0, 1
        elif ti < 0 or ti >= c:
            ti, st = 0, 2
        else:
            li = z.dtype.type((m + np.log(s)) - zi[ti])
        safe[i] = ti
        loss[i] = li
        state[i] = st


@njit(cache=True)
def _xent_tally(state, loss):
    """(rows that count, rows with a bad target, float64 sum of the losses), in row order:
    the same sum whatever the thread count."""
    count, bad, total = 0, 0, 0.0
    for i in range(state.shape[0]):
        if state[i] == 0:
            count += 1
        elif state[i] == 2:
            bad += 1
        total += loss[i]
    return count, bad, total


@njit(parallel=True, cache=True)
def _xent_backward(probs, t, dloss, dz):
    """dz_i = dloss_i * (probs_i - onehot(t_i))."""
    n, c = probs.shape
    for i in prange(n):
        d, ti = dloss[i], t[i]
        for j in range(c):
            p = probs[i, j]
            dz[i, j] = d * ((p - 1) if j == ti else p)


# Below this many elements a kernel runs on the calling thread alone. Between the
# kernels of a step the framework's Python runs for tens of microseconds, long enough
# for the pool's other threads to go to sleep, and waking them costs 20-75 us (2-core
# dev VM; an empty parallel launch: 2 us with the pool awake, 5-9 us on one thread) --
# more than a small kernel's whole work.
_SERIAL_BELOW = 2 ** 16


def _run(kernel, size, *args):
    """kernel(*args), on the calling thread only when ``size`` (elements) is small."""
    if size >= _SERIAL_BELOW:
        return kernel(*args)
    threads = num_threads()
    if threads == 1:
        return kernel(*args)
    set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        set_num_threads(threads)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _ncl(a):
    """(N, C, *rest) -> a contiguous (N, C, L) view or copy."""
    a = np.ascontiguousarray(a)
    if a.ndim < 2:
        return a.reshape(1, -1, 1)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def relu(x):
    """y = max(x, 0), NaN kept; any shape."""
    y = np.empty(x.shape, dtype=x.dtype)
    _relu(_flat(x), y.reshape(-1), y.size < _SERIAL_BELOW)
    return y


def relu_backward(dy, y):
    """dx = 0 where y <= 0, else dy (PyTorch's threshold_backward); dy and y one shape."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _relu_backward(_flat(dy), _flat(y), dx.reshape(-1), dx.size < _SERIAL_BELOW)
    return dx


def bias_relu(x, b):
    """relu(x + b), b (C,) broadcast along axis 1 of x ((N, C) or (N, C, ...))."""
    y = np.empty(x.shape, dtype=np.result_type(x, b))
    _run(_bias_relu, y.size, _ncl(x).astype(y.dtype, copy=False),
         np.ascontiguousarray(b, dtype=y.dtype), y.reshape(_ncl(y).shape))
    return y


def add_channel_bias_(y, b):
    """y += b along axis 1, in place (y a contiguous (N, C, ...) array); returns y."""
    if not y.flags.c_contiguous or y.ndim < 2:
        y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y
    _run(_add_channel_bias, y.size, _ncl(y), np.ascontiguousarray(b, dtype=y.dtype))
    return y


def channel_sum(g):
    """g (N, C, ...) summed over every axis but 1 -> (C,), in g's dtype (the bias
    gradient); samples are split over the threads, whose partial sums are then added."""
    g3 = _ncl(g)
    chunks = 1 if g3.size < _SERIAL_BELOW else max(1, min(g3.shape[0], num_threads()))
    part = np.zeros((chunks, g3.shape[1]), dtype=g.dtype)
    _run(_channel_sum, g3.size, g3, part)
    return part.sum(axis=0)


def _affine(p, c, fill, dtype):
    return np.full(c, fill, dtype=dtype) if p is None else np.ascontiguousarray(p, dtype=dtype)


def batch_norm_forward(x, gamma, beta, eps):
    """Training-mode batch normalisation over every axis but 1 of x ((N, C) or
    (N, C, ...)); gamma, beta (C,) or None. Returns y (x's shape and dtype), the batch
    mean, the biased variance and rstd = 1 / sqrt(var + eps), each (C,) in float64."""
    x3 = _ncl(x)
    c, dt = x3.shape[1], x.dtype
    y = np.empty(x.shape, dtype=dt)
    mean, var, rstd = (np.empty(c) for _ in range(3))
    _run(_bn_forward, x3.size, x3, _affine(gamma, c, 1, dt), _affine(beta, c, 0, dt),
         float(eps), y.reshape(x3.shape), mean, var, rstd, np.empty((c, 4), dtype=dt))
    return y, mean, var, rstd


def batch_norm_backward(g, x, mean, rstd, gamma):
    """The gradients of batch_norm_forward for upstream g (x's shape): dx, then
    dgamma = sum g * xhat and dbeta = sum g, each (C,) in x's dtype
    (xhat = (x - mean) * rstd)."""
    x3 = _ncl(x)
    c, dt = x3.shape[1], x.dtype
    dx = np.empty(x.shape, dtype=dt)
    dgamma, dbeta = np.empty(c, dtype=dt), np.empty(c, dtype=dt)
    _run(_bn_backward, x3.size, _ncl(g).astype(dt, copy=False), x3,
         np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(rstd, np.float64),
         _affine(gamma, c, 1, dt), dx.reshape(x3.shape), dgamma, dbeta,
         np.empty((c, 5), dtype=dt))
    return dx, dgamma, dbeta


def sgd_update_(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """PyTorch SGD in one pass (parallel for large arrays), in place on ``param`` (and
    ``buf`` when momentum != 0); all arrays C-contiguous of one float dtype (the backend checks):
    g = grad + wd * p;  buf = g (first step) or momentum * buf + (1 - dampening) * g;
    g = g + momentum * buf (nesterov) or buf;  p -= lr * g."""
    coef = np.array([lr, momentum, 1 - dampening, weight_decay], dtype=param.dtype)
    flat = param.reshape(-1)
    _sgd(flat, grad.reshape(-1), flat if buf is None else buf.reshape(-1), coef,
         bool(weight_decay), bool(momentum), bool(nesterov), bool(first_step),
         flat.size < _SERIAL_BELOW)


def cross_entropy_forward(logits, target, ignore_index):
    """Softmax cross-entropy of every row, PyTorch's ignore_index rule included, in one
    pass: logits (N, C) float, target (N,) integers. Returns loss (N,) (0 where the target
    is ignore_index), probs (N, C) = softmax(z), the targets with ignored rows set to
    class 0, a bool mask of the rows that count (None when all do), their number, and
    the float64 sum of the losses. Raises IndexError for a counted target outside
    [0, C)."""
    z = np.ascontiguousarray(logits)
    n, c = z.shape
    t = np.ascontiguousarray(target, dtype=np.int64)
    loss, probs = np.empty(n, dtype=z.dtype), np.empty((n, c), dtype=z.dtype)
    safe = np.empty(n, dtype=np.int64)
    count = bad = total = 0
    if n and not c:
        bad = int((t != ignore_index).sum())
    elif n:
        state = np.empty(n, dtype=np.int8)
        _run(_xent_forward, z.size, z, t, int(ignore_index), loss, probs, safe, state)
        count, bad, total = _xent_tally(state, loss)
    if bad:
        bad_t = t[(t != ignore_index) & ((t < 0) | (t >= c))]
        raise IndexError(f"cross_entropy: target {int(bad_t[0])} is out of range for {c} "
                         f"classes (expected 0 <= target < {c})")
    valid = None if count == n else t != ignore_index
    return loss, probs, safe, valid, count, total


def softmax_xent_backward(probs, target, dloss):
    """dz = dloss[:, None] * (probs - onehot(t)); probs (N, C), target and dloss (N,)."""
    p = np.ascontiguousarray(probs)
    dz = np.empty(p.shape, dtype=p.dtype)
    if p.size:
        _run(_xent_backward, p.size, p, np.ascontiguousarray(target, dtype=np.int64),
             np.ascontiguousarray(dloss, dtype=p.dtype), dz)
    return dz
