"""Normalisation and embedding Functions with fused, hand-derived backward passes.

Both normalisations compute  xhat = (x - mu) * r,  r = 1 / sqrt(var + eps)  (biased
variance over the m reduced elements) and then scale and shift  y = gamma * xhat + beta.
With g = dL/dy and gh = g * gamma, the chain rule through mu and var collapses to

    dx = r / m * (m * gh - sum(gh) - xhat * sum(gh * xhat))
    dgamma = sum(g * xhat),   dbeta = sum(g)

(sums over the normalised elements). One node instead of ~10 elementwise ones.

``gamma`` and ``beta`` may be None (``affine=False``): then y = xhat and no gradient is
returned for them (a Function returns one gradient per *Tensor* input).
"""
from __future__ import annotations

from ..autograd import Function


def _param_grads(dx, gamma, beta, dgamma, dbeta):
    out = [dx]
    if gamma is not None:
        out.append(dgamma)
    if beta is not None:
        out.append(dbeta)
    return tuple(out) if len(out) > 1 else dx


class BatchNormTrain(Function):
    """Batch normalisation with batch statistics, channel axis 1: x (N, C), (N, C, L) or
    (N, C, H, W); gamma, beta (C,) or None.

    Reduces over every axis but 1 (m = N*H*W). ``stats`` (a dict) receives the batch mean
    and the *unbiased* variance var * m / (m - 1) so the module can update its running
    estimates as PyTorch does.
    """

    node_name = "NativeBatchNormBackward0"

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, stats):
        # one backend primitive each way (a fused parallel kernel on the CPU); x itself
        # is saved, as PyTorch does, so an in-place change to it is refused in backward
        y, mean, var, rstd = ctx.backend.batch_norm_forward(x, gamma, beta, eps)
        m = x.size // x.shape[1]
        stats["mean"] = mean
        stats["var"] = var * (m / max(m - 1, 1))
        ctx.save_for_backward(x, mean, rstd, gamma)
        ctx.has_beta = beta is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, mean, rstd, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = ctx.backend.batch_norm_backward(g, x, mean, rstd, gamma)
        beta = True if ctx.has_beta else None
        return _param_grads(dx, gamma, beta, dgamma, dbeta)


class BatchNormEval(Function):
    """Batch normalisation with fixed (running) statistics, channel axis 1:

        y = x * s + (beta - mean * s),   s = gamma / sqrt(var + eps)

    an affine map per channel. dx = g * s,  dgamma = sum(g * (x - mean)) / sqrt(var + eps),
    dbeta = sum(g) (sums over every axis but 1). ``mean`` and ``var`` are raw (C,) arrays
    (buffers, no gradient).
    """

    node_name = "NativeBatchNormBackward0"

    @staticmethod
    def forward(ctx, x, gamma, beta, mean, var, eps):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        r = 1.0 / ctx.xp.sqrt(var + eps)
        s = r if gamma is None else gamma * r
        shift = -mean * s if beta is None else beta - mean * s
        ctx.save_for_backward(x, s, r, mean, gamma)
        ctx.shape, ctx.has_beta = shape, beta is not None
        return (x * s.reshape(shape) + shift.reshape(shape)).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, s, r, mean, gamma = ctx.saved_tensors
        shape = ctx.shape
        axes = (0,) + tuple(range(2, g.ndim))
        dx = g * s.reshape(shape)
        dgamma = dbeta = None
        if gamma is not None and ctx.needs_input_grad[1]:
            dgamma = (g * (x - mean.reshape(shape))).sum(axis=axes) * r
        if ctx.has_beta and ctx.needs_input_grad[-1]:
            dbeta = g.sum(axis=axes)
        beta = True if ctx.has_beta else None
        return _param_grads(dx, gamma, beta, dgamma, dbeta)


