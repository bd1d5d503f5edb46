"""Normalisation Functions with fused, hand-derived backward passes.

Both normalise  xhat = (x - mu) * r,  r = 1 / sqrt(var + eps)  (biased variance over the
m reduced elements) and then scale and shift  y = gamma * xhat + beta. With
g = dL/dy and gh = g * gamma, the chain rule through mu and var collapses to

    dx = r / m * (m * gh - sum(gh) - xhat * sum(gh * xhat))
    dgamma = sum(g * xhat),   dbeta = sum(g)

(sums over the normalised elements). One node instead of ~10 elementwise ones.
"""
from __future__ import annotations

from ..autograd import Function


class BatchNormTrain(Function):
    """Batch normalisation with batch statistics, channel axis 1: x (N, C) or (N, C, H, W).

    Reduces over every axis but 1 (m = N*H*W). ``stats`` (a dict) receives the batch mean
    and the *unbiased* variance so the module can update its running estimates.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, stats):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // x.shape[1]
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        var = (d * d).mean(axis=axes, keepdims=True)
        r = 1.0 / ctx.xp.sqrt(var + eps)
        xhat = d * r
        stats["mean"] = mu.reshape(-1)
        stats["var"] = var.reshape(-1) * (m / max(m - 1, 1))
        ctx.save_for_backward(xhat, r, gamma)
        ctx.axes, ctx.shape, ctx.m = axes, shape, m
        return xhat * gamma.reshape(shape) + beta.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        xhat, r, gamma = ctx.saved_tensors
        axes, shape, m = ctx.axes, ctx.shape, ctx.m
        sum_g = g.sum(axis=axes, keepdims=True)
        sum_gx = (g * xhat).sum(axis=axes, keepdims=True)
        gam = gamma.reshape(shape)
        dx = (r * gam / m) * (m * g - sum_g - xhat * sum_gx)
        return dx, sum_gx.reshape(-1), sum_g.reshape(-1)


class LayerNorm(Function):
    """Layer normalisation over the last ``k`` axes (k = gamma.ndim); gamma, beta have the
    normalised shape."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        k = gamma.ndim
        axes = tuple(range(x.ndim - k, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        var = (d * d).mean(axis=axes, keepdims=True)
        r = 1.0 / ctx.xp.sqrt(var + eps)
        xhat = d * r
        ctx.save_for_backward(xhat, r, gamma)
        ctx.axes = axes
        ctx.m = int(gamma.size)
        return xhat * gamma + beta

    @staticmethod
    def backward(ctx, g):
        xhat, r, gamma = ctx.saved_tensors
        axes, m = ctx.axes, ctx.m
        gh = g * gamma
        dx = (r / m) * (m * gh - gh.sum(axis=axes, keepdims=True)
                        - xhat * (gh * xhat).sum(axis=axes, keepdims=True))
        lead = tuple(range(g.ndim - gamma.ndim))
        return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)
