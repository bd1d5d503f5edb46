"""Reductions over ``dim`` (None = all axes), with ``keepdim`` as in PyTorch.

Backward of a reduction first restores the reduced axes as size 1 (``_expand_back``) so
the gradient broadcasts against the input.
"""
from __future__ import annotations

from ..autograd import Function


def normalize_dims(dim, ndim, op="reduce"):
    """``dim`` (None, int or sequence, negatives allowed) -> sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, int) or not (-max(ndim, 1) <= d < max(ndim, 1)):
            raise IndexError(f"{op}: dim {d} out of range for a tensor of {ndim} dimensions")
        out.append(d % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim} repeats an axis")
    return tuple(sorted(out))


def _expand_back(g, in_shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input shape."""
    if keepdim or not in_shape:
        return g
    shape = list(in_shape)
    for ax in axes:
        shape[ax] = 1
    return g.reshape(shape)


class Sum(Function):
    """y = sum_{axes} a.   da = g broadcast back over the reduced axes."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return a.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim)
        return ctx.xp.broadcast_to(g, ctx.shape)


class Mean(Function):
    """y = (1/n) sum_{axes} a, n = number of reduced elements.   da = g / n."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        n = 1
        for ax in axes:
            n *= a.shape[ax]
        ctx.n = n
        return a.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim)
        return ctx.xp.broadcast_to(g / ctx.n, ctx.shape)


class MaxMin(Function):
    """y = max (or min) over ``axes``.

    da = g * [a == y] / count(a == y): the gradient is shared evenly among tied extrema
    (PyTorch's amax/amin rule), so it sums to g exactly.
    """

    node_name = "MaxBackward1"

    @staticmethod
    def forward(ctx, a, axes, keepdim, is_max):
        if a.size == 0:
            raise RuntimeError(f"{'max' if is_max else 'min'}: cannot reduce an empty tensor "
                               f"of shape {tuple(a.shape)}")
        y = a.max(axis=axes, keepdims=True) if is_max else a.min(axis=axes, keepdims=True)
        ctx.save_for_backward(a, y)
        ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else y.reshape([s for i, s in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim)
        mask = a == y
        count = mask.sum(axis=ctx.axes, keepdims=True)
        return g * mask / count


class Var(Function):
    """v = sum (a - mean)^2 / (n - correction).   da = g * 2 (a - mean) / (n - correction)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, correction):
        n = 1
        for ax in axes:
            n *= a.shape[ax]
        mu = a.mean(axis=axes, keepdims=True)
        d = a - mu
        denom = max(n - correction, 0)
        ctx.save_for_backward(d)
        ctx.axes, ctx.keepdim, ctx.denom = axes, keepdim, denom
        with ctx.backend.quiet():
            return (d * d).sum(axis=axes, keepdims=keepdim) / a.dtype.type(denom)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        g = _expand_back(g, d.shape, ctx.axes, ctx.keepdim)
        with ctx.backend.quiet():
            return g * 2 * d / d.dtype.type(ctx.denom)


class LogSumExp(Function):
    """y = log sum_{axes} e^a, computed as m + log sum e^(a - m) with m = max a.

    da = g * e^(a - y) = g * softmax(a) over the reduced axes.
    """

    node_name = "LogsumexpBackward0"

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        xp = ctx.xp
        m = a.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows stay -inf, not NaN
        y = m + xp.log(xp.exp(a - m).sum(axis=axes, keepdims=True))
        ctx.save_for_backward(a, y)
        ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else y.reshape([s for i, s in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim)
        return g * ctx.xp.exp(a - y)


class Cumsum(Function):
    """y_i = sum_{j <= i} a_j along ``dim``.
    da_j = sum_{i >= j} g_i: the cumulative sum of g taken from the end."""

    @staticmethod
    def forward(ctx, a, dim):
        ctx.dim = dim
        return ctx.xp.cumsum(a, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp, d = ctx.xp, ctx.dim
        return xp.flip(xp.cumsum(xp.flip(g, axis=d), axis=d), axis=d)


class Norm2(Function):
    """y = sqrt(sum_{axes} a^2).   da = g * a / y, and 0 where y = 0 (the subgradient
    PyTorch picks: sqrt's infinite slope at 0 times a = 0 would otherwise give NaN)."""

    node_name = "LinalgVectorNormBackward0"

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        xp = ctx.xp
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        y = xp.sqrt((a * a).sum(axis=axes, keepdims=True))
        ctx.save_for_backward(a, y)
        return y if keepdim else y.squeeze(axis=axes)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, y = ctx.saved_tensors
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim)
        safe = xp.where(y == 0, 1, y)
        return xp.where(y == 0, 0, g * a / safe).astype(a.dtype, copy=False)
