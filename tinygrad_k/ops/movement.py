"""Movement Functions: they rearrange elements and never change values.

The gradient of a movement is the inverse movement applied to g (reshape back, inverse
permutation, sum over expanded axes, scatter-add into the indexed positions, crop the pad,
split the concatenation).
"""
from __future__ import annotations

from ..autograd import Function


class Reshape(Function):
    """y = a viewed with another shape (same element order).   da = g reshaped to a.shape."""

    node_name = "ViewBackward0"
    is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    """y = a with axes reordered: y.shape[i] = a.shape[perm[i]].   da = g permuted by perm^-1."""

    is_view = True

    @staticmethod
    def forward(ctx, a, perm):
        ctx.inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
        return a.transpose(perm)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(ctx.inverse)


class Expand(Function):
    """y = a broadcast to ``shape`` (a view).   da = g summed over the broadcast axes
    (done by the engine's unbroadcast)."""

    is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        return ctx.xp.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return g


class GetItem(Function):
    """y = a[index] for basic (slices, ints, None, Ellipsis) and integer/boolean-array indices.

    da = zeros like a, then da[index] += g -- a scatter-add (``np.add.at``) so repeated
    integer indices accumulate, as PyTorch does. Basic indices give a view of a (sharing
    its storage), advanced ones a copy, as in NumPy and PyTorch.
    """

    node_name = "IndexBackward0"
    is_view = True

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        if _is_basic(index):
            # a trailing Ellipsis makes NumPy return a 0-d view, not a scalar copy, when
            # every axis is indexed by an int: x[0] of a vector stays on x's storage
            items = index if isinstance(index, tuple) else (index,)
            if Ellipsis not in items:
                return a[items + (Ellipsis,)]
        return a[index]

    @staticmethod
    def backward(ctx, g):
        da = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic(ctx.index):
            da[ctx.index] = g  # basic indexing never repeats an element
        else:
            ctx.backend.scatter_add_(da, ctx.index, g)
        return da


class SetItem(Function):
    """y = a with y[index] = v (v broadcast to a[index]'s shape; v a Tensor or a number):
    what ``a[index] = v`` records in a graph (PyTorch's CopySlices / IndexPutBackward).

    da = g with zeros at index (those elements were overwritten);  dv = g[index]
    (summed back to v's shape by the engine's unbroadcast). With a repeated integer index
    one write wins and the gradient counts every repeat (undefined in PyTorch too).
    """

    node_name = "CopySlices"

    @staticmethod
    def forward(ctx, a, v, index):
        ctx.index = index
        y = a.copy()
        y[index] = v
        return y

    @staticmethod
    def backward(ctx, g):
        da = g.copy()
        da[ctx.index] = 0
        if len(ctx.parents) == 1:  # v was a number
            return da
        return da, g[ctx.index]


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


class Pad(Function):
    """Constant padding: pad_width[i] = (before_i, after_i) per axis.   da = g cropped."""

    node_name = "ConstantPadNdBackward0"

    @staticmethod
    def forward(ctx, a, pad_width, value):
        ctx.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, a.shape))
        return ctx.xp.pad(a, pad_width, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.crop]


class Cat(Function):
    """y = concatenation of the inputs along ``dim``.   d(input_i) = the matching slice of g."""

    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in arrays]
        return ctx.xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        out, start = [], 0
        index = [slice(None)] * g.ndim
        for n in ctx.sizes:
            index[ctx.dim] = slice(start, start + n)
            out.append(g[tuple(index)])
            start += n
        return tuple(out)


class Resample(Function):
    """A sparse linear map along one axis: with index and weight arrays of shape (K, O),

        y[..., o, ...] = sum_k w[k, o] * a[..., idx[k, o], ...]      (w None: all ones)

    along ``axis``: the one primitive behind non-constant padding (reflect, replicate,
    circular: K = 1, idx the source of each padded position) and interpolation (nearest:
    K = 1; linear: K = 2 neighbours with weights 1 - l and l).

    The map is linear in a, so its vector-Jacobian product is the transposed map, a
    scatter-add:  da[..., i, ...] = sum_{k, o : idx[k, o] = i} w[k, o] * g[..., o, ...]
    (positions read several times accumulate).
    """

    @staticmethod
    def forward(ctx, a, axis, idx, weight=None):
        ctx.axis, ctx.idx, ctx.weight, ctx.n = axis, idx, weight, a.shape[axis]
        xp = ctx.xp
        shape = [1] * a.ndim
        shape[axis] = idx.shape[1]
        y = None
        for k in range(idx.shape[0]):
            term = xp.take(a, idx[k], axis=axis)
            if weight is not None:
                term = term * weight[k].reshape(shape).astype(a.dtype, copy=False)
            y = term if y is None else y + term
        return y

    @staticmethod
    def backward(ctx, g):
        xp, axis = ctx.xp, ctx.axis
        gm = xp.moveaxis(g, axis, 0)  # (O, ...): scatter rows
        out = xp.zeros((ctx.n,) + gm.shape[1:], dtype=g.dtype)
        for k in range(ctx.idx.shape[0]):
            vals = gm
            if ctx.weight is not None:
                w = ctx.weight[k].astype(g.dtype, copy=False)
                vals = gm * w.reshape((-1,) + (1,) * (gm.ndim - 1))
            ctx.backend.scatter_add_(out, ctx.idx[k], vals)
        return xp.moveaxis(out, 0, axis)
