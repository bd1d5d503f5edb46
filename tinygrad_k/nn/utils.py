"""Gradient clipping, as ``torch.nn.utils``."""
from __future__ import annotations

import math

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    params = [parameters] if hasattr(parameters, "grad") else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most ``max_norm``:
    g <- g * min(1, max_norm / (total_norm + 1e-6)), total_norm the ``norm_type``-norm of
    all gradients concatenated (inf: the largest |g|). Returns total_norm as a 0-d
    float32 tensor, as PyTorch does."""
    from ..tensor import tensor

    grads = _grads(parameters)
    if not grads:
        return tensor(0.0)
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(abs(g._array).max()) for g in grads)
    else:
        total = sum(float((abs(g._array.astype("float64")) ** norm_type).sum())
                    for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total}; pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g._array *= g._array.dtype.type(coef)
            g._bump_version()
    return tensor(total)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    for g in _grads(parameters):
        xp = g._backend.xp
        xp.clip(g._array, -clip_value, clip_value, out=g._array)
