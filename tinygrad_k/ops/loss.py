"""Binary cross-entropy Functions with hand-derived, numerically safe backward passes.

Composing them from log/clamp/abs ops gives wrong or NaN gradients exactly where they
matter: at p = 0 or 1 (0 * inf in the chain rule) and at logit z = 0 (the kinks of
relu/abs), so each is one node here. Both return the elementwise loss; the caller
applies weights and the reduction.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .elementwise import _softplus


class BinaryCrossEntropy(Function):
    """l = -(y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))   (PyTorch's clamp).

    dl/dp = (p - y) / max(p (1 - p), 1e-12)   -- PyTorch's formula: finite at p = 0, 1
    dl/dy = max(log(1 - p), -100) - max(log p, -100)
    """

    @staticmethod
    def forward(ctx, p, y):
        xp = ctx.xp
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped just below
            logp = xp.maximum(xp.log(p), -100)
            log1mp = xp.maximum(xp.log(1 - p), -100)
        ctx.save_for_backward(p, y, logp, log1mp)
        return -(y * logp + (1 - y) * log1mp)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        p, y, logp, log1mp = ctx.saved_tensors
        dp = g * (p - y) / xp.maximum(p * (1 - p), 1e-12)
        dy = g * (log1mp - logp) if ctx.needs_input_grad[1] else None
        return dp, dy


class BinaryCrossEntropyWithLogits(Function):
    """BCE of sigmoid(z) against y, with an optional positive-class weight w (broadcast
    over the last axis, no gradient):

        l = -(w y log s(z) + (1 - y) log(1 - s(z)))
          = (1 - y) z + (1 + (w - 1) y) softplus(-z)     (stable: softplus never overflows)

    dl/dz = s(z) (w y + 1 - y) - w y          (= s(z) - y without w)
    dl/dy = w softplus(-z) - softplus(z)       (= -z without w)
    """

    @staticmethod
    def forward(ctx, z, y, pos_weight=None):
        xp = ctx.xp
        sp_neg = _softplus(xp, -z)
        if pos_weight is None:
            loss = (1 - y) * z + sp_neg
        else:
            loss = (1 - y) * z + (1 + (pos_weight - 1) * y) * sp_neg
        ctx.save_for_backward(z, y, sp_neg, pos_weight)
        return loss

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        z, y, sp_neg, w = ctx.saved_tensors
        s = xp.exp(-sp_neg)  # sigmoid(z) = exp(-softplus(-z)), stable for any z
        if w is None:
            dz = g * (s - y)
        else:
            dz = g * (s * (w * y + 1 - y) - w * y)
        dy = None
        if ctx.needs_input_grad[1]:
            sp_pos = sp_neg + z  # softplus(z) = softplus(-z) + z
            dy = g * (-z if w is None else w * sp_neg - sp_pos)
        return dz, dy