class LayerNorm(Function):
    """Layer normalisation over the last ``k`` axes; gamma, beta have the normalised shape
    (or are None, then ``k`` is given explicitly)."""

    node_name = "NativeLayerNormBackward0"

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, k=None):
        k = gamma.ndim if k is None else k
        axes = tuple(range(x.ndim - k, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        var = (d * d).mean(axis=axes, keepdims=True)
        r = 1.0 / ctx.xp.sqrt(var + eps)
        xhat = d * r
        ctx.save_for_backward(xhat, r, gamma)
        ctx.axes, ctx.k, ctx.has_beta = axes, k, beta is not None
        ctx.m = 1
        for a in axes:
            ctx.m *= x.shape[a]
        y = xhat if gamma is None else xhat * gamma
        return y if beta is None else y + beta

    @staticmethod
    def backward(ctx, g):
        xhat, r, gamma = ctx.saved_tensors
        axes, m = ctx.axes, ctx.m
        gh = g if gamma is None else g * gamma
        dx = (r / m) * (m * gh - gh.sum(axis=axes, keepdims=True)
                        - xhat * (gh * xhat).sum(axis=axes, keepdims=True))
        lead = tuple(range(g.ndim - ctx.k))
        dgamma = (g * xhat).sum(axis=lead) if gamma is not None else None
        dbeta = g.sum(axis=lead) if ctx.has_beta else None
        beta = True if ctx.has_beta else None
        return _param_grads(dx, gamma, beta, dgamma, dbeta)


class Embedding(Function):
    """Row lookup y[..., :] = W[idx[...], :]; W (num, dim), idx integer array of any shape
    -> y idx.shape + (dim,).

    dW = scatter-add of g into the looked-up rows (repeated indices accumulate);
    the row ``padding_idx`` (if not None) gets no gradient, as in PyTorch.
    """

    @staticmethod
    def forward(ctx, weight, idx, padding_idx=None):
        ctx.idx, ctx.shape, ctx.padding_idx = idx, weight.shape, padding_idx
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        dw = ctx.xp.zeros(ctx.shape, dtype=g.dtype)
        ctx.backend.scatter_add_(dw, ctx.idx.reshape(-1), g.reshape(-1, ctx.shape[1]))
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx] = 0
        return dw


class GroupNorm(Function):
    """Group normalisation: x (N, C, *) with C split into G groups of C/G channels; each
    (sample, group) is normalised over its C/G * prod(*) elements (biased variance), then
    y = gamma[c] * xhat + beta[c] with gamma, beta (C,) or None.

    Per group the backward is the normalisation formula of this module's docstring with
    gh = g * gamma[c] and m = C/G * prod(*):
        dx = r / m * (m * gh - sum(gh) - xhat * sum(gh * xhat))
    and per channel  dgamma[c] = sum_{n,*} g * xhat,  dbeta[c] = sum_{n,*} g.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, num_groups, eps):
        n, c = x.shape[:2]
        grouped = x.reshape(n, num_groups, -1)  # (N, G, C/G * prod(*))
        mu = grouped.mean(axis=2, keepdims=True)
        d = grouped - mu
        var = (d * d).mean(axis=2, keepdims=True)
        r = 1.0 / ctx.xp.sqrt(var + eps)
        xhat = (d * r).reshape(x.shape)
        ctx.save_for_backward(xhat, r, gamma)
        ctx.groups, ctx.has_beta = num_groups, beta is not None
        chan = (1, c) + (1,) * (x.ndim - 2)
        ctx.chan = chan
        y = xhat if gamma is None else xhat * gamma.reshape(chan)
        return y if beta is None else y + beta.reshape(chan)

    @staticmethod
    def backward(ctx, g):
        xhat, r, gamma = ctx.saved_tensors
        n = g.shape[0]
        gh = g if gamma is None else g * gamma.reshape(ctx.chan)
        gh_g = gh.reshape(n, ctx.groups, -1)
        xh_g = xhat.reshape(n, ctx.groups, -1)
        m = gh_g.shape[2]
        dx = (r / m) * (m * gh_g - gh_g.sum(axis=2, keepdims=True)
                        - xh_g * (gh_g * xh_g).sum(axis=2, keepdims=True))
        axes = (0,) + tuple(range(2, g.ndim))
        dgamma = (g * xhat).sum(axis=axes) if gamma is not None else None
        dbeta = g.sum(axis=axes) if ctx.has_beta else None
        return _param_grads(dx.reshape(g.shape), gamma, True if ctx.has_beta else None,
                            dgamma, dbeta)
