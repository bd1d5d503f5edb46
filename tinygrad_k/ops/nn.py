"""Neural-network Functions: convolution, pooling, softmax family, dropout, cross-entropy.

Convolution and pooling call the backend's kernel primitives (``ctx.kernels``), so the
same Function runs the Numba CPU kernels or the Numba CUDA kernels.
"""
from __future__ import annotations

from ..autograd import Function


def pair(v, name, op):
    """int or 2-sequence -> (h, w) of ints, with a clear error otherwise."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        h, w = v
        if isinstance(h, int) and isinstance(w, int):
            return (h, w)
    except (TypeError, ValueError):
        pass
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")


class Conv2d(Function):
    """Cross-correlation (what every framework calls conv2d), NCHW / OIHW:

        y[n,o,i,j] = b[o] + sum_{c,p,q} x_pad[n, c, i*sh + p, j*sw + q] * w[o,c,p,q]

    Gradients (the two "transposed" correlations, ``kernels.conv2d_backward_*``):
        dx_pad[n,c,i*sh+p, j*sw+q] += g[n,o,i,j] * w[o,c,p,q]   (then crop the padding)
        dw[o,c,p,q] = sum_{n,i,j} g[n,o,i,j] * x_pad[n,c,i*sh+p, j*sw+q]
        db[o]       = sum_{n,i,j} g[n,o,i,j]
    """

    @staticmethod
    def forward(ctx, x, w, b=None, stride=1, padding=0):
        stride = pair(stride, "stride", "conv2d")
        padding = pair(padding, "padding", "conv2d")
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"conv2d: expected input (N,C,H,W) and weight (O,C,KH,KW), got "
                             f"input {tuple(x.shape)} and weight {tuple(w.shape)}")
        if x.shape[1] != w.shape[1]:
            raise ValueError(
                f"conv2d: input {tuple(x.shape)} has {x.shape[1]} channels but weight "
                f"{tuple(w.shape)} expects {w.shape[1]} input channels")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"conv2d: bias of shape {tuple(b.shape)}, expected ({w.shape[0]},)")
        if x.dtype != w.dtype:
            raise TypeError(f"conv2d: input dtype {x.dtype} and weight dtype {w.dtype} differ")
        y = ctx.kernels.conv2d_forward(x, w, stride, padding)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, b is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k = ctx.kernels
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = k.conv2d_backward_input(g, w, x.shape, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            dw = k.conv2d_backward_weight(g, x, w.shape, ctx.stride, ctx.padding)
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, g.sum(axis=(0, 2, 3))


class MaxPool2d(Function):
    """y[n,c,i,j] = max_{p,q} x_pad[n,c,i*sh+p, j*sw+q]   (padding is -inf).

    dx[n,c,h,w] = sum of g[n,c,i,j] over the windows whose maximum sat at (h,w); the
    forward keeps those positions (``argmax``) so backward is one scatter-add.
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        _check_nchw(x, "max_pool2d")
        y, argmax = ctx.kernels.maxpool2d_forward(x, kernel, stride, padding)
        ctx.save_for_backward(argmax)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        (argmax,) = ctx.saved_tensors
        return ctx.kernels.maxpool2d_backward(g, argmax, ctx.x_shape)


class AvgPool2d(Function):
    """y[n,c,i,j] = 1/(KH*KW) sum_{p,q} x_pad[n,c,i*sh+p, j*sw+q]   (zero padding counted).

    dx[n,c,h,w] = sum over the windows containing (h,w) of g[n,c,i,j] / (KH*KW).
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        _check_nchw(x, "avg_pool2d")
        ctx.x_shape, ctx.args = x.shape, (kernel, stride, padding)
        return ctx.kernels.avgpool2d_forward(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, g):
        return ctx.kernels.avgpool2d_backward(g, ctx.x_shape, *ctx.args)


def _check_nchw(x, op):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N,C,H,W), got shape {tuple(x.shape)}")


class Softmax(Function):
    """s = e^(z - max z) / sum e^(z - max z) along ``dim``.

    ds/dz is s_i (delta_ij - s_j), so dz = s * (g - sum(g * s)) along ``dim``.
    """

    @staticmethod
    def forward(ctx, z, dim):
        xp = ctx.xp
        e = xp.exp(z - z.max(axis=dim, keepdims=True))
        s = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(s)
        ctx.dim = dim
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return s * (g - (g * s).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """y = z - logsumexp(z) along ``dim`` (shifted by max z: never overflows).

    dy_i/dz_j = delta_ij - softmax(z)_j, so dz = g - softmax(z) * sum(g).
    """

    @staticmethod
    def forward(ctx, z, dim):
        xp = ctx.xp
        shifted = z - z.max(axis=dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g - ctx.xp.exp(y) * g.sum(axis=ctx.dim, keepdims=True)


class Dropout(Function):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p).   dx = g * m / (1 - p)."""

    @staticmethod
    def forward(ctx, x, p, uniform):
        scale = x.dtype.type(1.0 / (1.0 - p))
        mask = (uniform >= p).astype(x.dtype) * scale
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over classes (axis 1).

    logits z (N, C), integer targets t (N,). With p = softmax(z) and label smoothing e:
        loss_n = (1 - e) * (lse(z_n) - z_n[t_n]) + e * (lse(z_n) - mean_c z_n[c])
        dz_n   = dloss_n * (p_n - (1 - e) * onehot(t_n) - e / C)
    Rows with t_n == ignore_index contribute 0 and are left out of the mean.
    reduction: "mean" (over non-ignored rows), "sum" or "none".
    """

    @staticmethod
    def forward(ctx, z, target, reduction, label_smoothing, ignore_index):
        xp = ctx.xp
        n, c = z.shape
        valid = target != ignore_index
        safe_t = xp.where(valid, target, 0)
        if valid.size and (safe_t.min() < 0 or safe_t.max() >= c):
            bad = target[valid & ((target < 0) | (target >= c))]
            raise IndexError(f"cross_entropy: target {int(bad.ravel()[0])} is out of range "
                             f"for {c} classes (expected 0 <= target < {c})")
        loss, probs = ctx.backend.softmax_xent_forward(z, safe_t)
        e = label_smoothing
        if e:
            lse = loss + z[xp.arange(n), safe_t]
            loss = (1 - e) * loss + e * (lse - z.mean(axis=1))
        loss = loss * valid
        count = int(valid.sum())
        ctx.save_for_backward(probs, safe_t, valid)
        ctx.reduction, ctx.e, ctx.count = reduction, e, count
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "sum":
            return total
        return total / z.dtype.type(count) if count else total * z.dtype.type(float("nan"))

    @staticmethod
    def backward(ctx, g):
        probs, t, valid = ctx.saved_tensors
        if ctx.reduction == "none":
            dloss = g * valid
        elif ctx.reduction == "sum":
            dloss = ctx.xp.broadcast_to(g, valid.shape) * valid
        else:
            dloss = ctx.xp.broadcast_to(g / max(ctx.count, 1), valid.shape) * valid
        dloss = dloss.astype(probs.dtype)
        e = ctx.e
        if not e:
            return ctx.backend.softmax_xent_backward(probs, t, dloss), None
        dz = ctx.backend.softmax_xent_backward(probs, t, (1 - e) * dloss)
        dz += e * dloss[:, None] * (probs - 1.0 / probs.shape[1])
        return dz, None
